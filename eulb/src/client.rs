//! Sends ELB Query API requests: form-encoded POST, `Version=2012-06-01`, SigV4 with
//! service `elasticloadbalancing`; returns the `<ActionResult>` element or the service's
//! error.

use std::fmt;
use std::time::Duration;

use elb_sigv4::encoding::form_encode;
use elb_sigv4::{Request, Signer};

use crate::config::Settings;
use crate::xmltree::Elem;

pub const API_VERSION: &str = "2012-06-01";
pub const SERVICE: &str = "elasticloadbalancing";
const TIMEOUT: Duration = Duration::from_secs(120);

/// Why a command failed (after its arguments parsed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliError {
    /// The service answered with an error document.
    Api { code: String, message: String },
    /// Anything else: configuration, connection, unreadable response.
    Other(String),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Api { code, message } => write!(f, "error ({code}): {message}"),
            CliError::Other(message) => write!(f, "error: {message}"),
        }
    }
}

/// Request parameters in the order they were added.
pub type Params = Vec<(String, String)>;

/// Something that performs API calls (the HTTP client, or canned answers in tests).
pub trait Api {
    /// Calls `action` and returns its `<ActionResult>` element (empty if the response has
    /// none).
    fn call(&self, action: &str, params: &[(String, String)]) -> Result<Elem, CliError>;
}

/// The form body of a request.
pub fn form_body(action: &str, params: &[(String, String)]) -> String {
    let mut pairs = vec![
        ("Action".to_string(), action.to_string()),
        ("Version".to_string(), API_VERSION.to_string()),
    ];
    pairs.extend(params.iter().cloned());
    form_encode(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// Reads a response: the result element on 2xx, the service's error otherwise.
pub fn interpret(action: &str, status: u16, body: &str) -> Result<Elem, CliError> {
    let parsed = Elem::parse(body);
    if (200..300).contains(&status) {
        let root = parsed
            .map_err(|e| CliError::Other(format!("unreadable response (HTTP {status}): {e}")))?;
        let wanted = format!("{action}Result");
        return Ok(root.child(&wanted).cloned().unwrap_or(Elem {
            name: wanted,
            ..Elem::default()
        }));
    }
    if let Ok(root) = parsed
        && let Some(error) = root.find("Error")
    {
        let code = error.text("Code");
        if !code.is_empty() {
            return Err(CliError::Api {
                code,
                message: error.text("Message"),
            });
        }
    }
    let snippet: String = body.trim().chars().take(300).collect();
    Err(CliError::Api {
        code: format!("HTTP {status}"),
        message: if snippet.is_empty() {
            "the service returned no error document".into()
        } else {
            snippet
        },
    })
}

/// The HTTP implementation of [`Api`].
pub struct HttpApi {
    settings: Settings,
    url: reqwest::Url,
    debug: bool,
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
}

impl fmt::Debug for HttpApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpApi")
            .field("url", &self.url.as_str())
            .field("region", &self.settings.region)
            .field("access_key_id", &self.settings.access_key_id)
            .finish_non_exhaustive()
    }
}

impl HttpApi {
    pub fn new(settings: Settings, debug: bool) -> Result<Self, CliError> {
        let url = reqwest::Url::parse(&settings.url)
            .map_err(|e| CliError::Other(format!("invalid URL '{}': {e}", settings.url)))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CliError::Other(format!("cannot start the I/O runtime: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(30))
            .user_agent(concat!("eulb/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::Other(format!("cannot create the HTTP client: {e}")))?;
        Ok(Self {
            settings,
            url,
            debug,
            runtime,
            http,
        })
    }

    /// `host[:port]` as the request's Host header carries it (the port only when it is not
    /// the scheme's default, as the URL parser reports it).
    fn host_header(&self) -> String {
        let host = self.url.host_str().unwrap_or_default();
        match self.url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        }
    }
}

impl Api for HttpApi {
    fn call(&self, action: &str, params: &[(String, String)]) -> Result<Elem, CliError> {
        let body = form_body(action, params);
        let amz_date = elb_sigv4::time::format_amz_date(elb_sigv4::time::now_secs());
        let mut headers = vec![
            (
                "content-type".to_string(),
                "application/x-www-form-urlencoded; charset=utf-8".to_string(),
            ),
            ("host".to_string(), self.host_header()),
            ("x-amz-date".to_string(), amz_date.clone()),
        ];
        if let Some(token) = &self.settings.security_token {
            headers.push(("x-amz-security-token".to_string(), token.clone()));
        }
        let signer = Signer {
            access_key_id: &self.settings.access_key_id,
            secret_access_key: &self.settings.secret_key,
            region: &self.settings.region,
            service: SERVICE,
        };
        let authorization = signer
            .authorization(&Request {
                method: "POST",
                raw_path: self.url.path(),
                raw_query: self.url.query().unwrap_or(""),
                headers: &headers,
                body: body.as_bytes(),
            })
            .map_err(|e| CliError::Other(format!("cannot sign the request: {e}")))?;
        if self.debug {
            eprintln!("POST {} (region {})", self.url, self.settings.region);
            eprintln!("{body}");
        }
        let mut request = self.http.post(self.url.clone());
        for (name, value) in &headers {
            request = request.header(name.as_str(), value.as_str());
        }
        request = request.header("authorization", authorization).body(body);
        let (status, text) = self.runtime.block_on(async {
            let response = request.send().await.map_err(|e| {
                CliError::Other(format!("cannot reach {}: {}", self.url, error_chain(&e)))
            })?;
            let status = response.status().as_u16();
            let text = response.text().await.map_err(|e| {
                CliError::Other(format!("reading the response failed: {}", error_chain(&e)))
            })?;
            Ok::<_, CliError>((status, text))
        })?;
        if self.debug {
            eprintln!("HTTP {status}\n{text}");
        }
        interpret(action, status, &text)
    }
}

/// An error with its causes, `outer: inner: ...`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_encoding() {
        let body = form_body(
            "AddTags",
            &[
                ("LoadBalancerNames.member.1".into(), "web".into()),
                ("Tags.member.1.Value".into(), "a b&c=d/é".into()),
            ],
        );
        assert_eq!(
            body,
            "Action=AddTags&Version=2012-06-01&LoadBalancerNames.member.1=web&\
             Tags.member.1.Value=a%20b%26c%3Dd%2F%C3%A9"
        );
    }

    #[test]
    fn responses() {
        let ok = interpret(
            "CreateLoadBalancer",
            200,
            "<CreateLoadBalancerResponse xmlns=\"x\"><CreateLoadBalancerResult>\
             <DNSName>web-1.lb.elb.local</DNSName></CreateLoadBalancerResult>\
             <ResponseMetadata><RequestId>r</RequestId></ResponseMetadata>\
             </CreateLoadBalancerResponse>",
        )
        .unwrap();
        assert_eq!(ok.text("DNSName"), "web-1.lb.elb.local");
        let empty = interpret("DeleteLoadBalancer", 200, "<DeleteLoadBalancerResponse/>").unwrap();
        assert!(empty.children.is_empty());
        let err = interpret(
            "DescribeLoadBalancers",
            400,
            "<ErrorResponse><Error><Type>Sender</Type><Code>LoadBalancerNotFound</Code>\
             <Message>There is no ACTIVE Load Balancer named 'x'</Message></Error>\
             <RequestId>r</RequestId></ErrorResponse>",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "error (LoadBalancerNotFound): There is no ACTIVE Load Balancer named 'x'"
        );
        let err = interpret("X", 502, "Bad Gateway").unwrap_err();
        assert_eq!(err.to_string(), "error (HTTP 502): Bad Gateway");
        assert!(matches!(
            interpret("X", 200, "garbage"),
            Err(CliError::Other(_))
        ));
    }
}

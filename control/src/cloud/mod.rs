//! The cloud around control: an EC2-compatible cloud (Eucalyptus, or AWS-shaped clouds such as
//! moto's server) that owns the zones, subnets, VPCs, security groups and instances load
//! balancers use, and its IAM and ACM endpoints that hold certificates.
//!
//! - [`ec2`]: `DescribeAvailabilityZones`, `DescribeSubnets`, `DescribeVpcs`,
//!   `DescribeSecurityGroups`, `DescribeInstances` (Query API, XML), behind the
//!   [`crate::inventory::Inventory`] the API asks;
//! - [`certificates`]: IAM `GetServerCertificate` and ACM `DescribeCertificate`,
//!   `GetCertificate`, `ExportCertificate` (JSON), and which certificates a servo can be given
//!   a private key for;
//! - [`refresh`]: the task that keeps the security groups of load balancers in line with the
//!   cloud, so a rule changed there reaches the servos within a second.
//!
//! Every call is SigV4-signed with control's cloud credentials ([`CloudConfig`]). Answers are
//! cached for a short time ([`CloudConfig::cache_ttl`]); a cloud that cannot be reached, or
//! that refuses a call, is an error that names the service and the action
//! ([`CloudError`], `ServiceUnavailable` at the API), never a guess.

pub mod certificates;
pub mod ec2;
pub mod refresh;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::ConfigError;
use crate::error::{ApiError, ErrorCode};

/// Where the cloud is and how to sign for it.
#[derive(Clone)]
pub struct CloudConfig {
    /// EC2-compatible endpoint (zones, subnets, VPCs, security groups, instances).
    pub ec2_endpoint: Option<String>,
    /// IAM endpoint (server certificates).
    pub iam_endpoint: Option<String>,
    /// ACM endpoint (certificates).
    pub acm_endpoint: Option<String>,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Region every EC2 call is signed for (a cloud with its own region name, such as
    /// Eucalyptus'); `None`: the region of the request (or of the load balancer) at hand.
    pub ec2_region: Option<String>,
    /// Region IAM calls are signed for (IAM is global).
    pub iam_region: String,
    /// Timeout of one call.
    pub timeout: Duration,
    /// How long an answer is reused.
    pub cache_ttl: Duration,
    /// How often the security groups in use are read again.
    pub refresh: Duration,
}

impl Default for CloudConfig {
    fn default() -> Self {
        Self {
            ec2_endpoint: None,
            iam_endpoint: None,
            acm_endpoint: None,
            access_key_id: String::new(),
            secret_access_key: String::new(),
            ec2_region: None,
            iam_region: "us-east-1".into(),
            timeout: Duration::from_secs(10),
            cache_ttl: Duration::from_secs(5),
            refresh: Duration::from_millis(500),
        }
    }
}

impl std::fmt::Debug for CloudConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudConfig")
            .field("ec2_endpoint", &self.ec2_endpoint)
            .field("iam_endpoint", &self.iam_endpoint)
            .field("acm_endpoint", &self.acm_endpoint)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("ec2_region", &self.ec2_region)
            .field("cache_ttl", &self.cache_ttl)
            .field("refresh", &self.refresh)
            .finish()
    }
}

impl CloudConfig {
    /// Whether any cloud endpoint is configured.
    pub fn any(&self) -> bool {
        self.ec2_endpoint.is_some() || self.iam_endpoint.is_some() || self.acm_endpoint.is_some()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (flag, endpoint) in [
            ("--ec2-endpoint", &self.ec2_endpoint),
            ("--iam-endpoint", &self.iam_endpoint),
            ("--acm-endpoint", &self.acm_endpoint),
        ] {
            if let Some(url) = endpoint {
                Endpoint::parse(flag, url, "")?;
            }
        }
        if self.any() && (self.access_key_id.is_empty() || self.secret_access_key.is_empty()) {
            return Err(ConfigError(
                "the cloud endpoints need credentials: --cloud-access-key-id and \
                 --cloud-secret-access-key (or ELB_CLOUD_ACCESS_KEY_ID / ELB_CLOUD_SECRET_ACCESS_KEY)"
                    .into(),
            ));
        }
        if self.cache_ttl > Duration::from_secs(300) {
            return Err(ConfigError(
                "--cloud-cache-ttl must be at most 300 seconds".into(),
            ));
        }
        if self.refresh < Duration::from_millis(100) || self.refresh > Duration::from_secs(60) {
            return Err(ConfigError(
                "--cloud-refresh-ms must be between 100 and 60000".into(),
            ));
        }
        Ok(())
    }
}

/// A cloud call that did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error("{service} endpoint {endpoint} could not be reached for {action}: {source}")]
    Unreachable {
        service: &'static str,
        endpoint: String,
        action: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{service} endpoint {endpoint} refused {action} (HTTP {status}): {code}: {message}")]
    Refused {
        service: &'static str,
        endpoint: String,
        action: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error(
        "{service} endpoint {endpoint} answered {action} with an unreadable response: {detail}"
    )]
    BadResponse {
        service: &'static str,
        endpoint: String,
        action: String,
        detail: String,
    },
}

impl CloudError {
    /// The error code the cloud answered with, if it answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Refused { code, .. } => Some(code),
            _ => None,
        }
    }

    /// What failed, for API callers: the service and action and why, without the endpoint's
    /// address (logged instead).
    pub fn public_reason(&self) -> String {
        match self {
            Self::Unreachable {
                service,
                action,
                source,
                ..
            } => {
                let why = if source.is_timeout() {
                    "timed out"
                } else if source.is_connect() {
                    "cannot connect"
                } else {
                    "connection failed"
                };
                format!("the cloud's {service} service could not be reached ({action}: {why})")
            }
            Self::Refused {
                service,
                action,
                status,
                code,
                ..
            } => format!("the cloud's {service} service refused {action} (HTTP {status} {code})"),
            Self::BadResponse {
                service, action, ..
            } => format!(
                "the cloud's {service} service answered {action} with an unreadable response"
            ),
        }
    }
}

impl From<CloudError> for ApiError {
    fn from(e: CloudError) -> Self {
        tracing::error!(error = %e, "cloud call failed");
        ApiError::new(
            ErrorCode::ServiceUnavailable,
            format!("{}; try again later", e.public_reason()),
        )
    }
}

/// One endpoint: its URL, the `Host` header it is signed with, and its names.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    url: reqwest::Url,
    host: String,
    /// EC2, IAM, ACM: for messages.
    service: &'static str,
}

impl Endpoint {
    fn parse(flag: &str, text: &str, service: &'static str) -> Result<Self, ConfigError> {
        let url = reqwest::Url::parse(text)
            .map_err(|e| ConfigError(format!("{flag} '{text}' is not a URL: {e}")))?;
        if url.scheme() != "http" {
            return Err(ConfigError(format!(
                "{flag} '{text}': only http:// endpoints are supported (put a TLS-terminating proxy in front otherwise)"
            )));
        }
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => return Err(ConfigError(format!("{flag} '{text}' needs a host"))),
        };
        Ok(Self { url, host, service })
    }
}

/// Signs and sends requests to one endpoint.
#[derive(Debug, Clone)]
pub(crate) struct SignedClient {
    endpoint: Endpoint,
    /// SigV4 service name: `ec2`, `iam`, `acm`.
    signing_service: &'static str,
    access_key_id: String,
    secret_access_key: String,
    http: reqwest::Client,
}

/// A request body and how it is framed.
pub(crate) enum Body<'a> {
    /// Query API: `Action=...&Version=...&...`, answered in XML.
    Form(&'a str),
    /// JSON 1.1 protocol: `X-Amz-Target: <target>`, answered in JSON.
    Json { target: &'a str, body: &'a str },
}

impl SignedClient {
    pub(crate) fn new(
        flag: &str,
        url: &str,
        service: &'static str,
        signing_service: &'static str,
        config: &CloudConfig,
    ) -> Result<Self, ConfigError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| ConfigError(format!("cannot build the {service} HTTP client: {e}")))?;
        Ok(Self {
            endpoint: Endpoint::parse(flag, url, service)?,
            signing_service,
            access_key_id: config.access_key_id.clone(),
            secret_access_key: config.secret_access_key.clone(),
            http,
        })
    }

    fn unreadable(&self, action: &str, detail: impl Into<String>) -> CloudError {
        CloudError::BadResponse {
            service: self.endpoint.service,
            endpoint: self.endpoint.url.to_string(),
            action: action.to_string(),
            detail: detail.into(),
        }
    }

    /// Sends `body` signed for `region`; returns the body of a 2xx answer, or the error the
    /// endpoint answered with.
    pub(crate) async fn send(
        &self,
        region: &str,
        action: &str,
        body: Body<'_>,
    ) -> Result<String, CloudError> {
        let endpoint = &self.endpoint;
        let unreachable = |source| CloudError::Unreachable {
            service: endpoint.service,
            endpoint: endpoint.url.to_string(),
            action: action.to_string(),
            source,
        };
        let (content_type, target, text) = match body {
            Body::Form(text) => (
                "application/x-www-form-urlencoded; charset=utf-8",
                None,
                text,
            ),
            Body::Json { target, body } => ("application/x-amz-json-1.1", Some(target), body),
        };
        let amz_date = elb_sigv4::time::format_amz_date(elb_sigv4::time::now_secs());
        let mut headers = vec![
            ("content-type".to_string(), content_type.to_string()),
            ("host".to_string(), endpoint.host.clone()),
            ("x-amz-date".to_string(), amz_date.clone()),
        ];
        if let Some(target) = target {
            headers.push(("x-amz-target".to_string(), target.to_string()));
        }
        let signer = elb_sigv4::Signer {
            access_key_id: &self.access_key_id,
            secret_access_key: &self.secret_access_key,
            region,
            service: self.signing_service,
        };
        let authorization = signer
            .authorization(&elb_sigv4::Request {
                method: "POST",
                raw_path: endpoint.url.path(),
                raw_query: endpoint.url.query().unwrap_or(""),
                headers: &headers,
                body: text.as_bytes(),
            })
            .map_err(|e| self.unreadable(action, format!("cannot sign the request: {e}")))?;
        let mut request = self
            .http
            .post(endpoint.url.clone())
            .header("content-type", content_type)
            .header("x-amz-date", amz_date)
            .header("authorization", authorization);
        if let Some(target) = target {
            request = request.header("x-amz-target", target);
        }
        let response = request
            .body(text.to_string())
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let answer = response.text().await.map_err(unreachable)?;
        if status.is_success() {
            return Ok(answer);
        }
        let (code, message) = match target {
            None => xml_error(&answer),
            Some(_) => json_error(&answer),
        };
        Err(CloudError::Refused {
            service: endpoint.service,
            endpoint: endpoint.url.to_string(),
            action: action.to_string(),
            status: status.as_u16(),
            code,
            message,
        })
    }
}

/// Code and message of a Query API error document (EC2's `<Response><Errors><Error>` or
/// IAM's `<ErrorResponse><Error>`).
fn xml_error(text: &str) -> (String, String) {
    let Ok(doc) = roxmltree::Document::parse(text) else {
        return ("Unknown".into(), text.chars().take(200).collect());
    };
    let error = doc.descendants().find(|n| n.tag_name().name() == "Error");
    let get = |name: &str| {
        error
            .and_then(|e| child_text(e, name))
            .unwrap_or("")
            .to_string()
    };
    let code = get("Code");
    (
        if code.is_empty() {
            "Unknown".into()
        } else {
            code
        },
        get("Message"),
    )
}

/// Code and message of a JSON protocol error (`{"__type": "...#Code", "message": "..."}`).
fn json_error(text: &str) -> (String, String) {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return ("Unknown".into(), text.chars().take(200).collect());
    };
    let code = v["__type"]
        .as_str()
        .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
        .unwrap_or_else(|| "Unknown".into());
    let message = v["message"]
        .as_str()
        .or_else(|| v["Message"].as_str())
        .unwrap_or("")
        .to_string();
    (code, message)
}

/// The trimmed text of `node`'s first child element named `name`.
pub(crate) fn child_text<'a>(node: roxmltree::Node<'a, 'a>, name: &str) -> Option<&'a str> {
    child(node, name).and_then(|c| c.text()).map(str::trim)
}

/// `node`'s first child element named `name`.
pub(crate) fn child<'a>(
    node: roxmltree::Node<'a, 'a>,
    name: &str,
) -> Option<roxmltree::Node<'a, 'a>> {
    node.children().find(|c| c.tag_name().name() == name)
}

/// The `<item>` children of `node`'s child `list`.
pub(crate) fn items<'a>(
    node: roxmltree::Node<'a, 'a>,
    list: &str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'a>> {
    child(node, list)
        .into_iter()
        .flat_map(|l| l.children().filter(|c| c.tag_name().name() == "item"))
}

/// Answers kept for a short time, by key. Concurrent misses may both fetch; the later answer
/// wins, which is as fresh as the earlier.
#[derive(Debug)]
pub(crate) struct TtlCache<V> {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> TtlCache<V> {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<V> {
        let entries = self.entries.lock().expect("cache lock");
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, v)| v.clone())
    }

    pub(crate) fn put(&self, key: String, value: V) {
        let mut entries = self.entries.lock().expect("cache lock");
        // Expired entries go when the map grows, so it never holds more than a TTL's worth.
        if entries.len() > 1024 {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
        }
        entries.insert(key, (Instant::now(), value));
    }

    /// Forgets everything (after a change control made itself through the cloud... or a test).
    pub(crate) fn clear(&self) {
        self.entries.lock().expect("cache lock").clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_documents() {
        assert_eq!(
            xml_error(
                "<Response><Errors><Error><Code>AuthFailure</Code><Message>nope</Message></Error></Errors></Response>"
            ),
            ("AuthFailure".into(), "nope".into())
        );
        assert_eq!(
            xml_error(
                "<ErrorResponse><Error><Type>Sender</Type><Code>NoSuchEntity</Code><Message>gone</Message></Error></ErrorResponse>"
            ),
            ("NoSuchEntity".into(), "gone".into())
        );
        assert_eq!(xml_error("oops").0, "Unknown");
        assert_eq!(
            json_error(r#"{"__type": "com.amazonaws#ResourceNotFoundException", "message": "x"}"#),
            ("ResourceNotFoundException".into(), "x".into())
        );
        assert_eq!(
            json_error(r#"{"__type": "ValidationException", "Message": "y"}"#),
            ("ValidationException".into(), "y".into())
        );
    }

    #[test]
    fn configuration() {
        let mut c = CloudConfig::default();
        assert!(c.validate().is_ok() && !c.any());
        c.ec2_endpoint = Some("http://127.0.0.1:5000/".into());
        assert!(c.validate().is_err(), "credentials are needed");
        c.access_key_id = "AKID".into();
        c.secret_access_key = "secret".into();
        assert!(c.validate().is_ok());
        c.acm_endpoint = Some("https://acm.example/".into());
        assert!(c.validate().unwrap_err().0.contains("only http://"));
        c.acm_endpoint = None;
        c.refresh = Duration::from_millis(10);
        assert!(c.validate().is_err());
        assert!(!format!("{c:?}").contains("secret\""));
    }

    #[test]
    fn cache_expires() {
        let cache = TtlCache::new(Duration::from_millis(50));
        cache.put("a".into(), 1);
        assert_eq!(cache.get("a"), Some(1));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get("a"), None);
        cache.put("b".into(), 2);
        cache.clear();
        assert_eq!(cache.get("b"), None);
    }
}

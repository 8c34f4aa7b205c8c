//! Where instance ids are resolved to addresses and zones: the built-in inventory (instances
//! an admin added to the store) or an EC2-compatible endpoint (DescribeInstances, SigV4).

use std::collections::HashMap;
use std::time::Duration;

use crate::config::ConfigError;
use crate::store::{InventoryInstance, Store, StoreError};
use elb_sigv4::encoding::uri_encode;

/// Connection details of an EC2-compatible DescribeInstances endpoint.
#[derive(Clone)]
pub struct Ec2Config {
    /// e.g. `http://ec2.internal:8773/` (the path is kept).
    pub endpoint: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Region for the SigV4 scope.
    pub region: String,
    pub timeout: Duration,
}

impl std::fmt::Debug for Ec2Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ec2Config")
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("region", &self.region)
            .finish()
    }
}

impl Ec2Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = reqwest::Url::parse(&self.endpoint).map_err(|e| {
            ConfigError(format!(
                "--ec2-endpoint '{}' is not a URL: {e}",
                self.endpoint
            ))
        })?;
        if url.scheme() != "http" {
            return Err(ConfigError(format!(
                "--ec2-endpoint '{}': only http:// endpoints are supported (put a TLS-terminating proxy in front otherwise)",
                self.endpoint
            )));
        }
        if url.host_str().is_none() {
            return Err(ConfigError("--ec2-endpoint needs a host".into()));
        }
        if self.access_key_id.is_empty() || self.secret_access_key.is_empty() {
            return Err(ConfigError(
                "--ec2-endpoint needs credentials: --ec2-access-key-id and --ec2-secret-access-key (or ELB_EC2_ACCESS_KEY_ID / ELB_EC2_SECRET_ACCESS_KEY)".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("EC2 endpoint {endpoint} could not be reached: {source}")]
    Unreachable {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("EC2 endpoint answered {status}: {code}: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("EC2 endpoint sent an unreadable response: {0}")]
    BadResponse(String),
}

/// The instance inventory in use.
#[derive(Debug, Clone)]
pub enum Inventory {
    BuiltIn(Store),
    Ec2(Ec2Client),
}

impl Inventory {
    /// Resolves `ids`; ids the inventory does not know (or that an account may not use) are
    /// absent from the map.
    pub async fn resolve(
        &self,
        ids: &[String],
        account_id: &str,
    ) -> Result<HashMap<String, InventoryInstance>, InventoryError> {
        let found = match self {
            Inventory::BuiltIn(store) => store
                .instances_by_id(ids)
                .await?
                .into_iter()
                .filter(|i| {
                    i.account_id
                        .as_deref()
                        .is_none_or(|owner| owner == account_id)
                })
                .collect::<Vec<_>>(),
            Inventory::Ec2(client) => client.describe_instances(ids).await?,
        };
        Ok(found.into_iter().map(|i| (i.id.clone(), i)).collect())
    }
}

/// A minimal EC2 Query API client: DescribeInstances by `instance-id` filter.
#[derive(Debug, Clone)]
pub struct Ec2Client {
    config: Ec2Config,
    http: reqwest::Client,
}

/// EC2 instance states in which an instance can be registered.
const LIVE_STATES: &[&str] = &["pending", "running", "stopping", "stopped"];

impl Ec2Client {
    pub fn new(config: Ec2Config) -> Result<Self, ConfigError> {
        config.validate()?;
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| ConfigError(format!("cannot build the EC2 HTTP client: {e}")))?;
        Ok(Self { config, http })
    }

    async fn describe_instances(
        &self,
        ids: &[String],
    ) -> Result<Vec<InventoryInstance>, InventoryError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(100) {
            let mut next_token: Option<String> = None;
            // EC2 pages results; a bounded number of pages guards against a looping endpoint.
            for _ in 0..50 {
                let mut body = String::from(
                    "Action=DescribeInstances&Version=2016-11-15&Filter.1.Name=instance-id",
                );
                for (i, id) in chunk.iter().enumerate() {
                    body.push_str(&format!(
                        "&Filter.1.Value.{}={}",
                        i + 1,
                        uri_encode(id, false)
                    ));
                }
                if let Some(token) = &next_token {
                    body.push_str(&format!("&NextToken={}", uri_encode(token, false)));
                }
                let xml = self.call(body).await?;
                let (instances, token) = parse_describe_instances(&xml)?;
                out.extend(instances);
                match token {
                    Some(t) if !t.is_empty() => next_token = Some(t),
                    _ => break,
                }
            }
        }
        Ok(out)
    }

    async fn call(&self, body: String) -> Result<String, InventoryError> {
        let unreachable = |source| InventoryError::Unreachable {
            endpoint: self.config.endpoint.clone(),
            source,
        };
        let url = reqwest::Url::parse(&self.config.endpoint)
            .map_err(|e| InventoryError::BadResponse(format!("bad endpoint: {e}")))?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => return Err(InventoryError::BadResponse("endpoint has no host".into())),
        };
        let amz_date = elb_sigv4::time::format_amz_date(elb_sigv4::time::now_secs());
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let headers = vec![
            ("content-type".to_string(), content_type.to_string()),
            ("host".to_string(), host),
            ("x-amz-date".to_string(), amz_date.clone()),
        ];
        let signer = elb_sigv4::Signer {
            access_key_id: &self.config.access_key_id,
            secret_access_key: &self.config.secret_access_key,
            region: &self.config.region,
            service: "ec2",
        };
        let authorization = signer
            .authorization(&elb_sigv4::Request {
                method: "POST",
                raw_path: url.path(),
                raw_query: url.query().unwrap_or(""),
                headers: &headers,
                body: body.as_bytes(),
            })
            .map_err(|e| InventoryError::BadResponse(format!("cannot sign: {e}")))?;
        let response = self
            .http
            .post(url)
            .header("content-type", content_type)
            .header("x-amz-date", amz_date)
            .header("authorization", authorization)
            .body(body)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let text = response.text().await.map_err(unreachable)?;
        if !status.is_success() {
            let (code, message) = parse_ec2_error(&text);
            return Err(InventoryError::Refused {
                status: status.as_u16(),
                code,
                message,
            });
        }
        Ok(text)
    }
}

fn child_text<'a>(node: roxmltree::Node<'a, 'a>, name: &str) -> Option<&'a str> {
    node.children()
        .find(|c| c.tag_name().name() == name)
        .and_then(|c| c.text())
        .map(str::trim)
}

/// Instances (in a live state) and the NextToken of a DescribeInstances response.
fn parse_describe_instances(
    xml: &str,
) -> Result<(Vec<InventoryInstance>, Option<String>), InventoryError> {
    let doc =
        roxmltree::Document::parse(xml).map_err(|e| InventoryError::BadResponse(e.to_string()))?;
    let root = doc.root_element();
    if root.tag_name().name() != "DescribeInstancesResponse" {
        return Err(InventoryError::BadResponse(format!(
            "unexpected root element <{}>",
            root.tag_name().name()
        )));
    }
    let mut out = Vec::new();
    for set in root
        .descendants()
        .filter(|n| n.tag_name().name() == "instancesSet")
    {
        for item in set.children().filter(|n| n.tag_name().name() == "item") {
            let Some(id) = child_text(item, "instanceId") else {
                continue;
            };
            let state = item
                .children()
                .find(|c| c.tag_name().name() == "instanceState")
                .and_then(|s| child_text(s, "name"))
                .unwrap_or("running");
            if !LIVE_STATES.contains(&state) {
                continue;
            }
            let address =
                child_text(item, "privateIpAddress").or_else(|| child_text(item, "ipAddress"));
            let zone = item
                .children()
                .find(|c| c.tag_name().name() == "placement")
                .and_then(|p| child_text(p, "availabilityZone"));
            if let (Some(address), Some(zone)) = (address, zone) {
                out.push(InventoryInstance {
                    id: id.to_string(),
                    address: address.to_string(),
                    zone: zone.to_string(),
                    account_id: None,
                });
            }
        }
    }
    let next = child_text(root, "nextToken").map(str::to_string);
    Ok((out, next))
}

fn parse_ec2_error(xml: &str) -> (String, String) {
    let Ok(doc) = roxmltree::Document::parse(xml) else {
        return ("Unknown".into(), xml.chars().take(200).collect());
    };
    let error = doc.descendants().find(|n| n.tag_name().name() == "Error");
    let code = error
        .and_then(|e| child_text(e, "Code"))
        .unwrap_or("Unknown")
        .to_string();
    let message = error
        .and_then(|e| child_text(e, "Message"))
        .unwrap_or("")
        .to_string();
    (code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_describe_instances() {
        let xml = r#"<?xml version="1.0"?>
<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>r</requestId>
  <reservationSet><item><reservationId>r-1</reservationId><ownerId>123</ownerId>
    <instancesSet>
      <item><instanceId>i-1</instanceId><instanceState><code>16</code><name>running</name></instanceState>
        <privateIpAddress>10.0.0.5</privateIpAddress><placement><availabilityZone>us-east-1a</availabilityZone></placement></item>
      <item><instanceId>i-2</instanceId><instanceState><code>48</code><name>terminated</name></instanceState>
        <privateIpAddress>10.0.0.6</privateIpAddress><placement><availabilityZone>us-east-1a</availabilityZone></placement></item>
    </instancesSet></item></reservationSet>
  <nextToken>abc</nextToken>
</DescribeInstancesResponse>"#;
        let (instances, next) = parse_describe_instances(xml).unwrap();
        assert_eq!(instances.len(), 1, "terminated instances are not usable");
        assert_eq!(instances[0].id, "i-1");
        assert_eq!(instances[0].address, "10.0.0.5");
        assert_eq!(instances[0].zone, "us-east-1a");
        assert_eq!(next.as_deref(), Some("abc"));
        assert!(parse_describe_instances("<Other/>").is_err());
        assert!(parse_describe_instances("not xml").is_err());
    }

    #[test]
    fn parses_errors() {
        let (code, message) = parse_ec2_error(
            "<Response><Errors><Error><Code>AuthFailure</Code><Message>nope</Message></Error></Errors></Response>",
        );
        assert_eq!((code.as_str(), message.as_str()), ("AuthFailure", "nope"));
    }
}

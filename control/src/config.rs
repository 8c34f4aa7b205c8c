//! Configuration of the API service, with defaults and validation.

use std::time::Duration;

use crate::cloud::CloudConfig;

/// What the Query API service needs to know besides its store.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Regions served, from SigV4 credential scopes; others are refused.
    pub regions: Vec<String>,
    /// DNS domain of load balancer names: `<name>-<account>.lb.<domain>`.
    pub dns_domain: String,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Largest difference between a signed request's time and the server's clock.
    pub max_clock_skew: Duration,
    /// The cloud (EC2, IAM, ACM endpoints); none configured: the built-in inventory and
    /// control's own certificate store.
    pub cloud: CloudConfig,
    /// Servo protocol and assignment.
    pub servo: ServoSettings,
    /// The key file that seals certificate private keys at rest (created on first use);
    /// `None`: certificates cannot be uploaded (the API says why).
    pub key_file: Option<std::path::PathBuf>,
    /// The S3-compatible endpoint access logs go to (`--s3-*`): ModifyLoadBalancerAttributes
    /// checks there that an access log bucket exists; `None`: access logs cannot be enabled.
    pub s3: Option<elb_s3::S3Settings>,
}

/// How servos are told to behave and judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServoSettings {
    /// Interval servos are told to heartbeat at.
    pub heartbeat: Duration,
    /// A servo is live while its last heartbeat is younger than this.
    pub timeout: Duration,
    /// Live servos each load balancer gets in each of its zones (Eucalyptus' vm_per_zone).
    pub servos_per_zone: usize,
}

impl Default for ServoSettings {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
            servos_per_zone: 1,
        }
    }
}

impl ServoSettings {
    pub fn timeout_ms(&self) -> i64 {
        i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat < Duration::from_secs(1) {
            return Err(ConfigError(
                "--servo-heartbeat must be at least 1 second".into(),
            ));
        }
        // A servo must get at least one more beat in before it is declared dead.
        if self.timeout <= self.heartbeat {
            return Err(ConfigError(
                "--servo-timeout must be longer than --servo-heartbeat".into(),
            ));
        }
        if !(1..=100).contains(&self.servos_per_zone) {
            return Err(ConfigError("--servos-per-zone must be 1-100".into()));
        }
        Ok(())
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            regions: vec!["us-east-1".into()],
            dns_domain: "elb.local".into(),
            max_body_bytes: 256 * 1024,
            max_clock_skew: Duration::from_secs(15 * 60),
            cloud: CloudConfig::default(),
            servo: ServoSettings::default(),
            key_file: None,
            s3: None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

fn dns_label_ok(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

impl ServiceConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.regions.is_empty() {
            return Err(ConfigError("at least one --region is needed".into()));
        }
        for r in &self.regions {
            if !dns_label_ok(r) {
                return Err(ConfigError(format!(
                    "region '{r}' is not a valid name (letters, digits, '-')"
                )));
            }
        }
        let domain = self.dns_domain.trim_end_matches('.');
        if domain.is_empty() || domain.len() > 200 || !domain.split('.').all(dns_label_ok) {
            return Err(ConfigError(format!(
                "--dns-domain '{}' is not a valid DNS domain",
                self.dns_domain
            )));
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError(
                "the body limit must be at least 1024 bytes".into(),
            ));
        }
        self.cloud.validate()?;
        if let Some(s3) = &self.s3 {
            let e = &s3.endpoint;
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(ConfigError(format!(
                    "--s3-endpoint '{e}' must start with http:// or https://"
                )));
            }
            if s3.access_key_id.is_empty() || s3.secret_access_key.is_empty() {
                return Err(ConfigError(
                    "--s3-endpoint needs --s3-access-key-id and --s3-secret-access-key (or \
                     ELB_S3_ACCESS_KEY_ID and ELB_S3_SECRET_ACCESS_KEY)"
                        .into(),
                ));
            }
        }
        self.servo.validate()
    }

    /// The domain without a trailing dot, lower-cased: the zone the DNS server answers for.
    pub fn dns_zone(&self) -> String {
        self.dns_domain.trim_end_matches('.').to_ascii_lowercase()
    }

    pub fn serves_region(&self, region: &str) -> bool {
        self.regions.iter().any(|r| r == region)
    }

    /// `<name>-<account>.lb.<domain>` (`internal-` first for internal load balancers). When
    /// several regions are served the region is added (`.lb.<region>.<domain>`), since the
    /// same name may exist in each region.
    pub fn dns_name(&self, name: &str, account_id: &str, region: &str, internal: bool) -> String {
        let prefix = if internal { "internal-" } else { "" };
        let domain = self.dns_domain.trim_end_matches('.');
        let region_part = if self.regions.len() > 1 {
            format!("{region}.")
        } else {
            String::new()
        };
        format!("{prefix}{name}-{account_id}.lb.{region_part}{domain}").to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_and_dns_names() {
        let mut c = ServiceConfig::default();
        assert!(c.validate().is_ok());
        assert_eq!(
            c.dns_name("Web", "123456789012", "us-east-1", false),
            "web-123456789012.lb.elb.local"
        );
        assert_eq!(
            c.dns_name("db", "123456789012", "us-east-1", true),
            "internal-db-123456789012.lb.elb.local"
        );
        c.regions.push("eu-west-1".into());
        assert_eq!(
            c.dns_name("db", "1", "eu-west-1", false),
            "db-1.lb.eu-west-1.elb.local"
        );
        c.servo.timeout = c.servo.heartbeat;
        assert!(c.validate().is_err());
        c.servo = ServoSettings::default();
        c.dns_domain = "bad_domain".into();
        assert!(c.validate().is_err());
        c.dns_domain = "ok.example".into();
        c.regions = vec![];
        assert!(c.validate().is_err());
    }
}

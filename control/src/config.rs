//! Configuration of the API service, with defaults and validation.

use std::time::Duration;

use crate::inventory::Ec2Config;

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
    /// EC2-compatible inventory; `None` uses the built-in one.
    pub ec2: Option<Ec2Config>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            regions: vec!["us-east-1".into()],
            dns_domain: "elb.local".into(),
            max_body_bytes: 256 * 1024,
            max_clock_skew: Duration::from_secs(15 * 60),
            ec2: None,
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
        if let Some(ec2) = &self.ec2 {
            ec2.validate()?;
        }
        Ok(())
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
        c.dns_domain = "bad_domain".into();
        assert!(c.validate().is_err());
        c.dns_domain = "ok.example".into();
        c.regions = vec![];
        assert!(c.validate().is_err());
    }
}

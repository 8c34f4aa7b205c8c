//! The AccessLog attribute: where a load balancer's access logs go, with the rules control
//! checks before it accepts the attribute and servos check before they log.
//!
//! Control keeps the attribute as the API has it (Enabled, S3BucketName, EmitInterval,
//! S3BucketPrefix); a servo is sent [`AccessLog`] only while logging is enabled, with the
//! names AWS's object keys need (account, region, the name the owner gave the load balancer).

use serde::{Deserialize, Serialize};

use crate::{Problem, free_text_ok};

/// EmitInterval values AWS accepts, in minutes.
pub const EMIT_INTERVALS: [u32; 2] = [5, 60];
/// AWS's default EmitInterval.
pub const DEFAULT_EMIT_INTERVAL: u32 = 60;
/// Longest S3BucketPrefix.
pub const MAX_PREFIX_LEN: usize = 1024;

/// S3's bucket name grammar as AWS checks it for access logs: 3 to 63 lower-case letters,
/// digits, dots and hyphens.
pub fn bucket_name_ok(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
}

fn default_region() -> String {
    "us-east-1".into()
}

fn default_interval() -> u32 {
    DEFAULT_EMIT_INTERVAL
}

/// Access logging of a load balancer, as a servo acts on it (present only while enabled).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct AccessLog {
    /// The bucket (it existed when control accepted the attribute).
    #[serde(rename = "S3BucketName")]
    pub s3_bucket_name: String,
    /// Key prefix; empty for none. Leading and trailing `/` are not part of it.
    #[serde(
        rename = "S3BucketPrefix",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub s3_bucket_prefix: String,
    /// Minutes per log file: 5 or 60.
    #[serde(default = "default_interval")]
    pub emit_interval: u32,
    /// The owner's account (12 digits): object keys and file names carry it.
    pub account_id: String,
    /// The load balancer's region (object keys and file names carry it).
    #[serde(default = "default_region")]
    pub region: String,
    /// The name the owner gave the load balancer, which the lines and file names carry;
    /// default: the servo's name for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_name: Option<String>,
}

impl AccessLog {
    /// The prefix as it goes into keys: without leading or trailing `/`.
    pub fn key_prefix(&self) -> &str {
        self.s3_bucket_prefix.trim_matches('/')
    }

    /// The rules of the attribute; fields are named `Attributes.AccessLog.<Member>`.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let field = |m: &str| format!("Attributes.AccessLog.{m}");
        if !bucket_name_ok(&self.s3_bucket_name) {
            out.push(Problem::invalid(
                field("S3BucketName"),
                format!(
                    "S3BucketName '{}' is not a valid bucket name (3 to 63 lower-case letters, \
                     digits, dots and hyphens)",
                    crate::printable(&self.s3_bucket_name)
                ),
            ));
        }
        if !free_text_ok(&self.s3_bucket_prefix, MAX_PREFIX_LEN) {
            out.push(Problem::invalid(
                field("S3BucketPrefix"),
                format!(
                    "S3BucketPrefix must have at most {MAX_PREFIX_LEN} characters and no control \
                     characters"
                ),
            ));
        }
        if !EMIT_INTERVALS.contains(&self.emit_interval) {
            out.push(Problem::invalid(
                field("EmitInterval"),
                format!(
                    "AccessLog EmitInterval must be 5 or 60 (minutes), not {}",
                    self.emit_interval
                ),
            ));
        }
        if self.account_id.len() != 12 || !self.account_id.bytes().all(|b| b.is_ascii_digit()) {
            out.push(Problem::invalid(
                field("AccountId"),
                format!(
                    "AccountId '{}' must be 12 digits",
                    crate::printable(&self.account_id)
                ),
            ));
        }
        let region_ok = (1..=32).contains(&self.region.len())
            && self
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !region_ok {
            out.push(Problem::invalid(
                field("Region"),
                format!(
                    "Region '{}' must be 1 to 32 lower-case letters, digits and hyphens",
                    crate::printable(&self.region)
                ),
            ));
        }
        if let Some(name) = &self.load_balancer_name
            && !crate::name_ok(name, crate::MAX_SERVO_NAME_LEN)
        {
            out.push(Problem::invalid(
                field("LoadBalancerName"),
                format!(
                    "'{}' must have 1 to {} letters, digits and hyphens",
                    crate::printable(name),
                    crate::MAX_SERVO_NAME_LEN
                ),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log() -> AccessLog {
        serde_json::from_value(serde_json::json!({
            "S3BucketName": "elb-logs", "S3BucketPrefix": "/prod/web/", "EmitInterval": 5,
            "AccountId": "123456789012", "Region": "eu-west-1", "LoadBalancerName": "web"
        }))
        .unwrap()
    }

    #[test]
    fn rules_and_defaults() {
        let a = log();
        assert!(a.problems().is_empty());
        assert_eq!(a.key_prefix(), "prod/web");
        let minimal: AccessLog = serde_json::from_value(
            serde_json::json!({"S3BucketName": "abc", "AccountId": "123456789012"}),
        )
        .unwrap();
        assert_eq!(
            (minimal.emit_interval, minimal.region.as_str()),
            (60, "us-east-1")
        );
        assert_eq!(
            serde_json::to_value(&minimal).unwrap(),
            serde_json::json!({"S3BucketName": "abc", "EmitInterval": 60,
                               "AccountId": "123456789012", "Region": "us-east-1"})
        );
        let bad = AccessLog {
            s3_bucket_name: "Bad_Bucket".into(),
            s3_bucket_prefix: "a\nb".into(),
            emit_interval: 30,
            account_id: "12".into(),
            region: "EU".into(),
            load_balancer_name: Some("-x".into()),
        };
        let fields: Vec<String> = bad.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "Attributes.AccessLog.S3BucketName",
                "Attributes.AccessLog.S3BucketPrefix",
                "Attributes.AccessLog.EmitInterval",
                "Attributes.AccessLog.AccountId",
                "Attributes.AccessLog.Region",
                "Attributes.AccessLog.LoadBalancerName",
            ]
        );
        for (name, ok) in [
            ("ab", false),
            ("abc", true),
            ("a.b-c", true),
            ("ABC", false),
        ] {
            assert_eq!(bucket_name_ok(name), ok, "{name}");
        }
        assert!(!bucket_name_ok(&"a".repeat(64)));
    }
}

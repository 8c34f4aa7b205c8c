//! The load balancer attributes servos act on (ConnectionDraining, ConnectionSettings,
//! CrossZoneLoadBalancing), with AWS's defaults and ranges.

use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use crate::Problem;

/// ConnectionDraining.Timeout in seconds.
pub const DRAINING_TIMEOUT_RANGE: RangeInclusive<u32> = 1..=3600;
/// ConnectionSettings.IdleTimeout in seconds.
pub const IDLE_TIMEOUT_RANGE: RangeInclusive<u32> = 1..=3600;
/// AWS's default ConnectionDraining.Timeout.
pub const DEFAULT_DRAINING_TIMEOUT: u32 = 300;
/// AWS's default ConnectionSettings.IdleTimeout.
pub const DEFAULT_IDLE_TIMEOUT: u32 = 60;

/// ConnectionDraining.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ConnectionDraining {
    /// Whether deregistered or unhealthy instances keep their connections for `Timeout`.
    pub enabled: bool,
    /// Seconds.
    #[serde(default = "default_drain_timeout")]
    pub timeout: u32,
}

fn default_drain_timeout() -> u32 {
    DEFAULT_DRAINING_TIMEOUT
}

impl Default for ConnectionDraining {
    fn default() -> Self {
        Self {
            enabled: false,
            timeout: DEFAULT_DRAINING_TIMEOUT,
        }
    }
}

/// ConnectionSettings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ConnectionSettings {
    /// Seconds a connection may stay idle.
    pub idle_timeout: u32,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// CrossZoneLoadBalancing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CrossZone {
    /// Whether servos also send traffic to InService instances of other zones while their own
    /// zone has InService instances (see [`crate::zone`]).
    pub enabled: bool,
}

/// The attributes servos act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Attributes {
    /// ConnectionDraining.
    #[serde(default)]
    pub connection_draining: ConnectionDraining,
    /// ConnectionSettings.
    #[serde(default)]
    pub connection_settings: ConnectionSettings,
    /// CrossZoneLoadBalancing.
    #[serde(default)]
    pub cross_zone_load_balancing: CrossZone,
}

impl Attributes {
    /// The ranges; fields are named `Attributes.<Structure>.<Member>`.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        for (field, value, range) in [
            (
                "ConnectionDraining.Timeout",
                self.connection_draining.timeout,
                DRAINING_TIMEOUT_RANGE,
            ),
            (
                "ConnectionSettings.IdleTimeout",
                self.connection_settings.idle_timeout,
                IDLE_TIMEOUT_RANGE,
            ),
        ] {
            if !range.contains(&value) {
                out.push(Problem::invalid(
                    format!("Attributes.{field}"),
                    format!(
                        "{field} must be between {} and {} seconds (got {value})",
                        range.start(),
                        range.end()
                    ),
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_ranges() {
        let a = Attributes::default();
        assert_eq!(a.connection_draining.timeout, 300);
        assert_eq!(a.connection_settings.idle_timeout, 60);
        assert!(!a.cross_zone_load_balancing.enabled && !a.connection_draining.enabled);
        assert!(a.problems().is_empty());
        let mut bad = a;
        bad.connection_settings.idle_timeout = 0;
        bad.connection_draining.timeout = 3601;
        let fields: Vec<String> = bad.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "Attributes.ConnectionDraining.Timeout",
                "Attributes.ConnectionSettings.IdleTimeout"
            ]
        );
        let read: Attributes =
            serde_json::from_str(r#"{"ConnectionDraining": {"Enabled": true}}"#).unwrap();
        assert_eq!(read.connection_draining.timeout, 300);
    }
}

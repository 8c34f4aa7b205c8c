//! The health-check target: what to probe on each instance, in ELB's `PROTOCOL:port[/path]` form
//! (`TCP` passes on a connection, `SSL` on a TLS handshake, `HTTP`/`HTTPS` on status 200 for
//! `GET <path>`).

use std::fmt;
use std::num::NonZeroU16;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Protocol;

/// ELB caps the whole target string (API_HealthCheck: "an HTTP target may be at most 1024
/// characters"); applying it to every protocol keeps one rule.
pub const MAX_TARGET_LEN: usize = 1024;

/// Why a health-check target string was rejected. Each variant carries the offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Longer than [`MAX_TARGET_LEN`].
    #[error(
        "HealthCheck Target is {len} characters long; it may be at most {MAX_TARGET_LEN} \
         (target starts {prefix:?})"
    )]
    TooLong {
        /// Length of the rejected target in characters.
        len: usize,
        /// The first 64 characters, enough to recognise it in a log.
        prefix: String,
    },
    /// No `PROTOCOL:` prefix, or an unknown protocol. The message is ELB's.
    #[error("HealthCheck Target must begin with one of HTTP, TCP, HTTPS, SSL (got {target:?})")]
    UnknownProtocol {
        /// The rejected target.
        target: String,
    },
    /// The port is missing, not a number or outside 1-65535.
    #[error(
        "Invalid target specified: port {port:?} in HealthCheck Target {target:?} must be a \
         number between 1 and 65535"
    )]
    InvalidPort {
        /// The rejected target.
        target: String,
        /// The text found where the port should be.
        port: String,
    },
    /// An HTTP or HTTPS target without `/path` after the port.
    #[error(
        "Invalid target specified: {protocol} HealthCheck Target {target:?} needs a path \
         starting with '/' after the port, e.g. {protocol}:80/index.html"
    )]
    MissingPath {
        /// The rejected target.
        target: String,
        /// HTTP or HTTPS.
        protocol: Protocol,
    },
    /// A TCP or SSL target with something after the port.
    #[error(
        "Invalid target specified: {protocol} HealthCheck Target {target:?} takes only a port, \
         e.g. {protocol}:80"
    )]
    UnexpectedPath {
        /// The rejected target.
        target: String,
        /// TCP or SSL.
        protocol: Protocol,
    },
    /// The path would not fit in an HTTP request line.
    #[error(
        "Invalid target specified: the path in HealthCheck Target {target:?} may not contain \
         spaces or control characters; percent-encode them (%20)"
    )]
    InvalidPath {
        /// The rejected target.
        target: String,
    },
}

/// A parsed health-check target such as `TCP:80` or `HTTP:8080/health`.
///
/// The protocol is stored upper-case and the port without leading zeros, so [`fmt::Display`] gives
/// the canonical form ELB echoes; parsing that form again yields the same value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HealthTarget {
    protocol: Protocol,
    port: NonZeroU16,
    /// `Some` exactly for HTTP and HTTPS; always starts with `/`.
    path: Option<String>,
}

impl HealthTarget {
    /// `TCP:<port>`.
    pub fn tcp(port: NonZeroU16) -> Self {
        Self {
            protocol: Protocol::Tcp,
            port,
            path: None,
        }
    }

    /// `SSL:<port>`.
    pub fn ssl(port: NonZeroU16) -> Self {
        Self {
            protocol: Protocol::Ssl,
            port,
            path: None,
        }
    }

    /// `HTTP:<port><path>`; `path` must start with `/`.
    pub fn http(port: NonZeroU16, path: &str) -> Result<Self, TargetError> {
        Self::with_path(Protocol::Http, port, path)
    }

    /// `HTTPS:<port><path>`; `path` must start with `/`.
    pub fn https(port: NonZeroU16, path: &str) -> Result<Self, TargetError> {
        Self::with_path(Protocol::Https, port, path)
    }

    fn with_path(protocol: Protocol, port: NonZeroU16, path: &str) -> Result<Self, TargetError> {
        let text = format!("{protocol}:{port}{path}");
        if !path.starts_with('/') {
            // Without the slash the path would be read as part of the port.
            return Err(TargetError::MissingPath {
                target: text,
                protocol,
            });
        }
        // Parsing the assembled text applies the same length and character rules as config input.
        text.parse()
    }

    /// The probe protocol.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The port probed on the instance.
    pub fn port(&self) -> u16 {
        self.port.get()
    }

    /// The request path for HTTP and HTTPS, `None` for TCP and SSL.
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }
}

impl FromStr for HealthTarget {
    type Err = TargetError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let len = text.chars().count();
        if len > MAX_TARGET_LEN {
            return Err(TargetError::TooLong {
                len,
                prefix: text.chars().take(64).collect(),
            });
        }
        let unknown = || TargetError::UnknownProtocol {
            target: text.to_owned(),
        };
        let (prefix, rest) = text.split_once(':').ok_or_else(unknown)?;
        let protocol = Protocol::parse(prefix).ok_or_else(unknown)?;

        let (port_text, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], Some(&rest[slash..])),
            None => (rest, None),
        };
        let port = parse_port(port_text).ok_or_else(|| TargetError::InvalidPort {
            target: text.to_owned(),
            port: port_text.to_owned(),
        })?;

        let path = match (protocol.is_http_family(), path) {
            (true, None) => {
                return Err(TargetError::MissingPath {
                    target: text.to_owned(),
                    protocol,
                });
            }
            (false, Some(_)) => {
                return Err(TargetError::UnexpectedPath {
                    target: text.to_owned(),
                    protocol,
                });
            }
            (false, None) => None,
            (true, Some(path)) => {
                // The path goes verbatim into `GET <path> HTTP/1.1`; whitespace or CR/LF there
                // would let a target inject headers or split the request.
                if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(TargetError::InvalidPath {
                        target: text.to_owned(),
                    });
                }
                Some(path.to_owned())
            }
        };
        Ok(Self {
            protocol,
            port,
            path,
        })
    }
}

/// Digits only: `u16::from_str` would also take a leading `+`, which ELB does not.
fn parse_port(text: &str) -> Option<NonZeroU16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u64>()
        .ok()
        .and_then(|p| u16::try_from(p).ok())
        .and_then(NonZeroU16::new)
}

impl fmt::Display for HealthTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.protocol, self.port)?;
        if let Some(path) = &self.path {
            f.write_str(path)?;
        }
        Ok(())
    }
}

impl TryFrom<String> for HealthTarget {
    type Error = TargetError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<HealthTarget> for String {
    fn from(target: HealthTarget) -> Self {
        target.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(p: u16) -> NonZeroU16 {
        NonZeroU16::new(p).unwrap()
    }

    #[test]
    fn parses_each_protocol() {
        let t: HealthTarget = "TCP:80".parse().unwrap();
        assert_eq!(
            (t.protocol(), t.port(), t.path()),
            (Protocol::Tcp, 80, None)
        );
        let t: HealthTarget = "SSL:443".parse().unwrap();
        assert_eq!(
            (t.protocol(), t.port(), t.path()),
            (Protocol::Ssl, 443, None)
        );
        let t: HealthTarget = "HTTP:8080/health".parse().unwrap();
        assert_eq!(
            (t.protocol(), t.port(), t.path()),
            (Protocol::Http, 8080, Some("/health"))
        );
        let t: HealthTarget = "HTTPS:65535/".parse().unwrap();
        assert_eq!(
            (t.protocol(), t.port(), t.path()),
            (Protocol::Https, 65535, Some("/"))
        );
    }

    #[test]
    fn protocol_is_case_insensitive_and_stored_upper_case() {
        for (input, canonical) in [
            ("tcp:1", "TCP:1"),
            ("Ssl:22", "SSL:22"),
            ("http:80/a/B?c=D", "HTTP:80/a/B?c=D"),
            ("hTtPs:443/x", "HTTPS:443/x"),
        ] {
            let target: HealthTarget = input.parse().unwrap();
            assert_eq!(target.to_string(), canonical);
        }
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "TCP:80",
            "SSL:8443",
            "HTTP:80/",
            "HTTP:8080/health?full=1",
            "HTTPS:443/status/check",
        ] {
            let target: HealthTarget = text.parse().unwrap();
            assert_eq!(target.to_string(), text);
            assert_eq!(target.to_string().parse::<HealthTarget>().unwrap(), target);
        }
    }

    #[test]
    fn leading_zeros_in_the_port_are_normalised() {
        let target: HealthTarget = "TCP:0080".parse().unwrap();
        assert_eq!(target.to_string(), "TCP:80");
    }

    #[test]
    fn constructors_match_parsing() {
        assert_eq!(HealthTarget::tcp(port(80)), "TCP:80".parse().unwrap());
        assert_eq!(HealthTarget::ssl(port(443)), "SSL:443".parse().unwrap());
        assert_eq!(
            HealthTarget::http(port(80), "/ping").unwrap(),
            "HTTP:80/ping".parse().unwrap()
        );
        assert_eq!(
            HealthTarget::https(port(443), "/").unwrap(),
            "HTTPS:443/".parse().unwrap()
        );
        assert!(matches!(
            HealthTarget::http(port(80), "ping"),
            Err(TargetError::MissingPath { .. })
        ));
    }

    #[test]
    fn unknown_protocol_uses_the_elb_message() {
        for text in ["FTP:21", "TCP80", "", ":80", "UDP:53", "HTTPX:80/"] {
            let err = text.parse::<HealthTarget>().unwrap_err();
            assert_eq!(
                err,
                TargetError::UnknownProtocol {
                    target: text.to_owned()
                }
            );
            assert!(
                err.to_string()
                    .starts_with("HealthCheck Target must begin with one of HTTP, TCP, HTTPS, SSL"),
                "{err}"
            );
        }
    }

    #[test]
    fn port_must_be_a_number_in_range() {
        for (text, bad) in [
            ("TCP:0", "0"),
            ("TCP:65536", "65536"),
            ("TCP:", ""),
            ("TCP:+80", "+80"),
            ("TCP:-1", "-1"),
            ("TCP:http", "http"),
            ("TCP:99999999999999999999999", "99999999999999999999999"),
            ("HTTP:/", ""),
            ("HTTP:80x/", "80x"),
            ("SSL: 443", " 443"),
        ] {
            let err = text.parse::<HealthTarget>().unwrap_err();
            assert_eq!(
                err,
                TargetError::InvalidPort {
                    target: text.to_owned(),
                    port: bad.to_owned()
                },
                "{text}"
            );
            assert!(err.to_string().contains("between 1 and 65535"), "{err}");
        }
    }

    #[test]
    fn http_needs_a_path_and_tcp_refuses_one() {
        let err = "HTTP:80".parse::<HealthTarget>().unwrap_err();
        assert!(matches!(
            err,
            TargetError::MissingPath {
                protocol: Protocol::Http,
                ..
            }
        ));
        assert!(err.to_string().contains("needs a path"), "{err}");
        assert!(matches!(
            "https:443".parse::<HealthTarget>(),
            Err(TargetError::MissingPath {
                protocol: Protocol::Https,
                ..
            })
        ));
        let err = "TCP:80/".parse::<HealthTarget>().unwrap_err();
        assert!(matches!(
            err,
            TargetError::UnexpectedPath {
                protocol: Protocol::Tcp,
                ..
            }
        ));
        assert!(err.to_string().contains("takes only a port"), "{err}");
        assert!(matches!(
            "SSL:443/x".parse::<HealthTarget>(),
            Err(TargetError::UnexpectedPath {
                protocol: Protocol::Ssl,
                ..
            })
        ));
    }

    #[test]
    fn path_may_not_break_the_request_line() {
        for text in [
            "HTTP:80/a b",
            "HTTP:80/\r\nX-Injected: 1",
            "HTTPS:443/\t",
            "HTTP:80/\u{7f}",
        ] {
            assert_eq!(
                text.parse::<HealthTarget>().unwrap_err(),
                TargetError::InvalidPath {
                    target: text.to_owned()
                }
            );
        }
    }

    #[test]
    fn length_limit_is_1024_characters() {
        let at_limit = format!("HTTP:80/{}", "a".repeat(MAX_TARGET_LEN - "HTTP:80/".len()));
        assert_eq!(at_limit.len(), MAX_TARGET_LEN);
        assert!(at_limit.parse::<HealthTarget>().is_ok());

        let over = format!("{at_limit}a");
        let err = over.parse::<HealthTarget>().unwrap_err();
        assert!(matches!(err, TargetError::TooLong { len: 1025, .. }));
        assert!(err.to_string().contains("at most 1024"), "{err}");
    }

    #[test]
    fn serde_uses_the_string_form() {
        let target: HealthTarget = "http:8080/health".parse().unwrap();
        let json = serde_json::to_string(&target).unwrap();
        assert_eq!(json, r#""HTTP:8080/health""#);
        assert_eq!(serde_json::from_str::<HealthTarget>(&json).unwrap(), target);
        let err = serde_json::from_str::<HealthTarget>(r#""FTP:21""#).unwrap_err();
        assert!(
            err.to_string()
                .contains("must begin with one of HTTP, TCP, HTTPS, SSL"),
            "{err}"
        );
    }
}

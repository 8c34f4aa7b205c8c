//! The four protocols of classic ELB: of listeners (front and back end) and of health-check
//! targets.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// `HTTP`, `HTTPS`, `TCP` or `SSL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Protocol {
    /// HTTP.
    Http,
    /// HTTP over TLS.
    Https,
    /// Plain TCP.
    Tcp,
    /// TLS over TCP.
    Ssl,
}

/// A protocol name that is not one of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("protocol '{}' is not one of HTTP, HTTPS, TCP, SSL", crate::printable(.0))]
pub struct UnknownProtocol(pub String);

impl Protocol {
    /// The four, in the order ELB lists them.
    pub const ALL: [Protocol; 4] = [Self::Http, Self::Https, Self::Tcp, Self::Ssl];

    /// Case-insensitive, as the API and ELB's health-check targets accept them.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(text))
    }

    /// The upper-case name ELB stores and echoes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "HTTP",
            Self::Https => "HTTPS",
            Self::Tcp => "TCP",
            Self::Ssl => "SSL",
        }
    }

    /// HTTP and HTTPS are layer 7, TCP and SSL layer 4: a listener's two sides must be of
    /// one family, and HTTP(S) health-check targets carry a path.
    pub fn is_http_family(self) -> bool {
        matches!(self, Self::Http | Self::Https)
    }

    /// Whether the protocol runs over TLS (a front end needs a certificate; a probe does a
    /// handshake).
    pub fn is_secure(self) -> bool {
        matches!(self, Self::Https | Self::Ssl)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = UnknownProtocol;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| UnknownProtocol(s.to_string()))
    }
}

impl TryFrom<String> for Protocol {
    type Error = UnknownProtocol;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Protocol> for String {
    fn from(p: Protocol) -> Self {
        p.as_str().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_families_and_serde() {
        for p in Protocol::ALL {
            assert_eq!(Protocol::parse(&p.as_str().to_lowercase()), Some(p));
        }
        assert_eq!(
            "FTP".parse::<Protocol>().unwrap_err().to_string(),
            "protocol 'FTP' is not one of HTTP, HTTPS, TCP, SSL"
        );
        assert!(Protocol::Https.is_http_family() && Protocol::Https.is_secure());
        assert!(!Protocol::Tcp.is_http_family() && !Protocol::Tcp.is_secure());
        assert_eq!(serde_json::to_string(&Protocol::Ssl).unwrap(), "\"SSL\"");
        assert_eq!(
            serde_json::from_str::<Protocol>("\"http\"").unwrap(),
            Protocol::Http
        );
        assert!(serde_json::from_str::<Protocol>("\"UDP\"").is_err());
    }
}

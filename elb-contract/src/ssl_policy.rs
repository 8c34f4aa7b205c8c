//! SSL negotiation policies (`SSLNegotiationPolicyType`): AWS's predefined `ELBSecurityPolicy-*`
//! sets and custom attribute lists, resolved to what this load balancer can offer.
//!
//! A pure module: names, IANA codes and protocol versions only, no TLS library types, so that
//! control (which must refuse at the API what a servo cannot offer) and the servo's engine (which
//! maps the resolved IANA codes to its TLS library's suites) share one table.
//!
//! # What can be offered
//! The engine terminates TLS with rustls, which implements TLS 1.2 (and 1.3) with ECDHE key
//! exchange and AEAD ciphers only. Of the ELB cipher names, four are offered:
//! `ECDHE-ECDSA-AES128-GCM-SHA256`, `ECDHE-RSA-AES128-GCM-SHA256`,
//! `ECDHE-ECDSA-AES256-GCM-SHA384`, `ECDHE-RSA-AES256-GCM-SHA384`. CBC-mode suites, static-RSA
//! key exchange, DHE, 3DES, RC4 and the rest are not; neither are SSLv2, SSLv3, TLS 1.0 and
//! TLS 1.1. Classic ELB policies never name TLS 1.3, so it is not offered either.
//!
//! # Resolution rules
//! - A predefined policy resolves to the part of it that can be offered; what it names but cannot
//!   be offered is listed in [`ResolvedPolicy::not_offered_protocols`] / `not_offered_ciphers`
//!   (every predefined policy from 2014-01 on keeps TLS 1.2 and four AEAD suites). A predefined
//!   policy with nothing left (`ELBSecurityPolicy-2011-08`: SSLv3 and TLS 1.0 only) is an error.
//! - A custom policy (an attribute list) is resolved in [`Mode::Strict`] by control and servo:
//!   naming a protocol or cipher that cannot be offered is an error that says which and what to
//!   use instead, so nothing the API accepts is silently dropped. [`Mode::Lenient`] drops them
//!   instead, as for predefined policies.
//! - `Reference-Security-Policy` names a predefined policy and cannot be combined with protocol
//!   or cipher attributes.
//! - Attributes not given are false (as AWS treats custom policies); values are `true`/`false`.
//! - `Server-Defined-Cipher-Order=true`: the server picks the first suite of its list (the order
//!   of [`CIPHERS`], which is AWS's table order) that the client offers; otherwise the client's
//!   order wins.
//!
//! # Sources
//! - Cipher and protocol attribute names and the contents of `ELBSecurityPolicy-2011-08`,
//!   `-2014-01`, `-2014-10`, `-2015-02`, `-2015-03`, `-2015-05` and `-2016-08`: AWS's
//!   `DescribeLoadBalancerPolicies` output as kept by Eucalyptus
//!   (eucalyptus/eucalyptus `tools/elb-security-policy/elb_security_policy_*.json`).
//! - `ELBSecurityPolicy-TLS-1-1-2017-01` and `ELBSecurityPolicy-TLS-1-2-2017-01`: AWS, "Predefined
//!   SSL security policies for Classic Load Balancers" (elasticloadbalancing/latest/classic/
//!   elb-security-policy-table): TLS-1-1 is 2016-08 without TLS 1.0; TLS-1-2 is TLS 1.2 only and
//!   drops the SHA-1 CBC suites.
//! - IANA codes: the IANA TLS Cipher Suites registry (checked against `openssl ciphers -V` for the
//!   suites OpenSSL 3 still knows). The SSLv2-only names have no TLS code.
//! - The `ELBSample-*` policies are not included: their attribute sets are not documented.

use std::fmt;

/// A protocol version attribute (`Protocol-...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// `Protocol-SSLv2`.
    SslV2,
    /// `Protocol-SSLv3`.
    SslV3,
    /// `Protocol-TLSv1` (TLS 1.0).
    TlsV1_0,
    /// `Protocol-TLSv1.1`.
    TlsV1_1,
    /// `Protocol-TLSv1.2`.
    TlsV1_2,
}

impl Protocol {
    /// Every protocol attribute, oldest first.
    pub const ALL: [Self; 5] = [
        Self::SslV2,
        Self::SslV3,
        Self::TlsV1_0,
        Self::TlsV1_1,
        Self::TlsV1_2,
    ];

    /// The policy attribute name.
    pub fn attribute(self) -> &'static str {
        match self {
            Self::SslV2 => "Protocol-SSLv2",
            Self::SslV3 => "Protocol-SSLv3",
            Self::TlsV1_0 => "Protocol-TLSv1",
            Self::TlsV1_1 => "Protocol-TLSv1.1",
            Self::TlsV1_2 => "Protocol-TLSv1.2",
        }
    }

    /// The protocol version on the wire (`0x0303` for TLS 1.2); SSLv2 has none in this format.
    pub fn wire_version(self) -> u16 {
        match self {
            Self::SslV2 => 0x0002,
            Self::SslV3 => 0x0300,
            Self::TlsV1_0 => 0x0301,
            Self::TlsV1_1 => 0x0302,
            Self::TlsV1_2 => 0x0303,
        }
    }

    /// Whether the engine can offer it.
    pub fn offered(self) -> bool {
        self == Self::TlsV1_2
    }

    fn from_attribute(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.attribute() == name)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.attribute())
    }
}

/// What authenticates the server in a cipher suite (which certificate key it needs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Authentication {
    /// An RSA certificate key.
    Rsa,
    /// An ECDSA certificate key.
    Ecdsa,
    /// A DSA certificate key.
    Dss,
    /// None (anonymous Diffie-Hellman).
    Anonymous,
    /// A pre-shared key.
    Psk,
    /// Kerberos.
    Kerberos,
}

/// One cipher attribute of ELB's SSL negotiation policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cipher {
    /// The attribute name (OpenSSL's name for the suite).
    pub name: &'static str,
    /// The IANA code point (`0xC02F`); `None` for SSLv2-only suites.
    pub iana: Option<u16>,
    /// What key the server's certificate needs for it.
    pub authentication: Authentication,
    /// Why the engine cannot offer it, or `None` if it can.
    pub not_offered_because: Option<&'static str>,
}

impl Cipher {
    /// Whether the engine can offer it.
    pub fn offered(&self) -> bool {
        self.not_offered_because.is_none()
    }
}

const CBC: Option<&str> = Some("CBC-mode suites are not implemented (AEAD suites only)");
const STATIC_RSA: Option<&str> =
    Some("static RSA key exchange is not implemented (no forward secrecy)");
const DHE: Option<&str> = Some("finite-field DHE key exchange is not implemented");
const LEGACY: Option<&str> = Some("a broken or obsolete cipher (3DES, RC4, DES, SEED, IDEA...)");
const ANON: Option<&str> = Some("anonymous key exchange authenticates no server");
const PSK_KRB: Option<&str> = Some("PSK and Kerberos suites are not implemented");
const EXPORT: Option<&str> = Some("an export-grade cipher");
const SSL2: Option<&str> = Some("an SSLv2-only cipher");

macro_rules! cipher {
    ($name:literal, $iana:expr, $auth:ident, $why:expr) => {
        Cipher {
            name: $name,
            iana: $iana,
            authentication: Authentication::$auth,
            not_offered_because: $why,
        }
    };
}

/// Every cipher attribute ELB knows, in AWS's table order (the server's preference order when a
/// policy sets `Server-Defined-Cipher-Order`).
pub static CIPHERS: &[Cipher] = &[
    cipher!("ECDHE-ECDSA-AES128-GCM-SHA256", Some(0xC02B), Ecdsa, None),
    cipher!("ECDHE-RSA-AES128-GCM-SHA256", Some(0xC02F), Rsa, None),
    cipher!("ECDHE-ECDSA-AES128-SHA256", Some(0xC023), Ecdsa, CBC),
    cipher!("ECDHE-RSA-AES128-SHA256", Some(0xC027), Rsa, CBC),
    cipher!("ECDHE-ECDSA-AES128-SHA", Some(0xC009), Ecdsa, CBC),
    cipher!("ECDHE-RSA-AES128-SHA", Some(0xC013), Rsa, CBC),
    cipher!("DHE-RSA-AES128-SHA", Some(0x0033), Rsa, DHE),
    cipher!("ECDHE-ECDSA-AES256-GCM-SHA384", Some(0xC02C), Ecdsa, None),
    cipher!("ECDHE-RSA-AES256-GCM-SHA384", Some(0xC030), Rsa, None),
    cipher!("ECDHE-ECDSA-AES256-SHA384", Some(0xC024), Ecdsa, CBC),
    cipher!("ECDHE-RSA-AES256-SHA384", Some(0xC028), Rsa, CBC),
    cipher!("ECDHE-RSA-AES256-SHA", Some(0xC014), Rsa, CBC),
    cipher!("ECDHE-ECDSA-AES256-SHA", Some(0xC00A), Ecdsa, CBC),
    cipher!("AES128-GCM-SHA256", Some(0x009C), Rsa, STATIC_RSA),
    cipher!("AES128-SHA256", Some(0x003C), Rsa, STATIC_RSA),
    cipher!("AES128-SHA", Some(0x002F), Rsa, STATIC_RSA),
    cipher!("AES256-GCM-SHA384", Some(0x009D), Rsa, STATIC_RSA),
    cipher!("AES256-SHA256", Some(0x003D), Rsa, STATIC_RSA),
    cipher!("AES256-SHA", Some(0x0035), Rsa, STATIC_RSA),
    cipher!("DHE-DSS-AES128-SHA", Some(0x0032), Dss, DHE),
    cipher!("CAMELLIA128-SHA", Some(0x0041), Rsa, STATIC_RSA),
    cipher!("EDH-RSA-DES-CBC3-SHA", Some(0x0016), Rsa, LEGACY),
    cipher!("DES-CBC3-SHA", Some(0x000A), Rsa, LEGACY),
    cipher!("ECDHE-RSA-RC4-SHA", Some(0xC011), Rsa, LEGACY),
    cipher!("RC4-SHA", Some(0x0005), Rsa, LEGACY),
    cipher!("ECDHE-ECDSA-RC4-SHA", Some(0xC007), Ecdsa, LEGACY),
    cipher!("DHE-DSS-AES256-GCM-SHA384", Some(0x00A3), Dss, DHE),
    cipher!("DHE-RSA-AES256-GCM-SHA384", Some(0x009F), Rsa, DHE),
    cipher!("DHE-RSA-AES256-SHA256", Some(0x006B), Rsa, DHE),
    cipher!("DHE-DSS-AES256-SHA256", Some(0x006A), Dss, DHE),
    cipher!("DHE-RSA-AES256-SHA", Some(0x0039), Rsa, DHE),
    cipher!("DHE-DSS-AES256-SHA", Some(0x0038), Dss, DHE),
    cipher!("DHE-RSA-CAMELLIA256-SHA", Some(0x0088), Rsa, DHE),
    cipher!("DHE-DSS-CAMELLIA256-SHA", Some(0x0087), Dss, DHE),
    cipher!("CAMELLIA256-SHA", Some(0x0084), Rsa, STATIC_RSA),
    cipher!("EDH-DSS-DES-CBC3-SHA", Some(0x0013), Dss, LEGACY),
    cipher!("DHE-DSS-AES128-GCM-SHA256", Some(0x00A2), Dss, DHE),
    cipher!("DHE-RSA-AES128-GCM-SHA256", Some(0x009E), Rsa, DHE),
    cipher!("DHE-RSA-AES128-SHA256", Some(0x0067), Rsa, DHE),
    cipher!("DHE-DSS-AES128-SHA256", Some(0x0040), Dss, DHE),
    cipher!("DHE-RSA-CAMELLIA128-SHA", Some(0x0045), Rsa, DHE),
    cipher!("DHE-DSS-CAMELLIA128-SHA", Some(0x0044), Dss, DHE),
    cipher!("ADH-AES128-GCM-SHA256", Some(0x00A6), Anonymous, ANON),
    cipher!("ADH-AES128-SHA", Some(0x0034), Anonymous, ANON),
    cipher!("ADH-AES128-SHA256", Some(0x006C), Anonymous, ANON),
    cipher!("ADH-AES256-GCM-SHA384", Some(0x00A7), Anonymous, ANON),
    cipher!("ADH-AES256-SHA", Some(0x003A), Anonymous, ANON),
    cipher!("ADH-AES256-SHA256", Some(0x006D), Anonymous, ANON),
    cipher!("ADH-CAMELLIA128-SHA", Some(0x0046), Anonymous, ANON),
    cipher!("ADH-CAMELLIA256-SHA", Some(0x0089), Anonymous, ANON),
    cipher!("ADH-DES-CBC3-SHA", Some(0x001B), Anonymous, ANON),
    cipher!("ADH-DES-CBC-SHA", Some(0x001A), Anonymous, ANON),
    cipher!("ADH-RC4-MD5", Some(0x0018), Anonymous, ANON),
    cipher!("ADH-SEED-SHA", Some(0x009B), Anonymous, ANON),
    cipher!("DES-CBC-SHA", Some(0x0009), Rsa, LEGACY),
    cipher!("DHE-DSS-SEED-SHA", Some(0x0099), Dss, LEGACY),
    cipher!("DHE-RSA-SEED-SHA", Some(0x009A), Rsa, LEGACY),
    cipher!("EDH-DSS-DES-CBC-SHA", Some(0x0012), Dss, LEGACY),
    cipher!("EDH-RSA-DES-CBC-SHA", Some(0x0015), Rsa, LEGACY),
    cipher!("IDEA-CBC-SHA", Some(0x0007), Rsa, LEGACY),
    cipher!("RC4-MD5", Some(0x0004), Rsa, LEGACY),
    cipher!("SEED-SHA", Some(0x0096), Rsa, LEGACY),
    cipher!("DES-CBC3-MD5", None, Rsa, SSL2),
    cipher!("DES-CBC-MD5", None, Rsa, SSL2),
    cipher!("RC2-CBC-MD5", None, Rsa, SSL2),
    cipher!("PSK-AES256-CBC-SHA", Some(0x008D), Psk, PSK_KRB),
    cipher!("PSK-3DES-EDE-CBC-SHA", Some(0x008B), Psk, PSK_KRB),
    cipher!("KRB5-DES-CBC3-SHA", Some(0x001F), Kerberos, PSK_KRB),
    cipher!("KRB5-DES-CBC3-MD5", Some(0x0023), Kerberos, PSK_KRB),
    cipher!("PSK-AES128-CBC-SHA", Some(0x008C), Psk, PSK_KRB),
    cipher!("PSK-RC4-SHA", Some(0x008A), Psk, PSK_KRB),
    cipher!("KRB5-RC4-SHA", Some(0x0020), Kerberos, PSK_KRB),
    cipher!("KRB5-RC4-MD5", Some(0x0024), Kerberos, PSK_KRB),
    cipher!("KRB5-DES-CBC-SHA", Some(0x001E), Kerberos, PSK_KRB),
    cipher!("KRB5-DES-CBC-MD5", Some(0x0022), Kerberos, PSK_KRB),
    cipher!("EXP-EDH-RSA-DES-CBC-SHA", Some(0x0014), Rsa, EXPORT),
    cipher!("EXP-EDH-DSS-DES-CBC-SHA", Some(0x0011), Dss, EXPORT),
    cipher!("EXP-ADH-DES-CBC-SHA", Some(0x0019), Anonymous, EXPORT),
    cipher!("EXP-DES-CBC-SHA", Some(0x0008), Rsa, EXPORT),
    cipher!("EXP-RC2-CBC-MD5", Some(0x0006), Rsa, EXPORT),
    cipher!("EXP-KRB5-RC2-CBC-SHA", Some(0x0027), Kerberos, EXPORT),
    cipher!("EXP-KRB5-DES-CBC-SHA", Some(0x0026), Kerberos, EXPORT),
    cipher!("EXP-KRB5-RC2-CBC-MD5", Some(0x002A), Kerberos, EXPORT),
    cipher!("EXP-KRB5-DES-CBC-MD5", Some(0x0029), Kerberos, EXPORT),
    cipher!("EXP-ADH-RC4-MD5", Some(0x0017), Anonymous, EXPORT),
    cipher!("EXP-RC4-MD5", Some(0x0003), Rsa, EXPORT),
    cipher!("EXP-KRB5-RC4-SHA", Some(0x0028), Kerberos, EXPORT),
    cipher!("EXP-KRB5-RC4-MD5", Some(0x002B), Kerberos, EXPORT),
];

/// The cipher attribute `name`, if ELB knows it.
pub fn cipher(name: &str) -> Option<&'static Cipher> {
    CIPHERS.iter().find(|c| c.name == name)
}

/// The ciphers the engine can offer, in preference order.
pub fn offered_ciphers() -> impl Iterator<Item = &'static Cipher> {
    CIPHERS.iter().filter(|c| c.offered())
}

/// The `Server-Defined-Cipher-Order` attribute.
pub const SERVER_ORDER_ATTRIBUTE: &str = "Server-Defined-Cipher-Order";
/// The `Reference-Security-Policy` attribute.
pub const REFERENCE_ATTRIBUTE: &str = "Reference-Security-Policy";
/// The policy ELB applies to an HTTPS/SSL listener that names none.
pub const DEFAULT_POLICY: &str = "ELBSecurityPolicy-2016-08";

/// One of AWS's predefined security policies.
#[derive(Debug)]
pub struct PredefinedPolicy {
    /// `ELBSecurityPolicy-...`.
    pub name: &'static str,
    /// Protocols it enables.
    pub protocols: &'static [Protocol],
    /// `Server-Defined-Cipher-Order`.
    pub server_order: bool,
    /// Ciphers it enables: the union of these lists of names from [`CIPHERS`] (the server's
    /// order is always the table's).
    pub ciphers: &'static [&'static [&'static str]],
}

impl PredefinedPolicy {
    /// Whether it enables cipher `name`.
    pub fn enables(&self, name: &str) -> bool {
        self.ciphers.iter().any(|list| list.contains(&name))
    }

    /// Its attributes as `DescribeLoadBalancerPolicies` lists them: every protocol, then
    /// `Server-Defined-Cipher-Order`, then every cipher of [`CIPHERS`], each `true` or `false`.
    pub fn attributes(&self) -> Vec<(String, String)> {
        let flag = |b: bool| if b { "true" } else { "false" }.to_string();
        let mut out: Vec<(String, String)> = Protocol::ALL
            .iter()
            .map(|p| (p.attribute().to_string(), flag(self.protocols.contains(p))))
            .collect();
        out.push((SERVER_ORDER_ATTRIBUTE.to_string(), flag(self.server_order)));
        out.extend(
            CIPHERS
                .iter()
                .map(|c| (c.name.to_string(), flag(self.enables(c.name)))),
        );
        out
    }
}

/// 2016-08, the default: ECDHE (AEAD and CBC) and static-RSA AES suites.
const SUITES_2016_08: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-RSA-AES128-SHA256",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES256-SHA384",
    "ECDHE-RSA-AES256-SHA384",
    "ECDHE-RSA-AES256-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES128-SHA256",
    "AES128-SHA",
    "AES256-GCM-SHA384",
    "AES256-SHA256",
    "AES256-SHA",
];
/// What the 2014 and early 2015 policies add: DHE with SHA-1.
const DHE_SHA1: &[&str] = &["DHE-RSA-AES128-SHA", "DHE-DSS-AES128-SHA"];
/// What 2015-03 and 2015-05 add: 3DES.
const TRIPLE_DES: &[&str] = &["DES-CBC3-SHA"];
/// What the 2014 policies add: RC4.
const RC4: &[&str] = &["ECDHE-RSA-RC4-SHA", "RC4-SHA"];
/// TLS 1.2 only: no SHA-1 suites.
const SUITES_TLS_1_2: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-RSA-AES128-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES256-SHA384",
    "ECDHE-RSA-AES256-SHA384",
    "AES128-GCM-SHA256",
    "AES128-SHA256",
    "AES256-GCM-SHA384",
    "AES256-SHA256",
];
/// 2011-08: SSLv3/TLS 1.0 era suites.
const SUITES_2011_08: &[&str] = &[
    "DHE-RSA-AES128-SHA",
    "AES128-SHA",
    "AES256-SHA",
    "DHE-DSS-AES128-SHA",
    "CAMELLIA128-SHA",
    "EDH-RSA-DES-CBC3-SHA",
    "DES-CBC3-SHA",
    "RC4-SHA",
    "DHE-RSA-AES256-SHA",
    "DHE-DSS-AES256-SHA",
    "DHE-RSA-CAMELLIA256-SHA",
    "DHE-DSS-CAMELLIA256-SHA",
    "CAMELLIA256-SHA",
    "EDH-DSS-DES-CBC3-SHA",
    "DHE-RSA-CAMELLIA128-SHA",
    "DHE-DSS-CAMELLIA128-SHA",
];

const TLS_1_0_TO_1_2: &[Protocol] = &[Protocol::TlsV1_0, Protocol::TlsV1_1, Protocol::TlsV1_2];

/// Every predefined classic policy with a documented attribute set.
pub static PREDEFINED: &[PredefinedPolicy] = &[
    PredefinedPolicy {
        name: "ELBSecurityPolicy-TLS-1-2-2017-01",
        protocols: &[Protocol::TlsV1_2],
        server_order: true,
        ciphers: &[SUITES_TLS_1_2],
    },
    PredefinedPolicy {
        name: "ELBSecurityPolicy-TLS-1-1-2017-01",
        protocols: &[Protocol::TlsV1_1, Protocol::TlsV1_2],
        server_order: true,
        ciphers: &[SUITES_2016_08],
    },
    PredefinedPolicy {
        name: "ELBSecurityPolicy-2016-08",
        protocols: TLS_1_0_TO_1_2,
        server_order: true,
        ciphers: &[SUITES_2016_08],
    },
    PredefinedPolicy {
        name: "ELBSecurityPolicy-2015-05",
        protocols: TLS_1_0_TO_1_2,
        server_order: true,
        ciphers: &[SUITES_2016_08, TRIPLE_DES],
    },
    PredefinedPolicy {
        name: "ELBSecurityPolicy-2015-03",
        protocols: TLS_1_0_TO_1_2,
        server_order: true,
        ciphers: &[SUITES_2016_08, DHE_SHA1, TRIPLE_DES],
    },
    PredefinedPolicy {
        name: "ELBSecurityPolicy-2015-02",
        protocols: TLS_1_0_TO_1_2,
        server_order: true,
        ciphers: &[SUITES_2016_08, DHE_SHA1],
    },
    PredefinedPolicy {
        name: "ELBSecurityPolicy-2014-10",
        protocols: TLS_1_0_TO_1_2,
        server_order: true,
        ciphers: &[SUITES_2016_08, DHE_SHA1, RC4],
    },
    PredefinedPolicy {
        name: "ELBSecurityPolicy-2014-01",
        protocols: &[
            Protocol::SslV3,
            Protocol::TlsV1_0,
            Protocol::TlsV1_1,
            Protocol::TlsV1_2,
        ],
        server_order: true,
        ciphers: &[SUITES_2016_08, DHE_SHA1, RC4],
    },
    PredefinedPolicy {
        name: "ELBSecurityPolicy-2011-08",
        protocols: &[Protocol::SslV3, Protocol::TlsV1_0],
        server_order: false,
        ciphers: &[SUITES_2011_08],
    },
];

/// The predefined policy `name`, if there is one.
pub fn predefined(name: &str) -> Option<&'static PredefinedPolicy> {
    PREDEFINED.iter().find(|p| p.name == name)
}

/// A cipher suite the engine will offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfferedCipher {
    /// ELB's (OpenSSL's) name.
    pub name: String,
    /// IANA code point.
    pub iana: u16,
    /// What key the certificate needs for it.
    pub authentication: Authentication,
}

/// A policy resolved to what the engine offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedPolicy {
    /// Protocol versions to offer (never empty).
    pub protocols: Vec<Protocol>,
    /// Cipher suites to offer, in the server's preference order (never empty).
    pub ciphers: Vec<OfferedCipher>,
    /// `Server-Defined-Cipher-Order`: the server's order wins over the client's.
    pub server_order: bool,
    /// Protocols the policy enables that are not offered (predefined or lenient only).
    pub not_offered_protocols: Vec<Protocol>,
    /// Ciphers the policy enables that are not offered (predefined or lenient only).
    pub not_offered_ciphers: Vec<String>,
}

impl ResolvedPolicy {
    /// Whether some offered suite works with a certificate key of this kind.
    pub fn serves(&self, key: Authentication) -> bool {
        self.ciphers.iter().any(|c| c.authentication == key)
    }
}

/// How a custom policy's protocols and ciphers that cannot be offered are treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// They are an error (what control and servo use for custom policies).
    Strict,
    /// They are dropped and listed in the result.
    Lenient,
}

/// Why a policy cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyError {
    /// No predefined policy of that name.
    UnknownPolicy(String),
    /// An attribute that is neither a protocol, a cipher, nor an option of the policy type.
    UnknownAttribute(String),
    /// A value other than `true` or `false`.
    InvalidValue {
        /// The attribute.
        attribute: String,
        /// Its value.
        value: String,
    },
    /// An attribute given twice.
    DuplicateAttribute(String),
    /// `Reference-Security-Policy` combined with protocol or cipher attributes.
    ReferenceWithAttributes,
    /// Protocols or ciphers that cannot be offered (strict mode).
    NotOffered {
        /// Protocol attributes.
        protocols: Vec<Protocol>,
        /// Cipher attributes, with the reason for each.
        ciphers: Vec<(String, &'static str)>,
    },
    /// No protocol that can be offered is enabled.
    NoProtocol {
        /// What the policy enables.
        enabled: Vec<Protocol>,
    },
    /// No cipher that can be offered is enabled.
    NoCipher {
        /// What the policy enables.
        enabled: Vec<String>,
    },
}

fn offered_names() -> String {
    offered_ciphers()
        .map(|c| c.name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownPolicy(name) => {
                let known: Vec<&str> = PREDEFINED.iter().map(|p| p.name).collect();
                write!(
                    f,
                    "unknown security policy {name:?}; predefined policies: {}",
                    known.join(", ")
                )
            }
            Self::UnknownAttribute(name) => write!(
                f,
                "unknown SSLNegotiationPolicyType attribute {name:?} (expected Protocol-*, \
                 {SERVER_ORDER_ATTRIBUTE}, {REFERENCE_ATTRIBUTE} or a cipher name)"
            ),
            Self::InvalidValue { attribute, value } => write!(
                f,
                "attribute {attribute} has value {value:?}; expected true or false"
            ),
            Self::DuplicateAttribute(name) => write!(f, "attribute {name} is given twice"),
            Self::ReferenceWithAttributes => write!(
                f,
                "{REFERENCE_ATTRIBUTE} cannot be combined with protocol or cipher attributes"
            ),
            Self::NotOffered { protocols, ciphers } => {
                let mut parts = Vec::new();
                if !protocols.is_empty() {
                    let names: Vec<&str> = protocols.iter().map(|p| p.attribute()).collect();
                    parts.push(format!(
                        "protocols {} (only Protocol-TLSv1.2 is offered)",
                        names.join(", ")
                    ));
                }
                if !ciphers.is_empty() {
                    let names: Vec<String> = ciphers
                        .iter()
                        .map(|(name, why)| format!("{name} ({why})"))
                        .collect();
                    parts.push(format!("ciphers {}", names.join(", ")));
                }
                write!(
                    f,
                    "this load balancer cannot offer {}; set them to false. Offered ciphers: {}",
                    parts.join(" and "),
                    offered_names()
                )
            }
            Self::NoProtocol { enabled } => {
                let names: Vec<&str> = enabled.iter().map(|p| p.attribute()).collect();
                write!(
                    f,
                    "the policy enables no protocol this load balancer offers (enabled: {}); \
                     enable Protocol-TLSv1.2",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                )
            }
            Self::NoCipher { enabled } => write!(
                f,
                "the policy enables no cipher this load balancer offers (enabled: {}); enable at \
                 least one of {}",
                if enabled.is_empty() {
                    "none".to_string()
                } else {
                    enabled.join(", ")
                },
                offered_names()
            ),
        }
    }
}

impl std::error::Error for PolicyError {}

/// A listener's SSL negotiation policy as the API holds it.
#[derive(Clone, Copy, Debug)]
pub enum PolicySpec<'a> {
    /// A predefined policy, by name (`ELBSecurityPolicy-2016-08` when the listener names none).
    Predefined(&'a str),
    /// A custom `SSLNegotiationPolicyType` policy's attributes.
    Custom(&'a [(String, String)]),
}

/// Resolves what a listener's policy offers: predefined policies as the part of them that can be
/// offered, custom ones strictly (anything they enable that cannot be offered is an error).
/// Control calls it to refuse a policy at the API; the servo calls it to configure the engine.
pub fn resolve(spec: PolicySpec<'_>) -> Result<ResolvedPolicy, PolicyError> {
    match spec {
        PolicySpec::Predefined(name) => resolve_predefined(name),
        PolicySpec::Custom(attributes) => resolve_attributes(attributes, Mode::Strict),
    }
}

/// Resolves predefined policy `name`, dropping what cannot be offered.
pub fn resolve_predefined(name: &str) -> Result<ResolvedPolicy, PolicyError> {
    let policy = predefined(name).ok_or_else(|| PolicyError::UnknownPolicy(name.to_string()))?;
    let ciphers: Vec<&'static Cipher> = CIPHERS.iter().filter(|c| policy.enables(c.name)).collect();
    build(
        policy.protocols,
        &ciphers,
        policy.server_order,
        Mode::Lenient,
    )
}

/// Resolves a policy given as `SSLNegotiationPolicyType` attributes (name, value), as
/// `CreateLoadBalancerPolicy` receives them.
pub fn resolve_attributes<N: AsRef<str>, V: AsRef<str>>(
    attributes: &[(N, V)],
    mode: Mode,
) -> Result<ResolvedPolicy, PolicyError> {
    let mut seen: Vec<&str> = Vec::new();
    let mut reference = None;
    let mut protocols = Vec::new();
    let mut ciphers = Vec::new();
    let mut server_order = false;
    let mut has_settings = false;
    for (name, value) in attributes {
        let (name, value) = (name.as_ref(), value.as_ref());
        if seen.contains(&name) {
            return Err(PolicyError::DuplicateAttribute(name.to_string()));
        }
        seen.push(name);
        if name == REFERENCE_ATTRIBUTE {
            reference = Some(value);
            continue;
        }
        let enabled = match value.to_ascii_lowercase().as_str() {
            "true" => true,
            "false" => false,
            _ => {
                return Err(PolicyError::InvalidValue {
                    attribute: name.to_string(),
                    value: value.to_string(),
                });
            }
        };
        has_settings = true;
        if name == SERVER_ORDER_ATTRIBUTE {
            server_order = enabled;
        } else if let Some(p) = Protocol::from_attribute(name) {
            if enabled {
                protocols.push(p);
            }
        } else if let Some(c) = cipher(name) {
            if enabled {
                ciphers.push(c);
            }
        } else {
            return Err(PolicyError::UnknownAttribute(name.to_string()));
        }
    }
    if let Some(reference) = reference {
        if has_settings {
            return Err(PolicyError::ReferenceWithAttributes);
        }
        return resolve_predefined(reference);
    }
    protocols.sort();
    // The server's preference order is the table's, whatever order the attributes came in.
    ciphers.sort_by_key(|c| CIPHERS.iter().position(|k| k.name == c.name));
    build(&protocols, &ciphers, server_order, mode)
}

fn build(
    protocols: &[Protocol],
    ciphers: &[&'static Cipher],
    server_order: bool,
    mode: Mode,
) -> Result<ResolvedPolicy, PolicyError> {
    let (offered_p, dropped_p): (Vec<Protocol>, Vec<Protocol>) =
        protocols.iter().partition(|p| p.offered());
    let (offered_c, dropped_c): (Vec<&Cipher>, Vec<&Cipher>) =
        ciphers.iter().partition(|c| c.offered());
    if mode == Mode::Strict && (!dropped_p.is_empty() || !dropped_c.is_empty()) {
        return Err(PolicyError::NotOffered {
            protocols: dropped_p,
            ciphers: dropped_c
                .iter()
                .map(|c| (c.name.to_string(), c.not_offered_because.unwrap_or("")))
                .collect(),
        });
    }
    if offered_p.is_empty() {
        return Err(PolicyError::NoProtocol {
            enabled: protocols.to_vec(),
        });
    }
    if offered_c.is_empty() {
        return Err(PolicyError::NoCipher {
            enabled: ciphers.iter().map(|c| c.name.to_string()).collect(),
        });
    }
    Ok(ResolvedPolicy {
        protocols: offered_p,
        ciphers: offered_c
            .iter()
            .map(|c| OfferedCipher {
                name: c.name.to_string(),
                iana: c.iana.expect("offered ciphers have an IANA code"),
                authentication: c.authentication,
            })
            .collect(),
        server_order,
        not_offered_protocols: dropped_p,
        not_offered_ciphers: dropped_c.iter().map(|c| c.name.to_string()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &ResolvedPolicy) -> Vec<&str> {
        p.ciphers.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn the_table_is_consistent() {
        for (i, c) in CIPHERS.iter().enumerate() {
            assert!(
                CIPHERS[..i].iter().all(|o| o.name != c.name),
                "{} twice",
                c.name
            );
            if let Some(code) = c.iana {
                assert!(
                    CIPHERS[..i].iter().all(|o| o.iana != Some(code)),
                    "{code:#06x} twice"
                );
            }
        }
        for p in PREDEFINED {
            for name in p.ciphers.iter().flat_map(|l| l.iter()) {
                assert!(cipher(name).is_some(), "{}: unknown cipher {name}", p.name);
            }
            let attrs = p.attributes();
            assert_eq!(attrs.len(), Protocol::ALL.len() + 1 + CIPHERS.len());
            // Its own attribute list resolves to the same policy (lenient: as predefined).
            let from_attrs = resolve_attributes(&attrs, Mode::Lenient);
            assert_eq!(from_attrs, resolve_predefined(p.name), "{}", p.name);
        }
        // 2015-05 is 2016-08 plus 3DES, as AWS lists them.
        let enabled = |name| {
            let p = predefined(name).unwrap();
            CIPHERS.iter().filter(|c| p.enables(c.name)).count()
        };
        assert_eq!(enabled("ELBSecurityPolicy-2016-08"), 18);
        assert_eq!(enabled("ELBSecurityPolicy-2015-05"), 19);
        assert_eq!(enabled("ELBSecurityPolicy-2015-03"), 21);
        assert_eq!(enabled("ELBSecurityPolicy-2014-01"), 22);
        assert_eq!(enabled("ELBSecurityPolicy-TLS-1-2-2017-01"), 12);
        assert_eq!(enabled("ELBSecurityPolicy-2011-08"), 16);
        assert_eq!(offered_ciphers().count(), 4);
        assert!(predefined(DEFAULT_POLICY).is_some());
    }

    #[test]
    fn the_default_policy_maps_to_tls12_aead() {
        let p = resolve_predefined(DEFAULT_POLICY).unwrap();
        assert_eq!(p.protocols, vec![Protocol::TlsV1_2]);
        assert_eq!(
            names(&p),
            [
                "ECDHE-ECDSA-AES128-GCM-SHA256",
                "ECDHE-RSA-AES128-GCM-SHA256",
                "ECDHE-ECDSA-AES256-GCM-SHA384",
                "ECDHE-RSA-AES256-GCM-SHA384"
            ]
        );
        assert_eq!(
            p.ciphers.iter().map(|c| c.iana).collect::<Vec<_>>(),
            [0xC02B, 0xC02F, 0xC02C, 0xC030]
        );
        assert!(p.server_order);
        assert_eq!(
            p.not_offered_protocols,
            [Protocol::TlsV1_0, Protocol::TlsV1_1]
        );
        assert_eq!(p.not_offered_ciphers.len(), 14);
        assert!(p.serves(Authentication::Rsa) && p.serves(Authentication::Ecdsa));
    }

    #[test]
    fn every_predefined_policy_from_2014_resolves_and_2011_does_not() {
        for p in PREDEFINED {
            let r = resolve_predefined(p.name);
            if p.name == "ELBSecurityPolicy-2011-08" {
                assert_eq!(
                    r,
                    Err(PolicyError::NoProtocol {
                        enabled: vec![Protocol::SslV3, Protocol::TlsV1_0]
                    })
                );
            } else {
                let r = r.unwrap();
                assert_eq!(names(&r).len(), 4, "{}", p.name);
            }
        }
        let tls12 = resolve_predefined("ELBSecurityPolicy-TLS-1-2-2017-01").unwrap();
        assert!(tls12.not_offered_protocols.is_empty());
        assert!(matches!(
            resolve_predefined("ELBSecurityPolicy-1999-01"),
            Err(PolicyError::UnknownPolicy(_))
        ));
    }

    #[test]
    fn resolve_is_lenient_for_predefined_and_strict_for_custom() {
        assert!(resolve(PolicySpec::Predefined(DEFAULT_POLICY)).is_ok());
        let copy: Vec<(String, String)> = predefined(DEFAULT_POLICY).unwrap().attributes();
        assert!(matches!(
            resolve(PolicySpec::Custom(&copy)),
            Err(PolicyError::NotOffered { .. })
        ));
    }

    #[test]
    fn custom_policies() {
        // A reference is the predefined policy.
        let r = resolve_attributes(
            &[(REFERENCE_ATTRIBUTE, "ELBSecurityPolicy-TLS-1-2-2017-01")],
            Mode::Strict,
        )
        .unwrap();
        assert_eq!(
            r,
            resolve_predefined("ELBSecurityPolicy-TLS-1-2-2017-01").unwrap()
        );
        assert_eq!(
            resolve_attributes(
                &[
                    (REFERENCE_ATTRIBUTE, "ELBSecurityPolicy-2016-08"),
                    ("Protocol-TLSv1.2", "true")
                ],
                Mode::Strict
            ),
            Err(PolicyError::ReferenceWithAttributes)
        );
        // Order of attributes does not matter; the table order does. Unmentioned ones are off.
        let r = resolve_attributes(
            &[
                ("ECDHE-RSA-AES256-GCM-SHA384", "true"),
                ("Protocol-TLSv1.2", "TRUE"),
                ("ECDHE-RSA-AES128-GCM-SHA256", "true"),
                ("ECDHE-ECDSA-AES128-GCM-SHA256", "false"),
            ],
            Mode::Strict,
        )
        .unwrap();
        assert_eq!(
            names(&r),
            ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384"]
        );
        assert!(!r.server_order);
        assert!(!r.serves(Authentication::Ecdsa));
        // Only unsupported ciphers: refused in both modes, naming what to use.
        let only_cbc = [("Protocol-TLSv1.2", "true"), ("AES128-SHA", "true")];
        let strict = resolve_attributes(&only_cbc, Mode::Strict).unwrap_err();
        assert!(matches!(strict, PolicyError::NotOffered { .. }));
        let text = strict.to_string();
        assert!(text.contains("AES128-SHA (static RSA"), "{text}");
        assert!(text.contains("ECDHE-RSA-AES128-GCM-SHA256"), "{text}");
        assert!(matches!(
            resolve_attributes(&only_cbc, Mode::Lenient),
            Err(PolicyError::NoCipher { .. })
        ));
        // Only TLS 1.0/1.1: refused.
        let old = [
            ("Protocol-TLSv1", "true"),
            ("Protocol-TLSv1.1", "true"),
            ("ECDHE-RSA-AES128-GCM-SHA256", "true"),
        ];
        assert!(matches!(
            resolve_attributes(&old, Mode::Strict),
            Err(PolicyError::NotOffered { .. })
        ));
        assert_eq!(
            resolve_attributes(&old, Mode::Lenient),
            Err(PolicyError::NoProtocol {
                enabled: vec![Protocol::TlsV1_0, Protocol::TlsV1_1]
            })
        );
        // Lenient keeps what works and lists the rest.
        let mixed = [
            ("Protocol-TLSv1", "true"),
            ("Protocol-TLSv1.2", "true"),
            ("Server-Defined-Cipher-Order", "true"),
            ("DES-CBC3-SHA", "true"),
            ("ECDHE-ECDSA-AES256-GCM-SHA384", "true"),
        ];
        let r = resolve_attributes(&mixed, Mode::Lenient).unwrap();
        assert_eq!(names(&r), ["ECDHE-ECDSA-AES256-GCM-SHA384"]);
        assert_eq!(r.not_offered_ciphers, ["DES-CBC3-SHA"]);
        assert_eq!(r.not_offered_protocols, [Protocol::TlsV1_0]);
        assert!(r.server_order);
        // Bad input.
        assert!(matches!(
            resolve_attributes(&[("Protocol-TLSv1.3", "true")], Mode::Strict),
            Err(PolicyError::UnknownAttribute(_))
        ));
        assert!(matches!(
            resolve_attributes(&[("Protocol-TLSv1.2", "yes")], Mode::Strict),
            Err(PolicyError::InvalidValue { .. })
        ));
        assert!(matches!(
            resolve_attributes(
                &[("Protocol-TLSv1.2", "true"), ("Protocol-TLSv1.2", "false")],
                Mode::Strict
            ),
            Err(PolicyError::DuplicateAttribute(_))
        ));
        assert!(matches!(
            resolve_attributes::<&str, &str>(&[], Mode::Strict),
            Err(PolicyError::NoProtocol { .. })
        ));
    }
}

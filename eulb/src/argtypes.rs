//! Parsers for the structured command-line values of the `eulb-*` commands: listener
//! definitions, comma-separated lists, tags, policy attributes and load balancer attributes.
//! They follow euca2ools' syntax and error wording, so scripts written for euca2ools work.

/// Protocols of ELB listeners and health checks.
pub const PROTOCOLS: [&str; 4] = ["HTTP", "HTTPS", "SSL", "TCP"];

/// One `-l/--listener` value: the `Listeners.member.N` structure of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub protocol: String,
    pub lb_port: u16,
    pub instance_port: u16,
    pub instance_protocol: Option<String>,
    pub cert_id: Option<String>,
}

impl Listener {
    /// The request parameters of this listener as member `index` (1-based) of `prefix`.
    pub fn params(&self, prefix: &str, index: usize) -> Vec<(String, String)> {
        let base = format!("{prefix}.member.{index}");
        let mut out = vec![
            (format!("{base}.Protocol"), self.protocol.clone()),
            (format!("{base}.LoadBalancerPort"), self.lb_port.to_string()),
            (
                format!("{base}.InstancePort"),
                self.instance_port.to_string(),
            ),
        ];
        if let Some(p) = &self.instance_protocol {
            out.push((format!("{base}.InstanceProtocol"), p.clone()));
        }
        if let Some(c) = &self.cert_id {
            out.push((format!("{base}.SSLCertificateId"), c.clone()));
        }
        out
    }
}

const LISTENER_KEYS: [&str; 5] = [
    "protocol",
    "lb-port",
    "instance-port",
    "instance-protocol",
    "cert-id",
];

fn is_secure_family(protocol: &str) -> bool {
    protocol == "SSL" || protocol == "TCP"
}

fn port(text: &str, what: &str, listener: &str) -> Result<u16, String> {
    match text.parse::<u32>() {
        Ok(p @ 1..=65535) => Ok(p as u16),
        Ok(_) => Err(format!(
            "listener '{listener}': {what} must be between 1 and 65535"
        )),
        Err(_) => Err(format!("listener '{listener}': {what} must be an integer")),
    }
}

fn protocol(text: &str, what: &str, listener: &str) -> Result<String, String> {
    let upper = text.to_ascii_uppercase();
    if PROTOCOLS.contains(&upper.as_str()) {
        Ok(upper)
    } else {
        Err(format!(
            "listener '{listener}': {what} '{text}' is invalid (choose from 'HTTP', 'HTTPS', \
             'SSL', 'TCP')"
        ))
    }
}

/// Parses `"lb-port=80, protocol=HTTP, instance-port=8080, instance-protocol=HTTP,
/// cert-id=ARN"`. `protocol`, `lb-port` and `instance-port` are required; protocols are
/// upper-cased; a back-end protocol must be of the front end's family (HTTP/HTTPS with
/// HTTP/HTTPS, SSL/TCP with SSL/TCP).
pub fn parse_listener(text: &str) -> Result<Listener, String> {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for element in text.trim().split(',') {
        if element.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = element.split_once('=') else {
            return Err(format!(
                "listener '{text}': element '{element}' must have format KEY=VALUE"
            ));
        };
        if value.contains('=') {
            return Err(format!(
                "listener '{text}': element '{element}' must have format KEY=VALUE"
            ));
        }
        let key = key.trim();
        match pairs.iter_mut().find(|(k, _)| *k == key) {
            Some(pair) => pair.1 = value.trim(),
            None => pairs.push((key, value.trim())),
        }
    }
    let unknown: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| !LISTENER_KEYS.contains(k))
        .map(|(k, _)| format!("'{k}'"))
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "listener '{text}': invalid element(s): {}",
            unknown.join(", ")
        ));
    }
    let get = |key: &str| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let front = match get("protocol") {
        Some(p) => protocol(p, "protocol", text)?,
        None => return Err(format!("listener '{text}': protocol is required")),
    };
    let lb_port = match get("lb-port") {
        Some(p) => port(p, "lb-port", text)?,
        None => return Err(format!("listener '{text}': lb-port is required")),
    };
    let instance_port = match get("instance-port") {
        Some(p) => port(p, "instance-port", text)?,
        None => return Err(format!("listener '{text}': instance-port is required")),
    };
    let instance_protocol = match get("instance-protocol") {
        Some(p) => {
            let back = protocol(p, "instance-protocol", text)?;
            if is_secure_family(&back) != is_secure_family(&front) {
                return Err(if is_secure_family(&back) {
                    format!(
                        "listener '{text}': instance-protocol must be 'HTTP' or 'HTTPS' when \
                         protocol is 'HTTP' or 'HTTPS'"
                    )
                } else {
                    format!(
                        "listener '{text}': instance-protocol must be 'SSL' or 'TCP' when \
                         protocol is 'SSL' or 'TCP'"
                    )
                });
            }
            Some(back)
        }
        None => None,
    };
    let cert_id = get("cert-id").filter(|c| !c.is_empty()).map(str::to_string);
    Ok(Listener {
        protocol: front,
        lb_port,
        instance_port,
        instance_protocol,
        cert_id,
    })
}

/// A comma-separated list (`a,b, c`): items trimmed, empty items dropped, so `""` is the
/// empty list (which clears policy lists).
pub fn delimited_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `clap` value parser for a comma-separated list.
pub fn parse_list(text: &str) -> Result<Vec<String>, String> {
    Ok(delimited_list(text))
}

/// `clap` value parser for a comma-separated list of ports.
pub fn parse_port_list(text: &str) -> Result<Vec<u16>, String> {
    delimited_list(text)
        .iter()
        .map(|p| match p.parse::<u32>() {
            Ok(n @ 1..=65535) => Ok(n as u16),
            _ => Err(format!("'{p}' is not a port number (1-65535)")),
        })
        .collect()
}

/// A tag given as `KEY=VALUE`, `KEY=` or `KEY` (the last two with an empty value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

/// `clap` value parser for `KEY[=VALUE]` tags.
pub fn parse_tag(text: &str) -> Result<Tag, String> {
    let (key, value) = text.split_once('=').unwrap_or((text, ""));
    if key.is_empty() {
        return Err(format!("tag '{text}': the key must not be empty"));
    }
    Ok(Tag {
        key: key.to_string(),
        value: value.to_string(),
    })
}

/// `clap` value parser for a tag key to delete (`KEY`; a `=VALUE` part is ignored, as the
/// API removes tags by key).
pub fn parse_tag_key(text: &str) -> Result<String, String> {
    let key = text.split_once('=').map_or(text, |(k, _)| k);
    if key.is_empty() {
        return Err(format!("tag '{text}': the key must not be empty"));
    }
    Ok(key.to_string())
}

/// A policy attribute given as `"name=NAME, value=VALUE"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyAttribute {
    pub name: String,
    pub value: String,
}

/// `clap` value parser for `-a/--attribute "name=NAME, value=VALUE"` of eulb-create-lb-policy.
/// Only the first comma separates the two parts, so values may contain commas.
pub fn parse_policy_attribute(text: &str) -> Result<PolicyAttribute, String> {
    let mut name = None;
    let mut value = None;
    let mut rest = text;
    while !rest.trim().is_empty() {
        let trimmed = rest.trim_start();
        let (key, after) = trimmed.split_once('=').ok_or_else(|| {
            format!(
                "attribute '{text}': '{}' must have format KEY=VALUE",
                trimmed.trim()
            )
        })?;
        match key.trim() {
            "name" => {
                let (v, next) = after.split_once(',').unwrap_or((after, ""));
                name = Some(v.trim().to_string());
                rest = next;
            }
            "value" => {
                // The value runs to the end unless a later ", name=" follows.
                match after.find(", name=").or_else(|| after.find(",name=")) {
                    Some(pos) => {
                        value = Some(after[..pos].trim().to_string());
                        rest = &after[pos + 1..];
                    }
                    None => {
                        value = Some(after.trim().to_string());
                        rest = "";
                    }
                }
            }
            other => {
                return Err(format!(
                    "attribute '{text}': '{other}' is not a valid part of an attribute (choose \
                     from 'name', 'value')"
                ));
            }
        }
    }
    match (name, value) {
        (Some(name), Some(value)) if !name.is_empty() => Ok(PolicyAttribute { name, value }),
        (None, _) | (Some(_), Some(_)) => Err(format!("attribute '{text}': name is required")),
        (Some(_), None) => Err(format!("attribute '{text}': value is required")),
    }
}

/// `KEY=VALUE` with a non-empty key (load balancer attributes).
pub fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("invalid ATTR=VALUE pair: {text}")),
    }
}

/// The structured load balancer attributes of the API, as `Structure.Field`.
pub const LB_ATTRIBUTES: [&str; 8] = [
    "CrossZoneLoadBalancing.Enabled",
    "AccessLog.Enabled",
    "AccessLog.S3BucketName",
    "AccessLog.EmitInterval",
    "AccessLog.S3BucketPrefix",
    "ConnectionDraining.Enabled",
    "ConnectionDraining.Timeout",
    "ConnectionSettings.IdleTimeout",
];

/// Where an `ATTR=VALUE` of eulb-modify-lb-attributes goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LbAttribute {
    /// `LoadBalancerAttributes.<path>` (a structured attribute, canonical spelling).
    Structured(String, String),
    /// `LoadBalancerAttributes.AdditionalAttributes.member.N.{Key,Value}`.
    Additional(String, String),
}

/// Classifies an attribute name: a known `Structure.Field` (any case) maps to its canonical
/// spelling; another name starting with an upper-case letter is passed through as a
/// structured attribute (as euca2ools does; the service rejects unknown ones); anything else
/// (`elb.http.desyncmitigationmode`) is an additional attribute.
pub fn classify_lb_attribute(key: &str, value: &str) -> LbAttribute {
    if let Some(known) = LB_ATTRIBUTES.iter().find(|a| a.eq_ignore_ascii_case(key)) {
        return LbAttribute::Structured((*known).to_string(), value.to_string());
    }
    if let Some(rest) = key.strip_prefix("AdditionalAttributes.") {
        return LbAttribute::Additional(rest.to_string(), value.to_string());
    }
    if key.starts_with(|c: char| c.is_ascii_uppercase()) {
        LbAttribute::Structured(key.to_string(), value.to_string())
    } else {
        LbAttribute::Additional(key.to_string(), value.to_string())
    }
}

/// `clap` value parser for `true`/`false` (any case), returned in the API's lower case.
pub fn parse_bool(text: &str) -> Result<String, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" => Ok("true".into()),
        "false" => Ok("false".into()),
        _ => Err(format!("'{text}' is not 'true' or 'false'")),
    }
}

/// Checks a health check target `PROTOCOL:PORT[/PATH]` the way euca2ools does before
/// sending: a port is required, and a path for HTTP and HTTPS.
pub fn parse_health_target(text: &str) -> Result<String, String> {
    let (protocol, rest) = text.split_once(':').unwrap_or((text, ""));
    if rest.is_empty() {
        return Err("must have form PROTOCOL:PORT[/PATH]".into());
    }
    let proto = protocol.to_ascii_uppercase();
    if (proto == "HTTP" || proto == "HTTPS") && !rest.contains('/') {
        return Err(format!("path is required for protocol '{protocol}'"));
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_full() {
        let l = parse_listener(
            "lb-port=443, protocol=https, instance-port=8443, instance-protocol=HTTPS, \
             cert-id=arn:aws:iam::123456789012:server-certificate/web",
        )
        .unwrap();
        assert_eq!(
            l,
            Listener {
                protocol: "HTTPS".into(),
                lb_port: 443,
                instance_port: 8443,
                instance_protocol: Some("HTTPS".into()),
                cert_id: Some("arn:aws:iam::123456789012:server-certificate/web".into()),
            }
        );
        assert_eq!(
            l.params("Listeners", 2),
            vec![
                (
                    "Listeners.member.2.Protocol".to_string(),
                    "HTTPS".to_string()
                ),
                ("Listeners.member.2.LoadBalancerPort".into(), "443".into()),
                ("Listeners.member.2.InstancePort".into(), "8443".into()),
                ("Listeners.member.2.InstanceProtocol".into(), "HTTPS".into()),
                (
                    "Listeners.member.2.SSLCertificateId".into(),
                    "arn:aws:iam::123456789012:server-certificate/web".into()
                ),
            ]
        );
    }

    #[test]
    fn listener_minimal_any_order_and_spacing() {
        let l = parse_listener("  instance-port=80,protocol=tcp ,lb-port=8080,").unwrap();
        assert_eq!(l.protocol, "TCP");
        assert_eq!((l.lb_port, l.instance_port), (8080, 80));
        assert_eq!(l.instance_protocol, None);
        assert_eq!(l.cert_id, None);
        assert_eq!(l.params("Listeners", 1).len(), 3);
    }

    #[test]
    fn listener_required_elements() {
        let e = parse_listener("lb-port=80, instance-port=80").unwrap_err();
        assert!(e.contains("protocol is required"), "{e}");
        let e = parse_listener("protocol=HTTP, instance-port=80").unwrap_err();
        assert!(e.contains("lb-port is required"), "{e}");
        let e = parse_listener("protocol=HTTP, lb-port=80").unwrap_err();
        assert!(e.contains("instance-port is required"), "{e}");
    }

    #[test]
    fn listener_bad_values() {
        let e = parse_listener("protocol=UDP, lb-port=80, instance-port=80").unwrap_err();
        assert!(e.contains("protocol 'UDP' is invalid"), "{e}");
        let e = parse_listener("protocol=HTTP, lb-port=eighty, instance-port=80").unwrap_err();
        assert!(e.contains("lb-port must be an integer"), "{e}");
        let e = parse_listener("protocol=HTTP, lb-port=80, instance-port=70000").unwrap_err();
        assert!(
            e.contains("instance-port must be between 1 and 65535"),
            "{e}"
        );
        let e =
            parse_listener("protocol=HTTP, lb-port=80, instance-port=80, colour=blue").unwrap_err();
        assert!(e.contains("invalid element(s): 'colour'"), "{e}");
        let e = parse_listener("protocol=HTTP, lb-port, instance-port=80").unwrap_err();
        assert!(
            e.contains("element ' lb-port' must have format KEY=VALUE"),
            "{e}"
        );
    }

    #[test]
    fn listener_protocol_families() {
        let e =
            parse_listener("protocol=HTTP, lb-port=80, instance-port=80, instance-protocol=TCP")
                .unwrap_err();
        assert!(
            e.contains("instance-protocol must be 'HTTP' or 'HTTPS'"),
            "{e}"
        );
        let e =
            parse_listener("protocol=SSL, lb-port=443, instance-port=80, instance-protocol=http")
                .unwrap_err();
        assert!(
            e.contains("instance-protocol must be 'SSL' or 'TCP'"),
            "{e}"
        );
        let l =
            parse_listener("protocol=SSL, lb-port=443, instance-port=80, instance-protocol=tcp")
                .unwrap();
        assert_eq!(l.instance_protocol.as_deref(), Some("TCP"));
        let l =
            parse_listener("protocol=HTTPS, lb-port=443, instance-port=80, instance-protocol=HTTP")
                .unwrap();
        assert_eq!(l.instance_protocol.as_deref(), Some("HTTP"));
    }

    #[test]
    fn lists_tags_and_attributes() {
        assert_eq!(delimited_list("a, b,,c ,"), vec!["a", "b", "c"]);
        assert!(delimited_list("").is_empty());
        assert_eq!(parse_port_list("80, 443").unwrap(), vec![80, 443]);
        assert!(parse_port_list("80,x").is_err());
        assert_eq!(
            parse_tag("env=prod=1").unwrap(),
            Tag {
                key: "env".into(),
                value: "prod=1".into()
            }
        );
        assert_eq!(parse_tag("solo").unwrap().value, "");
        assert!(parse_tag("=x").is_err());
        assert_eq!(parse_tag_key("env=whatever").unwrap(), "env");
        assert_eq!(
            parse_policy_attribute("name=Protocol-TLSv1.2, value=true").unwrap(),
            PolicyAttribute {
                name: "Protocol-TLSv1.2".into(),
                value: "true".into()
            }
        );
        assert_eq!(
            parse_policy_attribute("value=a,b, name=X").unwrap(),
            PolicyAttribute {
                name: "X".into(),
                value: "a,b".into()
            }
        );
        assert!(
            parse_policy_attribute("name=X")
                .unwrap_err()
                .contains("value is required")
        );
        assert!(
            parse_policy_attribute("value=1")
                .unwrap_err()
                .contains("name is required")
        );
        assert!(
            parse_policy_attribute("kind=1")
                .unwrap_err()
                .contains("'kind'")
        );
    }

    #[test]
    fn lb_attribute_classification() {
        assert_eq!(
            classify_lb_attribute("crosszoneloadbalancing.enabled", "true"),
            LbAttribute::Structured("CrossZoneLoadBalancing.Enabled".into(), "true".into())
        );
        assert_eq!(
            classify_lb_attribute("elb.http.desyncmitigationmode", "monitor"),
            LbAttribute::Additional("elb.http.desyncmitigationmode".into(), "monitor".into())
        );
        assert_eq!(
            classify_lb_attribute("AdditionalAttributes.elb.x", "1"),
            LbAttribute::Additional("elb.x".into(), "1".into())
        );
        assert_eq!(
            classify_lb_attribute("Bogus.Field", "1"),
            LbAttribute::Structured("Bogus.Field".into(), "1".into())
        );
        assert_eq!(
            parse_key_value("a=b=c").unwrap(),
            ("a".into(), "b=c".into())
        );
        assert!(parse_key_value("novalue").is_err());
        assert_eq!(parse_bool("TRUE").unwrap(), "true");
        assert!(parse_bool("yes").is_err());
    }

    #[test]
    fn health_targets() {
        assert!(parse_health_target("TCP:80").is_ok());
        assert!(parse_health_target("HTTP:80/health").is_ok());
        assert!(
            parse_health_target("http:80")
                .unwrap_err()
                .contains("path is required")
        );
        assert!(
            parse_health_target("TCP")
                .unwrap_err()
                .contains("PROTOCOL:PORT")
        );
    }
}

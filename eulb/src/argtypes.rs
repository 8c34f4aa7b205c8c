//! Parsers for the structured command-line values of the `eulb-*` commands: listener
//! definitions, comma-separated lists, tags, policy attributes and load balancer attributes.
//! They follow euca2ools' syntax and error wording, so scripts written for euca2ools work.
//!
//! They check syntax only. What a value may be (protocols, port and attribute ranges, health
//! check targets) is the service's rule: eulb sends the values as given and prints the
//! service's error, so the client never disagrees with the server it talks to.

/// One `-l/--listener` value: the `Listeners.member.N` structure of the API, values as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub protocol: Option<String>,
    pub lb_port: Option<String>,
    pub instance_port: Option<String>,
    pub instance_protocol: Option<String>,
    pub cert_id: Option<String>,
}

impl Listener {
    /// The request parameters of this listener as member `index` (1-based) of `prefix`.
    pub fn params(&self, prefix: &str, index: usize) -> Vec<(String, String)> {
        let base = format!("{prefix}.member.{index}");
        [
            ("Protocol", &self.protocol),
            ("LoadBalancerPort", &self.lb_port),
            ("InstancePort", &self.instance_port),
            ("InstanceProtocol", &self.instance_protocol),
            ("SSLCertificateId", &self.cert_id),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((format!("{base}.{name}"), value.clone()?)))
        .collect()
    }
}

/// The element names of a listener definition (euca2ools' syntax).
const LISTENER_KEYS: [&str; 5] = [
    "protocol",
    "lb-port",
    "instance-port",
    "instance-protocol",
    "cert-id",
];

/// Parses `"lb-port=80, protocol=HTTP, instance-port=8080, instance-protocol=HTTP,
/// cert-id=ARN"`: comma-separated `KEY=VALUE` elements in any order, a later element
/// replacing an earlier one of the same key. Unknown keys are refused (a typo would otherwise
/// silently drop a setting); missing or invalid values are the service's to refuse.
pub fn parse_listener(text: &str) -> Result<Listener, String> {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for element in text.trim().split(',') {
        if element.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = element.split_once('=').filter(|(_, v)| !v.contains('=')) else {
            return Err(format!(
                "listener '{text}': element '{element}' must have format KEY=VALUE"
            ));
        };
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
    let get = |key: &str| {
        pairs
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| (*v).to_string())
    };
    Ok(Listener {
        protocol: get("protocol"),
        lb_port: get("lb-port"),
        instance_port: get("instance-port"),
        instance_protocol: get("instance-protocol"),
        cert_id: get("cert-id").filter(|c| !c.is_empty()),
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

/// A policy attribute: the `PolicyAttributes.member.N` structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyAttribute {
    pub name: String,
    pub value: String,
}

/// `clap` value parser for `-a/--attribute "name=NAME, value=VALUE"` of eulb-create-lb-policy.
/// Only the first comma after `name=` ends the name, so values may contain commas (euca2ools
/// splits at every comma and refuses them).
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

/// One `NAME=VALUE` policy attribute (of `-A/--attributes` and `--attributes-from-file`),
/// both sides trimmed.
pub fn parse_name_value_attribute(text: &str) -> Result<PolicyAttribute, String> {
    let Some((name, value)) = text.split_once('=') else {
        return Err(format!("attribute '{text}' must have format NAME=VALUE"));
    };
    if name.trim().is_empty() {
        return Err(format!("attribute '{text}' must have a name"));
    }
    Ok(PolicyAttribute {
        name: name.trim().to_string(),
        value: value.trim().to_string(),
    })
}

/// `clap` value parser for `-A/--attributes NAME=VALUE,...`.
pub fn parse_attribute_list(text: &str) -> Result<Vec<PolicyAttribute>, String> {
    delimited_list(text)
        .iter()
        .map(|item| parse_name_value_attribute(item))
        .collect()
}

/// The attributes of an `--attributes-from-file` file: one `NAME=VALUE` a line; blank lines
/// and lines starting with `#` are skipped. `source` names the file in errors.
pub fn parse_attribute_file(source: &str, text: &str) -> Result<Vec<PolicyAttribute>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|(i, line)| {
            parse_name_value_attribute(line.trim())
                .map_err(|e| format!("error on {source} line {}: {e}", i + 1))
        })
        .collect()
}

/// `KEY=VALUE` with a non-empty key (load balancer attributes).
pub fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("invalid ATTR=VALUE pair: {text}")),
    }
}

/// Where an `ATTR=VALUE` of eulb-modify-lb-attributes goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LbAttribute {
    /// `LoadBalancerAttributes.<path>` (a structured attribute such as
    /// `CrossZoneLoadBalancing.Enabled`).
    Structured(String, String),
    /// `LoadBalancerAttributes.AdditionalAttributes.member.N.{Key,Value}`.
    Additional(String, String),
}

/// Classifies an attribute name by its spelling alone: `AdditionalAttributes.KEY` and names
/// that do not start with an upper-case letter (`elb.http.desyncmitigationmode`) are
/// additional attributes; the rest (`Structure.Field`, as euca2ools sends every name) go to
/// the structure of that name, which the service checks.
pub fn classify_lb_attribute(key: &str, value: &str) -> LbAttribute {
    if let Some(rest) = key.strip_prefix("AdditionalAttributes.") {
        return LbAttribute::Additional(rest.to_string(), value.to_string());
    }
    if key.starts_with(|c: char| c.is_ascii_uppercase()) {
        LbAttribute::Structured(key.to_string(), value.to_string())
    } else {
        LbAttribute::Additional(key.to_string(), value.to_string())
    }
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
            l.params("Listeners", 2),
            vec![
                (
                    "Listeners.member.2.Protocol".to_string(),
                    "https".to_string()
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
    fn listener_values_are_passed_as_given() {
        let l = parse_listener("  instance-port=80,protocol=tcp ,lb-port=8080,").unwrap();
        assert_eq!(l.protocol.as_deref(), Some("tcp"));
        assert_eq!(l.params("Listeners", 1).len(), 3);
        // Out-of-range ports, unknown protocols and missing elements are the service's to
        // refuse: they are sent (or left out) as written.
        let l = parse_listener("protocol=UDP, lb-port=70000").unwrap();
        assert_eq!(
            l.params("Listeners", 1),
            vec![
                ("Listeners.member.1.Protocol".to_string(), "UDP".to_string()),
                ("Listeners.member.1.LoadBalancerPort".into(), "70000".into()),
            ]
        );
        // A later element replaces an earlier one.
        let l = parse_listener("protocol=TCP, lb-port=1, lb-port=2, instance-port=3").unwrap();
        assert_eq!(l.lb_port.as_deref(), Some("2"));
    }

    #[test]
    fn listener_syntax_errors() {
        let e =
            parse_listener("protocol=HTTP, lb-port=80, instance-port=80, colour=blue").unwrap_err();
        assert!(e.contains("invalid element(s): 'colour'"), "{e}");
        let e = parse_listener("protocol=HTTP, lb-port, instance-port=80").unwrap_err();
        assert!(
            e.contains("element ' lb-port' must have format KEY=VALUE"),
            "{e}"
        );
        let e = parse_listener("protocol=HTTP=1").unwrap_err();
        assert!(e.contains("must have format KEY=VALUE"), "{e}");
    }

    #[test]
    fn lists_and_tags() {
        assert_eq!(delimited_list("a, b,,c ,"), vec!["a", "b", "c"]);
        assert!(delimited_list("").is_empty());
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
    }

    #[test]
    fn policy_attributes() {
        let attr = |n: &str, v: &str| PolicyAttribute {
            name: n.into(),
            value: v.into(),
        };
        assert_eq!(
            parse_policy_attribute("name=Protocol-TLSv1.2, value=true").unwrap(),
            attr("Protocol-TLSv1.2", "true")
        );
        assert_eq!(
            parse_policy_attribute("value=a,b, name=X").unwrap(),
            attr("X", "a,b")
        );
        for (bad, why) in [
            ("name=X", "value is required"),
            ("value=1", "name is required"),
            ("kind=1", "'kind'"),
        ] {
            let e = parse_policy_attribute(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert_eq!(
            parse_attribute_list("ProxyProtocol=true, Reference = ELBSecurityPolicy-2016-08")
                .unwrap(),
            vec![
                attr("ProxyProtocol", "true"),
                attr("Reference", "ELBSecurityPolicy-2016-08")
            ]
        );
        assert!(
            parse_attribute_list("a=1,b")
                .unwrap_err()
                .contains("'b' must have format NAME=VALUE")
        );
        assert!(
            parse_attribute_list("=1")
                .unwrap_err()
                .contains("must have a name")
        );
        let file =
            "# TLS settings\n\nProtocol-TLSv1.2=true\n  Server-Defined-Cipher-Order = true\n";
        assert_eq!(
            parse_attribute_file("attrs.txt", file).unwrap(),
            vec![
                attr("Protocol-TLSv1.2", "true"),
                attr("Server-Defined-Cipher-Order", "true")
            ]
        );
        assert_eq!(
            parse_attribute_file("attrs.txt", "a=1\nbroken\n").unwrap_err(),
            "error on attrs.txt line 2: attribute 'broken' must have format NAME=VALUE"
        );
    }

    #[test]
    fn lb_attribute_classification() {
        assert_eq!(
            classify_lb_attribute("CrossZoneLoadBalancing.Enabled", "true"),
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
    }
}

//! `elb-control admin security-group create|authorize|revoke|list|delete`: the built-in
//! inventory's security groups. A load balancer that names groups admits new connections
//! only from the sources their ingress rules allow; the servos enforce them in XDP. A change
//! is a commit like any other: servos get it within moments (running servers notice another
//! process's commit within `VERSION_POLL`).
//!
//! With an EC2-compatible cloud (`--ec2-endpoint`) the cloud's groups are used instead, and
//! rules are changed in the cloud (`AuthorizeSecurityGroupIngress`).

use elb_contract::security_group::{IngressRule, Ipv4Cidr, group_id_ok};
use serde_json::{Value, json};

use super::{AdminError, invalid, to_json};
use crate::store::{GroupOrigin, SecurityGroupRecord, Store, StoreError};

/// What `authorize` and `revoke` name: a protocol, ports and source blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    /// `tcp` (default), `udp`, `icmp`, a number, or `-1` (all).
    pub protocol: String,
    /// `--port P` or `--from-port A --to-port B` (absent for `-1`).
    pub from_port: Option<i32>,
    pub to_port: Option<i32>,
    /// `--cidr` (repeatable).
    pub cidrs: Vec<String>,
}

impl RuleSpec {
    /// One rule per block, each checked with the contract's rules.
    fn rules(&self) -> Result<Vec<IngressRule>, AdminError> {
        if self.cidrs.is_empty() {
            return Err(invalid("give at least one --cidr"));
        }
        let protocol = self.protocol.to_ascii_lowercase();
        let all = protocol == "-1" || protocol == "all";
        let protocol = if all { "-1".to_string() } else { protocol };
        let (from, to) = if all {
            (None, None)
        } else {
            (self.from_port, self.to_port.or(self.from_port))
        };
        let mut out = Vec::new();
        for c in &self.cidrs {
            let cidr: Ipv4Cidr = c
                .parse()
                .map_err(|e: elb_contract::security_group::BadCidr| invalid(e.to_string()))?;
            let rule = IngressRule {
                ip_protocol: protocol.clone(),
                from_port: from,
                to_port: to,
                cidr_ip: cidr,
            };
            if let Some(p) = rule.problems("rule").first() {
                return Err(invalid(format!(
                    "{}: give --port P (or --from-port and --to-port) for tcp/udp",
                    p.message
                )));
            }
            out.push(rule);
        }
        Ok(out)
    }
}

/// A new group id: `sg-` and 17 hex digits, like EC2's.
fn new_group_id() -> String {
    format!("sg-{}", &crate::store::random_hex(9)[..17])
}

fn view(g: &SecurityGroupRecord) -> Value {
    let mut v = to_json(g);
    v["IngressRules"] = Value::Array(
        g.ingress
            .iter()
            .map(|r| {
                json!({
                    "IpProtocol": r.ip_protocol,
                    "FromPort": r.from_port,
                    "ToPort": r.to_port,
                    "CidrIp": r.cidr_ip.to_string(),
                })
            })
            .collect(),
    );
    v
}

pub async fn create(
    store: &Store,
    id: Option<&str>,
    name: &str,
    description: &str,
    vpc: Option<&str>,
    account: Option<&str>,
) -> Result<Value, AdminError> {
    let id = match id {
        Some(id) if group_id_ok(id) => id.to_string(),
        Some(id) => {
            return Err(invalid(format!(
                "security group id '{id}' must look like sg-0123abcd"
            )));
        }
        None => new_group_id(),
    };
    if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
        return Err(invalid("--name must have 1-255 printable characters"));
    }
    if description.len() > 255 || description.chars().any(char::is_control) {
        return Err(invalid(
            "--description must have at most 255 printable characters",
        ));
    }
    if let Some(vpc) = vpc
        && !vpc
            .strip_prefix("vpc-")
            .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        return Err(invalid(format!(
            "VPC id '{vpc}' must look like vpc-0123abcd"
        )));
    }
    let account_id = match account {
        Some(a) => Some(store.find_account(a).await?.id),
        None => None,
    };
    let group = SecurityGroupRecord {
        id,
        name: name.to_string(),
        description: description.to_string(),
        vpc_id: vpc.map(str::to_string),
        account_id,
        ingress: Vec::new(),
        origin: GroupOrigin::BuiltIn,
    };
    store.create_security_group(&group).await?;
    Ok(view(&group))
}

pub async fn authorize(store: &Store, id: &str, spec: &RuleSpec) -> Result<Value, AdminError> {
    let rules = spec.rules()?;
    let group = store
        .update_security_group_ingress(id, |ingress| {
            let mut changed = false;
            for r in rules {
                if !ingress.contains(&r) {
                    ingress.push(r);
                    changed = true;
                }
            }
            changed
        })
        .await
        .map_err(not_found)?;
    Ok(view(&group))
}

pub async fn revoke(store: &Store, id: &str, spec: &RuleSpec) -> Result<Value, AdminError> {
    let rules = spec.rules()?;
    let mut missing = Vec::new();
    let group = store
        .update_security_group_ingress(id, |ingress| {
            let before = ingress.len();
            for r in &rules {
                match ingress.iter().position(|x| x == r) {
                    Some(i) => {
                        ingress.remove(i);
                    }
                    None => missing.push(r.to_string()),
                }
            }
            missing.is_empty() && ingress.len() != before
        })
        .await
        .map_err(not_found)?;
    if !missing.is_empty() {
        return Err(invalid(format!(
            "security group {id} has no rule {}: nothing revoked",
            missing.join(", ")
        )));
    }
    Ok(view(&group))
}

pub async fn list(store: &Store) -> Result<Value, AdminError> {
    Ok(Value::Array(
        store
            .list_security_groups()
            .await?
            .iter()
            .map(view)
            .collect(),
    ))
}

pub async fn delete(store: &Store, id: &str) -> Result<Value, AdminError> {
    if !store.delete_security_group(id).await? {
        return Err(invalid(format!("there is no security group '{id}'")));
    }
    Ok(json!({"Deleted": id}))
}

fn not_found(e: StoreError) -> AdminError {
    match e {
        StoreError::NotFound { name, .. } => {
            invalid(format!("there is no security group '{name}'"))
        }
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(protocol: &str, from: Option<i32>, to: Option<i32>, cidrs: &[&str]) -> RuleSpec {
        RuleSpec {
            protocol: protocol.into(),
            from_port: from,
            to_port: to,
            cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn rule_specs() {
        let rules = spec("tcp", Some(80), None, &["198.18.1.0/24", "10.0.0.0/8"])
            .rules()
            .unwrap();
        let text: Vec<String> = rules.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            ["tcp 80 from 198.18.1.0/24", "tcp 80 from 10.0.0.0/8"]
        );
        let all = spec("-1", Some(5), None, &["0.0.0.0/0"]).rules().unwrap();
        assert_eq!(all[0].from_port, None, "ports do not apply to -1");
        assert!(
            spec("tcp", None, None, &["10.0.0.0/8"]).rules().is_err(),
            "tcp needs a port"
        );
        assert!(spec("tcp", Some(80), None, &[]).rules().is_err());
        assert!(
            spec("tcp", Some(80), None, &["10.0.0.0/40"])
                .rules()
                .is_err()
        );
        assert!(
            spec("tcp", Some(90), Some(80), &["10.0.0.0/8"])
                .rules()
                .is_err()
        );
        assert!(new_group_id().starts_with("sg-") && group_id_ok(&new_group_id()));
    }
}

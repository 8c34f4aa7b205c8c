//! `elb-control admin lb list|show|delete`: every account's load balancers, as Eucalyptus lets
//! its administrators see them: found by name and account (and region), or by DNS name, with
//! the servos that serve each (live, VIP, refusing) and the health of its instances as
//! DescribeInstanceHealth shows it.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{AdminError, invalid};
use crate::model::{LbKey, LoadBalancer};
use crate::store::{LbFilter, ServoInfo, Store, servo_lb_name};
use crate::timefmt::format_iso8601_millis;

/// Which load balancer `show` and `delete` mean.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    pub name: Option<String>,
    pub account: Option<String>,
    pub region: Option<String>,
    pub dns_name: Option<String>,
}

async fn filter_of(store: &Store, s: &Selector) -> Result<LbFilter, AdminError> {
    let account_id = match &s.account {
        Some(a) => Some(store.find_account(a).await?.id),
        None => None,
    };
    Ok(LbFilter {
        account_id,
        region: s.region.clone(),
        name: s.name.clone(),
        dns_name: s.dns_name.clone(),
    })
}

/// Exactly one load balancer: `--dns-name D`, or `--name N --account A [--region R]`.
async fn one(store: &Store, s: &Selector) -> Result<LoadBalancer, AdminError> {
    match (&s.dns_name, &s.name, &s.account) {
        (Some(_), None, None) => {}
        (None, Some(_), Some(_)) => {}
        _ => {
            return Err(invalid(
                "name the load balancer with --dns-name D, or with --name N and --account A \
                 (and --region R when it exists in several)",
            ));
        }
    }
    let mut found = store.find_lbs(&filter_of(store, s).await?).await?;
    match found.len() {
        0 => Err(invalid("no load balancer matches")),
        1 => Ok(found.remove(0)),
        n => {
            let regions: Vec<String> = found.iter().map(|l| l.key.region.clone()).collect();
            Err(invalid(format!(
                "{n} load balancers match (regions {}): add --region",
                regions.join(", ")
            )))
        }
    }
}

/// The servos that have `lb` assigned: `(servo, VIP, refusal reason)`.
fn servos_of<'a>(
    lb: &LoadBalancer,
    servos: &'a [ServoInfo],
) -> Vec<(&'a ServoInfo, String, Option<String>)> {
    let name = servo_lb_name(&lb.key.name, &lb.key.account_id);
    servos
        .iter()
        .filter_map(|s| {
            let assigned = s.load_balancers.iter().find(|a| a.name == name)?;
            let refused = s
                .refused
                .iter()
                .find(|r| r.load_balancer_name == name)
                .map(|r| r.reason.clone());
            Some((s, assigned.vip.clone(), refused))
        })
        .collect()
}

fn summary(lb: &LoadBalancer, servos: &[ServoInfo], in_service: usize) -> Value {
    let serving = servos_of(lb, servos);
    json!({
        "LoadBalancerName": lb.key.name,
        "AccountId": lb.key.account_id,
        "Region": lb.key.region,
        "DNSName": lb.dns_name,
        "Scheme": lb.scheme.as_str(),
        "AvailabilityZones": lb.zones,
        "Listeners": lb.listeners.iter().map(|l| format!("{}:{} -> {}:{}", l.protocol.as_str(), l.load_balancer_port, l.instance_protocol.as_str(), l.instance_port)).collect::<Vec<_>>(),
        "Instances": lb.instances.len(),
        "InService": in_service,
        "Servos": serving.iter().map(|(s, vip, refused)| json!({
            "ServoId": s.servo.id, "Zone": s.servo.zone, "Vip": vip, "Live": s.live,
            "Refuses": refused,
        })).collect::<Vec<_>>(),
        "CreatedTime": format_iso8601_millis(lb.created_at),
    })
}

pub async fn list(
    store: &Store,
    account: Option<&str>,
    region: Option<&str>,
    timeout_ms: i64,
) -> Result<Value, AdminError> {
    let filter = filter_of(
        store,
        &Selector {
            account: account.map(str::to_string),
            region: region.map(str::to_string),
            ..Selector::default()
        },
    )
    .await?;
    let lbs = store.find_lbs(&filter).await?;
    let servos = store.list_servos(timeout_ms).await?;
    let services = store.zone_services(&lbs, timeout_ms).await?;
    Ok(Value::Array(
        lbs.iter()
            .zip(services)
            .map(|(lb, service)| {
                let in_service = lb
                    .instances
                    .iter()
                    .filter(|i| lb.effective_health(i, &service).is_in_service())
                    .count();
                summary(lb, &servos, in_service)
            })
            .collect(),
    ))
}

pub async fn show(store: &Store, s: &Selector, timeout_ms: i64) -> Result<Value, AdminError> {
    let lb = one(store, s).await?;
    let servos = store.list_servos(timeout_ms).await?;
    let service = store
        .zone_services(std::slice::from_ref(&lb), timeout_ms)
        .await?
        .pop()
        .unwrap_or_default();
    let health: Vec<Value> = lb
        .instances
        .iter()
        .map(|i| {
            let h = lb.effective_health(i, &service);
            json!({
                "InstanceId": i.instance_id, "Address": i.address, "Zone": i.zone,
                "State": h.state.as_str(), "ReasonCode": h.reason_code.as_str(), "Description": h.description,
            })
        })
        .collect();
    let in_service = lb
        .instances
        .iter()
        .filter(|i| lb.effective_health(i, &service).is_in_service())
        .count();
    let mut v = summary(&lb, &servos, in_service);
    let zones: BTreeMap<&String, String> =
        service.iter().map(|(z, s)| (z, format!("{s:?}"))).collect();
    v["Listeners"] = Value::Array(
        lb.listeners
            .iter()
            .map(|l| {
                json!({
                    "Protocol": l.protocol.as_str(), "LoadBalancerPort": l.load_balancer_port,
                    "InstanceProtocol": l.instance_protocol.as_str(), "InstancePort": l.instance_port,
                    "SSLCertificateId": l.ssl_certificate_id, "PolicyNames": l.policy_names,
                })
            })
            .collect(),
    );
    v["Subnets"] = json!(lb.subnets);
    v["VPCId"] = json!(lb.vpc_id);
    v["SecurityGroups"] = json!(lb.security_groups);
    v["HealthCheck"] = json!({
        "Target": lb.health_check.target.to_string(), "Interval": lb.health_check.interval,
        "Timeout": lb.health_check.timeout, "UnhealthyThreshold": lb.health_check.unhealthy_threshold,
        "HealthyThreshold": lb.health_check.healthy_threshold,
    });
    v["InstanceHealth"] = Value::Array(health);
    v["ZoneService"] = json!(zones);
    Ok(v)
}

pub async fn delete(store: &Store, s: &Selector) -> Result<Value, AdminError> {
    let lb = one(store, s).await?;
    let key = LbKey {
        account_id: lb.key.account_id.clone(),
        region: lb.key.region.clone(),
        name: lb.key.name.clone(),
    };
    store.delete_lb(&key).await?;
    Ok(json!({
        "Deleted": lb.key.name, "AccountId": lb.key.account_id, "Region": lb.key.region,
        "DNSName": lb.dns_name,
    }))
}

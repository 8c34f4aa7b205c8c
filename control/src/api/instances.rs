//! RegisterInstancesWithLoadBalancer, DeregisterInstancesFromLoadBalancer,
//! DescribeInstanceHealth, ConfigureHealthCheck.

use super::Ctx;
use super::lbs::write_health_check;
use crate::error::{ApiError, ErrorCode};
use crate::model::{HealthCheck, InstanceHealth, RegisteredInstance};
use crate::quota::QuotaName;
use crate::validate::{self, printable};

/// `Instances.member.N.InstanceId`, required, each a syntactically valid id, no repeats.
fn instance_ids(ctx: &Ctx<'_>, required: bool) -> Result<Vec<String>, ApiError> {
    let members = match ctx.params.struct_list("Instances", &["InstanceId"])? {
        Some(m) => m,
        None if required => return Err(ApiError::missing("Instances")),
        None => Vec::new(),
    };
    let mut ids: Vec<String> = Vec::with_capacity(members.len());
    for m in members {
        let id = m
            .get("InstanceId")
            .filter(|i| !i.is_empty())
            .ok_or_else(|| ApiError::missing("Instances.member.N.InstanceId"))?;
        if !validate::is_instance_id(id) {
            return Err(invalid_instances(std::slice::from_ref(id)));
        }
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    if required && ids.is_empty() {
        return Err(ApiError::validation("Instances cannot be empty"));
    }
    Ok(ids)
}

fn invalid_instances(ids: &[String]) -> ApiError {
    let list: Vec<String> = ids.iter().map(|i| printable(i)).collect();
    ApiError::new(
        ErrorCode::InvalidInstance,
        format!(
            "The requested instance(s) are not valid: {}",
            list.join(", ")
        ),
    )
}

fn write_instances(w: &mut crate::xml::XmlWriter, ids: &[String]) {
    w.list("Instances", ids, |w, id| w.text("InstanceId", id));
}

pub async fn register(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let name = ctx.lb_name()?;
    let ids = instance_ids(ctx, true)?;
    let resolved = ctx
        .state
        .inventory()
        .resolve(ctx.region, &ids, &ctx.caller.account_id)
        .await?;
    let unknown: Vec<String> = ids
        .iter()
        .filter(|i| !resolved.contains_key(*i))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(invalid_instances(&unknown));
    }
    let limit = ctx.quotas().await?.get(QuotaName::RegisteredInstances);
    let all = ctx.update_lb(name, |lb| {
            for id in &ids {
                if lb.instance(id).is_some() {
                    continue;
                }
                let inv = &resolved[id];
                if !lb.zones.contains(&inv.zone) {
                    return Err(ApiError::invalid_config(format!(
                        "Instance {id} is in availability zone {}, which is not enabled for load balancer {name}",
                        inv.zone
                    )));
                }
                lb.instances.push(RegisteredInstance {
                    instance_id: id.clone(),
                    address: inv.address.clone(),
                    zone: inv.zone.clone(),
                    health: InstanceHealth::registering(),
                });
            }
            if i64::try_from(lb.instances.len()).unwrap_or(i64::MAX) > limit {
                return Err(ApiError::invalid_config(format!(
                    "Exceeded the quota of {limit} registered instances per load balancer"
                )));
            }
            Ok(lb.instances.iter().map(|i| i.instance_id.clone()).collect::<Vec<_>>())
        })
        .await?;
    Ok(ctx.respond(|w| write_instances(w, &all)))
}

pub async fn deregister(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let name = ctx.lb_name()?;
    let ids = instance_ids(ctx, true)?;
    let remaining = ctx
        .update_lb(name, |lb| {
            let unknown: Vec<String> = ids
                .iter()
                .filter(|i| lb.instance(i).is_none())
                .cloned()
                .collect();
            if !unknown.is_empty() {
                return Err(invalid_instances(&unknown));
            }
            lb.instances.retain(|i| !ids.contains(&i.instance_id));
            Ok(lb
                .instances
                .iter()
                .map(|i| i.instance_id.clone())
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(ctx.respond(|w| write_instances(w, &remaining)))
}

pub async fn describe_health(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let name = ctx.lb_name()?;
    let ids = instance_ids(ctx, false)?;
    let lb = ctx
        .state
        .store()
        .get_lb(&ctx.key(name))
        .await?
        .ok_or_else(|| ApiError::lb_not_found(name))?;
    let service = ctx
        .state
        .store()
        .zone_services(
            std::slice::from_ref(&lb),
            ctx.state.config().servo.timeout_ms(),
        )
        .await?
        .pop()
        .unwrap_or_default();
    let mut states: Vec<(String, InstanceHealth)> = Vec::new();
    if ids.is_empty() {
        for i in &lb.instances {
            states.push((i.instance_id.clone(), lb.effective_health(i, &service)));
        }
    } else {
        let unregistered: Vec<String> = ids
            .iter()
            .filter(|i| lb.instance(i).is_none())
            .cloned()
            .collect();
        let known = if unregistered.is_empty() {
            Default::default()
        } else {
            ctx.state
                .inventory()
                .resolve(ctx.region, &unregistered, &ctx.caller.account_id)
                .await?
        };
        let unknown: Vec<String> = unregistered
            .iter()
            .filter(|i| !known.contains_key(*i))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(invalid_instances(&unknown));
        }
        for id in &ids {
            let health = match lb.instance(id) {
                Some(i) => lb.effective_health(i, &service),
                None => InstanceHealth::not_registered(),
            };
            states.push((id.clone(), health));
        }
    }
    Ok(ctx.respond(|w| {
        w.list("InstanceStates", &states, |w, (id, h)| {
            w.text("InstanceId", id);
            w.text("State", h.state.as_str());
            w.text("ReasonCode", h.reason_code.as_str());
            w.text("Description", &h.description);
        });
    }))
}

pub async fn configure_health_check(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let name = ctx.lb_name()?;
    let p = ctx.params;
    let target = validate::health_check_target(p.required("HealthCheck.Target")?)?;
    // Parsed as any number: the ranges are the contract's.
    let int = |field: &str| -> Result<u32, ApiError> {
        let v = p.required_int(&format!("HealthCheck.{field}"), 0, i64::from(u32::MAX))?;
        u32::try_from(v)
            .map_err(|_| ApiError::validation(format!("HealthCheck.{field} is out of range")))
    };
    let hc = HealthCheck {
        target,
        interval: int("Interval")?,
        timeout: int("Timeout")?,
        unhealthy_threshold: int("UnhealthyThreshold")?,
        healthy_threshold: int("HealthyThreshold")?,
    };
    hc.check().map_err(|p| validate::problems_error(&p))?;
    let stored = hc.clone();
    ctx.update_lb(name, |lb| {
        lb.health_check = stored;
        Ok(())
    })
    .await?;
    Ok(ctx.respond(|w| write_health_check(w, &hc)))
}

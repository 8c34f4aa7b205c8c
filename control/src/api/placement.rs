//! Enable/DisableAvailabilityZonesForLoadBalancer, ApplySecurityGroupsToLoadBalancer,
//! AttachLoadBalancerToSubnets, DetachLoadBalancerFromSubnets.
//!
//! Zones are enabled on load balancers placed by zones, and on those of the default VPC (each
//! zone through its default subnet, as AWS does); other VPC load balancers change zones through
//! their subnets.

use super::{Ctx, Servable, resolve};
use crate::error::ApiError;
use crate::inventory::DefaultVpc;
use crate::model::LoadBalancer;

fn required_list(ctx: &Ctx<'_>, name: &str) -> Result<Vec<String>, ApiError> {
    let list = ctx
        .params
        .string_list(name)?
        .ok_or_else(|| ApiError::missing(name))?;
    if list.is_empty() {
        return Err(ApiError::validation(format!("{name} cannot be empty")));
    }
    Ok(list)
}

/// The default VPC, when `lb` lives in it (zones change through its default subnets).
async fn default_vpc_of(ctx: &Ctx<'_>, name: &str) -> Result<Option<DefaultVpc>, ApiError> {
    let lb = ctx
        .state
        .store()
        .get_lb(&ctx.key(name))
        .await?
        .ok_or_else(|| ApiError::lb_not_found(name))?;
    let Some(vpc) = &lb.vpc_id else {
        return Ok(None);
    };
    Ok(resolve::default_vpc(ctx)
        .await?
        .filter(|d| d.vpc_id == *vpc))
}

fn not_by_zones(
    lb: &LoadBalancer,
    default_vpc: Option<&DefaultVpc>,
    instead: &str,
) -> Result<(), ApiError> {
    match (&lb.vpc_id, default_vpc) {
        (None, _) => Ok(()),
        (Some(vpc), Some(d)) if d.vpc_id == *vpc => Ok(()),
        (Some(_), _) => Err(ApiError::invalid_config(format!(
            "Load balancers in a VPC other than the default VPC get their zones from subnets: use {instead}"
        ))),
    }
}

pub async fn enable_zones(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let name = ctx.lb_name()?;
    let zones = resolve::zones(ctx, &required_list(ctx, "AvailabilityZones")?).await?;
    let default_vpc = default_vpc_of(ctx, name).await?;
    let new_subnets = match &default_vpc {
        Some(vpc) => resolve::default_subnets(vpc, &zones)?,
        None => Vec::new(),
    };
    let placement = ctx.placement().await?;
    let all = ctx
        .update_lb(name, |lb| {
            not_by_zones(lb, default_vpc.as_ref(), "AttachLoadBalancerToSubnets")?;
            let added: Vec<String> = zones
                .into_iter()
                .filter(|z| !lb.zones.contains(z))
                .collect();
            lb.zones.extend(added.iter().cloned());
            for s in new_subnets.into_iter().filter(|s| added.contains(&s.zone)) {
                lb.subnets.push(s.id);
            }
            ctx.servable(&placement, lb, Servable::InZones(&added))?;
            Ok(lb.zones.clone())
        })
        .await?;
    Ok(ctx.respond(|w| w.string_list("AvailabilityZones", all.iter().map(String::as_str))))
}

pub async fn disable_zones(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let name = ctx.lb_name()?;
    let zones = required_list(ctx, "AvailabilityZones")?;
    let default_vpc = default_vpc_of(ctx, name).await?;
    let remaining = ctx
        .update_lb(name, |lb| {
            not_by_zones(lb, default_vpc.as_ref(), "DetachLoadBalancerFromSubnets")?;
            lb.zones.retain(|z| !zones.contains(z));
            if lb.zones.is_empty() {
                return Err(ApiError::invalid_config(
                    "There must be at least one availability zone enabled for the load balancer",
                ));
            }
            if let Some(vpc) = &default_vpc {
                lb.subnets.retain(|id| {
                    vpc.subnets
                        .iter()
                        .find(|s| s.id == *id)
                        .is_none_or(|s| !zones.contains(&s.zone))
                });
            }
            Ok(lb.zones.clone())
        })
        .await?;
    Ok(ctx.respond(|w| w.string_list("AvailabilityZones", remaining.iter().map(String::as_str))))
}

pub async fn apply_security_groups(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let name = ctx.lb_name()?;
    let requested = resolve::group_ids(&required_list(ctx, "SecurityGroups")?)?;
    let lb = ctx
        .state
        .store()
        .get_lb(&ctx.key(name))
        .await?
        .ok_or_else(|| ApiError::lb_not_found(name))?;
    let groups = resolve::security_groups(ctx, &requested, lb.vpc_id.as_deref()).await?;
    let applied = ctx
        .update_lb(name, |lb| {
            lb.security_groups = groups;
            Ok(lb.security_groups.clone())
        })
        .await?;
    Ok(ctx.respond(|w| w.string_list("SecurityGroups", applied.iter().map(String::as_str))))
}

pub async fn attach_subnets(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let name = ctx.lb_name()?;
    let requested = required_list(ctx, "Subnets")?;
    let found = resolve::subnets(ctx, &requested).await?;
    let lb = ctx
        .state
        .store()
        .get_lb(&ctx.key(name))
        .await?
        .ok_or_else(|| ApiError::lb_not_found(name))?;
    // The subnets already attached, as the inventory knows them (for their zones).
    let attached = resolve::subnets(ctx, &lb.subnets).await?;
    let placement = ctx.placement().await?;
    let all = ctx
        .update_lb(name, |lb| {
            if !lb.in_vpc() {
                return Err(ApiError::invalid_config(
                    "Subnets can only be attached to a load balancer in a VPC",
                ));
            }
            for s in &found {
                if !lb.subnets.contains(&s.id) {
                    lb.subnets.push(s.id.clone());
                }
            }
            let known: Vec<_> = attached.iter().chain(found.iter()).collect();
            let subnets: Vec<_> = lb
                .subnets
                .iter()
                .filter_map(|id| known.iter().find(|s| s.id == *id).map(|s| (*s).clone()))
                .collect();
            resolve::subnet_set(&subnets)?;
            if subnets.first().map(|s| &s.vpc_id) != lb.vpc_id.as_ref() {
                return Err(ApiError::invalid_config(
                    "Subnets must be in the load balancer's VPC",
                ));
            }
            let zones: Vec<String> = subnets.iter().map(|s| s.zone.clone()).collect();
            let added: Vec<String> = zones
                .iter()
                .filter(|z| !lb.zones.contains(z))
                .cloned()
                .collect();
            lb.zones = zones;
            ctx.servable(&placement, lb, Servable::InZones(&added))?;
            Ok(lb.subnets.clone())
        })
        .await?;
    Ok(ctx.respond(|w| w.string_list("Subnets", all.iter().map(String::as_str))))
}

pub async fn detach_subnets(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let name = ctx.lb_name()?;
    let requested = required_list(ctx, "Subnets")?;
    let lb = ctx
        .state
        .store()
        .get_lb(&ctx.key(name))
        .await?
        .ok_or_else(|| ApiError::lb_not_found(name))?;
    let known = ctx
        .state
        .inventory()
        .subnets(ctx.region, &lb.subnets)
        .await?;
    let remaining = ctx
        .update_lb(name, |lb| {
            if !lb.in_vpc() {
                return Err(ApiError::invalid_config(
                    "The load balancer is not in a VPC and has no subnets",
                ));
            }
            lb.subnets.retain(|s| !requested.contains(s));
            if lb.subnets.is_empty() {
                return Err(ApiError::invalid_config(
                    "A load balancer in a VPC must keep at least one subnet",
                ));
            }
            lb.zones = lb
                .subnets
                .iter()
                .filter_map(|id| known.iter().find(|s| s.id == *id).map(|s| s.zone.clone()))
                .collect();
            Ok(lb.subnets.clone())
        })
        .await?;
    Ok(ctx.respond(|w| w.string_list("Subnets", remaining.iter().map(String::as_str))))
}

//! Enable/DisableAvailabilityZonesForLoadBalancer, ApplySecurityGroupsToLoadBalancer,
//! AttachLoadBalancerToSubnets, DetachLoadBalancerFromSubnets.

use super::lbs::{check_security_groups, check_subnet_set, check_subnets, check_zones};
use super::{Ctx, Servable};
use crate::error::ApiError;

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

pub async fn enable_zones(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let name = ctx.lb_name()?;
    let zones = check_zones(ctx, &required_list(ctx, "AvailabilityZones")?).await?;
    let placement = ctx.placement().await?;
    let all = ctx
        .update_lb(name, |lb| {
            if lb.in_vpc() {
                return Err(ApiError::invalid_config(
                    "Load balancers in a VPC get their zones from subnets: use AttachLoadBalancerToSubnets",
                ));
            }
            let added: Vec<String> = zones.into_iter().filter(|z| !lb.zones.contains(z)).collect();
            lb.zones.extend(added.iter().cloned());
            ctx.servable(&placement, lb, Servable::InZones(&added))?;
            Ok(lb.zones.clone())
        })
        .await?;
    Ok(ctx.respond(|w| w.string_list("AvailabilityZones", all.iter().map(String::as_str))))
}

pub async fn disable_zones(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let name = ctx.lb_name()?;
    let zones = required_list(ctx, "AvailabilityZones")?;
    let remaining = ctx
        .update_lb(name, |lb| {
            if lb.in_vpc() {
                return Err(ApiError::invalid_config(
                    "Load balancers in a VPC get their zones from subnets: use DetachLoadBalancerFromSubnets",
                ));
            }
            lb.zones.retain(|z| !zones.contains(z));
            if lb.zones.is_empty() {
                return Err(ApiError::invalid_config(
                    "There must be at least one availability zone enabled for the load balancer",
                ));
            }
            Ok(lb.zones.clone())
        })
        .await?;
    Ok(ctx.respond(|w| w.string_list("AvailabilityZones", remaining.iter().map(String::as_str))))
}

pub async fn apply_security_groups(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let name = ctx.lb_name()?;
    let groups = check_security_groups(&required_list(ctx, "SecurityGroups")?)?;
    let applied = ctx
        .update_lb(name, |lb| {
            if !lb.in_vpc() {
                return Err(ApiError::invalid_config(
                    "Security groups can only be applied to a load balancer in a VPC",
                ));
            }
            lb.security_groups = groups;
            Ok(lb.security_groups.clone())
        })
        .await?;
    Ok(ctx.respond(|w| w.string_list("SecurityGroups", applied.iter().map(String::as_str))))
}

pub async fn attach_subnets(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let name = ctx.lb_name()?;
    let requested = required_list(ctx, "Subnets")?;
    check_subnets(ctx, &requested).await?;
    let known = ctx.state.store().list_subnets().await?;
    let placement = ctx.placement().await?;
    let all = ctx
        .update_lb(name, |lb| {
            if !lb.in_vpc() {
                return Err(ApiError::invalid_config(
                    "Subnets can only be attached to a load balancer created in a VPC (with Subnets)",
                ));
            }
            for id in requested {
                if !lb.subnets.contains(&id) {
                    lb.subnets.push(id);
                }
            }
            let subnets: Vec<_> = lb.subnets.iter().filter_map(|id| known.iter().find(|s| s.id == *id).cloned()).collect();
            check_subnet_set(&subnets)?;
            if subnets.first().map(|s| &s.vpc_id) != lb.vpc_id.as_ref() {
                return Err(ApiError::invalid_config("Subnets must be in the load balancer's VPC"));
            }
            let zones: Vec<String> = subnets.iter().map(|s| s.zone.clone()).collect();
            let added: Vec<String> = zones.iter().filter(|z| !lb.zones.contains(z)).cloned().collect();
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
    let known = ctx.state.store().list_subnets().await?;
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

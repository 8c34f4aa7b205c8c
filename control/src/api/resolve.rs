//! What requests name, looked up in the inventory ([`crate::inventory::Inventory`]: built-in,
//! or the EC2-compatible cloud): zones of the request's region, subnets and their VPC, the
//! default VPC, and security groups with the rules servos will enforce.
//!
//! Placement follows AWS as it is today when a cloud is configured: a load balancer created
//! with AvailabilityZones lives in the region's default VPC (in its default subnet of each
//! zone) and takes SecurityGroups; one created without groups in a VPC gets the VPC's
//! `default` group. Without a default VPC (an EC2-Classic-style cloud) it is placed by zones
//! alone, as before. The built-in inventory has no default VPC: its load balancers created
//! with zones may take built-in groups made without a VPC, and a load balancer without
//! groups is open to every client.

use super::Ctx;
use crate::error::{ApiError, ErrorCode};
use crate::inventory::{DefaultVpc, InventoryError};
use crate::store::{SecurityGroupRecord, Subnet};
use crate::validate::{self, printable};
use elb_contract::security_group::MAX_SECURITY_GROUPS;

impl From<InventoryError> for ApiError {
    fn from(e: InventoryError) -> Self {
        match e {
            InventoryError::Store(s) => s.into(),
            InventoryError::Cloud(c) => c.into(),
        }
    }
}

/// Availability zones of the caller's region that exist, checked one by one, without repeats.
pub(super) async fn zones(ctx: &Ctx<'_>, zones: &[String]) -> Result<Vec<String>, ApiError> {
    for z in zones {
        validate::zone_name(z)?;
    }
    let known = ctx.state.inventory().zones(ctx.region).await?;
    let mut out: Vec<String> = Vec::new();
    for z in zones {
        if !known.iter().any(|k| k.name == *z) {
            return Err(ApiError::validation(format!(
                "Invalid Availability Zone: {} is not a zone of region {}",
                printable(z),
                ctx.region
            )));
        }
        if !out.contains(z) {
            out.push(z.clone());
        }
    }
    Ok(out)
}

/// Subnets that exist in the caller's region, without repeats; `SubnetNotFound` for the first
/// that does not. Not checked as a set (see [`subnet_set`]).
pub(super) async fn subnets(ctx: &Ctx<'_>, ids: &[String]) -> Result<Vec<Subnet>, ApiError> {
    let found = ctx.state.inventory().subnets(ctx.region, ids).await?;
    let mut out: Vec<Subnet> = Vec::new();
    for id in ids {
        let Some(subnet) = found.iter().find(|s| s.id == *id) else {
            return Err(ApiError::new(
                ErrorCode::SubnetNotFound,
                format!("One or more subnets were not found: {}", printable(id)),
            ));
        };
        if !out.iter().any(|s| s.id == subnet.id) {
            out.push(subnet.clone());
        }
    }
    Ok(out)
}

/// One VPC, one subnet per zone.
pub(super) fn subnet_set(subnets: &[Subnet]) -> Result<(), ApiError> {
    if let Some(first) = subnets.first()
        && let Some(other) = subnets.iter().find(|s| s.vpc_id != first.vpc_id)
    {
        return Err(ApiError::invalid_config(format!(
            "Subnets {} and {} are in different VPCs",
            first.id, other.id
        )));
    }
    for (i, a) in subnets.iter().enumerate() {
        if let Some(b) = subnets[i + 1..].iter().find(|b| b.zone == a.zone) {
            return Err(ApiError::invalid_config(format!(
                "Only one subnet per Availability Zone may be attached: {} and {} are both in {}",
                a.id, b.id, a.zone
            )));
        }
    }
    Ok(())
}

/// The region's default VPC, if the cloud has one.
pub(super) async fn default_vpc(ctx: &Ctx<'_>) -> Result<Option<DefaultVpc>, ApiError> {
    Ok(ctx.state.inventory().default_vpc(ctx.region).await?)
}

/// The default VPC's subnets of `zones` (in that order).
pub(super) fn default_subnets(vpc: &DefaultVpc, zones: &[String]) -> Result<Vec<Subnet>, ApiError> {
    zones
        .iter()
        .map(|z| {
            vpc.subnets
                .iter()
                .find(|s| s.zone == *z)
                .cloned()
                .ok_or_else(|| {
                    ApiError::invalid_config(format!(
                        "The default VPC {} has no default subnet in Availability Zone {z}: create \
                     the load balancer with Subnets instead",
                        vpc.vpc_id
                    ))
                })
        })
        .collect()
}

/// Group ids as given: the grammar, no repeats, at most five.
pub(super) fn group_ids(groups: &[String]) -> Result<Vec<String>, ApiError> {
    let mut out: Vec<String> = Vec::new();
    for g in groups {
        validate::security_group_id(g)?;
        if !out.contains(g) {
            out.push(g.clone());
        }
    }
    if out.len() > MAX_SECURITY_GROUPS {
        return Err(ApiError::validation(format!(
            "At most {MAX_SECURITY_GROUPS} security groups can be applied to a load balancer"
        )));
    }
    Ok(out)
}

fn invalid_group(id: &str, why: &str) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidSecurityGroup,
        format!(
            "One or more of the specified security groups do not exist: {} {why}",
            printable(id)
        ),
    )
}

/// The security groups a load balancer in `vpc` (`None`: placed by zones alone) takes:
/// `requested` checked to exist in the inventory, to be usable by the caller and to be in
/// `vpc`; without any, the VPC's `default` group when the cloud has one. Groups read from the
/// cloud are stored, so the servos' next document carries their rules.
pub(super) async fn security_groups(
    ctx: &Ctx<'_>,
    requested: &[String],
    vpc: Option<&str>,
) -> Result<Vec<String>, ApiError> {
    let inventory = ctx.state.inventory();
    let ids = group_ids(requested)?;
    let groups: Vec<SecurityGroupRecord> = if ids.is_empty() {
        let Some(vpc) = vpc else {
            return Ok(Vec::new());
        };
        match inventory.default_security_group(ctx.region, vpc).await? {
            Some(g) => vec![g],
            None if inventory.is_cloud() => {
                return Err(ApiError::invalid_config(format!(
                    "VPC {vpc} has no default security group: name SecurityGroups"
                )));
            }
            None => Vec::new(),
        }
    } else {
        if vpc.is_none() && inventory.is_cloud() {
            return Err(ApiError::invalid_config(
                "SecurityGroups can only be applied to a load balancer in a VPC: this region has \
                 no default VPC, create the load balancer with Subnets",
            ));
        }
        let found = inventory
            .security_groups(ctx.region, &ids, &ctx.caller.account_id)
            .await?;
        for id in &ids {
            match found.iter().find(|g| g.id == *id) {
                None => return Err(invalid_group(id, "")),
                Some(g) if g.vpc_id.as_deref() != vpc => {
                    let belongs = match &g.vpc_id {
                        Some(v) => format!("(it belongs to {v}"),
                        None => "(it belongs to no VPC".to_string(),
                    };
                    let lb = match vpc {
                        Some(v) => format!("the load balancer is in {v})"),
                        None => "the load balancer is in no VPC)".to_string(),
                    };
                    return Err(invalid_group(id, &format!("{belongs}; {lb}")));
                }
                Some(_) => {}
            }
        }
        found
    };
    if inventory.is_cloud() {
        ctx.state
            .store()
            .sync_cloud_security_groups(&groups)
            .await?;
    }
    Ok(groups.into_iter().map(|g| g.id).collect())
}

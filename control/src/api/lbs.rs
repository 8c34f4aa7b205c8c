//! CreateLoadBalancer, DeleteLoadBalancer, DescribeLoadBalancers.

use std::collections::BTreeSet;

use super::{Ctx, Servable, page_size, resolve};
use crate::error::{ApiError, ErrorCode};
use crate::model::{Attributes, HealthCheck, LbKey, LoadBalancer, Scheme};
use crate::quota::QuotaName;
use crate::timefmt;
use crate::validate::{self, printable};
use crate::xml::XmlWriter;
use elb_contract::policy::{APP_COOKIE, LB_COOKIE};

pub async fn create(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let p = ctx.params;
    let name = p.required("LoadBalancerName")?;
    validate::lb_name(name)?;
    ctx.authorize([name])?;
    let account = ctx.caller.account_id.as_str();

    let members = p
        .struct_list("Listeners", validate::LISTENER_FIELDS)?
        .ok_or_else(|| ApiError::missing("Listeners"))?;
    if members.is_empty() {
        return Err(ApiError::validation("Listeners cannot be empty"));
    }
    let listeners = validate::listeners(&members, name)?;
    super::listeners::require_certificates(ctx, &listeners).await?;

    let zones = p.string_list("AvailabilityZones")?.unwrap_or_default();
    let subnet_ids = p.string_list("Subnets")?.unwrap_or_default();
    let groups = p.string_list("SecurityGroups")?.unwrap_or_default();
    let scheme = match p.get("Scheme") {
        None | Some("") => Scheme::InternetFacing,
        Some(s) => Scheme::parse(s).ok_or_else(|| {
            ApiError::validation(format!(
                "Scheme '{}' is invalid: use internet-facing or internal",
                printable(s)
            ))
        })?,
    };
    let tag_members = p
        .struct_list("Tags", &["Key", "Value"])?
        .unwrap_or_default();
    let tags = validate::tags(&tag_members)?;

    let (zones, subnets, vpc_id) = match (zones.is_empty(), subnet_ids.is_empty()) {
        (true, true) => {
            return Err(ApiError::validation(
                "Either AvailabilityZones or Subnets must be specified",
            ));
        }
        (false, false) => {
            return Err(ApiError::validation(
                "Specify either AvailabilityZones or Subnets, not both",
            ));
        }
        (false, true) => {
            let zones = resolve::zones(ctx, &zones).await?;
            // AWS today: a load balancer created with zones lives in the default VPC.
            match resolve::default_vpc(ctx).await? {
                Some(vpc) => {
                    let subnets = resolve::default_subnets(&vpc, &zones)?;
                    (
                        zones,
                        subnets.into_iter().map(|s| s.id).collect(),
                        Some(vpc.vpc_id),
                    )
                }
                None => (zones, Vec::new(), None),
            }
        }
        (true, false) => {
            let subnets = resolve::subnets(ctx, &subnet_ids).await?;
            resolve::subnet_set(&subnets)?;
            let vpc = subnets.first().map(|s| s.vpc_id.clone());
            (
                subnets.iter().map(|s| s.zone.clone()).collect(),
                subnets.into_iter().map(|s| s.id).collect(),
                vpc,
            )
        }
    };
    if vpc_id.is_none() && scheme == Scheme::Internal {
        return Err(ApiError::new(
            ErrorCode::InvalidScheme,
            "The internal scheme is only available to load balancers in a VPC (created with Subnets)",
        ));
    }
    let security_groups = resolve::security_groups(ctx, &groups, vpc_id.as_deref()).await?;

    let quotas = ctx.quotas().await?;
    if listeners.len() > quotas.max_usize(QuotaName::Listeners) {
        return Err(too_many_listeners(quotas.get(QuotaName::Listeners)));
    }
    if tags.len() > quotas.max_usize(QuotaName::Tags) {
        return Err(too_many_tags(quotas.get(QuotaName::Tags)));
    }

    let config = ctx.state.config();
    let dns_name = config.dns_name(name, account, ctx.region, scheme == Scheme::Internal);
    let first_port = std::num::NonZeroU16::new(listeners[0].instance_port)
        .ok_or_else(|| ApiError::validation("InstancePort must be between 1 and 65535"))?;
    let lb = LoadBalancer {
        id: crate::store::random_hex(12),
        key: LbKey {
            account_id: account.to_string(),
            region: ctx.region.to_string(),
            name: name.to_string(),
        },
        dns_name: dns_name.clone(),
        scheme,
        vpc_id,
        created_at: timefmt::now_millis(),
        listeners,
        zones,
        subnets,
        security_groups,
        instances: Vec::new(),
        health_check: HealthCheck::default_for_port(first_port),
        attributes: Attributes::default(),
        policies: Vec::new(),
        backend_policies: Vec::new(),
        tags,
    };
    validate::check_rules(&lb)?;
    ctx.servable(&ctx.placement().await?, &lb, Servable::Everywhere)?;
    ctx.state
        .store()
        .create_lb(&lb, quotas.get(QuotaName::LoadBalancers))
        .await?;
    Ok(ctx.respond(|w| w.text("DNSName", &dns_name)))
}

pub fn too_many_listeners(limit: i64) -> ApiError {
    ApiError::invalid_config(format!(
        "Exceeded the quota of {limit} listeners per load balancer"
    ))
}

pub fn too_many_tags(limit: i64) -> ApiError {
    ApiError::new(
        ErrorCode::TooManyTags,
        format!("Tag limit exceeded: at most {limit} tags per load balancer"),
    )
}

pub async fn delete(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let name = ctx.lb_name()?;
    // Idempotent: deleting a load balancer that does not exist succeeds.
    ctx.state.store().delete_lb(&ctx.key(name)).await?;
    Ok(ctx.respond(|_| {}))
}

/// The marker of a listing position: the name for the caller's own load balancers,
/// `account/name` in the administrators' all-accounts (`verbose`) listing.
fn marker_of(lb: &LoadBalancer, all_accounts: bool) -> String {
    if all_accounts {
        format!("{}/{}", lb.key.account_id, lb.key.name)
    } else {
        lb.key.name.clone()
    }
}

pub async fn describe(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let p = ctx.params;
    let mut names = p.string_list("LoadBalancerNames")?.unwrap_or_default();
    // Eucalyptus: a `verbose` entry asks for every account's load balancers; it is honoured
    // for administrators and otherwise ignored.
    let verbose = names.iter().any(|n| n == "verbose");
    names.retain(|n| n != "verbose");
    let all_accounts = verbose && ctx.caller.is_admin;
    let limit = page_size(p)?;
    let marker = p.get("Marker").filter(|m| !m.is_empty());
    let store = ctx.state.store();

    let (items, more) = if names.is_empty() || all_accounts {
        ctx.authorize_any()?;
        let account = if all_accounts {
            None
        } else {
            Some(ctx.caller.account_id.as_str())
        };
        let after = marker.map(|m| match (all_accounts, m.split_once('/')) {
            (true, Some((acct, name))) => (acct.to_string(), name.to_string()),
            (true, None) => (m.to_string(), String::new()),
            (false, _) => (ctx.caller.account_id.clone(), m.to_string()),
        });
        let wanted: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        let mut out = Vec::new();
        let mut after = after;
        // Keep reading until a page is full after filtering (names, permissions) or the end.
        let more = loop {
            let after_ref = after.as_ref().map(|(a, n)| (a.as_str(), n.as_str()));
            let page = store
                .list_lbs(ctx.region, account, after_ref, limit)
                .await?;
            if let Some(last) = page.items.last() {
                after = Some((last.key.account_id.clone(), last.key.name.clone()));
            }
            for lb in page.items {
                if (wanted.is_empty() || wanted.contains(lb.key.name.as_str()))
                    && ctx.allowed(&lb.key.account_id, &lb.key.name)
                {
                    out.push(lb);
                }
            }
            if out.len() >= limit {
                let more = out.len() > limit || page.more;
                out.truncate(limit);
                break more;
            }
            if !page.more {
                break false;
            }
        };
        (out, more)
    } else {
        for n in &names {
            validate::lb_name_lookup(n)?;
        }
        ctx.authorize(names.iter().map(String::as_str))?;
        let unique: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        let mut found = Vec::new();
        for n in unique {
            match store.get_lb(&ctx.key(n)).await? {
                Some(lb) => found.push(lb),
                None => return Err(ApiError::lb_not_found(n)),
            }
        }
        if let Some(m) = marker {
            found.retain(|lb| lb.key.name.as_str() > m);
        }
        let more = found.len() > limit;
        found.truncate(limit);
        (found, more)
    };

    let next = if more {
        items.last().map(|lb| marker_of(lb, all_accounts))
    } else {
        None
    };
    Ok(ctx.respond(|w| {
        w.list("LoadBalancerDescriptions", &items, |w, lb| {
            write_description(w, lb)
        });
        w.opt_text("NextMarker", next.as_deref());
    }))
}

/// One `LoadBalancerDescriptions/member`, elements in the model's order.
pub fn write_description(w: &mut XmlWriter, lb: &LoadBalancer) {
    w.text("LoadBalancerName", &lb.key.name);
    w.text("DNSName", &lb.dns_name);
    w.text("CanonicalHostedZoneName", &lb.dns_name);
    w.list("ListenerDescriptions", &lb.listeners, |w, l| {
        w.elem("Listener", |w| {
            w.text("Protocol", l.protocol.as_str());
            w.num("LoadBalancerPort", l.load_balancer_port);
            w.text("InstanceProtocol", l.instance_protocol.as_str());
            w.num("InstancePort", l.instance_port);
            w.opt_text("SSLCertificateId", l.ssl_certificate_id.as_deref());
        });
        w.string_list("PolicyNames", l.policy_names.iter().map(String::as_str));
    });
    w.elem("Policies", |w| {
        w.list(
            "AppCookieStickinessPolicies",
            lb.policies.iter().filter(|p| p.type_name == APP_COOKIE),
            |w, p| {
                w.text("PolicyName", &p.name);
                w.opt_text("CookieName", p.attribute("CookieName"));
            },
        );
        w.list(
            "LBCookieStickinessPolicies",
            lb.policies.iter().filter(|p| p.type_name == LB_COOKIE),
            |w, p| {
                w.text("PolicyName", &p.name);
                w.opt_text(
                    "CookieExpirationPeriod",
                    p.attribute("CookieExpirationPeriod"),
                );
            },
        );
        w.string_list(
            "OtherPolicies",
            lb.policies
                .iter()
                .filter(|p| p.type_name != APP_COOKIE && p.type_name != LB_COOKIE)
                .map(|p| p.name.as_str()),
        );
    });
    w.list(
        "BackendServerDescriptions",
        &lb.backend_policies,
        |w, (port, names)| {
            w.num("InstancePort", port);
            w.string_list("PolicyNames", names.iter().map(String::as_str));
        },
    );
    w.string_list("AvailabilityZones", lb.zones.iter().map(String::as_str));
    w.string_list("Subnets", lb.subnets.iter().map(String::as_str));
    w.opt_text("VPCId", lb.vpc_id.as_deref());
    w.list("Instances", &lb.instances, |w, i| {
        w.text("InstanceId", &i.instance_id)
    });
    write_health_check(w, &lb.health_check);
    match (lb.in_vpc(), lb.security_groups.first()) {
        (false, _) => w.elem("SourceSecurityGroup", |w| {
            w.text("OwnerAlias", "amazon-elb");
            w.text("GroupName", "amazon-elb-sg");
        }),
        (true, Some(group)) => w.elem("SourceSecurityGroup", |w| {
            w.text("OwnerAlias", &lb.key.account_id);
            w.text("GroupName", group);
        }),
        (true, None) => {}
    }
    w.string_list(
        "SecurityGroups",
        lb.security_groups.iter().map(String::as_str),
    );
    w.text(
        "CreatedTime",
        &timefmt::format_iso8601_millis(lb.created_at),
    );
    w.text("Scheme", lb.scheme.as_str());
}

pub fn write_health_check(w: &mut XmlWriter, hc: &HealthCheck) {
    w.elem("HealthCheck", |w| {
        w.text("Target", &hc.target.to_string());
        w.num("Interval", hc.interval);
        w.num("Timeout", hc.timeout);
        w.num("UnhealthyThreshold", hc.unhealthy_threshold);
        w.num("HealthyThreshold", hc.healthy_threshold);
    });
}

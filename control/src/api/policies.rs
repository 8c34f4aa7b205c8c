//! Policy actions: the two stickiness shortcuts, CreateLoadBalancerPolicy,
//! DeleteLoadBalancerPolicy, DescribeLoadBalancerPolicies, DescribeLoadBalancerPolicyTypes,
//! SetLoadBalancerPoliciesOfListener, SetLoadBalancerPoliciesForBackendServer.

use super::Ctx;
use super::listeners::listener_not_found;
use crate::error::{ApiError, ErrorCode};
use crate::model::{LoadBalancer, Policy, Protocol};
use crate::validate::{self, printable, problem_error};
use crate::xml::XmlWriter;
use elb_contract::policy::{self as policy_types, APP_COOKIE, BACKEND_AUTH, LB_COOKIE};

fn policy_type_not_found(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::PolicyTypeNotFound,
        format!(
            "One or more of the specified policy types do not exist: {}",
            printable(name)
        ),
    )
}

/// Policies one load balancer may hold.
pub const MAX_POLICIES: usize = 100;

fn policy_not_found(names: &[&str]) -> ApiError {
    let list: Vec<String> = names.iter().map(|n| printable(n)).collect();
    ApiError::new(
        ErrorCode::PolicyNotFound,
        format!(
            "One or more specified policies were not found: {}",
            list.join(", ")
        ),
    )
}

/// Adds `policy` to `lb` unless the name is taken or the load balancer is full.
fn add_policy(lb: &mut LoadBalancer, policy: Policy) -> Result<(), ApiError> {
    if lb.policy(&policy.name).is_some() {
        return Err(ApiError::new(
            ErrorCode::DuplicatePolicyName,
            format!(
                "Policy {} already exists for load balancer {}",
                policy.name, lb.key.name
            ),
        ));
    }
    if lb.policies.len() >= MAX_POLICIES {
        return Err(ApiError::new(
            ErrorCode::TooManyPolicies,
            format!("A load balancer can have at most {MAX_POLICIES} policies"),
        ));
    }
    lb.policies.push(policy);
    Ok(())
}

async fn create_policy(
    ctx: &Ctx<'_>,
    name: &str,
    build: impl FnOnce(&LoadBalancer) -> Result<Policy, ApiError>,
) -> Result<String, ApiError> {
    ctx.update_lb(name, |lb| {
        let policy = build(lb)?;
        add_policy(lb, policy)
    })
    .await?;
    Ok(ctx.respond(|_| {}))
}

pub async fn create_app_cookie(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let name = ctx.lb_name()?;
    let policy_name = ctx.params.required("PolicyName")?.to_string();
    validate::policy_name(&policy_name)?;
    let cookie = ctx.params.required("CookieName")?.to_string();
    validate::free_text("CookieName", &cookie, 255)?;
    if cookie.contains([' ', ';', ',', '=']) {
        return Err(ApiError::validation(
            "CookieName must not contain spaces, ';', ',' or '='",
        ));
    }
    create_policy(ctx, name, |_| {
        Ok(Policy {
            name: policy_name,
            type_name: APP_COOKIE.into(),
            attributes: vec![("CookieName".into(), cookie)],
        })
    })
    .await
}

pub async fn create_lb_cookie(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let name = ctx.lb_name()?;
    let policy_name = ctx.params.required("PolicyName")?.to_string();
    validate::policy_name(&policy_name)?;
    let period = ctx.params.int("CookieExpirationPeriod", 0, i64::MAX)?;
    let attributes = period
        .map(|p| vec![("CookieExpirationPeriod".to_string(), p.to_string())])
        .unwrap_or_default();
    create_policy(ctx, name, |_| {
        Ok(Policy {
            name: policy_name,
            type_name: LB_COOKIE.into(),
            attributes,
        })
    })
    .await
}

pub async fn create(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let name = ctx.lb_name()?;
    let p = ctx.params;
    let policy_name = p.required("PolicyName")?.to_string();
    validate::policy_name(&policy_name)?;
    let type_name = p.required("PolicyTypeName")?;
    let policy_type =
        policy_types::find(type_name).ok_or_else(|| policy_type_not_found(type_name))?;
    let members = p
        .struct_list("PolicyAttributes", &["AttributeName", "AttributeValue"])?
        .unwrap_or_default();
    let mut attributes = Vec::with_capacity(members.len());
    for m in members {
        let attr = m
            .get("AttributeName")
            .filter(|a| !a.is_empty())
            .ok_or_else(|| ApiError::missing("PolicyAttributes.member.N.AttributeName"))?;
        attributes.push((
            attr.clone(),
            m.get("AttributeValue").cloned().unwrap_or_default(),
        ));
    }
    create_policy(ctx, name, |lb| {
        let attributes = policy_types::check_attributes(&policy_type, &attributes, &lb.policies)
            .map_err(|p| problem_error(&p))?;
        Ok(Policy {
            name: policy_name,
            type_name: policy_type.name.to_string(),
            attributes,
        })
    })
    .await
}

pub async fn delete(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let name = ctx.lb_name()?;
    let policy_name = ctx.params.required("PolicyName")?.to_string();
    ctx.update_lb(name, |lb| {
        let on_listener = lb
            .listeners
            .iter()
            .find(|l| l.policy_names.contains(&policy_name));
        let on_backend = lb
            .backend_policies
            .iter()
            .find(|(_, names)| names.contains(&policy_name));
        let referenced = lb.policies.iter().find(|p| {
            p.type_name == BACKEND_AUTH && p.attributes.iter().any(|(_, v)| *v == policy_name)
        });
        if let Some(l) = on_listener {
            return Err(ApiError::invalid_config(format!(
                "Policy {policy_name} is in use by the listener on port {}",
                l.load_balancer_port
            )));
        }
        if let Some((port, _)) = on_backend {
            return Err(ApiError::invalid_config(format!(
                "Policy {policy_name} is in use by back-end port {port}"
            )));
        }
        if let Some(p) = referenced {
            return Err(ApiError::invalid_config(format!(
                "Policy {policy_name} is referenced by policy {}",
                p.name
            )));
        }
        // Deleting a policy that does not exist is not an error.
        lb.policies.retain(|p| p.name != policy_name);
        Ok(())
    })
    .await?;
    Ok(ctx.respond(|_| {}))
}

fn write_policy(w: &mut XmlWriter, p: &Policy) {
    w.text("PolicyName", &p.name);
    w.text("PolicyTypeName", &p.type_name);
    w.list("PolicyAttributeDescriptions", &p.attributes, |w, (n, v)| {
        w.text("AttributeName", n);
        w.text("AttributeValue", v);
    });
}

/// Picks the policies named in `PolicyNames` (all when absent), in the order asked.
fn select<'p>(ctx: &Ctx<'_>, available: &'p [Policy]) -> Result<Vec<&'p Policy>, ApiError> {
    let Some(names) = ctx
        .params
        .string_list("PolicyNames")?
        .filter(|n| !n.is_empty())
    else {
        return Ok(available.iter().collect());
    };
    let missing: Vec<&str> = names
        .iter()
        .filter(|n| !available.iter().any(|p| p.name == **n))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(policy_not_found(&missing));
    }
    Ok(names
        .iter()
        .filter_map(|n| available.iter().find(|p| p.name == *n))
        .collect())
}

pub async fn describe(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let policies: Vec<Policy> = match ctx.params.get("LoadBalancerName").filter(|n| !n.is_empty()) {
        Some(_) => {
            let name = ctx.lb_name()?;
            let lb = ctx
                .state
                .store()
                .get_lb(&ctx.key(name))
                .await?
                .ok_or_else(|| ApiError::lb_not_found(name))?;
            lb.policies
        }
        None => {
            ctx.authorize_any()?;
            policy_types::samples()
        }
    };
    let chosen = select(ctx, &policies)?;
    Ok(ctx.respond(|w| w.list("PolicyDescriptions", chosen, write_policy)))
}

pub async fn describe_types(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    ctx.authorize_any()?;
    let all = policy_types::all();
    let chosen: Vec<_> = match ctx
        .params
        .string_list("PolicyTypeNames")?
        .filter(|n| !n.is_empty())
    {
        None => all,
        Some(names) => {
            let mut out = Vec::new();
            for n in &names {
                out.push(policy_types::find(n).ok_or_else(|| policy_type_not_found(n))?);
            }
            out
        }
    };
    Ok(ctx.respond(|w| {
        w.list("PolicyTypeDescriptions", &chosen, |w, t| {
            w.text("PolicyTypeName", t.name);
            w.text("Description", t.description);
            w.list("PolicyAttributeTypeDescriptions", &t.attributes, |w, a| {
                w.text("AttributeName", a.name);
                w.text("AttributeType", a.kind);
                w.text("Description", a.description);
                w.opt_text("DefaultValue", a.default);
                w.text("Cardinality", a.cardinality);
            });
        });
    }))
}

/// `PolicyNames` of the Set* actions: required, possibly empty (which clears).
fn policy_names(ctx: &Ctx<'_>) -> Result<Vec<String>, ApiError> {
    let mut names = ctx
        .params
        .string_list("PolicyNames")?
        .ok_or_else(|| ApiError::missing("PolicyNames"))?;
    names.dedup();
    Ok(names)
}

fn resolve<'p>(lb: &'p LoadBalancer, names: &[String]) -> Result<Vec<&'p Policy>, ApiError> {
    let missing: Vec<&str> = names
        .iter()
        .filter(|n| lb.policy(n).is_none())
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(policy_not_found(&missing));
    }
    Ok(names.iter().filter_map(|n| lb.policy(n)).collect())
}

pub async fn set_listener(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let name = ctx.lb_name()?;
    let port = ctx.params.required_int("LoadBalancerPort", 1, 65535)?;
    let names = policy_names(ctx)?;
    ctx.update_lb(name, |lb| {
        let protocol = u16::try_from(port)
            .ok()
            .and_then(|p| lb.listener(p))
            .map(|l| l.protocol)
            .ok_or_else(|| listener_not_found(name, port))?;
        let policies = resolve(lb, &names)?;
        let mut families: Vec<&str> = Vec::new();
        for p in &policies {
            policy_types::check_listener_policy(p, protocol).map_err(|p| problem_error(&p))?;
            if let Some(family) = policy_types::policy_family(&p.type_name) {
                if families.contains(&family) {
                    return Err(ApiError::invalid_config(format!(
                        "A listener can have only one {family} policy"
                    )));
                }
                families.push(family);
            }
        }
        if let Some(l) = u16::try_from(port).ok().and_then(|p| lb.listener_mut(p)) {
            l.policy_names = names;
        }
        Ok(())
    })
    .await?;
    Ok(ctx.respond(|_| {}))
}

pub async fn set_backend(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let name = ctx.lb_name()?;
    let port = ctx.params.required_int("InstancePort", 1, 65535)?;
    let port =
        u16::try_from(port).map_err(|_| ApiError::validation("InstancePort must be 1-65535"))?;
    let names = policy_names(ctx)?;
    ctx.update_lb(name, |lb| {
        let protocols: Vec<Protocol> = lb
            .listeners
            .iter()
            .filter(|l| l.instance_port == port)
            .map(|l| l.instance_protocol)
            .collect();
        if protocols.is_empty() {
            return Err(ApiError::invalid_config(format!(
                "No listener of load balancer {name} forwards to instance port {port}"
            )));
        }
        for p in resolve(lb, &names)? {
            policy_types::check_backend_policy(p, &protocols).map_err(|p| problem_error(&p))?;
        }
        lb.backend_policies.retain(|(p, _)| *p != port);
        if !names.is_empty() {
            lb.backend_policies.push((port, names));
            lb.backend_policies.sort_by_key(|(p, _)| *p);
        }
        Ok(())
    })
    .await?;
    Ok(ctx.respond(|_| {}))
}

//! CreateLoadBalancerListeners, DeleteLoadBalancerListeners, SetLoadBalancerListenerSSLCertificate.

use super::lbs::too_many_listeners;
use super::{Ctx, Servable};
use crate::certs;
use crate::error::{ApiError, ErrorCode};
use crate::model::Listener;
use crate::quota::QuotaName;
use crate::validate;

pub async fn create(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let name = ctx.lb_name()?;
    let members = ctx
        .params
        .struct_list("Listeners", validate::LISTENER_FIELDS)?
        .ok_or_else(|| ApiError::missing("Listeners"))?;
    if members.is_empty() {
        return Err(ApiError::validation("Listeners cannot be empty"));
    }
    let new = validate::listeners(&members, name)?;
    require_certificates(ctx, &new).await?;
    let limit = ctx.quotas().await?.get(QuotaName::Listeners);
    let placement = ctx.placement().await?;
    ctx.update_lb(name, |lb| {
        for l in new {
            match lb.listener(l.load_balancer_port) {
                // The same listener again is a no-op.
                Some(existing) if existing.same_definition(&l) => {}
                Some(_) => {
                    return Err(validate::duplicate_listener(name, l.load_balancer_port));
                }
                None => lb.listeners.push(l),
            }
        }
        if i64::try_from(lb.listeners.len()).unwrap_or(i64::MAX) > limit {
            return Err(too_many_listeners(limit));
        }
        ctx.servable(&placement, lb, Servable::WhereServosLive)
    })
    .await?;
    Ok(ctx.respond(|_| {}))
}

pub async fn delete(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let name = ctx.lb_name()?;
    let ports = ctx
        .params
        .string_list("LoadBalancerPorts")?
        .ok_or_else(|| ApiError::missing("LoadBalancerPorts"))?
        .iter()
        .map(|p| crate::query::parse_int("LoadBalancerPorts", p, 1, 65535))
        .collect::<Result<Vec<_>, _>>()?;
    ctx.update_lb(name, |lb| {
        // Ports without a listener are ignored, as on AWS.
        lb.listeners
            .retain(|l| !ports.contains(&i64::from(l.load_balancer_port)));
        Ok(())
    })
    .await?;
    Ok(ctx.respond(|_| {}))
}

pub async fn set_certificate(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let name = ctx.lb_name()?;
    let port = ctx.params.required_int("LoadBalancerPort", 1, 65535)?;
    let cert = ctx.params.required("SSLCertificateId")?.to_string();
    // A missing load balancer is reported before a missing certificate, as on AWS.
    validate::certificate_arn(&cert)?;
    if ctx.state.store().get_lb(&ctx.key(name)).await?.is_none() {
        return Err(ApiError::lb_not_found(name));
    }
    certs::require_listener_certificate(ctx.state, &ctx.caller.account_id, &cert).await?;
    ctx.update_lb(name, |lb| {
            let listener = u16::try_from(port)
                .ok()
                .and_then(|p| lb.listener_mut(p))
                .ok_or_else(|| listener_not_found(name, port))?;
            if !listener.protocol.is_secure() {
                return Err(ApiError::invalid_config(format!(
                    "The listener on port {port} uses {}; certificates apply to HTTPS and SSL listeners only",
                    listener.protocol
                )));
            }
            listener.ssl_certificate_id = Some(cert);
            Ok(())
        })
        .await?;
    Ok(ctx.respond(|_| {}))
}

pub fn listener_not_found(lb: &str, port: i64) -> ApiError {
    ApiError::new(
        ErrorCode::ListenerNotFound,
        format!("There is no listener on port {port} of load balancer {lb}"),
    )
}

/// Every certificate the listeners name must exist in the caller's account.
pub async fn require_certificates(ctx: &Ctx<'_>, listeners: &[Listener]) -> Result<(), ApiError> {
    for arn in listeners
        .iter()
        .filter_map(|l| l.ssl_certificate_id.as_deref())
    {
        certs::require_listener_certificate(ctx.state, &ctx.caller.account_id, arn).await?;
    }
    Ok(())
}

//! DescribeLoadBalancerAttributes, ModifyLoadBalancerAttributes.

use super::Ctx;
use crate::error::{ApiError, ErrorCode};
use crate::model::{Attributes, LoadBalancer};
use crate::validate::{self, printable};
use crate::xml::XmlWriter;

const PREFIX: &str = "LoadBalancerAttributes.";

/// Fields of `LoadBalancerAttributes` this service understands.
const KNOWN: &[&str] = &[
    "CrossZoneLoadBalancing.Enabled",
    "AccessLog.Enabled",
    "AccessLog.S3BucketName",
    "AccessLog.EmitInterval",
    "AccessLog.S3BucketPrefix",
    "ConnectionDraining.Enabled",
    "ConnectionDraining.Timeout",
    "ConnectionSettings.IdleTimeout",
];

/// AdditionalAttributes keys and the values each accepts.
const ADDITIONAL: &[(&str, &[&str])] = &[(
    "elb.http.desyncmitigationmode",
    &["monitor", "defensive", "strictest"],
)];

/// Valid AdditionalAttributes values this service cannot honour, with why (refused rather than
/// stored and ignored).
const NOT_SUPPORTED: &[(&str, &str, &str)] = &[
    (
        "elb.http.desyncmitigationmode",
        "monitor",
        "HTTP listeners are forwarded at L4 by the servos' XDP program, which never reads \
         requests, and the servos' HTTP engine always rejects ambiguous request framing; only \
         the default, defensive, is accepted",
    ),
    (
        "elb.http.desyncmitigationmode",
        "strictest",
        "HTTP listeners are forwarded at L4 by the servos' XDP program, which never reads \
         requests; only the default, defensive, is accepted",
    ),
];

/// At most this many AdditionalAttributes in one request.
const MAX_ADDITIONAL: usize = 10;

pub fn write_attributes(w: &mut XmlWriter, a: &Attributes) {
    w.elem("LoadBalancerAttributes", |w| {
        w.elem("CrossZoneLoadBalancing", |w| {
            w.boolean("Enabled", a.servo.cross_zone_load_balancing.enabled)
        });
        // As AWS: a disabled access log is `{Enabled: false}` alone; the bucket, interval and
        // prefix are shown while it is enabled.
        w.elem("AccessLog", |w| {
            w.boolean("Enabled", a.access_log.enabled);
            if a.access_log.enabled {
                w.opt_text("S3BucketName", a.access_log.s3_bucket_name.as_deref());
                w.num("EmitInterval", a.access_log.emit_interval);
                w.opt_text("S3BucketPrefix", a.access_log.s3_bucket_prefix.as_deref());
            }
        });
        w.elem("ConnectionDraining", |w| {
            w.boolean("Enabled", a.servo.connection_draining.enabled);
            w.num("Timeout", a.servo.connection_draining.timeout);
        });
        w.elem("ConnectionSettings", |w| {
            w.num("IdleTimeout", a.servo.connection_settings.idle_timeout)
        });
        w.list("AdditionalAttributes", &a.additional, |w, (k, v)| {
            w.text("Key", k);
            w.text("Value", v);
        });
    });
}

pub async fn describe(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let name = ctx.lb_name()?;
    let lb = ctx
        .state
        .store()
        .get_lb(&ctx.key(name))
        .await?
        .ok_or_else(|| ApiError::lb_not_found(name))?;
    Ok(ctx.respond(|w| write_attributes(w, &lb.attributes)))
}

/// Access logs need somewhere to go: control's S3-compatible endpoint, and a bucket that
/// exists there (AWS and Eucalyptus refuse a missing bucket when the attribute is set, rather
/// than losing the logs later).
async fn check_bucket(ctx: &Ctx<'_>, bucket: &str) -> Result<(), ApiError> {
    let Some(s3) = ctx.state.s3() else {
        return Err(ApiError::invalid_config(
            "Access logs cannot be enabled: this service has no S3-compatible endpoint to \
             deliver them to (its administrator must start elb-control with --s3-endpoint)",
        ));
    };
    match s3.check_bucket(bucket).await {
        Ok(()) => Ok(()),
        Err(elb_s3::S3Error::NoSuchBucket { .. }) => Err(ApiError::invalid_config(format!(
            "S3Bucket: {bucket} does not exist"
        ))),
        Err(e) => {
            tracing::warn!(error = %e, bucket, "cannot check an access log bucket");
            Err(ApiError::new(
                ErrorCode::ServiceUnavailable,
                format!(
                    "The S3-compatible endpoint could not be asked whether bucket {bucket} \
                     exists; retry later"
                ),
            ))
        }
    }
}

pub async fn modify(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let name = ctx.lb_name()?;
    let p = ctx.params;
    let given: Vec<&str> = p.keys_with_prefix(PREFIX).collect();
    if given.is_empty() {
        return Err(ApiError::missing("LoadBalancerAttributes"));
    }
    for key in &given {
        let field = &key[PREFIX.len()..];
        if !KNOWN.contains(&field)
            && !field.starts_with("AdditionalAttributes.")
            && field != "AdditionalAttributes"
        {
            return Err(ApiError::new(
                ErrorCode::LoadBalancerAttributeNotFound,
                format!(
                    "The specified load balancer attribute does not exist: {}",
                    printable(field)
                ),
            ));
        }
    }
    let get = |f: &str| p.get(&format!("{PREFIX}{f}"));
    let boolean = |f: &str| p.boolean(&format!("{PREFIX}{f}"));
    let int = |f: &str, min, max| p.int(&format!("{PREFIX}{f}"), min, max);
    let cross_zone = boolean("CrossZoneLoadBalancing.Enabled")?;
    let log_enabled = boolean("AccessLog.Enabled")?;
    let bucket = get("AccessLog.S3BucketName").map(str::to_string);
    if let Some(b) = bucket
        .as_deref()
        .filter(|b| !b.is_empty() && !elb_contract::bucket_name_ok(b))
    {
        return Err(ApiError::validation(format!(
            "S3BucketName '{}' is not a valid bucket name",
            printable(b)
        )));
    }
    let interval = int("AccessLog.EmitInterval", 5, 60)?;
    if interval.is_some_and(|i| {
        !elb_contract::EMIT_INTERVALS
            .iter()
            .any(|e| i64::from(*e) == i)
    }) {
        return Err(ApiError::validation(
            "AccessLog EmitInterval must be 5 or 60 (minutes)",
        ));
    }
    let prefix = get("AccessLog.S3BucketPrefix").map(str::to_string);
    if let Some(pre) = &prefix {
        validate::free_text("S3BucketPrefix", pre, elb_contract::MAX_PREFIX_LEN)?;
    }
    let draining = boolean("ConnectionDraining.Enabled")?;
    // Parsed as any number: the ranges are the contract's, checked on the result.
    let draining_timeout = int("ConnectionDraining.Timeout", 0, i64::from(u32::MAX))?;
    let idle = int("ConnectionSettings.IdleTimeout", 0, i64::from(u32::MAX))?;
    let additional = p
        .struct_list(&format!("{PREFIX}AdditionalAttributes"), &["Key", "Value"])?
        .unwrap_or_default();
    if additional.len() > MAX_ADDITIONAL {
        return Err(ApiError::validation(format!(
            "At most {MAX_ADDITIONAL} AdditionalAttributes are allowed"
        )));
    }
    let mut extra = Vec::new();
    for m in &additional {
        let key = m
            .get("Key")
            .ok_or_else(|| ApiError::missing("AdditionalAttributes.member.N.Key"))?;
        let value = m
            .get("Value")
            .ok_or_else(|| ApiError::missing("AdditionalAttributes.member.N.Value"))?;
        validate::additional_attribute_text("Key", key)?;
        validate::additional_attribute_text("Value", value)?;
        let Some((_, allowed)) = ADDITIONAL.iter().find(|(k, _)| k == key) else {
            return Err(ApiError::new(
                ErrorCode::LoadBalancerAttributeNotFound,
                format!("The specified load balancer attribute does not exist: {key}"),
            ));
        };
        if !allowed.contains(&value.as_str()) {
            return Err(ApiError::validation(format!(
                "{key} must be one of {}",
                allowed.join(", ")
            )));
        }
        if let Some((_, _, why)) = NOT_SUPPORTED
            .iter()
            .find(|(k, v, _)| k == key && v == value)
        {
            return Err(ApiError::invalid_config(format!(
                "{key}={value} is not supported by this service: {why}"
            )));
        }
        extra.push((key.clone(), value.clone()));
    }

    let touches_log = given
        .iter()
        .any(|k| k.starts_with("LoadBalancerAttributes.AccessLog."));
    let change = move |lb: &mut LoadBalancer| -> Result<Attributes, ApiError> {
        let a = &mut lb.attributes;
        let to_u32 = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
        if let Some(v) = cross_zone {
            a.servo.cross_zone_load_balancing.enabled = v;
        }
        if let Some(b) = bucket {
            a.access_log.s3_bucket_name = Some(b).filter(|b| !b.is_empty());
        }
        if let Some(pre) = prefix {
            a.access_log.s3_bucket_prefix = Some(pre).filter(|p| !p.is_empty());
        }
        if let Some(i) = interval {
            a.access_log.emit_interval = to_u32(i);
        }
        if let Some(v) = log_enabled {
            a.access_log.enabled = v;
        }
        if a.access_log.enabled && a.access_log.s3_bucket_name.is_none() {
            return Err(ApiError::invalid_config("Access logs need an S3BucketName"));
        }
        if let Some(v) = draining {
            a.servo.connection_draining.enabled = v;
        }
        if let Some(t) = draining_timeout {
            a.servo.connection_draining.timeout = to_u32(t);
        }
        if let Some(t) = idle {
            a.servo.connection_settings.idle_timeout = to_u32(t);
        }
        for (k, v) in &extra {
            match a.additional.iter_mut().find(|(key, _)| key == k) {
                Some(entry) => entry.1.clone_from(v),
                None => a.additional.push((k.clone(), v.clone())),
            }
        }
        Ok(lb.attributes.clone())
    };
    // An access log destination is checked before anything is stored: first the rules on the
    // result (cheap, and what the client must fix first), then the bucket.
    let mut preview = ctx
        .state
        .store()
        .get_lb(&ctx.key(name))
        .await?
        .ok_or_else(|| ApiError::lb_not_found(name))?;
    let after = change.clone()(&mut preview)?;
    validate::check_rules(&preview)?;
    if touches_log && after.access_log.enabled {
        let bucket = after.access_log.s3_bucket_name.clone().unwrap_or_default();
        check_bucket(ctx, &bucket).await?;
    }
    let attrs = ctx.update_lb(name, change).await?;
    Ok(ctx.respond(|w| {
        w.text("LoadBalancerName", name);
        write_attributes(w, &attrs);
    }))
}

//! AddTags, RemoveTags, DescribeTags.

use super::Ctx;
use super::lbs::too_many_tags;
use crate::error::ApiError;
use crate::model::Tag;
use crate::quota::QuotaName;
use crate::validate;

/// The LoadBalancerNames of AddTags/RemoveTags: exactly one.
fn single_name(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let names = ctx
        .params
        .string_list("LoadBalancerNames")?
        .ok_or_else(|| ApiError::missing("LoadBalancerNames"))?;
    let [name] = names.as_slice() else {
        return Err(ApiError::validation(
            "Specify exactly one load balancer in LoadBalancerNames",
        ));
    };
    validate::lb_name_lookup(name)?;
    ctx.authorize([name.as_str()])?;
    Ok(name.clone())
}

pub async fn add(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let name = single_name(ctx)?;
    let members = ctx
        .params
        .struct_list("Tags", &["Key", "Value"])?
        .ok_or_else(|| ApiError::missing("Tags"))?;
    if members.is_empty() {
        return Err(ApiError::validation("Tags cannot be empty"));
    }
    let tags = validate::tags(&members)?;
    let limit = ctx.quotas().await?.max_usize(QuotaName::Tags);
    ctx.update_lb(&name, |lb| {
        for Tag { key, value } in tags {
            match lb.tags.iter_mut().find(|t| t.key == key) {
                Some(t) => t.value = value,
                None => lb.tags.push(Tag { key, value }),
            }
        }
        if lb.tags.len() > limit {
            return Err(too_many_tags(i64::try_from(limit).unwrap_or(i64::MAX)));
        }
        Ok(())
    })
    .await?;
    Ok(ctx.respond(|_| {}))
}

pub async fn remove(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let name = single_name(ctx)?;
    let members = ctx
        .params
        .struct_list("Tags", &["Key"])?
        .ok_or_else(|| ApiError::missing("Tags"))?;
    let mut keys = Vec::with_capacity(members.len());
    for m in members {
        let key = m
            .get("Key")
            .ok_or_else(|| ApiError::missing("Tags.member.N.Key"))?;
        validate::free_text("Tags.member.N.Key", key, 128)?;
        keys.push(key.clone());
    }
    ctx.update_lb(&name, |lb| {
        lb.tags.retain(|t| !keys.contains(&t.key));
        Ok(())
    })
    .await?;
    Ok(ctx.respond(|_| {}))
}

pub async fn describe(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let names = ctx
        .params
        .string_list("LoadBalancerNames")?
        .ok_or_else(|| ApiError::missing("LoadBalancerNames"))?;
    if names.is_empty() || names.len() > 20 {
        return Err(ApiError::validation(
            "LoadBalancerNames must name 1 to 20 load balancers",
        ));
    }
    for n in &names {
        validate::lb_name_lookup(n)?;
    }
    ctx.authorize(names.iter().map(String::as_str))?;
    let mut found = Vec::with_capacity(names.len());
    for n in &names {
        let lb = ctx
            .state
            .store()
            .get_lb(&ctx.key(n))
            .await?
            .ok_or_else(|| ApiError::lb_not_found(n))?;
        if !found.iter().any(|(name, _): &(String, Vec<Tag>)| name == n) {
            found.push((n.clone(), lb.tags));
        }
    }
    Ok(ctx.respond(|w| {
        w.list("TagDescriptions", &found, |w, (name, tags)| {
            w.text("LoadBalancerName", name);
            w.list("Tags", tags, |w, t| {
                w.text("Key", &t.key);
                w.text("Value", &t.value);
            });
        });
    }))
}

//! DescribeAccountLimits.

use super::{Ctx, page_size};
use crate::error::ApiError;
use crate::quota::QuotaName;

pub async fn describe(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    ctx.authorize_any()?;
    let quotas = ctx.quotas().await?;
    let limit = page_size(ctx.params)?;
    let marker = ctx.params.get("Marker").filter(|m| !m.is_empty());
    // The marker is the name of the last limit returned; limits are listed in a fixed order.
    let start = match marker {
        Some(m) => match QuotaName::ALL.iter().position(|q| q.as_str() == m) {
            Some(i) => i + 1,
            None => return Err(ApiError::validation("Invalid Marker")),
        },
        None => 0,
    };
    let rest = &QuotaName::ALL[start.min(QuotaName::ALL.len())..];
    let page = &rest[..limit.min(rest.len())];
    let next = (page.len() < rest.len())
        .then(|| page.last().map(|q| q.as_str()))
        .flatten();
    Ok(ctx.respond(|w| {
        w.list("Limits", page, |w, q| {
            w.text("Name", q.as_str());
            w.text("Max", &quotas.get(*q).to_string());
        });
        w.opt_text("NextMarker", next);
    }))
}

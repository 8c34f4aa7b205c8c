//! Load balancers as administrators look them up: across accounts and regions, by name and
//! account, or by DNS name (as Eucalyptus' administrators can).

use crate::model::LoadBalancer;

use super::lb::load;
use super::{Store, StoreError};

/// Which load balancers an administrator means.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LbFilter {
    pub account_id: Option<String>,
    pub region: Option<String>,
    pub name: Option<String>,
    /// Matched without regard to case, a trailing dot allowed.
    pub dns_name: Option<String>,
}

impl Store {
    /// The load balancers `filter` selects, in (account, name) order.
    pub async fn find_lbs(&self, filter: &LbFilter) -> Result<Vec<LoadBalancer>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let dns = filter
            .dns_name
            .as_deref()
            .map(|d| d.trim_end_matches('.').to_ascii_lowercase());
        // Empty binds mean "any": one statement serves every combination.
        let where_sql = "($1 = '' OR account_id = $1) AND ($2 = '' OR region = $2)
             AND ($3 = '' OR name = $3) AND ($4 = '' OR dns_name = $4)";
        load(
            &mut conn,
            where_sql,
            &[
                filter.account_id.as_deref().unwrap_or(""),
                filter.region.as_deref().unwrap_or(""),
                filter.name.as_deref().unwrap_or(""),
                dns.as_deref().unwrap_or(""),
            ],
            None,
        )
        .await
    }
}

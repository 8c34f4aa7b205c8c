//! Keeps the security groups that load balancers use in line with the cloud. Every `every`
//! (`--cloud-refresh-ms`, default 500 ms) the groups in use are read again, past the cache,
//! and the rows that differ are rewritten in one commit, which wakes the servos' long-polls:
//! a rule changed in the cloud (`AuthorizeSecurityGroupIngress`...) is enforced by the servos
//! within about `every` plus a round trip.
//!
//! When the cloud cannot be reached the rows stay as they are (the servos keep enforcing the
//! rules last read: neither opening nor closing anything on a guess) and the failure is logged
//! once, then again when it ends. A group the cloud no longer has admits no one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::CloudError;
use super::ec2::Ec2Cloud;
use crate::store::{GroupOrigin, SecurityGroupRecord, Store, StoreError};

#[derive(Debug, thiserror::Error)]
enum RefreshError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cloud(#[from] CloudError),
}

/// One pass: returns the ids of the groups whose rules changed.
async fn pass(store: &Store, ec2: &Ec2Cloud) -> Result<Vec<String>, RefreshError> {
    let in_use = store.security_groups_in_use().await?;
    let mut by_region: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (group, region) in in_use {
        let ids = by_region.entry(region).or_default();
        if !ids.contains(&group) {
            ids.push(group);
        }
    }
    let mut now: Vec<SecurityGroupRecord> = Vec::new();
    for (region, ids) in &by_region {
        let found = ec2.security_groups(region, ids, true).await?;
        for id in ids {
            match found.iter().find(|g| g.id == *id) {
                Some(g) => now.push(g.clone()),
                None => {
                    // Gone from the cloud: nothing admits through it any more.
                    let known = store
                        .security_groups_by_id(std::slice::from_ref(id))
                        .await?;
                    let mut gone = known.into_iter().next().unwrap_or(SecurityGroupRecord {
                        id: id.clone(),
                        name: String::new(),
                        description: String::new(),
                        vpc_id: None,
                        account_id: None,
                        ingress: Vec::new(),
                        origin: GroupOrigin::Cloud,
                    });
                    if gone.origin == GroupOrigin::Cloud && !gone.ingress.is_empty() {
                        tracing::warn!(group = %id, "security group no longer exists in the cloud: it admits no one");
                        gone.ingress.clear();
                        now.push(gone);
                    }
                }
            }
        }
    }
    Ok(store.sync_cloud_security_groups(&now).await?)
}

/// Runs passes every `every` until `shutdown` turns true.
pub async fn run(
    store: Store,
    ec2: Arc<Ec2Cloud>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = crate::server::until_true(&mut shutdown) => return,
        }
        match pass(&store, &ec2).await {
            Ok(changed) => {
                if failing {
                    tracing::info!("security groups are read from the cloud again");
                    failing = false;
                }
                if !changed.is_empty() {
                    tracing::info!(groups = ?changed, "security group rules changed in the cloud; servos updated");
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot refresh security groups from the cloud; servos keep the rules read last");
                }
                failing = true;
            }
        }
    }
}

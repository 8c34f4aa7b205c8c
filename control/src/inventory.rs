//! What load balancers are placed in and forward to, as the API asks for it: zones, subnets
//! and VPCs, security groups and instances. Either the built-in inventory (what
//! administrators added to the store with `elb-control admin`) or an EC2-compatible cloud
//! (`--ec2-endpoint`, [`crate::cloud::ec2`]), which then answers all of it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::cloud::CloudError;
use crate::cloud::ec2::Ec2Cloud;
use crate::store::{InventoryInstance, SecurityGroupRecord, Store, StoreError, Subnet, Zone};

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cloud(#[from] CloudError),
}

/// The default VPC of a region: where load balancers created with AvailabilityZones live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultVpc {
    pub vpc_id: String,
    /// Its default subnet of each zone.
    pub subnets: Vec<Subnet>,
}

/// The inventory in use.
#[derive(Debug, Clone)]
pub enum Inventory {
    BuiltIn(Store),
    Cloud(Arc<Ec2Cloud>),
}

impl Inventory {
    /// Whether the inventory is an EC2-compatible cloud.
    pub fn is_cloud(&self) -> bool {
        matches!(self, Inventory::Cloud(_))
    }

    /// Resolves `ids` in `region`; ids the inventory does not know (or that an account may not
    /// use) are absent from the map.
    pub async fn resolve(
        &self,
        region: &str,
        ids: &[String],
        account_id: &str,
    ) -> Result<HashMap<String, InventoryInstance>, InventoryError> {
        let found = match self {
            Inventory::BuiltIn(store) => store
                .instances_by_id(ids)
                .await?
                .into_iter()
                .filter(|i| owned_by(i.account_id.as_deref(), account_id))
                .collect::<Vec<_>>(),
            Inventory::Cloud(ec2) => ec2.instances(region, ids).await?,
        };
        Ok(found.into_iter().map(|i| (i.id.clone(), i)).collect())
    }

    /// The zones of `region`.
    pub async fn zones(&self, region: &str) -> Result<Vec<Zone>, InventoryError> {
        Ok(match self {
            Inventory::BuiltIn(store) => store
                .list_zones()
                .await?
                .into_iter()
                .filter(|z| z.region == region)
                .collect(),
            Inventory::Cloud(ec2) => ec2.zones(region).await?,
        })
    }

    /// The subnets among `ids` that exist in `region` (in the order of `ids`).
    pub async fn subnets(
        &self,
        region: &str,
        ids: &[String],
    ) -> Result<Vec<Subnet>, InventoryError> {
        let found: Vec<Subnet> = match self {
            Inventory::BuiltIn(store) => {
                let zones = self.zones(region).await?;
                store
                    .list_subnets()
                    .await?
                    .into_iter()
                    .filter(|s| zones.iter().any(|z| z.name == s.zone))
                    .collect()
            }
            Inventory::Cloud(ec2) => ec2
                .subnets(region, ids)
                .await?
                .into_iter()
                .map(|s| s.subnet)
                .collect(),
        };
        Ok(ids
            .iter()
            .filter_map(|id| found.iter().find(|s| s.id == *id).cloned())
            .collect())
    }

    /// The default VPC of `region`: the cloud's (AWS today: load balancers created with
    /// AvailabilityZones live there); the built-in inventory has none.
    pub async fn default_vpc(&self, region: &str) -> Result<Option<DefaultVpc>, InventoryError> {
        match self {
            Inventory::BuiltIn(_) => Ok(None),
            Inventory::Cloud(ec2) => {
                Ok(ec2
                    .default_vpc(region)
                    .await?
                    .map(|(vpc_id, subnets)| DefaultVpc {
                        vpc_id,
                        subnets: subnets.into_iter().map(|s| s.subnet).collect(),
                    }))
            }
        }
    }

    /// The security groups among `ids` that exist in `region` and `account_id` may use (in
    /// the order of `ids`).
    pub async fn security_groups(
        &self,
        region: &str,
        ids: &[String],
        account_id: &str,
    ) -> Result<Vec<SecurityGroupRecord>, InventoryError> {
        let found = match self {
            Inventory::BuiltIn(store) => store
                .security_groups_by_id(ids)
                .await?
                .into_iter()
                .filter(|g| owned_by(g.account_id.as_deref(), account_id))
                .collect(),
            Inventory::Cloud(ec2) => ec2.security_groups(region, ids, false).await?,
        };
        Ok(ids
            .iter()
            .filter_map(|id| found.iter().find(|g| g.id == *id).cloned())
            .collect())
    }

    /// The `default` group of `vpc` (the cloud's); the built-in inventory has none.
    pub async fn default_security_group(
        &self,
        region: &str,
        vpc: &str,
    ) -> Result<Option<SecurityGroupRecord>, InventoryError> {
        match self {
            Inventory::BuiltIn(_) => Ok(None),
            Inventory::Cloud(ec2) => Ok(ec2.default_security_group(region, vpc).await?),
        }
    }
}

/// Built-in entries with an owner belong to that account only.
fn owned_by(owner: Option<&str>, account_id: &str) -> bool {
    owner.is_none_or(|o| o == account_id)
}

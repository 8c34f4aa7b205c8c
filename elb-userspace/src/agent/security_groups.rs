//! Security groups on the servo: each load balancer's ingress rules become per-listener allow
//! lists in the `sg_allow` LPM trie, which the XDP program consults for new flows on listeners
//! flagged [`LISTENER_F_SECURITY_GROUPS`]. Which blocks a listener admits is the contract's rule
//! ([`LoadBalancer::allowed_sources`]); this module only writes it down.
//!
//! Ordering keeps every change safe for the clients it does not concern: entries a new
//! configuration needs are written before the reconciler writes the listeners (a listener
//! that gains security groups never denies an admitted client for lack of its entry), and
//! entries it no longer needs are removed after (a listener that loses them never denies
//! everyone in between). A rule change therefore passes through the union of old and new.

use std::{collections::BTreeSet, net::Ipv4Addr, path::Path};

use aya::maps::{
    Map, MapData, MapError,
    lpm_trie::{Key, LpmTrie},
};
use elb_common::{
    map_names,
    sg::{LISTENER_F_SECURITY_GROUPS, SG_ALLOW, SG_ALLOW_ENTRIES, SG_FIXED_BITS, SgSource},
};
use elb_contract::{LoadBalancer, security_group::Ipv4Cidr};

use crate::{config::ServoConfig, dataplane::DataplaneError};

/// One allow-list entry: a listener (`vip:port`) and a client block it admits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AllowEntry {
    /// The listener's VIP.
    pub vip: Ipv4Addr,
    /// The listener's port.
    pub port: u16,
    /// The admitted block.
    pub block: Ipv4Cidr,
}

impl AllowEntry {
    fn key(&self) -> Key<SgSource> {
        Key::new(
            SgSource::prefix_len(self.block.prefix_len()),
            SgSource::new(self.vip.octets(), self.port, self.block.network().octets()),
        )
    }

    fn from_key(key: &Key<SgSource>) -> Option<Self> {
        let data = key.data();
        let len = key.prefix_len().checked_sub(SG_FIXED_BITS)?;
        Some(Self {
            vip: Ipv4Addr::from(data.vip),
            port: data.port,
            block: Ipv4Cidr::new(Ipv4Addr::from(data.src), u8::try_from(len).ok()?)?,
        })
    }
}

/// The listener flags security groups call for: [`LISTENER_F_SECURITY_GROUPS`] when `lb` has
/// security groups (even without rules: then nobody is admitted), none otherwise.
pub fn listener_flags(lb: &LoadBalancer) -> u32 {
    if lb.security_groups.is_some() {
        LISTENER_F_SECURITY_GROUPS
    } else {
        0
    }
}

/// The entries `lb` needs: one per VIP, listener and admitted block.
pub fn entries(lb: &LoadBalancer) -> Vec<AllowEntry> {
    let mut out = Vec::new();
    for l in &lb.listeners {
        let Some(blocks) = lb.allowed_sources(l.load_balancer_port) else {
            continue;
        };
        for vip in &lb.vips {
            out.extend(blocks.iter().map(|block| AllowEntry {
                vip: *vip,
                port: l.load_balancer_port,
                block: *block,
            }));
        }
    }
    out
}

/// Every entry the served load balancers need.
pub fn wanted(cfg: &ServoConfig) -> BTreeSet<AllowEntry> {
    cfg.load_balancers.iter().flat_map(entries).collect()
}

/// The most entries the servo's allow-list map holds (admission refuses what would not fit).
pub const CAPACITY: usize = SG_ALLOW_ENTRIES as usize;

/// The pinned `sg_allow` trie and what it holds.
pub struct AllowLists {
    trie: LpmTrie<MapData, SgSource, u32>,
    written: BTreeSet<AllowEntry>,
}

impl std::fmt::Debug for AllowLists {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AllowLists")
            .field("entries", &self.written.len())
            .finish_non_exhaustive()
    }
}

fn map_err(op: &'static str) -> impl FnOnce(MapError) -> DataplaneError {
    move |source| DataplaneError::Map {
        map: map_names::SG_ALLOW,
        op,
        source,
    }
}

impl AllowLists {
    /// Opens the pinned trie under `pin_root` and reads what an earlier agent left in it.
    pub fn open(pin_root: &Path) -> Result<Self, DataplaneError> {
        let path = pin_root.join(map_names::SG_ALLOW);
        let data = MapData::from_pin(&path).map_err(|source| DataplaneError::OpenPin {
            path: path.clone(),
            source,
        })?;
        let map =
            Map::from_map_data(data).map_err(|source| DataplaneError::OpenPin { path, source })?;
        let trie: LpmTrie<MapData, SgSource, u32> = map.try_into().map_err(map_err("open"))?;
        let mut written = BTreeSet::new();
        for key in trie.keys() {
            if let Some(entry) = AllowEntry::from_key(&key.map_err(map_err("keys"))?) {
                written.insert(entry);
            }
        }
        Ok(Self { trie, written })
    }

    /// What the trie holds.
    pub fn written(&self) -> &BTreeSet<AllowEntry> {
        &self.written
    }

    /// Writes the entries of `wanted` the trie lacks; returns how many.
    pub fn add_missing(&mut self, wanted: &BTreeSet<AllowEntry>) -> Result<usize, DataplaneError> {
        let mut n = 0;
        for entry in wanted.difference(&self.written.clone()) {
            self.trie
                .insert(&entry.key(), SG_ALLOW, 0)
                .map_err(map_err("insert"))?;
            self.written.insert(*entry);
            n += 1;
        }
        Ok(n)
    }

    /// Removes the entries `wanted` no longer has; returns how many.
    pub fn remove_stale(&mut self, wanted: &BTreeSet<AllowEntry>) -> Result<usize, DataplaneError> {
        let stale: Vec<AllowEntry> = self.written.difference(wanted).copied().collect();
        for entry in &stale {
            match self.trie.remove(&entry.key()) {
                Ok(()) => {}
                Err(MapError::KeyNotFound) => {}
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(map_err("remove")(e)),
            }
            self.written.remove(entry);
        }
        Ok(stale.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lb(groups: serde_json::Value) -> LoadBalancer {
        let mut v = serde_json::json!({
            "LoadBalancerName": "web",
            "Vips": ["198.18.0.10", "198.18.0.11"],
            "Listeners": [
                {"Protocol": "TCP", "LoadBalancerPort": 80, "InstancePort": 80},
                {"Protocol": "TCP", "LoadBalancerPort": 8443, "InstancePort": 443},
            ],
        });
        if !groups.is_null() {
            v["SecurityGroups"] = groups;
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn entries_per_vip_and_listener() {
        let open = lb(serde_json::Value::Null);
        assert_eq!(listener_flags(&open), 0);
        assert!(entries(&open).is_empty());

        let closed = lb(serde_json::json!([{"GroupId": "sg-1"}]));
        assert_eq!(listener_flags(&closed), LISTENER_F_SECURITY_GROUPS);
        assert!(
            entries(&closed).is_empty(),
            "a group without rules admits no one"
        );

        let web = lb(serde_json::json!([{"GroupId": "sg-1", "Ingress": [
            {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "CidrIp": "198.18.1.0/24"},
            {"IpProtocol": "-1", "CidrIp": "10.0.0.0/8"},
        ]}]));
        let got: Vec<String> = entries(&web)
            .iter()
            .map(|e| format!("{}:{} {}", e.vip, e.port, e.block))
            .collect();
        assert_eq!(
            got,
            [
                "198.18.0.10:80 10.0.0.0/8",
                "198.18.0.10:80 198.18.1.0/24",
                "198.18.0.11:80 10.0.0.0/8",
                "198.18.0.11:80 198.18.1.0/24",
                "198.18.0.10:8443 10.0.0.0/8",
                "198.18.0.11:8443 10.0.0.0/8",
            ]
        );
        for e in entries(&web) {
            assert_eq!(AllowEntry::from_key(&e.key()), Some(e), "keys read back");
        }
    }
}

//! The security groups' cost per new flow, measured inside the per-packet section's rounds:
//! the same new-flow cycle timed again with both cycle listeners flagged
//! `LISTENER_F_SECURITY_GROUPS` and allow lists holding the blocks that admit the cycle's
//! sources among [`OTHER_BLOCKS`] unrelated ones per listener (written by the agent's own
//! code), so every SYN pays the flag test and one LPM trie lookup.
//!
//! A new flow costs over a microsecond with a spread of a few hundred nanoseconds between runs,
//! far more than the check, so the check is also isolated on two paths that differ only by it:
//! a SYN the allow list refuses (conntrack miss, listener hit, check, drop) against the same SYN
//! carrying IP options (conntrack miss, listener hit, drop before the check). Both leave the
//! frame as it is, so every iteration takes the same path.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use anyhow::ensure;
use elb_common::{Listener, ListenerKey, PROTO_TCP, sg::LISTENER_F_SECURITY_GROUPS};
use elb_contract::security_group::Ipv4Cidr;
use elb_userspace::agent::security_groups::{AllowEntry, AllowLists};

use super::per_packet::{CYCLE_VIP_A, CYCLE_VIP_B};
use crate::fixture::{CLIENT_MAC, Fixture};
use crate::packet::{TCP_SYN, Tcp};

/// Unrelated /24 blocks in each cycle listener's allow list besides the admitting one.
pub const OTHER_BLOCKS: u32 = 32;

/// The cycle's listeners: (VIP, port, id), as `per_packet::prepare` makes them.
const CYCLE: [(Ipv4Addr, u16, u32); 2] = [(CYCLE_VIP_A, 80, 2), (CYCLE_VIP_B, 81, 3)];

/// Writes the allow lists (once; idempotent) and sets (`on`) or clears the listeners' flag.
pub fn check_new_flows(fx: &Fixture, on: bool) -> anyhow::Result<()> {
    let mut wanted = BTreeSet::new();
    for (vip, port, _) in CYCLE {
        // The cycle's sources: clients and SNAT addresses of 198.18.0.0/24 towards A, of
        // 198.19.0.0/24 towards B.
        let admitting = if vip == CYCLE_VIP_A {
            "198.18.0.0/24"
        } else {
            "198.19.0.0/24"
        };
        let blocks = (0..OTHER_BLOCKS)
            .map(|i| Ipv4Cidr::new(Ipv4Addr::new(10, (i / 200) as u8, (i % 200) as u8, 0), 24))
            .chain([admitting.parse().ok()]);
        for block in blocks {
            let block = block.ok_or_else(|| anyhow::anyhow!("bad block"))?;
            wanted.insert(AllowEntry { vip, port, block });
        }
    }
    let mut lists = AllowLists::open(&fx.pin_root)?;
    lists.add_missing(&wanted)?;
    ensure!(lists.written().len() == wanted.len(), "allow lists written");
    let mut maps = fx.maps()?;
    for (vip, port, id) in CYCLE {
        maps.upsert_listener(
            ListenerKey {
                vip: vip.octets(),
                port,
                proto: PROTO_TCP,
                _pad: 0,
            },
            Listener {
                id,
                flags: if on { LISTENER_F_SECURITY_GROUPS } else { 0 },
                idle_timeout_s: 60,
                _pad: 0,
            },
        )?;
    }
    Ok(())
}

/// A SYN to the first cycle listener from a source its allow list refuses, and the same SYN
/// with four bytes of IP options (NOPs), which is dropped before the check.
pub fn refusal_frames() -> (Vec<u8>, Vec<u8>) {
    let mut syn = Tcp::new(
        (Ipv4Addr::new(198, 18, 5, 9), 40000),
        (CYCLE_VIP_A, 80),
        TCP_SYN,
    );
    syn.src_mac = CLIENT_MAC;
    let denied = syn.frame();
    syn.ip_options = vec![1, 1, 1, 1];
    (denied, syn.frame())
}

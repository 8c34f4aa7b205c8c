//! The security groups' cost per new flow, measured inside the per-packet section's rounds:
//! the new-flow ring (SYN mode, every iteration a flow never seen before, sources from the
//! spoofed range) timed again with the listener flagged `LISTENER_F_SECURITY_GROUPS` and an
//! allow list (written by the agent's own code) holding the block that admits those sources
//! among [`OTHER_BLOCKS`] unrelated ones, so every SYN pays the flag test and one LPM trie
//! lookup; and a SYN the allow list refuses (the whole cost of turning a client away).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use anyhow::ensure;
use elb_common::{Listener, ListenerKey, PROTO_TCP, SPOOF_BASE, sg::LISTENER_F_SECURITY_GROUPS};
use elb_contract::security_group::Ipv4Cidr;
use elb_userspace::agent::security_groups::{AllowEntry, AllowLists};

use crate::fixture::{CLIENT_MAC, Fixture, VIP};
use crate::packet::{TCP_SYN, Tcp};

/// Unrelated /24 blocks in the listener's allow list besides the admitting one.
pub const OTHER_BLOCKS: u32 = 32;

/// The fixture's listener `VIP:80` (id 0).
const PORT: u16 = 80;

/// Writes the allow list (once; idempotent) and sets (`on`) or clears the listener's flag.
pub fn check_new_flows(fx: &Fixture, on: bool) -> anyhow::Result<()> {
    let admitting = Ipv4Cidr::new(Ipv4Addr::from(SPOOF_BASE), 17)
        .ok_or_else(|| anyhow::anyhow!("bad block"))?;
    let mut wanted = BTreeSet::new();
    for i in 0..OTHER_BLOCKS {
        let block = Ipv4Cidr::new(Ipv4Addr::new(10, (i / 200) as u8, (i % 200) as u8, 0), 24)
            .ok_or_else(|| anyhow::anyhow!("bad block"))?;
        wanted.insert(AllowEntry {
            vip: VIP,
            port: PORT,
            block,
        });
    }
    wanted.insert(AllowEntry {
        vip: VIP,
        port: PORT,
        block: admitting,
    });
    let mut lists = AllowLists::open(&fx.pin_root)?;
    lists.add_missing(&wanted)?;
    ensure!(lists.written().len() == wanted.len(), "allow lists written");
    fx.maps()?.upsert_listener(
        ListenerKey {
            vip: VIP.octets(),
            port: PORT,
            proto: PROTO_TCP,
            _pad: 0,
        },
        Listener {
            id: 0,
            flags: if on { LISTENER_F_SECURITY_GROUPS } else { 0 },
            idle_timeout_s: 60,
            _pad: 0,
        },
    )?;
    Ok(())
}

/// A SYN to the listener from a source its allow list refuses.
pub fn denied_frame() -> Vec<u8> {
    let mut syn = Tcp::new((Ipv4Addr::new(198, 18, 5, 9), 40000), (VIP, PORT), TCP_SYN);
    syn.src_mac = CLIENT_MAC;
    syn.frame()
}

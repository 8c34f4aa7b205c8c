//! `BPF_PROG_TEST_RUN` fixtures: run the real program on a crafted frame and get the verdict and
//! the frame it produced, in a namespace where the FIB lookups it does resolve deterministically
//! (permanent neighbour entries with known MAC addresses).
//!
//! ```text
//!  fixture ns:  cl 198.18.0.1/24 (VIP)    neighbours 198.18.0.2-.20 -> 02:00:00:00:00:c1
//!               bk 198.19.0.1/24 (SNAT)   neighbours 198.19.0.11-.13 -> 02:00:00:00:00:b1..b3
//!                                                    198.19.0.254    -> 02:00:00:00:00:fe (router)
//! ```

use std::{net::Ipv4Addr, path::PathBuf};

use anyhow::Context as _;
use aya::programs::{TestRun as _, TestRunOptions};
use elb_common::{
    BACKEND_ACTIVE, Backend, Config, Counters, FLOW_F_CONFIRMED, FLOW_F_REPLY, FlowKey, FlowSlot,
    FlowWord, Listener, ListenerKey, NatTuple, PROTO_TCP,
};
use elb_userspace::dataplane::{Dataplane, LoadOptions, Maps};

use crate::netns::{Netns, remove_pin_root, unique, veth};

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const SNAT: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 254);
pub const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xc1];
pub const ROUTER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];

/// MAC of backend `i` (0-based) in the fixture namespace.
pub fn backend_mac(i: usize) -> [u8; 6] {
    [2, 0, 0, 0, 0, 0xb1 + i as u8]
}

/// Address of backend `i` (0-based).
pub fn backend(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, 0, 11 + i as u8)
}

/// Client address `i`.
pub fn client(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 2 + i)
}

/// The result of one run.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub action: u32,
    pub frame: Vec<u8>,
}

/// A namespace with the program loaded (not attached) and three backends configured behind
/// listener `VIP:80` (id 0, backend ids 0..3).
#[derive(Debug)]
pub struct Fixture {
    dp: Dataplane,
    pub ns: Netns,
    _peer: Netns,
    pub pin_root: PathBuf,
    pub cl: u32,
    pub bk: u32,
    pub cl_mac: [u8; 6],
    pub bk_mac: [u8; 6],
}

impl Fixture {
    /// A fixture with the default conntrack size.
    pub fn new() -> anyhow::Result<Self> {
        Self::with_conntrack(elb_common::DEFAULT_CONNTRACK_ENTRIES)
    }

    /// A fixture whose conntrack holds `entries` entries (two per flow).
    pub fn with_conntrack(entries: u32) -> anyhow::Result<Self> {
        crate::netns::require_root();
        let tag = unique("fx");
        let ns = Netns::new(&format!("{tag}-lb"))?;
        let peer = Netns::new(&format!("{tag}-peer"))?;
        veth(&ns, "cl", &peer, "clp")?;
        veth(&ns, "bk", &peer, "bkp")?;
        ns.ip(&["addr", "add", &format!("{VIP}/24"), "dev", "cl"])?;
        ns.ip(&["addr", "add", &format!("{SNAT}/24"), "dev", "bk"])?;
        for i in 0..19u8 {
            ns.ip(&[
                "neigh",
                "replace",
                &client(i).to_string(),
                "lladdr",
                &mac_str(CLIENT_MAC),
                "dev",
                "cl",
                "nud",
                "permanent",
            ])?;
        }
        for i in 0..3 {
            ns.ip(&[
                "neigh",
                "replace",
                &backend(i).to_string(),
                "lladdr",
                &mac_str(backend_mac(i)),
                "dev",
                "bk",
                "nud",
                "permanent",
            ])?;
        }
        ns.ip(&[
            "neigh",
            "replace",
            &ROUTER.to_string(),
            "lladdr",
            &mac_str(ROUTER_MAC),
            "dev",
            "bk",
            "nud",
            "permanent",
        ])?;
        ns.sysctl("net.ipv4.ip_forward", "1")?;
        let cl = ns.ifindex("cl")?;
        let bk = ns.ifindex("bk")?;
        let root = PathBuf::from(format!("/sys/fs/bpf/{tag}"));
        let dp = Dataplane::load(&LoadOptions {
            pin_root: root.clone(),
            reset: true,
            conntrack_entries: entries,
        })?;
        let fx = Self {
            dp,
            cl_mac: ns.mac("cl")?,
            bk_mac: ns.mac("bk")?,
            ns,
            _peer: peer,
            pin_root: root,
            cl,
            bk,
        };
        let mut maps = fx.maps()?;
        maps.set_config(Config::with_snat_ports(20000, 59999))?;
        maps.set_snat_addrs(bk, &[SNAT])?;
        maps.set_snat_addrs(cl, &[VIP])?;
        maps.add_tx_port(cl, 1500)?;
        maps.add_tx_port(bk, 1500)?;
        for i in 0..3 {
            maps.set_backend(
                i as u32,
                Backend {
                    addr: backend(i).octets(),
                    port: 80,
                    state: BACKEND_ACTIVE,
                    generation: 1,
                    listener_id: 0,
                    ..Backend::default()
                },
            )?;
        }
        maps.replace_backend_set(0, &[0, 1, 2])?;
        maps.upsert_listener(
            ListenerKey {
                vip: VIP.octets(),
                port: 80,
                proto: PROTO_TCP,
                _pad: 0,
            },
            Listener {
                id: 0,
                idle_timeout_s: 60,
                ..Listener::default()
            },
        )?;
        Ok(fx)
    }

    /// The loaded program (for timing runs).
    pub fn dp_program(&self) -> &aya::programs::Xdp {
        self.dp.program().expect("program")
    }

    /// Handles on the fixture's maps.
    pub fn maps(&self) -> anyhow::Result<Maps> {
        Ok(Maps::open(&self.pin_root)?)
    }

    /// Counters summed over CPUs.
    pub fn counters(&self) -> Counters {
        self.maps()
            .and_then(|m| Ok(m.counters()?))
            .expect("reading counters")
    }

    /// Runs the program once on `frame` as if it arrived on interface `ifindex`.
    pub fn run(&self, ifindex: u32, frame: &[u8]) -> anyhow::Result<Outcome> {
        let program = self.dp.program()?;
        self.ns.run(move || {
            let mut out = vec![0u8; frame.len() + 256];
            let ctx = xdp_md(frame.len() as u32, ifindex);
            let mut opts = TestRunOptions::new();
            opts.data_in = Some(frame);
            opts.data_out = Some(&mut out);
            opts.ctx_in = Some(&ctx);
            let result = program.test_run(opts).context("BPF_PROG_TEST_RUN")?;
            out.truncate(result.data_size_out as usize);
            Ok(Outcome {
                action: result.return_value,
                frame: out,
            })
        })
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        remove_pin_root(&self.pin_root);
    }
}

/// Both halves of an established flow from `client` to `vip` (listener 0) given to backend
/// `backend_id` at `backend` through SNAT tuple `snat`, as the program would create them
/// (for benchmarks that prepare flows without sending their SYNs).
pub fn flow_pair(
    client: (Ipv4Addr, u16),
    vip: (Ipv4Addr, u16),
    snat: (Ipv4Addr, u16),
    backend: (Ipv4Addr, u16),
    backend_id: u16,
    ident: u32,
) -> [FlowSlot; 2] {
    let word = |value| FlowWord { ident, value };
    let forward = FlowSlot {
        key: FlowKey {
            src: client.0.octets(),
            dst: vip.0.octets(),
            sport: client.1,
            dport: vip.1,
            proto: PROTO_TCP,
            _pad: [0; 3],
        },
        state: word(FLOW_F_CONFIRMED),
        nat: NatTuple {
            src: snat.0.octets(),
            dst: backend.0.octets(),
            sport: snat.1,
            dport: backend.1,
        },
        backend_id,
        backend_gen: 1,
        seen: word(0),
        acked: word(0),
        xlate: word(0),
        xlate_wscale: word(0),
        ..FlowSlot::EMPTY
    };
    let reverse = FlowSlot {
        key: FlowKey {
            src: backend.0.octets(),
            dst: snat.0.octets(),
            sport: backend.1,
            dport: snat.1,
            proto: PROTO_TCP,
            _pad: [0; 3],
        },
        state: word(FLOW_F_REPLY),
        nat: NatTuple {
            src: vip.0.octets(),
            dst: client.0.octets(),
            sport: vip.1,
            dport: client.1,
        },
        ..forward
    };
    [forward, reverse]
}

/// `struct xdp_md` for `ctx_in`: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
/// egress_ifindex.
pub fn xdp_md(len: u32, ingress_ifindex: u32) -> Vec<u8> {
    [0u32, len, 0, ingress_ifindex, 0, 0]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect()
}

fn mac_str(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

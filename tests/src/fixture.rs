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
        })
        .inspect_err(|_| {
            // The maps were pinned before a program failed to load: nothing else removes them.
            remove_pin_root(&root);
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

    /// Runs the program on each of `frames` in turn, as if they arrived on interface `ifindex`,
    /// from one thread bound to CPU `cpu` (two calls on two CPUs at once race through the
    /// program as packets on two receive queues would). Returns the outcomes.
    pub fn run_on_cpu(
        &self,
        cpu: usize,
        ifindex: u32,
        frames: &[Vec<u8>],
    ) -> anyhow::Result<Vec<Outcome>> {
        let program = self.dp.program()?;
        self.ns.run(move || {
            bind_to_cpu(cpu)?;
            frames
                .iter()
                .map(|frame| run_once(program, ifindex, frame))
                .collect()
        })
    }

    /// Runs the program once on `frame` as if it arrived on interface `ifindex`.
    pub fn run(&self, ifindex: u32, frame: &[u8]) -> anyhow::Result<Outcome> {
        let program = self.dp.program()?;
        self.ns.run(move || run_once(program, ifindex, frame))
    }
}

/// Binds the calling thread to CPU `cpu`.
pub fn bind_to_cpu(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET and sched_setaffinity are given it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            anyhow::bail!("binding to CPU {cpu}: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// One `BPF_PROG_TEST_RUN` of `program` on `frame` (from inside the fixture's namespace).
fn run_once(program: &aya::programs::Xdp, ifindex: u32, frame: &[u8]) -> anyhow::Result<Outcome> {
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
            _pad: 0,
            _pad1: 0,
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
            _pad: 0,
            _pad1: 0,
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

/// Helpers for the fixture tests: frames of a client and a backend of the fixture's listener.
pub mod frames {
    use std::net::Ipv4Addr;

    use elb_common::{FlowKey, PROTO_TCP};

    use super::{CLIENT_MAC, Fixture, SNAT, VIP, XDP_REDIRECT, XDP_TX, backend, client};
    use crate::packet::{self, Parsed, TCP_ACK, TCP_SYN, Tcp};

    /// Client `i`'s ISN in these helpers (`Tcp::new`'s default sequence number).
    pub const CLIENT_ISN: u32 = 1000;
    /// The backends' ISN in these helpers.
    pub const BACKEND_ISN: u32 = 700_000;

    /// A segment from client `i` port `cport` to the VIP, addressed to the fixture's client-side
    /// interface, as a client's router would send it.
    pub fn client_tcp(fx: &Fixture, i: u8, cport: u16, flags: u8) -> Tcp {
        let mut t = Tcp::new((client(i), cport), (VIP, 80), flags);
        t.src_mac = CLIENT_MAC;
        t.dst_mac = fx.cl_mac;
        t
    }

    /// Client `i`'s SYN from port `cport`.
    pub fn syn(fx: &Fixture, i: u8, cport: u16) -> Tcp {
        client_tcp(fx, i, cport, TCP_SYN)
    }

    /// Parses an output frame (checksums verified by full recomputation).
    pub fn parse(frame: &[u8]) -> Parsed {
        packet::parse_tcp(frame).unwrap_or_else(|e| panic!("output frame: {e}"))
    }

    /// Opens a flow from client `i` port `cport`; returns the SYN as forwarded.
    pub fn open(fx: &Fixture, i: u8, cport: u16) -> Parsed {
        let out = fx.run(fx.cl, &syn(fx, i, cport).frame()).unwrap();
        assert_eq!(
            out.action, XDP_REDIRECT,
            "SYN redirected towards the backend side"
        );
        parse(&out.frame)
    }

    /// A segment from the backend of the flow `fwd` (a forwarded client packet) to the servo.
    pub fn backend_tcp(fx: &Fixture, fwd: &Parsed, flags: u8) -> Tcp {
        let mut t = Tcp::new((fwd.dst, fwd.dport), (fwd.src, fwd.sport), flags);
        t.src_mac = fwd.dst_mac;
        t.dst_mac = fx.bk_mac;
        t
    }

    /// The three-way handshake through the program (client SYN, backend SYN-ACK, client ACK),
    /// with ISNs CLIENT_ISN and BACKEND_ISN; returns the forwarded SYN.
    pub fn handshake(fx: &Fixture, i: u8, cport: u16) -> Parsed {
        let fwd = open(fx, i, cport);
        let mut synack = backend_tcp(fx, &fwd, TCP_SYN | TCP_ACK);
        synack.seq = BACKEND_ISN;
        synack.ack = CLIENT_ISN + 1;
        let out = fx.run(fx.bk, &synack.frame()).unwrap();
        assert_eq!(out.action, XDP_REDIRECT, "SYN-ACK towards the client");
        let mut ack = client_tcp(fx, i, cport, TCP_ACK);
        ack.seq = CLIENT_ISN + 1;
        ack.ack = BACKEND_ISN + 1;
        let out = fx.run(fx.cl, &ack.frame()).unwrap();
        assert_eq!(
            out.action, XDP_REDIRECT,
            "handshake ACK towards the backend"
        );
        fwd
    }

    /// A client data segment (`len` bytes) of the established flow from client 0 port `cport`
    /// (opened by [`handshake`]).
    pub fn client_data(fx: &Fixture, cport: u16, len: usize) -> Vec<u8> {
        let mut d = client_tcp(fx, 0, cport, TCP_ACK | packet::TCP_PSH);
        d.seq = CLIENT_ISN + 1;
        d.ack = BACKEND_ISN + 1;
        d.payload = vec![0x42; len];
        d.frame()
    }

    /// The flow key of a tuple.
    pub fn key(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> FlowKey {
        FlowKey {
            src: src.octets(),
            dst: dst.octets(),
            sport,
            dport,
            proto: PROTO_TCP,
            _pad: 0,
            _pad1: 0,
        }
    }

    /// Index of backend address `addr` (0..3).
    pub fn backend_index(addr: Ipv4Addr) -> usize {
        (0..3)
            .find(|&i| backend(i) == addr)
            .unwrap_or_else(|| panic!("{addr} is not a backend"))
    }

    /// Runs `frame` from the client side and expects a forwarded (redirected) packet.
    pub fn forward(fx: &Fixture, frame: &[u8]) -> Parsed {
        let out = fx.run(fx.cl, frame).unwrap();
        assert_eq!(out.action, XDP_REDIRECT);
        parse(&out.frame)
    }

    /// Runs `frame` from the backend side and expects it sent to the client.
    pub fn deliver(fx: &Fixture, frame: &[u8]) -> Parsed {
        let out = fx.run(fx.bk, frame).unwrap();
        assert_eq!(out.action, XDP_REDIRECT);
        parse(&out.frame)
    }

    /// The SNAT address of the fixture (re-exported for the helpers' users).
    pub const SNAT_ADDR: Ipv4Addr = SNAT;
    /// XDP_TX (re-exported).
    pub const TX: u32 = XDP_TX;
}

/// Counters that moved between `before` and `after`, by name, with how much (rx_packets left
/// out).
pub fn moved(before: &Counters, after: &Counters) -> Vec<(&'static str, u64)> {
    Counters::NAMES
        .iter()
        .zip(before.values().iter().zip(after.values()))
        .filter(|(name, (b, a))| **name != "rx_packets" && *b != a)
        .map(|(name, (b, a))| (*name, a - b))
        .collect()
}

//! Per-packet cost of the program with `BPF_PROG_TEST_RUN`, against the floor program (swap
//! MACs, XDP_TX) timed through the same harness in the same interleaved rounds.
//!
//! Every timed iteration is a different flow: [`super::ring`] writes the next frame of a ring of
//! distinct established flows (or a SYN of a flow never seen before) into the buffer and
//! tail-calls the program, so caches are as cold as a ring of that many flows makes them, and
//! each loop's verdict and counters prove that every iteration took the path it is timed for.
//! The floor pays the same harness (frame copy and tail call); ratios are against it.
//!
//! Paths timed: a new flow (SYN to a listener; state, SNAT, rewrite, forward), an established
//! packet and a reply, each both towards another interface (devmap redirect: the usual two-armed
//! servo) and out of the interface it came in on (XDP_TX: a servo "on a stick").

use std::{collections::HashSet, net::Ipv4Addr};

use anyhow::ensure;
use elb_common::{
    BACKEND_ACTIVE, Backend, Counters, FLOW_F_REPLY, FlowKey, Listener, ListenerKey, PROTO_TCP,
};

use super::{
    Mode, median, progress,
    report::Results,
    ring::{self, Ring},
};
use crate::{
    fixture::{CLIENT_MAC, Fixture, VIP, XDP_DROP, XDP_REDIRECT, XDP_TX, client},
    packet::{TCP_ACK, TCP_PSH, TCP_SYN, Tcp},
};

/// Listener whose backends sit behind the interface the clients come in on (XDP_TX paths).
pub const TX_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
/// Backends of [`TX_VIP`] (on the client-side interface).
pub fn tx_backend(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 200 + i as u8)
}
/// Listener with the PROXY protocol flag (backends of listener 0's addresses, ids 20..23).
pub const PROXY_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 101);
/// First of the 8 SNAT addresses on each side.
pub const SNAT_BASE_BK: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 100);
/// First of the 8 client-side SNAT addresses (flows to [`TX_VIP`]'s backends).
pub const SNAT_BASE_CL: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 110);

fn run_ip(fx: &Fixture, args: &[&str]) -> anyhow::Result<()> {
    fx.ns.ip(args).map(|_| ())
}

/// Prepares a fixture for timing: a route to the spoofed client range (replies need a next
/// hop), a wide SNAT port range and 8 SNAT addresses per side (a million flows to three
/// backends need room), a second listener ([`TX_VIP`], id 1, backend ids 10..13) whose
/// backends are reached through the client-side interface, and a third ([`PROXY_VIP`], id 2,
/// backend ids 20..23 at the first listener's backends' addresses) with the PROXY protocol.
pub fn prepare(fx: &Fixture) -> anyhow::Result<()> {
    run_ip(
        fx,
        &[
            "route",
            "add",
            "198.18.128.0/17",
            "via",
            &client(0).to_string(),
            "dev",
            "cl",
        ],
    )?;
    for i in 0..3 {
        run_ip(
            fx,
            &[
                "neigh",
                "replace",
                &tx_backend(i).to_string(),
                "lladdr",
                &format!("02:00:00:00:00:{:02x}", 0xd1 + i),
                "dev",
                "cl",
                "nud",
                "permanent",
            ],
        )?;
    }
    let mut maps = fx.maps()?;
    // No SYN cookies: every timed SYN must create state (the cookie path is timed on its own).
    maps.set_config(elb_common::Config {
        snat_port_min: 1024,
        snat_port_max: 65535,
        syn_backlog: u32::MAX,
        ..maps.config()?
    })?;
    let side = |base: Ipv4Addr| -> Vec<Ipv4Addr> {
        (0..8u32)
            .map(|i| Ipv4Addr::from(u32::from(base) + i))
            .collect()
    };
    maps.set_snat_addrs(fx.bk, &side(SNAT_BASE_BK))?;
    maps.set_snat_addrs(fx.cl, &side(SNAT_BASE_CL))?;
    for i in 0..3 {
        maps.set_backend(
            10 + i as u32,
            Backend {
                addr: tx_backend(i).octets(),
                port: 80,
                state: BACKEND_ACTIVE,
                generation: 1,
                listener_id: 1,
                ..Backend::default()
            },
        )?;
    }
    maps.replace_backend_set(1, &[10, 11, 12])?;
    for i in 0..3 {
        maps.set_backend(
            20 + i as u32,
            Backend {
                addr: crate::fixture::backend(i).octets(),
                port: 80,
                state: BACKEND_ACTIVE,
                generation: 1,
                listener_id: 2,
                ..Backend::default()
            },
        )?;
    }
    maps.replace_backend_set(2, &[20, 21, 22])?;
    maps.upsert_listener(
        ListenerKey {
            vip: PROXY_VIP.octets(),
            port: 80,
            proto: PROTO_TCP,
            _pad: 0,
        },
        Listener {
            id: 2,
            idle_timeout_s: 60,
            flags: elb_common::LISTENER_F_PROXY_V1,
            ..Listener::default()
        },
    )?;
    maps.upsert_listener(
        ListenerKey {
            vip: TX_VIP.octets(),
            port: 80,
            proto: PROTO_TCP,
            _pad: 0,
        },
        Listener {
            id: 1,
            idle_timeout_s: 60,
            ..Listener::default()
        },
    )?;
    Ok(())
}

/// The SYN template of the SYN-mode ring (its source is replaced at every iteration).
pub fn syn_template(vip: Ipv4Addr) -> Vec<u8> {
    let mut syn = Tcp::new((client(0), 1024), (vip, 80), TCP_SYN);
    syn.src_mac = CLIENT_MAC;
    syn.frame()
}

/// A frame, as the ring takes it.
pub type Frame = Vec<u8>;

/// Frames of established flows to `vip`: for every forward conntrack entry, a client segment
/// (ACK with 16 bytes of data) and the backend's reply to it.
pub fn flow_frames(fx: &Fixture, vip: Ipv4Addr) -> anyhow::Result<(Vec<Frame>, Vec<Frame>)> {
    let mut est = Vec::new();
    let mut reply = Vec::new();
    for (k, f) in fx.maps()?.flows()? {
        if f.state.value & FLOW_F_REPLY != 0 || k.dst != vip.octets() {
            continue;
        }
        est.push(client_segment(&k, 1000));
        let mut r = Tcp::new(
            (Ipv4Addr::from(f.nat.dst), f.nat.dport),
            (Ipv4Addr::from(f.nat.src), f.nat.sport),
            TCP_ACK | TCP_PSH,
        );
        r.payload = vec![b'y'; 16];
        reply.push(r.frame());
    }
    Ok((est, reply))
}

/// A client segment of the flow `k` (ACK with 16 bytes of data, sequence number `seq`).
fn client_segment(k: &FlowKey, seq: u32) -> Frame {
    let mut a = Tcp::new(
        (Ipv4Addr::from(k.src), k.sport),
        (Ipv4Addr::from(k.dst), k.dport),
        TCP_ACK | TCP_PSH,
    );
    a.src_mac = CLIENT_MAC;
    a.seq = seq;
    a.payload = vec![b'x'; 16];
    a.frame()
}

/// Client segments (see `client_segment`) of the established flows to `vip`. With the SYN
/// template's ISN (1000), 1001 is a PROXY flow's first data segment.
pub fn client_frames(fx: &Fixture, vip: Ipv4Addr, seq: u32) -> anyhow::Result<Vec<Frame>> {
    Ok(fx
        .maps()?
        .flows()?
        .into_iter()
        .filter(|(k, f)| f.state.value & FLOW_F_REPLY == 0 && k.dst == vip.octets())
        .map(|(k, _)| client_segment(&k, seq))
        .collect())
}

/// Opens `n` flows to `vip` through the program (SYN mode, from flow number `first`).
pub fn open_flows(
    fx: &Fixture,
    ring: &mut Ring,
    vip: Ipv4Addr,
    first: u64,
    n: u32,
) -> anyhow::Result<()> {
    open_flows_allowing(fx, ring, vip, first, n, 0).map(|_| ())
}

/// [`open_flows`], tolerating up to `misses` SYNs that got no state (a table near its
/// occupancy limit answers a few with a cookie or a RST).
pub fn open_flows_allowing(
    fx: &Fixture,
    ring: &mut Ring,
    vip: Ipv4Addr,
    first: u64,
    n: u32,
    misses: u32,
) -> anyhow::Result<u64> {
    let before = fx.counters();
    ring.set_syn(&syn_template(vip), first)?;
    let (_, action) = ring.time(fx, ring::UNDER_TEST, fx.cl, n)?;
    let after = fx.counters();
    let created = after.new_flows - before.new_flows;
    ensure!(
        created + u64::from(misses) >= u64::from(n),
        "opening {n} flows to {vip}: {created} created (last verdict {action}; {})",
        moved(&before, &after)
    );
    Ok(created)
}

/// Marks every flow's handshake as completed, as the client's first ACK would (flows opened
/// by SYNs alone are half-open, and the sweep ends those after a few seconds).
pub fn confirm_all(fx: &Fixture) -> anyhow::Result<()> {
    let maps = fx.maps()?;
    let table = maps.flow_table();
    for (i, slot) in table.live() {
        if slot.state.value & FLOW_F_REPLY == 0 {
            table.set_flags(i, slot.state.ident, elb_common::FLOW_F_CONFIRMED);
        }
    }
    Ok(())
}

/// The counters that moved from `before` to `after`, as text.
fn moved(before: &Counters, after: &Counters) -> String {
    Counters::NAMES
        .iter()
        .zip(before.values())
        .zip(after.values())
        .filter(|((_, b), a)| a != b)
        .map(|((n, b), a)| format!("{n} +{}", a - b))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One timed loop, checked: the last verdict is one of `verdicts`, each counter of `each` moved
/// by exactly `repeat`, and no counter outside `each` and `allowed` moved.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site per path, all spelled out"
)]
pub fn checked(
    fx: &Fixture,
    ring: &mut Ring,
    target: u32,
    ifindex: u32,
    repeat: u32,
    verdicts: &[u32],
    each: &[&str],
    allowed: &[&str],
) -> anyhow::Result<f64> {
    let before = fx.counters();
    let (ns, action) = ring.time(fx, target, ifindex, repeat)?;
    let after = fx.counters();
    ensure!(
        verdicts.contains(&action),
        "verdict {action}, expected one of {verdicts:?} ({each:?})"
    );
    if target == ring::UNDER_TEST {
        check_counters(&before, &after, repeat, each, allowed)?;
    }
    Ok(ns)
}

/// [`checked`] for the new-flow loop (SYN mode, forwarded) run `repeat` times on each of `cpus`
/// at once: every CPU's last verdict is XDP_REDIRECT, and the counters moved by the total.
/// Returns the mean over the CPUs of their mean time per iteration.
pub fn new_flows_on_cpus(
    fx: &Fixture,
    ring: &mut Ring,
    ifindex: u32,
    repeat: u32,
    cpus: &[usize],
) -> anyhow::Result<f64> {
    let before = fx.counters();
    let runs = ring.time_on_cpus(fx, ring::UNDER_TEST, ifindex, repeat, cpus)?;
    let mut after = fx.counters();
    let mut total = 0.0;
    for (ns, action) in &runs {
        ensure!(
            *action == XDP_REDIRECT,
            "verdict {action}, expected a redirect"
        );
        total += ns;
    }
    // Two CPUs inserting at once: an insert that waited too long for its lock (or lost its
    // slot twice) fails, and its SYN is answered with a cookie instead, as the program does
    // for a full window. Allowed for one SYN in 1,000, each counted as a cookie and as the
    // work of the path checked.
    let iterations = u64::from(repeat) * cpus.len() as u64;
    let cookies = after.syncookies_sent - before.syncookies_sent;
    ensure!(
        cookies * 1000 <= iterations
            && after.drop_conntrack_full - before.drop_conntrack_full == cookies,
        "{cookies} of {iterations} SYNs answered with a cookie on two CPUs (all: {})",
        moved(&before, &after)
    );
    after.syncookies_sent = before.syncookies_sent;
    after.drop_conntrack_full = before.drop_conntrack_full;
    after.new_flows += cookies;
    after.fwd_redirect += cookies;
    check_counters(
        &before,
        &after,
        iterations as u32,
        &["fwd_redirect", "new_flows"],
        &["snat_retries"],
    )?;
    Ok(total / cpus.len() as f64)
}

/// Each counter of `each` (and `rx_packets`) moved by exactly `repeat` from `before` to
/// `after`, and no counter outside `each` and `allowed` moved.
fn check_counters(
    before: &Counters,
    after: &Counters,
    repeat: u32,
    each: &[&str],
    allowed: &[&str],
) -> anyhow::Result<()> {
    {
        let moved_all = moved(before, after);
        for ((name, b), a) in Counters::NAMES
            .iter()
            .zip(before.values())
            .zip(after.values())
        {
            let moved = a - b;
            if *name == "rx_packets" || each.contains(name) {
                ensure!(
                    moved == u64::from(repeat),
                    "{name} moved by {moved} in a loop of {repeat} ({each:?}; all: {all})",
                    all = &moved_all
                );
            } else if !allowed.contains(name) {
                ensure!(
                    moved == 0,
                    "{name} moved by {moved} in a loop of {repeat} ({each:?}; all: {all})",
                    all = &moved_all
                );
            }
        }
    }
    Ok(())
}

/// Sets (`on`) or clears `FLOW_F_EVENTS` on every flow half of `vip`'s flows, as if their
/// listener had `LISTENER_F_EVENTS` when they opened: their packets are then counted in the slots.
pub fn set_flow_events(fx: &Fixture, vip: Ipv4Addr, on: bool) -> anyhow::Result<()> {
    use elb_common::FLOW_F_EVENTS;
    use elb_userspace::dataplane::flows::Word;
    let maps = fx.maps()?;
    let table = maps.flow_table();
    for (i, slot) in table.live() {
        let of_vip = if slot.state.value & FLOW_F_REPLY == 0 {
            slot.key.dst == vip.octets()
        } else {
            slot.nat.src == vip.octets()
        };
        if !of_vip {
            continue;
        }
        let old = slot.state;
        let mut new = old;
        new.value = if on {
            old.value | FLOW_F_EVENTS
        } else {
            old.value & !FLOW_F_EVENTS
        };
        ensure!(
            table.cas(i, Word::State, old, new),
            "flow slot {i} changed under the benchmark"
        );
    }
    Ok(())
}

/// Sets the listeners' SYN backlog (`u32::MAX`: never cookies).
pub fn set_backlog(fx: &Fixture, backlog: u32) -> anyhow::Result<()> {
    let mut maps = fx.maps()?;
    let cfg = maps.config()?;
    maps.set_config(elb_common::Config {
        syn_backlog: backlog,
        ..cfg
    })?;
    Ok(())
}

/// Removes every flow half not in `keep`, and compacts the table as the agent's sweep does
/// (deleted slots left as tombstones would lengthen every later lookup).
pub fn remove_flows_except(fx: &Fixture, keep: &HashSet<FlowKey>) -> anyhow::Result<usize> {
    let mut maps = fx.maps()?;
    let extra: Vec<FlowKey> = maps
        .flows()?
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| !keep.contains(k))
        .collect();
    let removed = maps.remove_flows(&extra)?;
    maps.flow_table().compact();
    Ok(removed)
}

/// The timed paths, in `samples` order.
const NAMES: [&str; 19] = [
    "floor",
    "floor_lookup",
    "established",
    "reply",
    "established_tx",
    "reply_tx",
    "floor_warm",
    "established_warm",
    "reply_warm",
    "new_flow",
    "new_flow_tx",
    "syncookie",
    "new_flow_sg",
    "syn_sg_denied",
    "proxy_established",
    "proxy_insert",
    "established_events",
    "new_flow_2cpu",
    "floor_cold_read",
];

/// Flows in the warm ring (a subset of the cold ring's, in the same table).
const WARM_FLOWS: u32 = 1024;

/// Runs the section.
pub fn run(mode: Mode, results: &mut Results) -> anyhow::Result<()> {
    let repeat: u32 = mode.pick(1_000_000, 500_000, 1_000);
    let rounds = mode.pick(11, 9, 3);
    let ring_flows: u32 = std::env::var("ELB_BENCH_RING_FLOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(mode.pick(65_536, 65_536, 1_024));
    let new_flow_repeat: u32 = mode.pick(200_000, 100_000, 1_000);
    progress(format!(
        "per-packet: {rounds} interleaved rounds, repeat {repeat}, rings of {ring_flows} flows"
    ));

    // Room for the three rings and a round of new flows at under a quarter occupancy.
    let slots = (4 * (6 * ring_flows + 2 * new_flow_repeat)).next_power_of_two();
    let fx = Fixture::with_conntrack(slots)?;
    prepare(&fx)?;
    let mut ring = Ring::with_table(fx.dp_program(), slots)?;
    open_flows(&fx, &mut ring, VIP, 0, ring_flows)?;
    open_flows(&fx, &mut ring, TX_VIP, 1 << 27, ring_flows)?;
    let (est, reply) = flow_frames(&fx, VIP)?;
    let (est_tx, reply_tx) = flow_frames(&fx, TX_VIP)?;
    ensure!(est.len() == ring_flows as usize && est_tx.len() == ring_flows as usize);
    // PROXY flows: a segment after the header (sequence number moved up), and the first data
    // segment (the header inserted: every iteration a retransmission of it, as the ring
    // rewrites the frame).
    open_flows(&fx, &mut ring, PROXY_VIP, 3 << 26, ring_flows)?;
    let proxy_est = client_frames(&fx, PROXY_VIP, 2000)?;
    let proxy_first = client_frames(&fx, PROXY_VIP, 1001)?;
    ensure!(proxy_est.len() == ring_flows as usize);
    // The same table, a ring of few flows: what the paths cost with their state in cache.
    let warm = WARM_FLOWS.min(ring_flows) as usize;
    let keep: HashSet<FlowKey> = fx.maps()?.flows()?.into_iter().map(|(k, _)| k).collect();
    let mut next_syn = 1u64 << 26;

    let mut samples: [Vec<f64>; NAMES.len()] = Default::default();
    let two_cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    if !two_cpus {
        progress("per-packet: one CPU only, new_flow_2cpu not measured");
    }
    let names = NAMES;
    let fwd = ["fwd_redirect"];
    let tx = ["fwd_tx"];
    for round in 0..rounds {
        ring.set_frames(&est)?;
        samples[0].push(checked(
            &fx,
            &mut ring,
            ring::FLOOR,
            fx.cl,
            repeat,
            &[XDP_TX],
            &[],
            &[],
        )?);
        samples[1].push(checked(
            &fx,
            &mut ring,
            ring::FLOOR_LOOKUP,
            fx.cl,
            repeat,
            &[XDP_TX],
            &[],
            &[],
        )?);
        samples[2].push(checked(
            &fx,
            &mut ring,
            ring::UNDER_TEST,
            fx.cl,
            repeat,
            &[XDP_REDIRECT],
            &fwd,
            &[],
        )?);
        // The same flows counted for flow events (LISTENER_F_EVENTS): two atomic adds on the
        // slot. (In the first round some flows may complete their handshake here and write a
        // start into the ring: no counter moves for that.)
        set_flow_events(&fx, VIP, true)?;
        samples[16].push(checked(
            &fx,
            &mut ring,
            ring::UNDER_TEST,
            fx.cl,
            repeat,
            &[XDP_REDIRECT],
            &fwd,
            &[],
        )?);
        set_flow_events(&fx, VIP, false)?;
        ring.set_frames(&reply)?;
        samples[3].push(checked(
            &fx,
            &mut ring,
            ring::UNDER_TEST,
            fx.bk,
            repeat,
            &[XDP_REDIRECT],
            &fwd,
            &[],
        )?);
        ring.set_frames(&est_tx)?;
        samples[4].push(checked(
            &fx,
            &mut ring,
            ring::UNDER_TEST,
            fx.cl,
            repeat,
            &[XDP_TX],
            &tx,
            &[],
        )?);
        ring.set_frames(&reply_tx)?;
        samples[5].push(checked(
            &fx,
            &mut ring,
            ring::UNDER_TEST,
            fx.cl,
            repeat,
            &[XDP_TX],
            &tx,
            &[],
        )?);
        ring.set_frames(&est[..warm])?;
        samples[6].push(checked(
            &fx,
            &mut ring,
            ring::FLOOR,
            fx.cl,
            repeat,
            &[XDP_TX],
            &[],
            &[],
        )?);
        samples[7].push(checked(
            &fx,
            &mut ring,
            ring::UNDER_TEST,
            fx.cl,
            repeat,
            &[XDP_REDIRECT],
            &fwd,
            &[],
        )?);
        ring.set_frames(&reply[..warm])?;
        samples[8].push(checked(
            &fx,
            &mut ring,
            ring::UNDER_TEST,
            fx.bk,
            repeat,
            &[XDP_REDIRECT],
            &fwd,
            &[],
        )?);

        ring.set_frames(&proxy_est)?;
        samples[14].push(checked(
            &fx,
            &mut ring,
            ring::UNDER_TEST,
            fx.cl,
            repeat,
            &[XDP_REDIRECT],
            &fwd,
            &[],
        )?);
        ring.set_frames(&proxy_first)?;
        samples[15].push(checked(
            &fx,
            &mut ring,
            ring::UNDER_TEST,
            fx.cl,
            repeat,
            &[XDP_REDIRECT],
            &["fwd_redirect", "proxy_headers"],
            &[],
        )?);

        // The floor plus one read of the slot each new flow's SYN hashes to, in a table of the
        // flow table's size that no packet writes: the memory access a SYN of a flow never seen
        // pays before any flow work (its slot is on a page and a line no recent packet used).
        ring.set_syn(&syn_template(VIP), next_syn)?;
        next_syn += u64::from(new_flow_repeat);
        samples[18].push(checked(
            &fx,
            &mut ring,
            ring::FLOOR_LOOKUP,
            fx.cl,
            new_flow_repeat,
            &[XDP_TX],
            &[],
            &[],
        )?);
        for (slot, vip, verdict, counter) in [(9, VIP, XDP_REDIRECT, fwd), (10, TX_VIP, XDP_TX, tx)]
        {
            ring.set_syn(&syn_template(vip), next_syn)?;
            next_syn += u64::from(new_flow_repeat);
            let ns = checked(
                &fx,
                &mut ring,
                ring::UNDER_TEST,
                fx.cl,
                new_flow_repeat,
                &[verdict],
                &[counter[0], "new_flows"],
                &["snat_retries"],
            )?;
            samples[slot].push(ns);
            remove_flows_except(&fx, &keep)?;
        }

        // New flows opened on two CPUs at once, half the flows each: the round-robin cursor and
        // the insert locks are shared, and each CPU often takes a turn the other predicted.
        if two_cpus {
            ring.set_syn(&syn_template(VIP), next_syn)?;
            next_syn += u64::from(new_flow_repeat);
            samples[17].push(new_flows_on_cpus(
                &fx,
                &mut ring,
                fx.cl,
                new_flow_repeat / 2,
                &[0, 1],
            )?);
            remove_flows_except(&fx, &keep)?;
        }

        // The same new flows with the listener's security groups checked on every SYN, and
        // a SYN they refuse.
        super::sg::check_new_flows(&fx, true)?;
        ring.set_syn(&syn_template(VIP), next_syn)?;
        next_syn += u64::from(new_flow_repeat);
        samples[12].push(checked(
            &fx,
            &mut ring,
            ring::UNDER_TEST,
            fx.cl,
            new_flow_repeat,
            &[XDP_REDIRECT],
            &["fwd_redirect", "new_flows"],
            &["snat_retries"],
        )?);
        remove_flows_except(&fx, &keep)?;
        ring.set_frames(&[super::sg::denied_frame()])?;
        samples[13].push(checked(
            &fx,
            &mut ring,
            ring::UNDER_TEST,
            fx.cl,
            repeat,
            &[XDP_DROP],
            &["drop_sg_denied"],
            &[],
        )?);
        super::sg::check_new_flows(&fx, false)?;

        // A SYN answered with a cookie (the listener's backlog full): what a flood costs.
        set_backlog(&fx, 1)?;
        ring.set_syn(&syn_template(VIP), next_syn)?;
        next_syn += u64::from(new_flow_repeat);
        samples[11].push(checked(
            &fx,
            &mut ring,
            ring::UNDER_TEST,
            fx.cl,
            new_flow_repeat,
            &[XDP_TX],
            &["syncookies_sent"],
            &["new_flows", "fwd_redirect", "snat_retries"],
        )?);
        set_backlog(&fx, u32::MAX)?;
        remove_flows_except(&fx, &keep)?;
        progress(format!(
            "  round {}/{rounds}: {}",
            round + 1,
            names
                .iter()
                .zip(&samples)
                .map(|(n, s)| format!("{n} {:.1}", s.last().copied().unwrap_or(f64::NAN)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    // What the security-group check adds to a new flow: the rounds' differences (new flow with
    // the check minus new flow without it, same listener, same round).
    let mut sg_extra: Vec<f64> = samples[12]
        .iter()
        .zip(&samples[9])
        .map(|(with, without)| with - without)
        .collect();
    let mut medians = [0f64; NAMES.len()];
    for (i, s) in samples.iter_mut().enumerate() {
        if s.is_empty() {
            // (new_flow_2cpu on a machine with one CPU: said when the section started.)
            continue;
        }
        let lo = s.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        medians[i] = median(s);
        results.set(format!("per_packet.{}_ns", names[i]), medians[i]);
        results.set(format!("per_packet.{}_min_ns", names[i]), lo);
        results.set(format!("per_packet.{}_max_ns", names[i]), hi);
    }
    // Ratios against the floor of the same ring (the warm paths against the warm floor), and
    // the cold paths also against the floor plus one flow-table read.
    for (i, name) in names.iter().enumerate() {
        let floor = if name.ends_with("_warm") {
            medians[6]
        } else {
            medians[0]
        };
        if medians[i] == 0.0 {
            continue;
        }
        if i != 0 && i != 6 {
            results.set(format!("per_packet.{name}_ratio"), medians[i] / floor);
        }
        if (2..=5).contains(&i) || i >= 9 {
            results.set(
                format!("per_packet.{name}_vs_lookup"),
                medians[i] / medians[1],
            );
        }
    }
    results.set("per_packet.sg_check_ns", median(&mut sg_extra));
    // PROXY protocol against the plain path of the same run.
    results.set(
        "per_packet.proxy_established_vs_established",
        medians[14] / medians[2],
    );
    results.set(
        "per_packet.proxy_insert_vs_established",
        medians[15] / medians[2],
    );
    results.set(
        "per_packet.established_events_vs_established",
        medians[16] / medians[2],
    );
    // New flows against the read each of them cannot avoid.
    for (i, name) in [(9, "new_flow"), (10, "new_flow_tx")] {
        results.set(
            format!("per_packet.{name}_vs_cold_read"),
            medians[i] / medians[18],
        );
    }
    if two_cpus {
        results.set(
            "per_packet.new_flow_2cpu_vs_new_flow",
            medians[17] / medians[9],
        );
    }
    results.set("per_packet.conntrack_slots", f64::from(slots));
    results.set("per_packet.warm_flows", warm as f64);
    results.set("per_packet.repeat", f64::from(repeat));
    results.set("per_packet.new_flow_repeat", f64::from(new_flow_repeat));
    results.set("per_packet.ring_flows", f64::from(ring_flows));
    results.set("per_packet.rounds", rounds as f64);
    results.note(
        "per_packet",
        format!(
            "BPF_PROG_TEST_RUN through the bench_ring harness (a fresh frame every iteration, then a tail call to the program or the floor), \
             {rounds} interleaved rounds, median (min/max in the _min_ns/_max_ns keys); established and reply: rings of {ring_flows} distinct flows \
             in a table of {slots} slots, repeat {repeat}; _warm: a ring of {warm} of those flows (state in cache); floor_lookup: the floor plus one \
             read of a table of the same size at the frame's hash (the access no lookup avoids; _vs_lookup ratios are against it); \
             new flow: SYN mode, every iteration a flow never seen before, repeat {new_flow_repeat}, the table emptied of them between rounds; \
             floor_cold_read: the floor plus one read at each new flow's hash (the same SYN ring) of a table of the same size no packet writes: \
             the access a SYN of a flow never seen cannot avoid (_vs_cold_read ratios are against it); \
             new_flow_sg: the new-flow ring with the listener's security groups checked (an allow list of {} blocks, one LPM trie lookup per SYN), \
             syn_sg_denied: a SYN the allow list refuses; sg_check_ns: median of the rounds' new_flow_sg - new_flow; \
             proxy_established: a ring of {ring_flows} PROXY protocol flows, a client segment after the header (sequence number translated); \
             proxy_insert: the same flows' first data segment (the header inserted, the frame grown); \
             established_events: the established ring with the flows counted for flow events (FLOW_F_EVENTS: two atomic adds per packet); \
             new_flow_2cpu: the new-flow ring run on CPUs 0 and 1 at once, half the flows each (shared round-robin cursor and insert locks), the mean of the two CPUs' times; \
             every loop checked: its verdict, and each counter of its path moved by exactly the repeat count, no other",
            super::sg::OTHER_BLOCKS + 1
        ),
    );
    Ok(())
}

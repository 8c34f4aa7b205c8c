//! Per-packet cost of the program with `BPF_PROG_TEST_RUN`, against a floor program (swap MACs,
//! XDP_TX) timed in the same interleaved rounds.
//!
//! The kernel runs `repeat` iterations on the same buffer, so each iteration sees the previous
//! one's output (verified: a forwarded packet's second iteration is "not ours"). To time the
//! established and reply paths over a million iterations, the benchmark gives the rewritten
//! packet a conntrack entry that rewrites it back: packet A becomes B becomes A..., and every
//! iteration takes the full path (conntrack lookup, backend check, rewrite with checksums,
//! statistics, FIB lookup, redirect). The VIP and the SNAT address are made non-local (with
//! neighbour entries) so both halves of the cycle resolve a next hop.
//!
//! New flows need fresh conntrack entries at every iteration. Two listeners whose backends are
//! each other's VIP do that: SYN(c -> V3:80) becomes SYN(S:r -> V2:81), a new flow of the other
//! listener, which becomes SYN(S:r -> V3:80), a new flow again... The SNAT port of every second
//! flow is taken (the client-port-first attempt finds the previous flow's tuple) and a random
//! one is drawn, so that path includes one extra SNAT probe every other flow; the report says so.
//! (Timing distinct SYNs one run per call instead is dominated by cold caches: every call costs
//! about a microsecond even for the floor program.)

use std::net::Ipv4Addr;

use anyhow::{Context as _, ensure};
use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use elb_common::{BACKEND_ACTIVE, Backend, Flow, FlowKey, Listener, ListenerKey, PROTO_TCP};

use super::{Mode, median, progress, report::Results};
use crate::{
    fixture::{CLIENT_MAC, Fixture, XDP_DROP, XDP_REDIRECT, XDP_TX, backend, client, xdp_md},
    packet::{self, TCP_ACK, TCP_SYN, Tcp},
};

/// A VIP that is not an address of the fixture namespace.
pub const BENCH_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
/// A SNAT address that is not an address of the fixture namespace.
pub const BENCH_SNAT: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 100);
/// The new-flow cycle's first listener (client side).
pub const CYCLE_VIP_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 101);
/// The new-flow cycle's second listener (backend side).
pub const CYCLE_VIP_B: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 101);
/// SNAT address for flows leaving on the client side.
pub const BENCH_SNAT_CLIENT_SIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 110);

/// Prepares a fixture for timing: non-local VIP and SNAT address with neighbours, a listener on
/// the VIP with three backends.
pub fn prepare(fx: &Fixture) -> anyhow::Result<()> {
    fx.ns.ip(&[
        "neigh",
        "replace",
        &BENCH_VIP.to_string(),
        "lladdr",
        "02:00:00:00:00:aa",
        "dev",
        "cl",
        "nud",
        "permanent",
    ])?;
    fx.ns.ip(&[
        "neigh",
        "replace",
        &BENCH_SNAT.to_string(),
        "lladdr",
        "02:00:00:00:00:bb",
        "dev",
        "bk",
        "nud",
        "permanent",
    ])?;
    let mut maps = fx.maps()?;
    for i in 0..3 {
        maps.set_backend(
            10 + i as u32,
            Backend {
                addr: backend(i).octets(),
                port: 80,
                state: BACKEND_ACTIVE,
                generation: 1,
                listener_id: 1,
                ..Backend::default()
            },
        )?;
    }
    maps.replace_backend_set(1, &[10, 11, 12])?;
    maps.upsert_listener(
        ListenerKey {
            vip: BENCH_VIP.octets(),
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

    // The new-flow cycle: A:80 -> backend B:81, B:81 -> backend A:80.
    for (addr, dev, mac) in [
        (CYCLE_VIP_A, "cl", "02:00:00:00:00:a1"),
        (CYCLE_VIP_B, "bk", "02:00:00:00:00:b9"),
        (BENCH_SNAT_CLIENT_SIDE, "cl", "02:00:00:00:00:a2"),
    ] {
        fx.ns.ip(&[
            "neigh",
            "replace",
            &addr.to_string(),
            "lladdr",
            mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ])?;
    }
    // A wide port range and several addresses, so that random SNAT ports rarely collide.
    maps.set_config(elb_common::Config {
        snat_port_min: 1024,
        snat_port_max: 65535,
        flags: 0,
    })?;
    let side = |base: Ipv4Addr| -> Vec<Ipv4Addr> {
        (0..8u32)
            .map(|i| Ipv4Addr::from(u32::from(base) + i))
            .collect()
    };
    // Replies are rewritten towards these addresses in the reply cycle: give them next hops.
    for (addr, dev) in side(BENCH_SNAT)
        .into_iter()
        .map(|a| (a, "bk"))
        .chain(side(BENCH_SNAT_CLIENT_SIDE).into_iter().map(|a| (a, "cl")))
    {
        fx.ns.ip(&[
            "neigh",
            "replace",
            &addr.to_string(),
            "lladdr",
            "02:00:00:00:00:bb",
            "dev",
            dev,
            "nud",
            "permanent",
        ])?;
    }
    maps.set_snat_addrs(fx.cl, &side(BENCH_SNAT_CLIENT_SIDE))?;
    maps.set_snat_addrs(fx.bk, &side(BENCH_SNAT))?;
    for (listener, vip, port, backend_id, to, to_port) in [
        (2u32, CYCLE_VIP_A, 80u16, 20u32, CYCLE_VIP_B, 81u16),
        (3, CYCLE_VIP_B, 81, 21, CYCLE_VIP_A, 80),
    ] {
        maps.set_backend(
            backend_id,
            Backend {
                addr: to.octets(),
                port: to_port,
                state: BACKEND_ACTIVE,
                generation: 1,
                listener_id: listener,
                ..Backend::default()
            },
        )?;
        maps.replace_backend_set(listener, &[backend_id])?;
        maps.upsert_listener(
            ListenerKey {
                vip: vip.octets(),
                port,
                proto: PROTO_TCP,
                _pad: 0,
            },
            Listener {
                id: listener,
                idle_timeout_s: 60,
                ..Listener::default()
            },
        )?;
    }
    Ok(())
}

/// The SYN that starts a new-flow cycle; `round` makes each run's chain of flows its own.
pub fn cycle_syn(round: u16) -> Vec<u8> {
    let mut syn = Tcp::new(
        (client((round % 19) as u8), 100 + round),
        (CYCLE_VIP_A, 80),
        TCP_SYN,
    );
    syn.src_mac = CLIENT_MAC;
    syn.frame()
}

fn key_of(p: &packet::Parsed) -> FlowKey {
    FlowKey {
        src: p.src.octets(),
        dst: p.dst.octets(),
        sport: p.sport,
        dport: p.dport,
        proto: PROTO_TCP,
        _pad: [0; 3],
    }
}

fn rewrite_to(p: &packet::Parsed, flags: u32) -> Flow {
    Flow {
        nat_src: p.src.octets(),
        nat_dst: p.dst.octets(),
        nat_sport: p.sport,
        nat_dport: p.dport,
        backend_id: 10,
        backend_gen: 1,
        listener_id: 1,
        flags,
        ..Flow::default()
    }
}

/// Frames whose processing loops through the full established (forward) and reply paths.
pub struct Cycles {
    /// A client packet of an established flow.
    pub established: Vec<u8>,
    /// A backend packet of the same flow.
    pub reply: Vec<u8>,
}

/// Opens a flow from client port `port` and adds the entries that close the two cycles.
pub fn cycles(fx: &Fixture, port: u16) -> anyhow::Result<Cycles> {
    let mut syn = Tcp::new((client(0), port), (BENCH_VIP, 80), TCP_SYN);
    syn.src_mac = CLIENT_MAC;
    let out = fx.run(fx.cl, &syn.frame())?;
    ensure!(
        out.action == XDP_REDIRECT,
        "opening the benchmark flow: action {}",
        out.action
    );
    let fwd = packet::parse_tcp(&out.frame).map_err(anyhow::Error::msg)?;
    let mut maps = fx.maps()?;

    // Established: A (client -> VIP) becomes F (SNAT -> backend); F's entry turns it back into A.
    let a = Tcp::new((client(0), port), (BENCH_VIP, 80), TCP_ACK);
    let a_parsed = packet::parse_tcp(&a.frame()).map_err(anyhow::Error::msg)?;
    maps.set_flow(key_of(&fwd), rewrite_to(&a_parsed, 0))?;

    // Reply: R (backend -> SNAT) becomes R' (VIP -> client); R''s entry turns it back into R.
    let r = Tcp::new((fwd.dst, 80), (fwd.src, fwd.sport), TCP_ACK);
    let out = fx.run(fx.bk, &r.frame())?;
    ensure!(
        out.action == XDP_REDIRECT,
        "reply of the benchmark flow: action {}",
        out.action
    );
    let r_prime = packet::parse_tcp(&out.frame).map_err(anyhow::Error::msg)?;
    let r_parsed = packet::parse_tcp(&r.frame()).map_err(anyhow::Error::msg)?;
    maps.set_flow(
        key_of(&r_prime),
        rewrite_to(&r_parsed, elb_common::FLOW_F_REPLY),
    )?;
    Ok(Cycles {
        established: a.frame(),
        reply: r.frame(),
    })
}

/// One timed run: `repeat` iterations of `program` on `frame` arriving on `ifindex`; returns the
/// kernel's per-iteration time in ns and the verdict.
pub fn time(
    fx: &Fixture,
    program: &Xdp,
    ifindex: u32,
    frame: &[u8],
    repeat: u32,
) -> anyhow::Result<(f64, u32)> {
    fx.ns.run(|| {
        let mut out = vec![0u8; frame.len() + 256];
        let ctx = xdp_md(frame.len() as u32, ifindex);
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut out);
        opts.ctx_in = Some(&ctx);
        opts.repeat = repeat;
        let r = program.test_run(opts).context("BPF_PROG_TEST_RUN")?;
        // aya reports the kernel's average duration per iteration.
        Ok((r.duration.as_nanos() as f64, r.return_value))
    })
}

/// Runs the section.
pub fn run(mode: Mode, results: &mut Results) -> anyhow::Result<()> {
    let repeat: u32 = mode.pick(1_000_000, 1_000_000, 1_000);
    let rounds = mode.pick(11, 9, 3);
    // Each new flow takes two conntrack entries; LRU eviction recycles them, as under a SYN flood.
    let new_flow_repeat: u32 = mode.pick(200_000, 100_000, 1_000);
    progress(format!(
        "per-packet: {rounds} interleaved rounds, repeat {repeat}"
    ));

    // Room for a whole round of new flows without eviction (the table is emptied between
    // rounds): this measures a new flow, not LRU eviction (the SYN-flood packet rate covers that).
    let fx = Fixture::with_conntrack((2 * new_flow_repeat + 4096).next_power_of_two())?;
    prepare(&fx)?;
    let floor_ebpf =
        elb_userspace::dataplane::load_aux_program(elb_userspace::dataplane::FLOOR_PROGRAM)?;
    let floor: &Xdp = floor_ebpf
        .program(elb_userspace::dataplane::FLOOR_PROGRAM)
        .context("floor program")?
        .try_into()?;
    let ours = fx.dp_program();

    let mut floor_ns = Vec::new();
    let mut est_ns = Vec::new();
    let mut reply_ns = Vec::new();
    let mut new_ns = Vec::new();
    let mut sg_ns = Vec::new();
    let mut denied_ns = Vec::new();
    let mut sg_check = Vec::new();
    let before = fx.counters();
    for round in 0..rounds {
        // Empty conntrack and fresh cycle entries each round.
        let mut maps = fx.maps()?;
        let keys: Vec<FlowKey> = maps.flows()?.into_iter().map(|(k, _)| k).collect();
        maps.remove_flows(&keys)?;
        let cycles = cycles(&fx, 45000 + round as u16)?;
        let (f, action) = time(&fx, floor, fx.cl, &cycles.established, repeat)?;
        ensure!(action == XDP_TX, "floor verdict {action}");
        floor_ns.push(f);
        let (e, action) = time(&fx, ours, fx.cl, &cycles.established, repeat)?;
        // The cycle alternates between redirecting (A out of the backend side) and transmitting
        // back out of the ingress interface (B turned into A): both forward.
        ensure!(
            action == XDP_REDIRECT || action == XDP_TX,
            "established verdict {action}"
        );
        est_ns.push(e);
        let (r, action) = time(&fx, ours, fx.bk, &cycles.reply, repeat)?;
        ensure!(
            action == XDP_REDIRECT || action == XDP_TX,
            "reply verdict {action}"
        );
        reply_ns.push(r);

        let flows_before = fx.counters().new_flows;
        let (n, action) = time(&fx, ours, fx.cl, &cycle_syn(round as u16), new_flow_repeat)?;
        ensure!(
            action == XDP_REDIRECT || action == XDP_TX,
            "new-flow verdict {action}"
        );
        let created = fx.counters().new_flows - flows_before;
        ensure!(
            created == u64::from(new_flow_repeat),
            "every iteration must be a new flow ({created} of {new_flow_repeat})"
        );
        new_ns.push(n);
        // The same cycle with security groups checked on every SYN (`sg`).
        let keys: Vec<FlowKey> = maps.flows()?.into_iter().map(|(k, _)| k).collect();
        maps.remove_flows(&keys)?;
        super::sg::check_new_flows(&fx, true)?;
        let (denied_before, flows) = (fx.counters().drop_sg_denied, fx.counters().new_flows);
        let (s, action) = time(&fx, ours, fx.cl, &cycle_syn(round as u16), new_flow_repeat)?;
        ensure!(
            (action == XDP_REDIRECT || action == XDP_TX)
                && fx.counters().new_flows - flows == u64::from(new_flow_repeat)
                && fx.counters().drop_sg_denied == denied_before,
            "every SYN of the security-group cycle must be admitted and make a new flow"
        );
        let (denied, options) = super::sg::refusal_frames();
        let (d, refused) = time(&fx, ours, fx.cl, &denied, repeat)?;
        let (o, dropped) = time(&fx, ours, fx.cl, &options, repeat)?;
        ensure!(
            refused == XDP_DROP && dropped == XDP_DROP,
            "refusal verdicts {refused}/{dropped}"
        );
        super::sg::check_new_flows(&fx, false)?;
        sg_ns.push(s);
        denied_ns.push(d);
        sg_check.push(d - o);
        progress(format!(
            "  round {}/{rounds}: floor {f:.1} ns, established {e:.1} ns, reply {r:.1} ns, new flow {n:.1} ns, with security groups {s:.1} ns, SYN refused by them {d:.1} ns (dropped before the check {o:.1} ns)",
            round + 1
        ));
    }
    let after = fx.counters();
    let iterations = u64::from(repeat) * rounds as u64 * 2;
    let forwarded = (after.fwd_redirect + after.fwd_tx) - (before.fwd_redirect + before.fwd_tx);
    ensure!(
        forwarded >= iterations,
        "the cycles did not take the forwarding path every iteration ({forwarded} forwarded for {iterations} iterations)"
    );

    let floor = median(&mut floor_ns);
    let est = median(&mut est_ns);
    let reply = median(&mut reply_ns);
    let new_flow = median(&mut new_ns);
    results.set("per_packet.floor_ns", floor);
    results.set("per_packet.established_ns", est);
    results.set("per_packet.reply_ns", reply);
    results.set("per_packet.established_ratio", est / floor);
    results.set("per_packet.reply_ratio", reply / floor);
    results.set("per_packet.new_flow_ns", new_flow);
    results.set("per_packet.new_flow_ratio", new_flow / floor);
    results.set("per_packet.new_flow_sg_ns", median(&mut sg_ns));
    results.set("per_packet.syn_sg_denied_ns", median(&mut denied_ns));
    results.set("per_packet.sg_check_ns", median(&mut sg_check));
    results.set("per_packet.repeat", f64::from(repeat));
    results.set("per_packet.new_flow_repeat", f64::from(new_flow_repeat));
    results.set("per_packet.rounds", rounds as f64);
    results.note(
        "per_packet",
        format!(
            "BPF_PROG_TEST_RUN, {rounds} interleaved rounds; repeat {repeat} for floor, established and reply (cycle entries make every iteration take the full path); \
             new flows: a cycle of two listeners, repeat {new_flow_repeat}, every iteration a new flow, every second one with one extra SNAT probe; \
             new_flow_sg_ns: the same cycle with both listeners' security groups checked (allow lists of {} /24 blocks each, one LPM trie lookup per SYN), \
             syn_sg_denied_ns: a SYN the allow list refuses (repeat {repeat}); sg_check_ns: the check alone, the median of the rounds' differences between that SYN and the same SYN \
             with IP options (dropped just before the check)",
            super::sg::OTHER_BLOCKS + 1
        ),
    );
    Ok(())
}

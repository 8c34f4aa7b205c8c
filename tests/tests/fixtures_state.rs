//! `BPF_PROG_TEST_RUN` fixtures of flow state under attack and at the edges: RST validation
//! (RFC 5961 in spirit), Path MTU and TTL as a router handles them, halves of flows and the
//! sweep, writes to reused slots, listener ports inside the SNAT range, listeners served by the
//! servo itself.

use std::{net::Ipv4Addr, time::Duration};

use elb_common::{
    Config, FLOW_F_CLAIM, FLOW_F_RESERVED, FLOW_F_RST, FLOW_F_TOMB, FlowWord, LISTENER_F_LOCAL,
    Listener, ListenerKey, PROTO_TCP, csum, lifetimes,
};
use elb_userspace::{agent::sweep, dataplane::flows::Word};
use tests::{
    fixture::{frames::*, *},
    packet::{ETH_LEN, TCP_ACK, TCP_PSH, TCP_RST, TCP_SYN},
};

/// The sweep at `secs` seconds from now.
fn sweep_after(fx: &Fixture, secs: u64) -> sweep::SweepReport {
    let mut maps = fx.maps().unwrap();
    sweep::sweep(
        &mut maps,
        sweep::monotonic_ns() + Duration::from_secs(secs).as_nanos() as u64,
    )
    .unwrap()
}

#[test]
fn out_of_window_resets_do_not_end_a_flow() {
    let fx = Fixture::new().unwrap();
    let fwd = handshake(&fx, 0, 40000);
    // A blind attacker knows the tuple but not the sequence numbers.
    let mut forged = client_tcp(&fx, 0, 40000, TCP_RST);
    forged.seq = CLIENT_ISN + 1 + (1 << 25);
    let mut from_backend = backend_tcp(&fx, &fwd, TCP_RST);
    from_backend.seq = BACKEND_ISN.wrapping_sub(5000);
    for (ifindex, frame) in [(fx.cl, forged.frame()), (fx.bk, from_backend.frame())] {
        let before = fx.counters();
        let out = fx.run(ifindex, &frame).unwrap();
        assert_eq!(out.action, XDP_DROP);
        assert_eq!(
            moved(&before, &fx.counters()),
            [("drop_rst_out_of_window", 1)]
        );
    }
    let f = fx
        .maps()
        .unwrap()
        .flow(&key(client(0), VIP, 40000, 80))
        .unwrap()
        .unwrap();
    assert!(!f.is_closed(), "the flow is still open");
    let p = forward(&fx, &client_data(&fx, 40000, 10));
    assert_eq!(p.payload.len(), 10);
    // A backend refusing a SYN answers RST|ACK acknowledging it: accepted; one acknowledging
    // something else is not.
    let syn_fwd = open(&fx, 1, 41000);
    let mut wrong = backend_tcp(&fx, &syn_fwd, TCP_RST | TCP_ACK);
    wrong.seq = 0;
    wrong.ack = CLIENT_ISN + 77;
    assert_eq!(fx.run(fx.bk, &wrong.frame()).unwrap().action, XDP_DROP);
    let mut refusal = backend_tcp(&fx, &syn_fwd, TCP_RST | TCP_ACK);
    refusal.seq = 0;
    refusal.ack = CLIENT_ISN + 1;
    let p = deliver(&fx, &refusal.frame());
    assert_eq!(p.flags, TCP_RST | TCP_ACK);
}

#[test]
fn a_reset_both_ends_ignore_is_recovered_from() {
    let fx = Fixture::new().unwrap();
    let fwd = handshake(&fx, 0, 40000);
    // In window, so it closes the flow here; but the backend rejected it (RFC 5961: only an
    // exact match resets; it answered with a challenge ACK) and both ends go on talking.
    let mut rst = client_tcp(&fx, 0, 40000, TCP_RST);
    rst.seq = CLIENT_ISN + 1 + 100;
    assert_eq!(fx.run(fx.cl, &rst.frame()).unwrap().action, XDP_REDIRECT);
    let maps = fx.maps().unwrap();
    let k = key(client(0), VIP, 40000, 80);
    assert_ne!(maps.flow(&k).unwrap().unwrap().state.value & FLOW_F_RST, 0);
    let mut challenge = backend_tcp(&fx, &fwd, TCP_ACK);
    challenge.seq = BACKEND_ISN + 1;
    challenge.ack = CLIENT_ISN + 1;
    deliver(&fx, &challenge.frame());
    forward(&fx, &client_data(&fx, 40000, 20));
    let f = maps.flow(&k).unwrap().unwrap();
    assert!(!f.is_closed(), "open again: {:#x}", f.state.value);
    assert_eq!(fx.counters().flows_recovered, 1);
}

#[test]
fn oversized_packets_get_fragmentation_needed_on_both_paths() {
    let fx = Fixture::new().unwrap();
    fx.ns.ip(&["link", "set", "bk", "mtu", "1400"]).unwrap();
    // The client side's MTU as the agent records it when it attaches.
    fx.maps().unwrap().add_tx_port(fx.cl, 1300).unwrap();
    let fwd = handshake(&fx, 0, 40000);
    // The route towards the backend is cached (the handshake looked it up): an oversized
    // segment with DF is answered as a router would.
    let big = client_data(&fx, 40000, 1410);
    let out = fx.run(fx.cl, &big).unwrap();
    assert_eq!(
        out.action, XDP_TX,
        "back out of the interface it came in on"
    );
    let f = &out.frame;
    assert_eq!(f.len(), ETH_LEN + 20 + 8 + 28);
    assert_eq!((&f[..6], &f[6..12]), (&CLIENT_MAC[..], &fx.cl_mac[..]));
    let ip = &f[ETH_LEN..];
    assert_eq!(csum::checksum(&ip[..20]), 0, "IP checksum");
    assert_eq!(
        (ip[9], &ip[12..16], &ip[16..20]),
        (1, &VIP.octets()[..], &client(0).octets()[..])
    );
    let icmp = &ip[20..];
    assert_eq!(csum::checksum(icmp), 0, "ICMP checksum");
    assert_eq!(
        (icmp[0], icmp[1], u16::from_be_bytes([icmp[6], icmp[7]])),
        (3, 4, 1400)
    );
    assert_eq!(
        &icmp[8..36],
        &big[ETH_LEN..ETH_LEN + 28],
        "the client's own header, quoted"
    );
    assert_eq!(fx.counters().icmp_frag_needed, 1);
    // Without DF a router fragments: the kernel does, after the rewrite.
    let mut no_df = client_tcp(&fx, 0, 40000, TCP_ACK);
    no_df.seq = CLIENT_ISN + 1;
    no_df.frag_off = 0;
    no_df.payload = vec![1; 1410];
    let out = fx.run(fx.cl, &no_df.frame()).unwrap();
    assert_eq!(out.action, XDP_PASS);
    assert_eq!(
        parse(&out.frame).dst,
        fwd.dst,
        "rewritten for the kernel to forward"
    );
    assert_eq!(fx.counters().pass_fragment, 1);
    // The reply path: the client side's MTU.
    let mut reply = backend_tcp(&fx, &fwd, TCP_ACK);
    reply.payload = vec![2; 1280];
    let out = fx.run(fx.bk, &reply.frame()).unwrap();
    assert_eq!(out.action, XDP_TX);
    let icmp = &out.frame[ETH_LEN + 20..];
    assert_eq!(
        (icmp[0], icmp[1], u16::from_be_bytes([icmp[6], icmp[7]])),
        (3, 4, 1300)
    );
    assert_eq!(
        &out.frame[ETH_LEN + 12..ETH_LEN + 20],
        &[SNAT.octets(), fwd.dst.octets()].concat()[..]
    );
    // Within the MTU nothing changes.
    reply.payload = vec![2; 1200];
    deliver(&fx, &reply.frame());
}

#[test]
fn ttl_is_decremented_and_expires_as_in_a_router() {
    let fx = Fixture::new().unwrap();
    let mut dying = syn(&fx, 0, 40000);
    dying.ttl = 1;
    let frame = dying.frame();
    let out = fx.run(fx.cl, &frame).unwrap();
    assert_eq!(out.action, XDP_TX);
    let icmp = &out.frame[ETH_LEN + 20..];
    assert_eq!((icmp[0], icmp[1]), (11, 0), "time exceeded in transit");
    assert_eq!(&icmp[8..36], &frame[ETH_LEN..ETH_LEN + 28]);
    assert!(
        fx.maps().unwrap().flows().unwrap().is_empty(),
        "no state for it"
    );
    let fwd = handshake(&fx, 0, 40001);
    assert_eq!(fwd.ttl, 63);
    let mut late = client_tcp(&fx, 0, 40001, TCP_ACK);
    late.ttl = 1;
    assert_eq!(fx.run(fx.cl, &late.frame()).unwrap().action, XDP_TX);
    assert_eq!(fx.counters().icmp_time_exceeded, 2);
}

#[test]
fn a_lost_half_leaves_nothing_usable_and_the_sweep_finds_it() {
    let fx = Fixture::new().unwrap();
    let a = handshake(&fx, 0, 40000);
    let b = handshake(&fx, 1, 40001);
    let mut maps = fx.maps().unwrap();
    // Flow a loses its reverse half, flow b its forward half (however that happened).
    maps.remove_flows(&[key(a.dst, SNAT, 80, a.sport)]).unwrap();
    maps.remove_flows(&[key(client(1), VIP, 40001, 80)])
        .unwrap();
    // A lone half may be a flow being inserted (reverse half first): not at once.
    assert_eq!(sweep_after(&fx, 0).orphans, 0);
    let report = sweep_after(&fx, 3);
    assert_eq!(report.orphans, 2);
    // a's forward half is gone: its client gets a RST, and its tuple can be taken again.
    assert!(
        maps.flow(&key(client(0), VIP, 40000, 80))
            .unwrap()
            .is_none()
    );
    assert_eq!(
        fx.run(fx.cl, &client_data(&fx, 40000, 5)).unwrap().action,
        XDP_TX
    );
    assert_eq!(fx.counters().rst_no_flow, 1);
    // b's reverse half only reserves its tuple now: the backend's packets are dropped.
    let r = maps.flow(&key(b.dst, SNAT, 80, b.sport)).unwrap().unwrap();
    assert_ne!(r.state.value & FLOW_F_RESERVED, 0);
    let late = backend_tcp(&fx, &b, TCP_ACK).frame();
    assert_eq!(fx.run(fx.bk, &late).unwrap().action, XDP_DROP);
    let report = sweep_after(&fx, lifetimes::TIME_WAIT_HOLD_S + 5);
    assert_eq!(report.released, 1);
    assert!(maps.flows().unwrap().is_empty());
}

#[test]
fn writes_never_land_in_a_reused_slot() {
    let fx = Fixture::new().unwrap();
    open(&fx, 0, 40000);
    let mut maps = fx.maps().unwrap();
    let k = key(client(0), VIP, 40000, 80);
    let table = maps.flow_table();
    let (index, old) = table.lookup(&k).unwrap();
    // The flow ends; a new flow from the same client port takes the same slot.
    assert!(table.remove(index, old.state.ident));
    let mut reused = old;
    reused.state.ident = old.state.ident ^ 0x5a5a;
    reused.seen.ident = reused.state.ident;
    let again = table.insert(&reused).unwrap();
    assert_eq!(again, index, "same key, same slot");
    // Whatever still holds the old flow's identity can no longer change the slot.
    assert!(!table.set_flags(index, old.state.ident, FLOW_F_RST));
    assert!(!table.set_seen(index, old.state.ident, 12345));
    assert!(!table.remove(index, old.state.ident));
    assert!(!table.cas(index, Word::State, old.state, old.state));
    let now = table.lookup(&k).unwrap().1;
    assert_eq!(now.state, reused.state);
    assert_eq!(now.seen, reused.seen);
    maps.remove_flows(&[k]).unwrap();
}

#[test]
fn an_insert_in_progress_of_another_key_is_never_taken_for_this_one() {
    // Inserts hold only their home block's lock: an insert of a key from the block before may
    // have claimed a slot in this key's window, whose fields still hold what the slot held
    // before (here: this very key, deleted). Neither the program nor userspace may read that as
    // "the key exists".
    let fx = Fixture::new().unwrap();
    let first = open(&fx, 0, 40000);
    let mut maps = fx.maps().unwrap();
    let k = key(client(0), VIP, 40000, 80);
    let table = maps.flow_table();
    let (index, old) = table.lookup(&k).unwrap();
    let claim = FlowWord {
        ident: old.state.ident ^ 0x77,
        value: FLOW_F_CLAIM,
    };
    assert!(table.cas(index, Word::State, old.state, claim));
    // Userspace: an insert of the same key goes to another slot.
    let mut again = old;
    again.state.ident ^= 0x1234;
    let placed = table.insert(&again).unwrap();
    assert_ne!(placed, index);
    assert!(table.remove(placed, again.state.ident));
    // The program: the client's SYN opens a new flow (its old reverse half still holds the
    // first tuple, so the new flow's differs).
    let out = fx.run(fx.cl, &syn(&fx, 0, 40000).frame()).unwrap();
    assert_eq!(out.action, XDP_REDIRECT, "{:?}", fx.counters());
    let fwd = parse(&out.frame);
    assert_ne!((fwd.dst, fwd.sport), (first.dst, first.sport));
    let (now, _) = table.lookup(&k).unwrap();
    assert_ne!(now, index);
    assert_eq!(table.state(index), claim, "the claimed slot is left alone");
    // The other insert gives up its claim; nothing of it remains.
    let tomb = FlowWord {
        ident: 0,
        value: FLOW_F_TOMB,
    };
    assert!(table.cas(index, Word::State, claim, tomb));
    maps.remove_flows(&[
        k,
        key(fwd.dst, fwd.src, 80, fwd.sport),
        key(first.dst, first.src, 80, first.sport),
    ])
    .unwrap();
    assert!(maps.flows().unwrap().is_empty());
}

#[test]
fn the_sweep_empties_deleted_slots_without_losing_live_ones() {
    let fx = Fixture::with_conntrack(2048).unwrap();
    let mut open_ports = Vec::new();
    for n in 0..400u16 {
        open(&fx, (n % 8) as u8, 30000 + n);
        open_ports.push(30000 + n);
    }
    let mut maps = fx.maps().unwrap();
    // Delete three flows of four (both halves), as ended flows are.
    let mut kept = Vec::new();
    for (n, port) in open_ports.iter().enumerate() {
        let k = key(client((n % 8) as u8), VIP, *port, 80);
        let f = maps.flow(&k).unwrap().unwrap();
        if n % 4 == 0 {
            kept.push((k, f.partner_key()));
        } else {
            maps.remove_flows(&[k, f.partner_key()]).unwrap();
        }
    }
    let report = sweep_after(&fx, 0);
    assert!(report.compacted > 0, "{report:?}");
    for (k, r) in &kept {
        assert!(maps.flow(k).unwrap().is_some(), "{k:?} still found");
        assert!(maps.flow(r).unwrap().is_some(), "{r:?} still found");
    }
    assert_eq!(maps.flows().unwrap().len(), 2 * kept.len());
}

#[test]
fn listener_ports_inside_the_snat_range_are_never_allocated() {
    let fx = Fixture::new().unwrap();
    let mut maps = fx.maps().unwrap();
    // A servo "on a stick" whose SNAT address is also a VIP, with a listener on port 30000,
    // inside the SNAT range 30000-30002.
    maps.set_config(Config::with_snat_ports(30000, 30002))
        .unwrap();
    maps.replace_backend_set(0, &[0]).unwrap();
    let stick = ListenerKey {
        vip: SNAT.octets(),
        port: 30000,
        proto: PROTO_TCP,
        _pad: 0,
    };
    maps.upsert_listener(
        stick,
        Listener {
            id: 0,
            idle_timeout_s: 60,
            ..Listener::default()
        },
    )
    .unwrap();
    assert!(maps.is_listener_port(30000).unwrap());
    // The client's own port (30000) would be tried first: skipped.
    let a = open(&fx, 0, 30000);
    let b = open(&fx, 1, 30001);
    let mut ports = [a.sport, b.sport];
    ports.sort();
    assert_eq!(ports, [30001, 30002], "never the listener's port");
    assert_eq!(
        fx.run(fx.cl, &syn(&fx, 2, 30002).frame()).unwrap().action,
        XDP_TX
    );
    assert_eq!(fx.counters().snat_failures, 1);
    // A bare SYN from a backend's address and port to that listener is a new client, not a
    // reply to a flow.
    let mut from_backend = tests::packet::Tcp::new((backend(0), 80), (SNAT, 30000), TCP_SYN);
    from_backend.src_mac = backend_mac(0);
    from_backend.dst_mac = fx.bk_mac;
    let before = fx.counters().new_flows;
    let out = fx.run(fx.bk, &from_backend.frame()).unwrap();
    assert_ne!(out.action, XDP_PASS);
    assert_eq!(
        fx.counters().snat_failures,
        2,
        "treated as a new flow (no tuple left)"
    );
    assert_eq!(fx.counters().new_flows, before);
    // Once no listener uses the port, SNAT may.
    maps.remove_listener(&stick).unwrap();
    assert!(!maps.is_listener_port(30000).unwrap());
}

#[test]
fn local_listeners_are_handed_to_the_stack() {
    let fx = Fixture::new().unwrap();
    let mut maps = fx.maps().unwrap();
    let https = ListenerKey {
        vip: VIP.octets(),
        port: 443,
        proto: PROTO_TCP,
        _pad: 0,
    };
    maps.upsert_listener(
        https,
        Listener {
            id: 5,
            idle_timeout_s: 60,
            ..Listener::default()
        },
    )
    .unwrap();
    maps.set_listener_flags(&https, LISTENER_F_LOCAL).unwrap();
    for flags in [TCP_SYN, TCP_ACK, TCP_ACK | TCP_PSH, TCP_RST] {
        let mut t = client_tcp(&fx, 0, 40000, flags);
        t.dport = 443;
        let frame = t.frame();
        let before = fx.counters();
        let out = fx.run(fx.cl, &frame).unwrap();
        assert_eq!(
            (out.action, out.frame.as_slice()),
            (XDP_PASS, frame.as_slice())
        );
        assert_eq!(moved(&before, &fx.counters()), [("pass_local", 1)]);
    }
    assert!(maps.flows().unwrap().is_empty());
    let _ = Ipv4Addr::LOCALHOST;
}

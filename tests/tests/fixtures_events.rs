//! `BPF_PROG_TEST_RUN` fixtures of the flow events (the `flow_events` ring) and the per-flow
//! counts behind them: a completed handshake on a listener with `LISTENER_F_EVENTS` writes one
//! start; SYNs (with state or with cookies) write nothing; a listener without the flag writes
//! nothing and counts nothing; a closed flow retired by a new connection on its client port
//! writes its end with both halves' counts; the sweep returns the ends it causes; a full ring
//! counts `events_dropped` and the flows are forwarded all the same.

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use elb_common::{
    Config, FLOW_END_FIN, FLOW_END_IDLE, FLOW_EVENT_END, FLOW_EVENT_START, FLOW_F_EVENTS,
    FlowEvent, LISTENER_F_EVENTS, ListenerKey, PROTO_TCP,
};
use elb_userspace::{agent::sweep, dataplane};
use tests::{
    fixture::{frames::*, *},
    packet::{TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN},
};

fn listener_key() -> ListenerKey {
    ListenerKey {
        vip: VIP.octets(),
        port: 80,
        proto: PROTO_TCP,
        _pad: 0,
    }
}

fn with_events(fx: &Fixture) {
    fx.maps()
        .unwrap()
        .set_listener_flags(&listener_key(), LISTENER_F_EVENTS)
        .unwrap();
}

fn ring(fx: &Fixture) -> RingBuf<MapData> {
    dataplane::flow_events(&fx.pin_root).unwrap()
}

/// Every event waiting in the ring.
fn drain(ring: &mut RingBuf<MapData>) -> Vec<FlowEvent> {
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        out.push(dataplane::parse_flow_event(&item).expect("a whole event"));
    }
    out
}

/// SYN then the client's ACK (no SYN-ACK needed: the client's first ACK completes the
/// handshake as far as the program is concerned); returns the forwarded SYN.
fn connect(fx: &Fixture, i: u8, cport: u16) -> tests::packet::Parsed {
    let fwd = open(fx, i, cport);
    let mut ack = client_tcp(fx, i, cport, TCP_ACK);
    ack.seq = CLIENT_ISN + 1;
    ack.ack = BACKEND_ISN + 1;
    forward(fx, &ack.frame());
    fwd
}

#[test]
fn a_completed_handshake_writes_one_start_and_counts_the_flow() {
    let fx = Fixture::new().unwrap();
    with_events(&fx);
    let mut ring = ring(&fx);
    let fwd = open(&fx, 0, 40000);
    assert!(drain(&mut ring).is_empty(), "a SYN writes nothing");
    let mut synack = backend_tcp(&fx, &fwd, TCP_SYN | TCP_ACK);
    synack.seq = BACKEND_ISN;
    synack.ack = CLIENT_ISN + 1;
    deliver(&fx, &synack.frame());
    let mut ack = client_tcp(&fx, 0, 40000, TCP_ACK);
    ack.seq = CLIENT_ISN + 1;
    ack.ack = BACKEND_ISN + 1;
    forward(&fx, &ack.frame());
    let events = drain(&mut ring);
    assert_eq!(events.len(), 1, "{events:?}");
    let e = events[0];
    assert_eq!(e.kind, FLOW_EVENT_START);
    assert_eq!(e.key, key(client(0), VIP, 40000, 80));
    assert_eq!((e.nat.dst, e.nat.dport), (fwd.dst.octets(), 80));
    assert_eq!((e.nat.src, e.nat.sport), (fwd.src.octets(), fwd.sport));
    assert_eq!(e.listener_id, 0);
    assert_eq!(usize::from(e.backend_id), backend_index(fwd.dst));
    assert!(e.time.wrapping_sub(e.created) < 1000);

    // Data both ways: counted per half (payload bytes, packets).
    forward(&fx, &client_data(&fx, 40000, 100));
    let mut reply = backend_tcp(&fx, &fwd, TCP_ACK | TCP_PSH);
    reply.seq = BACKEND_ISN + 1;
    reply.ack = CLIENT_ISN + 101;
    reply.payload = vec![7; 300];
    deliver(&fx, &reply.frame());
    let maps = fx.maps().unwrap();
    let f = maps.flow(&key(client(0), VIP, 40000, 80)).unwrap().unwrap();
    assert_ne!(f.state.value & FLOW_F_EVENTS, 0);
    assert_eq!((f.packets, f.bytes), (3, 100), "SYN, ACK, data");
    let r = maps
        .flow(&key(fwd.dst, fwd.src, 80, fwd.sport))
        .unwrap()
        .unwrap();
    assert_eq!((r.packets, r.bytes), (2, 300), "SYN-ACK, data");
    assert!(drain(&mut ring).is_empty(), "one start per flow");

    // Both FINs close it; a new SYN on the same client port retires it: its end.
    let mut fin = client_tcp(&fx, 0, 40000, TCP_FIN | TCP_ACK);
    fin.seq = CLIENT_ISN + 101;
    fin.ack = BACKEND_ISN + 301;
    forward(&fx, &fin.frame());
    let mut bfin = backend_tcp(&fx, &fwd, TCP_FIN | TCP_ACK);
    bfin.seq = BACKEND_ISN + 301;
    bfin.ack = CLIENT_ISN + 102;
    deliver(&fx, &bfin.frame());
    let mut again = syn(&fx, 0, 40000);
    again.seq = 90_000;
    let out = fx.run(fx.cl, &again.frame()).unwrap();
    assert_eq!(out.action, XDP_REDIRECT);
    let events = drain(&mut ring);
    assert_eq!(events.len(), 1, "{events:?}");
    let end = events[0];
    assert_eq!((end.kind, end.reason), (FLOW_EVENT_END, FLOW_END_FIN));
    assert_eq!(
        (end.index, end.ident),
        (e.index, e.ident),
        "pairs with its start"
    );
    assert_eq!((end.packets_in, end.bytes_in), (4, 100));
    assert_eq!((end.packets_out, end.bytes_out), (3, 300));
    assert_eq!(fx.counters().events_dropped, 0);
}

#[test]
fn listeners_without_the_flag_write_and_count_nothing() {
    let fx = Fixture::new().unwrap();
    let mut ring = ring(&fx);
    connect(&fx, 0, 40000);
    forward(&fx, &client_data(&fx, 40000, 100));
    assert!(drain(&mut ring).is_empty());
    let f = fx
        .maps()
        .unwrap()
        .flow(&key(client(0), VIP, 40000, 80))
        .unwrap()
        .unwrap();
    assert_eq!(f.state.value & FLOW_F_EVENTS, 0);
    assert_eq!((f.packets, f.bytes), (0, 0));
}

#[test]
fn syns_with_state_or_cookies_write_nothing() {
    let fx = Fixture::new().unwrap();
    with_events(&fx);
    fx.maps()
        .unwrap()
        .set_config(Config {
            syn_backlog: 4,
            ..Config::with_snat_ports(20000, 59999)
        })
        .unwrap();
    let mut ring = ring(&fx);
    let before = fx.counters();
    for p in 0..40 {
        let out = fx.run(fx.cl, &syn(&fx, 1, 30000 + p).frame()).unwrap();
        assert!(out.action == XDP_REDIRECT || out.action == XDP_TX);
    }
    let after = fx.counters();
    assert_eq!(after.syncookies_sent - before.syncookies_sent, 36);
    assert!(
        drain(&mut ring).is_empty(),
        "half-open flows write no events"
    );
    assert_eq!(after.events_dropped, 0);
}

#[test]
fn the_sweep_returns_the_ends_it_causes() {
    let fx = Fixture::new().unwrap();
    with_events(&fx);
    connect(&fx, 0, 40000);
    forward(&fx, &client_data(&fx, 40000, 64));
    // An unconfirmed flow (a SYN only) ends without an event.
    open(&fx, 1, 40001);
    let mut maps = fx.maps().unwrap();
    let report = sweep::sweep(
        &mut maps,
        sweep::monotonic_ns() + Duration::from_secs(120).as_nanos() as u64,
    )
    .unwrap();
    assert_eq!(report.expired_idle, 1);
    assert_eq!(report.expired_half_open, 1);
    assert_eq!(report.ends.len(), 1, "{:?}", report.ends);
    let end = report.ends[0];
    assert_eq!((end.kind, end.reason), (FLOW_EVENT_END, FLOW_END_IDLE));
    assert_eq!(end.key, key(client(0), VIP, 40000, 80));
    assert_eq!((end.packets_in, end.bytes_in), (3, 64));
}

#[test]
fn a_full_ring_counts_events_dropped_and_forwards_all_the_same() {
    let fx = Fixture::new().unwrap();
    with_events(&fx);
    let per_event = size_of::<FlowEvent>() + 8;
    let fits = elb_common::EVENT_RING_BYTES as usize / per_event;
    let mut opened = 0;
    'outer: for i in 0..19u8 {
        for p in 0..2000u16 {
            connect(&fx, i, 20000 + p);
            opened += 1;
            if opened > fits + 10 {
                break 'outer;
            }
        }
    }
    let dropped = fx.counters().events_dropped;
    assert!(
        (1..=20).contains(&dropped),
        "{opened} starts into a ring of {fits}: {dropped} dropped"
    );
    let mut ring = ring(&fx);
    let read = drain(&mut ring);
    assert_eq!(read.len() as u64 + dropped, opened as u64);
    // Read, the ring takes events again.
    connect(&fx, 0, 60000);
    assert_eq!(drain(&mut ring).len(), 1);
    assert_eq!(fx.counters().events_dropped, dropped);
}

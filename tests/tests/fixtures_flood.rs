//! `BPF_PROG_TEST_RUN` fixtures of new flows under a SYN flood: the listener's SYN backlog,
//! SYN cookies, the SYN proxy's handshakes and sequence translation, and floods larger than the
//! flow table.

use std::time::Duration;

use elb_common::{
    Config, FLOW_F_CONFIRMED, FLOW_F_SYNPROXY, FLOW_F_XLATE, SYNPROXY_WSCALE, lifetimes,
};
use elb_userspace::agent::sweep;
use tests::{
    bench::{
        per_packet,
        ring::{self, Ring},
    },
    fixture::{frames::*, *},
    packet::{self, TCP_ACK, TCP_PSH, TCP_SYN},
};

/// Sets the listeners' SYN backlog.
fn set_backlog(fx: &Fixture, backlog: u32) {
    let mut maps = fx.maps().unwrap();
    let cfg = maps.config().unwrap();
    maps.set_config(Config {
        syn_backlog: backlog,
        ..cfg
    })
    .unwrap();
}

/// Client `i`'s SYN with Linux's options (MSS 1460, SACK, timestamps, window scale 7).
fn linux_syn(fx: &Fixture, i: u8, cport: u16) -> packet::Tcp {
    let mut s = syn(fx, i, cport);
    s.tcp_options = packet::syn_options(1460, 7);
    s
}

/// Answers `syn` with a cookie: returns the servo's SYN-ACK.
fn cookie_synack(fx: &Fixture, syn: &packet::Tcp) -> packet::Parsed {
    let out = fx.run(fx.cl, &syn.frame()).unwrap();
    assert_eq!(out.action, XDP_TX, "answered by the servo itself");
    parse(&out.frame)
}

#[test]
fn a_full_backlog_answers_with_cookies_and_a_valid_cookie_opens_a_proxied_flow() {
    let fx = Fixture::new().unwrap();
    set_backlog(&fx, 1);
    // The first SYN takes the backlog's only place (its client never completes).
    open(&fx, 1, 50000);
    let s = linux_syn(&fx, 0, 40000);
    let sa = cookie_synack(&fx, &s);
    assert_eq!(sa.flags, TCP_SYN | TCP_ACK);
    assert_eq!(
        (sa.src, sa.sport, sa.dst, sa.dport),
        (VIP, 80, client(0), 40000)
    );
    assert_eq!((sa.dst_mac, sa.src_mac), (CLIENT_MAC, fx.cl_mac));
    assert_eq!(sa.ack, CLIENT_ISN + 1);
    // MSS, SACK permitted, window scale: no timestamps (a cookie cannot carry them).
    assert_eq!(
        sa.tcp_options,
        [2, 4, 0x05, 0xb4, 4, 2, 1, 3, 3, SYNPROXY_WSCALE, 0, 0]
    );
    let c = fx.counters();
    assert_eq!((c.syncookies_sent, c.new_flows), (1, 1));
    assert_eq!(
        fx.maps().unwrap().flows().unwrap().len(),
        2,
        "no state for the cookie"
    );

    // The client's ACK carries the cookie back: the flow opens, and the backend gets a SYN
    // with the client's ISN and options.
    let cookie = sa.seq;
    let mut ack = client_tcp(&fx, 0, 40000, TCP_ACK);
    ack.seq = CLIENT_ISN + 1;
    ack.ack = cookie.wrapping_add(1);
    ack.window = 502;
    let to_backend = forward(&fx, &ack.frame());
    assert_eq!(to_backend.flags, TCP_SYN);
    assert_eq!(to_backend.seq, CLIENT_ISN, "the client's ISN");
    assert_eq!(
        to_backend.tcp_options,
        [2, 4, 0x05, 0xb4, 4, 2, 1, 3, 3, 7, 0, 0]
    );
    assert_eq!(to_backend.window, 502 << 7, "the window unscaled");
    assert_eq!(fx.counters().syncookies_valid, 1);
    let maps = fx.maps().unwrap();
    let f = maps.flow(&key(client(0), VIP, 40000, 80)).unwrap().unwrap();
    assert_eq!(
        f.state.value & (FLOW_F_SYNPROXY | FLOW_F_CONFIRMED),
        FLOW_F_SYNPROXY | FLOW_F_CONFIRMED,
        "a proxied flow, never half-open"
    );
    assert_eq!(
        maps.listener_state(0).unwrap().half_open,
        1,
        "only the first SYN's"
    );

    // Data from the client before the backend answered is dropped (the client retransmits).
    let mut early = client_tcp(&fx, 0, 40000, TCP_ACK | TCP_PSH);
    early.seq = CLIENT_ISN + 1;
    early.ack = cookie.wrapping_add(1);
    early.payload = b"GET / HTTP/1.1\r\n\r\n".to_vec();
    assert_eq!(fx.run(fx.cl, &early.frame()).unwrap().action, XDP_DROP);
    assert_eq!(fx.counters().drop_synproxy_pending, 1);
    // Later client data waits too.
    let mut later = early.clone();
    later.seq = CLIENT_ISN + 1 + early.payload.len() as u32;
    assert_eq!(fx.run(fx.cl, &later.frame()).unwrap().action, XDP_DROP);
    assert_eq!(fx.counters().drop_synproxy_pending, 2);
    // The client retransmits its first segment after its RTO (200 ms at least) and the backend
    // still has not answered (its SYN or SYN-ACK was lost): the segment becomes the same SYN
    // again, sent to the backend.
    std::thread::sleep(Duration::from_millis(150));
    let again = forward(&fx, &early.frame());
    assert_eq!(again.flags, TCP_SYN);
    assert_eq!(
        (again.src, again.sport, again.dst, again.dport, again.seq),
        (
            to_backend.src,
            to_backend.sport,
            to_backend.dst,
            to_backend.dport,
            to_backend.seq
        ),
        "the same SYN, from the same SNAT tuple"
    );
    assert_eq!(again.tcp_options, to_backend.tcp_options);
    assert_eq!(again.window, to_backend.window);
    assert!(again.payload.is_empty(), "the data stays with the client");
    assert_eq!(fx.counters().synproxy_syn_resent, 1);

    // The backend's SYN-ACK becomes the ACK that completes its handshake, sent back to it.
    let mut synack = backend_tcp(&fx, &to_backend, TCP_SYN | TCP_ACK);
    synack.seq = BACKEND_ISN;
    synack.ack = CLIENT_ISN + 1;
    synack.tcp_options = packet::syn_options(1460, 9);
    let out = fx.run(fx.bk, &synack.frame()).unwrap();
    assert_eq!(out.action, XDP_TX);
    let done = parse(&out.frame);
    assert_eq!(done.flags, TCP_ACK);
    assert_eq!(
        (done.src, done.sport, done.dst, done.dport),
        (
            to_backend.src,
            to_backend.sport,
            to_backend.dst,
            to_backend.dport
        )
    );
    assert_eq!((done.seq, done.ack), (CLIENT_ISN + 1, BACKEND_ISN + 1));
    assert_eq!(
        done.window, 502,
        "the client's window, in the client's scale"
    );
    assert_eq!(fx.counters().synproxy_acks, 1);
    // A retransmitted SYN-ACK gets the same answer.
    assert_eq!(fx.run(fx.bk, &synack.frame()).unwrap().action, XDP_TX);
    let f = maps.flow(&key(client(0), VIP, 40000, 80)).unwrap().unwrap();
    assert_ne!(f.state.value & FLOW_F_XLATE, 0);

    // From now on sequence numbers are translated both ways: the client's ACKs (and SACK
    // edges) into the backend's space, the backend's sequence numbers into the cookie's.
    let delta = cookie.wrapping_sub(BACKEND_ISN);
    let mut data = client_tcp(&fx, 0, 40000, TCP_ACK | TCP_PSH);
    data.seq = CLIENT_ISN + 1;
    data.ack = cookie.wrapping_add(1 + 3000);
    data.window = 1000;
    data.tcp_options = packet::sack_option(cookie.wrapping_add(5001), cookie.wrapping_add(6001));
    data.payload = b"GET / HTTP/1.1\r\n\r\n".to_vec();
    let p = forward(&fx, &data.frame());
    assert_eq!((p.seq, p.ack), (CLIENT_ISN + 1, BACKEND_ISN + 1 + 3000));
    assert_eq!(
        p.tcp_options,
        packet::sack_option(BACKEND_ISN + 5001, BACKEND_ISN + 6001),
        "SACK edges moved with the ACK"
    );
    assert_eq!(p.window, 1000, "both scale the client's windows by 7");
    assert_eq!(p.payload, data.payload);
    let mut answer = backend_tcp(&fx, &to_backend, TCP_ACK | TCP_PSH);
    answer.seq = BACKEND_ISN + 1;
    answer.ack = CLIENT_ISN + 1 + data.payload.len() as u32;
    answer.window = 100;
    answer.payload = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
    let p = deliver(&fx, &answer.frame());
    assert_eq!(p.seq, (BACKEND_ISN + 1).wrapping_add(delta), "= cookie + 1");
    assert_eq!(p.seq, cookie.wrapping_add(1));
    assert_eq!(p.ack, answer.ack);
    assert_eq!(
        p.window,
        100 << (9 - 7),
        "the backend's shift 9 shown in the servo's 7"
    );
    assert_eq!(p.payload, answer.payload);
}

#[test]
fn a_cookie_from_another_tuple_or_time_is_refused() {
    let fx = Fixture::new().unwrap();
    set_backlog(&fx, 1);
    open(&fx, 1, 50000);
    let sa = cookie_synack(&fx, &linux_syn(&fx, 0, 40000));
    // The right cookie from another port, and a guessed one: a RST each, no flow.
    for (port, ack) in [
        (40001, sa.seq.wrapping_add(1)),
        (40000, sa.seq.wrapping_add(2)),
    ] {
        let mut ack_seg = client_tcp(&fx, 0, port, TCP_ACK);
        ack_seg.seq = CLIENT_ISN + 1;
        ack_seg.ack = ack;
        let out = fx.run(fx.cl, &ack_seg.frame()).unwrap();
        assert_eq!(out.action, XDP_TX);
        assert_eq!(parse(&out.frame).flags, packet::TCP_RST);
    }
    let c = fx.counters();
    assert_eq!((c.syncookies_invalid, c.syncookies_valid), (2, 0));
    assert_eq!(fx.maps().unwrap().flows().unwrap().len(), 2);
}

#[test]
fn half_open_flows_expire_and_free_the_backlog() {
    let fx = Fixture::new().unwrap();
    set_backlog(&fx, 2);
    open(&fx, 0, 40000);
    open(&fx, 1, 40001);
    assert_eq!(
        fx.run(fx.cl, &syn(&fx, 2, 40002).frame()).unwrap().action,
        XDP_TX
    );
    assert_eq!(fx.counters().syncookies_sent, 1);
    let mut maps = fx.maps().unwrap();
    let report = sweep::sweep(
        &mut maps,
        sweep::monotonic_ns() + Duration::from_secs(lifetimes::HALF_OPEN_S + 2).as_nanos() as u64,
    )
    .unwrap();
    assert_eq!(report.expired_half_open, 2);
    // The program counted two half-open flows; the sweep's correction says they are gone.
    let counted = maps.listener_state(0).unwrap().half_open;
    assert_eq!(counted - maps.half_open_fix(0).unwrap(), 0);
    assert_eq!(open(&fx, 2, 40003).flags, TCP_SYN, "state again");
}

/// Frames of `n` established flows (handshake completed) and the flows' keys.
fn established_set(fx: &Fixture, n: u16) -> Vec<Vec<u8>> {
    (0..n)
        .map(|k| {
            let port = 20000 + k;
            handshake(fx, (k % 8) as u8, port);
            let mut d = client_tcp(fx, (k % 8) as u8, port, TCP_ACK | TCP_PSH);
            d.seq = CLIENT_ISN + 1;
            d.ack = BACKEND_ISN + 1;
            d.payload = vec![7; 10];
            d.frame()
        })
        .collect()
}

fn flood(fx: &Fixture, syns: u32) -> u32 {
    let mut ring = Ring::new(fx.dp_program()).unwrap();
    ring.set_syn(&per_packet::syn_template(VIP), 0).unwrap();
    let (_, action) = ring.time(fx, ring::UNDER_TEST, fx.cl, syns).unwrap();
    action
}

#[test]
fn a_flood_larger_than_the_table_leaves_established_flows_intact() {
    // A table of 4096 slots, 200 established flows, 100,000 spoofed SYNs.
    let fx = Fixture::with_conntrack(4096).unwrap();
    per_packet::prepare(&fx).unwrap();
    set_backlog(&fx, 0); // the default
    let set = established_set(&fx, 200);
    let action = flood(&fx, 100_000);
    let c = fx.counters();
    assert_eq!(
        action, XDP_TX,
        "the flood's last SYN was answered with a cookie"
    );
    assert!(c.new_flows >= 200 && c.new_flows <= 200 + u64::from(elb_common::DEFAULT_SYN_BACKLOG));
    assert_eq!(
        c.syncookies_sent + c.new_flows - 200,
        100_000,
        "every SYN got state or a cookie: {c:?}"
    );
    for frame in &set {
        forward(&fx, frame);
    }
}

#[test]
fn without_cookies_a_flood_fills_the_table_and_still_evicts_nothing() {
    // The SYN backlog at its maximum: every SYN wants state, and the table runs out.
    let fx = Fixture::with_conntrack(4096).unwrap();
    per_packet::prepare(&fx).unwrap();
    set_backlog(&fx, u32::MAX);
    let set = established_set(&fx, 200);
    flood(&fx, 20_000);
    let c = fx.counters();
    assert!(c.drop_conntrack_full > 0, "{c:?}");
    assert_eq!(
        c.syncookies_sent, c.drop_conntrack_full,
        "SYNs that found no room got a cookie instead"
    );
    for frame in &set {
        forward(&fx, frame);
    }
}

#[test]
fn a_port_reused_while_the_backlog_is_full_opens_a_new_flow_not_the_closed_one() {
    let fx = Fixture::new().unwrap();
    // An ordinary flow, ended by a RST (closed: only its grace remains).
    let old = handshake(&fx, 0, 40000);
    let mut rst = client_tcp(&fx, 0, 40000, packet::TCP_RST | TCP_ACK);
    rst.seq = CLIENT_ISN + 1;
    rst.ack = BACKEND_ISN + 1;
    assert_eq!(fx.run(fx.cl, &rst.frame()).unwrap().action, XDP_REDIRECT);
    // A flood filled the backlog meanwhile.
    set_backlog(&fx, 1);
    open(&fx, 1, 50000);
    // The client reuses its port (it closed second: no TIME_WAIT on its side). Its SYN gets a
    // cookie, and the closed flow ends at once.
    let mut s = linux_syn(&fx, 0, 40000);
    s.seq = CLIENT_ISN + 7777;
    let sa = cookie_synack(&fx, &s);
    let maps = fx.maps().unwrap();
    assert_eq!(
        maps.flow(&key(client(0), VIP, 40000, 80)).unwrap(),
        None,
        "the closed flow's forward half is gone"
    );
    let reserved = maps
        .flow(&key(old.dst, SNAT, 80, old.sport))
        .unwrap()
        .unwrap();
    assert_ne!(
        reserved.state.value & elb_common::FLOW_F_RESERVED,
        0,
        "its SNAT tuple stays reserved"
    );
    // The cookie's ACK opens a new flow: a SYN to a backend from another SNAT tuple, never a
    // segment into the old connection.
    let mut ack = client_tcp(&fx, 0, 40000, TCP_ACK);
    ack.seq = CLIENT_ISN + 7778;
    ack.ack = sa.seq.wrapping_add(1);
    let to_backend = forward(&fx, &ack.frame());
    assert_eq!(to_backend.flags, TCP_SYN);
    assert_eq!(to_backend.seq, CLIENT_ISN + 7777);
    assert_ne!(
        (to_backend.dst, to_backend.sport),
        (old.dst, old.sport),
        "a new SNAT tuple"
    );
    assert_eq!(fx.counters().syncookies_valid, 1);
}

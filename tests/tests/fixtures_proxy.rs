//! `BPF_PROG_TEST_RUN` fixtures of PROXY protocol v1 in XDP: the header inserted into the
//! client's first data segment (and its retransmissions), sequence and acknowledgement
//! translation for the rest of the flow (SACK edges included), the MSS the client is offered,
//! the MTU, the SYN proxy combined with it, and flows without it left alone.
//!
//! Every output frame is parsed with `frames::parse`, which recomputes the IPv4 and TCP
//! checksums in full.

use elb_common::{Config, LISTENER_F_PROXY_V1, ListenerKey, PROTO_TCP, csum};
use tests::{
    fixture::{frames::*, *},
    packet::{self, ETH_LEN, TCP_ACK, TCP_PSH, TCP_SYN},
};

/// Gives the fixture's listener (VIP:80) the PROXY protocol flag.
fn proxy_listener(fx: &Fixture) {
    let key = ListenerKey {
        vip: VIP.octets(),
        port: 80,
        proto: PROTO_TCP,
        _pad: 0,
    };
    fx.maps()
        .unwrap()
        .set_listener_flags(&key, LISTENER_F_PROXY_V1)
        .unwrap();
}

/// The header the backend must see for client `i` port `cport`.
fn header(i: u8, cport: u16) -> Vec<u8> {
    format!("PROXY TCP4 {} {VIP} {cport} 80\r\n", client(i)).into_bytes()
}

/// The handshake with Linux-like options; returns the forwarded SYN and the SYN-ACK as the
/// client got it.
fn handshake_with_options(fx: &Fixture, i: u8, cport: u16) -> (packet::Parsed, packet::Parsed) {
    let mut s = syn(fx, i, cport);
    s.tcp_options = packet::syn_options(1460, 7);
    let out = fx.run(fx.cl, &s.frame()).unwrap();
    assert_eq!(out.action, XDP_REDIRECT);
    let fwd = parse(&out.frame);
    let mut synack = backend_tcp(fx, &fwd, TCP_SYN | TCP_ACK);
    synack.seq = BACKEND_ISN;
    synack.ack = CLIENT_ISN + 1;
    synack.tcp_options = packet::syn_options(1460, 9);
    let sa = deliver(fx, &synack.frame());
    let mut ack = client_tcp(fx, i, cport, TCP_ACK);
    ack.seq = CLIENT_ISN + 1;
    ack.ack = BACKEND_ISN + 1;
    let p = forward(fx, &ack.frame());
    assert_eq!(
        (p.seq, p.ack, p.payload.len()),
        (CLIENT_ISN + 1, BACKEND_ISN + 1, 0),
        "the handshake's ACK as it came"
    );
    (fwd, sa)
}

/// A data segment of client `i` port `cport`.
fn data(fx: &Fixture, i: u8, cport: u16, seq: u32, payload: &[u8]) -> packet::Tcp {
    let mut d = client_tcp(fx, i, cport, TCP_ACK | TCP_PSH);
    d.seq = seq;
    d.ack = BACKEND_ISN + 1;
    d.payload = payload.to_vec();
    d
}

#[test]
fn the_first_data_segment_carries_the_header_and_the_flow_is_translated() {
    let fx = Fixture::new().unwrap();
    proxy_listener(&fx);
    // Port 40000: a 43-byte header (odd: the payload moves to the other byte lane of the
    // checksum); port 4000: 42 bytes.
    for (cport, len) in [(40000u16, 43usize), (4000, 42)] {
        let hdr = header(0, cport);
        assert_eq!(hdr.len(), len);
        let (fwd, sa) = handshake_with_options(&fx, 0, cport);
        assert_eq!(
            &sa.tcp_options[..4],
            &[2, 4, 0x05, 0x7c],
            "the client is offered 1460 - 56: room for the longest header"
        );
        let before = fx.counters();

        let body = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let first = data(&fx, 0, cport, CLIENT_ISN + 1, body);
        let p = forward(&fx, &first.frame());
        assert_eq!(&p.payload[..len], &hdr[..], "the header first");
        assert_eq!(&p.payload[len..], body, "then the client's bytes");
        assert_eq!((p.seq, p.ack), (CLIENT_ISN + 1, BACKEND_ISN + 1));
        assert_eq!((p.src, p.dst, p.dport), (SNAT, fwd.dst, 80));
        assert_eq!(fx.counters().proxy_headers, before.proxy_headers + 1);

        // A retransmission of that segment carries the same header again.
        let again = forward(&fx, &first.frame());
        assert_eq!(again, p, "the same segment again");
        assert_eq!(fx.counters().proxy_headers, before.proxy_headers + 2);
        // A retransmission that carries more (the sender coalesced its queue) too.
        let more = [&body[..], b"and more"].concat();
        let bigger = forward(&fx, &data(&fx, 0, cport, CLIENT_ISN + 1, &more).frame());
        assert_eq!(bigger.payload, [&hdr[..], &more[..]].concat());
        assert_eq!(bigger.seq, CLIENT_ISN + 1);
        assert_eq!(fx.counters().proxy_headers, before.proxy_headers + 3);

        // Later segments move up by the header's length.
        let next_seq = CLIENT_ISN + 1 + body.len() as u32;
        let second = forward(&fx, &data(&fx, 0, cport, next_seq, b"more").frame());
        assert_eq!(second.seq, next_seq + len as u32);
        assert_eq!(second.payload, b"more");
        // A pure ACK after the data, and a keep-alive probe (one byte before what the client
        // sent) keep their distance from what the backend has.
        let mut ka = client_tcp(&fx, 0, cport, TCP_ACK);
        ka.seq = next_seq + 3;
        ka.ack = BACKEND_ISN + 1;
        assert_eq!(forward(&fx, &ka.frame()).seq, next_seq + 3 + len as u32);
        ka.seq = CLIENT_ISN;
        assert_eq!(
            forward(&fx, &ka.frame()).seq,
            CLIENT_ISN,
            "before the header: untouched"
        );

        // The backend's ACKs and SACK edges move down into the client's space.
        let mut answer = backend_tcp(&fx, &fwd, TCP_ACK | TCP_PSH);
        answer.seq = BACKEND_ISN + 1;
        let acked = next_seq + len as u32;
        answer.ack = acked;
        answer.tcp_options = packet::sack_option(acked + 100, acked + 200);
        answer.payload = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        let r = deliver(&fx, &answer.frame());
        assert_eq!((r.seq, r.ack), (BACKEND_ISN + 1, next_seq));
        assert_eq!(
            r.tcp_options,
            packet::sack_option(next_seq + 100, next_seq + 200)
        );
        assert_eq!(r.payload, answer.payload);
        // An ACK of part of the header acknowledges none of the client's bytes.
        answer.ack = CLIENT_ISN + 1 + 10;
        answer.tcp_options.clear();
        assert_eq!(deliver(&fx, &answer.frame()).ack, CLIENT_ISN + 1);
        // The SYN-ACK's acknowledgement was not moved either (checked by the handshake: the
        // client's ACK came through).
        assert_eq!(sa.ack, CLIENT_ISN + 1);
        assert_eq!(fx.counters().drop_proxy_failed, 0);
    }
}

#[test]
fn a_flow_without_the_policy_is_left_alone() {
    let fx = Fixture::new().unwrap();
    let (_, sa) = handshake_with_options(&fx, 0, 40000);
    assert_eq!(
        &sa.tcp_options[..4],
        &[2, 4, 0x05, 0xb4],
        "the backend's MSS"
    );
    let body = b"GET / HTTP/1.1\r\n\r\n";
    let first = data(&fx, 0, 40000, CLIENT_ISN + 1, body);
    let p = forward(&fx, &first.frame());
    assert_eq!((p.seq, &p.payload[..]), (CLIENT_ISN + 1, &body[..]));
    let next = data(&fx, 0, 40000, CLIENT_ISN + 1 + body.len() as u32, b"x");
    assert_eq!(forward(&fx, &next.frame()).seq, next.seq);
    let c = fx.counters();
    assert_eq!((c.proxy_headers, c.drop_proxy_failed), (0, 0));
}

#[test]
fn a_first_segment_without_room_for_the_header_gets_fragmentation_needed() {
    let fx = Fixture::new().unwrap();
    proxy_listener(&fx);
    handshake_with_options(&fx, 0, 40000);
    // 1500 bytes with DF: fits the link as sent, not with the 43-byte header.
    let big = data(&fx, 0, 40000, CLIENT_ISN + 1, &[7; 1460]);
    let frame = big.frame();
    assert_eq!(frame.len(), ETH_LEN + 1500);
    let out = fx.run(fx.cl, &frame).unwrap();
    assert_eq!(out.action, XDP_TX, "answered to the client");
    let icmp = &out.frame[ETH_LEN + 20..];
    assert_eq!(csum::checksum(icmp), 0, "ICMP checksum");
    assert_eq!(
        (icmp[0], icmp[1], u16::from_be_bytes([icmp[6], icmp[7]])),
        (3, 4, 1500 - 43),
        "room for the header"
    );
    // Without DF the kernel would fragment it without the header: dropped and counted.
    let mut no_df = big.clone();
    no_df.frag_off = 0;
    assert_eq!(fx.run(fx.cl, &no_df.frame()).unwrap().action, XDP_DROP);
    assert_eq!(fx.counters().drop_proxy_failed, 1);
    // One that fits after the insertion goes through.
    let fits = data(&fx, 0, 40000, CLIENT_ISN + 1, &[7; 1460 - 43]);
    let p = forward(&fx, &fits.frame());
    assert_eq!(p.payload.len(), 1460);
    assert_eq!(fx.counters().proxy_headers, 1);
}

#[test]
fn the_syn_proxy_and_the_header_combine() {
    let fx = Fixture::new().unwrap();
    proxy_listener(&fx);
    let mut maps = fx.maps().unwrap();
    let cfg = maps.config().unwrap();
    maps.set_config(Config {
        syn_backlog: 1,
        ..cfg
    })
    .unwrap();
    // The first SYN takes the backlog's only place; the next is answered with a cookie.
    open(&fx, 1, 50000);
    let mut s = syn(&fx, 0, 40000);
    s.tcp_options = packet::syn_options(1460, 7);
    let out = fx.run(fx.cl, &s.frame()).unwrap();
    assert_eq!(out.action, XDP_TX);
    let sa = parse(&out.frame);
    assert_eq!(
        &sa.tcp_options[..4],
        &[2, 4, 0x05, 0x7c],
        "the cookie's SYN-ACK offers room for the header"
    );
    let cookie = sa.seq;
    let mut ack = client_tcp(&fx, 0, 40000, TCP_ACK);
    ack.seq = CLIENT_ISN + 1;
    ack.ack = cookie.wrapping_add(1);
    let to_backend = forward(&fx, &ack.frame());
    assert_eq!(to_backend.flags, TCP_SYN);
    let mut synack = backend_tcp(&fx, &to_backend, TCP_SYN | TCP_ACK);
    synack.seq = BACKEND_ISN;
    synack.ack = CLIENT_ISN + 1;
    synack.tcp_options = packet::syn_options(1460, 7);
    assert_eq!(fx.run(fx.bk, &synack.frame()).unwrap().action, XDP_TX);

    // The first data segment: the header inserted, the ACK (and SACK edges) translated into
    // the backend's space by the SYN proxy.
    let hdr = header(0, 40000);
    let mut d = client_tcp(&fx, 0, 40000, TCP_ACK | TCP_PSH);
    d.seq = CLIENT_ISN + 1;
    d.ack = cookie.wrapping_add(1);
    d.tcp_options = packet::sack_option(cookie.wrapping_add(501), cookie.wrapping_add(601));
    d.payload = b"hello".to_vec();
    let p = forward(&fx, &d.frame());
    assert_eq!([&hdr[..], b"hello"].concat(), p.payload);
    assert_eq!((p.seq, p.ack), (CLIENT_ISN + 1, BACKEND_ISN + 1));
    assert_eq!(
        p.tcp_options,
        packet::sack_option(BACKEND_ISN + 501, BACKEND_ISN + 601)
    );
    // The backend's answer: its sequence numbers into the cookie's space, its ACK back by
    // the header's length.
    let mut answer = backend_tcp(&fx, &to_backend, TCP_ACK | TCP_PSH);
    answer.seq = BACKEND_ISN + 1;
    answer.ack = CLIENT_ISN + 1 + hdr.len() as u32 + 5;
    answer.payload = b"hi".to_vec();
    let r = deliver(&fx, &answer.frame());
    assert_eq!((r.seq, r.ack), (cookie.wrapping_add(1), CLIENT_ISN + 1 + 5));
    // The client's next segment: up by the header's length.
    let mut d2 = client_tcp(&fx, 0, 40000, TCP_ACK);
    d2.seq = CLIENT_ISN + 1 + 5;
    d2.ack = cookie.wrapping_add(3);
    d2.payload = b"x".to_vec();
    let p = forward(&fx, &d2.frame());
    assert_eq!(
        (p.seq, p.ack),
        (CLIENT_ISN + 1 + 5 + hdr.len() as u32, BACKEND_ISN + 3)
    );
    assert_eq!(fx.counters().proxy_headers, 1);
}

//! Packet-in / packet-out fixtures of the XDP program through `BPF_PROG_TEST_RUN`: the real
//! program, verified by the kernel, run on crafted frames. Every output frame's checksums are
//! checked against a full recomputation (`packet::parse_tcp`).

use std::{net::Ipv4Addr, time::Duration};

use elb_common::{
    BACKEND_DRAINING, BACKEND_REMOVED, Config, Counters, FLOW_F_CONFIRMED, FLOW_F_FIN_BACKEND,
    FLOW_F_FIN_CLIENT, FLOW_F_REPLY, FLOW_F_RESERVED, FLOW_F_RST, LISTENER_F_LOCAL, ListenerKey,
    PROTO_TCP, csum,
};
use elb_userspace::agent::sweep;
use tests::{
    fixture::{frames::*, *},
    packet::{self, ETH_LEN, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, Tcp},
};

/// Client `i`'s SYN from port `cport` (the fixture-independent form, for frames built before a
/// fixture exists or compared byte for byte).
fn syn_of(fx: &Fixture, i: u8, cport: u16) -> Tcp {
    syn(fx, i, cport)
}

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
fn syn_to_vip_is_rewritten_to_a_backend_with_correct_checksums() {
    let fx = Fixture::new().unwrap();
    let input = syn(&fx, 0, 40000);
    let out = fx.run(fx.cl, &input.frame()).unwrap();
    assert_eq!(out.action, XDP_REDIRECT);
    let p = parse(&out.frame);
    assert_eq!(p.ttl, 63, "TTL decremented, as a router does");
    assert_eq!(
        (p.dst, p.dport),
        (backend(0), 80),
        "first flow goes to the first backend"
    );
    assert_eq!(
        p.src, SNAT,
        "source is the servo's address on the backend side"
    );
    assert_eq!(p.sport, 40000, "the client's port is tried first");
    assert_eq!(p.dst_mac, backend_mac(0), "next hop resolved by the FIB");
    assert_eq!(p.src_mac, fx.bk_mac, "sent from the backend-side interface");
    assert_eq!(
        (p.seq, p.flags, p.tcp_options.as_slice()),
        (input.seq, TCP_SYN, &[][..]),
        "nothing else changes"
    );
    let c = fx.counters();
    assert_eq!((c.new_flows, c.fwd_redirect, c.rx_packets), (1, 1, 1));

    // Both halves of the flow exist.
    let maps = fx.maps().unwrap();
    let fwd = maps
        .flow(&key(client(0), VIP, 40000, 80))
        .unwrap()
        .expect("forward entry");
    assert_eq!(
        (fwd.nat.src, fwd.nat.dst, fwd.nat.sport, fwd.nat.dport),
        (SNAT.octets(), backend(0).octets(), 40000, 80)
    );
    let rev = maps
        .flow(&key(backend(0), SNAT, 80, 40000))
        .unwrap()
        .expect("reverse entry");
    assert_eq!(
        (rev.nat.src, rev.nat.dst, rev.nat.sport, rev.nat.dport),
        (VIP.octets(), client(0).octets(), 80, 40000)
    );
    assert_eq!(rev.state.value & FLOW_F_REPLY, FLOW_F_REPLY);
    assert_eq!(
        fwd.state.ident, rev.state.ident,
        "both halves share the flow's identity"
    );
    assert_ne!(fwd.state.ident, 0);
    // Replies go back to where the SYN came from: its interface and source MAC.
    assert_eq!(
        (rev.hop_ifindex, rev.hop_dmac, rev.hop_smac, rev.hop_mtu),
        (fx.cl, CLIENT_MAC, fx.cl_mac, 1500)
    );
    // Until the client completes the handshake, the flow counts against the listener's SYN
    // backlog.
    assert_eq!(fwd.state.value & FLOW_F_CONFIRMED, 0);
    assert_eq!(maps.listener_state(0).unwrap().half_open, 1);
    let mut ack = client_tcp(&fx, 0, 40000, TCP_ACK);
    ack.seq = CLIENT_ISN + 1;
    forward(&fx, &ack.frame());
    let fwd = maps.flow(&key(client(0), VIP, 40000, 80)).unwrap().unwrap();
    assert_ne!(
        fwd.state.value & FLOW_F_CONFIRMED,
        0,
        "confirmed by the client's ACK"
    );
    assert_eq!(maps.listener_state(0).unwrap().half_open, 0);
}

#[test]
fn client_port_outside_the_snat_range_gets_a_port_inside_it() {
    let fx = Fixture::new().unwrap();
    let p = open(&fx, 0, 1234);
    assert!(
        (20000..=59999).contains(&p.sport),
        "SNAT port {} within the range",
        p.sport
    );
}

#[test]
fn consecutive_new_flows_rotate_over_three_backends() {
    let fx = Fixture::new().unwrap();
    let order: Vec<usize> = (0..9u16)
        .map(|n| backend_index(open(&fx, (n % 5) as u8, 41000 + n).dst))
        .collect();
    assert_eq!(order, [0, 1, 2, 0, 1, 2, 0, 1, 2]);
}

#[test]
fn new_flows_opened_on_two_cpus_at_once_still_split_exactly_evenly() {
    // `elb` predicts each SYN's backend from the round-robin cursor (to start reading its table
    // slots early) and the later stages use the prediction only when the turn they take is the
    // predicted one. SYNs racing on two CPUs take each other's predicted turns: the split must
    // stay exact all the same.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        eprintln!("skipped: needs two CPUs to race SYNs, this machine has {cpus}");
        return;
    }
    let fx = Fixture::new().unwrap();
    // 2 x 450 SYNs stay under the listener's SYN backlog (1,024): every one opens a flow.
    const PER_CPU: u16 = 450;
    let frames = |i: u8, base: u16| -> Vec<Vec<u8>> {
        (0..PER_CPU)
            .map(|n| syn(&fx, i, base + n).frame())
            .collect()
    };
    let (a, b) = (frames(0, 20000), frames(1, 30000));
    let (va, vb) = std::thread::scope(|s| {
        let ta = s.spawn(|| fx.run_on_cpu(0, fx.cl, &a).unwrap());
        let tb = s.spawn(|| fx.run_on_cpu(1, fx.cl, &b).unwrap());
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert!(va.iter().chain(&vb).all(|o| o.action == XDP_REDIRECT));
    assert_eq!(fx.counters().new_flows, 2 * u64::from(PER_CPU));
    let mut per_backend = [0u32; 3];
    let mut first_cpu = vec![usize::MAX; usize::from(PER_CPU)];
    for (k, f) in fx.maps().unwrap().flows().unwrap() {
        if f.state.value & FLOW_F_REPLY != 0 {
            continue;
        }
        let b = backend_index(Ipv4Addr::from(f.nat.dst));
        per_backend[b] += 1;
        if k.src == client(0).octets() {
            first_cpu[usize::from(k.sport - 20000)] = b;
        }
    }
    assert_eq!(per_backend, [300, 300, 300]);
    // How often the other CPU took a turn between two of this CPU's SYNs (0 would mean the
    // runs did not overlap; printed, since the scheduler decides).
    let interleaved = first_cpu
        .windows(2)
        .filter(|w| w[1] != (w[0] + 1) % 3)
        .count();
    eprintln!("the other CPU took turns between {interleaved} of {PER_CPU} consecutive SYNs");
}

#[test]
fn map_changes_reach_the_next_syn_on_every_cpu() {
    // Each CPU keeps copies of what every SYN reads from hash maps (the listener, its backend
    // set, the SNAT addresses), trusted only while the maps' generation is the one they were
    // made at: a change must reach the very next SYN on a CPU whose copies predate it.
    let fx = Fixture::new().unwrap();
    let cpus = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(2);
    let mut port = 40000u16;
    let mut syn_on = |cpu: usize| {
        port += 1;
        let before = fx.counters();
        let out = fx
            .run_on_cpu(cpu, fx.cl, &[syn(&fx, 0, port).frame()])
            .unwrap()
            .remove(0);
        (out, moved(&before, &fx.counters()))
    };
    let listener = ListenerKey {
        vip: VIP.octets(),
        port: 80,
        proto: PROTO_TCP,
        _pad: 0,
    };
    let mut maps = fx.maps().unwrap();
    for cpu in 0..cpus {
        let (out, _) = syn_on(cpu);
        assert_eq!(out.action, XDP_REDIRECT, "CPU {cpu}: copies made");
    }

    maps.replace_backend_set(0, &[2]).unwrap();
    for cpu in 0..cpus {
        let (out, _) = syn_on(cpu);
        assert_eq!(out.action, XDP_REDIRECT);
        assert_eq!(parse(&out.frame).dst, backend(2), "CPU {cpu}: the new set");
    }

    let extra = Ipv4Addr::new(198, 19, 0, 2);
    fx.ns
        .ip(&["addr", "add", &format!("{extra}/24"), "dev", "bk"])
        .unwrap();
    maps.set_snat_addrs(fx.bk, &[extra]).unwrap();
    for cpu in 0..cpus {
        let (out, _) = syn_on(cpu);
        assert_eq!(out.action, XDP_REDIRECT);
        assert_eq!(
            parse(&out.frame).src,
            extra,
            "CPU {cpu}: the new SNAT address"
        );
    }

    maps.set_listener_flags(&listener, LISTENER_F_LOCAL)
        .unwrap();
    for cpu in 0..cpus {
        let (out, moved) = syn_on(cpu);
        assert_eq!(out.action, XDP_PASS, "CPU {cpu}: now the engine's listener");
        assert_eq!(moved, [("pass_local", 1)]);
    }

    maps.remove_listener(&listener).unwrap();
    for cpu in 0..cpus {
        let (out, moved) = syn_on(cpu);
        assert_eq!(out.action, XDP_PASS, "CPU {cpu}: no listener any more");
        assert_eq!(moved, [("pass_not_ours", 1)]);
    }
}

#[test]
fn syn_retransmission_follows_its_flow() {
    let fx = Fixture::new().unwrap();
    let first = open(&fx, 0, 40001);
    let again = open(&fx, 0, 40001);
    assert_eq!((again.dst, again.sport), (first.dst, first.sport));
    assert_eq!(fx.counters().new_flows, 1);
    // The next new client still gets the next backend.
    assert_eq!(backend_index(open(&fx, 1, 40002).dst), 1);
}

#[test]
fn established_packets_follow_their_flow() {
    let fx = Fixture::new().unwrap();
    let first = open(&fx, 0, 40000);
    open(&fx, 1, 40000); // another flow in between moves the cursor
    let mut data = Tcp::new((client(0), 40000), (VIP, 80), TCP_ACK | TCP_PSH);
    data.payload = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    let out = fx.run(fx.cl, &data.frame()).unwrap();
    assert_eq!(out.action, XDP_REDIRECT);
    let p = parse(&out.frame);
    assert_eq!(
        (p.src, p.sport, p.dst, p.dport),
        (first.src, first.sport, first.dst, first.dport)
    );
    assert_eq!(p.payload, data.payload);
    assert_eq!(fx.counters().new_flows, 2);
}

#[test]
fn replies_are_reverse_natted_to_the_client() {
    let fx = Fixture::new().unwrap();
    let fwd = open(&fx, 3, 45000);
    let mut reply = backend_tcp(&fx, &fwd, TCP_SYN | TCP_ACK);
    reply.payload = vec![7; 100];
    let out = fx.run(fx.bk, &reply.frame()).unwrap();
    assert_eq!(
        out.action, XDP_REDIRECT,
        "towards the client-side interface"
    );
    let p = parse(&out.frame);
    assert_eq!((p.src, p.sport), (VIP, 80));
    assert_eq!((p.dst, p.dport), (client(3), 45000));
    assert_eq!((p.dst_mac, p.src_mac), (CLIENT_MAC, fx.cl_mac));
    assert_eq!(p.payload, reply.payload);
    assert_eq!(p.ttl, 63);
    let stats = fx
        .maps()
        .unwrap()
        .backend_stats(backend_index(fwd.dst) as u32)
        .unwrap();
    assert_eq!(
        (stats.packets_in, stats.packets_out, stats.new_flows),
        (1, 1, 1)
    );
}

/// Runs a bad frame and checks: the verdict, exactly one named counter moved (besides
/// rx_packets), and the frame came back unchanged.
fn expect_untouched(fx: &Fixture, ifindex: u32, frame: &[u8], action: u32, counter: &str) {
    let before = fx.counters();
    let out = fx.run(ifindex, frame).unwrap();
    let after = fx.counters();
    assert_eq!(out.action, action, "{counter}: verdict");
    assert_eq!(out.frame, frame, "{counter}: frame must be unchanged");
    assert_eq!(
        moved(&before, &after),
        [(counter, 1)],
        "exactly the {counter} counter moves, by one"
    );
    let _ = Counters::NAMES;
}

#[test]
fn malformed_and_foreign_packets_get_their_verdict_and_counter() {
    let fx = Fixture::new().unwrap();
    let good = syn(&fx, 0, 40000).frame();

    let mut arp = good.clone();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    expect_untouched(&fx, fx.cl, &arp, XDP_PASS, "pass_not_ipv4");

    expect_untouched(
        &fx,
        fx.cl,
        &good[..ETH_LEN + 10],
        XDP_DROP,
        "drop_ip_truncated",
    );

    let mut bad_version = good.clone();
    bad_version[ETH_LEN] = 0x65;
    expect_untouched(&fx, fx.cl, &bad_version, XDP_DROP, "drop_ip_malformed");

    let mut short_ihl = good.clone();
    short_ihl[ETH_LEN] = 0x44;
    expect_untouched(&fx, fx.cl, &short_ihl, XDP_DROP, "drop_ip_malformed");

    let mut long_total = good.clone();
    long_total[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&1400u16.to_be_bytes());
    expect_untouched(&fx, fx.cl, &long_total, XDP_DROP, "drop_ip_malformed");

    let mut fragment = syn(&fx, 0, 40000);
    fragment.frag_off = 0x2000; // more fragments
    expect_untouched(&fx, fx.cl, &fragment.frame(), XDP_DROP, "drop_fragment");
    fragment.frag_off = 0x0010; // a later fragment
    expect_untouched(&fx, fx.cl, &fragment.frame(), XDP_DROP, "drop_fragment");

    let mut options = syn(&fx, 0, 40000);
    options.ip_options = vec![1, 1, 1, 0]; // NOP NOP NOP EOL
    expect_untouched(&fx, fx.cl, &options.frame(), XDP_DROP, "drop_ip_options");

    let udp = packet::ipv4_frame(
        CLIENT_MAC,
        fx.cl_mac,
        client(0),
        VIP,
        17,
        0x4000,
        &[],
        &[0x9c, 0x40, 0, 80, 0, 8, 0, 0],
    );
    expect_untouched(&fx, fx.cl, &udp, XDP_PASS, "pass_not_tcp");

    let echo = packet::ipv4_frame(
        CLIENT_MAC,
        fx.cl_mac,
        client(0),
        VIP,
        1,
        0x4000,
        &[],
        &[8, 0, 0xf7, 0xff, 0, 0, 0, 0],
    );
    expect_untouched(&fx, fx.cl, &echo, XDP_PASS, "pass_not_tcp");

    let rst = Tcp::new((client(0), 40000), (VIP, 80), TCP_RST).frame();
    expect_untouched(&fx, fx.cl, &rst, XDP_DROP, "drop_no_flow");

    let other_port = Tcp::new((client(0), 40000), (VIP, 22), TCP_SYN).frame();
    expect_untouched(&fx, fx.cl, &other_port, XDP_PASS, "pass_not_ours");

    let other_host = Tcp::new(
        (client(0), 40000),
        (Ipv4Addr::new(198, 18, 0, 99), 80),
        TCP_SYN,
    )
    .frame();
    expect_untouched(&fx, fx.cl, &other_host, XDP_PASS, "pass_not_ours");

    // IP says TCP, but only 10 bytes of it are there.
    let truncated_tcp = packet::ipv4_frame(
        CLIENT_MAC,
        fx.cl_mac,
        client(0),
        VIP,
        6,
        0x4000,
        &[],
        &good[ETH_LEN + 20..ETH_LEN + 30],
    );
    expect_untouched(&fx, fx.cl, &truncated_tcp, XDP_DROP, "drop_tcp_truncated");

    let mut bad_doff = good.clone();
    bad_doff[ETH_LEN + 20 + 12] = 3 << 4;
    // (Fix the IP header checksum? The TCP header is not covered by it: nothing to fix.)
    expect_untouched(&fx, fx.cl, &bad_doff, XDP_DROP, "drop_tcp_truncated");

    // A corrupted IPv4 header (RFC 1812: routers verify its checksum).
    let mut bad_ip_sum = good.clone();
    bad_ip_sum[ETH_LEN + 10] ^= 0x40;
    expect_untouched(&fx, fx.cl, &bad_ip_sum, XDP_DROP, "drop_ip_checksum");
    // Same for stray traffic and for a flow's packets: nothing with a bad header goes on.
    let mut bad_udp = udp.clone();
    bad_udp[ETH_LEN + 11] ^= 1;
    expect_untouched(&fx, fx.cl, &bad_udp, XDP_DROP, "drop_ip_checksum");

    // A SYN whose TCP checksum is wrong creates no state.
    let mut bad_tcp_sum = good.clone();
    bad_tcp_sum[ETH_LEN + 20 + 16] ^= 0x10;
    expect_untouched(&fx, fx.cl, &bad_tcp_sum, XDP_DROP, "drop_tcp_checksum");
    let mut with_options = syn(&fx, 0, 40001);
    with_options.tcp_options = packet::syn_options(1460, 7);
    with_options.payload = vec![0x5a; 101];
    let mut bad = with_options.frame();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    expect_untouched(&fx, fx.cl, &bad, XDP_DROP, "drop_tcp_checksum");
    assert!(
        fx.maps().unwrap().flows().unwrap().is_empty(),
        "no state at all"
    );

    // Not a single new flow came out of all that.
    assert_eq!(fx.counters().new_flows, 0);
    // And a SYN with options and data, checksum right, does open one.
    assert_eq!(
        fx.run(fx.cl, &with_options.frame()).unwrap().action,
        XDP_REDIRECT
    );
}

#[test]
fn runt_frames_are_not_read_past_their_end() {
    let fx = Fixture::new().unwrap();
    // An Ethernet header announcing IPv4 with nothing behind it.
    let frame = &syn_of(&fx, 0, 40000).frame()[..ETH_LEN];
    expect_untouched(&fx, fx.cl, frame, XDP_DROP, "drop_ip_truncated");
    // Shorter than an Ethernet header. BPF_PROG_TEST_RUN refuses XDP input below 14 bytes
    // (EINVAL), so this case is checked only if the kernel accepts it.
    let runt = &frame[..10];
    match fx.run(fx.cl, runt) {
        Ok(out) => {
            assert_eq!(out.action, XDP_PASS);
            assert_eq!(out.frame, runt);
        }
        Err(e) => {
            println!("kernel refused a 10-byte test frame ({e:#}); covered by the 14-byte case")
        }
    }
}

/// An IPv4 packet with its TTL one lower and its header checksum recomputed.
fn decremented(ip: &[u8]) -> Vec<u8> {
    let mut ip = ip.to_vec();
    ip[8] -= 1;
    ip[10..12].copy_from_slice(&[0, 0]);
    let c = csum::checksum(&ip[..20]);
    ip[10..12].copy_from_slice(&c.to_ne_bytes());
    ip
}

#[test]
fn icmp_frag_needed_from_the_backend_side_reaches_the_client_translated() {
    let fx = Fixture::new().unwrap();
    let client_syn = syn(&fx, 2, 43000);
    let out = fx.run(fx.cl, &client_syn.frame()).unwrap();
    let forwarded = &out.frame[ETH_LEN..];
    // The servo forwarded it with its TTL decremented (as a router does), so that is what a
    // router quotes; translated back, it is the client's own header but for the TTL.
    let client_ip_tcp = &decremented(&client_syn.frame()[ETH_LEN..]);

    // Routers quote at least the IP header + 8 bytes (RFC 792), Linux as much as fits.
    for quoted_len in [28usize, 40] {
        let mtu = 1400u16.to_be_bytes();
        let icmp = packet::icmp_error(
            ROUTER,
            SNAT,
            3,
            4,
            [0, 0, mtu[0], mtu[1]],
            &forwarded[..quoted_len],
        );
        let out = fx.run(fx.bk, &icmp).unwrap();
        assert_eq!(out.action, XDP_REDIRECT, "towards the client");
        let f = &out.frame;
        let ip = &f[ETH_LEN..];
        assert_eq!(csum::checksum(&ip[..20]), 0, "outer IP checksum");
        assert_eq!(&ip[12..16], &VIP.octets(), "outer source: the VIP");
        assert_eq!(
            &ip[16..20],
            &client(2).octets(),
            "outer destination: the client"
        );
        let icmp_msg = &ip[20..];
        assert_eq!(
            csum::checksum(icmp_msg),
            0,
            "ICMP checksum over the translated message"
        );
        assert_eq!(
            (icmp_msg[0], icmp_msg[1], &icmp_msg[6..8]),
            (3, 4, &mtu[..]),
            "type, code and MTU kept"
        );
        // The embedded packet is now what the client sent (TTL decremented once).
        assert_eq!(
            &icmp_msg[8..8 + quoted_len],
            &client_ip_tcp[..quoted_len],
            "embedded header ({quoted_len} bytes quoted)"
        );
        assert_eq!(&f[..6], &CLIENT_MAC);
    }
    assert_eq!(fx.counters().icmp_translated, 2);
}

#[test]
fn icmp_error_from_the_client_side_reaches_the_backend_translated() {
    let fx = Fixture::new().unwrap();
    let fwd = open(&fx, 4, 44000);
    let reply = Tcp::new((fwd.dst, 80), (fwd.src, fwd.sport), TCP_ACK);
    let out = fx.run(fx.bk, &reply.frame()).unwrap();
    let sent_to_client = out.frame[ETH_LEN..].to_vec();
    let original_reply = decremented(&reply.frame()[ETH_LEN..]);

    let icmp = packet::icmp_error(
        Ipv4Addr::new(198, 18, 0, 250),
        VIP,
        3,
        4,
        [0, 0, 0x05, 0x78],
        &sent_to_client[..40],
    );
    let out = fx.run(fx.cl, &icmp).unwrap();
    assert_eq!(out.action, XDP_REDIRECT);
    let ip = &out.frame[ETH_LEN..];
    assert_eq!(csum::checksum(&ip[..20]), 0);
    assert_eq!(
        (&ip[12..16], &ip[16..20]),
        (&SNAT.octets()[..], &fwd.dst.octets()[..])
    );
    assert_eq!(csum::checksum(&ip[20..]), 0);
    assert_eq!(
        &ip[28..68],
        &original_reply[..40],
        "embedded header is the backend's own packet"
    );
}

#[test]
fn icmp_about_unknown_flows_passes() {
    let fx = Fixture::new().unwrap();
    let stranger = Tcp::new((SNAT, 33333), (backend(1), 80), TCP_SYN).frame();
    let icmp = packet::icmp_error(
        ROUTER,
        SNAT,
        3,
        4,
        [0, 0, 5, 0x78],
        &stranger[ETH_LEN..ETH_LEN + 28],
    );
    expect_untouched(&fx, fx.bk, &icmp, XDP_PASS, "pass_icmp_no_flow");
    let short = packet::icmp_error(
        ROUTER,
        SNAT,
        3,
        4,
        [0, 0, 5, 0x78],
        &stranger[ETH_LEN..ETH_LEN + 24],
    );
    expect_untouched(&fx, fx.bk, &short, XDP_DROP, "drop_icmp_malformed");
}

#[test]
fn segment_of_an_unknown_connection_is_answered_with_a_reset() {
    let fx = Fixture::new().unwrap();
    let mut ack = client_tcp(&fx, 0, 40000, TCP_ACK | TCP_PSH);
    ack.ack = 777_000;
    ack.payload = vec![9; 40];
    let out = fx.run(fx.cl, &ack.frame()).unwrap();
    assert_eq!(out.action, XDP_TX);
    let p = parse(&out.frame);
    assert_eq!(
        (p.flags, p.seq, p.src, p.sport, p.dst, p.dport),
        (TCP_RST, 777_000, VIP, 80, client(0), 40000)
    );
    let c = fx.counters();
    assert_eq!(
        (c.rst_no_flow, c.new_flows, c.syncookies_invalid),
        (1, 0, 1),
        "checked as a SYN cookie first: not one"
    );
}

#[test]
fn in_window_rst_closes_the_flow_and_the_port_can_be_reused() {
    let fx = Fixture::new().unwrap();
    let fwd = handshake(&fx, 0, 40000);
    let mut rst = client_tcp(&fx, 0, 40000, TCP_RST | TCP_ACK);
    rst.seq = CLIENT_ISN + 1;
    rst.ack = BACKEND_ISN + 1;
    assert_eq!(
        fx.run(fx.cl, &rst.frame()).unwrap().action,
        XDP_REDIRECT,
        "the RST itself is forwarded"
    );
    let maps = fx.maps().unwrap();
    for k in [
        key(client(0), VIP, 40000, 80),
        key(fwd.dst, SNAT, 80, fwd.sport),
    ] {
        let f = maps.flow(&k).unwrap().unwrap();
        assert_ne!(f.state.value & FLOW_F_RST, 0);
        assert!(f.is_closed());
    }
    // Stragglers still pass during the close grace (the sweep ends the flow after it).
    let late = client_tcp(&fx, 0, 40000, TCP_ACK).frame();
    assert_eq!(fx.run(fx.cl, &late).unwrap().action, XDP_REDIRECT);

    // The client reuses its port: a new flow, to the next backend; the old SNAT tuple stays
    // reserved, so the new flow gets a different one.
    let again = open(&fx, 0, 40000);
    assert_eq!(backend_index(again.dst), 1);
    assert_eq!(fx.counters().new_flows, 2);
    let old = maps
        .flow(&key(fwd.dst, SNAT, 80, fwd.sport))
        .unwrap()
        .unwrap();
    assert_ne!(
        old.state.value & FLOW_F_RESERVED,
        0,
        "the old tuple is reserved"
    );
    let late_reply = backend_tcp(&fx, &fwd, TCP_ACK).frame();
    expect_untouched(&fx, fx.bk, &late_reply, XDP_DROP, "drop_flow_closed");
}

#[test]
fn fin_from_both_sides_closes_after_the_last_ack() {
    let fx = Fixture::new().unwrap();
    let fwd = open(&fx, 0, 40000);
    let fin = Tcp::new((client(0), 40000), (VIP, 80), TCP_FIN | TCP_ACK);
    assert_eq!(fx.run(fx.cl, &fin.frame()).unwrap().action, XDP_REDIRECT);
    let maps = fx.maps().unwrap();
    let f = maps.flow(&key(client(0), VIP, 40000, 80)).unwrap().unwrap();
    assert_eq!(
        (f.state.value & FLOW_F_FIN_CLIENT != 0, f.is_closed()),
        (true, false),
        "half closed"
    );
    let fin_back = backend_tcp(&fx, &fwd, TCP_FIN | TCP_ACK);
    assert_eq!(
        fx.run(fx.bk, &fin_back.frame()).unwrap().action,
        XDP_REDIRECT
    );
    let f = maps.flow(&key(client(0), VIP, 40000, 80)).unwrap().unwrap();
    assert_eq!(
        f.state.value & (FLOW_F_FIN_CLIENT | FLOW_F_FIN_BACKEND),
        FLOW_F_FIN_CLIENT | FLOW_F_FIN_BACKEND
    );
    assert!(f.is_closed(), "closed once both sides sent FIN");
    // The final ACK still gets through (within the close grace period).
    let last_ack = Tcp::new((client(0), 40000), (VIP, 80), TCP_ACK);
    assert_eq!(
        fx.run(fx.cl, &last_ack.frame()).unwrap().action,
        XDP_REDIRECT
    );
}

#[test]
fn removed_backend_flows_are_answered_with_a_reset() {
    let fx = Fixture::new().unwrap();
    let fwd = open(&fx, 0, 40000);
    fx.maps()
        .unwrap()
        .set_backend_state(backend_index(fwd.dst) as u32, BACKEND_REMOVED)
        .unwrap();
    let mut data = client_tcp(&fx, 0, 40000, TCP_ACK | TCP_PSH);
    data.seq = 7000;
    data.ack = 9000;
    data.payload = vec![1; 300];
    let out = fx.run(fx.cl, &data.frame()).unwrap();
    assert_eq!(
        out.action, XDP_TX,
        "answered out of the interface it came in on"
    );
    let p = parse(&out.frame);
    assert_eq!(out.frame.len(), ETH_LEN + 40, "headers only");
    assert_eq!(
        (p.src, p.sport, p.dst, p.dport),
        (VIP, 80, client(0), 40000)
    );
    assert_eq!(
        (p.flags, p.seq),
        (TCP_RST, 9000),
        "RST with seq = the segment's ack (RFC 793)"
    );
    assert_eq!((p.dst_mac, p.src_mac), (CLIENT_MAC, fx.cl_mac));
    let c = fx.counters();
    assert_eq!((c.rst_backend_removed, c.tx_rst), (1, 1));
    // The backend's own packets for that flow are dropped.
    let reply = backend_tcp(&fx, &fwd, TCP_ACK).frame();
    expect_untouched(&fx, fx.bk, &reply, XDP_DROP, "drop_backend_removed");
}

#[test]
fn draining_backend_keeps_flows_but_gets_no_new_ones() {
    let fx = Fixture::new().unwrap();
    let fwd = open(&fx, 0, 40000);
    let drained = backend_index(fwd.dst) as u32;
    let mut maps = fx.maps().unwrap();
    maps.set_backend_state(drained, BACKEND_DRAINING).unwrap();
    maps.replace_backend_set(0, &[1, 2]).unwrap();
    let data = Tcp::new((client(0), 40000), (VIP, 80), TCP_ACK);
    let out = fx.run(fx.cl, &data.frame()).unwrap();
    assert_eq!(out.action, XDP_REDIRECT);
    assert_eq!(
        parse(&out.frame).dst,
        backend(drained as usize),
        "existing flow continues"
    );
    for n in 0..6u16 {
        let p = open(&fx, 1, 41000 + n);
        assert_ne!(
            p.dst,
            backend(drained as usize),
            "no new flow to a draining backend"
        );
    }
}

#[test]
fn no_backend_in_service_answers_syn_with_reset() {
    let fx = Fixture::new().unwrap();
    fx.maps().unwrap().replace_backend_set(0, &[]).unwrap();
    let input = syn(&fx, 0, 40000);
    let out = fx.run(fx.cl, &input.frame()).unwrap();
    assert_eq!(out.action, XDP_TX);
    let p = parse(&out.frame);
    assert_eq!(
        (p.flags, p.ack, p.seq),
        (TCP_RST | TCP_ACK, input.seq + 1, 0)
    );
    assert_eq!((p.src, p.dst, p.dport), (VIP, client(0), 40000));
    assert_eq!(fx.counters().rst_no_backend, 1);
}

#[test]
fn snat_exhaustion_is_counted_and_closed_tuples_stay_reserved() {
    let fx = Fixture::new().unwrap();
    let mut maps = fx.maps().unwrap();
    // One backend and two SNAT ports: two flows fit.
    maps.replace_backend_set(0, &[0]).unwrap();
    maps.set_config(Config::with_snat_ports(30000, 30001))
        .unwrap();
    let a = open(&fx, 0, 1111);
    let b = open(&fx, 1, 1112);
    assert_ne!(a.sport, b.sport);
    let out = fx.run(fx.cl, &syn(&fx, 2, 1113).frame()).unwrap();
    assert_eq!(out.action, XDP_TX, "the third client is refused with a RST");
    let c = fx.counters();
    assert_eq!((c.snat_failures, c.new_flows), (1, 2));
    assert!(
        c.snat_retries >= u64::from(elb_common::SNAT_TRIES),
        "every attempt counted: {}",
        c.snat_retries
    );

    // Close the first flow: its tuple is not handed out again right away (the backend may
    // hold it in TIME_WAIT), so a new client is still refused.
    let mut rst = client_tcp(&fx, 0, 1111, TCP_RST);
    rst.seq = CLIENT_ISN + 1;
    assert_eq!(fx.run(fx.cl, &rst.frame()).unwrap().action, XDP_REDIRECT);
    let out = fx.run(fx.cl, &syn(&fx, 3, 1114).frame()).unwrap();
    assert_eq!(out.action, XDP_TX);
    assert_eq!(fx.counters().snat_failures, 2);
    // The sweep ends the closed flow after the close grace (and the other one, whose client
    // never completed its handshake) but keeps their tuples reserved...
    let grace = elb_common::lifetimes::CLOSE_GRACE_S + 2;
    let report = sweep_after(&fx, grace);
    assert_eq!((report.removed_closed, report.expired_half_open), (1, 1));
    let reserved = maps
        .flow(&key(backend(0), SNAT, 80, a.sport))
        .unwrap()
        .unwrap();
    assert_ne!(reserved.state.value & FLOW_F_RESERVED, 0);
    assert_eq!(
        fx.run(fx.cl, &syn(&fx, 3, 1115).frame()).unwrap().action,
        XDP_TX
    );
    // ...and releases them after the TIME_WAIT hold: the tuples are free again.
    let report = sweep_after(&fx, grace + elb_common::lifetimes::TIME_WAIT_HOLD_S + 2);
    assert_eq!(report.released, 2);
    let p = open(&fx, 3, 1116);
    assert!([a.sport, b.sport].contains(&p.sport));
}

#[test]
fn listener_with_several_snat_addresses_uses_them() {
    let fx = Fixture::new().unwrap();
    let extra = Ipv4Addr::new(198, 19, 0, 2);
    fx.ns
        .ip(&["addr", "add", &format!("{extra}/24"), "dev", "bk"])
        .unwrap();
    let mut maps = fx.maps().unwrap();
    maps.set_snat_addrs(fx.bk, &[SNAT, extra]).unwrap();
    maps.replace_backend_set(0, &[0]).unwrap();
    maps.set_config(Config::with_snat_ports(30000, 30000))
        .unwrap();
    // One port per address, two addresses: two flows to the same backend fit.
    let a = open(&fx, 0, 1111);
    let b = open(&fx, 1, 1112);
    let mut sources = [a.src, b.src];
    sources.sort();
    assert_eq!(sources, [SNAT, extra]);
}

//! Security groups in the XDP program, through `BPF_PROG_TEST_RUN`: the real, verified
//! program on crafted frames, with the allow lists written by the agent's own code
//! (`elb_userspace::agent::security_groups`). A SYN from a client a listener's groups admit is
//! forwarded; one from any other client is dropped, counted as `drop_sg_denied`, with no state
//! and no frame change; lists are per listener; listeners without the flag are open; packets
//! of established flows are never checked.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use elb_common::{
    BACKEND_ACTIVE, Backend, Listener, ListenerKey, PROTO_TCP, sg::LISTENER_F_SECURITY_GROUPS,
};
use elb_contract::security_group::Ipv4Cidr;
use elb_userspace::agent::security_groups::{AllowEntry, AllowLists};
use tests::{
    fixture::*,
    packet::{TCP_ACK, TCP_SYN, Tcp},
};

fn segment(from: Ipv4Addr, cport: u16, port: u16, flags: u8) -> Vec<u8> {
    let mut t = Tcp::new((from, cport), (VIP, port), flags);
    t.src_mac = CLIENT_MAC;
    t.frame()
}

fn listener_key(port: u16) -> ListenerKey {
    ListenerKey {
        vip: VIP.octets(),
        port,
        proto: PROTO_TCP,
        _pad: 0,
    }
}

/// Sets the flags of listener `VIP:port` (id `id`).
fn flag(fx: &Fixture, port: u16, id: u32, flags: u32) {
    fx.maps()
        .unwrap()
        .upsert_listener(
            listener_key(port),
            Listener {
                id,
                flags,
                idle_timeout_s: 60,
                _pad: 0,
            },
        )
        .unwrap();
}

/// Replaces the allow lists with `entries` (`(port, block)` on the VIP), as the agent does.
fn allow(fx: &Fixture, entries: &[(u16, &str)]) {
    let mut lists = AllowLists::open(&fx.pin_root).unwrap();
    let wanted: BTreeSet<AllowEntry> = entries
        .iter()
        .map(|(port, block)| AllowEntry {
            vip: VIP,
            port: *port,
            block: block.parse::<Ipv4Cidr>().unwrap(),
        })
        .collect();
    lists.add_missing(&wanted).unwrap();
    lists.remove_stale(&wanted).unwrap();
    assert_eq!(AllowLists::open(&fx.pin_root).unwrap().written(), &wanted);
}

/// A second listener, `VIP:81` (id 1), in front of backend 0.
fn second_listener(fx: &Fixture, flags: u32) {
    let mut maps = fx.maps().unwrap();
    maps.set_backend(
        3,
        Backend {
            addr: backend(0).octets(),
            port: 81,
            state: BACKEND_ACTIVE,
            generation: 1,
            listener_id: 1,
            ..Backend::default()
        },
    )
    .unwrap();
    maps.replace_backend_set(1, &[3]).unwrap();
    flag(fx, 81, 1, flags);
}

/// Sends a SYN and says whether it was forwarded (a denied one must come back dropped,
/// unchanged, counted, and without a flow).
fn syn_passes(fx: &Fixture, from: Ipv4Addr, cport: u16, port: u16) -> bool {
    let before = fx.counters();
    let frame = segment(from, cport, port, TCP_SYN);
    let out = fx.run(fx.cl, &frame).unwrap();
    let after = fx.counters();
    match out.action {
        XDP_REDIRECT => {
            assert_eq!(after.new_flows, before.new_flows + 1);
            assert_eq!(after.drop_sg_denied, before.drop_sg_denied);
            true
        }
        XDP_DROP => {
            assert_eq!(out.frame, frame, "a denied SYN is left as it came");
            assert_eq!(
                after.drop_sg_denied,
                before.drop_sg_denied + 1,
                "counted as drop_sg_denied"
            );
            assert_eq!(
                after.new_flows, before.new_flows,
                "no flow for a denied SYN"
            );
            assert_eq!(after.tx_rst, before.tx_rst, "no RST either");
            let flow = fx
                .maps()
                .unwrap()
                .flow(&elb_common::FlowKey {
                    src: from.octets(),
                    dst: VIP.octets(),
                    sport: cport,
                    dport: port,
                    proto: PROTO_TCP,
                    _pad: 0,
                    _pad1: 0,
                })
                .unwrap();
            assert!(flow.is_none(), "no conntrack entry for a denied SYN");
            false
        }
        other => panic!("SYN from {from} to port {port}: verdict {other}"),
    }
}

#[test]
fn admitted_clients_pass_others_are_dropped_and_counted() {
    let fx = Fixture::new().unwrap();
    // Clients 198.18.0.2-.7 are in 198.18.0.0/29; .12 is not.
    allow(&fx, &[(80, "198.18.0.0/29")]);
    flag(&fx, 80, 0, LISTENER_F_SECURITY_GROUPS);
    assert!(syn_passes(&fx, client(0), 40000, 80));
    assert!(syn_passes(&fx, client(5), 40001, 80));
    assert!(!syn_passes(&fx, client(10), 40002, 80));
    assert!(
        !syn_passes(&fx, client(10), 40003, 80),
        "every SYN is judged"
    );
    assert_eq!(fx.counters().drop_sg_denied, 2);

    // The rule changes (the agent's add-then-remove): the other range is admitted, the
    // first one is not any more.
    allow(&fx, &[(80, "198.18.0.8/29")]);
    assert!(syn_passes(&fx, client(10), 40004, 80));
    assert!(!syn_passes(&fx, client(0), 40005, 80));
    // Overlapping blocks: the longest match of either admits.
    allow(&fx, &[(80, "198.18.0.8/29"), (80, "198.18.0.2/32")]);
    assert!(syn_passes(&fx, client(0), 40006, 80));
    assert!(!syn_passes(&fx, client(1), 40007, 80));
    // 0.0.0.0/0 admits everyone.
    allow(&fx, &[(80, "0.0.0.0/0")]);
    assert!(syn_passes(&fx, client(17), 40008, 80));
}

#[test]
fn allow_lists_are_per_listener() {
    let fx = Fixture::new().unwrap();
    second_listener(&fx, LISTENER_F_SECURITY_GROUPS);
    flag(&fx, 80, 0, LISTENER_F_SECURITY_GROUPS);
    allow(&fx, &[(80, "198.18.0.0/29"), (81, "198.18.0.8/29")]);
    assert!(syn_passes(&fx, client(0), 41000, 80));
    assert!(!syn_passes(&fx, client(0), 41001, 81));
    assert!(syn_passes(&fx, client(8), 41002, 81));
    assert!(!syn_passes(&fx, client(8), 41003, 80));
}

#[test]
fn listeners_without_the_flag_are_open_and_flagged_ones_without_entries_closed() {
    let fx = Fixture::new().unwrap();
    // Entries alone change nothing: the flag decides whether the list is consulted.
    allow(&fx, &[(80, "198.18.0.0/29")]);
    assert!(syn_passes(&fx, client(12), 42000, 80));
    // Security groups without a rule for the port: no one.
    second_listener(&fx, LISTENER_F_SECURITY_GROUPS);
    assert!(!syn_passes(&fx, client(0), 42001, 81));
    assert!(!syn_passes(&fx, client(12), 42002, 81));
    assert_eq!(fx.counters().drop_sg_denied, 2);
}

#[test]
fn only_new_flows_are_checked() {
    let fx = Fixture::new().unwrap();
    allow(&fx, &[(80, "198.18.0.0/29")]);
    flag(&fx, 80, 0, LISTENER_F_SECURITY_GROUPS);
    assert!(syn_passes(&fx, client(0), 43000, 80));
    // The client's block is revoked: its open connection continues, a new one is refused.
    allow(&fx, &[]);
    let ack = segment(client(0), 43000, 80, TCP_ACK);
    let out = fx.run(fx.cl, &ack).unwrap();
    assert_eq!(out.action, XDP_REDIRECT, "established flow still forwarded");
    assert!(!syn_passes(&fx, client(0), 43001, 80));
}

#[test]
fn listeners_the_engine_serves_are_guarded_too() {
    // An HTTPS listener (the userspace engine's: LISTENER_F_LOCAL) with security groups: the
    // program hands admitted clients' packets to the stack and drops the SYNs of the others,
    // so the engine's sockets never see them.
    let fx = Fixture::new().unwrap();
    flag(
        &fx,
        443,
        5,
        elb_common::LISTENER_F_LOCAL | LISTENER_F_SECURITY_GROUPS,
    );
    allow(&fx, &[(443, "198.18.1.0/24")]);
    let admitted = segment(Ipv4Addr::new(198, 18, 1, 7), 40000, 443, TCP_SYN);
    let before = fx.counters();
    let out = fx.run(fx.cl, &admitted).unwrap();
    assert_eq!(out.action, XDP_PASS);
    assert_eq!(moved(&before, &fx.counters()), [("pass_local", 1)]);

    let denied = segment(Ipv4Addr::new(198, 18, 2, 7), 40000, 443, TCP_SYN);
    let before = fx.counters();
    let out = fx.run(fx.cl, &denied).unwrap();
    assert_eq!((out.action, out.frame), (XDP_DROP, denied));
    assert_eq!(moved(&before, &fx.counters()), [("drop_sg_denied", 1)]);

    // Segments of connections the stack holds are not SYNs: they pass unchecked.
    let ack = segment(Ipv4Addr::new(198, 18, 2, 7), 40000, 443, TCP_ACK);
    let before = fx.counters();
    assert_eq!(fx.run(fx.cl, &ack).unwrap().action, XDP_PASS);
    assert_eq!(moved(&before, &fx.counters()), [("pass_local", 1)]);
    assert!(fx.maps().unwrap().flows().unwrap().is_empty());
}

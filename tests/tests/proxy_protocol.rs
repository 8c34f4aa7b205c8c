//! PROXY protocol v1 end to end: nginx with `listen ... proxy_protocol` behind the servo, the
//! listener flagged as the agent flags a listener whose load balancer has a
//! `ProxyProtocolPolicyType` policy on the instance port (topology: `tests::topo`).
//!
//! nginx refuses a connection whose first bytes are not a valid header, so every request
//! answered proves the header arrived first and whole; its access log shows the client's own
//! address. Uploads and downloads (SHA-256 compared) prove the sequence translation for the
//! whole of a long connection, both ways, with SACK. Then the first data segment of each
//! connection is dropped once before the servo (in the client's namespace) and once after it
//! (in the backend's): the backend gets the header from a retransmission the servo saw twice.

use std::time::Duration;

use elb_common::{LISTENER_F_PROXY_V1, ListenerKey, PROTO_TCP};
use tests::{
    http::{Connection, Nginx, file_sha256, pattern_sha256, write_pattern_file},
    netns::{Netns, tempdir, wait_for},
    topo::{self, CLIENT, SNAT, Topology},
};

/// Bytes up and down per connection (ELB_PROXY_E2E_MB overrides, in MiB).
fn size() -> u64 {
    std::env::var("ELB_PROXY_E2E_MB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(200)
        << 20
}

/// Drops the first segment with data of every connection to port 80 once: the third packet
/// of the connection in the original direction (SYN, ACK, data), counted by conntrack
/// (`nf_conntrack_acct`, for connections opened from now on), on the `hook` of namespace `ns`.
fn drop_first_data_segment(ns: &Netns, hook: &str) {
    ns.exec(&[
        "nft",
        &format!(
            "add table inet elbtest; \
             add chain inet elbtest lossy {{ type filter hook {hook} priority 0; }}; \
             add rule inet elbtest lossy tcp dport 80 ct original packets 3 counter drop"
        ),
    ])
    .unwrap();
    ns.sysctl("net.netfilter.nf_conntrack_acct", "1").unwrap();
}

/// Packets the lossy rule of `ns` dropped.
fn dropped(ns: &Netns) -> u64 {
    let out = ns
        .exec(&["nft", "list", "chain", "inet", "elbtest", "lossy"])
        .unwrap();
    out.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in {out}"))
}

#[test]
fn backends_behind_proxy_protocol_see_clients_and_get_every_byte() {
    let size = size();
    let mut t = Topology::build(1).unwrap();
    t.load().unwrap();
    t.configure_listener().unwrap();
    t.maps()
        .unwrap()
        .set_listener_flags(
            &ListenerKey {
                vip: topo::VIP.octets(),
                port: 80,
                proto: PROTO_TCP,
                _pad: 0,
            },
            LISTENER_F_PROXY_V1,
        )
        .unwrap();
    let addr = std::net::SocketAddr::from((topo::backend_addr(0), 80));
    t.nginx
        .push(Nginx::start_proxy_protocol(&t.backends[0], "b1", addr, 1).unwrap());
    let www = t.nginx[0].www();
    let log = t.nginx[0].access_log_path();
    let dir = tempdir("proxy").unwrap();
    let expected_down = write_pattern_file(&dir.path().join("big.bin"), size).unwrap();
    std::os::unix::fs::symlink(dir.path().join("big.bin"), www.join("big.bin")).unwrap();
    let vip = t.vip();
    let timeout = Duration::from_secs(30);

    // A small request: the client's address reaches the backend.
    let r = t
        .client
        .run(|| Connection::open(vip, timeout)?.get("/name", false))
        .unwrap();
    assert_eq!(r.status, 200, "nginx accepted the header: {r:?}");
    // nginx logs a request after answering it.
    let first = wait_for(Duration::from_secs(5), "the access log line", || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.lines().next().map(str::to_string)
    })
    .unwrap();
    assert!(
        first.starts_with(&format!("{CLIENT} ")) && first.contains(&format!(" {SNAT} ")),
        "the client's address as the PROXY header's source, the servo's as the peer: {first}"
    );

    let transfer = |name: &str| {
        let started = std::time::Instant::now();
        let status = t
            .client
            .run(|| Connection::open(vip, timeout)?.put_pattern(&format!("/upload/{name}"), size));
        assert!(matches!(status, Ok(201 | 204)), "upload: {status:?}");
        let up = started.elapsed();
        assert_eq!(
            file_sha256(&www.join(format!("upload/{name}"))).unwrap(),
            pattern_sha256(size),
            "uploaded bytes intact ({name})"
        );
        let started = std::time::Instant::now();
        let (code, len, digest) = t
            .client
            .run(|| Connection::open(vip, timeout)?.get_sha256("/big.bin", |_| {}))
            .expect("download");
        let down = started.elapsed();
        assert_eq!((code, len), (200, size));
        assert_eq!(digest, expected_down, "downloaded bytes intact ({name})");
        eprintln!(
            "{name}: {} MiB up in {up:.1?}, down in {down:.1?}",
            size >> 20
        );
    };
    transfer("clean.bin");
    let c = t.maps().unwrap().counters().unwrap();
    assert_eq!(
        (c.proxy_headers, c.drop_proxy_failed),
        (3, 0),
        "one header per connection"
    );

    // The first data segment lost before the servo, and its retransmission lost after it.
    drop_first_data_segment(&t.client, "output");
    drop_first_data_segment(&t.backends[0], "input");
    transfer("lossy.bin");
    let (before, after) = (dropped(&t.client), dropped(&t.backends[0]));
    let c = t.maps().unwrap().counters().unwrap();
    eprintln!(
        "dropped before the servo {before}, after it {after}; headers inserted {}",
        c.proxy_headers
    );
    // At least one drop per connection on each side (a segment dropped on the client's own
    // output is not sent at all: TCP may try it again at once, and the rule counts each try).
    assert!(before >= 2, "drops before the servo: {before}");
    assert!(after >= 2, "drops after it: {after}");
    assert_eq!(c.drop_proxy_failed, 0);
    // The backend lost a header-carrying segment of each connection: the servo inserted the
    // header into it and into the retransmission the backend got.
    assert!(
        c.proxy_headers >= 3 + 4,
        "headers inserted: {}",
        c.proxy_headers
    );
    let log = wait_for(Duration::from_secs(5), "five access log lines", || {
        let text = std::fs::read_to_string(&log).ok()?;
        (text.lines().count() >= 5).then_some(text)
    })
    .unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 5, "every request logged: {log}");
    for l in &lines {
        assert!(
            l.starts_with(&format!("{CLIENT} ")) && l.contains(&format!(" {SNAT} ")),
            "{l}"
        );
    }
    let _ = (&t.servo, &t.switch);
}

//! End to end through the XDP dataplane: a client namespace, a servo namespace with the program
//! attached, and three backend namespaces running nginx. Listeners and backends are written
//! straight into the maps (the agent comes in its own tests).

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr, TcpStream},
    sync::atomic::{AtomicU64, Ordering},
    thread,
    time::Duration,
};

use elb_common::{BACKEND_DRAINING, BACKEND_REMOVED};
use socket2_free::bind_connect;
use tests::{
    http::{Connection, write_pattern_file},
    topo::{CLIENT, EXTRA_CLIENTS, Topology},
};

/// Connecting from a chosen client address (std has no bind-before-connect).
mod socket2_free {
    use std::{
        net::{SocketAddr, TcpStream},
        os::fd::FromRawFd as _,
    };

    pub fn bind_connect(local: SocketAddr, remote: SocketAddr) -> std::io::Result<TcpStream> {
        let (SocketAddr::V4(local), SocketAddr::V4(remote)) = (local, remote) else {
            return Err(std::io::Error::other("IPv4 only"));
        };
        // SAFETY: plain socket calls on a descriptor we own.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let stream = TcpStream::from_raw_fd(fd);
            let to_sockaddr = |a: std::net::SocketAddrV4| libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            let l = to_sockaddr(local);
            if libc::bind(
                fd,
                (&raw const l).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            let r = to_sockaddr(remote);
            if libc::connect(
                fd,
                (&raw const r).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(stream)
        }
    }
}

fn topology() -> Topology {
    let mut topo = Topology::build(3).expect("building the topology");
    topo.start_nginx(1).expect("starting nginx");
    topo.load().expect("loading the dataplane");
    topo.configure_listener().expect("configuring the listener");
    topo
}

/// GET /name on a fresh connection from `local`; returns the backend's name.
fn name_from(local: Ipv4Addr, vip: SocketAddr) -> String {
    let stream = bind_connect(SocketAddr::from((local, 0)), vip).expect("connect through the LB");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut conn = Connection::from_stream(stream);
    let r = conn.get("/name", false).expect("GET /name");
    assert_eq!(r.status, 200);
    r.text()
}

#[test]
fn new_connections_spread_exactly_evenly() {
    let topo = topology();
    let vip = topo.vip();
    let counts = topo.client.run(|| {
        let mut counts = BTreeMap::<String, u32>::new();
        for i in 0..300u32 {
            // A mix of clients: eight source addresses in turn.
            let local = Ipv4Addr::from(u32::from(CLIENT) + i % (1 + u32::from(EXTRA_CLIENTS)));
            *counts.entry(name_from(local, vip)).or_default() += 1;
        }
        counts
    });
    println!("300 new connections: {counts:?}");
    assert_eq!(counts.len(), 3, "every backend served: {counts:?}");
    assert!(
        counts.values().all(|&n| n == 100),
        "exact round-robin: {counts:?}"
    );

    let maps = topo.maps().unwrap();
    let c = maps.counters().unwrap();
    assert_eq!(c.new_flows, 300);
    assert_eq!(c.snat_failures, 0);
    for id in 0..3 {
        assert_eq!(
            maps.backend_stats(id).unwrap().new_flows,
            100,
            "backend {id}"
        );
    }
    assert_eq!(maps.listener_stats(0).unwrap().new_flows, 300);
}

#[test]
fn keep_alive_connection_stays_on_one_backend() {
    let topo = topology();
    let vip = topo.vip();
    let names = topo.client.run(|| {
        let mut conn = Connection::open(vip, Duration::from_secs(5)).unwrap();
        (0..100)
            .map(|_| conn.get("/name", true).unwrap().text())
            .collect::<Vec<_>>()
    });
    assert_eq!(names.len(), 100);
    assert!(
        names.iter().all(|n| *n == names[0]),
        "all on {}: {names:?}",
        names[0]
    );
    assert_eq!(topo.maps().unwrap().counters().unwrap().new_flows, 1);
}

#[test]
fn backend_set_change_drains_then_removes() {
    let topo = topology();
    let vip = topo.vip();
    topo.client.run(|| {
        let mut conn = Connection::open(vip, Duration::from_secs(5)).unwrap();
        let pinned = conn.get("/name", true).unwrap().text();
        let id: u32 = pinned.trim_start_matches('b').parse::<u32>().unwrap() - 1;

        // Drain the backend this connection uses: no new flows, existing ones continue.
        let mut maps = topo.maps().unwrap();
        let others: Vec<u32> = (0..3).filter(|&b| b != id).collect();
        maps.replace_backend_set(0, &others).unwrap();
        maps.set_backend_state(id, BACKEND_DRAINING).unwrap();

        let mut counts = BTreeMap::<String, u32>::new();
        for _ in 0..30 {
            *counts.entry(name_from(CLIENT, vip)).or_default() += 1;
        }
        assert!(
            !counts.contains_key(&pinned),
            "new connections avoid draining {pinned}: {counts:?}"
        );
        assert!(
            counts.values().all(|&n| n == 15),
            "the other two share evenly: {counts:?}"
        );
        for _ in 0..10 {
            assert_eq!(
                conn.get("/name", true).unwrap().text(),
                pinned,
                "open connection keeps working"
            );
        }

        // Remove it: the open connection is cut (the program answers with a reset).
        maps.set_backend_state(id, BACKEND_REMOVED).unwrap();
        let after = conn.get("/name", true);
        assert!(
            after.is_err(),
            "connection to a removed backend must be cut, got {after:?}"
        );
        assert!(maps.counters().unwrap().rst_backend_removed >= 1);
    });
}

#[test]
fn large_download_arrives_intact() {
    let topo = topology();
    let dir = tests::netns::tempdir("download").unwrap();
    let file = dir.path().join("200m.bin");
    let expected = write_pattern_file(&file, 200 << 20).unwrap();
    for n in &topo.nginx {
        std::os::unix::fs::symlink(&file, n.www().join("200m.bin")).unwrap();
    }
    let vip = topo.vip();
    let (status, len, digest) = topo.client.run(|| {
        let mut conn = Connection::open(vip, Duration::from_secs(10)).unwrap();
        conn.get_sha256("/200m.bin", |_| {}).unwrap()
    });
    assert_eq!(status, 200);
    assert_eq!(len, 200 << 20);
    assert_eq!(digest, expected, "SHA-256 of the 200 MB download");
}

#[test]
fn loader_restart_during_download_keeps_the_connection() {
    let topo = topology();
    let dir = tests::netns::tempdir("restart").unwrap();
    let file = dir.path().join("100m.bin");
    let expected = write_pattern_file(&file, 100 << 20).unwrap();
    for n in &topo.nginx {
        std::fs::create_dir_all(n.www().join("slow")).unwrap();
        std::os::unix::fs::symlink(&file, n.www().join("slow/100m.bin")).unwrap();
    }
    let program_before = program_id(&topo);
    let vip = topo.vip();
    let received = AtomicU64::new(0);
    let result = thread::scope(|s| {
        let download = s.spawn(|| {
            topo.client.run(|| {
                let mut conn = Connection::open(vip, Duration::from_secs(10)).unwrap();
                conn.get_sha256("/slow/100m.bin", |got| {
                    received.store(got, Ordering::Relaxed)
                })
            })
        });
        tests::netns::wait_for(Duration::from_secs(10), "download to start", || {
            (received.load(Ordering::Relaxed) > 10 << 20).then_some(())
        })
        .unwrap();
        // A new loader process: reuses the pinned maps and swaps the program in place.
        topo.load().unwrap();
        let mid = received.load(Ordering::Relaxed);
        assert!(
            mid < 100 << 20,
            "restart happened mid-download ({mid} bytes in)"
        );
        download.join().unwrap()
    });
    let (status, len, digest) = result.expect("download survives the loader restart");
    assert_eq!((status, len), (200, 100 << 20));
    assert_eq!(digest, expected);
    assert_ne!(
        program_id(&topo),
        program_before,
        "the program was replaced"
    );
    assert_eq!(
        topo.maps().unwrap().counters().unwrap().new_flows,
        1,
        "no re-routing"
    );
}

fn program_id(topo: &Topology) -> String {
    let out = topo.servo.ip(&["-o", "link", "show", "s0"]).unwrap();
    out.split("prog/xdp id ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or("")
        .to_string()
}

#[test]
fn non_syn_without_flow_is_dropped_and_stray_traffic_passes() {
    let topo = topology();
    // Traffic to the servo itself that is not a listener goes to the kernel: a connect to a
    // closed port on the VIP is refused by the servo's stack, not swallowed.
    let refused = topo.client.run(|| {
        TcpStream::connect_timeout(
            &SocketAddr::from((tests::topo::VIP, 8080)),
            Duration::from_secs(2),
        )
    });
    assert_eq!(
        refused.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    assert!(topo.maps().unwrap().counters().unwrap().pass_not_ours >= 1);
}

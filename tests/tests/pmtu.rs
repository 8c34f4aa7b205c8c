//! Path MTU discovery through the balancer.
//!
//! ```text
//!  client c0 ---- s0 servo s1 ---- r1a router1 r1b ==MTU 1400== r2a router2 r2b ---- eth0 backend
//!  198.18.0.2     .0.1   198.19.0.1  198.19.0.2  198.20.0.1/30   198.20.0.2   198.21.0.1  198.21.0.11
//! ```
//! Every host interface is 1500 bytes, so both ends negotiate MSS 1460 and MSS cannot hide the
//! narrow link. Uploads only get through if router1's "fragmentation needed" (sent to the servo's
//! SNAT address, about a packet the servo forwarded) reaches the client translated back to the
//! client's own tuple. Downloads exercise the backend's own PMTU discovery towards the SNAT address.

use std::{net::SocketAddr, time::Duration};

use elb_common::{BACKEND_ACTIVE, Backend, Listener, ListenerKey, PROTO_TCP};
use elb_userspace::dataplane::Maps;
use tests::{
    http::{Connection, Nginx, file_sha256, pattern_sha256, write_pattern_file},
    netns::{Netns, bin, remove_pin_root, require_root, tempdir, unique, veth},
    topo::{attach_pass, wire_checksums},
};

const SIZE: u64 = 50 << 20;

struct Pmtu {
    nginx: Option<Nginx>,
    client: Netns,
    servo: Netns,
    _r1: Netns,
    _r2: Netns,
    backend: Netns,
    pin_root: std::path::PathBuf,
    pass: std::path::PathBuf,
}

impl Drop for Pmtu {
    fn drop(&mut self) {
        self.nginx = None;
        remove_pin_root(&self.pin_root);
        let _ = std::fs::remove_file(&self.pass);
    }
}

fn build() -> anyhow::Result<Pmtu> {
    require_root();
    let tag = unique("mtu");
    let client = Netns::new(&format!("{tag}-client"))?;
    let servo = Netns::new(&format!("{tag}-servo"))?;
    let r1 = Netns::new(&format!("{tag}-r1"))?;
    let r2 = Netns::new(&format!("{tag}-r2"))?;
    let backend = Netns::new(&format!("{tag}-b1"))?;
    veth(&client, "c0", &servo, "s0")?;
    veth(&servo, "s1", &r1, "r1a")?;
    veth(&r1, "r1b", &r2, "r2a")?;
    veth(&r2, "r2b", &backend, "eth0")?;
    client.ip(&["addr", "add", "198.18.0.2/24", "dev", "c0"])?;
    servo.ip(&["addr", "add", "198.18.0.1/24", "dev", "s0"])?;
    servo.ip(&["addr", "add", "198.19.0.1/24", "dev", "s1"])?;
    servo.ip(&["route", "add", "198.21.0.0/24", "via", "198.19.0.2"])?;
    r1.ip(&["addr", "add", "198.19.0.2/24", "dev", "r1a"])?;
    r1.ip(&["addr", "add", "198.20.0.1/30", "dev", "r1b"])?;
    r1.ip(&["link", "set", "r1b", "mtu", "1400"])?;
    r1.ip(&["route", "add", "198.21.0.0/24", "via", "198.20.0.2"])?;
    r2.ip(&["addr", "add", "198.20.0.2/30", "dev", "r2a"])?;
    r2.ip(&["link", "set", "r2a", "mtu", "1400"])?;
    r2.ip(&["addr", "add", "198.21.0.1/24", "dev", "r2b"])?;
    r2.ip(&["route", "add", "198.19.0.0/24", "via", "198.20.0.1"])?;
    for r in [&r1, &r2] {
        r.sysctl("net.ipv4.ip_forward", "1")?;
    }
    backend.ip(&["addr", "add", "198.21.0.11/24", "dev", "eth0"])?;
    // A route to the servo's network is routing, not load-balancer configuration: any host
    // behind a router has one.
    backend.ip(&["route", "add", "default", "via", "198.21.0.1"])?;
    wire_checksums(&client, "c0")?;
    wire_checksums(&backend, "eth0")?;
    let pass = std::path::PathBuf::from(format!("/sys/fs/bpf/{tag}-pass"));
    elb_userspace::dataplane::pin_pass_program(&pass)?;
    attach_pass(&client, "c0", &pass)?;
    attach_pass(&r1, "r1a", &pass)?;
    let pin_root = std::path::PathBuf::from(format!("/sys/fs/bpf/{tag}"));
    let out = std::process::Command::new(bin("elb-servo"))
        .args(["--netns", servo.name(), "--pin-root"])
        .arg(&pin_root)
        .args([
            "load",
            "--iface",
            "s0",
            "--iface",
            "s1",
            "--snat",
            "s1=198.19.0.1",
            "--snat",
            "s0=198.18.0.1",
        ])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut maps = Maps::open(&pin_root)?;
    maps.set_backend(
        0,
        Backend {
            addr: [198, 21, 0, 11],
            port: 80,
            state: BACKEND_ACTIVE,
            generation: 1,
            ..Backend::default()
        },
    )?;
    maps.replace_backend_set(0, &[0])?;
    maps.upsert_listener(
        ListenerKey {
            vip: [198, 18, 0, 1],
            port: 80,
            proto: PROTO_TCP,
            _pad: 0,
        },
        Listener {
            id: 0,
            idle_timeout_s: 60,
            ..Listener::default()
        },
    )?;
    let nginx = Nginx::start(&backend, "b1", SocketAddr::from(([198, 21, 0, 11], 80)), 1)?;
    Ok(Pmtu {
        nginx: Some(nginx),
        client,
        servo,
        _r1: r1,
        _r2: r2,
        backend,
        pin_root,
        pass,
    })
}

#[test]
fn upload_and_download_cross_a_narrower_link_intact() {
    let t = build().unwrap();
    let vip = SocketAddr::from(([198, 18, 0, 1], 80));
    let www = t.nginx.as_ref().unwrap().www();
    let dir = tempdir("pmtu").unwrap();
    let expected_down = write_pattern_file(&dir.path().join("50m.bin"), SIZE).unwrap();
    std::os::unix::fs::symlink(dir.path().join("50m.bin"), www.join("50m.bin")).unwrap();

    let status = t.client.run(|| {
        Connection::open(vip, Duration::from_secs(20))?.put_pattern("/upload/50m.bin", SIZE)
    });
    assert!(
        matches!(status, Ok(201 | 204)),
        "upload through the LB: {status:?}"
    );
    assert_eq!(
        file_sha256(&www.join("upload/50m.bin")).unwrap(),
        pattern_sha256(SIZE),
        "uploaded bytes intact"
    );

    let (code, len, digest) = t
        .client
        .run(|| Connection::open(vip, Duration::from_secs(20))?.get_sha256("/50m.bin", |_| {}))
        .expect("download through the LB");
    assert_eq!((code, len), (200, SIZE));
    assert_eq!(digest, expected_down, "downloaded bytes intact");

    let c = Maps::open(&t.pin_root).unwrap().counters().unwrap();
    assert!(
        c.icmp_translated >= 1,
        "the LB translated router1's fragmentation-needed: {c:?}"
    );
    let cached = t.client.ip(&["route", "get", "198.18.0.1"]).unwrap();
    assert!(
        cached.contains("mtu 1400"),
        "the client learned the path MTU: {cached}"
    );
    let _ = (&t.servo, &t.backend);
}

//! The standard test topology: a client, a servo running the XDP program, and backends on a
//! switched LAN, each in its own network namespace.
//!
//! ```text
//!  client ns            servo ns                     switch ns            backend ns (xN)
//!  c0 198.18.0.2/24 --- s0 198.18.0.1/24 (VIP)
//!  (+ .3-.9 extra)      s1 198.19.0.1/24 (SNAT) --- sw0 ]
//!                                                    br0 ]--- swbI ------ eth0 198.19.0.(10+I)/24
//! ```
//! Backends have no route, no VIP, no tunnel: only their LAN address (full NAT needs nothing
//! more). Veth delivers XDP_TX/redirected frames only to a peer that runs XDP, so `c0` and `sw0`
//! get the pass-through program (`elb-servo attach-pass`).

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;
use elb_common::{BACKEND_ACTIVE, Backend, Listener, ListenerKey, PROTO_TCP};
use elb_userspace::dataplane::Maps;

use crate::{
    http::Nginx,
    netns::{Netns, bin, remove_pin_root, unique, veth},
};

/// The VIP of the standard topology.
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The client's primary address.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The servo's SNAT address on the backend LAN.
pub const SNAT: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
/// How many extra client addresses `c0` carries (198.18.0.3 ...).
pub const EXTRA_CLIENTS: u8 = 7;

/// Address of backend `i` (0-based).
pub fn backend_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, 0, 10 + i as u8 + 1)
}

/// Attaches the pass-through XDP program (pinned at `pass`) to `iface` in `ns`.
///
/// `nsenter --net`, not `ip -n`: `ip -n` also remounts /sys, hiding the host's bpffs and its pins.
pub fn attach_pass(ns: &Netns, iface: &str, pass: &Path) -> anyhow::Result<()> {
    crate::netns::run(&[
        "nsenter",
        &format!("--net=/run/netns/{}", ns.name()),
        "ip",
        "link",
        "set",
        "dev",
        iface,
        "xdpdrv",
        "pinned",
        &pass.display().to_string(),
    ])?;
    Ok(())
}

/// Makes `iface` put complete checksums on its packets, as a host's NIC does on a real wire.
///
/// A veth hands packets to its peer with the TCP checksum left to a NIC that does not exist
/// (CHECKSUM_PARTIAL: the field holds only the pseudo-header sum). The kernel keeps track of
/// that in the skb, but XDP sees only bytes: a frame it rewrites and transmits arrives with a
/// wrong checksum and the receiver drops it. Packets from a physical NIC always carry their
/// full checksum, so turning off TX checksum offload on the sending hosts' veths models the
/// real world; it configures the test hosts' "NICs", not the backends' networking.
pub fn wire_checksums(ns: &Netns, iface: &str) -> anyhow::Result<()> {
    ns.exec(&["ethtool", "-K", iface, "tx", "off"])?;
    Ok(())
}

/// The standard topology. Fields drop in order: servers first, namespaces last.
#[derive(Debug)]
pub struct Topology {
    /// One nginx per backend (started by [`Topology::start_nginx`]).
    pub nginx: Vec<Nginx>,
    pub client: Netns,
    pub servo: Netns,
    pub switch: Netns,
    pub backends: Vec<Netns>,
    /// Pin root of this topology's dataplane.
    pub pin_root: PathBuf,
    /// Pin root of the pass-through links on the peers (`elb-servo attach-pass`).
    pub pass_prog: PathBuf,
}

impl Topology {
    /// Builds namespaces, links and addresses for `n` backends. Nothing is loaded yet.
    pub fn build(n: usize) -> anyhow::Result<Self> {
        crate::netns::require_root();
        let tag = unique("");
        let pin_root = PathBuf::from(format!("/sys/fs/bpf/{tag}"));
        let pass_prog = PathBuf::from(format!("/sys/fs/bpf/{tag}-pass"));
        let client = Netns::new(&format!("{tag}-client"))?;
        let servo = Netns::new(&format!("{tag}-servo"))?;
        let switch = Netns::new(&format!("{tag}-switch"))?;
        let mut backends = Vec::new();
        for i in 0..n {
            backends.push(Netns::new(&format!("{tag}-b{}", i + 1))?);
        }
        let topo = Self {
            nginx: Vec::new(),
            client,
            servo,
            switch,
            backends,
            pin_root,
            pass_prog,
        };

        veth(&topo.client, "c0", &topo.servo, "s0")?;
        veth(&topo.servo, "s1", &topo.switch, "sw0")?;
        topo.client
            .ip(&["addr", "add", &format!("{CLIENT}/24"), "dev", "c0"])?;
        wire_checksums(&topo.client, "c0")?;
        for k in 0..EXTRA_CLIENTS {
            topo.client.ip(&[
                "addr",
                "add",
                &format!("198.18.0.{}/24", 3 + k),
                "dev",
                "c0",
            ])?;
        }
        topo.servo
            .ip(&["addr", "add", &format!("{VIP}/24"), "dev", "s0"])?;
        topo.servo
            .ip(&["addr", "add", &format!("{SNAT}/24"), "dev", "s1"])?;
        topo.switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        topo.switch.ip(&["link", "set", "br0", "up"])?;
        topo.switch.ip(&["link", "set", "sw0", "master", "br0"])?;
        for (i, b) in topo.backends.iter().enumerate() {
            let port = format!("swb{}", i + 1);
            veth(&topo.switch, &port, b, "eth0")?;
            topo.switch.ip(&["link", "set", &port, "master", "br0"])?;
            b.ip(&[
                "addr",
                "add",
                &format!("{}/24", backend_addr(i)),
                "dev",
                "eth0",
            ])?;
            wire_checksums(b, "eth0")?;
        }
        // As an operator would: `elb-servo attach-pass` on the peers of the servo's veths.
        for (ns, iface) in [(&topo.client, "c0"), (&topo.switch, "sw0")] {
            crate::netns::run(&[
                &bin("elb-servo").display().to_string(),
                "--netns",
                ns.name(),
                "--pin-root",
                &topo.pass_prog.display().to_string(),
                "attach-pass",
                "--iface",
                iface,
            ])?;
        }
        Ok(topo)
    }

    /// Replaces the pass-through program on a peer of the servo (`c0` in the client namespace,
    /// `sw0` in the switch) by the program pinned at `prog` (a benchmark sink, for instance).
    pub fn replace_peer_program(&self, ns: &Netns, iface: &str, prog: &Path) -> anyhow::Result<()> {
        crate::netns::run(&[
            &bin("elb-servo").display().to_string(),
            "--netns",
            ns.name(),
            "--pin-root",
            &self.pass_prog.display().to_string(),
            "detach-pass",
            "--iface",
            iface,
        ])?;
        let _ = crate::netns::run(&[
            "nsenter",
            &format!("--net=/run/netns/{}", ns.name()),
            "ip",
            "link",
            "set",
            "dev",
            iface,
            "xdpdrv",
            "off",
        ]);
        attach_pass(ns, iface, prog)
    }

    /// Starts nginx on every backend (port 80).
    pub fn start_nginx(&mut self, workers: u32) -> anyhow::Result<()> {
        for (i, b) in self.backends.iter().enumerate() {
            let addr = SocketAddr::from((backend_addr(i), 80));
            self.nginx
                .push(Nginx::start(b, &format!("b{}", i + 1), addr, workers)?);
        }
        Ok(())
    }

    /// `elb-servo load` in the servo namespace: a separate process, as an operator runs it.
    pub fn load_command(&self) -> Command {
        let mut cmd = Command::new(bin("elb-servo"));
        cmd.arg("--netns")
            .arg(self.servo.name())
            .arg("--pin-root")
            .arg(&self.pin_root)
            .args([
                "load",
                "--iface",
                "s0",
                "--iface",
                "s1",
                "--snat",
                &format!("s1={SNAT}"),
            ])
            .args(["--snat", &format!("s0={VIP}")]);
        cmd
    }

    /// Loads and attaches the dataplane.
    pub fn load(&self) -> anyhow::Result<()> {
        let out = self
            .load_command()
            .output()
            .context("running elb-servo load")?;
        anyhow::ensure!(
            out.status.success(),
            "elb-servo load failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Opens the dataplane's maps.
    pub fn maps(&self) -> anyhow::Result<Maps> {
        Ok(Maps::open(&self.pin_root)?)
    }

    /// Configures listener `VIP:80` (id 0) with every backend active (ids 0..n, port 80).
    pub fn configure_listener(&self) -> anyhow::Result<()> {
        let mut maps = self.maps()?;
        let ids: Vec<u32> = (0..self.backends.len() as u32).collect();
        for (i, id) in ids.iter().enumerate() {
            maps.set_backend(
                *id,
                Backend {
                    addr: backend_addr(i).octets(),
                    port: 80,
                    state: BACKEND_ACTIVE,
                    generation: 1,
                    listener_id: 0,
                    ..Backend::default()
                },
            )?;
        }
        maps.replace_backend_set(0, &ids)?;
        maps.upsert_listener(
            ListenerKey {
                vip: VIP.octets(),
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
        Ok(())
    }

    /// The listener address clients connect to.
    pub fn vip(&self) -> SocketAddr {
        SocketAddr::from((VIP, 80))
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.nginx.clear();
        for iface in ["s0", "s1"] {
            let _ = elb_userspace::dataplane::detach(&self.pin_root, iface);
        }
        remove_pin_root(&self.pin_root);
        remove_pin_root(&self.pass_prog);
    }
}

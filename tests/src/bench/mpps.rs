//! Packet rate through a servo in namespaces: a generator (an XDP program run with
//! `BPF_PROG_TEST_RUN` in live-frames mode, which really transmits: xdp-trafficgen does not start
//! on this kernel) sends frames out of the client's veth at the servo's interface; the servo runs
//! the floor program (swap MACs, XDP_TX back) or our program (established flow, or a SYN flood of
//! distinct flows), and what it forwards is counted on the servo. Forwarded frames are dropped by
//! an XDP sink on the receiving veth peers, so no kernel stack is involved past the servo.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use aya::programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp};
use elb_common::{GEN_FRAME_LEN, GenTemplate};
use elb_userspace::dataplane::{self, Maps};

use super::{Mode, median, progress, report::Results};
use crate::{
    fixture::{self, xdp_md},
    netns::{self, Netns},
    packet::{TCP_ACK, TCP_SYN, Tcp},
    progs,
    topo::{CLIENT, SNAT, Topology, VIP, backend_addr},
};

fn nsenter_ip(ns: &Netns, args: &[&str]) -> anyhow::Result<()> {
    let target = format!("--net=/run/netns/{}", ns.name());
    let mut full = vec!["nsenter", target.as_str(), "ip"];
    full.extend_from_slice(args);
    netns::run(&full).map(|_| ())
}

fn attach_pinned(ns: &Netns, iface: &str, prog: &Path) -> anyhow::Result<()> {
    let _ = nsenter_ip(ns, &["link", "set", "dev", iface, "xdpdrv", "off"]);
    nsenter_ip(
        ns,
        &[
            "link",
            "set",
            "dev",
            iface,
            "xdpdrv",
            "pinned",
            &prog.display().to_string(),
        ],
    )
}

/// An XDP statistic of a veth (`ethtool -S`), summed over queues.
fn veth_stat(ns: &Netns, iface: &str, stat: &str) -> anyhow::Result<u64> {
    let out = ns.exec(&["ethtool", "-S", iface])?;
    Ok(out
        .lines()
        .filter_map(|l| l.trim().split_once(':'))
        .filter(|(k, _)| k.ends_with(stat))
        .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
        .sum())
}

/// Sends `frames` copies of `frame` out of `iface` in `ns` with `generator`; returns the
/// wall time of the send.
fn generate(
    ns: &Netns,
    generator: &Xdp,
    iface_index: u32,
    frame: &[u8],
    frames: u32,
) -> anyhow::Result<Duration> {
    ns.run(|| {
        let ctx = xdp_md(frame.len() as u32, iface_index);
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.ctx_in = Some(&ctx);
        opts.repeat = frames;
        opts.attrs = TestRunAttrs::new().xdp_live_frames(64);
        let started = Instant::now();
        generator.test_run(opts).context("live-frames test run")?;
        Ok(started.elapsed())
    })
}

fn set_template(ebpf: &mut aya::Ebpf, frame: &[u8]) -> anyhow::Result<()> {
    let mut t = GenTemplate {
        frame: [0; GEN_FRAME_LEN],
        _pad: [0; 2],
    };
    ensure!(
        frame.len() == GEN_FRAME_LEN,
        "generator frames are {GEN_FRAME_LEN} bytes"
    );
    t.frame.copy_from_slice(frame);
    let mut map: aya::maps::Array<_, GenTemplate> = ebpf
        .map_mut("gen_template")
        .context("gen_template map")?
        .try_into()?;
    map.set(0, t, 0)?;
    Ok(())
}

/// Measures `frames` frames into the servo; `counted` reads the servo-side count.
fn rate(
    topo: &Topology,
    generator: &Xdp,
    frame: &[u8],
    frames: u32,
    mut counted: impl FnMut() -> anyhow::Result<u64>,
) -> anyhow::Result<f64> {
    let c0 = topo.client.ifindex("c0")?;
    let before = counted()?;
    let elapsed = generate(&topo.client, generator, c0, frame, frames)?;
    // Let the receiving side drain its ring.
    std::thread::sleep(Duration::from_millis(100));
    let forwarded = counted()? - before;
    Ok(forwarded as f64 / elapsed.as_secs_f64() / 1e6)
}

/// The programs the section attaches, pinned.
struct Pins<'a> {
    drop: &'a Path,
    floor: &'a Path,
    floor_redirect: &'a Path,
}

/// Pins `elb_floor_redirect` at `path`, its devmap sending out of the servo's s1 (set from
/// inside the servo's namespace: the kernel resolves the ifindex there).
fn pin_floor_redirect(topo: &Topology, path: &Path) -> anyhow::Result<()> {
    let s1 = topo.servo.ifindex("s1")?;
    topo.servo.run(|| {
        let mut ebpf = progs::load(&[progs::FLOOR_REDIRECT])?;
        let mut ports: aya::maps::DevMap<_> = ebpf
            .map_mut("floor_ports")
            .context("floor_ports map")?
            .try_into()?;
        ports.set(0, s1, None, 0)?;
        let p: &mut Xdp = ebpf
            .program_mut(progs::FLOOR_REDIRECT)
            .context(progs::FLOOR_REDIRECT)?
            .try_into()?;
        p.pin(path)
            .with_context(|| format!("pinning the redirect floor at {}", path.display()))?;
        anyhow::Ok(())
    })
}

/// Runs the section.
pub fn run(mode: Mode, results: &mut Results) -> anyhow::Result<()> {
    let frames: u32 = mode.pick(10_000_000, 3_000_000, 20_000);
    let rounds = mode.pick(5, 3, 1);
    progress(format!(
        "packet rate: {rounds} rounds of {frames} frames per case"
    ));
    let topo = Topology::build(3)?;
    let dir: PathBuf = PathBuf::from(format!("{}-progs", topo.pin_root.display()));
    let drop_pin = dir.join("drop");
    let floor_pin = dir.join("floor");
    std::fs::create_dir_all(&dir)?;
    progs::pin(progs::DROP, &drop_pin)?;
    progs::pin(progs::FLOOR, &floor_pin)?;
    let redirect_pin = dir.join("floor_redirect");
    pin_floor_redirect(&topo, &redirect_pin)?;
    let pins = Pins {
        drop: &drop_pin,
        floor: &floor_pin,
        floor_redirect: &redirect_pin,
    };
    let result = measure(&topo, &pins, frames, rounds, results);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(
    topo: &Topology,
    pins: &Pins,
    frames: u32,
    rounds: usize,
    results: &mut Results,
) -> anyhow::Result<()> {
    // Sinks where forwarded frames land: back at the client (floor) and at the switch (ours).
    topo.replace_peer_program(&topo.client, "c0", pins.drop)?;
    topo.replace_peer_program(&topo.switch, "sw0", pins.drop)?;

    let mut gen_ebpf = progs::load(&[progs::GEN])?;
    let mut gen_syn_ebpf = progs::load(&[progs::GEN_SYN])?;
    let mut ack = Tcp::new((CLIENT, 40000), (VIP, 80), TCP_ACK);
    ack.src_mac = topo.client.mac("c0")?;
    ack.dst_mac = topo.servo.mac("s0")?;
    let ack = ack.frame();
    let mut syn = Tcp::new((CLIENT, 1024), (VIP, 80), TCP_SYN);
    syn.src_mac = topo.client.mac("c0")?;
    syn.dst_mac = topo.servo.mac("s0")?;
    let syn = syn.frame();
    set_template(&mut gen_ebpf, &ack)?;
    set_template(&mut gen_syn_ebpf, &syn)?;
    let generator = progs::program(&gen_ebpf, progs::GEN)?;
    let syn_generator = progs::program(&gen_syn_ebpf, progs::GEN_SYN)?;

    // The servo knows its backends' neighbours, as it would after its first health checks
    // (static entries: the switch side only runs the sink, so ARP cannot resolve them).
    for (i, b) in topo.backends.iter().enumerate() {
        let mac = b.mac("eth0")?;
        let mac = mac
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        topo.servo.ip(&[
            "neigh",
            "replace",
            &backend_addr(i).to_string(),
            "lladdr",
            &mac,
            "dev",
            "s1",
            "nud",
            "permanent",
        ])?;
    }

    let mut floor = Vec::new();
    let mut floor_redirect = Vec::new();
    let mut established = Vec::new();
    let mut syn_rates = Vec::new();
    for round in 0..rounds {
        // Floor: the servo swaps MACs and sends the frame back.
        attach_pinned(&topo.servo, "s0", pins.floor)?;
        let f = rate(topo, generator, &ack, frames, || {
            veth_stat(&topo.servo, "s0", "xdp_tx")
        })?;
        floor.push(f);
        // The floor of a forwarded packet: the same, sent out of s1 (towards the backends'
        // switch) through a devmap, as ours is.
        attach_pinned(&topo.servo, "s0", pins.floor_redirect)?;
        let fr = rate(topo, generator, &ack, frames, || {
            veth_stat(&topo.servo, "s0", "xdp_redirect")
        })?;
        floor_redirect.push(fr);
        let _ = nsenter_ip(&topo.servo, &["link", "set", "dev", "s0", "xdpdrv", "off"]);

        // Ours: an established flow, then a SYN flood of distinct flows.
        topo.load()?;
        // 8 SNAT addresses (set again after every load, which writes the command line's one):
        // the flood's new flows need tuples until the listener's SYN backlog is full and
        // cookies take over.
        let extra: Vec<Ipv4Addr> = (0..8).map(|k| Ipv4Addr::new(198, 19, 0, 1 + k)).collect();
        Maps::open(&topo.pin_root)?.set_snat_addrs(topo.servo.ifindex("s1")?, &extra)?;
        if round == 0 {
            for a in &extra[1..] {
                topo.servo
                    .ip(&["addr", "add", &format!("{a}/24"), "dev", "s1"])?;
            }
            topo.configure_listener()?;
            let mut maps = Maps::open(&topo.pin_root)?;
            for half in fixture::flow_pair(
                (CLIENT, 40000),
                (VIP, 80),
                (SNAT, 40000),
                (backend_addr(0), 80),
                0,
                0x00c0_ffee,
            ) {
                maps.insert_flow(&half)?;
            }
        }
        let maps = Maps::open(&topo.pin_root)?;
        let e = rate(topo, generator, &ack, frames, || {
            Ok(maps.counters()?.fwd_redirect)
        })?;
        established.push(e);
        let s = rate(topo, syn_generator, &syn, frames, || {
            let c = maps.counters()?;
            Ok(c.new_flows + c.syncookies_sent)
        })?;
        syn_rates.push(s);
        if std::env::var_os("ELB_BENCH_DEBUG").is_some() {
            progress(format!("  counters: {:?}", maps.counters()?));
        }
        progress(format!(
            "  round {}/{rounds}: floor {f:.2} Mpps (redirected {fr:.2}), established {e:.2} Mpps, SYN flood {s:.2} Mpps (SYNs answered)",
            round + 1
        ));
        for iface in ["s0", "s1"] {
            dataplane::detach(&topo.pin_root, iface)?;
        }
    }
    let c = Maps::open(&topo.pin_root)?.counters()?;
    ensure!(
        c.drop_internal == 0 && c.drop_fib_failed == 0,
        "the dataplane dropped benchmark traffic: {c:?}"
    );
    let floor = median(&mut floor);
    let floor_redirect = median(&mut floor_redirect);
    let established = median(&mut established);
    let syn = median(&mut syn_rates);
    results.set("mpps.floor", floor);
    results.set("mpps.xdp_established", established);
    results.set("mpps.xdp_syn", syn);
    results.set("mpps.established_vs_floor", established / floor);
    results.set("mpps.floor_redirect", floor_redirect);
    results.set(
        "mpps.established_vs_floor_redirect",
        established / floor_redirect,
    );
    results.set("mpps.syn_vs_floor", syn / floor);
    results.set("mpps.snat_failures", c.snat_failures as f64);
    results.note(
        "mpps",
        format!(
            "generator: BPF_PROG_TEST_RUN live frames (64-frame batches) out of the client veth, {frames} frames per case, median of {rounds}; \
             floor counted as XDP_TX on the servo (floor_redirect: the same program redirecting out of s1 through a devmap, as ours forwards, counted as XDP_REDIRECT), ours as forwarded (established: one flow) or SYNs answered (SYN flood: new flows until the listener's SYN backlog is full, then SYN cookies); generator and servo share the 2 vCPUs"
        ),
    );
    Ok(())
}

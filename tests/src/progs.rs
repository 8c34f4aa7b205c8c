//! The benchmark and test XDP object (`elb-bench`, built by this crate's build script; never part
//! of `elb-servo`): the floor, sinks, traffic generators and the per-packet timing ring.

use std::path::Path;

use anyhow::Context as _;
use aya::{Ebpf, EbpfLoader, programs::Xdp};

/// The object.
pub static BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/elb-bench.o"));

/// Swap MACs, XDP_TX: the per-packet floor.
pub const FLOOR: &str = "elb_floor";
/// Swap MACs, redirect out of `floor_ports[0]`: the floor of a forwarded packet.
pub const FLOOR_REDIRECT: &str = "elb_floor_redirect";
/// XDP_DROP everything (benchmark sinks).
pub const DROP: &str = "elb_drop";
/// Drop what is addressed to the spoofed range, pass the rest (client side of a flood).
pub const SINK_SPOOFED: &str = "elb_sink_spoofed";
/// Live-frames generator of the template frame.
pub const GEN: &str = "elb_gen";
/// Live-frames generator of SYNs from ever new spoofed sources.
pub const GEN_SYN: &str = "elb_gen_syn";
/// The floor plus one read of a flow-table-sized table at the frame's hash.
pub const FLOOR_LOOKUP: &str = "elb_floor_lookup";
/// The per-packet timing harness.
pub const RING: &str = "bench_ring";

/// Loads the object (its maps unpinned) and verifies `programs`.
pub fn load(programs: &[&str]) -> anyhow::Result<Ebpf> {
    load_with_table(programs, 1024)
}

/// [`load`], with `floor_table` (see [`FLOOR_LOOKUP`]) sized `slots` (a power of two).
pub fn load_with_table(programs: &[&str], slots: u32) -> anyhow::Result<Ebpf> {
    anyhow::ensure!(slots.is_power_of_two(), "floor_table: {slots} slots");
    anyhow::ensure!(
        !BENCH_OBJECT.is_empty(),
        "this build has no benchmark object (ELB_EBPF_SKIP); rebuild without it"
    );
    let mut ebpf = EbpfLoader::new()
        .map_max_entries("floor_table", slots)
        .load(BENCH_OBJECT)
        .context("loading the benchmark object")?;
    for name in programs {
        let p: &mut Xdp = ebpf
            .program_mut(name)
            .with_context(|| format!("no program {name}"))?
            .try_into()?;
        p.load().with_context(|| format!("verifying {name}"))?;
    }
    Ok(ebpf)
}

/// A verified program of a loaded object.
pub fn program<'a>(ebpf: &'a Ebpf, name: &str) -> anyhow::Result<&'a Xdp> {
    Ok(ebpf
        .program(name)
        .with_context(|| format!("no program {name}"))?
        .try_into()?)
}

/// Loads `name` on its own and pins it at `path` (for `ip link set dev X xdpdrv pinned PATH`).
pub fn pin(name: &str, path: &Path) -> anyhow::Result<()> {
    let mut ebpf = load(&[name])?;
    let p: &mut Xdp = ebpf
        .program_mut(name)
        .context(name.to_string())?
        .try_into()?;
    p.pin(path)
        .with_context(|| format!("pinning {name} at {}", path.display()))?;
    Ok(())
}

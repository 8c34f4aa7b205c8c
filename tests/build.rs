//! Builds the benchmark and test XDP object (`elb-bench`: the floor, sinks, generators and the
//! per-packet timing harness), which only this crate embeds.

#[path = "../elb-userspace/build_support/ebpf.rs"]
mod ebpf;

fn main() -> anyhow::Result<()> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("elb-bench.o");
    ebpf::build_object("elb-bench", &out)
}

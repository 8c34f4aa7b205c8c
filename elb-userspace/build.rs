//! Builds the XDP programs (`elb-ebpf`) for `bpfel-unknown-none` and hands the production object
//! (`elb`: the load balancer and the pass-through program) to the library, which embeds it.

#[path = "build_support/ebpf.rs"]
mod ebpf;

fn main() -> anyhow::Result<()> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("elb.o");
    ebpf::build_object("elb", &out)
}

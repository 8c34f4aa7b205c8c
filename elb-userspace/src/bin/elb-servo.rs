//! `elb-servo`: the servo agent and its dataplane tools.

use std::{net::Ipv4Addr, path::PathBuf};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use elb_common::Config;
use elb_userspace::dataplane::{self, AttachMode, DEFAULT_PIN_ROOT, Dataplane, LoadOptions, Maps};

#[derive(Parser)]
#[command(
    version,
    about = "ELB servo: XDP load balancer agent and dataplane tools"
)]
struct Cli {
    /// Network namespace to work in (`ip netns` name); entered before anything else.
    #[arg(long, global = true)]
    netns: Option<String>,
    /// Pin root on bpffs.
    #[arg(long, global = true, default_value = DEFAULT_PIN_ROOT)]
    pin_root: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the XDP program (reusing pinned maps) and attach it to interfaces; exits once
    /// attached (the pinned links keep it running).
    Load {
        /// Interface to attach to (repeatable).
        #[arg(long = "iface", required = true)]
        ifaces: Vec<String>,
        /// SNAT addresses per interface, `IFACE=IP[,IP...]` (repeatable).
        #[arg(long = "snat")]
        snat: Vec<String>,
        /// SNAT port range `MIN-MAX` (reserved from the kernel's ephemeral ports).
        #[arg(long, default_value = "20000-59999")]
        snat_ports: String,
        /// Conntrack entries (two per flow); used when the maps are created.
        #[arg(long, default_value_t = elb_common::DEFAULT_CONNTRACK_ENTRIES)]
        conntrack_entries: u32,
        /// Generic (skb) XDP instead of native.
        #[arg(long)]
        generic: bool,
        /// Drop existing pinned state first (established flows are lost).
        #[arg(long)]
        reset: bool,
    },
    /// Detach the program from interfaces.
    Unload {
        /// Interface to detach from (repeatable).
        #[arg(long = "iface", required = true)]
        ifaces: Vec<String>,
        /// Also remove the pinned maps once no interface is attached.
        #[arg(long)]
        purge: bool,
    },
    /// Print counters, listeners, backends and flow counts.
    Status,
}

fn parse_ports(s: &str) -> anyhow::Result<(u16, u16)> {
    let (a, b) = s.split_once('-').context("expected MIN-MAX")?;
    let (a, b): (u16, u16) = (a.trim().parse()?, b.trim().parse()?);
    if a == 0 || a > b {
        bail!("SNAT port range {s} is empty or starts at 0");
    }
    Ok((a, b))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(ns) = &cli.netns {
        dataplane::enter_netns(ns)?;
    }
    match cli.command {
        Command::Load {
            ifaces,
            snat,
            snat_ports,
            conntrack_entries,
            generic,
            reset,
        } => {
            let ports = parse_ports(&snat_ports)?;
            let mut dp = Dataplane::load(&LoadOptions {
                pin_root: cli.pin_root.clone(),
                conntrack_entries,
                reset,
            })?;
            let names: Vec<&str> = ifaces.iter().map(String::as_str).collect();
            dataplane::apply_sysctls(&names, ports)?;
            let mut maps = dp.maps()?;
            maps.set_config(Config {
                snat_port_min: ports.0,
                snat_port_max: ports.1,
                flags: 0,
            })?;
            for spec in &snat {
                let (iface, addrs) = spec
                    .split_once('=')
                    .context("--snat expects IFACE=IP[,IP...]")?;
                let addrs = addrs
                    .split(',')
                    .map(|a| a.trim().parse::<Ipv4Addr>())
                    .collect::<Result<Vec<_>, _>>()
                    .with_context(|| format!("bad address in --snat {spec}"))?;
                maps.set_snat_addrs(dataplane::ifindex(iface)?, &addrs)?;
            }
            let mode = if generic {
                AttachMode::Generic
            } else {
                AttachMode::Native
            };
            for iface in &ifaces {
                dp.attach(iface, mode)?;
                println!("attached to {iface}");
            }
        }
        Command::Unload { ifaces, purge } => {
            for iface in &ifaces {
                if dataplane::detach(&cli.pin_root, iface)? {
                    println!("detached from {iface}");
                } else {
                    println!("{iface}: nothing attached");
                }
            }
            if purge {
                let left = dataplane::attached_interfaces(&cli.pin_root);
                if !left.is_empty() {
                    bail!("not purging: still attached to {}", left.join(", "));
                }
                dataplane::remove_pins(&cli.pin_root)?;
                println!("removed {}", cli.pin_root.display());
            }
        }
        Command::Status => {
            let maps = Maps::open(&cli.pin_root)?;
            let counters = maps.counters()?;
            println!(
                "attached: {}",
                dataplane::attached_interfaces(&cli.pin_root).join(", ")
            );
            println!("config: {:?}", maps.config()?);
            for (key, l) in maps.listeners()? {
                println!(
                    "listener {}:{} id {} backends {:?}",
                    Ipv4Addr::from(key.vip),
                    key.port,
                    l.id,
                    maps.backend_set(l.id)?
                );
            }
            for (id, b) in maps.backends()? {
                println!(
                    "backend {id}: {}:{} state {} gen {}",
                    Ipv4Addr::from(b.addr),
                    b.port,
                    b.state,
                    b.generation
                );
            }
            println!("conntrack entries: {}", maps.flows()?.len());
            for (name, value) in elb_common::Counters::NAMES.iter().zip(counters.values()) {
                if value != 0 {
                    println!("{name} {value}");
                }
            }
        }
    }
    Ok(())
}

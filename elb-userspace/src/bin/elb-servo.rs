//! `elb-servo`: the servo agent and its dataplane tools.

use std::{net::Ipv4Addr, path::PathBuf};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use elb_common::Config;
use elb_userspace::{
    agent::{
        admission,
        service::{self, ControlSettings, ServiceOptions},
    },
    config::ConfigFile,
    dataplane::{self, AttachMode, DEFAULT_PIN_ROOT, Dataplane, LoadOptions, Maps},
};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, watch},
};
use tracing::info;

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

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
    /// Run the agent: load and attach the dataplane, health-check the backends, apply the
    /// configuration (SIGHUP reloads it), serve /metrics, deliver access logs (SIGUSR1 finishes
    /// the open files at once). SIGTERM/SIGINT stop the agent (after a last access log upload)
    /// and leave the dataplane forwarding.
    Run {
        /// Configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Drop pinned state first (established flows are lost).
        #[arg(long)]
        reset: bool,
        /// Log format.
        #[arg(long, value_enum, default_value = "human")]
        log_format: LogFormat,
        /// Take the load balancers from the control service at this URL (the file then only
        /// holds the servo's own settings).
        #[arg(long, requires = "credentials")]
        control: Option<String>,
        /// The servo's credentials (JSON from `elb-control admin servo create`).
        #[arg(long, requires = "control")]
        credentials: Option<PathBuf>,
        /// This servo's zone (overrides `zone` in the file).
        #[arg(long)]
        zone: Option<String>,
    },
    /// Detach the program from every interface it is attached to (the pinned links), and with
    /// `--purge` remove the pinned maps.
    Detach {
        /// Also remove the pinned maps.
        #[arg(long)]
        purge: bool,
    },
    /// Check a configuration file and print what it describes.
    Check {
        /// Configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
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
    /// Attach the pass-through program `elb_pass` to interfaces: the peers of the servo's veths
    /// in a test topology. veth delivers XDP_TX and redirected frames (forwarded packets, and
    /// the servo's own RSTs, SYN-ACKs and ICMP errors) only to a peer that runs an XDP program;
    /// without it they are lost. Physical NICs need nothing. The links are pinned under
    /// `<pin root>/pass/<netns>/`, so they outlive this command.
    AttachPass {
        /// Interface to attach to (repeatable).
        #[arg(long = "iface", required = true)]
        ifaces: Vec<String>,
        /// Generic (skb) XDP instead of native.
        #[arg(long)]
        generic: bool,
    },
    /// Detach what `attach-pass` attached.
    DetachPass {
        /// Interface to detach from (repeatable).
        #[arg(long = "iface", required = true)]
        ifaces: Vec<String>,
    },
}

fn parse_ports(s: &str) -> anyhow::Result<(u16, u16)> {
    let (a, b) = s.split_once('-').context("expected MIN-MAX")?;
    let (a, b): (u16, u16) = (a.trim().parse()?, b.trim().parse()?);
    if a == 0 || a > b {
        bail!("SNAT port range {s} is empty or starts at 0");
    }
    Ok((a, b))
}

/// Where `attach-pass` pins its links: one directory per network namespace (interface names
/// repeat across namespaces).
fn pass_dir(pin_root: &std::path::Path, netns: Option<&str>) -> PathBuf {
    pin_root.join("pass").join(netns.unwrap_or("default"))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ELB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Runs the service with SIGHUP as reload and SIGTERM/SIGINT as shutdown.
async fn run_agent(options: ServiceOptions) -> anyhow::Result<()> {
    let (reload_tx, reload) = mpsc::channel(4);
    let (flush_tx, flush) = mpsc::channel(4);
    let (stop_tx, stop) = watch::channel(false);
    let mut hup = signal(SignalKind::hangup())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = hup.recv() => { info!("SIGHUP"); let _ = reload_tx.send(()).await; }
                _ = usr1.recv() => { info!("SIGUSR1"); let _ = flush_tx.send(()).await; }
                _ = term.recv() => { info!("SIGTERM: stopping"); let _ = stop_tx.send(true); break; }
                _ = int.recv() => { info!("SIGINT: stopping"); let _ = stop_tx.send(true); break; }
            }
        }
    });
    service::serve(options, reload, flush, stop).await?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(ns) = &cli.netns {
        // Before any thread exists: threads inherit the namespace of their creator.
        dataplane::enter_netns(ns)?;
    }
    match cli.command {
        Command::Run {
            config,
            reset,
            log_format,
            control,
            credentials,
            zone,
        } => {
            let control = control
                .zip(credentials)
                .map(|(url, credentials)| ControlSettings { url, credentials });
            init_logging(log_format);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(run_agent(ServiceOptions {
                config,
                reset,
                zone,
                control,
            }))?;
        }
        Command::Detach { purge } => {
            let ifaces = dataplane::attached_interfaces(&cli.pin_root);
            for iface in &ifaces {
                dataplane::detach(&cli.pin_root, iface)?;
                println!("detached from {iface}");
            }
            if ifaces.is_empty() {
                println!("nothing attached under {}", cli.pin_root.display());
            }
            if purge {
                dataplane::remove_pins(&cli.pin_root)?;
                println!("removed {}", cli.pin_root.display());
            }
        }
        Command::Check { config } => {
            let file = ConfigFile::load(&config)?;
            let admission = admission::admit(&file.settings, &file.load_balancers, &[]);
            println!("{}: servo settings ok", config.display());
            for lb in &admission.served {
                println!(
                    "  {}: {} VIP(s), {} listener(s), {} instance(s), health check {}",
                    lb.load_balancer_name,
                    lb.vips.len(),
                    lb.listeners.len(),
                    lb.instances.len(),
                    lb.health_check().target
                );
            }
            for r in &admission.refused {
                println!("  {}: refused: {}", r.load_balancer_name, r.reason);
            }
            if !admission.refused.is_empty() {
                bail!(
                    "{} of {} load balancers refused",
                    admission.refused.len(),
                    file.load_balancers.len()
                );
            }
        }
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
                ..maps.config()?
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
        Command::AttachPass { ifaces, generic } => {
            let dir = pass_dir(&cli.pin_root, cli.netns.as_deref());
            let mode = if generic {
                AttachMode::Generic
            } else {
                AttachMode::Native
            };
            for iface in &ifaces {
                dataplane::attach_pass(&dir, iface, mode)?;
                println!("elb_pass attached to {iface}");
            }
        }
        Command::DetachPass { ifaces } => {
            let dir = pass_dir(&cli.pin_root, cli.netns.as_deref());
            for iface in &ifaces {
                if dataplane::detach_pass(&dir, iface)? {
                    println!("elb_pass detached from {iface}");
                } else {
                    println!("{iface}: elb_pass not attached");
                }
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

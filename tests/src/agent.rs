//! Running the real `elb-servo run` agent in a topology's servo namespace.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};
use elb_userspace::agent::metrics::InstanceView;

use crate::{
    netns::{Netns, Proc, bin, wait_for},
    topo::{SNAT, Topology, VIP, backend_addr},
};

/// Where the agent's HTTP endpoint listens inside the servo namespace.
pub const API: &str = "127.0.0.1:9400";

/// A running agent; killed on drop (the dataplane stays, the topology removes it).
#[derive(Debug)]
pub struct Agent {
    proc: Option<Proc>,
    pub config: PathBuf,
    pub log: PathBuf,
    servo: String,
    pin_root: PathBuf,
    dir: tempfile::TempDir,
}

/// The servo-wide part of a configuration for the standard topology.
pub fn servo_section(topo: &Topology) -> String {
    format!(
        r#"interfaces = ["s0", "s1"]
pin_root = "{}"
metrics_listen = "{API}"
snat_ports = "20000-59999"

[[snat]]
interface = "s1"
addresses = ["{SNAT}"]

[[snat]]
interface = "s0"
addresses = ["{VIP}"]
"#,
        topo.pin_root.display()
    )
}

/// A load balancer `web` on `VIP:80` -> instances `i-1..` (the topology's backends) port 80.
pub fn web_lb(topo: &Topology, health_check: &str, attributes: &str) -> String {
    let instances: Vec<String> = (0..topo.backends.len())
        .map(|i| {
            format!(
                "  {{ InstanceId = \"i-{}\", Address = \"{}\" }},",
                i + 1,
                backend_addr(i)
            )
        })
        .collect();
    format!(
        r#"
[[LoadBalancers]]
LoadBalancerName = "web"
Vips = ["{VIP}"]
Listeners = [{{ Protocol = "HTTP", LoadBalancerPort = 80, InstancePort = 80 }}]
Instances = [
{}
]
HealthCheck = {health_check}
[LoadBalancers.Attributes]
{attributes}
"#,
        instances.join("\n")
    )
}

/// A fast health check within ELB's ranges: every 5 s, 2 to change state.
pub const FAST_HTTP_CHECK: &str = r#"{ Target = "HTTP:80/name", Interval = 5, Timeout = 2, UnhealthyThreshold = 2, HealthyThreshold = 2 }"#;

impl Agent {
    /// Writes `config` and starts the agent in the topology's servo namespace.
    pub fn start(topo: &Topology, config: &str) -> anyhow::Result<Self> {
        let dir = crate::netns::tempdir("agent")?;
        let path = dir.path().join("servo.toml");
        fs::write(&path, config)?;
        let log = dir.path().join("agent.log");
        let mut agent = Self {
            proc: None,
            config: path,
            log,
            servo: topo.servo.name().to_string(),
            pin_root: topo.pin_root.clone(),
            dir,
        };
        agent.spawn(false)?;
        Ok(agent)
    }

    fn spawn(&mut self, reset: bool) -> anyhow::Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(bin("elb-servo"));
        cmd.args(["--netns", &self.servo, "run", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .env("ELB_LOG", "info");
        if reset {
            cmd.arg("--reset");
        }
        self.proc = Some(Proc::spawn(cmd, "elb-servo run")?);
        let servo = self.servo.clone();
        let log = self.log.clone();
        let proc = self.proc.as_mut().expect("just spawned");
        wait_for(Duration::from_secs(20), "the agent's API", || {
            if !proc.is_running() {
                return Some(Err(anyhow::anyhow!(
                    "elb-servo exited: {}",
                    fs::read_to_string(&log).unwrap_or_default()
                )));
            }
            get(&servo, "/status").ok().map(|_| Ok(()))
        })?
    }

    /// Kills the agent with SIGKILL (no cleanup at all).
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Starts the agent again (after `kill9`), reusing the pinned state.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        self.spawn(false)
    }

    /// Sends a signal to the agent.
    pub fn signal(&self, sig: i32) {
        if let Some(p) = &self.proc {
            p.signal(sig);
        }
    }

    /// Waits for the agent to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let mut p = self.proc.take().context("not running")?;
        p.wait_timeout(timeout)
    }

    /// Replaces the configuration file and sends SIGHUP.
    pub fn reload(&self, config: &str) -> anyhow::Result<()> {
        fs::write(&self.config, config)?;
        self.signal(libc::SIGHUP);
        Ok(())
    }

    /// The agent's log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /health`.
    pub fn health(&self) -> anyhow::Result<Vec<InstanceView>> {
        Ok(serde_json::from_str(&get(&self.servo, "/health")?)?)
    }

    /// The state of `instance` of load balancer `lb`.
    pub fn state(&self, lb: &str, instance: &str) -> Option<String> {
        self.health()
            .ok()?
            .into_iter()
            .find(|v| v.load_balancer_name == lb && v.instance_id == instance)
            .map(|v| v.state.to_string())
    }

    /// Waits until every instance of `lb` named in `want` has the given state.
    pub fn wait_states(
        &self,
        lb: &str,
        want: &[(&str, &str)],
        timeout: Duration,
    ) -> anyhow::Result<()> {
        wait_for(timeout, &format!("{lb} states {want:?}"), || {
            want.iter()
                .all(|(i, s)| self.state(lb, i).as_deref() == Some(*s))
                .then_some(())
        })
        .with_context(|| format!("health now: {:?}", self.health().ok()))
    }

    /// `GET /metrics`.
    pub fn metrics(&self) -> anyhow::Result<String> {
        get(&self.servo, "/metrics")
    }

    /// The pin root.
    pub fn pin_root(&self) -> &PathBuf {
        &self.pin_root
    }

    /// Scratch directory of this agent.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A plain HTTP GET to the agent's API inside the servo namespace; returns the body.
pub fn get(servo_ns: &str, path: &str) -> anyhow::Result<String> {
    let path = path.to_string();
    Netns::run_named(servo_ns, move || -> anyhow::Result<String> {
        let addr: SocketAddr = API.parse()?;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n"
        )?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
        if !head.starts_with("HTTP/1.1 200") {
            bail!("GET {path}: {head}");
        }
        Ok(body.to_string())
    })
}

/// Sum of the samples of metric `name` whose labels contain every `label`.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| labels.iter().all(|lab| l.contains(lab)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

//! The whole service in network namespaces: control replicas, servos in zones, web servers,
//! and a client that uses the ELB API (awscli, eulb) and resolves load balancer names through
//! control's DNS.
//!
//! ```text
//!                     switch ns: bridge "pub" 198.18.0.0/24        bridge "lan" 198.19.0.0/24
//!  client  c0 .2 ------------ pub
//!  control ctl0 .5 (.6 ...)-- pub   (API :8773, DNS :53, SQLite file or PostgreSQL in its ns)
//!  servo i p0 .11+i --------- pub   b0 198.19.0.1+i ------------ lan   (SNAT address)
//!  web j                                        eth0 198.19.0.11+j -- lan
//! ```

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};

use crate::{
    agent,
    http::{Connection, Nginx},
    netns::{Netns, Proc, bin, remove_pin_root, run, unique, veth, wait_for},
    topo::{attach_pass, wire_checksums},
};

/// The region everything runs in.
pub const REGION: &str = "us-east-1";
/// DNS domain of the control service.
pub const DOMAIN: &str = "elb.local";

/// A servo to create.
#[derive(Clone, Debug)]
pub struct ServoSpec {
    /// Servo id.
    pub id: String,
    /// Its zone.
    pub zone: String,
    /// Its `metrics_listen` (default: the agent API on loopback).
    pub metrics_listen: Option<String>,
}

impl ServoSpec {
    /// A servo `id` in `zone` with default settings.
    pub fn new(id: &str, zone: &str) -> Self {
        Self {
            id: id.into(),
            zone: zone.into(),
            metrics_listen: None,
        }
    }
}

/// A web server (instance) to create.
#[derive(Clone, Debug)]
pub struct WebSpec {
    /// Name it answers `/name` with; the instance id is `i-<name>`.
    pub name: String,
    /// Its zone.
    pub zone: String,
}

/// Credentials of the account the tests use.
#[derive(Clone, Debug)]
pub struct Account {
    /// Account id.
    pub id: String,
    /// Access key id.
    pub access_key: String,
    /// Secret.
    pub secret: String,
}

/// A control replica.
#[derive(Debug)]
pub struct ControlNode {
    proc: Option<Proc>,
    args: Vec<String>,
    ns: String,
    /// API endpoint.
    pub url: String,
    /// The same over TLS (what servos use).
    pub tls_url: String,
    /// API address.
    pub addr: SocketAddr,
    /// DNS address, if this replica serves DNS.
    pub dns: Option<SocketAddr>,
    /// Its Prometheus endpoint (`--metrics-listen`).
    pub metrics: SocketAddr,
    /// Log file.
    pub log: PathBuf,
}

impl ControlNode {
    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns])
            .arg(bin("elb-control"))
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log);
        self.proc = Some(Proc::spawn(cmd, "elb-control serve")?);
        let addr = self.addr;
        let ns = self.ns.clone();
        let log = self.log.clone();
        let proc = self.proc.as_mut().expect("spawned");
        wait_for(Duration::from_secs(30), "elb-control to listen", || {
            if !proc.is_running() {
                return Some(Err(anyhow::anyhow!(
                    "elb-control exited: {}",
                    fs::read_to_string(&log).unwrap_or_default()
                )));
            }
            Netns::run_named(&ns, move || {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })
            .then_some(Ok(()))
        })?
    }

    /// Kills the replica (SIGKILL).
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Starts it again (same database, same addresses).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        self.spawn()
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A servo host: its namespace's agent.
#[derive(Debug)]
pub struct ServoNode {
    proc: Option<Proc>,
    /// Servo id.
    pub id: String,
    /// Zone.
    pub zone: String,
    /// Namespace name.
    pub ns: String,
    /// Pin root of its dataplane.
    pub pin_root: PathBuf,
    /// Its public address (the VIP control assigns).
    pub vip: Ipv4Addr,
    /// Its SNAT address on the backend LAN.
    pub snat: Ipv4Addr,
    /// Local configuration file.
    pub config: PathBuf,
    /// Credentials file.
    pub credentials: PathBuf,
    /// Agent log.
    pub log: PathBuf,
    control_url: String,
}

impl ServoNode {
    /// Starts the agent in control mode.
    pub fn start(&mut self) -> anyhow::Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(bin("elb-servo"));
        cmd.args(["--netns", &self.ns, "run", "--config"])
            .arg(&self.config)
            .args(["--control", &self.control_url, "--credentials"])
            .arg(&self.credentials)
            .stdout(Stdio::null())
            .stderr(log)
            .env("ELB_LOG", "info");
        self.proc = Some(Proc::spawn(cmd, &format!("elb-servo {}", self.id))?);
        let ns = self.ns.clone();
        let log = self.log.clone();
        let proc = self.proc.as_mut().expect("spawned");
        wait_for(Duration::from_secs(30), "the servo agent's API", || {
            if !proc.is_running() {
                return Some(Err(anyhow::anyhow!(
                    "elb-servo exited: {}",
                    fs::read_to_string(&log).unwrap_or_default()
                )));
            }
            agent::get(&ns, "/status").ok().map(|_| Ok(()))
        })?
    }

    /// Kills the agent (SIGKILL); the dataplane keeps forwarding.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// The servo host "dies": agent killed, interfaces down (its dataplane stops too).
    pub fn power_off(&mut self, netns: &Netns) -> anyhow::Result<()> {
        self.kill9();
        netns.ip(&["link", "set", "p0", "down"])?;
        netns.ip(&["link", "set", "b0", "down"])?;
        Ok(())
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The agent's `/status` as JSON.
    pub fn status(&self) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_str(&agent::get(&self.ns, "/status")?)?)
    }
}

/// A PostgreSQL cluster in the control namespace, stopped on drop.
#[derive(Debug)]
pub struct Postgres {
    dir: PathBuf,
    /// Its URL (from the control namespace).
    pub url: String,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

impl Postgres {
    fn start(ns: &Netns, port: u16) -> anyhow::Result<Self> {
        let dir = crate::netns::tempdir("pg")?.keep();
        run(&["chown", "postgres:postgres", &dir.display().to_string()])?;
        let data = dir.join("data").display().to_string();
        run(&[
            "runuser",
            "-u",
            "postgres",
            "--",
            &format!("{PG_BIN}/initdb"),
            "-D",
            &data,
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ])?;
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            dir.display()
        );
        ns.exec(&[
            "runuser",
            "-u",
            "postgres",
            "--",
            &format!("{PG_BIN}/pg_ctl"),
            "-D",
            &data,
            "-o",
            &opts,
            "-l",
            &dir.join("log").display().to_string(),
            "-w",
            "start",
        ])?;
        ns.exec(&[
            "runuser",
            "-u",
            "postgres",
            "--",
            &format!("{PG_BIN}/psql"),
            "-h",
            &dir.display().to_string(),
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-c",
            "CREATE DATABASE elb",
        ])?;
        Ok(Self {
            url: format!("postgres://postgres@127.0.0.1:{port}/elb"),
            dir,
        })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.join("data").display().to_string();
        let _ = run(&[
            "runuser",
            "-u",
            "postgres",
            "--",
            &format!("{PG_BIN}/pg_ctl"),
            "-D",
            &data,
            "-m",
            "immediate",
            "-w",
            "stop",
        ]);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// What to build.
#[derive(Clone, Debug)]
pub struct SystemSpec {
    /// Servos.
    pub servos: Vec<ServoSpec>,
    /// Web servers.
    pub web: Vec<WebSpec>,
    /// Control replicas (the first serves DNS).
    pub replicas: usize,
    /// PostgreSQL instead of SQLite.
    pub postgres: bool,
    /// `--servos-per-zone`.
    pub servos_per_zone: u32,
    /// Servo heartbeat interval and timeout, seconds.
    pub heartbeat: (u32, u32),
    /// Web servers with an access log, `/headers`, `/app` and port 25 ([`Nginx::start_logged`]).
    pub logged_web: bool,
    /// More `elb-control serve` arguments (a cloud's endpoints...).
    pub control_args: Vec<String>,
}

impl SystemSpec {
    /// The POC: a servo per zone in two zones, web1 and web2 in zone-a, web3 in zone-b.
    pub fn poc() -> Self {
        let z = |s: &str| s.to_string();
        Self {
            servos: vec![
                ServoSpec::new("servo-a", "zone-a"),
                ServoSpec::new("servo-b", "zone-b"),
            ],
            web: vec![
                WebSpec {
                    name: z("web1"),
                    zone: z("zone-a"),
                },
                WebSpec {
                    name: z("web2"),
                    zone: z("zone-a"),
                },
                WebSpec {
                    name: z("web3"),
                    zone: z("zone-b"),
                },
            ],
            replicas: 1,
            postgres: false,
            servos_per_zone: 1,
            heartbeat: (1, 4),
            logged_web: false,
            control_args: Vec::new(),
        }
    }
}

/// The running system. Processes drop before namespaces.
#[derive(Debug)]
pub struct System {
    /// Servo agents.
    pub servos: Vec<ServoNode>,
    /// Control replicas.
    pub controls: Vec<ControlNode>,
    /// Web servers.
    pub web: Vec<Nginx>,
    /// PostgreSQL, if used.
    pub pg: Option<Postgres>,
    /// Client namespace.
    pub client: Netns,
    /// Control namespace.
    pub ctl: Netns,
    /// Switch namespace (two bridges).
    pub switch: Netns,
    /// Servo namespaces (same order as `servos`).
    pub servo_ns: Vec<Netns>,
    /// Web namespaces.
    pub web_ns: Vec<Netns>,
    /// Database URL.
    pub db: String,
    /// The test account.
    pub account: Account,
    /// What was built.
    pub spec: SystemSpec,
    /// Scratch directory.
    pub dir: tempfile::TempDir,
    pass: PathBuf,
}

/// Address of control replica `r`.
pub fn control_addr(r: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 5 + r as u8)
}

/// Public address of servo `i`.
pub fn servo_vip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 11 + i as u8)
}

/// Address of web server `j`.
pub fn web_addr(j: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, 0, 11 + j as u8)
}

fn json_of(out: &str) -> anyhow::Result<serde_json::Value> {
    serde_json::from_str(out).with_context(|| format!("not JSON: {out}"))
}

impl System {
    /// Builds and starts everything.
    pub fn start(spec: SystemSpec) -> anyhow::Result<Self> {
        crate::netns::require_root();
        let tag = unique("sys");
        let dir = crate::netns::tempdir("system")?;
        let client = Netns::new(&format!("{tag}-client"))?;
        let ctl = Netns::new(&format!("{tag}-ctl"))?;
        let switch = Netns::new(&format!("{tag}-sw"))?;
        for br in ["pub", "lan"] {
            switch.ip(&["link", "add", br, "type", "bridge"])?;
            switch.ip(&["link", "set", br, "up"])?;
        }
        let plug =
            |ns: &Netns, iface: &str, port: &str, bridge: &str, cidr: &str| -> anyhow::Result<()> {
                veth(ns, iface, &switch, port)?;
                switch.ip(&["link", "set", port, "master", bridge])?;
                ns.ip(&["addr", "add", cidr, "dev", iface])?;
                Ok(())
            };
        plug(&client, "c0", "sc", "pub", "198.18.0.2/24")?;
        wire_checksums(&client, "c0")?;
        plug(
            &ctl,
            "ctl0",
            "sctl",
            "pub",
            &format!("{}/24", control_addr(0)),
        )?;
        for r in 1..spec.replicas {
            ctl.ip(&[
                "addr",
                "add",
                &format!("{}/24", control_addr(r)),
                "dev",
                "ctl0",
            ])?;
        }
        let pass = PathBuf::from(format!("/sys/fs/bpf/{tag}-pass"));
        elb_userspace::dataplane::pin_pass_program(&pass)?;
        let mut servo_ns = Vec::new();
        for (i, s) in spec.servos.iter().enumerate() {
            let ns = Netns::new(&format!("{tag}-{}", s.id))?;
            plug(
                &ns,
                "p0",
                &format!("sp{i}"),
                "pub",
                &format!("{}/24", servo_vip(i)),
            )?;
            plug(
                &ns,
                "b0",
                &format!("sb{i}"),
                "lan",
                &format!("198.19.0.{}/24", 1 + i),
            )?;
            attach_pass(&switch, &format!("sp{i}"), &pass)?;
            attach_pass(&switch, &format!("sb{i}"), &pass)?;
            servo_ns.push(ns);
        }
        let mut web_ns = Vec::new();
        for (j, w) in spec.web.iter().enumerate() {
            let ns = Netns::new(&format!("{tag}-{}", w.name))?;
            plug(
                &ns,
                "eth0",
                &format!("sw{j}"),
                "lan",
                &format!("{}/24", web_addr(j)),
            )?;
            wire_checksums(&ns, "eth0")?;
            web_ns.push(ns);
        }

        let pg = if spec.postgres {
            Some(Postgres::start(&ctl, 25432)?)
        } else {
            None
        };
        let db = match &pg {
            Some(pg) => pg.url.clone(),
            None => format!("sqlite:{}", dir.path().join("elb.db").display()),
        };

        let mut sys = Self {
            servos: Vec::new(),
            controls: Vec::new(),
            web: Vec::new(),
            pg,
            client,
            ctl,
            switch,
            servo_ns,
            web_ns,
            db,
            account: Account {
                id: String::new(),
                access_key: String::new(),
                secret: String::new(),
            },
            spec: spec.clone(),
            dir,
            pass,
        };
        // The first replica creates the schema; admin commands then share it.
        sys.start_control(0)?;
        let mut zones: Vec<&str> = spec
            .servos
            .iter()
            .map(|s| s.zone.as_str())
            .chain(spec.web.iter().map(|w| w.zone.as_str()))
            .collect();
        zones.sort();
        zones.dedup();
        for z in zones {
            sys.admin(&["zone", "add", "--name", z, "--region", REGION])?;
        }
        for (j, w) in spec.web.iter().enumerate() {
            sys.admin(&[
                "instance",
                "add",
                "--id",
                &format!("i-{}", w.name),
                "--address",
                &web_addr(j).to_string(),
                "--zone",
                &w.zone,
            ])?;
        }
        let acct = json_of(&sys.admin(&["account", "create", "--name", "demo"])?)?;
        sys.account = Account {
            id: acct["AccountId"].as_str().context("AccountId")?.into(),
            access_key: acct["AccessKeyId"].as_str().context("AccessKeyId")?.into(),
            secret: acct["SecretAccessKey"]
                .as_str()
                .context("SecretAccessKey")?
                .into(),
        };
        for r in 1..spec.replicas {
            sys.start_control(r)?;
        }
        for (j, w) in spec.web.iter().enumerate() {
            let addr = SocketAddr::from((web_addr(j), 80));
            sys.web.push(if spec.logged_web {
                Nginx::start_logged(&sys.web_ns[j], &w.name, addr)?
            } else {
                Nginx::start(&sys.web_ns[j], &w.name, addr, 1)?
            });
        }
        for (i, s) in spec.servos.iter().enumerate() {
            let mut args = vec!["servo", "create", "--id", &s.id, "--zone", &s.zone];
            let tls = sys.tls_file_args();
            args.extend(tls.iter().map(String::as_str));
            let creds = sys.admin(&args)?;
            // Servos attach to replicas in turn, over control's TLS listener (the pin is in
            // their credentials).
            let url = sys.controls[i % sys.controls.len()].tls_url.clone();
            let node = sys.servo_node(i, s, &creds, &url)?;
            sys.servos.push(node);
            sys.servos[i].start()?;
        }
        // Control creates load balancers only where a live servo can serve them.
        wait_for(Duration::from_secs(30), "every servo registered", || {
            let list = json_of(&sys.admin(&["servo", "list"]).ok()?).ok()?;
            list.as_array()?
                .iter()
                .all(|s| s["Live"] == true)
                .then_some(())
        })?;
        Ok(sys)
    }

    /// `elb-control admin servo list`, by servo id.
    pub fn servo_list(
        &self,
    ) -> anyhow::Result<std::collections::BTreeMap<String, serde_json::Value>> {
        let list = json_of(&self.admin(&["servo", "list"])?)?;
        Ok(list
            .as_array()
            .context("servo list")?
            .iter()
            .map(|s| {
                (
                    s["ServoId"].as_str().unwrap_or_default().to_string(),
                    s.clone(),
                )
            })
            .collect())
    }

    /// `--tls-cert`/`--tls-key` of control: with SQLite none (the default pair beside the
    /// database, generated on first use); with PostgreSQL one pair every replica shares.
    fn tls_file_args(&self) -> Vec<String> {
        if self.pg.is_none() {
            return Vec::new();
        }
        let cert = self.dir.path().join("control-tls.crt");
        let key = self.dir.path().join("control-tls.key");
        vec![
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
        ]
    }

    fn start_control(&mut self, r: usize) -> anyhow::Result<()> {
        if self.pg.is_some() && r == 0 {
            let key = rcgen::KeyPair::generate()?;
            let cert = rcgen::CertificateParams::new(vec!["elb-control".to_string()])?
                .self_signed(&key)?;
            fs::write(self.dir.path().join("control-tls.crt"), cert.pem())?;
            fs::write(self.dir.path().join("control-tls.key"), key.serialize_pem())?;
        }
        let addr = SocketAddr::from((control_addr(r), 8773));
        let tls_addr = SocketAddr::from((control_addr(r), 8774));
        let mut args: Vec<String> = [
            "serve",
            "--listen",
            &addr.to_string(),
            "--db",
            &self.db,
            "--region",
            REGION,
            "--dns-domain",
            DOMAIN,
            "--tls-listen",
            &tls_addr.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(self.tls_file_args());
        let (hb, timeout) = self.spec.heartbeat;
        args.extend([
            "--servo-heartbeat".into(),
            hb.to_string(),
            "--servo-timeout".into(),
            timeout.to_string(),
        ]);
        args.extend([
            "--servos-per-zone".into(),
            self.spec.servos_per_zone.to_string(),
        ]);
        args.extend(self.spec.control_args.iter().cloned());
        let metrics = SocketAddr::from((control_addr(r), 9401));
        args.extend(["--metrics-listen".into(), metrics.to_string()]);
        let dns = (r == 0).then(|| SocketAddr::from((control_addr(r), 53)));
        if let Some(dns) = dns {
            args.extend([
                "--dns-listen".into(),
                dns.to_string(),
                "--dns-ttl".into(),
                "5".into(),
            ]);
        }
        let mut node = ControlNode {
            proc: None,
            args,
            ns: self.ctl.name().to_string(),
            url: format!("http://{addr}"),
            tls_url: format!("https://{tls_addr}"),
            addr,
            dns,
            metrics,
            log: self.dir.path().join(format!("control-{r}.log")),
        };
        node.spawn()?;
        self.controls.push(node);
        Ok(())
    }

    fn servo_node(
        &self,
        i: usize,
        s: &ServoSpec,
        creds: &str,
        url: &str,
    ) -> anyhow::Result<ServoNode> {
        let base = self.dir.path().join(&s.id);
        fs::create_dir_all(&base)?;
        let credentials = base.join("credentials.json");
        fs::write(&credentials, creds)?;
        let pin_root = PathBuf::from(format!("/sys/fs/bpf/{}-{}", unique("sys"), s.id));
        let snat = Ipv4Addr::new(198, 19, 0, 1 + i as u8);
        let config = base.join("servo.toml");
        fs::write(
            &config,
            format!(
                r#"interfaces = ["p0", "b0"]
zone = "{zone}"
pin_root = "{pin}"
metrics_listen = "{metrics}"
state_dir = "{state}"
public_addresses = ["{vip}"]

[[snat]]
interface = "b0"
addresses = ["{snat}"]
"#,
                zone = s.zone,
                pin = pin_root.display(),
                metrics = s.metrics_listen.as_deref().unwrap_or(agent::API),
                state = base.join("state").display(),
                vip = servo_vip(i),
            ),
        )?;
        Ok(ServoNode {
            proc: None,
            id: s.id.clone(),
            zone: s.zone.clone(),
            ns: self.servo_ns[i].name().to_string(),
            pin_root,
            vip: servo_vip(i),
            snat,
            config,
            credentials,
            log: base.join("agent.log"),
            control_url: url.to_string(),
        })
    }

    /// `elb-control admin ARGS` against the system's database.
    pub fn admin(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec![
            bin("elb-control").display().to_string(),
            "admin".into(),
            "--db".into(),
            self.db.clone(),
        ];
        full.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        // In the control namespace: PostgreSQL listens there.
        self.ctl.exec(&refs)
    }

    fn client_env(&self, cmd: &mut Command) {
        cmd.env("AWS_ACCESS_KEY_ID", &self.account.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.account.secret)
            .env("AWS_DEFAULT_REGION", REGION)
            .env("AWS_ELB_URL", &self.controls[0].url)
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_PAGER", "");
    }

    /// `aws elb ARGS --output json` from the client namespace; the parsed output.
    pub fn aws(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        self.aws_service("elb", args)
    }

    /// `aws SERVICE ARGS --output json` (`elb`, `iam`) against control, from the client
    /// namespace; the parsed output.
    pub fn aws_service(&self, service: &str, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let aws = venv_bin("aws");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.client.name()])
            .arg(aws)
            .args([
                service,
                "--endpoint-url",
                &self.controls[0].url,
                "--output",
                "json",
            ])
            .args(args);
        self.client_env(&mut cmd);
        let out = cmd.output().context("running aws")?;
        if !out.status.success() {
            bail!(
                "aws {service} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        if text.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        json_of(&text)
    }

    /// `eulb-CMD ARGS` (the euca2ools-style command) from the client namespace; its output.
    pub fn eulb(&self, cmd: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.client.name()])
            .arg(bin(&format!("eulb-{cmd}")))
            .args(args);
        self.client_env(&mut c);
        let out = c.output().with_context(|| format!("running eulb-{cmd}"))?;
        if !out.status.success() {
            bail!(
                "eulb-{cmd} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Control replica `r`'s Prometheus text (`GET /metrics` on its `--metrics-listen`), read
    /// from the client.
    pub fn control_metrics(&self, r: usize) -> anyhow::Result<String> {
        let addr = self.controls[r].metrics;
        self.client.run(|| {
            Ok(Connection::open(addr, Duration::from_secs(5))?
                .get("/metrics", false)?
                .text())
        })
    }

    /// A value of control replica `r`'s Prometheus text: the series `name` whose labels are
    /// `load_balancer`, the test account and `zone`.
    pub fn control_metric(&self, r: usize, name: &str, lb: &str, zone: &str) -> Option<f64> {
        let text = self.control_metrics(r).ok()?;
        let series = format!(
            "{name}{{load_balancer=\"{lb}\",account=\"{}\",zone=\"{zone}\"}} ",
            self.account.id
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Signs in to control's web console from the client (cookie jar in the scratch directory)
    /// and GETs `path` of its API; the JSON answer.
    pub fn console_get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let jar = self.dir.path().join("console-cookies");
        let base = format!("{}/console/api", self.controls[0].url);
        if !jar.exists() {
            let body = serde_json::json!({
                "AccessKeyId": self.account.access_key,
                "SecretAccessKey": self.account.secret,
            })
            .to_string();
            let jar = jar.display().to_string();
            self.client.exec(&[
                "curl",
                "-sf",
                "-c",
                &jar,
                "-H",
                "content-type: application/json",
                "--data",
                &body,
                &format!("{base}/session"),
            ])?;
        }
        let out = self.client.exec(&[
            "curl",
            "-sf",
            "-b",
            &jar.display().to_string(),
            &format!("{base}{path}"),
        ])?;
        json_of(&out)
    }

    /// The DNS name of load balancer `lb` of the test account.
    pub fn dns_name(&self, lb: &str) -> String {
        format!("{lb}-{}.lb.{DOMAIN}", self.account.id)
    }

    /// Resolves `name` through control's DNS, from the client namespace.
    pub fn resolve(&self, name: &str) -> anyhow::Result<crate::dns::Answer> {
        let server = self.controls[0].dns.context("no DNS")?;
        let name = name.to_string();
        self.client.run(move || crate::dns::query_a(server, &name))
    }

    /// One request on a new connection to `addr` from the client; the backend's name.
    pub fn get_name(&self, addr: SocketAddr) -> anyhow::Result<String> {
        self.client.run(|| {
            Ok(Connection::open(addr, Duration::from_secs(5))?
                .get("/name", false)?
                .text())
        })
    }

    /// `n` requests, each resolving `name` first (as a client that honours the 5 s TTL
    /// loosely would) and connecting to the first address; counts per backend name.
    pub fn spread_by_name(
        &self,
        name: &str,
        port: u16,
        n: u32,
    ) -> anyhow::Result<std::collections::BTreeMap<String, u32>> {
        let mut counts = std::collections::BTreeMap::new();
        for _ in 0..n {
            let answer = self.resolve(name)?;
            let vip = *answer
                .addrs
                .first()
                .with_context(|| format!("{name} did not resolve: {answer:?}"))?;
            let who = self
                .get_name(SocketAddr::from((vip, port)))
                .unwrap_or_else(|e| format!("error: {e}"));
            *counts.entry(who).or_default() += 1;
        }
        Ok(counts)
    }

    /// Waits until DescribeInstanceHealth shows `want` for every instance of `lb`.
    pub fn wait_health(
        &self,
        lb: &str,
        want: &[(&str, &str)],
        timeout: Duration,
    ) -> anyhow::Result<serde_json::Value> {
        let mut last = serde_json::Value::Null;
        let got = wait_for(timeout, &format!("{lb} health {want:?}"), || {
            let h = self
                .aws(&["describe-instance-health", "--load-balancer-name", lb])
                .ok()?;
            let states = h["InstanceStates"].as_array()?.clone();
            last = h.clone();
            want.iter()
                .all(|(id, state)| {
                    states
                        .iter()
                        .any(|s| s["InstanceId"] == *id && s["State"] == *state)
                })
                .then_some(h)
        });
        got.with_context(|| format!("last DescribeInstanceHealth: {last}"))
    }

    /// The servo index serving `vip`.
    pub fn servo_of(&self, vip: Ipv4Addr) -> Option<usize> {
        self.servos.iter().position(|s| s.vip == vip)
    }

    /// Checks that `counts` has exactly `names`, each within `slack` of `each`. Every servo
    /// rotates exactly over its set, but each has its own cursor, so with requests spread over
    /// several servos the total may be off by one per servo.
    pub fn check_balanced(
        counts: &std::collections::BTreeMap<String, u32>,
        names: &[&str],
        each: u32,
        slack: u32,
    ) -> anyhow::Result<()> {
        ensure!(
            counts.len() == names.len()
                && names
                    .iter()
                    .all(|n| counts.get(*n).is_some_and(|&c| c.abs_diff(each) <= slack)),
            "expected {each} (+-{slack}) each for {names:?}, got {counts:?}"
        );
        Ok(())
    }

    /// Checks that `counts` has exactly `names` with `each` requests apiece.
    pub fn check_even(
        counts: &std::collections::BTreeMap<String, u32>,
        names: &[&str],
        each: u32,
    ) -> anyhow::Result<()> {
        ensure!(
            counts.len() == names.len() && names.iter().all(|n| counts.get(*n) == Some(&each)),
            "expected {each} each for {names:?}, got {counts:?}"
        );
        Ok(())
    }
}

impl Drop for System {
    fn drop(&mut self) {
        self.servos.iter_mut().for_each(ServoNode::kill9);
        for s in &self.servos {
            for iface in ["p0", "b0"] {
                let _ = elb_userspace::dataplane::detach(&s.pin_root, iface);
            }
            remove_pin_root(&s.pin_root);
        }
        self.controls.iter_mut().for_each(ControlNode::kill9);
        self.web.clear();
        self.pg = None;
        let _ = fs::remove_file(&self.pass);
    }
}

/// A program of the project's Python virtual environment (`cargo xtask setup` creates it).
pub fn venv_bin(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../.venv/bin")
        .join(name);
    assert!(
        path.exists(),
        "{} missing: run `cargo xtask setup`",
        path.display()
    );
    path
}

//! `elb-control`: the control service (`serve`) and its administration commands (`admin`).

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use control::cloud::CloudConfig;
use control::config::{ServiceConfig, ServoSettings};
use control::service::{ServeOptions, Service};
use control::store::Store;
use control::{admin, server};

#[derive(Parser, Debug)]
#[command(
    name = "elb-control",
    version,
    about = "ELB control service: the ELB Query API and its administration"
)]
struct Cli {
    /// Database: `sqlite:PATH` (or a plain file path) or `postgres://USER@HOST:PORT/DB`.
    #[arg(
        long,
        global = true,
        env = "ELB_CONTROL_DB",
        default_value = "sqlite:elb-control.db"
    )]
    db: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the ELB Query API.
    Serve(Box<ServeArgs>),
    /// Administration: accounts, users, keys, policies, quotas, zones, subnets, instances.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:8773")]
    listen: String,
    /// Region to serve (repeatable); requests signed for other regions are refused.
    #[arg(long = "region", default_values_t = vec!["us-east-1".to_string()])]
    regions: Vec<String>,
    /// DNS domain of load balancer names (`<name>-<account>.lb.<domain>`).
    #[arg(long, default_value = "elb.local")]
    dns_domain: String,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    max_body_bytes: usize,
    /// Largest accepted difference between a request's signing time and the server clock.
    #[arg(long, default_value_t = 900)]
    max_clock_skew_secs: u64,
    /// EC2-compatible cloud endpoint (e.g. http://ec2.example:8773/): zones, subnets, VPCs,
    /// security groups and instances come from it (DescribeAvailabilityZones, DescribeSubnets,
    /// DescribeVpcs, DescribeSecurityGroups, DescribeInstances) instead of the built-in inventory.
    #[arg(long)]
    ec2_endpoint: Option<String>,
    /// The cloud's IAM endpoint: listeners may name its server certificates
    /// (GetServerCertificate).
    #[arg(long)]
    iam_endpoint: Option<String>,
    /// The cloud's ACM endpoint: listeners may name its certificates (DescribeCertificate,
    /// GetCertificate, ExportCertificate).
    #[arg(long)]
    acm_endpoint: Option<String>,
    /// Access key id for the cloud's endpoints (env ELB_CLOUD_ACCESS_KEY_ID, or the older
    /// ELB_EC2_ACCESS_KEY_ID).
    #[arg(
        long,
        alias = "ec2-access-key-id",
        env = "ELB_CLOUD_ACCESS_KEY_ID",
        hide_env_values = true
    )]
    cloud_access_key_id: Option<String>,
    /// Secret access key for the cloud's endpoints (env ELB_CLOUD_SECRET_ACCESS_KEY, or the
    /// older ELB_EC2_SECRET_ACCESS_KEY).
    #[arg(
        long,
        alias = "ec2-secret-access-key",
        env = "ELB_CLOUD_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    cloud_secret_access_key: Option<String>,
    /// Region every EC2 call is signed for (a cloud with its own region name); default: the
    /// region of the request or load balancer at hand.
    #[arg(long)]
    ec2_region: Option<String>,
    /// Region IAM calls are signed for.
    #[arg(long, default_value = "us-east-1")]
    iam_region: String,
    /// Seconds an answer of the cloud is reused (0: ask every time).
    #[arg(long, default_value_t = 5)]
    cloud_cache_ttl: u64,
    /// Milliseconds between reads of the security groups load balancers use (their rule
    /// changes reach the servos within about this long).
    #[arg(long, default_value_t = 500)]
    cloud_refresh_ms: u64,
    /// Log format.
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
    /// Interval (seconds) servos are told to heartbeat at.
    #[arg(long, default_value_t = 2)]
    servo_heartbeat: u64,
    /// A servo whose last heartbeat is older than this (seconds) is dead: it leaves DNS
    /// answers and its load balancers move to other servos of its zone.
    #[arg(long, default_value_t = 10)]
    servo_timeout: u64,
    /// Live servos each load balancer gets in each of its zones (Eucalyptus' vm_per_zone).
    #[arg(long, default_value_t = 1)]
    servos_per_zone: usize,
    /// Serve DNS (UDP and TCP) for load balancer names on this address, e.g. 127.0.0.1:5353
    /// (port 0 picks a free port; the bound address is printed as `dns listening on ADDR`).
    #[arg(long)]
    dns_listen: Option<String>,
    /// TTL (seconds) of the A records the DNS server answers.
    #[arg(long, default_value_t = 60)]
    dns_ttl: u32,
    /// File with the key that seals server certificates' private keys in the database
    /// (created, mode 0600, on first use). Default with SQLite: the database path + `.key`;
    /// with PostgreSQL it must be given, the same file on every replica.
    #[arg(long, env = "ELB_CONTROL_KEY_FILE")]
    key_file: Option<std::path::PathBuf>,
    /// Also serve everything (APIs, servo protocol, console) over TLS on this address, e.g.
    /// 0.0.0.0:8774. Servos pin control's certificate; certificate private keys reach servos
    /// only through this listener.
    #[arg(long)]
    tls_listen: Option<String>,
    #[command(flatten)]
    tls: TlsFileArgs,
    /// S3-compatible endpoint access logs go to (ModifyLoadBalancerAttributes checks that the
    /// bucket exists there), e.g. http://s3.example:9000. Without it access logs cannot be
    /// enabled. Servos upload with their own `[access_logs]` settings.
    #[arg(long)]
    s3_endpoint: Option<String>,
    /// Region of the S3 endpoint's signing scope (default: the first --region).
    #[arg(long)]
    s3_region: Option<String>,
    /// Access key id for the S3 endpoint.
    #[arg(long, env = "ELB_S3_ACCESS_KEY_ID", hide_env_values = true)]
    s3_access_key_id: Option<String>,
    /// Secret access key for the S3 endpoint.
    #[arg(long, env = "ELB_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    s3_secret_access_key: Option<String>,
    /// Serve the load balancers' metrics in the Prometheus text format at `/metrics` on this
    /// address (port 0 picks one, printed as `metrics listening on ADDR`). It lists every
    /// account's load balancers: keep it on a management address.
    #[arg(long)]
    metrics_listen: Option<String>,
}

/// Control's TLS certificate and key.
#[derive(Args, Debug, Clone)]
struct TlsFileArgs {
    /// Control's TLS certificate (PEM). Default with SQLite: the database path + `.tls.crt`,
    /// generated with its key on first use; with PostgreSQL it must be given (the same pair on
    /// every replica).
    #[arg(long, env = "ELB_CONTROL_TLS_CERT")]
    tls_cert: Option<std::path::PathBuf>,
    /// Control's TLS private key (PEM). Default with SQLite: the database path + `.tls.key`.
    #[arg(long, env = "ELB_CONTROL_TLS_KEY")]
    tls_key: Option<std::path::PathBuf>,
}

impl TlsFileArgs {
    /// The files, and whether they are the defaults (generated when missing).
    fn files(&self, db: &str) -> Result<Option<(control::tls::TlsFiles, bool)>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some((
                control::tls::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                },
                false,
            ))),
            (None, None) => Ok(sqlite_path(db).map(|p| (control::tls::TlsFiles::beside(&p), true))),
            _ => bail!("give both --tls-cert and --tls-key, or neither"),
        }
    }
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Accounts (each has a root user whose key is printed at creation).
    #[command(subcommand)]
    Account(AccountCommand),
    /// IAM users of an account.
    #[command(subcommand)]
    User(UserCommand),
    /// Access keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// IAM policies of users.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Per-account quotas.
    #[command(subcommand)]
    Quota(QuotaCommand),
    /// Availability zones.
    #[command(subcommand)]
    Zone(ZoneCommand),
    /// VPC subnets (for load balancers created with Subnets).
    #[command(subcommand)]
    Subnet(SubnetCommand),
    /// The built-in instance inventory.
    #[command(subcommand)]
    Instance(InstanceCommand),
    /// Servo identities (load balancer nodes).
    #[command(subcommand)]
    Servo(ServoCommand),
    /// Security groups of the built-in inventory (with a cloud, its groups are used).
    #[command(subcommand, name = "security-group")]
    SecurityGroup(SecurityGroupCommand),
    /// Every account's load balancers: list, show (servos, health), delete.
    #[command(subcommand)]
    Lb(LbCommand),
    /// Readiness: whether each zone has live servos with room (addresses per port), as JSON.
    Status {
        /// Heartbeat timeout (seconds) used to judge liveness; match the servers' setting.
        #[arg(long, default_value_t = 10)]
        servo_timeout: u64,
    },
}

#[derive(Args, Debug)]
struct RuleArgs {
    /// Group id (sg-...).
    #[arg(long)]
    id: String,
    /// tcp, udp, icmp, a protocol number, or -1 / all (every protocol and port).
    #[arg(long, default_value = "tcp", allow_hyphen_values = true)]
    protocol: String,
    /// The port (tcp/udp), or use --from-port and --to-port.
    #[arg(long, conflicts_with_all = ["from_port", "to_port"])]
    port: Option<i32>,
    #[arg(long, requires = "to_port")]
    from_port: Option<i32>,
    #[arg(long, requires = "from_port")]
    to_port: Option<i32>,
    /// Source block (repeatable), e.g. 198.18.1.0/24.
    #[arg(long = "cidr", required = true)]
    cidrs: Vec<String>,
}

impl RuleArgs {
    fn spec(&self) -> admin::security_groups::RuleSpec {
        admin::security_groups::RuleSpec {
            protocol: self.protocol.clone(),
            from_port: self.port.or(self.from_port),
            to_port: self.port.or(self.to_port),
            cidrs: self.cidrs.clone(),
        }
    }
}

#[derive(Subcommand, Debug)]
enum SecurityGroupCommand {
    /// Create a group (no rules: it admits no one until rules are authorized).
    Create {
        /// Group id; generated (sg-...) if absent.
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// The VPC of the load balancers that may use it (created with Subnets of that VPC);
        /// without: load balancers created with AvailabilityZones.
        #[arg(long)]
        vpc: Option<String>,
        /// Only this account (id or name) may use it; any account if absent.
        #[arg(long)]
        account: Option<String>,
    },
    /// Add ingress rules (one per --cidr).
    Authorize(RuleArgs),
    /// Remove ingress rules (each must exist).
    Revoke(RuleArgs),
    /// Groups with their rules.
    List,
    /// Remove a group no load balancer uses.
    Delete {
        #[arg(long)]
        id: String,
    },
}

#[derive(Args, Debug)]
struct LbSelector {
    /// Load balancer name (with --account).
    #[arg(long, requires = "account", conflicts_with = "dns_name")]
    name: Option<String>,
    /// Account id or name.
    #[arg(long)]
    account: Option<String>,
    /// Region, when the name exists in several.
    #[arg(long)]
    region: Option<String>,
    /// The load balancer's DNS name.
    #[arg(long)]
    dns_name: Option<String>,
}

impl LbSelector {
    fn selector(&self) -> admin::load_balancers::Selector {
        admin::load_balancers::Selector {
            name: self.name.clone(),
            account: self.account.clone(),
            region: self.region.clone(),
            dns_name: self.dns_name.clone(),
        }
    }
}

#[derive(Subcommand, Debug)]
enum LbCommand {
    /// Every account's load balancers with their servos and instances in service.
    List {
        /// Only this account (id or name).
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        region: Option<String>,
        /// Heartbeat timeout (seconds) used to judge liveness; match the servers' setting.
        #[arg(long, default_value_t = 10)]
        servo_timeout: u64,
    },
    /// One load balancer: listeners, placement, servos, each instance's health.
    Show {
        #[command(flatten)]
        lb: LbSelector,
        #[arg(long, default_value_t = 10)]
        servo_timeout: u64,
    },
    /// Delete a load balancer of any account.
    Delete {
        #[command(flatten)]
        lb: LbSelector,
    },
}

#[derive(Subcommand, Debug)]
enum ServoCommand {
    /// Create a servo identity in a zone and print its credentials file: its secret (shown
    /// only once) and the SHA-256 of control's TLS certificate, which the servo pins.
    Create {
        #[arg(long)]
        id: String,
        #[arg(long)]
        zone: String,
        #[command(flatten)]
        tls: TlsFileArgs,
    },
    /// Servos with addresses, last heartbeat, liveness and assigned load balancers.
    List {
        /// Heartbeat timeout (seconds) used to judge liveness; match the servers' setting.
        #[arg(long, default_value_t = 10)]
        servo_timeout: u64,
    },
    /// Remove a servo; its load balancers move to other servos.
    Remove {
        #[arg(long)]
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum AccountCommand {
    /// Create an account and print its root access key.
    Create {
        #[arg(long)]
        name: String,
        /// Administrator account: may list every account's load balancers (`verbose`).
        #[arg(long)]
        admin: bool,
    },
    List,
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Create an IAM user (no permissions until a policy is put) and print its access key.
    Create {
        /// Account id or name.
        #[arg(long)]
        account: String,
        #[arg(long)]
        name: String,
    },
    List {
        #[arg(long)]
        account: String,
    },
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// Create another access key for a user (`root` for the account's root user).
    Create {
        #[arg(long)]
        account: String,
        #[arg(long)]
        user: String,
    },
    List {
        #[arg(long)]
        account: String,
    },
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Create or replace a named policy of a user (IAM JSON policy document).
    Put {
        #[arg(long)]
        account: String,
        #[arg(long)]
        user: String,
        #[arg(long)]
        name: String,
        /// The policy document as JSON text.
        #[arg(long, conflicts_with = "file", required_unless_present = "file")]
        document: Option<String>,
        /// Read the policy document from this file.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
    },
    List {
        #[arg(long)]
        account: String,
        #[arg(long)]
        user: Option<String>,
    },
    Delete {
        #[arg(long)]
        account: String,
        #[arg(long)]
        user: String,
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum QuotaCommand {
    /// Set a quota: classic-load-balancers, classic-listeners, classic-registered-instances,
    /// classic-tags-per-load-balancer.
    Set {
        #[arg(long)]
        account: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        value: i64,
    },
    List {
        #[arg(long)]
        account: String,
    },
}

#[derive(Subcommand, Debug)]
enum ZoneCommand {
    Add {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "us-east-1")]
        region: String,
    },
    List,
}

#[derive(Subcommand, Debug)]
enum SubnetCommand {
    Add {
        #[arg(long)]
        id: String,
        #[arg(long)]
        zone: String,
        #[arg(long)]
        vpc: String,
    },
    List,
}

#[derive(Subcommand, Debug)]
enum InstanceCommand {
    Add {
        #[arg(long)]
        id: String,
        #[arg(long)]
        address: String,
        #[arg(long)]
        zone: String,
        /// Only this account (id or name) may register the instance; any account if absent.
        #[arg(long)]
        account: Option<String>,
    },
    List,
    Remove {
        #[arg(long)]
        id: String,
    },
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    // Colours only on a terminal: log files must stay greppable (`request_id=<id>`).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(&cli.db, *args).await,
        Command::Admin(cmd) => {
            init_logging_quiet();
            let store = Store::open(&cli.db)
                .await
                .with_context(|| format!("cannot open the database {}", cli.db))?;
            let result = run_admin(&store, &cli.db, cmd).await;
            store.close().await;
            let value = result?;
            println!("{}", serde_json::to_string_pretty(&value)?);
            Ok(())
        }
    }
}

fn init_logging_quiet() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

async fn run_admin(store: &Store, db: &str, cmd: AdminCommand) -> Result<serde_json::Value> {
    let value = match cmd {
        AdminCommand::Account(AccountCommand::Create {
            name,
            admin: is_admin,
        }) => admin::account_create(store, &name, is_admin).await?,
        AdminCommand::Account(AccountCommand::List) => admin::account_list(store).await?,
        AdminCommand::User(UserCommand::Create { account, name }) => {
            admin::user_create(store, &account, &name).await?
        }
        AdminCommand::User(UserCommand::List { account }) => {
            admin::user_list(store, &account).await?
        }
        AdminCommand::Key(KeyCommand::Create { account, user }) => {
            admin::key_create(store, &account, &user).await?
        }
        AdminCommand::Key(KeyCommand::List { account }) => admin::key_list(store, &account).await?,
        AdminCommand::Policy(PolicyCommand::Put {
            account,
            user,
            name,
            document,
            file,
        }) => {
            let document = match (document, file) {
                (Some(d), _) => d,
                (None, Some(path)) => std::fs::read_to_string(&path).with_context(|| {
                    format!("cannot read the policy document {}", path.display())
                })?,
                (None, None) => bail!("give the policy document with --document or --file"),
            };
            admin::policy_put(store, &account, &user, &name, &document).await?
        }
        AdminCommand::Policy(PolicyCommand::List { account, user }) => {
            admin::policy_list(store, &account, user.as_deref()).await?
        }
        AdminCommand::Policy(PolicyCommand::Delete {
            account,
            user,
            name,
        }) => admin::policy_delete(store, &account, &user, &name).await?,
        AdminCommand::Quota(QuotaCommand::Set {
            account,
            name,
            value,
        }) => admin::quota_set(store, &account, &name, value).await?,
        AdminCommand::Quota(QuotaCommand::List { account }) => {
            admin::quota_list(store, &account).await?
        }
        AdminCommand::Zone(ZoneCommand::Add { name, region }) => {
            admin::zone_add(store, &name, &region).await?
        }
        AdminCommand::Zone(ZoneCommand::List) => admin::zone_list(store).await?,
        AdminCommand::Subnet(SubnetCommand::Add { id, zone, vpc }) => {
            admin::subnet_add(store, &id, &zone, &vpc).await?
        }
        AdminCommand::Subnet(SubnetCommand::List) => admin::subnet_list(store).await?,
        AdminCommand::Instance(InstanceCommand::Add {
            id,
            address,
            zone,
            account,
        }) => admin::instance_add(store, &id, &address, &zone, account.as_deref()).await?,
        AdminCommand::Instance(InstanceCommand::List) => admin::instance_list(store).await?,
        AdminCommand::Instance(InstanceCommand::Remove { id }) => {
            admin::instance_remove(store, &id).await?
        }
        AdminCommand::Servo(ServoCommand::Create { id, zone, tls }) => {
            let pin = match tls.files(db)? {
                Some((files, create)) => Some(
                    control::tls::pin(&files, create)
                        .context("reading control's TLS certificate for the servo to pin")?,
                ),
                None => {
                    eprintln!(
                        "note: no --tls-cert given: the credentials pin no control certificate, \
                         so this servo can reach control only over plain HTTP (without \
                         certificate keys: it will refuse HTTPS and SSL load balancers)"
                    );
                    None
                }
            };
            admin::servo_create(store, &id, &zone, pin.as_deref()).await?
        }
        AdminCommand::Servo(ServoCommand::List { servo_timeout }) => {
            admin::servo_list(store, servo_timeout).await?
        }
        AdminCommand::Servo(ServoCommand::Remove { id }) => admin::servo_remove(store, &id).await?,
        AdminCommand::Status { servo_timeout } => admin::status(store, servo_timeout).await?,
        AdminCommand::SecurityGroup(cmd) => {
            use admin::security_groups as sg;
            match cmd {
                SecurityGroupCommand::Create {
                    id,
                    name,
                    description,
                    vpc,
                    account,
                } => {
                    sg::create(
                        store,
                        id.as_deref(),
                        &name,
                        &description,
                        vpc.as_deref(),
                        account.as_deref(),
                    )
                    .await?
                }
                SecurityGroupCommand::Authorize(r) => {
                    sg::authorize(store, &r.id, &r.spec()).await?
                }
                SecurityGroupCommand::Revoke(r) => sg::revoke(store, &r.id, &r.spec()).await?,
                SecurityGroupCommand::List => sg::list(store).await?,
                SecurityGroupCommand::Delete { id } => sg::delete(store, &id).await?,
            }
        }
        AdminCommand::Lb(cmd) => {
            use admin::load_balancers as lbs;
            let ms = |secs: u64| i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
            match cmd {
                LbCommand::List {
                    account,
                    region,
                    servo_timeout,
                } => {
                    lbs::list(
                        store,
                        account.as_deref(),
                        region.as_deref(),
                        ms(servo_timeout),
                    )
                    .await?
                }
                LbCommand::Show { lb, servo_timeout } => {
                    lbs::show(store, &lb.selector(), ms(servo_timeout)).await?
                }
                LbCommand::Delete { lb } => lbs::delete(store, &lb.selector()).await?,
            }
        }
    };
    Ok(value)
}

async fn serve(db: &str, args: ServeArgs) -> Result<()> {
    init_logging(args.log_format == "json");
    let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let cloud = CloudConfig {
        ec2_endpoint: args.ec2_endpoint.clone(),
        iam_endpoint: args.iam_endpoint.clone(),
        acm_endpoint: args.acm_endpoint.clone(),
        access_key_id: args
            .cloud_access_key_id
            .clone()
            .or_else(|| from_env("ELB_EC2_ACCESS_KEY_ID"))
            .unwrap_or_default(),
        secret_access_key: args
            .cloud_secret_access_key
            .clone()
            .or_else(|| from_env("ELB_EC2_SECRET_ACCESS_KEY"))
            .unwrap_or_default(),
        ec2_region: args.ec2_region.clone(),
        iam_region: args.iam_region.clone(),
        timeout: Duration::from_secs(10),
        cache_ttl: Duration::from_secs(args.cloud_cache_ttl),
        refresh: Duration::from_millis(args.cloud_refresh_ms),
    };
    let config = ServiceConfig {
        regions: args.regions.clone(),
        dns_domain: args.dns_domain.clone(),
        max_body_bytes: args.max_body_bytes,
        max_clock_skew: Duration::from_secs(args.max_clock_skew_secs),
        cloud,
        servo: ServoSettings {
            heartbeat: Duration::from_secs(args.servo_heartbeat),
            timeout: Duration::from_secs(args.servo_timeout),
            servos_per_zone: args.servos_per_zone,
        },
        key_file: args.key_file.clone().or_else(|| default_key_file(db)),
        s3: args
            .s3_endpoint
            .as_ref()
            .map(|endpoint| elb_s3::S3Settings {
                endpoint: endpoint.clone(),
                region: args
                    .s3_region
                    .clone()
                    .or_else(|| args.regions.first().cloned())
                    .unwrap_or_default(),
                access_key_id: args.s3_access_key_id.clone().unwrap_or_default(),
                secret_access_key: args.s3_secret_access_key.clone().unwrap_or_default(),
            }),
    };
    let tls = match &args.tls_listen {
        None => None,
        Some(addr) => {
            let (files, create) = args.tls.files(db)?.context(
                "--tls-listen with PostgreSQL needs --tls-cert and --tls-key (the same pair on \
                 every replica)",
            )?;
            let identity =
                control::tls::load(&files, create).context("loading control's TLS certificate")?;
            Some((addr.clone(), identity))
        }
    };
    let service = Service::start(ServeOptions {
        db: db.to_string(),
        listen: args.listen.clone(),
        tls,
        config: config.clone(),
        dns_listen: args.dns_listen.clone(),
        dns_ttl: args.dns_ttl,
        metrics_listen: args.metrics_listen.clone(),
    })
    .await
    .with_context(|| format!("cannot start (database {})", redact(db)))?;
    let addr = service.addr();
    tracing::info!(%addr, db = %redact(db), regions = ?config.regions, "elb-control serving the ELB Query API");
    // Tests and scripts read these lines to learn the ports.
    println!("listening on {addr}");
    if let Some((tls, sha256)) = service.tls_addr() {
        tracing::info!(%tls, certificate_sha256 = %sha256, "serving over TLS too");
        println!("tls listening on {tls}");
    }
    if let Some(dns) = service.dns_addr() {
        println!("dns listening on {dns}");
    }
    if let Some(metrics) = service.metrics_addr() {
        println!("metrics listening on {metrics}");
    }
    std::io::stdout().flush()?;
    service.run(server::shutdown_signal()).await?;
    Ok(())
}

/// The file of an SQLite database; `None` for PostgreSQL.
fn sqlite_path(db: &str) -> Option<String> {
    match control::store::parse_database_url(db).ok()? {
        (control::store::Backend::Sqlite, _) => Some(
            db.strip_prefix("sqlite://")
                .or_else(|| db.strip_prefix("sqlite:"))
                .unwrap_or(db)
                .to_string(),
        ),
        (control::store::Backend::Postgres, _) => None,
    }
}

/// Next to an SQLite database: `<path>.key`. PostgreSQL replicas must share one given file.
fn default_key_file(db: &str) -> Option<std::path::PathBuf> {
    sqlite_path(db).map(|path| std::path::PathBuf::from(format!("{path}.key")))
}

/// The database URL without a password, for logs.
fn redact(db: &str) -> String {
    match (db.find("://"), db.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &db[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &db[..scheme + 3], &db[at..]),
                None => db.to_string(),
            }
        }
        _ => db.to_string(),
    }
}

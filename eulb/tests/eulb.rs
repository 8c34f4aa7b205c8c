//! The `eulb` binary against a real `elb-control serve` (SQLite in a temporary directory,
//! port 0): a create/describe/register/health/tag/attribute/delete round trip run both as
//! `eulb COMMAND` and through `eulb-COMMAND` symlinks, API and usage errors, the flags taken
//! from euca2ools 3.4, credentials from the shared credentials file and from euca2ools'
//! configuration files (with their precedence), euca2ools' placeholder signing region, and a
//! wrong secret.
//!
//! `elb-control` is another package's binary: it is found next to this test's directory
//! (`target/release/elb-control`, built by `cargo xtask build` or `cargo build --release
//! --bins`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const EULB: &str = env!("CARGO_BIN_EXE_eulb");

/// `target/<profile>/elb-control`, beside this test's `deps/` directory.
fn elb_control() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("test directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join("elb-control");
    assert!(
        path.exists(),
        "{} not found: build it first (`cargo build --release --bins`; `cargo xtask test` does)",
        path.display()
    );
    path
}
const I1: &str = "i-1234567890abcdef0";
const I2: &str = "i-1234567890abcdef1";

/// Environment variables eulb reads, removed so the developer's own settings cannot leak in.
const CLEARED: &[&str] = &[
    "AWS_ELB_URL",
    "EUCA_ELB_URL",
    "AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING",
    "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "EUCA_DEFAULT_REGION",
    "EUCA_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY",
    "AWS_SECRET_KEY",
    "EC2_ACCESS_KEY",
    "EC2_SECRET_KEY",
    "AWS_CREDENTIAL_FILE",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_SECURITY_TOKEN",
    "AWS_AUTH_REGION",
    "EUCA_CONFIG_PATH",
    "EULB_SYSCONFDIR",
];

struct Server {
    child: Child,
    dir: tempfile::TempDir,
    db: String,
    url: String,
    account_id: String,
    key_id: String,
    secret: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn admin(db: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(elb_control())
        .arg("--db")
        .arg(db)
        .arg("admin")
        .args(args)
        .output()
        .expect("run elb-control admin");
    assert!(
        out.status.success(),
        "elb-control admin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("control.db").display());
    admin(
        &db,
        &[
            "zone",
            "add",
            "--name",
            "us-east-1a",
            "--region",
            "us-east-1",
        ],
    );
    for (id, address) in [(I1, "198.18.0.10"), (I2, "198.18.0.11")] {
        admin(
            &db,
            &[
                "instance",
                "add",
                "--id",
                id,
                "--address",
                address,
                "--zone",
                "us-east-1a",
            ],
        );
    }
    let account = admin(&db, &["account", "create", "--name", "demo"]);
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let mut child = Command::new(elb_control())
        .args(["--db", &db, "serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start elb-control serve");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening on ") {
                let _ = tx.send(addr.to_string());
            }
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(addr) => addr,
        Err(_) => {
            let _ = child.kill();
            panic!(
                "elb-control serve did not start: {}",
                std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default()
            );
        }
    };
    live_servo(&db, &addr);
    let field = |name: &str| account[name].as_str().unwrap().to_string();
    Server {
        child,
        url: format!("http://{addr}"),
        account_id: field("AccountId"),
        key_id: field("AccessKeyId"),
        secret: field("SecretAccessKey"),
        dir,
        db,
    }
}

/// Control creates only load balancers a live servo can serve: a servo of the test's zone
/// that registers and heart-beats over the servo protocol, as `elb-servo run` would.
fn live_servo(db: &str, addr: &str) {
    use std::io::{Read, Write};
    let created = admin(
        db,
        &["servo", "create", "--id", "s1", "--zone", "us-east-1a"],
    );
    let secret = created["Secret"].as_str().unwrap().to_string();
    let addr = addr.to_string();
    let post = move |path: &str, body: &str| -> String {
        // The server is gone once the test ends: the heart-beating thread then just stops.
        let Ok(mut s) = std::net::TcpStream::connect(&addr) else {
            return String::new();
        };
        let _ = write!(
            s,
            "POST /servo/v1/{path} HTTP/1.1\r\nHost: control\r\nAuthorization: Bearer s1:{secret}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
    };
    let registered = post(
        "register",
        r#"{"ServoId": "s1", "Zone": "us-east-1a", "PublicAddresses": ["198.18.1.1", "198.18.1.2"]}"#,
    );
    assert!(registered.starts_with("HTTP/1.1 200"), "{registered}");
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_secs(1));
            if post("heartbeat", r#"{"ServoId": "s1"}"#).is_empty() {
                break;
            }
        }
    });
}

/// How the round trip runs a command: as `eulb COMMAND` or through an `eulb-COMMAND` link.
#[derive(Clone, Copy)]
enum Style<'a> {
    Subcommand,
    Symlinks(&'a Path),
}

impl Server {
    /// `eulb` with only the settings given here: endpoint and keys from the environment,
    /// HOME in the temporary directory (so no ~/.aws or ~/.euca of the developer is read)
    /// and the system configuration directory there too (not /etc/euca2ools).
    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        for var in CLEARED {
            cmd.env_remove(var);
        }
        cmd.env("HOME", self.dir.path())
            .env("EULB_SYSCONFDIR", self.dir.path().join("etc-euca2ools"))
            .env("AWS_ELB_URL", &self.url)
            .env("AWS_ACCESS_KEY_ID", &self.key_id)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret);
        cmd
    }

    fn run(&self, style: Style<'_>, command: &str, args: &[&str]) -> Output {
        let mut cmd = match style {
            Style::Subcommand => {
                let mut cmd = self.command(Path::new(EULB));
                cmd.arg(command);
                cmd
            }
            Style::Symlinks(dir) => self.command(&dir.join(format!("eulb-{command}"))),
        };
        cmd.args(args).output().expect("run eulb")
    }

    /// Runs a command that must succeed and returns its stdout.
    fn ok(&self, style: Style<'_>, command: &str, args: &[&str]) -> String {
        let out = self.run(style, command, args);
        assert!(
            out.status.success(),
            "eulb {command} {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

fn lines(text: &str) -> Vec<Vec<&str>> {
    text.lines().map(|l| l.split('\t').collect()).collect()
}

fn sorted(text: &str) -> Vec<&str> {
    let mut v: Vec<&str> = text.lines().collect();
    v.sort_unstable();
    v
}

fn round_trip(server: &Server, style: Style<'_>) {
    let dns = format!("web-{}.lb.elb.local", server.account_id);

    let out = server.ok(
        style,
        "create-lb",
        &[
            "web",
            "-z",
            "us-east-1a",
            "-l",
            "lb-port=80, protocol=http, instance-port=8080",
            "--listener",
            "lb-port=443,protocol=TCP,instance-port=8443,instance-protocol=tcp",
        ],
    );
    assert_eq!(out, format!("DNS_NAME\t{dns}\n"));

    let out = server.ok(style, "describe-lbs", &[]);
    let rows = lines(&out);
    assert_eq!(rows.len(), 1, "{out}");
    assert_eq!(rows[0][..3], ["LOAD_BALANCER", "web", dns.as_str()]);
    assert_eq!(rows[0].len(), 5, "{out}");
    assert!(rows[0][3].len() == 24 && rows[0][3].ends_with('Z'), "{out}");
    assert_eq!(rows[0][4], "internet-facing");

    let listeners = "{protocol=HTTP,lb-port=80,instance-protocol=HTTP,instance-port=8080},\
                     {protocol=TCP,lb-port=443,instance-protocol=TCP,instance-port=8443}";
    let out = server.ok(style, "describe-lbs", &["web", "--show-long"]);
    let row = &lines(&out)[0];
    assert_eq!(row.len(), 19, "{out}");
    assert_eq!(
        row[..4],
        ["LOAD_BALANCER", "web", dns.as_str(), dns.as_str()]
    );
    assert_eq!(
        row[5],
        "{interval=30,target=TCP:8080,timeout=5,healthy-threshold=10,unhealthy-threshold=2}"
    );
    assert_eq!(row[6], "us-east-1a");
    assert_eq!(row[10], listeners);

    let out = server.ok(
        style,
        "configure-healthcheck",
        &[
            "web",
            "-t",
            "HTTP:8080/health",
            "-i",
            "15",
            "--timeout",
            "5",
            "--healthy-threshold",
            "3",
            "--unhealthy-threshold",
            "4",
        ],
    );
    assert_eq!(out, "HEALTH_CHECK\tHTTP:8080/health\t15\t5\t3\t4\n");

    let out = server.ok(
        style,
        "register-instances-with-lb",
        &["web", "--instances", &format!("{I1},{I2}")],
    );
    let expected = [format!("INSTANCE\t{I1}"), format!("INSTANCE\t{I2}")];
    assert_eq!(
        sorted(&out),
        expected.iter().map(String::as_str).collect::<Vec<_>>()
    );

    let out = server.ok(style, "describe-lbs", &["--show-long"]);
    let row = &lines(&out)[0];
    assert_eq!(
        row[5],
        "{interval=15,target=HTTP:8080/health,timeout=5,healthy-threshold=3,unhealthy-threshold=4}"
    );
    let mut instances: Vec<&str> = row[9].split(',').collect();
    instances.sort_unstable();
    assert_eq!(instances, [I1, I2]);
    assert_eq!(row[10], listeners);

    let out = server.ok(style, "describe-instance-health", &["web"]);
    let expected = [
        format!("INSTANCE\t{I1}\tOutOfService"),
        format!("INSTANCE\t{I2}\tOutOfService"),
    ];
    assert_eq!(
        sorted(&out),
        expected.iter().map(String::as_str).collect::<Vec<_>>()
    );
    let out = server.ok(
        style,
        "describe-instance-health",
        &["web", "--instances", I2, "--show-long"],
    );
    let pending = "OutOfService\tInstance registration is still in progress.\tELB";
    assert_eq!(out, format!("INSTANCE\t{I2}\t{pending}\n"));

    assert_eq!(
        server.ok(
            style,
            "create-tags",
            &["web", "--tag", "env=prod", "-t", "team=blue"]
        ),
        ""
    );
    let out = server.ok(style, "describe-tags", &["web"]);
    assert_eq!(
        sorted(&out),
        [
            "TAG\tload-balancer\tweb\tenv\tprod",
            "TAG\tload-balancer\tweb\tteam\tblue"
        ]
    );
    server.ok(style, "delete-tags", &["web", "-t", "team"]);
    let out = server.ok(style, "describe-tags", &["web", "--show-headers"]);
    assert_eq!(
        out,
        "TAG\tTYPE\tNAME\tKEY\tVALUE\nTAG\tload-balancer\tweb\tenv\tprod\n"
    );

    let out = server.ok(style, "describe-lb-attributes", &["web"]);
    assert!(
        out.contains("CrossZoneLoadBalancing.Enabled\tfalse\n"),
        "{out}"
    );
    assert_eq!(
        server.ok(
            style,
            "modify-lb-attributes",
            &[
                "web",
                "--cross-zone-load-balancing",
                "true",
                "--idle-timeout",
                "120",
                "elb.http.desyncmitigationmode=defensive",
                "-a",
                "ConnectionDraining.Enabled=true",
            ],
        ),
        ""
    );
    let out = server.ok(style, "describe-lb-attributes", &["web"]);
    assert_eq!(
        out,
        "AccessLog.Enabled\tfalse\n\
         AdditionalAttributes.elb.http.desyncmitigationmode\tdefensive\n\
         ConnectionDraining.Enabled\ttrue\n\
         ConnectionDraining.Timeout\t300\n\
         ConnectionSettings.IdleTimeout\t120\n\
         CrossZoneLoadBalancing.Enabled\ttrue\n"
    );

    let out = server.ok(
        style,
        "deregister-instances-from-lb",
        &["web", "--instances", I1],
    );
    assert_eq!(out, format!("INSTANCE\t{I2}\n"));

    assert_eq!(server.ok(style, "delete-lb", &["web"]), "");
    assert_eq!(server.ok(style, "describe-lbs", &[]), "");
}

#[test]
fn round_trip_as_eulb_subcommands() {
    let server = start();
    round_trip(&server, Style::Subcommand);
}

#[test]
fn round_trip_through_eulb_command_symlinks() {
    let server = start();
    let out = Command::new(EULB)
        .arg("--print-command-names")
        .output()
        .unwrap();
    assert!(out.status.success());
    let names = String::from_utf8(out.stdout).unwrap();
    assert_eq!(names.lines().count(), 28, "{names}");
    let links = tempfile::tempdir().unwrap();
    for name in names.lines() {
        assert!(name.starts_with("eulb-"), "{name}");
        std::os::unix::fs::symlink(EULB, links.path().join(name)).unwrap();
    }
    round_trip(&server, Style::Symlinks(links.path()));

    // The error prefix names the command the same way in both forms.
    let out = server.run(Style::Symlinks(links.path()), "describe-lbs", &["nothere"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("eulb-describe-lbs: error (LoadBalancerNotFound): "),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn api_errors_and_usage_errors() {
    let server = start();
    let out = server.run(Style::Subcommand, "describe-lbs", &["missing"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("eulb-describe-lbs: error (LoadBalancerNotFound): ")
            && stderr.contains("missing"),
        "{stderr}"
    );

    let out = server.run(Style::Subcommand, "describe-instance-health", &["missing"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("eulb-describe-instance-health: error (LoadBalancerNotFound): "),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Usage errors (status 2, nothing sent): no zones or subnets, a listener element that is
    // not KEY=VALUE.
    for args in [
        &["web", "-l", "protocol=HTTP, lb-port=80, instance-port=80"][..],
        &["web", "-z", "us-east-1a", "-l", "protocol, lb-port=80"],
    ] {
        let out = server.run(Style::Subcommand, "create-lb", args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("Usage: eulb create-lb") || stderr.contains("--help"),
            "{stderr}"
        );
    }
    // Values are the service's to judge: eulb sends them as written and prints the service's
    // error (status 1), so the client can never disagree with the server.
    for (args, code, says) in [
        (
            &[
                "web",
                "-z",
                "us-east-1a",
                "-l",
                "protocol=HTTP, instance-port=80",
            ][..],
            "MissingParameter",
            "LoadBalancerPort",
        ),
        (
            &[
                "web",
                "-z",
                "us-east-1a",
                "-l",
                "protocol=HTTP, lb-port=80, instance-port=80, instance-protocol=TCP",
            ],
            "ValidationError",
            "cannot forward to back-end protocol TCP",
        ),
        (
            &[
                "web",
                "-z",
                "us-east-1a",
                "-l",
                "protocol=UDP, lb-port=80, instance-port=80",
            ],
            "UnsupportedProtocol",
            "'UDP'",
        ),
        (
            &[
                "web",
                "-z",
                "us-east-1a",
                "-l",
                "protocol=TCP, lb-port=70000, instance-port=80",
            ],
            "ValidationError",
            "70000",
        ),
    ] {
        let out = server.run(Style::Subcommand, "create-lb", args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with(&format!("eulb-create-lb: error ({code}): "))
                && stderr.contains(says),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(server.ok(Style::Subcommand, "describe-lbs", &[]), "");

    let out = server
        .command(Path::new(EULB))
        .arg("no-such-command")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = server
        .command(Path::new(EULB))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("describe-instance-health"));
    let out = server.run(Style::Subcommand, "create-lb", &["--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--availability-zones"));
}

#[test]
fn credentials_from_the_shared_credentials_file() {
    let server = start();
    let second = admin(
        &server.db,
        &["key", "create", "--account", "demo", "--user", "root"],
    );
    let aws = server.dir.path().join(".aws");
    std::fs::create_dir_all(&aws).unwrap();
    let credentials = format!(
        "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n\n\
         [ops]\naws_access_key_id = {}\naws_secret_access_key = {}\n\n\
         [broken]\naws_access_key_id = {}\naws_secret_access_key = not-the-secret\n",
        server.key_id,
        server.secret,
        second["AccessKeyId"].as_str().unwrap(),
        second["SecretAccessKey"].as_str().unwrap(),
        server.key_id,
    );
    std::fs::write(aws.join("credentials"), &credentials).unwrap();
    let eulb = |envs: &[(&str, &str)], args: &[&str]| -> Output {
        let mut cmd = server.command(Path::new(EULB));
        cmd.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .envs(envs.iter().copied())
            .args(args);
        cmd.output().unwrap()
    };
    let check_ok = |out: Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };

    // ~/.aws/credentials [default].
    let out = check_ok(eulb(
        &[],
        &[
            "create-lb",
            "filecreds",
            "-z",
            "us-east-1a",
            "-l",
            "protocol=TCP, lb-port=25, instance-port=25",
        ],
    ));
    assert!(out.starts_with("DNS_NAME\tfilecreds-"), "{out}");
    // AWS_PROFILE, --profile and USER@REGION pick other sections.
    let out = check_ok(eulb(&[("AWS_PROFILE", "ops")], &["describe-lbs"]));
    assert!(out.starts_with("LOAD_BALANCER\tfilecreds\t"), "{out}");
    check_ok(eulb(&[], &["describe-lbs", "--profile", "ops"]));
    check_ok(eulb(&[], &["describe-lbs", "--region", "ops@us-east-1"]));
    let out = eulb(&[("AWS_PROFILE", "broken")], &["describe-lbs"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("(SignatureDoesNotMatch)"));
    let out = eulb(&[], &["describe-lbs", "--profile", "absent"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'absent' was not found"));

    // AWS_SHARED_CREDENTIALS_FILE names another file.
    let elsewhere = server.dir.path().join("elsewhere.ini");
    std::fs::write(&elsewhere, &credentials).unwrap();
    std::fs::remove_file(aws.join("credentials")).unwrap();
    let out = eulb(&[], &["describe-lbs"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no credentials"));
    let out = check_ok(eulb(
        &[("AWS_SHARED_CREDENTIALS_FILE", elsewhere.to_str().unwrap())],
        &["describe-lbs"],
    ));
    assert!(out.starts_with("LOAD_BALANCER\tfilecreds\t"), "{out}");
}

#[test]
fn wrong_secret_is_signature_does_not_match() {
    let server = start();
    let out = server.run(
        Style::Subcommand,
        "describe-lbs",
        &["-I", &server.key_id, "-S", "wrong-secret"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("eulb-describe-lbs: error (SignatureDoesNotMatch): "),
        "{stderr}"
    );
    // The same with both halves on the command line, and with the endpoint given by -U.
    let out = server
        .command(Path::new(EULB))
        .env_remove("AWS_ELB_URL")
        .args([
            "describe-lbs",
            "-U",
            &server.url,
            "-I",
            &server.key_id,
            "-S",
            "nope",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("(SignatureDoesNotMatch)"));
    // Correct flags work without any environment.
    let out = server
        .command(Path::new(EULB))
        .env_remove("AWS_ELB_URL")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .args([
            "describe-lbs",
            "-U",
            &server.url,
            "-I",
            &server.key_id,
            "-S",
            &server.secret,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn flags_of_euca2ools_3_4() {
    let server = start();
    let style = Style::Subcommand;
    // create-lb -t/--tag.
    server.ok(
        style,
        "create-lb",
        &[
            "web",
            "-z",
            "us-east-1a",
            "-l",
            "protocol=HTTP, lb-port=80, instance-port=8080",
            "-t",
            "env=prod",
            "--tag",
            "team",
        ],
    );
    assert_eq!(
        sorted(&server.ok(style, "describe-tags", &["web"])),
        [
            "TAG\tload-balancer\tweb\tenv\tprod",
            "TAG\tload-balancer\tweb\tteam\t"
        ]
    );

    // create-lb-policy -n/-t with -A, and --policy-name/--policy-type with
    // --attributes-from-file (comments and blank lines skipped) plus -a.
    server.ok(
        style,
        "create-lb-policy",
        &[
            "web",
            "-n",
            "proxy",
            "-t",
            "ProxyProtocolPolicyType",
            "-A",
            "ProxyProtocol=true",
        ],
    );
    let file = server.dir.path().join("tls-attributes");
    std::fs::write(
        &file,
        "# negotiation\n\nProtocol-TLSv1.2=true\nECDHE-RSA-AES128-GCM-SHA256=true\n",
    )
    .unwrap();
    server.ok(
        style,
        "create-lb-policy",
        &[
            "web",
            "--policy-name",
            "tls",
            "--policy-type",
            "SSLNegotiationPolicyType",
            "--attributes-from-file",
            file.to_str().unwrap(),
            "-a",
            "name=Server-Defined-Cipher-Order, value=true",
        ],
    );
    let out = server.ok(
        style,
        "describe-lb-policies",
        &["web", "-p", "proxy,tls", "--show-long"],
    );
    let rows = lines(&out);
    let proxy = rows.iter().find(|r| r[1] == "proxy").expect(&out);
    assert_eq!(
        proxy[..],
        [
            "POLICY",
            "proxy",
            "ProxyProtocolPolicyType",
            "{name=ProxyProtocol,value=true}"
        ]
    );
    let tls = rows.iter().find(|r| r[1] == "tls").expect(&out);
    assert_eq!(tls[2], "SSLNegotiationPolicyType");
    for attribute in [
        "{name=Protocol-TLSv1.2,value=true}",
        "{name=ECDHE-RSA-AES128-GCM-SHA256,value=true}",
        "{name=Server-Defined-Cipher-Order,value=true}",
    ] {
        assert!(tls[3].contains(attribute), "{out}");
    }
    // A malformed line of the file is refused before anything is sent.
    std::fs::write(&file, "Server-Defined-Cipher-Order\n").unwrap();
    let out = server.run(
        style,
        "create-lb-policy",
        &[
            "web",
            "-n",
            "bad",
            "-t",
            "SSLNegotiationPolicyType",
            "--attributes-from-file",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("line 1: attribute"),
        "{}",
        stderr_of(&out)
    );
    let out = server.ok(style, "describe-lb-policies", &["web"]);
    assert!(!out.contains("\tbad\t"), "{out}");

    // describe-lbs --show-long prints LB cookie policies as euca2ools 3.4 does.
    server.ok(
        style,
        "create-lb-cookie-stickiness-policy",
        &["web", "-p", "sticky", "-e", "60"],
    );
    server.ok(
        style,
        "create-app-cookie-stickiness-policy",
        &["web", "-p", "app", "-c", "SESSION"],
    );
    let out = server.ok(style, "describe-lbs", &["web", "--show-long"]);
    let row = &lines(&out)[0];
    assert_eq!(row[12], "{policy-name=app,cookie-name=SESSION}", "{out}");
    assert_eq!(
        row[13], "{policy-name=sticky,expiration-period=60}",
        "{out}"
    );
    assert!(
        row[14].contains("proxy") && row[14].contains("tls"),
        "{out}"
    );
}

/// Writes `text` to `path`, creating its directory.
fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn euca2ools_configuration_files_and_their_precedence() {
    let server = start();
    let home = server.dir.path();
    let sysconf = home.join("etc-euca2ools");
    // Regions named like euca2ools sites; `name` gives the region to sign for.
    let regions = format!(
        "[global]\ndefault-region = good\n\n\
         [region good]\nelasticloadbalancing-url = {url}\nname = us-east-1\nuser = alice\n\n\
         [region bad]\nelasticloadbalancing-url = {url}\nname = us-east-1\nuser = mallory\n",
        url = server.url
    );
    let alice = |secret: &str| {
        format!(
            "[user alice]\nkey-id = {}\nsecret-key = {secret}\n\n\
             [user mallory]\nkey-id = {}\nsecret-key = not-the-secret\n",
            server.key_id, server.key_id
        )
    };
    let eulb = |envs: &[(&str, &str)], args: &[&str]| -> Output {
        let mut cmd = server.command(Path::new(EULB));
        cmd.env_remove("AWS_ELB_URL")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .envs(envs.iter().copied())
            .arg("describe-lbs")
            .args(args);
        cmd.output().unwrap()
    };
    let succeeds = |out: Output| assert!(out.status.success(), "{}", stderr_of(&out));
    let refused = |out: Output| {
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr_of(&out).contains("(SignatureDoesNotMatch)"),
            "{}",
            stderr_of(&out)
        );
    };

    // Nothing configured: a clear error.
    let out = eulb(&[], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("no load balancing service URL"),
        "{}",
        stderr_of(&out)
    );

    // Only ~/.euca: endpoint, region and keys from the files.
    write(&home.join(".euca/site.ini"), &regions);
    write(&home.join(".euca/users.ini"), &alice(&server.secret));
    succeeds(eulb(&[], &[]));

    // The system directory (EULB_SYSCONFDIR stands in for /etc/euca2ools): ~/.euca, read
    // later, wins; conf.d is read after euca2ools.ini.
    std::fs::remove_file(home.join(".euca/users.ini")).unwrap();
    write(&sysconf.join("euca2ools.ini"), &alice(&server.secret));
    succeeds(eulb(&[], &[]));
    write(&sysconf.join("conf.d/zz-wrong.ini"), &alice("wrong-secret"));
    refused(eulb(&[], &[]));
    write(&home.join(".euca/users.ini"), &alice(&server.secret));
    succeeds(eulb(&[], &[]));
    write(&home.join(".euca/zz-override.ini"), &alice("wrong-secret"));
    refused(eulb(&[], &[]));
    std::fs::remove_file(home.join(".euca/zz-override.ini")).unwrap();

    // Region selection: --region, then EUCA_DEFAULT_REGION, then AWS_DEFAULT_REGION, then
    // [global] default-region; the selected region's user signs.
    refused(eulb(&[], &["--region", "bad"]));
    refused(eulb(&[("AWS_DEFAULT_REGION", "bad")], &[]));
    refused(eulb(
        &[
            ("EUCA_DEFAULT_REGION", "bad"),
            ("AWS_DEFAULT_REGION", "good"),
        ],
        &[],
    ));
    succeeds(eulb(
        &[
            ("EUCA_DEFAULT_REGION", "good"),
            ("AWS_DEFAULT_REGION", "bad"),
        ],
        &[],
    ));
    succeeds(eulb(
        &[("EUCA_DEFAULT_REGION", "bad")],
        &["--region", "good"],
    ));
    // USER@REGION picks the user; the environment's keys beat the files' user.
    succeeds(eulb(&[], &["--region", "alice@bad"]));
    refused(eulb(&[], &["--region", "mallory@good"]));
    succeeds(eulb(
        &[
            ("AWS_ACCESS_KEY_ID", &server.key_id),
            ("AWS_SECRET_ACCESS_KEY", &server.secret),
        ],
        &["--region", "mallory@good"],
    ));

    // EUCA_CONFIG_PATH replaces the list of files.
    let only = home.join("only.ini");
    write(&only, &format!("{regions}\n{}", alice("wrong-secret")));
    refused(eulb(&[("EUCA_CONFIG_PATH", only.to_str().unwrap())], &[]));
    let path = format!("{}:{}/.euca/*.ini", only.display(), home.display());
    succeeds(eulb(&[("EUCA_CONFIG_PATH", &path)], &[]));
}

#[test]
fn euca2ools_placeholder_signing_region() {
    // euca2ools 3.x with -U and keys but no configuration file signs for `undefined-<pid>`;
    // control accepts it (as Eucalyptus does) and still verifies the signature. eulb signs
    // for the region a `REGION::URL` names, which reproduces that request exactly.
    let server = start();
    let url = format!("undefined-31337::{}", server.url);
    let eulb = |secret: &str, command: &str, args: &[&str]| -> Output {
        let mut cmd = server.command(Path::new(EULB));
        cmd.env_remove("AWS_ELB_URL")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .args([command, "-U", &url, "-I", &server.key_id, "-S", secret])
            .args(args);
        cmd.output().unwrap()
    };
    let out = eulb(
        &server.secret,
        "create-lb",
        &[
            "web",
            "-z",
            "us-east-1a",
            "-l",
            "protocol=TCP, lb-port=25, instance-port=25",
        ],
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    // The placeholder addresses the first region: the same load balancer as us-east-1's.
    let out = eulb(&server.secret, "describe-lbs", &[]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("LOAD_BALANCER\tweb\t"));
    assert!(
        server
            .ok(Style::Subcommand, "describe-lbs", &[])
            .starts_with("LOAD_BALANCER\tweb\t")
    );
    // The signature is still checked.
    let out = eulb("wrong-secret", "describe-lbs", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("(SignatureDoesNotMatch)"),
        "{}",
        stderr_of(&out)
    );
    // Other regions are still refused.
    let mut cmd = server.command(Path::new(EULB));
    let out = cmd
        .args(["describe-lbs", "-U", &format!("ap-south-1::{}", server.url)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("valid region"),
        "{}",
        stderr_of(&out)
    );
    let out = eulb(&server.secret, "delete-lb", &["web"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(server.ok(Style::Subcommand, "describe-lbs", &[]), "");
}

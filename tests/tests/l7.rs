//! What L4 forwarding cannot do, end to end through the whole system with real clients: TLS
//! termination with a certificate uploaded through IAM, X-Forwarded-* headers, certificate
//! replacement, SSL to a plain TCP backend, SSL negotiation policies, LB and application cookie
//! stickiness, 503 without InService instances, and the XDP listener flags. One topology for
//! everything (control, one servo, three logged nginx backends), to keep the suite short.

use std::{
    collections::BTreeMap,
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use elb_common::{LISTENER_F_LOCAL, LISTENER_F_PROXY_V1};
use tests::{
    agent,
    netns::wait_for,
    system::{ServoSpec, System, SystemSpec, WebSpec, servo_vip},
};

const NAME: &str = "web.example";
const CLIENT: &str = "198.18.0.2";

/// A test CA and two server certificates for [`NAME`] it signed, as PEM files.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> anyhow::Result<Self> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "L7 test CA");
        let ca_cert = ca.self_signed(&ca_key)?;
        fs::write(dir.join("ca.pem"), ca_cert.pem())?;
        for which in ["one", "two"] {
            let key = KeyPair::generate()?;
            let mut p = CertificateParams::new(vec![NAME.to_string()])?;
            p.distinguished_name
                .push(DnType::CommonName, format!("{NAME} {which}"));
            let cert = p.signed_by(&key, &ca_cert, &ca_key)?;
            fs::write(dir.join(format!("{which}.pem")), cert.pem())?;
            fs::write(dir.join(format!("{which}.key")), key.serialize_pem())?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }
}

/// `curl ARGS` from the client namespace: (exit status, stdout).
fn curl(sys: &System, args: &[&str]) -> anyhow::Result<(i32, String)> {
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            sys.client.name(),
            "curl",
            "-sS",
            "--max-time",
            "5",
        ])
        .args(args)
        .output()
        .context("running curl")?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

/// `curl` over HTTPS to [`NAME`] at `vip:port`, verified with the test CA; the body.
fn https_get(
    sys: &System,
    pki: &Pki,
    vip: Ipv4Addr,
    port: u16,
    path: &str,
) -> anyhow::Result<String> {
    let resolve = format!("{NAME}:{port}:{vip}");
    let url = format!("https://{NAME}:{port}{path}");
    let ca = pki.path("ca.pem");
    let (code, body) = curl(sys, &["--cacert", &ca, "--resolve", &resolve, &url])?;
    ensure!(code == 0, "curl {url}: exit {code}");
    Ok(body)
}

/// The subject of the certificate served at `vip:port` (the handshake verified by the CA).
fn served_subject(sys: &System, pki: &Pki, vip: Ipv4Addr, port: u16) -> anyhow::Result<String> {
    let script = format!(
        "openssl s_client -connect {vip}:{port} -servername {NAME} -CAfile {ca} -verify_return_error \
         </dev/null 2>/dev/null | openssl x509 -noout -subject",
        ca = pki.path("ca.pem")
    );
    Ok(sys.client.exec(&["sh", "-c", &script])?.trim().to_string())
}

fn tally(names: impl IntoIterator<Item = String>) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for n in names {
        *out.entry(n).or_default() += 1;
    }
    out
}

fn upload(sys: &System, pki: &Pki, name: &str, which: &str) -> anyhow::Result<String> {
    let out = sys.aws_service(
        "iam",
        &[
            "upload-server-certificate",
            "--server-certificate-name",
            name,
            "--certificate-body",
            &format!("file://{}", pki.path(&format!("{which}.pem"))),
            "--private-key",
            &format!("file://{}", pki.path(&format!("{which}.key"))),
            "--certificate-chain",
            &format!("file://{}", pki.path("ca.pem")),
        ],
    )?;
    Ok(out["ServerCertificateMetadata"]["Arn"]
        .as_str()
        .context("Arn")?
        .to_string())
}

/// `n` requests on new connections with the cookie jar `jar` (curl `-b`/`-c`); backend names.
fn jar_gets(sys: &System, jar: &Path, url: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let jar = jar.display().to_string();
    (0..n)
        .map(|_| {
            let (code, body) = curl(sys, &["-b", &jar, "-c", &jar, url])?;
            ensure!(code == 0, "curl {url}: exit {code}");
            Ok(body)
        })
        .collect()
}

fn listener_flags(sys: &System) -> anyhow::Result<BTreeMap<u16, u32>> {
    let maps = elb_userspace::dataplane::Maps::open(&sys.servos[0].pin_root)?;
    Ok(maps
        .listeners()?
        .into_iter()
        .map(|(k, l)| (k.port, l.flags))
        .collect())
}

#[test]
fn tls_termination_forwarded_headers_stickiness_and_policies() -> anyhow::Result<()> {
    let web = |n: &str| WebSpec {
        name: n.into(),
        zone: "zone-a".into(),
    };
    let sys = System::start(SystemSpec {
        servos: vec![ServoSpec::new("servo-a", "zone-a")],
        web: vec![web("web1"), web("web2"), web("web3")],
        logged_web: true,
        ..SystemSpec::poc()
    })?;
    let pki = Pki::new(sys.dir.path())?;
    let vip = servo_vip(0);

    // A certificate for the test CA, uploaded the way a user would.
    let arn_one = upload(&sys, &pki, "web-one", "one")?;
    ensure!(
        arn_one == format!("arn:aws:iam::{}:server-certificate/web-one", sys.account.id),
        "{arn_one}"
    );
    let listeners = format!(
        "Protocol=HTTPS,LoadBalancerPort=443,InstanceProtocol=HTTP,InstancePort=80,SSLCertificateId={arn_one} \
         Protocol=SSL,LoadBalancerPort=465,InstanceProtocol=TCP,InstancePort=25,SSLCertificateId={arn_one} \
         Protocol=HTTP,LoadBalancerPort=80,InstanceProtocol=HTTP,InstancePort=80 \
         Protocol=HTTP,LoadBalancerPort=8080,InstanceProtocol=HTTP,InstancePort=80 \
         Protocol=TCP,LoadBalancerPort=2525,InstanceProtocol=TCP,InstancePort=25"
    );
    let mut args = vec![
        "create-load-balancer",
        "--load-balancer-name",
        "secure",
        "--availability-zones",
        "zone-a",
        "--listeners",
    ];
    args.extend(listeners.split(' '));
    sys.aws(&args)?;
    sys.aws(&[
        "configure-health-check",
        "--load-balancer-name",
        "secure",
        "--health-check",
        "Target=HTTP:80/name,Interval=5,Timeout=2,UnhealthyThreshold=2,HealthyThreshold=2",
    ])?;
    sys.aws(&[
        "register-instances-with-load-balancer",
        "--load-balancer-name",
        "secure",
        "--instances",
        "i-web1",
        "i-web2",
        "i-web3",
    ])?;
    let all_in = [
        ("i-web1", "InService"),
        ("i-web2", "InService"),
        ("i-web3", "InService"),
    ];
    sys.wait_health("secure", &all_in, Duration::from_secs(60))?;

    // HTTPS:443 -> HTTP:80: chain and name verified by curl, three backends share the requests
    // (one per connection, per-request round robin), each request carries the client.
    let names = (0..9)
        .map(|_| https_get(&sys, &pki, vip, 443, "/name"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    System::check_even(&tally(names), &["web1", "web2", "web3"], 3)?;
    for _ in 0..3 {
        let h = https_get(&sys, &pki, vip, 443, "/headers")?;
        let fields: Vec<&str> = h.split(' ').collect();
        ensure!(
            fields.len() == 4 && fields[1..] == [CLIENT, "https", "443"],
            "forwarded headers: {h:?}"
        );
    }
    for (i, w) in sys.web.iter().enumerate() {
        let log = w.access_log();
        ensure!(
            log.lines()
                .any(|l| l.contains(&format!(" {CLIENT} https 443 /headers"))),
            "web{} logged no X-Forwarded-For {CLIENT}: {log}",
            i + 1
        );
    }

    // SSL:465 -> TCP:25 with the same certificate: a TLS client reaches a plain backend.
    let body = https_get(&sys, &pki, vip, 465, "/name")?;
    ensure!(["web1", "web2", "web3"].contains(&body.as_str()), "{body}");

    // The XDP program hands the engine's listeners to the local stack; the plain HTTP one
    // stays in XDP; PROXY protocol on instance port 25 marks the TCP listener.
    sys.aws(&[
        "create-load-balancer-policy",
        "--load-balancer-name",
        "secure",
        "--policy-name",
        "proxy",
        "--policy-type-name",
        "ProxyProtocolPolicyType",
        "--policy-attributes",
        "AttributeName=ProxyProtocol,AttributeValue=true",
    ])?;
    sys.aws(&[
        "set-load-balancer-policies-for-backend-server",
        "--load-balancer-name",
        "secure",
        "--instance-port",
        "25",
        "--policy-names",
        "proxy",
    ])?;
    let mut flags = BTreeMap::new();
    wait_for(Duration::from_secs(5), "listener flags", || {
        flags = listener_flags(&sys).ok()?;
        (flags.get(&2525) == Some(&LISTENER_F_PROXY_V1)).then_some(())
    })
    .with_context(|| format!("flags {flags:?}"))?;
    ensure!(
        flags
            == BTreeMap::from([
                (443, LISTENER_F_LOCAL),
                (465, LISTENER_F_LOCAL),
                (80, 0),
                (8080, 0),
                (2525, LISTENER_F_PROXY_V1)
            ]),
        "{flags:?}"
    );
    let metrics = agent::get(sys.servos[0].ns.as_str(), "/metrics")?;
    ensure!(
        metrics.lines().any(
            |l| l.starts_with("elb_xdp_packets_total{decision=\"pass_local\"}")
                && !l.ends_with(" 0")
        ),
        "no pass_local packets counted"
    );

    // A replaced certificate reaches new connections within a second.
    ensure!(served_subject(&sys, &pki, vip, 443)?.contains("one"));
    let arn_two = upload(&sys, &pki, "web-two", "two")?;
    sys.aws(&[
        "set-load-balancer-listener-ssl-certificate",
        "--load-balancer-name",
        "secure",
        "--load-balancer-port",
        "443",
        "--ssl-certificate-id",
        &arn_two,
    ])?;
    let set_at = Instant::now();
    let mut subject = String::new();
    while set_at.elapsed() < Duration::from_secs(3) {
        subject = served_subject(&sys, &pki, vip, 443)?;
        if subject.contains("two") {
            break;
        }
    }
    let took = set_at.elapsed();
    ensure!(subject.contains("two"), "still serving {subject:?}");
    ensure!(
        took < Duration::from_secs(1),
        "the new certificate took {took:?}"
    );
    println!("replaced certificate served after {took:?}");
    ensure!(
        served_subject(&sys, &pki, vip, 465)?.contains("one"),
        "465 keeps its certificate"
    );

    // SSL negotiation: a policy without the cipher the client offers fails the handshake;
    // restoring the default works again. A policy naming a cipher the servos cannot offer is
    // refused by the API.
    let tls12_aes128 = |sys: &System| {
        let resolve = format!("{NAME}:443:{vip}");
        let ca = pki.path("ca.pem");
        curl(
            sys,
            &[
                "--cacert",
                &ca,
                "--resolve",
                &resolve,
                "--tls-max",
                "1.2",
                "--ciphers",
                "ECDHE-ECDSA-AES128-GCM-SHA256",
                &format!("https://{NAME}/name"),
            ],
        )
    };
    ensure!(
        tls12_aes128(&sys)?.0 == 0,
        "the default policy offers AES128-GCM"
    );
    sys.aws(&[
        "create-load-balancer-policy",
        "--load-balancer-name",
        "secure",
        "--policy-name",
        "aes256-only",
        "--policy-type-name",
        "SSLNegotiationPolicyType",
        "--policy-attributes",
        "AttributeName=Protocol-TLSv1.2,AttributeValue=true",
        "AttributeName=ECDHE-ECDSA-AES256-GCM-SHA384,AttributeValue=true",
    ])?;
    let set_policies = |names: &str| {
        sys.aws(&[
            "set-load-balancer-policies-of-listener",
            "--load-balancer-name",
            "secure",
            "--load-balancer-port",
            "443",
            "--policy-names",
            names,
        ])
    };
    set_policies("aes256-only")?;
    wait_for(Duration::from_secs(5), "the handshake to fail", || {
        (tls12_aes128(&sys).ok()?.0 != 0).then_some(())
    })?;
    set_policies("[]")?;
    wait_for(
        Duration::from_secs(5),
        "the handshake to work again",
        || (tls12_aes128(&sys).ok()?.0 == 0).then_some(()),
    )?;
    let refused = sys
        .aws(&[
            "create-load-balancer-policy",
            "--load-balancer-name",
            "secure",
            "--policy-name",
            "cbc",
            "--policy-type-name",
            "SSLNegotiationPolicyType",
            "--policy-attributes",
            "AttributeName=Protocol-TLSv1.2,AttributeValue=true",
            "AttributeName=AES128-SHA,AttributeValue=true",
        ])
        .err()
        .context("a policy with AES128-SHA was accepted")?
        .to_string();
    ensure!(
        refused.contains("InvalidConfigurationRequest") && refused.contains("AES128-SHA"),
        "{refused}"
    );

    // Application cookie stickiness on HTTP:8080: bound while the application's cookie is
    // there.
    sys.aws(&[
        "create-app-cookie-stickiness-policy",
        "--load-balancer-name",
        "secure",
        "--policy-name",
        "app",
        "--cookie-name",
        "APPSESSION",
    ])?;
    sys.aws(&[
        "set-load-balancer-policies-of-listener",
        "--load-balancer-name",
        "secure",
        "--load-balancer-port",
        "8080",
        "--policy-names",
        "app",
    ])?;
    wait_for(Duration::from_secs(5), "port 8080 in the engine", || {
        (listener_flags(&sys).ok()?.get(&8080) == Some(&LISTENER_F_LOCAL)).then_some(())
    })?;
    let jar = sys.dir.path().join("app.jar");
    let app = format!("http://{vip}:8080/app");
    let first = jar_gets(&sys, &jar, &app, 1)?.remove(0);
    let cookies = fs::read_to_string(&jar)?;
    ensure!(
        cookies.contains("APPSESSION") && cookies.contains("AWSELB"),
        "{cookies}"
    );
    let then = jar_gets(&sys, &jar, &format!("http://{vip}:8080/name"), 10)?;
    ensure!(then.iter().all(|n| *n == first), "{first} then {then:?}");

    // LB cookie stickiness on HTTP:80: 20 requests on new connections on one backend, another
    // client elsewhere, and when its backend goes OutOfService the client moves.
    sys.aws(&[
        "create-lb-cookie-stickiness-policy",
        "--load-balancer-name",
        "secure",
        "--policy-name",
        "sticky",
        "--cookie-expiration-period",
        "300",
    ])?;
    sys.aws(&[
        "set-load-balancer-policies-of-listener",
        "--load-balancer-name",
        "secure",
        "--load-balancer-port",
        "80",
        "--policy-names",
        "sticky",
    ])?;
    wait_for(Duration::from_secs(5), "port 80 in the engine", || {
        (listener_flags(&sys).ok()?.get(&80) == Some(&LISTENER_F_LOCAL)).then_some(())
    })?;
    let url = format!("http://{vip}/name");
    let (a, b) = (sys.dir.path().join("a.jar"), sys.dir.path().join("b.jar"));
    let a_names = jar_gets(&sys, &a, &url, 20)?;
    let home = a_names[0].clone();
    ensure!(a_names.iter().all(|n| *n == home), "{a_names:?}");
    let b_names = jar_gets(&sys, &b, &url, 5)?;
    ensure!(
        b_names[0] != home && b_names.iter().all(|n| *n == b_names[0]),
        "client b {b_names:?}, client a on {home}"
    );

    // A load balancer whose HTTP listener has stickiness and no InService instance: 503.
    sys.aws(&[
        "create-load-balancer",
        "--load-balancer-name",
        "empty",
        "--availability-zones",
        "zone-a",
        "--listeners",
        "Protocol=HTTP,LoadBalancerPort=81,InstanceProtocol=HTTP,InstancePort=80",
    ])?;
    sys.aws(&[
        "create-lb-cookie-stickiness-policy",
        "--load-balancer-name",
        "empty",
        "--policy-name",
        "sticky",
    ])?;
    sys.aws(&[
        "set-load-balancer-policies-of-listener",
        "--load-balancer-name",
        "empty",
        "--load-balancer-port",
        "81",
        "--policy-names",
        "sticky",
    ])?;
    let mut status = String::new();
    wait_for(Duration::from_secs(5), "a 503 from the engine", || {
        status = curl(
            &sys,
            &[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("http://{vip}:81/"),
            ],
        )
        .ok()?
        .1;
        (status == "503").then_some(())
    })
    .with_context(|| format!("last status {status:?}"))?;

    // Client a's backend goes OutOfService: it moves (and is bound again).
    let j = ["web1", "web2", "web3"]
        .iter()
        .position(|n| *n == home)
        .context("home backend")?;
    let mut sys = sys;
    sys.web[j].stop();
    let id = format!("i-{home}");
    sys.wait_health(
        "secure",
        &[(id.as_str(), "OutOfService")],
        Duration::from_secs(30),
    )?;
    let moved = jar_gets(&sys, &a, &url, 5)?;
    ensure!(
        moved[0] != home && moved.iter().all(|n| *n == moved[0]),
        "after {home} went OutOfService: {moved:?}"
    );
    if moved.iter().any(|n| n.is_empty()) {
        bail!("empty answers {moved:?}");
    }
    Ok(())
}

//! The control service: latency of creating and describing load balancers (boto3), and the
//! propagation time from an API call returning to the dataplane serving the change (the whole
//! system in namespaces).

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::{Mode, progress, report::Results};
use crate::{
    netns::{Proc, bin},
    system::{System, SystemSpec, venv_bin},
};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn python(script: &str, args: &[String], netns: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(venv_bin("python"));
            c
        }
        None => Command::new(venv_bin("python")),
    };
    let out = cmd
        .arg(repo().join("bench").join(script))
        .args(args)
        .output()
        .context("running the benchmark client")?;
    if !out.status.success() {
        bail!("{script} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn latency(mode: Mode, results: &mut Results) -> anyhow::Result<()> {
    let count = mode.pick(1000, 1000, 20);
    progress(format!(
        "control: create and describe {count} load balancers (boto3, SQLite)"
    ));
    let dir = crate::netns::tempdir("control-bench")?;
    let db = format!("sqlite:{}", dir.path().join("elb.db").display());
    let admin = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new(bin("elb-control"))
            .args(["admin", "--db", &db])
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!("admin {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let mut cmd = Command::new(bin("elb-control"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--db", &db])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut server = Proc::spawn(cmd, "elb-control serve")?;
    let stdout = server.take_stdout().context("server stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("unexpected first line {line:?}"))?
        .to_string();
    admin(&["zone", "add", "--name", "bench-a", "--region", "us-east-1"])?;
    // Control creates load balancers only where a live servo can serve them: four servo
    // identities (250 addresses each, one per load balancer on port 80) that the client
    // registers and keeps live over the servo protocol.
    let servos: Vec<serde_json::Value> = (0..4)
        .map(|i| {
            let id = format!("bench-servo-{i}");
            Ok(serde_json::from_str(&admin(&[
                "servo", "create", "--id", &id, "--zone", "bench-a",
            ])?)?)
        })
        .collect::<anyhow::Result<_>>()?;
    let servos_file = dir.path().join("servos.json");
    std::fs::write(&servos_file, serde_json::to_vec(&servos)?)?;
    let account: serde_json::Value =
        serde_json::from_str(&admin(&["account", "create", "--name", "bench"])?)?;
    let id = account["AccountId"].as_str().context("AccountId")?;
    admin(&[
        "quota",
        "set",
        "--account",
        id,
        "--name",
        "classic-load-balancers",
        "--value",
        "100000",
    ])?;
    let r = python(
        "control_bench.py",
        &[
            "--endpoint".into(),
            format!("http://{addr}"),
            "--key".into(),
            account["AccessKeyId"].as_str().unwrap_or_default().into(),
            "--secret".into(),
            account["SecretAccessKey"]
                .as_str()
                .unwrap_or_default()
                .into(),
            "--zone".into(),
            "bench-a".into(),
            "--count".into(),
            count.to_string(),
            "--servos".into(),
            servos_file.display().to_string(),
        ],
        None,
    )?;
    for key in [
        "create_p50_ms",
        "create_p99_ms",
        "describe_p50_ms",
        "describe_p99_ms",
        "describe_all_ms",
    ] {
        if let Some(v) = r[key].as_f64() {
            results.set(format!("control.{key}"), v);
        }
    }
    results.set("control.load_balancers", count as f64);
    progress(format!(
        "  create p50 {:.1} ms p99 {:.1} ms, describe p50 {:.1} ms p99 {:.1} ms, describe all {count} {:.0} ms",
        r["create_p50_ms"].as_f64().unwrap_or(f64::NAN),
        r["create_p99_ms"].as_f64().unwrap_or(f64::NAN),
        r["describe_p50_ms"].as_f64().unwrap_or(f64::NAN),
        r["describe_p99_ms"].as_f64().unwrap_or(f64::NAN),
        r["describe_all_ms"].as_f64().unwrap_or(f64::NAN),
    ));
    drop(server);
    Ok(())
}

fn propagation(mode: Mode, results: &mut Results) -> anyhow::Result<()> {
    let rounds = mode.pick(20, 10, 2);
    progress(format!(
        "control: propagation from API call to dataplane ({rounds} listener additions)"
    ));
    let sys = System::start(SystemSpec::poc())?;
    sys.aws(&[
        "create-load-balancer",
        "--load-balancer-name",
        "web",
        "--listeners",
        "Protocol=HTTP,LoadBalancerPort=80,InstanceProtocol=HTTP,InstancePort=80",
        "--availability-zones",
        "zone-a",
    ])?;
    sys.aws(&[
        "configure-health-check",
        "--load-balancer-name",
        "web",
        "--health-check",
        "Target=TCP:80,Interval=5,Timeout=2,UnhealthyThreshold=2,HealthyThreshold=2",
    ])?;
    sys.aws(&[
        "register-instances-with-load-balancer",
        "--load-balancer-name",
        "web",
        "--instances",
        "i-web1",
        "i-web2",
    ])?;
    sys.wait_health(
        "web",
        &[("i-web1", "InService"), ("i-web2", "InService")],
        Duration::from_secs(60),
    )?;
    let r = python(
        "propagation.py",
        &[
            "--endpoint".into(),
            sys.controls[0].url.clone(),
            "--key".into(),
            sys.account.access_key.clone(),
            "--secret".into(),
            sys.account.secret.clone(),
            "--lb".into(),
            "web".into(),
            "--vip".into(),
            sys.servos[0].vip.to_string(),
            "--rounds".into(),
            rounds.to_string(),
        ],
        Some(sys.client.name()),
    )?;
    let ms = r["propagation_ms"].as_f64().context("propagation_ms")?;
    results.set("control.propagation_ms", ms);
    progress(format!(
        "  propagation median {ms:.1} ms (samples {})",
        r["samples_ms"]
    ));
    Ok(())
}

/// Runs the section.
pub fn run(mode: Mode, results: &mut Results) -> anyhow::Result<()> {
    latency(mode, results)?;
    propagation(mode, results)?;
    results.note(
        "control",
        "boto3 against elb-control with SQLite on this machine; create/describe latencies per call; propagation = CreateLoadBalancerListeners returning -> first HTTP answer on the new port through a servo",
    );
    Ok(())
}

//! moto's server (from PyPI, in the project's `.venv`): a real S3/EC2/IAM/ACM-compatible
//! endpoint on loopback for tests, and the AWS CLI from the same environment to look at it.
//! A [`GatedProxy`] in front of it models an outage of the endpoint without losing its state.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::netns::{Proc, wait_for};

/// The project's Python environment (made by `cargo xtask setup`).
pub fn venv_bin(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    root.join(".venv/bin").join(name)
}

/// Credentials moto accepts (any, as long as they are consistent).
pub const ACCESS_KEY: &str = "AKIDMOTOTESTKEY00001";
pub const SECRET_KEY: &str = "moto-test-secret-key";

/// A running `moto_server` on 127.0.0.1 (of the host, or of a network namespace).
#[derive(Debug)]
pub struct Moto {
    pub url: String,
    pub port: u16,
    /// The namespace it runs in (`None`: the host's).
    netns: Option<String>,
    _proc: Proc,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Moto {
    pub fn start() -> anyhow::Result<Self> {
        Self::start_in(None, free_port()?)
    }

    /// Starts it on `port` of network namespace `netns`'s loopback (`None`: the host's).
    pub fn start_in(netns: Option<&str>, port: u16) -> anyhow::Result<Self> {
        let exe = venv_bin("moto_server");
        if !exe.exists() {
            bail!(
                "{} not found: run `cargo xtask setup` (it installs moto[server] into .venv)",
                exe.display()
            );
        }
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_ACM_VALIDATION_WAIT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let proc = Proc::spawn(cmd, "moto_server")?;
        wait_for(Duration::from_secs(30), "moto_server to listen", || {
            let connect = move || TcpStream::connect(("127.0.0.1", port)).is_ok();
            match netns {
                Some(ns) => crate::netns::Netns::run_named(ns, connect),
                None => connect(),
            }
            .then_some(())
        })?;
        Ok(Self {
            url: format!("http://127.0.0.1:{port}"),
            port,
            netns: netns.map(str::to_string),
            _proc: proc,
        })
    }

    /// Runs `aws <args> --endpoint-url <url>` from the venv (in moto's namespace); returns
    /// stdout.
    pub fn aws(&self, args: &[&str]) -> anyhow::Result<String> {
        aws_in(self.netns.as_deref(), &self.url, args)
    }

    pub fn create_bucket(&self, bucket: &str) -> anyhow::Result<()> {
        self.aws(&["s3api", "create-bucket", "--bucket", bucket])?;
        Ok(())
    }

    /// Keys of a bucket (all pages).
    pub fn keys(&self, bucket: &str) -> anyhow::Result<Vec<String>> {
        let out = self.aws(&[
            "s3api",
            "list-objects-v2",
            "--bucket",
            bucket,
            "--output",
            "json",
        ])?;
        if out.trim().is_empty() {
            return Ok(Vec::new());
        }
        let doc: serde_json::Value = serde_json::from_str(&out).context("list-objects-v2 JSON")?;
        Ok(doc["Contents"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i["Key"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The body of an object.
    pub fn object(&self, bucket: &str, key: &str) -> anyhow::Result<String> {
        let dir = tempfile::tempdir()?;
        let out = dir.path().join("object");
        let out_str = out.to_string_lossy().into_owned();
        self.aws(&[
            "s3api",
            "get-object",
            "--bucket",
            bucket,
            "--key",
            key,
            &out_str,
        ])?;
        Ok(std::fs::read_to_string(out)?)
    }
}

/// `aws <args> --endpoint-url <endpoint>` with the test credentials.
pub fn aws(endpoint: &str, args: &[&str]) -> anyhow::Result<String> {
    aws_in(None, endpoint, args)
}

/// [`aws`] in network namespace `netns`.
pub fn aws_in(netns: Option<&str>, endpoint: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(venv_bin("aws"));
            c
        }
        None => Command::new(venv_bin("aws")),
    };
    let out = cmd
        .args(args)
        .args(["--endpoint-url", endpoint])
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .stdin(Stdio::null())
        .output()
        .context("running aws from .venv")?;
    if !out.status.success() {
        bail!(
            "aws {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A TCP forwarder on loopback that can be closed (connections refused and cut) and opened
/// again: an endpoint outage without restarting the endpoint.
#[derive(Debug)]
pub struct GatedProxy {
    pub addr: SocketAddr,
    open: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl GatedProxy {
    pub fn start(target: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let open = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let (open2, stop2) = (open.clone(), stop.clone());
        thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        if !open2.load(Ordering::Relaxed) {
                            let _ = client.shutdown(Shutdown::Both);
                            continue;
                        }
                        let _ = client.set_nonblocking(false);
                        if let Ok(server) = TcpStream::connect(target) {
                            pipe(client, server, open2.clone());
                        }
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Self { addr, open, stop })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Refuses (cuts) connections from now on.
    pub fn close(&self) {
        self.open.store(false, Ordering::Relaxed);
    }

    pub fn reopen(&self) {
        self.open.store(true, Ordering::Relaxed);
    }
}

impl Drop for GatedProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn pipe(a: TcpStream, b: TcpStream, open: Arc<AtomicBool>) {
    for (mut from, mut to) in [
        (a.try_clone(), b.try_clone()),
        (b.try_clone(), a.try_clone()),
    ]
    .into_iter()
    .filter_map(|(x, y)| Some((x.ok()?, y.ok()?)))
    {
        let open = open.clone();
        thread::spawn(move || {
            let _ = from.set_read_timeout(Some(Duration::from_millis(200)));
            let mut buf = [0u8; 16 * 1024];
            loop {
                if !open.load(Ordering::Relaxed) {
                    break;
                }
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
        });
    }
}

//! A real headless browser for the console's tests: Debian's Chromium driven through
//! chromedriver (WebDriver) with `fantoccini`.
//!
//! chromedriver runs inside a test namespace (it starts Chromium there, so the page reaches
//! addresses of the test network); the test talks to it from a thread that has entered the
//! same namespace. Chromium gets the flags that keep it from reaching for the network on its own
//! (updates, sync, QUIC, first-run pages) and a fresh profile directory.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use fantoccini::{Client, ClientBuilder, Locator};

use crate::netns::{Netns, Proc, tempdir, wait_for};

/// Where Debian installs the browser and its driver (`cargo xtask setup` installs both).
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Port chromedriver listens on inside its namespace (a fresh namespace has it free).
const DRIVER_PORT: u16 = 9515;

/// chromedriver in a namespace, killed on drop with the browsers it started.
#[derive(Debug)]
pub struct Chrome {
    driver: Option<Proc>,
    profile: tempfile::TempDir,
    /// chromedriver's log (with the browser's console messages).
    pub log: PathBuf,
    ns: String,
}

/// Fails with the reason when the browser is not installed (no silent skip).
pub fn require_browser() {
    for path in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: run `cargo xtask setup` (Debian packages chromium and chromium-driver)"
        );
    }
}

impl Chrome {
    /// Starts chromedriver in `ns`.
    pub fn start(ns: &Netns) -> anyhow::Result<Self> {
        require_browser();
        let profile = tempdir("chromium")?;
        let log = profile.path().join("chromedriver.log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns.name(), CHROMEDRIVER])
            .arg(format!("--port={DRIVER_PORT}"))
            .arg(format!("--log-path={}", log.display()))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let driver = Proc::spawn(cmd, "chromedriver")?;
        let mut chrome = Self {
            driver: Some(driver),
            profile,
            log,
            ns: ns.name().to_string(),
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, DRIVER_PORT));
        let ns_name = chrome.ns.clone();
        let driver = chrome.driver.as_mut().expect("spawned");
        wait_for(Duration::from_secs(20), "chromedriver to listen", || {
            if !driver.is_running() {
                return Some(Err(anyhow::anyhow!("chromedriver exited at start")));
            }
            Netns::run_named(&ns_name, || {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })
            .then_some(Ok(()))
        })??;
        Ok(chrome)
    }

    /// A new browser session. Call from a thread inside the namespace (see [`Netns::run`]).
    pub async fn session(&self, width: u32, height: u32) -> anyhow::Result<Client> {
        let user_data = self.profile.path().join("profile");
        fs::create_dir_all(&user_data)?;
        let args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
        ]
        .iter()
        .map(ToString::to_string)
        .chain([
            format!("--user-data-dir={}", user_data.display()),
            format!("--window-size={width},{height}"),
        ])
        .collect();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "binary": CHROMIUM, "args": args }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{DRIVER_PORT}"))
            .await
            .with_context(|| {
                format!(
                    "starting Chromium through chromedriver (log: {})",
                    fs::read_to_string(&self.log).unwrap_or_default()
                )
            })?;
        Ok(client)
    }

    /// The last `lines` lines of chromedriver's log (for failure messages).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Chrome {
    fn drop(&mut self) {
        // chromedriver runs in its own process group with the browsers it started.
        if let Some(mut d) = self.driver.take() {
            d.kill();
        }
    }
}

/// Polls `check` (a page query) until it returns `Some`, or fails after `timeout` saying what
/// it waited for and what it saw last.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = String::new();
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_error = format!("{e:#}"),
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last error: {last_error}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The text of the first element matching `css`, if there is one.
pub async fn text_of(client: &Client, css: &str) -> anyhow::Result<Option<String>> {
    match client.find(Locator::Css(css)).await {
        Ok(el) => Ok(Some(el.text().await?)),
        Err(e) if e.is_no_such_element() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Clears a field and types `text` into it.
pub async fn fill(client: &Client, css: &str, text: &str) -> anyhow::Result<()> {
    let el = client
        .find(Locator::Css(css))
        .await
        .with_context(|| format!("no field {css}"))?;
    el.clear().await?;
    el.send_keys(text).await?;
    Ok(())
}

/// Clicks the first element matching `css`.
pub async fn click(client: &Client, css: &str) -> anyhow::Result<()> {
    client
        .find(Locator::Css(css))
        .await
        .with_context(|| format!("nothing to click at {css}"))?
        .click()
        .await?;
    Ok(())
}

/// Writes a PNG under `dir`, creating it; returns the path.
pub fn save_png(dir: &Path, name: &str, png: &[u8]) -> anyhow::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let path = dir.join(name);
    fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

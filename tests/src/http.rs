//! Real HTTP backends (nginx, one per backend namespace) and a small blocking HTTP/1.1 client
//! whose connections are fully under the test's control (new connection per request, or one
//! keep-alive connection for many).

use std::{
    fs,
    io::{BufRead as _, BufReader, Read, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};

use crate::netns::{Netns, Proc, wait_for};

/// An nginx server inside a namespace, stopped on drop.
#[derive(Debug)]
pub struct Nginx {
    proc: Proc,
    dir: PathBuf,
    addr: SocketAddr,
    ns: String,
    name: String,
}

/// Deterministic content: byte i of a stream is a function of i, so downloads and uploads can
/// be checked without storing the expected bytes.
pub fn pattern_byte(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

/// Writes `len` pattern bytes to `path`; returns their SHA-256 (hex).
pub fn write_pattern_file(path: &Path, len: u64) -> anyhow::Result<String> {
    let mut file = std::io::BufWriter::new(fs::File::create(path)?);
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut i = 0u64;
    while i < len {
        let n = ((len - i) as usize).min(buf.len());
        for (k, b) in buf[..n].iter_mut().enumerate() {
            *b = pattern_byte(i + k as u64);
        }
        file.write_all(&buf[..n])?;
        hash.update(&buf[..n]);
        i += n as u64;
    }
    file.flush()?;
    Ok(hex(&hash.finalize()))
}

/// SHA-256 (hex) of the first `len` pattern bytes.
pub fn pattern_sha256(len: u64) -> String {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut i = 0u64;
    while i < len {
        let n = ((len - i) as usize).min(buf.len());
        for (k, b) in buf[..n].iter_mut().enumerate() {
            *b = pattern_byte(i + k as u64);
        }
        hash.update(&buf[..n]);
        i += n as u64;
    }
    hex(&hash.finalize())
}

/// SHA-256 (hex) of a file.
pub fn file_sha256(path: &Path) -> anyhow::Result<String> {
    let mut file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(hex(&hash.finalize()))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Nginx {
    /// Starts nginx in `ns`, listening on `addr`, answering `/name` with `name`, serving files
    /// from `<dir>/www/`, accepting `PUT /upload/<file>` into `<dir>/www/upload/`, and
    /// answering `/fail` with 500, and serving `/slow/` at 20 MB/s.
    pub fn start(ns: &Netns, name: &str, addr: SocketAddr, workers: u32) -> anyhow::Result<Self> {
        Self::start_with(ns, name, addr, workers, false, false)
    }

    /// [`Nginx::start`], plus what the userspace engine's tests look at: an access log
    /// ([`Nginx::access_log`]: `$remote_addr $http_x_forwarded_for $http_x_forwarded_proto
    /// $http_x_forwarded_port $request_uri` per line), `/headers` answering with the same
    /// forwarded fields, `/app` setting the application cookie `APPSESSION`, and the same
    /// site on port 25 of its address (a plain TCP backend for SSL listeners).
    pub fn start_logged(ns: &Netns, name: &str, addr: SocketAddr) -> anyhow::Result<Self> {
        Self::start_with(ns, name, addr, 1, true, false)
    }

    /// [`Nginx::start`], expecting a PROXY protocol v1 header on every connection (`listen ...
    /// proxy_protocol`) and logging each request to [`Nginx::access_log`] as
    /// `$proxy_protocol_addr $proxy_protocol_port $remote_addr "$request" $status`.
    pub fn start_proxy_protocol(
        ns: &Netns,
        name: &str,
        addr: SocketAddr,
        workers: u32,
    ) -> anyhow::Result<Self> {
        Self::start_with(ns, name, addr, workers, false, true)
    }

    fn start_with(
        ns: &Netns,
        name: &str,
        addr: SocketAddr,
        workers: u32,
        logged: bool,
        proxy_protocol: bool,
    ) -> anyhow::Result<Self> {
        let dir = crate::netns::tempdir(&format!("nginx-{name}"))?.keep();
        let extra = if proxy_protocol {
            format!("\n        access_log {}/logs/access.log pp;", dir.display())
        } else if logged {
            format!(
                r#"
        listen {ip}:25;
        access_log {dir}/logs/access.log fwd;
        location = /headers {{ default_type text/plain; return 200 "{name} $http_x_forwarded_for $http_x_forwarded_proto $http_x_forwarded_port\n"; }}
        location = /app {{ add_header Set-Cookie "APPSESSION={name}-$msec; Path=/"; default_type text/plain; return 200 "{name}\n"; }}"#,
                ip = addr.ip(),
                dir = dir.display()
            )
        } else {
            String::new()
        };
        for sub in ["www/upload", "tmp", "logs"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        let conf = format!(
            r#"user root;
worker_processes {workers};
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/logs/error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    log_format fwd '$remote_addr $http_x_forwarded_for $http_x_forwarded_proto $http_x_forwarded_port $request_uri';
    log_format pp '$proxy_protocol_addr $proxy_protocol_port $remote_addr "$request" $status';
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
    default_type application/octet-stream;
    sendfile on;
    server {{
        listen {addr}{proxy} reuseport backlog=16384;{extra}
        root {dir}/www;
        location = /name {{ default_type text/plain; return 200 "{name}\n"; }}
        location = /fail {{ return 500; }}
        location /slow/ {{ limit_rate 20m; }}
        location /upload/ {{
            dav_methods PUT;
            create_full_put_path on;
            client_max_body_size 2g;
        }}
    }}
}}
"#,
            dir = dir.display(),
            proxy = if proxy_protocol {
                " proxy_protocol"
            } else {
                ""
            },
        );
        let conf_path = dir.join("nginx.conf");
        fs::write(&conf_path, conf)?;
        let proc = Self::spawn(ns.name(), &dir, name, addr)?;
        Ok(Self {
            proc,
            dir,
            addr,
            ns: ns.name().to_string(),
            name: name.to_string(),
        })
    }

    fn spawn(ns: &str, dir: &Path, name: &str, addr: SocketAddr) -> anyhow::Result<Proc> {
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", ns, "nginx", "-c"])
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let proc = Proc::spawn(cmd, &format!("nginx {name}"))?;
        let ns_name = ns.to_string();
        wait_for(
            Duration::from_secs(10),
            &format!("nginx {name} on {addr}"),
            || {
                let probe = Netns::run_named(&ns_name, move || {
                    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                });
                probe.then_some(())
            },
        )?;
        Ok(proc)
    }

    /// Starts the server again after [`Nginx::stop`].
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.proc.kill();
        self.proc = Self::spawn(&self.ns, &self.dir, &self.name, self.addr)?;
        Ok(())
    }

    /// The access log so far (empty unless started with [`Nginx::start_logged`] or
    /// [`Nginx::start_proxy_protocol`]).
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.dir.join("logs/access.log")).unwrap_or_default()
    }

    /// Where nginx serves files from.
    pub fn www(&self) -> PathBuf {
        self.dir.join("www")
    }

    /// Where the access log is ([`Nginx::start_logged`] and [`Nginx::start_proxy_protocol`]
    /// servers only).
    pub fn access_log_path(&self) -> PathBuf {
        self.dir.join("logs/access.log")
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server, workers included (SIGKILL to its process group): connections are
    /// refused from now on.
    pub fn stop(&mut self) {
        self.proc.kill();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The server asked to close the connection.
    pub close: bool,
}

impl Response {
    /// The body as trimmed text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).trim().to_string()
    }
}

/// One HTTP/1.1 connection.
#[derive(Debug)]
pub struct Connection {
    reader: BufReader<TcpStream>,
}

impl Connection {
    /// Connects to `addr` (from the calling thread's namespace).
    pub fn open(addr: SocketAddr, timeout: Duration) -> anyhow::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            reader: BufReader::new(stream),
        })
    }

    /// Wraps an already connected stream.
    pub fn from_stream(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        Self {
            reader: BufReader::new(stream),
        }
    }

    /// Local address of the connection.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.reader.get_ref().local_addr()?)
    }

    /// Sends a GET and reads the whole response.
    pub fn get(&mut self, path: &str, keep_alive: bool) -> anyhow::Result<Response> {
        let conn = if keep_alive { "keep-alive" } else { "close" };
        write!(
            self.reader.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: lb\r\nConnection: {conn}\r\n\r\n"
        )?;
        let (status, len, close) = self.read_head()?;
        let mut body = vec![0; len as usize];
        self.reader.read_exact(&mut body).context("reading body")?;
        Ok(Response {
            status,
            body,
            close,
        })
    }

    /// Sends a GET and streams the body through SHA-256; returns (status, length, hex digest).
    pub fn get_sha256(
        &mut self,
        path: &str,
        mut progress: impl FnMut(u64),
    ) -> anyhow::Result<(u16, u64, String)> {
        write!(
            self.reader.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n"
        )?;
        let (status, len, _) = self.read_head()?;
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0u64;
        while got < len {
            let want = ((len - got) as usize).min(buf.len());
            let n = self.reader.read(&mut buf[..want]).context("reading body")?;
            if n == 0 {
                bail!("connection closed after {got} of {len} bytes");
            }
            hash.update(&buf[..n]);
            got += n as u64;
            progress(got);
        }
        Ok((status, got, hex(&hash.finalize())))
    }

    /// Sends `len` pattern bytes with PUT; returns the status.
    pub fn put_pattern(&mut self, path: &str, len: u64) -> anyhow::Result<u16> {
        write!(
            self.reader.get_mut(),
            "PUT {path} HTTP/1.1\r\nHost: lb\r\nConnection: close\r\nContent-Length: {len}\r\n\r\n"
        )?;
        let mut buf = vec![0u8; 1 << 16];
        let mut sent = 0u64;
        while sent < len {
            let n = ((len - sent) as usize).min(buf.len());
            for (k, b) in buf[..n].iter_mut().enumerate() {
                *b = pattern_byte(sent + k as u64);
            }
            self.reader
                .get_mut()
                .write_all(&buf[..n])
                .with_context(|| format!("uploading after {sent} bytes"))?;
            sent += n as u64;
        }
        let (status, len, _) = self.read_head()?;
        let mut body = vec![0; len as usize];
        self.reader.read_exact(&mut body)?;
        Ok(status)
    }

    fn read_head(&mut self) -> anyhow::Result<(u16, u64, bool)> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            bail!("connection closed before a response");
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .context("malformed status line")?
            .parse()
            .with_context(|| format!("malformed status line {line:?}"))?;
        let mut len = 0u64;
        let mut close = false;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("connection closed in headers");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => len = v.trim().parse()?,
                    "connection" => close = v.trim().eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        Ok((status, len, close))
    }
}

/// One GET on a new connection; returns the response.
pub fn get_once(addr: SocketAddr, path: &str) -> anyhow::Result<Response> {
    Connection::open(addr, Duration::from_secs(5))?.get(path, false)
}

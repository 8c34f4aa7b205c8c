//! One access log line in the classic ELB format, and the S3 key of a log file, both as AWS
//! writes them:
//!
//! ```text
//! timestamp elb client:port backend:port request_processing_time backend_processing_time
//!   response_processing_time elb_status_code backend_status_code received_bytes sent_bytes
//!   "request" "user_agent" ssl_cipher ssl_protocol
//! ```
//!
//! Fields that do not apply are `-` (status codes, user agent, TLS), `-1` (times when the load
//! balancer could not reach a backend) or `"- - - "` (the request of a TCP/SSL connection).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One connection (TCP/SSL listeners) or one request (HTTP/HTTPS listeners): the engine's
/// record type serves as the access log entry for both paths (the engine fills it for what it
/// serves, [`FlowRecord`] converts the XDP program's connections into it), so the fields are
/// defined once, in `elb_engine::observe`.
pub use elb_engine::RequestRecord as AccessLogEntry;
pub use elb_engine::observe::{RequestLine, TlsInfo};

/// One TCP connection the XDP program forwarded, as the dataplane's flow-end event describes
/// it: what the agent's consumer of those events passes to [`crate::accesslog::AccessLogs::record`]
/// (after `AccessLogEntry::from`) with the load balancer the flow's listener belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowRecord {
    /// When the client's SYN arrived.
    pub started: SystemTime,
    /// The client.
    pub client: SocketAddr,
    /// The backend the flow went to (`None`: refused, no backend).
    pub backend: Option<SocketAddr>,
    /// The client's SYN to its forwarding towards the backend (`request_processing_time`).
    pub to_backend: Option<Duration>,
    /// The SYN forwarded to the backend's SYN-ACK (`backend_processing_time`: the connection to
    /// the instance).
    pub backend_connect: Option<Duration>,
    /// TCP payload bytes from the client.
    pub bytes_from_client: u64,
    /// TCP payload bytes to the client.
    pub bytes_to_client: u64,
}

impl From<FlowRecord> for AccessLogEntry {
    /// AWS's TCP line: no status codes, request `"- - - "`, user agent `"-"`, no TLS; the
    /// response time is zero (XDP rewrites packets as they pass).
    fn from(f: FlowRecord) -> Self {
        Self {
            time: f.started,
            client: f.client,
            backend: f.backend,
            request_processing: f.to_backend,
            backend_processing: f.backend_connect,
            response_processing: f.backend.map(|_| Duration::ZERO),
            elb_status: None,
            backend_status: None,
            received_bytes: f.bytes_from_client,
            sent_bytes: f.bytes_to_client,
            request: None,
            user_agent: None,
            tls: None,
        }
    }
}

/// `2015-05-13T23:39:43.945958Z`.
pub fn iso8601_micros(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    let (y, mo, d, h, mi, s) = civil(secs);
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:06}Z",
        since.subsec_micros()
    )
}

/// (year, month, day, hour, minute, second) of a Unix time, UTC.
pub(crate) fn civil(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let t = elb_sigv4::time::UtcTime::from_unix(secs);
    (t.year, t.month, t.day, t.hour, t.minute, t.second)
}

fn seconds(out: &mut String, value: Option<Duration>) {
    match value {
        Some(d) => {
            let _ = write!(out, "{:.6}", d.as_secs_f64());
        }
        None => out.push_str("-1"),
    }
}

fn status(out: &mut String, value: Option<u16>) {
    match value {
        Some(code) => {
            let _ = write!(out, "{code}");
        }
        None => out.push('-'),
    }
}

/// Text inside a quoted field: quotes and control characters cannot break the line.
fn quoted(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("%22"),
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// An access log line in AWS's format.
pub trait FormatLine {
    /// The log line (with its newline) for load balancer `lb_name`.
    fn format_line(&self, lb_name: &str) -> String;
}

impl FormatLine for AccessLogEntry {
    fn format_line(&self, lb_name: &str) -> String {
        let mut out = String::with_capacity(256);
        out.push_str(&iso8601_micros(self.time));
        let _ = write!(out, " {lb_name} {} ", self.client);
        match self.backend {
            Some(b) => {
                let _ = write!(out, "{b}");
            }
            None => out.push('-'),
        }
        for t in [
            self.request_processing,
            self.backend_processing,
            self.response_processing,
        ] {
            out.push(' ');
            seconds(&mut out, t);
        }
        out.push(' ');
        status(&mut out, self.elb_status);
        out.push(' ');
        status(&mut out, self.backend_status);
        let _ = write!(out, " {} {} ", self.received_bytes, self.sent_bytes);
        match &self.request {
            Some(r) => quoted(&mut out, &format!("{} {} {}", r.method, r.url, r.version)),
            None => out.push_str("\"- - - \""),
        }
        out.push(' ');
        quoted(&mut out, self.user_agent.as_deref().unwrap_or("-"));
        match &self.tls {
            Some(t) => {
                let _ = write!(out, " {} {}", t.cipher, t.protocol);
            }
            None => out.push_str(" - -"),
        }
        out.push('\n');
        out
    }
}

/// Where a load balancer's logs go (its `AccessLog` attribute, with the names the key needs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct LogDestination {
    pub account_id: String,
    pub region: String,
    /// The load balancer's name as its owner knows it.
    pub load_balancer: String,
    pub bucket: String,
    /// Without leading or trailing `/`; empty for none.
    pub prefix: String,
    /// 5 or 60.
    pub emit_interval_minutes: u32,
}

impl LogDestination {
    /// The S3 key of the file covering the interval that ends at `end` (UTC, whole minutes),
    /// written by the servo at `node`:
    /// `[prefix/]AWSLogs/<account>/elasticloadbalancing/<region>/yyyy/mm/dd/
    ///  <account>_elasticloadbalancing_<region>_<lb>_<yyyymmddThhmmZ>_<node>_<random>.log`.
    pub fn object_key(&self, end: SystemTime, node: Ipv4Addr, random: &str) -> String {
        let secs = i64::try_from(end.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs())
            .unwrap_or(0);
        let (y, mo, d, h, mi, _) = civil(secs);
        let prefix = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let (account, region, lb) = (&self.account_id, &self.region, &self.load_balancer);
        format!(
            "{prefix}AWSLogs/{account}/elasticloadbalancing/{region}/{y:04}/{mo:02}/{d:02}/\
             {account}_elasticloadbalancing_{region}_{lb}_{y:04}{mo:02}{d:02}T{h:02}{mi:02}Z_{node}_{random}.log"
        )
    }

    /// The end of the interval that `time` falls in (intervals are aligned to the hour).
    pub fn interval_end(&self, time: SystemTime) -> SystemTime {
        let step = u64::from(self.emit_interval_minutes.max(1)) * 60;
        let secs = time
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        UNIX_EPOCH + Duration::from_secs((secs / step + 1) * step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, micros: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, micros * 1000)
    }

    #[test]
    fn tcp_line_as_aws_writes_it() {
        let entry = AccessLogEntry {
            time: at(1_431_560_383, 945_958), // 2015-05-13T23:39:43.945958Z
            client: "192.168.131.39:2817".parse().unwrap(),
            backend: Some("10.0.0.1:80".parse().unwrap()),
            request_processing: Some(Duration::from_nanos(1_069_000)),
            backend_processing: Some(Duration::from_nanos(28_000)),
            response_processing: Some(Duration::from_nanos(41_000)),
            elb_status: None,
            backend_status: None,
            received_bytes: 82,
            sent_bytes: 305,
            request: None,
            user_agent: None,
            tls: None,
        };
        assert_eq!(
            entry.format_line("my-loadbalancer"),
            "2015-05-13T23:39:43.945958Z my-loadbalancer 192.168.131.39:2817 10.0.0.1:80 \
             0.001069 0.000028 0.000041 - - 82 305 \"- - - \" \"-\" - -\n"
        );
    }

    #[test]
    fn http_line_and_unreachable_backend() {
        let entry = AccessLogEntry {
            time: at(1_431_560_383, 0),
            client: "192.168.131.39:2817".parse().unwrap(),
            backend: None,
            request_processing: None,
            backend_processing: None,
            response_processing: None,
            elb_status: Some(503),
            backend_status: None,
            received_bytes: 0,
            sent_bytes: 0,
            request: Some(RequestLine {
                method: "GET".into(),
                url: "https://www.example.com:443/a\"b".into(),
                version: "HTTP/1.1".into(),
            }),
            user_agent: Some("curl/7.88.1".into()),
            tls: Some(TlsInfo {
                cipher: "ECDHE-RSA-AES128-GCM-SHA256".into(),
                protocol: "TLSv1.2".into(),
            }),
        };
        assert_eq!(
            entry.format_line("web"),
            "2015-05-13T23:39:43.000000Z web 192.168.131.39:2817 - -1 -1 -1 503 - 0 0 \
             \"GET https://www.example.com:443/a%22b HTTP/1.1\" \"curl/7.88.1\" \
             ECDHE-RSA-AES128-GCM-SHA256 TLSv1.2\n"
        );
    }

    #[test]
    fn a_flow_record_is_a_tcp_line() {
        let entry = AccessLogEntry::from(FlowRecord {
            started: at(1_431_560_383, 945_958),
            client: "192.168.131.39:2817".parse().unwrap(),
            backend: Some("10.0.0.1:80".parse().unwrap()),
            to_backend: Some(Duration::from_micros(57)),
            backend_connect: Some(Duration::from_micros(310)),
            bytes_from_client: 82,
            bytes_to_client: 305,
        });
        assert_eq!(
            entry.format_line("lb"),
            "2015-05-13T23:39:43.945958Z lb 192.168.131.39:2817 10.0.0.1:80 \
             0.000057 0.000310 0.000000 - - 82 305 \"- - - \" \"-\" - -\n"
        );
    }

    #[test]
    fn keys_and_intervals() {
        let dest = LogDestination {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            load_balancer: "web".into(),
            bucket: "logs".into(),
            prefix: "prod".into(),
            emit_interval_minutes: 5,
        };
        // 2014-02-15T23:37:10Z falls in the interval ending 23:40.
        let end = dest.interval_end(at(1_392_507_430, 0));
        assert_eq!(end, at(1_392_507_600, 0));
        assert_eq!(
            dest.object_key(end, Ipv4Addr::new(192, 168, 1, 1), "abc"),
            "prod/AWSLogs/123456789012/elasticloadbalancing/us-east-1/2014/02/15/\
             123456789012_elasticloadbalancing_us-east-1_web_20140215T2340Z_192.168.1.1_abc.log"
        );
        let hourly = LogDestination {
            prefix: String::new(),
            emit_interval_minutes: 60,
            ..dest
        };
        assert_eq!(
            hourly.interval_end(at(1_392_507_430, 0)),
            at(1_392_508_800, 0)
        );
        assert!(
            hourly
                .object_key(at(1_392_508_800, 0), Ipv4Addr::LOCALHOST, "r")
                .starts_with("AWSLogs/123456789012/elasticloadbalancing/us-east-1/2014/02/16/")
        );
    }
}

//! The DNS server for load balancer names (Eucalyptus' `LoadBalancerResolver`): A queries for
//! `<name>-<account>.lb.<domain>` (and `internal-...`) are answered with the VIPs of the load
//! balancer's live assigned servos, with the configured TTL, rotated on every answer so that
//! clients that take the first address spread over the servos.
//!
//! The protocol work (UDP and TCP framing, message parsing and encoding) is hickory-server's;
//! [`Resolver`] decides the answer from the store and is tested on its own.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::rdata::{A, SOA};
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};

use crate::store::{DnsLookup, Store};

/// What the DNS server needs to know.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    /// The domain answered for (`--dns-domain`), lower-case, without a trailing dot.
    pub zone: String,
    /// TTL of A records (Eucalyptus' `dns_ttl`).
    pub ttl: u32,
    /// A servo is live while its last heartbeat is younger than this.
    pub servo_timeout_ms: i64,
    /// Longest a lookup may take before the answer is SERVFAIL: resolvers give up after a
    /// few seconds, and a database outage must not leave queries hanging.
    pub lookup_timeout: Duration,
}

/// How long negative answers (NXDOMAIN, no data) may be cached: the SOA minimum. Short, so a
/// name looked up just before its load balancer was created resolves soon after.
const NEGATIVE_TTL: u32 = 5;

/// The decided answer to one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// NOERROR with these A records (in answer order).
    Addresses(Vec<Ipv4Addr>),
    /// NOERROR with the zone's SOA as the answer (an SOA query at the apex).
    Soa,
    /// NOERROR without records of the asked type; the SOA goes in the authority section.
    NoData,
    /// The name does not exist in the zone; the SOA goes in the authority section.
    NxDomain,
    /// Not our zone, or not a class we serve.
    Refused,
    /// The store could not be read.
    ServFail,
}

/// Decides answers from the store.
#[derive(Debug)]
pub struct Resolver {
    store: Store,
    settings: DnsSettings,
    rotation: AtomicUsize,
    /// Whether lookups are failing, so an outage is logged once rather than per query.
    failing: AtomicBool,
}

impl Resolver {
    pub fn new(store: Store, settings: DnsSettings) -> Self {
        Self {
            store,
            settings,
            rotation: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
        }
    }

    pub fn settings(&self) -> &DnsSettings {
        &self.settings
    }

    /// The answer for `name` (any case, with or without the trailing dot).
    pub async fn resolve(&self, name: &str, qtype: RecordType, qclass: DNSClass) -> Answer {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let zone = self.settings.zone.as_str();
        let in_zone = name == zone
            || name
                .strip_suffix(zone)
                .is_some_and(|rest| rest.ends_with('.'));
        if !in_zone || !matches!(qclass, DNSClass::IN | DNSClass::ANY) {
            return Answer::Refused;
        }
        if name == zone {
            return match qtype {
                RecordType::SOA | RecordType::ANY => Answer::Soa,
                _ => Answer::NoData,
            };
        }
        let lookup = tokio::time::timeout(
            self.settings.lookup_timeout,
            self.store.dns_lookup(&name, self.settings.servo_timeout_ms),
        )
        .await;
        let found = match lookup {
            Ok(Ok(found)) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("DNS lookups work again");
                }
                found
            }
            Ok(Err(e)) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "DNS lookups fail (answering SERVFAIL)");
                }
                return Answer::ServFail;
            }
            Err(_) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        timeout_ms = u64::try_from(self.settings.lookup_timeout.as_millis())
                            .unwrap_or(u64::MAX),
                        "DNS lookups time out (answering SERVFAIL)"
                    );
                }
                return Answer::ServFail;
            }
        };
        match (found, qtype) {
            (DnsLookup::NoSuchName, _) => Answer::NxDomain,
            (DnsLookup::Vips(mut vips), RecordType::A | RecordType::ANY) if !vips.is_empty() => {
                // Rotation, as Eucalyptus' resolver does: each answer starts one further along
                // the (sorted) list, so every servo is first equally often.
                let turn = self.rotation.fetch_add(1, Ordering::Relaxed) % vips.len();
                vips.rotate_left(turn);
                Answer::Addresses(vips)
            }
            (DnsLookup::Vips(_), _) => Answer::NoData,
        }
    }

    fn soa_record(&self) -> Option<Record> {
        let zone = Name::from_ascii(format!("{}.", self.settings.zone)).ok()?;
        let mname = Name::from_ascii(format!("ns.{}.", self.settings.zone)).ok()?;
        let rname = Name::from_ascii(format!("hostmaster.{}.", self.settings.zone)).ok()?;
        // The serial is the config version (truncated): it changes when answers may change.
        let serial = u32::try_from(self.store.config_version() % u64::from(u32::MAX)).unwrap_or(0);
        let soa = SOA::new(mname, rname, serial, 3600, 600, 86_400, NEGATIVE_TTL);
        Some(Record::from_rdata(
            zone,
            NEGATIVE_TTL.min(self.settings.ttl.max(1)),
            RData::SOA(soa),
        ))
    }
}

/// hickory-server's request handler over a [`Resolver`].
#[derive(Debug, Clone)]
struct Handler {
    resolver: Arc<Resolver>,
}

impl Handler {
    fn new(resolver: Arc<Resolver>) -> Self {
        Self { resolver }
    }
}

fn failed(request: &Request, code: ResponseCode) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = code;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        // EDNS: answer with our own OPT when asked with one (RFC 6891), version 0.
        let response_edns = request.edns.as_ref().map(|req| {
            let mut edns = Edns::new();
            edns.set_max_payload(req.max_payload().max(512));
            edns.set_version(0);
            edns
        });
        let builder = MessageResponseBuilder::new(&request.queries, response_edns.as_ref());
        let mut metadata = Metadata::response_from_request(&request.metadata);
        let (code, answer) = if request.metadata.message_type != MessageType::Query
            || request.metadata.op_code != OpCode::Query
        {
            (ResponseCode::NotImp, None)
        } else if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            (ResponseCode::BADVERS, None)
        } else {
            match request.request_info() {
                Err(_) => (ResponseCode::FormErr, None),
                Ok(info) => {
                    let query = info.query.original();
                    let name = query.name().clone();
                    let answer = self
                        .resolver
                        .resolve(&name.to_ascii(), query.query_type(), query.query_class())
                        .await;
                    let code = match answer {
                        Answer::Addresses(_) | Answer::Soa | Answer::NoData => {
                            ResponseCode::NoError
                        }
                        Answer::NxDomain => ResponseCode::NXDomain,
                        Answer::Refused => ResponseCode::Refused,
                        Answer::ServFail => ResponseCode::ServFail,
                    };
                    (code, Some((name, answer)))
                }
            }
        };
        metadata.response_code = code;
        let ttl = self.resolver.settings().ttl;
        let mut answers: Vec<Record> = Vec::new();
        let mut authority: Vec<Record> = Vec::new();
        if let Some((name, answer)) = &answer {
            match answer {
                Answer::Addresses(vips) => {
                    metadata.authoritative = true;
                    // The question's own spelling of the name: resolvers using 0x20 case
                    // randomisation compare it.
                    answers.extend(
                        vips.iter()
                            .map(|ip| Record::from_rdata(name.clone(), ttl, RData::A(A(*ip)))),
                    );
                }
                Answer::Soa => {
                    metadata.authoritative = true;
                    answers.extend(self.resolver.soa_record());
                }
                Answer::NoData | Answer::NxDomain => {
                    metadata.authoritative = true;
                    authority.extend(self.resolver.soa_record());
                }
                Answer::Refused | Answer::ServFail => {}
            }
        }
        let response = builder.build(
            metadata,
            answers.iter(),
            std::iter::empty(),
            authority.iter(),
            std::iter::empty(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "could not send a DNS response");
                failed(request, ResponseCode::ServFail)
            }
        }
    }
}

/// A running DNS server.
pub struct DnsServer {
    server: hickory_server::Server<Handler>,
    /// The bound address (UDP and TCP share it).
    pub addr: SocketAddr,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("addr", &self.addr)
            .finish()
    }
}

/// How long a TCP client may stay silent before its connection is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);

impl DnsServer {
    /// Binds UDP and TCP on `addr` (port 0: one free port for both) and starts serving.
    pub async fn start(addr: &str, resolver: Arc<Resolver>) -> std::io::Result<Self> {
        let (udp, tcp) = bind_pair(addr).await?;
        let local = udp.local_addr()?;
        let mut server = hickory_server::Server::new(Handler::new(resolver));
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE, 64 * 1024);
        Ok(Self {
            server,
            addr: local,
        })
    }

    /// Stops accepting queries and waits for the tasks to end.
    pub async fn shutdown(mut self) {
        if let Err(e) = self.server.shutdown_gracefully().await {
            tracing::debug!(error = %e, "DNS server stopped with an error");
        }
    }
}

/// A UDP socket and a TCP listener on the same address. With port 0 the UDP port is chosen
/// first and TCP tried on it; another process may hold that TCP port, so a few tries.
async fn bind_pair(addr: &str) -> std::io::Result<(UdpSocket, TcpListener)> {
    let mut last_error = None;
    for _ in 0..8 {
        let udp = UdpSocket::bind(addr).await?;
        let bound = udp.local_addr()?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last_error = Some(e),
        }
        let requested_port = addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok());
        if requested_port != Some(0) {
            break;
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::other("cannot bind the DNS address")))
}

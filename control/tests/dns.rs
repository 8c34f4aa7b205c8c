//! The DNS server on real sockets (UDP and TCP) over a SQLite store: zone rules, and SERVFAIL
//! rather than a crash or a hang when the database is gone. Answers with servos are covered
//! end to end by the Python suite (`test_servo.py`).

use std::sync::Arc;
use std::time::Duration;

use control::dns::{Answer, DnsServer, DnsSettings, Resolver};
use control::store::Store;
use hickory_server::proto::op::Query;
use hickory_server::proto::op::{Message, ResponseCode};
use hickory_server::proto::rr::{DNSClass, Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("control.db").display());
    (dir, Store::open(&db).await.unwrap())
}

fn settings() -> DnsSettings {
    DnsSettings {
        zone: "elb.local".into(),
        ttl: 60,
        servo_timeout_ms: 10_000,
        lookup_timeout: Duration::from_secs(2),
    }
}

fn query(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 4242;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m.to_vec().unwrap()
}

async fn udp(addr: std::net::SocketAddr, name: &str, qtype: RecordType) -> Message {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&query(name, qtype), addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
        .await
        .expect("a DNS answer within 5 s")
        .unwrap();
    let reply = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(reply.metadata.id, 4242);
    reply
}

async fn tcp(addr: std::net::SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let q = query(name, qtype);
    stream
        .write_all(&u16::try_from(q.len()).unwrap().to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&q).await.unwrap();
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut len))
        .await
        .expect("a DNS answer within 5 s")
        .unwrap();
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

#[tokio::test]
async fn zone_rules() {
    let (_dir, store) = store().await;
    let r = Resolver::new(store, settings());
    let a = RecordType::A;
    let inet = DNSClass::IN;
    assert_eq!(
        r.resolve("web-1.lb.elb.local.", a, inet).await,
        Answer::NxDomain
    );
    assert_eq!(
        r.resolve("WEB-1.LB.ELB.LOCAL", a, inet).await,
        Answer::NxDomain
    );
    assert_eq!(
        r.resolve("www.example.com.", a, inet).await,
        Answer::Refused
    );
    // A suffix match must be a label boundary.
    assert_eq!(r.resolve("notelb.local.", a, inet).await, Answer::Refused);
    assert_eq!(
        r.resolve("x.elb.local.", a, DNSClass::CH).await,
        Answer::Refused
    );
    assert_eq!(
        r.resolve("elb.local.", RecordType::SOA, inet).await,
        Answer::Soa
    );
    assert_eq!(r.resolve("elb.local.", a, inet).await, Answer::NoData);
}

#[tokio::test]
async fn servfail_when_the_database_is_gone() {
    let (_dir, store) = store().await;
    let resolver = Arc::new(Resolver::new(store.clone(), settings()));
    let server = DnsServer::start("127.0.0.1:0", resolver.clone())
        .await
        .unwrap();
    let addr = server.addr;

    let reply = udp(addr, "web-1.lb.elb.local.", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(reply.authorities.len(), 1, "SOA in the authority section");
    assert!(reply.metadata.authoritative);
    let reply = tcp(addr, "web-1.lb.elb.local.", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    let reply = udp(addr, "www.example.com.", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);

    // The database goes away: answers become SERVFAIL, on both transports, and the server
    // keeps running.
    store.close().await;
    for _ in 0..3 {
        let reply = udp(addr, "web-1.lb.elb.local.", RecordType::A).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
        assert!(reply.answers.is_empty());
    }
    let reply = tcp(addr, "web-1.lb.elb.local.", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    // Names outside the zone do not touch the database.
    let reply = udp(addr, "www.example.com.", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
    server.shutdown().await;
}

//! A minimal DNS client (A queries over UDP), enough to resolve load balancer names through the
//! control service's DNS server the way a client's stub resolver would.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};

/// An answer: the addresses, the TTL of the first record, and the response code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// RCODE (0 NOERROR, 3 NXDOMAIN, 5 REFUSED...).
    pub rcode: u8,
    /// A records, in answer order.
    pub addrs: Vec<Ipv4Addr>,
    /// TTL of the first A record.
    pub ttl: u32,
}

fn encode_name(name: &str, out: &mut Vec<u8>) {
    for label in name.trim_end_matches('.').split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

fn skip_name(msg: &[u8], mut i: usize) -> anyhow::Result<usize> {
    loop {
        let len = *msg.get(i).context("truncated name")? as usize;
        if len & 0xc0 == 0xc0 {
            return Ok(i + 2);
        }
        if len == 0 {
            return Ok(i + 1);
        }
        i += 1 + len;
    }
}

/// Asks `server` for the A records of `name`.
pub fn query_a(server: SocketAddr, name: &str) -> anyhow::Result<Answer> {
    let id: u16 = (std::process::id() as u16) ^ (name.len() as u16).rotate_left(7);
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, 1 question
    encode_name(name, &mut q);
    q.extend_from_slice(&[0, 1, 0, 1]); // A, IN
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    socket.send_to(&q, server)?;
    let mut buf = [0u8; 1500];
    let (n, _) = socket
        .recv_from(&mut buf)
        .with_context(|| format!("no DNS answer from {server}"))?;
    let msg = &buf[..n];
    ensure!(n >= 12 && msg[0..2] == id.to_be_bytes(), "bad DNS answer");
    let rcode = msg[3] & 0x0f;
    let qd = u16::from_be_bytes([msg[4], msg[5]]);
    let an = u16::from_be_bytes([msg[6], msg[7]]);
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(msg, i)? + 4;
    }
    let mut addrs = Vec::new();
    let mut ttl = 0;
    for _ in 0..an {
        i = skip_name(msg, i)?;
        if i + 10 > msg.len() {
            bail!("truncated DNS record");
        }
        let kind = u16::from_be_bytes([msg[i], msg[i + 1]]);
        let record_ttl = u32::from_be_bytes([msg[i + 4], msg[i + 5], msg[i + 6], msg[i + 7]]);
        let len = u16::from_be_bytes([msg[i + 8], msg[i + 9]]) as usize;
        i += 10;
        if kind == 1 && len == 4 && i + 4 <= msg.len() {
            if addrs.is_empty() {
                ttl = record_ttl;
            }
            addrs.push(Ipv4Addr::new(msg[i], msg[i + 1], msg[i + 2], msg[i + 3]));
        }
        i += len;
    }
    Ok(Answer { rcode, addrs, ttl })
}

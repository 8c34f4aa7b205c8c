//! Building and parsing Ethernet/IPv4/TCP/ICMP frames for `BPF_PROG_TEST_RUN` fixtures.
//! Checksums are computed in full here, independently of the program's incremental updates.

use std::net::Ipv4Addr;

use elb_common::csum;

pub const ETH_LEN: usize = 14;
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// A TCP segment description.
#[derive(Clone, Debug)]
pub struct Tcp {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub payload: Vec<u8>,
    /// IP options bytes (multiple of 4).
    pub ip_options: Vec<u8>,
    /// `frag_off` field (host order), e.g. 0x4000 for DF.
    pub frag_off: u16,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// IP time to live.
    pub ttl: u8,
    /// TCP options bytes (multiple of 4).
    pub tcp_options: Vec<u8>,
    /// TCP window field.
    pub window: u16,
}

impl Tcp {
    /// A segment with DF set, no payload, no options.
    pub fn new(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), flags: u8) -> Self {
        Self {
            src: src.0,
            dst: dst.0,
            sport: src.1,
            dport: dst.1,
            seq: 1000,
            ack: if flags & TCP_ACK != 0 { 5000 } else { 0 },
            flags,
            payload: Vec::new(),
            ip_options: Vec::new(),
            frag_off: 0x4000,
            src_mac: [0x02, 0, 0, 0, 0, 0x01],
            dst_mac: [0x02, 0, 0, 0, 0, 0x02],
            ttl: 64,
            tcp_options: Vec::new(),
            window: 64240,
        }
    }

    /// The frame, with correct checksums.
    pub fn frame(&self) -> Vec<u8> {
        assert!(self.tcp_options.len().is_multiple_of(4) && self.tcp_options.len() <= 40);
        let mut tcp = Vec::with_capacity(20 + self.payload.len());
        tcp.extend_from_slice(&self.sport.to_be_bytes());
        tcp.extend_from_slice(&self.dport.to_be_bytes());
        tcp.extend_from_slice(&self.seq.to_be_bytes());
        tcp.extend_from_slice(&self.ack.to_be_bytes());
        tcp.push((((20 + self.tcp_options.len()) / 4) << 4) as u8);
        tcp.push(self.flags);
        tcp.extend_from_slice(&self.window.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 0]);
        tcp.extend_from_slice(&self.tcp_options);
        tcp.extend_from_slice(&self.payload);
        let c = csum::l4_checksum(self.src.octets(), self.dst.octets(), 6, &tcp);
        tcp[16..18].copy_from_slice(&c.to_ne_bytes());
        let mut f = ipv4_frame(
            self.src_mac,
            self.dst_mac,
            self.src,
            self.dst,
            6,
            self.frag_off,
            &self.ip_options,
            &tcp,
        );
        if self.ttl != 64 {
            let ihl = 20 + self.ip_options.len();
            f[ETH_LEN + 8] = self.ttl;
            f[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&[0, 0]);
            let c = csum::checksum(&f[ETH_LEN..ETH_LEN + ihl]);
            f[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&c.to_ne_bytes());
        }
        f
    }
}

/// TCP options of a typical Linux SYN: MSS `mss`, SACK permitted, timestamps, window scale
/// `wscale` (20 bytes).
pub fn syn_options(mss: u16, wscale: u8) -> Vec<u8> {
    let m = mss.to_be_bytes();
    vec![
        2, 4, m[0], m[1], 4, 2, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0, 0, 1, 3, 3, wscale,
    ]
}

/// TCP options carrying one SACK block `[left, right)` (12 bytes: two NOPs first).
pub fn sack_option(left: u32, right: u32) -> Vec<u8> {
    let mut o = vec![1, 1, 5, 10];
    o.extend_from_slice(&left.to_be_bytes());
    o.extend_from_slice(&right.to_be_bytes());
    o
}

/// An Ethernet + IPv4 frame around `l4`, with a correct header checksum.
#[expect(clippy::too_many_arguments, reason = "a frame has this many fields")]
pub fn ipv4_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    frag_off: u16,
    options: &[u8],
    l4: &[u8],
) -> Vec<u8> {
    assert!(options.len().is_multiple_of(4));
    let ihl = 20 + options.len();
    let mut f = Vec::with_capacity(ETH_LEN + ihl + l4.len());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let ip_start = f.len();
    f.push(0x40 | (ihl / 4) as u8);
    f.push(0);
    f.extend_from_slice(&((ihl + l4.len()) as u16).to_be_bytes());
    f.extend_from_slice(&0x1234u16.to_be_bytes());
    f.extend_from_slice(&frag_off.to_be_bytes());
    f.push(64);
    f.push(proto);
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(options);
    let c = csum::checksum(&f[ip_start..ip_start + ihl]);
    f[ip_start + 10..ip_start + 12].copy_from_slice(&c.to_ne_bytes());
    f.extend_from_slice(l4);
    f
}

/// An ICMP error (type/code, 4 rest bytes) quoting `quoted` (an IP packet, truncated as routers
/// do), from `src` to `dst`.
pub fn icmp_error(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    kind: u8,
    code: u8,
    rest: [u8; 4],
    quoted: &[u8],
) -> Vec<u8> {
    let mut icmp = vec![kind, code, 0, 0];
    icmp.extend_from_slice(&rest);
    icmp.extend_from_slice(quoted);
    let c = csum::checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_ne_bytes());
    ipv4_frame(
        [2, 0, 0, 0, 0, 9],
        [2, 0, 0, 0, 0, 2],
        src,
        dst,
        1,
        0,
        &[],
        &icmp,
    )
}

/// A parsed IPv4/TCP frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub ttl: u8,
    pub window: u16,
    pub tcp_options: Vec<u8>,
    pub payload: Vec<u8>,
}

/// Parses an Ethernet/IPv4/TCP frame and verifies both checksums by full recomputation.
pub fn parse_tcp(frame: &[u8]) -> Result<Parsed, String> {
    if frame.len() < ETH_LEN + 40 {
        return Err(format!("frame too short: {}", frame.len()));
    }
    let ip = &frame[ETH_LEN..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let tot = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if csum::checksum(&ip[..ihl]) != 0 {
        return Err("bad IPv4 header checksum".into());
    }
    if ip[9] != 6 {
        return Err(format!("not TCP: proto {}", ip[9]));
    }
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let seg = &ip[ihl..tot];
    if csum::l4_checksum(src.octets(), dst.octets(), 6, seg) != 0 {
        return Err("bad TCP checksum".into());
    }
    let doff = usize::from(seg[12] >> 4) * 4;
    Ok(Parsed {
        dst_mac: frame[0..6].try_into().unwrap_or_default(),
        src_mac: frame[6..12].try_into().unwrap_or_default(),
        src,
        dst,
        sport: u16::from_be_bytes([seg[0], seg[1]]),
        dport: u16::from_be_bytes([seg[2], seg[3]]),
        seq: u32::from_be_bytes([seg[4], seg[5], seg[6], seg[7]]),
        ack: u32::from_be_bytes([seg[8], seg[9], seg[10], seg[11]]),
        flags: seg[13],
        ttl: ip[8],
        window: u16::from_be_bytes([seg[14], seg[15]]),
        tcp_options: seg[20..doff].to_vec(),
        payload: seg[doff..].to_vec(),
    })
}

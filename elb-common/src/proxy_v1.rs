//! The PROXY protocol v1 header (`PROXY TCP4 <client> <vip> <cport> <vport>\r\n`, what AWS
//! Classic ELB sends to backends with a `ProxyProtocolPolicyType` policy), written by the XDP
//! program into a client's first data segment; and the checksum arithmetic of that insertion.
//! Shared so that both are unit-tested on the host.
//!
//! Written for the BPF verifier: a fixed 64-byte buffer indexed through a mask, bounded loops.

use crate::csum;

/// Longest header: `PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n`.
pub const MAX_LEN: usize = 56;
/// Size of the buffer the header is written into (a power of two, zero beyond the header).
pub const BUF: usize = 64;

/// Decimal digits of `v` (1..=5).
#[inline(always)]
fn digits(v: u32) -> usize {
    1 + usize::from(v >= 10)
        + usize::from(v >= 100)
        + usize::from(v >= 1000)
        + usize::from(v >= 10000)
}

/// Length of the header for this connection (client `src:sport` to `dst:dport`).
#[inline(always)]
pub fn header_len(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> usize {
    let mut n = "PROXY TCP4 ".len() + 3 + 1 + 3 + 1 + 1 + 2;
    for i in 0..4 {
        n += digits(u32::from(src[i])) + digits(u32::from(dst[i]));
    }
    n + digits(u32::from(sport)) + digits(u32::from(dport))
}

/// Appends the decimal digits of `v` (at most 5) to `buf` at `*at`. (Constant divisors: a
/// division by a variable would carry a division-by-zero panic the verifier refuses.)
#[inline(always)]
fn put_number(buf: &mut [u8; BUF], at: &mut usize, v: u32) {
    let n = digits(v);
    for (i, d) in [10000u32, 1000, 100, 10, 1].into_iter().enumerate() {
        if 5 - i <= n {
            buf[*at & (BUF - 1)] = b'0' + ((v / d) % 10) as u8;
            *at += 1;
        }
    }
}

#[inline(always)]
fn put_byte(buf: &mut [u8; BUF], at: &mut usize, b: u8) {
    buf[*at & (BUF - 1)] = b;
    *at += 1;
}

#[inline(always)]
fn put_addr(buf: &mut [u8; BUF], at: &mut usize, a: [u8; 4]) {
    for (i, octet) in a.iter().enumerate() {
        if i > 0 {
            put_byte(buf, at, b'.');
        }
        put_number(buf, at, u32::from(*octet));
    }
}

/// Writes the header into `buf` (which must be all zeros) and returns its length.
#[inline(always)]
pub fn write(buf: &mut [u8; BUF], src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> usize {
    let mut at = 0usize;
    for b in *b"PROXY TCP4 " {
        put_byte(buf, &mut at, b);
    }
    put_addr(buf, &mut at, src);
    put_byte(buf, &mut at, b' ');
    put_addr(buf, &mut at, dst);
    put_byte(buf, &mut at, b' ');
    put_number(buf, &mut at, u32::from(sport));
    put_byte(buf, &mut at, b' ');
    put_number(buf, &mut at, u32::from(dport));
    put_byte(buf, &mut at, b'\r');
    put_byte(buf, &mut at, b'\n');
    at
}

/// A one's-complement sum of bytes moved by one position (every byte in the other lane).
#[inline(always)]
pub fn swap_sum(sum: u16) -> u16 {
    sum.rotate_left(8)
}

/// Folds a 32-bit accumulator to a 16-bit one's-complement sum (not complemented).
#[inline(always)]
pub fn fold_sum(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The TCP checksum after `text` is inserted at the start of the payload (which starts at an
/// even offset: the header length is a multiple of 4), computed from the old one:
/// - `check`: the segment's valid checksum before;
/// - `pseudo_old`/`pseudo_new`: the pseudo-header sums (addresses, protocol, TCP length) before
///   and after (the length grows by the text's);
/// - `hdr`: the sum of the TCP header with options, its checksum field counted as zero;
/// - `text`: the sum of the text, zero-padded to even length; `odd`: its length is odd.
///
/// The old payload's sum is what remains of the old total without the pseudo-header and the
/// header; after an odd-length text it sits in the other byte lane of every word (RFC 1071's
/// byte-order independence), so its sum is byte-swapped. A wrong checksum before stays wrong
/// after (the receiver drops the segment as it would have).
#[inline(always)]
pub fn insert_checksum(
    check: u16,
    pseudo_old: u32,
    pseudo_new: u32,
    hdr: u32,
    text: u32,
    odd: bool,
) -> u16 {
    let total = u32::from(!check);
    // Subtraction in one's complement: add the complement.
    let payload = fold_sum(total + u32::from(!fold_sum(pseudo_old)) + u32::from(!fold_sum(hdr)));
    let payload = if odd { swap_sum(payload) } else { payload };
    csum::fold(
        u32::from(fold_sum(pseudo_new))
            + u32::from(fold_sum(hdr))
            + u32::from(fold_sum(text))
            + u32::from(payload),
    )
}

/// The pseudo-header sum of an IPv4 TCP segment of `tcp_len` bytes (memory-order addresses).
#[inline(always)]
pub fn pseudo_sum(saddr: u32, daddr: u32, tcp_len: u16) -> u32 {
    (saddr & 0xffff)
        + (saddr >> 16)
        + (daddr & 0xffff)
        + (daddr >> 16)
        + u32::from(u16::from(crate::PROTO_TCP).to_be())
        + u32::from(tcp_len.to_be())
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{format, vec::Vec};

    use super::*;

    fn text(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut buf = [0u8; BUF];
        let n = write(&mut buf, src, dst, sport, dport);
        assert!(buf[n..].iter().all(|&b| b == 0));
        buf[..n].to_vec()
    }

    #[test]
    fn header_matches_the_format_and_its_length() {
        let cases = [
            ([198, 18, 0, 2], [198, 18, 0, 1], 40000, 80),
            ([255, 255, 255, 255], [255, 255, 255, 255], 65535, 65535),
            ([0, 0, 0, 0], [1, 2, 3, 4], 0, 9),
            ([10, 100, 9, 99], [100, 10, 1, 0], 10000, 1000),
        ];
        for (s, d, sp, dp) in cases {
            let t = text(s, d, sp, dp);
            let want = format!(
                "PROXY TCP4 {}.{}.{}.{} {}.{}.{}.{} {sp} {dp}\r\n",
                s[0], s[1], s[2], s[3], d[0], d[1], d[2], d[3]
            );
            assert_eq!(core::str::from_utf8(&t).unwrap(), want);
            assert_eq!(header_len(s, d, sp, dp), want.len());
            assert!(want.len() <= MAX_LEN);
        }
        assert_eq!(
            header_len([255; 4], [255; 4], 65535, 65535),
            MAX_LEN,
            "the longest header"
        );
    }

    #[test]
    fn insertion_checksum_matches_recomputation() {
        let (src, dst) = ([198, 19, 0, 1], [198, 19, 0, 11]);
        for (t_len, p_len, opts) in [
            (44usize, 100usize, 0usize),
            (45, 100, 12),
            (45, 1, 0),
            (56, 1387, 12),
            (47, 0, 0),
        ] {
            let mut seg: Vec<u8> = Vec::new();
            seg.extend_from_slice(&[0x9c, 0x40, 0, 80, 1, 2, 3, 4, 5, 6, 7, 8]);
            seg.push((((20 + opts) / 4) << 4) as u8);
            seg.extend_from_slice(&[0x18, 0xff, 0xff, 0, 0, 0, 0]);
            seg.extend((0..opts).map(|i| (i * 13 + 1) as u8));
            let hdr_len = seg.len();
            seg.extend((0..p_len).map(|i| (i * 7 + 3) as u8));
            let c = csum::l4_checksum(src, dst, 6, &seg);
            let t: Vec<u8> = (0..t_len).map(|i| (i * 31 + 5) as u8).collect();
            let a = |x: [u8; 4]| u32::from_ne_bytes(x);
            let check = insert_checksum(
                c,
                pseudo_sum(a(src), a(dst), seg.len() as u16),
                pseudo_sum(a(src), a(dst), (seg.len() + t_len) as u16),
                csum::add_bytes(0, &seg[..hdr_len]),
                csum::add_bytes(0, &t),
                t_len % 2 == 1,
            );
            let mut new = seg[..hdr_len].to_vec();
            new.extend_from_slice(&t);
            new.extend_from_slice(&seg[hdr_len..]);
            let want = csum::l4_checksum(src, dst, 6, &new);
            new[16..18].copy_from_slice(&check.to_ne_bytes());
            assert_eq!(
                csum::l4_checksum(src, dst, 6, &new),
                0,
                "text {t_len}, payload {p_len}, options {opts}: got {check:#x}, want {want:#x}"
            );
        }
    }
}

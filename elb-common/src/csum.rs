//! Internet checksum arithmetic (RFC 1071), shared so that the XDP program's incremental updates
//! are unit-tested on the host against a full recomputation.
//!
//! All values are in "memory order": a 16-bit word or 32-bit field loaded natively from the
//! packet bytes, and a checksum as stored in the header. The one's-complement sum does not care
//! about byte order as long as every term uses the same one (RFC 1071 §2(B)).

/// Folds a 32-bit accumulator into a 16-bit one's-complement sum and complements it.
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Updates `check` for a 32-bit field that changed from `old` to `new` (RFC 1624 eqn. 3:
/// `HC' = ~(~HC + ~m + m')`).
#[inline(always)]
pub fn replace_u32(check: u16, old: u32, new: u32) -> u16 {
    let mut sum = u32::from(!check);
    sum += u32::from(!(old as u16)) + u32::from(!((old >> 16) as u16));
    sum += (new & 0xffff) + (new >> 16);
    fold(sum)
}

/// Updates `check` for a 16-bit word that changed from `old` to `new`.
#[inline(always)]
pub fn replace_u16(check: u16, old: u16, new: u16) -> u16 {
    let sum = u32::from(!check) + u32::from(!old) + u32::from(new);
    fold(sum)
}

/// Adds `data` (memory order, odd length padded with a zero byte) to a running sum.
pub fn add_bytes(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_ne_bytes([pair[0], pair[1]])));
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(u16::from_ne_bytes([*last, 0])));
    }
    sum
}

/// Full checksum of `data` (the checksum field inside it must be zero).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum = u64::from(add_bytes(0, data));
    // `add_bytes` may wrap for packets above 64 KiB; none here are, but fold wide to be safe.
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    fold(sum as u32)
}

/// Full TCP/UDP checksum over the IPv4 pseudo-header and `segment` (whose checksum field must
/// be zero).
pub fn l4_checksum(src: [u8; 4], dst: [u8; 4], proto: u8, segment: &[u8]) -> u16 {
    let len = segment.len() as u16;
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src);
    pseudo[4..8].copy_from_slice(&dst);
    pseudo[9] = proto;
    pseudo[10..12].copy_from_slice(&len.to_be_bytes());
    let sum = add_bytes(add_bytes(0, &pseudo), segment);
    fold(sum)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    fn ipv4_header(src: [u8; 4], dst: [u8; 4]) -> [u8; 20] {
        let mut h = [0u8; 20];
        h[0] = 0x45;
        h[2..4].copy_from_slice(&60u16.to_be_bytes());
        h[4..6].copy_from_slice(&0x1c46u16.to_be_bytes());
        h[6] = 0x40;
        h[8] = 64;
        h[9] = 6;
        h[12..16].copy_from_slice(&src);
        h[16..20].copy_from_slice(&dst);
        let c = checksum(&h);
        h[10..12].copy_from_slice(&c.to_ne_bytes());
        h
    }

    #[test]
    fn known_ipv4_header_checksum() {
        // The worked example from Wikipedia's "IPv4 header checksum" article.
        let h: [u8; 20] = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(u16::from_be(checksum(&h)), 0xb861);
    }

    #[test]
    fn incremental_address_change_matches_recomputation() {
        let cases = [
            ([198, 18, 0, 1], [198, 19, 0, 1]),
            ([0, 0, 0, 0], [255, 255, 255, 255]),
            ([255, 255, 255, 255], [0, 0, 0, 0]),
            ([10, 1, 2, 3], [10, 1, 2, 3]),
            ([1, 2, 3, 4], [254, 253, 252, 251]),
        ];
        for (old, new) in cases {
            let h = ipv4_header([198, 18, 0, 50], old);
            let check = u16::from_ne_bytes([h[10], h[11]]);
            let updated = replace_u32(check, u32::from_ne_bytes(old), u32::from_ne_bytes(new));
            let expected = ipv4_header([198, 18, 0, 50], new);
            assert_eq!(
                updated.to_ne_bytes(),
                [expected[10], expected[11]],
                "{old:?}->{new:?}"
            );
        }
    }

    #[test]
    fn incremental_tcp_nat_matches_recomputation() {
        // A TCP segment whose addresses (pseudo-header) and ports are all rewritten, as full NAT
        // does, with payloads of odd and even length.
        for payload_len in [0usize, 1, 7, 100, 1459] {
            let mut seg: Vec<u8> = Vec::new();
            seg.extend_from_slice(&40000u16.to_be_bytes());
            seg.extend_from_slice(&80u16.to_be_bytes());
            seg.extend_from_slice(&0x0102_0304u32.to_be_bytes());
            seg.extend_from_slice(&0u32.to_be_bytes());
            seg.extend_from_slice(&[0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
            seg.extend((0..payload_len).map(|i| (i * 7 + 3) as u8));
            let (src, dst) = ([198, 18, 0, 10], [198, 18, 0, 1]);
            let c = l4_checksum(src, dst, 6, &seg);
            seg[16..18].copy_from_slice(&c.to_ne_bytes());

            let (nsrc, ndst) = ([198, 19, 0, 1], [198, 19, 0, 11]);
            let (nsport, ndport) = (20001u16, 8080u16);
            let mut check = u16::from_ne_bytes([seg[16], seg[17]]);
            check = replace_u32(check, u32::from_ne_bytes(src), u32::from_ne_bytes(nsrc));
            check = replace_u32(check, u32::from_ne_bytes(dst), u32::from_ne_bytes(ndst));
            let old_ports = u32::from_ne_bytes([seg[0], seg[1], seg[2], seg[3]]);
            seg[0..2].copy_from_slice(&nsport.to_be_bytes());
            seg[2..4].copy_from_slice(&ndport.to_be_bytes());
            let new_ports = u32::from_ne_bytes([seg[0], seg[1], seg[2], seg[3]]);
            check = replace_u32(check, old_ports, new_ports);

            seg[16..18].copy_from_slice(&[0, 0]);
            let expected = l4_checksum(nsrc, ndst, 6, &seg);
            assert_eq!(check, expected, "payload {payload_len}");
        }
    }

    #[test]
    fn replace_u16_matches_recomputation() {
        let mut data = [0x12u8, 0x34, 0xab, 0xcd, 0x00, 0x00, 0xff, 0xff];
        let c = checksum(&data);
        let old = u16::from_ne_bytes([data[2], data[3]]);
        data[2] = 0x55;
        data[3] = 0x01;
        let new = u16::from_ne_bytes([data[2], data[3]]);
        assert_eq!(replace_u16(c, old, new), checksum(&data));
    }

    #[test]
    fn verifying_a_correct_checksum_gives_zero() {
        let h = ipv4_header([1, 2, 3, 4], [5, 6, 7, 8]);
        assert_eq!(checksum(&h), 0);
    }
}

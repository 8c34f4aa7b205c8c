//! The flow table's keyed hash and the SYN cookies, shared so that userspace (the sweep, the
//! tests) computes exactly what the program computes.

use crate::{COOKIE_MSS, FlowKey, Ipv4, WSCALE_NONE};

/// The SplitMix64 finaliser: a bijection that mixes every input bit into every output bit.
#[inline(always)]
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The key as two words (addresses, then ports and protocol), as the program loads them.
#[inline(always)]
pub fn key_words(key: &FlowKey) -> [u64; 2] {
    let a = u64::from(u32::from_le_bytes(key.src)) | (u64::from(u32::from_le_bytes(key.dst)) << 32);
    let b = u64::from(key.sport) | (u64::from(key.dport) << 16) | (u64::from(key.proto) << 32);
    [a, b]
}

/// The flow table's hash of `key` under `seed` (a few multiplications: computed inline on every
/// packet). The seed is random per table, so a client cannot choose tuples that crowd one probe
/// window without knowing it. Not a cryptographic PRF; the SYN cookies use SipHash.
#[inline(always)]
pub fn flow_hash(seed: [u64; 2], key: &FlowKey) -> u64 {
    let [a, b] = key_words(key);
    mix(mix(a ^ seed[0]) ^ b ^ seed[1])
}

#[inline(always)]
fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

/// SipHash-2-4 of a message of `N` little-endian 64-bit words (8 * N bytes).
#[inline(always)]
pub fn siphash24<const N: usize>(key: [u64; 2], words: [u64; N]) -> u64 {
    let mut v = [
        key[0] ^ 0x736f_6d65_7073_6575,
        key[1] ^ 0x646f_7261_6e64_6f6d,
        key[0] ^ 0x6c79_6765_6e65_7261,
        key[1] ^ 0x7465_6462_7974_6573,
    ];
    let mut i = 0;
    while i < N {
        v[3] ^= words[i];
        sip_round(&mut v);
        sip_round(&mut v);
        v[0] ^= words[i];
        i += 1;
    }
    let b = ((8 * N) as u64 & 0xff) << 56;
    v[3] ^= b;
    sip_round(&mut v);
    sip_round(&mut v);
    v[0] ^= b;
    v[2] ^= 0xff;
    sip_round(&mut v);
    sip_round(&mut v);
    sip_round(&mut v);
    sip_round(&mut v);
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// What a SYN cookie remembers of the client's SYN (8 bits): the MSS (an index into
/// [`COOKIE_MSS`]), the window shift ([`WSCALE_NONE`] without window scaling) and SACK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CookieOptions {
    /// Index into [`COOKIE_MSS`].
    pub mss_index: u8,
    /// Window shift, 0..=14, or [`WSCALE_NONE`].
    pub wscale: u8,
    /// SACK permitted.
    pub sack: bool,
}

impl CookieOptions {
    /// The options for a SYN announcing `mss` (0: none), `wscale` and `sack`.
    #[inline(always)]
    pub fn from_syn(mss: u16, wscale: u8, sack: bool) -> Self {
        let mut mss_index = 0u8;
        let mut i = 0;
        while i < COOKIE_MSS.len() {
            if COOKIE_MSS[i] <= mss {
                mss_index = i as u8;
            }
            i += 1;
        }
        Self {
            mss_index,
            wscale: if wscale > 14 { WSCALE_NONE } else { wscale },
            sack,
        }
    }

    /// The 8 bits carried in the cookie.
    #[inline(always)]
    pub fn bits(self) -> u8 {
        (self.mss_index & 7) | ((self.wscale & 15) << 3) | (u8::from(self.sack) << 7)
    }

    /// The options from the cookie's 8 bits.
    #[inline(always)]
    pub fn from_bits(bits: u8) -> Self {
        Self {
            mss_index: bits & 7,
            wscale: (bits >> 3) & 15,
            sack: bits & 0x80 != 0,
        }
    }

    /// The MSS.
    #[inline(always)]
    pub fn mss(self) -> u16 {
        COOKIE_MSS[usize::from(self.mss_index & 7)]
    }
}

/// The SYN cookie (the servo's initial sequence number) for a client SYN: 24 bits of SipHash
/// over the tuple, the client's ISN, the time slot and the options, then the 8 option bits.
#[expect(clippy::too_many_arguments, reason = "the cookie covers all of these")]
#[inline(always)]
pub fn syn_cookie(
    key: [u64; 2],
    saddr: Ipv4,
    daddr: Ipv4,
    sport: u16,
    dport: u16,
    client_isn: u32,
    slot: u32,
    options: u8,
) -> u32 {
    let m0 = u64::from(u32::from_le_bytes(saddr)) | (u64::from(u32::from_le_bytes(daddr)) << 32);
    let m1 = u64::from(sport) | (u64::from(dport) << 16) | (u64::from(client_isn) << 32);
    let m2 = u64::from(slot) | (u64::from(options) << 32);
    let h = siphash24(key, [m0, m1, m2]);
    ((h as u32) & 0xffff_ff00) | u32::from(options)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    /// SipHash-2-4 over bytes, written independently of the word version (for the reference
    /// vectors, whose messages are not multiples of 8 bytes).
    fn siphash24_bytes(key: [u64; 2], msg: &[u8]) -> u64 {
        let mut v = [
            key[0] ^ 0x736f_6d65_7073_6575,
            key[1] ^ 0x646f_7261_6e64_6f6d,
            key[0] ^ 0x6c79_6765_6e65_7261,
            key[1] ^ 0x7465_6462_7974_6573,
        ];
        let mut chunks = msg.chunks_exact(8);
        for c in &mut chunks {
            let m = u64::from_le_bytes(c.try_into().unwrap());
            v[3] ^= m;
            sip_round(&mut v);
            sip_round(&mut v);
            v[0] ^= m;
        }
        let mut last = [0u8; 8];
        last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        last[7] = msg.len() as u8;
        let b = u64::from_le_bytes(last);
        v[3] ^= b;
        sip_round(&mut v);
        sip_round(&mut v);
        v[0] ^= b;
        v[2] ^= 0xff;
        for _ in 0..4 {
            sip_round(&mut v);
        }
        v[0] ^ v[1] ^ v[2] ^ v[3]
    }

    const KEY: [u64; 2] = [0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908];

    #[test]
    fn siphash_matches_the_reference_vector() {
        // The SipHash paper's example: key 00..0f, message 00..0e.
        let msg: Vec<u8> = (0..15).collect();
        assert_eq!(siphash24_bytes(KEY, &msg), 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn word_siphash_equals_byte_siphash() {
        let msg: Vec<u8> = (0..24).map(|i| (i * 37 + 11) as u8).collect();
        let words: Vec<u64> = msg
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(
            siphash24(KEY, [words[0], words[1], words[2]]),
            siphash24_bytes(KEY, &msg)
        );
        assert_eq!(siphash24(KEY, [words[0]]), siphash24_bytes(KEY, &msg[..8]));
    }

    #[test]
    fn cookie_options_round_trip() {
        for mss in [0u16, 535, 536, 1300, 1459, 1460, 9000] {
            for wscale in [0u8, 7, 14, 15, 200] {
                for sack in [false, true] {
                    let o = CookieOptions::from_syn(mss, wscale, sack);
                    assert_eq!(CookieOptions::from_bits(o.bits()), o);
                    assert!(o.mss() <= mss.max(536));
                }
            }
        }
        assert_eq!(CookieOptions::from_syn(1460, 7, true).mss(), 1460);
        assert_eq!(CookieOptions::from_syn(1400, 7, true).mss(), 1400);
        assert_eq!(CookieOptions::from_syn(0, 7, true).mss(), 536);
    }

    #[test]
    fn cookies_depend_on_everything_they_cover() {
        let base = syn_cookie(KEY, [1, 2, 3, 4], [5, 6, 7, 8], 1000, 80, 12345, 7, 0x5a);
        assert_eq!(base & 0xff, 0x5a);
        let variants = [
            syn_cookie(KEY, [1, 2, 3, 5], [5, 6, 7, 8], 1000, 80, 12345, 7, 0x5a),
            syn_cookie(KEY, [1, 2, 3, 4], [5, 6, 7, 9], 1000, 80, 12345, 7, 0x5a),
            syn_cookie(KEY, [1, 2, 3, 4], [5, 6, 7, 8], 1001, 80, 12345, 7, 0x5a),
            syn_cookie(KEY, [1, 2, 3, 4], [5, 6, 7, 8], 1000, 81, 12345, 7, 0x5a),
            syn_cookie(KEY, [1, 2, 3, 4], [5, 6, 7, 8], 1000, 80, 12346, 7, 0x5a),
            syn_cookie(KEY, [1, 2, 3, 4], [5, 6, 7, 8], 1000, 80, 12345, 8, 0x5a),
            syn_cookie(
                [KEY[0], KEY[1] ^ 1],
                [1, 2, 3, 4],
                [5, 6, 7, 8],
                1000,
                80,
                12345,
                7,
                0x5a,
            ),
        ];
        for v in variants {
            assert_ne!(v & 0xffff_ff00, base & 0xffff_ff00);
        }
    }

    #[test]
    fn flow_hash_spreads_neighbouring_keys() {
        let seed = [0x1234_5678_9abc_def0, 0x0fed_cba9_8765_4321];
        let mut buckets = [0u32; 64];
        for port in 0..6400u16 {
            let k = FlowKey {
                src: [198, 18, 0, 2],
                dst: [198, 18, 0, 1],
                sport: 10_000 + port,
                dport: 80,
                proto: 6,
                _pad: 0,
                _pad1: 0,
            };
            buckets[(flow_hash(seed, &k) & 63) as usize] += 1;
        }
        // 100 per bucket on average; a poor hash of consecutive ports piles them up.
        assert!(
            buckets.iter().all(|&n| (50..=150).contains(&n)),
            "{buckets:?}"
        );
    }
}

//! Wire headers and bounds-checked access to packet memory.
//!
//! Multi-byte fields hold the bytes as they are on the wire (network order), loaded natively.
//! XDP data past a 14-byte Ethernet header is only 2-byte aligned; the JITs of the architectures
//! we run on (x86-64, arm64) perform unaligned loads, as every C XDP program relies on.

use aya_ebpf::programs::XdpContext;

/// Ethernet header length.
pub const ETH_LEN: usize = 14;
/// IPv4 header length without options.
pub const IP_LEN: usize = 20;
/// TCP header length without options.
pub const TCP_LEN: usize = 20;
/// ICMP header length.
pub const ICMP_LEN: usize = 8;
/// EtherType of IPv4, in memory order.
pub const ETH_P_IP_BE: u16 = 0x0800u16.to_be();
/// "More fragments" flag and fragment offset mask of `frag_off`, in memory order.
pub const IP_MF_OFFSET_BE: u16 = 0x3fffu16.to_be();
/// "Don't fragment" flag, in memory order.
pub const IP_DF_BE: u16 = 0x4000u16.to_be();

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Ethernet II header.
#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub proto: u16,
}

/// IPv4 header (without options).
#[repr(C)]
pub struct Ipv4Hdr {
    pub vihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub proto: u8,
    pub check: u16,
    pub saddr: u32,
    pub daddr: u32,
}

/// TCP header (without options).
#[repr(C)]
pub struct TcpHdr {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack_seq: u32,
    /// Data offset in the high nibble.
    pub doff: u8,
    pub flags: u8,
    pub window: u16,
    pub check: u16,
    pub urg_ptr: u16,
}

/// ICMP header.
#[repr(C)]
pub struct IcmpHdr {
    pub kind: u8,
    pub code: u8,
    pub check: u16,
    pub rest: u32,
}

/// Sum of `N` 16-bit words starting at `p` (memory order), for Internet checksums.
///
/// Plain loads: the words of an IPv4 or TCP header lie at even offsets, so they are 2-byte
/// aligned (`read_unaligned` would make the BPF target load each word a byte at a time).
///
/// # Safety
/// `N` words must be readable at `p` (bounds-checked packet or map memory), `p` 2-byte aligned.
#[inline(always)]
pub unsafe fn sum_words<const N: usize>(p: *const u16) -> u32 {
    let mut sum = 0u32;
    for i in 0..N {
        // SAFETY: the caller guarantees N words are readable at p.
        sum += u32::from(unsafe { *p.add(i) });
    }
    sum
}

/// Returns a pointer to a `T` at `offset` if the whole `T` lies inside the packet.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

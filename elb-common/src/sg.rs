//! Security groups in the dataplane: per-listener allow lists of client address blocks, in an
//! LPM trie the program consults for SYNs to listeners flagged
//! [`LISTENER_F_SECURITY_GROUPS`]. The agent computes the lists from the ingress rules
//! (`elb_contract::security_group`); the program only looks up.
//!
//! Key layout (`Key<SgSource>` of the trie): the listener's VIP and port are always matched in
//! full ([`SG_FIXED_BITS`]), then the client address up to the rule's prefix length, so one
//! lookup with the client's full address finds whether any block of that listener holds it.

use crate::Ipv4;

/// Listener flag: new flows must come from an address the listener's allow list holds.
/// Without it the listener is open (no lookup at all).
pub const LISTENER_F_SECURITY_GROUPS: u32 = 1 << 2;

/// Most entries (listener x block) the allow-list trie holds.
pub const SG_ALLOW_ENTRIES: u32 = 65536;

/// Bits of [`SgSource`] before the client address: VIP, port and padding, always matched.
pub const SG_FIXED_BITS: u32 = 64;

/// The data of an allow-list key: which listener, and the client address (block).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SgSource {
    /// The listener's VIP.
    pub vip: Ipv4,
    /// The listener's port, host order (matched as a whole, so byte order does not matter).
    pub port: u16,
    /// Explicit padding, always zero.
    pub _pad: u16,
    /// The client address (block), network order.
    pub src: Ipv4,
}
const _: () = assert!(size_of::<SgSource>() == 12);

impl SgSource {
    /// The key data of a block on a listener (`src` in network order).
    #[inline(always)]
    pub const fn new(vip: Ipv4, port: u16, src: Ipv4) -> Self {
        Self {
            vip,
            port,
            _pad: 0,
            src,
        }
    }

    /// The trie prefix length of a block with `block_len` leading bits (0-32).
    #[inline(always)]
    pub const fn prefix_len(block_len: u8) -> u32 {
        SG_FIXED_BITS + block_len as u32
    }
}

/// The value of an allow-list entry (presence is what counts; the value is always this).
pub const SG_ALLOW: u32 = 1;

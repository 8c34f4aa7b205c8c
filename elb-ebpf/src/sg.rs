//! Security groups: whether a listener admits a new flow from a client address. One flag test
//! for open listeners; one LPM trie lookup for listeners with security groups. Called once per
//! SYN to a listener, before anything is allocated for the flow.

use aya_ebpf::btf_maps::lpm_trie::Key;
use elb_common::{
    FlowKey, Listener,
    sg::{LISTENER_F_SECURITY_GROUPS, SgSource},
};

use crate::maps::SG_ALLOW;

/// True if `listener` takes a new flow from the client of `key` (the packet's own tuple:
/// `dst:dport` is the listener, `src` the client).
#[inline(always)]
pub fn admits(listener: &Listener, key: &FlowKey) -> bool {
    if listener.flags & LISTENER_F_SECURITY_GROUPS == 0 {
        return true;
    }
    let probe = Key::new(
        SgSource::prefix_len(32),
        SgSource::new(key.dst, key.dport, key.src),
    );
    SG_ALLOW.get(&probe).is_some()
}

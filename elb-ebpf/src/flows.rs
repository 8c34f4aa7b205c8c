//! The flow table: an array of [`FlowSlot`]s found by a keyed hash computed inline (a few
//! multiplications; no helper call), with linear probing.
//!
//! - Lookups are lock-free: they compare keys in published slots and stop at an empty slot.
//! - Inserts hold the lock of their key's home block (32 slots), so a key is never inserted
//!   twice (two flows can never get the same SNAT tuple): check for the key, claim a free slot
//!   with compare-and-swap (an insert from the block before may want it too), write it,
//!   publish it.
//! - Deletes turn a slot into a tombstone with compare-and-swap on its identity; lookups go on
//!   past tombstones, inserts reuse them, the sweep turns them back into empty slots (under the
//!   locks) when no key's probe path crosses them.
//! - Every later change is a compare-and-swap on a [`FlowWord`] that carries the flow's
//!   identity: a slot may be deleted and reused while a packet of its old flow is in flight
//!   (nothing waits for readers), and such a write then fails instead of landing in the new
//!   flow. Readers re-check the identity after reading a slot's fields.

use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd, atomic_xchg};

use elb_common::{
    FLOW_F_CLAIM, FLOW_F_TOMB, FLOW_LOCK_SLOTS, FLOW_PROBES, FlowKey, FlowSlot, FlowWord,
    flow_lock, hash,
};

use crate::maps::{CONNTRACK, CONNTRACK_LOCKS, META};

/// Compare-and-swap of a 64-bit word; true if it swapped.
#[inline(always)]
pub fn cas64(p: *mut u64, old: u64, new: u64) -> bool {
    // SAFETY: callers pass pointers into live map values. SeqCst: a full barrier (see
    // toolchain.md: weaker orderings miscompile on bpfel).
    unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(p, old, new).1
    }
}

/// Atomic add; returns the previous value.
#[inline(always)]
pub fn fetch_add(p: *mut u64, v: u64) -> u64 {
    // SAFETY: as `cas64`.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(p, v) }
}

/// Atomic add on a 32-bit word; returns the previous value.
#[inline(always)]
pub fn fetch_add32(p: *mut u32, v: u32) -> u32 {
    // SAFETY: as `cas64`.
    unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::SeqCst }>(p, v) }
}

/// A volatile load of a 64-bit word (another CPU may change it at any time).
#[inline(always)]
pub fn load64(p: *const u64) -> u64 {
    // SAFETY: callers pass pointers into live map values.
    unsafe { core::ptr::read_volatile(p) }
}

/// Reads a flow word.
#[inline(always)]
pub fn word(w: *const FlowWord) -> FlowWord {
    FlowWord::unpack(load64(w.cast()))
}

/// Sets `bits` in the value of word `w` if it still belongs to flow `ident`. Returns the value
/// after the change, or `None` if the slot now holds another flow (or contention lasted).
#[inline(always)]
pub fn word_or(w: *mut FlowWord, ident: u32, bits: u32) -> Option<u32> {
    for _ in 0..8 {
        let raw = load64(w.cast());
        let cur = FlowWord::unpack(raw);
        if cur.ident != ident {
            return None;
        }
        if cur.value & bits == bits {
            return Some(cur.value);
        }
        let value = cur.value | bits;
        if cas64(w.cast(), raw, FlowWord { ident, value }.pack()) {
            return Some(value);
        }
    }
    None
}

/// Clears `bits` in the value of word `w` if it still belongs to flow `ident`.
#[inline(always)]
pub fn word_clear(w: *mut FlowWord, ident: u32, bits: u32) -> Option<u32> {
    for _ in 0..8 {
        let raw = load64(w.cast());
        let cur = FlowWord::unpack(raw);
        if cur.ident != ident {
            return None;
        }
        let value = cur.value & !bits;
        if value == cur.value || cas64(w.cast(), raw, FlowWord { ident, value }.pack()) {
            return Some(value);
        }
    }
    None
}

/// Stores `value` in word `w` if it still belongs to flow `ident` (whatever it held).
#[inline(always)]
pub fn word_store(w: *mut FlowWord, ident: u32, value: u32) -> bool {
    let raw = load64(w.cast());
    FlowWord::unpack(raw).ident == ident && cas64(w.cast(), raw, FlowWord { ident, value }.pack())
}

/// The table's size and hash key (from `meta`).
#[derive(Clone, Copy)]
pub struct Table {
    mask: u32,
    seed: [u64; 2],
}

/// A live slot found by a lookup, with its state as read.
#[derive(Clone, Copy)]
pub struct Found {
    /// The slot.
    pub slot: *mut FlowSlot,
    /// Its index in the table.
    pub index: u32,
    /// Its state word when it was matched.
    pub state: FlowWord,
}

impl Found {
    /// The flow's identity.
    #[inline(always)]
    pub fn ident(&self) -> u32 {
        self.state.ident
    }

    /// Its flags when it was matched.
    #[inline(always)]
    pub fn flags(&self) -> u32 {
        self.state.value
    }

    /// True if the slot still holds this flow (call after reading its fields: a slot can be
    /// reused while it is read).
    #[inline(always)]
    pub fn still_valid(&self) -> bool {
        // SAFETY: a pointer into the flow table array.
        word(unsafe { &raw const (*self.slot).state }).ident == self.state.ident
    }

    /// Pointer to one of the slot's words.
    #[inline(always)]
    pub fn state_word(&self) -> *mut FlowWord {
        // SAFETY: a pointer into the flow table array.
        unsafe { &raw mut (*self.slot).state }
    }
}

/// `elb_flow_insert`'s answer when the key is in the table already.
pub const INSERT_EXISTS: i64 = -1;
/// `elb_flow_insert`'s answer when the key's probe window has no free slot, or its lock stayed
/// busy.
pub const INSERT_FULL: i64 = -2;
/// One scan's answer when the free slot it found was claimed by another insert meanwhile (a
/// plain integer, not an enum: the verifier refuses copies of an enum's unset payload).
const INSERT_CLAIMED: i64 = -3;

impl Table {
    /// No table (a placeholder before `get`).
    pub const EMPTY: Self = Self {
        mask: 0,
        seed: [0, 0],
    };

    /// The table described by `meta` (None only if the maps were never initialised).
    #[inline(always)]
    pub fn get() -> Option<Self> {
        let meta = META.get(0)?;
        if meta.conntrack_entries < FLOW_LOCK_SLOTS {
            return None;
        }
        Some(Self {
            mask: meta.conntrack_entries - 1,
            seed: meta.flow_seed,
        })
    }

    #[inline(always)]
    fn home(&self, key: &FlowKey) -> u32 {
        hash::flow_hash(self.seed, key) as u32 & self.mask
    }

    /// Finds the live slot of `key`.
    #[inline(always)]
    pub fn lookup(&self, key: &FlowKey) -> Option<Found> {
        let words = hash::key_words(key);
        let home = self.home(key);
        for i in 0..FLOW_PROBES {
            let index = home.wrapping_add(i) & self.mask;
            let slot = CONNTRACK.get_ptr_mut(index)?;
            // SAFETY: a pointer into the flow table array.
            let state = word(unsafe { &raw const (*slot).state });
            if state.ident == 0 && state.value == 0 {
                return None;
            }
            if state.value & (FLOW_F_CLAIM | FLOW_F_TOMB) != 0 {
                continue;
            }
            let k = slot.cast::<u64>();
            // SAFETY: the key is the first 16 bytes of the (8-aligned) slot.
            if unsafe { *k == words[0] && *k.add(1) == words[1] } {
                return Some(Found { slot, index, state });
            }
        }
        None
    }

    /// Starts reading both cache lines of `key`'s home slot and returns at once (the CPU goes
    /// on while the lines arrive): a hint for a lookup or insert that will follow.
    #[inline(always)]
    pub fn touch(&self, key: &FlowKey) {
        if let Some(slot) = CONNTRACK.get_ptr(self.home(key)) {
            let w = slot.cast::<u64>();
            // SAFETY: a pointer into the flow table array; volatile so that the loads happen.
            unsafe {
                core::ptr::read_volatile(w.add(2));
                core::ptr::read_volatile(w.add(8));
            }
        }
    }

    /// Finds the live slot of `key` through the global function `elb_flow_find` (for the rare
    /// lookups off the fast path: the verifier checks the probe loop once).
    #[inline(always)]
    pub fn find(&self, key: &FlowKey) -> Option<Found> {
        let index = elb_flow_find(key);
        if index < 0 {
            return None;
        }
        let index = index as u32;
        let slot = CONNTRACK.get_ptr_mut(index)?;
        // SAFETY: a pointer into the flow table array.
        let state = word(unsafe { &raw const (*slot).state });
        (state.ident != 0 && state.value & (FLOW_F_CLAIM | FLOW_F_TOMB) == 0).then_some(Found {
            slot,
            index,
            state,
        })
    }

    #[inline(always)]
    fn insert_impl(&self, init: &FlowSlot) -> i64 {
        let home = self.home(&init.key);
        // One lock: every insert of a key takes its home block's lock, so a key is never
        // inserted twice; inserts of keys from the block before may race for a free slot in
        // this one, and the claim's compare-and-swap settles that. (The sweep's compaction of
        // a block holds the locks of the block and the one before: no insert whose probe path
        // crosses it runs meanwhile.)
        let Some(l) = lock(flow_lock(home >> FLOW_LOCK_SLOTS.trailing_zeros())) else {
            return INSERT_FULL;
        };
        let mut result = self.insert_locked(home, init);
        if result == INSERT_CLAIMED {
            // Another block's insert claimed the free slot first: scan once more.
            result = self.insert_locked(home, init);
        }
        unlock(l);
        if result == INSERT_CLAIMED {
            INSERT_FULL
        } else {
            result
        }
    }

    #[inline(always)]
    fn insert_locked(&self, home: u32, init: &FlowSlot) -> i64 {
        let words = hash::key_words(&init.key);
        let mut free: Option<(*mut FlowSlot, u32, u64)> = None;
        for i in 0..FLOW_PROBES {
            let index = home.wrapping_add(i) & self.mask;
            let Some(slot) = CONNTRACK.get_ptr_mut(index) else {
                return INSERT_FULL;
            };
            // SAFETY: a pointer into the flow table array.
            let raw = load64(unsafe { &raw const (*slot).state }.cast());
            let state = FlowWord::unpack(raw);
            let empty = state.ident == 0 && state.value == 0;
            if empty || state.value & FLOW_F_TOMB != 0 {
                if free.is_none() {
                    free = Some((slot, index, raw));
                }
                if empty {
                    break;
                }
                continue;
            }
            if state.value & FLOW_F_CLAIM != 0 {
                // An insert in progress of a key from the block before (its fields may still
                // be the old ones): never ours, since inserts of our key hold our lock.
                continue;
            }
            let k = slot.cast::<u64>();
            // SAFETY: the key is the first 16 bytes of the slot.
            if unsafe { *k == words[0] && *k.add(1) == words[1] } {
                return INSERT_EXISTS;
            }
        }
        let Some((slot, index, raw)) = free else {
            return INSERT_FULL;
        };
        let ident = init.state.ident;
        let claim = FlowWord {
            ident,
            value: FLOW_F_CLAIM,
        };
        // The sweep may turn a tombstone into an empty slot meanwhile (it takes the locks to
        // compact, but tombstones lock-free): claim only what was seen.
        // SAFETY: a pointer into the flow table array.
        if !cas64(unsafe { &raw mut (*slot).state }.cast(), raw, claim.pack()) {
            return INSERT_CLAIMED;
        }
        // SAFETY: the slot is claimed: only this insert writes it, no lookup matches it. Copied
        // as words (the BPF stack is too small for a slot-sized temporary).
        unsafe {
            let dst = slot.cast::<u64>();
            let src = (init as *const FlowSlot).cast::<u64>();
            for i in 0..16 {
                if i != 2 {
                    *dst.add(i) = *src.add(i);
                }
            }
            // Publish last, with a full barrier: a lookup that sees the state sees the fields.
            atomic_xchg::<u64, { AtomicOrdering::SeqCst }>(
                (&raw mut (*slot).state).cast(),
                init.state.pack(),
            );
        }
        i64::from(index)
    }
}

/// Fills `slot` (scratch memory) with zeros.
#[inline(always)]
pub fn clear(slot: *mut FlowSlot) {
    let w = slot.cast::<u64>();
    for i in 0..16 {
        // SAFETY: the caller passes a pointer to a whole slot. Volatile: otherwise LLVM turns
        // the loop into a `memset` call, which the BPF target runs a byte at a time.
        unsafe { core::ptr::write_volatile(w.add(i), 0) };
    }
}

/// The slot index of `key`, or -1. A global BPF function: the verifier checks its probe loop
/// once, not at every call site.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn elb_flow_find(key: *const FlowKey) -> i64 {
    let Some(table) = Table::get() else {
        return -1;
    };
    if key.is_null() {
        return -1;
    }
    // SAFETY: not null, and the verifier checks that callers pass a readable FlowKey.
    let key = unsafe { &*key };
    table.lookup(key).map_or(-1, |found| i64::from(found.index))
}

/// Inserts the slot `init` describes: returns its index, -1 if the key exists, -2 if there is
/// no room. A global BPF function (checked once by the verifier).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn elb_flow_insert(init: *const FlowSlot) -> i64 {
    let Some(table) = Table::get() else {
        return INSERT_FULL;
    };
    if init.is_null() {
        return INSERT_FULL;
    }
    // SAFETY: not null, and the verifier checks that callers pass a readable FlowSlot.
    let init = unsafe { &*init };
    table.insert_impl(init)
}

/// Deletes a found flow half (turns it into a tombstone) if it still holds that flow.
#[inline(always)]
pub fn remove(found: &Found) -> bool {
    let tomb = FlowWord {
        ident: 0,
        value: FLOW_F_TOMB,
    }
    .pack();
    for _ in 0..4 {
        let raw = load64(found.state_word().cast());
        if FlowWord::unpack(raw).ident != found.ident() {
            return false;
        }
        if cas64(found.state_word().cast(), raw, tomb) {
            return true;
        }
    }
    false
}

/// Tries [`lock`] makes before giving up (the insert then fails as if the window were full).
/// A holder keeps a lock for one insert, which may wait for a slot's cache line: with two CPUs
/// opening flows at once (the benchmark's `new_flow_2cpu`), 8 tries gave up on 36 of 100,000
/// new flows, 64 on 1 (which may also have been a claim lost twice).
const LOCK_SPINS: u32 = 64;

/// Takes insert lock `index` (see `elb_common::flow_lock`); spins a bounded number of times.
#[inline(always)]
fn lock(index: u32) -> Option<*mut u32> {
    let l = CONNTRACK_LOCKS.get_ptr_mut(index)?;
    for _ in 0..LOCK_SPINS {
        // SAFETY: a pointer into the lock array.
        let (_, ok) = unsafe {
            atomic_cxchg::<u32, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(l, 0, 1)
        };
        if ok {
            return Some(l);
        }
    }
    None
}

#[inline(always)]
fn unlock(l: *mut u32) {
    // SAFETY: a pointer into the lock array, held by us.
    unsafe { atomic_xchg::<u32, { AtomicOrdering::SeqCst }>(l, 0) };
}

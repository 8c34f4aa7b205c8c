//! Per-CPU copies of what every SYN reads from hash maps: its listener, the start of the
//! listener's backend set, and the SNAT addresses of the backend's interface. A hash map lookup
//! costs about 40 ns here (a helper call, jhash, a bucket walk); reading a copy in this CPU's
//! scratch entry costs a compare.
//!
//! A copy is trusted only while `Meta::maps_generation` is the one it was made at; the agent
//! writes a fresh random generation after every change to `listeners`, `backend_sets` or
//! `snat_addrs` (`Maps::changed`). The generation is read before the maps, so a copy made from
//! a map read before a change carries the old generation, and no CPU uses it once the new one
//! is written. Between the change and that write, a SYN is treated as if it had come a moment
//! earlier, as it could have.

use core::ptr::read_volatile;

use elb_common::{Ipv4, Listener, ListenerKey, MAX_SET_BACKENDS, MAX_SNAT_ADDRS, SnatAddrs};

use crate::{
    maps::{
        BACKEND_SETS, LISTENER_COPIES, LISTENERS, ListenerCopy, META, SCRATCH, SET_COPY, SNAT_ADDRS,
    },
    syn::verifier_bound,
};

/// A listener, with where this CPU's current copy of it is.
#[derive(Clone, Copy)]
pub struct Found {
    pub listener: Listener,
    /// The copy (null: none, the maps were read).
    pub copy: *const ListenerCopy,
}

/// The current generation (0: none, copies are not used).
#[inline(always)]
fn generation() -> u64 {
    // SAFETY: map value; a word the agent replaces whole.
    META.get(0).map_or(0, |m| unsafe {
        read_volatile(&raw const m.maps_generation)
    })
}

/// Where this CPU keeps its copy of the listener at `key` (null: no scratch entry).
#[inline(always)]
fn place(key: &ListenerKey) -> *mut ListenerCopy {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return core::ptr::null_mut();
    };
    let i = (u32::from_ne_bytes(key.vip) ^ u32::from(key.port)) as usize & (LISTENER_COPIES - 1);
    // SAFETY: this CPU's scratch entry; `i` is masked.
    unsafe { &raw mut (*scratch).listeners[i] }
}

/// This CPU's copy of the listener at `key` if it is current, else null.
#[inline(always)]
pub fn current(key: &ListenerKey) -> *const ListenerCopy {
    let (generation, copy) = (generation(), place(key));
    // SAFETY: this CPU's scratch entry; only this CPU's program writes it.
    if generation != 0
        && !copy.is_null()
        && unsafe { (*copy).generation == generation && (*copy).key == *key }
    {
        copy
    } else {
        core::ptr::null()
    }
}

/// The listener at `key`, from this CPU's copy when it is current, else from the map (and the
/// copy is made).
#[inline(always)]
pub fn listener(key: &ListenerKey) -> Option<Found> {
    let (generation, copy) = (generation(), place(key));
    // SAFETY: this CPU's scratch entry; only this CPU's program writes it.
    unsafe {
        if generation != 0
            && !copy.is_null()
            && (*copy).generation == generation
            && (*copy).key == *key
        {
            return Some(Found {
                listener: (*copy).listener,
                copy,
            });
        }
    }
    // SAFETY: map value, read-only.
    let listener = *unsafe { LISTENERS.get(key) }?;
    if generation == 0 || copy.is_null() {
        return Some(Found {
            listener,
            copy: core::ptr::null(),
        });
    }
    // SAFETY: map value, read-only (an update swaps the whole element).
    let set = unsafe { BACKEND_SETS.get(listener.id) };
    // SAFETY: this CPU's scratch entry.
    unsafe {
        (*copy).key = *key;
        (*copy).listener = listener;
        match set {
            Some(set) if set.count as usize <= SET_COPY => {
                (*copy).set_count = set.count;
                (*copy).set_whole = 1;
                (*copy).set = *(&raw const set.backends).cast::<[u32; SET_COPY]>();
            }
            _ => {
                (*copy).set_count = 0;
                (*copy).set_whole = 0;
            }
        }
        (*copy).generation = generation;
    }
    Some(Found { listener, copy })
}

/// Backend id of round-robin turn `cursor` of listener `listener_id`, from `copy` (this CPU's
/// current copy of it, or null) when it holds the whole set (None: the set is empty or
/// missing).
#[inline(always)]
pub fn backend_of_turn(listener_id: u32, copy: *const ListenerCopy, cursor: u64) -> Option<u32> {
    // SAFETY: this CPU's scratch entry, current in this run.
    if !copy.is_null() && unsafe { (*copy).set_whole } == 1 {
        let count = u64::from(unsafe { (*copy).set_count });
        if count == 0 {
            return None;
        }
        // SAFETY: as above; the index is masked (count <= SET_COPY, a power of two).
        return Some(unsafe {
            (*copy).set[verifier_bound((cursor % count) as usize, SET_COPY - 1)]
        });
    }
    // SAFETY: map value, read-only (an update swaps the whole element).
    let set = unsafe { BACKEND_SETS.get(listener_id) }?;
    let count = u64::from(set.count);
    if count == 0 || count > MAX_SET_BACKENDS as u64 {
        return None;
    }
    // The index is below count <= MAX_SET_BACKENDS (a power of two): the mask is for the
    // verifier, which does not derive bounds from a modulo.
    Some(set.backends[verifier_bound((cursor % count) as usize, MAX_SET_BACKENDS - 1)])
}

/// SNAT address number `pick` (modulo their count) of interface `ifindex`, from this CPU's
/// copy when it is current, else from the map (and the copy is made); None: it has none.
#[inline(always)]
pub fn snat_addr(ifindex: u32, pick: u32) -> Option<Ipv4> {
    let generation = generation();
    let addrs: *const SnatAddrs = match SCRATCH.get_ptr_mut(0) {
        Some(scratch) if generation != 0 => {
            // SAFETY: this CPU's scratch entry; only this CPU's program writes it.
            unsafe {
                let copy = &raw mut (*scratch).snat;
                if (*copy).generation != generation || (*copy).ifindex != ifindex {
                    // SAFETY: map value, read-only (an update swaps the whole element).
                    (*copy).addrs = *SNAT_ADDRS.get(ifindex)?;
                    (*copy).ifindex = ifindex;
                    (*copy).generation = generation;
                }
                &raw const (*copy).addrs
            }
        }
        // SAFETY: map value, read-only.
        _ => unsafe { SNAT_ADDRS.get(ifindex) }?,
    };
    // SAFETY: a map value or this CPU's copy of one.
    let n = unsafe { (*addrs).count };
    if n == 0 || n > MAX_SNAT_ADDRS as u32 {
        return None;
    }
    // SAFETY: as above; the index is masked (n <= MAX_SNAT_ADDRS, a power of two).
    Some(unsafe { (*addrs).addrs[verifier_bound((pick % n) as usize, MAX_SNAT_ADDRS - 1)] })
}

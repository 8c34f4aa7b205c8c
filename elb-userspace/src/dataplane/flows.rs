//! The flow table from userspace: the `conntrack` and `conntrack_locks` arrays memory-mapped,
//! read directly and changed with the same compare-and-swap operations as the XDP program
//! (see `elb-ebpf/src/flows.rs` for the algorithm), so the sweep never overwrites a flow's
//! state behind the program's back and reads a million flows in milliseconds, not syscalls.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
};

use aya::maps::MapData;
use elb_common::{
    FLOW_F_CLAIM, FLOW_F_TOMB, FLOW_LOCK_SLOTS, FLOW_LOCK_STRIPES, FLOW_PROBES, FlowKey, FlowSlot,
    FlowWord, Meta, flow_lock, hash, map_names,
};

use super::DataplaneError;

/// A memory mapping of a BPF array map, unmapped on drop.
struct Mapping {
    addr: *mut libc::c_void,
    len: usize,
    _map: MapData,
}

// SAFETY: the mapping is plain shared memory; all concurrent access goes through atomics or
// copies that tolerate concurrent writers (checked by identity afterwards).
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn open(root: &Path, name: &'static str, value_size: usize) -> Result<Self, DataplaneError> {
        let path = root.join(name);
        let map = MapData::from_pin(&path).map_err(|source| DataplaneError::OpenPin {
            path: path.clone(),
            source,
        })?;
        let info = map.info().map_err(|source| DataplaneError::OpenPin {
            path: path.clone(),
            source,
        })?;
        if info.value_size() as usize != value_size {
            return Err(DataplaneError::IncompatiblePins {
                path,
                detail: format!(
                    "value size {}, this build expects {value_size}",
                    info.value_size()
                ),
            });
        }
        let page = 4096usize;
        let len = (info.max_entries() as usize * value_size).next_multiple_of(page);
        // SAFETY: mapping a BPF_F_MMAPABLE array map's fd, shared, of its own size.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(DataplaneError::Syscall {
                what: "mmap of a flow table map",
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Self {
            addr,
            len,
            _map: map,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping what `open` mapped.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

/// Why an insert did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// The key is in the table already.
    Exists,
    /// No free slot in the key's probe window, or its locks stayed busy.
    Full,
}

/// The flow table, mapped.
pub struct FlowTable {
    slots: Mapping,
    locks: Mapping,
    n: usize,
    seed: [u64; 2],
}

impl std::fmt::Debug for FlowTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTable")
            .field("slots", &self.n)
            .finish_non_exhaustive()
    }
}

/// Which word of a slot.
#[derive(Clone, Copy, Debug)]
pub enum Word {
    /// `state` (identity and flags).
    State,
    /// `seen` (last packet, jiffies).
    Seen,
}

impl FlowTable {
    /// Maps the flow table pinned under `root`, created with `meta`.
    pub fn open(root: &Path, meta: &Meta) -> Result<Self, DataplaneError> {
        let slots = Mapping::open(root, map_names::CONNTRACK, size_of::<FlowSlot>())?;
        let locks = Mapping::open(root, map_names::CONNTRACK_LOCKS, 4)?;
        let n = meta.conntrack_entries as usize;
        if !n.is_power_of_two()
            || n * size_of::<FlowSlot>() > slots.len
            || FLOW_LOCK_STRIPES as usize * 4 > locks.len
        {
            return Err(DataplaneError::IncompatiblePins {
                path: root.join(map_names::CONNTRACK),
                detail: format!("meta says {n} slots, the maps do not match"),
            });
        }
        Ok(Self {
            slots,
            locks,
            n,
            seed: meta.flow_seed,
        })
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True if the table has no slots (never: tables have at least 32).
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    fn slot(&self, i: usize) -> *mut FlowSlot {
        // SAFETY: callers pass i < n; the mapping holds n slots.
        unsafe { self.slots.addr.cast::<FlowSlot>().add(i & (self.n - 1)) }
    }

    fn word(&self, i: usize, w: Word) -> &AtomicU64 {
        let s = self.slot(i);
        // SAFETY: 8-aligned u64 fields of a mapped slot, only ever accessed atomically.
        unsafe {
            AtomicU64::from_ptr(match w {
                Word::State => (&raw mut (*s).state).cast(),
                Word::Seen => (&raw mut (*s).seen).cast(),
            })
        }
    }

    /// The state word of slot `i`.
    pub fn state(&self, i: usize) -> FlowWord {
        FlowWord::unpack(self.word(i, Word::State).load(Ordering::Acquire))
    }

    /// A consistent copy of slot `i` if it holds a flow half (its identity did not change
    /// while it was copied).
    pub fn read(&self, i: usize) -> Option<FlowSlot> {
        let before = self.state(i);
        if before.ident == 0 || before.value & (FLOW_F_CLAIM | FLOW_F_TOMB) != 0 {
            return None;
        }
        // SAFETY: a plain copy of mapped memory; torn copies are detected below.
        let copy = unsafe { std::ptr::read_volatile(self.slot(i)) };
        let after = self.state(i);
        (after.ident == before.ident && copy.state.ident == before.ident).then_some(copy)
    }

    /// Every live flow half, with its slot index.
    pub fn live(&self) -> Vec<(usize, FlowSlot)> {
        (0..self.n)
            .filter_map(|i| self.read(i).map(|s| (i, s)))
            .collect()
    }

    /// The live slot holding `key`.
    pub fn lookup(&self, key: &FlowKey) -> Option<(usize, FlowSlot)> {
        let home = hash::flow_hash(self.seed, key) as usize;
        for p in 0..FLOW_PROBES as usize {
            let i = (home + p) & (self.n - 1);
            let st = self.state(i);
            if st.ident == 0 && st.value == 0 {
                return None;
            }
            if let Some(s) = self.read(i)
                && s.key == *key
            {
                return Some((i, s));
            }
        }
        None
    }

    /// Compare-and-swap of word `w` of slot `i`: from `old` to `new` (identity included).
    pub fn cas(&self, i: usize, w: Word, old: FlowWord, new: FlowWord) -> bool {
        self.word(i, w)
            .compare_exchange(old.pack(), new.pack(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Sets `bits` in the flags of slot `i` if it still holds flow `ident`.
    pub fn set_flags(&self, i: usize, ident: u32, bits: u32) -> bool {
        for _ in 0..64 {
            let cur = self.state(i);
            if cur.ident != ident {
                return false;
            }
            let new = FlowWord {
                ident,
                value: cur.value | bits,
            };
            if self.cas(i, Word::State, cur, new) {
                return true;
            }
        }
        false
    }

    /// Stores `value` in the `seen` word of slot `i` if it still holds flow `ident`.
    pub fn set_seen(&self, i: usize, ident: u32, value: u32) -> bool {
        for _ in 0..64 {
            let cur = FlowWord::unpack(self.word(i, Word::Seen).load(Ordering::Acquire));
            if cur.ident != ident {
                return false;
            }
            if self.cas(i, Word::Seen, cur, FlowWord { ident, value }) {
                return true;
            }
        }
        false
    }

    /// Deletes the flow half in slot `i` if it still holds flow `ident` (and still has the
    /// key `key`: a slot's identity is shared by both halves of a flow).
    pub fn remove(&self, i: usize, ident: u32) -> bool {
        let tomb = FlowWord {
            ident: 0,
            value: FLOW_F_TOMB,
        };
        for _ in 0..64 {
            let cur = self.state(i);
            if cur.ident != ident || cur.value & (FLOW_F_CLAIM | FLOW_F_TOMB) != 0 {
                return false;
            }
            if self.cas(i, Word::State, cur, tomb) {
                return true;
            }
        }
        false
    }

    /// Lock `index` (see `elb_common::flow_lock`).
    fn lock(&self, index: u32) -> &AtomicU32 {
        // SAFETY: a u32 of the mapped lock array (`open` checked its size), only ever accessed
        // atomically.
        unsafe {
            AtomicU32::from_ptr(
                self.locks
                    .addr
                    .cast::<u32>()
                    .add((index % FLOW_LOCK_STRIPES) as usize),
            )
        }
    }

    /// Runs `f` holding the locks of blocks `a` and `b` (taken in lock order; one lock if
    /// they share it). Gives up (None) if a lock stays busy for about a millisecond.
    fn locked<T>(&self, a: usize, b: usize, f: impl FnOnce() -> T) -> Option<T> {
        let (a, b) = (flow_lock(a as u32), flow_lock(b as u32));
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let take = |l: &AtomicU32| {
            for _ in 0..10_000 {
                if l.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return true;
                }
                std::hint::spin_loop();
            }
            false
        };
        if !take(self.lock(lo)) {
            return None;
        }
        if hi != lo && !take(self.lock(hi)) {
            self.lock(lo).store(0, Ordering::Release);
            return None;
        }
        let out = f();
        if hi != lo {
            self.lock(hi).store(0, Ordering::Release);
        }
        self.lock(lo).store(0, Ordering::Release);
        Some(out)
    }

    /// Inserts a flow half (its `state` holding identity and flags), as the program does: under
    /// the lock of the key's home block, scanning again if an insert from the block before
    /// claimed the free slot first. For tests and benchmarks that prepare flows; the agent
    /// never inserts.
    pub fn insert(&self, slot: &FlowSlot) -> Result<usize, InsertError> {
        let home = hash::flow_hash(self.seed, &slot.key) as usize & (self.n - 1);
        let block = home / FLOW_LOCK_SLOTS as usize;
        self.locked(block, block, || {
            for _ in 0..2 {
                if let Some(result) = self.insert_locked(home, slot) {
                    return result;
                }
            }
            Err(InsertError::Full)
        })
        .unwrap_or(Err(InsertError::Full))
    }

    /// One scan of [`Self::insert`]; None if the free slot it found was claimed meanwhile.
    fn insert_locked(&self, home: usize, slot: &FlowSlot) -> Option<Result<usize, InsertError>> {
        let mut free = None;
        for p in 0..FLOW_PROBES as usize {
            let i = (home + p) & (self.n - 1);
            let st = self.state(i);
            let empty = st.ident == 0 && st.value == 0;
            if empty || st.value & FLOW_F_TOMB != 0 {
                free.get_or_insert((i, st));
                if empty {
                    break;
                }
                continue;
            }
            if st.value & FLOW_F_CLAIM != 0 {
                // Another block's insert in progress: never this key (we hold its lock).
                continue;
            }
            // SAFETY: a copy of mapped memory.
            let key = unsafe { std::ptr::read_volatile(&raw const (*self.slot(i)).key) };
            if key == slot.key {
                return Some(Err(InsertError::Exists));
            }
        }
        let Some((i, seen)) = free else {
            return Some(Err(InsertError::Full));
        };
        let claim = FlowWord {
            ident: slot.state.ident,
            value: FLOW_F_CLAIM,
        };
        if !self.cas(i, Word::State, seen, claim) {
            return None;
        }
        // SAFETY: the slot is claimed: no lookup matches it and no other insert takes it.
        unsafe {
            std::ptr::write_volatile(
                self.slot(i),
                FlowSlot {
                    state: claim,
                    ..*slot
                },
            );
        }
        self.word(i, Word::State)
            .store(slot.state.pack(), Ordering::Release);
        Some(Ok(i))
    }

    /// Turns tombstones back into empty slots where no live key's probe path crosses them
    /// (lookups stop at empty slots, so a crossed tombstone must stay). Runs block by block
    /// under the insert locks. Returns how many slots were emptied.
    pub fn compact(&self) -> usize {
        let block = FLOW_LOCK_SLOTS as usize;
        let nblocks = self.n / block;
        let mut emptied = 0;
        for b in 0..nblocks {
            // Cheap pre-check without locks: any tombstone in this block?
            if !(b * block..(b + 1) * block).any(|i| self.state(i).value & FLOW_F_TOMB != 0) {
                continue;
            }
            // Keys whose probe path reaches into this block start at most FLOW_PROBES - 1
            // slots before it: lock the previous block too.
            let prev = (b + nblocks - 1) % nblocks;
            emptied += self
                .locked(prev, b, || self.compact_block(b * block))
                .unwrap_or(0);
        }
        emptied
    }

    /// Empties the tombstones of the block starting at `start` that no live key's path crosses.
    fn compact_block(&self, start: usize) -> usize {
        let block = FLOW_LOCK_SLOTS as usize;
        let probes = FLOW_PROBES as usize;
        let mask = self.n - 1;
        // crossed[k]: slot start + k lies on some live key's path before that key's slot.
        let mut crossed = [false; FLOW_LOCK_SLOTS as usize];
        // Live keys sit in [start - probes + 1, start + block + probes - 1]; only those whose
        // path crosses this block matter.
        for d in 0..block + 2 * probes {
            let i = (start + self.n + d - probes) & mask;
            let st = self.state(i);
            if st.ident == 0 && st.value == 0 || st.value & FLOW_F_TOMB != 0 {
                continue;
            }
            if st.value & FLOW_F_CLAIM != 0 {
                // An insert in progress: with this block's and the previous block's locks held,
                // it belongs to a key whose path does not cross this block.
                continue;
            }
            // SAFETY: a copy of mapped memory.
            let key = unsafe { std::ptr::read_volatile(&raw const (*self.slot(i)).key) };
            let home = hash::flow_hash(self.seed, &key) as usize & mask;
            // Walk from home to i (exclusive), marking slots of this block.
            let dist = (i + self.n - home) & mask;
            for step in 0..dist.min(probes) {
                let j = (home + step) & mask;
                let k = (j + self.n - start) & mask;
                if k < block {
                    crossed[k] = true;
                }
            }
        }
        let mut emptied = 0;
        for (k, cross) in crossed.iter().enumerate() {
            let i = start + k;
            let st = self.state(i);
            if !cross
                && st.value & FLOW_F_TOMB != 0
                && self.cas(i, Word::State, st, FlowWord::default())
            {
                emptied += 1;
            }
        }
        emptied
    }
}

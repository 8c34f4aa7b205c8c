//! The per-packet timing harness: `bench_ring` (from the benchmark object) writes a fresh frame
//! into the test buffer at every iteration of a `BPF_PROG_TEST_RUN` loop and tail-calls the
//! program under test, or the floor, through the same path.
//!
//! Why: the kernel runs `repeat` iterations on one buffer, so a program that rewrites its packet
//! would see its own output at the next iteration, and a single frame repeated a million times
//! keeps every cache hot. Each iteration here is the next flow of a ring of distinct flows (or,
//! in SYN mode, a flow never seen before), and every timed loop is checked: its verdict and the
//! program's counters must show that each iteration did the work it is credited with.

use anyhow::{Context as _, ensure};
use aya::{
    Ebpf,
    maps::{Array, PerCpuArray, PerCpuValues, ProgramArray},
    programs::{TestRun as _, TestRunOptions, Xdp},
};
use elb_common::{RING_FRAME_MAX, RING_MAX, RING_MODE_RING, RING_MODE_SYN, RingFrame, RingState};

use crate::{
    fixture::{Fixture, xdp_md},
    progs,
};

/// `ring_targets` slot of the floor.
pub const FLOOR: u32 = 0;
/// `ring_targets` slot of the program under test.
pub const UNDER_TEST: u32 = 1;
/// `ring_targets` slot of the floor plus one flow-table read (`progs::FLOOR_LOOKUP`).
pub const FLOOR_LOOKUP: u32 = 2;

/// The harness, loaded beside a fixture's dataplane.
pub struct Ring {
    ebpf: Ebpf,
    /// Length of the frames currently in the ring (the test buffer's size).
    frame_len: usize,
    len: u32,
    mode: u32,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("len", &self.len)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// Pads a frame to a multiple of 8 bytes (Ethernet padding after the IP packet).
fn padded(frame: &[u8]) -> anyhow::Result<RingFrame> {
    let len = frame.len().next_multiple_of(8);
    ensure!(
        len <= RING_FRAME_MAX,
        "ring frames are at most {RING_FRAME_MAX} bytes"
    );
    let mut out = RingFrame {
        len: len as u32,
        _pad: 0,
        frame: [0; RING_FRAME_MAX],
    };
    out.frame[..frame.len()].copy_from_slice(frame);
    Ok(out)
}

impl Ring {
    /// Loads the harness and the floor, and makes `program` (the fixture's `elb`) the program
    /// under test.
    pub fn new(program: &Xdp) -> anyhow::Result<Self> {
        Self::with_table(program, 1024)
    }

    /// [`Ring::new`], with the [`FLOOR_LOOKUP`] target reading a table of `slots` flow slots
    /// (the flow table's size).
    pub fn with_table(program: &Xdp, slots: u32) -> anyhow::Result<Self> {
        let mut ebpf =
            progs::load_with_table(&[progs::RING, progs::FLOOR, progs::FLOOR_LOOKUP], slots)?;
        let mut mask: Array<_, u32> = ebpf
            .map_mut("floor_mask")
            .context("floor_mask map")?
            .try_into()?;
        mask.set(0, slots - 1, 0)?;
        let lookup_fd = progs::program(&ebpf, progs::FLOOR_LOOKUP)?
            .fd()?
            .try_clone()?;
        let floor_fd = progs::program(&ebpf, progs::FLOOR)?.fd()?.try_clone()?;
        let under_test_fd = program.fd()?.try_clone()?;
        let mut targets: ProgramArray<_> = ebpf
            .map_mut("ring_targets")
            .context("ring_targets map")?
            .try_into()?;
        targets.set(FLOOR, &floor_fd, 0)?;
        targets.set(UNDER_TEST, &under_test_fd, 0)?;
        targets.set(FLOOR_LOOKUP, &lookup_fd, 0)?;
        Ok(Self {
            ebpf,
            frame_len: 0,
            len: 0,
            mode: RING_MODE_RING,
        })
    }

    /// Puts `program` in `ring_targets[slot]` (slots 3 and up are free for experiments).
    pub fn set_target(&mut self, slot: u32, program: &Xdp) -> anyhow::Result<()> {
        let fd = program.fd()?.try_clone()?;
        let mut targets: ProgramArray<_> = self
            .ebpf
            .map_mut("ring_targets")
            .context("ring_targets map")?
            .try_into()?;
        targets.set(slot, &fd, 0)?;
        Ok(())
    }

    /// Puts `frames` in the ring (all padded to the same length).
    pub fn set_frames(&mut self, frames: &[Vec<u8>]) -> anyhow::Result<()> {
        ensure!(
            !frames.is_empty() && frames.len() <= RING_MAX as usize,
            "1 to {RING_MAX} frames"
        );
        let mut ring: Array<_, RingFrame> =
            self.ebpf.map_mut("ring").context("ring map")?.try_into()?;
        let mut first_len = None;
        for (i, f) in frames.iter().enumerate() {
            let p = padded(f)?;
            ensure!(
                *first_len.get_or_insert(p.len) == p.len,
                "ring frames must have one length"
            );
            ring.set(i as u32, p, 0)?;
        }
        self.frame_len = first_len.unwrap_or(0) as usize;
        self.len = frames.len() as u32;
        self.mode = RING_MODE_RING;
        self.write_state(None)
    }

    /// SYN mode: `template` with the source of flow number `next`, `next + 1`, ... (see
    /// `elb_common::SPOOF_BASE`): every iteration a new flow. Each CPU numbers its own flows
    /// (CPU `i` from `next + i * 2^28`), so a run that lands on another CPU repeats none.
    pub fn set_syn(&mut self, template: &[u8], next: u64) -> anyhow::Result<()> {
        let mut ring: Array<_, RingFrame> =
            self.ebpf.map_mut("ring").context("ring map")?.try_into()?;
        let p = padded(template)?;
        self.frame_len = p.len as usize;
        ring.set(0, p, 0)?;
        self.len = 1;
        self.mode = RING_MODE_SYN;
        self.write_state(Some(next))
    }

    /// Sets the state of every CPU; `next` restarts the position when given.
    fn write_state(&mut self, next: Option<u64>) -> anyhow::Result<()> {
        let mut state: PerCpuArray<_, RingState> = self
            .ebpf
            .map_mut("ring_state")
            .context("ring_state map")?
            .try_into()?;
        let current = state.get(&0, 0)?;
        let values: Vec<RingState> = current
            .iter()
            .enumerate()
            .map(|(cpu, s)| RingState {
                next: next.map_or(s.next, |n| n + ((cpu as u64) << 28)),
                len: self.len,
                mode: self.mode,
                target: 0,
                _pad: 0,
                base: 0,
                cur: 0,
            })
            .collect();
        state.set(0, PerCpuValues::try_from(values)?, 0)?;
        Ok(())
    }

    /// Runs `repeat` iterations of `bench_ring` tail-calling `target` (as if the frames arrived
    /// on `ifindex`); returns the kernel's mean time per iteration in ns and the last verdict.
    pub fn time(
        &mut self,
        fx: &Fixture,
        target: u32,
        ifindex: u32,
        repeat: u32,
    ) -> anyhow::Result<(f64, u32)> {
        self.set_target_slot(target)?;
        let program = progs::program(&self.ebpf, progs::RING)?;
        fx.ns
            .run(|| run_loop(program, self.frame_len, ifindex, repeat))
    }

    /// [`Ring::time`] on several CPUs at once: one thread bound to each of `cpus` runs `repeat`
    /// iterations (in SYN mode each CPU opens flows of its own). Returns each CPU's mean time
    /// per iteration and last verdict.
    pub fn time_on_cpus(
        &mut self,
        fx: &Fixture,
        target: u32,
        ifindex: u32,
        repeat: u32,
        cpus: &[usize],
    ) -> anyhow::Result<Vec<(f64, u32)>> {
        self.set_target_slot(target)?;
        let program = progs::program(&self.ebpf, progs::RING)?;
        let frame_len = self.frame_len;
        std::thread::scope(|s| {
            let runs: Vec<_> = cpus
                .iter()
                .map(|&cpu| {
                    s.spawn(move || {
                        fx.ns.run(|| {
                            crate::fixture::bind_to_cpu(cpu)?;
                            run_loop(program, frame_len, ifindex, repeat)
                        })
                    })
                })
                .collect();
            runs.into_iter()
                .map(|r| r.join().expect("a timing thread panicked"))
                .collect()
        })
    }

    /// Makes `target` the program `bench_ring` tail-calls (part of the per-CPU state: set on
    /// every CPU).
    fn set_target_slot(&mut self, target: u32) -> anyhow::Result<()> {
        let mut state: PerCpuArray<_, RingState> = self
            .ebpf
            .map_mut("ring_state")
            .context("ring_state map")?
            .try_into()?;
        let current = state.get(&0, 0)?;
        let values: Vec<RingState> = current
            .iter()
            .map(|s| RingState {
                target,
                base: 0,
                ..*s
            })
            .collect();
        state.set(0, PerCpuValues::try_from(values)?, 0)?;
        Ok(())
    }
}

/// One `BPF_PROG_TEST_RUN` loop of `repeat` iterations of the harness on a buffer of
/// `frame_len` bytes (from inside the fixture's namespace): the kernel's mean time per
/// iteration in ns and the last verdict.
fn run_loop(
    program: &Xdp,
    frame_len: usize,
    ifindex: u32,
    repeat: u32,
) -> anyhow::Result<(f64, u32)> {
    let frame = vec![0u8; frame_len];
    let mut out = vec![0u8; 4096];
    let ctx = xdp_md(frame.len() as u32, ifindex);
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(&frame);
    opts.data_out = Some(&mut out);
    opts.ctx_in = Some(&ctx);
    opts.repeat = repeat;
    let r = program.test_run(opts).context("BPF_PROG_TEST_RUN")?;
    Ok((r.duration.as_nanos() as f64, r.return_value))
}

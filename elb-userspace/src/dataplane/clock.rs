//! The program's clock from userspace. The XDP program keeps time in jiffies (`bpf_jiffies64`
//! is a plain load; a clock read costs 15-30 ns per packet), so flow timestamps are jiffies and
//! the sweep needs the current jiffies and the kernel's HZ.

use std::{
    io,
    sync::OnceLock,
    time::{Duration, Instant},
};

/// Current `CLOCK_MONOTONIC` time in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The kernel's jiffies now (from `/proc/timer_list`, which prints them; root only).
pub fn jiffies() -> io::Result<u64> {
    let text = std::fs::read_to_string("/proc/timer_list")?;
    text.lines()
        .find_map(|l| l.strip_prefix("jiffies: "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::other("/proc/timer_list has no jiffies line"))
}

/// The kernel's HZ, measured once (jiffies over 200 ms of CLOCK_MONOTONIC, rounded to the
/// nearest value Linux offers).
pub fn hz() -> io::Result<u32> {
    static HZ: OnceLock<u32> = OnceLock::new();
    if let Some(hz) = HZ.get() {
        return Ok(*hz);
    }
    let (j0, t0) = (jiffies()?, Instant::now());
    std::thread::sleep(Duration::from_millis(200));
    let (j1, t1) = (jiffies()?, Instant::now());
    let measured = (j1 - j0) as f64 / (t1 - t0).as_secs_f64();
    let hz = [100u32, 250, 300, 1000]
        .into_iter()
        .min_by(|a, b| {
            (f64::from(*a) - measured)
                .abs()
                .total_cmp(&(f64::from(*b) - measured).abs())
        })
        .unwrap_or(250);
    Ok(*HZ.get_or_init(|| hz))
}

/// The jiffies (low 32 bits, as the program stores them) at monotonic time `ns` (which may
/// lie in the future: tests age flows by sweeping "later").
pub fn jiffies_at(ns: u64) -> io::Result<u32> {
    let hz = u64::from(hz()?);
    let (now_j, now_ns) = (jiffies()?, monotonic_ns());
    let ahead = ns.saturating_sub(now_ns) as u128 * u128::from(hz) / 1_000_000_000;
    let behind = now_ns.saturating_sub(ns) as u128 * u128::from(hz) / 1_000_000_000;
    Ok((now_j as u128 + ahead).saturating_sub(behind) as u32)
}

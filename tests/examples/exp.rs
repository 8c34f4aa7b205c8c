//! Temporary experiment driver (not committed).
#![expect(
    clippy::needless_range_loop,
    reason = "slot numbers and sample vectors indexed together"
)]
use std::net::Ipv4Addr;

use aya::maps::{Array, HashMap};
use elb_common::SPOOF_BASE;
use tests::{
    bench::{median, ring::Ring},
    fixture::{Fixture, VIP, XDP_TX},
    packet::{TCP_ACK, Tcp},
    progs,
};

#[repr(C)]
#[derive(Clone, Copy)]
struct ExpVal {
    w: [u64; 6],
}
unsafe impl aya::Pod for ExpVal {}
#[repr(C)]
#[derive(Clone, Copy)]
struct ExpSlot {
    w: [u64; 8],
}
unsafe impl aya::Pod for ExpSlot {}

fn exp_hash(k: [u64; 2]) -> u64 {
    let mut h = (k[0] ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 31;
    h = (h ^ k[1]).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 29;
    h
}

fn main() -> anyhow::Result<()> {
    let n: u32 = std::env::args()
        .nth(1)
        .map_or(65536, |a| a.parse().unwrap());
    let repeat: u32 = std::env::args()
        .nth(2)
        .map_or(500_000, |a| a.parse().unwrap());
    if std::env::var_os("ONLY_GLOBAL").is_some() {
        match progs::load(&["exp_global"]) {
            Ok(_) => println!("exp_global loaded"),
            Err(e) => println!("exp_global: {e:#}"),
        }
        return Ok(());
    }
    if std::env::var_os("SYNPATH").is_some() {
        let slots: u32 = std::env::var("SLOTS").map_or(524288, |v| v.parse().unwrap());
        let per: u32 = std::env::var("N").map_or(200_000, |v| v.parse().unwrap());
        let fx = Fixture::with_conntrack(slots)?;
        tests::bench::per_packet::prepare(&fx)?;
        let mut ring = Ring::new(fx.dp_program())?;
        let vip = VIP;
        let other = Ipv4Addr::new(198, 18, 0, 77); // no listener: pass_not_ours
        let mut next = 0u64;
        let mut run = |ring: &mut Ring,
                       label: &str,
                       target: u32,
                       dst: Ipv4Addr,
                       backlog: u32|
         -> anyhow::Result<()> {
            tests::bench::per_packet::set_backlog(&fx, backlog)?;
            let mut v = Vec::new();
            for _ in 0..9 {
                ring.set_syn(&tests::bench::per_packet::syn_template(dst), next)?;
                next += u64::from(per);
                let (ns, _) = ring.time(&fx, target, fx.cl, per)?;
                v.push(ns);
                let mut maps = fx.maps()?;
                let keys: Vec<_> = maps.flows()?.into_iter().map(|(k, _)| k).collect();
                maps.remove_flows(&keys)?;
                maps.flow_table().compact();
            }
            println!("{label:28} {:.1}  {v:?}", median(&mut v));
            Ok(())
        };
        if std::env::var_os("ONLYNEW").is_some() {
            for _ in 0..10 {
                run(&mut ring, "new flow", 1, vip, u32::MAX)?;
            }
            return Ok(());
        }
        run(&mut ring, "floor (syn mode)", 0, vip, 1)?;
        run(&mut ring, "not ours (lookup miss)", 1, other, 1)?;
        run(&mut ring, "cookie", 1, vip, 1)?;
        run(&mut ring, "new flow", 1, vip, u32::MAX)?;
        // Cut the path short: a stage slot pointing at the floor.
        let floor = progs::load(&["elb_floor"])?;
        let floor_fd = progs::program(&floor, "elb_floor")?.fd()?.try_clone()?;
        let stages_path = fx.pin_root.join("stages");
        let mut stages: aya::maps::ProgramArray<_> =
            aya::maps::Map::ProgramArray(aya::maps::MapData::from_pin(&stages_path)?).try_into()?;
        stages.set(4, &floor_fd, 0)?;
        run(&mut ring, "new flow up to open", 1, vip, u32::MAX)?;
        stages.set(3, &floor_fd, 0)?;
        run(&mut ring, "new flow up to plan", 1, vip, u32::MAX)?;
        stages.set(0, &floor_fd, 0)?;
        run(&mut ring, "new flow up to syn", 1, vip, u32::MAX)?;
        return Ok(());
    }
    if std::env::var_os("PIECES").is_some() {
        let fx = Fixture::new()?;
        let mut ring = Ring::new(fx.dp_program())?;
        let names = [
            "exp_siphash",
            "exp_adjust",
            "exp_loadbytes",
            "exp_tailcall",
            "exp_mapget",
            "exp_jiffies",
            "exp_prandom",
        ];
        let mut ebpf = progs::load(&names)?;
        let floor = progs::load(&["elb_floor"])?;
        {
            let fd = progs::program(&floor, "elb_floor")?.fd()?.try_clone()?;
            let mut t: aya::maps::ProgramArray<_> = ebpf.map_mut("exp_tail").unwrap().try_into()?;
            t.set(0, &fd, 0)?;
        }
        for (i, name) in names.iter().enumerate() {
            ring.set_target(2 + i as u32, progs::program(&ebpf, name)?)?;
        }
        let frames: Vec<Vec<u8>> = (0..1024u32)
            .map(|i| {
                Tcp::new(
                    (Ipv4Addr::from(SPOOF_BASE + 1 + i), 1000),
                    (VIP, 80),
                    TCP_ACK,
                )
                .frame()
            })
            .collect();
        ring.set_frames(&frames)?;
        let mut all: Vec<Vec<f64>> = vec![Vec::new(); 1 + names.len()];
        for _ in 0..7 {
            for t in 0..=names.len() {
                let slot = if t == 0 { 0 } else { 1 + t as u32 };
                let (ns, v) = ring.time(&fx, slot, fx.cl, 500_000)?;
                if v != XDP_TX {
                    eprintln!("target {t} verdict {v}");
                }
                all[t].push(ns);
            }
        }
        let mut label = vec!["floor"];
        label.extend(names);
        for (l, s) in label.iter().zip(all.iter_mut()) {
            println!("{l:14} {:.1}", median(s));
        }
        return Ok(());
    }
    let fx = Fixture::new()?;
    let mut ring = Ring::new(fx.dp_program())?;
    let names = [
        "exp_htab",
        "exp_lru",
        "exp_lru_nc",
        "exp_arr",
        "exp_ktime",
        "exp_coarse",
        "exp_jiffies",
        "exp_prandom",
        "exp_ins_htab",
        "exp_ins_lru",
        "exp_ins_lru_nc",
        "exp_ins_arr",
        "exp_htab_np",
    ];
    let mut ebpf = progs::load(&names)?;
    for (i, name) in names.iter().enumerate() {
        ring.set_target(2 + i as u32, progs::program(&ebpf, name)?)?;
    }
    let mut frames = Vec::new();
    let mut keys = Vec::new();
    for i in 0..n {
        let src = Ipv4Addr::from(SPOOF_BASE + 1 + i / 60000);
        let sport = (1024 + i % 60000) as u16;
        let t = Tcp::new((src, sport), (VIP, 80), TCP_ACK);
        frames.push(t.frame());
        let a = u64::from(u32::from_ne_bytes(src.octets()))
            | (u64::from(u32::from_ne_bytes(VIP.octets())) << 32);
        let b = u64::from(sport.to_be()) | (u64::from(80u16.to_be()) << 16) | (6u64 << 32);
        keys.push([a, b]);
    }
    for m in ["m_htab", "m_lru", "m_lru_nc", "m_htab_np"] {
        let mut h: HashMap<_, [u64; 2], ExpVal> = ebpf.map_mut(m).unwrap().try_into()?;
        for k in &keys {
            h.insert(*k, ExpVal { w: [1; 6] }, 0)?;
        }
    }
    for m in ["m_htab", "m_lru", "m_lru_nc"] {
        let h: HashMap<_, [u64; 2], ExpVal> = ebpf.map(m).unwrap().try_into()?;
        println!("{m}: {} keys", h.keys().count());
    }
    {
        let mut a: Array<_, ExpSlot> = ebpf.map_mut("m_arr").unwrap().try_into()?;
        let mut used = vec![false; 2097152];
        for k in &keys {
            let h = exp_hash(*k);
            for p in 0..4u64 {
                let idx = (h.wrapping_add(p) & 2097151) as usize;
                if !used[idx] {
                    used[idx] = true;
                    let mut s = ExpSlot { w: [0; 8] };
                    s.w[0] = k[0];
                    s.w[1] = k[1];
                    s.w[2] = 1;
                    a.set(idx as u32, s, 0)?;
                    break;
                }
            }
        }
    }
    let mut all: Vec<Vec<f64>> = vec![Vec::new(); 1 + names.len()];
    let mut next = 1u64 << 20;
    for _ in 0..7 {
        for t in 0..=names.len() {
            let slot = if t == 0 { 0 } else { 1 + t as u32 };
            if (9..=12).contains(&t) {
                let mut syn = Tcp::new((VIP, 1), (VIP, 80), TCP_ACK);
                syn.seq = 1;
                ring.set_syn(&syn.frame(), next)?;
                next += u64::from(repeat);
            } else {
                ring.set_frames(&frames)?;
            }
            let (ns, v) = ring.time(&fx, slot, fx.cl, repeat)?;
            if v != XDP_TX {
                eprintln!("target {t} verdict {v}");
            }
            all[t].push(ns);
        }
    }
    let mut label = vec!["floor"];
    label.extend(names);
    for (l, s) in label.iter().zip(all.iter_mut()) {
        println!("{l:12} {:.1}  {:?}", median(s), s);
    }
    Ok(())
}

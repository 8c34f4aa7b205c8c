//! Loading, attaching and pinning the XDP program, and typed access to its maps.
//!
//! Everything lives under a pin root on bpffs (default `/sys/fs/bpf/elb`): one pin per map
//! (`<root>/<map>`) and one per attached interface (`<root>/links/<ifname>`). A new process
//! loading the program reuses the pinned maps and atomically swaps the program behind each
//! pinned link, so an agent restart or upgrade neither drops nor re-routes established flows.

pub mod clock;
pub mod flows;
mod maps;
pub mod sys;

use std::{
    ffi::CString,
    fs, io,
    net::Ipv4Addr,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::MapData,
    programs::{
        ProgramError, Xdp,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpMode},
    },
};
use elb_common::{ABI_VERSION, Config, DEFAULT_CONNTRACK_ENTRIES, Meta, map_names};
pub use flows::FlowTable;
pub use maps::{Maps, flow_events, ipv4, parse_flow_event};

/// The XDP program object, built by this crate's build script.
pub static ELB_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/elb.o"));

/// Default pin root.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/elb";

/// Name of the load-balancing program in the object.
pub const PROGRAM: &str = "elb";
/// Name of the pass-through program (for veth peers, see toolchain.md).
pub const PASS_PROGRAM: &str = "elb_pass";

/// What can go wrong loading or driving the dataplane.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The pin root is not on bpffs.
    #[error(
        "{path} is not on a BPF filesystem: mount it with `mount -t bpf bpf /sys/fs/bpf` (or run `cargo xtask setup`)"
    )]
    BpffsNotMounted {
        /// The pin root.
        path: PathBuf,
    },
    /// Pinned maps from an incompatible build.
    #[error(
        "pinned map {path} was created by a different build ({detail}); remove the old state with `--reset` (this drops established flows)"
    )]
    IncompatiblePins {
        /// The offending pin.
        path: PathBuf,
        /// What differs.
        detail: String,
    },
    /// The build script ran with `ELB_EBPF_SKIP`.
    #[error(
        "this binary was built with ELB_EBPF_SKIP and contains no XDP program; rebuild without it"
    )]
    NoObject,
    /// Loading the object (maps, BTF, relocations).
    #[error("loading the XDP object failed: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    /// A program operation (verifier, attach...).
    #[error("{what} failed: {source}")]
    Program {
        /// What was attempted.
        what: String,
        /// The cause.
        #[source]
        source: Box<ProgramError>,
    },
    /// Opening a pinned map.
    #[error(
        "opening pinned map {path} failed: {source} (is the program loaded? run `elb-servo load`)"
    )]
    OpenPin {
        /// The pin.
        path: PathBuf,
        /// The cause.
        #[source]
        source: aya::maps::MapError,
    },
    /// A map operation.
    #[error("{op} on map {map} failed: {source}")]
    Map {
        /// The map.
        map: &'static str,
        /// The operation.
        op: &'static str,
        /// The cause.
        #[source]
        source: aya::maps::MapError,
    },
    /// A raw system call.
    #[error("{what} failed: {source}")]
    Syscall {
        /// What was attempted.
        what: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Filesystem work under the pin root.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// No such interface.
    #[error("no interface named {0:?} in this network namespace")]
    UnknownInterface(String),
    /// A value out of range.
    #[error("{0}")]
    Invalid(String),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DataplaneError + 'a {
    move |source| DataplaneError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// How to load the dataplane.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Pin root on bpffs.
    pub pin_root: PathBuf,
    /// Flow table size in slots (two per flow; rounded up to a power of two, at least 1024);
    /// only used when the maps are created.
    pub conntrack_entries: u32,
    /// Remove existing pins first (drops every established flow).
    pub reset: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            pin_root: PathBuf::from(DEFAULT_PIN_ROOT),
            conntrack_entries: DEFAULT_CONNTRACK_ENTRIES,
            reset: false,
        }
    }
}

/// XDP attach mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) mode: the fast path, supported by veth and most NICs.
    #[default]
    Native,
    /// Generic (skb) mode: works everywhere, slower.
    Generic,
}

impl AttachMode {
    fn flags(self) -> XdpMode {
        match self {
            Self::Native => XdpMode::Driver,
            Self::Generic => XdpMode::Skb,
        }
    }
}

/// A loaded dataplane: the program (not yet attached anywhere) and its pinned maps.
pub struct Dataplane {
    ebpf: Ebpf,
    pin_root: PathBuf,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane")
            .field("pin_root", &self.pin_root)
            .finish_non_exhaustive()
    }
}

/// Expected key and value sizes of each map, to recognise pins from another build.
fn expected_sizes(name: &str) -> (usize, usize) {
    use elb_common::*;
    match name {
        map_names::LISTENERS => (size_of::<ListenerKey>(), size_of::<Listener>()),
        map_names::BACKEND_SETS => (4, size_of::<BackendSet>()),
        map_names::BACKENDS => (4, size_of::<Backend>()),
        map_names::RR_CURSORS => (4, size_of::<ListenerState>()),
        map_names::HALF_OPEN_FIX => (4, size_of::<HalfOpenFix>()),
        map_names::CONNTRACK => (4, size_of::<FlowSlot>()),
        map_names::CONNTRACK_LOCKS => (4, 4),
        map_names::SNAT_ADDRS => (4, size_of::<SnatAddrs>()),
        map_names::TX_PORTS => (4, 8), // struct bpf_devmap_val { ifindex, prog fd }
        map_names::IFACES => (4, size_of::<Iface>()),
        map_names::LISTENER_PORTS => (4, 8),
        map_names::STAGES => (4, 4),
        map_names::CONFIG => (4, size_of::<Config>()),
        map_names::META => (4, size_of::<Meta>()),
        map_names::COUNTERS => (4, size_of::<Counters>()),
        map_names::LISTENER_STATS | map_names::BACKEND_STATS => (4, size_of::<TrafficStats>()),
        map_names::BACKEND_ROUTES => (4, size_of::<NextHop>()),
        // An LPM trie key: the prefix length, then the data.
        map_names::SG_ALLOW => (4 + size_of::<sg::SgSource>(), 4),
        map_names::STAGE_ARGS => (4, size_of::<StageArgs>()),
        // A ring buffer has neither key nor value (its records are `FlowEvent`s).
        map_names::FLOW_EVENTS => (0, 0),
        // The program's own layouts (not part of the map ABI crate): the ABI version covers
        // them; only the key is checked.
        _ => (4, 0),
    }
}

/// Checks pins left by an earlier process; returns whether any exist.
fn check_existing_pins(root: &Path) -> Result<bool, DataplaneError> {
    let mut any = false;
    for name in map_names::ALL {
        let path = root.join(name);
        if !path.exists() {
            continue;
        }
        any = true;
        let data = MapData::from_pin(&path).map_err(|source| DataplaneError::OpenPin {
            path: path.clone(),
            source,
        })?;
        let info = data.info().map_err(|source| DataplaneError::OpenPin {
            path: path.clone(),
            source,
        })?;
        let (key, value) = expected_sizes(name);
        if info.key_size() as usize != key || (value != 0 && info.value_size() as usize != value) {
            return Err(DataplaneError::IncompatiblePins {
                path,
                detail: format!(
                    "key/value sizes {}/{}, this build expects {key}/{value}",
                    info.key_size(),
                    info.value_size()
                ),
            });
        }
    }
    if any {
        let maps = Maps::open(root)?;
        let meta = maps.meta()?;
        if meta.abi_version != ABI_VERSION {
            return Err(DataplaneError::IncompatiblePins {
                path: root.join(map_names::META),
                detail: format!(
                    "ABI version {}, this build is {ABI_VERSION}",
                    meta.abi_version
                ),
            });
        }
    }
    Ok(any)
}

/// Removes every pin under `root` (maps and links). Established flows are lost; attached
/// programs stay attached until their last link reference goes away.
pub fn remove_pins(root: &Path) -> Result<(), DataplaneError> {
    if root.exists() {
        fs::remove_dir_all(root).map_err(io_err("removing", root))?;
    }
    Ok(())
}

fn ensure_bpffs(root: &Path) -> Result<(), DataplaneError> {
    // The pin root may not exist yet: check the nearest existing ancestor.
    let mut probe = root;
    while !probe.exists() {
        probe = probe.parent().unwrap_or(Path::new("/"));
    }
    match sys::is_bpffs(probe) {
        Ok(true) => Ok(()),
        Ok(false) | Err(_) => Err(DataplaneError::BpffsNotMounted {
            path: root.to_path_buf(),
        }),
    }
}

/// Resolves an interface name in the current network namespace.
pub fn ifindex(iface: &str) -> Result<u32, DataplaneError> {
    let c = CString::new(iface).map_err(|_| DataplaneError::UnknownInterface(iface.to_string()))?;
    // SAFETY: `c` is a valid C string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        Err(DataplaneError::UnknownInterface(iface.to_string()))
    } else {
        Ok(index)
    }
}

fn link_pin(root: &Path, iface: &str) -> PathBuf {
    root.join("links").join(iface)
}

impl Dataplane {
    /// Loads the program, reusing the maps pinned under `opts.pin_root` (or creating and pinning
    /// them), and verifies it. Nothing is attached yet.
    pub fn load(opts: &LoadOptions) -> Result<Self, DataplaneError> {
        if ELB_OBJECT.is_empty() {
            return Err(DataplaneError::NoObject);
        }
        let root = opts.pin_root.as_path();
        ensure_bpffs(root)?;
        if opts.reset {
            remove_pins(root)?;
        }
        fs::create_dir_all(root.join("links")).map_err(io_err("creating", root))?;
        let existed = check_existing_pins(root)?;

        let pins: Vec<(&str, PathBuf)> =
            map_names::ALL.iter().map(|n| (*n, root.join(n))).collect();
        let mut loader = EbpfLoader::new();
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        let slots = flow_slots(opts.conntrack_entries);
        loader.map_max_entries(map_names::CONNTRACK, slots);
        let mut ebpf = loader
            .load(ELB_OBJECT)
            .map_err(|e| DataplaneError::Load(Box::new(e)))?;

        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| DataplaneError::Invalid(format!("object has no program {PROGRAM}")))?
            .try_into()
            .map_err(|e| DataplaneError::Program {
                what: "finding the XDP program".into(),
                source: Box::new(e),
            })?;
        program.load().map_err(|e| DataplaneError::Program {
            what: "verifying the XDP program".into(),
            source: Box::new(e),
        })?;
        // The stages `elb` tail-calls (the new-flow paths), into the pinned program array.
        let mut fds = Vec::new();
        for name in elb_common::stages::PROGRAMS {
            let stage: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or_else(|| DataplaneError::Invalid(format!("object has no program {name}")))?
                .try_into()
                .map_err(|e| DataplaneError::Program {
                    what: format!("finding {name}"),
                    source: Box::new(e),
                })?;
            stage.load().map_err(|e| DataplaneError::Program {
                what: format!("verifying {name}"),
                source: Box::new(e),
            })?;
            fds.push(
                stage
                    .fd()
                    .map_err(|e| DataplaneError::Program {
                        what: format!("{name}'s fd"),
                        source: Box::new(e),
                    })?
                    .try_clone()
                    .map_err(|source| DataplaneError::Syscall {
                        what: "duplicating a program fd",
                        source,
                    })?,
            );
        }
        let mut stages: aya::maps::ProgramArray<_> = ebpf
            .map_mut(map_names::STAGES)
            .ok_or_else(|| DataplaneError::Invalid("object has no stages map".into()))?
            .try_into()
            .map_err(|source| DataplaneError::Map {
                map: map_names::STAGES,
                op: "open",
                source,
            })?;
        for (slot, fd) in fds.iter().enumerate() {
            stages
                .set(slot as u32, fd, 0)
                .map_err(|source| DataplaneError::Map {
                    map: map_names::STAGES,
                    op: "set",
                    source,
                })?;
        }

        if !existed {
            init_meta(
                root,
                Meta {
                    abi_version: ABI_VERSION,
                    conntrack_entries: slots,
                    flow_seed: [rand::random(), rand::random()],
                    cookie_key: [rand::random(), rand::random()],
                    maps_generation: Meta::next_generation(rand::random()),
                },
            )?;
            Maps::open(root)?.set_config(Config::with_snat_ports(20000, 59999))?;
        }
        Ok(Self {
            ebpf,
            pin_root: root.to_path_buf(),
        })
    }

    /// Where the maps are pinned.
    pub fn pin_root(&self) -> &Path {
        &self.pin_root
    }

    /// The loaded load-balancing program (for `BPF_PROG_TEST_RUN` fixtures and benchmarks).
    pub fn program(&self) -> Result<&Xdp, DataplaneError> {
        self.ebpf
            .program(PROGRAM)
            .ok_or_else(|| DataplaneError::Invalid(format!("object has no program {PROGRAM}")))?
            .try_into()
            .map_err(|e| DataplaneError::Program {
                what: "finding the XDP program".into(),
                source: Box::new(e),
            })
    }

    /// Opens independent handles on the maps.
    pub fn maps(&self) -> Result<Maps, DataplaneError> {
        Maps::open(&self.pin_root)
    }

    /// Attaches the program to `iface` and pins the link, so it stays attached after this
    /// process exits. If a link is already pinned for `iface` (an earlier process attached it),
    /// the program behind it is replaced atomically: no packet sees a gap.
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<(), DataplaneError> {
        let index = ifindex(iface)?;
        let pin = link_pin(&self.pin_root, iface);
        let program: &mut Xdp = self
            .ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| DataplaneError::Invalid(format!("object has no program {PROGRAM}")))?
            .try_into()
            .map_err(|e| DataplaneError::Program {
                what: "finding the XDP program".into(),
                source: Box::new(e),
            })?;
        let prog_err = |what: String| {
            move |e: ProgramError| DataplaneError::Program {
                what,
                source: Box::new(e),
            }
        };

        let reused = match PinnedLink::from_pin(&pin) {
            Ok(pinned) => {
                // Keep the pin; swap the program behind the link.
                let fd_link: FdLink = pinned.into();
                match XdpLink::try_from(fd_link) {
                    Ok(link) => {
                        program
                            .attach_to_link(link)
                            .map_err(prog_err(format!("replacing the program on {iface}")))?;
                        true
                    }
                    Err(_) => {
                        fs::remove_file(&pin).map_err(io_err("removing stale link pin", &pin))?;
                        false
                    }
                }
            }
            Err(_) => false,
        };
        if !reused {
            let id = program
                .attach_to_if_index(index, mode.flags())
                .map_err(prog_err(format!("attaching XDP to {iface}")))?;
            let link = program
                .take_link(id)
                .map_err(prog_err(format!("taking the link on {iface}")))?;
            let fd_link: FdLink = link.try_into().map_err(|e| {
                DataplaneError::Invalid(format!("XDP on {iface} is not a bpf_link: {e}"))
            })?;
            fd_link.pin(&pin).map_err(|e| {
                DataplaneError::Invalid(format!(
                    "pinning the link of {iface} at {}: {e}",
                    pin.display()
                ))
            })?;
        }
        self.maps()?.add_tx_port(index, iface_mtu(iface))?;
        Ok(())
    }
}

/// Slots of a flow table for `entries` (a power of two, at least 1024).
pub fn flow_slots(entries: u32) -> u32 {
    entries
        .max(1024)
        .checked_next_power_of_two()
        .unwrap_or(1 << 31)
}

/// The MTU of `iface` (0 if unknown: not checked then).
fn iface_mtu(iface: &str) -> u32 {
    fs::read_to_string(format!("/sys/class/net/{iface}/mtu"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Writes `meta` into the freshly created maps under `root` (before anything else reads it:
/// the flow table's size and hash key come from it).
fn init_meta(root: &Path, meta: Meta) -> Result<(), DataplaneError> {
    let path = root.join(map_names::META);
    let data = MapData::from_pin(&path).map_err(|source| DataplaneError::OpenPin {
        path: path.clone(),
        source,
    })?;
    let mut map: aya::maps::Array<MapData, Meta> =
        aya::maps::Map::Array(data)
            .try_into()
            .map_err(|source| DataplaneError::OpenPin {
                path: path.clone(),
                source,
            })?;
    map.set(0, meta, 0).map_err(|source| DataplaneError::Map {
        map: map_names::META,
        op: "set",
        source,
    })
}

/// Detaches the program from `iface` (found through its pinned link under `pin_root`), even if
/// another process still holds the link. Returns false if nothing was attached.
pub fn detach(pin_root: &Path, iface: &str) -> Result<bool, DataplaneError> {
    let pin = link_pin(pin_root, iface);
    if !pin.exists() {
        return Ok(false);
    }
    let fd = sys::obj_get(&pin).map_err(|source| DataplaneError::Syscall {
        what: "BPF_OBJ_GET on the link pin",
        source,
    })?;
    sys::link_detach(fd.as_fd()).map_err(|source| DataplaneError::Syscall {
        what: "BPF_LINK_DETACH",
        source,
    })?;
    fs::remove_file(&pin).map_err(io_err("removing", &pin))?;
    if let Ok(index) = ifindex(iface)
        && let Ok(mut maps) = Maps::open(pin_root)
    {
        maps.remove_tx_port(index)?;
        maps.remove_snat_addrs(index)?;
    }
    Ok(true)
}

/// Interfaces with a pinned link under `pin_root`.
pub fn attached_interfaces(pin_root: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(pin_root.join("links"))
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Loads the pass-through program and pins it at `path`, so `ip link set dev X xdp pinned
/// PATH` (or [`Dataplane`]-less tools) can attach it to veth peers.
pub fn pin_pass_program(path: &Path) -> Result<(), DataplaneError> {
    if path.exists() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        ensure_bpffs(parent)?;
        fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
    }
    let mut ebpf = load_pass_program()?;
    pass_program(&mut ebpf)?.pin(path).map_err(|e| {
        DataplaneError::Invalid(format!("pinning {PASS_PROGRAM} at {}: {e}", path.display()))
    })?;
    Ok(())
}

/// Attaches the pass-through program (`elb_pass`) to `iface` in the current network namespace
/// and pins the link at `<pin_dir>/<iface>`, so it stays attached after this process exits.
///
/// Needed on the peer of every veth the balancer transmits or redirects into (veth delivers
/// XDP_TX and redirected frames only to a peer that runs an XDP program); never on physical
/// NICs. Attaching again replaces nothing and succeeds.
pub fn attach_pass(pin_dir: &Path, iface: &str, mode: AttachMode) -> Result<(), DataplaneError> {
    let index = ifindex(iface)?;
    let pin = pin_dir.join(iface);
    if PinnedLink::from_pin(&pin).is_ok() {
        return Ok(());
    }
    ensure_bpffs(pin_dir)?;
    fs::create_dir_all(pin_dir).map_err(io_err("creating", pin_dir))?;
    let mut ebpf = load_pass_program()?;
    let program = pass_program(&mut ebpf)?;
    let prog_err = |what: String| {
        move |e: ProgramError| DataplaneError::Program {
            what,
            source: Box::new(e),
        }
    };
    let id = program
        .attach_to_if_index(index, mode.flags())
        .map_err(prog_err(format!("attaching {PASS_PROGRAM} to {iface}")))?;
    let link = program
        .take_link(id)
        .map_err(prog_err(format!("taking the link on {iface}")))?;
    let fd_link: FdLink = link
        .try_into()
        .map_err(|e| DataplaneError::Invalid(format!("XDP on {iface} is not a bpf_link: {e}")))?;
    fd_link.pin(&pin).map_err(|e| {
        DataplaneError::Invalid(format!(
            "pinning the link of {iface} at {}: {e}",
            pin.display()
        ))
    })?;
    Ok(())
}

/// Detaches the pass-through program attached by [`attach_pass`]; false if there was none.
pub fn detach_pass(pin_dir: &Path, iface: &str) -> Result<bool, DataplaneError> {
    let pin = pin_dir.join(iface);
    if !pin.exists() {
        return Ok(false);
    }
    let fd = sys::obj_get(&pin).map_err(|source| DataplaneError::Syscall {
        what: "BPF_OBJ_GET on the link pin",
        source,
    })?;
    sys::link_detach(fd.as_fd()).map_err(|source| DataplaneError::Syscall {
        what: "BPF_LINK_DETACH",
        source,
    })?;
    fs::remove_file(&pin).map_err(io_err("removing", &pin))?;
    Ok(true)
}

/// Loads the pass-through program on its own (no maps).
fn load_pass_program() -> Result<Ebpf, DataplaneError> {
    if ELB_OBJECT.is_empty() {
        return Err(DataplaneError::NoObject);
    }
    // The object's maps are created too (unpinned, unused by `elb_pass`): keep the big one small.
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(map_names::CONNTRACK, 1)
        .load(ELB_OBJECT)
        .map_err(|e| DataplaneError::Load(Box::new(e)))?;
    pass_program(&mut ebpf)?
        .load()
        .map_err(|e| DataplaneError::Program {
            what: format!("verifying {PASS_PROGRAM}"),
            source: Box::new(e),
        })?;
    Ok(ebpf)
}

fn pass_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, DataplaneError> {
    ebpf.program_mut(PASS_PROGRAM)
        .ok_or_else(|| DataplaneError::Invalid(format!("object has no program {PASS_PROGRAM}")))?
        .try_into()
        .map_err(|e| DataplaneError::Program {
            what: format!("finding {PASS_PROGRAM}"),
            source: Box::new(e),
        })
}

/// Kernel settings a servo needs in its network namespace, applied by the loader:
/// forwarding (the FIB lookup refuses to route otherwise, and unresolved-neighbour packets are
/// forwarded by the kernel), accepting locally-sourced packets (those packets carry a servo
/// address as source), no reverse-path filter on them, and the SNAT port range kept away from
/// the kernel's own ephemeral ports.
pub fn apply_sysctls(ifaces: &[&str], snat_ports: (u16, u16)) -> Result<(), DataplaneError> {
    let mut settings: Vec<(String, String)> = vec![
        ("net/ipv4/ip_forward".into(), "1".into()),
        ("net/ipv4/conf/all/accept_local".into(), "1".into()),
        ("net/ipv4/conf/all/rp_filter".into(), "0".into()),
        ("net/ipv4/conf/all/send_redirects".into(), "0".into()),
        (
            "net/ipv4/ip_local_reserved_ports".into(),
            format!("{}-{}", snat_ports.0, snat_ports.1),
        ),
    ];
    for iface in ifaces {
        settings.push((format!("net/ipv4/conf/{iface}/accept_local"), "1".into()));
        settings.push((format!("net/ipv4/conf/{iface}/rp_filter"), "0".into()));
        settings.push((format!("net/ipv4/conf/{iface}/send_redirects"), "0".into()));
    }
    for (key, value) in settings {
        let path = Path::new("/proc/sys").join(&key);
        fs::write(&path, value.as_bytes()).map_err(io_err("writing", &path))?;
    }
    Ok(())
}

/// Moves the calling thread into the network namespace `name` (`/run/netns/<name>`, as created
/// by `ip netns add`). Threads spawned afterwards inherit it; call it before starting a runtime.
pub fn enter_netns(name: &str) -> Result<(), DataplaneError> {
    let path = Path::new("/run/netns").join(name);
    let file = fs::File::open(&path).map_err(io_err("opening network namespace", &path))?;
    use std::os::fd::AsRawFd as _;
    // SAFETY: setns with a valid namespace fd.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(DataplaneError::Syscall {
            what: "setns(CLONE_NEWNET)",
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// A servo address as the maps store it.
pub fn octets(addr: Ipv4Addr) -> [u8; 4] {
    addr.octets()
}

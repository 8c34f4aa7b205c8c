//! The few `bpf(2)` commands aya 0.14 does not wrap: batched map reads and deletes (the flow
//! sweep reads a million flows in a few hundred syscalls instead of two million), forced link
//! detach, and the bpffs check.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, BorrowedFd},
    path::Path,
};

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
const BPF_LINK_DETACH: libc::c_long = 34;
/// `statfs.f_type` of a BPF filesystem.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// `union bpf_attr`'s `batch` member.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// `union bpf_attr` is larger than any member; the kernel checks that unused tail bytes are zero.
#[repr(C)]
struct Attr<T> {
    inner: T,
    _zero: [u8; 64],
}

fn bpf<T>(cmd: libc::c_long, attr: &mut Attr<T>) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, zero-padded bpf_attr prefix of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            size_of::<Attr<T>>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Reads every entry of a hash map with `BPF_MAP_LOOKUP_BATCH`, `chunk` entries per call.
///
/// `K` and `V` must be plain data of exactly the map's key and value sizes.
pub fn lookup_batch<K: Copy + Default, V: Copy + Default>(
    fd: BorrowedFd<'_>,
    chunk: usize,
) -> io::Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    let mut keys = vec![K::default(); chunk];
    let mut values = vec![V::default(); chunk];
    // Hash map batch tokens are bucket indices (u32); give them room for a u64.
    let mut token_in = 0u64;
    let mut token_out = 0u64;
    let mut first = true;
    loop {
        let mut attr = Attr {
            inner: BatchAttr {
                in_batch: if first {
                    0
                } else {
                    std::ptr::from_mut(&mut token_in) as u64
                },
                out_batch: std::ptr::from_mut(&mut token_out) as u64,
                keys: keys.as_mut_ptr() as u64,
                values: values.as_mut_ptr() as u64,
                count: chunk as u32,
                map_fd: fd.as_raw_fd() as u32,
                ..BatchAttr::default()
            },
            _zero: [0; 64],
        };
        let result = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let got = attr.inner.count as usize;
        out.extend(
            keys[..got]
                .iter()
                .copied()
                .zip(values[..got].iter().copied()),
        );
        match result {
            Ok(_) => {}
            // ENOENT: the walk reached the end; `count` still reports the last entries.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Err(e) => return Err(e),
        }
        token_in = token_out;
        first = false;
    }
}

/// Writes `entries` into a hash map with `BPF_MAP_UPDATE_BATCH`, in chunks.
pub fn update_batch<K: Copy, V: Copy>(
    fd: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
) -> io::Result<()> {
    assert_eq!(keys.len(), values.len());
    for (k, v) in keys.chunks(8192).zip(values.chunks(8192)) {
        let mut attr = Attr {
            inner: BatchAttr {
                keys: k.as_ptr() as u64,
                values: v.as_ptr() as u64,
                count: k.len() as u32,
                map_fd: fd.as_raw_fd() as u32,
                ..BatchAttr::default()
            },
            _zero: [0; 64],
        };
        bpf(BPF_MAP_UPDATE_BATCH, &mut attr)?;
    }
    Ok(())
}

/// Deletes `keys` from a hash map with `BPF_MAP_DELETE_BATCH`. Keys that no longer exist (the
/// program or the LRU removed them meanwhile) are skipped. Returns how many were deleted.
pub fn delete_batch<K: Copy>(fd: BorrowedFd<'_>, keys: &[K]) -> io::Result<usize> {
    let mut deleted = 0;
    let mut rest = keys;
    while !rest.is_empty() {
        let mut attr = Attr {
            inner: BatchAttr {
                keys: rest.as_ptr() as u64,
                count: rest.len() as u32,
                map_fd: fd.as_raw_fd() as u32,
                ..BatchAttr::default()
            },
            _zero: [0; 64],
        };
        let result = bpf(BPF_MAP_DELETE_BATCH, &mut attr);
        let done = attr.inner.count as usize;
        deleted += done;
        match result {
            Ok(_) => return Ok(deleted),
            // The batch stops at the first missing key: skip it and go on.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                rest = &rest[(done + 1).min(rest.len())..]
            }
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

#[repr(C)]
struct LinkDetachAttr {
    link_fd: u32,
}

/// Detaches a BPF link now, whoever else holds it (`BPF_LINK_DETACH`).
pub fn link_detach(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = Attr {
        inner: LinkDetachAttr {
            link_fd: fd.as_raw_fd() as u32,
        },
        _zero: [0; 64],
    };
    bpf(BPF_LINK_DETACH, &mut attr).map(|_| ())
}

#[repr(C)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// Opens a pinned BPF object (`BPF_OBJ_GET`).
pub fn obj_get(path: &Path) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::{fd::FromRawFd as _, unix::ffi::OsStrExt as _};
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut attr = Attr {
        inner: ObjGetAttr {
            pathname: c.as_ptr() as u64,
            bpf_fd: 0,
            file_flags: 0,
        },
        _zero: [0; 64],
    };
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: the kernel returned a new file descriptor that we now own.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// True if `path` is on a BPF filesystem.
pub fn is_bpffs(path: &Path) -> io::Result<bool> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statfs writes into a properly sized, zeroed struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string, `st` a valid out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &raw mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

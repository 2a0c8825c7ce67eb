//! Whole-map writes and reads in one system call (`BPF_MAP_UPDATE_BATCH`,
//! `BPF_MAP_LOOKUP_BATCH`, Linux 5.6+), which aya 0.14 does not wrap.
//!
//! A 25,600-tunnel table is 51,200 map entries; one `bpf()` call per entry
//! makes building a table aside cost tens of milliseconds, the batch calls
//! a few.

use std::{
    io,
    mem::size_of,
    os::fd::{AsRawFd as _, BorrowedFd},
};

use aya::Pod;

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

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

fn bpf(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: `attr` is a valid, fully initialised bpf_attr prefix of the
    // size given; the pointers in it outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            size_of::<BatchAttr>() as u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Writes `keys[i] -> values[i]` for every `i`, in as few calls as the
/// kernel allows.
pub fn update<K: Pod, V: Pod>(map: BorrowedFd<'_>, keys: &[K], values: &[V]) -> io::Result<()> {
    if keys.len() != values.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "batch update: as many keys as values needed",
        ));
    }
    let mut done = 0;
    while done < keys.len() {
        let n = (keys.len() - done).min(u32::MAX as usize);
        let mut a = BatchAttr {
            keys: keys[done..].as_ptr() as u64,
            values: values[done..].as_ptr() as u64,
            count: n as u32,
            map_fd: map.as_raw_fd() as u32,
            ..Default::default()
        };
        bpf(BPF_MAP_UPDATE_BATCH, &mut a)?;
        if a.count == 0 {
            return Err(io::Error::other("batch update made no progress"));
        }
        done += a.count as usize;
    }
    Ok(())
}

/// Reads the first `n` entries of an ARRAY map.
pub fn lookup_array<V: Pod + Default + Clone>(map: BorrowedFd<'_>, n: u32) -> io::Result<Vec<V>> {
    let mut keys = vec![0u32; n as usize];
    let mut values = vec![V::default(); n as usize];
    let mut filled = 0usize;
    let mut token = 0u32;
    let mut first = true;
    while filled < n as usize {
        let mut a = BatchAttr {
            in_batch: if first {
                0
            } else {
                &token as *const u32 as u64
            },
            out_batch: &mut token as *mut u32 as u64,
            keys: keys[filled..].as_mut_ptr() as u64,
            values: values[filled..].as_mut_ptr() as u64,
            count: (n as usize - filled) as u32,
            map_fd: map.as_raw_fd() as u32,
            ..Default::default()
        };
        first = false;
        let r = bpf(BPF_MAP_LOOKUP_BATCH, &mut a);
        filled += a.count as usize;
        match r {
            Ok(()) => {}
            // The end of the map.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Err(e) => return Err(e),
        }
        if a.count == 0 {
            break;
        }
    }
    values.truncate(filled);
    Ok(values)
}

/// Calls `f` for every entry of a HASH or LRU_HASH map, reading `chunk`
/// entries per call; memory stays at one chunk whatever the map's size.
pub fn for_each_hash<K: Pod + Default + Clone, V: Pod + Default + Clone>(
    map: BorrowedFd<'_>,
    chunk: u32,
    mut f: impl FnMut(&K, &V),
) -> io::Result<()> {
    let mut keys = vec![K::default(); chunk as usize];
    let mut values = vec![V::default(); chunk as usize];
    // Hash maps' batch position is a bucket index (u32); 8 bytes leave room.
    let mut token = 0u64;
    let mut next = 0u64;
    let mut first = true;
    loop {
        let mut a = BatchAttr {
            in_batch: if first {
                0
            } else {
                &token as *const u64 as u64
            },
            out_batch: &mut next as *mut u64 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk,
            map_fd: map.as_raw_fd() as u32,
            ..Default::default()
        };
        first = false;
        let r = bpf(BPF_MAP_LOOKUP_BATCH, &mut a);
        for i in 0..a.count as usize {
            f(&keys[i], &values[i]);
        }
        match r {
            Ok(()) => token = next,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Deletes `keys`; returns how many were there to delete (a key evicted
/// meanwhile is skipped).
pub fn delete<K: Pod>(map: BorrowedFd<'_>, keys: &[K]) -> io::Result<usize> {
    let (mut done, mut deleted) = (0, 0);
    while done < keys.len() {
        let mut a = BatchAttr {
            keys: keys[done..].as_ptr() as u64,
            count: (keys.len() - done).min(u32::MAX as usize) as u32,
            map_fd: map.as_raw_fd() as u32,
            ..Default::default()
        };
        let r = bpf(BPF_MAP_DELETE_BATCH, &mut a);
        done += a.count as usize;
        deleted += a.count as usize;
        match r {
            Ok(()) => {}
            // The next key vanished meanwhile (LRU eviction): skip it.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => done += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

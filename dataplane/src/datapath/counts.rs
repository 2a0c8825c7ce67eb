//! The learned-station counts (`STATION_COUNT`) mapped into user space, so
//! user space changes a count with the same atomic add the programs use
//! (a lookup-then-update through syscalls would lose the programs' adds
//! that land in between).

use std::{
    os::fd::{AsRawFd as _, BorrowedFd},
    sync::atomic::{AtomicU64, Ordering},
};

use crate::error::{Error, Result};

/// `n` counters of a `BPF_F_MMAPABLE` array of `u64`, mapped shared.
pub struct MappedCounts {
    ptr: *mut AtomicU64,
    n: u32,
    len: usize,
}

// SAFETY: the mapping is shared memory accessed only through atomics, and
// lives until drop.
unsafe impl Send for MappedCounts {}
// SAFETY: as above: `&self` only does atomic adds.
unsafe impl Sync for MappedCounts {}

impl MappedCounts {
    /// Maps the array behind `fd` (`n` entries).
    pub fn new(fd: BorrowedFd<'_>, n: u32) -> Result<Self> {
        let len = (n as usize * 8).next_multiple_of(4096);
        // SAFETY: a fresh shared mapping of a BPF array fd; checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::Io {
                what: "mapping the learned-station counts".into(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Self {
            ptr: p.cast(),
            n,
            len,
        })
    }

    /// Adds `delta` to counter `i` (wrapping: `u64::MAX` subtracts one).
    pub fn add(&self, i: u32, delta: u64) {
        if i < self.n {
            // SAFETY: in bounds of the live mapping; 8-byte aligned (page
            // aligned base, u64 entries).
            unsafe { (*self.ptr.add(i as usize)).fetch_add(delta, Ordering::Relaxed) };
        }
    }
}

impl Drop for MappedCounts {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

//! A PACKET_MMAP transmit ring (TPACKET_V2) on an AF_PACKET socket, for
//! the user-space forwarder's client-side frames: each frame is written
//! straight into a slot the kernel shares, and one `send` per batch hands
//! every filled slot over, instead of a `sendmmsg` that copies each frame
//! out of a user buffer.
//!
//! Slot protocol (`Documentation/networking/packet_mmap.rst`): a slot whose
//! status is `TP_STATUS_AVAILABLE` is ours to fill; we write the frame,
//! its length, then `TP_STATUS_SEND_REQUEST`; the kernel marks it
//! `TP_STATUS_SENDING` while its skb is out and available again after.

use std::{
    os::fd::RawFd,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Result, bail};

use super::userspace::setopt;

/// `PACKET_VERSION` (`linux/if_packet.h`).
const PACKET_VERSION: libc::c_int = 10;
/// `PACKET_TX_RING`.
const PACKET_TX_RING: libc::c_int = 13;
/// `TPACKET_V2` (`enum tpacket_versions`).
const TPACKET_V2: libc::c_int = 1;
/// Slot states.
const TP_STATUS_AVAILABLE: u32 = 0;
const TP_STATUS_SEND_REQUEST: u32 = 1;
const TP_STATUS_WRONG_FORMAT: u32 = 4;
/// Where a V2 transmit slot's frame starts: `TPACKET2_HDRLEN` minus
/// `sizeof(struct sockaddr_ll)` (the kernel reads it there when
/// `PACKET_TX_HAS_OFF` is off).
const DATA_OFFSET: usize = 32;
/// Offset of `tp_len` in `struct tpacket2_hdr`.
const LEN_OFFSET: usize = 4;
/// Bytes a slot spans: a frame up to 2,016 bytes.
const FRAME_SIZE: usize = 2048;
/// Bytes per ring block (a page; the kernel wants whole pages).
const BLOCK_SIZE: usize = 4096;

/// `struct tpacket_req`.
#[repr(C)]
struct TpacketReq {
    block_size: u32,
    block_nr: u32,
    frame_size: u32,
    frame_nr: u32,
}

/// A mapped transmit ring on a socket the caller owns (and keeps open for
/// as long as the ring lives).
pub struct TxRing {
    fd: RawFd,
    map: *mut u8,
    len: usize,
    frames: usize,
    next: usize,
    queued: usize,
}

impl TxRing {
    /// Sets `fd` (an AF_PACKET socket) to TPACKET_V2 and maps a transmit
    /// ring of `frames` slots (rounded up to a whole block).
    pub fn new(fd: RawFd, frames: usize) -> Result<Self> {
        let per_block = BLOCK_SIZE / FRAME_SIZE;
        let blocks = frames.div_ceil(per_block).max(1);
        let frames = blocks * per_block;
        setopt(
            fd,
            libc::SOL_PACKET,
            PACKET_VERSION,
            TPACKET_V2,
            "PACKET_VERSION",
        )?;
        let req = TpacketReq {
            block_size: BLOCK_SIZE as u32,
            block_nr: blocks as u32,
            frame_size: FRAME_SIZE as u32,
            frame_nr: frames as u32,
        };
        setopt(fd, libc::SOL_PACKET, PACKET_TX_RING, req, "PACKET_TX_RING")?;
        let len = blocks * BLOCK_SIZE;
        // SAFETY: mapping the ring the kernel just allocated for `fd`, at
        // its full size; the result is checked.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(Self {
            fd,
            map: map.cast(),
            len,
            frames,
            next: 0,
            queued: 0,
        })
    }

    /// Status word of slot `i`, shared with the kernel.
    fn status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: slot `i` < `frames` lies inside the mapping, slots are
        // page-block aligned at FRAME_SIZE strides (so the word is
        // aligned), and the kernel only touches it atomically.
        unsafe { AtomicU32::from_ptr(self.map.add(i * FRAME_SIZE).cast()) }
    }

    /// The next slot's frame area, or None while the kernel still holds it
    /// (the ring is full: the caller drops the frame, as a full socket
    /// queue would).
    pub fn slot(&mut self) -> Option<&mut [u8]> {
        let s = self.status(self.next).load(Ordering::Acquire);
        if s != TP_STATUS_AVAILABLE && s & TP_STATUS_WRONG_FORMAT == 0 {
            return None;
        }
        // SAFETY: the slot is ours (status checked above) and its frame
        // area lies inside the mapping.
        Some(unsafe {
            std::slice::from_raw_parts_mut(
                self.map.add(self.next * FRAME_SIZE + DATA_OFFSET),
                FRAME_SIZE - DATA_OFFSET,
            )
        })
    }

    /// Hands the slot [`TxRing::slot`] returned to the kernel with a frame
    /// of `len` bytes.
    pub fn commit(&mut self, len: usize) {
        // SAFETY: `tp_len` of our slot, inside the mapping and aligned.
        unsafe {
            self.map
                .add(self.next * FRAME_SIZE + LEN_OFFSET)
                .cast::<u32>()
                .write_volatile(len as u32);
        }
        self.status(self.next)
            .store(TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.next = (self.next + 1) % self.frames;
        self.queued += 1;
    }

    /// Sends every committed frame (one system call, not waiting for the
    /// transmissions to finish).
    pub fn flush(&mut self) -> Result<()> {
        if self.queued == 0 {
            return Ok(());
        }
        self.queued = 0;
        // SAFETY: a send of no data on our socket: it transmits the ring.
        let r = unsafe { libc::send(self.fd, std::ptr::null(), 0, libc::MSG_DONTWAIT) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            // A busy device or a full queue leaves the frames for the next
            // flush, or drops them, as `sendmmsg` would have.
            if !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            ) && e.raw_os_error() != Some(libc::ENOBUFS)
            {
                bail!("sending the transmit ring: {e}");
            }
        }
        Ok(())
    }
}

impl Drop for TxRing {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.map.cast(), self.len) };
    }
}

//! One keepalive socket: a datagram with its sender, whether it was cut
//! short, and the kernel's count of datagrams it dropped for this socket.
//!
//! `recv_from` would truncate a datagram longer than the buffer without a
//! word and says nothing of a full receive queue; `recvmsg` reports both
//! (`MSG_TRUNC`, and the `SO_RXQ_OVFL` control message), so an oversized
//! keepalive is counted instead of echoed cut short, and a flood that
//! overflows the queue shows up in `ferry status` and the metrics.

use std::{
    io,
    mem::MaybeUninit,
    net::SocketAddr,
    os::fd::{AsFd as _, AsRawFd as _},
};

use mio::net::UdpSocket;
use socket2::{MaybeUninitSlice, MsgHdrMut, SockAddr, SockRef};

/// A received datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram {
    /// Bytes in the buffer.
    pub len: usize,
    /// Sender.
    pub peer: SocketAddr,
    /// Longer than the buffer (the rest was discarded).
    pub truncated: bool,
    /// The kernel's running count of datagrams dropped on this socket
    /// (present when it changed or with every datagram after the first
    /// drop, as the kernel sends it).
    pub dropped: Option<u32>,
}

/// Asks the kernel to report the socket's drop count with each datagram.
pub fn enable_drop_count(s: &UdpSocket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads `on` (a c_int of the given size) on a socket
    // fd this process owns.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RXQ_OVFL,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receives one datagram into `buf` (non-blocking: `WouldBlock` when none).
pub fn recv(s: &UdpSocket, buf: &mut [u8]) -> io::Result<Datagram> {
    let fd = s.as_fd();
    let sock = SockRef::from(&fd);
    // SAFETY: the storage is only read back through `as_socket`, for the
    // length recvmsg wrote.
    let mut addr = unsafe { SockAddr::try_init(|_, _| Ok(())) }?.1;
    // Room for one SO_RXQ_OVFL message (a u32) with its header, aligned.
    let mut control = [MaybeUninit::<u8>::uninit(); 64];
    // SAFETY: `buf` is initialised memory viewed as possibly-uninitialised
    // bytes, which recvmsg only writes.
    let data = unsafe {
        std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<MaybeUninit<u8>>(), buf.len())
    };
    let mut bufs = [MaybeUninitSlice::new(data)];
    let mut msg = MsgHdrMut::new()
        .with_addr(&mut addr)
        .with_buffers(&mut bufs)
        .with_control(&mut control);
    let n = sock.recvmsg(&mut msg, 0)?;
    let truncated = msg.flags().is_truncated();
    let control_len = msg.control_len();
    let peer = addr
        .as_socket()
        .ok_or_else(|| io::Error::other("datagram from a non-IP address"))?;
    // SAFETY: recvmsg wrote `control_len` bytes of control messages.
    let dropped = unsafe { drop_count(&control, control_len) };
    Ok(Datagram {
        len: n.min(buf.len()),
        peer,
        truncated,
        dropped,
    })
}

/// The SO_RXQ_OVFL value among the control messages in `control[..len]`.
///
/// # Safety
/// `control[..len]` must have been written by recvmsg.
unsafe fn drop_count(control: &[MaybeUninit<u8>], len: usize) -> Option<u32> {
    // SAFETY: an all-zero msghdr is a valid value of this plain C struct;
    // only its control fields are set, for the CMSG_* walk below.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_control = control.as_ptr() as *mut libc::c_void;
    hdr.msg_controllen = len.min(control.len());
    // SAFETY: CMSG_FIRSTHDR/NXTHDR stay within msg_controllen; each header
    // they return lies inside `control`, written by the kernel.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SO_RXQ_OVFL {
                return Some(std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<u32>()));
            }
            c = libc::CMSG_NXTHDR(&hdr, c);
        }
    }
    None
}

//! The route netlink socket as an event-loop service: it drains the
//! kernel's announcements and starts one new next-hop generation per
//! batch that holds a change (see the module above for which do).

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use anyhow::{Context as _, Result};
use mio::{Interest, Token, event::Event, unix::SourceFd};
use tracing::{debug, warn};

use super::Watch;
use crate::runtime::{
    event_loop::{Flow, Registrar, Service},
    node::Node,
};

/// Announcements that can change a FIB answer: links, neighbours,
/// addresses, routes and (IPv4) rules; the groups past this bit mask are
/// joined by number ([`MORE_GROUPS`]).
const GROUPS: libc::c_int = libc::RTMGRP_LINK
    | libc::RTMGRP_NEIGH
    | libc::RTMGRP_IPV4_IFADDR
    | libc::RTMGRP_IPV4_ROUTE
    | libc::RTMGRP_IPV4_RULE
    | libc::RTMGRP_IPV6_IFADDR
    | libc::RTMGRP_IPV6_ROUTE;

/// IPv6 rules, next-hop objects (what `ip nexthop` and FRR change
/// without a route announcement) and the per-interface forwarding
/// settings (the FIB answers only with forwarding on).
const MORE_GROUPS: [libc::c_uint; 4] = [
    libc::RTNLGRP_IPV6_RULE,
    libc::RTNLGRP_NEXTHOP,
    libc::RTNLGRP_IPV4_NETCONF,
    libc::RTNLGRP_IPV6_NETCONF,
];

/// Receive buffer asked of the kernel: a burst of neighbour announcements
/// (thousands of APs) should not overflow it; an overflow is handled.
const SOCKET_BUFFER: libc::c_int = 1 << 20;

/// Read buffer: the kernel's notifications are far smaller.
const READ_BUFFER: usize = 64 * 1024;

/// The subscribed socket and the neighbour record.
pub struct NextHopService {
    fd: OwnedFd,
    watch: Watch,
    buf: Vec<u8>,
}

impl NextHopService {
    /// Subscribes to the route netlink groups in this network namespace
    /// (the AP-side interface's, where the FIB lookups happen).
    pub fn bind() -> Result<Self> {
        // SAFETY: plain socket(2); the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error()).context("opening a route netlink socket");
        }
        // SAFETY: `raw` is a descriptor we just opened and own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: all-zero is a valid sockaddr_nl.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = GROUPS as u32;
        // SAFETY: a sockaddr_nl of the size given, alive for the call.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error())
                .context("subscribing to route, neighbour, address and link changes");
        }
        for g in MORE_GROUPS {
            setsockopt(
                &fd,
                libc::SOL_NETLINK,
                libc::NETLINK_ADD_MEMBERSHIP,
                g as libc::c_int,
            )
            .with_context(|| format!("subscribing to route netlink group {g}"))?;
        }
        // A smaller buffer only means an earlier overflow, which is handled.
        if let Err(e) = setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, SOCKET_BUFFER) {
            debug!("route netlink receive buffer: {e}");
        }
        Ok(Self {
            fd,
            watch: Watch::default(),
            buf: vec![0; READ_BUFFER],
        })
    }

    /// Reads until the socket is empty: whether anything read (or lost)
    /// may have changed a FIB answer.
    fn drain(&mut self) -> bool {
        let mut changed = false;
        loop {
            // SAFETY: reading into our own buffer of the length given.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n >= 0 {
                changed |= self
                    .buf
                    .get(..n as usize)
                    .is_some_and(|d| self.watch.feed(d));
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => return changed,
                Some(libc::EINTR) => continue,
                Some(libc::ENOBUFS) => {
                    debug!("route netlink announcements lost: refreshing every next hop");
                    self.watch.lost();
                    changed = true;
                }
                _ => {
                    warn!("reading route netlink announcements: {e}");
                    return true;
                }
            }
        }
    }
}

/// `setsockopt(2)` with an int value.
fn setsockopt(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: an int option value of the size given, alive for the call.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Service for NextHopService {
    fn register(&mut self, reg: &mut Registrar<'_>) -> Result<()> {
        reg.register(&mut SourceFd(&self.fd.as_raw_fd()), Interest::READABLE)
            .context("polling the route netlink socket")?;
        Ok(())
    }

    fn ready(
        &mut self,
        _token: Token,
        _ev: &Event,
        node: &mut Node,
        _reg: &mut Registrar<'_>,
    ) -> Result<Flow> {
        if self.drain() {
            node.refresh_next_hops();
        }
        Ok(Flow::Continue)
    }
}

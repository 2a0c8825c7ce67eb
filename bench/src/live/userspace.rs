//! The user-space contender: a CAPWAP forwarder built the way capwap-dp,
//! the only open-source AC data path, works. Per queue, two threads pinned
//! to that queue's core:
//!
//! - upstream: one UDP socket per thread on the data port (SO_REUSEPORT,
//!   so the kernel spreads APs over threads), `recvmmsg` batches of 64,
//!   tunnel lookup by source address, CAPWAP header checks, station check,
//!   802.1Q tag insertion, written straight into the PACKET_MMAP transmit
//!   ring of an AF_PACKET socket on the client side (TPACKET_V2,
//!   PACKET_QDISC_BYPASS; one `send` per batch, see `txring`);
//! - downstream: an AF_PACKET socket on the client side in a PACKET_FANOUT
//!   group by CPU, `recvmmsg` with PACKET_AUXDATA for the VLAN tag the
//!   kernel strips, station lookup, CAPWAP header, and `sendmmsg` to the
//!   AP through the thread's UDP socket.
//!
//! It uses ferry's shared layouts (`ferry_ebpf::capwap`, `dot11`, `vlan`,
//! the crafted CAPWAP header) so it does the same work on the same bytes.
//! Upstream it converts both payloads: 802.3 (T=0) as is, native 802.11
//! data frames (T=1) to 802.3 the way ferry does for the common case (a
//! data frame with an RFC 1042/bridge-tunnel SNAP header, its QoS user
//! priority as the 802.1p priority); other 802.11 frames are counted and
//! dropped.

use std::{
    collections::HashMap,
    fs::File,
    mem::{size_of, zeroed},
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
};

use anyhow::{Context as _, Result, bail};
use ferry_dataplane::craft;
use ferry_ebpf::{capwap, dot11, eth, vlan};

use super::txring::TxRing;

/// One tunnel as the forwarder keeps it.
#[derive(Clone, Copy, Debug)]
pub struct Tun {
    /// The client VLAN.
    pub vlan: u16,
    /// The AP's data address.
    pub ap: SocketAddrV4,
    /// Radio id for downstream headers.
    pub rid: u8,
}

/// The forwarder's tables (read-only while it runs).
#[derive(Debug, Default)]
pub struct Table {
    /// Tunnels by index.
    pub tunnels: Vec<Tun>,
    /// Tunnel index by AP address.
    pub by_addr: HashMap<Ipv4Addr, u32>,
    /// Tunnel index by station MAC.
    pub stations: HashMap<[u8; 6], u32>,
}

/// Frame counts, all threads.
#[derive(Debug, Default)]
pub struct Counts {
    /// Upstream frames sent to the client side.
    pub up: AtomicU64,
    /// Downstream frames sent to APs.
    pub down: AtomicU64,
    /// Frames dropped (unknown tunnel or station, bad header, other VLAN).
    pub dropped: AtomicU64,
    /// Stations learned (moved or new) upstream.
    pub learned: AtomicU64,
}

/// The running forwarder; stopped on drop.
pub struct Forwarder {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Result<()>>>,
    /// Its counts.
    pub counts: Arc<Counts>,
}

const BATCH: usize = 64;
/// Transmit ring slots per upstream thread: four receive batches.
const TX_SLOTS: usize = 4 * BATCH;
const BUF: usize = 2048;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

impl Forwarder {
    /// Starts `queues` thread pairs in namespace `ns` (by name), forwarding
    /// between 198.18.0.1:5247 and interface `client_if`.
    pub fn start(ns: &str, client_if: &str, queues: u32, table: Arc<Table>) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        if cores.is_empty() {
            bail!("cannot read this process's CPU set");
        }
        let mut threads = Vec::new();
        for q in 0..queues as usize {
            let (ns, ifname) = (ns.to_string(), client_if.to_string());
            let (stop, counts, table) = (stop.clone(), counts.clone(), table.clone());
            let core = cores[q % cores.len()];
            // One set of sockets per queue, opened in the namespace: the
            // downstream thread sends from the upstream thread's UDP
            // socket (a socket of its own in the SO_REUSEPORT group would
            // take a share of the APs and never read them).
            threads.push(std::thread::spawn(move || -> Result<()> {
                enter(&ns)?;
                core_affinity::set_for_current(core);
                let w = Worker::open(&ifname, &table, &counts)?;
                std::thread::scope(|s| {
                    let down = s.spawn(|| {
                        core_affinity::set_for_current(core);
                        w.downstream(&stop)
                    });
                    let up = w.upstream(&stop);
                    let down = down
                        .join()
                        .unwrap_or_else(|_| bail!("a downstream thread panicked"));
                    up.and(down)
                })
            }));
        }
        Ok(Self {
            stop,
            threads,
            counts,
        })
    }

    /// Stops the threads and reports the first error any of them had.
    pub fn stop(mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let mut first = Ok(());
        for t in self.threads.drain(..) {
            let r = t
                .join()
                .unwrap_or_else(|_| bail!("a forwarder thread panicked"));
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Moves the calling thread into network namespace `name`.
fn enter(name: &str) -> Result<()> {
    let f = File::open(format!("/var/run/netns/{name}"))?;
    // SAFETY: setns on a namespace fd we own; affects this thread only.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setns");
    }
    Ok(())
}

fn check(r: libc::c_int, what: &str) -> Result<libc::c_int> {
    if r < 0 {
        return Err(std::io::Error::last_os_error()).context(what.to_string());
    }
    Ok(r)
}

fn socket(domain: libc::c_int, kind: libc::c_int, proto: libc::c_int) -> Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = check(unsafe { libc::socket(domain, kind, proto) }, "socket")?;
    // SAFETY: fd was just returned by socket(2) and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `setsockopt(2)` with value `v`; `what` names the option in the error.
pub(super) fn setopt<T>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: T,
    what: &str,
) -> Result<()> {
    // SAFETY: `v` lives for the call and its size is passed with it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const v).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    check(r, what).map(|_| ())
}

/// A receiving socket's options: a 4 MiB buffer, and a timeout so the
/// thread sees the stop flag.
fn receiving(fd: RawFd, timeout: libc::timeval) -> Result<()> {
    setopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_RCVBUF,
        4i32 << 20,
        "SO_RCVBUF",
    )?;
    setopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_RCVTIMEO,
        timeout,
        "SO_RCVTIMEO",
    )
}

/// One thread's sockets.
struct Worker<'a> {
    udp: OwnedFd,
    tx: OwnedFd,
    rx: OwnedFd,
    table: &'a Table,
    counts: &'a Counts,
}

/// Receive and send buffers for one batch.
struct Batch {
    bufs: Vec<[u8; BUF]>,
    iov: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
    ctl: Vec<[u64; 8]>,
    hdrs: Vec<libc::mmsghdr>,
}

impl Batch {
    fn new() -> Box<Self> {
        // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs
        // for which all-zero is valid (null pointers, zero lengths).
        let (iov, names, hdrs) = unsafe { (zeroed(), zeroed(), zeroed()) };
        let mut b = Box::new(Self {
            bufs: vec![[0u8; BUF]; BATCH],
            iov: vec![iov; BATCH],
            names: vec![names; BATCH],
            ctl: vec![[0u64; 8]; BATCH],
            hdrs: vec![hdrs; BATCH],
        });
        b.reset(BATCH);
        b
    }

    /// Points every header at its buffer, name and control space.
    fn reset(&mut self, n: usize) {
        for i in 0..n {
            self.iov[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: BUF,
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_iov = &raw mut self.iov[i];
            h.msg_iovlen = 1;
            h.msg_name = (&raw mut self.names[i]).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
            h.msg_control = self.ctl[i].as_mut_ptr().cast();
            h.msg_controllen = size_of::<[u64; 8]>();
            self.hdrs[i].msg_len = 0;
        }
    }

    fn recv(&mut self, fd: RawFd) -> Result<usize> {
        self.reset(BATCH);
        // SAFETY: the headers point into buffers `self` owns, sized as declared.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            ) {
                return Ok(0);
            }
            return Err(e).context("recvmmsg");
        }
        Ok(n as usize)
    }

    /// Sends the first `n` outgoing messages (set up by the caller).
    fn send(&mut self, fd: RawFd, n: usize) -> Result<()> {
        let mut done = 0;
        while done < n {
            // SAFETY: as in `recv`.
            let r =
                unsafe { libc::sendmmsg(fd, self.hdrs[done..].as_mut_ptr(), (n - done) as u32, 0) };
            if r <= 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                // A full queue drops the rest of the batch, as capwap-dp does.
                return Ok(());
            }
            done += r as usize;
        }
        Ok(())
    }
}

impl<'a> Worker<'a> {
    fn open(client_if: &str, table: &'a Table, counts: &'a Counts) -> Result<Self> {
        let name = std::ffi::CString::new(client_if)?;
        // SAFETY: a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        if ifindex == 0 {
            bail!("no interface {client_if}");
        }
        let tmo = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        let udp = socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
        let u = udp.as_raw_fd();
        setopt(
            u,
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            1i32,
            "SO_REUSEPORT",
        )?;
        receiving(u, tmo)?;
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: capwap::DATA_PORT.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(super::lab::AC_ADDR),
            },
            sin_zero: [0; 8],
        };
        let len = size_of::<libc::sockaddr_in>() as u32;
        // SAFETY: bind with a sockaddr_in and its size.
        let r = unsafe { libc::bind(u, (&raw const addr).cast(), len) };
        check(r, "binding 198.18.0.1:5247")?;
        let all = (libc::ETH_P_ALL as u16).to_be();
        let ll = |proto: u16| libc::sockaddr_ll {
            sll_family: libc::AF_PACKET as u16,
            sll_protocol: proto,
            sll_ifindex: ifindex,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 0,
            sll_addr: [0; 8],
        };
        let tx = socket(libc::AF_PACKET, libc::SOCK_RAW, 0)?;
        let rx = socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(all))?;
        for (fd, proto) in [(&tx, 0u16), (&rx, all)] {
            let a = ll(proto);
            let len = size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: bind with a sockaddr_ll and its size.
            let r = unsafe { libc::bind(fd.as_raw_fd(), (&raw const a).cast(), len) };
            check(r, "binding a packet socket")?;
        }
        let (t, r) = (tx.as_raw_fd(), rx.as_raw_fd());
        setopt(
            t,
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            1i32,
            "PACKET_QDISC_BYPASS",
        )?;
        setopt(
            r,
            libc::SOL_PACKET,
            libc::PACKET_AUXDATA,
            1i32,
            "PACKET_AUXDATA",
        )?;
        setopt(
            r,
            libc::SOL_PACKET,
            PACKET_IGNORE_OUTGOING,
            1i32,
            "PACKET_IGNORE_OUTGOING",
        )?;
        receiving(r, tmo)?;
        let fanout = (std::process::id() & 0xffff) as i32 | (libc::PACKET_FANOUT_CPU << 16) as i32;
        setopt(
            r,
            libc::SOL_PACKET,
            libc::PACKET_FANOUT,
            fanout,
            "PACKET_FANOUT",
        )?;
        Ok(Self {
            udp,
            tx,
            rx,
            table,
            counts,
        })
    }

    fn upstream(&self, stop: &AtomicBool) -> Result<()> {
        let mut rx = Batch::new();
        let mut ring = TxRing::new(self.tx.as_raw_fd(), TX_SLOTS)?;
        let mut learned: HashMap<[u8; 6], u32> = HashMap::new();
        while !stop.load(Ordering::Relaxed) {
            let n = rx.recv(self.udp.as_raw_fd())?;
            let mut out = 0;
            for i in 0..n {
                let len = rx.hdrs[i].msg_len as usize;
                // SAFETY: recvmmsg filled an AF_INET address into this storage.
                let sin: libc::sockaddr_in = unsafe { *(&raw const rx.names[i]).cast() };
                let src = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                // A full ring drops the frame, as a full socket queue would.
                let done = ring
                    .slot()
                    .and_then(|slot| self.up_one(&rx.bufs[i][..len], src, &mut learned, slot));
                match done {
                    Some(l) => {
                        ring.commit(l);
                        out += 1;
                    }
                    None => {
                        self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            ring.flush()?;
            self.counts.up.fetch_add(out as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// One CAPWAP message from `src` to a tagged client frame in `out`.
    fn up_one(
        &self,
        msg: &[u8],
        src: Ipv4Addr,
        learned: &mut HashMap<[u8; 6], u32>,
        out: &mut [u8],
    ) -> Option<usize> {
        let id = *self.table.by_addr.get(&src)?;
        let tun = self.table.tunnels.get(id as usize)?;
        let h = capwap::Header::parse(msg.get(..capwap::FIXED_LEN)?.try_into().ok()?);
        if h.version != 0 || h.kind != capwap::TYPE_CLEAR || h.keepalive || h.fragment {
            return None;
        }
        let inner = msg.get(h.header_bytes()..)?;
        // (destination and source, 802.1p priority, EtherType onwards)
        let (da_sa, pcp, rest) = if h.native {
            dot11_to_8023(inner)?
        } else {
            let da_sa: [u8; 12] = inner.get(..12)?.try_into().ok()?;
            (da_sa, 0, inner.get(12..)?)
        };
        let len = vlan::TAGGED_HLEN - 2 + rest.len();
        if rest.len() < 2 || len > out.len() {
            return None;
        }
        let sa: [u8; 6] = da_sa[6..].try_into().ok()?;
        if self.table.stations.get(&sa) != Some(&id) && learned.insert(sa, id) != Some(id) {
            self.counts.learned.fetch_add(1, Ordering::Relaxed);
        }
        out[..12].copy_from_slice(&da_sa);
        out[12..16].copy_from_slice(&vlan::tag(vlan::tci(pcp, tun.vlan)));
        out[16..len].copy_from_slice(rest);
        Some(len)
    }

    fn downstream(&self, stop: &AtomicBool) -> Result<()> {
        let mut rx = Batch::new();
        let mut tx = Batch::new();
        let mut dests: Vec<libc::sockaddr_in> = Vec::with_capacity(BATCH);
        while !stop.load(Ordering::Relaxed) {
            let n = rx.recv(self.rx.as_raw_fd())?;
            tx.reset(n);
            dests.clear();
            for i in 0..n {
                let len = rx.hdrs[i].msg_len as usize;
                let vid = aux_vlan(&rx.hdrs[i].msg_hdr);
                let frame = &rx.bufs[i][..len.min(BUF)];
                let Some((ap, l)) = self.down_one(frame, vid, &mut tx.bufs[dests.len()]) else {
                    self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let k = dests.len();
                tx.iov[k].iov_len = l;
                dests.push(libc::sockaddr_in {
                    sin_family: libc::AF_INET as u16,
                    sin_port: ap.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*ap.ip()).to_be(),
                    },
                    sin_zero: [0; 8],
                });
            }
            for (k, d) in dests.iter_mut().enumerate() {
                let h = &mut tx.hdrs[k].msg_hdr;
                h.msg_name = (d as *mut libc::sockaddr_in).cast();
                h.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
                h.msg_controllen = 0;
            }
            tx.send(self.udp.as_raw_fd(), dests.len())?;
            self.counts
                .down
                .fetch_add(dests.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// One client frame (tag stripped by the kernel, `vid` from auxdata)
    /// to a CAPWAP message in `out` and the AP it goes to.
    fn down_one(
        &self,
        frame: &[u8],
        vid: Option<u16>,
        out: &mut [u8; BUF],
    ) -> Option<(SocketAddrV4, usize)> {
        if frame.len() < eth::HLEN || frame.len() + capwap::FIXED_LEN > BUF {
            return None;
        }
        let da: [u8; 6] = frame[..6].try_into().ok()?;
        let id = *self.table.stations.get(&da)?;
        let tun = self.table.tunnels.get(id as usize)?;
        if vid != Some(tun.vlan) {
            return None;
        }
        out[..capwap::FIXED_LEN].copy_from_slice(&craft::header_8023(tun.rid).encode());
        out[capwap::FIXED_LEN..capwap::FIXED_LEN + frame.len()].copy_from_slice(frame);
        Some((tun.ap, capwap::FIXED_LEN + frame.len()))
    }
}

/// The VLAN id the kernel took off a received frame (PACKET_AUXDATA).
/// An 802.11 data frame with a SNAP header as (DA SA, priority, the
/// EtherType and payload), by ferry's layouts (`ferry_ebpf::dot11`);
/// None for anything else (management, null, protected, A-MSDU, no SNAP).
fn dot11_to_8023(f: &[u8]) -> Option<([u8; 12], u8, &[u8])> {
    let fc = dot11::FrameControl::parse(f.get(..2)?.try_into().ok()?);
    if fc.ftype != dot11::TYPE_DATA || fc.is_null() || fc.protected {
        return None;
    }
    let mut pcp = 0;
    if fc.is_qos() {
        let q = *f.get(fc.qos_offset())?;
        if q & dot11::QOS_AMSDU != 0 {
            return None;
        }
        pcp = dot11::user_priority(q);
    }
    let (da, sa) = fc.da_sa_offsets();
    let mut da_sa = [0u8; 12];
    da_sa[..6].copy_from_slice(f.get(da..da + 6)?);
    da_sa[6..].copy_from_slice(f.get(sa..sa + 6)?);
    let body = f.get(fc.header_len()..)?;
    if !dot11::is_snap(body.get(..6)?.try_into().ok()?) {
        return None;
    }
    Some((da_sa, pcp, body.get(6..)?))
}

fn aux_vlan(h: &libc::msghdr) -> Option<u16> {
    // SAFETY: walking the control messages recvmmsg wrote into our buffer,
    // with the libc macros that bound every step by msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA {
                let aux: libc::tpacket_auxdata =
                    std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
                    return Some(vlan::vid(aux.tp_vlan_tci));
                }
                return None;
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

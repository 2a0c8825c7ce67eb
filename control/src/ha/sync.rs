//! The sync stream as an event-loop service: one TCP connection to the
//! peer's first path, carrying this node's learned stations to the peer
//! and the peer's into this node's live station table.
//!
//! - **Who connects.** The node with the lower address on the first path
//!   connects (once the peer's heartbeats arrive, and again after a
//!   drop); the other only
//!   accepts, and only from an address in `ha.peers` (anything else is
//!   closed at once and counted). A new connection from the peer replaces
//!   the one it had: the peer connects only after giving that one up.
//! - **Which path.** The first path that carries heartbeats; a path
//!   marked down for a second is left for the next, a path whose attempt
//!   failed or whose stream ended early is held, and the stream returns
//!   to an earlier path once it has been up for ten seconds ([`path`]).
//!   A new connection replaces the old one before it has proved itself
//!   with a message: anything that connects from the peer's address can
//!   cut the stream (it is then refused at its first message and the
//!   peer reconnects).
//! - **Bulk.** On every (re)connect each side sends a snapshot of the
//!   stations of the groups it masters, between a start marker and an end
//!   marker carrying the count; the receiver installs them as they come
//!   and answers the end marker with an acknowledgement carrying what it
//!   received. Both sides record the bulk in `ferry cluster history`.
//!   After its first complete bulk a node's copy of every group counts as
//!   complete for the election.
//! - **Updates.** Every [`SCAN_INTERVAL`] the sender walks its station
//!   table (batch reads) and sends what changed since it last sent it:
//!   learned stations reach the peer within one interval plus the link
//!   ([`stations`]).
//!   A table so large that its walk takes more than a quarter of the
//!   interval is walked less often ([`scan_pause`]), so the periodic
//!   walks take at most about a fifth of the event loop. A node that
//!   masters no group does not walk at all.
//! - **Only masters speak for a group.** A node sends the stations of the
//!   groups it masters, and ignores synced stations of groups it masters
//!   (its own learning is newer): no echo, no loop.
//!
//! - **Handovers.** The planned handover's steps ([`super::handover`])
//!   travel on this stream too, behind the station updates they must
//!   follow ([`handoff`]).
//!
//! Messages are sealed like heartbeats ([`super::wire`], channel 0) and
//! refused by the same classes; a refused message drops the connection.

mod handoff;
mod learned;
mod path;
mod stations;
mod table;

use stations::{SentAs, scan_pause};

use std::{
    collections::HashMap,
    io::{ErrorKind, Read as _, Write as _},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use ferry_ebpf::abi::StationKey;
use mio::{
    Interest, Token,
    event::Event as MioEvent,
    net::{TcpListener, TcpStream},
};
use tracing::{info, warn};

use super::{
    Control, Revisions,
    handover::{Handovers, Inbox},
    key::Key,
    stream::{self, Msg},
    view::{Event, EventKind, SyncStatus},
    wire::{self, HEADER_LEN, Kind, Opener, Sealer},
};
use crate::{
    config::HaConfig,
    runtime::{
        event_loop::{Flow, Registrar, Service},
        node::Node,
    },
};

/// How often learned stations are looked for and sent.
pub const SCAN_INTERVAL: Duration = Duration::from_millis(200);
/// How long to wait between connection attempts.
const RECONNECT: Duration = Duration::from_secs(1);
/// How often a node that connects looks for a path carrying heartbeats
/// while none does.
const HEARD_POLL: Duration = Duration::from_millis(100);
/// How often a stream's path is checked (the station walks may pause
/// for seconds at 1,000,000 stations).
const PATH_CHECK: Duration = Duration::from_millis(200);
/// How long a connection attempt may take before the next path is tried
/// (a SYN into a cut link is retried for minutes).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Stop scanning while this much is still queued for the peer.
const OUT_HIGH: usize = 64 << 20;

/// One connection to the peer.
struct Conn {
    stream: TcpStream,
    token: Token,
    /// A connect still under way (wait for writable).
    connecting: bool,
    /// The peer path (index into `ha.peers`) it runs on.
    path: usize,
    /// When it was made.
    since: Instant,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    /// Bulk being received: when it started and stations so far.
    bulk_rx: Option<(Instant, u64)>,
}

/// The sync stream service.
pub struct SyncService {
    listener: TcpListener,
    listen_token: Token,
    peers: Vec<IpAddr>,
    port: u16,
    /// Which paths carry heartbeats, and where the stream goes.
    paths: path::Paths,
    we_connect: bool,
    sealer: Sealer,
    opener: Opener,
    conn: Option<Conn>,
    next_connect: Instant,
    next_scan: Instant,
    next_path_check: Instant,
    sent: HashMap<StationKey, SentAs>,
    status: SyncStatus,
    /// A node's copy is complete after its first bulk: told once.
    synced_told: bool,
    /// Orders from the admin socket and the HA thread.
    inbox: Inbox,
    /// Handovers under way, both ways.
    handovers: Handovers,
    /// When the service was made: a deadline that is always due.
    bound_at: Instant,
    /// The pair's table revisions.
    revisions: Revisions,
    /// A table being received: its revision and the parts so far.
    table_rx: Option<(u64, Vec<String>)>,
    /// Learned ports and bindings last sent.
    learned: learned::Sent,
}

impl SyncService {
    /// Binds the sync listener (before the data plane is touched). `local`
    /// is this node's address towards the first peer path.
    pub fn bind(
        ha: &HaConfig,
        key: Key,
        epoch: u64,
        local: IpAddr,
        (inbox, revisions): (Inbox, Revisions),
    ) -> Result<Self> {
        let any: IpAddr = if ha.peers[0].is_ipv4() {
            IpAddr::from([0, 0, 0, 0])
        } else {
            IpAddr::from([0u16; 8])
        };
        let listener = TcpListener::bind(SocketAddr::new(any, ha.port))
            .with_context(|| format!("binding the HA sync listener (TCP port {})", ha.port))?;
        Ok(Self {
            listener,
            listen_token: Token(usize::MAX),
            peers: ha.peers.clone(),
            port: ha.port,
            paths: path::Paths::new(ha.peers.len(), Instant::now()),
            we_connect: local < ha.peers[0],
            sealer: Sealer::new(key.clone(), epoch),
            opener: Opener::new(key),
            conn: None,
            next_connect: Instant::now(),
            next_scan: Instant::now(),
            next_path_check: Instant::now(),
            sent: HashMap::new(),
            status: SyncStatus::default(),
            synced_told: false,
            inbox,
            handovers: Handovers::default(),
            bound_at: Instant::now(),
            revisions,
            table_rx: None,
            learned: learned::Sent::default(),
        })
    }

    fn publish(&self, node: &Node) {
        if let Some(ha) = &node.ha {
            ha.set_sync(self.status.clone());
        }
    }

    fn event(node: &Node, kind: EventKind, detail: String) {
        info!(kind = ?kind, "HA sync: {detail}");
        if let Some(ha) = &node.ha {
            ha.send(Control::Event(Event::now(kind, detail)));
        }
    }

    fn adopt(
        &mut self,
        mut stream: TcpStream,
        (connecting, path): (bool, usize),
        reg: &mut Registrar<'_>,
    ) {
        let _ = stream.set_nodelay(true);
        match reg.register(&mut stream, Interest::READABLE | Interest::WRITABLE) {
            Ok(token) => {
                self.conn = Some(Conn {
                    stream,
                    token,
                    connecting,
                    path,
                    since: Instant::now(),
                    inbuf: Vec::new(),
                    out: Vec::new(),
                    bulk_rx: None,
                });
            }
            Err(e) => warn!("HA sync: registering the connection: {e}"),
        }
    }

    fn drop_conn(&mut self, node: &Node, reg: &mut Registrar<'_>, why: &str) {
        self.handovers_lost(node);
        if let Some(mut c) = self.conn.take() {
            reg.deregister(&mut c.stream, c.token);
            if c.connecting {
                warn!(
                    "HA sync: connecting to {} (path {}): {why}",
                    self.peers[c.path],
                    c.path + 1
                );
            } else {
                self.paths.ended(c.path, c.since, Instant::now());
                Self::event(node, EventKind::Sync, format!("sync stream down: {why}"));
            }
        }
        self.status.connected = false;
        self.status.path = None;
        self.status.bulk_sent = false;
        self.next_connect = Instant::now() + RECONNECT;
        self.publish(node);
    }

    /// The connection is up: send the bulk snapshot.
    fn established(&mut self, node: &mut Node) {
        let Some(on) = self.conn.as_ref().map(|c| c.path) else {
            return;
        };
        self.paths.connected(on, Instant::now());
        self.status.connected = true;
        self.status.path = Some(self.peers[on]);
        Self::event(
            node,
            EventKind::Sync,
            format!("sync stream up with {} (path {})", self.peers[on], on + 1),
        );
        self.bulk(node);
        // One table for the pair: each side offers its own, the receiver
        // takes it if newer (or, at an equal revision, by the tie rule of
        // `revision`), so tables changed apart converge.
        self.send_table(node, self.revisions.own());
    }

    /// Sends a bulk snapshot: every station of the groups mastered here,
    /// between the markers.
    fn bulk(&mut self, node: &mut Node) {
        self.sent.clear();
        self.learned_reset();
        self.queue(&stream::marker(&Msg::BulkStart));
        let t0 = Instant::now();
        let n = self.scan(node);
        self.scan_learned(node);
        // Paced like the periodic walks: a bulk is one.
        self.next_scan = Instant::now() + scan_pause(t0.elapsed());
        self.queue(&stream::marker(&Msg::BulkEnd(n)));
        Self::event(
            node,
            EventKind::BulkStart,
            format!(
                "sending {n} stations (read in {} ms)",
                t0.elapsed().as_millis()
            ),
        );
        self.publish(node);
    }

    fn queue(&mut self, body: &[u8]) {
        let Some(c) = self.conn.as_mut() else {
            return;
        };
        match self.sealer.seal(Kind::Stream, wire::STREAM, body) {
            Ok(m) => c.out.extend_from_slice(&m),
            Err(e) => warn!("HA sync: sealing a message: {e}"),
        }
    }

    fn flush(&mut self, node: &Node, reg: &mut Registrar<'_>) {
        let Some(c) = self.conn.as_mut() else { return };
        let mut done = 0;
        let r = loop {
            if done == c.out.len() {
                break Ok(());
            }
            match c.stream.write(&c.out[done..]) {
                Ok(0) => break Err("peer closed".to_string()),
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => break Err(e.to_string()),
            }
        };
        c.out.drain(..done);
        if let Err(e) = r {
            self.drop_conn(node, reg, &e);
        }
    }

    fn read(&mut self, node: &mut Node, reg: &mut Registrar<'_>) {
        let Some(c) = self.conn.as_mut() else { return };
        let mut buf = [0u8; 65_536];
        let closed = loop {
            match c.stream.read(&mut buf) {
                Ok(0) => break Some("peer closed".to_string()),
                Ok(n) => c.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break None,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => break Some(e.to_string()),
            }
        };
        if let Err(e) = self.messages(node) {
            self.drop_conn(node, reg, &e);
            return;
        }
        if let Some(why) = closed {
            self.drop_conn(node, reg, &why);
        }
    }

    /// Handles every whole message in the input buffer.
    fn messages(&mut self, node: &mut Node) -> Result<(), String> {
        loop {
            let Some(c) = self.conn.as_mut() else {
                return Ok(());
            };
            let Some(header) = c.inbuf.get(..HEADER_LEN) else {
                return Ok(());
            };
            let header: [u8; HEADER_LEN] = header.try_into().map_err(|_| "header")?;
            let len = wire::message_len(&header).map_err(|r| self.refused(node, &r))?;
            let Some(c) = self.conn.as_mut() else {
                return Ok(());
            };
            if c.inbuf.len() < len {
                return Ok(());
            }
            let msg: Vec<u8> = c.inbuf.drain(..len).collect();
            let body = match self.opener.open(&msg, wire::STREAM) {
                Ok(m) if m.kind == Kind::Stream => m.body.to_vec(),
                Ok(_) => {
                    return Err(self.refused(
                        node,
                        &wire::Rejected::Malformed("a heartbeat on the sync stream"),
                    ));
                }
                Err(r) => return Err(self.refused(node, &r)),
            };
            let m = stream::decode(&body).map_err(|e| format!("undecodable message: {e}"))?;
            self.handle(node, m);
        }
    }

    fn refused(&self, node: &Node, r: &wire::Rejected) -> String {
        if let Some(ha) = &node.ha {
            ha.count_refused(r);
        }
        format!("refused a message: {r}")
    }

    fn handle(&mut self, node: &mut Node, m: Msg) {
        match m {
            Msg::BulkStart => {
                if let Some(c) = self.conn.as_mut() {
                    c.bulk_rx = Some((Instant::now(), 0));
                }
            }
            Msg::Stations(recs) => {
                let n = self.install(node, recs);
                if let Some((_, k)) = self.conn.as_mut().and_then(|c| c.bulk_rx.as_mut()) {
                    *k += n;
                }
            }
            Msg::BulkEnd(sent) => {
                let (t0, got) = self
                    .conn
                    .as_mut()
                    .and_then(|c| c.bulk_rx.take())
                    .unwrap_or((Instant::now(), 0));
                let ms = t0.elapsed().as_millis() as u64;
                self.status.bulk_received = true;
                self.status.last_bulk = Some((got, ms));
                self.queue(&stream::marker(&Msg::BulkAck(got)));
                Self::event(
                    node,
                    EventKind::BulkEnd,
                    format!("received {got} stations of {sent} sent, in {ms} ms"),
                );
                if !self.synced_told
                    && let (Some(ha), Some(h)) = (&node.ha, &node.tables.config.ha)
                {
                    for g in &h.groups {
                        ha.send(Control::Synced {
                            group: g.name.clone(),
                            synced: true,
                        });
                    }
                    self.synced_told = true;
                }
            }
            Msg::BulkAck(n) => {
                self.status.bulk_sent = true;
                Self::event(
                    node,
                    EventKind::BulkEnd,
                    format!("the peer installed our bulk: {n} stations"),
                );
            }
            Msg::Control(h) => self.control(node, h),
        }
        self.publish(node);
    }
}

impl Service for SyncService {
    fn register(&mut self, reg: &mut Registrar<'_>) -> Result<()> {
        self.listen_token = reg.register(&mut self.listener, Interest::READABLE)?;
        Ok(())
    }

    fn ready(
        &mut self,
        token: Token,
        ev: &MioEvent,
        node: &mut Node,
        reg: &mut Registrar<'_>,
    ) -> Result<Flow> {
        if token == self.listen_token {
            loop {
                match self.listener.accept() {
                    Ok((stream, from)) => {
                        let Some(on) = self.peers.iter().position(|p| *p == from.ip()) else {
                            // Not the peer: closed at once.
                            self.status.refused_connections += 1;
                            continue;
                        };
                        if self.we_connect {
                            // Not the connection this side takes.
                            self.status.refused_connections += 1;
                            continue;
                        }
                        if self.conn.is_some() {
                            // The peer gave its connection up (a path
                            // went silent there first, or it moved back).
                            self.drop_conn(node, reg, "the peer connected again");
                        }
                        self.adopt(stream, (false, on), reg);
                        self.established(node);
                        self.flush(node, reg);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        warn!("HA sync: accepting: {e}");
                        break;
                    }
                }
            }
            self.publish(node);
            return Ok(Flow::Continue);
        }
        let Some(c) = self.conn.as_mut() else {
            return Ok(Flow::Continue);
        };
        if token != c.token {
            return Ok(Flow::Continue);
        }
        if c.connecting {
            let error = c.stream.take_error().ok().flatten();
            if ev.is_error() || error.is_some() {
                let on = c.path;
                self.paths.failed(on, Instant::now());
                let why = error.map_or("connect failed".to_string(), |e| e.to_string());
                self.drop_conn(node, reg, &why);
                return Ok(Flow::Continue);
            }
            if !ev.is_writable() || c.stream.peer_addr().is_err() {
                return Ok(Flow::Continue);
            }
            c.connecting = false;
            self.established(node);
        }
        if ev.is_readable() || ev.is_read_closed() {
            self.read(node, reg);
        }
        self.flush(node, reg);
        Ok(Flow::Continue)
    }

    fn deadline(&self) -> Option<Instant> {
        if !self.inbox.is_empty() {
            // Due already (a moment the loop's clock has passed).
            return Some(self.bound_at);
        }
        let own = match &self.conn {
            None if self.we_connect => Some(self.next_connect),
            None => None,
            Some(c) if c.connecting => Some(c.since + CONNECT_TIMEOUT),
            Some(_) => Some(self.next_scan.min(self.next_path_check)),
        };
        if self.handovers.busy() {
            let soon = Instant::now() + handoff::STEP;
            return Some(own.map_or(soon, |d| d.min(soon)));
        }
        own
    }

    fn timer(&mut self, now: Instant, node: &mut Node, reg: &mut Registrar<'_>) {
        self.orders(node);
        self.handover_tick(node, now);
        self.follow_paths(node, now, reg);
        self.next_path_check = now + PATH_CHECK;
        match &self.conn {
            None if self.we_connect && now >= self.next_connect => self.connect(now, reg),
            Some(c) if c.connecting && now >= c.since + CONNECT_TIMEOUT => {
                let on = c.path;
                self.paths.failed(on, now);
                self.drop_conn(node, reg, "timed out");
            }
            Some(c) if !c.connecting && now >= self.next_scan => {
                let t0 = Instant::now();
                let before = self.status.scan_us;
                let sent = if c.out.len() < OUT_HIGH {
                    self.scan(node) + self.scan_learned(node) as u64
                } else {
                    0
                };
                self.next_scan = Instant::now() + scan_pause(t0.elapsed());
                if sent > 0 || self.status.scan_us != before {
                    self.publish(node);
                }
            }
            _ => {}
        }
        self.flush(node, reg);
    }
}

/// Which groups forward here, as the kernel has it, by data plane index
/// (index 0, no group, is never one; empty without `[ha]`).
fn active_groups(node: &Node) -> Vec<bool> {
    let n = node.tables.config.ha.as_ref().map_or(0, |h| h.groups.len());
    if n == 0 {
        return Vec::new();
    }
    (0..=n)
        .map(|g| g > 0 && node.dp.group_active(g as u16).unwrap_or(false))
        .collect()
}

//! The HA thread: heartbeats on every peer path, the election, and the
//! role writes, on a thread and a socket of their own.
//!
//! Why a thread: a heartbeat that waits behind a 25,600-tunnel swap or a
//! station flush in the event loop looks like a dead node to the peer.
//! Why the role write is here: the election's decision and the data plane
//! change are one step (keepalived's notify scripts run seconds late;
//! conntrackd commits after the address moved). The thread owns its own
//! handle on the pinned role map, so a flip never waits for the event loop.
//!
//! Each interval the thread sends one sealed heartbeat per path (path `i`
//! is `ha.peers[i]`, sealed on channel `i + 1`), then lets the election
//! look at the clock. It wakes for a datagram, an order from the event
//! loop ([`Control`]), the next heartbeat, or the next moment the election
//! may decide (a group's dead interval running out), whichever is first.
//! A datagram from an address not in `ha.peers` is counted and never
//! opened; one that fails [`super::wire::Opener`] is counted by class.

use std::{
    io::ErrorKind,
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use ferry_dataplane::datapath::{GroupRoles, coarse_now_ns};
use mio::{Events, Interest, Poll, Token, Waker};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{
    Control, Shared,
    election::{Decision, Election, PeerGroup, Reason, Role},
    view::{Event, EventKind},
    wire::{Kind, Opener, Sealer},
};
use crate::config::{ElectionMode, HaConfig};

mod publish;

const SOCKET: Token = Token(0);
const WAKE: Token = Token(1);

/// A heartbeat's body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Advert {
    /// The sender's node name.
    pub node: String,
    /// Its view of every group it has.
    pub groups: Vec<(String, PeerGroup)>,
    /// Its table revision.
    #[serde(default)]
    pub revision: u64,
    /// Its `ha.licenses` (the pair's licence pool is both nodes').
    #[serde(default)]
    pub licenses: Option<u32>,
}

/// The heartbeat socket, bound before the data plane is touched (a start
/// that cannot serve changes nothing).
pub fn bind(ha: &HaConfig) -> Result<UdpSocket> {
    let any: IpAddr = if ha.peers.iter().all(IpAddr::is_ipv4) {
        IpAddr::from([0, 0, 0, 0])
    } else {
        IpAddr::from([0u16; 8])
    };
    let s = UdpSocket::bind(SocketAddr::new(any, ha.port))
        .with_context(|| format!("binding the HA heartbeat socket (UDP port {})", ha.port))?;
    s.set_nonblocking(true)
        .context("making the heartbeat socket non-blocking")?;
    Ok(s)
}

/// This node's address towards `peer` (the source the kernel picks):
/// elections break ties by it, so both nodes must see the same two.
pub fn local_address(peer: IpAddr) -> Result<IpAddr> {
    let any: IpAddr = if peer.is_ipv4() {
        IpAddr::from([0, 0, 0, 0])
    } else {
        IpAddr::from([0u16; 8])
    };
    let s = UdpSocket::bind(SocketAddr::new(any, 0)).context("finding our peer-side address")?;
    s.connect(SocketAddr::new(peer, 9))
        .with_context(|| format!("no route to the HA peer {peer}"))?;
    Ok(s.local_addr()?.ip())
}

/// Everything the thread owns.
pub(super) struct Link {
    pub(super) node: String,
    pub(super) ha: HaConfig,
    pub(super) socket: mio::net::UdpSocket,
    pub(super) sealer: Sealer,
    pub(super) opener: Opener,
    pub(super) election: Election,
    pub(super) roles: GroupRoles,
    pub(super) announcer: super::announce::Announcer,
    pub(super) shared: Arc<Mutex<Shared>>,
    pub(super) rx: mpsc::Receiver<Control>,
    pub(super) local: IpAddr,
    /// Per path: when last heard, heartbeats accepted.
    pub(super) heard: Vec<(Option<Instant>, u64)>,
    /// Per path: heartbeats sent.
    pub(super) sent: Vec<u64>,
    /// Per group: the role the data plane was last set to (`None`: the
    /// write failed, retried next round).
    pub(super) installed: Vec<Option<bool>>,
    /// Per group: released to the peer by a handover but still forwarding
    /// until the drain ends ([`Control::Stand`]).
    pub(super) draining: Vec<bool>,
    /// Per group: its data packets here at the last round (the AP
    /// witness looks for new ones while the peer is silent).
    pub(super) last_rx: Vec<Option<u64>>,
    pub(super) inbox: super::handover::Inbox,
    pub(super) revisions: super::Revisions,
    pub(super) reasons: Vec<Option<Reason>>,
    pub(super) peer_view: Option<Advert>,
    pub(super) peer_up: Option<bool>,
    pub(super) path_up: Vec<bool>,
}

impl Link {
    /// Runs until [`Control::Stop`] or the sender side is gone.
    pub(super) fn run(mut self, mut poll: Poll) {
        let mut events = Events::with_capacity(16);
        let mut next_beat = Instant::now();
        let mut buf = vec![0u8; 65_536];
        loop {
            let now = Instant::now();
            if now >= next_beat {
                self.send_heartbeats(now);
                next_beat += self.ha.heartbeat;
                if next_beat <= now {
                    next_beat = now + self.ha.heartbeat;
                }
            }
            self.decide(now);
            self.publish(now);
            let wake = self
                .election
                .next_deadline()
                .filter(|d| *d > now)
                .map_or(next_beat, |d| d.min(next_beat));
            if let Err(e) = poll.poll(&mut events, Some(wake.saturating_duration_since(now)))
                && e.kind() != ErrorKind::Interrupted
            {
                warn!("HA thread: polling: {e}");
                std::thread::sleep(Duration::from_millis(1));
            }
            for ev in events.iter() {
                if ev.token() == SOCKET {
                    self.receive(&mut buf);
                }
            }
            loop {
                match self.rx.try_recv() {
                    Ok(Control::Stop) | Err(mpsc::TryRecvError::Disconnected) => return,
                    Ok(c) => self.control(c),
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
        }
    }

    fn send_heartbeats(&mut self, now: Instant) {
        // Renew the lease of every group mastered here first: the data
        // plane forwards a group only while its lease runs.
        for i in 0..self.installed.len() {
            if self.forwards(i) {
                self.install(i, true);
            }
        }
        let advert = Advert {
            node: self.node.clone(),
            groups: self.election.advert(now),
            revision: self.revisions.own(),
            licenses: Some(self.ha.licenses),
        };
        let body = match serde_json::to_vec(&advert) {
            Ok(b) => b,
            Err(e) => {
                warn!("HA: encoding a heartbeat: {e}");
                return;
            }
        };
        let mut errors = 0;
        for (i, peer) in self.ha.peers.iter().enumerate() {
            let Ok(msg) = self.sealer.seal(Kind::Heartbeat, i as u8 + 1, &body) else {
                errors += 1;
                continue;
            };
            match self
                .socket
                .send_to(&msg, SocketAddr::new(*peer, self.ha.port))
            {
                Ok(_) => self.sent[i] += 1,
                // A path without a route is a cut path: the peer will not
                // hear us on it, which its path state shows.
                Err(_) => errors += 1,
            }
        }
        if errors > 0 {
            lock(&self.shared).status.send_errors += errors;
        }
    }

    fn receive(&mut self, buf: &mut [u8]) {
        loop {
            let (n, from) = match self.socket.recv_from(buf) {
                Ok(v) => v,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // ICMP errors from an unreachable path surface here.
                Err(_) => continue,
            };
            let Some(path) = self.ha.peers.iter().position(|p| *p == from.ip()) else {
                lock(&self.shared).status.foreign += 1;
                continue;
            };
            let now = Instant::now();
            let advert = match self.opener.open(&buf[..n], path as u8 + 1) {
                Ok(m) if m.kind == Kind::Heartbeat => serde_json::from_slice::<Advert>(m.body),
                Ok(_) => {
                    self.refused(&super::wire::Rejected::Malformed("a stream message on UDP"));
                    continue;
                }
                Err(r) => {
                    self.refused(&r);
                    continue;
                }
            };
            let Ok(advert) = advert else {
                self.refused(&super::wire::Rejected::Malformed("heartbeat body"));
                continue;
            };
            self.heard[path].0 = Some(now);
            self.heard[path].1 += 1;
            self.revisions.heard(advert.revision);
            self.election.table_behind = advert.revision > self.revisions.own();
            if self.ha.election == ElectionMode::Builtin {
                let d = self.election.heartbeat(now, &advert.groups);
                self.carry_out(d);
            } else {
                self.election.heartbeat(now, &[]);
            }
            self.peer_view = Some(advert);
        }
    }

    fn refused(&mut self, r: &super::wire::Rejected) {
        let mut s = lock(&self.shared);
        s.status.rejected.add(r);
        let c = s.status.rejected;
        let total = c.malformed + c.unknown_key + c.forged + c.stale + c.replayed;
        // Logged and recorded at the 1st, 2nd, 4th, 8th ... refusal: a
        // flood shows in the counters, not as a flood of lines.
        if total.is_power_of_two() {
            s.history.push(Event::now(
                EventKind::AuthFailure,
                format!("refused: {r} ({total} refused so far)"),
            ));
            drop(s);
            warn!(total, "HA: peer message refused: {r}");
        }
    }

    /// Whether group `i` forwards here: mastered, or released to the peer
    /// and still draining.
    fn forwards(&self, i: usize) -> bool {
        self.election.groups[i].role == Role::Master || self.draining[i]
    }

    fn decide(&mut self, now: Instant) {
        if self.ha.election == ElectionMode::Builtin {
            self.witness(now);
            let d = self.election.tick(now);
            self.carry_out(d);
        }
        // A write that failed earlier is retried until it lands.
        for i in 0..self.installed.len() {
            let want = self.forwards(i);
            if self.installed[i] != Some(want) {
                self.install(i, want);
            }
        }
    }

    /// The AP witness: data of a group this node backs up arrived here
    /// since the last round (the per-group counter counts it before the
    /// standby drop). The election promotes the group only if the peer
    /// has also missed heartbeats; keepalives are no witness, since a
    /// dual-link AP sends them to its backup AC all along.
    fn witness(&mut self, now: Instant) {
        for i in 0..self.last_rx.len() {
            let Ok(s) = self.roles.stats(i as u16 + 1) else {
                continue;
            };
            let before = self.last_rx[i].replace(s.rx_packets);
            let name = &self.election.groups[i].config.name;
            if before.is_some_and(|b| b != s.rx_packets)
                && self.election.groups[i].role != Role::Master
            {
                let name = name.clone();
                let d = self.election.witness(&name, now);
                self.carry_out(d);
            }
        }
    }

    /// Writes each decision's role into the data plane at once; the
    /// longest write, µs.
    fn carry_out(&mut self, decisions: Vec<Decision>) -> u64 {
        let mut longest = 0;
        for d in decisions {
            let Some(i) = self
                .election
                .groups
                .iter()
                .position(|g| g.config.name == d.group)
            else {
                continue;
            };
            if d.reason == Reason::Preempt {
                // Carried out by the master as a planned handover: ask it.
                self.inbox.push(super::handover::Order::Ask {
                    group: d.group.clone(),
                });
                let e = Event {
                    group: Some(d.group.clone()),
                    ..Event::now(
                        EventKind::Preempt,
                        "higher priority, healthy and synced for preempt_delay: asked the peer to hand the group over",
                    )
                };
                lock(&self.shared).history.push(e);
                continue;
            }
            let t0 = Instant::now();
            // A master forwards; a backup stands by unless still draining.
            let forwards = d.role == Role::Master || self.draining[i];
            self.install(i, forwards);
            let flip_us = t0.elapsed().as_micros();
            longest = longest.max(flip_us as u64);
            if d.role == Role::Master {
                self.announcer.announce(i as u16 + 1, &d.group);
            }
            self.reasons[i] = Some(d.reason);
            info!(group = %d.group, role = ?d.role, reason = ?d.reason, flip_us, "HA role");
            let e = Event {
                group: Some(d.group.clone()),
                role: Some(d.role),
                reason: Some(d.reason),
                ..Event::now(
                    EventKind::Role,
                    format!("data plane written in {flip_us} µs"),
                )
            };
            lock(&self.shared).history.push(e);
        }
        longest
    }

    /// Writes group `i`'s role: a lease of `heartbeat x dead_after` from
    /// now for a master (renewed by every heartbeat sent; the peer cannot
    /// take the group over sooner, so a master that stops renewing stops
    /// forwarding no later than the peer starts), 0 for a backup.
    fn install(&mut self, i: usize, active: bool) {
        let until = if active {
            coarse_now_ns() + (self.ha.heartbeat * self.ha.dead_after).as_nanos() as u64
        } else {
            0
        };
        match self.roles.set_lease(i as u16 + 1, until) {
            Ok(()) => self.installed[i] = Some(active),
            Err(e) => {
                self.installed[i] = None;
                let name = self.election.groups[i].config.name.clone();
                warn!(group = %name, "HA: writing the group role: {e}");
                lock(&self.shared).history.push(Event::now(
                    EventKind::Error,
                    format!("writing group {name}'s role: {e}"),
                ));
            }
        }
    }

    fn control(&mut self, c: Control) {
        let now = Instant::now();
        match c {
            Control::Stop => {}
            Control::Synced { group, synced } => self.election.set_synced(&group, synced, now),
            Control::Witness { group } => {
                if self.ha.election == ElectionMode::Builtin {
                    let d = self.election.witness(&group, now);
                    self.carry_out(d);
                }
            }
            Control::Role { group, role, reply } => {
                if self.ha.election == ElectionMode::Builtin {
                    let _ = reply.send(Err(
                        "roles are elected here (ha.election = \"builtin\"); `ferry cluster role` is for election = \"external\"".into(),
                    ));
                    return;
                }
                let r = self.election.force(&group, role, Reason::Operator, now);
                let r = r.map(|d| {
                    self.carry_out(d);
                });
                // The answer shows the new role: publish before replying.
                self.publish(Instant::now());
                let _ = reply.send(r);
            }
            Control::Event(e) => lock(&self.shared).history.push(e),
            c => self.handover(c, now),
        }
    }

    /// The steps of a planned handover (see [`super::handover`]).
    fn handover(&mut self, c: Control, now: Instant) {
        let index = |l: &Self, g: &str| {
            l.election
                .groups
                .iter()
                .position(|x| x.config.name == g)
                .ok_or_else(|| format!("no group {g:?}"))
        };
        match c {
            Control::Yield { group, reply } => {
                let _ = reply.send(self.election.yield_group(&group));
            }
            Control::Unyield { group } => self.election.unyield(&group),
            Control::Take { group, reply } => {
                let r = self
                    .election
                    .force(&group, Role::Master, Reason::Handover, now)
                    .map(|d| self.carry_out(d));
                self.publish(Instant::now());
                let _ = reply.send(r);
            }
            Control::Release { group, reply } => {
                let r = index(self, &group).and_then(|i| {
                    self.draining[i] = true;
                    let d = self
                        .election
                        .force(&group, Role::Backup, Reason::Handover, now)?;
                    self.carry_out(d);
                    Ok(())
                });
                self.publish(Instant::now());
                let _ = reply.send(r);
            }
            Control::Stand { group } => {
                if let Ok(i) = index(self, &group) {
                    self.draining[i] = false;
                    let forwards = self.forwards(i);
                    self.install(i, forwards);
                    let e = Event {
                        group: Some(group),
                        ..Event::now(
                            EventKind::Handover,
                            if forwards {
                                "drain over: still master here"
                            } else {
                                "drain over: standby in the data plane"
                            },
                        )
                    };
                    lock(&self.shared).history.push(e);
                    self.publish(Instant::now());
                }
            }
            Control::Announce { group, done } => match index(self, &group) {
                Ok(i) => self
                    .announcer
                    .announce_then(i as u16 + 1, &group, Some(done)),
                Err(_) => {
                    let _ = done.send((0, 0));
                }
            },
            _ => {}
        }
    }
}

/// The shared state, poisoned or not (a panic elsewhere must not stop
/// heartbeats).
pub(super) fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Registers the socket and the waker on a new poll.
pub(super) fn poll_for(socket: &mut mio::net::UdpSocket) -> Result<(Poll, Waker)> {
    let poll = Poll::new().context("creating the HA thread's poll")?;
    poll.registry()
        .register(socket, SOCKET, Interest::READABLE)
        .context("registering the heartbeat socket")?;
    let waker = Waker::new(poll.registry(), WAKE).context("creating the HA thread's waker")?;
    Ok((poll, waker))
}

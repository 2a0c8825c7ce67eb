//! The HA pair (issue 10): two ferry nodes, master and backup per AP group.
//!
//! - [`key`]: the pair's shared secret, refused unless private and 32-64
//!   bytes, and the key id both nodes derive from it;
//! - [`wire`]: the envelope of every peer message (heartbeats and the sync
//!   stream): versioned, HMAC-SHA256, per-start epochs and per-channel
//!   sequence numbers, each refusal counted by class;
//! - [`election`]: who masters each group, VRRPv3's rules as a pure state
//!   machine on a caller's clock;
//! - [`heartbeat`]: the HA thread that carries heartbeats on every path,
//!   runs the election and writes each decision into the data plane's
//!   group role map (`GROUP_ROLES`) in the same step;
//! - [`stream`] and [`sync`]: the sync stream (TCP, an event-loop
//!   service): bulk snapshots and updates of learned stations, AP ports
//!   and session bindings, installed into the peer's live tables;
//! - [`announce`]: a new master's gratuitous frames, one per station, so
//!   the switches move the stations' MACs to it;
//! - [`handover`]: the planned make-before-break handover of a group to
//!   the peer (`ferry failover`, preemption), over the sync stream;
//! - [`view`]: what the thread publishes: `ferry cluster status`, members
//!   and history.
//!
//! - [`revision`]: the pair's table revision, kept across restarts;
//! - [`licence`]: the pair's licence pool, the peer's grace, and which
//!   tunnels the pool admits.

pub mod announce;
pub mod election;
pub mod handover;
pub mod heartbeat;
pub mod key;
pub mod licence;
pub mod revision;
pub mod stream;
pub mod sync;
pub mod view;
pub mod wire;

use std::{
    net::UdpSocket,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use ferry_dataplane::datapath::GroupRoles;

pub use self::revision::Revisions;
use self::{
    election::{Election, Reason, Role},
    handover::{HandoverStatus, Inbox, Options, Order},
    heartbeat::{Link, lock},
    key::Key,
    view::{ClusterStatus, Event, History},
    wire::{Opener, Sealer},
};
use crate::config::{ElectionMode, HaConfig};

/// What the HA thread shares with the event loop.
#[derive(Debug, Default)]
pub struct Shared {
    /// The cluster view as of the thread's last round.
    pub status: ClusterStatus,
    /// Events, oldest first.
    pub history: History,
    /// Recent handovers this node gave, newest last.
    pub handovers: Vec<HandoverStatus>,
    /// The last handover id handed out.
    pub handover_id: u64,
}

/// Handovers kept for `ferry failover` to read.
const HANDOVERS_KEPT: usize = 64;

/// Orders for the HA thread.
#[derive(Debug)]
pub enum Control {
    /// This node's copy of `group`'s state is complete (or no longer).
    Synced {
        /// The group.
        group: String,
        /// Complete.
        synced: bool,
    },
    /// CAPWAP traffic of one of `group`'s tunnels reached this node.
    Witness {
        /// The group.
        group: String,
    },
    /// `ferry cluster role`: take `role` for `group`.
    Role {
        /// The group.
        group: String,
        /// The role.
        role: Role,
        /// The outcome.
        reply: mpsc::Sender<Result<(), String>>,
    },
    /// An event for the history (from the sync stream).
    Event(Event),
    /// A planned handover of `group` begins here: hold the election still.
    Yield {
        /// The group.
        group: String,
        /// Refused (not master, already handing over).
        reply: mpsc::Sender<Result<(), String>>,
    },
    /// The handover of `group` did not happen: keep it.
    Unyield {
        /// The group.
        group: String,
    },
    /// The peer hands `group` over: take it now.
    Take {
        /// The group.
        group: String,
        /// The role write's time, µs, or the refusal.
        reply: mpsc::Sender<Result<u64, String>>,
    },
    /// The peer took `group`: back up in the election, keep forwarding
    /// (the drain) until [`Control::Stand`].
    Release {
        /// The group.
        group: String,
        /// Done.
        reply: mpsc::Sender<Result<(), String>>,
    },
    /// The drain of `group` is over: stand by in the data plane.
    Stand {
        /// The group.
        group: String,
    },
    /// Announce `group`'s stations again; `(sent, of)` on `done`.
    Announce {
        /// The group.
        group: String,
        /// Told when the announcements are out.
        done: mpsc::Sender<(u64, u64)>,
    },
    /// End the thread.
    Stop,
}

/// The running HA thread.
pub struct Ha {
    shared: Arc<Mutex<Shared>>,
    tx: mpsc::Sender<Control>,
    waker: mio::Waker,
    thread: Option<JoinHandle<()>>,
    /// Per group index: keepalives of its tunnels go unanswered (a
    /// handover drains it).
    withheld: Arc<Vec<AtomicBool>>,
    inbox: Inbox,
    /// Table revisions.
    pub revisions: Revisions,
}

/// The HA sockets, bound before the data plane is touched.
pub struct Bound {
    socket: UdpSocket,
    key: Key,
    epoch: u64,
    local: std::net::IpAddr,
    inbox: Inbox,
    revisions: Revisions,
}

impl Bound {
    /// The pair's table revisions (set from the revision file at start).
    pub fn revisions(&self) -> &Revisions {
        &self.revisions
    }

    /// Loads the key, finds this node's address towards the peer and binds
    /// the heartbeat socket and the sync listener: everything that can
    /// refuse a start, before anything changes. The sync stream is the
    /// event-loop service returned beside.
    pub fn bind(ha: &HaConfig, config_file: &Path) -> Result<(Self, sync::SyncService)> {
        let key = Key::load(&ha.key_file).map_err(|e| {
            anyhow!(
                "{}:{}: ha.key_file: {e}",
                config_file.display(),
                ha.key_file_line
            )
        })?;
        let local = heartbeat::local_address(ha.peers[0])?;
        let epoch = epoch();
        let socket = heartbeat::bind(ha)?;
        let inbox = Inbox::default();
        let revisions = Revisions::default();
        let sync = sync::SyncService::bind(
            ha,
            key.clone(),
            epoch,
            local,
            (inbox.clone(), revisions.clone()),
        )?;
        Ok((
            Self {
                socket,
                key,
                epoch,
                local,
                inbox,
                revisions,
            },
            sync,
        ))
    }
}

impl Ha {
    /// Starts the HA thread for node `node` over the pinned maps in
    /// `pin_dir`. Groups the data plane already forwards (a restart over
    /// running maps) start as master, the rest wait for the election.
    pub fn start(
        node: &str,
        ha: &HaConfig,
        bound: Bound,
        pin_dir: &Path,
        client_side: &str,
    ) -> Result<Self> {
        let roles = GroupRoles::open_pinned(pin_dir)
            .with_context(|| format!("opening the group role map in {}", pin_dir.display()))?;
        let local = bound.local;
        let now = Instant::now();
        let mut election = Election::new(ha.timers(), ha.groups.clone(), now, local, ha.peers[0]);
        let mut installed = Vec::with_capacity(ha.groups.len());
        for (i, g) in ha.groups.iter().enumerate() {
            let active = roles.active(i as u16 + 1)?;
            if active {
                let _ = election.force(&g.name, Role::Master, Reason::Adopted, now);
            }
            installed.push(Some(active));
        }
        let mut socket = mio::net::UdpSocket::from_std(bound.socket);
        let (poll, waker) = heartbeat::poll_for(&mut socket)?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let announcer = announce::Announcer::start(
            pin_dir.to_path_buf(),
            client_side.to_string(),
            shared.clone(),
        )?;
        let (tx, rx) = mpsc::channel();
        let n = ha.peers.len();
        let groups = ha.groups.len();
        let link = Link {
            node: node.to_string(),
            ha: ha.clone(),
            socket,
            sealer: Sealer::new(bound.key.clone(), bound.epoch),
            opener: Opener::new(bound.key),
            election,
            roles,
            announcer,
            shared: shared.clone(),
            rx,
            local,
            heard: vec![(None, 0); n],
            sent: vec![0; n],
            installed,
            draining: vec![false; groups],
            last_rx: vec![None; groups],
            inbox: bound.inbox.clone(),
            revisions: bound.revisions.clone(),
            reasons: vec![None; groups],
            peer_view: None,
            peer_up: None,
            path_up: vec![false; n],
        };
        let thread = std::thread::Builder::new()
            .name("ferry-ha".into())
            .spawn(move || link.run(poll))
            .context("starting the HA thread")?;
        Ok(Self {
            shared,
            tx,
            waker,
            thread: Some(thread),
            withheld: Arc::new(
                (0..ferry_ebpf::abi::MAX_GROUPS)
                    .map(|_| AtomicBool::new(false))
                    .collect(),
            ),
            inbox: bound.inbox,
            revisions: bound.revisions,
        })
    }

    /// A table change was applied here: give it the next revision and
    /// send the table to the peer.
    pub fn replicate(&self) -> u64 {
        let revision = self.revisions.next();
        self.inbox.push(Order::Table { revision });
        revision
    }

    /// Whether keepalives of group `index`'s tunnels go unanswered.
    pub fn withheld(&self, index: u16) -> bool {
        self.withheld
            .get(usize::from(index))
            .is_some_and(|w| w.load(Ordering::Relaxed))
    }

    /// Withholds (or answers again) keepalives of group `index`'s tunnels.
    pub fn withhold(&self, index: u16, on: bool) {
        if let Some(w) = self.withheld.get(usize::from(index)) {
            w.store(on, Ordering::Relaxed);
        }
    }

    /// Sends the order `make` builds around a reply channel and waits for
    /// the thread's answer (it answers within a poll round).
    pub fn call<T>(&self, make: impl FnOnce(mpsc::Sender<T>) -> Control) -> Result<T, String> {
        let (reply, answer) = mpsc::channel();
        self.send(make(reply));
        answer
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| "the HA thread did not answer".to_string())
    }

    /// `ferry failover`: hands `group` (or every group mastered here) to
    /// the peer; the handovers' ids, to follow with [`Ha::handovers`].
    /// Refused whole, before anything moves, unless the election is
    /// builtin, the peer is up, the sync stream is up with our bulk
    /// installed there, and the peer's copy of each group is complete.
    pub fn failover(&self, group: Option<&str>, opts: Options) -> Result<Vec<u64>, String> {
        let st = self.status();
        if st.election != Some(ElectionMode::Builtin) {
            return Err(
                "roles change only by `ferry cluster role` here (ha.election = \"external\")"
                    .into(),
            );
        }
        let mine: Vec<&view::GroupStatus> = match group {
            Some(name) => {
                let g = st
                    .groups
                    .iter()
                    .find(|g| g.name == name)
                    .ok_or_else(|| format!("no group {name:?} in [[group]]"))?;
                if g.role != Role::Master {
                    return Err(format!(
                        "group {name:?} is {:?} here: run `ferry failover` on its master",
                        g.role
                    ));
                }
                vec![g]
            }
            None => st
                .groups
                .iter()
                .filter(|g| g.role == Role::Master)
                .collect(),
        };
        if mine.is_empty() {
            return Err("this node masters no group: nothing to hand over".into());
        }
        if st.peer.state != "up" {
            return Err(format!(
                "the peer is {}: nobody to hand over to",
                st.peer.state
            ));
        }
        if !st.sync.connected || !st.sync.bulk_sent {
            return Err("the sync stream is not up with our bulk installed at the peer: its copy may be incomplete".into());
        }
        for g in &mine {
            if g.peer_synced != Some(true) || g.peer_role != Some(Role::Backup) {
                return Err(format!(
                    "group {:?}: the peer is not a synced backup of it (role {:?}, synced {:?})",
                    g.name, g.peer_role, g.peer_synced
                ));
            }
        }
        let mut s = lock(&self.shared);
        let mut ids = Vec::with_capacity(mine.len());
        for g in mine {
            s.handover_id += 1;
            let id = s.handover_id;
            s.handovers
                .push(HandoverStatus::new(id, &g.name, handover::Phase::Queued));
            self.inbox.push(Order::Failover {
                id,
                group: g.name.clone(),
                index: g.index,
                opts,
            });
            ids.push(id);
        }
        let excess = s.handovers.len().saturating_sub(HANDOVERS_KEPT);
        s.handovers.drain(..excess);
        Ok(ids)
    }

    /// A handover the peer asked for (preemption), as `ferry failover
    /// --group` would start it; its id.
    pub fn failover_asked(&self, group: &str, index: u16) -> u64 {
        let mut s = lock(&self.shared);
        s.handover_id += 1;
        let id = s.handover_id;
        self.inbox.push(Order::Failover {
            id,
            group: group.to_string(),
            index,
            opts: Options::default(),
        });
        id
    }

    /// The handovers with these ids (all kept ones if `ids` is empty).
    pub fn handovers(&self, ids: &[u64]) -> Vec<HandoverStatus> {
        lock(&self.shared)
            .handovers
            .iter()
            .filter(|h| ids.is_empty() || ids.contains(&h.id))
            .cloned()
            .collect()
    }

    /// Records the latest state of handovers (by id).
    pub fn publish_handovers(&self, v: Vec<HandoverStatus>) {
        let mut s = lock(&self.shared);
        for h in v {
            match s.handovers.iter_mut().find(|x| x.id == h.id) {
                Some(x) => *x = h,
                None => s.handovers.push(h),
            }
        }
        let excess = s.handovers.len().saturating_sub(HANDOVERS_KEPT);
        s.handovers.drain(..excess);
    }

    /// `ferry cluster resync`: a bulk snapshot both ways.
    pub fn resync(&self) -> Result<(), String> {
        if !self.status().sync.connected {
            return Err("the sync stream is down: a bulk follows when it reconnects".into());
        }
        self.inbox.push(Order::Resync);
        Ok(())
    }

    /// The cluster view. The thread publishes it once a round, but a table
    /// change made here takes its revision on the event loop: the revision
    /// is read live, so `cluster status` after a change has returned shows
    /// it (a test read the old one under load).
    pub fn status(&self) -> ClusterStatus {
        let mut s = lock(&self.shared).status.clone();
        s.revision = self.revisions.own();
        s
    }

    /// The history, oldest first.
    pub fn history(&self) -> Vec<Event> {
        lock(&self.shared).history.all()
    }

    /// Sends `c` to the thread and wakes it.
    pub fn send(&self, c: Control) {
        if self.tx.send(c).is_ok() {
            let _ = self.waker.wake();
        }
    }

    /// Adds `e` to the history (events of the event loop's side).
    pub fn record(&self, e: Event) {
        lock(&self.shared).history.push(e);
    }

    /// Which peer paths carry heartbeats, in `ha.peers` order, as of the
    /// thread's last round.
    pub fn paths_up(&self) -> Vec<bool> {
        lock(&self.shared)
            .status
            .peer
            .paths
            .iter()
            .map(|p| p.up)
            .collect()
    }

    /// Publishes the sync stream's state.
    pub fn set_sync(&self, s: view::SyncStatus) {
        lock(&self.shared).status.sync = s;
    }

    /// Counts a peer message refused on the sync stream.
    pub fn count_refused(&self, r: &wire::Rejected) {
        lock(&self.shared).status.rejected.add(r);
    }

    /// `ferry cluster role`: the thread's answer.
    pub fn set_role(&self, group: &str, role: Role) -> Result<(), String> {
        self.call(|reply| Control::Role {
            group: group.to_string(),
            role,
            reply,
        })?
    }
}

impl Drop for Ha {
    fn drop(&mut self) {
        self.send(Control::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// This start's epoch: wall-clock microseconds. The peer refuses messages
/// of an epoch lower than the newest it has seen, so a restart must never
/// go back: microseconds since 1970 grow across restarts unless the clock
/// is stepped back past the previous start.
fn epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64)
}

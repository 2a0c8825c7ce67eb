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
//!   service): bulk snapshots and updates of learned stations, installed
//!   into the peer's live station table;
//! - [`announce`]: a new master's gratuitous frames, one per station, so
//!   the switches move the stations' MACs to it;
//! - [`view`]: what the thread publishes: `ferry cluster status`, members
//!   and history.
//!
//! Not yet: learned AP ports and session bindings on the sync stream,
//! table revisions across the pair, planned failover, licences.

pub mod announce;
pub mod election;
pub mod heartbeat;
pub mod key;
pub mod stream;
pub mod sync;
pub mod view;
pub mod wire;

use std::{
    net::UdpSocket,
    path::Path,
    sync::{Arc, Mutex, mpsc},
    thread::JoinHandle,
    time::Instant,
};

use anyhow::{Context as _, Result, anyhow};
use ferry_dataplane::datapath::GroupRoles;

use self::{
    election::{Election, Reason, Role},
    heartbeat::{Link, lock},
    key::Key,
    view::{ClusterStatus, Event, History},
    wire::{Opener, Sealer},
};
use crate::config::HaConfig;

/// What the HA thread shares with the event loop.
#[derive(Debug, Default)]
pub struct Shared {
    /// The cluster view as of the thread's last round.
    pub status: ClusterStatus,
    /// Events, oldest first.
    pub history: History,
}

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
    /// End the thread.
    Stop,
}

/// The running HA thread.
pub struct Ha {
    shared: Arc<Mutex<Shared>>,
    tx: mpsc::Sender<Control>,
    waker: mio::Waker,
    thread: Option<JoinHandle<()>>,
}

/// The HA sockets, bound before the data plane is touched.
pub struct Bound {
    socket: UdpSocket,
    key: Key,
    epoch: u64,
    local: std::net::IpAddr,
}

impl Bound {
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
        let sync = sync::SyncService::bind(ha, key.clone(), epoch, local)?;
        Ok((
            Self {
                socket,
                key,
                epoch,
                local,
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
            reasons: vec![None; ha.groups.len()],
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
        })
    }

    /// The cluster view.
    pub fn status(&self) -> ClusterStatus {
        lock(&self.shared).status.clone()
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
        let (reply, answer) = mpsc::channel();
        self.send(Control::Role {
            group: group.to_string(),
            role,
            reply,
        });
        answer
            .recv_timeout(std::time::Duration::from_secs(5))
            .map_err(|_| "the HA thread did not answer".to_string())?
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

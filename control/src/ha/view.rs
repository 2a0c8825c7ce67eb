//! What the HA thread shows the rest of ferry: the cluster status (`ferry
//! cluster status` and `members`, the metrics) and the history of events
//! (`ferry cluster history`). The thread publishes them after every change;
//! readers copy them out under a short lock and never wait on the peer.

use std::{collections::VecDeque, net::IpAddr};

use serde::{Deserialize, Serialize};

use super::{
    election::{Reason, Role},
    wire::RejectCounts,
};
use crate::config::ElectionMode;

/// Events kept for `ferry cluster history` (the oldest go first).
pub const HISTORY_LEN: usize = 1000;

/// `ferry cluster status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ClusterStatus {
    /// This node's name.
    pub node: String,
    /// This node's address on the first path (elections compare it).
    pub address: Option<IpAddr>,
    /// "builtin" or "external".
    pub election: Option<ElectionMode>,
    /// Heartbeat interval, ms.
    pub heartbeat_ms: u64,
    /// Each group.
    pub groups: Vec<GroupStatus>,
    /// The peer.
    pub peer: PeerStatus,
    /// The sync stream.
    pub sync: SyncStatus,
    /// Peer messages refused, by class.
    pub rejected: RejectCounts,
    /// Heartbeats from addresses not in `ha.peers` (never opened).
    pub foreign: u64,
    /// Heartbeats sent, per path in `ha.peers` order.
    pub sent: Vec<u64>,
    /// Heartbeats that could not be sent (socket errors), all paths.
    pub send_errors: u64,
    /// This node's table revision (shared by the pair: a table change on
    /// either node is applied on both under the next revision; 0 until
    /// the first since this start).
    #[serde(default)]
    pub revision: u64,
    /// The peer's, from its last heartbeat.
    #[serde(default)]
    pub peer_revision: Option<u64>,
    /// AP licences (filled in by the event loop, which owns the tables).
    #[serde(default)]
    pub licences: Option<LicenceStatus>,
}

/// Licences in [`ClusterStatus`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LicenceStatus {
    /// Tunnels holding a licence: configured active and admitted (each
    /// forwards on whichever node masters its group).
    pub used: u64,
    /// Of those, the ones whose group this node masters.
    pub used_here: u64,
    /// This node's `ha.licenses`.
    pub local: u32,
    /// The peer's licences counted in the pool.
    pub peer: u32,
    /// The pair's pool: `local + peer`.
    pub pool: u32,
    /// Seconds of grace left while the peer is lost and its licences
    /// still count.
    pub grace_left_s: Option<u64>,
    /// The peer is lost and its licences no longer count.
    pub grace_expired: bool,
    /// Tunnels configured active but held standby for lack of a licence.
    pub unlicensed: Vec<String>,
    /// Times a tunnel was refused a licence since start.
    pub refused_total: u64,
}

/// One group in [`ClusterStatus`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GroupStatus {
    /// Name.
    pub name: String,
    /// Index in the data plane's role map.
    pub index: u16,
    /// This node's role as elected.
    pub role: Role,
    /// What the data plane does for the group here, read back from the
    /// role map: "active" or "standby" (it follows `role`; anything else
    /// is shown, never hidden).
    pub dataplane: String,
    /// Why the role last changed.
    pub reason: Option<Reason>,
    /// Milliseconds in the current role.
    pub for_ms: u64,
    /// This node's priority.
    pub priority: u8,
    /// The peer's priority (from its last heartbeat).
    pub peer_priority: Option<u8>,
    /// The peer's role (from its last heartbeat).
    pub peer_role: Option<Role>,
    /// Preemption on here.
    pub preempt: bool,
    /// Its delay, seconds.
    pub preempt_delay_s: u64,
    /// This node's copy of the group's state is complete.
    pub synced: bool,
    /// Would be master, but the copy is incomplete and the peer held it.
    pub blocked: bool,
    /// The peer's copy of the group's state is complete (its heartbeat).
    #[serde(default)]
    pub peer_synced: Option<bool>,
    /// Frames of the group forwarded here, upstream (the data plane's
    /// per-group counters, since the maps were created).
    #[serde(default)]
    pub up_packets: u64,
    /// The same, downstream.
    #[serde(default)]
    pub down_packets: u64,
    /// Frames of the group dropped here because it stands by.
    #[serde(default)]
    pub standby_drops: u64,
}

/// The peer in [`ClusterStatus`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PeerStatus {
    /// Its node name, once heard.
    pub node: Option<String>,
    /// "up" (some path heard within the dead interval), "down", or
    /// "unknown" (never heard since this start).
    pub state: String,
    /// Its epoch (changes when it restarts).
    pub epoch: u64,
    /// Milliseconds since any path was heard.
    pub last_heard_ms: Option<u64>,
    /// Each path, in `ha.peers` order.
    pub paths: Vec<PathStatus>,
    /// Its `ha.licenses`, from its last heartbeat.
    #[serde(default)]
    pub licenses: Option<u32>,
}

/// One peer path.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PathStatus {
    /// The peer's address on it.
    pub address: IpAddr,
    /// Heard within the dead interval.
    pub up: bool,
    /// Milliseconds since heard.
    pub last_heard_ms: Option<u64>,
    /// Heartbeats accepted on it.
    pub received: u64,
}

/// The sync stream in [`ClusterStatus`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SyncStatus {
    /// The TCP stream is up.
    pub connected: bool,
    /// The peer address (a path of `ha.peers`) it runs on.
    #[serde(default)]
    pub path: Option<IpAddr>,
    /// A bulk snapshot from the peer has completed on this connection.
    pub bulk_received: bool,
    /// Our bulk snapshot reached the peer (its marker acknowledged).
    pub bulk_sent: bool,
    /// Stations received from the peer and installed here.
    pub stations_received: u64,
    /// Stations sent to the peer.
    pub stations_sent: u64,
    /// Learned AP ports and session bindings sent to the peer.
    #[serde(default)]
    pub learned_sent: u64,
    /// The peer's learned AP ports and session bindings installed here
    /// (not counted: those this node had learned itself).
    #[serde(default)]
    pub learned_received: u64,
    /// The last bulk received: stations and milliseconds.
    pub last_bulk: Option<(u64, u64)>,
    /// How long the last walk of the station table for changes took, µs
    /// (the walks pause four times as long when this passes 50 ms; a
    /// node that masters no group does not walk).
    #[serde(default)]
    pub scan_us: u64,
    /// Connections closed at once: not from an address in `ha.peers`, or
    /// not the side that accepts, or a second connection.
    pub refused_connections: u64,
}

/// What happened.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The peer was heard after silence (or for the first time).
    PeerUp,
    /// Every path went silent.
    PeerDown,
    /// One path came back.
    PathUp,
    /// One path went silent (others may still carry heartbeats).
    PathDown,
    /// A group's role changed.
    Role,
    /// A preemption was asked for.
    Preempt,
    /// A planned handover's step (`ferry failover`, or a preemption).
    Handover,
    /// A bulk sync began.
    BulkStart,
    /// A bulk sync ended (counts and duration in the detail).
    BulkEnd,
    /// Peer messages were refused (class in the detail).
    AuthFailure,
    /// The sync stream connected or dropped.
    Sync,
    /// A new master announced a group's stations.
    Announce,
    /// A table revision sent to or applied from the peer.
    Table,
    /// The licence pool changed, or tunnels gained or lost a licence.
    Licence,
    /// A data plane write failed, or the peer's table was refused.
    Error,
}

/// One entry of `ferry cluster history`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// Unix time, ms.
    pub at_ms: u64,
    /// What.
    pub kind: EventKind,
    /// The group, for group events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The new role, for role events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Why, for role events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// The rest, in words.
    pub detail: String,
}

impl Event {
    /// An event of `kind` now.
    pub fn now(kind: EventKind, detail: impl Into<String>) -> Self {
        Self {
            at_ms: unix_ms(),
            kind,
            group: None,
            role: None,
            reason: None,
            detail: detail.into(),
        }
    }
}

/// Wall-clock milliseconds (history timestamps only; timers use
/// `Instant`).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The last [`HISTORY_LEN`] events.
#[derive(Debug, Default)]
pub struct History {
    events: VecDeque<Event>,
}

impl History {
    /// Records `e`, dropping the oldest past the bound.
    pub fn push(&mut self, e: Event) {
        if self.events.len() == HISTORY_LEN {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    /// Every event kept, oldest first.
    pub fn all(&self) -> Vec<Event> {
        self.events.iter().cloned().collect()
    }
}

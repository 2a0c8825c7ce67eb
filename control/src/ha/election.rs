//! Who masters each AP group: VRRPv3's rules, per group, as a pure state
//! machine over a caller-supplied clock (no I/O, no threads; the runtime
//! feeds it heartbeats and ticks and carries out what it decides, and the
//! tests drive it on a simulated clock).
//!
//! - **Dead peer.** The peer is dead for a group after `dead_after`
//!   heartbeat intervals plus a skew of `(256 - priority) / 256` of an
//!   interval, so that of two backups the higher-priority one acts first
//!   (VRRPv3's Master_Down_Interval).
//! - **Complete state first.** A node becomes master of a group only when
//!   its copy of the group's state is complete (bulk sync done), unless
//!   the peer has not mastered that group since this node started (then
//!   nobody holds more state than it does). A group it cannot take for
//!   that reason is reported as blocked, not taken.
//! - **Newer table first.** While the peer's table revision is newer
//!   than this node's, its groups count as incomplete too (for the
//!   election and a handover); a dead or silent peer cannot send its
//!   table, so a takeover does not wait for it.
//! - **Cold start.** Until the peer is first heard, groups wait
//!   `cold_start` (bounded), then the node takes every group.
//! - **Both alive, nobody master.** The higher priority takes the group;
//!   on equal priorities, the lower address.
//! - **Split brain** (both master after the link heals): the higher
//!   priority keeps the group, then the node that has been master longer,
//!   then the lower address; the loser stands by at the heartbeat that
//!   shows it the conflict.
//! - **AP witness.** CAPWAP traffic of a group's tunnel reaching this
//!   node while it is backup and the peer has missed a heartbeat promotes
//!   the group at once (the AP has failed over: the master is gone for it).
//! - **Preemption.** With `preempt`, a higher-priority backup asks for
//!   its group back only after `preempt_delay` of continuous health (peer
//!   heard, own copy complete) and at most once per `hold_down` per group;
//!   the handover itself is the planned make-before-break path, so the
//!   machine only says [`Reason::Preempt`] and leaves the role to the
//!   handover. The delay counts from the moment the node became backup
//!   (a planned handover away from a preempting node is undone only after
//!   the delay, not at once).
//! - **Planned handover.** The master marks the group *yielding*
//!   ([`Election::yield_group`]) before it asks the peer to take it; while
//!   one side yields, both being master is the handover under way, not a
//!   split brain, and neither side's rule acts on it. The roles then move
//!   by [`Election::force`] with [`Reason::Handover`] on each side.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// A node's role for one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Started, waiting to hear the peer (or the cold-start bound).
    Init,
    /// Tunnels installed, packets dropped as standby.
    Backup,
    /// Forwarding.
    Master,
}

/// Why a role changed (or, for [`Reason::Preempt`], why a handover is
/// asked for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The peer was never heard within the cold-start wait.
    ColdStart,
    /// The peer is silent past the dead interval.
    PeerDead,
    /// Both alive, neither master: the election.
    Elected,
    /// The peer is master.
    PeerMaster,
    /// Both were master; this is the rule's outcome.
    SplitBrain,
    /// An AP's traffic arrived here while the peer missed heartbeats.
    Witness,
    /// A higher-priority backup, healthy and synced for the delay.
    Preempt,
    /// `ferry cluster role` (external election).
    Operator,
    /// A planned make-before-break handover (`ferry failover`, or a
    /// preemption carried out).
    Handover,
    /// The data plane already forwarded the group when this process
    /// started (a restart of `ferry run` over running maps).
    Adopted,
}

/// The timers and bounds of the pair.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Missed heartbeats before the peer is dead (before the skew).
    pub dead_after: u32,
    /// How long a node that has never heard its peer waits before it
    /// takes its groups.
    pub cold_start: Duration,
    /// Shortest time between two role changes of one group by preemption.
    pub hold_down: Duration,
}

impl Timers {
    /// When the peer counts as dead for a group of `priority` here.
    pub fn master_down(&self, priority: u8) -> Duration {
        let skew = self.heartbeat * (256 - u32::from(priority)) / 256;
        self.heartbeat * self.dead_after + skew
    }
}

/// One group as configured on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// Name (the same on both nodes).
    pub name: String,
    /// This node's priority, 1-254.
    pub priority: u8,
    /// Whether this node takes the group back when it has the higher
    /// priority.
    pub preempt: bool,
    /// Continuous health before a preemption.
    pub preempt_delay: Duration,
}

/// What the peer's heartbeat says about one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerGroup {
    /// The peer's priority.
    pub priority: u8,
    /// The peer's role.
    pub role: Role,
    /// How long the peer has been master (0 when it is not).
    pub master_for_ms: u64,
    /// The peer's copy of the group's state is complete.
    #[serde(default)]
    pub synced: bool,
    /// The peer is master and handing the group over to us.
    #[serde(default)]
    pub yielding: bool,
}

/// A role change (or a handover asked for) that the runtime carries out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The group.
    pub group: String,
    /// The role to take ([`Role::Backup`] kept for [`Reason::Preempt`]:
    /// the handover changes it).
    pub role: Role,
    /// Why.
    pub reason: Reason,
}

/// One group's state here.
#[derive(Debug, Clone)]
pub struct Group {
    /// As configured.
    pub config: GroupConfig,
    /// This node's role.
    pub role: Role,
    /// When the role last changed.
    pub since: Instant,
    /// This node's copy of the group's state is complete.
    pub synced: bool,
    /// The peer has been master of the group since this node started.
    pub peer_held: bool,
    /// Would be master now, but its copy is incomplete.
    pub blocked: bool,
    /// Master, handing the group over to the peer (planned).
    pub yielding: bool,
    /// Peer heard and own copy complete, continuously since.
    healthy_since: Option<Instant>,
    /// Last preemption asked for.
    preempted_at: Option<Instant>,
}

/// The election of every group of this node.
#[derive(Debug)]
pub struct Election {
    timers: Timers,
    /// The groups, in configuration order.
    pub groups: Vec<Group>,
    started: Instant,
    /// Last heartbeat accepted from the peer.
    pub peer_heard: Option<Instant>,
    local: IpAddr,
    peer: IpAddr,
    /// The peer has a newer table revision than this node: every group's
    /// state here counts as incomplete until the table arrives.
    pub table_behind: bool,
}

impl Election {
    /// A node that starts at `now` with `groups`, at address `local`, paired
    /// with `peer` (addresses break ties).
    pub fn new(
        timers: Timers,
        groups: Vec<GroupConfig>,
        now: Instant,
        local: IpAddr,
        peer: IpAddr,
    ) -> Self {
        Self {
            timers,
            groups: groups
                .into_iter()
                .map(|config| Group {
                    config,
                    role: Role::Init,
                    since: now,
                    synced: false,
                    peer_held: false,
                    blocked: false,
                    yielding: false,
                    healthy_since: None,
                    preempted_at: None,
                })
                .collect(),
            started: now,
            peer_heard: None,
            local,
            peer,
            table_behind: false,
        }
    }

    /// Records whether this node's copy of `group` is complete.
    pub fn set_synced(&mut self, group: &str, synced: bool, now: Instant) {
        if let Some(g) = self.groups.iter_mut().find(|g| g.config.name == group) {
            g.synced = synced;
            if !synced {
                g.healthy_since = None;
            } else if g.healthy_since.is_none() && self.peer_heard.is_some() {
                g.healthy_since = Some(now);
            }
        }
    }

    /// A heartbeat from the peer at `now`, with its view of each group by
    /// name.
    pub fn heartbeat(&mut self, now: Instant, peer: &[(String, PeerGroup)]) -> Vec<Decision> {
        let behind = self.table_behind;
        self.peer_heard = Some(now);
        let mut out = Vec::new();
        let (local, peer_addr, hold_down) = (self.local, self.peer, self.timers.hold_down);
        for g in &mut self.groups {
            let Some((_, p)) = peer.iter().find(|(n, _)| *n == g.config.name) else {
                continue;
            };
            if p.role == Role::Master {
                g.peer_held = true;
            }
            if g.synced {
                g.healthy_since.get_or_insert(now);
            }
            let mine = g.config.priority;
            let we_win =
                (mine, std::cmp::Reverse(local)) > (p.priority, std::cmp::Reverse(peer_addr));
            let next = match (g.role, p.role) {
                // A handover under way: its own steps move the roles.
                (Role::Master, Role::Master) if g.yielding || p.yielding => None,
                (Role::Master, Role::Master) => {
                    let ours = now.saturating_duration_since(g.since).as_millis() as u64;
                    let keep = (mine, ours, std::cmp::Reverse(local))
                        > (p.priority, p.master_for_ms, std::cmp::Reverse(peer_addr));
                    (!keep).then_some((Role::Backup, Reason::SplitBrain))
                }
                (Role::Master, _) => None,
                (_, Role::Master) => {
                    let preempt = g.config.preempt
                        && mine > p.priority
                        && g.synced
                        && g.healthy_since.is_some_and(|h| {
                            now.saturating_duration_since(h) >= g.config.preempt_delay
                        })
                        && g.preempted_at
                            .is_none_or(|t| now.saturating_duration_since(t) >= hold_down);
                    if preempt {
                        g.preempted_at = Some(now);
                        out.push(Decision {
                            group: g.config.name.clone(),
                            role: Role::Backup,
                            reason: Reason::Preempt,
                        });
                    }
                    (g.role != Role::Backup).then_some((Role::Backup, Reason::PeerMaster))
                }
                (_, _) if we_win => Some((Role::Master, Reason::Elected)),
                (Role::Init, _) => Some((Role::Backup, Reason::Elected)),
                _ => None,
            };
            if let Some((role, reason)) = next {
                apply(g, behind, role, reason, now, &mut out);
            }
        }
        out
    }

    /// Time passes: the cold-start bound and the dead peer.
    pub fn tick(&mut self, now: Instant) -> Vec<Decision> {
        // A dead peer cannot send its newer table: forwarding with this
        // one beats not forwarding.
        let behind = false;
        let mut out = Vec::new();
        match self.peer_heard {
            None if now.saturating_duration_since(self.started) >= self.timers.cold_start => {
                for g in &mut self.groups {
                    if g.role == Role::Init {
                        apply(g, behind, Role::Master, Reason::ColdStart, now, &mut out);
                    }
                }
            }
            None => {}
            Some(heard) => {
                let silent = now.saturating_duration_since(heard);
                for g in &mut self.groups {
                    if silent >= self.timers.master_down(g.config.priority) {
                        g.healthy_since = None;
                        if g.role != Role::Master {
                            apply(g, behind, Role::Master, Reason::PeerDead, now, &mut out);
                        }
                    }
                }
            }
        }
        out
    }

    /// When [`Election::tick`] next has something to decide: the cold-start
    /// bound, or the first group's dead interval running out.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.peer_heard {
            None => self
                .groups
                .iter()
                .any(|g| g.role == Role::Init)
                .then_some(self.started + self.timers.cold_start),
            Some(heard) => self
                .groups
                .iter()
                .filter(|g| g.role != Role::Master)
                .map(|g| heard + self.timers.master_down(g.config.priority))
                .min(),
        }
    }

    /// Sets `group`'s role by order (`ferry cluster role`, a handover, or
    /// a group found forwarding at start with [`Reason::Adopted`]), past
    /// the election's rules but not past complete state: a group whose
    /// copy is incomplete while the peer held it is refused (`Err`).
    pub fn force(
        &mut self,
        group: &str,
        role: Role,
        reason: Reason,
        now: Instant,
    ) -> Result<Vec<Decision>, String> {
        let behind = self.table_behind;
        let Some(g) = self.groups.iter_mut().find(|g| g.config.name == group) else {
            return Err(format!("no group {group:?}"));
        };
        let mut out = Vec::new();
        apply(g, behind, role, reason, now, &mut out);
        if g.blocked {
            return Err(format!(
                "group {group:?}: this node's copy of its state is incomplete (bulk sync not done, or the peer's table revision is newer) and the peer has held it"
            ));
        }
        Ok(out)
    }

    /// Starts a planned handover of `group` to the peer: this node must
    /// master it and not be yielding it already.
    pub fn yield_group(&mut self, group: &str) -> Result<(), String> {
        let Some(g) = self.groups.iter_mut().find(|g| g.config.name == group) else {
            return Err(format!("no group {group:?}"));
        };
        if g.role != Role::Master {
            return Err(format!(
                "group {group:?} is {:?} here: only its master hands it over",
                g.role
            ));
        }
        if g.yielding {
            return Err(format!("group {group:?} is already being handed over"));
        }
        g.yielding = true;
        Ok(())
    }

    /// The handover of `group` did not happen: this node keeps it.
    pub fn unyield(&mut self, group: &str) {
        if let Some(g) = self.groups.iter_mut().find(|g| g.config.name == group) {
            g.yielding = false;
        }
    }

    /// CAPWAP traffic of one of `group`'s tunnels arrived here at `now`.
    pub fn witness(&mut self, group: &str, now: Instant) -> Vec<Decision> {
        // The peer is silent: as for a dead one, see `tick`.
        let behind = false;
        let missed = self
            .peer_heard
            .is_none_or(|h| now.saturating_duration_since(h) > self.timers.heartbeat * 3 / 2);
        let mut out = Vec::new();
        if let Some(g) = self.groups.iter_mut().find(|g| g.config.name == group)
            && missed
            && g.role != Role::Master
        {
            apply(g, behind, Role::Master, Reason::Witness, now, &mut out);
        }
        out
    }

    /// This node's view of every group, for its heartbeat.
    pub fn advert(&self, now: Instant) -> Vec<(String, PeerGroup)> {
        self.groups
            .iter()
            .map(|g| {
                let master_for_ms = match g.role {
                    Role::Master => now.saturating_duration_since(g.since).as_millis() as u64,
                    _ => 0,
                };
                (
                    g.config.name.clone(),
                    PeerGroup {
                        priority: g.config.priority,
                        role: g.role,
                        master_for_ms,
                        synced: g.synced,
                        yielding: g.yielding,
                    },
                )
            })
            .collect()
    }
}

/// Takes `role` for `g`, unless it is mastership this node may not take
/// (its copy is incomplete and the peer has held the group): then the
/// group is marked blocked and stays as it is.
fn apply(
    g: &mut Group,
    behind: bool,
    role: Role,
    reason: Reason,
    now: Instant,
    out: &mut Vec<Decision>,
) {
    if role == Role::Master && (!g.synced || behind) && g.peer_held {
        g.blocked = true;
        return;
    }
    g.blocked = false;
    if g.role == role {
        return;
    }
    g.role = role;
    g.since = now;
    g.yielding = false;
    if role == Role::Backup {
        // Preemption counts its delay from here.
        g.healthy_since = None;
    }
    out.push(Decision {
        group: g.config.name.clone(),
        role,
        reason,
    });
}

#[cfg(test)]
mod tests;

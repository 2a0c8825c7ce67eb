//! Planned make-before-break handover of a group to the peer (`ferry
//! failover`, and every preemption), carried on the sync stream.
//!
//! ```text
//!  old master (gives)                          new master (takes)
//!  yield: the election holds still
//!  station scan + Take{id, group}  ─────────▶  stations installed (ordered
//!                                              stream: the barrier), role
//!                                              written, stations announced
//!                                  ◀─────────  Taken{id, flip µs}
//!  election: backup; data plane still
//!  active; keepalives of the group's
//!  tunnels unanswered, so dual-link APs
//!  move their data to the new master
//!  ... until no data of the group arrives
//!  for `quiet` (or `max_drain` passed)
//!  Drained{id}                     ─────────▶  stations announced again (the
//!                                              old master's forwarding taught
//!                                              the switches its port again)
//!                                  ◀─────────  Settled{id, counts}
//!  group standby, keepalives answered
//! ```
//!
//! Both nodes forward the group from `Taken` to `Settled`: upstream frames
//! reach whichever node the AP sends them to, downstream frames whichever
//! node the switches point the station at, and the old master stands by
//! only once the AP's data has left it and the new master's announcements
//! are out. The old master's lease on the group runs on while it drains,
//! so a crash of either node mid-way still ends with the survivor alone.
//!
//! The steps here are decisions on state; the sync service does the I/O.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use ferry_ebpf::abi::GroupStats;
use serde::{Deserialize, Serialize};

use super::stream::Handoff;

/// How a handover waits for the APs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    /// The group's traffic is gone from the old master once none arrived
    /// for this long.
    pub quiet_ms: u64,
    /// Stand by after this long even if traffic still arrives (APs that
    /// ignore the unanswered keepalives, or have long keepalive intervals).
    pub max_drain_ms: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            quiet_ms: 300,
            max_drain_ms: 10_000,
        }
    }
}

/// How long the peer may take to answer `Take`.
const TAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the peer may take to announce (a million stations at
/// 50,000/s is 20 s).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A handover's step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Accepted, not started.
    Queued,
    /// `Take` sent, waiting for the peer.
    Taking,
    /// Both forward; waiting for the group's traffic to leave this node.
    Draining,
    /// Drained; the peer announces its stations.
    Announcing,
    /// This node stands by, the peer masters the group.
    Done,
    /// Did not happen (see the error); the roles say who masters now.
    Failed,
}

/// One handover as `ferry failover` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoverStatus {
    /// Its id (per node).
    pub id: u64,
    /// The group.
    pub group: String,
    /// Where it is.
    pub phase: Phase,
    /// Why it failed, or what went wrong after the peer took the group.
    pub error: Option<String>,
    /// Since it started (frozen at the end).
    pub elapsed_ms: u64,
    /// From sending `Take` to the peer's answer (the group forwards there
    /// from within this).
    pub take_us: Option<u64>,
    /// The peer's role write.
    pub peer_flip_us: Option<u64>,
    /// How long this node forwarded beside the new master.
    pub drain_ms: Option<u64>,
    /// What ended the drain: `quiet` (no traffic for the quiet time) or
    /// `limit` (max_drain_ms; traffic may still arrive here).
    pub drained_by: Option<String>,
    /// Stations the peer announced after the drain.
    pub announced: Option<u64>,
    /// Frames this node forwarded for the group since the start, up.
    pub here_up: u64,
    /// The same, down.
    pub here_down: u64,
    /// Frames the peer forwarded for the group since it took it, up.
    pub peer_up: Option<u64>,
    /// The same, down.
    pub peer_down: Option<u64>,
}

impl HandoverStatus {
    /// Handover `id` of `group` at `phase`, nothing measured yet.
    pub fn new(id: u64, group: &str, phase: Phase) -> Self {
        Self {
            id,
            group: group.to_string(),
            phase,
            error: None,
            elapsed_ms: 0,
            take_us: None,
            peer_flip_us: None,
            drain_ms: None,
            drained_by: None,
            announced: None,
            here_up: 0,
            here_down: 0,
            peer_up: None,
            peer_down: None,
        }
    }

    /// Whether it is over.
    pub fn finished(&self) -> bool {
        matches!(self.phase, Phase::Done | Phase::Failed)
    }
}

/// Orders for the sync service from the admin socket and the HA thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    /// Hand `group` (index `index`) to the peer.
    Failover {
        /// Handover id.
        id: u64,
        /// Group.
        group: String,
        /// Its index.
        index: u16,
        /// Timing.
        opts: Options,
    },
    /// Preemption: ask the peer to hand `group` back.
    Ask {
        /// Group.
        group: String,
    },
    /// Send a bulk snapshot, and ask the peer for one.
    Resync,
    /// Send this node's table, of this revision, to the peer.
    Table {
        /// Its revision.
        revision: u64,
    },
}

/// The queue of [`Order`]s, shared by the HA handle, the HA thread and
/// the sync service.
#[derive(Debug, Clone, Default)]
pub struct Inbox(Arc<Mutex<VecDeque<Order>>>);

impl Inbox {
    /// Queues `o`.
    pub fn push(&self, o: Order) {
        self.lock().push_back(o);
    }

    /// Everything queued.
    pub fn take(&self) -> Vec<Order> {
        self.lock().drain(..).collect()
    }

    /// Whether anything is queued.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Order>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the sync service must do for a step.
#[derive(Debug)]
pub enum Step {
    /// Send this to the peer.
    Send(Handoff),
    /// The group's handover needs its data plane to stand by now.
    Stand {
        /// Group name.
        group: String,
        /// Index.
        index: u16,
    },
}

/// A handover this node gives.
#[derive(Debug)]
struct Giving {
    status: HandoverStatus,
    index: u16,
    opts: Options,
    t0: Instant,
    base: GroupStats,
    phase_at: Instant,
    last_rx: u64,
    changed_at: Instant,
}

/// A handover this node takes.
#[derive(Debug)]
pub struct Taking {
    /// Group name.
    pub group: String,
    /// Its index.
    pub index: u16,
    /// Its statistics when taken.
    pub base: GroupStats,
    /// The announcement after the drain: (sent, of).
    pub done: Option<mpsc::Receiver<(u64, u64)>>,
}

/// Every handover under way here, both ways.
#[derive(Debug, Default)]
pub struct Handovers {
    giving: Vec<Giving>,
    /// By the peer's handover id.
    pub taking: HashMap<u64, Taking>,
}

impl Handovers {
    /// Starts giving a group: `Take` was just sent after the barrier scan.
    pub fn started(&mut self, id: u64, group: &str, index: u16, opts: Options, base: GroupStats) {
        let now = Instant::now();
        self.giving.push(Giving {
            status: HandoverStatus::new(id, group, Phase::Taking),
            index,
            opts,
            t0: now,
            base,
            phase_at: now,
            last_rx: base.rx_packets,
            changed_at: now,
        });
    }

    /// A status that never started (refused before `Take`).
    pub fn refused(id: u64, group: &str, error: String) -> HandoverStatus {
        HandoverStatus {
            error: Some(error),
            ..HandoverStatus::new(id, group, Phase::Failed)
        }
    }

    /// The group index of handover `id` given here, if it is taking.
    pub fn taking_index(&self, id: u64) -> Option<(String, u16)> {
        self.giving
            .iter()
            .find(|g| g.status.id == id && g.status.phase == Phase::Taking)
            .map(|g| (g.status.group.clone(), g.index))
    }

    /// The peer's answer to `Take`: `Ok` means it forwards the group now
    /// and this node has released it in its election (the caller did), so
    /// the drain starts.
    pub fn taken(&mut self, id: u64, result: Result<u64, String>) {
        let now = Instant::now();
        if let Some(g) = self.giving.iter_mut().find(|g| g.status.id == id) {
            g.status.take_us = Some(now.saturating_duration_since(g.t0).as_micros() as u64);
            match result {
                Ok(us) => {
                    g.status.peer_flip_us = Some(us);
                    g.status.phase = Phase::Draining;
                    g.phase_at = now;
                    g.changed_at = now;
                }
                Err(e) => {
                    g.status.phase = Phase::Failed;
                    g.status.error = Some(format!("the peer refused: {e}"));
                }
            }
        }
    }

    /// Time passes: drains that are over, handovers the peer does not
    /// answer. `rx` reads a group's statistics here. Returns what to do
    /// and the groups whose handover failed before the peer took them
    /// (to be kept: unyield).
    pub fn tick(
        &mut self,
        now: Instant,
        mut rx: impl FnMut(u16) -> Option<GroupStats>,
    ) -> (Vec<Step>, Vec<String>) {
        let mut steps = Vec::new();
        let mut keep = Vec::new();
        for g in &mut self.giving {
            let in_phase = now.saturating_duration_since(g.phase_at);
            match g.status.phase {
                Phase::Taking if in_phase >= TAKE_TIMEOUT => {
                    g.status.phase = Phase::Failed;
                    g.status.error = Some("the peer did not answer".into());
                    keep.push(g.status.group.clone());
                }
                Phase::Draining => {
                    if let Some(s) = rx(g.index)
                        && s.rx_packets != g.last_rx
                    {
                        g.last_rx = s.rx_packets;
                        g.changed_at = now;
                    }
                    let quiet = now.saturating_duration_since(g.changed_at)
                        >= Duration::from_millis(g.opts.quiet_ms);
                    let limit = in_phase >= Duration::from_millis(g.opts.max_drain_ms);
                    if quiet || limit {
                        g.status.drain_ms = Some(in_phase.as_millis() as u64);
                        g.status.drained_by =
                            Some(if quiet { "quiet" } else { "limit" }.to_string());
                        g.status.phase = Phase::Announcing;
                        g.phase_at = now;
                        steps.push(Step::Send(Handoff::Drained { id: g.status.id }));
                    }
                }
                Phase::Announcing if in_phase >= SETTLE_TIMEOUT => {
                    g.status.error = Some("the peer did not confirm its announcements".into());
                    steps.push(Step::Stand {
                        group: g.status.group.clone(),
                        index: g.index,
                    });
                    g.status.phase = Phase::Done;
                }
                _ => {}
            }
            if !g.status.finished() {
                g.status.elapsed_ms = now.saturating_duration_since(g.t0).as_millis() as u64;
            }
        }
        (steps, keep)
    }

    /// The peer announced and counted: stand by.
    pub fn settled(&mut self, id: u64, announced: u64, up: u64, down: u64) -> Option<Step> {
        let g = self
            .giving
            .iter_mut()
            .find(|g| g.status.id == id && g.status.phase == Phase::Announcing)?;
        g.status.announced = Some(announced);
        g.status.peer_up = Some(up);
        g.status.peer_down = Some(down);
        g.status.phase = Phase::Done;
        Some(Step::Stand {
            group: g.status.group.clone(),
            index: g.index,
        })
    }

    /// The stream is gone: handovers not yet taken fail (kept here), the
    /// others stand by (the peer has the group).
    pub fn lost(&mut self) -> (Vec<Step>, Vec<String>) {
        let mut steps = Vec::new();
        let mut keep = Vec::new();
        for g in &mut self.giving {
            match g.status.phase {
                Phase::Queued | Phase::Taking => {
                    g.status.phase = Phase::Failed;
                    g.status.error = Some("the sync stream went down".into());
                    keep.push(g.status.group.clone());
                }
                Phase::Draining | Phase::Announcing => {
                    g.status.phase = Phase::Done;
                    g.status.error = Some(
                        "the sync stream went down after the peer took the group: stood by without its last announcement".into(),
                    );
                    steps.push(Step::Stand {
                        group: g.status.group.clone(),
                        index: g.index,
                    });
                }
                Phase::Done | Phase::Failed => {}
            }
        }
        self.taking.clear();
        (steps, keep)
    }

    /// Whether a handover is under way either way: given here and not
    /// finished, or taken here and not settled. The taking side holds its
    /// entry from `Take` to `Settled`, the whole drain included, with
    /// nothing due on its clock ([`Handovers::busy`] is false then), and
    /// it may be the side that moves the stream: a drop then cuts the
    /// handover short, and the giver stands by without its last
    /// announcement.
    pub fn under_way(&self) -> bool {
        self.busy() || !self.taking.is_empty()
    }

    /// Whether a step is due soon (the service polls every few ms then).
    pub fn busy(&self) -> bool {
        self.giving.iter().any(|g| !g.status.finished())
            || self.taking.values().any(|t| t.done.is_some())
    }

    /// Records this node's forwarding since the start and hands out the
    /// statuses; finished ones are handed out once and forgotten.
    pub fn drain_statuses(
        &mut self,
        mut stats: impl FnMut(u16) -> Option<GroupStats>,
    ) -> Vec<HandoverStatus> {
        let mut out = Vec::with_capacity(self.giving.len());
        for g in &mut self.giving {
            if let Some(s) = stats(g.index)
                && g.status.phase != Phase::Failed
            {
                g.status.here_up = s.up_packets.saturating_sub(g.base.up_packets);
                g.status.here_down = s.down_packets.saturating_sub(g.base.down_packets);
            }
            out.push(g.status.clone());
        }
        self.giving.retain(|g| !g.status.finished());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(rx: u64) -> GroupStats {
        GroupStats {
            rx_packets: rx,
            up_packets: rx,
            ..Default::default()
        }
    }

    /// Group "g" (index 1) as the taking side holds it after `Take`.
    fn taken() -> Taking {
        Taking {
            group: "g".into(),
            index: 1,
            base: GroupStats::default(),
            done: None,
        }
    }

    #[test]
    fn a_group_taken_here_is_under_way_from_take_to_settled() {
        let mut h = Handovers::default();
        assert!(!h.under_way());
        // Take received: the drain runs on the giver's clock, nothing is
        // due here. The stream's path gate used `busy()`, which is false
        // now, so the connecting taker could move the stream mid-drain
        // (`ferry-bench failover --phases unplanned,planned` failed so).
        h.taking.insert(3, taken());
        assert!(!h.busy());
        assert!(h.under_way());
        // Drained: announcing.
        let (_tx, rx) = mpsc::channel();
        h.taking.get_mut(&3).unwrap().done = Some(rx);
        assert!(h.under_way());
        // Settled (or the stream lost): nothing under way.
        h.taking.remove(&3);
        assert!(!h.under_way());
        h.taking.insert(4, taken());
        let _ = h.lost();
        assert!(!h.under_way());
    }

    #[test]
    fn a_drain_ends_once_the_groups_traffic_stops_then_the_peer_settles_it() {
        let mut h = Handovers::default();
        let opts = Options {
            quiet_ms: 100,
            max_drain_ms: 5_000,
        };
        h.started(1, "g", 1, opts, stats(10));
        assert_eq!(h.taking_index(1), Some(("g".into(), 1)));
        h.taken(1, Ok(7));
        let t = Instant::now();
        // Traffic keeps arriving for 300 ms: no drain.
        let mut rx = 10;
        for ms in (0..300).step_by(10) {
            rx += 5;
            let (steps, keep) = h.tick(t + Duration::from_millis(ms), |_| Some(stats(rx)));
            assert!(steps.is_empty() && keep.is_empty(), "at {ms} ms");
        }
        // Then it stops: drained after the quiet time.
        let (steps, _) = h.tick(t + Duration::from_millis(350), |_| Some(stats(rx)));
        assert!(steps.is_empty());
        let (steps, _) = h.tick(t + Duration::from_millis(400), |_| Some(stats(rx)));
        assert!(
            matches!(steps[..], [Step::Send(Handoff::Drained { id: 1 })]),
            "{steps:?}"
        );
        assert!(h.settled(2, 0, 0, 0).is_none(), "unknown id");
        let s = h.settled(1, 3, 4, 5);
        assert!(matches!(s, Some(Step::Stand { index: 1, .. })), "{s:?}");
        let st = h.drain_statuses(|_| Some(stats(rx)));
        assert_eq!(st[0].phase, Phase::Done);
        assert_eq!(st[0].drained_by.as_deref(), Some("quiet"));
        assert_eq!(st[0].peer_flip_us, Some(7));
        assert_eq!((st[0].here_up, st[0].peer_up), (rx - 10, Some(4)));
        assert!(h.drain_statuses(|_| None).is_empty(), "handed out once");
    }

    #[test]
    fn traffic_that_never_stops_ends_the_drain_at_the_limit() {
        let mut h = Handovers::default();
        let opts = Options {
            quiet_ms: 100,
            max_drain_ms: 500,
        };
        h.started(1, "g", 1, opts, stats(0));
        h.taken(1, Ok(1));
        let t = Instant::now();
        let mut drained = None;
        for (rx, ms) in (0..1000u64).step_by(10).enumerate() {
            let (steps, _) = h.tick(t + Duration::from_millis(ms), |_| {
                Some(stats(rx as u64 + 1))
            });
            if !steps.is_empty() && drained.is_none() {
                drained = Some(ms);
            }
        }
        let ms = drained.unwrap();
        assert!((500..=520).contains(&ms), "{ms}");
        let st = h.drain_statuses(|_| None);
        assert_eq!(st[0].drained_by.as_deref(), Some("limit"));
    }

    #[test]
    fn a_refusal_a_silent_peer_or_a_lost_stream_keep_or_stand_as_they_must() {
        let mut h = Handovers::default();
        h.started(1, "a", 1, Options::default(), stats(0));
        h.taken(1, Err("incomplete".into()));
        h.started(2, "b", 2, Options::default(), stats(0));
        let (_, keep) = h.tick(Instant::now() + TAKE_TIMEOUT, |_| None);
        assert_eq!(keep, vec!["b".to_string()]);
        h.started(3, "c", 3, Options::default(), stats(0));
        h.started(4, "d", 4, Options::default(), stats(0));
        h.taken(4, Ok(1));
        let (steps, keep) = h.lost();
        assert_eq!(keep, vec!["c".to_string()]);
        assert!(
            matches!(steps[..], [Step::Stand { index: 4, .. }]),
            "{steps:?}"
        );
        let st = h.drain_statuses(|_| None);
        let phases: Vec<_> = st.iter().map(|s| (s.id, s.phase)).collect();
        assert_eq!(
            phases,
            vec![
                (1, Phase::Failed),
                (2, Phase::Failed),
                (3, Phase::Failed),
                (4, Phase::Done)
            ]
        );
        assert!(st[0].error.as_deref().unwrap().contains("incomplete"));
        assert!(!h.busy());
    }
}

//! The sync service's side of planned handovers ([`super::super::handover`]):
//! orders from the inbox, the peer's handover messages, and the steps the
//! clock drives. The HA thread changes roles; this side talks to the peer
//! and watches the group's traffic.

use std::{
    sync::mpsc,
    time::{Duration, Instant},
};

use super::{super::handover::Step, Control, Event, EventKind, Msg, SyncService, stream};
use crate::{
    ha::{
        handover::{Handovers, Options, Order, Taking},
        stream::Handoff,
    },
    runtime::node::Node,
};

/// How often a handover under way is looked at (the drain's resolution).
pub(super) const STEP: Duration = Duration::from_millis(5);

impl SyncService {
    fn connected(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| !c.connecting)
    }

    pub(super) fn send_control(&mut self, h: Handoff) {
        self.queue(&stream::marker(&Msg::Control(h)));
    }

    pub(super) fn group_event(node: &Node, group: &str, detail: String) {
        tracing::info!(group, "HA handover: {detail}");
        if let Some(ha) = &node.ha {
            ha.send(Control::Event(Event {
                group: Some(group.to_string()),
                ..Event::now(EventKind::Handover, detail)
            }));
        }
    }

    /// Carries out what the admin socket and the HA thread queued.
    pub(super) fn orders(&mut self, node: &mut Node) {
        for o in self.inbox.take() {
            match o {
                Order::Failover {
                    id,
                    group,
                    index,
                    opts,
                } => self.give(node, id, &group, index, opts),
                Order::Ask { group } if self.connected() => {
                    self.send_control(Handoff::Ask { group });
                }
                Order::Ask { group } => Self::group_event(
                    node,
                    &group,
                    "preemption not asked: the sync stream is down".into(),
                ),
                Order::Resync if self.connected() => {
                    self.bulk(node);
                    self.send_control(Handoff::Resync);
                }
                Order::Resync => {}
                Order::Table { revision } if self.connected() => self.send_table(node, revision),
                // Sent when the stream comes back (the newer one wins).
                Order::Table { .. } => {}
            }
        }
    }

    /// Starts handing `group` to the peer: hold the election, send every
    /// station change so far, then `Take` behind them.
    fn give(&mut self, node: &mut Node, id: u64, group: &str, index: u16, opts: Options) {
        let Some(ha) = &node.ha else { return };
        let refuse = |e: String| {
            ha.publish_handovers(vec![Handovers::refused(id, group, e)]);
        };
        if !self.connected() {
            refuse("the sync stream is down".into());
            return;
        }
        let held = ha.call(|reply| Control::Yield {
            group: group.to_string(),
            reply,
        });
        if let Err(e) = held.and_then(|r| r) {
            refuse(e);
            return;
        }
        let base = node.dp.group_stats(index).unwrap_or_default();
        // The barrier: the stream is ordered, so the peer installs these
        // before it reads `Take`.
        self.scan(node);
        self.send_control(Handoff::Take {
            id,
            group: group.to_string(),
        });
        self.handovers.started(id, group, index, opts, base);
        Self::group_event(
            node,
            group,
            format!("handover {id}: asked the peer to take the group"),
        );
        self.publish_handovers(node);
    }

    /// A handover message from the peer.
    pub(super) fn control(&mut self, node: &mut Node, h: Handoff) {
        let Some(ha) = &node.ha else { return };
        match h {
            Handoff::Take { id, group } => self.take(node, id, group),
            Handoff::Taken { id, result } => self.taken(node, id, result),
            Handoff::Drained { id } => match self.handovers.taking.get_mut(&id) {
                Some(t) => {
                    let (done, rx) = mpsc::channel();
                    ha.send(Control::Announce {
                        group: t.group.clone(),
                        done,
                    });
                    t.done = Some(rx);
                }
                None => self.send_control(Handoff::Settled {
                    id,
                    announced: 0,
                    up: 0,
                    down: 0,
                }),
            },
            Handoff::Settled {
                id,
                announced,
                up,
                down,
            } => {
                if let Some(s) = self.handovers.settled(id, announced, up, down) {
                    self.step(node, s);
                }
            }
            Handoff::Ask { group } => {
                let index = group_index(node, &group);
                let mastered = index.is_some_and(|i| node.dp.group_active(i).unwrap_or(false));
                match index {
                    Some(i) if mastered => {
                        let id = ha.failover_asked(&group, i);
                        Self::group_event(
                            node,
                            &group,
                            format!("the peer preempts: handing the group back (handover {id})"),
                        );
                    }
                    _ => Self::group_event(
                        node,
                        &group,
                        "the peer asked for a group not mastered here: ignored".into(),
                    ),
                }
            }
            Handoff::Resync => self.bulk(node),
            Handoff::Learned { ports, bindings } => self.learned_in(node, ports, bindings),
            Handoff::Table {
                revision,
                part,
                parts,
                data,
                digest,
                confirmed,
            } => self.table_part(node, (revision, digest, confirmed), (part, parts), data),
        }
        self.publish_handovers(node);
    }

    /// The peer hands a group over: take it, answer `Taken`.
    fn take(&mut self, node: &mut Node, id: u64, group: String) {
        let Some(ha) = &node.ha else { return };
        let r = ha
            .call(|reply| Control::Take {
                group: group.clone(),
                reply,
            })
            .and_then(|r| r);
        let index = group_index(node, &group);
        if let (Ok(us), Some(index)) = (&r, index) {
            let base = node.dp.group_stats(index).unwrap_or_default();
            self.handovers.taking.insert(
                id,
                Taking {
                    group: group.clone(),
                    index,
                    base,
                    done: None,
                },
            );
            Self::group_event(
                node,
                &group,
                format!("took the group from the peer (handover {id}) in {us} µs"),
            );
        } else if let Err(e) = &r {
            Self::group_event(node, &group, format!("refused to take the group: {e}"));
        }
        self.send_control(Handoff::Taken { id, result: r });
    }

    /// The peer's answer to `Take`: release the group here and drain, or
    /// keep it.
    fn taken(&mut self, node: &mut Node, id: u64, result: Result<u64, String>) {
        let Some(ha) = &node.ha else { return };
        let Some((group, index)) = self.handovers.taking_index(id) else {
            return;
        };
        let result = result.and_then(|us| {
            ha.call(|reply| Control::Release {
                group: group.clone(),
                reply,
            })
            .and_then(|r| r)
            .map(|()| us)
        });
        match &result {
            Ok(_) => {
                ha.withhold(index, true);
                Self::group_event(
                    node,
                    &group,
                    format!("handover {id}: the peer forwards the group; draining here"),
                );
            }
            Err(e) => {
                ha.send(Control::Unyield {
                    group: group.clone(),
                });
                Self::group_event(node, &group, format!("handover {id} failed: {e}"));
            }
        }
        self.handovers.taken(id, result);
    }

    /// Handovers the clock moves: announcements finished here (taking
    /// side), drains and timeouts (giving side).
    pub(super) fn handover_tick(&mut self, node: &mut Node, now: Instant) {
        let mut settled = Vec::new();
        for (id, t) in &mut self.handovers.taking {
            let Some(rx) = &t.done else { continue };
            let announced = match rx.try_recv() {
                Ok((sent, _)) => sent,
                Err(mpsc::TryRecvError::Empty) => continue,
                Err(mpsc::TryRecvError::Disconnected) => 0,
            };
            let s = node.dp.group_stats(t.index).unwrap_or_default();
            settled.push(Handoff::Settled {
                id: *id,
                announced,
                up: s.up_packets.saturating_sub(t.base.up_packets),
                down: s.down_packets.saturating_sub(t.base.down_packets),
            });
            t.done = None;
        }
        for h in settled {
            if let Handoff::Settled { id, .. } = &h {
                self.handovers.taking.remove(id);
            }
            self.send_control(h);
        }
        if !self.handovers.busy() {
            return;
        }
        let (steps, keep) = self.handovers.tick(now, |i| node.dp.group_stats(i).ok());
        self.carry_out(node, steps, keep);
    }

    /// Carries out `steps`, keeps the groups in `keep` (their handover
    /// did not happen) and publishes the handovers.
    fn carry_out(&mut self, node: &Node, steps: Vec<Step>, keep: Vec<String>) {
        for s in steps {
            self.step(node, s);
        }
        if let Some(ha) = &node.ha {
            for group in keep {
                ha.send(Control::Unyield { group });
            }
        }
        self.publish_handovers(node);
    }

    fn step(&mut self, node: &Node, s: Step) {
        match s {
            Step::Send(h) => self.send_control(h),
            Step::Stand { group, index } => {
                if let Some(ha) = &node.ha {
                    ha.send(Control::Stand {
                        group: group.clone(),
                    });
                    ha.withhold(index, false);
                }
            }
        }
    }

    /// The stream went down under handovers.
    pub(super) fn handovers_lost(&mut self, node: &Node) {
        let (steps, keep) = self.handovers.lost();
        self.carry_out(node, steps, keep);
    }

    fn publish_handovers(&mut self, node: &Node) {
        let v = self
            .handovers
            .drain_statuses(|i| node.dp.group_stats(i).ok());
        if let (Some(ha), false) = (&node.ha, v.is_empty()) {
            ha.publish_handovers(v);
        }
    }
}

/// The data plane index of group `name` here, if it is one of ours.
fn group_index(node: &Node, name: &str) -> Option<u16> {
    node.tables.config.ha.as_ref()?.group_index(name)
}

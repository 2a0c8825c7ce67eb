//! What the HA thread publishes each round: the cluster view for
//! `ferry cluster status` and the metrics, and path and peer changes for
//! the history.

use std::time::Instant;

use tracing::info;

use super::{Link, lock};
use crate::ha::view::{Event, EventKind, GroupStatus, PathStatus};

impl Link {
    /// Copies the state out for readers, and notes path and peer changes.
    pub(super) fn publish(&mut self, now: Instant) {
        let dead = self.ha.heartbeat * self.ha.dead_after;
        let ms =
            |t: Option<Instant>| t.map(|t| now.saturating_duration_since(t).as_millis() as u64);
        let mut events = Vec::new();
        let mut paths = Vec::with_capacity(self.ha.peers.len());
        for (i, addr) in self.ha.peers.iter().enumerate() {
            let (at, received) = self.heard[i];
            let up = at.is_some_and(|t| now.saturating_duration_since(t) < dead);
            if up != self.path_up[i] && (up || at.is_some()) {
                let kind = if up {
                    EventKind::PathUp
                } else {
                    EventKind::PathDown
                };
                events.push(Event::now(kind, format!("path {} ({addr})", i + 1)));
            }
            self.path_up[i] = up;
            paths.push(PathStatus {
                address: *addr,
                up,
                last_heard_ms: ms(at),
                received,
            });
        }
        let any = paths.iter().any(|p| p.up);
        let heard = self.heard.iter().filter_map(|h| h.0).max();
        if heard.is_some() && self.peer_up != Some(any) {
            let kind = if any {
                EventKind::PeerUp
            } else {
                EventKind::PeerDown
            };
            let name = self.peer_view.as_ref().map_or("?", |a| a.node.as_str());
            events.push(Event::now(kind, format!("peer {name}")));
            self.peer_up = Some(any);
        }
        let groups = self.group_statuses(now, any);
        let mut s = lock(&self.shared);
        for e in events {
            info!(kind = ?e.kind, detail = %e.detail, "HA");
            s.history.push(e);
        }
        let st = &mut s.status;
        st.node = self.node.clone();
        st.address = Some(self.local);
        st.election = Some(self.ha.election);
        st.heartbeat_ms = self.ha.heartbeat.as_millis() as u64;
        st.groups = groups;
        st.sent = self.sent.clone();
        st.peer.node = self.peer_view.as_ref().map(|a| a.node.clone());
        st.peer.state = match (heard, any) {
            (None, _) => "unknown",
            (Some(_), true) => "up",
            (Some(_), false) => "down",
        }
        .to_string();
        st.peer.epoch = self.opener.epoch();
        st.peer.last_heard_ms = ms(heard);
        st.peer.licenses = self.peer_view.as_ref().and_then(|a| a.licenses);
        st.peer.paths = paths;
        st.revision = self.revisions.own();
        st.peer_revision = self.peer_view.as_ref().map(|_| self.revisions.peer());
    }

    /// Each group as this node and its data plane have it; the peer's view
    /// only while the peer is heard (`peer_heard`).
    fn group_statuses(&self, now: Instant, peer_heard: bool) -> Vec<GroupStatus> {
        let any = peer_heard;
        self.election
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                // The peer's view only while it is heard: a dead peer's
                // last words are not its role.
                let peer = self.peer_view.as_ref().filter(|_| any).and_then(|a| {
                    a.groups
                        .iter()
                        .find(|(n, _)| *n == g.config.name)
                        .map(|(_, p)| *p)
                });
                let index = i as u16 + 1;
                let stats = self.roles.stats(index).unwrap_or_default();
                let dataplane = match self.roles.active(index) {
                    Ok(true) => "active".to_string(),
                    Ok(false) => "standby".to_string(),
                    Err(e) => format!("unreadable: {e}"),
                };
                GroupStatus {
                    name: g.config.name.clone(),
                    index,
                    role: g.role,
                    dataplane,
                    reason: self.reasons[i],
                    for_ms: now.saturating_duration_since(g.since).as_millis() as u64,
                    priority: g.config.priority,
                    peer_priority: peer.map(|p| p.priority),
                    peer_role: peer.map(|p| p.role),
                    preempt: g.config.preempt,
                    preempt_delay_s: g.config.preempt_delay.as_secs(),
                    synced: g.synced,
                    blocked: g.blocked,
                    peer_synced: peer.map(|p| p.synced),
                    up_packets: stats.up_packets,
                    down_packets: stats.down_packets,
                    standby_drops: stats.standby_drops,
                }
            })
            .collect()
    }
}

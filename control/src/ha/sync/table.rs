//! The pair's table on the sync stream. A table change applied on one
//! node (`ferry swap`, `--rollback`, `reload`, `tunnel ...`) takes the
//! next pair revision and is sent whole: its tunnels and static stations
//! as JSON, cut into parts that fit the envelope (a 25,600-tunnel table is
//! several MiB). The peer swaps it in through its own command path, with
//! the same validation as a file (refused whole, with the reason in its
//! history), and takes the revision. On every (re)connect each side offers
//! its table; the receiver takes it if it is newer than its own, or, at
//! an equal revision, if it differs and the tie rule of
//! [`crate::ha::revision`] gives it to the peer.

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{Control, Event, EventKind, SyncService};
use crate::ha::revision;
use crate::{
    commands::Command,
    config::{StationEntry, TunnelEntry},
    ha::stream::Handoff,
    runtime::node::Node,
};

/// Largest part of a table's JSON (escaped inside the message's own JSON,
/// it stays well under the envelope's 1 MiB).
const PART: usize = 384 << 10;

/// A table as sent.
#[derive(Serialize, Deserialize)]
struct TableBody {
    tunnels: Vec<TunnelEntry>,
    stations: Vec<StationEntry>,
}

impl SyncService {
    fn table_event(node: &Node, kind: EventKind, detail: String) {
        tracing::info!("HA table: {detail}");
        if let Some(ha) = &node.ha {
            ha.send(Control::Event(Event::now(kind, detail)));
        }
    }

    /// Sends the running table as revision `revision`.
    pub(super) fn send_table(&mut self, node: &Node, revision: u64) {
        let c = &node.tables.config;
        let body = TableBody {
            tunnels: c.tunnel_entries(),
            stations: c.station_entries(),
        };
        let json = match serde_json::to_string(&body) {
            Ok(j) => j,
            Err(e) => {
                warn!("HA: encoding the table: {e}");
                return;
            }
        };
        let parts = split(&json, PART);
        let n = parts.len() as u32;
        let digest = self.revisions.digest();
        let confirmed = self.revisions.confirmed();
        for (i, p) in parts.into_iter().enumerate() {
            self.send_control(Handoff::Table {
                revision,
                part: i as u32,
                parts: n,
                data: p.to_string(),
                digest: digest.clone(),
                confirmed,
            });
        }
        Self::table_event(
            node,
            EventKind::Table,
            format!(
                "sent table revision {revision} to the peer ({} tunnels, {} bytes in {n} parts)",
                body.tunnels.len(),
                json.len()
            ),
        );
    }

    /// One part of the peer's table; the last one applies it.
    pub(super) fn table_part(
        &mut self,
        node: &mut Node,
        (revision, digest, confirmed): (u64, String, bool),
        (part, parts): (u32, u32),
        data: String,
    ) {
        if part == 0 || self.table_rx.as_ref().is_none_or(|t| t.0 != revision) {
            self.table_rx = Some((revision, Vec::new()));
        }
        let Some((_, got)) = self.table_rx.as_mut() else {
            return;
        };
        if got.len() != part as usize {
            // Parts come in order on one stream; anything else is a
            // table we cannot trust: drop it, the next one replaces it.
            self.table_rx = None;
            return;
        }
        got.push(data);
        if got.len() < parts as usize {
            return;
        }
        let Some((_, got)) = self.table_rx.take() else {
            return;
        };
        let own = self.revisions.own();
        if revision < own
            || (revision == own && !self.peer_wins_tie(node, revision, &digest, confirmed))
        {
            return;
        }
        let body: TableBody = match serde_json::from_str(&got.concat()) {
            Ok(b) => b,
            Err(e) => {
                Self::table_event(
                    node,
                    EventKind::Error,
                    format!("table revision {revision} from the peer is unreadable: {e}"),
                );
                return;
            }
        };
        let n = body.tunnels.len();
        let r = node.execute(Command::PeerTable {
            tunnels: body.tunnels,
            stations: body.stations,
        });
        match r {
            Ok(c) => {
                self.revisions.set(revision);
                match revision::digest_of(&node.tables.config) {
                    Ok(d) => self.revisions.set_digest(d),
                    Err(e) => warn!("digest of the peer's table: {e}"),
                }
                revision::save(node);
                Self::table_event(
                    node,
                    EventKind::Table,
                    format!(
                        "applied the peer's table revision {revision} ({n} tunnels, generation {}) in {} µs",
                        c.new_generation, c.total_us
                    ),
                );
            }
            Err(e) => Self::table_event(
                node,
                EventKind::Error,
                format!("refused the peer's table revision {revision}: {e:#}"),
            ),
        }
    }
}

impl SyncService {
    /// At equal revisions: whether the peer's table (of `digest`,
    /// `confirmed` as it says) replaces ours. An equal table needs
    /// nothing; a different one goes to a confirmed node over an
    /// unconfirmed one, else to the node with the lower address on the
    /// first path, the side that connects ([`revision`]).
    fn peer_wins_tie(&self, node: &Node, revision: u64, digest: &str, confirmed: bool) -> bool {
        if digest == self.revisions.digest() {
            self.confirm(node);
            return false;
        }
        let ours = self.revisions.confirmed();
        let (wins, why) = match (ours, confirmed) {
            (false, true) => (true, "this node started with another table"),
            (true, false) => (false, "the peer started with another table"),
            _ if self.we_connect => (false, "this node has the lower address"),
            _ => (true, "the peer has the lower address"),
        };
        let what = if wins {
            "taking the peer's"
        } else {
            // The peer takes ours by the same rule.
            self.confirm(node);
            "keeping ours"
        };
        Self::table_event(
            node,
            EventKind::Table,
            format!("the tables differ at equal revision {revision}: {what} ({why})"),
        );
        wins
    }
}

impl SyncService {
    /// This node's table is the pair's: remember it (the revision file).
    fn confirm(&self, node: &Node) {
        if !self.revisions.confirmed() {
            self.revisions.confirm();
            revision::save(node);
        }
    }
}

/// `s` in pieces of at most `max` bytes, cut at character boundaries.
fn split(s: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    while rest.len() > max {
        let mut at = max;
        while !rest.is_char_boundary(at) {
            at -= 1;
        }
        let (a, b) = rest.split_at(at);
        out.push(a);
        rest = b;
    }
    out.push(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn parts_join_back_and_never_cut_a_character() {
        let s = "añb".repeat(1000);
        for max in [1, 2, 3, 7, 1000, 5000] {
            let parts = split(&s, max.max(2));
            assert_eq!(parts.concat(), s);
            assert!(parts.iter().all(|p| p.len() <= max.max(2)));
        }
        assert_eq!(split("", 4), vec![""]);
    }
}

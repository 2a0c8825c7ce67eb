//! The pair's table revision: one number for the pair, kept across
//! restarts with the digest of the table it names.
//!
//! - A table change applied here takes the next revision past both
//!   nodes' ([`Revisions::next`]); the peer's table, once applied, brings
//!   its revision ([`Revisions::set`]). Either way the revision file
//!   (`<node>.revision.json` beside the state file) is rewritten with the
//!   running table's [`digest`].
//! - At a start ([`at_start`]) the node takes the file's revision when it
//!   runs the very table the file names (a restart over running maps, or
//!   a configuration file that holds the table it last ran). With any
//!   other table (a fresh start from a configuration file that runtime
//!   swaps have left behind, or an edited one) it starts at 0, and the
//!   pair's table, which a running peer holds, replaces it as soon as the
//!   stream connects. Counting it as a change instead would let a
//!   rebooted node's stale file overwrite the pair's table; an edited
//!   file reaches the pair through `ferry reload`, which is replicated.
//! - Tables changed on both sides of a partition can reach the same
//!   revision. Each side offers its table when the sync stream connects;
//!   at equal revisions with different digests the table of the node
//!   with the lower address on the first path wins (the last tie-break of
//!   the election too), so the pair converges on one table.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use sha2::{Digest as _, Sha256};

use crate::{
    config::{Config, StationEntry, TunnelEntry},
    runtime::node::Node,
    state::{self, RevisionFile},
};

/// The pair's table revisions: this node's, and the peer's as its last
/// heartbeat said.
#[derive(Debug, Clone, Default)]
pub struct Revisions {
    own: Arc<AtomicU64>,
    peer: Arc<AtomicU64>,
}

impl Revisions {
    /// This node's revision.
    pub fn own(&self) -> u64 {
        self.own.load(Ordering::Relaxed)
    }

    /// The peer's, as last heard.
    pub fn peer(&self) -> u64 {
        self.peer.load(Ordering::Relaxed)
    }

    /// The revision for a table change made here: past both nodes'.
    pub fn next(&self) -> u64 {
        let r = self.own().max(self.peer()) + 1;
        self.own.store(r, Ordering::Relaxed);
        r
    }

    /// The table of revision `r` runs here (the peer's, applied, or this
    /// node's at its start).
    pub fn set(&self, r: u64) {
        self.own.store(r, Ordering::Relaxed);
    }

    /// The peer's revision, from its heartbeat.
    pub fn heard(&self, r: u64) {
        self.peer.store(r, Ordering::Relaxed);
    }
}

/// The digest of a table: SHA-256 over its tunnels and static stations
/// in a fixed order (by AP name, by MAC), as hex. Two nodes running the
/// same table have the same digest, however they came to it.
pub fn digest(tunnels: &[TunnelEntry], stations: &[StationEntry]) -> String {
    let mut t: Vec<&TunnelEntry> = tunnels.iter().collect();
    t.sort_by(|a, b| a.ap.cmp(&b.ap));
    let mut s: Vec<&StationEntry> = stations.iter().collect();
    s.sort_by(|a, b| (&a.mac, &a.ap).cmp(&(&b.mac, &b.ap)));
    let mut h = Sha256::new();
    // Plain data with derived serialisation: it cannot fail; an empty
    // text would still give a digest, only a less useful one.
    h.update(serde_json::to_vec(&(t, s)).unwrap_or_default());
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The digest of the table `config` holds.
pub fn digest_of(config: &Config) -> String {
    digest(&config.tunnel_entries(), &config.station_entries())
}

/// This node's revision at a start, running a table of digest `digest`,
/// given the revision file (see the module documentation).
pub fn at_start(file: Option<&RevisionFile>, digest: &str) -> u64 {
    match file {
        None => 0,
        Some(f) if f.digest == digest => f.revision,
        Some(_) => 0,
    }
}

/// Rewrites the revision file for the table that runs now; a failure is
/// logged (the table already runs; the next start counts it as changed).
pub fn save(node: &Node) {
    let Some(ha) = &node.ha else { return };
    let f = RevisionFile {
        revision: ha.revisions.own(),
        digest: digest_of(&node.tables.config),
    };
    if let Err(e) = state::write_revision(&node.state_file, &f) {
        tracing::warn!("saving the table revision: {e:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tunnel(ap: &str, vlan: i64) -> TunnelEntry {
        TunnelEntry {
            ap: ap.into(),
            address: Some("198.18.1.10".into()),
            vlan: Some(vlan),
            ..TunnelEntry::default()
        }
    }

    #[test]
    fn the_digest_names_the_content_not_the_order() {
        let a = [tunnel("ap1", 200), tunnel("ap2", 200)];
        let b = [tunnel("ap2", 200), tunnel("ap1", 200)];
        assert_eq!(digest(&a, &[]), digest(&b, &[]));
        let c = [tunnel("ap1", 200), tunnel("ap2", 201)];
        assert_ne!(digest(&a, &[]), digest(&c, &[]));
        assert_ne!(digest(&a, &[]), digest(&a[..1], &[]));
        assert_eq!(digest(&a, &[]).len(), 32);
    }

    #[test]
    fn a_start_keeps_the_revision_of_the_table_it_names_and_no_other() {
        let d = digest(&[tunnel("ap1", 200)], &[]);
        assert_eq!(at_start(None, &d), 0);
        let f = RevisionFile {
            revision: 7,
            digest: d.clone(),
        };
        assert_eq!(at_start(Some(&f), &d), 7, "the same table");
        let other = digest(&[tunnel("ap1", 201)], &[]);
        assert_eq!(
            at_start(Some(&f), &other),
            0,
            "another table yields to the pair's"
        );
    }

    #[test]
    fn a_change_here_passes_both_nodes_revisions() {
        let r = Revisions::default();
        r.set(3);
        r.heard(9);
        assert_eq!(r.next(), 10);
        assert_eq!((r.own(), r.peer()), (10, 9));
    }
}

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
//! - A node is *confirmed* once its table is the pair's: it started with
//!   the table its file names, it has made or applied a change since, or
//!   the peer's table turned out equal or lost the tie to it. A node that
//!   started with another table is not, and yields; its file is left as
//!   it was until then, so restarting it again does not confirm it.
//! - Each side offers its table (revision, digest, confirmed) when the
//!   sync stream connects. The receiver takes a newer revision; at an
//!   equal revision with a different digest (tables changed on both
//!   sides of a partition, or a node started with another table) an
//!   unconfirmed node takes a confirmed peer's table, and otherwise the
//!   table of the node with the lower address on the first path wins
//!   (the last tie-break of the election too). The pair converges on one
//!   table, and a restarted node's stale file never overwrites it.
//! - A change that leaves the table as it was (a reload of an unchanged
//!   file) takes no revision and is not sent.
//! - The revision file is written before the state file: a crash between
//!   the two leaves a file that names the new table (a restart over the
//!   maps reads the table back from them), not one that disowns it.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use sha2::{Digest as _, Sha256};

use crate::{
    config::{Config, StationEntry, TunnelEntry},
    runtime::node::Node,
    state::{self, RevisionFile},
};

/// The pair's table revisions: this node's, and the peer's as its last
/// heartbeat said; with this node's table digest and whether it is
/// confirmed (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct Revisions {
    own: Arc<AtomicU64>,
    peer: Arc<AtomicU64>,
    confirmed: Arc<AtomicBool>,
    digest: Arc<Mutex<String>>,
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
        self.confirmed.store(true, Ordering::Relaxed);
        r
    }

    /// The peer's table of revision `r` runs here.
    pub fn set(&self, r: u64) {
        self.own.store(r, Ordering::Relaxed);
        self.confirmed.store(true, Ordering::Relaxed);
    }

    /// This node's revision, table digest and standing at its start.
    pub fn start(&self, r: u64, digest: String, confirmed: bool) {
        self.own.store(r, Ordering::Relaxed);
        self.confirmed.store(confirmed, Ordering::Relaxed);
        self.set_digest(digest);
    }

    /// This node's table is the pair's (it won a tie or equals the
    /// peer's).
    pub fn confirm(&self) {
        self.confirmed.store(true, Ordering::Relaxed);
    }

    /// Whether this node's table is the pair's.
    pub fn confirmed(&self) -> bool {
        self.confirmed.load(Ordering::Relaxed)
    }

    /// The digest of the table that runs here.
    pub fn digest(&self) -> String {
        self.digest.lock().map(|d| d.clone()).unwrap_or_default()
    }

    /// A new table runs here.
    pub fn set_digest(&self, d: String) {
        if let Ok(mut g) = self.digest.lock() {
            *g = d;
        }
    }

    /// The peer's revision, from its heartbeat.
    pub fn heard(&self, r: u64) {
        self.peer.store(r, Ordering::Relaxed);
    }
}

/// The digest of a table: SHA-256 over its tunnels and static stations
/// in a fixed order (by AP name, by MAC), as hex. Two nodes running the
/// same table have the same digest, however they came to it.
pub fn digest(tunnels: &[TunnelEntry], stations: &[StationEntry]) -> serde_json::Result<String> {
    let mut t: Vec<&TunnelEntry> = tunnels.iter().collect();
    t.sort_by(|a, b| a.ap.cmp(&b.ap));
    let mut s: Vec<&StationEntry> = stations.iter().collect();
    s.sort_by(|a, b| (&a.mac, &a.ap).cmp(&(&b.mac, &b.ap)));
    let mut h = Sha256::new();
    serde_json::to_writer(&mut h, &(t, s))?;
    Ok(h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The digest of the table `config` holds.
pub fn digest_of(config: &Config) -> serde_json::Result<String> {
    digest(&config.tunnel_entries(), &config.station_entries())
}

/// This node's revision at a start, running a table of digest `digest`,
/// given the revision file, and whether it is confirmed (see the module
/// documentation).
pub fn at_start(file: Option<&RevisionFile>, digest: &str) -> (u64, bool) {
    match file {
        Some(f) if f.digest == digest => (f.revision, true),
        _ => (0, false),
    }
}

/// Writes the revision file for the table that runs now; a failure is
/// logged (the table already runs; a next start that finds the file
/// older yields to the peer's table).
pub fn save(node: &Node) {
    let Some(ha) = &node.ha else { return };
    let f = RevisionFile {
        revision: ha.revisions.own(),
        digest: ha.revisions.digest(),
    };
    if let Err(e) = state::write_revision(&node.state_file, &f) {
        tracing::warn!("saving the table revision: {e:#}");
    }
}

/// A shared-table change was applied on `node`: unless the table is the
/// same as before, it takes the next revision, the revision file is
/// written, and the table goes to the peer.
pub fn replicate(node: &Node) {
    let Some(ha) = &node.ha else { return };
    match digest_of(&node.tables.config) {
        Ok(d) if d == ha.revisions.digest() => return,
        Ok(d) => ha.revisions.set_digest(d),
        // Cannot tell: treat it as a change (sending an equal table
        // costs a swap on the peer, not a divergence).
        Err(e) => tracing::warn!("digest of the new table: {e}"),
    }
    ha.replicate();
    save(node);
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
        let d = |t: &[TunnelEntry]| digest(t, &[]).unwrap();
        assert_eq!(d(&a), d(&b));
        let c = [tunnel("ap1", 200), tunnel("ap2", 201)];
        assert_ne!(d(&a), d(&c));
        assert_ne!(d(&a), d(&a[..1]));
        assert_eq!(d(&a).len(), 32);
    }

    #[test]
    fn a_start_keeps_the_revision_of_the_table_it_names_and_no_other() {
        let d = digest(&[tunnel("ap1", 200)], &[]).unwrap();
        assert_eq!(at_start(None, &d), (0, false));
        let f = RevisionFile {
            revision: 7,
            digest: d.clone(),
        };
        assert_eq!(at_start(Some(&f), &d), (7, true), "the same table");
        let other = digest(&[tunnel("ap1", 201)], &[]).unwrap();
        assert_eq!(
            at_start(Some(&f), &other),
            (0, false),
            "another table yields to the pair's"
        );
    }

    #[test]
    fn a_change_here_passes_both_nodes_revisions() {
        let r = Revisions::default();
        r.start(3, "d".into(), false);
        assert!(!r.confirmed());
        r.heard(9);
        assert_eq!(r.next(), 10);
        assert_eq!((r.own(), r.peer()), (10, 9));
        assert!(r.confirmed(), "a change made here is the pair's table");
    }
}

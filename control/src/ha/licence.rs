//! AP licences across the pair (`ha.licenses`, `ha.license_grace_days`).
//!
//! The pair's pool is both nodes' `licenses`. A tunnel that forwards (an
//! active tunnel of a group mastered by either node) takes one licence;
//! its standby copy on the other node takes none. Because the pair shares
//! one table and every group is mastered by one of the two nodes, the pool
//! covers tunnels in table order, and both nodes compute the same set.
//! A tunnel beyond the pool stays standby on both (counted, logged and
//! shown by [`crate::runtime::licensing`]).
//!
//! The set is computed ahead of any role change, when the pool or the
//! table changes, and written into the tunnel entries (the standby flag),
//! so a group flip stays one map write: it activates exactly the licensed
//! tunnels of the group.
//!
//! After the peer is lost its licences stay in the pool for
//! `license_grace_days`, counted from the last time it was heard as
//! recorded in the [`Ledger`] file (so a restart does not renew the grace).
//! When the grace ends the pool shrinks to the local count: tunnels that
//! forward here keep their licence, and the others are activated only
//! while licences are left.
//!
//! Everything here is pure and runs on the caller's wall clock. The daemon
//! adds `FERRY_LICENCE_CLOCK_OFFSET_S` to it, so a lab test can start a
//! node 31 days in the future.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

/// How often the ledger's "peer heard" time is rewritten while the peer is
/// up: the grace may start up to this much before the peer was really
/// lost, in exchange for one file write an hour rather than one a second.
pub const LEDGER_REFRESH: Duration = Duration::from_secs(3600);

/// What the node remembers of the peer's licences across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// The peer's `licenses`, as its last heartbeat said.
    pub peer_licenses: u32,
    /// When the peer was last recorded as heard (Unix seconds).
    pub peer_heard: u64,
}

/// The pool as of one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    /// This node's `licenses`.
    pub local: u32,
    /// The peer's licences counted in the pool (its heartbeat's while it
    /// is up, the ledger's during the grace, else 0).
    pub peer: u32,
    /// `local + peer`.
    pub total: u32,
    /// Seconds of grace left, while the peer is lost and its licences
    /// still count.
    pub grace_left_s: Option<u64>,
    /// The peer is lost and its grace is over.
    pub grace_expired: bool,
}

/// The licence accounting of one node.
#[derive(Debug)]
pub struct Licences {
    local: u32,
    grace: Duration,
    ledger: Option<Ledger>,
    file: PathBuf,
}

/// Seconds since the Unix epoch (0 before it).
fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Licences {
    /// The accounting of a node with `local` licences and a grace of
    /// `grace_days`, remembering the peer in `file`. A missing file is a
    /// peer never heard; an unreadable one is refused (the caller says
    /// what to do), never silently taken as a fresh grace.
    pub fn load(file: &Path, local: u32, grace_days: u32) -> Result<Self> {
        let ledger = match std::fs::read(file) {
            Ok(b) => Some(
                serde_json::from_slice(&b)
                    .with_context(|| format!("{}: not a licence ledger", file.display()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
        };
        Ok(Self::new(file, local, grace_days, ledger))
    }

    /// The same from a ledger already read (tests).
    pub fn new(file: &Path, local: u32, grace_days: u32, ledger: Option<Ledger>) -> Self {
        Self {
            local,
            grace: Duration::from_secs(u64::from(grace_days) * 86_400),
            ledger,
            file: file.to_path_buf(),
        }
    }

    /// What the ledger says.
    pub fn ledger(&self) -> Option<Ledger> {
        self.ledger
    }

    /// Records the peer heard now with `licenses`; `Some(ledger)` when it
    /// changed enough to be written ([`Self::save`]).
    pub fn heard(&mut self, licenses: u32, now: SystemTime) -> Option<Ledger> {
        let now = unix(now);
        let stale = self.ledger.is_none_or(|l| {
            l.peer_licenses != licenses
                || now.saturating_sub(l.peer_heard) >= LEDGER_REFRESH.as_secs()
        });
        if !stale {
            return None;
        }
        let l = Ledger {
            peer_licenses: licenses,
            peer_heard: now,
        };
        self.ledger = Some(l);
        Some(l)
    }

    /// Records that the peer was lost now: the grace counts from here (a
    /// heartbeat heard within [`LEDGER_REFRESH`] is still the truth).
    pub fn lost(&mut self, now: SystemTime) -> Option<Ledger> {
        let l = self.ledger.as_mut()?;
        l.peer_heard = unix(now);
        Some(*l)
    }

    /// Writes the ledger (atomically: a temporary file renamed).
    pub fn save(&self) -> Result<()> {
        let Some(l) = self.ledger else {
            return Ok(());
        };
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&l)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.file)
            .with_context(|| format!("renaming {} into place", tmp.display()))
    }

    /// The pool at `now`: with the peer up (`peer` is its `licenses`), both
    /// nodes' licences; with it lost, ours plus its remembered ones until
    /// the grace ends.
    pub fn pool(&self, peer: Option<u32>, now: SystemTime) -> Pool {
        let (peer, grace_left_s, grace_expired) = match (peer, self.ledger) {
            (Some(p), _) => (p, None, false),
            (None, None) => (0, None, false),
            (None, Some(l)) => {
                let end = l.peer_heard.saturating_add(self.grace.as_secs());
                let now = unix(now);
                if now < end {
                    (l.peer_licenses, Some(end - now), false)
                } else {
                    (0, None, true)
                }
            }
        };
        Pool {
            local: self.local,
            peer,
            total: self.local.saturating_add(peer),
            grace_left_s,
            grace_expired,
        }
    }
}

/// One tunnel, in table order, as [`admit`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Configured active (a demoted tunnel takes no licence).
    pub wanted: bool,
    /// Licensed now and forwarding here (its group mastered here): it
    /// keeps its licence even if the pool shrank under it.
    pub holding: bool,
}

/// Which tunnels get a licence from a pool of `pool`: every holding one
/// first, then the other wanted ones in table order while licences last.
pub fn admit(tunnels: &[Candidate], pool: u32) -> Vec<bool> {
    let holding = tunnels.iter().filter(|c| c.wanted && c.holding).count();
    let mut left = (pool as usize).saturating_sub(holding);
    tunnels
        .iter()
        .map(|c| {
            if !c.wanted {
                return false;
            }
            if c.holding {
                return true;
            }
            let take = left > 0;
            left = left.saturating_sub(1);
            take
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    fn fresh(local: u32) -> Licences {
        Licences::new(Path::new("/nonexistent/licences"), local, 30, None)
    }

    fn want(n: usize) -> Vec<Candidate> {
        vec![
            Candidate {
                wanted: true,
                holding: false
            };
            n
        ]
    }

    #[test]
    fn the_pool_is_both_nodes_licences_while_the_peer_is_up() {
        let mut l = fresh(2);
        assert!(l.heard(3, at(1000)).is_some());
        let p = l.pool(Some(3), at(1000));
        assert_eq!((p.local, p.peer, p.total), (2, 3, 5));
        assert_eq!(p.grace_left_s, None);
        // Heard again soon with the same count: nothing to write.
        assert_eq!(l.heard(3, at(1060)), None);
        // A new count, or an hour later: written.
        assert!(l.heard(4, at(1061)).is_some());
        assert!(l.heard(4, at(1061 + 3600)).is_some());
    }

    #[test]
    fn a_lost_peers_licences_last_the_grace_then_go() {
        let mut l = fresh(2);
        l.heard(3, at(10 * DAY));
        l.lost(at(10 * DAY + 5));
        let p = l.pool(None, at(39 * DAY));
        assert_eq!(p.total, 5);
        assert_eq!(p.grace_left_s, Some(DAY + 5));
        assert!(!p.grace_expired);
        let p = l.pool(None, at(40 * DAY + 5));
        assert_eq!((p.peer, p.total), (0, 2));
        assert!(p.grace_expired);
        // The peer back: its licences count again at once.
        assert_eq!(l.pool(Some(3), at(41 * DAY)).total, 5);
    }

    #[test]
    fn a_peer_never_heard_adds_nothing_and_starts_no_grace() {
        let l = fresh(2);
        let p = l.pool(None, at(DAY));
        assert_eq!((p.total, p.grace_left_s, p.grace_expired), (2, None, false));
    }

    #[test]
    fn the_ledger_survives_a_restart_and_the_grace_is_not_renewed() {
        let dir = std::env::temp_dir().join(format!("ferry-ledger-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("licences.json");
        let mut l = Licences::load(&file, 1, 30).unwrap();
        l.heard(1, at(100 * DAY));
        l.save().unwrap();
        // Restarted 29 days later without the peer: one day of grace left.
        let l = Licences::load(&file, 1, 30).unwrap();
        assert_eq!(l.pool(None, at(129 * DAY)).grace_left_s, Some(DAY));
        // 31 days later: over.
        assert!(l.pool(None, at(131 * DAY)).grace_expired);
        std::fs::write(&file, b"{nonsense").unwrap();
        let e = Licences::load(&file, 1, 30).unwrap_err();
        assert!(format!("{e:#}").contains("not a licence ledger"), "{e:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tunnels_beyond_the_pool_are_not_admitted_in_table_order() {
        assert_eq!(admit(&want(4), 2), [true, true, false, false]);
        assert_eq!(admit(&want(2), 5), [true, true]);
        assert_eq!(admit(&want(2), 0), [false, false]);
    }

    #[test]
    fn a_demoted_tunnel_takes_no_licence() {
        let mut c = want(3);
        c[0].wanted = false;
        assert_eq!(admit(&c, 2), [false, true, true]);
    }

    #[test]
    fn forwarding_tunnels_keep_their_licence_when_the_pool_shrinks() {
        // Three forwarding here on a pool that fell to 1 (grace over):
        // they stay, and the fourth is not activated.
        let mut c = want(4);
        for x in &mut c[..3] {
            x.holding = true;
        }
        assert_eq!(admit(&c, 1), [true, true, true, false]);
        // Holding ones come first even when later in the table.
        let mut c = want(3);
        c[2].holding = true;
        assert_eq!(admit(&c, 2), [true, false, true]);
    }
}

//! The node's side of AP licences (see [`crate::ha::licence`] for the
//! rules): once a second the event loop notes whether the peer is heard
//! and with how many licences, keeps the ledger file, works out the pool,
//! and re-admits the live table when the pool or the groups mastered here
//! changed. Every change is logged and goes to `ferry cluster history`.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::Result;
use tracing::{info, warn};

use super::{Refused, node::Node};
use crate::{
    config::{HaConfig, TunnelState},
    ha::{
        election::Role,
        licence::{Licences, Pool},
        view::{ClusterStatus, Event, EventKind, LicenceStatus},
    },
    tables::licensing::Admission,
};

/// Moves the licence clock (seconds, may be negative) for lab tests of
/// the grace: a node started with 31 days here sees a month-old ledger.
pub const CLOCK_OFFSET_ENV: &str = "FERRY_LICENCE_CLOCK_OFFSET_S";

/// The licence ledger of node `node` in `state_dir`.
pub fn ledger_path(state_dir: &Path, node: &str) -> PathBuf {
    state_dir.join(format!("{node}.licences.json"))
}

/// Licence accounting as the event loop keeps it.
#[derive(Debug)]
pub struct Licensing {
    licences: Licences,
    /// Added to the wall clock ([`CLOCK_OFFSET_ENV`]).
    offset_s: i64,
    /// Whether the peer was up at the last tick.
    peer_up: bool,
    /// The pool at the last tick.
    pool: Pool,
    /// Times a tunnel was refused a licence since start.
    refused_total: u64,
    /// The tunnels held standby for lack of a licence at the last tick.
    unlicensed: BTreeSet<String>,
}

impl Licensing {
    /// Reads the ledger (refusing a start over an unreadable one: it holds
    /// the grace, which a fresh file would silently end or renew).
    pub fn load(state_dir: &Path, node: &str, ha: &HaConfig) -> Result<Self> {
        let file = ledger_path(state_dir, node);
        let licences = Licences::load(&file, ha.licenses, ha.license_grace_days).map_err(|e| {
            Refused(format!(
                "{e:#} (it records the HA peer's licences and when it was last heard; \
                 remove it to start with this node's licences only)"
            ))
        })?;
        let offset_s = match std::env::var(CLOCK_OFFSET_ENV) {
            Ok(v) => v
                .parse()
                .map_err(|_| Refused(format!("{CLOCK_OFFSET_ENV}={v:?}: not whole seconds")))?,
            Err(_) => 0,
        };
        let mut l = Self {
            licences,
            offset_s,
            peer_up: false,
            pool: Pool {
                local: ha.licenses,
                peer: 0,
                total: ha.licenses,
                grace_left_s: None,
                grace_expired: false,
            },
            refused_total: 0,
            unlicensed: BTreeSet::new(),
        };
        l.pool = l.licences.pool(None, l.now());
        Ok(l)
    }

    /// The licence clock.
    fn now(&self) -> SystemTime {
        let d = Duration::from_secs(self.offset_s.unsigned_abs());
        if self.offset_s >= 0 {
            SystemTime::now() + d
        } else {
            SystemTime::now() - d
        }
    }

    /// What the first table is installed under: the pool without the
    /// peer (its ledger's licences while in grace), no group mastered.
    pub fn initial(&self) -> Admission {
        Admission {
            pool: self.pool.total,
            mastered: BTreeSet::new(),
        }
    }

    /// Notes the peer as the HA thread last saw it; the pool now.
    fn observe(&mut self, st: &ClusterStatus) -> Pool {
        let now = self.now();
        let up = st.peer.state == "up";
        let written = match (up, st.peer.licenses) {
            (true, Some(n)) => self.licences.heard(n, now),
            (false, _) if self.peer_up => self.licences.lost(now),
            _ => None,
        };
        if written.is_some()
            && let Err(e) = self.licences.save()
        {
            warn!("saving the licence ledger: {e:#}");
        }
        self.peer_up = up;
        self.licences.pool(st.peer.licenses.filter(|_| up), now)
    }
}

/// How a pool reads in the log and the history.
fn describe(p: &Pool) -> String {
    let grace = match (p.grace_left_s, p.grace_expired) {
        (Some(s), _) => format!(
            ", the lost peer's in grace for {} more days",
            s.div_ceil(86_400)
        ),
        (None, true) => ", the lost peer's grace is over".to_string(),
        (None, false) => String::new(),
    };
    format!(
        "pool {} ({} here + {} the peer's{grace})",
        p.total, p.local, p.peer
    )
}

impl Node {
    /// Once a second with `[ha]`: the pool, then re-admission of the live
    /// table if the pool or the mastered groups changed.
    pub fn relicense(&mut self) {
        let (Some(ha), Some(lic)) = (&self.ha, &mut self.licensing) else {
            return;
        };
        let st = ha.status();
        let pool = lic.observe(&st);
        let changed = (pool.total, pool.grace_expired) != (lic.pool.total, lic.pool.grace_expired);
        lic.pool = pool;
        if changed {
            let d = describe(&pool);
            info!(pool = pool.total, "licences: {d}");
            ha.record(Event::now(EventKind::Licence, d));
        }
        let mastered = st
            .groups
            .iter()
            .filter(|g| g.role == Role::Master)
            .map(|g| g.index)
            .collect();
        let a = Admission {
            pool: pool.total,
            mastered,
        };
        let readmitted = match self.tables.readmit(&mut self.dp, a) {
            Ok(changed) => changed,
            Err(e) => {
                warn!("licences: re-admitting the table (retried next second): {e:#}");
                false
            }
        };
        // Compared with the last tick rather than taken from the
        // re-admission: a swap or `tunnel add` beyond the pool is admitted
        // as it is built, and is counted and logged here all the same.
        let now: BTreeSet<String> = self.tables.unlicensed().into_iter().collect();
        let held: Vec<&str> = now
            .difference(&lic.unlicensed)
            .map(String::as_str)
            .collect();
        let freed: Vec<&str> = lic
            .unlicensed
            .difference(&now)
            .map(String::as_str)
            .collect();
        let mut say = Vec::new();
        if !held.is_empty() {
            lic.refused_total += held.len() as u64;
            warn!(tunnels = ?held, pool = pool.total, "licences: tunnels beyond the pool held in standby");
            say.push(format!(
                "standby for lack of a licence: {}",
                held.join(", ")
            ));
        }
        if !freed.is_empty() {
            info!(tunnels = ?freed, pool = pool.total, "licences: tunnels licensed (or gone)");
            say.push(format!("licensed or removed: {}", freed.join(", ")));
        }
        if !say.is_empty() {
            ha.record(Event::now(EventKind::Licence, say.join("; ")));
        }
        lic.unlicensed = now;
        if readmitted {
            self.save_state();
        }
    }

    /// `ferry cluster status`: the HA thread's view with the licences.
    pub fn cluster_status(&self) -> Result<ClusterStatus> {
        let mut st = self.ha()?.status();
        st.licences = self.licence_status(&st);
        Ok(st)
    }

    /// The licence part of `ferry cluster status`.
    fn licence_status(&self, st: &ClusterStatus) -> Option<LicenceStatus> {
        let lic = self.licensing.as_ref()?;
        let unlicensed = self.tables.unlicensed();
        let mastered: BTreeSet<u16> = st
            .groups
            .iter()
            .filter(|g| g.role == Role::Master)
            .map(|g| g.index)
            .collect();
        let config = &self.tables.config;
        let held: BTreeSet<&str> = unlicensed.iter().map(String::as_str).collect();
        let licensed = config
            .tunnels
            .iter()
            .filter(|t| t.state == TunnelState::Active && !held.contains(t.ap.as_str()));
        let used_here = licensed
            .clone()
            .filter(|t| mastered.contains(&config.group_index(t)))
            .count();
        Some(LicenceStatus {
            used: licensed.count() as u64,
            used_here: used_here as u64,
            local: lic.pool.local,
            peer: lic.pool.peer,
            pool: lic.pool.total,
            grace_left_s: lic.pool.grace_left_s,
            grace_expired: lic.pool.grace_expired,
            unlicensed,
            refused_total: lic.refused_total,
        })
    }
}

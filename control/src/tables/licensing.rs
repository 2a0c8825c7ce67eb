//! Licence admission in the tables (HA, see [`crate::ha::licence`]): a
//! tunnel the pair's pool does not cover is installed as standby, in
//! every table built (swap, edit, rollback, binding), and the pool
//! changing re-admits the live table in place, entry by entry.
//!
//! Admission is applied to a copy of the configuration that is lowered,
//! never to the configuration itself: `ferry tunnels` and the state file
//! keep the tunnel `active` as configured, and the tunnel is listed among
//! the unlicensed ones instead.

use std::collections::BTreeSet;

use anyhow::Result;
use ferry_ebpf::abi;

use super::{TableMaps, TableState, change::edit_entries};
use crate::{
    config::{Config, TunnelState},
    ha::licence::{Candidate, admit},
};

/// What admission needs to know: the pool and the groups mastered here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// Licences in the pair's pool.
    pub pool: u32,
    /// Data plane indexes of the groups this node masters now.
    pub mastered: BTreeSet<u16>,
}

impl Default for Admission {
    /// No limit: a node without `[ha]` admits every tunnel.
    fn default() -> Self {
        Self {
            pool: u32::MAX,
            mastered: BTreeSet::new(),
        }
    }
}

impl<M: TableMaps> TableState<M> {
    /// `config` with every tunnel the pool does not cover set to standby,
    /// or `None` when it covers them all.
    pub(super) fn admitted(&self, config: &Config) -> Option<Config> {
        let a = &self.admission;
        if a.pool as usize >= config.tunnels.len() {
            return None;
        }
        let forwarding = self.forwarding_ids();
        let candidates: Vec<Candidate> = config
            .tunnels
            .iter()
            .map(|t| {
                let wanted = t.state == TunnelState::Active;
                // Ids are never reused while a kept generation names them,
                // so a live id is this AP's live tunnel.
                let licensed_now = self
                    .ids
                    .get(&t.ap)
                    .is_some_and(|id| forwarding.contains(&id));
                Candidate {
                    wanted,
                    holding: wanted && licensed_now && a.mastered.contains(&config.group_index(t)),
                }
            })
            .collect();
        let admitted = admit(&candidates, a.pool);
        let mut c = config.clone();
        for (t, ok) in c.tunnels.iter_mut().zip(admitted) {
            if !ok {
                t.state = TunnelState::Standby;
            }
        }
        Some(c)
    }

    /// Whether configured-active tunnel `ap` is outside the licence pool
    /// (free when the pool covers every tunnel, the usual case, so a
    /// binding keeps its constant cost).
    pub(super) fn unadmitted(&self, ap: &str) -> bool {
        self.admitted(&self.config).is_some_and(|c| {
            c.tunnels.iter().zip(&self.config.tunnels).any(|(a, t)| {
                t.ap == ap && t.state == TunnelState::Active && a.state == TunnelState::Standby
            })
        })
    }

    /// Ids of the live tunnels not in standby.
    fn forwarding_ids(&self) -> BTreeSet<u32> {
        self.tables
            .tunnels
            .iter()
            .filter(|t| t.info.flags & abi::TUNNEL_STANDBY == 0)
            .map(|t| t.info.id)
            .collect()
    }

    /// Configured-active tunnels held standby for lack of a licence, in
    /// table order (read from the live tables, not recomputed).
    pub fn unlicensed(&self) -> Vec<String> {
        let forwarding = self.forwarding_ids();
        let installed: BTreeSet<u32> = self.tables.tunnels.iter().map(|t| t.info.id).collect();
        self.config
            .tunnels
            .iter()
            .filter(|t| t.state == TunnelState::Active)
            .filter(|t| {
                self.ids
                    .get(&t.ap)
                    .is_some_and(|id| installed.contains(&id) && !forwarding.contains(&id))
            })
            .map(|t| t.ap.clone())
            .collect()
    }

    /// The admission rules in force.
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// Sets the admission rules for the tables built from now on, without
    /// touching the live ones (startup, before the first install).
    pub fn set_admission(&mut self, a: Admission) {
        self.admission = a;
    }

    /// Applies new admission rules to the live table, rewriting only the
    /// entries whose standby flag changes (each write atomic on its own;
    /// the tables' generation stays: this is not a table change); whether
    /// any entry changed.
    pub fn readmit(&mut self, maps: &mut M, a: Admission) -> Result<bool> {
        if a == self.admission {
            return Ok(false);
        }
        let old_admission = std::mem::replace(&mut self.admission, a);
        let tables = self.build_tables(&self.config);
        if tables.tunnels == self.tables.tunnels {
            return Ok(false);
        }
        let r = (|| -> Result<()> {
            let mut live = maps.live()?;
            edit_entries(maps, &mut live, &self.tables.tunnels, &tables.tunnels)?;
            Ok(maps.bump()?)
        })();
        if let Err(e) = r {
            // Entries written before the failure are read back by the next
            // attempt: the old rules stay in force, so the next tick
            // retries the whole re-admission.
            self.admission = old_admission;
            return Err(e);
        }
        self.tables = tables;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use ferry_ebpf::abi::Reason;

    use super::{super::tests::*, *};
    use crate::{
        api::views::ChangeKind,
        tables::{ModelMaps, lower},
    };

    fn pool(pool: u32, mastered: &[u16]) -> Admission {
        Admission {
            pool,
            mastered: mastered.iter().copied().collect(),
        }
    }

    #[test]
    fn tunnels_beyond_the_pool_are_installed_standby_and_readmitted_in_place() {
        let c = config(&[("ap1", 10), ("ap2", 11), ("ap3", 12)]);
        let mut m = ModelMaps::new(&lower::by_position(&c)).unwrap();
        let mut s = TableState::install_with(&mut m, c, 0, pool(2, &[])).unwrap();
        assert_eq!(s.unlicensed(), ["ap3"]);
        learn(&mut m, 10, 1);
        assert_eq!(m.model.upstream(&up(12, 2)).reason, Reason::DropStandby);
        // The configuration keeps the tunnel active: admission is not a
        // change of the table.
        assert!(
            s.config
                .tunnels
                .iter()
                .all(|t| t.state == TunnelState::Active)
        );
        let generation = s.generation;
        assert!(s.readmit(&mut m, pool(3, &[])).unwrap());
        assert!(s.unlicensed().is_empty());
        assert_eq!(s.generation, generation);
        assert_eq!(m.model.upstream(&up(12, 2)).reason, Reason::Forwarded);
        // The same rules again: nothing to do.
        assert!(!s.readmit(&mut m, pool(3, &[])).unwrap());
        // The station learned before stays: entries were edited in place.
        assert_eq!(down(&m, 1), Ok([198, 18, 1, 10]));
    }

    #[test]
    fn forwarding_tunnels_keep_their_licence_when_the_pool_shrinks() {
        let (mut m, mut s) = start(&[("ap1", 10), ("ap2", 11), ("ap3", 12)]);
        // Group 0 (no HA group) stands for a group mastered here.
        let changed = s.readmit(&mut m, pool(1, &[0])).unwrap();
        assert!(!changed, "all three forward here: they stay");
        assert!(s.unlicensed().is_empty());
        // Not mastered here: only the first is admitted.
        assert!(s.readmit(&mut m, pool(1, &[])).unwrap());
        assert_eq!(s.unlicensed(), ["ap2", "ap3"]);
        assert_eq!(m.model.upstream(&up(11, 2)).reason, Reason::DropStandby);
        assert_eq!(m.model.upstream(&up(10, 2)).reason, Reason::Forwarded);
    }

    #[test]
    fn swaps_and_rollbacks_are_admitted_too() {
        let c = config(&[("ap1", 10)]);
        let mut m = ModelMaps::new(&lower::by_position(&c)).unwrap();
        let mut s = TableState::install_with(&mut m, c, 0, pool(1, &[])).unwrap();
        let next = table(&s.config, &[("ap0", 9), ("ap1", 10)]);
        s.swap(&mut m, next, ChangeKind::Swap).unwrap();
        // Table order decides: ap0 comes first now.
        assert_eq!(s.unlicensed(), ["ap1"]);
        assert_eq!(m.model.upstream(&up(10, 2)).reason, Reason::DropStandby);
        s.rollback(&mut m).unwrap();
        assert!(s.unlicensed().is_empty());
        assert_eq!(m.model.upstream(&up(10, 2)).reason, Reason::Forwarded);
    }

    #[test]
    fn a_session_tunnel_beyond_the_pool_is_bound_standby() {
        let c = Config::parse(
            std::path::Path::new("t.toml"),
            &format!(
                "{CONFIG}{}[[tunnel]]\nap = \"nat\"\nsession_id = \"00112233445566778899aabbccddeeff\"\n",
                tunnel("ap1", 10)
            ),
        )
        .unwrap();
        let mut m = ModelMaps::new(&lower::by_position(&c)).unwrap();
        let mut s = TableState::install_with(&mut m, c, 0, pool(1, &[])).unwrap();
        let peer: std::net::SocketAddr = "198.18.1.20:5000".parse().unwrap();
        s.bind(&mut m, "nat", peer).unwrap();
        assert_eq!(s.unlicensed(), ["nat"]);
        assert_eq!(m.model.upstream(&up(20, 3)).reason, Reason::DropStandby);
        assert!(s.readmit(&mut m, pool(2, &[])).unwrap());
        assert!(s.unlicensed().is_empty());
        assert_eq!(m.model.upstream(&up(20, 3)).reason, Reason::Forwarded);
    }
}

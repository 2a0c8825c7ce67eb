//! What a change would do, before it is done: the APs a swap or a rollback
//! adds, removes and changes, and the stations it would flush. `--dry-run`
//! answers with it, the mass-removal guard decides on it, and every change
//! lists the same APs afterwards.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, bail};

use super::{TableMaps, TableState};
use crate::{
    api::views::{ChangeKind, Plan},
    config::{Config, TunnelConfig},
};

impl<M: TableMaps> TableState<M> {
    /// What replacing the live configuration with `next` would do.
    pub fn plan(&self, maps: &mut M, next: &Config, kind: ChangeKind) -> Result<Plan> {
        let now: BTreeMap<&str, &TunnelConfig> = by_name(&self.config);
        let then: BTreeMap<&str, &TunnelConfig> = by_name(next);
        let names = |m: &BTreeMap<&str, &TunnelConfig>, o: &BTreeMap<&str, &TunnelConfig>| {
            m.keys()
                .filter(|k| !o.contains_key(*k))
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
        };
        let changed = now
            .iter()
            .filter(|(k, t)| then.get(*k).is_some_and(|n| n != *t))
            .map(|(k, _)| k.to_string())
            .collect();
        // The flush after the flip takes the stations of tunnels that go or
        // change VLAN; they are counted now, in the live table.
        let stale: BTreeSet<u32> = now
            .iter()
            .filter(|(k, t)| then.get(*k).is_none_or(|n| n.vlan != t.vlan))
            .filter_map(|(k, _)| self.ids.get(k))
            .collect();
        let stations_to_flush = if stale.is_empty() {
            0
        } else {
            maps.count_stations(&mut |_, v| stale.contains(&v.tunnel))?
        };
        Ok(Plan {
            kind,
            generation: self.generation,
            to_generation: None,
            tunnels: next.tunnels.len(),
            added: names(&then, &now),
            removed: names(&now, &then),
            changed,
            stations_to_flush,
        })
    }

    /// What `rollback` would do: the APs it would undo and restore.
    pub fn plan_rollback(&self, maps: &mut M) -> Result<Plan> {
        let Some(prev) = &self.prev else {
            bail!("no previous generation to roll back to");
        };
        let mut p = self.plan(maps, &prev.config, ChangeKind::Rollback)?;
        p.to_generation = Some(prev.generation);
        Ok(p)
    }
}

fn by_name(c: &Config) -> BTreeMap<&str, &TunnelConfig> {
    c.tunnels.iter().map(|t| (t.ap.as_str(), t)).collect()
}

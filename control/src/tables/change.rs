//! The changes themselves: swap, rollback, edit, and what every one
//! of them does around the flip (client VLANs widened first, static
//! stations and the station flush after).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use ferry_dataplane::{
    datapath::table_entries,
    tables::{Tables, Tunnel},
};
use ferry_ebpf::abi::{self, StationKey, TunnelDown};

use super::{Previous, TableMaps, TableState, learned_port_of};
use crate::{
    api::views::{Change, ChangeKind},
    config::Config,
};

impl<M: TableMaps> TableState<M> {
    /// Replaces the whole table with `next` (validated already).
    pub fn swap(&mut self, maps: &mut M, next: Config, kind: ChangeKind) -> Result<Change> {
        refuse_restart_fields(&self.config, &next)?;
        self.swap_to(maps, next, kind)
    }

    /// Adds the validation time of the request that led to the last change.
    pub fn add_validation(&mut self, c: &mut Change, took: Duration) {
        c.validate_us = micros(took);
        c.total_us += c.validate_us;
        self.last = Some(c.clone());
        self.last_swap = Some(c.clone());
    }

    /// Builds `next` aside, flips it in and cleans up after it; the table
    /// that was live becomes the rollback target.
    pub(super) fn swap_to(
        &mut self,
        maps: &mut M,
        next: Config,
        kind: ChangeKind,
    ) -> Result<Change> {
        let t0 = Instant::now();
        self.assign_ids(maps, &next)?;
        let mut tables = self.build_tables(&next);
        Self::carry_learned_ports(maps, &mut tables)?;
        let built = maps.build(&tables.tunnels)?;
        let t_built = Instant::now();
        let old_live = maps.live()?;
        self.flip(maps, &tables, &built)?;
        let t_flipped = Instant::now();
        let (flushed, flush) = self.after_flip(maps, &tables)?;
        let before = self.current(old_live);
        let change = self.commit(
            next,
            tables,
            kind,
            None,
            [t0, t_built, t_flipped],
            flushed,
            flush,
        );
        self.prev = Some(before);
        self.forget_unreferenced_ids();
        Ok(change)
    }

    /// The live generation as a rollback target.
    fn current(&self, table: M::Table) -> Previous<M::Table> {
        Previous {
            config: self.config.clone(),
            bound: self.bound.clone(),
            generation: self.generation,
            table,
            tables: self.tables.clone(),
        }
    }

    /// Flips back to the previous generation; the current one becomes the
    /// rollback target in turn.
    pub fn rollback(&mut self, maps: &mut M) -> Result<Change> {
        let t0 = Instant::now();
        let Some(mut target) = self.prev.take() else {
            bail!("no previous generation to roll back to");
        };
        // Bindings made since stay (the AP sends from there now): the kept
        // maps still hold the old ones, so they are rebuilt with today's
        // bindings before the flip, as are the ports learned since.
        let mut bound = target.bound.clone();
        bound.extend(self.bound.clone());
        let mut tables = self.build_tables_with(&target.config, &bound);
        let refreshed = (|| -> Result<()> {
            Self::carry_learned_ports(maps, &mut tables)?;
            edit_entries(
                maps,
                &mut target.table,
                &target.tables.tunnels,
                &tables.tunnels,
            )?;
            for t in &tables.tunnels {
                maps.set_down(&mut target.table, t.info.id, t.down_entry())?;
            }
            Ok(())
        })();
        let old_live = match refreshed.and_then(|()| Ok(maps.live()?)) {
            Ok(l) => l,
            Err(e) => {
                // Nothing flipped: the target stays the target.
                self.prev = Some(target);
                return Err(e);
            }
        };
        let current = self.current(old_live);
        let t_built = Instant::now();
        if let Err(e) = self.flip(maps, &tables, &target.table) {
            self.prev = Some(target);
            return Err(e);
        }
        let t_flipped = Instant::now();
        // From here the previous generation is live: it stops being the
        // rollback target whatever happens next.
        let (flushed, flush) = self.after_flip(maps, &tables)?;
        self.bound = bound;
        let times = [t0, t_built, t_flipped];
        let mut change = self.commit(
            target.config,
            tables,
            ChangeKind::Rollback,
            None,
            times,
            flushed,
            flush,
        );
        // A rollback returns to the old generation number.
        self.generation = target.generation;
        change.new_generation = target.generation;
        self.last = Some(change.clone());
        self.last_swap = Some(change.clone());
        self.prev = Some(current);
        self.forget_unreferenced_ids();
        Ok(change)
    }

    /// Client VLANs widened before the flip (so no frame of a new tunnel's
    /// VLAN is passed while the flip happens), then the tables flipped.
    fn flip(&self, maps: &mut M, tables: &Tables, t: &M::Table) -> Result<()> {
        self.widen_vlans(maps, tables)?;
        Ok(maps.flip(t)?)
    }

    /// Serves the union of the live and the next client VLANs, so neither
    /// table's frames are passed while the change happens.
    fn widen_vlans(&self, maps: &mut M, tables: &Tables) -> Result<()> {
        let mut union = self.tables.client_vlans.clone();
        for v in &tables.client_vlans {
            if !union.contains(v) {
                union.push(*v);
            }
        }
        Ok(maps.set_client_vlans(&union)?)
    }

    /// Tunnel id to client VLAN for every tunnel of `tables`, and for the
    /// session tunnels not bound yet (no entry, but their stations stay).
    pub(super) fn vlan_of(&self, tables: &Tables) -> BTreeMap<u32, u16> {
        let unbound = self
            .config
            .tunnels
            .iter()
            .filter(|t| t.address.is_none() && !self.bound.contains_key(&t.ap))
            .filter_map(|t| self.ids.get(&t.ap).map(|id| (id, t.vlan)));
        tables
            .tunnels
            .iter()
            .map(|t| (t.info.id, t.info.vlan))
            .chain(unbound)
            .collect()
    }

    /// After a flip: exact client VLANs, static stations, and the flush of
    /// stations whose tunnel is gone or changed VLAN.
    fn after_flip(&self, maps: &mut M, tables: &Tables) -> Result<(u64, Duration)> {
        maps.set_client_vlans(&tables.client_vlans)?;
        let vlan_of = self.vlan_of(tables);
        let stale_ids: Vec<u32> = self
            .tables
            .tunnels
            .iter()
            .filter(|t| vlan_of.get(&t.info.id) != Some(&t.info.vlan))
            .map(|t| t.info.id)
            .collect();
        let new_statics: BTreeSet<StationKey> = tables.stations.iter().map(|s| s.key).collect();
        let gone: Vec<StationKey> = self
            .tables
            .stations
            .iter()
            .map(|s| s.key)
            .filter(|k| !new_statics.contains(k))
            .collect();
        maps.put_static_stations(&tables.stations, &gone)?;
        let t = Instant::now();
        let mut flushed = 0;
        if !stale_ids.is_empty() {
            flushed = maps.flush_stations(&mut |k, v| vlan_of.get(&v.tunnel) == Some(&k.vlan))?;
            let removed: Vec<u32> = stale_ids
                .iter()
                .copied()
                .filter(|id| !vlan_of.contains_key(id))
                .collect();
            maps.reset_station_counts(&removed)?;
        }
        Ok((flushed, t.elapsed()))
    }

    /// Gives every AP of `config` an id no kept generation uses, and zeroes
    /// the per-tunnel slots (statistics, station count) of ids given out
    /// now, before anything can forward under them.
    pub(super) fn assign_ids(&mut self, maps: &mut M, config: &Config) -> Result<()> {
        let kept = self
            .prev
            .iter()
            .flat_map(|p| p.tables.tunnels.iter().map(|t| t.info.id));
        let given = self
            .ids
            .assign(config.tunnels.iter().map(|t| t.ap.as_str()), kept);
        if !given.is_empty() {
            maps.reset_tunnel_slots(&given)?;
        }
        Ok(())
    }

    /// Forgets the ids of APs that neither the live generation nor the
    /// rollback target has. An id stays taken while any kept generation
    /// names it: an edit leaves the rollback target as it was, so after
    /// `swap B; rollback; tunnel add; rollback` B's APs are live again
    /// under their old ids, and a later swap must not hand those ids to
    /// other APs (their stations would follow).
    pub(super) fn forget_unreferenced_ids(&mut self) {
        let keep: BTreeSet<&str> = self
            .config
            .tunnels
            .iter()
            .chain(self.prev.iter().flat_map(|p| p.config.tunnels.iter()))
            .map(|t| t.ap.as_str())
            .collect();
        self.ids.retain(|k| keep.contains(k));
    }

    #[allow(clippy::too_many_arguments)]
    fn commit(
        &mut self,
        next: Config,
        tables: Tables,
        kind: ChangeKind,
        ap: Option<String>,
        [t0, t_built, t_flipped]: [Instant; 3],
        flushed: u64,
        flush: Duration,
    ) -> Change {
        let old_names: BTreeSet<&str> = self.config.tunnels.iter().map(|t| t.ap.as_str()).collect();
        let new_names: BTreeSet<&str> = next.tunnels.iter().map(|t| t.ap.as_str()).collect();
        let change = Change {
            kind,
            ap,
            old_generation: self.generation,
            new_generation: self.last_generation + 1,
            tunnels: next.tunnels.len(),
            added: new_names.difference(&old_names).count(),
            removed: old_names.difference(&new_names).count(),
            validate_us: 0,
            build_us: micros(t_built - t0),
            flip_us: micros(t_flipped - t_built),
            total_us: micros(t_flipped - t0),
            stations_flushed: flushed,
            flush_us: micros(flush),
            added_aps: new_names
                .difference(&old_names)
                .map(|s| s.to_string())
                .collect(),
            removed_aps: old_names
                .difference(&new_names)
                .map(|s| s.to_string())
                .collect(),
        };
        self.last_generation += 1;
        self.generation = self.last_generation;
        self.bound.retain(|k, _| new_names.contains(k.as_str()));
        self.config = next;
        self.tables = tables;
        self.bind_index = None;
        self.flushed_total += flushed;
        self.last = Some(change.clone());
        if kind.is_whole_table() {
            self.swaps += 1;
            self.last_swap = Some(change.clone());
        }
        change
    }

    /// Changes single tunnels in place (add, remove, promote, demote):
    /// each entry is updated on its own, which is atomic per entry; the
    /// rollback target stays what it was.
    pub fn edit(
        &mut self,
        maps: &mut M,
        next: Config,
        kind: ChangeKind,
        ap: &str,
    ) -> Result<Change> {
        let t0 = Instant::now();
        self.assign_ids(maps, &next)?;
        let tables = self.build_tables(&next);
        let t_built = Instant::now();
        self.widen_vlans(maps, &tables)?;
        let mut live = maps.live()?;
        edit_entries(maps, &mut live, &self.tables.tunnels, &tables.tunnels)?;
        maps.bump()?;
        let t_flipped = Instant::now();
        let (flushed, flush) = self.after_flip(maps, &tables)?;
        let times = [t0, t_built, t_flipped];
        let change = self.commit(
            next,
            tables,
            kind,
            Some(ap.to_string()),
            times,
            flushed,
            flush,
        );
        self.forget_unreferenced_ids();
        Ok(change)
    }
}

/// Edits tunnel table `live` in place from `old` to `new`, entry by entry
/// (each update atomic on its own): downstream entries are written before
/// the upstream keys that lead to them, and cleared after the keys are gone.
/// A learned port stays: it is live state, not configuration.
pub(super) fn edit_entries<M: TableMaps>(
    maps: &mut M,
    live: &mut M::Table,
    old: &[Tunnel],
    new: &[Tunnel],
) -> Result<()> {
    let before: BTreeMap<_, _> = table_entries(old)?.into_iter().collect();
    let after: BTreeMap<_, _> = table_entries(new)?.into_iter().collect();
    let old_down: BTreeMap<u32, TunnelDown> =
        old.iter().map(|t| (t.info.id, t.down_entry())).collect();
    let new_ids: BTreeSet<u32> = new.iter().map(|t| t.info.id).collect();
    for t in new {
        let mut want = t.down_entry();
        let same = old_down.get(&t.info.id).is_some_and(|d| {
            TunnelDown {
                port: want.port,
                ..*d
            } == want
        });
        if same {
            continue;
        }
        // Only the changed entries are read back: promote/demote at 25,600
        // tunnels took 24 ms reading each, 42 ms reading all in one batch
        // (`ferry-bench control`, side by side).
        if want.flags & abi::DOWN_FIXED_PORT == 0
            && let Some(p) = learned_port_of(&maps.down(live, t.info.id)?, &want)
        {
            want.port = p;
        }
        maps.set_down(live, t.info.id, want)?;
    }
    for (k, v) in &after {
        if before.get(k) != Some(v) {
            maps.set_up(live, *k, *v)?;
        }
    }
    for k in before.keys().filter(|k| !after.contains_key(k)) {
        maps.remove_up(live, k)?;
    }
    for id in old_down.keys().filter(|id| !new_ids.contains(id)) {
        maps.set_down(live, *id, TunnelDown::default())?;
    }
    Ok(())
}

/// Parts of the configuration a swap cannot change.
fn refuse_restart_fields(cur: &Config, next: &Config) -> Result<()> {
    for (what, same) in [
        ("node.name", cur.name == next.name),
        ("interfaces.ap_side", cur.ap_side == next.ap_side),
        (
            "interfaces.client_side",
            cur.client_side == next.client_side,
        ),
        (
            "forwarding.station_capacity",
            cur.station_capacity == next.station_capacity,
        ),
        ("admin.socket", cur.admin_socket == next.admin_socket),
        ("metrics.listen", cur.metrics == next.metrics),
        ("node.addresses", cur.addresses == next.addresses),
        ("node.data_port", cur.data_port == next.data_port),
        (
            "downstream settings",
            cur.dscp == next.dscp && cur.df == next.df,
        ),
        ("[ha] or [[group]]", cur.ha == next.ha),
    ] {
        if !same {
            bail!(
                "{what} changed: that needs a restart of ferry run, not a swap (nothing was changed)"
            );
        }
    }
    Ok(())
}

pub(super) fn micros(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

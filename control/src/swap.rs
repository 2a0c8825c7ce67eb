//! The running tables and every way they change: a whole-table swap, a
//! rollback to the previous generation, and in-place edits of single
//! tunnels.
//!
//! A swap follows Cilium's map-in-map pattern: the new tunnel table (the
//! upstream hash and the downstream array) is built in fresh inner maps off
//! to the side, then one outer entry per direction is flipped, so every
//! packet sees either the whole old table or the whole new one. The old
//! inner maps are kept, which is what makes `--rollback` a flip too.
//!
//! The station table is not rebuilt (at a million stations a copy would take
//! seconds): it stays in place, and after the flip the stations whose
//! tunnel is gone, or whose tunnel moved to another VLAN, are deleted and
//! counted. Until they are, they are harmless: their tunnel id has no valid
//! downstream entry in the new table, so frames to them are dropped under
//! `down_drop_no_tunnel`, and tunnel ids are never reused while any kept
//! generation still names them.
//!
//! Tunnel ids are stable per AP name for the life of the node (and across
//! restarts, through the state file), so stations learned behind an AP stay
//! valid across swaps that keep that AP.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use ferry_dataplane::{
    datapath::{Datapath, TunnelTable},
    tables::{Tables, addr_key},
};
use ferry_ebpf::abi::{self, StationKey, TunnelKey};
use serde::Serialize;

use crate::config::{Config, Role, TunnelConfig};

/// What a table change did, for the CLI, the logs and the metrics.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Change {
    /// "swap", "rollback", "tunnel add", ...
    pub kind: String,
    /// Table generation before.
    pub old_generation: u64,
    /// Table generation now live.
    pub new_generation: u64,
    /// Tunnels in the new table.
    pub tunnels: usize,
    /// Tunnels added (by AP name).
    pub added: usize,
    /// Tunnels removed.
    pub removed: usize,
    /// Time to read and validate the table file, in microseconds.
    pub validate_us: u64,
    /// Time to build the new inner maps, in microseconds.
    pub build_us: u64,
    /// Time of the flip itself (outer map updates), in microseconds.
    pub flip_us: u64,
    /// Time from request (validation included) to new table live, in
    /// microseconds.
    pub total_us: u64,
    /// Stations deleted because their tunnel went away or changed VLAN.
    pub stations_flushed: u64,
    /// Time the station flush took (after the flip), in microseconds.
    pub flush_us: u64,
}

/// The previous generation, kept ready for a rollback.
struct Previous {
    config: Config,
    bound: BTreeMap<String, SocketAddr>,
    generation: u64,
    table: TunnelTable,
    tables: Tables,
}

/// Everything the node knows about its tables.
pub struct TableState {
    /// The configuration the live tables come from.
    pub config: Config,
    /// The tables as installed (ids assigned, session tunnels resolved).
    pub tables: Tables,
    /// Tunnel id of every AP this node has a table entry for.
    ids: BTreeMap<String, u32>,
    /// Live table generation (user-facing; a rollback returns to the old
    /// number).
    pub generation: u64,
    /// Highest generation handed out.
    last_generation: u64,
    prev: Option<Previous>,
    /// Session tunnels bound to an AP address and port.
    bound: BTreeMap<String, SocketAddr>,
    /// Whole-table swaps (rollbacks included) since start.
    pub swaps: u64,
    /// Stations flushed since start.
    pub flushed_total: u64,
    /// The last change.
    pub last: Option<Change>,
    /// The last whole-table swap or rollback.
    pub last_swap: Option<Change>,
    /// FIB interface for downstream next hops.
    ap_ifindex: u32,
}

/// What a restarted node carries over in its state file.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Saved {
    /// Tunnel ids by AP name.
    pub ids: BTreeMap<String, u32>,
    /// Live generation.
    pub generation: u64,
    /// Session tunnel bindings (AP name -> address:port).
    pub bound: BTreeMap<String, SocketAddr>,
    /// The running table as a table file ([`Config::table_toml`]).
    #[serde(default)]
    pub table: Option<String>,
}

impl TableState {
    /// Installs `config` on a freshly loaded data plane.
    pub fn install(dp: &mut Datapath, config: Config, ap_ifindex: u32) -> Result<Self> {
        let mut s = Self::empty(config, ap_ifindex);
        s.assign_ids(&s.config.clone());
        s.tables = s.build_tables(&s.config);
        dp.apply(&s.tables).context("installing the tables")?;
        s.generation = 1;
        s.last_generation = 1;
        Ok(s)
    }

    /// Takes over a running data plane (pinned maps adopted after a
    /// restart): ids and bindings come from `saved` where present, else
    /// from the live table's keys, then `config` goes live as an ordinary
    /// swap. There is no rollback target until the next swap: what ran
    /// before is known only as kernel maps, not as a configuration.
    pub fn adopt(
        dp: &mut Datapath,
        config: Config,
        saved: Option<Saved>,
        ap_ifindex: u32,
    ) -> Result<(Self, Change)> {
        let mut s = Self::empty(config.clone(), ap_ifindex);
        let live = dp
            .live_tunnels()
            .context("reading the running tunnel table")?;
        let live_keys: BTreeMap<_, _> = live
            .entries()?
            .into_iter()
            .filter(|(_, i)| i.flags & abi::TUNNEL_MARKER == 0)
            .map(|(k, i)| (k, i.id))
            .collect();
        let saved = saved.unwrap_or_default();
        s.generation = saved.generation.max(1);
        s.last_generation = s.generation;
        s.bound = saved.bound;
        // Ids of the running table: from the state file, or matched by key.
        let mut ids = saved.ids;
        for (i, t) in config.tunnels.iter().enumerate() {
            if ids.contains_key(&t.ap) {
                continue;
            }
            if let Some(tun) = config.tunnel(i as u32, t, s.bound.get(&t.ap).copied())
                && let Some(id) = live_keys.get(&tun.key)
            {
                ids.insert(t.ap.clone(), *id);
            }
        }
        // Ids the running table uses for entries nobody claims stay reserved
        // (their stations are flushed below) by keeping them in the map
        // under a name no AP can have.
        let claimed: BTreeSet<u32> = ids.values().copied().collect();
        for id in live_keys.values().filter(|id| !claimed.contains(id)) {
            ids.insert(format!("\u{0}stale-{id}"), *id);
        }
        s.ids = ids;
        drop(live);
        let mut change = s.swap_to(dp, config, "restart")?;
        // What ran before the restart is known only as kernel maps, not as
        // a configuration: there is nothing to roll back to.
        s.prev = None;
        let had_stale = s.ids.keys().any(|k| k.starts_with('\u{0}'));
        s.ids.retain(|k, _| !k.starts_with('\u{0}'));
        if had_stale {
            // Entries nobody claims any more: their stations go now (the
            // swap only compares against a table it knows).
            let vlan_of: BTreeMap<u32, u16> = s
                .tables
                .tunnels
                .iter()
                .map(|t| (t.info.id, t.info.vlan))
                .chain(s.unbound_vlans())
                .collect();
            let n = dp.flush_stations(|k, v| vlan_of.get(&v.tunnel) == Some(&k.vlan))?;
            change.stations_flushed += n;
            s.flushed_total += n;
        }
        Ok((s, change))
    }

    fn empty(config: Config, ap_ifindex: u32) -> Self {
        Self {
            ap_ifindex,
            config,
            tables: Tables::default(),
            ids: BTreeMap::new(),
            generation: 0,
            last_generation: 0,
            prev: None,
            bound: BTreeMap::new(),
            swaps: 0,
            flushed_total: 0,
            last: None,
            last_swap: None,
        }
    }

    /// What to save for a restart.
    pub fn saved(&self) -> Saved {
        Saved {
            ids: self.ids.clone(),
            generation: self.generation,
            bound: self.bound.clone(),
            table: Some(self.config.table_toml()),
        }
    }

    /// Tunnel id of AP `ap`, if it has one.
    pub fn id_of(&self, ap: &str) -> Option<u32> {
        self.ids.get(ap).copied()
    }

    /// The session binding of `ap`.
    pub fn bound(&self, ap: &str) -> Option<SocketAddr> {
        self.bound.get(ap).copied()
    }

    /// Whether a previous generation is ready for a rollback.
    pub fn can_roll_back(&self) -> Option<u64> {
        self.prev.as_ref().map(|p| p.generation)
    }

    /// Gives every AP of `config` an id: the one it has, else the lowest
    /// id no kept generation uses.
    fn assign_ids(&mut self, config: &Config) {
        // The common swap keeps the same APs: nothing to allocate.
        if config.tunnels.iter().all(|t| self.ids.contains_key(&t.ap)) {
            return;
        }
        let mut used: BTreeSet<u32> = self.ids.values().copied().collect();
        if let Some(p) = &self.prev {
            used.extend(p.tables.tunnels.iter().map(|t| t.info.id));
        }
        let mut next = 0u32;
        for t in &config.tunnels {
            if self.ids.contains_key(&t.ap) {
                continue;
            }
            while used.contains(&next) {
                next += 1;
            }
            self.ids.insert(t.ap.clone(), next);
            used.insert(next);
        }
    }

    fn build_tables(&self, config: &Config) -> Tables {
        let ids = &self.ids;
        let bound = &self.bound;
        let mut t = config.tables_with(&|i, t| ids.get(&t.ap).copied().unwrap_or(i as u32), &|t| {
            bound.get(&t.ap).copied()
        });
        t.settings.ap_ifindex = self.ap_ifindex;
        t
    }

    /// Replaces the whole table with `next` (validated already).
    pub fn swap(&mut self, dp: &mut Datapath, next: Config) -> Result<Change> {
        refuse_restart_fields(&self.config, &next)?;
        self.swap_to(dp, next, "swap")
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
    fn swap_to(&mut self, dp: &mut Datapath, next: Config, kind: &str) -> Result<Change> {
        let t0 = Instant::now();
        self.assign_ids(&next);
        let mut tables = self.build_tables(&next);
        dp.carry_learned_ports(&mut tables.tunnels)?;
        let built = dp.build_tunnels(&tables.tunnels)?;
        let t_built = Instant::now();
        let old_live = dp.live_tunnels()?;
        self.flip(dp, &tables, &built)?;
        let t_flipped = Instant::now();
        let (flushed, flush) = self.after_flip(dp, &tables)?;
        let before = Previous {
            config: self.config.clone(),
            bound: self.bound.clone(),
            generation: self.generation,
            table: old_live,
            tables: self.tables.clone(),
        };
        let change = self.commit(next, tables, kind, [t0, t_built, t_flipped], flushed, flush);
        self.prev = Some(before);
        Ok(change)
    }

    /// Flips back to the previous generation; the current one becomes the
    /// rollback target in turn.
    pub fn rollback(&mut self, dp: &mut Datapath) -> Result<Change> {
        let t0 = Instant::now();
        let Some(target) = self.prev.as_mut() else {
            bail!("no previous generation to roll back to");
        };
        let mut tables = target.tables.clone();
        dp.carry_learned_ports(&mut tables.tunnels)?;
        for t in &tables.tunnels {
            // Learned ports are live state: refresh them in the kept maps.
            target.table.set_down(t.info.id, t.down_entry())?;
        }
        let old_live = dp.live_tunnels()?;
        let current = Previous {
            config: self.config.clone(),
            bound: self.bound.clone(),
            generation: self.generation,
            table: old_live,
            tables: self.tables.clone(),
        };
        let t_built = Instant::now();
        if let Some(target) = &self.prev {
            self.flip(dp, &tables, &target.table)?;
        }
        let t_flipped = Instant::now();
        // From here the previous generation is live: it stops being the
        // rollback target whatever happens next.
        let Some(prev) = self.prev.take() else {
            bail!("no previous generation to roll back to");
        };
        let (flushed, flush) = self.after_flip(dp, &tables)?;
        let generation = prev.generation;
        // Bindings made since stay (the AP still sends from there).
        let mut bound = prev.bound;
        bound.extend(std::mem::take(&mut self.bound));
        self.bound = bound;
        let mut change = self.commit(
            prev.config,
            tables,
            "rollback",
            [t0, t_built, t_flipped],
            flushed,
            flush,
        );
        // A rollback returns to the old generation number.
        self.generation = generation;
        change.new_generation = generation;
        self.last = Some(change.clone());
        self.last_swap = Some(change.clone());
        self.prev = Some(current);
        Ok(change)
    }

    /// Client VLANs widened before the flip (so no frame of a new tunnel's
    /// VLAN is passed while the flip happens), then the tables flipped.
    fn flip(&self, dp: &mut Datapath, tables: &Tables, t: &TunnelTable) -> Result<()> {
        self.widen_vlans(dp, tables)?;
        dp.flip_tunnels(t)
    }

    /// Serves the union of the live and the next client VLANs, so neither
    /// table's frames are passed while the change happens.
    fn widen_vlans(&self, dp: &mut Datapath, tables: &Tables) -> Result<()> {
        let mut union = self.tables.client_vlans.clone();
        for v in &tables.client_vlans {
            if !union.contains(v) {
                union.push(*v);
            }
        }
        dp.set_client_vlans(&union)
    }

    /// After a flip: exact client VLANs, static stations, and the flush of
    /// stations whose tunnel is gone or changed VLAN.
    fn after_flip(&self, dp: &mut Datapath, tables: &Tables) -> Result<(u64, Duration)> {
        dp.set_client_vlans(&tables.client_vlans)?;
        let vlan_of: BTreeMap<u32, u16> = tables
            .tunnels
            .iter()
            .map(|t| (t.info.id, t.info.vlan))
            .chain(
                // Session tunnels not bound yet keep their stations.
                self.unbound_vlans(),
            )
            .collect();
        let old: BTreeMap<u32, u16> = self
            .tables
            .tunnels
            .iter()
            .map(|t| (t.info.id, t.info.vlan))
            .collect();
        let stale_ids: Vec<u32> = old
            .iter()
            .filter(|(id, vlan)| vlan_of.get(id) != Some(vlan))
            .map(|(id, _)| *id)
            .collect();
        let new_statics: BTreeSet<StationKey> = tables.stations.iter().map(|s| s.key).collect();
        let gone: Vec<StationKey> = self
            .tables
            .stations
            .iter()
            .map(|s| s.key)
            .filter(|k| !new_statics.contains(k))
            .collect();
        dp.put_static_stations(&tables.stations, &gone)?;
        let t = Instant::now();
        let mut flushed = 0;
        if !stale_ids.is_empty() {
            flushed = dp.flush_stations(|k, v| vlan_of.get(&v.tunnel) == Some(&k.vlan))?;
            let removed: Vec<u32> = stale_ids
                .iter()
                .copied()
                .filter(|id| !vlan_of.contains_key(id))
                .collect();
            dp.reset_station_counts(&removed)?;
        }
        Ok((flushed, t.elapsed()))
    }

    /// Session tunnels not bound yet (no entry, but their stations stay).
    fn unbound_vlans(&self) -> impl Iterator<Item = (u32, u16)> + '_ {
        self.config
            .tunnels
            .iter()
            .filter(|t| t.address.is_none() && !self.bound.contains_key(&t.ap))
            .filter_map(|t| self.ids.get(&t.ap).map(|id| (*id, t.vlan)))
    }

    fn commit(
        &mut self,
        next: Config,
        tables: Tables,
        kind: &str,
        [t0, t_built, t_flipped]: [Instant; 3],
        flushed: u64,
        flush: Duration,
    ) -> Change {
        let old_names: BTreeSet<&str> = self.config.tunnels.iter().map(|t| t.ap.as_str()).collect();
        let new_names: BTreeSet<&str> = next.tunnels.iter().map(|t| t.ap.as_str()).collect();
        let change = Change {
            kind: kind.to_string(),
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
        };
        self.last_generation += 1;
        self.generation = self.last_generation;
        // Forget ids of APs no kept generation has.
        let keep: BTreeSet<String> = next
            .tunnels
            .iter()
            .chain(self.config.tunnels.iter())
            .map(|t| t.ap.clone())
            .collect();
        self.ids
            .retain(|k, _| keep.contains(k) || k.starts_with('\u{0}'));
        self.bound.retain(|k, _| new_names.contains(k.as_str()));
        self.config = next;
        self.tables = tables;
        self.swaps += 1;
        self.flushed_total += flushed;
        self.last = Some(change.clone());
        self.last_swap = Some(change.clone());
        change
    }

    /// Changes single tunnels in place (add, remove, promote, demote, a
    /// session binding): each entry is updated on its own, which is atomic
    /// per entry; the rollback target stays what it was.
    pub fn edit(&mut self, dp: &mut Datapath, next: Config, kind: &str) -> Result<Change> {
        let t0 = Instant::now();
        self.assign_ids(&next);
        // Learned ports are kept per entry by `edit_tunnels`.
        let tables = self.build_tables(&next);
        let t_built = Instant::now();
        self.widen_vlans(dp, &tables)?;
        dp.edit_tunnels(&self.tables.tunnels, &tables.tunnels)?;
        let t_flipped = Instant::now();
        let (flushed, flush) = self.after_flip(dp, &tables)?;
        let previous_swap = self.last_swap.take();
        let change = self.commit(next, tables, kind, [t0, t_built, t_flipped], flushed, flush);
        // Edits are not swaps.
        self.swaps -= 1;
        self.last_swap = previous_swap;
        Ok(change)
    }

    /// `config` with tunnel `ap` set to `role`.
    pub fn with_role(&self, ap: &str, role: Role) -> Result<Config> {
        let mut next = self.config.clone();
        let t = next
            .tunnels
            .iter_mut()
            .find(|t| t.ap == ap)
            .with_context(|| format!("no tunnel {ap:?}"))?;
        if t.role == role {
            bail!("tunnel {ap:?} is already {}", role.as_str());
        }
        t.role = role;
        Ok(next)
    }

    /// `config` without tunnel `ap` (and its static stations).
    pub fn without(&self, ap: &str) -> Result<Config> {
        let mut next = self.config.clone();
        let i = next
            .tunnels
            .iter()
            .position(|t| t.ap == ap)
            .with_context(|| format!("no tunnel {ap:?}"))?;
        next.tunnels.remove(i);
        next.stations.retain(|s| s.tunnel != i);
        for s in &mut next.stations {
            if s.tunnel > i {
                s.tunnel -= 1;
            }
        }
        Ok(next)
    }

    /// `config` plus tunnel `t` (validated against the others).
    pub fn with_tunnel(&self, t: TunnelConfig) -> Result<Config> {
        let mut next = self.config.clone();
        if next.tunnels.iter().any(|o| o.ap == t.ap) {
            bail!("tunnel {:?} already exists", t.ap);
        }
        if let Some(a) = t.address
            && next
                .tunnels
                .iter()
                .any(|o| o.address == Some(a) && o.port == t.port)
        {
            bail!("another tunnel already uses {a} {}", port_text(t.port));
        }
        if t.session_id.is_some() && next.tunnels.iter().any(|o| o.session_id == t.session_id) {
            bail!("another tunnel already uses that session_id");
        }
        if !next.client_vlans.contains(&t.vlan) {
            bail!(
                "tunnel VLAN {} is not a client VLAN of this node ({:?})",
                t.vlan,
                next.client_vlans
            );
        }
        if next.tunnels.len() >= abi::MAX_TUNNELS as usize {
            bail!("the table is full ({} tunnels)", abi::MAX_TUNNELS);
        }
        next.tunnels.push(t);
        Ok(next)
    }

    /// Binds session tunnel `ap` to `peer` (its keepalives come from there)
    /// and updates its entries in place.
    pub fn bind(&mut self, dp: &mut Datapath, ap: &str, peer: SocketAddr) -> Result<Change> {
        let t = self
            .config
            .tunnels
            .iter()
            .find(|t| t.ap == ap)
            .with_context(|| format!("no tunnel {ap:?}"))?;
        if !self
            .config
            .addresses
            .iter()
            .any(|a| a.is_ipv6() == peer.is_ipv6())
        {
            bail!(
                "tunnel {ap:?}: keepalive from {peer}, but this node has no address of that family"
            );
        }
        if t.address.is_some() {
            bail!("tunnel {ap:?} is declared by address");
        }
        let key = TunnelKey::new(addr_key(peer.ip()), peer.port());
        let clash = self
            .tables
            .tunnels
            .iter()
            .any(|o| o.key == key && Some(o.info.id) != self.id_of(ap));
        if clash {
            bail!("tunnel {ap:?}: {peer} is already another tunnel's address and port");
        }
        let before = self.bound.insert(ap.to_string(), peer);
        let next = self.config.clone();
        match self.edit(dp, next, "bind") {
            Ok(c) => Ok(c),
            Err(e) => {
                match before {
                    Some(b) => self.bound.insert(ap.to_string(), b),
                    None => self.bound.remove(ap),
                };
                Err(e)
            }
        }
    }
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
    ] {
        if !same {
            bail!(
                "{what} changed: that needs a restart of ferry run, not a swap (nothing was changed)"
            );
        }
    }
    Ok(())
}

fn port_text(p: Option<u16>) -> String {
    p.map_or("any port".into(), |p| format!("port {p}"))
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

//! The running tables and every way they change: a whole-table swap, a
//! rollback to the previous generation, in-place edits of single tunnels,
//! session bindings and the station flush that follows. All of it writes
//! through [`TableMaps`], implemented for the kernel's maps and for the
//! reference model (the unit tests here run against the model, no root).
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
//! generation still names them (see [`ids`]).

use std::{collections::BTreeMap, net::SocketAddr, path::Path};

use anyhow::{Context as _, Result, bail};
use ferry_dataplane::tables::{Tables, key_addr};
use ferry_ebpf::abi::{self, TunnelDown};
use serde::{Deserialize, Serialize};

use crate::{
    api::views::Change,
    config::{Config, StationEntry, TunnelConfig, TunnelEntry, TunnelState},
};

mod bind;
mod change;
pub mod ids;
pub mod licensing;
pub mod lower;
pub mod maps;
mod plan;
#[cfg(test)]
mod property;
pub mod raise;
#[cfg(test)]
mod tests;

pub use maps::{ModelMaps, TableMaps};

use ids::Ids;

/// The previous generation, kept ready for a rollback.
struct Previous<T> {
    config: Config,
    bound: BTreeMap<String, SocketAddr>,
    generation: u64,
    table: T,
    tables: Tables,
}

/// Everything the node knows about its tables, over maps `M`.
pub struct TableState<M: TableMaps> {
    /// The configuration the live tables come from.
    pub config: Config,
    /// The tables as installed (ids assigned, session tunnels resolved).
    pub tables: Tables,
    ids: Ids,
    /// Live table generation (user-facing; a rollback returns to the old
    /// number).
    pub generation: u64,
    /// Highest generation handed out.
    last_generation: u64,
    prev: Option<Previous<M::Table>>,
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
    /// Lookups for session bindings; dropped by every table change.
    bind_index: Option<bind::BindIndex>,
    /// Which tunnels the licence pool covers (HA; no limit without).
    admission: licensing::Admission,
}

/// The running table as structured data (the state file's form).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SavedTable {
    /// `[[tunnel]]` entries, every field explicit.
    pub tunnels: Vec<TunnelEntry>,
    /// `[[station]]` entries.
    pub stations: Vec<StationEntry>,
}

/// What a restarted node carries over in its state file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Saved {
    /// Tunnel ids by AP name.
    pub ids: BTreeMap<String, u32>,
    /// Live generation.
    pub generation: u64,
    /// Session tunnel bindings (AP name -> address:port).
    pub bound: BTreeMap<String, SocketAddr>,
    /// The running table.
    #[serde(default)]
    pub table: Option<SavedTable>,
    /// The kernel's table generation (settings map) when this was
    /// written: a pinned generation that differs means the maps changed
    /// after the file (a swap killed after its flip), so the file is stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_generation: Option<u32>,
}

impl Saved {
    /// Checks what the file says on its own: ids within the tunnel map's
    /// range and no id given to two APs.
    pub fn check(&self) -> Result<()> {
        let mut by_id: BTreeMap<u32, &str> = BTreeMap::new();
        for (ap, id) in &self.ids {
            if *id >= abi::MAX_TUNNELS {
                bail!(
                    "tunnel id {id} of {ap:?} is out of range (at most {})",
                    abi::MAX_TUNNELS - 1
                );
            }
            if let Some(other) = by_id.insert(*id, ap) {
                bail!("tunnel id {id} is given to both {other:?} and {ap:?}");
            }
        }
        Ok(())
    }

    /// Checks the saved ids against the pinned tables that run: a tunnel
    /// of `running` (the saved table) whose key is live must be live under
    /// the id the file gives its AP. Read only; nothing is written.
    pub fn check_against<M: TableMaps>(&self, maps: &mut M, running: &Config) -> Result<()> {
        let live = maps.live().context("reading the running tunnel table")?;
        let live_ids: BTreeMap<_, _> = maps
            .entries(&live)?
            .into_iter()
            .filter(|(_, i)| i.flags & abi::TUNNEL_MARKER == 0)
            .map(|(k, i)| (k, i.id))
            .collect();
        for (i, t) in running.tunnels.iter().enumerate() {
            // Session tunnels are left out: their bindings are live state
            // that the file may trail by a second (another session can be
            // bound where the file puts this one), and adoption takes
            // them from the maps.
            let (Some(id), Some(tun)) = (
                self.ids.get(&t.ap),
                lower::tunnel(running, i as u32, t, None),
            ) else {
                continue;
            };
            if let Some(live_id) = live_ids.get(&tun.key)
                && live_id != id
            {
                bail!(
                    "it gives {:?} tunnel id {id}, but the pinned maps forward its address under id {live_id}",
                    t.ap
                );
            }
        }
        Ok(())
    }

    /// The configuration with the saved running table, validated like a
    /// table file (errors name `file`).
    pub fn running(&self, config: &Config, file: &Path) -> Result<Option<Config>> {
        let Some(t) = &self.table else {
            return Ok(None);
        };
        let c = config.with_entries(file, t.tunnels.clone(), t.stations.clone())?;
        Ok(Some(c))
    }
}

impl<M: TableMaps> TableState<M> {
    /// Installs `config` on a freshly loaded data plane.
    pub fn install(maps: &mut M, config: Config, ap_ifindex: u32) -> Result<Self> {
        Self::install_with(maps, config, ap_ifindex, licensing::Admission::default())
    }

    /// [`Self::install`] under licence admission `admission` from the
    /// first entry written.
    pub fn install_with(
        maps: &mut M,
        config: Config,
        ap_ifindex: u32,
        admission: licensing::Admission,
    ) -> Result<Self> {
        let mut s = Self::empty(config, ap_ifindex);
        s.admission = admission;
        // A fresh data plane: every slot starts at zero already.
        s.ids
            .assign(s.config.tunnels.iter().map(|t| t.ap.as_str()), []);
        s.tables = s.build_tables(&s.config);
        s.bind_index = None;
        maps.install(&s.tables).context("installing the tables")?;
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
        maps: &mut M,
        config: Config,
        saved: Option<Saved>,
        ap_ifindex: u32,
    ) -> Result<(Self, Change)> {
        Self::adopt_with(
            maps,
            config,
            saved,
            ap_ifindex,
            licensing::Admission::default(),
        )
    }

    /// [`Self::adopt`] under licence admission `admission` from the first
    /// entry written.
    pub fn adopt_with(
        maps: &mut M,
        config: Config,
        saved: Option<Saved>,
        ap_ifindex: u32,
        admission: licensing::Admission,
    ) -> Result<(Self, Change)> {
        let mut s = Self::empty(config.clone(), ap_ifindex);
        s.admission = admission;
        let live = maps.live().context("reading the running tunnel table")?;
        let live_keys: BTreeMap<_, _> = maps
            .entries(&live)?
            .into_iter()
            .filter(|(_, i)| i.flags & abi::TUNNEL_MARKER == 0)
            .map(|(k, i)| (k, i.id))
            .collect();
        drop(live);
        let saved = saved.unwrap_or_default();
        s.generation = saved.generation.max(1);
        s.last_generation = s.generation;
        s.bound = saved.bound;
        // Ids of the running table: from the state file, or matched by key.
        s.ids = Ids::from_saved(saved.ids);
        s.bind_as_running(&live_keys);
        for (i, t) in config.tunnels.iter().enumerate() {
            if s.ids.get(&t.ap).is_some() {
                continue;
            }
            if let Some(tun) = lower::tunnel(&config, i as u32, t, s.bound.get(&t.ap).copied())
                && let Some(id) = live_keys.get(&tun.key)
            {
                s.ids.claim(&t.ap, *id);
            }
        }
        // Ids the running table uses for entries nobody claims stay reserved
        // until their stations are flushed below.
        let claimed: Vec<u32> = s.ids.by_name().values().copied().collect();
        s.ids.reserve(
            live_keys
                .values()
                .copied()
                .filter(|id| !claimed.contains(id)),
        );
        let mut change = s.swap_to(maps, config, crate::api::views::ChangeKind::Restart)?;
        // What ran before the restart is known only as kernel maps, not as
        // a configuration: there is nothing to roll back to.
        s.prev = None;
        s.forget_unreferenced_ids();
        if !s.ids.reserved().is_empty() {
            // Entries nobody claims any more: their stations go now (the
            // swap only compares against a table it knows).
            let vlan_of = s.vlan_of(&s.tables);
            let n = maps.flush_stations(&mut |k, v| vlan_of.get(&v.tunnel) == Some(&k.vlan))?;
            change.stations_flushed += n;
            s.flushed_total += n;
            s.ids.release_reserved();
        }
        Ok((s, change))
    }

    /// Session bindings as the running table has them (bound where its
    /// id forwards from, unbound where it forwards from nowhere): a
    /// binding made after the state file was last written (it catches up
    /// within a second) is still what forwards, and the kernel's maps are
    /// the truth.
    fn bind_as_running(&mut self, live_keys: &BTreeMap<abi::TunnelKey, u32>) {
        let by_id: BTreeMap<u32, SocketAddr> = live_keys
            .iter()
            .filter(|(k, _)| k.port != 0)
            .map(|(k, id)| (*id, SocketAddr::new(key_addr(k.addr), k.port)))
            .collect();
        for t in self.config.tunnels.iter().filter(|t| t.address.is_none()) {
            let Some(id) = self.ids.get(&t.ap) else {
                continue;
            };
            match by_id.get(&id) {
                Some(peer) => self.bound.insert(t.ap.clone(), *peer),
                None => self.bound.remove(&t.ap),
            };
        }
    }

    fn empty(config: Config, ap_ifindex: u32) -> Self {
        Self {
            ap_ifindex,
            config,
            tables: Tables::default(),
            ids: Ids::default(),
            generation: 0,
            last_generation: 0,
            prev: None,
            bound: BTreeMap::new(),
            swaps: 0,
            flushed_total: 0,
            last: None,
            last_swap: None,
            bind_index: None,
            admission: licensing::Admission::default(),
        }
    }

    /// What to save for a restart.
    pub fn saved(&self) -> Saved {
        Saved {
            ids: self.ids.by_name().clone(),
            generation: self.generation,
            bound: self.bound.clone(),
            table: Some(SavedTable {
                tunnels: self.config.tunnel_entries(),
                stations: self.config.station_entries(),
            }),
            kernel_generation: None,
        }
    }

    /// The AP-side interface index for later table builds (after the
    /// interface was re-created; the caller writes the live settings).
    pub fn set_ap_ifindex(&mut self, ifindex: u32) {
        self.ap_ifindex = ifindex;
        self.tables.settings.ap_ifindex = ifindex;
    }

    /// Tunnel id of AP `ap`, if it has one.
    pub fn id_of(&self, ap: &str) -> Option<u32> {
        self.ids.get(ap)
    }

    /// Every session binding (AP name -> address and port).
    pub fn bindings(&self) -> &BTreeMap<String, SocketAddr> {
        &self.bound
    }

    /// The session binding of `ap`.
    pub fn bound(&self, ap: &str) -> Option<SocketAddr> {
        self.bound.get(ap).copied()
    }

    /// Whether a previous generation is ready for a rollback.
    pub fn can_roll_back(&self) -> Option<u64> {
        self.prev.as_ref().map(|p| p.generation)
    }

    /// One past the highest tunnel id in use (how much of the per-id arrays
    /// to read).
    pub fn id_bound(&self) -> u32 {
        self.ids.end()
    }

    /// The lowered tables of `config` with this node's ids and bindings.
    fn build_tables(&self, config: &Config) -> Tables {
        self.build_tables_with(config, &self.bound)
    }

    /// The lowered tables of `config` with this node's ids and `bound`.
    fn build_tables_with(&self, config: &Config, bound: &BTreeMap<String, SocketAddr>) -> Tables {
        let admitted = self.admitted(config);
        let config = admitted.as_ref().unwrap_or(config);
        let ids = &self.ids;
        let mut t = lower::lower(config, &|i, t| ids.get(&t.ap).unwrap_or(i as u32), &|t| {
            bound.get(&t.ap).copied()
        });
        t.settings.ap_ifindex = self.ap_ifindex;
        t
    }

    /// The live configuration with tunnel `ap` in `state`; `None` when it
    /// is in that state already (a retried promote or demote is a no-op).
    pub fn with_state(&self, ap: &str, state: TunnelState) -> Result<Option<Config>> {
        let mut next = self.config.clone();
        let t = next
            .tunnels
            .iter_mut()
            .find(|t| t.ap == ap)
            .with_context(|| format!("no tunnel {ap:?}"))?;
        if t.state == state {
            return Ok(None);
        }
        t.state = state;
        Ok(Some(next))
    }

    /// The live configuration without tunnel `ap` (and its static stations).
    pub fn without(&self, ap: &str) -> Result<Config> {
        let mut next = self.config.clone();
        let i = next
            .tunnel_index(ap)
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

    /// The live configuration plus tunnel `t` (validated against the others).
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
            let port = t.port.map_or("any port".into(), |p| format!("port {p}"));
            bail!("another tunnel already uses {a} {port}");
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

    /// Copies ports the programs learned for any-port tunnels from the live
    /// table into `tables` (same id, same AP address), so a swap does not
    /// make downstream traffic wait for the AP's next frame.
    fn carry_learned_ports(maps: &mut M, tables: &mut Tables) -> Result<()> {
        let n = tables
            .tunnels
            .iter()
            .map(|t| t.info.id + 1)
            .max()
            .unwrap_or(0);
        let live = maps.live()?;
        let all = maps.downs(&live, n)?;
        for t in &mut tables.tunnels {
            if t.down.flags & abi::DOWN_FIXED_PORT != 0 {
                continue;
            }
            if let Some(d) = all.get(t.info.id as usize)
                && learned_port_of(d, &t.down).is_some()
            {
                t.down.port = d.port;
            }
        }
        Ok(())
    }
}

/// The port the program learned in live entry `live` for the AP of
/// configured entry `want`: only an any-port entry for the same address.
fn learned_port_of(live: &TunnelDown, want: &TunnelDown) -> Option<u16> {
    (live.flags & abi::DOWN_VALID != 0
        && live.flags & abi::DOWN_FIXED_PORT == 0
        && live.ap == want.ap)
        .then_some(live.port)
}

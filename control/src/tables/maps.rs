//! The small trait the table bookkeeping writes through, and its two
//! implementations: the kernel's maps ([`Datapath`]) and the reference
//! model ([`ModelMaps`]), so every table change can be unit-tested without
//! root and the same code drives production.
//!
//! The verbs are the map operations themselves (build a generation aside,
//! flip it in, write one entry of a generation, walk the stations); the
//! decisions (ids, what to keep, what to flush, edit order) live in
//! [`super::TableState`], once.

use std::collections::{BTreeMap, HashMap};

use ferry_dataplane::{
    datapath::{Datapath, TunnelTable, table_entries},
    error::Result,
    model::{Model, TunnelMaps},
    tables::{Station, Tables, Tunnel},
};
use ferry_ebpf::abi::{
    STATION_STATIC, StationInfo, StationKey, TUNNEL_MARKER, TUNNEL_PORTS, TunnelDown, TunnelInfo,
    TunnelKey,
};

/// The data plane's table maps, as the control side changes them.
pub trait TableMaps {
    /// One generation of the tunnel table (upstream and downstream maps),
    /// live or kept aside. Holding it keeps it alive.
    type Table;

    /// Installs everything in `tables` on a fresh data plane (settings,
    /// addresses, client VLANs, tunnels, an empty station table).
    fn install(&mut self, tables: &Tables) -> Result<()>;
    /// Builds a generation off to the side; the programs see nothing yet.
    fn build(&mut self, tunnels: &[Tunnel]) -> Result<Self::Table>;
    /// The live generation.
    fn live(&mut self) -> Result<Self::Table>;
    /// Makes `t` the live generation (one flip per direction).
    fn flip(&mut self, t: &Self::Table) -> Result<()>;
    /// Every upstream entry of `t` (port markers included).
    fn entries(&mut self, t: &Self::Table) -> Result<Vec<(TunnelKey, TunnelInfo)>>;
    /// The downstream entries of ids `0..n` of `t` (one batch read).
    fn downs(&mut self, t: &Self::Table, n: u32) -> Result<Vec<TunnelDown>>;
    /// The downstream entry of tunnel `id` in `t` (one lookup: a
    /// single-tunnel edit must not cost a read of the whole table).
    fn down(&mut self, t: &Self::Table, id: u32) -> Result<TunnelDown>;
    /// Writes the downstream entry of tunnel `id` in `t`.
    fn set_down(&mut self, t: &mut Self::Table, id: u32, d: TunnelDown) -> Result<()>;
    /// The upstream entry of `t` under `key` (one lookup).
    fn up(&mut self, t: &Self::Table, key: &TunnelKey) -> Result<Option<TunnelInfo>>;
    /// Writes one upstream entry of `t`.
    fn set_up(&mut self, t: &mut Self::Table, key: TunnelKey, info: TunnelInfo) -> Result<()>;
    /// Removes one upstream entry of `t`.
    fn remove_up(&mut self, t: &mut Self::Table, key: &TunnelKey) -> Result<()>;
    /// Marks a change of tables (the programs' learning hints go stale).
    fn bump(&mut self) -> Result<()>;
    /// Sets the client VLANs served downstream.
    fn set_client_vlans(&mut self, vlans: &[u16]) -> Result<()>;
    /// Writes static stations (over learned ones) and removes `gone`.
    fn put_static_stations(&mut self, add: &[Station], gone: &[StationKey]) -> Result<()>;
    /// Deletes every station `keep` says no to; how many went.
    fn flush_stations(
        &mut self,
        keep: &mut dyn FnMut(&StationKey, &StationInfo) -> bool,
    ) -> Result<u64>;
    /// Sets the learned-station counts of `ids` to zero.
    fn reset_station_counts(&mut self, ids: &[u32]) -> Result<()>;
    /// How many stations of the live table `pick` says yes to.
    fn count_stations(
        &mut self,
        pick: &mut dyn FnMut(&StationKey, &StationInfo) -> bool,
    ) -> Result<u64>;
    /// Zeroes every per-tunnel slot of `ids` (statistics and station
    /// count): they are about to be given to new APs.
    fn reset_tunnel_slots(&mut self, ids: &[u32]) -> Result<()>;
}

impl TableMaps for Datapath {
    type Table = TunnelTable;

    fn install(&mut self, tables: &Tables) -> Result<()> {
        self.apply(tables)
    }
    fn build(&mut self, tunnels: &[Tunnel]) -> Result<TunnelTable> {
        self.build_tunnels(tunnels)
    }
    fn live(&mut self) -> Result<TunnelTable> {
        self.live_tunnels()
    }
    fn flip(&mut self, t: &TunnelTable) -> Result<()> {
        self.flip_tunnels(t)
    }
    fn entries(&mut self, t: &TunnelTable) -> Result<Vec<(TunnelKey, TunnelInfo)>> {
        t.entries()
    }
    fn downs(&mut self, t: &TunnelTable, n: u32) -> Result<Vec<TunnelDown>> {
        t.downs(n)
    }
    fn down(&mut self, t: &TunnelTable, id: u32) -> Result<TunnelDown> {
        t.down(id)
    }
    fn set_down(&mut self, t: &mut TunnelTable, id: u32, d: TunnelDown) -> Result<()> {
        t.set_down(id, d)
    }
    fn up(&mut self, t: &TunnelTable, key: &TunnelKey) -> Result<Option<TunnelInfo>> {
        t.up(key)
    }
    fn set_up(&mut self, t: &mut TunnelTable, key: TunnelKey, info: TunnelInfo) -> Result<()> {
        t.set_up(key, info)
    }
    fn remove_up(&mut self, t: &mut TunnelTable, key: &TunnelKey) -> Result<()> {
        t.remove_up(key)
    }
    fn bump(&mut self) -> Result<()> {
        self.bump_generation()
    }
    fn set_client_vlans(&mut self, vlans: &[u16]) -> Result<()> {
        Datapath::set_client_vlans(self, vlans)
    }
    fn put_static_stations(&mut self, add: &[Station], gone: &[StationKey]) -> Result<()> {
        Datapath::put_static_stations(self, add, gone)
    }
    fn flush_stations(
        &mut self,
        keep: &mut dyn FnMut(&StationKey, &StationInfo) -> bool,
    ) -> Result<u64> {
        Datapath::flush_stations(self, keep)
    }
    fn reset_station_counts(&mut self, ids: &[u32]) -> Result<()> {
        Datapath::reset_station_counts(self, ids)
    }
    fn count_stations(
        &mut self,
        pick: &mut dyn FnMut(&StationKey, &StationInfo) -> bool,
    ) -> Result<u64> {
        let mut n = 0;
        self.for_each_station(|k, v| n += u64::from(pick(k, v)))?;
        Ok(n)
    }
    fn reset_tunnel_slots(&mut self, ids: &[u32]) -> Result<()> {
        Datapath::reset_station_counts(self, ids)?;
        Datapath::reset_tunnel_stats(self, ids)
    }
}

/// The reference model behind [`TableMaps`]. The model holds one live
/// tunnel table; this keeps the other generations beside it, as the kernel
/// keeps inner maps alive while user space holds them. A generation is an
/// index; the live one is the model's own table (learned AP ports are
/// written there by the model, as by the programs), copied back whenever
/// it is read or leaves the slot.
pub struct ModelMaps {
    /// The model, with the live table.
    pub model: Model,
    /// Every generation built: upstream entries as the kernel has them
    /// (port markers included), downstream entries by id.
    tables: Vec<Generation>,
    live: usize,
    /// Test hook: the entry write (counting from 0) that fails, once, as a
    /// full or broken map would.
    #[cfg(test)]
    pub fail_write: Option<u32>,
}

#[derive(Clone, Default)]
struct Generation {
    up: BTreeMap<TunnelKey, TunnelInfo>,
    down: HashMap<u32, TunnelDown>,
}

impl ModelMaps {
    /// A model of a freshly loaded data plane with `tables` installed.
    pub fn new(tables: &Tables) -> Result<Self> {
        let mut m = Self {
            model: Model::new(&Tables::default()),
            tables: Vec::new(),
            live: 0,
            #[cfg(test)]
            fail_write: None,
        };
        m.install(tables)?;
        Ok(m)
    }

    /// Copies the model's live downstream entries (learned ports) back.
    fn sync(&mut self) {
        if let Some(g) = self.tables.get_mut(self.live) {
            g.down = self.model.tunnel_maps().down;
        }
    }

    /// Puts generation `i` into the model.
    fn load(&mut self, i: usize) {
        let g = &self.tables[i];
        // The model looks keys up exactly as the program does without the
        // derived markers (they only save the program a lookup).
        let up =
            g.up.iter()
                .filter(|(_, v)| v.flags & TUNNEL_MARKER == 0)
                .map(|(k, v)| {
                    let info = TunnelInfo {
                        flags: v.flags & !TUNNEL_PORTS,
                        ..*v
                    };
                    (*k, info)
                })
                .collect();
        self.model.set_tunnel_maps(TunnelMaps {
            up,
            down: g.down.clone(),
        });
        self.live = i;
    }

    fn generation(&mut self, t: usize) -> &mut Generation {
        if t == self.live {
            self.sync();
        }
        &mut self.tables[t]
    }

    /// Counts one entry write down to the one that fails (tests only).
    fn write(&mut self) -> Result<()> {
        #[cfg(test)]
        match self.fail_write {
            Some(0) => {
                self.fail_write = None;
                return Err(ferry_dataplane::error::Error::Failed(
                    "injected map write failure".into(),
                ));
            }
            Some(n) => self.fail_write = Some(n - 1),
            None => {}
        }
        Ok(())
    }

    fn changed(&mut self, t: usize) {
        if t == self.live {
            self.load(t);
        }
    }
}

impl TableMaps for ModelMaps {
    type Table = usize;

    fn install(&mut self, tables: &Tables) -> Result<()> {
        self.model = Model::new(&Tables {
            tunnels: Vec::new(),
            ..tables.clone()
        });
        let t = self.build(&tables.tunnels)?;
        self.load(t);
        Ok(())
    }
    fn build(&mut self, tunnels: &[Tunnel]) -> Result<usize> {
        let up = table_entries(tunnels)?.into_iter().collect();
        let down = tunnels
            .iter()
            .map(|t| (t.info.id, t.down_entry()))
            .collect();
        self.tables.push(Generation { up, down });
        Ok(self.tables.len() - 1)
    }
    fn live(&mut self) -> Result<usize> {
        Ok(self.live)
    }
    fn flip(&mut self, t: &usize) -> Result<()> {
        self.sync();
        self.load(*t);
        Ok(())
    }
    fn entries(&mut self, t: &usize) -> Result<Vec<(TunnelKey, TunnelInfo)>> {
        Ok(self
            .generation(*t)
            .up
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect())
    }
    fn downs(&mut self, t: &usize, n: u32) -> Result<Vec<TunnelDown>> {
        let g = self.generation(*t);
        Ok((0..n)
            .map(|id| g.down.get(&id).copied().unwrap_or_default())
            .collect())
    }
    fn down(&mut self, t: &usize, id: u32) -> Result<TunnelDown> {
        Ok(self
            .generation(*t)
            .down
            .get(&id)
            .copied()
            .unwrap_or_default())
    }
    fn set_down(&mut self, t: &mut usize, id: u32, d: TunnelDown) -> Result<()> {
        self.write()?;
        self.generation(*t).down.insert(id, d);
        self.changed(*t);
        Ok(())
    }
    fn up(&mut self, t: &usize, key: &TunnelKey) -> Result<Option<TunnelInfo>> {
        Ok(self.generation(*t).up.get(key).copied())
    }
    fn set_up(&mut self, t: &mut usize, key: TunnelKey, info: TunnelInfo) -> Result<()> {
        self.write()?;
        self.generation(*t).up.insert(key, info);
        self.changed(*t);
        Ok(())
    }
    fn remove_up(&mut self, t: &mut usize, key: &TunnelKey) -> Result<()> {
        self.write()?;
        self.generation(*t).up.remove(key);
        self.changed(*t);
        Ok(())
    }
    fn bump(&mut self) -> Result<()> {
        // The model has no learning hints to invalidate.
        Ok(())
    }
    fn set_client_vlans(&mut self, vlans: &[u16]) -> Result<()> {
        self.model.set_client_vlans(vlans);
        Ok(())
    }
    fn put_static_stations(&mut self, add: &[Station], gone: &[StationKey]) -> Result<()> {
        for k in gone {
            self.model.remove_station(k);
        }
        for s in add {
            let info = StationInfo {
                flags: s.info.flags | STATION_STATIC,
                ..s.info
            };
            self.model.put_station(s.key, info);
        }
        Ok(())
    }
    fn flush_stations(
        &mut self,
        keep: &mut dyn FnMut(&StationKey, &StationInfo) -> bool,
    ) -> Result<u64> {
        let stale: Vec<StationKey> = self
            .model
            .stations()
            .iter()
            .filter(|(k, v)| !keep(k, v))
            .map(|(k, _)| *k)
            .collect();
        for k in &stale {
            self.model.remove_station(k);
        }
        Ok(stale.len() as u64)
    }
    fn reset_station_counts(&mut self, ids: &[u32]) -> Result<()> {
        for id in ids {
            self.model.reset_station_count(*id);
        }
        Ok(())
    }
    fn count_stations(
        &mut self,
        pick: &mut dyn FnMut(&StationKey, &StationInfo) -> bool,
    ) -> Result<u64> {
        Ok(self
            .model
            .stations()
            .iter()
            .filter(|(k, v)| pick(k, v))
            .count() as u64)
    }
    fn reset_tunnel_slots(&mut self, ids: &[u32]) -> Result<()> {
        // The model keeps no tunnel statistics; its station counts are the
        // slot state it has.
        self.reset_station_counts(ids)
    }
}

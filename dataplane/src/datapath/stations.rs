//! The station table: a fresh LRU hash per install, static entries,
//! learned-station counts, batch walks and the flush after a swap.

use std::os::fd::AsFd as _;

use aya::maps::{Array, ArrayOfMaps, HashMap, MapData};
use ferry_ebpf::{
    abi::{self, StationInfo, StationKey},
    hint,
};

use super::Datapath;
use crate::{
    error::{Ctx as _, Result},
    tables::Station,
};

/// `BPF_MAP_TYPE_LRU_HASH`.
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;

impl Datapath {
    /// Replaces the station table with a fresh LRU hash of `capacity`
    /// entries holding the static `stations` (learned ones start over).
    pub fn install_stations(&mut self, stations: &[Station], capacity: u32) -> Result<()> {
        if stations.len() as u64 > u64::from(capacity) {
            bail!(
                "{} static stations do not fit a table of {capacity}",
                stations.len()
            );
        }
        let obj = aya_obj::Map::new_from_params(
            BPF_MAP_TYPE_LRU_HASH,
            std::mem::size_of::<StationKey>() as u32,
            std::mem::size_of::<StationInfo>() as u32,
            capacity,
            0,
        );
        let data = MapData::create(obj, "ferry_stations", None)
            .with_ctx(|| format!("creating a station table of {capacity} entries"))?;
        let mut inner: HashMap<MapData, StationKey, StationInfo> =
            HashMap::try_from(aya::maps::Map::LruHashMap(data))?;
        put_statics(&mut inner, stations)?;
        let mut outer: ArrayOfMaps<_, HashMap<MapData, StationKey, StationInfo>> =
            ArrayOfMaps::try_from(self.map_mut(abi::MAP_STATION_TABLES)?)?;
        outer
            .set(abi::TABLE_SLOT, &inner, 0)
            .ctx("flipping the station table slot")?;
        self.bump_generation()
    }

    /// Sets the learned-station counts of tunnels `ids` to zero (their
    /// stations were flushed, or a fresh station table goes live).
    pub fn reset_station_counts(&mut self, ids: &[u32]) -> Result<()> {
        let mut m: Array<_, u64> = Array::try_from(self.map_mut(abi::MAP_STATION_COUNT)?)?;
        for id in ids {
            m.set(*id, 0, 0).ctx("resetting station count")?;
        }
        Ok(())
    }

    /// Every station in the live table.
    pub fn stations(&self) -> Result<Vec<(StationKey, StationInfo)>> {
        let outer: ArrayOfMaps<_, HashMap<MapData, StationKey, StationInfo>> =
            ArrayOfMaps::try_from(self.map(abi::MAP_STATION_TABLES)?)?;
        let inner = outer
            .get(&abi::TABLE_SLOT, 0)
            .ctx("reading station table slot")?;
        let mut v = Vec::new();
        for e in inner.iter() {
            v.push(e.ctx("reading station")?);
        }
        Ok(v)
    }

    /// Calls `f` for every station in the live table, reading it in
    /// batches (memory stays small at a million stations).
    pub fn for_each_station(&self, f: impl FnMut(&StationKey, &StationInfo)) -> Result<()> {
        let outer: ArrayOfMaps<_, MapData> =
            ArrayOfMaps::try_from(self.map(abi::MAP_STATION_TABLES)?)?;
        let inner = outer
            .get(&abi::TABLE_SLOT, 0)
            .ctx("reading station table slot")?;
        crate::batch::for_each_hash(inner.fd().as_fd(), 65_536, f).ctx("reading the station table")
    }

    /// Learned-station counts of tunnel ids `0..n`, in one read.
    pub fn station_counts(&self, n: u32) -> Result<Vec<u64>> {
        let aya::maps::Map::Array(m) = self.map(abi::MAP_STATION_COUNT)? else {
            bail!("map {} is not an array", abi::MAP_STATION_COUNT);
        };
        crate::batch::lookup_array(m.fd().as_fd(), n).ctx("reading station counts")
    }

    /// Learned stations counted against tunnel `id`'s limit.
    pub fn station_count(&self, id: u32) -> Result<u64> {
        let m: Array<_, u64> = Array::try_from(self.map(abi::MAP_STATION_COUNT)?)?;
        m.get(&id, 0).ctx("reading station count")
    }

    /// Deletes every station for which `keep` says no, from the live table;
    /// returns how many went. Only the stale keys are held in memory.
    pub fn flush_stations(
        &mut self,
        mut keep: impl FnMut(&StationKey, &StationInfo) -> bool,
    ) -> Result<u64> {
        let outer: ArrayOfMaps<_, MapData> =
            ArrayOfMaps::try_from(self.map(abi::MAP_STATION_TABLES)?)?;
        let inner = outer
            .get(&abi::TABLE_SLOT, 0)
            .ctx("reading station table slot")?;
        // Batch reads, 64 Ki entries per call: a million stations in a
        // fraction of a second, a few MiB of memory.
        let mut stale = Vec::new();
        crate::batch::for_each_hash(
            inner.fd().as_fd(),
            65_536,
            |k: &StationKey, v: &StationInfo| {
                if !keep(k, v) {
                    stale.push(*k);
                }
            },
        )
        .ctx("walking the station table")?;
        let n = crate::batch::delete(inner.fd().as_fd(), &stale).ctx("deleting stations")?;
        self.forget_hints(&stale)?;
        Ok(n as u64)
    }

    /// Writes static stations into the live table (replacing learned entries
    /// for the same client) and removes the `gone` ones.
    pub fn put_static_stations(&mut self, stations: &[Station], gone: &[StationKey]) -> Result<()> {
        let outer: ArrayOfMaps<_, HashMap<MapData, StationKey, StationInfo>> =
            ArrayOfMaps::try_from(self.map(abi::MAP_STATION_TABLES)?)?;
        let mut inner = outer
            .get(&abi::TABLE_SLOT, 0)
            .ctx("reading station table slot")?;
        for k in gone {
            // Already evicted or replaced by learning: nothing to do.
            let _ = inner.remove(k);
        }
        put_statics(&mut inner, stations)?;
        let keys: Vec<StationKey> = stations
            .iter()
            .map(|s| s.key)
            .chain(gone.iter().copied())
            .collect();
        self.forget_hints(&keys)
    }
}

/// What [`Datapath::install_synced`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Installed {
    /// New stations.
    pub added: u64,
    /// Stations moved here from another tunnel.
    pub moved: u64,
    /// Already there as sent (or static: never moved by sync).
    pub kept: u64,
}

impl Datapath {
    /// Installs stations learned by the HA peer into the live table, with
    /// the accounting the upstream program does when it learns: a new
    /// station counts against its tunnel, a moved one moves its count. A
    /// static entry is never replaced. `last_seen` is set to now (the
    /// programs' coarse monotonic clock), so a synced station ages like
    /// one learned here.
    pub fn install_synced(&mut self, stations: &[(StationKey, StationInfo)]) -> Result<Installed> {
        let now = super::groups::coarse_now_ns();
        self.map_station_counts()?;
        let Some(counts) = self.counts.as_ref() else {
            bail!("station counts not mapped");
        };
        let outer: ArrayOfMaps<_, HashMap<MapData, StationKey, StationInfo>> =
            ArrayOfMaps::try_from(self.map(abi::MAP_STATION_TABLES)?)?;
        let mut inner = outer
            .get(&abi::TABLE_SLOT, 0)
            .ctx("reading station table slot")?;
        let mut out = Installed::default();
        // Whether the next station is likely new here: a bulk into an
        // empty table and streamed learning are mostly new stations, a
        // resync or a bulk after a link flap known ones. Trying the
        // likely case first costs one syscall per station (a new one
        // used to cost a lookup and an insert).
        let mut expect_new = true;
        let mut moved = Vec::new();
        for (k, v) in stations {
            let info = StationInfo {
                flags: v.flags & !abi::STATION_STATIC,
                last_seen: now,
                ..*v
            };
            // BPF_NOEXIST: if the program learned it meanwhile, its entry
            // (and count) stands.
            if expect_new && inner.insert(k, info, 1).is_ok() {
                counts.add(info.tunnel, 1);
                out.added += 1;
                continue;
            }
            match inner.get(k, 0) {
                Ok(cur) if cur.flags & abi::STATION_STATIC != 0 => out.kept += 1,
                Ok(cur)
                    if cur.tunnel == info.tunnel
                        && cur.rid == info.rid
                        && cur.bssid == info.bssid =>
                {
                    out.kept += 1
                }
                Ok(cur) => {
                    inner.insert(k, info, 0).ctx("moving a synced station")?;
                    moved.push(*k);
                    if cur.tunnel != info.tunnel {
                        counts.add(cur.tunnel, u64::MAX);
                        counts.add(info.tunnel, 1);
                        out.moved += 1;
                    } else {
                        out.kept += 1;
                    }
                }
                Err(_) => {
                    if inner.insert(k, info, 1).is_ok() {
                        counts.add(info.tunnel, 1);
                        out.added += 1;
                    }
                    expect_new = true;
                    continue;
                }
            }
            expect_new = false;
        }
        // A hint here may still vouch for the old entry: the station's next
        // frame must reach the table (and, if it is back, move it back).
        self.forget_hints(&moved)?;
        Ok(out)
    }

    /// Clears the learning hints of `keys` after a change to their entries
    /// that the programs did not make, so each one's next frame reads the
    /// station table. One read and at most one write per key; beyond
    /// 4,096 keys a new generation is cheaper (every hint goes at once, and
    /// each talking station costs one table read).
    pub fn forget_hints(&mut self, keys: &[StationKey]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        if keys.len() > 4096 {
            return self.bump_generation();
        }
        let mut m: Array<_, hint::Bucket> = Array::try_from(self.map_mut(abi::MAP_STATION_HINTS)?)?;
        let mask = m.len().saturating_sub(1);
        for k in keys {
            let i = hint::bucket(&k.mac, k.vlan, mask);
            let mut b = m.get(&i, 0).ctx("reading a learning hint")?;
            let before = b;
            for t in &mut b {
                if hint::names(*t, &k.mac, k.vlan) {
                    *t = 0;
                }
            }
            if b != before {
                m.set(i, b, 0).ctx("clearing a learning hint")?;
            }
        }
        Ok(())
    }

    /// Maps the learned-station counts (once).
    fn map_station_counts(&mut self) -> Result<()> {
        if self.counts.is_none() {
            let aya::maps::Map::Array(m) = self.map(abi::MAP_STATION_COUNT)? else {
                bail!("map {} is not an array", abi::MAP_STATION_COUNT);
            };
            let mapped = super::counts::MappedCounts::new(m.fd().as_fd(), abi::MAX_TUNNELS)?;
            self.counts = Some(mapped);
        }
        Ok(())
    }
}

/// Writes static stations (flagged `STATION_STATIC`) into a station table.
fn put_statics(
    inner: &mut HashMap<MapData, StationKey, StationInfo>,
    stations: &[Station],
) -> Result<()> {
    for st in stations {
        let info = StationInfo {
            flags: st.info.flags | abi::STATION_STATIC,
            ..st.info
        };
        inner.insert(st.key, info, 0).ctx("adding static station")?;
    }
    Ok(())
}

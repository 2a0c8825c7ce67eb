//! The tunnel table: its two inner maps (upstream hash, downstream array)
//! built off to the side, flipped in with one outer update per direction,
//! kept as a rollback target, and edited entry by entry.

use std::os::fd::AsFd as _;

use aya::maps::{Array, ArrayOfMaps, HashMap, MapData};
use ferry_ebpf::abi::{
    self, Addr, TUNNEL_MARKER, TUNNEL_PORTS, TUNNEL_USER_FLAGS, TunnelDown, TunnelInfo, TunnelKey,
};

use super::Datapath;
use crate::{
    error::{Ctx as _, Result},
    tables::Tunnel,
};

/// `BPF_MAP_TYPE_HASH`.
const BPF_MAP_TYPE_HASH: u32 = 1;
/// `BPF_MAP_TYPE_ARRAY`.
const BPF_MAP_TYPE_ARRAY: u32 = 2;

/// A standalone map of `abi::MAX_TUNNELS` entries (an inner tunnel map).
fn new_map(kind: u32, key: usize, value: usize, name: &str) -> Result<MapData> {
    let obj = aya_obj::Map::new_from_params(kind, key as u32, value as u32, abi::MAX_TUNNELS, 0);
    MapData::create(obj, name, None).with_ctx(|| format!("creating map {name}"))
}

impl Datapath {
    /// The live downstream entries of tunnel ids `0..n`, in one read.
    pub fn tunnel_downs(&self, n: u32) -> Result<Vec<TunnelDown>> {
        let outer: ArrayOfMaps<_, MapData> =
            ArrayOfMaps::try_from(self.map(abi::MAP_TUNNELS_DOWN)?)?;
        let live = outer
            .get(&abi::TABLE_SLOT, 0)
            .ctx("reading downstream tunnel slot")?;
        crate::batch::lookup_array(live.fd().as_fd(), n).ctx("reading the downstream tunnels")
    }

    /// The live downstream entry of tunnel `id` (port learned, flags).
    pub fn tunnel_down(&self, id: u32) -> Result<TunnelDown> {
        let outer: ArrayOfMaps<_, Array<MapData, TunnelDown>> =
            ArrayOfMaps::try_from(self.map(abi::MAP_TUNNELS_DOWN)?)?;
        let inner = outer.get(&abi::TABLE_SLOT, 0).ctx("reading tunnel slot")?;
        inner.get(&id, 0).ctx("reading downstream tunnel")
    }

    /// Builds a new inner tunnel map aside and flips the outer slot to it, so
    /// every packet sees either the whole old table or the whole new one.
    pub fn install_tunnels(&mut self, tunnels: &[Tunnel]) -> Result<()> {
        let t = self.build_tunnels(tunnels)?;
        self.flip_tunnels(&t)
    }

    /// Builds the inner maps of a tunnel table off to the side; nothing the
    /// programs see changes until [`Datapath::flip_tunnels`].
    pub fn build_tunnels(&self, tunnels: &[Tunnel]) -> Result<TunnelTable> {
        if tunnels.len() > abi::MAX_TUNNELS as usize {
            bail!(
                "{} tunnels given, at most {} supported",
                tunnels.len(),
                abi::MAX_TUNNELS
            );
        }
        let entries = table_entries(tunnels)?;
        let (keys, infos): (Vec<TunnelKey>, Vec<TunnelInfo>) = entries.into_iter().unzip();
        let up = new_map(
            BPF_MAP_TYPE_HASH,
            std::mem::size_of::<TunnelKey>(),
            std::mem::size_of::<TunnelInfo>(),
            "ferry_tunnels",
        )?;
        crate::batch::update(up.fd().as_fd(), &keys, &infos).ctx("filling tunnel table")?;
        let ids: Vec<u32> = tunnels.iter().map(|t| t.info.id).collect();
        let downs: Vec<TunnelDown> = tunnels.iter().map(|t| t.down_entry()).collect();
        let down = new_map(
            BPF_MAP_TYPE_ARRAY,
            std::mem::size_of::<u32>(),
            std::mem::size_of::<TunnelDown>(),
            "ferry_tunnels_dn",
        )?;
        crate::batch::update(down.fd().as_fd(), &ids, &downs).ctx("filling downstream tunnels")?;
        Ok(TunnelTable {
            up: HashMap::try_from(aya::maps::Map::HashMap(up))?,
            down: Array::try_from(aya::maps::Map::Array(down))?,
            lookup: lookup_order(tunnels),
        })
    }

    /// Handles on the live tunnel table's inner maps (to keep it as the
    /// rollback target, or to read it).
    pub fn live_tunnels(&self) -> Result<TunnelTable> {
        let outer: ArrayOfMaps<_, HashMap<MapData, TunnelKey, TunnelInfo>> =
            ArrayOfMaps::try_from(self.map(abi::MAP_TUNNEL_TABLES)?)?;
        let up = outer
            .get(&abi::TABLE_SLOT, 0)
            .ctx("reading tunnel table slot")?;
        let outer_down: ArrayOfMaps<_, Array<MapData, TunnelDown>> =
            ArrayOfMaps::try_from(self.map(abi::MAP_TUNNELS_DOWN)?)?;
        let down = outer_down
            .get(&abi::TABLE_SLOT, 0)
            .ctx("reading downstream tunnel slot")?;
        // What the live table runs with is what the settings say.
        let lookup = self.settings()?.tunnel_lookup;
        Ok(TunnelTable { up, down, lookup })
    }

    /// Makes `t` the live tunnel table: one outer update per direction, and
    /// a new generation.
    pub fn flip_tunnels(&mut self, t: &TunnelTable) -> Result<()> {
        // Downstream first: a station learned from the new table always
        // finds its tunnel id filled in.
        let mut outer_down: ArrayOfMaps<_, Array<MapData, TunnelDown>> =
            ArrayOfMaps::try_from(self.map_mut(abi::MAP_TUNNELS_DOWN)?)?;
        outer_down
            .set(abi::TABLE_SLOT, &t.down, 0)
            .ctx("flipping the downstream tunnel slot")?;
        let mut outer: ArrayOfMaps<_, HashMap<MapData, TunnelKey, TunnelInfo>> =
            ArrayOfMaps::try_from(self.map_mut(abi::MAP_TUNNEL_TABLES)?)?;
        outer
            .set(abi::TABLE_SLOT, &t.up, 0)
            .ctx("flipping the tunnel table slot")?;
        // The order is a speed hint (both give the same answer), so writing
        // it with the generation, just after the flip, is safe.
        self.tunnel_lookup = t.lookup;
        self.bump_generation()
    }
}

/// One generation of the tunnel table: the upstream hash and the
/// downstream array, built aside and flipped in together. Holding one keeps
/// its maps alive, which is how the previous generation stays ready for a
/// rollback.
pub struct TunnelTable {
    up: HashMap<MapData, TunnelKey, TunnelInfo>,
    down: Array<MapData, TunnelDown>,
    /// `Settings::tunnel_lookup` for this table.
    lookup: u8,
}

/// The cheaper lookup order for `tunnels`: exact port first when most are
/// port-declared (each then costs one hash lookup instead of two, and each
/// any-port tunnel a missed lookup more), any port first otherwise.
pub fn lookup_order(tunnels: &[Tunnel]) -> u8 {
    let ported = tunnels.iter().filter(|t| t.key.port != 0).count();
    if ported * 2 > tunnels.len() {
        abi::LOOKUP_EXACT_FIRST
    } else {
        0
    }
}

impl TunnelTable {
    /// Every upstream entry (tunnels and derived port markers).
    pub fn entries(&self) -> Result<Vec<(TunnelKey, TunnelInfo)>> {
        let mut v = Vec::new();
        for e in self.up.iter() {
            v.push(e.ctx("reading tunnel entry")?);
        }
        Ok(v)
    }

    /// The downstream entry of tunnel `id`.
    pub fn down(&self, id: u32) -> Result<TunnelDown> {
        self.down.get(&id, 0).ctx("reading downstream tunnel")
    }

    /// The downstream entries of ids `0..n`, in one read.
    pub fn downs(&self, n: u32) -> Result<Vec<TunnelDown>> {
        let map = aya::maps::IterableMap::map(&self.down);
        crate::batch::lookup_array(map.fd().as_fd(), n).ctx("reading the downstream tunnels")
    }

    /// Rewrites the downstream entry of tunnel `id` (an edit, or a kept
    /// generation's learned port before it goes live again).
    pub fn set_down(&mut self, id: u32, d: TunnelDown) -> Result<()> {
        self.down.set(id, d, 0).ctx("writing downstream tunnel")
    }

    /// The upstream entry under `key`, if there is one.
    pub fn up(&self, key: &TunnelKey) -> Result<Option<TunnelInfo>> {
        match self.up.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e).ctx("reading tunnel entry"),
        }
    }

    /// Writes one upstream entry.
    pub fn set_up(&mut self, key: TunnelKey, info: TunnelInfo) -> Result<()> {
        self.up.insert(key, info, 0).ctx("writing tunnel entry")
    }

    /// Removes one upstream entry.
    pub fn remove_up(&mut self, key: &TunnelKey) -> Result<()> {
        self.up.remove(key).ctx("removing tunnel entry")
    }
}

/// The kernel entries for a tunnel list: each tunnel under its own key with
/// user flags only, plus the derived lookup hints. Every address that has
/// (address, port) tunnels gets `TUNNEL_PORTS` on its (address, any port)
/// entry, which is a `TUNNEL_MARKER` when no any-port tunnel exists, so the
/// program needs one hash lookup for address-only tunnels and unknown sources.
pub fn table_entries(tunnels: &[Tunnel]) -> Result<Vec<(TunnelKey, TunnelInfo)>> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut with_ports: BTreeSet<Addr> = BTreeSet::new();
    let mut out: BTreeMap<TunnelKey, TunnelInfo> = BTreeMap::new();
    for t in tunnels {
        if t.info.id >= abi::MAX_TUNNELS {
            bail!("tunnel id {} out of range", t.info.id);
        }
        if t.key.pad != 0 {
            bail!("tunnel key padding must be zero");
        }
        let info = TunnelInfo {
            flags: t.info.flags & TUNNEL_USER_FLAGS,
            pad: 0,
            ..t.info
        };
        if out.insert(t.key, info).is_some() {
            bail!("two tunnels share one key");
        }
        if t.key.port != 0 {
            with_ports.insert(t.key.addr);
        }
    }
    for addr in with_ports {
        out.entry(TunnelKey::new(addr, 0))
            .and_modify(|i| i.flags |= TUNNEL_PORTS)
            .or_insert(TunnelInfo {
                id: 0,
                vlan: 0,
                flags: TUNNEL_PORTS | TUNNEL_MARKER,
                station_limit: 0,
                group: 0,
                pad: 0,
            });
    }
    if out.len() > abi::MAX_TUNNELS as usize {
        bail!(
            "table needs {} entries (tunnels plus port markers), at most {} fit",
            out.len(),
            abi::MAX_TUNNELS
        );
    }
    Ok(out.into_iter().collect())
}

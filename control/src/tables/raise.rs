//! Raising: the running table read back from the pinned maps as plain
//! `[[tunnel]]` and `[[station]]` entries, the inverse of [`super::lower`].
//!
//! A restart without a state file it can trust (none, or one older than
//! what runs: a swap killed after its flip) adopts this table, never the
//! configuration file's: the kernel's maps are the truth. What the maps do
//! not hold is the AP names. They come from the old state file's ids where
//! it has one for the tunnel id, else from the configuration's tunnel with
//! the same address and port, else `adopted-<id>`. A name the
//! configuration declares by Session ID keeps its Session ID and is bound
//! to the address and port it runs under.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use anyhow::{Context as _, Result};
use ferry_dataplane::tables::{format_mac, key_addr};
use ferry_ebpf::abi::{
    self, DOWN_NATIVE, DOWN_NEIGHBOUR, DOWN_RADIO_MAC, DOWN_UDPLITE, STATION_BSSID, STATION_STATIC,
    TUNNEL_STANDBY, TunnelKey,
};

use super::{lower, maps::TableMaps};
use crate::config::{Config, Format, StationEntry, TunnelConfig, TunnelEntry, TunnelState};

/// The running table as entries, with the ids and bindings it runs under.
#[derive(Debug, Default)]
pub struct Running {
    /// `[[tunnel]]` entries, one per running tunnel.
    pub tunnels: Vec<TunnelEntry>,
    /// Static stations.
    pub stations: Vec<StationEntry>,
    /// Tunnel ids by AP name.
    pub ids: BTreeMap<String, u32>,
    /// Session tunnels bound to their running address and port.
    pub bound: BTreeMap<String, SocketAddr>,
    /// Tunnels named `adopted-<id>` (no name known for them).
    pub unnamed: usize,
}

/// What an old state file says about names: AP name by tunnel id, and its
/// table's entries (to check a name still fits the address it runs).
#[derive(Debug, Default)]
pub struct OldNames<'a> {
    by_id: BTreeMap<u32, &'a str>,
    entries: BTreeMap<&'a str, &'a TunnelEntry>,
}

impl<'a> OldNames<'a> {
    /// From an old state file's ids and running table.
    pub fn new(ids: &'a BTreeMap<String, u32>, table: &'a [TunnelEntry]) -> Self {
        Self {
            by_id: ids.iter().map(|(n, i)| (*i, n.as_str())).collect(),
            entries: table.iter().map(|e| (e.ap.as_str(), e)).collect(),
        }
    }

    /// The old name of tunnel `id`, unless the old table gave that name
    /// another address or port (the id was reused since the file).
    fn get(&self, id: u32, addr: IpAddr, port: u16) -> Option<String> {
        let name = *self.by_id.get(&id)?;
        let fits = match self.entries.get(name).and_then(|e| e.address.as_ref()) {
            Some(a) => {
                let p = self.entries.get(name).and_then(|e| e.port).unwrap_or(0);
                a.parse::<IpAddr>().ok() == Some(addr) && p == i64::from(port)
            }
            // A session tunnel (bound wherever its keepalives came from), or
            // no old entry to check against.
            None => true,
        };
        fits.then(|| name.to_string())
    }
}

/// Reads the live table of `maps` back as entries; `names` gives AP names
/// by tunnel id (from an old state file), `config` the rest.
pub fn running<M: TableMaps>(
    maps: &mut M,
    config: &Config,
    names: &OldNames<'_>,
) -> Result<Running> {
    let live = maps.live().context("reading the running tunnel table")?;
    let mut ups: Vec<_> = maps
        .entries(&live)?
        .into_iter()
        .filter(|(_, i)| i.flags & abi::TUNNEL_MARKER == 0)
        .collect();
    ups.sort_by_key(|(_, i)| i.id);
    // One batch read of the downstream slots, and the configuration's
    // tunnels by key and by name: a restart at 25,600 tunnels must not be
    // quadratic.
    let n = ups.last().map_or(0, |(_, i)| i.id + 1);
    let downs = maps.downs(&live, n)?;
    let by_key: BTreeMap<TunnelKey, &str> = config
        .tunnels
        .iter()
        .enumerate()
        .filter_map(|(i, t)| Some((lower::tunnel(config, i as u32, t, None)?.key, t.ap.as_str())))
        .collect();
    let by_name: BTreeMap<&str, &TunnelConfig> =
        config.tunnels.iter().map(|t| (t.ap.as_str(), t)).collect();
    let mut out = Running::default();
    let mut used = BTreeSet::new();
    for (key, info) in ups {
        let down = downs
            .get(info.id as usize)
            .copied()
            .with_context(|| format!("no downstream slot for tunnel id {}", info.id))?;
        let addr = key_addr(key.addr);
        let port = (key.port != 0).then_some(key.port);
        let name = names
            .get(info.id, addr, key.port)
            .or_else(|| by_key.get(&key).map(|n| n.to_string()))
            .filter(|n| !used.contains(n))
            .unwrap_or_else(|| {
                out.unnamed += 1;
                format!("adopted-{}", info.id)
            });
        used.insert(name.clone());
        let declared = by_name.get(name.as_str());
        let session_id = declared.and_then(|t| t.session_id.filter(|_| t.address.is_none()));
        let t = TunnelConfig {
            ap: name.clone(),
            address: session_id.is_none().then_some(addr),
            session_id,
            port: if session_id.is_some() { None } else { port },
            state: if info.flags & TUNNEL_STANDBY != 0 {
                TunnelState::Standby
            } else {
                TunnelState::Active
            },
            vlan: info.vlan,
            format: if down.flags & DOWN_NATIVE != 0 {
                Format::Dot11
            } else {
                Format::Dot3
            },
            radio_mac: (down.flags & DOWN_RADIO_MAC != 0).then_some(down.radio_mac),
            mtu: down.mtu,
            udp_lite: down.flags & DOWN_UDPLITE != 0,
            next_hop_mac: (down.flags & DOWN_NEIGHBOUR != 0).then_some(down.next_hop),
            station_limit: info.station_limit,
            // The group by its index in this configuration's [[group]]s.
            group: config.ha.as_ref().and_then(|h| {
                h.groups
                    .get(usize::from(info.group).checked_sub(1)?)
                    .map(|g| g.name.clone())
            }),
            line: 0,
            vlan_line: 0,
        };
        if session_id.is_some() {
            out.bound
                .insert(name.clone(), SocketAddr::new(addr, key.port));
        }
        out.ids.insert(name, info.id);
        out.tunnels.push(TunnelEntry::from(&t));
    }
    drop(live);
    let by_id: BTreeMap<u32, String> = out.ids.iter().map(|(n, i)| (*i, n.clone())).collect();
    let mut statics = Vec::new();
    maps.count_stations(&mut |k, v| {
        if v.flags & STATION_STATIC != 0
            && let Some(ap) = by_id.get(&v.tunnel)
        {
            statics.push(StationEntry {
                mac: format_mac(&k.mac),
                ap: ap.clone(),
                radio: Some(i64::from(v.rid)),
                bssid: (v.flags & STATION_BSSID != 0).then(|| format_mac(&v.bssid)),
            });
        }
        false
    })?;
    statics.sort_by(|a, b| a.mac.cmp(&b.mac));
    out.stations = statics;
    Ok(out)
}

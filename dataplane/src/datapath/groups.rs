//! HA group roles in the data plane: one `u64` lease per group index in
//! `GROUP_ROLES`, read once per packet by both programs: a group forwards
//! while the coarse monotonic clock is below its lease (see
//! `abi::GROUP_FOREVER`). A group flip is one aligned array write, whatever
//! the number of tunnels in the group: no table swap, no RCU grace period
//! (an outer map-in-map update waits one, 7-35 ms here).
//!
//! [`GroupRoles`] is a handle of its own on the pinned map, so the HA
//! thread flips roles and renews leases without going through the event
//! loop that owns the [`super::Datapath`]: the decision and the write are
//! one step on one thread.

use std::path::Path;

use std::os::fd::AsFd as _;

use aya::maps::{Array, ArrayOfMaps, Map, MapData, PerCpuArray};
use ferry_ebpf::abi::{self, GROUP_FOREVER, GroupStats, MAX_GROUPS, StationKey, TunnelDown};

use super::Datapath;
use crate::error::{Ctx as _, Error, Result};

/// The group role map and the group statistics, opened from their pins.
pub struct GroupRoles {
    map: Array<MapData, u64>,
    stats: PerCpuArray<MapData, GroupStats>,
}

impl GroupRoles {
    /// Opens `GROUP_ROLES` pinned under `dir` (a node's pin directory).
    pub fn open_pinned(dir: &Path) -> Result<Self> {
        let path = dir.join(abi::MAP_GROUP_ROLES);
        let data = MapData::from_pin(&path).with_ctx(|| format!("opening {}", path.display()))?;
        let spath = dir.join(abi::MAP_GROUP_STATS);
        let sdata =
            MapData::from_pin(&spath).with_ctx(|| format!("opening {}", spath.display()))?;
        Ok(Self {
            map: Array::try_from(Map::Array(data))?,
            stats: PerCpuArray::try_from(Map::PerCpuArray(sdata))?,
        })
    }

    /// Group `group`'s statistics, summed over the CPUs.
    pub fn stats(&self, group: u16) -> Result<GroupStats> {
        sum_stats(&self.stats, group)
    }

    /// Makes group `group` (1-255) forward here until `until` (the coarse
    /// monotonic clock, ns; see [`coarse_now_ns`]), or stand by (`0`).
    pub fn set_lease(&mut self, group: u16, until: u64) -> Result<()> {
        set(&mut self.map, group, until)
    }

    /// Whether group `group` forwards here now, as the kernel has it.
    pub fn active(&self, group: u16) -> Result<bool> {
        Ok(get(&self.map, group)? > coarse_now_ns())
    }
}

/// The stations of one HA group in the live tables pinned under `dir`
/// (read with batch lookups: the downstream tunnel slots for the group of
/// each tunnel id, then the station table), static ones included.
pub fn group_stations(dir: &Path, group: u16) -> Result<Vec<StationKey>> {
    let open = |name: &str| -> Result<ArrayOfMaps<MapData, MapData>> {
        let path = dir.join(name);
        let data = MapData::from_pin(&path).with_ctx(|| format!("opening {}", path.display()))?;
        Ok(ArrayOfMaps::try_from(Map::ArrayOfMaps(data))?)
    };
    let down = open(abi::MAP_TUNNELS_DOWN)?
        .get(&abi::TABLE_SLOT, 0)
        .ctx("reading the downstream tunnel slot")?;
    let slots: Vec<TunnelDown> = crate::batch::lookup_array(down.fd().as_fd(), abi::MAX_TUNNELS)
        .ctx("reading the downstream tunnels")?;
    let mine: Vec<bool> = slots
        .iter()
        .map(|t| t.flags & abi::DOWN_VALID != 0 && t.group == group)
        .collect();
    let stations = open(abi::MAP_STATION_TABLES)?
        .get(&abi::TABLE_SLOT, 0)
        .ctx("reading the station table slot")?;
    let mut out = Vec::new();
    crate::batch::for_each_hash(
        stations.fd().as_fd(),
        65_536,
        |k: &StationKey, v: &abi::StationInfo| {
            if mine.get(v.tunnel as usize) == Some(&true) {
                out.push(*k);
            }
        },
    )
    .ctx("reading the station table")?;
    Ok(out)
}

impl Datapath {
    /// Makes `group` forward here for good (`active`) or stand by (tests,
    /// replay: no HA thread renews a lease there).
    pub fn set_group_active(&mut self, group: u16, active: bool) -> Result<()> {
        self.set_group_lease(group, if active { GROUP_FOREVER } else { 0 })
    }

    /// [`GroupRoles::set_lease`] through the loaded object.
    pub fn set_group_lease(&mut self, group: u16, until: u64) -> Result<()> {
        let mut m: Array<_, u64> = Array::try_from(self.map_mut(abi::MAP_GROUP_ROLES)?)?;
        set(&mut m, group, until)
    }

    /// Group `group`'s statistics, summed over the CPUs.
    pub fn group_stats(&self, group: u16) -> Result<GroupStats> {
        let m: PerCpuArray<_, GroupStats> = PerCpuArray::try_from(self.map(abi::MAP_GROUP_STATS)?)?;
        sum_stats(&m, group)
    }

    /// Whether `group` forwards here now, as the kernel has it.
    pub fn group_active(&self, group: u16) -> Result<bool> {
        let m: Array<_, u64> = Array::try_from(self.map(abi::MAP_GROUP_ROLES)?)?;
        Ok(get(&m, group)? > coarse_now_ns())
    }
}

/// `CLOCK_MONOTONIC_COARSE` in ns: what `bpf_ktime_get_coarse_ns` reads.
pub fn coarse_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn check(group: u16) -> Result<u32> {
    let g = u32::from(group);
    if g == 0 || g >= MAX_GROUPS {
        return Err(Error::Invalid(format!(
            "group index {group} out of range 1-{}",
            MAX_GROUPS - 1
        )));
    }
    Ok(g)
}

fn sum_stats<T: std::borrow::Borrow<MapData>>(
    m: &PerCpuArray<T, GroupStats>,
    group: u16,
) -> Result<GroupStats> {
    let g = check(group)?;
    let v = m
        .get(&g, 0)
        .with_ctx(|| format!("reading the statistics of group {group}"))?;
    Ok(v.iter().fold(GroupStats::default(), |a, s| GroupStats {
        rx_packets: a.rx_packets + s.rx_packets,
        up_packets: a.up_packets + s.up_packets,
        down_packets: a.down_packets + s.down_packets,
        standby_drops: a.standby_drops + s.standby_drops,
    }))
}

fn set<T: std::borrow::BorrowMut<MapData>>(
    m: &mut Array<T, u64>,
    group: u16,
    until: u64,
) -> Result<()> {
    let g = check(group)?;
    m.set(g, until, 0)
        .with_ctx(|| format!("writing the role of group {group}"))
}

fn get<T: std::borrow::Borrow<MapData>>(m: &Array<T, u64>, group: u16) -> Result<u64> {
    let g = check(group)?;
    m.get(&g, 0)
        .with_ctx(|| format!("reading the role of group {group}"))
}

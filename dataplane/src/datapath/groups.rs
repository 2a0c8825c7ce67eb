//! HA group roles in the data plane: one `u32` per group index in
//! `GROUP_ROLES`, read once per packet by both programs. A group flip is one
//! aligned array write, whatever the number of tunnels in the group: no
//! table swap, no RCU grace period (an outer map-in-map update waits one,
//! 7-35 ms here).
//!
//! [`GroupRoles`] is a handle of its own on the pinned map, so the HA
//! thread flips roles without going through the event loop that owns the
//! [`super::Datapath`]: the decision and the write are one step on one
//! thread.

use std::path::Path;

use aya::maps::{Array, Map, MapData};
use ferry_ebpf::abi::{self, GROUP_ACTIVE, MAX_GROUPS};

use super::Datapath;
use crate::error::{Ctx as _, Error, Result};

/// The group role map, opened from its pin.
pub struct GroupRoles {
    map: Array<MapData, u32>,
}

impl GroupRoles {
    /// Opens `GROUP_ROLES` pinned under `dir` (a node's pin directory).
    pub fn open_pinned(dir: &Path) -> Result<Self> {
        let path = dir.join(abi::MAP_GROUP_ROLES);
        let data = MapData::from_pin(&path).with_ctx(|| format!("opening {}", path.display()))?;
        Ok(Self {
            map: Array::try_from(Map::Array(data))?,
        })
    }

    /// Makes group `group` (1-255) forward here (`active`) or stand by.
    pub fn set(&mut self, group: u16, active: bool) -> Result<()> {
        set(&mut self.map, group, active)
    }

    /// Whether group `group` forwards here, as the kernel has it.
    pub fn active(&self, group: u16) -> Result<bool> {
        active(&self.map, group)
    }
}

impl Datapath {
    /// [`GroupRoles::set`] through the loaded object (tests, replay).
    pub fn set_group_active(&mut self, group: u16, active: bool) -> Result<()> {
        let mut m: Array<_, u32> = Array::try_from(self.map_mut(abi::MAP_GROUP_ROLES)?)?;
        set(&mut m, group, active)
    }

    /// [`GroupRoles::active`] through the loaded object.
    pub fn group_active(&self, group: u16) -> Result<bool> {
        let m: Array<_, u32> = Array::try_from(self.map(abi::MAP_GROUP_ROLES)?)?;
        active(&m, group)
    }
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

fn set<T: std::borrow::BorrowMut<MapData>>(
    m: &mut Array<T, u32>,
    group: u16,
    active: bool,
) -> Result<()> {
    let g = check(group)?;
    let v = if active { GROUP_ACTIVE } else { 0 };
    m.set(g, v, 0)
        .with_ctx(|| format!("writing the role of group {group}"))
}

fn active<T: std::borrow::Borrow<MapData>>(m: &Array<T, u32>, group: u16) -> Result<bool> {
    let g = check(group)?;
    Ok(m.get(&g, 0)
        .with_ctx(|| format!("reading the role of group {group}"))?
        == GROUP_ACTIVE)
}

//! Tunnel ids: stable per AP name for the life of the node (and across
//! restarts, through the state file), so stations learned behind an AP
//! stay valid across swaps that keep that AP.
//!
//! An id indexes the per-tunnel arrays (statistics, station counts, the
//! downstream entry), so an id is only handed out when nothing refers to it
//! any more: not an AP of a kept generation, and not one of the `reserved`
//! ids (entries found running after a restart that no AP claims, until
//! their stations are flushed).

use std::collections::{BTreeMap, BTreeSet};

/// Tunnel id of every AP this node has a table entry for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ids {
    by_name: BTreeMap<String, u32>,
    reserved: BTreeSet<u32>,
    /// One past the highest id given (how much of the per-id arrays to
    /// read): kept, since `ferry status` asks on every call.
    end: u32,
}

impl Ids {
    /// Ids as saved before a restart.
    pub fn from_saved(by_name: BTreeMap<String, u32>) -> Self {
        Self {
            end: end_of(&by_name),
            by_name,
            reserved: BTreeSet::new(),
        }
    }

    /// One past the highest id given.
    pub fn end(&self) -> u32 {
        self.end
    }

    /// The id of AP `ap`.
    pub fn get(&self, ap: &str) -> Option<u32> {
        self.by_name.get(ap).copied()
    }

    /// Every AP's id.
    pub fn by_name(&self) -> &BTreeMap<String, u32> {
        &self.by_name
    }

    /// Gives `ap` the id `id` (found running after a restart).
    pub fn claim(&mut self, ap: &str, id: u32) {
        self.by_name.insert(ap.to_string(), id);
        self.end = self.end.max(id + 1);
    }

    /// Keeps `ids` from being handed out until [`Ids::release_reserved`].
    pub fn reserve(&mut self, ids: impl IntoIterator<Item = u32>) {
        self.reserved.extend(ids);
    }

    /// The reserved ids.
    pub fn reserved(&self) -> &BTreeSet<u32> {
        &self.reserved
    }

    /// Frees the reserved ids (whatever referred to them is gone).
    pub fn release_reserved(&mut self) {
        self.reserved.clear();
    }

    /// Gives every AP in `aps` an id: the one it has, else the lowest id
    /// that no AP, no reserved entry and nothing in `in_use` (a kept
    /// generation's ids) refers to. Returns the ids given out now: their
    /// per-tunnel slots (statistics, station count) still hold whatever
    /// their last AP left, and must be zeroed before they go live.
    pub fn assign<'a>(
        &mut self,
        aps: impl IntoIterator<Item = &'a str> + Clone,
        in_use: impl IntoIterator<Item = u32>,
    ) -> Vec<u32> {
        // The common swap keeps the same APs: nothing to allocate.
        if aps
            .clone()
            .into_iter()
            .all(|ap| self.by_name.contains_key(ap))
        {
            return Vec::new();
        }
        let mut given = Vec::new();
        let mut used: BTreeSet<u32> = self.by_name.values().copied().collect();
        used.extend(self.reserved.iter().copied());
        used.extend(in_use);
        let mut next = 0u32;
        for ap in aps {
            if self.by_name.contains_key(ap) {
                continue;
            }
            while used.contains(&next) {
                next += 1;
            }
            self.by_name.insert(ap.to_string(), next);
            used.insert(next);
            given.push(next);
            self.end = self.end.max(next + 1);
        }
        given
    }

    /// Forgets the ids of APs `keep` says no to.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.by_name.retain(|k, _| keep(k));
        self.end = end_of(&self.by_name);
    }
}

fn end_of(by_name: &BTreeMap<String, u32>) -> u32 {
    by_name.values().max().map_or(0, |m| m + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_lowest_free_and_never_reserved_ones() {
        let mut ids = Ids::default();
        ids.assign(["a", "b", "c"], []);
        assert_eq!(
            (ids.get("a"), ids.get("b"), ids.get("c")),
            (Some(0), Some(1), Some(2))
        );
        ids.retain(|ap| ap != "b");
        ids.reserve([1]);
        ids.assign(["a", "c", "d"], [3]);
        assert_eq!(
            ids.get("d"),
            Some(4),
            "1 reserved, 3 in use by a kept generation"
        );
        assert_eq!(ids.end(), 5);
        ids.release_reserved();
        ids.assign(["e"], []);
        assert_eq!(ids.get("e"), Some(1));
        assert_eq!(ids.get("a"), Some(0), "an AP keeps its id");
    }
}

//! Stations on the sync stream: finding the ones that changed (a walk of
//! the live station table, paced by its own cost) and installing the
//! peer's into the live table.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use ferry_ebpf::abi::{STATION_BSSID, STATION_STATIC, StationInfo, StationKey};
use tracing::warn;

use super::{SCAN_INTERVAL, SyncService, active_groups};
use crate::{
    config::TunnelConfig,
    ha::stream::{self, StationBodies},
    runtime::node::Node,
};

/// What was last sent for a station: its tunnel, radio and BSSID.
pub(super) type SentAs = (u32, u8, u8, [u8; 6]);

impl SyncService {
    /// Sends the stations of groups this node masters that changed since
    /// they were last sent; returns how many.
    pub(super) fn scan(&mut self, node: &mut Node) -> u64 {
        let active = active_groups(node);
        let config = &node.tables.config;
        let mut by_id: HashMap<u32, &str> = HashMap::new();
        for t in &config.tunnels {
            let g = usize::from(config.group_index(t));
            if let (Some(id), true) = (node.tables.id_of(&t.ap), active.get(g) == Some(&true)) {
                by_id.insert(id, t.ap.as_str());
            }
        }
        if by_id.is_empty() {
            // Nothing mastered here (a backup): nothing of ours to send,
            // and no walk of a table that may hold a million stations.
            return 0;
        }
        let walk = Instant::now();
        let mut changed: Vec<(&str, StationKey, SentAs)> = Vec::new();
        let sent = &self.sent;
        let r = node.dp.for_each_station(|k: &StationKey, v: &StationInfo| {
            if v.flags & STATION_STATIC != 0 {
                return;
            }
            let Some(ap) = by_id.get(&v.tunnel) else {
                return;
            };
            let now = (v.tunnel, v.rid, v.flags & STATION_BSSID, v.bssid);
            if sent.get(k) != Some(&now) {
                changed.push((ap, *k, now));
            }
        });
        if let Err(e) = r {
            warn!("HA sync: reading the station table: {e}");
            return 0;
        }
        // One record per tunnel, not one per station: the table's hash
        // order scatters a tunnel's stations.
        changed.sort_unstable_by_key(|c| c.2.0);
        let n = changed.len() as u64;
        let mut bodies = StationBodies::default();
        for (ap, k, s) in &changed {
            bodies.push(
                ap,
                &stream::Station {
                    mac: k.mac,
                    vlan: k.vlan,
                    rid: s.1,
                    bssid: (s.2 != 0).then_some(s.3),
                },
            );
        }
        let fresh: Vec<(StationKey, SentAs)> = changed.iter().map(|(_, k, s)| (*k, *s)).collect();
        for b in bodies.finish() {
            self.queue(&b);
        }
        self.sent.extend(fresh);
        self.status.stations_sent += n;
        self.status.scan_us = walk.elapsed().as_micros() as u64;
        n
    }

    /// Installs synced stations of the groups this node does not master.
    pub(super) fn install(
        &mut self,
        node: &mut Node,
        recs: Vec<(String, Vec<stream::Station>)>,
    ) -> u64 {
        let mut batch = Vec::new();
        let config = &node.tables.config;
        // A bulk message names hundreds of tunnels: look them up by name
        // in an index, not by walking 25,600 tunnels for each.
        let index: HashMap<&str, &TunnelConfig> = if recs.len() > 16 {
            config.tunnels.iter().map(|t| (t.ap.as_str(), t)).collect()
        } else {
            HashMap::new()
        };
        for (ap, list) in recs {
            let t = if index.is_empty() {
                config.tunnel_named(&ap)
            } else {
                index.get(ap.as_str()).copied()
            };
            let (Some(t), Some(id)) = (t, node.tables.id_of(&ap)) else {
                continue;
            };
            let g = config.group_index(t);
            // Mastered here: own learning is newer. A group handed over
            // and still draining is the peer's already: take its copy.
            let draining = node.ha.as_ref().is_some_and(|h| h.withheld(g));
            if g != 0 && !draining && node.dp.group_active(g).unwrap_or(false) {
                continue;
            }
            for s in list {
                batch.push((
                    StationKey {
                        mac: s.mac,
                        vlan: s.vlan,
                    },
                    StationInfo {
                        tunnel: id,
                        rid: s.rid,
                        flags: if s.bssid.is_some() { STATION_BSSID } else { 0 },
                        bssid: s.bssid.unwrap_or_default(),
                        ..Default::default()
                    },
                ));
            }
        }
        match node.dp.install_synced(&batch) {
            Ok(r) => {
                let n = r.added + r.moved + r.kept;
                self.status.stations_received += n;
                n
            }
            Err(e) => {
                warn!("HA sync: installing synced stations: {e}");
                0
            }
        }
    }
}

/// The pause after a scan that took `took`: [`SCAN_INTERVAL`], or four
/// times the walk when the table is so large that walking it every
/// interval would keep the event loop busy. Measured with `ferry-bench
/// failover --phases load`: a walk of 1,000,000 stations takes about
/// 0.4 s here; scanning back to back kept the loop busy all the time
/// (admin calls timed out, a resync waited 1.5 s for its turn). The
/// walk then costs at most a fifth of the loop, and a station learned
/// at 1,000,000 reaches the peer within about 2 s instead of 200 ms.
pub(super) fn scan_pause(took: Duration) -> Duration {
    SCAN_INTERVAL.max(took * 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_walk_pauses_four_times_as_long() {
        assert_eq!(scan_pause(Duration::from_millis(5)), SCAN_INTERVAL);
        assert_eq!(scan_pause(Duration::from_millis(50)), SCAN_INTERVAL);
        assert_eq!(
            scan_pause(Duration::from_millis(400)),
            Duration::from_millis(1600)
        );
    }
}

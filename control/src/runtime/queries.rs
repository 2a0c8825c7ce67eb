//! The typed views ([`crate::api::views`]) built from the node and the
//! kernel's maps. Reads only; a failed map read is an error, never a zero.

use std::collections::HashMap;

use anyhow::{Result, anyhow};
use ferry_dataplane::tables::format_mac;
use ferry_ebpf::abi::{self, Event, Reason};

use super::node::Node;
use crate::{
    api::views::{
        Counters, KeepaliveStatus, Liveness, StationCounts, StationRow, Stations, Status,
        TunnelCounts, TunnelKeepalive, TunnelRow, Tunnels,
    },
    config::{TunnelState, format_session_id},
};

impl Node {
    /// Liveness of tunnel `ap`'s data channel.
    pub fn liveness(&self, ap: &str) -> Liveness {
        match self.sessions.get(ap) {
            Some(s) if s.dead => Liveness::Dead,
            Some(s) if s.last_seen.is_some() => Liveness::Alive,
            _ => Liveness::Never,
        }
    }

    fn keepalive_of(&self, ap: &str) -> TunnelKeepalive {
        match self.sessions.get(ap) {
            Some(s) if s.last_seen.is_some() => TunnelKeepalive {
                state: self.liveness(ap),
                last_seen_s: s.last_seen.map(|t| t.elapsed().as_secs_f64()),
                peer: s.peer.map(|p| p.to_string()),
                keepalives: Some(s.keepalives),
            },
            _ => TunnelKeepalive {
                state: Liveness::Never,
                last_seen_s: None,
                peer: self.tables.bound(ap).map(|p| p.to_string()),
                keepalives: None,
            },
        }
    }

    /// `ferry status`.
    pub fn status(&self) -> Result<Status> {
        let cfg = &self.tables.config;
        let active = cfg
            .tunnels
            .iter()
            .filter(|t| t.state == TunnelState::Active)
            .count();
        let unbound = cfg
            .tunnels
            .iter()
            .filter(|t| t.address.is_none() && self.tables.bound(&t.ap).is_none())
            .count();
        let counts = self.dp.station_counts(self.tables.id_bound())?;
        let learned: u64 = self
            .tables
            .tables
            .tunnels
            .iter()
            .filter_map(|t| counts.get(t.info.id as usize))
            .sum();
        // Sessions holds exactly the configured tunnels (declared after
        // every change); a lookup per tunnel cost 4 ms at 26,001 tunnels.
        let (alive, dead) = self.sessions.alive_and_dead();
        let never = cfg.tunnels.len().saturating_sub(alive + dead);
        Ok(Status {
            node: cfg.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            uptime_s: self.started.elapsed().as_secs(),
            config: self.config_path.clone(),
            pin_dir: self.pin_dir.clone(),
            adopted: self.adopted,
            attached: self.attachments.views(),
            generation: self.tables.generation,
            rollback_generation: self.tables.can_roll_back(),
            tunnels: TunnelCounts {
                total: cfg.tunnels.len(),
                active,
                standby: cfg.tunnels.len() - active,
                unbound,
            },
            client_vlans: cfg.client_vlans.clone(),
            stations: StationCounts {
                learned,
                statics: cfg.stations.len(),
                capacity: cfg.station_capacity,
            },
            swaps: self.tables.swaps,
            stations_flushed: self.tables.flushed_total,
            last_change: self.tables.last.clone(),
            keepalive: KeepaliveStatus {
                counts: self.ka,
                alive,
                dead,
                never,
                dead_interval_s: cfg.dead_interval.as_secs(),
            },
            connections: self.conns,
            last_reload: self.last_reload.clone(),
        })
    }

    /// `ferry tunnels`: one batch read each for learned ports and station
    /// counts, one read per tunnel for its per-CPU statistics.
    pub fn tunnels(&self) -> Result<Tunnels> {
        let installed: HashMap<u32, &ferry_dataplane::tables::Tunnel> = self
            .tables
            .tables
            .tunnels
            .iter()
            .map(|t| (t.info.id, t))
            .collect();
        let n = self.tables.id_bound();
        let downs = self.dp.tunnel_downs(n)?;
        let counts = self.dp.station_counts(n)?;
        let mut rows = Vec::with_capacity(self.tables.config.tunnels.len());
        for t in &self.tables.config.tunnels {
            let id = self.tables.id_of(&t.ap);
            let stats = match id {
                Some(id) => Some(self.dp.tunnel_stats(id)?),
                None => None,
            };
            let live = id.and_then(|id| installed.get(&id));
            let port = match live {
                Some(l) if l.down.flags & abi::DOWN_FIXED_PORT == 0 => downs
                    .get(l.info.id as usize)
                    .map(|d| d.port)
                    .filter(|p| *p != 0),
                Some(l) => Some(l.down.port),
                None => None,
            };
            let address = t
                .address
                .or_else(|| self.tables.bound(&t.ap).map(|p| p.ip()));
            rows.push(TunnelRow {
                ap: t.ap.clone(),
                id,
                address: address.map(|a| a.to_string()),
                port: t.port,
                learned_port: if t.port.is_none() { port } else { None },
                session_id: t.session_id.as_ref().map(format_session_id),
                installed: live.is_some(),
                state: t.state,
                unlicensed: t.state == TunnelState::Active
                    && live.is_some_and(|l| l.info.flags & abi::TUNNEL_STANDBY != 0),
                vlan: t.vlan,
                format: t.format,
                stations: id.and_then(|id| counts.get(id as usize).copied()),
                rx_packets: stats.map(|s| s.rx_packets),
                up_packets: stats.map(|s| s.up_packets),
                up_bytes: stats.map(|s| s.up_bytes),
                down_packets: stats.map(|s| s.down_packets),
                down_bytes: stats.map(|s| s.down_bytes),
                keepalive: self.keepalive_of(&t.ap),
            });
        }
        Ok(Tunnels {
            generation: self.tables.generation,
            tunnels: rows,
        })
    }

    /// `ferry stations`: at most `limit` rows, optionally of one AP.
    pub fn stations(&self, ap: Option<&str>, limit: usize) -> Result<Stations> {
        let names: HashMap<u32, &str> = self
            .tables
            .config
            .tunnels
            .iter()
            .filter_map(|t| self.tables.id_of(&t.ap).map(|id| (id, t.ap.as_str())))
            .collect();
        let want = match ap {
            Some(a) => Some(
                self.tables
                    .id_of(a)
                    .ok_or_else(|| anyhow!("no tunnel {a:?}"))?,
            ),
            None => None,
        };
        let (mut total, mut matching) = (0usize, 0usize);
        let mut out = Vec::new();
        self.dp.for_each_station(|k, v| {
            total += 1;
            if want.is_some_and(|w| w != v.tunnel) {
                return;
            }
            matching += 1;
            if out.len() >= limit {
                return;
            }
            out.push(StationRow {
                mac: format_mac(&k.mac),
                vlan: k.vlan,
                ap: names.get(&v.tunnel).map(|s| s.to_string()),
                tunnel: v.tunnel,
                radio: v.rid,
                bssid: (v.flags & abi::STATION_BSSID != 0).then(|| format_mac(&v.bssid)),
                is_static: v.flags & abi::STATION_STATIC != 0,
            });
        })?;
        Ok(Stations {
            total,
            matching,
            shown: out.len(),
            stations: out,
        })
    }

    /// `ferry counters`.
    pub fn counters(&self) -> Result<Counters> {
        let c = self.dp.counters()?;
        Ok(Counters {
            reasons: Reason::ALL
                .iter()
                .map(|r| (r.name().to_string(), c.get(*r)))
                .collect(),
            events: Event::ALL
                .iter()
                .map(|e| (e.name().to_string(), c.event(*e)))
                .collect(),
            station_table_reads: c.station_reads(),
            fib_lookups: c.fib_lookups(),
            keepalive: self.ka,
        })
    }
}

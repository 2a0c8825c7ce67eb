//! The reference model: ferry's upstream transform as plain Rust on byte
//! slices. It is a second, independent implementation of the decision flow in
//! `ebpf/src/upstream.rs`, sharing only the wire layouts, so the differential
//! tests can hold the kernel program to the same verdict, reason and output
//! bytes on any input.
//!
//! Upstream flow (first match wins):
//!
//! 1. Ethernet, at most one outer tag; not IPv4/IPv6: pass. IP header not
//!    parseable: pass. Not to a local address: pass. Not UDP (IPv6: UDP or
//!    UDP-Lite) to the data port: pass. IPv4 fragment / IPv6 extension
//!    header: pass.
//! 2. IP/UDP lengths inconsistent with the frame: drop.
//! 3. CAPWAP: short, version != 0, type not 0/1 (1 = DTLS: pass), HLEN < 2
//!    or past the datagram: drop. Keepalive (K): pass. Radio MAC / Wireless
//!    info past HLEN: drop.
//! 4. Tunnel lookup (address, port) then (address, any): unknown: drop;
//!    standby: drop. Fragment (F): pass.
//! 5. T=0: inner Ethernet; T=1 (WBID 1): 802.11 data converted to 802.3.
//!    Management, EAPOL, A-MSDU: pass. Inner VLAN tag, null data, protected,
//!    control frames, bad payload: drop.
//! 6. Rewrite to DA SA 8100 TCI (EtherType | length) payload, trimmed to
//!    the datagram end; TX or redirect.

use std::collections::{BTreeMap, HashMap, HashSet};

use ferry_ebpf::{
    abi::{
        self, Action, DOWN_FIXED_PORT, DOWN_VALID, EGRESS_REDIRECT, EGRESS_TX, Event, Reason,
        STATION_BSSID, STATION_STATIC, Settings, StationInfo, StationKey, TUNNEL_STANDBY,
        TunnelDown, TunnelInfo, TunnelKey,
    },
    capwap, eth, udp,
};

use crate::{
    counters::Counters,
    datapath::action,
    tables::{Tables, addr_key, installed_settings},
};

mod downstream;
mod parse;

use parse::{arr, be16, check_optional, dot11_to_8023, ethernet_inner, rewrite};

/// What the model decided for one packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// XDP action code the program must return.
    pub action: u32,
    /// The counter the packet lands in.
    pub reason: Reason,
    /// The frame as the program must leave it.
    pub output: Vec<u8>,
    /// The tunnel the packet matched, if it got that far.
    pub tunnel: Option<u32>,
}

/// The reference model with its tables indexed.
#[derive(Clone, Debug)]
pub struct Model {
    local: Vec<abi::Addr>,
    port: u16,
    settings: Settings,
    tunnels: HashMap<TunnelKey, TunnelInfo>,
    down: HashMap<u32, TunnelDown>,
    client_vlans: HashSet<u16>,
    stations: HashMap<StationKey, StationInfo>,
    station_counts: HashMap<u32, u64>,
    events: Counters,
    /// HA groups this node masters (`GROUP_ROLES` = active); group 0 is
    /// never looked up.
    active_groups: HashSet<u16>,
    /// Set when the upstream redirect egress is populated (DEVMAP slot 0).
    pub egress_ready: bool,
    /// Set when the downstream redirect egress is populated (DEVMAP slot 1).
    pub egress_down_ready: bool,
}

/// The model's tunnel table: what the kernel keeps in the inner maps of
/// `TUNNEL_TABLES` and `TUNNELS_DOWN` (without the derived port markers,
/// which only save the program a lookup).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TunnelMaps {
    /// Upstream: (address, port or 0) to tunnel.
    pub up: HashMap<TunnelKey, TunnelInfo>,
    /// Downstream: tunnel id to encapsulation entry (as installed, valid).
    pub down: HashMap<u32, TunnelDown>,
}

/// Same bound as the program: larger lengths cannot be in one XDP buffer.
const MAX_FRAME: usize = 16_383;

impl Model {
    /// A model of the program loaded with `tables` (egress assumed ready).
    pub fn new(tables: &Tables) -> Self {
        let settings = installed_settings(tables.settings);
        Self {
            local: tables.local_addrs.iter().map(|a| addr_key(*a)).collect(),
            port: settings.data_port,
            settings,
            tunnels: tables.tunnels.iter().map(|t| (t.key, t.info)).collect(),
            down: tables
                .tunnels
                .iter()
                .map(|t| (t.info.id, t.down_entry()))
                .collect(),
            client_vlans: tables.client_vlans.iter().copied().collect(),
            stations: tables
                .stations
                .iter()
                .map(|s| {
                    let info = StationInfo {
                        flags: s.info.flags | STATION_STATIC,
                        ..s.info
                    };
                    (s.key, info)
                })
                .collect(),
            station_counts: HashMap::new(),
            events: Counters::default(),
            egress_ready: true,
            egress_down_ready: true,
            active_groups: HashSet::new(),
        }
    }

    /// The station table, sorted, with `last_seen` zeroed (time is not modelled).
    pub fn stations(&self) -> BTreeMap<StationKey, StationInfo> {
        self.stations
            .iter()
            .map(|(k, v)| (*k, StationInfo { last_seen: 0, ..*v }))
            .collect()
    }

    /// Learned stations counted against tunnel `id`'s limit.
    pub fn station_count(&self, id: u32) -> u64 {
        self.station_counts.get(&id).copied().unwrap_or(0)
    }

    /// Learning events so far.
    pub fn events(&self) -> &Counters {
        &self.events
    }

    /// The downstream entry of tunnel `id` (with any learned port).
    pub fn tunnel_down(&self, id: u32) -> Option<TunnelDown> {
        self.down.get(&id).copied()
    }

    // The control side's verbs: what `ferry run` does to the kernel's maps,
    // done to the model's, so table bookkeeping can be tested without root.

    /// The live tunnel table: upstream entries and downstream entries by id.
    pub fn tunnel_maps(&self) -> TunnelMaps {
        TunnelMaps {
            up: self.tunnels.clone(),
            down: self.down.clone(),
        }
    }

    /// Sets HA group `group`'s role as a `GROUP_ROLES` write does.
    pub fn set_group_active(&mut self, group: u16, active: bool) {
        if active {
            self.active_groups.insert(group);
        } else {
            self.active_groups.remove(&group);
        }
    }

    /// Whether a tunnel of HA group `group` forwards (group 0: no HA).
    fn group_active(&self, group: u16) -> bool {
        group == 0 || self.active_groups.contains(&group)
    }

    /// Makes `maps` the live tunnel table (a flip).
    pub fn set_tunnel_maps(&mut self, maps: TunnelMaps) {
        self.tunnels = maps.up;
        self.down = maps.down;
    }

    /// Sets the VLANs the downstream path serves.
    pub fn set_client_vlans(&mut self, vlans: &[u16]) {
        self.client_vlans = vlans.iter().copied().collect();
    }

    /// Writes one station entry as given.
    pub fn put_station(&mut self, key: StationKey, info: StationInfo) {
        self.stations.insert(key, info);
    }

    /// Deletes one station entry; whether it was there.
    pub fn remove_station(&mut self, key: &StationKey) -> bool {
        self.stations.remove(key).is_some()
    }

    /// Sets tunnel `id`'s learned-station count to zero.
    pub fn reset_station_count(&mut self, id: u32) {
        self.station_counts.remove(&id);
    }

    /// Runs the upstream transform on one frame (learning stations as the
    /// program does).
    pub fn upstream(&mut self, pkt: &[u8]) -> Outcome {
        let mut tunnel = None;
        let r = self.try_upstream(pkt, &mut tunnel);
        outcome(pkt, r, Reason::Forwarded, tunnel)
    }

    fn try_upstream(
        &mut self,
        pkt: &[u8],
        tunnel: &mut Option<u32>,
    ) -> Result<(u32, Vec<u8>), Reason> {
        let outer = self.parse_outer(pkt)?;
        let c = outer.l4 + udp::HLEN;
        let end = outer.end;
        if c + capwap::FIXED_LEN > end {
            return Err(Reason::DropCapwapShort);
        }
        let h = capwap::Header::parse(&arr(pkt, c));
        if h.version != 0 {
            return Err(Reason::DropBadVersion);
        }
        if h.kind == capwap::TYPE_DTLS {
            return Err(Reason::PassDtls);
        }
        if h.kind != capwap::TYPE_CLEAR {
            return Err(Reason::DropBadType);
        }
        let hlen = h.header_bytes();
        if h.hlen < capwap::MIN_HLEN || c + hlen > end {
            return Err(Reason::DropBadHlen);
        }
        if h.keepalive {
            return Err(Reason::PassKeepalive);
        }
        check_optional(&pkt[c..c + hlen], &h)?;

        let exact = if outer.sport != 0 {
            self.tunnels
                .get(&TunnelKey::new(outer.src, outer.sport))
                .copied()
        } else {
            None
        };
        let info = exact
            .or_else(|| self.tunnels.get(&TunnelKey::new(outer.src, 0)).copied())
            .ok_or(Reason::DropUnknownTunnel)?;
        *tunnel = Some(info.id);
        if info.flags & TUNNEL_STANDBY != 0 || !self.group_active(info.group) {
            return Err(Reason::DropStandby);
        }
        if h.fragment {
            return Err(Reason::PassCapwapFragment);
        }
        let p = c + hlen;
        let datagram = &pkt[..end];
        let inner = if h.native {
            if h.wbid != capwap::WBID_IEEE80211 {
                return Err(Reason::DropBadWbid);
            }
            dot11_to_8023(datagram, p)?
        } else {
            ethernet_inner(datagram, p)?
        };
        let action = match self.settings.egress {
            EGRESS_TX => action::TX,
            EGRESS_REDIRECT if self.egress_ready => action::REDIRECT,
            _ => return Err(Reason::DropNoEgress),
        };
        let out = rewrite(datagram, &inner, info.vlan);
        let mut sa = [0u8; 6];
        sa.copy_from_slice(&inner.dst_src[6..]);
        self.learn_station(&info, sa, h.rid, inner.bssid);
        if exact.is_none() {
            self.learn_ap_port(info.id, outer.sport);
        }
        Ok((action, out))
    }

    fn learn_station(&mut self, info: &TunnelInfo, sa: [u8; 6], rid: u8, bssid: Option<[u8; 6]>) {
        if eth::is_group(&sa) {
            return;
        }
        let key = StationKey {
            mac: sa,
            vlan: info.vlan,
        };
        let (flags, bssid) = match bssid {
            Some(b) => (STATION_BSSID, b),
            None => (0, [0; 6]),
        };
        let fresh = StationInfo {
            tunnel: info.id,
            flags,
            rid,
            bssid,
            pad: [0; 4],
            last_seen: 0,
        };
        let limit = u64::from(info.station_limit);
        if let Some(cur) = self.stations.get(&key).copied() {
            if cur.flags & STATION_STATIC != 0 {
                if cur.tunnel != info.id {
                    self.events.bump_event(Event::StationStaticKept);
                }
                return;
            }
            if cur.tunnel == info.id && cur.rid == rid && cur.flags == flags && cur.bssid == bssid {
                return;
            }
            let moved = cur.tunnel != info.id;
            if moved && self.station_count(info.id) >= limit {
                self.events.bump_event(Event::StationLimit);
                return;
            }
            self.stations.insert(key, fresh);
            if moved {
                *self.station_counts.entry(cur.tunnel).or_default() -= 1;
                *self.station_counts.entry(info.id).or_default() += 1;
                self.events.bump_event(Event::StationMoved);
            }
            return;
        }
        if self.station_count(info.id) >= limit {
            self.events.bump_event(Event::StationLimit);
            return;
        }
        self.stations.insert(key, fresh);
        *self.station_counts.entry(info.id).or_default() += 1;
        self.events.bump_event(Event::StationLearned);
    }

    fn learn_ap_port(&mut self, id: u32, sport: u16) {
        if let Some(d) = self.down.get_mut(&id)
            && d.flags & DOWN_VALID != 0
            && d.flags & DOWN_FIXED_PORT == 0
            && d.port != sport
        {
            d.port = sport;
            self.events.bump_event(Event::ApPortLearned);
        }
    }

    // One function on purpose: it follows ebpf/src/downstream.rs step by
    // step, which is what a reference model is for.
}

/// The outcome of a transform: `forwarded` on success; on a pass or drop
/// the frame comes back untouched.
fn outcome(
    pkt: &[u8],
    r: Result<(u32, Vec<u8>), Reason>,
    forwarded: Reason,
    tunnel: Option<u32>,
) -> Outcome {
    match r {
        Ok((action, output)) => Outcome {
            action,
            reason: forwarded,
            output,
            tunnel,
        },
        Err(reason) => Outcome {
            action: match reason.action() {
                Action::Pass => action::PASS,
                _ => action::DROP,
            },
            reason,
            output: pkt.to_vec(),
            tunnel,
        },
    }
}

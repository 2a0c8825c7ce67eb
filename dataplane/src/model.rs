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
        self, Action, DOWN_FIXED_PORT, DOWN_IPV6, DOWN_NATIVE, DOWN_NEIGHBOUR, DOWN_RADIO_MAC,
        DOWN_STANDBY, DOWN_UDPLITE, DOWN_VALID, EGRESS_REDIRECT, EGRESS_TX, Event, Reason,
        STATION_BSSID, STATION_STATIC, Settings, StationInfo, StationKey, TUNNEL_STANDBY,
        TunnelDown, TunnelInfo, TunnelKey,
    },
    capwap, dot11, encap, eth, ipv4, ipv6, udp, vlan,
};

use crate::{
    counters::Counters,
    datapath::action,
    tables::{Tables, addr_key, installed_settings},
};

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
        if info.flags & TUNNEL_STANDBY != 0 {
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

    /// Runs the downstream transform on one frame from the client side.
    pub fn downstream(&self, pkt: &[u8]) -> Outcome {
        let mut tunnel = None;
        let r = self.try_downstream(pkt, &mut tunnel);
        outcome(pkt, r, Reason::DownForwarded, tunnel)
    }

    // One function on purpose: it follows ebpf/src/downstream.rs step by
    // step, which is what a reference model is for.
    #[allow(clippy::too_many_lines)]
    fn try_downstream(
        &self,
        pkt: &[u8],
        tunnel: &mut Option<u32>,
    ) -> Result<(u32, Vec<u8>), Reason> {
        let kept_at = vlan::TAGGED_HLEN - 2;
        if pkt.len() < kept_at || be16(pkt, eth::ETHERTYPE) != vlan::TPID_8021Q {
            return Err(Reason::DownPassNotTagged);
        }
        let tci = be16(pkt, eth::HLEN);
        let vid = vlan::vid(tci);
        if !self.client_vlans.contains(&vid) {
            return Err(Reason::DownPassOtherVlan);
        }
        let da: [u8; 6] = arr(pkt, eth::DST);
        let sa: [u8; 6] = arr(pkt, eth::SRC);
        if eth::is_group(&da) {
            return Err(Reason::DownPassGroup);
        }
        let st = *self
            .stations
            .get(&StationKey { mac: da, vlan: vid })
            .ok_or(Reason::DownDropUnknownStation)?;
        let t = self
            .down
            .get(&st.tunnel)
            .filter(|t| t.flags & DOWN_VALID != 0)
            .ok_or(Reason::DownDropNoTunnel)?;
        if t.vlan != vid {
            return Err(Reason::DownDropNoTunnel);
        }
        if t.flags & DOWN_STANDBY != 0 {
            return Err(Reason::DownDropStandby);
        }
        if t.port == 0 {
            return Err(Reason::DownDropNoApPort);
        }
        let native = t.flags & DOWN_NATIVE != 0;
        if native && st.flags & STATION_BSSID == 0 {
            return Err(Reason::DownDropNoBssid);
        }
        let shape = encap::Shape::new(
            t.flags & DOWN_IPV6 != 0,
            t.flags & DOWN_RADIO_MAC != 0,
            native,
        );
        let payload = shape.payload_len(pkt.len());
        let ip_len = shape.ip_len(payload);
        if ip_len > usize::from(t.mtu) {
            return Err(Reason::DownPassMtu);
        }
        // The model has no FIB: it is the program with `ap_ifindex` 0.
        if t.flags & DOWN_NEIGHBOUR == 0 {
            return Err(Reason::DownDropNoNeighbour);
        }
        let action = match self.settings.egress_down {
            EGRESS_TX => action::TX,
            EGRESS_REDIRECT if self.egress_down_ready => action::REDIRECT,
            _ => return Err(Reason::DownDropNoEgress),
        };
        *tunnel = Some(st.tunnel);
        let h = encap::Headers {
            dmac: t.next_hop,
            smac: t.source_mac,
            ap: t.ap,
            local: t.local,
            sport: self.port,
            dport: t.port,
            dscp: self.settings.dscp[usize::from(vlan::pcp(tci) & 7)],
            df: self.settings.df != 0,
            udplite: t.flags & DOWN_UDPLITE != 0,
            rid: st.rid,
            radio_mac: t.radio_mac,
            da,
            sa,
            bssid: st.bssid,
        };
        let udp_payload = payload + shape.capwap_len();
        let mut out = Vec::with_capacity(eth::HLEN + ip_len);
        out.extend_from_slice(&encap::ethernet(&h, shape.ipv6));
        if shape.ipv6 {
            out.extend_from_slice(&encap::ipv6(&h, udp_payload));
        } else {
            out.extend_from_slice(&encap::ipv4(&h, udp_payload));
        }
        out.extend_from_slice(&encap::udp(&h, shape.ipv6, udp_payload));
        out.extend_from_slice(&encap::capwap(&h, &shape));
        if shape.radio_mac {
            out.extend_from_slice(&encap::radio_mac_option(&h));
        }
        if native {
            out.extend_from_slice(&encap::dot11_header(&h));
            out.extend_from_slice(&encap::SNAP_PREFIX);
        } else {
            out.extend_from_slice(&da);
            out.extend_from_slice(&sa);
        }
        out.extend_from_slice(&pkt[kept_at..]);
        if shape.ipv6 && !h.udplite {
            let l4 = eth::HLEN + ipv6::HLEN;
            let udp_len = out.len() - l4;
            let mut sum = encap::pseudo_sum_v6(&h.local, &h.ap, udp_len as u32, ipv6::NEXT_UDP);
            for w in out[l4..].chunks(2) {
                sum += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
            }
            let c = encap::fold(sum);
            let c = if c == 0 { 0xffff } else { c };
            out[l4 + udp::CHECKSUM..l4 + udp::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
        }
        Ok((action, out))
    }

    /// Whether `pkt` is addressed to this node's data port, the way the
    /// upstream program decides it (malformed or fragmented included): the
    /// frames that arrive on the AP side.
    pub fn is_data_channel(&self, pkt: &[u8]) -> bool {
        !matches!(
            self.parse_outer(pkt),
            Err(Reason::PassNotIp | Reason::PassBadIp | Reason::PassNotLocal | Reason::PassNotData)
        )
    }

    fn parse_outer(&self, pkt: &[u8]) -> Result<Outer, Reason> {
        if pkt.len() < eth::HLEN {
            return Err(Reason::PassNotIp);
        }
        let mut et = eth::ethertype(&arr(pkt, 0));
        let mut l3 = eth::HLEN;
        if vlan::is_tag(et) {
            if pkt.len() < vlan::TAGGED_HLEN {
                return Err(Reason::PassNotIp);
            }
            et = be16(pkt, eth::HLEN + 2);
            l3 = vlan::TAGGED_HLEN;
        }
        match et {
            eth::ETHERTYPE_IPV4 => self.parse_v4(pkt, l3),
            eth::ETHERTYPE_IPV6 => self.parse_v6(pkt, l3),
            _ => Err(Reason::PassNotIp),
        }
    }

    fn parse_v4(&self, pkt: &[u8], l3: usize) -> Result<Outer, Reason> {
        if pkt.len() < l3 + ipv4::MIN_HLEN {
            return Err(Reason::PassBadIp);
        }
        let ih: [u8; ipv4::MIN_HLEN] = arr(pkt, l3);
        let ihl = ipv4::header_len(&ih);
        if ipv4::version(&ih) != 4 || ihl < ipv4::MIN_HLEN {
            return Err(Reason::PassBadIp);
        }
        if !self.local.contains(&abi::v4_mapped(ipv4::dst(&ih))) {
            return Err(Reason::PassNotLocal);
        }
        if ih[ipv4::PROTO] != ipv4::PROTO_UDP {
            return Err(Reason::PassNotData);
        }
        if ipv4::is_fragment(&ih) {
            return Err(Reason::PassIpFragment);
        }
        let l4 = l3 + ihl;
        if pkt.len() < l4 + udp::HLEN {
            return Err(Reason::PassBadIp);
        }
        let uh: [u8; udp::HLEN] = arr(pkt, l4);
        if udp::dst_port(&uh) != self.port {
            return Err(Reason::PassNotData);
        }
        let total = ipv4::total_len(&ih);
        if total > MAX_FRAME || total < ihl + udp::HLEN || l3 + total > pkt.len() {
            return Err(Reason::DropBadLength);
        }
        let ip_end = l3 + total;
        let ulen = udp::len(&uh);
        if ulen < udp::HLEN || l4 + ulen > ip_end {
            return Err(Reason::DropBadLength);
        }
        Ok(Outer {
            l4,
            end: l4 + ulen,
            src: abi::v4_mapped(ipv4::src(&ih)),
            sport: udp::src_port(&uh),
        })
    }

    fn parse_v6(&self, pkt: &[u8], l3: usize) -> Result<Outer, Reason> {
        if pkt.len() < l3 + ipv6::HLEN {
            return Err(Reason::PassBadIp);
        }
        let ih: [u8; ipv6::HLEN] = arr(pkt, l3);
        if ipv6::version(&ih) != 6 {
            return Err(Reason::PassBadIp);
        }
        if !self.local.contains(&ipv6::dst(&ih)) {
            return Err(Reason::PassNotLocal);
        }
        let next = ipv6::next_header(&ih);
        if next != ipv6::NEXT_UDP && next != ipv6::NEXT_UDPLITE {
            return Err(if ipv6::is_extension(next) {
                Reason::PassIpv6Ext
            } else {
                Reason::PassNotData
            });
        }
        let l4 = l3 + ipv6::HLEN;
        if pkt.len() < l4 + udp::HLEN {
            return Err(Reason::PassBadIp);
        }
        let uh: [u8; udp::HLEN] = arr(pkt, l4);
        if udp::dst_port(&uh) != self.port {
            return Err(Reason::PassNotData);
        }
        let plen = ipv6::payload_len(&ih);
        if !(udp::HLEN..=MAX_FRAME).contains(&plen) || l4 + plen > pkt.len() {
            return Err(Reason::DropBadLength);
        }
        let ip_end = l4 + plen;
        let mut end = ip_end;
        if next == ipv6::NEXT_UDP {
            let ulen = udp::len(&uh);
            if ulen < udp::HLEN || l4 + ulen > ip_end {
                return Err(Reason::DropBadLength);
            }
            end = l4 + ulen;
        }
        Ok(Outer {
            l4,
            end,
            src: ipv6::src(&ih),
            sport: udp::src_port(&uh),
        })
    }
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

struct Outer {
    l4: usize,
    end: usize,
    src: abi::Addr,
    sport: u16,
}

/// The decapsulated frame to build.
struct Inner {
    dst_src: [u8; 12],
    pcp: u8,
    /// Payload kept after the 16-byte DA SA tag prefix: starts with the
    /// EtherType, or is the 802.3 body that follows a length field.
    rest_from: usize,
    length: Option<u16>,
    bssid: Option<[u8; 6]>,
}

/// Radio MAC and Wireless Specific Information must end inside HLEN.
fn check_optional(hdr: &[u8], h: &capwap::Header) -> Result<(), Reason> {
    let hlen = hdr.len();
    let mut o = capwap::OPTIONAL_START;
    if h.radio_mac {
        if o + 1 > hlen {
            return Err(Reason::DropBadOptional);
        }
        let l = hdr[o];
        if o + 1 + l as usize > hlen {
            return Err(Reason::DropBadOptional);
        }
        o += capwap::padded_option_len(l);
    }
    if h.wireless_info {
        if o + 1 > hlen {
            return Err(Reason::DropBadOptional);
        }
        if o + 1 + hdr[o] as usize > hlen {
            return Err(Reason::DropBadOptional);
        }
    }
    Ok(())
}

fn ethernet_inner(d: &[u8], p: usize) -> Result<Inner, Reason> {
    if p + eth::HLEN > d.len() {
        return Err(Reason::DropInnerShort);
    }
    let eh: [u8; eth::HLEN] = arr(d, p);
    let et = eth::ethertype(&eh);
    if vlan::is_tag(et) {
        return Err(Reason::DropInnerVlan);
    }
    if et == eth::ETHERTYPE_EAPOL {
        return Err(Reason::PassEapol);
    }
    Ok(Inner {
        dst_src: arr(d, p),
        pcp: 0,
        rest_from: p + eth::ETHERTYPE,
        length: None,
        bssid: None,
    })
}

fn dot11_to_8023(d: &[u8], p: usize) -> Result<Inner, Reason> {
    if p + 2 > d.len() {
        return Err(Reason::DropInnerShort);
    }
    let fc = dot11::FrameControl::parse(&arr(d, p));
    if fc.ftype == dot11::TYPE_MGMT {
        return Err(Reason::PassDot11Mgmt);
    }
    if fc.ftype != dot11::TYPE_DATA {
        return Err(Reason::DropDot11NotData);
    }
    if fc.is_null() {
        return Err(Reason::DropNullData);
    }
    if fc.protected {
        return Err(Reason::DropProtected);
    }
    let hdr = fc.header_len();
    if p + hdr > d.len() {
        return Err(Reason::DropInnerShort);
    }
    let mut pcp = 0;
    if fc.is_qos() {
        let q = d[p + fc.qos_offset()];
        if q & dot11::QOS_AMSDU != 0 {
            return Err(Reason::PassAmsdu);
        }
        pcp = dot11::user_priority(q);
    }
    let (da, sa) = fc.da_sa_offsets();
    let mut dst_src = [0u8; 12];
    dst_src[..6].copy_from_slice(&d[p + da..p + da + 6]);
    dst_src[6..].copy_from_slice(&d[p + sa..p + sa + 6]);
    let bssid = fc.bssid_offset().map(|o| arr::<6>(d, p + o));
    let body = p + hdr;
    let blen = d.len() - body;
    if blen >= dot11::SNAP_LEN && dot11::is_snap(&arr(d, body)) {
        let et = be16(d, body + 6);
        if et < eth::ETHERTYPE_MIN {
            return Err(Reason::DropBadPayload);
        }
        if vlan::is_tag(et) {
            return Err(Reason::DropInnerVlan);
        }
        if et == eth::ETHERTYPE_EAPOL {
            return Err(Reason::PassEapol);
        }
        return Ok(Inner {
            dst_src,
            pcp,
            rest_from: body + 6,
            length: None,
            bssid,
        });
    }
    if blen == 0 || blen > eth::MAX_8023_LEN {
        return Err(Reason::DropBadPayload);
    }
    Ok(Inner {
        dst_src,
        pcp,
        rest_from: body,
        length: Some(blen as u16),
        bssid,
    })
}

fn rewrite(d: &[u8], inner: &Inner, vid: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(vlan::TAGGED_HLEN + d.len() - inner.rest_from);
    out.extend_from_slice(&inner.dst_src);
    out.extend_from_slice(&vlan::tag(vlan::tci(inner.pcp, vid)));
    if let Some(len) = inner.length {
        out.extend_from_slice(&len.to_be_bytes());
    }
    out.extend_from_slice(&d[inner.rest_from..]);
    out
}

fn arr<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[off..off + N]);
    a
}

fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

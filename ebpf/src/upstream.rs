//! Upstream fast path: CAPWAP data from APs, decapsulated into the client VLAN.
//!
//! The decision flow is documented in the crate README and mirrored, branch
//! for branch, by `ferry_dataplane::model::upstream`; the differential tests
//! hold the two to the same verdict, reason and output bytes.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_ktime_get_coarse_ns, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    macros::xdp,
    programs::XdpContext,
};
use ferry_ebpf::{
    abi::{
        self, Addr, DOWN_FIXED_PORT, DOWN_VALID, EGRESS_REDIRECT, EGRESS_TX, Event, LOCAL4_INLINE,
        LOOKUP_EXACT_FIRST, Reason, STATION_BSSID, STATION_REFRESH_NS, STATION_STATIC, Settings,
        StationInfo, StationKey, TUNNEL_MARKER, TUNNEL_PORTS, TUNNEL_STANDBY, TunnelInfo,
        TunnelKey,
    },
    capwap, dot11, eth, hint, ipv4, ipv6, udp, vlan,
};

use crate::{
    maps::{
        EGRESS, LOCAL_ADDRS, STATION_HINTS, STATION_TABLES, TUNNEL_STATS, TUNNEL_TABLES,
        TUNNELS_DOWN, count_station_read, event, group_active, group_stats, settings,
        station_count, station_count_add, station_hint_mask, verdict,
    },
    packet,
};

/// Frames larger than this cannot reach a non-multibuffer XDP program; the
/// bound also keeps length arithmetic within what the verifier tracks.
const MAX_FRAME: usize = 16_383;

/// Upstream XDP entry point (AP-side interface).
#[xdp]
pub fn ferry_upstream(ctx: XdpContext) -> u32 {
    verdict(try_upstream(&ctx), Reason::Forwarded)
}

/// Where the outer transport headers put us.
struct Outer {
    /// Offset of the UDP header.
    l4: usize,
    /// Offset one past the UDP datagram (IP/UDP length, not the frame end).
    end: usize,
    /// AP address and port.
    src: Addr,
    sport: u16,
}

#[inline(always)]
fn is_local(a: &Addr) -> bool {
    LOCAL_ADDRS.get_ptr(a).is_some()
}

/// IPv4 locality: a few compares when the node has few addresses.
#[inline(always)]
fn is_local4(s: &Settings, dst: [u8; 4]) -> bool {
    let n = s.local4_count as usize;
    if n > LOCAL4_INLINE {
        return is_local(&abi::v4_mapped(dst));
    }
    let want = u32::from_ne_bytes(dst);
    let mut i = 0;
    while i < LOCAL4_INLINE {
        if i < n && u32::from_ne_bytes(s.local4[i]) == want {
            return true;
        }
        i += 1;
    }
    false
}

/// Ethernet, optional outer tag, IPv4/IPv6, UDP to our data port.
#[inline(always)]
fn parse_outer(ctx: &XdpContext, s: &Settings) -> Result<Outer, Reason> {
    let port = s.data_port;
    let eh = packet::load::<{ eth::HLEN }>(ctx, 0).ok_or(Reason::PassNotIp)?;
    let mut ethertype = eth::ethertype(&eh);
    let mut l3 = eth::HLEN;
    if vlan::is_tag(ethertype) {
        let et = packet::load::<2>(ctx, eth::HLEN + 2).ok_or(Reason::PassNotIp)?;
        ethertype = u16::from_be_bytes(et);
        l3 = vlan::TAGGED_HLEN;
    }
    if ethertype == eth::ETHERTYPE_IPV4 {
        let ih = packet::load::<{ ipv4::MIN_HLEN }>(ctx, l3).ok_or(Reason::PassBadIp)?;
        let ihl = ipv4::header_len(&ih);
        if ipv4::version(&ih) != 4 || ihl < ipv4::MIN_HLEN {
            return Err(Reason::PassBadIp);
        }
        if !is_local4(s, ipv4::dst(&ih)) {
            return Err(Reason::PassNotLocal);
        }
        if ih[ipv4::PROTO] != ipv4::PROTO_UDP {
            return Err(Reason::PassNotData);
        }
        if ipv4::is_fragment(&ih) {
            return Err(Reason::PassIpFragment);
        }
        let l4 = l3 + ihl;
        let uh = packet::load::<{ udp::HLEN }>(ctx, l4).ok_or(Reason::PassBadIp)?;
        if udp::dst_port(&uh) != port {
            return Err(Reason::PassNotData);
        }
        let total = ipv4::total_len(&ih);
        if total > MAX_FRAME || total < ihl + udp::HLEN {
            return Err(Reason::DropBadLength);
        }
        let ip_end = l3 + total;
        if ctx.data() + ip_end > ctx.data_end() {
            return Err(Reason::DropBadLength);
        }
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
    } else if ethertype == eth::ETHERTYPE_IPV6 {
        let ih = packet::load::<{ ipv6::HLEN }>(ctx, l3).ok_or(Reason::PassBadIp)?;
        if ipv6::version(&ih) != 6 {
            return Err(Reason::PassBadIp);
        }
        if !is_local(&ipv6::dst(&ih)) {
            return Err(Reason::PassNotLocal);
        }
        let next = ipv6::next_header(&ih);
        if next != ipv6::NEXT_UDP && next != ipv6::NEXT_UDPLITE {
            if ipv6::is_extension(next) {
                return Err(Reason::PassIpv6Ext);
            }
            return Err(Reason::PassNotData);
        }
        let l4 = l3 + ipv6::HLEN;
        let uh = packet::load::<{ udp::HLEN }>(ctx, l4).ok_or(Reason::PassBadIp)?;
        if udp::dst_port(&uh) != port {
            return Err(Reason::PassNotData);
        }
        let plen = ipv6::payload_len(&ih);
        if !(udp::HLEN..=MAX_FRAME).contains(&plen) {
            return Err(Reason::DropBadLength);
        }
        let ip_end = l4 + plen;
        if ctx.data() + ip_end > ctx.data_end() {
            return Err(Reason::DropBadLength);
        }
        let mut end = ip_end;
        if next == ipv6::NEXT_UDP {
            // UDP-Lite's length field is checksum coverage; only UDP's bounds the datagram.
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
    } else {
        Err(Reason::PassNotIp)
    }
}

/// The decapsulated frame to build: addresses, tag and where its tail starts.
struct Inner {
    dst_src: [u8; 12],
    pcp: u8,
    /// Offset (in the original packet) where the new 18-byte header begins;
    /// the bytes from `start + 18` (or `+ 16` when `length` is `None`) to the
    /// datagram end are kept as they are.
    start: usize,
    /// `Some(len)` writes an 802.3 length field; `None` keeps the EtherType
    /// already in place at `start + 16`.
    length: Option<u16>,
    /// BSSID from the 802.11 header, when its DS bits carry one.
    bssid: Option<[u8; 6]>,
}

#[inline(always)]
pub(crate) fn try_upstream(ctx: &XdpContext) -> Result<u32, Reason> {
    let s = settings();
    let outer = parse_outer(ctx, s)?;
    let c = outer.l4 + udp::HLEN;
    let end = outer.end;
    if c + capwap::FIXED_LEN > end {
        return Err(Reason::DropCapwapShort);
    }
    let hb = packet::load::<{ capwap::FIXED_LEN }>(ctx, c).ok_or(Reason::DropInternal)?;
    let h = capwap::Header::parse(&hb);
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
    check_optional(ctx, c, hlen, &h)?;

    let (info, exact) = lookup_tunnel(&outer, s.tunnel_lookup == LOOKUP_EXACT_FIRST)?;
    let stats = TUNNEL_STATS.get_ptr_mut(info.id);
    if let Some(st) = stats {
        // SAFETY: per-CPU slot.
        unsafe {
            (*st).rx_packets += 1;
            (*st).rx_bytes += packet::len(ctx) as u64;
        }
    }
    let gstats = group_stats(info.group);
    if !gstats.is_null() {
        // SAFETY: a non-null per-CPU slot.
        unsafe { (*gstats).rx_packets += 1 };
    }
    if info.flags & TUNNEL_STANDBY != 0 || !group_active(info.group) {
        if !gstats.is_null() {
            // SAFETY: a non-null per-CPU slot.
            unsafe { (*gstats).standby_drops += 1 };
        }
        return Err(Reason::DropStandby);
    }
    if h.fragment {
        return Err(Reason::PassCapwapFragment);
    }

    let p = c + hlen;
    let inner = if h.native {
        if h.wbid != capwap::WBID_IEEE80211 {
            return Err(Reason::DropBadWbid);
        }
        dot11_to_8023(ctx, p, end)?
    } else {
        ethernet_inner(ctx, p, end)?
    };

    // Choose the egress before touching the packet: a drop leaves it as it was.
    let action = if s.egress == EGRESS_TX {
        xdp_action::XDP_TX
    } else if s.egress == EGRESS_REDIRECT {
        EGRESS
            .redirect(abi::EGRESS_SLOT, 0)
            .map_err(|_| Reason::DropNoEgress)?
    } else {
        return Err(Reason::DropNoEgress);
    };
    rewrite(ctx, &inner, end, info.vlan)?;
    if let Some(st) = stats {
        // SAFETY: per-CPU slot.
        unsafe {
            (*st).up_packets += 1;
            (*st).up_bytes += (end - inner.start) as u64;
        }
    }
    if !gstats.is_null() {
        // SAFETY: a non-null per-CPU slot.
        unsafe { (*gstats).up_packets += 1 };
    }
    let mut sa = [0u8; 6];
    sa.copy_from_slice(&inner.dst_src[6..]);
    learn_station(s, &info, sa, h.rid, inner.bssid);
    if !exact {
        learn_ap_port(s.generation, info.id, outer.sport, stats);
    }
    Ok(action)
}

/// Learns (or refreshes) the frame's source station behind `info`'s tunnel.
/// A station whose hint vouches (same facts, this epoch) costs one bucket
/// read; otherwise one table lookup, and `last_seen` is rewritten at most
/// once per `STATION_REFRESH_NS`.
#[inline(always)]
fn learn_station(s: &Settings, info: &TunnelInfo, sa: [u8; 6], rid: u8, bssid: Option<[u8; 6]>) {
    if eth::is_group(&sa) {
        return;
    }
    let (flags, bssid) = match bssid {
        Some(b) => (STATION_BSSID, b),
        None => (0, [0; 6]),
    };
    let tag = hint::tag(
        &hint::Facts {
            mac: sa,
            vlan: info.vlan,
            tunnel: info.id,
            rid,
            flags,
            bssid,
            generation: s.generation,
        },
        s.hint_epoch,
    );
    let bucket = STATION_HINTS.get_ptr_mut(hint::bucket(&sa, info.vlan, station_hint_mask()));
    let mut seen = [0u64; hint::WAYS];
    if let Some(b) = bucket {
        // SAFETY: aligned u64s in a live array value; other CPUs store
        // whole words, so no read is torn.
        seen = unsafe { core::ptr::read_volatile(b) };
        if hint::holds(&seen, tag) {
            return;
        }
    }
    count_station_read();
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if learn_in_table(info, sa, rid, flags, bssid, now)
        && let Some(b) = bucket
    {
        let w = hint::victim(&seen, tag) & (hint::WAYS - 1);
        // SAFETY: one aligned 8-byte store into way `w` (< WAYS) of the
        // bucket.
        unsafe { core::ptr::write_volatile((b as *mut u64).add(w), tag) };
    }
}

/// The station-table half of learning; true when the table now holds this
/// station behind this tunnel as learned (so the hint may say so).
#[inline(always)]
fn learn_in_table(
    info: &TunnelInfo,
    sa: [u8; 6],
    rid: u8,
    flags: u8,
    bssid: [u8; 6],
    now: u64,
) -> bool {
    let Some(table) = STATION_TABLES.get(abi::TABLE_SLOT) else {
        return false;
    };
    let key = StationKey {
        mac: sa,
        vlan: info.vlan,
    };
    let fresh = StationInfo {
        tunnel: info.id,
        flags,
        rid,
        bssid,
        pad: [0; 4],
        last_seen: now,
    };
    if let Some(e) = table.get_ptr_mut(key) {
        // SAFETY: value pointer from a successful lookup.
        let cur = unsafe { *e };
        if cur.flags & STATION_STATIC != 0 {
            if cur.tunnel != info.id {
                event(Event::StationStaticKept);
            }
            return false;
        }
        if cur.tunnel == info.id && cur.rid == rid && cur.flags == flags && cur.bssid == bssid {
            if now.wrapping_sub(cur.last_seen) > STATION_REFRESH_NS {
                // SAFETY: one aligned u64 store into the live value.
                unsafe { (*e).last_seen = now };
            }
            return true;
        }
        let moved = cur.tunnel != info.id;
        if moved && station_count(info.id) >= u64::from(info.station_limit) {
            event(Event::StationLimit);
            return false;
        }
        // A whole-value update, so readers never see half an entry.
        if table.insert(key, fresh, 0).is_err() {
            return false;
        }
        if moved {
            station_count_add(cur.tunnel, u64::MAX);
            station_count_add(info.id, 1);
            event(Event::StationMoved);
        }
        return true;
    }
    if station_count(info.id) >= u64::from(info.station_limit) {
        event(Event::StationLimit);
        return false;
    }
    // BPF_NOEXIST: of two CPUs learning the same station, one counts it.
    if table.insert(key, fresh, 1).is_ok() {
        station_count_add(info.id, 1);
        event(Event::StationLearned);
        return true;
    }
    false
}

/// Any-port tunnels send downstream traffic to the port their data comes
/// from (APs behind NAT): remember it, writing only when it changes.
#[inline(always)]
fn learn_ap_port(generation: u32, id: u32, sport: u16, stats: Option<*mut abi::TunnelStats>) {
    // The per-CPU tunnel stats line is already hot: keep the last port there.
    let want = (u64::from(generation) << 16) | u64::from(sport);
    if let Some(st) = stats {
        // SAFETY: per-CPU slot.
        if unsafe { (*st).port_hint } == want {
            return;
        }
    }
    if let Some(st) = stats {
        // SAFETY: per-CPU slot.
        unsafe { (*st).port_hint = want };
    }
    let Some(down) = TUNNELS_DOWN
        .get(abi::TABLE_SLOT)
        .and_then(|t| t.get_ptr_mut(id))
    else {
        return;
    };
    // SAFETY: array value pointer from a successful lookup.
    unsafe {
        if (*down).flags & DOWN_VALID != 0
            && (*down).flags & DOWN_FIXED_PORT == 0
            && (*down).port != sport
        {
            (*down).port = sport;
            event(Event::ApPortLearned);
        }
    }
}

/// Radio MAC and Wireless Specific Information must end inside HLEN.
#[inline(always)]
fn check_optional(
    ctx: &XdpContext,
    c: usize,
    hlen: usize,
    h: &capwap::Header,
) -> Result<(), Reason> {
    let mut o = capwap::OPTIONAL_START;
    if h.radio_mac {
        if o + 1 > hlen {
            return Err(Reason::DropBadOptional);
        }
        // `o` and `hlen` are multiples of 4, so the whole word is inside HLEN.
        let [l, ..] = packet::load::<4>(ctx, c + o).ok_or(Reason::DropInternal)?;
        if o + 1 + l as usize > hlen {
            return Err(Reason::DropBadOptional);
        }
        o += capwap::padded_option_len(l);
    }
    if h.wireless_info {
        if o + 1 > hlen {
            return Err(Reason::DropBadOptional);
        }
        let [l, ..] = packet::load::<4>(ctx, c + o).ok_or(Reason::DropInternal)?;
        if o + 1 + l as usize > hlen {
            return Err(Reason::DropBadOptional);
        }
    }
    Ok(())
}

/// Exactly one outer lookup. Without `exact_first`, the (address, any
/// port) entry comes first: it is the tunnel itself for APs declared
/// without a port (one hash lookup), and carries `TUNNEL_PORTS` when
/// (address, port) tunnels exist, in which case the exact port is tried
/// before settling for it. With it (tables of mostly port-declared
/// tunnels, [`LOOKUP_EXACT_FIRST`]), the exact port comes first. An entry
/// with a non-zero port is always a tunnel, and a marker or `TUNNEL_PORTS`
/// exists wherever one does, so both orders find the same tunnel.
#[inline(always)]
fn lookup_tunnel(outer: &Outer, exact_first: bool) -> Result<(TunnelInfo, bool), Reason> {
    let table = TUNNEL_TABLES
        .get(abi::TABLE_SLOT)
        .ok_or(Reason::DropUnknownTunnel)?;
    // Source port 0 would find the (address, any port) entry: not exact.
    if exact_first
        && outer.sport != 0
        && let Some(e) = table.get_ptr(TunnelKey::new(outer.src, outer.sport))
    {
        // SAFETY: pointer from a successful lookup, read once.
        return Ok((unsafe { *e }, true));
    }
    let any = table
        .get_ptr(TunnelKey::new(outer.src, 0))
        .ok_or(Reason::DropUnknownTunnel)?;
    // SAFETY: pointer from a successful lookup, read once.
    let any = unsafe { *any };
    // Source port 0 would find the (address, any port) entry again.
    if !exact_first
        && any.flags & TUNNEL_PORTS != 0
        && outer.sport != 0
        && let Some(e) = table.get_ptr(TunnelKey::new(outer.src, outer.sport))
    {
        // SAFETY: as above.
        return Ok((unsafe { *e }, true));
    }
    if any.flags & TUNNEL_MARKER != 0 {
        return Err(Reason::DropUnknownTunnel);
    }
    Ok((any, false))
}

/// T=0: the payload is the client's Ethernet frame.
#[inline(always)]
fn ethernet_inner(ctx: &XdpContext, p: usize, end: usize) -> Result<Inner, Reason> {
    if p + eth::HLEN > end {
        return Err(Reason::DropInnerShort);
    }
    let eh = packet::load::<{ eth::HLEN }>(ctx, p).ok_or(Reason::DropInternal)?;
    let et = eth::ethertype(&eh);
    if vlan::is_tag(et) {
        return Err(Reason::DropInnerVlan);
    }
    if et == eth::ETHERTYPE_EAPOL {
        return Err(Reason::PassEapol);
    }
    let mut dst_src = [0u8; 12];
    dst_src.copy_from_slice(&eh[..12]);
    Ok(Inner {
        dst_src,
        pcp: 0,
        start: p - vlan::TAG_LEN,
        length: None,
        bssid: None,
    })
}

/// T=1: an 802.11 frame, converted to 802.3.
#[inline(always)]
fn dot11_to_8023(ctx: &XdpContext, p: usize, end: usize) -> Result<Inner, Reason> {
    if p + 2 > end {
        return Err(Reason::DropInnerShort);
    }
    let fcb = packet::load::<2>(ctx, p).ok_or(Reason::DropInternal)?;
    let fc = dot11::FrameControl::parse(&fcb);
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
    if p + hdr > end {
        return Err(Reason::DropInnerShort);
    }
    let mut pcp = 0;
    if fc.is_qos() {
        let [q, _] = packet::load::<2>(ctx, p + fc.qos_offset()).ok_or(Reason::DropInternal)?;
        if q & dot11::QOS_AMSDU != 0 {
            return Err(Reason::PassAmsdu);
        }
        pcp = dot11::user_priority(q);
    }
    let (da_off, sa_off) = fc.da_sa_offsets();
    let da = packet::load::<{ eth::ADDR_LEN }>(ctx, p + da_off).ok_or(Reason::DropInternal)?;
    let sa = packet::load::<{ eth::ADDR_LEN }>(ctx, p + sa_off).ok_or(Reason::DropInternal)?;
    let mut dst_src = [0u8; 12];
    dst_src[..6].copy_from_slice(&da);
    dst_src[6..].copy_from_slice(&sa);
    let bssid = match fc.bssid_offset() {
        Some(o) => Some(packet::load::<{ eth::ADDR_LEN }>(ctx, p + o).ok_or(Reason::DropInternal)?),
        None => None,
    };

    let body = p + hdr;
    let blen = end - body;
    if blen >= dot11::SNAP_LEN {
        let snap = packet::load::<{ dot11::SNAP_LEN }>(ctx, body).ok_or(Reason::DropInternal)?;
        let llc = [snap[0], snap[1], snap[2], snap[3], snap[4], snap[5]];
        if dot11::is_snap(&llc) {
            let et = u16::from_be_bytes([snap[6], snap[7]]);
            if et < eth::ETHERTYPE_MIN {
                return Err(Reason::DropBadPayload);
            }
            if vlan::is_tag(et) {
                return Err(Reason::DropInnerVlan);
            }
            if et == eth::ETHERTYPE_EAPOL {
                return Err(Reason::PassEapol);
            }
            // Keep the SNAP EtherType in place: the new header ends right on it.
            return Ok(Inner {
                dst_src,
                pcp,
                start: body + dot11::SNAP_LEN - vlan::TAGGED_HLEN,
                length: None,
                bssid,
            });
        }
    }
    if blen == 0 || blen > eth::MAX_8023_LEN {
        return Err(Reason::DropBadPayload);
    }
    Ok(Inner {
        dst_src,
        pcp,
        start: body - vlan::TAGGED_HLEN,
        length: Some(blen as u16),
        bssid,
    })
}

/// Moves the packet start to `inner.start`, trims anything past the datagram
/// end (Ethernet padding) and writes addresses, tag and (if any) length.
#[inline(always)]
fn rewrite(ctx: &XdpContext, inner: &Inner, end: usize, vid: u16) -> Result<(), Reason> {
    let trailing = packet::len(ctx) as i64 - end as i64;
    if trailing > 0 {
        // SAFETY: helper call on our own context.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, -(trailing as i32)) } != 0 {
            return Err(Reason::DropInternal);
        }
    }
    // SAFETY: as above; `start` lies inside the packet.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, inner.start as i32) } != 0 {
        return Err(Reason::DropInternal);
    }
    let tag = vlan::tag(vlan::tci(inner.pcp, vid));
    let d = &inner.dst_src;
    let hdr = [
        d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8], d[9], d[10], d[11], tag[0], tag[1],
        tag[2], tag[3],
    ];
    packet::store(ctx, 0, &hdr).ok_or(Reason::DropInternal)?;
    if let Some(len) = inner.length {
        packet::store(ctx, vlan::TAGGED_HLEN - 2, &len.to_be_bytes())
            .ok_or(Reason::DropInternal)?;
    }
    Ok(())
}

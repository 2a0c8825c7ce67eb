//! Downstream fast path: client-VLAN frames encapsulated down the tunnel of
//! the AP their destination station sits behind.
//!
//! Mirrored branch for branch by `ferry_dataplane::model::Model::downstream`.

use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibParams, xdp_action},
    helpers::{bpf_fib_lookup, bpf_ktime_get_coarse_ns, bpf_xdp_adjust_head},
    macros::xdp,
    programs::XdpContext,
};
use ferry_ebpf::{
    abi::{
        self, DOWN_IPV6, DOWN_NATIVE, DOWN_NEIGHBOUR, DOWN_RADIO_MAC, DOWN_STANDBY, DOWN_UDPLITE,
        DOWN_VALID, EGRESS_REDIRECT, EGRESS_TX, NextHop, Reason, STATION_BSSID, Settings,
        StationInfo, StationKey, TunnelDown,
    },
    capwap, dot11, encap, eth, ipv4, ipv6, udp, vlan,
};

use crate::{
    maps::{
        CLIENT_VLANS, EGRESS, NEXT_HOPS, STATION_TABLES, TUNNEL_STATS, TUNNELS_DOWN,
        count_fib_lookup, group_active, group_stats, settings, verdict,
    },
    packet,
};

/// `BPF_FIB_LOOKUP_OUTPUT`: route as a locally originated packet (the AC
/// is the tunnel's source), with `ifindex` as the output device.
const FIB_OUTPUT: u32 = 2;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Downstream XDP entry point (client-side interface).
#[xdp]
pub fn ferry_downstream(ctx: XdpContext) -> u32 {
    verdict(try_downstream(&ctx), Reason::DownForwarded)
}

#[inline(always)]
pub(crate) fn try_downstream(ctx: &XdpContext) -> Result<u32, Reason> {
    let s = settings();
    // Read before the tunnel entry: user space writes a new table before
    // the new generation, so an answer cached under a generation was
    // resolved from that generation's table or a later one.
    // SAFETY: a plain aligned read of a settings field.
    let nh_generation = unsafe { core::ptr::read_volatile(&s.next_hop_generation) };
    let h = packet::load::<{ vlan::TAGGED_HLEN - 2 }>(ctx, 0).ok_or(Reason::DownPassNotTagged)?;
    if u16::from_be_bytes([h[12], h[13]]) != vlan::TPID_8021Q {
        return Err(Reason::DownPassNotTagged);
    }
    let tci = u16::from_be_bytes([h[14], h[15]]);
    let vid = vlan::vid(tci);
    match CLIENT_VLANS.get(u32::from(vid)) {
        Some(1) => {}
        _ => return Err(Reason::DownPassOtherVlan),
    }
    let mut da = [0u8; 6];
    da.copy_from_slice(&h[..6]);
    let mut sa = [0u8; 6];
    sa.copy_from_slice(&h[6..12]);
    if eth::is_group(&da) {
        return Err(Reason::DownPassGroup);
    }
    let st = lookup_station(da, vid)?;
    let t = lookup_tunnel(st.tunnel)?;
    if t.vlan != vid {
        return Err(Reason::DownDropNoTunnel);
    }
    if t.flags & DOWN_STANDBY != 0 || !group_active(t.group) {
        let g = group_stats(t.group);
        if !g.is_null() {
            // SAFETY: a non-null per-CPU slot.
            unsafe { (*g).standby_drops += 1 };
        }
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
    let frame_len = packet::len(ctx);
    let payload = shape.payload_len(frame_len);
    let ip_len = shape.ip_len(payload);
    if ip_len > usize::from(t.mtu) {
        return Err(Reason::DownPassMtu);
    }
    let (dmac, smac) = next_hop(ctx, s, t, st.tunnel, nh_generation)?;
    let action = if s.egress_down == EGRESS_TX {
        xdp_action::XDP_TX
    } else if s.egress_down == EGRESS_REDIRECT {
        EGRESS
            .redirect(abi::EGRESS_AP_SLOT, 0)
            .map_err(|_| Reason::DownDropNoEgress)?
    } else {
        return Err(Reason::DownDropNoEgress);
    };

    // Grow the head: the EtherType at offset 16 stays where it is and
    // everything before it is rebuilt.
    let grow = shape.prefix_len() as i32 - vlan::TAGGED_HLEN as i32 + 2;
    // SAFETY: helper on our own context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -grow) } != 0 {
        return Err(Reason::DownDropInternal);
    }
    let hdr = encap::Headers {
        dmac,
        smac,
        ap: t.ap,
        local: t.local,
        sport: s.data_port,
        dport: t.port,
        dscp: s.dscp[usize::from(vlan::pcp(tci) & 7)],
        df: s.df != 0,
        udplite: t.flags & DOWN_UDPLITE != 0,
        rid: st.rid,
        radio_mac: t.radio_mac,
        da,
        sa,
        bssid: st.bssid,
    };
    write_headers(ctx, &shape, &hdr, payload)?;
    if shape.ipv6 && !hdr.udplite {
        udp6_full_checksum(ctx, &hdr, ip_len - ipv6::HLEN)?;
    }
    if let Some(stats) = TUNNEL_STATS.get_ptr_mut(st.tunnel) {
        // SAFETY: per-CPU slot.
        unsafe {
            (*stats).down_packets += 1;
            (*stats).down_bytes += (eth::HLEN + ip_len) as u64;
        }
    }
    // Looked up here, not held from the standby check: one pointer less
    // live across the encapsulation.
    let g = group_stats(t.group);
    if !g.is_null() {
        // SAFETY: a non-null per-CPU slot.
        unsafe { (*g).down_packets += 1 };
    }
    Ok(action)
}

#[inline(always)]
fn lookup_station(mac: [u8; 6], vlan: u16) -> Result<StationInfo, Reason> {
    let table = STATION_TABLES
        .get(abi::TABLE_SLOT)
        .ok_or(Reason::DownDropUnknownStation)?;
    let e = table
        .get_ptr(StationKey { mac, vlan })
        .ok_or(Reason::DownDropUnknownStation)?;
    // SAFETY: value pointer from a successful lookup, read once.
    Ok(unsafe { *e })
}

/// A reference into the array value: array slots are stable, and copying
/// 64 bytes would cost stack the program does not have to spare.
#[inline(always)]
fn lookup_tunnel(id: u32) -> Result<&'static TunnelDown, Reason> {
    let t = TUNNELS_DOWN
        .get(abi::TABLE_SLOT)
        .and_then(|a| a.get(id))
        .ok_or(Reason::DownDropNoTunnel)?;
    if t.flags & DOWN_VALID == 0 {
        return Err(Reason::DownDropNoTunnel);
    }
    Ok(t)
}

/// Next-hop and source MAC: this CPU's cached answer for the tunnel while
/// it is current (same next-hop generation, same AP address, and user
/// space renewed the cache's lease), else [`resolve`]'s, cached. User
/// space starts a new generation whenever a FIB answer may change
/// (routes, neighbours, addresses, links, tables), so the cache answers
/// what the FIB would. The lease is checked on every
/// [`abi::NEXT_HOP_LEASE_CHECK`]th use of an entry, not every frame: the
/// clock read was 5.5% of the program's samples (bench/RESULTS.md, "What
/// is left in the programs"). Without a `ferry run` renewing the lease,
/// an entry is looked up again every that many frames.
#[inline(always)]
fn next_hop(
    ctx: &XdpContext,
    s: &Settings,
    t: &TunnelDown,
    id: u32,
    generation: u32,
) -> Result<([u8; 6], [u8; 6]), Reason> {
    if s.ap_ifindex == 0 {
        return neighbour(t);
    }
    let Some(c) = NEXT_HOPS.get_ptr_mut(id) else {
        return resolve(ctx, s, t);
    };
    let ap = t.ap_words();
    // SAFETY: a per-CPU slot: only this CPU touches it while we run.
    let e = unsafe { &mut *c };
    if e.generation == generation && e.ap == ap {
        e.uses = e.uses.wrapping_add(1);
        // SAFETY: a helper without arguments.
        if e.uses % abi::NEXT_HOP_LEASE_CHECK != 0
            || unsafe { bpf_ktime_get_coarse_ns() } < s.next_hop_until
        {
            return Ok((e.dmac, e.smac));
        }
    }
    let (dmac, smac) = resolve(ctx, s, t)?;
    *e = NextHop {
        ap,
        dmac,
        smac,
        generation,
        uses: 0,
        pad: 0,
    };
    Ok((dmac, smac))
}

/// The next hop from the kernel FIB (as a locally originated packet out
/// of the AP-side interface), else the neighbour the control side
/// configured for the tunnel. The kernel only answers for an AP-side
/// interface with IP forwarding enabled (`net.ipv4.conf.<if>.forwarding`),
/// even for output lookups. Out of line so its 64-byte parameter block
/// does not share the caller's stack frame.
#[inline(never)]
fn resolve(ctx: &XdpContext, s: &Settings, t: &TunnelDown) -> Result<([u8; 6], [u8; 6]), Reason> {
    count_fib_lookup();
    // SAFETY: all-zero is a valid bpf_fib_lookup.
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    p.ifindex = s.ap_ifindex;
    if t.flags & DOWN_IPV6 != 0 {
        p.family = AF_INET6;
        // SAFETY: writing plain arrays into the address unions.
        unsafe {
            p.__bindgen_anon_3.ipv6_src = core::mem::transmute::<[u8; 16], [u32; 4]>(t.local);
            p.__bindgen_anon_4.ipv6_dst = core::mem::transmute::<[u8; 16], [u32; 4]>(t.ap);
        }
    } else {
        p.family = AF_INET;
        p.__bindgen_anon_3.ipv4_src =
            u32::from_ne_bytes([t.local[12], t.local[13], t.local[14], t.local[15]]);
        p.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes([t.ap[12], t.ap[13], t.ap[14], t.ap[15]]);
    }
    // SAFETY: params live on our stack for the call.
    let r = unsafe {
        bpf_fib_lookup(
            ctx.ctx.cast(),
            &mut p,
            core::mem::size_of::<FibParams>() as i32,
            FIB_OUTPUT,
        )
    };
    if r == 0 {
        return Ok((p.dmac, p.smac));
    }
    neighbour(t)
}

/// The neighbour configured for the tunnel, if any.
#[inline(always)]
fn neighbour(t: &TunnelDown) -> Result<([u8; 6], [u8; 6]), Reason> {
    if t.flags & DOWN_NEIGHBOUR != 0 {
        return Ok((t.next_hop, t.source_mac));
    }
    Err(Reason::DownDropNoNeighbour)
}

/// Writes every header in front of the kept EtherType (out of line: the
/// header arrays get a stack frame of their own).
#[inline(never)]
fn write_headers(
    ctx: &XdpContext,
    shape: &encap::Shape,
    h: &encap::Headers,
    payload: usize,
) -> Result<(), Reason> {
    let e = Reason::DownDropInternal;
    packet::store(ctx, 0, &encap::ethernet(h, shape.ipv6)).ok_or(e)?;
    let mut o = eth::HLEN;
    if shape.ipv6 {
        packet::store(ctx, o, &encap::ipv6(h, payload + shape.capwap_len())).ok_or(e)?;
        o += ipv6::HLEN;
    } else {
        packet::store(ctx, o, &encap::ipv4(h, payload + shape.capwap_len())).ok_or(e)?;
        o += ipv4::MIN_HLEN;
    }
    packet::store(
        ctx,
        o,
        &encap::udp(h, shape.ipv6, payload + shape.capwap_len()),
    )
    .ok_or(e)?;
    o += udp::HLEN;
    packet::store(ctx, o, &encap::capwap(h, shape)).ok_or(e)?;
    o += capwap::FIXED_LEN;
    if shape.radio_mac {
        packet::store(ctx, o, &encap::radio_mac_option(h)).ok_or(e)?;
        o += encap::RADIO_MAC_OPTION_LEN;
    }
    if shape.native {
        packet::store(ctx, o, &encap::dot11_header(h)).ok_or(e)?;
        o += dot11::BASE_HLEN;
        packet::store(ctx, o, &encap::SNAP_PREFIX).ok_or(e)?;
    } else {
        let mut ds = [0u8; 12];
        ds[..6].copy_from_slice(&h.da);
        ds[6..].copy_from_slice(&h.sa);
        packet::store(ctx, o, &ds).ok_or(e)?;
    }
    Ok(())
}

/// Most 16-bit words the plain-UDP-over-IPv6 checksum loop reads: a
/// datagram of up to 1,460 bytes (MTU 1500); config refuses larger MTUs
/// for such tunnels.
const UDP6_MAX_WORDS: usize = 730;

/// UDP over IPv6 needs a checksum over the whole datagram (RFC 8200 §8.1).
#[inline(never)]
fn udp6_full_checksum(ctx: &XdpContext, h: &encap::Headers, udp_len: usize) -> Result<(), Reason> {
    // The MTU check already bounds this; the verifier needs to see it here.
    if !(udp::HLEN..=2 * UDP6_MAX_WORDS).contains(&udp_len) {
        return Err(Reason::DownDropInternal);
    }
    let l4 = eth::HLEN + ipv6::HLEN;
    let mut sum = encap::pseudo_sum_v6(&h.local, &h.ap, udp_len as u32, ipv6::NEXT_UDP);
    let words = udp_len / 2;
    let mut i = 0;
    while i < UDP6_MAX_WORDS {
        if i >= words {
            break;
        }
        let w = packet::load::<2>(ctx, l4 + 2 * i).ok_or(Reason::DownDropInternal)?;
        sum += u32::from(u16::from_be_bytes(w));
        i += 1;
    }
    if udp_len % 2 == 1 {
        // The odd last byte is padded with zero; read it with the byte before.
        let w = packet::load::<2>(ctx, l4 + udp_len - 2).ok_or(Reason::DownDropInternal)?;
        sum += u32::from(w[1]) << 8;
    }
    let c = encap::fold(sum);
    let c = if c == 0 { 0xffff } else { c };
    packet::store(ctx, l4 + udp::CHECKSUM, &c.to_be_bytes()).ok_or(Reason::DownDropInternal)?;
    Ok(())
}

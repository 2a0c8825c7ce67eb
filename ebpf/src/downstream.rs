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
        self, Addr, DOWN_IPV6, DOWN_NATIVE, DOWN_NEIGHBOUR, DOWN_RADIO_MAC, DOWN_STANDBY,
        DOWN_UDPLITE, DOWN_VALID, EGRESS_REDIRECT, EGRESS_TX, Reason, STATION_BSSID, Settings,
        StationInfo, StationKey, TunnelDown, TunnelHeaders,
    },
    dot11, encap, eth, ipv6, udp, vlan,
};

use crate::{
    maps::{
        CLIENT_VLANS, EGRESS, STATION_TABLES, TUNNEL_HEADERS, TUNNEL_STATS, TUNNELS_DOWN,
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
    let tag = packet::load::<4>(ctx, 2 * eth::ADDR_LEN).ok_or(Reason::DownPassNotTagged)?;
    if u16::from_be_bytes([tag[0], tag[1]]) != vlan::TPID_8021Q {
        return Err(Reason::DownPassNotTagged);
    }
    let tci = u16::from_be_bytes([tag[2], tag[3]]);
    let vid = vlan::vid(tci);
    match CLIENT_VLANS.get(u32::from(vid)) {
        Some(1) => {}
        _ => return Err(Reason::DownPassOtherVlan),
    }
    let key = station_key(ctx, vid).ok_or(Reason::DownPassNotTagged)?;
    if eth::is_group(&key.mac) {
        return Err(Reason::DownPassGroup);
    }
    let st = lookup_station(key)?;
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
    // What picks the shape and the headers, read once: a session binding
    // rewrites the entry in place, and the frame's shape, the cached
    // headers and their stamp must all come from the same entry.
    // SAFETY: plain aligned reads of the entry's fields.
    let flags = unsafe { core::ptr::read_volatile(&t.flags) };
    let ap = unsafe { core::ptr::read_volatile(&t.ap_words()) };
    let shape = shape(flags);
    if shape.native && st.flags & STATION_BSSID == 0 {
        return Err(Reason::DownDropNoBssid);
    }
    let frame_len = packet::len(ctx);
    let payload = shape.payload_len(frame_len);
    let ip_len = shape.ip_len(payload);
    if ip_len > usize::from(t.mtu) {
        return Err(Reason::DownPassMtu);
    }
    let want = Stamp {
        generation: nh_generation,
        ap,
        flags,
    };
    let outer = tunnel_headers(ctx, s, t, st.tunnel, &want)?;
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
    let grow = shape.prefix_len() - (vlan::TAGGED_HLEN - 2);
    // SAFETY: helper on our own context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(grow as i32)) } != 0 {
        return Err(Reason::DownDropInternal);
    }
    let lite = flags & DOWN_UDPLITE != 0;
    let w = Write {
        shape,
        lite,
        frame: encap::Frame {
            dscp: s.dscp[usize::from(vlan::pcp(tci) & 7)],
            dport: t.port,
            rid: st.rid,
            udp_payload: payload + shape.capwap_len(),
        },
        grow,
        bssid: st.bssid,
    };
    write_headers(ctx, outer, &w)?;
    if shape.ipv6 && !lite {
        // The address the headers were built for, not a second read.
        // SAFETY: two u64 words are 16 bytes, and every byte pattern is an
        // address.
        let ap: Addr = unsafe { core::mem::transmute(ap) };
        udp6_full_checksum(ctx, &t.local, &ap, ip_len - ipv6::HLEN)?;
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

/// The station key of the frame's destination in `vid`: the eight bytes
/// at the head (the destination and the source's first two) read as one
/// word, the last two replaced by the VLAN. Byte by byte, the key took
/// about 40 instructions (bench/RESULTS.md, "Outer headers built once per
/// tunnel").
#[inline(always)]
fn station_key(ctx: &XdpContext, vid: u16) -> Option<StationKey> {
    const _: () = assert!(core::mem::size_of::<StationKey>() == 8);
    const _: () = assert!(core::mem::offset_of!(StationKey, vlan) == eth::ADDR_LEN);
    let mut w = encap::Aligned([0u8; 8]);
    packet::load_aligned(ctx, 0, &mut w)?;
    // SAFETY: StationKey is 8 bytes of plain integers with `mac` first;
    // every bit pattern is valid.
    let mut key: StationKey = unsafe { core::mem::transmute(w.0) };
    key.vlan = vid;
    Some(key)
}

#[inline(always)]
fn lookup_station(key: StationKey) -> Result<StationInfo, Reason> {
    let table = STATION_TABLES
        .get(abi::TABLE_SLOT)
        .ok_or(Reason::DownDropUnknownStation)?;
    let e = table.get_ptr(key).ok_or(Reason::DownDropUnknownStation)?;
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

/// This CPU's outer headers for the tunnel while they are current (same
/// next-hop generation, AP address and flags as `want`, and user space
/// renewed the cache's lease), else built again from [`resolve`]'s next hop by
/// [`build`]. User space starts a new generation whenever a FIB answer or
/// an input of the headers may change (routes, neighbours, addresses,
/// links, tables, settings), so the cache holds what a build would. The
/// lease is checked on every [`abi::NEXT_HOP_LEASE_CHECK`]th use of an
/// entry, not every frame: the clock read was 5.5% of the program's
/// samples (bench/RESULTS.md, "What is left in the programs"). Without a
/// `ferry run` renewing the lease, an entry is built again every that many
/// frames.
#[inline(always)]
fn tunnel_headers(
    ctx: &XdpContext,
    s: &Settings,
    t: &TunnelDown,
    id: u32,
    want: &Stamp,
) -> Result<&'static TunnelHeaders, Reason> {
    // Never misses: tunnel ids index arrays of MAX_TUNNELS entries.
    let c = TUNNEL_HEADERS
        .get_ptr_mut(id)
        .ok_or(Reason::DownDropInternal)?;
    // SAFETY: a per-CPU slot: only this CPU touches it while we run.
    let e = unsafe { &mut *c };
    if e.generation == want.generation && e.ap == want.ap && e.flags == want.flags {
        e.uses = e.uses.wrapping_add(1);
        // SAFETY: a helper without arguments.
        if e.uses % abi::NEXT_HOP_LEASE_CHECK != 0
            || unsafe { bpf_ktime_get_coarse_ns() } < s.next_hop_until
        {
            return Ok(e);
        }
    }
    let (dmac, smac) = resolve(ctx, s, t, want)?;
    // Stamped with what the frame read, and built from the stamp: a
    // binding that moves the tunnel meanwhile fails the next frame's
    // check instead of leaving headers under a stamp they do not match.
    e.ap = want.ap;
    e.flags = want.flags;
    build(e, s, t, dmac, smac);
    e.generation = want.generation;
    e.uses = 0;
    Ok(e)
}

/// What a cache entry must carry to be used for a frame.
struct Stamp {
    /// `Settings::next_hop_generation`, read before the tunnel entry.
    generation: u32,
    /// The tunnel's AP address, as [`TunnelDown::ap_words`].
    ap: [u64; 2],
    /// The tunnel's `DOWN_*` flags.
    flags: u16,
}

/// Builds the tunnel's outer headers into its cache entry, for the AP
/// address and flags it is stamped with (out of line: the header arrays
/// get a stack frame of their own, and misses are rare).
#[inline(never)]
fn build(e: &mut TunnelHeaders, s: &Settings, t: &TunnelDown, dmac: [u8; 6], smac: [u8; 6]) {
    // SAFETY: two u64 words are 16 bytes, and every byte pattern is an
    // address.
    let ap: Addr = unsafe { core::mem::transmute(e.ap) };
    let h = encap::Headers {
        dmac,
        smac,
        ap,
        local: t.local,
        sport: s.data_port,
        dport: 0,
        dscp: 0,
        df: s.df != 0,
        udplite: e.flags & DOWN_UDPLITE != 0,
        rid: 0,
        radio_mac: t.radio_mac,
        da: [0; 6],
        sa: [0; 6],
        bssid: [0; 6],
    };
    e.outer.build(&h, &shape(e.flags));
}

/// The headers the frames of a tunnel with `flags` carry.
#[inline(always)]
fn shape(flags: u16) -> encap::Shape {
    encap::Shape::new(
        flags & DOWN_IPV6 != 0,
        flags & DOWN_RADIO_MAC != 0,
        flags & DOWN_NATIVE != 0,
    )
}

/// The next hop from the kernel FIB (as a locally originated packet out
/// of the AP-side interface), else the neighbour the control side
/// configured for the tunnel. The kernel only answers for an AP-side
/// interface with IP forwarding enabled (`net.ipv4.conf.<if>.forwarding`),
/// even for output lookups. Out of line so its 64-byte parameter block
/// does not share the caller's stack frame.
#[inline(never)]
fn resolve(
    ctx: &XdpContext,
    s: &Settings,
    t: &TunnelDown,
    want: &Stamp,
) -> Result<([u8; 6], [u8; 6]), Reason> {
    if s.ap_ifindex == 0 {
        return neighbour(t);
    }
    count_fib_lookup();
    // SAFETY: all-zero is a valid bpf_fib_lookup.
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    p.ifindex = s.ap_ifindex;
    // The address the entry will be stamped with, not a second read.
    // SAFETY: two u64 words are 16 bytes, and every byte pattern is an
    // address.
    let ap: Addr = unsafe { core::mem::transmute(want.ap) };
    if want.flags & DOWN_IPV6 != 0 {
        p.family = AF_INET6;
        // SAFETY: writing plain arrays into the address unions.
        unsafe {
            p.__bindgen_anon_3.ipv6_src = core::mem::transmute::<[u8; 16], [u32; 4]>(t.local);
            p.__bindgen_anon_4.ipv6_dst = core::mem::transmute::<[u8; 16], [u32; 4]>(ap);
        }
    } else {
        p.family = AF_INET;
        p.__bindgen_anon_3.ipv4_src =
            u32::from_ne_bytes([t.local[12], t.local[13], t.local[14], t.local[15]]);
        p.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes([ap[12], ap[13], ap[14], ap[15]]);
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

/// What [`write_headers`] writes besides the tunnel's headers (one
/// argument: BPF calls take at most five).
struct Write {
    shape: encap::Shape,
    /// IPv6 with UDP-Lite.
    lite: bool,
    frame: encap::Frame,
    /// Bytes the head grew by.
    grow: usize,
    bssid: [u8; 6],
}

/// Writes every header in front of the kept EtherType: the tunnel's outer
/// headers copied in a word at a time with the length of their shape (a
/// constant in each arm), the frame's fields written over them, then the
/// client's addresses, read first because the new headers cover where
/// they were. Out of line: inlined, LLVM shifts packet pointers in
/// `ferry_trunk`, which the verifier refuses.
#[inline(never)]
fn write_headers(ctx: &XdpContext, e: &TunnelHeaders, w: &Write) -> Result<(), Reason> {
    let err = Reason::DownDropInternal;
    let at = w.shape.outer_len();
    // One load per branch: shared, LLVM splits the 12 bytes into single
    // bytes for the 802.11 header and spills them. 802.3 payloads (T=0)
    // move them a word at a time.
    if w.shape.native {
        let a = packet::load::<{ 2 * eth::ADDR_LEN }>(ctx, w.grow).ok_or(err)?;
        outer(ctx, e, w).ok_or(err)?;
        let mut da = [0u8; 6];
        da.copy_from_slice(&a[..6]);
        let mut sa = [0u8; 6];
        sa.copy_from_slice(&a[6..]);
        packet::store(ctx, at, &encap::dot11_header(&da, &w.bssid, &sa)).ok_or(err)?;
        packet::store(ctx, at + dot11::BASE_HLEN, &encap::SNAP_PREFIX).ok_or(err)?;
    } else {
        let mut a = encap::Aligned([0; 2 * eth::ADDR_LEN]);
        packet::load_aligned(ctx, w.grow, &mut a).ok_or(err)?;
        outer(ctx, e, w).ok_or(err)?;
        packet::store_aligned(ctx, at, &a).ok_or(err)?;
    }
    Ok(())
}

/// The tunnel's outer headers, copied with the length of their shape and
/// patched with the frame's fields.
#[inline(always)]
fn outer(ctx: &XdpContext, e: &TunnelHeaders, w: &Write) -> Option<()> {
    const fn len(ipv6: bool, radio_mac: bool) -> usize {
        encap::Shape::new(ipv6, radio_mac, false).outer_len()
    }
    let o = &e.outer;
    match (w.shape.ipv6, w.shape.radio_mac) {
        (false, false) => packet::store_aligned(ctx, 0, o.first::<{ len(false, false) }>()),
        (false, true) => packet::store_aligned(ctx, 0, o.first::<{ len(false, true) }>()),
        (true, false) => packet::store_aligned(ctx, 0, o.first::<{ len(true, false) }>()),
        (true, true) => packet::store_aligned(ctx, 0, o.first::<{ len(true, true) }>()),
    }?;
    o.patch(&mut PacketSink(ctx), &w.shape, w.lite, &w.frame)
}

/// [`encap::Outer::patch`] writing into the packet.
struct PacketSink<'a>(&'a XdpContext);

impl encap::Sink for PacketSink<'_> {
    #[inline(always)]
    fn put<const N: usize>(&mut self, off: usize, b: [u8; N]) -> Option<()> {
        packet::store(self.0, off, &b)
    }
}

/// Most 16-bit words the plain-UDP-over-IPv6 checksum loop reads: a
/// datagram of up to 1,460 bytes (MTU 1500); config refuses larger MTUs
/// for such tunnels.
const UDP6_MAX_WORDS: usize = 730;

/// UDP over IPv6 needs a checksum over the whole datagram (RFC 8200 §8.1).
#[inline(never)]
fn udp6_full_checksum(
    ctx: &XdpContext,
    local: &Addr,
    ap: &Addr,
    udp_len: usize,
) -> Result<(), Reason> {
    // The MTU check already bounds this; the verifier needs to see it here.
    if !(udp::HLEN..=2 * UDP6_MAX_WORDS).contains(&udp_len) {
        return Err(Reason::DownDropInternal);
    }
    let l4 = eth::HLEN + ipv6::HLEN;
    let mut sum = encap::pseudo_sum_v6(local, ap, udp_len as u32, ipv6::NEXT_UDP);
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

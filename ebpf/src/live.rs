//! The live benchmark's programs (see `ferry_ebpf::loadgen` for the design):
//! `bench_gen` runs under BPF_PROG_TEST_RUN in live-frames mode and
//! rewrites each frame from a template; `bench_sink` checks, counts,
//! histograms and drops what the forwarder under test delivered; and
//! `baseline_redirect` is the plain-redirect ceiling ferry is compared with.
//! None of them is loaded by `ferry run`.

use aya_ebpf::{
    bindings::xdp_action,
    btf_maps::{Array, DevMap, PerCpuArray},
    helpers::bpf_ktime_get_ns,
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use ferry_ebpf::loadgen::{
    CLASSES, CMP, FLOW_MASK, GenSettings, GenState, GenTemplate, HDR, LAT_BUCKETS, MAGIC, NO_MAC,
    REDIRECT_SLOTS, SinkExpect, SinkSettings, SinkStats, TRAILER, lat_bucket, station_mac,
};

use crate::packet;

#[btf_map]
static GEN_TEMPLATES: Array<GenTemplate, 1> = Array::new();
#[btf_map]
static GEN_SETTINGS: Array<GenSettings, 1> = Array::new();
#[btf_map]
static GEN_STATE: PerCpuArray<GenState, 1> = PerCpuArray::new();
#[btf_map]
static SINK_EXPECT: Array<SinkExpect, 1> = Array::new();
#[btf_map]
static SINK_SETTINGS: Array<SinkSettings, 1> = Array::new();
#[btf_map]
static SINK_STATS: PerCpuArray<SinkStats, 1> = PerCpuArray::new();
#[btf_map]
static SINK_LATENCY: PerCpuArray<u64, LAT_BUCKETS> = PerCpuArray::new();
#[btf_map]
static REDIRECT_EGRESS: DevMap<{ REDIRECT_SLOTS as usize }> = DevMap::new();

/// `v & 2047`, opaque to the optimiser so the verifier sees the bound on
/// the register that is used as the offset (as `maps::mask63`).
#[inline(always)]
fn mask2047(v: usize) -> usize {
    const _: () = assert!(ferry_ebpf::loadgen::MAX_FRAME == 2047);
    let mut v = v as u64;
    // SAFETY: one ALU instruction on a register we own.
    unsafe { core::arch::asm!("{0} &= 2047", inout(reg) v) };
    v as usize
}

/// `v & 127` (see [`mask2047`]).
#[inline(always)]
fn mask127(v: usize) -> usize {
    const _: () = assert!(HDR == 128 && CMP <= HDR);
    let mut v = v as u64;
    // SAFETY: as above.
    unsafe { core::arch::asm!("{0} &= 127", inout(reg) v) };
    v as usize
}

/// The size class of a frame of `len` bytes.
#[inline(always)]
fn class_of(lens: &[u16; CLASSES], len: usize) -> Option<u32> {
    let mut i = 0;
    while i < CLASSES {
        if lens[i] != 0 && usize::from(lens[i]) == len {
            return Some(i as u32);
        }
        i += 1;
    }
    None
}

/// The generator: rewrite, stamp, send back out (live mode turns XDP_TX
/// into a transmit on the interface the test run names).
#[xdp]
pub fn bench_gen(ctx: XdpContext) -> u32 {
    generate(&ctx).unwrap_or(xdp_action::XDP_ABORTED)
}

#[inline(always)]
fn generate(ctx: &XdpContext) -> Option<u32> {
    let s = GEN_SETTINGS.get(0)?;
    let len = packet::len(ctx);
    let class = class_of(&s.lens, len)?;
    let st = GEN_STATE.get_ptr_mut(0)?;
    // SAFETY: per-CPU slot, only this CPU touches it while we run.
    let n = unsafe {
        let n = (*st).next;
        (*st).next = n + 1;
        n
    };
    let flow = (n % u64::from(s.flows.max(1))) as u32;
    let keys = s.keys.max(1);
    let tpl = GEN_TEMPLATES.get(class * keys + flow % keys)?;
    // Every header word, every run: the page may hold the last forwarder's
    // rewrite (live-mode pages are recycled without being re-initialised).
    let copy = usize::from(tpl.copy);
    let mut o = 0;
    while o < HDR {
        if o + 8 <= copy {
            let mut w = [0u8; 8];
            w.copy_from_slice(&tpl.hdr[o..o + 8]);
            packet::store::<8>(ctx, o, &w)?;
        }
        o += 8;
    }
    if tpl.mac_off != NO_MAC {
        packet::store::<6>(ctx, mask127(usize::from(tpl.mac_off)), &station_mac(flow))?;
    }
    let mut t = [0u8; TRAILER];
    t[..4].copy_from_slice(&(MAGIC | (flow & FLOW_MASK)).to_le_bytes());
    t[4..8].copy_from_slice(&(n as u32).to_le_bytes());
    // SAFETY: helper without arguments.
    t[8..].copy_from_slice(&unsafe { bpf_ktime_get_ns() }.to_le_bytes());
    packet::store::<TRAILER>(ctx, mask2047(len - TRAILER), &t)?;
    Some(xdp_action::XDP_TX)
}

/// What the sink found.
#[derive(Clone, Copy)]
enum Found {
    Good(u64),
    Size,
    Trailer,
    Header,
    Station,
}

/// The sink: check, count, histogram, drop. Wrong frames are passed to
/// the stack instead, so a capture on the interface shows exactly them.
#[xdp]
pub fn bench_sink(ctx: XdpContext) -> u32 {
    let found = check(&ctx);
    let verdict = match found {
        Found::Good(_) => xdp_action::XDP_DROP,
        _ => xdp_action::XDP_PASS,
    };
    if let Some(st) = SINK_STATS.get_ptr_mut(0) {
        // SAFETY: per-CPU slot.
        unsafe {
            match found {
                Found::Good(ts) => {
                    (*st).good += 1;
                    (*st).bytes += packet::len(&ctx) as u64;
                    let lat = bpf_ktime_get_ns().saturating_sub(ts);
                    if let Some(b) = SINK_LATENCY.get_ptr_mut(lat_bucket(lat) as u32) {
                        *b += 1;
                    }
                }
                Found::Size => (*st).bad_size += 1,
                Found::Trailer => (*st).bad_trailer += 1,
                Found::Header => (*st).bad_header += 1,
                Found::Station => (*st).bad_station += 1,
            }
        }
    }
    verdict
}

#[inline(always)]
fn check(ctx: &XdpContext) -> Found {
    let Some(s) = SINK_SETTINGS.get(0) else {
        return Found::Size;
    };
    let len = packet::len(ctx);
    let Some(class) = class_of(&s.lens, len) else {
        return Found::Size;
    };
    if len < CMP {
        return Found::Size;
    }
    let Some(t) = packet::load::<TRAILER>(ctx, mask2047(len - TRAILER)) else {
        return Found::Size;
    };
    let tag = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
    if tag & !FLOW_MASK != MAGIC {
        return Found::Trailer;
    }
    let flow = tag & FLOW_MASK;
    let keys = s.keys.max(1);
    let Some(e) = SINK_EXPECT.get(class * keys + flow % keys) else {
        return Found::Trailer;
    };
    let Some(head) = packet::load::<CMP>(ctx, 0) else {
        return Found::Size;
    };
    let mut diff = 0u8;
    let mut i = 0;
    while i < CMP {
        diff |= (head[i] ^ e.bytes[i]) & e.mask[i];
        i += 1;
    }
    if diff != 0 {
        return Found::Header;
    }
    if e.mac_off != NO_MAC {
        match packet::load::<6>(ctx, mask127(usize::from(e.mac_off))) {
            Some(m) if m == station_mac(flow) => {}
            _ => return Found::Station,
        }
    }
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&t[8..]);
    Found::Good(u64::from_le_bytes(ts))
}

/// A redirect through its DEVMAP, keyed by the receiving interface, and
/// nothing else: what xdp-tools' `xdp-bench redirect-map` measures (one
/// map lookup, one redirect), built here because Debian's xdp-tools 1.3.1
/// does not start on this kernel. Keying by interface lets one program
/// serve both directions of a slot.
#[xdp]
pub fn baseline_redirect(ctx: XdpContext) -> u32 {
    // SAFETY: reading a context field the verifier exposes to XDP.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    REDIRECT_EGRESS
        .redirect(ifindex % REDIRECT_SLOTS, 0)
        .unwrap_or(xdp_action::XDP_ABORTED)
}

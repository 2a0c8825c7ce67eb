//! The maps both XDP programs share, and the small helpers around them.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    bindings::xdp_action,
    btf_maps::{Array, ArrayOfMaps, DevMap, HashMap, LruHashMap, PerCpuArray},
    macros::btf_map,
};
use ferry_ebpf::{
    abi::{
        Action, Addr, CounterBlock, EVENT_SLOTS, Event, GroupStats, MAX_GROUPS, MAX_LOCAL_ADDRS,
        MAX_TUNNELS, REASON_SLOTS, Reason, STAT_FIB_LOOKUPS, STAT_STATION_READS,
        STATION_TEMPLATE_ENTRIES, Settings, StationInfo, StationKey, TunnelDown, TunnelHeaders,
        TunnelInfo, TunnelKey, TunnelStats, VLAN_IDS,
    },
    hint,
};

/// The live tunnel table sits behind one outer slot so user space can replace
/// the whole table with a single update (build the new inner map aside, flip).
#[btf_map]
pub static TUNNEL_TABLES: ArrayOfMaps<HashMap<TunnelKey, TunnelInfo, { MAX_TUNNELS as usize }>, 1> =
    ArrayOfMaps::new();

/// Downstream view of the same tunnels, by id, swapped the same way.
#[btf_map]
pub static TUNNELS_DOWN: ArrayOfMaps<Array<TunnelDown, { MAX_TUNNELS as usize }>, 1> =
    ArrayOfMaps::new();

/// Stations (client MAC, VLAN) -> tunnel. The inner LRU hash is created by
/// user space at the configured size (the template size here does not bind:
/// the kernel does not compare hash capacities of inner maps).
#[btf_map]
pub static STATION_TABLES: ArrayOfMaps<
    LruHashMap<StationKey, StationInfo, { STATION_TEMPLATE_ENTRIES as usize }>,
    1,
> = ArrayOfMaps::new();

/// Learning hints, 4-way buckets of `u64` tags shared by every CPU (see
/// `ferry_ebpf::hint`): a station that keeps talking through the same
/// tunnel costs one half-line read and no station-table lookup. User
/// space sizes it to the station capacity at load (`hint::buckets`).
#[btf_map]
pub static STATION_HINTS: Array<hint::Bucket, { hint::MIN_BUCKETS as usize }> = Array::new();

/// The hint array's bucket count minus one, patched by the loader
/// (`abi::GLOBAL_STATION_HINT_MASK`); read through a volatile load so the
/// compiler does not fold the default in.
#[unsafe(no_mangle)]
static STATION_HINT_MASK: u32 = hint::MIN_BUCKETS - 1;

/// The loaded hint array's bucket mask.
#[inline(always)]
pub fn station_hint_mask() -> u32 {
    // SAFETY: a plain read of a 4-byte global in the object's rodata.
    unsafe { core::ptr::read_volatile(&STATION_HINT_MASK) }
}

/// Learned stations per tunnel id (shared by all CPUs, updated atomically).
/// Memory-mappable (`BPF_F_MMAPABLE`), so user space adjusts a count with
/// the same atomic add when it installs a station synced from the HA peer.
#[btf_map]
pub static STATION_COUNT: Array<u64, { MAX_TUNNELS as usize }, BPF_F_MMAPABLE> = Array::new();

/// `BPF_F_MMAPABLE`.
const BPF_F_MMAPABLE: usize = 1 << 10;

/// One block per CPU: a packet costs one lookup for both of its counters.
#[btf_map]
pub static COUNTERS: PerCpuArray<CounterBlock, 1> = PerCpuArray::new();

/// Per-tunnel packet and byte counts, per CPU.
#[btf_map]
pub static TUNNEL_STATS: PerCpuArray<TunnelStats, { MAX_TUNNELS as usize }> = PerCpuArray::new();

/// Downstream outer headers by tunnel id, per CPU (see
/// `abi::TunnelHeaders`): a frame down a tunnel whose headers are built
/// costs a copy of them and a few field writes instead of a
/// `bpf_fib_lookup` (more than half of `ferry_downstream`'s time in the
/// live lab, bench/RESULTS.md "Downstream next-hop cache") and a header
/// build (a quarter, "Outer headers built once per tunnel"). Per CPU so an
/// entry is never read while another CPU writes it: 120 bytes per tunnel
/// id and possible CPU (7.9 MB per CPU).
#[btf_map]
pub static TUNNEL_HEADERS: PerCpuArray<TunnelHeaders, { MAX_TUNNELS as usize }> =
    PerCpuArray::new();

/// This node's CAPWAP data addresses (IPv6, and IPv4 beyond the inline ones).
#[btf_map]
pub static LOCAL_ADDRS: HashMap<Addr, u8, { MAX_LOCAL_ADDRS as usize }> = HashMap::new();

/// The one settings entry.
#[btf_map]
pub static SETTINGS: Array<Settings, 1> = Array::new();

/// Client VLANs served downstream: 1 at the VLAN id's index.
#[btf_map]
pub static CLIENT_VLANS: Array<u8, { VLAN_IDS as usize }> = Array::new();

/// HA group roles by group index (see `abi::MAP_GROUP_ROLES`).
#[btf_map]
pub static GROUP_ROLES: Array<u64, { MAX_GROUPS as usize }> = Array::new();

/// Whether HA group `group` forwards here: group 0 (no HA) always, without
/// a lookup; any other only while this node's lease on it runs. One array
/// read and one coarse clock read per packet: a group flip is one map
/// write.
#[inline(always)]
pub fn group_active(group: u16) -> bool {
    if group == 0 {
        return true;
    }
    match GROUP_ROLES.get(u32::from(group)) {
        Some(lease) => {
            // SAFETY: a helper without arguments.
            let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_coarse_ns() };
            now < *lease
        }
        None => false,
    }
}

/// Per-CPU statistics of HA groups by group index (see
/// `abi::MAP_GROUP_STATS`).
#[btf_map]
pub static GROUP_STATS: PerCpuArray<GroupStats, { MAX_GROUPS as usize }> = PerCpuArray::new();

/// This CPU's statistics line of HA group `group`; null for group 0 (no
/// HA: a single node pays no lookup). A nullable pointer, not an
/// `Option`: an `Option<*mut _>` carries an undefined payload when `None`,
/// and a spill of it is refused by the verifier (`!read_ok`).
#[inline(always)]
pub fn group_stats(group: u16) -> *mut GroupStats {
    if group == 0 {
        return core::ptr::null_mut();
    }
    GROUP_STATS
        .get_ptr_mut(u32::from(group))
        .unwrap_or_default()
}

/// Redirect targets: slot 0 client side, slot 1 AP side.
#[btf_map]
pub static EGRESS: DevMap<2> = DevMap::new();

/// Used only if the settings array were missing its one entry (it cannot be).
static NO_SETTINGS: Settings = Settings {
    data_port: 0,
    egress: 0xff,
    local4_count: 0,
    local4: [[0; 4]; ferry_ebpf::abi::LOCAL4_INLINE],
    egress_down: 0xff,
    df: 0,
    dscp: [0; 8],
    tunnel_lookup: 0,
    hint_epoch: 0,
    ap_ifindex: 0,
    generation: 0,
    next_hop_generation: 0,
    abi_version: 0,
    next_hop_until: 0,
};

/// The settings entry.
#[inline(always)]
pub fn settings() -> &'static Settings {
    SETTINGS.get(0).unwrap_or(&NO_SETTINGS)
}

/// `i & 63`, done in assembly: LLVM knows a reason index is below 45 and
/// would delete a plain mask or compare, after which the verifier, which
/// cannot follow that proof through register spills, sees an unbounded
/// index into the counter block.
#[inline(always)]
fn mask63(i: u32) -> usize {
    const _: () = assert!(REASON_SLOTS == 64);
    let mut v = u64::from(i);
    // SAFETY: one ALU instruction on a register we own.
    unsafe { core::arch::asm!("{0} &= 63", inout(reg) v) };
    v as usize
}

/// `i & 7` for event indices (see [`mask63`]).
#[inline(always)]
fn mask7(i: u32) -> usize {
    const _: () = assert!(EVENT_SLOTS == 8);
    let mut v = u64::from(i);
    // SAFETY: as above.
    unsafe { core::arch::asm!("{0} &= 7", inout(reg) v) };
    v as usize
}

/// Counts a packet under its direction's received counter and `reason`.
#[inline(always)]
pub fn count(reason: Reason) {
    let i = mask63(reason.index());
    let rx = mask63(reason.direction().received().index());
    if let Some(c) = COUNTERS.get_ptr_mut(0) {
        // SAFETY: per-CPU block, only this CPU writes it while we run.
        // Indices are masked below the array length, so unchecked access
        // is in bounds (a checked one would leave a panic path, which BPF
        // cannot have).
        unsafe {
            *(*c).v.get_unchecked_mut(rx) += 1;
            *(*c).v.get_unchecked_mut(i) += 1;
        }
    }
}

/// Counts a program's result and turns it into the XDP action: `Ok` is a
/// forward (`forwarded` counted, the action returned as is), `Err` a pass
/// or drop counted under its reason.
#[inline(always)]
pub fn verdict(r: Result<u32, Reason>, forwarded: Reason) -> u32 {
    match r {
        Ok(action) => {
            count(forwarded);
            action
        }
        Err(reason) => {
            count(reason);
            match reason.action() {
                Action::Pass => xdp_action::XDP_PASS,
                _ => xdp_action::XDP_DROP,
            }
        }
    }
}

/// Counts a learning event.
#[inline(always)]
pub fn event(e: Event) {
    let i = mask7(e.index());
    if let Some(c) = COUNTERS.get_ptr_mut(0) {
        // SAFETY: as in `count`.
        unsafe { *(*c).e.get_unchecked_mut(i) += 1 };
    }
}

/// Counts one station-table read by upstream learning
/// ([`STAT_STATION_READS`]).
#[inline(always)]
pub fn count_station_read() {
    count_stat::<STAT_STATION_READS>();
}

/// Counts one FIB lookup by the downstream path ([`STAT_FIB_LOOKUPS`]).
#[inline(always)]
pub fn count_fib_lookup() {
    count_stat::<STAT_FIB_LOOKUPS>();
}

/// Adds one to cost statistic `SLOT` of the event array.
#[inline(always)]
fn count_stat<const SLOT: usize>() {
    const { assert!(SLOT < EVENT_SLOTS) };
    if let Some(c) = COUNTERS.get_ptr_mut(0) {
        // SAFETY: as in `count`; the index is a constant below EVENT_SLOTS.
        unsafe { *(*c).e.get_unchecked_mut(SLOT) += 1 };
    }
}

/// Adds `delta` (wrapping: `u64::MAX` subtracts one) to a tunnel's
/// learned-station count. BPF has 64-bit atomic add (no CAS), and its
/// result is not used, so this is a plain `lock xadd`.
#[inline(always)]
pub fn station_count_add(tunnel: u32, delta: u64) {
    if let Some(p) = STATION_COUNT.get_ptr_mut(tunnel) {
        // SAFETY: array slots are stable for the map's lifetime and 8-byte
        // aligned; other CPUs update the same slot, hence the atomic.
        unsafe {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, delta);
        }
    }
}

/// A tunnel's learned-station count.
#[inline(always)]
pub fn station_count(tunnel: u32) -> u64 {
    match STATION_COUNT.get_ptr(tunnel) {
        // SAFETY: aligned 8-byte read of a live array slot (atomic on BPF).
        Some(p) => unsafe { core::ptr::read_volatile(p) },
        None => u64::MAX,
    }
}

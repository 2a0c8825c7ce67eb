//! The map ABI between the XDP programs and user space: map names, key and
//! value layouts, and the counter index of every verdict reason.
//!
//! All types are `#[repr(C)]` with explicit padding fields so that the bytes
//! user space writes are exactly the bytes the kernel hashes and compares.

use crate::encap;

/// Name of the outer ARRAY_OF_MAPS holding the live tunnel table (one slot).
pub const MAP_TUNNEL_TABLES: &str = "TUNNEL_TABLES";
/// Name of the per-CPU verdict/reason counter block (one entry: `[u64; REASON_COUNT]`).
pub const MAP_COUNTERS: &str = "COUNTERS";
/// Name of the per-CPU per-tunnel statistics array.
pub const MAP_TUNNEL_STATS: &str = "TUNNEL_STATS";
/// Name of the set of this node's own CAPWAP data addresses.
pub const MAP_LOCAL_ADDRS: &str = "LOCAL_ADDRS";
/// Name of the one-entry data plane settings array.
pub const MAP_SETTINGS: &str = "SETTINGS";
/// Name of the DEVMAP used to redirect: slot 0 client side, slot 1 AP side.
pub const MAP_EGRESS: &str = "EGRESS";
/// Name of the outer ARRAY_OF_MAPS holding the live station table (one slot,
/// an LRU hash sized by configuration).
pub const MAP_STATION_TABLES: &str = "STATION_TABLES";
/// Name of the outer ARRAY_OF_MAPS holding the live downstream tunnel table
/// (one slot, an array indexed by tunnel id).
pub const MAP_TUNNELS_DOWN: &str = "TUNNELS_DOWN";
/// Name of the per-tunnel learned-station count (shared, atomic).
pub const MAP_STATION_COUNT: &str = "STATION_COUNT";
/// Name of the client VLAN set (array of 4096 flags, by VLAN id).
pub const MAP_CLIENT_VLANS: &str = "CLIENT_VLANS";
/// Name of the station learning hints (see [`crate::hint`]). A cache, so
/// not pinned: every load starts with an empty one, sized to the station
/// capacity.
pub const MAP_STATION_HINTS: &str = "STATION_HINTS";
/// Pin name of the per-CPU hints that `STATION_HINTS` replaced; a start
/// removes a pin of that name left by an older build.
pub const LEGACY_PIN_STATION_CACHE: &str = "STATION_CACHE";
/// Name of the per-CPU downstream outer-header cache ([`TunnelHeaders`],
/// by tunnel id). A cache, so not pinned: every load starts with an empty
/// one.
pub const MAP_TUNNEL_HEADERS: &str = "TUNNEL_HEADERS";
/// Name of the global (patched into the object's read-only data at load)
/// that holds the hint array's bucket count minus one.
pub const GLOBAL_STATION_HINT_MASK: &str = "STATION_HINT_MASK";
/// Name of the HA group roles: one `u64` lease per group index (see
/// [`MAX_GROUPS`]).
pub const MAP_GROUP_ROLES: &str = "GROUP_ROLES";
/// Name of the per-CPU per-group statistics ([`GroupStats`], by group
/// index; group 0 is never counted).
pub const MAP_GROUP_STATS: &str = "GROUP_STATS";

/// The maps `ferry run` pins, so a restarted control process (or a newer
/// program) keeps using the same state. Everything but the lab map.
pub const PINNED_MAPS: [&str; 12] = [
    MAP_TUNNEL_TABLES,
    MAP_COUNTERS,
    MAP_TUNNEL_STATS,
    MAP_LOCAL_ADDRS,
    MAP_SETTINGS,
    MAP_EGRESS,
    MAP_STATION_TABLES,
    MAP_TUNNELS_DOWN,
    MAP_STATION_COUNT,
    MAP_CLIENT_VLANS,
    MAP_GROUP_ROLES,
    MAP_GROUP_STATS,
];

/// Name of the upstream (AP side) XDP program.
pub const PROG_UPSTREAM: &str = "ferry_upstream";
/// Name of the downstream (client side) XDP program.
pub const PROG_DOWNSTREAM: &str = "ferry_downstream";
/// Name of the one-arm XDP program: client-VLAN frames go downstream,
/// everything else upstream (one interface can hold only one XDP program).
pub const PROG_TRUNK: &str = "ferry_trunk";
/// Name of the pass-everything program (veth peers of a redirect target).
pub const PROG_PASS: &str = "ferry_pass";
/// Name of the lab TC program that strips the lab VLAN on ingress.
pub const PROG_LAB_VLAN_POP: &str = "lab_vlan_pop";
/// Name of the lab TC program that adds the lab VLAN on egress.
pub const PROG_LAB_VLAN_PUSH: &str = "lab_vlan_push";
/// Name of the lab VLAN id map (one u32).
pub const MAP_LAB_VLAN: &str = "LAB_VLAN";
/// Name of the XDP_DROP baseline program used by the benchmark.
pub const PROG_BASELINE_DROP: &str = "baseline_drop";
/// Name of the MAC-swap XDP_TX baseline program used by the benchmark.
pub const PROG_BASELINE_TX: &str = "baseline_tx";

/// Largest number of tunnels one table may hold (and size of the stats array).
/// 25,600 is the largest AP count in the reference hardware; this leaves room.
pub const MAX_TUNNELS: u32 = 65_536;
/// Largest number of local CAPWAP data addresses.
pub const MAX_LOCAL_ADDRS: u32 = 64;
/// Slot of the live tunnel table in [`MAP_TUNNEL_TABLES`].
pub const TABLE_SLOT: u32 = 0;
/// Slot of the client-side interface in [`MAP_EGRESS`].
pub const EGRESS_SLOT: u32 = 0;
/// Slot of the AP-side interface in [`MAP_EGRESS`] (downstream).
pub const EGRESS_AP_SLOT: u32 = 1;
/// Capacity of the station table template in the object; the live table is
/// created by user space with the configured capacity.
pub const STATION_TEMPLATE_ENTRIES: u32 = 1024;
/// Default station table capacity.
pub const DEFAULT_STATION_CAPACITY: u32 = 262_144;
/// Default per-tunnel limit on learned stations.
pub const DEFAULT_STATION_LIMIT: u32 = 512;
/// A station's `last_seen` is rewritten at most this often (ns): learning
/// costs no map write per packet when nothing changed.
pub const STATION_REFRESH_NS: u64 = 1_000_000_000;
/// Seconds between learning-hint epochs (`Settings::hint_epoch`): every
/// talking station reaches the station table once per epoch. Longer means
/// fewer table reads with many stations (at a million stations and about
/// 2 Mpps, a 1 s epoch sent half the frames to the table), shorter bounds
/// how long a hint can mask an LRU eviction and how stale `last_seen` is.
pub const STATION_HINT_EPOCH_SECS: u64 = 4;
/// Seconds after which `ferry run` starts a new next-hop generation even
/// when no routing change was announced (`Settings::next_hop_generation`):
/// a bound on how long a cached next hop could outlive a change whose
/// notification was lost. Each active tunnel then costs one FIB lookup per
/// CPU per period.
pub const NEXT_HOP_MAX_AGE_SECS: u64 = 4;
/// Seconds the programs may answer from their next-hop cache after user
/// space last started a generation (`Settings::next_hop_until`): three
/// missed refreshes of [`NEXT_HOP_MAX_AGE_SECS`] mean no `ferry run` is
/// watching the kernel's routes, and the cached answers are looked up
/// again every [`NEXT_HOP_LEASE_CHECK`] frames.
pub const NEXT_HOP_LEASE_SECS: u64 = 3 * NEXT_HOP_MAX_AGE_SECS;
/// A cached next hop checks the lease (a clock read) on every this-many-th
/// use: past the lease, each tunnel's answer is looked up again at least
/// this often per CPU, and at most this many frames use an answer the
/// lease no longer covers.
pub const NEXT_HOP_LEASE_CHECK: u32 = 64;
/// Number of VLAN ids (index space of [`MAP_CLIENT_VLANS`]).
pub const VLAN_IDS: u32 = 4096;

/// An IP address as 16 bytes: IPv6 as is, IPv4 as an IPv4-mapped IPv6
/// address (`::ffff:a.b.c.d`), so one key type covers both families.
pub type Addr = [u8; 16];

/// Maps an IPv4 address into the 16-byte key space.
#[inline(always)]
pub const fn v4_mapped(a: [u8; 4]) -> Addr {
    // Built from words: an array literal with a run of zeros becomes a
    // byte-wise memset loop in BPF code.
    let words: [u32; 4] = [
        0,
        0,
        u32::from_ne_bytes([0, 0, 0xff, 0xff]),
        u32::from_ne_bytes(a),
    ];
    // SAFETY: [u32; 4] and [u8; 16] have the same size; every bit pattern is valid.
    unsafe { core::mem::transmute::<[u32; 4], Addr>(words) }
}

/// Tunnel table key: AP address and UDP source port (0 = any port).
/// Aligned to 4 so the program builds it with word stores.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TunnelKey {
    /// AP address ([`v4_mapped`] for IPv4).
    pub addr: Addr,
    /// AP source port in host order; 0 matches any port from `addr`.
    pub port: u16,
    /// Always zero (hashed by the kernel).
    pub pad: u16,
}

impl TunnelKey {
    /// A key for `addr` and `port`.
    #[inline(always)]
    pub const fn new(addr: Addr, port: u16) -> Self {
        Self { addr, port, pad: 0 }
    }
}

/// Slots of [`MAP_GROUP_ROLES`]: group index 0 means "no group" (never
/// looked up: a node without HA pays nothing), 1-255 are the configured
/// `[[group]]`s in order.
pub const MAX_GROUPS: u32 = 256;
/// A group forwards while `bpf_ktime_get_coarse_ns()` is below its
/// [`MAP_GROUP_ROLES`] value: a lease the master's HA thread renews with
/// every heartbeat. 0 (the array starts zeroed) is standby, so a group
/// forwards only once this node has decided it is master; a group flip is
/// this one aligned word written, whatever the number of tunnels in it.
/// The lease is the fence: a master whose control process died or was
/// stopped stops forwarding when the lease runs out (no later than the
/// peer's dead interval), so two nodes never forward one group for long,
/// whatever happened to the other's process.
/// [`GROUP_FOREVER`] never runs out (tests, no HA thread).
pub const GROUP_FOREVER: u64 = u64::MAX;

/// Tunnel flag: installed in standby (backup role); data is dropped.
pub const TUNNEL_STANDBY: u16 = 1;
/// Internal flag on an (address, any port) entry: tunnels keyed by
/// (address, port) exist for this address, so the program looks the exact
/// port up before settling for this entry. Set by the table builder.
pub const TUNNEL_PORTS: u16 = 2;
/// Internal flag: the (address, any port) entry is only a [`TUNNEL_PORTS`]
/// marker, not a tunnel. Set by the table builder.
pub const TUNNEL_MARKER: u16 = 4;
/// Flags user space may set; the others are derived when a table is built.
pub const TUNNEL_USER_FLAGS: u16 = TUNNEL_STANDBY;

/// [`Settings::tunnel_lookup`]: look the (address, source port) entry up
/// first, and the (address, any port) entry only when it misses: one hash
/// lookup for a frame of a port-declared tunnel instead of two (the
/// marker, then the port), and a missed lookup more for an any-port
/// tunnel. The table builder picks it when port-declared tunnels are the
/// majority. `ferry-bench micro` measures both orders on one
/// 25,600-tunnel port-declared table in the same run (bench/RESULTS.md).
pub const LOOKUP_EXACT_FIRST: u8 = 1;

/// Tunnel table value.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TunnelInfo {
    /// Index into [`MAP_TUNNEL_STATS`]; unique per tunnel, `< MAX_TUNNELS`.
    pub id: u32,
    /// Client VLAN the tunnel's frames are tagged into.
    pub vlan: u16,
    /// `TUNNEL_*` flags.
    pub flags: u16,
    /// Most stations the upstream path may learn behind this tunnel.
    pub station_limit: u32,
    /// HA group index (0: none); the tunnel forwards only while its
    /// group's lease in [`MAP_GROUP_ROLES`] runs.
    pub group: u16,
    /// Always zero.
    pub pad: u16,
}

/// Downstream tunnel flag: the slot holds a tunnel.
pub const DOWN_VALID: u16 = 1;
/// Downstream tunnel flag: standby (backup role).
pub const DOWN_STANDBY: u16 = 2;
/// Downstream tunnel flag: the AP is an IPv6 address.
pub const DOWN_IPV6: u16 = 4;
/// Downstream tunnel flag: IPv6 with UDP-Lite (checksum coverage 8).
pub const DOWN_UDPLITE: u16 = 8;
/// Downstream tunnel flag: send native 802.11 frames (T=1).
pub const DOWN_NATIVE: u16 = 16;
/// Downstream tunnel flag: include the Radio MAC optional field.
pub const DOWN_RADIO_MAC: u16 = 32;
/// Downstream tunnel flag: the AP's port is fixed by config (else learned).
pub const DOWN_FIXED_PORT: u16 = 64;
/// Downstream tunnel flag: `next_hop`/`source_mac` are set (FIB fallback).
pub const DOWN_NEIGHBOUR: u16 = 128;

/// Downstream tunnel table value (indexed by tunnel id).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TunnelDown {
    /// AP address ([`v4_mapped`] for IPv4).
    pub ap: Addr,
    /// This node's address the tunnel is sourced from (same family).
    pub local: Addr,
    /// AP UDP port (host order); 0 until learned for any-port tunnels.
    pub port: u16,
    /// `DOWN_*` flags.
    pub flags: u16,
    /// Client VLAN (must match the station key's VLAN).
    pub vlan: u16,
    /// Largest outer IP packet; bigger frames are punted.
    pub mtu: u16,
    /// Radio MAC field content (with `DOWN_RADIO_MAC`).
    pub radio_mac: [u8; 6],
    /// Next-hop MAC used when the FIB has no answer (with `DOWN_NEIGHBOUR`).
    pub next_hop: [u8; 6],
    /// Source MAC used with `next_hop`.
    pub source_mac: [u8; 6],
    /// HA group index, as in [`TunnelInfo::group`].
    pub group: u16,
    /// Always zero.
    pub pad: [u8; 4],
}

/// Station table key: client MAC and VLAN.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct StationKey {
    /// Client MAC.
    pub mac: [u8; 6],
    /// Client VLAN.
    pub vlan: u16,
}

/// Station flag: configured, never moved or aged by learning.
pub const STATION_STATIC: u8 = 1;
/// Station flag: `bssid` is known.
pub const STATION_BSSID: u8 = 2;

/// Station table value.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct StationInfo {
    /// Tunnel id the station sits behind.
    pub tunnel: u32,
    /// `STATION_*` flags.
    pub flags: u8,
    /// Radio id the station was last seen on.
    pub rid: u8,
    /// BSSID (with `STATION_BSSID`).
    pub bssid: [u8; 6],
    /// Always zero.
    pub pad: [u8; 4],
    /// `bpf_ktime_get_coarse_ns` when last seen (0 for static entries):
    /// a few ms resolution is plenty for a once-a-second refresh.
    pub last_seen: u64,
}

/// Per-tunnel statistics (one per CPU; user space sums them).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TunnelStats {
    /// Data packets that matched this tunnel (any verdict after lookup).
    pub rx_packets: u64,
    /// Bytes of those packets, as received (outer headers included).
    pub rx_bytes: u64,
    /// Client frames forwarded upstream to the client VLAN.
    pub up_packets: u64,
    /// Bytes of those frames, as sent (tag included).
    pub up_bytes: u64,
    /// Client frames encapsulated down this tunnel.
    pub down_packets: u64,
    /// Bytes of those frames, as sent (outer headers included).
    pub down_bytes: u64,
    /// Not a statistic: this CPU's hint of the AP port last seen for an
    /// any-port tunnel, `generation << 16 | port` (user space ignores it).
    pub port_hint: u64,
}

/// Per-group statistics of an HA group (one per CPU; user space sums
/// them). One line per group, beside the per-tunnel ones, so that a
/// handover can watch whether an AP group's traffic still reaches this
/// node, and a backup can see an AP's data arrive (the AP witness), with
/// one lookup instead of one per tunnel of the group.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GroupStats {
    /// Data packets of the group's tunnels (any verdict after lookup,
    /// standby drops included).
    pub rx_packets: u64,
    /// Client frames forwarded upstream.
    pub up_packets: u64,
    /// Client frames encapsulated downstream.
    pub down_packets: u64,
    /// Frames dropped because the group stands by here (both directions).
    pub standby_drops: u64,
}

/// Egress for forwarded frames: the client side is the AP-side interface.
pub const EGRESS_TX: u8 = 0;
/// Egress for forwarded frames: redirect through [`MAP_EGRESS`].
pub const EGRESS_REDIRECT: u8 = 1;

/// IPv4 local addresses compared inline (no hash lookup) when there are
/// at most this many.
pub const LOCAL4_INLINE: usize = 4;
/// `Settings::local4_count` value meaning "more than [`LOCAL4_INLINE`]:
/// consult [`MAP_LOCAL_ADDRS`]".
pub const LOCAL4_IN_MAP: u8 = 0xff;

/// Data plane settings (one entry). Aligned to 4 so the program reads the
/// address words with word loads.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Settings {
    /// CAPWAP data port the node listens on (host order). User space
    /// installs 5247 when none is configured; the program never defaults.
    pub data_port: u16,
    /// `EGRESS_*` for upstream frames (client side).
    pub egress: u8,
    /// Number of valid entries in `local4`, or [`LOCAL4_IN_MAP`]. Derived
    /// from the local address list when it is installed.
    pub local4_count: u8,
    /// This node's IPv4 data addresses when there are few of them: the
    /// common case costs compares instead of a hash lookup.
    pub local4: [[u8; 4]; LOCAL4_INLINE],
    /// `EGRESS_*` for downstream frames (AP side).
    pub egress_down: u8,
    /// IPv4 DF on encapsulated packets (0 or 1).
    pub df: u8,
    /// DSCP for each 802.1p priority, for the outer header.
    pub dscp: [u8; 8],
    /// The order of the upstream tunnel lookups: 0, the (address, any
    /// port) entry first, or [`LOOKUP_EXACT_FIRST`]. Both orders give the
    /// same answer; this only picks the cheaper one for the live table (set
    /// with each flip by the datapath). Old pins read 0, the order before
    /// this field existed, so it took the padding without an ABI bump.
    pub tunnel_lookup: u8,
    /// The learning hints' epoch: `ferry run` advances it every
    /// [`STATION_HINT_EPOCH_SECS`], and
    /// a hint written in another epoch no longer vouches, so a talking
    /// station reaches the station table (refreshing `last_seen`) at least
    /// once per epoch (see [`crate::hint`]). It took the padding byte, and
    /// wrapping is harmless (a hint 256 epochs old vouching once).
    pub hint_epoch: u8,
    /// AP-side ifindex for FIB lookups (0: no FIB, use tunnel neighbours).
    pub ap_ifindex: u32,
    /// Bumped by user space whenever it installs tunnel or station tables:
    /// invalidates the programs' learning hints.
    pub generation: u32,
    /// Stamp of the valid [`TunnelHeaders`] cache entries: user space starts a
    /// new one (never 0) whenever a FIB answer or what the headers are built
    /// from may have changed (a route, neighbour, address or link change; a
    /// new table; a settings write; another AP-side interface), and entries
    /// with another stamp are built again.
    pub next_hop_generation: u32,
    /// [`ABI_VERSION`] of the user space that wrote this entry. The programs
    /// never read it; a restarted `ferry run` reads it from the pinned map
    /// and adopts the pins only when it equals its own.
    pub abi_version: u32,
    /// Coarse monotonic ns until which the programs may answer from their
    /// next-hop cache: user space renews it with every new next-hop
    /// generation ([`NEXT_HOP_LEASE_SECS`] ahead). The pinned programs go on
    /// forwarding while `ferry run` is stopped or dead, and nothing would
    /// start new generations then, so past this time a cached answer is
    /// looked up again every [`NEXT_HOP_LEASE_CHECK`] uses.
    pub next_hop_until: u64,
}

/// Version of the map ABI: the maps, their key and value layouts and the
/// meaning of their flags. Bump it with any change that makes pinned maps of
/// an older build unreadable or misread by this one; a `ferry run` refuses
/// to adopt pins written under another version (see `Settings::abi_version`).
pub const ABI_VERSION: u32 = 6;

/// A downstream tunnel's outer headers as this CPU last built them: the
/// next hop from the FIB (or the tunnel's configured neighbour when the
/// FIB had no answer) and everything else from the tunnel entry and the
/// settings, per-frame fields left zero ([`encap::Outer`]). Valid while
/// `generation` equals `Settings::next_hop_generation` (user space starts
/// a new one with every table, settings or route change) and `ap` and
/// `flags` are still the tunnel's: a session binding moves a tunnel in
/// place, without a new generation, and the AP's port, learned in place
/// too, is written per frame.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunnelHeaders {
    /// The AP address the headers are for, as [`TunnelDown::ap_words`].
    pub ap: [u64; 2],
    /// `Settings::next_hop_generation` when built; 0 never matches.
    pub generation: u32,
    /// Frames that used these headers since they were built (the lease
    /// is checked every [`NEXT_HOP_LEASE_CHECK`]th).
    pub uses: u32,
    /// The tunnel's `DOWN_*` flags when built (they pick the shape).
    pub flags: u16,
    /// Always zero.
    pub pad: [u8; 6],
    /// The headers.
    pub outer: encap::Outer,
}

impl TunnelDown {
    /// The AP address as two words: two 8-byte compares in the program
    /// where comparing the byte array costs sixteen.
    #[inline(always)]
    pub fn ap_words(&self) -> [u64; 2] {
        const _: () = assert!(core::mem::offset_of!(TunnelDown, ap) == 0);
        // SAFETY: `ap` is the first field of an 8-aligned struct, so it is
        // 8-aligned and 16 bytes long; every bit pattern is a valid u64.
        unsafe { *(&self.ap as *const Addr as *const [u64; 2]) }
    }
}

/// The per-CPU counter block: one u64 per [`Reason`] and per [`Event`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterBlock {
    /// Totals by reason index (slots past `REASON_COUNT` stay zero).
    pub v: [u64; REASON_SLOTS],
    /// Totals by event index (slots past `EVENT_COUNT` stay zero).
    pub e: [u64; EVENT_SLOTS],
}

/// Reason slots in a [`CounterBlock`]: a power of two, so the program can
/// bound an index with a mask the verifier understands.
pub const REASON_SLOTS: usize = 64;
/// Event slots in a [`CounterBlock`] (power of two, as above).
pub const EVENT_SLOTS: usize = 8;

/// The [`CounterBlock::e`] slot that counts upstream frames whose source
/// station was looked up in the station table because this CPU's learning
/// hint did not vouch for it. A cost statistic, not an [`Event`]: it
/// depends on which CPU saw which frame before, so the reference model does
/// not predict it. Per forwarded frame it says how often the hint misses:
/// near zero while the talking stations fit the hints (one read per
/// station per epoch), near one when they cannot.
/// It took a slot that was always zero, so no ABI bump.
pub const STAT_STATION_READS: usize = EVENT_SLOTS - 1;

/// The [`CounterBlock::e`] slot that counts FIB lookups made by the
/// downstream path: its header cache missed (first frame of a tunnel on a
/// CPU, a new next-hop generation, the tunnel's address or flags changed
/// in place, or a lease check past the lease). A cost statistic like
/// [`STAT_STATION_READS`]; it took a slot that was always zero.
pub const STAT_FIB_LOOKUPS: usize = EVENT_SLOTS - 2;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data, repr(C), explicit padding, no invalid bit patterns.
    unsafe impl aya::Pod for super::TunnelKey {}
    unsafe impl aya::Pod for super::TunnelInfo {}
    unsafe impl aya::Pod for super::TunnelStats {}
    unsafe impl aya::Pod for super::GroupStats {}
    unsafe impl aya::Pod for super::TunnelHeaders {}
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::CounterBlock {}
    unsafe impl aya::Pod for super::TunnelDown {}
    unsafe impl aya::Pod for super::StationKey {}
    unsafe impl aya::Pod for super::StationInfo {}
}

/// What the program does with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Sent on (XDP_TX or XDP_REDIRECT).
    Forward,
    /// Handed to the host stack untouched (XDP_PASS).
    Pass,
    /// Dropped (XDP_DROP).
    Drop,
}

macro_rules! reasons {
    ($( $(#[$doc:meta])* $variant:ident = $idx:literal, $name:literal, $dir:ident, $action:ident; )*) => {
        /// Why a packet got its verdict. Each packet counts exactly once under
        /// one reason of its direction plus once under that direction's
        /// received counter, so per direction `received == sum of the others`.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Reason {
            $( $(#[$doc])* $variant = $idx, )*
        }

        impl Reason {
            /// Every reason, in counter-index order.
            pub const ALL: &'static [Reason] = &[ $( Reason::$variant, )* ];

            /// Stable snake_case name (used in CLI, JSON and metrics).
            pub const fn name(self) -> &'static str {
                match self { $( Reason::$variant => $name, )* }
            }

            /// The action this reason implies ([`Reason::Received`] is reported as Pass
            /// but is not a verdict).
            pub const fn action(self) -> Action {
                match self { $( Reason::$variant => Action::$action, )* }
            }

            /// Which program counts it.
            pub const fn direction(self) -> Direction {
                match self { $( Reason::$variant => Direction::$dir, )* }
            }

            /// Counter index.
            #[inline(always)]
            pub const fn index(self) -> u32 {
                self as u32
            }

        }
    };
}

reasons! {
    /// Every packet the program saw.
    Received = 0, "received", Up, Pass;
    /// Client frame forwarded upstream into the client VLAN.
    Forwarded = 1, "forwarded", Up, Forward;
    /// Not IPv4/IPv6 (ARP, LLDP, ...), or more than one outer VLAN tag.
    PassNotIp = 2, "pass_not_ip", Up, Pass;
    /// IP header not parseable here (bad version/IHL, truncated): the host decides.
    PassBadIp = 3, "pass_bad_ip", Up, Pass;
    /// Not addressed to one of this node's CAPWAP data addresses.
    PassNotLocal = 4, "pass_not_local", Up, Pass;
    /// To this node but not UDP to the data port (SSH, CAPWAP control, ...).
    PassNotData = 5, "pass_not_data", Up, Pass;
    /// Fragmented outer IP datagram (the host reassembles it).
    PassIpFragment = 6, "pass_ip_fragment", Up, Pass;
    /// IPv6 with extension headers.
    PassIpv6Ext = 7, "pass_ipv6_ext", Up, Pass;
    /// CAPWAP data channel keepalive (K): answered by the control process.
    PassKeepalive = 8, "pass_keepalive", Up, Pass;
    /// DTLS-protected data channel (preamble type 1).
    PassDtls = 9, "pass_dtls", Up, Pass;
    /// CAPWAP fragment (F): reassembled by the slow path.
    PassCapwapFragment = 10, "pass_capwap_fragment", Up, Pass;
    /// 802.11 management frame: control plane.
    PassDot11Mgmt = 11, "pass_dot11_mgmt", Up, Pass;
    /// EAPOL (802.1X) frame: control plane.
    PassEapol = 12, "pass_eapol", Up, Pass;
    /// 802.11 A-MSDU: several subframes, split by the slow path.
    PassAmsdu = 13, "pass_amsdu", Up, Pass;
    /// IP or UDP length inconsistent with the packet.
    DropBadLength = 14, "drop_bad_length", Up, Drop;
    /// UDP payload shorter than a CAPWAP header.
    DropCapwapShort = 15, "drop_capwap_short", Up, Drop;
    /// CAPWAP preamble version is not 0.
    DropBadVersion = 16, "drop_bad_version", Up, Drop;
    /// CAPWAP preamble type is neither clear (0) nor DTLS (1).
    DropBadType = 17, "drop_bad_type", Up, Drop;
    /// HLEN < 2 or past the end of the datagram.
    DropBadHlen = 18, "drop_bad_hlen", Up, Drop;
    /// Radio MAC or Wireless Specific Information runs past HLEN.
    DropBadOptional = 19, "drop_bad_optional", Up, Drop;
    /// Source (address, port) is not a known tunnel.
    DropUnknownTunnel = 20, "drop_unknown_tunnel", Up, Drop;
    /// Tunnel is in standby (this node is its backup AC).
    DropStandby = 21, "drop_standby", Up, Drop;
    /// Native frame (T=1) of a wireless binding other than IEEE 802.11.
    DropBadWbid = 22, "drop_bad_wbid", Up, Drop;
    /// Inner frame shorter than its header.
    DropInnerShort = 23, "drop_inner_short", Up, Drop;
    /// Client frame carries its own VLAN tag (VLAN hopping attempt).
    DropInnerVlan = 24, "drop_inner_vlan", Up, Drop;
    /// 802.11 control or reserved-type frame: nothing to bridge.
    DropDot11NotData = 25, "drop_dot11_not_data", Up, Drop;
    /// 802.11 null-function data frame: no payload.
    DropNullData = 26, "drop_null_data", Up, Drop;
    /// 802.11 frame still encrypted (Protected set).
    DropProtected = 27, "drop_protected", Up, Drop;
    /// 802.11 body empty, too long for an 802.3 length frame, or a SNAP
    /// header carrying a length instead of an EtherType.
    DropBadPayload = 28, "drop_bad_payload", Up, Drop;
    /// No egress interface configured, or the redirect failed.
    DropNoEgress = 29, "drop_no_egress", Up, Drop;
    /// A packet helper (adjust head/tail) failed.
    DropInternal = 30, "drop_internal", Up, Drop;
    /// Every frame the downstream program saw.
    DownReceived = 31, "down_received", Down, Pass;
    /// Client frame encapsulated down its AP's tunnel.
    DownForwarded = 32, "down_forwarded", Down, Forward;
    /// Not an 802.1Q-tagged frame: the host handles it.
    DownPassNotTagged = 33, "down_pass_not_tagged", Down, Pass;
    /// Tagged with a VLAN that is not a client VLAN.
    DownPassOtherVlan = 34, "down_pass_other_vlan", Down, Pass;
    /// Broadcast or multicast: replicated by the slow path.
    DownPassGroup = 35, "down_pass_group", Down, Pass;
    /// Larger than the tunnel MTU once encapsulated: fragmented by the slow path.
    DownPassMtu = 36, "down_pass_mtu", Down, Pass;
    /// No station with that MAC in that VLAN (unknown unicast).
    DownDropUnknownStation = 37, "down_drop_unknown_station", Down, Drop;
    /// The station's tunnel no longer exists or serves another VLAN.
    DownDropNoTunnel = 38, "down_drop_no_tunnel", Down, Drop;
    /// The station's tunnel is in standby.
    DownDropStandby = 39, "down_drop_standby", Down, Drop;
    /// Any-port tunnel whose AP port has not been seen yet.
    DownDropNoApPort = 40, "down_drop_no_ap_port", Down, Drop;
    /// Native 802.11 tunnel but no BSSID known for the station.
    DownDropNoBssid = 41, "down_drop_no_bssid", Down, Drop;
    /// Neither the FIB nor the tunnel config gives a next-hop MAC.
    DownDropNoNeighbour = 42, "down_drop_no_neighbour", Down, Drop;
    /// No AP-side egress configured, or the redirect failed.
    DownDropNoEgress = 43, "down_drop_no_egress", Down, Drop;
    /// A packet helper failed.
    DownDropInternal = 44, "down_drop_internal", Down, Drop;
}

/// Number of counter slots.
pub const REASON_COUNT: u32 = 45;

/// Which program a reason belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `ferry_upstream` (AP side to client VLAN).
    Up,
    /// `ferry_downstream` (client VLAN to AP side).
    Down,
}

impl Direction {
    /// The received counter of this direction.
    pub const fn received(self) -> Reason {
        match self {
            Direction::Up => Reason::Received,
            Direction::Down => Reason::DownReceived,
        }
    }
}

/// Station learning events (not verdicts: a packet may cause none or one).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    /// A new station was learned.
    StationLearned = 0,
    /// A known station appeared behind another tunnel (roaming).
    StationMoved = 1,
    /// Not learned: the tunnel has reached its station limit.
    StationLimit = 2,
    /// A static station was seen behind another tunnel and kept.
    StationStaticKept = 3,
    /// An any-port tunnel's AP port was learned or changed.
    ApPortLearned = 4,
}

/// Number of event slots.
pub const EVENT_COUNT: u32 = 5;

impl Event {
    /// Every event, by index.
    pub const ALL: &'static [Event] = &[
        Event::StationLearned,
        Event::StationMoved,
        Event::StationLimit,
        Event::StationStaticKept,
        Event::ApPortLearned,
    ];

    /// Stable snake_case name.
    pub const fn name(self) -> &'static str {
        match self {
            Event::StationLearned => "station_learned",
            Event::StationMoved => "station_moved",
            Event::StationLimit => "station_limit",
            Event::StationStaticKept => "station_static_kept",
            Event::ApPortLearned => "ap_port_learned",
        }
    }

    /// Counter index.
    #[inline(always)]
    pub const fn index(self) -> u32 {
        self as u32
    }
}

const _: () = assert!(Reason::ALL.len() == REASON_COUNT as usize);
const _: () = assert!(Event::ALL.len() == EVENT_COUNT as usize);
const _: () = assert!(REASON_COUNT as usize <= REASON_SLOTS && REASON_SLOTS.is_power_of_two());
const _: () = assert!(EVENT_COUNT as usize <= EVENT_SLOTS && EVENT_SLOTS.is_power_of_two());
const _: () = assert!(EVENT_COUNT as usize <= STAT_FIB_LOOKUPS);
const _: () = assert!(core::mem::size_of::<TunnelDown>() == 64);
const _: () = assert!(core::mem::size_of::<StationInfo>() == 24);
const _: () = assert!(core::mem::size_of::<StationKey>() == 8);
const _: () = assert!(core::mem::size_of::<Settings>() == 56);
const _: () = assert!(core::mem::size_of::<TunnelHeaders>() == 120);

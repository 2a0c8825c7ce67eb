//! The map ABI between the XDP programs and user space: map names, key and
//! value layouts, and the counter index of every verdict reason.
//!
//! All types are `#[repr(C)]` with explicit padding fields so that the bytes
//! user space writes are exactly the bytes the kernel hashes and compares.

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
/// Name of the DEVMAP used to redirect to the client-side interface.
pub const MAP_EGRESS: &str = "EGRESS";

/// Name of the upstream (AP side) XDP program.
pub const PROG_UPSTREAM: &str = "ferry_upstream";
/// Name of the pass-everything program (veth peers of a redirect target).
pub const PROG_PASS: &str = "ferry_pass";
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
    /// CAPWAP data port the node listens on (host order; 0 means 5247).
    pub data_port: u16,
    /// `EGRESS_*`.
    pub egress: u8,
    /// Number of valid entries in `local4`, or [`LOCAL4_IN_MAP`]. Derived
    /// from the local address list when it is installed.
    pub local4_count: u8,
    /// This node's IPv4 data addresses when there are few of them: the
    /// common case costs compares instead of a hash lookup.
    pub local4: [[u8; 4]; LOCAL4_INLINE],
}

/// The per-CPU counter block: one u64 per [`Reason`], by index.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterBlock {
    /// Totals by reason index.
    pub v: [u64; REASON_COUNT as usize],
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data, repr(C), explicit padding, no invalid bit patterns.
    unsafe impl aya::Pod for super::TunnelKey {}
    unsafe impl aya::Pod for super::TunnelInfo {}
    unsafe impl aya::Pod for super::TunnelStats {}
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::CounterBlock {}
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
    ($( $(#[$doc:meta])* $variant:ident = $idx:literal, $name:literal, $action:ident; )*) => {
        /// Why a packet got its verdict. Each packet counts exactly once under
        /// one reason (plus once under [`Reason::Received`]), so
        /// `received == sum of all other reasons` always holds.
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

            /// Counter index.
            #[inline(always)]
            pub const fn index(self) -> u32 {
                self as u32
            }

            /// The reason at counter index `i`.
            pub const fn from_index(i: u32) -> Option<Reason> {
                match i { $( $idx => Some(Reason::$variant), )* _ => None }
            }
        }
    };
}

reasons! {
    /// Every packet the program saw.
    Received = 0, "received", Pass;
    /// Client frame forwarded upstream into the client VLAN.
    Forwarded = 1, "forwarded", Forward;
    /// Not IPv4/IPv6 (ARP, LLDP, ...), or more than one outer VLAN tag.
    PassNotIp = 2, "pass_not_ip", Pass;
    /// IP header not parseable here (bad version/IHL, truncated): the host decides.
    PassBadIp = 3, "pass_bad_ip", Pass;
    /// Not addressed to one of this node's CAPWAP data addresses.
    PassNotLocal = 4, "pass_not_local", Pass;
    /// To this node but not UDP to the data port (SSH, CAPWAP control, ...).
    PassNotData = 5, "pass_not_data", Pass;
    /// Fragmented outer IP datagram (the host reassembles it).
    PassIpFragment = 6, "pass_ip_fragment", Pass;
    /// IPv6 with extension headers.
    PassIpv6Ext = 7, "pass_ipv6_ext", Pass;
    /// CAPWAP data channel keepalive (K): answered by the control process.
    PassKeepalive = 8, "pass_keepalive", Pass;
    /// DTLS-protected data channel (preamble type 1).
    PassDtls = 9, "pass_dtls", Pass;
    /// CAPWAP fragment (F): reassembled by the slow path.
    PassCapwapFragment = 10, "pass_capwap_fragment", Pass;
    /// 802.11 management frame: control plane.
    PassDot11Mgmt = 11, "pass_dot11_mgmt", Pass;
    /// EAPOL (802.1X) frame: control plane.
    PassEapol = 12, "pass_eapol", Pass;
    /// 802.11 A-MSDU: several subframes, split by the slow path.
    PassAmsdu = 13, "pass_amsdu", Pass;
    /// IP or UDP length inconsistent with the packet.
    DropBadLength = 14, "drop_bad_length", Drop;
    /// UDP payload shorter than a CAPWAP header.
    DropCapwapShort = 15, "drop_capwap_short", Drop;
    /// CAPWAP preamble version is not 0.
    DropBadVersion = 16, "drop_bad_version", Drop;
    /// CAPWAP preamble type is neither clear (0) nor DTLS (1).
    DropBadType = 17, "drop_bad_type", Drop;
    /// HLEN < 2 or past the end of the datagram.
    DropBadHlen = 18, "drop_bad_hlen", Drop;
    /// Radio MAC or Wireless Specific Information runs past HLEN.
    DropBadOptional = 19, "drop_bad_optional", Drop;
    /// Source (address, port) is not a known tunnel.
    DropUnknownTunnel = 20, "drop_unknown_tunnel", Drop;
    /// Tunnel is in standby (this node is its backup AC).
    DropStandby = 21, "drop_standby", Drop;
    /// Native frame (T=1) of a wireless binding other than IEEE 802.11.
    DropBadWbid = 22, "drop_bad_wbid", Drop;
    /// Inner frame shorter than its header.
    DropInnerShort = 23, "drop_inner_short", Drop;
    /// Client frame carries its own VLAN tag (VLAN hopping attempt).
    DropInnerVlan = 24, "drop_inner_vlan", Drop;
    /// 802.11 control or reserved-type frame: nothing to bridge.
    DropDot11NotData = 25, "drop_dot11_not_data", Drop;
    /// 802.11 null-function data frame: no payload.
    DropNullData = 26, "drop_null_data", Drop;
    /// 802.11 frame still encrypted (Protected set).
    DropProtected = 27, "drop_protected", Drop;
    /// 802.11 body empty, too long for an 802.3 length frame, or a SNAP
    /// header carrying a length instead of an EtherType.
    DropBadPayload = 28, "drop_bad_payload", Drop;
    /// No egress interface configured, or the redirect failed.
    DropNoEgress = 29, "drop_no_egress", Drop;
    /// A packet helper (adjust head/tail) failed.
    DropInternal = 30, "drop_internal", Drop;
}

/// Number of counter slots.
pub const REASON_COUNT: u32 = 31;

const _: () = assert!(Reason::ALL.len() == REASON_COUNT as usize);

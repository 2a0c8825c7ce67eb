//! ferry's TOML configuration.
//!
//! ```toml
//! [node]
//! name = "ac1"
//! addresses = ["198.18.0.1"]   # this node's CAPWAP data addresses (IPv4 and/or IPv6)
//! data_port = 5247             # optional, default 5247
//! [interfaces]
//! ap_side = "eth0"
//! client_side = "eth0"         # may equal ap_side (one trunk port)
//! [forwarding]                 # optional
//! default_vlan = 200           # optional, default 200
//! client_vlans = [200]         # optional, default: default_vlan and every tunnel's VLAN
//! station_limit = 512          # optional: learned stations per tunnel
//! station_capacity = 262144    # optional: station table size (LRU)
//! [downstream]                 # optional
//! dscp = [0, 8, 16, 24, 32, 40, 48, 56]  # outer DSCP by 802.1p priority
//! df = true                    # IPv4 Don't Fragment on encapsulated packets
//! mtu = 1500                   # default tunnel MTU (outer IP packet)
//! next_hop_mac = "02:..."      # neighbour when the FIB has none (with source_mac)
//! source_mac = "02:..."        # our AP-side MAC for that case
//! [admin]                      # optional
//! socket = "/run/ferry/ac1.sock"   # default /run/ferry/<node name>.sock
//! [metrics]                    # optional
//! listen = "127.0.0.1:9847"    # Prometheus text exposition; "" turns it off
//! [keepalive]                  # optional
//! dead_interval = 60           # seconds without a keepalive before a tunnel is dead
//! unknown_rate = 10            # answers per second to unknown Session IDs
//! [[tunnel]]
//! ap = "ap1"
//! address = "198.18.1.10"      # or session_id = "<32 hex digits>": bound by the
//!                              # first keepalive carrying it (APs behind NAT)
//! port = 5247                  # optional: without it, any port from that address
//! state = "active"             # optional, default "active"; "standby" = installed, not forwarding
//!                              # (older spelling: role = "master" | "backup")
//! vlan = 200                   # optional, else default_vlan
//! format = "802.3"             # optional: or "802.11" (native frames downstream)
//! radio_mac = "02:..."         # optional: send the CAPWAP Radio MAC field
//! mtu = 1500                   # optional, else downstream.mtu
//! udp_lite = true              # IPv6 only, default true; false = UDP with full checksum
//! next_hop_mac = "02:..."      # optional, else downstream.next_hop_mac
//! station_limit = 512          # optional, else forwarding.station_limit
//! group = "group1"             # the tunnel's HA group: required with [ha], refused without
//! [[station]]                  # static stations, never moved by learning
//! mac = "02:..."
//! ap = "ap1"
//! radio = 0                    # optional, default 0
//! bssid = "02:..."             # optional (needed downstream by 802.11 tunnels)
//! ```
//!
//! `[ha]` and `[[group]]` (the HA pair) are described in [`ha`].
//!
//! A file is validated as a whole before anything is applied: the first
//! problem is reported as `FILE:LINE:COLUMN: reason` and nothing changes.
//! Unknown keys are errors (a typo must not silently fall back to a default).
//!
//! The module by concern: [`schema`] (what the parser reads, with spans),
//! [`source`] (error positions), [`entries`] and [`fast`] (reading large
//! tables entry by entry; the fast path is measured, see `fast::scalars`),
//! [`validate`] and [`tunnel`] (everything a value must satisfy), [`render`] (a validated
//! table back to plain entries, for the state file). Lowering a
//! configuration to map entries is `crate::tables::lower`.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    str::FromStr,
};

mod entries;
pub mod fast;
pub mod ha;
pub mod render;
mod schema;
mod source;
mod tunnel;
mod validate;

pub use ha::{ElectionMode, HaConfig};
pub use schema::{StationEntry, TunnelEntry};
pub use source::ConfigError;

/// Default outer DSCP by 802.1p priority: class selector CS0-CS7.
pub const DEFAULT_DSCP: [u8; 8] = [0, 8, 16, 24, 32, 40, 48, 56];
/// Default tunnel MTU.
pub const DEFAULT_MTU: u16 = 1500;
/// Default client VLAN.
pub const DEFAULT_VLAN: u16 = 200;
/// Default metrics address.
pub const DEFAULT_METRICS: &str = "127.0.0.1:9847";
/// Largest configuration or table file read (a full 65,536-tunnel table
/// with every key written out is about 20 MiB).
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Whether a tunnel forwards on this node. (The word "role" belongs to the
/// HA pair: a node's role per AP group.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelState {
    /// Installed and forwarding.
    Active,
    /// Installed; its traffic is dropped and counted (`drop_standby`).
    Standby,
}

impl TunnelState {
    /// Config and API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TunnelState::Active => "active",
            TunnelState::Standby => "standby",
        }
    }
}

impl FromStr for TunnelState {
    type Err = String;
    /// "active" or "standby"; the older "master" and "backup" too.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "active" | "master" => Ok(TunnelState::Active),
            "standby" | "backup" => Ok(TunnelState::Standby),
            other => Err(format!(
                "tunnel state {other:?} must be \"active\" or \"standby\""
            )),
        }
    }
}

/// The frame format a tunnel carries downstream (CAPWAP T bit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Format {
    /// 802.3 frames (T=0): the AP converts.
    #[serde(rename = "802.3")]
    Dot3,
    /// Native 802.11 frames (T=1): ferry converts.
    #[serde(rename = "802.11")]
    Dot11,
}

impl Format {
    /// Config and API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Dot3 => "802.3",
            Format::Dot11 => "802.11",
        }
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "802.3" => Ok(Format::Dot3),
            "802.11" => Ok(Format::Dot11),
            other => Err(format!(
                "tunnel format {other:?} must be \"802.3\" or \"802.11\""
            )),
        }
    }
}

/// One `[[tunnel]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelConfig {
    /// AP name (unique).
    pub ap: String,
    /// AP address; `None` for a tunnel declared by Session ID, whose
    /// address and port come from its first keepalive.
    pub address: Option<IpAddr>,
    /// Session ID the tunnel is declared by (instead of an address).
    pub session_id: Option<[u8; 16]>,
    /// AP source port; `None` = any port.
    pub port: Option<u16>,
    /// Forwarding (active) or installed in standby.
    pub state: TunnelState,
    /// Client VLAN.
    pub vlan: u16,
    /// Frame format downstream.
    pub format: Format,
    /// Radio MAC field sent downstream.
    pub radio_mac: Option<[u8; 6]>,
    /// Outer IP MTU downstream.
    pub mtu: u16,
    /// IPv6: UDP-Lite (default) or UDP.
    pub udp_lite: bool,
    /// Next-hop MAC when the FIB has none.
    pub next_hop_mac: Option<[u8; 6]>,
    /// Learned-station limit.
    pub station_limit: u32,
    /// HA group (required with `[ha]`, refused without).
    pub group: Option<String>,
    /// 1-based line of the `[[tunnel]]` entry.
    pub line: usize,
    /// 1-based line of its `vlan` key (the entry's line when the VLAN is
    /// the default): errors about the VLAN point there.
    pub vlan_line: usize,
}

/// One `[[station]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StationConfig {
    /// Client MAC.
    pub mac: [u8; 6],
    /// Index of its tunnel in `Config::tunnels`.
    pub tunnel: usize,
    /// Radio id.
    pub radio: u8,
    /// BSSID, if known.
    pub bssid: Option<[u8; 6]>,
}

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Node name (used in pin paths, logs and metrics).
    pub name: String,
    /// Local CAPWAP data addresses.
    pub addresses: Vec<IpAddr>,
    /// CAPWAP data port.
    pub data_port: u16,
    /// Interface facing the APs.
    pub ap_side: String,
    /// Interface facing the client VLAN trunk.
    pub client_side: String,
    /// VLAN for tunnels that name none.
    pub default_vlan: u16,
    /// Tunnels, in file order.
    pub tunnels: Vec<TunnelConfig>,
    /// VLANs served downstream.
    pub client_vlans: Vec<u16>,
    /// Station table capacity.
    pub station_capacity: u32,
    /// Outer DSCP by 802.1p priority.
    pub dscp: [u8; 8],
    /// IPv4 DF downstream.
    pub df: bool,
    /// Our AP-side MAC for configured next hops.
    pub source_mac: Option<[u8; 6]>,
    /// Static stations.
    pub stations: Vec<StationConfig>,
    /// Admin socket path.
    pub admin_socket: PathBuf,
    /// Metrics listen address; `None` = off.
    pub metrics: Option<std::net::SocketAddr>,
    /// Keepalive dead interval.
    pub dead_interval: std::time::Duration,
    /// Answers per second to keepalives with unknown Session IDs.
    pub unknown_rate: u32,
    /// Shortest time between two moves of a session tunnel's binding.
    pub rebind_interval: std::time::Duration,
    /// A swap or reload that removes more than this share of the live
    /// tunnels (percent), or all of them, is refused without `--force`.
    pub max_removal_percent: u8,
    /// The HA pair (`None`: one node, as before HA existed).
    pub ha: Option<HaConfig>,
    /// Defaults a table file's tunnels take.
    pub(crate) defaults: TunnelDefaults,
    /// Whether `forwarding.client_vlans` was given (else derived).
    pub(crate) client_vlans_given: bool,
}

/// Tunnel settings that come from the file's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TunnelDefaults {
    pub(crate) vlan: u16,
    pub(crate) station_limit: u32,
    pub(crate) mtu: u16,
    pub(crate) next_hop: Option<[u8; 6]>,
    pub(crate) has_source_mac: bool,
    /// The `[[group]]` names with `[ha]`; `None` without it.
    pub(crate) groups: Option<Vec<String>>,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read_capped(path)?;
        Self::parse(path, &text)
    }

    /// Whether frames go back out of the AP-side interface (XDP_TX).
    pub fn one_arm(&self) -> bool {
        self.ap_side == self.client_side
    }

    /// Index of tunnel `ap` in [`Config::tunnels`].
    pub fn tunnel_index(&self, ap: &str) -> Option<usize> {
        self.tunnels.iter().position(|t| t.ap == ap)
    }

    /// The data plane group index of tunnel `t` (0: no HA group).
    pub fn group_index(&self, t: &TunnelConfig) -> u16 {
        match (&self.ha, &t.group) {
            (Some(ha), Some(g)) => ha.group_index(g).unwrap_or(0),
            _ => 0,
        }
    }

    /// Tunnel `ap`.
    pub fn tunnel_named(&self, ap: &str) -> Option<&TunnelConfig> {
        self.tunnels.iter().find(|t| t.ap == ap)
    }
}

/// Reads a configuration or table file of at most [`MAX_FILE_BYTES`]: a
/// bigger one (or `/dev/zero`) is refused before it is read into memory.
pub fn read_capped(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read as _;
    let f = std::fs::File::open(path)
        .map_err(|e| ConfigError::whole(path, format!("cannot read: {e}")))?;
    let mut text = String::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| ConfigError::whole(path, format!("cannot read: {e}")))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(ConfigError::whole(
            path,
            format!("larger than {} MiB: not a ferry file", MAX_FILE_BYTES >> 20),
        ));
    }
    Ok(text)
}

/// A Session ID as 32 hex digits (what [`parse_session_id`] reads).
pub fn format_session_id(sid: &[u8; 16]) -> String {
    sid.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses a Session ID written as 32 hex digits (`:`/`-`/spaces allowed).
pub fn parse_session_id(s: &str) -> Option<[u8; 16]> {
    let hex: String = s
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | ' '))
        .collect();
    if hex.len() != 32 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests;

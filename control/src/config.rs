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
//! role = "master"              # optional, default "master"; "backup" = installed in standby
//! vlan = 200                   # optional, else default_vlan
//! format = "802.3"             # optional: or "802.11" (native frames downstream)
//! radio_mac = "02:..."         # optional: send the CAPWAP Radio MAC field
//! mtu = 1500                   # optional, else downstream.mtu
//! udp_lite = true              # IPv6 only, default true; false = UDP with full checksum
//! next_hop_mac = "02:..."      # optional, else downstream.next_hop_mac
//! station_limit = 512          # optional, else forwarding.station_limit
//! [[station]]                  # static stations, never moved by learning
//! mac = "02:..."
//! ap = "ap1"
//! radio = 0                    # optional, default 0
//! bssid = "02:..."             # optional (needed downstream by 802.11 tunnels)
//! ```
//!
//! A file is validated as a whole before anything is applied: the first
//! problem is reported as `FILE:LINE:COLUMN: reason` and nothing changes.
//! Unknown keys are errors (a typo must not silently fall back to a default).

use std::{
    collections::{HashMap, HashSet},
    fmt,
    net::IpAddr,
    ops::Range,
    path::{Path, PathBuf},
};

use ferry_dataplane::tables::{Station, Tables, Tunnel, addr_key, parse_mac};
use ferry_ebpf::{
    abi::{
        self, DOWN_FIXED_PORT, DOWN_IPV6, DOWN_NATIVE, DOWN_NEIGHBOUR, DOWN_RADIO_MAC,
        DOWN_STANDBY, DOWN_UDPLITE, EGRESS_REDIRECT, EGRESS_TX, Settings, TUNNEL_STANDBY,
        TunnelDown, TunnelInfo, TunnelKey,
    },
    capwap,
};

/// Default outer DSCP by 802.1p priority: class selector CS0-CS7.
pub const DEFAULT_DSCP: [u8; 8] = [0, 8, 16, 24, 32, 40, 48, 56];
/// Default tunnel MTU.
pub const DEFAULT_MTU: u16 = 1500;
use serde::Deserialize;
use toml::Spanned;

/// Default client VLAN.
pub const DEFAULT_VLAN: u16 = 200;

/// A configuration error with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or `<input>`).
    pub file: PathBuf,
    /// 1-based line, if known.
    pub line: Option<usize>,
    /// 1-based column, if known.
    pub column: Option<usize>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Role of a tunnel on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// This node is the AP's master AC: forward its data.
    Master,
    /// This node is the AP's backup AC: tunnel installed in standby.
    Backup,
}

impl Role {
    /// Config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Backup => "backup",
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
    /// Role.
    pub role: Role,
    /// Client VLAN.
    pub vlan: u16,
    /// Native 802.11 frames downstream (T=1).
    pub native: bool,
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
    /// 1-based line of the `[[tunnel]]` entry.
    pub line: usize,
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
    /// Defaults a table file's tunnels take.
    defaults: TunnelDefaults,
    /// Whether `forwarding.client_vlans` was given (else derived).
    client_vlans_given: bool,
}

/// Default metrics address.
pub const DEFAULT_METRICS: &str = "127.0.0.1:9847";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node: Spanned<RawNode>,
    interfaces: Spanned<RawInterfaces>,
    forwarding: Option<Spanned<RawForwarding>>,
    downstream: Option<Spanned<RawDownstream>>,
    #[serde(default)]
    tunnel: Vec<Spanned<RawTunnel>>,
    #[serde(default)]
    station: Vec<Spanned<RawStation>>,
    admin: Option<Spanned<RawAdmin>>,
    metrics: Option<Spanned<RawMetrics>>,
    keepalive: Option<Spanned<RawKeepalive>>,
}

/// A swap table file: tunnels and static stations only.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    #[serde(default)]
    tunnel: Vec<Spanned<RawTunnel>>,
    #[serde(default)]
    station: Vec<Spanned<RawStation>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    socket: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeepalive {
    dead_interval: Option<Spanned<i64>>,
    unknown_rate: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDownstream {
    dscp: Option<Spanned<Vec<Spanned<i64>>>>,
    df: Option<bool>,
    mtu: Option<Spanned<i64>>,
    next_hop_mac: Option<Spanned<String>>,
    source_mac: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStation {
    mac: Spanned<String>,
    ap: Spanned<String>,
    radio: Option<Spanned<i64>>,
    bssid: Option<Spanned<String>>,
    vlan: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: Spanned<String>,
    addresses: Spanned<Vec<Spanned<String>>>,
    data_port: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterfaces {
    ap_side: Spanned<String>,
    client_side: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForwarding {
    default_vlan: Option<Spanned<i64>>,
    client_vlans: Option<Spanned<Vec<Spanned<i64>>>>,
    station_limit: Option<Spanned<i64>>,
    station_capacity: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTunnel {
    ap: Spanned<String>,
    address: Option<Spanned<String>>,
    session_id: Option<Spanned<String>>,
    port: Option<Spanned<i64>>,
    role: Option<Spanned<String>>,
    vlan: Option<Spanned<i64>>,
    format: Option<Spanned<String>>,
    radio_mac: Option<Spanned<String>>,
    mtu: Option<Spanned<i64>>,
    udp_lite: Option<Spanned<bool>>,
    next_hop_mac: Option<Spanned<String>>,
    station_limit: Option<Spanned<i64>>,
}

/// Turns byte spans into line/column for errors. Spans are relative to
/// `base`: entries parsed on their own (see [`split_entries`]) get a
/// `Source` rebased to where they start in the file.
#[derive(Clone)]
struct Source<'a> {
    file: &'a Path,
    text: &'a str,
    /// Byte offsets of the newlines.
    newlines: std::rc::Rc<[usize]>,
    base: usize,
}

impl<'a> Source<'a> {
    fn rebased(&self, base: usize) -> Self {
        Self {
            base,
            ..self.clone()
        }
    }

    /// An error at the start of 1-based `line`.
    fn at_line(&self, line: usize, reason: impl Into<String>) -> ConfigError {
        let offset = if line <= 1 {
            0
        } else {
            self.newlines
                .get(line - 2)
                .map_or(self.text.len(), |n| n + 1)
        };
        self.at_offset(offset, reason)
    }

    /// An error at absolute byte `offset`.
    fn at_offset(&self, offset: usize, reason: impl Into<String>) -> ConfigError {
        self.rebased(0).err(Some(offset..offset), reason)
    }

    fn err(&self, span: Option<Range<usize>>, reason: impl Into<String>) -> ConfigError {
        let (line, column) = match span {
            Some(s) => {
                let (l, c) = self.position(self.base + s.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            reason: reason.into(),
        }
    }

    fn at<T>(&self, v: &Spanned<T>, reason: impl Into<String>) -> ConfigError {
        self.err(Some(v.span()), reason)
    }

    fn new(file: &'a Path, text: &'a str) -> Self {
        let newlines: Vec<usize> = text
            .bytes()
            .enumerate()
            .filter(|(_, b)| *b == b'\n')
            .map(|(i, _)| i)
            .collect();
        let newlines = newlines.into();
        Self {
            file,
            text,
            newlines,
            base: 0,
        }
    }

    /// 1-based line and column (in characters) of byte `offset`; a binary
    /// search, since large tables ask once per entry.
    fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.newlines.partition_point(|&n| n < offset);
        let start = if line == 0 {
            0
        } else {
            self.newlines[line - 1] + 1
        };
        let column = self
            .text
            .get(start..offset)
            .map_or(0, |s| s.chars().count())
            + 1;
        (line + 1, column)
    }

    fn line(&self, offset: usize) -> usize {
        self.position(offset).0
    }

    fn int<T: TryFrom<i64>>(
        &self,
        v: &Spanned<i64>,
        what: &str,
        lo: i64,
        hi: i64,
    ) -> Result<T, ConfigError> {
        let n = *v.get_ref();
        if n < lo || n > hi {
            return Err(self.at(v, format!("{what} {n} is out of range {lo}-{hi}")));
        }
        T::try_from(n).map_err(|_| self.at(v, format!("{what} {n} is out of range")))
    }

    fn mac(&self, v: &Spanned<String>, what: &str) -> Result<[u8; 6], ConfigError> {
        let m = parse_mac(v.get_ref().trim()).ok_or_else(|| {
            self.at(
                v,
                format!(
                    "{what} {:?} is not a MAC address (aa:bb:cc:dd:ee:ff)",
                    v.get_ref()
                ),
            )
        })?;
        if m[0] & 1 == 1 || m == [0; 6] {
            return Err(self.at(v, format!("{what} {} must be a unicast MAC", v.get_ref())));
        }
        Ok(m)
    }

    fn ip(&self, v: &Spanned<String>, what: &str) -> Result<IpAddr, ConfigError> {
        let a: IpAddr = v.get_ref().trim().parse().map_err(|_| {
            self.at(
                v,
                format!("{what} {:?} is not an IPv4 or IPv6 address", v.get_ref()),
            )
        })?;
        if a.is_unspecified() || a.is_multicast() {
            return Err(self.at(v, format!("{what} {a} must be a unicast address")));
        }
        if let IpAddr::V4(v4) = a
            && v4.is_broadcast()
        {
            return Err(self.at(v, format!("{what} {a} must be a unicast address")));
        }
        Ok(a)
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s != "."
        && s != ".."
}

fn valid_ifname(s: &str) -> bool {
    // IFNAMSIZ is 16 including the NUL.
    !s.is_empty()
        && s.len() <= 15
        && !s.contains(['/', ' ', '\t', '\n', ':'])
        && s != "."
        && s != ".."
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            reason: format!("cannot read: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Validates configuration text; `file` is used in error messages.
    pub fn parse(file: &Path, text: &str) -> Result<Self, ConfigError> {
        let src = Source::new(file, text);
        let (raw, tunnel_entries, station_entries) = parse_split(&src, |r: &mut RawConfig| {
            (
                std::mem::take(&mut r.tunnel),
                std::mem::take(&mut r.station),
            )
        })?;
        let node = raw.node.get_ref();

        let name = node.name.get_ref().clone();
        if !valid_name(&name) {
            return Err(src.at(
                &node.name,
                format!("node name {name:?} must be 1-32 characters of A-Z a-z 0-9 - _ ."),
            ));
        }
        let addrs = node.addresses.get_ref();
        if addrs.is_empty() {
            return Err(src.at(
                &node.addresses,
                "node.addresses must list at least one address",
            ));
        }
        if addrs.len() > abi::MAX_LOCAL_ADDRS as usize {
            return Err(src.at(
                &node.addresses,
                format!(
                    "node.addresses lists {} addresses, at most {} are supported",
                    addrs.len(),
                    abi::MAX_LOCAL_ADDRS
                ),
            ));
        }
        let mut addresses = Vec::with_capacity(addrs.len());
        for a in addrs {
            let ip = src.ip(a, "node address")?;
            if addresses.contains(&ip) {
                return Err(src.at(a, format!("node address {ip} is listed twice")));
            }
            addresses.push(ip);
        }
        let data_port = match &node.data_port {
            Some(p) => src.int(p, "node.data_port", 1, 65535)?,
            None => capwap::DATA_PORT,
        };

        let ifs = raw.interfaces.get_ref();
        for (v, what) in [
            (&ifs.ap_side, "interfaces.ap_side"),
            (&ifs.client_side, "interfaces.client_side"),
        ] {
            if !valid_ifname(v.get_ref()) {
                return Err(src.at(v, format!("{what} {:?} is not a valid interface name (1-15 characters, no '/', ':' or spaces)", v.get_ref())));
            }
        }

        let fwd = raw.forwarding.as_ref().map(|f| f.get_ref());
        let vid_max = i64::from(ferry_ebpf::vlan::VID_MAX);
        let default_vlan = match fwd.and_then(|f| f.default_vlan.as_ref()) {
            Some(v) => src.int(v, "forwarding.default_vlan", 1, vid_max)?,
            None => DEFAULT_VLAN,
        };
        let station_limit = match fwd.and_then(|f| f.station_limit.as_ref()) {
            Some(v) => src.int(v, "forwarding.station_limit", 0, i64::from(u32::MAX))?,
            None => abi::DEFAULT_STATION_LIMIT,
        };
        let station_capacity = match fwd.and_then(|f| f.station_capacity.as_ref()) {
            Some(v) => src.int(v, "forwarding.station_capacity", 16, 16_777_216)?,
            None => abi::DEFAULT_STATION_CAPACITY,
        };
        let down = raw.downstream.as_ref().map(|d| d.get_ref());
        let mut dscp = DEFAULT_DSCP;
        if let Some(list) = down.and_then(|d| d.dscp.as_ref()) {
            if list.get_ref().len() != 8 {
                return Err(src.at(
                    list,
                    "downstream.dscp must list 8 values, one per 802.1p priority",
                ));
            }
            for (i, v) in list.get_ref().iter().enumerate() {
                dscp[i] = src.int(v, "downstream.dscp value", 0, 63)?;
            }
        }
        let df = down.and_then(|d| d.df).unwrap_or(true);
        let default_mtu = match down.and_then(|d| d.mtu.as_ref()) {
            Some(v) => src.int(v, "downstream.mtu", 576, 9000)?,
            None => DEFAULT_MTU,
        };
        let default_next_hop = match down.and_then(|d| d.next_hop_mac.as_ref()) {
            Some(v) => Some(src.mac(v, "downstream.next_hop_mac")?),
            None => None,
        };
        let source_mac = match down.and_then(|d| d.source_mac.as_ref()) {
            Some(v) => Some(src.mac(v, "downstream.source_mac")?),
            None => None,
        };
        let defaults = TunnelDefaults {
            vlan: default_vlan,
            station_limit,
            mtu: default_mtu,
            next_hop: default_next_hop,
            has_source_mac: source_mac.is_some(),
        };
        let client_vlans_given = fwd.and_then(|f| f.client_vlans.as_ref());
        let (tunnels, client_vlans, stations) = parse_table(
            &src,
            tunnel_entries,
            station_entries,
            &defaults,
            &addresses,
            client_vlans_given,
            station_capacity,
        )?;
        let admin_socket = match raw.admin.as_ref().and_then(|a| a.get_ref().socket.as_ref()) {
            Some(p) if p.get_ref().trim().is_empty() => {
                return Err(src.at(p, "admin.socket must be a path"));
            }
            Some(p) => PathBuf::from(p.get_ref().trim()),
            None => PathBuf::from(format!("/run/ferry/{name}.sock")),
        };
        let metrics = match raw
            .metrics
            .as_ref()
            .and_then(|m| m.get_ref().listen.as_ref())
        {
            Some(l) if l.get_ref().trim().is_empty() => None,
            Some(l) => Some(l.get_ref().trim().parse().map_err(|_| {
                src.at(
                    l,
                    format!(
                        "metrics.listen {:?} is not an address:port (like {DEFAULT_METRICS})",
                        l.get_ref()
                    ),
                )
            })?),
            None => DEFAULT_METRICS.parse().ok(),
        };
        let ka = raw.keepalive.as_ref().map(|k| k.get_ref());
        let dead_interval = match ka.and_then(|k| k.dead_interval.as_ref()) {
            Some(v) => {
                std::time::Duration::from_secs(src.int(v, "keepalive.dead_interval", 1, 86_400)?)
            }
            None => crate::keepalive::DEFAULT_DEAD_INTERVAL,
        };
        let unknown_rate = match ka.and_then(|k| k.unknown_rate.as_ref()) {
            Some(v) => src.int(v, "keepalive.unknown_rate", 0, 100_000)?,
            None => 10,
        };

        Ok(Config {
            name,
            addresses,
            data_port,
            ap_side: ifs.ap_side.get_ref().clone(),
            client_side: ifs.client_side.get_ref().clone(),
            default_vlan,
            tunnels,
            client_vlans,
            station_capacity,
            dscp,
            df,
            source_mac,
            stations,
            admin_socket,
            metrics,
            dead_interval,
            unknown_rate,
            defaults,
            client_vlans_given: client_vlans_given.is_some(),
        })
    }

    /// Validates a swap table file (`[[tunnel]]` and `[[station]]` entries,
    /// the same schema as in the configuration) against this configuration's
    /// defaults and addresses; the result is this configuration with the
    /// new tunnels and stations. Nothing is applied here.
    pub fn with_table(&self, file: &Path, text: &str) -> Result<Self, ConfigError> {
        let src = Source::new(file, text);
        let (_, tunnel_entries, station_entries) = parse_split(&src, |r: &mut RawTable| {
            (
                std::mem::take(&mut r.tunnel),
                std::mem::take(&mut r.station),
            )
        })?;
        // Explicit client VLANs stay as configured; derived ones follow the
        // new tunnels.
        let given: Vec<Spanned<i64>> = self
            .client_vlans
            .iter()
            .map(|v| Spanned::new(0..0, i64::from(*v)))
            .collect();
        let given = Spanned::new(0..0, given);
        let (tunnels, client_vlans, stations) = parse_table(
            &src,
            tunnel_entries,
            station_entries,
            &self.defaults,
            &self.addresses,
            self.client_vlans_given.then_some(&given),
            self.station_capacity,
        )?;
        Ok(Self {
            tunnels,
            client_vlans,
            stations,
            ..self.clone()
        })
    }

    /// The tunnels and stations as a swap table file with every field
    /// explicit; [`Config::with_table`] of it gives `self` back. The state
    /// file keeps the running table this way, so a restart restores what
    /// was swapped in rather than what the configuration file says.
    pub fn table_toml(&self) -> String {
        use std::fmt::Write as _;
        // Written by hand: a toml::Value tree of a 25,600-tunnel table
        // costs far more time and memory than the text.
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        let mac = |m: &[u8; 6]| q(&ferry_dataplane::tables::format_mac(m));
        let mut o = String::with_capacity(self.tunnels.len() * 160);
        for t in &self.tunnels {
            let _ = writeln!(o, "[[tunnel]]\nap = {}", q(&t.ap));
            if let Some(a) = t.address {
                let _ = writeln!(o, "address = \"{a}\"");
            }
            if let Some(sid) = t.session_id {
                let _ = writeln!(o, "session_id = \"{}\"", format_session_id(&sid));
            }
            if let Some(p) = t.port {
                let _ = writeln!(o, "port = {p}");
            }
            let format = if t.native { "802.11" } else { "802.3" };
            let _ = writeln!(
                o,
                "role = \"{}\"\nvlan = {}\nformat = \"{format}\"\nmtu = {}\nstation_limit = {}",
                t.role.as_str(),
                t.vlan,
                t.mtu,
                t.station_limit
            );
            if let Some(m) = &t.radio_mac {
                let _ = writeln!(o, "radio_mac = {}", mac(m));
            }
            if t.address.is_some_and(|a| a.is_ipv6()) {
                let _ = writeln!(o, "udp_lite = {}", t.udp_lite);
            }
            if let Some(m) = &t.next_hop_mac {
                let _ = writeln!(o, "next_hop_mac = {}", mac(m));
            }
        }
        for st in &self.stations {
            let _ = writeln!(
                o,
                "[[station]]\nmac = {}\nap = {}\nradio = {}",
                mac(&st.mac),
                q(&self.tunnels[st.tunnel].ap),
                st.radio
            );
            if let Some(b) = &st.bssid {
                let _ = writeln!(o, "bssid = {}", mac(b));
            }
        }
        o
    }

    /// Parses one `[[tunnel]]` entry given as TOML text (for `ferry tunnel
    /// add`), with this configuration's defaults.
    pub fn parse_tunnel(&self, text: &str) -> Result<TunnelConfig, ConfigError> {
        let t = self.with_table(Path::new("<tunnel>"), text)?;
        match t.tunnels.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(ConfigError {
                file: PathBuf::from("<tunnel>"),
                line: None,
                column: None,
                reason: "exactly one [[tunnel]] expected".into(),
            }),
        }
    }

    /// Whether frames go back out of the AP-side interface (XDP_TX).
    pub fn one_arm(&self) -> bool {
        self.ap_side == self.client_side
    }

    /// The data plane tables this configuration describes. Tunnel ids are
    /// the entries' positions in the file. The FIB interface
    /// (`settings.ap_ifindex`) is left 0; `ferry run` fills it in.
    pub fn tables(&self) -> Tables {
        self.tables_with(&|i, _| i as u32, &|_| None)
    }

    /// The tables with tunnel ids from `id` (given each tunnel's position and
    /// entry) and the peers session tunnels are bound to from `bound`.
    /// Session tunnels not bound yet have no upstream key: they are left out
    /// until their first keepalive.
    pub fn tables_with(
        &self,
        id: &dyn Fn(usize, &TunnelConfig) -> u32,
        bound: &dyn Fn(&TunnelConfig) -> Option<std::net::SocketAddr>,
    ) -> Tables {
        let egress = |one_arm: bool| if one_arm { EGRESS_TX } else { EGRESS_REDIRECT };
        Tables {
            local_addrs: self.addresses.clone(),
            settings: Settings {
                data_port: self.data_port,
                egress: egress(self.one_arm()),
                egress_down: egress(self.one_arm()),
                df: u8::from(self.df),
                dscp: self.dscp,
                ..Default::default()
            },
            tunnels: self
                .tunnels
                .iter()
                .enumerate()
                .filter_map(|(i, t)| self.tunnel(id(i, t), t, bound(t)))
                .collect(),
            client_vlans: self.client_vlans.clone(),
            stations: self
                .stations
                .iter()
                .map(|s| {
                    let t = &self.tunnels[s.tunnel];
                    Station::new(s.mac, t.vlan, id(s.tunnel, t), s.radio, s.bssid)
                })
                .collect(),
            station_capacity: self.station_capacity,
        }
    }

    /// The installed form of tunnel `t` with id `id`; `peer` is where a
    /// session tunnel is bound (`None` leaves an unbound one out).
    pub fn tunnel(
        &self,
        id: u32,
        t: &TunnelConfig,
        peer: Option<std::net::SocketAddr>,
    ) -> Option<Tunnel> {
        let (address, port) = match (t.address, peer) {
            (Some(a), _) => (a, t.port),
            (None, Some(p)) => (p.ip(), Some(p.port())),
            (None, None) => return None,
        };
        let v6 = address.is_ipv6();
        // Tunnels are sourced from the node's first address of their family
        // (validated to exist).
        let local = self
            .addresses
            .iter()
            .find(|a| a.is_ipv6() == v6)
            .copied()
            .unwrap_or(self.addresses[0]);
        let mut flags = 0;
        for (on, f) in [
            (t.role == Role::Backup, DOWN_STANDBY),
            (v6, DOWN_IPV6),
            // A bound session tunnel's family is known only now.
            (v6 && (t.udp_lite || t.address.is_none()), DOWN_UDPLITE),
            (t.native, DOWN_NATIVE),
            (t.radio_mac.is_some(), DOWN_RADIO_MAC),
            (port.is_some(), DOWN_FIXED_PORT),
            (
                t.next_hop_mac.is_some() && self.source_mac.is_some(),
                DOWN_NEIGHBOUR,
            ),
        ] {
            if on {
                flags |= f;
            }
        }
        Some(Tunnel {
            key: TunnelKey::new(addr_key(address), port.unwrap_or(0)),
            info: TunnelInfo {
                id,
                vlan: t.vlan,
                flags: if t.role == Role::Backup {
                    TUNNEL_STANDBY
                } else {
                    0
                },
                station_limit: t.station_limit,
            },
            down: TunnelDown {
                ap: addr_key(address),
                local: addr_key(local),
                port: port.unwrap_or(0),
                flags,
                vlan: t.vlan,
                mtu: t.mtu,
                radio_mac: t.radio_mac.unwrap_or([0; 6]),
                next_hop: t.next_hop_mac.unwrap_or([0; 6]),
                source_mac: self.source_mac.unwrap_or([0; 6]),
                pad: [0; 6],
            },
        })
    }
}

/// Tunnel settings that come from the file's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
struct TunnelDefaults {
    vlan: u16,
    station_limit: u32,
    mtu: u16,
    next_hop: Option<[u8; 6]>,
    has_source_mac: bool,
}

fn parse_tunnels(
    src: &Source<'_>,
    raw: Entries<'_, RawTunnel>,
    d: &TunnelDefaults,
    addresses: &[IpAddr],
) -> Result<Vec<TunnelConfig>, ConfigError> {
    if raw.len() > abi::MAX_TUNNELS as usize {
        return Err(src.at_offset(
            raw.header(abi::MAX_TUNNELS as usize),
            format!("more than {} tunnels", abi::MAX_TUNNELS),
        ));
    }
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut keys: HashSet<(IpAddr, Option<u16>)> = HashSet::new();
    let mut sessions: HashMap<[u8; 16], String> = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    let top = src;
    for st in raw.into_iter(src) {
        let st = st?;
        let src = &top.rebased(st.base);
        let t = &st.raw;
        let line = src.line(st.header);
        let ap = t.ap.get_ref().trim().to_string();
        if ap.is_empty() || ap.len() > 64 || ap.chars().any(|c| c.is_control()) {
            return Err(src.at(&t.ap, "tunnel ap name must be 1-64 printable characters"));
        }
        if let Some(prev) = names.insert(ap.clone(), line) {
            return Err(src.at(
                &t.ap,
                format!("tunnel ap {ap:?} is already defined at line {prev}"),
            ));
        }
        let (address, session_id) = match (&t.address, &t.session_id) {
            (Some(a), None) => (Some(src.ip(a, "tunnel address")?), None),
            (None, Some(sid)) => {
                let v = parse_session_id(sid.get_ref()).ok_or_else(|| {
                    src.at(sid, "tunnel session_id must be 32 hex digits (16 bytes)")
                })?;
                if let Some(other) = sessions.insert(v, ap.clone()) {
                    return Err(src.at(
                        sid,
                        format!("tunnel session_id is already used by tunnel {other:?}"),
                    ));
                }
                if let Some(p) = &t.port {
                    return Err(src.at(
                        p,
                        "a tunnel declared by session_id takes its port from its first keepalive; remove port",
                    ));
                }
                (None, Some(v))
            }
            (Some(a), Some(_)) => {
                return Err(src.at(a, "give a tunnel address or a session_id, not both"));
            }
            (None, None) => {
                return Err(src.at_offset(st.header, "a tunnel needs an address or a session_id"));
            }
        };
        let port = match &t.port {
            Some(p) => Some(src.int(p, "tunnel port", 1, 65535)?),
            None => None,
        };
        if let Some(address) = address
            && !keys.insert((address, port))
        {
            let which = port.map_or("any port".to_string(), |p| format!("port {p}"));
            return Err(src.at(
                t.address.as_ref().unwrap_or(&t.ap),
                format!("another tunnel already uses {address} {which}"),
            ));
        }
        let role = match &t.role {
            None => Role::Master,
            Some(r) => match r.get_ref().as_str() {
                "master" => Role::Master,
                "backup" => Role::Backup,
                other => {
                    return Err(src.at(
                        r,
                        format!("tunnel role {other:?} must be \"master\" or \"backup\""),
                    ));
                }
            },
        };
        let vlan = match &t.vlan {
            Some(v) => src.int(v, "tunnel vlan", 1, i64::from(ferry_ebpf::vlan::VID_MAX))?,
            None => d.vlan,
        };
        if let (Some(address), Some(at)) = (address, &t.address)
            && !addresses.iter().any(|a| a.is_ipv6() == address.is_ipv6())
        {
            let fam = if address.is_ipv6() { "IPv6" } else { "IPv4" };
            return Err(src.at(at, format!("tunnel address {address} is {fam}, but node.addresses has no {fam} address to source it from")));
        }
        let native = match &t.format {
            None => false,
            Some(f) => match f.get_ref().as_str() {
                "802.3" => false,
                "802.11" => true,
                other => {
                    return Err(src.at(
                        f,
                        format!("tunnel format {other:?} must be \"802.3\" or \"802.11\""),
                    ));
                }
            },
        };
        let radio_mac = match &t.radio_mac {
            Some(m) => Some(src.mac(m, "tunnel radio_mac")?),
            None => None,
        };
        let mtu = match &t.mtu {
            Some(v) => src.int(v, "tunnel mtu", 576, 9000)?,
            None => d.mtu,
        };
        let is_v6 = address.is_some_and(|a| a.is_ipv6());
        let udp_lite = match &t.udp_lite {
            Some(v) if !is_v6 && address.is_some() => {
                return Err(src.at(
                    v,
                    "tunnel udp_lite applies to IPv6 tunnels only (IPv4 CAPWAP uses UDP)",
                ));
            }
            Some(v) => *v.get_ref(),
            None => true,
        };
        if is_v6 && !udp_lite && mtu > DEFAULT_MTU {
            let Some(at) = t.mtu.as_ref().map(|m| m.span()) else {
                return Err(src.at_offset(
                    st.header,
                    format!(
                        "tunnel mtu {mtu}: IPv6 tunnels with udp_lite = false support at most 1500"
                    ),
                ));
            };
            return Err(src.err(Some(at), format!("tunnel mtu {mtu}: IPv6 tunnels with udp_lite = false support at most 1500 (the program checksums the whole datagram)")));
        }
        let next_hop_mac = match &t.next_hop_mac {
            Some(m) => Some(src.mac(m, "tunnel next_hop_mac")?),
            None => d.next_hop,
        };
        if next_hop_mac.is_some() && !d.has_source_mac {
            let at = t.next_hop_mac.as_ref().map_or(0..0, |m| m.span());
            return Err(src.err(
                Some(at),
                "a next_hop_mac needs downstream.source_mac (our AP-side MAC)",
            ));
        }
        let station_limit = match &t.station_limit {
            Some(v) => src.int(v, "tunnel station_limit", 0, i64::from(u32::MAX))?,
            None => d.station_limit,
        };
        out.push(TunnelConfig {
            ap,
            address,
            session_id,
            port,
            role,
            vlan,
            native,
            radio_mac,
            mtu,
            udp_lite,
            next_hop_mac,
            station_limit,
            line,
        });
    }
    Ok(out)
}

/// One `[[tunnel]]` or `[[station]]` entry: its fields (spans relative to
/// `base`) and where its header is in the file.
struct Entry<T> {
    base: usize,
    header: usize,
    raw: T,
}

/// The `[[tunnel]]` and `[[station]]` entries of a file, each as
/// (header offset, body offset, body), and the rest of the file with those
/// entries blanked out (same length and line breaks, so spans in it stay
/// right). `None` when a header line could be inside a multi-line string.
///
/// Why: a 25,600-tunnel table parsed as one TOML document costs tens of
/// MiB of intermediate tree; parsed entry by entry it costs next to nothing.
#[allow(clippy::type_complexity)]
fn split_entries(
    text: &str,
) -> Option<(String, Vec<(usize, usize, &str)>, Vec<(usize, usize, &str)>)> {
    if text.contains("\"\"\"") || text.contains("\'\'\'") {
        return None;
    }
    let mut headers = Vec::new();
    let mut off = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if t.starts_with('[') {
            let kind = if t.starts_with("[[tunnel]]") {
                1
            } else if t.starts_with("[[station]]") {
                2
            } else {
                0
            };
            headers.push((off, off + line.len(), kind));
        }
        off += line.len();
    }
    let (mut tunnels, mut stations) = (Vec::new(), Vec::new());
    let mut other = Vec::new();
    let first = headers.first().map_or(text.len(), |h| h.0);
    other.push(0..first);
    for (i, &(start, body, kind)) in headers.iter().enumerate() {
        let end = headers.get(i + 1).map_or(text.len(), |h| h.0);
        if kind == 0 {
            other.push(start..end);
            continue;
        }
        let entry = (start, body, text.get(body..end)?);
        if kind == 1 {
            tunnels.push(entry);
        } else {
            stations.push(entry);
        }
    }
    // A table file is usually entries only: then there is nothing else to
    // parse (and no megabytes of blanks to lex).
    let only_entries = other.iter().all(|r| {
        text[r.clone()].lines().all(|l| {
            let t = l.trim();
            t.is_empty() || t.starts_with('#')
        })
    });
    if only_entries {
        return Some((String::new(), tunnels, stations));
    }
    let mut rest = text.as_bytes().to_vec();
    for (start, body, t) in tunnels.iter().chain(&stations) {
        for b in &mut rest[*start..*body + t.len()] {
            if *b != b'\n' {
                *b = b' ';
            }
        }
    }
    Some((String::from_utf8(rest).ok()?, tunnels, stations))
}

/// The `[[tunnel]]` or `[[station]]` entries of a file: either chunks of
/// text parsed one at a time as they are validated (so a 25,600-entry
/// table never exists as 25,600 raw entries at once), or entries a
/// whole-file parse already produced.
enum Entries<'a, T> {
    Chunks(Vec<(usize, usize, &'a str)>),
    Parsed(Vec<Entry<T>>),
}

/// An entry type with a fast path (see [`scalars`]).
trait FastEntry: serde::de::DeserializeOwned {
    /// `[[tunnel]]` or `[[station]]`.
    const KIND: &'static str;
    fn from_scalars(f: Vec<(&str, Scalar)>) -> Option<Self>;
}

impl FastEntry for RawTunnel {
    const KIND: &'static str = "[[tunnel]]";
    fn from_scalars(f: Vec<(&str, Scalar)>) -> Option<Self> {
        RawTunnel::from_scalars(f)
    }
}

impl FastEntry for RawStation {
    const KIND: &'static str = "[[station]]";
    fn from_scalars(f: Vec<(&str, Scalar)>) -> Option<Self> {
        RawStation::from_scalars(f)
    }
}

impl<'a, T: FastEntry> Entries<'a, T> {
    fn len(&self) -> usize {
        match self {
            Entries::Chunks(c) => c.len(),
            Entries::Parsed(p) => p.len(),
        }
    }

    /// Offset of entry `i`'s header.
    fn header(&self, i: usize) -> usize {
        match self {
            Entries::Chunks(c) => c[i].0,
            Entries::Parsed(p) => p[i].header,
        }
    }

    /// The entries, each parsed when it is reached.
    fn into_iter<'s>(
        self,
        src: &'s Source<'a>,
    ) -> Box<dyn Iterator<Item = Result<Entry<T>, ConfigError>> + 's>
    where
        'a: 's,
        T: 's,
    {
        match self {
            Entries::Parsed(p) => Box::new(p.into_iter().map(Ok)),
            Entries::Chunks(c) => Box::new(c.into_iter().map(move |(header, body, t)| {
                let raw = match scalars(t).and_then(T::from_scalars) {
                    Some(raw) => raw,
                    None => toml::from_str(t).map_err(|e| {
                        src.rebased(body).err(
                            e.span(),
                            format!("in {}: {}", T::KIND, e.message().trim_end()),
                        )
                    })?,
                };
                Ok(Entry {
                    base: body,
                    header,
                    raw,
                })
            })),
        }
    }
}

/// Parses a file whose `[[tunnel]]`/`[[station]]` entries are split off
/// (see [`split_entries`]) and parsed later, one by one; `take` moves
/// those entries out of a parsed document (a whole-file parse, used when
/// the split is not safe).
#[allow(clippy::type_complexity)]
fn parse_split<'a, R: serde::de::DeserializeOwned>(
    src: &Source<'a>,
    take: impl Fn(&mut R) -> (Vec<Spanned<RawTunnel>>, Vec<Spanned<RawStation>>),
) -> Result<(R, Entries<'a, RawTunnel>, Entries<'a, RawStation>), ConfigError> {
    fn parsed<T>(v: Vec<Spanned<T>>) -> Vec<Entry<T>> {
        v.into_iter()
            .map(|e| Entry {
                base: 0,
                header: e.span().start,
                raw: e.into_inner(),
            })
            .collect()
    }
    let whole = || -> Result<(R, Entries<'a, RawTunnel>, Entries<'a, RawStation>), ConfigError> {
        let mut r: R = toml::from_str(src.text)
            .map_err(|e| src.err(e.span(), e.message().trim_end().to_string()))?;
        let (t, s) = take(&mut r);
        Ok((r, Entries::Parsed(parsed(t)), Entries::Parsed(parsed(s))))
    };
    let Some((rest, tunnels, stations)) = split_entries(src.text) else {
        return whole();
    };
    let mut r: R =
        toml::from_str(&rest).map_err(|e| src.err(e.span(), e.message().trim_end().to_string()))?;
    let (t, s) = take(&mut r);
    if !t.is_empty() || !s.is_empty() {
        // Entries the split did not see (e.g. inline arrays): parse whole.
        return whole();
    }
    Ok((r, Entries::Chunks(tunnels), Entries::Chunks(stations)))
}

/// A scalar value of a `key = value` line, with its span in the entry.
enum Scalar {
    Str(Spanned<String>),
    Int(Spanned<i64>),
    Bool(Spanned<bool>),
}

/// The fast path for entry bodies: every line blank, a comment, or
/// `key = value` with a plain scalar (a string without escapes, a decimal
/// integer, a boolean), each key once. Anything else is `None`, and the
/// entry goes through the TOML parser, which also gives the error message.
///
/// Why: the TOML parser takes ~2.5 µs per entry, which alone would put a
/// 25,600-tunnel swap past its 100 ms budget; every entry ferry itself
/// writes (the state file) and typical tables take this path. The unit
/// test `fast_entry_path_agrees_with_toml` holds the two to the same result.
fn scalars(body: &str) -> Option<Vec<(&str, Scalar)>> {
    let mut out: Vec<(&str, Scalar)> = Vec::new();
    let mut off = 0;
    for line in body.split_inclusive('\n') {
        let start = off;
        off += line.len();
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let (k, rest) = t.split_once('=')?;
        let key = k.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return None;
        }
        if out.iter().any(|(k, _)| *k == key) {
            return None;
        }
        let v = rest.trim_start();
        let vstart = start + (line.len() - line.trim_start().len()) + (t.len() - v.len());
        let (value, len) = if let Some(q) = v.strip_prefix('"') {
            let end = q.find('"')?;
            let inner = &q[..end];
            if inner.contains(['\\', '\n']) || inner.chars().any(char::is_control) {
                return None;
            }
            (
                Scalar::Str(Spanned::new(vstart..vstart + end + 2, inner.to_string())),
                end + 2,
            )
        } else {
            let tok_len = v
                .find(|c: char| c.is_whitespace() || c == '#')
                .unwrap_or(v.len());
            let tok = &v[..tok_len];
            let sc = match tok {
                "true" => Scalar::Bool(Spanned::new(vstart..vstart + tok_len, true)),
                "false" => Scalar::Bool(Spanned::new(vstart..vstart + tok_len, false)),
                _ => {
                    let digits = tok.strip_prefix(['-', '+']).unwrap_or(tok);
                    // Leading zeros are invalid TOML: let the parser say so.
                    if digits.is_empty()
                        || !digits.bytes().all(|b| b.is_ascii_digit())
                        || (digits.len() > 1 && digits.starts_with('0'))
                    {
                        return None;
                    }
                    Scalar::Int(Spanned::new(vstart..vstart + tok_len, tok.parse().ok()?))
                }
            };
            (sc, tok_len)
        };
        let after = v[len..].trim_start();
        if !(after.is_empty() || after.starts_with('#')) {
            return None;
        }
        out.push((key, value));
    }
    Some(out)
}

/// Takes field `key` if present; `Err` when its value is not of the kind
/// `pick` accepts (the TOML parser then words the error).
fn take<T>(
    f: &mut Vec<(&str, Scalar)>,
    key: &str,
    pick: fn(Scalar) -> Option<Spanned<T>>,
) -> Result<Option<Spanned<T>>, ()> {
    match f.iter().position(|(k, _)| *k == key) {
        None => Ok(None),
        Some(i) => pick(f.swap_remove(i).1).map(Some).ok_or(()),
    }
}

fn take_str(f: &mut Vec<(&str, Scalar)>, key: &str) -> Result<Option<Spanned<String>>, ()> {
    take(f, key, |v| match v {
        Scalar::Str(s) => Some(s),
        _ => None,
    })
}

fn take_int(f: &mut Vec<(&str, Scalar)>, key: &str) -> Result<Option<Spanned<i64>>, ()> {
    take(f, key, |v| match v {
        Scalar::Int(s) => Some(s),
        _ => None,
    })
}

fn take_bool(f: &mut Vec<(&str, Scalar)>, key: &str) -> Result<Option<Spanned<bool>>, ()> {
    take(f, key, |v| match v {
        Scalar::Bool(s) => Some(s),
        _ => None,
    })
}

impl RawTunnel {
    /// A tunnel from fast-path scalars; `None` for anything the TOML path
    /// must word (missing `ap`, unknown key, wrong type).
    fn from_scalars(mut f: Vec<(&str, Scalar)>) -> Option<Self> {
        let r = (|| -> Result<Self, ()> {
            let t = Self {
                ap: take_str(&mut f, "ap")?.ok_or(())?,
                address: take_str(&mut f, "address")?,
                session_id: take_str(&mut f, "session_id")?,
                port: take_int(&mut f, "port")?,
                role: take_str(&mut f, "role")?,
                vlan: take_int(&mut f, "vlan")?,
                format: take_str(&mut f, "format")?,
                radio_mac: take_str(&mut f, "radio_mac")?,
                mtu: take_int(&mut f, "mtu")?,
                udp_lite: take_bool(&mut f, "udp_lite")?,
                next_hop_mac: take_str(&mut f, "next_hop_mac")?,
                station_limit: take_int(&mut f, "station_limit")?,
            };
            if f.is_empty() { Ok(t) } else { Err(()) }
        })();
        r.ok()
    }
}

impl RawStation {
    /// A station from fast-path scalars (see [`RawTunnel::from_scalars`]).
    fn from_scalars(mut f: Vec<(&str, Scalar)>) -> Option<Self> {
        let r = (|| -> Result<Self, ()> {
            let s = Self {
                mac: take_str(&mut f, "mac")?.ok_or(())?,
                ap: take_str(&mut f, "ap")?.ok_or(())?,
                radio: take_int(&mut f, "radio")?,
                bssid: take_str(&mut f, "bssid")?,
                vlan: take_int(&mut f, "vlan")?,
            };
            if f.is_empty() { Ok(s) } else { Err(()) }
        })();
        r.ok()
    }
}

/// Tunnels, client VLANs and stations: the part of a configuration a swap
/// table replaces.
type TablePart = (Vec<TunnelConfig>, Vec<u16>, Vec<StationConfig>);

/// Parses the [`TablePart`] of a file.
fn parse_table(
    src: &Source<'_>,
    raw_tunnels: Entries<'_, RawTunnel>,
    raw_stations: Entries<'_, RawStation>,
    defaults: &TunnelDefaults,
    addresses: &[IpAddr],
    client_vlans: Option<&Spanned<Vec<Spanned<i64>>>>,
    station_capacity: u32,
) -> Result<TablePart, ConfigError> {
    let vid_max = i64::from(ferry_ebpf::vlan::VID_MAX);
    let tunnels = parse_tunnels(src, raw_tunnels, defaults, addresses)?;
    let client_vlans = match client_vlans {
        Some(list) => {
            let mut v = Vec::new();
            for x in list.get_ref() {
                let id: u16 = src.int(x, "forwarding.client_vlans value", 1, vid_max)?;
                if !v.contains(&id) {
                    v.push(id);
                }
            }
            for t in &tunnels {
                if !v.contains(&t.vlan) {
                    return Err(src.at_line(
                        t.line,
                        format!(
                            "tunnel {:?} uses VLAN {}, which is not in forwarding.client_vlans",
                            t.ap, t.vlan
                        ),
                    ));
                }
            }
            v
        }
        None => {
            let mut v = vec![defaults.vlan];
            for t in &tunnels {
                if !v.contains(&t.vlan) {
                    v.push(t.vlan);
                }
            }
            v
        }
    };
    let stations = parse_stations(src, raw_stations, &tunnels)?;
    if stations.len() as u64 > u64::from(station_capacity) {
        return Err(src.err(
            None,
            "more static stations than forwarding.station_capacity",
        ));
    }
    Ok((tunnels, client_vlans, stations))
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
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn parse_stations(
    src: &Source<'_>,
    raw: Entries<'_, RawStation>,
    tunnels: &[TunnelConfig],
) -> Result<Vec<StationConfig>, ConfigError> {
    let mut seen: HashMap<([u8; 6], u16), usize> = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    let top = src;
    for st in raw.into_iter(src) {
        let st = st?;
        let src = &top.rebased(st.base);
        let s = &st.raw;
        let mac = src.mac(&s.mac, "station mac")?;
        let ap = s.ap.get_ref().trim();
        let tunnel = tunnels
            .iter()
            .position(|t| t.ap == ap)
            .ok_or_else(|| src.at(&s.ap, format!("station ap {ap:?} is not a [[tunnel]]")))?;
        if let Some(v) = &s.vlan {
            let vid: u16 = src.int(v, "station vlan", 1, i64::from(ferry_ebpf::vlan::VID_MAX))?;
            if vid != tunnels[tunnel].vlan {
                return Err(src.at(
                    v,
                    format!(
                        "station vlan {vid} differs from tunnel {ap:?}'s VLAN {}",
                        tunnels[tunnel].vlan
                    ),
                ));
            }
        }
        let radio = match &s.radio {
            Some(v) => src.int(v, "station radio", 0, 31)?,
            None => 0,
        };
        let bssid = match &s.bssid {
            Some(b) => Some(src.mac(b, "station bssid")?),
            None => None,
        };
        let line = src.line(st.header);
        if let Some(prev) = seen.insert((mac, tunnels[tunnel].vlan), line) {
            return Err(src.at(
                &s.mac,
                format!(
                    "station {} is already defined at line {prev}",
                    s.mac.get_ref()
                ),
            ));
        }
        out.push(StationConfig {
            mac,
            tunnel,
            radio,
            bssid,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[node]
name = "ac1"
addresses = ["198.18.0.1", "2001:2::1"]
[interfaces]
ap_side = "eth0"
client_side = "eth1"
[forwarding]
default_vlan = 200
[[tunnel]]
ap = "ap1"
address = "198.18.1.10"
[[tunnel]]
ap = "ap2"
address = "198.18.1.11"
port = 12222
role = "backup"
vlan = 201
"#;

    fn parse(t: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("test.toml"), t)
    }

    #[test]
    fn good_config() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.name, "ac1");
        assert_eq!(c.data_port, 5247);
        assert_eq!(c.tunnels.len(), 2);
        assert_eq!(c.tunnels[0].vlan, 200);
        assert_eq!(c.tunnels[0].port, None);
        assert_eq!(c.tunnels[0].line, 10);
        assert_eq!(c.tunnels[1].role, Role::Backup);
        let t = c.tables();
        assert_eq!(t.settings.egress, EGRESS_REDIRECT);
        assert_eq!(t.tunnels[1].info.flags, TUNNEL_STANDBY);
        assert_eq!(t.tunnels[1].key.port, 12222);
    }

    fn err(t: &str) -> String {
        parse(t).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_file_line_and_reason() {
        let e = err(&GOOD.replace("port = 12222", "port = 70000"));
        assert_eq!(
            e,
            "test.toml:16:8: tunnel port 70000 is out of range 1-65535"
        );
        let e = err(&GOOD.replace("\"198.18.1.11\"", "\"198.18.1.300\""));
        assert!(
            e.starts_with("test.toml:15:11: tunnel address \"198.18.1.300\" is not"),
            "{e}"
        );
        let e = err(&GOOD.replace("role = \"backup\"", "role = \"standby\""));
        assert!(
            e.starts_with("test.toml:17:8: tunnel role \"standby\""),
            "{e}"
        );
        let e = err(&GOOD.replace("ap = \"ap2\"", "ap = \"ap1\""));
        assert!(
            e.contains(":14:") && e.contains("already defined at line 10"),
            "{e}"
        );
        let e = err(&GOOD.replace("default_vlan = 200", "default_vlan = 4095"));
        assert!(
            e.starts_with("test.toml:9:16: forwarding.default_vlan 4095"),
            "{e}"
        );
        let e = err(&GOOD.replace("client_side", "client_sid"));
        assert!(
            e.starts_with("test.toml:7:1: unknown field `client_sid`"),
            "{e}"
        );
        let e = err(&GOOD
            .replace("\"198.18.1.11\"", "\"198.18.1.10\"")
            .replace("port = 12222\n", ""));
        assert!(
            e.contains("another tunnel already uses 198.18.1.10 any port"),
            "{e}"
        );
        let e = err(&GOOD.replace("name = \"ac1\"", "name = \"../x\""));
        assert!(e.starts_with("test.toml:3:8: node name"), "{e}");
        let e = err(&GOOD.replace(
            "addresses = [\"198.18.0.1\", \"2001:2::1\"]",
            "addresses = []",
        ));
        assert!(e.contains("at least one address"), "{e}");
        let e = err(&GOOD.replace("ap_side = \"eth0\"", "ap_side = \"a-very-long-interface\""));
        assert!(e.starts_with("test.toml:6:11: interfaces.ap_side"), "{e}");
        let e = err("[node\nname=1");
        assert!(e.starts_with("test.toml:1:"), "{e}");
        let e = err(&GOOD.replace(
            "[interfaces]\nap_side = \"eth0\"\nclient_side = \"eth1\"\n",
            "",
        ));
        assert!(e.contains("missing field `interfaces`"), "{e}");
    }

    #[test]
    fn duplicate_address_and_multicast_refused() {
        let e = err(&GOOD.replace("\"2001:2::1\"", "\"198.18.0.1\""));
        assert!(e.contains("listed twice"), "{e}");
        let e = err(&GOOD.replace("\"198.18.1.10\"", "\"224.0.0.1\""));
        assert!(e.contains("must be a unicast address"), "{e}");
    }

    #[test]
    fn downstream_keys() {
        let text = format!(
            "{GOOD}[downstream]\ndscp = [0, 0, 0, 0, 0, 46, 46, 46]\ndf = false\nmtu = 1400\n\
             next_hop_mac = \"02:0e:00:00:00:01\"\nsource_mac = \"02:ac:00:00:00:01\"\n\
             [[station]]\nmac = \"02:5a:00:00:00:01\"\nap = \"ap2\"\nradio = 1\nbssid = \"02:bb:00:00:00:01\"\n"
        );
        let c = parse(&text.replace(
            "vlan = 201",
            "vlan = 201\nformat = \"802.11\"\nradio_mac = \"02:bb:00:00:00:02\"\nmtu = 1500",
        ))
        .unwrap();
        assert_eq!(c.dscp[5], 46);
        assert!(!c.df);
        assert_eq!(c.client_vlans, vec![200, 201]);
        let t = c.tables();
        let d = t.tunnels[1].down;
        assert_eq!(d.flags & DOWN_NATIVE, DOWN_NATIVE);
        assert_eq!(d.flags & DOWN_RADIO_MAC, DOWN_RADIO_MAC);
        assert_eq!(d.flags & DOWN_FIXED_PORT, DOWN_FIXED_PORT);
        assert_eq!(d.flags & DOWN_NEIGHBOUR, DOWN_NEIGHBOUR);
        assert_eq!(d.mtu, 1500);
        assert_eq!(t.tunnels[0].down.mtu, 1400);
        assert_eq!(t.tunnels[0].down.flags & DOWN_FIXED_PORT, 0);
        assert_eq!(t.stations[0].key.vlan, 201);
        assert_eq!(t.stations[0].info.tunnel, 1);
    }

    #[test]
    fn downstream_errors() {
        let e = err(&GOOD.replace("vlan = 201", "vlan = 201\nformat = \"ethernet\""));
        assert!(e.contains("tunnel format \"ethernet\" must be"), "{e}");
        let e = err(&GOOD.replace("vlan = 201", "vlan = 201\nudp_lite = false"));
        assert!(e.contains("udp_lite applies to IPv6 tunnels only"), "{e}");
        let e = err(&GOOD.replace(
            "vlan = 201",
            "vlan = 201\nnext_hop_mac = \"02:00:00:00:00:01\"",
        ));
        assert!(e.contains("needs downstream.source_mac"), "{e}");
        let e = err(&GOOD.replace(
            "vlan = 201",
            "vlan = 201\nradio_mac = \"01:00:5e:00:00:01\"",
        ));
        assert!(e.contains("must be a unicast MAC"), "{e}");
        let e = err(&format!(
            "{GOOD}[[station]]\nmac = \"02:00:00:00:00:01\"\nap = \"ap9\"\n"
        ));
        assert!(e.contains("station ap \"ap9\" is not a [[tunnel]]"), "{e}");
        let e = err(&format!(
            "{GOOD}[[station]]\nmac = \"02:00:00:00:00:01\"\nap = \"ap1\"\nvlan = 201\n"
        ));
        assert!(e.contains("differs from tunnel \"ap1\"'s VLAN 200"), "{e}");
        let e = err(&GOOD.replace(
            "default_vlan = 200",
            "default_vlan = 200\nclient_vlans = [200]",
        ));
        assert!(
            e.contains("uses VLAN 201, which is not in forwarding.client_vlans"),
            "{e}"
        );
        let e = err(&format!("{GOOD}[downstream]\ndscp = [1, 2]\n"));
        assert!(e.contains("downstream.dscp must list 8 values"), "{e}");
        let e = err(&GOOD
            .replace("\"198.18.1.10\"", "\"2001:2::10\"")
            .replace(", \"2001:2::1\"", ""));
        assert!(e.contains("has no IPv6 address"), "{e}");
    }

    #[test]
    fn one_arm_uses_tx() {
        let c = parse(&GOOD.replace("eth1", "eth0")).unwrap();
        assert_eq!(c.tables().settings.egress, EGRESS_TX);
    }

    const TABLE: &str = r#"
[[tunnel]]
ap = "ap1"
address = "198.18.1.10"   # a comment
vlan = 200

[[tunnel]]
ap = "nat"
session_id = "00112233445566778899aabbccddeeff"
role = "backup"
format = "802.11"
radio_mac = "02:aa:00:00:00:01"

[[tunnel]]
ap = "v6"
address = "2001:2::1:10"
udp_lite = false
mtu = 1400

[[station]]
mac = "02:bb:00:00:00:01"
ap = "ap1"
radio = 1
bssid = "02:cc:00:00:00:01"
"#;

    #[test]
    fn swap_tables_validate_against_the_config_and_round_trip() {
        let c = parse(GOOD).unwrap();
        let t = c.with_table(Path::new("t.toml"), TABLE).unwrap();
        assert_eq!(t.tunnels.len(), 3);
        assert_eq!(t.name, "ac1", "node settings come from the running config");
        assert_eq!(t.tunnels[1].address, None);
        assert_eq!(t.tunnels[1].session_id.unwrap()[15], 0xff);
        assert_eq!(t.client_vlans, vec![200], "derived client VLANs");
        // Unbound session tunnels have no entry yet; bound ones do.
        assert_eq!(t.tables().tunnels.len(), 2);
        let peer: std::net::SocketAddr = "198.18.9.1:4000".parse().unwrap();
        let bound = t.tables_with(&|i, _| i as u32, &|x| (x.ap == "nat").then_some(peer));
        assert_eq!(bound.tunnels.len(), 3);
        assert_eq!(bound.tunnels[1].key.port, 4000);
        // The state file's form gives the same tables back.
        let again = c.with_table(Path::new("state"), &t.table_toml()).unwrap();
        assert_eq!(again.tables(), t.tables());
        assert_eq!(again.stations, t.stations);
        // Errors point into the table file.
        let e = c
            .with_table(
                Path::new("t.toml"),
                &TABLE.replace("vlan = 200", "vlan = 5000"),
            )
            .unwrap_err()
            .to_string();
        assert_eq!(e, "t.toml:5:8: tunnel vlan 5000 is out of range 1-4094");
        let e = c
            .with_table(Path::new("t.toml"), "[node]\nname = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.toml:1:"), "{e}");
        for (bad, want) in [
            ("session_id = \"0011\"", "32 hex digits"),
            (
                "session_id = \"00112233445566778899aabbccddeeff\"\naddress = \"198.18.1.1\"",
                "not both",
            ),
            (
                "session_id = \"00112233445566778899aabbccddeeff\"\nport = 5",
                "takes its port from its first keepalive",
            ),
        ] {
            let text = TABLE.replace("session_id = \"00112233445566778899aabbccddeeff\"", bad);
            let e = c
                .with_table(Path::new("t.toml"), &text)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
        let e = c
            .with_table(Path::new("t.toml"), "[[tunnel]]\nap = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "t.toml:1:1: a tunnel needs an address or a session_id");
    }

    /// The scalar fast path and the TOML parser must read every entry the
    /// same way, including the errors (the fast path declines, TOML words).
    #[test]
    fn fast_entry_path_agrees_with_toml() {
        let bodies = [
            "ap = \"a\"\naddress = \"198.18.1.1\"\nport = 5247\n",
            "ap = \"a\" # c\n\n# x\naddress=\"198.18.1.1\"\nudp_lite = false\nvlan = -1\n",
            "  ap = \"a b\"\n  mtu = +1400\n",
            "ap = \"a\"\nport = 05\n",
            "ap = \"a\"\nport = \"5\"\n",
            "ap = \"a\"\nbogus = 1\n",
            "ap = \"a\"\nap = \"b\"\n",
            "ap = \"a\\u0041\"\n",
            "ap = 'lit'\n",
            "address = \"198.18.1.1\"\n",
            "ap = \"a\"\nvlan = 1_000\n",
            "ap = \"a\" x\n",
        ];
        for b in bodies {
            let fast = scalars(b).and_then(RawTunnel::from_scalars);
            let slow: Result<RawTunnel, _> = toml::from_str(b);
            match (fast, slow) {
                (Some(f), Ok(s)) => {
                    let show = |t: &RawTunnel| {
                        format!(
                            "{:?} {:?} {:?} {:?} {:?} {:?}",
                            (t.ap.get_ref(), t.ap.span()),
                            t.address.as_ref().map(|v| (v.get_ref().clone(), v.span())),
                            t.port.as_ref().map(|v| (*v.get_ref(), v.span())),
                            t.vlan.as_ref().map(|v| (*v.get_ref(), v.span())),
                            t.mtu.as_ref().map(|v| (*v.get_ref(), v.span())),
                            t.udp_lite.as_ref().map(|v| (*v.get_ref(), v.span())),
                        )
                    };
                    assert_eq!(show(&f), show(&s), "{b:?}");
                }
                (None, _) => {} // TOML decides, as it would anyway.
                (Some(_), Err(e)) => panic!("fast path accepted {b:?}, TOML refused: {e}"),
            }
        }
        assert!(
            scalars(bodies[0])
                .and_then(RawTunnel::from_scalars)
                .is_some()
        );
        assert!(
            scalars(bodies[1])
                .and_then(RawTunnel::from_scalars)
                .is_some()
        );
    }

    #[test]
    fn entries_inside_multiline_strings_fall_back_to_one_parse() {
        // A line starting with "[[tunnel]]" inside a multi-line string is
        // not a header: the whole file is parsed as one document.
        let text = format!(
            "{GOOD}\n[[tunnel]]\nap = \"\"\"x\n[[tunnel]]\"\"\"\naddress = \"198.18.1.30\"\n"
        );
        // The name is refused (a newline), at the line of `ap`: a split at
        // the inner "[[tunnel]]" would have reported another place.
        let e = parse(&text).unwrap_err().to_string();
        let ap_line = GOOD.matches('\n').count() + 3;
        assert_eq!(
            e,
            format!("test.toml:{ap_line}:6: tunnel ap name must be 1-64 printable characters")
        );
    }
}

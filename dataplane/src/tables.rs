//! What the data plane is told: local addresses, settings, the tunnel
//! table (both directions), client VLANs and static stations, in the ABI's
//! own types. The control process builds a [`Tables`] from its config; the
//! loaded programs and the reference model both consume the same value, so
//! a test cannot give them different tables by accident.

use std::net::IpAddr;

use ferry_ebpf::abi::{
    self, Addr, STATION_STATIC, Settings, StationInfo, StationKey, TunnelDown, TunnelInfo,
    TunnelKey,
};

/// One tunnel as installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tunnel {
    /// (AP address, source port or 0 for any).
    pub key: TunnelKey,
    /// Upstream: id, VLAN, flags, station limit.
    pub info: TunnelInfo,
    /// Downstream: where and how to encapsulate.
    pub down: TunnelDown,
}

/// A static station.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Station {
    /// (MAC, VLAN).
    pub key: StationKey,
    /// Tunnel id, radio, BSSID; `STATION_STATIC` is always set on install.
    pub info: StationInfo,
}

/// The full set of data plane tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tables {
    /// This node's CAPWAP data addresses.
    pub local_addrs: Vec<IpAddr>,
    /// Data port, egress modes, DSCP map, DF, FIB interface.
    pub settings: Settings,
    /// The tunnel table.
    pub tunnels: Vec<Tunnel>,
    /// VLANs the downstream path serves.
    pub client_vlans: Vec<u16>,
    /// Configured stations (never moved or aged by learning).
    pub stations: Vec<Station>,
    /// Capacity of the station table (LRU).
    pub station_capacity: u32,
}

impl Default for Tables {
    fn default() -> Self {
        Self {
            local_addrs: Vec::new(),
            settings: Settings::default(),
            tunnels: Vec::new(),
            client_vlans: vec![200],
            stations: Vec::new(),
            station_capacity: abi::DEFAULT_STATION_CAPACITY,
        }
    }
}

impl Station {
    /// A static station entry.
    pub fn new(mac: [u8; 6], vlan: u16, tunnel: u32, rid: u8, bssid: Option<[u8; 6]>) -> Self {
        Self {
            key: StationKey { mac, vlan },
            info: StationInfo {
                tunnel,
                flags: STATION_STATIC
                    | if bssid.is_some() {
                        abi::STATION_BSSID
                    } else {
                        0
                    },
                rid,
                bssid: bssid.unwrap_or([0; 6]),
                pad: [0; 4],
                last_seen: 0,
            },
        }
    }
}

/// `s` as it is installed: a data port of 0 means the CAPWAP default, so
/// the program can compare the port without a per-packet fallback.
pub fn installed_settings(s: Settings) -> Settings {
    Settings {
        data_port: if s.data_port == 0 {
            ferry_ebpf::capwap::DATA_PORT
        } else {
            s.data_port
        },
        ..s
    }
}

impl Tunnel {
    /// The downstream entry as installed (marked valid).
    pub fn down_entry(&self) -> TunnelDown {
        TunnelDown {
            flags: self.down.flags | abi::DOWN_VALID,
            ..self.down
        }
    }
}

/// The 16-byte key form of an address (IPv4 mapped into IPv6).
pub fn addr_key(ip: IpAddr) -> Addr {
    match ip {
        IpAddr::V4(v4) => abi::v4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address a key holds ([`addr_key`]'s inverse).
pub fn key_addr(a: Addr) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(a);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// Parses "aa:bb:cc:dd:ee:ff".
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let mut parts = s.split([':', '-']);
    for b in &mut m {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}

/// Formats a MAC as "aa:bb:cc:dd:ee:ff".
pub fn format_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

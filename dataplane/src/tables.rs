//! What the data plane is told: local addresses, settings and the tunnel
//! table, in the ABI's own types. The control process builds a [`Tables`]
//! from its config; the loaded program and the reference model both consume
//! the same value, so a test cannot give them different tables by accident.

use std::net::IpAddr;

use ferry_ebpf::abi::{self, Addr, Settings, TunnelInfo, TunnelKey};

/// One tunnel as installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tunnel {
    /// (AP address, source port or 0 for any).
    pub key: TunnelKey,
    /// Id, VLAN, flags.
    pub info: TunnelInfo,
}

/// The full set of data plane tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tables {
    /// This node's CAPWAP data addresses.
    pub local_addrs: Vec<IpAddr>,
    /// Data port and egress mode.
    pub settings: Settings,
    /// The tunnel table.
    pub tunnels: Vec<Tunnel>,
}

/// The 16-byte key form of an address (IPv4 mapped into IPv6).
pub fn addr_key(ip: IpAddr) -> Addr {
    match ip {
        IpAddr::V4(v4) => abi::v4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

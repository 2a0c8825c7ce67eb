//! Fixtures shared by the data plane tests: one reference table set used by
//! both the kernel program and the model.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ferry_dataplane::{
    craft::{self, Transport},
    datapath::Datapath,
    model::Model,
    tables::{Tables, Tunnel, addr_key},
};
use ferry_ebpf::abi::{EGRESS_REDIRECT, Settings, TUNNEL_STANDBY, TunnelInfo, TunnelKey};

/// The AC's IPv4 data address.
pub const AC4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The AC's IPv6 data address (RFC 5180 benchmarking range).
pub const AC6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
/// AP 1: any port, VLAN 200.
pub const AP1: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
/// AP 2: port 12222 only, VLAN 201.
pub const AP2: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 11);
/// AP 3: standby.
pub const AP3: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 12);
/// AP 4: any port (VLAN 210) and, from port 12222, a second tunnel (VLAN 211).
pub const AP4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 13);
/// AP 6: IPv6, any port, VLAN 300.
pub const AP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 1, 0x10);
/// Not a tunnel.
pub const STRANGER: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 9);
/// AP 2's port.
pub const AP2_PORT: u16 = 12222;

fn tunnel(addr: IpAddr, port: u16, id: u32, vlan: u16, flags: u16) -> Tunnel {
    Tunnel {
        key: TunnelKey::new(addr_key(addr), port),
        info: TunnelInfo { id, vlan, flags },
    }
}

/// The reference tables: redirect egress, data port 5247.
pub fn tables() -> Tables {
    Tables {
        local_addrs: vec![AC4.into(), AC6.into()],
        settings: Settings {
            data_port: 5247,
            egress: EGRESS_REDIRECT,
            ..Default::default()
        },
        tunnels: vec![
            tunnel(AP1.into(), 0, 1, 200, 0),
            tunnel(AP2.into(), AP2_PORT, 2, 201, 0),
            tunnel(AP3.into(), 0, 3, 200, TUNNEL_STANDBY),
            tunnel(AP4.into(), 0, 4, 210, 0),
            tunnel(AP4.into(), AP2_PORT, 5, 211, 0),
            tunnel(AP6.into(), 0, 6, 300, 0),
        ],
    }
}

/// A loaded program with `tables` applied and the redirect egress pointed at
/// loopback (BPF_PROG_TEST_RUN never transmits, the slot just has to exist).
pub fn datapath(tables: &Tables) -> Datapath {
    let mut dp = Datapath::load().expect("load eBPF object (needs root)");
    dp.apply(tables).expect("apply tables");
    dp.set_egress(1).expect("set egress to lo");
    dp
}

/// Both implementations, loaded with the same tables.
pub fn pair() -> (Datapath, Model) {
    let t = tables();
    (datapath(&t), Model::new(&t))
}

/// Transport from `src` to the AC (matching family).
pub fn transport(src: IpAddr) -> Transport {
    let dst: IpAddr = match src {
        IpAddr::V4(_) => AC4.into(),
        IpAddr::V6(_) => AC6.into(),
    };
    Transport::new(src, dst)
}

/// Client MACs.
pub const STA: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
/// Gateway MAC.
pub const GW: [u8; 6] = [0x02, 0x66, 0x77, 0x88, 0x99, 0xaa];
/// BSSID.
pub const BSSID: [u8; 6] = [0x02, 0xbb, 0xbb, 0xbb, 0xbb, 0x01];

/// A client's IPv4 packet (as the payload of an Ethernet/SNAP header).
pub fn client_ip(seq: u32) -> Vec<u8> {
    craft::client_ipv4_udp([198, 19, 4, 10], [198, 19, 1, 1], seq, 32)
}

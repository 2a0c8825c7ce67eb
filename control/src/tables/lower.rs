//! Lowering: a validated configuration to the data plane's tables, in the
//! map ABI's own types (`ferry_dataplane::tables`). This is the one place
//! that decides the bits of a tunnel entry.

use std::net::SocketAddr;

use ferry_dataplane::tables::{Station, Tables, Tunnel, addr_key};
use ferry_ebpf::abi::{
    DOWN_FIXED_PORT, DOWN_IPV6, DOWN_NATIVE, DOWN_NEIGHBOUR, DOWN_RADIO_MAC, DOWN_STANDBY,
    DOWN_UDPLITE, EGRESS_REDIRECT, EGRESS_TX, Settings, TUNNEL_STANDBY, TunnelDown, TunnelInfo,
    TunnelKey,
};

use crate::config::{Config, Format, TunnelConfig, TunnelState};

/// The data plane tables this configuration describes. Tunnel ids are
/// the entries' positions in the file. The FIB interface
/// (`settings.ap_ifindex`) is left 0; `ferry run` fills it in.
pub fn by_position(config: &Config) -> Tables {
    lower(config, &|i, _| i as u32, &|_| None)
}

/// The tables with tunnel ids from `id` (given each tunnel's position and
/// entry) and the peers session tunnels are bound to from `bound`.
/// Session tunnels not bound yet have no upstream key: they are left out
/// until their first keepalive.
pub fn lower(
    config: &Config,
    id: &dyn Fn(usize, &TunnelConfig) -> u32,
    bound: &dyn Fn(&TunnelConfig) -> Option<SocketAddr>,
) -> Tables {
    let egress = |one_arm: bool| if one_arm { EGRESS_TX } else { EGRESS_REDIRECT };
    Tables {
        local_addrs: config.addresses.clone(),
        settings: Settings {
            data_port: config.data_port,
            egress: egress(config.one_arm()),
            egress_down: egress(config.one_arm()),
            df: u8::from(config.df),
            dscp: config.dscp,
            ..Default::default()
        },
        tunnels: config
            .tunnels
            .iter()
            .enumerate()
            .filter_map(|(i, t)| tunnel(config, id(i, t), t, bound(t)))
            .collect(),
        client_vlans: config.client_vlans.clone(),
        stations: config
            .stations
            .iter()
            .map(|s| {
                let t = &config.tunnels[s.tunnel];
                Station::new(s.mac, t.vlan, id(s.tunnel, t), s.radio, s.bssid)
            })
            .collect(),
        station_capacity: config.station_capacity,
    }
}

/// The installed form of tunnel `t` with id `id`; `peer` is where a
/// session tunnel is bound (`None` leaves an unbound one out).
pub fn tunnel(
    config: &Config,
    id: u32,
    t: &TunnelConfig,
    peer: Option<SocketAddr>,
) -> Option<Tunnel> {
    let (address, port) = match (t.address, peer) {
        (Some(a), _) => (a, t.port),
        (None, Some(p)) => (p.ip(), Some(p.port())),
        (None, None) => return None,
    };
    let v6 = address.is_ipv6();
    // Tunnels are sourced from the node's first address of their family
    // (validated to exist).
    let local = config
        .addresses
        .iter()
        .find(|a| a.is_ipv6() == v6)
        .copied()
        .or_else(|| config.addresses.first().copied())?;
    let mut flags = 0;
    for (on, f) in [
        (t.state == TunnelState::Standby, DOWN_STANDBY),
        (v6, DOWN_IPV6),
        // A bound session tunnel's family is known only now.
        (v6 && (t.udp_lite || t.address.is_none()), DOWN_UDPLITE),
        (t.format == Format::Dot11, DOWN_NATIVE),
        (t.radio_mac.is_some(), DOWN_RADIO_MAC),
        (port.is_some(), DOWN_FIXED_PORT),
        (
            t.next_hop_mac.is_some() && config.source_mac.is_some(),
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
            flags: if t.state == TunnelState::Standby {
                TUNNEL_STANDBY
            } else {
                0
            },
            station_limit: t.station_limit,
            group: config.group_index(t),
            pad: 0,
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
            source_mac: config.source_mac.unwrap_or([0; 6]),
            group: config.group_index(t),
            pad: [0; 4],
        },
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use ferry_ebpf::abi::DOWN_VALID;

    use super::*;

    const CONFIG: &str = r#"
[node]
name = "ac1"
addresses = ["198.18.0.1", "2001:2::1"]
[interfaces]
ap_side = "eth0"
client_side = "eth1"
[downstream]
mtu = 1400
next_hop_mac = "02:0e:00:00:00:01"
source_mac = "02:ac:00:00:00:01"
[[tunnel]]
ap = "ap1"
address = "198.18.1.10"
[[tunnel]]
ap = "ap2"
address = "198.18.1.11"
port = 12222
state = "standby"
vlan = 201
format = "802.11"
radio_mac = "02:bb:00:00:00:02"
mtu = 1500
[[tunnel]]
ap = "nat"
session_id = "00112233445566778899aabbccddeeff"
[[station]]
mac = "02:5a:00:00:00:01"
ap = "ap2"
radio = 1
"#;

    #[test]
    fn entries_carry_every_setting() {
        let c = Config::parse(Path::new("t.toml"), CONFIG).unwrap();
        let t = by_position(&c);
        assert_eq!(t.settings.egress, EGRESS_REDIRECT);
        // The unbound session tunnel has no entry yet.
        assert_eq!(t.tunnels.len(), 2);
        assert_eq!(t.tunnels[1].info.flags, TUNNEL_STANDBY);
        assert_eq!(t.tunnels[1].key.port, 12222);
        let d = t.tunnels[1].down;
        for f in [
            DOWN_STANDBY,
            DOWN_NATIVE,
            DOWN_RADIO_MAC,
            DOWN_FIXED_PORT,
            DOWN_NEIGHBOUR,
        ] {
            assert_eq!(d.flags & f, f, "flag {f:#x}");
        }
        assert_eq!(d.flags & DOWN_VALID, 0, "valid is set on install only");
        assert_eq!(d.mtu, 1500);
        assert_eq!(t.tunnels[0].down.mtu, 1400);
        assert_eq!(t.tunnels[0].down.flags & DOWN_FIXED_PORT, 0);
        assert_eq!(t.stations[0].key.vlan, 201);
        assert_eq!(t.stations[0].info.tunnel, 1);
        // Bound, the session tunnel gets an entry at its peer's port.
        let peer: SocketAddr = "198.18.9.1:4000".parse().unwrap();
        let bound = lower(&c, &|i, _| i as u32, &|x| (x.ap == "nat").then_some(peer));
        assert_eq!(bound.tunnels.len(), 3);
        assert_eq!(bound.tunnels[2].key.port, 4000);
        assert_eq!(bound.tunnels[2].info.id, 2);
    }

    #[test]
    fn one_arm_uses_tx() {
        let c = Config::parse(Path::new("t.toml"), &CONFIG.replace("eth1", "eth0")).unwrap();
        assert_eq!(by_position(&c).settings.egress, EGRESS_TX);
    }
}

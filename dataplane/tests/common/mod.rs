//! Fixtures shared by the data plane tests: one reference table set used by
//! both the kernel program and the model.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ferry_dataplane::{
    counters::Counters,
    craft::{self, Transport},
    datapath::{Datapath, action},
    model::{Model, Outcome},
    tables::{Tables, Tunnel, addr_key},
};
use ferry_ebpf::abi::{self, Direction, Event, Reason};
use ferry_ebpf::abi::{
    DOWN_FIXED_PORT, DOWN_IPV6, DOWN_NEIGHBOUR, DOWN_STANDBY, DOWN_UDPLITE, EGRESS_REDIRECT,
    Settings, TUNNEL_STANDBY, TunnelDown, TunnelInfo, TunnelKey,
};

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

/// The AC's MAC on the AP side.
pub const AC_MAC: [u8; 6] = [0x02, 0xac, 0, 0, 0, 1];
/// The next hop towards the APs.
pub const ROUTER_MAC: [u8; 6] = [0x02, 0x0e, 0, 0, 0, 1];

/// A tunnel with downstream settings: sourced from the AC address of its
/// family, the configured neighbour, IPv6 with UDP-Lite.
pub fn tunnel(addr: IpAddr, port: u16, id: u32, vlan: u16, flags: u16) -> Tunnel {
    let local: IpAddr = if addr.is_ipv6() {
        AC6.into()
    } else {
        AC4.into()
    };
    let mut dflags = DOWN_NEIGHBOUR;
    if flags & TUNNEL_STANDBY != 0 {
        dflags |= DOWN_STANDBY;
    }
    if addr.is_ipv6() {
        dflags |= DOWN_IPV6 | DOWN_UDPLITE;
    }
    if port != 0 {
        dflags |= DOWN_FIXED_PORT;
    }
    Tunnel {
        key: TunnelKey::new(addr_key(addr), port),
        info: TunnelInfo {
            id,
            vlan,
            flags,
            station_limit: 512,
            group: 0,
            pad: 0,
        },
        down: TunnelDown {
            ap: addr_key(addr),
            local: addr_key(local),
            port,
            flags: dflags,
            vlan,
            mtu: 1500,
            radio_mac: [0; 6],
            next_hop: ROUTER_MAC,
            source_mac: AC_MAC,
            group: 0,
            pad: [0; 4],
        },
    }
}

/// The reference tables: redirect egress, data port 5247.
pub fn tables() -> Tables {
    Tables {
        local_addrs: vec![AC4.into(), AC6.into()],
        settings: Settings {
            data_port: 5247,
            egress: EGRESS_REDIRECT,
            egress_down: EGRESS_REDIRECT,
            df: 1,
            dscp: [0, 8, 16, 24, 32, 40, 48, 56],
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
        client_vlans: vec![200, 201, 210, 211, 300],
        stations: Vec::new(),
        station_capacity: 4096,
    }
}

/// A loaded program with `tables` applied and the redirect egress pointed at
/// loopback (BPF_PROG_TEST_RUN never transmits, the slot just has to exist).
pub fn datapath(tables: &Tables) -> Datapath {
    let mut dp = Datapath::load().expect("load eBPF object (needs root)");
    dp.apply(tables).expect("apply tables");
    dp.set_client_egress(1).expect("set egress to lo");
    dp.set_ap_egress(1).expect("set AP-side egress to lo");
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

/// Hex dump for assertion messages.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs `pkt` through the loaded program of `dir` and through the model;
/// panics with context unless they agree on action, counter reason,
/// learning events and output bytes.
pub fn check(
    dp: &Datapath,
    model: &mut Model,
    prev: &mut Counters,
    pkt: &[u8],
    what: &str,
    dir: Direction,
) -> Outcome {
    pin_to_one_cpu();
    let events_before = model.events().clone();
    let (want, prog) = match dir {
        Direction::Up => (model.upstream(pkt), abi::PROG_UPSTREAM),
        Direction::Down => (model.downstream(pkt), abi::PROG_DOWNSTREAM),
    };
    let got = dp.run(prog, pkt).expect("test run");
    let now = dp.counters().expect("counters");
    let delta = now.since(prev);
    *prev = now;
    let moved: Vec<(Reason, u64)> = delta.nonzero().collect();
    assert_eq!(
        got.action,
        want.action,
        "{what}: action kernel={} model={} (model reason {:?}, counters {moved:?})\npkt={}",
        action::name(got.action),
        action::name(want.action),
        want.reason,
        hex(pkt)
    );
    let mut expect: Vec<(Reason, u64)> = vec![(dir.received(), 1), (want.reason, 1)];
    expect.sort();
    assert_eq!(moved, expect, "{what}: reason mismatch\npkt={}", hex(pkt));
    let want_events: Vec<(Event, u64)> = model
        .events()
        .since(&events_before)
        .nonzero_events()
        .collect();
    let got_events: Vec<(Event, u64)> = delta.nonzero_events().collect();
    assert_eq!(
        got_events,
        want_events,
        "{what}: learning events differ\npkt={}",
        hex(pkt)
    );
    assert_eq!(
        hex(&got.output),
        hex(&want.output),
        "{what}: output bytes differ (reason {:?})",
        want.reason
    );
    want
}

/// The kernel's station table, sorted, `last_seen` zeroed, for comparing
/// with [`Model::stations`].
pub fn kernel_stations(
    dp: &Datapath,
) -> std::collections::BTreeMap<abi::StationKey, abi::StationInfo> {
    dp.stations()
        .expect("stations")
        .into_iter()
        .map(|(k, v)| (k, abi::StationInfo { last_seen: 0, ..v }))
        .collect()
}

/// Keeps the calling test thread on CPU 0. The programs' learning hints are
/// per CPU (like a NIC queue's), and the model has no notion of CPUs: a
/// test must not hop between CPUs halfway through a sequence of packets.
pub fn pin_to_one_cpu() {
    thread_local!(static PINNED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
    PINNED.with(|p| {
        if !p.get() {
            // SAFETY: a zeroed cpu_set_t with one bit set, for this thread.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(0, &mut set);
                assert_eq!(
                    libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
                    0
                );
            }
            p.set(true);
        }
    });
}

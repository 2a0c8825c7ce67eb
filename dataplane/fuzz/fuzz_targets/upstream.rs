//! Fuzzes the reference model: the input is run upstream (AP side) and, if
//! its first byte is odd, downstream (client side) too. Neither may panic,
//! and every outcome must respect the invariants the XDP programs are held to.
#![no_main]

use std::net::IpAddr;

use ferry_dataplane::{
    datapath::action,
    model::Model,
    tables::{Tables, Tunnel, addr_key},
};
use ferry_dataplane::model::Outcome;
use ferry_ebpf::abi::{
    Action, DOWN_IPV6, DOWN_NEIGHBOUR, EGRESS_REDIRECT, Reason, Settings, TUNNEL_STANDBY,
    TunnelDown, TunnelInfo, TunnelKey,
};
use libfuzzer_sys::fuzz_target;

fn tunnel(addr: &str, port: u16, id: u32, flags: u16) -> Tunnel {
    let a: IpAddr = addr.parse().expect("literal address");
    let down = TunnelDown {
        ap: addr_key(a),
        port: 5247,
        flags: DOWN_NEIGHBOUR | if a.is_ipv6() { DOWN_IPV6 } else { 0 },
        vlan: 200,
        mtu: 1500,
        ..Default::default()
    };
    Tunnel {
        key: TunnelKey::new(addr_key(a), port),
        info: TunnelInfo { id, vlan: 200, flags, station_limit: 4 },
        down,
    }
}

fn invariants(data: &[u8], o: &Outcome) {
    match o.reason.action() {
        Action::Forward => {
            assert!(o.action == action::REDIRECT);
            assert!(o.tunnel.is_some());
        }
        Action::Pass => {
            assert_eq!(o.action, action::PASS);
            assert_eq!(o.output, data);
        }
        Action::Drop => {
            assert_eq!(o.action, action::DROP);
            assert_eq!(o.output, data);
            assert_ne!(o.reason, Reason::Received);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let tables = Tables {
        local_addrs: vec!["198.18.0.1".parse().expect("literal"), "2001:2::1".parse().expect("literal")],
        settings: Settings {
            data_port: 5247,
            egress: EGRESS_REDIRECT,
            egress_down: EGRESS_REDIRECT,
            ..Default::default()
        },
        tunnels: vec![
            tunnel("198.18.1.10", 0, 1, 0),
            tunnel("198.18.1.11", 12222, 2, 0),
            tunnel("198.18.1.12", 0, 3, TUNNEL_STANDBY),
            tunnel("2001:2::1:10", 0, 4, 0),
        ],
        client_vlans: vec![200],
        stations: Vec::new(),
        station_capacity: 64,
    };
    let mut model = Model::new(&tables);
    let o = model.upstream(data);
    invariants(data, &o);
    if o.reason == Reason::Forwarded {
        // DA SA tag EtherType/length at least, never longer than the input.
        assert!(o.output.len() >= 18);
        assert_eq!(&o.output[12..14], &[0x81, 0x00]);
        assert!(o.output.len() <= data.len());
    }
    if data.first().is_some_and(|b| b & 1 == 1) {
        let d = model.downstream(data);
        invariants(data, &d);
        if d.reason == Reason::DownForwarded {
            assert!(d.output.len() > data.len(), "encapsulation grows the frame");
        }
    }
});

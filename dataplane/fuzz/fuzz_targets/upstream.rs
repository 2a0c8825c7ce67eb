//! Fuzzes the reference model's upstream parser: it must never panic, and
//! its outcome must respect the invariants the XDP program is held to.
#![no_main]

use std::net::IpAddr;

use ferry_dataplane::{
    datapath::action,
    model::Model,
    tables::{Tables, Tunnel, addr_key},
};
use ferry_ebpf::abi::{Action, EGRESS_REDIRECT, Reason, Settings, TUNNEL_STANDBY, TunnelInfo, TunnelKey};
use libfuzzer_sys::fuzz_target;

fn tunnel(addr: &str, port: u16, id: u32, flags: u16) -> Tunnel {
    let a: IpAddr = addr.parse().expect("literal address");
    Tunnel { key: TunnelKey::new(addr_key(a), port), info: TunnelInfo { id, vlan: 200, flags } }
}

fuzz_target!(|data: &[u8]| {
    let tables = Tables {
        local_addrs: vec!["198.18.0.1".parse().expect("literal"), "2001:2::1".parse().expect("literal")],
        settings: Settings { data_port: 5247, egress: EGRESS_REDIRECT, ..Default::default() },
        tunnels: vec![
            tunnel("198.18.1.10", 0, 1, 0),
            tunnel("198.18.1.11", 12222, 2, 0),
            tunnel("198.18.1.12", 0, 3, TUNNEL_STANDBY),
            tunnel("2001:2::1:10", 0, 4, 0),
        ],
    };
    let model = Model::new(&tables);
    let o = model.upstream(data);
    match o.reason.action() {
        Action::Forward => {
            assert_eq!(o.action, action::REDIRECT);
            assert!(o.tunnel.is_some());
            // DA SA tag EtherType/length at least.
            assert!(o.output.len() >= 18);
            assert_eq!(&o.output[12..14], &[0x81, 0x00]);
            assert!(o.output.len() <= data.len());
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
});

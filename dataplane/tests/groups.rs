//! HA group roles: a tunnel of a group forwards only while `GROUP_ROLES`
//! says this node masters the group, in both directions, and the flip is
//! the one array write. The kernel program and the model must agree at
//! every step.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use ferry_dataplane::{craft, model::Model, tables::Station};
use ferry_ebpf::{
    abi::{Direction, Reason},
    eth, vlan,
};

const GROUP: u16 = 7;

fn upstream() -> Vec<u8> {
    let inner = craft::ethernet(GW, STA, None, eth::ETHERTYPE_IPV4, &client_ip(1));
    craft::capwap_packet(
        &transport(AP1.into()),
        craft::header_8023(0),
        &craft::Options::default(),
        &inner,
    )
}

fn downstream(vid: u16) -> Vec<u8> {
    let ip = craft::client_ipv4_udp([198, 19, 1, 1], [198, 19, 4, 10], 9, 32);
    craft::ethernet(
        STA,
        GW,
        Some((vlan::TPID_8021Q, vlan::tci(0, vid))),
        eth::ETHERTYPE_IPV4,
        &ip,
    )
}

#[test]
fn a_group_forwards_only_while_this_node_masters_it() {
    let mut t = tables();
    for tn in &mut t.tunnels {
        if tn.info.id == 1 {
            tn.info.group = GROUP;
            tn.down.group = GROUP;
        }
    }
    // A station synced from the peer: it never sent a frame through here.
    t.stations = vec![Station::new(STA, 200, 1, 0, None)];
    let mut dp = datapath(&t);
    let mut model = Model::new(&t);
    let mut prev = dp.counters().unwrap();
    let (up, down) = (upstream(), downstream(200));
    let step = |dp: &ferry_dataplane::datapath::Datapath,
                model: &mut Model,
                prev: &mut _,
                what: &str,
                want_up: Reason,
                want_down: Reason| {
        let o = check(dp, model, prev, &up, &format!("{what}: up"), Direction::Up);
        assert_eq!(o.reason, want_up, "{what}: up");
        let o = check(
            dp,
            model,
            prev,
            &down,
            &format!("{what}: down"),
            Direction::Down,
        );
        assert_eq!(o.reason, want_down, "{what}: down");
    };
    // Zeroed array: a group stands by until this node takes it.
    assert!(!dp.group_active(GROUP).unwrap());
    step(
        &dp,
        &mut model,
        &mut prev,
        "initial",
        Reason::DropStandby,
        Reason::DownDropStandby,
    );
    dp.set_group_active(GROUP, true).unwrap();
    model.set_group_active(GROUP, true);
    step(
        &dp,
        &mut model,
        &mut prev,
        "master",
        Reason::Forwarded,
        Reason::DownForwarded,
    );
    // Another group's flip does not touch this one.
    dp.set_group_active(GROUP + 1, false).unwrap();
    model.set_group_active(GROUP + 1, false);
    step(
        &dp,
        &mut model,
        &mut prev,
        "other group",
        Reason::Forwarded,
        Reason::DownForwarded,
    );
    dp.set_group_active(GROUP, false).unwrap();
    model.set_group_active(GROUP, false);
    step(
        &dp,
        &mut model,
        &mut prev,
        "backup again",
        Reason::DropStandby,
        Reason::DownDropStandby,
    );
    // The group's own line: 4 upstream frames matched its tunnel, 2
    // forwarded; 2 downstream encapsulated; 2 standby drops each way.
    let g = dp.group_stats(GROUP).unwrap();
    assert_eq!(
        (g.rx_packets, g.up_packets, g.down_packets, g.standby_drops),
        (4, 2, 2, 4),
        "{g:?}"
    );
    let other = dp.group_stats(GROUP + 1).unwrap();
    assert_eq!(other, ferry_ebpf::abi::GroupStats::default());
}

#[test]
fn a_lease_that_runs_out_stops_the_group() {
    use ferry_dataplane::datapath::{action, coarse_now_ns};
    let mut t = tables();
    for tn in &mut t.tunnels {
        tn.info.group = GROUP;
        tn.down.group = GROUP;
    }
    let mut dp = datapath(&t);
    let up = upstream();
    dp.set_group_lease(GROUP, coarse_now_ns() + 300_000_000)
        .unwrap();
    assert!(dp.group_active(GROUP).unwrap());
    let r = dp.run(ferry_ebpf::abi::PROG_UPSTREAM, &up).unwrap();
    assert_eq!(r.action, action::REDIRECT, "within the lease");
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert!(!dp.group_active(GROUP).unwrap());
    let before = dp.counters().unwrap();
    let r = dp.run(ferry_ebpf::abi::PROG_UPSTREAM, &up).unwrap();
    assert_eq!(r.action, action::DROP, "past the lease");
    let moved: Vec<_> = dp.counters().unwrap().since(&before).nonzero().collect();
    assert!(moved.contains(&(Reason::DropStandby, 1)), "{moved:?}");
}

#[test]
fn group_index_zero_and_out_of_range_are_refused() {
    let mut dp = datapath(&tables());
    assert!(dp.set_group_active(0, true).is_err());
    assert!(dp.set_group_active(256, true).is_err());
    assert!(dp.set_group_active(255, true).is_ok());
}

#[test]
fn synced_stations_are_counted_like_learned_ones_and_forward_downstream() {
    use ferry_dataplane::datapath::Installed;
    use ferry_ebpf::abi::{StationInfo, StationKey};
    let t = tables();
    let mut dp = datapath(&t);
    // AP2's tunnel (id 2, VLAN 201) has a fixed port: downstream needs
    // nothing learned here.
    let key = StationKey {
        mac: STA,
        vlan: 201,
    };
    let on = |tunnel| StationInfo {
        tunnel,
        rid: 1,
        ..Default::default()
    };
    // Before: the station is unknown downstream.
    let before = dp
        .run(ferry_ebpf::abi::PROG_DOWNSTREAM, &downstream(201))
        .unwrap();
    assert_eq!(before.action, ferry_dataplane::datapath::action::DROP);
    let r = dp.install_synced(&[(key, on(2))]).unwrap();
    assert_eq!(
        r,
        Installed {
            added: 1,
            ..Default::default()
        }
    );
    assert_eq!(dp.station_count(2).unwrap(), 1);
    // It never sent a frame here, and it is forwarded down its tunnel.
    let out = dp
        .run(ferry_ebpf::abi::PROG_DOWNSTREAM, &downstream(201))
        .unwrap();
    assert_eq!(out.action, ferry_dataplane::datapath::action::REDIRECT);
    // The same again changes nothing; a move moves the count.
    let r = dp.install_synced(&[(key, on(2))]).unwrap();
    assert_eq!(r.kept, 1);
    assert_eq!(dp.station_count(2).unwrap(), 1);
    let r = dp.install_synced(&[(key, on(4))]).unwrap();
    assert_eq!(r.moved, 1);
    assert_eq!(
        (dp.station_count(2).unwrap(), dp.station_count(4).unwrap()),
        (0, 1)
    );
    // One batch mixing known and new stations, whichever comes first
    // (the installer guesses from the one before): each counted once.
    let other = |i: u8| StationKey {
        mac: [0x02, 0x5c, 0, 0, 0, i],
        vlan: 201,
    };
    let r = dp
        .install_synced(&[
            (key, on(4)),
            (other(1), on(2)),
            (other(2), on(2)),
            (key, on(2)),
            (other(1), on(2)),
            (other(3), on(4)),
        ])
        .unwrap();
    assert_eq!(
        r,
        Installed {
            added: 3,
            moved: 1,
            kept: 2,
        }
    );
    assert_eq!(
        (dp.station_count(2).unwrap(), dp.station_count(4).unwrap()),
        (3, 1)
    );
    // A static station is never replaced by sync.
    let mut t2 = tables();
    t2.stations = vec![Station::new(STA, 201, 2, 0, None)];
    let mut dp2 = datapath(&t2);
    let r = dp2.install_synced(&[(key, on(4))]).unwrap();
    assert_eq!(r.kept, 1);
    assert_eq!(dp2.station_count(4).unwrap(), 0);
}

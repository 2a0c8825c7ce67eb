//! Downstream and station learning: the loaded programs (BPF_PROG_TEST_RUN)
//! against the reference model, byte for byte and verdict for verdict, and
//! the round trip: decapsulating what ferry encapsulated gives back the
//! client frame.

// Test code: a failed step should panic with its message, and test
// tables and end-to-end scenarios read best as one function.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

mod common;

use common::*;
use ferry_dataplane::{
    counters::Counters,
    craft::{self, Dot11, Options},
    datapath::{Datapath, action},
    model::Model,
    tables::{Station, Tables},
};
use ferry_ebpf::{
    abi::{
        self, DOWN_NATIVE, DOWN_NEIGHBOUR, DOWN_RADIO_MAC, DOWN_UDPLITE, Direction, Event, Reason,
    },
    capwap, eth, ipv4, vlan,
};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Client stations.
fn sta(n: u8) -> [u8; 6] {
    [0x02, 0x5a, 0, 0, 0, n]
}

/// Downstream test tables: AP2 (port 12222) sends native 802.11 with a
/// Radio MAC field; AP4's any-port tunnel has no neighbour configured; a
/// static station sits behind the standby AP3, one on AP6 before its port
/// is known, and one whose VLAN does not match its tunnel.
fn tables_down() -> Tables {
    let mut t = tables();
    for tn in &mut t.tunnels {
        match tn.info.id {
            2 => {
                tn.down.flags |= DOWN_NATIVE | DOWN_RADIO_MAC;
                tn.down.radio_mac = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x02];
            }
            4 => tn.down.flags &= !DOWN_NEIGHBOUR,
            _ => {}
        }
    }
    t.stations = vec![
        Station::new(sta(30), 200, 3, 0, None),
        Station::new(sta(60), 300, 6, 1, None),
        Station::new(sta(99), 201, 1, 0, None),
    ];
    t
}

/// A tagged client-side frame to `da` in `vid` with priority `pcp`.
fn tagged(da: [u8; 6], vid: u16, pcp: u8, payload_len: usize) -> Vec<u8> {
    let ip = craft::client_ipv4_udp([198, 19, 1, 1], [198, 19, 4, 10], 9, payload_len);
    craft::ethernet(
        da,
        GW,
        Some((vlan::TPID_8021Q, vlan::tci(pcp, vid))),
        eth::ETHERTYPE_IPV4,
        &ip,
    )
}

/// Upstream frames that teach both sides the stations used below.
fn learning_traffic() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    // AP1 (802.3), stations 1..=3; the last one from another port too.
    for n in 1..=3 {
        let inner = craft::ethernet(
            GW,
            sta(n),
            None,
            eth::ETHERTYPE_IPV4,
            &client_ip(u32::from(n)),
        );
        v.push(craft::capwap_packet(
            &transport(AP1.into()),
            craft::header_8023(n),
            &Options::default(),
            &inner,
        ));
    }
    // AP2 (exact port): station 10 in 802.11 (BSSID known), 11 in 802.3 (not).
    let mut tr2 = transport(AP2.into());
    tr2.sport = AP2_PORT;
    let f = Dot11::uplink(BSSID, sta(10), GW, Some(3))
        .frame(&craft::snap(eth::ETHERTYPE_IPV4, &client_ip(10)));
    v.push(craft::capwap_packet(
        &tr2,
        craft::header_80211(1),
        &Options::default(),
        &f,
    ));
    let inner = craft::ethernet(GW, sta(11), None, eth::ETHERTYPE_IPV4, &client_ip(11));
    v.push(craft::capwap_packet(
        &tr2,
        craft::header_8023(0),
        &Options::default(),
        &inner,
    ));
    // AP4 any-port tunnel (no neighbour): station 40.
    let mut tr4 = transport(AP4.into());
    tr4.sport = 4444;
    let inner = craft::ethernet(GW, sta(40), None, eth::ETHERTYPE_IPV4, &client_ip(40));
    v.push(craft::capwap_packet(
        &tr4,
        craft::header_8023(0),
        &Options::default(),
        &inner,
    ));
    // AP6 over IPv6: station 61.
    let inner = craft::ethernet(GW, sta(61), None, eth::ETHERTYPE_IPV4, &client_ip(61));
    v.push(craft::capwap_packet(
        &transport(AP6.into()),
        craft::header_8023(2),
        &Options::default(),
        &inner,
    ));
    v
}

fn setup(t: &Tables) -> (Datapath, Model, Counters) {
    let dp = datapath(t);
    let mut model = Model::new(t);
    let mut prev = dp.counters().unwrap();
    for (i, p) in learning_traffic().iter().enumerate() {
        let o = check(
            &dp,
            &mut model,
            &mut prev,
            p,
            &format!("learning #{i}"),
            Direction::Up,
        );
        assert_eq!(o.reason, Reason::Forwarded, "learning #{i}");
    }
    (dp, model, prev)
}

/// Reverses an encapsulated frame's transport (AC->AP becomes AP->AC), so
/// the upstream path can decapsulate it.
fn mirrored(out: &[u8]) -> Vec<u8> {
    let mut m = out.to_vec();
    m[..6].copy_from_slice(&out[6..12]);
    m[6..12].copy_from_slice(&out[..6]);
    let (l3, l4) = if out[12..14] == eth::ETHERTYPE_IPV4.to_be_bytes() {
        m[14 + ipv4::SRC..14 + ipv4::SRC + 4]
            .copy_from_slice(&out[14 + ipv4::DST..14 + ipv4::DST + 4]);
        m[14 + ipv4::DST..14 + ipv4::DST + 4]
            .copy_from_slice(&out[14 + ipv4::SRC..14 + ipv4::SRC + 4]);
        (14, 34)
    } else {
        m[14 + 8..14 + 24].copy_from_slice(&out[14 + 24..14 + 40]);
        m[14 + 24..14 + 40].copy_from_slice(&out[14 + 8..14 + 24]);
        (14, 54)
    };
    let _ = l3;
    m[l4..l4 + 2].copy_from_slice(&out[l4 + 2..l4 + 4]);
    m[l4 + 2..l4 + 4].copy_from_slice(&out[l4..l4 + 2]);
    m
}

/// UDP header offset in an IPv4-encapsulated downstream frame.
const L4: usize = 34;

/// One hand-built downstream case: a client-side frame (sent after the
/// learning traffic), the verdict both the kernel and the model must reach,
/// and, for forwarded frames, checks of the output built independently of
/// both.
struct Case {
    name: &'static str,
    frame: Vec<u8>,
    reason: Reason,
    output: Option<fn(&[u8])>,
}

fn case(name: &'static str, frame: Vec<u8>, reason: Reason) -> Case {
    Case {
        name,
        frame,
        reason,
        output: None,
    }
}

/// AP1, 802.3 over IPv4: outer headers field by field.
fn check_ap1_8023(out: &[u8]) {
    assert_eq!(&out[..6], &ROUTER_MAC);
    assert_eq!(&out[6..12], &AC_MAC);
    assert_eq!(out[14], 0x45);
    assert_eq!(out[15], 40 << 2, "DSCP CS5 from PCP 5");
    assert_eq!(&out[14 + ipv4::SRC..14 + ipv4::SRC + 4], &AC4.octets());
    assert_eq!(&out[14 + ipv4::DST..14 + ipv4::DST + 4], &AP1.octets());
    assert_eq!(u16::from_be_bytes([out[14 + 6], out[14 + 7]]), 0x4000, "DF");
    assert_eq!(
        craft::inet_checksum(&out[14..34]),
        0,
        "IPv4 header checksum verifies"
    );
    assert_eq!(u16::from_be_bytes([out[L4], out[L4 + 1]]), 5247);
    assert_eq!(
        u16::from_be_bytes([out[L4 + 2], out[L4 + 3]]),
        12222,
        "AP1's learned port"
    );
    assert_eq!(&out[L4 + 6..L4 + 8], &[0, 0], "UDP checksum 0 over IPv4");
    let h = capwap::Header::parse(out[L4 + 8..L4 + 16].try_into().unwrap());
    assert_eq!((h.hlen, h.rid, h.wbid, h.native), (2, 1, 1, false));
    let frame = tagged(sta(1), 200, 5, 40);
    let mut inner = frame[..12].to_vec();
    inner.extend_from_slice(&frame[16..]);
    assert_eq!(
        &out[L4 + 16..],
        &inner[..],
        "payload is the untagged client frame"
    );
}

/// AP2, native 802.11 with a Radio MAC field.
fn check_ap2_80211(out: &[u8]) {
    let h = capwap::Header::parse(out[L4 + 8..L4 + 16].try_into().unwrap());
    assert_eq!((h.hlen, h.rid, h.native, h.radio_mac), (4, 1, true, true));
    assert_eq!(
        &out[L4 + 16..L4 + 24],
        &[6, 0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x02, 0],
        "Radio MAC field"
    );
    let d = &out[L4 + 24..];
    assert_eq!(&d[..2], &[0x08, 0x02], "data frame, FromDS");
    assert_eq!(&d[4..10], &sta(10), "A1 = DA");
    assert_eq!(&d[10..16], &BSSID, "A2 = BSSID");
    assert_eq!(&d[16..22], &GW, "A3 = SA");
    assert_eq!(
        &d[24..32],
        &[0xaa, 0xaa, 3, 0, 0, 0, 0x08, 0x00],
        "LLC/SNAP + EtherType"
    );
}

/// AP6, IPv6 with UDP-Lite.
fn check_ap6_udplite(out: &[u8]) {
    assert_eq!(out[14 + 6], 136, "UDP-Lite");
    assert_eq!(
        u16::from_be_bytes([out[58], out[59]]),
        8,
        "checksum coverage 8"
    );
}

/// Every downstream branch that the tables of [`tables_down`] reach once
/// [`learning_traffic`] has run.
fn hand_built() -> Vec<Case> {
    vec![
        Case {
            output: Some(check_ap1_8023),
            ..case(
                "802.3 to station 1 behind AP1",
                tagged(sta(1), 200, 5, 40),
                Reason::DownForwarded,
            )
        },
        Case {
            output: Some(check_ap2_80211),
            ..case(
                "802.11 to station 10 behind AP2",
                tagged(sta(10), 201, 0, 40),
                Reason::DownForwarded,
            )
        },
        Case {
            output: Some(check_ap6_udplite),
            ..case(
                "IPv6 UDP-Lite to station 61 behind AP6",
                tagged(sta(61), 300, 7, 40),
                Reason::DownForwarded,
            )
        },
        case(
            "larger than the tunnel MTU",
            tagged(sta(2), 200, 0, 1600),
            Reason::DownPassMtu,
        ),
        case(
            "VLAN not served",
            tagged(sta(1), 999, 0, 40),
            Reason::DownPassOtherVlan,
        ),
        case(
            "broadcast",
            tagged([0xff; 6], 200, 0, 40),
            Reason::DownPassGroup,
        ),
        case(
            "multicast",
            tagged([0x01, 0, 0x5e, 0, 0, 1], 200, 0, 40),
            Reason::DownPassGroup,
        ),
        case(
            "untagged",
            craft::ethernet(sta(1), GW, None, eth::ETHERTYPE_IPV4, &client_ip(1)),
            Reason::DownPassNotTagged,
        ),
        case(
            "802.1ad tag",
            craft::ethernet(
                sta(1),
                GW,
                Some((vlan::TPID_8021AD, 200)),
                eth::ETHERTYPE_IPV4,
                &client_ip(1),
            ),
            Reason::DownPassNotTagged,
        ),
        case(
            "unknown station",
            tagged(sta(77), 200, 0, 40),
            Reason::DownDropUnknownStation,
        ),
        case(
            "known MAC, other VLAN",
            tagged(sta(1), 201, 0, 40),
            Reason::DownDropUnknownStation,
        ),
        case(
            "static station whose tunnel serves another VLAN",
            tagged(sta(99), 201, 0, 40),
            Reason::DownDropNoTunnel,
        ),
        case(
            "station behind standby tunnel",
            tagged(sta(30), 200, 0, 40),
            Reason::DownDropStandby,
        ),
        case(
            "static station once AP6's port is known",
            tagged(sta(60), 300, 0, 40),
            Reason::DownForwarded,
        ),
        case(
            "802.11 tunnel, station without BSSID",
            tagged(sta(11), 201, 0, 40),
            Reason::DownDropNoBssid,
        ),
        case(
            "no FIB answer and no configured neighbour",
            tagged(sta(40), 210, 0, 40),
            Reason::DownDropNoNeighbour,
        ),
    ]
}

#[test]
fn hand_built_frames_cover_every_branch() {
    let t = tables_down();
    let dp = datapath(&t);
    let mut model = Model::new(&t);
    let mut prev = dp.counters().unwrap();
    // Before any traffic from AP6, its any-port tunnel has no port to send
    // to: the one case that needs the state before learning.
    let o = check(
        &dp,
        &mut model,
        &mut prev,
        &tagged(sta(60), 300, 0, 40),
        "no AP port",
        Direction::Down,
    );
    assert_eq!(o.reason, Reason::DownDropNoApPort);
    for (i, p) in learning_traffic().iter().enumerate() {
        check(
            &dp,
            &mut model,
            &mut prev,
            p,
            &format!("learning #{i}"),
            Direction::Up,
        );
    }
    let mut seen = std::collections::BTreeSet::from([Reason::DownDropNoApPort]);
    for c in hand_built() {
        let o = check(
            &dp,
            &mut model,
            &mut prev,
            &c.frame,
            c.name,
            Direction::Down,
        );
        assert_eq!(o.reason, c.reason, "{}", c.name);
        if let Some(output) = c.output {
            output(&o.output);
        }
        seen.insert(c.reason);
    }
    for r in Reason::ALL {
        if r.direction() == Direction::Down
            && !matches!(
                r,
                Reason::DownReceived | Reason::DownDropNoEgress | Reason::DownDropInternal
            )
        {
            assert!(seen.contains(r), "no hand-built case for {r:?}");
        }
    }
}

#[test]
fn ipv6_plain_udp_carries_a_full_checksum() {
    let mut t = tables_down();
    for tn in &mut t.tunnels {
        if tn.info.id == 6 {
            tn.down.flags &= !DOWN_UDPLITE;
        }
    }
    let (dp, mut model, mut prev) = setup(&t);
    for len in [40usize, 41, 1200] {
        let o = check(
            &dp,
            &mut model,
            &mut prev,
            &tagged(sta(61), 300, 0, len),
            "IPv6 UDP",
            Direction::Down,
        );
        assert_eq!(o.reason, Reason::DownForwarded);
        let out = &o.output;
        assert_eq!(out[14 + 6], 17);
        // Verify independently: pseudo-header + datagram sums to 0xffff.
        let l4 = 54;
        let mut ph = Vec::new();
        ph.extend_from_slice(&out[14 + 8..14 + 40]);
        ph.extend_from_slice(&((out.len() - l4) as u32).to_be_bytes());
        ph.extend_from_slice(&[0, 0, 0, 17]);
        ph.extend_from_slice(&out[l4..]);
        assert_eq!(
            craft::inet_checksum(&ph),
            0,
            "UDP/IPv6 checksum verifies (len {len})"
        );
    }
}

#[test]
fn round_trip_gives_back_the_client_frame() {
    let t = tables_down();
    let (dp, mut model, mut prev) = setup(&t);
    for (da, vid, what) in [
        (sta(1), 200, "802.3 over IPv4"),
        (sta(10), 201, "802.11 + Radio MAC"),
        (sta(61), 300, "IPv6"),
    ] {
        let frame = tagged(da, vid, 0, 60);
        let down = check(&dp, &mut model, &mut prev, &frame, what, Direction::Down);
        assert_eq!(down.reason, Reason::DownForwarded, "{what}");
        // Through the kernel's upstream program, AP -> AC.
        let up = check(
            &dp,
            &mut model,
            &mut prev,
            &mirrored(&down.output),
            what,
            Direction::Up,
        );
        assert_eq!(up.reason, Reason::Forwarded, "{what}");
        assert_eq!(hex(&up.output), hex(&frame), "{what}: round trip");
    }
}

/// A group (multicast) client source address: never learned.
const GROUP_SOURCE: [u8; 6] = [0x03, 0, 0, 0, 0, 1];

/// An 802.3 CAPWAP data frame from client `src` (IPv4 payload `seq`)
/// through the AP at `ap`, UDP source port `port`.
fn client_frame(ap: std::net::Ipv4Addr, port: u16, src: [u8; 6], seq: u32) -> Vec<u8> {
    let mut tr = transport(ap.into());
    tr.sport = port;
    let inner = craft::ethernet(GW, src, None, eth::ETHERTYPE_IPV4, &client_ip(seq));
    craft::capwap_packet(&tr, craft::header_8023(0), &Options::default(), &inner)
}

/// Puts AP4's any-port tunnel into VLAN 200, AP1's: roaming moves a
/// station only between tunnels of the same VLAN.
fn ap4_in_vlan_200(t: &mut Tables) {
    for tn in &mut t.tunnels {
        if tn.info.id == 4 {
            tn.info.vlan = 200;
            tn.down.vlan = 200;
        }
    }
}

#[test]
fn station_learning_limits_moves_and_static_entries() {
    let mut t = tables_down();
    for tn in &mut t.tunnels {
        if tn.info.id == 1 {
            tn.info.station_limit = 4;
        }
    }
    ap4_in_vlan_200(&mut t);
    t.stations.push(Station::new(sta(50), 200, 4, 0, None));
    let dp = datapath(&t);
    let mut model = Model::new(&t);
    let mut prev = dp.counters().unwrap();
    let from =
        |ap: std::net::Ipv4Addr, port: u16, n: u8| client_frame(ap, port, sta(n), u32::from(n));
    let mut up =
        |p: Vec<u8>, what: &str| check(&dp, &mut model, &mut prev, &p, what, Direction::Up);
    for n in 1..=6 {
        up(from(AP1, 12222, n), "learn on AP1");
    }
    // Again: nothing changes, nothing is written.
    for n in 1..=6 {
        up(from(AP1, 12222, n), "refresh on AP1");
    }
    // Roaming: station 2 moves to AP4 (any port), then back.
    up(from(AP4, 5000, 2), "roam to AP4");
    up(from(AP1, 12222, 7), "AP1 has room again");
    up(from(AP1, 12222, 2), "roam back to full AP1");
    // A static station seen elsewhere stays put.
    up(from(AP1, 12222, 50), "static station from another AP");
    // Group source addresses are never learned.
    up(client_frame(AP1, 12222, GROUP_SOURCE, 1), "group source");
    let c = dp.counters().unwrap();
    assert_eq!(
        c.event(Event::StationLearned),
        5,
        "1-4 on AP1, then 7 once 2 left"
    );
    // 5 and 6 twice (first sight and the second round), then 2 roaming
    // back to a full AP1.
    assert_eq!(c.event(Event::StationLimit), 5);
    assert_eq!(c.event(Event::StationMoved), 1);
    assert_eq!(c.event(Event::StationStaticKept), 1);
    assert_eq!(dp.station_count(1).unwrap(), 4);
    assert_eq!(dp.station_count(4).unwrap(), 1);
    assert_eq!(kernel_stations(&dp), model.stations());
    let learned_port = dp.tunnel_down(4).unwrap().port;
    assert_eq!(learned_port, 5000, "any-port tunnel learned the AP's port");
}

/// A random client-side frame: learned, static, unknown or group
/// destinations, any VLAN (mostly served ones), any priority, any size.
fn random_frame(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let da = match rng.random_range(0..10) {
        0 => [0xff; 6],
        1 => [0x01, 0, 0x5e, 0, 0, rng.random()],
        2 => sta(rng.random()),
        _ => sta([1, 2, 3, 10, 11, 30, 40, 60, 61, 99][rng.random_range(0..10)]),
    };
    let vid = match rng.random_range(0..8) {
        0 => rng.random_range(0..4096),
        _ => [200, 201, 210, 300][rng.random_range(0..4)],
    };
    let len = if rng.random_bool(0.1) {
        rng.random_range(1300..1700)
    } else {
        rng.random_range(0..300)
    };
    let mut body = vec![0u8; len];
    rng.fill_bytes(&mut body);
    let tag = match rng.random_range(0..12) {
        0 => None,
        1 => Some((vlan::TPID_8021AD, vlan::tci(0, vid))),
        _ => Some((vlan::TPID_8021Q, vlan::tci(rng.random_range(0..8), vid))),
    };
    let et = if rng.random_bool(0.8) {
        eth::ETHERTYPE_IPV4
    } else {
        rng.random()
    };
    let mut f = craft::ethernet(da, sta(rng.random_range(100..120)), tag, et, &body);
    if rng.random_bool(0.05) {
        let n = rng.random_range(14..=f.len());
        f.truncate(n);
    }
    f
}

#[test]
fn ten_thousand_random_client_frames_agree() {
    let t = tables_down();
    let (dp, mut model, mut prev) = setup(&t);
    let mut rng = ChaCha8Rng::seed_from_u64(0x0d0e_5eed);
    let mut reasons = std::collections::BTreeMap::<Reason, u32>::new();
    let mut down_stats = std::collections::BTreeMap::<u32, (u64, u64)>::new();
    for i in 0..10_000u32 {
        let f = random_frame(&mut rng);
        let o = check(
            &dp,
            &mut model,
            &mut prev,
            &f,
            &format!("random #{i}"),
            Direction::Down,
        );
        *reasons.entry(o.reason).or_default() += 1;
        if o.reason == Reason::DownForwarded {
            let e = down_stats.entry(o.tunnel.unwrap()).or_default();
            e.0 += 1;
            e.1 += o.output.len() as u64;
        }
    }
    for r in [
        Reason::DownForwarded,
        Reason::DownPassGroup,
        Reason::DownPassMtu,
        Reason::DownDropUnknownStation,
        Reason::DownPassOtherVlan,
        Reason::DownPassNotTagged,
    ] {
        assert!(
            reasons.get(&r).copied().unwrap_or(0) > 20,
            "random frames rarely reach {r:?}: {reasons:?}"
        );
    }
    for (id, (p, b)) in down_stats {
        let s = dp.tunnel_stats(id).unwrap();
        assert_eq!((s.down_packets, s.down_bytes), (p, b), "tunnel {id}");
    }
}

#[test]
fn missing_ap_side_egress_drops() {
    let t = tables_down();
    let mut dp = Datapath::load().unwrap();
    dp.apply(&t).unwrap();
    dp.set_client_egress(1).unwrap();
    let mut model = Model::new(&t);
    model.egress_down_ready = false;
    let mut prev = dp.counters().unwrap();
    for (i, p) in learning_traffic().iter().enumerate() {
        check(
            &dp,
            &mut model,
            &mut prev,
            p,
            &format!("learning #{i}"),
            Direction::Up,
        );
    }
    let f = tagged(sta(1), 200, 0, 40);
    let o = check(
        &dp,
        &mut model,
        &mut prev,
        &f,
        "no AP-side egress",
        Direction::Down,
    );
    assert_eq!(o.reason, Reason::DownDropNoEgress);
    assert_eq!(o.output, f);
}

/// One-arm mode: `ferry_trunk` on a single interface must treat a frame
/// exactly as the program of the side it belongs to: 802.1Q in a client
/// VLAN goes downstream, everything else upstream. Same action, same bytes.
#[test]
fn trunk_program_dispatches_like_the_two_programs() {
    let t = tables_down();
    let (dp, _, _) = setup(&t);
    let mut rng = ChaCha8Rng::seed_from_u64(0x07e0_ca11);
    let mut frames = learning_traffic();
    frames.extend((0..3000).map(|_| random_frame(&mut rng)));
    frames.push(tagged(sta(1), 200, 5, 100));
    frames.push(tagged(sta(1), 999, 5, 100));
    let (mut down, mut up) = (0, 0);
    for (i, f) in frames.iter().enumerate() {
        let client = f.len() >= 16
            && u16::from_be_bytes([f[12], f[13]]) == vlan::TPID_8021Q
            && t.client_vlans
                .contains(&vlan::vid(u16::from_be_bytes([f[14], f[15]])));
        let side = if client {
            down += 1;
            abi::PROG_DOWNSTREAM
        } else {
            up += 1;
            abi::PROG_UPSTREAM
        };
        let want = dp.run(side, f).unwrap();
        let got = dp.run(abi::PROG_TRUNK, f).unwrap();
        assert_eq!(
            (got.action, &got.output),
            (want.action, &want.output),
            "frame #{i} ({side})"
        );
    }
    assert!(
        down > 500 && up > 10,
        "both sides exercised: {down} down, {up} up"
    );
}

#[test]
fn learning_hints_spare_the_station_table_and_count_when_they_do_not() {
    let mut t = tables();
    ap4_in_vlan_200(&mut t);
    let mut dp = datapath(&t);
    let from = |n: u8, ap: std::net::Ipv4Addr, port: u16| client_frame(ap, port, sta(n), 1);
    let reads = |dp: &Datapath| dp.counters().unwrap().station_reads();
    let send = |dp: &Datapath, p: &[u8]| {
        let r = dp.run(abi::PROG_UPSTREAM, p).unwrap();
        assert!(
            [action::TX, action::REDIRECT].contains(&r.action),
            "forwarded, got {}",
            action::name(r.action)
        );
    };
    let base = reads(&dp);
    // First sight: learned through the table; from then on the hint (one
    // array shared by all CPUs) vouches, whichever CPU runs the program.
    send(&dp, &from(1, AP1, 12222));
    assert_eq!(reads(&dp) - base, 1, "the first frame reads the table");
    for _ in 0..100 {
        send(&dp, &from(1, AP1, 12222));
    }
    assert_eq!(reads(&dp) - base, 1, "the hint spares the table");
    // A new epoch: one read refreshes the station, then the hint again.
    dp.advance_hint_epoch().unwrap();
    send(&dp, &from(1, AP1, 12222));
    send(&dp, &from(1, AP1, 12222));
    assert_eq!(reads(&dp) - base, 2, "one read per station per epoch");
    // A new table generation hides every hint.
    dp.bump_generation().unwrap();
    send(&dp, &from(1, AP1, 12222));
    assert_eq!(reads(&dp) - base, 3, "a new generation reads again");
    // The same station through another tunnel is a different fact: it
    // reaches the table and moves, although its hint was fresh.
    send(&dp, &from(1, AP4, 5000));
    assert_eq!(reads(&dp) - base, 4, "a roam reads the table");
    assert_eq!(dp.counters().unwrap().event(Event::StationMoved), 1);
    send(&dp, &from(1, AP4, 5000));
    assert_eq!(reads(&dp) - base, 4, "then the new hint vouches");
    // Another station reads once, then rides its own hint.
    send(&dp, &from(2, AP1, 12222));
    send(&dp, &from(2, AP1, 12222));
    assert_eq!(reads(&dp) - base, 5, "a second station: one read");
    // A group source is never learned, so never read.
    send(&dp, &client_frame(AP1, 12222, GROUP_SOURCE, 1));
    assert_eq!(reads(&dp) - base, 5, "group sources read nothing");
}

#[test]
fn a_move_synced_from_the_peer_clears_the_hint_so_a_return_is_learned() {
    let mut t = tables();
    ap4_in_vlan_200(&mut t);
    let mut dp = datapath(&t);
    let frame = client_frame(AP1, 12222, sta(1), 1);
    dp.run(abi::PROG_UPSTREAM, &frame).unwrap();
    dp.run(abi::PROG_UPSTREAM, &frame).unwrap();
    let key = abi::StationKey {
        mac: sta(1),
        vlan: 200,
    };
    let here = dp.stations().unwrap();
    let learned = here.iter().find(|(k, _)| *k == key).unwrap().1;
    assert_eq!(learned.tunnel, 1);
    // The peer says the station roamed to AP4 (tunnel 4).
    let synced = abi::StationInfo {
        tunnel: 4,
        ..learned
    };
    let got = dp.install_synced(&[(key, synced)]).unwrap();
    assert_eq!(got.moved, 1);
    // It comes back through AP1 within the same epoch: its frame must reach
    // the table and move it back, not ride the hint from before the sync.
    let reads = dp.counters().unwrap().station_reads();
    dp.run(abi::PROG_UPSTREAM, &frame).unwrap();
    assert_eq!(dp.counters().unwrap().station_reads(), reads + 1);
    let now = dp.stations().unwrap();
    assert_eq!(now.iter().find(|(k, _)| *k == key).unwrap().1.tunnel, 1);
}

/// The downstream next hop comes from the kernel FIB once per tunnel, CPU
/// and next-hop generation: later frames reuse it (no lookup counted), a
/// new generation or an in-place move of the tunnel to another AP address
/// (what a session binding does) looks it up again, and what is used is
/// always what the FIB says at that lookup. With the lease ended (no
/// `ferry run` watching the routes) the answer is looked up again every
/// `NEXT_HOP_LEASE_CHECK` frames.
#[test]
fn the_fib_answer_is_cached_per_tunnel_until_a_new_next_hop_generation() {
    use ferry_dataplane::netns::{Netns, veth};
    const MAC_A: [u8; 6] = [0x02, 0x0a, 0, 0, 0, 0xa];
    const MAC_B: [u8; 6] = [0x02, 0x0a, 0, 0, 0, 0xb];
    const MAC_C: [u8; 6] = [0x02, 0x0a, 0, 0, 0, 0xc];
    const MOVED: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 18, 1, 99);
    let ac = Netns::new("nhac").unwrap();
    let peer = Netns::new("nhap").unwrap();
    veth(&ac, "fap0", &peer, "ap0").unwrap();
    let neigh = |ip: std::net::Ipv4Addr, mac: [u8; 6]| {
        ac.set_neighbour("fap0", &ip.to_string(), &mac).unwrap();
    };
    // bpf_fib_lookup answers only with forwarding on.
    ac.exec(&["sysctl", "-q", "-w", "net.ipv4.conf.fap0.forwarding=1"])
        .unwrap();
    ac.exec(&["ip", "addr", "add", "198.18.0.1/16", "dev", "fap0"])
        .unwrap();
    neigh(AP2, MAC_A);
    neigh(MOVED, MAC_C);
    let ap_mac = ac.mac("fap0").unwrap();

    let mut t = tables_down();
    t.settings.ap_ifindex = ac.ifindex("fap0").unwrap();
    for tn in &mut t.tunnels {
        // No configured neighbour: only the FIB can answer.
        tn.down.flags &= !DOWN_NEIGHBOUR;
    }
    // AP2: a fixed port, so nothing has to be learned first.
    t.stations.push(Station::new(
        sta(10),
        201,
        2,
        0,
        Some([0x02, 0xbb, 0, 0, 0, 2]),
    ));
    let frame = tagged(sta(10), 201, 0, 64);
    const CHECK: usize = abi::NEXT_HOP_LEASE_CHECK as usize;
    // (step, destination MAC, source MAC, FIB lookups so far)
    let seen = ac
        .enter(|| {
            pin_to_one_cpu();
            let mut dp = datapath(&t);
            let mut seen = Vec::new();
            let mut send = |dp: &Datapath, step: &'static str| {
                let r = dp.run(abi::PROG_DOWNSTREAM, &frame)?;
                let mut d = [0u8; 6];
                let mut s = [0u8; 6];
                d.copy_from_slice(&r.output[..6]);
                s.copy_from_slice(&r.output[6..12]);
                seen.push((step, d, s, dp.counters()?.fib_lookups()));
                Ok::<_, ferry_dataplane::error::Error>(())
            };
            for _ in 0..3 {
                send(&dp, "first frames")?;
            }
            neigh(AP2, MAC_B);
            send(&dp, "neighbour changed, same generation")?;
            dp.refresh_next_hops()?;
            send(&dp, "new next-hop generation")?;
            send(&dp, "and again")?;
            let mut live = dp.live_tunnels()?;
            let moved = abi::TunnelDown {
                ap: abi::v4_mapped(MOVED.octets()),
                ..live.down(2)?
            };
            live.set_down(2, moved)?;
            send(&dp, "moved in place")?;
            dp.bump_generation()?;
            send(&dp, "new table generation")?;
            send(&dp, "cached again")?;
            // Past several lease checks, with the lease running.
            for _ in 0..200 {
                send(&dp, "under the lease")?;
            }
            dp.end_next_hop_lease()?;
            neigh(MOVED, MAC_A);
            for _ in 0..CHECK {
                send(&dp, "lease ended, neighbour changed")?;
            }
            for _ in 0..2 * CHECK {
                send(&dp, "still no lease")?;
            }
            dp.refresh_next_hops()?;
            for _ in 0..200 {
                send(&dp, "a new generation renews the lease")?;
            }
            Ok::<_, ferry_dataplane::error::Error>(seen)
        })
        .unwrap();
    let want = [
        ("first frames", MAC_A, 1),
        ("first frames", MAC_A, 1),
        ("first frames", MAC_A, 1),
        ("neighbour changed, same generation", MAC_A, 1),
        ("new next-hop generation", MAC_B, 2),
        ("and again", MAC_B, 2),
        ("moved in place", MAC_C, 3),
        ("new table generation", MAC_C, 4),
        ("cached again", MAC_C, 4),
    ];
    for ((step, dmac, _, lookups), (w_step, w_dmac, w_lookups)) in seen.iter().zip(want) {
        assert_eq!(*step, w_step);
        assert_eq!(
            (*dmac, *lookups),
            (w_dmac, w_lookups),
            "{step}: destination MAC and FIB lookups"
        );
    }
    for (step, _, smac, _) in &seen {
        assert_eq!(*smac, ap_mac, "{step}: source MAC from the FIB");
    }
    let part = |name: &str| -> Vec<([u8; 6], u64)> {
        seen.iter()
            .filter(|s| s.0 == name)
            .map(|s| (s.1, s.3))
            .collect()
    };
    // The lease checks under a running lease look nothing up.
    assert!(part("under the lease").iter().all(|s| *s == (MAC_C, 4)));
    // Without a lease, the next check looks up again (the new MAC, one
    // lookup), and so does every check after it.
    let ended = part("lease ended, neighbour changed");
    let switch = ended
        .iter()
        .position(|s| s.0 == MAC_A)
        .expect("looked up again");
    assert!(
        ended[..switch].iter().all(|s| *s == (MAC_C, 4)),
        "{ended:?}"
    );
    assert!(
        ended[switch..].iter().all(|s| *s == (MAC_A, 5)),
        "{ended:?}"
    );
    let still = part("still no lease");
    assert!(still.iter().all(|s| s.0 == MAC_A));
    assert_eq!(still.last().map(|s| s.1), Some(7), "one lookup per check");
    // A new generation looks up once and renews the lease.
    assert!(
        part("a new generation renews the lease")
            .iter()
            .all(|s| *s == (MAC_A, 8))
    );
}

/// The outer headers each CPU keeps per tunnel are rebuilt when what they
/// are built from changes: the settings (a new next-hop generation), the
/// tunnel's flags moved in place (no generation); the AP's port learned in
/// place and the frame's own fields (priority, length) are written per
/// frame.
#[test]
fn cached_outer_headers_follow_settings_flags_and_learned_ports() {
    let t = tables_down();
    // (step, output)
    let outs = (|| {
        // The cache is per CPU: every frame must meet the same entry.
        pin_to_one_cpu();
        let (mut dp, _, _) = setup(&t);
        let mut outs = Vec::new();
        let mut send = |dp: &Datapath, step: &'static str, pcp: u8, len: usize| {
            let r = dp.run(abi::PROG_DOWNSTREAM, &tagged(sta(1), 200, pcp, len))?;
            assert_eq!(r.action, action::REDIRECT, "{step}");
            outs.push((step, r.output));
            Ok::<_, ferry_dataplane::error::Error>(())
        };
        send(&dp, "first", 5, 64)?;
        send(&dp, "cached, other priority and length", 0, 300)?;
        let current = dp.settings()?;
        dp.set_settings(abi::Settings {
            data_port: 5250,
            df: 0,
            ..current
        })?;
        send(&dp, "new settings", 5, 64)?;
        let mut live = dp.live_tunnels()?;
        let d = live.down(1)?;
        live.set_down(
            1,
            abi::TunnelDown {
                flags: d.flags | DOWN_RADIO_MAC,
                radio_mac: [0x02, 0xaa, 0, 0, 0, 0x11],
                ..d
            },
        )?;
        send(&dp, "radio MAC set in place", 5, 64)?;
        let d = live.down(1)?;
        live.set_down(1, abi::TunnelDown { port: 7777, ..d })?;
        send(&dp, "port learned in place", 5, 64)?;
        Ok::<_, ferry_dataplane::error::Error>(outs)
    })()
    .unwrap();
    let ip = eth::HLEN;
    for (step, o) in &outs {
        let mut h = [0u8; ipv4::MIN_HLEN];
        h.copy_from_slice(&o[ip..ip + ipv4::MIN_HLEN]);
        assert_eq!(
            ferry_ebpf::encap::fold(ferry_ebpf::encap::sum16(&h)),
            0,
            "{step}: IPv4 header checksum"
        );
        assert_eq!(
            usize::from(u16::from_be_bytes([h[2], h[3]])),
            o.len() - eth::HLEN,
            "{step}: total length"
        );
    }
    let field = |o: &[u8], at: usize| u16::from_be_bytes([o[at], o[at + 1]]);
    // (step, DSCP, DF, source port, destination port, CAPWAP HLEN words)
    let seen: Vec<_> = outs
        .iter()
        .map(|(step, o)| {
            let cw = L4 + 8;
            (
                *step,
                o[ip + 1] >> 2,
                field(o, ip + ipv4::FRAG) & 0x4000 != 0,
                field(o, L4),
                field(o, L4 + 2),
                capwap::Header::parse(&o[cw..cw + 8].try_into().unwrap()).hlen,
            )
        })
        .collect();
    let learned = seen[0].4;
    assert_eq!(
        seen,
        [
            ("first", 40, true, 5247, learned, 2),
            (
                "cached, other priority and length",
                0,
                true,
                5247,
                learned,
                2
            ),
            ("new settings", 40, false, 5250, learned, 2),
            ("radio MAC set in place", 40, false, 5250, learned, 4),
            ("port learned in place", 40, false, 5250, 7777, 4),
        ]
    );
    let (_, o) = &outs[3];
    assert_eq!(&o[L4 + 16..L4 + 24], &[6, 0x02, 0xaa, 0, 0, 0, 0x11, 0]);
}

//! The loaded XDP program (BPF_PROG_TEST_RUN) against the reference model:
//! same action, same counter reason, same output bytes, for hand-built
//! packets through every branch and for seeded random and mutated packets.

// Test code: a failed step should panic with its message, and test
// tables and end-to-end scenarios read best as one function.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

mod common;

use std::net::IpAddr;

use common::*;
use ferry_dataplane::{
    craft::{self, Dot11, Options},
    datapath::{Datapath, action},
    model::{Model, Outcome},
};
use ferry_ebpf::{
    abi::{self, Reason},
    capwap, dot11, eth, vlan,
};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn check(
    dp: &Datapath,
    model: &mut Model,
    prev: &mut ferry_dataplane::counters::Counters,
    pkt: &[u8],
    what: &str,
) -> Outcome {
    common::check(dp, model, prev, pkt, what, abi::Direction::Up)
}

fn hex(b: &[u8]) -> String {
    common::hex(b)
}

fn inner_8023(seq: u32) -> Vec<u8> {
    craft::ethernet(GW, STA, None, eth::ETHERTYPE_IPV4, &client_ip(seq))
}

/// An 802.3 (T=0) CAPWAP packet over transport `t` from radio `rid`.
fn t0_via(t: &ferry_dataplane::craft::Transport, rid: u8, inner: &[u8]) -> Vec<u8> {
    craft::capwap_packet(t, craft::header_8023(rid), &Options::default(), inner)
}

fn t0(src: IpAddr, inner: &[u8]) -> Vec<u8> {
    craft::capwap_packet(
        &transport(src),
        craft::header_8023(1),
        &Options::default(),
        inner,
    )
}

fn t1(src: IpAddr, frame: &[u8]) -> Vec<u8> {
    craft::capwap_packet(
        &transport(src),
        craft::header_80211(1),
        &Options::default(),
        frame,
    )
}

fn expected_tagged(
    dst: [u8; 6],
    src: [u8; 6],
    pcp: u8,
    vid: u16,
    et: u16,
    payload: &[u8],
) -> Vec<u8> {
    craft::ethernet(
        dst,
        src,
        Some((vlan::TPID_8021Q, vlan::tci(pcp, vid))),
        et,
        payload,
    )
}

struct Case {
    name: &'static str,
    pkt: Vec<u8>,
    reason: Reason,
    /// For forwarded cases: the exact frame expected, built independently.
    output: Option<Vec<u8>>,
}

fn case(name: &'static str, pkt: Vec<u8>, reason: Reason) -> Case {
    Case {
        name,
        pkt,
        reason,
        output: None,
    }
}

fn dot11_frame(fc: dot11::FrameControl, qos: u16, body: &[u8]) -> Vec<u8> {
    Dot11 {
        fc,
        addr: [[0xa1; 6], [0xa2; 6], [0xa3; 6], [0xa4; 6]],
        qos,
        ht: 0x1234_5678,
    }
    .frame(body)
}

fn data_fc(to_ds: bool, from_ds: bool, qos: bool, order: bool) -> dot11::FrameControl {
    dot11::FrameControl {
        ftype: dot11::TYPE_DATA,
        subtype: if qos { dot11::SUBTYPE_QOS } else { 0 },
        to_ds,
        from_ds,
        order,
        ..Default::default()
    }
}

fn hand_built() -> Vec<Case> {
    let ap1: IpAddr = AP1.into();
    let ap6: IpAddr = AP6.into();
    let ip = client_ip(7);
    let mut v = Vec::new();

    // --- forwarded, with independently built expectations ---
    v.push(Case {
        name: "t0 ipv4 untagged",
        pkt: t0(ap1, &inner_8023(7)),
        reason: Reason::Forwarded,
        output: Some(expected_tagged(GW, STA, 0, 200, eth::ETHERTYPE_IPV4, &ip)),
    });
    let mut tr = transport(ap1);
    tr.tag = Some((vlan::TPID_8021Q, 100));
    v.push(Case {
        name: "t0 ipv4 outer 802.1q",
        pkt: t0_via(&tr, 2, &inner_8023(7)),
        reason: Reason::Forwarded,
        output: Some(expected_tagged(GW, STA, 0, 200, eth::ETHERTYPE_IPV4, &ip)),
    });
    tr.tag = Some((vlan::TPID_8021AD, 100));
    v.push(case(
        "t0 ipv4 outer 802.1ad",
        t0_via(&tr, 2, &inner_8023(7)),
        Reason::Forwarded,
    ));
    let mut tr2 = transport(AP2.into());
    tr2.sport = AP2_PORT;
    v.push(Case {
        name: "t0 exact port tunnel vlan 201",
        pkt: t0_via(&tr2, 0, &inner_8023(7)),
        reason: Reason::Forwarded,
        output: Some(expected_tagged(GW, STA, 0, 201, eth::ETHERTYPE_IPV4, &ip)),
    });
    let mut tr4 = transport(AP4.into());
    tr4.sport = AP2_PORT;
    v.push(Case {
        name: "exact port wins over any-port tunnel at the same address",
        pkt: t0_via(&tr4, 0, &inner_8023(7)),
        reason: Reason::Forwarded,
        output: Some(expected_tagged(GW, STA, 0, 211, eth::ETHERTYPE_IPV4, &ip)),
    });
    tr4.sport = 4444;
    v.push(Case {
        name: "other port falls back to the any-port tunnel",
        pkt: t0_via(&tr4, 0, &inner_8023(7)),
        reason: Reason::Forwarded,
        output: Some(expected_tagged(GW, STA, 0, 210, eth::ETHERTYPE_IPV4, &ip)),
    });
    v.push(Case {
        name: "t0 ipv6 udp",
        pkt: t0(ap6, &inner_8023(7)),
        reason: Reason::Forwarded,
        output: Some(expected_tagged(GW, STA, 0, 300, eth::ETHERTYPE_IPV4, &ip)),
    });
    let mut tr6 = transport(ap6);
    tr6.udplite = true;
    v.push(case(
        "t0 ipv6 udp-lite",
        t0_via(&tr6, 0, &inner_8023(7)),
        Reason::Forwarded,
    ));
    let opts = Options {
        radio_mac: Some(vec![0x02, 0, 0, 0, 0, 9]),
        wireless_info: Some(vec![0xd0, 0x20, 0x00, 0x6c]),
    };
    v.push(Case {
        name: "t0 with radio mac and wireless info",
        pkt: craft::capwap_packet(
            &transport(ap1),
            craft::header_8023(3),
            &opts,
            &inner_8023(7),
        ),
        reason: Reason::Forwarded,
        output: Some(expected_tagged(GW, STA, 0, 200, eth::ETHERTYPE_IPV4, &ip)),
    });
    let opts_m = Options {
        radio_mac: Some(vec![0x02, 0, 0, 0, 0, 9]),
        wireless_info: None,
    };
    v.push(case(
        "t0 with radio mac",
        craft::capwap_packet(
            &transport(ap1),
            craft::header_8023(3),
            &opts_m,
            &inner_8023(7),
        ),
        Reason::Forwarded,
    ));
    let opts_w = Options {
        radio_mac: None,
        wireless_info: Some(vec![1, 2, 3, 4, 5, 6, 7, 8, 9]),
    };
    v.push(case(
        "t1 with wireless info",
        craft::capwap_packet(
            &transport(ap1),
            craft::header_80211(3),
            &opts_w,
            &dot11_frame(
                data_fc(true, false, false, false),
                0,
                &craft::snap(eth::ETHERTYPE_IPV4, &ip),
            ),
        ),
        Reason::Forwarded,
    ));
    let mut h = craft::header_8023(0);
    h.flags = 0x7;
    v.push(case(
        "reserved flag bits ignored (RFC 5415 4.3)",
        craft::capwap_packet(&transport(ap1), h, &Options::default(), &inner_8023(7)),
        Reason::Forwarded,
    ));
    let mut padded = t0(ap1, &craft::ethernet(GW, STA, None, 0x88b5, &[]));
    padded.extend_from_slice(&[0xee; 6]);
    v.push(Case {
        name: "trailing ethernet padding trimmed",
        pkt: padded,
        reason: Reason::Forwarded,
        output: Some(expected_tagged(GW, STA, 0, 200, 0x88b5, &[])),
    });

    // 802.11: all four DS combinations, QoS, HT.
    let snap_ip = craft::snap(eth::ETHERTYPE_IPV4, &ip);
    for (name, to, from, da, sa) in [
        ("t1 tods uplink", true, false, [0xa3; 6], [0xa2; 6]),
        ("t1 fromds", false, true, [0xa1; 6], [0xa3; 6]),
        ("t1 no ds (ibss)", false, false, [0xa1; 6], [0xa2; 6]),
        ("t1 wds", true, true, [0xa3; 6], [0xa4; 6]),
    ] {
        v.push(Case {
            name,
            pkt: t1(
                ap1,
                &dot11_frame(data_fc(to, from, false, false), 0, &snap_ip),
            ),
            reason: Reason::Forwarded,
            output: Some(expected_tagged(da, sa, 0, 200, eth::ETHERTYPE_IPV4, &ip)),
        });
    }
    v.push(Case {
        name: "t1 qos tid 5 -> pcp 5",
        pkt: t1(
            ap1,
            &dot11_frame(data_fc(true, false, true, false), 5, &snap_ip),
        ),
        reason: Reason::Forwarded,
        output: Some(expected_tagged(
            [0xa3; 6],
            [0xa2; 6],
            5,
            200,
            eth::ETHERTYPE_IPV4,
            &ip,
        )),
    });
    v.push(Case {
        name: "t1 qos+ht (order)",
        pkt: t1(
            ap1,
            &dot11_frame(data_fc(true, false, true, true), 6, &snap_ip),
        ),
        reason: Reason::Forwarded,
        output: Some(expected_tagged(
            [0xa3; 6],
            [0xa2; 6],
            6,
            200,
            eth::ETHERTYPE_IPV4,
            &ip,
        )),
    });
    v.push(Case {
        name: "t1 wds qos+ht",
        pkt: t1(
            ap1,
            &dot11_frame(data_fc(true, true, true, true), 0x0f, &snap_ip),
        ),
        reason: Reason::Forwarded,
        output: Some(expected_tagged(
            [0xa3; 6],
            [0xa4; 6],
            7,
            200,
            eth::ETHERTYPE_IPV4,
            &ip,
        )),
    });
    v.push(case(
        "t1 order without qos has no ht field",
        t1(
            ap1,
            &dot11_frame(data_fc(true, false, false, true), 0, &snap_ip),
        ),
        Reason::Forwarded,
    ));
    let mut bt = dot11::SNAP_BRIDGE_TUNNEL.to_vec();
    bt.extend_from_slice(&0x8137u16.to_be_bytes());
    bt.extend_from_slice(&[1, 2, 3, 4]);
    v.push(Case {
        name: "t1 bridge-tunnel snap",
        pkt: t1(
            ap1,
            &dot11_frame(data_fc(true, false, false, false), 0, &bt),
        ),
        reason: Reason::Forwarded,
        output: Some(expected_tagged(
            [0xa3; 6],
            [0xa2; 6],
            0,
            200,
            0x8137,
            &[1, 2, 3, 4],
        )),
    });
    let llc = [0x42u8, 0x42, 0x03, 9, 9, 9, 9];
    v.push(Case {
        name: "t1 non-snap -> 802.3 length frame",
        pkt: t1(
            ap1,
            &dot11_frame(data_fc(true, false, false, false), 0, &llc),
        ),
        reason: Reason::Forwarded,
        output: Some(expected_tagged(
            [0xa3; 6],
            [0xa2; 6],
            0,
            200,
            llc.len() as u16,
            &llc,
        )),
    });
    v.push(case(
        "t1 ipv6 transport",
        t1(
            ap6,
            &dot11_frame(data_fc(true, false, true, false), 2, &snap_ip),
        ),
        Reason::Forwarded,
    ));

    // --- pass ---
    v.push(case(
        "arp",
        craft::ethernet([0xff; 6], STA, None, eth::ETHERTYPE_ARP, &[0u8; 28]),
        Reason::PassNotIp,
    ));
    let mut dbl = t0(ap1, &inner_8023(1));
    dbl.splice(12..12, [0x88, 0xa8, 0, 5, 0x81, 0x00, 0, 6]);
    v.push(case("double tagged", dbl, Reason::PassNotIp));
    let mut badver = t0(ap1, &inner_8023(1));
    badver[14] = 0x55;
    v.push(case("ipv4 version 5", badver, Reason::PassBadIp));
    let mut ihl = t0(ap1, &inner_8023(1));
    ihl[14] = 0x44;
    v.push(case("ipv4 ihl 4", ihl, Reason::PassBadIp));
    v.push(case(
        "truncated ipv4",
        t0(ap1, &inner_8023(1))[..30].to_vec(),
        Reason::PassBadIp,
    ));
    let mut other = transport(ap1);
    other.dst = "198.18.0.99".parse().unwrap();
    v.push(case(
        "not local",
        t0_via(&other, 0, &inner_8023(1)),
        Reason::PassNotLocal,
    ));
    let mut tcp = t0(ap1, &inner_8023(1));
    tcp[14 + 9] = 6;
    v.push(case("tcp to us", tcp, Reason::PassNotData));
    let mut ctl = transport(ap1);
    ctl.dport = capwap::CONTROL_PORT;
    v.push(case(
        "capwap control port",
        craft::capwap_packet(&ctl, craft::header_8023(0), &Options::default(), &[0u8; 20]),
        Reason::PassNotData,
    ));
    let mut frag = t0(ap1, &inner_8023(1));
    frag[14 + 6] = 0x20; // MF
    v.push(case("ipv4 more fragments", frag, Reason::PassIpFragment));
    let mut frag2 = t0(ap1, &inner_8023(1));
    frag2[14 + 6] = 0x00;
    frag2[14 + 7] = 0x10;
    v.push(case("ipv4 fragment offset", frag2, Reason::PassIpFragment));
    let mut ext = t0(ap6, &inner_8023(1));
    ext[14 + 6] = 0; // hop-by-hop
    v.push(case("ipv6 extension header", ext, Reason::PassIpv6Ext));
    let mut tcp6 = t0(ap6, &inner_8023(1));
    tcp6[14 + 6] = 6;
    v.push(case("ipv6 tcp to us", tcp6, Reason::PassNotData));
    v.push(case(
        "keepalive",
        craft::udp_frame(&transport(ap1), &craft::keepalive(&[7; 16])),
        Reason::PassKeepalive,
    ));
    v.push(case(
        "keepalive from unknown source still punted",
        craft::udp_frame(&transport(STRANGER.into()), &craft::keepalive(&[7; 16])),
        Reason::PassKeepalive,
    ));
    let mut dtls = vec![0x01, 0, 0, 0, 0x17, 0xfe, 0xfd];
    dtls.extend_from_slice(&[0u8; 40]);
    v.push(case(
        "dtls",
        craft::udp_frame(&transport(ap1), &dtls),
        Reason::PassDtls,
    ));
    let mut fh = craft::header_8023(0);
    fh.fragment = true;
    fh.frag_id = 9;
    v.push(case(
        "capwap fragment",
        craft::capwap_packet(&transport(ap1), fh, &Options::default(), &inner_8023(1)),
        Reason::PassCapwapFragment,
    ));
    let mgmt = dot11::FrameControl {
        ftype: dot11::TYPE_MGMT,
        subtype: 0,
        ..Default::default()
    };
    v.push(case(
        "dot11 mgmt (assoc req)",
        t1(ap1, &dot11_frame(mgmt, 0, &[0u8; 12])),
        Reason::PassDot11Mgmt,
    ));
    v.push(case(
        "eapol t0",
        t0(
            ap1,
            &craft::ethernet(GW, STA, None, eth::ETHERTYPE_EAPOL, &[1, 3, 0, 0]),
        ),
        Reason::PassEapol,
    ));
    v.push(case(
        "eapol t1",
        t1(
            ap1,
            &dot11_frame(
                data_fc(true, false, true, false),
                7,
                &craft::snap(eth::ETHERTYPE_EAPOL, &[1, 3, 0, 0]),
            ),
        ),
        Reason::PassEapol,
    ));
    v.push(case(
        "a-msdu",
        t1(
            ap1,
            &dot11_frame(data_fc(true, false, true, false), 0x80, &snap_ip),
        ),
        Reason::PassAmsdu,
    ));

    // --- drop ---
    let mut long_ip = t0(ap1, &inner_8023(1));
    long_ip[14 + 2] = 0x05;
    v.push(case(
        "ipv4 total length past frame",
        long_ip,
        Reason::DropBadLength,
    ));
    let mut long_udp = t0(ap1, &inner_8023(1));
    long_udp[14 + 20 + 4] = 0x04;
    v.push(case("udp length past ip", long_udp, Reason::DropBadLength));
    let mut short_udp = t0(ap1, &inner_8023(1));
    short_udp[14 + 20 + 4] = 0;
    short_udp[14 + 20 + 5] = 7;
    v.push(case("udp length < 8", short_udp, Reason::DropBadLength));
    v.push(case(
        "capwap short",
        craft::udp_frame(&transport(ap1), &[0, 0x10, 0, 0]),
        Reason::DropCapwapShort,
    ));
    let mut ver = t0(ap1, &inner_8023(1));
    ver[42] = 0x10;
    v.push(case("capwap version 1", ver, Reason::DropBadVersion));
    let mut ty = t0(ap1, &inner_8023(1));
    ty[42] = 0x02;
    v.push(case("capwap type 2", ty, Reason::DropBadType));
    let mut hl = t0(ap1, &inner_8023(1));
    hl[43] = 1 << 3;
    v.push(case("hlen 1", hl, Reason::DropBadHlen));
    let mut hl2 = craft::udp_frame(
        &transport(ap1),
        &craft::capwap(craft::header_8023(0), &Options::default(), &[0u8; 8]),
    );
    hl2[43] = 31 << 3;
    v.push(case("hlen past datagram", hl2, Reason::DropBadHlen));
    let mut bad_opt = craft::capwap_packet(
        &transport(ap1),
        craft::header_8023(0),
        &opts_m,
        &inner_8023(1),
    );
    bad_opt[50] = 200; // radio MAC length runs past HLEN
    v.push(case(
        "radio mac past hlen",
        bad_opt,
        Reason::DropBadOptional,
    ));
    let mut m_no_room = t0(ap1, &inner_8023(1));
    m_no_room[45] |= 0x10; // M set but HLEN 2 leaves no room
    v.push(case(
        "radio mac flag without field",
        m_no_room,
        Reason::DropBadOptional,
    ));
    v.push(case(
        "unknown tunnel",
        t0(STRANGER.into(), &inner_8023(1)),
        Reason::DropUnknownTunnel,
    ));
    let mut wrong_port = transport(AP2.into());
    wrong_port.sport = 999;
    v.push(case(
        "known address, other port",
        t0_via(&wrong_port, 0, &inner_8023(1)),
        Reason::DropUnknownTunnel,
    ));
    v.push(case(
        "standby tunnel",
        t0(AP3.into(), &inner_8023(1)),
        Reason::DropStandby,
    ));
    let mut wb = craft::header_80211(0);
    wb.wbid = 3;
    v.push(case(
        "native frame, wbid 3",
        craft::capwap_packet(&transport(ap1), wb, &Options::default(), &[0u8; 40]),
        Reason::DropBadWbid,
    ));
    v.push(case(
        "t0 inner < 14 bytes",
        t0(ap1, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]),
        Reason::DropInnerShort,
    ));
    v.push(case(
        "t1 inner 1 byte",
        t1(ap1, &[8]),
        Reason::DropInnerShort,
    ));
    v.push(case(
        "t1 header truncated",
        t1(
            ap1,
            &dot11_frame(data_fc(true, true, true, true), 0, &[])[..30],
        ),
        Reason::DropInnerShort,
    ));
    v.push(case(
        "t0 inner vlan tag",
        t0(
            ap1,
            &craft::ethernet(GW, STA, Some((0x8100, 5)), eth::ETHERTYPE_IPV4, &ip),
        ),
        Reason::DropInnerVlan,
    ));
    v.push(case(
        "t1 snap vlan tag",
        t1(
            ap1,
            &dot11_frame(
                data_fc(true, false, false, false),
                0,
                &craft::snap(0x8100, &[0, 5, 8, 0]),
            ),
        ),
        Reason::DropInnerVlan,
    ));
    let ctrl = dot11::FrameControl {
        ftype: dot11::TYPE_CTRL,
        subtype: 0xd,
        ..Default::default()
    };
    v.push(case(
        "dot11 control (ack)",
        t1(
            ap1,
            &ctrl
                .encode()
                .iter()
                .chain(&[0u8; 8])
                .copied()
                .collect::<Vec<_>>(),
        ),
        Reason::DropDot11NotData,
    ));
    let ext_t = dot11::FrameControl {
        ftype: 3,
        ..Default::default()
    };
    v.push(case(
        "dot11 extension type",
        t1(ap1, &dot11_frame(ext_t, 0, &[])),
        Reason::DropDot11NotData,
    ));
    let mut null = data_fc(true, false, true, false);
    null.subtype |= dot11::SUBTYPE_NULL;
    v.push(case(
        "qos null",
        t1(ap1, &dot11_frame(null, 0, &[])),
        Reason::DropNullData,
    ));
    let mut prot = data_fc(true, false, true, false);
    prot.protected = true;
    v.push(case(
        "protected",
        t1(ap1, &dot11_frame(prot, 0, &[0x55; 40])),
        Reason::DropProtected,
    ));
    v.push(case(
        "snap with length not ethertype",
        t1(
            ap1,
            &dot11_frame(
                data_fc(true, false, false, false),
                0,
                &craft::snap(0x0100, &[0; 4]),
            ),
        ),
        Reason::DropBadPayload,
    ));
    v.push(case(
        "empty body",
        t1(
            ap1,
            &dot11_frame(data_fc(true, false, false, false), 0, &[]),
        ),
        Reason::DropBadPayload,
    ));
    v.push(case(
        "non-snap body > 1500",
        t1(
            ap1,
            &dot11_frame(data_fc(true, false, false, false), 0, &[0x42; 1501]),
        ),
        Reason::DropBadPayload,
    ));
    v
}

#[test]
fn hand_built_packets_cover_every_branch() {
    let (dp, mut model) = pair();
    // Two of six tunnels are port-declared: the (address, any port) entry
    // is looked up first.
    assert_eq!(dp.settings().unwrap().tunnel_lookup, 0);
    hand_built_agree(&dp, &mut model);
}

#[test]
fn exact_port_first_lookups_give_the_same_answers() {
    // Mostly port-declared tunnels (at other addresses): the exact
    // (address, port) entry is looked up first, and every hand-built case,
    // the any-port fallbacks and the marker's unknown ports among them,
    // ends as in the model (whose lookup order never changes).
    let mut t = tables();
    for i in 0..8u8 {
        t.tunnels.push(common::tunnel(
            IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 9, 1 + i)),
            1000 + u16::from(i),
            20 + u32::from(i),
            200,
            0,
        ));
    }
    let dp = common::datapath(&t);
    let mut model = ferry_dataplane::model::Model::new(&t);
    assert_eq!(
        dp.settings().unwrap().tunnel_lookup,
        abi::LOOKUP_EXACT_FIRST
    );
    hand_built_agree(&dp, &mut model);
}

fn hand_built_agree(
    dp: &ferry_dataplane::datapath::Datapath,
    model: &mut ferry_dataplane::model::Model,
) {
    let mut prev = dp.counters().unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for c in hand_built() {
        let out = check(dp, model, &mut prev, &c.pkt, c.name);
        assert_eq!(out.reason, c.reason, "{}: model reason", c.name);
        if let Some(exp) = &c.output {
            assert_eq!(hex(&out.output), hex(exp), "{}: output", c.name);
        }
        seen.insert(c.reason);
    }
    // Every reason except the ones that need a special setup is exercised here.
    for r in Reason::ALL {
        if r.direction() != abi::Direction::Up
            || matches!(
                r,
                Reason::Received | Reason::DropNoEgress | Reason::DropInternal
            )
        {
            continue;
        }
        assert!(seen.contains(r), "no hand-built case for {r:?}");
    }
}

#[test]
fn many_local_ipv4_addresses_use_the_hash_map() {
    // More than LOCAL4_INLINE IPv4 addresses: locality comes from LOCAL_ADDRS.
    let mut t = tables();
    for i in 2..8u8 {
        t.local_addrs
            .push(std::net::Ipv4Addr::new(198, 18, 0, i).into());
    }
    let dp = datapath(&t);
    let mut model = Model::new(&t);
    let mut prev = dp.counters().unwrap();
    for c in hand_built() {
        let out = check(&dp, &mut model, &mut prev, &c.pkt, c.name);
        assert_eq!(out.reason, c.reason, "{}", c.name);
    }
    let mut tr = transport(AP1.into());
    tr.dst = "198.18.0.7".parse().unwrap();
    let pkt = t0_via(&tr, 0, &inner_8023(1));
    assert_eq!(
        check(&dp, &mut model, &mut prev, &pkt, "last local address").reason,
        Reason::Forwarded
    );
    tr.dst = "198.18.0.8".parse().unwrap();
    let pkt = t0_via(&tr, 0, &inner_8023(1));
    assert_eq!(
        check(&dp, &mut model, &mut prev, &pkt, "not local").reason,
        Reason::PassNotLocal
    );
}

#[test]
fn tx_egress_and_missing_redirect_egress() {
    let mut t = tables();
    t.settings.egress = abi::EGRESS_TX;
    let dp = datapath(&t);
    let mut model = Model::new(&t);
    let mut prev = dp.counters().unwrap();
    let pkt = t0(AP1.into(), &inner_8023(3));
    let o = check(&dp, &mut model, &mut prev, &pkt, "tx egress");
    assert_eq!(o.action, action::TX);

    // Redirect egress configured but the DEVMAP slot never filled.
    let t = tables();
    let mut dp = Datapath::load().unwrap();
    dp.apply(&t).unwrap();
    let mut model = Model::new(&t);
    model.egress_ready = false;
    let mut prev = dp.counters().unwrap();
    let o = check(&dp, &mut model, &mut prev, &pkt, "no egress");
    assert_eq!(o.reason, Reason::DropNoEgress);
    assert_eq!(o.output, pkt, "a dropped packet is left untouched");
}

#[test]
fn empty_table_drops_everything_from_aps() {
    let mut t = tables();
    t.tunnels.clear();
    let dp = datapath(&t);
    let mut model = Model::new(&t);
    let mut prev = dp.counters().unwrap();
    let o = check(
        &dp,
        &mut model,
        &mut prev,
        &t0(AP1.into(), &inner_8023(1)),
        "empty table",
    );
    assert_eq!(o.reason, Reason::DropUnknownTunnel);
}

/// A random well-formed-ish packet: any tunnel or a stranger, either family,
/// either T, any DS bits, QoS/HT, options, payload.
fn random_packet(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let src: IpAddr = match rng.random_range(0..7) {
        0 => AP1.into(),
        1 => AP2.into(),
        2 => AP3.into(),
        3 => AP6.into(),
        4 => STRANGER.into(),
        5 => AP4.into(),
        _ => AP1.into(),
    };
    let mut tr = transport(src);
    if src == IpAddr::from(AP2) || src == IpAddr::from(AP4) {
        tr.sport = if rng.random_bool(0.6) {
            AP2_PORT
        } else {
            rng.random_range(1024..65535)
        };
    }
    if rng.random_bool(0.2) {
        tr.tag = Some((
            if rng.random_bool(0.5) { 0x8100 } else { 0x88a8 },
            rng.random(),
        ));
    }
    tr.udplite = rng.random_bool(0.5);
    let opts = Options {
        radio_mac: rng
            .random_bool(0.3)
            .then(|| vec![2, 0, 0, 0, 0, rng.random()]),
        wireless_info: rng.random_bool(0.3).then(|| {
            let n = rng.random_range(0..12);
            (0..n).map(|_| rng.random()).collect()
        }),
    };
    let mut body = vec![0u8; rng.random_range(0..200)];
    rng.fill_bytes(&mut body);
    let mut h = if rng.random_bool(0.5) {
        craft::header_80211(rng.random_range(0..32))
    } else {
        craft::header_8023(rng.random_range(0..32))
    };
    if rng.random_bool(0.05) {
        h.keepalive = true;
    }
    if rng.random_bool(0.05) {
        h.fragment = true;
    }
    let payload = if h.native {
        let fc = dot11::FrameControl {
            ftype: if rng.random_bool(0.85) {
                dot11::TYPE_DATA
            } else {
                rng.random_range(0..4)
            },
            subtype: rng.random_range(0..16) & if rng.random_bool(0.7) { 0x8 } else { 0xf },
            to_ds: rng.random(),
            from_ds: rng.random(),
            protected: rng.random_bool(0.05),
            order: rng.random_bool(0.3),
            version: 0,
        };
        let inner = match rng.random_range(0..4) {
            0 => body.clone(),
            1 => craft::snap(eth::ETHERTYPE_EAPOL, &body),
            _ => craft::snap(rng.random_range(0x0600..0xffff), &body),
        };
        let qos = rng.random::<u16>() & if rng.random_bool(0.8) { 0x7f } else { 0xffff };
        Dot11 {
            fc,
            addr: [[1; 6], [2; 6], [3; 6], [4; 6]],
            qos,
            ht: rng.random(),
        }
        .frame(&inner)
    } else {
        let et = match rng.random_range(0..6) {
            0 => eth::ETHERTYPE_EAPOL,
            1 => 0x8100,
            _ => rng.random(),
        };
        craft::ethernet(GW, STA, None, et, &body)
    };
    let mut pkt = craft::capwap_packet(&tr, h, &opts, &payload);
    if rng.random_bool(0.1) {
        let n = rng.random_range(1..20);
        pkt.extend((0..n).map(|_| rng.random::<u8>()));
    }
    pkt
}

/// Breaks a packet the way the wild and CVEs do: bit flips in the headers,
/// interesting byte values, truncation.
fn mutate(rng: &mut ChaCha8Rng, mut pkt: Vec<u8>) -> Vec<u8> {
    let rounds = rng.random_range(1..4);
    for _ in 0..rounds {
        let hot = pkt.len().min(120);
        match rng.random_range(0..5) {
            0 => {
                let i = rng.random_range(0..hot);
                pkt[i] ^= 1 << rng.random_range(0..8);
            }
            1 => {
                let i = rng.random_range(0..hot);
                pkt[i] = [0, 1, 2, 0x7f, 0x80, 0xff, 0x08, 0x10][rng.random_range(0..8)];
            }
            2 => {
                let n = rng.random_range(eth::HLEN..=pkt.len());
                pkt.truncate(n);
            }
            3 => {
                let i = rng.random_range(0..hot);
                pkt[i] = rng.random();
            }
            _ => {
                // CAPWAP byte 1..3 (HLEN, RID/WBID/T, flags) for IPv4 untagged.
                if pkt.len() > 46 {
                    let i = rng.random_range(42..46);
                    pkt[i] = rng.random();
                }
            }
        }
    }
    pkt
}

#[test]
fn ten_thousand_random_and_mutated_packets_agree() {
    let (dp, mut model) = pair();
    let mut prev = dp.counters().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0x00fe_4747);
    let mut reasons = std::collections::BTreeMap::<Reason, u32>::new();
    let mut stats = std::collections::BTreeMap::<u32, abi::TunnelStats>::new();
    for i in 0..12_000u32 {
        let base = random_packet(&mut rng);
        let pkt = if i % 2 == 0 {
            base
        } else {
            mutate(&mut rng, base)
        };
        let o = check(&dp, &mut model, &mut prev, &pkt, &format!("random #{i}"));
        *reasons.entry(o.reason).or_default() += 1;
        if let Some(id) = o.tunnel {
            let s: &mut abi::TunnelStats = stats.entry(id).or_default();
            s.rx_packets += 1;
            s.rx_bytes += pkt.len() as u64;
            if o.reason == Reason::Forwarded {
                s.up_packets += 1;
                s.up_bytes += o.output.len() as u64;
            }
        }
    }
    // The generator must actually reach deep branches, not just bounce off
    // the outer parser.
    for r in [
        Reason::Forwarded,
        Reason::DropUnknownTunnel,
        Reason::DropStandby,
        Reason::PassEapol,
        Reason::DropBadHlen,
        Reason::DropInnerVlan,
        Reason::DropProtected,
        Reason::PassAmsdu,
    ] {
        assert!(
            reasons.get(&r).copied().unwrap_or(0) > 10,
            "random packets rarely reach {r:?}: {reasons:?}"
        );
    }
    // And per-tunnel statistics add up the same way on both sides.
    for id in [1u32, 2, 3, 4, 5, 6] {
        let want = stats.get(&id).copied().unwrap_or_default();
        assert!(
            want.rx_packets > 100,
            "tunnel {id} barely exercised: {want:?}"
        );
        assert_eq!(dp.tunnel_stats(id).unwrap(), want, "tunnel {id} statistics");
        assert_eq!(
            dp.station_count(id).unwrap(),
            model.station_count(id),
            "tunnel {id} station count"
        );
    }
    // Station learning left the same table on both sides.
    assert_eq!(kernel_stations(&dp), model.stations());
}

//! Live smoke test: AP namespace -> veth -> ferry's XDP program (native
//! mode) -> XDP_REDIRECT -> veth -> client namespace. Frames from a known AP
//! arrive tagged with VLAN 200 and carrying exactly the inner frame; frames
//! from an unknown AP do not arrive.

// Test code: a failed step should panic with its message, and test
// tables and end-to-end scenarios read best as one function.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

mod common;

use std::{net::IpAddr, time::Duration};

use aya::programs::XdpMode;
use common::*;
use ferry_dataplane::{
    capture::PacketSocket,
    craft::{self, Dot11, Options, Transport},
    datapath::Datapath,
    netns::{Netns, veth},
};
use ferry_ebpf::{
    abi::{self, Reason},
    eth, vlan,
};

#[test]
fn capwap_from_ap_namespace_arrives_tagged_in_client_namespace() {
    let ap = Netns::new("ap").unwrap();
    let ac = Netns::new("ac").unwrap();
    let cl = Netns::new("cl").unwrap();
    veth(&ac, "fap0", &ap, "ap0").unwrap();
    veth(&ac, "fcl0", &cl, "cl0").unwrap();

    let t = tables();
    let client_if = ac.ifindex("fcl0").unwrap();
    // ferry in the AC namespace: upstream program on the AP side, native mode.
    let dp = ac
        .enter(|| {
            let mut dp = Datapath::load()?;
            dp.apply(&t)?;
            dp.set_client_egress(client_if)?;
            dp.attach(abi::PROG_UPSTREAM, "fap0", XdpMode::Driver)?;
            Ok::<_, ferry_dataplane::error::Error>(dp)
        })
        .unwrap();
    // veth only accepts redirected frames when its peer runs XDP.
    let _peer = cl
        .enter(|| {
            let mut p = Datapath::load()?;
            p.attach(abi::PROG_PASS, "cl0", XdpMode::Driver)?;
            Ok::<_, ferry_dataplane::error::Error>(p)
        })
        .unwrap();

    let n = 20u32;
    let mut expected = Vec::new();
    let mut frames = Vec::new();
    for i in 0..n {
        // 802.3 from AP1.
        let ip = client_ip(i);
        let inner = craft::ethernet(GW, STA, None, eth::ETHERTYPE_IPV4, &ip);
        frames.push(craft::capwap_packet(
            &transport(AP1.into()),
            craft::header_8023(1),
            &Options::default(),
            &inner,
        ));
        let mut want = inner[..12].to_vec();
        want.extend_from_slice(&vlan::tag(vlan::tci(0, 200)));
        want.extend_from_slice(&inner[12..]);
        expected.push(want);
        // 802.11 QoS from AP1, user priority 6.
        let ip = client_ip(1000 + i);
        let f =
            Dot11::uplink(BSSID, STA, GW, Some(6)).frame(&craft::snap(eth::ETHERTYPE_IPV4, &ip));
        frames.push(craft::capwap_packet(
            &transport(AP1.into()),
            craft::header_80211(1),
            &Options::default(),
            &f,
        ));
        let mut want = GW.to_vec();
        want.extend_from_slice(&STA);
        want.extend_from_slice(&vlan::tag(vlan::tci(6, 200)));
        want.extend_from_slice(&eth::ETHERTYPE_IPV4.to_be_bytes());
        want.extend_from_slice(&ip);
        expected.push(want);
        // Same traffic from an unknown AP must not come through.
        let stranger = Transport::new(IpAddr::from(STRANGER), IpAddr::from(AC4));
        frames.push(craft::capwap_packet(
            &stranger,
            craft::header_8023(1),
            &Options::default(),
            &craft::ethernet(GW, STA, None, eth::ETHERTYPE_IPV4, &client_ip(5000 + i)),
        ));
    }

    let received = std::thread::scope(|s| {
        let rx = s.spawn(|| {
            cl.enter(|| {
                let sock = PacketSocket::bind("cl0")?;
                let mut got = Vec::new();
                // Collect until 2 s of silence.
                while let Some(f) = sock.recv(Duration::from_secs(2))? {
                    got.push(f);
                }
                Ok::<_, ferry_dataplane::error::Error>(got)
            })
        });
        std::thread::sleep(Duration::from_millis(300));
        ap.enter(|| {
            let sock = PacketSocket::bind("ap0")?;
            for f in &frames {
                sock.send(f)?;
            }
            Ok::<_, ferry_dataplane::error::Error>(())
        })
        .unwrap();
        rx.join().unwrap().unwrap()
    });

    assert_eq!(
        received.len(),
        expected.len(),
        "frames in the client namespace: {received:02x?}"
    );
    for (got, want) in received.iter().zip(&expected) {
        assert_eq!(got, want);
    }
    let c = dp.counters().unwrap();
    assert_eq!(c.get(Reason::Forwarded), u64::from(2 * n));
    assert_eq!(c.get(Reason::DropUnknownTunnel), u64::from(n));
    let s = dp.tunnel_stats(1).unwrap();
    assert_eq!(s.up_packets, u64::from(2 * n));
}

/// A wireless client (simulated in the AP namespace) pings a host on the
/// client VLAN: the echo request goes up through decapsulation, the host's
/// reply comes down through encapsulation, both in XDP; the FIB supplies
/// the next hop (the AP) downstream.
#[test]
fn ping_from_wireless_client_is_answered_through_both_directions() {
    let ap = Netns::new("pap").unwrap();
    let ac = Netns::new("pac").unwrap();
    let cl = Netns::new("pcl").unwrap();
    veth(&ac, "fap0", &ap, "ap0").unwrap();
    veth(&ac, "fcl0", &cl, "cl0").unwrap();
    // AC: its data address on the AP side, and the AP's MAC as a neighbour.
    let ap_mac = ap.mac("ap0").unwrap();
    // bpf_fib_lookup refuses interfaces without IP forwarding, even for
    // output lookups.
    ac.exec(&["sysctl", "-q", "-w", "net.ipv4.conf.fap0.forwarding=1"])
        .unwrap();
    ac.exec(&["ip", "addr", "add", "198.18.0.1/16", "dev", "fap0"])
        .unwrap();
    ac.set_neighbour("fap0", "198.18.1.10", &ap_mac).unwrap();
    // Client VLAN host 198.19.1.1 on cl0, a port in VLAN 200. The test
    // kernel has no VLAN devices, so TC programs strip/add the tag (the
    // tag is written into the frame on transmit: TX VLAN offload off).
    cl.exec(&["ethtool", "-K", "cl0", "txvlan", "off"]).unwrap();
    cl.exec(&["ip", "addr", "add", "198.19.1.1/16", "dev", "cl0"])
        .unwrap();
    let wifi_sta = [0x02, 0x57, 0xa0, 0, 0, 0x10];
    cl.set_neighbour("cl0", "198.19.4.10", &wifi_sta).unwrap();
    let host_mac = cl.mac("cl0").unwrap();

    let mut t = tables();
    let ap_if = ac.ifindex("fap0").unwrap();
    let cl_if = ac.ifindex("fcl0").unwrap();
    t.settings.ap_ifindex = ap_if;
    // No configured neighbour: the next hop must come from the kernel FIB.
    for tn in &mut t.tunnels {
        tn.down.flags &= !ferry_ebpf::abi::DOWN_NEIGHBOUR;
    }
    let dp = ac
        .enter(|| {
            let mut dp = Datapath::load()?;
            dp.apply(&t)?;
            dp.set_client_egress(cl_if)?;
            dp.set_ap_egress(ap_if)?;
            dp.attach(abi::PROG_UPSTREAM, "fap0", XdpMode::Driver)?;
            dp.attach(abi::PROG_DOWNSTREAM, "fcl0", XdpMode::Driver)?;
            Ok::<_, ferry_dataplane::error::Error>(dp)
        })
        .unwrap();
    let _peers = (
        cl.enter(|| {
            let mut p = Datapath::load()?;
            p.attach(abi::PROG_PASS, "cl0", XdpMode::Driver)?;
            p.attach_lab_vlan("cl0", 200)?;
            Ok::<_, ferry_dataplane::error::Error>(p)
        })
        .unwrap(),
        ap.enter(|| {
            let mut p = Datapath::load()?;
            p.attach(abi::PROG_PASS, "ap0", XdpMode::Driver)?;
            Ok::<_, ferry_dataplane::error::Error>(p)
        })
        .unwrap(),
    );

    let pings = 5u16;
    let replies = ap
        .enter(|| {
            let sock = PacketSocket::bind("ap0")?;
            let mut tr = Transport::new(IpAddr::from(AP1), IpAddr::from(AC4));
            tr.src_mac = ap_mac;
            let mut got = Vec::new();
            for seq in 0..pings {
                let echo = craft::icmp_echo(
                    [198, 19, 4, 10],
                    [198, 19, 1, 1],
                    0x4242,
                    seq,
                    false,
                    b"ferry-live-ping",
                );
                let inner = craft::ethernet(host_mac, wifi_sta, None, eth::ETHERTYPE_IPV4, &echo);
                sock.send(&craft::capwap_packet(
                    &tr,
                    craft::header_8023(3),
                    &Options::default(),
                    &inner,
                ))?;
                // Wait for this echo's reply, skipping anything else.
                let deadline = std::time::Instant::now() + Duration::from_secs(3);
                while std::time::Instant::now() < deadline {
                    if let Some(f) = sock.recv(Duration::from_millis(200))?
                        && f.len() > 50
                        && f[12..14] == eth::ETHERTYPE_IPV4.to_be_bytes()
                        && u16::from_be_bytes([f[36], f[37]]) == 12222
                    {
                        got.push(f);
                        break;
                    }
                }
            }
            Ok::<_, ferry_dataplane::error::Error>(got)
        })
        .unwrap();

    let c = dp.counters().unwrap();
    assert_eq!(
        replies.len(),
        usize::from(pings),
        "echo replies received in the AP namespace (AC counters {:?})",
        c.nonzero().collect::<Vec<_>>()
    );
    for (seq, f) in replies.iter().enumerate() {
        // Outer: from the AC's data address to the AP, next hop from the FIB.
        assert_eq!(&f[..6], &ap_mac, "FIB neighbour as destination MAC");
        assert_eq!(&f[26..30], &AC4.octets());
        assert_eq!(&f[30..34], &AP1.octets());
        assert_eq!(u16::from_be_bytes([f[34], f[35]]), 5247);
        let h = ferry_ebpf::capwap::Header::parse(f[42..50].try_into().unwrap());
        assert_eq!(
            (h.rid, h.wbid, h.native),
            (3, 1, false),
            "radio learned from the request"
        );
        // Inner: the host's echo reply to the wireless client.
        let inner = &f[50..];
        assert_eq!(&inner[..6], &wifi_sta);
        assert_eq!(&inner[6..12], &host_mac);
        let ip = &inner[14..];
        assert_eq!(ip[9], 1, "ICMP");
        assert_eq!(&ip[12..16], &[198, 19, 1, 1]);
        assert_eq!(&ip[16..20], &[198, 19, 4, 10]);
        let icmp = &ip[20..];
        assert_eq!(icmp[0], 0, "echo reply");
        assert_eq!(u16::from_be_bytes([icmp[4], icmp[5]]), 0x4242);
        assert_eq!(usize::from(u16::from_be_bytes([icmp[6], icmp[7]])), seq);
        assert_eq!(&icmp[8..], b"ferry-live-ping");
    }
    let c = dp.counters().unwrap();
    assert_eq!(c.get(Reason::Forwarded), u64::from(pings));
    assert_eq!(c.get(Reason::DownForwarded), u64::from(pings));
    assert_eq!(c.event(ferry_ebpf::abi::Event::StationLearned), 1);
}

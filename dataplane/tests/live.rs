//! Live smoke test: AP namespace -> veth -> ferry's XDP program (native
//! mode) -> XDP_REDIRECT -> veth -> client namespace. Frames from a known AP
//! arrive tagged with VLAN 200 and carrying exactly the inner frame; frames
//! from an unknown AP do not arrive.

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
            dp.set_egress(client_if)?;
            dp.attach(abi::PROG_UPSTREAM, "fap0", XdpMode::Driver)?;
            Ok(dp)
        })
        .unwrap();
    // veth only accepts redirected frames when its peer runs XDP.
    let _peer = cl
        .enter(|| {
            let mut p = Datapath::load()?;
            p.attach(abi::PROG_PASS, "cl0", XdpMode::Driver)?;
            Ok(p)
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
                Ok(got)
            })
        });
        std::thread::sleep(Duration::from_millis(300));
        ap.enter(|| {
            let sock = PacketSocket::bind("ap0")?;
            for f in &frames {
                sock.send(f)?;
            }
            Ok(())
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

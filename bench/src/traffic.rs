//! Traffic generator: CAPWAP data traffic for the tunnels of a configuration,
//! mixed with what an AC's AP-facing port also sees (keepalives, control
//! traffic, ARP, strangers, malformed packets), written as pcap.

use std::{io::Write, net::IpAddr, time::Duration};

use anyhow::{Context as _, Result, bail};
use ferry::config::{Config, Format, TunnelState};
use ferry_dataplane::craft::{self, Dot11, Options, Transport};
use ferry_ebpf::{capwap, eth};
use pcap_file::{
    DataLink,
    pcap::{PcapHeader, PcapPacket, PcapWriter},
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What kinds of frame the generator emits, with weights.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    /// 802.3 (T=0) client frames.
    pub dot3: u32,
    /// Native 802.11 (T=1) QoS data frames.
    pub dot11: u32,
    /// Data channel keepalives.
    pub keepalive: u32,
    /// Control-plane and non-CAPWAP traffic (EAPOL, ARP, CAPWAP control).
    pub control: u32,
    /// Data from unknown sources.
    pub stranger: u32,
    /// Malformed CAPWAP headers.
    pub malformed: u32,
    /// Client-VLAN frames towards the stations (replies), some broadcast.
    pub downlink: u32,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            dot3: 40,
            dot11: 40,
            keepalive: 5,
            control: 5,
            stranger: 5,
            malformed: 5,
            downlink: 40,
        }
    }
}

/// Deterministic traffic for `cfg`'s tunnels.
pub struct Generator {
    rng: ChaCha8Rng,
    cfg: Config,
    mix: Mix,
    seq: u32,
}

impl Generator {
    /// A generator for `cfg`, seeded.
    pub fn new(mut cfg: Config, mix: Mix, seed: u64) -> Result<Self> {
        // Tunnels declared by Session ID have no address until an AP binds
        // them; the generator has nothing to send from for those.
        cfg.tunnels.retain(|t| t.address.is_some());
        if cfg.tunnels.is_empty() {
            bail!("the configuration has no [[tunnel]] with an address to generate traffic for");
        }
        Ok(Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            cfg,
            mix,
            seq: 0,
        })
    }

    fn ac_for(&self, ap: IpAddr) -> IpAddr {
        self.cfg
            .addresses
            .iter()
            .find(|a| a.is_ipv4() == ap.is_ipv4())
            .copied()
            .unwrap_or(self.cfg.addresses[0])
    }

    fn transport(&mut self, idx: usize) -> Transport {
        let t = &self.cfg.tunnels[idx];
        // Only tunnels with an address are kept (see `new`).
        let ap = t.address.unwrap_or(IpAddr::from([198, 18, 255, 254]));
        let mut tr = Transport::new(ap, self.ac_for(ap));
        tr.dport = self.cfg.data_port;
        tr.sport = t.port.unwrap_or(12222);
        tr
    }

    fn client(&self, idx: usize) -> [u8; 6] {
        let i = idx as u32;
        let b = i.to_be_bytes();
        [0x02, 0xc1, b[0], b[1], b[2], b[3]]
    }

    /// The next frame.
    pub fn next_frame(&mut self) -> Vec<u8> {
        self.seq = self.seq.wrapping_add(1);
        let m = self.mix;
        let total =
            m.dot3 + m.dot11 + m.keepalive + m.control + m.stranger + m.malformed + m.downlink;
        let mut pick = self.rng.random_range(0..total.max(1));
        // Prefer master tunnels for data so most of the sample forwards.
        let idx = self.rng.random_range(0..self.cfg.tunnels.len());
        let idx =
            if self.cfg.tunnels[idx].state == TunnelState::Standby && self.rng.random_bool(0.7) {
                self.cfg
                    .tunnels
                    .iter()
                    .position(|t| t.state == TunnelState::Active)
                    .unwrap_or(idx)
            } else {
                idx
            };
        let tr = self.transport(idx);
        let sta = self.client(idx);
        let gw = [0x02, 0x00, 0x0a, 0x04, 0x01, 0x01];
        let ip = craft::client_ipv4_udp(
            [198, 19, 4, (idx % 250) as u8 + 2],
            [198, 19, 1, 1],
            self.seq,
            18 + self.rng.random_range(0..200),
        );
        // Tunnels that take native frames get 802.11 from their AP, as a real one would send.
        if pick < m.dot3 && self.cfg.tunnels[idx].format == Format::Dot3 {
            let inner = craft::ethernet(gw, sta, None, eth::ETHERTYPE_IPV4, &ip);
            return craft::capwap_packet(
                &tr,
                craft::header_8023(self.rng.random_range(0..2)),
                &Options::default(),
                &inner,
            );
        }
        if pick < m.dot3 + m.dot11 {
            let tid = self.rng.random_range(0..8);
            let f = Dot11::uplink([0x02, 0xbb, 0, 0, 0, (idx % 250) as u8], sta, gw, Some(tid))
                .frame(&craft::snap(eth::ETHERTYPE_IPV4, &ip));
            let opts = Options {
                radio_mac: None,
                wireless_info: Some(vec![0xc4, 0x1e, 0x00, 0x6c]),
            };
            return craft::capwap_packet(
                &tr,
                craft::header_80211(self.rng.random_range(0..2)),
                &opts,
                &f,
            );
        }
        pick -= m.dot3 + m.dot11;
        if pick < m.keepalive {
            let mut sid = [0u8; capwap::SESSION_ID_LEN];
            sid[..4].copy_from_slice(&(idx as u32).to_be_bytes());
            return craft::udp_frame(&tr, &craft::keepalive(&sid));
        }
        pick -= m.keepalive;
        if pick < m.control {
            return match self.rng.random_range(0..3) {
                0 => craft::capwap_packet(
                    &tr,
                    craft::header_8023(0),
                    &Options::default(),
                    &craft::ethernet(gw, sta, None, eth::ETHERTYPE_EAPOL, &[1, 3, 0, 95, 2]),
                ),
                1 => craft::ethernet([0xff; 6], tr.src_mac, None, eth::ETHERTYPE_ARP, &[0u8; 28]),
                _ => {
                    let mut c = tr.clone();
                    c.dport = capwap::CONTROL_PORT;
                    craft::udp_frame(&c, &[0u8; 24])
                }
            };
        }
        pick -= m.control;
        if pick < m.downlink {
            // A reply from the gateway to the station, in its tunnel's VLAN.
            let vid = self.cfg.tunnels[idx].vlan;
            let da = if self.rng.random_bool(0.1) {
                [0xff; 6]
            } else {
                sta
            };
            let reply = craft::client_ipv4_udp(
                [198, 19, 1, 1],
                [198, 19, 4, (idx % 250) as u8 + 2],
                self.seq,
                18 + self.rng.random_range(0..200),
            );
            let tci = ferry_ebpf::vlan::tci(self.rng.random_range(0..8), vid);
            return craft::ethernet(
                da,
                gw,
                Some((ferry_ebpf::vlan::TPID_8021Q, tci)),
                eth::ETHERTYPE_IPV4,
                &reply,
            );
        }
        pick -= m.downlink;
        if pick < m.stranger {
            let mut s = tr.clone();
            s.src = match s.src {
                IpAddr::V4(_) => "198.18.250.250".parse().unwrap_or(s.src),
                IpAddr::V6(_) => "2001:2::fa:fa".parse().unwrap_or(s.src),
            };
            let inner = craft::ethernet(gw, sta, None, eth::ETHERTYPE_IPV4, &ip);
            return craft::capwap_packet(&s, craft::header_8023(0), &Options::default(), &inner);
        }
        // Malformed CAPWAP header: version, HLEN or a truncated option.
        let inner = craft::ethernet(gw, sta, None, eth::ETHERTYPE_IPV4, &ip);
        let mut h = craft::header_8023(0);
        match self.rng.random_range(0..3) {
            0 => h.version = 1,
            1 => h.kind = 7,
            _ => h.hlen = 1,
        }
        let mut msg = h.encode().to_vec();
        msg.extend_from_slice(&inner);
        craft::udp_frame(&tr, &msg)
    }
}

/// Writes `count` frames from `g` to `out` as pcap, 10 µs apart.
pub fn write_pcap<W: Write>(g: &mut Generator, count: u64, out: W) -> Result<()> {
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ..Default::default()
    };
    let mut w = PcapWriter::with_header(out, header).context("writing pcap header")?;
    for i in 0..count {
        let f = g.next_frame();
        let ts = Duration::from_secs(1_700_000_000) + Duration::from_micros(10 * i);
        w.write_packet(&PcapPacket::new(ts, f.len() as u32, &f))
            .context("writing frame")?;
    }
    w.into_writer().flush().context("flushing pcap")?;
    Ok(())
}

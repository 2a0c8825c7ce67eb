//! The live benchmark's frames: what the generator sends for each size
//! class and AP ([`GenTemplate`]s), and what the sink must receive from each
//! contender ([`SinkExpect`]s). ferry's expectations come from its
//! reference model, run on the very frames the generator sends, so the sink
//! checks ferry against the same definition the differential tests use.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Result, bail};
use ferry_dataplane::{
    craft::{self, Dot11, Options, Transport},
    model::Model,
};
use ferry_ebpf::{
    abi::{Reason, StationInfo, StationKey},
    eth, ipv4,
    loadgen::{CMP, GenTemplate, HDR, NO_MAC, SinkExpect, TRAILER, station_mac},
    udp, vlan,
};

use super::lab::{AC_ADDR, AC_AP_MAC, GATEWAY_MAC, ROUTER_MAC};

/// The client VLAN of every tunnel.
pub const VLAN: u16 = 200;
/// Every AP's CAPWAP data port.
pub const AP_PORT: u16 = 12222;
/// Radio id in every generated header.
pub const RID: u8 = 1;
/// Smallest client frame: Ethernet, IPv4, UDP and the trailer.
pub const MIN_FRAME: u16 = (eth::HLEN + ipv4::MIN_HLEN + udp::HLEN + TRAILER) as u16;
/// IMIX (the simple 7:4:1 mix) of client frame sizes.
pub const IMIX: [(u16, u32); 3] = [(64, 7), (576, 4), (1500, 1)];

/// Which way frames go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// AP to client: CAPWAP in, tagged client frames out.
    Up,
    /// Client to AP: tagged client frames in, CAPWAP out.
    Down,
}

/// What the upstream client frames are carried as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Payload {
    /// 802.3 frames (CAPWAP T=0).
    #[value(name = "802.3")]
    Dot3,
    /// Native 802.11 QoS data frames (T=1).
    #[value(name = "802.11")]
    Dot11,
}

/// The AP address of AP index `i` (as `daemon::tunnel_table` writes them).
pub fn ap_addr(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, (i / 200) as u8, (i % 200 + 1) as u8)
}

/// The client frame of `len` bytes (untagged, no FCS) from `src` to `dst`.
fn client_frame(len: u16, dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let ip = craft::client_ipv4_udp(
        [198, 18, 200, 2],
        [198, 18, 201, 1],
        0,
        usize::from(len) - eth::HLEN - ipv4::MIN_HLEN - udp::HLEN,
    );
    craft::ethernet(dst, src, None, eth::ETHERTYPE_IPV4, &ip)
}

/// The frame the generator sends for client frames of `len` bytes from or
/// to station `flow` of AP `ap`.
pub fn input(dir: Direction, payload: Payload, len: u16, ap: u32, flow: u32) -> Vec<u8> {
    let sta = station_mac(flow);
    match dir {
        Direction::Up => {
            let t = Transport {
                dst_mac: AC_AP_MAC,
                src_mac: ROUTER_MAC,
                sport: AP_PORT,
                ..Transport::new(IpAddr::V4(ap_addr(ap)), IpAddr::V4(AC_ADDR.into()))
            };
            match payload {
                Payload::Dot3 => craft::capwap_packet(
                    &t,
                    craft::header_8023(RID),
                    &Options::default(),
                    &client_frame(len, GATEWAY_MAC, sta),
                ),
                Payload::Dot11 => {
                    let f = client_frame(len, GATEWAY_MAC, sta);
                    let body = craft::snap(eth::ETHERTYPE_IPV4, &f[eth::HLEN..]);
                    let bssid = [0x02, 0xbb, 0, 0, 0, 1];
                    let d = Dot11::uplink(bssid, sta, GATEWAY_MAC, Some(0)).frame(&body);
                    craft::capwap_packet(&t, craft::header_80211(RID), &Options::default(), &d)
                }
            }
        }
        Direction::Down => {
            let f = client_frame(len, sta, GATEWAY_MAC);
            craft::ethernet(
                sta,
                GATEWAY_MAC,
                Some((vlan::TPID_8021Q, vlan::tci(0, VLAN))),
                eth::ETHERTYPE_IPV4,
                &f[eth::HLEN..],
            )
        }
    }
}

/// Where `mac` first appears in `frame` within the first `limit` bytes.
fn find_mac(frame: &[u8], mac: &[u8; 6], limit: usize) -> Option<u16> {
    frame
        .windows(6)
        .take(limit.saturating_sub(5))
        .position(|w| w == mac)
        .map(|p| p as u16)
}

/// The generator's template for `frame` (of station `flow`).
pub fn template(frame: &[u8], flow: u32) -> Result<GenTemplate> {
    let copy = (frame.len() - TRAILER).min(HDR) & !7;
    let mut t = GenTemplate {
        copy: copy as u16,
        mac_off: find_mac(frame, &station_mac(flow), HDR - 6).unwrap_or(NO_MAC),
        pad: 0,
        hdr: [0; HDR],
    };
    if t.mac_off == NO_MAC {
        bail!("station MAC not in the first {HDR} bytes of a generated frame");
    }
    t.hdr[..copy].copy_from_slice(&frame[..copy]);
    Ok(t)
}

/// Bytes the sink ignores in an expectation, besides the station MAC and
/// the trailer: for frames whose outer IPv4/UDP headers the kernel writes
/// (the user-space forwarder's downstream), the IP id and both checksums.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mask {
    /// Every byte as expected.
    Exact,
    /// Outer IPv4 id and checksum, UDP checksum ignored.
    KernelIp,
}

/// The sink's expectation: `out` (the frame of station `flow`) compared
/// over its first [`CMP`] bytes, except the station MAC (checked against the
/// trailer's flow instead), the trailer itself and what `mask` frees.
pub fn expect(out: &[u8], flow: u32, mask: Mask) -> Result<SinkExpect> {
    if out.len() < CMP {
        bail!("expected frame of {} bytes is too short", out.len());
    }
    let mut e = SinkExpect {
        mac_off: find_mac(out, &station_mac(flow), CMP).unwrap_or(NO_MAC),
        pad: [0; 3],
        bytes: [0; CMP],
        mask: [0xff; CMP],
    };
    e.bytes.copy_from_slice(&out[..CMP]);
    let mut clear = |from: usize, n: usize| {
        for i in from..(from + n).min(CMP) {
            e.mask[i] = 0;
        }
    };
    if e.mac_off != NO_MAC {
        clear(usize::from(e.mac_off), 6);
    }
    clear(out.len() - TRAILER, TRAILER);
    if mask == Mask::KernelIp {
        let ip = eth::HLEN;
        clear(ip + 4, 2);
        clear(ip + 10, 2);
        clear(ip + ipv4::MIN_HLEN + 6, 2);
    }
    Ok(e)
}

/// What ferry makes of `frame`, by the reference model: station `flow` is
/// on AP `ap`, whose tunnel has id `tunnel` in `model`'s tables.
pub fn ferry_output(
    model: &mut Model,
    dir: Direction,
    frame: &[u8],
    flow: u32,
    tunnel: u32,
) -> Result<Vec<u8>> {
    let o = match dir {
        Direction::Up => model.upstream(frame),
        Direction::Down => {
            model.put_station(
                StationKey {
                    mac: station_mac(flow),
                    vlan: VLAN,
                },
                // As learned from the generator's upstream frames (and as
                // the benchmark fills ferry's station table).
                StationInfo {
                    tunnel,
                    rid: RID,
                    ..Default::default()
                },
            );
            model.downstream(frame)
        }
    };
    let want = match dir {
        Direction::Up => Reason::Forwarded,
        Direction::Down => Reason::DownForwarded,
    };
    if o.reason != want {
        bail!(
            "the reference model does not forward the benchmark's {dir:?} frame: {}",
            o.reason.name()
        );
    }
    Ok(o.output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_find_the_station_and_stop_before_the_trailer() {
        for dir in [Direction::Up, Direction::Down] {
            for p in [Payload::Dot3, Payload::Dot11] {
                let f = input(dir, p, 64, 3, 77);
                let t = template(&f, 77).unwrap();
                assert!(usize::from(t.copy) + TRAILER <= f.len());
                let m = usize::from(t.mac_off);
                assert_eq!(&f[m..m + 6], &station_mac(77));
            }
        }
        assert_eq!(input(Direction::Down, Payload::Dot3, 64, 0, 0).len(), 68);
    }

    #[test]
    fn expectations_free_the_trailer_and_the_station() {
        let f = input(Direction::Down, Payload::Dot3, 64, 0, 5);
        let e = expect(&f, 5, Mask::Exact).unwrap();
        assert_eq!(e.mask[0], 0, "station MAC is the destination");
        assert_eq!(e.mask[12], 0xff);
        assert_eq!(e.mask[f.len() - TRAILER], 0);
        assert_eq!(e.mask[f.len() - TRAILER - 1], 0xff);
    }
}

//! The downstream encapsulation: every header ferry puts in front of a
//! client frame, built as fixed-size arrays by the same functions in the XDP
//! program, the reference model and the tests.
//!
//! ```text
//! T=0: Ethernet | IPv4 or IPv6 | UDP | CAPWAP [+ Radio MAC] | DA SA | EtherType payload
//! T=1: Ethernet | IPv4 or IPv6 | UDP | CAPWAP [+ Radio MAC] | 802.11 (FromDS) | AA AA 03 00 00 00 | EtherType payload
//! ```
//!
//! The client frame's EtherType and payload never move: the program grows
//! the head and writes everything in front of them.

use crate::{abi::Addr, capwap, dot11, eth, ipv4, ipv6, udp, vlan};

/// Length of the Radio MAC optional field: length byte, 6 bytes, 1 pad.
pub const RADIO_MAC_OPTION_LEN: usize = 8;
/// LLC/SNAP (RFC 1042) without the EtherType, which stays in place.
pub const SNAP_PREFIX: [u8; 6] = dot11::SNAP_RFC1042;
/// IPv4 TTL / IPv6 hop limit of encapsulated packets.
pub const TTL: u8 = 64;

/// Which headers a tunnel's packets carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// IPv6 outer header.
    pub ipv6: bool,
    /// CAPWAP Radio MAC field present.
    pub radio_mac: bool,
    /// Native 802.11 payload (T=1).
    pub native: bool,
}

impl Shape {
    /// A shape.
    #[inline(always)]
    pub const fn new(ipv6: bool, radio_mac: bool, native: bool) -> Self {
        Self {
            ipv6,
            radio_mac,
            native,
        }
    }

    /// Length of the outer IP header.
    #[inline(always)]
    pub const fn ip_hlen(&self) -> usize {
        if self.ipv6 {
            ipv6::HLEN
        } else {
            ipv4::MIN_HLEN
        }
    }

    /// Length of the CAPWAP header (HLEN * 4).
    #[inline(always)]
    pub const fn capwap_len(&self) -> usize {
        capwap::FIXED_LEN
            + if self.radio_mac {
                RADIO_MAC_OPTION_LEN
            } else {
                0
            }
    }

    /// Bytes written in front of the kept EtherType.
    #[inline(always)]
    pub const fn prefix_len(&self) -> usize {
        eth::HLEN
            + self.ip_hlen()
            + udp::HLEN
            + self.capwap_len()
            + if self.native {
                dot11::BASE_HLEN + SNAP_PREFIX.len()
            } else {
                2 * eth::ADDR_LEN
            }
    }

    /// CAPWAP payload length for a tagged client frame of `frame_len` bytes.
    #[inline(always)]
    pub const fn payload_len(&self, frame_len: usize) -> usize {
        // The kept part: EtherType and payload, from offset 16 of the tagged frame.
        let kept = frame_len - (vlan::TAGGED_HLEN - 2);
        if self.native {
            dot11::BASE_HLEN + SNAP_PREFIX.len() + kept
        } else {
            2 * eth::ADDR_LEN + kept
        }
    }

    /// Outer IP packet length for a CAPWAP payload of `payload` bytes.
    #[inline(always)]
    pub const fn ip_len(&self, payload: usize) -> usize {
        self.ip_hlen() + udp::HLEN + self.capwap_len() + payload
    }
}

/// Everything the headers are built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Headers {
    /// Next-hop MAC.
    pub dmac: [u8; 6],
    /// Our MAC on the AP side.
    pub smac: [u8; 6],
    /// AP address (IPv4 mapped for IPv4).
    pub ap: Addr,
    /// Our address (IPv4 mapped for IPv4).
    pub local: Addr,
    /// Our data port.
    pub sport: u16,
    /// The AP's port.
    pub dport: u16,
    /// DSCP for the outer header.
    pub dscp: u8,
    /// IPv4 Don't Fragment.
    pub df: bool,
    /// IPv6: UDP-Lite instead of UDP.
    pub udplite: bool,
    /// Radio id.
    pub rid: u8,
    /// Radio MAC field content.
    pub radio_mac: [u8; 6],
    /// Client frame destination.
    pub da: [u8; 6],
    /// Client frame source.
    pub sa: [u8; 6],
    /// BSSID (native 802.11 only).
    pub bssid: [u8; 6],
}

/// Outer Ethernet header.
#[inline(always)]
pub fn ethernet(h: &Headers, v6: bool) -> [u8; eth::HLEN] {
    let et = if v6 {
        eth::ETHERTYPE_IPV6
    } else {
        eth::ETHERTYPE_IPV4
    }
    .to_be_bytes();
    let mut b = [0u8; eth::HLEN];
    b[..6].copy_from_slice(&h.dmac);
    b[6..12].copy_from_slice(&h.smac);
    b[12] = et[0];
    b[13] = et[1];
    b
}

/// Folds a one's-complement sum and complements it (the checksum value).
#[inline(always)]
pub const fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Sum of the big-endian 16-bit words of `b` (even length).
#[inline(always)]
pub fn sum16<const N: usize>(b: &[u8; N]) -> u32 {
    let mut s = 0u32;
    let mut i = 0;
    while i + 1 < N {
        s += u32::from(u16::from_be_bytes([b[i], b[i + 1]]));
        i += 2;
    }
    s
}

/// IPv4 header (checksum filled) for a UDP payload of `udp_payload` bytes.
#[inline(always)]
pub fn ipv4(h: &Headers, udp_payload: usize) -> [u8; ipv4::MIN_HLEN] {
    let total = ((ipv4::MIN_HLEN + udp::HLEN + udp_payload) as u16).to_be_bytes();
    let mut b = [0u8; ipv4::MIN_HLEN];
    b[0] = 0x45;
    b[1] = h.dscp << 2;
    b[ipv4::TOTAL_LEN] = total[0];
    b[ipv4::TOTAL_LEN + 1] = total[1];
    // Identification stays 0: with DF (the default) it is unused (RFC 6864).
    b[ipv4::FRAG] = if h.df { 0x40 } else { 0 };
    b[ipv4::TTL] = TTL;
    b[ipv4::PROTO] = ipv4::PROTO_UDP;
    b[ipv4::SRC..ipv4::SRC + 4].copy_from_slice(&h.local[12..]);
    b[ipv4::DST..ipv4::DST + 4].copy_from_slice(&h.ap[12..]);
    let c = fold(sum16(&b)).to_be_bytes();
    b[ipv4::CHECKSUM] = c[0];
    b[ipv4::CHECKSUM + 1] = c[1];
    b
}

/// IPv6 header for a UDP payload of `udp_payload` bytes.
#[inline(always)]
pub fn ipv6(h: &Headers, udp_payload: usize) -> [u8; ipv6::HLEN] {
    let plen = ((udp::HLEN + udp_payload) as u16).to_be_bytes();
    let tc = h.dscp << 2;
    let mut b = [0u8; ipv6::HLEN];
    b[0] = 0x60 | (tc >> 4);
    b[1] = tc << 4;
    b[ipv6::PAYLOAD_LEN] = plen[0];
    b[ipv6::PAYLOAD_LEN + 1] = plen[1];
    b[ipv6::NEXT_HEADER] = if h.udplite {
        ipv6::NEXT_UDPLITE
    } else {
        ipv6::NEXT_UDP
    };
    b[ipv6::HOP_LIMIT] = TTL;
    b[ipv6::SRC..ipv6::SRC + 16].copy_from_slice(&h.local);
    b[ipv6::DST..ipv6::DST + 16].copy_from_slice(&h.ap);
    b
}

/// One's-complement sum of the IPv6 pseudo-header (RFC 8200 §8.1).
#[inline(always)]
pub fn pseudo_sum_v6(src: &Addr, dst: &Addr, len: u32, next: u8) -> u32 {
    sum16(src) + sum16(dst) + (len >> 16) + (len & 0xffff) + u32::from(next)
}

/// UDP (or UDP-Lite) header for a payload of `udp_payload` bytes.
///
/// IPv4: checksum 0 (RFC 5415 §3.3). IPv6 UDP-Lite: coverage 8, checksum
/// over pseudo-header and this header. IPv6 UDP: checksum left 0 here; the
/// caller sums the whole datagram once it is written.
#[inline(always)]
pub fn udp(h: &Headers, v6: bool, udp_payload: usize) -> [u8; udp::HLEN] {
    let len = (udp::HLEN + udp_payload) as u16;
    let lite = v6 && h.udplite;
    let field = if lite { udp::HLEN as u16 } else { len }.to_be_bytes();
    let sp = h.sport.to_be_bytes();
    let dp = h.dport.to_be_bytes();
    let mut b = [sp[0], sp[1], dp[0], dp[1], field[0], field[1], 0, 0];
    if lite {
        let sum = pseudo_sum_v6(&h.local, &h.ap, u32::from(len), ipv6::NEXT_UDPLITE) + sum16(&b);
        let c = fold(sum);
        let c = if c == 0 { 0xffff } else { c }.to_be_bytes();
        b[udp::CHECKSUM] = c[0];
        b[udp::CHECKSUM + 1] = c[1];
    }
    b
}

/// CAPWAP header: HLEN 2 (4 with Radio MAC), RID, WBID 1, T per shape.
#[inline(always)]
pub fn capwap(h: &Headers, shape: &Shape) -> [u8; capwap::FIXED_LEN] {
    capwap::Header {
        hlen: (shape.capwap_len() / 4) as u8,
        rid: h.rid,
        wbid: capwap::WBID_IEEE80211,
        native: shape.native,
        radio_mac: shape.radio_mac,
        ..capwap::Header::parse(&[0; capwap::FIXED_LEN])
    }
    .encode()
}

/// The Radio MAC optional field: length 6, the MAC, one pad byte.
#[inline(always)]
pub fn radio_mac_option(h: &Headers) -> [u8; RADIO_MAC_OPTION_LEN] {
    let m = h.radio_mac;
    [6, m[0], m[1], m[2], m[3], m[4], m[5], 0]
}

/// 802.11 data frame header, FromDS: A1 = DA, A2 = BSSID, A3 = SA.
#[inline(always)]
pub fn dot11_header(h: &Headers) -> [u8; dot11::BASE_HLEN] {
    let fc = dot11::FrameControl {
        ftype: dot11::TYPE_DATA,
        from_ds: true,
        ..dot11::FrameControl::parse(&[0, 0])
    }
    .encode();
    let mut b = [0u8; dot11::BASE_HLEN];
    b[0] = fc[0];
    b[1] = fc[1];
    b[dot11::ADDR1..dot11::ADDR1 + 6].copy_from_slice(&h.da);
    b[dot11::ADDR2..dot11::ADDR2 + 6].copy_from_slice(&h.bssid);
    b[dot11::ADDR3..dot11::ADDR3 + 6].copy_from_slice(&h.sa);
    b
}

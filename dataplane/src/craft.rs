//! Packet construction from the shared wire layouts: used by the traffic
//! generator, the sample pcap, the tests and the benchmark. Everything here
//! builds well-formed packets; tests break them on purpose afterwards.

use std::net::IpAddr;

use ferry_ebpf::{capwap, dot11, eth, ipv4, ipv6, udp, vlan};

/// A MAC address.
pub type Mac = [u8; 6];

/// Outer (transport) headers of a CAPWAP data packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transport {
    /// Ethernet destination (the AC's MAC).
    pub dst_mac: Mac,
    /// Ethernet source (the AP's or its router's MAC).
    pub src_mac: Mac,
    /// Optional outer 802.1Q tag (transport VLAN): (tpid, tci).
    pub tag: Option<(u16, u16)>,
    /// AP address.
    pub src: IpAddr,
    /// AC address.
    pub dst: IpAddr,
    /// AP port.
    pub sport: u16,
    /// AC data port.
    pub dport: u16,
    /// IPv6 only: UDP-Lite instead of UDP.
    pub udplite: bool,
}

impl Transport {
    /// IPv4 defaults between `src` and `dst`, AP port 12222, AC port 5247.
    pub fn new(src: IpAddr, dst: IpAddr) -> Self {
        Self {
            dst_mac: [0x02, 0xac, 0, 0, 0, 1],
            src_mac: [0x02, 0xa9, 0, 0, 0, 1],
            tag: None,
            src,
            dst,
            sport: 12222,
            dport: capwap::DATA_PORT,
            udplite: false,
        }
    }
}

/// Internet checksum (RFC 1071) of `data`.
pub fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Ethernet header (optionally tagged) followed by `payload`.
pub fn ethernet(
    dst: Mac,
    src: Mac,
    tag: Option<(u16, u16)>,
    ethertype: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(vlan::TAGGED_HLEN + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    if let Some((tpid, tci)) = tag {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A UDP datagram (header + payload) in an IP packet in an Ethernet frame.
pub fn udp_frame(t: &Transport, payload: &[u8]) -> Vec<u8> {
    let ulen = (udp::HLEN + payload.len()) as u16;
    let mut u = Vec::with_capacity(udp::HLEN + payload.len());
    u.extend_from_slice(&t.sport.to_be_bytes());
    u.extend_from_slice(&t.dport.to_be_bytes());
    match (t.src, t.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            u.extend_from_slice(&ulen.to_be_bytes());
            // CAPWAP over IPv4 sends a zero UDP checksum (RFC 5415 §3.3).
            u.extend_from_slice(&[0, 0]);
            u.extend_from_slice(payload);
            let mut ip = vec![0u8; ipv4::MIN_HLEN];
            ip[0] = 0x45;
            ip[ipv4::TOTAL_LEN..ipv4::TOTAL_LEN + 2]
                .copy_from_slice(&((ipv4::MIN_HLEN + u.len()) as u16).to_be_bytes());
            ip[ipv4::FRAG] = 0x40; // DF
            ip[ipv4::TTL] = 64;
            ip[ipv4::PROTO] = ipv4::PROTO_UDP;
            ip[ipv4::SRC..ipv4::SRC + 4].copy_from_slice(&s.octets());
            ip[ipv4::DST..ipv4::DST + 4].copy_from_slice(&d.octets());
            let c = inet_checksum(&ip);
            ip[ipv4::CHECKSUM..ipv4::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
            ip.extend_from_slice(&u);
            ethernet(t.dst_mac, t.src_mac, t.tag, eth::ETHERTYPE_IPV4, &ip)
        }
        (s, d) => {
            let s = to_v6(s);
            let d = to_v6(d);
            // UDP-Lite: length field is checksum coverage (8 = header only).
            let lenfield = if t.udplite { udp::HLEN as u16 } else { ulen };
            u.extend_from_slice(&lenfield.to_be_bytes());
            u.extend_from_slice(&[0, 0]);
            u.extend_from_slice(payload);
            let next = if t.udplite {
                ipv6::NEXT_UDPLITE
            } else {
                ipv6::NEXT_UDP
            };
            // Pseudo-header checksum over the covered part.
            let covered = if t.udplite { udp::HLEN } else { u.len() };
            let mut ph = Vec::with_capacity(40 + covered);
            ph.extend_from_slice(&s);
            ph.extend_from_slice(&d);
            ph.extend_from_slice(&(u.len() as u32).to_be_bytes());
            ph.extend_from_slice(&[0, 0, 0, next]);
            ph.extend_from_slice(&u[..covered]);
            let mut c = inet_checksum(&ph);
            if c == 0 {
                c = 0xffff;
            }
            u[udp::CHECKSUM..udp::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
            let mut ip = vec![0u8; ipv6::HLEN];
            ip[0] = 0x60;
            ip[ipv6::PAYLOAD_LEN..ipv6::PAYLOAD_LEN + 2]
                .copy_from_slice(&(u.len() as u16).to_be_bytes());
            ip[ipv6::NEXT_HEADER] = next;
            ip[ipv6::HOP_LIMIT] = 64;
            ip[ipv6::SRC..ipv6::SRC + 16].copy_from_slice(&s);
            ip[ipv6::DST..ipv6::DST + 16].copy_from_slice(&d);
            ip.extend_from_slice(&u);
            ethernet(t.dst_mac, t.src_mac, t.tag, eth::ETHERTYPE_IPV6, &ip)
        }
    }
}

fn to_v6(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// CAPWAP optional fields, encoded and padded as they sit after byte 8.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Radio MAC address (M).
    pub radio_mac: Option<Vec<u8>>,
    /// Wireless Specific Information (W).
    pub wireless_info: Option<Vec<u8>>,
}

impl Options {
    /// The encoded optional fields (each: length byte, value, zero padding).
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Vec::new();
        for v in [&self.radio_mac, &self.wireless_info].into_iter().flatten() {
            let start = o.len();
            o.push(v.len() as u8);
            o.extend_from_slice(v);
            o.resize(start + capwap::padded_option_len(v.len() as u8), 0);
        }
        o
    }
}

/// A CAPWAP data message: header (HLEN, M and W set from `opts`) + payload.
pub fn capwap(mut h: capwap::Header, opts: &Options, payload: &[u8]) -> Vec<u8> {
    let o = opts.encode();
    h.radio_mac = opts.radio_mac.is_some();
    h.wireless_info = opts.wireless_info.is_some();
    h.hlen = ((capwap::FIXED_LEN + o.len()) / 4) as u8;
    let mut m = h.encode().to_vec();
    m.extend_from_slice(&o);
    m.extend_from_slice(payload);
    m
}

/// A CAPWAP header carrying an 802.3 frame (T=0) from radio `rid`.
pub fn header_8023(rid: u8) -> capwap::Header {
    capwap::Header {
        rid,
        wbid: capwap::WBID_IEEE80211,
        hlen: capwap::MIN_HLEN,
        ..Default::default()
    }
}

/// A CAPWAP header carrying a native 802.11 frame (T=1) from radio `rid`.
pub fn header_80211(rid: u8) -> capwap::Header {
    capwap::Header {
        native: true,
        ..header_8023(rid)
    }
}

/// A data channel keepalive carrying `session_id` (RFC 5415 §4.4.1).
pub fn keepalive(session_id: &[u8; capwap::SESSION_ID_LEN]) -> Vec<u8> {
    let h = capwap::Header {
        hlen: capwap::MIN_HLEN,
        keepalive: true,
        ..Default::default()
    };
    let mut m = h.encode().to_vec();
    let elem_len = (4 + capwap::SESSION_ID_LEN) as u16;
    m.extend_from_slice(&elem_len.to_be_bytes());
    m.extend_from_slice(&capwap::ELEMENT_SESSION_ID.to_be_bytes());
    m.extend_from_slice(&(capwap::SESSION_ID_LEN as u16).to_be_bytes());
    m.extend_from_slice(session_id);
    m
}

/// A full CAPWAP data packet: transport + CAPWAP + payload.
pub fn capwap_packet(t: &Transport, h: capwap::Header, opts: &Options, payload: &[u8]) -> Vec<u8> {
    udp_frame(t, &capwap(h, opts, payload))
}

/// An 802.11 data frame header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dot11 {
    /// Frame control.
    pub fc: dot11::FrameControl,
    /// Addresses 1-3 (and 4 when ToDS and FromDS).
    pub addr: [Mac; 4],
    /// QoS control (used when the subtype is QoS).
    pub qos: u16,
    /// HT control (used when QoS and Order).
    pub ht: u32,
}

impl Dot11 {
    /// A QoS (or plain) data frame from station `sa` to `da` through `bssid`, ToDS.
    pub fn uplink(bssid: Mac, sa: Mac, da: Mac, qos: Option<u8>) -> Self {
        Self {
            fc: dot11::FrameControl {
                ftype: dot11::TYPE_DATA,
                subtype: if qos.is_some() { dot11::SUBTYPE_QOS } else { 0 },
                to_ds: true,
                ..Default::default()
            },
            addr: [bssid, sa, da, [0; 6]],
            qos: u16::from(qos.unwrap_or(0)),
            ht: 0,
        }
    }

    /// The encoded header.
    pub fn encode(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(36);
        h.extend_from_slice(&self.fc.encode());
        h.extend_from_slice(&[0, 0]); // duration
        for a in &self.addr[..3] {
            h.extend_from_slice(a);
        }
        h.extend_from_slice(&[0x10, 0x00]); // sequence control
        if self.fc.has_addr4() {
            h.extend_from_slice(&self.addr[3]);
        }
        if self.fc.is_qos() {
            h.extend_from_slice(&self.qos.to_le_bytes());
        }
        if self.fc.has_ht() {
            h.extend_from_slice(&self.ht.to_le_bytes());
        }
        h
    }

    /// Header followed by `body`.
    pub fn frame(&self, body: &[u8]) -> Vec<u8> {
        let mut f = self.encode();
        f.extend_from_slice(body);
        f
    }
}

/// An RFC 1042 LLC/SNAP header with `ethertype`, followed by `payload`.
pub fn snap(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = dot11::SNAP_RFC1042.to_vec();
    b.extend_from_slice(&ethertype.to_be_bytes());
    b.extend_from_slice(payload);
    b
}

/// A small IPv4/UDP packet (no Ethernet) from `src` to `dst`, as a client would
/// send inside the tunnel; `seq` is written into the payload.
pub fn client_ipv4_udp(src: [u8; 4], dst: [u8; 4], seq: u32, payload_len: usize) -> Vec<u8> {
    let mut payload = seq.to_be_bytes().to_vec();
    payload.resize(payload_len.max(4), 0x5a);
    let t = Transport {
        src: IpAddr::from(src),
        dst: IpAddr::from(dst),
        sport: 40000,
        dport: 9,
        ..Transport::new(IpAddr::from(src), IpAddr::from(dst))
    };
    // Strip the Ethernet header udp_frame adds: callers wrap it themselves.
    udp_frame(&t, &payload)[eth::HLEN..].to_vec()
}

/// An IPv4 ICMP echo request (`reply = false`) or reply, without Ethernet.
pub fn icmp_echo(
    src: [u8; 4],
    dst: [u8; 4],
    id: u16,
    seq: u16,
    reply: bool,
    payload: &[u8],
) -> Vec<u8> {
    let mut icmp = vec![if reply { 0 } else { 8 }, 0, 0, 0];
    icmp.extend_from_slice(&id.to_be_bytes());
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(payload);
    let c = inet_checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0u8; ipv4::MIN_HLEN];
    ip[0] = 0x45;
    ip[ipv4::TOTAL_LEN..ipv4::TOTAL_LEN + 2]
        .copy_from_slice(&((ipv4::MIN_HLEN + icmp.len()) as u16).to_be_bytes());
    ip[ipv4::TTL] = 64;
    ip[ipv4::PROTO] = 1;
    ip[ipv4::SRC..ipv4::SRC + 4].copy_from_slice(&src);
    ip[ipv4::DST..ipv4::DST + 4].copy_from_slice(&dst);
    let c = inet_checksum(&ip);
    ip[ipv4::CHECKSUM..ipv4::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&icmp);
    ip
}

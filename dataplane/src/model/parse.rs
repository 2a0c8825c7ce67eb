//! The model's parsing of outer headers (Ethernet, IP, UDP to the data
//! port) and of the inner frame (802.3, or 802.11 converted to 802.3), and
//! the rewrite to a tagged client frame.

use ferry_ebpf::{
    abi::{self, Reason},
    capwap, dot11, eth, ipv4, ipv6, udp, vlan,
};

use super::{MAX_FRAME, Model};

impl Model {
    /// Whether `pkt` is addressed to this node's data port, the way the
    /// upstream program decides it (malformed or fragmented included): the
    /// frames that arrive on the AP side.
    pub fn is_data_channel(&self, pkt: &[u8]) -> bool {
        !matches!(
            self.parse_outer(pkt),
            Err(Reason::PassNotIp | Reason::PassBadIp | Reason::PassNotLocal | Reason::PassNotData)
        )
    }

    pub(super) fn parse_outer(&self, pkt: &[u8]) -> Result<Outer, Reason> {
        if pkt.len() < eth::HLEN {
            return Err(Reason::PassNotIp);
        }
        let mut et = eth::ethertype(&arr(pkt, 0));
        let mut l3 = eth::HLEN;
        if vlan::is_tag(et) {
            if pkt.len() < vlan::TAGGED_HLEN {
                return Err(Reason::PassNotIp);
            }
            et = be16(pkt, eth::HLEN + 2);
            l3 = vlan::TAGGED_HLEN;
        }
        match et {
            eth::ETHERTYPE_IPV4 => self.parse_v4(pkt, l3),
            eth::ETHERTYPE_IPV6 => self.parse_v6(pkt, l3),
            _ => Err(Reason::PassNotIp),
        }
    }

    pub(super) fn parse_v4(&self, pkt: &[u8], l3: usize) -> Result<Outer, Reason> {
        if pkt.len() < l3 + ipv4::MIN_HLEN {
            return Err(Reason::PassBadIp);
        }
        let ih: [u8; ipv4::MIN_HLEN] = arr(pkt, l3);
        let ihl = ipv4::header_len(&ih);
        if ipv4::version(&ih) != 4 || ihl < ipv4::MIN_HLEN {
            return Err(Reason::PassBadIp);
        }
        if !self.local.contains(&abi::v4_mapped(ipv4::dst(&ih))) {
            return Err(Reason::PassNotLocal);
        }
        if ih[ipv4::PROTO] != ipv4::PROTO_UDP {
            return Err(Reason::PassNotData);
        }
        if ipv4::is_fragment(&ih) {
            return Err(Reason::PassIpFragment);
        }
        let l4 = l3 + ihl;
        if pkt.len() < l4 + udp::HLEN {
            return Err(Reason::PassBadIp);
        }
        let uh: [u8; udp::HLEN] = arr(pkt, l4);
        if udp::dst_port(&uh) != self.port {
            return Err(Reason::PassNotData);
        }
        let total = ipv4::total_len(&ih);
        if total > MAX_FRAME || total < ihl + udp::HLEN || l3 + total > pkt.len() {
            return Err(Reason::DropBadLength);
        }
        let ip_end = l3 + total;
        let ulen = udp::len(&uh);
        if ulen < udp::HLEN || l4 + ulen > ip_end {
            return Err(Reason::DropBadLength);
        }
        Ok(Outer {
            l4,
            end: l4 + ulen,
            src: abi::v4_mapped(ipv4::src(&ih)),
            sport: udp::src_port(&uh),
        })
    }

    pub(super) fn parse_v6(&self, pkt: &[u8], l3: usize) -> Result<Outer, Reason> {
        if pkt.len() < l3 + ipv6::HLEN {
            return Err(Reason::PassBadIp);
        }
        let ih: [u8; ipv6::HLEN] = arr(pkt, l3);
        if ipv6::version(&ih) != 6 {
            return Err(Reason::PassBadIp);
        }
        if !self.local.contains(&ipv6::dst(&ih)) {
            return Err(Reason::PassNotLocal);
        }
        let next = ipv6::next_header(&ih);
        if next != ipv6::NEXT_UDP && next != ipv6::NEXT_UDPLITE {
            return Err(if ipv6::is_extension(next) {
                Reason::PassIpv6Ext
            } else {
                Reason::PassNotData
            });
        }
        let l4 = l3 + ipv6::HLEN;
        if pkt.len() < l4 + udp::HLEN {
            return Err(Reason::PassBadIp);
        }
        let uh: [u8; udp::HLEN] = arr(pkt, l4);
        if udp::dst_port(&uh) != self.port {
            return Err(Reason::PassNotData);
        }
        let plen = ipv6::payload_len(&ih);
        if !(udp::HLEN..=MAX_FRAME).contains(&plen) || l4 + plen > pkt.len() {
            return Err(Reason::DropBadLength);
        }
        let ip_end = l4 + plen;
        let mut end = ip_end;
        if next == ipv6::NEXT_UDP {
            let ulen = udp::len(&uh);
            if ulen < udp::HLEN || l4 + ulen > ip_end {
                return Err(Reason::DropBadLength);
            }
            end = l4 + ulen;
        }
        Ok(Outer {
            l4,
            end,
            src: ipv6::src(&ih),
            sport: udp::src_port(&uh),
        })
    }
}

pub(super) struct Outer {
    pub(super) l4: usize,
    pub(super) end: usize,
    pub(super) src: abi::Addr,
    pub(super) sport: u16,
}

/// The decapsulated frame to build.
pub(super) struct Inner {
    pub(super) dst_src: [u8; 12],
    pub(super) pcp: u8,
    /// Payload kept after the 16-byte DA SA tag prefix: starts with the
    /// EtherType, or is the 802.3 body that follows a length field.
    pub(super) rest_from: usize,
    pub(super) length: Option<u16>,
    pub(super) bssid: Option<[u8; 6]>,
}

/// Radio MAC and Wireless Specific Information must end inside HLEN.
pub(super) fn check_optional(hdr: &[u8], h: &capwap::Header) -> Result<(), Reason> {
    let hlen = hdr.len();
    let mut o = capwap::OPTIONAL_START;
    if h.radio_mac {
        if o + 1 > hlen {
            return Err(Reason::DropBadOptional);
        }
        let l = hdr[o];
        if o + 1 + l as usize > hlen {
            return Err(Reason::DropBadOptional);
        }
        o += capwap::padded_option_len(l);
    }
    if h.wireless_info {
        if o + 1 > hlen {
            return Err(Reason::DropBadOptional);
        }
        if o + 1 + hdr[o] as usize > hlen {
            return Err(Reason::DropBadOptional);
        }
    }
    Ok(())
}

pub(super) fn ethernet_inner(d: &[u8], p: usize) -> Result<Inner, Reason> {
    if p + eth::HLEN > d.len() {
        return Err(Reason::DropInnerShort);
    }
    let eh: [u8; eth::HLEN] = arr(d, p);
    let et = eth::ethertype(&eh);
    if vlan::is_tag(et) {
        return Err(Reason::DropInnerVlan);
    }
    if et == eth::ETHERTYPE_EAPOL {
        return Err(Reason::PassEapol);
    }
    Ok(Inner {
        dst_src: arr(d, p),
        pcp: 0,
        rest_from: p + eth::ETHERTYPE,
        length: None,
        bssid: None,
    })
}

pub(super) fn dot11_to_8023(d: &[u8], p: usize) -> Result<Inner, Reason> {
    if p + 2 > d.len() {
        return Err(Reason::DropInnerShort);
    }
    let fc = dot11::FrameControl::parse(&arr(d, p));
    if fc.ftype == dot11::TYPE_MGMT {
        return Err(Reason::PassDot11Mgmt);
    }
    if fc.ftype != dot11::TYPE_DATA {
        return Err(Reason::DropDot11NotData);
    }
    if fc.is_null() {
        return Err(Reason::DropNullData);
    }
    if fc.protected {
        return Err(Reason::DropProtected);
    }
    let hdr = fc.header_len();
    if p + hdr > d.len() {
        return Err(Reason::DropInnerShort);
    }
    let mut pcp = 0;
    if fc.is_qos() {
        let q = d[p + fc.qos_offset()];
        if q & dot11::QOS_AMSDU != 0 {
            return Err(Reason::PassAmsdu);
        }
        pcp = dot11::user_priority(q);
    }
    let (da, sa) = fc.da_sa_offsets();
    let mut dst_src = [0u8; 12];
    dst_src[..6].copy_from_slice(&d[p + da..p + da + 6]);
    dst_src[6..].copy_from_slice(&d[p + sa..p + sa + 6]);
    let bssid = fc.bssid_offset().map(|o| arr::<6>(d, p + o));
    let body = p + hdr;
    let blen = d.len() - body;
    if blen >= dot11::SNAP_LEN && dot11::is_snap(&arr(d, body)) {
        let et = be16(d, body + 6);
        if et < eth::ETHERTYPE_MIN {
            return Err(Reason::DropBadPayload);
        }
        if vlan::is_tag(et) {
            return Err(Reason::DropInnerVlan);
        }
        if et == eth::ETHERTYPE_EAPOL {
            return Err(Reason::PassEapol);
        }
        return Ok(Inner {
            dst_src,
            pcp,
            rest_from: body + 6,
            length: None,
            bssid,
        });
    }
    if blen == 0 || blen > eth::MAX_8023_LEN {
        return Err(Reason::DropBadPayload);
    }
    Ok(Inner {
        dst_src,
        pcp,
        rest_from: body,
        length: Some(blen as u16),
        bssid,
    })
}

pub(super) fn rewrite(d: &[u8], inner: &Inner, vid: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(vlan::TAGGED_HLEN + d.len() - inner.rest_from);
    out.extend_from_slice(&inner.dst_src);
    out.extend_from_slice(&vlan::tag(vlan::tci(inner.pcp, vid)));
    if let Some(len) = inner.length {
        out.extend_from_slice(&len.to_be_bytes());
    }
    out.extend_from_slice(&d[inner.rest_from..]);
    out
}

pub(super) fn arr<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[off..off + N]);
    a
}

pub(super) fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

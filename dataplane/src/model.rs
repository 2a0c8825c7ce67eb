//! The reference model: ferry's upstream transform as plain Rust on byte
//! slices. It is a second, independent implementation of the decision flow in
//! `ebpf/src/upstream.rs`, sharing only the wire layouts, so the differential
//! tests can hold the kernel program to the same verdict, reason and output
//! bytes on any input.
//!
//! Upstream flow (first match wins):
//!
//! 1. Ethernet, at most one outer tag; not IPv4/IPv6: pass. IP header not
//!    parseable: pass. Not to a local address: pass. Not UDP (IPv6: UDP or
//!    UDP-Lite) to the data port: pass. IPv4 fragment / IPv6 extension
//!    header: pass.
//! 2. IP/UDP lengths inconsistent with the frame: drop.
//! 3. CAPWAP: short, version != 0, type not 0/1 (1 = DTLS: pass), HLEN < 2
//!    or past the datagram: drop. Keepalive (K): pass. Radio MAC / Wireless
//!    info past HLEN: drop.
//! 4. Tunnel lookup (address, port) then (address, any): unknown: drop;
//!    standby: drop. Fragment (F): pass.
//! 5. T=0: inner Ethernet; T=1 (WBID 1): 802.11 data converted to 802.3.
//!    Management, EAPOL, A-MSDU: pass. Inner VLAN tag, null data, protected,
//!    control frames, bad payload: drop.
//! 6. Rewrite to DA SA 8100 TCI (EtherType | length) payload, trimmed to
//!    the datagram end; TX or redirect.

use std::collections::HashMap;

use ferry_ebpf::{
    abi::{
        self, Action, EGRESS_REDIRECT, EGRESS_TX, Reason, TUNNEL_STANDBY, TunnelInfo, TunnelKey,
    },
    capwap, dot11, eth, ipv4, ipv6, udp, vlan,
};

use crate::{
    datapath::action,
    tables::{Tables, addr_key},
};

/// What the model decided for one packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// XDP action code the program must return.
    pub action: u32,
    /// The counter the packet lands in.
    pub reason: Reason,
    /// The frame as the program must leave it.
    pub output: Vec<u8>,
    /// The tunnel the packet matched, if it got that far.
    pub tunnel: Option<u32>,
}

/// The reference model with its tables indexed.
#[derive(Clone, Debug)]
pub struct Model {
    local: Vec<abi::Addr>,
    port: u16,
    egress: u8,
    tunnels: HashMap<TunnelKey, TunnelInfo>,
    /// Set when the redirect egress is populated (the kernel's DEVMAP slot).
    pub egress_ready: bool,
}

/// Same bound as the program: larger lengths cannot be in one XDP buffer.
const MAX_FRAME: usize = 16_383;

impl Model {
    /// A model of the program loaded with `tables` (egress assumed ready).
    pub fn new(tables: &Tables) -> Self {
        let port = if tables.settings.data_port == 0 {
            capwap::DATA_PORT
        } else {
            tables.settings.data_port
        };
        Self {
            local: tables.local_addrs.iter().map(|a| addr_key(*a)).collect(),
            port,
            egress: tables.settings.egress,
            tunnels: tables.tunnels.iter().map(|t| (t.key, t.info)).collect(),
            egress_ready: true,
        }
    }

    /// Runs the upstream transform on one frame.
    pub fn upstream(&self, pkt: &[u8]) -> Outcome {
        let mut tunnel = None;
        match self.try_upstream(pkt, &mut tunnel) {
            Ok((action, output)) => Outcome {
                action,
                reason: Reason::Forwarded,
                output,
                tunnel,
            },
            Err(reason) => Outcome {
                action: match reason.action() {
                    Action::Pass => action::PASS,
                    _ => action::DROP,
                },
                reason,
                output: pkt.to_vec(),
                tunnel,
            },
        }
    }

    fn try_upstream(&self, pkt: &[u8], tunnel: &mut Option<u32>) -> Result<(u32, Vec<u8>), Reason> {
        let outer = self.parse_outer(pkt)?;
        let c = outer.l4 + udp::HLEN;
        let end = outer.end;
        if c + capwap::FIXED_LEN > end {
            return Err(Reason::DropCapwapShort);
        }
        let h = capwap::Header::parse(&arr(pkt, c));
        if h.version != 0 {
            return Err(Reason::DropBadVersion);
        }
        if h.kind == capwap::TYPE_DTLS {
            return Err(Reason::PassDtls);
        }
        if h.kind != capwap::TYPE_CLEAR {
            return Err(Reason::DropBadType);
        }
        let hlen = h.header_bytes();
        if h.hlen < capwap::MIN_HLEN || c + hlen > end {
            return Err(Reason::DropBadHlen);
        }
        if h.keepalive {
            return Err(Reason::PassKeepalive);
        }
        check_optional(&pkt[c..c + hlen], &h)?;

        let info = self
            .tunnels
            .get(&TunnelKey::new(outer.src, outer.sport))
            .or_else(|| self.tunnels.get(&TunnelKey::new(outer.src, 0)))
            .copied()
            .ok_or(Reason::DropUnknownTunnel)?;
        *tunnel = Some(info.id);
        if info.flags & TUNNEL_STANDBY != 0 {
            return Err(Reason::DropStandby);
        }
        if h.fragment {
            return Err(Reason::PassCapwapFragment);
        }
        let p = c + hlen;
        let datagram = &pkt[..end];
        let inner = if h.native {
            if h.wbid != capwap::WBID_IEEE80211 {
                return Err(Reason::DropBadWbid);
            }
            dot11_to_8023(datagram, p)?
        } else {
            ethernet_inner(datagram, p)?
        };
        let action = match self.egress {
            EGRESS_TX => action::TX,
            EGRESS_REDIRECT if self.egress_ready => action::REDIRECT,
            _ => return Err(Reason::DropNoEgress),
        };
        Ok((action, rewrite(datagram, &inner, info.vlan)))
    }

    fn parse_outer(&self, pkt: &[u8]) -> Result<Outer, Reason> {
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

    fn parse_v4(&self, pkt: &[u8], l3: usize) -> Result<Outer, Reason> {
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

    fn parse_v6(&self, pkt: &[u8], l3: usize) -> Result<Outer, Reason> {
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

struct Outer {
    l4: usize,
    end: usize,
    src: abi::Addr,
    sport: u16,
}

/// The decapsulated frame to build.
struct Inner {
    dst_src: [u8; 12],
    pcp: u8,
    /// Payload kept after the 16-byte DA SA tag prefix: starts with the
    /// EtherType, or is the 802.3 body that follows a length field.
    rest_from: usize,
    length: Option<u16>,
}

/// Radio MAC and Wireless Specific Information must end inside HLEN.
fn check_optional(hdr: &[u8], h: &capwap::Header) -> Result<(), Reason> {
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

fn ethernet_inner(d: &[u8], p: usize) -> Result<Inner, Reason> {
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
    })
}

fn dot11_to_8023(d: &[u8], p: usize) -> Result<Inner, Reason> {
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
    })
}

fn rewrite(d: &[u8], inner: &Inner, vid: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(vlan::TAGGED_HLEN + d.len() - inner.rest_from);
    out.extend_from_slice(&inner.dst_src);
    out.extend_from_slice(&vlan::tag(vlan::tci(inner.pcp, vid)));
    if let Some(len) = inner.length {
        out.extend_from_slice(&len.to_be_bytes());
    }
    out.extend_from_slice(&d[inner.rest_from..]);
    out
}

fn arr<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[off..off + N]);
    a
}

fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

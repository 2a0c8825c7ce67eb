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
//!
//! The reference model builds each frame's headers with the functions
//! below. The XDP program builds a tunnel's [`Outer`] headers (Ethernet to
//! CAPWAP) with the same functions once per next hop, keeps them per CPU,
//! and per frame copies them and writes the fields that change from frame
//! to frame with [`Outer::patch`]; the tests here check that the two give
//! the same bytes.

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

    /// Bytes from the Ethernet header through the CAPWAP header, Radio MAC
    /// included: what an [`Outer`] holds.
    #[inline(always)]
    pub const fn outer_len(&self) -> usize {
        eth::HLEN + self.ip_hlen() + udp::HLEN + self.capwap_len()
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
    // Element by element from the fields, not `copy_from_slice`: a slice
    // forgets the fields' alignment, and LLVM then copies byte by byte.
    let [d0, d1, d2, d3, d4, d5] = h.dmac;
    let [s0, s1, s2, s3, s4, s5] = h.smac;
    [d0, d1, d2, d3, d4, d5, s0, s1, s2, s3, s4, s5, et[0], et[1]]
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
    sum16_slice(b)
}

/// [`sum16`] of a slice of even length (no copy into an array first).
#[inline(always)]
fn sum16_slice(b: &[u8]) -> u32 {
    let mut s = 0u32;
    let mut i = 0;
    while i + 1 < b.len() {
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

/// IPv6 header for a UDP payload of `udp_payload` bytes. Out of line: its
/// two addresses, unrolled byte by byte, spill more registers than the XDP
/// program's stack has room for next to the rest of [`Outer::build`].
#[inline(never)]
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
pub fn dot11_header(da: &[u8; 6], bssid: &[u8; 6], sa: &[u8; 6]) -> [u8; dot11::BASE_HLEN] {
    let fc = dot11::FrameControl {
        ftype: dot11::TYPE_DATA,
        from_ds: true,
        ..dot11::FrameControl::parse(&[0, 0])
    }
    .encode();
    let mut b = [0u8; dot11::BASE_HLEN];
    b[0] = fc[0];
    b[1] = fc[1];
    b[dot11::ADDR1..dot11::ADDR1 + 6].copy_from_slice(da);
    b[dot11::ADDR2..dot11::ADDR2 + 6].copy_from_slice(bssid);
    b[dot11::ADDR3..dot11::ADDR3 + 6].copy_from_slice(sa);
    b
}

/// Room for the longest [`Outer`] headers: Ethernet, IPv6, UDP and CAPWAP
/// with Radio MAC are 78 bytes; whole 8-byte words.
pub const OUTER_MAX: usize = 80;
const _: () = assert!(Shape::new(true, true, false).outer_len() <= OUTER_MAX);

/// A tunnel's outer headers, Ethernet through CAPWAP (Radio MAC included),
/// built by the functions above with every per-frame field zero: the
/// DSCP, the lengths and checksums, the AP's port (learned in place) and
/// the radio id. What the XDP program keeps per tunnel and CPU; each frame
/// copies the first [`Shape::outer_len`] bytes and then writes its
/// [`Frame`] over them ([`Outer::patch`]).
///
/// 8-aligned, so the program copies it into the packet a word at a time:
/// LLVM's BPF backend copies arrays it only knows as 1-aligned one byte at
/// a time, a load and a store per byte, and building the headers that way
/// on every frame was a quarter of the downstream program's time (bench/
/// RESULTS.md, "Outer headers built once per tunnel").
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outer {
    /// The headers in wire order.
    pub bytes: [u8; OUTER_MAX],
    /// One's-complement sum of the constant words under the checksum the
    /// frame completes: the IPv4 header's (IPv4), the UDP-Lite pseudo-header
    /// and header's (IPv6 UDP-Lite); 0 for IPv6 UDP, whose checksum covers
    /// the payload and is summed over the finished packet.
    pub sum: u32,
    /// Always zero.
    pub pad: u32,
}

impl Default for Outer {
    fn default() -> Self {
        Self {
            bytes: [0; OUTER_MAX],
            sum: 0,
            pad: 0,
        }
    }
}

/// The outer-header fields that change from frame to frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// DSCP for the outer header (from the client frame's priority).
    pub dscp: u8,
    /// The AP's port: any-port tunnels learn it in place, without a new
    /// table generation.
    pub dport: u16,
    /// The station's radio id.
    pub rid: u8,
    /// UDP payload length: CAPWAP header and payload.
    pub udp_payload: usize,
}

/// Where [`Outer::patch`] writes: the packet in the XDP program, a buffer
/// in the tests.
pub trait Sink {
    /// Writes `b` at offset `off` from the Ethernet header, or returns
    /// `None` past the end.
    fn put<const N: usize>(&mut self, off: usize, b: [u8; N]) -> Option<()>;
}

impl Outer {
    /// Builds, in place, the outer headers of a tunnel whose shape is
    /// `shape` and whose constant fields `h` holds. Its per-frame fields
    /// ([`Frame`]'s: `dscp`, `dport`, `rid`) must be zero, since the frame
    /// adds the radio id's bits and the port to the sums. In place, from
    /// the caller's `h`, because the XDP program builds into its map entry
    /// with little stack to spare.
    #[inline(always)]
    pub fn build(&mut self, h: &Headers, shape: &Shape) {
        let b = &mut self.bytes;
        b[..eth::HLEN].copy_from_slice(&ethernet(h, shape.ipv6));
        let mut o = eth::HLEN;
        self.sum = 0;
        if shape.ipv6 {
            b[o..o + ipv6::HLEN].copy_from_slice(&ipv6(h, 0));
            o += ipv6::HLEN;
        } else {
            b[o..o + ipv4::MIN_HLEN].copy_from_slice(&ipv4(h, 0));
            // The constant words: total length and checksum zero.
            b[o + ipv4::TOTAL_LEN..o + ipv4::TOTAL_LEN + 2].fill(0);
            b[o + ipv4::CHECKSUM..o + ipv4::CHECKSUM + 2].fill(0);
            self.sum = sum16_slice(&b[o..o + ipv4::MIN_HLEN]);
            o += ipv4::MIN_HLEN;
        }
        b[o..o + udp::HLEN].copy_from_slice(&udp(h, shape.ipv6, 0));
        if shape.ipv6 && h.udplite {
            b[o + udp::CHECKSUM..o + udp::CHECKSUM + 2].fill(0);
            self.sum = pseudo_sum_v6(&h.local, &h.ap, 0, ipv6::NEXT_UDPLITE)
                + sum16_slice(&b[o..o + udp::HLEN]);
        }
        o += udp::HLEN;
        b[o..o + capwap::FIXED_LEN].copy_from_slice(&capwap(h, shape));
        o += capwap::FIXED_LEN;
        if shape.radio_mac {
            b[o..o + RADIO_MAC_OPTION_LEN].copy_from_slice(&radio_mac_option(h));
        }
    }

    /// The first `N` bytes, 8-aligned (the headers of a shape whose
    /// [`Shape::outer_len`] is `N`).
    #[inline(always)]
    pub fn first<const N: usize>(&self) -> &Aligned<N> {
        const { assert!(N <= OUTER_MAX) };
        // SAFETY: `bytes` is the first field of an 8-aligned struct;
        // `Aligned<N>` is N bytes rounded up to whole words, which for
        // N <= OUTER_MAX (a multiple of 8) stays inside `bytes`.
        unsafe { &*(self as *const Self).cast::<Aligned<N>>() }
    }

    /// Writes `f` over these headers, copied at offset 0 of `out`: the
    /// DSCP, the lengths, the checksums, the AP's port and the radio id.
    /// `lite`: IPv6 with UDP-Lite.
    #[inline(always)]
    pub fn patch<S: Sink>(&self, out: &mut S, shape: &Shape, lite: bool, f: &Frame) -> Option<()> {
        let udp_len = (udp::HLEN + f.udp_payload) as u16;
        let ip = eth::HLEN;
        let tc = f.dscp << 2;
        if shape.ipv6 {
            let v = self.bytes[ip] & 0xf0;
            out.put(ip, [v | (tc >> 4), tc << 4])?;
            out.put(ip + ipv6::PAYLOAD_LEN, udp_len.to_be_bytes())?;
        } else {
            let total = ipv4::MIN_HLEN as u16 + udp_len;
            out.put(ip, [self.bytes[ip], tc])?;
            out.put(ip + ipv4::TOTAL_LEN, total.to_be_bytes())?;
            let c = fold(self.sum + u32::from(total) + u32::from(tc));
            out.put(ip + ipv4::CHECKSUM, c.to_be_bytes())?;
        }
        let l4 = ip + shape.ip_hlen();
        out.put(l4 + udp::DST_PORT, f.dport.to_be_bytes())?;
        if shape.ipv6 && lite {
            let c = fold(self.sum + u32::from(udp_len) + u32::from(f.dport));
            let c = if c == 0 { 0xffff } else { c };
            out.put(l4 + udp::CHECKSUM, c.to_be_bytes())?;
        } else {
            out.put(l4 + udp::LEN, udp_len.to_be_bytes())?;
        }
        let cw = l4 + udp::HLEN;
        let rid = capwap::Header {
            rid: f.rid,
            ..capwap::Header::parse(&[0; capwap::FIXED_LEN])
        }
        .encode();
        out.put(
            cw + 1,
            [self.bytes[cw + 1] | rid[1], self.bytes[cw + 2] | rid[2]],
        )
    }
}

/// `N` bytes, 8-aligned.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Aligned<const N: usize>(pub [u8; N]);

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    struct Buf(Vec<u8>);

    impl Sink for Buf {
        fn put<const N: usize>(&mut self, off: usize, b: [u8; N]) -> Option<()> {
            self.0.get_mut(off..off + N)?.copy_from_slice(&b);
            Some(())
        }
    }

    /// The headers as the reference model writes them, Ethernet to CAPWAP.
    fn direct(h: &Headers, shape: &Shape, udp_payload: usize) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&ethernet(h, shape.ipv6));
        if shape.ipv6 {
            v.extend_from_slice(&ipv6(h, udp_payload));
        } else {
            v.extend_from_slice(&ipv4(h, udp_payload));
        }
        v.extend_from_slice(&udp(h, shape.ipv6, udp_payload));
        v.extend_from_slice(&capwap(h, shape));
        if shape.radio_mac {
            v.extend_from_slice(&radio_mac_option(h));
        }
        v
    }

    #[test]
    fn a_patched_template_is_what_the_headers_are_built_as() {
        let mut n = 0;
        for shape_bits in 0..8u8 {
            let shape = Shape::new(
                shape_bits & 1 != 0,
                shape_bits & 2 != 0,
                shape_bits & 4 != 0,
            );
            for case in 0..64u32 {
                let ipv6 = shape.ipv6;
                let mut ap = [0u8; 16];
                let mut local = [0u8; 16];
                for i in 0..16 {
                    ap[i] = (case as u8).wrapping_mul(31).wrapping_add(i as u8 * 7);
                    local[i] = (case as u8).wrapping_mul(17) ^ (i as u8 * 13);
                }
                if !ipv6 {
                    ap[..12].copy_from_slice(&crate::abi::v4_mapped([0; 4])[..12]);
                    local[..12].copy_from_slice(&ap[..12]);
                }
                let h = Headers {
                    ap,
                    local,
                    dmac: [2, 0, 0, 0, case as u8, 1],
                    sport: 5247,
                    smac: [2, 0, 0, 0, case as u8, 2],
                    dport: [5246, 1, 0xffff, 40_000][case as usize % 4],
                    da: [0; 6],
                    dscp: (case * 5 % 64) as u8,
                    rid: (case % 32) as u8,
                    sa: [0; 6],
                    df: case % 2 == 0,
                    udplite: case % 3 == 0,
                    radio_mac: [0xa, 0xb, 0xc, 0xd, case as u8, 0xe],
                    bssid: [0; 6],
                };
                let udp_payload = [0, 1, 13, 64, 1000, 1471, 9000, 65_000][case as usize % 8];
                let udp_payload = udp_payload.min(65_535 - 48);
                let mut outer = Outer {
                    bytes: [0x5a; OUTER_MAX],
                    sum: 7,
                    pad: 0,
                };
                let constant = Headers {
                    dscp: 0,
                    dport: 0,
                    rid: 0,
                    ..h
                };
                outer.build(&constant, &shape);
                let len = shape.outer_len();
                let mut buf = Buf(outer.bytes[..len].to_vec());
                let f = Frame {
                    dscp: h.dscp,
                    dport: h.dport,
                    rid: h.rid,
                    udp_payload,
                };
                outer
                    .patch(&mut buf, &shape, ipv6 && h.udplite, &f)
                    .unwrap();
                let want = direct(&h, &shape, udp_payload);
                assert_eq!(buf.0, want, "shape {shape:?} case {case}");
                assert_eq!(outer.first::<14>().0, outer.bytes[..14]);
                n += 1;
            }
        }
        assert_eq!(n, 512);
    }
}

//! IPv6 fixed header (RFC 8200).

/// Length of the fixed header.
pub const HLEN: usize = 40;
/// Offset of the payload length field.
pub const PAYLOAD_LEN: usize = 4;
/// Offset of the next header field.
pub const NEXT_HEADER: usize = 6;
/// Offset of the hop limit.
pub const HOP_LIMIT: usize = 7;
/// Offset of the source address.
pub const SRC: usize = 8;
/// Offset of the destination address.
pub const DST: usize = 24;
/// Next header value of UDP.
pub const NEXT_UDP: u8 = 17;
/// Next header value of UDP-Lite (RFC 3828), CAPWAP's default over IPv6.
pub const NEXT_UDPLITE: u8 = 136;

/// IP version from the first byte.
#[inline(always)]
pub const fn version(h: &[u8; HLEN]) -> u8 {
    h[0] >> 4
}

/// Payload length (everything after the fixed header).
#[inline(always)]
pub const fn payload_len(h: &[u8; HLEN]) -> usize {
    u16::from_be_bytes([h[PAYLOAD_LEN], h[PAYLOAD_LEN + 1]]) as usize
}

/// Next header.
#[inline(always)]
pub const fn next_header(h: &[u8; HLEN]) -> u8 {
    h[NEXT_HEADER]
}

/// Whether a next-header value is an IPv6 extension header (RFC 8200 §4,
/// RFC 7045), which ferry's fast path does not walk.
#[inline(always)]
pub const fn is_extension(next: u8) -> bool {
    matches!(
        next,
        0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 | 253 | 254
    )
}

/// Source address.
#[inline(always)]
pub const fn src(h: &[u8; HLEN]) -> [u8; 16] {
    let mut a = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        a[i] = h[SRC + i];
        i += 1;
    }
    a
}

/// Destination address.
#[inline(always)]
pub const fn dst(h: &[u8; HLEN]) -> [u8; 16] {
    let mut a = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        a[i] = h[DST + i];
        i += 1;
    }
    a
}

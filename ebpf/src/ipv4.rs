//! IPv4 header (RFC 791).

/// Length of a header without options; IHL may add up to 40 bytes more.
pub const MIN_HLEN: usize = 20;
/// Largest header length IHL can express.
pub const MAX_HLEN: usize = 60;
/// Offset of the total length field.
pub const TOTAL_LEN: usize = 2;
/// Offset of flags + fragment offset.
pub const FRAG: usize = 6;
/// Offset of TTL.
pub const TTL: usize = 8;
/// Offset of the protocol field.
pub const PROTO: usize = 9;
/// Offset of the header checksum.
pub const CHECKSUM: usize = 10;
/// Offset of the source address.
pub const SRC: usize = 12;
/// Offset of the destination address.
pub const DST: usize = 16;
/// Protocol number of UDP.
pub const PROTO_UDP: u8 = 17;

/// IP version from the first byte.
#[inline(always)]
pub const fn version(h: &[u8; MIN_HLEN]) -> u8 {
    h[0] >> 4
}

/// Header length in bytes, from IHL (not validated).
#[inline(always)]
pub const fn header_len(h: &[u8; MIN_HLEN]) -> usize {
    ((h[0] & 0x0f) as usize) * 4
}

/// Total length of the datagram, header included.
#[inline(always)]
pub const fn total_len(h: &[u8; MIN_HLEN]) -> usize {
    u16::from_be_bytes([h[TOTAL_LEN], h[TOTAL_LEN + 1]]) as usize
}

/// Whether the datagram is a fragment: more-fragments set or a non-zero offset.
#[inline(always)]
pub const fn is_fragment(h: &[u8; MIN_HLEN]) -> bool {
    u16::from_be_bytes([h[FRAG], h[FRAG + 1]]) & 0x3fff != 0
}

/// Source address.
#[inline(always)]
pub const fn src(h: &[u8; MIN_HLEN]) -> [u8; 4] {
    [h[SRC], h[SRC + 1], h[SRC + 2], h[SRC + 3]]
}

/// Destination address.
#[inline(always)]
pub const fn dst(h: &[u8; MIN_HLEN]) -> [u8; 4] {
    [h[DST], h[DST + 1], h[DST + 2], h[DST + 3]]
}

//! UDP (RFC 768) and UDP-Lite (RFC 3828) headers: same layout, but UDP-Lite's
//! length field is the checksum coverage, not the datagram length.

/// Header length.
pub const HLEN: usize = 8;
/// Offset of the source port.
pub const SRC_PORT: usize = 0;
/// Offset of the destination port.
pub const DST_PORT: usize = 2;
/// Offset of the length (UDP) or checksum coverage (UDP-Lite).
pub const LEN: usize = 4;
/// Offset of the checksum.
pub const CHECKSUM: usize = 6;

/// Source port.
#[inline(always)]
pub const fn src_port(h: &[u8; HLEN]) -> u16 {
    u16::from_be_bytes([h[SRC_PORT], h[SRC_PORT + 1]])
}

/// Destination port.
#[inline(always)]
pub const fn dst_port(h: &[u8; HLEN]) -> u16 {
    u16::from_be_bytes([h[DST_PORT], h[DST_PORT + 1]])
}

/// Length field (UDP: header + payload; UDP-Lite: checksum coverage).
#[inline(always)]
pub const fn len(h: &[u8; HLEN]) -> usize {
    u16::from_be_bytes([h[LEN], h[LEN + 1]]) as usize
}

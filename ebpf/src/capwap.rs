//! CAPWAP data channel header (RFC 5415 §4.3, RFC 5416 for IEEE 802.11).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |Version| Type  |  HLEN   |   RID   | WBID    |T|F|L|W|M|K|Flags|
//! |          Fragment ID          |     Frag Offset         |Rsvd |
//! | (optional) Radio MAC Address / Wireless Specific Information  |
//! ```
//!
//! HLEN counts 4-byte words including optional fields; the payload starts at
//! `HLEN * 4`. The three Flags bits are reserved: RFC 5415 §4.3 says receivers
//! MUST ignore them, so ferry does not treat them as malformed.

/// AC data channel UDP port.
pub const DATA_PORT: u16 = 5247;
/// AC control channel UDP port (never handled by ferry's fast path).
pub const CONTROL_PORT: u16 = 5246;
/// Length of the fixed header (preamble + two words).
pub const FIXED_LEN: usize = 8;
/// Smallest legal HLEN (in 4-byte words).
pub const MIN_HLEN: u8 = 2;
/// Preamble type: a clear CAPWAP header follows.
pub const TYPE_CLEAR: u8 = 0;
/// Preamble type: a DTLS record follows (`01 00 00 00` then the record).
pub const TYPE_DTLS: u8 = 1;
/// WBID of IEEE 802.11.
pub const WBID_IEEE80211: u8 = 1;
/// Offset of the first optional field (Radio MAC, then Wireless Specific Info).
pub const OPTIONAL_START: usize = 8;
/// Message element type of Session ID (RFC 5415 §4.6.37), carried in keepalives.
pub const ELEMENT_SESSION_ID: u16 = 35;
/// Length of a Session ID value.
pub const SESSION_ID_LEN: usize = 16;

/// The decoded fixed part of a CAPWAP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Header {
    /// Preamble version (must be 0).
    pub version: u8,
    /// Preamble type (0 clear, 1 DTLS).
    pub kind: u8,
    /// Header length in 4-byte words, optional fields included.
    pub hlen: u8,
    /// Radio id.
    pub rid: u8,
    /// Wireless binding id (1 = IEEE 802.11).
    pub wbid: u8,
    /// T: payload is a native frame of the wireless binding (802.11), not 802.3.
    pub native: bool,
    /// F: this is a fragment.
    pub fragment: bool,
    /// L: last fragment.
    pub last: bool,
    /// W: Wireless Specific Information present.
    pub wireless_info: bool,
    /// M: Radio MAC present.
    pub radio_mac: bool,
    /// K: data channel keepalive.
    pub keepalive: bool,
    /// The three reserved flag bits (ignored on receive).
    pub flags: u8,
    /// Fragment id.
    pub frag_id: u16,
    /// Fragment offset in 8-byte units.
    pub frag_offset: u16,
}

impl Header {
    /// Decodes the fixed eight bytes.
    #[inline(always)]
    pub const fn parse(b: &[u8; FIXED_LEN]) -> Self {
        Self {
            version: b[0] >> 4,
            kind: b[0] & 0x0f,
            hlen: b[1] >> 3,
            rid: ((b[1] & 0x07) << 2) | (b[2] >> 6),
            wbid: (b[2] >> 1) & 0x1f,
            native: b[2] & 0x01 != 0,
            fragment: b[3] & 0x80 != 0,
            last: b[3] & 0x40 != 0,
            wireless_info: b[3] & 0x20 != 0,
            radio_mac: b[3] & 0x10 != 0,
            keepalive: b[3] & 0x08 != 0,
            flags: b[3] & 0x07,
            frag_id: u16::from_be_bytes([b[4], b[5]]),
            frag_offset: u16::from_be_bytes([b[6], b[7]]) >> 3,
        }
    }

    /// Encodes the fixed eight bytes (the inverse of [`Header::parse`]).
    pub const fn encode(&self) -> [u8; FIXED_LEN] {
        let off = (self.frag_offset & 0x1fff) << 3;
        let id = self.frag_id.to_be_bytes();
        let off = off.to_be_bytes();
        [
            ((self.version & 0x0f) << 4) | (self.kind & 0x0f),
            ((self.hlen & 0x1f) << 3) | ((self.rid >> 2) & 0x07),
            ((self.rid & 0x03) << 6) | ((self.wbid & 0x1f) << 1) | (self.native as u8),
            ((self.fragment as u8) << 7)
                | ((self.last as u8) << 6)
                | ((self.wireless_info as u8) << 5)
                | ((self.radio_mac as u8) << 4)
                | ((self.keepalive as u8) << 3)
                | (self.flags & 0x07),
            id[0],
            id[1],
            off[0],
            off[1],
        ]
    }

    /// Header length in bytes.
    #[inline(always)]
    pub const fn header_bytes(&self) -> usize {
        self.hlen as usize * 4
    }
}

/// Space an optional field with a one-byte length prefix takes, padded to 4 bytes.
#[inline(always)]
pub const fn padded_option_len(value_len: u8) -> usize {
    (1 + value_len as usize + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_header_from_rfc_example() {
        // HLEN 2, K set: the header of every data channel keepalive.
        let h = Header::parse(&[0x00, 0x10, 0x00, 0x08, 0, 0, 0, 0]);
        assert_eq!(h.hlen, 2);
        assert!(h.keepalive);
        assert!(!h.native && !h.fragment && !h.radio_mac && !h.wireless_info);
        assert_eq!(h.header_bytes(), 8);
    }

    #[test]
    fn field_positions_match_the_bit_layout() {
        // HLEN 5, RID 0b10110 (22), WBID 1, T, F, L, W, M, flags 0b101,
        // fragment id 0xbeef, offset 0x1abc.
        let b = [
            0x00,
            (5 << 3) | 0b101,
            (0b10 << 6) | (1 << 1) | 1,
            0xf5,
            0xbe,
            0xef,
            0xd5,
            0xe0,
        ];
        let h = Header::parse(&b);
        assert_eq!((h.version, h.kind, h.hlen, h.rid, h.wbid), (0, 0, 5, 22, 1));
        assert!(h.native && h.fragment && h.last && h.wireless_info && h.radio_mac);
        assert!(!h.keepalive);
        assert_eq!(h.flags, 0b101);
        assert_eq!(h.frag_id, 0xbeef);
        assert_eq!(h.frag_offset, 0x1abc);
        assert_eq!(h.encode(), b);
    }

    #[test]
    fn encode_parse_round_trip() {
        for bits in 0u32..(1 << 12) {
            let h = Header {
                version: 0,
                kind: (bits & 1) as u8,
                hlen: ((bits >> 1) & 0x1f) as u8,
                rid: ((bits * 7) & 0x1f) as u8,
                wbid: ((bits * 13) & 0x1f) as u8,
                native: bits & 0x40 != 0,
                fragment: bits & 0x80 != 0,
                last: bits & 0x100 != 0,
                wireless_info: bits & 0x200 != 0,
                radio_mac: bits & 0x400 != 0,
                keepalive: bits & 0x800 != 0,
                flags: (bits & 7) as u8,
                frag_id: bits as u16 ^ 0x5a5a,
                frag_offset: (bits as u16 * 3) & 0x1fff,
            };
            assert_eq!(Header::parse(&h.encode()), h);
        }
    }

    #[test]
    fn optional_fields_pad_to_words() {
        assert_eq!(padded_option_len(6), 8); // Radio MAC: len + 6 bytes + 1 pad
        assert_eq!(padded_option_len(3), 4);
        assert_eq!(padded_option_len(4), 8);
        assert_eq!(padded_option_len(0), 4);
    }
}

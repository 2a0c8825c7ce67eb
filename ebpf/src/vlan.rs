//! IEEE 802.1Q / 802.1ad VLAN tags.
//!
//! A tag sits between the source MAC and the EtherType: TPID (2 bytes) then
//! TCI (2 bytes: PCP 3 bits, DEI 1 bit, VID 12 bits), so a tagged frame's
//! real EtherType is at offset 16.

/// Length of one tag (TPID + TCI).
pub const TAG_LEN: usize = 4;
/// Length of a singly tagged Ethernet header.
pub const TAGGED_HLEN: usize = crate::eth::HLEN + TAG_LEN;
/// 802.1Q customer tag.
pub const TPID_8021Q: u16 = 0x8100;
/// 802.1ad service tag.
pub const TPID_8021AD: u16 = 0x88a8;
/// Pre-standard QinQ tag some switches still emit.
pub const TPID_QINQ_LEGACY: u16 = 0x9100;
/// Largest valid VLAN id (4095 is reserved).
pub const VID_MAX: u16 = 4094;

/// Whether an EtherType announces a VLAN tag.
#[inline(always)]
pub const fn is_tag(ethertype: u16) -> bool {
    ethertype == TPID_8021Q || ethertype == TPID_8021AD || ethertype == TPID_QINQ_LEGACY
}

/// Builds a TCI from priority code point and VLAN id (DEI clear).
#[inline(always)]
pub const fn tci(pcp: u8, vid: u16) -> u16 {
    (((pcp & 7) as u16) << 13) | (vid & 0x0fff)
}

/// VLAN id of a TCI.
#[inline(always)]
pub const fn vid(tci: u16) -> u16 {
    tci & 0x0fff
}

/// Priority code point of a TCI.
#[inline(always)]
pub const fn pcp(tci: u16) -> u8 {
    (tci >> 13) as u8
}

/// The four bytes of an 802.1Q tag (TPID 0x8100) carrying `tci`.
#[inline(always)]
pub const fn tag(tci: u16) -> [u8; TAG_LEN] {
    let t = TPID_8021Q.to_be_bytes();
    let c = tci.to_be_bytes();
    [t[0], t[1], c[0], c[1]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tci_fields() {
        let t = tci(5, 200);
        assert_eq!(t, 0xa0c8);
        assert_eq!((pcp(t), vid(t)), (5, 200));
        assert_eq!(tag(t), [0x81, 0x00, 0xa0, 0xc8]);
        assert!(is_tag(0x8100) && is_tag(0x88a8) && is_tag(0x9100) && !is_tag(0x0800));
    }
}

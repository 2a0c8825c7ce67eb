//! Ethernet II header (IEEE 802.3 MAC header without FCS).

/// Length of a MAC address.
pub const ADDR_LEN: usize = 6;
/// Length of the untagged Ethernet header: destination, source, EtherType.
pub const HLEN: usize = 14;
/// Offset of the destination address.
pub const DST: usize = 0;
/// Offset of the source address.
pub const SRC: usize = 6;
/// Offset of the EtherType (or 802.3 length) field.
pub const ETHERTYPE: usize = 12;

/// IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EAPOL (802.1X): key frames belong to the control plane, never the client VLAN.
pub const ETHERTYPE_EAPOL: u16 = 0x888e;
/// Values below this are 802.3 length fields, not EtherTypes.
pub const ETHERTYPE_MIN: u16 = 0x0600;
/// Largest payload an 802.3 length field may describe.
pub const MAX_8023_LEN: usize = 1500;

/// Reads the EtherType field of an Ethernet header.
#[inline(always)]
pub const fn ethertype(h: &[u8; HLEN]) -> u16 {
    u16::from_be_bytes([h[ETHERTYPE], h[ETHERTYPE + 1]])
}

/// Whether a destination address is a group (broadcast or multicast) address.
#[inline(always)]
pub const fn is_group(addr: &[u8; ADDR_LEN]) -> bool {
    addr[0] & 1 == 1
}

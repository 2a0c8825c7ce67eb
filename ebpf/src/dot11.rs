//! IEEE 802.11 MAC header as tunnelled by CAPWAP (no FCS), and the LLC/SNAP
//! header that replaces an Ethernet EtherType in 802.11 data frames.

/// Length of the basic data/management header (FC, duration, A1-A3, seq ctl).
pub const BASE_HLEN: usize = 24;
/// Offset of address 1.
pub const ADDR1: usize = 4;
/// Offset of address 2.
pub const ADDR2: usize = 10;
/// Offset of address 3.
pub const ADDR3: usize = 16;
/// Offset of address 4 (present when ToDS and FromDS are both set).
pub const ADDR4: usize = 24;
/// Length of address 4.
pub const ADDR4_LEN: usize = 6;
/// Length of the QoS control field.
pub const QOS_LEN: usize = 2;
/// Length of the HT control field (QoS data frames with Order set).
pub const HT_LEN: usize = 4;
/// Frame type: management.
pub const TYPE_MGMT: u8 = 0;
/// Frame type: control.
pub const TYPE_CTRL: u8 = 1;
/// Frame type: data.
pub const TYPE_DATA: u8 = 2;
/// Subtype bit: QoS.
pub const SUBTYPE_QOS: u8 = 0x08;
/// Subtype bit: no data (null function frames).
pub const SUBTYPE_NULL: u8 = 0x04;
/// QoS control byte 0: A-MSDU present.
pub const QOS_AMSDU: u8 = 0x80;
/// QoS control byte 0: TID mask; the user priority is its low three bits.
pub const QOS_TID: u8 = 0x0f;
/// Length of an LLC/SNAP header including the EtherType.
pub const SNAP_LEN: usize = 8;
/// RFC 1042 encapsulation: `AA AA 03 00 00 00`.
pub const SNAP_RFC1042: [u8; 6] = [0xaa, 0xaa, 0x03, 0x00, 0x00, 0x00];
/// 802.1H bridge tunnel encapsulation: `AA AA 03 00 00 F8`.
pub const SNAP_BRIDGE_TUNNEL: [u8; 6] = [0xaa, 0xaa, 0x03, 0x00, 0x00, 0xf8];

/// The decoded frame control field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FrameControl {
    /// Protocol version (0).
    pub version: u8,
    /// Frame type.
    pub ftype: u8,
    /// Subtype.
    pub subtype: u8,
    /// To DS.
    pub to_ds: bool,
    /// From DS.
    pub from_ds: bool,
    /// Protected: the body is encrypted.
    pub protected: bool,
    /// Order (+HTC in QoS data frames).
    pub order: bool,
}

impl FrameControl {
    /// Decodes the two frame control bytes.
    #[inline(always)]
    pub const fn parse(b: &[u8; 2]) -> Self {
        Self {
            version: b[0] & 0x03,
            ftype: (b[0] >> 2) & 0x03,
            subtype: b[0] >> 4,
            to_ds: b[1] & 0x01 != 0,
            from_ds: b[1] & 0x02 != 0,
            protected: b[1] & 0x40 != 0,
            order: b[1] & 0x80 != 0,
        }
    }

    /// Encodes the two frame control bytes (other flag bits clear).
    pub const fn encode(&self) -> [u8; 2] {
        [
            (self.version & 3) | ((self.ftype & 3) << 2) | (self.subtype << 4),
            (self.to_ds as u8)
                | ((self.from_ds as u8) << 1)
                | ((self.protected as u8) << 6)
                | ((self.order as u8) << 7),
        ]
    }

    /// QoS data (subtype bit 3).
    #[inline(always)]
    pub const fn is_qos(&self) -> bool {
        self.subtype & SUBTYPE_QOS != 0
    }

    /// Null-function data frame: carries no payload.
    #[inline(always)]
    pub const fn is_null(&self) -> bool {
        self.subtype & SUBTYPE_NULL != 0
    }

    /// Whether address 4 is present (WDS: ToDS and FromDS).
    #[inline(always)]
    pub const fn has_addr4(&self) -> bool {
        self.to_ds && self.from_ds
    }

    /// Whether an HT control field follows QoS control.
    #[inline(always)]
    pub const fn has_ht(&self) -> bool {
        self.is_qos() && self.order
    }

    /// Offset of QoS control (meaningful when [`FrameControl::is_qos`]).
    #[inline(always)]
    pub const fn qos_offset(&self) -> usize {
        BASE_HLEN + if self.has_addr4() { ADDR4_LEN } else { 0 }
    }

    /// Length of a data frame's MAC header.
    #[inline(always)]
    pub const fn header_len(&self) -> usize {
        self.qos_offset()
            + if self.is_qos() { QOS_LEN } else { 0 }
            + if self.has_ht() { HT_LEN } else { 0 }
    }

    /// Offsets of (destination, source) address for a data frame, by ToDS/FromDS.
    #[inline(always)]
    pub const fn da_sa_offsets(&self) -> (usize, usize) {
        match (self.to_ds, self.from_ds) {
            // IBSS / direct: A1 = DA, A2 = SA, A3 = BSSID.
            (false, false) => (ADDR1, ADDR2),
            // Uplink: A1 = BSSID, A2 = SA, A3 = DA.
            (true, false) => (ADDR3, ADDR2),
            // Downlink: A1 = DA, A2 = BSSID, A3 = SA.
            (false, true) => (ADDR1, ADDR3),
            // WDS: A3 = DA, A4 = SA.
            (true, true) => (ADDR3, ADDR4),
        }
    }
}

impl FrameControl {
    /// Offset of the BSSID, if the DS bits put one in the header (WDS
    /// frames carry none).
    #[inline(always)]
    pub const fn bssid_offset(&self) -> Option<usize> {
        match (self.to_ds, self.from_ds) {
            (false, false) => Some(ADDR3),
            (true, false) => Some(ADDR1),
            (false, true) => Some(ADDR2),
            (true, true) => None,
        }
    }
}

/// Whether the first six body bytes are an LLC/SNAP header ferry strips.
#[inline(always)]
pub const fn is_snap(b: &[u8; 6]) -> bool {
    b[0] == 0xaa
        && b[1] == 0xaa
        && b[2] == 0x03
        && b[3] == 0x00
        && b[4] == 0x00
        && (b[5] == 0x00 || b[5] == 0xf8)
}

/// 802.11 user priority (0-7) from QoS control byte 0.
#[inline(always)]
pub const fn user_priority(qos0: u8) -> u8 {
    qos0 & 0x07
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fc(to: bool, from: bool, qos: bool, order: bool) -> FrameControl {
        FrameControl {
            ftype: TYPE_DATA,
            subtype: if qos { SUBTYPE_QOS } else { 0 },
            to_ds: to,
            from_ds: from,
            order,
            ..Default::default()
        }
    }

    #[test]
    fn header_lengths() {
        assert_eq!(fc(true, false, false, false).header_len(), 24);
        assert_eq!(fc(true, true, false, false).header_len(), 30);
        assert_eq!(fc(true, false, true, false).header_len(), 26);
        assert_eq!(fc(true, false, true, true).header_len(), 30);
        assert_eq!(fc(true, true, true, true).header_len(), 36);
        // Order without QoS adds no HT control field.
        assert_eq!(fc(true, false, false, true).header_len(), 24);
    }

    #[test]
    fn address_selection_by_ds_bits() {
        assert_eq!(
            fc(false, false, false, false).da_sa_offsets(),
            (ADDR1, ADDR2)
        );
        assert_eq!(
            fc(true, false, false, false).da_sa_offsets(),
            (ADDR3, ADDR2)
        );
        assert_eq!(
            fc(false, true, false, false).da_sa_offsets(),
            (ADDR1, ADDR3)
        );
        assert_eq!(fc(true, true, false, false).da_sa_offsets(), (ADDR3, ADDR4));
    }

    #[test]
    fn frame_control_round_trip_and_bits() {
        // QoS data (0x88), ToDS + Protected (0x41).
        let f = FrameControl::parse(&[0x88, 0x41]);
        assert_eq!((f.ftype, f.subtype), (TYPE_DATA, 8));
        assert!(f.to_ds && !f.from_ds && f.protected && !f.order);
        assert!(f.is_qos() && !f.is_null());
        assert_eq!(f.encode(), [0x88, 0x41]);
        // QoS null (0xc8).
        assert!(FrameControl::parse(&[0xc8, 0x01]).is_null());
        // Management (association request, 0x00).
        assert_eq!(FrameControl::parse(&[0x00, 0x00]).ftype, TYPE_MGMT);
    }

    #[test]
    fn snap_headers() {
        assert!(is_snap(&SNAP_RFC1042));
        assert!(is_snap(&SNAP_BRIDGE_TUNNEL));
        assert!(!is_snap(&[0xaa, 0xaa, 0x03, 0x00, 0x00, 0x01]));
        assert!(!is_snap(&[0x42, 0x42, 0x03, 0x00, 0x00, 0x00]));
        assert_eq!(user_priority(0x0d), 5);
    }
}

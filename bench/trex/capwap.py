"""CAPWAP data channel header (RFC 5415 section 4.3) as a scapy layer.

Only what ferry's data channel carries: the 8-byte header, optionally with
the Radio MAC Address option (M bit). Wireless Specific Information is not
built (ferry accepts it upstream; a generator has no use for it).

Bound to UDP port 5247, so scapy dissects captures of ferry's traffic, and
to the payload by the T bit: 802.3 (T=0) or native 802.11 (T=1).
"""

from scapy.fields import (
    BitField,
    ConditionalField,
    FieldLenField,
    ShortField,
    StrLenField,
    XBitField,
)
from scapy.layers.dot11 import Dot11
from scapy.layers.inet import UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, bind_layers

CAPWAP_DATA_PORT = 5247
WBID_IEEE80211 = 1


class CAPWAPData(Packet):
    """The CAPWAP header of a data channel frame."""

    name = "CAPWAP data"
    fields_desc = [
        BitField("version", 0, 4),
        BitField("ptype", 0, 4),  # 0 = clear text, 1 = DTLS
        BitField("hlen", 2, 5),  # header length in 4-byte words
        BitField("rid", 1, 5),
        BitField("wbid", WBID_IEEE80211, 5),
        BitField("T", 0, 1),  # native frame (802.11) follows
        BitField("F", 0, 1),
        BitField("L", 0, 1),
        BitField("W", 0, 1),
        BitField("M", 0, 1),
        BitField("K", 0, 1),  # keepalive
        XBitField("flags", 0, 3),
        ShortField("frag_id", 0),
        BitField("frag_offset", 0, 13),
        BitField("reserved", 0, 3),
        ConditionalField(
            FieldLenField("radio_mac_len", None, length_of="radio_mac", fmt="B"),
            lambda p: p.M == 1,
        ),
        ConditionalField(
            StrLenField("radio_mac", b"", length_from=lambda p: p.radio_mac_len),
            lambda p: p.M == 1,
        ),
        # Built empty (post_build pads); consumes the padding when dissecting.
        ConditionalField(
            StrLenField("pad", b"", length_from=lambda p: -(9 + p.radio_mac_len) % 4),
            lambda p: p.M == 1,
        ),
    ]

    def post_build(self, p, pay):
        # Options pad to a 4-byte boundary; HLEN counts the padded header.
        if len(p) % 4:
            p += b"\x00" * (4 - len(p) % 4)
        if self.hlen == 2 and len(p) != 8:
            b1 = p[1] & 0x07
            p = p[:1] + bytes([((len(p) // 4) << 3) | b1]) + p[2:]
        return p + pay

    def guess_payload_class(self, payload):
        return Dot11 if self.T == 1 else Ether


bind_layers(UDP, CAPWAPData, dport=CAPWAP_DATA_PORT)
bind_layers(UDP, CAPWAPData, sport=CAPWAP_DATA_PORT)

"""The packets of ferry's TRex profile, built with scapy alone.

One definition of the upstream workload, used three ways:

* ``ferry_capwap_up.py`` (the TRex profile) turns ``Plan.template`` and
  ``Plan.variables`` into streams with field-engine variables;
* ``Plan.packet(k)`` applies the same variables in Python, giving the k-th
  packet the field engine sends, so a test can replay the profile's packets
  through ``ferry replay`` without TRex;
* ``Plan.ferry_config`` writes the ferry configuration whose tunnel table
  matches the profile's APs.

The field engine steps every variable by one per packet, each wrapping at
its own range, so packet k comes from AP ``k % aps`` with source port
``port + k % ports`` and carries station ``k % stations``. ``ports`` must
divide ``aps`` (an AP always uses the same port, which the tunnel table
names) and ``aps`` must divide ``stations`` (a station always arrives from
the same AP, so ferry learns it once and never sees it roam).

Addresses: APs from ``ap_base`` upwards (198.19.0.1, ...), the AC at
198.18.0.1, all in the benchmarking range 198.18.0.0/15.
"""

import ipaddress
import struct
from dataclasses import dataclass

from scapy.layers.dot11 import Dot11, Dot11QoS
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import LLC, SNAP, Dot1Q, Ether

from capwap import CAPWAP_DATA_PORT, CAPWAPData

#: Client frame sizes (bytes, without FCS) of the IMIX mix, and their weights.
IMIX = ((64, 7), (576, 4), (1500, 1))
#: Payload formats: an 802.3 frame (T=0) or a native 802.11 data frame (T=1).
PAYLOADS = ("802.3", "802.11")


def station_mac(i):
    """Station i's MAC: 02:5b and i as 32 bits (the live bench's scheme)."""
    return "02:5b:" + ":".join(f"{b:02x}" for b in struct.pack(">I", i))


@dataclass(frozen=True)
class Variable:
    """One field-engine variable: a big-endian counter written at ``offset``.

    It takes ``min_value``, ``min_value + 1``, ... ``max_value`` and wraps.
    """

    name: str
    min_value: int
    max_value: int
    size: int
    offset: int

    def value(self, k):
        """The value in packet k."""
        return self.min_value + k % (self.max_value - self.min_value + 1)


@dataclass(frozen=True)
class Plan:
    """The upstream workload: many APs, each with its stations."""

    aps: int = 256
    stations: int = 4096
    ports: int = 16
    payload: str = "802.3"
    ap_base: str = "198.19.0.1"
    port: int = 12222
    ac: str = "198.18.0.1"
    ac_mac: str = "02:ac:00:00:00:01"
    router_mac: str = "02:a9:00:00:00:01"
    gateway_mac: str = "02:c0:00:00:00:01"
    bssid: str = "02:bb:00:00:00:01"
    rid: int = 1
    vlan: int = 200

    def check(self):
        """Raises ValueError for a plan the field engine cannot send."""
        if self.payload not in PAYLOADS:
            raise ValueError(f"payload must be one of {PAYLOADS}, not {self.payload!r}")
        if self.aps < 1 or self.ports < 1 or self.stations < 1:
            raise ValueError("aps, ports and stations must be at least 1")
        if self.aps % self.ports:
            raise ValueError(f"ports ({self.ports}) must divide aps ({self.aps})")
        if self.stations % self.aps:
            raise ValueError(f"aps ({self.aps}) must divide stations ({self.stations})")
        last = ipaddress.IPv4Address(self.ap_base) + self.aps - 1
        if last not in ipaddress.IPv4Network("198.18.0.0/15"):
            raise ValueError(f"AP addresses run out of 198.18.0.0/15 at {last}")
        if self.port + self.ports - 1 > 0xFFFF:
            raise ValueError("AP ports run past 65535")

    def ap_address(self, i):
        """AP i's address."""
        return str(ipaddress.IPv4Address(self.ap_base) + i)

    def ap_port(self, i):
        """AP i's CAPWAP data source port."""
        return self.port + i % self.ports

    def inner(self, size):
        """Station 0's client frame of ``size`` bytes (without FCS), 802.3.

        An IPv4/UDP packet from the station to a host behind the gateway,
        padded to size. 60 bytes at least, as on a wire.
        """
        size = max(size, 60)
        frame = (
            Ether(dst=self.gateway_mac, src=station_mac(0))
            / IP(src="198.18.128.1", dst="198.18.200.1", ttl=64)
            / UDP(sport=4000, dport=4001)
        )
        return frame / (b"\x00" * (size - len(frame)))

    def template(self, size):
        """AP 0's CAPWAP frame carrying station 0's ``size``-byte client frame."""
        self.check()
        client = self.inner(size)
        outer = (
            Ether(dst=self.ac_mac, src=self.router_mac)
            / IP(src=self.ap_address(0), dst=self.ac, ttl=64, flags="DF", id=0)
            / UDP(sport=self.ap_port(0), dport=CAPWAP_DATA_PORT, chksum=0)
        )
        if self.payload == "802.3":
            return outer / CAPWAPData(rid=self.rid) / client
        # To-DS QoS data: addr1 BSSID, addr2 SA (station), addr3 DA.
        body = client[Ether].payload
        dot11 = (
            Dot11(type=2, subtype=8, FCfield="to-DS", addr1=self.bssid,
                  addr2=station_mac(0), addr3=self.gateway_mac)
            / Dot11QoS(TID=0)
            / LLC(dsap=0xAA, ssap=0xAA, ctrl=3)
            / SNAP(OUI=0, code=0x0800)
            / body
        )
        return outer / CAPWAPData(rid=self.rid, T=1) / dot11

    def station_offset(self, size):
        """Byte offset of the station MAC's low 4 bytes in the template."""
        raw = bytes(self.template(size))
        mac = bytes.fromhex(station_mac(0).replace(":", ""))
        at = raw.find(mac, 14 + 20 + 8 + 8)
        if at < 0:
            raise RuntimeError("station MAC not found in the template")
        return at + 2

    def variables(self, size):
        """The field-engine variables, in the order the profile declares them."""
        ip_off = 14
        return [
            Variable("ap", int(ipaddress.IPv4Address(self.ap_base)),
                     int(ipaddress.IPv4Address(self.ap_base)) + self.aps - 1, 4, ip_off + 12),
            Variable("port", self.port, self.port + self.ports - 1, 2, ip_off + 20),
            Variable("station", 0, self.stations - 1, 4, self.station_offset(size)),
        ]

    def packet(self, k, size):
        """The k-th packet the profile's stream of ``size`` sends, as bytes.

        The template with every variable written, and the IPv4 header
        checksum fixed (what STLVmFixIpv4 does). UDP checksum is 0.
        """
        raw = bytearray(bytes(self.template(size)))
        for v in self.variables(size):
            raw[v.offset:v.offset + v.size] = v.value(k).to_bytes(v.size, "big")
        ip = IP(bytes(raw[14:34]))
        del ip.chksum
        raw[14:34] = bytes(ip)[:20]
        return bytes(raw)

    def client_frame(self, k, size):
        """What ferry must send to the client side for packet k: the client
        frame, tagged into the plan's VLAN (802.11 converted to 802.3)."""
        client = bytearray(bytes(self.inner(size)))
        client[6:12] = bytes.fromhex(station_mac(k % self.stations).replace(":", ""))
        tag = struct.pack(">HH", 0x8100, self.vlan)
        return bytes(client[:12]) + tag + bytes(client[12:])

    def streams(self, size):
        """(size, weight) of each stream: one size or the IMIX mix."""
        if size == "imix":
            return IMIX
        return ((int(size), 1),)

    def ferry_config(self, name="ac1", ap_side="eth0", client_side="eth0"):
        """A ferry configuration with one tunnel per AP of the plan."""
        self.check()
        lines = [
            "# Written by bench/trex/flows.py: the tunnels of ferry's TRex profile.",
            "[node]",
            f'name = "{name}"',
            f'addresses = ["{self.ac}"]',
            f"data_port = {CAPWAP_DATA_PORT}",
            "",
            "[interfaces]",
            f'ap_side = "{ap_side}"',
            f'client_side = "{client_side}"',
            "",
            "[forwarding]",
            f"default_vlan = {self.vlan}",
            f"station_limit = {max(512, self.stations // self.aps)}",
            f"station_capacity = {max(1024, self.stations * 2)}",
            "",
            "[downstream]",
            f'next_hop_mac = "{self.router_mac}"',
            f'source_mac = "{self.ac_mac}"',
            "",
        ]
        for i in range(self.aps):
            lines += [
                "[[tunnel]]",
                f'ap = "ap{i}"',
                f'address = "{self.ap_address(i)}"',
                f"port = {self.ap_port(i)}",
                "",
            ]
        return "\n".join(lines)

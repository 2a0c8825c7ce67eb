"""The TRex profile's and the pktgen script's packets, through the real ferry.

Builds the packets the TRex profile's field engine sends (flows.Plan, no
TRex needed) and the frames the pktgen script configures (its dry run,
parsed), replays them through the kernel-loaded programs with ``ferry
replay``, and checks every output frame against what ferry must send:

* upstream: the client frame, tagged into VLAN 200, byte for byte;
* downstream: a CAPWAP frame to the AP that station was learned on, from
  the AC's data port, carrying the untagged client frame.

Run by bench/tests/profiles.rs with FERRY set to the binary; needs root.
"""

import json
import os
import struct
import subprocess
import tempfile
import unittest

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.utils import rdpcap, wrpcap

from capwap import CAPWAP_DATA_PORT, CAPWAPData
from flows import PAYLOADS, Plan, station_mac

HERE = os.path.dirname(os.path.abspath(__file__))
PKTGEN = os.path.join(HERE, "..", "pktgen", "pktgen_capwap_down.sh")
PKTGEN_MAGIC = 0xBE9BE955


def ferry():
    path = os.environ.get("FERRY")
    if not path or not os.path.exists(path):
        raise unittest.SkipTest("FERRY must name the ferry binary")
    return path


def replay(plan, frames, tmp):
    """Replays frames (bytes) through ferry with the plan's tunnels.

    Returns the report (JSON) and the frames ferry sent, as bytes.
    """
    cfg = os.path.join(tmp, "ferry.toml")
    with open(cfg, "w") as f:
        f.write(plan.ferry_config())
    src = os.path.join(tmp, "in.pcap")
    out = os.path.join(tmp, "out.pcap")
    wrpcap(src, [Ether(f) for f in frames])
    r = subprocess.run([ferry(), "replay", "--config", cfg, "--in", src, "--out", out, "--json"],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise AssertionError(f"ferry replay failed: {r.stderr}")
    return json.loads(r.stdout), [bytes(p) for p in rdpcap(out)]


def pktgen_devices(args):
    """The pktgen script's dry run, as {device: {setting: value}}."""
    r = subprocess.run(["bash", PKTGEN, "-D", *args], capture_output=True, text=True, check=True)
    devices = {}
    for line in r.stdout.splitlines():
        _, target, cmd = line.split(" ", 2)
        if "@" in target:
            key, _, value = cmd.partition(" ")
            devices.setdefault(target, {})[key] = value
    return devices


def pktgen_frames(dev, n):
    """The first n frames pktgen builds for one device's settings.

    pktgen counts the destination MAC up by one per frame and wraps after
    dst_mac_count; the payload starts with its header (magic, sequence,
    time).
    """
    first = int(dev["dst_mac"].replace(":", ""), 16)
    count = int(dev["dst_mac_count"])
    size = int(dev["pkt_size"])
    frames = []
    for k in range(n):
        mac = (first + k % count).to_bytes(6, "big")
        head = (
            Ether(dst=mac.hex(":"), src=dev["src_mac"])
            / Dot1Q(vlan=int(dev["vlan_id"]), prio=int(dev["vlan_p"]))
            / IP(src=dev["src_min"], dst=dev["dst"], ttl=32)
            / UDP(sport=int(dev["udp_src_min"]), dport=int(dev["udp_dst_min"]), chksum=0)
            / struct.pack(">IIII", PKTGEN_MAGIC, k, 0, 0)
        )
        frames.append(bytes(head) + b"\x00" * (size - len(head)))
    return frames


class Upstream(unittest.TestCase):
    """The TRex profile's packets: every one forwarded, exactly."""

    def check(self, plan, size, n):
        frames = [plan.packet(k, size) for k in range(n)]
        with tempfile.TemporaryDirectory() as tmp:
            report, out = replay(plan, frames, tmp)
        self.assertEqual(report["reasons"].get("forwarded"), n, report["reasons"])
        self.assertEqual(report["reasons"].get("received"), n, report["reasons"])
        self.assertEqual(len(out), n)
        for k, got in enumerate(out):
            self.assertEqual(got.hex(), plan.client_frame(k, size).hex(), f"packet {k}")
        # Every AP and station of the plan took part.
        self.assertEqual(len([t for t in report["tunnels"] if t["rx_packets"]]), plan.aps)

    def test_every_payload_and_size(self):
        for payload in PAYLOADS:
            for size in (64, 576, 1500):
                with self.subTest(payload=payload, size=size):
                    self.check(Plan(aps=16, stations=64, ports=4, payload=payload), size, 128)

    def test_variables_cover_their_ranges_and_fix_the_ip_checksum(self):
        plan = Plan(aps=8, stations=32, ports=2)
        seen = set()
        for k in range(64):
            p = Ether(plan.packet(k, 64))
            self.assertEqual(p[IP].src, plan.ap_address(k % 8))
            self.assertEqual(p[UDP].sport, plan.ap_port(k % 8))
            self.assertEqual(p[UDP].dport, CAPWAP_DATA_PORT)
            self.assertEqual(p[CAPWAPData].payload.src, station_mac(k % 32))
            chk = p[IP].chksum
            del p[IP].chksum
            self.assertEqual(Ether(bytes(p))[IP].chksum, chk)
            seen.add((p[IP].src, p[CAPWAPData].payload.src))
        self.assertEqual(len(seen), 32)

    def test_impossible_plans_are_refused(self):
        for bad in (Plan(aps=10, ports=4), Plan(aps=16, stations=20), Plan(payload="x"),
                    Plan(aps=200000)):
            with self.subTest(plan=bad), self.assertRaises(ValueError):
                bad.check()


def load_profile_with_recording_api():
    """Imports the TRex profile against a stand-in for trex_stl_lib.api that
    records what the profile asks TRex for (TRex is not installed here)."""
    import importlib
    import sys
    import types

    api = types.ModuleType("trex_stl_lib.api")

    def recorder(kind):
        def make(*args, **kwargs):
            return (kind, args, kwargs)
        return make

    for name in ("STLPktBuilder", "STLScVmRaw", "STLStream", "STLTXCont", "STLVmFixIpv4",
                 "STLVmFlowVar", "STLVmWrFlowVar"):
        setattr(api, name, recorder(name))
    api.STLProfile = lambda streams: types.SimpleNamespace(get_streams=lambda: streams)
    sys.modules["trex_stl_lib"] = types.ModuleType("trex_stl_lib")
    sys.modules["trex_stl_lib.api"] = api
    sys.modules.pop("ferry_capwap_up", None)
    return importlib.import_module("ferry_capwap_up")


class Profile(unittest.TestCase):
    """The TRex profile asks the field engine for the plan's variables."""

    def test_streams_write_the_plans_variables(self):
        profile = load_profile_with_recording_api().register()
        streams = profile.get_streams(0, ["--aps", "16", "--stations", "64", "--ports", "4",
                                          "--size", "imix", "--payload", "802.11"])
        plan = Plan(aps=16, stations=64, ports=4, payload="802.11")
        self.assertEqual(len(streams), 3)
        for (size, weight), (_, _, st) in zip(((64, 7), (576, 4), (1500, 1)), streams):
            self.assertEqual(st["mode"][2], {"pps": weight})
            builder = st["packet"][2]
            self.assertEqual(bytes(builder["pkt"]), bytes(plan.template(size)))
            vm = builder["vm"][1][0]
            flow = [c[2] for c in vm if c[0] == "STLVmFlowVar"]
            write = [c[2] for c in vm if c[0] == "STLVmWrFlowVar"]
            for v, f, w in zip(plan.variables(size), flow, write, strict=True):
                self.assertEqual((f["name"], f["min_value"], f["max_value"], f["size"], f["op"]),
                                 (v.name, v.min_value, v.max_value, v.size, "inc"))
                self.assertEqual((w["fv_name"], w["pkt_offset"]), (v.name, v.offset))
            self.assertEqual(vm[-1][0], "STLVmFixIpv4")

    def test_bad_tunables_are_refused(self):
        profile = load_profile_with_recording_api().register()
        with self.assertRaises(ValueError):
            profile.get_streams(0, ["--aps", "10", "--ports", "4"])


class Downstream(unittest.TestCase):
    """The pktgen script's frames, to stations the TRex profile's traffic
    taught ferry: each goes down the tunnel of its station's AP."""

    def test_pktgen_frames_reach_their_stations_aps(self):
        plan = Plan(aps=16, stations=64, ports=4)
        devices = pktgen_devices(["-i", "fcl0", "-c", "64", "-t", "2", "-s", "64"])
        self.assertEqual(sorted(devices), ["fcl0@0", "fcl0@1"])
        up = [plan.packet(k, 64) for k in range(plan.stations)]
        down = [f for d in devices.values() for f in pktgen_frames(d, 80)]
        with tempfile.TemporaryDirectory() as tmp:
            report, out = replay(plan, up + down, tmp)
        self.assertEqual(report["reasons"].get("down_received"), len(down), report["reasons"])
        self.assertEqual(report["reasons"].get("down_forwarded"), len(down), report["reasons"])
        out = out[len(up):]
        self.assertEqual(len(out), len(down))
        for frame, got in zip(down, out):
            sent = Ether(frame)
            station = int(sent.dst.replace(":", ""), 16) - 0x025B00000000
            ap = station % plan.aps
            p = Ether(got)
            self.assertEqual(p[IP].src, plan.ac)
            self.assertEqual(p[IP].dst, plan.ap_address(ap))
            self.assertEqual(p[UDP].sport, CAPWAP_DATA_PORT)
            self.assertEqual(p[UDP].dport, plan.ap_port(ap))
            self.assertEqual(p[CAPWAPData].T, 0)
            untagged = frame[:12] + frame[16:]
            self.assertEqual(bytes(p[CAPWAPData].payload).hex(), untagged.hex())

    def test_bad_options_are_refused(self):
        for args in (["-c", "64"], ["-i", "x", "-v", "5000"], ["-i", "x", "-s", "40"],
                     ["-i", "x", "-t", "two"]):
            with self.subTest(args=args):
                r = subprocess.run(["bash", PKTGEN, "-D", *args], capture_output=True,
                                   text=True, check=False)
                self.assertNotEqual(r.returncode, 0)
                self.assertIn("error", r.stderr)


if __name__ == "__main__":
    unittest.main()

"""Writes the TRex profile's ferry configuration and a capture of its packets.

    python3 bench/trex/capwap_pcap.py --config ferry.toml --pcap up.pcap \\
        --aps 256 --stations 4096 --ports 16 --size imix --count 10000

The configuration has one tunnel per AP of the profile (its address and
port); put the AC's interfaces in it with --ap-side/--client-side. The
capture holds the first --count packets the profile's streams send, for
``ferry replay`` or tcpreplay; the same tunables as the profile's ``-t``.
"""

import argparse
import sys

from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from flows import PAYLOADS, Plan


def main():
    d = Plan()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", help="write the ferry configuration here")
    p.add_argument("--pcap", help="write the profile's packets here")
    p.add_argument("--count", type=int, default=1000, help="packets in the capture")
    p.add_argument("--aps", type=int, default=d.aps)
    p.add_argument("--stations", type=int, default=d.stations)
    p.add_argument("--ports", type=int, default=d.ports)
    p.add_argument("--size", default="64", help="client frame bytes, or imix")
    p.add_argument("--payload", default=d.payload, choices=PAYLOADS)
    p.add_argument("--ap-base", default=d.ap_base)
    p.add_argument("--ac", default=d.ac)
    p.add_argument("--ap-side", default="eth0", help="ferry's AP-side interface")
    p.add_argument("--client-side", default="eth0", help="ferry's client-side interface")
    a = p.parse_args()
    if not a.config and not a.pcap:
        p.error("nothing to do: give --config, --pcap or both")
    plan = Plan(aps=a.aps, stations=a.stations, ports=a.ports, payload=a.payload,
                ap_base=a.ap_base, ac=a.ac)
    try:
        plan.check()
        sizes = [s for s, w in plan.streams(a.size) for _ in range(w)]
    except ValueError as e:
        p.error(str(e))
    if a.config:
        with open(a.config, "w") as f:
            f.write(plan.ferry_config(ap_side=a.ap_side, client_side=a.client_side))
        print(f"wrote {a.config}: {plan.aps} tunnels", file=sys.stderr)
    if a.pcap:
        # The streams interleaved by weight; each counts its own packets.
        sent = {}
        frames = []
        for i in range(a.count):
            size = sizes[i % len(sizes)]
            k = sent.get(size, 0)
            sent[size] = k + 1
            frames.append(Ether(plan.packet(k, size)))
        wrpcap(a.pcap, frames)
        print(f"wrote {a.pcap}: {a.count} packets", file=sys.stderr)


if __name__ == "__main__":
    main()

"""TRex STL profile: CAPWAP data from many APs and stations towards ferry.

Upstream only (AP side to AC); the downstream client-VLAN direction is
bench/pktgen. The packets and the field engine's variables come from
flows.py, which a test drives without TRex, replaying the same packets
through ``ferry replay``.

    trex> start -f bench/trex/ferry_capwap_up.py -m 10mpps --port 0 \\
              -t aps=256,stations=4096,ports=16,size=imix,payload=802.3

Tunables (``-t``): aps, stations, ports, size (client frame bytes, 60 to
1500, or ``imix`` = 64/576/1500 at 7:4:1), payload (802.3 or 802.11),
ap_base, ac, ac_mac, router_mac. Write ferry's matching configuration with
``python3 bench/trex/capwap_pcap.py --config ferry.toml``.

On a multi-core TRex the field engine splits the variables' ranges across
its cores. The AP addresses and ports vary per packet, so the NIC's RSS
hash on the ferry box spreads the flows over all its queues.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from trex_stl_lib.api import (  # noqa: E402  (the path above finds flows)
    STLPktBuilder,
    STLProfile,
    STLScVmRaw,
    STLStream,
    STLTXCont,
    STLVmFixIpv4,
    STLVmFlowVar,
    STLVmWrFlowVar,
)

from flows import Plan  # noqa: E402


def parse(tunables):
    """The profile's tunables as a Plan and a size."""
    p = argparse.ArgumentParser(
        prog="ferry_capwap_up.py",
        description="CAPWAP data from many APs and stations towards ferry",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d = Plan()
    p.add_argument("--aps", type=int, default=d.aps)
    p.add_argument("--stations", type=int, default=d.stations)
    p.add_argument("--ports", type=int, default=d.ports)
    p.add_argument("--size", default="64", help="client frame bytes, or imix")
    p.add_argument("--payload", default=d.payload, choices=("802.3", "802.11"))
    p.add_argument("--ap_base", default=d.ap_base)
    p.add_argument("--ac", default=d.ac)
    p.add_argument("--ac_mac", default=d.ac_mac)
    p.add_argument("--router_mac", default=d.router_mac)
    a = p.parse_args(tunables or [])
    plan = Plan(aps=a.aps, stations=a.stations, ports=a.ports, payload=a.payload,
                ap_base=a.ap_base, ac=a.ac, ac_mac=a.ac_mac, router_mac=a.router_mac)
    plan.check()
    return plan, a.size


def stream(plan, size, weight):
    """One continuous stream of client frames of ``size`` bytes."""
    vm = []
    for v in plan.variables(size):
        vm.append(STLVmFlowVar(name=v.name, min_value=v.min_value,
                               max_value=v.max_value, size=v.size, op="inc"))
    for v in plan.variables(size):
        vm.append(STLVmWrFlowVar(fv_name=v.name, pkt_offset=v.offset))
    vm.append(STLVmFixIpv4(offset="IP"))
    return STLStream(
        packet=STLPktBuilder(pkt=plan.template(size), vm=STLScVmRaw(vm)),
        # Relative rates: -m scales the profile's total, keeping the mix.
        mode=STLTXCont(pps=weight),
    )


class FerryCapwapUp:
    """The profile TRex loads through register()."""

    def get_streams(self, direction=0, tunables=None, **kwargs):
        plan, size = parse(tunables)
        return STLProfile([stream(plan, s, w) for s, w in plan.streams(size)]).get_streams()


def register():
    """TRex's entry point."""
    return FerryCapwapUp()

#!/usr/bin/env bash
# The main job, until the namespace lab exists: replay the sample capture
# through ferry's real XDP program with the sample configuration, then show
# what left on the client VLAN.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/bootstrap.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked -p ferry
out=target/sample-client-vlan.pcap
target/release/ferry replay --config deploy/examples/ferry.toml \
    --in deploy/examples/sample.pcap --out "$out" "$@"
if command -v tshark >/dev/null; then
    echo
    echo "first frames of $out (tshark):"
    tshark -o capwap.swap_fc:FALSE -r "$out" -c 8 2>/dev/null || true
fi

#!/usr/bin/env bash
# The test command: bootstrap, then format check, clippy and the whole test
# suite (unit, differential BPF_PROG_TEST_RUN, config, replay, live veth).
# Needs root: the tests load XDP programs and create network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/bootstrap.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The XDP programs themselves only exist for the BPF target.
(cd ebpf && cargo +"$(../deploy/bpf-toolchain.sh)" clippy --locked --target bpfel-unknown-none \
    -Z build-std=core --bins -- -D warnings)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# One closing line for the whole suite (cargo ends on an empty doc-test run).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"

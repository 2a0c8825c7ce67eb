#!/usr/bin/env bash
# Installs everything ferry's build and tests need on Debian 12, as root.
# Idempotent: each step checks first, so a second run takes seconds.
#
#   deploy/bootstrap.sh            # install what is missing
#   FERRY_BOOTSTRAP_QUIET=1 ...    # only print what it installs
set -euo pipefail

BPF_LINKER_VERSION=0.13.0
LLVM_DIR=/usr/lib/llvm-22

say() { [ "${FERRY_BOOTSTRAP_QUIET:-0}" = 1 ] || echo "bootstrap: $*" >&2; }
die() { echo "bootstrap: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (packages, BPF and network namespaces need it)"
[ -r /etc/debian_version ] || die "this script targets Debian 12"

# --- Debian packages -------------------------------------------------------
PKGS=(llvm-22-dev libpolly-22-dev zlib1g-dev libzstd-dev build-essential pkg-config
      iproute2 ethtool procps tshark tcpdump ca-certificates
      python3 python3-scapy  # bench/trex and bench/pktgen checks (test_profiles.py)
      keepalived)  # the comparator of `ferry-bench failover`; its service starts only with a config
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # tshark asks whether non-root users may capture; the answer does not matter here.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Rust toolchains -------------------------------------------------------
export PATH="$HOME/.cargo/bin:$PATH"
command -v rustup >/dev/null || die "rustup not found; install rustup (with a stable toolchain) first"
command -v cargo >/dev/null || die "cargo not found; run 'rustup default stable'"

# The eBPF object is built with the pinned nightly (LLVM 22, matching
# bpf-linker). Use the machine's 'nightly' when it is that build.
BPF_TOOLCHAIN=$("$(dirname "$0")/bpf-toolchain.sh")
if ! rustup run "$BPF_TOOLCHAIN" rustc -V >/dev/null 2>&1; then
    say "installing $BPF_TOOLCHAIN"
    rustup toolchain install "$BPF_TOOLCHAIN" --profile minimal --component rust-src,clippy >/dev/null
fi
for c in rust-src clippy; do
    if ! rustup component list --toolchain "$BPF_TOOLCHAIN" --installed 2>/dev/null | grep -q "^$c"; then
        say "adding $c to $BPF_TOOLCHAIN"
        rustup component add "$c" --toolchain "$BPF_TOOLCHAIN" >/dev/null
    fi
done
for c in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$c"; then
        say "adding $c to the default toolchain"
        rustup component add "$c" >/dev/null
    fi
done

# --- bpf-linker, built against Debian's LLVM 22 ----------------------------
need_linker=1
if command -v bpf-linker >/dev/null \
    && bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION" \
    && ldd "$(command -v bpf-linker)" 2>/dev/null | grep -q "libLLVM.so.22\|libLLVM-22"; then
    need_linker=0
fi
if [ $need_linker = 1 ]; then
    say "building bpf-linker $BPF_LINKER_VERSION against LLVM 22 (about a minute)"
    LLVM_PREFIX=$LLVM_DIR LLVM_SYS_221_PREFIX=$LLVM_DIR \
        cargo install --quiet --locked --force "bpf-linker@$BPF_LINKER_VERSION" \
        --no-default-features --features llvm-22
fi

# --- BPF filesystem (pinning) ----------------------------------------------
if ! mountpoint -q /sys/fs/bpf 2>/dev/null; then
    say "mounting bpffs on /sys/fs/bpf"
    mount -t bpf bpf /sys/fs/bpf || say "could not mount bpffs (only 'ferry run' pinning needs it)"
fi

say "ready (eBPF toolchain: $BPF_TOOLCHAIN)"

#!/usr/bin/env bash
# Prints the toolchain that builds ferry's eBPF object: the machine's
# 'nightly' when it is the pinned build, else the dated pinned nightly.
# dataplane/build.rs applies the same rule.
PINNED_NIGHTLY=nightly-2026-05-20
PINNED_COMMIT=e50aa6fba
if rustup run nightly rustc -V 2>/dev/null | grep -q "$PINNED_COMMIT"; then
    echo nightly
else
    echo "$PINNED_NIGHTLY"
fi

//! Builds ferry's eBPF object with aya-build and leaves it in OUT_DIR for
//! `include_bytes_aligned!`.
//!
//! The eBPF toolchain is pinned: bpf-linker is built against Debian's LLVM 22,
//! and a nightly with a newer LLVM would emit bitcode it cannot read. We use
//! the machine's `nightly` when it is the pinned build, else the dated
//! toolchain the bootstrap installs. `FERRY_BPF_TOOLCHAIN` overrides both.

use std::process::Command;

use aya_build::{Package, Toolchain};

/// rustc commit of nightly-2026-05-20 (rustc 1.97.0-nightly, LLVM 22.1).
const PINNED_COMMIT: &str = "e50aa6fba";
/// The dated toolchain name of the same build.
const PINNED_TOOLCHAIN: &str = "nightly-2026-05-20";

fn pick_toolchain() -> String {
    println!("cargo:rerun-if-env-changed=FERRY_BPF_TOOLCHAIN");
    if let Ok(t) = std::env::var("FERRY_BPF_TOOLCHAIN") {
        return t;
    }
    let nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output();
    match nightly {
        Ok(out) if String::from_utf8_lossy(&out.stdout).contains(PINNED_COMMIT) => {
            "nightly".to_string()
        }
        _ => PINNED_TOOLCHAIN.to_string(),
    }
}

fn main() -> anyhow::Result<()> {
    let toolchain = pick_toolchain();
    // aya-build turns every stderr line of the inner cargo into a warning;
    // keep progress lines out so real compiler warnings stand out.
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../ebpf");
    aya_build::build_ebpf(
        [Package {
            name: "ferry-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        Toolchain::Custom(&toolchain),
    )
}

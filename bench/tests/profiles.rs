//! The TRex profile's and the pktgen script's packets through the real
//! `ferry replay` (bench/trex/test_profiles.py, run with Debian's python3
//! and scapy, which deploy/bootstrap.sh installs). Needs root.

#![allow(clippy::unwrap_used)]

mod common;

use std::{path::PathBuf, process::Command};

#[test]
fn trex_and_pktgen_packets_are_forwarded_exactly() {
    let trex = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("trex");
    let out = Command::new("/usr/bin/python3")
        .args(["-m", "unittest", "-v", "test_profiles"])
        .current_dir(&trex)
        .env("FERRY", common::ferry())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    // unittest exits 0 with every test skipped; a skip here is a failure.
    assert!(!text.contains("skipped"), "{text}");
    assert!(text.contains("Ran 7 tests"), "{text}");
}

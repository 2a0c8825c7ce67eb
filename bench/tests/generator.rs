//! `ferry-bench gen --live` on its own: out of a veth in a namespace of the
//! test's, into the live bench's checking sink on the peer. Every frame it
//! reports sent arrives, and arrives as the workload's frame (headers,
//! station MAC against the trailer's flow), in both directions, at full
//! rate and paced. Needs root, like every lab test.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use ferry_bench::live::{
    Sizes,
    frames::{self, Direction, Mask, Payload},
    rig::Rig,
};
use ferry_dataplane::netns::Netns;
use ferry_ebpf::loadgen::{CLASSES, PROG_SINK, SinkSettings};

const APS: u32 = 8;

/// A 2-queue veth pair g0 (in `a`) to g1 (in `b`), and a rig whose sink on
/// g1 expects the generator's own frames for `dir`.
fn lab(a: &Netns, b: &Netns, dir: Direction) -> Rig {
    a.exec(&[
        "ip",
        "link",
        "add",
        "g0",
        "numtxqueues",
        "2",
        "numrxqueues",
        "2",
        "type",
        "veth",
        "peer",
        "name",
        "g1",
        "numtxqueues",
        "2",
        "numrxqueues",
        "2",
        "netns",
        b.name(),
    ])
    .unwrap();
    a.exec(&["ip", "link", "set", "g0", "mtu", "2000", "up"])
        .unwrap();
    b.exec(&["ip", "link", "set", "g1", "mtu", "2000", "up"])
        .unwrap();
    let classes = Sizes::Imix.classes();
    let mut rig = Rig::load(APS * classes.len() as u32).unwrap();
    let mut lens = [0u16; CLASSES];
    let mut expects = Vec::new();
    for (c, (len, _)) in classes.iter().enumerate() {
        for k in 0..APS {
            let f = frames::input(dir, Payload::Dot3, *len, k, k);
            lens[c] = f.len() as u16;
            expects.push(frames::expect(&f, k, Mask::Exact).unwrap());
        }
    }
    let s = SinkSettings {
        keys: APS,
        pad: 0,
        lens,
    };
    rig.set_sink(s, &expects).unwrap();
    rig.attach(b, PROG_SINK, "g1").unwrap();
    rig
}

/// Runs `ferry-bench gen --live` with `extra`; the frames it reports.
fn generate(ns: &Netns, dir: &str, extra: &[&str]) -> u64 {
    let aps = APS.to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_ferry-bench"))
        .args(["gen", "--live", "--netns", ns.name(), "--iface", "g0"])
        .args([
            "--direction",
            dir,
            "--aps",
            &aps,
            "--stations",
            "64",
            "--size",
            "imix",
        ])
        .args(["--threads", "2", "--json"])
        .args(extra)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(err.contains("Mpps"), "no progress lines: {err}");
    v["frames"].as_u64().unwrap()
}

#[test]
fn every_frame_gen_live_reports_arrives_as_the_workloads_frame() {
    for (dir, name) in [(Direction::Up, "up"), (Direction::Down, "down")] {
        let (a, b) = (Netns::new("gena").unwrap(), Netns::new("genb").unwrap());
        let mut rig = lab(&a, &b, dir);
        let before = rig.sunk().unwrap();
        let sent = generate(&a, name, &["--secs", "0.5"]);
        // The sink runs in the sender's softirq: all is counted on return.
        let got = rig.sunk().unwrap().since(&before);
        assert!(sent > 1000, "{name}: {sent} frames");
        assert_eq!(got.bad(), 0, "{name}: {:?}", got.total);
        assert_eq!(got.total.good, sent, "{name}");
        // Two threads, two queues: both of the sink's CPUs saw frames.
        assert!(
            got.per_cpu.iter().filter(|n| **n > 0).count() >= 2,
            "{name}: {:?}",
            got.per_cpu
        );

        // Paced: never above the rate asked for.
        let before = rig.sunk().unwrap();
        let sent = generate(&a, name, &["--secs", "1", "--rate", "20000"]);
        let got = rig.sunk().unwrap().since(&before);
        assert!(
            sent > 5_000 && sent <= 20_000 + 64,
            "{name}: {sent} frames at 20 kpps"
        );
        assert_eq!(got.total.good, sent, "{name}");
    }
}

#[test]
fn bad_generator_options_are_refused_before_anything_is_sent() {
    let bin = env!("CARGO_BIN_EXE_ferry-bench");
    for (args, says) in [
        (vec!["--iface", "g0", "--size", "20"], "must be"),
        (vec!["--iface", "g0", "--size", "big"], "imix"),
        (vec!["--iface", "g0", "--aps", "0"], "at least 1"),
        (vec!["--iface", "g0", "--dst-mac", "nope"], "not a MAC"),
        (
            vec!["--iface", "g0", "--netns", "ferry-no-such-ns"],
            "no network namespace",
        ),
    ] {
        let out = Command::new(bin)
            .args(["gen", "--live"])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

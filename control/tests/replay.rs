//! `ferry replay` and `ferry check` as a user runs them: the real binary, a
//! generated capture, the output checked against the reference model and
//! decoded by tshark.

// Test code: a failed step should panic with its message, and test
// tables and end-to-end scenarios read best as one function.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

use std::{path::PathBuf, process::Command};

use ferry::config::Config;
use ferry_dataplane::{
    model::Model,
    replay::{Classifier, Side},
};
use ferry_ebpf::abi::{Reason, StationKey};
use pcap_file::pcap::{PcapReader, PcapWriter};

fn ferry() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
}

fn repo(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
}

/// Runs `ferry replay` with the sample config; `extra` goes first (e.g. --json).
fn replay(
    extra: &[&str],
    input: &std::path::Path,
    output: &std::path::Path,
) -> std::process::Output {
    ferry()
        .arg("replay")
        .args(extra)
        .arg("--config")
        .arg(repo("deploy/examples/ferry.toml"))
        .arg("--in")
        .arg(input)
        .arg("--out")
        .arg(output)
        .output()
        .expect("run ferry")
}

fn frames(path: &std::path::Path) -> Vec<Vec<u8>> {
    let mut r = PcapReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut v = Vec::new();
    while let Some(p) = r.next_packet() {
        v.push(p.unwrap().data.into_owned());
    }
    v
}

/// A scratch directory removed when the test ends, pass or fail.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let d = std::env::temp_dir().join(format!("ferry-test-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn replay_sample_matches_the_model_and_tshark() {
    let dir = Scratch::new("sample");
    let tmp = |n: &str| dir.path(n);
    let cfg_path = repo("deploy/examples/ferry.toml");
    let input = repo("deploy/examples/sample.pcap");
    let out = tmp("replay-out.pcap");
    let o = replay(&["--json"], &input, &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();

    // The model, fed the same config, predicts every written frame in order,
    // learning stations from uplink frames as the programs do.
    let cfg = Config::load(&cfg_path).unwrap();
    let tables = ferry::tables::lower::by_position(&cfg);
    let mut model = Model::new(&tables);
    let sides = Classifier::new(&tables, None);
    let mut want = Vec::new();
    let mut up = Vec::new();
    // (T flag, RID, DA, SA) of every frame encapsulated downstream.
    let mut down = Vec::new();
    let mut reasons = std::collections::BTreeMap::<&str, u64>::new();
    for f in frames(&input) {
        let o = match sides.side(&f) {
            Side::Ap => model.upstream(&f),
            Side::Client => {
                let st = model.stations();
                let o = model.downstream(&f);
                if o.reason == Reason::DownForwarded {
                    let key = StationKey {
                        mac: f[..6].try_into().unwrap(),
                        vlan: u16::from_be_bytes([f[14], f[15]]) & 0xfff,
                    };
                    let rid = st[&key].rid;
                    let native = cfg.tunnels[o.tunnel.unwrap() as usize].format
                        == ferry::config::Format::Dot11;
                    down.push((native, rid, f[..6].to_vec(), f[6..12].to_vec()));
                }
                o
            }
        };
        *reasons.entry(o.reason.name()).or_default() += 1;
        *reasons
            .entry(o.reason.direction().received().name())
            .or_default() += 1;
        if o.reason == Reason::Forwarded {
            up.push(o.output.clone());
        }
        if matches!(o.reason, Reason::Forwarded | Reason::DownForwarded) {
            want.push(o.output);
        }
    }
    let got = frames(&out);
    assert!(
        up.len() > 50 && down.len() > 30,
        "sample forwards too little: {} up, {} down",
        up.len(),
        down.len()
    );
    assert_eq!(got, want, "written frames differ from the model's");
    assert_eq!(rep["written"], want.len() as u64);
    assert_eq!(rep["packets"], frames(&input).len() as u64);
    for (name, n) in &reasons {
        assert_eq!(rep["reasons"][name], *n, "reason {name}");
    }
    for (e, n) in model.events().nonzero_events() {
        assert_eq!(rep["events"][e.name()], n, "event {}", e.name());
    }
    assert!(rep["events"]["station_learned"].as_u64().unwrap_or(0) >= 3);
    assert_eq!(
        rep["verdicts"]["tx"],
        want.len() as u64,
        "one-arm config uses XDP_TX"
    );

    // tshark (an independent decoder): every upstream frame carries an
    // 802.1Q tag with our VLANs and a valid client IPv4/UDP packet; every
    // downstream frame decodes as CAPWAP-Data with the right RID, WBID 1,
    // T flag and inner frame.
    let fields = |filter: &str, f: &[&str]| -> Vec<Vec<String>> {
        let mut c = Command::new("tshark");
        c.args(["-o", "capwap.swap_fc:FALSE", "-r"])
            .arg(&out)
            .args(["-Y", filter, "-T", "fields", "-E", "occurrence=l"]);
        for x in f {
            c.args(["-e", x]);
        }
        let t = c
            .output()
            .expect("tshark (installed by deploy/bootstrap.sh)");
        assert!(t.status.success(), "{}", String::from_utf8_lossy(&t.stderr));
        String::from_utf8_lossy(&t.stdout)
            .lines()
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect()
    };
    let ups = fields("vlan && !capwap", &["vlan.id", "ip.src", "udp.dstport"]);
    assert_eq!(ups.len(), up.len());
    for f in &ups {
        assert!(["200", "201"].contains(&f[0].as_str()), "vlan in {f:?}");
        assert!(f[1].starts_with("198.19.4."), "inner source in {f:?}");
        assert_eq!(f[2], "9", "inner UDP port in {f:?}");
    }
    let downs = fields(
        "capwap.data",
        &[
            "capwap.header.rid",
            "capwap.header.wbid",
            "capwap.header.flags.t",
            "eth.dst",
            "eth.src",
            "wlan.da",
            "wlan.sa",
            "ip.dst",
        ],
    );
    assert_eq!(
        downs.len(),
        down.len(),
        "every encapsulated frame is CAPWAP-Data to tshark"
    );
    let mac = |m: &[u8]| {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    for (f, (native, rid, da, sa)) in downs.iter().zip(&down) {
        assert_eq!(f[0], rid.to_string(), "RID in {f:?}");
        assert_eq!(f[1], "1", "WBID in {f:?}");
        let t = matches!(f[2].as_str(), "1" | "True");
        assert_eq!(t, *native, "T flag in {f:?}");
        let (d, s) = if *native {
            (&f[5], &f[6])
        } else {
            (&f[3], &f[4])
        };
        assert_eq!(d, &mac(da), "inner destination in {f:?}");
        assert_eq!(s, &mac(sa), "inner source in {f:?}");
        assert!(
            f[7].starts_with("198.19.4."),
            "inner IP destination in {f:?}"
        );
    }
}

#[test]
fn from_fixes_the_arrival_side() {
    let dir = Scratch::new("from");
    let input = repo("deploy/examples/sample.pcap");
    let n = frames(&input).len() as u64;
    for (side, key) in [("ap", "from_ap"), ("client", "from_client")] {
        let o = replay(&["--json", "--from", side], &input, &dir.path("out.pcap"));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(rep[key], n, "--from {side}");
        // Through the other program only, nothing of the other direction moves.
        let other = if side == "ap" {
            "down_received"
        } else {
            "received"
        };
        assert!(
            rep["reasons"][other].is_null(),
            "--from {side}: {}",
            rep["reasons"]
        );
    }
    let o = replay(&["--from", "sideways"], &input, &dir.path("x.pcap"));
    assert_eq!(o.status.code(), Some(2), "clap refuses an unknown side");
}

#[test]
fn replay_reads_pcapng_and_refuses_garbage() {
    let dir = Scratch::new("formats");
    let tmp = |n: &str| dir.path(n);
    let input = repo("deploy/examples/sample.pcap");
    let ng = tmp("sample.pcapng");
    let st = Command::new("editcap")
        .args(["-F", "pcapng"])
        .arg(&input)
        .arg(&ng)
        .status()
        .expect("editcap (wireshark tools, installed with tshark)");
    assert!(st.success());
    let out = tmp("ng-out.pcap");
    let o = replay(&[], &ng, &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let from_pcap = tmp("pcap-out.pcap");
    let o2 = replay(&[], &input, &from_pcap);
    assert!(o2.status.success());
    let written = frames(&out);
    assert!(
        written.len() > 50,
        "pcapng replay wrote only {} frames",
        written.len()
    );
    assert_eq!(written, frames(&from_pcap));

    let junk = tmp("junk.pcap");
    std::fs::write(&junk, b"this is not a capture file at all").unwrap();
    let o = replay(&[], &junk, &tmp("junk-out.pcap"));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("pcap"), "{err}");

    // A non-Ethernet capture is refused with the reason.
    let raw = tmp("rawip.pcap");
    let hdr = pcap_file::pcap::PcapHeader {
        datalink: pcap_file::DataLink::RAW,
        ..Default::default()
    };
    let w = PcapWriter::with_header(std::fs::File::create(&raw).unwrap(), hdr).unwrap();
    drop(w);
    let o = replay(&[], &raw, &tmp("raw-out.pcap"));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("Ethernet"));
}

#[test]
fn bad_config_is_refused_with_file_line_and_reason() {
    let dir = Scratch::new("badconfig");
    let tmp = |n: &str| dir.path(n);
    let bad = tmp("bad.toml");
    let text = std::fs::read_to_string(repo("deploy/examples/ferry.toml"))
        .unwrap()
        .replace("vlan = 201", "vlan = 5000");
    std::fs::write(&bad, &text).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("vlan = 5000"))
        .unwrap()
        + 1;
    for args in [
        vec!["check"],
        vec!["replay", "--in", "/nonexistent", "--out", "/tmp/x.pcap"],
    ] {
        let o = ferry()
            .args(&args)
            .arg("--config")
            .arg(&bad)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!(
                "bad.toml:{line}:8: tunnel vlan 5000 is out of range 1-4094"
            )),
            "{err}"
        );
    }
    let o = ferry()
        .args(["check", "--json", "--config"])
        .arg(repo("deploy/examples/ferry.toml"))
        .output()
        .unwrap();
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["tunnels"].as_array().unwrap().len(), 4);
    assert_eq!(v["egress"], "tx");
}

/// A report cut short by its reader (`ferry check --json | head -c 100`)
/// ends quietly: no panic, no "Broken pipe" error.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    use std::io::Read as _;
    let dir = Scratch::new("epipe");
    let cfg = dir.path("big.toml");
    let mut text = std::fs::read_to_string(repo("deploy/examples/ferry.toml")).unwrap();
    text = text.split("[[tunnel]]").next().unwrap().to_string();
    for i in 0..3000 {
        text += &format!(
            "[[tunnel]]\nap = \"f{i}\"\naddress = \"198.19.{}.{}\"\n",
            i / 250,
            i % 250 + 1
        );
    }
    std::fs::write(&cfg, text).unwrap();
    let mut child = ferry()
        .args(["check", "--json", "--config"])
        .arg(&cfg)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 100];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The pipe's read end is closed now; ferry still has ~300 KB to write.
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(o.status.code(), Some(101), "{err}");
}

/// `ferry check --table` validates a swap table offline, by the code
/// `ferry swap` runs; an empty table is refused as such.
#[test]
fn check_table_validates_a_swap_table_offline() {
    let dir = Scratch::new("checktable");
    let config = repo("deploy/examples/ferry.toml");
    let good = dir.path("good.toml");
    std::fs::write(
        &good,
        "[[tunnel]]\nap = \"ap1\"\naddress = \"198.18.1.10\"\n[[tunnel]]\nap = \"ap7\"\naddress = \"198.18.1.17\"\nstate = \"standby\"\n",
    )
    .unwrap();
    let run = |table: &std::path::Path| {
        ferry()
            .args(["check", "--config"])
            .arg(&config)
            .arg("--table")
            .arg(table)
            .output()
            .unwrap()
    };
    let o = run(&good);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("good.toml: ok against") && out.contains("2 tunnels (1 active, 1 standby)"),
        "{out}"
    );
    let empty = dir.path("empty.toml");
    std::fs::write(&empty, "# nothing here\n\n").unwrap();
    let o = run(&empty);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("empty.toml: no [[tunnel]] entries"), "{err}");
    let bad = dir.path("bad.toml");
    std::fs::write(&bad, "[[tunnel]]\nap = \"x\"\naddress = \"198.18.1.300\"\n").unwrap();
    let o = run(&bad);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.toml:3:11: tunnel address"), "{err}");
    // Input size cap: /dev/zero is refused after 64 MiB, as a table and
    // as a configuration, not read until memory runs out.
    let o = run(std::path::Path::new("/dev/zero"));
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/dev/zero: larger than 64 MiB"), "{err}");
    let o = ferry()
        .args(["check", "--config", "/dev/zero"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/dev/zero: larger than 64 MiB"), "{err}");
}

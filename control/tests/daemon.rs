//! `ferry run` as an SRE uses it: the real binary in a namespace lab with
//! the real programs attached in native mode, driven through the CLI and
//! the admin socket, with traffic checked frame by frame.

// Test code: a failed step should panic with its message, and test
// tables and end-to-end scenarios read best as one function.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

mod lab;

use std::{
    net::{SocketAddr, UdpSocket},
    process::Command,
    time::Duration,
};

use ferry_dataplane::{
    capture::PacketSocket,
    craft::{self, Options},
};
use lab::*;

const SID: &str = "00112233445566778899aabbccddeeff";

fn traffic() -> Traffic {
    Traffic {
        min_frames: 2000,
        burst: 20,
        gap: Duration::from_millis(2),
    }
}

#[test]
fn hundred_swaps_under_traffic_lose_nothing() {
    let base = Lab::tunnels_toml();
    let table_a = format!("{base}{}", Lab::filler_toml("a", 300, 0));
    // B: other fillers, and the lab's APs after them (ids stay per name).
    let table_b = format!("{}{base}", Lab::filler_toml("b", 500, 1000));
    let lab = Lab::new("swap", &table_a);
    lab.start();
    learn_stations(&lab);
    let a = lab.file("a.toml", &table_a);
    let b = lab.file("b.toml", &table_b);
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let g0 = lab.generation();

    let mut times = Vec::new();
    let report = traffic().run(&lab, || {
        for i in 0..100 {
            // Each table replaces most of the other's tunnels: past the
            // mass-removal guard on purpose.
            let c = lab.json(&["swap", "--force", if i % 2 == 0 { b } else { a }]);
            assert_eq!(c["kind"], "swap");
            assert_eq!(c["old_generation"].as_u64(), Some(g0 + i));
            assert_eq!(c["new_generation"].as_u64(), Some(g0 + i + 1));
            times.push(c["total_us"].as_u64().unwrap());
        }
    });
    report.assert_lossless("100 swaps");
    assert!(
        report.sent_up >= 2000 && report.up.ok[0].len() as u32 == report.sent_up,
        "{report:?}"
    );
    let st = lab.json(&["status"]);
    assert_eq!(st["generation"].as_u64(), Some(g0 + 100));
    assert_eq!(st["swaps"].as_u64(), Some(100));
    assert_eq!(
        st["stations_flushed"].as_u64(),
        Some(0),
        "the lab's APs stayed: their stations must survive every swap"
    );
    assert_eq!(
        lab.aps().len(),
        302,
        "table A after an even number of swaps"
    );
    // The station learned before the swaps is still the one in the table.
    let s = lab.json(&["stations", "--ap", "ap1"]);
    assert_eq!(s["matching"].as_u64(), Some(1), "{s}");
    times.sort_unstable();
    eprintln!(
        "swap of 300/500-tunnel tables: median {} us, max {} us",
        times[50], times[99]
    );
}

#[test]
fn bad_table_is_refused_whole_and_rollback_flips_back() {
    let lab = Lab::new("roll", &Lab::tunnels_toml());
    lab.start();
    learn_stations(&lab);
    let g0 = lab.generation();
    let before = lab.aps();

    // A syntax-level error and a semantic one: refused with file:line, exit 2.
    let bad = lab.file(
        "bad.toml",
        "[[tunnel]]\nap = \"ap1\"\naddress = \"198.18.1.10\"\n\n[[tunnel]]\nap = \"ap5\"\naddress = \"198.18.1.300\"\n",
    );
    let o = lab.try_ferry(&["swap", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.toml:7:11: tunnel address"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    let dup = lab.file(
        "dup.toml",
        "[[tunnel]]\nap = \"ap1\"\naddress = \"198.18.1.10\"\n[[tunnel]]\nap = \"ap1\"\naddress = \"198.18.1.12\"\n",
    );
    let o = lab.try_ferry(&["swap", dup.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("dup.toml:5:6: tunnel ap \"ap1\" is already defined at line 1"),
        "{err}"
    );
    assert_eq!(lab.generation(), g0, "refused tables change nothing");
    assert_eq!(lab.aps(), before);
    let r = traffic().run(&lab, || {});
    r.assert_lossless("after refused swaps");

    // A table without ap2: its station is flushed and counted.
    let c = lab.file(
        "c.toml",
        "[[tunnel]]\nap = \"ap1\"\naddress = \"198.18.1.10\"\n[[tunnel]]\nap = \"ap3\"\naddress = \"198.18.1.12\"\n",
    );
    let ch = lab.json(&["swap", c.to_str().unwrap()]);
    assert_eq!(ch["stations_flushed"].as_u64(), Some(1), "{ch}");
    assert_eq!(ch["removed"].as_u64(), Some(1));
    assert_eq!(lab.aps(), vec!["ap1", "ap3"]);
    let s = lab.json(&["stations"]);
    assert_eq!(
        s["total"].as_u64(),
        Some(1),
        "only ap1's station is left: {s}"
    );

    // Rollback: the previous generation, at once.
    let rb = lab.json(&["swap", "--rollback"]);
    assert_eq!(rb["kind"], "rollback");
    assert_eq!(rb["new_generation"].as_u64(), Some(g0));
    assert_eq!(lab.aps(), before);
    assert_eq!(lab.generation(), g0);
    learn_stations(&lab);
    let r = traffic().run(&lab, || {});
    r.assert_lossless("after rollback");
    // And forward again.
    let rb = lab.json(&["swap", "--rollback"]);
    assert_eq!(rb["new_generation"].as_u64(), Some(g0 + 1));
    assert_eq!(lab.aps(), vec!["ap1", "ap3"]);
}

#[test]
fn restart_under_traffic_loses_nothing() {
    let lab = Lab::new("rst", &Lab::tunnels_toml());
    lab.start();
    learn_stations(&lab);
    let t = lab.file(
        "t.toml",
        &format!("{}{}", Lab::tunnels_toml(), Lab::filler_toml("x", 10, 0)),
    );
    lab.ferry(&["swap", t.to_str().unwrap()]);
    let g = lab.generation();

    let report = traffic().run(&lab, || {
        lab.kill9();
        // Nobody home: the pinned programs forward on their own.
        std::thread::sleep(Duration::from_millis(1000));
        lab.start();
        std::thread::sleep(Duration::from_millis(300));
    });
    report.assert_lossless("kill -9 and restart");

    let st = lab.json(&["status"]);
    assert_eq!(st["adopted"], true);
    for a in st["attached"].as_array().unwrap() {
        assert_eq!(a["adopted_link"], true, "{st}");
    }
    assert_eq!(
        lab.aps().len(),
        12,
        "the swapped-in table survives the restart, not the file's"
    );
    assert_eq!(st["generation"].as_u64(), Some(g + 1));
    assert_eq!(lab.json(&["stations"])["total"].as_u64(), Some(2));

    // SIGTERM: ferry exits, forwarding continues.
    assert!(lab.stop().success());
    let link = lab.ac.exec(&["ip", "link", "show", "fap0"]).unwrap();
    assert!(link.contains("xdp"), "program still attached: {link}");
    let r = traffic().run(&lab, || {});
    r.assert_lossless("ferry stopped");
}

#[test]
fn detach_on_exit_removes_programs_and_pins() {
    let lab = Lab::new("det", &Lab::tunnels_toml());
    lab.start_with(&["--detach-on-exit"]);
    assert!(lab.pin_dir().exists());
    assert!(lab.stop().success());
    let link = lab.ac.exec(&["ip", "link", "show", "fap0"]).unwrap();
    assert!(!link.contains("xdp"), "program detached: {link}");
    assert!(!lab.pin_dir().exists(), "pins removed");
}

/// A keepalive as the domain brief spells it (element length 22).
fn keepalive(sid: &[u8; 16]) -> Vec<u8> {
    let mut d = vec![
        0x00, 0x10, 0x00, 0x08, 0, 0, 0, 0, 0x00, 0x16, 0x00, 0x23, 0x00, 0x10,
    ];
    d.extend_from_slice(sid);
    d
}

fn sid() -> [u8; 16] {
    let mut s = [0u8; 16];
    for (i, b) in s.iter_mut().enumerate() {
        *b = u8::from_str_radix(&SID[2 * i..2 * i + 2], 16).unwrap();
    }
    s
}

#[test]
fn keepalives_are_echoed_and_bind_session_tunnels() {
    let tunnels = format!(
        "[[tunnel]]\nap = \"ap1\"\naddress = \"198.18.1.10\"\n\n[[tunnel]]\nap = \"nat\"\nsession_id = \"{SID}\"\nvlan = 201\n"
    );
    let lab = Lab::new("ka", &tunnels);
    lab.write_config(&tunnels, "[keepalive]\nunknown_rate = 5\n");
    lab.start();
    let ka = keepalive(&sid());
    let ac: SocketAddr = "198.18.0.1:5247".parse().unwrap();
    let g0 = lab.generation();

    // The echo, as the AP receives it: captured on ap0 and by the socket.
    let (echo, frame) = lab
        .ap
        .enter(|| {
            let cap = PacketSocket::bind("ap0")?;
            let s = UdpSocket::bind("198.18.0.10:40002")?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            s.send_to(&ka, ac)?;
            let mut buf = [0u8; 2048];
            let (n, from) = s.recv_from(&mut buf)?;
            assert_eq!(from, ac);
            let mut frame = None;
            while let Some(f) = cap.recv(Duration::from_millis(500))? {
                if f.len() > 42 && f[34..36] == 5247u16.to_be_bytes() {
                    frame = Some(f);
                    break;
                }
            }
            Ok::<_, anyhow::Error>((buf[..n].to_vec(), frame.expect("echo seen on ap0")))
        })
        .unwrap();
    assert_eq!(echo, ka, "the echo is byte for byte the keepalive");
    assert_eq!(&frame[42..], &ka[..]);

    // tshark, an independent decoder, reads it as a CAPWAP data keepalive.
    let pcap = lab.dir.join("echo.pcap");
    {
        let f = std::fs::File::create(&pcap).unwrap();
        let mut w = pcap_file::pcap::PcapWriter::new(f).unwrap();
        w.write_packet(&pcap_file::pcap::PcapPacket::new(
            Duration::ZERO,
            frame.len() as u32,
            &frame,
        ))
        .unwrap();
    }
    let o = Command::new("tshark")
        .args([
            "-r",
            pcap.to_str().unwrap(),
            "-o",
            "capwap.swap_fc:FALSE",
            "-V",
        ])
        .output()
        .expect("tshark (installed by deploy/bootstrap.sh)");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("Control And Provisioning of Wireless Access Points - Data"),
        "{text}"
    );
    assert!(text.contains("Keep-Alive: Keep-Alive Packet"), "{text}");
    assert!(text.contains(&format!("Session ID: {SID}")), "{text}");

    // The session tunnel is bound to the keepalive's source address and port.
    let t = lab.json(&["tunnels"]);
    let nat = t["tunnels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["ap"] == "nat")
        .unwrap()
        .clone();
    assert_eq!(nat["address"], "198.18.0.10", "{nat}");
    assert_eq!(nat["installed"], true);
    assert_eq!(nat["keepalive"]["state"], "alive");

    // Data from that address and port is now forwarded into VLAN 201.
    let inner = craft::ethernet(GW, station(1, 7), None, ETHERTYPE, &[0xab; 46]);
    let got = std::thread::scope(|sc| {
        let rx = sc.spawn(|| {
            lab.cl
                .enter(|| {
                    let s = PacketSocket::bind("cl0")?;
                    while let Some(f) = s.recv(Duration::from_secs(2))? {
                        if f.len() > 18 && f[6..12] == station(1, 7) {
                            return Ok::<_, anyhow::Error>(Some(f));
                        }
                    }
                    Ok(None)
                })
                .unwrap()
        });
        std::thread::sleep(Duration::from_millis(200));
        lab.ap
            .enter(|| {
                let s = UdpSocket::bind("198.18.0.10:40002")?;
                let data = craft::capwap(craft::header_8023(1), &Options::default(), &inner);
                s.send_to(&data, ac)?;
                Ok::<_, anyhow::Error>(())
            })
            .unwrap();
        rx.join().unwrap()
    });
    let f = got.expect("data from the bound session tunnel forwarded");
    assert_eq!(u16::from_be_bytes([f[14], f[15]]) & 0xfff, 201);
    // A binding is live state, not a table change: no new generation, and
    // it is saved in the small bindings file within a tick.
    assert_eq!(lab.generation(), g0);
    let bindings = lab
        .dir
        .join("state")
        .join(format!("{}.bindings.json", lab.node));
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while !std::fs::read_to_string(&bindings).is_ok_and(|t| t.contains("198.18.0.10:40002")) {
        assert!(std::time::Instant::now() < deadline, "binding not saved");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Unknown sessions: answered up to the rate, the rest refused and counted.
    let answered = lab
        .ap
        .enter(|| {
            let s = UdpSocket::bind("198.18.0.10:40003")?;
            s.set_read_timeout(Some(Duration::from_millis(300)))?;
            let other = keepalive(&[0x99; 16]);
            for _ in 0..30 {
                s.send_to(&other, ac)?;
            }
            let mut n = 0;
            let mut buf = [0u8; 2048];
            while s.recv_from(&mut buf).is_ok() {
                n += 1;
            }
            Ok::<_, anyhow::Error>(n)
        })
        .unwrap();
    assert!(
        (5..=7).contains(&answered),
        "burst of 5 answered, got {answered}"
    );
    let st = lab.json(&["status"]);
    assert!(st["keepalive"]["refused"].as_u64().unwrap() >= 23, "{st}");
    assert_eq!(st["keepalive"]["unknown"].as_u64(), Some(30));
    // A keepalive without a Session ID (the program punts every K frame)
    // is counted, not answered.
    let answer = lab
        .ap
        .enter(|| {
            let s = UdpSocket::bind("198.18.0.10:40004")?;
            s.set_read_timeout(Some(Duration::from_millis(300)))?;
            s.send_to(&[0x00, 0x10, 0x00, 0x08, 0, 0, 0, 0, 0, 0], ac)?;
            let mut buf = [0u8; 64];
            Ok::<_, anyhow::Error>(s.recv_from(&mut buf).is_ok())
        })
        .unwrap();
    assert!(!answer, "malformed keepalives are not echoed");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        lab.json(&["counters"])["keepalive"]["malformed"].as_u64(),
        Some(1)
    );
}

#[test]
fn single_tunnel_operations_sighup_and_metrics() {
    let lab = Lab::new("ops", &Lab::tunnels_toml());
    lab.start();
    learn_stations(&lab);

    // Demote ap1: its frames are dropped as standby; promote: forwarded.
    let c = lab.json(&["tunnel", "demote", "ap1"]);
    assert_eq!(c["kind"], "tunnel demote");
    assert_eq!(c["ap"], "ap1");
    let g = c["new_generation"].clone();
    let before = lab.json(&["counters"])["reasons"]["drop_standby"]
        .as_u64()
        .unwrap();
    learn_stations(&lab);
    let after = lab.json(&["counters"])["reasons"]["drop_standby"]
        .as_u64()
        .unwrap();
    assert_eq!(after, before + 1, "ap1's frame dropped as standby");
    // A retried demote is a no-op that succeeds (scripts retry).
    let again = lab.json(&["tunnel", "demote", "ap1"]);
    assert_eq!(again["old_generation"], g);
    assert_eq!(again["new_generation"], g, "nothing changed");
    lab.ferry(&["tunnel", "promote", "ap1"]);
    traffic().run(&lab, || {}).assert_lossless("after promote");

    // Add and remove without a swap.
    lab.ferry(&[
        "tunnel",
        "add",
        "ap9",
        "--address",
        "198.18.1.19",
        "--vlan",
        "201",
    ]);
    assert!(lab.aps().contains(&"ap9".to_string()));
    let o = lab.try_ferry(&[
        "tunnel",
        "add",
        "ap10",
        "--address",
        "198.18.1.19",
        "--vlan",
        "201",
    ]);
    assert_eq!(o.status.code(), Some(2), "same address twice");
    let o = lab.try_ferry(&[
        "tunnel",
        "add",
        "ap11",
        "--address",
        "198.18.1.20",
        "--vlan",
        "333",
    ]);
    assert_eq!(o.status.code(), Some(2), "VLAN not served");
    lab.ferry(&["tunnel", "remove", "ap9"]);
    assert_eq!(lab.aps(), vec!["ap1", "ap2"]);
    let g = lab.generation();
    assert_eq!(
        lab.json(&["status"])["swaps"].as_u64(),
        Some(0),
        "edits are not swaps"
    );

    // SIGHUP applies the file as a swap.
    lab.write_config(
        &format!("{}{}", Lab::tunnels_toml(), Lab::filler_toml("h", 3, 0)),
        "",
    );
    lab.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while lab.generation() == g {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP not applied:\n{}",
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(lab.aps().len(), 5);

    // Metrics, scraped like Prometheus does.
    let text = lab.scrape();
    assert!(text.starts_with("HTTP/1.0 200 OK"), "{text}");
    let value = |line: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {line} in\n{text}"))
    };
    assert!(value("ferry_packets_total{reason=\"forwarded\"}") >= 2000.0);
    assert!(value("ferry_tunnel_packets_total{ap=\"ap1\",direction=\"up\"}") >= 2000.0);
    assert_eq!(value("ferry_swaps_total "), 1.0);
    assert!(value("ferry_last_swap_duration_seconds ") > 0.0);
    assert!(text.contains("ferry_build_info{version=\""));
    assert!(text.contains("ferry_tunnel_keepalive_state{ap=\"ap1\",state=\"never\"} 1"));
}

/// The operator's safety rails: a dry run changes nothing and says what
/// would go; an empty table and a mass removal are refused unless --force;
/// a rollback says which APs it undoes and restores; `ferry reload`
/// answers with its result and is guarded the same way.
#[test]
fn dry_run_removal_guard_rollback_lists_and_reload() {
    let extra = Lab::filler_toml("f", 4, 0);
    let all = format!("{}{extra}", Lab::tunnels_toml());
    let lab = Lab::new("rails", &all);
    lab.start();
    learn_stations(&lab);
    let g0 = lab.generation();
    let before = lab.aps();
    assert_eq!(before.len(), 6);
    let ap1 = format!("{}\n", Lab::tunnels_toml().split("\n\n").next().unwrap());

    // A dry run: what would go, and nothing changes.
    let no_ap2 = lab.file("no-ap2.toml", &format!("{ap1}{extra}"));
    let p = lab.json(&["swap", "--dry-run", no_ap2.to_str().unwrap()]);
    assert_eq!(p["removed"], serde_json::json!(["ap2"]), "{p}");
    assert_eq!(p["added"], serde_json::json!([]), "{p}");
    assert_eq!(p["stations_to_flush"].as_u64(), Some(1), "{p}");
    assert_eq!(lab.generation(), g0);
    assert_eq!(lab.aps(), before);
    let text = lab.ferry(&["swap", "--dry-run", no_ap2.to_str().unwrap()]);
    assert!(text.contains("removes 1: ap2"), "{text}");
    assert!(text.contains("would flush 1 stations"), "{text}");

    // An empty (comment-only) table and a mass removal: refused, exit 2.
    let empty = lab.file("empty.toml", "# the drill table, not written yet\n");
    let o = lab.try_ferry(&["swap", empty.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no [[tunnel]] entries"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    let only = lab.file("only-ap1.toml", &ap1);
    let o = lab.try_ferry(&["swap", only.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("would remove 5 of 6 tunnels, more than admin.max_removal_percent (50%)"),
        "{err}"
    );
    assert_eq!(lab.generation(), g0, "refused: nothing changed");
    assert_eq!(lab.aps(), before);

    // --force applies it, and the answer names what went.
    let c = lab.json(&["swap", "--force", only.to_str().unwrap()]);
    assert_eq!(
        c["removed_aps"],
        serde_json::json!(["ap2", "f0", "f1", "f2", "f3"]),
        "{c}"
    );
    assert_eq!(lab.aps(), vec!["ap1"]);

    // A rollback says what it would restore, then restores it.
    let p = lab.json(&["swap", "--rollback", "--dry-run"]);
    assert_eq!(
        p["added"],
        serde_json::json!(["ap2", "f0", "f1", "f2", "f3"]),
        "{p}"
    );
    assert_eq!(p["to_generation"].as_u64(), Some(g0), "{p}");
    let text = lab.ferry(&["swap", "--rollback"]);
    assert!(text.contains("restored: ap2, f0, f1, f2, f3"), "{text}");
    assert_eq!(lab.aps(), before);

    // `ferry reload`: the result comes back; guarded like a swap.
    let c = lab.json(&["reload"]);
    assert_eq!(c["kind"], "reload", "{c}");
    lab.write_config(&ap1, "");
    let o = lab.try_ferry(&["reload"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("max_removal_percent"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(lab.aps(), before);
    // The refused reload is what status and the metrics report.
    let r = lab.json(&["status"])["last_reload"].clone();
    assert_eq!(r["ok"], false, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("max_removal_percent"),
        "{r}"
    );
    assert_eq!(lab.metric("ferry_last_reload_success "), Some(0.0));
    let c = lab.json(&["reload", "--force"]);
    assert_eq!(lab.aps(), vec!["ap1"]);
    let r = lab.json(&["status"])["last_reload"].clone();
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["generation"], c["new_generation"], "{r}");
    assert!(r["at_unix_s"].as_u64().unwrap() > 1_700_000_000, "{r}");
    assert_eq!(lab.metric("ferry_last_reload_success "), Some(1.0));
}

/// A second `ferry run` for a node that runs changes nothing: not the
/// programs, the maps, the state file, nor the first one's admin socket.
#[test]
fn a_second_ferry_run_changes_nothing() {
    let lab = Lab::new("twice", &Lab::tunnels_toml());
    lab.start();
    learn_stations(&lab);
    let t = lab.file(
        "t.toml",
        &format!("{}{}", Lab::tunnels_toml(), Lab::filler_toml("x", 3, 0)),
    );
    lab.ferry(&["swap", t.to_str().unwrap()]);
    let g = lab.generation();
    let state = lab.dir.join("state");
    let saved = std::fs::read(state.join(format!("{}.json", lab.node))).unwrap();
    let pid = lab.json(&["status"])["pid"].as_u64();
    for extra in [&[][..], &["--replace"][..]] {
        let o = lab.run_again(extra);
        assert_eq!(o.status.code(), Some(2), "{extra:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("is already run by ferry"), "{err}");
        assert!(err.contains("this start changed nothing"), "{err}");
    }
    let st = lab.json(&["status"]);
    assert_eq!(st["pid"].as_u64(), pid, "the first ferry still answers");
    assert_eq!(st["generation"].as_u64(), Some(g));
    assert_eq!(lab.aps().len(), 5, "the swapped-in table, not the file's");
    assert_eq!(
        std::fs::read(state.join(format!("{}.json", lab.node))).unwrap(),
        saved
    );
    let r = traffic().run(&lab, || {});
    r.assert_lossless("after a second ferry run");
}

/// Sends downstream frame `seq` to station 0 of ap1 and returns the
/// destination MAC it left the AC with (None if it never arrived).
fn down_next_hop(lab: &Lab, seq: u32) -> Option<[u8; 6]> {
    let cl = &lab.cl;
    lab.ap
        .enter(|| {
            let rx = PacketSocket::bind("ap0")?;
            cl.enter(|| PacketSocket::bind("cl0")?.send(&down_frame(0, 0, seq)))?;
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while std::time::Instant::now() < deadline {
                // Ethernet 14 + IPv4 20 + UDP 8 + CAPWAP 8 + inner Ethernet 14.
                if let Some(f) = rx.recv(Duration::from_millis(100))?
                    && f.len() > 64
                    && f[12..14] == [0x08, 0x00]
                    && parse_payload(&f, 64) == Some((0, seq))
                {
                    return Ok(Some(f[..6].try_into()?));
                }
            }
            Ok::<_, anyhow::Error>(None)
        })
        .unwrap()
}

/// The downstream next hop follows the kernel as it changes: a route
/// towards the APs appears, moves to another gateway, and that gateway
/// gets a new link-layer address; each answer is used within a fraction
/// of a second (the route netlink announcements start a new next-hop
/// generation; the 4-second refresh alone would leave the old MAC in
/// use). In between, frames reuse the cached answer: far fewer FIB
/// lookups than frames.
#[test]
fn downstream_next_hops_follow_route_and_neighbour_changes() {
    const GW1: [u8; 6] = [0x02, 0x9a, 0, 0, 0, 1];
    const GW2: [u8; 6] = [0x02, 0x9a, 0, 0, 0, 2];
    const GW2_NEW: [u8; 6] = [0x02, 0x9a, 0, 0, 0, 3];
    let lab = Lab::new("nh", &Lab::tunnels_toml());
    let neigh = |ip: &str, mac: &[u8; 6]| lab.ac.set_neighbour("fap0", ip, mac).unwrap();
    // Both gateways resolved before any route uses them: each step below
    // changes one thing the FIB answers from.
    neigh("198.18.0.10", &GW1);
    neigh("198.18.0.20", &GW2);
    lab.start();
    learn_stations(&lab);
    // No route to the APs yet: the configured neighbour answers.
    assert_eq!(down_next_hop(&lab, 0), Some(lab.ap0_mac));
    // (what changes, the change, the next hop expected after it)
    type Step<'a> = (&'a str, &'a dyn Fn(), [u8; 6]);
    let steps: [Step; 3] = [
        (
            "route added",
            &|| {
                let r = ["ip", "route", "add", "198.18.1.0/24", "via", "198.18.0.10"];
                lab.ac.exec(&r).unwrap();
            },
            GW1,
        ),
        (
            "route moved to the other gateway",
            &|| {
                let r = [
                    "ip",
                    "route",
                    "replace",
                    "198.18.1.0/24",
                    "via",
                    "198.18.0.20",
                ];
                lab.ac.exec(&r).unwrap();
            },
            GW2,
        ),
        (
            "gateway's MAC changed",
            &|| neigh("198.18.0.20", &GW2_NEW),
            GW2_NEW,
        ),
    ];
    let mut seq = 1;
    for (what, change, want) in steps {
        change();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(down_next_hop(&lab, seq), Some(want), "{what}: 300 ms later");
        seq += 1;
    }
    let lookups = || lab.json(&["counters"])["fib_lookups"].as_u64().unwrap();
    let before = lookups();
    let frames = 50;
    for _ in 0..frames {
        assert!(down_next_hop(&lab, seq).is_some(), "frame {seq} arrived");
        seq += 1;
    }
    let during = lookups() - before;
    assert!(
        during < frames / 2,
        "{during} FIB lookups for {frames} frames of one tunnel"
    );
}

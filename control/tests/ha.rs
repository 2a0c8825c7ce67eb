//! The HA pair end to end: two `ferry run` nodes in namespaces with a core
//! bridge, an AP and a client side (see `pair`). Needs root.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

mod pair;

use std::time::{Duration, Instant};

use pair::{NodeHa, Pair};

fn counters(p: &Pair) -> String {
    p.counters()
}

fn roles(p: &Pair) -> [(String, String); 2] {
    [p.nodes[0].role(), p.nodes[1].role()]
}

fn is(p: &Pair, i: usize, role: &str) -> bool {
    p.is(i, role)
}

fn started(tag: &str) -> Pair {
    Pair::started(tag, [false, false])
}

#[test]
fn kill9_of_the_master_hands_the_group_over_with_its_synced_stations() {
    let p = started("hak");
    let st = p.nodes[1].cluster();
    assert_eq!(st["peer"]["state"], "up", "{st}");
    let m = p.nodes[1].scrape();
    for line in [
        "ferry_ha_group_master{group=\"group1\"} 0",
        "ferry_ha_group_active{group=\"group1\"} 0",
        "ferry_ha_group_synced{group=\"group1\"} 1",
        "ferry_ha_peer_up 1",
        "ferry_ha_path_up{path=\"2\",address=\"198.18.10.1\"} 1",
        "ferry_ha_rejected_total{class=\"forged\"} 0",
        "ferry_ha_sync_connected 1",
    ] {
        assert!(m.contains(line), "metrics lack {line}:\n{m}");
    }
    assert!(
        p.nodes[0]
            .scrape()
            .contains("ferry_ha_group_active{group=\"group1\"} 1")
    );
    assert_eq!(st["peer"]["paths"][0]["up"], true);
    assert_eq!(st["peer"]["paths"][1]["up"], true);
    assert_eq!(st["groups"][0]["peer_role"], "master");
    assert_eq!(st["groups"][0]["peer_priority"], 200);

    // A station talks through the master only; it reaches the client side
    // and, through sync, the backup's live table.
    let got = p.exchange(true, &[p.up_frame(0, 1, 1)], Duration::from_millis(400));
    assert_eq!(got, vec![(1, None)], "upstream through the master");
    p.wait_for(5, "the station synced to node 2", || {
        p.nodes[1].cluster()["sync"]["stations_received"].as_u64() >= Some(1)
    });
    let got = p.exchange(false, &[Pair::down_frame(1, 2)], Duration::from_millis(400));
    assert_eq!(
        got,
        vec![(2, Some(p.nodes[0].addr))],
        "downstream through the master\n{}",
        counters(&p)
    );

    // One path cut: heartbeats go on over the other, nothing changes.
    p.nodes[0]
        .ns
        .exec(&["ip", "link", "set", "h1b", "down"])
        .unwrap();
    p.wait_for(5, "path 2 down on node 2", || {
        p.nodes[1].cluster()["peer"]["paths"][1]["up"] == false
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        is(&p, 0, "master") && is(&p, 1, "backup"),
        "{:?}",
        roles(&p)
    );
    assert_eq!(p.nodes[1].cluster()["peer"]["state"], "up");

    // kill -9 of the master: the backup takes over, the dead master's data
    // plane stops forwarding when its lease runs out.
    let t0 = Instant::now();
    p.nodes[0].kill9();
    p.wait_for(5, "node 2 master", || is(&p, 1, "master"));
    let took = t0.elapsed();
    let roles1 =
        ferry_dataplane::datapath::GroupRoles::open_pinned(&p.nodes[0].pin_dir(&p.pin_root))
            .unwrap();
    assert!(
        !roles1.active(1).unwrap(),
        "the killed master's lease must have run out"
    );
    eprintln!("takeover observed after {} ms", took.as_millis());

    // Downstream to the station that never sent a frame through node 2:
    // the new master announced it, the bridge moved it, node 2 forwards.
    p.wait_for(5, "the station announced", || {
        p.nodes[1]
            .ferry(&["cluster", "history"])
            .contains("1 of 1 stations announced")
    });
    let got = p.exchange(false, &[Pair::down_frame(1, 3)], Duration::from_millis(400));
    assert_eq!(
        got,
        vec![(3, Some(p.nodes[1].addr))],
        "downstream to a synced-only station through the new master"
    );
    // And the AP's data, moved to node 2, goes up.
    let got = p.exchange(true, &[p.up_frame(1, 1, 4)], Duration::from_millis(400));
    assert_eq!(got, vec![(4, None)], "upstream through the new master");
    // What an SRE sees (printed with --nocapture; the README quotes it).
    for args in [
        ["cluster", "status"],
        ["cluster", "members"],
        ["cluster", "history"],
    ] {
        eprintln!("$ ferry {}\n{}", args.join(" "), p.nodes[1].ferry(&args));
    }
    let h = p.nodes[1].ferry(&["cluster", "history"]);
    for want in [
        "path_up",
        "path_down",
        "peer_down",
        "role group1 -> master (peer_dead)",
    ] {
        assert!(h.contains(want), "history lacks {want}:\n{h}");
    }
}

#[test]
fn forged_replayed_stale_wrong_key_and_foreign_heartbeats_are_refused_and_counted() {
    use ferry::ha::{
        key::Key,
        wire::{Kind, Sealer},
    };
    let p = started("haa");
    // A real heartbeat of node 1, captured on its way to node 2.
    let captured = p.nodes[1]
        .ns
        .enter(|| {
            let s = ferry_dataplane::capture::PacketSocket::bind("h2a")?;
            loop {
                let Some(f) = s.recv(Duration::from_secs(2))? else {
                    anyhow::bail!("no heartbeat seen");
                };
                // IPv4/UDP to port 5250 (the sync stream is TCP to the
                // same port): the payload after 14 + 20 + 8.
                if f.len() > 42
                    && f[12..14] == [8, 0]
                    && f[23] == 17
                    && f[36..38] == 5250u16.to_be_bytes()
                {
                    return Ok(f[42..].to_vec());
                }
            }
        })
        .unwrap();
    let key = Key::new(b"0123456789abcdef0123456789abcdef-lab").unwrap();
    let mut forged = Sealer::new(key.clone(), u64::MAX / 2)
        .seal(Kind::Heartbeat, 1, b"{}")
        .unwrap();
    forged[33] ^= 1;
    let wrong_key = Sealer::new(Key::new(&[7u8; 32]).unwrap(), u64::MAX / 2)
        .seal(Kind::Heartbeat, 1, b"{}")
        .unwrap();
    let stale = Sealer::new(key, 1).seal(Kind::Heartbeat, 1, b"{}").unwrap();
    let before = p.nodes[1].cluster();
    p.nodes[0]
        .ns
        .exec(&["ip", "addr", "add", "198.18.9.3/24", "dev", "h1a"])
        .unwrap();
    p.nodes[0]
        .ns
        .enter(|| {
            let from = std::net::UdpSocket::bind("198.18.9.1:0")?;
            let to = "198.18.9.2:5250";
            for m in [&forged, &wrong_key, &stale, &captured] {
                from.send_to(m, to)?;
            }
            std::net::UdpSocket::bind("198.18.9.3:0")?.send_to(&captured, to)?;
            Ok::<_, anyhow::Error>(())
        })
        .unwrap();
    p.wait_for(5, "every refusal counted", || {
        let r = &p.nodes[1].cluster();
        let d =
            |k: &str| r["rejected"][k].as_u64().unwrap() - before["rejected"][k].as_u64().unwrap();
        d("forged") == 1
            && d("unknown_key") == 1
            && d("stale") == 1
            && d("replayed") == 1
            && r["foreign"].as_u64() == Some(before["foreign"].as_u64().unwrap() + 1)
    });
    // None of it moved anything.
    assert!(
        is(&p, 0, "master") && is(&p, 1, "backup"),
        "{:?}",
        roles(&p)
    );
    let h = p.nodes[1].ferry(&["cluster", "history"]);
    assert!(h.contains("auth_failure"), "{h}");
}

#[test]
fn with_an_external_election_only_cluster_role_changes_roles() {
    let ext = "election = \"external\"";
    let p = Pair::new(
        "hae",
        [
            NodeHa {
                priority: 200,
                preempt: true,
                extra: ext,
            },
            NodeHa {
                priority: 100,
                preempt: true,
                extra: ext,
            },
        ],
    );
    p.start(0);
    p.start(1);
    p.wait_for(5, "the peers hear each other", || {
        p.nodes.iter().all(|n| n.cluster()["peer"]["state"] == "up")
    });
    // Past the cold-start bound (1 s here), nobody took anything.
    std::thread::sleep(Duration::from_millis(1500));
    for n in &p.nodes {
        assert_eq!(n.role(), ("init".into(), "standby".into()));
    }
    let out = p.nodes[1].ferry(&["cluster", "role", "group1", "master"]);
    // The answer already shows the new role, in the data plane too.
    assert!(
        out.lines()
            .any(|l| l.starts_with("group1") && l.contains(" master  active ")),
        "{out}"
    );
    assert!(is(&p, 1, "master"), "{:?}", roles(&p));
    assert_eq!(
        p.nodes[0].role().0,
        "init",
        "the other node decides nothing"
    );
    p.nodes[1].ferry(&["cluster", "role", "group1", "backup"]);
    assert!(is(&p, 1, "backup"));
    let h = p.nodes[1].ferry(&["cluster", "history"]);
    assert!(h.contains("role group1 -> master (operator)"), "{h}");
}

#[test]
fn cluster_role_is_refused_where_roles_are_elected() {
    let p = started("har");
    let o = p.nodes[1].try_ferry(&["cluster", "role", "group1", "master"]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("roles are elected here"), "{e}");
    assert!(is(&p, 1, "backup"));
}

#[test]
fn sigstop_and_a_partition_fail_over_and_heal_to_one_master() {
    let p = started("has");
    let one_master = || {
        let (a, b) = (p.nodes[0].role(), p.nodes[1].role());
        let masters = [&a, &b].iter().filter(|r| r.0 == "master").count();
        let active = [&a, &b].iter().filter(|r| r.1 == "active").count();
        masters == 1 && active == 1
    };

    // SIGSTOP: the stopped master's lease runs out, the backup takes over.
    p.nodes[0].signal(libc::SIGSTOP);
    p.wait_for(5, "node 2 master while node 1 is stopped", || {
        is(&p, 1, "master")
    });
    let roles1 =
        ferry_dataplane::datapath::GroupRoles::open_pinned(&p.nodes[0].pin_dir(&p.pin_root))
            .unwrap();
    assert!(
        !roles1.active(1).unwrap(),
        "a stopped master stops forwarding"
    );
    // SIGCONT: both claim the group; the higher priority keeps it.
    p.nodes[0].signal(libc::SIGCONT);
    p.wait_for(5, "one master after SIGCONT", one_master);
    assert!(
        is(&p, 0, "master") && is(&p, 1, "backup"),
        "{:?}",
        roles(&p)
    );
    let h = p.nodes[1].ferry(&["cluster", "history"]);
    assert!(h.contains("role group1 -> backup (split_brain)"), "{h}");

    // Every path cut: both sides master (a real partition), then the heal
    // leaves exactly one.
    for dev in ["h1a", "h1b"] {
        p.nodes[0]
            .ns
            .exec(&["ip", "link", "set", dev, "down"])
            .unwrap();
    }
    p.wait_for(5, "node 2 master in the partition", || is(&p, 1, "master"));
    assert!(is(&p, 0, "master"), "node 1 keeps forwarding its side");
    for dev in ["h1a", "h1b"] {
        p.nodes[0]
            .ns
            .exec(&["ip", "link", "set", dev, "up"])
            .unwrap();
    }
    p.wait_for(5, "one master after the heal", one_master);
    assert!(is(&p, 0, "master"), "{:?}", roles(&p));
}

#[test]
fn a_table_change_on_either_node_reaches_the_other_under_one_revision() {
    let p = started("hrv");
    let tunnels = |i: usize| p.nodes[i].aps();
    let revisions = |i: usize| {
        let st = p.nodes[i].cluster();
        (
            st["revision"].as_u64().unwrap(),
            st["peer_revision"].as_u64(),
        )
    };
    assert_eq!(revisions(0).0, 0);
    // A tunnel added on the backup reaches the master.
    p.nodes[1].ferry(&[
        "tunnel",
        "add",
        "ap2",
        "--address",
        "198.18.1.20",
        "--group",
        "group1",
    ]);
    p.wait_for(5, "ap2 on node 1", || {
        tunnels(0).contains(&"ap2".to_string())
    });
    p.wait_for(5, "revision 1 on both, each seen by the other", || {
        revisions(0) == (1, Some(1)) && revisions(1) == (1, Some(1))
    });
    // A removal on the master reaches the backup, as revision 2.
    p.nodes[0].ferry(&["tunnel", "remove", "ap2"]);
    p.wait_for(5, "ap2 gone from node 2", || {
        !tunnels(1).contains(&"ap2".to_string())
    });
    p.wait_for(5, "revision 2 on both", || {
        revisions(0).0 == 2 && revisions(1).0 == 2
    });
    let h = p.nodes[1].json(&["cluster", "history"]);
    let applied = h
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "table")
        .map(|e| e["detail"].as_str().unwrap().to_string())
        .collect::<Vec<_>>();
    assert!(
        applied
            .iter()
            .any(|d| d.starts_with("applied the peer's table revision 2")),
        "{applied:?}"
    );
    // A SIGHUP reload of an edited file is a table change like any other.
    let mut text = std::fs::read_to_string(&p.nodes[1].config).unwrap();
    text.push_str("[[tunnel]]\nap = \"ap3\"\naddress = \"198.18.1.30\"\ngroup = \"group1\"\n");
    std::fs::write(&p.nodes[1].config, text).unwrap();
    p.nodes[1].signal(libc::SIGHUP);
    p.wait_for(5, "ap3 of node 2's reload on node 1, as revision 3", || {
        tunnels(0).contains(&"ap3".to_string()) && revisions(0) == (3, Some(3))
    });
    p.wait_for(5, "node 2 sees node 1 at revision 3", || {
        revisions(1) == (3, Some(3))
    });
    // Nothing moved the group.
    assert!(is(&p, 0, "master") && is(&p, 1, "backup"));
}

#[test]
fn a_learned_ap_port_reaches_the_backup_and_serves_downstream_after_a_takeover() {
    let p = started("hlp");
    // An any-port tunnel at the AP's address: its port is learned from
    // the AP's first frame, at the master only.
    p.nodes[0].ferry(&[
        "tunnel",
        "add",
        "ap2",
        "--address",
        "198.18.1.10",
        "--group",
        "group1",
    ]);
    p.wait_for(5, "ap2 on node 2", || {
        p.nodes[1].json(&["tunnels"])["tunnels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["ap"] == "ap2" && t["installed"] == true)
    });
    let got = p.exchange(
        true,
        &[p.up_frame_from(12_300, 0, 2, 1)],
        Duration::from_millis(400),
    );
    assert_eq!(got, vec![(1, None)], "upstream through ap2 at the master");
    let learned = |i: usize| -> Option<u64> {
        p.nodes[i].json(&["tunnels"])["tunnels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["ap"] == "ap2")
            .and_then(|t| t["learned_port"].as_u64())
    };
    assert_eq!(learned(0), Some(12_300));
    p.wait_for(5, "the learned port synced to node 2", || {
        learned(1) == Some(12_300)
    });
    let st = p.nodes[1].cluster();
    assert!(st["sync"]["learned_received"].as_u64() >= Some(1), "{st}");
    assert!(p.nodes[0].cluster()["sync"]["learned_sent"].as_u64() >= Some(1));

    // A session tunnel bound by a keepalive at the master only: the
    // binding reaches node 2 too.
    p.nodes[0].ferry(&[
        "tunnel",
        "add",
        "ap3",
        "--session-id",
        "00112233445566778899aabbccddeeff",
        "--group",
        "group1",
    ]);
    p.wait_for(5, "ap3 on node 2", || {
        p.nodes[1].ferry(&["tunnels"]).contains("ap3")
    });
    // From another address of the AP's namespace (ap2 takes any port at
    // 198.18.1.10); the echo has no route back, the binding needs none.
    p.ap.exec(&["ip", "addr", "add", "198.18.1.11/32", "dev", "ap0"])
        .unwrap();
    let to = std::net::SocketAddr::from((p.nodes[0].addr, 5247));
    p.ap.enter(|| {
        let s = std::net::UdpSocket::bind("198.18.1.11:12301")?;
        s.send_to(
            &ferry_dataplane::craft::keepalive(&[
                0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                0xee, 0xff,
            ]),
            to,
        )?;
        Ok::<_, anyhow::Error>(())
    })
    .unwrap();
    let address = |i: usize| -> Option<String> {
        p.nodes[i].json(&["tunnels"])["tunnels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["ap"] == "ap3")
            .and_then(|t| t["address"].as_str().map(str::to_string))
    };
    p.wait_for(5, "ap3 bound at node 1", || {
        address(0).as_deref() == Some("198.18.1.11")
    });
    p.wait_for(5, "ap3's binding synced to node 2", || {
        address(1).as_deref() == Some("198.18.1.11")
    });

    // The master dies; the AP has never sent through node 2, which
    // encapsulates to the port it knows only through sync.
    p.nodes[0].kill9();
    p.wait_for(5, "node 2 master", || is(&p, 1, "master"));
    p.wait_for(5, "the stations announced", || {
        p.nodes[1]
            .ferry(&["cluster", "history"])
            .contains("stations announced")
    });
    let got = p.exchange(false, &[Pair::down_frame(2, 2)], Duration::from_millis(400));
    assert_eq!(
        got,
        vec![(2, Some(p.nodes[1].addr))],
        "downstream through ap2 at node 2\n{}",
        counters(&p)
    );
}

#[test]
fn cutting_the_sync_streams_path_moves_it_to_the_next_and_back_when_healed() {
    let p = started("hsp");
    let via = |i: usize| p.nodes[i].cluster()["sync"]["path"].clone();
    assert_eq!(via(1), "198.18.9.1", "the stream starts on the first path");
    assert_eq!(via(0), "198.18.9.2");
    assert!(
        p.nodes[1].scrape().contains("ferry_ha_sync_path 1"),
        "{}",
        p.nodes[1].scrape()
    );

    // The first path cut: TCP would retransmit into it for minutes while
    // path 2 keeps the peer alive. The stream moves to path 2.
    p.nodes[0]
        .ns
        .exec(&["ip", "link", "set", "h1a", "down"])
        .unwrap();
    p.wait_for(10, "the stream on path 2 at both nodes", || {
        via(0) == "198.18.10.2"
            && via(1) == "198.18.10.1"
            && p.nodes[1].cluster()["sync"]["connected"] == true
    });
    // A station learned now reaches the backup over it; nobody failed
    // over.
    let got = p.exchange(true, &[p.up_frame(0, 7, 1)], Duration::from_millis(400));
    assert_eq!(got, vec![(1, None)], "upstream through the master");
    p.wait_for(5, "the new station synced to node 2 over path 2", || {
        p.nodes[1]
            .json(&["stations"])
            .to_string()
            .contains(&ferry_dataplane::tables::format_mac(&pair::station(7)))
    });
    assert!(
        is(&p, 0, "master") && is(&p, 1, "backup"),
        "{:?}",
        roles(&p)
    );
    let h = p.nodes[0].ferry(&["cluster", "history"]);
    assert!(
        h.contains("sync stream down: path 1 (198.18.9.2) marked down for 1 s")
            && h.contains("sync stream up with 198.18.10.2 (path 2)"),
        "{h}"
    );
    assert!(p.nodes[1].scrape().contains("ferry_ha_sync_path 2"));

    // Healed: after its hold the stream goes back to the first path.
    p.nodes[0]
        .ns
        .exec(&["ip", "link", "set", "h1a", "up"])
        .unwrap();
    p.wait_for(20, "the stream back on path 1", || {
        via(0) == "198.18.9.2" && via(1) == "198.18.9.1"
    });
    assert!(
        p.nodes[0]
            .ferry(&["cluster", "history"])
            .contains("path 1 (198.18.9.2) is back for 10 s")
    );
    assert!(
        is(&p, 0, "master") && is(&p, 1, "backup"),
        "{:?}",
        roles(&p)
    );
}

#[test]
fn tables_changed_apart_converge_on_the_heal_and_a_restart_keeps_the_revision() {
    let p = started("hrt");
    let tunnels = |i: usize| p.nodes[i].aps();
    let revision = |i: usize| p.nodes[i].cluster()["revision"].as_u64().unwrap();
    let history = |i: usize| p.nodes[i].ferry(&["cluster", "history"]);

    // Node 1 (the lower address) starts clean from an edited file while
    // the pair is at revision 0: its table is not the pair's, so it takes
    // node 2's instead of pushing its own.
    p.nodes[0].stop();
    let mut text = std::fs::read_to_string(&p.nodes[0].config).unwrap();
    text.push_str("[[tunnel]]\nap = \"apz\"\naddress = \"198.18.1.29\"\ngroup = \"group1\"\n");
    std::fs::write(&p.nodes[0].config, text).unwrap();
    p.start_replace(0);
    p.wait_for(10, "node 1 back on node 2's table", || {
        tunnels(0) == ["ap1"] && p.nodes[0].cluster()["sync"]["connected"] == true
    });
    assert_eq!(tunnels(1), ["ap1"]);
    assert!(
        history(0).contains(
            "the tables differ at equal revision 0: taking the peer's (this node started with another table)"
        ),
        "{}",
        history(0)
    );

    // A partition; each side adds its own tunnel: both reach revision 1
    // with different tables.
    for dev in ["h1a", "h1b"] {
        p.nodes[0]
            .ns
            .exec(&["ip", "link", "set", dev, "down"])
            .unwrap();
    }
    p.wait_for(5, "the peer down on both sides", || {
        p.nodes[0].cluster()["peer"]["state"] == "down"
            && p.nodes[1].cluster()["peer"]["state"] == "down"
    });
    for (i, ap, addr) in [(0, "apa", "198.18.1.21"), (1, "apb", "198.18.1.22")] {
        p.nodes[i].ferry(&["tunnel", "add", ap, "--address", addr, "--group", "group1"]);
        assert_eq!(revision(i), 1);
    }
    assert_ne!(tunnels(0), tunnels(1));

    // The heal: equal revisions, different tables, both confirmed. The
    // node with the lower address (node 1) keeps its table and node 2
    // takes it.
    for dev in ["h1a", "h1b"] {
        p.nodes[0]
            .ns
            .exec(&["ip", "link", "set", dev, "up"])
            .unwrap();
    }
    p.wait_for(10, "one table for the pair", || {
        tunnels(0) == ["ap1", "apa"] && tunnels(1) == ["ap1", "apa"]
    });
    assert_eq!((revision(0), revision(1)), (1, 1));
    assert!(
        history(1).contains(
            "the tables differ at equal revision 1: taking the peer's (the peer has the lower address)"
        ),
        "{}",
        history(1)
    );
    assert!(history(0).contains("the tables differ at equal revision 1: keeping ours"));

    // A restart over the running maps keeps the revision with the table
    // it names (before, every start was at 0); the log says it was kept,
    // not learnt from the peer.
    p.nodes[1].stop();
    p.start(1);
    assert_eq!(revision(1), 1, "{}", p.nodes[1].log());
    assert!(
        p.nodes[1].log().contains("revision=1 kept=true"),
        "{}",
        p.nodes[1].log()
    );
    p.wait_for(10, "node 2 a synced backup again", || {
        is(&p, 1, "backup") && p.nodes[1].cluster()["groups"][0]["synced"] == true
    });
    assert_eq!(tunnels(1), ["ap1", "apa"]);
    assert_eq!(revision(1), 1);
}

//! Planned handovers end to end: `ferry failover` and preemption in the
//! two-node lab, with the dual-link AP and sequence-numbered traffic both
//! ways (see `pair` and `pair::ap`). Needs root.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

mod pair;

use std::time::Duration;

use pair::Pair;
use serde_json::Value;

/// Handover events in a node's history.
fn handover_events(p: &Pair, i: usize) -> Vec<String> {
    p.nodes[i]
        .json(&["cluster", "history"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "handover" || e["kind"] == "preempt")
        .map(|e| e["detail"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn planned_failover_under_traffic_loses_nothing_twenty_times_in_a_row() {
    let p = Pair::started("hfo", [false, false]);
    // Refused whole, before anything moves.
    let o = p.nodes[1].try_ferry(&["failover"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("masters no group"), "{err}");
    let o = p.nodes[0].try_ferry(&["failover", "--group", "nope"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no group \"nope\""));
    // A resync is a bulk both ways, recorded at both ends.
    let bulks = |i: usize| {
        p.nodes[i]
            .json(&["cluster", "history"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "bulk_end")
            .count()
    };
    let before = [bulks(0), bulks(1)];
    p.nodes[1].ferry(&["cluster", "resync"]);
    p.wait_for(5, "a bulk each way after the resync", || {
        bulks(0) >= before[0] + 2 && bulks(1) >= before[1] + 2
    });

    let runs = 20;
    let (results, report) = p.with_dual_link_ap(0, 500, |live| {
        let mut out: Vec<Value> = Vec::new();
        for run in 0..runs {
            let from = run % 2;
            assert_eq!(
                live.master(),
                from,
                "run {run}: the AP's data is on node {from}"
            );
            if run == 0 {
                // The human form once (the README shows it).
                let o = p.nodes[from].try_ferry(&["failover"]);
                let (out, err) = (
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr),
                );
                eprintln!("$ ferry failover\n{err}{out}");
                assert!(o.status.success(), "{err}");
                assert!(out.contains("group1: handed to the peer in"), "{out}");
                assert!(out.contains("forwarded meanwhile: here"), "{out}");
                assert_eq!(live.master(), 1, "the AP moved with it");
                continue;
            }
            let v = p.nodes[from].json(&["failover"]);
            let h = &v[0];
            assert_eq!(h["phase"], "done", "run {run}: {v}");
            assert!(h["error"].is_null(), "run {run}: {v}");
            assert!(
                p.is(1 - from, "master") && p.is(from, "backup"),
                "run {run}"
            );
            assert_eq!(live.master(), 1 - from, "run {run}: the AP moved with it");
            out.push(h.clone());
        }
        // No preemption when it is off: node 1 has priority 200 and
        // stays backup (the last run handed the group to it... or not).
        let master = runs % 2;
        std::thread::sleep(Duration::from_secs(1));
        assert!(p.is(master, "master") && p.is(1 - master, "backup"));
        out
    });
    let counters = p.counters();
    assert!(
        report.up_lost.is_empty() && report.down_lost.is_empty(),
        "lost up {:?} of {}, down {:?} of {}\n{report:?}\n{counters}",
        report.up_lost,
        report.up_sent,
        report.down_lost,
        report.down_sent
    );
    assert!(
        report.up_sent > 2000 && report.down_sent > 2000,
        "{report:?}"
    );
    assert_eq!(report.moves.len(), runs, "{report:?}");
    assert_eq!(results.len(), runs - 1);
    assert!(report.down_from.iter().all(|n| *n > 100), "{report:?}");
    for (run, h) in results.iter().enumerate() {
        assert_eq!(h["drained_by"], "quiet", "run {run}: {h}");
        assert!(
            h["peer_flip_us"].as_u64().unwrap() < 10_000,
            "run {run}: {h}"
        );
        assert!(h["here_up"].as_u64().unwrap() > 0, "run {run}: {h}");
        assert!(h["peer_up"].as_u64().unwrap() > 0, "run {run}: {h}");
        assert!(h["announced"].as_u64().unwrap() >= 1, "run {run}: {h}");
    }
    // Every unanswered keepalive is counted.
    let m = p.nodes[0].scrape();
    assert!(
        !m.contains("ferry_keepalives_total{outcome=\"handing_over\"} 0\n"),
        "{m}"
    );
}

#[test]
fn a_returning_higher_priority_node_preempts_through_a_lossless_handover() {
    let p = Pair::started("hpr", [true, false]);
    p.nodes[0].kill9();
    p.wait_for(5, "node 2 master after the kill", || p.is(1, "master"));
    let ((), report) = p.with_dual_link_ap(1, 500, |live| {
        p.start(0);
        // Priority 200, preempt on, delay 0: back as soon as it is synced,
        // through the planned handover.
        p.wait_for(15, "node 1 master again", || {
            p.is(0, "master") && p.is(1, "backup")
        });
        p.wait_for(5, "the AP back on node 1", || live.master() == 0);
        std::thread::sleep(Duration::from_millis(500));
    });
    let counters = p.counters();
    assert!(
        report.up_lost.is_empty() && report.down_lost.is_empty(),
        "lost up {:?} of {}, down {:?} of {}\n{report:?}\n{counters}\n--- node 1:\n{}\n--- node 2:\n{}",
        report.up_lost,
        report.up_sent,
        report.down_lost,
        report.down_sent,
        p.nodes[0].log(),
        p.nodes[1].log()
    );
    let st = p.nodes[0].cluster();
    assert_eq!(st["groups"][0]["reason"], "handover", "{st}");
    let asked = handover_events(&p, 0);
    assert!(
        asked.iter().any(|e| e.contains("asked the peer")),
        "{asked:?}"
    );
    let gave = handover_events(&p, 1);
    assert!(gave.iter().any(|e| e.contains("preempts")), "{gave:?}");
    assert!(
        gave.iter().any(|e| e.contains("standby in the data plane")),
        "{gave:?}"
    );
    assert_eq!(report.moves.len(), 1, "{report:?}");
}

#[test]
fn an_aps_data_at_the_backup_promotes_it_before_the_dead_interval() {
    // A dead interval of 20 heartbeats (1 s): longer than the AP takes to
    // give up on a silent master (3 keepalives of 100 ms).
    let ha = |priority| pair::NodeHa {
        priority,
        preempt: false,
        extra: "dead_after = 20",
    };
    let p = Pair::started_with("hwi", [ha(200), ha(100)]);
    let ((), report) = p.with_dual_link_ap(0, 500, |live| {
        p.nodes[0].signal(libc::SIGSTOP);
        p.wait_for(5, "node 2 master", || p.is(1, "master"));
        p.wait_for(5, "the AP on node 2", || live.master() == 1);
        let st = p.nodes[1].cluster();
        p.nodes[0].signal(libc::SIGCONT);
        assert_eq!(st["groups"][0]["reason"], "witness", "{st}");
    });
    assert_eq!(report.moves.len(), 1, "{report:?}");
}

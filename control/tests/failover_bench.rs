//! The failover benchmark (issue 10's figures), on the two-node lab of
//! `pair` with its dual-link AP and 500 frames a second each way:
//!
//! - unplanned: `kill -9` of the master, 20 times (alternating nodes, the
//!   killed one restarted as backup and resynced between runs): takeover
//!   time (SIGKILL to the backup's group active in its pinned role map,
//!   polled in a tight loop), decision to flip (the role write the backup
//!   timed, from its history), and frames lost per direction, in all and
//!   once the AP's data had moved to the new master;
//! - planned: `ferry failover`, 20 times back and forth: the peer's role
//!   write, order to peer active, drain, whole handover, frames lost.
//!
//! Ignored by `cargo test` (a benchmark, not a check: it asserts only that
//! each run completed). Run it with
//! `cargo test -p ferry --test failover_bench -- --ignored --nocapture`;
//! bench/RESULTS.md has the figures. Needs root.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

mod pair;

use std::time::{Duration, Instant};

use ferry_dataplane::datapath::GroupRoles;
use pair::Pair;

const RUNS: usize = 20;

/// min / median / p95 / max of `v`.
fn summary(v: &mut [f64]) -> String {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!(
        "min {:.1} / median {:.1} / p95 {:.1} / max {:.1}",
        v[0],
        at(0.5),
        at(0.95),
        v[v.len() - 1]
    )
}

/// The last role write the node timed for group 1, µs ("data plane
/// written in N µs" in its history).
fn last_flip_us(p: &Pair, i: usize) -> Option<f64> {
    let h = p.nodes[i].json(&["cluster", "history"]);
    h.as_array()?.iter().rev().find_map(|e| {
        let d = e["detail"].as_str()?;
        let rest = d.split("data plane written in ").nth(1)?;
        rest.split(' ').next()?.parse().ok()
    })
}

#[test]
#[ignore = "a benchmark: run with --ignored --nocapture"]
fn failover_figures() {
    let p = Pair::started("hbf", [false, false]);
    let mut takeover_ms = Vec::new();
    let mut flip_us = Vec::new();
    let mut lost = [Vec::new(), Vec::new()];
    let mut lost_after = [Vec::new(), Vec::new()];
    for run in 0..RUNS {
        let (m, b) = if p.is(0, "master") { (0, 1) } else { (1, 0) };
        let roles = GroupRoles::open_pinned(&p.nodes[b].pin_dir(&p.pin_root)).unwrap();
        let (at_move, report) = p.with_dual_link_ap(m, 500, |live| {
            let t0 = Instant::now();
            p.nodes[m].kill9();
            while !roles.active(1).unwrap() {
                assert!(
                    t0.elapsed() < Duration::from_secs(5),
                    "run {run}: no takeover"
                );
                std::hint::spin_loop();
            }
            takeover_ms.push(t0.elapsed().as_secs_f64() * 1e3);
            p.wait_for(5, "the AP on the new master", || live.master() == b);
            let (up, _, down, _) = live.counts();
            std::thread::sleep(Duration::from_millis(500));
            (up, down)
        });
        flip_us.push(last_flip_us(&p, b).unwrap());
        lost[0].push(report.up_lost.len() as f64);
        lost[1].push(report.down_lost.len() as f64);
        lost_after[0].push(report.up_lost.iter().filter(|s| **s >= at_move.0).count() as f64);
        lost_after[1].push(report.down_lost.iter().filter(|s| **s >= at_move.1).count() as f64);
        p.start(m);
        p.wait_for(10, "the killed node back as a synced backup", || {
            p.is(m, "backup") && p.nodes[m].cluster()["groups"][0]["synced"] == true
        });
        eprintln!(
            "kill -9 run {run}: takeover {:.1} ms, lost up {} down {}",
            takeover_ms[run],
            report.up_lost.len(),
            report.down_lost.len()
        );
    }
    let mut planned = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    let ((), report) = p.with_dual_link_ap(usize::from(p.is(1, "master")), 500, |live| {
        for run in 0..RUNS {
            let m = live.master();
            let v = p.nodes[m].json(&["failover"]);
            let h = &v[0];
            assert_eq!(h["phase"], "done", "planned run {run}: {v}");
            for (i, k) in ["take_us", "peer_flip_us", "drain_ms", "elapsed_ms"]
                .iter()
                .enumerate()
            {
                planned[i].push(h[k].as_f64().unwrap());
            }
            p.wait_for(5, "the AP moved", || live.master() != m);
        }
    });
    println!(
        "failover benchmark: {RUNS} runs each, lab AP at 500 frames/s each way, default timers (heartbeat 50 ms, dead_after 3)"
    );
    println!("kill -9 of the master:");
    println!(
        "  takeover (SIGKILL to the backup's group active), ms: {}",
        summary(&mut takeover_ms)
    );
    println!(
        "  decision to flip (the backup's role write), µs: {}",
        summary(&mut flip_us)
    );
    for (d, name) in [(0, "up"), (1, "down")] {
        println!(
            "  frames lost {name}: in all {}; after the AP moved to the new master {}",
            summary(&mut lost[d]),
            summary(&mut lost_after[d])
        );
    }
    println!("ferry failover (planned):");
    println!(
        "  Take to the peer's answer (active there within it), µs: {}",
        summary(&mut planned[0])
    );
    println!("  its role write, µs: {}", summary(&mut planned[1]));
    println!("  drain, ms: {}", summary(&mut planned[2]));
    println!("  whole handover, ms: {}", summary(&mut planned[3]));
    println!(
        "  frames lost over all {RUNS} runs: up {} of {}, down {} of {}",
        report.up_lost.len(),
        report.up_sent,
        report.down_lost.len(),
        report.down_sent
    );
}

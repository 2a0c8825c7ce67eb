//! `ferry-bench failover`: the HA pair's figures (issue 10), on the
//! two-node namespace lab the HA tests use (`control/tests/pair`: two
//! `ferry run` nodes, the dual-link AP, a client side and a core bridge),
//! with default timers (heartbeat 50 ms, dead after 3):
//!
//! - `unplanned`: `kill -9` of the master, RUNS times ([`takeover`]);
//! - `planned`: `ferry failover` under traffic, RUNS times;
//! - `keepalived`: the comparator, keepalived's VRRPv3 at the same advert
//!   interval on the same namespaces, its master killed RUNS times
//!   ([`keepalived`]);
//! - `load`: heartbeat gaps and false failovers while 25,600-tunnel tables
//!   are swapped and 1,000,000 stations are streamed and bulk-synced, with
//!   the time each takes ([`load`]).
//!
//! The lab is shared with the tests (compiled in from `control/tests`, one
//! copy); its helpers panic with both nodes' logs when the lab misbehaves.

// The lab is test code: it asserts (with the nodes' logs) instead of
// returning errors, and not every helper serves the benchmark.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]
#[path = "../../../control/tests/pair/mod.rs"]
mod pair;

mod heartbeats;
mod keepalived;
mod load;
mod takeover;

use anyhow::Result;
use clap::ValueEnum;
use serde::Serialize;

pub use self::{keepalived::Keepalived, load::Load, takeover::Planned, takeover::Unplanned};
use pair::Pair;

/// ferry's heartbeat interval in the lab (the default).
const HEARTBEAT_MS: u64 = 50;

/// One part of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
pub enum Phase {
    /// `kill -9` of the master.
    Unplanned,
    /// `ferry failover`.
    Planned,
    /// keepalived's takeover on the same namespaces.
    Keepalived,
    /// Heartbeats and failovers under swaps and bulks.
    Load,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The parts, in this order.
    pub phases: Vec<Phase>,
    /// Runs of each takeover kind.
    pub runs: usize,
    /// Tunnels in the swapped table.
    pub tunnels: u32,
    /// Stations streamed and bulk-synced.
    pub stations: u32,
    /// Whole-table swaps.
    pub swaps: u32,
    /// Forced bulks.
    pub bulks: u32,
}

/// min / median / p95 / p99 / max of a sample.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Summary {
    /// Samples.
    pub n: usize,
    /// Smallest.
    pub min: f64,
    /// Median.
    pub median: f64,
    /// 95th percentile (nearest rank).
    pub p95: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Summary {
    /// The summary of `v` (sorted in place); zeros when empty.
    pub fn of(v: &mut [f64]) -> Self {
        Self {
            n: v.len(),
            min: Self::quantile(v, 0.0),
            median: Self::quantile(v, 0.5),
            p95: Self::quantile(v, 0.95),
            p99: Self::quantile(v, 0.99),
            max: Self::quantile(v, 1.0),
        }
    }

    /// The `q` quantile of `v` (sorted in place), nearest rank; 0 when
    /// empty.
    pub fn quantile(v: &mut [f64], q: f64) -> f64 {
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return 0.0;
        }
        v[((v.len() - 1) as f64 * q).round() as usize]
    }

    fn line(&self, unit: &str) -> String {
        format!(
            "min {:.1} / median {:.1} / p95 {:.1} / max {:.1} {unit} (n {})",
            self.min, self.median, self.p95, self.max, self.n
        )
    }
}

/// Everything measured.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Heartbeat interval, ms.
    pub heartbeat_ms: u64,
    /// `kill -9` of the master.
    pub unplanned: Option<Unplanned>,
    /// `ferry failover`.
    pub planned: Option<Planned>,
    /// The comparator.
    pub keepalived: Option<Keepalived>,
    /// Swaps and bulks.
    pub load: Option<Load>,
    /// Targets checked and whether each was met.
    pub targets: Vec<(String, bool)>,
}

/// Runs the chosen phases.
pub fn run(o: &Options, progress: impl Fn(&str)) -> Result<Report> {
    let mut r = Report {
        heartbeat_ms: HEARTBEAT_MS,
        ..Report::default()
    };
    let wants = |p| o.phases.contains(&p);
    if wants(Phase::Unplanned) || wants(Phase::Planned) || wants(Phase::Keepalived) {
        progress("starting the pair");
        let p = Pair::started("hbf", [false, false]);
        if wants(Phase::Unplanned) {
            r.unplanned = Some(takeover::unplanned(&p, o.runs, &progress)?);
        }
        if wants(Phase::Planned) {
            r.planned = Some(takeover::planned(&p, o.runs, &progress)?);
        }
        if wants(Phase::Keepalived) {
            // keepalived on the same namespaces and peer path, ferry gone.
            p.nodes[0].kill9();
            p.nodes[1].kill9();
            r.keepalived = Some(keepalived::run(&p, o.runs, HEARTBEAT_MS, &progress)?);
        }
    }
    if wants(Phase::Load) {
        r.load = Some(load::run(
            o.tunnels, o.stations, o.swaps, o.bulks, &progress,
        )?);
    }
    r.targets = targets(&r);
    Ok(r)
}

/// The targets that this run measured.
fn targets(r: &Report) -> Vec<(String, bool)> {
    let mut t = Vec::new();
    if let Some(u) = &r.unplanned {
        t.push((
            format!("takeover p95 <= 180 ms ({:.1} ms)", u.takeover_ms.p95),
            u.takeover_ms.p95 <= 180.0,
        ));
        t.push((
            format!("decision to flip p99 < 1 ms ({:.0} µs)", u.flip_us.p99),
            u.flip_us.p99 < 1000.0,
        ));
        t.push((
            format!(
                "0 frames lost once the AP reached the new master (worst run: up {}, down {})",
                u.lost_after_move[0].max, u.lost_after_move[1].max
            ),
            u.lost_after_move[0].max == 0.0 && u.lost_after_move[1].max == 0.0,
        ));
        if let Some(k) = &r.keepalived {
            t.push((
                format!(
                    "takeover not slower than keepalived's (median {:.1} vs {:.1} ms, p95 {:.1} vs {:.1} ms)",
                    u.takeover_ms.median,
                    k.takeover_ms.median,
                    u.takeover_ms.p95,
                    k.takeover_ms.p95
                ),
                u.takeover_ms.median <= k.takeover_ms.median && u.takeover_ms.p95 <= k.takeover_ms.p95,
            ));
        }
    }
    if let Some(p) = &r.planned {
        t.push((
            format!(
                "planned failover loses nothing over {} runs (lost up {} of {}, down {} of {})",
                p.elapsed_ms.n, p.lost[0], p.sent[0], p.lost[1], p.sent[1]
            ),
            p.lost == [0, 0],
        ));
    }
    if let Some(l) = &r.load {
        t.push((
            format!(
                "{}-station bulk < 3 s (slowest {:.0} ms)",
                l.stations, l.bulk_ms.max
            ),
            l.bulk_ms.max < 3000.0,
        ));
        t.push((
            format!(
                "no false failover during {}-tunnel swaps and {}-station bulks ({} events)",
                l.tunnels,
                l.stations,
                l.false_events.len()
            ),
            l.false_events.is_empty(),
        ));
    }
    t
}

/// The report for people.
pub fn print(r: &Report) {
    println!(
        "ferry HA pair, default timers (heartbeat {} ms, dead after 3)",
        r.heartbeat_ms
    );
    if let Some(u) = &r.unplanned {
        println!(
            "kill -9 of the master ({} runs, lab AP at {} frames/s each way):",
            u.takeover_ms.n,
            takeover::RATE
        );
        println!(
            "  takeover (SIGKILL to the backup's group active): {}",
            u.takeover_ms.line("ms")
        );
        println!(
            "  decision to flip (the role write):               {}",
            u.flip_us.line("µs")
        );
        for (d, name) in [(0, "up  "), (1, "down")] {
            println!(
                "  frames lost {name}: in all {}; after the AP moved {}",
                u.lost[d].line(""),
                u.lost_after_move[d].line("")
            );
        }
    }
    if let Some(k) = &r.keepalived {
        println!(
            "{} (advert_int {} ms, same namespaces):",
            k.version, k.advert_ms
        );
        println!(
            "  takeover (SIGKILL to the backup's MASTER notification): {}",
            k.takeover_ms.line("ms")
        );
    }
    if let Some(p) = &r.planned {
        println!("ferry failover ({} runs):", p.elapsed_ms.n);
        println!("  Take to the peer's answer: {}", p.take_us.line("µs"));
        println!("  the peer's role write:     {}", p.peer_flip_us.line("µs"));
        println!("  drain:                     {}", p.drain_ms.line("ms"));
        println!("  whole handover:            {}", p.elapsed_ms.line("ms"));
        println!(
            "  frames lost: up {} of {}, down {} of {}",
            p.lost[0], p.sent[0], p.lost[1], p.sent[1]
        );
    }
    if let Some(l) = &r.load {
        println!(
            "under load ({} tunnels, {} stations):",
            l.tunnels, l.stations
        );
        println!(
            "  swap on the master until the backup runs it: {}",
            l.swap_ms.line("ms")
        );
        println!(
            "  {} stations written on the master in {:.2} s; all installed on the backup {:.2} s after the last",
            l.stations, l.write_s, l.stream_s
        );
        for (what, v) in [
            (
                "bulk (master's read to the backup's end marker)",
                &l.bulk_ms,
            ),
            ("  of which the master's read", &l.bulk_read_ms),
            ("  of which the backup receiving, installing", &l.bulk_rx_ms),
            (
                "`ferry cluster resync` on the backup to the end",
                &l.resync_ms,
            ),
        ] {
            println!("  {what:<50} {}", v.line("ms"));
        }
        println!(
            "  heartbeat gaps, ms ({:<20} {:<18} {:>6} {:>7} {:>7} {:>7}):",
            "phase", "direction", "n", "median", "p99", "max"
        );
        for g in &l.gaps {
            println!(
                "    {:<20} {:<18} {:>6} {:>7.1} {:>7.1} {:>7.1}",
                g.phase, g.direction, g.heartbeats, g.gap_ms.median, g.p99_ms, g.gap_ms.max
            );
        }
        for h in &l.heartbeats {
            println!(
                "  heartbeats {} on path {}: {} sent, {} accepted",
                h.direction, h.path, h.sent, h.received
            );
        }
        for e in &l.false_events {
            println!("  FALSE FAILOVER EVENT: {e}");
        }
    }
    for (t, ok) in &r.targets {
        println!("target {t}: {}", if *ok { "met" } else { "MISSED" });
    }
}

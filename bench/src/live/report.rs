//! What `ferry-bench live` reports: a row per workload and contender
//! (median rate over rounds, loss, wrong frames, the contender's own count
//! against the sink's, the spread over CPUs), latency rows, and the ratios
//! the targets are judged on, each taken within the run.

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{
    Options, Sizes,
    contenders::{Contender, Sample},
    frames::Direction,
};

/// One workload and contender.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Table size.
    pub table: String,
    /// Direction.
    pub dir: Direction,
    /// Frame sizes.
    pub sizes: String,
    /// Contender.
    pub contender: Contender,
    /// Sender threads (cores).
    pub cores: u32,
    /// Frames the sink accepted per second, median over rounds.
    pub pps: f64,
    /// Frames the sink accepted per second in each round, in order.
    pub round_pps: Vec<f64>,
    /// Their Gbit/s (frame bytes as delivered), median over rounds.
    pub gbps: f64,
    /// Sent but never arrived, all rounds, fraction.
    pub loss: f64,
    /// Arrived but wrong (size, trailer, headers, station), all rounds.
    pub wrong: u64,
    /// The contender's own forwarded count minus the sink's good frames,
    /// all rounds (None: the contender keeps no count).
    pub count_gap: Option<i64>,
    /// ferry: slow lookups per accepted frame, all rounds (upstream
    /// station-table reads, how often its learning hints missed;
    /// downstream FIB lookups, how often its next-hop cache missed; None
    /// for the others).
    pub slow_lookups: Option<f64>,
    /// Share of the accepted frames by CPU.
    pub cpu_share: Vec<f64>,
}

/// The median: the middle value, or the mean of the two middle ones (with
/// `--rounds 2`, the upper one alone would be the better round).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `a`'s rate over `b`'s, both measured on the same workload: the median
/// of the ratios of their rounds taken side by side (round `i` of each ran
/// back to back), so that this machine's slow drifts, which move a whole
/// stretch of rounds, cancel. A ratio of the two medians can compare one
/// contender's fast round with the other's slow one (bench/RESULTS.md,
/// "Ratios from rounds side by side").
fn paired(a: &Row, b: &Row) -> f64 {
    let v: Vec<f64> = a
        .round_pps
        .iter()
        .zip(&b.round_pps)
        .map(|(x, y)| x / y.max(1.0))
        .collect();
    if v.is_empty() {
        a.pps / b.pps.max(1.0)
    } else {
        median(v)
    }
}

impl Row {
    /// The row for `samples`.
    pub fn new(
        table: &str,
        dir: Direction,
        sizes: Sizes,
        c: Contender,
        cores: u32,
        samples: &[Sample],
    ) -> Self {
        let secs = |s: &Sample| (s.sent.secs + s.drain_secs).max(1e-9);
        let sent: u64 = samples.iter().map(|s| s.sent.frames).sum();
        let good: u64 = samples.iter().map(|s| s.sunk.total.good).sum();
        let wrong: u64 = samples.iter().map(|s| s.sunk.bad()).sum();
        let mut cpu = Vec::new();
        for s in samples {
            cpu.resize(cpu.len().max(s.sunk.per_cpu.len()), 0u64);
            for (i, n) in s.sunk.per_cpu.iter().enumerate() {
                cpu[i] += n;
            }
        }
        let count_gap = samples
            .iter()
            .map(|s| s.forwarded.map(|f| f as i64 - s.sunk.total.good as i64))
            .sum::<Option<i64>>();
        let slow_lookups = samples
            .iter()
            .map(|s| s.slow_lookups)
            .sum::<Option<u64>>()
            .map(|r| r as f64 / good.max(1) as f64);
        Self {
            table: table.into(),
            dir,
            sizes: sizes.name(),
            contender: c,
            cores,
            pps: median(
                samples
                    .iter()
                    .map(|s| s.sunk.total.good as f64 / secs(s))
                    .collect(),
            ),
            round_pps: samples
                .iter()
                .map(|s| s.sunk.total.good as f64 / secs(s))
                .collect(),
            gbps: median(
                samples
                    .iter()
                    .map(|s| s.sunk.total.bytes as f64 * 8.0 / secs(s) / 1e9)
                    .collect(),
            ),
            loss: if sent == 0 {
                0.0
            } else {
                1.0 - (good + wrong) as f64 / sent as f64
            },
            wrong,
            count_gap,
            slow_lookups,
            cpu_share: cpu.iter().map(|n| *n as f64 / good.max(1) as f64).collect(),
        }
    }

    /// One line for the progress display.
    pub fn line(&self) -> String {
        let what = match self.dir {
            Direction::Up => "table reads",
            Direction::Down => "FIB lookups",
        };
        let reads = self
            .slow_lookups
            .map_or(String::new(), |r| format!("  {what} {r:.3}/frame"));
        format!(
            "{:<9} {:>6.3} Mpps {:>6.2} Gbit/s  loss {:.2}%  wrong {}  count gap {}  cpu {}{reads}",
            self.contender.name(),
            self.pps / 1e6,
            self.gbps,
            self.loss * 100.0,
            self.wrong,
            self.count_gap.map_or("-".into(), |g| g.to_string()),
            self.cpu_share
                .iter()
                .map(|s| format!("{:.0}%", s * 100.0))
                .collect::<Vec<_>>()
                .join("/")
        )
    }
}

/// Latency of one contender at one offered load.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyRow {
    /// Direction.
    pub dir: Direction,
    /// Contender.
    pub contender: Contender,
    /// Offered load as a fraction of the contender's maximum.
    pub load: f64,
    /// Offered frames per second.
    pub offered_pps: f64,
    /// Accepted frames per second.
    pub pps: f64,
    /// Latency percentiles and maximum, ns (bucket floors: ±3%).
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Largest.
    pub max_ns: u64,
    /// Frames measured.
    pub frames: u64,
}

impl LatencyRow {
    /// The row for one paced round and its histogram.
    pub fn new(dir: Direction, c: Contender, load: f64, s: &Sample, h: &Histogram<u64>) -> Self {
        let secs = (s.sent.secs + s.drain_secs).max(1e-9);
        Self {
            dir,
            contender: c,
            load,
            offered_pps: s.sent.frames as f64 / s.sent.secs.max(1e-9),
            pps: s.sunk.total.good as f64 / secs,
            p50_ns: h.value_at_quantile(0.5),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            max_ns: h.max(),
            frames: h.len(),
        }
    }

    /// One line for the progress display.
    pub fn line(&self) -> String {
        format!(
            "{:<9} {:?} at {:>3.0}% ({:.3} Mpps): p50 {:.1} µs  p99 {:.1} µs  p99.9 {:.1} µs  max {:.1} µs",
            self.contender.name(),
            self.dir,
            self.load * 100.0,
            self.pps / 1e6,
            self.p50_ns as f64 / 1e3,
            self.p99_ns as f64 / 1e3,
            self.p999_ns as f64 / 1e3,
            self.max_ns as f64 / 1e3
        )
    }
}

/// A ratio within the run, with its target if it has one.
#[derive(Clone, Debug, Serialize)]
pub struct Ratio {
    /// What is divided by what.
    pub what: String,
    /// The ratio.
    pub value: f64,
    /// The target, in words.
    pub target: Option<String>,
    /// Whether it is met.
    pub met: Option<bool>,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Queues (and sender threads).
    pub queues: u32,
    /// Seconds per round.
    pub secs: f64,
    /// Rounds per contender and workload.
    pub rounds: u32,
    /// Throughput rows.
    pub rows: Vec<Row>,
    /// Scaling rows (1 core vs all).
    pub scaling: Vec<Row>,
    /// Latency rows.
    pub latency: Vec<LatencyRow>,
    /// The user-space forwarder at its best paced rate, per direction (1
    /// tunnel, fixed size), with the rate offered.
    pub best: Vec<(Row, f64)>,
    /// Ratios.
    pub ratios: Vec<Ratio>,
    /// Measurements that could not be taken, and why.
    pub skipped: Vec<String>,
    /// Conditions that make this run's figures incomparable with others.
    pub warnings: Vec<String>,
}

impl Report {
    /// An empty report for `o`.
    pub fn new(o: &Options) -> Self {
        Self {
            queues: o.queues,
            secs: o.secs,
            rounds: o.rounds,
            rows: Vec::new(),
            scaling: Vec::new(),
            latency: Vec::new(),
            best: Vec::new(),
            ratios: Vec::new(),
            skipped: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Contender `c`'s median rate in direction `dir` on the first (small,
    /// fixed-size) workload measured.
    pub fn max_pps(&self, c: Contender, dir: Direction) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.contender == c && r.dir == dir)
            .map(|r| r.pps)
    }

    fn find<'a>(
        rows: &'a [Row],
        table: &str,
        dir: Direction,
        sizes: &str,
        c: Contender,
    ) -> Option<&'a Row> {
        rows.iter()
            .find(|r| r.table == table && r.dir == dir && r.sizes == sizes && r.contender == c)
    }

    fn ratio(&mut self, what: String, value: f64, target: Option<(&str, bool)>) {
        self.ratios.push(Ratio {
            what,
            value,
            target: target.map(|t| t.0.to_string()),
            met: target.map(|t| t.1),
        });
    }

    /// Computes the ratios from the rows.
    pub fn finish(&mut self) {
        let rows = self.rows.clone();
        let small = "1 tunnel";
        let large = rows
            .iter()
            .find(|r| r.table != small)
            .map(|r| r.table.clone());
        for r in rows.iter().filter(|r| r.contender == Contender::Ferry) {
            let label = format!("{}, {:?}, {}", r.table, r.dir, r.sizes);
            if let Some(b) = Self::find(&rows, &r.table, r.dir, &r.sizes, Contender::Redirect) {
                let v = paired(r, b);
                self.ratio(
                    format!("ferry / redirect ({label})"),
                    v,
                    Some((">= 0.9", v >= 0.9)),
                );
            }
            if let Some(u) = Self::find(&rows, &r.table, r.dir, &r.sizes, Contender::Userspace) {
                let v = paired(r, u);
                self.ratio(
                    format!("ferry / userspace, same cores ({label})"),
                    v,
                    Some((">= 5", v >= 5.0)),
                );
            }
            if r.table == small
                && let Some(l) = large
                    .as_deref()
                    .and_then(|t| Self::find(&rows, t, r.dir, &r.sizes, Contender::Ferry))
            {
                let v = l.pps / r.pps.max(1.0);
                self.ratio(
                    format!("ferry {} / 1 tunnel ({:?}, {})", l.table, r.dir, r.sizes),
                    v,
                    Some((">= 0.85", v >= 0.85)),
                );
            }
        }
        for (u, _) in &self.best.clone() {
            if let Some(f) = Self::find(&rows, &u.table, u.dir, &u.sizes, Contender::Ferry) {
                let v = f.pps / u.pps.max(1.0);
                self.ratio(
                    format!(
                        "ferry / userspace at its best paced rate ({}, {:?}, {})",
                        u.table, u.dir, u.sizes
                    ),
                    v,
                    Some((">= 5", v >= 5.0)),
                );
            }
        }
        for dir in [Direction::Up, Direction::Down] {
            let p99 = |c: Contender| {
                self.latency
                    .iter()
                    .find(|l| l.contender == c && l.dir == dir && (l.load - 0.5).abs() < 1e-9)
                    .map(|l| l.p99_ns as f64)
            };
            if let (Some(f), Some(b)) = (p99(Contender::Ferry), p99(Contender::Redirect)) {
                let v = f / b.max(1.0);
                self.ratio(
                    format!("ferry p99 / redirect p99 at 50% load ({dir:?})"),
                    v,
                    Some(("<= 2", v <= 2.0)),
                );
            }
        }
        let scaling = self.scaling.clone();
        for c in [Contender::Ferry, Contender::Redirect] {
            let one = scaling.iter().find(|r| r.contender == c && r.cores == 1);
            let all = scaling
                .iter()
                .find(|r| r.contender == c && r.cores == self.queues);
            if let (Some(a), Some(b)) = (one, all) {
                self.ratio(
                    format!(
                        "{} {} cores / 1 core (Up, {})",
                        c.name(),
                        self.queues,
                        a.sizes
                    ),
                    b.pps / a.pps.max(1.0),
                    None,
                );
            }
        }
    }

    /// The report as text.
    pub fn text(&self) -> String {
        let mut s = format!(
            "live throughput: {} queue(s), {} round(s) of {} s per contender and workload, medians\n",
            self.queues, self.rounds, self.secs
        );
        for r in &self.rows {
            s.push_str(&format!(
                "  {:<32} {:<4} {:<5} {}\n",
                r.table,
                format!("{:?}", r.dir),
                r.sizes,
                r.line()
            ));
        }
        if !self.scaling.is_empty() {
            s.push_str("scaling (Up):\n");
            for r in &self.scaling {
                s.push_str(&format!("  {} core(s): {}\n", r.cores, r.line()));
            }
        }
        if !self.latency.is_empty() {
            s.push_str("latency (generator to sink, bpf_ktime_get_ns):\n");
            for l in &self.latency {
                s.push_str(&format!("  {}\n", l.line()));
            }
        }
        if !self.best.is_empty() {
            s.push_str("user-space forwarder at its best paced rate (1 tunnel):\n");
            for (r, offered) in &self.best {
                s.push_str(&format!(
                    "  {:<4} {:<5} offered {:.3} Mpps: {}\n",
                    format!("{:?}", r.dir),
                    r.sizes,
                    offered / 1e6,
                    r.line()
                ));
            }
        }
        s.push_str("ratios (same run):\n");
        for r in &self.ratios {
            let verdict = match (&r.target, r.met) {
                (Some(t), Some(m)) => format!("  target {t}: {}", if m { "met" } else { "MISSED" }),
                _ => String::new(),
            };
            s.push_str(&format!("  {:<60} {:>7.3}{verdict}\n", r.what, r.value));
        }
        for k in &self.skipped {
            s.push_str(&format!("skipped: {k}\n"));
        }
        for w in &self.warnings {
            s.push_str(&format!("warning: {w}\n"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(c: Contender, rounds: &[f64]) -> Row {
        Row {
            table: "1 tunnel".into(),
            dir: Direction::Up,
            sizes: "64B".into(),
            contender: c,
            cores: 2,
            pps: median(rounds.to_vec()),
            round_pps: rounds.to_vec(),
            gbps: 0.0,
            loss: 0.0,
            wrong: 0,
            count_gap: None,
            slow_lookups: None,
            cpu_share: Vec::new(),
        }
    }

    #[test]
    fn a_slow_stretch_moves_both_sides_of_a_paired_ratio() {
        // The machine is slow for the first two rounds of the redirect and
        // the first of ferry's (its second ran as the stretch ended). Round
        // by round, ferry is at 0.9 of the redirect but once.
        let redirect = row(Contender::Redirect, &[3.0, 3.1, 5.0]);
        let ferry = row(Contender::Ferry, &[2.7, 4.5, 4.5]);
        assert!((paired(&ferry, &redirect) - 0.9).abs() < 1e-9);
        // The ratio of the two medians compares a fast round with a slow
        // one.
        let of_medians = ferry.pps / redirect.pps;
        assert!((of_medians - 4.5 / 3.1).abs() < 1e-9);
        // Without per-round rates, the medians are all there is.
        let bare = |r: &Row| Row {
            round_pps: Vec::new(),
            ..r.clone()
        };
        assert!((paired(&bare(&ferry), &bare(&redirect)) - of_medians).abs() < 1e-9);
        // Two rounds: the mean of the two pairs, not the better one.
        let redirect = row(Contender::Redirect, &[5.0, 5.0]);
        let ferry = row(Contender::Ferry, &[4.0, 4.5]);
        assert!((paired(&ferry, &redirect) - 0.85).abs() < 1e-9);
    }
}

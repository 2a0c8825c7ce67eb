//! `ferry-bench live`: frames per second and latency through real
//! interfaces, ferry side by side with a plain XDP redirect and a
//! user-space forwarder, in the same run, in alternating rounds.
//!
//! Method. The lab ([`lab`]) gives every contender ([`contenders`]) its own
//! AC namespace between one shared AP namespace and one shared client
//! namespace, on multi-queue veth pairs with native XDP. The generator
//! ([`sender`], eBPF `bench_gen`) runs under BPF_PROG_TEST_RUN in
//! live-frames mode from pinned threads, one per queue, in the sending
//! namespace; it rewrites every frame's headers from a per-AP template on
//! every run (live pages come back holding the forwarder's rewrite), puts a
//! station MAC and a trailer (flow, sequence, timestamp) in it, and sends
//! it. The sink (eBPF `bench_sink`) on the far veth compares each frame's
//! first 64 bytes with what the contender must have produced (for ferry:
//! its reference model's output for the same frame, [`frames`]), checks
//! the station MAC against the trailer, histograms the latency and drops
//! it. A round sends to one contender for a fixed time; throughput is the
//! frames the sink accepted per second; rounds alternate over the
//! contenders so machine noise hits them alike, and each figure is the
//! median over rounds. A ratio between two contenders is the median of
//! their rounds' ratios, round `i` of one against round `i` of the other
//! (they ran back to back).
//!
//! What a figure includes. On veth the whole chain runs on the sending
//! core: the generator, the forwarder's NAPI poll and the sink's. So the
//! contenders' rates are rates of the same chain with a different middle,
//! and their ratio understates the difference of the middles alone.

pub mod contenders;
pub mod frames;
pub mod generator;
pub mod lab;
pub mod report;
pub mod rig;
pub mod sender;
pub mod txring;
pub mod userspace;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use ferry::config::Config;
use ferry_dataplane::model::Model;
use ferry_ebpf::loadgen::{CLASSES, GenSettings, LAT_BUCKETS, SinkSettings, lat_floor};

use self::{
    contenders::{Contender, Contenders, Sample, Scale, ferry_config},
    frames::{Direction, IMIX, MIN_FRAME, Mask, Payload},
    report::{LatencyRow, Report, Row},
    sender::{Offer, PACED_CALLS, PACED_CALLS_SOCKETS},
};

/// Frame sizes of a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sizes {
    /// One client frame size.
    Fixed(u16),
    /// [`IMIX`].
    Imix,
}

impl Sizes {
    /// (client frame length, weight) per class.
    pub fn classes(self) -> Vec<(u16, u32)> {
        match self {
            Self::Fixed(n) => vec![(n, 1)],
            Self::Imix => IMIX.to_vec(),
        }
    }

    /// Its name in reports.
    pub fn name(self) -> String {
        match self {
            Self::Fixed(n) => format!("{n}B"),
            Self::Imix => "IMIX".into(),
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `ferry` binary.
    pub ferry: PathBuf,
    /// Queues per veth, and sender threads (one per core).
    pub queues: u32,
    /// Seconds per round.
    pub secs: f64,
    /// Rounds per contender and workload.
    pub rounds: u32,
    /// The contenders.
    pub contenders: Vec<Contender>,
    /// Tunnels and stations of the large table (None: small table only).
    pub large: Option<Scale>,
    /// Upstream payload format.
    pub payload: Payload,
    /// Client frame size of the fixed-size workload.
    pub size: u16,
    /// Frames per kernel batch at full rate.
    pub batch: u32,
    /// Frames per kernel batch when paced (latency).
    pub latency_batch: u32,
    /// Measure latency at these fractions of each contender's maximum.
    pub loads: Vec<f64>,
    /// Measure 1 sender vs `queues` senders.
    pub scaling: bool,
    /// Rewrite every frame's headers on every run (false only to show
    /// what recycled live-mode pages do to a generator that does not).
    pub rewrite: bool,
}

/// The small table every run starts with.
pub const SMALL: Scale = Scale {
    aps: 1,
    stations: 1,
};

/// Runs the benchmark.
pub fn run(o: &Options, progress: &dyn Fn(&str)) -> Result<Report> {
    if o.size < MIN_FRAME || usize::from(o.size) > 1500 {
        bail!("--size must be {MIN_FRAME}-1500");
    }
    let big = o.large.map_or(1, |s| s.aps);
    if big == 0
        || o.large
            .is_some_and(|s| s.stations < s.aps || s.stations > 0x00ff_ffff)
    {
        bail!(
            "the large table needs at least one tunnel, a station per tunnel and fewer than 2^24 stations"
        );
    }
    let entries = big * CLASSES as u32;
    let max_stations = o.large.map_or(SMALL.stations, |s| s.stations);
    let mut cs = Contenders::new(
        &o.contenders,
        o.queues,
        entries,
        &o.ferry,
        (SMALL, max_stations),
        progress,
    )?;
    let mut report = Report::new(o);
    if bpf_stats_on() {
        let w = "kernel.bpf_stats_enabled is 1: every XDP program run pays two clock reads, \
                 so these figures are not comparable with runs without it (sysctl -w kernel.bpf_stats_enabled=0)";
        progress(&format!("warning: {w}"));
        report.warnings.push(w.to_string());
    }
    let mut scales = vec![("1 tunnel", SMALL)];
    if let Some(l) = o.large {
        scales.push(("large", l));
    }
    for (i, (label, scale)) in scales.iter().enumerate() {
        if i > 0 {
            cs.set_scale(&o.ferry, *scale, progress)?;
        }
        let label = if *scale == SMALL {
            (*label).to_string()
        } else {
            format!("{} tunnels, {} stations", scale.aps, scale.stations)
        };
        for dir in [Direction::Up, Direction::Down] {
            for sizes in [Sizes::Fixed(o.size), Sizes::Imix] {
                let frames = prepare(&mut cs, o, *scale, dir, sizes)?;
                let offer = Offer {
                    frames: frames.clone(),
                    secs: o.secs,
                    rate: None,
                    batch: o.batch,
                    calls: PACED_CALLS,
                };
                let who = active(o, dir);
                progress(&format!("{label}: {dir:?} {}", sizes.name()));
                let samples = rounds(&mut cs, &who, dir, o.queues, o.rounds, &offer)?;
                for (c, s) in &samples {
                    let row = Row::new(&label, dir, sizes, *c, o.queues, s);
                    progress(&format!("  {}", row.line()));
                    report.rows.push(row);
                }
                if *scale == SMALL && sizes == Sizes::Fixed(o.size) && !o.loads.is_empty() {
                    let xdp: Vec<Contender> = who
                        .iter()
                        .copied()
                        .filter(|c| *c != Contender::Userspace)
                        .collect();
                    latency(&mut cs, o, dir, &frames, &xdp, &mut report, progress)?;
                }
            }
        }
        if *scale == SMALL && o.scaling && o.queues > 1 {
            scaling(&mut cs, o, &mut report, progress)?;
        }
    }
    // The user-space forwarder's paced rounds go last. Before their runs
    // were limited to `PACED_CALLS_SOCKETS` a second, the next workload's
    // rounds of every contender once ran at a fifth of their rate after
    // them (1 tunnel, Up IMIX: ferry 0.68 and the redirect 0.71 Mpps,
    // against 3.9 and 4.7), and the kernel refused further runs with
    // ENOSPC (see `sender::PACED_CALLS_SOCKETS`). Its own tables serve the
    // small table's frames at any scale.
    if o.contenders.contains(&Contender::Userspace) && !o.loads.is_empty() {
        for dir in [Direction::Down, Direction::Up] {
            if !active(o, dir).contains(&Contender::Userspace) {
                continue;
            }
            let frames = prepare(&mut cs, o, SMALL, dir, Sizes::Fixed(o.size))?;
            let who = [Contender::Userspace];
            // A failure here costs the forwarder's remaining rows, not the
            // run.
            let r = latency(&mut cs, o, dir, &frames, &who, &mut report, progress)
                .and_then(|()| best_rate(&mut cs, o, dir, &frames, &mut report, progress));
            if let Err(e) = r {
                let why =
                    format!("user-space paced rounds {dir:?} (rows after the failure): {e:#}");
                progress(&format!("  skipped: {why}"));
                report.skipped.push(why);
            }
        }
    }
    report.finish();
    Ok(report)
}

/// Whether the kernel's BPF run-time statistics are on
/// (`kernel.bpf_stats_enabled`, left on by `bpftool prog profile` or a
/// sampler): every program run then pays two clock reads, which on a VM
/// cost more than a plain redirect (perf on this machine: the clock
/// source read was 12% of all samples), so ratios shift.
fn bpf_stats_on() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|s| s.trim() != "0")
}

/// The contenders that take part in direction `dir` (all of them: each
/// carries both upstream payloads).
fn active(o: &Options, _dir: Direction) -> Vec<Contender> {
    o.contenders.clone()
}

/// Installs the generator's templates and every sink's expectations for
/// a workload, and returns the frames to offer (one per size class).
fn prepare(
    cs: &mut Contenders,
    o: &Options,
    scale: Scale,
    dir: Direction,
    sizes: Sizes,
) -> Result<Vec<(Vec<u8>, u32)>> {
    let classes = sizes.classes();
    let keys = scale.aps;
    let config = Config::parse(
        Path::new("live.toml"),
        &ferry_config(&cs.dir, &cs.node, scale, cs.max_stations),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
    .context("the benchmark's own ferry configuration")?;
    let mut model = Model::new(&ferry::tables::lower::by_position(&config));
    let mut lens = [0u16; CLASSES];
    let mut templates = Vec::new();
    let mut inputs = Vec::new();
    let mut outputs = Vec::new();
    for (c, (len, _)) in classes.iter().enumerate() {
        for k in 0..keys {
            let f = frames::input(dir, o.payload, *len, k, k);
            lens[c] = f.len() as u16;
            templates.push(frames::template(&f, k)?);
            outputs.push(frames::ferry_output(&mut model, dir, &f, k, k)?);
            inputs.push(f);
        }
    }
    if !o.rewrite {
        for t in &mut templates {
            t.copy = 0;
        }
    }
    let gen_settings = GenSettings {
        flows: scale.stations,
        keys,
        lens,
    };
    for c in o.contenders.clone() {
        let (outs, mask) = match c {
            Contender::Redirect => (&inputs, Mask::Exact),
            Contender::Ferry => (&outputs, Mask::Exact),
            Contender::Userspace if dir == Direction::Down => (&outputs, Mask::KernelIp),
            Contender::Userspace => (&outputs, Mask::Exact),
        };
        let mut out_lens = [0u16; CLASSES];
        let mut expects = Vec::with_capacity(outs.len());
        for (i, out) in outs.iter().enumerate() {
            out_lens[i / keys as usize] = out.len() as u16;
            expects.push(frames::expect(out, i as u32 % keys, mask)?);
        }
        let rig = cs.rig(c)?;
        rig.set_gen(gen_settings, &templates)?;
        rig.set_sink(
            SinkSettings {
                keys,
                pad: 0,
                lens: out_lens,
            },
            &expects,
        )?;
    }
    Ok(classes
        .iter()
        .map(|(len, w)| (frames::input(dir, o.payload, *len, 0, 0), *w))
        .collect())
}

/// `n` rounds of `offer` to each of `who` from `threads` senders, the
/// order rotated each round.
fn rounds(
    cs: &mut Contenders,
    who: &[Contender],
    dir: Direction,
    threads: u32,
    n: u32,
    offer: &Offer,
) -> Result<Vec<(Contender, Vec<Sample>)>> {
    let mut out: Vec<(Contender, Vec<Sample>)> = who.iter().map(|c| (*c, Vec::new())).collect();
    for r in 0..n as usize {
        for i in 0..who.len() {
            let j = (i + r) % who.len();
            let s = cs.round(who[j], dir, threads, offer).with_context(|| {
                format!("a round of {} ({})", who[j].name(), cs.ferry_log().trim())
            })?;
            out[j].1.push(s);
        }
    }
    Ok(out)
}

/// Latency at fixed fractions of each contender's own maximum (the median
/// rate of its throughput rounds just measured), paced in small batches.
fn latency(
    cs: &mut Contenders,
    o: &Options,
    dir: Direction,
    frames: &[(Vec<u8>, u32)],
    who: &[Contender],
    report: &mut Report,
    progress: &dyn Fn(&str),
) -> Result<()> {
    for &c in who {
        // Nothing to pace against when a contender forwarded (almost) nothing.
        let Some(max) = report.max_pps(c, dir).filter(|m| *m >= 1000.0) else {
            continue;
        };
        for &load in &o.loads {
            let offer = Offer {
                frames: frames.to_vec(),
                secs: o.secs,
                rate: Some(max * load),
                batch: o.latency_batch,
                calls: if c == Contender::Userspace {
                    PACED_CALLS_SOCKETS
                } else {
                    PACED_CALLS
                },
            };
            let before = cs.rig(c)?.latency()?;
            let s = cs.round(c, dir, o.queues, &offer)?;
            let after = cs.rig(c)?.latency()?;
            let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 1 << 45, 3)
                .context("latency histogram")?;
            for b in 0..LAT_BUCKETS {
                let n = after[b].saturating_sub(before[b]);
                if n > 0 {
                    h.record_n(lat_floor(b).max(1), n)
                        .context("recording latency")?;
                }
            }
            let row = LatencyRow::new(dir, c, load, &s, &h);
            progress(&format!("  {}", row.line()));
            report.latency.push(row);
        }
    }
    Ok(())
}

/// Offered rates of the user-space forwarder's best-rate search, as
/// multiples of its full-load rate.
const BEST_RATE_STEPS: [f64; 4] = [1.0, 1.5, 2.0, 3.0];

/// The user-space forwarder's best paced rate in `dir` (1 tunnel, fixed
/// size). At full offered load it is in receive livelock, so its
/// throughput rows understate what it forwards; offered at multiples of
/// that rate, paced, its best delivered rate is the fairer comparison, and
/// ferry is rated against it too.
fn best_rate(
    cs: &mut Contenders,
    o: &Options,
    dir: Direction,
    frames: &[(Vec<u8>, u32)],
    report: &mut Report,
    progress: &dyn Fn(&str),
) -> Result<()> {
    let c = Contender::Userspace;
    let Some(max) = report.max_pps(c, dir).filter(|m| *m >= 1000.0) else {
        return Ok(());
    };
    let mut best: Option<(Row, f64)> = None;
    for step in BEST_RATE_STEPS {
        let rate = max * step;
        let offer = Offer {
            frames: frames.to_vec(),
            secs: o.secs,
            rate: Some(rate),
            batch: o.batch,
            calls: PACED_CALLS_SOCKETS,
        };
        let s = cs.round(c, dir, o.queues, &offer)?;
        let row = Row::new("1 tunnel", dir, Sizes::Fixed(o.size), c, o.queues, &[s]);
        progress(&format!(
            "  userspace {dir:?} offered {:.3} Mpps: {}",
            rate / 1e6,
            row.line()
        ));
        if best.as_ref().is_none_or(|(b, _)| row.pps > b.pps) {
            best = Some((row, rate));
        }
    }
    report.best.extend(best);
    Ok(())
}

/// 1 sender (one core, one queue) against `queues` senders, upstream at the
/// fixed size on the small table, ferry and the redirect.
fn scaling(
    cs: &mut Contenders,
    o: &Options,
    report: &mut Report,
    progress: &dyn Fn(&str),
) -> Result<()> {
    let offer = Offer {
        frames: prepare(cs, o, SMALL, Direction::Up, Sizes::Fixed(o.size))?,
        secs: o.secs,
        rate: None,
        batch: o.batch,
        calls: PACED_CALLS,
    };
    let who: Vec<Contender> = o
        .contenders
        .iter()
        .copied()
        .filter(|c| *c != Contender::Userspace)
        .collect();
    for threads in [1, o.queues] {
        progress(&format!("scaling: {threads} core(s)"));
        for (c, s) in rounds(cs, &who, Direction::Up, threads, o.rounds, &offer)? {
            let row = Row::new(
                "1 tunnel",
                Direction::Up,
                Sizes::Fixed(o.size),
                c,
                threads,
                &s,
            );
            progress(&format!("  {}", row.line()));
            report.scaling.push(row);
        }
    }
    Ok(())
}

//! `ferry-bench gen --live`: the live benchmark's generator on its own,
//! sending out of any interface (a lab veth, or a NIC towards a ferry box)
//! for a fixed time, at a fixed rate or as fast as it can.
//!
//! It sends the live benchmark's workload: CAPWAP data from APs
//! `198.19.x.y` (port 12222) to the AC at 198.18.0.1, one station MAC per
//! flow cycling over all stations, or the client-VLAN frames to the same
//! stations downstream; `--write-config` writes the ferry configuration
//! whose tunnels match. Every frame is rewritten from its template on every
//! run and carries the sequence/timestamp trailer, as in `ferry-bench
//! live`.
//!
//! The generator program is kept attached to an idle veth in a namespace
//! of its own while it runs (without that, each BPF_PROG_TEST_RUN call
//! re-patches the kernel's XDP dispatcher and sending crawls at ~11 kpps;
//! see the lab's anchor); that namespace is deleted on exit.

use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use ferry_dataplane::netns::{self, Netns};
use ferry_ebpf::loadgen::{CLASSES, GenSettings, PROG_GEN};

use super::{
    Sizes,
    frames::{self, Direction, MIN_FRAME, Payload},
    rig::Rig,
    sender::{self, Offer, PACED_CALLS},
};

/// What to send, and where.
#[derive(Clone, Debug)]
pub struct GenOptions {
    /// Named network namespace of the interface (None: this one).
    pub netns: Option<String>,
    /// Interface the frames leave by.
    pub iface: String,
    /// Upstream (CAPWAP from APs) or downstream (client-VLAN frames).
    pub direction: Direction,
    /// Upstream payload format.
    pub payload: Payload,
    /// Client frame sizes.
    pub sizes: Sizes,
    /// APs (tunnels) the frames come from or go to.
    pub aps: u32,
    /// Stations, cycled over.
    pub stations: u32,
    /// Frames per second over all threads (None: as fast as possible).
    pub rate: Option<f64>,
    /// Seconds to send.
    pub secs: f64,
    /// Sender threads, one per core and queue.
    pub threads: u32,
    /// Frames per kernel batch.
    pub batch: u32,
    /// Destination MAC of upstream frames (the AC's AP-side MAC).
    pub dst_mac: Option<[u8; 6]>,
}

/// What was sent.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GenReport {
    /// Interface and namespace.
    pub iface: String,
    /// Namespace name.
    pub netns: String,
    /// Direction.
    pub direction: Direction,
    /// Frames handed to the interface (the program returned XDP_TX).
    pub frames: u64,
    /// Bytes of those frames (without FCS), from the mix's mean frame size.
    pub bytes: u64,
    /// Seconds from first to last send.
    pub secs: f64,
    /// Frames per second.
    pub pps: f64,
    /// Gbit/s of frame bytes.
    pub gbps: f64,
}

/// Sends for `o.secs`, reporting each second through `progress`.
pub fn run(o: &GenOptions, progress: &dyn Fn(&str)) -> Result<GenReport> {
    check(o)?;
    let ns = match &o.netns {
        Some(n) => Netns::existing(n)?,
        None => Netns::current(),
    };
    let classes = o.sizes.classes();
    let mut rig = Rig::load(o.aps * classes.len() as u32)?;
    let mut lens = [0u16; CLASSES];
    let mut templates = Vec::new();
    let mut offered = Vec::new();
    for (c, &(len, w)) in classes.iter().enumerate() {
        for k in 0..o.aps {
            let mut f = frames::input(o.direction, o.payload, len, k, k);
            if let (Some(mac), Direction::Up) = (o.dst_mac, o.direction) {
                f[..6].copy_from_slice(&mac);
            }
            lens[c] = f.len() as u16;
            templates.push(frames::template(&f, k)?);
            if k == 0 {
                offered.push((f, w));
            }
        }
    }
    rig.set_gen(
        GenSettings {
            flows: o.stations,
            keys: o.aps,
            lens,
        },
        &templates,
    )?;
    let anchor = Netns::new("gen")?;
    netns::veth(&anchor, "ga", &anchor, "gb")?;
    rig.attach(&anchor, PROG_GEN, "ga")?;
    let wire: u64 = offered
        .iter()
        .map(|(f, w)| f.len() as u64 * u64::from(*w))
        .sum();
    let per_frame = wire as f64 / offered.iter().map(|(_, w)| f64::from(*w)).sum::<f64>();
    let prog = rig.program(PROG_GEN)?;
    let start = Instant::now();
    let mut frames_sent = 0u64;
    let mut busy = 0.0;
    while busy < o.secs {
        // Second by second, so a long run shows its rate as it goes.
        let chunk = (o.secs - busy).min(1.0);
        let offer = Offer {
            frames: offered.clone(),
            secs: chunk,
            rate: o.rate,
            batch: o.batch,
            calls: PACED_CALLS,
        };
        let s = sender::send(prog, &ns, &o.iface, o.threads, &offer)
            .with_context(|| format!("sending on {} in {}", o.iface, ns.name()))?;
        frames_sent += s.frames;
        busy += s.secs.max(chunk);
        progress(&format!(
            "{:>6.1} s  {:>12} frames  {:>8.3} Mpps",
            start.elapsed().as_secs_f64(),
            frames_sent,
            s.frames as f64 / s.secs.max(1e-9) / 1e6
        ));
    }
    let secs = start.elapsed().as_secs_f64();
    let bytes = (frames_sent as f64 * per_frame) as u64;
    Ok(GenReport {
        iface: o.iface.clone(),
        netns: ns.name().to_string(),
        direction: o.direction,
        frames: frames_sent,
        bytes,
        secs,
        pps: frames_sent as f64 / secs,
        gbps: bytes as f64 * 8.0 / secs / 1e9,
    })
}

/// Refuses options the generator cannot honour, before touching anything.
fn check(o: &GenOptions) -> Result<()> {
    for (len, _) in o.sizes.classes() {
        if !(MIN_FRAME..=1500).contains(&len) {
            bail!("client frame size {len}: must be {MIN_FRAME}-1500");
        }
    }
    if o.aps == 0 || o.stations == 0 {
        bail!("--aps and --stations must be at least 1");
    }
    if o.aps > 25_600 {
        bail!(
            "--aps {}: at most 25600 (the workload's address plan)",
            o.aps
        );
    }
    if o.threads == 0 || !(1..=256).contains(&o.batch) {
        bail!("--threads must be at least 1 and --batch 1-256");
    }
    // Written so NaN fails too.
    let positive = o.secs.is_finite() && o.secs > 0.0;
    if !positive || o.rate.is_some_and(|r| r.is_nan() || r < 1.0) {
        bail!("--secs must be positive and --rate at least 1 frame per second");
    }
    Ok(())
}

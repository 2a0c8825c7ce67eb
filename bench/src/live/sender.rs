//! The generator's senders: one thread per queue, pinned to its core with
//! `core_affinity`, inside the sending namespace, running `bench_gen` under
//! BPF_PROG_TEST_RUN in live-frames mode on the interface of the contender
//! under test. The kernel transmits each frame the program returns XDP_TX
//! for out of that interface, on the queue of the sending CPU (veth picks
//! the peer's receive queue by CPU), so N pinned threads feed N queues.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use aya::programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp};
use ferry_dataplane::netns::Netns;

/// What to send.
#[derive(Clone, Debug)]
pub struct Offer {
    /// One frame per size class, with its weight in the mix.
    pub frames: Vec<(Vec<u8>, u32)>,
    /// How long.
    pub secs: f64,
    /// Frames per second over all threads, or as fast as possible.
    pub rate: Option<f64>,
    /// Frames per kernel batch (the NAPI-like unit of live mode, at most 256).
    pub batch: u32,
    /// Paced: test runs a second per thread, at most (see [`PACED_CALLS`]).
    pub calls: u32,
}

/// Paced test runs a second per thread: runs of about 100 µs of frames,
/// so bursts stay short. Each live-frames run creates a page pool, which
/// takes an id of the kernel's 65,534 for as long as its pages are out;
/// a pool whose pages sit in a socket queue at the end of the run waits
/// for them, and is retried once a second.
pub const PACED_CALLS: u32 = 10_000;

/// [`PACED_CALLS`] for a contender whose frames wait in socket queues (the
/// user-space forwarder). At 10,000 runs a second per thread, its paced
/// rounds delivered almost nothing (0.002-0.004 Mpps at 90% of its
/// maximum), and after a few of them the kernel refused further runs with
/// ENOSPC: every `ferry-bench all` before this limit, none of three
/// runs since. Our reading: too many pools were still waiting and the
/// ids ran out. Its latency is hundreds of microseconds, so bursts of
/// 1 ms of frames do not hide much.
pub const PACED_CALLS_SOCKETS: u32 = 1_000;

/// What was sent.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sent {
    /// Frames the generator program ran on (and returned XDP_TX for).
    pub frames: u64,
    /// Seconds from the first send to the last, longest thread.
    pub secs: f64,
}

/// `struct xdp_md` as BPF_PROG_TEST_RUN takes it: live mode needs
/// `data_end` equal to the frame's length and names the interface and
/// receive queue the frame is transmitted from.
fn xdp_md(len: usize, ifindex: u32, queue: u32) -> [u8; 24] {
    let mut b = [0u8; 24];
    for (i, v) in [0, len as u32, 0, ifindex, queue, 0]
        .into_iter()
        .enumerate()
    {
        b[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }
    b
}

/// Sends `offer` out of `iface` in `ns` on `queues` pinned threads.
pub fn send(prog: &Xdp, ns: &Netns, iface: &str, queues: u32, offer: &Offer) -> Result<Sent> {
    if offer.frames.is_empty() || !(1..=256).contains(&offer.batch) {
        bail!("nothing to send, or a batch outside 1-256");
    }
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    if cores.is_empty() {
        bail!("cannot read this process's CPU set");
    }
    let results: Vec<Result<Sent>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..queues)
            .map(|q| {
                let core = cores[q as usize % cores.len()];
                s.spawn(move || ns.enter(|| one(prog, iface, q, queues, core, offer)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("a sender panicked")))
            .collect()
    });
    let mut total = Sent::default();
    for r in results {
        let r = r?;
        total.frames += r.frames;
        total.secs = total.secs.max(r.secs);
    }
    Ok(total)
}

/// One sender thread (already in the namespace).
fn one(
    prog: &Xdp,
    iface: &str,
    queue: u32,
    queues: u32,
    core: core_affinity::CoreId,
    offer: &Offer,
) -> Result<Sent> {
    if !core_affinity::set_for_current(core) {
        bail!("cannot pin a sender to core {}", core.id);
    }
    let name = std::ffi::CString::new(iface)?;
    // SAFETY: a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        bail!("no interface {iface} in the sending namespace");
    }
    let ctxs: Vec<[u8; 24]> = offer
        .frames
        .iter()
        .map(|(f, _)| xdp_md(f.len(), ifindex, queue))
        .collect();
    let rate = offer.rate.map(|r| r / f64::from(queues));
    // Paced: `offer.calls` runs a second; the kernel still runs each in
    // batches of at most `offer.batch`.
    let unit = match rate {
        Some(r) => ((r / f64::from(offer.calls.max(1))) as u32).clamp(1, 4096),
        // Full rate: 16 kernel batches a call, so the per-call setup (a
        // fresh page pool) is spread over many frames.
        None => offer.batch * 16,
    };
    let batch = unit.min(offer.batch);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(offer.secs);
    let mut sent = 0u64;
    'run: loop {
        for ((frame, weight), ctx) in offer.frames.iter().zip(&ctxs) {
            let repeat = unit * weight;
            prog.test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(ctx),
                repeat,
                attrs: TestRunAttrs::new().xdp_live_frames(batch),
                ..TestRunOptions::new()
            })
            .with_context(|| format!("live-frames test run on {iface} queue {queue}"))?;
            sent += u64::from(repeat);
            let now = Instant::now();
            if now >= end {
                break 'run;
            }
            if let Some(r) = rate {
                let due = start + Duration::from_secs_f64(sent as f64 / r);
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
        }
    }
    Ok(Sent {
        frames: sent,
        secs: start.elapsed().as_secs_f64(),
    })
}

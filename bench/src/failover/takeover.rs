//! Unplanned and planned failover on the lab pair with its dual-link AP at
//! a fixed rate each way:
//!
//! - unplanned: `kill -9` of the master, alternating nodes (the killed one
//!   restarted as backup and resynced between runs): takeover time
//!   (SIGKILL to the backup's group active in its pinned role map, polled
//!   in a tight loop), decision to flip (the role write the backup timed,
//!   from its history) and frames lost per direction, in all and once the
//!   AP's data had moved to the new master;
//! - planned: `ferry failover` back and forth: the peer's role write, the
//!   order to the peer's answer, drain, whole handover, frames lost.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use ferry_dataplane::datapath::GroupRoles;
use serde::Serialize;

use super::{Summary, pair::Pair};

/// The lab AP's rate each way, frames a second.
pub const RATE: u32 = 500;

/// `kill -9` of the master.
#[derive(Debug, Serialize)]
pub struct Unplanned {
    /// SIGKILL to the backup's group active in its data plane, ms.
    pub takeover_ms: Summary,
    /// The backup's role write, µs.
    pub flip_us: Summary,
    /// Frames lost in all, upstream and downstream, per run.
    pub lost: [Summary; 2],
    /// Of those, frames sent after the AP had moved to the new master.
    pub lost_after_move: [Summary; 2],
}

/// `ferry failover`.
#[derive(Debug, Serialize)]
pub struct Planned {
    /// `Take` to the peer's answer (the group active there within it), µs.
    pub take_us: Summary,
    /// The peer's role write, µs.
    pub peer_flip_us: Summary,
    /// Waiting for the AP to stop sending to the old master, ms.
    pub drain_ms: Summary,
    /// The whole handover, ms.
    pub elapsed_ms: Summary,
    /// Frames sent and lost over all runs, upstream then downstream.
    pub sent: [u32; 2],
    /// Frames lost over all runs, upstream then downstream.
    pub lost: [usize; 2],
}

/// The last role write node `i` timed, µs ("data plane written in N µs"
/// in its history).
fn last_flip_us(p: &Pair, i: usize) -> Option<f64> {
    let h = p.nodes[i].json(&["cluster", "history"]);
    h.as_array()?.iter().rev().find_map(|e| {
        let d = e["detail"].as_str()?;
        let rest = d.split("data plane written in ").nth(1)?;
        rest.split(' ').next()?.parse().ok()
    })
}

/// `runs` kills of the master.
pub fn unplanned(p: &Pair, runs: usize, progress: &impl Fn(&str)) -> Result<Unplanned> {
    let mut takeover_ms = Vec::new();
    let mut flip_us = Vec::new();
    let mut lost = [Vec::new(), Vec::new()];
    let mut after = [Vec::new(), Vec::new()];
    for run in 0..runs {
        let (m, b) = if p.is(0, "master") { (0, 1) } else { (1, 0) };
        let roles = GroupRoles::open_pinned(&p.nodes[b].pin_dir(&p.pin_root))
            .context("opening the backup's pinned role map")?;
        let (r, report) = p.with_dual_link_ap(m, RATE, |live| {
            let t0 = Instant::now();
            p.nodes[m].kill9();
            loop {
                if roles.active(1)? {
                    break;
                }
                if t0.elapsed() > Duration::from_secs(5) {
                    bail!("run {run}: no takeover within 5 s");
                }
                std::hint::spin_loop();
            }
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            p.wait_for(5, "the AP on the new master", || live.master() == b);
            let (up, _, down, _) = live.counts();
            std::thread::sleep(Duration::from_millis(500));
            Ok((ms, up, down))
        });
        let (ms, up_at, down_at) = r?;
        takeover_ms.push(ms);
        flip_us.push(last_flip_us(p, b).context("no role write in the backup's history")?);
        lost[0].push(report.up_lost.len() as f64);
        lost[1].push(report.down_lost.len() as f64);
        after[0].push(report.up_lost.iter().filter(|s| **s >= up_at).count() as f64);
        after[1].push(report.down_lost.iter().filter(|s| **s >= down_at).count() as f64);
        p.start(m);
        p.wait_for(10, "the killed node back as a synced backup", || {
            p.is(m, "backup") && p.nodes[m].cluster()["groups"][0]["synced"] == true
        });
        progress(&format!(
            "kill -9 run {}/{runs}: takeover {ms:.1} ms, lost up {} down {}",
            run + 1,
            report.up_lost.len(),
            report.down_lost.len()
        ));
    }
    Ok(Unplanned {
        takeover_ms: Summary::of(&mut takeover_ms),
        flip_us: Summary::of(&mut flip_us),
        lost: [Summary::of(&mut lost[0]), Summary::of(&mut lost[1])],
        lost_after_move: [Summary::of(&mut after[0]), Summary::of(&mut after[1])],
    })
}

/// `runs` planned handovers back and forth under traffic.
pub fn planned(p: &Pair, runs: usize, progress: &impl Fn(&str)) -> Result<Planned> {
    let mut v: [Vec<f64>; 4] = Default::default();
    let keys = ["take_us", "peer_flip_us", "drain_ms", "elapsed_ms"];
    let (r, report) = p.with_dual_link_ap(usize::from(p.is(1, "master")), RATE, |live| {
        for run in 0..runs {
            let m = live.master();
            let out = p.nodes[m].json(&["failover"]);
            let h = &out[0];
            if h["phase"] != "done" {
                bail!("planned run {run}: {out}");
            }
            for (i, k) in keys.iter().enumerate() {
                v[i].push(h[k].as_f64().with_context(|| format!("no {k} in {out}"))?);
            }
            p.wait_for(5, "the AP moved", || live.master() != m);
            progress(&format!(
                "ferry failover run {}/{runs}: handover {} ms",
                run + 1,
                h["elapsed_ms"]
            ));
        }
        Ok(())
    });
    r?;
    let [take, flip, drain, elapsed] = &mut v;
    Ok(Planned {
        take_us: Summary::of(take),
        peer_flip_us: Summary::of(flip),
        drain_ms: Summary::of(drain),
        elapsed_ms: Summary::of(elapsed),
        sent: [report.up_sent, report.down_sent],
        lost: [report.up_lost.len(), report.down_lost.len()],
    })
}

//! `ferry failover`: starts the planned handovers, follows them to the
//! end with a line per step (stderr), then prints what happened.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ferry::{
    api::protocol::Request,
    ha::handover::{HandoverStatus, Options, Phase},
};

use super::{call, json, opt};
use crate::Target;

/// How often the handovers are read while they run.
const POLL: Duration = Duration::from_millis(20);

/// `ferry failover [--group G]`.
pub fn run(t: &Target, group: Option<String>, options: Options) -> Result<()> {
    let ids: Vec<u64> = call(
        t,
        Request::Failover {
            group,
            options: Some(options),
        },
    )?;
    // The longest a handover can run: the peer's answer, the drain, the
    // announcements (see ha::handover), and slack.
    let limit = Duration::from_millis(options.max_drain_ms) + Duration::from_secs(90);
    let t0 = Instant::now();
    let mut seen: Vec<(u64, Phase)> = Vec::new();
    let v = loop {
        let v: Vec<HandoverStatus> = call(t, Request::Handovers { ids: ids.clone() })?;
        if !t.json {
            for h in &v {
                if !seen.contains(&(h.id, h.phase)) {
                    seen.push((h.id, h.phase));
                    eprintln!(
                        "[{:>6} ms] {} (handover {}): {}",
                        t0.elapsed().as_millis(),
                        h.group,
                        h.id,
                        step(h)
                    );
                }
            }
        }
        if v.len() == ids.len() && v.iter().all(HandoverStatus::finished) {
            break v;
        }
        if t0.elapsed() > limit {
            bail!(
                "handovers {ids:?} still under way after {} s; `ferry cluster history` shows where",
                limit.as_secs()
            );
        }
        std::thread::sleep(POLL);
    };
    let failed = v.iter().filter(|h| h.phase == Phase::Failed).count();
    if !json(t, &v)? {
        for h in &v {
            print_one(h);
        }
    }
    if failed > 0 {
        bail!("{failed} of {} handovers failed", v.len());
    }
    Ok(())
}

fn step(h: &HandoverStatus) -> String {
    match h.phase {
        Phase::Queued => "queued".into(),
        Phase::Taking => "stations synced, the peer is taking the group".into(),
        Phase::Draining => format!(
            "the peer forwards the group (its role write {} µs); draining here, keepalives unanswered",
            opt(h.peer_flip_us)
        ),
        Phase::Announcing => format!(
            "drained ({}) after {} ms; the peer announces the stations",
            h.drained_by.as_deref().unwrap_or("?"),
            opt(h.drain_ms)
        ),
        Phase::Done => "standby here".into(),
        Phase::Failed => format!("FAILED: {}", h.error.as_deref().unwrap_or("?")),
    }
}

fn print_one(h: &HandoverStatus) {
    if h.phase == Phase::Failed {
        println!(
            "{}: not handed over: {}",
            h.group,
            h.error.as_deref().unwrap_or("?")
        );
        return;
    }
    println!(
        "{}: handed to the peer in {} ms: peer active {} µs after the order (its role write {} µs), both forwarded for {} ms (drain ended by {}), {} stations announced",
        h.group,
        h.elapsed_ms,
        opt(h.take_us),
        opt(h.peer_flip_us),
        opt(h.drain_ms),
        h.drained_by.as_deref().unwrap_or("-"),
        opt(h.announced)
    );
    println!(
        "  forwarded meanwhile: here {} up / {} down, peer {} up / {} down",
        h.here_up,
        h.here_down,
        opt(h.peer_up),
        opt(h.peer_down)
    );
    if let Some(e) = &h.error {
        println!("  note: {e}");
    }
}

//! The live benchmark's own checks, on the real lab: every frame the sink
//! accepts from ferry is the reference model's output, ferry's counters
//! agree with the sink, and the generator's per-run rewrite is what keeps
//! the frames right (without it, recycled live-mode pages carry ferry's
//! last rewrite back into the generator). Needs root, like every lab test.

#![allow(clippy::unwrap_used)]

mod common;

use ferry_bench::live::{self, contenders::Contender, frames::Payload};

/// One lab at a time: each pins a generator thread to every core, and with
/// three in parallel a user-space forwarder thread once got no CPU for a
/// whole 0.3 s round (0 frames, 100% loss).
static ONE_LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_lab() -> std::sync::MutexGuard<'static, ()> {
    ONE_LAB
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn options(contenders: Vec<Contender>, rewrite: bool) -> live::Options {
    live::Options {
        ferry: common::ferry(),
        queues: 2,
        secs: 0.3,
        rounds: 1,
        contenders,
        large: Some(live::contenders::Scale {
            aps: 64,
            stations: 1000,
        }),
        payload: Payload::Dot3,
        size: 64,
        batch: 64,
        latency_batch: 8,
        loads: vec![0.5],
        scaling: false,
        rewrite,
    }
}

#[test]
fn every_contender_delivers_only_the_frames_it_must_and_ferry_counts_them() {
    let all = vec![Contender::Ferry, Contender::Redirect, Contender::Userspace];
    let _lab = one_lab();
    let r = live::run(&options(all, true), &|_| {}).unwrap();
    // 2 tables x 2 directions x 2 size mixes x 3 contenders.
    assert_eq!(r.rows.len(), 24, "{}", r.text());
    for row in &r.rows {
        assert_eq!(row.wrong, 0, "{}", r.text());
        assert!(row.pps > 0.0, "{}", r.text());
        if row.contender == Contender::Ferry {
            assert_eq!(row.count_gap, Some(0), "{}", r.text());
            assert!(row.loss < 0.01, "{}", r.text());
        }
    }
    // Latency at 50% of each contender's maximum, both directions.
    assert_eq!(r.latency.len(), 6, "{}", r.text());
    // The user-space forwarder's best paced rate, both directions, with
    // every frame right.
    assert_eq!(r.best.len(), 2, "{}", r.text());
    assert!(
        r.best
            .iter()
            .all(|(row, _)| row.pps > 0.0 && row.wrong == 0),
        "{}",
        r.text()
    );
    assert!(r.skipped.is_empty(), "{}", r.text());
    assert!(
        r.latency
            .iter()
            .all(|l| l.frames > 0 && l.p50_ns > 0 && l.p99_ns >= l.p50_ns)
    );
}

#[test]
fn without_the_per_run_rewrite_recycled_pages_corrupt_the_generators_frames() {
    let _lab = one_lab();
    let r = live::run(&options(vec![Contender::Ferry], false), &|_| {}).unwrap();
    for row in &r.rows {
        match row.dir {
            // ferry forwards what the stale page holds; the sink refuses
            // it, and ferry's count exceeds the sink's by those frames.
            live::frames::Direction::Up => {
                assert!(row.wrong > 0, "{}", r.text());
                assert_eq!(row.count_gap, Some(row.wrong as i64), "{}", r.text());
            }
            // A stale tag-less frame is no client-VLAN frame: ferry
            // passes it up, and most frames never reach the sink.
            live::frames::Direction::Down => assert!(row.loss > 0.5, "{}", r.text()),
        }
    }
}

#[test]
fn the_user_space_forwarder_converts_802_11_payloads_as_ferry_does() {
    let o = live::Options {
        payload: Payload::Dot11,
        large: None,
        loads: Vec::new(),
        ..options(vec![Contender::Ferry, Contender::Userspace], true)
    };
    let _lab = one_lab();
    let r = live::run(&o, &|_| {}).unwrap();
    let up: Vec<_> = r
        .rows
        .iter()
        .filter(|row| row.dir == live::frames::Direction::Up)
        .collect();
    // 2 size mixes x 2 contenders, each checked frame by frame against
    // ferry's reference model output.
    assert_eq!(up.len(), 4, "{}", r.text());
    for row in up {
        assert_eq!(row.wrong, 0, "{}", r.text());
        assert!(row.pps > 0.0, "{}", r.text());
        if row.contender == Contender::Ferry {
            assert_eq!(row.count_gap, Some(0), "{}", r.text());
        }
    }
}

//! Flapping session bindings against everything else the control process
//! serves: a real `ferry run` with a full tunnel table plus `flappers`
//! session tunnels whose keepalives alternate between two source ports
//! (an AP behind a NAT that keeps re-mapping it), measured in one run in
//! alternating rounds, quiet and flapping:
//!
//! - the echo round trip of another AP's keepalives (an address-declared
//!   tunnel, probed every 5 ms);
//! - the latency of `ferry status` through the admin socket (every 20 ms);
//! - the bindings ferry made and the keepalives it damped.
//!
//! The target (issue 9): flapping must not delay either by more than a few
//! milliseconds, so a rebind must cost a map entry write, not a table
//! rebuild.

use std::{
    net::{SocketAddr, UdpSocket},
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use ferry::{
    api::{protocol::Request, views::Status},
    config::format_session_id,
};
use ferry_dataplane::craft;
use serde::Serialize;

use crate::daemon::{Bench, Daemon, tunnel_table};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address-declared tunnels in the table.
    pub tunnels: u32,
    /// Session tunnels whose keepalives flap.
    pub flappers: u32,
    /// `keepalive.rebind_interval` of the node, seconds (0: every flap is
    /// a rebind, the worst case; 5: the default damping).
    pub rebind_interval: u32,
    /// Flapping keepalives per second, all flappers together.
    pub flap_rate: u32,
    /// Quiet/flapping round pairs.
    pub rounds: u32,
    /// Seconds per phase.
    pub phase_secs: u32,
}

/// Latencies of one kind of request in one phase, µs.
#[derive(Debug, Default, Serialize, Clone)]
pub struct Latency {
    /// Samples.
    pub n: usize,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Slowest.
    pub max_us: u64,
    /// Requests without an answer within 1 s.
    pub lost: u64,
}

/// One phase kind (quiet or flapping), all its rounds together.
#[derive(Debug, Default, Serialize, Clone)]
pub struct Phase {
    /// Another AP's keepalive echo round trip.
    pub echo: Latency,
    /// `ferry status` round trip.
    pub status: Latency,
    /// Session bindings made (ferry's counter).
    pub binds: u64,
    /// Keepalives damped (ferry's counter).
    pub damped: u64,
    /// Flapping keepalives sent.
    pub flaps_sent: u64,
    /// Seconds measured.
    pub secs: f64,
}

/// Results of [`run`].
#[derive(Debug, Serialize)]
pub struct Report {
    /// Address-declared tunnels.
    pub tunnels: u32,
    /// Flapping session tunnels.
    pub flappers: u32,
    /// The node's rebind interval, s.
    pub rebind_interval: u32,
    /// Without flapping.
    pub quiet: Phase,
    /// With flapping.
    pub flapping: Phase,
    /// Targets and whether each was met.
    pub targets: Vec<(String, bool)>,
}

const QUIET: u8 = 0;
const FLAPPING: u8 = 1;

/// A timed sample: phase, µs (`None`: lost).
type Samples = Arc<Mutex<Vec<(u8, Option<u64>)>>>;

fn session_id(i: u32) -> [u8; 16] {
    let mut s = [0xf1u8; 16];
    s[12..].copy_from_slice(&i.to_be_bytes());
    s
}

/// Runs the benchmark with `ferry` the `ferry` binary.
pub fn run(ferry: &Path, o: &Options, progress: impl Fn(&str)) -> Result<Report> {
    if !(1..=40_000).contains(&o.tunnels) || !(1..=4_000).contains(&o.flappers) {
        bail!("--tunnels must be 1-40,000 and --flappers 1-4,000");
    }
    raise_nofile(u64::from(o.flappers) * 2 + 256)?;
    let lab = Bench::new("rebind")?;
    for a in ["198.18.0.2/24", "198.18.0.3/24"] {
        lab.peer.exec(&["ip", "addr", "add", a, "dev", "p0"])?;
    }
    let mut rest = format!(
        "[keepalive]\nrebind_interval = {}\n[[tunnel]]\nap = \"probe\"\naddress = \"198.18.0.3\"\n{}",
        o.rebind_interval,
        tunnel_table(0..o.tunnels, None)
    );
    for i in 0..o.flappers {
        rest.push_str(&format!(
            "[[tunnel]]\nap = \"s{i}\"\nsession_id = \"{}\"\n",
            format_session_id(&session_id(i))
        ));
    }
    let config = lab.configure("", &rest)?;
    progress(&format!(
        "starting ferry run with {} tunnels and {} session tunnels",
        o.tunnels + 1,
        o.flappers
    ));
    let d = lab.start(ferry, &config)?;

    // Sockets made inside the AP namespace keep it when used elsewhere.
    let ac: SocketAddr = "198.18.0.1:5247".parse()?;
    let flappers = o.flappers;
    let (probe, flap) = lab.peer.enter(move || -> Result<_> {
        let probe = UdpSocket::bind("198.18.0.3:0")?;
        probe.connect(ac)?;
        probe.set_read_timeout(Some(Duration::from_secs(1)))?;
        let mut flap = Vec::new();
        for _ in 0..flappers {
            let a = UdpSocket::bind("198.18.0.2:0")?;
            let b = UdpSocket::bind("198.18.0.2:0")?;
            a.set_nonblocking(true)?;
            b.set_nonblocking(true)?;
            flap.push([a, b]);
        }
        Ok((probe, flap))
    })?;

    let phase = Arc::new(AtomicU8::new(QUIET));
    let stop = Arc::new(AtomicBool::new(false));
    let echoes: Samples = Arc::default();
    let statuses: Samples = Arc::default();
    let sent = Arc::new(Mutex::new([0u64; 2]));
    let interval = Duration::from_secs_f64(1.0 / f64::from(o.flap_rate.max(1)));
    std::thread::scope(|s| -> Result<Report> {
        s.spawn(|| probe_echoes(&probe, &phase, &stop, &echoes));
        s.spawn(|| probe_status(&d, &phase, &stop, &statuses));
        s.spawn(|| flap_keepalives(&flap, ac, interval, &phase, &stop, &sent));
        let mut quiet = Phase::default();
        let mut flapping = Phase::default();
        let counters = |d: &Daemon| -> Result<(u64, u64)> {
            let st: Status = d.call(Request::Status)?;
            Ok((st.keepalive.counts.bindings, st.keepalive.counts.damped))
        };
        let result = (|| -> Result<()> {
            for r in 0..o.rounds {
                for (p, acc) in [(QUIET, &mut quiet), (FLAPPING, &mut flapping)] {
                    progress(&format!(
                        "round {}/{}: {}",
                        r + 1,
                        o.rounds,
                        if p == QUIET { "quiet" } else { "flapping" }
                    ));
                    let (b0, d0) = counters(&d)?;
                    let t = Instant::now();
                    phase.store(p, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_secs(u64::from(o.phase_secs)));
                    phase.store(QUIET, Ordering::Relaxed);
                    acc.secs += t.elapsed().as_secs_f64();
                    let (b1, d1) = counters(&d)?;
                    acc.binds += b1 - b0;
                    acc.damped += d1 - d0;
                }
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        result?;
        let sent = *sent.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        flapping.flaps_sent = sent[usize::from(FLAPPING)];
        let e = echoes.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let st = statuses.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        quiet.echo = latency(&e, QUIET);
        quiet.status = latency(&st, QUIET);
        flapping.echo = latency(&e, FLAPPING);
        flapping.status = latency(&st, FLAPPING);
        let mut targets = Vec::new();
        for (what, q, f) in [
            ("another AP's keepalive echo", &quiet.echo, &flapping.echo),
            ("ferry status", &quiet.status, &flapping.status),
        ] {
            let delay = f.p99_us.saturating_sub(q.p99_us);
            targets.push((
                format!(
                    "{what}: p99 delayed < 5 ms by flapping ({:.2} ms), nothing lost ({})",
                    delay as f64 / 1e3,
                    f.lost
                ),
                delay < 5_000 && f.lost == 0,
            ));
        }
        targets.push((
            format!(
                "bindings made while flapping ({} in {:.0} s)",
                flapping.binds, flapping.secs
            ),
            flapping.binds > 0,
        ));
        Ok(Report {
            tunnels: o.tunnels + 1 + o.flappers,
            flappers: o.flappers,
            rebind_interval: o.rebind_interval,
            quiet,
            flapping,
            targets,
        })
    })
}

/// Another AP's keepalive, echoed: one in flight at a time, every 5 ms.
fn probe_echoes(sock: &UdpSocket, phase: &AtomicU8, stop: &AtomicBool, out: &Samples) {
    let mut n = 0u32;
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let ka = craft::keepalive(&session_id(0xffff_0000 | n));
        let p = phase.load(Ordering::Relaxed);
        let t = Instant::now();
        let mut got = None;
        if sock.send(&ka).is_ok() {
            // Older echoes (answered after a timeout) are skipped.
            while let Ok(len) = sock.recv(&mut buf) {
                if buf[..len] == ka[..] {
                    got = Some(t.elapsed().as_micros() as u64);
                    break;
                }
                if t.elapsed() > Duration::from_secs(1) {
                    break;
                }
            }
        }
        if let Ok(mut v) = out.lock() {
            v.push((p, got));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `ferry status`, every 20 ms.
fn probe_status(d: &Daemon, phase: &AtomicU8, stop: &AtomicBool, out: &Samples) {
    while !stop.load(Ordering::Relaxed) {
        let p = phase.load(Ordering::Relaxed);
        let t = Instant::now();
        let got = d
            .call::<Status>(Request::Status)
            .ok()
            .map(|_| t.elapsed().as_micros() as u64);
        if let Ok(mut v) = out.lock() {
            v.push((p, got));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// While flapping: each flapper in turn sends a keepalive from the other
/// one of its two ports than last time, `interval` apart.
fn flap_keepalives(
    socks: &[[UdpSocket; 2]],
    ac: SocketAddr,
    interval: Duration,
    phase: &AtomicU8,
    stop: &AtomicBool,
    sent: &Mutex<[u64; 2]>,
) {
    let mut turn = vec![0usize; socks.len()];
    let mut i = 0;
    let mut buf = [0u8; 2048];
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let p = phase.load(Ordering::Relaxed);
        if p == FLAPPING && !socks.is_empty() {
            let ka = craft::keepalive(&session_id(i as u32));
            let s = &socks[i][turn[i]];
            turn[i] ^= 1;
            if s.send_to(&ka, ac).is_ok()
                && let Ok(mut c) = sent.lock()
            {
                c[usize::from(p)] += 1;
            }
            // Echoes are not measured here; drained so they cost nothing.
            while s.recv(&mut buf).is_ok() {}
            i = (i + 1) % socks.len();
        }
        next += interval;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else if now - next > Duration::from_millis(100) {
            next = now;
        }
    }
}

fn latency(v: &[(u8, Option<u64>)], phase: u8) -> Latency {
    let mut ok: Vec<u64> = v
        .iter()
        .filter(|(p, _)| *p == phase)
        .filter_map(|(_, us)| *us)
        .collect();
    let lost = v
        .iter()
        .filter(|(p, us)| *p == phase && us.is_none())
        .count() as u64;
    ok.sort_unstable();
    let pct = |q: f64| {
        ok.get(((ok.len() as f64 * q) as usize).min(ok.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Latency {
        n: ok.len(),
        p50_us: pct(0.5),
        p99_us: pct(0.99),
        max_us: ok.last().copied().unwrap_or(0),
        lost,
    }
}

/// Two sockets per flapper: the default soft limit of 1,024 is not enough
/// for thousands.
fn raise_nofile(want: u64) -> Result<()> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        if r.rlim_cur < want {
            r.rlim_cur = want.min(r.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                return Err(std::io::Error::last_os_error().into());
            }
        }
    }
    Ok(())
}

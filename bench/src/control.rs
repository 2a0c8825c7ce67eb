//! Control-process benchmark: a real `ferry run` in a network namespace
//! with a full-size tunnel table and a full station table, driven through
//! its admin socket the way `ferry swap` and `ferry tunnel` drive it.
//!
//! Measured in one run, side by side:
//! - whole-table swap time of a small table (1,024 tunnels, no stations)
//!   and of the full table (25,600 tunnels) with 1,000,000 stations present,
//!   as ferry reports it (request validated, built aside, flipped live);
//! - a swap that removes 1% of the APs, whose stations must be flushed
//!   (the walk of the station table, after the flip);
//! - single-tunnel promote/demote time;
//! - the control process's resident memory at that size.

use std::{path::Path, time::Instant};

use anyhow::{Context as _, Result, bail};
use ferry::api::{protocol::Request, views::Change};
use ferry_ebpf::abi::{self, StationInfo, StationKey};
use serde::Serialize;

use crate::daemon::{Bench, Daemon, median, proc_kib, tunnel_table as table};

/// Results of [`run`].
#[derive(Debug, Serialize)]
pub struct Report {
    /// Tunnels in the full table.
    pub tunnels: u32,
    /// Stations present during the full-table swaps.
    pub stations: u32,
    /// Small-table swap (1,024 tunnels, empty station table), median µs.
    pub small_swap_us: u64,
    /// Full-table swap with the stations present, median µs.
    pub full_swap_us: u64,
    /// Full-table swap, slowest µs.
    pub full_swap_max_us: u64,
    /// Of the median full swap: build µs.
    pub full_build_us: u64,
    /// Of the median full swap: flip µs.
    pub full_flip_us: u64,
    /// Full swap median over small swap median.
    pub full_over_small: f64,
    /// `ferry swap` wall time for the full table as the SRE sees it, median ms.
    pub full_swap_cli_ms: f64,
    /// Swap removing 1% of the APs: µs to live.
    pub removal_swap_us: u64,
    /// Its station flush: stations deleted.
    pub removal_flushed: u64,
    /// Its station flush: µs (after the flip).
    pub removal_flush_us: u64,
    /// Single-tunnel promote/demote, median µs.
    pub promote_us: u64,
    /// Single-tunnel promote/demote, median over a small-table one.
    pub promote_cli_ms: f64,
    /// Resident memory of `ferry run` at the end, KiB.
    pub rss_kib: u64,
    /// Peak resident memory of `ferry run`, KiB.
    pub rss_peak_kib: u64,
    /// Resident memory after each phase, KiB.
    pub rss_by_phase: Vec<(String, u64)>,
    /// Targets and whether each was met.
    pub targets: Vec<(String, bool)>,
}

fn swap(d: &Daemon, file: &Path, text: &str) -> Result<(Change, f64)> {
    let t = Instant::now();
    // The small-table rounds remove most of the 25,600 tunnels on
    // purpose: past the mass-removal guard.
    let v = d.call(Request::Swap {
        file: file.display().to_string(),
        text: text.to_string(),
        force: true,
        dry_run: false,
    })?;
    Ok((v, t.elapsed().as_secs_f64() * 1e3))
}

/// Runs the benchmark with `ferry` the `ferry` binary.
pub fn run(
    ferry: &Path,
    tunnels: u32,
    stations: u32,
    swaps: u32,
    progress: impl Fn(&str),
) -> Result<Report> {
    if !(2048..=40_000).contains(&tunnels) {
        bail!("--tunnels must be 2,048-40,000 (addresses are 198.19.0.0/16)");
    }
    let lab = Bench::new("bench")?;
    let dir = &lab.dir;
    let capacity = stations + stations / 4 + 1024;
    let full = table(0..tunnels, None);
    let config = lab.configure(&format!("station_capacity = {capacity}\n"), &full)?;
    progress(&format!("starting ferry run with {tunnels} tunnels"));
    let d = lab.start(ferry, &config)?;

    let pid = d.pid();
    let mut phases = vec![("started".to_string(), proc_kib(pid, "VmRSS:"))];
    // Small tables, empty station table.
    progress("small-table swaps");
    let small = [table(0..1024, None), table(0..1024, Some(2))];
    let mut small_us = Vec::new();
    for i in 0..swaps {
        let (v, _) = swap(&d, &dir.join("small.toml"), &small[(i % 2) as usize])?;
        small_us.push(v.total_us);
    }
    swap(&d, &dir.join("full.toml"), &full)?;
    phases.push(("small swaps".into(), proc_kib(pid, "VmRSS:")));

    // Fill the station table behind the live tunnels.
    let by_index = d.tunnel_ids(tunnels)?;
    phases.push(("tunnel listing".into(), proc_kib(pid, "VmRSS:")));
    fill_stations(&d.pin_dir, stations, &by_index, &progress)?;

    progress("full-table swaps with the stations present");
    let drill = table(0..tunnels, Some(2));
    let mut full_runs: Vec<(u64, Change, f64)> = Vec::new();
    for i in 0..swaps {
        let text = if i % 2 == 0 { &drill } else { &full };
        let (v, ms) = swap(&d, &dir.join("drill.toml"), text)?;
        if v.stations_flushed != 0 {
            bail!("a swap keeping every AP flushed stations: {v:?}");
        }
        full_runs.push((v.total_us, v, ms));
    }
    full_runs.sort_by_key(|r| r.0);
    phases.push(("full swaps".into(), proc_kib(pid, "VmRSS:")));
    let mid = &full_runs[full_runs.len() / 2];
    progress(&format!("median full swap: {:?}", mid.1));
    let mut cli: Vec<u64> = full_runs.iter().map(|r| (r.2 * 1000.0) as u64).collect();
    let full_cli = median(&mut cli) as f64 / 1000.0;

    progress("swap removing 1% of the APs (station flush)");
    let keep = tunnels - tunnels / 100;
    let (rm, _) = swap(&d, &dir.join("removal.toml"), &table(0..keep, Some(2)))?;

    phases.push(("removal swap".into(), proc_kib(pid, "VmRSS:")));
    progress("single-tunnel promote/demote");
    let mut prom = Vec::new();
    let mut prom_cli = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        let ap = "ap3".to_string();
        let v: Change = if i % 2 == 0 {
            d.call(Request::Demote { ap })?
        } else {
            d.call(Request::Promote { ap })?
        };
        prom_cli.push(t.elapsed().as_micros() as u64);
        prom.push(v.total_us);
    }

    phases.push(("promote/demote".into(), proc_kib(pid, "VmRSS:")));
    let kib = |k: &str| proc_kib(pid, k);
    let small_med = median(&mut small_us);
    let mut r = Report {
        tunnels,
        stations,
        small_swap_us: small_med,
        full_swap_us: mid.0,
        full_swap_max_us: full_runs.last().map_or(0, |r| r.0),
        full_build_us: mid.1.build_us + mid.1.validate_us,
        full_flip_us: mid.1.flip_us,
        full_over_small: mid.0 as f64 / small_med.max(1) as f64,
        full_swap_cli_ms: full_cli,
        removal_swap_us: rm.total_us,
        removal_flushed: rm.stations_flushed,
        removal_flush_us: rm.flush_us,
        promote_us: median(&mut prom),
        promote_cli_ms: median(&mut prom_cli) as f64 / 1000.0,
        rss_kib: kib("VmRSS:"),
        rss_peak_kib: kib("VmHWM:"),
        rss_by_phase: phases,
        targets: Vec::new(),
    };
    r.targets = vec![
        (
            format!(
                "full-table swap < 100 ms ({} ms median)",
                r.full_swap_us / 1000
            ),
            r.full_swap_us < 100_000,
        ),
        (
            format!("resident memory < 64 MiB ({} MiB)", r.rss_peak_kib / 1024),
            r.rss_peak_kib < 64 * 1024,
        ),
    ];
    Ok(r)
}

/// Writes `n` learned stations into the pinned live station table, spread
/// over the tunnels, as if they had been learned from radio 0.
pub fn fill_stations(pin_dir: &Path, n: u32, ids: &[u32], progress: &impl Fn(&str)) -> Result<()> {
    fill_stations_from(pin_dir, n, ids, 0, progress)
}

/// [`fill_stations`], as if learned from radio `rid`.
pub fn fill_stations_from(
    pin_dir: &Path,
    n: u32,
    ids: &[u32],
    rid: u8,
    progress: &impl Fn(&str),
) -> Result<()> {
    use aya::maps::{ArrayOfMaps, HashMap as BpfHash, Map, MapData};
    let outer = MapData::from_pin(pin_dir.join(abi::MAP_STATION_TABLES))
        .context("opening the pinned station table")?;
    let outer: ArrayOfMaps<MapData, BpfHash<MapData, StationKey, StationInfo>> =
        ArrayOfMaps::try_from(Map::ArrayOfMaps(outer))?;
    let mut inner = outer.get(&abi::TABLE_SLOT, 0)?;
    let t = Instant::now();
    for i in 0..n {
        let b = i.to_be_bytes();
        let key = StationKey {
            mac: [0x02, 0x5b, b[0], b[1], b[2], b[3]],
            vlan: 200,
        };
        let info = StationInfo {
            tunnel: ids[(i as usize) % ids.len()],
            rid,
            ..Default::default()
        };
        inner.insert(key, info, 0).context("filling stations")?;
        if i % 200_000 == 199_999 {
            progress(&format!("  {} stations", i + 1));
        }
    }
    progress(&format!(
        "filled {n} stations in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    Ok(())
}

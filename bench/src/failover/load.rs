//! The pair under load: heartbeats captured on the first peer path in
//! both directions while the nodes are quiet, while whole 25,600-tunnel
//! tables are swapped (on the master, replicated to the backup), while
//! 1,000,000 learned stations stream to the backup, and while forced bulks
//! of them run; with the time each of those takes and every failover or
//! path loss either node recorded meanwhile (there must be none).

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use ferry::ha::view::unix_ms;
use serde::Serialize;

use super::{
    Summary,
    heartbeats::{self, Capture, Gaps},
    pair::{AP, AP_PORT, NodeHa, Pair, VLAN},
};

/// The HA port (heartbeats), the default.
const HA_PORT: u16 = 5250;
/// Quiet time before and between the loaded phases.
const QUIET: Duration = Duration::from_secs(5);

/// What the loaded phases measured.
#[derive(Debug, Serialize)]
pub struct Load {
    /// Tunnels in the swapped table.
    pub tunnels: u32,
    /// Learned stations.
    pub stations: u32,
    /// `ferry swap` of the whole table on the master until the backup
    /// runs the same revision, ms.
    pub swap_ms: Summary,
    /// Writing the stations into the master's live table (as if
    /// learned), s.
    pub write_s: f64,
    /// The last write until the backup had installed them all, s.
    pub stream_s: f64,
    /// A bulk: the master starting to read its table until the backup
    /// had installed every station (the end marker), ms, from both
    /// nodes' histories (one clock).
    pub bulk_ms: Summary,
    /// Of that, the master's read of its table, ms.
    pub bulk_read_ms: Summary,
    /// Of that, the backup's receiving and installing (start marker to
    /// end marker), ms.
    pub bulk_rx_ms: Summary,
    /// `ferry cluster resync` on the backup (which sends its own bulk
    /// first, then asks for the master's) until the master's bulk was
    /// installed, as the bench saw it, ms.
    pub resync_ms: Summary,
    /// Heartbeat gaps per phase and direction (captured on the second
    /// path).
    pub gaps: Vec<Gaps>,
    /// Heartbeats sent and received over all the phases, per direction
    /// and path, from the nodes' own counters.
    pub heartbeats: Vec<Heard>,
    /// Peer or path losses and role changes either node recorded during
    /// the loaded phases (each one a false failover or near miss).
    pub false_events: Vec<String>,
}

/// The table: the lab's AP and `n - 1` more, all in the group; every
/// other one standby in the `variant` table, so each swap changes half.
fn table(n: u32, variant: bool) -> String {
    let mut s = format!(
        "[[tunnel]]\nap = \"ap1\"\naddress = \"{AP}\"\nport = {AP_PORT}\nvlan = {VLAN}\ngroup = \"group1\"\n"
    );
    for i in 2..=n {
        let role = if variant && i % 2 == 0 {
            "backup"
        } else {
            "master"
        };
        s.push_str(&format!(
            "[[tunnel]]\nap = \"ap{i}\"\naddress = \"198.19.{}.{}\"\nvlan = {VLAN}\ngroup = \"group1\"\nrole = \"{role}\"\n",
            i / 200,
            i % 200 + 1
        ));
    }
    s
}

/// Events of either node at or after `since_ms` that a quiet pair never
/// records: a path or the peer lost, a role changed, the sync stream
/// dropped (a forced bulk keeps it; a drop would be a path left for
/// silence under load).
fn false_events(p: &Pair, since_ms: u64) -> Vec<String> {
    let mut out = Vec::new();
    for (i, n) in p.nodes.iter().enumerate() {
        let h = n.json(&["cluster", "history"]);
        for e in h.as_array().into_iter().flatten() {
            let kind = e["kind"].as_str().unwrap_or("");
            let dropped = kind == "sync"
                && e["detail"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("sync stream down"));
            if e["at_ms"].as_u64().unwrap_or(0) >= since_ms
                && (dropped || matches!(kind, "peer_down" | "path_down" | "role"))
            {
                out.push(format!("node {}: {kind}: {}", i + 1, e["detail"]));
            }
        }
    }
    out
}

/// The backup's received-station counter.
fn received(p: &Pair, b: usize) -> u64 {
    p.nodes[b].cluster()["sync"]["stations_received"]
        .as_u64()
        .unwrap_or(0)
}

/// Heartbeats one node sent on one path and the other accepted.
#[derive(Debug, Serialize)]
pub struct Heard {
    /// "node 1 -> node 2".
    pub direction: String,
    /// The path, 1 or 2.
    pub path: usize,
    /// Sent (the sender's counter).
    pub sent: u64,
    /// Accepted (the receiver's counter). Counters are read one node
    /// after the other, so one heartbeat in flight at either end can
    /// show as lost or extra.
    pub received: u64,
}

/// Per node: heartbeats sent per path, and accepted per path.
fn heartbeat_counts(p: &Pair) -> [(Vec<u64>, Vec<u64>); 2] {
    [0, 1].map(|i| {
        let c = p.nodes[i].cluster();
        let sent = c["sent"].as_array().into_iter().flatten();
        let got = c["peer"]["paths"].as_array().into_iter().flatten();
        (
            sent.map(|v| v.as_u64().unwrap_or(0)).collect(),
            got.map(|v| v["received"].as_u64().unwrap_or(0)).collect(),
        )
    })
}

/// What each node sent on each path between `a` and `b`, and what the
/// other accepted.
fn heartbeats_lost(a: &[(Vec<u64>, Vec<u64>); 2], b: &[(Vec<u64>, Vec<u64>); 2]) -> Vec<Heard> {
    let mut out = Vec::new();
    for (from, to) in [(0, 1), (1, 0)] {
        for path in 0..a[from].0.len().min(b[from].0.len()) {
            let at = |v: &[u64]| v.get(path).copied().unwrap_or(0);
            let delta = |x: &[u64], y: &[u64]| at(y).saturating_sub(at(x));
            out.push(Heard {
                direction: format!("node {} -> node {}", from + 1, to + 1),
                path: path + 1,
                sent: delta(&a[from].0, &b[from].0),
                received: delta(&a[to].1, &b[to].1),
            });
        }
    }
    out
}

/// The first history event of node `i` at or after `since_ms` whose
/// detail starts with `prefix`: its time and the detail's two numbers
/// ("received N stations of M sent, in T ms": N and M; "sending N
/// stations (read in T ms)": N and T).
fn bulk_event(p: &Pair, i: usize, since_ms: u64, prefix: &str) -> Option<(u64, u64, u64)> {
    let h = p.nodes[i].json(&["cluster", "history"]);
    h.as_array()?.iter().find_map(|e| {
        let at = e["at_ms"].as_u64().filter(|at| *at >= since_ms)?;
        let rest = e["detail"].as_str()?.strip_prefix(prefix)?;
        let mut nums = rest
            .split(|c: char| !c.is_ascii_digit())
            .filter(|w| !w.is_empty())
            .filter_map(|w| w.parse().ok());
        Some((at, nums.next()?, nums.next()?))
    })
}

/// The loaded phases on a fresh pair.
pub fn run(
    tunnels: u32,
    stations: u32,
    swaps: u32,
    bulks: u32,
    progress: &impl Fn(&str),
) -> Result<Load> {
    if !(2..=40_000).contains(&tunnels) {
        bail!("--tunnels must be 2-40,000 (addresses are 198.19.0.0/16)");
    }
    let capacity = stations + stations / 4 + 1024;
    progress(&format!(
        "load: starting the pair (station capacity {capacity})"
    ));
    let ha = |priority| NodeHa {
        priority,
        preempt: false,
        extra: "",
    };
    let p = Pair::new_with(
        "hbl",
        [ha(200), ha(100)],
        &format!("station_capacity = {capacity}\n"),
    );
    p.start_both();
    // The second path: it carries heartbeats only (the sync stream's
    // megabytes on the first would crowd the capture socket).
    let caps = [
        Capture::start(&p.nodes[1].ns, "h2b", [198, 18, 10, 1].into(), HA_PORT)?,
        Capture::start(&p.nodes[0].ns, "h1b", [198, 18, 10, 2].into(), HA_PORT)?,
    ];
    let since = unix_ms();
    let counted_from = heartbeat_counts(&p);
    let mut phases: Vec<(&str, Instant, Instant)> = Vec::new();

    progress("load: quiet");
    let t = Instant::now();
    std::thread::sleep(QUIET);
    phases.push(("quiet", t, Instant::now()));

    progress(&format!("load: {swaps} swaps of {tunnels} tunnels"));
    let mut files: Vec<PathBuf> = Vec::new();
    for v in [false, true] {
        let f = p.nodes[0].dir.join(format!("table{}.toml", u8::from(v)));
        std::fs::write(&f, table(tunnels, v)).context("writing a table")?;
        files.push(f);
    }
    let mut swap_ms = Vec::new();
    let t = Instant::now();
    for i in 0..swaps {
        let f = &files[(i % 2) as usize];
        let t0 = Instant::now();
        p.nodes[0].ferry(&["swap", &f.display().to_string(), "--force"]);
        let want = p.nodes[0].cluster()["revision"].as_u64().unwrap_or(0);
        p.wait_for(30, "the backup at the master's revision", || {
            p.nodes[1].cluster()["revision"].as_u64() == Some(want)
        });
        swap_ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    phases.push(("swaps", t, Instant::now()));
    // The last swap installed the variant or the full table: either way
    // every tunnel is in the group; stations go behind the active ones.
    std::thread::sleep(QUIET);

    let listing = p.nodes[0].json(&["tunnels"]);
    let ids: Vec<u32> = listing["tunnels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["state"] == "active")
        .filter_map(|t| t["id"].as_u64().map(|v| v as u32))
        .collect();
    if ids.is_empty() {
        bail!("no active tunnel on the master: {listing}");
    }
    progress(&format!(
        "load: {stations} learned stations behind {} tunnels, streamed to the backup",
        ids.len()
    ));
    let before = received(&p, 1);
    let t = Instant::now();
    crate::control::fill_stations(&p.nodes[0].pin_dir(&p.pin_root), stations, &ids, progress)?;
    let filled = Instant::now();
    p.wait_for(120, "every station installed on the backup", || {
        received(&p, 1) >= before + u64::from(stations)
    });
    let stream_s = filled.elapsed().as_secs_f64();
    let write_s = (filled - t).as_secs_f64();
    phases.push(("stations streaming", t, Instant::now()));
    std::thread::sleep(QUIET);

    progress(&format!(
        "load: {bulks} forced bulks of {stations} stations"
    ));
    let (mut bulk_ms, mut read_ms, mut rx_ms, mut resync_ms) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let t = Instant::now();
    for _ in 0..bulks {
        let at = unix_ms();
        let t0 = Instant::now();
        p.nodes[1].ferry(&["cluster", "resync"]);
        let mut end = None;
        p.wait_for(120, "the backup received the bulk", || {
            end = bulk_event(&p, 1, at, "received ").filter(|b| b.1 >= u64::from(stations));
            end.is_some()
        });
        resync_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        let start = bulk_event(&p, 0, at, "sending ").filter(|b| b.1 >= u64::from(stations));
        let (Some((end_at, _, _)), Some((start_at, _, read))) = (end, start) else {
            bail!("the bulk's start or end is missing from the histories");
        };
        // The master records its start once it has read the table; both
        // nodes share this machine's clock.
        bulk_ms.push((end_at + read).saturating_sub(start_at) as f64);
        read_ms.push(read as f64);
        if let Some(rx) = p.nodes[1].cluster()["sync"]["last_bulk"][1].as_f64() {
            rx_ms.push(rx);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    phases.push(("bulks", t, Instant::now()));

    let arrivals = caps.map(Capture::finish);
    let mut gaps = Vec::new();
    let names = ["node 1 -> node 2", "node 2 -> node 1"];
    for (a, name) in arrivals.into_iter().zip(names) {
        let a = a?;
        for (phase, from, to) in &phases {
            gaps.push(heartbeats::gaps(&a, *from, *to, phase, name));
        }
    }
    let counted_to = heartbeat_counts(&p);
    let heartbeats = heartbeats_lost(&counted_from, &counted_to);
    let false_events = false_events(&p, since);
    if !p.is(0, "master") || !p.is(1, "backup") {
        bail!("the roles moved during the load: {}", p.counters());
    }
    Ok(Load {
        tunnels,
        stations,
        swap_ms: Summary::of(&mut swap_ms),
        write_s,
        stream_s,
        bulk_ms: Summary::of(&mut bulk_ms),
        bulk_read_ms: Summary::of(&mut read_ms),
        bulk_rx_ms: Summary::of(&mut rx_ms),
        resync_ms: Summary::of(&mut resync_ms),
        gaps,
        heartbeats,
        false_events,
    })
}

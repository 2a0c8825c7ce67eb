//! The three contenders in their slots of the lab, each with its own
//! generator/sink rig, and one measured round against any of them.
//!
//! - ferry: a real `ferry run` with a generated configuration, its XDP
//!   programs attached natively to `fap0` and `fcl0`;
//! - redirect: `baseline_redirect` on both, each sending what arrives to
//!   the other (the plain-redirect ceiling);
//! - userspace: `ferry_pass` on both (veth needs an XDP program for frames
//!   sent by XDP to arrive) and the capwap-dp-style forwarder.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use ferry::api::{protocol::Request, views};
use ferry_ebpf::{abi, loadgen::PROG_GEN, loadgen::station_mac};
use serde::Serialize;

use super::{
    frames::{AP_PORT, Direction, RID, VLAN, ap_addr},
    lab::{AC_AP_MAC, Lab, ROUTER_MAC, Slot},
    rig::{Rig, Sunk},
    sender::{self, Offer, Sent},
    userspace::{Forwarder, Table, Tun},
};
use crate::{control::fill_stations_from, daemon::Daemon};

/// A forwarder under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Contender {
    /// ferry's XDP programs under `ferry run`.
    Ferry,
    /// A DEVMAP redirect and nothing else.
    Redirect,
    /// The capwap-dp-style user-space forwarder.
    Userspace,
}

impl Contender {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ferry => "ferry",
            Self::Redirect => "redirect",
            Self::Userspace => "userspace",
        }
    }
}

/// A table size: APs (tunnels) and stations (flows).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Scale {
    /// Tunnels.
    pub aps: u32,
    /// Stations, spread over the tunnels (station `f` on AP `f % aps`).
    pub stations: u32,
}

/// One contender in its slot.
pub struct Entry {
    /// Which.
    pub who: Contender,
    /// Its AC namespace and peers.
    pub slot: Slot,
    /// Its generator and sink.
    pub rig: Rig,
}

/// Every contender, set up.
pub struct Contenders {
    /// The lab.
    pub lab: Lab,
    /// The contenders, in the order given.
    pub entries: Vec<Entry>,
    ferry: Option<(Daemon, PathBuf)>,
    userspace: Option<Forwarder>,
    /// Stations of the largest table to come.
    pub max_stations: u32,
    /// ferry's node name.
    pub node: String,
    /// Scratch directory (configuration, state, logs).
    pub dir: PathBuf,
}

/// One measured round.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Sent by the generator.
    pub sent: Sent,
    /// Seconds after the generator stopped until the sink's count settled.
    pub drain_secs: f64,
    /// Found by the sink.
    pub sunk: Sunk,
    /// The contender's own count of frames it forwarded in this direction
    /// (ferry's counters, the forwarder's counts; none for the redirect).
    pub forwarded: Option<u64>,
    /// ferry's slow lookups in this direction and round: upstream, its
    /// station-table reads (the learning hints missed); downstream, its
    /// FIB lookups (the next-hop cache missed). None for the others.
    pub slow_lookups: Option<u64>,
}

/// Instances in this process, so labs in parallel tests get their own
/// node name, directory and pins.
static INSTANCE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// ferry's configuration for `scale` in the lab, with a station table
/// for `max_stations` (its size is fixed at start; swaps keep it).
pub fn ferry_config(dir: &Path, node: &str, scale: Scale, max_stations: u32) -> String {
    let capacity = max_stations + max_stations / 4 + 1024;
    let mut s = format!(
        "[node]\nname = \"{}\"\naddresses = [\"198.18.0.1\"]\n[interfaces]\nap_side = \"fap0\"\nclient_side = \"fcl0\"\n\
[forwarding]\ndefault_vlan = {VLAN}\nclient_vlans = [{VLAN}]\nstation_capacity = {capacity}\n\
[downstream]\nmtu = 2000\nnext_hop_mac = \"{}\"\nsource_mac = \"{}\"\n\
[admin]\nsocket = \"{}\"\n[metrics]\nlisten = \"\"\n",
        node,
        ferry_dataplane::tables::format_mac(&ROUTER_MAC),
        ferry_dataplane::tables::format_mac(&AC_AP_MAC),
        dir.join("admin.sock").display()
    );
    s.push_str(&tunnel_table(scale));
    s
}

/// The tunnel table of `scale` (what a swap takes).
pub fn tunnel_table(scale: Scale) -> String {
    (0..scale.aps)
        .map(|i| {
            format!(
                "[[tunnel]]\nap = \"ap{i}\"\naddress = \"{}\"\nport = {AP_PORT}\n",
                ap_addr(i)
            )
        })
        .collect()
}

/// The user-space forwarder's tables for `scale`.
fn user_table(scale: Scale) -> Table {
    let mut t = Table::default();
    for i in 0..scale.aps {
        t.tunnels.push(Tun {
            vlan: VLAN,
            ap: std::net::SocketAddrV4::new(ap_addr(i), AP_PORT),
            rid: RID,
        });
        t.by_addr.insert(ap_addr(i), i);
    }
    t.stations = (0..scale.stations)
        .map(|f| (station_mac(f), f % scale.aps.max(1)))
        .collect();
    t
}

impl Contenders {
    /// Builds the lab and sets up `who`, with rigs sized for `entries`
    /// templates; ferry (the binary `ferry`) starts with table `scale` and
    /// room for `max_stations`.
    pub fn new(
        who: &[Contender],
        queues: u32,
        entries: u32,
        ferry: &Path,
        (scale, max_stations): (Scale, u32),
        progress: &dyn Fn(&str),
    ) -> Result<Self> {
        let lab = Lab::new(queues)?;
        let n = INSTANCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let node = format!("live{}x{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("ferry-{node}"));
        std::fs::create_dir_all(&dir)?;
        let mut me = Self {
            lab,
            entries: Vec::new(),
            ferry: None,
            userspace: None,
            max_stations,
            node,
            dir,
        };
        for &c in who {
            progress(&format!("setting up {}", c.name()));
            let tag = &c.name()[..1];
            let slot = me.lab.slot(tag)?;
            let mut rig = Rig::load(entries)?;
            // Each live-mode test run adds its program to the kernel's XDP
            // dispatcher and removes it afterwards, re-patching the
            // dispatcher both times (milliseconds) unless the program is
            // already there: keeping it attached to an idle veth keeps it
            // there, so a test run costs microseconds.
            let anchor = me.lab.anchor(&format!("g{tag}"))?;
            rig.attach(&me.lab.ap, PROG_GEN, &anchor)?;
            rig.attach(&me.lab.ap, ferry_ebpf::loadgen::PROG_SINK, &slot.ap_if)?;
            rig.attach(
                &me.lab.client,
                ferry_ebpf::loadgen::PROG_SINK,
                &slot.client_if,
            )?;
            match c {
                Contender::Ferry => {}
                Contender::Redirect => {
                    let (a, b) = (slot.ac.ifindex("fap0")?, slot.ac.ifindex("fcl0")?);
                    rig.set_redirect(&slot.ac, a, b)?;
                    rig.set_redirect(&slot.ac, b, a)?;
                    for i in ["fap0", "fcl0"] {
                        rig.attach(&slot.ac, ferry_ebpf::loadgen::PROG_REDIRECT, i)?;
                    }
                }
                Contender::Userspace => {
                    for i in ["fap0", "fcl0"] {
                        rig.attach(&slot.ac, abi::PROG_PASS, i)?;
                    }
                }
            }
            me.entries.push(Entry { who: c, slot, rig });
        }
        me.set_scale(ferry, scale, progress)?;
        Ok(me)
    }

    fn entry(&self, c: Contender) -> Result<&Entry> {
        self.entries
            .iter()
            .find(|e| e.who == c)
            .with_context(|| format!("{} is not in this run", c.name()))
    }

    /// Gives every contender the tables of `scale`: ferry starts with it
    /// (or swaps it in) and gets its stations written into its live station
    /// table as if learned; the forwarder restarts with it.
    pub fn set_scale(&mut self, ferry: &Path, scale: Scale, progress: &dyn Fn(&str)) -> Result<()> {
        if let Ok(e) = self.entry(Contender::Ferry) {
            let config = self.dir.join("ferry.toml");
            if self.ferry.is_none() {
                std::fs::write(
                    &config,
                    ferry_config(&self.dir, &self.node, scale, self.max_stations),
                )?;
                progress(&format!("starting ferry run with {} tunnels", scale.aps));
                let d = Daemon::start(
                    &e.slot.ac,
                    ferry,
                    &config,
                    &self.node,
                    &self.dir.join("admin.sock"),
                    &self.dir,
                )?;
                self.ferry = Some((d, config));
            } else if let Some((d, _)) = &self.ferry {
                progress(&format!("swapping in {} tunnels", scale.aps));
                let _: views::Change = d.call(Request::Swap {
                    file: self.dir.join("table.toml").display().to_string(),
                    text: tunnel_table(scale),
                    force: true,
                    dry_run: false,
                })?;
            }
            if let Some((d, _)) = &self.ferry {
                let by_index = d.tunnel_ids(scale.aps)?;
                fill_stations_from(&d.pin_dir, scale.stations, &by_index, RID, &progress)?;
            }
        }
        if let Ok(e) = self.entry(Contender::Userspace) {
            let ns = e.slot.ac.name().to_string();
            if let Some(f) = self.userspace.take() {
                f.stop()?;
            }
            let q = self.lab.queues;
            self.userspace = Some(Forwarder::start(
                &ns,
                "fcl0",
                q,
                Arc::new(user_table(scale)),
            )?);
        }
        Ok(())
    }

    /// ferry's forwarded count in `dir` and its slow lookups there
    /// (see [`Sample::slow_lookups`]).
    fn ferry_counts(&self, dir: Direction) -> Result<(u64, u64)> {
        let Some((d, _)) = &self.ferry else {
            bail!("ferry is not running");
        };
        let c: views::Counters = d.call(Request::Counters)?;
        let key = match dir {
            Direction::Up => abi::Reason::Forwarded.name(),
            Direction::Down => abi::Reason::DownForwarded.name(),
        };
        let slow = match dir {
            Direction::Up => c.station_table_reads,
            Direction::Down => c.fib_lookups,
        };
        Ok((c.reasons.get(key).copied().unwrap_or(0), slow))
    }

    /// The contender's own forwarded count, and ferry's slow lookups.
    fn own_count(&self, c: Contender, dir: Direction) -> Result<(Option<u64>, Option<u64>)> {
        Ok(match c {
            Contender::Ferry => {
                let (f, r) = self.ferry_counts(dir)?;
                (Some(f), Some(r))
            }
            Contender::Redirect => (None, None),
            Contender::Userspace => (
                self.userspace.as_ref().map(|f| {
                    let n = match dir {
                        Direction::Up => &f.counts.up,
                        Direction::Down => &f.counts.down,
                    };
                    n.load(std::sync::atomic::Ordering::Relaxed)
                }),
                None,
            ),
        })
    }

    /// One round: `offer` sent to contender `c` in direction `dir` from
    /// `threads` pinned senders; the sink's and the contender's counts
    /// before and after.
    pub fn round(
        &mut self,
        c: Contender,
        dir: Direction,
        threads: u32,
        offer: &Offer,
    ) -> Result<Sample> {
        let own0 = self.own_count(c, dir)?;
        let i = self
            .entries
            .iter()
            .position(|e| e.who == c)
            .with_context(|| format!("{} is not in this run", c.name()))?;
        let before = self.entries[i].rig.sunk()?;
        let e = &self.entries[i];
        let (ns, iface) = match dir {
            Direction::Up => (&self.lab.ap, &e.slot.ap_if),
            Direction::Down => (&self.lab.client, &e.slot.client_if),
        };
        let sent = sender::send(e.rig.program(PROG_GEN)?, ns, iface, threads, offer)?;
        // Frames still in a queue, a socket buffer or a forwarder's batch
        // belong to this round: wait until the sink's count settles (at
        // most 3 s), so they do not land in the next round's figures.
        // The time up to the last poll that still saw frames counts as
        // the round's, so a backlog is not rated as if it arrived at once.
        let sent_at = std::time::Instant::now();
        let mut drain = 0.0;
        let mut after = self.entries[i].rig.sunk()?;
        for _ in 0..150 {
            std::thread::sleep(Duration::from_millis(20));
            let now = self.entries[i].rig.sunk()?;
            if now.total == after.total {
                break;
            }
            after = now;
            drain = sent_at.elapsed().as_secs_f64();
        }
        let own1 = self.own_count(c, dir)?;
        Ok(Sample {
            sent,
            drain_secs: drain,
            sunk: after.since(&before),
            forwarded: own0.0.zip(own1.0).map(|(a, b)| b - a),
            slow_lookups: own0.1.zip(own1.1).map(|(a, b)| b - a),
        })
    }

    /// The rig of contender `c`.
    pub fn rig(&mut self, c: Contender) -> Result<&mut Rig> {
        self.entries
            .iter_mut()
            .find(|e| e.who == c)
            .map(|e| &mut e.rig)
            .with_context(|| format!("{} is not in this run", c.name()))
    }

    /// ferry's log so far (for errors).
    pub fn ferry_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("ferry.log")).unwrap_or_default()
    }
}

impl Drop for Contenders {
    fn drop(&mut self) {
        if let Some(f) = self.userspace.take() {
            let _ = f.stop();
        }
        self.ferry = None;
        if std::env::var_os("FERRY_BENCH_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

//! Gratuitous announcements: when this node becomes master of a group, one
//! frame per station of the group is sent into the station's client VLAN
//! out of the client-side interface, from the station's MAC, so the
//! switches (and Linux bridges) move the MAC to this node's port at once
//! instead of sending downstream frames to the old master until their
//! tables age out. The frame is the one WLAN equipment sends when a
//! station roams: the IEEE 802.11F "Layer 2 Update" (broadcast, source the
//! station, LLC XID), 802.1Q-tagged with the station's VLAN.
//!
//! It runs on a thread of its own, so a million stations never delay a
//! heartbeat, paced at [`RATE`] frames a second, and stops early when the
//! node loses the group meanwhile.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, mpsc},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use ferry_dataplane::{
    capture::PacketSocket,
    datapath::{GroupRoles, group_stations},
};
use ferry_ebpf::abi::StationKey;
use tracing::{info, warn};

use super::{
    Shared,
    heartbeat::lock,
    view::{Event, EventKind},
};

/// Announcements sent per second at most.
pub const RATE: u32 = 50_000;
/// Frames sent between two pacing checks.
const BURST: u32 = 500;

/// One announcement: the group index, its name, and who to tell
/// `(sent, of)` when it is out.
type Job = (u16, String, Option<mpsc::Sender<(u64, u64)>>);

/// The announcing thread.
pub struct Announcer {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Announcer {
    /// Starts the thread for the node pinned under `pin_dir`, sending out
    /// of `iface` (the client-side interface).
    pub fn start(pin_dir: PathBuf, iface: String, shared: Arc<Mutex<Shared>>) -> Result<Self> {
        let roles = GroupRoles::open_pinned(&pin_dir)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("ferry-announce".into())
            .spawn(move || {
                for (group, name, done) in rx {
                    let t0 = Instant::now();
                    let r = announce(&pin_dir, &iface, &roles, group);
                    if let Some(done) = done {
                        let _ = done.send(*r.as_ref().unwrap_or(&(0, 0)));
                    }
                    let e = match r {
                        Ok((sent, of)) => {
                            let ms = t0.elapsed().as_millis();
                            info!(group = %name, sent, of, ms, "HA: stations announced");
                            Event::now(
                                EventKind::Announce,
                                format!("{sent} of {of} stations announced on {iface} in {ms} ms"),
                            )
                        }
                        Err(e) => {
                            warn!(group = %name, "HA: announcing stations: {e:#}");
                            Event::now(EventKind::Error, format!("announcing stations: {e:#}"))
                        }
                    };
                    lock(&shared).history.push(Event {
                        group: Some(name),
                        ..e
                    });
                }
            })
            .context("starting the announcing thread")?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Announces the stations of group `index` (named `name`).
    pub fn announce(&self, index: u16, name: &str) {
        self.announce_then(index, name, None);
    }

    /// Announces, then tells `done` how many of how many were sent.
    pub fn announce_then(&self, index: u16, name: &str, done: Option<mpsc::Sender<(u64, u64)>>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send((index, name.to_string(), done));
        }
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends one frame per station of `group`; how many were sent, of how
/// many.
fn announce(
    pin_dir: &std::path::Path,
    iface: &str,
    roles: &GroupRoles,
    group: u16,
) -> Result<(u64, u64)> {
    let stations = group_stations(pin_dir, group)?;
    let sock = PacketSocket::bind(iface).with_context(|| format!("opening {iface}"))?;
    let start = Instant::now();
    let mut sent = 0u64;
    for chunk in stations.chunks(BURST as usize) {
        if !roles.active(group)? {
            break;
        }
        for k in chunk {
            sock.send(&frame(k))?;
            sent += 1;
        }
        let due = start + Duration::from_secs_f64(sent as f64 / f64::from(RATE));
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }
    Ok((sent, stations.len() as u64))
}

/// The 802.11F Layer 2 Update frame for station `k`, tagged in its VLAN.
pub fn frame(k: &StationKey) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&k.mac);
    f.extend_from_slice(&ferry_ebpf::vlan::TPID_8021Q.to_be_bytes());
    f.extend_from_slice(&ferry_ebpf::vlan::tci(0, k.vlan).to_be_bytes());
    // 802.3 length (6), then LLC: DSAP null, SSAP null (response), XID,
    // and the XID information field (IEEE 802.2 type 1, window 0).
    f.extend_from_slice(&6u16.to_be_bytes());
    f.extend_from_slice(&[0x00, 0x01, 0xaf, 0x81, 0x01, 0x00]);
    f.resize(64, 0);
    f
}

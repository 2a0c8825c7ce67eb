//! The node: the state `ferry run` owns, and nothing else. Services and
//! commands act on it; the maps change only through [`crate::commands`].

use std::{path::PathBuf, time::Instant};

use ferry_dataplane::datapath::Datapath;
use tracing::warn;

use crate::{
    api::views::{Connections, KeepaliveCounts, ReloadOutcome},
    attachments::Attachments,
    keepalive::{RateLimit, Sessions},
    tables::TableState,
};

/// A running node.
pub struct Node {
    /// The configuration file (re-read by reload).
    pub config_path: PathBuf,
    /// The loaded programs and maps.
    pub dp: Datapath,
    /// The tables and their history.
    pub tables: TableState<Datapath>,
    /// Keepalive liveness and session bindings.
    pub sessions: Sessions,
    /// Answers to unknown sessions.
    pub unknown: RateLimit,
    /// Keepalive outcomes.
    pub ka: KeepaliveCounts,
    /// When this process started serving.
    pub started: Instant,
    /// Whether a running data plane was adopted.
    pub adopted: bool,
    /// The attached programs and their health.
    pub attachments: Attachments,
    /// Where the maps and links are pinned.
    pub pin_dir: PathBuf,
    /// The state file.
    pub state_file: PathBuf,
    /// The last reload (SIGHUP or `ferry reload`) and how it ended.
    pub last_reload: Option<ReloadOutcome>,
    /// Admin and metrics connections closed early, by reason.
    pub conns: Connections,
    /// Map reads that failed while serving metrics (counted, not hidden).
    pub scrape_errors: u64,
    /// A session binding changed since the bindings file was written:
    /// saved by the next tick, so flapping keepalives cost a few map
    /// writes each, not a file write, and the bindings file is written
    /// at most once a second (see [`crate::state`]). A restart over
    /// running maps takes the bindings from the maps anyway.
    pub bindings_dirty: bool,
    /// The HA thread, with `[ha]`.
    pub ha: Option<crate::ha::Ha>,
    /// Licence accounting, with `[ha]`.
    pub licensing: Option<super::licensing::Licensing>,
    /// When the learning-hint epoch last advanced.
    pub hint_epoch_at: Instant,
    /// When the last next-hop generation started.
    pub next_hops_at: Instant,
}

impl Node {
    /// Writes the state file; a failure is logged (the data plane is
    /// already what it is).
    pub fn save_state(&mut self) {
        self.bindings_dirty = false;
        let saved = crate::tables::Saved {
            kernel_generation: Some(self.dp.generation()),
            ..self.tables.saved()
        };
        if let Err(e) = crate::state::write(&self.state_file, &saved) {
            warn!(file = %self.state_file.display(), "saving state: {e:#}");
        }
    }

    /// The HA thread, or the error a node without `[ha]` answers with.
    pub fn ha(&self) -> anyhow::Result<&crate::ha::Ha> {
        self.ha.as_ref().ok_or_else(|| {
            anyhow::anyhow!("this node has no [ha] section: it is not part of a pair")
        })
    }

    /// Once a second: a new learning-hint epoch and next-hop generation
    /// when one is due, the attachments as the
    /// kernel reports them, data channels that went silent, and a bindings
    /// file that owes a binding.
    pub fn tick(&mut self) {
        self.relicense();
        if self.hint_epoch_at.elapsed().as_secs() >= ferry_ebpf::abi::STATION_HINT_EPOCH_SECS {
            self.hint_epoch_at = Instant::now();
            if let Err(e) = self.dp.advance_hint_epoch() {
                warn!("advancing the learning-hint epoch: {e:#}");
            }
        }
        if self.next_hops_at.elapsed().as_secs() >= ferry_ebpf::abi::NEXT_HOP_MAX_AGE_SECS {
            self.refresh_next_hops();
        }
        if self.attachments.check(&mut self.dp).reattached {
            self.retarget_interfaces();
        }
        if self.bindings_dirty {
            self.bindings_dirty = false;
            if let Err(e) = crate::state::write_bindings(&self.state_file, self.tables.bindings()) {
                warn!(file = %self.state_file.display(), "saving session bindings: {e:#}");
            }
        }
        for ap in self.sessions.expire(Instant::now()) {
            warn!(
                ap,
                dead_interval_s = self.tables.config.dead_interval.as_secs(),
                "data channel dead: no keepalive"
            );
        }
    }

    /// Starts a new next-hop generation (a FIB answer may have changed, or
    /// the last one is `abi::NEXT_HOP_MAX_AGE_SECS` old); a failure is
    /// logged, and the next change or tick tries again.
    pub fn refresh_next_hops(&mut self) {
        self.next_hops_at = Instant::now();
        if let Err(e) = self.dp.refresh_next_hops() {
            warn!("starting a new next-hop generation: {e:#}");
        }
    }

    /// Points the redirect egress slots and the FIB interface at the
    /// interfaces' current indexes (a re-created interface has a new one;
    /// the kernel already removed the old one from the egress map).
    fn retarget_interfaces(&mut self) {
        let ap = self.tables.config.ap_side.clone();
        let client = self.tables.config.client_side.clone();
        let r = (|| -> anyhow::Result<()> {
            let ap_i = crate::host::ifindex(&ap)?;
            let client_i = crate::host::ifindex(&client)?;
            crate::host::enable_forwarding(&ap);
            self.dp.set_ap_egress(ap_i)?;
            self.dp.set_client_egress(client_i)?;
            self.dp.set_ap_ifindex(ap_i)?;
            self.tables.set_ap_ifindex(ap_i);
            Ok(())
        })();
        if let Err(e) = r {
            warn!("pointing the egress at the re-created interfaces: {e:#}");
        }
    }
}

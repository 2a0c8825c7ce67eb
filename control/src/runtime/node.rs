//! The node: the state `ferry run` owns, and nothing else. Services and
//! commands act on it; the maps change only through [`crate::commands`].

use std::{path::PathBuf, time::Instant};

use ferry_dataplane::datapath::Datapath;
use tracing::warn;

use crate::{
    api::views::{Attachment, KeepaliveCounts},
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
    /// The attached programs.
    pub attachments: Vec<Attachment>,
    /// Where the maps and links are pinned.
    pub pin_dir: PathBuf,
    /// The state file.
    pub state_file: PathBuf,
    /// Map reads that failed while serving metrics (counted, not hidden).
    pub scrape_errors: u64,
    /// A session binding changed since the state file was written: saved
    /// by the next tick, so flapping keepalives cost a map write each, not
    /// a rewrite of the whole state file. (A binding lost in a crash within
    /// that second is learned again from the AP's next keepalive.)
    pub state_dirty: bool,
}

impl Node {
    /// Writes the state file; a failure is logged (the data plane is
    /// already what it is).
    pub fn save_state(&mut self) {
        self.state_dirty = false;
        if let Err(e) = crate::state::write(&self.state_file, &self.tables.saved()) {
            warn!(file = %self.state_file.display(), "saving state: {e:#}");
        }
    }

    /// Once a second: data channels that went silent, and a state file
    /// that owes a binding.
    pub fn tick(&mut self) {
        if self.state_dirty {
            self.save_state();
        }
        for ap in self.sessions.expire(Instant::now()) {
            warn!(
                ap,
                dead_interval_s = self.tables.config.dead_interval.as_secs(),
                "data channel dead: no keepalive"
            );
        }
    }
}

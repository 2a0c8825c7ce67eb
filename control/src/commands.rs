//! The one path through which every table change goes: admin requests,
//! SIGHUP and keepalive bindings today; peer sync, group roles and licence
//! admission next. Nothing else writes the tables: a command is validated
//! whole, applied through [`crate::tables::TableState`], and followed by the
//! same bookkeeping (sessions re-declared, log line, state file).

use std::{net::SocketAddr, path::PathBuf, time::Instant};

use anyhow::{Result, anyhow, bail};
use tracing::info;

use crate::{
    api::views::{Change, ChangeKind, Plan, ReloadOutcome},
    config::{Config, TunnelState},
    runtime::node::Node,
};

/// A change to the tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Swap in a table file's contents (`text`, read from `file`).
    Swap {
        /// The file (for error messages).
        file: PathBuf,
        /// Its text.
        text: String,
        /// Apply it even if it removes every tunnel, or more than
        /// `admin.max_removal_percent` of them.
        force: bool,
    },
    /// Re-read the configuration file and apply it as a swap.
    Reload {
        /// As for [`Command::Swap`].
        force: bool,
    },
    /// Flip back to the previous generation.
    Rollback,
    /// Add one tunnel (`[[tunnel]]` TOML text).
    TunnelAdd {
        /// The entry.
        text: String,
    },
    /// Remove one tunnel.
    TunnelRemove {
        /// AP name.
        ap: String,
    },
    /// Make one tunnel active or standby.
    SetState {
        /// AP name.
        ap: String,
        /// The state wanted.
        state: TunnelState,
    },
    /// Bind a session tunnel to where its keepalives come from.
    Bind {
        /// AP name.
        ap: String,
        /// The AP's address and port.
        peer: SocketAddr,
    },
    /// The HA peer's table (a swap, rollback or tunnel edit applied
    /// there), swapped in whole with the same checks as a file's.
    PeerTable {
        /// Its tunnels.
        tunnels: Vec<crate::config::TunnelEntry>,
        /// Its static stations.
        stations: Vec<crate::config::StationEntry>,
    },
}

impl Command {
    /// Whether the command changes the table the HA pair shares (a
    /// binding is per node; a peer's table is already the pair's).
    pub fn shared_table(&self) -> bool {
        !matches!(self, Self::Bind { .. } | Self::PeerTable { .. })
    }
}

impl Node {
    /// Applies `cmd`; on success the change is logged and saved and, in
    /// an HA pair, a change of the shared table goes to the peer under
    /// the next revision (from the admin socket and SIGHUP alike).
    pub fn execute(&mut self, cmd: Command) -> Result<Change> {
        let shared = cmd.shared_table();
        let c = match cmd {
            Command::Swap { file, text, force } => {
                let t0 = Instant::now();
                let next = self.table_from(&file, &text)?;
                self.guard_removal(&next, force)?;
                self.swap(next, t0, ChangeKind::Swap)?
            }
            Command::Reload { force } => {
                let t0 = Instant::now();
                let r = self.reloaded().and_then(|next| {
                    self.guard_removal(&next, force)?;
                    self.swap(next, t0, ChangeKind::Reload)
                });
                self.last_reload = Some(ReloadOutcome::of(&r));
                r?
            }
            Command::Rollback => self.tables.rollback(&mut self.dp)?,
            Command::TunnelAdd { text } => {
                let t = self
                    .tables
                    .config
                    .parse_tunnel(&text)
                    .map_err(|e| anyhow!("{}", e.reason))?;
                let ap = t.ap.clone();
                let next = self.tables.with_tunnel(t)?;
                self.tables
                    .edit(&mut self.dp, next, ChangeKind::TunnelAdd, &ap)?
            }
            Command::TunnelRemove { ap } => {
                let next = self.tables.without(&ap)?;
                self.tables
                    .edit(&mut self.dp, next, ChangeKind::TunnelRemove, &ap)?
            }
            Command::SetState { ap, state } => {
                let kind = match state {
                    TunnelState::Active => ChangeKind::Promote,
                    TunnelState::Standby => ChangeKind::Demote,
                };
                match self.tables.with_state(&ap, state)? {
                    Some(next) => self.tables.edit(&mut self.dp, next, kind, &ap)?,
                    // Already so: scripts retry, and a retry succeeds.
                    None => {
                        let t = &self.tables;
                        return Ok(Change::unchanged(
                            kind,
                            &ap,
                            t.generation,
                            t.config.tunnels.len(),
                        ));
                    }
                }
            }
            Command::Bind { ap, peer } => self.tables.bind(&mut self.dp, &ap, peer)?,
            Command::PeerTable { tunnels, stations } => {
                let t0 = Instant::now();
                let next = self
                    .tables
                    .config
                    .with_entries(std::path::Path::new("<HA peer table>"), tunnels, stations)
                    .map_err(|e| anyhow!("{e} (nothing was changed)"))?;
                self.swap(next, t0, ChangeKind::Swap)?
            }
        };
        if shared && c.old_generation != c.new_generation {
            // Before the state file (see `ha::revision`).
            crate::ha::revision::replicate(self);
        }
        self.after_change(&c);
        Ok(c)
    }

    /// What `cmd` would do, without doing it (`--dry-run`): swaps, reloads
    /// and rollbacks.
    pub fn plan(&mut self, cmd: &Command) -> Result<Plan> {
        match cmd {
            Command::Swap { file, text, .. } => {
                let next = self.table_from(file, text)?;
                self.tables.plan(&mut self.dp, &next, ChangeKind::Swap)
            }
            Command::Reload { .. } => {
                let next = self.reloaded()?;
                self.tables.plan(&mut self.dp, &next, ChangeKind::Reload)
            }
            Command::Rollback => self.tables.plan_rollback(&mut self.dp),
            _ => bail!("only swap, reload and rollback have a dry run"),
        }
    }

    /// A table file validated against the running configuration.
    fn table_from(&self, file: &std::path::Path, text: &str) -> Result<Config> {
        self.tables
            .config
            .with_table(file, text)
            .map_err(|e| anyhow!("{e} (nothing was changed)"))
    }

    /// The configuration file, re-read and validated.
    fn reloaded(&self) -> Result<Config> {
        Config::load(&self.config_path).map_err(|e| anyhow!("{e} (nothing was changed)"))
    }

    /// Refuses, unless `force`, a table that would remove every live
    /// tunnel or more than `admin.max_removal_percent` of them: a truncated
    /// or wrong file must not take an AC's APs down in one request.
    fn guard_removal(&self, next: &Config, force: bool) -> Result<()> {
        if force {
            return Ok(());
        }
        let live = &self.tables.config.tunnels;
        if next.tunnels.is_empty() && !live.is_empty() {
            bail!(
                "the table has no [[tunnel]] entries (an empty or comment-only file) and would remove all {} tunnels; nothing was changed (--force applies it)",
                live.len()
            );
        }
        let removed = live
            .iter()
            .filter(|t| next.tunnel_named(&t.ap).is_none())
            .count();
        let pct = usize::from(next.max_removal_percent);
        if removed > 0 && (removed == live.len() || removed * 100 > live.len() * pct) {
            bail!(
                "the table would remove {removed} of {} tunnels, more than admin.max_removal_percent ({pct}%); nothing was changed (--dry-run lists them, --force applies it)",
                live.len()
            );
        }
        Ok(())
    }

    fn swap(&mut self, next: Config, t0: Instant, kind: ChangeKind) -> Result<Change> {
        let validated = t0.elapsed();
        let mut c = self.tables.swap(&mut self.dp, next, kind)?;
        self.tables.add_validation(&mut c, validated);
        Ok(c)
    }

    fn after_change(&mut self, c: &Change) {
        if c.kind == ChangeKind::Bind {
            // Live state, not a table change: the keepalive service logs
            // it, and the bindings file catches up within a second.
            self.bindings_dirty = true;
            return;
        }
        let cfg = &self.tables.config;
        self.sessions
            .declare(cfg.tunnels.iter().map(|t| (t.ap.as_str(), t.session_id)));
        info!(
            kind = %c.kind,
            ap = c.ap.as_deref().unwrap_or(""),
            old_generation = c.old_generation,
            new_generation = c.new_generation,
            tunnels = c.tunnels,
            added = c.added,
            removed = c.removed,
            total_us = c.total_us,
            flip_us = c.flip_us,
            stations_flushed = c.stations_flushed,
            "tables changed"
        );
        self.save_state();
    }
}

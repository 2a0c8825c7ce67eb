//! Start-up and shutdown order of `ferry run`.
//!
//! The data plane does not depend on this process: programs are attached
//! through BPF links pinned under `<pin root>/<node>/`, next to the maps, so
//! they keep forwarding with the last tables while ferry is stopped or
//! restarting. A new `ferry run` finds the pins, loads the programs against
//! the pinned maps, swaps each program into its pinned link atomically
//! (`BPF_LINK_UPDATE`), and installs the running table as an ordinary
//! whole-table swap: no packet sees an interface without a program or a
//! half-built table, and learned stations and AP ports survive.
//!
//! Order: configuration, then the node's instance lock (a second `ferry
//! run` for the node changes nothing, not even the first one's admin
//! socket), then every socket the node serves (admin, metrics, keepalives:
//! a start that cannot serve changes nothing), then the data plane, then
//! the event loop. On exit the state is saved and,
//! with `--detach-on-exit`, the pins removed.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, Result};
use ferry_dataplane::datapath::{Datapath, with_local4};
use tracing::{info, warn};

use super::{
    admin,
    event_loop::{self, Service},
    licensing::Licensing,
    lock::InstanceLock,
    node::Node,
    signals::{SignalService, TickService},
};
use crate::{
    api::views::{Change, KeepaliveCounts},
    attachments::Attachments,
    config::Config,
    host::{self, AttachMode},
    keepalive::{RateLimit, Sessions, service::KeepaliveService},
    metrics,
    nexthops::service::NextHopService,
    pins, state,
    tables::{self, Saved, TableState, licensing::Admission, lower},
};

/// `ferry run` options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Configuration file.
    pub config: PathBuf,
    /// Attach mode.
    pub mode: AttachMode,
    /// Remove the programs and pins on exit (else forwarding continues).
    pub detach_on_exit: bool,
    /// bpffs directory holding one directory per node.
    pub pin_root: PathBuf,
    /// Directory of the state file.
    pub state_dir: PathBuf,
    /// Throw away pinned state from an earlier run instead of adopting it.
    pub replace: bool,
    /// Accept a bpffs private to this mount namespace (pins die with the
    /// process: no hitless restart).
    pub private_bpffs: bool,
}

/// Runs the control process until SIGTERM or SIGINT.
pub fn run(opts: Options) -> Result<()> {
    host::tune_allocator();
    let config = Config::load(&opts.config)?;
    let _lock = InstanceLock::take(&opts.state_dir, &config.name)?;
    host::raise_memlock();
    host::raise_nofile();
    let pin_dir = pins::dir(&opts.pin_root, &config.name);
    let state_file = state::path(&opts.state_dir, &config.name);
    host::check_shared_bpffs(&opts.pin_root, opts.private_bpffs)?;
    host::ensure_bpffs(&opts.pin_root)?;
    let socket = config.admin_socket.clone();
    let mut services: Vec<Box<dyn Service>> = vec![Box::new(SignalService::new()?)];
    services.push(Box::new(admin::bind(&socket)?));
    let r = serve(&opts, config, &pin_dir, &state_file, services);
    let _ = std::fs::remove_file(&socket);
    r
}

/// Everything after the admin socket is bound (which [`run`] removes on
/// the way out, whatever happens here).
fn serve(
    opts: &Options,
    config: Config,
    pin_dir: &Path,
    state_file: &Path,
    mut services: Vec<Box<dyn Service>>,
) -> Result<()> {
    if let Some(addr) = config.metrics {
        services.push(Box::new(metrics::bind(addr)?));
    }
    services.push(Box::new(KeepaliveService::bind(&config)?));
    services.push(Box::new(TickService::default()));
    services.push(Box::new(NextHopService::bind()?));
    host::ifindex(&config.ap_side)?;
    host::ifindex(&config.client_side)?;
    if opts.replace && pin_dir.exists() {
        warn!(dir = %pin_dir.display(), "--replace: removing the pinned programs and maps of an earlier run; forwarding stops until the new programs attach");
        pins::remove(pin_dir)
            .with_context(|| format!("removing the pins in {}", pin_dir.display()))?;
        state::remove(state_file);
    }
    let ha = match &config.ha {
        Some(h) => {
            let (bound, sync) = crate::ha::Bound::bind(h, &opts.config)?;
            services.push(Box::new(sync));
            Some(bound)
        }
        None => None,
    };
    let licensing = match &config.ha {
        Some(h) => Some(Licensing::load(&opts.state_dir, &config.name, h)?),
        None => None,
    };
    let admission = licensing
        .as_ref()
        .map_or_else(Admission::default, Licensing::initial);
    let saved = state::read(state_file)?;
    let revision_file = config
        .ha
        .as_ref()
        .and_then(|_| state::read_revision(state_file));
    if let Some(s) = &saved {
        s.check().map_err(|e| refuse_state(state_file, &e))?;
    }
    let adopted = ferry_dataplane::datapath::pinned_abi(pin_dir)?.is_some();
    std::fs::create_dir_all(pin_dir)
        .with_context(|| format!("creating pin directory {}", pin_dir.display()))?;
    let how = How {
        mode: opts.mode,
        admission,
    };
    let up = match bring_up(config, saved, adopted, pin_dir, state_file, how) {
        Ok(v) => v,
        Err(e) => {
            if !adopted {
                // Nothing was forwarding before: leave nothing half set up.
                let _ = pins::remove(pin_dir);
            }
            return Err(e);
        }
    };
    match &up.change {
        Some(c) => info!(
            generation = c.new_generation,
            tunnels = c.tunnels,
            flip_us = c.flip_us,
            stations_flushed = c.stations_flushed,
            "adopted the pinned maps (tables, counters, learned stations) and installed the table as a swap"
        ),
        None => info!(
            tunnels = up.tables.config.tunnels.len(),
            "data plane loaded and attached"
        ),
    }
    let mut node = node(opts, up, adopted, pin_dir, state_file);
    node.licensing = licensing;
    if let Some(bound) = ha {
        start_ha(&mut node, bound, revision_file.as_ref(), pin_dir)?;
    }
    node.save_state();
    host::trim_heap();
    info!(
        admin = %node.tables.config.admin_socket.display(),
        metrics = %node.tables.config.metrics.map_or("off".to_string(), |a| a.to_string()),
        keepalive_port = node.tables.config.data_port,
        "ferry run ready"
    );
    let r = event_loop::run(&mut node, &mut services);
    node.save_state();
    if opts.detach_on_exit {
        info!(dir = %pin_dir.display(), "--detach-on-exit: removing programs and pins");
        drop(node);
        pins::remove(pin_dir)
            .with_context(|| format!("removing the pins in {}", pin_dir.display()))?;
        state::remove(state_file);
    } else {
        // Nothing watches the routes from now on: the programs re-check
        // their cached next hops every 64 uses instead of waiting out the
        // lease.
        if let Err(e) = node.dp.end_next_hop_lease() {
            warn!("ending the next-hop cache's lease: {e:#}");
        }
        info!("exiting; the pinned programs keep forwarding with the last tables");
    }
    r
}

/// Starts the HA thread on `node`, at the table revision its revision
/// file gives the table that runs ([`crate::ha::revision`]).
fn start_ha(
    node: &mut Node,
    bound: crate::ha::Bound,
    revision_file: Option<&state::RevisionFile>,
    pin_dir: &Path,
) -> Result<()> {
    let Some(h) = node.tables.config.ha.clone() else {
        return Ok(());
    };
    // A table that cannot be digested is not the one the file names.
    let digest = crate::ha::revision::digest_of(&node.tables.config).unwrap_or_default();
    let (revision, kept) = crate::ha::revision::at_start(revision_file, &digest);
    bound.revisions().start(revision, digest, kept);
    info!(
        revision,
        kept, "table revision at start (not kept: the peer's table wins)"
    );
    let ha = crate::ha::Ha::start(
        &node.tables.config.name,
        &h,
        bound,
        pin_dir,
        &node.tables.config.client_side,
    )?;
    info!(
        peers = ?h.peers,
        groups = h.groups.len(),
        election = ?h.election,
        "HA thread started: groups stand by until elected"
    );
    // The file is rewritten once the table is confirmed (a change, the
    // peer's table, or the peer agreeing), not now: an unconfirmed start
    // must stay unconfirmed if it restarts again.
    node.ha = Some(ha);
    Ok(())
}

/// How [`bring_up`] installs and attaches.
struct How {
    /// Attach mode.
    mode: AttachMode,
    /// Licence admission of the first table (HA).
    admission: Admission,
}

/// The node over what [`bring_up`] made.
fn node(opts: &Options, up: Up, adopted: bool, pin_dir: &Path, state_file: &Path) -> Node {
    let config = &up.tables.config;
    let mut sessions = Sessions::new(config.dead_interval, config.rebind_interval);
    sessions.declare(config.tunnels.iter().map(|t| (t.ap.as_str(), t.session_id)));
    for t in &config.tunnels {
        if let Some(p) = up.tables.bound(&t.ap) {
            sessions.restore(&t.ap, p);
        }
    }
    let rate = f64::from(config.unknown_rate);
    Node {
        config_path: opts.config.clone(),
        unknown: RateLimit::new(rate, rate.max(1.0), Instant::now()),
        dp: up.dp,
        tables: up.tables,
        sessions,
        ka: KeepaliveCounts::default(),
        started: Instant::now(),
        adopted,
        attachments: up.attachments,
        pin_dir: pin_dir.to_path_buf(),
        state_file: state_file.to_path_buf(),
        scrape_errors: 0,
        conns: Default::default(),
        last_reload: None,
        bindings_dirty: false,
        ha: None,
        licensing: None,
        hint_epoch_at: Instant::now(),
        next_hops_at: Instant::now(),
    }
}

/// What [`bring_up`] makes: the loaded data plane, its tables, the swap
/// that installed them when a running data plane was adopted, and the
/// attachments.
struct Up {
    dp: Datapath,
    tables: TableState<Datapath>,
    change: Option<Change>,
    attachments: Attachments,
}

/// A state file that does not describe what runs: one line naming the file
/// and the ways out.
fn refuse_state(file: &Path, e: &anyhow::Error) -> anyhow::Error {
    super::Refused(format!(
        "{}: {e:#}; nothing was changed. Move the file away to adopt the running tables from the pinned maps, or start with --replace to reload everything",
        file.display()
    ))
    .into()
}

/// The table a restart keeps running: the state file's when the file
/// describes what runs, else the one raised from the pinned maps (a
/// missing file, or one older than the maps: a swap killed after its
/// flip). Never the configuration file's: `ferry reload` applies that.
fn running_table(
    dp: &mut Datapath,
    config: Config,
    saved: Option<Saved>,
    state_file: &Path,
) -> Result<(Config, Option<Saved>)> {
    let why = match &saved {
        None => format!("no state file {}", state_file.display()),
        Some(Saved { table: None, .. }) => "the state file does not hold the running table".into(),
        Some(Saved {
            kernel_generation: Some(g),
            ..
        }) if *g != dp.generation() => format!(
            "the state file is older than what runs (written at kernel generation {g}, the maps are at {})",
            dp.generation()
        ),
        Some(s) => {
            // The file describes what runs: keep its table.
            let c = s
                .running(&config, state_file)
                .and_then(|c| c.context("no running table"))
                .map_err(|e| {
                    refuse_state(
                        state_file,
                        &e.context("its running table does not fit this configuration"),
                    )
                })?;
            info!(
                generation = s.generation,
                "keeping the running table from before the restart (SIGHUP, `ferry reload` or `ferry swap` to change it)"
            );
            return Ok((c, saved));
        }
    };
    let empty = BTreeMap::new();
    let names = match &saved {
        Some(s) => tables::raise::OldNames::new(
            &s.ids,
            s.table.as_ref().map_or(&[][..], |t| &t.tunnels[..]),
        ),
        None => tables::raise::OldNames::new(&empty, &[]),
    };
    let r = tables::raise::running(dp, &config, &names)?;
    let unnamed = r.unnamed;
    let c = config
        .with_entries(Path::new("(the pinned maps)"), r.tunnels, r.stations)
        .map_err(|e| {
            super::Refused(format!(
                "the running table read back from the pinned maps does not fit this configuration ({e}); nothing was changed. Start with --replace to install the configuration's table"
            ))
        })?;
    warn!(
        tunnels = c.tunnels.len(),
        unnamed,
        "{why}: adopted the running table from the pinned maps, not the configuration file's (`ferry reload` applies the file)"
    );
    let s = Saved {
        ids: r.ids,
        generation: saved.map_or(1, |s| s.generation),
        bound: r.bound,
        table: None,
        kernel_generation: None,
    };
    Ok((c, Some(s)))
}

/// Loads the programs against the pinned maps, installs (or, after a
/// restart, swaps in) the tables and attaches.
fn bring_up(
    config: Config,
    saved: Option<Saved>,
    adopted: bool,
    pin_dir: &Path,
    state_file: &Path,
    how: How,
) -> Result<Up> {
    let mut dp = Datapath::load_pinned(pin_dir, config.station_capacity)?;
    let ap_ifindex = host::ifindex(&config.ap_side)?;
    let client_ifindex = host::ifindex(&config.client_side)?;
    host::enable_forwarding(&config.ap_side);
    let (config, saved) = if adopted {
        running_table(&mut dp, config, saved, state_file)?
    } else {
        (config, saved)
    };
    let (tables, change) = if adopted {
        if let Some(s) = &saved {
            s.check_against(&mut dp, &config)
                .map_err(|e| refuse_state(state_file, &e))?;
        }
        // Every check is behind us: from here on the live maps change.
        let mut lowered = lower::by_position(&config);
        lowered.settings.ap_ifindex = ap_ifindex;
        dp.set_local_addrs(&lowered.local_addrs)?;
        dp.set_settings(with_local4(lowered.settings, &lowered.local_addrs))?;
        let (t, c) = TableState::adopt_with(&mut dp, config, saved, ap_ifindex, how.admission)
            .context("adopting the running tables")?;
        (t, Some(c))
    } else {
        let t = TableState::install_with(&mut dp, config, ap_ifindex, how.admission)?;
        (t, None)
    };
    dp.set_client_egress(client_ifindex)?;
    dp.set_ap_egress(ap_ifindex)?;
    let attachments = Attachments::attach(&mut dp, &tables.config, pin_dir, how.mode)?;
    Ok(Up {
        dp,
        tables,
        change,
        attachments,
    })
}

//! `ferry`: the command-line front end of the ferry data plane.

use std::{io::IsTerminal as _, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use ferry::{host::AttachMode, runtime::run};

mod cli;

/// Exit status for bad input (config, arguments).
const EXIT_INPUT: u8 = 2;

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Kernel-bypass data plane for wireless access controllers",
    long_about = "ferry moves client frames out of CAPWAP data tunnels (UDP 5247) into the \
client VLAN entirely in XDP, and back.\n\n\
All commands that load the data plane need root (CAP_BPF and CAP_NET_ADMIN).",
    after_help = "EXIT STATUS\n  0  success\n  1  runtime failure (loading, kernel, I/O)\n  2  bad input: configuration, table or arguments\n\n\
See README.md for the configuration reference and the counter glossary."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file and print what it describes.
    #[command(
        long_about = "Validate a configuration file without touching the data plane.\n\n\
Prints the node, its addresses and the tunnel table. A bad file is reported as \
FILE:LINE:COLUMN: reason and exits with status 2.\n\n\
EXAMPLE\n  ferry check --config /etc/ferry/ferry.toml"
    )]
    Check {
        /// Configuration file (TOML).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Validate this swap table against the configuration instead (as
        /// `ferry swap` would, offline).
        #[arg(long, value_name = "TABLE.toml")]
        table: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run every packet of a capture through the real XDP program.
    #[command(
        long_about = "Run every packet of a pcap/pcapng capture through ferry's real, \
kernel-loaded XDP program (BPF_PROG_TEST_RUN), with the tables from the configuration. \
No interface is touched: the redirect egress points at loopback, which exists in every \
network namespace.\n\n\
Each frame runs through the program of the interface it would arrive on: the upstream \
program (AP side: CAPWAP decapsulation into the client VLAN) or the downstream program \
(client side: encapsulation down the station's tunnel); --from fixes the side. Stations \
learned from upstream frames stay learned for later frames, so a capture of uplink then \
downlink traffic replays like a live exchange.\n\n\
Every frame the programs would transmit (XDP_TX) or redirect (XDP_REDIRECT) is written to \
OUT in input order, exactly as it would leave, with the input's timestamp. The report \
gives frames per verdict, the programs' own counters per reason, learning events and \
per-tunnel statistics. Downstream, the FIB is not consulted (there is no interface): \
next hops come from next_hop_mac / source_mac in the configuration.\n\n\
EXAMPLE\n  ferry replay --config deploy/examples/ferry.toml \\\n      --in deploy/examples/sample.pcap --out /tmp/client-vlan.pcap"
    )]
    Replay {
        /// Configuration file (TOML) whose tables the program runs with.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Input capture (pcap or pcapng, Ethernet).
        #[arg(long = "in", value_name = "IN.pcap")]
        input: PathBuf,
        /// Output capture (pcap) of the frames the program sends.
        #[arg(long = "out", value_name = "OUT.pcap")]
        output: PathBuf,
        /// Interface every frame arrives on; default: decided per frame
        /// (CAPWAP to our data port = AP side, 802.1Q in a client VLAN =
        /// client side, anything else = AP side).
        #[arg(long, value_enum)]
        from: Option<FromSide>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the data plane: load, attach, serve keepalives and the admin API.
    #[command(long_about = RUN_HELP)]
    Run {
        /// Configuration file (TOML).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// XDP attach mode.
        #[arg(long, value_enum, default_value = "driver")]
        xdp_mode: XdpModeArg,
        /// On SIGTERM/SIGINT remove the programs and pins (forwarding
        /// stops); without it forwarding continues with the last tables.
        #[arg(long)]
        detach_on_exit: bool,
        /// Start from fresh maps instead of adopting the pinned ones
        /// (learned stations are lost; forwarding pauses while reloading).
        #[arg(long)]
        replace: bool,
        /// Run even when the bpffs is private to this mount namespace (as
        /// under `ip netns exec`): the pins die with the process, so the
        /// programs detach on exit and restarts are not hitless. Without
        /// it such a start is refused with the `nsenter --net` to use.
        #[arg(long)]
        private_bpffs: bool,
        /// bpffs directory for pins (one subdirectory per node).
        #[arg(long, value_name = "DIR", default_value = "/sys/fs/bpf/ferry")]
        pin_root: PathBuf,
        /// Directory of the state file (tunnel ids, bindings, generation).
        #[arg(long, value_name = "DIR", default_value = "/run/ferry")]
        state_dir: PathBuf,
        /// Log format.
        #[arg(long, value_enum, default_value = "human")]
        log_format: LogFormat,
    },
    /// Show the running node: attachments, generation, tunnels, keepalives.
    Status(#[command(flatten)] Target),
    /// Show the tunnel table with per-tunnel statistics and keepalive state.
    Tunnels(#[command(flatten)] Target),
    /// Show stations in the live station table.
    Stations {
        #[command(flatten)]
        target: Target,
        /// Only stations behind this AP.
        #[arg(long)]
        ap: Option<String>,
        /// Show at most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Show the programs' counters by reason (every drop has one).
    Counters(#[command(flatten)] Target),
    /// Replace the whole tunnel table atomically, or roll back.
    #[command(long_about = SWAP_HELP)]
    Swap {
        #[command(flatten)]
        target: Target,
        /// Table file: [[tunnel]] (and [[station]]) entries, same schema as
        /// the configuration.
        #[arg(value_name = "TABLE.toml", required_unless_present = "rollback")]
        table: Option<PathBuf>,
        /// Flip back to the previous generation instead.
        #[arg(long, conflicts_with = "table")]
        rollback: bool,
        /// Print what it would do (APs added, removed, changed; stations
        /// that would be flushed) and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Apply a table that removes every tunnel, or more than
        /// admin.max_removal_percent of them (refused otherwise).
        #[arg(long, conflicts_with = "rollback")]
        force: bool,
    },
    /// Re-read the running ferry's configuration file and apply its table
    /// as a swap (what SIGHUP does), and print the result.
    Reload {
        #[command(flatten)]
        target: Target,
        /// Print what it would do and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Apply it even if it removes every tunnel or more than
        /// admin.max_removal_percent of them.
        #[arg(long)]
        force: bool,
    },
    /// Add, remove, promote or demote one tunnel without a full swap.
    Tunnel {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        op: TunnelOp,
    },
    /// The HA pair: group roles, the peer, sync, history.
    Cluster {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        op: ClusterOp,
    },
    /// Hand HA groups to the peer, make-before-break (planned switchover).
    #[command(long_about = FAILOVER_HELP)]
    Failover(FailoverArgs),
}

/// `ferry failover` arguments.
#[derive(clap::Args)]
pub struct FailoverArgs {
    #[command(flatten)]
    target: Target,
    /// Only this group (default: every group this node masters).
    #[arg(long)]
    group: Option<String>,
    /// The APs have left once no data of the group arrived here for this
    /// long (ms).
    #[arg(long, default_value_t = 300)]
    quiet_ms: u64,
    /// Stand by after this long (ms) even if the group's data still
    /// arrives here.
    #[arg(long, default_value_t = 10_000)]
    max_drain_ms: u64,
}

const FAILOVER_HELP: &str = "Hand HA groups to the peer, make-before-break (a planned switchover).\n\n\
Run it on the group's master. For each group: every station change so far goes to the peer \
ahead of the order (the sync barrier); the peer takes the group (its data plane forwards it) \
and announces the stations; this node then keeps forwarding beside it while it leaves the \
group's keepalives unanswered, so dual-link APs move their data to the new master; once no \
data of the group has arrived here for --quiet-ms (or after --max-drain-ms), the peer \
announces the stations again and this node stands by. Nothing is lost on the way when the \
APs move within --max-drain-ms.\n\n\
Refused, before anything moves, unless ha.election = \"builtin\", the peer is up and a synced \
backup of the group, and the sync stream is up. Prints the progress, then per group the \
peer's role write, the drain, and what each node forwarded meanwhile (--json for all of it). \
With preempt on a higher-priority node here, the group comes back after its preempt_delay.";

/// `ferry cluster` views and orders.
#[derive(Subcommand)]
pub enum ClusterOp {
    /// Per group: role, the data plane's state, both priorities, preempt,
    /// sync; the peer and each path; refused peer messages.
    Status,
    /// Both nodes: addresses, roles, last seen.
    Members,
    /// Events with timestamps and reasons: peer and paths up/down, role
    /// changes and why, preemption, bulk syncs, refused messages.
    History,
    /// Send a bulk snapshot of this node's stations to the peer and ask
    /// it for one of its own.
    Resync,
    /// With ha.election = "external" only: take ROLE for GROUP (for sites
    /// where keepalived or pacemaker decides; see the README's recipe).
    Role {
        /// The group.
        group: String,
        /// master or backup.
        #[arg(value_enum)]
        role: RoleArg,
    },
}

/// `ferry cluster role` values.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum RoleArg {
    /// Forward the group's tunnels here.
    Master,
    /// Stand by (tunnels installed, traffic dropped and counted).
    Backup,
}

const RUN_HELP: &str = "Run ferry as a daemon (in the foreground; systemd runs it as a service).\n\n\
Loads the XDP programs, attaches them in driver (native) mode to interfaces.ap_side and \
interfaces.client_side (one program, ferry_trunk, when they are the same interface), and pins \
maps and links under PIN_ROOT/<node name>/. Then serves, in one event loop: CAPWAP data \
channel keepalives on the data port of every node address (echoed byte for byte; tunnels \
declared by session_id are bound by their first keepalive), the admin socket (admin.socket, \
mode 0600) and Prometheus metrics (metrics.listen, default 127.0.0.1:9847).\n\n\
HITLESS RESTART: the programs stay attached through their pinned links, so forwarding \
continues with the last tables while ferry is stopped, crashed or upgrading. A new \
`ferry run` adopts the pinned maps and links: it replaces the programs inside their links \
atomically and installs the configuration as a swap, keeping learned stations.\n\n\
SIGNALS\n  SIGHUP   re-read the configuration and apply it as a swap\n  \
SIGTERM  exit; forwarding continues unless --detach-on-exit\n  SIGINT   as SIGTERM\n\n\
LOGS go to stderr (--log-format json for one object per line); RUST_LOG sets the level \
(default info). Nothing is logged per packet.\n\n\
EXAMPLE\n  ferry run --config /etc/ferry/ferry.toml";

const SWAP_HELP: &str = "Replace the whole tunnel table of the running ferry.\n\n\
The table file holds [[tunnel]] entries (and optionally [[station]] entries), with the same \
schema and defaults as the configuration. It is validated as a whole first: any error is \
reported as FILE:LINE:COLUMN: reason and nothing changes. The new table is built in fresh \
maps beside the running one, then one outer map entry per direction is flipped, so every \
packet sees the old table or the new one, never a mix. Tunnel ids stay the same per AP name, \
so stations behind APs that stay are kept; stations behind removed APs (or APs that changed \
VLAN) are flushed and counted.\n\n\
The previous generation stays built: `ferry swap --rollback` flips back to it at once.\n\n\
Prints the time taken, the old and new generation and the APs added and removed (for a \
rollback: the APs it undoes and restores). --dry-run prints that, and the stations that \
would be flushed, without changing anything.\n\n\
A table that removes every tunnel (an empty or comment-only file included), or more than \
admin.max_removal_percent of them (default 50), is refused unless --force.\n\n\
EXAMPLES\n  ferry swap --dry-run /etc/ferry/drill-b.toml\n  ferry swap /etc/ferry/drill-b.toml\n  \
ferry swap --rollback --dry-run\n  ferry swap --rollback";

/// Where to find the running ferry.
#[derive(clap::Args, Clone, Debug)]
pub struct Target {
    /// Admin socket of the running ferry. Default: admin.socket from
    /// --config, else the only socket in /run/ferry.
    #[arg(long, value_name = "PATH", global = true)]
    pub socket: Option<PathBuf>,
    /// Configuration file of the running ferry (to find its socket).
    #[arg(long, short, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `ferry tunnel` operations.
#[derive(Subcommand)]
pub enum TunnelOp {
    /// Add one tunnel (atomic per entry, no full swap).
    #[command(
        long_about = "Add one tunnel to the running table without a full swap. The entry is \
validated like a [[tunnel]] of the configuration (same defaults); the downstream entry is \
written before the upstream key that leads to it.\n\n\
EXAMPLES\n  ferry tunnel add ap9 --address 198.18.1.19\n  \
ferry tunnel add ap10 --session-id 00112233445566778899aabbccddeeff --vlan 201"
    )]
    Add(#[command(flatten)] cli::TunnelArgs),
    /// Remove one tunnel; its learned stations are flushed.
    Remove {
        /// AP name.
        ap: String,
    },
    /// Make a tunnel active: its traffic is forwarded (a no-op if it is).
    Promote {
        /// AP name.
        ap: String,
    },
    /// Make a tunnel standby: installed, traffic not forwarded (a no-op if
    /// it is).
    Demote {
        /// AP name.
        ap: String,
    },
}

/// `--xdp-mode` values.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum XdpModeArg {
    /// Native XDP in the driver (falls back to skb with a loud warning).
    Driver,
    /// Generic XDP (slow; for drivers without native XDP, and labs).
    Skb,
}

/// `--log-format` values.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// `--from` values.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum FromSide {
    /// The AP-side interface (upstream program).
    Ap,
    /// The client-side interface (downstream program).
    Client,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run { .. }) {
        // A report cut short by its reader (`ferry tunnels | head`) ends
        // quietly, as every Unix filter does, instead of a panic in
        // `println!`. Not for `run`: the daemon must see EPIPE on a socket.
        // SAFETY: called before any thread exists; SIG_DFL is always a
        // valid disposition for SIGPIPE.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let r = match cli.command {
        Command::Run {
            config,
            xdp_mode,
            detach_on_exit,
            replace,
            private_bpffs,
            pin_root,
            state_dir,
            log_format,
        } => {
            init_logs(log_format);
            run::run(run::Options {
                config,
                mode: match xdp_mode {
                    XdpModeArg::Driver => AttachMode::Driver,
                    XdpModeArg::Skb => AttachMode::Skb,
                },
                detach_on_exit,
                pin_root,
                state_dir,
                replace,
                private_bpffs,
            })
        }
        Command::Status(t) => cli::status(&t),
        Command::Tunnels(t) => cli::tunnels(&t),
        Command::Stations { target, ap, limit } => cli::stations(&target, ap, limit),
        Command::Counters(t) => cli::counters(&t),
        Command::Swap {
            target,
            table,
            rollback,
            dry_run,
            force,
        } => cli::swap(
            &target,
            table.as_deref(),
            cli::SwapFlags {
                rollback,
                dry_run,
                force,
            },
        ),
        Command::Reload {
            target,
            dry_run,
            force,
        } => cli::reload(&target, dry_run, force),
        Command::Tunnel { target, op } => cli::tunnel(&target, op),
        Command::Cluster { target, op } => cluster(&target, op),
        Command::Failover(a) => failover(a),
        Command::Check {
            config,
            table: None,
            json,
        } => cli::check::check(&config, json),
        Command::Check {
            config,
            table: Some(table),
            json,
        } => cli::check::check_table(&config, &table, json),
        Command::Replay {
            config,
            input,
            output,
            from,
            json,
        } => cli::replay::replay(&config, &input, &output, from, json),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(ce) = e.downcast_ref::<ferry::config::ConfigError>() {
                eprintln!("ferry: {ce}");
                return ExitCode::from(EXIT_INPUT);
            }
            if let Some(r) = e.downcast_ref::<ferry::runtime::Refused>() {
                eprintln!("ferry: {r}");
                return ExitCode::from(EXIT_INPUT);
            }
            if let Some(ferry::api::client::CallError::Refused(r)) = e.downcast_ref() {
                eprintln!("ferry: {r}");
                return ExitCode::from(EXIT_INPUT);
            }
            eprintln!("ferry: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `ferry failover`.
fn failover(a: FailoverArgs) -> anyhow::Result<()> {
    let options = ferry::ha::handover::Options {
        quiet_ms: a.quiet_ms,
        max_drain_ms: a.max_drain_ms,
    };
    cli::failover::run(&a.target, a.group, options)
}

/// `ferry cluster ...`.
fn cluster(target: &Target, op: ClusterOp) -> anyhow::Result<()> {
    match op {
        ClusterOp::Status => cli::cluster::status(target),
        ClusterOp::Members => cli::cluster::members(target),
        ClusterOp::History => cli::cluster::history(target),
        ClusterOp::Resync => cli::cluster::resync(target),
        ClusterOp::Role { group, role } => cli::cluster::set_role(
            target,
            &group,
            match role {
                RoleArg::Master => ferry::ha::election::Role::Master,
                RoleArg::Backup => ferry::ha::election::Role::Backup,
            },
        ),
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => b.init(),
        LogFormat::Json => b.json().flatten_event(true).init(),
    }
}

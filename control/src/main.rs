//! `ferry`: the command-line front end of the ferry data plane.

use std::{
    fs::File,
    io::{BufWriter, IsTerminal as _},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use ferry::config::Config;
use ferry_dataplane::{datapath::Datapath, replay};

mod cli;
use serde_json::json;

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
    },
    /// Add, remove, promote or demote one tunnel without a full swap.
    Tunnel {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        op: TunnelOp,
    },
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
Prints the time taken and the old and new generation.\n\n\
EXAMPLES\n  ferry swap /etc/ferry/drill-b.toml\n  ferry swap --rollback";

/// Where to find the running ferry.
#[derive(clap::Args, Clone, Debug)]
struct Target {
    /// Admin socket of the running ferry. Default: admin.socket from
    /// --config, else the only socket in /run/ferry.
    #[arg(long, value_name = "PATH", global = true)]
    socket: Option<PathBuf>,
    /// Configuration file of the running ferry (to find its socket).
    #[arg(long, short, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

/// `ferry tunnel` operations.
#[derive(Subcommand)]
enum TunnelOp {
    /// Add one tunnel (atomic per entry, no full swap).
    #[command(
        long_about = "Add one tunnel to the running table without a full swap. The entry is \
validated like a [[tunnel]] of the configuration (same defaults); the downstream entry is \
written before the upstream key that leads to it.\n\n\
EXAMPLES\n  ferry tunnel add ap9 --address 198.18.1.19\n  \
ferry tunnel add ap10 --session-id 00112233445566778899aabbccddeeff --vlan 201"
    )]
    Add {
        /// AP name (unique).
        ap: String,
        /// AP address (IPv4 or IPv6).
        #[arg(long, required_unless_present = "session_id")]
        address: Option<String>,
        /// AP source port (default: any port from that address).
        #[arg(long)]
        port: Option<u16>,
        /// Session ID (32 hex digits): bound by the first keepalive carrying it.
        #[arg(long, conflicts_with_all = ["address", "port"])]
        session_id: Option<String>,
        /// master (forwarding) or backup (standby).
        #[arg(long, default_value = "master")]
        role: String,
        /// Client VLAN (default: forwarding.default_vlan).
        #[arg(long)]
        vlan: Option<u16>,
        /// 802.3 or 802.11 (native frames downstream).
        #[arg(long)]
        format: Option<String>,
    },
    /// Remove one tunnel; its learned stations are flushed.
    Remove {
        /// AP name.
        ap: String,
    },
    /// Make a tunnel master: its traffic is forwarded.
    Promote {
        /// AP name.
        ap: String,
    },
    /// Make a tunnel backup: installed, traffic not forwarded (standby).
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
enum FromSide {
    /// The AP-side interface (upstream program).
    Ap,
    /// The client-side interface (downstream program).
    Client,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Run {
            config,
            xdp_mode,
            detach_on_exit,
            replace,
            pin_root,
            state_dir,
            log_format,
        } => {
            init_logs(log_format);
            ferry::daemon::run(ferry::daemon::Options {
                config,
                mode: match xdp_mode {
                    XdpModeArg::Driver => ferry::daemon::AttachMode::Driver,
                    XdpModeArg::Skb => ferry::daemon::AttachMode::Skb,
                },
                detach_on_exit,
                pin_root,
                state_dir,
                replace,
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
        } => cli::swap(&target, table.as_deref(), rollback),
        Command::Tunnel { target, op } => cli::tunnel(&target, op),
        Command::Check { config, json } => check(&config, json),
        Command::Replay {
            config,
            input,
            output,
            from,
            json,
        } => run_replay(&config, &input, &output, from, json),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(ce) = e.downcast_ref::<ferry::config::ConfigError>() {
                eprintln!("ferry: {ce}");
                return ExitCode::from(EXIT_INPUT);
            }
            if e.downcast_ref::<cli::Refused>().is_some() {
                eprintln!("ferry: {e}");
                return ExitCode::from(EXIT_INPUT);
            }
            eprintln!("ferry: {e:#}");
            ExitCode::FAILURE
        }
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

fn check(path: &Path, json: bool) -> Result<()> {
    let c = Config::load(path)?;
    if json {
        let tunnels: Vec<_> = c
            .tunnels
            .iter()
            .map(|t| {
                json!({"ap": t.ap, "address": t.address.map(|a| a.to_string()),
                       "session_id": t.session_id.as_ref().map(ferry::config::format_session_id), "port": t.port,
                       "role": t.role.as_str(), "vlan": t.vlan,
                       "format": if t.native { "802.11" } else { "802.3" },
                       "mtu": t.mtu, "station_limit": t.station_limit})
            })
            .collect();
        let v = json!({
            "node": c.name, "addresses": c.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "data_port": c.data_port, "ap_side": c.ap_side, "client_side": c.client_side,
            "default_vlan": c.default_vlan, "egress": if c.one_arm() { "tx" } else { "redirect" },
            "tunnels": tunnels, "client_vlans": c.client_vlans,
            "static_stations": c.stations.len(), "station_capacity": c.station_capacity,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{}: ok", path.display());
    println!(
        "node {} data port {} addresses {}",
        c.name,
        c.data_port,
        c.addresses
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "ap side {} -> client side {} ({})",
        c.ap_side,
        c.client_side,
        if c.one_arm() {
            "one arm, XDP_TX"
        } else {
            "XDP_REDIRECT"
        }
    );
    println!(
        "{:<20} {:<40} {:>6} {:<7} {:>5} {:<7}",
        "AP", "ADDRESS", "PORT", "ROLE", "VLAN", "FORMAT"
    );
    for t in &c.tunnels {
        let port = t.port.map_or("any".to_string(), |p| p.to_string());
        let format = if t.native { "802.11" } else { "802.3" };
        let address = match (t.address, t.session_id) {
            (Some(a), _) => a.to_string(),
            (None, Some(sid)) => format!("session {}", ferry::config::format_session_id(&sid)),
            (None, None) => "-".into(),
        };
        println!(
            "{:<20} {:<40} {:>6} {:<7} {:>5} {:<7}",
            t.ap,
            address,
            port,
            t.role.as_str(),
            t.vlan,
            format
        );
    }
    println!(
        "{} tunnels, {} static station(s); client VLANs {:?}",
        c.tunnels.len(),
        c.stations.len(),
        c.client_vlans
    );
    Ok(())
}

fn run_replay(
    config: &Path,
    input: &Path,
    output: &Path,
    from: Option<FromSide>,
    json: bool,
) -> Result<()> {
    let c = Config::load(config)?;
    let tables = c.tables();
    let mut dp = Datapath::load()?;
    dp.apply(&tables)?;
    // Loopback (ifindex 1 in every namespace) stands in for both sides.
    dp.set_egress(1)?;
    dp.set_egress_ap(1)?;
    let sides = replay::Classifier::new(
        &tables,
        from.map(|f| match f {
            FromSide::Ap => replay::Side::Ap,
            FromSide::Client => replay::Side::Client,
        }),
    );
    let inf = File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let outf = File::create(output).with_context(|| format!("creating {}", output.display()))?;
    let tty = std::io::stderr().is_terminal();
    let rep = replay::replay(&dp, &sides, inf, BufWriter::new(outf), |n| {
        if tty {
            eprint!("\rreplayed {n} packets...");
        }
    })
    .with_context(|| format!("replaying {}", input.display()))?;
    if tty && rep.packets >= 10_000 {
        eprintln!();
    }
    let mut tunnels = Vec::new();
    // Tunnel ids are positions in the file (Config::tables).
    for (id, tc) in c.tunnels.iter().enumerate() {
        let s = dp.tunnel_stats(id as u32)?;
        if s.rx_packets > 0 || s.down_packets > 0 {
            tunnels.push((tc.ap.clone(), s));
        }
    }
    if json {
        let v = json!({
            "config": config, "input": input, "output": output,
            "packets": rep.packets, "written": rep.written,
            "from_ap": rep.from_ap, "from_client": rep.from_client, "events": rep.events,
            "truncated_in_capture": rep.truncated_in_capture,
            "skipped": rep.skipped, "verdicts": rep.verdicts, "reasons": rep.reasons,
            "tunnels": tunnels.iter().map(|(ap, s)| json!({
                "ap": ap, "rx_packets": s.rx_packets, "rx_bytes": s.rx_bytes,
                "up_packets": s.up_packets, "up_bytes": s.up_bytes,
                "down_packets": s.down_packets, "down_bytes": s.down_bytes})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "replayed {} packets from {} ({} AP side, {} client side) through the XDP programs; wrote {} frames to {}",
        rep.packets,
        input.display(),
        rep.from_ap,
        rep.from_client,
        rep.written,
        output.display()
    );
    if rep.truncated_in_capture > 0 {
        println!(
            "note: {} frames were truncated by the capture and ran as captured",
            rep.truncated_in_capture
        );
    }
    if rep.skipped.too_short + rep.skipped.rejected > 0 {
        println!(
            "skipped: {} shorter than an Ethernet header, {} rejected by the kernel{}",
            rep.skipped.too_short,
            rep.skipped.rejected,
            rep.skipped
                .first_error
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        );
    }
    println!("\nverdicts:");
    for (v, n) in &rep.verdicts {
        println!("  {v:<10} {n:>10}");
    }
    println!("\nreasons:");
    for r in ferry_ebpf::abi::Reason::ALL {
        if let Some(n) = rep.reasons.get(r.name()) {
            println!("  {:<24} {n:>10}", r.name());
        }
    }
    if !tunnels.is_empty() {
        println!(
            "\n{:<20} {:>10} {:>12} {:>10} {:>12} {:>10} {:>12}",
            "tunnel", "rx pkts", "rx bytes", "up pkts", "up bytes", "down pkts", "down bytes"
        );
        for (ap, s) in &tunnels {
            println!(
                "{ap:<20} {:>10} {:>12} {:>10} {:>12} {:>10} {:>12}",
                s.rx_packets, s.rx_bytes, s.up_packets, s.up_bytes, s.down_packets, s.down_bytes
            );
        }
    }
    if !rep.events.is_empty() {
        println!("\nstation learning:");
        for (e, n) in &rep.events {
            println!("  {e:<24} {n:>10}");
        }
    }
    Ok(())
}

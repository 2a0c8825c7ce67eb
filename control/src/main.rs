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
            eprintln!("ferry: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &Path, json: bool) -> Result<()> {
    let c = Config::load(path)?;
    if json {
        let tunnels: Vec<_> = c
            .tunnels
            .iter()
            .map(|t| {
                json!({"ap": t.ap, "address": t.address.to_string(), "port": t.port,
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
        println!(
            "{:<20} {:<40} {:>6} {:<7} {:>5} {:<7}",
            t.ap,
            t.address,
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
    for (t, tc) in tables.tunnels.iter().zip(&c.tunnels) {
        let s = dp.tunnel_stats(t.info.id)?;
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

//! `ferry-bench`: traffic generator and micro-benchmark.

// See lib.rs: the scenarios are reshaped by the live-benchmark issue.
#![allow(clippy::too_many_lines)]

mod args;

use std::{fs::File, io::BufWriter, path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result};
use args::{GenLiveArgs, LiveArgs};
use clap::{Parser, Subcommand};
use ferry::config::Config;
use ferry_bench::{
    all, control,
    failover::{self, Phase},
    live, micro, rebind, traffic,
};

#[derive(Parser)]
#[command(
    name = "ferry-bench",
    version,
    about = "ferry's traffic generator and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write CAPWAP traffic for a configuration's tunnels to a pcap file,
    /// or (--live) send it out of an interface.
    #[command(
        long_about = "Write deterministic CAPWAP traffic for the tunnels of a ferry configuration \
to a pcap file: 802.3 and 802.11 client frames from each AP, keepalives, control-plane and \
non-CAPWAP frames, data from unknown sources and malformed headers.\n\n\
With --live, send instead: the live benchmark's generator (BPF_PROG_TEST_RUN in live-frames \
mode, one pinned thread per core and TX queue) sends CAPWAP data from APS APs (198.19.0.1, \
198.19.0.2, ..., port 12222, to 198.18.0.1:5247) carrying STATIONS stations, or (--direction \
down) client-VLAN 200 frames to those stations, out of IFACE for SECS seconds, at RATE frames \
a second or as fast as it can; every frame is rewritten on every run and carries a sequence \
and timestamp trailer. --write-config writes the matching ferry configuration. Prints the \
rate each second and a summary. Needs root.\n\n\
EXAMPLE\n  ferry-bench gen --config deploy/examples/ferry.toml --out deploy/examples/sample.pcap --packets 200\n  \
ferry-bench gen --live --netns lab-ap --iface veth0 --aps 256 --stations 4096 --size imix --secs 30\n  \
ferry-bench gen --live --iface ens1f0 --direction down --rate 1000000 --json"
    )]
    Gen {
        /// Configuration whose node and tunnels the traffic is for.
        #[arg(long, short, value_name = "FILE", required_unless_present = "live")]
        config: Option<PathBuf>,
        /// Output pcap.
        #[arg(long, value_name = "OUT.pcap", required_unless_present = "live")]
        out: Option<PathBuf>,
        /// Number of frames (pcap).
        #[arg(long, default_value_t = 1000)]
        packets: u64,
        /// RNG seed (same seed, same file).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[command(flatten)]
        live: GenLiveArgs,
    },
    /// ns/packet of the XDP program under BPF_PROG_TEST_RUN, with baselines.
    #[command(
        long_about = "Measure ns per packet of ferry's upstream XDP program under \
BPF_PROG_TEST_RUN for 802.3 decapsulation, 802.11 decapsulation, unknown-tunnel drop and \
non-CAPWAP pass, next to an XDP_DROP and a MAC-swap XDP_TX baseline from the same eBPF object, \
all in one run; prints each cost and its ratio to XDP_DROP, and the 802.3 cost with a large \
tunnel table over the cost with one tunnel. Needs root.\n\n\
EXAMPLE\n  ferry-bench micro --packets 1000000"
    )]
    Micro {
        /// Single runs per case (and repeats for the baselines).
        #[arg(long, default_value_t = 1_000_000)]
        packets: u64,
        /// Interleaved rounds; figures are medians over rounds.
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        /// Tunnels in the large table.
        #[arg(long, default_value_t = 25_600)]
        tunnels: u32,
        /// Stations in the large station table.
        #[arg(long, default_value_t = 1_000_000)]
        stations: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Swap, promote and memory figures of a real `ferry run` at full size.
    #[command(
        long_about = "Start a real `ferry run` in a network namespace with TUNNELS tunnels, fill \
its live station table with STATIONS stations, and measure through the admin socket: \
whole-table swap time (small table vs full table with the stations present, side by side), \
a swap removing 1% of the APs with its station flush, single-tunnel promote/demote, and \
the control process's resident memory. Needs root.\n\n\
EXAMPLE\n  ferry-bench control --tunnels 25600 --stations 1000000"
    )]
    Control {
        /// The ferry binary (default: next to ferry-bench).
        #[arg(long, value_name = "PATH")]
        ferry: Option<PathBuf>,
        /// Tunnels in the full table.
        #[arg(long, default_value_t = 25_600)]
        tunnels: u32,
        /// Stations present during the full-table swaps.
        #[arg(long, default_value_t = 1_000_000)]
        stations: u32,
        /// Swaps per case.
        #[arg(long, default_value_t = 10)]
        swaps: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Flapping session keepalives vs other APs' echoes and `ferry status`.
    #[command(
        long_about = "Start a real `ferry run` with TUNNELS address-declared tunnels, a probe AP \
and FLAPPERS session tunnels, then alternate quiet and flapping phases: while flapping, each \
session tunnel's keepalives alternate between two source ports (a NAT re-mapping), so with \
--rebind-interval 0 every one of them moves the binding. Measured side by side: the echo round \
trip of another AP's keepalives and the latency of `ferry status`, p50/p99/max, quiet vs \
flapping, and the bindings made. Needs root.\n\n\
EXAMPLE\n  ferry-bench rebind --tunnels 25600 --flappers 400 --rebind-interval 0"
    )]
    Rebind {
        /// The ferry binary (default: next to ferry-bench).
        #[arg(long, value_name = "PATH")]
        ferry: Option<PathBuf>,
        /// Address-declared tunnels in the table.
        #[arg(long, default_value_t = 25_600)]
        tunnels: u32,
        /// Session tunnels whose keepalives flap.
        #[arg(long, default_value_t = 400)]
        flappers: u32,
        /// The node's keepalive.rebind_interval, seconds (0: every flap rebinds).
        #[arg(long, default_value_t = 0)]
        rebind_interval: u32,
        /// Flapping keepalives per second, all flappers together.
        #[arg(long, default_value_t = 4_000)]
        flap_rate: u32,
        /// Quiet/flapping round pairs.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Seconds per phase.
        #[arg(long, default_value_t = 6)]
        phase_secs: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Frames per second and latency through veth: ferry vs a plain XDP
    /// redirect vs a user-space forwarder.
    #[command(
        long_about = "Measure throughput and latency through real interfaces: a namespace lab \
(AP side, one AC namespace per contender, client side) on multi-queue veth with native XDP, \
a generator running in BPF_PROG_TEST_RUN live-frames mode from pinned threads, and a checking \
sink. Contenders, in alternating rounds of the same run: ferry (`ferry run`), a plain DEVMAP \
redirect, and a capwap-dp-style user-space forwarder (recvmmsg/sendmmsg, SO_REUSEPORT, \
AF_PACKET). Workloads: upstream and downstream, 64-byte and IMIX client frames, a 1-tunnel \
table and a TUNNELS-tunnel/STATIONS-station table. Also latency at fixed fractions of each \
contender's maximum (p50/p99/p99.9/max) and 1 core vs all cores. Every frame that arrives is \
checked against what its contender must produce (ferry's: its reference model's output), and \
ferry's own counters against the sink's count. Prints rates, ratios and targets. Needs root.\n\n\
EXAMPLE\n  ferry-bench live\n  ferry-bench live --tunnels 0 --rounds 1 --contenders ferry,redirect --json"
    )]
    Live(LiveArgs),
    /// Every benchmark, appended to bench/RESULTS.md.
    #[command(
        long_about = "Run every benchmark, each as its own ferry-bench command: micro \
(BPF_PROG_TEST_RUN per-packet cost), control (swaps, memory), live (throughput, latency, \
scaling) and failover (the HA pair), with progress on stderr; then append one dated section \
to bench/RESULTS.md with the machine, the commit, and each command with its output, so every \
figure there is reproduced by the command printed beside it. Needs root; about 20 minutes.\n\n\
EXAMPLE\n  ferry-bench all\n  ferry-bench all --only live --results /tmp/results.md"
    )]
    All {
        /// Run only these (default: micro, control, live, failover).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// The results file to append to (default: bench/RESULTS.md of this checkout).
        #[arg(long, value_name = "FILE")]
        results: Option<PathBuf>,
    },
    /// The HA pair: takeovers, planned failovers, keepalived, load.
    #[command(
        long_about = "Run the HA pair's benchmark on the two-node namespace lab of the HA tests \
(two `ferry run` nodes, a dual-link AP sending 500 frames a second each way, a client side, a \
core bridge), default timers:\n\n\
  unplanned   RUNS x kill -9 of the master: takeover (SIGKILL to the backup's group active in \
its data plane), decision to flip, frames lost per direction\n\
  planned     RUNS x `ferry failover` under traffic: its phases and frames lost\n\
  keepalived  RUNS x kill -9 of keepalived's master (VRRPv3, same advert interval, same \
namespaces): the comparator for takeover\n\
  load        heartbeat gaps on the peer path (captured at each receiver) and any false \
failover while TUNNELS-tunnel tables are swapped on the master and STATIONS learned stations \
are streamed and bulk-synced to the backup, with the time each takes\n\n\
Prints each figure as min / median / p95 / max and the issue's targets. Needs root; the \
keepalived phase needs keepalived (deploy/bootstrap.sh installs it). About 5 minutes with \
the defaults.\n\n\
EXAMPLE\n  ferry-bench failover\n  ferry-bench failover --phases load --stations 1000000 --json"
    )]
    Failover {
        /// The ferry binary (default: next to ferry-bench).
        #[arg(long, value_name = "PATH")]
        ferry: Option<PathBuf>,
        /// Which parts to run, in this order.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "unplanned,planned,keepalived,load"
        )]
        phases: Vec<Phase>,
        /// Runs of each takeover kind.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Tunnels in the swapped table.
        #[arg(long, default_value_t = 25_600)]
        tunnels: u32,
        /// Learned stations streamed and bulk-synced.
        #[arg(long, default_value_t = 1_000_000)]
        stations: u32,
        /// Whole-table swaps.
        #[arg(long, default_value_t = 6)]
        swaps: u32,
        /// Forced bulks.
        #[arg(long, default_value_t = 3)]
        bulks: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The ferry binary: `given`, else the one next to ferry-bench.
fn ferry_binary(given: Option<PathBuf>) -> Result<PathBuf> {
    match given {
        Some(f) => Ok(f),
        None => std::env::current_exe()?
            .parent()
            .map(|d| d.join("ferry"))
            .context("locating the ferry binary"),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Failover {
            ferry,
            phases,
            runs,
            tunnels,
            stations,
            swaps,
            bulks,
            json,
        } => {
            let ferry = ferry_binary(ferry)?;
            // SAFETY: no other thread runs yet. The lab shared with the
            // tests finds the ferry binary through this variable.
            unsafe { std::env::set_var("FERRY_BIN", &ferry) };
            let o = failover::Options {
                phases,
                runs: runs.max(1),
                tunnels,
                stations: stations.max(1),
                swaps,
                bulks,
            };
            let r = failover::run(&o, |l| eprintln!("{l}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                failover::print(&r);
            }
            Ok(())
        }
        Command::Control {
            ferry,
            tunnels,
            stations,
            swaps,
            json,
        } => {
            let ferry = ferry_binary(ferry)?;
            let r = control::run(&ferry, tunnels, stations, swaps.max(1), |l| {
                eprintln!("{l}")
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(());
            }
            println!(
                "ferry run, {} tunnels, {} stations; medians of {} swaps per case",
                r.tunnels, r.stations, swaps
            );
            println!(
                "swap 1,024-tunnel table, no stations:     {:>9.3} ms",
                r.small_swap_us as f64 / 1e3
            );
            println!(
                "swap full table, stations present:        {:>9.3} ms (build {:.3}, flip {:.3}; max {:.3}; `ferry swap` wall {:.3})",
                r.full_swap_us as f64 / 1e3,
                r.full_build_us as f64 / 1e3,
                r.full_flip_us as f64 / 1e3,
                r.full_swap_max_us as f64 / 1e3,
                r.full_swap_cli_ms
            );
            println!(
                "full / small:                              {:>9.3}",
                r.full_over_small
            );
            println!(
                "swap removing 1% of APs:                   {:>9.3} ms; then {} stations flushed in {:.3} ms",
                r.removal_swap_us as f64 / 1e3,
                r.removal_flushed,
                r.removal_flush_us as f64 / 1e3
            );
            println!(
                "single-tunnel promote/demote:              {:>9.3} ms (admin round trip {:.3})",
                r.promote_us as f64 / 1e3,
                r.promote_cli_ms
            );
            println!(
                "ferry run resident memory:                 {:>9} KiB (peak {} KiB)",
                r.rss_kib, r.rss_peak_kib
            );
            for (phase, kib) in &r.rss_by_phase {
                println!("  resident after {phase:<16} {kib:>9} KiB");
            }
            for (t, ok) in &r.targets {
                println!("target {t}: {}", if *ok { "met" } else { "MISSED" });
            }
            Ok(())
        }
        Command::All { only, results } => {
            let steps: Vec<all::Step> = all::default_steps()
                .into_iter()
                .filter(|s| only.is_empty() || only.iter().any(|o| o == s.name))
                .collect();
            if steps.is_empty() {
                anyhow::bail!("--only names none of micro, control, live, failover");
            }
            let me = std::env::current_exe()?;
            let results = results.unwrap_or_else(all::default_results);
            all::run(&me, &steps, &results, &|l| eprintln!("{l}"))
        }
        Command::Live(a) => {
            let r = live::run(&a.options()?, &|l| eprintln!("{l}"))?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", r.text());
            }
            Ok(())
        }
        Command::Rebind {
            ferry,
            tunnels,
            flappers,
            rebind_interval,
            flap_rate,
            rounds,
            phase_secs,
            json,
        } => {
            let o = rebind::Options {
                tunnels,
                flappers,
                rebind_interval,
                flap_rate,
                rounds: rounds.max(1),
                phase_secs: phase_secs.max(1),
            };
            let r = rebind::run(&ferry_binary(ferry)?, &o, |l| eprintln!("{l}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(());
            }
            println!(
                "ferry run, {} tunnels ({} flapping session tunnels, rebind_interval {} s); {} rounds of {} s per phase",
                r.tunnels, r.flappers, r.rebind_interval, rounds, phase_secs
            );
            println!(
                "{:<34} {:>10} {:>10} {:>10} {:>6} {:>8}",
                "", "p50 ms", "p99 ms", "max ms", "lost", "samples"
            );
            for (name, l) in [
                ("other AP's echo, quiet", &r.quiet.echo),
                ("other AP's echo, flapping", &r.flapping.echo),
                ("ferry status, quiet", &r.quiet.status),
                ("ferry status, flapping", &r.flapping.status),
            ] {
                println!(
                    "{name:<34} {:>10.3} {:>10.3} {:>10.3} {:>6} {:>8}",
                    l.p50_us as f64 / 1e3,
                    l.p99_us as f64 / 1e3,
                    l.max_us as f64 / 1e3,
                    l.lost,
                    l.n
                );
            }
            println!(
                "flapping: {} keepalives sent, {} bindings made ({:.0}/s), {} damped",
                r.flapping.flaps_sent,
                r.flapping.binds,
                r.flapping.binds as f64 / r.flapping.secs.max(1e-9),
                r.flapping.damped
            );
            for (t, ok) in &r.targets {
                println!("target {t}: {}", if *ok { "met" } else { "MISSED" });
            }
            Ok(())
        }
        Command::Gen { live: a, .. } if a.live => {
            let r = live::generator::run(&a.options()?, &|l| eprintln!("{l}"))?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "sent {} frames ({} bytes) out of {} in {} in {:.2} s: {:.0} pps, {:.3} Gbit/s",
                    r.frames, r.bytes, r.iface, r.netns, r.secs, r.pps, r.gbps
                );
            }
            Ok(())
        }
        Command::Gen {
            config: Some(config),
            out: Some(out),
            packets,
            seed,
            ..
        } => {
            let cfg = Config::load(&config)?;
            let mut g = traffic::Generator::new(cfg, traffic::Mix::default(), seed)?;
            let f = File::create(&out).with_context(|| format!("creating {}", out.display()))?;
            traffic::write_pcap(&mut g, packets, BufWriter::new(f))?;
            eprintln!("wrote {packets} frames to {}", out.display());
            Ok(())
        }
        Command::Gen { .. } => anyhow::bail!("gen needs --config and --out, or --live"),
        Command::Micro {
            packets,
            rounds,
            tunnels,
            stations,
            json,
        } => {
            let rep = micro::run(packets, rounds, tunnels.max(1), stations.max(1), |l| {
                eprintln!("{l}")
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rep)?);
                return Ok(());
            }
            println!(
                "BPF_PROG_TEST_RUN, {} packets per case in {} interleaved rounds",
                rep.packets_per_case, rep.rounds
            );
            println!(
                "{:<28} {:>9} {:>10} {:>12}",
                "case", "ns/pkt", "x XDP_DROP", "repeat ns"
            );
            for c in &rep.cases {
                let r = c.repeat_ns.map_or("-".to_string(), |v| format!("{v:.2}"));
                println!("{:<28} {:>9.2} {:>10.2} {:>12}", c.name, c.ns, c.x_drop, r);
            }
            println!(
                "802.3 decap, {} tunnels / 1,024 tunnels (same rotation): {:.3}",
                rep.many_tunnels, rep.scale_ratio
            );
            println!(
                "802.3 decap, {} tunnels rotating / 1 hot tunnel: {:.3}",
                rep.many_tunnels, rep.scale_hot_ratio
            );
            println!(
                "802.3 encap, {} stations / 1,024 stations (same rotation): {:.3}",
                rep.many_stations, rep.station_scale_ratio
            );
            println!(
                "802.3 encap, {} stations rotating / 1 hot station: {:.3}",
                rep.many_stations, rep.station_hot_ratio
            );
            println!(
                "802.3 decap, {} port-declared tunnels, exact port first / marker first: {:.3}",
                rep.many_tunnels, rep.port_lookup_ratio
            );
            for (t, ok) in &rep.targets {
                println!("target {t}: {}", if *ok { "met" } else { "MISSED" });
            }
            Ok(())
        }
    }
}

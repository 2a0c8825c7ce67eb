//! Option structs of the larger subcommands (`live`, `gen --live`), apart
//! from the dispatch in main.rs.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use ferry_bench::live::{
    self, Sizes,
    contenders::{Scale, ferry_config},
    frames::{Direction, Payload},
    generator::GenOptions,
};

use crate::ferry_binary;

/// `ferry-bench live`'s options (shared with `all`).
#[derive(clap::Args, Clone, Debug)]
pub struct LiveArgs {
    /// The ferry binary (default: next to ferry-bench).
    #[arg(long, value_name = "PATH")]
    ferry: Option<PathBuf>,
    /// Queues per veth and sender threads, one per core (any number;
    /// default: every core).
    #[arg(long)]
    queues: Option<u32>,
    /// Seconds per round.
    #[arg(long, default_value_t = 2.0)]
    secs: f64,
    /// Rounds per contender and workload (alternating).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Contenders.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "ferry,redirect,userspace"
    )]
    contenders: Vec<live::contenders::Contender>,
    /// Tunnels in the large table (0: skip it).
    #[arg(long, default_value_t = 25_600)]
    tunnels: u32,
    /// Stations in the large table.
    #[arg(long, default_value_t = 1_000_000)]
    stations: u32,
    /// Upstream payload.
    #[arg(long, value_enum, default_value = "802.3")]
    payload: live::frames::Payload,
    /// Client frame size of the fixed-size workload (IMIX is always run too).
    #[arg(long, default_value_t = 64)]
    size: u16,
    /// Frames per kernel batch at full rate (1-256).
    #[arg(long, default_value_t = 64)]
    batch: u32,
    /// Frames per kernel batch when paced for latency (1-256).
    #[arg(long, default_value_t = 8)]
    latency_batch: u32,
    /// Offered loads for latency, as fractions of each contender's maximum.
    #[arg(long, value_delimiter = ',', default_value = "0.1,0.5,0.9")]
    loads: Vec<f64>,
    /// Skip the latency runs.
    #[arg(long)]
    no_latency: bool,
    /// Send frames without rewriting their headers on every run, to see
    /// what recycled live-mode pages do to such a generator (the sink
    /// counts the wrong frames).
    #[arg(long, hide = true)]
    no_rewrite: bool,
    /// Skip the 1-core vs all-cores comparison.
    #[arg(long)]
    no_scaling: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

impl LiveArgs {
    pub fn options(&self) -> Result<live::Options> {
        let cores = core_affinity::get_core_ids().map_or(1, |c| c.len() as u32);
        Ok(live::Options {
            ferry: ferry_binary(self.ferry.clone())?,
            queues: self.queues.unwrap_or(cores).max(1),
            secs: self.secs.max(0.1),
            rounds: self.rounds.max(1),
            contenders: self.contenders.clone(),
            large: (self.tunnels > 0).then_some(live::contenders::Scale {
                aps: self.tunnels,
                stations: self.stations,
            }),
            payload: self.payload,
            size: self.size,
            batch: self.batch,
            latency_batch: self.latency_batch,
            loads: if self.no_latency {
                Vec::new()
            } else {
                self.loads.clone()
            },
            scaling: !self.no_scaling,
            rewrite: !self.no_rewrite,
        })
    }
}

/// `ferry-bench gen --live`'s options.
#[derive(clap::Args, Clone, Debug)]
pub struct GenLiveArgs {
    /// Send live frames out of an interface instead of writing a pcap.
    #[arg(long, requires = "iface", conflicts_with_all = ["config", "out"])]
    pub live: bool,
    /// Interface the frames leave by (with --live).
    #[arg(long, value_name = "IFACE", requires = "live")]
    iface: Option<String>,
    /// Named network namespace of the interface (default: this one).
    #[arg(long, value_name = "NAME", requires = "live")]
    netns: Option<String>,
    /// Upstream (CAPWAP from APs) or downstream (client-VLAN frames).
    #[arg(long, value_enum, default_value = "up", requires = "live")]
    direction: Direction,
    /// Upstream payload.
    #[arg(long, value_enum, default_value = "802.3", requires = "live")]
    payload: Payload,
    /// Client frame bytes (without FCS), or imix (64/576/1500 at 7:4:1).
    #[arg(long, default_value = "64", requires = "live")]
    size: String,
    /// APs (tunnels): 198.19.0.1, 198.19.0.2, ... port 12222.
    #[arg(long, default_value_t = 256, requires = "live")]
    aps: u32,
    /// Stations (02:5b:00:00:00:00 upwards), spread over the APs.
    #[arg(long, default_value_t = 4096, requires = "live")]
    stations: u32,
    /// Frames per second over all threads (default: as fast as possible).
    #[arg(long, requires = "live")]
    rate: Option<f64>,
    /// Seconds to send.
    #[arg(long, default_value_t = 10.0, requires = "live")]
    secs: f64,
    /// Sender threads, one per core and TX queue (default: every core).
    #[arg(long, requires = "live")]
    threads: Option<u32>,
    /// Frames per kernel batch (1-256).
    #[arg(long, default_value_t = 64, requires = "live")]
    batch: u32,
    /// Destination MAC of upstream frames: the AC's AP-side MAC
    /// (default 02:ac:00:00:00:01, the lab's).
    #[arg(long, value_name = "MAC", requires = "live")]
    dst_mac: Option<String>,
    /// Also write the ferry configuration whose tunnels match the APs.
    #[arg(long, value_name = "FILE", requires = "live")]
    write_config: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long, requires = "live")]
    pub json: bool,
}

impl GenLiveArgs {
    /// The generator's options; writes `--write-config` first.
    pub fn options(&self) -> Result<GenOptions> {
        let Some(iface) = self.iface.clone() else {
            bail!("--live needs --iface");
        };
        let sizes = match self.size.as_str() {
            "imix" => Sizes::Imix,
            n => Sizes::Fixed(
                n.parse()
                    .with_context(|| format!("--size {n}: a number of bytes or imix"))?,
            ),
        };
        let dst_mac = match &self.dst_mac {
            Some(m) => Some(
                ferry_dataplane::tables::parse_mac(m)
                    .with_context(|| format!("--dst-mac {m}: not a MAC address"))?,
            ),
            None => None,
        };
        if let Some(path) = &self.write_config {
            let dir = path.parent().unwrap_or(std::path::Path::new("."));
            let scale = Scale {
                aps: self.aps,
                stations: self.stations,
            };
            std::fs::write(path, ferry_config(dir, "ac1", scale, self.stations))
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {} ({} tunnels)", path.display(), self.aps);
        }
        let cores = core_affinity::get_core_ids().map_or(1, |c| c.len() as u32);
        Ok(GenOptions {
            netns: self.netns.clone(),
            iface,
            direction: self.direction,
            payload: self.payload,
            sizes,
            aps: self.aps,
            stations: self.stations,
            rate: self.rate,
            secs: self.secs,
            threads: self.threads.unwrap_or(cores),
            batch: self.batch,
            dst_mac,
        })
    }
}

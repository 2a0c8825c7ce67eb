//! Typed views: what the daemon answers and the CLI prints, one struct per
//! answer, shared by both sides and serialized with serde. Field names are
//! the admin protocol's (see README, Admin API).

use serde::{Deserialize, Serialize};

/// Kinds of table change (one enum for the daemon, the CLI, logs and
/// metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    /// A whole-table swap from a table file.
    #[serde(rename = "swap")]
    Swap,
    /// The configuration file re-read and applied as a swap (SIGHUP,
    /// `ferry reload`).
    #[serde(rename = "reload")]
    Reload,
    /// A flip back to the previous generation.
    #[serde(rename = "rollback")]
    Rollback,
    /// The table installed as a swap over a running data plane at start.
    #[serde(rename = "restart")]
    Restart,
    /// `ferry tunnel add`.
    #[serde(rename = "tunnel add")]
    TunnelAdd,
    /// `ferry tunnel remove`.
    #[serde(rename = "tunnel remove")]
    TunnelRemove,
    /// `ferry tunnel promote` (to active).
    #[serde(rename = "tunnel promote")]
    Promote,
    /// `ferry tunnel demote` (to standby).
    #[serde(rename = "tunnel demote")]
    Demote,
    /// A session tunnel bound (or rebound) by its keepalive.
    #[serde(rename = "bind")]
    Bind,
}

impl ChangeKind {
    /// The spelling in the API, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Swap => "swap",
            ChangeKind::Reload => "reload",
            ChangeKind::Rollback => "rollback",
            ChangeKind::Restart => "restart",
            ChangeKind::TunnelAdd => "tunnel add",
            ChangeKind::TunnelRemove => "tunnel remove",
            ChangeKind::Promote => "tunnel promote",
            ChangeKind::Demote => "tunnel demote",
            ChangeKind::Bind => "bind",
        }
    }

    /// Whether this kind replaces the whole table (a flip of generations),
    /// as opposed to editing entries in place.
    pub fn is_whole_table(self) -> bool {
        matches!(
            self,
            ChangeKind::Swap | ChangeKind::Reload | ChangeKind::Rollback | ChangeKind::Restart
        )
    }
}

impl std::fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a table change did, for the CLI, the logs and the metrics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Change {
    /// What kind of change.
    pub kind: ChangeKind,
    /// The tunnel a single-tunnel change was about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ap: Option<String>,
    /// Table generation before.
    pub old_generation: u64,
    /// Table generation now live.
    pub new_generation: u64,
    /// Tunnels in the new table.
    pub tunnels: usize,
    /// Tunnels added (by AP name).
    pub added: usize,
    /// Tunnels removed.
    pub removed: usize,
    /// Time to read and validate the table file, in microseconds.
    pub validate_us: u64,
    /// Time to build the new inner maps, in microseconds.
    pub build_us: u64,
    /// Time of the flip itself (outer map updates), in microseconds.
    pub flip_us: u64,
    /// Time from request (validation included) to new table live, in
    /// microseconds.
    pub total_us: u64,
    /// Stations deleted because their tunnel went away or changed VLAN.
    pub stations_flushed: u64,
    /// Time the station flush took (after the flip), in microseconds.
    pub flush_us: u64,
    /// The APs added, by name (a rollback: the APs it restored).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added_aps: Vec<String>,
    /// The APs removed, by name (a rollback: the APs it undid).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_aps: Vec<String>,
}

/// What a swap or rollback would do, computed without doing it
/// (`--dry-run`): nothing is written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Plan {
    /// The change it previews.
    pub kind: ChangeKind,
    /// The generation live now.
    pub generation: u64,
    /// The generation a rollback would return to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_generation: Option<u64>,
    /// Tunnels in the table after it.
    pub tunnels: usize,
    /// APs it would add.
    pub added: Vec<String>,
    /// APs it would remove.
    pub removed: Vec<String>,
    /// APs it keeps with other settings.
    pub changed: Vec<String>,
    /// Stations it would flush (their AP goes, or changes VLAN), counted
    /// in the live station table now.
    pub stations_to_flush: u64,
}

/// A change that changed nothing (a retried promote or demote).
impl Change {
    /// `kind` on `ap` found the table as asked already: generation
    /// `generation` stays live.
    pub fn unchanged(kind: ChangeKind, ap: &str, generation: u64, tunnels: usize) -> Self {
        Self {
            kind,
            ap: Some(ap.to_string()),
            old_generation: generation,
            new_generation: generation,
            tunnels,
            added: 0,
            removed: 0,
            validate_us: 0,
            build_us: 0,
            flip_us: 0,
            total_us: 0,
            stations_flushed: 0,
            flush_us: 0,
            added_aps: Vec::new(),
            removed_aps: Vec::new(),
        }
    }
}

/// One attached program.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Attachment {
    /// Interface name.
    pub iface: String,
    /// Program name.
    pub program: String,
    /// "driver", "skb" or "skb (fallback)".
    pub mode: String,
    /// Whether the BPF link was kept from a previous run.
    pub adopted_link: bool,
    /// "attached", "interface missing" or "detached", as the kernel
    /// reports it (checked once a second).
    #[serde(default)]
    pub state: String,
    /// Why attaching again failed (state "detached").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The interface index the program is attached to.
    #[serde(default)]
    pub ifindex: u32,
    /// Times attached again after the kernel lost the attachment.
    #[serde(default)]
    pub reattached: u64,
    /// Times its deleted link pin was pinned again (map pins are pinned
    /// again too, and logged).
    #[serde(default)]
    pub repinned: u64,
}

/// Keepalive outcomes since start.
#[derive(Default, Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeepaliveCounts {
    /// Echoed.
    pub answered: u64,
    /// From a Session ID or address no tunnel declares.
    pub unknown: u64,
    /// Unknown ones not answered (rate limit).
    pub refused: u64,
    /// Not a keepalive at all.
    pub malformed: u64,
    /// Session tunnels bound or rebound.
    pub bindings: u64,
    /// From another peer than a session's binding within the rebind
    /// interval: not answered, binding kept.
    #[serde(default)]
    pub damped: u64,
    /// Not answered: an interface had no ferry program (so the APs fail
    /// over instead of sending into a black hole).
    #[serde(default)]
    pub no_dataplane: u64,
    /// Longer than the receive buffer: counted and not answered (a
    /// keepalive is a few dozen bytes).
    #[serde(default)]
    pub oversized: u64,
    /// Not answered: the tunnel's HA group is being handed to the peer
    /// (`ferry failover`), so its APs move their data to the new master.
    #[serde(default)]
    pub handing_over: u64,
    /// Dropped by the kernel before ferry read them (socket receive
    /// queue full, SO_RXQ_OVFL).
    #[serde(default)]
    pub kernel_drops: u64,
}

/// The last reload (SIGHUP or `ferry reload`), failed ones included.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReloadOutcome {
    /// When it ran (seconds since the Unix epoch).
    pub at_unix_s: u64,
    /// Whether the file's table went live.
    pub ok: bool,
    /// The generation it installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Why it was refused or failed (nothing was changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ReloadOutcome {
    /// The outcome of a reload that returned `r`, now.
    pub fn of(r: &anyhow::Result<Change>) -> Self {
        let at_unix_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match r {
            Ok(c) => Self {
                at_unix_s,
                ok: true,
                generation: Some(c.new_generation),
                error: None,
            },
            Err(e) => Self {
                at_unix_s,
                ok: false,
                generation: None,
                error: Some(format!("{e:#}")),
            },
        }
    }
}

/// Admin and metrics connections since start (see `runtime::conn`).
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Connections {
    /// The admin socket.
    pub admin: crate::runtime::conn::ConnCounts,
    /// The metrics listener.
    pub metrics: crate::runtime::conn::ConnCounts,
}

/// `ferry status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// Node name.
    pub node: String,
    /// ferry version.
    pub version: String,
    /// Process id of `ferry run`.
    pub pid: u32,
    /// Seconds since start.
    pub uptime_s: u64,
    /// Configuration file.
    pub config: std::path::PathBuf,
    /// Pin directory.
    pub pin_dir: std::path::PathBuf,
    /// Whether a running data plane was adopted at start.
    pub adopted: bool,
    /// Programs attached.
    pub attached: Vec<Attachment>,
    /// Live table generation.
    pub generation: u64,
    /// Generation a rollback returns to.
    pub rollback_generation: Option<u64>,
    /// Tunnel counts.
    pub tunnels: TunnelCounts,
    /// VLANs served downstream.
    pub client_vlans: Vec<u16>,
    /// Station counts.
    pub stations: StationCounts,
    /// Whole-table swaps since start.
    pub swaps: u64,
    /// Stations flushed since start.
    pub stations_flushed: u64,
    /// The last table change.
    pub last_change: Option<Change>,
    /// Keepalives.
    pub keepalive: KeepaliveStatus,
    /// Admin and metrics connections.
    #[serde(default)]
    pub connections: Connections,
    /// The last reload since start.
    #[serde(default)]
    pub last_reload: Option<ReloadOutcome>,
}

/// Tunnels by state.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct TunnelCounts {
    /// All tunnels.
    pub total: usize,
    /// Forwarding.
    pub active: usize,
    /// Installed in standby.
    pub standby: usize,
    /// Session tunnels without a keepalive yet (no entry).
    pub unbound: usize,
}

/// Stations by kind.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct StationCounts {
    /// Learned (counted against tunnel limits).
    pub learned: u64,
    /// Configured.
    #[serde(rename = "static")]
    pub statics: usize,
    /// Table size.
    pub capacity: u32,
}

/// Keepalive outcomes and tunnel liveness.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeepaliveStatus {
    /// Outcomes.
    #[serde(flatten)]
    pub counts: KeepaliveCounts,
    /// Tunnels heard within the dead interval.
    pub alive: usize,
    /// Tunnels silent past it.
    pub dead: usize,
    /// Tunnels never heard.
    pub never: usize,
    /// The dead interval, seconds.
    pub dead_interval_s: u64,
}

/// Data channel liveness of one tunnel.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Liveness {
    /// Keepalives arrive.
    Alive,
    /// None for the dead interval.
    Dead,
    /// None yet.
    Never,
}

impl Liveness {
    /// The spelling in tables and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Alive => "alive",
            Liveness::Dead => "dead",
            Liveness::Never => "never",
        }
    }
}

/// Keepalive state of one tunnel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TunnelKeepalive {
    /// Liveness.
    pub state: Liveness,
    /// Seconds since the last keepalive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_s: Option<f64>,
    /// Where keepalives come from (or where a session tunnel is bound).
    pub peer: Option<String>,
    /// Keepalives answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalives: Option<u64>,
}

/// One row of `ferry tunnels`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TunnelRow {
    /// AP name.
    pub ap: String,
    /// Tunnel id.
    pub id: Option<u32>,
    /// AP address (configured, or bound).
    pub address: Option<String>,
    /// Configured source port.
    pub port: Option<u16>,
    /// Port learned from the AP's frames (any-port tunnels).
    pub learned_port: Option<u16>,
    /// Session ID.
    pub session_id: Option<String>,
    /// Whether the tunnel has entries in the live table.
    pub installed: bool,
    /// Active or standby, as configured.
    pub state: crate::config::TunnelState,
    /// Configured active, but installed standby: the HA pair's licence
    /// pool does not cover it (read from the live entry).
    #[serde(default)]
    pub unlicensed: bool,
    /// Client VLAN.
    pub vlan: u16,
    /// Frame format.
    pub format: crate::config::Format,
    /// Learned stations.
    pub stations: Option<u64>,
    /// Frames received from the AP.
    pub rx_packets: Option<u64>,
    /// Frames forwarded to the client VLAN.
    pub up_packets: Option<u64>,
    /// Bytes forwarded to the client VLAN.
    pub up_bytes: Option<u64>,
    /// Frames encapsulated to the AP.
    pub down_packets: Option<u64>,
    /// Bytes encapsulated to the AP.
    pub down_bytes: Option<u64>,
    /// Keepalive state.
    pub keepalive: TunnelKeepalive,
}

/// `ferry tunnels`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tunnels {
    /// Live generation.
    pub generation: u64,
    /// One row per tunnel.
    pub tunnels: Vec<TunnelRow>,
}

/// One row of `ferry stations`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StationRow {
    /// Client MAC.
    pub mac: String,
    /// Client VLAN.
    pub vlan: u16,
    /// AP name of its tunnel.
    pub ap: Option<String>,
    /// Tunnel id.
    pub tunnel: u32,
    /// Radio id.
    pub radio: u8,
    /// BSSID, when known.
    pub bssid: Option<String>,
    /// Configured (never moved by learning).
    #[serde(rename = "static")]
    pub is_static: bool,
}

/// `ferry stations`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stations {
    /// Stations in the table.
    pub total: usize,
    /// Matching the filter.
    pub matching: usize,
    /// Listed here.
    pub shown: usize,
    /// The rows.
    pub stations: Vec<StationRow>,
}

/// `ferry counters`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counters {
    /// Packets by reason (every drop has one).
    pub reasons: std::collections::BTreeMap<String, u64>,
    /// Station learning events.
    pub events: std::collections::BTreeMap<String, u64>,
    /// Upstream frames whose station learning read the station table
    /// because no learning hint vouched for the station (a cost figure:
    /// one read per talking station per hint epoch while the hints hold
    /// every station, more when they cannot).
    #[serde(default)]
    pub station_table_reads: u64,
    /// Downstream FIB lookups: frames whose tunnel had no current cached
    /// next hop on their CPU (a cost figure: one per active tunnel per CPU
    /// per next-hop generation).
    #[serde(default)]
    pub fib_lookups: u64,
    /// Keepalive outcomes.
    pub keepalive: KeepaliveCounts,
}

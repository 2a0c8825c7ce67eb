//! The subcommands of the `ferry` binary other than `run`: the admin
//! commands (one request to the running ferry, printed as a table or as
//! JSON), and the offline `check` and `replay` reports.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use ferry::api::{
    client,
    protocol::Request,
    views::{Change, ChangeKind, Counters, Plan, Stations, Status, Tunnels},
};
use serde::{Serialize, de::DeserializeOwned};

use crate::{Target, TunnelOp};

pub mod check;
pub mod cluster;
pub mod failover;
pub mod replay;

/// Long enough for a swap of a full table with a station flush.
const TIMEOUT: Duration = Duration::from_secs(120);

fn socket(t: &Target) -> Result<PathBuf> {
    if let Some(s) = &t.socket {
        return Ok(s.clone());
    }
    if let Some(c) = &t.config {
        return Ok(ferry::config::Config::load(c)?.admin_socket);
    }
    let dir = Path::new("/run/ferry");
    let socks: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                .collect()
        })
        .unwrap_or_default();
    match socks.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "no ferry admin socket in /run/ferry (is `ferry run` running?); use --socket or --config"
        ),
        _ => bail!(
            "several ferry nodes run here ({}); choose one with --socket or --config",
            socks
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Sends `req`; a refusal comes back as `CallError::Refused` (exit 2).
fn call<T: DeserializeOwned>(t: &Target, req: Request) -> Result<T> {
    Ok(client::call(&socket(t)?, req, TIMEOUT)?)
}

/// Prints `v` as JSON when asked; whether it did.
fn json<T: Serialize>(t: &Target, v: &T) -> Result<bool> {
    if t.json {
        println!("{}", serde_json::to_string_pretty(v)?);
    }
    Ok(t.json)
}

/// `-` for nothing.
fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("-".to_string(), |v| v.to_string())
}

/// `ferry status`.
pub fn status(t: &Target) -> Result<()> {
    let v: Status = call(t, Request::Status)?;
    if json(t, &v)? {
        return Ok(());
    }
    let adopted = if v.adopted {
        ", adopted a running data plane"
    } else {
        ""
    };
    println!(
        "node {} (ferry {}, pid {}, up {} s){adopted}",
        v.node, v.version, v.pid, v.uptime_s
    );
    for a in &v.attached {
        let kept = if a.adopted_link {
            ", link kept from the previous run"
        } else {
            ""
        };
        let state = match (&*a.state, &a.detail) {
            ("attached", _) => String::new(),
            (s, Some(d)) => format!(" !!! {s}: {d}"),
            (s, None) => format!(" !!! {s}"),
        };
        let again = if a.reattached > 0 {
            format!(", attached again {} times", a.reattached)
        } else {
            String::new()
        };
        println!(
            "  {:<12} {:<18} {} mode{kept}{again}{state}",
            a.iface, a.program, a.mode
        );
    }
    if v.attached.iter().any(|a| a.state != "attached") {
        println!("  keepalives are NOT answered until every program is attached (APs fail over)");
    }
    println!(
        "generation {} (rollback to {}), {} swaps, {} stations flushed",
        v.generation,
        opt(v.rollback_generation),
        v.swaps,
        v.stations_flushed
    );
    let tu = &v.tunnels;
    println!(
        "tunnels {}: {} active, {} standby, {} session tunnels not bound yet",
        tu.total, tu.active, tu.standby, tu.unbound
    );
    let st = &v.stations;
    println!(
        "stations: {} learned, {} static, table capacity {}",
        st.learned, st.statics, st.capacity
    );
    let k = &v.keepalive;
    println!(
        "keepalives: {} answered, {} unknown session, {} rate-limited, {} malformed, {} damped, {} oversized, {} unanswered without a data plane, {} unanswered during a handover, {} dropped by the kernel; tunnels {} alive, {} dead, {} never heard (dead after {} s)",
        k.counts.answered,
        k.counts.unknown,
        k.counts.refused,
        k.counts.malformed,
        k.counts.damped,
        k.counts.oversized,
        k.counts.no_dataplane,
        k.counts.handing_over,
        k.counts.kernel_drops,
        k.alive,
        k.dead,
        k.never,
        k.dead_interval_s
    );
    if let Some(c) = &v.last_change {
        if c.old_generation == c.new_generation {
            // A binding, or a no-op retry: the table generation stays.
            println!(
                "last change: {} in {} us (generation {} stays)",
                kind_of(c),
                c.total_us,
                c.new_generation
            );
        } else {
            println!(
                "last change: {} {} -> {} in {} us",
                kind_of(c),
                c.old_generation,
                c.new_generation,
                c.total_us
            );
        }
    }
    if let Some(r) = &v.last_reload {
        match &r.error {
            None => println!(
                "last reload: ok, generation {} (at unix time {})",
                opt(r.generation),
                r.at_unix_s
            ),
            Some(e) => println!("last reload: REFUSED (at unix time {}): {e}", r.at_unix_s),
        }
    }
    Ok(())
}

/// "swap", or "tunnel demote ap1".
fn kind_of(c: &Change) -> String {
    match &c.ap {
        Some(ap) => format!("{} {ap}", c.kind),
        None => c.kind.to_string(),
    }
}

/// `ferry tunnels`.
pub fn tunnels(t: &Target) -> Result<()> {
    let v: Tunnels = call(t, Request::Tunnels)?;
    if json(t, &v)? {
        return Ok(());
    }
    println!(
        "{:<16} {:>5} {:<26} {:>6} {:<10} {:>5} {:<6} {:>8} {:>10} {:>10} {:<9}",
        "AP",
        "ID",
        "ADDRESS",
        "PORT",
        "STATE",
        "VLAN",
        "FORMAT",
        "STATIONS",
        "UP PKTS",
        "DOWN PKTS",
        "KEEPALIVE"
    );
    for r in &v.tunnels {
        let port = match (r.port, r.learned_port) {
            (Some(p), _) => p.to_string(),
            (None, Some(p)) => format!("({p})"),
            (None, None) => "any".to_string(),
        };
        let addr = match (&r.address, &r.session_id) {
            (Some(a), _) => a.clone(),
            (None, Some(sid)) => format!("session {}..", sid.get(..8).unwrap_or(sid)),
            (None, None) => "-".to_string(),
        };
        println!(
            "{:<16} {:>5} {:<26} {:>6} {:<10} {:>5} {:<6} {:>8} {:>10} {:>10} {:<9}",
            r.ap,
            opt(r.id),
            addr,
            port,
            if r.unlicensed {
                "unlicensed"
            } else {
                r.state.as_str()
            },
            r.vlan,
            r.format.as_str(),
            opt(r.stations),
            opt(r.up_packets),
            opt(r.down_packets),
            r.keepalive.state.as_str()
        );
    }
    println!("generation {}", v.generation);
    Ok(())
}

/// `ferry stations`.
pub fn stations(t: &Target, ap: Option<String>, limit: usize) -> Result<()> {
    let req = Request::Stations {
        ap,
        limit: Some(limit),
    };
    let v: Stations = call(t, req)?;
    if json(t, &v)? {
        return Ok(());
    }
    println!(
        "{:<17} {:>5} {:<16} {:>5} {:<17} {:<6}",
        "MAC", "VLAN", "AP", "RADIO", "BSSID", "KIND"
    );
    for r in &v.stations {
        let kind = if r.is_static { "static" } else { "learned" };
        println!(
            "{:<17} {:>5} {:<16} {:>5} {:<17} {kind:<6}",
            r.mac,
            r.vlan,
            opt(r.ap.as_deref()),
            r.radio,
            opt(r.bssid.as_deref()),
        );
    }
    println!(
        "{} shown of {} matching ({} in the table)",
        v.shown, v.matching, v.total
    );
    Ok(())
}

/// `ferry counters`.
pub fn counters(t: &Target) -> Result<()> {
    let v: Counters = call(t, Request::Counters)?;
    if json(t, &v)? {
        return Ok(());
    }
    println!("reasons (non-zero):");
    for r in ferry_ebpf::abi::Reason::ALL {
        let n = v.reasons.get(r.name()).copied().unwrap_or(0);
        if n != 0 {
            println!("  {:<28} {n:>14}", r.name());
        }
    }
    println!("station events:");
    for (k, n) in &v.events {
        println!("  {k:<28} {n:>14}");
    }
    println!(
        "  {:<28} {:>14}",
        "station_table_reads", v.station_table_reads
    );
    println!("next hops:");
    println!("  {:<28} {:>14}", "fib_lookups", v.fib_lookups);
    let k = &v.keepalive;
    println!("keepalives:");
    for (name, n) in [
        ("answered", k.answered),
        ("unknown", k.unknown),
        ("refused", k.refused),
        ("malformed", k.malformed),
        ("bindings", k.bindings),
        ("rebinds damped", k.damped),
    ] {
        println!("  {name:<28} {n:>14}");
    }
    Ok(())
}

fn print_change(t: &Target, c: &Change) -> Result<()> {
    if json(t, c)? {
        return Ok(());
    }
    let ms = |us: u64| us as f64 / 1e3;
    println!(
        "{}: generation {} -> {} in {:.3} ms (build {:.3} ms, flip {:.3} ms); {} tunnels ({} added, {} removed); {} stations flushed in {:.3} ms",
        kind_of(c),
        c.old_generation,
        c.new_generation,
        ms(c.total_us),
        ms(c.build_us),
        ms(c.flip_us),
        c.tunnels,
        c.added,
        c.removed,
        c.stations_flushed,
        ms(c.flush_us),
    );
    let (added, removed) = if c.kind == ChangeKind::Rollback {
        ("restored", "undone")
    } else {
        ("added", "removed")
    };
    if !c.added_aps.is_empty() {
        println!("  {added}: {}", names(&c.added_aps));
    }
    if !c.removed_aps.is_empty() {
        println!("  {removed}: {}", names(&c.removed_aps));
    }
    Ok(())
}

/// `ferry tunnel add`: every key a `[[tunnel]]` entry takes.
#[derive(clap::Args, Debug)]
pub struct TunnelArgs {
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
    /// active (forwarding) or standby (installed, not forwarding).
    #[arg(long, default_value = "active")]
    state: String,
    /// Client VLAN (default: forwarding.default_vlan).
    #[arg(long)]
    vlan: Option<u16>,
    /// 802.3 or 802.11 (native frames downstream).
    #[arg(long)]
    format: Option<String>,
    /// Send the CAPWAP Radio MAC field downstream (a MAC address).
    #[arg(long)]
    radio_mac: Option<String>,
    /// Tunnel MTU, outer IP packet (default: downstream.mtu).
    #[arg(long)]
    mtu: Option<u16>,
    /// IPv6 tunnels: UDP-Lite (true, the default) or UDP with a full
    /// checksum (false).
    #[arg(long)]
    udp_lite: Option<bool>,
    /// Next-hop MAC when the FIB has none (default:
    /// downstream.next_hop_mac).
    #[arg(long)]
    next_hop_mac: Option<String>,
    /// Learned stations at most (default: forwarding.station_limit).
    #[arg(long)]
    station_limit: Option<u32>,
    /// HA group (required when the configuration has [ha]).
    #[arg(long)]
    group: Option<String>,
}

impl TunnelArgs {
    /// The `[[tunnel]]` entry these arguments describe.
    fn entry(self) -> ferry::config::TunnelEntry {
        ferry::config::TunnelEntry {
            ap: self.ap,
            address: self.address,
            session_id: self.session_id,
            port: self.port.map(i64::from),
            state: Some(self.state),
            vlan: self.vlan.map(i64::from),
            format: self.format,
            radio_mac: self.radio_mac,
            mtu: self.mtu.map(i64::from),
            udp_lite: self.udp_lite,
            next_hop_mac: self.next_hop_mac,
            station_limit: self.station_limit.map(i64::from),
            group: self.group,
        }
    }
}

/// `ferry swap` options.
pub struct SwapFlags {
    /// `--rollback`.
    pub rollback: bool,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `--force`.
    pub force: bool,
}

/// `ferry swap`.
pub fn swap(t: &Target, table: Option<&Path>, f: SwapFlags) -> Result<()> {
    let req = if f.rollback {
        Request::Rollback { dry_run: f.dry_run }
    } else {
        let Some(path) = table else {
            bail!("give a table file or --rollback");
        };
        let text = ferry::config::read_capped(path)?;
        Request::Swap {
            file: path.display().to_string(),
            text,
            force: f.force,
            dry_run: f.dry_run,
        }
    };
    if f.dry_run {
        return print_plan(t, &call(t, req)?);
    }
    print_change(t, &call(t, req)?)
}

/// `ferry reload`.
pub fn reload(t: &Target, dry_run: bool, force: bool) -> Result<()> {
    let req = Request::Reload { force, dry_run };
    if dry_run {
        return print_plan(t, &call(t, req)?);
    }
    print_change(t, &call(t, req)?)
}

/// At most this many AP names per list in text output (`--json` has all).
const NAMES_SHOWN: usize = 20;

fn names(v: &[String]) -> String {
    let mut s = v
        .iter()
        .take(NAMES_SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if v.len() > NAMES_SHOWN {
        s += &format!(" and {} more", v.len() - NAMES_SHOWN);
    }
    s
}

fn print_plan(t: &Target, p: &Plan) -> Result<()> {
    if json(t, p)? {
        return Ok(());
    }
    let to = p
        .to_generation
        .map_or(String::new(), |g| format!(" -> generation {g}"));
    println!(
        "{} (dry run, nothing changed): generation {}{to}; {} tunnels after it",
        p.kind, p.generation, p.tunnels
    );
    for (what, v) in [
        ("adds", &p.added),
        ("removes", &p.removed),
        ("changes", &p.changed),
    ] {
        if !v.is_empty() {
            println!("  {what} {}: {}", v.len(), names(v));
        }
    }
    println!("  would flush {} stations", p.stations_to_flush);
    Ok(())
}

/// `ferry tunnel ...`.
pub fn tunnel(t: &Target, op: TunnelOp) -> Result<()> {
    let req = match op {
        TunnelOp::Add(a) => {
            // The entry goes to ferry as TOML so it is validated exactly
            // like a [[tunnel]] of the configuration.
            let entry = a.entry();
            let mut doc = toml::map::Map::new();
            let e = toml::Value::try_from(&entry).context("encoding the entry")?;
            doc.insert("tunnel".into(), toml::Value::Array(vec![e]));
            Request::TunnelAdd {
                text: toml::to_string(&toml::Value::Table(doc))?,
            }
        }
        TunnelOp::Remove { ap } => Request::TunnelRemove { ap },
        TunnelOp::Promote { ap } => Request::Promote { ap },
        TunnelOp::Demote { ap } => Request::Demote { ap },
    };
    print_change(t, &call(t, req)?)
}

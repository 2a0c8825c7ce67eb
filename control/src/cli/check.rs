//! `ferry check`: a configuration validated offline and described.

use std::path::Path;

use anyhow::Result;
use ferry::config::{Config, ConfigError, TunnelEntry, TunnelState, format_session_id};
use serde::Serialize;

/// What `ferry check --json` prints.
#[derive(Serialize)]
struct Report<'a> {
    node: &'a str,
    addresses: Vec<String>,
    data_port: u16,
    ap_side: &'a str,
    client_side: &'a str,
    default_vlan: u16,
    egress: &'static str,
    tunnels: Vec<TunnelEntry>,
    client_vlans: &'a [u16],
    static_stations: usize,
    station_capacity: u32,
}

/// Validates `path` and prints what it describes.
pub fn check(path: &Path, json: bool) -> Result<()> {
    let c = Config::load(path)?;
    let egress = if c.one_arm() { "tx" } else { "redirect" };
    if json {
        let r = Report {
            node: &c.name,
            addresses: c.addresses.iter().map(|a| a.to_string()).collect(),
            data_port: c.data_port,
            ap_side: &c.ap_side,
            client_side: &c.client_side,
            default_vlan: c.default_vlan,
            egress,
            tunnels: c.tunnel_entries(),
            client_vlans: &c.client_vlans,
            static_stations: c.stations.len(),
            station_capacity: c.station_capacity,
        };
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let addresses: Vec<String> = c.addresses.iter().map(|a| a.to_string()).collect();
    println!("{}: ok", path.display());
    println!(
        "node {} data port {} addresses {}",
        c.name,
        c.data_port,
        addresses.join(", ")
    );
    let how = if c.one_arm() {
        "one arm, XDP_TX"
    } else {
        "XDP_REDIRECT"
    };
    println!(
        "ap side {} -> client side {} ({how})",
        c.ap_side, c.client_side
    );
    println!(
        "{:<20} {:<40} {:>6} {:<7} {:>5} FORMAT",
        "AP", "ADDRESS", "PORT", "STATE", "VLAN"
    );
    for t in &c.tunnels {
        let port = t.port.map_or("any".to_string(), |p| p.to_string());
        let address = match (t.address, t.session_id) {
            (Some(a), _) => a.to_string(),
            (None, Some(sid)) => format!("session {}", format_session_id(&sid)),
            (None, None) => "-".into(),
        };
        println!(
            "{:<20} {:<40} {:>6} {:<7} {:>5} {}",
            t.ap,
            address,
            port,
            t.state.as_str(),
            t.vlan,
            t.format.as_str()
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

/// What `ferry check --table --json` prints.
#[derive(Serialize)]
struct TableReport<'a> {
    table: String,
    config: String,
    tunnels: Vec<TunnelEntry>,
    static_stations: usize,
    client_vlans: &'a [u16],
}

/// `ferry check --table`: a swap table validated offline against the
/// configuration, by the code `ferry swap` runs, and described.
pub fn check_table(config: &Path, table: &Path, json: bool) -> Result<()> {
    let c = Config::load(config)?;
    let text = ferry::config::read_capped(table)?;
    let t = c.with_table(table, &text)?;
    if t.tunnels.is_empty() {
        return Err(ConfigError::whole(
            table,
            "no [[tunnel]] entries (an empty or comment-only table): `ferry swap` refuses it without --force",
        )
        .into());
    }
    if json {
        let r = TableReport {
            table: table.display().to_string(),
            config: config.display().to_string(),
            tunnels: t.tunnel_entries(),
            static_stations: t.stations.len(),
            client_vlans: &t.client_vlans,
        };
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let standby = t
        .tunnels
        .iter()
        .filter(|x| x.state == TunnelState::Standby)
        .count();
    println!(
        "{}: ok against {}: {} tunnels ({} active, {standby} standby), {} static station(s); client VLANs {:?}",
        table.display(),
        config.display(),
        t.tunnels.len(),
        t.tunnels.len() - standby,
        t.stations.len(),
        t.client_vlans
    );
    Ok(())
}

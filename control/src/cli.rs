//! The admin subcommands of the `ferry` binary: each sends one request to
//! the running ferry and prints the answer as a table, or as JSON with
//! `--json`.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use ferry::admin::{self, Request};
use serde_json::Value;

use crate::{Target, TunnelOp};

/// An error the running ferry refused the request with (bad table, unknown
/// AP, ...): exit status 2, like other bad input.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

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

fn call(t: &Target, req: Request) -> Result<Value> {
    let s = socket(t)?;
    admin::call(&s, req, TIMEOUT).map_err(|e| {
        let msg = format!("{e:#}");
        if msg.contains("connecting to") || msg.contains("reading from") {
            e
        } else {
            anyhow::Error::new(Refused(msg))
        }
    })
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `ferry status`.
pub fn status(t: &Target) -> Result<()> {
    let v = call(t, Request::Status)?;
    if t.json {
        return print_json(&v);
    }
    println!(
        "node {} (ferry {}, pid {}, up {} s){}",
        s(&v["node"]),
        s(&v["version"]),
        s(&v["pid"]),
        s(&v["uptime_s"]),
        if v["adopted"] == Value::Bool(true) {
            ", adopted a running data plane"
        } else {
            ""
        }
    );
    for a in v["attached"].as_array().into_iter().flatten() {
        println!(
            "  {:<12} {:<18} {} mode{}",
            s(&a["iface"]),
            s(&a["program"]),
            s(&a["mode"]),
            if a["adopted_link"] == Value::Bool(true) {
                ", link kept from the previous run"
            } else {
                ""
            }
        );
    }
    println!(
        "generation {} (rollback to {}), {} swaps, {} stations flushed",
        s(&v["generation"]),
        s(&v["rollback_generation"]),
        s(&v["swaps"]),
        s(&v["stations_flushed"])
    );
    let tu = &v["tunnels"];
    println!(
        "tunnels {}: {} master, {} backup, {} session tunnels not bound yet",
        s(&tu["total"]),
        s(&tu["master"]),
        s(&tu["backup"]),
        s(&tu["unbound"])
    );
    let st = &v["stations"];
    println!(
        "stations: {} learned, {} static, table capacity {}",
        s(&st["learned"]),
        s(&st["static"]),
        s(&st["capacity"])
    );
    let k = &v["keepalive"];
    println!(
        "keepalives: {} answered, {} unknown session, {} rate-limited, {} malformed; tunnels {} alive, {} dead, {} never heard (dead after {} s)",
        s(&k["answered"]),
        s(&k["unknown"]),
        s(&k["refused"]),
        s(&k["malformed"]),
        s(&k["alive"]),
        s(&k["dead"]),
        s(&k["never"]),
        s(&k["dead_interval_s"])
    );
    if !v["last_change"].is_null() {
        let c = &v["last_change"];
        println!(
            "last change: {} {} -> {} in {} us",
            s(&c["kind"]),
            s(&c["old_generation"]),
            s(&c["new_generation"]),
            s(&c["total_us"])
        );
    }
    Ok(())
}

/// `ferry tunnels`.
pub fn tunnels(t: &Target) -> Result<()> {
    let v = call(t, Request::Tunnels)?;
    if t.json {
        return print_json(&v);
    }
    println!(
        "{:<16} {:>5} {:<26} {:>6} {:<7} {:>5} {:<6} {:>8} {:>10} {:>10} {:<9}",
        "AP",
        "ID",
        "ADDRESS",
        "PORT",
        "ROLE",
        "VLAN",
        "FORMAT",
        "STATIONS",
        "UP PKTS",
        "DOWN PKTS",
        "KEEPALIVE"
    );
    for r in v["tunnels"].as_array().into_iter().flatten() {
        let port = match (&r["port"], &r["learned_port"]) {
            (Value::Null, Value::Null) => "any".to_string(),
            (Value::Null, p) => format!("({})", s(p)),
            (p, _) => s(p),
        };
        let addr = match (&r["address"], &r["session_id"]) {
            (Value::Null, sid) => format!("session {}..", &s(sid)[..8.min(s(sid).len())]),
            (a, _) => s(a),
        };
        println!(
            "{:<16} {:>5} {:<26} {:>6} {:<7} {:>5} {:<6} {:>8} {:>10} {:>10} {:<9}",
            s(&r["ap"]),
            s(&r["id"]),
            addr,
            port,
            s(&r["role"]),
            s(&r["vlan"]),
            s(&r["format"]),
            s(&r["stations"]),
            s(&r["up_packets"]),
            s(&r["down_packets"]),
            s(&r["keepalive"]["state"])
        );
    }
    println!("generation {}", s(&v["generation"]));
    Ok(())
}

/// `ferry stations`.
pub fn stations(t: &Target, ap: Option<String>, limit: usize) -> Result<()> {
    let v = call(
        t,
        Request::Stations {
            ap,
            limit: Some(limit),
        },
    )?;
    if t.json {
        return print_json(&v);
    }
    println!(
        "{:<17} {:>5} {:<16} {:>5} {:<17} {:<6}",
        "MAC", "VLAN", "AP", "RADIO", "BSSID", "KIND"
    );
    for r in v["stations"].as_array().into_iter().flatten() {
        println!(
            "{:<17} {:>5} {:<16} {:>5} {:<17} {:<6}",
            s(&r["mac"]),
            s(&r["vlan"]),
            s(&r["ap"]),
            s(&r["radio"]),
            s(&r["bssid"]),
            if r["static"] == Value::Bool(true) {
                "static"
            } else {
                "learned"
            }
        );
    }
    println!(
        "{} shown of {} matching ({} in the table)",
        s(&v["shown"]),
        s(&v["matching"]),
        s(&v["total"])
    );
    Ok(())
}

/// `ferry counters`.
pub fn counters(t: &Target) -> Result<()> {
    let v = call(t, Request::Counters)?;
    if t.json {
        return print_json(&v);
    }
    println!("reasons (non-zero):");
    for r in ferry_ebpf::abi::Reason::ALL {
        let n = v["reasons"][r.name()].as_u64().unwrap_or(0);
        if n != 0 {
            println!("  {:<28} {n:>14}", r.name());
        }
    }
    println!("station events:");
    for (k, n) in v["events"].as_object().into_iter().flatten() {
        println!("  {k:<28} {:>14}", s(n));
    }
    println!("keepalives:");
    for (k, n) in v["keepalive"].as_object().into_iter().flatten() {
        println!("  {k:<28} {:>14}", s(n));
    }
    Ok(())
}

fn print_change(t: &Target, v: &Value) -> Result<()> {
    if t.json {
        return print_json(v);
    }
    println!(
        "{}: generation {} -> {} in {:.3} ms (build {:.3} ms, flip {:.3} ms); {} tunnels ({} added, {} removed); {} stations flushed in {:.3} ms",
        s(&v["kind"]),
        s(&v["old_generation"]),
        s(&v["new_generation"]),
        v["total_us"].as_f64().unwrap_or(0.0) / 1e3,
        v["build_us"].as_f64().unwrap_or(0.0) / 1e3,
        v["flip_us"].as_f64().unwrap_or(0.0) / 1e3,
        s(&v["tunnels"]),
        s(&v["added"]),
        s(&v["removed"]),
        s(&v["stations_flushed"]),
        v["flush_us"].as_f64().unwrap_or(0.0) / 1e3,
    );
    Ok(())
}

/// `ferry swap`.
pub fn swap(t: &Target, table: Option<&Path>, rollback: bool) -> Result<()> {
    let req = if rollback {
        Request::Rollback
    } else {
        let Some(path) = table else {
            bail!("give a table file or --rollback");
        };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Request::Swap {
            file: path.display().to_string(),
            text,
        }
    };
    let v = call(t, req)?;
    print_change(t, &v)
}

/// `ferry tunnel ...`.
pub fn tunnel(t: &Target, op: TunnelOp) -> Result<()> {
    let req = match op {
        TunnelOp::Add {
            ap,
            address,
            port,
            session_id,
            role,
            vlan,
            format,
        } => {
            // The entry goes to ferry as TOML so it is validated exactly
            // like a [[tunnel]] of the configuration.
            let mut e = toml::map::Map::new();
            e.insert("ap".into(), ap.into());
            if let Some(a) = address {
                e.insert("address".into(), a.into());
            }
            if let Some(p) = port {
                e.insert("port".into(), i64::from(p).into());
            }
            if let Some(sid) = session_id {
                e.insert("session_id".into(), sid.into());
            }
            e.insert("role".into(), role.into());
            if let Some(v) = vlan {
                e.insert("vlan".into(), i64::from(v).into());
            }
            if let Some(f) = format {
                e.insert("format".into(), f.into());
            }
            let mut doc = toml::map::Map::new();
            doc.insert(
                "tunnel".into(),
                toml::Value::Array(vec![toml::Value::Table(e)]),
            );
            Request::TunnelAdd {
                text: toml::to_string(&toml::Value::Table(doc))?,
            }
        }
        TunnelOp::Remove { ap } => Request::TunnelRemove { ap },
        TunnelOp::Promote { ap } => Request::Promote { ap },
        TunnelOp::Demote { ap } => Request::Demote { ap },
    };
    let v = call(t, req)?;
    print_change(t, &v)
}

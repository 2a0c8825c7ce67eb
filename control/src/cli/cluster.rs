//! `ferry cluster status|members|history|role`: the HA pair as the running
//! node sees it.

use anyhow::Result;
use ferry::{
    api::protocol::Request,
    ha::{
        election::Role,
        view::{ClusterStatus, Event, LicenceStatus},
    },
};
use serde::Serialize;

use super::{call, json, opt};
use crate::Target;

fn role(r: Role) -> &'static str {
    match r {
        Role::Init => "init",
        Role::Backup => "backup",
        Role::Master => "master",
    }
}

fn ago(ms: Option<u64>) -> String {
    ms.map_or("never".to_string(), |m| format!("{m} ms ago"))
}

/// `ferry cluster status`.
pub fn status(t: &Target) -> Result<()> {
    let v: ClusterStatus = call(t, Request::ClusterStatus)?;
    if json(t, &v)? {
        return Ok(());
    }
    print_status(&v);
    Ok(())
}

fn print_status(v: &ClusterStatus) {
    let election = v.election.map_or("?", |e| match e {
        ferry::config::ElectionMode::Builtin => "builtin",
        ferry::config::ElectionMode::External => "external",
    });
    println!(
        "node {} ({}), election {election}, heartbeat {} ms",
        v.node,
        opt(v.address),
        v.heartbeat_ms
    );
    println!(
        "{:<16} {:<7} {:<10} {:>5} {:>5} {:<7} {:<8} {:<7} {:>10}  why",
        "GROUP", "ROLE", "DATAPLANE", "PRIO", "PEER", "PEER IS", "PREEMPT", "SYNCED", "FOR"
    );
    for g in &v.groups {
        let preempt = if g.preempt {
            format!("{} s", g.preempt_delay_s)
        } else {
            "off".into()
        };
        let why = g.reason.map_or("-".to_string(), |r| {
            serde_json::to_string(&r)
                .unwrap_or_default()
                .replace('"', "")
        });
        let blocked = if g.blocked {
            "  BLOCKED: copy incomplete"
        } else {
            ""
        };
        println!(
            "{:<16} {:<7} {:<10} {:>5} {:>5} {:<7} {:<8} {:<7} {:>8} s  {why}{blocked}",
            g.name,
            role(g.role),
            g.dataplane,
            g.priority,
            opt(g.peer_priority),
            g.peer_role.map_or("-", role),
            preempt,
            if g.synced { "yes" } else { "no" },
            g.for_ms / 1000
        );
    }
    let p = &v.peer;
    println!(
        "peer {} is {}, last heard {}, {} of {} paths up",
        p.node.as_deref().unwrap_or("?"),
        p.state,
        ago(p.last_heard_ms),
        p.paths.iter().filter(|x| x.up).count(),
        p.paths.len()
    );
    for (i, x) in p.paths.iter().enumerate() {
        println!(
            "  path {} {:<20} {:<4} heard {}, {} heartbeats in, {} out",
            i + 1,
            x.address,
            if x.up { "up" } else { "DOWN" },
            ago(x.last_heard_ms),
            x.received,
            v.sent.get(i).copied().unwrap_or(0)
        );
    }
    let s = &v.sync;
    println!(
        "sync: {}, bulk received {}, bulk sent {}, {} stations in, {} out",
        match (s.connected, s.path) {
            (true, Some(a)) => format!("connected via {a}"),
            (true, None) => "connected".to_string(),
            (false, _) => "not connected".to_string(),
        },
        if s.bulk_received { "yes" } else { "no" },
        if s.bulk_sent { "yes" } else { "no" },
        s.stations_received,
        s.stations_sent
    );
    println!(
        "table revision {} here, {} at the peer",
        v.revision,
        opt(v.peer_revision)
    );
    if let Some(l) = &v.licences {
        print_licences(l);
    }
    let r = &v.rejected;
    println!(
        "refused: {} malformed, {} unknown key, {} forged, {} stale, {} replayed; {} from unknown addresses",
        r.malformed, r.unknown_key, r.forged, r.stale, r.replayed, v.foreign
    );
}

/// The licence lines of `ferry cluster status`.
fn print_licences(l: &LicenceStatus) {
    let grace = match (l.grace_left_s, l.grace_expired) {
        (Some(s), _) => format!(
            ", peer lost: its licences count {} more days",
            s.div_ceil(86_400)
        ),
        (None, true) => ", peer lost: grace over".to_string(),
        (None, false) => String::new(),
    };
    println!(
        "licences: {} used ({} here) of pool {} ({} local + {} peer){grace}",
        l.used, l.used_here, l.pool, l.local, l.peer
    );
    if !l.unlicensed.is_empty() {
        println!(
            "  standby for lack of a licence: {}",
            l.unlicensed.join(", ")
        );
    }
}

/// One row of `ferry cluster members`.
#[derive(Debug, Serialize)]
pub struct Member {
    /// Node name.
    pub node: String,
    /// Its addresses on the peer paths.
    pub addresses: Vec<String>,
    /// Its role per group.
    pub roles: Vec<(String, Role)>,
    /// "self", or ms since heard.
    pub last_seen: String,
}

/// `ferry cluster members`.
pub fn members(t: &Target) -> Result<()> {
    let v: ClusterStatus = call(t, Request::ClusterStatus)?;
    let mut rows = vec![Member {
        node: v.node.clone(),
        addresses: v.address.iter().map(|a| a.to_string()).collect(),
        roles: v.groups.iter().map(|g| (g.name.clone(), g.role)).collect(),
        last_seen: "self".into(),
    }];
    rows.push(Member {
        node: v.peer.node.clone().unwrap_or_else(|| "?".into()),
        addresses: v.peer.paths.iter().map(|p| p.address.to_string()).collect(),
        roles: v
            .groups
            .iter()
            .filter_map(|g| Some((g.name.clone(), g.peer_role?)))
            .collect(),
        last_seen: ago(v.peer.last_heard_ms),
    });
    if json(t, &rows)? {
        return Ok(());
    }
    println!(
        "{:<16} {:<34} {:<14} ROLES",
        "NODE", "ADDRESSES", "LAST SEEN"
    );
    for m in &rows {
        let roles: Vec<String> = m
            .roles
            .iter()
            .map(|(g, r)| format!("{g}={}", role(*r)))
            .collect();
        println!(
            "{:<16} {:<34} {:<14} {}",
            m.node,
            m.addresses.join(","),
            m.last_seen,
            roles.join(" ")
        );
    }
    Ok(())
}

/// `ferry cluster history`.
pub fn history(t: &Target) -> Result<()> {
    let v: Vec<Event> = call(t, Request::ClusterHistory)?;
    if json(t, &v)? {
        return Ok(());
    }
    for e in &v {
        let secs = e.at_ms / 1000;
        let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
        let kind = serde_json::to_string(&e.kind)
            .unwrap_or_default()
            .replace('"', "");
        let mut what = kind;
        if let Some(g) = &e.group {
            what.push_str(&format!(" {g}"));
        }
        if let Some(r) = e.role {
            what.push_str(&format!(" -> {}", role(r)));
        }
        if let Some(r) = e.reason {
            let r = serde_json::to_string(&r)
                .unwrap_or_default()
                .replace('"', "");
            what.push_str(&format!(" ({r})"));
        }
        println!(
            "{h:02}:{m:02}:{s:02}.{:03} UTC  {what}: {}",
            e.at_ms % 1000,
            e.detail
        );
    }
    Ok(())
}

/// `ferry cluster resync`.
pub fn resync(t: &Target) -> Result<()> {
    let v: ClusterStatus = call(t, Request::ClusterResync)?;
    if json(t, &v)? {
        return Ok(());
    }
    println!(
        "bulk snapshot sent to the peer and asked of it; `ferry cluster history` shows both ends"
    );
    Ok(())
}

/// `ferry cluster role GROUP master|backup`.
pub fn set_role(t: &Target, group: &str, r: Role) -> Result<()> {
    let v: ClusterStatus = call(
        t,
        Request::ClusterRole {
            group: group.to_string(),
            role: r,
        },
    )?;
    if json(t, &v)? {
        return Ok(());
    }
    print_status(&v);
    Ok(())
}

//! The HA pair in the metrics: the same view as `ferry cluster status`.

use super::exposition::{Exposition, Kind};
use crate::{
    ha::{
        election::Role,
        view::{ClusterStatus, GroupStatus, LicenceStatus},
    },
    runtime::node::Node,
};

/// The `ferry_ha_*` families (none on a node without `[ha]`).
pub fn render(node: &Node, e: &mut Exposition) {
    let Ok(v) = node.cluster_status() else { return };
    groups(&v, e);
    peer(&v, e);
    if let Some(l) = &v.licences {
        licences(l, e);
    }
}

fn licences(l: &LicenceStatus, e: &mut Exposition) {
    for (name, help, kind, value) in [
        (
            "ferry_ha_licences_used",
            "Tunnels holding an AP licence (active on whichever node masters their group).",
            Kind::Gauge,
            l.used,
        ),
        (
            "ferry_ha_licences_used_here",
            "Of those, tunnels of groups this node masters.",
            Kind::Gauge,
            l.used_here,
        ),
        (
            "ferry_ha_licences_pool",
            "The pair's licence pool: this node's plus the peer's (while up or in grace).",
            Kind::Gauge,
            u64::from(l.pool),
        ),
        (
            "ferry_ha_licences_local",
            "ha.licenses of this node.",
            Kind::Gauge,
            u64::from(l.local),
        ),
        (
            "ferry_ha_licences_grace_seconds",
            "Seconds the lost peer's licences still count (0 when not in grace).",
            Kind::Gauge,
            l.grace_left_s.unwrap_or(0),
        ),
        (
            "ferry_ha_tunnels_unlicensed",
            "Tunnels configured active but held standby for lack of a licence.",
            Kind::Gauge,
            l.unlicensed.len() as u64,
        ),
        (
            "ferry_ha_licence_refusals_total",
            "Times a tunnel was held standby for lack of a licence.",
            Kind::Counter,
            l.refused_total,
        ),
    ] {
        e.family(name, kind, help).sample(name, &[], value as f64);
    }
}

/// A per-group family: name, help, and the flag it shows.
type GroupFamily = (&'static str, &'static str, fn(&GroupStatus) -> bool);

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

fn groups(v: &ClusterStatus, e: &mut Exposition) {
    let groups: [GroupFamily; 3] = [
        (
            "ferry_ha_group_master",
            "1 where this node is the elected master of the group.",
            |g| g.role == Role::Master,
        ),
        (
            "ferry_ha_group_active",
            "1 where the data plane forwards the group here (its lease runs), read from the kernel.",
            |g| g.dataplane == "active",
        ),
        (
            "ferry_ha_group_synced",
            "1 where this node's copy of the group's state is complete.",
            |g| g.synced,
        ),
    ];
    for (name, help, f) in groups {
        e.family(name, Kind::Gauge, help);
        for g in &v.groups {
            e.sample(name, &[("group", &g.name)], flag(f(g)));
        }
    }
    e.family(
        "ferry_ha_group_packets_total",
        Kind::Counter,
        "Client frames of the group forwarded here, by direction (the data plane's per-group counters).",
    );
    for g in &v.groups {
        for (dir, n) in [("up", g.up_packets), ("down", g.down_packets)] {
            e.sample(
                "ferry_ha_group_packets_total",
                &[("group", &g.name), ("direction", dir)],
                n as f64,
            );
        }
    }
    e.family(
        "ferry_ha_group_standby_drops_total",
        Kind::Counter,
        "Frames of the group dropped here because it stands by (both directions).",
    );
    for g in &v.groups {
        e.sample(
            "ferry_ha_group_standby_drops_total",
            &[("group", &g.name)],
            g.standby_drops as f64,
        );
    }
}

fn peer(v: &ClusterStatus, e: &mut Exposition) {
    e.family(
        "ferry_ha_peer_up",
        Kind::Gauge,
        "1 while some path hears the peer.",
    )
    .sample("ferry_ha_peer_up", &[], flag(v.peer.state == "up"));
    e.family(
        "ferry_ha_path_up",
        Kind::Gauge,
        "1 while the path hears the peer.",
    );
    for (i, p) in v.peer.paths.iter().enumerate() {
        let (n, a) = ((i + 1).to_string(), p.address.to_string());
        e.sample(
            "ferry_ha_path_up",
            &[("path", &n), ("address", &a)],
            flag(p.up),
        );
    }
    e.family(
        "ferry_ha_heartbeats_total",
        Kind::Counter,
        "Heartbeats by path and direction (received: accepted only).",
    );
    for (i, p) in v.peer.paths.iter().enumerate() {
        let n = (i + 1).to_string();
        e.sample(
            "ferry_ha_heartbeats_total",
            &[("path", &n), ("direction", "received")],
            p.received as f64,
        );
        let sent = v.sent.get(i).copied().unwrap_or(0);
        e.sample(
            "ferry_ha_heartbeats_total",
            &[("path", &n), ("direction", "sent")],
            sent as f64,
        );
    }
    let r = v.rejected;
    e.family(
        "ferry_ha_rejected_total",
        Kind::Counter,
        "Peer messages refused, by class (foreign: from an address not in ha.peers).",
    );
    for (class, n) in [
        ("malformed", r.malformed),
        ("unknown_key", r.unknown_key),
        ("forged", r.forged),
        ("stale", r.stale),
        ("replayed", r.replayed),
        ("foreign", v.foreign),
    ] {
        e.sample("ferry_ha_rejected_total", &[("class", class)], n as f64);
    }
    let s = &v.sync;
    e.family(
        "ferry_ha_sync_connected",
        Kind::Gauge,
        "1 while the sync stream is up.",
    )
    .sample("ferry_ha_sync_connected", &[], flag(s.connected));
    let on = s
        .path
        .and_then(|a| v.peer.paths.iter().position(|p| p.address == a))
        .map_or(0.0, |i| (i + 1) as f64);
    e.family(
        "ferry_ha_sync_path",
        Kind::Gauge,
        "The peer path the sync stream runs on (as in ferry_ha_path_up; 0 while down).",
    )
    .sample("ferry_ha_sync_path", &[], on);
    e.family(
        "ferry_ha_sync_stations_total",
        Kind::Counter,
        "Stations sent to and received (installed) from the peer.",
    );
    e.sample(
        "ferry_ha_sync_stations_total",
        &[("direction", "sent")],
        s.stations_sent as f64,
    );
    e.sample(
        "ferry_ha_sync_stations_total",
        &[("direction", "received")],
        s.stations_received as f64,
    );
}

//! What the metrics say, collected from the node and the kernel's maps.
//! A map read that fails is counted in `ferry_scrape_errors_total` and its
//! family left out, never reported as zeros.

use ferry_ebpf::abi::{Event, Reason};

use super::exposition::{Exposition, Kind};
use crate::runtime::node::Node;

/// The exposition text for `node`.
pub fn render(node: &mut Node) -> String {
    let mut e = Exposition::default();
    let name = node.tables.config.name.clone();
    let abi = ferry_ebpf::abi::ABI_VERSION.to_string();
    e.family(
        "ferry_build_info",
        Kind::Gauge,
        "Build and node information.",
    )
    .sample(
        "ferry_build_info",
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("node", &name),
            ("abi", &abi),
        ],
        1.0,
    );
    let mut errors = 0u64;
    packets(node, &mut e, &mut errors);
    tunnels(node, &mut e, &mut errors);
    keepalives(node, &mut e);
    attachments(node, &mut e);
    connections(node, &mut e);
    tables(node, &mut e);
    super::cluster::render(node, &mut e);
    node.scrape_errors += errors;
    e.family(
        "ferry_scrape_errors_total",
        Kind::Counter,
        "Map reads that failed while serving metrics (the family is left out).",
    )
    .sample("ferry_scrape_errors_total", &[], node.scrape_errors as f64);
    e.finish()
}

fn packets(node: &Node, e: &mut Exposition, errors: &mut u64) {
    let Ok(c) = node.dp.counters() else {
        *errors += 1;
        return;
    };
    e.family(
        "ferry_packets_total",
        Kind::Counter,
        "Packets by verdict reason (see README, counter glossary).",
    );
    for r in Reason::ALL {
        e.sample(
            "ferry_packets_total",
            &[("reason", r.name())],
            c.get(*r) as f64,
        );
    }
    e.family(
        "ferry_station_events_total",
        Kind::Counter,
        "Station learning events.",
    );
    for ev in Event::ALL {
        e.sample(
            "ferry_station_events_total",
            &[("event", ev.name())],
            c.event(*ev) as f64,
        );
    }
    e.family(
        "ferry_station_table_reads_total",
        Kind::Counter,
        "Upstream frames whose station learning read the station table (the learning hint missed).",
    );
    e.sample(
        "ferry_station_table_reads_total",
        &[],
        c.station_reads() as f64,
    );
    e.family(
        "ferry_fib_lookups_total",
        Kind::Counter,
        "Downstream FIB lookups (the per-CPU next-hop cache had no current answer).",
    );
    e.sample("ferry_fib_lookups_total", &[], c.fib_lookups() as f64);
}

fn tunnels(node: &Node, e: &mut Exposition, errors: &mut u64) {
    let mut stats = Vec::new();
    for t in &node.tables.config.tunnels {
        let Some(id) = node.tables.id_of(&t.ap) else {
            continue;
        };
        match node.dp.tunnel_stats(id) {
            Ok(s) => stats.push((t.ap.as_str(), s)),
            Err(_) => *errors += 1,
        }
    }
    e.family("ferry_tunnel_packets_total", Kind::Counter, "Packets per tunnel: rx (received from the AP), up (forwarded to the client VLAN), down (encapsulated to the AP).");
    for (ap, s) in &stats {
        for (dir, v) in [
            ("rx", s.rx_packets),
            ("up", s.up_packets),
            ("down", s.down_packets),
        ] {
            e.sample(
                "ferry_tunnel_packets_total",
                &[("ap", ap), ("direction", dir)],
                v as f64,
            );
        }
    }
    e.family(
        "ferry_tunnel_bytes_total",
        Kind::Counter,
        "Bytes per tunnel and direction.",
    );
    for (ap, s) in &stats {
        for (dir, v) in [
            ("rx", s.rx_bytes),
            ("up", s.up_bytes),
            ("down", s.down_bytes),
        ] {
            e.sample(
                "ferry_tunnel_bytes_total",
                &[("ap", ap), ("direction", dir)],
                v as f64,
            );
        }
    }
}

fn keepalives(node: &Node, e: &mut Exposition) {
    e.family(
        "ferry_tunnel_keepalive_state",
        Kind::Gauge,
        "Data channel state per tunnel: 1 for the current state (alive, dead or never).",
    );
    for t in &node.tables.config.tunnels {
        let st = node.liveness(&t.ap).as_str();
        e.sample(
            "ferry_tunnel_keepalive_state",
            &[("ap", &t.ap), ("state", st)],
            1.0,
        );
    }
    e.family(
        "ferry_keepalives_total",
        Kind::Counter,
        "Keepalives by outcome.",
    );
    let k = node.ka;
    for (o, v) in [
        ("answered", k.answered),
        ("unknown_session", k.unknown),
        ("rate_limited", k.refused),
        ("malformed", k.malformed),
        ("bound", k.bindings),
        ("damped", k.damped),
        ("no_dataplane", k.no_dataplane),
        ("oversized", k.oversized),
        ("handing_over", k.handing_over),
    ] {
        e.sample("ferry_keepalives_total", &[("outcome", o)], v as f64);
    }
    e.family(
        "ferry_keepalive_socket_drops_total",
        Kind::Counter,
        "Datagrams the kernel dropped on the keepalive sockets (receive queue full).",
    )
    .sample(
        "ferry_keepalive_socket_drops_total",
        &[],
        k.kernel_drops as f64,
    );
}

fn attachments(node: &Node, e: &mut Exposition) {
    let views = node.attachments.views();
    e.family(
        "ferry_attached",
        Kind::Gauge,
        "1 while the kernel runs this node's program on the interface (checked every second).",
    );
    for a in &views {
        let up = if a.state == "attached" { 1.0 } else { 0.0 };
        e.sample(
            "ferry_attached",
            &[("iface", &a.iface), ("program", &a.program)],
            up,
        );
    }
    e.family(
        "ferry_reattached_total",
        Kind::Counter,
        "Programs attached again after the kernel lost the attachment.",
    );
    for a in &views {
        e.sample(
            "ferry_reattached_total",
            &[("iface", &a.iface)],
            a.reattached as f64,
        );
    }
}

fn connections(node: &Node, e: &mut Exposition) {
    e.family(
        "ferry_connections_total",
        Kind::Counter,
        "Admin and metrics connections: accepted, and closed early by reason.",
    );
    for (server, c) in [("admin", node.conns.admin), ("metrics", node.conns.metrics)] {
        for (what, v) in [
            ("accepted", c.accepted),
            ("over_cap", c.over_cap),
            ("idle", c.idle),
            ("overflow", c.overflow),
            ("gone_unserved", c.gone_unserved),
            ("accept_error", c.accept_errors),
        ] {
            e.sample(
                "ferry_connections_total",
                &[("server", server), ("outcome", what)],
                v as f64,
            );
        }
    }
}

fn tables(node: &Node, e: &mut Exposition) {
    let t = &node.tables;
    e.family(
        "ferry_swaps_total",
        Kind::Counter,
        "Whole-table swaps and rollbacks.",
    )
    .sample("ferry_swaps_total", &[], t.swaps as f64);
    e.family(
        "ferry_last_swap_duration_seconds",
        Kind::Gauge,
        "Request to new table live, last whole-table swap or rollback.",
    )
    .sample(
        "ferry_last_swap_duration_seconds",
        &[],
        t.last_swap
            .as_ref()
            .map_or(0.0, |c| c.total_us as f64 / 1e6),
    );
    e.family(
        "ferry_table_generation",
        Kind::Gauge,
        "Live table generation.",
    )
    .sample("ferry_table_generation", &[], t.generation as f64);
    e.family(
        "ferry_stations_flushed_total",
        Kind::Counter,
        "Stations deleted because their tunnel left the table or changed VLAN.",
    )
    .sample("ferry_stations_flushed_total", &[], t.flushed_total as f64);
    if let Some(r) = &node.last_reload {
        e.family(
            "ferry_last_reload_success",
            Kind::Gauge,
            "1 if the last reload (SIGHUP or ferry reload) went live, 0 if it was refused or failed.",
        )
        .sample(
            "ferry_last_reload_success",
            &[],
            if r.ok { 1.0 } else { 0.0 },
        );
        e.family(
            "ferry_last_reload_timestamp_seconds",
            Kind::Gauge,
            "When the last reload ran (Unix time).",
        )
        .sample(
            "ferry_last_reload_timestamp_seconds",
            &[],
            r.at_unix_s as f64,
        );
    }
}

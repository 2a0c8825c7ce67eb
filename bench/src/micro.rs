//! Micro-benchmark: ns per packet of ferry's XDP program under
//! BPF_PROG_TEST_RUN, next to two baselines from the same object.
//!
//! Method. BPF_PROG_TEST_RUN with `repeat = N` runs the program N times on
//! the *same buffer without restoring it*: after the first decapsulation
//! the remaining N-1 runs would see the already decapsulated frame and
//! measure a different path. So every case is measured as the mean of the
//! kernel-reported duration of N single runs (`repeat = 1`, fresh copy of
//! the packet each time); the constant timer overhead in that figure is
//! removed by subtracting the same measurement of XDP_DROP, and the
//! XDP_DROP per-packet cost measured with `repeat = N` (it never modifies
//! the packet) is added back:
//!
//! `cost(x) = single(x) - single(drop) + repeat(drop)`
//!
//! For the cases that do not modify the packet (baselines, unknown-tunnel
//! drop, pass) the `repeat = N` figure is also printed as a cross-check of
//! the method. Rounds of all cases are interleaved so machine noise hits
//! them alike; each figure is the median over rounds.

use std::{net::IpAddr, time::Instant};

use anyhow::{Context as _, Result, bail};
pub use ferry_dataplane::tables::addr_key;
use ferry_dataplane::{
    craft::{self, Dot11, Options, Transport},
    datapath::{Datapath, action},
    tables::{Station, Tables, Tunnel},
};
use ferry_ebpf::{
    abi::{
        self, DOWN_FIXED_PORT, DOWN_NEIGHBOUR, EGRESS_REDIRECT, Reason, Settings, TunnelDown,
        TunnelInfo, TunnelKey,
    },
    eth,
};
use serde::Serialize;

/// One measured case.
#[derive(Clone, Debug, Serialize)]
pub struct CaseResult {
    /// Case name.
    pub name: String,
    /// Cost per packet, ns (method above).
    pub ns: f64,
    /// Ratio to XDP_DROP in the same run.
    pub x_drop: f64,
    /// `repeat = N` cross-check, for cases that leave the packet unchanged.
    pub repeat_ns: Option<f64>,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Packets per case (single runs) and repeats per round for the baselines.
    pub packets_per_case: u64,
    /// Rounds.
    pub rounds: u32,
    /// Results.
    pub cases: Vec<CaseResult>,
    /// 802.3 decap at `many_tunnels` over 1,024 tunnels, both rotating
    /// over 1,024 tunnels.
    pub scale_ratio: f64,
    /// 802.3 decap at `many_tunnels` (rotating) over one hot tunnel.
    pub scale_hot_ratio: f64,
    /// Size of the large table.
    pub many_tunnels: u32,
    /// Downstream encap with `many_stations` stations over 1,024 stations,
    /// both rotating over 1,024 stations.
    pub station_scale_ratio: f64,
    /// Downstream encap with `many_stations` (rotating) over one hot station.
    pub station_hot_ratio: f64,
    /// Size of the large station table.
    pub many_stations: u32,
    /// 802.3 decap on one table of `many_tunnels` port-declared tunnels
    /// (1,024 in turn), exact port looked up first over the (address, any
    /// port) marker first: the effect of `LOOKUP_EXACT_FIRST` alone.
    pub port_lookup_ratio: f64,
    /// Target checks: (name, met).
    pub targets: Vec<(String, bool)>,
}

struct Case {
    name: &'static str,
    dp: usize,
    prog: &'static str,
    pkt: Vec<u8>,
    /// Further packets the single runs rotate through (other tunnels).
    more: Vec<Vec<u8>>,
    expect: (u32, Option<Reason>),
    idempotent: bool,
}

const AC: [u8; 4] = [198, 18, 0, 1];
const CASE_DROP: &str = "XDP_DROP baseline";
const CASE_DOT3: &str = "802.3 decap";
const CASE_DOT11: &str = "802.11 decap";
const CASE_DOT3_TX: &str = "802.3 decap, XDP_TX egress";
const CASE_DOT3_MANY: &str = "802.3 decap, large table";
const CASE_DOWN: &str = "802.3 encap (downstream)";
const CASE_DOWN_MANY: &str = "802.3 encap, many stations";
const CASE_DOWN_FEW: &str = "802.3 encap, 1,024 stations";
const CASE_DOT3_FEW: &str = "802.3 decap, 1,024 tunnels";
const CASE_PORTS_MARKER: &str = "802.3 decap, port tunnels, marker first";
const CASE_PORTS_EXACT: &str = "802.3 decap, port tunnels, exact first";
/// Distinct tunnels or stations the "large table" cases rotate through.
const ROTATION: u32 = 1024;

fn ap_addr(i: u32) -> IpAddr {
    // 198.18.128.0/17 and up: room for 32k APs inside 198.18.0.0/15.
    let n = 0x8000 + i;
    IpAddr::from([198, 18 + (n >> 16) as u8, (n >> 8) as u8, n as u8])
}

/// The client MAC of station `i` (distinct for up to 2^32 stations).
fn station_mac(i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x02, 0x5a, b[0], b[1], b[2], b[3]]
}

fn tables(tunnels: u32, stations: u32) -> Tables {
    tables_on(tunnels, stations, 0)
}

/// Tunnels declared with source `port` (0: any port).
fn tables_on(tunnels: u32, stations: u32, port: u16) -> Tables {
    Tables {
        local_addrs: vec![IpAddr::from(AC)],
        settings: Settings {
            data_port: 5247,
            egress: EGRESS_REDIRECT,
            egress_down: EGRESS_REDIRECT,
            df: 1,
            ..Default::default()
        },
        tunnels: (0..tunnels)
            .map(|i| Tunnel {
                key: TunnelKey::new(addr_key(ap_addr(i)), port),
                info: TunnelInfo {
                    id: i,
                    vlan: 200,
                    flags: 0,
                    station_limit: 512,
                    group: 0,
                    pad: 0,
                },
                down: TunnelDown {
                    ap: addr_key(ap_addr(i)),
                    local: addr_key(IpAddr::from(AC)),
                    port: 5247,
                    flags: DOWN_FIXED_PORT | DOWN_NEIGHBOUR,
                    vlan: 200,
                    mtu: 1500,
                    next_hop: [0x02, 0x0e, 0, 0, 0, 1],
                    source_mac: [0x02, 0xac, 0, 0, 0, 1],
                    ..Default::default()
                },
            })
            .collect(),
        client_vlans: vec![200],
        // Stations spread over the tunnels; the table holds them all.
        stations: (0..stations)
            .map(|i| Station::new(station_mac(i), 200, i % tunnels, 0, None))
            .collect(),
        station_capacity: (stations + stations / 4).max(1024),
    }
}

/// `tunnels` tunnels declared with the port the crafted packets come from,
/// looked up in `order` (see `abi::LOOKUP_EXACT_FIRST`).
fn datapath_ported(tunnels: u32, order: u8) -> Result<Datapath> {
    let mut dp = Datapath::load()?;
    let port = Transport::new(ap_addr(0), IpAddr::from(AC)).sport;
    dp.apply(&tables_on(tunnels, 1, port))?;
    dp.set_client_egress(1)?;
    dp.set_ap_egress(1)?;
    dp.set_tunnel_lookup(order)?;
    Ok(dp)
}

fn datapath(tunnels: u32, stations: u32, egress: u8) -> Result<Datapath> {
    let mut dp = Datapath::load()?;
    let mut t = tables(tunnels, stations);
    t.settings.egress = egress;
    dp.apply(&t)?;
    dp.set_client_egress(1)?;
    dp.set_ap_egress(1)?;
    Ok(dp)
}

/// A 64-byte client frame as it arrives from the client VLAN, to `station`.
fn down_frame(station: u32) -> Vec<u8> {
    let ip = craft::client_ipv4_udp([198, 19, 1, 1], [198, 19, 4, 10], 1, 14);
    craft::ethernet(
        station_mac(station),
        [0x02, 0, 0, 0, 0, 1],
        Some((ferry_ebpf::vlan::TPID_8021Q, 200)),
        eth::ETHERTYPE_IPV4,
        &ip,
    )
}

/// A 64-byte client frame (without FCS: 60), the classic small-packet
/// case, from a client whose MAC is derived from its AP's address (so each
/// AP has its own station and learning stays in its steady state).
fn client_frame(ap: IpAddr) -> Vec<u8> {
    let ip = craft::client_ipv4_udp([198, 19, 4, 10], [198, 19, 1, 1], 1, 18);
    let a = addr_key(ap);
    craft::ethernet(
        [0x02, 0, 0, 0, 0, 1],
        [0x02, 0xc1, a[12], a[13], a[14], a[15]],
        None,
        eth::ETHERTYPE_IPV4,
        &ip,
    )
}

fn dot3_packet(ap: IpAddr) -> Vec<u8> {
    let t = Transport::new(ap, IpAddr::from(AC));
    craft::capwap_packet(
        &t,
        craft::header_8023(0),
        &Options::default(),
        &client_frame(ap),
    )
}

fn dot11_packet(ap: IpAddr) -> Vec<u8> {
    let t = Transport::new(ap, IpAddr::from(AC));
    let ip = craft::client_ipv4_udp([198, 19, 4, 10], [198, 19, 1, 1], 1, 18);
    let f = Dot11::uplink(
        [0x02, 0xbb, 0, 0, 0, 1],
        [0x02, 0, 0, 0, 0, 2],
        [0x02, 0, 0, 0, 0, 1],
        Some(5),
    )
    .frame(&craft::snap(eth::ETHERTYPE_IPV4, &ip));
    craft::capwap_packet(&t, craft::header_80211(0), &Options::default(), &f)
}

fn pass_packet() -> Vec<u8> {
    // SSH-like TCP to the AC's own address: parsed down to the port check.
    let mut p = dot3_packet(ap_addr(0));
    p[eth::HLEN + 9] = 6;
    p
}

fn single_mean(dp: &Datapath, prog: &str, pkt: &[u8], more: &[Vec<u8>], n: u64) -> Result<f64> {
    let mut sum = 0u64;
    for i in 0..n {
        let p = if more.is_empty() {
            pkt
        } else {
            &more[i as usize % more.len()]
        };
        sum += dp.run(prog, p)?.duration_ns;
    }
    Ok(sum as f64 / n as f64)
}

fn repeat_mean(dp: &Datapath, prog: &str, pkt: &[u8], n: u32) -> Result<f64> {
    let t = Instant::now();
    dp.run_repeat(prog, pkt, n)?;
    Ok(t.elapsed().as_nanos() as f64 / f64::from(n))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs the benchmark: `packets` single runs per case split over `rounds`,
/// `many` tunnels in the large table. `progress` gets a line per round.
pub fn run(
    packets: u64,
    rounds: u32,
    many: u32,
    stations: u32,
    mut progress: impl FnMut(&str),
) -> Result<Report> {
    if rounds == 0 || packets < u64::from(rounds) {
        bail!("need at least one packet per round");
    }
    progress(&format!(
        "loading tables: {many} tunnels, {stations} stations"
    ));
    let dps = [
        datapath(1, 1, EGRESS_REDIRECT)?,
        datapath(many, 1, EGRESS_REDIRECT)?,
        datapath(1, 1, abi::EGRESS_TX)?,
        datapath(many, stations, EGRESS_REDIRECT)?,
        datapath(many, ROTATION, EGRESS_REDIRECT)?,
        datapath(ROTATION, 1, EGRESS_REDIRECT)?,
        datapath_ported(many, 0)?,
        datapath_ported(many, abi::LOOKUP_EXACT_FIRST)?,
    ];
    // Same table, same packets, both lookup orders.
    let port_rotation = || -> Vec<Vec<u8>> {
        (0..1024)
            .map(|k| dot3_packet(ap_addr(k * many / 1024)))
            .collect()
    };
    let last = ap_addr(many - 1);
    let cases = vec![
        Case {
            name: CASE_DROP,
            dp: 0,
            prog: abi::PROG_BASELINE_DROP,
            pkt: dot3_packet(ap_addr(0)),
            more: Vec::new(),
            expect: (action::DROP, None),
            idempotent: true,
        },
        Case {
            name: "MAC-swap XDP_TX baseline",
            dp: 0,
            prog: abi::PROG_BASELINE_TX,
            pkt: dot3_packet(ap_addr(0)),
            more: Vec::new(),
            expect: (action::TX, None),
            idempotent: true,
        },
        Case {
            name: CASE_DOT3,
            dp: 0,
            prog: abi::PROG_UPSTREAM,
            pkt: dot3_packet(ap_addr(0)),
            more: Vec::new(),
            expect: (action::REDIRECT, Some(Reason::Forwarded)),
            idempotent: false,
        },
        Case {
            name: CASE_DOT11,
            dp: 0,
            prog: abi::PROG_UPSTREAM,
            pkt: dot11_packet(ap_addr(0)),
            more: Vec::new(),
            expect: (action::REDIRECT, Some(Reason::Forwarded)),
            idempotent: false,
        },
        Case {
            name: "unknown-tunnel drop",
            dp: 0,
            prog: abi::PROG_UPSTREAM,
            pkt: dot3_packet(IpAddr::from([198, 18, 0, 77])),
            more: Vec::new(),
            expect: (action::DROP, Some(Reason::DropUnknownTunnel)),
            idempotent: true,
        },
        Case {
            name: "non-CAPWAP pass",
            dp: 0,
            prog: abi::PROG_UPSTREAM,
            pkt: pass_packet(),
            more: Vec::new(),
            expect: (action::PASS, Some(Reason::PassNotData)),
            idempotent: true,
        },
        Case {
            name: CASE_DOT3_TX,
            dp: 2,
            prog: abi::PROG_UPSTREAM,
            pkt: dot3_packet(ap_addr(0)),
            more: Vec::new(),
            expect: (action::TX, Some(Reason::Forwarded)),
            idempotent: false,
        },
        Case {
            name: CASE_DOWN,
            dp: 0,
            prog: abi::PROG_DOWNSTREAM,
            pkt: down_frame(0),
            more: Vec::new(),
            expect: (action::REDIRECT, Some(Reason::DownForwarded)),
            idempotent: false,
        },
        Case {
            name: CASE_DOWN_FEW,
            dp: 4,
            prog: abi::PROG_DOWNSTREAM,
            pkt: down_frame(0),
            more: (0..ROTATION).map(down_frame).collect(),
            expect: (action::REDIRECT, Some(Reason::DownForwarded)),
            idempotent: false,
        },
        Case {
            name: CASE_DOWN_MANY,
            dp: 3,
            prog: abi::PROG_DOWNSTREAM,
            pkt: down_frame(stations - 1),
            // Rotate over 1,024 stations spread through the table.
            more: (0..1024u64)
                .map(|k| down_frame((k * u64::from(stations) / 1024) as u32))
                .collect(),
            expect: (action::REDIRECT, Some(Reason::DownForwarded)),
            idempotent: false,
        },
        Case {
            name: CASE_DOT3_FEW,
            dp: 5,
            prog: abi::PROG_UPSTREAM,
            pkt: dot3_packet(ap_addr(0)),
            more: (0..ROTATION).map(|k| dot3_packet(ap_addr(k))).collect(),
            expect: (action::REDIRECT, Some(Reason::Forwarded)),
            idempotent: false,
        },
        Case {
            name: CASE_DOT3_MANY,
            dp: 1,
            prog: abi::PROG_UPSTREAM,
            pkt: dot3_packet(last),
            // Rotate over 1,024 tunnels spread through the table so lookups
            // touch different buckets, as traffic from many APs would.
            more: (0..1024)
                .map(|k| dot3_packet(ap_addr(k * many / 1024)))
                .collect(),
            expect: (action::REDIRECT, Some(Reason::Forwarded)),
            idempotent: false,
        },
        Case {
            name: CASE_PORTS_MARKER,
            dp: 6,
            prog: abi::PROG_UPSTREAM,
            pkt: dot3_packet(last),
            more: port_rotation(),
            expect: (action::REDIRECT, Some(Reason::Forwarded)),
            idempotent: false,
        },
        Case {
            name: CASE_PORTS_EXACT,
            dp: 7,
            prog: abi::PROG_UPSTREAM,
            pkt: dot3_packet(last),
            more: port_rotation(),
            expect: (action::REDIRECT, Some(Reason::Forwarded)),
            idempotent: false,
        },
    ];
    // A benchmark of the wrong path is worthless: check each case's verdict first.
    for c in &cases {
        let dp = &dps[c.dp];
        for pkt in std::iter::once(&c.pkt).chain(&c.more) {
            let before = dp.counters()?;
            let r = dp.run(c.prog, pkt)?;
            if r.action != c.expect.0 {
                bail!(
                    "case {:?}: program returned {} instead of {}",
                    c.name,
                    action::name(r.action),
                    action::name(c.expect.0)
                );
            }
            if let Some(reason) = c.expect.1
                && dp.counters()?.since(&before).get(reason) != 1
            {
                bail!(
                    "case {:?}: packet did not count as {}",
                    c.name,
                    reason.name()
                );
            }
        }
    }
    let per_round = packets / u64::from(rounds);
    let repeat = u32::try_from(packets.min(u64::from(u32::MAX))).context("repeat count")?;
    let mut single: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut rep: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..rounds {
        for (i, c) in cases.iter().enumerate() {
            let dp = &dps[c.dp];
            single[i].push(single_mean(dp, c.prog, &c.pkt, &c.more, per_round)?);
            if c.idempotent {
                rep[i].push(repeat_mean(dp, c.prog, &c.pkt, repeat / rounds)?);
            }
        }
        progress(&format!("round {}/{rounds} done", round + 1));
    }
    let s: Vec<f64> = single.iter_mut().map(|v| median(v)).collect();
    let r: Vec<Option<f64>> = rep
        .iter_mut()
        .map(|v| (!v.is_empty()).then(|| median(v)))
        .collect();
    let idx = |name: &str| {
        cases
            .iter()
            .position(|c| c.name == name)
            .context(name.to_string())
    };
    let d = idx(CASE_DROP)?;
    let drop_repeat = r[d].context("XDP_DROP repeat figure")?;
    let cost = |i: usize| s[i] - s[d] + drop_repeat;
    let results: Vec<CaseResult> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| CaseResult {
            name: c.name.to_string(),
            ns: cost(i),
            x_drop: cost(i) / drop_repeat,
            repeat_ns: r[i],
        })
        .collect();
    let (dot3, dot11, many_i) = (idx(CASE_DOT3)?, idx(CASE_DOT11)?, idx(CASE_DOT3_MANY)?);
    let (down, down_few, down_many) = (idx(CASE_DOWN)?, idx(CASE_DOWN_FEW)?, idx(CASE_DOWN_MANY)?);
    // Same access pattern (1,024 tunnels in turn, each with its station),
    // table of 1,024 vs `many` tunnels: the effect of table size alone.
    let scale = cost(many_i) / cost(idx(CASE_DOT3_FEW)?);
    let hot_scale = cost(many_i) / cost(dot3);
    // Same access pattern (1,024 distinct stations in turn), table of
    // 1,024 vs `stations` entries: the effect of table size alone.
    let station_scale = cost(down_many) / cost(down_few);
    let station_hot_scale = cost(down_many) / cost(down);
    let port_lookup = cost(idx(CASE_PORTS_EXACT)?) / cost(idx(CASE_PORTS_MARKER)?);
    let targets = vec![
        (
            "802.3 decap <= 2.0x XDP_DROP".to_string(),
            results[dot3].x_drop <= 2.0,
        ),
        (
            "802.11 decap <= 2.5x XDP_DROP".to_string(),
            results[dot11].x_drop <= 2.5,
        ),
        (
            format!(
                "802.3 decap at {many} tunnels within 15% of a small table (same 1,024-tunnel rotation)"
            ),
            (scale - 1.0).abs() <= 0.15,
        ),
        (
            "802.3 encap <= 2.5x XDP_DROP".to_string(),
            results[down].x_drop <= 2.5,
        ),
        (
            format!(
                "802.3 encap at {stations} stations within 15% of a small table (same 1,024-station rotation)"
            ),
            (station_scale - 1.0).abs() <= 0.15,
        ),
    ];
    Ok(Report {
        packets_per_case: packets,
        rounds,
        cases: results,
        scale_ratio: scale,
        scale_hot_ratio: hot_scale,
        many_tunnels: many,
        station_scale_ratio: station_scale,
        station_hot_ratio: station_hot_scale,
        many_stations: stations,
        port_lookup_ratio: port_lookup,
        targets,
    })
}

//! AP licences across the pair, end to end: the pool of both nodes'
//! `licenses`, a tunnel beyond it held standby on both, the lost peer's
//! licences kept through the grace (persisted across a restart) and gone
//! after it, with the licence clock moved by `FERRY_LICENCE_CLOCK_OFFSET_S`.
//! Needs root.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

mod pair;

use std::time::Duration;

use pair::{NodeHa, Pair};
use serde_json::Value;

/// Node `i`'s licence view (`cluster status --json`).
fn licences(p: &Pair, i: usize) -> Value {
    p.nodes[i].cluster()["licences"].clone()
}

fn unlicensed(p: &Pair, i: usize) -> Vec<String> {
    licences(p, i)["unlicensed"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// Whether one upstream frame of the lab AP, sent to node `to`, reaches
/// the client side.
fn forwards(p: &Pair, to: usize, seq: u32) -> bool {
    let got = p.exchange(true, &[p.up_frame(to, 1, seq)], Duration::from_millis(300));
    got.iter().any(|(s, _)| *s == seq)
}

#[test]
fn the_pool_is_both_nodes_licences_and_a_lost_peers_last_the_grace() {
    // Node 1 brings both licences, node 2 none: the pool is 2.
    let p = Pair::started_with(
        "hli",
        [
            NodeHa {
                priority: 200,
                preempt: false,
                extra: "licenses = 2",
            },
            NodeHa {
                priority: 100,
                preempt: false,
                extra: "licenses = 0",
            },
        ],
    );
    for (ap, last) in [("ap2", 20), ("ap3", 21)] {
        let addr = format!("198.18.1.{last}");
        p.nodes[0].ferry(&["tunnel", "add", ap, "--address", &addr, "--group", "group1"]);
    }
    // The third tunnel is beyond the pool, on both nodes.
    for i in 0..2 {
        p.wait_for(5, "ap3 standby for lack of a licence", || {
            unlicensed(&p, i) == ["ap3"]
        });
    }
    let l = licences(&p, 0);
    assert_eq!(
        (l["pool"].as_u64(), l["used"].as_u64()),
        (Some(2), Some(2)),
        "{l}"
    );
    assert_eq!(
        (l["local"].as_u64(), l["peer"].as_u64()),
        (Some(2), Some(0)),
        "{l}"
    );
    assert_eq!(l["used_here"], 2, "node 1 masters the group: {l}");
    assert_eq!(licences(&p, 1)["used_here"], 0);
    let rows = p.nodes[0].json(&["tunnels"]);
    let row = |ap: &str| {
        rows["tunnels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["ap"] == ap)
            .unwrap()
            .clone()
    };
    assert_eq!(row("ap3")["unlicensed"], true, "{rows}");
    assert_eq!(row("ap3")["state"], "active", "configured state kept");
    assert_eq!(row("ap1")["unlicensed"], false);
    assert!(p.nodes[0].ferry(&["tunnels"]).contains("unlicensed"));
    // Counted and logged by the next licence tick (once a second).
    p.wait_for(3, "the refusal counted", || {
        p.nodes[0]
            .scrape()
            .contains("ferry_ha_licence_refusals_total 1\n")
    });
    let m = p.nodes[0].scrape();
    for line in [
        "ferry_ha_licences_pool 2\n",
        "ferry_ha_tunnels_unlicensed 1\n",
    ] {
        assert!(m.contains(line), "{line} in\n{m}");
    }
    p.wait_for(3, "the refusal in node 2's history", || {
        let h = p.nodes[1].json(&["cluster", "history"]);
        h.as_array().unwrap().iter().any(|e| {
            e["kind"] == "licence"
                && e["detail"]
                    .as_str()
                    .unwrap()
                    .contains("standby for lack of a licence: ap3")
        })
    });
    assert!(forwards(&p, 0, 1), "ap1 is licensed");

    // Node 1 dies: its two licences stay in node 2's pool for the grace.
    p.nodes[0].kill9();
    p.wait_for(5, "node 2 master", || p.is(1, "master"));
    p.wait_for(5, "node 2 on the peer's licences in grace", || {
        let l = licences(&p, 1);
        l["pool"] == 2 && l["grace_left_s"].as_u64().is_some_and(|s| s > 29 * 86_400)
    });
    assert_eq!(unlicensed(&p, 1), ["ap3"]);
    assert!(forwards(&p, 1, 2), "ap1 forwards at node 2 in the grace");

    // A restart does not renew the grace, nor lose it: the ledger says
    // when the peer was last heard.
    p.nodes[1].kill9();
    p.start(1);
    p.wait_for(5, "node 2 master again, still in grace", || {
        p.is(1, "master") && licences(&p, 1)["pool"] == 2
    });
    assert_eq!(unlicensed(&p, 1), ["ap3"]);

    // 31 days later (the licence clock moved) the peer's licences are
    // gone: node 2 has none of its own, so no tunnel is activated.
    p.nodes[1].kill9();
    let month = (31 * 86_400).to_string();
    p.start_env(1, &[("FERRY_LICENCE_CLOCK_OFFSET_S", &month)]);
    p.wait_for(5, "node 2 master, grace over", || {
        p.is(1, "master") && licences(&p, 1)["grace_expired"] == true
    });
    let l = licences(&p, 1);
    assert_eq!(
        (l["pool"].as_u64(), l["used"].as_u64()),
        (Some(0), Some(0)),
        "{l}"
    );
    assert_eq!(unlicensed(&p, 1), ["ap1", "ap2", "ap3"]);
    let before = standby_drops(&p, 1);
    assert!(
        !forwards(&p, 1, 3),
        "ap1 refused activation after the grace"
    );
    assert_eq!(standby_drops(&p, 1), before + 1, "counted as standby");
    let cli = p.nodes[1].ferry(&["cluster", "status"]);
    // The README's example (`-- --nocapture`).
    println!("$ ferry cluster status\n{cli}");
    assert!(cli.contains("grace over"), "{cli}");
    assert!(
        cli.contains("standby for lack of a licence: ap1, ap2, ap3"),
        "{cli}"
    );
}

/// Node `i`'s `drop_standby` counter.
fn standby_drops(p: &Pair, i: usize) -> u64 {
    p.nodes[i].json(&["counters"])["reasons"]["drop_standby"]
        .as_u64()
        .unwrap_or(0)
}

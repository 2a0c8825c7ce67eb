//! Table bookkeeping against the kernel's maps (root: the real object is
//! loaded, nothing is attached): what the reference model cannot show,
//! such as per-CPU tunnel statistics.

// Test code: a failed step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use ferry::{api::views::ChangeKind, config::Config, tables::TableState};
use ferry_dataplane::{craft, datapath::Datapath};
use ferry_ebpf::abi::{self, TunnelStats};

const CONFIG: &str = r#"
[node]
name = "t"
addresses = ["198.18.0.1"]
[interfaces]
ap_side = "a"
client_side = "b"
"#;

fn tunnels(aps: &[(&str, u8)]) -> String {
    aps.iter()
        .map(|(ap, last)| {
            format!("[[tunnel]]\nap = \"{ap}\"\naddress = \"198.18.1.{last}\"\nport = 5000\n")
        })
        .collect()
}

/// An upstream frame from the AP at 198.18.1.`last`.
fn up(last: u8) -> Vec<u8> {
    let t = craft::Transport {
        sport: 5000,
        ..craft::Transport::new([198, 18, 1, last].into(), [198, 18, 0, 1].into())
    };
    let inner = craft::ethernet(
        [2, 0xee, 0, 0, 0, 1],
        [2, 0x5a, 0, 0, 0, 1],
        None,
        0x0800,
        &[0; 46],
    );
    craft::udp_frame(
        &t,
        &craft::capwap(craft::header_8023(0), &Default::default(), &inner),
    )
}

/// An id given to a new AP starts with zero statistics, whatever the AP
/// that had it before sent.
#[test]
fn a_reused_id_starts_with_zero_statistics() {
    let config = Config::parse(
        Path::new("t.toml"),
        &format!("{CONFIG}{}", tunnels(&[("ap1", 10), ("ap2", 11)])),
    )
    .unwrap();
    let mut dp = Datapath::load().expect("load eBPF object (needs root)");
    let mut s = TableState::install(&mut dp, config, 0).unwrap();
    dp.set_client_egress(1).unwrap();
    dp.set_ap_egress(1).unwrap();
    let id2 = s.id_of("ap2").unwrap();
    for _ in 0..3 {
        dp.run(abi::PROG_UPSTREAM, &up(11)).unwrap();
    }
    assert_eq!(dp.tunnel_stats(id2).unwrap().rx_packets, 3);
    // ap2 leaves the live table, then the rollback target: its id is free.
    for _ in 0..2 {
        let next = s
            .config
            .with_table(Path::new("t"), &tunnels(&[("ap1", 10)]))
            .unwrap();
        s.swap(&mut dp, next, ChangeKind::Swap).unwrap();
    }
    let next = s
        .config
        .with_table(Path::new("t"), &tunnels(&[("ap1", 10), ("ap3", 12)]))
        .unwrap();
    s.swap(&mut dp, next, ChangeKind::Swap).unwrap();
    assert_eq!(s.id_of("ap3"), Some(id2), "the id is reused");
    assert_eq!(dp.tunnel_stats(id2).unwrap(), TunnelStats::default());
}

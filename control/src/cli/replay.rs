//! `ferry replay`: a capture through the real programs, and its report.

use std::{
    fs::File,
    io::{BufWriter, IsTerminal as _},
    path::Path,
};

use anyhow::{Context as _, Result};
use ferry::{config::Config, tables::lower};
use ferry_dataplane::{datapath::Datapath, replay};
use serde_json::json;

use crate::FromSide;

/// Replays `input` through the programs loaded with `config`'s tables.
pub fn replay(
    config: &Path,
    input: &Path,
    output: &Path,
    from: Option<FromSide>,
    json: bool,
) -> Result<()> {
    let c = Config::load(config)?;
    let tables = lower::by_position(&c);
    let mut dp = Datapath::load()?;
    dp.apply(&tables)?;
    // Loopback (ifindex 1 in every namespace) stands in for both sides.
    dp.set_client_egress(1)?;
    dp.set_ap_egress(1)?;
    let sides = replay::Classifier::new(
        &tables,
        from.map(|f| match f {
            FromSide::Ap => replay::Side::Ap,
            FromSide::Client => replay::Side::Client,
        }),
    );
    let inf = File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let outf = File::create(output).with_context(|| format!("creating {}", output.display()))?;
    let tty = std::io::stderr().is_terminal();
    let rep = replay::replay(&dp, &sides, inf, BufWriter::new(outf), |n| {
        if tty {
            eprint!("\rreplayed {n} packets...");
        }
    })
    .with_context(|| format!("replaying {}", input.display()))?;
    if tty && rep.packets >= 10_000 {
        eprintln!();
    }
    let mut tunnels = Vec::new();
    // Tunnel ids are positions in the file (lower::by_position).
    for (id, tc) in c.tunnels.iter().enumerate() {
        let s = dp.tunnel_stats(id as u32)?;
        if s.rx_packets > 0 || s.down_packets > 0 {
            tunnels.push((tc.ap.clone(), s));
        }
    }
    if json {
        return print_json(config, input, output, &rep, &tunnels);
    }
    println!(
        "replayed {} packets from {} ({} AP side, {} client side) through the XDP programs; wrote {} frames to {}",
        rep.packets,
        input.display(),
        rep.from_ap,
        rep.from_client,
        rep.written,
        output.display()
    );
    if rep.truncated_in_capture > 0 {
        println!(
            "note: {} frames were truncated by the capture and ran as captured",
            rep.truncated_in_capture
        );
    }
    if rep.skipped.too_short + rep.skipped.rejected > 0 {
        println!(
            "skipped: {} shorter than an Ethernet header, {} rejected by the kernel{}",
            rep.skipped.too_short,
            rep.skipped.rejected,
            rep.skipped
                .first_error
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        );
    }
    println!("\nverdicts:");
    for (v, n) in &rep.verdicts {
        println!("  {v:<10} {n:>10}");
    }
    println!("\nreasons:");
    for r in ferry_ebpf::abi::Reason::ALL {
        if let Some(n) = rep.reasons.get(r.name()) {
            println!("  {:<24} {n:>10}", r.name());
        }
    }
    if !tunnels.is_empty() {
        println!(
            "\n{:<20} {:>10} {:>12} {:>10} {:>12} {:>10} {:>12}",
            "tunnel", "rx pkts", "rx bytes", "up pkts", "up bytes", "down pkts", "down bytes"
        );
        for (ap, s) in &tunnels {
            println!(
                "{ap:<20} {:>10} {:>12} {:>10} {:>12} {:>10} {:>12}",
                s.rx_packets, s.rx_bytes, s.up_packets, s.up_bytes, s.down_packets, s.down_bytes
            );
        }
    }
    if !rep.events.is_empty() {
        println!("\nstation learning:");
        for (e, n) in &rep.events {
            println!("  {e:<24} {n:>10}");
        }
    }
    Ok(())
}

fn print_json(
    config: &Path,
    input: &Path,
    output: &Path,
    rep: &replay::Report,
    tunnels: &[(String, ferry_ebpf::abi::TunnelStats)],
) -> Result<()> {
    let v = json!({
        "config": config, "input": input, "output": output,
        "packets": rep.packets, "written": rep.written,
        "from_ap": rep.from_ap, "from_client": rep.from_client, "events": rep.events,
        "truncated_in_capture": rep.truncated_in_capture,
        "skipped": rep.skipped, "verdicts": rep.verdicts, "reasons": rep.reasons,
        "tunnels": tunnels.iter().map(|(ap, s)| json!({
            "ap": ap, "rx_packets": s.rx_packets, "rx_bytes": s.rx_bytes,
            "up_packets": s.up_packets, "up_bytes": s.up_bytes,
            "down_packets": s.down_packets, "down_bytes": s.down_bytes})).collect::<Vec<_>>(),
    });
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

//! Baselines for the micro-benchmark, built in the same object as the real
//! program so both are measured with the same toolchain and in the same run.

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

use crate::packet;

/// Drops everything: the floor of XDP cost.
#[xdp]
pub fn baseline_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// Swaps the Ethernet addresses and bounces the frame: the classic XDP_TX
/// reflector.
#[xdp]
pub fn baseline_tx(ctx: XdpContext) -> u32 {
    let Some(h) = packet::load::<12>(&ctx, 0) else {
        return xdp_action::XDP_DROP;
    };
    let swapped = [
        h[6], h[7], h[8], h[9], h[10], h[11], h[0], h[1], h[2], h[3], h[4], h[5],
    ];
    match packet::store(&ctx, 0, &swapped) {
        Some(()) => xdp_action::XDP_TX,
        None => xdp_action::XDP_DROP,
    }
}

/// Passes everything. Attached to the far end of a veth pair so that frames
/// XDP_REDIRECTed into the pair are accepted (veth needs an XDP program on
/// the receiving peer).
#[xdp]
pub fn ferry_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

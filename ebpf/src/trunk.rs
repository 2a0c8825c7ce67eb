//! One-arm mode: when the AP side and the client side are the same
//! interface (one trunk port), that interface can run only one XDP program.
//! `ferry_trunk` sends 802.1Q frames in a client VLAN down the downstream
//! path and everything else up the upstream path; each path counts its own
//! verdicts exactly as its stand-alone program does.

use aya_ebpf::{macros::xdp, programs::XdpContext};
use ferry_ebpf::{abi::Reason, vlan};

use crate::{
    downstream::try_downstream,
    maps::{CLIENT_VLANS, verdict},
    packet,
    upstream::try_upstream,
};

/// One-arm XDP entry point.
#[xdp]
pub fn ferry_trunk(ctx: XdpContext) -> u32 {
    if is_client_vlan(&ctx) {
        verdict(try_downstream(&ctx), Reason::DownForwarded)
    } else {
        verdict(try_upstream(&ctx), Reason::Forwarded)
    }
}

/// An 802.1Q tag whose VLAN is served downstream.
#[inline(always)]
fn is_client_vlan(ctx: &XdpContext) -> bool {
    let Some(h) = packet::load::<{ vlan::TAGGED_HLEN - 2 }>(ctx, 0) else {
        return false;
    };
    if u16::from_be_bytes([h[12], h[13]]) != vlan::TPID_8021Q {
        return false;
    }
    let vid = vlan::vid(u16::from_be_bytes([h[14], h[15]]));
    matches!(CLIENT_VLANS.get(u32::from(vid)), Some(1))
}

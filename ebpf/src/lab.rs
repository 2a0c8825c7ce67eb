//! Lab helpers, not part of the data plane: TC programs that give a plain
//! interface 802.1Q behaviour on kernels built without VLAN devices
//! (CONFIG_VLAN_8021Q), so a namespace host can sit in a client VLAN.
//! Ingress: frames tagged with the lab VLAN lose their tag. Egress: every
//! frame gets it.

use aya_ebpf::{
    btf_maps::Array,
    helpers::{bpf_skb_vlan_pop, bpf_skb_vlan_push},
    macros::{btf_map, classifier},
    programs::TcContext,
};

/// The VLAN id to strip and add (slot 0; 0 = do nothing).
#[btf_map]
static LAB_VLAN: Array<u32, 1> = Array::new();

const TC_ACT_OK: i32 = 0;

#[inline(always)]
fn lab_vid() -> u32 {
    LAB_VLAN.get(0).copied().unwrap_or(0) & 0x0fff
}

/// TC ingress: strip the lab VLAN's tag (kept aside by the stack as
/// metadata), so the frame reaches the untagged interface's IP stack.
#[classifier]
pub fn lab_vlan_pop(ctx: TcContext) -> i32 {
    let vid = lab_vid();
    // SAFETY: reading context fields the verifier exposes to TC programs.
    let (present, tci) = unsafe { ((*ctx.skb.skb).vlan_present, (*ctx.skb.skb).vlan_tci) };
    if vid != 0 && present != 0 && tci & 0x0fff == vid {
        // SAFETY: helper on our own context.
        unsafe { bpf_skb_vlan_pop(ctx.skb.skb.cast()) };
    }
    TC_ACT_OK
}

/// TC egress: tag every frame with the lab VLAN.
#[classifier]
pub fn lab_vlan_push(ctx: TcContext) -> i32 {
    let vid = lab_vid();
    if vid != 0 {
        // SAFETY: helper on our own context; the TPID is network order.
        unsafe { bpf_skb_vlan_push(ctx.skb.skb.cast(), 0x8100u16.to_be(), vid as u16) };
    }
    TC_ACT_OK
}

//! ferry's XDP programs. Built for `bpfel-unknown-none` by `ferry-dataplane`'s
//! build script (aya-build) and embedded in the user-space binaries.
//!
//! On any other target this file is an empty `main`, so that
//! `cargo build --workspace` on the host stays green.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// 64-bit atomic add for the shared station counts (BPF has no CAS, so
// core::sync::atomic offers no fetch_add on this target).
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
// Verifier-visible bounds the optimiser cannot remove (see maps::mask63).
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(target_arch = "bpf")]
mod baseline;
#[cfg(target_arch = "bpf")]
mod downstream;
#[cfg(target_arch = "bpf")]
mod lab;
#[cfg(target_arch = "bpf")]
mod live;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod packet;
#[cfg(target_arch = "bpf")]
mod trunk;
#[cfg(target_arch = "bpf")]
mod upstream;

/// The object's licence, stated explicitly (aya-template does the same):
/// `bpf_fib_lookup` is a GPL-only helper, so the kernel must see a
/// GPL-compatible licence. ferry's own code is MIT OR Apache-2.0.
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path; this is never called.
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("ferry-xdp is an eBPF object: build it for bpfel-unknown-none");
}

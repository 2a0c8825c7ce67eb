//! ferry's XDP programs. Built for `bpfel-unknown-none` by `ferry-dataplane`'s
//! build script (aya-build) and embedded in the user-space binaries.
//!
//! On any other target this file is an empty `main`, so that
//! `cargo build --workspace` on the host stays green.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod baseline;
#[cfg(target_arch = "bpf")]
mod packet;
#[cfg(target_arch = "bpf")]
mod upstream;

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

//! Wire layouts and map ABI shared by ferry's XDP programs and user space.
//!
//! Every packet layout ferry touches is defined exactly once, here: field
//! offsets, bit masks and the small pure functions that decode a fixed-size
//! header array. The XDP program bounds-checks a packet pointer and hands the
//! bytes to these functions; the user-space reference model, the traffic
//! generator and the tests do the same on byte slices. Both sides therefore
//! agree on what each bit means, and the differential tests compare only the
//! decisions built on top.
//!
//! This crate is `no_std` so that it compiles for `bpfel-unknown-none`; the
//! `user` feature adds `aya::Pod` impls for the map types.
#![no_std]

#[cfg(test)]
extern crate std;

pub mod abi;
pub mod capwap;
pub mod dot11;
pub mod encap;
pub mod eth;
pub mod hint;
pub mod ipv4;
pub mod ipv6;
pub mod loadgen;
pub mod udp;
pub mod vlan;

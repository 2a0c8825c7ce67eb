//! The embedded eBPF object.

/// ferry's eBPF object (all XDP programs and maps), built by build.rs.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ferry-xdp"));

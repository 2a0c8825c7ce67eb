//! ferry's user-space data plane library: the embedded eBPF object, loading
//! and typed maps ([`datapath`]), the reference model of the packet
//! transform ([`model`]), packet construction ([`craft`]) and pcap replay
//! ([`replay`]).
pub mod batch;
pub mod capture;
pub mod counters;
pub mod craft;
pub mod datapath;
pub mod model;
pub mod netns;
pub mod object;
pub mod replay;
pub mod tables;

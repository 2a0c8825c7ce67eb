//! ferry's user-space data plane library: the embedded eBPF object, loading
//! and typed maps ([`datapath`]), the reference model of the packet
//! transform ([`model`]), packet construction ([`craft`]) and pcap replay
//! ([`replay`]).
/// Returns an [`error::Error::Invalid`] from the enclosing function.
macro_rules! bail {
    ($($t:tt)*) => {
        return Err($crate::error::Error::Invalid(format!($($t)*)))
    };
}

/// Returns an [`error::Error::Failed`] from the enclosing function.
macro_rules! fail {
    ($($t:tt)*) => {
        return Err($crate::error::Error::Failed(format!($($t)*)))
    };
}

pub mod batch;
pub mod capture;
pub mod counters;
pub mod craft;
pub mod datapath;
pub mod error;
pub mod model;
pub mod netns;
pub mod object;
pub mod replay;
pub mod tables;

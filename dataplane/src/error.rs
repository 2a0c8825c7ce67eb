//! The one error type of `ferry-dataplane`.
//!
//! Each variant keeps the error it came from as its `source`, so a caller
//! decides by kind, never by text: [`Error::os_error`] walks the source
//! chain down to the kernel's errno (EBUSY: the interface already has an
//! XDP program; EOPNOTSUPP: the driver has no native XDP). `Display` says
//! what was being done; the sources say why (`{:#}` through anyhow prints
//! both). Sources are boxed: aya's errors are large, and every `Result`
//! of this crate carries one.

use std::io;

/// What went wrong in the data plane library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Loading the eBPF object, or creating or opening its pinned maps.
    #[error("{what}")]
    Load {
        /// What was being done.
        what: String,
        /// aya's error.
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// Loading (verifier), attaching or running a program.
    #[error("{what}")]
    Program {
        /// What was being done.
        what: String,
        /// aya's error.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// Opening, updating or pinning a BPF link.
    #[error("{what}")]
    Link {
        /// What was being done.
        what: String,
        /// aya's error.
        #[source]
        source: Box<aya::programs::links::LinkError>,
    },
    /// Pinning an object on bpffs.
    #[error("{what}")]
    Pin {
        /// What was being done.
        what: String,
        /// aya's error.
        #[source]
        source: Box<aya::pin::PinError>,
    },
    /// A map operation.
    #[error("{what}")]
    Map {
        /// What was being done.
        what: String,
        /// aya's error.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// Writing the redirect egress map (a DEVMAP).
    #[error("{what}")]
    Egress {
        /// What was being done.
        what: String,
        /// aya's error.
        #[source]
        source: Box<aya::maps::xdp::XdpMapError>,
    },
    /// Reading or writing a capture file.
    #[error("{what}")]
    Capture {
        /// What was being done.
        what: String,
        /// pcap-file's error.
        #[source]
        source: Box<pcap_file::PcapError>,
    },
    /// A system call or a file or a command.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A program or map the eBPF object should have is missing, or has
    /// another type (a build mismatch).
    #[error("{0} missing from the eBPF object (or of another type)")]
    Missing(String),
    /// Input the data plane cannot take (too many tunnels, an id out of
    /// range, ...).
    #[error("{0}")]
    Invalid(String),
    /// The maps pinned in `dir` were written by a build with another map
    /// ABI (`found`; 0 for one from before the version was recorded).
    #[error(
        "the maps pinned in {} use map ABI version {found}, this ferry uses {}; \
         start with --replace to load fresh maps (forwarding stops briefly, learned stations are lost)",
        dir.display(),
        ferry_ebpf::abi::ABI_VERSION
    )]
    AbiMismatch {
        /// The pin directory.
        dir: std::path::PathBuf,
        /// The version found there.
        found: u32,
    },
    /// A helper command or a check that failed (the message says which).
    #[error("{0}")]
    Failed(String),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Invalid`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }

    /// The kernel's errno behind this error, if there is one: the first
    /// `io::Error` (or netlink error) in the source chain.
    pub fn os_error(&self) -> Option<i32> {
        os_error(self)
    }
}

/// The errno behind any error: walks `e`'s source chain to the first
/// `io::Error` or netlink error that carries one.
pub fn os_error(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<io::Error>()
            && let Some(n) = io.raw_os_error()
        {
            return Some(n);
        }
        if let Some(nl) = c.downcast_ref::<aya::programs::xdp::XdpError>() {
            let aya::programs::xdp::XdpError::NetlinkError(nl) = nl;
            if let Some(n) = nl.raw_os_error() {
                return Some(n);
            }
        }
        cur = c.source();
    }
    None
}

impl From<std::ffi::NulError> for Error {
    fn from(e: std::ffi::NulError) -> Self {
        Error::Invalid(format!("a name with a NUL byte: {e}"))
    }
}

/// Errors that [`Ctx`] can wrap with what was being done.
pub trait Wrap {
    /// `self` as the source of an [`Error`] about `what`.
    fn wrap(self, what: String) -> Error;
}

macro_rules! wraps {
    ($($ty:ty => $variant:ident),* $(,)?) => {$(
        impl Wrap for $ty {
            fn wrap(self, what: String) -> Error {
                Error::$variant { what, source: self.into() }
            }
        }
        impl From<$ty> for Error {
            fn from(source: $ty) -> Self {
                let what = source.to_string();
                Error::$variant { what, source: source.into() }
            }
        }
    )*};
}

wraps! {
    aya::EbpfError => Load,
    aya::programs::ProgramError => Program,
    aya::programs::links::LinkError => Link,
    aya::pin::PinError => Pin,
    aya::maps::MapError => Map,
    aya::maps::xdp::XdpMapError => Egress,
    pcap_file::PcapError => Capture,
    io::Error => Io,
}

/// Says what was being done when an operation failed (like anyhow's
/// `context`, but typed).
pub trait Ctx<T> {
    /// Wraps the error with `what`.
    fn ctx(self, what: &str) -> Result<T>;
    /// Wraps the error with what `f` says (computed only on failure).
    fn with_ctx(self, f: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Wrap> Ctx<T> for std::result::Result<T, E> {
    fn ctx(self, what: &str) -> Result<T> {
        self.map_err(|e| e.wrap(what.to_string()))
    }

    fn with_ctx(self, f: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| e.wrap(f()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_error_is_found_through_the_chain() {
        let e = io::Error::from_raw_os_error(libc::EBUSY).wrap("attaching".into());
        assert_eq!(e.os_error(), Some(libc::EBUSY));
        assert_eq!(e.to_string(), "attaching");
        let any = anyhow::Error::new(e).context("starting");
        assert_eq!(os_error(any.as_ref()), Some(libc::EBUSY));
        assert_eq!(Error::invalid("x").os_error(), None);
    }
}

//! Where a node's BPF objects are pinned, and removing them: one place for
//! the daemon, the tests and the benchmarks.
//!
//! `<pin root>/<node>/` holds the state maps (`abi::PINNED_MAPS`, by name)
//! and one BPF link per attached interface (`link_<iface>`). Unpinning a
//! link detaches its program (when no process holds it); unpinning the maps
//! frees them once no program uses them.

use std::{
    io,
    path::{Path, PathBuf},
};

/// Default pin root.
pub const DEFAULT_ROOT: &str = "/sys/fs/bpf/ferry";

/// The pin directory of node `node` under `root`.
pub fn dir(root: &Path, node: &str) -> PathBuf {
    root.join(node)
}

/// The link pin of interface `iface` in pin directory `dir`.
pub fn link(dir: &Path, iface: &str) -> PathBuf {
    dir.join(format!("link_{iface}"))
}

/// The link pins in `dir` other than `wanted` (interfaces a configuration
/// no longer names).
pub fn stale_links(dir: &Path, wanted: &[PathBuf]) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("link_"))
        .map(|e| e.path())
        .filter(|p| !wanted.contains(p))
        .collect()
}

/// Removes every pin in `dir` and `dir` itself; nothing to do when it does
/// not exist.
pub fn remove(dir: &Path) -> io::Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in rd {
        std::fs::remove_file(e?.path())?;
    }
    std::fs::remove_dir(dir)
}

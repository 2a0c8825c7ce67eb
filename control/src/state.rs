//! The state file (`<state dir>/<node>.json`, mode 0600: it holds Session
//! IDs): what the kernel maps cannot say. Tunnel ids by AP name, the table
//! generation, session bindings and the running table as structured data.
//! The same [`Saved`] value is what the HA pair will sync.
//!
//! Session bindings change with every NAT re-mapping, so they also go to a
//! small file of their own (`<node>.bindings.json`), written within a
//! second of a change: rewriting the whole state file at 26,001 tunnels
//! for every batch of bindings held the event loop long enough to raise
//! `ferry status`'s p99 from 11 to 52 ms under 400 flapping session
//! tunnels (`ferry-bench rebind`). A full save writes the bindings file
//! first, so it is never older than the state file, and [`read`] lays it
//! over the state file's bindings. After a restart over running maps, the
//! bindings the maps forward with win over both (`TableState::adopt`).
//!
//! With `[ha]`, a third small file (`<node>.revision.json`) keeps the
//! pair's table revision and the digest of the table it names
//! ([`crate::ha::revision`]).

use std::{
    collections::BTreeMap,
    io::{ErrorKind, Write as _},
    net::SocketAddr,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use ferry_ebpf::abi::ABI_VERSION;
use serde::{Deserialize, Serialize};

use crate::{runtime::Refused, tables::Saved};

/// The file's contents, as read.
#[derive(Deserialize)]
struct StateFile {
    /// The map ABI of the build that wrote it.
    abi_version: u32,
    #[serde(flatten)]
    saved: Saved,
}

/// The file's contents, as written: borrowed, so a save at 25,600 tunnels
/// neither copies the table nor holds the whole text in memory.
#[derive(Serialize)]
struct StateFileRef<'a> {
    abi_version: u32,
    #[serde(flatten)]
    saved: &'a Saved,
}

/// The state file of node `node` in `dir`.
pub fn path(dir: &Path, node: &str) -> PathBuf {
    dir.join(format!("{node}.json"))
}

/// The bindings file that goes with state file `file`.
pub fn bindings_path(file: &Path) -> PathBuf {
    file.with_extension("bindings.json")
}

/// The bindings file's contents, as read.
#[derive(Deserialize)]
struct BindingsFile {
    abi_version: u32,
    bound: BTreeMap<String, SocketAddr>,
}

/// The bindings file's contents, as written.
#[derive(Serialize)]
struct BindingsFileRef<'a> {
    abi_version: u32,
    bound: &'a BTreeMap<String, SocketAddr>,
}

/// Reads `file` and its bindings file: `None` when there is no state file.
pub fn read(file: &Path) -> Result<Option<Saved>> {
    let Some(mut saved) = read_state(file)? else {
        return Ok(None);
    };
    let b = bindings_path(file);
    if let Some(text) = read_text(&b)? {
        let f: BindingsFile = serde_json::from_str(&text).map_err(|e| {
            Refused(format!(
                "{} is not a ferry bindings file ({e}); nothing was changed. Remove it to start from the bindings in {} (session tunnels bind again at their next keepalive)",
                b.display(),
                file.display()
            ))
        })?;
        if f.abi_version == ABI_VERSION {
            saved.bound = f.bound;
        }
    }
    Ok(Some(saved))
}

/// The text of `file`; `None` when there is none.
fn read_text(file: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(file) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
    }
}

fn read_state(file: &Path) -> Result<Option<Saved>> {
    let Some(text) = read_text(file)? else {
        return Ok(None);
    };
    let s: StateFile = serde_json::from_str(&text).map_err(|e| {
        Refused(format!(
            "{} is not a ferry state file ({e}); nothing was changed. Move it away to adopt the running tables from the pinned maps, or start with --replace",
            file.display()
        ))
    })?;
    if s.abi_version != ABI_VERSION {
        return Err(Refused(format!(
            "{} was written for map ABI {} (this ferry: {ABI_VERSION}); start with --replace",
            file.display(),
            s.abi_version
        ))
        .into());
    }
    Ok(Some(s.saved))
}

/// Writes `saved` to `file`, its bindings file first (see the module
/// documentation).
pub fn write(file: &Path, saved: &Saved) -> Result<()> {
    write_bindings(file, &saved.bound)?;
    write_json(
        file,
        &StateFileRef {
            abi_version: ABI_VERSION,
            saved,
        },
    )
}

/// Writes the session bindings of state file `file` to its bindings file.
pub fn write_bindings(file: &Path, bound: &BTreeMap<String, SocketAddr>) -> Result<()> {
    write_json(
        &bindings_path(file),
        &BindingsFileRef {
            abi_version: ABI_VERSION,
            bound,
        },
    )
}

/// Removes state file `file`, its bindings file and its revision file
/// (a node that starts clean takes the peer's table).
pub fn remove(file: &Path) {
    let _ = std::fs::remove_file(bindings_path(file));
    let _ = std::fs::remove_file(revision_path(file));
    let _ = std::fs::remove_file(file);
}

/// The revision file that goes with state file `file` (with `[ha]`).
pub fn revision_path(file: &Path) -> PathBuf {
    file.with_extension("revision.json")
}

/// The pair's table revision as last run here, and the digest of the
/// table it names ([`crate::ha::revision`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevisionFile {
    /// The revision.
    pub revision: u64,
    /// The table's digest.
    pub digest: String,
}

/// Reads the revision file of state file `file`: `None` when there is
/// none, or when it cannot be read (logged): without it the node only
/// yields to the peer's table, which is safe.
pub fn read_revision(file: &Path) -> Option<RevisionFile> {
    let r = revision_path(file);
    let text = match read_text(&r) {
        Ok(t) => t?,
        Err(e) => {
            tracing::warn!("{e:#}: starting at table revision 0, the peer's table wins");
            return None;
        }
    };
    match serde_json::from_str(&text) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(
                "{} is not a ferry revision file ({e}): starting at table revision 0, the peer's table wins",
                r.display()
            );
            None
        }
    }
}

/// Writes the revision file of state file `file`.
pub fn write_revision(file: &Path, f: &RevisionFile) -> Result<()> {
    write_json(&revision_path(file), f)
}

/// Writes `body` to `file` atomically (a temporary file renamed over it),
/// readable by root only.
fn write_json(file: &Path, body: &impl Serialize) -> Result<()> {
    if let Some(d) = file.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let tmp = file.with_extension("json.tmp");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let mut w = std::io::BufWriter::new(f);
    serde_json::to_writer(&mut w, body)
        .map_err(std::io::Error::from)
        .and_then(|()| w.flush())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("renaming to {}", file.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn round_trip_private_and_versioned() {
        let dir = std::env::temp_dir().join(format!("ferry-state-{}", std::process::id()));
        let f = path(&dir, "n1");
        assert!(read(&f).unwrap().is_none());
        let mut s = Saved::default();
        s.ids.insert("ap1".into(), 3);
        s.generation = 7;
        write(&f, &s).unwrap();
        assert_eq!(read(&f).unwrap(), Some(s));
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(
            &f,
            r#"{"abi_version":1,"ids":{},"generation":1,"bound":{}}"#,
        )
        .unwrap();
        assert!(read(&f).unwrap_err().to_string().contains("--replace"));
        std::fs::write(&f, "{").unwrap();
        assert!(
            read(&f)
                .unwrap_err()
                .to_string()
                .contains("not a ferry state file")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Bindings saved on their own are what a restart reads; a full save
    /// writes them too; a broken bindings file is refused, not ignored.
    #[test]
    fn bindings_written_alone_are_laid_over_the_state_file() {
        let dir = std::env::temp_dir().join(format!("ferry-bindings-{}", std::process::id()));
        let f = path(&dir, "n1");
        let mut s = Saved::default();
        s.bound
            .insert("nat".into(), "198.18.1.20:4000".parse().unwrap());
        write(&f, &s).unwrap();
        assert_eq!(read(&f).unwrap(), Some(s.clone()));
        let moved: BTreeMap<String, SocketAddr> =
            [("nat".to_string(), "198.18.1.21:4001".parse().unwrap())].into();
        write_bindings(&f, &moved).unwrap();
        assert_eq!(read(&f).unwrap().unwrap().bound, moved);
        let b = bindings_path(&f);
        assert_eq!(b, dir.join("n1.bindings.json"));
        let mode = std::fs::metadata(&b).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        write(&f, &s).unwrap();
        assert_eq!(read(&f).unwrap(), Some(s), "a full save writes both");
        std::fs::write(&b, "{").unwrap();
        let e = read(&f).unwrap_err().to_string();
        assert!(e.contains("not a ferry bindings file"), "{e}");
        remove(&f);
        assert!(!b.exists() && !f.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! The state file (`<state dir>/<node>.json`, mode 0600: it holds Session
//! IDs): what the kernel maps cannot say. Tunnel ids by AP name, the table
//! generation, session bindings and the running table as structured data.
//! The same [`Saved`] value is what the HA pair will sync.

use std::{
    io::{ErrorKind, Write as _},
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

/// Reads `file`: `None` when there is none.
pub fn read(file: &Path) -> Result<Option<Saved>> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
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

/// Writes `saved` to `file` atomically (a temporary file renamed over it),
/// readable by root only.
pub fn write(file: &Path, saved: &Saved) -> Result<()> {
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
    let body = StateFileRef {
        abi_version: ABI_VERSION,
        saved,
    };
    serde_json::to_writer(&mut w, &body)
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
}

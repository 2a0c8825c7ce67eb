//! One `ferry run` per node: an exclusive `flock` on `<state dir>/<node>.lock`,
//! taken before anything else is touched (programs, maps, pins, the state
//! file, the admin socket) and held for the life of the process. The kernel
//! drops it when the process dies, however it dies, so a stale lock file
//! never blocks a restart.

use std::{
    fs::File,
    io::{Read as _, Seek as _, Write as _},
    os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

/// The held lock; dropping it (or exiting) releases it.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
    /// The lock file.
    pub path: PathBuf,
}

impl InstanceLock {
    /// Takes the lock of node `node` in `dir`, or says which process holds it.
    pub fn take(dir: &Path, node: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{node}.lock"));
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on a descriptor this function owns; no memory is
        // passed to the kernel.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                return Err(super::Refused(format!(
                    "node {node} is already run by ferry (pid {}, lock {}); this start changed nothing",
                    pid.trim(),
                    path.display()
                ))
                .into());
            }
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
        // Ours now: say who holds it.
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        Ok(Self { _file: file, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_the_lock_frees_on_drop() {
        let dir = std::env::temp_dir().join(format!("ferry-lock-{}", std::process::id()));
        let first = InstanceLock::take(&dir, "n1").unwrap();
        let e = InstanceLock::take(&dir, "n1").unwrap_err().to_string();
        assert!(e.contains("already run by ferry"), "{e}");
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        InstanceLock::take(&dir, "n2").unwrap();
        drop(first);
        InstanceLock::take(&dir, "n1").unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
}

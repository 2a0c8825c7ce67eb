//! A real `ferry run` for the control-process benchmarks: a namespace lab
//! ([`Bench`]) with a generated configuration, the daemon started in it,
//! driven through its admin socket, killed and unpinned on drop.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use ferry::api::{client, protocol::Request, views::Status};
use ferry_dataplane::netns::{Netns, veth};

/// The AC namespace (`fap0` at 198.18.0.1/24, `fcl0`), its peer namespace
/// (`p0`, `p1`) and a scratch directory for the configuration, state and
/// log, removed on drop unless `FERRY_BENCH_KEEP` is set.
pub struct Bench {
    /// The AC side, where `ferry run` runs.
    pub ns: Netns,
    /// The AP and client side.
    pub peer: Netns,
    /// Configuration, state, log, table files.
    pub dir: PathBuf,
    /// The node name.
    pub node: String,
    /// The admin socket.
    pub socket: PathBuf,
}

impl Bench {
    /// A fresh lab named after `tag`.
    pub fn new(tag: &str) -> Result<Self> {
        let ns = Netns::new(tag).context("creating the bench namespace (root?)")?;
        let peer = Netns::new(&format!("{tag}p"))?;
        veth(&ns, "fap0", &peer, "p0")?;
        veth(&ns, "fcl0", &peer, "p1")?;
        ns.exec(&["ip", "addr", "add", "198.18.0.1/24", "dev", "fap0"])?;
        let dir = std::env::temp_dir().join(format!("ferry-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            ns,
            peer,
            socket: dir.join("admin.sock"),
            node: format!("{tag}{}", std::process::id()),
            dir,
        })
    }

    /// Writes the node's configuration: its node, interfaces, admin socket
    /// and no metrics listener, then `rest` (sections and tunnels).
    pub fn configure(&self, forwarding: &str, rest: &str) -> Result<PathBuf> {
        let config = self.dir.join("ferry.toml");
        std::fs::write(
            &config,
            format!(
                "[node]\nname = \"{}\"\naddresses = [\"198.18.0.1\"]\n[interfaces]\nap_side = \"fap0\"\nclient_side = \"fcl0\"\n\
[forwarding]\n{forwarding}client_vlans = [200]\n[admin]\nsocket = \"{}\"\n[metrics]\nlisten = \"\"\n{rest}",
                self.node,
                self.socket.display()
            ),
        )?;
        Ok(config)
    }

    /// Starts `ferry` with configuration `config` in the AC namespace.
    pub fn start(&self, ferry: &Path, config: &Path) -> Result<Daemon> {
        Daemon::start(&self.ns, ferry, config, &self.node, &self.socket, &self.dir)
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        if std::env::var_os("FERRY_BENCH_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A running `ferry run` (killed and unpinned on drop).
pub struct Daemon {
    child: Child,
    /// Its admin socket.
    pub socket: PathBuf,
    /// Its pin directory.
    pub pin_dir: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = ferry::pins::remove(&self.pin_dir);
    }
}

impl Daemon {
    /// Starts `ferry` in `ns` with configuration `config` (node `node`,
    /// admin socket `socket`), state and log in `dir`, and waits until it
    /// answers `status`.
    pub fn start(
        ns: &Netns,
        ferry: &Path,
        config: &Path,
        node: &str,
        socket: &Path,
        dir: &Path,
    ) -> Result<Self> {
        let pin_root = PathBuf::from("/sys/fs/bpf/ferry-bench");
        remove_stale_pins(&pin_root);
        let log = dir.join("ferry.log");
        let mut cmd = ns.command(ferry)?;
        cmd.args(["run", "--config"])
            .arg(config)
            .arg("--pin-root")
            .arg(&pin_root)
            .arg("--state-dir")
            .arg(dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(File::create(&log)?);
        let d = Self {
            child: cmd
                .spawn()
                .with_context(|| format!("starting {}", ferry.display()))?,
            socket: socket.to_path_buf(),
            pin_dir: ferry::pins::dir(&pin_root, node),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while d.call::<Status>(Request::Status).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "ferry run did not come up: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(d)
    }

    /// One admin request and its answer.
    pub fn call<T: serde::de::DeserializeOwned>(&self, r: Request) -> Result<T> {
        Ok(client::call(&self.socket, r, Duration::from_secs(600))?)
    }

    /// The data plane ids of tunnels `ap0..ap{n-1}`, in that order, as
    /// `ferry tunnels` lists them; an error if any is missing.
    pub fn tunnel_ids(&self, n: u32) -> Result<Vec<u32>> {
        let listing: ferry::api::views::Tunnels = self.call(Request::Tunnels)?;
        let ids: std::collections::HashMap<String, u32> = listing
            .tunnels
            .into_iter()
            .filter_map(|t| Some((t.ap, t.id?)))
            .collect();
        (0..n)
            .map(|i| ids.get(&format!("ap{i}")).copied())
            .collect::<Option<Vec<u32>>>()
            .context("ferry does not list every tunnel of the table")
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Removes the pins of benchmark nodes whose process is gone. Every node
/// name here carries the creating process's id (`live<pid>x<n>`,
/// `<tag><pid>`); a run killed before its cleanup left its pinned links
/// and maps behind, and with them its programs and tables (a million
/// stations' worth of kernel memory, found still loaded hours later).
fn remove_stale_pins(pin_root: &Path) {
    let Ok(entries) = std::fs::read_dir(pin_root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid: String = name
            .chars()
            .skip_while(|c| !c.is_ascii_digit())
            .take_while(char::is_ascii_digit)
            .collect();
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match ferry::pins::remove(&e.path()) {
            Ok(()) => eprintln!(
                "removed {} (left by benchmark process {pid}, which is gone)",
                e.path().display()
            ),
            Err(err) => eprintln!("removing stale pins {}: {err:#}", e.path().display()),
        }
    }
}

/// A `VmRSS:`/`VmHWM:`-style field of process `pid`, KiB.
pub fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `n` address-declared tunnels `ap0..` in 198.19.0.0/16, every
/// `backup_every`th one in standby.
pub fn tunnel_table(names: impl Iterator<Item = u32>, backup_every: Option<u32>) -> String {
    let mut s = String::new();
    for i in names {
        let role = match backup_every {
            Some(n) if i % n == 0 => "backup",
            _ => "master",
        };
        s.push_str(&format!(
            "[[tunnel]]\nap = \"ap{i}\"\naddress = \"198.19.{}.{}\"\nrole = \"{role}\"\n",
            i / 200,
            i % 200 + 1
        ));
    }
    s
}

/// The median of `v` (sorted in place).
pub fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn only_the_pins_of_gone_processes_are_removed() {
        let root = std::env::temp_dir().join(format!("ferry-stale-pins-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        // pid_max is at most 2^22: this process cannot exist.
        let gone = root.join("live4294967290x0");
        let mine = root.join(format!("live{}x0", std::process::id()));
        let other = root.join("not-a-bench-node");
        for d in [&gone, &mine, &other] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("SETTINGS"), b"").unwrap();
        }
        remove_stale_pins(&root);
        assert!(!gone.exists());
        assert!(mine.join("SETTINGS").exists());
        assert!(other.join("SETTINGS").exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}

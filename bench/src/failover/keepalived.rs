//! The comparator: keepalived (Debian's 2.2.7) as a VRRPv3 pair on the
//! same namespaces and peer path as ferry's pair, at ferry's heartbeat
//! interval as its advert interval, priorities 200 and 100 as in the lab.
//! Each run starts both, waits for node 1 master and node 2 backup, kills
//! node 1's keepalived with SIGKILL (its VRRP process first, so no
//! priority-0 advert goes out: a death, not a shutdown) and times until
//! node 2 reports MASTER on its `notify_fifo`, which keepalived writes
//! once it has taken over (addresses set, gratuitous ARPs queued). The
//! kill falls at a random point of the advert cycle (seeded, so runs
//! repeat), as the kills of ferry's master do.

use std::{
    fs::File,
    io::{BufRead as _, BufReader, Write as _},
    path::PathBuf,
    process::{Child, Stdio},
    sync::mpsc::{Receiver, channel},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::{Summary, pair::Pair};

/// The pair's virtual address (on the first peer path's subnet).
const VIP: &str = "198.18.9.100/32";

/// What the comparator measured.
#[derive(Debug, Serialize)]
pub struct Keepalived {
    /// `keepalived --version`'s first line.
    pub version: String,
    /// The advert interval, ms (ferry's heartbeat interval).
    pub advert_ms: u64,
    /// SIGKILL to the backup's MASTER notification, ms.
    pub takeover_ms: Summary,
}

/// One node's keepalived: its process, files and notifications.
struct Instance {
    child: Child,
    dir: PathBuf,
    fifo: PathBuf,
    lines: Receiver<(Instant, String)>,
    killed: bool,
}

impl Instance {
    /// Starts keepalived in node `i`'s namespace.
    fn start(p: &Pair, i: usize, advert_ms: u64, run: usize) -> Result<Self> {
        let node = &p.nodes[i];
        let dir = node.dir.join(format!("keepalived{run}"));
        std::fs::create_dir_all(&dir)?;
        let fifo = dir.join("notify.fifo");
        let c = std::ffi::CString::new(fifo.display().to_string())?;
        // SAFETY: a valid C path.
        if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
            return Err(std::io::Error::last_os_error()).context("mkfifo");
        }
        // Read and write: opening never blocks and the reader never sees
        // end of file while keepalived reopens it.
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .context("opening the notify fifo")?;
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(f).lines() {
                let Ok(l) = l else { return };
                if l == "STOP" || tx.send((Instant::now(), l)).is_err() {
                    return;
                }
            }
        });
        let (me, peer, ifname, prio) = if i == 0 {
            (1, 2, "h1a", 200)
        } else {
            (2, 1, "h2a", 100)
        };
        let conf = dir.join("keepalived.conf");
        std::fs::write(
            &conf,
            format!(
                "global_defs {{\n  router_id ferrybench{me}\n  notify_fifo {}\n  vrrp_version 3\n}}\n\
vrrp_instance VI_1 {{\n  state BACKUP\n  interface {ifname}\n  virtual_router_id 51\n  priority {prio}\n\
  advert_int {:.2}\n  unicast_src_ip 198.18.9.{me}\n  unicast_peer {{\n    198.18.9.{peer}\n  }}\n\
  virtual_ipaddress {{\n    {VIP}\n  }}\n}}\n",
                fifo.display(),
                advert_ms as f64 / 1000.0
            ),
        )?;
        let log = File::create(dir.join("keepalived.log"))?;
        let mut cmd = node.ns.command("keepalived")?;
        // No respawn: the parent must not restart the VRRP process
        // between the two kills.
        cmd.args([
            "--dont-fork",
            "--dont-respawn",
            "--log-console",
            "--vrrp",
            "-f",
        ])
        .arg(&conf)
        .arg("-p")
        .arg(dir.join("keepalived.pid"))
        .arg("-r")
        .arg(dir.join("vrrp.pid"))
        .arg("-c")
        .arg(dir.join("checkers.pid"))
        .stdout(Stdio::null())
        .stderr(log);
        let child = cmd.spawn().context("starting keepalived")?;
        Ok(Self {
            child,
            dir,
            fifo,
            lines,
            killed: false,
        })
    }

    /// Waits until the instance reports `state` at or after `after`;
    /// when it did.
    fn wait_state(&self, state: &str, after: Instant, secs: u64) -> Result<Instant> {
        let end = Instant::now() + Duration::from_secs(secs);
        let want = format!("INSTANCE \"VI_1\" {state} ");
        loop {
            let left = end
                .checked_duration_since(Instant::now())
                .with_context(|| format!("keepalived never reported {state}:\n{}", self.log()))?;
            if let Ok((at, l)) = self.lines.recv_timeout(left)
                && at >= after
                && l.starts_with(&want)
            {
                return Ok(at);
            }
        }
    }

    /// The state last reported within `quiet` of silence (a backup may
    /// be master for a moment before it hears the master).
    fn settled(&self, quiet: Duration) -> Option<String> {
        let mut last = None;
        while let Ok((_, l)) = self.lines.recv_timeout(quiet) {
            last = l.split_whitespace().nth(2).map(str::to_string);
        }
        last
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("keepalived.log")).unwrap_or_default()
    }

    /// SIGKILL to the VRRP process, then the parent; once (the VRRP
    /// process's pid could belong to another process afterwards).
    fn kill9(&mut self) {
        if std::mem::replace(&mut self.killed, true) {
            return;
        }
        let vrrp = std::fs::read_to_string(self.dir.join("vrrp.pid")).unwrap_or_default();
        if let Ok(pid) = vrrp.trim().parse::<i32>() {
            // SAFETY: signalling a process keepalived started for us.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill9();
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&self.fifo) {
            let _ = f.write_all(b"STOP\n");
        }
    }
}

/// keepalived's version line, or why it cannot run.
fn version() -> Result<String> {
    let o = std::process::Command::new("keepalived")
        .arg("--version")
        .output()
        .context("keepalived is not installed (deploy/bootstrap.sh installs it)")?;
    let text = String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
    text.lines()
        .next()
        .map(str::to_string)
        .context("keepalived --version printed nothing")
}

/// `runs` kills of keepalived's master on `p`'s namespaces (ferry stopped).
pub fn run(p: &Pair, runs: usize, advert_ms: u64, progress: &impl Fn(&str)) -> Result<Keepalived> {
    let version = version()?;
    let mut ms = Vec::new();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for run in 0..runs {
        let mut a = Instance::start(p, 0, advert_ms, run)?;
        let b = Instance::start(p, 1, advert_ms, run)?;
        let started = Instant::now();
        a.wait_state("MASTER", started, 10)?;
        b.wait_state("BACKUP", started, 10)?;
        let quiet = Duration::from_millis(500);
        let (sa, sb) = (a.settled(quiet), b.settled(quiet));
        if sa.is_some_and(|s| s != "MASTER") || sb.is_some_and(|s| s != "BACKUP") {
            bail!("keepalived run {run}: node 1 and node 2 did not settle as master and backup");
        }
        // The kill lands anywhere in the advert cycle: settling ends a
        // whole number of adverts after the last transition otherwise.
        std::thread::sleep(Duration::from_micros(rng.random_range(0..advert_ms * 1000)));
        let t0 = Instant::now();
        a.kill9();
        let at = b.wait_state("MASTER", t0, 5)?;
        ms.push((at - t0).as_secs_f64() * 1e3);
        progress(&format!(
            "keepalived run {}/{runs}: takeover {:.1} ms",
            run + 1,
            ms[run]
        ));
        let dirs = [a.dir.clone(), b.dir.clone()];
        drop((a, b));
        for (i, ifname) in [(0, "h1a"), (1, "h2a")] {
            // SIGKILL left the virtual address behind; the next run starts
            // clean.
            let _ = p.nodes[i]
                .ns
                .exec(&["ip", "addr", "del", VIP, "dev", ifname]);
            let _ = std::fs::remove_dir_all(&dirs[i]);
        }
    }
    Ok(Keepalived {
        version,
        advert_ms,
        takeover_ms: Summary::of(&mut ms),
    })
}

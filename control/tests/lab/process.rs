//! One `ferry run` of a lab: the process, its admin socket and log, the
//! CLI against it and its metrics page. Shared by the one-node lab and the
//! HA pair's.

use std::{
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use ferry_dataplane::netns::Netns;
use serde_json::Value;

/// The `ferry` binary: cargo's for an integration test of the `ferry`
/// package; otherwise (`ferry-bench failover`, which shares the HA lab)
/// `FERRY_BIN`, else the `ferry` next to the running program.
pub fn ferry_exe() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_ferry") {
        return p.into();
    }
    if let Some(p) = std::env::var_os("FERRY_BIN") {
        return p.into();
    }
    let me = std::env::current_exe().unwrap();
    me.with_file_name("ferry")
}

/// A lab's `ferry run`.
pub struct Ferry {
    child: Mutex<Option<Child>>,
    /// Its admin socket.
    pub socket: PathBuf,
    /// Its log (stderr).
    pub log_path: PathBuf,
}

impl Ferry {
    /// Not started yet.
    pub fn new(socket: PathBuf, log_path: PathBuf) -> Self {
        Self {
            child: Mutex::new(None),
            socket,
            log_path,
        }
    }

    /// The process, if running.
    pub fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spawns `cmd` (a `ferry run`), logging to a fresh log file, and
    /// waits up to 30 s for its admin socket to answer.
    pub fn start(&self, mut cmd: Command) {
        assert!(self.child().is_none(), "ferry already running");
        let log = std::fs::File::create(&self.log_path).unwrap();
        let _ = std::fs::remove_file(&self.socket);
        cmd.env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        *self.child() = Some(cmd.spawn().expect("spawn ferry run"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.socket.exists() && self.try_ferry(&["status"]).status.success() {
                return;
            }
            let exited = self
                .child()
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(st) = exited {
                panic!("ferry run exited with {st}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "ferry run not ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills ferry with SIGKILL (no cleanup of any kind).
    pub fn kill9(&self) {
        if let Some(mut c) = self.child().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops ferry with SIGTERM and waits for it.
    pub fn stop(&self) -> std::process::ExitStatus {
        let mut c = self.child().take().expect("ferry running");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        c.wait().unwrap()
    }

    /// Sends a signal to the running ferry.
    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid() as i32, sig) };
    }

    /// The running ferry's pid.
    pub fn pid(&self) -> u32 {
        self.child().as_ref().expect("ferry running").id()
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Runs a `ferry` CLI subcommand against this ferry.
    pub fn try_ferry(&self, args: &[&str]) -> Output {
        Command::new(ferry_exe())
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .output()
            .unwrap()
    }

    /// Runs a CLI subcommand that must succeed; returns stdout.
    pub fn ferry(&self, args: &[&str]) -> String {
        let o = self.try_ferry(args);
        assert!(
            o.status.success(),
            "ferry {args:?} failed: {}\nlog:\n{}",
            String::from_utf8_lossy(&o.stderr),
            self.log()
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// A CLI subcommand's `--json` output.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ferry(&a)).unwrap()
    }

    /// AP names in the live table, sorted.
    pub fn aps(&self) -> Vec<String> {
        let mut v: Vec<String> = self.json(&["tunnels"])["tunnels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["ap"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    }
}

/// The metrics page of the ferry in `ns` (default listener
/// 127.0.0.1:9847), scraped as Prometheus does, status line included.
pub fn scrape(ns: &Netns) -> String {
    ns.enter(|| {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect("127.0.0.1:9847")?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut t = String::new();
        s.read_to_string(&mut t)?;
        Ok::<_, anyhow::Error>(t)
    })
    .unwrap()
}

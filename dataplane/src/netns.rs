//! Network namespaces and veth links for tests and the lab.
//!
//! Every namespace gets a unique name (`ferry-<tag>-<pid>-<n>`) so tests can
//! run in parallel, and is deleted on drop, panics included. Configuration
//! goes through `ip` from iproute2; code that must run inside a namespace
//! (attaching XDP, opening packet sockets) runs on a scoped thread that has
//! `setns`-ed into it, so the calling thread never changes namespace.

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use crate::error::{Ctx as _, Error, Result, Wrap as _};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace: one this process made, deleted when dropped, or
/// one it only uses ([`Netns::existing`], [`Netns::current`]).
#[derive(Debug)]
pub struct Netns {
    name: String,
    /// What `setns` opens.
    path: String,
    /// Made here: deleted on drop.
    owned: bool,
}

/// Runs `ip` with `args`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .ctx("running ip (is iproute2 installed?)")?;
    if !out.status.success() {
        fail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Netns {
    /// Creates a fresh namespace whose name contains `tag`, with loopback up
    /// and IPv6 disabled (no router solicitations or DAD traffic in captures).
    pub fn new(tag: &str) -> Result<Self> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("ferry-{tag}-{}-{n}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = Self {
            path: format!("/var/run/netns/{name}"),
            name,
            owned: true,
        };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        for key in ["all", "default"] {
            ns.exec(&[
                "sysctl",
                "-q",
                "-w",
                &format!("net.ipv6.conf.{key}.disable_ipv6=1"),
            ])?;
        }
        Ok(ns)
    }

    /// The named namespace `name` (`ip netns add`), which stays when dropped.
    pub fn existing(name: &str) -> Result<Self> {
        let path = format!("/var/run/netns/{name}");
        if name.contains('/') || !std::path::Path::new(&path).exists() {
            fail!("no network namespace {name} (ip netns list)");
        }
        Ok(Self {
            name: name.to_string(),
            path,
            owned: false,
        })
    }

    /// The namespace this process started in (its main thread's).
    pub fn current() -> Self {
        Self {
            name: "(this namespace)".into(),
            path: format!("/proc/{}/ns/net", std::process::id()),
            owned: false,
        }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs a command inside the namespace, failing with its stderr.
    pub fn exec(&self, cmd: &[&str]) -> Result<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()
            .with_ctx(|| format!("running {} in {}", cmd.join(" "), self.name))?;
        if !out.status.success() {
            fail!(
                "{} in {} failed: {}",
                cmd.join(" "),
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A command that runs `program` inside this namespace: the child
    /// enters it with `setns` between fork and exec, and nothing else, so
    /// unlike `ip netns exec` it keeps the caller's mount namespace and sees
    /// the host's bpffs (pins survive the child, as in production). This is
    /// how the tests, the lab and the benchmarks start `ferry run`.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
        use std::os::unix::process::CommandExt as _;
        let path = &self.path;
        let ns = File::open(path).with_ctx(|| format!("opening {path}"))?;
        let mut cmd = Command::new(program);
        // SAFETY: the closure only calls setns(2), which is async-signal-safe,
        // on a descriptor the closure owns (moved in, alive until exec).
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(cmd)
    }

    /// Runs `f` on a thread that has entered this namespace.
    /// `f`'s error type is the caller's (any that an [`Error`] converts
    /// into), so test code can use `anyhow` inside.
    pub fn enter<T: Send, E: From<Error> + Send>(
        &self,
        f: impl FnOnce() -> Result<T, E> + Send,
    ) -> Result<T, E> {
        let path = &self.path;
        std::thread::scope(|s| {
            s.spawn(|| {
                let fd = File::open(path).with_ctx(|| format!("opening {path}"))?;
                // SAFETY: setns on a namespace fd we own; affects this thread only.
                if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error().wrap("setns".into()).into());
                }
                f()
            })
            .join()
            .map_err(|_| Error::Failed(format!("thread in namespace {} panicked", self.name)))?
        })
    }

    /// Index of interface `ifname` in this namespace.
    pub fn ifindex(&self, ifname: &str) -> Result<u32> {
        let name = ifname.to_string();
        self.enter(move || {
            let c = std::ffi::CString::new(name.clone())?;
            // SAFETY: valid NUL-terminated string.
            let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
            if i == 0 {
                fail!("no interface {name}");
            }
            Ok(i)
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        // Deleting the namespace destroys its veths (and their peers).
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Creates a veth pair: `a` in namespace `na`, `b` in namespace `nb`, both up.
pub fn veth(na: &Netns, a: &str, nb: &Netns, b: &str) -> Result<()> {
    na.exec(&[
        "ip",
        "link",
        "add",
        a,
        "type",
        "veth",
        "peer",
        "name",
        b,
        "netns",
        nb.name(),
    ])?;
    na.exec(&["ip", "link", "set", a, "up"])?;
    nb.exec(&["ip", "link", "set", b, "up"])?;
    Ok(())
}

impl Netns {
    /// MAC address of `ifname` in this namespace.
    pub fn mac(&self, ifname: &str) -> Result<[u8; 6]> {
        let s = self.exec(&["cat", &format!("/sys/class/net/{ifname}/address")])?;
        crate::tables::parse_mac(s.trim())
            .ok_or_else(|| Error::Failed(format!("bad MAC {s:?} for {ifname}")))
    }

    /// Makes `mac` the permanent neighbour entry of `ip` on `ifname` (added
    /// or replaced), so nothing in a lab ever has to ARP.
    pub fn set_neighbour(&self, ifname: &str, ip: &str, mac: &[u8; 6]) -> Result<()> {
        let mac = crate::tables::format_mac(mac);
        self.exec(&[
            "ip",
            "neigh",
            "replace",
            ip,
            "lladdr",
            &mac,
            "dev",
            ifname,
            "nud",
            "permanent",
        ])
        .map(|_| ())
    }
}

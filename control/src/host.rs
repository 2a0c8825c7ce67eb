//! What `ferry run` needs from the host: the interfaces, IPv4 forwarding
//! for FIB lookups, the memlock limit, a bpffs shared with the host, and
//! the allocator settings.

use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use ferry_dataplane::error::os_error;
use tracing::{info, warn};

/// How `ferry run` attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) XDP; falls back to generic with a loud warning when
    /// the driver has no native XDP.
    Driver,
    /// Generic (skb) XDP, asked for explicitly.
    Skb,
}

/// Whether `e` (anywhere in its chain) carries errno `n`.
pub fn is_errno(e: &anyhow::Error, n: i32) -> bool {
    e.chain().any(|c| os_error(c) == Some(n))
}

/// The index of interface `name` in this network namespace.
pub fn ifindex(name: &str) -> Result<u32> {
    ferry_dataplane::datapath::ifindex(name)
        .ok_or_else(|| anyhow!("no interface {name:?} in this network namespace"))
}

/// bpf_fib_lookup answers only when forwarding is on for the AP-side
/// interface (see README); turn it on and say so.
pub fn enable_forwarding(iface: &str) {
    let p = format!("/proc/sys/net/ipv4/conf/{iface}/forwarding");
    match std::fs::read_to_string(&p) {
        Ok(v) if v.trim() == "1" => {}
        _ => match std::fs::write(&p, "1") {
            Ok(()) => info!(
                iface,
                "enabled IPv4 forwarding (needed for bpf_fib_lookup next hops)"
            ),
            Err(e) => warn!(
                iface,
                "cannot enable IPv4 forwarding ({e}); downstream next hops will come only from next_hop_mac"
            ),
        },
    }
}

/// Raises RLIMIT_MEMLOCK (needed for BPF maps before Linux 5.11).
pub fn raise_memlock() {
    let r = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the valid struct `r` and nothing else.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &r) } != 0 {
        // Kernels from 5.11 charge BPF memory to the memory cgroup, not to
        // this limit, so failing here matters only on older kernels.
        tracing::debug!(
            "RLIMIT_MEMLOCK not raised ({}); fine on kernels from 5.11",
            std::io::Error::last_os_error()
        );
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit: admin and metrics
/// connections are capped well below it, and an exhausted fd table must
/// not be what stops an operator's command.
pub fn raise_nofile() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the valid struct `r`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// Makes sure `root` is on a bpffs, mounting one on /sys/fs/bpf when that
/// standard place has none (as on a fresh boot).
pub fn ensure_bpffs(root: &Path) -> Result<()> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let base = root
        .ancestors()
        .find(|p| p.exists())
        .ok_or_else(|| anyhow!("no existing parent of {}", root.display()))?;
    let c = std::ffi::CString::new(base.as_os_str().as_encoded_bytes())?;
    // SAFETY: an all-zero statfs is a valid value of this plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` is a valid out-parameter.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        bail!(
            "statfs {}: {}",
            base.display(),
            std::io::Error::last_os_error()
        );
    }
    if st.f_type as i64 != BPF_FS_MAGIC && base == Path::new("/sys/fs/bpf") {
        let src = std::ffi::CString::new("bpf")?;
        // SAFETY: mount(2) with valid NUL-terminated strings and no data.
        let r = unsafe { libc::mount(src.as_ptr(), c.as_ptr(), src.as_ptr(), 0, std::ptr::null()) };
        if r == 0 {
            info!("mounted bpffs on /sys/fs/bpf");
            return std::fs::create_dir_all(root)
                .with_context(|| format!("creating {}", root.display()));
        }
    }
    if st.f_type as i64 != BPF_FS_MAGIC {
        bail!(
            "{} is not on a bpffs; mount one with `mount -t bpf bpf /sys/fs/bpf` (deploy/bootstrap.sh does)",
            base.display()
        );
    }
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))
}

/// Refuses (unless `allow_private`) a pin root whose bpffs this process
/// does not share with the host: under `ip netns exec` ferry runs in a
/// private mount namespace with its own /sys, so the pins it makes vanish
/// when it exits, the programs detach, and no later start can adopt them.
///
/// Two tests, the first that can be made: in another mount namespace than
/// PID 1, the pin root's nearest existing directory must be the same
/// filesystem as PID 1 sees at that path; when PID 1 cannot be inspected
/// (a container without that privilege), /sys must not be iproute2's
/// private sysfs (mounted with the network namespace's name as source).
pub fn check_shared_bpffs(root: &Path, allow_private: bool) -> Result<()> {
    if allow_private {
        return Ok(());
    }
    let ns = |p: &str| std::fs::read_link(p).ok();
    let netns = match (ns("/proc/self/ns/mnt"), ns("/proc/1/ns/mnt")) {
        (Some(a), Some(b)) if a == b => return Ok(()),
        (Some(_), Some(_)) => {
            if shares_init_fs(root) {
                return Ok(());
            }
            None
        }
        _ => match netns_exec_sys() {
            Some(name) => Some(name),
            None => return Ok(()),
        },
    };
    Err(crate::runtime::Refused(format!(
        "{} is not the host's bpffs: ferry runs in a private mount namespace (as under \
         `ip netns exec`), where pins vanish when ferry exits, the programs detach and no \
         restart can adopt them. Enter only the network namespace: \
         `nsenter --net=/run/netns/{} ferry run ...`; or pass --private-bpffs to accept \
         losing hitless restarts",
        root.display(),
        netns.as_deref().unwrap_or("NAME")
    ))
    .into())
}

/// Whether the nearest existing directory of `root` is the filesystem PID
/// 1 sees at that path (true when that cannot be read).
fn shares_init_fs(root: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Some(base) = root.ancestors().find(|p| p.exists()) else {
        return true;
    };
    let host_view = Path::new("/proc/1/root").join(base.strip_prefix("/").unwrap_or(base));
    match (std::fs::metadata(base), std::fs::metadata(host_view)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev(),
        _ => true,
    }
}

/// The network namespace whose name is the source of the sysfs on /sys:
/// how `ip netns exec` mounts its private /sys.
fn netns_exec_sys() -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // The last mount on /sys is the visible one.
    let line = info
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some("/sys"))?;
    let mut tail = line.split(" - ").nth(1)?.split(' ');
    let (fstype, source) = (tail.next()?, tail.next()?);
    let named = fstype == "sysfs"
        && !source.is_empty()
        && !source.contains('/')
        && Path::new("/run/netns").join(source).exists();
    named.then(|| source.to_string())
}

/// Big, short-lived buffers (a swap request carries a whole table) get
/// their own mappings and go back to the kernel when freed, instead of
/// glibc raising its mmap threshold and keeping them in the heap (measured:
/// the peak resident size of a 25,600-tunnel swap, bench/RESULTS.md).
pub fn tune_allocator() {
    // SAFETY: mallopt only sets an allocator parameter.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}

/// Returns free heap pages to the kernel (glibc).
pub fn trim_heap() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

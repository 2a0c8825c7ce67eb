//! What `ferry run` needs from the host: the XDP attachments (with the
//! generic-mode fallback), the interfaces, IPv4 forwarding for FIB lookups,
//! the memlock limit, bpffs, and the allocator settings.

use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use aya::programs::XdpMode;
use ferry_dataplane::{datapath::Datapath, error::os_error};
use ferry_ebpf::abi;
use tracing::{info, warn};

use crate::{api::views::Attachment, config::Config, pins};

/// How `ferry run` attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) XDP; falls back to generic with a loud warning when
    /// the driver has no native XDP.
    Driver,
    /// Generic (skb) XDP, asked for explicitly.
    Skb,
}

/// Attaches the programs `config` needs through links pinned in `pin_dir`
/// (replacing the program inside an existing link), and detaches links of
/// interfaces the configuration no longer names.
pub fn attach(
    dp: &mut Datapath,
    config: &Config,
    pin_dir: &Path,
    mode: AttachMode,
) -> Result<Vec<Attachment>> {
    let plan: Vec<(&str, &'static str)> = if config.one_arm() {
        vec![(config.ap_side.as_str(), abi::PROG_TRUNK)]
    } else {
        vec![
            (config.ap_side.as_str(), abi::PROG_UPSTREAM),
            (config.client_side.as_str(), abi::PROG_DOWNSTREAM),
        ]
    };
    let wanted: Vec<_> = plan.iter().map(|(i, _)| pins::link(pin_dir, i)).collect();
    for p in pins::stale_links(pin_dir, &wanted) {
        warn!(pin = %p.display(), "detaching a program from an interface the configuration no longer names");
        let _ = std::fs::remove_file(&p);
    }
    let mut out = Vec::new();
    for ((iface, prog), pin) in plan.into_iter().zip(wanted) {
        let (adopted, m) = match mode {
            AttachMode::Skb => (dp.attach_pinned(prog, iface, XdpMode::Skb, &pin)?, "skb"),
            AttachMode::Driver => match dp.attach_pinned(prog, iface, XdpMode::Driver, &pin) {
                Ok(a) => (a, "driver"),
                Err(e) if e.os_error() == Some(libc::EOPNOTSUPP) => {
                    warn!(
                        iface,
                        "!!! the driver of {iface} has no native XDP: falling back to GENERIC (skb) mode, \
                         which is much slower; use --xdp-mode skb to accept this explicitly !!!"
                    );
                    (
                        dp.attach_pinned(prog, iface, XdpMode::Skb, &pin)?,
                        "skb (fallback)",
                    )
                }
                Err(e) if e.os_error() == Some(libc::EBUSY) => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "{iface} already has an XDP program that is not this node's \
                         (another ferry node, or another tool?); see `ip link show {iface}`"
                    )));
                }
                Err(e) => return Err(e.into()),
            },
        };
        info!(
            iface,
            program = prog,
            mode = m,
            adopted_link = adopted,
            "attached"
        );
        out.push(Attachment {
            iface: iface.to_string(),
            program: prog.to_string(),
            mode: m.to_string(),
            adopted_link: adopted,
        });
    }
    Ok(out)
}

/// Whether `e` (anywhere in its chain) carries errno `n`.
pub fn is_errno(e: &anyhow::Error, n: i32) -> bool {
    e.chain().any(|c| os_error(c) == Some(n))
}

/// The index of interface `name` in this network namespace.
pub fn ifindex(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name).context("interface name")?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        bail!("no interface {name:?} in this network namespace");
    }
    Ok(i)
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

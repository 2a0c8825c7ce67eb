//! XDP attachments through pinned BPF links, and what the kernel says
//! about them.
//!
//! A program is attached through a BPF link pinned next to the maps (so
//! forwarding outlives the process) and held open by the process as a
//! [`LinkHandle`] (so it also outlives its pin being deleted, and can be
//! pinned again). Liveness is read from the kernel: [`LinkHandle::target`]
//! says which program the link runs and on which interface; an interface
//! index of 0 means the link is defunct (its interface was deleted, or
//! another tool detached it). aya 0.14 exposes neither a link's fd nor
//! an XDP link's interface, so the four bpf(2) commands for that are here,
//! over the kernel's stable attribute layouts.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

use aya::programs::{
    Xdp, XdpMode,
    links::{FdLink, PinnedLink},
    xdp::XdpLink,
};
use aya_obj::generated::{bpf_cmd, bpf_link_info, bpf_link_type};

use super::Datapath;
use crate::error::{Ctx as _, Error, Result};

/// Where an XDP link points, as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpTarget {
    /// The program the link runs.
    pub prog_id: u32,
    /// The interface it is attached to; 0 once the link is defunct.
    pub ifindex: u32,
}

/// A BPF link held open by this process.
#[derive(Debug)]
pub struct LinkHandle {
    fd: OwnedFd,
    id: u32,
}

/// What [`Datapath::attach_pinned`] did.
#[derive(Debug)]
pub struct Attached {
    /// The link, held open.
    pub link: LinkHandle,
    /// An existing link at the pin was kept (its program replaced).
    pub adopted: bool,
    /// A defunct link was pinned there (its interface was deleted or it
    /// was detached); it was unpinned and a new link attached.
    pub replaced_defunct: bool,
}

/// `BPF_OBJ_PIN` and `BPF_OBJ_GET`.
#[repr(C)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// `BPF_LINK_DETACH`.
#[repr(C)]
struct DetachAttr {
    link_fd: u32,
}

/// bpf(2) with `attr` (the kernel zero-fills the part of its union past
/// `attr`'s size).
fn sys_bpf<A>(cmd: bpf_cmd, attr: &mut A) -> io::Result<i32> {
    // SAFETY: `attr` is a valid, initialised repr(C) prefix of `bpf_attr`
    // for `cmd`, and any pointer inside it refers to memory that outlives
    // the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut A as *mut libc::c_void,
            std::mem::size_of::<A>() as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as i32)
}

fn path_c(p: &Path) -> Result<CString> {
    Ok(CString::new(p.as_os_str().as_encoded_bytes())?)
}

impl LinkHandle {
    /// Opens the XDP link pinned at `pin`.
    pub fn open_pinned(pin: &Path) -> Result<Self> {
        let path = path_c(pin)?;
        let mut attr = ObjAttr {
            pathname: path.as_ptr() as u64,
            bpf_fd: 0,
            file_flags: 0,
        };
        let fd = sys_bpf(bpf_cmd::BPF_OBJ_GET, &mut attr)
            .with_ctx(|| format!("opening pinned link {}", pin.display()))?;
        // SAFETY: BPF_OBJ_GET returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut h = Self { fd, id: 0 };
        let info = h
            .info()
            .with_ctx(|| format!("reading pinned link {}", pin.display()))?;
        if info.type_ != bpf_link_type::BPF_LINK_TYPE_XDP as u32 {
            return Err(Error::invalid(format!(
                "{} is not an XDP link",
                pin.display()
            )));
        }
        h.id = info.id;
        Ok(h)
    }

    fn info(&self) -> io::Result<bpf_link_info> {
        // SAFETY: an all-zero bpf_link_info is a valid value of this plain
        // C struct (integers and unions of integers).
        let mut info: bpf_link_info = unsafe { std::mem::zeroed() };
        let mut attr = InfoAttr {
            bpf_fd: self.fd.as_raw_fd() as u32,
            info_len: std::mem::size_of::<bpf_link_info>() as u32,
            info: &mut info as *mut bpf_link_info as u64,
        };
        sys_bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
        Ok(info)
    }

    /// The kernel's link id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Which program the link runs, on which interface (0: defunct).
    pub fn target(&self) -> Result<XdpTarget> {
        let i = self.info().ctx("reading an XDP link")?;
        // SAFETY: the kernel filled the `xdp` member: the link's type was
        // checked to be XDP when it was opened.
        let ifindex = unsafe { i.__bindgen_anon_1.xdp.ifindex };
        Ok(XdpTarget {
            prog_id: i.prog_id,
            ifindex,
        })
    }

    /// Pins the link at `pin` (whose directory must exist on a bpffs).
    pub fn pin(&self, pin: &Path) -> Result<()> {
        let path = path_c(pin)?;
        let mut attr = ObjAttr {
            pathname: path.as_ptr() as u64,
            bpf_fd: self.fd.as_raw_fd() as u32,
            file_flags: 0,
        };
        sys_bpf(bpf_cmd::BPF_OBJ_PIN, &mut attr)
            .with_ctx(|| format!("pinning the XDP link at {}", pin.display()))?;
        Ok(())
    }

    /// Detaches the link from its interface, as `bpftool link detach`
    /// does (the link stays, defunct). For tests of what another tool can
    /// do to a running node.
    pub fn detach(&self) -> Result<()> {
        let mut attr = DetachAttr {
            link_fd: self.fd.as_raw_fd() as u32,
        };
        sys_bpf(bpf_cmd::BPF_LINK_DETACH, &mut attr).ctx("detaching an XDP link")?;
        Ok(())
    }
}

/// The index of interface `name` in this network namespace, if it exists.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

impl Datapath {
    /// Attaches program `name` to `iface` through a BPF link pinned at
    /// `pin`, and holds the link open. When a live link for `iface` is
    /// already pinned there (ferry ran before), the new program replaces
    /// the old one inside it atomically (`BPF_LINK_UPDATE`): the
    /// interface is never without a program. A defunct link pinned there
    /// (the interface was deleted and re-created, or the link detached)
    /// is unpinned and a new one attached: no pin surgery by hand.
    pub fn attach_pinned(
        &mut self,
        name: &str,
        iface: &str,
        mode: XdpMode,
        pin: &Path,
    ) -> Result<Attached> {
        let now =
            ifindex(iface).ok_or_else(|| Error::invalid(format!("no interface {iface:?}")))?;
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| Error::Missing(format!("program {name}")))?
            .try_into()?;
        let mut replaced_defunct = false;
        if pin.exists() {
            let held = LinkHandle::open_pinned(pin)?;
            if held.target()?.ifindex == now {
                let pinned = PinnedLink::from_pin(pin)
                    .with_ctx(|| format!("opening pinned link {}", pin.display()))?;
                let link = XdpLink::try_from(FdLink::from(pinned))
                    .with_ctx(|| format!("{} is not an XDP link", pin.display()))?;
                prog.attach_to_link(link)
                    .with_ctx(|| format!("replacing the program in {}", pin.display()))?;
                return Ok(Attached {
                    link: held,
                    adopted: true,
                    replaced_defunct: false,
                });
            }
            std::fs::remove_file(pin)
                .with_ctx(|| format!("unpinning the defunct link {}", pin.display()))?;
            replaced_defunct = true;
        }
        let id = prog
            .attach(iface, mode)
            .with_ctx(|| format!("attaching {name} to {iface} in {mode:?} mode"))?;
        let link = prog.take_link(id)?;
        let fd = FdLink::try_from(link).with_ctx(|| {
            format!("attaching {name} to {iface} gave a netlink attachment, not a BPF link (kernel older than 5.9?)")
        })?;
        // aya's own fd closes when `_pinned` goes; the handle keeps the link.
        let _pinned = fd
            .pin(pin)
            .with_ctx(|| format!("pinning the XDP link at {}", pin.display()))?;
        Ok(Attached {
            link: LinkHandle::open_pinned(pin)?,
            adopted: false,
            replaced_defunct,
        })
    }

    /// The kernel id of loaded program `name`.
    pub fn program_id(&self, name: &str) -> Result<u32> {
        let prog: &Xdp = self.program(name)?;
        Ok(prog
            .info()
            .with_ctx(|| format!("reading program {name}"))?
            .id())
    }

    /// Pins again, under `dir`, every state map whose pin is gone (this
    /// process still holds the maps): returns their names.
    pub fn repin_missing_maps(&self, dir: &Path) -> Result<Vec<&'static str>> {
        let mut done = Vec::new();
        for name in ferry_ebpf::abi::PINNED_MAPS {
            let p = dir.join(name);
            if !p.exists() {
                self.map(name)?
                    .pin(&p)
                    .with_ctx(|| format!("pinning map {name} at {}", p.display()))?;
                done.push(name);
            }
        }
        Ok(done)
    }
}

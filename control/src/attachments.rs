//! The node's XDP attachments and their health, as the kernel reports it.
//!
//! Liveness is what the kernel says, not what ferry did. Once a second
//! ([`Attachments::check`]) each attachment's link is asked which program
//! it runs on which interface, and the interface is looked up by name:
//!
//! - the link runs this node's program on the interface of that name:
//!   attached (a deleted link pin is pinned again, and so are deleted map
//!   pins: this process still holds both, and a later restart needs them);
//! - no interface of that name: `interface missing`;
//! - anything else (the interface was re-created, another tool detached
//!   the link or replaced its program): ferry attaches again; when it
//!   cannot (another program holds the interface), `detached`.
//!
//! While any attachment is not attached the node cannot forward both ways,
//! so it stops answering data-channel keepalives (counted as
//! `no_dataplane`): the APs declare the tunnel dead and move to the backup
//! AC instead of sending into a black hole. Each change of health is
//! logged once, shown by `ferry status` and exported as metrics.

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use aya::programs::XdpMode;
use ferry_dataplane::datapath::{Datapath, LinkHandle, ifindex};
use ferry_ebpf::abi;
use tracing::{info, warn};

use crate::{api::views::Attachment, config::Config, host::AttachMode, pins};

/// How one attachment is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// This node's program runs on the interface.
    Attached,
    /// No interface of that name exists.
    InterfaceMissing,
    /// The interface exists without this node's program, and attaching
    /// again failed (the reason).
    Detached(String),
}

impl Health {
    /// The name `ferry status` and the metrics use.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Attached => "attached",
            Self::InterfaceMissing => "interface missing",
            Self::Detached(_) => "detached",
        }
    }
}

/// One program on one interface.
struct Item {
    iface: String,
    program: &'static str,
    /// The mode it was attached in ("driver", "skb", "skb (fallback)").
    mode: &'static str,
    pin: PathBuf,
    link: Option<LinkHandle>,
    ifindex: u32,
    adopted_link: bool,
    health: Health,
    /// Times attached again after the kernel lost the attachment.
    reattached: u64,
    /// Times its deleted link pin was pinned again.
    repinned: u64,
}

/// The node's attachments.
pub struct Attachments {
    items: Vec<Item>,
    pin_dir: PathBuf,
}

/// What one [`Attachments::check`] found and did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// Some program was attached again (interface indexes may have
    /// changed: the caller points the egress and FIB settings at them).
    pub reattached: bool,
}

impl Attachments {
    /// Attaches the programs `config` needs through links pinned in
    /// `pin_dir` (replacing the program inside an existing link), and
    /// detaches links of interfaces the configuration no longer names.
    pub fn attach(
        dp: &mut Datapath,
        config: &Config,
        pin_dir: &Path,
        mode: AttachMode,
    ) -> Result<Self> {
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
        let mut items = Vec::new();
        for ((iface, program), pin) in plan.into_iter().zip(wanted) {
            let (a, m) = attach_one(dp, program, iface, &pin, mode)?;
            if a.replaced_defunct {
                warn!(iface, pin = %pin.display(), "the pinned link was defunct (interface re-created or link detached): attached a new one");
            }
            info!(
                iface,
                program,
                mode = m,
                adopted_link = a.adopted,
                "attached"
            );
            items.push(Item {
                iface: iface.to_string(),
                program,
                mode: m,
                pin,
                ifindex: ifindex(iface).unwrap_or(0),
                link: Some(a.link),
                adopted_link: a.adopted,
                health: Health::Attached,
                reattached: 0,
                repinned: 0,
            });
        }
        Ok(Self {
            items,
            pin_dir: pin_dir.to_path_buf(),
        })
    }

    /// Whether every program runs where it should (else keepalives are
    /// not answered).
    pub fn all_attached(&self) -> bool {
        self.items.iter().all(|i| i.health == Health::Attached)
    }

    /// The attachments as `ferry status` shows them.
    pub fn views(&self) -> Vec<Attachment> {
        self.items
            .iter()
            .map(|i| Attachment {
                iface: i.iface.clone(),
                program: i.program.to_string(),
                mode: i.mode.to_string(),
                adopted_link: i.adopted_link,
                state: i.health.name().to_string(),
                detail: match &i.health {
                    Health::Detached(why) => Some(why.clone()),
                    _ => None,
                },
                ifindex: i.ifindex,
                reattached: i.reattached,
                repinned: i.repinned,
            })
            .collect()
    }

    /// Compares each attachment with what the kernel runs, repairs what it
    /// can (see the module documentation) and logs each change of health.
    pub fn check(&mut self, dp: &mut Datapath) -> Checked {
        let mut out = Checked::default();
        self.repin_maps(dp);
        for item in &mut self.items {
            let health = match ifindex(&item.iface) {
                None => {
                    // The kernel made the link defunct with the interface.
                    item.link = None;
                    Health::InterfaceMissing
                }
                Some(now) if item.runs_here(dp, now) => {
                    item.repin();
                    Health::Attached
                }
                Some(now) => match item.reattach(dp) {
                    Ok(()) => {
                        item.ifindex = now;
                        item.reattached += 1;
                        out.reattached = true;
                        info!(
                            iface = item.iface,
                            ifindex = now,
                            program = item.program,
                            "attached again"
                        );
                        Health::Attached
                    }
                    Err(e) => Health::Detached(format!("{e:#}")),
                },
            };
            if health != item.health {
                match &health {
                    Health::Attached => info!(
                        iface = item.iface,
                        "program attached: answering keepalives again"
                    ),
                    other => warn!(
                        iface = item.iface,
                        state = other.name(),
                        detail = ?other,
                        "no ferry program on the interface: keepalives are not answered, so APs move to the backup"
                    ),
                }
                item.health = health;
            }
        }
        out
    }

    /// Pins again the state maps whose pins were deleted under a running
    /// node (a restart needs them to adopt the learned stations).
    fn repin_maps(&self, dp: &Datapath) {
        if let Err(e) = std::fs::create_dir_all(&self.pin_dir) {
            warn!(dir = %self.pin_dir.display(), "recreating the pin directory: {e}");
            return;
        }
        match dp.repin_missing_maps(&self.pin_dir) {
            Ok(v) if v.is_empty() => {}
            Ok(v) => {
                warn!(maps = ?v, dir = %self.pin_dir.display(), "map pins were deleted: pinned them again");
            }
            Err(e) => warn!("pinning the maps again: {e:#}"),
        }
    }
}

impl Item {
    /// Whether the held link runs this node's program on interface `now`.
    fn runs_here(&self, dp: &Datapath, now: u32) -> bool {
        let Some(link) = &self.link else {
            return false;
        };
        match (link.target(), dp.program_id(self.program)) {
            (Ok(t), Ok(p)) => t.ifindex == now && t.prog_id == p,
            _ => false,
        }
    }

    /// Pins the held link again when its pin was deleted or replaced.
    fn repin(&mut self) {
        let Some(link) = &self.link else {
            return;
        };
        let pinned_id = LinkHandle::open_pinned(&self.pin).map(|h| h.id()).ok();
        if pinned_id == Some(link.id()) {
            return;
        }
        let _ = std::fs::remove_file(&self.pin);
        match link.pin(&self.pin) {
            Ok(()) => {
                self.repinned += 1;
                warn!(iface = self.iface, pin = %self.pin.display(), "the link pin was deleted: pinned it again");
            }
            Err(e) => warn!(iface = self.iface, "pinning the link again: {e:#}"),
        }
    }

    fn reattach(&mut self, dp: &mut Datapath) -> Result<()> {
        self.link = None;
        let mode = if self.mode == "driver" {
            AttachMode::Driver
        } else {
            AttachMode::Skb
        };
        let (a, _) = attach_one(dp, self.program, &self.iface, &self.pin, mode)?;
        self.link = Some(a.link);
        Ok(())
    }
}

/// Attaches one program in `mode`, falling back from native to generic
/// mode (loudly) when the driver has none; returns the mode used.
fn attach_one(
    dp: &mut Datapath,
    program: &str,
    iface: &str,
    pin: &Path,
    mode: AttachMode,
) -> Result<(ferry_dataplane::datapath::Attached, &'static str)> {
    match mode {
        AttachMode::Skb => Ok((dp.attach_pinned(program, iface, XdpMode::Skb, pin)?, "skb")),
        AttachMode::Driver => match dp.attach_pinned(program, iface, XdpMode::Driver, pin) {
            Ok(a) => Ok((a, "driver")),
            Err(e) if e.os_error() == Some(libc::EOPNOTSUPP) => {
                warn!(
                    iface,
                    "!!! the driver of {iface} has no native XDP: falling back to GENERIC (skb) mode, \
                     which is much slower; use --xdp-mode skb to accept this explicitly !!!"
                );
                Ok((
                    dp.attach_pinned(program, iface, XdpMode::Skb, pin)?,
                    "skb (fallback)",
                ))
            }
            Err(e) if e.os_error() == Some(libc::EBUSY) => Err(anyhow!(
                "{iface} already has an XDP program that is not this node's \
                 (another ferry node, or another tool?); see `ip link show {iface}`: {e}"
            )),
            Err(e) => Err(e.into()),
        },
    }
}

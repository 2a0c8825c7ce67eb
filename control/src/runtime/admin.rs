//! The admin socket as a service: line-delimited JSON requests
//! ([`crate::api::protocol`]) turned into queries or [`Command`]s.

use std::{os::unix::fs::PermissionsExt as _, path::Path};

use anyhow::{Context as _, Result, bail};
use mio::net::UnixListener;
use serde::Serialize;
use serde_json::value::RawValue;

use super::{
    conn::{Buffers, ConnCounts, Limits, Protocol, Server},
    node::Node,
};
use crate::{
    api::protocol::{self, Request, Response, reply_line},
    commands::Command,
    config::TunnelState,
    host,
};

/// The admin protocol.
pub struct Admin;

/// Binds the admin socket at `path` (mode 0600). A socket file nobody
/// answers on is a leftover of a killed ferry and is replaced.
pub fn bind(path: &Path) -> Result<Server<UnixListener, Admin>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("another ferry is already serving {}", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let l = UnixListener::bind(path)
        .with_context(|| format!("binding admin socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(Server::new(l, Admin))
}

impl Protocol for Admin {
    const NAME: &'static str = "admin";
    const MAX_IN: usize = protocol::MAX_REQUEST;
    // The CLI holds one connection per command; a whole table answer is a
    // few MiB at 25,600 tunnels.
    const LIMITS: Limits = Limits {
        max_conns: 64,
        max_per_peer: 16,
        idle: std::time::Duration::from_secs(10),
        max_out: 256 << 20,
    };

    fn has_request(inbuf: &[u8]) -> bool {
        inbuf.contains(&b'\n')
    }

    fn counts(node: &mut Node) -> &mut ConnCounts {
        &mut node.conns.admin
    }

    fn serve(&mut self, b: &mut Buffers, node: &mut Node) {
        // Answers the client has not read count against the cap: past it,
        // its pipelined requests are left unserved and the connection is
        // closed as overflowing. Serving them all first let one write of
        // `tunnels` requests build gigabytes of answers.
        while b.outbuf.len() <= Self::LIMITS.max_out
            && let Some(pos) = b.inbuf.iter().position(|c| *c == b'\n')
        {
            let line: Vec<u8> = b.inbuf.drain(..=pos).collect();
            let text = String::from_utf8_lossy(&line);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let resp = match protocol::parse_request(text) {
                Ok(req) => match handle(node, req) {
                    Ok(v) => Response::ok(v),
                    Err(e) => Response::err(format!("{e:#}")),
                },
                Err(e) => Response::err(e),
            };
            b.outbuf.extend(reply_line(&resp));
        }
        // Large answers leave freed heap behind; hand it back so the
        // resident size reflects what ferry holds.
        host::trim_heap();
    }

    fn too_long(&self) -> Vec<u8> {
        reply_line(&Response::err("request too long"))
    }
}

fn raw<T: Serialize>(v: &T) -> Result<Box<RawValue>> {
    Ok(serde_json::value::to_raw_value(v)?)
}

/// Answers one request: a query, or a command.
fn handle(node: &mut Node, req: Request) -> Result<Box<RawValue>> {
    let cmd = match req {
        Request::Status => return raw(&node.status()?),
        Request::Tunnels => return raw(&node.tunnels()?),
        Request::Stations { ap, limit } => {
            return raw(&node.stations(ap.as_deref(), limit.unwrap_or(1000))?);
        }
        Request::Counters => return raw(&node.counters()?),
        Request::ClusterStatus => return raw(&node.cluster_status()?),
        Request::ClusterHistory => return raw(&node.ha()?.history()),
        Request::ClusterRole { group, role } => {
            node.ha()?
                .set_role(&group, role)
                .map_err(|e| anyhow::anyhow!(e))?;
            return raw(&node.cluster_status()?);
        }
        Request::ClusterResync => {
            node.ha()?.resync().map_err(|e| anyhow::anyhow!(e))?;
            return raw(&node.ha()?.status());
        }
        Request::Failover { group, options } => {
            let ids = node
                .ha()?
                .failover(group.as_deref(), options.unwrap_or_default())
                .map_err(|e| anyhow::anyhow!(e))?;
            return raw(&ids);
        }
        Request::Handovers { ids } => return raw(&node.ha()?.handovers(&ids)),
        Request::Swap {
            file,
            text,
            force,
            dry_run,
        } => {
            let cmd = Command::Swap {
                file: file.into(),
                text,
                force,
            };
            if dry_run {
                return raw(&node.plan(&cmd)?);
            }
            cmd
        }
        Request::Rollback { dry_run: true } => return raw(&node.plan(&Command::Rollback)?),
        Request::Rollback { dry_run: false } => Command::Rollback,
        Request::Reload {
            force,
            dry_run: true,
        } => return raw(&node.plan(&Command::Reload { force })?),
        Request::Reload {
            force,
            dry_run: false,
        } => Command::Reload { force },
        Request::TunnelAdd { text } => Command::TunnelAdd { text },
        Request::TunnelRemove { ap } => Command::TunnelRemove { ap },
        Request::Promote { ap } => Command::SetState {
            ap,
            state: TunnelState::Active,
        },
        Request::Demote { ap } => Command::SetState {
            ap,
            state: TunnelState::Standby,
        },
    };
    // The pair runs one table: `execute` sends a change to the peer.
    let c = node.execute(cmd)?;
    raw(&c)
}

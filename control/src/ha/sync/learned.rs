//! Learned AP ports and Session ID bindings on the sync stream.
//!
//! Both are live state that a takeover needs downstream: an any-port
//! tunnel encapsulates to the port its AP was learned from, and a session
//! tunnel forwards only once bound to the address and port its keepalives
//! come from. The master sends them, for the groups it masters, in every
//! bulk (between the markers) and then as they change, found by the same
//! 200 ms scan as the stations. The backup installs them into its live
//! tables at once, unless it has its own: the port or binding an AP uses
//! towards this node (a dual-link AP keepalives both) wins over the
//! peer's.

use std::{collections::HashMap, net::SocketAddr};

use ferry_ebpf::abi::DOWN_VALID;
use tracing::{info, warn};

use super::SyncService;
use crate::{commands::Command, ha::stream::Handoff, runtime::node::Node};

/// Entries per message (a name and a port or address each: well inside
/// the envelope).
const PER_MESSAGE: usize = 4096;

/// What was last sent to the peer.
#[derive(Debug, Default)]
pub(super) struct Sent {
    ports: HashMap<String, u16>,
    bindings: HashMap<String, SocketAddr>,
}

/// What the peer's learned state changed here.
#[derive(Debug, Default, Clone, Copy)]
struct Installed {
    ports: usize,
    bindings: usize,
}

impl SyncService {
    /// Sends the learned ports and bindings of the tunnels of groups
    /// mastered here that changed since last sent; how many.
    pub(super) fn scan_learned(&mut self, node: &Node) -> usize {
        let active = super::active_groups(node);
        let config = &node.tables.config;
        let downs = match node.dp.tunnel_downs(node.tables.id_bound()) {
            Ok(d) => d,
            Err(e) => {
                warn!("HA sync: reading the learned AP ports: {e}");
                return 0;
            }
        };
        let mut ports = Vec::new();
        let mut bindings = Vec::new();
        for t in &config.tunnels {
            if active.get(usize::from(config.group_index(t))) != Some(&true) {
                continue;
            }
            match (t.address, t.port) {
                (Some(_), None) => {
                    let learned = node
                        .tables
                        .id_of(&t.ap)
                        .and_then(|id| downs.get(id as usize))
                        .filter(|d| d.flags & DOWN_VALID != 0 && d.port != 0)
                        .map(|d| d.port);
                    if let Some(p) = learned
                        && self.learned.ports.get(&t.ap) != Some(&p)
                    {
                        ports.push((t.ap.clone(), p));
                    }
                }
                (None, _) => {
                    if let Some(p) = node.tables.bound(&t.ap)
                        && self.learned.bindings.get(&t.ap) != Some(&p)
                    {
                        bindings.push((t.ap.clone(), p));
                    }
                }
                (Some(_), Some(_)) => {}
            }
        }
        let n = ports.len() + bindings.len();
        self.status.learned_sent += n as u64;
        self.learned.ports.extend(ports.iter().cloned());
        self.learned.bindings.extend(bindings.iter().cloned());
        while !ports.is_empty() || !bindings.is_empty() {
            let p: Vec<_> = ports.drain(..ports.len().min(PER_MESSAGE)).collect();
            let b: Vec<_> = bindings
                .drain(..bindings.len().min(PER_MESSAGE - p.len()))
                .collect();
            self.send_control(Handoff::Learned {
                ports: p,
                bindings: b,
            });
        }
        n
    }

    /// Forgets what was sent (a bulk sends everything again).
    pub(super) fn learned_reset(&mut self) {
        self.learned = Sent::default();
    }

    /// Installs the peer's learned ports and bindings of the groups this
    /// node does not master.
    pub(super) fn learned_in(
        &mut self,
        node: &mut Node,
        ports: Vec<(String, u16)>,
        bindings: Vec<(String, SocketAddr)>,
    ) {
        let active = super::active_groups(node);
        let ours = |node: &Node, ap: &str| {
            let config = &node.tables.config;
            config
                .tunnel_named(ap)
                .is_none_or(|t| active.get(usize::from(config.group_index(t))) == Some(&true))
        };
        let mut done = Installed::default();
        for (ap, port) in ports {
            if ours(node, &ap) {
                continue;
            }
            match node.tables.learn_port(&mut node.dp, &ap, port) {
                Ok(true) => done.ports += 1,
                Ok(false) => {}
                Err(e) => warn!(
                    ap,
                    port, "HA sync: installing the peer's learned port: {e:#}"
                ),
            }
        }
        for (ap, peer) in bindings {
            if ours(node, &ap) || node.tables.bound(&ap).is_some() {
                continue;
            }
            match node.execute(Command::Bind {
                ap: ap.clone(),
                peer,
            }) {
                Ok(_) => {
                    node.sessions.restore(&ap, peer);
                    done.bindings += 1;
                }
                Err(e) => warn!(ap, %peer, "HA sync: the peer's session binding refused: {e:#}"),
            }
        }
        if done.ports + done.bindings > 0 {
            info!(
                ports = done.ports,
                bindings = done.bindings,
                "HA sync: installed the peer's learned AP ports and session bindings"
            );
        }
        self.status.learned_received += (done.ports + done.bindings) as u64;
    }
}

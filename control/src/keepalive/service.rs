//! The keepalive sockets (one per node address, on the data port) as an
//! event-loop service, and the policy for each datagram: echo it, bind a
//! session tunnel through the one command path, or count and drop it.

use std::{
    io::ErrorKind,
    net::{IpAddr, SocketAddr},
    time::Instant,
};

use anyhow::{Context as _, Result};
use mio::{Interest, Token, event::Event, net::UdpSocket};
use tracing::{debug, info, warn};

use super::{
    Binding, echo, parse,
    socket::{self, Datagram},
};
use crate::{
    commands::Command,
    config::Config,
    runtime::{
        event_loop::{Flow, Registrar, Service},
        node::Node,
    },
};

/// The data-port sockets.
pub struct KeepaliveService {
    sockets: Vec<(UdpSocket, Token)>,
    /// The kernel's drop count last reported by each socket.
    dropped: Vec<u32>,
}

/// Receive buffer: a keepalive is a few dozen bytes; anything longer than
/// this is counted as oversized, never echoed cut short.
const RECV_BUF: usize = 2048;

impl KeepaliveService {
    /// Binds one socket per node address (before the data plane is
    /// touched, so a start that cannot serve keepalives changes nothing).
    pub fn bind(config: &Config) -> Result<Self> {
        let mut sockets = Vec::new();
        for a in &config.addresses {
            let addr = SocketAddr::new(*a, config.data_port);
            let s = UdpSocket::bind(addr).with_context(|| {
                format!("binding the keepalive socket {addr} (is {a} configured on this host?)")
            })?;
            socket::enable_drop_count(&s)
                .with_context(|| format!("SO_RXQ_OVFL on the keepalive socket {addr}"))?;
            sockets.push((s, Token(usize::MAX)));
        }
        let dropped = vec![0; sockets.len()];
        Ok(Self { sockets, dropped })
    }
}

impl Service for KeepaliveService {
    fn register(&mut self, reg: &mut Registrar<'_>) -> Result<()> {
        for (s, t) in &mut self.sockets {
            *t = reg.register(s, Interest::READABLE)?;
        }
        Ok(())
    }

    fn ready(
        &mut self,
        token: Token,
        _ev: &Event,
        node: &mut Node,
        _reg: &mut Registrar<'_>,
    ) -> Result<Flow> {
        let Some(i) = self.sockets.iter().position(|(_, t)| *t == token) else {
            return Ok(Flow::Continue);
        };
        let s = &self.sockets[i].0;
        let mut buf = [0u8; RECV_BUF];
        loop {
            match socket::recv(s, &mut buf) {
                Ok(d) => {
                    if let Some(total) = d.dropped {
                        let new = total.wrapping_sub(self.dropped[i]);
                        self.dropped[i] = total;
                        node.ka.kernel_drops += u64::from(new);
                    }
                    if let Some(reply) = received(node, &buf[..d.len], d)
                        && let Err(e) = s.send_to(&reply, d.peer)
                    {
                        warn!(peer = %d.peer, "keepalive answer: {e}");
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    warn!("keepalive socket: {e}");
                    break;
                }
            }
        }
        Ok(Flow::Continue)
    }
}

/// IPv4-mapped IPv6 peers (dual-stack sockets) as plain IPv4.
fn unmap(p: SocketAddr) -> SocketAddr {
    match p.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), p.port()),
            None => p,
        },
        IpAddr::V4(_) => p,
    }
}

/// A datagram as received: oversized ones are counted, not parsed.
fn received(node: &mut Node, data: &[u8], d: Datagram) -> Option<Vec<u8>> {
    if d.truncated {
        node.ka.oversized += 1;
        debug!(peer = %d.peer, "datagram longer than {RECV_BUF} bytes on the data port: not a keepalive");
        return None;
    }
    answer(node, data, d.peer)
}

/// Handles one datagram on the data port; returns the answer to send.
pub fn answer(node: &mut Node, d: &[u8], peer: SocketAddr) -> Option<Vec<u8>> {
    let peer = unmap(peer);
    let k = match parse(d) {
        Ok(k) => k,
        Err(e) => {
            node.ka.malformed += 1;
            debug!(%peer, "not a keepalive: {e}");
            return None;
        }
    };
    if !node.attachments.all_attached() {
        // The APs must see the data channel die and move to the backup.
        node.ka.no_dataplane += 1;
        debug!(%peer, "not answered: an interface has no ferry program");
        return None;
    }
    let now = Instant::now();
    if let Some(ap) = node.sessions.tunnel_of(&k.session_id).map(str::to_string) {
        if handing_over(node, &ap) {
            return None;
        }
        match node.sessions.keepalive(&k.session_id, peer, now) {
            Binding::Damped { bound } => {
                node.ka.damped += 1;
                debug!(ap, %peer, %bound, "rebind damped: not answered");
                return None;
            }
            Binding::Bound | Binding::Rebound { .. } if node.tables.bound(&ap) != Some(peer) => {
                match node.execute(Command::Bind {
                    ap: ap.clone(),
                    peer,
                }) {
                    Ok(c) => {
                        node.ka.bindings += 1;
                        info!(ap, %peer, took_us = c.total_us, "session tunnel bound by its keepalive");
                    }
                    Err(e) => {
                        warn!(ap, %peer, "binding refused: {e:#}");
                        return None;
                    }
                }
            }
            _ => {}
        }
        node.ka.answered += 1;
        return Some(echo(d));
    }
    let by_addr = node
        .tables
        .config
        .tunnels
        .iter()
        .filter(|t| t.address == Some(peer.ip()))
        .find(|t| t.port.is_none_or(|p| p == peer.port()))
        .map(|t| t.ap.clone());
    if let Some(ap) = by_addr {
        if handing_over(node, &ap) {
            return None;
        }
        node.sessions.seen(&ap, peer, now);
        node.ka.answered += 1;
        return Some(echo(d));
    }
    node.ka.unknown += 1;
    if node.unknown.allow(now) {
        node.ka.answered += 1;
        Some(echo(d))
    } else {
        node.ka.refused += 1;
        None
    }
}

/// Whether `ap`'s group is being handed to the peer: its keepalives go
/// unanswered (and are counted), the one signal a data plane can give a
/// dual-link AP to move its data to the other tunnel, whose AC already
/// forwards the group.
fn handing_over(node: &mut Node, ap: &str) -> bool {
    let (Some(ha), Some(t)) = (&node.ha, node.tables.config.tunnel_named(ap)) else {
        return false;
    };
    let g = node.tables.config.group_index(t);
    if g != 0 && ha.withheld(g) {
        node.ka.handing_over += 1;
        debug!(ap, "keepalive not answered: the group is being handed over");
        return true;
    }
    false
}

//! Prometheus metrics: the exposition format and HTTP responder
//! ([`exposition`]), what is collected from the node and its maps
//! ([`collect`]), and the listener as an event-loop service.

use anyhow::{Context as _, Result};
use mio::net::TcpListener;

use crate::runtime::{
    conn::{Buffers, ConnCounts, Limits, Protocol, Server},
    node::Node,
};

pub mod cluster;
pub mod collect;
pub mod exposition;

/// HTTP/1.0 `GET /metrics`, one response per connection.
pub struct Metrics;

/// Binds the metrics listener.
pub fn bind(addr: std::net::SocketAddr) -> Result<Server<TcpListener, Metrics>> {
    let l = TcpListener::bind(addr).with_context(|| format!("binding metrics listener {addr}"))?;
    Ok(Server::new(l, Metrics))
}

impl Protocol for Metrics {
    const NAME: &'static str = "metrics";
    const MAX_IN: usize = 16384;
    // A scraper opens one connection per scrape.
    const LIMITS: Limits = Limits {
        max_conns: 32,
        max_per_peer: 8,
        idle: std::time::Duration::from_secs(10),
        max_out: 64 << 20,
    };

    fn has_request(inbuf: &[u8]) -> bool {
        inbuf.windows(4).any(|w| w == b"\r\n\r\n")
    }

    fn counts(node: &mut Node) -> &mut ConnCounts {
        &mut node.conns.metrics
    }

    fn serve(&mut self, b: &mut Buffers, node: &mut Node) {
        if !b.outbuf.is_empty() {
            return;
        }
        if let Some(end) = b.inbuf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&b.inbuf[..end]).into_owned();
            b.outbuf = exposition::respond(&head, || collect::render(node));
            b.inbuf.clear();
            b.close_after_write = true;
        }
    }

    fn too_long(&self) -> Vec<u8> {
        exposition::respond("BAD", String::new)
    }
}

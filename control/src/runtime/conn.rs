//! Stream connections of the admin and metrics servers: buffering,
//! framing limits and the accept/serve/flush/close cycle, once for both.
//! What a request means is the [`Protocol`]'s.
//!
//! Both listen to untrusted peers, so each protocol sets [`Limits`]: at
//! most so many connections in all and per peer (a TCP peer's address, a
//! Unix peer's pid), an idle timeout, and caps on buffered bytes either
//! way. Past a limit the connection is closed and counted
//! ([`ConnCounts`], in `ferry status` and the metrics). A request that
//! arrives from a peer that has already gone (the kernel reports the hang
//! up with the bytes, as when a connection waited in the backlog while
//! the fd table was full) is not served: a client that gave up never has
//! its swap applied behind its back. An accept that fails (EMFILE) is
//! retried every second, not only when the next client connects.

use std::{
    collections::HashMap,
    io::{self, ErrorKind, Read, Write},
    time::{Duration, Instant},
};

use anyhow::Result;
use mio::{Interest, Token, event::Event, event::Source};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{
    event_loop::{Flow, Registrar, Service},
    node::Node,
};

/// A listening socket.
pub trait Listen: Source {
    /// The accepted stream type.
    type Stream: Read + Write + Source;
    /// Accepts one connection, with the peer it counts against.
    fn accept_one(&self) -> io::Result<(Self::Stream, String)>;
}

impl Listen for mio::net::UnixListener {
    type Stream = mio::net::UnixStream;
    fn accept_one(&self) -> io::Result<(Self::Stream, String)> {
        let (s, _) = self.accept()?;
        let peer = peer_pid(&s).map_or_else(|| "unix".to_string(), |p| format!("pid {p}"));
        Ok((s, peer))
    }
}

impl Listen for mio::net::TcpListener {
    type Stream = mio::net::TcpStream;
    fn accept_one(&self) -> io::Result<(Self::Stream, String)> {
        let (s, a) = self.accept()?;
        Ok((s, a.ip().to_string()))
    }
}

/// The pid of a Unix socket's peer (SO_PEERCRED).
fn peer_pid(s: &mio::net::UnixStream) -> Option<i32> {
    use std::os::fd::AsRawFd as _;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, a valid
    // ucred, on a socket this process owns.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(cred.pid)
}

/// How many connections a server keeps, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once.
    pub max_conns: usize,
    /// Connections open at once from one peer.
    pub max_per_peer: usize,
    /// A connection with no bytes either way for this long is closed.
    pub idle: Duration,
    /// Most answer bytes queued for a peer that does not read them.
    pub max_out: usize,
}

/// Connections a server closed early, by reason (since start).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnCounts {
    /// Accepted.
    pub accepted: u64,
    /// Closed at once: the server or the peer was at its cap.
    pub over_cap: u64,
    /// Closed after the idle timeout.
    pub idle: u64,
    /// Closed with more unread answer bytes queued than the cap.
    pub overflow: u64,
    /// Requests not served because the peer had already gone.
    pub gone_unserved: u64,
    /// Failed accepts (EMFILE and the like), retried every second.
    pub accept_errors: u64,
}

/// A connection's buffers.
#[derive(Default)]
pub struct Buffers {
    /// Bytes received, not yet consumed.
    pub inbuf: Vec<u8>,
    /// Bytes to send.
    pub outbuf: Vec<u8>,
    /// Close once `outbuf` is sent.
    pub close_after_write: bool,
}

/// What the bytes of a connection mean.
pub trait Protocol {
    /// For logs.
    const NAME: &'static str;
    /// Most bytes a connection may buffer unanswered.
    const MAX_IN: usize;
    /// Connection limits.
    const LIMITS: Limits;
    /// Whether `inbuf` holds at least one complete request.
    fn has_request(inbuf: &[u8]) -> bool;
    /// This server's counters in `node`.
    fn counts(node: &mut Node) -> &mut ConnCounts;
    /// Consumes complete requests from `b.inbuf`, queues answers.
    fn serve(&mut self, b: &mut Buffers, node: &mut Node);
    /// The answer to a request over [`Protocol::MAX_IN`].
    fn too_long(&self) -> Vec<u8>;
}

struct Conn<S> {
    stream: S,
    buf: Buffers,
    peer: String,
    /// Last byte read or written.
    last: Instant,
}

/// A listener and its connections, speaking `P`.
pub struct Server<L: Listen, P: Protocol> {
    listener: L,
    token: Token,
    conns: HashMap<Token, Conn<L::Stream>>,
    protocol: P,
    /// An accept failed: try again at this time.
    retry_accept: Option<Instant>,
}

impl<L: Listen, P: Protocol> Server<L, P> {
    /// A server on `listener` (bound already).
    pub fn new(listener: L, protocol: P) -> Self {
        Self {
            listener,
            token: Token(usize::MAX),
            conns: HashMap::new(),
            protocol,
            retry_accept: None,
        }
    }

    fn accept(&mut self, node: &mut Node, reg: &mut Registrar<'_>) -> Result<()> {
        self.retry_accept = None;
        loop {
            let (mut stream, peer) = match self.listener.accept_one() {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) => {
                    P::counts(node).accept_errors += 1;
                    warn!("{} accept: {e}; retrying in a second", P::NAME);
                    self.retry_accept = Some(Instant::now() + Duration::from_secs(1));
                    return Ok(());
                }
            };
            P::counts(node).accepted += 1;
            let from_peer = self.conns.values().filter(|c| c.peer == peer).count();
            if self.conns.len() >= P::LIMITS.max_conns || from_peer >= P::LIMITS.max_per_peer {
                // Dropping the stream closes it: the peer sees EOF at once
                // instead of a connection nobody serves.
                P::counts(node).over_cap += 1;
                warn!(
                    peer,
                    open = self.conns.len(),
                    from_peer,
                    "{} connection refused: at the cap of {} in all, {} per peer",
                    P::NAME,
                    P::LIMITS.max_conns,
                    P::LIMITS.max_per_peer
                );
                continue;
            }
            let t = reg.register(&mut stream, Interest::READABLE | Interest::WRITABLE)?;
            self.conns.insert(
                t,
                Conn {
                    stream,
                    buf: Buffers::default(),
                    peer,
                    last: Instant::now(),
                },
            );
        }
    }

    /// Reads what is there, serves it, writes what it can; whether the
    /// connection is finished.
    fn drive(&mut self, t: Token, ev: &Event, node: &mut Node) -> bool {
        let Some(c) = self.conns.get_mut(&t) else {
            return false;
        };
        let mut done = false;
        // The peer hung up both ways (not a half close after its request):
        // nothing it sent is served.
        let gone = ev.is_write_closed() || ev.is_error();
        if ev.is_readable() || ev.is_read_closed() {
            let mut chunk = [0u8; 65536];
            loop {
                match c.stream.read(&mut chunk) {
                    Ok(0) => {
                        done = true;
                        break;
                    }
                    Ok(n) => {
                        c.last = Instant::now();
                        c.buf.inbuf.extend_from_slice(&chunk[..n]);
                        if c.buf.inbuf.len() > P::MAX_IN {
                            c.buf.outbuf.extend(self.protocol.too_long());
                            c.buf.close_after_write = true;
                            c.buf.inbuf.clear();
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        done = true;
                        break;
                    }
                }
            }
            if gone {
                if P::has_request(&c.buf.inbuf) {
                    P::counts(node).gone_unserved += 1;
                    warn!(
                        peer = c.peer,
                        "{} request from a client that has gone: not served (nothing applied)",
                        P::NAME
                    );
                }
                return true;
            }
            self.protocol.serve(&mut c.buf, node);
        }
        let before = c.buf.outbuf.len();
        match flush(&mut c.stream, &mut c.buf.outbuf) {
            Ok(()) => done |= c.buf.close_after_write && c.buf.outbuf.is_empty(),
            Err(e) if e.kind() == ErrorKind::WouldBlock => done = false,
            Err(_) => return true,
        }
        if c.buf.outbuf.len() < before {
            c.last = Instant::now();
        }
        if c.buf.outbuf.len() > P::LIMITS.max_out {
            P::counts(node).overflow += 1;
            warn!(
                peer = c.peer,
                queued = c.buf.outbuf.len(),
                "{} peer does not read its answers: closed",
                P::NAME
            );
            return true;
        }
        // A closed peer with an answer still owed: keep trying.
        done && (c.buf.outbuf.is_empty() || !c.buf.close_after_write)
    }
}

fn flush<S: Write>(s: &mut S, out: &mut Vec<u8>) -> io::Result<()> {
    while !out.is_empty() {
        let n = s.write(out)?;
        if n == 0 {
            return Err(ErrorKind::WriteZero.into());
        }
        out.drain(..n);
    }
    Ok(())
}

impl<L: Listen, P: Protocol> Service for Server<L, P> {
    fn register(&mut self, reg: &mut Registrar<'_>) -> Result<()> {
        self.token = reg.register(&mut self.listener, Interest::READABLE)?;
        Ok(())
    }

    fn ready(
        &mut self,
        token: Token,
        ev: &Event,
        node: &mut Node,
        reg: &mut Registrar<'_>,
    ) -> Result<Flow> {
        if token == self.token {
            self.accept(node, reg)?;
        } else if self.drive(token, ev, node)
            && let Some(mut c) = self.conns.remove(&token)
        {
            reg.deregister(&mut c.stream, token);
        }
        Ok(Flow::Continue)
    }

    fn deadline(&self) -> Option<Instant> {
        let idle = self.conns.values().map(|c| c.last + P::LIMITS.idle).min();
        match (idle, self.retry_accept) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn timer(&mut self, now: Instant, node: &mut Node, reg: &mut Registrar<'_>) {
        let idle: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| c.last + P::LIMITS.idle <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in idle {
            if let Some(mut c) = self.conns.remove(&t) {
                P::counts(node).idle += 1;
                warn!(
                    peer = c.peer,
                    "{} connection idle for {:?}: closed",
                    P::NAME,
                    P::LIMITS.idle
                );
                reg.deregister(&mut c.stream, t);
            }
        }
        if self.retry_accept.is_some_and(|r| r <= now)
            && let Err(e) = self.accept(node, reg)
        {
            warn!("{} accept: {e:#}", P::NAME);
        }
    }
}

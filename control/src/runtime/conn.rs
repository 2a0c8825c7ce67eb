//! Stream connections of the admin and metrics servers: buffering,
//! framing limits and the accept/serve/flush/close cycle, once for both.
//! What a request means is the [`Protocol`]'s.

use std::{
    collections::HashMap,
    io::{self, ErrorKind, Read, Write},
};

use anyhow::Result;
use mio::{Interest, Token, event::Event, event::Source};
use tracing::warn;

use super::{
    event_loop::{Flow, Registrar, Service},
    node::Node,
};

/// A listening socket.
pub trait Listen: Source {
    /// The accepted stream type.
    type Stream: Read + Write + Source;
    /// Accepts one connection.
    fn accept_one(&self) -> io::Result<Self::Stream>;
}

impl Listen for mio::net::UnixListener {
    type Stream = mio::net::UnixStream;
    fn accept_one(&self) -> io::Result<Self::Stream> {
        self.accept().map(|(s, _)| s)
    }
}

impl Listen for mio::net::TcpListener {
    type Stream = mio::net::TcpStream;
    fn accept_one(&self) -> io::Result<Self::Stream> {
        self.accept().map(|(s, _)| s)
    }
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
    /// Consumes complete requests from `b.inbuf`, queues answers.
    fn serve(&mut self, b: &mut Buffers, node: &mut Node);
    /// The answer to a request over [`Protocol::MAX_IN`].
    fn too_long(&self) -> Vec<u8>;
}

struct Conn<S> {
    stream: S,
    buf: Buffers,
}

/// A listener and its connections, speaking `P`.
pub struct Server<L: Listen, P: Protocol> {
    listener: L,
    token: Token,
    conns: HashMap<Token, Conn<L::Stream>>,
    protocol: P,
}

impl<L: Listen, P: Protocol> Server<L, P> {
    /// A server on `listener` (bound already).
    pub fn new(listener: L, protocol: P) -> Self {
        Self {
            listener,
            token: Token(usize::MAX),
            conns: HashMap::new(),
            protocol,
        }
    }

    fn accept(&mut self, reg: &mut Registrar<'_>) -> Result<()> {
        loop {
            let mut stream = match self.listener.accept_one() {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) => {
                    warn!("{} accept: {e}", P::NAME);
                    return Ok(());
                }
            };
            let t = reg.register(&mut stream, Interest::READABLE | Interest::WRITABLE)?;
            self.conns.insert(
                t,
                Conn {
                    stream,
                    buf: Buffers::default(),
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
        if ev.is_readable() || ev.is_read_closed() {
            let mut chunk = [0u8; 65536];
            loop {
                match c.stream.read(&mut chunk) {
                    Ok(0) => {
                        done = true;
                        break;
                    }
                    Ok(n) => {
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
            self.protocol.serve(&mut c.buf, node);
        }
        match flush(&mut c.stream, &mut c.buf.outbuf) {
            Ok(()) => done |= c.buf.close_after_write && c.buf.outbuf.is_empty(),
            Err(e) if e.kind() == ErrorKind::WouldBlock => done = false,
            Err(_) => return true,
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
            self.accept(reg)?;
        } else if self.drive(token, ev, node)
            && let Some(mut c) = self.conns.remove(&token)
        {
            reg.deregister(&mut c.stream, token);
        }
        Ok(Flow::Continue)
    }
}

//! The event loop: it polls and dispatches, nothing else. Every I/O source
//! belongs to a [`Service`], which registers its own descriptors (tokens
//! come from a slab, so a token names its service) and asks for its own
//! timer; the loop owns no token ranges and no match over sources
//! (rust-vmm's event-manager and boringtun's `device/` work the same way).

use std::{
    io::{self, ErrorKind},
    time::Instant,
};

use anyhow::{Context as _, Result};
use mio::{Events, Interest, Poll, Registry, Token, event::Event, event::Source};
use slab::Slab;

use super::node::Node;

/// Whether the loop goes on after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep serving.
    Continue,
    /// Stop the loop (SIGTERM, SIGINT).
    Stop,
}

/// One source of work for the loop: its descriptors, its timer, its
/// handling of readiness.
pub trait Service {
    /// Registers the service's descriptors (called once, before polling).
    fn register(&mut self, reg: &mut Registrar<'_>) -> Result<()>;
    /// One of the service's tokens is ready.
    fn ready(
        &mut self,
        token: Token,
        ev: &Event,
        node: &mut Node,
        reg: &mut Registrar<'_>,
    ) -> Result<Flow>;
    /// When the service wants [`Service::timer`] called next.
    fn deadline(&self) -> Option<Instant> {
        None
    }
    /// The deadline passed.
    fn timer(&mut self, _now: Instant, _node: &mut Node, _reg: &mut Registrar<'_>) {}
}

/// Registers descriptors for one service, with tokens from the loop's slab.
pub struct Registrar<'a> {
    registry: &'a Registry,
    owners: &'a mut Slab<usize>,
    service: usize,
}

impl Registrar<'_> {
    /// Registers `src` for `interest`; the token is new and names this
    /// service.
    pub fn register<S: Source + ?Sized>(
        &mut self,
        src: &mut S,
        interest: Interest,
    ) -> io::Result<Token> {
        let t = Token(self.owners.insert(self.service));
        if let Err(e) = self.registry.register(src, t, interest) {
            self.owners.remove(t.0);
            return Err(e);
        }
        Ok(t)
    }

    /// Deregisters `src` and frees its token.
    pub fn deregister<S: Source + ?Sized>(&mut self, src: &mut S, token: Token) {
        let _ = self.registry.deregister(src);
        if self.owners.contains(token.0) {
            self.owners.remove(token.0);
        }
    }
}

/// Runs `services` over `node` until one of them says stop.
pub fn run(node: &mut Node, services: &mut [Box<dyn Service>]) -> Result<()> {
    let mut poll = Poll::new().context("creating the event loop")?;
    let mut owners: Slab<usize> = Slab::new();
    for (i, s) in services.iter_mut().enumerate() {
        s.register(&mut Registrar {
            registry: poll.registry(),
            owners: &mut owners,
            service: i,
        })?;
    }
    let mut events = Events::with_capacity(256);
    loop {
        let now = Instant::now();
        let next = services.iter().filter_map(|s| s.deadline()).min();
        let timeout = next.map(|d| d.saturating_duration_since(now));
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("polling");
        }
        let now = Instant::now();
        for (i, s) in services.iter_mut().enumerate() {
            if s.deadline().is_some_and(|d| d <= now) {
                let mut reg = Registrar {
                    registry: poll.registry(),
                    owners: &mut owners,
                    service: i,
                };
                s.timer(now, node, &mut reg);
            }
        }
        for ev in events.iter() {
            let Some(&i) = owners.get(ev.token().0) else {
                continue;
            };
            let Some(s) = services.get_mut(i) else {
                continue;
            };
            let mut reg = Registrar {
                registry: poll.registry(),
                owners: &mut owners,
                service: i,
            };
            if s.ready(ev.token(), ev, node, &mut reg)? == Flow::Stop {
                return Ok(());
            }
        }
    }
}

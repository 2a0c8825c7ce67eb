//! Signals and the 1 s housekeeping timer, as event-loop services.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use mio::{Interest, Token, event::Event};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use tracing::{error, info};

use super::{
    event_loop::{Flow, Registrar, Service},
    node::Node,
};
use crate::commands::Command;

/// SIGHUP reloads the configuration; SIGTERM and SIGINT stop the loop.
pub struct SignalService {
    signals: Signals,
}

impl SignalService {
    /// Installs the handlers.
    pub fn new() -> Result<Self> {
        let signals =
            Signals::new([SIGTERM, SIGINT, SIGHUP]).context("installing signal handlers")?;
        Ok(Self { signals })
    }
}

impl Service for SignalService {
    fn register(&mut self, reg: &mut Registrar<'_>) -> Result<()> {
        reg.register(&mut self.signals, Interest::READABLE)?;
        Ok(())
    }

    fn ready(
        &mut self,
        _token: Token,
        _ev: &Event,
        node: &mut Node,
        _reg: &mut Registrar<'_>,
    ) -> Result<Flow> {
        for sig in self.signals.pending() {
            if sig == SIGHUP {
                info!("SIGHUP: re-reading the configuration");
                match node.execute(Command::Reload { force: false }) {
                    Ok(c) => info!(generation = c.new_generation, "reload applied"),
                    Err(e) => error!("reload refused: {e:#}"),
                }
            } else {
                info!(signal = sig, "stopping");
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Continue)
    }
}

/// Once a second: keepalive liveness.
pub struct TickService {
    next: Instant,
}

/// The housekeeping period.
const TICK: Duration = Duration::from_secs(1);

impl Default for TickService {
    /// The first tick one period from now.
    fn default() -> Self {
        Self {
            next: Instant::now() + TICK,
        }
    }
}

impl Service for TickService {
    fn register(&mut self, _reg: &mut Registrar<'_>) -> Result<()> {
        Ok(())
    }

    fn ready(
        &mut self,
        _token: Token,
        _ev: &Event,
        _node: &mut Node,
        _reg: &mut Registrar<'_>,
    ) -> Result<Flow> {
        Ok(Flow::Continue)
    }

    fn deadline(&self) -> Option<Instant> {
        Some(self.next)
    }

    fn timer(&mut self, now: Instant, node: &mut Node, _reg: &mut Registrar<'_>) {
        node.tick();
        self.next = now + TICK;
    }
}

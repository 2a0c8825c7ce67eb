//! Which peer path the sync stream runs on: the first reachable one.
//!
//! The heartbeats say which paths reach the peer (the HA thread marks a
//! path up while it is heard within the dead interval); this decides, on
//! the caller's clock, where the connecting side connects and when a
//! stream must move. Kept apart from the sockets so it is tested on a
//! simulated clock.
//!
//! - **Connect** only while some path carries heartbeats (a silent peer
//!   is dead or stopped: a stopped process's kernel still completes the
//!   handshake, and each connection costs a bulk), on the first such
//!   path; after a failed attempt, on the next one, in `ha.peers` order.
//! - **Leave** a path silent for [`LEAVE_AFTER`]: TCP alone retransmits
//!   into a cut link for minutes while the other paths keep the peer
//!   alive, and the stations it should carry never arrive. Both sides
//!   leave, so the accepting side is free for the new connection.
//! - **Return** (connecting side only) to an earlier path once it has
//!   carried heartbeats for [`RETURN_AFTER`]: the first path is the one
//!   the operator chose for the stream. The hold keeps a flapping link
//!   from costing a bulk each time.
//!
//! [`Paths`] decides; the service's `connect` and `follow_paths` below act.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use mio::net::TcpStream;
use tracing::warn;

use super::{HEARD_POLL, RECONNECT, SyncService};
use crate::runtime::{event_loop::Registrar, node::Node};

/// A stream leaves a path that has carried no heartbeat this long: five
/// times the dead interval with default timers, so heartbeat jitter under
/// a bulk (67 ms at most, bench/RESULTS.md) never moves it.
pub const LEAVE_AFTER: Duration = Duration::from_secs(1);
/// A stream goes back to an earlier path that has carried heartbeats
/// this long.
pub const RETURN_AFTER: Duration = Duration::from_secs(10);

/// What to do with the stream on its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// Its path has been silent for [`LEAVE_AFTER`]: drop it.
    Leave,
    /// An earlier path (this index) has been up for [`RETURN_AFTER`]:
    /// drop it and connect there.
    Return(usize),
}

/// The paths as the stream sees them.
#[derive(Debug)]
pub struct Paths {
    /// Per path, in `ha.peers` order: carrying heartbeats, and since when.
    seen: Vec<(bool, Instant)>,
    /// Attempts that failed since the last connection.
    failures: usize,
}

impl Paths {
    /// `n` paths, none heard yet.
    pub fn new(n: usize, now: Instant) -> Self {
        Self {
            seen: vec![(false, now); n],
            failures: 0,
        }
    }

    /// Records which paths carry heartbeats at `now`.
    pub fn observe(&mut self, up: &[bool], now: Instant) {
        for (s, &u) in self.seen.iter_mut().zip(up) {
            if s.0 != u {
                *s = (u, now);
            }
        }
    }

    /// The path to connect on, or `None` while every path is silent.
    pub fn target(&self) -> Option<usize> {
        let up: Vec<usize> = (0..self.seen.len()).filter(|&i| self.seen[i].0).collect();
        if up.is_empty() {
            return None;
        }
        Some(up[self.failures % up.len()])
    }

    /// An attempt failed: the next one takes the next path.
    pub fn failed(&mut self) {
        self.failures = self.failures.wrapping_add(1);
    }

    /// A stream is up on path `on` at `now`. A path not heard yet (the
    /// peer's heartbeat may trail its connection) gets [`LEAVE_AFTER`]
    /// from now to be heard.
    pub fn connected(&mut self, on: usize, now: Instant) {
        self.failures = 0;
        if let Some(s) = self.seen.get_mut(on)
            && !s.0
        {
            s.1 = now;
        }
    }

    /// What to do with a stream on path `on` at `now`; `may_return` for
    /// the side that connects (the other cannot choose a path).
    pub fn verdict(&self, on: usize, now: Instant, may_return: bool) -> Option<Move> {
        let (up, since) = *self.seen.get(on)?;
        if !up && now.saturating_duration_since(since) >= LEAVE_AFTER {
            return Some(Move::Leave);
        }
        if may_return {
            return (0..on)
                .find(|&q| {
                    let (up, since) = self.seen[q];
                    up && now.saturating_duration_since(since) >= RETURN_AFTER
                })
                .map(Move::Return);
        }
        None
    }
}

impl SyncService {
    /// Connects on the first path that carries heartbeats (none: wait).
    pub(super) fn connect(&mut self, now: Instant, reg: &mut Registrar<'_>) {
        self.next_connect = now + RECONNECT;
        let Some(on) = self.paths.target() else {
            // Look again soon: the peer's first heartbeat is due within
            // one interval of its start.
            self.next_connect = now + HEARD_POLL;
            return;
        };
        let to = SocketAddr::new(self.peers[on], self.port);
        match TcpStream::connect(to) {
            Ok(s) => self.adopt(s, (true, on), reg),
            Err(e) => {
                self.paths.failed();
                warn!("HA sync: connecting to {to}: {e}");
            }
        }
    }

    /// Keeps the stream on the first reachable path: leaves a silent one,
    /// returns to an earlier one that is back.
    pub(super) fn follow_paths(&mut self, node: &Node, now: Instant, reg: &mut Registrar<'_>) {
        if let Some(ha) = &node.ha {
            self.paths.observe(&ha.paths_up(), now);
        }
        let Some(c) = self.conn.as_ref().filter(|c| !c.connecting) else {
            return;
        };
        let on = c.path;
        let why = match self.paths.verdict(on, now, self.we_connect) {
            None => return,
            Some(Move::Leave) => format!(
                "no heartbeat on path {} ({}) for {} s",
                on + 1,
                self.peers[on],
                LEAVE_AFTER.as_secs()
            ),
            Some(Move::Return(q)) => format!(
                "path {} ({}) is back for {} s",
                q + 1,
                self.peers[q],
                RETURN_AFTER.as_secs()
            ),
        };
        self.drop_conn(node, reg, &why);
        // Reconnect at once, on the path the heartbeats now point to.
        self.next_connect = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn connects_only_to_a_path_that_carries_heartbeats_first_one_first() {
        let t0 = Instant::now();
        let mut p = Paths::new(2, t0);
        assert_eq!(p.target(), None, "a silent peer is not connected to");
        p.observe(&[false, true], ms(t0, 50));
        assert_eq!(p.target(), Some(1));
        p.observe(&[true, true], ms(t0, 100));
        assert_eq!(p.target(), Some(0), "the first reachable path");
    }

    #[test]
    fn a_failed_attempt_moves_to_the_next_path_and_a_connection_resets() {
        let t0 = Instant::now();
        let mut p = Paths::new(3, t0);
        p.observe(&[true, false, true], t0);
        assert_eq!(p.target(), Some(0));
        p.failed();
        assert_eq!(p.target(), Some(2), "path 2 is silent: skipped");
        p.failed();
        assert_eq!(p.target(), Some(0), "round again");
        p.failed();
        p.connected(2, t0);
        assert_eq!(p.target(), Some(0), "the first path again after a success");
    }

    #[test]
    fn a_path_silent_for_a_second_is_left_jitter_is_not() {
        let t0 = Instant::now();
        let mut p = Paths::new(2, t0);
        p.observe(&[true, true], t0);
        p.connected(0, t0);
        p.observe(&[false, true], ms(t0, 100));
        assert_eq!(p.verdict(0, ms(t0, 300), true), None, "a missed heartbeat");
        p.observe(&[true, true], ms(t0, 300));
        assert_eq!(p.verdict(0, ms(t0, 2_000), true), None);
        p.observe(&[false, true], ms(t0, 2_000));
        assert_eq!(p.verdict(0, ms(t0, 2_999), true), None);
        assert_eq!(p.verdict(0, ms(t0, 3_000), true), Some(Move::Leave));
        assert_eq!(p.verdict(0, ms(t0, 3_000), false), Some(Move::Leave));
        assert_eq!(p.target(), Some(1), "the stream reconnects on path 2");
    }

    #[test]
    fn a_path_not_heard_yet_gets_time_from_the_connection() {
        let t0 = Instant::now();
        let mut p = Paths::new(2, t0);
        p.observe(&[false, true], t0);
        // Accepted on path 1 at 5 s, its heartbeats not in yet.
        p.connected(0, ms(t0, 5_000));
        assert_eq!(p.verdict(0, ms(t0, 5_200), false), None);
        assert_eq!(p.verdict(0, ms(t0, 6_000), false), Some(Move::Leave));
    }

    #[test]
    fn the_connecting_side_returns_to_an_earlier_path_after_the_hold() {
        let t0 = Instant::now();
        let mut p = Paths::new(3, t0);
        p.observe(&[false, false, true], t0);
        p.connected(2, t0);
        p.observe(&[false, true, true], ms(t0, 1_000));
        p.observe(&[true, true, true], ms(t0, 4_000));
        assert_eq!(p.verdict(2, ms(t0, 10_999), true), None);
        assert_eq!(p.verdict(2, ms(t0, 11_000), true), Some(Move::Return(1)));
        assert_eq!(p.verdict(2, ms(t0, 14_000), true), Some(Move::Return(0)));
        assert_eq!(
            p.verdict(2, ms(t0, 14_000), false),
            None,
            "the acceptor stays"
        );
        // A flap restarts the hold.
        p.observe(&[false, true, true], ms(t0, 14_500));
        p.observe(&[true, true, true], ms(t0, 15_000));
        assert_eq!(p.verdict(1, ms(t0, 20_000), true), None);
        assert_eq!(p.verdict(1, ms(t0, 25_000), true), Some(Move::Return(0)));
        assert_eq!(p.verdict(0, ms(t0, 25_000), true), None);
    }
}

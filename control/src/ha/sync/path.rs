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
//!   handshake, and each connection costs a bulk). Preferred, in
//!   `ha.peers` order: a path up for [`RETURN_AFTER`] and not held, then
//!   any path up and not held, then any path up.
//! - **Hold** a path whose attempt failed or timed out, or whose stream
//!   ended within [`RETURN_AFTER`] of being made (whoever ended it): its
//!   heartbeats pass but TCP does not (a firewall), or the peer hears
//!   none on it and leaves. A hold lasts [`RETURN_AFTER`] and doubles
//!   with each one in a row, up to [`HOLD_MAX`]; a stream that lasts
//!   [`RETURN_AFTER`] clears it. Without it such a path would win every
//!   choice and cost a bulk every few seconds.
//! - **Leave** a path marked down for [`LEAVE_AFTER`]: TCP alone
//!   retransmits into a cut link for minutes while the other paths keep
//!   the peer alive, and the stations it should carry never arrive. Both
//!   sides leave, so the accepting side is free for the new connection.
//! - **Return** (connecting side only) to an earlier path once it has
//!   carried heartbeats for [`RETURN_AFTER`] and is not held: the first
//!   path is the one the operator chose for the stream. The caller does
//!   not return in the middle of a bulk or a handover.
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

/// A stream leaves a path marked down (no heartbeat within the dead
/// interval) this long: heartbeat jitter under a bulk (75 ms at most,
/// bench/RESULTS.md) never marks a path down at default timers, and a
/// second more rides out a blip.
pub const LEAVE_AFTER: Duration = Duration::from_secs(1);
/// A stream goes back to an earlier path that has carried heartbeats
/// this long; also the first hold of a path.
pub const RETURN_AFTER: Duration = Duration::from_secs(10);
/// The longest hold.
pub const HOLD_MAX: Duration = Duration::from_secs(600);

/// What to do with the stream on its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// Its path has been down for [`LEAVE_AFTER`]: drop it.
    Leave,
    /// An earlier path (this index) has been up for [`RETURN_AFTER`]:
    /// drop it and connect there.
    Return(usize),
}

/// One path as the stream sees it.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// Carrying heartbeats, and since when.
    up: bool,
    since: Instant,
    /// Not chosen before this (a failed attempt or a short stream).
    held_until: Option<Instant>,
    /// Holds in a row (the next one lasts twice as long).
    holds: u32,
}

/// The paths as the stream sees them.
#[derive(Debug)]
pub struct Paths {
    /// Per path, in `ha.peers` order.
    seen: Vec<Seen>,
    /// Attempts that failed since the last connection (rotates the
    /// choice when every path up is held).
    failures: usize,
}

impl Paths {
    /// `n` paths, none heard yet.
    pub fn new(n: usize, now: Instant) -> Self {
        let s = Seen {
            up: false,
            since: now,
            held_until: None,
            holds: 0,
        };
        Self {
            seen: vec![s; n],
            failures: 0,
        }
    }

    /// Records which paths carry heartbeats at `now`.
    pub fn observe(&mut self, up: &[bool], now: Instant) {
        for (s, &u) in self.seen.iter_mut().zip(up) {
            if s.up != u {
                s.up = u;
                s.since = now;
            }
        }
    }

    fn held(&self, i: usize, now: Instant) -> bool {
        self.seen[i].held_until.is_some_and(|t| now < t)
    }

    fn stable(&self, i: usize, now: Instant) -> bool {
        let s = &self.seen[i];
        s.up && now.saturating_duration_since(s.since) >= RETURN_AFTER && !self.held(i, now)
    }

    /// The path to connect on at `now`, or `None` while every path is
    /// silent.
    pub fn target(&self, now: Instant) -> Option<usize> {
        let n = self.seen.len();
        if let Some(i) = (0..n).find(|&i| self.stable(i, now)) {
            return Some(i);
        }
        if let Some(i) = (0..n).find(|&i| self.seen[i].up && !self.held(i, now)) {
            return Some(i);
        }
        let up: Vec<usize> = (0..n).filter(|&i| self.seen[i].up).collect();
        (!up.is_empty()).then(|| up[self.failures % up.len()])
    }

    /// An attempt on path `on` failed at `now`.
    pub fn failed(&mut self, on: usize, now: Instant) {
        self.failures = self.failures.wrapping_add(1);
        self.hold(on, now);
    }

    fn hold(&mut self, on: usize, now: Instant) {
        if let Some(s) = self.seen.get_mut(on) {
            let d = RETURN_AFTER
                .saturating_mul(1 << s.holds.min(10))
                .min(HOLD_MAX);
            s.held_until = Some(now + d);
            s.holds = s.holds.saturating_add(1);
        }
    }

    /// A stream is up on path `on` at `now`. A path not heard yet (the
    /// peer's heartbeat may trail its connection) gets [`LEAVE_AFTER`]
    /// from now to be heard.
    pub fn connected(&mut self, on: usize, now: Instant) {
        self.failures = 0;
        if let Some(s) = self.seen.get_mut(on)
            && !s.up
        {
            s.since = now;
        }
    }

    /// The stream on path `on`, made at `made`, ended at `now`: a short
    /// one holds its path, a long one clears the path's holds.
    pub fn ended(&mut self, on: usize, made: Instant, now: Instant) {
        if now.saturating_duration_since(made) < RETURN_AFTER {
            self.hold(on, now);
        } else if let Some(s) = self.seen.get_mut(on) {
            s.held_until = None;
            s.holds = 0;
        }
    }

    /// What to do with a stream on path `on` at `now`; `may_return` for
    /// the side that connects (the other cannot choose a path).
    pub fn verdict(&self, on: usize, now: Instant, may_return: bool) -> Option<Move> {
        let s = self.seen.get(on)?;
        if !s.up && now.saturating_duration_since(s.since) >= LEAVE_AFTER {
            return Some(Move::Leave);
        }
        if may_return {
            return (0..on).find(|&q| self.stable(q, now)).map(Move::Return);
        }
        None
    }
}

impl SyncService {
    /// Connects on the path [`Paths::target`] picks (none up: wait).
    pub(super) fn connect(&mut self, now: Instant, reg: &mut Registrar<'_>) {
        self.next_connect = now + RECONNECT;
        let Some(on) = self.paths.target(now) else {
            // Look again soon: the peer's first heartbeat is due within
            // one interval of its start.
            self.next_connect = now + HEARD_POLL;
            return;
        };
        let to = SocketAddr::new(self.peers[on], self.port);
        match TcpStream::connect(to) {
            Ok(s) => self.adopt(s, (true, on), reg),
            Err(e) => {
                self.paths.failed(on, now);
                warn!("HA sync: connecting to {to} (path {}): {e}", on + 1);
            }
        }
    }

    /// Keeps the stream on the first reachable path: leaves a silent one,
    /// returns to an earlier one that is back (not in the middle of a
    /// bulk or a handover, which a drop would cut short).
    pub(super) fn follow_paths(&mut self, node: &Node, now: Instant, reg: &mut Registrar<'_>) {
        if let Some(ha) = &node.ha {
            self.paths.observe(&ha.paths_up(), now);
        }
        let Some(c) = self.conn.as_ref().filter(|c| !c.connecting) else {
            return;
        };
        let on = c.path;
        let busy = c.bulk_rx.is_some() || !self.status.bulk_sent || self.handovers.under_way();
        let why = match self.paths.verdict(on, now, self.we_connect) {
            None => return,
            Some(Move::Return(_)) if busy => return,
            Some(Move::Leave) => format!(
                "path {} ({}) marked down for {} s",
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
        // Reconnect on the next turn of the loop, not this one: the old
        // socket's token is free again, and events already polled for it
        // must not reach the new one.
        self.next_connect = now + Duration::from_millis(1);
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
        assert_eq!(p.target(t0), None, "a silent peer is not connected to");
        p.observe(&[false, true], ms(t0, 50));
        assert_eq!(p.target(ms(t0, 50)), Some(1));
        p.observe(&[true, true], ms(t0, 100));
        assert_eq!(p.target(ms(t0, 100)), Some(0), "the first reachable path");
    }

    #[test]
    fn a_path_up_for_the_hold_is_preferred_to_one_just_back() {
        let t0 = Instant::now();
        let mut p = Paths::new(2, t0);
        p.observe(&[false, true], t0);
        p.observe(&[true, true], ms(t0, 9_000));
        assert_eq!(p.target(ms(t0, 10_000)), Some(1), "path 1 may be flapping");
        assert_eq!(p.target(ms(t0, 19_000)), Some(0));
    }

    #[test]
    fn a_failed_attempt_holds_its_path_and_the_next_one_is_tried() {
        let t0 = Instant::now();
        let mut p = Paths::new(3, t0);
        p.observe(&[true, false, true], t0);
        assert_eq!(p.target(t0), Some(0));
        p.failed(0, t0);
        assert_eq!(p.target(t0), Some(2), "path 2 is silent: skipped");
        p.failed(2, ms(t0, 2_000));
        // Every path up is held: take them in turn.
        let a = p.target(ms(t0, 2_000));
        p.failed(a.unwrap(), ms(t0, 2_000));
        assert_ne!(p.target(ms(t0, 2_000)), a);
        p.connected(2, ms(t0, 3_000));
        assert_eq!(p.target(ms(t0, 12_000)), Some(2), "path 1 still held");
    }

    #[test]
    fn a_path_whose_tcp_fails_does_not_pull_the_stream_back_every_time() {
        // Heartbeats pass on path 1 but its TCP does not: each attempt
        // times out after 2 s and the stream runs on path 2 meanwhile.
        let t0 = Instant::now();
        let mut p = Paths::new(2, t0);
        p.observe(&[true, true], t0);
        let mut now = ms(t0, 60_000);
        let end = now + Duration::from_secs(3_600);
        let mut attempts = 0;
        while now < end {
            if p.target(now) == Some(0) {
                attempts += 1;
                now += Duration::from_secs(2);
                p.failed(0, now);
                continue;
            }
            let made = now;
            p.connected(1, made);
            while now < end && p.verdict(1, now, true).is_none() {
                now += Duration::from_secs(1);
            }
            p.ended(1, made, now);
        }
        // Holds of 10, 20, 40 ... 600 s: about 11 attempts in an hour,
        // not one every few seconds; it still tries.
        assert!(
            (5..=12).contains(&attempts),
            "{attempts} attempts on path 1"
        );
    }

    #[test]
    fn a_short_stream_holds_its_path_and_a_long_one_clears_the_hold() {
        let t0 = Instant::now();
        let mut p = Paths::new(2, t0);
        p.observe(&[true, true], t0);
        let t = ms(t0, 20_000);
        p.connected(0, t);
        // The peer closed it after 1 s (it hears nothing on path 1).
        p.ended(0, t, ms(t0, 21_000));
        assert_eq!(p.target(ms(t0, 22_000)), Some(1));
        assert_eq!(p.verdict(1, ms(t0, 25_000), true), None, "held: no return");
        assert_eq!(p.verdict(1, ms(t0, 31_000), true), Some(Move::Return(0)));
        p.connected(0, ms(t0, 31_000));
        p.ended(0, ms(t0, 31_000), ms(t0, 32_000));
        assert_eq!(p.verdict(1, ms(t0, 45_000), true), None, "twice as long");
        assert_eq!(p.verdict(1, ms(t0, 52_000), true), Some(Move::Return(0)));
        p.connected(0, ms(t0, 52_000));
        p.ended(0, ms(t0, 52_000), ms(t0, 70_000));
        assert_eq!(p.target(ms(t0, 70_000)), Some(0), "a long stream clears it");
    }

    #[test]
    fn a_path_down_for_a_second_is_left_jitter_is_not() {
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
        assert_eq!(
            p.target(ms(t0, 3_000)),
            Some(1),
            "the stream reconnects on path 2"
        );
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

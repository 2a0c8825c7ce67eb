//! CAPWAP data channel keepalives (RFC 5415 §4.4.1), as the control process
//! handles them: the XDP program punts every keepalive to the host, `ferry
//! run` reads it from its data-port socket, answers with the same bytes, and
//! uses the Session ID to bind tunnels declared by session to the address
//! and port the AP's data comes from (APs behind NAT).
//!
//! This module is the protocol logic only: parsing, the echo, session
//! binding, liveness and the rate limit for unknown sessions. The sockets
//! are [`service`]'s, registered with the event loop.
//!
//! Real APs differ from the RFC: some set WBID 1, and some put 20 in the
//! message element length (the TLVs alone), 22 (the TLVs plus the length
//! field itself) or leave the length out. All of these are accepted. The
//! Session ID element is found by walking the TLVs, never by a fixed
//! offset.

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use ferry_ebpf::capwap;
use thiserror::Error;

pub mod service;
pub mod socket;

/// A Session ID (16 bytes, RFC 5415 §4.6.37).
pub type SessionId = [u8; capwap::SESSION_ID_LEN];

/// Why a datagram on the data port is not a usable keepalive.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeepaliveError {
    /// Shorter than a CAPWAP header.
    #[error("shorter than a CAPWAP header")]
    Short,
    /// Preamble version or type not 0 (DTLS keepalives are not handled here).
    #[error("preamble version {0} type {1} is not a clear CAPWAP header")]
    Preamble(u8, u8),
    /// HLEN below 2 or past the datagram.
    #[error("HLEN {0} is invalid for a {1}-byte datagram")]
    Hlen(u8, usize),
    /// The K flag is not set.
    #[error("not a keepalive (K flag clear)")]
    NotKeepalive,
    /// No Session ID element in the message elements.
    #[error("no Session ID element")]
    NoSessionId,
}

/// A parsed keepalive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keepalive {
    /// The Session ID it carries.
    pub session_id: SessionId,
}

/// Message element type and length fields: 2 + 2 bytes.
const TLV_HEADER: usize = 4;

/// Parses a keepalive datagram (the UDP payload).
pub fn parse(d: &[u8]) -> Result<Keepalive, KeepaliveError> {
    if d.len() < capwap::FIXED_LEN {
        return Err(KeepaliveError::Short);
    }
    let mut fixed = [0u8; capwap::FIXED_LEN];
    fixed.copy_from_slice(&d[..capwap::FIXED_LEN]);
    let h = capwap::Header::parse(&fixed);
    if h.version != 0 || h.kind != capwap::TYPE_CLEAR {
        return Err(KeepaliveError::Preamble(h.version, h.kind));
    }
    if h.hlen < capwap::MIN_HLEN || h.header_bytes() > d.len() {
        return Err(KeepaliveError::Hlen(h.hlen, d.len()));
    }
    if !h.keepalive {
        return Err(KeepaliveError::NotKeepalive);
    }
    let body = &d[h.header_bytes()..];
    // With a length field the TLVs start 2 bytes in; without one they
    // start at once. Try the RFC layout first, then the bare one.
    for start in [2usize, 0] {
        if let Some(sid) = find_session_id(body.get(start..).unwrap_or(&[])) {
            return Ok(Keepalive { session_id: sid });
        }
    }
    Err(KeepaliveError::NoSessionId)
}

/// Walks TLVs (type u16, length u16, value) for a 16-byte Session ID.
fn find_session_id(mut tlvs: &[u8]) -> Option<SessionId> {
    while tlvs.len() >= TLV_HEADER {
        let ty = u16::from_be_bytes([tlvs[0], tlvs[1]]);
        let len = usize::from(u16::from_be_bytes([tlvs[2], tlvs[3]]));
        let value = tlvs.get(TLV_HEADER..TLV_HEADER + len)?;
        if ty == capwap::ELEMENT_SESSION_ID && len == capwap::SESSION_ID_LEN {
            let mut sid = [0u8; capwap::SESSION_ID_LEN];
            sid.copy_from_slice(value);
            return Some(sid);
        }
        tlvs = &tlvs[TLV_HEADER + len..];
    }
    None
}

/// The reply to a keepalive: the AC echoes it unchanged (RFC 5415 §4.4.1).
pub fn echo(d: &[u8]) -> Vec<u8> {
    d.to_vec()
}

/// What a keepalive did to the session table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// First keepalive of the session: the tunnel is now bound to this peer.
    Bound,
    /// The session was bound to another address or port (NAT rebinding).
    Rebound {
        /// The peer it was bound to before.
        from: SocketAddr,
    },
    /// Same peer as before: liveness refreshed.
    Refreshed,
    /// From another peer, but the binding moved less than the rebind
    /// interval ago: it stays where it is and the keepalive is not answered
    /// (one forged or flapping datagram must not move an AP's clients).
    Damped {
        /// The peer it stays bound to.
        bound: SocketAddr,
    },
    /// No tunnel is declared with this Session ID.
    Unknown,
}

/// Liveness of one tunnel's data channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionState {
    /// The AP's address and port, once a keepalive has been seen.
    pub peer: Option<SocketAddr>,
    /// When the last keepalive arrived.
    pub last_seen: Option<Instant>,
    /// Keepalives answered.
    pub keepalives: u64,
    /// Marked dead (no keepalive for the dead interval); cleared by the
    /// next keepalive.
    pub dead: bool,
    /// When the binding last moved to another peer.
    pub moved: Option<Instant>,
}

/// Data channel liveness by tunnel (AP name), and the Session IDs that
/// tunnels declared by session are bound by.
#[derive(Debug, Clone)]
pub struct Sessions {
    by_sid: HashMap<SessionId, String>,
    state: HashMap<String, SessionState>,
    dead_interval: Duration,
    rebind_interval: Duration,
}

/// Default time without keepalives after which a data channel is dead.
pub const DEFAULT_DEAD_INTERVAL: Duration = Duration::from_secs(60);

/// Default shortest time between two moves of one session binding.
pub const DEFAULT_REBIND_INTERVAL: Duration = Duration::from_secs(5);

impl Sessions {
    /// An empty table: channels are dead after `dead_interval` without a
    /// keepalive, and a binding moves at most once per `rebind_interval`.
    pub fn new(dead_interval: Duration, rebind_interval: Duration) -> Self {
        Self {
            by_sid: HashMap::new(),
            state: HashMap::new(),
            dead_interval,
            rebind_interval,
        }
    }

    /// Sets the tunnels (AP name, Session ID if declared by session) after
    /// a configuration change; tunnels that stay keep their state.
    pub fn declare<'a>(&mut self, tunnels: impl IntoIterator<Item = (&'a str, Option<SessionId>)>) {
        let mut by_sid = HashMap::new();
        let mut state = HashMap::new();
        for (ap, sid) in tunnels {
            if let Some(sid) = sid {
                // A session tunnel whose Session ID changed starts unbound.
                let same = self.by_sid.get(&sid).is_some_and(|a| a == ap);
                by_sid.insert(sid, ap.to_string());
                let st = if same {
                    self.state.get(ap).copied().unwrap_or_default()
                } else {
                    SessionState::default()
                };
                state.insert(ap.to_string(), st);
            } else {
                state.insert(
                    ap.to_string(),
                    self.state.get(ap).copied().unwrap_or_default(),
                );
            }
        }
        self.by_sid = by_sid;
        self.state = state;
    }

    /// Restores a binding saved before a restart.
    pub fn restore(&mut self, ap: &str, peer: SocketAddr) {
        if let Some(s) = self.state.get_mut(ap) {
            s.peer = Some(peer);
        }
    }

    /// The AP name a Session ID is declared for.
    pub fn tunnel_of(&self, sid: &SessionId) -> Option<&str> {
        self.by_sid.get(sid).map(String::as_str)
    }

    /// Records a keepalive with `sid` from `peer` at `now` for a tunnel
    /// declared by session.
    pub fn keepalive(&mut self, sid: &SessionId, peer: SocketAddr, now: Instant) -> Binding {
        let Some(ap) = self.by_sid.get(sid) else {
            return Binding::Unknown;
        };
        let s = self.state.entry(ap.clone()).or_default();
        if let Some(bound) = s.peer
            && bound != peer
            && s.moved
                .or(s.last_seen)
                .is_some_and(|t| now.saturating_duration_since(t) < self.rebind_interval)
        {
            // Damped: neither the binding nor the liveness changes.
            return Binding::Damped { bound };
        }
        let before = s.peer.replace(peer);
        s.last_seen = Some(now);
        s.keepalives += 1;
        s.dead = false;
        match before {
            None => Binding::Bound,
            Some(p) if p == peer => Binding::Refreshed,
            Some(from) => {
                s.moved = Some(now);
                Binding::Rebound { from }
            }
        }
    }

    /// Records a keepalive for tunnel `ap`, declared by address.
    pub fn seen(&mut self, ap: &str, peer: SocketAddr, now: Instant) {
        let s = self.state.entry(ap.to_string()).or_default();
        s.peer = Some(peer);
        s.last_seen = Some(now);
        s.keepalives += 1;
        s.dead = false;
    }

    /// How many declared tunnels are alive and how many dead (the rest
    /// were never heard): one pass over the states, no lookup by name.
    pub fn alive_and_dead(&self) -> (usize, usize) {
        self.state.values().fold((0, 0), |(a, d), s| match s {
            s if s.dead => (a, d + 1),
            s if s.last_seen.is_some() => (a + 1, d),
            _ => (a, d),
        })
    }

    /// The state of tunnel `ap`.
    pub fn get(&self, ap: &str) -> Option<&SessionState> {
        self.state.get(ap)
    }

    /// The peer a session tunnel is bound to.
    pub fn peer(&self, ap: &str) -> Option<SocketAddr> {
        self.state.get(ap).and_then(|s| s.peer)
    }

    /// Marks tunnels whose data channel has gone `dead_interval` without a
    /// keepalive (tunnels never heard from have not started, so are not
    /// dead); returns the ones newly marked.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let mut v = Vec::new();
        for (ap, s) in &mut self.state {
            if !s.dead
                && s.last_seen
                    .is_some_and(|t| now.saturating_duration_since(t) > self.dead_interval)
            {
                s.dead = true;
                v.push(ap.clone());
            }
        }
        v.sort_unstable();
        v
    }
}

/// A token bucket for keepalives from unknown sessions: they are answered
/// up to `rate` per second (bursts of `burst`), the rest are dropped and
/// counted, so a flood cannot keep the control process busy.
#[derive(Debug, Clone)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    /// Keepalives refused so far.
    pub refused: u64,
}

impl RateLimit {
    /// A bucket of `burst` tokens refilled at `rate` per second.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            last: now,
            refused: 0,
        }
    }

    /// Takes one token at `now`; false (and counted) when empty.
    pub fn allow(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.refused += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: SessionId = [
        0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e,
        0x1f,
    ];

    /// The example from the domain brief: HLEN 2, K, element length 22,
    /// Session ID element (type 35, length 16).
    fn brief_example() -> Vec<u8> {
        let mut d = vec![
            0x00, 0x10, 0x00, 0x08, 0, 0, 0, 0, 0x00, 0x16, 0x00, 0x23, 0x00, 0x10,
        ];
        d.extend_from_slice(&SID);
        d
    }

    #[test]
    fn parses_the_documented_layout_and_its_variants() {
        assert_eq!(parse(&brief_example()).unwrap().session_id, SID);
        // Length 20 (TLVs only).
        let mut d = brief_example();
        d[9] = 20;
        assert_eq!(parse(&d).unwrap().session_id, SID);
        // Length omitted.
        let mut d = brief_example();
        d.drain(8..10);
        assert_eq!(parse(&d).unwrap().session_id, SID);
        // WBID 1 set.
        let mut d = brief_example();
        d[2] = 1 << 1;
        assert_eq!(parse(&d).unwrap().session_id, SID);
        // Another element before the Session ID.
        let mut d = brief_example();
        d.splice(10..10, [0x00, 0x63, 0x00, 0x02, 0xaa, 0xbb]);
        assert_eq!(parse(&d).unwrap().session_id, SID);
        // Our own generator's keepalive.
        let k = ferry_dataplane::craft::keepalive(&SID);
        assert_eq!(parse(&k).unwrap().session_id, SID);
    }

    #[test]
    fn refuses_what_is_not_a_keepalive() {
        assert_eq!(parse(&[0, 0x10]), Err(KeepaliveError::Short));
        let mut d = brief_example();
        d[0] = 0x01;
        assert_eq!(parse(&d), Err(KeepaliveError::Preamble(0, 1)));
        let mut d = brief_example();
        d[3] = 0;
        assert_eq!(parse(&d), Err(KeepaliveError::NotKeepalive));
        let mut d = brief_example();
        d[1] = 31 << 3;
        assert_eq!(parse(&d), Err(KeepaliveError::Hlen(31, d.len())));
        let mut d = brief_example();
        d.truncate(20); // Session ID value cut short
        assert_eq!(parse(&d), Err(KeepaliveError::NoSessionId));
        let mut d = brief_example();
        d[13] = 8; // wrong Session ID length
        assert_eq!(parse(&d), Err(KeepaliveError::NoSessionId));
    }

    #[test]
    fn echo_is_byte_for_byte() {
        let d = brief_example();
        assert_eq!(echo(&d), d);
    }

    #[test]
    fn first_keepalive_binds_then_refreshes_rebinds_and_ages() {
        let t0 = Instant::now();
        let mut s = Sessions::new(Duration::from_secs(60), Duration::ZERO);
        s.declare([("ap7", Some(SID)), ("ap8", None)]);
        let a: SocketAddr = "198.18.1.10:40000".parse().unwrap();
        let b: SocketAddr = "198.18.1.10:40001".parse().unwrap();
        assert_eq!(s.keepalive(&[0; 16], a, t0), Binding::Unknown);
        assert_eq!(s.keepalive(&SID, a, t0), Binding::Bound);
        assert_eq!(
            s.keepalive(&SID, a, t0 + Duration::from_secs(30)),
            Binding::Refreshed
        );
        assert_eq!(
            s.keepalive(&SID, b, t0 + Duration::from_secs(40)),
            Binding::Rebound { from: a }
        );
        assert_eq!(s.peer("ap7"), Some(b));
        assert_eq!(s.tunnel_of(&SID), Some("ap7"));
        s.seen("ap8", a, t0);
        assert_eq!(s.alive_and_dead(), (2, 0));
        assert_eq!(s.expire(t0 + Duration::from_secs(100)), vec!["ap8"]);
        assert_eq!(s.alive_and_dead(), (1, 1));
        assert_eq!(s.expire(t0 + Duration::from_secs(101)), vec!["ap7"]);
        assert_eq!(s.alive_and_dead(), (0, 2));
        assert!(
            s.expire(t0 + Duration::from_secs(200)).is_empty(),
            "marked once"
        );
        // A new keepalive revives it; redeclaring keeps the binding.
        assert_eq!(
            s.keepalive(&SID, b, t0 + Duration::from_secs(201)),
            Binding::Refreshed
        );
        assert!(!s.get("ap7").unwrap().dead);
        s.declare([("ap7", Some(SID)), ("ap9", None)]);
        assert_eq!(s.peer("ap7"), Some(b));
        assert!(s.get("ap8").is_none());
        assert_eq!(s.alive_and_dead(), (1, 0), "ap9 never heard");
    }

    /// One datagram from elsewhere must not move a binding while its AP
    /// keeps talking from where it is bound, nor can a binding flap faster
    /// than the rebind interval.
    #[test]
    fn rebinds_are_damped() {
        let t0 = Instant::now();
        let sec = Duration::from_secs;
        let mut s = Sessions::new(sec(60), sec(5));
        s.declare([("ap7", Some(SID))]);
        let a: SocketAddr = "198.18.1.10:40000".parse().unwrap();
        let b: SocketAddr = "198.18.1.66:40001".parse().unwrap();
        assert_eq!(s.keepalive(&SID, a, t0), Binding::Bound);
        assert_eq!(
            s.keepalive(&SID, b, t0 + sec(1)),
            Binding::Damped { bound: a }
        );
        assert_eq!(s.peer("ap7"), Some(a), "the binding stays");
        assert_eq!(s.keepalive(&SID, a, t0 + sec(2)), Binding::Refreshed);
        // A silent for the interval: the AP moved (NAT), and so does the
        // binding, once.
        assert_eq!(
            s.keepalive(&SID, b, t0 + sec(8)),
            Binding::Rebound { from: a }
        );
        assert_eq!(
            s.keepalive(&SID, a, t0 + sec(9)),
            Binding::Damped { bound: b }
        );
        assert_eq!(
            s.keepalive(&SID, a, t0 + sec(14)),
            Binding::Rebound { from: b }
        );
    }

    #[test]
    fn unknown_sessions_are_rate_limited() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(10.0, 5.0, t0);
        let allowed = (0..20).filter(|_| r.allow(t0)).count();
        assert_eq!(allowed, 5, "the burst");
        assert_eq!(r.refused, 15);
        assert!(
            r.allow(t0 + Duration::from_millis(100)),
            "one token after 100 ms at 10/s"
        );
        assert!(!r.allow(t0 + Duration::from_millis(100)));
    }
}

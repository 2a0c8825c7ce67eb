//! The peer link's message envelope: versioned, authenticated and
//! replay-protected, the same for UDP heartbeats and the TCP sync stream.
//! No I/O here: [`Sealer`] turns a body into a message, [`Opener`] checks
//! one and says why it refused it.
//!
//! ```text
//! offset size
//!  0      4   magic "FRHA"
//!  4      1   version (1)
//!  5      1   kind (1 heartbeat, 2 stream)
//!  6      1   channel: 0 the sync stream, 1.. heartbeat path (peers index + 1)
//!  7      1   flags (0)
//!  8      2   key id (see [`super::key`])
//! 10      2   reserved (0)
//! 12      4   body length (at most MAX_BODY)
//! 16      8   epoch: the sender's, new at every start, never lower
//! 24      8   sequence: per (epoch, channel), strictly increasing
//! 32      n   body
//! 32+n   32   HMAC-SHA256(key, bytes 0 .. 32+n)
//! ```
//!
//! Checks, in this order, each refusal its own class ([`Rejected`]): the
//! envelope's shape, the version, the key id, the MAC (compared in
//! constant time; nothing about the message is believed before it
//! passes), the channel it arrived on (a message captured on one path and
//! replayed on another is refused), then the epoch (older than the newest
//! seen: a replay from before the peer's restart) and the sequence number
//! (not above the last one on that channel: a replay). The receiver's
//! state changes only for a message that passes every check, so a flood
//! of forgeries cannot move it.

use std::collections::HashMap;

use hmac::Mac as _;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::key::Key;

/// The first four bytes of every message.
pub const MAGIC: [u8; 4] = *b"FRHA";
/// The envelope version this build speaks.
pub const VERSION: u8 = 1;
/// Fixed header bytes.
pub const HEADER_LEN: usize = 32;
/// HMAC-SHA256 tag bytes.
pub const TAG_LEN: usize = 32;
/// Largest body: bulk sync is sent in chunks of at most this.
pub const MAX_BODY: usize = 1 << 20;

/// The sync stream's channel.
pub const STREAM: u8 = 0;

/// What a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A heartbeat (UDP, one per path per interval).
    Heartbeat = 1,
    /// A message of the sync stream (TCP).
    Stream = 2,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Heartbeat),
            2 => Some(Self::Stream),
            _ => None,
        }
    }
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Rejected {
    /// Not a message of this protocol, or cut short.
    #[error("malformed: {0}")]
    Malformed(&'static str),
    /// Another envelope version.
    #[error("envelope version {0}, this build speaks {VERSION}")]
    Version(u8),
    /// Sealed under a key this node does not have.
    #[error("unknown key id {0:#06x}")]
    UnknownKey(u16),
    /// The MAC does not match: altered, or made without the key.
    #[error("forged: the MAC does not match")]
    Forged,
    /// From an earlier start of the peer than one already heard.
    #[error("stale: epoch {got}, the peer's newest is {newest}")]
    Stale {
        /// The message's epoch.
        got: u64,
        /// The newest epoch heard from the peer.
        newest: u64,
    },
    /// Already received (or older than what was), or sent on another
    /// channel than it arrived on.
    #[error("replayed: sequence {got} on channel {channel}, last accepted {last}")]
    Replayed {
        /// Channel it arrived on.
        channel: u8,
        /// Its sequence number.
        got: u64,
        /// The last one accepted there.
        last: u64,
    },
}

/// Refused messages by class (in `ferry cluster status` and the metrics).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectCounts {
    /// [`Rejected::Malformed`] and [`Rejected::Version`].
    pub malformed: u64,
    /// [`Rejected::UnknownKey`].
    pub unknown_key: u64,
    /// [`Rejected::Forged`].
    pub forged: u64,
    /// [`Rejected::Stale`].
    pub stale: u64,
    /// [`Rejected::Replayed`].
    pub replayed: u64,
}

impl RejectCounts {
    /// Counts one refusal.
    pub fn add(&mut self, r: &Rejected) {
        match r {
            Rejected::Malformed(_) | Rejected::Version(_) => self.malformed += 1,
            Rejected::UnknownKey(_) => self.unknown_key += 1,
            Rejected::Forged => self.forged += 1,
            Rejected::Stale { .. } => self.stale += 1,
            Rejected::Replayed { .. } => self.replayed += 1,
        }
    }
}

/// A message that passed every check.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened<'a> {
    /// What it carries.
    pub kind: Kind,
    /// The sender's epoch.
    pub epoch: u64,
    /// Its sequence number on its channel.
    pub seq: u64,
    /// The body.
    pub body: &'a [u8],
}

/// The total length of the message whose first [`HEADER_LEN`] bytes are
/// `header` (how much a stream reader must read), once the shape is
/// right.
pub fn message_len(header: &[u8; HEADER_LEN]) -> Result<usize, Rejected> {
    if header[..4] != MAGIC {
        return Err(Rejected::Malformed("bad magic"));
    }
    if header[4] != VERSION {
        return Err(Rejected::Version(header[4]));
    }
    let len = u32::from_be_bytes([header[12], header[13], header[14], header[15]]) as usize;
    if len > MAX_BODY {
        return Err(Rejected::Malformed("body longer than the maximum"));
    }
    Ok(HEADER_LEN + len + TAG_LEN)
}

/// Seals messages as one node: its key, its epoch and a sequence per
/// channel.
#[derive(Debug)]
pub struct Sealer {
    key: Key,
    epoch: u64,
    next: HashMap<u8, u64>,
}

impl Sealer {
    /// A sealer for this start of the node (`epoch` higher than any
    /// earlier start's).
    pub fn new(key: Key, epoch: u64) -> Self {
        Self {
            key,
            epoch,
            next: HashMap::new(),
        }
    }

    /// The message carrying `body` (at most [`MAX_BODY`] bytes) of `kind`
    /// on `channel`.
    pub fn seal(&mut self, kind: Kind, channel: u8, body: &[u8]) -> Result<Vec<u8>, Rejected> {
        if body.len() > MAX_BODY {
            return Err(Rejected::Malformed("body longer than the maximum"));
        }
        let seq = self.next.entry(channel).or_insert(1);
        let mut m = Vec::with_capacity(HEADER_LEN + body.len() + TAG_LEN);
        m.extend_from_slice(&MAGIC);
        m.extend_from_slice(&[VERSION, kind as u8, channel, 0]);
        m.extend_from_slice(&self.key.id().to_be_bytes());
        m.extend_from_slice(&[0, 0]);
        m.extend_from_slice(&(body.len() as u32).to_be_bytes());
        m.extend_from_slice(&self.epoch.to_be_bytes());
        m.extend_from_slice(&seq.to_be_bytes());
        m.extend_from_slice(body);
        let tag = self.key.mac().chain_update(&m).finalize().into_bytes();
        m.extend_from_slice(&tag);
        *seq += 1;
        Ok(m)
    }
}

/// Checks the peer's messages: its newest epoch, the last sequence
/// accepted per channel.
#[derive(Debug)]
pub struct Opener {
    key: Key,
    newest: u64,
    last: HashMap<u8, u64>,
}

impl Opener {
    /// An opener that has heard nothing yet.
    pub fn new(key: Key) -> Self {
        Self {
            key,
            newest: 0,
            last: HashMap::new(),
        }
    }

    /// The newest epoch accepted from the peer (0: none yet).
    pub fn epoch(&self) -> u64 {
        self.newest
    }

    /// Checks `msg`, received on `channel`.
    pub fn open<'a>(&mut self, msg: &'a [u8], channel: u8) -> Result<Opened<'a>, Rejected> {
        let header: &[u8; HEADER_LEN] = msg
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(Rejected::Malformed("shorter than a header"))?;
        let total = message_len(header)?;
        if msg.len() != total {
            return Err(Rejected::Malformed("length does not match the header"));
        }
        let key_id = u16::from_be_bytes([header[8], header[9]]);
        if key_id != self.key.id() {
            return Err(Rejected::UnknownKey(key_id));
        }
        let (signed, tag) = msg.split_at(total - TAG_LEN);
        self.key
            .mac()
            .chain_update(signed)
            .verify_slice(tag)
            .map_err(|_| Rejected::Forged)?;
        // Authentic from here on.
        let kind = Kind::from_u8(header[5]).ok_or(Rejected::Malformed("unknown kind"))?;
        let word = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let (epoch, seq) = (word(16), word(24));
        let last = self.last.get(&channel).copied();
        if header[6] != channel {
            // Sent on another path than it came in on: a copy.
            return Err(Rejected::Replayed {
                channel,
                got: seq,
                last: last.unwrap_or(0),
            });
        }
        if epoch < self.newest {
            return Err(Rejected::Stale {
                got: epoch,
                newest: self.newest,
            });
        }
        if epoch == self.newest
            && let Some(last) = last
            && seq <= last
        {
            return Err(Rejected::Replayed {
                channel,
                got: seq,
                last,
            });
        }
        if epoch > self.newest {
            // The peer started again: every channel starts over.
            self.newest = epoch;
            self.last.clear();
        }
        self.last.insert(channel, seq);
        Ok(Opened {
            kind,
            epoch,
            seq,
            body: &signed[HEADER_LEN..],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> Key {
        Key::new(&[b; 32]).unwrap()
    }

    #[test]
    fn a_sealed_message_opens_once_and_in_order() {
        let mut s = Sealer::new(key(1), 5);
        let mut o = Opener::new(key(1));
        let m1 = s.seal(Kind::Heartbeat, 1, b"one").unwrap();
        let m2 = s.seal(Kind::Heartbeat, 1, b"two").unwrap();
        let opened = o.open(&m1, 1).unwrap();
        assert_eq!(
            opened,
            Opened {
                kind: Kind::Heartbeat,
                epoch: 5,
                seq: 1,
                body: b"one"
            }
        );
        assert_eq!(o.open(&m2, 1).unwrap().seq, 2);
        // Replayed, or late: refused.
        assert_eq!(
            o.open(&m2, 1),
            Err(Rejected::Replayed {
                channel: 1,
                got: 2,
                last: 2
            })
        );
        assert!(matches!(o.open(&m1, 1), Err(Rejected::Replayed { .. })));
        // Channels count apart: the stream has its own sequence.
        let st = s.seal(Kind::Stream, STREAM, b"sync").unwrap();
        assert_eq!(o.open(&st, STREAM).unwrap().seq, 1);
        // A copy of a path-1 heartbeat replayed on path 2 is refused.
        let m3 = s.seal(Kind::Heartbeat, 1, b"three").unwrap();
        assert!(matches!(o.open(&m3, 2), Err(Rejected::Replayed { .. })));
        assert_eq!(o.open(&m3, 1).unwrap().body, b"three");
    }

    #[test]
    fn forged_unknown_key_stale_and_malformed_are_told_apart() {
        let mut s = Sealer::new(key(1), 5);
        let mut o = Opener::new(key(1));
        let m = s.seal(Kind::Heartbeat, 1, b"body").unwrap();
        // Any bit flipped anywhere: forged (or malformed where the shape
        // breaks first), and the opener's state does not move.
        for i in 0..m.len() {
            let mut x = m.clone();
            x[i] ^= 0x01;
            let r = o.open(&x, 1);
            assert!(r.is_err(), "byte {i} flipped was accepted");
            if (16..m.len()).contains(&i) || i == 5 || i == 6 || i == 7 || i == 10 || i == 11 {
                assert_eq!(r, Err(Rejected::Forged), "byte {i}");
            }
        }
        assert_eq!(o.epoch(), 0, "nothing forged moved the opener");
        assert_eq!(o.open(&m, 1).unwrap().body, b"body");
        // Another secret: another key id.
        let mut other = Sealer::new(key(2), 5);
        let x = other.seal(Kind::Heartbeat, 1, b"body").unwrap();
        assert_eq!(o.open(&x, 1), Err(Rejected::UnknownKey(key(2).id())));
        // A new epoch (the peer restarted) resets the sequences; the old
        // epoch's messages are stale from then on, on every channel.
        let old = s.seal(Kind::Heartbeat, 2, b"old").unwrap();
        let mut restarted = Sealer::new(key(1), 6);
        let n = restarted.seal(Kind::Heartbeat, 1, b"new").unwrap();
        assert_eq!(o.open(&n, 1).unwrap().seq, 1);
        assert_eq!(o.open(&old, 2), Err(Rejected::Stale { got: 5, newest: 6 }));
        // Shapes.
        assert_eq!(
            o.open(&m[..10], 1),
            Err(Rejected::Malformed("shorter than a header"))
        );
        assert_eq!(
            o.open(&m[..m.len() - 1], 1),
            Err(Rejected::Malformed("length does not match the header"))
        );
        let mut v = m.clone();
        v[4] = 2;
        assert_eq!(o.open(&v, 1), Err(Rejected::Version(2)));
        let mut big = m.clone();
        big[12..16].copy_from_slice(&(MAX_BODY as u32 + 1).to_be_bytes());
        assert!(matches!(o.open(&big, 1), Err(Rejected::Malformed(_))));
        let mut counts = RejectCounts::default();
        for r in [
            Rejected::Forged,
            Rejected::Version(2),
            Rejected::UnknownKey(1),
        ] {
            counts.add(&r);
        }
        assert_eq!(
            (counts.forged, counts.malformed, counts.unknown_key),
            (1, 1, 1)
        );
    }

    #[test]
    fn message_len_frames_a_stream() {
        let mut s = Sealer::new(key(1), 1);
        let m = s.seal(Kind::Stream, STREAM, &[9u8; 100]).unwrap();
        let h: [u8; HEADER_LEN] = m[..HEADER_LEN].try_into().unwrap();
        assert_eq!(message_len(&h), Ok(m.len()));
        assert!(
            s.seal(Kind::Stream, STREAM, &vec![0u8; MAX_BODY + 1])
                .is_err()
        );
    }
}

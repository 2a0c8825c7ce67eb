//! The sync stream's messages (the bodies inside [`super::wire`]'s
//! envelope, TCP channel 0): learned stations by AP name, and the bulk
//! markers. No I/O here.
//!
//! ```text
//! body = type (1 byte) payload
//!   1 stations:   records until the end of the body, each
//!                 ap_len (1) ap (ap_len bytes, UTF-8) count (u32 BE)
//!                 count x station (16 bytes: mac 6, vlan 2 BE, radio 1,
//!                 flags 1 (bit 0: bssid known), bssid 6)
//!   2 bulk start
//!   3 bulk end:   stations sent in the bulk (u64 BE)
//!   4 bulk ack:   stations received in the bulk (u64 BE)
//!   5 control:    a [`Handoff`] as JSON (a handful a minute at most:
//!                 the binary layout is kept for stations, which are many)
//! ```
//!
//! Stations name their tunnel by AP name, not id: ids are per node (the
//! same table can carry different ids on the two nodes after different
//! histories). Bodies never pass [`BODY_TARGET`], a quarter of the
//! envelope's 1 MiB, so a million stations are ~64 messages of 256 KiB.

/// No station body is longer than this: a body at the envelope's limit
/// could not be sealed, and its stations would be lost.
pub const BODY_TARGET: usize = 1 << 18;
const _: () = assert!(BODY_TARGET <= super::wire::MAX_BODY);
const STATION_LEN: usize = 16;

const STATIONS: u8 = 1;
const BULK_START: u8 = 2;
const BULK_END: u8 = 3;
const BULK_ACK: u8 = 4;
const CONTROL: u8 = 5;

/// The planned-handover steps and the other orders between the nodes
/// (see [`super::handover`] for the sequence).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Handoff {
    /// Master to backup, after every station change so far (the barrier:
    /// the stream is ordered): take `group`.
    Take {
        /// The handover.
        id: u64,
        /// The group.
        group: String,
    },
    /// The group is active here now (or why not).
    Taken {
        /// The handover.
        id: u64,
        /// Microseconds the role write took, or the refusal.
        result: Result<u64, String>,
    },
    /// The old master saw the group's traffic stop arriving (or gave up
    /// waiting): announce the stations once more, then say so.
    Drained {
        /// The handover.
        id: u64,
    },
    /// The new master's stations are announced: the old one may stand by.
    Settled {
        /// The handover.
        id: u64,
        /// Stations announced.
        announced: u64,
        /// What the new master forwarded since it took the group.
        up: u64,
        /// The same, downstream.
        down: u64,
    },
    /// A preempting backup asks the master to hand `group` over.
    Ask {
        /// The group.
        group: String,
    },
    /// Send a bulk snapshot again (`ferry cluster resync`).
    Resync,
    /// Learned AP ports of any-port tunnels and Session ID bindings, by
    /// AP name (see `sync::learned`).
    Learned {
        /// (AP, the port its frames come from).
        ports: Vec<(String, u16)>,
        /// (AP, the address and port its keepalives come from).
        bindings: Vec<(String, std::net::SocketAddr)>,
    },
    /// One part of the sender's table (its tunnels and static stations
    /// as JSON, cut in parts that fit the envelope).
    Table {
        /// The pair revision it carries.
        revision: u64,
        /// This part, from 0.
        part: u32,
        /// How many parts.
        parts: u32,
        /// The JSON text of this part.
        data: String,
        /// The table's digest ([`super::revision::digest`]).
        #[serde(default)]
        digest: String,
        /// The sender's table is the pair's ([`super::revision`]).
        #[serde(default)]
        confirmed: bool,
    },
}

/// A station as synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Station {
    /// Client MAC.
    pub mac: [u8; 6],
    /// Client VLAN.
    pub vlan: u16,
    /// Radio id.
    pub rid: u8,
    /// BSSID, when known.
    pub bssid: Option<[u8; 6]>,
}

/// One message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Stations by AP name.
    Stations(Vec<(String, Vec<Station>)>),
    /// A bulk snapshot begins.
    BulkStart,
    /// The bulk snapshot is complete: stations sent in it.
    BulkEnd(u64),
    /// The receiver installed the bulk: stations received in it.
    BulkAck(u64),
    /// A handover step or an order.
    Control(Handoff),
}

/// Encodes a marker message ([`Msg::Stations`] goes through
/// [`StationBodies`]).
pub fn marker(m: &Msg) -> Vec<u8> {
    match m {
        Msg::BulkStart => vec![BULK_START],
        Msg::BulkEnd(n) => [&[BULK_END][..], &n.to_be_bytes()].concat(),
        Msg::BulkAck(n) => [&[BULK_ACK][..], &n.to_be_bytes()].concat(),
        Msg::Control(h) => {
            // Serialising a plain enum of strings and integers cannot fail.
            let json = serde_json::to_vec(h).unwrap_or_default();
            [&[CONTROL][..], &json].concat()
        }
        Msg::Stations(v) => {
            let mut b = StationBodies::default();
            for (ap, list) in v {
                for s in list {
                    b.push(ap, s);
                }
            }
            b.finish().concat()
        }
    }
}

/// Packs stations into bodies of at most about [`BODY_TARGET`] bytes.
#[derive(Debug, Default)]
pub struct StationBodies {
    done: Vec<Vec<u8>>,
    cur: Vec<u8>,
    /// Where the open record's count sits in `cur`, and its AP.
    open: Option<(usize, String)>,
    count: u32,
}

impl StationBodies {
    /// Adds station `s` of tunnel `ap` (names longer than 255 bytes cannot
    /// be tunnels: validation caps them at 64).
    pub fn push(&mut self, ap: &str, s: &Station) {
        let name = &ap.as_bytes()[..ap.len().min(255)];
        let new_record = self.open.as_ref().is_none_or(|(_, a)| a != ap);
        // Type byte, name length, name and count, when a record opens.
        let header = if new_record {
            1 + 1 + name.len() + 4
        } else {
            0
        };
        if self.cur.len() + header + STATION_LEN > BODY_TARGET {
            self.close_body();
        }
        if self.open.as_ref().is_none_or(|(_, a)| a != ap) {
            self.close_record();
            if self.cur.is_empty() {
                self.cur.push(STATIONS);
            }
            self.cur.push(name.len() as u8);
            self.cur.extend_from_slice(name);
            self.open = Some((self.cur.len(), ap.to_string()));
            self.cur.extend_from_slice(&[0; 4]);
        }
        self.cur.extend_from_slice(&s.mac);
        self.cur.extend_from_slice(&s.vlan.to_be_bytes());
        self.cur.push(s.rid);
        self.cur.push(u8::from(s.bssid.is_some()));
        self.cur.extend_from_slice(&s.bssid.unwrap_or_default());
        self.count += 1;
    }

    fn close_record(&mut self) {
        if let Some((at, _)) = self.open.take() {
            self.cur[at..at + 4].copy_from_slice(&self.count.to_be_bytes());
        }
        self.count = 0;
    }

    fn close_body(&mut self) {
        self.close_record();
        if !self.cur.is_empty() {
            self.done.push(std::mem::take(&mut self.cur));
        }
    }

    /// The bodies.
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        self.close_body();
        self.done
    }
}

/// Decodes a body (already authenticated: a decoding error is a bug or a
/// newer peer, and drops the connection).
pub fn decode(b: &[u8]) -> Result<Msg, &'static str> {
    let (&t, rest) = b.split_first().ok_or("empty body")?;
    let word = |r: &[u8]| -> Result<u64, &'static str> {
        let a: [u8; 8] = r.try_into().map_err(|_| "bad marker length")?;
        Ok(u64::from_be_bytes(a))
    };
    match t {
        BULK_START if rest.is_empty() => Ok(Msg::BulkStart),
        BULK_END => Ok(Msg::BulkEnd(word(rest)?)),
        BULK_ACK => Ok(Msg::BulkAck(word(rest)?)),
        CONTROL => serde_json::from_slice(rest)
            .map(Msg::Control)
            .map_err(|_| "undecodable control message"),
        STATIONS => {
            let mut out = Vec::new();
            let mut r = rest;
            while let Some((&n, tail)) = r.split_first() {
                let n = usize::from(n);
                if tail.len() < n + 4 {
                    return Err("station record cut short");
                }
                let ap = std::str::from_utf8(&tail[..n]).map_err(|_| "AP name not UTF-8")?;
                let count = u32::from_be_bytes([tail[n], tail[n + 1], tail[n + 2], tail[n + 3]]);
                let body = &tail[n + 4..];
                let len = count as usize * STATION_LEN;
                if body.len() < len {
                    return Err("station record cut short");
                }
                let list = body[..len]
                    .chunks_exact(STATION_LEN)
                    .map(|c| {
                        let mut mac = [0; 6];
                        mac.copy_from_slice(&c[..6]);
                        let mut bssid = [0; 6];
                        bssid.copy_from_slice(&c[10..16]);
                        Station {
                            mac,
                            vlan: u16::from_be_bytes([c[6], c[7]]),
                            rid: c[8],
                            bssid: (c[9] & 1 != 0).then_some(bssid),
                        }
                    })
                    .collect();
                out.push((ap.to_string(), list));
                r = &body[len..];
            }
            Ok(Msg::Stations(out))
        }
        _ => Err("unknown message type"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sta(i: u32) -> Station {
        let b = i.to_be_bytes();
        Station {
            mac: [2, 0x5a, b[0], b[1], b[2], b[3]],
            vlan: 200 + (i % 2) as u16,
            rid: (i % 3) as u8,
            bssid: i.is_multiple_of(2).then_some([2, 0xbb, 0, 0, 0, b[3]]),
        }
    }

    #[test]
    fn markers_and_stations_round_trip() {
        let controls = [
            Handoff::Take {
                id: 1,
                group: "group1".into(),
            },
            Handoff::Taken {
                id: 1,
                result: Ok(12),
            },
            Handoff::Taken {
                id: 2,
                result: Err("no".into()),
            },
            Handoff::Drained { id: 1 },
            Handoff::Settled {
                id: 1,
                announced: 3,
                up: 4,
                down: 5,
            },
            Handoff::Ask { group: "g".into() },
            Handoff::Resync,
            Handoff::Learned {
                ports: vec![("ap1".into(), 12_222)],
                bindings: vec![("ap2".into(), "198.18.1.11:12301".parse().unwrap())],
            },
            Handoff::Table {
                revision: 3,
                part: 0,
                parts: 1,
                data: "{\"a\": 1}".into(),
                digest: "00ff".into(),
                confirmed: true,
            },
        ];
        for m in [Msg::BulkStart, Msg::BulkEnd(7), Msg::BulkAck(1 << 40)]
            .into_iter()
            .chain(controls.into_iter().map(Msg::Control))
        {
            assert_eq!(decode(&marker(&m)).unwrap(), m);
        }
        let m = Msg::Stations(vec![
            ("ap1".into(), (0..5).map(sta).collect()),
            ("ap2".into(), vec![sta(9)]),
        ]);
        assert_eq!(decode(&marker(&m)).unwrap(), m);
    }

    #[test]
    fn a_million_stations_split_into_bodies_that_decode_to_the_same() {
        let mut b = StationBodies::default();
        let n = 1_000_000u32;
        for i in 0..n {
            b.push(&format!("ap{}", i / 40), &sta(i));
        }
        let bodies = b.finish();
        // Every body fits the envelope: one that did not was refused by
        // the sealer and its stations never reached the peer.
        assert!(
            bodies
                .iter()
                .all(|b| b.len() <= BODY_TARGET && b.len() <= crate::ha::wire::MAX_BODY)
        );
        assert!(bodies.len() >= 61, "{} bodies", bodies.len());
        let mut i = 0u32;
        for body in &bodies {
            let Msg::Stations(recs) = decode(body).unwrap() else {
                panic!("not stations");
            };
            for (ap, list) in recs {
                for s in list {
                    assert_eq!(ap, format!("ap{}", i / 40));
                    assert_eq!(s, sta(i));
                    i += 1;
                }
            }
        }
        assert_eq!(i, n);
    }

    #[test]
    fn cut_bodies_are_errors_not_panics() {
        let full = marker(&Msg::Stations(vec![("ap1".into(), vec![sta(1), sta(2)])]));
        for cut in 1..full.len() {
            let _ = decode(&full[..cut]);
        }
        assert!(decode(&full[..full.len() - 1]).is_err());
        assert!(decode(&[9]).is_err());
        assert!(decode(&[CONTROL, b'{']).is_err());
        assert!(decode(&[]).is_err());
    }
}

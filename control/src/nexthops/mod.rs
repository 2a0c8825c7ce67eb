//! When the downstream next-hop cache must start over.
//!
//! `ferry_downstream` keeps, per CPU and per tunnel, the next hop
//! `bpf_fib_lookup` last gave it, in the tunnel's outer headers
//! (`abi::TunnelHeaders`), stamped with
//! `Settings::next_hop_generation`; the FIB lookup was more than half of
//! the program's time (bench/RESULTS.md, "Downstream next-hop cache").
//! The cache may only answer what the FIB would, so a new generation starts
//! whenever the kernel announces a change that can alter an answer. This
//! module reads the kernel's route netlink announcements ([`Watch::feed`]);
//! [`service`] owns the socket.
//!
//! What starts a new generation:
//! - any route, next-hop object, policy rule, address, link or
//!   forwarding-setting (netconf) announcement: rare on a stable box, and
//!   each may change a route, a source MAC or whether the FIB answers;
//! - a neighbour whose usable link-layer address changed: it appeared,
//!   became valid or invalid (`NUD_VALID`, what `bpf_fib_lookup` checks),
//!   changed address, or went away. The kernel also announces every
//!   REACHABLE/STALE/DELAY/PROBE transition; those leave the FIB's answer
//!   as it was, and with thousands of APs on one segment they arrive
//!   hundreds of times a second, so they are filtered out here;
//! - a lost announcement (the socket overflowed): everything is assumed
//!   changed and the neighbour record starts over.
//!
//! Bridge forwarding-table entries arrive on the same group as
//! `AF_BRIDGE` neighbours; the FIB never uses them, so they are ignored
//! (a bridged side learning MACs would otherwise defeat the cache).
//!
//! Neighbours not yet seen count as changed (ferry does not dump the table
//! at start: one spurious generation per neighbour is cheap), and
//! `ferry run` starts a new generation every `abi::NEXT_HOP_MAX_AGE_SECS`
//! anyway, so an announcement the kernel never makes costs at most that.
//! The programs stop trusting the cache on their own when no `ferry run`
//! renews it (`abi::NEXT_HOP_LEASE_SECS`).

pub mod service;

use std::collections::HashMap;

/// `NUD_VALID` of `include/net/neighbour.h`: the states in which
/// `bpf_fib_lookup` uses a neighbour's address.
const NUD_VALID: u16 = libc::NUD_PERMANENT
    | libc::NUD_NOARP
    | libc::NUD_REACHABLE
    | libc::NUD_PROBE
    | libc::NUD_STALE
    | libc::NUD_DELAY;

/// `RTM_NEWNEXTHOP`, `RTM_DELNEXTHOP` (`linux/rtnetlink.h`; not in libc).
const RTM_NEWNEXTHOP: u16 = 104;
const RTM_DELNEXTHOP: u16 = 105;
/// `RTM_DELNETCONF` (`linux/rtnetlink.h`).
const RTM_DELNETCONF: u16 = 81;

/// Length of `struct nlmsghdr`.
const NLMSG_HDRLEN: usize = 16;
/// Length of `struct ndmsg`.
const NDMSG_LEN: usize = 12;
/// Length of `struct rtattr`'s header.
const RTA_HDRLEN: usize = 4;

/// A neighbour: address family, interface, protocol address.
type NeighbourKey = (u8, i32, Vec<u8>);

/// The neighbours as last announced, and the decision for each message.
#[derive(Debug, Default)]
pub struct Watch {
    /// Link-layer address of each neighbour in a valid state (`None`: not
    /// valid).
    neighbours: HashMap<NeighbourKey, Option<Vec<u8>>>,
}

impl Watch {
    /// Reads one datagram of route netlink messages; true when one of them
    /// may change a FIB answer. A malformed message counts as a change (it
    /// cannot be shown harmless).
    pub fn feed(&mut self, datagram: &[u8]) -> bool {
        let mut changed = false;
        let mut rest = datagram;
        while rest.len() >= NLMSG_HDRLEN {
            let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let kind = u16::from_ne_bytes([rest[4], rest[5]]);
            if len < NLMSG_HDRLEN || len > rest.len() {
                return true;
            }
            changed |= self.message(kind, &rest[NLMSG_HDRLEN..len]);
            rest = &rest[align4(len).min(rest.len())..];
        }
        changed
    }

    /// Announcements were lost: the record may be wrong, so it starts over.
    pub fn lost(&mut self) {
        self.neighbours.clear();
    }

    /// Neighbours currently recorded.
    pub fn neighbours(&self) -> usize {
        self.neighbours.len()
    }

    fn message(&mut self, kind: u16, body: &[u8]) -> bool {
        match kind {
            libc::RTM_NEWNEIGH | libc::RTM_DELNEIGH => {
                self.neighbour(kind == libc::RTM_DELNEIGH, body)
            }
            libc::RTM_NEWLINK
            | libc::RTM_DELLINK
            | libc::RTM_NEWADDR
            | libc::RTM_DELADDR
            | libc::RTM_NEWROUTE
            | libc::RTM_DELROUTE
            | libc::RTM_NEWRULE
            | libc::RTM_DELRULE
            | RTM_NEWNEXTHOP
            | RTM_DELNEXTHOP
            | libc::RTM_NEWNETCONF
            | RTM_DELNETCONF => true,
            // NOOP, ERROR, DONE and anything the groups do not carry.
            _ => false,
        }
    }

    fn neighbour(&mut self, deleted: bool, body: &[u8]) -> bool {
        let Some(n) = Neighbour::parse(body) else {
            return true;
        };
        if i32::from(n.family) != libc::AF_INET && i32::from(n.family) != libc::AF_INET6 {
            // Bridge forwarding entries and the like: not the FIB's.
            return false;
        }
        let key = (n.family, n.ifindex, n.dst);
        let usable = (!deleted && n.state & NUD_VALID != 0).then_some(n.lladdr);
        let before = if deleted {
            self.neighbours.remove(&key)
        } else {
            self.neighbours.insert(key, usable.clone())
        };
        match before {
            Some(b) => b != usable,
            None => true,
        }
    }
}

/// The parts of an `RTM_NEWNEIGH`/`RTM_DELNEIGH` the decision needs.
struct Neighbour {
    family: u8,
    ifindex: i32,
    state: u16,
    dst: Vec<u8>,
    lladdr: Vec<u8>,
}

impl Neighbour {
    /// `struct ndmsg` and its `NDA_DST`/`NDA_LLADDR` attributes.
    fn parse(body: &[u8]) -> Option<Self> {
        let h = body.get(..NDMSG_LEN)?;
        let mut n = Self {
            family: h[0],
            ifindex: i32::from_ne_bytes([h[4], h[5], h[6], h[7]]),
            state: u16::from_ne_bytes([h[8], h[9]]),
            dst: Vec::new(),
            lladdr: Vec::new(),
        };
        let mut rest = &body[NDMSG_LEN..];
        while rest.len() >= RTA_HDRLEN {
            let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
            let kind = u16::from_ne_bytes([rest[2], rest[3]]);
            if len < RTA_HDRLEN || len > rest.len() {
                return None;
            }
            let value = &rest[RTA_HDRLEN..len];
            match kind {
                libc::NDA_DST => n.dst = value.to_vec(),
                libc::NDA_LLADDR => n.lladdr = value.to_vec(),
                _ => {}
            }
            rest = &rest[align4(len).min(rest.len())..];
        }
        Some(n)
    }
}

/// Netlink's 4-byte alignment of messages and attributes.
fn align4(n: usize) -> usize {
    (n + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One netlink message of `kind` with `body`.
    fn msg(kind: u16, body: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + body.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(body);
        m.resize(align4(m.len()), 0);
        m
    }

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((RTA_HDRLEN + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize(align4(a.len()), 0);
        a
    }

    /// An IPv4 neighbour announcement on interface 7.
    fn neigh(kind: u16, ip: [u8; 4], state: u16, mac: Option<[u8; 6]>) -> Vec<u8> {
        neigh_of(libc::AF_INET as u8, kind, &ip, state, mac)
    }

    /// A neighbour announcement of `family` on interface 7.
    fn neigh_of(family: u8, kind: u16, dst: &[u8], state: u16, mac: Option<[u8; 6]>) -> Vec<u8> {
        let mut b = vec![family, 0, 0, 0];
        b.extend_from_slice(&7i32.to_ne_bytes());
        b.extend_from_slice(&state.to_ne_bytes());
        b.extend_from_slice(&[0, 0]);
        if !dst.is_empty() {
            b.extend(attr(libc::NDA_DST, dst));
        }
        if let Some(m) = mac {
            b.extend(attr(libc::NDA_LLADDR, &m));
        }
        msg(kind, &b)
    }

    const AP: [u8; 4] = [198, 18, 1, 10];
    const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

    #[test]
    fn state_churn_of_a_known_neighbour_changes_nothing() {
        let mut w = Watch::default();
        let reachable = neigh(libc::RTM_NEWNEIGH, AP, libc::NUD_REACHABLE, Some(MAC_A));
        assert!(w.feed(&reachable), "first sight counts as a change");
        for state in [libc::NUD_STALE, libc::NUD_DELAY, libc::NUD_PROBE] {
            assert!(!w.feed(&neigh(libc::RTM_NEWNEIGH, AP, state, Some(MAC_A))));
        }
        assert!(!w.feed(&reachable));
        assert_eq!(w.neighbours(), 1);
    }

    #[test]
    fn a_new_address_validity_or_removal_is_a_change() {
        let mut w = Watch::default();
        w.feed(&neigh(
            libc::RTM_NEWNEIGH,
            AP,
            libc::NUD_REACHABLE,
            Some(MAC_A),
        ));
        assert!(w.feed(&neigh(libc::RTM_NEWNEIGH, AP, libc::NUD_STALE, Some(MAC_B))));
        assert!(w.feed(&neigh(
            libc::RTM_NEWNEIGH,
            AP,
            libc::NUD_FAILED,
            Some(MAC_B)
        )));
        assert!(!w.feed(&neigh(libc::RTM_NEWNEIGH, AP, libc::NUD_INCOMPLETE, None)));
        assert!(w.feed(&neigh(
            libc::RTM_NEWNEIGH,
            AP,
            libc::NUD_REACHABLE,
            Some(MAC_B)
        )));
        assert!(w.feed(&neigh(
            libc::RTM_DELNEIGH,
            AP,
            libc::NUD_REACHABLE,
            Some(MAC_B)
        )));
        assert_eq!(w.neighbours(), 0);
        // Another neighbour is a record of its own.
        let other = [198, 18, 1, 11];
        assert!(w.feed(&neigh(
            libc::RTM_NEWNEIGH,
            other,
            libc::NUD_STALE,
            Some(MAC_A)
        )));
        assert!(!w.feed(&neigh(
            libc::RTM_NEWNEIGH,
            other,
            libc::NUD_DELAY,
            Some(MAC_A)
        )));
    }

    #[test]
    fn bridge_forwarding_entries_are_not_the_fibs() {
        let mut w = Watch::default();
        for mac in [MAC_A, MAC_B] {
            let fdb = neigh_of(
                libc::AF_BRIDGE as u8,
                libc::RTM_NEWNEIGH,
                &[],
                libc::NUD_REACHABLE,
                Some(mac),
            );
            assert!(!w.feed(&fdb));
        }
        let v6 = neigh_of(
            libc::AF_INET6 as u8,
            libc::RTM_NEWNEIGH,
            &[0x20, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            libc::NUD_REACHABLE,
            Some(MAC_A),
        );
        assert!(w.feed(&v6), "an IPv6 neighbour is");
        assert_eq!(w.neighbours(), 1);
    }

    #[test]
    fn routes_links_addresses_rules_and_malformed_messages_are_changes() {
        let mut w = Watch::default();
        for kind in [
            libc::RTM_NEWROUTE,
            libc::RTM_DELROUTE,
            libc::RTM_NEWLINK,
            libc::RTM_DELADDR,
            libc::RTM_NEWRULE,
            RTM_NEWNEXTHOP,
            libc::RTM_NEWNETCONF,
        ] {
            assert!(w.feed(&msg(kind, &[0; 12])), "message type {kind}");
        }
        assert!(!w.feed(&msg(libc::NLMSG_DONE as u16, &[0; 4])));
        // A length past the datagram, and a neighbour body cut short.
        let mut cut = neigh(libc::RTM_NEWNEIGH, AP, libc::NUD_REACHABLE, Some(MAC_A));
        cut.truncate(20);
        assert!(w.feed(&cut));
        assert!(w.feed(&msg(libc::RTM_NEWNEIGH, &[0; 8])));
    }

    #[test]
    fn every_message_of_a_datagram_is_read_and_a_loss_forgets_the_record() {
        let mut w = Watch::default();
        let mut d = neigh(libc::RTM_NEWNEIGH, AP, libc::NUD_REACHABLE, Some(MAC_A));
        d.extend(neigh(
            libc::RTM_NEWNEIGH,
            [198, 18, 1, 11],
            libc::NUD_STALE,
            Some(MAC_B),
        ));
        assert!(w.feed(&d));
        assert_eq!(w.neighbours(), 2);
        assert!(!w.feed(&d));
        w.lost();
        assert!(w.feed(&d), "after a loss nothing is known");
    }
}

//! The live lab: one AP namespace and one client namespace shared by every
//! contender, and one AC namespace per contender (its own `fap0` and
//! `fcl0`), joined by multi-queue veth pairs. Every contender sits in the
//! same chain and stays up; the generator picks the contender of a round by
//! the interface it transmits on, so rounds can alternate without
//! re-attaching anything.
//!
//! ```text
//!   AP ns                AC ns (one per contender)         client ns
//!   <c>0  <--veth-->  fap0 [ferry | redirect | pass]  fcl0  <--veth-->  <c>1
//!   (gen up, sink down)                                      (sink up, gen down)
//! ```
//!
//! Fixed MACs on every slot, so one set of frames fits every contender:
//! `fap0` is the AC's AP-side MAC, `<c>0` the AP-side router, `fcl0` the
//! AC's client-side MAC, `<c>1` the clients' gateway.

use anyhow::{Context as _, Result};
use ferry_dataplane::netns::Netns;

/// The AC's CAPWAP data address in every slot.
pub const AC_ADDR: [u8; 4] = [198, 18, 0, 1];
/// The AP-side router's address (the AP networks are behind it).
pub const ROUTER_ADDR: &str = "198.18.0.2";
/// `fap0`'s MAC.
pub const AC_AP_MAC: [u8; 6] = [0x02, 0xac, 0, 0, 0, 1];
/// `<c>0`'s MAC: the router towards the APs.
pub const ROUTER_MAC: [u8; 6] = [0x02, 0xa9, 0, 0, 0, 1];
/// `fcl0`'s MAC.
pub const AC_CLIENT_MAC: [u8; 6] = [0x02, 0xac, 0, 0, 1, 1];
/// `<c>1`'s MAC: the clients' gateway.
pub const GATEWAY_MAC: [u8; 6] = [0x02, 0xc0, 0, 0, 0, 1];
/// MTU of every veth: room for a 1,500-byte client frame in CAPWAP.
pub const MTU: u32 = 2000;

/// The shared namespaces.
pub struct Lab {
    /// The APs' side: generators upstream, sinks downstream.
    pub ap: Netns,
    /// The clients' side: sinks upstream, generators downstream.
    pub client: Netns,
    /// Queues per veth (and generator threads).
    pub queues: u32,
}

/// One contender's AC namespace and the names of its peers.
pub struct Slot {
    /// The AC namespace (`fap0`, `fcl0`).
    pub ac: Netns,
    /// Its AP-side peer in the AP namespace.
    pub ap_if: String,
    /// Its client-side peer in the client namespace.
    pub client_if: String,
}

fn mac(m: &[u8; 6]) -> String {
    ferry_dataplane::tables::format_mac(m)
}

impl Lab {
    /// The shared namespaces, with `queues` queues on every veth to come.
    pub fn new(queues: u32) -> Result<Self> {
        Ok(Self {
            ap: Netns::new("lap").context("creating the lab namespaces (root?)")?,
            client: Netns::new("lcl")?,
            queues,
        })
    }

    /// A contender's AC namespace, wired in: `fap0` to `<tag>0` in the AP
    /// namespace, `fcl0` to `<tag>1` in the client namespace.
    pub fn slot(&self, tag: &str) -> Result<Slot> {
        let ac = Netns::new(&format!("lac{tag}"))?;
        let s = Slot {
            ap_if: format!("{tag}0"),
            client_if: format!("{tag}1"),
            ac,
        };
        self.pair(&s.ac, "fap0", &AC_AP_MAC, &self.ap, &s.ap_if, &ROUTER_MAC)?;
        self.pair(
            &s.ac,
            "fcl0",
            &AC_CLIENT_MAC,
            &self.client,
            &s.client_if,
            &GATEWAY_MAC,
        )?;
        let ac = &s.ac;
        ac.exec(&["ip", "addr", "add", "198.18.0.1/24", "dev", "fap0"])?;
        // The AP networks are behind the router: a route and a permanent
        // neighbour, so nothing in the lab ever ARPs.
        ac.exec(&["ip", "route", "add", "198.19.0.0/16", "via", ROUTER_ADDR])?;
        ac.set_neighbour("fap0", ROUTER_ADDR, &ROUTER_MAC)?;
        Ok(s)
    }

    /// An idle veth pair `<tag>0`/`<tag>1` in the AP namespace, to hold a
    /// generator program attached (see `contenders`).
    pub fn anchor(&self, tag: &str) -> Result<String> {
        let (a, b) = (format!("{tag}0"), format!("{tag}1"));
        self.pair(
            &self.ap,
            &a,
            &[0x02, 0xfe, 0, 0, 0, 1],
            &self.ap,
            &b,
            &[0x02, 0xfe, 0, 0, 0, 2],
        )?;
        Ok(a)
    }

    /// A multi-queue veth pair `a` (in `na`, MAC `ma`) to `b` (in `nb`).
    fn pair(
        &self,
        na: &Netns,
        a: &str,
        ma: &[u8; 6],
        nb: &Netns,
        b: &str,
        mb: &[u8; 6],
    ) -> Result<()> {
        let q = self.queues.to_string();
        let mtu = MTU.to_string();
        na.exec(&[
            "ip",
            "link",
            "add",
            a,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            b,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "netns",
            nb.name(),
        ])?;
        for (ns, dev, m) in [(na, a, ma), (nb, b, mb)] {
            ns.exec(&[
                "ip",
                "link",
                "set",
                dev,
                "address",
                &mac(m),
                "mtu",
                &mtu,
                "up",
            ])?;
        }
        Ok(())
    }
}

//! Heartbeat arrivals on one peer path, captured where they arrive (an
//! AF_PACKET socket on the receiving node's end of the path, in its
//! namespace), and the gaps between consecutive ones while the sender is
//! loaded. Times are taken in user space as each frame is read, so a
//! capture thread kept off the CPU makes a gap look longer, never shorter:
//! the figures are an upper bound on what the receiving ferry saw.

use std::{
    net::Ipv4Addr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Result, anyhow};
use ferry_dataplane::{capture::PacketSocket, netns::Netns};
use serde::Serialize;

use super::Summary;

/// A capture running on its own thread.
pub struct Capture {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<Vec<Instant>>>,
}

impl Capture {
    /// Starts capturing on `ifname` in `ns` the UDP datagrams from `from`
    /// to port `port`.
    pub fn start(ns: &Netns, ifname: &str, from: Ipv4Addr, port: u16) -> Result<Self> {
        let s = ns.enter(|| Ok::<_, anyhow::Error>(PacketSocket::bind(ifname)?))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                if let Some(f) = s.recv(Duration::from_millis(20))?
                    && is_heartbeat(&f, from, port)
                {
                    seen.push(Instant::now());
                }
            }
            Ok(seen)
        });
        Ok(Self { stop, handle })
    }

    /// Stops and returns the arrival times.
    pub fn finish(self) -> Result<Vec<Instant>> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .join()
            .map_err(|_| anyhow!("the heartbeat capture thread panicked"))?
    }
}

/// An untagged IPv4/UDP frame from `from` to port `port`.
fn is_heartbeat(f: &[u8], from: Ipv4Addr, port: u16) -> bool {
    if f.len() < 14 + 20 + 8 || f[12..14] != [0x08, 0x00] || f[23] != 17 {
        return false;
    }
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let Some(udp) = f.get(14 + ihl..14 + ihl + 4) else {
        return false;
    };
    f[26..30] == from.octets() && u16::from_be_bytes([udp[2], udp[3]]) == port
}

/// Heartbeat gaps in one phase, one direction.
#[derive(Debug, Serialize)]
pub struct Gaps {
    /// The phase ("quiet", "swaps", ...).
    pub phase: String,
    /// Which node's heartbeats ("node 1 -> node 2").
    pub direction: String,
    /// Heartbeats seen in the phase.
    pub heartbeats: usize,
    /// Gaps between consecutive heartbeats, ms.
    pub gap_ms: Summary,
    /// The 99th percentile gap, ms.
    pub p99_ms: f64,
}

/// The gaps between consecutive arrivals whose later one falls in
/// `[from, to)`.
pub fn gaps(
    arrivals: &[Instant],
    from: Instant,
    to: Instant,
    phase: &str,
    direction: &str,
) -> Gaps {
    let mut v: Vec<f64> = arrivals
        .windows(2)
        .filter(|w| w[1] >= from && w[1] < to)
        .map(|w| (w[1] - w[0]).as_secs_f64() * 1e3)
        .collect();
    let heartbeats = v.len();
    let p99_ms = Summary::quantile(&mut v, 0.99);
    Gaps {
        phase: phase.into(),
        direction: direction.into(),
        heartbeats,
        gap_ms: Summary::of(&mut v),
        p99_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(src: [u8; 4], dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8 + 16];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[23] = 17;
        f[26..30].copy_from_slice(&src);
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    }

    #[test]
    fn only_the_peers_udp_to_the_port_is_a_heartbeat() {
        let from = Ipv4Addr::new(198, 18, 9, 1);
        assert!(is_heartbeat(&frame([198, 18, 9, 1], 5250), from, 5250));
        assert!(!is_heartbeat(&frame([198, 18, 9, 2], 5250), from, 5250));
        assert!(!is_heartbeat(&frame([198, 18, 9, 1], 5247), from, 5250));
        let mut tcp = frame([198, 18, 9, 1], 5250);
        tcp[23] = 6;
        assert!(!is_heartbeat(&tcp, from, 5250));
    }

    #[test]
    fn gaps_fall_in_the_phase_of_their_later_heartbeat() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let arrivals = [at(0), at(50), at(100), at(250), at(300)];
        let g = gaps(&arrivals, at(60), at(260), "p", "d");
        assert_eq!(g.heartbeats, 2);
        assert!((g.gap_ms.max - 150.0).abs() < 1e-6);
        assert!((g.gap_ms.min - 50.0).abs() < 1e-6);
    }
}

//! The lab's dual-link AP and its clients: CAPWAP data keepalives to both
//! ACs every [`KEEPALIVE`], data on the master tunnel, moved to the other
//! tunnel after [`MISSED`] unanswered keepalives on the master tunnel (the
//! other one answering), and sequence-numbered traffic both ways, counted
//! at both ends.

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use ferry_dataplane::{capture::PacketSocket, craft};

use super::{AP, AP_PORT, Pair, parse};

/// The AP's keepalive interval on each tunnel.
pub const KEEPALIVE: Duration = Duration::from_millis(100);
/// Unanswered keepalives before the AP moves its data.
pub const MISSED: u32 = 3;
const SESSION_ID: [u8; 16] = *b"ferry-lab-ap-one";
const STATION: u32 = 1;

/// What the running AP and clients show the test.
pub struct Live {
    start: Instant,
    master: AtomicUsize,
    moves: Mutex<Vec<(u64, usize)>>,
    up_sent: AtomicU32,
    up_got: Mutex<HashSet<u32>>,
    down_sent: AtomicU32,
    down_got: Mutex<HashSet<u32>>,
    /// Downstream frames received per encapsulating node.
    down_from: [AtomicU32; 2],
    sending: AtomicBool,
    receiving: AtomicBool,
    /// Receivers with their socket bound: the senders wait for both, or
    /// a first frame sent before a receiver listens would count as lost.
    listening: AtomicUsize,
}

/// The traffic's outcome.
#[derive(Debug)]
pub struct Report {
    /// Upstream frames sent and the sequence numbers that never arrived.
    pub up_sent: u32,
    pub up_lost: Vec<u32>,
    /// The same downstream (counted from the first frame the AP side
    /// could receive: after the first upstream frame taught the station).
    pub down_sent: u32,
    pub down_lost: Vec<u32>,
    /// Downstream frames by the node that encapsulated them.
    pub down_from: [u32; 2],
    /// When the AP moved its data (ms since start) and to which node.
    pub moves: Vec<(u64, usize)>,
}

impl Live {
    /// The node the AP sends its data to.
    pub fn master(&self) -> usize {
        self.master.load(Ordering::Relaxed)
    }

    /// (up sent, up received, down sent, down received) so far.
    pub fn counts(&self) -> (u32, usize, u32, usize) {
        (
            self.up_sent.load(Ordering::Relaxed),
            self.up_got.lock().unwrap().len(),
            self.down_sent.load(Ordering::Relaxed),
            self.down_got.lock().unwrap().len(),
        )
    }

    /// Blocks until both receivers listen.
    fn wait_listening(&self) {
        while self.listening.load(Ordering::Acquire) < 2 {
            assert!(
                self.start.elapsed() < Duration::from_secs(5),
                "the receivers did not start"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Downstream frames so far by encapsulating node.
    pub fn down_from(&self) -> [u32; 2] {
        [0, 1].map(|i| self.down_from[i].load(Ordering::Relaxed))
    }
}

impl Pair {
    /// Runs the dual-link AP (data towards node `first` first) and
    /// traffic at `pps` each way while `body` runs; stops the senders,
    /// lets the frames in flight land, and reports.
    pub fn with_dual_link_ap<T>(
        &self,
        first: usize,
        pps: u32,
        body: impl FnOnce(&Live) -> T,
    ) -> (T, Report) {
        let live = Live {
            start: Instant::now(),
            master: AtomicUsize::new(first),
            moves: Mutex::new(Vec::new()),
            up_sent: AtomicU32::new(0),
            up_got: Mutex::new(HashSet::new()),
            down_sent: AtomicU32::new(0),
            down_got: Mutex::new(HashSet::new()),
            down_from: [AtomicU32::new(0), AtomicU32::new(0)],
            sending: AtomicBool::new(true),
            receiving: AtomicBool::new(true),
            listening: AtomicUsize::new(0),
        };
        let gap = Duration::from_secs(1) / pps;
        let out = std::thread::scope(|sc| {
            let l = &live;
            let ka = sc.spawn(move || self.ap.enter(|| self.keepalives(l)).unwrap());
            let up_rx = sc.spawn(move || self.cl.enter(|| receive(l, true, "cl0")).unwrap());
            let down_rx = sc.spawn(move || self.ap.enter(|| receive(l, false, "ap0")).unwrap());
            let up_tx = sc.spawn(move || {
                self.ap
                    .enter(|| {
                        let s = PacketSocket::bind("ap0")?;
                        l.wait_listening();
                        let mut seq = 0;
                        while l.sending.load(Ordering::Relaxed) {
                            s.send(&self.up_frame(l.master(), STATION, seq))?;
                            seq += 1;
                            l.up_sent.store(seq, Ordering::Relaxed);
                            std::thread::sleep(gap);
                        }
                        Ok::<_, anyhow::Error>(())
                    })
                    .unwrap()
            });
            let down_tx = sc.spawn(move || {
                self.cl
                    .enter(|| {
                        // Downstream starts once the station is known:
                        // its first upstream frame has arrived.
                        while l.up_got.lock().unwrap().is_empty() {
                            assert!(
                                l.start.elapsed() < Duration::from_secs(5),
                                "no upstream frame arrived"
                            );
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        std::thread::sleep(Duration::from_millis(20));
                        let s = PacketSocket::bind("cl0")?;
                        let mut seq = 0;
                        while l.sending.load(Ordering::Relaxed) {
                            s.send(&Pair::down_frame(STATION, seq))?;
                            seq += 1;
                            l.down_sent.store(seq, Ordering::Relaxed);
                            std::thread::sleep(gap);
                        }
                        Ok::<_, anyhow::Error>(())
                    })
                    .unwrap()
            });
            std::thread::sleep(Duration::from_millis(300));
            // A failed assertion in `body` must still stop the threads,
            // or the scope would wait for them for ever.
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(l)));
            l.sending.store(false, Ordering::Relaxed);
            up_tx.join().unwrap();
            down_tx.join().unwrap();
            std::thread::sleep(Duration::from_millis(300));
            l.receiving.store(false, Ordering::Relaxed);
            for h in [ka, up_rx, down_rx] {
                h.join().unwrap();
            }
            out
        });
        let out = out.unwrap_or_else(|e| std::panic::resume_unwind(e));
        let lost = |sent: u32, got: &HashSet<u32>| -> Vec<u32> {
            (0..sent).filter(|s| !got.contains(s)).collect()
        };
        let report = Report {
            up_sent: live.up_sent.load(Ordering::Relaxed),
            up_lost: lost(
                live.up_sent.load(Ordering::Relaxed),
                &live.up_got.lock().unwrap(),
            ),
            down_sent: live.down_sent.load(Ordering::Relaxed),
            down_lost: lost(
                live.down_sent.load(Ordering::Relaxed),
                &live.down_got.lock().unwrap(),
            ),
            down_from: live.down_from(),
            moves: live.moves.lock().unwrap().clone(),
        };
        (out, report)
    }

    /// The AP's keepalive loop: both tunnels every interval, the data
    /// moved after [`MISSED`] unanswered on the master tunnel.
    fn keepalives(&self, l: &Live) -> anyhow::Result<()> {
        let s = UdpSocket::bind(SocketAddr::new(IpAddr::V4(AP), AP_PORT))?;
        let ka = craft::keepalive(&SESSION_ID);
        let acs = [0, 1].map(|i| SocketAddr::new(IpAddr::V4(self.nodes[i].addr), 5247));
        let mut missed = [0u32; 2];
        let mut echoed = [false; 2];
        let mut buf = [0u8; 2048];
        let mut next = Instant::now();
        while l.receiving.load(Ordering::Relaxed) {
            for i in 0..2 {
                missed[i] = if echoed[i] { 0 } else { missed[i] + 1 };
                echoed[i] = false;
            }
            let m = l.master();
            if missed[m] >= MISSED && missed[1 - m] == 0 {
                l.master.store(1 - m, Ordering::Relaxed);
                let ms = l.start.elapsed().as_millis() as u64;
                l.moves.lock().unwrap().push((ms, 1 - m));
            }
            for a in &acs {
                s.send_to(&ka, a)?;
            }
            next += KEEPALIVE;
            while let Some(left) = next.checked_duration_since(Instant::now()) {
                s.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
                match s.recv_from(&mut buf) {
                    // Downstream data reaches this socket too: only the
                    // byte-for-byte echo counts.
                    Ok((n, from)) if buf[..n] == ka[..] => {
                        if let Some(i) = acs.iter().position(|a| *a == from) {
                            echoed[i] = true;
                        }
                    }
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }
}

/// Counts test frames arriving on `ifname` until the receivers stop.
fn receive(l: &Live, upstream: bool, ifname: &str) -> anyhow::Result<()> {
    let s = PacketSocket::bind(ifname)?;
    s.set_rcvbuf(4 << 20)?;
    l.listening.fetch_add(1, Ordering::Release);
    let node_of = |src: std::net::Ipv4Addr| usize::from(src.octets()[3] == 2);
    while l.receiving.load(Ordering::Relaxed) {
        let Some(f) = s.recv(Duration::from_millis(20))? else {
            continue;
        };
        let Some((seq, src)) = parse(&f, upstream) else {
            continue;
        };
        // Upstream frames come from the station; a downstream frame seen
        // on the client side (the bridge floods before it learns) is not
        // one of them.
        if upstream && f[6..12] != super::station(STATION) {
            continue;
        }
        if upstream {
            l.up_got.lock().unwrap().insert(seq);
        } else {
            l.down_got.lock().unwrap().insert(seq);
            if let Some(src) = src {
                l.down_from[node_of(src)].fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

//! A namespace lab around a real `ferry run`: three network namespaces
//!
//! ```text
//!  ap ns: ap0 (198.18.0.10) ==veth== fap0 (198.18.0.1) : ac ns : fcl0 ==veth== cl0 : cl ns
//! ```
//!
//! ferry runs in the AC namespace (entered with setns only, so it sees the
//! host's bpffs), with a node name, pin root and state directory of its
//! own, so tests run in parallel. [`Traffic`] sends sequence-numbered
//! frames both ways and checks every one arrives once, in the right VLAN
//! or tunnel. Everything is removed on drop, panics included.
#![allow(dead_code)]

pub mod process;

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicBool, AtomicU32, Ordering},
    time::{Duration, Instant},
};

use aya::programs::XdpMode;
use ferry_dataplane::{
    capture::PacketSocket,
    craft::{self, Options, Transport},
    datapath::Datapath,
    netns::{Netns, veth},
    tables::format_mac,
};
use ferry_ebpf::{abi, vlan};
use serde_json::Value;

pub use self::process::Ferry;

/// The AC's data address.
pub const AC: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The AP namespace's own address (keepalives are sent from it).
pub const AP_NS: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
/// The lab's APs: address, source port, client VLAN.
pub const APS: [(Ipv4Addr, u16, u16); 2] = [
    (Ipv4Addr::new(198, 18, 1, 10), 40000, 200),
    (Ipv4Addr::new(198, 18, 1, 11), 12222, 201),
];
/// The client-side gateway MAC.
pub const GW: [u8; 6] = [0x02, 0x0e, 0, 0, 0, 0xfe];
/// Local experimental EtherType for test payloads.
pub const ETHERTYPE: u16 = 0x88b5;
const MAGIC: &[u8; 4] = b"FRRY";

/// Station `i` behind AP `ap`.
pub fn station(ap: usize, i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x02, 0x5a, ap as u8, b[1], b[2], b[3]]
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The lab and the ferry in it.
pub struct Lab {
    pub ap: Netns,
    pub ac: Netns,
    pub cl: Netns,
    pub dir: PathBuf,
    pub node: String,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub pin_root: PathBuf,
    /// The `ferry run` and the CLI against it.
    pub run: Ferry,
    peers: Vec<Datapath>,
    pub ap0_mac: [u8; 6],
    pub fap0_mac: [u8; 6],
}

impl Lab {
    /// Namespaces, veths, addresses and a config whose [[tunnel]] section
    /// is `tunnels` (use [`Lab::tunnels_toml`] for the lab's two APs).
    pub fn new(tag: &str, tunnels: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let node = format!("t{}{tag}{n}", std::process::id());
        let ap = Netns::new(&format!("{tag}ap")).unwrap();
        let ac = Netns::new(&format!("{tag}ac")).unwrap();
        let cl = Netns::new(&format!("{tag}cl")).unwrap();
        veth(&ac, "fap0", &ap, "ap0").unwrap();
        veth(&ac, "fcl0", &cl, "cl0").unwrap();
        ac.exec(&["ip", "addr", "add", "198.18.0.1/24", "dev", "fap0"])
            .unwrap();
        ap.exec(&["ip", "addr", "add", "198.18.0.10/24", "dev", "ap0"])
            .unwrap();
        let ap0_mac = ap.mac("ap0").unwrap();
        let fap0_mac = ac.mac("fap0").unwrap();
        // veth accepts redirected frames only when its peer runs XDP.
        let mut peers = Vec::new();
        for (ns, ifname) in [(&ap, "ap0"), (&cl, "cl0")] {
            peers.push(
                ns.enter(|| {
                    let mut p = Datapath::load()?;
                    p.attach(abi::PROG_PASS, ifname, XdpMode::Driver)?;
                    Ok::<_, anyhow::Error>(p)
                })
                .unwrap(),
            );
        }
        let dir = std::env::temp_dir().join(format!("ferry-lab-{node}"));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("admin.sock");
        let config = dir.join("ferry.toml");
        let pin_root = PathBuf::from("/sys/fs/bpf/ferry-test");
        let run = Ferry::new(socket.clone(), dir.join("ferry.log"));
        let lab = Self {
            ap,
            ac,
            cl,
            dir,
            node,
            config,
            socket,
            pin_root,
            run,
            peers,
            ap0_mac,
            fap0_mac,
        };
        lab.write_config(tunnels, "");
        lab
    }

    /// The lab's two APs as `[[tunnel]]` entries (ap1 any port, ap2 fixed).
    pub fn tunnels_toml() -> String {
        format!(
            "[[tunnel]]\nap = \"ap1\"\naddress = \"{}\"\nvlan = {}\n\n[[tunnel]]\nap = \"ap2\"\naddress = \"{}\"\nport = {}\nvlan = {}\n",
            APS[0].0, APS[0].2, APS[1].0, APS[1].1, APS[1].2
        )
    }

    /// `n` extra tunnels (addresses 198.19.x.y) named `{prefix}{i}`.
    pub fn filler_toml(prefix: &str, n: u32, offset: u32) -> String {
        let mut s = String::new();
        for i in 0..n {
            let k = i + offset;
            s.push_str(&format!(
                "[[tunnel]]\nap = \"{prefix}{i}\"\naddress = \"198.19.{}.{}\"\nvlan = 201\n",
                k / 250,
                k % 250 + 1
            ));
        }
        s
    }

    /// Writes the config: node section plus `tunnels` plus `extra`.
    pub fn write_config(&self, tunnels: &str, extra: &str) {
        let text = format!(
            "[node]\nname = \"{}\"\naddresses = [\"198.18.0.1\"]\n\
[interfaces]\nap_side = \"fap0\"\nclient_side = \"fcl0\"\n\
[forwarding]\nclient_vlans = [200, 201]\n\
[downstream]\nnext_hop_mac = \"{}\"\nsource_mac = \"{}\"\n\
[admin]\nsocket = \"{}\"\n{extra}\n{tunnels}",
            self.node,
            format_mac(&self.ap0_mac),
            format_mac(&self.fap0_mac),
            self.socket.display()
        );
        std::fs::write(&self.config, text).unwrap();
    }

    /// Starts `ferry run` in the AC namespace and waits for its socket.
    pub fn start(&self) {
        self.start_with(&[]);
    }

    /// [`Lab::start`] with extra `ferry run` arguments.
    pub fn start_with(&self, extra: &[&str]) {
        self.run.start(self.run_command(extra));
    }

    /// Runs a second `ferry run` with this lab's arguments (and `extra`),
    /// as an operator would by mistake, and returns how it ended (killed
    /// after 20 s if it did not).
    pub fn run_again(&self, extra: &[&str]) -> Output {
        bounded(self.run_command(extra), 20)
    }

    /// `ferry run` in the AC namespace with this lab's configuration, pin
    /// root and state directory, and `extra`.
    fn run_command(&self, extra: &[&str]) -> Command {
        let mut cmd = self.ac.command(env!("CARGO_BIN_EXE_ferry")).unwrap();
        cmd.args(self.run_args(extra));
        cmd
    }

    /// The arguments of `ferry run` for this lab (after the program name).
    pub fn run_args(&self, extra: &[&str]) -> Vec<std::ffi::OsString> {
        let mut v: Vec<std::ffi::OsString> = vec!["run".into(), "--config".into()];
        v.push(self.config.clone().into());
        v.push("--pin-root".into());
        v.push(self.pin_root.clone().into());
        v.push("--state-dir".into());
        v.push(self.dir.join("state").into());
        v.extend(extra.iter().map(|a| a.into()));
        v
    }

    /// Deletes the AP-side veth pair (fap0/ap0), as an SRE deleting an
    /// interface under a running node would.
    pub fn delete_ap_link(&self) {
        self.ac.exec(&["ip", "link", "del", "fap0"]).unwrap();
    }

    /// Creates the AP-side veth pair again with the MACs and addresses it
    /// had (the configuration names them), and the AP's XDP peer program.
    pub fn recreate_ap_link(&mut self) {
        veth(&self.ac, "fap0", &self.ap, "ap0").unwrap();
        for (ns, dev, mac, addr) in [
            (&self.ac, "fap0", self.fap0_mac, "198.18.0.1/24"),
            (&self.ap, "ap0", self.ap0_mac, "198.18.0.10/24"),
        ] {
            let m = format_mac(&mac);
            ns.exec(&["ip", "link", "set", dev, "address", &m]).unwrap();
            ns.exec(&["ip", "addr", "add", addr, "dev", dev]).unwrap();
        }
        let peer = &mut self.peers[0];
        self.ap
            .enter(|| {
                peer.attach(abi::PROG_PASS, "ap0", XdpMode::Driver)
                    .map(|_| ())
            })
            .unwrap();
    }

    /// Polls `f` every 50 ms for up to `secs` seconds; panics with `what`
    /// and the log when it never holds.
    pub fn wait_for(&self, secs: u64, what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !f() {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {secs} s\nlog:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The metrics page (default listener 127.0.0.1:9847 in the AC
    /// namespace), scraped as Prometheus does, status line included.
    pub fn scrape(&self) -> String {
        process::scrape(&self.ac)
    }

    /// The value of the first metrics sample whose line starts with `start`.
    pub fn metric(&self, start: &str) -> Option<f64> {
        self.scrape()
            .lines()
            .find(|l| l.starts_with(start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// The status entry of the attachment on `iface`.
    pub fn attachment(&self, iface: &str) -> Value {
        let st = self.json(&["status"]);
        st["attached"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["iface"] == iface)
            .cloned()
            .unwrap_or_else(|| panic!("no attachment on {iface}: {st}"))
    }

    /// Kills ferry with SIGKILL (no cleanup of any kind).
    pub fn kill9(&self) {
        self.run.kill9();
    }

    /// Stops ferry with SIGTERM and waits for it.
    pub fn stop(&self) -> std::process::ExitStatus {
        self.run.stop()
    }

    /// Sends a signal to the running ferry.
    pub fn signal(&self, sig: i32) {
        self.run.signal(sig);
    }

    /// The running ferry's pid.
    pub fn pid(&self) -> u32 {
        self.run.pid()
    }

    /// ferry's log so far.
    pub fn log(&self) -> String {
        self.run.log()
    }

    /// Runs a `ferry` CLI subcommand against this lab's ferry.
    pub fn try_ferry(&self, args: &[&str]) -> Output {
        self.run.try_ferry(args)
    }

    /// Runs a CLI subcommand that must succeed; returns stdout.
    pub fn ferry(&self, args: &[&str]) -> String {
        self.run.ferry(args)
    }

    /// A CLI subcommand's `--json` output.
    pub fn json(&self, args: &[&str]) -> Value {
        self.run.json(args)
    }

    /// The live generation.
    pub fn generation(&self) -> u64 {
        self.json(&["status"])["generation"].as_u64().unwrap()
    }

    /// AP names in the live table, sorted.
    pub fn aps(&self) -> Vec<String> {
        self.run.aps()
    }

    /// Path of a file in the lab directory.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Directory of the lab's pinned objects.
    pub fn pin_dir(&self) -> PathBuf {
        ferry::pins::dir(&self.pin_root, &self.node)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.kill9();
        // Unpinning the links detaches the programs; then the maps go.
        let _ = ferry::pins::remove(&self.pin_dir());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `cmd` to its end, killing it after `secs` seconds (a start that
/// should have been refused must not hang the test).
pub fn bounded(mut cmd: Command, secs: u64) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

/// Builds the upstream frame: CAPWAP from AP `ap`, inner frame from
/// `station(ap, sta)` carrying `seq`.
pub fn up_frame(ap: usize, sta: u32, seq: u32) -> Vec<u8> {
    let (addr, port, _) = APS[ap];
    let mut t = Transport::new(IpAddr::V4(addr), IpAddr::V4(AC));
    t.sport = port;
    let inner = craft::ethernet(GW, station(ap, sta), None, ETHERTYPE, &payload(ap, seq));
    craft::capwap_packet(&t, craft::header_8023(1), &Options::default(), &inner)
}

/// Builds the downstream frame: tagged in AP `ap`'s VLAN, to `station(ap, sta)`.
pub fn down_frame(ap: usize, sta: u32, seq: u32) -> Vec<u8> {
    let vid = APS[ap].2;
    craft::ethernet(
        station(ap, sta),
        GW,
        Some((vlan::TPID_8021Q, vlan::tci(0, vid))),
        ETHERTYPE,
        &payload(ap, seq),
    )
}

fn payload(ap: usize, seq: u32) -> Vec<u8> {
    let mut p = MAGIC.to_vec();
    p.push(ap as u8);
    p.extend_from_slice(&seq.to_be_bytes());
    p.resize(46, 0xee);
    p
}

/// (ap, seq) of a test payload found at `at`.
pub fn parse_payload(f: &[u8], at: usize) -> Option<(usize, u32)> {
    let p = f.get(at..at + 9)?;
    if &p[..4] != MAGIC {
        return None;
    }
    Some((
        usize::from(p[4]),
        u32::from_be_bytes([p[5], p[6], p[7], p[8]]),
    ))
}

/// What arrived, per direction and AP.
#[derive(Debug, Default)]
pub struct Seen {
    /// Sequence numbers received per AP (index) in the right VLAN/tunnel.
    pub ok: [BTreeSet<u32>; 2],
    /// Frames received twice.
    pub duplicates: u64,
    /// Frames in the wrong VLAN, or to the wrong tunnel.
    pub wrong: u64,
}

/// Checks a frame that arrived in the client namespace: tag must be the
/// VLAN of the AP the payload came from, and the source its station.
fn check_up(f: &[u8], seen: &mut Seen) {
    if f.len() < 18 || u16::from_be_bytes([f[12], f[13]]) != vlan::TPID_8021Q {
        return;
    }
    if u16::from_be_bytes([f[16], f[17]]) != ETHERTYPE {
        return;
    }
    let Some((ap, seq)) = parse_payload(f, 18) else {
        return;
    };
    let vid = vlan::vid(u16::from_be_bytes([f[14], f[15]]));
    if ap >= 2 || vid != APS[ap].2 || f[6..9] != [0x02, 0x5a, ap as u8] {
        seen.wrong += 1;
        return;
    }
    if !seen.ok[ap].insert(seq) {
        seen.duplicates += 1;
    }
}

/// Checks a frame that arrived in the AP namespace: IPv4/UDP to the AP the
/// inner destination station sits behind.
fn check_down(f: &[u8], seen: &mut Seen) {
    // Ethernet 14 + IPv4 20 + UDP 8 + CAPWAP 8 + inner Ethernet 14.
    if f.len() < 14 + 20 + 8 + 8 + 14 + 9 || f[12..14] != [0x08, 0x00] {
        return;
    }
    let dst = Ipv4Addr::new(f[30], f[31], f[32], f[33]);
    let inner = 14 + 20 + 8 + 8;
    let Some((ap, seq)) = parse_payload(f, inner + 14) else {
        return;
    };
    let want_port = if ap == 1 { APS[1].1 } else { APS[0].1 };
    let dport = u16::from_be_bytes([f[36], f[37]]);
    if ap >= 2 || dst != APS[ap].0 || dport != want_port || f[inner + 2] != ap as u8 {
        seen.wrong += 1;
        return;
    }
    if !seen.ok[ap].insert(seq) {
        seen.duplicates += 1;
    }
}

/// Two-way traffic through the lab while something happens.
pub struct Traffic {
    /// Frames per AP per direction at least (more while `during` runs).
    pub min_frames: u32,
    /// Pause after every `burst` frames.
    pub burst: u32,
    /// The pause.
    pub gap: Duration,
}

/// The outcome of a [`Traffic`] run.
#[derive(Debug)]
pub struct Report {
    /// Frames sent upstream per AP.
    pub sent_up: u32,
    /// Frames sent downstream per AP.
    pub sent_down: u32,
    /// Arrived in the client namespace.
    pub up: Seen,
    /// Arrived in the AP namespace.
    pub down: Seen,
}

impl Report {
    /// Panics unless every frame arrived exactly once, nowhere wrong.
    pub fn assert_lossless(&self, what: &str) {
        for (dir, s, sent) in [
            ("upstream", &self.up, self.sent_up),
            ("downstream", &self.down, self.sent_down),
        ] {
            assert_eq!(s.wrong, 0, "{what}: {dir} frames in the wrong VLAN/tunnel");
            assert_eq!(s.duplicates, 0, "{what}: {dir} duplicates");
            for ap in 0..2 {
                let missing: Vec<u32> = (0..sent).filter(|q| !s.ok[ap].contains(q)).collect();
                assert!(
                    missing.is_empty(),
                    "{what}: {dir} lost {} of {sent} frames of ap{} (first missing seq {:?})",
                    missing.len(),
                    ap + 1,
                    missing.first()
                );
            }
        }
    }
}

/// Lets ferry learn one station behind each AP (upstream frames), so
/// downstream traffic has somewhere to go.
pub fn learn_stations(lab: &Lab) {
    lab.ap
        .enter(|| {
            let s = PacketSocket::bind("ap0")?;
            for ap in 0..2 {
                s.send(&up_frame(ap, 0, u32::MAX))?;
            }
            Ok::<_, anyhow::Error>(())
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
}

impl Traffic {
    /// Sends from before `during` starts until it has returned (and at
    /// least `min_frames`), then collects until the lab is quiet.
    pub fn run(&self, lab: &Lab, during: impl FnOnce()) -> Report {
        let stop_rx = AtomicBool::new(false);
        let stop_tx = AtomicBool::new(false);
        let mut up = Seen::default();
        let mut down = Seen::default();
        let (mut sent_up, mut sent_down) = (0, 0);
        std::thread::scope(|sc| {
            let rx_cl = sc.spawn(|| {
                lab.cl
                    .enter(|| receive(&PacketSocket::bind("cl0")?, &stop_rx, check_up))
                    .unwrap()
            });
            let rx_ap = sc.spawn(|| {
                lab.ap
                    .enter(|| receive(&PacketSocket::bind("ap0")?, &stop_rx, check_down))
                    .unwrap()
            });
            std::thread::sleep(Duration::from_millis(200));
            let tx_ap = sc.spawn(|| {
                lab.ap
                    .enter(|| self.send(&PacketSocket::bind("ap0")?, up_frame, &stop_tx))
                    .unwrap()
            });
            let tx_cl = sc.spawn(|| {
                lab.cl
                    .enter(|| self.send(&PacketSocket::bind("cl0")?, down_frame, &stop_tx))
                    .unwrap()
            });
            std::thread::sleep(Duration::from_millis(100));
            // A failed assertion in `during` must stop the traffic threads
            // before it propagates, or the scope waits for them forever.
            let during = std::panic::catch_unwind(std::panic::AssertUnwindSafe(during));
            stop_tx.store(true, Ordering::SeqCst);
            if let Err(p) = during {
                stop_rx.store(true, Ordering::SeqCst);
                std::panic::resume_unwind(p);
            }
            sent_up = tx_ap.join().unwrap();
            sent_down = tx_cl.join().unwrap();
            std::thread::sleep(Duration::from_millis(500));
            stop_rx.store(true, Ordering::SeqCst);
            up = rx_cl.join().unwrap();
            down = rx_ap.join().unwrap();
        });
        Report {
            sent_up,
            sent_down,
            up,
            down,
        }
    }

    fn send(
        &self,
        s: &PacketSocket,
        frame: fn(usize, u32, u32) -> Vec<u8>,
        stop: &AtomicBool,
    ) -> anyhow::Result<u32> {
        let mut seq = 0;
        while seq < self.min_frames || !stop.load(Ordering::SeqCst) {
            for ap in 0..2 {
                s.send(&frame(ap, 0, seq))?;
            }
            seq += 1;
            if seq % self.burst == 0 {
                std::thread::sleep(self.gap);
            }
        }
        Ok(seq)
    }
}

fn receive(
    s: &PacketSocket,
    stop: &AtomicBool,
    check: fn(&[u8], &mut Seen),
) -> anyhow::Result<Seen> {
    s.set_rcvbuf(32 << 20)?;
    let mut seen = Seen::default();
    loop {
        match s.recv(Duration::from_millis(100))? {
            Some(f) => check(&f, &mut seen),
            None if stop.load(Ordering::SeqCst) => return Ok(seen),
            None => {}
        }
    }
}

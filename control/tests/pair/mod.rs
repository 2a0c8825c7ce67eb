//! A namespace lab around two `ferry run` nodes (an HA pair):
//!
//! ```text
//!  ap ns: ap0 198.18.0.10 ──┐             ┌── fap0 198.18.0.1  ac1 ns ─ h1a 198.18.9.1  ═╗
//!                           ├─ brap ──────┤                          h1b 198.18.10.1 ═╗║
//!                           │  (core ns)  └── fap0 198.18.0.2  ac2 ns ─ h2a 198.18.9.2  ═╝║
//!                           │                                        h2b 198.18.10.2 ═╝
//!  cl ns: cl0 ──────────────┴─ brcl ────── fcl0 of ac1 and of ac2
//! ```
//!
//! Two Linux bridges in a core namespace stand for the switches: they
//! learn MACs, so downstream frames go to the port a station was last seen
//! on (tagged frames pass by MAC: this kernel has no VLAN filtering). The
//! nodes talk over two direct peer paths. Every name is unique per lab and
//! everything is removed on drop, panics included.
#![allow(dead_code)]

#[path = "../lab/process.rs"]
pub mod process;

pub mod ap;

use std::{
    net::{IpAddr, Ipv4Addr},
    os::unix::fs::PermissionsExt as _,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
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

/// The AP's address (its one tunnel, fixed port).
pub const AP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
/// The AP's CAPWAP source port.
pub const AP_PORT: u16 = 12222;
/// The client VLAN.
pub const VLAN: u16 = 200;
/// The client-side gateway MAC.
pub const GW: [u8; 6] = [0x02, 0x0e, 0, 0, 0, 0xfe];
/// Local experimental EtherType for test payloads.
pub const ETHERTYPE: u16 = 0x88b5;
const MAGIC: &[u8; 4] = b"FRHA";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Station `i`.
pub fn station(i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x02, 0x5a, 0x01, b[1], b[2], b[3]]
}

/// One node of the pair.
pub struct Node {
    pub ns: Netns,
    pub name: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    /// Its CAPWAP data address.
    pub addr: Ipv4Addr,
    pub fap0_mac: [u8; 6],
    /// The `ferry run` and the CLI against it (a `Node` derefs to it).
    pub run: process::Ferry,
}

impl std::ops::Deref for Node {
    type Target = process::Ferry;
    fn deref(&self) -> &process::Ferry {
        &self.run
    }
}

/// The pair, the AP, the client side and the core.
pub struct Pair {
    pub core: Netns,
    pub ap: Netns,
    pub cl: Netns,
    pub nodes: [Node; 2],
    pub pin_root: PathBuf,
    pub ap0_mac: [u8; 6],
    _xdp: Vec<Datapath>,
}

/// One node's `[ha]` and `[[group]]` settings.
pub struct NodeHa {
    pub priority: u8,
    pub preempt: bool,
    pub extra: &'static str,
}

impl Pair {
    /// Builds the lab and writes both configurations; nothing runs yet.
    pub fn new(tag: &str, ha: [NodeHa; 2]) -> Self {
        Self::new_with(tag, ha, "")
    }

    /// The same with `forwarding` (lines of `[forwarding]`, such as a
    /// station capacity) in both configurations.
    pub fn new_with(tag: &str, ha: [NodeHa; 2], forwarding: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let core = Netns::new(&format!("{tag}core")).unwrap();
        let ap = Netns::new(&format!("{tag}ap")).unwrap();
        let cl = Netns::new(&format!("{tag}cl")).unwrap();
        let acs = [
            Netns::new(&format!("{tag}ac1")).unwrap(),
            Netns::new(&format!("{tag}ac2")).unwrap(),
        ];
        for br in ["brap", "brcl"] {
            core.exec(&["ip", "link", "add", br, "type", "bridge"])
                .unwrap();
            core.exec(&["ip", "link", "set", br, "up"]).unwrap();
        }
        let mut xdp_peers: Vec<(&Netns, String)> = Vec::new();
        veth(&ap, "ap0", &core, "pap").unwrap();
        veth(&cl, "cl0", &core, "pcl").unwrap();
        core.exec(&["ip", "link", "set", "pap", "master", "brap"])
            .unwrap();
        core.exec(&["ip", "link", "set", "pcl", "master", "brcl"])
            .unwrap();
        ap.exec(&["ip", "addr", "add", "198.18.0.10/24", "dev", "ap0"])
            .unwrap();
        // The AP's CAPWAP address, for its keepalives (see `ap`).
        ap.exec(&["ip", "addr", "add", &format!("{AP}/32"), "dev", "ap0"])
            .unwrap();
        for (i, ns) in acs.iter().enumerate() {
            let (pa, pc) = (format!("a{}ap", i + 1), format!("a{}cl", i + 1));
            veth(ns, "fap0", &core, &pa).unwrap();
            veth(ns, "fcl0", &core, &pc).unwrap();
            core.exec(&["ip", "link", "set", &pa, "master", "brap"])
                .unwrap();
            core.exec(&["ip", "link", "set", &pc, "master", "brcl"])
                .unwrap();
            ns.exec(&[
                "ip",
                "addr",
                "add",
                &format!("198.18.0.{}/24", i + 1),
                "dev",
                "fap0",
            ])
            .unwrap();
            ns.exec(&["ip", "route", "add", &format!("{AP}/32"), "dev", "fap0"])
                .unwrap();
            xdp_peers.push((&core, pa));
            xdp_peers.push((&core, pc));
        }
        for (a, b, net) in [("h1a", "h2a", 9), ("h1b", "h2b", 10)] {
            veth(&acs[0], a, &acs[1], b).unwrap();
            acs[0]
                .exec(&["ip", "addr", "add", &format!("198.18.{net}.1/24"), "dev", a])
                .unwrap();
            acs[1]
                .exec(&["ip", "addr", "add", &format!("198.18.{net}.2/24"), "dev", b])
                .unwrap();
        }
        // The bridge takes an incoming 802.1Q tag out of the frame into
        // the skb; a port that offloads tag insertion hands the frame on
        // without it, and XDP on the far side would see it untagged.
        for port in ["pap", "pcl", "a1ap", "a1cl", "a2ap", "a2cl"] {
            core.exec(&["ethtool", "-K", port, "txvlan", "off"])
                .unwrap();
        }
        xdp_peers.push((&ap, "ap0".into()));
        xdp_peers.push((&cl, "cl0".into()));
        // veth accepts redirected frames only when its peer runs XDP.
        let mut xdp = Vec::new();
        for (ns, ifname) in xdp_peers {
            xdp.push(
                ns.enter(|| {
                    let mut p = Datapath::load()?;
                    p.attach(abi::PROG_PASS, &ifname, XdpMode::Driver)?;
                    Ok::<_, anyhow::Error>(p)
                })
                .unwrap(),
            );
        }
        let ap0_mac = ap.mac("ap0").unwrap();
        let pin_root = PathBuf::from("/sys/fs/bpf/ferry-test");
        let key_dir =
            std::env::temp_dir().join(format!("ferry-pair-{}-{tag}{n}", std::process::id()));
        std::fs::create_dir_all(&key_dir).unwrap();
        let key = key_dir.join("peer.key");
        std::fs::write(&key, "0123456789abcdef0123456789abcdef-lab\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut acs = acs.into_iter();
        let nodes = [0, 1].map(|i| {
            let ns = acs.next().unwrap();
            let name = format!("t{}{tag}{n}n{}", std::process::id(), i + 1);
            let dir = key_dir.join(format!("node{}", i + 1));
            std::fs::create_dir_all(&dir).unwrap();
            let fap0_mac = ns.mac("fap0").unwrap();
            Node {
                run: process::Ferry::new(dir.join("admin.sock"), dir.join("ferry.log")),
                config: dir.join("ferry.toml"),
                addr: Ipv4Addr::new(198, 18, 0, i as u8 + 1),
                fap0_mac,
                ns,
                name,
                dir,
            }
        });
        let pair = Self {
            core,
            ap,
            cl,
            nodes,
            pin_root,
            ap0_mac,
            _xdp: xdp,
        };
        for (i, h) in ha.iter().enumerate() {
            pair.write_config(i, h, &key, forwarding);
        }
        pair
    }

    fn write_config(&self, i: usize, h: &NodeHa, key: &std::path::Path, forwarding: &str) {
        let node = &self.nodes[i];
        let peer = 2 - i;
        let text = format!(
            "[node]\nname = \"{}\"\naddresses = [\"{}\"]\n\
[interfaces]\nap_side = \"fap0\"\nclient_side = \"fcl0\"\n\
[forwarding]\nclient_vlans = [{VLAN}]\n{forwarding}\
[downstream]\nnext_hop_mac = \"{}\"\nsource_mac = \"{}\"\n\
[admin]\nsocket = \"{}\"\n\
[ha]\npeers = [\"198.18.9.{peer}\", \"198.18.10.{peer}\"]\nkey_file = \"{}\"\n\
heartbeat_ms = 50\ncold_start = 1\n{}\n\
[[group]]\nname = \"group1\"\npriority = {}\npreempt = {}\npreempt_delay = 0\n\
[[tunnel]]\nap = \"ap1\"\naddress = \"{AP}\"\nport = {AP_PORT}\nvlan = {VLAN}\ngroup = \"group1\"\n",
            node.name,
            node.addr,
            format_mac(&self.ap0_mac),
            format_mac(&node.fap0_mac),
            node.run.socket.display(),
            key.display(),
            h.extra,
            h.priority,
            h.preempt,
        );
        std::fs::write(&node.config, text).unwrap();
    }

    /// Node 1 (priority 200) and node 2 (100), with these preempt
    /// settings (delay 0), started, elected and synced.
    pub fn started(tag: &str, preempt: [bool; 2]) -> Self {
        Self::started_with(
            tag,
            [
                NodeHa {
                    priority: 200,
                    preempt: preempt[0],
                    extra: "",
                },
                NodeHa {
                    priority: 100,
                    preempt: preempt[1],
                    extra: "",
                },
            ],
        )
    }

    /// As [`Pair::started`], with any settings (node 1 must win).
    pub fn started_with(tag: &str, ha: [NodeHa; 2]) -> Self {
        let p = Self::new(tag, ha);
        p.start_both();
        p
    }

    /// Starts both nodes and waits until node 1 is master and node 2 a
    /// synced backup.
    pub fn start_both(&self) {
        self.start(0);
        self.start(1);
        self.wait_for(10, "node 1 master, node 2 backup, both synced", || {
            self.is(0, "master")
                && self.is(1, "backup")
                && self.nodes[1].cluster()["groups"][0]["synced"] == true
        });
    }

    /// Whether node `i` has group 1 as `role`, with its data plane
    /// agreeing.
    pub fn is(&self, i: usize, role: &str) -> bool {
        let (r, dp) = self.nodes[i].role();
        let want_dp = if role == "master" {
            "active"
        } else {
            "standby"
        };
        r == role && dp == want_dp
    }

    /// Both nodes' counters, for failure messages.
    pub fn counters(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.ferry(&["counters"]))
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    /// Starts `ferry run` on node `i` and waits for its admin socket.
    pub fn start(&self, i: usize) {
        self.start_env(i, &[]);
    }

    /// The same with environment variables `env` set.
    pub fn start_env(&self, i: usize, env: &[(&str, &str)]) {
        self.start_full(i, env, &[]);
    }

    /// Starts node `i` with `--replace` (its pins and state files go: a
    /// clean start from its configuration file, as after a reboot).
    pub fn start_replace(&self, i: usize) {
        self.start_full(i, &[], &["--replace"]);
    }

    fn start_full(&self, i: usize, env: &[(&str, &str)], args: &[&str]) {
        let node = &self.nodes[i];
        let mut cmd = node.ns.command(process::ferry_exe()).unwrap();
        cmd.envs(env.iter().copied());
        cmd.args(["run", "--config"])
            .arg(&node.config)
            .arg("--pin-root")
            .arg(&self.pin_root)
            .arg("--state-dir")
            .arg(node.dir.join("state"))
            .args(args);
        node.run.start(cmd);
    }

    /// Polls `f` every 10 ms for up to `secs` seconds; panics with `what`
    /// and both logs when it never holds.
    pub fn wait_for(&self, secs: u64, what: &str, mut f: impl FnMut() -> bool) -> Duration {
        let t0 = Instant::now();
        while !f() {
            assert!(
                t0.elapsed() < Duration::from_secs(secs),
                "timed out waiting for {what}\n--- node 1:\n{}\n--- node 2:\n{}",
                self.nodes[0].log(),
                self.nodes[1].log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        t0.elapsed()
    }

    /// The upstream frame from the AP to node `to`, from station `sta`.
    pub fn up_frame(&self, to: usize, sta: u32, seq: u32) -> Vec<u8> {
        self.up_frame_from(AP_PORT, to, sta, seq)
    }

    /// The same from the AP's UDP port `sport`.
    pub fn up_frame_from(&self, sport: u16, to: usize, sta: u32, seq: u32) -> Vec<u8> {
        let node = &self.nodes[to];
        let mut t = Transport::new(IpAddr::V4(AP), IpAddr::V4(node.addr));
        t.sport = sport;
        t.src_mac = self.ap0_mac;
        t.dst_mac = node.fap0_mac;
        let inner = craft::ethernet(GW, station(sta), None, ETHERTYPE, &payload(seq));
        craft::capwap_packet(&t, craft::header_8023(1), &Options::default(), &inner)
    }

    /// The downstream frame to station `sta`, tagged.
    pub fn down_frame(sta: u32, seq: u32) -> Vec<u8> {
        craft::ethernet(
            station(sta),
            GW,
            Some((vlan::TPID_8021Q, vlan::tci(0, VLAN))),
            ETHERTYPE,
            &payload(seq),
        )
    }

    /// Sends `frames` from the AP namespace.
    pub fn send_ap(&self, frames: &[Vec<u8>]) {
        send(&self.ap, "ap0", frames);
    }

    /// Sends `frames` from the client namespace.
    pub fn send_cl(&self, frames: &[Vec<u8>]) {
        send(&self.cl, "cl0", frames);
    }

    /// Sends `frames` from one namespace and returns the test payloads'
    /// sequence numbers that reached the other side within `wait`, with
    /// the source IPv4 address for downstream (which node encapsulated).
    pub fn exchange(
        &self,
        upstream: bool,
        frames: &[Vec<u8>],
        wait: Duration,
    ) -> Vec<(u32, Option<Ipv4Addr>)> {
        let (rx_ns, rx_if) = if upstream {
            (&self.cl, "cl0")
        } else {
            (&self.ap, "ap0")
        };
        std::thread::scope(|sc| {
            let rx = sc.spawn(|| {
                rx_ns
                    .enter(|| {
                        let s = PacketSocket::bind(rx_if)?;
                        let mut got = Vec::new();
                        let end = Instant::now() + wait;
                        while let Some(left) = end.checked_duration_since(Instant::now()) {
                            let Some(f) = s.recv(left.min(Duration::from_millis(50)))? else {
                                continue;
                            };
                            if let Some(x) = parse(&f, upstream) {
                                got.push(x);
                            }
                        }
                        Ok::<_, anyhow::Error>(got)
                    })
                    .unwrap()
            });
            std::thread::sleep(Duration::from_millis(100));
            if upstream {
                self.send_ap(frames);
            } else {
                self.send_cl(frames);
            }
            rx.join().unwrap()
        })
    }
}

fn send(ns: &Netns, ifname: &str, frames: &[Vec<u8>]) {
    ns.enter(|| {
        let s = PacketSocket::bind(ifname)?;
        for f in frames {
            s.send(f)?;
        }
        Ok::<_, anyhow::Error>(())
    })
    .unwrap();
}

fn payload(seq: u32) -> Vec<u8> {
    let mut p = MAGIC.to_vec();
    p.extend_from_slice(&seq.to_be_bytes());
    p.resize(46, 0xee);
    p
}

/// A test payload's sequence number in a frame that arrived: upstream a
/// tagged client frame, downstream a CAPWAP packet (with its source).
fn parse(f: &[u8], upstream: bool) -> Option<(u32, Option<Ipv4Addr>)> {
    let (at, src) = if upstream {
        if f.len() < 18 || u16::from_be_bytes([f[12], f[13]]) != vlan::TPID_8021Q {
            return None;
        }
        (18, None)
    } else {
        if f.len() < 14 + 20 + 8 + 8 + 14 || f[12..14] != [0x08, 0x00] {
            return None;
        }
        (
            14 + 20 + 8 + 8 + 14,
            Some(Ipv4Addr::new(f[26], f[27], f[28], f[29])),
        )
    };
    let p = f.get(at..at + 8)?;
    (&p[..4] == MAGIC).then(|| (u32::from_be_bytes([p[4], p[5], p[6], p[7]]), src))
}

impl Node {
    /// `ferry cluster status --json`.
    pub fn cluster(&self) -> Value {
        self.json(&["cluster", "status"])
    }

    /// Group 1's role here, and what the data plane does for it.
    pub fn role(&self) -> (String, String) {
        let v = self.cluster();
        let g = &v["groups"][0];
        // Missing while the node is starting (no HA view yet): not a role,
        // so a wait for one goes on.
        (
            g["role"].as_str().unwrap_or("").to_string(),
            g["dataplane"].as_str().unwrap_or("").to_string(),
        )
    }

    /// The metrics page (127.0.0.1:9847 in the node's namespace).
    pub fn scrape(&self) -> String {
        process::scrape(&self.ns)
    }

    /// Directory of the node's pinned objects.
    pub fn pin_dir(&self, root: &std::path::Path) -> PathBuf {
        ferry::pins::dir(root, &self.name)
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for n in &self.nodes {
            n.kill9();
            let _ = ferry::pins::remove(&n.pin_dir(&self.pin_root));
        }
        // FERRY_LAB_KEEP keeps the configurations and logs to look at.
        if let Some(dir) = self.nodes[0].dir.parent() {
            if std::env::var_os("FERRY_LAB_KEEP").is_some() {
                eprintln!("lab files kept in {}", dir.display());
            } else {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

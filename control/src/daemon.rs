//! `ferry run`: the control process. One thread, one mio event loop over
//! the admin socket, the metrics listener, the keepalive sockets (one per
//! node address, on the data port), a 1 s timer and the signals.
//!
//! The data plane does not depend on this process: programs are attached
//! through BPF links pinned under `<pin root>/<node>/`, next to the maps, so
//! they keep forwarding with the last tables while ferry is stopped or
//! restarting. A new `ferry run` finds the pins, loads the programs against
//! the pinned maps, swaps each program into its pinned link atomically
//! (`BPF_LINK_UPDATE`), and installs the configuration as an ordinary
//! whole-table swap: no packet sees an interface without a program or a
//! half-built table, and learned stations and AP ports survive.
//!
//! A small state file (`<state dir>/<node>.json`) keeps what the kernel
//! maps cannot say: tunnel ids by AP name, the table generation and session
//! bindings.

use std::{
    collections::HashMap,
    io::{ErrorKind, Read as _, Write as _},
    net::{IpAddr, SocketAddr},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::programs::XdpMode;
use ferry_dataplane::{datapath::Datapath, tables::format_mac};
use ferry_ebpf::abi::{self, Event, Reason};
use mio::{
    Events, Interest, Poll, Token,
    net::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream},
};
use serde_json::{Value, json, value::RawValue};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use tracing::{error, info, warn};

use crate::{
    admin::{self, Request, Response},
    config::{Config, Role, format_session_id},
    keepalive::{self, Binding, RateLimit, Sessions},
    metrics::{Exposition, Kind},
    swap::{Change, Saved, TableState},
};

/// How `ferry run` attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) XDP; falls back to generic with a loud warning when
    /// the driver has no native XDP.
    Driver,
    /// Generic (skb) XDP, asked for explicitly.
    Skb,
}

/// `ferry run` options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Configuration file.
    pub config: PathBuf,
    /// Attach mode.
    pub mode: AttachMode,
    /// Remove the programs and pins on exit (else forwarding continues).
    pub detach_on_exit: bool,
    /// bpffs directory holding one directory per node.
    pub pin_root: PathBuf,
    /// Directory of the state file.
    pub state_dir: PathBuf,
    /// Throw away pinned state from an earlier run instead of adopting it.
    pub replace: bool,
}

/// Layout stamp of the pinned maps: a restarted ferry adopts pins only from
/// a build with the same map ABI.
pub fn abi_stamp() -> String {
    use std::mem::size_of;
    format!(
        "tk{}ti{}td{}sk{}si{}sh{}se{}cb{}ts{}mt{}r{}",
        size_of::<abi::TunnelKey>(),
        size_of::<abi::TunnelInfo>(),
        size_of::<abi::TunnelDown>(),
        size_of::<abi::StationKey>(),
        size_of::<abi::StationInfo>(),
        size_of::<abi::StationHint>(),
        size_of::<abi::Settings>(),
        size_of::<abi::CounterBlock>(),
        size_of::<abi::TunnelStats>(),
        abi::MAX_TUNNELS,
        abi::REASON_COUNT,
    )
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StateFile {
    abi: String,
    #[serde(flatten)]
    saved: Saved,
}

/// Keepalive outcomes since start.
#[derive(Default, Debug, Clone, Copy)]
struct KeepaliveCounts {
    answered: u64,
    unknown: u64,
    refused: u64,
    malformed: u64,
    bindings: u64,
}

/// One attached program.
#[derive(Debug, Clone)]
struct Attachment {
    iface: String,
    program: &'static str,
    mode: &'static str,
    adopted: bool,
}

struct Node {
    config_path: PathBuf,
    dp: Datapath,
    tables: TableState,
    sessions: Sessions,
    unknown: RateLimit,
    ka: KeepaliveCounts,
    started: Instant,
    adopted: bool,
    attachments: Vec<Attachment>,
    pin_dir: PathBuf,
    state_file: PathBuf,
}

const SIGNALS: Token = Token(0);
const ADMIN: Token = Token(1);
const METRICS: Token = Token(2);
const UDP_BASE: usize = 16;
const CONN_BASE: usize = 1024;
const TICK: Duration = Duration::from_secs(1);

enum Stream {
    Admin(UnixStream),
    Metrics(TcpStream),
}

struct Conn {
    stream: Stream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    close_after_write: bool,
}

impl Conn {
    fn read(&mut self) -> std::io::Result<usize> {
        let mut buf = [0u8; 65536];
        let n = match &mut self.stream {
            Stream::Admin(s) => s.read(&mut buf)?,
            Stream::Metrics(s) => s.read(&mut buf)?,
        };
        self.inbuf.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        while !self.outbuf.is_empty() {
            let n = match &mut self.stream {
                Stream::Admin(s) => s.write(&self.outbuf)?,
                Stream::Metrics(s) => s.write(&self.outbuf)?,
            };
            if n == 0 {
                return Err(ErrorKind::WriteZero.into());
            }
            self.outbuf.drain(..n);
        }
        Ok(())
    }

    /// A new connection, registered for reading and writing.
    fn register(poll: &Poll, t: Token, stream: Stream) -> Result<Self> {
        let mut c = Conn {
            stream,
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            // Metrics: set once the response is queued.
            close_after_write: false,
        };
        poll.registry()
            .register(c.source(), t, Interest::READABLE | Interest::WRITABLE)?;
        Ok(c)
    }

    fn source(&mut self) -> &mut dyn mio::event::Source {
        match &mut self.stream {
            Stream::Admin(s) => s,
            Stream::Metrics(s) => s,
        }
    }
}

/// Runs the control process until SIGTERM or SIGINT.
pub fn run(opts: Options) -> Result<()> {
    // Big, short-lived buffers (a swap request carries a whole table) get
    // their own mappings and go back to the kernel when freed, instead of
    // glibc raising its mmap threshold and keeping them in the heap.
    // SAFETY: mallopt only sets an allocator parameter.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
    let config = Config::load(&opts.config)?;
    raise_memlock();
    let pin_dir = opts.pin_root.join(&config.name);
    let state_file = opts.state_dir.join(format!("{}.json", config.name));
    ensure_bpffs(&opts.pin_root)?;
    if opts.replace && pin_dir.exists() {
        warn!(dir = %pin_dir.display(), "--replace: removing the pinned programs and maps of an earlier run; forwarding stops until the new programs attach");
        remove_pins(&pin_dir)?;
        let _ = std::fs::remove_file(&state_file);
    }
    let saved = read_state(&state_file, &pin_dir)?;
    let adopted = pin_dir.join(abi::MAP_SETTINGS).exists();
    std::fs::create_dir_all(&pin_dir)
        .with_context(|| format!("creating pin directory {}", pin_dir.display()))?;
    let started = bring_up(config, saved, adopted, &pin_dir, &state_file, opts.mode);
    let (dp, tables, change, attachments, config) = match started {
        Ok(v) => v,
        Err(e) => {
            if !adopted {
                // Nothing was forwarding before: leave nothing half set up.
                let _ = remove_pins(&pin_dir);
            }
            return Err(e);
        }
    };
    if let Some(c) = &change {
        info!(
            generation = c.new_generation,
            tunnels = c.tunnels,
            flip_us = c.flip_us,
            stations_flushed = c.stations_flushed,
            "adopted the pinned maps (tables, counters, learned stations) and installed the table as a swap"
        );
    } else {
        info!(
            tunnels = config.tunnels.len(),
            "data plane loaded and attached"
        );
    }

    let mut sessions = Sessions::new(config.dead_interval);
    sessions.declare(config.tunnels.iter().map(|t| (t.ap.as_str(), t.session_id)));
    for t in &config.tunnels {
        if let Some(p) = tables.bound(&t.ap) {
            sessions.restore(&t.ap, p);
        }
    }
    let mut node = Node {
        config_path: opts.config.clone(),
        dp,
        tables,
        sessions,
        unknown: RateLimit::new(
            f64::from(config.unknown_rate),
            f64::from(config.unknown_rate.max(1)),
            Instant::now(),
        ),
        ka: KeepaliveCounts::default(),
        started: Instant::now(),
        adopted,
        attachments,
        pin_dir: pin_dir.clone(),
        state_file,
    };
    node.save_state();
    trim_heap();
    let r = event_loop(&mut node, &config);
    node.save_state();
    if opts.detach_on_exit {
        info!(dir = %pin_dir.display(), "--detach-on-exit: removing programs and pins");
        drop(node);
        remove_pins(&pin_dir)?;
        let _ = std::fs::remove_file(opts.state_dir.join(format!("{}.json", config.name)));
    } else {
        info!("exiting; the pinned programs keep forwarding with the last tables");
    }
    let _ = std::fs::remove_file(&config.admin_socket);
    r
}

/// What [`bring_up`] returns: the loaded data plane, its tables, the
/// swap that installed them when a running data plane was adopted, the
/// attachments and the configuration now running.
type Up = (
    Datapath,
    TableState,
    Option<Change>,
    Vec<Attachment>,
    Config,
);

/// Loads the programs against the pinned maps, installs (or, after a
/// restart, swaps in) the tables and attaches.
fn bring_up(
    config: Config,
    saved: Option<Saved>,
    adopted: bool,
    pin_dir: &Path,
    state_file: &Path,
    mode: AttachMode,
) -> Result<Up> {
    let mut dp = Datapath::load_pinned(pin_dir)?;
    let ap_ifindex = ifindex(&config.ap_side)?;

    let client_ifindex = ifindex(&config.client_side)?;
    enable_forwarding(&config.ap_side);

    // After a restart the running table is the one last swapped in, not
    // necessarily the file's: restore it (SIGHUP applies the file).
    let config = match saved.as_ref().and_then(|s| s.table.as_deref()) {
        Some(text) if adopted => match config.with_table(state_file, text) {
            Ok(c) => {
                info!(
                    generation = saved.as_ref().map_or(0, |s| s.generation),
                    "keeping the running table from before the restart (SIGHUP or `ferry swap` to change it)"
                );
                c
            }
            Err(e) => {
                warn!(
                    "the saved running table does not fit this configuration ({e}); installing the configuration's table"
                );
                config
            }
        },
        _ => config,
    };
    let (tables, change) = if adopted {
        let mut dp_tables = config.tables();
        dp_tables.settings.ap_ifindex = ap_ifindex;
        dp.set_local_addrs(&dp_tables.local_addrs)?;
        dp.set_settings(ferry_dataplane::datapath::with_local4(
            dp_tables.settings,
            &dp_tables.local_addrs,
        ))?;
        let (t, c) = TableState::adopt(&mut dp, config.clone(), saved, ap_ifindex)
            .context("adopting the running tables")?;
        (t, Some(c))
    } else {
        (
            TableState::install(&mut dp, config.clone(), ap_ifindex)?,
            None,
        )
    };
    dp.set_egress(client_ifindex)?;
    dp.set_egress_ap(ap_ifindex)?;

    let attachments = attach(&mut dp, &config, pin_dir, mode)?;
    Ok((dp, tables, change, attachments, config))
}

fn event_loop(node: &mut Node, config: &Config) -> Result<()> {
    let mut poll = Poll::new().context("creating the event loop")?;
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGHUP]).context("installing signal handlers")?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)?;

    let sock = &config.admin_socket;
    if let Some(dir) = sock.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if sock.exists() {
        // A socket nobody answers on is a leftover of a killed ferry.
        if std::os::unix::net::UnixStream::connect(sock).is_ok() {
            bail!("another ferry is already serving {}", sock.display());
        }
        std::fs::remove_file(sock).with_context(|| format!("removing stale {}", sock.display()))?;
    }
    let mut admin_l = UnixListener::bind(sock)
        .with_context(|| format!("binding admin socket {}", sock.display()))?;
    std::fs::set_permissions(sock, std::fs::Permissions::from_mode(0o600))?;
    poll.registry()
        .register(&mut admin_l, ADMIN, Interest::READABLE)?;

    let mut metrics_l = match config.metrics {
        Some(addr) => {
            let mut l = TcpListener::bind(addr)
                .with_context(|| format!("binding metrics listener {addr}"))?;
            poll.registry()
                .register(&mut l, METRICS, Interest::READABLE)?;
            Some(l)
        }
        None => None,
    };

    let mut udp: Vec<UdpSocket> = Vec::new();
    for (i, a) in config.addresses.iter().enumerate() {
        let addr = SocketAddr::new(*a, config.data_port);
        let mut s = UdpSocket::bind(addr).with_context(|| {
            format!("binding the keepalive socket {addr} (is {a} configured on this host?)")
        })?;
        poll.registry()
            .register(&mut s, Token(UDP_BASE + i), Interest::READABLE)?;
        udp.push(s);
    }
    info!(
        admin = %sock.display(),
        metrics = %config.metrics.map_or("off".to_string(), |a| a.to_string()),
        keepalive_port = config.data_port,
        "ferry run ready"
    );

    let mut conns: HashMap<Token, Conn> = HashMap::new();
    let mut next_conn = CONN_BASE;
    let mut events = Events::with_capacity(256);
    let mut next_tick = Instant::now() + TICK;
    loop {
        let timeout = next_tick.saturating_duration_since(Instant::now());
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("polling");
        }
        if Instant::now() >= next_tick {
            node.tick();
            next_tick = Instant::now() + TICK;
        }
        for ev in events.iter() {
            match ev.token() {
                SIGNALS => {
                    for sig in signals.pending() {
                        match sig {
                            SIGHUP => {
                                info!("SIGHUP: re-reading the configuration");
                                match node.reload() {
                                    Ok(v) => info!(result = %v, "reload applied"),
                                    Err(e) => error!("reload refused: {e:#}"),
                                }
                            }
                            _ => {
                                info!(signal = sig, "stopping");
                                return Ok(());
                            }
                        }
                    }
                }
                ADMIN => {
                    while let Some((st, _)) = accepted(admin_l.accept(), "admin") {
                        let t = Token(next_conn);
                        next_conn += 1;
                        conns.insert(t, Conn::register(&poll, t, Stream::Admin(st))?);
                    }
                }
                METRICS => {
                    while let Some(l) = metrics_l.as_mut()
                        && let Some((st, _)) = accepted(l.accept(), "metrics")
                    {
                        let t = Token(next_conn);
                        next_conn += 1;
                        conns.insert(t, Conn::register(&poll, t, Stream::Metrics(st))?);
                    }
                }
                Token(t) if (UDP_BASE..UDP_BASE + udp.len()).contains(&t) => {
                    let s = &udp[t - UDP_BASE];
                    let mut buf = [0u8; 2048];
                    loop {
                        match s.recv_from(&mut buf) {
                            Ok((n, peer)) => {
                                if let Some(reply) = node.keepalive(&buf[..n], peer)
                                    && let Err(e) = s.send_to(&reply, peer)
                                {
                                    warn!(%peer, "keepalive answer: {e}");
                                }
                            }
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(e) => {
                                warn!("keepalive socket: {e}");
                                break;
                            }
                        }
                    }
                }
                t => {
                    let Some(c) = conns.get_mut(&t) else { continue };
                    let mut done = false;
                    if ev.is_readable() || ev.is_read_closed() {
                        loop {
                            match c.read() {
                                Ok(0) => {
                                    done = true;
                                    break;
                                }
                                Ok(_) => {
                                    if c.inbuf.len() > admin::MAX_REQUEST {
                                        c.outbuf
                                            .extend(reply_line(&Response::err("request too long")));
                                        c.close_after_write = true;
                                        c.inbuf.clear();
                                        break;
                                    }
                                }
                                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                                Err(_) => {
                                    done = true;
                                    break;
                                }
                            }
                        }
                        node.serve(c);
                    }
                    match c.flush() {
                        Ok(()) => {
                            if c.close_after_write && c.outbuf.is_empty() {
                                done = true;
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => done = false,
                        Err(_) => done = true,
                    }
                    // A closed peer with an answer still owed: keep trying.
                    if done && !c.outbuf.is_empty() && c.close_after_write {
                        done = false;
                    }
                    if done && let Some(mut c) = conns.remove(&t) {
                        let _ = poll.registry().deregister(c.source());
                    }
                }
            }
        }
    }
}

/// The accepted connection, or `None` when there are no more (or accept
/// failed, which is logged).
fn accepted<T>(r: std::io::Result<T>, what: &str) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) if e.kind() == ErrorKind::WouldBlock => None,
        Err(e) => {
            warn!("{what} accept: {e}");
            None
        }
    }
}

fn reply_line(r: &Response) -> Vec<u8> {
    let mut v = serde_json::to_vec(r).unwrap_or_else(|_| b"{\"v\":1,\"ok\":false}".to_vec());
    v.push(b'\n');
    v
}

impl Node {
    /// Answers whatever complete requests `c` holds.
    fn serve(&mut self, c: &mut Conn) {
        match c.stream {
            Stream::Admin(_) => {
                while let Some(pos) = c.inbuf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = c.inbuf.drain(..=pos).collect();
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim();
                    if text.is_empty() {
                        continue;
                    }
                    let resp = match admin::parse_request(text) {
                        Ok(req) => match self.handle(req) {
                            Ok(v) => Response::ok(v),
                            Err(e) => Response::err(format!("{e:#}")),
                        },
                        Err(e) => Response::err(e),
                    };
                    c.outbuf.extend(reply_line(&resp));
                }
                // Large answers leave freed heap behind; hand it back so
                // the resident size reflects what ferry holds.
                trim_heap();
            }
            Stream::Metrics(_) => {
                if c.outbuf.is_empty()
                    && let Some(end) = c.inbuf.windows(4).position(|w| w == b"\r\n\r\n")
                {
                    let head = String::from_utf8_lossy(&c.inbuf[..end]).into_owned();
                    c.outbuf = crate::metrics::respond(&head, || self.metrics());
                    c.inbuf.clear();
                    c.close_after_write = true;
                } else if c.inbuf.len() > 16384 {
                    c.outbuf = crate::metrics::respond("BAD", String::new);
                    c.inbuf.clear();
                    c.close_after_write = true;
                }
            }
        }
    }

    /// Answers one request. Results go out as JSON text; the tunnel list
    /// is serialized row by row so a 25,600-tunnel answer never exists as
    /// a `Value` tree.
    fn handle(&mut self, req: Request) -> Result<Box<RawValue>> {
        let v = match req {
            Request::Tunnels => return self.tunnels(),
            other => self.handle_value(other)?,
        };
        Ok(serde_json::value::to_raw_value(&v)?)
    }

    fn handle_value(&mut self, req: Request) -> Result<Value> {
        match req {
            Request::Status => self.status(),
            Request::Tunnels => Ok(serde_json::from_str(self.tunnels()?.get())?),
            Request::Stations { ap, limit } => self.stations(ap.as_deref(), limit.unwrap_or(1000)),
            Request::Counters => self.counters(),
            Request::Swap { file, text } => {
                let t0 = Instant::now();
                let next = self
                    .tables
                    .config
                    .with_table(Path::new(&file), &text)
                    .map_err(|e| anyhow!("{e} (nothing was changed)"))?;
                let validated = t0.elapsed();
                let mut c = self.tables.swap(&mut self.dp, next)?;
                self.tables.add_validation(&mut c, validated);
                self.after_change(&c);
                Ok(serde_json::to_value(c)?)
            }
            Request::Rollback => {
                let c = self.tables.rollback(&mut self.dp)?;
                self.after_change(&c);
                Ok(serde_json::to_value(c)?)
            }
            Request::TunnelAdd { text } => {
                let t = self
                    .tables
                    .config
                    .parse_tunnel(&text)
                    .map_err(|e| anyhow!("{}", e.reason))?;
                let ap = t.ap.clone();
                let next = self.tables.with_tunnel(t)?;
                let c = self
                    .tables
                    .edit(&mut self.dp, next, &format!("tunnel add {ap}"))?;
                self.after_change(&c);
                Ok(serde_json::to_value(c)?)
            }
            Request::TunnelRemove { ap } => {
                let next = self.tables.without(&ap)?;
                let c = self
                    .tables
                    .edit(&mut self.dp, next, &format!("tunnel remove {ap}"))?;
                self.after_change(&c);
                Ok(serde_json::to_value(c)?)
            }
            Request::Promote { ap } => self.set_role(&ap, Role::Master),
            Request::Demote { ap } => self.set_role(&ap, Role::Backup),
            Request::Reload => self.reload(),
        }
    }

    fn set_role(&mut self, ap: &str, role: Role) -> Result<Value> {
        let next = self.tables.with_role(ap, role)?;
        let verb = if role == Role::Master {
            "promote"
        } else {
            "demote"
        };
        let c = self
            .tables
            .edit(&mut self.dp, next, &format!("tunnel {verb} {ap}"))?;
        self.after_change(&c);
        Ok(serde_json::to_value(c)?)
    }

    fn reload(&mut self) -> Result<Value> {
        let t0 = Instant::now();
        let next =
            Config::load(&self.config_path).map_err(|e| anyhow!("{e} (nothing was changed)"))?;
        let validated = t0.elapsed();
        let mut c = self.tables.swap(&mut self.dp, next)?;
        self.tables.add_validation(&mut c, validated);
        self.after_change(&c);
        Ok(serde_json::to_value(c)?)
    }

    fn after_change(&mut self, c: &Change) {
        let cfg = &self.tables.config;
        self.sessions
            .declare(cfg.tunnels.iter().map(|t| (t.ap.as_str(), t.session_id)));
        info!(
            kind = %c.kind,
            old_generation = c.old_generation,
            new_generation = c.new_generation,
            tunnels = c.tunnels,
            added = c.added,
            removed = c.removed,
            total_us = c.total_us,
            flip_us = c.flip_us,
            stations_flushed = c.stations_flushed,
            "tables changed"
        );
        self.save_state();
    }

    fn save_state(&self) {
        let s = StateFile {
            abi: abi_stamp(),
            saved: self.tables.saved(),
        };
        let r = (|| -> Result<()> {
            if let Some(d) = self.state_file.parent() {
                std::fs::create_dir_all(d)?;
            }
            let tmp = self.state_file.with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(&s)?)?;
            std::fs::rename(&tmp, &self.state_file)?;
            Ok(())
        })();
        if let Err(e) = r {
            warn!(file = %self.state_file.display(), "saving state: {e:#}");
        }
    }

    /// Handles one datagram on the data port; returns the answer to send.
    fn keepalive(&mut self, d: &[u8], peer: SocketAddr) -> Option<Vec<u8>> {
        let peer = unmap(peer);
        let k = match keepalive::parse(d) {
            Ok(k) => k,
            Err(e) => {
                self.ka.malformed += 1;
                tracing::debug!(%peer, "not a keepalive: {e}");
                return None;
            }
        };
        let now = Instant::now();
        if let Some(ap) = self.sessions.tunnel_of(&k.session_id).map(str::to_string) {
            match self.sessions.keepalive(&k.session_id, peer, now) {
                Binding::Bound | Binding::Rebound { .. }
                    if self.tables.bound(&ap) != Some(peer) =>
                {
                    match self.tables.bind(&mut self.dp, &ap, peer) {
                        Ok(c) => {
                            self.ka.bindings += 1;
                            info!(ap, %peer, generation = c.new_generation, "session tunnel bound by its keepalive");
                            self.save_state();
                        }
                        Err(e) => {
                            warn!(ap, %peer, "binding refused: {e:#}");
                            return None;
                        }
                    }
                }
                _ => {}
            }
            self.ka.answered += 1;
            return Some(keepalive::echo(d));
        }
        let by_addr = self
            .tables
            .config
            .tunnels
            .iter()
            .filter(|t| t.address == Some(peer.ip()))
            .find(|t| t.port.is_none_or(|p| p == peer.port()))
            .map(|t| t.ap.clone());
        if let Some(ap) = by_addr {
            self.sessions.seen(&ap, peer, now);
            self.ka.answered += 1;
            return Some(keepalive::echo(d));
        }
        self.ka.unknown += 1;
        if self.unknown.allow(now) {
            self.ka.answered += 1;
            Some(keepalive::echo(d))
        } else {
            self.ka.refused += 1;
            None
        }
    }

    fn tick(&mut self) {
        for ap in self.sessions.expire(Instant::now()) {
            warn!(
                ap,
                dead_interval_s = self.tables.config.dead_interval.as_secs(),
                "data channel dead: no keepalive"
            );
        }
    }

    fn keepalive_json(&self, ap: &str) -> Value {
        match self.sessions.get(ap) {
            Some(s) if s.last_seen.is_some() => json!({
                "state": if s.dead { "dead" } else { "alive" },
                "last_seen_s": s.last_seen.map(|t| t.elapsed().as_secs_f64()),
                "peer": s.peer.map(|p| p.to_string()),
                "keepalives": s.keepalives,
            }),
            _ => json!({"state": "never", "peer": self.tables.bound(ap).map(|p| p.to_string())}),
        }
    }

    /// One past the highest tunnel id in use (how much of the per-id
    /// arrays to read).
    fn id_bound(&self) -> u32 {
        self.tables
            .config
            .tunnels
            .iter()
            .filter_map(|t| self.tables.id_of(&t.ap))
            .max()
            .map_or(0, |m| m + 1)
    }

    fn status(&self) -> Result<Value> {
        let cfg = &self.tables.config;
        let masters = cfg
            .tunnels
            .iter()
            .filter(|t| t.role == Role::Master)
            .count();
        let unbound = cfg
            .tunnels
            .iter()
            .filter(|t| t.address.is_none() && self.tables.bound(&t.ap).is_none())
            .count();
        let counts = self.dp.station_counts(self.id_bound())?;
        let learned: u64 = self
            .tables
            .tables
            .tunnels
            .iter()
            .filter_map(|t| counts.get(t.info.id as usize))
            .sum();
        let (mut alive, mut dead, mut never) = (0, 0, 0);
        for t in &cfg.tunnels {
            match self.sessions.get(&t.ap) {
                Some(s) if s.dead => dead += 1,
                Some(s) if s.last_seen.is_some() => alive += 1,
                _ => never += 1,
            }
        }
        Ok(json!({
            "node": cfg.name,
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "uptime_s": self.started.elapsed().as_secs(),
            "config": self.config_path,
            "pin_dir": self.pin_dir,
            "adopted": self.adopted,
            "attached": self.attachments.iter().map(|a| json!({
                "iface": a.iface, "program": a.program, "mode": a.mode, "adopted_link": a.adopted,
            })).collect::<Vec<_>>(),
            "generation": self.tables.generation,
            "rollback_generation": self.tables.can_roll_back(),
            "tunnels": {"total": cfg.tunnels.len(), "master": masters,
                        "backup": cfg.tunnels.len() - masters, "unbound": unbound},
            "client_vlans": cfg.client_vlans,
            "stations": {"learned": learned, "static": cfg.stations.len(),
                          "capacity": cfg.station_capacity},
            "swaps": self.tables.swaps,
            "stations_flushed": self.tables.flushed_total,
            "last_change": self.tables.last,
            "keepalive": {
                "answered": self.ka.answered, "unknown": self.ka.unknown,
                "refused": self.ka.refused, "malformed": self.ka.malformed,
                "bindings": self.ka.bindings,
                "alive": alive, "dead": dead, "never": never,
                "dead_interval_s": cfg.dead_interval.as_secs(),
            },
        }))
    }

    fn tunnels(&self) -> Result<Box<RawValue>> {
        #[derive(serde::Serialize)]
        struct Rows {
            generation: u64,
            tunnels: Vec<Box<RawValue>>,
        }
        let mut v = Vec::with_capacity(self.tables.config.tunnels.len());
        let installed: HashMap<u32, &ferry_dataplane::tables::Tunnel> = self
            .tables
            .tables
            .tunnels
            .iter()
            .map(|t| (t.info.id, t))
            .collect();
        // One read each for the learned ports and station counts.
        let n = self.id_bound();
        let downs = self.dp.tunnel_downs(n)?;
        let counts = self.dp.station_counts(n)?;
        for t in &self.tables.config.tunnels {
            let id = self.tables.id_of(&t.ap);
            let stats = match id {
                Some(id) => Some(self.dp.tunnel_stats(id)?),
                None => None,
            };
            let live = id.and_then(|id| installed.get(&id));
            let port = match live {
                Some(l) if l.down.flags & abi::DOWN_FIXED_PORT == 0 => downs
                    .get(l.info.id as usize)
                    .map(|d| d.port)
                    .filter(|p| *p != 0),
                Some(l) => Some(l.down.port),
                None => None,
            };
            let address = t
                .address
                .or_else(|| self.tables.bound(&t.ap).map(|p| p.ip()));
            v.push(serde_json::value::to_raw_value(&json!({
                "ap": t.ap,
                "id": id,
                "address": address.map(|a| a.to_string()),
                "port": t.port,
                "learned_port": if t.port.is_none() { port } else { None },
                "session_id": t.session_id.as_ref().map(format_session_id),
                "installed": live.is_some(),
                "role": t.role.as_str(),
                "vlan": t.vlan,
                "format": if t.native { "802.11" } else { "802.3" },
                "stations": id.and_then(|id| counts.get(id as usize)),
                "rx_packets": stats.map(|s| s.rx_packets),
                "up_packets": stats.map(|s| s.up_packets),
                "up_bytes": stats.map(|s| s.up_bytes),
                "down_packets": stats.map(|s| s.down_packets),
                "down_bytes": stats.map(|s| s.down_bytes),
                "keepalive": self.keepalive_json(&t.ap),
            }))?);
        }
        Ok(serde_json::value::to_raw_value(&Rows {
            generation: self.tables.generation,
            tunnels: v,
        })?)
    }

    fn stations(&self, ap: Option<&str>, limit: usize) -> Result<Value> {
        let names: HashMap<u32, &str> = self
            .tables
            .config
            .tunnels
            .iter()
            .filter_map(|t| self.tables.id_of(&t.ap).map(|id| (id, t.ap.as_str())))
            .collect();
        let want = match ap {
            Some(a) => Some(
                self.tables
                    .id_of(a)
                    .ok_or_else(|| anyhow!("no tunnel {a:?}"))?,
            ),
            None => None,
        };
        let mut total = 0usize;
        let mut out = Vec::new();
        let mut matching = 0usize;
        self.dp.for_each_station(|k, v| {
            total += 1;
            if want.is_some_and(|w| w != v.tunnel) {
                return;
            }
            matching += 1;
            if out.len() >= limit {
                return;
            }
            out.push(json!({
                "mac": format_mac(&k.mac),
                "vlan": k.vlan,
                "ap": names.get(&v.tunnel).copied(),
                "tunnel": v.tunnel,
                "radio": v.rid,
                "bssid": (v.flags & abi::STATION_BSSID != 0).then(|| format_mac(&v.bssid)),
                "static": v.flags & abi::STATION_STATIC != 0,
            }));
        })?;
        Ok(json!({"total": total, "matching": matching, "shown": out.len(), "stations": out}))
    }

    fn counters(&self) -> Result<Value> {
        let c = self.dp.counters()?;
        let reasons: serde_json::Map<String, Value> = Reason::ALL
            .iter()
            .map(|r| (r.name().to_string(), json!(c.get(*r))))
            .collect();
        let events: serde_json::Map<String, Value> = Event::ALL
            .iter()
            .map(|e| (e.name().to_string(), json!(c.event(*e))))
            .collect();
        Ok(json!({"reasons": reasons, "events": events, "keepalive": {
            "answered": self.ka.answered, "unknown": self.ka.unknown,
            "refused": self.ka.refused, "malformed": self.ka.malformed,
        }}))
    }

    fn metrics(&self) -> String {
        let mut e = Exposition::default();
        let node = self.tables.config.name.as_str();
        e.family(
            "ferry_build_info",
            Kind::Gauge,
            "Build and node information.",
        )
        .sample(
            "ferry_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("node", node),
                ("abi", &abi_stamp()),
            ],
            1.0,
        );
        if let Ok(c) = self.dp.counters() {
            e.family(
                "ferry_packets_total",
                Kind::Counter,
                "Packets by verdict reason (see README, counter glossary).",
            );
            for r in Reason::ALL {
                e.sample(
                    "ferry_packets_total",
                    &[("reason", r.name())],
                    c.get(*r) as f64,
                );
            }
            e.family(
                "ferry_station_events_total",
                Kind::Counter,
                "Station learning events.",
            );
            for ev in Event::ALL {
                e.sample(
                    "ferry_station_events_total",
                    &[("event", ev.name())],
                    c.event(*ev) as f64,
                );
            }
        }
        let mut stats = Vec::new();
        for t in &self.tables.config.tunnels {
            if let Some(id) = self.tables.id_of(&t.ap)
                && let Ok(s) = self.dp.tunnel_stats(id)
            {
                stats.push((t.ap.as_str(), s));
            }
        }
        e.family("ferry_tunnel_packets_total", Kind::Counter, "Packets per tunnel: rx (received from the AP), up (forwarded to the client VLAN), down (encapsulated to the AP).");
        for (ap, s) in &stats {
            for (dir, v) in [
                ("rx", s.rx_packets),
                ("up", s.up_packets),
                ("down", s.down_packets),
            ] {
                e.sample(
                    "ferry_tunnel_packets_total",
                    &[("ap", ap), ("direction", dir)],
                    v as f64,
                );
            }
        }
        e.family(
            "ferry_tunnel_bytes_total",
            Kind::Counter,
            "Bytes per tunnel and direction.",
        );
        for (ap, s) in &stats {
            for (dir, v) in [
                ("rx", s.rx_bytes),
                ("up", s.up_bytes),
                ("down", s.down_bytes),
            ] {
                e.sample(
                    "ferry_tunnel_bytes_total",
                    &[("ap", ap), ("direction", dir)],
                    v as f64,
                );
            }
        }
        e.family(
            "ferry_tunnel_keepalive_state",
            Kind::Gauge,
            "Data channel state per tunnel: 1 for the current state (alive, dead or never).",
        );
        for t in &self.tables.config.tunnels {
            let st = match self.sessions.get(&t.ap) {
                Some(s) if s.dead => "dead",
                Some(s) if s.last_seen.is_some() => "alive",
                _ => "never",
            };
            e.sample(
                "ferry_tunnel_keepalive_state",
                &[("ap", &t.ap), ("state", st)],
                1.0,
            );
        }
        e.family(
            "ferry_keepalives_total",
            Kind::Counter,
            "Keepalives by outcome.",
        );
        for (k, v) in [
            ("answered", self.ka.answered),
            ("unknown_session", self.ka.unknown),
            ("rate_limited", self.ka.refused),
            ("malformed", self.ka.malformed),
            ("bound", self.ka.bindings),
        ] {
            e.sample("ferry_keepalives_total", &[("outcome", k)], v as f64);
        }
        e.family(
            "ferry_swaps_total",
            Kind::Counter,
            "Whole-table swaps and rollbacks.",
        )
        .sample("ferry_swaps_total", &[], self.tables.swaps as f64);
        e.family(
            "ferry_last_swap_duration_seconds",
            Kind::Gauge,
            "Request to new table live, last whole-table swap or rollback.",
        )
        .sample(
            "ferry_last_swap_duration_seconds",
            &[],
            self.tables
                .last_swap
                .as_ref()
                .map_or(0.0, |c| c.total_us as f64 / 1e6),
        );
        e.family(
            "ferry_table_generation",
            Kind::Gauge,
            "Live table generation.",
        )
        .sample("ferry_table_generation", &[], self.tables.generation as f64);
        e.family(
            "ferry_stations_flushed_total",
            Kind::Counter,
            "Stations deleted because their tunnel left the table or changed VLAN.",
        )
        .sample(
            "ferry_stations_flushed_total",
            &[],
            self.tables.flushed_total as f64,
        );
        e.finish()
    }
}

/// Returns free heap pages to the kernel (glibc).
fn trim_heap() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// IPv4-mapped IPv6 peers (dual-stack sockets) as plain IPv4.
fn unmap(p: SocketAddr) -> SocketAddr {
    match p.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), p.port()),
            None => p,
        },
        IpAddr::V4(_) => p,
    }
}

fn attach(
    dp: &mut Datapath,
    config: &Config,
    pin_dir: &Path,
    mode: AttachMode,
) -> Result<Vec<Attachment>> {
    let plan: Vec<(&str, &'static str)> = if config.one_arm() {
        vec![(config.ap_side.as_str(), abi::PROG_TRUNK)]
    } else {
        vec![
            (config.ap_side.as_str(), abi::PROG_UPSTREAM),
            (config.client_side.as_str(), abi::PROG_DOWNSTREAM),
        ]
    };
    let wanted: Vec<PathBuf> = plan
        .iter()
        .map(|(iface, _)| pin_dir.join(format!("link_{iface}")))
        .collect();
    // Links pinned for interfaces this configuration no longer uses.
    if let Ok(rd) = std::fs::read_dir(pin_dir) {
        for e in rd.flatten() {
            let p = e.path();
            let is_link = e.file_name().to_string_lossy().starts_with("link_");
            if is_link && !wanted.contains(&p) {
                warn!(pin = %p.display(), "detaching a program from an interface the configuration no longer names");
                let _ = std::fs::remove_file(&p);
            }
        }
    }
    let mut out = Vec::new();
    for ((iface, prog), pin) in plan.into_iter().zip(wanted) {
        let (adopted, m) = match mode {
            AttachMode::Skb => (dp.attach_pinned(prog, iface, XdpMode::Skb, &pin)?, "skb"),
            AttachMode::Driver => match dp.attach_pinned(prog, iface, XdpMode::Driver, &pin) {
                Ok(a) => (a, "driver"),
                Err(e) if is_unsupported(&e) => {
                    warn!(
                        iface,
                        "!!! the driver of {iface} has no native XDP: falling back to GENERIC (skb) mode, \
                         which is much slower; use --xdp-mode skb to accept this explicitly !!!"
                    );
                    (
                        dp.attach_pinned(prog, iface, XdpMode::Skb, &pin)?,
                        "skb (fallback)",
                    )
                }
                Err(e) if e.chain().any(|c| c.to_string().contains("os error 16")) => {
                    return Err(e.context(format!(
                        "{iface} already has an XDP program that is not this node's \
                         (another ferry node, or another tool?); see `ip link show {iface}`"
                    )));
                }
                Err(e) => return Err(e),
            },
        };
        info!(
            iface,
            program = prog,
            mode = m,
            adopted_link = adopted,
            "attached"
        );
        out.push(Attachment {
            iface: iface.to_string(),
            program: prog,
            mode: m,
            adopted,
        });
    }
    Ok(out)
}

fn is_unsupported(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        let s = c.to_string();
        s.contains("Operation not supported") || s.contains("os error 95")
    })
}

fn ifindex(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name).context("interface name")?;
    // SAFETY: valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        bail!("no interface {name:?} in this network namespace");
    }
    Ok(i)
}

/// bpf_fib_lookup answers only when forwarding is on for the AP-side
/// interface (see README); turn it on and say so.
fn enable_forwarding(iface: &str) {
    let p = format!("/proc/sys/net/ipv4/conf/{iface}/forwarding");
    match std::fs::read_to_string(&p) {
        Ok(v) if v.trim() == "1" => {}
        _ => match std::fs::write(&p, "1") {
            Ok(()) => info!(
                iface,
                "enabled IPv4 forwarding (needed for bpf_fib_lookup next hops)"
            ),
            Err(e) => warn!(
                iface,
                "cannot enable IPv4 forwarding ({e}); downstream next hops will come only from next_hop_mac"
            ),
        },
    }
}

fn raise_memlock() {
    let r = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &r) } != 0 {
        // Kernels from 5.11 charge BPF memory to the memory cgroup, not to
        // this limit, so failing here matters only on older kernels.
        tracing::debug!(
            "RLIMIT_MEMLOCK not raised ({}); fine on kernels from 5.11",
            std::io::Error::last_os_error()
        );
    }
}

fn ensure_bpffs(root: &Path) -> Result<()> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let base = root
        .ancestors()
        .find(|p| p.exists())
        .ok_or_else(|| anyhow!("no existing parent of {}", root.display()))?;
    let c = std::ffi::CString::new(base.as_os_str().as_encoded_bytes())?;
    // SAFETY: statfs into a zeroed struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        bail!(
            "statfs {}: {}",
            base.display(),
            std::io::Error::last_os_error()
        );
    }
    if st.f_type as i64 != BPF_FS_MAGIC && base == Path::new("/sys/fs/bpf") {
        // The standard place, not mounted yet (as on a fresh boot): mount it.
        let src = std::ffi::CString::new("bpf")?;
        // SAFETY: mount(2) with valid NUL-terminated strings.
        let r = unsafe { libc::mount(src.as_ptr(), c.as_ptr(), src.as_ptr(), 0, std::ptr::null()) };
        if r == 0 {
            info!("mounted bpffs on /sys/fs/bpf");
            return std::fs::create_dir_all(root)
                .with_context(|| format!("creating {}", root.display()));
        }
    }
    if st.f_type as i64 != BPF_FS_MAGIC {
        bail!(
            "{} is not on a bpffs; mount one with `mount -t bpf bpf /sys/fs/bpf` (deploy/bootstrap.sh does)",
            base.display()
        );
    }
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))
}

fn read_state(file: &Path, pin_dir: &Path) -> Result<Option<Saved>> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let s: StateFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a ferry state file", file.display()))?;
    if s.abi != abi_stamp() && pin_dir.exists() {
        bail!(
            "the maps pinned in {} come from a ferry with another map layout ({} here, {} there); \
             start with --replace to load fresh maps (forwarding stops briefly)",
            pin_dir.display(),
            abi_stamp(),
            s.abi
        );
    }
    Ok(Some(s.saved))
}

fn remove_pins(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
    }
    std::fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))
}

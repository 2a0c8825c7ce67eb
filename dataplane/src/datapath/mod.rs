//! A loaded instance of ferry's eBPF object: its programs and typed maps.
//!
//! Loading never touches an interface; [`Datapath::attach`] does. That is
//! what lets `ferry replay`, the differential tests and the benchmark run
//! the real programs through BPF_PROG_TEST_RUN without any NIC.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use crate::error::{Ctx as _, Error, Result};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, DevMap, HashMap, MapData, PerCpuArray},
    programs::{TestRun, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId},
};
use ferry_ebpf::abi::{
    self, Addr, CounterBlock, Event, LOCAL4_IN_MAP, LOCAL4_INLINE, Reason, Settings, TunnelStats,
};

use crate::{
    counters::Counters,
    object::OBJECT,
    tables::{Tables, addr_key, installed_settings},
};

mod counts;
mod groups;
mod links;
mod stations;
mod tunnels;

pub use groups::{GroupRoles, coarse_now_ns, group_stations};
pub use links::{Attached, LinkHandle, XdpTarget, ifindex};
pub use stations::Installed;

pub use tunnels::{TunnelTable, table_entries};

pub mod action {
    /// Program error.
    pub const ABORTED: u32 = 0;
    /// Drop.
    pub const DROP: u32 = 1;
    /// Up the host stack.
    pub const PASS: u32 = 2;
    /// Back out of the receiving interface.
    pub const TX: u32 = 3;
    /// Out of another interface (DEVMAP).
    pub const REDIRECT: u32 = 4;

    /// Human name of an XDP action code.
    pub fn name(code: u32) -> &'static str {
        match code {
            ABORTED => "aborted",
            DROP => "drop",
            PASS => "pass",
            TX => "tx",
            REDIRECT => "redirect",
            _ => "unknown",
        }
    }
}

/// Largest frame BPF_PROG_TEST_RUN accepts for XDP (one page minus headroom
/// and skb_shared_info) is below this; output buffers are this large.
const TEST_RUN_BUF: usize = 4096;

/// Result of one BPF_PROG_TEST_RUN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunResult {
    /// XDP action code (see [`action`]).
    pub action: u32,
    /// The packet as the program left it.
    pub output: Vec<u8>,
    /// Mean kernel-measured run time per repetition, in nanoseconds.
    pub duration_ns: u64,
}

/// ferry's programs and maps, loaded into the kernel.
pub struct Datapath {
    ebpf: Ebpf,
    /// Client VLANs currently set in `CLIENT_VLANS` (to clear on change).
    client_vlans: Vec<u16>,
    /// Table generation written into the settings; only ever grows, so the
    /// programs' learning hints from older tables never match.
    generation: u32,
    /// `Settings::tunnel_lookup` of the live tunnel table (set by each
    /// flip; a speed hint, so an edit that changes the mix leaves it as is).
    tunnel_lookup: u8,
    /// `Settings::hint_epoch`, advanced by [`Datapath::advance_hint_epoch`].
    hint_epoch: u8,
    /// `Settings::next_hop_generation`, advanced by
    /// [`Datapath::refresh_next_hops`]; never 0.
    next_hop_generation: u32,
    /// `Settings::next_hop_until`, renewed with each next-hop generation.
    next_hop_until: u64,
    /// `STATION_COUNT` mapped, once a synced station needs it.
    counts: Option<counts::MappedCounts>,
}

impl Datapath {
    /// Loads the embedded object and every program in it (not attached),
    /// with learning hints sized for the default station capacity.
    pub fn load() -> Result<Self> {
        Self::load_from(&[], abi::DEFAULT_STATION_CAPACITY)
    }

    /// Loads the object with its state maps ([`abi::PINNED_MAPS`]) pinned
    /// under `dir`: maps already pinned there are reused as they are (the
    /// programs are new, the tables, counters and learned stations are the
    /// running ones), missing ones are created and pinned. `dir` must exist
    /// on a bpffs. The learning hints (a cache, not pinned) are sized for
    /// `station_capacity`.
    pub fn load_pinned(dir: &Path, station_capacity: u32) -> Result<Self> {
        pinned_abi(dir)?;
        let legacy = dir.join(abi::LEGACY_PIN_STATION_CACHE);
        if legacy.exists() {
            // An older build pinned its per-CPU hints; nothing reads them now.
            std::fs::remove_file(&legacy).with_ctx(|| format!("removing {}", legacy.display()))?;
        }
        let paths: Vec<(&'static str, PathBuf)> =
            abi::PINNED_MAPS.iter().map(|m| (*m, dir.join(m))).collect();
        let mut dp = Self::load_from(&paths, station_capacity)?;
        // An adopted settings map already carries a generation: continue it,
        // so learning hints from before the restart never match.
        let live = dp.settings()?;
        dp.generation = live.generation.max(1);
        dp.tunnel_lookup = live.tunnel_lookup;
        dp.hint_epoch = live.hint_epoch;
        // The next-hop cache is new with the programs; any stamp will do.
        dp.next_hop_generation = live.next_hop_generation.max(1);
        let vlans: Array<_, u8> = Array::try_from(dp.map(abi::MAP_CLIENT_VLANS)?)?;
        dp.client_vlans = (1..=ferry_ebpf::vlan::VID_MAX)
            .filter(|v| matches!(vlans.get(&u32::from(*v), 0), Ok(1)))
            .collect();
        Ok(dp)
    }

    /// Loads the object with `pins` (map name, pin path) and hints sized for
    /// `station_capacity`.
    fn load_from(pins: &[(&'static str, PathBuf)], station_capacity: u32) -> Result<Self> {
        let buckets = ferry_ebpf::hint::buckets(station_capacity);
        let mask = buckets - 1;
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(abi::MAP_STATION_HINTS, buckets)
            .override_global(abi::GLOBAL_STATION_HINT_MASK, &mask, true);
        for (name, path) in pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(OBJECT)
            .ctx("loading ferry's eBPF object (are you root / CAP_BPF?)")?;
        for name in [
            abi::PROG_UPSTREAM,
            abi::PROG_DOWNSTREAM,
            abi::PROG_TRUNK,
            abi::PROG_PASS,
            abi::PROG_BASELINE_DROP,
            abi::PROG_BASELINE_TX,
        ] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or_else(|| Error::Missing(format!("program {name}")))?
                .try_into()
                .with_ctx(|| format!("program {name} is not XDP"))?;
            prog.load()
                .with_ctx(|| format!("verifier rejected program {name}"))?;
        }
        Ok(Self {
            ebpf,
            client_vlans: Vec::new(),
            generation: 1,
            tunnel_lookup: 0,
            hint_epoch: 0,
            next_hop_generation: 1,
            next_hop_until: 0,
            counts: None,
        })
    }

    /// A loaded XDP program by name.
    pub fn program(&self, name: &str) -> Result<&Xdp> {
        self.ebpf
            .program(name)
            .ok_or_else(|| Error::Missing(format!("program {name}")))?
            .try_into()
            .with_ctx(|| format!("program {name} is not XDP"))
    }

    fn map_mut(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .ok_or_else(|| Error::Missing(format!("map {name}")))
    }

    fn map(&self, name: &str) -> Result<&aya::maps::Map> {
        self.ebpf
            .map(name)
            .ok_or_else(|| Error::Missing(format!("map {name}")))
    }

    /// Installs everything in `tables`: local addresses, settings, client
    /// VLANs, the tunnel table and a fresh station table (each table a new
    /// inner map flipped in with one update). Learned stations and AP ports
    /// start over.
    pub fn apply(&mut self, tables: &Tables) -> Result<()> {
        self.set_local_addrs(&tables.local_addrs)?;
        self.set_settings(with_local4(tables.settings, &tables.local_addrs))?;
        self.set_client_vlans(&tables.client_vlans)?;
        self.install_tunnels(&tables.tunnels)?;
        // Zero the learned-station counts right before the empty table goes
        // live, so the counts describe the new table.
        let ids: Vec<u32> = tables.tunnels.iter().map(|t| t.info.id).collect();
        self.reset_station_counts(&ids)?;
        self.install_stations(&tables.stations, tables.station_capacity)
    }

    /// Sets the VLANs the downstream program serves.
    pub fn set_client_vlans(&mut self, vlans: &[u16]) -> Result<()> {
        if let Some(v) = vlans
            .iter()
            .find(|v| **v == 0 || **v > ferry_ebpf::vlan::VID_MAX)
        {
            bail!("client VLAN {v} out of range 1-4094");
        }
        let old = self.client_vlans.clone();
        let mut m: Array<_, u8> = Array::try_from(self.map_mut(abi::MAP_CLIENT_VLANS)?)?;
        // New ones first, then the ones that go: a VLAN in both sets is
        // never off, even for one packet.
        for v in vlans {
            m.set(u32::from(*v), 1, 0).ctx("setting client VLAN")?;
        }
        for v in old.iter().filter(|v| !vlans.contains(v)) {
            m.set(u32::from(*v), 0, 0).ctx("clearing client VLAN")?;
        }
        self.client_vlans = vlans.to_vec();
        Ok(())
    }

    /// Writes the settings entry as given (see [`with_local4`]), except
    /// the generation and the tunnel lookup order, which the datapath owns.
    /// Starts a new next-hop generation: the programs' cached outer headers
    /// are built from the settings (data port, DF).
    pub fn set_settings(&mut self, s: Settings) -> Result<()> {
        self.new_next_hop_generation();
        self.write_settings(s)
    }

    /// Writes the settings entry with the stamps the datapath owns, and no
    /// new next-hop generation of its own.
    fn write_settings(&mut self, s: Settings) -> Result<()> {
        let s = Settings {
            generation: self.generation,
            tunnel_lookup: self.tunnel_lookup,
            hint_epoch: self.hint_epoch,
            next_hop_generation: self.next_hop_generation,
            next_hop_until: self.next_hop_until,
            abi_version: abi::ABI_VERSION,
            ..installed_settings(s)
        };
        let mut m: Array<_, Settings> = Array::try_from(self.map_mut(abi::MAP_SETTINGS)?)?;
        m.set(0, s, 0).ctx("writing settings")?;
        Ok(())
    }

    /// The settings entry as the programs read it.
    pub fn settings(&self) -> Result<Settings> {
        let m: Array<_, Settings> = Array::try_from(self.map(abi::MAP_SETTINGS)?)?;
        m.get(&0, 0).ctx("reading settings")
    }

    /// Overrides the tunnel lookup order the last flip chose (0 or
    /// [`abi::LOOKUP_EXACT_FIRST`]): both give the same answers, so the
    /// micro-benchmark measures one table under each.
    pub fn set_tunnel_lookup(&mut self, order: u8) -> Result<()> {
        if order > abi::LOOKUP_EXACT_FIRST {
            bail!(
                "tunnel lookup order {order}: 0 or {}",
                abi::LOOKUP_EXACT_FIRST
            );
        }
        self.tunnel_lookup = order;
        let current = self.settings()?;
        self.write_settings(current)
    }

    /// Starts a new table generation (after installing tunnels or stations,
    /// or editing entries in place): the programs' learning hints and
    /// cached next hops from before stop matching. Written after the
    /// tables, so a program that sees the new stamp reads the new tables.
    pub fn bump_generation(&mut self) -> Result<()> {
        self.generation = next(self.generation);
        self.new_next_hop_generation();
        let current = self.settings()?;
        self.write_settings(current)
    }

    /// Starts a new next-hop generation: every CPU looks each tunnel's next
    /// hop up in the FIB again on its next frame. `ferry run` calls it when
    /// the kernel announces a route, neighbour, address or link change,
    /// and every `abi::NEXT_HOP_MAX_AGE_SECS` in case an announcement was
    /// lost.
    pub fn refresh_next_hops(&mut self) -> Result<()> {
        self.new_next_hop_generation();
        let current = self.settings()?;
        self.write_settings(current)
    }

    /// A new next-hop stamp and a renewed lease (written by the caller's
    /// next settings write).
    fn new_next_hop_generation(&mut self) {
        self.next_hop_generation = next(self.next_hop_generation);
        self.next_hop_until = groups::coarse_now_ns() + abi::NEXT_HOP_LEASE_SECS * 1_000_000_000;
    }

    /// Ends the next-hop cache's lease now: until the next generation, each
    /// cached answer is looked up again every `abi::NEXT_HOP_LEASE_CHECK`
    /// uses (`ferry run` calls it when it exits and leaves the programs
    /// forwarding, with nothing to watch the routes).
    pub fn end_next_hop_lease(&mut self) -> Result<()> {
        self.next_hop_until = 0;
        let current = self.settings()?;
        self.write_settings(current)
    }

    /// Starts a new learning-hint epoch (`ferry run` does every
    /// `abi::STATION_HINT_EPOCH_SECS`): each station still talking then
    /// reaches the station table once, which refreshes its `last_seen` and
    /// bounds how long a hint can outlive an LRU eviction (the changes user
    /// space makes clear their hints at once: [`Datapath::forget_hints`]).
    pub fn advance_hint_epoch(&mut self) -> Result<()> {
        self.hint_epoch = self.hint_epoch.wrapping_add(1);
        let current = self.settings()?;
        self.write_settings(current)
    }

    /// Points the downstream FIB lookups at AP-side interface `ifindex`
    /// (after that interface was re-created).
    pub fn set_ap_ifindex(&mut self, ifindex: u32) -> Result<()> {
        self.new_next_hop_generation();
        let current = self.settings()?;
        self.write_settings(Settings {
            ap_ifindex: ifindex,
            ..current
        })
    }

    /// Replaces the set of local CAPWAP data addresses (the hash map and the
    /// inline IPv4 copy in the settings).
    pub fn set_local_addrs(&mut self, addrs: &[IpAddr]) -> Result<()> {
        self.set_local_addr_map(addrs)?;
        let current = self.settings()?;
        self.set_settings(with_local4(current, addrs))
    }

    fn set_local_addr_map(&mut self, addrs: &[IpAddr]) -> Result<()> {
        if addrs.len() > abi::MAX_LOCAL_ADDRS as usize {
            bail!(
                "{} local addresses given, at most {} supported",
                addrs.len(),
                abi::MAX_LOCAL_ADDRS
            );
        }
        let mut m: HashMap<_, Addr, u8> = HashMap::try_from(self.map_mut(abi::MAP_LOCAL_ADDRS)?)?;
        let wanted: Vec<Addr> = addrs.iter().map(|a| addr_key(*a)).collect();
        let stale: Vec<Addr> = m
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !wanted.contains(k))
            .collect();
        for a in &wanted {
            m.insert(a, 1, 0).ctx("adding local address")?;
        }
        for k in stale {
            m.remove(&k).ctx("removing local address")?;
        }
        Ok(())
    }

    /// The table generation the programs currently see.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Points the upstream redirect egress (client side) at `ifindex`.
    pub fn set_client_egress(&mut self, ifindex: u32) -> Result<()> {
        self.set_egress_slot(abi::EGRESS_SLOT, ifindex)
    }

    /// Points the downstream redirect egress (AP side) at `ifindex`.
    pub fn set_ap_egress(&mut self, ifindex: u32) -> Result<()> {
        self.set_egress_slot(abi::EGRESS_AP_SLOT, ifindex)
    }

    fn set_egress_slot(&mut self, slot: u32, ifindex: u32) -> Result<()> {
        let mut m: DevMap<_> = DevMap::try_from(self.map_mut(abi::MAP_EGRESS)?)?;
        m.set(slot, ifindex, None, 0)
            .with_ctx(|| format!("setting egress slot {slot} to ifindex {ifindex}"))?;
        Ok(())
    }

    /// Sums the per-CPU verdict counters.
    pub fn counters(&self) -> Result<Counters> {
        let m: PerCpuArray<_, CounterBlock> = PerCpuArray::try_from(self.map(abi::MAP_COUNTERS)?)?;
        let per_cpu = m.get(&0, 0).ctx("reading counters")?;
        let mut c = Counters::default();
        for r in Reason::ALL {
            c.set(*r, per_cpu.iter().map(|b| b.v[r.index() as usize]).sum());
        }
        for e in Event::ALL {
            c.set_event(*e, per_cpu.iter().map(|b| b.e[e.index() as usize]).sum());
        }
        c.set_station_reads(per_cpu.iter().map(|b| b.e[abi::STAT_STATION_READS]).sum());
        c.set_fib_lookups(per_cpu.iter().map(|b| b.e[abi::STAT_FIB_LOOKUPS]).sum());
        Ok(c)
    }

    /// Sums one tunnel's per-CPU statistics.
    pub fn tunnel_stats(&self, id: u32) -> Result<TunnelStats> {
        let m: PerCpuArray<_, TunnelStats> =
            PerCpuArray::try_from(self.map(abi::MAP_TUNNEL_STATS)?)?;
        let v = m.get(&id, 0).ctx("reading tunnel stats")?;
        Ok(v.iter().fold(TunnelStats::default(), |a, s| TunnelStats {
            rx_packets: a.rx_packets + s.rx_packets,
            rx_bytes: a.rx_bytes + s.rx_bytes,
            up_packets: a.up_packets + s.up_packets,
            up_bytes: a.up_bytes + s.up_bytes,
            down_packets: a.down_packets + s.down_packets,
            down_bytes: a.down_bytes + s.down_bytes,
            port_hint: 0,
        }))
    }

    /// Zeroes the statistics of tunnel ids `ids` on every CPU (the ids are
    /// about to be given to other APs).
    pub fn reset_tunnel_stats(&mut self, ids: &[u32]) -> Result<()> {
        let mut m: PerCpuArray<_, TunnelStats> =
            PerCpuArray::try_from(self.map_mut(abi::MAP_TUNNEL_STATS)?)?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| Error::from(e))?;
        for id in ids {
            let zero = aya::maps::PerCpuValues::try_from(vec![TunnelStats::default(); cpus])?;
            m.set(*id, zero, 0).ctx("resetting tunnel statistics")?;
        }
        Ok(())
    }

    /// Runs program `name` once on `input` through BPF_PROG_TEST_RUN.
    pub fn run(&self, name: &str, input: &[u8]) -> Result<RunResult> {
        self.run_repeat(name, input, 1)
    }

    /// Runs program `name` `repeat` times on `input`; the duration is the
    /// kernel's mean per repetition.
    pub fn run_repeat(&self, name: &str, input: &[u8], repeat: u32) -> Result<RunResult> {
        if input.len() < ferry_ebpf::eth::HLEN {
            bail!(
                "frame of {} bytes is shorter than an Ethernet header",
                input.len()
            );
        }
        let prog = self.program(name)?;
        let mut out = vec![0u8; TEST_RUN_BUF];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(input),
                data_out: Some(&mut out),
                repeat,
                ..Default::default()
            })
            .with_ctx(|| format!("BPF_PROG_TEST_RUN of {name} on {} bytes", input.len()))?;
        out.truncate(r.data_size_out as usize);
        Ok(RunResult {
            action: r.return_value,
            output: out,
            duration_ns: r.duration.as_nanos() as u64,
        })
    }

    /// Attaches program `name` to `iface`. The link lives as long as `self`.
    pub fn attach(&mut self, name: &str, iface: &str, mode: XdpMode) -> Result<XdpLinkId> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| Error::Missing(format!("program {name}")))?
            .try_into()?;
        prog.attach(iface, mode)
            .with_ctx(|| format!("attaching {name} to {iface} in {mode:?} mode"))
    }

    /// Lab only: makes `iface` behave as a port in `vid` (TC programs that
    /// strip the tag on ingress and add it on egress), for kernels without
    /// VLAN devices. The programs stay attached as long as `self`.
    pub fn attach_lab_vlan(&mut self, iface: &str, vid: u16) -> Result<()> {
        use aya::programs::{SchedClassifier, TcAttachType};
        let mut m: Array<_, u32> = Array::try_from(self.map_mut(abi::MAP_LAB_VLAN)?)?;
        m.set(0, u32::from(vid), 0).ctx("setting lab VLAN")?;
        for (name, at) in [
            (abi::PROG_LAB_VLAN_POP, TcAttachType::Ingress),
            (abi::PROG_LAB_VLAN_PUSH, TcAttachType::Egress),
        ] {
            let p: &mut SchedClassifier = self
                .ebpf
                .program_mut(name)
                .ok_or_else(|| Error::Missing(format!("program {name}")))?
                .try_into()?;
            p.load().with_ctx(|| format!("loading {name}"))?;
            p.attach(iface, at)
                .with_ctx(|| format!("attaching {name} to {iface}"))?;
        }
        Ok(())
    }
}

/// The generation after `g`, skipping 0 (the stamp no hint or cache entry
/// may match).
fn next(g: u32) -> u32 {
    g.wrapping_add(1).max(1)
}

/// The map ABI of the maps pinned under `dir`, from their settings entry:
/// `Ok(None)` when nothing is pinned there, `Ok(Some(v))` when it is this
/// build's [`abi::ABI_VERSION`], and [`Error::AbiMismatch`] otherwise
/// (another layout or version: loading against those pins would misread
/// them). Read without loading the object, so nothing is touched.
pub fn pinned_abi(dir: &Path) -> Result<Option<u32>> {
    let path = dir.join(abi::MAP_SETTINGS);
    if !path.exists() {
        return Ok(None);
    }
    let data = MapData::from_pin(&path).with_ctx(|| format!("opening {}", path.display()))?;
    let info = data
        .info()
        .with_ctx(|| format!("reading {}", path.display()))?;
    let found = if info.value_size() as usize == std::mem::size_of::<Settings>() {
        let m: Array<_, Settings> = Array::try_from(aya::maps::Map::Array(data))?;
        m.get(&0, 0).ctx("reading the pinned settings")?.abi_version
    } else {
        // An older layout without the version field.
        0
    };
    if found != abi::ABI_VERSION {
        return Err(Error::AbiMismatch {
            dir: dir.to_path_buf(),
            found,
        });
    }
    Ok(Some(found))
}

/// `s` with its inline IPv4 address list set from `addrs`.
pub fn with_local4(mut s: Settings, addrs: &[IpAddr]) -> Settings {
    let v4: Vec<[u8; 4]> = addrs
        .iter()
        .filter_map(|a| match a {
            IpAddr::V4(v) => Some(v.octets()),
            IpAddr::V6(_) => None,
        })
        .collect();
    s.local4 = [[0; 4]; LOCAL4_INLINE];
    if v4.len() > LOCAL4_INLINE {
        s.local4_count = LOCAL4_IN_MAP;
    } else {
        s.local4_count = v4.len() as u8;
        s.local4[..v4.len()].copy_from_slice(&v4);
    }
    s
}

//! One contender's generator and sink: its own load of ferry's eBPF object
//! (so each contender's templates and expectations stay put while rounds
//! alternate), with `bench_gen`, `bench_sink`, `baseline_redirect` and
//! `ferry_pass` loaded, the bench maps sized at load, and typed access to
//! them.

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, DevMap, PerCpuArray, PerCpuValues},
    programs::{Xdp, XdpMode},
    util::nr_cpus,
};
use ferry_dataplane::{netns::Netns, object::OBJECT};
use ferry_ebpf::{
    abi,
    loadgen::{
        GenSettings, GenState, GenTemplate, LAT_BUCKETS, MAP_GEN_SETTINGS, MAP_GEN_STATE,
        MAP_GEN_TEMPLATES, MAP_REDIRECT, MAP_SINK_EXPECT, MAP_SINK_LATENCY, MAP_SINK_SETTINGS,
        MAP_SINK_STATS, PROG_GEN, PROG_REDIRECT, PROG_SINK, REDIRECT_SLOTS, SinkExpect,
        SinkSettings, SinkStats,
    },
};

/// A loaded generator/sink object.
pub struct Rig {
    ebpf: Ebpf,
    cpus: usize,
}

/// Sink counters summed over CPUs, with the good frames per CPU.
#[derive(Clone, Debug, Default)]
pub struct Sunk {
    /// Totals.
    pub total: SinkStats,
    /// Good frames by CPU.
    pub per_cpu: Vec<u64>,
}

impl Sunk {
    /// `self - before`, field by field.
    pub fn since(&self, before: &Self) -> Self {
        let (a, b) = (&self.total, &before.total);
        Self {
            total: SinkStats {
                good: a.good - b.good,
                bytes: a.bytes - b.bytes,
                bad_size: a.bad_size - b.bad_size,
                bad_trailer: a.bad_trailer - b.bad_trailer,
                bad_header: a.bad_header - b.bad_header,
                bad_station: a.bad_station - b.bad_station,
            },
            per_cpu: self
                .per_cpu
                .iter()
                .zip(before.per_cpu.iter().chain(std::iter::repeat(&0)))
                .map(|(x, y)| x - y)
                .collect(),
        }
    }

    /// Frames that arrived but were not what was expected.
    pub fn bad(&self) -> u64 {
        let t = &self.total;
        t.bad_size + t.bad_trailer + t.bad_header + t.bad_station
    }
}

impl Rig {
    /// Loads the object with room for `entries` templates and expectations.
    pub fn load(entries: u32) -> Result<Self> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(MAP_GEN_TEMPLATES, entries)
            .map_max_entries(MAP_SINK_EXPECT, entries)
            .load(OBJECT)
            .context("loading ferry's eBPF object for the bench (root?)")?;
        for name in [PROG_GEN, PROG_SINK, PROG_REDIRECT, abi::PROG_PASS] {
            let p: &mut Xdp = ebpf
                .program_mut(name)
                .with_context(|| format!("no program {name} in the object"))?
                .try_into()?;
            p.load()
                .with_context(|| format!("verifier rejected {name}"))?;
        }
        Ok(Self {
            ebpf,
            cpus: nr_cpus().map_err(|(_, e)| e)?,
        })
    }

    /// Program `name`.
    pub fn program(&self, name: &str) -> Result<&Xdp> {
        Ok(self
            .ebpf
            .program(name)
            .with_context(|| format!("no program {name}"))?
            .try_into()?)
    }

    /// Attaches program `name` natively to `iface` in `ns`.
    pub fn attach(&mut self, ns: &Netns, name: &str, iface: &str) -> Result<()> {
        let ebpf = &mut self.ebpf;
        ns.enter(|| -> Result<()> {
            let p: &mut Xdp = ebpf
                .program_mut(name)
                .with_context(|| format!("no program {name}"))?
                .try_into()?;
            p.attach(iface, XdpMode::Driver)
                .with_context(|| format!("attaching {name} to {iface} natively"))?;
            Ok(())
        })
    }

    /// Makes the redirect baseline send what arrives on `from` to `to`,
    /// both in `ns`. The kernel resolves a DEVMAP's ifindex in the
    /// namespace of the thread that writes it, so the write happens there:
    /// from anywhere else it would name some other namespace's interface.
    pub fn set_redirect(&mut self, ns: &Netns, from: u32, to: u32) -> Result<()> {
        if from >= REDIRECT_SLOTS {
            bail!("ifindex {from} past the redirect map's {REDIRECT_SLOTS} slots");
        }
        let mut m: DevMap<_> = DevMap::try_from(self.map(MAP_REDIRECT)?)?;
        ns.enter(|| -> Result<()> {
            m.set(from, to, None, 0)
                .context("setting a redirect target")?;
            Ok(())
        })
    }

    fn map(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .with_context(|| format!("no map {name}"))
    }

    /// Installs the generator's settings and templates; each CPU starts at
    /// its own share of the flows, so CPUs send different stations.
    pub fn set_gen(&mut self, s: GenSettings, templates: &[GenTemplate]) -> Result<()> {
        let mut t: Array<_, GenTemplate> = Array::try_from(self.map(MAP_GEN_TEMPLATES)?)?;
        if templates.len() > t.len() as usize {
            bail!("{} templates for {} slots", templates.len(), t.len());
        }
        for (i, v) in templates.iter().enumerate() {
            t.set(i as u32, v, 0).context("writing a template")?;
        }
        let cpus = self.cpus as u64;
        let share = u64::from(s.flows) / cpus.max(1);
        let mut st: PerCpuArray<_, GenState> = PerCpuArray::try_from(self.map(MAP_GEN_STATE)?)?;
        let starts: Vec<GenState> = (0..cpus).map(|c| GenState { next: c * share }).collect();
        st.set(
            0,
            PerCpuValues::try_from(starts).context("per-CPU generator state")?,
            0,
        )?;
        let mut g: Array<_, GenSettings> = Array::try_from(self.map(MAP_GEN_SETTINGS)?)?;
        g.set(0, s, 0)?;
        Ok(())
    }

    /// Installs the sink's settings and expectations.
    pub fn set_sink(&mut self, s: SinkSettings, expects: &[SinkExpect]) -> Result<()> {
        let mut t: Array<_, SinkExpect> = Array::try_from(self.map(MAP_SINK_EXPECT)?)?;
        if expects.len() > t.len() as usize {
            bail!("{} expectations for {} slots", expects.len(), t.len());
        }
        for (i, v) in expects.iter().enumerate() {
            t.set(i as u32, v, 0).context("writing an expectation")?;
        }
        let mut g: Array<_, SinkSettings> = Array::try_from(self.map(MAP_SINK_SETTINGS)?)?;
        g.set(0, s, 0)?;
        Ok(())
    }

    /// The sink's counters now.
    pub fn sunk(&mut self) -> Result<Sunk> {
        let m: PerCpuArray<_, SinkStats> = PerCpuArray::try_from(self.map(MAP_SINK_STATS)?)?;
        let v = m.get(&0, 0)?;
        let mut out = Sunk::default();
        for c in v.iter() {
            let t = &mut out.total;
            t.good += c.good;
            t.bytes += c.bytes;
            t.bad_size += c.bad_size;
            t.bad_trailer += c.bad_trailer;
            t.bad_header += c.bad_header;
            t.bad_station += c.bad_station;
            out.per_cpu.push(c.good);
        }
        Ok(out)
    }

    /// The sink's latency histogram now, summed over CPUs, by bucket.
    pub fn latency(&mut self) -> Result<Vec<u64>> {
        let m: PerCpuArray<_, u64> = PerCpuArray::try_from(self.map(MAP_SINK_LATENCY)?)?;
        (0..LAT_BUCKETS as u32)
            .map(|i| Ok(m.get(&i, 0)?.iter().sum()))
            .collect()
    }
}

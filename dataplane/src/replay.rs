//! Pcap replay: every frame of a capture through the real, loaded XDP
//! program (BPF_PROG_TEST_RUN), with the frames it would send written out.
//!
//! Reads classic pcap and pcapng (Ethernet link type only) and writes classic
//! pcap with the input timestamps. Per-reason counts come from the program's
//! own counters, read before and after the run, so they are what a live
//! `ferry counters` would show for the same traffic.

use std::{
    collections::{BTreeMap, HashSet},
    io::{BufRead, BufReader, Read, Write},
    time::Duration,
};

use crate::error::{Ctx as _, Result};
use ferry_ebpf::abi;
use pcap_file::{
    DataLink,
    pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter},
    pcapng::{Block, PcapNgReader},
};
use serde::Serialize;

use crate::{
    counters::Counters,
    datapath::{Datapath, action},
    model::Model,
    tables::Tables,
};
use ferry_ebpf::{eth, vlan};

/// Which interface a replayed frame arrives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The AP-side interface: the upstream program.
    Ap,
    /// The client-side interface: the downstream program.
    Client,
}

/// Decides the arrival side of each frame when the user did not fix it:
/// UDP to our data port on one of our addresses is AP side (CAPWAP first,
/// since its transport VLAN may also be a client VLAN); otherwise an
/// 802.1Q frame in a client VLAN is client side; anything else is AP side,
/// where the upstream program passes it to the host.
#[derive(Clone, Debug)]
pub struct Classifier {
    /// The reference model's outer-header parser decides "to our data port".
    model: Model,
    client_vlans: HashSet<u16>,
    fixed: Option<Side>,
}

impl Classifier {
    /// A classifier for `tables`; `fixed` forces one side for every frame.
    pub fn new(tables: &Tables, fixed: Option<Side>) -> Self {
        Self {
            model: Model::new(tables),
            client_vlans: tables.client_vlans.iter().copied().collect(),
            fixed,
        }
    }

    /// The side `frame` arrives on.
    pub fn side(&self, f: &[u8]) -> Side {
        if let Some(s) = self.fixed {
            return s;
        }
        if self.model.is_data_channel(f) {
            return Side::Ap;
        }
        if f.len() >= vlan::TAGGED_HLEN - 2
            && u16::from_be_bytes([f[eth::ETHERTYPE], f[eth::ETHERTYPE + 1]]) == vlan::TPID_8021Q
        {
            let vid = vlan::vid(u16::from_be_bytes([f[eth::HLEN], f[eth::HLEN + 1]]));
            if self.client_vlans.contains(&vid) {
                return Side::Client;
            }
        }
        Side::Ap
    }
}

/// Frames shorter than an Ethernet header or larger than one XDP buffer
/// cannot be run; they are skipped and counted.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Skipped {
    /// Shorter than 14 bytes.
    pub too_short: u64,
    /// Rejected by BPF_PROG_TEST_RUN (too large for one XDP buffer).
    pub rejected: u64,
    /// First rejection message, for the report.
    pub first_error: Option<String>,
}

/// What a replay did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Frames read from the input.
    pub packets: u64,
    /// Frames written to the output (TX + REDIRECT).
    pub written: u64,
    /// Frames run as arriving on the AP side (upstream program).
    pub from_ap: u64,
    /// Frames run as arriving on the client side (downstream program).
    pub from_client: u64,
    /// Frames whose capture was shorter than the original frame (run as captured).
    pub truncated_in_capture: u64,
    /// Frames not run.
    pub skipped: Skipped,
    /// Frames per XDP action ("tx", "redirect", "pass", "drop", ...).
    pub verdicts: BTreeMap<&'static str, u64>,
    /// Program counters accumulated during the run (non-zero only).
    pub reasons: BTreeMap<&'static str, u64>,
    /// Station learning events during the run (non-zero only).
    pub events: BTreeMap<&'static str, u64>,
}

/// One captured frame.
struct Frame {
    ts: Duration,
    orig_len: u32,
    data: Vec<u8>,
}

/// Frames from a pcap or pcapng stream.
enum Source<R: Read> {
    Pcap(PcapReader<R>),
    /// The reader and the link type of each interface seen so far.
    PcapNg(PcapNgReader<R>, Vec<DataLink>),
}

impl<R: BufRead> Source<R> {
    fn open(mut r: R) -> Result<Self> {
        let magic = r.fill_buf().ctx("reading capture header")?;
        if magic.len() < 4 {
            bail!("input is empty or not a capture file");
        }
        if magic[..4] == [0x0a, 0x0d, 0x0d, 0x0a] {
            return Ok(Self::PcapNg(
                PcapNgReader::new(r).ctx("reading pcapng header")?,
                Vec::new(),
            ));
        }
        let reader = PcapReader::new(r).ctx("reading pcap header (not a pcap/pcapng file?)")?;
        let dl = reader.header().datalink;
        if dl != DataLink::ETHERNET {
            bail!("capture link type is {dl:?}; ferry replays Ethernet (DLT_EN10MB) captures only");
        }
        Ok(Self::Pcap(reader))
    }

    fn next(&mut self) -> Result<Option<Frame>> {
        match self {
            Self::Pcap(r) => match r.next_packet() {
                None => Ok(None),
                Some(p) => {
                    let p = p.ctx("reading pcap packet")?;
                    Ok(Some(Frame {
                        ts: p.timestamp,
                        orig_len: p.orig_len,
                        data: p.data.into_owned(),
                    }))
                }
            },
            Self::PcapNg(r, links) => loop {
                let Some(b) = r.next_block() else {
                    return Ok(None);
                };
                match b.ctx("reading pcapng block")? {
                    Block::InterfaceDescription(i) => links.push(i.linktype),
                    Block::EnhancedPacket(p) => {
                        let dl = links.get(p.interface_id as usize).copied();
                        if dl != Some(DataLink::ETHERNET) {
                            bail!(
                                "pcapng interface {} has link type {dl:?}; ferry replays Ethernet only",
                                p.interface_id
                            );
                        }
                        return Ok(Some(Frame {
                            ts: p.timestamp,
                            orig_len: p.original_len,
                            data: p.data.into_owned(),
                        }));
                    }
                    Block::SimplePacket(p) => {
                        if links.first() != Some(&DataLink::ETHERNET) {
                            bail!("pcapng simple packets on a non-Ethernet interface");
                        }
                        return Ok(Some(Frame {
                            ts: Duration::ZERO,
                            orig_len: p.original_len,
                            data: p.data.into_owned(),
                        }));
                    }
                    _ => {}
                }
            },
        }
    }
}

/// Replays `input` through `dp`, each frame through the program of the side
/// `sides` says it arrives on, writing every frame the programs would
/// transmit or redirect to `output`. Station learning carries across frames,
/// as it would live. `progress` is called every 10,000 frames.
pub fn replay<R: Read, W: Write>(
    dp: &Datapath,
    sides: &Classifier,
    input: R,
    output: W,
    mut progress: impl FnMut(u64),
) -> Result<Report> {
    let mut src = Source::open(BufReader::new(input))?;
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ..Default::default()
    };
    let mut out = PcapWriter::with_header(output, header).ctx("writing pcap header")?;
    let before = dp.counters()?;
    let mut rep = Report::default();
    while let Some(f) = src.next()? {
        rep.packets += 1;
        if rep.packets % 10_000 == 0 {
            progress(rep.packets);
        }
        if (f.data.len() as u64) < u64::from(f.orig_len) {
            rep.truncated_in_capture += 1;
        }
        if f.data.len() < ferry_ebpf::eth::HLEN {
            rep.skipped.too_short += 1;
            continue;
        }
        let prog = match sides.side(&f.data) {
            Side::Ap => {
                rep.from_ap += 1;
                abi::PROG_UPSTREAM
            }
            Side::Client => {
                rep.from_client += 1;
                abi::PROG_DOWNSTREAM
            }
        };
        let r = match dp.run(prog, &f.data) {
            Ok(r) => r,
            Err(e) => {
                rep.skipped.rejected += 1;
                rep.skipped
                    .first_error
                    .get_or_insert_with(|| format!("{e:#}"));
                continue;
            }
        };
        *rep.verdicts.entry(action::name(r.action)).or_default() += 1;
        if r.action == action::TX || r.action == action::REDIRECT {
            let len = r.output.len() as u32;
            out.write_packet(&PcapPacket::new(f.ts, len, &r.output))
                .ctx("writing output frame")?;
            rep.written += 1;
        }
    }
    let delta: Counters = dp.counters()?.since(&before);
    rep.reasons = delta.nonzero().map(|(r, v)| (r.name(), v)).collect();
    rep.events = delta.nonzero_events().map(|(e, v)| (e.name(), v)).collect();
    out.into_writer().flush().ctx("flushing output")?;
    Ok(rep)
}

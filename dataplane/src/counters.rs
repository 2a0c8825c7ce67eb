//! Verdict counters summed over CPUs.

use ferry_ebpf::abi::{EVENT_COUNT, Event, REASON_COUNT, Reason};
use serde::Serialize;

/// One total per [`Reason`] and per [`Event`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    values: Vec<u64>,
    events: Vec<u64>,
    station_reads: u64,
    fib_lookups: u64,
}

impl Counters {
    /// The total for `r`.
    pub fn get(&self, r: Reason) -> u64 {
        self.values.get(r.index() as usize).copied().unwrap_or(0)
    }

    /// Sets the total for `r`.
    pub fn set(&mut self, r: Reason, v: u64) {
        if self.values.len() < REASON_COUNT as usize {
            self.values.resize(REASON_COUNT as usize, 0);
        }
        self.values[r.index() as usize] = v;
    }

    /// The total for event `e`.
    pub fn event(&self, e: Event) -> u64 {
        self.events.get(e.index() as usize).copied().unwrap_or(0)
    }

    /// Sets the total for event `e`.
    pub fn set_event(&mut self, e: Event, v: u64) {
        if self.events.len() < EVENT_COUNT as usize {
            self.events.resize(EVENT_COUNT as usize, 0);
        }
        self.events[e.index() as usize] = v;
    }

    /// Adds one to event `e`.
    pub fn bump_event(&mut self, e: Event) {
        let v = self.event(e);
        self.set_event(e, v + 1);
    }

    /// Upstream frames whose station learning read the station table (the
    /// learning hint missed; see `abi::STAT_STATION_READS`).
    pub fn station_reads(&self) -> u64 {
        self.station_reads
    }

    /// Sets the station-table read total.
    pub fn set_station_reads(&mut self, v: u64) {
        self.station_reads = v;
    }

    /// Downstream FIB lookups (the next-hop cache missed; see
    /// `abi::STAT_FIB_LOOKUPS`).
    pub fn fib_lookups(&self) -> u64 {
        self.fib_lookups
    }

    /// Sets the FIB lookup total.
    pub fn set_fib_lookups(&mut self, v: u64) {
        self.fib_lookups = v;
    }

    /// Non-zero event totals.
    pub fn nonzero_events(&self) -> impl Iterator<Item = (Event, u64)> + '_ {
        Event::ALL
            .iter()
            .map(|e| (*e, self.event(*e)))
            .filter(|(_, v)| *v != 0)
    }

    /// `self - before`, reason by reason.
    pub fn since(&self, before: &Counters) -> Counters {
        let mut d = Counters::default();
        for r in Reason::ALL {
            d.set(*r, self.get(*r).saturating_sub(before.get(*r)));
        }
        for e in Event::ALL {
            d.set_event(*e, self.event(*e).saturating_sub(before.event(*e)));
        }
        d.station_reads = self.station_reads.saturating_sub(before.station_reads);
        d.fib_lookups = self.fib_lookups.saturating_sub(before.fib_lookups);
        d
    }

    /// Non-zero totals, in counter order.
    pub fn nonzero(&self) -> impl Iterator<Item = (Reason, u64)> + '_ {
        Reason::ALL
            .iter()
            .map(|r| (*r, self.get(*r)))
            .filter(|(_, v)| *v != 0)
    }
}

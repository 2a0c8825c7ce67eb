//! Verdict counters summed over CPUs.

use ferry_ebpf::abi::{REASON_COUNT, Reason};
use serde::Serialize;

/// One total per [`Reason`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    values: Vec<u64>,
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

    /// Adds one to `r`.
    pub fn bump(&mut self, r: Reason) {
        let v = self.get(r);
        self.set(r, v + 1);
    }

    /// `self - before`, reason by reason.
    pub fn since(&self, before: &Counters) -> Counters {
        let mut d = Counters::default();
        for r in Reason::ALL {
            d.set(*r, self.get(*r).saturating_sub(before.get(*r)));
        }
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

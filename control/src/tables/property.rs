//! A property test of the table bookkeeping: random sequences of swap,
//! rollback, tunnel add/remove/promote/demote, bind and restart against the
//! reference model, with stations learned in between. After every step:
//! each station's downstream frames reach the AP that learned it, or no AP;
//! every tunnel in the live table is listed under the id it forwards with.

use std::{collections::BTreeMap, net::SocketAddr, path::Path};

use rand::{Rng, SeedableRng, seq::IndexedRandom as _};
use rand_chacha::ChaCha8Rng;

use ferry_dataplane::datapath::table_entries;

use super::tests::{CONFIG, down_to, up_from};
use super::*;
use crate::api::views::ChangeKind;

/// Address-declared APs `ap0`..`ap5` at 198.18.1.10-15 (port 5000, but
/// `ap5` takes any port), and session tunnels `nat` and `nat2` that
/// keepalives bind to ports 5000-7000 of 198.18.1.10, .11, .15, .20 and
/// .21: beside address-declared APs (sharing an address's port marker),
/// onto them (refused), and onto each other (refused).
const APS: usize = 6;
const SESSIONS: [(&str, &str); 2] = [
    ("nat", "00112233445566778899aabbccddeeff"),
    ("nat2", "00112233445566778899aabbccddee02"),
];

fn entry(ap: &str, standby: bool) -> String {
    let state = if standby { "state = \"standby\"\n" } else { "" };
    if let Some((_, sid)) = SESSIONS.iter().find(|(n, _)| *n == ap) {
        return format!("[[tunnel]]\nap = \"{ap}\"\nsession_id = \"{sid}\"\n{state}");
    }
    let i: u8 = ap[2..].parse().unwrap();
    let port = if i == 5 { "" } else { "port = 5000\n" };
    format!(
        "[[tunnel]]\nap = \"{ap}\"\naddress = \"198.18.1.{}\"\n{port}{state}",
        10 + i
    )
}

fn names() -> Vec<String> {
    let mut v: Vec<String> = (0..APS).map(|i| format!("ap{i}")).collect();
    v.extend(SESSIONS.iter().map(|(n, _)| n.to_string()));
    v
}

/// A random table: any subset of the APs, some standby.
fn random_table(rng: &mut ChaCha8Rng) -> String {
    let mut text = String::new();
    for ap in names() {
        if rng.random_bool(0.6) {
            text += &entry(&ap, rng.random_bool(0.2));
        }
    }
    text
}

/// Where AP `ap` sends from, if it can send at all.
fn source(s: &TableState<ModelMaps>, ap: &str) -> Option<SocketAddr> {
    if SESSIONS.iter().any(|(n, _)| *n == ap) {
        return s.bound(ap);
    }
    let i: u8 = ap[2..].parse().ok()?;
    Some(SocketAddr::from(([198, 18, 1, 10 + i], 5000)))
}

/// A step's result, short.
fn res<T: std::fmt::Debug>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(v) => format!("{v:?}"),
        Err(e) => format!("refused ({e:#})"),
    }
}

struct Run {
    rng: ChaCha8Rng,
    m: ModelMaps,
    s: TableState<ModelMaps>,
    /// The AP that last taught the model each station.
    learned_by: BTreeMap<u8, String>,
    log: Vec<String>,
    /// Checks where a station's frame was forwarded (not dropped): the
    /// property is only worth something if many are.
    forwarded: u32,
}

impl Run {
    fn new(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let c = Config::parse(
            Path::new("t.toml"),
            &format!("{CONFIG}{}", random_table(&mut rng)),
        )
        .unwrap();
        let mut m = ModelMaps::new(&lower::by_position(&c)).unwrap();
        let s = TableState::install(&mut m, c, 0).unwrap();
        Self {
            rng,
            m,
            s,
            learned_by: BTreeMap::new(),
            log: Vec::new(),
            forwarded: 0,
        }
    }

    fn live_aps(&self) -> Vec<String> {
        self.s.config.tunnels.iter().map(|t| t.ap.clone()).collect()
    }

    /// One random step; refusals (a bind clash, nothing to roll back) are
    /// steps too: they must change nothing.
    fn step(&mut self) {
        let live = self.live_aps();
        let absent: Vec<String> = names().into_iter().filter(|a| !live.contains(a)).collect();
        let (m, s, rng) = (&mut self.m, &mut self.s, &mut self.rng);
        let what = match rng.random_range(0..9) {
            0 => {
                let text = random_table(rng);
                let next = s.config.with_table(Path::new("t"), &text).unwrap();
                let r = s.swap(m, next, ChangeKind::Swap);
                format!(
                    "swap [{}]: {}",
                    text.replace('\n', " "),
                    res(r.map(|c| c.new_generation))
                )
            }
            1 => format!("rollback: {}", res(s.rollback(m).map(|c| c.new_generation))),
            2 => {
                let Some(ap) = absent.choose(rng) else { return };
                let t = s.config.parse_tunnel(&entry(ap, false)).unwrap();
                let r = s
                    .with_tunnel(t)
                    .and_then(|next| s.edit(m, next, ChangeKind::TunnelAdd, ap));
                format!("add {ap}: {}", res(r.map(|c| c.new_generation)))
            }
            3 => {
                let Some(ap) = live.choose(rng) else { return };
                let r = s
                    .without(ap)
                    .and_then(|next| s.edit(m, next, ChangeKind::TunnelRemove, ap));
                format!("remove {ap}: {}", res(r.map(|c| c.new_generation)))
            }
            4 => {
                let Some(ap) = live.choose(rng) else { return };
                let state = if rng.random_bool(0.5) {
                    TunnelState::Active
                } else {
                    TunnelState::Standby
                };
                let r = s.with_state(ap, state).and_then(|next| match next {
                    Some(n) => s.edit(m, n, ChangeKind::Promote, ap).map(Some),
                    None => Ok(None),
                });
                format!(
                    "{ap} {state:?}: {}",
                    res(r.map(|c| c.map(|c| c.new_generation)))
                )
            }
            5 => {
                let ap = SESSIONS.choose(rng).unwrap().0;
                let last = *[10u8, 11, 15, 20, 21].choose(rng).unwrap();
                let port = *[5000u16, 6000, 7000].choose(rng).unwrap();
                let peer = SocketAddr::from(([198, 18, 1, last], port));
                let r = s.bind(m, ap, peer);
                format!("bind {ap} {peer}: {}", res(r.map(|c| c.new_generation)))
            }
            6 => {
                let saved = s.saved();
                let running = s.config.clone();
                let (n, c) = TableState::adopt(m, running, Some(saved), 0).unwrap();
                *s = n;
                format!("restart: generation {}", c.new_generation)
            }
            _ => {
                let Some(ap) = live.choose(rng) else { return };
                let sta = rng.random_range(1..=12u8);
                let Some(src) = source(s, ap) else { return };
                let o = m.model.upstream(&up_from(src, sta));
                if o.reason == ferry_ebpf::abi::Reason::Forwarded {
                    self.learned_by.insert(sta, ap.clone());
                }
                format!("learn {sta} from {ap}: {:?}", o.reason)
            }
        };
        self.log.push(what);
    }

    fn check(&mut self) {
        let trail = || self.log.join("\n  ");
        for (sta, ap) in &self.learned_by {
            if let Ok(to) = down_to(&self.m, *sta) {
                self.forwarded += 1;
                let want = source(&self.s, ap);
                assert_eq!(
                    Some(to),
                    want,
                    "station {sta}, learned from {ap}, sent to {to:?}; steps:\n  {}",
                    trail()
                );
            }
        }
        // The live upstream entries are exactly what a build of the
        // bookkept tables makes (port markers included), however they
        // got there: a whole build, an edit or a binding's own writes.
        let live = self.m.live().unwrap();
        let mut entries = self.m.entries(&live).unwrap();
        entries.sort_by_key(|(k, _)| *k);
        assert_eq!(
            entries,
            table_entries(&self.s.tables.tunnels).unwrap(),
            "live entries differ from the bookkept table; steps:\n  {}",
            trail()
        );
        // Every live upstream entry is a listed tunnel with that id.
        for (_, info) in entries {
            if info.flags & abi::TUNNEL_MARKER != 0 {
                continue;
            }
            let listed = self
                .s
                .config
                .tunnels
                .iter()
                .any(|t| self.s.id_of(&t.ap) == Some(info.id));
            assert!(
                listed,
                "id {} forwards unlisted; steps:\n  {}",
                info.id,
                trail()
            );
        }
        let mut ids: Vec<u32> = self.s.tables.tunnels.iter().map(|t| t.info.id).collect();
        ids.sort_unstable();
        let n = ids.len();
        ids.dedup();
        assert_eq!(
            ids.len(),
            n,
            "two live tunnels share an id; steps:\n  {}",
            trail()
        );
    }
}

#[test]
fn random_change_sequences_never_misroute_a_station() {
    let (mut forwarded, mut steps) = (0, BTreeMap::<String, u32>::new());
    for seed in 0..300 {
        let mut r = Run::new(seed);
        for _ in 0..40 {
            r.step();
            r.check();
        }
        forwarded += r.forwarded;
        for l in &r.log {
            let what = l.split_whitespace().next().unwrap_or("").to_string();
            if !l.contains("refused") {
                *steps.entry(what).or_default() += 1;
            }
        }
    }
    // Not vacuous: stations were forwarded, and every kind of step took
    // effect many times.
    assert!(forwarded > 10_000, "only {forwarded} forwarded checks");
    for kind in [
        "swap",
        "rollback:",
        "add",
        "remove",
        "bind",
        "restart:",
        "learn",
    ] {
        let n = steps.get(kind).copied().unwrap_or(0);
        assert!(n > 100, "{kind} took effect {n} times: {steps:?}");
    }
}

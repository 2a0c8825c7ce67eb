//! Table bookkeeping against the reference model, without root: swap,
//! rollback (twice), edits, binding, id reuse and the station flush, each
//! checked by what the model then does with frames.

use std::{net::SocketAddr, path::Path};

use ferry_dataplane::{craft, datapath::action};
use ferry_ebpf::abi::Reason;

use super::*;
use crate::api::views::ChangeKind;

pub(super) const CONFIG: &str = r#"
[node]
name = "t"
addresses = ["198.18.0.1"]
[interfaces]
ap_side = "a"
client_side = "b"
[forwarding]
client_vlans = [200, 201]
[downstream]
next_hop_mac = "02:0e:00:00:00:01"
source_mac = "02:ac:00:00:00:01"
"#;

pub(super) fn tunnel(ap: &str, last: u8) -> String {
    format!("[[tunnel]]\nap = \"{ap}\"\naddress = \"198.18.1.{last}\"\nport = 5000\n")
}

pub(super) fn config(tunnels: &[(&str, u8)]) -> Config {
    let t: String = tunnels.iter().map(|(a, l)| tunnel(a, *l)).collect();
    Config::parse(Path::new("t.toml"), &format!("{CONFIG}{t}")).unwrap()
}

pub(super) fn table(base: &Config, tunnels: &[(&str, u8)]) -> Config {
    let t: String = tunnels.iter().map(|(a, l)| tunnel(a, *l)).collect();
    base.with_table(Path::new("table.toml"), &t).unwrap()
}

/// An upstream frame from the AP at 198.18.1.`last` carrying station `sta`.
pub(super) fn up(last: u8, sta: u8) -> Vec<u8> {
    up_from(SocketAddr::from(([198, 18, 1, last], 5000)), sta)
}

/// A client frame of station `sta` from an AP at `src`.
pub(super) fn up_from(src: SocketAddr, sta: u8) -> Vec<u8> {
    let t = craft::Transport {
        sport: src.port(),
        ..craft::Transport::new(src.ip(), [198, 18, 0, 1].into())
    };
    let inner = craft::ethernet(
        [2, 0xee, 0, 0, 0, 1],
        [2, 0x5a, 0, 0, 0, sta],
        None,
        0x0800,
        &[0; 46],
    );
    craft::udp_frame(
        &t,
        &craft::capwap(craft::header_8023(0), &Default::default(), &inner),
    )
}

/// Where a downstream frame to station `sta` goes: the AP address, or the
/// drop reason.
pub(super) fn down(m: &ModelMaps, sta: u8) -> Result<[u8; 4], Reason> {
    down_to(m, sta).map(|a| match a.ip() {
        std::net::IpAddr::V4(v4) => v4.octets(),
        std::net::IpAddr::V6(_) => [0; 4],
    })
}

/// Where a downstream frame to station `sta` goes: the AP address and
/// port, or the drop reason.
pub(super) fn down_to(m: &ModelMaps, sta: u8) -> Result<SocketAddr, Reason> {
    let frame = craft::ethernet(
        [2, 0x5a, 0, 0, 0, sta],
        [2, 0xee, 0, 0, 0, 1],
        Some((0x8100, 200)),
        0x0800,
        &[0; 46],
    );
    let o = m.model.downstream(&frame);
    if o.action == action::DROP || o.action == action::PASS {
        return Err(o.reason);
    }
    let ip = 14 + 16;
    let port = 14 + 20 + 2;
    Ok(SocketAddr::from((
        [
            o.output[ip],
            o.output[ip + 1],
            o.output[ip + 2],
            o.output[ip + 3],
        ],
        u16::from_be_bytes([o.output[port], o.output[port + 1]]),
    )))
}

/// Learns station `sta` behind the AP at `src`.
pub(super) fn learn_from(m: &mut ModelMaps, src: SocketAddr, sta: u8) {
    let o = m.model.upstream(&up_from(src, sta));
    assert_eq!(o.reason, Reason::Forwarded, "learning {sta} from {src}");
}

pub(super) fn learn(m: &mut ModelMaps, last: u8, sta: u8) {
    let o = m.model.upstream(&up(last, sta));
    assert_eq!(o.reason, Reason::Forwarded, "learning {sta} from .{last}");
}

pub(super) fn start(tunnels: &[(&str, u8)]) -> (ModelMaps, TableState<ModelMaps>) {
    let c = config(tunnels);
    let mut m = ModelMaps::new(&lower::by_position(&c)).unwrap();
    let s = TableState::install(&mut m, c, 0).unwrap();
    (m, s)
}

#[test]
fn swap_keeps_stations_of_staying_aps_and_flushes_the_rest() {
    let (mut m, mut s) = start(&[("ap1", 10), ("ap2", 11)]);
    learn(&mut m, 10, 1);
    learn(&mut m, 11, 2);
    assert_eq!(down(&m, 1), Ok([198, 18, 1, 10]));
    let next = table(&s.config, &[("ap1", 10), ("ap3", 12)]);
    let c = s.swap(&mut m, next, ChangeKind::Swap).unwrap();
    assert_eq!((c.added, c.removed, c.stations_flushed), (1, 1, 1));
    assert_eq!(
        down(&m, 1),
        Ok([198, 18, 1, 10]),
        "ap1 stays: its station too"
    );
    assert!(down(&m, 2).is_err(), "ap2 left: its station is flushed");
    assert_ne!(s.id_of("ap3"), s.id_of("ap1"));
    assert_eq!(s.id_of("ap2"), Some(1), "kept for the rollback target");
}

#[test]
fn rollback_twice_flips_back_and_forth() {
    let (mut m, mut s) = start(&[("ap1", 10)]);
    let g1 = s.generation;
    let next = table(&s.config, &[("ap1", 10), ("ap2", 11)]);
    s.swap(&mut m, next, ChangeKind::Swap).unwrap();
    learn(&mut m, 11, 2);
    let r = s.rollback(&mut m).unwrap();
    assert_eq!(r.new_generation, g1);
    assert_eq!(s.config.tunnels.len(), 1);
    assert!(down(&m, 2).is_err(), "ap2 is gone after the rollback");
    let r2 = s.rollback(&mut m).unwrap();
    assert_eq!(r2.new_generation, g1 + 1);
    assert_eq!(s.config.tunnels.len(), 2);
    learn(&mut m, 11, 2);
    assert_eq!(down(&m, 2), Ok([198, 18, 1, 11]));
    assert_eq!(s.swaps, 3);
}

#[test]
fn edits_change_entries_in_place_and_keep_the_rollback_target() {
    let (mut m, mut s) = start(&[("ap1", 10)]);
    learn(&mut m, 10, 1);
    let next = s.with_state("ap1", TunnelState::Standby).unwrap().unwrap();
    let c = s.edit(&mut m, next, ChangeKind::Demote, "ap1").unwrap();
    assert_eq!(c.ap.as_deref(), Some("ap1"));
    assert_eq!(m.model.upstream(&up(10, 1)).reason, Reason::DropStandby);
    assert!(
        s.with_state("ap1", TunnelState::Standby).unwrap().is_none(),
        "a no-op"
    );
    let t = s.config.parse_tunnel(&tunnel("ap2", 11)).unwrap();
    let next = s.with_tunnel(t).unwrap();
    s.edit(&mut m, next, ChangeKind::TunnelAdd, "ap2").unwrap();
    learn(&mut m, 11, 2);
    assert_eq!(down(&m, 2), Ok([198, 18, 1, 11]));
    let next = s.without("ap2").unwrap();
    let c = s
        .edit(&mut m, next, ChangeKind::TunnelRemove, "ap2")
        .unwrap();
    assert_eq!(c.stations_flushed, 1);
    assert_eq!(
        m.model.upstream(&up(11, 2)).reason,
        Reason::DropUnknownTunnel
    );
    assert_eq!(s.swaps, 0, "edits are not swaps");
    assert!(s.can_roll_back().is_none());
}

#[test]
fn bind_gives_a_session_tunnel_its_entry() {
    let c = Config::parse(
        Path::new("t.toml"),
        &format!(
            "{CONFIG}[[tunnel]]\nap = \"nat\"\nsession_id = \"00112233445566778899aabbccddeeff\"\n"
        ),
    )
    .unwrap();
    let mut m = ModelMaps::new(&lower::by_position(&c)).unwrap();
    let mut s = TableState::install(&mut m, c, 0).unwrap();
    assert_eq!(
        m.model.upstream(&up(10, 1)).reason,
        Reason::DropUnknownTunnel
    );
    let peer: SocketAddr = "198.18.1.10:5000".parse().unwrap();
    s.bind(&mut m, "nat", peer).unwrap();
    assert_eq!(s.bound("nat"), Some(peer));
    learn(&mut m, 10, 1);
    assert_eq!(down(&m, 1), Ok([198, 18, 1, 10]));
    assert!(s.bind(&mut m, "nope", peer).is_err());
}

#[test]
fn ids_are_reused_only_when_no_generation_names_them() {
    let (mut m, mut s) = start(&[("ap1", 10), ("ap2", 11)]);
    let next = table(&s.config, &[("ap1", 10)]);
    s.swap(&mut m, next, ChangeKind::Swap).unwrap();
    // ap2 (id 1) is in the rollback target: a new AP must not take it.
    let next = table(&s.config, &[("ap1", 10), ("ap3", 12)]);
    s.swap(&mut m, next, ChangeKind::Swap).unwrap();
    assert_eq!(s.id_of("ap3"), Some(2));
    // Now the rollback target is [ap1]: id 1 is free again.
    let next = table(&s.config, &[("ap1", 10), ("ap3", 12), ("ap4", 13)]);
    s.swap(&mut m, next, ChangeKind::Swap).unwrap();
    assert_eq!(s.id_of("ap4"), Some(1));
}

#[test]
fn a_vlan_change_flushes_that_tunnels_stations() {
    let (mut m, mut s) = start(&[("ap1", 10)]);
    learn(&mut m, 10, 1);
    let text = format!("{}vlan = 201\n", tunnel("ap1", 10));
    let next = s.config.with_table(Path::new("t"), &text).unwrap();
    let c = s.swap(&mut m, next, ChangeKind::Swap).unwrap();
    assert_eq!(c.stations_flushed, 1);
    assert!(m.model.stations().is_empty());
}

/// The drill that misrouted (issue 9): `swap B` (adds apX), rollback,
/// `tunnel add apY`, rollback (apX live again), then a swap that removes
/// apX and adds apZ. The edit used to forget apX's id although the
/// rollback target still had apX, so apZ got apX's id and apX's learned
/// station followed it to apZ.
#[test]
fn ids_of_the_rollback_target_survive_edits() {
    let (mut m, mut s) = start(&[("ap1", 10)]);
    let next = table(&s.config, &[("ap1", 10), ("apX", 11)]);
    s.swap(&mut m, next, ChangeKind::Swap).unwrap();
    s.rollback(&mut m).unwrap();
    let t = s.config.parse_tunnel(&tunnel("apY", 12)).unwrap();
    let next = s.with_tunnel(t).unwrap();
    s.edit(&mut m, next, ChangeKind::TunnelAdd, "apY").unwrap();
    s.rollback(&mut m).unwrap();
    for t in &s.config.tunnels {
        assert!(s.id_of(&t.ap).is_some(), "{} forwards unlisted", t.ap);
    }
    learn(&mut m, 11, 5);
    assert_eq!(down(&m, 5), Ok([198, 18, 1, 11]));
    let next = table(&s.config, &[("ap1", 10), ("apZ", 13)]);
    let c = s.swap(&mut m, next, ChangeKind::Swap).unwrap();
    assert_eq!(c.stations_flushed, 1, "apX's station goes with apX");
    assert_ne!(s.id_of("apZ"), s.id_of("apX"));
    assert_eq!(
        down(&m, 5),
        Err(Reason::DownDropUnknownStation),
        "not to apZ"
    );
}

/// A session tunnel never binds where an address-declared tunnel serves,
/// exactly or through its any-port entry (the exact key would win and take
/// that AP's traffic from one port).
#[test]
fn a_binding_never_shadows_an_address_tunnel() {
    let c = Config::parse(
        Path::new("t.toml"),
        &format!(
            "{CONFIG}[[tunnel]]\nap = \"ap1\"\naddress = \"198.18.1.10\"\n[[tunnel]]\nap = \"ap2\"\naddress = \"198.18.1.11\"\nport = 5000\n[[tunnel]]\nap = \"nat\"\nsession_id = \"00112233445566778899aabbccddeeff\"\n"
        ),
    )
    .unwrap();
    let mut m = ModelMaps::new(&lower::by_position(&c)).unwrap();
    let mut s = TableState::install(&mut m, c, 0).unwrap();
    for peer in ["198.18.1.10:5000", "198.18.1.10:4444", "198.18.1.11:5000"] {
        let e = s.bind(&mut m, "nat", peer.parse().unwrap()).unwrap_err();
        assert!(e.to_string().contains("already served"), "{peer}: {e}");
    }
    assert_eq!(s.bound("nat"), None);
    assert_eq!(m.model.upstream(&up(10, 1)).reason, Reason::Forwarded);
    learn(&mut m, 10, 1);
    assert_eq!(down(&m, 1), Ok([198, 18, 1, 10]), "ap1 keeps its traffic");
    // Another port at an address with port tunnels only is free.
    s.bind(&mut m, "nat", "198.18.1.11:4444".parse().unwrap())
        .unwrap();
}

/// A binding is live state: it writes the tunnel's own entries (no new
/// generation, the rollback target untouched), and one whose writes fail
/// part way leaves the live table exactly as it was.
#[test]
fn a_binding_writes_its_own_entries_or_nothing() {
    let c = Config::parse(
        Path::new("t.toml"),
        &format!(
            "{CONFIG}[[tunnel]]\nap = \"ap2\"\naddress = \"198.18.1.11\"\nport = 5000\n[[tunnel]]\nap = \"nat\"\nsession_id = \"00112233445566778899aabbccddeeff\"\n"
        ),
    )
    .unwrap();
    let mut m = ModelMaps::new(&lower::by_position(&c)).unwrap();
    let mut s = TableState::install(&mut m, c, 0).unwrap();
    let g = s.generation;
    let first: SocketAddr = "198.18.1.20:4000".parse().unwrap();
    let c = s.bind(&mut m, "nat", first).unwrap();
    assert_eq!(
        (c.old_generation, c.new_generation, s.generation),
        (g, g, g)
    );
    learn_from(&mut m, first, 1);
    let live = m.live().unwrap();
    let before = (m.entries(&live).unwrap(), m.downs(&live, 2).unwrap());
    // Onto an address that shares ap2's port marker, from one that loses
    // its own: every write of the move fails once, in turn.
    let next: SocketAddr = "198.18.1.11:4444".parse().unwrap();
    for n in 0..4 {
        m.fail_write = Some(n);
        let e = s.bind(&mut m, "nat", next).unwrap_err();
        assert!(e.to_string().contains("injected"), "{e}");
        let after = (m.entries(&live).unwrap(), m.downs(&live, 2).unwrap());
        assert_eq!(after, before, "write {n} failed: nothing changed");
        assert_eq!(s.bound("nat"), Some(first));
        assert_eq!(down_to(&m, 1), Ok(first));
    }
    m.fail_write = None;
    s.bind(&mut m, "nat", next).unwrap();
    assert_eq!(down_to(&m, 1), Ok(next), "the station follows its AP");
    let mut entries = m.entries(&live).unwrap();
    entries.sort_by_key(|(k, _)| *k);
    assert_eq!(
        entries,
        ferry_dataplane::datapath::table_entries(&s.tables.tunnels).unwrap()
    );
}

/// A restart whose state file predates the last binding (it is written
/// up to a second later) keeps the binding that runs: the maps are the
/// truth, and the AP would otherwise lose its downstream traffic until
/// its next keepalive.
#[test]
fn a_restart_keeps_the_binding_that_runs() {
    let c = Config::parse(
        Path::new("t.toml"),
        &format!(
            "{CONFIG}[[tunnel]]\nap = \"ap2\"\naddress = \"198.18.1.11\"\n[[tunnel]]\nap = \"nat\"\nsession_id = \"00112233445566778899aabbccddeeff\"\n"
        ),
    )
    .unwrap();
    let mut m = ModelMaps::new(&lower::by_position(&c)).unwrap();
    let mut s = TableState::install(&mut m, c, 0).unwrap();
    s.bind(&mut m, "nat", "198.18.1.20:4000".parse().unwrap())
        .unwrap();
    let saved = s.saved();
    let now: SocketAddr = "198.18.1.21:4001".parse().unwrap();
    s.bind(&mut m, "nat", now).unwrap();
    learn_from(&mut m, now, 1);
    let (s, _) = TableState::adopt(&mut m, s.config.clone(), Some(saved), 0).unwrap();
    assert_eq!(s.bound("nat"), Some(now));
    assert_eq!(down_to(&m, 1), Ok(now));
}

/// A state file whose binding of one session tunnel is now another's (the
/// first moved, the second took its old place, within the second before
/// the bindings file caught up) is not a contradiction: it is believed for
/// ids, and the bindings come from the maps.
#[test]
fn a_trailing_binding_is_not_a_contradiction() {
    let c = Config::parse(
        Path::new("t.toml"),
        &format!(
            "{CONFIG}[[tunnel]]\nap = \"nat\"\nsession_id = \"00112233445566778899aabbccddeeff\"\n[[tunnel]]\nap = \"nat2\"\nsession_id = \"00112233445566778899aabbccddee02\"\n"
        ),
    )
    .unwrap();
    let mut m = ModelMaps::new(&lower::by_position(&c)).unwrap();
    let mut s = TableState::install(&mut m, c, 0).unwrap();
    let x: SocketAddr = "198.18.1.20:4000".parse().unwrap();
    let y: SocketAddr = "198.18.1.21:4000".parse().unwrap();
    s.bind(&mut m, "nat", x).unwrap();
    let saved = s.saved();
    s.bind(&mut m, "nat", y).unwrap();
    // Nor is a binding of a tunnel that runs unbound believed.
    let mut wrong = s.saved();
    wrong
        .bound
        .insert("nat2".into(), "198.18.1.22:4000".parse().unwrap());
    let (mut s, _) = TableState::adopt(&mut m, s.config.clone(), Some(wrong), 0).unwrap();
    assert_eq!((s.bound("nat"), s.bound("nat2")), (Some(y), None));
    s.bind(&mut m, "nat2", x).unwrap();
    saved.check_against(&mut m, &s.config).unwrap();
    let (s, _) = TableState::adopt(&mut m, s.config.clone(), Some(saved), 0).unwrap();
    assert_eq!((s.bound("nat"), s.bound("nat2")), (Some(y), Some(x)));
}

/// A state file is checked before it is believed: on its own (ids in
/// range, one AP per id) and against the tables that run.
#[test]
fn a_state_file_that_does_not_describe_what_runs_is_refused() {
    let (mut m, s) = start(&[("ap1", 10), ("ap2", 11)]);
    let good = s.saved();
    good.check().unwrap();
    good.check_against(&mut m, &s.config).unwrap();
    let mut swapped = good.clone();
    swapped.ids.insert("ap1".into(), 1);
    swapped.ids.insert("ap2".into(), 0);
    swapped.check().unwrap();
    let e = swapped.check_against(&mut m, &s.config).unwrap_err();
    assert!(
        e.to_string().contains("forward its address under id"),
        "{e}"
    );
    let mut dup = good.clone();
    dup.ids.insert("ap2".into(), 0);
    assert!(
        dup.check()
            .unwrap_err()
            .to_string()
            .contains("given to both")
    );
    let mut far = good;
    far.ids.insert("ap2".into(), abi::MAX_TUNNELS);
    assert!(
        far.check()
            .unwrap_err()
            .to_string()
            .contains("out of range")
    );
}

#[test]
fn the_running_table_reads_back_as_it_was_installed() {
    let text = format!(
        "{CONFIG}[[tunnel]]\nap = \"a\"\naddress = \"198.18.1.10\"\nport = 5000\nstate = \"standby\"\n\
vlan = 201\nformat = \"802.11\"\nradio_mac = \"02:bb:00:00:00:02\"\nmtu = 1400\nstation_limit = 7\n\
next_hop_mac = \"02:0e:00:00:00:09\"\n[[tunnel]]\nap = \"b\"\naddress = \"198.18.1.11\"\n\
[[tunnel]]\nap = \"nat\"\nsession_id = \"00112233445566778899aabbccddeeff\"\n\
[[station]]\nmac = \"02:00:00:00:00:01\"\nap = \"b\"\n"
    );
    let c = Config::parse(Path::new("t.toml"), &text).unwrap();
    let mut m = ModelMaps::new(&lower::by_position(&c)).unwrap();
    let mut s = TableState::install(&mut m, c.clone(), 0).unwrap();
    let peer: SocketAddr = "198.18.1.12:4000".parse().unwrap();
    s.bind(&mut m, "nat", peer).unwrap();
    let nat = s.id_of("nat").unwrap();
    // Names: `a` and `b` from the configuration by address, `nat` (a
    // session tunnel, no address to match) from the old file by id.
    let ids = [("nat".to_string(), nat)].into();
    let old = raise::OldNames::new(&ids, &[]);
    let r = raise::running(&mut m, &c, &old).unwrap();
    assert_eq!(r.unnamed, 0);
    assert_eq!(r.bound.get("nat"), Some(&peer));
    for ap in ["a", "b", "nat"] {
        assert_eq!(r.ids.get(ap).copied(), s.id_of(ap), "{ap}");
    }
    let back = c
        .with_entries(Path::new("maps"), r.tunnels, r.stations)
        .unwrap();
    let plain = |c: &Config| {
        let mut v: Vec<TunnelConfig> = c
            .tunnels
            .iter()
            .map(|t| TunnelConfig {
                line: 0,
                vlan_line: 0,
                ..t.clone()
            })
            .collect();
        v.sort_by(|x, y| x.ap.cmp(&y.ap));
        v
    };
    assert_eq!(plain(&back), plain(&c), "every field the maps carry");
    assert_eq!(back.station_entries(), c.station_entries());

    // An old name whose old entry had another address is not trusted (the
    // id was given to another AP since): the configuration's name wins.
    let entries = [crate::config::TunnelEntry {
        ap: "zz".into(),
        address: Some("198.18.9.9".into()),
        ..Default::default()
    }];
    let ids = [("zz".to_string(), s.id_of("a").unwrap())].into();
    let old = raise::OldNames::new(&ids, &entries);
    let r = raise::running(&mut m, &c, &old).unwrap();
    assert!(
        r.ids.contains_key("a") && !r.ids.contains_key("zz"),
        "{:?}",
        r.ids
    );
}

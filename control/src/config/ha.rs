//! `[ha]` and `[[group]]`: the HA pair's settings (see `crate::ha`).
//!
//! ```toml
//! [ha]
//! peers = ["198.18.9.2", "198.18.10.2"]  # the peer's addresses, one per path, in the
//!                                        # same path order on both nodes; the first
//!                                        # carries the sync stream, all carry heartbeats
//! port = 5250              # UDP heartbeats and TCP sync, both sides (default 5250)
//! key_file = "/etc/ferry/peer.key"       # 32-64 byte secret, mode 0600 or stricter
//! heartbeat_ms = 50        # 10-1000 (default 50)
//! dead_after = 3           # missed heartbeats, plus a priority skew (default 3)
//! election = "builtin"     # or "external": roles change only by `ferry cluster role`
//! licenses = 256           # AP licences installed here (default 65536: unlimited)
//! license_grace_days = 30  # how long the peer's licences outlive it (default 30)
//! hold_down = 30           # seconds between two preemptions of a group (default 30)
//! cold_start = 3           # seconds a node that never heard its peer waits (default 3)
//! [[group]]
//! name = "group1"
//! priority = 200           # this node's priority, 1-254 (default 100)
//! preempt = true           # take the group back when higher (default true)
//! preempt_delay = 300      # seconds of health first (default 300; 0 for drills)
//! ```
//!
//! With `[ha]`, every `[[tunnel]]` names its `group`; without it, no tunnel
//! may, and ferry is one node as before.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use ferry_ebpf::abi::MAX_GROUPS;

use super::{
    ConfigError,
    schema::{RawConfig, RawGroup},
    source::Source,
    validate::valid_name,
};
use crate::ha::election::{GroupConfig, Timers};

/// Default `ha.port`.
pub const DEFAULT_PORT: u16 = 5250;
/// Default `ha.licenses`: as many as the data plane has tunnel slots.
pub const DEFAULT_LICENSES: u32 = ferry_ebpf::abi::MAX_TUNNELS;

/// How roles are decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ElectionMode {
    /// ferry's own per-group election.
    Builtin,
    /// Only `ferry cluster role` changes roles.
    External,
}

/// A validated `[ha]` section with its groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HaConfig {
    /// The peer's addresses, one per path, in path order.
    pub peers: Vec<IpAddr>,
    /// UDP heartbeat and TCP sync port, on both nodes.
    pub port: u16,
    /// The shared secret's file (read by `ferry run` and `ferry check`).
    pub key_file: PathBuf,
    /// 1-based line of `key_file`, for errors about the key.
    pub key_file_line: usize,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Missed heartbeats before the peer is dead (before the skew).
    pub dead_after: u32,
    /// Who decides roles.
    pub election: ElectionMode,
    /// AP licences installed on this node.
    pub licenses: u32,
    /// Days the peer's licences stay usable after it is lost.
    pub license_grace_days: u32,
    /// Shortest time between two preemptions of one group.
    pub hold_down: Duration,
    /// How long a node that never heard its peer waits before taking
    /// its groups.
    pub cold_start: Duration,
    /// The groups, in file order; a group's data plane index is its
    /// position plus one.
    pub groups: Vec<GroupConfig>,
}

impl HaConfig {
    /// The election's timers.
    pub fn timers(&self) -> Timers {
        Timers {
            heartbeat: self.heartbeat,
            dead_after: self.dead_after,
            cold_start: self.cold_start,
            hold_down: self.hold_down,
        }
    }

    /// The data plane index of group `name` (1-255).
    pub fn group_index(&self, name: &str) -> Option<u16> {
        self.groups
            .iter()
            .position(|g| g.name == name)
            .map(|i| i as u16 + 1)
    }
}

/// `[ha]` and `[[group]]`, or `None` without `[ha]`.
pub(super) fn ha_section(
    src: &Source<'_>,
    raw: &RawConfig,
) -> Result<Option<HaConfig>, ConfigError> {
    let Some(ha) = raw.ha.as_ref() else {
        if let Some(g) = raw.group.first() {
            return Err(src.at(g, "[[group]] needs an [ha] section"));
        }
        return Ok(None);
    };
    let h = ha.get_ref();
    let list = h.peers.get_ref();
    if list.is_empty() || list.len() > 8 {
        return Err(src.at(&h.peers, "ha.peers must list 1-8 addresses of the peer"));
    }
    let mut peers = Vec::new();
    for p in list {
        let a = src.ip(p, "ha.peers address")?;
        if peers.contains(&a) {
            return Err(src.at(p, format!("ha.peers lists {a} twice")));
        }
        peers.push(a);
    }
    let port = match &h.port {
        Some(p) => src.int(p, "ha.port", 1, 65535)?,
        None => DEFAULT_PORT,
    };
    let key_file = h.key_file.get_ref().trim();
    if key_file.is_empty() {
        return Err(src.at(&h.key_file, "ha.key_file must be a path"));
    }
    let heartbeat_ms: u64 = match &h.heartbeat_ms {
        Some(v) => src.int(v, "ha.heartbeat_ms", 10, 1000)?,
        None => 50,
    };
    let dead_after = match &h.dead_after {
        Some(v) => src.int(v, "ha.dead_after", 2, 60)?,
        None => 3,
    };
    let election = match &h.election {
        Some(e) => match e.get_ref().as_str() {
            "builtin" => ElectionMode::Builtin,
            "external" => ElectionMode::External,
            other => {
                return Err(src.at(
                    e,
                    format!("ha.election {other:?} must be \"builtin\" or \"external\""),
                ));
            }
        },
        None => ElectionMode::Builtin,
    };
    let licenses = match &h.licenses {
        Some(v) => src.int(v, "ha.licenses", 0, i64::from(DEFAULT_LICENSES))?,
        None => DEFAULT_LICENSES,
    };
    let license_grace_days = match &h.license_grace_days {
        Some(v) => src.int(v, "ha.license_grace_days", 0, 3650)?,
        None => 30,
    };
    let hold_down = match &h.hold_down {
        Some(v) => Duration::from_secs(src.int(v, "ha.hold_down", 0, 86_400)?),
        None => Duration::from_secs(30),
    };
    let cold_start = match &h.cold_start {
        Some(v) => Duration::from_secs(src.int(v, "ha.cold_start", 0, 600)?),
        None => Duration::from_secs(3),
    };
    if raw.group.is_empty() {
        return Err(src.at(ha, "an [ha] section needs at least one [[group]]"));
    }
    if raw.group.len() >= MAX_GROUPS as usize {
        return Err(src.at(
            &raw.group[MAX_GROUPS as usize - 1],
            format!("at most {} groups", MAX_GROUPS - 1),
        ));
    }
    let mut groups: Vec<GroupConfig> = Vec::new();
    for g in &raw.group {
        let g = group(src, g.get_ref())?;
        if groups.iter().any(|o| o.name == g.name) {
            return Err(src.at(
                &raw.group[groups.len()].get_ref().name,
                format!("group {:?} is defined twice", g.name),
            ));
        }
        groups.push(g);
    }
    Ok(Some(HaConfig {
        peers,
        port,
        key_file: PathBuf::from(key_file),
        key_file_line: src.line_of(&h.key_file),
        heartbeat: Duration::from_millis(heartbeat_ms),
        dead_after,
        election,
        licenses,
        license_grace_days,
        hold_down,
        cold_start,
        groups,
    }))
}

fn group(src: &Source<'_>, g: &RawGroup) -> Result<GroupConfig, ConfigError> {
    let name = g.name.get_ref().trim().to_string();
    if !valid_name(&name) {
        return Err(src.at(
            &g.name,
            format!("group name {name:?} must be 1-32 characters of A-Z a-z 0-9 - _ ."),
        ));
    }
    let priority = match &g.priority {
        Some(p) => src.int(p, "group priority", 1, 254)?,
        None => 100,
    };
    let preempt_delay = match &g.preempt_delay {
        Some(v) => Duration::from_secs(src.int(v, "group preempt_delay", 0, 86_400)?),
        None => Duration::from_secs(300),
    };
    Ok(GroupConfig {
        name,
        priority,
        preempt: g.preempt.as_ref().is_none_or(|p| *p.get_ref()),
        preempt_delay,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigError};

    const BASE: &str = r#"
[node]
name = "ac1"
addresses = ["198.18.0.1"]
[interfaces]
ap_side = "eth0"
client_side = "eth1"
"#;

    const HA: &str = r#"[ha]
peers = ["198.18.9.2", "198.18.10.2"]
key_file = "/etc/ferry/peer.key"
[[group]]
name = "group1"
priority = 200
[[group]]
name = "group2"
preempt = false
preempt_delay = 0
[[tunnel]]
ap = "ap1"
address = "198.18.1.10"
group = "group1"
[[tunnel]]
ap = "ap2"
address = "198.18.1.11"
group = "group2"
"#;

    fn parse(t: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("t.toml"), t)
    }

    fn err(t: &str) -> String {
        parse(t).unwrap_err().to_string()
    }

    #[test]
    fn defaults_and_group_indexes() {
        let c = parse(&format!("{BASE}{HA}")).unwrap();
        let ha = c.ha.as_ref().unwrap();
        assert_eq!(ha.port, 5250);
        assert_eq!(ha.heartbeat.as_millis(), 50);
        assert_eq!(ha.dead_after, 3);
        assert_eq!(ha.election, super::ElectionMode::Builtin);
        assert_eq!(ha.licenses, super::DEFAULT_LICENSES);
        assert_eq!(ha.license_grace_days, 30);
        assert_eq!(ha.key_file_line, 10);
        assert_eq!(ha.groups[0].priority, 200);
        assert!(ha.groups[0].preempt);
        assert_eq!(ha.groups[0].preempt_delay.as_secs(), 300);
        assert_eq!(ha.groups[1].priority, 100);
        assert!(!ha.groups[1].preempt);
        assert_eq!(c.group_index(&c.tunnels[0]), 1);
        assert_eq!(c.group_index(&c.tunnels[1]), 2);
        // The state file's entries keep the group, and read back the same.
        let again = c
            .with_entries(Path::new("state"), c.tunnel_entries(), vec![])
            .unwrap();
        let groups = |c: &Config| {
            c.tunnels
                .iter()
                .map(|t| t.group.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(groups(&again), groups(&c));
        // Without [ha] nothing changes: no group anywhere.
        let one = parse(&format!(
            "{BASE}[[tunnel]]\nap = \"ap1\"\naddress = \"198.18.1.10\"\n"
        ))
        .unwrap();
        assert!(one.ha.is_none());
        assert_eq!(one.group_index(&one.tunnels[0]), 0);
    }

    #[test]
    fn refusals_point_at_the_key() {
        let full = format!("{BASE}{HA}");
        for (from, to, want) in [
            (
                "heartbeat_ms",
                "heartbeat_ms = 5\nx",
                "t.toml:10:16: ha.heartbeat_ms 5 is out of range 10-1000",
            ),
            (
                "group = \"group2\"",
                "group = \"group3\"",
                "t.toml:25:9: tunnel group \"group3\" is not a [[group]]",
            ),
            (
                "group = \"group2\"\n",
                "",
                "t.toml:22:1: tunnel \"ap2\" needs a group: with [ha] every tunnel belongs to one",
            ),
            (
                "priority = 200",
                "priority = 255",
                "t.toml:13:12: group priority 255 is out of range 1-254",
            ),
            (
                "name = \"group2\"",
                "name = \"group1\"",
                "t.toml:15:8: group \"group1\" is defined twice",
            ),
            (
                "\"198.18.10.2\"",
                "\"198.18.9.2\"",
                "t.toml:9:24: ha.peers lists 198.18.9.2 twice",
            ),
        ] {
            let text = if from == "heartbeat_ms" {
                full.replace("key_file", "heartbeat_ms = 5\nkey_file")
            } else {
                full.replacen(from, to, 1)
            };
            assert_eq!(err(&text), want, "{from} -> {to}");
        }
        assert_eq!(
            err(&format!("{BASE}[[group]]\nname = \"g\"\n")),
            "t.toml:8:1: [[group]] needs an [ha] section"
        );
        assert_eq!(
            err(&format!(
                "{BASE}[[tunnel]]\nap = \"a\"\naddress = \"198.18.1.1\"\ngroup = \"g\"\n"
            )),
            "t.toml:11:9: tunnel group needs an [ha] section"
        );
        assert!(
            err(&full.replace("election", "x").replace(
                "key_file = \"/etc/ferry/peer.key\"",
                "key_file = \"k\"\nelection = \"vrrp\""
            ))
            .contains("ha.election \"vrrp\" must be \"builtin\" or \"external\"")
        );
    }
}

//! Everything a configuration or table value must satisfy, checked once,
//! here, for files, swap tables, `ferry tunnel add` entries and the state
//! file's table alike. The first problem is returned, at its key.

use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use ferry_ebpf::{abi, capwap};
use toml::Spanned;

use super::{
    Config, ConfigError, DEFAULT_DSCP, DEFAULT_METRICS, DEFAULT_MTU, DEFAULT_VLAN, StationConfig,
    StationEntry, TunnelConfig, TunnelDefaults, TunnelEntry,
    entries::{Entries, Entry, parse_split},
    schema::{RawConfig, RawDownstream, RawForwarding, RawStation, RawTable, RawTunnel},
    source::Source,
};

const VID_MAX: i64 = ferry_ebpf::vlan::VID_MAX as i64;

/// Tunnels, client VLANs and stations: the part of a configuration a swap
/// table replaces.
type TablePart = (Vec<TunnelConfig>, Vec<u16>, Vec<StationConfig>);

impl Config {
    /// Validates configuration text; `file` is used in error messages.
    pub fn parse(file: &Path, text: &str) -> Result<Self, ConfigError> {
        let src = Source::new(file, text);
        let (raw, tunnel_entries, station_entries) = parse_split(&src, |r: &mut RawConfig| {
            (
                std::mem::take(&mut r.tunnel),
                std::mem::take(&mut r.station),
            )
        })?;
        let (name, addresses, data_port) = node_section(&src, &raw)?;
        let ifs = raw.interfaces.get_ref();
        for (v, what) in [
            (&ifs.ap_side, "interfaces.ap_side"),
            (&ifs.client_side, "interfaces.client_side"),
        ] {
            if !valid_ifname(v.get_ref()) {
                return Err(src.at(v, format!("{what} {:?} is not a valid interface name (1-15 characters, no '/', ':' or spaces)", v.get_ref())));
            }
        }
        let fwd = raw.forwarding.as_ref().map(|f| f.get_ref());
        let down = raw.downstream.as_ref().map(|d| d.get_ref());
        let ha = super::ha::ha_section(&src, &raw)?;
        let (mut defaults, station_capacity) = forwarding_section(&src, fwd, down)?;
        defaults.groups = ha
            .as_ref()
            .map(|h| h.groups.iter().map(|g| g.name.clone()).collect());
        let (dscp, df, source_mac) = downstream_section(&src, down)?;
        let client_vlans_given = fwd.and_then(|f| f.client_vlans.as_ref());
        let (tunnels, client_vlans, stations) = parse_table(
            &src,
            tunnel_entries,
            station_entries,
            &defaults,
            &addresses,
            client_vlans_given,
            station_capacity,
        )?;
        let Services {
            admin_socket,
            metrics,
            dead_interval,
            unknown_rate,
            rebind_interval,
            max_removal_percent,
        } = service_sections(&src, &raw, &name)?;
        Ok(Config {
            name,
            addresses,
            data_port,
            ap_side: ifs.ap_side.get_ref().clone(),
            client_side: ifs.client_side.get_ref().clone(),
            default_vlan: defaults.vlan,
            tunnels,
            client_vlans,
            station_capacity,
            dscp,
            df,
            source_mac,
            stations,
            admin_socket,
            metrics,
            dead_interval,
            unknown_rate,
            rebind_interval,
            max_removal_percent,
            ha,
            defaults,
            client_vlans_given: client_vlans_given.is_some(),
        })
    }

    /// Validates a swap table file (`[[tunnel]]` and `[[station]]` entries,
    /// the same schema as in the configuration) against this configuration's
    /// defaults and addresses; the result is this configuration with the
    /// new tunnels and stations. Nothing is applied here.
    pub fn with_table(&self, file: &Path, text: &str) -> Result<Self, ConfigError> {
        let src = Source::new(file, text);
        let (_, tunnel_entries, station_entries) = parse_split(&src, |r: &mut RawTable| {
            (
                std::mem::take(&mut r.tunnel),
                std::mem::take(&mut r.station),
            )
        })?;
        self.with_parsed(&src, tunnel_entries, station_entries)
    }

    /// [`Config::with_table`] for a table given as plain entries (the state
    /// file's running table): the same checks, errors naming `file`.
    pub fn with_entries(
        &self,
        file: &Path,
        tunnels: Vec<TunnelEntry>,
        stations: Vec<StationEntry>,
    ) -> Result<Self, ConfigError> {
        let src = Source::new(file, "");
        let t = tunnels.into_iter().map(|e| unplaced(RawTunnel::from(e)));
        let s = stations.into_iter().map(|e| unplaced(RawStation::from(e)));
        self.with_parsed(
            &src,
            Entries::Parsed(t.collect()),
            Entries::Parsed(s.collect()),
        )
    }

    fn with_parsed(
        &self,
        src: &Source<'_>,
        tunnel_entries: Entries<'_, RawTunnel>,
        station_entries: Entries<'_, RawStation>,
    ) -> Result<Self, ConfigError> {
        // Explicit client VLANs stay as configured; derived ones follow the
        // new tunnels.
        let given: Vec<Spanned<i64>> = self
            .client_vlans
            .iter()
            .map(|v| Spanned::new(0..0, i64::from(*v)))
            .collect();
        let given = Spanned::new(0..0, given);
        let (tunnels, client_vlans, stations) = parse_table(
            src,
            tunnel_entries,
            station_entries,
            &self.defaults,
            &self.addresses,
            self.client_vlans_given.then_some(&given),
            self.station_capacity,
        )?;
        Ok(Self {
            tunnels,
            client_vlans,
            stations,
            ..self.clone()
        })
    }

    /// Parses one `[[tunnel]]` entry given as TOML text (for `ferry tunnel
    /// add`), with this configuration's defaults.
    pub fn parse_tunnel(&self, text: &str) -> Result<TunnelConfig, ConfigError> {
        let file = Path::new("<tunnel>");
        let t = self.with_table(file, text)?;
        match t.tunnels.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(ConfigError::whole(file, "exactly one [[tunnel]] expected")),
        }
    }
}

/// An entry that has no place in a file.
fn unplaced<T>(raw: T) -> Entry<T> {
    Entry {
        base: 0,
        header: 0,
        raw,
    }
}

/// `[node]`: name, addresses, data port.
fn node_section(
    src: &Source<'_>,
    raw: &RawConfig,
) -> Result<(String, Vec<IpAddr>, u16), ConfigError> {
    let node = raw.node.get_ref();
    let name = node.name.get_ref().clone();
    if !valid_name(&name) {
        return Err(src.at(
            &node.name,
            format!("node name {name:?} must be 1-32 characters of A-Z a-z 0-9 - _ ."),
        ));
    }
    let addrs = node.addresses.get_ref();
    if addrs.is_empty() {
        return Err(src.at(
            &node.addresses,
            "node.addresses must list at least one address",
        ));
    }
    if addrs.len() > abi::MAX_LOCAL_ADDRS as usize {
        return Err(src.at(
            &node.addresses,
            format!(
                "node.addresses lists {} addresses, at most {} are supported",
                addrs.len(),
                abi::MAX_LOCAL_ADDRS
            ),
        ));
    }
    let mut addresses = Vec::with_capacity(addrs.len());
    for a in addrs {
        let ip = src.ip(a, "node address")?;
        if addresses.contains(&ip) {
            return Err(src.at(a, format!("node address {ip} is listed twice")));
        }
        addresses.push(ip);
    }
    let data_port = match &node.data_port {
        Some(p) => src.int(p, "node.data_port", 1, 65535)?,
        None => capwap::DATA_PORT,
    };
    Ok((name, addresses, data_port))
}

/// `[forwarding]` and the tunnel defaults from `[downstream]`.
fn forwarding_section(
    src: &Source<'_>,
    fwd: Option<&RawForwarding>,
    down: Option<&RawDownstream>,
) -> Result<(TunnelDefaults, u32), ConfigError> {
    let vlan = match fwd.and_then(|f| f.default_vlan.as_ref()) {
        Some(v) => src.int(v, "forwarding.default_vlan", 1, VID_MAX)?,
        None => DEFAULT_VLAN,
    };
    let station_limit = match fwd.and_then(|f| f.station_limit.as_ref()) {
        Some(v) => src.int(v, "forwarding.station_limit", 0, i64::from(u32::MAX))?,
        None => abi::DEFAULT_STATION_LIMIT,
    };
    let station_capacity = match fwd.and_then(|f| f.station_capacity.as_ref()) {
        Some(v) => src.int(v, "forwarding.station_capacity", 16, 16_777_216)?,
        None => abi::DEFAULT_STATION_CAPACITY,
    };
    let mtu = match down.and_then(|d| d.mtu.as_ref()) {
        Some(v) => src.int(v, "downstream.mtu", 576, 9000)?,
        None => DEFAULT_MTU,
    };
    let next_hop = match down.and_then(|d| d.next_hop_mac.as_ref()) {
        Some(v) => Some(src.mac(v, "downstream.next_hop_mac")?),
        None => None,
    };
    let has_source_mac = down.is_some_and(|d| d.source_mac.is_some());
    let defaults = TunnelDefaults {
        vlan,
        station_limit,
        mtu,
        next_hop,
        has_source_mac,
        groups: None,
    };
    Ok((defaults, station_capacity))
}

/// `[downstream]`: DSCP map, DF, our AP-side MAC.
#[allow(clippy::type_complexity)]
fn downstream_section(
    src: &Source<'_>,
    down: Option<&RawDownstream>,
) -> Result<([u8; 8], bool, Option<[u8; 6]>), ConfigError> {
    let mut dscp = DEFAULT_DSCP;
    if let Some(list) = down.and_then(|d| d.dscp.as_ref()) {
        if list.get_ref().len() != 8 {
            return Err(src.at(
                list,
                "downstream.dscp must list 8 values, one per 802.1p priority",
            ));
        }
        for (i, v) in list.get_ref().iter().enumerate() {
            dscp[i] = src.int(v, "downstream.dscp value", 0, 63)?;
        }
    }
    let df = down.and_then(|d| d.df).unwrap_or(true);
    let source_mac = match down.and_then(|d| d.source_mac.as_ref()) {
        Some(v) => Some(src.mac(v, "downstream.source_mac")?),
        None => None,
    };
    Ok((dscp, df, source_mac))
}

/// What `[admin]`, `[metrics]` and `[keepalive]` say.
struct Services {
    admin_socket: PathBuf,
    metrics: Option<std::net::SocketAddr>,
    dead_interval: Duration,
    unknown_rate: u32,
    rebind_interval: Duration,
    max_removal_percent: u8,
}

/// `[admin]`, `[metrics]` and `[keepalive]`.
fn service_sections(
    src: &Source<'_>,
    raw: &RawConfig,
    name: &str,
) -> Result<Services, ConfigError> {
    let admin_socket = match raw.admin.as_ref().and_then(|a| a.get_ref().socket.as_ref()) {
        Some(p) if p.get_ref().trim().is_empty() => {
            return Err(src.at(p, "admin.socket must be a path"));
        }
        Some(p) => PathBuf::from(p.get_ref().trim()),
        None => PathBuf::from(format!("/run/ferry/{name}.sock")),
    };
    let metrics = match raw
        .metrics
        .as_ref()
        .and_then(|m| m.get_ref().listen.as_ref())
    {
        Some(l) if l.get_ref().trim().is_empty() => None,
        Some(l) => Some(l.get_ref().trim().parse().map_err(|_| {
            src.at(
                l,
                format!(
                    "metrics.listen {:?} is not an address:port (like {DEFAULT_METRICS})",
                    l.get_ref()
                ),
            )
        })?),
        None => DEFAULT_METRICS.parse().ok(),
    };
    let ka = raw.keepalive.as_ref().map(|k| k.get_ref());
    let dead_interval = match ka.and_then(|k| k.dead_interval.as_ref()) {
        Some(v) => Duration::from_secs(src.int(v, "keepalive.dead_interval", 1, 86_400)?),
        None => crate::keepalive::DEFAULT_DEAD_INTERVAL,
    };
    let unknown_rate = match ka.and_then(|k| k.unknown_rate.as_ref()) {
        Some(v) => src.int(v, "keepalive.unknown_rate", 0, 100_000)?,
        None => 10,
    };
    let rebind_interval = match ka.and_then(|k| k.rebind_interval.as_ref()) {
        Some(v) => Duration::from_secs(src.int(v, "keepalive.rebind_interval", 0, 3600)?),
        None => crate::keepalive::DEFAULT_REBIND_INTERVAL,
    };
    let max_removal_percent = match raw
        .admin
        .as_ref()
        .and_then(|a| a.get_ref().max_removal_percent.as_ref())
    {
        Some(v) => src.int(v, "admin.max_removal_percent", 0, 100)?,
        None => DEFAULT_MAX_REMOVAL_PERCENT,
    };
    Ok(Services {
        admin_socket,
        metrics,
        dead_interval,
        unknown_rate,
        rebind_interval,
        max_removal_percent,
    })
}

/// Default of `admin.max_removal_percent`.
pub const DEFAULT_MAX_REMOVAL_PERCENT: u8 = 50;

pub(super) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s != "."
        && s != ".."
}

fn valid_ifname(s: &str) -> bool {
    // IFNAMSIZ is 16 including the NUL.
    !s.is_empty()
        && s.len() <= 15
        && !s.contains(['/', ' ', '\t', '\n', ':'])
        && s != "."
        && s != ".."
}

/// Parses the [`TablePart`] of a file.
fn parse_table(
    src: &Source<'_>,
    raw_tunnels: Entries<'_, RawTunnel>,
    raw_stations: Entries<'_, RawStation>,
    defaults: &TunnelDefaults,
    addresses: &[IpAddr],
    client_vlans: Option<&Spanned<Vec<Spanned<i64>>>>,
    station_capacity: u32,
) -> Result<TablePart, ConfigError> {
    let tunnels = super::tunnel::parse_tunnels(src, raw_tunnels, defaults, addresses)?;
    let client_vlans = match client_vlans {
        Some(list) => {
            let mut v = Vec::new();
            for x in list.get_ref() {
                let id: u16 = src.int(x, "forwarding.client_vlans value", 1, VID_MAX)?;
                if !v.contains(&id) {
                    v.push(id);
                }
            }
            for t in &tunnels {
                if !v.contains(&t.vlan) {
                    return Err(src.at_line(
                        t.vlan_line,
                        format!(
                            "tunnel {:?} uses VLAN {}, which is not in forwarding.client_vlans",
                            t.ap, t.vlan
                        ),
                    ));
                }
            }
            v
        }
        None => {
            let mut v = vec![defaults.vlan];
            for t in &tunnels {
                if !v.contains(&t.vlan) {
                    v.push(t.vlan);
                }
            }
            v
        }
    };
    let stations = parse_stations(src, raw_stations, &tunnels)?;
    if stations.len() as u64 > u64::from(station_capacity) {
        return Err(src.err(
            None,
            "more static stations than forwarding.station_capacity",
        ));
    }
    Ok((tunnels, client_vlans, stations))
}

fn parse_stations(
    src: &Source<'_>,
    raw: Entries<'_, RawStation>,
    tunnels: &[TunnelConfig],
) -> Result<Vec<StationConfig>, ConfigError> {
    let mut seen: HashMap<([u8; 6], u16), usize> = HashMap::new();
    let by_name: HashMap<&str, usize> = tunnels
        .iter()
        .enumerate()
        .map(|(i, t)| (t.ap.as_str(), i))
        .collect();
    let mut out = Vec::with_capacity(raw.len());
    let top = src;
    for st in raw.into_iter(src) {
        let st = st?;
        let src = &top.rebased(st.base);
        let s = &st.raw;
        let mac = src.mac(&s.mac, "station mac")?;
        let ap = s.ap.get_ref().trim();
        let tunnel = *by_name
            .get(ap)
            .ok_or_else(|| src.at(&s.ap, format!("station ap {ap:?} is not a [[tunnel]]")))?;
        let vlan = tunnels[tunnel].vlan;
        if let Some(v) = &s.vlan {
            let vid: u16 = src.int(v, "station vlan", 1, VID_MAX)?;
            if vid != vlan {
                return Err(src.at(
                    v,
                    format!("station vlan {vid} differs from tunnel {ap:?}'s VLAN {vlan}"),
                ));
            }
        }
        let radio = match &s.radio {
            Some(v) => src.int(v, "station radio", 0, 31)?,
            None => 0,
        };
        let bssid = match &s.bssid {
            Some(b) => Some(src.mac(b, "station bssid")?),
            None => None,
        };
        let line = src.line(st.header);
        if let Some(prev) = seen.insert((mac, vlan), line) {
            return Err(src.at(
                &s.mac,
                format!(
                    "station {} is already defined at line {prev}",
                    s.mac.get_ref()
                ),
            ));
        }
        out.push(StationConfig {
            mac,
            tunnel,
            radio,
            bssid,
        });
    }
    Ok(out)
}

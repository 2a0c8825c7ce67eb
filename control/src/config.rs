//! ferry's TOML configuration.
//!
//! ```toml
//! [node]
//! name = "ac1"
//! addresses = ["198.18.0.1"]   # this node's CAPWAP data addresses (IPv4 and/or IPv6)
//! data_port = 5247             # optional, default 5247
//! [interfaces]
//! ap_side = "eth0"
//! client_side = "eth0"         # may equal ap_side (one trunk port)
//! [forwarding]                 # optional
//! default_vlan = 200           # optional, default 200
//! [[tunnel]]
//! ap = "ap1"
//! address = "198.18.1.10"
//! port = 5247                  # optional: without it, any port from that address
//! role = "master"              # optional, default "master"; "backup" = installed in standby
//! vlan = 200                   # optional, else default_vlan
//! ```
//!
//! A file is validated as a whole before anything is applied: the first
//! problem is reported as `FILE:LINE:COLUMN: reason` and nothing changes.
//! Unknown keys are errors (a typo must not silently fall back to a default).

use std::{
    collections::{HashMap, HashSet},
    fmt,
    net::IpAddr,
    ops::Range,
    path::{Path, PathBuf},
};

use ferry_dataplane::tables::{Tables, Tunnel, addr_key};
use ferry_ebpf::{
    abi::{self, EGRESS_REDIRECT, EGRESS_TX, Settings, TUNNEL_STANDBY, TunnelInfo, TunnelKey},
    capwap,
};
use serde::Deserialize;
use toml::Spanned;

/// Default client VLAN.
pub const DEFAULT_VLAN: u16 = 200;

/// A configuration error with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or `<input>`).
    pub file: PathBuf,
    /// 1-based line, if known.
    pub line: Option<usize>,
    /// 1-based column, if known.
    pub column: Option<usize>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Role of a tunnel on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// This node is the AP's master AC: forward its data.
    Master,
    /// This node is the AP's backup AC: tunnel installed in standby.
    Backup,
}

impl Role {
    /// Config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Backup => "backup",
        }
    }
}

/// One `[[tunnel]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelConfig {
    /// AP name (unique).
    pub ap: String,
    /// AP address.
    pub address: IpAddr,
    /// AP source port; `None` = any port.
    pub port: Option<u16>,
    /// Role.
    pub role: Role,
    /// Client VLAN.
    pub vlan: u16,
    /// 1-based line of the `[[tunnel]]` entry.
    pub line: usize,
}

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Node name (used in pin paths, logs and metrics).
    pub name: String,
    /// Local CAPWAP data addresses.
    pub addresses: Vec<IpAddr>,
    /// CAPWAP data port.
    pub data_port: u16,
    /// Interface facing the APs.
    pub ap_side: String,
    /// Interface facing the client VLAN trunk.
    pub client_side: String,
    /// VLAN for tunnels that name none.
    pub default_vlan: u16,
    /// Tunnels, in file order.
    pub tunnels: Vec<TunnelConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node: Spanned<RawNode>,
    interfaces: Spanned<RawInterfaces>,
    forwarding: Option<Spanned<RawForwarding>>,
    #[serde(default)]
    tunnel: Vec<Spanned<RawTunnel>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: Spanned<String>,
    addresses: Spanned<Vec<Spanned<String>>>,
    data_port: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterfaces {
    ap_side: Spanned<String>,
    client_side: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForwarding {
    default_vlan: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTunnel {
    ap: Spanned<String>,
    address: Spanned<String>,
    port: Option<Spanned<i64>>,
    role: Option<Spanned<String>>,
    vlan: Option<Spanned<i64>>,
}

/// Turns byte spans into line/column for errors.
struct Source<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn err(&self, span: Option<Range<usize>>, reason: impl Into<String>) -> ConfigError {
        let (line, column) = match span {
            Some(s) => {
                let (l, c) = self.position(s.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            reason: reason.into(),
        }
    }

    fn at<T>(&self, v: &Spanned<T>, reason: impl Into<String>) -> ConfigError {
        self.err(Some(v.span()), reason)
    }

    fn position(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before
            .rfind('\n')
            .map_or(before.len(), |i| before.len() - i - 1)
            + 1;
        (line, column)
    }

    fn line(&self, offset: usize) -> usize {
        self.position(offset).0
    }

    fn int<T: TryFrom<i64>>(
        &self,
        v: &Spanned<i64>,
        what: &str,
        lo: i64,
        hi: i64,
    ) -> Result<T, ConfigError> {
        let n = *v.get_ref();
        if n < lo || n > hi {
            return Err(self.at(v, format!("{what} {n} is out of range {lo}-{hi}")));
        }
        T::try_from(n).map_err(|_| self.at(v, format!("{what} {n} is out of range")))
    }

    fn ip(&self, v: &Spanned<String>, what: &str) -> Result<IpAddr, ConfigError> {
        let a: IpAddr = v.get_ref().trim().parse().map_err(|_| {
            self.at(
                v,
                format!("{what} {:?} is not an IPv4 or IPv6 address", v.get_ref()),
            )
        })?;
        if a.is_unspecified() || a.is_multicast() {
            return Err(self.at(v, format!("{what} {a} must be a unicast address")));
        }
        if let IpAddr::V4(v4) = a
            && v4.is_broadcast()
        {
            return Err(self.at(v, format!("{what} {a} must be a unicast address")));
        }
        Ok(a)
    }
}

fn valid_name(s: &str) -> bool {
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

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            reason: format!("cannot read: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Validates configuration text; `file` is used in error messages.
    pub fn parse(file: &Path, text: &str) -> Result<Self, ConfigError> {
        let src = Source { file, text };
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| src.err(e.span(), e.message().trim_end().to_string()))?;
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

        let ifs = raw.interfaces.get_ref();
        for (v, what) in [
            (&ifs.ap_side, "interfaces.ap_side"),
            (&ifs.client_side, "interfaces.client_side"),
        ] {
            if !valid_ifname(v.get_ref()) {
                return Err(src.at(v, format!("{what} {:?} is not a valid interface name (1-15 characters, no '/', ':' or spaces)", v.get_ref())));
            }
        }

        let default_vlan = match raw
            .forwarding
            .as_ref()
            .and_then(|f| f.get_ref().default_vlan.as_ref())
        {
            Some(v) => src.int(
                v,
                "forwarding.default_vlan",
                1,
                i64::from(ferry_ebpf::vlan::VID_MAX),
            )?,
            None => DEFAULT_VLAN,
        };

        let tunnels = parse_tunnels(&src, &raw.tunnel, default_vlan)?;

        Ok(Config {
            name,
            addresses,
            data_port,
            ap_side: ifs.ap_side.get_ref().clone(),
            client_side: ifs.client_side.get_ref().clone(),
            default_vlan,
            tunnels,
        })
    }

    /// Whether frames go back out of the AP-side interface (XDP_TX).
    pub fn one_arm(&self) -> bool {
        self.ap_side == self.client_side
    }

    /// The data plane tables this configuration describes. Tunnel ids are
    /// the entries' positions in the file.
    pub fn tables(&self) -> Tables {
        Tables {
            local_addrs: self.addresses.clone(),
            settings: Settings {
                data_port: self.data_port,
                egress: if self.one_arm() {
                    EGRESS_TX
                } else {
                    EGRESS_REDIRECT
                },
                ..Default::default()
            },
            tunnels: self
                .tunnels
                .iter()
                .enumerate()
                .map(|(i, t)| Tunnel {
                    key: TunnelKey::new(addr_key(t.address), t.port.unwrap_or(0)),
                    info: TunnelInfo {
                        id: i as u32,
                        vlan: t.vlan,
                        flags: if t.role == Role::Backup {
                            TUNNEL_STANDBY
                        } else {
                            0
                        },
                    },
                })
                .collect(),
        }
    }
}

fn parse_tunnels(
    src: &Source<'_>,
    raw: &[Spanned<RawTunnel>],
    default_vlan: u16,
) -> Result<Vec<TunnelConfig>, ConfigError> {
    if raw.len() > abi::MAX_TUNNELS as usize {
        return Err(src.at(
            &raw[abi::MAX_TUNNELS as usize],
            format!("more than {} tunnels", abi::MAX_TUNNELS),
        ));
    }
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut keys: HashSet<(IpAddr, Option<u16>)> = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for st in raw {
        let t = st.get_ref();
        let line = src.line(st.span().start);
        let ap = t.ap.get_ref().trim().to_string();
        if ap.is_empty() || ap.len() > 64 || ap.chars().any(|c| c.is_control()) {
            return Err(src.at(&t.ap, "tunnel ap name must be 1-64 printable characters"));
        }
        if let Some(prev) = names.insert(ap.clone(), line) {
            return Err(src.at(
                &t.ap,
                format!("tunnel ap {ap:?} is already defined at line {prev}"),
            ));
        }
        let address = src.ip(&t.address, "tunnel address")?;
        let port = match &t.port {
            Some(p) => Some(src.int(p, "tunnel port", 1, 65535)?),
            None => None,
        };
        if !keys.insert((address, port)) {
            let which = port.map_or("any port".to_string(), |p| format!("port {p}"));
            return Err(src.at(
                &t.address,
                format!("another tunnel already uses {address} {which}"),
            ));
        }
        let role = match &t.role {
            None => Role::Master,
            Some(r) => match r.get_ref().as_str() {
                "master" => Role::Master,
                "backup" => Role::Backup,
                other => {
                    return Err(src.at(
                        r,
                        format!("tunnel role {other:?} must be \"master\" or \"backup\""),
                    ));
                }
            },
        };
        let vlan = match &t.vlan {
            Some(v) => src.int(v, "tunnel vlan", 1, i64::from(ferry_ebpf::vlan::VID_MAX))?,
            None => default_vlan,
        };
        out.push(TunnelConfig {
            ap,
            address,
            port,
            role,
            vlan,
            line,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[node]
name = "ac1"
addresses = ["198.18.0.1", "2001:2::1"]
[interfaces]
ap_side = "eth0"
client_side = "eth1"
[forwarding]
default_vlan = 200
[[tunnel]]
ap = "ap1"
address = "198.18.1.10"
[[tunnel]]
ap = "ap2"
address = "198.18.1.11"
port = 12222
role = "backup"
vlan = 201
"#;

    fn parse(t: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("test.toml"), t)
    }

    #[test]
    fn good_config() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.name, "ac1");
        assert_eq!(c.data_port, 5247);
        assert_eq!(c.tunnels.len(), 2);
        assert_eq!(c.tunnels[0].vlan, 200);
        assert_eq!(c.tunnels[0].port, None);
        assert_eq!(c.tunnels[0].line, 10);
        assert_eq!(c.tunnels[1].role, Role::Backup);
        let t = c.tables();
        assert_eq!(t.settings.egress, EGRESS_REDIRECT);
        assert_eq!(t.tunnels[1].info.flags, TUNNEL_STANDBY);
        assert_eq!(t.tunnels[1].key.port, 12222);
    }

    fn err(t: &str) -> String {
        parse(t).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_file_line_and_reason() {
        let e = err(&GOOD.replace("port = 12222", "port = 70000"));
        assert_eq!(
            e,
            "test.toml:16:8: tunnel port 70000 is out of range 1-65535"
        );
        let e = err(&GOOD.replace("\"198.18.1.11\"", "\"198.18.1.300\""));
        assert!(
            e.starts_with("test.toml:15:11: tunnel address \"198.18.1.300\" is not"),
            "{e}"
        );
        let e = err(&GOOD.replace("role = \"backup\"", "role = \"standby\""));
        assert!(
            e.starts_with("test.toml:17:8: tunnel role \"standby\""),
            "{e}"
        );
        let e = err(&GOOD.replace("ap = \"ap2\"", "ap = \"ap1\""));
        assert!(
            e.contains(":14:") && e.contains("already defined at line 10"),
            "{e}"
        );
        let e = err(&GOOD.replace("default_vlan = 200", "default_vlan = 4095"));
        assert!(
            e.starts_with("test.toml:9:16: forwarding.default_vlan 4095"),
            "{e}"
        );
        let e = err(&GOOD.replace("client_side", "client_sid"));
        assert!(
            e.starts_with("test.toml:7:1: unknown field `client_sid`"),
            "{e}"
        );
        let e = err(&GOOD
            .replace("\"198.18.1.11\"", "\"198.18.1.10\"")
            .replace("port = 12222\n", ""));
        assert!(
            e.contains("another tunnel already uses 198.18.1.10 any port"),
            "{e}"
        );
        let e = err(&GOOD.replace("name = \"ac1\"", "name = \"../x\""));
        assert!(e.starts_with("test.toml:3:8: node name"), "{e}");
        let e = err(&GOOD.replace(
            "addresses = [\"198.18.0.1\", \"2001:2::1\"]",
            "addresses = []",
        ));
        assert!(e.contains("at least one address"), "{e}");
        let e = err(&GOOD.replace("ap_side = \"eth0\"", "ap_side = \"a-very-long-interface\""));
        assert!(e.starts_with("test.toml:6:11: interfaces.ap_side"), "{e}");
        let e = err("[node\nname=1");
        assert!(e.starts_with("test.toml:1:"), "{e}");
        let e = err(&GOOD.replace(
            "[interfaces]\nap_side = \"eth0\"\nclient_side = \"eth1\"\n",
            "",
        ));
        assert!(e.contains("missing field `interfaces`"), "{e}");
    }

    #[test]
    fn duplicate_address_and_multicast_refused() {
        let e = err(&GOOD.replace("\"2001:2::1\"", "\"198.18.0.1\""));
        assert!(e.contains("listed twice"), "{e}");
        let e = err(&GOOD.replace("\"198.18.1.10\"", "\"224.0.0.1\""));
        assert!(e.contains("must be a unicast address"), "{e}");
    }

    #[test]
    fn one_arm_uses_tx() {
        let c = parse(&GOOD.replace("eth1", "eth0")).unwrap();
        assert_eq!(c.tables().settings.egress, EGRESS_TX);
    }
}

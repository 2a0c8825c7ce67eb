//! The file schema as the TOML parser reads it: every value with its span,
//! so validation can point at the offending key. Unknown keys are errors (a
//! typo must not silently fall back to a default).
//!
//! [`TunnelEntry`] and [`StationEntry`] are the same entries without spans:
//! the state file keeps the running table in that form (structured data),
//! and it is validated on load by the very code that validates a file.

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::fast::{FastEntry, Scalar, take_bool, take_int, take_str};

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub(crate) node: Spanned<RawNode>,
    pub(crate) interfaces: Spanned<RawInterfaces>,
    pub(crate) forwarding: Option<Spanned<RawForwarding>>,
    pub(crate) downstream: Option<Spanned<RawDownstream>>,
    #[serde(default)]
    pub(crate) tunnel: Vec<Spanned<RawTunnel>>,
    #[serde(default)]
    pub(crate) station: Vec<Spanned<RawStation>>,
    pub(crate) admin: Option<Spanned<RawAdmin>>,
    pub(crate) metrics: Option<Spanned<RawMetrics>>,
    pub(crate) keepalive: Option<Spanned<RawKeepalive>>,
    pub(crate) ha: Option<Spanned<RawHa>>,
    #[serde(default)]
    pub(crate) group: Vec<Spanned<RawGroup>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHa {
    pub(crate) peers: Spanned<Vec<Spanned<String>>>,
    pub(crate) port: Option<Spanned<i64>>,
    pub(crate) key_file: Spanned<String>,
    pub(crate) heartbeat_ms: Option<Spanned<i64>>,
    pub(crate) dead_after: Option<Spanned<i64>>,
    pub(crate) election: Option<Spanned<String>>,
    pub(crate) licenses: Option<Spanned<i64>>,
    pub(crate) license_grace_days: Option<Spanned<i64>>,
    pub(crate) hold_down: Option<Spanned<i64>>,
    pub(crate) cold_start: Option<Spanned<i64>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGroup {
    pub(crate) name: Spanned<String>,
    pub(crate) priority: Option<Spanned<i64>>,
    pub(crate) preempt: Option<Spanned<bool>>,
    pub(crate) preempt_delay: Option<Spanned<i64>>,
}

/// A swap table file: tunnels and static stations only.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTable {
    #[serde(default)]
    pub(crate) tunnel: Vec<Spanned<RawTunnel>>,
    #[serde(default)]
    pub(crate) station: Vec<Spanned<RawStation>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub(crate) socket: Option<Spanned<String>>,
    pub(crate) max_removal_percent: Option<Spanned<i64>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetrics {
    pub(crate) listen: Option<Spanned<String>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKeepalive {
    pub(crate) dead_interval: Option<Spanned<i64>>,
    pub(crate) unknown_rate: Option<Spanned<i64>>,
    pub(crate) rebind_interval: Option<Spanned<i64>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDownstream {
    pub(crate) dscp: Option<Spanned<Vec<Spanned<i64>>>>,
    pub(crate) df: Option<bool>,
    pub(crate) mtu: Option<Spanned<i64>>,
    pub(crate) next_hop_mac: Option<Spanned<String>>,
    pub(crate) source_mac: Option<Spanned<String>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStation {
    pub(crate) mac: Spanned<String>,
    pub(crate) ap: Spanned<String>,
    pub(crate) radio: Option<Spanned<i64>>,
    pub(crate) bssid: Option<Spanned<String>>,
    pub(crate) vlan: Option<Spanned<i64>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNode {
    pub(crate) name: Spanned<String>,
    pub(crate) addresses: Spanned<Vec<Spanned<String>>>,
    pub(crate) data_port: Option<Spanned<i64>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInterfaces {
    pub(crate) ap_side: Spanned<String>,
    pub(crate) client_side: Spanned<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawForwarding {
    pub(crate) default_vlan: Option<Spanned<i64>>,
    pub(crate) client_vlans: Option<Spanned<Vec<Spanned<i64>>>>,
    pub(crate) station_limit: Option<Spanned<i64>>,
    pub(crate) station_capacity: Option<Spanned<i64>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTunnel {
    pub(crate) ap: Spanned<String>,
    pub(crate) address: Option<Spanned<String>>,
    pub(crate) session_id: Option<Spanned<String>>,
    pub(crate) port: Option<Spanned<i64>>,
    pub(crate) state: Option<Spanned<String>>,
    /// The older spelling of `state`: "master" (active) or "backup"
    /// (standby); still read, never written.
    pub(crate) role: Option<Spanned<String>>,
    pub(crate) vlan: Option<Spanned<i64>>,
    pub(crate) format: Option<Spanned<String>>,
    pub(crate) radio_mac: Option<Spanned<String>>,
    pub(crate) mtu: Option<Spanned<i64>>,
    pub(crate) udp_lite: Option<Spanned<bool>>,
    pub(crate) next_hop_mac: Option<Spanned<String>>,
    pub(crate) station_limit: Option<Spanned<i64>>,
    pub(crate) group: Option<Spanned<String>>,
}

impl FastEntry for RawTunnel {
    const KIND: &'static str = "[[tunnel]]";

    fn from_scalars(mut f: Vec<(&str, Scalar)>) -> Option<Self> {
        let r = (|| -> Result<Self, ()> {
            let t = Self {
                ap: take_str(&mut f, "ap")?.ok_or(())?,
                address: take_str(&mut f, "address")?,
                session_id: take_str(&mut f, "session_id")?,
                port: take_int(&mut f, "port")?,
                state: take_str(&mut f, "state")?,
                role: take_str(&mut f, "role")?,
                vlan: take_int(&mut f, "vlan")?,
                format: take_str(&mut f, "format")?,
                radio_mac: take_str(&mut f, "radio_mac")?,
                mtu: take_int(&mut f, "mtu")?,
                udp_lite: take_bool(&mut f, "udp_lite")?,
                next_hop_mac: take_str(&mut f, "next_hop_mac")?,
                station_limit: take_int(&mut f, "station_limit")?,
                group: take_str(&mut f, "group")?,
            };
            if f.is_empty() { Ok(t) } else { Err(()) }
        })();
        r.ok()
    }
}

impl FastEntry for RawStation {
    const KIND: &'static str = "[[station]]";

    fn from_scalars(mut f: Vec<(&str, Scalar)>) -> Option<Self> {
        let r = (|| -> Result<Self, ()> {
            let s = Self {
                mac: take_str(&mut f, "mac")?.ok_or(())?,
                ap: take_str(&mut f, "ap")?.ok_or(())?,
                radio: take_int(&mut f, "radio")?,
                bssid: take_str(&mut f, "bssid")?,
                vlan: take_int(&mut f, "vlan")?,
            };
            if f.is_empty() { Ok(s) } else { Err(()) }
        })();
        r.ok()
    }
}

/// A `[[tunnel]]` entry as plain data (every field explicit when ferry
/// writes it); see [`super::render`] and [`super::Config::with_entries`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelEntry {
    /// AP name.
    pub ap: String,
    /// AP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Session ID (32 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// AP source port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// "active" or "standby".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Client VLAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<i64>,
    /// "802.3" or "802.11".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Radio MAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub radio_mac: Option<String>,
    /// Tunnel MTU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<i64>,
    /// IPv6: UDP-Lite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_lite: Option<bool>,
    /// Next-hop MAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop_mac: Option<String>,
    /// Learned-station limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub station_limit: Option<i64>,
    /// HA group (with `[ha]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// A `[[station]]` entry as plain data.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StationEntry {
    /// Client MAC.
    pub mac: String,
    /// AP name of its tunnel.
    pub ap: String,
    /// Radio id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub radio: Option<i64>,
    /// BSSID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bssid: Option<String>,
}

/// A plain value as if the parser had read it (no position: errors about
/// it name the file only).
fn unspanned<T>(v: Option<T>) -> Option<Spanned<T>> {
    v.map(|v| Spanned::new(0..0, v))
}

impl From<TunnelEntry> for RawTunnel {
    fn from(e: TunnelEntry) -> Self {
        Self {
            ap: Spanned::new(0..0, e.ap),
            address: unspanned(e.address),
            session_id: unspanned(e.session_id),
            port: unspanned(e.port),
            state: unspanned(e.state),
            role: None,
            vlan: unspanned(e.vlan),
            format: unspanned(e.format),
            radio_mac: unspanned(e.radio_mac),
            mtu: unspanned(e.mtu),
            udp_lite: unspanned(e.udp_lite),
            next_hop_mac: unspanned(e.next_hop_mac),
            station_limit: unspanned(e.station_limit),
            group: unspanned(e.group),
        }
    }
}

impl From<StationEntry> for RawStation {
    fn from(e: StationEntry) -> Self {
        Self {
            mac: Spanned::new(0..0, e.mac),
            ap: Spanned::new(0..0, e.ap),
            radio: unspanned(e.radio),
            bssid: unspanned(e.bssid),
            vlan: None,
        }
    }
}

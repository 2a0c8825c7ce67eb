//! A validated table back to plain entries, every field explicit:
//! [`super::Config::with_entries`] of them gives the same table back. The
//! state file keeps the running table this way, as structured data, so a
//! restart restores what was swapped in rather than what the configuration
//! file says.

use ferry_dataplane::tables::format_mac;

use super::{Config, StationEntry, TunnelConfig, TunnelEntry, format_session_id};

impl From<&TunnelConfig> for TunnelEntry {
    fn from(t: &TunnelConfig) -> Self {
        Self {
            ap: t.ap.clone(),
            address: t.address.map(|a| a.to_string()),
            session_id: t.session_id.as_ref().map(format_session_id),
            port: t.port.map(i64::from),
            state: Some(t.state.as_str().to_string()),
            vlan: Some(i64::from(t.vlan)),
            format: Some(t.format.as_str().to_string()),
            radio_mac: t.radio_mac.as_ref().map(format_mac),
            mtu: Some(i64::from(t.mtu)),
            // Only IPv6 tunnels may say (validation refuses it on IPv4).
            udp_lite: t.address.is_some_and(|a| a.is_ipv6()).then_some(t.udp_lite),
            next_hop_mac: t.next_hop_mac.as_ref().map(format_mac),
            station_limit: Some(i64::from(t.station_limit)),
            group: t.group.clone(),
        }
    }
}

impl Config {
    /// The tunnels as plain entries.
    pub fn tunnel_entries(&self) -> Vec<TunnelEntry> {
        self.tunnels.iter().map(TunnelEntry::from).collect()
    }

    /// The static stations as plain entries.
    pub fn station_entries(&self) -> Vec<StationEntry> {
        self.stations
            .iter()
            .map(|s| StationEntry {
                mac: format_mac(&s.mac),
                ap: self.tunnels[s.tunnel].ap.clone(),
                radio: Some(i64::from(s.radio)),
                bssid: s.bssid.as_ref().map(format_mac),
            })
            .collect()
    }
}

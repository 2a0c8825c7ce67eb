//! One `[[tunnel]]` entry's checks: identity (name, address or Session ID,
//! port), then its forwarding settings; and the uniqueness of names, keys
//! and Session IDs across a table.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use ferry_ebpf::abi;

use super::{
    ConfigError, DEFAULT_MTU, Format, TunnelConfig, TunnelDefaults, TunnelState,
    entries::{Entries, Entry},
    parse_session_id,
    schema::RawTunnel,
    source::Source,
};

const VID_MAX: i64 = ferry_ebpf::vlan::VID_MAX as i64;

/// What the tunnels seen so far use (each must be unique).
#[derive(Default)]
struct Seen {
    names: HashMap<String, usize>,
    keys: HashSet<(IpAddr, Option<u16>)>,
    sessions: HashMap<[u8; 16], String>,
}

pub(super) fn parse_tunnels(
    src: &Source<'_>,
    raw: Entries<'_, RawTunnel>,
    d: &TunnelDefaults,
    addresses: &[IpAddr],
) -> Result<Vec<TunnelConfig>, ConfigError> {
    if raw.len() > abi::MAX_TUNNELS as usize {
        return Err(src.at_offset(
            raw.header(abi::MAX_TUNNELS as usize),
            format!("more than {} tunnels", abi::MAX_TUNNELS),
        ));
    }
    let mut seen = Seen::default();
    let mut out = Vec::with_capacity(raw.len());
    let top = src;
    for st in raw.into_iter(src) {
        let st = st?;
        let src = &top.rebased(st.base);
        out.push(parse_tunnel(src, &st, d, addresses, &mut seen)?);
    }
    Ok(out)
}

/// One `[[tunnel]]`: identity (name, address or session, port) first, then
/// the forwarding settings.
fn parse_tunnel(
    src: &Source<'_>,
    st: &Entry<RawTunnel>,
    d: &TunnelDefaults,
    addresses: &[IpAddr],
    seen: &mut Seen,
) -> Result<TunnelConfig, ConfigError> {
    let t = &st.raw;
    let line = src.line(st.header);
    let ap = t.ap.get_ref().trim().to_string();
    if ap.is_empty() || ap.len() > 64 || ap.chars().any(|c| c.is_control()) {
        return Err(src.at(&t.ap, "tunnel ap name must be 1-64 printable characters"));
    }
    if let Some(prev) = seen.names.insert(ap.clone(), line) {
        return Err(src.at(
            &t.ap,
            format!("tunnel ap {ap:?} is already defined at line {prev}"),
        ));
    }
    let (address, session_id) = tunnel_identity(src, st, &ap, seen)?;
    let port = match &t.port {
        Some(p) => Some(src.int(p, "tunnel port", 1, 65535)?),
        None => None,
    };
    if let Some(address) = address
        && !seen.keys.insert((address, port))
    {
        let which = port.map_or("any port".to_string(), |p| format!("port {p}"));
        return Err(src.at(
            t.address.as_ref().unwrap_or(&t.ap),
            format!("another tunnel already uses {address} {which}"),
        ));
    }
    if let (Some(address), Some(at)) = (address, &t.address)
        && !addresses.iter().any(|a| a.is_ipv6() == address.is_ipv6())
    {
        let fam = if address.is_ipv6() { "IPv6" } else { "IPv4" };
        return Err(src.at(at, format!("tunnel address {address} is {fam}, but node.addresses has no {fam} address to source it from")));
    }
    let state = match (&t.state, &t.role) {
        (Some(s), _) | (None, Some(s)) => s.get_ref().parse().map_err(|e| src.at(s, e))?,
        (None, None) => TunnelState::Active,
    };
    let (vlan, vlan_line) = match &t.vlan {
        Some(v) => (src.int(v, "tunnel vlan", 1, VID_MAX)?, src.line_of(v)),
        None => (d.vlan, line),
    };
    let format = match &t.format {
        Some(f) => f.get_ref().parse().map_err(|e| src.at(f, e))?,
        None => Format::Dot3,
    };
    let radio_mac = match &t.radio_mac {
        Some(m) => Some(src.mac(m, "tunnel radio_mac")?),
        None => None,
    };
    let (mtu, udp_lite) = tunnel_mtu(src, st, address, d)?;
    let next_hop_mac = match &t.next_hop_mac {
        Some(m) => Some(src.mac(m, "tunnel next_hop_mac")?),
        None => d.next_hop,
    };
    if next_hop_mac.is_some() && !d.has_source_mac {
        let at = t.next_hop_mac.as_ref().map_or(0..0, |m| m.span());
        return Err(src.err(
            Some(at),
            "a next_hop_mac needs downstream.source_mac (our AP-side MAC)",
        ));
    }
    let station_limit = match &t.station_limit {
        Some(v) => src.int(v, "tunnel station_limit", 0, i64::from(u32::MAX))?,
        None => d.station_limit,
    };
    let group = tunnel_group(src, st, &ap, d)?;
    Ok(TunnelConfig {
        ap,
        address,
        session_id,
        port,
        state,
        vlan,
        format,
        radio_mac,
        mtu,
        udp_lite,
        next_hop_mac,
        station_limit,
        group,
        line,
        vlan_line,
    })
}

/// A tunnel's HA group: one of the `[[group]]`s with `[ha]`, none without.
fn tunnel_group(
    src: &Source<'_>,
    st: &Entry<RawTunnel>,
    ap: &str,
    d: &TunnelDefaults,
) -> Result<Option<String>, ConfigError> {
    match (&st.raw.group, &d.groups) {
        (None, None) => Ok(None),
        (Some(g), None) => Err(src.at(g, "tunnel group needs an [ha] section")),
        (None, Some(_)) => Err(src.at_offset(
            st.header,
            format!("tunnel {ap:?} needs a group: with [ha] every tunnel belongs to one"),
        )),
        (Some(g), Some(names)) => {
            let name = g.get_ref().trim();
            if names.iter().any(|n| n == name) {
                Ok(Some(name.to_string()))
            } else {
                Err(src.at(g, format!("tunnel group {name:?} is not a [[group]]")))
            }
        }
    }
}

/// A tunnel's address, or its Session ID (exactly one of them).
fn tunnel_identity(
    src: &Source<'_>,
    st: &Entry<RawTunnel>,
    ap: &str,
    seen: &mut Seen,
) -> Result<(Option<IpAddr>, Option<[u8; 16]>), ConfigError> {
    let t = &st.raw;
    match (&t.address, &t.session_id) {
        (Some(a), None) => Ok((Some(src.ip(a, "tunnel address")?), None)),
        (None, Some(sid)) => {
            let v = parse_session_id(sid.get_ref())
                .ok_or_else(|| src.at(sid, "tunnel session_id must be 32 hex digits (16 bytes)"))?;
            if let Some(other) = seen.sessions.insert(v, ap.to_string()) {
                return Err(src.at(
                    sid,
                    format!("tunnel session_id is already used by tunnel {other:?}"),
                ));
            }
            if let Some(p) = &t.port {
                return Err(src.at(
                    p,
                    "a tunnel declared by session_id takes its port from its first keepalive; remove port",
                ));
            }
            Ok((None, Some(v)))
        }
        (Some(a), Some(_)) => Err(src.at(a, "give a tunnel address or a session_id, not both")),
        (None, None) => Err(src.at_offset(st.header, "a tunnel needs an address or a session_id")),
    }
}

/// A tunnel's MTU and (IPv6) UDP-Lite choice, which limit each other.
fn tunnel_mtu(
    src: &Source<'_>,
    st: &Entry<RawTunnel>,
    address: Option<IpAddr>,
    d: &TunnelDefaults,
) -> Result<(u16, bool), ConfigError> {
    let t = &st.raw;
    let mtu = match &t.mtu {
        Some(v) => src.int(v, "tunnel mtu", 576, 9000)?,
        None => d.mtu,
    };
    let is_v6 = address.is_some_and(|a| a.is_ipv6());
    let udp_lite = match &t.udp_lite {
        Some(v) if !is_v6 && address.is_some() => {
            return Err(src.at(
                v,
                "tunnel udp_lite applies to IPv6 tunnels only (IPv4 CAPWAP uses UDP)",
            ));
        }
        Some(v) => *v.get_ref(),
        None => true,
    };
    if is_v6 && !udp_lite && mtu > DEFAULT_MTU {
        let why = format!(
            "tunnel mtu {mtu}: IPv6 tunnels with udp_lite = false support at most 1500 (the program checksums the whole datagram)"
        );
        return Err(match t.mtu.as_ref() {
            Some(m) => src.err(Some(m.span()), why),
            None => src.at_offset(st.header, why),
        });
    }
    Ok((mtu, udp_lite))
}

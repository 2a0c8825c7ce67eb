//! The model's downstream transform: a client-VLAN frame to the tunnel of
//! the AP that serves its station (the decision flow of
//! `ebpf/src/downstream.rs`).

use ferry_ebpf::{
    abi::{
        DOWN_IPV6, DOWN_NATIVE, DOWN_NEIGHBOUR, DOWN_RADIO_MAC, DOWN_STANDBY, DOWN_UDPLITE,
        DOWN_VALID, EGRESS_REDIRECT, EGRESS_TX, Reason, STATION_BSSID, StationKey,
    },
    encap, eth, ipv6, udp, vlan,
};

use super::{Model, Outcome, arr, be16, outcome};
use crate::datapath::action;

impl Model {
    /// Runs the downstream transform on one frame from the client side.
    pub fn downstream(&self, pkt: &[u8]) -> Outcome {
        let mut tunnel = None;
        let r = self.try_downstream(pkt, &mut tunnel);
        outcome(pkt, r, Reason::DownForwarded, tunnel)
    }

    #[allow(clippy::too_many_lines)]
    fn try_downstream(
        &self,
        pkt: &[u8],
        tunnel: &mut Option<u32>,
    ) -> Result<(u32, Vec<u8>), Reason> {
        let kept_at = vlan::TAGGED_HLEN - 2;
        if pkt.len() < kept_at || be16(pkt, eth::ETHERTYPE) != vlan::TPID_8021Q {
            return Err(Reason::DownPassNotTagged);
        }
        let tci = be16(pkt, eth::HLEN);
        let vid = vlan::vid(tci);
        if !self.client_vlans.contains(&vid) {
            return Err(Reason::DownPassOtherVlan);
        }
        let da: [u8; 6] = arr(pkt, eth::DST);
        let sa: [u8; 6] = arr(pkt, eth::SRC);
        if eth::is_group(&da) {
            return Err(Reason::DownPassGroup);
        }
        let st = *self
            .stations
            .get(&StationKey { mac: da, vlan: vid })
            .ok_or(Reason::DownDropUnknownStation)?;
        let t = self
            .down
            .get(&st.tunnel)
            .filter(|t| t.flags & DOWN_VALID != 0)
            .ok_or(Reason::DownDropNoTunnel)?;
        if t.vlan != vid {
            return Err(Reason::DownDropNoTunnel);
        }
        if t.flags & DOWN_STANDBY != 0 || !self.group_active(t.group) {
            return Err(Reason::DownDropStandby);
        }
        if t.port == 0 {
            return Err(Reason::DownDropNoApPort);
        }
        let native = t.flags & DOWN_NATIVE != 0;
        if native && st.flags & STATION_BSSID == 0 {
            return Err(Reason::DownDropNoBssid);
        }
        let shape = encap::Shape::new(
            t.flags & DOWN_IPV6 != 0,
            t.flags & DOWN_RADIO_MAC != 0,
            native,
        );
        let payload = shape.payload_len(pkt.len());
        let ip_len = shape.ip_len(payload);
        if ip_len > usize::from(t.mtu) {
            return Err(Reason::DownPassMtu);
        }
        // The model has no FIB: it is the program with `ap_ifindex` 0.
        if t.flags & DOWN_NEIGHBOUR == 0 {
            return Err(Reason::DownDropNoNeighbour);
        }
        let action = match self.settings.egress_down {
            EGRESS_TX => action::TX,
            EGRESS_REDIRECT if self.egress_down_ready => action::REDIRECT,
            _ => return Err(Reason::DownDropNoEgress),
        };
        *tunnel = Some(st.tunnel);
        let h = encap::Headers {
            dmac: t.next_hop,
            smac: t.source_mac,
            ap: t.ap,
            local: t.local,
            sport: self.port,
            dport: t.port,
            dscp: self.settings.dscp[usize::from(vlan::pcp(tci) & 7)],
            df: self.settings.df != 0,
            udplite: t.flags & DOWN_UDPLITE != 0,
            rid: st.rid,
            radio_mac: t.radio_mac,
            da,
            sa,
            bssid: st.bssid,
        };
        let udp_payload = payload + shape.capwap_len();
        let mut out = Vec::with_capacity(eth::HLEN + ip_len);
        out.extend_from_slice(&encap::ethernet(&h, shape.ipv6));
        if shape.ipv6 {
            out.extend_from_slice(&encap::ipv6(&h, udp_payload));
        } else {
            out.extend_from_slice(&encap::ipv4(&h, udp_payload));
        }
        out.extend_from_slice(&encap::udp(&h, shape.ipv6, udp_payload));
        out.extend_from_slice(&encap::capwap(&h, &shape));
        if shape.radio_mac {
            out.extend_from_slice(&encap::radio_mac_option(&h));
        }
        if native {
            out.extend_from_slice(&encap::dot11_header(&da, &st.bssid, &sa));
            out.extend_from_slice(&encap::SNAP_PREFIX);
        } else {
            out.extend_from_slice(&da);
            out.extend_from_slice(&sa);
        }
        out.extend_from_slice(&pkt[kept_at..]);
        if shape.ipv6 && !h.udplite {
            let l4 = eth::HLEN + ipv6::HLEN;
            let udp_len = out.len() - l4;
            let mut sum = encap::pseudo_sum_v6(&h.local, &h.ap, udp_len as u32, ipv6::NEXT_UDP);
            for w in out[l4..].chunks(2) {
                sum += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
            }
            let c = encap::fold(sum);
            let c = if c == 0 { 0xffff } else { c };
            out[l4 + udp::CHECKSUM..l4 + udp::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
        }
        Ok((action, out))
    }
}

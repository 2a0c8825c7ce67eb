//! Session bindings: a session tunnel's keepalive names the address and
//! port its AP sends from (behind NAT, what the AP's own address is not),
//! and the tunnel's entries move there.
//!
//! A binding is live state, like a learned AP port, not a table change: it
//! writes the tunnel's own entries in the live table and nothing else (no
//! lowering of the configuration, no diff of the table, no new
//! generation), so its cost does not grow with the table. NATs re-map, and
//! 400 flapping session tunnels must not stall keepalive echoes and
//! `ferry status` for everyone else: when a binding went through a
//! single-tunnel edit of the whole table (about 23 ms at 26,001 tunnels),
//! 400 flapping session tunnels froze `ferry status` for 13.7 s and lost
//! other APs' keepalive echoes (`ferry-bench rebind`, bench/RESULTS.md).
//!
//! What one binding writes, in this order, every write undone if a later
//! one fails:
//! 1. the new address's port marker, if it has none yet (so the program
//!    looks the exact port up);
//! 2. the tunnel's downstream entry (the new address, port and family);
//! 3. its upstream entry under the new key;
//! 4. removal of the old key;
//! 5. the old address's marker, when no other tunnel has a port there
//!    (removed, or the port hint cleared on an any-port tunnel there).
//!
//! The entries are the ones a whole-table build would make
//! ([`table_entries`]), which the unit tests check after every binding.

use std::{collections::HashMap, net::SocketAddr, time::Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use ferry_dataplane::{datapath::table_entries, tables::Tunnel};
use ferry_ebpf::abi::{self, Addr, TunnelDown, TunnelInfo, TunnelKey};
use tracing::warn;

use super::{TableMaps, TableState, lower};
use crate::{
    api::views::{Change, ChangeKind},
    config::TunnelConfig,
};

impl<M: TableMaps> TableState<M> {
    /// Binds session tunnel `ap` to `peer` (its keepalives come from there):
    /// its entries in the live table move to `peer`, nothing else changes.
    pub fn bind(&mut self, maps: &mut M, ap: &str, peer: SocketAddr) -> Result<Change> {
        let t0 = Instant::now();
        let beyond_pool = self.unadmitted(ap);
        let index = self
            .bind_index
            .get_or_insert_with(|| BindIndex::build(&self.config.tunnels, &self.tables.tunnels));
        let Some(&at) = index.sessions.get(ap) else {
            return Err(match self.config.tunnel_named(ap) {
                Some(_) => anyhow!("tunnel {ap:?} is declared by address"),
                None => anyhow!("no tunnel {ap:?}"),
            });
        };
        let t = &self.config.tunnels[at];
        if peer.port() == 0 {
            // Port 0 is the any-port key, and nothing can be sent to it.
            bail!("tunnel {ap:?}: keepalive from {peer}, source port 0");
        }
        if !self
            .config
            .addresses
            .iter()
            .any(|a| a.is_ipv6() == peer.is_ipv6())
        {
            bail!(
                "tunnel {ap:?}: keepalive from {peer}, but this node has no address of that family"
            );
        }
        let id = self
            .ids
            .get(ap)
            .with_context(|| format!("tunnel {ap:?} has no id"))?;
        let mut new = lower::tunnel(&self.config, id, t, Some(peer))
            .with_context(|| format!("tunnel {ap:?}: no local address for {peer}"))?;
        if beyond_pool {
            // Beyond the licence pool: bound, but installed standby, as a
            // whole-table build would have it.
            new.info.flags |= abi::TUNNEL_STANDBY;
            new.down.flags |= abi::DOWN_STANDBY;
        }
        let row = index.rows.get(&id).copied();
        let old = row.map(|r| self.tables.tunnels[r]);
        let around = index.around(&self.tables.tunnels, id, new.key, old.map(|o| o.key));
        if around.clash {
            // Never over an address-declared tunnel, exactly or through
            // its any-port entry: an exact key wins over the any-port one,
            // so one keepalive would otherwise take that AP's traffic.
            bail!("tunnel {ap:?}: {peer} is already served by another tunnel");
        }
        let mut w = Writer {
            live: maps.live()?,
            maps,
            undo: Vec::new(),
        };
        if let Err(e) = w.move_entries(&new, old.as_ref(), &around) {
            w.revert();
            return Err(e);
        }
        let row = match row {
            Some(r) => {
                self.tables.tunnels[r] = new;
                r
            }
            None => {
                self.tables.tunnels.push(new);
                self.tables.tunnels.len() - 1
            }
        };
        index.moved(id, row, old.map(|o| o.key), new.key);
        self.bound.insert(ap.to_string(), peer);
        let mut c = Change::unchanged(
            ChangeKind::Bind,
            ap,
            self.generation,
            self.config.tunnels.len(),
        );
        c.total_us = super::change::micros(t0.elapsed());
        c.flip_us = c.total_us;
        self.last = Some(c.clone());
        Ok(c)
    }
}

/// What the other tunnels of the table say about a binding.
struct Around {
    /// Another tunnel serves the new key, exactly or through its any-port
    /// entry.
    clash: bool,
    /// Another tunnel has a port of the old address (its marker stays).
    old_addr_ported: bool,
    /// The any-port tunnel of the old address, if there is one.
    old_any: Option<Tunnel>,
}

/// Lookups a binding needs, so that it costs the same at any table size:
/// built on the first binding after a table change (swaps and edits pay
/// nothing for it), then kept current by the bindings. Scanning the table
/// instead took 51% of ferry's CPU time at 3,960 bindings/s and 26,001
/// tunnels (`perf` under `ferry-bench rebind`).
#[derive(Debug, Default)]
pub(super) struct BindIndex {
    /// Position in the configuration of every session tunnel.
    sessions: HashMap<String, usize>,
    /// Position in the installed tables, by tunnel id.
    rows: HashMap<u32, usize>,
    /// Every installed key and the id it leads to.
    keys: HashMap<TunnelKey, u32>,
    /// Installed tunnels with a port, per address (its port marker stays
    /// while there is one).
    ported: HashMap<Addr, u32>,
}

impl BindIndex {
    fn build(config: &[TunnelConfig], installed: &[Tunnel]) -> Self {
        let mut x = Self {
            sessions: config
                .iter()
                .enumerate()
                .filter(|(_, t)| t.address.is_none())
                .map(|(i, t)| (t.ap.clone(), i))
                .collect(),
            ..Self::default()
        };
        for (row, t) in installed.iter().enumerate() {
            x.rows.insert(t.info.id, row);
            x.add_key(t.key, t.info.id);
        }
        x
    }

    fn add_key(&mut self, key: TunnelKey, id: u32) {
        self.keys.insert(key, id);
        if key.port != 0 {
            *self.ported.entry(key.addr).or_default() += 1;
        }
    }

    fn remove_key(&mut self, key: TunnelKey) {
        self.keys.remove(&key);
        if key.port != 0
            && let Some(n) = self.ported.get_mut(&key.addr)
        {
            *n -= 1;
            if *n == 0 {
                self.ported.remove(&key.addr);
            }
        }
    }

    /// Tunnel `id` now sits at `row` under `new` instead of `old`.
    fn moved(&mut self, id: u32, row: usize, old: Option<TunnelKey>, new: TunnelKey) {
        self.rows.insert(id, row);
        if let Some(k) = old {
            self.remove_key(k);
        }
        self.add_key(new, id);
    }

    /// The neighbours of a binding of tunnel `id` from `old` to `new`.
    fn around(
        &self,
        installed: &[Tunnel],
        id: u32,
        new: TunnelKey,
        old: Option<TunnelKey>,
    ) -> Around {
        let other = |k: &TunnelKey| self.keys.get(k).filter(|i| **i != id).copied();
        let clash = other(&new).is_some() || other(&TunnelKey::new(new.addr, 0)).is_some();
        let Some(old) = old else {
            return Around {
                clash,
                old_addr_ported: false,
                old_any: None,
            };
        };
        let mine = u32::from(old.port != 0);
        Around {
            clash,
            old_addr_ported: self.ported.get(&old.addr).copied().unwrap_or(0) > mine,
            old_any: other(&TunnelKey::new(old.addr, 0))
                .and_then(|i| self.rows.get(&i))
                .map(|r| installed[*r]),
        }
    }
}

/// One write to undo: an upstream key and what it held, or a downstream
/// entry and what it held.
enum Step {
    Up(TunnelKey, Option<TunnelInfo>),
    Down(u32, TunnelDown),
}

/// Writes to the live table, each one logged with the value it replaced.
struct Writer<'a, M: TableMaps> {
    maps: &'a mut M,
    live: M::Table,
    undo: Vec<Step>,
}

impl<M: TableMaps> Writer<'_, M> {
    fn set_up(&mut self, key: TunnelKey, info: Option<TunnelInfo>) -> Result<()> {
        let before = self.maps.up(&self.live, &key)?;
        if before == info {
            return Ok(());
        }
        match info {
            Some(i) => self.maps.set_up(&mut self.live, key, i)?,
            None => self.maps.remove_up(&mut self.live, &key)?,
        }
        self.undo.push(Step::Up(key, before));
        Ok(())
    }

    fn set_down(&mut self, id: u32, d: TunnelDown) -> Result<()> {
        let before = self.maps.down(&self.live, id)?;
        self.maps.set_down(&mut self.live, id, d)?;
        self.undo.push(Step::Down(id, before));
        Ok(())
    }

    /// The numbered steps of the module documentation.
    fn move_entries(&mut self, new: &Tunnel, old: Option<&Tunnel>, around: &Around) -> Result<()> {
        // The tunnel's entry and its address's marker, as a build makes them.
        let entries = table_entries(std::slice::from_ref(new))?;
        let any_new = TunnelKey::new(new.key.addr, 0);
        if self.maps.up(&self.live, &any_new)?.is_none()
            && let Some((_, marker)) = entries.iter().find(|(k, _)| *k == any_new)
        {
            self.set_up(any_new, Some(*marker))?;
        }
        self.set_down(new.info.id, new.down_entry())?;
        if let Some((k, info)) = entries.iter().find(|(k, _)| *k == new.key) {
            self.set_up(*k, Some(*info))?;
        }
        let Some(old) = old else {
            return Ok(());
        };
        if old.key != new.key {
            self.set_up(old.key, None)?;
        }
        let any_old = TunnelKey::new(old.key.addr, 0);
        if old.key.addr != new.key.addr && !around.old_addr_ported {
            let keep = match &around.old_any {
                Some(t) => table_entries(std::slice::from_ref(t))?
                    .into_iter()
                    .find(|(k, _)| *k == any_old)
                    .map(|(_, i)| i),
                None => None,
            };
            self.set_up(any_old, keep)?;
        }
        Ok(())
    }

    /// Undoes every write made, newest first. A failure here leaves the
    /// entry as it is and says so: the next swap rewrites the whole table.
    fn revert(mut self) {
        while let Some(s) = self.undo.pop() {
            let r = match s {
                Step::Up(k, Some(i)) => self.maps.set_up(&mut self.live, k, i),
                Step::Up(k, None) => self.maps.remove_up(&mut self.live, &k),
                Step::Down(id, d) => self.maps.set_down(&mut self.live, id, d),
            };
            if let Err(e) = r {
                warn!("undoing a failed binding: {e}");
            }
        }
    }
}

impl<M: TableMaps> TableState<M> {
    /// Writes `port` as the learned port of any-port tunnel `ap` (the HA
    /// peer learned it), unless this node has learned one itself: the port
    /// the AP uses towards this node wins. Whether it was written.
    pub fn learn_port(&mut self, maps: &mut M, ap: &str, port: u16) -> Result<bool> {
        let Some(t) = self.config.tunnel_named(ap) else {
            return Ok(false);
        };
        let (Some(_), None, Some(id)) = (t.address, t.port, self.ids.get(ap)) else {
            return Ok(false);
        };
        let mut live = maps.live()?;
        let mut d = maps.down(&live, id)?;
        if d.flags & abi::DOWN_VALID == 0 || d.flags & abi::DOWN_FIXED_PORT != 0 || d.port != 0 {
            return Ok(false);
        }
        d.port = port;
        maps.set_down(&mut live, id, d)?;
        Ok(true)
    }
}

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

use std::{net::SocketAddr, time::Instant};

use anyhow::{Context as _, Result, bail};
use ferry_dataplane::{datapath::table_entries, tables::Tunnel};
use ferry_ebpf::abi::{TunnelDown, TunnelInfo, TunnelKey};
use tracing::warn;

use super::{TableMaps, TableState, lower};
use crate::api::views::{Change, ChangeKind};

impl<M: TableMaps> TableState<M> {
    /// Binds session tunnel `ap` to `peer` (its keepalives come from there):
    /// its entries in the live table move to `peer`, nothing else changes.
    pub fn bind(&mut self, maps: &mut M, ap: &str, peer: SocketAddr) -> Result<Change> {
        let t0 = Instant::now();
        let t = self
            .config
            .tunnel_named(ap)
            .with_context(|| format!("no tunnel {ap:?}"))?;
        if t.address.is_some() {
            bail!("tunnel {ap:?} is declared by address");
        }
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
        let new = lower::tunnel(&self.config, id, t, Some(peer))
            .with_context(|| format!("tunnel {ap:?}: no local address for {peer}"))?;
        let row = self.tables.tunnels.iter().position(|x| x.info.id == id);
        let old = row.map(|r| self.tables.tunnels[r]);
        let around = Around::scan(&self.tables.tunnels, id, new.key, old.map(|o| o.key));
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
        match row {
            Some(r) => self.tables.tunnels[r] = new,
            None => self.tables.tunnels.push(new),
        }
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

/// What the other tunnels of the table say about a binding of tunnel `id`
/// from `old` to `new`: one pass over the installed tunnels.
struct Around {
    /// Another tunnel serves `new`, exactly or through its any-port entry.
    clash: bool,
    /// Another tunnel has a port of the old address (its marker stays).
    old_addr_ported: bool,
    /// The any-port tunnel of the old address, if there is one.
    old_any: Option<Tunnel>,
}

impl Around {
    fn scan(tunnels: &[Tunnel], id: u32, new: TunnelKey, old: Option<TunnelKey>) -> Self {
        let any_new = TunnelKey::new(new.addr, 0);
        let mut a = Self {
            clash: false,
            old_addr_ported: false,
            old_any: None,
        };
        for o in tunnels.iter().filter(|o| o.info.id != id) {
            a.clash |= o.key == new || o.key == any_new;
            if let Some(old) = old
                && o.key.addr == old.addr
            {
                if o.key.port == 0 {
                    a.old_any = Some(*o);
                } else {
                    a.old_addr_ported = true;
                }
            }
        }
        a
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

//! Station learning hints: 64-bit tags in 4-way buckets, shared by every
//! CPU, each saying "the station table agreed with these facts in this
//! epoch".
//!
//! Why this shape (measured, bench/RESULTS.md "Where the large-table time
//! goes"): with many stations, what upstream learning costs is memory, not
//! instructions. The earlier per-CPU hint (1,024 slots of 32 bytes) missed
//! for almost every frame once stations outnumbered it, and each miss read
//! the LRU station table (bucket and element: two or more cache and TLB
//! misses). A per-CPU array grown to 65,536 slots hit for 98% of frames
//! and saved nothing, because a per-CPU array is itself two random reads
//! (the pointer array, then the CPU's element). Here a bucket is four
//! aligned `u64`s in a plain array sized to the station capacity (8 bytes
//! a station slot: 512 KB for the live bench's 25,600-station table): a
//! hit reads one half cache line and writes nothing, so all CPUs can share
//! the array, and a torn read is impossible.
//!
//! A tag holds 16 bits naming the station, a 40-bit fingerprint of
//! everything learning compares (station, VLAN, tunnel, radio, flags,
//! BSSID and the table generation) and the 8-bit epoch that `ferry run`
//! advances every few seconds (`Settings::hint_epoch`). A frame whose tag is
//! in its bucket skips the station table; any change of fact changes the
//! fingerprint, so a moved station always reaches the table. A change
//! made outside the programs (a move synced from the HA peer, a static
//! entry, a removal) clears the station's tags from user space
//! (`Datapath::forget_hints`). A new epoch sends every talking station to
//! the table once, which refreshes its `last_seen` and bounds what is left
//! (an LRU eviction).
//!
//! What a fingerprint gives up, and why that is acceptable: a changed fact
//! set with the same 40 bits would let the station's frames skip learning
//! for the rest of that epoch (at most [`crate::abi::STATION_HINT_EPOCH_SECS`]).
//! The chance per change is 2^-40.

/// Ways per bucket: a bucket is 32 bytes, half a cache line. Direct
/// mapping (one way) was measured first: at 25,600 stations in 65,536
/// slots, the stations that shared a slot evicted each other on every
/// round of the live bench, and 0.24 of all frames read the table. Four
/// ways leave a station without a place only when five or more share a
/// bucket.
pub const WAYS: usize = 4;

/// One bucket of tags.
pub type Bucket = [u64; WAYS];

/// Smallest hint array (buckets).
pub const MIN_BUCKETS: u32 = 256;
/// Largest hint array (buckets): 32 MiB. Beyond it, stations crowd their
/// buckets and miss more often, which costs speed, never correctness.
pub const MAX_BUCKETS: u32 = 1 << 20;

/// Buckets for a station table of `capacity`: a slot per station (the
/// next power of two), within [`MIN_BUCKETS`] and [`MAX_BUCKETS`].
pub const fn buckets(capacity: u32) -> u32 {
    let slots = if capacity <= MIN_BUCKETS * WAYS as u32 {
        MIN_BUCKETS * WAYS as u32
    } else if capacity >= MAX_BUCKETS * WAYS as u32 {
        MAX_BUCKETS * WAYS as u32
    } else {
        capacity.next_power_of_two()
    };
    slots / WAYS as u32
}

/// One round of a 64-bit multiply-xorshift mixer (the finaliser of
/// MurmurHash3's 64-bit variant): cheap on BPF, every input bit reaches
/// every output bit.
#[inline(always)]
const fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// The station key (client MAC, VLAN) as one word.
#[inline(always)]
const fn key_word(mac: &[u8; 6], vlan: u16) -> u64 {
    u64::from_le_bytes([
        mac[0],
        mac[1],
        mac[2],
        mac[3],
        mac[4],
        mac[5],
        vlan as u8,
        (vlan >> 8) as u8,
    ])
}

/// Bits of a tag that name the station (its top 16): a miss overwrites
/// the station's own old tag instead of another station's.
const WHO: u64 = 0xffff << 48;
/// Bits of a tag that hold the epoch.
const EPOCH: u64 = 0xff;

/// The bucket of station (`mac`, `vlan`) in an array of `mask + 1`
/// buckets. It depends on the station only, so a station that moves finds
/// its old tag.
#[inline(always)]
pub const fn bucket(mac: &[u8; 6], vlan: u16, mask: u32) -> u32 {
    (mix(key_word(mac, vlan)) as u32) & mask
}

/// What learning knows about a station after the table agreed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facts {
    /// Client MAC.
    pub mac: [u8; 6],
    /// Client VLAN.
    pub vlan: u16,
    /// Tunnel id.
    pub tunnel: u32,
    /// Radio id.
    pub rid: u8,
    /// `STATION_*` flags as learned.
    pub flags: u8,
    /// BSSID (zero without one).
    pub bssid: [u8; 6],
    /// `Settings::generation`.
    pub generation: u32,
}

/// The tag for `f` in `epoch`: 16 bits naming the station, a 40-bit
/// fingerprint of all of `f`, and the epoch in the low 8 bits.
#[inline(always)]
pub const fn tag(f: &Facts, epoch: u8) -> u64 {
    let k = mix(key_word(&f.mac, f.vlan));
    let b = u64::from_le_bytes([
        f.tunnel as u8,
        (f.tunnel >> 8) as u8,
        (f.tunnel >> 16) as u8,
        (f.tunnel >> 24) as u8,
        f.rid,
        f.flags,
        f.bssid[0],
        f.bssid[1],
    ]);
    let c = u64::from_le_bytes([
        f.bssid[2],
        f.bssid[3],
        f.bssid[4],
        f.bssid[5],
        f.generation as u8,
        (f.generation >> 8) as u8,
        (f.generation >> 16) as u8,
        (f.generation >> 24) as u8,
    ]);
    let fp = mix(mix(k ^ b) ^ c);
    (k & WHO) | (fp & !WHO & !EPOCH) | epoch as u64
}

/// Whether tag `t` names station (`mac`, `vlan`): user space clears a
/// station's tags after a change to its entry that the programs did not
/// make (a synced move, a static entry, a removal).
#[inline(always)]
pub const fn names(t: u64, mac: &[u8; 6], vlan: u16) -> bool {
    t != 0 && t & WHO == mix(key_word(mac, vlan)) & WHO
}

/// Whether `b` holds `tag` (the station's facts are vouched for).
#[inline(always)]
pub fn holds(b: &Bucket, tag: u64) -> bool {
    b[0] == tag || b[1] == tag || b[2] == tag || b[3] == tag
}

/// The way a new `tag` replaces in `b`: the station's own old tag, else a
/// tag from another epoch (its station has not been seen since), else the
/// way the station's name picks (two crowded stations then share one way
/// instead of pushing out everybody).
#[inline(always)]
pub fn victim(b: &Bucket, tag: u64) -> usize {
    let mut stale = WAYS;
    let mut i = 0;
    while i < WAYS {
        if b[i] & WHO == tag & WHO {
            return i;
        }
        if stale == WAYS && b[i] & EPOCH != tag & EPOCH {
            stale = i;
        }
        i += 1;
    }
    if stale < WAYS {
        stale
    } else {
        (tag >> 48) as usize % WAYS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            mac: [0x02, 0x5a, 0, 0, 0, 1],
            vlan: 200,
            tunnel: 7,
            rid: 1,
            flags: 0,
            bssid: [0; 6],
            generation: 3,
        }
    }

    #[test]
    fn every_fact_and_the_epoch_change_the_tag() {
        let f = facts();
        let t = tag(&f, 5);
        assert_eq!(t, tag(&f, 5), "deterministic");
        assert_ne!(t, tag(&f, 6), "epoch");
        assert_eq!(t >> 8, tag(&f, 6) >> 8, "only the epoch bits");
        let changed = [
            Facts {
                mac: [0x02, 0x5a, 0, 0, 0, 2],
                ..f
            },
            Facts {
                mac: [0x03, 0x5a, 0, 0, 0, 1],
                ..f
            },
            Facts { vlan: 201, ..f },
            Facts { tunnel: 8, ..f },
            Facts {
                tunnel: 7 | 1 << 24,
                ..f
            },
            Facts { rid: 2, ..f },
            Facts { flags: 1, ..f },
            Facts {
                bssid: [1, 0, 0, 0, 0, 0],
                ..f
            },
            Facts {
                bssid: [0, 0, 0, 0, 0, 1],
                ..f
            },
            Facts { generation: 4, ..f },
            Facts {
                generation: 3 | 1 << 24,
                ..f
            },
        ];
        for g in changed {
            assert_ne!(tag(&g, 5) >> 8, t >> 8, "{g:?}");
        }
    }

    #[test]
    fn a_miss_replaces_the_station_itself_then_a_stale_way_then_its_own() {
        let f = facts();
        let t = tag(&f, 5);
        let moved = tag(&Facts { tunnel: 9, ..f }, 5);
        let other = |n: u8, epoch: u8| {
            tag(
                &Facts {
                    mac: [0x02, 0x5a, 0, 0, 1, n],
                    ..f
                },
                epoch,
            )
        };
        let b = [other(1, 5), t, other(2, 5), other(3, 4)];
        assert!(holds(&b, t));
        assert!(!holds(&b, moved));
        assert_eq!(victim(&b, moved), 1, "the station's own old tag");
        assert_eq!(victim(&b, other(4, 5)), 3, "the stale way");
        let full = [other(1, 5), other(2, 5), other(3, 5), other(5, 5)];
        let new = other(4, 5);
        assert_eq!(victim(&full, new), (new >> 48) as usize % WAYS);
        assert!(!holds(&[0; WAYS], t));
        assert!(names(t, &f.mac, f.vlan) && names(moved, &f.mac, f.vlan));
        assert!(!names(t, &f.mac, 201) && !names(0, &f.mac, f.vlan));
    }

    #[test]
    fn buckets_are_a_power_of_two_within_bounds_and_spread() {
        assert_eq!(buckets(0), MIN_BUCKETS);
        assert_eq!(buckets(1024), 256);
        assert_eq!(buckets(1025), 512);
        assert_eq!(buckets(1_281_024), 1 << 19);
        assert_eq!(buckets(u32::MAX), MAX_BUCKETS);
        // 25,600 stations with consecutive MACs (like the live bench's) in
        // the 16,384 buckets of its table: a random spread (1.56 stations a
        // bucket) leaves about 1.8% of them without a way; a poor hash
        // would crowd far more.
        let mask = buckets(25_600 + 25_600 / 4 + 1024) - 1;
        let mut used = std::vec![0u32; mask as usize + 1];
        for i in 0u32..25_600 {
            let b = i.to_be_bytes();
            used[bucket(&[0x02, 0x5a, b[0], b[1], b[2], b[3]], 200, mask) as usize] += 1;
        }
        let homeless: u32 = used.iter().map(|n| n.saturating_sub(WAYS as u32)).sum();
        assert!(
            homeless < 25_600 * 3 / 100,
            "{homeless} stations without a way"
        );
    }
}

//! The live benchmark's generator and sink (`ferry-bench live`): program and
//! map names, map layouts, the trailer every generated frame carries, and
//! the latency histogram's buckets. One definition for the eBPF programs
//! (`bench_gen`, `bench_sink`, `baseline_redirect`) and user space.
//!
//! The generator runs under BPF_PROG_TEST_RUN in live-frames mode: the
//! kernel sends every frame the program returns XDP_TX for out of the
//! interface named in the context. Live-mode pages are recycled and come
//! back holding whatever the forwarder wrote into them (a decapsulation
//! rewrites headers in place), so the program rewrites every frame's
//! headers from a template on every run, then stamps the station MAC and
//! the trailer. The sink, an XDP program on the far interface, compares
//! each frame's first [`CMP`] bytes with what the forwarder should have
//! produced, checks the station MAC, reads the trailer and histograms the
//! latency, then drops the frame.
//!
//! The maps are sized 1 in the object, so a `ferry run` that loads the same
//! object pays nothing for them; `ferry-bench` sizes them at load.

/// The generator program.
pub const PROG_GEN: &str = "bench_gen";
/// The counting, checking sink program.
pub const PROG_SINK: &str = "bench_sink";
/// The plain-redirect ceiling: a DEVMAP redirect and nothing else.
pub const PROG_REDIRECT: &str = "baseline_redirect";

/// Generator header templates, by `class * keys + key` ([`GenTemplate`]).
pub const MAP_GEN_TEMPLATES: &str = "GEN_TEMPLATES";
/// Generator settings, one entry ([`GenSettings`]).
pub const MAP_GEN_SETTINGS: &str = "GEN_SETTINGS";
/// Generator state, per CPU ([`GenState`]).
pub const MAP_GEN_STATE: &str = "GEN_STATE";
/// Sink expectations, by `class * keys + key` ([`SinkExpect`]).
pub const MAP_SINK_EXPECT: &str = "SINK_EXPECT";
/// Sink settings, one entry ([`SinkSettings`]).
pub const MAP_SINK_SETTINGS: &str = "SINK_SETTINGS";
/// Sink counters, per CPU ([`SinkStats`]).
pub const MAP_SINK_STATS: &str = "SINK_STATS";
/// Sink latency histogram, per CPU, [`LAT_BUCKETS`] `u64` counts.
pub const MAP_SINK_LATENCY: &str = "SINK_LATENCY";
/// The redirect baseline's DEVMAP: target by receiving ifindex (mod
/// [`REDIRECT_SLOTS`]).
pub const MAP_REDIRECT: &str = "REDIRECT_EGRESS";

/// Slots of the redirect baseline's DEVMAP.
pub const REDIRECT_SLOTS: u32 = 64;
/// Header bytes a template can rewrite.
pub const HDR: usize = 128;
/// Leading bytes of a frame the sink compares.
pub const CMP: usize = 64;
/// Trailer at the end of every generated frame: `MAGIC | flow` (u32 LE),
/// sequence (u32 LE), generator timestamp (u64 LE, `bpf_ktime_get_ns`).
pub const TRAILER: usize = 16;
/// Top byte of the trailer's first word.
pub const MAGIC: u32 = 0xfe00_0000;
/// Flow bits of the trailer's first word (flows are < 2^24).
pub const FLOW_MASK: u32 = 0x00ff_ffff;
/// Frame size classes (IMIX has three).
pub const CLASSES: usize = 4;
/// `mac_off` when no station MAC is patched.
pub const NO_MAC: u16 = 0xffff;
/// Largest frame the generator and sink handle.
pub const MAX_FRAME: usize = 2047;

/// The station MAC of flow `flow`: the scheme `ferry-bench control` fills
/// station tables with, so both benchmarks address the same stations.
pub const fn station_mac(flow: u32) -> [u8; 6] {
    let b = flow.to_be_bytes();
    [0x02, 0x5b, b[0], b[1], b[2], b[3]]
}

/// One frame's headers for one size class and key (AP).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug)]
pub struct GenTemplate {
    /// Bytes of `hdr` to write: a multiple of 8, at most [`HDR`] and at
    /// most the frame's length less the trailer.
    pub copy: u16,
    /// Where the station MAC goes, or [`NO_MAC`].
    pub mac_off: u16,
    /// Padding.
    pub pad: u32,
    /// The frame's first bytes.
    pub hdr: [u8; HDR],
}

/// Generator settings.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GenSettings {
    /// Flows (stations) to cycle through; flow `f` uses key `f % keys`.
    pub flows: u32,
    /// Templates per size class (APs).
    pub keys: u32,
    /// Frame length of each size class (0: unused).
    pub lens: [u16; CLASSES],
}

/// Generator state of one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GenState {
    /// Frames generated on this CPU (the next flow is `next % flows`).
    pub next: u64,
}

/// What the sink expects for one size class and key.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug)]
pub struct SinkExpect {
    /// Where the station MAC must be, or [`NO_MAC`].
    pub mac_off: u16,
    /// Padding.
    pub pad: [u16; 3],
    /// Expected first [`CMP`] bytes...
    pub bytes: [u8; CMP],
    /// ...where `mask` has bits set.
    pub mask: [u8; CMP],
}

/// Sink settings.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SinkSettings {
    /// Expectations per size class (flow `f` uses key `f % keys`).
    pub keys: u32,
    /// Padding.
    pub pad: u32,
    /// Frame length of each size class as it arrives (0: unused).
    pub lens: [u16; CLASSES],
}

/// Sink counters of one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Frames that matched.
    pub good: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Frames of no expected length.
    pub bad_size: u64,
    /// Frames without a generator trailer.
    pub bad_trailer: u64,
    /// Frames whose headers differ from the expectation.
    pub bad_header: u64,
    /// Frames with the wrong station MAC.
    pub bad_station: u64,
}

/// Sub-buckets per power of two in the latency histogram (2^5: a bucket
/// is at most 1/32 of its value wide, about 3%).
pub const LAT_SUB_BITS: u32 = 5;
/// Latency histogram buckets: exact below 32 ns, then 32 per power of two
/// up to 2^45 ns.
pub const LAT_BUCKETS: usize = 42 << LAT_SUB_BITS;

/// The histogram bucket of a latency of `ns`.
#[inline(always)]
pub const fn lat_bucket(ns: u64) -> usize {
    let sub = 1u64 << LAT_SUB_BITS;
    if ns < sub {
        return ns as usize;
    }
    let e = 63 - ns.leading_zeros();
    let s = (ns >> (e - LAT_SUB_BITS)) & (sub - 1);
    let i = (((e - LAT_SUB_BITS + 1) as u64) << LAT_SUB_BITS) + s;
    if i as usize >= LAT_BUCKETS {
        LAT_BUCKETS - 1
    } else {
        i as usize
    }
}

/// The smallest latency, ns, that falls in bucket `i`.
pub const fn lat_floor(i: usize) -> u64 {
    let sub = 1usize << LAT_SUB_BITS;
    if i < sub {
        return i as u64;
    }
    let e = (i >> LAT_SUB_BITS) as u32 + LAT_SUB_BITS - 1;
    ((sub + (i & (sub - 1))) as u64) << (e - LAT_SUB_BITS)
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data, repr(C), explicit padding, no invalid bit patterns.
    unsafe impl aya::Pod for super::GenTemplate {}
    unsafe impl aya::Pod for super::GenSettings {}
    unsafe impl aya::Pod for super::GenState {}
    unsafe impl aya::Pod for super::SinkExpect {}
    unsafe impl aya::Pod for super::SinkSettings {}
    unsafe impl aya::Pod for super::SinkStats {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_latency_falls_in_the_bucket_whose_floor_is_at_most_it() {
        let mut last = 0;
        for ns in (0..100_000u64).chain([1 << 20, (1 << 30) + 12_345, 1 << 44]) {
            let b = lat_bucket(ns);
            assert!(lat_floor(b) <= ns, "{ns} in {b} floor {}", lat_floor(b));
            assert!(lat_floor(b + 1) > ns, "{ns} below next floor");
            // Width at most 1/32 of the value past the exact range.
            if ns >= 32 {
                assert!((lat_floor(b + 1) - lat_floor(b)) * 32 <= ns);
            }
            assert!(b >= last || ns > 100_000);
            last = b;
        }
        assert_eq!(lat_bucket(u64::MAX), LAT_BUCKETS - 1);
    }
}

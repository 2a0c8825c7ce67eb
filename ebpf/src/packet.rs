//! Bounds-checked access to XDP packet memory, in the shape the verifier
//! accepts: every access is `data + offset + N <= data_end` checked right
//! before the load or store, with `offset` a bounded scalar.

use aya_ebpf::programs::XdpContext;

/// Packet bytes viewed with 8-byte alignment. `[u8; N]` alone has alignment
/// 1, and LLVM's BPF backend then copies it one byte at a time; claiming 8
/// lets it use word loads. Packet data is not actually aligned, which the
/// verifier accepts on architectures with efficient unaligned access
/// (x86-64, arm64), the only ones ferry targets.
#[repr(C, align(8))]
struct Wide<const N: usize>([u8; N]);

/// Copies `N` bytes at `off` out of the packet, or `None` past its end.
#[inline(always)]
pub fn load<const N: usize>(ctx: &XdpContext, off: usize) -> Option<[u8; N]> {
    // LLVM rewrites `p + 1 > end` as `p >= end`, from which the verifier
    // learns no range when `p` has a variable offset: never load one byte.
    const { assert!(N >= 2) };
    let start = ctx.data();
    if start + off + N > ctx.data_end() {
        return None;
    }
    // SAFETY: the range [start+off, start+off+N) was just checked to lie
    // inside the packet; [u8; N] has alignment 1.
    Some(unsafe { (*((start + off) as *const Wide<N>)).0 })
}

/// Writes `N` bytes at `off`, or returns `None` past the packet's end.
#[inline(always)]
pub fn store<const N: usize>(ctx: &XdpContext, off: usize, bytes: &[u8; N]) -> Option<()> {
    const { assert!(N >= 2) };
    let start = ctx.data();
    if start + off + N > ctx.data_end() {
        return None;
    }
    // SAFETY: as in `load`; the packet is writable in XDP.
    unsafe { (*((start + off) as *mut Wide<N>)).0 = *bytes };
    Some(())
}

/// Current packet length. Pointer minus pointer yields an unbounded scalar
/// for the verifier: use it for arithmetic, never as an offset.
#[inline(always)]
pub fn len(ctx: &XdpContext) -> usize {
    ctx.data_end() - ctx.data()
}

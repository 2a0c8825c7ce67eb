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
    // inside the packet, which is claimed 8-aligned (see `Wide`).
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

/// Copies `N` bytes at `off` into `out`, a word at a time, or returns
/// `None` past the packet's end. An out-parameter, not a return value: an
/// `Option<[u8; N]>` is split into single bytes by LLVM.
#[inline(always)]
pub fn load_aligned<const N: usize>(
    ctx: &XdpContext,
    off: usize,
    out: &mut ferry_ebpf::encap::Aligned<N>,
) -> Option<()> {
    const { assert!(N >= 2) };
    let start = ctx.data();
    if start + off + N > ctx.data_end() {
        return None;
    }
    // SAFETY: as in `store_aligned`, in the other direction.
    out.0 = unsafe { (*((start + off) as *const Wide<N>)).0 };
    Some(())
}

/// Writes the `N` bytes of `bytes` at `off`, a word at a time (the source
/// is 8-aligned), or returns `None` past the packet's end.
#[inline(always)]
pub fn store_aligned<const N: usize>(
    ctx: &XdpContext,
    off: usize,
    bytes: &ferry_ebpf::encap::Aligned<N>,
) -> Option<()> {
    const { assert!(N >= 2) };
    let start = ctx.data();
    if start + off + N > ctx.data_end() {
        return None;
    }
    // SAFETY: as in `store`. Only the N-byte fields are copied (the
    // structs round up to whole words): the source 8-aligned, the packet
    // claimed so (see `Wide`), so LLVM copies word by word.
    unsafe { (*((start + off) as *mut Wide<N>)).0 = bytes.0 };
    Some(())
}

/// Current packet length. Pointer minus pointer yields an unbounded scalar
/// for the verifier: use it for arithmetic, never as an offset. The
/// subtraction is done in assembly: LLVM would otherwise fold the
/// constants of later arithmetic into `data_end` (`data_end - 4 - data`),
/// and the verifier refuses arithmetic on the end pointer.
#[inline(always)]
pub fn len(ctx: &XdpContext) -> usize {
    let mut end = ctx.data_end() as u64;
    let start = ctx.data() as u64;
    // SAFETY: one ALU instruction on registers we own.
    unsafe { core::arch::asm!("{0} -= {1}", inout(reg) end, in(reg) start) };
    end as usize
}

//! Copying payload words sixteen bytes at a time, on x86_64 processors
//! where a 16-byte aligned SSE access is atomic.
//!
//! A reader may copy a slot while its publisher overwrites it (a lapped
//! subscriber, an observer): every access to payload words must then be
//! atomic, or the race is undefined behaviour. Relaxed `AtomicU64` loads
//! and stores are, but the compiler cannot turn them into vector moves,
//! so they copy at about half of `memcpy`'s rate. Processors that
//! enumerate AVX guarantee that a 16-byte memory access by `MOVDQA` (and
//! the other aligned 16-byte moves) to a 16-byte aligned address is
//! carried out atomically (Intel SDM vol. 3A, 10.1.1 "Guaranteed Atomic
//! Operations", which lists `VMOVDQA` with a VEX.128 encoding beside
//! `MOVDQA`; AMD APM vol. 2, 7.3.2 "Access Atomicity"). The VEX forms are
//! used (AVX is required anyway): legacy SSE moves after AVX code that left
//! the upper halves of the YMM registers dirty pay a transition penalty
//! on Intel processors. The loops below make only such accesses to shared
//! words, each one atomic and
//! covering two whole words, so to the Rust memory model they are relaxed
//! atomic accesses to those words, as the `AtomicU64` loops are: a racing
//! reader sees each word old or new, never a torn word, and the seqlock
//! stamps around the copy tell it whether to keep it. The private side
//! (the caller's buffer) is moved with unaligned `VMOVDQU`.
//!
//! `asm!` blocks without `nomem` are opaque memory operations to the
//! compiler: it keeps them between the stamp accesses and fences around
//! them, as it keeps atomic accesses; on x86_64 the stores become visible
//! in program order (no non-temporal stores are used).
//!
//! Not built under loom (the model checks the word loops in `mod.rs`).

use crate::sync::AtomicU64;

/// Bytes per iteration: a cache line.
const LINE: usize = 64;

/// Whether aligned 16-byte accesses are atomic here (the processor
/// enumerates AVX). Cached by the standard library after the first call.
#[inline]
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx")
}

/// The copy loop, a cache line per iteration: `$load` moves 16 bytes from
/// `[src]` into a register, `$store` from a register to `[dst]`; the
/// callers pick which side is aligned (the segment's) and which not.
/// Expands to an `asm!` block; the caller's `unsafe` block and SAFETY
/// comment cover it.
macro_rules! copy_lines {
    ($load:literal, $store:literal, $src:expr, $dst:expr, $lines:expr) => {
        core::arch::asm!(
            "2:",
            concat!($load, " {a}, xmmword ptr [{src}]"),
            concat!($load, " {b}, xmmword ptr [{src} + 16]"),
            concat!($load, " {c}, xmmword ptr [{src} + 32]"),
            concat!($load, " {d}, xmmword ptr [{src} + 48]"),
            concat!($store, " xmmword ptr [{dst}], {a}"),
            concat!($store, " xmmword ptr [{dst} + 16], {b}"),
            concat!($store, " xmmword ptr [{dst} + 32], {c}"),
            concat!($store, " xmmword ptr [{dst} + 48], {d}"),
            "add {src}, 64",
            "add {dst}, 64",
            "dec {n}",
            "jnz 2b",
            src = inout(reg) $src => _,
            dst = inout(reg) $dst => _,
            n = inout(reg) $lines => _,
            a = out(xmm_reg) _,
            b = out(xmm_reg) _,
            c = out(xmm_reg) _,
            d = out(xmm_reg) _,
            options(nostack),
        )
    };
}

/// Stores `lines * 64` bytes from `src` into the words at `dst`.
///
/// # Safety
///
/// [`available`] returned true; `dst` is 16-byte aligned and the start of
/// `lines * 8` words that live for the call; `src` is valid for reads of
/// `lines * 64` bytes and does not overlap them; `lines > 0`.
#[inline]
pub unsafe fn store_lines(dst: &[AtomicU64], src: *const u8, lines: usize) {
    debug_assert!(lines > 0 && dst.len() >= lines * LINE / 8);
    debug_assert_eq!(dst.as_ptr() as usize % 16, 0);
    // SAFETY: the caller's contract: every store is an aligned 16-byte
    // VMOVDQA inside `dst` (atomic, see the module docs: the words are
    // atomics, written through their shared reference as `AtomicU64::store`
    // would), every load a VMOVDQU inside `src`. The loop runs `lines > 0`
    // times; it touches no stack and restores no flags.
    unsafe { copy_lines!("vmovdqu", "vmovdqa", src, dst.as_ptr(), lines) }
}

/// Loads `lines * 64` bytes from the words at `src` into `dst`.
///
/// # Safety
///
/// [`available`] returned true; `src` is 16-byte aligned and the start of
/// `lines * 8` words that live for the call; `dst` is valid for writes of
/// `lines * 64` bytes and does not overlap them; `lines > 0`.
#[inline]
pub unsafe fn load_lines(src: &[AtomicU64], dst: *mut u8, lines: usize) {
    debug_assert!(lines > 0 && src.len() >= lines * LINE / 8);
    debug_assert_eq!(src.as_ptr() as usize % 16, 0);
    // SAFETY: the caller's contract: every load of shared words is an
    // aligned 16-byte VMOVDQA (atomic: see the module docs), every store a
    // VMOVDQU inside `dst`, which nothing else references. The loop runs
    // `lines > 0` times; it touches no stack.
    unsafe { copy_lines!("vmovdqa", "vmovdqu", src.as_ptr(), dst, lines) }
}

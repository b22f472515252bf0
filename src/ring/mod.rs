//! The lock-free algorithms of shmbus, over plain memory.
//!
//! Nothing here knows about files, mappings, processes or system calls: each
//! algorithm works on atomics handed to it (from [`crate::sync`]), so the bus
//! runs it on a shared segment and `loom-tests/` runs it on the heap under the
//! model checker. Questions only the OS can answer (is this process alive?)
//! come in as closures.

pub mod any;
pub mod broadcast;
pub mod directory;
pub mod gate;
pub mod lease;
pub mod owner;
pub mod queue;
pub mod varlen;
pub mod waiting;
#[cfg(all(target_arch = "x86_64", not(shmbus_loom)))]
mod wide;

pub use lease::{Lease, LeaseError};
pub use owner::{Liveness, Owner};

use crate::sync::{AtomicU64, Ordering};

/// Size of a cache line on the machines we target. Shared structs pad to it
/// themselves; `crossbeam_utils::CachePadded` varies by target and must not
/// appear in the shared layout.
pub const CACHE_LINE: usize = 64;

/// Words of a slot before its payload: a sequence stamp and a length.
pub(crate) const SLOT_HEADER_WORDS: usize = 2;
/// Bytes of a slot's header (stamp and length), before its payload.
pub(crate) const SLOT_HEADER_BYTES: usize = SLOT_HEADER_WORDS * WORD;
pub(crate) const WORD: usize = 8;
/// Words per cache line.
pub(crate) const LINE_WORDS: usize = CACHE_LINE / WORD;

/// Lines past the first that [`prefetch_lines`] asks for: a span longer
/// than this gets no hint. Measured (busy-poll ping-pong, 2 vCPUs,
/// 2026-12-07, three or four runs of each build alternated): 256-byte
/// messages took 1.93x the raw cache line with hints for up to 7 lines,
/// 2.73-2.81x with hints for up to 3, 2.8-3.0x with none; hinting
/// 512-byte messages (9 lines) cost
/// their 1-to-1 lossless throughput about 12% (27.4 -> 24.0 M msg/s,
/// medians of five runs) for 490 -> 430 ns in ping-pong: from there on
/// a copy streams, and the hardware's own prefetchers follow it.
#[cfg(all(target_arch = "x86_64", not(shmbus_loom)))]
const PREFETCH_LINES: usize = 7;

/// Asks the cache for the lines that the first `bytes` of `slot` occupy
/// past the line the slot starts in, if they are at most
/// [`PREFETCH_LINES`]: with `WRITE`, for ownership (`prefetchw`), as a
/// writer about to store into them; else to read (`prefetcht0`). A hint,
/// so that a slot's lines travel between cores together rather than one
/// after another; it reads and writes nothing. Nothing on other targets,
/// under loom, and for `WRITE` on a processor without `prefetchw`. (The
/// asm is marked `readonly`, not `nomem`, on purpose: the compiler must
/// take it for a memory read, so that it keeps the hint before the slot
/// stores that follow it and after the stamp load that precedes it.)
#[inline(always)]
pub(crate) fn prefetch_lines<const WRITE: bool>(slot: &[crate::sync::AtomicU64], bytes: usize) {
    #[cfg(all(target_arch = "x86_64", not(shmbus_loom)))]
    {
        let start = slot.as_ptr().cast::<u8>();
        let bytes = bytes.min(core::mem::size_of_val(slot));
        // From the line after the one the slot starts in.
        let mut at = CACHE_LINE - (start as usize % CACHE_LINE);
        // Most messages end in their first line: nothing to ask, and no
        // need to look whether the processor could.
        if bytes <= at
            || bytes > at + PREFETCH_LINES * CACHE_LINE
            || (WRITE && !has_prefetchw())
        {
            return;
        }
        while at < bytes {
            let line = start.wrapping_add(at);
            // SAFETY: a prefetch only hints the cache: it reads and writes
            // no memory, faults on no address (this one is inside `slot`
            // anyway: `at < bytes`), touches no flag and no register but
            // its operand; `prefetchw` runs only where the processor says
            // it has it (`has_prefetchw`).
            unsafe {
                if WRITE {
                    core::arch::asm!(
                        "prefetchw [{0}]",
                        in(reg) line,
                        options(nostack, preserves_flags, readonly)
                    );
                } else {
                    core::arch::asm!(
                        "prefetcht0 [{0}]",
                        in(reg) line,
                        options(nostack, preserves_flags, readonly)
                    );
                }
            }
            at += CACHE_LINE;
        }
    }
    #[cfg(not(all(target_arch = "x86_64", not(shmbus_loom))))]
    let _ = (slot, bytes);
}

/// Whether this processor says it has `prefetchw` (CPUID leaf 0x8000_0001,
/// ECX bit 8: Intel processors since Broadwell, AMD ones since the
/// family 10h; early 64-bit AMD parts have the instruction without the bit
/// and get no hint, which is only conservative), asked once per process.
/// (Where it lacks it, the instruction may fault: Linux itself falls back
/// to a read prefetch there.)
#[cfg(all(target_arch = "x86_64", not(shmbus_loom)))]
#[inline(always)]
fn has_prefetchw() -> bool {
    use core::sync::atomic::{AtomicU8, Ordering};
    /// 0: not asked yet; 1: has it; 2: has not.
    static KNOWN: AtomicU8 = AtomicU8::new(0);
    #[cold]
    fn ask() -> bool {
        use core::arch::x86_64::__cpuid;
        // `__cpuid` is a safe function in recent Rust and an unsafe one in
        // older releases that the crate still builds with (`rust-version`).
        #[allow(unused_unsafe)]
        // SAFETY: every x86-64 processor has CPUID, and the extended leaf
        // is asked for only after leaf 0x8000_0000 says it exists.
        let has = unsafe {
            __cpuid(0x8000_0000).eax >= 0x8000_0001
                && __cpuid(0x8000_0001).ecx & (1 << 8) != 0
        };
        KNOWN.store(if has { 1 } else { 2 }, Ordering::Relaxed);
        has
    }
    match KNOWN.load(Ordering::Relaxed) {
        0 => ask(),
        known => known == 1,
    }
}

/// Words per slot: stamp, length, payload rounded up to whole words, and the
/// whole rounded up to a cache line so neighbouring slots never share one.
#[inline]
pub const fn stride_words(slot_bytes: usize) -> usize {
    let words = SLOT_HEADER_WORDS + slot_bytes.div_ceil(WORD);
    words.next_multiple_of(CACHE_LINE / WORD)
}

/// Words of slot storage for `capacity` slots, or `None` on overflow.
pub fn slots_words(capacity: usize, slot_bytes: usize) -> Option<usize> {
    capacity.checked_mul(stride_words(slot_bytes))
}

/// Slot sizes up to this take whole cache lines in a broadcast ring
/// ([`packed_stride_words`]).
pub const WHOLE_LINES_UP_TO: usize = 128;

/// Slots whose stamp, length and payload fit in half a cache line (slots
/// of up to this many bytes) take half a line each, two to a line
/// ([`packed_stride_words`]).
pub const HALF_LINE_UP_TO: usize = CACHE_LINE / 2 - SLOT_HEADER_BYTES;

/// Words per slot of a broadcast ring: stamp, length and payload rounded
/// up to half a cache line for slots of up to [`HALF_LINE_UP_TO`] bytes
/// (two to a line, never across one), to whole cache lines for slots of up
/// to [`WHOLE_LINES_UP_TO`] bytes, and to 16 bytes only above that.
///
/// Half lines, measured against whole lines (`shmbus bench --pin --only
/// pingpong-spin --only throughput-1to1 --size 8 --rounds 2`, 2 vCPUs,
/// 2026-12-07, four runs of each build alternated, in two batches where
/// the cores stayed near): 8-byte 1-to-1 streams 4-9% faster in every row
/// (lossless 51.4 -> 54.8 M msg/s, overwrite 52.0 -> 54.3, by loan 55.1 ->
/// 58.0 and 55.9 -> 58.2) and the 8-byte ping-pong 90 -> 80 ns. A message
/// and the next share a line, which the publisher writes twice as often
/// and the subscriber fetches half as often.
///
/// Measured both ways (`shmbus bench --pin --only throughput-1to1`, 2
/// vCPUs, 2026-12-06, the two builds alternated twice): with 16-byte
/// packing a 64-byte message took 80 bytes, and its slot's last line held
/// the next slot's stamp, which the subscriber polls while the publisher
/// writes it; whole lines moved 64-byte messages 25% faster (25.3 against
/// 20.2 M msg/s) and 128-byte ones 15-25% faster, and the 64-byte
/// ping-pong fell from 105 to 95 ns. From 256 bytes up packing won (512
/// bytes: 10.3 against 8.4 M msg/s whole-lined), the shared line being a
/// small part of each slot. Neighbouring slots may share a line above the
/// threshold; each keeps its own stamp, so that costs a transfer, never a
/// torn read.
#[inline]
pub const fn packed_stride_words(slot_bytes: usize) -> usize {
    let words = SLOT_HEADER_WORDS + slot_bytes.div_ceil(WORD);
    if slot_bytes <= HALF_LINE_UP_TO {
        LINE_WORDS / 2
    } else if slot_bytes <= WHOLE_LINES_UP_TO {
        words.next_multiple_of(LINE_WORDS)
    } else {
        words.next_multiple_of(2)
    }
}

/// Words of broadcast slot storage for `capacity` slots, or `None` on
/// overflow.
pub fn packed_slots_words(capacity: usize, slot_bytes: usize) -> Option<usize> {
    capacity.checked_mul(packed_stride_words(slot_bytes))
}

/// Stores `bytes` into `words` with relaxed atomic stores, eight bytes at a
/// time, zero-padding the last word. Atomic, so that a reader racing the
/// write (a seqlock reader) copies garbage it will discard, not a data race.
#[inline(always)]
pub(crate) fn store_bytes(words: &[AtomicU64], bytes: &[u8]) {
    if bytes.len() < SMALL_BELOW {
        store_small(words, bytes);
    } else {
        store_large(words, bytes);
    }
}

/// Messages shorter than this take [`store_small`] and [`load_small`]: a
/// word loop, inlined, with no call and no `memcpy` for the last bytes.
/// Measured with callgrind, one `send_bytes` and one `recv_bytes` of 48
/// bytes in one process: 247 instructions with the general loops (69 in
/// the copy out alone, a call with its prologue, the line loop's set-up
/// and a `memcpy` for the tail), 238 with these (with the other trims of
/// that change, 215).
const SMALL_BELOW: usize = 2 * CACHE_LINE;

/// [`store_bytes`] of fewer than [`SMALL_BELOW`] bytes. The last partial
/// word is built from the last eight bytes of `bytes` (shifted: the
/// bytes before it are the previous word's) instead of a copy into a
/// zeroed buffer.
#[inline(always)]
fn store_small(words: &[AtomicU64], bytes: &[u8]) {
    let whole = bytes.len() / WORD;
    let (mut dst, mut src) = (&words[..whole], &bytes[..whole * WORD]);
    store_run::<8, 64>(&mut dst, &mut src);
    store_run::<4, 32>(&mut dst, &mut src);
    store_run::<2, 16>(&mut dst, &mut src);
    store_run::<1, 8>(&mut dst, &mut src);
    debug_assert!(dst.is_empty(), "fewer than 16 words");
    let rest = bytes.len() % WORD;
    if rest != 0 {
        let last = if bytes.len() >= WORD {
            let tail: [u8; WORD] = bytes[bytes.len() - WORD..].try_into().expect("8 bytes");
            // The first `WORD - rest` of these eight bytes are in the word
            // before: shift them out (zero-padding the top, little-endian).
            u64::from_le_bytes(tail) >> ((WORD - rest) * 8)
        } else {
            let mut tail = [0u8; WORD];
            for (t, b) in tail.iter_mut().zip(bytes) {
                *t = *b;
            }
            u64::from_le_bytes(tail)
        };
        words[whole].store(u64::from_le(last), Ordering::Relaxed);
    }
}

/// One step of the short copies: stores the first `N` words of `bytes`
/// (`B` = `N * 8` bytes) into the first `N` of `words`, if both hold that
/// many, and moves both past them. The short copies take 8, 4, 2, then 1
/// words: every count below 16 in at most four steps, straight-line.
/// A loop of unknown count compiled to a loop unrolled four times, a loop
/// for the rest, and the set-up of both: callgrind, one `send_bytes` on a
/// topic in one process, 5 instructions fewer per send at 48 and at 64
/// bytes, overwrite and lossless alike (2026-12, issue 10). The loads
/// keep their loop: the same steps there came out from 6 fewer to 14
/// more per receive, by how each caller was compiled.
#[inline(always)]
fn store_run<const N: usize, const B: usize>(words: &mut &[AtomicU64], bytes: &mut &[u8]) {
    debug_assert_eq!(N * WORD, B);
    if let (Some((dst, dst_rest)), Some((src, src_rest))) =
        (words.split_first_chunk::<N>(), bytes.split_first_chunk::<B>())
    {
        for (i, dst) in dst.iter().enumerate() {
            let value = u64::from_ne_bytes(src[i * WORD..][..WORD].try_into().expect("8 bytes"));
            dst.store(value, Ordering::Relaxed);
        }
        *words = dst_rest;
        *bytes = src_rest;
    }
}

/// [`store_bytes`] of [`SMALL_BELOW`] bytes or more.
#[inline(never)]
fn store_large(words: &[AtomicU64], bytes: &[u8]) {
    let whole = bytes.len() / WORD * WORD;
    store_words(words, &bytes[..whole]);
    let tail = &bytes[whole..];
    if !tail.is_empty() {
        let mut last = [0u8; WORD];
        last[..tail.len()].copy_from_slice(tail);
        words[whole / WORD].store(u64::from_ne_bytes(last), Ordering::Relaxed);
    }
}

/// Stores `bytes`, a whole number of words, into the first words of
/// `words`, a cache line (eight stores) per iteration. Unrolled by hand:
/// a plain word-at-a-time loop ran at 2.6 or 4.6 us per 64 KiB depending on
/// how unrelated code split the crate into codegen units (criterion,
/// `cargo bench --bench inprocess -- publish-64KiB`); this one does not move.
///
/// Where aligned 16-byte moves are atomic ([`wide`]), whole cache lines
/// go sixteen bytes a move instead (after one word, if `words` starts
/// between two 16-byte boundaries).
#[inline(always)]
fn store_words(words: &[AtomicU64], bytes: &[u8]) {
    debug_assert_eq!(bytes.len() % WORD, 0);
    let count = bytes.len() / WORD;
    let words = &words[..count];
    #[cfg(all(target_arch = "x86_64", not(shmbus_loom)))]
    let (words, bytes) = store_wide(words, bytes);
    let mut lines = bytes.chunks_exact(CACHE_LINE);
    let mut line_words = words.chunks_exact(LINE_WORDS);
    for (dst, src) in (&mut line_words).zip(&mut lines) {
        for i in 0..LINE_WORDS {
            let value = u64::from_ne_bytes(src[i * WORD..][..WORD].try_into().expect("8 bytes"));
            dst[i].store(value, Ordering::Relaxed);
        }
    }
    let rest = lines.remainder();
    for (dst, src) in line_words.remainder().iter().zip(rest.chunks_exact(WORD)) {
        dst.store(
            u64::from_ne_bytes(src.try_into().expect("8 bytes")),
            Ordering::Relaxed,
        );
    }
}

/// Stores `bytes` into `words` at byte `offset`, with relaxed atomic
/// stores, keeping the other bytes of the words it shares with them (a
/// load, a merge and a store: only for words that no one else writes).
/// The caller keeps `offset + bytes.len()` within `words`.
pub fn store_bytes_at(words: &[AtomicU64], offset: usize, bytes: &[u8]) {
    /// Merges `part` into the word at byte `skip` of word `index`.
    fn merge(words: &[AtomicU64], index: usize, skip: usize, part: &[u8]) {
        let mut merged = words[index].load(Ordering::Relaxed).to_ne_bytes();
        merged[skip..skip + part.len()].copy_from_slice(part);
        words[index].store(u64::from_ne_bytes(merged), Ordering::Relaxed);
    }
    let mut rest = bytes;
    let mut index = offset / WORD;
    let skip = offset % WORD;
    if skip != 0 {
        let take = (WORD - skip).min(rest.len());
        merge(words, index, skip, &rest[..take]);
        rest = &rest[take..];
        index += 1;
    }
    let whole = rest.len() / WORD * WORD;
    store_words(&words[index..], &rest[..whole]);
    let tail = &rest[whole..];
    if !tail.is_empty() {
        merge(words, index + whole / WORD, 0, tail);
    }
}

/// Loads `out.len()` bytes from `words` with relaxed atomic loads.
#[inline(always)]
pub(crate) fn load_bytes(words: &[AtomicU64], out: &mut [u8]) {
    if out.len() < SMALL_BELOW {
        load_small(words, out);
    } else {
        load_large(words, out);
    }
}

/// [`load_bytes`] of fewer than [`SMALL_BELOW`] bytes. The last partial
/// word goes out as the message's last eight bytes, put together from the
/// last two words (overwriting bytes the loop already wrote, with the same
/// values), instead of a `memcpy` of the few bytes left.
#[inline(always)]
fn load_small(words: &[AtomicU64], out: &mut [u8]) {
    let len = out.len();
    let whole = len / WORD;
    let rest = len % WORD;
    let mut prev = 0u64;
    for (src, dst) in words[..whole].iter().zip(out.chunks_exact_mut(WORD)) {
        prev = src.load(Ordering::Relaxed);
        dst.copy_from_slice(&prev.to_ne_bytes());
    }
    if rest == 0 {
        return;
    }
    let last = words[whole].load(Ordering::Relaxed).to_le();
    if whole == 0 {
        for (i, b) in out.iter_mut().enumerate() {
            *b = (last >> (i * 8)) as u8;
        }
        return;
    }
    // The message's last eight bytes: the top `WORD - rest` bytes of the
    // word before, then the first `rest` bytes of the last word.
    let prev = prev.to_le();
    let joined = (prev >> (rest * 8)) | (last << ((WORD - rest) * 8));
    out[len - WORD..].copy_from_slice(&joined.to_le_bytes());
}

/// [`load_bytes`] of [`SMALL_BELOW`] bytes or more.
#[inline(never)]
fn load_large(words: &[AtomicU64], out: &mut [u8]) {
    let whole = out.len() / WORD * WORD;
    let (head, tail) = out.split_at_mut(whole);
    load_words(words, head);
    if !tail.is_empty() {
        let last = words[whole / WORD].load(Ordering::Relaxed).to_ne_bytes();
        tail.copy_from_slice(&last[..tail.len()]);
    }
}

/// Loads the first words of `words` into `out`, a whole number of words,
/// a cache line per iteration: unrolled by hand as [`store_words`] is.
#[inline(always)]
fn load_words(words: &[AtomicU64], out: &mut [u8]) {
    debug_assert_eq!(out.len() % WORD, 0);
    let words = &words[..out.len() / WORD];
    #[cfg(all(target_arch = "x86_64", not(shmbus_loom)))]
    let (words, out) = load_wide(words, out);
    let mut lines = out.chunks_exact_mut(CACHE_LINE);
    let mut line_words = words.chunks_exact(LINE_WORDS);
    for (src, dst) in (&mut line_words).zip(&mut lines) {
        for i in 0..LINE_WORDS {
            dst[i * WORD..][..WORD].copy_from_slice(&src[i].load(Ordering::Relaxed).to_ne_bytes());
        }
    }
    let rest = lines.into_remainder();
    for (src, dst) in line_words.remainder().iter().zip(rest.chunks_exact_mut(WORD)) {
        dst.copy_from_slice(&src.load(Ordering::Relaxed).to_ne_bytes());
    }
}

/// Messages shorter than this are copied word by word: the feature check
/// and the alignment step would cost more than the moves save.
#[cfg(all(target_arch = "x86_64", not(shmbus_loom)))]
const WIDE_FROM: usize = 2 * CACHE_LINE;

/// [`store_words`]' wide path: stores the whole lines of `bytes` into
/// `words` with [`wide::store_lines`] where it can. Returns what is left
/// for the word loop (less than a line; nothing if `bytes` was whole lines).
#[cfg(all(target_arch = "x86_64", not(shmbus_loom)))]
#[inline(always)]
fn store_wide<'w, 'b>(words: &'w [AtomicU64], bytes: &'b [u8]) -> (&'w [AtomicU64], &'b [u8]) {
    if bytes.len() < WIDE_FROM || !wide::available() {
        return (words, bytes);
    }
    let (words, bytes) = if words.as_ptr() as usize % 16 != 0 {
        // Words are 8-byte aligned: one word reaches a 16-byte boundary.
        let value = u64::from_ne_bytes(bytes[..WORD].try_into().expect("8 bytes"));
        words[0].store(value, Ordering::Relaxed);
        (&words[1..], &bytes[WORD..])
    } else {
        (words, bytes)
    };
    let lines = bytes.len() / CACHE_LINE;
    // SAFETY: `wide::available()` held; `words` is 16-byte aligned (just
    // checked or made so) and holds `bytes.len() / 8 >= lines * 8` words
    // (`store_words` sliced it to `bytes`' length); `bytes` holds `lines *
    // 64` bytes, and is the caller's own memory, not the segment's words;
    // `lines >= 1` since `bytes` had at least two lines before at most one
    // word was taken.
    unsafe { wide::store_lines(words, bytes.as_ptr(), lines) };
    let done = lines * CACHE_LINE;
    (&words[done / WORD..], &bytes[done..])
}

/// [`load_words`]' wide path, as [`store_wide`].
#[cfg(all(target_arch = "x86_64", not(shmbus_loom)))]
#[inline(always)]
fn load_wide<'w, 'o>(
    words: &'w [AtomicU64],
    out: &'o mut [u8],
) -> (&'w [AtomicU64], &'o mut [u8]) {
    if out.len() < WIDE_FROM || !wide::available() {
        return (words, out);
    }
    let (words, out) = if words.as_ptr() as usize % 16 != 0 {
        out[..WORD].copy_from_slice(&words[0].load(Ordering::Relaxed).to_ne_bytes());
        (&words[1..], &mut out[WORD..])
    } else {
        (words, out)
    };
    let lines = out.len() / CACHE_LINE;
    // SAFETY: as in `store_wide`: `words` 16-byte aligned, holding at
    // least `lines * 8` words; `out` valid for `lines * 64` bytes, a
    // buffer of the caller's, not the segment's; `lines >= 1`.
    unsafe { wide::load_lines(words, out.as_mut_ptr(), lines) };
    let done = lines * CACHE_LINE;
    (&words[done / WORD..], &mut out[done..])
}

#[cfg(all(test, not(shmbus_loom)))]
mod tests {
    use super::*;

    /// Slot strides by size, and no slot of up to a line across one.
    #[test]
    fn broadcast_slots_never_straddle_a_line_up_to_a_whole_one() {
        // Up to 16 bytes: half a line, two slots to a line; up to 48:
        // one line; up to 128: whole lines; above: packed to 16 bytes.
        for slot_bytes in 0..=512usize {
            let stride = packed_stride_words(slot_bytes) * WORD;
            let needed = SLOT_HEADER_BYTES + slot_bytes.next_multiple_of(WORD);
            assert!(stride >= needed, "{slot_bytes}: {stride} < {needed}");
            if slot_bytes <= HALF_LINE_UP_TO {
                assert_eq!(stride, CACHE_LINE / 2, "{slot_bytes}");
            } else if slot_bytes <= WHOLE_LINES_UP_TO {
                assert_eq!(stride % CACHE_LINE, 0, "{slot_bytes}");
            } else {
                assert_eq!(stride % 16, 0, "{slot_bytes}");
            }
            if needed <= CACHE_LINE {
                // From a line-aligned ring start, no slot crosses a line.
                for k in 0..8 {
                    let at = k * stride;
                    assert_eq!(at / CACHE_LINE, (at + needed - 1) / CACHE_LINE, "{slot_bytes}");
                }
            }
        }
    }

    /// Writes at every offset and length keep the bytes around them.
    #[test]
    fn stores_at_any_offset_keep_their_neighbours() {
        for offset in 0..20 {
            for len in 0..20 {
                let words: Vec<AtomicU64> = (0..6).map(|_| AtomicU64::new(u64::MAX)).collect();
                let bytes: Vec<u8> = (0..len as u8).collect();
                store_bytes_at(&words, offset, &bytes);
                let mut out = [0u8; 48];
                load_bytes(&words, &mut out);
                for (i, b) in out.iter().enumerate() {
                    let want = if (offset..offset + len).contains(&i) {
                        (i - offset) as u8
                    } else {
                        0xff
                    };
                    assert_eq!(*b, want, "offset {offset} len {len} byte {i}");
                }
            }
        }
    }

    /// The short path (under `SMALL_BELOW`) pads the last word with zeros,
    /// as the long one does, and reads a message back at every length
    /// whatever the bytes around it hold.
    #[test]
    fn short_copies_zero_pad_the_last_word_and_round_trip() {
        for len in 0..SMALL_BELOW + 9 {
            let words: Vec<AtomicU64> = (0..SMALL_BELOW / WORD + 4)
                .map(|_| AtomicU64::new(u64::MAX))
                .collect();
            let bytes: Vec<u8> = (0..len).map(|i| 0x80 | (i * 13) as u8).collect();
            store_bytes(&words, &bytes);
            if len % WORD != 0 {
                let last = words[len / WORD].load(Ordering::Relaxed).to_ne_bytes();
                assert!(last[len % WORD..].iter().all(|&b| b == 0), "len {len}: {last:?}");
            }
            let mut out = vec![0x11u8; len];
            load_bytes(&words, &mut out);
            assert_eq!(out, bytes, "len {len}");
        }
    }

    /// Every length around the wide path's lines and both alignments of
    /// the words round-trip, and no word past the message is touched.
    #[test]
    fn long_copies_round_trip_at_every_length_and_alignment() {
        for skew in 0..2 {
            for len in (0..600).chain([4096, 4096 + 8, 65_536 - 8]) {
                let words: Vec<AtomicU64> = (0..len / WORD + 4)
                    .map(|_| AtomicU64::new(u64::MAX))
                    .collect();
                let words = &words[skew..];
                let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
                store_bytes(words, &bytes);
                let mut out = vec![0u8; len];
                load_bytes(words, &mut out);
                assert_eq!(out, bytes, "len {len} skew {skew}");
                let past = len.div_ceil(WORD);
                for (i, word) in words[past..].iter().enumerate() {
                    assert_eq!(word.load(Ordering::Relaxed), u64::MAX, "len {len} skew {skew} word {i} past");
                }
                // At an offset, into a second buffer of the same shape.
                let mut again = vec![0u8; len];
                store_bytes_at(words, 0, &bytes);
                load_bytes(words, &mut again);
                assert_eq!(again, bytes, "store_bytes_at, len {len} skew {skew}");
            }
        }
    }
}


//! Raw rings in shared memory, the physical limits that shmbus's fanout
//! and work-queue rows are ratios of: an SPMC broadcast ring (one writer,
//! any number of readers, a sequence word and the payload per slot, no
//! lease, no gating, no wakeups) and a Vyukov MPMC queue (whose full and
//! empty waits spin, then yield: see [`Idle`]). Like shmbus, they
//! copy the whole message word by word through atomics, and every message
//! carries its sequence number and a checksum that the readers verify.

use std::sync::atomic::{fence, AtomicU64, Ordering};

use crate::peer::now_ns;
use crate::raw::SharedMem;

/// Slots of both rings for `size`-byte messages (shmbus's bench topics
/// have as many): 4096, fewer for large messages, so that a ring stays
/// near 32 MiB ([`crate::raw::ring_slots`]).
pub fn slots(size: usize) -> usize {
    crate::raw::ring_slots(size)
}

/// The check word of message `tag`.
pub fn checksum(tag: u64) -> u64 {
    tag.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5a5a_5a5a_5a5a_5a5a
}

/// Word `w` of the `words`-word message `tag`: the tag first, the check
/// word last (for messages of two words or more), a fill pattern between.
pub fn word(tag: u64, w: usize, words: usize) -> u64 {
    match w {
        0 => tag,
        _ if w + 1 == words => checksum(tag),
        _ => 0x5a5a_5a5a_5a5a_5a5a,
    }
}

/// The tag of a raw FIFO work queue's end mark (see
/// `bench::queue::RawFifoQueue`): no producer's (their tags are
/// `id << 40 | n`).
pub const END: u64 = u64::MAX;

/// Writes message `tag` into `buf` (at least 8 bytes): see [`word`].
pub fn fill(buf: &mut [u8], tag: u64) {
    let words = buf.len() / 8;
    for (w, chunk) in buf.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&word(tag, w, words).to_ne_bytes());
    }
}

/// Turns `buf`, holding a message written by [`fill`], into message
/// `tag`: only its first and last words depend on the tag, so only they
/// are written. A sender that stamps each message costs two stores to
/// make it, as the raw rings' senders (which copy one constant message,
/// or compute each word as they store it) pay nothing extra either: a
/// whole `fill` per message made shmbus's senders pass over every 64 KiB
/// message twice.
pub fn stamp(buf: &mut [u8], tag: u64) {
    let words = buf.len() / 8;
    if words >= 1 {
        buf[..8].copy_from_slice(&word(tag, 0, words).to_ne_bytes());
    }
    if words >= 2 {
        let last = (words - 1) * 8;
        buf[last..last + 8].copy_from_slice(&word(tag, words - 1, words).to_ne_bytes());
    }
}

/// The tag of a message written by [`fill`], if it is whole.
pub fn check(buf: &[u8]) -> Option<u64> {
    let words = buf.len() / 8;
    let at = |w: usize| u64::from_ne_bytes(buf[w * 8..w * 8 + 8].try_into().expect("8 bytes"));
    let tag = at(0);
    (words < 2 || at(words - 1) == checksum(tag)).then_some(tag)
}

/// What a reader of a ring saw.
#[derive(Debug, Default)]
pub struct Received {
    pub received: u64,
    /// Lapped by the writer (SPMC only): messages it never saw.
    pub lagged: u64,
    /// Messages whose sequence or checksum was wrong.
    pub bad: u64,
    pub first_ns: u64,
    pub last_ns: u64,
}

impl Received {
    /// The `RESULT` line a peer prints.
    pub fn result_line(&self) -> String {
        format!(
            "RESULT {} {} {} {} {}",
            self.received, self.lagged, self.bad, self.first_ns, self.last_ns
        )
    }
}

fn words_of(size: usize) -> usize {
    size.div_ceil(8)
}

/// Bytes of an SPMC ring for `size`-byte messages.
pub fn spmc_len(size: usize) -> usize {
    let cap = slots(size);
    cap * (1 + words_of(size)) * 8
}

/// A slot is being written: readers wait.
const BUSY: u64 = u64::MAX;

/// Writes message `seq` into `slot` (a stamp word, then the payload
/// words): the stamp set to `BUSY` before the payload and to `seq + 1`
/// after it, a seqlock as shmbus's slots are.
fn write_slot(slot: &[AtomicU64], seq: u64, payload: impl IntoIterator<Item = u64>) {
    slot[0].store(BUSY, Ordering::Relaxed);
    fence(Ordering::Release);
    for (cell, w) in slot[1..].iter().zip(payload) {
        cell.store(w, Ordering::Relaxed);
    }
    slot[0].store(seq + 1, Ordering::Release);
}

/// Copies message `seq` out of `slot` into `out` if the slot holds it
/// whole; else returns the stamp it found (`BUSY`, an older or a newer
/// message's), and `out` holds nothing of use.
fn read_slot(slot: &[AtomicU64], seq: u64, out: &mut [u64]) -> Result<(), u64> {
    let stamp = slot[0].load(Ordering::Acquire);
    if stamp != seq + 1 {
        return Err(stamp);
    }
    for (o, cell) in out.iter_mut().zip(&slot[1..]) {
        *o = cell.load(Ordering::Relaxed);
    }
    fence(Ordering::Acquire);
    match slot[0].load(Ordering::Relaxed) {
        again if again == stamp => Ok(()),
        again => Err(again), // overwritten while copied
    }
}

/// The writer: publishes messages 0..count, message `seq` tagged
/// `tag_of(seq)` (which may also pace the writer), each slot's stamp set to
/// `BUSY` before the payload and to `seq + 1` after it (a seqlock, as
/// shmbus's slots). Returns the nanoseconds from the first to the last.
pub fn spmc_publish(
    mem: &SharedMem,
    count: u64,
    size: usize,
    mut tag_of: impl FnMut(u64) -> u64,
) -> u64 {
    let cap = slots(size);
    let words = words_of(size);
    let stride = 1 + words;
    let slots = mem.u64_slice(0, cap * stride);
    let start = now_ns();
    for seq in 0..count {
        let tag = tag_of(seq);
        let slot = &slots[(seq as usize % cap) * stride..][..stride];
        write_slot(slot, seq, (0..words).map(|w| word(tag, w, words)));
    }
    now_ns() - start
}

/// A reader: reads until it has seen (received or lost) `count` messages,
/// checking each one's checksum and handing `on_message(seq, tag)` its
/// tag, which says whether the tag is the one expected. Reads the clock at
/// the first message and after the last only (`on_message` may read it).
pub fn spmc_subscribe(
    mem: &SharedMem,
    count: u64,
    size: usize,
    mut on_message: impl FnMut(u64, u64) -> bool,
) -> Received {
    let cap = slots(size);
    let words = words_of(size);
    let stride = 1 + words;
    let slots = mem.u64_slice(0, cap * stride);
    let mut out = vec![0u64; words];
    let mut r = Received::default();
    let mut seq = 0u64;
    while seq < count {
        let slot = &slots[(seq as usize % cap) * stride..][..stride];
        match read_slot(slot, seq, &mut out) {
            Ok(()) => {
                let whole = words < 2 || out[words - 1] == checksum(out[0]);
                if !(whole && on_message(seq, out[0])) {
                    r.bad += 1;
                }
                if r.received == 0 {
                    r.first_ns = now_ns();
                }
                r.received += 1;
                seq += 1;
            }
            Err(stamp) if stamp != BUSY && stamp > seq + 1 => {
                // Lapped: go on with the message the slot holds now.
                r.lagged += stamp - 1 - seq;
                seq = stamp - 1;
            }
            Err(_) => core::hint::spin_loop(),
        }
    }
    r.last_ns = now_ns();
    r
}

/// Two raw rings of line-aligned slots, one each way, for a ping-pong
/// (`raw-ring`): the physical limit of a *ring*, where the raw cache line
/// is that of one line handed back and forth. Each message takes the next
/// slot, as in shmbus's ring, so each goes to a line last written a lap
/// ago; on some machines that costs more than a line reused every time
/// (on a 2-vCPU AMD EPYC VM, a ring of 256 slots 1.4-1.6x one line, one
/// of 8 slots or fewer as fast as one line). A slot is a seqlock stamp
/// and the payload, rounded up to whole lines (as shmbus's slots of 17 to
/// 128 bytes are; shmbus's header is a word longer, and its slots of up
/// to 16 bytes take half a line).
pub struct PingPongRings<'a> {
    slots: &'a [AtomicU64],
    cap: usize,
    words: usize,
    stride: usize,
}

impl<'a> PingPongRings<'a> {
    /// Slots a ring has for `size`-byte messages: as many as shmbus's
    /// ping-pong topics (a quarter of a stream ring's, at least 16).
    fn capacity(size: usize) -> usize {
        (slots(size) / 4).max(16)
    }

    fn stride(size: usize) -> usize {
        (1 + words_of(size)).next_multiple_of(8)
    }

    /// Bytes of both rings for `size`-byte messages.
    pub fn len(size: usize) -> usize {
        2 * Self::capacity(size) * Self::stride(size) * 8
    }

    /// The two rings in `mem`: ring 0 carries the pings, ring 1 the
    /// pongs.
    pub fn new(mem: &'a SharedMem, size: usize) -> Self {
        let (cap, stride) = (Self::capacity(size), Self::stride(size));
        PingPongRings {
            slots: mem.u64_slice(0, 2 * cap * stride),
            cap,
            words: words_of(size),
            stride,
        }
    }

    fn slot(&self, ring: usize, seq: u64) -> &'a [AtomicU64] {
        let at = (ring * self.cap + seq as usize % self.cap) * self.stride;
        &self.slots[at..at + 1 + self.words]
    }

    /// Writes message `seq` into ring `ring`, its payload `payload` (as
    /// many words as the message has), as [`spmc_publish`] writes a slot
    /// ([`write_slot`]).
    pub fn write(&self, ring: usize, seq: u64, payload: &[u64]) {
        write_slot(self.slot(ring, seq), seq, payload.iter().copied());
    }

    /// Waits for message `seq` in ring `ring`, spinning, and copies its
    /// payload into `out` (as many words as the message has).
    pub fn read(&self, ring: usize, seq: u64, out: &mut [u64]) {
        let slot = self.slot(ring, seq);
        while read_slot(slot, seq, out).is_err() {
            core::hint::spin_loop();
        }
    }

    /// Payload words of message `tag` for these rings (see [`word`]).
    pub fn message(&self, tag: u64) -> Vec<u64> {
        (0..self.words).map(|w| word(tag, w, self.words)).collect()
    }

    /// Turns `payload`, a [`message`](Self::message), into message `tag`
    /// (its first and last words), as [`stamp`] does.
    pub fn retag(&self, payload: &mut [u64], tag: u64) {
        payload[0] = tag;
        if self.words >= 2 {
            payload[self.words - 1] = checksum(tag);
        }
    }

    /// Whether `payload` is message `tag`, whole.
    pub fn is_message(&self, payload: &[u64], tag: u64) -> bool {
        payload.first() == Some(&tag)
            && (self.words < 2 || payload[self.words - 1] == checksum(tag))
    }
}

/// How the MPMC queue's ends wait on a full or empty queue, as shmbus's
/// do: back off exponentially between looks (crossbeam's `Backoff::spin`:
/// a producer that looks at a full queue's cell as fast as it can slows
/// down the consumer that must write it), up to 2000 looks, then give the
/// core away between looks so that more processes than cores still make
/// progress (shmbus sleeps there instead).
#[derive(Default)]
struct Idle {
    backoff: crossbeam_utils::Backoff,
    looks: u32,
}

impl Idle {
    fn wait(&mut self) {
        self.looks += 1;
        if self.looks <= 2000 {
            self.backoff.spin();
        } else {
            std::thread::yield_now();
        }
    }
}

const MPMC_ENQUEUE: usize = 0;
const MPMC_DEQUEUE: usize = 64;
const MPMC_CELLS: usize = 128;

/// Bytes of an MPMC queue for `size`-byte messages.
pub fn mpmc_len(size: usize) -> usize {
    let cap = slots(size);
    MPMC_CELLS + cap * (1 + words_of(size)) * 8
}

/// Sets every cell's sequence to its index (Vyukov's initial state).
pub fn mpmc_init(mem: &SharedMem, size: usize) {
    let cap = slots(size);
    let stride = 1 + words_of(size);
    let cells = mem.u64_slice(MPMC_CELLS, cap * stride);
    for i in 0..cap {
        cells[i * stride].store(i as u64, Ordering::Relaxed);
    }
}

/// A producer: pushes `count` messages tagged `id << 40 | n`.
pub fn mpmc_produce(mem: &SharedMem, count: u64, size: usize, id: u64) {
    let cap = slots(size);
    let words = words_of(size);
    let stride = 1 + words;
    let cells = mem.u64_slice(MPMC_CELLS, cap * stride);
    let enqueue = mem.u64_at(MPMC_ENQUEUE);
    for n in 0..count {
        let tag = id << 40 | n;
        let mut idle = Idle::default();
        loop {
            let pos = enqueue.load(Ordering::Relaxed);
            let cell = &cells[(pos as usize % cap) * stride..][..stride];
            let seq = cell[0].load(Ordering::Acquire);
            let diff = seq as i64 - pos as i64;
            if diff == 0 {
                if enqueue
                    .compare_exchange_weak(pos, pos + 1, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    for (w, c) in cell[1..].iter().enumerate() {
                        c.store(word(tag, w, words), Ordering::Relaxed);
                    }
                    cell[0].store(pos + 1, Ordering::Release);
                    break;
                }
            } else if diff < 0 {
                idle.wait(); // full
            }
        }
    }
}

/// A consumer: pops until all `total` messages are taken (by it or the
/// others). Reads the clock at its first message and when it stops.
pub fn mpmc_consume(mem: &SharedMem, total: u64, size: usize) -> Received {
    let cap = slots(size);
    let words = words_of(size);
    let stride = 1 + words;
    let cells = mem.u64_slice(MPMC_CELLS, cap * stride);
    let dequeue = mem.u64_at(MPMC_DEQUEUE);
    let mut out = vec![0u64; words];
    let mut r = Received::default();
    let mut idle = Idle::default();
    loop {
        let pos = dequeue.load(Ordering::Relaxed);
        if pos >= total {
            break;
        }
        let cell = &cells[(pos as usize % cap) * stride..][..stride];
        let seq = cell[0].load(Ordering::Acquire);
        let diff = seq as i64 - (pos + 1) as i64;
        if diff == 0 {
            if dequeue
                .compare_exchange_weak(pos, pos + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                for (o, c) in out.iter_mut().zip(&cell[1..]) {
                    *o = c.load(Ordering::Relaxed);
                }
                cell[0].store(pos + cap as u64, Ordering::Release);
                idle = Idle::default();
                if words > 1 && out[words - 1] != checksum(out[0]) {
                    r.bad += 1;
                }
                if r.received == 0 {
                    r.first_ns = now_ns();
                }
                r.received += 1;
            }
        } else if diff < 0 {
            idle.wait(); // empty
        }
    }
    r.last_ns = now_ns();
    r
}

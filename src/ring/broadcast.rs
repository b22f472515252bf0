//! Broadcast ring (single publisher, many subscribers), overwrite mode.
//!
//! # Algorithm
//!
//! A power-of-two array of slots. Message number `seq` goes into slot
//! `seq & (capacity - 1)`. Each slot starts with a *stamp* that says which
//! message it holds and whether that message is complete, seqlock style:
//!
//! | stamp          | meaning                                   |
//! |----------------|-------------------------------------------|
//! | `0`            | never written                             |
//! | `2 * seq + 1`  | message `seq` is being written            |
//! | `2 * seq + 2`  | message `seq` is complete                 |
//!
//! Stamps of one slot only grow. The publisher marks the slot as being
//! written, writes length and payload, then marks it complete. A subscriber
//! reads the stamp, copies the payload, and reads the stamp again: only if
//! both reads show "message `cursor` complete" is the copy whole. The payload
//! is copied with relaxed atomic word loads and stores, so a reader racing a
//! writer sees a torn *copy* that it throws away, never a data race.
//!
//! Readers write nothing shared: a subscriber's cursor is its own. So the
//! publisher never waits, and a subscriber that falls more than `capacity`
//! messages behind finds its slot holding a later message: it has been
//! lapped, and skips ahead (see [`BroadcastRing::lag_target`]) counting
//! exactly the messages it skipped.

use core::cmp::max;

use crate::ring::{load_bytes, store_bytes, Lease, SLOT_HEADER_BYTES, SLOT_HEADER_WORDS};
pub use crate::ring::{packed_slots_words as slots_words, packed_stride_words as stride_words};
use crate::sync::{fence, AtomicU32, AtomicU64, Ordering};
use crate::wait::WakeWords;

/// Shared control block of a broadcast topic, three cache lines: the hot
/// publisher line, the lease, and the wakeup words, each on its own line so a
/// subscriber polling one does not bounce the others.
#[repr(C)]
pub struct BroadcastCtrl {
    /// Sequence number of the next message. Every message below it has been
    /// published (some may since be overwritten). Written by the lease holder
    /// only, after the message's slot is complete.
    pub(crate) head: AtomicU64,
    _pad0: [u8; 56],
    /// Who publishes.
    pub(crate) lease: Lease,
    /// Nonzero once any publisher has held the lease, so "no publisher" can
    /// be told apart from "not started yet".
    pub(crate) had_publisher: AtomicU32,
    _pad1: [u8; 52],
    /// Sleeping subscribers and the futex word that wakes them.
    pub(crate) wake: WakeWords,
    _pad2: [u8; 48],
}

#[cfg(not(shmbus_loom))]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<BroadcastCtrl>() == 192);
    assert!(align_of::<BroadcastCtrl>() == 8);
    assert!(offset_of!(BroadcastCtrl, head) == 0);
    assert!(offset_of!(BroadcastCtrl, lease) == 64);
    assert!(offset_of!(BroadcastCtrl, had_publisher) == 72);
    assert!(offset_of!(BroadcastCtrl, wake) == 128);
};

impl BroadcastCtrl {
    /// A fresh control block (for heap-built rings; in a segment, zeroed
    /// memory is the same state).
    pub fn new() -> Self {
        BroadcastCtrl {
            head: AtomicU64::new(0),
            _pad0: [0; 56],
            lease: Lease::new(),
            had_publisher: AtomicU32::new(0),
            _pad1: [0; 52],
            wake: WakeWords::new(),
            _pad2: [0; 48],
        }
    }

    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    pub fn wake(&self) -> &WakeWords {
        &self.wake
    }

    /// Messages published so far (the sequence number of the next one).
    #[inline]
    pub fn published(&self) -> u64 {
        // SYNC POINT: pairs with the Release store of `head` in `publish`.
        self.head.load(Ordering::Acquire)
    }

    /// Whether a publisher has ever held this topic.
    pub fn had_publisher(&self) -> bool {
        self.had_publisher.load(Ordering::Acquire) != 0
    }

    /// Records that a publisher took the lease. A publisher calls this
    /// after taking the lease (see [`publisher`](Self::publisher)).
    pub fn mark_published(&self) {
        // SYNC POINT: Release pairs with the Acquire load in `had_publisher`:
        // whoever sees the mark sees the lease taken.
        self.had_publisher.store(1, Ordering::Release);
    }

    /// Who publishes: a holder of the lease, nobody yet, or nobody any
    /// more. `had_publisher` is read first: it is set after the lease is
    /// taken, so once it reads set, the lease load after it sees the
    /// holder's token or something later, and an empty lease word is a
    /// publisher that left. (Read the other way round, a subscriber could
    /// see the lease empty before a publisher arrives and the mark set
    /// after, and report a publisher that never left as gone.)
    pub fn publisher(&self) -> PublisherState {
        let had = self.had_publisher();
        match self.lease.holder() {
            Some(owner) => PublisherState::Held(owner),
            None if had => PublisherState::Left,
            None => PublisherState::NotYet,
        }
    }
}

/// Who publishes on a topic ([`BroadcastCtrl::publisher`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublisherState {
    /// No publisher has held the topic yet.
    NotYet,
    /// The lease holder (alive, or dead and not yet replaced).
    Held(crate::ring::Owner),
    /// A publisher held the topic and released it.
    Left,
}

impl Default for BroadcastCtrl {
    fn default() -> Self {
        Self::new()
    }
}

/// The stamp of a slot (or descriptor, in [`crate::ring::varlen`]) while
/// message `seq` is being written into it.
pub(crate) const fn writing(seq: u64) -> u64 {
    seq.wrapping_mul(2).wrapping_add(1)
}

/// The stamp of a slot (or descriptor) once message `seq` is complete.
pub(crate) const fn complete(seq: u64) -> u64 {
    seq.wrapping_mul(2).wrapping_add(2)
}

/// Where a new subscriber starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartAt {
    /// The most recently published message (or the first, if none yet).
    #[default]
    Newest,
    /// The oldest message the ring still holds.
    Oldest,
    /// The first message published after subscribing.
    Next,
}

impl StartAt {
    /// The first message to read, for a ring of `capacity` whose next
    /// message is `head`.
    #[inline]
    pub fn cursor(self, head: u64, capacity: u64) -> u64 {
        match self {
            StartAt::Newest => head.saturating_sub(1),
            StartAt::Oldest => head.saturating_sub(capacity),
            StartAt::Next => head,
        }
    }
}

/// What [`BroadcastRing::read`] found at a cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// The message, `len` bytes, was copied whole into the buffer.
    Message { len: usize },
    /// The message has not been published yet.
    Empty,
    /// The slot holds a later message (or was overwritten while being
    /// copied): the reader was lapped.
    Overwritten,
    /// The slot claims a length that does not fit: the segment is corrupt.
    BadLength { len: u64 },
}

/// Error building a ring view over memory whose shape does not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadShape;

/// A view of one broadcast ring: its control block and slot words.
#[derive(Clone, Copy)]
pub struct BroadcastRing<'a> {
    ctrl: &'a BroadcastCtrl,
    slots: &'a [AtomicU64],
    mask: u64,
    stride: usize,
    slot_bytes: usize,
    /// Whether every slot's stamp, length and payload (up to `slot_bytes`)
    /// lie in one cache line, worked out once from this view's own copy of
    /// the slots' address and shape: then no message has lines to ask for
    /// ahead ([`prefetch_lines`](crate::ring::prefetch_lines) would find
    /// none), and the send and the wait skip working that out per message.
    one_line: bool,
}

impl<'a> BroadcastRing<'a> {
    /// Checks that `slots` is exactly `capacity` slots of `slot_bytes` and
    /// that `capacity` is a power of two; every later index stays in bounds
    /// because it is masked by `capacity - 1`.
    pub fn new(
        ctrl: &'a BroadcastCtrl,
        slots: &'a [AtomicU64],
        capacity: usize,
        slot_bytes: usize,
    ) -> Result<Self, BadShape> {
        if !capacity.is_power_of_two() || slots_words(capacity, slot_bytes) != Some(slots.len()) {
            return Err(BadShape);
        }
        let stride = stride_words(slot_bytes);
        Ok(BroadcastRing {
            ctrl,
            slots,
            mask: capacity as u64 - 1,
            stride,
            slot_bytes,
            one_line: slots_in_one_line(slots, stride, slot_bytes),
        })
    }

    pub fn ctrl(&self) -> &'a BroadcastCtrl {
        self.ctrl
    }

    pub fn capacity(&self) -> u64 {
        self.mask + 1
    }

    pub fn slot_bytes(&self) -> usize {
        self.slot_bytes
    }

    #[inline]
    fn slot(&self, seq: u64) -> &'a [AtomicU64] {
        let start = (seq & self.mask) as usize * self.stride;
        &self.slots[start..start + self.stride]
    }

    /// Sequence number of the next message to be published.
    #[inline]
    pub fn head(&self) -> u64 {
        self.ctrl.published()
    }

    /// Messages published so far: `head`, plus one if a publisher died after
    /// completing message `head` but before advancing `head` (that message
    /// is there and readable, so it counts).
    #[inline]
    pub fn published(&self) -> u64 {
        let head = self.head();
        // SYNC POINT: pairs with the Release store of the complete stamp.
        if self.slot(head)[0].load(Ordering::Acquire) == complete(head) {
            head.wrapping_add(1)
        } else {
            head
        }
    }

    /// Where a new lease holder continues: after every published message
    /// (see [`published`](Self::published)). Repairs `head` if the previous
    /// holder died before advancing it.
    pub fn resume_seq(&self) -> u64 {
        let next = self.published();
        if next != self.head() {
            self.ctrl.head.store(next, Ordering::Release);
        }
        next
    }

    /// Writes message `seq`. Only the lease holder calls this, with
    /// consecutive `seq`s, and `bytes.len() <= slot_bytes`. The same steps
    /// as a loan: [`begin`](Self::begin), the payload, [`commit`](Self::commit),
    /// after a hint that asks for the slot's lines (which a loan does not
    /// give: see below).
    #[inline(always)]
    pub fn publish(&self, seq: u64, bytes: &[u8]) {
        debug_assert!(bytes.len() <= self.slot_bytes);
        // The slot is found once (`begin` and `commit` each find it: the
        // compiler cannot share the work across the atomic stores).
        let slot = self.slot(seq);
        // Ask for ownership of all the message's lines before the first
        // store. A waiting subscriber polls the slot, so each line is in its
        // cache and each store must take it back. Stores drain in order:
        // without this, the second line's transfer starts only when the first
        // line's stores are done, the subscriber takes the first line back
        // meanwhile (and sees "being written"), and the complete stamp costs
        // a third transfer. Asked together, the lines arrive together and the
        // stores land in one go; the subscriber's half (`read`) asks for them
        // back together too. Busy-poll ping-pong, 2 vCPUs, 2026-12-07, medians
        // of three to six runs of each build alternated: 64 bytes 356 ->
        // 196-224 ns (2.4x -> 1.3-1.5x the raw cache line), 128 bytes 426 ->
        // 243, 256 bytes 444 -> 271. It costs some 1-to-1 streaming where the
        // subscriber keeps up and takes lines back while they are written:
        // 256-byte lossless 47 -> 38-43 M msg/s in three batches of six
        // runs, 64 bytes by loan 75 -> 69 (copying sends unchanged or
        // faster). Loans do not ask: their stores come later, in the
        // caller's code, while a waiting subscriber takes the lines back
        // (asking at `begin` cost overwrite by loan 12% at 64 bytes and 16%
        // at 256, four runs).
        if !self.one_line {
            crate::ring::prefetch_lines::<true>(slot, SLOT_HEADER_BYTES + bytes.len());
        }
        let payload = begin_slot(slot, seq);
        store_bytes(payload, bytes);
        commit_slot(self.ctrl, slot, seq, bytes.len());
    }

    /// Marks message `seq`'s slot as being written and returns its payload
    /// words (at least `slot_bytes` of them), for the lease holder to write
    /// with relaxed atomic stores before [`commit`](Self::commit). A
    /// message begun and never committed (a publisher that died, or gave
    /// up) leaves the slot "being written": readers of `seq` find it empty,
    /// and the next holder writes `seq` again.
    #[inline(always)]
    pub fn begin(&self, seq: u64) -> &'a [AtomicU64] {
        begin_slot(self.slot(seq), seq)
    }

    /// The payload words of message `seq`'s slot, for a writer that has
    /// [`begin`](Self::begin)un it.
    #[inline]
    pub fn payload(&self, seq: u64) -> &'a [AtomicU64] {
        &self.slot(seq)[SLOT_HEADER_WORDS..]
    }

    /// Completes message `seq`, begun with [`begin`](Self::begin), as
    /// `len` bytes (at most `slot_bytes`), and makes it the newest.
    #[inline(always)]
    pub fn commit(&self, seq: u64, len: usize) {
        commit_slot(self.ctrl, self.slot(seq), seq, len);
    }

    /// The stamp of `cursor`'s slot, loaded with Acquire: after a read
    /// found the slot overwritten, this makes everything the publisher did
    /// before that write visible (a lossless subscriber then sees its own
    /// eviction, which came first).
    #[inline]
    pub fn stamp(&self, cursor: u64) -> u64 {
        // SYNC POINT: pairs with the Release stores of both stamps in
        // `publish`.
        self.slot(cursor)[0].load(Ordering::Acquire)
    }

    /// Publishes message `seq` as the lease holder `me`, as the publisher
    /// does it: checks the lease first (one load of a line nobody else
    /// writes while `me` holds it), and writes nothing if `me` lost it.
    /// Returns whether it published.
    #[inline(always)]
    pub fn publish_as(&self, me: crate::ring::Owner, seq: u64, bytes: &[u8]) -> bool {
        if !self.ctrl.lease.held_by(me) {
            return false;
        }
        self.publish(seq, bytes);
        true
    }

    /// Whether `read(cursor)` would find something other than `Empty`: a
    /// cheap check for wait loops (one load, nothing copied).
    #[inline]
    pub fn ready(&self, cursor: u64) -> bool {
        self.slot(cursor)[0].load(Ordering::Acquire) >= complete(cursor)
    }

    /// Copies message `cursor` into `out` if it is there and whole.
    ///
    /// Copies `min(len, out.len())` bytes; the caller decides whether a
    /// length other than `out.len()` is acceptable.
    #[inline(always)]
    pub fn read(&self, cursor: u64, out: &mut [u8]) -> Read {
        let slot = self.slot(cursor);
        let want = complete(cursor);
        // SYNC POINT: pairs with the Release store of the complete stamp in
        // `publish`.
        let before = slot[0].load(Ordering::Acquire);
        // Tested for "complete" first, then for which way it differs: a
        // `match` on `cmp` compiled to a three-way value and two tests of
        // it on every read (callgrind: 4 instructions of the receive).
        if before != want {
            if before < want {
                // Not there yet: ask for the slot's other lines, so that
                // when the message lands they travel with the first, not
                // one after another behind the copy. A subscriber waiting
                // for a message polls here, with this branch predicted, so
                // the hints go out along with the stamp's load, the moment
                // the publisher's stores have taken the lines away. One
                // that is behind finds its message complete and asks for
                // nothing: its copy streams. (Asking before the stamp
                // load, on every read, was a little slower in 1-to-1
                // lossless streams: 256 bytes 41 against 44 M msg/s.)
                // The subscriber does not know the coming message's
                // length, so it asks for the whole slot, and for no line
                // of a slot that spans more than eight lines in all
                // (`slot_bytes` over 448 to 496, by where the slot starts
                // in its line), however short the message. See
                // `publish` for the publisher's half and the figures.
                if !self.one_line {
                    crate::ring::prefetch_lines::<false>(
                        slot,
                        self.slot_bytes + SLOT_HEADER_BYTES,
                    );
                }
                return Read::Empty;
            }
            return Read::Overwritten;
        }
        let len = slot[1].load(Ordering::Relaxed);
        let copied = usize::try_from(len).map_or(out.len(), |len| len.min(out.len()));
        load_bytes(&slot[SLOT_HEADER_WORDS..], &mut out[..copied]);
        // SYNC POINT: pairs with the Release fence in `publish` (see there).
        fence(Ordering::Acquire);
        let after = slot[0].load(Ordering::Relaxed);
        if after != before {
            return Read::Overwritten;
        }
        match usize::try_from(len) {
            Ok(len) if len <= self.slot_bytes => Read::Message { len },
            _ => Read::BadLength { len },
        }
    }

    /// The payload words and length of message `cursor`, if it is complete
    /// and of a length the slot holds: for reading in place. Reading them
    /// non-atomically is only sound while the publisher is kept from
    /// overwriting the slot (lossless gating).
    #[inline]
    pub fn lend(&self, cursor: u64) -> Option<(&'a [AtomicU64], usize)> {
        let slot = self.slot(cursor);
        // SYNC POINT: pairs with the Release store of the complete stamp.
        if slot[0].load(Ordering::Acquire) != complete(cursor) {
            return None;
        }
        let len = usize::try_from(slot[1].load(Ordering::Relaxed)).ok()?;
        (len <= self.slot_bytes).then(|| (&slot[SLOT_HEADER_WORDS..], len))
    }

    /// Where a reader lapped at `cursor` continues: the oldest message the
    /// ring still holds, and always past `cursor` so every lap makes
    /// progress. The skipped messages, `target - cursor`, are the loss.
    #[inline]
    pub fn lag_target(&self, cursor: u64) -> u64 {
        let oldest_held = self.head().saturating_sub(self.capacity());
        max(cursor.wrapping_add(1), oldest_held)
    }
}

/// Whether each of the slots, `stride` words apart from a start that is
/// `slots`' own, keeps its header and `slot_bytes` of payload within one
/// cache line: the slots start on a line and are whole lines each (and
/// the header and payload fit the first), or they start on a line and
/// divide it (half lines). `false` when unsure: that only costs the
/// per-message look at the span that this answer saves.
fn slots_in_one_line(slots: &[AtomicU64], stride: usize, slot_bytes: usize) -> bool {
    use crate::ring::{CACHE_LINE, WORD};
    let stride_bytes = stride * WORD;
    let starts_on_a_line = slots.as_ptr() as usize % CACHE_LINE == 0;
    let tiles_lines = stride_bytes != 0
        && (CACHE_LINE % stride_bytes == 0 || stride_bytes % CACHE_LINE == 0);
    starts_on_a_line
        && tiles_lines
        && SLOT_HEADER_BYTES.saturating_add(slot_bytes) <= stride_bytes.min(CACHE_LINE)
}

/// [`BroadcastRing::begin`] on message `seq`'s slot.
#[inline(always)]
fn begin_slot(slot: &[AtomicU64], seq: u64) -> &[AtomicU64] {
    // SYNC POINT: Release (free on x86) pairs with the Acquire stamp
    // loads of readers: one that sees this "being written" stamp also
    // sees what we did before, such as evicting a lossless subscriber
    // (see `stamp`).
    slot[0].store(writing(seq), Ordering::Release);
    // SYNC POINT: this Release fence pairs with the reader's Acquire fence
    // in `read`. A reader whose copy saw any word stored after it also
    // sees the odd stamp above in its second stamp load, and discards
    // the copy.
    fence(Ordering::Release);
    &slot[SLOT_HEADER_WORDS..]
}

/// [`BroadcastRing::commit`] on message `seq`'s slot, in the ring `ctrl`
/// heads.
#[inline(always)]
fn commit_slot(ctrl: &BroadcastCtrl, slot: &[AtomicU64], seq: u64, len: usize) {
    slot[1].store(len as u64, Ordering::Relaxed);
    // SYNC POINT: pairs with the reader's first (Acquire) stamp load: a
    // reader that sees "complete" sees the whole payload.
    slot[0].store(complete(seq), Ordering::Release);
    // SYNC POINT: pairs with the Acquire load in `head`.
    ctrl.head.store(seq.wrapping_add(1), Ordering::Release);
}

/// Hooks for model checks and tests that stage a crashed publisher.
#[doc(hidden)]
pub mod testing {
    use super::BroadcastCtrl;
    use crate::sync::Ordering;

    /// Sets `head` as a publisher that died before advancing it would leave it.
    pub fn set_head(ctrl: &BroadcastCtrl, head: u64) {
        ctrl.head.store(head, Ordering::Release);
    }
}

#[cfg(all(test, not(shmbus_loom)))]
mod tests {
    use super::*;

    fn heap_ring(capacity: usize, slot_bytes: usize) -> (Box<BroadcastCtrl>, Vec<AtomicU64>) {
        let words = slots_words(capacity, slot_bytes).unwrap();
        let slots = (0..words).map(|_| AtomicU64::new(0)).collect();
        (Box::new(BroadcastCtrl::new()), slots)
    }

    #[test]
    fn odd_lengths_round_trip() {
        let (ctrl, slots) = heap_ring(4, 21);
        let ring = BroadcastRing::new(&ctrl, &slots, 4, 21).unwrap();
        for len in 0..=21 {
            let msg: Vec<u8> = (0..len as u8).map(|b| b ^ 0x5a).collect();
            let seq = ring.head();
            ring.publish(seq, &msg);
            let mut out = [0u8; 21];
            assert_eq!(ring.read(seq, &mut out), Read::Message { len });
            assert_eq!(&out[..len], &msg[..]);
        }
    }

    #[test]
    fn lapped_reader_skips_to_oldest_held() {
        let (ctrl, slots) = heap_ring(4, 8);
        let ring = BroadcastRing::new(&ctrl, &slots, 4, 8).unwrap();
        for seq in 0..10u64 {
            ring.publish(seq, &seq.to_ne_bytes());
        }
        let mut out = [0u8; 8];
        assert_eq!(ring.read(0, &mut out), Read::Overwritten);
        assert_eq!(ring.lag_target(0), 6);
        assert_eq!(ring.read(6, &mut out), Read::Message { len: 8 });
        assert_eq!(u64::from_ne_bytes(out), 6);
        assert_eq!(ring.read(10, &mut out), Read::Empty);
    }

    #[test]
    fn message_completed_by_a_publisher_that_died_before_advancing_head_counts() {
        let (ctrl, slots) = heap_ring(4, 8);
        let ring = BroadcastRing::new(&ctrl, &slots, 4, 8).unwrap();
        ring.publish(0, &[1; 8]);
        ring.publish(1, &[2; 8]);
        testing::set_head(&ctrl, 1);
        assert_eq!(ring.published(), 2);
        assert_eq!(ring.resume_seq(), 2);
        assert_eq!(ring.head(), 2, "head repaired");
    }

    #[test]
    fn rejects_memory_of_the_wrong_shape() {
        let (ctrl, slots) = heap_ring(4, 8);
        assert!(BroadcastRing::new(&ctrl, &slots, 3, 8).is_err());
        assert!(BroadcastRing::new(&ctrl, &slots, 8, 8).is_err());
        assert!(BroadcastRing::new(&ctrl, &slots[1..], 4, 8).is_err());
    }

    /// Slot storage that starts on a cache line, as a segment's arena does.
    #[repr(C, align(64))]
    struct Lines([AtomicU64; 64]);

    #[test]
    fn slots_fit_one_line_only_where_every_slot_does() {
        let lines = Lines([const { AtomicU64::new(0) }; 64]);
        let words: &[AtomicU64] = &lines.0;
        for slot_bytes in [0, 8, 16, 17, 40, 48] {
            let stride = stride_words(slot_bytes);
            assert!(slots_in_one_line(words, stride, slot_bytes), "{slot_bytes}");
            assert!(!slots_in_one_line(&words[1..], stride, slot_bytes), "{slot_bytes} off a line");
        }
        for slot_bytes in [49, 64, 112, 128, 129, 200] {
            assert!(!slots_in_one_line(words, stride_words(slot_bytes), slot_bytes), "{slot_bytes}");
        }
        // One line per slot: publishing and reading every length still
        // round-trips with the hints skipped.
        let ctrl = BroadcastCtrl::new();
        let ring = BroadcastRing::new(&ctrl, &words[..32], 4, 48).unwrap();
        assert!(ring.one_line);
        for len in 0..=48 {
            let msg: Vec<u8> = (0..len as u8).map(|b| b ^ 0xa5).collect();
            let seq = ring.head();
            let mut out = [0u8; 48];
            assert_eq!(ring.read(seq, &mut out), Read::Empty);
            ring.publish(seq, &msg);
            assert_eq!(ring.read(seq, &mut out), Read::Message { len });
            assert_eq!(&out[..len], &msg[..]);
        }
    }

    #[test]
    fn corrupt_length_is_reported_not_trusted() {
        let (ctrl, slots) = heap_ring(2, 8);
        let ring = BroadcastRing::new(&ctrl, &slots, 2, 8).unwrap();
        ring.publish(0, &[1; 8]);
        slots[1].store(u64::MAX, Ordering::Relaxed);
        let mut out = [0u8; 8];
        assert_eq!(ring.read(0, &mut out), Read::BadLength { len: u64::MAX });
    }
}

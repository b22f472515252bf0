//! Variable-size broadcast ring (single publisher, many subscribers):
//! messages take their own length, rounded up to 8 bytes, not a slot each.
//!
//! # Algorithm
//!
//! Two arrays, indexed differently:
//!
//! - a power-of-two **descriptor ring** indexed by sequence number, as the
//!   slots of [`crate::ring::broadcast`]: descriptor `seq & (capacity - 1)`
//!   holds a seqlock *stamp* (`0` never written, `2 * seq + 1` being
//!   written, `2 * seq + 2` complete; stamps of one descriptor only grow),
//!   the arena position of the message's first word and its length in
//!   bytes;
//! - a power-of-two **byte arena** of words, indexed by a *position* that
//!   only grows (word `position & (arena_words - 1)`). A message takes
//!   `ceil(len / 8)` consecutive words from the publisher's current
//!   position; one that would run past the end of the arena starts at its
//!   beginning instead (the tail is wasted), so every payload is one
//!   contiguous run of words.
//!
//! The shared word `reserved` says how far the arena has been handed out:
//! every word at a position below it may have been written. The publisher
//! advances it *before* it writes a payload. A message that starts at
//! position `pos` is whole for as long as `reserved <= pos + arena_words`:
//! until then no word of the arena that aliases one of its words has been
//! handed out again.
//!
//! A reader at `cursor` loads the stamp (Acquire): lower than "`cursor`
//! complete" is `Empty`, higher is `Overwritten`. Otherwise it loads
//! position and length, checks them against the arena (they are untrusted:
//! a bad pair is [`Read::BadDescriptor`], never a panic or an access out of
//! bounds), copies the payload with relaxed atomic loads, fences (Acquire),
//! and re-checks both the stamp (unchanged) and `reserved` (still within
//! `arena_words` of `pos`). Only then is the copy whole.
//!
//! # Lagging (overwrite mode)
//!
//! The publisher never waits. A reader can be lapped two ways: by the
//! descriptor ring (`capacity` newer messages) or, before that, by the
//! arena (newer messages that need its bytes). Either way it finds its
//! message `Overwritten`, and [`VarlenRing::lag_target`] names the oldest
//! message whose descriptor *and* bytes are still intact; the messages
//! skipped, `target - cursor`, are the loss (`Lagged(n)`), and each of them
//! is gone for good: a message once overwritten is never whole again.
//!
//! # Lossless mode
//!
//! The publisher writes message `next` only if the slowest gated subscriber
//! (cursor `s`, see [`crate::ring::gate`]) leaves room for it in both
//! arrays: `next < s + capacity` (its descriptor is free), and the new
//! message ends no more than `arena_words` past the start of message `s`
//! (its bytes are free). The start of message `s` is read from `s`'s own
//! descriptor, which the first condition keeps intact while `s` is unread.
//! See [`VarlenRing::has_room`].
//!
//! # A publisher that dies
//!
//! Whatever it began and did not commit is invisible: its descriptor says
//! "being written" (readers find that message `Empty`) or still names an
//! older message, and the bytes it may have written lie below `reserved`,
//! where no later message goes. The next lease holder calls
//! [`VarlenRing::resume`], which continues the sequence after the last
//! committed message and the arena at `reserved` (repairing `head` if the
//! dead publisher completed a message but did not advance it), and writes
//! the abandoned sequence number again.

use core::cmp::Ordering as CmpOrdering;
use core::fmt;

use crate::ring::broadcast::{complete, writing, BadShape, BroadcastCtrl, StartAt};
use crate::ring::gate::Gate;
use crate::ring::{load_bytes, store_bytes, WORD};
use crate::sync::{fence, AtomicU64, Ordering};


/// Words per descriptor: stamp, position, length, and one spare (zero)
/// that keeps descriptors two to a cache line and leaves room for
/// per-message metadata.
pub const DESC_WORDS: usize = 4;
const STAMP: usize = 0;
const POS: usize = 1;
const LEN: usize = 2;
const SPARE: usize = 3;

/// Scans of the subscriber table [`VarlenRing::room_in`] makes before it
/// gives up on one that no attach changed under it.
const STABLE_SCAN_TRIES: u32 = 4;

/// Words of shared memory after the control block for `capacity`
/// descriptors and an arena of `arena_bytes`: the descriptors, then the
/// arena. `None` if `capacity` or `arena_bytes` is not a power of two,
/// `arena_bytes` is less than a word, or the size overflows.
pub fn layout_words(capacity: usize, arena_bytes: usize) -> Option<usize> {
    if !capacity.is_power_of_two() || !arena_bytes.is_power_of_two() || arena_bytes < WORD {
        return None;
    }
    capacity
        .checked_mul(DESC_WORDS)?
        .checked_add(arena_bytes / WORD)
}

/// Shared control block of a variable-size broadcast topic: the broadcast
/// control block (head, lease, wakeup words: the same meaning as there)
/// and the arena's `reserved` position on a line of its own, which every
/// read loads.
#[repr(C)]
pub struct VarlenCtrl {
    pub(crate) broadcast: BroadcastCtrl,
    /// Arena position up to which words have been handed out to messages:
    /// no word at or above it has been written since it was last whole.
    /// Written by the lease holder only, before it writes a payload; it
    /// only grows.
    reserved: AtomicU64,
    _pad: [u8; 56],
}

#[cfg(not(shmbus_loom))]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<VarlenCtrl>() == 256);
    assert!(align_of::<VarlenCtrl>() == 8);
    assert!(offset_of!(VarlenCtrl, broadcast) == 0);
    assert!(offset_of!(VarlenCtrl, reserved) == 192);
};

impl VarlenCtrl {
    /// A fresh control block (for heap-built rings; in a segment, zeroed
    /// memory is the same state).
    pub fn new() -> Self {
        VarlenCtrl {
            broadcast: BroadcastCtrl::new(),
            reserved: AtomicU64::new(0),
            _pad: [0; 56],
        }
    }

    /// Head, lease and wakeup words, as for a fixed-slot broadcast topic.
    pub fn broadcast(&self) -> &BroadcastCtrl {
        &self.broadcast
    }
}

impl Default for VarlenCtrl {
    fn default() -> Self {
        Self::new()
    }
}

/// A message longer than half the arena: refused, it would not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge {
    /// Length of the refused message, in bytes.
    pub len: usize,
    /// The largest message this topic takes: half its arena.
    pub max: usize,
}

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "message of {} bytes is larger than half the arena ({} bytes at most); \
             create the topic with an arena of at least {} bytes, or send it in parts",
            self.len,
            self.max,
            self.len
                .checked_mul(2)
                .and_then(usize::checked_next_power_of_two)
                .unwrap_or(usize::MAX),
        )
    }
}

impl std::error::Error for TooLarge {}

/// What [`VarlenRing::read`] found at a cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// The message, `len` bytes, was copied whole (its first
    /// `min(len, out.len())` bytes).
    Message { len: usize },
    /// The message has not been published yet.
    Empty,
    /// Its descriptor holds a later message, or its bytes may have been
    /// reused (or either changed while being copied): the reader was lapped.
    Overwritten,
    /// The descriptor names bytes that are not in the arena, or not handed
    /// out: the segment is corrupt.
    BadDescriptor { pos: u64, len: u64 },
}

/// Where a resuming lease holder continues (see [`VarlenRing::resume`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// The next sequence number to publish.
    pub seq: u64,
    /// The arena position the next message is placed from.
    pub position: u64,
}

/// A message begun with [`VarlenRing::begin`]: its payload words, for the
/// lease holder to write with relaxed atomic stores before
/// [`VarlenRing::commit`]. Dropping it publishes nothing.
#[derive(Debug)]
#[must_use = "a reservation publishes nothing until it is committed"]
pub struct Reservation<'a> {
    seq: u64,
    pos: u64,
    len: usize,
    payload: &'a [AtomicU64],
}

impl<'a> Reservation<'a> {
    /// Sequence number of the message.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Arena position of its first word.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is a message of no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Its `ceil(len / 8)` payload words, contiguous in the arena.
    pub fn payload(&self) -> &'a [AtomicU64] {
        self.payload
    }
}

/// A view of one variable-size broadcast ring: control block,
/// descriptors and arena.
#[derive(Clone, Copy)]
pub struct VarlenRing<'a> {
    ctrl: &'a VarlenCtrl,
    descs: &'a [AtomicU64],
    arena: &'a [AtomicU64],
    desc_mask: u64,
    arena_mask: u64,
}

/// Where a message's arena words stand ([`VarlenRing::bytes_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArenaBytes {
    /// Handed out, and not handed out again since.
    Intact,
    /// Handed out again to a later message.
    Reused,
    /// Never handed out (beyond `reserved`): not a message we wrote.
    NeverHandedOut,
}

impl<'a> VarlenRing<'a> {
    /// Checks that `words` is exactly [`layout_words`]`(capacity,
    /// arena_bytes)` long; every later index stays in bounds because it is
    /// masked, or checked against the arena.
    pub fn new(
        ctrl: &'a VarlenCtrl,
        words: &'a [AtomicU64],
        capacity: usize,
        arena_bytes: usize,
    ) -> Result<Self, BadShape> {
        if layout_words(capacity, arena_bytes) != Some(words.len()) {
            return Err(BadShape);
        }
        let (descs, arena) = words.split_at(capacity * DESC_WORDS);
        Ok(VarlenRing {
            ctrl,
            descs,
            arena,
            desc_mask: capacity as u64 - 1,
            arena_mask: arena.len() as u64 - 1,
        })
    }

    pub fn ctrl(&self) -> &'a VarlenCtrl {
        self.ctrl
    }

    /// Descriptors: at most this many messages are held at once.
    pub fn capacity(&self) -> u64 {
        self.desc_mask + 1
    }

    pub fn arena_bytes(&self) -> usize {
        self.arena.len() * WORD
    }

    /// The largest message: half the arena.
    pub fn max_message(&self) -> usize {
        self.arena_bytes() / 2
    }

    fn arena_words(&self) -> u64 {
        self.arena_mask + 1
    }

    #[inline]
    fn desc(&self, seq: u64) -> &'a [AtomicU64] {
        let start = (seq & self.desc_mask) as usize * DESC_WORDS;
        &self.descs[start..start + DESC_WORDS]
    }

    /// Arena words a message of `len` bytes takes, or `TooLarge`.
    #[inline]
    fn words_for(&self, len: usize) -> Result<u64, TooLarge> {
        let max = self.max_message();
        if len > max {
            return Err(TooLarge { len, max });
        }
        Ok(len.div_ceil(WORD) as u64)
    }

    /// Where a message of `words` words goes when the arena is handed out
    /// up to `reserved`: there, or at the start of the arena if it would
    /// run past the end. `words` is at most half the arena.
    #[inline]
    fn place(&self, reserved: u64, words: u64) -> u64 {
        let offset = reserved & self.arena_mask;
        if offset + words > self.arena_words() {
            reserved.wrapping_add(self.arena_words() - offset)
        } else {
            reserved
        }
    }

    /// The arena words a descriptor's `pos` and `len` name, if they are a
    /// message this ring could hold (untrusted values: checked, not
    /// believed).
    #[inline]
    fn span(&self, pos: u64, len: u64) -> Option<(&'a [AtomicU64], usize)> {
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len <= self.max_message())?;
        let start = (pos & self.arena_mask) as usize;
        let words = self.arena.get(start..start + len.div_ceil(WORD))?;
        Some((words, len))
    }

    /// The arena position up to which words have been handed out.
    #[inline]
    pub fn reserved(&self) -> u64 {
        // Relaxed: a reader orders this load itself (the fence in `read`),
        // and the publisher loads its own word.
        self.ctrl.reserved.load(Ordering::Relaxed)
    }

    /// `reserved` loaded with Acquire: for a reader that found a message
    /// overwritten by its bytes' reuse, everything the publisher did before
    /// that reuse (such as evicting a lossless subscriber) is then visible.
    #[inline]
    pub fn reserved_acquire(&self) -> u64 {
        // SYNC POINT: pairs with the Release store in `begin`.
        self.ctrl.reserved.load(Ordering::Acquire)
    }

    /// Sequence number of the next message to be published.
    #[inline]
    pub fn head(&self) -> u64 {
        self.ctrl.broadcast.published()
    }

    /// Messages published so far: `head`, plus one if a publisher died after
    /// completing message `head` but before advancing `head`.
    #[inline]
    pub fn published(&self) -> u64 {
        let head = self.head();
        if self.stamp(head) == complete(head) {
            head.wrapping_add(1)
        } else {
            head
        }
    }

    /// Where a new lease holder continues: after every published message
    /// (see [`published`](Self::published)), and in the arena at `reserved`,
    /// past whatever a dead holder reserved. Repairs `head` if the previous
    /// holder died before advancing it, and `reserved` if it lies below the
    /// end of the last published message (only corruption puts it there).
    pub fn resume(&self) -> Resume {
        let seq = self.published();
        if seq != self.head() {
            // SYNC POINT: pairs with the Acquire load in `head`.
            self.ctrl.broadcast.head.store(seq, Ordering::Release);
        }
        let mut position = self.reserved();
        if let Some(last) = seq.checked_sub(1) {
            let desc = self.desc(last);
            if self.stamp(last) == complete(last) {
                let pos = desc[POS].load(Ordering::Relaxed);
                if let Some((words, _)) = self.span(pos, desc[LEN].load(Ordering::Relaxed)) {
                    // Only a message that starts at or below `reserved`
                    // can be ours; one that starts above it is the
                    // corrupt word, and must not push `reserved` on.
                    let end = pos.saturating_add(words.len() as u64);
                    if pos <= position && end > position {
                        position = end;
                        self.ctrl.reserved.store(end, Ordering::Release);
                    }
                }
            }
        }
        Resume { seq, position }
    }

    /// Writes message `seq`. Only the lease holder calls this, with
    /// consecutive `seq`s (in lossless mode, after [`has_room`](Self::has_room)).
    /// The same steps as a loan: [`begin`](Self::begin), the payload,
    /// [`commit`](Self::commit).
    ///
    /// # Errors
    ///
    /// `TooLarge` if `bytes` is longer than half the arena; nothing is
    /// written then.
    #[inline(always)]
    pub fn publish(&self, seq: u64, bytes: &[u8]) -> Result<(), TooLarge> {
        let reservation = self.begin(seq, bytes.len())?;
        store_bytes(reservation.payload, bytes);
        self.commit(reservation);
        Ok(())
    }

    /// Reserves arena words for message `seq` of `len` bytes and marks its
    /// descriptor as being written; returns the words, for the lease holder
    /// to write with relaxed atomic stores before [`commit`](Self::commit).
    /// A message begun and never committed (a publisher that died, or a loan
    /// dropped) leaves its descriptor "being written": readers of `seq` find
    /// it empty, and the holder writes `seq` again; its words are wasted.
    ///
    /// # Errors
    ///
    /// `TooLarge` if `len` is more than half the arena; nothing is written.
    #[inline(always)]
    pub fn begin(&self, seq: u64, len: usize) -> Result<Reservation<'a>, TooLarge> {
        let words = self.words_for(len)?;
        let pos = self.place(self.reserved(), words);
        // SYNC POINT: the Release fence below orders this store before every
        // payload store, and pairs with the reader's Acquire fence in `read`:
        // a reader whose copy saw a word of this message also sees this
        // `reserved` in its re-check, and discards a copy of an older
        // message whose bytes these are. Release pairs with the Acquire
        // load in `reserved_acquire` (a lossless reader that found its
        // message's bytes reused then sees an eviction made before).
        self.ctrl
            .reserved
            .store(pos.wrapping_add(words), Ordering::Release);
        // SYNC POINT: Release pairs with the Acquire stamp loads of readers
        // (`stamp`): one that sees "being written" also sees what the
        // publisher did before, such as evicting a lossless subscriber.
        self.desc(seq)[STAMP].store(writing(seq), Ordering::Release);
        // SYNC POINT: pairs with the reader's Acquire fence in `read` (see
        // above): a reader whose copy of descriptor or payload saw any store
        // after this fence also sees the odd stamp and the new `reserved`.
        fence(Ordering::Release);
        let start = (pos & self.arena_mask) as usize;
        Ok(Reservation {
            seq,
            pos,
            len,
            // In bounds: `place` keeps `start + words <= arena_words`.
            payload: &self.arena[start..start + words as usize],
        })
    }

    /// Completes a message begun with [`begin`](Self::begin) and makes it
    /// the newest.
    #[inline(always)]
    pub fn commit(&self, reservation: Reservation<'_>) {
        let Reservation { seq, pos, len, .. } = reservation;
        self.commit_at(seq, pos, len);
    }

    /// The spare word of message `seq`'s descriptor (a topic's publish
    /// timestamp): written by the lease holder between
    /// [`begin`](Self::begin) and commit, so a reader that loads it after
    /// seeing the message complete, and then finds the stamp unchanged, has
    /// that message's word.
    #[inline]
    pub fn spare_word(&self, seq: u64) -> &'a AtomicU64 {
        &self.desc(seq)[SPARE]
    }

    /// The payload words of a message begun at arena position `pos` with
    /// `len` bytes (a [`Reservation`]'s `pos` and `len`), for a writer that
    /// keeps those instead of the reservation (a loan).
    #[inline]
    pub fn payload_at(&self, pos: u64, len: usize) -> &'a [AtomicU64] {
        let start = (pos & self.arena_mask) as usize;
        let end = (start + len.div_ceil(WORD)).min(self.arena.len());
        &self.arena[start..end]
    }

    /// [`commit`](Self::commit) of the reservation with these `seq`, `pos`
    /// and `len`.
    #[inline(always)]
    pub fn commit_at(&self, seq: u64, pos: u64, len: usize) {
        let desc = self.desc(seq);
        desc[POS].store(pos, Ordering::Relaxed);
        desc[LEN].store(len as u64, Ordering::Relaxed);
        // SYNC POINT: pairs with the reader's first (Acquire) stamp load: a
        // reader that sees "complete" sees position, length and payload,
        // and a `reserved` at least as far as this message's end.
        desc[STAMP].store(complete(seq), Ordering::Release);
        // SYNC POINT: pairs with the Acquire load in `head`.
        self.ctrl
            .broadcast
            .head
            .store(seq.wrapping_add(1), Ordering::Release);
    }

    /// The stamp of `cursor`'s descriptor, loaded with Acquire: after a
    /// read found it overwritten, this makes everything the publisher did
    /// before that write visible (a lossless subscriber then sees its own
    /// eviction, which came first).
    #[inline]
    pub fn stamp(&self, cursor: u64) -> u64 {
        // SYNC POINT: pairs with the Release stores of both stamps in
        // `begin` and `commit`.
        self.desc(cursor)[STAMP].load(Ordering::Acquire)
    }

    /// Whether `read(cursor)` would find something other than `Empty`: a
    /// cheap check for wait loops (one load, nothing copied).
    #[inline]
    pub fn ready(&self, cursor: u64) -> bool {
        self.stamp(cursor) >= complete(cursor)
    }

    /// Copies message `cursor` into `out` if it is there and whole.
    ///
    /// Copies `min(len, out.len())` bytes and returns the message's `len`;
    /// a caller whose buffer is shorter reads again with a longer one
    /// (`max_message` bytes always do).
    #[inline(always)]
    pub fn read(&self, cursor: u64, out: &mut [u8]) -> Read {
        let desc = self.desc(cursor);
        // SYNC POINT: pairs with the Release store of the complete stamp in
        // `commit`.
        let before = desc[STAMP].load(Ordering::Acquire);
        match before.cmp(&complete(cursor)) {
            CmpOrdering::Less => return Read::Empty,
            CmpOrdering::Greater => return Read::Overwritten,
            CmpOrdering::Equal => {}
        }
        let pos = desc[POS].load(Ordering::Relaxed);
        let len = desc[LEN].load(Ordering::Relaxed);
        // A bad pair may be a torn read of a descriptor being rewritten:
        // copy nothing, and decide after the stamp re-check.
        let span = self.span(pos, len);
        if let Some((words, len)) = span {
            let copied = len.min(out.len());
            load_bytes(words, &mut out[..copied]);
        }
        // SYNC POINT: pairs with the Release fence in `begin`: if any load
        // above saw a store of a later message, the loads below see that
        // message's stamp (if it reuses this descriptor) or its `reserved`
        // (if it reuses these bytes).
        fence(Ordering::Acquire);
        if desc[STAMP].load(Ordering::Relaxed) != before {
            return Read::Overwritten;
        }
        let Some((words, len)) = span else {
            return Read::BadDescriptor { pos, len };
        };
        match self.bytes_state(pos, words.len()) {
            ArenaBytes::Intact => Read::Message { len },
            ArenaBytes::Reused => Read::Overwritten,
            ArenaBytes::NeverHandedOut => Read::BadDescriptor {
                pos,
                len: len as u64,
            },
        }
    }

    /// Where the `words` arena words at `pos` stand against `reserved`.
    #[inline]
    fn bytes_state(&self, pos: u64, words: usize) -> ArenaBytes {
        // Positions only grow from 0 and never wrap (2^64 words), so a
        // position above `reserved` was never handed out.
        match self.reserved().checked_sub(pos) {
            Some(handed_out) if handed_out > self.arena_words() => ArenaBytes::Reused,
            Some(handed_out) if handed_out >= words as u64 => ArenaBytes::Intact,
            _ => ArenaBytes::NeverHandedOut,
        }
    }

    /// The payload words and length of message `cursor` for reading in
    /// place, if it is complete and its bytes not handed out again. Reading
    /// them non-atomically is only sound while a lossless subscriber's
    /// cursor keeps the publisher off them, which it does from `gated_from`
    /// on: the head it read as it attached (see "Attaching without a race"
    /// in the gate). Message `gated_from` itself may have been begun before
    /// the publisher saw the subscriber, and may reuse the bytes of older
    /// messages; so an older message is lent only once that one is complete
    /// (`head` past it), when the `reserved` loaded after `head` counts its
    /// bytes, and every message after it is gated. Until then, `None`: the
    /// caller copies instead, which checks after the copy.
    #[inline]
    pub fn lend(&self, cursor: u64, gated_from: u64) -> Option<(&'a [AtomicU64], usize)> {
        // SYNC POINT: `head` is loaded with Acquire, pairing with its
        // Release store in `commit`: the ungated message's reservation
        // happened before the load of `reserved` below.
        if cursor < gated_from && self.head() <= gated_from {
            return None;
        }
        let desc = self.desc(cursor);
        // SYNC POINT: pairs with the Release store of the complete stamp in
        // `commit`.
        if desc[STAMP].load(Ordering::Acquire) != complete(cursor) {
            return None;
        }
        let pos = desc[POS].load(Ordering::Relaxed);
        let (words, len) = self.span(pos, desc[LEN].load(Ordering::Relaxed))?;
        (self.bytes_state(pos, words.len()) == ArenaBytes::Intact).then_some((words, len))
    }

    /// Whether message `seq` is complete and its bytes not handed out
    /// again. Once false, false for good. May say true of a message that is
    /// being overwritten (a reader then finds it `Overwritten`, and lags
    /// again), never false of one that is whole.
    #[inline]
    fn held(&self, seq: u64) -> bool {
        if self.stamp(seq) != complete(seq) {
            return false;
        }
        let pos = self.desc(seq)[POS].load(Ordering::Relaxed);
        self.reserved()
            .checked_sub(pos)
            .is_some_and(|handed_out| handed_out <= self.arena_words())
    }

    /// The first message in `lo..hi` that is [`held`](Self::held), or `hi`:
    /// a binary search, since the held messages are always a suffix of the
    /// published ones (positions grow with the sequence number).
    fn first_held(&self, mut lo: u64, mut hi: u64) -> u64 {
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.held(mid) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    }

    /// Where a reader lapped at `cursor` continues: the oldest message
    /// whose descriptor and bytes are both still intact (the arena may
    /// have lapped the reader before the descriptors did), and always past
    /// `cursor` so every lap makes progress. The skipped messages,
    /// `target - cursor`, are the loss; each of them is gone for good.
    #[inline]
    pub fn lag_target(&self, cursor: u64) -> u64 {
        let head = self.head();
        let lo = cursor
            .wrapping_add(1)
            .max(head.saturating_sub(self.capacity()));
        self.first_held(lo, head)
    }

    /// The oldest message still whole (or `head` if none is).
    pub fn oldest_held(&self) -> u64 {
        let head = self.head();
        self.first_held(head.saturating_sub(self.capacity()), head)
    }

    /// The first message a new subscriber reads.
    pub fn start(&self, at: StartAt) -> u64 {
        match at {
            StartAt::Newest => self.head().saturating_sub(1),
            StartAt::Oldest => self.oldest_held(),
            StartAt::Next => self.head(),
        }
    }

    /// Whether message `next`, of `len` bytes, may be written without
    /// overwriting a message the slowest gated subscriber, at cursor
    /// `slowest` (`None` if there is none), has not read: its descriptor
    /// must be free (`next < slowest + capacity`), and it must end no more
    /// than `arena_words` past the start of message `slowest`, which the
    /// first rule keeps intact in `slowest`'s descriptor. A cursor ahead of
    /// `next`, or a descriptor of `slowest` that is not that message
    /// complete, is corruption: it counts as no room (the cautious answer,
    /// as in [`crate::ring::gate::GateCache::has_space`]) until that
    /// subscriber moves on or is evicted.
    ///
    /// The publisher calls it (or [`room_in`](Self::room_in)) before
    /// [`begin`](Self::begin), after the SeqCst fence that follows its
    /// previous message (see "Attaching without a race" in the gate).
    ///
    /// # Errors
    ///
    /// `TooLarge` if `len` is more than half the arena: such a message
    /// never fits.
    pub fn has_room(&self, next: u64, len: usize, slowest: Option<u64>) -> Result<bool, TooLarge> {
        let words = self.words_for(len)?;
        let Some(slowest) = slowest else {
            return Ok(true);
        };
        match slowest.cmp(&next) {
            CmpOrdering::Equal => return Ok(true),
            CmpOrdering::Greater => return Ok(false),
            CmpOrdering::Less if next - slowest >= self.capacity() => return Ok(false),
            CmpOrdering::Less => {}
        }
        // The subscriber's cursor was loaded with Acquire (the gate's
        // `min_cursor_before`), so its reads of `slowest - 1` and below
        // happened before we overwrite them. Acquire here pairs with the
        // complete stamp of a previous lease holder.
        if self.stamp(slowest) != complete(slowest) {
            return Ok(false);
        }
        let start = self.desc(slowest)[POS].load(Ordering::Relaxed);
        let end = self.place(self.reserved(), words).wrapping_add(words);
        Ok(end.wrapping_sub(start) <= self.arena_words())
    }

    /// [`has_room`](Self::has_room) for the slowest attached subscriber of
    /// `gate`, by a fresh scan of its table. As in
    /// [`crate::ring::gate::GateCache::has_space`], a scan counts only if
    /// the gate's epoch is the same after it as before (a subscriber
    /// attached beside another may be missed by a scan that saw the other
    /// move on); after a few scans that each saw an attach, no room.
    ///
    /// # Errors
    ///
    /// `TooLarge` if `len` is more than half the arena.
    pub fn room_in(&self, gate: &Gate<'_>, next: u64, len: usize) -> Result<bool, TooLarge> {
        self.words_for(len)?;
        let mut epoch = gate.ctrl().epoch();
        for _ in 0..STABLE_SCAN_TRIES {
            let slowest = gate.min_cursor_before(next, self.capacity());
            let after = gate.ctrl().epoch();
            if after == epoch {
                return self.has_room(next, len, slowest);
            }
            epoch = after;
        }
        Ok(false)
    }
}

/// Hooks for model checks and tests that stage a crashed publisher or a
/// corrupt descriptor.
#[doc(hidden)]
pub mod testing {
    use super::{VarlenRing, DESC_WORDS, LEN, POS};
    use crate::sync::Ordering;

    /// Sets `head` as a publisher that died before advancing it would leave it.
    pub fn set_head(ring: &VarlenRing<'_>, head: u64) {
        crate::ring::broadcast::testing::set_head(&ring.ctrl.broadcast, head);
    }

    /// Overwrites the position and length of message `seq`'s descriptor.
    pub fn set_descriptor(ring: &VarlenRing<'_>, seq: u64, pos: u64, len: u64) {
        let start = (seq & ring.desc_mask) as usize * DESC_WORDS;
        ring.descs[start + POS].store(pos, Ordering::Relaxed);
        ring.descs[start + LEN].store(len, Ordering::Relaxed);
    }

    /// Sets the arena's `reserved` position.
    pub fn set_reserved(ring: &VarlenRing<'_>, reserved: u64) {
        ring.ctrl.reserved.store(reserved, Ordering::Release);
    }
}

#[cfg(all(test, not(shmbus_loom)))]
mod tests {
    use super::*;

    struct Heap {
        ctrl: VarlenCtrl,
        words: Vec<AtomicU64>,
        capacity: usize,
        arena_bytes: usize,
    }

    impl Heap {
        fn new(capacity: usize, arena_bytes: usize) -> Self {
            let words = layout_words(capacity, arena_bytes).unwrap();
            Heap {
                ctrl: VarlenCtrl::new(),
                words: (0..words).map(|_| AtomicU64::new(0)).collect(),
                capacity,
                arena_bytes,
            }
        }

        fn ring(&self) -> VarlenRing<'_> {
            VarlenRing::new(&self.ctrl, &self.words, self.capacity, self.arena_bytes).unwrap()
        }
    }

    /// `len` bytes that depend on `seq`.
    fn message(seq: u64, len: usize) -> Vec<u8> {
        (0..len).map(|i| (seq as u8).wrapping_mul(31) ^ i as u8).collect()
    }

    fn read_vec(ring: &VarlenRing<'_>, seq: u64) -> Result<Vec<u8>, Read> {
        let mut out = vec![0u8; ring.max_message()];
        match ring.read(seq, &mut out) {
            Read::Message { len } => {
                out.truncate(len);
                Ok(out)
            }
            other => Err(other),
        }
    }

    #[test]
    fn every_length_round_trips_at_its_own_size() {
        let heap = Heap::new(8, 256);
        let ring = heap.ring();
        for len in 0..=ring.max_message() {
            let seq = ring.head();
            let before = ring.reserved();
            ring.publish(seq, &message(seq, len)).unwrap();
            let (taken, words) = (ring.reserved() - before, len.div_ceil(8) as u64);
            // Its own words, or (crossing the end) the wasted tail and its
            // words from the arena's start.
            assert!(taken == words || ring.reserved() % 32 == words, "len {len}");
            assert_eq!(read_vec(&ring, seq), Ok(message(seq, len)), "len {len}");
        }
    }

    #[test]
    fn message_that_would_cross_the_arena_end_starts_at_its_beginning() {
        // 8 words; 3-word messages at 0 and 3; the third would cross the
        // end at 6, so it goes to 8 (word 0), wasting words 6 and 7.
        let heap = Heap::new(8, 64);
        let ring = heap.ring();
        let mut starts = Vec::new();
        for seq in 0..3 {
            let reservation = ring.begin(seq, 24).unwrap();
            starts.push(reservation.pos());
            store_bytes(reservation.payload(), &message(seq, 24));
            ring.commit(reservation);
        }
        assert_eq!(starts, [0, 3, 8]);
        assert_eq!(ring.reserved(), 11);
        assert_eq!(read_vec(&ring, 2), Ok(message(2, 24)));
        // Message 0's words are reused by message 2: it is gone.
        assert_eq!(read_vec(&ring, 0), Err(Read::Overwritten));
        assert_eq!(read_vec(&ring, 1), Ok(message(1, 24)));
    }

    #[test]
    fn message_larger_than_half_the_arena_is_refused_naming_the_limit() {
        let heap = Heap::new(4, 64);
        let ring = heap.ring();
        assert_eq!(ring.max_message(), 32);
        assert!(ring.publish(0, &[7; 32]).is_ok());
        let err = ring.publish(1, &[7; 33]).unwrap_err();
        assert_eq!(err, TooLarge { len: 33, max: 32 });
        assert!(err.to_string().contains("32 bytes at most"), "{err}");
        assert!(ring.begin(1, 33).is_err());
        assert_eq!(ring.has_room(1, 33, None), Err(TooLarge { len: 33, max: 32 }));
        assert_eq!((ring.head(), ring.reserved()), (1, 4), "nothing written");
        assert_eq!(read_vec(&ring, 1), Err(Read::Empty));
    }

    #[test]
    fn corrupt_descriptors_are_reported_not_trusted() {
        let heap = Heap::new(4, 64);
        let ring = heap.ring();
        ring.publish(0, &message(0, 16)).unwrap();
        let mut out = [0u8; 64];
        for (pos, len) in [
            (0, u64::MAX),   // absurd length
            (0, 33),         // more than half the arena
            (6, 24),         // runs past the arena's end
            (u64::MAX, 8),   // position never handed out
            (1, 16),         // ends past `reserved`
        ] {
            testing::set_descriptor(&ring, 0, pos, len);
            let got = ring.read(0, &mut out);
            assert!(
                matches!(got, Read::BadDescriptor { .. } | Read::Overwritten),
                "pos {pos} len {len}: {got:?}"
            );
            // Nothing else panics on it either.
            let _ = ring.lag_target(0);
            let _ = ring.has_room(1, 8, Some(0));
            let _ = ring.resume();
        }
        // `resume` above may have repaired `reserved` from a plausible
        // corrupt descriptor; put it back where message 0 left it.
        testing::set_reserved(&ring, 2);
        testing::set_descriptor(&ring, 0, 0, u64::MAX);
        assert_eq!(
            ring.read(0, &mut out),
            Read::BadDescriptor { pos: 0, len: u64::MAX }
        );
        testing::set_descriptor(&ring, 0, 6, 24);
        assert_eq!(ring.read(0, &mut out), Read::BadDescriptor { pos: 6, len: 24 });
        testing::set_descriptor(&ring, 0, 1, 16);
        assert_eq!(ring.read(0, &mut out), Read::BadDescriptor { pos: 1, len: 16 });
        // A short buffer gets the message's first bytes and its length.
        testing::set_descriptor(&ring, 0, 0, 16);
        let mut short = [0u8; 4];
        assert_eq!(ring.read(0, &mut short), Read::Message { len: 16 });
        assert_eq!(short[..], message(0, 16)[..4]);
    }

    #[test]
    fn reader_lapped_by_the_arena_skips_exactly_the_overwritten_messages() {
        // Many descriptors, 8 words of arena, 2-word messages: message k
        // starts at 2k; after 6 messages `reserved` is 12, so only those
        // starting at 4 or later are whole.
        let heap = Heap::new(16, 64);
        let ring = heap.ring();
        for seq in 0..6 {
            ring.publish(seq, &message(seq, 16)).unwrap();
        }
        assert_eq!(read_vec(&ring, 0), Err(Read::Overwritten));
        assert_eq!(read_vec(&ring, 1), Err(Read::Overwritten));
        assert_eq!(ring.lag_target(0), 2);
        assert_eq!(ring.lag_target(1), 2);
        assert_eq!(ring.oldest_held(), 2);
        for seq in 2..6 {
            assert_eq!(read_vec(&ring, seq), Ok(message(seq, 16)));
        }
        assert_eq!(read_vec(&ring, 6), Err(Read::Empty));
    }

    #[test]
    fn reader_lapped_by_the_descriptors_skips_exactly_the_overwritten_messages() {
        // 2 descriptors, a big arena: only the last 2 messages are held.
        let heap = Heap::new(2, 1024);
        let ring = heap.ring();
        for seq in 0..5 {
            ring.publish(seq, &message(seq, 8)).unwrap();
        }
        assert_eq!(read_vec(&ring, 0), Err(Read::Overwritten));
        assert_eq!(ring.lag_target(0), 3);
        assert_eq!(read_vec(&ring, 3), Ok(message(3, 8)));
        assert_eq!(read_vec(&ring, 4), Ok(message(4, 8)));
    }

    #[test]
    fn lag_target_takes_the_tighter_of_arena_and_descriptors() {
        // 4 descriptors, 8 words; lengths 1, 4, 1, 4, 2 words: starts 0, 1,
        // 5, 8 (6 + 4 would cross the end), 12; reserved 14. Descriptors
        // hold 1..5; the arena holds what starts at 6 or later: 3 and 4.
        let heap = Heap::new(4, 64);
        let ring = heap.ring();
        for (seq, len) in [8, 32, 8, 32, 16].into_iter().enumerate() {
            ring.publish(seq as u64, &message(seq as u64, len)).unwrap();
        }
        assert_eq!(ring.reserved(), 14);
        assert_eq!(ring.lag_target(0), 3);
        assert_eq!(read_vec(&ring, 2), Err(Read::Overwritten));
        assert_eq!(ring.lag_target(2), 3);
        assert_eq!(read_vec(&ring, 3), Ok(message(3, 32)));
        assert_eq!(ring.start(StartAt::Oldest), 3);
        assert_eq!(ring.start(StartAt::Newest), 4);
        assert_eq!(ring.start(StartAt::Next), 5);
    }

    #[test]
    fn lossless_room_needs_a_free_descriptor_and_free_bytes() {
        // 2 descriptors, 8 words.
        let heap = Heap::new(2, 64);
        let ring = heap.ring();
        assert_eq!(ring.has_room(0, 32, None), Ok(true));
        assert_eq!(ring.has_room(0, 32, Some(0)), Ok(true));
        ring.publish(0, &message(0, 32)).unwrap(); // words 0..4
        // Slowest at 0: 4 more words fit (end 8 <= 0 + 8), 5 do not.
        assert_eq!(ring.has_room(1, 32, Some(0)), Ok(true));
        ring.publish(1, &message(1, 8)).unwrap(); // word 4
        assert_eq!(ring.has_room(2, 8, Some(0)), Ok(false), "descriptor of 0");
        assert_eq!(ring.has_room(2, 8, Some(1)), Ok(true));
        // 4 words from 5 cross the end: they would go to 8..12, over 0..4,
        // which is message 0's (gone once the slowest is at 1) but for
        // slowest 1 (start 4) ends at 12 <= 12.
        assert_eq!(ring.has_room(2, 32, Some(1)), Ok(true));
        ring.publish(2, &message(2, 32)).unwrap(); // words 8..12
        // Slowest at 2 (start 8): 4 words at 12..16 fit, and nothing more.
        assert_eq!(ring.has_room(3, 32, Some(2)), Ok(true));
        ring.publish(3, &message(3, 32)).unwrap(); // words 12..16
        assert_eq!(ring.has_room(4, 8, Some(2)), Ok(false), "descriptor of 2");
        assert_eq!(ring.has_room(4, 8, Some(3)), Ok(true));
        // Every message the slowest has not read is whole.
        assert_eq!(read_vec(&ring, 2), Ok(message(2, 32)));
        assert_eq!(read_vec(&ring, 3), Ok(message(3, 32)));
        // A cursor ahead of `next` is corruption: no room.
        assert_eq!(ring.has_room(4, 8, Some(9)), Ok(false));
    }

    #[test]
    fn room_in_a_gate_is_room_for_its_slowest_subscriber() {
        use crate::ring::gate::{testing as gate_testing, GateCtrl, SubscriberEntry};
        use crate::ring::Owner;
        let heap = Heap::new(4, 64);
        let ring = heap.ring();
        ring.publish(0, &message(0, 24)).unwrap(); // words 0..3
        ring.publish(1, &message(1, 20)).unwrap(); // words 3..6
        let ctrl = GateCtrl::new();
        let entries: Vec<_> = (0..2).map(|_| SubscriberEntry::new()).collect();
        let gate = Gate::new(&ctrl, &entries);
        assert_eq!(ring.room_in(&gate, 2, 17), Ok(true), "no subscriber");
        gate_testing::attached(&entries[0], Owner::new(1, 1), 1);
        // Message 2 goes to words 8..11, over message 0's bytes only.
        assert_eq!(ring.room_in(&gate, 2, 17), Ok(true));
        gate_testing::attached(&entries[1], Owner::new(2, 1), 0);
        assert_eq!(ring.room_in(&gate, 2, 17), Ok(false), "the slowest has not read 0");
        assert_eq!(ring.room_in(&gate, 2, 8), Ok(true), "one word still fits at 6");
        assert_eq!(
            ring.room_in(&gate, 2, 33),
            Err(TooLarge { len: 33, max: 32 })
        );
    }

    #[test]
    fn abandoned_message_is_never_seen_and_the_next_holder_resumes() {
        let heap = Heap::new(4, 64);
        let ring = heap.ring();
        ring.publish(0, &message(0, 8)).unwrap();
        let abandoned = ring.begin(1, 16).unwrap();
        store_bytes(abandoned.payload(), &[0xee; 16]);
        drop(abandoned);
        assert_eq!(read_vec(&ring, 1), Err(Read::Empty));
        assert_eq!(ring.published(), 1);
        let resume = ring.resume();
        assert_eq!(resume, Resume { seq: 1, position: 3 });
        ring.publish(1, &message(1, 16)).unwrap();
        assert_eq!(read_vec(&ring, 1), Ok(message(1, 16)));
        assert_eq!(read_vec(&ring, 0), Ok(message(0, 8)));
    }

    #[test]
    fn message_completed_by_a_publisher_that_died_before_advancing_head_counts() {
        let heap = Heap::new(4, 64);
        let ring = heap.ring();
        ring.publish(0, &message(0, 8)).unwrap();
        ring.publish(1, &message(1, 8)).unwrap();
        testing::set_head(&ring, 1);
        assert_eq!(ring.published(), 2);
        assert_eq!(ring.resume(), Resume { seq: 2, position: 2 });
        assert_eq!(ring.head(), 2, "head repaired");
    }

    #[test]
    fn resume_repairs_a_reserved_position_below_the_last_message() {
        let heap = Heap::new(4, 64);
        let ring = heap.ring();
        ring.publish(0, &message(0, 24)).unwrap();
        testing::set_reserved(&ring, 1);
        assert_eq!(ring.resume(), Resume { seq: 1, position: 3 });
        assert_eq!(ring.reserved(), 3);
        // A descriptor that starts past `reserved` is the corrupt word: it
        // does not push `reserved` on (which would discard every message).
        testing::set_descriptor(&ring, 0, u64::MAX, 8);
        assert_eq!(ring.resume(), Resume { seq: 1, position: 3 });
    }

    /// Seeded random lengths from 0 to the limit, a publisher that never
    /// waits and two readers on other threads, one slow: every message a
    /// reader gets is whole and the one it expects (each word of message
    /// `seq` depends on `seq` and the length on both), and received +
    /// lagged == sent for each. Then the same with the lossless rule
    /// (`has_room` against the slower reader's published cursor): nothing
    /// lost.
    #[test]
    fn threads_with_random_lengths_get_whole_messages_and_exact_loss() {
        const SENT: u64 = 20_000;
        fn len_of(seq: u64) -> usize {
            // splitmix64 of the sequence number: reproducible lengths.
            let mut z = seq.wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) % 257) as usize
        }
        fn body(seq: u64) -> Vec<u8> {
            let len = len_of(seq);
            (0..len).map(|i| (seq.wrapping_mul(131) >> (i % 8)) as u8 ^ i as u8).collect()
        }
        for lossless in [false, true] {
            let heap = Heap::new(64, 1024);
            let ring = heap.ring();
            let slow_cursor = AtomicU64::new(0);
            std::thread::scope(|scope| {
                let readers: Vec<_> = [false, true]
                    .into_iter()
                    .map(|slow| {
                        let (heap, slow_cursor) = (&heap, &slow_cursor);
                        scope.spawn(move || {
                            let ring = heap.ring();
                            let (mut cursor, mut received, mut lagged) = (0u64, 0u64, 0u64);
                            let mut out = vec![0u8; ring.max_message()];
                            while cursor < SENT {
                                match ring.read(cursor, &mut out) {
                                    Read::Message { len } => {
                                        assert_eq!(out[..len], body(cursor)[..], "at {cursor}");
                                        cursor += 1;
                                        received += 1;
                                        if slow {
                                            slow_cursor.store(cursor, Ordering::Release);
                                            if cursor % 64 == 0 {
                                                std::thread::yield_now();
                                            }
                                        }
                                    }
                                    Read::Empty => std::thread::yield_now(),
                                    Read::Overwritten => {
                                        assert!(!(lossless && slow), "lossless loss at {cursor}");
                                        let target = ring.lag_target(cursor);
                                        assert!(target > cursor);
                                        lagged += target - cursor;
                                        cursor = target;
                                    }
                                    bad => panic!("{bad:?} at {cursor}"),
                                }
                            }
                            (received, lagged)
                        })
                    })
                    .collect();
                for seq in 0..SENT {
                    let bytes = body(seq);
                    if lossless {
                        while !ring
                            .has_room(seq, bytes.len(), Some(slow_cursor.load(Ordering::Acquire)))
                            .unwrap()
                        {
                            std::thread::yield_now();
                        }
                    }
                    ring.publish(seq, &bytes).unwrap();
                }
                for reader in readers {
                    let (received, lagged) = reader.join().unwrap();
                    assert_eq!(received + lagged, SENT, "lossless {lossless}");
                }
            });
        }
    }

    #[test]
    fn rejects_memory_of_the_wrong_shape() {
        let heap = Heap::new(4, 64);
        let ctrl = &heap.ctrl;
        assert!(VarlenRing::new(ctrl, &heap.words, 3, 64).is_err());
        assert!(VarlenRing::new(ctrl, &heap.words, 4, 48).is_err());
        assert!(VarlenRing::new(ctrl, &heap.words[1..], 4, 64).is_err());
        assert!(VarlenRing::new(ctrl, &heap.words, 4, 64).is_ok());
        assert_eq!(layout_words(4, 64), Some(16 + 8));
        assert_eq!(layout_words(4, 4), None);
        assert_eq!(layout_words(usize::MAX / 2 + 1, 64), None);
    }
}

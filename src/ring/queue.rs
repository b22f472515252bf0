//! Work queue (many producers, many consumers): each message is taken by
//! exactly one consumer.
//!
//! # Algorithm
//!
//! Dmitry Vyukov's bounded MPMC queue ("Bounded MPMC queue",
//! 1024cores.net), as crossbeam's `ArrayQueue` also uses it. A power-of-two
//! array of slots, each with a sequence word; `tail` is the next position
//! to push, `head` the next to pop. For position `pos` in slot
//! `pos & (capacity - 1)`:
//!
//! | slot sequence        | meaning                                          |
//! |----------------------|--------------------------------------------------|
//! | `pos`                | free: a producer may claim `pos`                 |
//! | `pos + 1`            | holds message `pos`: a consumer may claim it     |
//! | `TOMB \| (pos + 1)`  | a tombstone for `pos`: a consumer claims and skips it |
//! | `pos + capacity`     | consumed: free for position `pos + capacity`     |
//!
//! A producer claims `pos` by compare-and-swap on `tail`, writes the
//! message, then stores `pos + 1`. A consumer claims by compare-and-swap on
//! `head`, copies the message, then stores `pos + capacity`. Per producer,
//! positions grow, so messages of one producer are consumed in the order it
//! pushed them (FIFO per producer). Positions stay below 2^63 (centuries at
//! a billion messages a second), so the tombstone bit never collides.
//!
//! # Crash safety
//!
//! A process can die between claiming a position and finishing with it: a
//! producer that dies there leaves a slot consumers wait on forever, a
//! consumer one that producers wait on when they come round. So every
//! producer and consumer has an entry in a *claim table* holding its
//! [`Owner`] token and its *intent*: the position it is about to claim,
//! written **before** the compare-and-swap, cleared after it has finished
//! with the slot. A survivor stuck at position `pos` looks for entries whose
//! intent is `pos`:
//!
//! - one of them is alive or of unknown liveness: that may be the claimer,
//!   still working, so wait;
//! - all of them are dead: the claimer is dead, and the survivor finishes
//!   the slot in its place with **one compare-and-swap** on the sequence
//!   word: a producer's slot becomes a tombstone, a consumer's slot becomes
//!   free. Each such recovery is one lost message, counted.
//!
//! # Exactly-once loss accounting: the recovery journal
//!
//! Counting a loss and finishing the slot are two words; a recoverer killed
//! between them would lose or double a count. So recoveries go through a
//! one-entry journal in the control block, held by at most one process at a
//! time (its owner word is a token; a dead holder's journal is taken over):
//!
//! 1. take the journal (or take over a dead holder's, finishing its step 4);
//! 2. write the position into the journal;
//! 3. add one to the loss counter **and** set its *pending* bit, in one
//!    atomic add;
//! 4. compare-and-swap the slot from stuck to finished;
//! 5. clear the pending bit, and give the journal back.
//!
//! A successor that finds a pending bit redoes step 4 (a no-op if it was
//! done) and step 5; one that finds none starts from the slot's state. So a
//! recoverer killed between any two steps leaves a state the next survivor
//! completes, and each loss is counted once. Recoveries are rare; the
//! journal costs the hot path nothing.
//!
//! Delivery is at most once: a message whose consumer died after claiming
//! it is lost, and counted in [`QueueCtrl::lost_in_consume`]. A message
//! counts as delivered once its consumer released the slot.
//!
//! # Variable-size messages
//!
//! [`QueueRing::new_var`] runs the same algorithm over the 64-byte *units*
//! of an arena ([`UNIT_BYTES`]), with a sequence word per unit in an array
//! of its own, so that a message's header (length, span) and payload lie
//! contiguous in the arena. A message of `len` bytes takes
//! [`units_for`]`(len)` consecutive positions, its *span*:
//!
//! - A producer claims all of them with **one** compare-and-swap on `tail`,
//!   made only once every unit is free for its position (a check that
//!   loads each sequence word once: a unit freed between two loads would
//!   look ahead of its position). A message never wraps: one that would
//!   cross the arena's end goes to its start, after a *padding* tombstone
//!   to the end, which the claim publishes at once (span word, then the
//!   tombstone sequence). The positions of a claim's inner units keep
//!   their "free" sequence while it is held; only the first unit's
//!   sequence says published or tombstone.
//! - A consumer reads the span from the published first unit's header
//!   (bounded: a message's span within the arena's end and half the
//!   arena, a tombstone's within the arena) and claims all the units with
//!   one compare-and-swap on `head`. It frees the inner units first and
//!   the first unit last, so a claim is released once its first unit is,
//!   which recoveries rely on.
//! - A claim-table entry names a claim's first position and its span
//!   (span written first). A survivor stuck at a position finds the claim
//!   covering it (the latest start named at or before it whose span
//!   reaches it), and, once every entry naming that start is known dead,
//!   finishes the claim through the journal: a producer's rest becomes one
//!   tombstone (its span in the journal too), a consumer's units are all
//!   freed, each by a compare-and-swap from its stuck sequence. A loss is
//!   counted by the recovery that finishes a message's first unit.
//! - Positions count units, not messages.

use crate::ring::{load_bytes, store_bytes, Liveness, Owner, SLOT_HEADER_WORDS};
pub use crate::ring::{slots_words, stride_words};
use crate::sync::{spin_hint, AtomicU64, Ordering};

/// Tombstone bit of a raw slot sequence.
const TOMB: u64 = 1 << 63;
/// Intent of a claim-table entry that is not claiming anything.
pub const NO_INTENT: u64 = u64::MAX;
/// The pending bit of a loss counter (its low bit; the count is above it).
const PENDING: u64 = 1;

/// Shared control block of a work queue: five cache lines.
#[repr(C)]
pub struct QueueCtrl {
    /// Next position to push. Producers claim by compare-and-swap.
    tail: AtomicU64,
    _pad0: [u8; 56],
    /// Next position to pop. Consumers claim by compare-and-swap.
    head: AtomicU64,
    _pad1: [u8; 56],
    /// Consumers sleep here when the queue is empty.
    not_empty: crate::wait::WakeWords,
    _pad2: [u8; 48],
    /// Producers sleep here when the queue is full.
    not_full: crate::wait::WakeWords,
    _pad3: [u8; 48],
    /// Messages lost because their producer died after claiming a slot and
    /// before publishing (the push never returned): count << 1 | pending.
    lost_in_push: AtomicU64,
    /// Messages lost because their consumer died after claiming them and
    /// before releasing the slot: count << 1 | pending.
    lost_in_consume: AtomicU64,
    /// Nonzero once any producer has attached.
    had_producer: AtomicU64,
    /// Token of the process holding the recovery journal, or 0.
    journal: AtomicU64,
    /// Position the journal holder is recovering.
    journal_pos: AtomicU64,
    /// Units of the claim it is finishing (variable-size queues).
    journal_span: AtomicU64,
    _pad4: [u8; 16],
}

#[cfg(not(shmbus_loom))]
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<QueueCtrl>() == 320);
    assert!(offset_of!(QueueCtrl, head) == 64);
    assert!(offset_of!(QueueCtrl, not_empty) == 128);
    assert!(offset_of!(QueueCtrl, not_full) == 192);
    assert!(offset_of!(QueueCtrl, lost_in_push) == 256);
    assert!(offset_of!(QueueCtrl, journal_pos) == 288);
};

impl QueueCtrl {
    pub fn new() -> Self {
        QueueCtrl {
            tail: AtomicU64::new(0),
            _pad0: [0; 56],
            head: AtomicU64::new(0),
            _pad1: [0; 56],
            not_empty: crate::wait::WakeWords::new(),
            _pad2: [0; 48],
            not_full: crate::wait::WakeWords::new(),
            _pad3: [0; 48],
            lost_in_push: AtomicU64::new(0),
            lost_in_consume: AtomicU64::new(0),
            had_producer: AtomicU64::new(0),
            journal: AtomicU64::new(0),
            journal_pos: AtomicU64::new(0),
            journal_span: AtomicU64::new(0),
            _pad4: [0; 16],
        }
    }

    pub fn not_empty(&self) -> &crate::wait::WakeWords {
        &self.not_empty
    }

    pub fn not_full(&self) -> &crate::wait::WakeWords {
        &self.not_full
    }

    /// Messages lost to producers that died mid-push.
    pub fn lost_in_push(&self) -> u64 {
        self.lost_in_push.load(Ordering::Relaxed) >> 1
    }

    /// Messages lost to consumers that died mid-pop.
    pub fn lost_in_consume(&self) -> u64 {
        self.lost_in_consume.load(Ordering::Relaxed) >> 1
    }

    /// Positions pushed (claimed) so far.
    pub fn pushed(&self) -> u64 {
        self.tail.load(Ordering::Acquire)
    }

    /// Positions popped (claimed) so far.
    pub fn popped(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// Whether any producer has ever attached.
    pub fn had_producer(&self) -> bool {
        self.had_producer.load(Ordering::Acquire) != 0
    }

    /// The holder of the recovery journal, if any (for inspection).
    pub fn journal_holder(&self) -> Option<Owner> {
        Owner::from_token(self.journal.load(Ordering::Acquire))
    }
}

impl Default for QueueCtrl {
    fn default() -> Self {
        Self::new()
    }
}

/// One entry of a claim table: who, and which position it is claiming.
/// Padded to a cache line: each process writes only its own.
#[repr(C)]
pub struct ClaimEntry {
    /// Owner token, or 0 when free.
    owner: AtomicU64,
    /// Position being claimed or worked on, or [`NO_INTENT`].
    intent: AtomicU64,
    /// Units the claim covers, from `intent` on (variable-size queues;
    /// written before `intent`).
    span: AtomicU64,
    /// Whether the holder skips its wakeup fences and is counted for it
    /// (`crate::wait`'s `LIGHT_*`; see "Light writers that share" there).
    light: AtomicU64,
    _pad: [u8; 32],
}

#[cfg(not(shmbus_loom))]
const _: () = assert!(core::mem::size_of::<ClaimEntry>() == 64);

impl ClaimEntry {
    pub fn new() -> Self {
        ClaimEntry {
            owner: AtomicU64::new(0),
            intent: AtomicU64::new(NO_INTENT),
            span: AtomicU64::new(0),
            light: AtomicU64::new(0),
            _pad: [0; 32],
        }
    }

    /// The holder's light flag (see the field).
    #[inline]
    pub fn light_flag(&self) -> &AtomicU64 {
        &self.light
    }

    pub fn owner(&self) -> Option<Owner> {
        Owner::from_token(self.owner.load(Ordering::Acquire))
    }

    /// Whether `me` holds this entry: one relaxed load of a line only its
    /// holder writes, for the holder's check before each claim.
    #[inline]
    pub fn held_by(&self, me: Owner) -> bool {
        self.owner.load(Ordering::Relaxed) == me.token()
    }

    pub fn intent(&self) -> u64 {
        self.intent.load(Ordering::Acquire)
    }

    /// Units the claim at `intent` covers (variable-size queues).
    pub fn span(&self) -> u64 {
        self.span.load(Ordering::Relaxed)
    }

    /// Names the claim this entry is about to make: `span` units from
    /// `pos` (the span first, so that whoever reads the intent with
    /// Acquire after the claim's Release reads the span too).
    #[inline]
    fn name(&self, pos: u64, span: u64) {
        self.span.store(span, Ordering::Relaxed);
        self.intent.store(pos, Ordering::Relaxed);
    }
}

impl Default for ClaimEntry {
    fn default() -> Self {
        Self::new()
    }
}

/// A claimed position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a claim must be finished, or the slot stays stuck"]
pub struct Claim {
    /// The message's position (after any padding the claim put first).
    pos: u64,
    /// Units from `pos` the message (or tombstone) covers: 1 for fixed
    /// slots. (A `u32`, and `Claim` two words: at three, the endpoints'
    /// results that carry one no longer pass in registers, and a fixed
    /// queue's pop in place cost three times as much in criterion.)
    span: u32,
    /// A consumer's claim of a tombstone (1): nothing to read. A `u32`, not
    /// a `bool`: a `bool`'s spare values let the enums that carry a claim
    /// keep their tags in it, stored a byte or two at a time and read
    /// back sixteen bytes at a time, and a fixed queue's pop in place cost
    /// 37 ns against 31 (criterion `queue-64B`).
    tomb: u32,
}

impl Claim {
    /// A claim of nothing in any ring, naming position `pos`: what a
    /// work-queue endpoint on another transport (pipes) hands its guards.
    pub const fn detached(pos: u64) -> Claim {
        Claim {
            pos,
            span: 0,
            tomb: 0,
        }
    }

    pub fn pos(self) -> u64 {
        self.pos
    }

    /// Units the claim covers (1 for fixed slots).
    #[inline]
    pub fn span(self) -> u64 {
        u64::from(self.span)
    }
}

/// Why a push could not claim a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushBlocked {
    /// Every slot holds an unconsumed message.
    Full,
    /// The slot for `pos` was claimed by a consumer that has not released
    /// it: a slow consumer, or a dead one ([`QueueRing::recover`]).
    Unreleased { pos: u64 },
    /// The slot for `pos` holds a sequence no protocol step writes.
    Corrupt { pos: u64, seq: u64 },
}

/// Why a pop could not claim a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PopBlocked {
    /// No message has been pushed.
    Empty,
    /// Position `pos` was claimed by a producer that has not published it:
    /// a slow producer, or a dead one ([`QueueRing::recover`]).
    Unpublished { pos: u64 },
    /// The slot for `pos` holds a sequence no protocol step writes.
    Corrupt { pos: u64, seq: u64 },
}

/// What a popped slot held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Popped {
    /// A message of `len` bytes, copied out.
    Message { len: usize },
    /// A tombstone left for a producer that died: no message.
    Tombstone,
    /// A length that does not fit the slot: the segment is corrupt.
    BadLength { len: u64 },
}

/// Which side of a claim died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// A producer, between claiming `pos` and publishing it.
    Push,
    /// A consumer, between claiming `pos` and releasing it.
    Consume,
}

/// What a recovery attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// The claimer is dead; we finished its slot (and counted the loss, if
    /// a message was lost).
    Recovered,
    /// A live (or possibly live) process may hold the claim, or another
    /// recoverer is at work: wait.
    Alive,
    /// The slot is no longer stuck (finished meanwhile, or recovered by
    /// someone else).
    NotStuck,
    /// The slot is stuck but no claim-table entry names its position: the
    /// claimer is just finishing (look again), or the table was corrupted
    /// (see [`QueueRing::recover_orphan`]).
    Unclaimed,
    /// The caller's `proceed` said stop (a model of a recoverer that died
    /// there); the state left is one any survivor completes.
    Stopped,
}

/// A stuck claim to finish: its first position, its units (1 for fixed
/// slots), the sequence its first slot (or unit) holds, and whether
/// finishing it loses a message (not for a tombstone, nor for the rest of
/// a variable-size claim whose message was finished already).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stuck {
    pos: u64,
    span: u64,
    from: u64,
    counts: bool,
}

/// Who may hold a stuck position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claimers {
    /// Every entry naming it is dead.
    Dead,
    /// One naming it may live.
    MayLive,
    /// No entry names it.
    Nobody,
}

/// The steps of a recovery, named for crash tests that stop a recoverer
/// between two of them (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryStep {
    /// The journal is ours; nothing written yet.
    JournalTaken,
    /// The loss is counted and marked pending; the slot is still stuck.
    Counted,
    /// The slot is finished; the pending mark is still set.
    SlotFinished,
    /// The pending mark is cleared; the journal is still ours.
    Cleared,
}

impl RecoveryStep {
    /// The test-hook name of this step (`SHMBUS_TEST_HOOK`).
    pub fn hook(self) -> &'static str {
        match self {
            RecoveryStep::JournalTaken => "stall-recovery-journal-taken",
            RecoveryStep::Counted => "stall-recovery-counted",
            RecoveryStep::SlotFinished => "stall-recovery-slot-finished",
            RecoveryStep::Cleared => "stall-recovery-cleared",
        }
    }
}

/// Bytes of a unit of a variable-size queue's arena: a message takes whole
/// units, its header (length, span) first.
pub const UNIT_BYTES: usize = 64;
const UNIT_WORDS: usize = UNIT_BYTES / 8;
/// Header words of a variable-size message: its length, its span in units.
const VAR_HEADER_WORDS: usize = 2;

/// Words of a variable-size queue of `units` units: a sequence word per
/// unit, then the arena. `None` on overflow.
pub fn var_words(units: usize) -> Option<usize> {
    units.checked_mul(1 + UNIT_WORDS)
}

/// Units a message of `len` bytes takes (its header included).
#[inline]
pub fn units_for(len: usize) -> u64 {
    (len.saturating_add(VAR_HEADER_WORDS * 8)).div_ceil(UNIT_BYTES) as u64
}

/// The largest message of a variable-size queue of `units` units: with
/// its header, half the arena, so that a message padded past the arena's
/// end always fits once the queue is empty.
pub fn var_max_message(units: usize) -> usize {
    (units / 2 * UNIT_BYTES).saturating_sub(VAR_HEADER_WORDS * 8)
}

/// A view of one work queue: control block, claim tables, slots.
///
/// Fixed slots: each slot holds its sequence word, the message length and
/// the payload. Variable-size messages: the same algorithm over *units* of
/// an arena, a sequence word each (in an array of their own, so that a
/// message's bytes are contiguous); a message claims `span` consecutive
/// positions with one compare-and-swap (see "Variable-size messages" in
/// the module docs).
#[derive(Clone, Copy)]
pub struct QueueRing<'a> {
    ctrl: &'a QueueCtrl,
    producers: &'a [ClaimEntry],
    consumers: &'a [ClaimEntry],
    /// Fixed: the slots. Variable: a sequence word per unit.
    slots: &'a [AtomicU64],
    /// Variable: the arena, [`UNIT_WORDS`] a unit; empty for fixed slots.
    arena: &'a [AtomicU64],
    mask: u64,
    /// Words from one sequence word to the next: a slot, or 1.
    stride: usize,
    /// The largest message.
    slot_bytes: usize,
    var: bool,
}

/// Error building a view over memory of the wrong shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadShape;

#[inline]
const fn tomb(pos: u64) -> u64 {
    pos.wrapping_add(1) | TOMB
}

/// How far slot sequence `seq` is ahead of what a claimer of `pos` needs
/// (`pos + ready`: 0 for a producer, 1 for a consumer), tombstone bit
/// aside; negative when something holds the slot back.
#[inline]
const fn lead(seq: u64, pos: u64, ready: u64) -> i64 {
    (seq & !TOMB).wrapping_sub(pos.wrapping_add(ready)) as i64
}

impl<'a> QueueRing<'a> {
    pub fn new(
        ctrl: &'a QueueCtrl,
        producers: &'a [ClaimEntry],
        consumers: &'a [ClaimEntry],
        slots: &'a [AtomicU64],
        capacity: usize,
        slot_bytes: usize,
    ) -> Result<Self, BadShape> {
        // Capacity 1 would make "holds message pos" (sequence pos + 1) look
        // like "free for position pos + 1": Vyukov's queue needs two slots.
        if capacity < 2
            || !capacity.is_power_of_two()
            || slots_words(capacity, slot_bytes) != Some(slots.len())
        {
            return Err(BadShape);
        }
        Ok(QueueRing {
            ctrl,
            producers,
            consumers,
            slots,
            arena: &[],
            mask: capacity as u64 - 1,
            stride: stride_words(slot_bytes),
            slot_bytes,
            var: false,
        })
    }

    /// A variable-size queue of `units` units (a power of two, at least 4)
    /// over `words`, [`var_words`]`(units)` long.
    pub fn new_var(
        ctrl: &'a QueueCtrl,
        producers: &'a [ClaimEntry],
        consumers: &'a [ClaimEntry],
        words: &'a [AtomicU64],
        units: usize,
    ) -> Result<Self, BadShape> {
        // Spans are `u32`s in a `Claim`.
        if !(4..=1 << 31).contains(&units)
            || !units.is_power_of_two()
            || var_words(units) != Some(words.len())
        {
            return Err(BadShape);
        }
        let (slots, arena) = words.split_at(units);
        Ok(QueueRing {
            ctrl,
            producers,
            consumers,
            slots,
            arena,
            mask: units as u64 - 1,
            stride: 1,
            slot_bytes: var_max_message(units),
            var: true,
        })
    }

    pub fn ctrl(&self) -> &'a QueueCtrl {
        self.ctrl
    }

    /// Slots, or (variable-size) units.
    pub fn capacity(&self) -> u64 {
        self.mask + 1
    }

    /// The largest message: the slot size, or half the arena less a
    /// header.
    pub fn slot_bytes(&self) -> usize {
        self.slot_bytes
    }

    /// Whether messages take their own length (units of an arena).
    pub fn is_variable(&self) -> bool {
        self.var
    }

    pub fn producers(&self) -> &'a [ClaimEntry] {
        self.producers
    }

    pub fn consumers(&self) -> &'a [ClaimEntry] {
        self.consumers
    }

    /// A fixed slot: sequence, length, payload.
    #[inline]
    fn slot(&self, pos: u64) -> &'a [AtomicU64] {
        let start = (pos & self.mask) as usize * self.stride;
        &self.slots[start..start + self.stride]
    }

    /// A variable-size queue's arena from the unit of `pos` to its end:
    /// a message's header, then its payload.
    #[inline]
    fn unit(&self, pos: u64) -> &'a [AtomicU64] {
        &self.arena[(pos & self.mask) as usize * UNIT_WORDS..]
    }

    /// The span word of a variable-size message or tombstone at `pos`.
    #[inline]
    fn span_word(&self, pos: u64) -> &'a AtomicU64 {
        &self.unit(pos)[1]
    }

    #[inline]
    fn seq_word(&self, pos: u64) -> &'a AtomicU64 {
        &self.slots[(pos & self.mask) as usize * self.stride]
    }

    // The sequence is stored minus the slot index, so that all-zero memory
    // is the initial state (slot i free for position i). The tombstone bit
    // rides above it.
    #[inline]
    fn seq(&self, pos: u64) -> u64 {
        // SYNC POINT: pairs with the Release stores in `store_seq` and the
        // recoveries' compare-and-swaps.
        let stored = self.seq_word(pos).load(Ordering::Acquire);
        self.decode(pos, stored)
    }

    /// The sequence of position `pos`'s slot from its stored word.
    #[inline]
    fn decode(&self, pos: u64, stored: u64) -> u64 {
        (stored & !TOMB).wrapping_add(pos & self.mask) & !TOMB | (stored & TOMB)
    }

    #[inline]
    fn encode(&self, pos: u64, seq: u64) -> u64 {
        (seq & !TOMB).wrapping_sub(pos & self.mask) & !TOMB | (seq & TOMB)
    }

    #[inline]
    fn store_seq(&self, pos: u64, seq: u64) {
        self.seq_word(pos).store(self.encode(pos, seq), Ordering::Release);
    }

    fn cas_seq(&self, pos: u64, from: u64, to: u64) -> bool {
        self.seq_word(pos)
            .compare_exchange(
                self.encode(pos, from),
                self.encode(pos, to),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// Whether a push would find a free slot now (one load each of `tail`
    /// and a slot; for wait loops).
    #[inline]
    pub fn can_push(&self) -> bool {
        let pos = self.ctrl.tail.load(Ordering::Acquire);
        self.seq(pos) == pos
    }

    /// Whether a push of `len` bytes would find room now: as
    /// [`can_push`](Self::can_push), and for variable-size messages every
    /// unit the message (and any padding before it) would take.
    #[inline]
    pub fn can_push_len(&self, len: usize) -> bool {
        if !self.var {
            return self.can_push();
        }
        let pos = self.ctrl.tail.load(Ordering::Acquire);
        self.first_not_free(pos, self.var_extent(pos, units_for(len)).1)
            .is_none()
    }

    /// Whether producers have claimed positions that consumers have not
    /// (one load each of `tail` and `head`): messages pushed or being
    /// pushed, or a slot a dead producer holds back until it is recovered.
    #[inline]
    pub fn has_claims(&self) -> bool {
        self.ctrl.tail.load(Ordering::Acquire) != self.ctrl.head.load(Ordering::Acquire)
    }

    /// Whether a pop would find a message (or a tombstone) now.
    #[inline]
    pub fn can_pop(&self) -> bool {
        let pos = self.ctrl.head.load(Ordering::Acquire);
        let seq = self.seq(pos);
        seq == pos.wrapping_add(1) || seq == tomb(pos)
    }

    /// Claims the next position of `counter` (`tail` or `head`) whose slot
    /// sequence is `pos + ready` (or its tombstone, for consumers), with
    /// `entry`'s intent set first. On failure returns the position and why:
    /// the slot's *lead* (`seq - (pos + ready)`, negative: something holds
    /// the slot back), or `None` for a slot ahead of a counter that did not
    /// move, which no protocol step makes.
    #[inline]
    fn claim(
        &self,
        counter: &AtomicU64,
        ready: u64,
        entry: &ClaimEntry,
    ) -> Result<Claim, (u64, Option<i64>)> {
        let mut pos = counter.load(Ordering::Relaxed);
        let mut backoff = 0u32;
        loop {
            let seq = self.seq(pos);
            let is_tomb = ready == 1 && seq == tomb(pos);
            let lead = lead(seq, pos, ready);
            if lead == 0 && (seq & TOMB == 0 || is_tomb) {
                entry.intent.store(pos, Ordering::Relaxed);
                // SYNC POINT: Release publishes the intent above to whoever
                // reads the counter with Acquire and sees our claim (the
                // recoveries, through `claimers_dead`).
                match counter.compare_exchange_weak(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        return Ok(Claim {
                            pos,
                            span: 1,
                            tomb: u32::from(is_tomb),
                        })
                    }
                    Err(now) => {
                        // Someone else claimed `pos`: our intent must not
                        // keep naming it, or a recovery of that claim (if
                        // its winner dies) would wait on us forever.
                        entry.intent.store(NO_INTENT, Ordering::Relaxed);
                        pos = now;
                        Self::back_off(&mut backoff);
                    }
                }
            } else if lead < 0 {
                // Held back (or a stale load: the caller waits and looks
                // again). `sane` tells garbage from staleness, on the
                // caller's paced path.
                return Err((pos, Some(lead)));
            } else {
                // The slot is ahead of our position: someone claimed `pos`
                // and the counter has moved. A slot gets ahead only by a
                // Release store made after that counter's compare-and-swap,
                // which our Acquire load of the slot saw, so this load sees
                // the counter moved. If it did not, the slot is wrong:
                // report it rather than spin.
                let now = counter.load(Ordering::Acquire);
                if now == pos {
                    return Err((pos, None));
                }
                pos = now;
                Self::back_off(&mut backoff);
            }
        }
    }

    /// Whether the slot at the position `side`'s counter is at holds a
    /// sequence some protocol step makes there: for a producer at `pos`,
    /// free for `pos`, or the message of one lap ago (not published, or not
    /// consumed); for a consumer, free for `pos` or holding it, or the
    /// message of one lap ago not yet released. `Err((pos, seq))` if not.
    /// For the slow path of a blocked endpoint, which asks twice, an
    /// interval apart, before calling the slot corrupt: one load may be
    /// stale.
    pub fn sane(&self, side: Side) -> Result<(), (u64, u64)> {
        let capacity = self.capacity() as i64;
        let (pos, ready) = match side {
            Side::Push => (self.ctrl.tail.load(Ordering::Acquire), 0),
            Side::Consume => (self.ctrl.head.load(Ordering::Acquire), 1),
        };
        let seq = self.seq(pos);
        let lead = lead(seq, pos, ready);
        // Ahead: the counter moved on since we read it. (Variable size: a
        // counter stops only at a claim's first unit, and a held message
        // of one lap ago frees its first unit last, so a claim cannot end
        // inside it: the states are those of fixed slots.)
        let expected = lead >= 0
            || match ready {
                0 => lead == 1 - capacity || lead == -capacity,
                _ => lead == -1 || lead == -capacity,
            };
        if expected {
            Ok(())
        } else {
            Err((pos, seq))
        }
    }

    /// Crossbeam's exponential spin, capped: contention on the counters
    /// costs a few spins, never a system call.
    #[inline]
    fn back_off(step: &mut u32) {
        for _ in 0..1u32 << (*step).min(6) {
            spin_hint();
        }
        *step += 1;
    }

    /// Claims the next position to push, for a message of `len` bytes (at
    /// most [`slot_bytes`](Self::slot_bytes); fixed slots take any length
    /// up to it alike). `entry` is the caller's claim-table entry; its
    /// intent names the position while the claim is held.
    #[inline(always)]
    pub fn claim_push(&self, entry: &ClaimEntry, len: usize) -> Result<Claim, PushBlocked> {
        if self.var {
            return self.claim_push_var(entry, len);
        }
        self.claim(&self.ctrl.tail, 0, entry)
            .map_err(|(pos, lead)| match lead {
                Some(lead) => self.push_blocked(pos, lead),
                None => PushBlocked::Corrupt {
                    pos,
                    seq: self.seq(pos),
                },
            })
    }

    /// Why the slot (or unit) of position `pos`, whose sequence leads
    /// `pos` by `lead` (negative), holds a push back.
    fn push_blocked(&self, pos: u64, lead: i64) -> PushBlocked {
        let capacity = self.capacity() as i64;
        // The slot still holds the message from one lap ago (or, variable
        // size, a unit inside it): a consumer claimed it and has not
        // released it, or none has taken it yet. Otherwise its producer of
        // one lap ago has not published yet.
        if lead == 1 - capacity || (self.var && lead == -capacity) {
            let behind = pos.wrapping_sub(self.capacity());
            if self.ctrl.head.load(Ordering::Acquire) > behind {
                return PushBlocked::Unreleased { pos: behind };
            }
        }
        PushBlocked::Full
    }

    /// Where a variable-size message of `units` units goes when the tail
    /// is at `pos`: the padding before it (to the arena's end, when the
    /// message would wrap) and the units claimed in all.
    #[inline]
    fn var_extent(&self, pos: u64, units: u64) -> (u64, u64) {
        let index = pos & self.mask;
        let pad = if index + units > self.capacity() {
            self.capacity() - index
        } else {
            0
        };
        (pad, pad + units)
    }

    /// The first of the `count` positions from `pos` whose unit is not free
    /// for it, with its lead (variable-size queues). A unit free for `p`
    /// stores `p` less its index (see `seq`): the lap's first position,
    /// the same for every unit of a lap, so a run of units is checked
    /// against one word.
    #[inline]
    fn first_not_free(&self, pos: u64, count: u64) -> Option<(u64, i64)> {
        let end = pos.wrapping_add(count);
        let mut p = pos;
        while p != end {
            let index = (p & self.mask) as usize;
            let run = (self.capacity() - index as u64).min(end.wrapping_sub(p));
            let lap = p & !self.mask;
            let units = &self.slots[index..index + run as usize];
            // SYNC POINT: Acquire, as in `seq`: pairs with the consumers'
            // Release stores in `release` (their reads of the unit happen
            // before our writes).
            let mut seen = lap;
            if let Some(k) = units.iter().position(|unit| {
                seen = unit.load(Ordering::Acquire);
                seen != lap
            }) {
                // The lead of the word loaded, not of a second load: by
                // then a consumer may have freed the unit, and a lead of 0
                // would read as "ahead" (corrupt, with the tail unmoved).
                let at = p.wrapping_add(k as u64);
                return Some((at, lead(self.decode(at, seen), at, 0)));
            }
            p = p.wrapping_add(run);
        }
        None
    }

    /// Frees the units of positions `from..to` for the next lap (the
    /// variable-size form of a release's store, a run of units at a time:
    /// every unit of a lap stores the same word; see `first_not_free`).
    #[inline]
    fn free_units(&self, from: u64, to: u64) {
        let mut p = from;
        while p != to {
            let index = (p & self.mask) as usize;
            let run = (self.capacity() - index as u64).min(to.wrapping_sub(p));
            let next_lap = (p & !self.mask).wrapping_add(self.capacity());
            for unit in &self.slots[index..index + run as usize] {
                // SYNC POINT: pairs with the Acquire loads in
                // `first_not_free` by the next lap's producer.
                unit.store(next_lap, Ordering::Release);
            }
            p = p.wrapping_add(run);
        }
    }

    /// [`claim_push`](Self::claim_push) for variable-size messages: every
    /// unit of the claim must be free, then one compare-and-swap on `tail`
    /// takes them all. A message that would wrap round the arena's end
    /// goes to its start, after a padding tombstone published at once.
    // Out of line: inlined, it made `claim_push` too large to inline into
    // the fixed-slot endpoints.
    #[inline(never)]
    fn claim_push_var(&self, entry: &ClaimEntry, len: usize) -> Result<Claim, PushBlocked> {
        debug_assert!(len <= self.slot_bytes);
        let units = units_for(len);
        let mut pos = self.ctrl.tail.load(Ordering::Relaxed);
        let mut backoff = 0u32;
        loop {
            let (pad, total) = self.var_extent(pos, units);
            match self.first_not_free(pos, total) {
                None => {
                    entry.name(pos, total);
                    // SYNC POINT: Release publishes the intent and span to
                    // a recoverer that sees the claim (as in `claim`).
                    match self.ctrl.tail.compare_exchange_weak(
                        pos,
                        pos.wrapping_add(total),
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => {
                            if pad > 0 {
                                self.span_word(pos).store(pad, Ordering::Relaxed);
                                // SYNC POINT: pairs with the Acquire load
                                // in `seq` by the consumer that claims the
                                // padding: it sees its span.
                                self.store_seq(pos, tomb(pos));
                            }
                            return Ok(Claim {
                                pos: pos.wrapping_add(pad),
                                span: units as u32,
                                tomb: 0,
                            });
                        }
                        Err(now) => {
                            entry.intent.store(NO_INTENT, Ordering::Relaxed);
                            pos = now;
                        }
                    }
                }
                Some((at, lead)) if lead < 0 => return Err(self.push_blocked(at, lead)),
                Some(_) => {
                    // A unit ahead of its position: someone claimed it,
                    // and the tail moved (as in `claim`); if it did not,
                    // the unit is wrong.
                    let now = self.ctrl.tail.load(Ordering::Acquire);
                    if now == pos {
                        return Err(PushBlocked::Corrupt {
                            pos,
                            seq: self.seq(pos),
                        });
                    }
                    pos = now;
                }
            }
            Self::back_off(&mut backoff);
        }
    }

    /// Writes the message of a push claim. `bytes.len() <= slot_bytes`
    /// (variable size: the length the claim was made for).
    #[inline]
    pub fn write(&self, claim: Claim, bytes: &[u8]) {
        debug_assert!(bytes.len() <= self.slot_bytes);
        self.set_header(claim, bytes.len());
        store_bytes(self.payload(claim), bytes);
    }

    /// The words from a claim's length word on: the fixed slot's, or the
    /// variable-size message's header.
    #[inline(always)]
    fn header(&self, claim: Claim) -> &'a [AtomicU64] {
        if self.var {
            self.unit(claim.pos)
        } else {
            &self.slot(claim.pos)[1..]
        }
    }

    /// Stores a push claim's length (and, variable size, its span) before
    /// it is published.
    #[inline(always)]
    fn set_header(&self, claim: Claim, len: usize) {
        let head = self.header(claim);
        head[0].store(len as u64, Ordering::Relaxed);
        if self.var {
            head[1].store(claim.span(), Ordering::Relaxed);
        }
    }

    /// Payload words of a claim: a slot's, or those of the units it spans
    /// after the header.
    #[inline(always)]
    fn payload_words(&self, claim: Claim) -> usize {
        if self.var {
            claim.span() as usize * UNIT_WORDS - VAR_HEADER_WORDS
        } else {
            self.slot_bytes.div_ceil(8)
        }
    }

    /// Header words before the payload, from the length word on.
    #[inline(always)]
    fn header_words(&self) -> usize {
        if self.var {
            VAR_HEADER_WORDS
        } else {
            SLOT_HEADER_WORDS - 1
        }
    }

    /// Publishes a push claim: the message becomes visible to consumers.
    #[inline]
    pub fn publish(&self, claim: Claim, entry: &ClaimEntry) {
        // SYNC POINT: pairs with the Acquire load in `seq` by the consumer
        // that claims this message: it sees the length and payload.
        self.store_seq(claim.pos, claim.pos.wrapping_add(1));
        entry.intent.store(NO_INTENT, Ordering::Release);
    }

    /// The payload words of a push claim, for a producer that writes the
    /// message in place (a loan) before [`commit`](Self::commit).
    #[inline(always)]
    pub fn payload(&self, claim: Claim) -> &'a [AtomicU64] {
        &self.header(claim)[self.header_words()..][..self.payload_words(claim)]
    }

    /// Publishes a push claim whose payload was written in place, as `len`
    /// bytes (at most `slot_bytes`; variable size: the length the claim
    /// was made for).
    #[inline]
    pub fn commit(&self, claim: Claim, len: usize, entry: &ClaimEntry) {
        debug_assert!(len <= self.slot_bytes);
        self.set_header(claim, len);
        self.publish(claim, entry);
    }

    /// Gives up a push claim without a message: the slot becomes a
    /// tombstone, which the consumer that claims it skips (nothing was
    /// pushed, so nothing is counted lost).
    #[inline]
    pub fn abandon(&self, claim: Claim, entry: &ClaimEntry) {
        if self.var {
            self.span_word(claim.pos).store(claim.span(), Ordering::Relaxed);
        }
        // SYNC POINT: pairs with the Acquire load in `seq` by the consumer
        // that claims the tombstone, as in `publish`.
        self.store_seq(claim.pos, tomb(claim.pos));
        entry.intent.store(NO_INTENT, Ordering::Release);
    }

    /// Claims the next message (or tombstone) to pop.
    #[inline(always)]
    pub fn claim_pop(&self, entry: &ClaimEntry) -> Result<Claim, PopBlocked> {
        if self.var {
            return self.claim_pop_var(entry);
        }
        self.claim(&self.ctrl.head, 1, entry)
            .map_err(|(pos, lead)| match lead {
                Some(lead) => self.pop_blocked(pos, lead),
                None => PopBlocked::Corrupt {
                    pos,
                    seq: self.seq(pos),
                },
            })
    }

    /// Why position `pos`, whose sequence leads a consumer's need by `lead`
    /// (negative), holds a pop back.
    fn pop_blocked(&self, pos: u64, lead: i64) -> PopBlocked {
        // Free for `pos`: not pushed yet, or claimed and not published.
        // Otherwise the message of one lap ago is still being consumed.
        if lead == -1 && self.ctrl.tail.load(Ordering::Acquire) > pos {
            PopBlocked::Unpublished { pos }
        } else {
            PopBlocked::Empty
        }
    }

    /// [`claim_pop`](Self::claim_pop) for variable-size messages: the
    /// published header says how many units the message (or tombstone)
    /// takes, and one compare-and-swap on `head` claims them all.
    // Out of line, as `claim_push_var`.
    #[inline(never)]
    fn claim_pop_var(&self, entry: &ClaimEntry) -> Result<Claim, PopBlocked> {
        let capacity = self.capacity();
        let mut pos = self.ctrl.head.load(Ordering::Relaxed);
        let mut backoff = 0u32;
        loop {
            let seq = self.seq(pos);
            let is_tomb = seq == tomb(pos);
            if seq == pos.wrapping_add(1) || is_tomb {
                // Written before the sequence's Release store, which our
                // Acquire load saw; unchanged while `head` is still `pos`
                // (no one has claimed the message, so no one has released
                // it for the next lap's producer), which the
                // compare-and-swap checks.
                let span = self.span_word(pos).load(Ordering::Relaxed);
                let fits = span >= 1
                    && if is_tomb {
                        span <= capacity
                    } else {
                        span <= capacity / 2 && (pos & self.mask) + span <= capacity
                    };
                if fits {
                    entry.name(pos, span);
                    match self.ctrl.head.compare_exchange_weak(
                        pos,
                        pos.wrapping_add(span),
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => {
                            return Ok(Claim {
                                pos,
                                span: span as u32,
                                tomb: u32::from(is_tomb),
                            })
                        }
                        Err(now) => {
                            entry.intent.store(NO_INTENT, Ordering::Relaxed);
                            pos = now;
                        }
                    }
                } else {
                    // A span no protocol step writes, unless the message
                    // was taken meanwhile and the load saw a later one.
                    let now = self.ctrl.head.load(Ordering::Acquire);
                    if now == pos {
                        return Err(PopBlocked::Corrupt { pos, seq });
                    }
                    pos = now;
                }
            } else {
                let lead = lead(seq, pos, 1);
                if lead < 0 {
                    return Err(self.pop_blocked(pos, lead));
                }
                let now = self.ctrl.head.load(Ordering::Acquire);
                if now == pos {
                    return Err(PopBlocked::Corrupt { pos, seq });
                }
                pos = now;
            }
            Self::back_off(&mut backoff);
        }
    }

    /// Copies the message of a pop claim into `out`. Always inlined: out
    /// of line (it is called from two pop paths) it cost a 64-byte pop
    /// about 20 instructions of call and set-up.
    #[inline(always)]
    pub fn read(&self, claim: Claim, out: &mut [u8]) -> Popped {
        match self.lend(claim) {
            Ok((words, len)) if len <= out.len() => {
                load_bytes(words, &mut out[..len]);
                Popped::Message { len }
            }
            Ok((_, len)) => Popped::BadLength { len: len as u64 },
            Err(popped) => popped,
        }
    }

    /// The length of a pop claim's message, if it is one (for a caller
    /// that sizes its buffer first).
    #[inline]
    pub fn message_len(&self, claim: Claim) -> Option<usize> {
        self.lend(claim).ok().map(|(_, len)| len)
    }

    /// The payload words and length of a pop claim's message, for reading
    /// in place until [`release`](Self::release): a claimed slot is its
    /// claimer's alone (no producer writes it before it is released, since
    /// the next lap's producer waits for the released sequence; no other
    /// consumer claims its position; a survivor finishes it only once the
    /// claimer is known dead). The words are the slot's payload area (or
    /// the message's units'); the message is their first `len` bytes.
    /// `Err` with what [`read`](Self::read) would report instead: a
    /// tombstone, or a length the slot (or span) cannot hold.
    #[inline(always)]
    pub fn lend(&self, claim: Claim) -> Result<(&'a [AtomicU64], usize), Popped> {
        if claim.tomb != 0 {
            return Err(Popped::Tombstone);
        }
        if self.var {
            return self.lend_var(claim);
        }
        let slot = self.slot(claim.pos);
        let len = slot[1].load(Ordering::Relaxed);
        match usize::try_from(len) {
            Ok(len) if len <= self.slot_bytes => Ok((&slot[SLOT_HEADER_WORDS..], len)),
            _ => Err(Popped::BadLength { len }),
        }
    }

    /// [`lend`](Self::lend) for a variable-size message: its length must
    /// be one that takes the units it claimed. Out of line, as
    /// `claim_push_var`.
    #[inline(never)]
    fn lend_var(&self, claim: Claim) -> Result<(&'a [AtomicU64], usize), Popped> {
        let unit = self.unit(claim.pos);
        let len = unit[0].load(Ordering::Relaxed);
        match usize::try_from(len) {
            Ok(len) if len <= self.slot_bytes && units_for(len) == claim.span() => {
                Ok((self.payload(claim), len))
            }
            _ => Err(Popped::BadLength { len }),
        }
    }

    /// Releases a pop claim: the slot (or the units) free for the next
    /// lap. A claim's first unit is released last: a claim is released
    /// once its first unit is, which recoveries rely on.
    #[inline(always)]
    pub fn release(&self, claim: Claim, entry: &ClaimEntry) {
        if claim.span > 1 {
            self.free_units(claim.pos.wrapping_add(1), claim.pos.wrapping_add(claim.span()));
        }
        // SYNC POINT: pairs with the Acquire load in `seq` by the producer
        // of the next lap: our reads of the slot happen before its writes.
        self.store_seq(claim.pos, claim.pos.wrapping_add(self.capacity()));
        entry.intent.store(NO_INTENT, Ordering::Release);
    }

    /// Who may hold position `pos` of `table`'s side: the entries whose
    /// intent is `pos`.
    fn claimers(
        table: &[ClaimEntry],
        pos: u64,
        liveness: &mut impl FnMut(Owner) -> Liveness,
    ) -> Claimers {
        let mut found = false;
        for entry in table {
            if entry.intent() != pos {
                continue;
            }
            match entry.owner() {
                Some(owner) if !liveness(owner).is_dead() => return Claimers::MayLive,
                _ => found = true,
            }
        }
        if found {
            Claimers::Dead
        } else {
            Claimers::Nobody
        }
    }

    /// The sequence the first slot (or unit) of a claim of `span` from
    /// `pos` on `side` holds while it is stuck there; `None` if it is not
    /// stuck so. A variable-size claim of one unit may also be a unit
    /// inside a message (an orphan's; see [`recover_orphan`](Self::recover_orphan)).
    fn stuck_from(&self, side: Side, pos: u64, span: u64) -> Option<u64> {
        let seq = self.seq(pos);
        let stuck = match side {
            Side::Push => seq == pos && self.ctrl.tail.load(Ordering::Acquire) > pos,
            Side::Consume => {
                (seq == pos.wrapping_add(1)
                    || seq == tomb(pos)
                    || (self.var && span == 1 && seq == pos))
                    && self.ctrl.head.load(Ordering::Acquire) > pos
            }
        };
        stuck.then_some(seq)
    }

    /// The claim to finish for a process stuck at `pos` on `side`, if every
    /// process that may hold it is dead (or, with `orphans`, none is named).
    fn locate(
        &self,
        side: Side,
        pos: u64,
        orphans: bool,
        liveness: &mut impl FnMut(Owner) -> Liveness,
    ) -> Result<Stuck, Recovery> {
        if self.var {
            return self.locate_var(side, pos, orphans, liveness);
        }
        let from = self.stuck_from(side, pos, 1).ok_or(Recovery::NotStuck)?;
        let table = match side {
            Side::Push => self.producers,
            Side::Consume => self.consumers,
        };
        match Self::claimers(table, pos, liveness) {
            Claimers::MayLive => Err(Recovery::Alive),
            Claimers::Nobody if !orphans => Err(Recovery::Unclaimed),
            _ => Ok(Stuck {
                pos,
                span: 1,
                from,
                counts: from != tomb(pos),
            }),
        }
    }

    /// [`locate`](Self::locate) for variable-size messages, where `pos`
    /// may lie inside a claim: the claim is the one whose entry names the
    /// latest start at or before `pos` with a span reaching it (claims
    /// never overlap, and an entry names a position only the counter has
    /// held, so only a claim's own entries name its start).
    ///
    /// A producer's claim is finished from `pos` if `pos` is stuck, else
    /// from its message, after the padding its entry's span implies (a
    /// dead producer's entry is settled at its claim's start, where the
    /// padding may have been taken already). Its span comes from its
    /// entry: of two dead entries naming one start (one a claim that lost
    /// its compare-and-swap, killed before it could clear its intent), the
    /// shorter that reaches `pos` is taken, and if the real claim was
    /// longer, its rest is finished at the next stop, from the entry that
    /// names it. The loss is counted by the recovery that finishes the
    /// message's first unit, so once per claim (in that double crash too,
    /// unless the two claims put their messages at different places after
    /// different paddings). A consumer's span comes from the message's
    /// header, which no one rewrites while it is claimed.
    fn locate_var(
        &self,
        side: Side,
        pos: u64,
        orphans: bool,
        liveness: &mut impl FnMut(Owner) -> Liveness,
    ) -> Result<Stuck, Recovery> {
        let capacity = self.capacity();
        let table = match side {
            Side::Push => self.producers,
            Side::Consume => self.consumers,
        };
        let unit = self.stuck_from(side, pos, 1);
        // An entry's span is read from the segment: one over the capacity
        // names no claim.
        let covers = |entry: &ClaimEntry, start: u64| {
            let (off, span) = (pos.wrapping_sub(start), entry.span());
            off < span && span <= capacity
        };
        let start = table
            .iter()
            .filter_map(|entry| {
                let start = entry.intent();
                (start != NO_INTENT && covers(entry, start)).then_some(start)
            })
            .max();
        let orphan = || match unit {
            Some(from) if orphans => Ok(Stuck {
                pos,
                span: 1,
                from,
                counts: true,
            }),
            Some(_) => Err(Recovery::Unclaimed),
            None => Err(Recovery::NotStuck),
        };
        let Some(start) = start else {
            return orphan();
        };
        let mut span = u64::MAX;
        for entry in table.iter().filter(|entry| entry.intent() == start) {
            match entry.owner() {
                Some(owner) if !liveness(owner).is_dead() => return Err(Recovery::Alive),
                _ if covers(entry, start) => span = span.min(entry.span()),
                _ => {}
            }
        }
        if span == u64::MAX {
            // The entries changed between the two looks (a claimer moving
            // on): look again later.
            return Err(Recovery::Alive);
        }
        match side {
            Side::Push => {
                let index = start & self.mask;
                let pad = if index + span > capacity {
                    capacity - index
                } else {
                    0
                };
                let message = start.wrapping_add(pad);
                let at = if unit.is_some() { pos } else { message };
                let end = start.wrapping_add(span);
                match self.stuck_from(side, at, 1) {
                    Some(from) if at.wrapping_sub(start) < span => Ok(Stuck {
                        pos: at,
                        span: end.wrapping_sub(at),
                        from,
                        counts: at.wrapping_sub(start) <= pad,
                    }),
                    _ => Err(Recovery::NotStuck),
                }
            }
            Side::Consume => {
                let span = self.span_word(start).load(Ordering::Relaxed);
                match self.stuck_from(side, start, span) {
                    Some(from)
                        if (1..=capacity).contains(&span)
                            && pos.wrapping_sub(start) < span =>
                    {
                        Ok(Stuck {
                            pos: start,
                            span,
                            from,
                            counts: from != tomb(start),
                        })
                    }
                    // The entry names a claim that is over, or a header
                    // no protocol step writes.
                    _ => orphan(),
                }
            }
        }
    }

    /// Finishes a stuck claim in its dead claimer's place: a producer's
    /// becomes a tombstone, a consumer's is released (inner units first,
    /// as [`release`](Self::release) does). Compare-and-swaps from the
    /// stuck sequences, so doing it twice is doing it once.
    fn finish(&self, side: Side, stuck: Stuck) {
        let Stuck { pos, span, from, .. } = stuck;
        match side {
            Side::Push => {
                if self.var {
                    self.span_word(pos).store(span, Ordering::Relaxed);
                }
                self.cas_seq(pos, from, tomb(pos));
            }
            Side::Consume => {
                let lap = self.capacity();
                for i in 1..span {
                    let unit = pos.wrapping_add(i);
                    self.cas_seq(unit, unit, unit.wrapping_add(lap));
                }
                self.cas_seq(pos, from, pos.wrapping_add(lap));
            }
        }
    }

    fn lost_counter(&self, side: Side) -> &AtomicU64 {
        match side {
            Side::Push => &self.ctrl.lost_in_push,
            Side::Consume => &self.ctrl.lost_in_consume,
        }
    }

    /// Called by a process stuck at `pos` (a consumer on
    /// [`PopBlocked::Unpublished`], a producer on
    /// [`PushBlocked::Unreleased`], or anyone settling a dead entry's
    /// intent): if every process that may have claimed `pos` on `side` is
    /// dead, finishes the slot in its place through the recovery journal
    /// (see the module docs), counting the lost message once.
    ///
    /// `proceed(step)` is called between the steps; returning false stops
    /// there, as a recoverer killed at that point would (for model checks
    /// and crash tests; the endpoints pass a closure that returns true).
    pub fn recover(
        &self,
        side: Side,
        pos: u64,
        me: Owner,
        liveness: impl FnMut(Owner) -> Liveness,
        proceed: impl FnMut(RecoveryStep) -> bool,
    ) -> Recovery {
        self.recover_with(side, pos, me, liveness, proceed, false)
    }

    /// As [`recover`](Self::recover), for a slot that no claim-table entry
    /// names and that stays stuck ([`Recovery::Unclaimed`] twice, an
    /// interval apart): no protocol step leaves one (a claimer's intent
    /// names its position until it has finished with the slot), so only a
    /// corrupt claim table or a claimer wrongly judged dead does. Finishing
    /// it counts a loss, as for a dead claimer.
    pub fn recover_orphan(
        &self,
        side: Side,
        pos: u64,
        me: Owner,
        liveness: impl FnMut(Owner) -> Liveness,
        proceed: impl FnMut(RecoveryStep) -> bool,
    ) -> Recovery {
        self.recover_with(side, pos, me, liveness, proceed, true)
    }

    fn recover_with(
        &self,
        side: Side,
        pos: u64,
        me: Owner,
        mut liveness: impl FnMut(Owner) -> Liveness,
        mut proceed: impl FnMut(RecoveryStep) -> bool,
        orphans: bool,
    ) -> Recovery {
        if let Err(outcome) = self.locate(side, pos, orphans, &mut liveness) {
            return outcome;
        }
        if !self.take_journal(me, &mut liveness) {
            return Recovery::Alive;
        }
        if !proceed(RecoveryStep::JournalTaken) {
            return Recovery::Stopped;
        }
        // Under the journal, look again: a recoverer before us may have
        // finished this very claim.
        let outcome = match self.locate(side, pos, orphans, &mut liveness) {
            Ok(stuck) => {
                let lost_a_message = stuck.counts;
                if lost_a_message {
                    self.ctrl.journal_pos.store(stuck.pos, Ordering::Relaxed);
                    self.ctrl.journal_span.store(stuck.span, Ordering::Relaxed);
                    // SYNC POINT: Release publishes `journal_pos` and
                    // `journal_span` to a successor that sees the pending
                    // bit (Acquire in `finish_pending`). Adding 3 to
                    // `count << 1 | 0` counts one loss and sets the pending
                    // bit in one step.
                    self.lost_counter(side)
                        .fetch_add(2 | PENDING, Ordering::AcqRel);
                    if !proceed(RecoveryStep::Counted) {
                        return Recovery::Stopped;
                    }
                }
                self.finish(side, stuck);
                if !proceed(RecoveryStep::SlotFinished) {
                    return Recovery::Stopped;
                }
                if lost_a_message {
                    self.lost_counter(side)
                        .fetch_and(!PENDING, Ordering::Release);
                }
                Recovery::Recovered
            }
            Err(_) => Recovery::NotStuck,
        };
        if !proceed(RecoveryStep::Cleared) {
            return Recovery::Stopped;
        }
        // SYNC POINT: Release pairs with the next holder's Acquire CAS.
        let _ =
            self.ctrl
                .journal
                .compare_exchange(me.token(), 0, Ordering::Release, Ordering::Relaxed);
        outcome
    }

    /// Takes the recovery journal for `me`: free, or held by a process
    /// known dead (whose unfinished step it finishes first). False if a
    /// live (or possibly live) recoverer holds it.
    fn take_journal(&self, me: Owner, liveness: &mut impl FnMut(Owner) -> Liveness) -> bool {
        let mut current = self.ctrl.journal.load(Ordering::Acquire);
        loop {
            if current != 0 {
                match Owner::from_token(current) {
                    // Another thread of this process is recovering: its
                    // token is ours, and it is alive.
                    Some(holder) if holder == me => return false,
                    Some(holder) if !liveness(holder).is_dead() => return false,
                    // Dead, or not a token at all (corruption): take it over.
                    _ => {}
                }
            }
            // SYNC POINT: Acquire pairs with the previous holder's Release
            // when it gave the journal back.
            match self.ctrl.journal.compare_exchange(
                current,
                me.token(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    // A dead holder may have left a step half done. (A free
                    // journal never has a pending bit, unless corruption put
                    // it there; finishing it then keeps our count single.)
                    self.finish_pending();
                    return true;
                }
                Err(seen) => current = seen,
            }
        }
    }

    /// Finishes what a dead journal holder left between counting a loss
    /// and clearing its pending bit: the claim it was finishing.
    fn finish_pending(&self) {
        for side in [Side::Push, Side::Consume] {
            let counter = self.lost_counter(side);
            // SYNC POINT: Acquire pairs with the Release of the `fetch_add`
            // in `recover`: seeing the pending bit, we see `journal_pos`.
            if counter.load(Ordering::Acquire) & PENDING == 0 {
                continue;
            }
            let pos = self.ctrl.journal_pos.load(Ordering::Relaxed);
            let span = if self.var {
                self.ctrl.journal_span.load(Ordering::Relaxed)
            } else {
                1
            };
            if (1..=self.capacity()).contains(&span) {
                if let Some(from) = self.stuck_from(side, pos, span) {
                    if from != tomb(pos) {
                        let counts = true;
                        self.finish(side, Stuck { pos, span, from, counts });
                    }
                }
            }
            counter.fetch_and(!PENDING, Ordering::Release);
        }
    }

    /// Pushes `bytes` as one attempt: claims a slot, writes, calls
    /// `between()` (nothing, except in crash tests), publishes. Returns the
    /// position, or why it could not claim.
    #[inline]
    pub fn push(
        &self,
        entry: &ClaimEntry,
        bytes: &[u8],
        between: impl FnOnce(),
    ) -> Result<u64, PushBlocked> {
        let claim = self.claim_push(entry, bytes.len())?;
        self.write(claim, bytes);
        between();
        self.publish(claim, entry);
        Ok(claim.pos)
    }

    /// Pops one message into `out` as one attempt: claims, reads, calls
    /// `between()`, releases. A tombstone comes back as
    /// [`Popped::Tombstone`] (its loss was counted by whoever left it): its
    /// slot is free now, so the caller wakes producers waiting for room as
    /// after a message, and pops again. (Skipped in here, a run of
    /// tombstones with nothing after them freed slots that no one was told
    /// of: a producer asleep on the full queue waited for its next timed
    /// check.)
    #[inline]
    pub fn pop(
        &self,
        entry: &ClaimEntry,
        out: &mut [u8],
        between: impl FnOnce(),
    ) -> Result<(u64, Popped), PopBlocked> {
        let claim = self.claim_pop(entry)?;
        let popped = self.read(claim, out);
        between();
        self.release(claim, entry);
        Ok((claim.pos, popped))
    }

    /// Records that a producer attached (see [`QueueCtrl::had_producer`]).
    pub fn mark_producer(&self) {
        self.ctrl.had_producer.store(1, Ordering::Release);
    }
}

/// Claim tables: attaching a producer or consumer to an entry.
pub mod table {
    use super::{ClaimEntry, NO_INTENT};
    use crate::ring::{Liveness, Owner};
    use crate::sync::Ordering;

    /// Takes a free entry, or the entry of a process known dead whose claim
    /// (if any) is no longer stuck. `settled(intent)` says whether a dead
    /// entry's intent may be forgotten (recovering it first if needed).
    /// Returns the index, or `None` when every entry is held by a live (or
    /// possibly live) process.
    pub fn attach(
        table: &[ClaimEntry],
        me: Owner,
        mut liveness: impl FnMut(Owner) -> Liveness,
        mut settled: impl FnMut(u64) -> bool,
    ) -> Option<usize> {
        for (index, entry) in table.iter().enumerate() {
            let current = entry.owner.load(Ordering::Acquire);
            let free = match Owner::from_token(current) {
                None if current == 0 => true,
                // Not a token: no process holds it (corruption); take it.
                None => settled(entry.intent()),
                Some(owner) => owner != me && liveness(owner).is_dead() && settled(entry.intent()),
            };
            // SYNC POINT: Acquire pairs with the Release in `detach`.
            if free
                && entry
                    .owner
                    .compare_exchange(current, me.token(), Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                entry.intent.store(NO_INTENT, Ordering::Release);
                return Some(index);
            }
        }
        None
    }

    /// Frees an entry on orderly exit.
    pub fn detach(entry: &ClaimEntry, me: Owner) {
        if entry.owner.load(Ordering::Relaxed) != me.token() {
            return; // not ours (any more): leave it alone
        }
        entry.intent.store(NO_INTENT, Ordering::Relaxed);
        let _ = entry
            .owner
            .compare_exchange(me.token(), 0, Ordering::Release, Ordering::Relaxed);
    }

    /// Gives `owner` entry `entry`, as `attach` would (for model checks
    /// and tests, which stage processes by hand).
    #[doc(hidden)]
    pub fn give(entry: &ClaimEntry, owner: Owner) {
        entry.owner.store(owner.token(), Ordering::Release);
    }
}

#[cfg(all(test, not(shmbus_loom)))]
mod tests {
    use super::*;

    struct Heap {
        ctrl: QueueCtrl,
        producers: Vec<ClaimEntry>,
        consumers: Vec<ClaimEntry>,
        slots: Vec<AtomicU64>,
    }

    fn heap(capacity: usize) -> Heap {
        Heap {
            ctrl: QueueCtrl::new(),
            producers: (0..2).map(|_| ClaimEntry::new()).collect(),
            consumers: (0..2).map(|_| ClaimEntry::new()).collect(),
            slots: (0..slots_words(capacity, 8).unwrap())
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    fn ring(h: &Heap, capacity: usize) -> QueueRing<'_> {
        QueueRing::new(&h.ctrl, &h.producers, &h.consumers, &h.slots, capacity, 8).unwrap()
    }

    #[test]
    fn fifo_round_trip_across_laps() {
        let h = heap(4);
        let q = ring(&h, 4);
        let (p, c) = (&h.producers[0], &h.consumers[0]);
        for lap in 0..5u64 {
            for i in 0..4u64 {
                q.push(p, &(lap * 10 + i).to_ne_bytes(), || {}).unwrap();
            }
            assert_eq!(q.claim_push(p, 8), Err(PushBlocked::Full));
            for i in 0..4u64 {
                let mut out = [0u8; 8];
                let (_, got) = q.pop(c, &mut out, || {}).unwrap();
                assert_eq!(got, Popped::Message { len: 8 });
                assert_eq!(u64::from_ne_bytes(out), lap * 10 + i);
            }
            assert_eq!(q.claim_pop(c), Err(PopBlocked::Empty));
        }
    }

    #[test]
    fn garbage_sequences_are_corrupt_not_a_spin() {
        for garbage in [5u64, 1 << 40, u64::MAX, TOMB | 77] {
            let h = heap(4);
            let q = ring(&h, 4);
            h.slots[0].store(garbage, Ordering::Relaxed);
            assert!(
                matches!(
                    q.claim_push(&h.producers[0], 8),
                    Err(PushBlocked::Corrupt { pos: 0, .. })
                ),
                "{garbage:#x}"
            );
            assert!(
                matches!(
                    q.claim_pop(&h.consumers[0]),
                    Err(PopBlocked::Corrupt { pos: 0, .. })
                ),
                "{garbage:#x}"
            );
        }
    }

    struct VarHeap {
        ctrl: QueueCtrl,
        producers: Vec<ClaimEntry>,
        consumers: Vec<ClaimEntry>,
        words: Vec<AtomicU64>,
        units: usize,
    }

    fn var_heap(units: usize) -> VarHeap {
        VarHeap {
            ctrl: QueueCtrl::new(),
            producers: (0..2).map(|_| ClaimEntry::new()).collect(),
            consumers: (0..2).map(|_| ClaimEntry::new()).collect(),
            words: (0..var_words(units).unwrap())
                .map(|_| AtomicU64::new(0))
                .collect(),
            units,
        }
    }

    fn var_ring(h: &VarHeap) -> QueueRing<'_> {
        QueueRing::new_var(&h.ctrl, &h.producers, &h.consumers, &h.words, h.units).unwrap()
    }

    /// Liveness where `dead` is dead and everyone else alive.
    fn only_dead(dead: Owner) -> impl Fn(Owner) -> Liveness + Copy {
        move |o| {
            if o == dead {
                Liveness::Dead
            } else {
                Liveness::Alive
            }
        }
    }

    fn blob(seq: u64, len: usize) -> Vec<u8> {
        (0..len).map(|i| (seq as usize * 31 + i) as u8).collect()
    }

    /// The next message, past tombstones and padding (as a consumer pops).
    fn pop_var(q: &QueueRing<'_>, c: &ClaimEntry) -> Result<Vec<u8>, PopBlocked> {
        let mut out = vec![0u8; q.slot_bytes()];
        loop {
            match q.pop(c, &mut out, || {})? {
                (_, Popped::Message { len }) => return Ok(out[..len].to_vec()),
                (_, Popped::Tombstone) => {}
                (_, other) => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn variable_messages_round_trip_across_laps_and_the_arena_end() {
        let h = var_heap(16); // 1 KiB arena: messages up to 496 bytes
        let q = var_ring(&h);
        assert_eq!(q.slot_bytes(), 496);
        let (p, c) = (&h.producers[0], &h.consumers[0]);
        let mut rng = 7u64;
        let mut pending = std::collections::VecDeque::new();
        for seq in 0..2_000u64 {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let len = (rng >> 33) as usize % 497;
            let msg = blob(seq, len);
            while q.push(p, &msg, || {}).is_err() {
                let want = pending.pop_front().expect("full only while holding some");
                assert_eq!(pop_var(&q, c).unwrap(), want);
            }
            pending.push_back(msg);
        }
        while let Some(want) = pending.pop_front() {
            assert_eq!(pop_var(&q, c).unwrap(), want);
        }
        assert_eq!(q.claim_pop(c), Err(PopBlocked::Empty));
        assert_eq!(h.ctrl.lost_in_push() + h.ctrl.lost_in_consume(), 0);
    }

    #[test]
    fn a_message_that_would_wrap_goes_to_the_start_after_padding() {
        let h = var_heap(8);
        let q = var_ring(&h);
        let (p, c) = (&h.producers[0], &h.consumers[0]);
        // Three units, then one and one: the tail at unit 5.
        q.push(p, &blob(0, 150), || {}).unwrap();
        q.push(p, &blob(1, 10), || {}).unwrap();
        q.push(p, &blob(1, 10), || {}).unwrap();
        assert_eq!(pop_var(&q, c).unwrap(), blob(0, 150));
        assert_eq!(pop_var(&q, c).unwrap(), blob(1, 10));
        assert_eq!(pop_var(&q, c).unwrap(), blob(1, 10));
        // Four units from unit 5 would end past the arena: padding, then
        // the message at the start (position 8).
        let pos = q.push(p, &blob(2, 200), || {}).unwrap();
        assert_eq!((pos, h.ctrl.pushed()), (8, 12));
        assert_eq!(pop_var(&q, c).unwrap(), blob(2, 200));
        assert_eq!(q.claim_pop(c), Err(PopBlocked::Empty));
        // A message over half the arena (with its header) never fits.
        assert_eq!(units_for(q.slot_bytes()), 4);
        assert_eq!(units_for(q.slot_bytes() + 1), 5);
    }

    #[test]
    fn a_held_message_holds_every_unit_it_takes() {
        let h = var_heap(8);
        let q = var_ring(&h);
        let (p, c) = (&h.producers[0], &h.consumers[0]);
        q.push(p, &blob(0, 200), || {}).unwrap(); // units 0..4
        q.push(p, &blob(1, 200), || {}).unwrap(); // units 4..8
        let held = q.claim_pop(c).unwrap();
        assert_eq!(q.claim_push(p, 10), Err(PushBlocked::Unreleased { pos: 0 }));
        assert!(!q.can_push_len(10));
        let (words, len) = q.lend(held).unwrap();
        let mut out = vec![0u8; len];
        load_bytes(words, &mut out);
        assert_eq!(out, blob(0, 200));
        q.release(held, c);
        q.push(p, &blob(2, 10), || {}).unwrap();
        q.push(p, &blob(3, 150), || {}).unwrap();
        // Units 0..4 are in use again, 4..8 hold message 1: full.
        assert!(!q.can_push_len(0));
        assert_eq!(pop_var(&q, c).unwrap(), blob(1, 200));
        assert_eq!(pop_var(&q, c).unwrap(), blob(2, 10));
        assert_eq!(pop_var(&q, c).unwrap(), blob(3, 150));
    }

    #[test]
    fn a_dead_producers_claim_and_padding_are_recovered_as_one_loss() {
        let dead = Owner::new(9, 9);
        let me = Owner::new(1, 1);
        let liveness = only_dead(dead);
        let h = var_heap(16);
        let q = var_ring(&h);
        table::give(&h.producers[0], dead);
        let (p, c) = (&h.producers[1], &h.consumers[0]);
        q.push(p, &blob(0, 400), || {}).unwrap(); // units 0..7
        q.push(p, &blob(0, 400), || {}).unwrap(); // units 7..14
        assert_eq!(pop_var(&q, c).unwrap(), blob(0, 400));
        assert_eq!(pop_var(&q, c).unwrap(), blob(0, 400));
        // The dead producer claims 2 units of padding and 3 of message,
        // publishes the padding (as a claim does) and dies.
        let lost = q.claim_push(&h.producers[0], 150).unwrap();
        assert_eq!(lost.pos(), 16);
        q.push(p, &blob(1, 10), || {}).unwrap(); // position 19
        assert_eq!(pop_var(&q, c), Err(PopBlocked::Unpublished { pos: 16 }));
        assert_eq!(q.recover(Side::Push, 16, me, liveness, |_| true), Recovery::Recovered);
        assert_eq!(pop_var(&q, c).unwrap(), blob(1, 10));
        assert_eq!((h.ctrl.lost_in_push(), h.ctrl.lost_in_consume()), (1, 0));
        // Settling the dead entry later (its intent names the claim's
        // start, before the padding) finds nothing left to do.
        assert_eq!(q.recover(Side::Push, 14, me, liveness, |_| true), Recovery::NotStuck);
        assert_eq!(h.ctrl.lost_in_push(), 1);
    }

    #[test]
    fn a_dead_consumers_units_are_all_released_once() {
        let dead = Owner::new(9, 9);
        let me = Owner::new(1, 1);
        let liveness = only_dead(dead);
        let h = var_heap(8);
        let q = var_ring(&h);
        table::give(&h.consumers[1], dead);
        let (p, c) = (&h.producers[0], &h.consumers[0]);
        q.push(p, &blob(0, 200), || {}).unwrap(); // units 0..4
        let _held_by_the_dead = q.claim_pop(&h.consumers[1]).unwrap();
        q.push(p, &blob(1, 200), || {}).unwrap(); // units 4..8
        // Round to unit 2 (inside the dead consumer's message): blocked.
        assert_eq!(pop_var(&q, c).unwrap(), blob(1, 200));
        q.push(p, &blob(2, 10), || {}).unwrap_err();
        let blocked = q.claim_push(p, 120).unwrap_err(); // units 8..11
        assert_eq!(blocked, PushBlocked::Unreleased { pos: 0 });
        assert_eq!(q.recover(Side::Consume, 2, me, liveness, |_| true), Recovery::Recovered);
        assert_eq!(q.recover(Side::Consume, 0, me, liveness, |_| true), Recovery::NotStuck);
        q.push(p, &blob(3, 200), || {}).unwrap();
        assert_eq!(pop_var(&q, c).unwrap(), blob(3, 200));
        assert_eq!((h.ctrl.lost_in_push(), h.ctrl.lost_in_consume()), (0, 1));
    }

    #[test]
    fn counters_at_a_held_message_of_one_lap_ago_are_sane() {
        let h = var_heap(8);
        let q = var_ring(&h);
        let (p, c) = (&h.producers[0], &h.consumers[0]);
        q.push(p, &blob(0, 10), || {}).unwrap(); // unit 0
        q.push(p, &blob(1, 150), || {}).unwrap(); // units 1..4
        q.push(p, &blob(2, 200), || {}).unwrap(); // units 4..8
        assert_eq!(pop_var(&q, c).unwrap(), blob(0, 10));
        let held = q.claim_pop(&h.consumers[1]).unwrap(); // units 1..4
        assert_eq!(pop_var(&q, c).unwrap(), blob(2, 200));
        q.push(p, &blob(3, 10), || {}).unwrap(); // position 8 (unit 0)
        assert_eq!(pop_var(&q, c).unwrap(), blob(3, 10));
        // Head and tail at 9: unit 1, the held message's first.
        assert_eq!(q.claim_push(p, 10), Err(PushBlocked::Unreleased { pos: 1 }));
        assert_eq!(q.sane(Side::Consume), Ok(()));
        assert_eq!(q.sane(Side::Push), Ok(()));
        q.release(held, &h.consumers[1]);
        assert_eq!(q.sane(Side::Consume), Ok(()));
    }
}

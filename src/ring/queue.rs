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
    _pad4: [u8; 24],
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
            _pad4: [0; 24],
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
    _pad: [u8; 48],
}

#[cfg(not(shmbus_loom))]
const _: () = assert!(core::mem::size_of::<ClaimEntry>() == 64);

impl ClaimEntry {
    pub fn new() -> Self {
        ClaimEntry {
            owner: AtomicU64::new(0),
            intent: AtomicU64::new(NO_INTENT),
            _pad: [0; 48],
        }
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
    pos: u64,
    /// A consumer's claim of a tombstone: nothing to read.
    tomb: bool,
}

impl Claim {
    pub fn pos(self) -> u64 {
        self.pos
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

/// A view of one work queue: control block, claim tables, slots.
#[derive(Clone, Copy)]
pub struct QueueRing<'a> {
    ctrl: &'a QueueCtrl,
    producers: &'a [ClaimEntry],
    consumers: &'a [ClaimEntry],
    slots: &'a [AtomicU64],
    mask: u64,
    stride: usize,
    slot_bytes: usize,
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
            mask: capacity as u64 - 1,
            stride: stride_words(slot_bytes),
            slot_bytes,
        })
    }

    pub fn ctrl(&self) -> &'a QueueCtrl {
        self.ctrl
    }

    pub fn capacity(&self) -> u64 {
        self.mask + 1
    }

    pub fn slot_bytes(&self) -> usize {
        self.slot_bytes
    }

    pub fn producers(&self) -> &'a [ClaimEntry] {
        self.producers
    }

    pub fn consumers(&self) -> &'a [ClaimEntry] {
        self.consumers
    }

    #[inline]
    fn slot(&self, pos: u64) -> &'a [AtomicU64] {
        let start = (pos & self.mask) as usize * self.stride;
        &self.slots[start..start + self.stride]
    }

    // The sequence is stored minus the slot index, so that all-zero memory
    // is the initial state (slot i free for position i). The tombstone bit
    // rides above it.
    #[inline]
    fn seq(&self, pos: u64) -> u64 {
        // SYNC POINT: pairs with the Release stores in `store_seq` and the
        // recoveries' compare-and-swaps.
        let stored = self.slot(pos)[0].load(Ordering::Acquire);
        (stored & !TOMB).wrapping_add(pos & self.mask) & !TOMB | (stored & TOMB)
    }

    #[inline]
    fn encode(&self, pos: u64, seq: u64) -> u64 {
        (seq & !TOMB).wrapping_sub(pos & self.mask) & !TOMB | (seq & TOMB)
    }

    #[inline]
    fn store_seq(&self, pos: u64, seq: u64) {
        self.slot(pos)[0].store(self.encode(pos, seq), Ordering::Release);
    }

    fn cas_seq(&self, pos: u64, from: u64, to: u64) -> bool {
        self.slot(pos)[0]
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
                    Ok(_) => return Ok(Claim { pos, tomb: is_tomb }),
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
        // Ahead: the counter moved on since we read it.
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

    /// Claims the next position to push. `entry` is the caller's claim-table
    /// entry; its intent names the position while the claim is held.
    #[inline]
    pub fn claim_push(&self, entry: &ClaimEntry) -> Result<Claim, PushBlocked> {
        let capacity = self.capacity() as i64;
        self.claim(&self.ctrl.tail, 0, entry)
            .map_err(|(pos, lead)| match lead {
                // The slot still holds the message from one lap ago: a
                // consumer claimed it and has not released it, or none has
                // taken it yet.
                Some(l) if l == 1 - capacity => {
                    let behind = pos.wrapping_sub(self.capacity());
                    if self.ctrl.head.load(Ordering::Acquire) > behind {
                        PushBlocked::Unreleased { pos: behind }
                    } else {
                        PushBlocked::Full
                    }
                }
                // Its producer of one lap ago has not published yet.
                Some(_) => PushBlocked::Full,
                None => PushBlocked::Corrupt {
                    pos,
                    seq: self.seq(pos),
                },
            })
    }

    /// Writes the message of a push claim. `bytes.len() <= slot_bytes`.
    #[inline]
    pub fn write(&self, claim: Claim, bytes: &[u8]) {
        debug_assert!(bytes.len() <= self.slot_bytes);
        let slot = self.slot(claim.pos);
        slot[1].store(bytes.len() as u64, Ordering::Relaxed);
        store_bytes(&slot[SLOT_HEADER_WORDS..], bytes);
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
    #[inline]
    pub fn payload(&self, claim: Claim) -> &'a [AtomicU64] {
        &self.slot(claim.pos)[SLOT_HEADER_WORDS..][..self.slot_bytes.div_ceil(8)]
    }

    /// Publishes a push claim whose payload was written in place, as `len`
    /// bytes (at most `slot_bytes`).
    #[inline]
    pub fn commit(&self, claim: Claim, len: usize, entry: &ClaimEntry) {
        debug_assert!(len <= self.slot_bytes);
        self.slot(claim.pos)[1].store(len as u64, Ordering::Relaxed);
        self.publish(claim, entry);
    }

    /// Gives up a push claim without a message: the slot becomes a
    /// tombstone, which the consumer that claims it skips (nothing was
    /// pushed, so nothing is counted lost).
    #[inline]
    pub fn abandon(&self, claim: Claim, entry: &ClaimEntry) {
        // SYNC POINT: pairs with the Acquire load in `seq` by the consumer
        // that claims the tombstone, as in `publish`.
        self.store_seq(claim.pos, tomb(claim.pos));
        entry.intent.store(NO_INTENT, Ordering::Release);
    }

    /// Claims the next message (or tombstone) to pop.
    #[inline]
    pub fn claim_pop(&self, entry: &ClaimEntry) -> Result<Claim, PopBlocked> {
        self.claim(&self.ctrl.head, 1, entry)
            .map_err(|(pos, lead)| match lead {
                // Free for `pos`: not pushed yet, or claimed and not
                // published.
                Some(-1) => {
                    if self.ctrl.tail.load(Ordering::Acquire) > pos {
                        PopBlocked::Unpublished { pos }
                    } else {
                        PopBlocked::Empty
                    }
                }
                // The message of one lap ago is still being consumed.
                Some(_) => PopBlocked::Empty,
                None => PopBlocked::Corrupt {
                    pos,
                    seq: self.seq(pos),
                },
            })
    }

    /// Copies the message of a pop claim into `out`.
    #[inline]
    pub fn read(&self, claim: Claim, out: &mut [u8]) -> Popped {
        if claim.tomb {
            return Popped::Tombstone;
        }
        let slot = self.slot(claim.pos);
        let len = slot[1].load(Ordering::Relaxed);
        match usize::try_from(len) {
            Ok(len) if len <= self.slot_bytes && len <= out.len() => {
                load_bytes(&slot[SLOT_HEADER_WORDS..], &mut out[..len]);
                Popped::Message { len }
            }
            _ => Popped::BadLength { len },
        }
    }

    /// The payload words and length of a pop claim's message, for reading
    /// in place until [`release`](Self::release): a claimed slot is its
    /// claimer's alone (no producer writes it before it is released, since
    /// the next lap's producer waits for the released sequence; no other
    /// consumer claims its position; a survivor finishes it only once the
    /// claimer is known dead). The words are the slot's whole payload area;
    /// the message is their first `len` bytes. `Err` with what
    /// [`read`](Self::read) would report instead: a tombstone, or a length
    /// the slot cannot hold.
    #[inline]
    pub fn lend(&self, claim: Claim) -> Result<(&'a [AtomicU64], usize), Popped> {
        if claim.tomb {
            return Err(Popped::Tombstone);
        }
        let slot = self.slot(claim.pos);
        let len = slot[1].load(Ordering::Relaxed);
        match usize::try_from(len) {
            Ok(len) if len <= self.slot_bytes => Ok((&slot[SLOT_HEADER_WORDS..], len)),
            _ => Err(Popped::BadLength { len }),
        }
    }

    /// Releases a pop claim: the slot is free for the next lap.
    #[inline]
    pub fn release(&self, claim: Claim, entry: &ClaimEntry) {
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

    /// The sequence a slot stuck on `side`'s dead claimer of `pos` holds,
    /// and the one that finishes it; `None` if the slot is not stuck so.
    fn stuck(&self, side: Side, pos: u64) -> Option<(u64, u64)> {
        let seq = self.seq(pos);
        match side {
            Side::Push if seq == pos && self.ctrl.tail.load(Ordering::Acquire) > pos => {
                Some((pos, tomb(pos)))
            }
            Side::Consume
                if (seq == pos.wrapping_add(1) || seq == tomb(pos))
                    && self.ctrl.head.load(Ordering::Acquire) > pos =>
            {
                Some((seq, pos.wrapping_add(self.capacity())))
            }
            _ => None,
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
        let table = match side {
            Side::Push => self.producers,
            Side::Consume => self.consumers,
        };
        if self.stuck(side, pos).is_none() {
            return Recovery::NotStuck;
        }
        let finishable = |claimers: Claimers| match claimers {
            Claimers::Dead => true,
            Claimers::Nobody => orphans,
            Claimers::MayLive => false,
        };
        match Self::claimers(table, pos, &mut liveness) {
            Claimers::MayLive => return Recovery::Alive,
            Claimers::Nobody if !orphans => return Recovery::Unclaimed,
            _ => {}
        }
        if !self.take_journal(me, &mut liveness) {
            return Recovery::Alive;
        }
        if !proceed(RecoveryStep::JournalTaken) {
            return Recovery::Stopped;
        }
        // Under the journal, look again: a recoverer before us may have
        // finished this very slot.
        let outcome = match self.stuck(side, pos) {
            Some((from, to)) if finishable(Self::claimers(table, pos, &mut liveness)) => {
                let lost_a_message = from != tomb(pos);
                if lost_a_message {
                    self.ctrl.journal_pos.store(pos, Ordering::Relaxed);
                    // SYNC POINT: Release publishes `journal_pos` to a
                    // successor that sees the pending bit (Acquire in
                    // `finish_pending`). Adding 3 to `count << 1 | 0` counts
                    // one loss and sets the pending bit in one step.
                    self.lost_counter(side)
                        .fetch_add(2 | PENDING, Ordering::AcqRel);
                    if !proceed(RecoveryStep::Counted) {
                        return Recovery::Stopped;
                    }
                }
                self.cas_seq(pos, from, to);
                if !proceed(RecoveryStep::SlotFinished) {
                    return Recovery::Stopped;
                }
                if lost_a_message {
                    self.lost_counter(side)
                        .fetch_and(!PENDING, Ordering::Release);
                }
                Recovery::Recovered
            }
            _ => Recovery::NotStuck,
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
    /// and clearing its pending bit: the slot it was finishing.
    fn finish_pending(&self) {
        for side in [Side::Push, Side::Consume] {
            let counter = self.lost_counter(side);
            // SYNC POINT: Acquire pairs with the Release of the `fetch_add`
            // in `recover`: seeing the pending bit, we see `journal_pos`.
            if counter.load(Ordering::Acquire) & PENDING == 0 {
                continue;
            }
            let pos = self.ctrl.journal_pos.load(Ordering::Relaxed);
            if let Some((from, to)) = self.stuck(side, pos) {
                if from != tomb(pos) {
                    self.cas_seq(pos, from, to);
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
        let claim = self.claim_push(entry)?;
        self.write(claim, bytes);
        between();
        self.publish(claim, entry);
        Ok(claim.pos)
    }

    /// Pops one message into `out` as one attempt: claims, reads, calls
    /// `between()`, releases. Tombstones are skipped (their loss was
    /// counted by whoever left them).
    #[inline]
    pub fn pop(
        &self,
        entry: &ClaimEntry,
        out: &mut [u8],
        mut between: impl FnMut(),
    ) -> Result<(u64, Popped), PopBlocked> {
        loop {
            let claim = self.claim_pop(entry)?;
            let popped = self.read(claim, out);
            between();
            self.release(claim, entry);
            if popped != Popped::Tombstone {
                return Ok((claim.pos, popped));
            }
        }
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
            assert_eq!(q.claim_push(p), Err(PushBlocked::Full));
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
                    q.claim_push(&h.producers[0]),
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
}

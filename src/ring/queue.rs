//! Work queue (many producers, many consumers): each message is taken by
//! exactly one consumer.
//!
//! # Algorithm
//!
//! Dmitry Vyukov's bounded MPMC queue ("Bounded MPMC queue",
//! 1024cores.net), as crossbeam's `ArrayQueue` also uses it. A power-of-two
//! array of slots, each with a sequence counter; `tail` is the next position
//! to push, `head` the next to pop. For position `pos` in slot
//! `pos & (capacity - 1)`:
//!
//! | slot sequence        | meaning                                      |
//! |----------------------|----------------------------------------------|
//! | `pos`                | free: a producer may claim `pos`             |
//! | `pos + 1`            | holds message `pos`: a consumer may claim it |
//! | `pos + capacity`     | consumed: free for position `pos + capacity` |
//!
//! A producer claims `pos` by compare-and-swap on `tail`, writes the
//! message, then stores `pos + 1`. A consumer claims by compare-and-swap on
//! `head`, copies the message, then stores `pos + capacity`. Per producer,
//! positions grow, so messages of one producer are consumed in the order it
//! pushed them (FIFO per producer).
//!
//! # Crash safety
//!
//! A process can die between claiming a position and finishing with it.
//! A producer that dies there leaves a slot that consumers wait on forever;
//! a consumer that dies there leaves a slot that producers wait on when
//! they come round. So every producer and consumer has an entry in a
//! *claim table* holding its [`Owner`] token and its *intent*: the position
//! it is about to claim, written **before** the compare-and-swap, cleared
//! after it has finished with the slot. A survivor stuck at position `pos`
//! looks for entries whose intent is `pos`:
//!
//! - one of them is alive: that may be the claimer, still working, so wait;
//! - all of them are dead: the claimer is dead. The survivor finishes the
//!   slot in its place: a producer's slot becomes a *tombstone* (consumers
//!   skip it), a consumer's slot becomes free. Each such recovery counts one
//!   lost message.
//!
//! The intent is written before the claim, so a claimer always has its
//! intent set while it holds the slot; a dead process whose intent is `pos`
//! but lost the race for it does no harm, because the winner has intent
//! `pos` too and is alive (or dead, and then the slot is really stuck).
//! Recoveries are compare-and-swaps on the slot sequence, so two survivors
//! never both recover (or count) one slot.
//!
//! Delivery is at most once: a message whose consumer died after claiming
//! it is lost, and counted in [`QueueCtrl::lost_in_consume`].

use crate::ring::{load_bytes, store_bytes, Liveness, Owner, SLOT_HEADER_WORDS};
pub use crate::ring::{slots_words, stride_words};
use crate::sync::{AtomicU64, Ordering};
use crate::wait::WakeWords;

/// Length of a slot whose producer died: consumers skip it.
const TOMBSTONE: u64 = u64::MAX;
/// Flipped into a slot's sequence while a recoverer writes its tombstone:
/// producers and consumers see a sequence far ahead and look elsewhere.
const RECOVERING: u64 = 1 << 63;
/// Intent of a claim-table entry that is not claiming anything.
pub const NO_INTENT: u64 = u64::MAX;

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
    not_empty: WakeWords,
    _pad2: [u8; 56],
    /// Producers sleep here when the queue is full.
    not_full: WakeWords,
    _pad3: [u8; 56],
    /// Messages lost because their producer died after claiming a slot and
    /// before publishing (the push never returned).
    lost_in_push: AtomicU64,
    /// Messages lost because their consumer died after claiming them and
    /// before finishing (at-most-once delivery).
    lost_in_consume: AtomicU64,
    _pad4: [u8; 48],
}

#[cfg(not(shmbus_loom))]
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<QueueCtrl>() == 320);
    assert!(offset_of!(QueueCtrl, head) == 64);
    assert!(offset_of!(QueueCtrl, not_empty) == 128);
    assert!(offset_of!(QueueCtrl, not_full) == 192);
    assert!(offset_of!(QueueCtrl, lost_in_push) == 256);
};

impl QueueCtrl {
    pub fn new() -> Self {
        QueueCtrl {
            tail: AtomicU64::new(0),
            _pad0: [0; 56],
            head: AtomicU64::new(0),
            _pad1: [0; 56],
            not_empty: WakeWords::new(),
            _pad2: [0; 56],
            not_full: WakeWords::new(),
            _pad3: [0; 56],
            lost_in_push: AtomicU64::new(0),
            lost_in_consume: AtomicU64::new(0),
            _pad4: [0; 48],
        }
    }

    pub fn not_empty(&self) -> &WakeWords {
        &self.not_empty
    }

    pub fn not_full(&self) -> &WakeWords {
        &self.not_full
    }

    /// Messages lost to producers that died mid-push.
    pub fn lost_in_push(&self) -> u64 {
        self.lost_in_push.load(Ordering::Relaxed)
    }

    /// Messages lost to consumers that died mid-pop.
    pub fn lost_in_consume(&self) -> u64 {
        self.lost_in_consume.load(Ordering::Relaxed)
    }

    /// Positions pushed (claimed) so far.
    pub fn pushed(&self) -> u64 {
        self.tail.load(Ordering::Acquire)
    }

    /// Positions popped (claimed) so far.
    pub fn popped(&self) -> u64 {
        self.head.load(Ordering::Acquire)
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

    pub fn intent(&self) -> u64 {
        self.intent.load(Ordering::Acquire)
    }

    /// Gives the entry to `owner`, as `table::attach` would (for model
    /// checks and tests, which stage processes by hand).
    #[doc(hidden)]
    pub fn owner_for_tests(&self, owner: Owner) {
        self.owner.store(owner.token(), Ordering::Release);
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
    /// it: a slow consumer, or a dead one ([`QueueRing::recover_consume`]).
    Unreleased { pos: u64 },
}

/// Why a pop could not claim a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PopBlocked {
    /// No message has been pushed.
    Empty,
    /// Position `pos` was claimed by a producer that has not published it:
    /// a slow producer, or a dead one ([`QueueRing::recover_push`]).
    Unpublished { pos: u64 },
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

/// What a recovery attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// The claimer is dead; we finished its slot and counted the loss.
    Recovered,
    /// A live process may hold the claim: wait.
    Alive,
    /// The slot is no longer stuck (finished meanwhile, or recovered by
    /// someone else).
    NotStuck,
}

/// A view of one work queue: control block, claim tables, slots.
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
    // is the initial state (slot i free for position i).
    #[inline]
    fn seq(&self, pos: u64) -> u64 {
        // SYNC POINT: pairs with the Release stores in `store_seq` and the
        // recoveries' compare-and-swaps.
        self.slot(pos)[0]
            .load(Ordering::Acquire)
            .wrapping_add(pos & self.mask)
    }

    #[inline]
    fn store_seq(&self, pos: u64, seq: u64) {
        self.slot(pos)[0].store(seq.wrapping_sub(pos & self.mask), Ordering::Release);
    }

    fn cas_seq(&self, pos: u64, from: u64, to: u64) -> bool {
        let index = pos & self.mask;
        self.slot(pos)[0]
            .compare_exchange(
                from.wrapping_sub(index),
                to.wrapping_sub(index),
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

    /// Whether a pop would find a message now.
    #[inline]
    pub fn can_pop(&self) -> bool {
        let pos = self.ctrl.head.load(Ordering::Acquire);
        self.seq(pos) == pos.wrapping_add(1)
    }

    /// Claims the next position of `counter` (`tail` or `head`) whose slot
    /// sequence is `pos + ready`, with `entry`'s intent set first. Returns
    /// the position at which the slot was not ready, if it was not.
    #[inline]
    fn claim(&self, counter: &AtomicU64, ready: u64, entry: &ClaimEntry) -> Result<Claim, u64> {
        let mut pos = counter.load(Ordering::Relaxed);
        loop {
            let lead = self.seq(pos).wrapping_sub(pos.wrapping_add(ready)) as i64;
            if lead == 0 {
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
                    Ok(_) => return Ok(Claim { pos }),
                    Err(now) => pos = now,
                }
            } else if lead < 0 {
                return Err(pos);
            } else {
                // Someone claimed `pos` meanwhile.
                pos = counter.load(Ordering::Relaxed);
            }
        }
    }

    /// Claims the next position to push. `entry` is the caller's claim-table
    /// entry; its intent names the position while the claim is held.
    #[inline]
    pub fn claim_push(&self, entry: &ClaimEntry) -> Result<Claim, PushBlocked> {
        self.claim(&self.ctrl.tail, 0, entry).map_err(|pos| {
            // The slot still holds the message from one lap ago.
            let behind = pos.wrapping_sub(self.capacity());
            if self.ctrl.head.load(Ordering::Acquire) > behind {
                PushBlocked::Unreleased { pos: behind }
            } else {
                PushBlocked::Full
            }
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

    /// Claims the next message to pop.
    #[inline]
    pub fn claim_pop(&self, entry: &ClaimEntry) -> Result<Claim, PopBlocked> {
        self.claim(&self.ctrl.head, 1, entry).map_err(|pos| {
            if self.ctrl.tail.load(Ordering::Acquire) > pos {
                PopBlocked::Unpublished { pos }
            } else {
                PopBlocked::Empty
            }
        })
    }

    /// Copies the message of a pop claim into `out`.
    #[inline]
    pub fn read(&self, claim: Claim, out: &mut [u8]) -> Popped {
        let slot = self.slot(claim.pos);
        let len = slot[1].load(Ordering::Relaxed);
        if len == TOMBSTONE {
            return Popped::Tombstone;
        }
        match usize::try_from(len) {
            Ok(len) if len <= self.slot_bytes && len <= out.len() => {
                load_bytes(&slot[SLOT_HEADER_WORDS..], &mut out[..len]);
                Popped::Message { len }
            }
            _ => Popped::BadLength { len },
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

    /// Whether every entry of `table` whose intent is `pos` is dead. False
    /// if any is alive (it may be the claimer) or if none has that intent
    /// (the claimer finished and cleared it: look at the slot again).
    fn claimers_dead(
        table: &[ClaimEntry],
        pos: u64,
        liveness: &mut impl FnMut(Owner) -> Liveness,
    ) -> bool {
        let mut found = false;
        for entry in table {
            if entry.intent() != pos {
                continue;
            }
            match entry.owner() {
                Some(owner) if !liveness(owner).is_dead() => return false,
                _ => found = true,
            }
        }
        found
    }

    /// Called by a consumer stuck at `pos` ([`PopBlocked::Unpublished`]):
    /// if the producer that claimed it is dead, leaves a tombstone there so
    /// consumers move on, and counts the lost message.
    pub fn recover_push(&self, pos: u64, mut liveness: impl FnMut(Owner) -> Liveness) -> Recovery {
        if self.seq(pos) != pos || self.ctrl.tail.load(Ordering::Acquire) <= pos {
            return Recovery::NotStuck;
        }
        if !Self::claimers_dead(self.producers, pos, &mut liveness) {
            return Recovery::Alive;
        }
        // The claimer is dead. Take the slot with a compare-and-swap to a
        // sequence no one else acts on, so that only one recoverer writes the
        // tombstone, and only while the slot is still stuck (a late store
        // could otherwise land on the message of a later lap).
        let recovering = pos ^ RECOVERING;
        if !self.cas_seq(pos, pos, recovering) {
            return Recovery::NotStuck;
        }
        self.slot(pos)[1].store(TOMBSTONE, Ordering::Relaxed);
        self.store_seq(pos, pos.wrapping_add(1));
        self.ctrl.lost_in_push.fetch_add(1, Ordering::Relaxed);
        Recovery::Recovered
    }

    /// Called by a producer stuck at `pos` ([`PushBlocked::Unreleased`]): if
    /// the consumer that claimed it is dead, frees the slot and counts the
    /// lost message.
    pub fn recover_consume(
        &self,
        pos: u64,
        mut liveness: impl FnMut(Owner) -> Liveness,
    ) -> Recovery {
        let published = pos.wrapping_add(1);
        if self.seq(pos) != published || self.ctrl.head.load(Ordering::Acquire) <= pos {
            return Recovery::NotStuck;
        }
        if !Self::claimers_dead(self.consumers, pos, &mut liveness) {
            return Recovery::Alive;
        }
        if self.cas_seq(pos, published, pos.wrapping_add(self.capacity())) {
            self.ctrl.lost_in_consume.fetch_add(1, Ordering::Relaxed);
            Recovery::Recovered
        } else {
            Recovery::NotStuck
        }
    }
}

/// Claim tables: attaching a producer or consumer to an entry.
pub mod table {
    use super::{ClaimEntry, NO_INTENT};
    use crate::ring::{Liveness, Owner};
    use crate::sync::Ordering;

    /// Takes a free entry, or the entry of a dead process whose claim (if
    /// any) is no longer stuck. `settled(intent)` says whether a dead
    /// entry's intent may be forgotten (recovering it first if needed).
    /// Returns the index, or `None` when every entry is held by a live
    /// process.
    pub fn attach(
        table: &[ClaimEntry],
        me: Owner,
        mut liveness: impl FnMut(Owner) -> Liveness,
        mut settled: impl FnMut(u64) -> bool,
    ) -> Option<usize> {
        for (index, entry) in table.iter().enumerate() {
            let current = entry.owner.load(Ordering::Acquire);
            let free = match Owner::from_token(current) {
                None => true,
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
        entry.intent.store(NO_INTENT, Ordering::Relaxed);
        let _ = entry
            .owner
            .compare_exchange(me.token(), 0, Ordering::Release, Ordering::Relaxed);
    }
}

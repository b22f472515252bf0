//! A broadcast topic's ring, whichever kind it is: fixed slots
//! ([`BroadcastRing`]) or variable-size messages ([`VarlenRing`]). The
//! endpoints hold one of these and never look at the kind themselves,
//! except where a variable-size topic needs the message length first
//! (lossless room).

use crate::ring::broadcast::{BroadcastCtrl, BroadcastRing, Read, StartAt};
use crate::ring::gate::{Gate, GatedRing};
use crate::ring::varlen::VarlenRing;
use crate::ring::Owner;
use crate::sync::AtomicU64;

/// A broadcast ring of either kind.
#[derive(Clone, Copy)]
pub enum AnyRing<'a> {
    Fixed(BroadcastRing<'a>),
    Var(VarlenRing<'a>),
}

impl<'a> AnyRing<'a> {
    /// Head, lease and wakeup words.
    #[inline]
    pub fn ctrl(&self) -> &'a BroadcastCtrl {
        match self {
            AnyRing::Fixed(ring) => ring.ctrl(),
            AnyRing::Var(ring) => ring.ctrl().broadcast(),
        }
    }

    /// Messages held at most: slots, or descriptors.
    #[inline]
    pub fn capacity(&self) -> u64 {
        match self {
            AnyRing::Fixed(ring) => ring.capacity(),
            AnyRing::Var(ring) => ring.capacity(),
        }
    }

    /// The largest message: the slot size, or half the arena.
    #[inline]
    pub fn max_message(&self) -> usize {
        match self {
            AnyRing::Fixed(ring) => ring.slot_bytes(),
            AnyRing::Var(ring) => ring.max_message(),
        }
    }

    /// The variable-size ring, if this is one.
    #[inline]
    pub fn var(&self) -> Option<&VarlenRing<'a>> {
        match self {
            AnyRing::Fixed(_) => None,
            AnyRing::Var(ring) => Some(ring),
        }
    }

    /// Sequence number of the next message to be published.
    #[inline]
    pub fn head(&self) -> u64 {
        self.ctrl().published()
    }

    /// Messages published so far (see [`BroadcastRing::published`]).
    #[inline]
    pub fn published(&self) -> u64 {
        match self {
            AnyRing::Fixed(ring) => ring.published(),
            AnyRing::Var(ring) => ring.published(),
        }
    }

    /// Where a new lease holder continues, repairing what a dead one left.
    pub fn resume_seq(&self) -> u64 {
        match self {
            AnyRing::Fixed(ring) => ring.resume_seq(),
            AnyRing::Var(ring) => ring.resume().seq,
        }
    }

    /// Publishes message `seq` as the lease holder `me`: nothing, and
    /// `false`, if `me` lost the lease. The caller keeps `bytes` within
    /// [`max_message`](Self::max_message).
    #[inline(always)]
    pub fn publish_as(&self, me: Owner, seq: u64, bytes: &[u8]) -> bool {
        if !self.ctrl().lease().held_by(me) {
            return false;
        }
        match self {
            AnyRing::Fixed(ring) => ring.publish(seq, bytes),
            AnyRing::Var(ring) => publish_var(ring, seq, bytes),
        }
        true
    }

    /// Begins message `seq` of `len` bytes (within `max_message`): marks it
    /// "being written", and returns its payload words and, for a
    /// variable-size ring, its arena position (0 for slots).
    #[inline(always)]
    pub fn begin(&self, seq: u64, len: usize) -> (&'a [AtomicU64], u64) {
        match self {
            AnyRing::Fixed(ring) => (ring.begin(seq), 0),
            AnyRing::Var(ring) => match ring.begin(seq, len) {
                Ok(reservation) => (reservation.payload(), reservation.pos()),
                Err(too_large) => {
                    unreachable!("loan lengths are checked against max_message: {too_large}")
                }
            },
        }
    }

    /// The payload words of message `seq`, begun at `pos` with `len` bytes.
    #[inline]
    pub fn payload(&self, seq: u64, pos: u64, len: usize) -> &'a [AtomicU64] {
        match self {
            AnyRing::Fixed(ring) => ring.payload(seq),
            AnyRing::Var(ring) => ring.payload_at(pos, len),
        }
    }

    /// Completes message `seq`, begun at `pos`, as `len` bytes.
    #[inline(always)]
    pub fn commit(&self, seq: u64, pos: u64, len: usize) {
        match self {
            AnyRing::Fixed(ring) => ring.commit(seq, len),
            AnyRing::Var(ring) => ring.commit_at(seq, pos, len),
        }
    }

    /// Copies message `cursor` into `out` if it is there and whole (see
    /// [`BroadcastRing::read`]; a variable-size message longer than `out`
    /// is copied in part, and its length returned).
    #[inline(always)]
    pub fn read(&self, cursor: u64, out: &mut [u8]) -> Read {
        GatedRing::read(self, cursor, out)
    }

    /// Whether a read of `cursor` would find more than `Empty`.
    #[inline]
    pub fn ready(&self, cursor: u64) -> bool {
        match self {
            AnyRing::Fixed(ring) => ring.ready(cursor),
            AnyRing::Var(ring) => ring.ready(cursor),
        }
    }

    /// Where a reader lapped at `cursor` continues.
    #[inline]
    pub fn lag_target(&self, cursor: u64) -> u64 {
        match self {
            AnyRing::Fixed(ring) => ring.lag_target(cursor),
            AnyRing::Var(ring) => ring.lag_target(cursor),
        }
    }

    /// The first message an overwrite subscriber starting at `at` reads.
    pub fn start(&self, at: StartAt) -> u64 {
        match self {
            AnyRing::Fixed(ring) => at.cursor(ring.head(), ring.capacity()),
            AnyRing::Var(ring) => ring.start(at),
        }
    }

    /// Message `cursor`'s payload words and length for reading in place,
    /// if it is complete and whole (see [`BroadcastRing::lend`] and
    /// [`VarlenRing::lend`], whose rule `gated_from` is for).
    #[inline]
    pub fn lend(&self, cursor: u64, gated_from: u64) -> Option<(&'a [AtomicU64], usize)> {
        match self {
            AnyRing::Fixed(ring) => ring.lend(cursor),
            AnyRing::Var(ring) => lend_var(ring, cursor, gated_from),
        }
    }

    /// Lossless, variable-size: whether message `next` of `len` bytes
    /// leaves the unread bytes of the subscriber at `slowest` alone (see
    /// [`VarlenRing::has_room`]); fixed slots need no more than a free
    /// slot, which the gate checks. A message too large is never room.
    #[inline]
    pub fn arena_room(&self, next: u64, len: usize, slowest: Option<u64>) -> bool {
        match self {
            AnyRing::Fixed(_) => true,
            AnyRing::Var(ring) => ring.has_room(next, len, slowest) == Ok(true),
        }
    }

    /// [`arena_room`](Self::arena_room) by a fresh scan of `gate`.
    #[inline]
    pub fn arena_room_in(&self, gate: &Gate<'_>, next: u64, len: usize) -> bool {
        match self {
            AnyRing::Fixed(_) => true,
            AnyRing::Var(ring) => ring.room_in(gate, next, len) == Ok(true),
        }
    }
}

// The variable-size paths stay out of line: inlined beside the fixed-slot
// ones, they made the fixed-slot receive loop twice as slow (criterion,
// `broadcast-64B/publish+receive`, 14 ns against 31), by how the callers
// were then inlined, not by what runs.

#[inline(never)]
fn lend_var<'a>(
    ring: &VarlenRing<'a>,
    cursor: u64,
    gated_from: u64,
) -> Option<(&'a [AtomicU64], usize)> {
    ring.lend(cursor, gated_from)
}

#[inline(never)]
fn read_var(ring: &VarlenRing<'_>, cursor: u64, out: &mut [u8]) -> Read {
    GatedRing::read(ring, cursor, out)
}

#[inline(never)]
fn publish_var(ring: &VarlenRing<'_>, seq: u64, bytes: &[u8]) {
    if let Err(too_large) = ring.publish(seq, bytes) {
        unreachable!("send lengths are checked against max_message: {too_large}");
    }
}

impl GatedRing for AnyRing<'_> {
    #[inline]
    fn capacity(&self) -> u64 {
        AnyRing::capacity(self)
    }
    #[inline]
    fn head(&self) -> u64 {
        AnyRing::head(self)
    }
    #[inline]
    fn broadcast_ctrl(&self) -> &BroadcastCtrl {
        self.ctrl()
    }
    #[inline(always)]
    fn read(&self, cursor: u64, out: &mut [u8]) -> Read {
        match self {
            AnyRing::Fixed(ring) => ring.read(cursor, out),
            AnyRing::Var(ring) => read_var(ring, cursor, out),
        }
    }
    #[inline]
    fn stamp(&self, cursor: u64) -> u64 {
        match self {
            AnyRing::Fixed(ring) => ring.stamp(cursor),
            AnyRing::Var(ring) => ring.stamp(cursor),
        }
    }
    #[inline]
    fn sync_overwritten(&self, cursor: u64) {
        match self {
            AnyRing::Fixed(ring) => ring.sync_overwritten(cursor),
            AnyRing::Var(ring) => ring.sync_overwritten(cursor),
        }
    }
    #[inline]
    fn attach_cursor(&self, start: StartAt, head: u64) -> u64 {
        match self {
            AnyRing::Fixed(ring) => ring.attach_cursor(start, head),
            AnyRing::Var(ring) => ring.attach_cursor(start, head),
        }
    }
}

//! Gating for lossless broadcast: the publisher never overwrites a slot that
//! an attached subscriber has not read (Disruptor-style gating).
//!
//! Each lossless subscriber holds an entry in a subscriber table: an owner
//! word and its cursor (the next message it will read). The publisher may
//! write message `seq` only if `seq < min(cursor) + capacity`, that is,
//! only if the message it overwrites, `seq - capacity`, has been read by
//! everyone. It caches that limit and rescans the table only when it
//! reaches it, or when a subscriber attached since its last scan.
//!
//! # The owner word
//!
//! | owner word              | meaning                                          |
//! |-------------------------|--------------------------------------------------|
//! | `0`                     | free                                             |
//! | token + `FLAG_CLAIMING` | that process is setting the entry up: not gating |
//! | token                   | attached: the publisher gates on its cursor      |
//! | token + `FLAG_EVICTED`  | that process was found dead and evicted          |
//!
//! Every state but "free" names a process, so an entry whose process died at
//! any instruction can be taken back once it is *known* dead; and an evicted
//! entry is not reused while its old owner might still be alive, so a
//! subscriber that was evicted (it cannot be, while alive: only the dead
//! are evicted; but a corrupt or foreign write can do it) never shares its
//! entry with another. A subscriber checks that it still holds its entry
//! before every read; once it does not, it stops, and never writes its
//! cursor again.
//!
//! # Attaching without a race
//!
//! A subscriber claims an entry with a provisional cursor, bumps `epoch`,
//! issues `fence(SeqCst)`, and then reads `head`. The publisher issues
//! `fence(SeqCst)` after every message (in the wakeup check) and reads
//! `epoch` before the next one. By the two fences, either the subscriber's
//! `head` read sees a message, or the publisher's `epoch` read sees the
//! attach: so every message after the `head` the subscriber read is gated on
//! its entry, and it may start anywhere from `head - capacity + 1` on
//! ([`Gate::attach`] does all of it). A *light* publisher (see "Light
//! writers" in `crate::wait`) skips its fence; the subscriber then issues
//! the heavy half of the asymmetric fence after its own, which stands in
//! for the publisher's. (A process that cannot must first make the
//! publisher heavy: `WakeWords::request_heavy_writers`.)
//!
//! # Attaching beside a subscriber
//!
//! A clone of a subscriber starts at that subscriber's cursor `c`
//! ([`Gate::attach_beside`]): it claims an entry with cursor `c`, bumps
//! `epoch`, and only then may the original move on. While the original
//! holds `c`, the publisher cannot write message `c + capacity`. Once the
//! original moves on, a publisher scan that sees its new cursor (Acquire)
//! also sees everything before it: the clone's entry, and the new epoch.
//! A scan that read the clone's entry before it was there, and the
//! original's cursor after it moved, therefore reads a new epoch after
//! the scan, and does not count: the publisher scans again.
//!
//! # Dead subscribers
//!
//! A subscriber whose process died would hold the publisher back forever.
//! When the publisher is blocked, and a liveness check is due, it evicts
//! the subscribers whose process is known dead ([`Gate::evict_dead`]); a
//! new subscriber that finds the table full does the same before giving up.
//! Each eviction is counted once.

use crate::ring::any::AnyRing;
use crate::ring::broadcast::{BroadcastCtrl, BroadcastRing, Read, StartAt};
use crate::ring::varlen::{self, VarlenRing};
use crate::ring::owner::{FLAG_CLAIMING, FLAG_EVICTED};
use crate::ring::{Liveness, Owner};
use crate::sync::{AtomicU64, Ordering};
use crate::wait::WakeWords;

/// Shared part of a subscriber table: two cache lines.
#[repr(C)]
pub struct GateCtrl {
    /// Bumped after every attach, so the publisher knows to rescan.
    epoch: AtomicU64,
    /// Subscribers evicted because their process died.
    evictions: AtomicU64,
    _pad0: [u8; 48],
    /// The publisher sleeps here while the slowest subscriber holds it back.
    space: WakeWords,
    _pad1: [u8; 48],
}

#[cfg(not(shmbus_loom))]
const _: () = {
    assert!(core::mem::size_of::<GateCtrl>() == 128);
    assert!(core::mem::offset_of!(GateCtrl, space) == 64);
    assert!(core::mem::size_of::<SubscriberEntry>() == 128);
};

impl GateCtrl {
    pub fn new() -> Self {
        GateCtrl {
            epoch: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            _pad0: [0; 48],
            space: WakeWords::new(),
            _pad1: [0; 48],
        }
    }

    #[inline]
    pub fn epoch(&self) -> u64 {
        // SYNC POINT: pairs with the Release half of `fetch_add` in
        // `announce`: a publisher that sees the new epoch sees the entry.
        self.epoch.load(Ordering::Acquire)
    }

    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    pub fn space(&self) -> &WakeWords {
        &self.space
    }
}

impl Default for GateCtrl {
    fn default() -> Self {
        Self::new()
    }
}

/// One lossless subscriber: owner word and cursor, each on a cache line of
/// its own. The subscriber checks its owner word before every read and
/// stores its cursor after it; the publisher reads both when it rescans.
/// On one line, the checks were loads of a line the other core kept
/// pulling away, and cost a third of a lossless subscriber's throughput
/// (measured); on two, the owner line stays shared and the check is a hit.
#[repr(C)]
pub struct SubscriberEntry {
    /// See "The owner word" in the module docs.
    owner: AtomicU64,
    _pad0: [u8; 56],
    /// Next message this subscriber will read; everything below is read.
    cursor: AtomicU64,
    _pad: [u8; 56],
}

impl SubscriberEntry {
    pub fn new() -> Self {
        SubscriberEntry {
            owner: AtomicU64::new(0),
            _pad0: [0; 56],
            cursor: AtomicU64::new(0),
            _pad: [0; 56],
        }
    }

    /// Who is attached here (`None` when free, claiming or evicted).
    pub fn owner(&self) -> Option<Owner> {
        Owner::from_token(self.owner.load(Ordering::Acquire))
    }

    /// The owner word decoded, flags and all (`None` when free): for tools
    /// that show every entry that names a process.
    pub fn owner_flagged(&self) -> Option<(Owner, u64)> {
        Owner::from_flagged(self.owner.load(Ordering::Acquire))
    }

    /// Whether the entry holds an evicted subscriber.
    pub fn is_evicted(&self) -> bool {
        Owner::from_flagged(self.owner.load(Ordering::Acquire))
            .is_some_and(|(_, flags)| flags == FLAG_EVICTED)
    }

    pub fn cursor(&self) -> u64 {
        self.cursor.load(Ordering::Acquire)
    }
}

impl Default for SubscriberEntry {
    fn default() -> Self {
        Self::new()
    }
}

/// What one read of a lossless subscriber found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatedRead {
    /// The message, `len` bytes, copied whole.
    Message { len: usize },
    /// Not published yet.
    Empty,
    /// The entry is not ours any more: stop, and never write it again.
    Evicted,
    /// Overwritten although we hold our entry: the caller treats it as a
    /// lag. Only corruption does that to a fixed-slot ring; a variable-size
    /// one does it to a message below the head a subscriber attached at
    /// (see [`GatedRing::attach_cursor`]).
    Overwritten,
    /// The slot claims a length that does not fit: corrupt.
    BadLength { len: u64 },
}

/// Where a subscriber attached: its entry, and the first message it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attached {
    pub index: usize,
    pub cursor: u64,
    /// The head read after announcing: every message after it is gated on
    /// the entry (message `head` itself may have been begun before the
    /// publisher saw the entry; [`Gate::attach_beside`]: the cursor it was
    /// given, which the sibling's entry already protects).
    pub head: u64,
}

/// What the gate needs of the ring it guards: both broadcast rings, fixed
/// slots ([`BroadcastRing`]) and variable-size ([`VarlenRing`]), share the
/// control block, the stamps and the read outcome.
pub trait GatedRing {
    /// Messages the ring holds at most.
    fn capacity(&self) -> u64;
    /// Sequence number of the next message to be published.
    fn head(&self) -> u64;
    /// Head, lease and wakeup words.
    fn broadcast_ctrl(&self) -> &BroadcastCtrl;
    /// Copies message `cursor` into `out` if it is there and whole.
    fn read(&self, cursor: u64, out: &mut [u8]) -> Read;
    /// Message `cursor`'s stamp, loaded with Acquire.
    fn stamp(&self, cursor: u64) -> u64;
    /// After a read found message `cursor` overwritten: Acquire loads of
    /// whatever told it so, so that everything the publisher did before
    /// (evicting us, if it did) is visible.
    #[inline]
    fn sync_overwritten(&self, cursor: u64) {
        self.stamp(cursor);
    }
    /// Where a subscriber attaching at `start` begins, `head` being the
    /// head it read after announcing itself: no lower than `head -
    /// capacity + 1`, the oldest message sure to be gated on it (see
    /// "Attaching without a race").
    #[inline]
    fn attach_cursor(&self, start: StartAt, head: u64) -> u64 {
        let capacity = self.capacity();
        start
            .cursor(head, capacity)
            .max(head.saturating_sub(capacity - 1))
    }
}

impl GatedRing for BroadcastRing<'_> {
    #[inline]
    fn capacity(&self) -> u64 {
        BroadcastRing::capacity(self)
    }
    #[inline]
    fn head(&self) -> u64 {
        BroadcastRing::head(self)
    }
    #[inline]
    fn broadcast_ctrl(&self) -> &BroadcastCtrl {
        self.ctrl()
    }
    #[inline(always)]
    fn read(&self, cursor: u64, out: &mut [u8]) -> Read {
        BroadcastRing::read(self, cursor, out)
    }
    #[inline]
    fn stamp(&self, cursor: u64) -> u64 {
        BroadcastRing::stamp(self, cursor)
    }
}

impl GatedRing for VarlenRing<'_> {
    #[inline]
    fn capacity(&self) -> u64 {
        VarlenRing::capacity(self)
    }
    #[inline]
    fn head(&self) -> u64 {
        VarlenRing::head(self)
    }
    #[inline]
    fn broadcast_ctrl(&self) -> &BroadcastCtrl {
        self.ctrl().broadcast()
    }
    #[inline(always)]
    fn read(&self, cursor: u64, out: &mut [u8]) -> Read {
        match VarlenRing::read(self, cursor, out) {
            varlen::Read::Message { len } => Read::Message { len },
            varlen::Read::Empty => Read::Empty,
            varlen::Read::Overwritten => Read::Overwritten,
            varlen::Read::BadDescriptor { len, .. } => Read::BadLength { len },
        }
    }
    #[inline]
    fn stamp(&self, cursor: u64) -> u64 {
        VarlenRing::stamp(self, cursor)
    }
    /// The descriptor's stamp, or `reserved`: a message is overwritten
    /// when either moved on (`reserved` when only its bytes were reused).
    #[inline]
    fn sync_overwritten(&self, cursor: u64) {
        VarlenRing::stamp(self, cursor);
        self.reserved_acquire();
    }
    /// As for fixed slots, and no lower than the oldest message still
    /// whole. The message being written when the subscriber announced
    /// itself (`head`) may not have been gated on it, and unlike a slot it
    /// may reuse the bytes of many older messages: a subscriber that starts
    /// below `head` may find some of those overwritten before it reads
    /// them, and is told so (`Lagged`, counted exactly), as an overwrite
    /// subscriber would be. From `head` on, every message is gated on it.
    #[inline]
    fn attach_cursor(&self, start: StartAt, head: u64) -> u64 {
        let capacity = VarlenRing::capacity(self);
        let floor = head.saturating_sub(capacity - 1);
        match start {
            StartAt::Oldest => self.oldest_held().max(floor),
            other => other.cursor(head, capacity).max(floor),
        }
    }
}

/// A view of one subscriber table.
#[derive(Clone, Copy)]
pub struct Gate<'a> {
    ctrl: &'a GateCtrl,
    entries: &'a [SubscriberEntry],
}

impl<'a> Gate<'a> {
    pub fn new(ctrl: &'a GateCtrl, entries: &'a [SubscriberEntry]) -> Self {
        Gate { ctrl, entries }
    }

    pub fn ctrl(&self) -> &'a GateCtrl {
        self.ctrl
    }

    pub fn entries(&self) -> &'a [SubscriberEntry] {
        self.entries
    }

    /// Attaches `me` as a lossless subscriber of `ring` starting at `start`
    /// (see "Attaching without a race"): claims an entry (taking back one
    /// whose process is known dead, if none is free), announces itself to
    /// the publisher, and publishes its cursor. `StartAt::Oldest` starts at
    /// most `capacity - 1` messages back: the oldest message the gate is sure
    /// to protect from the moment of attaching. `None` if every entry is
    /// held by a process that is alive or may be.
    ///
    /// The cursor moved forward: the caller wakes a publisher that sleeps
    /// for space (`ctrl().space().notify()`).
    ///
    /// If the publisher may be light (`ring.ctrl().wake().has_light_writer()`),
    /// this process must be able to issue the heavy fence
    /// ([`heavy_fence`](crate::sync::heavy_fence)); one that cannot asks
    /// for a heavy publisher first and waits until there is one.
    pub fn attach(
        &self,
        ring: &impl GatedRing,
        me: Owner,
        start: StartAt,
        liveness: impl FnMut(Owner) -> Liveness,
    ) -> Option<Attached> {
        let capacity = ring.capacity();
        // Only messages from head - capacity + 1 on are sure to be gated on
        // us once we are announced.
        let index = self.claim(me, ring.head().saturating_sub(capacity - 1), liveness)?;
        self.announce();
        if ring.broadcast_ctrl().wake().has_light_writer() {
            // The publisher's fence, issued for it (see the module docs).
            // The caller made sure we can: see `attach`'s docs.
            crate::sync::heavy_fence();
        }
        let head = ring.head();
        let cursor = ring.attach_cursor(start, head);
        self.advance(index, cursor);
        Some(Attached {
            index,
            cursor,
            head,
        })
    }

    /// Attaches a second subscriber of `me` at `cursor`: the cursor of a
    /// subscriber of `me` that holds its own entry and does not move until
    /// this returns (a clone of it). That entry keeps message `cursor` from
    /// being overwritten while the new one gets going, so the new one may
    /// start there even in a full ring, where [`attach`](Self::attach)
    /// starts no lower than `head - capacity + 1`. See "Attaching beside a
    /// subscriber" in the module docs. `None` if the table is full.
    pub fn attach_beside(
        &self,
        me: Owner,
        cursor: u64,
        liveness: impl FnMut(Owner) -> Liveness,
    ) -> Option<Attached> {
        let index = self.claim(me, cursor, liveness)?;
        self.announce();
        Some(Attached {
            index,
            cursor,
            head: cursor,
        })
    }

    /// Claims an entry for `me`, gated from `provisional` on. Returns its
    /// index, or `None` if every entry is held by a live (or possibly live)
    /// process. The caller must then [`announce`](Self::announce).
    fn claim(
        &self,
        me: Owner,
        provisional: u64,
        mut liveness: impl FnMut(Owner) -> Liveness,
    ) -> Option<usize> {
        // Free entries first: taking back a dead one costs liveness checks.
        for pass in 0..2 {
            for (index, entry) in self.entries.iter().enumerate() {
                let current = entry.owner.load(Ordering::Acquire);
                let from = match Owner::from_flagged(current) {
                    None if current == 0 => Some(0),
                    // Not an owner word at all (corruption): no process
                    // holds it.
                    None => (pass == 1).then_some(current),
                    Some(_) if pass == 0 => None,
                    Some((owner, _)) if owner == me => None,
                    Some((owner, flags)) if liveness(owner).is_dead() => {
                        self.evicted_form(entry, current, flags)
                    }
                    Some(_) => None,
                };
                if let Some(from) = from {
                    if self.take(entry, from, me, provisional) {
                        return Some(index);
                    }
                }
            }
        }
        None
    }

    /// The owner word of a dead process's entry, `current`, in a form that
    /// may be taken: an attached subscriber is evicted first (and counted,
    /// once: only the winner of the compare-and-swap counts); a claiming or
    /// evicted one already is. `None` if the word changed meanwhile.
    fn evicted_form(&self, entry: &SubscriberEntry, current: u64, flags: u64) -> Option<u64> {
        if flags != 0 {
            return Some(current);
        }
        let evicted = current | FLAG_EVICTED;
        match entry
            .owner
            .compare_exchange(current, evicted, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => {
                self.ctrl.evictions.fetch_add(1, Ordering::Relaxed);
                Some(evicted)
            }
            // Someone else evicted it (and counted it): take it from there.
            Err(seen) if seen == evicted => Some(evicted),
            Err(_) => None,
        }
    }

    /// Takes `entry` for `me` if its owner word is still `from`, in two
    /// steps, so that a racing claimer of the same entry can never
    /// overwrite our cursor, and the publisher never gates on a stale one: a
    /// claiming word is no plain token, so `min_cursor_before` skips it.
    fn take(&self, entry: &SubscriberEntry, from: u64, me: Owner, provisional: u64) -> bool {
        if entry
            .owner
            .compare_exchange(
                from,
                me.flagged(FLAG_CLAIMING),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return false;
        }
        entry.cursor.store(provisional, Ordering::Relaxed);
        // SYNC POINT: Release publishes the cursor with the owner, to the
        // Acquire in `SubscriberEntry::owner` (`min_cursor_before`).
        entry.owner.store(me.token(), Ordering::Release);
        true
    }

    /// Tells the publisher to rescan, then fences: after this, read `head`
    /// and pick a start position (see the module docs).
    fn announce(&self) {
        self.ctrl.epoch.fetch_add(1, Ordering::Release);
        // SYNC POINT (Dekker, pairs with the publisher's fence after each
        // message in `WakeWords::notify`): see "Attaching without a race".
        crate::sync::fence(Ordering::SeqCst);
    }

    /// Moves entry `index`'s cursor: everything below `cursor` is read.
    /// The caller then wakes a publisher that sleeps for space
    /// (`ctrl().space().notify()`).
    #[inline]
    pub fn advance(&self, index: usize, cursor: u64) {
        // SYNC POINT: Release pairs with the Acquire in `min_cursor_before`: our
        // reads of the slots below `cursor` happen before the publisher
        // overwrites them.
        self.entries[index].cursor.store(cursor, Ordering::Release);
    }

    /// Frees entry `index` on orderly exit, if it is still `me`'s (attached,
    /// evicted, or, if corruption put it there, claiming). The caller then
    /// wakes a publisher that sleeps for space.
    pub fn detach(&self, index: usize, me: Owner) {
        let entry = &self.entries[index];
        for word in [
            me.token(),
            me.flagged(FLAG_EVICTED),
            me.flagged(FLAG_CLAIMING),
        ] {
            if entry
                .owner
                .compare_exchange(word, 0, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }

    /// One read of message `cursor` by the lossless subscriber `me`
    /// holding entry `index`, as the endpoint makes it: check the entry is
    /// still ours, copy the message; if it was overwritten, reload its
    /// stamp with Acquire (so the eviction that came before the overwrite is
    /// visible) and say `Evicted` if it was.
    #[inline(always)]
    pub fn read(
        &self,
        ring: &impl GatedRing,
        index: usize,
        me: Owner,
        cursor: u64,
        out: &mut [u8],
    ) -> GatedRead {
        if !self.holds(index, me) {
            return GatedRead::Evicted;
        }
        match ring.read(cursor, out) {
            Read::Message { len } => GatedRead::Message { len },
            Read::Empty => GatedRead::Empty,
            Read::Overwritten => {
                ring.sync_overwritten(cursor);
                if self.holds(index, me) {
                    GatedRead::Overwritten
                } else {
                    GatedRead::Evicted
                }
            }
            Read::BadLength { len } => GatedRead::BadLength { len },
        }
    }

    /// Moves `me`'s cursor in entry `index`, if the entry is still ours.
    /// Returns whether it did; the caller then wakes a publisher that sleeps
    /// for space (`ctrl().space().notify()`).
    #[inline]
    pub fn advance_held(&self, index: usize, me: Owner, cursor: u64) -> bool {
        if !self.holds(index, me) {
            return false;
        }
        self.advance(index, cursor);
        true
    }

    /// Whether a lossless subscriber that has read everything below
    /// `cursor` stores its cursor now, batching the stores `mask + 1` at a
    /// time (`mask + 1` a power of two, at most a fraction of the ring):
    /// at the end of each batch, or at once while the publisher sleeps for
    /// room. A subscriber with reads it has not stored stores them before
    /// it waits for a message (the endpoint's `publish_unstored`).
    ///
    /// Why this never strands the publisher: one blocked on us has us more
    /// than `capacity - mask - 1` messages behind, so we store within a
    /// batch while we read, and as soon as we see it asleep; it counts
    /// itself asleep with a read-modify-write, which our next load of the
    /// count sees, and the store after that is followed by the fenced
    /// wakeup check as ever.
    #[inline(always)]
    pub fn should_store(&self, cursor: u64, mask: u64) -> bool {
        cursor & mask == 0 || self.ctrl.space.waiters() != 0
    }

    /// The payload words and length of message `cursor` for reading in
    /// place, if it is complete and whole (see [`AnyRing::lend`]), and only
    /// while `me` holds entry `index` (checked after the message is there:
    /// only a dead process is evicted, so from then on the publisher is
    /// gated on our cursor, which stays below `cursor` until the lender
    /// moves it). `gated_from` is the head the subscriber read as it
    /// attached. `Err` once evicted.
    #[inline]
    pub fn lend<'r>(
        &self,
        ring: &AnyRing<'r>,
        index: usize,
        me: Owner,
        cursor: u64,
        gated_from: u64,
    ) -> Result<Option<(&'r [AtomicU64], usize)>, GatedRead> {
        let lent = ring.lend(cursor, gated_from);
        if !self.holds(index, me) {
            return Err(GatedRead::Evicted);
        }
        Ok(lent)
    }

    /// Whether entry `index` is still held by `me` (not evicted, not taken
    /// by another): the check a subscriber makes before each read.
    #[inline]
    pub fn holds(&self, index: usize, me: Owner) -> bool {
        self.entries[index].owner.load(Ordering::Relaxed) == me.token()
    }

    /// The smallest cursor of the attached subscribers (`None` if there are
    /// none), a cursor ahead of `next` (see [`GateCache::has_space`])
    /// counted as `next - capacity`.
    #[inline]
    pub fn min_cursor_before(&self, next: u64, capacity: u64) -> Option<u64> {
        self.entries
            .iter()
            .filter(|entry| entry.owner().is_some())
            .map(|entry| match entry.cursor() {
                cursor if cursor > next => next.saturating_sub(capacity),
                cursor => cursor,
            })
            .min()
    }

    /// Evicts every attached subscriber whose process is known dead.
    /// Returns how many it evicted (each is counted once, by whoever wins
    /// its compare-and-swap).
    pub fn evict_dead(&self, mut liveness: impl FnMut(Owner) -> Liveness) -> u64 {
        let mut evicted = 0;
        for entry in self.entries {
            let Some(owner) = entry.owner() else { continue };
            if !liveness(owner).is_dead() {
                continue;
            }
            if entry
                .owner
                .compare_exchange(
                    owner.token(),
                    owner.flagged(FLAG_EVICTED),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                self.ctrl.evictions.fetch_add(1, Ordering::Relaxed);
                evicted += 1;
            }
        }
        evicted
    }

    /// The publisher's step before writing message `next`: whether there is
    /// room, after evicting dead subscribers if `liveness` is given (the
    /// caller paces those checks).
    #[inline]
    pub fn make_room(
        &self,
        cache: &mut GateCache,
        next: u64,
        capacity: u64,
        liveness: Option<&mut dyn FnMut(Owner) -> Liveness>,
    ) -> bool {
        if cache.has_space(self, next, capacity) {
            return true;
        }
        let Some(liveness) = liveness else {
            return false;
        };
        if self.evict_dead(liveness) == 0 {
            return false;
        }
        cache.invalidate();
        cache.has_space(self, next, capacity)
    }
}

/// Scans of the subscriber table [`GateCache::has_space`] makes before it
/// gives up on one that no attach changed under it.
const STABLE_SCAN_TRIES: u32 = 4;

/// The publisher's cached view of the gate: messages below `limit` may be
/// written without rescanning the table, as long as no subscriber attached
/// since (the epoch is unchanged). The limit may be stale, and then only too
/// low, because cursors only grow.
#[derive(Debug, Clone, Copy)]
pub struct GateCache {
    limit: u64,
    epoch: u64,
}

impl Default for GateCache {
    fn default() -> Self {
        GateCache {
            limit: 0,
            epoch: u64::MAX,
        }
    }
}

impl GateCache {
    /// Whether message `next` may be written into a ring of `capacity`.
    ///
    /// Call it after the SeqCst fence that follows the previous message
    /// (`WakeWords::notify`): see "Attaching without a race".
    ///
    /// A cursor ahead of `next` (no subscriber has read a message not yet
    /// published: only corruption writes one) counts as `next - capacity`,
    /// the most cautious value: it holds the publisher back rather than
    /// releasing it, until that subscriber stores its cursor again (it does
    /// at its next read, or its paced repair) or is evicted. So the cached
    /// limit is never more than a ring ahead, and gating never turns off.
    ///
    /// A scan counts only if the epoch is the same after it as before: a
    /// subscriber attached beside another (`Gate::attach_beside`) may be
    /// missed by a scan that sees the other one's cursor move past the
    /// clone's, but then the epoch read after the scan has changed (see
    /// "Attaching beside a subscriber"). After a few scans that each saw an
    /// attach, it says "no room" (the caller retries).
    #[inline(always)]
    pub fn has_space(&mut self, gate: &Gate<'_>, next: u64, capacity: u64) -> bool {
        let epoch = gate.ctrl().epoch();
        if next < self.limit && epoch == self.epoch {
            return true;
        }
        self.rescan(gate, next, capacity, epoch)
    }

    /// `has_space` past the cached limit, or after an attach: scans the
    /// table again.
    #[cold]
    #[inline(never)]
    fn rescan(&mut self, gate: &Gate<'_>, next: u64, capacity: u64, mut epoch: u64) -> bool {
        for _ in 0..STABLE_SCAN_TRIES {
            let limit = gate
                .min_cursor_before(next, capacity)
                .map_or(u64::MAX, |min| min.saturating_add(capacity));
            let after = gate.ctrl().epoch();
            if after == epoch {
                self.epoch = epoch;
                self.limit = limit;
                return next < limit;
            }
            epoch = after;
        }
        self.invalidate();
        false
    }

    /// The slowest subscriber's cursor as of the last scan that counted
    /// (`None`: there was none), for a caller that [`has_space`](Self::has_space)
    /// just said yes to. Stale means lower than the true one, since cursors
    /// only grow; and it is above `next - capacity`, so its message's
    /// descriptor or slot is not overwritten yet.
    #[inline]
    pub fn slowest(&self, capacity: u64) -> Option<u64> {
        (self.limit != u64::MAX).then(|| self.limit.saturating_sub(capacity))
    }

    /// Forgets the cached limit (after an eviction, which may raise it).
    pub fn invalidate(&mut self) {
        self.epoch = u64::MAX;
    }
}

/// Hooks for model checks and tests that stage dead subscribers.
#[doc(hidden)]
pub mod testing {
    use super::SubscriberEntry;
    use crate::ring::Owner;
    use crate::sync::Ordering;

    /// Attaches `owner` at `cursor` by hand, as a subscriber that attached
    /// and then died would leave its entry.
    pub fn attached(entry: &SubscriberEntry, owner: Owner, cursor: u64) {
        entry.cursor.store(cursor, Ordering::Relaxed);
        entry.owner.store(owner.token(), Ordering::Release);
    }

    /// Leaves `entry` half-claimed by `owner`, as a subscriber killed in
    /// the middle of claiming it would.
    pub fn claiming(entry: &SubscriberEntry, owner: Owner) {
        entry.owner.store(
            owner.flagged(crate::ring::owner::FLAG_CLAIMING),
            Ordering::Release,
        );
    }
}

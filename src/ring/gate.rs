//! Gating for lossless broadcast: the publisher never overwrites a slot that
//! an attached subscriber has not read (Disruptor-style gating).
//!
//! Each lossless subscriber holds an entry in a subscriber table: its
//! [`Owner`] token and its cursor (the next message it will read). The
//! publisher may write message `seq` only if `seq < min(cursor) + capacity`,
//! that is, only if the message it overwrites, `seq - capacity`, has been
//! read by everyone. It caches that limit and rescans the table only when it
//! reaches it, or when a subscriber attached since its last scan.
//!
//! # Attaching without a race
//!
//! A subscriber claims an entry with a provisional cursor, bumps `epoch`,
//! issues `fence(SeqCst)`, and then reads `head`. The publisher issues
//! `fence(SeqCst)` after every message (in the wakeup check) and reads
//! `epoch` before the next one. By the two fences, either the subscriber's
//! `head` read sees a message, or the publisher's `epoch` read sees the
//! attach: so every message after the `head` the subscriber read is gated on
//! its entry, and it may start anywhere from `head - capacity + 1` on.
//!
//! # Dead subscribers
//!
//! A subscriber whose process died would hold the publisher back forever.
//! When the publisher is blocked it asks whether the holders of the table
//! are alive, and evicts the dead: their entry becomes [`EVICTED`] and the
//! eviction is counted.

use crate::ring::{Liveness, Owner};
use crate::sync::{AtomicU64, Ordering};
use crate::wait::WakeWords;

/// Owner word of an entry whose dead subscriber was evicted.
pub const EVICTED: u64 = 1;
/// Owner word while a subscriber sets its entry up (not yet gating).
const CLAIMING: u64 = 2;

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
    _pad1: [u8; 56],
}

#[cfg(not(shmbus_loom))]
const _: () = {
    assert!(core::mem::size_of::<GateCtrl>() == 128);
    assert!(core::mem::offset_of!(GateCtrl, space) == 64);
    assert!(core::mem::size_of::<SubscriberEntry>() == 64);
};

impl GateCtrl {
    pub fn new() -> Self {
        GateCtrl {
            epoch: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            _pad0: [0; 48],
            space: WakeWords::new(),
            _pad1: [0; 56],
        }
    }

    #[inline]
    pub fn epoch(&self) -> u64 {
        // SYNC POINT: pairs with the Release half of `fetch_add` in
        // `attach`: a publisher that sees the new epoch sees the entry.
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

/// One lossless subscriber: owner and cursor, on a cache line of its own.
#[repr(C)]
pub struct SubscriberEntry {
    /// 0 free, [`EVICTED`], or the subscriber's owner token.
    owner: AtomicU64,
    /// Next message this subscriber will read; everything below is read.
    cursor: AtomicU64,
    _pad: [u8; 48],
}

impl SubscriberEntry {
    pub fn new() -> Self {
        SubscriberEntry {
            owner: AtomicU64::new(0),
            cursor: AtomicU64::new(0),
            _pad: [0; 48],
        }
    }

    /// Who holds the entry (`None` when free or evicted).
    pub fn owner(&self) -> Option<Owner> {
        Owner::from_token(self.owner.load(Ordering::Acquire))
    }

    pub fn is_evicted(&self) -> bool {
        self.owner.load(Ordering::Acquire) == EVICTED
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

/// A view of one subscriber table.
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

    /// Claims an entry for `me`, gated from `provisional` on. Returns its
    /// index, or `None` if every entry is held. The caller must then call
    /// [`Gate::announce`] and [`Gate::start`].
    pub fn claim(&self, me: Owner, provisional: u64) -> Option<usize> {
        for (index, entry) in self.entries.iter().enumerate() {
            let current = entry.owner.load(Ordering::Acquire);
            if current > EVICTED {
                continue;
            }
            // Two steps, so that a racing claimer of the same entry can never
            // overwrite our cursor, and the publisher never gates on a stale
            // one: CLAIMING is not a token, so `min_cursor` skips it.
            if entry
                .owner
                .compare_exchange(current, CLAIMING, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                entry.cursor.store(provisional, Ordering::Relaxed);
                // SYNC POINT: Release publishes the cursor with the owner, to
                // the Acquire in `SubscriberEntry::owner` (`min_cursor`).
                entry.owner.store(me.token(), Ordering::Release);
                return Some(index);
            }
        }
        None
    }

    /// Tells the publisher to rescan, then fences: after this, read `head`
    /// and pick a start position (see the module docs).
    pub fn announce(&self) {
        self.ctrl.epoch.fetch_add(1, Ordering::Release);
        // SYNC POINT (Dekker, pairs with the publisher's fence after each
        // message in `WakeWords::notify`): see "Attaching without a race".
        crate::sync::fence(Ordering::SeqCst);
    }

    /// Moves entry `index`'s cursor: everything below `cursor` is read.
    /// Wakes the publisher if it sleeps for space.
    #[inline]
    pub fn advance(&self, index: usize, cursor: u64) {
        // SYNC POINT: Release pairs with the Acquire in `min_cursor`: our
        // reads of the slots below `cursor` happen before the publisher
        // overwrites them.
        self.entries[index].cursor.store(cursor, Ordering::Release);
        self.ctrl.space.notify();
    }

    /// Frees entry `index` on orderly exit.
    pub fn detach(&self, index: usize, me: Owner) {
        let _ = self.entries[index].owner.compare_exchange(
            me.token(),
            0,
            Ordering::Release,
            Ordering::Relaxed,
        );
        self.ctrl.space.notify();
    }

    /// Whether entry `index` is still held by `me` (not evicted).
    pub fn holds(&self, index: usize, me: Owner) -> bool {
        self.entries[index].owner.load(Ordering::Acquire) == me.token()
    }

    /// The smallest cursor of the attached subscribers, or `None` if there
    /// are none.
    #[inline]
    pub fn min_cursor(&self) -> Option<u64> {
        self.entries
            .iter()
            .filter(|entry| entry.owner().is_some())
            .map(SubscriberEntry::cursor)
            .min()
    }

    /// Evicts every attached subscriber whose process is dead. Returns how
    /// many it evicted.
    pub fn evict_dead(&self, mut liveness: impl FnMut(Owner) -> Liveness) -> u64 {
        let mut evicted = 0;
        for entry in self.entries {
            let Some(owner) = entry.owner() else { continue };
            if !liveness(owner).is_dead() {
                continue;
            }
            if entry
                .owner
                .compare_exchange(owner.token(), EVICTED, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                self.ctrl.evictions.fetch_add(1, Ordering::Relaxed);
                evicted += 1;
            }
        }
        evicted
    }
}

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
    #[inline]
    pub fn has_space(&mut self, gate: &Gate<'_>, next: u64, capacity: u64) -> bool {
        let epoch = gate.ctrl().epoch();
        if next < self.limit && epoch == self.epoch {
            return true;
        }
        self.epoch = epoch;
        self.limit = gate
            .min_cursor()
            .map_or(u64::MAX, |min| min.saturating_add(capacity));
        next < self.limit
    }
}

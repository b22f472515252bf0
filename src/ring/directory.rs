//! Create-or-join in a fixed table of entries, lock-free, by open addressing.
//!
//! Each entry has one state word:
//!
//! | state        | meaning                                                |
//! |--------------|--------------------------------------------------------|
//! | `0`          | empty                                                  |
//! | `1`          | ready: name and config are written and never change    |
//! | owner token  | being initialised by that process (see [`Owner`])      |
//! | anything else| corrupt: reported, never treated as empty              |
//!
//! A creator claims an empty entry by compare-and-swap `0 → token`, writes
//! the entry, then stores `1` with Release. Everyone else that meets a
//! claimed entry waits for it to become ready, unless the claimer is dead,
//! in which case it takes the claim over with compare-and-swap `token → its
//! own token` and initialises the entry itself. One word for claim and
//! readiness means no taker can ever take over an entry that became ready.
//!
//! Two processes creating the same name race for the first entry on the
//! name's probe path that is not ready with another name: one claims it, the
//! other waits, then finds the name there. Two different names never share
//! an entry, because an entry is only joined after its name is compared.

use crate::ring::{Liveness, Owner};
use crate::sync::{AtomicU64, Ordering};

const EMPTY: u64 = 0;
const READY: u64 = 1;

/// The state word of one directory entry. All-zero bytes: empty.
#[repr(transparent)]
#[derive(Default)]
pub struct EntryState(AtomicU64);

/// What the state word says right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryStatus {
    Empty,
    Ready,
    Claimed(Owner),
    /// A value no protocol step writes: the segment is corrupt.
    Invalid(u64),
}

impl EntryState {
    pub fn new() -> Self {
        EntryState(AtomicU64::new(EMPTY))
    }

    pub fn status(&self) -> EntryStatus {
        // SYNC POINT: pairs with the Release store of READY in
        // `find_or_create`: seeing Ready means seeing the entry's contents.
        match self.0.load(Ordering::Acquire) {
            EMPTY => EntryStatus::Empty,
            READY => EntryStatus::Ready,
            word => {
                Owner::from_token(word).map_or(EntryStatus::Invalid(word), EntryStatus::Claimed)
            }
        }
    }

    fn try_claim(&self, from: u64, me: Owner) -> bool {
        // SYNC POINT: Acquire pairs with the Release store of a failed
        // creator that gave its claim back; only one claimer wins.
        self.0
            .compare_exchange(from, me.token(), Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }
}

/// Where a name was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// An existing ready entry holds the name.
    Existing(usize),
    /// We created the entry.
    Created(usize),
}

/// Why `find_or_create` failed.
#[derive(Debug, PartialEq, Eq)]
pub enum DirError<E> {
    /// Every entry is ready with another name.
    Full,
    /// Entry `index`'s state word holds `word`, which is neither empty,
    /// ready nor an owner token: the directory is corrupt.
    Corrupt { index: usize, word: u64 },
    /// A callback failed (bad entry, no memory, gave up waiting, ...).
    Callback(E),
}

/// What `find_or_create` needs from its caller.
pub trait Entries {
    type Error;
    /// Number of entries.
    fn entries(&self) -> usize;
    /// The state word of entry `index` (`index < entries()`).
    fn state(&self, index: usize) -> &EntryState;
    /// Whether ready entry `index` holds our name.
    fn matches(&mut self, index: usize) -> Result<bool, Self::Error>;
    /// Writes our name and config into entry `index`, which we have claimed.
    fn init(&mut self, index: usize) -> Result<(), Self::Error>;
    /// Whether entry `index`, which we have claimed from empty, holds no
    /// config at all, as an entry that was never ready does. (One that holds
    /// a config had its state word overwritten: creating over it would
    /// split a live topic in two.)
    fn is_blank(&mut self, index: usize) -> bool;
    /// Whether entry `index`, whose dead claimer we took over, already
    /// holds a complete, valid config (its creator died after writing it,
    /// before marking it ready, or its state word was overwritten): then it
    /// is marked ready as it is, rather than created again over a ring
    /// others may already use.
    fn is_complete(&mut self, index: usize) -> bool;
    /// Whether the process that claimed an entry still lives. Only
    /// [`Liveness::Dead`] lets another process take the claim over.
    fn liveness(&mut self, owner: Owner) -> Liveness;
    /// Called while a live process initialises an entry we need to see, or
    /// while the state word keeps changing under us; backs off, or fails to
    /// give up.
    fn wait_for_claimer(&mut self, owner: Option<Owner>) -> Result<(), Self::Error>;
}

/// Finds the entry for our name, probing from `start`, or creates it.
///
/// Every wait is bounded by the caller's `wait_for_claimer`, and a state
/// word that no protocol step writes is [`DirError::Corrupt`], so no state
/// of the table makes this loop forever.
pub fn find_or_create<D: Entries>(
    dir: &mut D,
    start: usize,
    me: Owner,
) -> Result<Found, DirError<D::Error>> {
    let len = dir.entries();
    for probe in 0..len {
        let index = (start.wrapping_add(probe)) % len;
        // Compare-and-swaps lost in a row on this entry: each loss means
        // another process moved the word on, so this is bounded in a sane
        // table; past a few, back off through the caller (which gives up
        // at its deadline).
        let mut lost = 0u32;
        loop {
            let state = dir.state(index);
            match state.status() {
                EntryStatus::Ready => {
                    if dir.matches(index).map_err(DirError::Callback)? {
                        return Ok(Found::Existing(index));
                    }
                    break;
                }
                EntryStatus::Empty => {
                    if state.try_claim(EMPTY, me) {
                        if !dir.is_blank(index) {
                            give_back(dir, index, me);
                            return Err(DirError::Corrupt { index, word: EMPTY });
                        }
                        return create(dir, index, me);
                    }
                    lost += 1;
                }
                EntryStatus::Claimed(owner) => {
                    if owner != me && dir.liveness(owner).is_dead() {
                        if dir.state(index).try_claim(owner.token(), me) {
                            if dir.is_complete(index) {
                                // SYNC POINT: pairs with the Acquire load in
                                // `status`, as in `create`.
                                dir.state(index).0.store(READY, Ordering::Release);
                                continue;
                            }
                            return create(dir, index, me);
                        }
                        lost += 1;
                    } else {
                        dir.wait_for_claimer(Some(owner))
                            .map_err(DirError::Callback)?;
                    }
                }
                EntryStatus::Invalid(word) => return Err(DirError::Corrupt { index, word }),
            }
            if lost > 16 {
                dir.wait_for_claimer(None).map_err(DirError::Callback)?;
            }
        }
    }
    Err(DirError::Full)
}

fn create<D: Entries>(dir: &mut D, index: usize, me: Owner) -> Result<Found, DirError<D::Error>> {
    match dir.init(index) {
        Ok(()) => {
            // SYNC POINT: pairs with the Acquire load in `status`.
            dir.state(index).0.store(READY, Ordering::Release);
            Ok(Found::Created(index))
        }
        Err(err) => {
            // Give the claim back so another creator can try.
            give_back(dir, index, me);
            Err(DirError::Callback(err))
        }
    }
}

fn give_back<D: Entries>(dir: &mut D, index: usize, me: Owner) {
    let _ = dir.state(index).0.compare_exchange(
        me.token(),
        EMPTY,
        Ordering::Release,
        Ordering::Relaxed,
    );
}

/// Hooks for model checks and tests that stage a crashed creator.
#[doc(hidden)]
pub mod testing {
    use super::EntryState;
    use crate::ring::Owner;
    use crate::sync::Ordering;

    /// Marks `state` as claimed by `owner`, as a creator that died right
    /// after claiming would leave it.
    pub fn claim(state: &EntryState, owner: Owner) {
        state.0.store(owner.token(), Ordering::Release);
    }
}

/// FNV-1a, 64 bits: where a name's probe path starts. Not for security; a
/// hostile process with write access to the segment can do worse anyway.
pub fn name_hash(name: &[u8]) -> u64 {
    name.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

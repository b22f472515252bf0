//! An ownership lease in one atomic word: which process holds a role (the
//! publisher of a broadcast topic).
//!
//! The word holds the holder's [`Owner`] token, or 0 when free. A taker
//! replaces a holder only when that holder is known dead, by one
//! compare-and-swap from the exact token it judged, so two takers never
//! both win, and a holder that came back to life (it cannot: a dead token is
//! never reused) would find the word changed. The holder re-checks the word
//! (see [`Lease::held_by`]) before each use of the role, so a process that
//! lost the lease learns it before its next write.

use crate::ring::{Liveness, Owner};
use crate::sync::{AtomicU64, Ordering};

/// Why a lease could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseError {
    /// A process that is alive, or that may be (its liveness is unknown),
    /// holds it.
    Held(Owner),
}

/// How a lease was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// It was free.
    Fresh,
    /// It was held by a process known to be dead; we took it over.
    TookOver(Owner),
    /// The word held no valid token (corruption); we took it.
    Repaired(u64),
}

/// One lease word. Lives in shared memory; all-zero bytes are a free lease.
#[repr(transparent)]
#[derive(Default)]
pub struct Lease {
    /// The holder's token, or 0 when free.
    word: AtomicU64,
}

impl Lease {
    pub fn new() -> Self {
        Lease {
            word: AtomicU64::new(0),
        }
    }

    /// The current holder, if any (it may have died: ask its liveness).
    #[inline]
    pub fn holder(&self) -> Option<Owner> {
        // SYNC POINT: pairs with the Release half of the AcqRel CAS in
        // `acquire`, so state the holder wrote before taking the lease is seen.
        Owner::from_token(self.word.load(Ordering::Acquire))
    }

    /// Whether `me` holds the lease right now: one relaxed load, for the
    /// holder's check before each use.
    #[inline]
    pub fn held_by(&self, me: Owner) -> bool {
        self.word.load(Ordering::Relaxed) == me.token()
    }

    /// Takes the lease for `me`: free, or held by a process `liveness` says
    /// is dead. A holder that is alive or unknown, `me` included, makes it
    /// fail.
    pub fn acquire(
        &self,
        me: Owner,
        mut liveness: impl FnMut(Owner) -> Liveness,
    ) -> Result<Acquired, LeaseError> {
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            let how = match (current, Owner::from_token(current)) {
                (0, _) => Acquired::Fresh,
                (_, Some(holder)) if holder == me || !liveness(holder).is_dead() => {
                    return Err(LeaseError::Held(holder))
                }
                (_, Some(dead)) => Acquired::TookOver(dead),
                // No process can hold a word that is not a token, and a
                // holder whose word was overwritten stops at its next check.
                (garbage, None) => Acquired::Repaired(garbage),
            };
            // SYNC POINT: AcqRel. Acquire pairs with the holder's Release in
            // `release` (its last writes are ours to see); Release pairs with
            // the Acquire in `holder` and in the next taker's CAS.
            match self.word.compare_exchange(
                current,
                me.token(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(how),
                Err(seen) => current = seen,
            }
        }
    }

    /// Gives the lease up if `me` still holds it. Returns whether it did.
    pub fn release(&self, me: Owner) -> bool {
        // SYNC POINT: Release pairs with the Acquire of the next taker's CAS.
        self.word
            .compare_exchange(me.token(), 0, Ordering::Release, Ordering::Relaxed)
            .is_ok()
    }
}

/// Hooks for model checks and tests that stage a lost lease.
#[doc(hidden)]
pub mod testing {
    use super::Lease;
    use crate::sync::Ordering;

    /// Overwrites the lease word, as a corrupting writer would.
    pub fn overwrite(lease: &Lease, word: u64) {
        lease.word.store(word, Ordering::Release);
    }
}

#[cfg(all(test, not(shmbus_loom)))]
mod tests {
    use super::*;

    #[test]
    fn live_holder_blocks_and_dead_holder_is_taken_over() {
        let lease = Lease::new();
        let a = Owner::new(10, 1);
        let b = Owner::new(11, 2);
        let alive = |_| Liveness::Alive;
        assert_eq!(lease.acquire(a, alive), Ok(Acquired::Fresh));
        assert_eq!(lease.acquire(b, alive), Err(LeaseError::Held(a)));
        assert_eq!(
            lease.acquire(b, |_| Liveness::Unknown),
            Err(LeaseError::Held(a)),
            "unknown is never dead"
        );
        assert_eq!(
            lease.acquire(a, |_| Liveness::Dead),
            Err(LeaseError::Held(a))
        );
        assert_eq!(
            lease.acquire(b, |_| Liveness::Dead),
            Ok(Acquired::TookOver(a))
        );
        assert!(!lease.held_by(a), "a lost the lease and can tell");
        assert!(!lease.release(a), "a lost the lease and must not free it");
        assert!(lease.release(b));
        assert_eq!(lease.holder(), None);
        testing::overwrite(&lease, 5);
        assert_eq!(lease.acquire(a, alive), Ok(Acquired::Repaired(5)));
    }
}

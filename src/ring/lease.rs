//! An ownership lease in one atomic word: which process holds a role (the
//! publisher of a broadcast topic, the creator of a half-built topic entry).
//!
//! The word holds an [`Owner`] token, pid and start time packed together, or
//! 0 when free. Packing both into one word matters: a taker that read the pid
//! of a dead owner can never pair it with the start time of the live process
//! that took the lease a moment before, because compare-and-swap checks both
//! at once.

use crate::sync::{AtomicU64, Ordering};

/// A process identity: pid plus the low 32 bits of its start time in clock
/// ticks since boot. A pid reused by a later process has another start time
/// (the low 32 bits repeat only after 2^32 ticks, 497 days at 100 Hz).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner(u64);

impl Owner {
    pub fn new(pid: u32, start_ticks: u64) -> Self {
        Owner((u64::from(pid) << 32) | (start_ticks & 0xffff_ffff))
    }

    /// Decodes a token read from shared memory; `None` for the free value.
    pub fn from_token(token: u64) -> Option<Self> {
        (token >> 32 != 0).then_some(Owner(token))
    }

    pub fn token(self) -> u64 {
        self.0
    }

    pub fn pid(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// Low 32 bits of the start time, as stored.
    pub fn start_ticks(self) -> u64 {
        self.0 & 0xffff_ffff
    }
}

impl core::fmt::Debug for Owner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "pid {} (start {})", self.pid(), self.start_ticks())
    }
}

/// Why a lease could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseError {
    /// A live process holds it.
    Held(Owner),
}

/// How a lease was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// It was free.
    Fresh,
    /// It was held by a process that is dead; we took it over.
    TookOver(Owner),
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

    /// The current holder, if any (it may have died: ask `is_alive`).
    #[inline]
    pub fn holder(&self) -> Option<Owner> {
        // SYNC POINT: pairs with the Release half of the AcqRel CAS in
        // `acquire`, so state the holder wrote before taking the lease is seen.
        Owner::from_token(self.word.load(Ordering::Acquire))
    }

    /// Takes the lease for `me`: free, or held by a process `is_alive` says is
    /// dead. A live holder, `me` included, makes it fail.
    pub fn acquire(
        &self,
        me: Owner,
        is_alive: impl Fn(Owner) -> bool,
    ) -> Result<Acquired, LeaseError> {
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            let previous = Owner::from_token(current);
            if let Some(holder) = previous {
                if holder == me || is_alive(holder) {
                    return Err(LeaseError::Held(holder));
                }
            }
            // SYNC POINT: AcqRel. Acquire pairs with the holder's Release in
            // `release` (its last writes are ours to see); Release pairs with
            // the Acquire in `holder` and in the next taker's CAS.
            match self.word.compare_exchange(
                current,
                me.token(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Ok(match previous {
                        None => Acquired::Fresh,
                        Some(dead) => Acquired::TookOver(dead),
                    })
                }
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

#[cfg(all(test, not(shmbus_loom)))]
mod tests {
    use super::*;

    #[test]
    fn live_holder_blocks_and_dead_holder_is_taken_over() {
        let lease = Lease::new();
        let a = Owner::new(10, 1);
        let b = Owner::new(11, 2);
        assert_eq!(lease.acquire(a, |_| true), Ok(Acquired::Fresh));
        assert_eq!(lease.acquire(b, |_| true), Err(LeaseError::Held(a)));
        assert_eq!(lease.acquire(a, |_| false), Err(LeaseError::Held(a)));
        assert_eq!(lease.acquire(b, |_| false), Ok(Acquired::TookOver(a)));
        assert!(!lease.release(a), "a lost the lease and must not free it");
        assert!(lease.release(b));
        assert_eq!(lease.holder(), None);
    }
}

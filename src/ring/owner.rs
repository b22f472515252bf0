//! Who owns a piece of shared state, and whether that owner still lives.
//!
//! Every process that owns shared state in a bus (a publisher lease, a
//! lossless subscriber entry, a work-queue claim, a half-created topic)
//! first registers in the bus's *process table* and gets an entry there.
//! Owner words in the segment hold an [`Owner`] token that names that entry:
//! its index and the generation it had when the process registered. The OS
//! layer (`segment::procs`) answers whether the holder of a token is alive,
//! from a lock the kernel releases when the process dies; this module only
//! defines the token and the three answers, so the algorithms here stay free
//! of system calls.

/// Marks a word as an owner token: values without it are free, ready, or
/// other small states of the tables that hold tokens.
const TAG: u64 = 1 << 63;
/// Bits 62 and 61 are left to the tables that keep a token beside a flag
/// (a subscriber entry being claimed, or evicted).
const FLAGS: u64 = 0b11 << 61;
const GEN_MASK: u64 = (1 << 29) - 1;

/// Flag of an owner word: the token's process is claiming the entry and has
/// not finished setting it up.
pub const FLAG_CLAIMING: u64 = 1 << 62;
/// Flag of an owner word: the token's process was found dead and evicted.
pub const FLAG_EVICTED: u64 = 1 << 61;

/// A registered process: the index of its entry in the bus's process table
/// and the entry's generation when it registered. A later process that
/// reuses the entry gets another generation, so a token never names the
/// wrong process (generations repeat only after 2^29 reuses of one entry).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner(u64);

impl Owner {
    /// The token of process-table entry `index` at generation `gen` (taken
    /// modulo 2^29).
    pub fn new(index: u32, gen: u32) -> Self {
        Owner(TAG | ((u64::from(gen) & GEN_MASK) << 32) | u64::from(index))
    }

    /// A token that names no process-table entry (its index is past any
    /// table): for endpoints that own nothing in the bus (observers), so
    /// they need not register.
    pub fn nobody() -> Self {
        Owner::new(u32::MAX, 0)
    }

    /// Decodes a word read from shared memory: `None` unless it is a token
    /// with no flags.
    #[inline]
    pub fn from_token(word: u64) -> Option<Self> {
        (word & (TAG | FLAGS) == TAG).then_some(Owner(word))
    }

    /// Decodes an owner word that may carry flags: the token and the flags.
    #[inline]
    pub fn from_flagged(word: u64) -> Option<(Self, u64)> {
        (word & TAG != 0).then_some((Owner(word & !FLAGS), word & FLAGS))
    }

    #[inline]
    pub fn token(self) -> u64 {
        self.0
    }

    /// The token with `flags` ([`FLAG_CLAIMING`], [`FLAG_EVICTED`]) set.
    #[inline]
    pub fn flagged(self, flags: u64) -> u64 {
        self.0 | (flags & FLAGS)
    }

    /// Index of the process-table entry.
    pub fn index(self) -> u32 {
        self.0 as u32
    }

    /// Generation of the entry, modulo 2^29.
    pub fn gen(self) -> u32 {
        ((self.0 >> 32) & GEN_MASK) as u32
    }
}

impl core::fmt::Debug for Owner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "process #{} (generation {})", self.index(), self.gen())
    }
}

/// What is known of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// It holds its registration: it runs.
    Alive,
    /// It is gone: its registration lock was released by the kernel, or its
    /// entry was reused, or the token names no entry at all.
    Dead,
    /// The check itself failed. Treated as alive everywhere: nothing is
    /// ever taken over, evicted or recovered on a guess.
    Unknown,
}

impl Liveness {
    /// Whether acting on the process's state as a survivor is allowed.
    #[inline]
    pub fn is_dead(self) -> bool {
        self == Liveness::Dead
    }
}

#[cfg(all(test, not(shmbus_loom)))]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_flags_are_kept_apart() {
        let owner = Owner::new(4095, (1 << 29) + 7);
        assert_eq!((owner.index(), owner.gen()), (4095, 7));
        assert_eq!(Owner::from_token(owner.token()), Some(owner));
        for flags in [FLAG_CLAIMING, FLAG_EVICTED] {
            let word = owner.flagged(flags);
            assert_eq!(
                Owner::from_token(word),
                None,
                "a flagged word is no plain token"
            );
            assert_eq!(Owner::from_flagged(word), Some((owner, flags)));
        }
        for small in [0, 1, 2, 7, u64::from(u32::MAX)] {
            assert_eq!(Owner::from_token(small), None);
            assert_eq!(Owner::from_flagged(small), None);
        }
    }
}

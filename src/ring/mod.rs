//! The lock-free algorithms of shmbus, over plain memory.
//!
//! Nothing here knows about files, mappings, processes or system calls: each
//! algorithm works on atomics handed to it (from [`crate::sync`]), so the bus
//! runs it on a shared segment and `loom-tests/` runs it on the heap under the
//! model checker. Questions only the OS can answer (is this process alive?)
//! come in as closures.

pub mod broadcast;
pub mod directory;
pub mod lease;

pub use lease::{Lease, LeaseError, Owner};

/// Size of a cache line on the machines we target. Shared structs pad to it
/// themselves; `crossbeam_utils::CachePadded` varies by target and must not
/// appear in the shared layout.
pub const CACHE_LINE: usize = 64;

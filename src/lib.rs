//! # shmbus
//!
//! A lock-free, broker-free message bus in shared memory for processes on
//! one machine.
//!
//! # The pieces
//!
//! - A [`Bus`] is one named shared-memory segment
//!   (`/dev/shm/shmbus.<name>`). Processes that know the name open it
//!   ([`Bus::open`]); the first creates it, the others join. There is no
//!   daemon. Options for a new bus are in [`BusBuilder`].
//! - A *topic* is a named ring buffer in a bus, of one message type: a
//!   plain-data [`Message`] type, or [`Bytes`] of any length up to a slot
//!   size. Its options (capacity, lossless mode, wait strategy, where a
//!   subscriber starts) are in [`TopicBuilder`], from [`Bus::topic`].
//! - A *broadcast* topic has one [`Publisher`] and any number of
//!   [`Subscriber`]s; every subscriber gets every message, in order. In
//!   overwrite mode the publisher never waits and a lapped subscriber is
//!   told how many messages it lost ([`RecvError::Lagged`]); in lossless
//!   mode the publisher waits for the slowest live subscriber. See
//!   [`broadcast`] for the exact semantics.
//! - A *work-queue* topic has any number of [`Producer`]s and
//!   [`Consumer`]s; each message goes to exactly one consumer. See
//!   [`queue`].
//!
//! - Where `/dev/shm` cannot be used (missing, read-only, full, or
//!   processes that share only a directory), a bus runs over named pipes
//!   with the same API: see [`Transport`] and [`BusBuilder::transport`].
//!
//! Every blocking operation has a `try_` form that never waits, a
//! `_timeout` and a `_deadline` form, typed and bytes alike; subscribers
//! and consumers are iterators; errors that can hand the value back do.
//! Processes may die at any instruction: what they held is reclaimed once
//! their death is *known* (see [`broadcast`] and [`queue`]).
//!
//! # Example
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use shmbus::{Bus, RecvError};
//! use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
//!
//! #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, PartialEq)]
//! #[repr(C)]
//! struct Quote { instrument: u64, price: f64 }
//!
//! # let name = format!("doc-lib-{}", std::process::id());
//! let bus = Bus::open(&name)?;
//! let mut tx = bus.publisher::<Quote>("quotes")?;
//! let mut rx = bus.subscriber::<Quote>("quotes")?;   // usually in another process
//! tx.send(&Quote { instrument: 7, price: 101.25 })?;
//! match rx.recv() {
//!     Ok(q) => assert_eq!(q.price, 101.25),
//!     Err(RecvError::Lagged(n)) => eprintln!("lost {n} messages"),
//!     Err(e) => return Err(e.into()),
//! }
//!
//! // A work queue: each job to one worker.
//! let mut jobs = bus.producer::<u64>("jobs")?;
//! let mut worker = bus.consumer::<u64>("jobs")?;    // usually in each worker process
//! jobs.push(42)?;
//! assert_eq!(worker.pop()?, 42);
//! # drop((tx, rx, jobs, worker, bus));
//! Bus::remove(&name)?;
//! # Ok(()) }
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, missing_debug_implementations)]
#![warn(clippy::undocumented_unsafe_blocks)]

// The OS-free core: what loom model-checks. Internals, not API: public only
// with the `internals` feature (for the tests and loom models of this
// repository), and under loom.
macro_rules! internal_mod {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[cfg(any(feature = "internals", shmbus_loom))]
        #[doc(hidden)]
        #[allow(missing_debug_implementations)]
        pub mod $name;
        $(#[$doc])*
        #[cfg(not(any(feature = "internals", shmbus_loom)))]
        #[allow(dead_code, unused_imports)]
        mod $name;
    };
}

internal_mod!(ring);
internal_mod!(sync);
internal_mod!(wait);

// The OS layer and the user API. Not built under loom, whose atomics have
// another in-memory form than the segment's.
#[cfg(all(feature = "tokio", not(shmbus_loom)))]
pub mod asyncio;
#[cfg(not(shmbus_loom))]
pub mod broadcast;
#[cfg(not(shmbus_loom))]
mod bus;
#[cfg(not(shmbus_loom))]
mod clock;
#[cfg(not(shmbus_loom))]
mod doorbell;
#[cfg(not(shmbus_loom))]
mod error;
#[cfg(not(shmbus_loom))]
mod handle;
#[cfg(not(shmbus_loom))]
mod message;
#[cfg(not(shmbus_loom))]
mod process;
#[cfg(not(shmbus_loom))]
pub mod queue;
#[cfg(not(shmbus_loom))]
internal_mod!(segment);
#[cfg(not(shmbus_loom))]
pub mod select;
#[cfg(not(shmbus_loom))]
mod topic;
#[cfg(not(shmbus_loom))]
mod transport;

#[cfg(not(shmbus_loom))]
pub use broadcast::{
    Borrowed, BorrowedBytes, LagPolicy, Loan, LoanBytes, MessageInfo, Publisher, StartAt,
    Subscriber, SubscriberStats,
};
#[cfg(not(shmbus_loom))]
pub use bus::{
    Bus, BusBuilder, EndpointInfo, ProcessState, TopicInfo, TopicKind, DEFAULT_BUS_SIZE,
    DEFAULT_PROCESSES, DEFAULT_TOPICS,
};
#[cfg(not(shmbus_loom))]
pub use clock::Clock;
#[cfg(not(shmbus_loom))]
pub use error::{
    Error, LoanRangeError, PopError, PopTimeoutError, PushError, PushTimeoutError, RecvError,
    RecvRefError, RecvTimeoutError, SendError, SendTimeoutError, TryPopError, TryPushError,
    TryRecvError, TrySendError,
};
#[cfg(not(shmbus_loom))]
pub use message::{Bytes, Message};
#[cfg(not(shmbus_loom))]
pub use queue::{Consumer, PoppedBytes, PoppedRef, Producer, QueueLoan, QueueStats};
/// The limits of a topic: the most slots in its ring
/// ([`TopicBuilder::capacity`], a power of two) and the largest slot
/// ([`TopicBuilder::slot_size`]).
#[cfg(not(shmbus_loom))]
pub use segment::layout::{MAX_CAPACITY, MAX_SLOT_SIZE};
#[cfg(not(shmbus_loom))]
pub use select::{Select, SelectError, Selectable};
#[cfg(not(shmbus_loom))]
pub use topic::{TopicBuilder, DEFAULT_BYTES_SLOT_SIZE, DEFAULT_CAPACITY, DEFAULT_MAX_WORKERS};
#[cfg(not(shmbus_loom))]
pub use transport::{default_root as default_pipe_dir, Transport};
pub use wait::WaitStrategy;

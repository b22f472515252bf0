//! Error types: one for opening buses and topics, one per operation on a
//! topic. Every message says what went wrong and what to do about it.

use std::time::Duration;

/// Opening a bus, creating or joining a topic, removing a bus.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid {what} name {name:?}: {why}; use 1 to 64 characters from A-Z a-z 0-9 . _ -")]
    InvalidName {
        what: &'static str,
        name: String,
        why: &'static str,
    },

    #[error("bus {bus:?}: {action} failed: {source}")]
    Io {
        bus: String,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("bus {bus:?} does not exist (no /dev/shm/shmbus.{bus})")]
    NotFound { bus: String },

    #[error(
        "bus {bus:?} is corrupt or not a shmbus segment: {what}; \
         remove it with `Bus::remove({bus:?})` and recreate it"
    )]
    Corrupt { bus: String, what: String },

    #[error(
        "{path} is {kind}, not a shmbus segment: something else uses the name of bus {bus:?}; \
         remove it (it is not a bus, so `Bus::remove` will not) or use another bus name"
    )]
    NotASegment {
        bus: String,
        path: String,
        kind: &'static str,
    },

    #[error(
        "bus {bus:?} has segment layout version {found}, but this shmbus speaks version \
         {expected}: run the same shmbus version in every process, or remove the bus"
    )]
    VersionMismatch {
        bus: String,
        found: u32,
        expected: u32,
    },

    #[error("topic {topic:?} exists as {existing}, but {requested} was asked for")]
    TopicMismatch {
        topic: String,
        existing: String,
        requested: String,
    },

    #[error(
        "bus {bus:?} has no free topic entry (all {capacity} are used): \
         create the bus with a larger `topics(..)`"
    )]
    DirectoryFull { bus: String, capacity: u32 },

    #[error(
        "bus {bus:?} has no room for topic {topic:?}: it needs {needed} bytes and \
         {free} of the arena are free; create the bus with a larger `size(..)`"
    )]
    ArenaFull {
        bus: String,
        topic: String,
        needed: u64,
        free: u64,
    },

    #[error(
        "/dev/shm has no room for {needed} bytes of bus {bus:?} ({source}); \
         free space there or mount it larger (Docker: --shm-size)"
    )]
    NoSpace {
        bus: String,
        needed: u64,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "topic {topic:?} already has a live publisher ({holder}); a broadcast topic has \
         one publisher at a time: stop that one or use another topic"
    )]
    PublisherBusy { topic: String, holder: String },

    #[error(
        "topic {topic:?} already has {max} lossless subscribers attached, its maximum: \
         detach one, or create the topic with a larger `lossless(..)`"
    )]
    TooManySubscribers { topic: String, max: u32 },

    #[error(
        "work-queue topic {topic:?} already has {max} {role}s attached, its maximum: \
         stop one, or create the topic with a larger `max_{role}s(..)`"
    )]
    TooManyWorkers {
        topic: String,
        role: &'static str,
        max: u32,
    },

    #[error(
        "bus {bus:?} has no free process-table entry (all {max} are held by live processes): \
         close buses in processes that do not need them, or create the bus with a larger \
         `processes(..)`"
    )]
    TooManyProcesses { bus: String, max: u32 },

    #[error("invalid options for topic {topic:?}: {why}")]
    InvalidOptions { topic: String, why: String },

    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout { what: String, waited: Duration },
}

/// Sending a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// This publisher no longer holds the topic's lease: another process
    /// took it over (the lease word changed under it), or the publisher was
    /// made before `fork()` in the parent of this process. The message was
    /// not sent, and none will be.
    #[error("lease lost: this publisher no longer holds the topic's publisher lease (it was taken over, or the publisher was made before fork() in another process); drop it and open a new publisher")]
    LeaseLost,
    #[error("message of {len} bytes does not fit the topic's {max}-byte slots; send at most {max} bytes or create the topic with a larger `slot_size`")]
    TooLarge { len: usize, max: usize },
}

/// Sending without waiting, or with a timeout, in lossless mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrySendError {
    /// The slowest live subscriber has not read the message this one would
    /// overwrite. The message was not sent.
    #[error("full: the slowest lossless subscriber has not read the message this one would overwrite; try again later")]
    Full,
    /// This publisher no longer holds the topic's lease: another process
    /// took it over (the lease word changed under it), or the publisher was
    /// made before `fork()` in the parent of this process. The message was
    /// not sent, and none will be.
    #[error("lease lost: this publisher no longer holds the topic's publisher lease (it was taken over, or the publisher was made before fork() in another process); drop it and open a new publisher")]
    LeaseLost,

    #[error("message of {len} bytes does not fit the topic's {max}-byte slots; send at most {max} bytes or create the topic with a larger `slot_size`")]
    TooLarge { len: usize, max: usize },
}

/// Receiving with [`Subscriber::recv`](crate::Subscriber::recv).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// The subscriber was lapped: this many messages were overwritten before
    /// it read them. The next receive returns the oldest message still held.
    #[error("lagged: {0} messages were overwritten before this subscriber read them")]
    Lagged(u64),
    /// The publisher is gone (dropped, or its process died) and every
    /// message it sent has been read. A new publisher may take over later.
    #[error("disconnected: the publisher is gone and all its messages have been read")]
    Disconnected,
    /// The slot of message `seq` is corrupt (its length does not fit the
    /// slot); it was skipped.
    #[error("message {seq} is corrupt in the segment and was skipped")]
    Corrupt { seq: u64 },
    /// This lossless subscriber no longer holds its entry in the topic's
    /// subscriber table: it was evicted (found dead, which a live process
    /// never is unless its entry was overwritten), or it was made before
    /// `fork()` in the parent of this process. It receives nothing more and
    /// never writes its cursor again.
    #[error("evicted: this lossless subscriber no longer holds its subscriber entry (it was evicted, or made before fork() in another process); drop it and subscribe again")]
    Evicted,
}

/// Reading in place with [`Subscriber::recv_ref`](crate::Subscriber::recv_ref).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvRefError {
    /// The topic is in overwrite mode, where the publisher may overwrite a
    /// message while it is lent out.
    #[error("reading in place (recv_ref) needs a lossless topic; use recv on overwrite topics")]
    NotLossless,
    #[error(transparent)]
    Recv(#[from] RecvError),
}

/// Receiving with [`Subscriber::try_recv`](crate::Subscriber::try_recv).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    #[error("no message yet")]
    Empty,
    #[error("lagged: {0} messages were overwritten before this subscriber read them")]
    Lagged(u64),
    #[error("disconnected: the publisher is gone and all its messages have been read")]
    Disconnected,
    #[error("message {seq} is corrupt in the segment and was skipped")]
    Corrupt { seq: u64 },
    /// This lossless subscriber no longer holds its entry in the topic's
    /// subscriber table: it was evicted (found dead, which a live process
    /// never is unless its entry was overwritten), or it was made before
    /// `fork()` in the parent of this process. It receives nothing more and
    /// never writes its cursor again.
    #[error("evicted: this lossless subscriber no longer holds its subscriber entry (it was evicted, or made before fork() in another process); drop it and subscribe again")]
    Evicted,
}

/// Receiving with [`Subscriber::recv_timeout`](crate::Subscriber::recv_timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvTimeoutError {
    #[error("timed out waiting for a message")]
    Timeout,
    #[error("lagged: {0} messages were overwritten before this subscriber read them")]
    Lagged(u64),
    #[error("disconnected: the publisher is gone and all its messages have been read")]
    Disconnected,
    #[error("message {seq} is corrupt in the segment and was skipped")]
    Corrupt { seq: u64 },
    /// This lossless subscriber no longer holds its entry in the topic's
    /// subscriber table: it was evicted (found dead, which a live process
    /// never is unless its entry was overwritten), or it was made before
    /// `fork()` in the parent of this process. It receives nothing more and
    /// never writes its cursor again.
    #[error("evicted: this lossless subscriber no longer holds its subscriber entry (it was evicted, or made before fork() in another process); drop it and subscribe again")]
    Evicted,
}

impl From<RecvError> for TryRecvError {
    fn from(err: RecvError) -> Self {
        match err {
            RecvError::Lagged(n) => TryRecvError::Lagged(n),
            RecvError::Disconnected => TryRecvError::Disconnected,
            RecvError::Corrupt { seq } => TryRecvError::Corrupt { seq },
            RecvError::Evicted => TryRecvError::Evicted,
        }
    }
}

impl From<RecvError> for RecvTimeoutError {
    fn from(err: RecvError) -> Self {
        match err {
            RecvError::Lagged(n) => RecvTimeoutError::Lagged(n),
            RecvError::Disconnected => RecvTimeoutError::Disconnected,
            RecvError::Corrupt { seq } => RecvTimeoutError::Corrupt { seq },
            RecvError::Evicted => RecvTimeoutError::Evicted,
        }
    }
}

/// Pushing to a work queue, waiting while it is full.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError<T> {
    /// This endpoint's entry in the queue's claim table is no longer its
    /// own: it was made before `fork()` in the parent of this process, or
    /// the entry was overwritten. Nothing was done. The value is handed back.
    #[error("detached: this producer no longer holds its claim-table entry (it was made before fork() in another process, or the entry was overwritten); drop it and attach a new producer")]
    Detached(T),
    /// The slot at `pos` holds a sequence no protocol step writes: the
    /// segment is corrupt. The value is handed back.
    #[error("the queue's slot for position {pos} is corrupt in the segment; remove the bus and recreate it")]
    Corrupt { pos: u64, value: T },
    #[error("message of {len} bytes does not fit the queue's {max}-byte slots; push at most {max} bytes or create the queue with a larger `slot_size`")]
    TooLarge { len: usize, max: usize },
}

/// Pushing without waiting (or with a timeout) to a work queue.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TryPushError<T> {
    /// Every slot holds an unconsumed message. The value is handed back.
    #[error("full: every slot holds an unconsumed message; try again later")]
    Full(T),
    /// This endpoint's entry in the queue's claim table is no longer its
    /// own: it was made before `fork()` in the parent of this process, or
    /// the entry was overwritten. Nothing was done. The value is handed back.
    #[error("detached: this producer no longer holds its claim-table entry (it was made before fork() in another process, or the entry was overwritten); drop it and attach a new producer")]
    Detached(T),
    /// The slot at `pos` holds a sequence no protocol step writes: the
    /// segment is corrupt. The value is handed back.
    #[error("the queue's slot for position {pos} is corrupt in the segment; remove the bus and recreate it")]
    Corrupt { pos: u64, value: T },
    #[error("message of {len} bytes does not fit the queue's {max}-byte slots; push at most {max} bytes or create the queue with a larger `slot_size`")]
    TooLarge { len: usize, max: usize },
}

impl<T> std::fmt::Debug for PushError<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PushError::Detached(_) => f.write_str("Detached(..)"),
            PushError::Corrupt { pos, .. } => write!(f, "Corrupt {{ pos: {pos}, .. }}"),
            PushError::TooLarge { len, max } => {
                write!(f, "TooLarge {{ len: {len}, max: {max} }}")
            }
        }
    }
}

impl<T> std::fmt::Debug for TryPushError<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TryPushError::Full(_) => f.write_str("Full(..)"),
            TryPushError::Detached(_) => f.write_str("Detached(..)"),
            TryPushError::Corrupt { pos, .. } => write!(f, "Corrupt {{ pos: {pos}, .. }}"),
            TryPushError::TooLarge { len, max } => {
                write!(f, "TooLarge {{ len: {len}, max: {max} }}")
            }
        }
    }
}

/// Popping from a work queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PopError {
    /// No producer is attached any more (all dropped or dead) and the
    /// queue is empty. A new producer may attach later.
    #[error("disconnected: no producer is left and the queue is empty")]
    Disconnected,
    /// The message at `pos` is corrupt in the segment and was skipped.
    #[error("message at position {pos} is corrupt in the segment and was skipped")]
    Corrupt { pos: u64 },
    /// This consumer's claim-table entry is no longer its own (made before
    /// `fork()` in the parent of this process, or overwritten).
    #[error("detached: this consumer no longer holds its claim-table entry (it was made before fork() in another process, or the entry was overwritten); drop it and attach a new consumer")]
    Detached,
}

/// Popping from a work queue without waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TryPopError {
    #[error("empty: no message to pop")]
    Empty,
    #[error("disconnected: no producer is left and the queue is empty")]
    Disconnected,
    #[error("message at position {pos} is corrupt in the segment and was skipped")]
    Corrupt { pos: u64 },
    /// This consumer's claim-table entry is no longer its own (made before
    /// `fork()` in the parent of this process, or overwritten).
    #[error("detached: this consumer no longer holds its claim-table entry (it was made before fork() in another process, or the entry was overwritten); drop it and attach a new consumer")]
    Detached,
}

/// Popping from a work queue with a timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PopTimeoutError {
    #[error("timed out waiting for a message")]
    Timeout,
    #[error("disconnected: no producer is left and the queue is empty")]
    Disconnected,
    #[error("message at position {pos} is corrupt in the segment and was skipped")]
    Corrupt { pos: u64 },
    /// This consumer's claim-table entry is no longer its own (made before
    /// `fork()` in the parent of this process, or overwritten).
    #[error("detached: this consumer no longer holds its claim-table entry (it was made before fork() in another process, or the entry was overwritten); drop it and attach a new consumer")]
    Detached,
}

impl From<PopError> for TryPopError {
    fn from(err: PopError) -> Self {
        match err {
            PopError::Disconnected => TryPopError::Disconnected,
            PopError::Corrupt { pos } => TryPopError::Corrupt { pos },
            PopError::Detached => TryPopError::Detached,
        }
    }
}

impl From<PopError> for PopTimeoutError {
    fn from(err: PopError) -> Self {
        match err {
            PopError::Disconnected => PopTimeoutError::Disconnected,
            PopError::Corrupt { pos } => PopTimeoutError::Corrupt { pos },
            PopError::Detached => PopTimeoutError::Detached,
        }
    }
}

impl RecvTimeoutError {
    /// The error of a wait that had no deadline, so never timed out.
    pub(crate) fn without_deadline(self) -> RecvError {
        match self {
            RecvTimeoutError::Timeout => unreachable!("a wait without a deadline never times out"),
            RecvTimeoutError::Lagged(n) => RecvError::Lagged(n),
            RecvTimeoutError::Disconnected => RecvError::Disconnected,
            RecvTimeoutError::Corrupt { seq } => RecvError::Corrupt { seq },
            RecvTimeoutError::Evicted => RecvError::Evicted,
        }
    }
}

impl PopTimeoutError {
    /// The error of a wait that had no deadline, so never timed out.
    pub(crate) fn without_deadline(self) -> PopError {
        match self {
            PopTimeoutError::Timeout => unreachable!("a wait without a deadline never times out"),
            PopTimeoutError::Disconnected => PopError::Disconnected,
            PopTimeoutError::Corrupt { pos } => PopError::Corrupt { pos },
            PopTimeoutError::Detached => PopError::Detached,
        }
    }
}

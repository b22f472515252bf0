//! Error types: one for opening buses and topics, one per operation on a
//! topic. Every message says what went wrong and what to do about it.

use std::time::Duration;

/// Opening a bus, creating or joining a topic, removing a bus.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A bus or topic name that is empty, too long, or has a character
    /// outside `A-Z a-z 0-9 . _ -`.
    #[error("invalid {what} name {name:?}: {why}; use 1 to 64 characters from A-Z a-z 0-9 . _ -")]
    InvalidName {
        /// `"bus"` or `"topic"`.
        what: &'static str,
        /// The name as given.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },

    /// A system call on the bus's segment, directory or queues failed.
    #[non_exhaustive]
    #[error("bus {bus:?}: {action}{} failed: {source}", at_path(path.as_deref()))]
    Io {
        /// The bus (empty for operations on every bus, such as listing).
        bus: String,
        /// What was being done.
        action: &'static str,
        /// The file, directory or message queue it was done to, where that
        /// is not the bus's segment (`/dev/shm/shmbus.<bus>`).
        path: Option<std::path::PathBuf>,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// [`Bus::open_existing`](crate::Bus::open_existing) or
    /// [`Bus::remove`](crate::Bus::remove) of a bus that does not exist.
    #[non_exhaustive]
    #[error("bus {bus:?} does not exist ({})", not_found_where(bus, pipe_dir.as_deref()))]
    NotFound {
        /// The bus.
        bus: String,
        /// The pipe-bus directory that was looked in too, if one was.
        pipe_dir: Option<std::path::PathBuf>,
    },

    /// The segment, or a topic in it, holds values no shmbus process
    /// writes.
    #[error(
        "bus {bus:?} is corrupt or not a shmbus segment: {what}; \
         remove it (`shmbus remove {bus}`, or `Bus::remove({bus:?})`) and recreate it"
    )]
    Corrupt {
        /// The bus.
        bus: String,
        /// What is corrupt, and where.
        what: String,
    },

    /// Something that is not a shared-memory segment sits where the bus's
    /// segment would be.
    #[error(
        "{path} is {kind}, not a shmbus segment: something else uses the name of bus {bus:?}; \
         remove it (it is not a bus, so `Bus::remove` will not) or use another bus name"
    )]
    NotASegment {
        /// The bus.
        bus: String,
        /// The path in the bus's place.
        path: String,
        /// What it is (a directory, a FIFO, ...).
        kind: &'static str,
    },

    /// The bus was made by a shmbus with another segment layout.
    #[error(
        "bus {bus:?} has segment layout version {found}, but this shmbus speaks version \
         {expected}: run the same shmbus version in every process, or remove the bus"
    )]
    VersionMismatch {
        /// The bus.
        bus: String,
        /// The version in the segment.
        found: u32,
        /// The version this library speaks.
        expected: u32,
    },

    /// The topic exists with another kind, message type, capacity, slot
    /// size or mode than was asked for.
    #[non_exhaustive]
    #[error(
        "topic {topic:?} exists, but not as asked for: {differs} (it is {existing}; {requested} \
         was asked for)"
    )]
    TopicMismatch {
        /// The topic.
        topic: String,
        /// What differs, each with what to do about it.
        differs: String,
        /// What it is.
        existing: String,
        /// What was asked for.
        requested: String,
    },

    /// The topic does not exist, and the call does not create topics
    /// ([`TopicBuilder::observer`](crate::TopicBuilder::observer)).
    #[error("bus {bus:?} has no topic {topic:?}; `shmbus list {bus}` shows the topics it has")]
    TopicNotFound {
        /// The bus.
        bus: String,
        /// The topic.
        topic: String,
    },

    /// Every topic entry of the bus is taken.
    #[error(
        "bus {bus:?} has no free topic entry (all {capacity} are used): \
         create the bus with a larger `topics(..)`"
    )]
    DirectoryFull {
        /// The bus.
        bus: String,
        /// Its number of topic entries.
        capacity: u32,
    },

    /// The bus's arena has no room for the new topic's ring.
    #[error(
        "bus {bus:?} has no room for topic {topic:?}: it needs {needed} bytes and \
         {free} of the arena are free; create the bus with a larger `size(..)`"
    )]
    ArenaFull {
        /// The bus.
        bus: String,
        /// The topic being created.
        topic: String,
        /// Bytes its ring needs.
        needed: u64,
        /// Bytes of the arena still free.
        free: u64,
    },

    /// `/dev/shm` is full: the memory for the bus or a topic could not be
    /// reserved.
    #[error(
        "/dev/shm has no room for {needed} bytes of bus {bus:?} ({source}); \
         free space there or mount it larger (Docker: --shm-size)"
    )]
    NoSpace {
        /// The bus.
        bus: String,
        /// Bytes that were to be reserved.
        needed: u64,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The broadcast topic has a publisher in a live (or possibly live)
    /// process.
    #[error(
        "topic {topic:?} already has a live publisher ({holder}); a broadcast topic has \
         one publisher at a time: stop that one or use another topic"
    )]
    PublisherBusy {
        /// The topic.
        topic: String,
        /// The process holding the lease (pid, as far as it can be told).
        holder: String,
    },

    /// Every entry of a lossless topic's subscriber table is held by a
    /// live (or possibly live) subscriber.
    #[error(
        "topic {topic:?} already has {max} lossless subscribers attached, its maximum: \
         detach one, or create the topic with a larger `lossless(..)`"
    )]
    TooManySubscribers {
        /// The topic.
        topic: String,
        /// The size of its subscriber table.
        max: u32,
    },

    /// Every entry of a work queue's producer (or consumer) table is held
    /// by a live (or possibly live) endpoint.
    #[error(
        "work-queue topic {topic:?} already has {max} {role}s attached, its maximum: \
         stop one, or create the topic with a larger `max_{role}s(..)`"
    )]
    TooManyWorkers {
        /// The topic.
        topic: String,
        /// `"producer"` or `"consumer"`.
        role: &'static str,
        /// The size of that table.
        max: u32,
    },

    /// Every entry of the bus's process table is held by a live (or
    /// possibly live) process.
    #[error(
        "bus {bus:?} has no free process-table entry (all {max} are held by live processes): \
         close buses in processes that do not need them, or create the bus with a larger \
         `processes(..)`"
    )]
    TooManyProcesses {
        /// The bus.
        bus: String,
        /// The size of its process table.
        max: u32,
    },

    /// A topic option out of range, or one that does not apply to the kind
    /// of topic asked for.
    #[error("invalid options for topic {topic:?}: {why}")]
    InvalidOptions {
        /// The topic.
        topic: String,
        /// Which option, and what it must be.
        why: String,
    },

    /// A bus option out of range ([`BusBuilder`](crate::BusBuilder)).
    #[error("invalid options for bus {bus:?}: {why}")]
    InvalidBusOptions {
        /// The bus.
        bus: String,
        /// Which option, and what it must be.
        why: String,
    },

    /// An endpoint made before `fork()` in the parent of this process was
    /// asked for something only its own process can do (cloning a lossless
    /// subscriber, whose position is only safe while its own entry holds
    /// it).
    #[error(
        "this {what} of topic {topic:?} was made before fork() in the parent process, \
         so it cannot be cloned here: make a new one from the bus"
    )]
    Inherited {
        /// The topic.
        topic: String,
        /// What kind of endpoint.
        what: &'static str,
    },

    /// Waiting for another process (a topic being created) took too long.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        waited: Duration,
    },
}

/// Publishing with [`Publisher::send`](crate::Publisher::send), which waits
/// for room in lossless mode and never fails for want of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// This publisher no longer holds the topic's lease: another process
    /// took it over (the lease word changed under it), or the publisher was
    /// made before `fork()` in the parent of this process. The message was
    /// not sent, and none will be.
    #[error("lease lost: this publisher no longer holds the topic's publisher lease (it was taken over, or the publisher was made before fork() in another process); drop it and open a new publisher")]
    LeaseLost,
    /// A byte message longer than the topic's slots (or, variable-size,
    /// than half its arena). Nothing was sent.
    #[error("message of {len} bytes is over the topic's limit of {max} bytes; send at most {max} bytes, or create the topic with a larger `slot_size` (a variable-size topic: an arena of at least twice the message)")]
    TooLarge {
        /// The message's length.
        len: usize,
        /// The topic's largest message: its slot size, or half its arena.
        max: usize,
    },
}

/// A write into a loan ([`LoanBytes::write_at`](crate::LoanBytes::write_at))
/// that does not fit in it. Nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("write of {len} bytes at offset {offset} runs past the end of the {loan_len}-byte loan; write within bytes 0..{loan_len}, or loan more")]
pub struct LoanRangeError {
    /// Where the write started.
    pub offset: usize,
    /// Its length.
    pub len: usize,
    /// The loan's length.
    pub loan_len: usize,
}

/// Publishing without waiting ([`Publisher::try_send`](crate::Publisher::try_send)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrySendError {
    /// Lossless mode: the slowest live subscriber has not read the message
    /// this one would overwrite (in a variable-size topic: the message
    /// whose descriptor, or whose arena bytes, this one needs). The message
    /// was not sent.
    #[error("full: the slowest lossless subscriber has not read the message this one would overwrite (its slot, or in a variable-size topic its descriptor or arena bytes); try again later")]
    Full,
    /// As [`SendError::LeaseLost`].
    #[error("lease lost: this publisher no longer holds the topic's publisher lease (it was taken over, or the publisher was made before fork() in another process); drop it and open a new publisher")]
    LeaseLost,
    /// As [`SendError::TooLarge`].
    #[error("message of {len} bytes is over the topic's limit of {max} bytes; send at most {max} bytes, or create the topic with a larger `slot_size` (a variable-size topic: an arena of at least twice the message)")]
    TooLarge {
        /// The message's length.
        len: usize,
        /// The topic's largest message: its slot size, or half its arena.
        max: usize,
    },
}

/// Publishing with a bound on the wait
/// ([`Publisher::send_timeout`](crate::Publisher::send_timeout),
/// [`send_deadline`](crate::Publisher::send_deadline)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendTimeoutError {
    /// Lossless mode: the slowest live subscriber still held the slot back
    /// when the time ran out. The message was not sent.
    #[error("timed out waiting for the slowest lossless subscriber to make room")]
    Timeout,
    /// As [`SendError::LeaseLost`].
    #[error("lease lost: this publisher no longer holds the topic's publisher lease (it was taken over, or the publisher was made before fork() in another process); drop it and open a new publisher")]
    LeaseLost,
    /// As [`SendError::TooLarge`].
    #[error("message of {len} bytes is over the topic's limit of {max} bytes; send at most {max} bytes, or create the topic with a larger `slot_size` (a variable-size topic: an arena of at least twice the message)")]
    TooLarge {
        /// The message's length.
        len: usize,
        /// The topic's largest message: its slot size, or half its arena.
        max: usize,
    },
}

impl From<SendError> for TrySendError {
    fn from(err: SendError) -> Self {
        match err {
            SendError::LeaseLost => TrySendError::LeaseLost,
            SendError::TooLarge { len, max } => TrySendError::TooLarge { len, max },
        }
    }
}

impl From<SendError> for SendTimeoutError {
    fn from(err: SendError) -> Self {
        match err {
            SendError::LeaseLost => SendTimeoutError::LeaseLost,
            SendError::TooLarge { len, max } => SendTimeoutError::TooLarge { len, max },
        }
    }
}

/// Receiving with [`Subscriber::recv`](crate::Subscriber::recv) (and the
/// items of [`Subscriber::iter`](crate::Subscriber::iter)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// The subscriber was lapped: this many messages were overwritten before
    /// it read them. The next receive returns the oldest message still held
    /// (or the newest, with [`LagPolicy::Newest`](crate::LagPolicy::Newest),
    /// the lost count then including what was skipped).
    #[error("lagged: {0} messages were overwritten before this subscriber read them")]
    Lagged(u64),
    /// The publisher is gone (dropped, or its process died) and every
    /// message it sent has been read. A new publisher may take over later.
    #[error("disconnected: the publisher is gone and all its messages have been read")]
    Disconnected,
    /// The slot of message `seq` is corrupt (its length does not fit the
    /// slot, or the type); it was skipped.
    #[error("message {seq} is corrupt in the segment and was skipped")]
    Corrupt {
        /// The skipped message's sequence number.
        seq: u64,
    },
    /// This lossless subscriber no longer holds its entry in the topic's
    /// subscriber table: it was evicted (found dead, which a live process
    /// never is unless its entry was overwritten), or it was made before
    /// `fork()` in the parent of this process. It receives nothing more and
    /// never writes its cursor again.
    #[error("evicted: this lossless subscriber no longer holds its subscriber entry (it was evicted, or made before fork() in another process); drop it and subscribe again")]
    Evicted,
}

/// Reading in place with [`Subscriber::recv_ref`](crate::Subscriber::recv_ref)
/// or [`recv_bytes_ref`](crate::Subscriber::recv_bytes_ref) (`E` =
/// [`RecvError`]), [`try_recv_ref`](crate::Subscriber::try_recv_ref) or
/// [`try_recv_bytes_ref`](crate::Subscriber::try_recv_bytes_ref)
/// ([`TryRecvError`]), and [`recv_ref_timeout`](crate::Subscriber::recv_ref_timeout)
/// or [`recv_bytes_ref_timeout`](crate::Subscriber::recv_bytes_ref_timeout)
/// ([`RecvTimeoutError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvRefError<E = RecvError> {
    /// The topic is in overwrite mode, where the publisher may overwrite a
    /// message while it is lent out.
    #[error("reading in place (recv_ref, recv_bytes_ref) needs a lossless topic; use recv or recv_bytes on overwrite topics")]
    NotLossless,
    /// What the receive itself returned.
    #[error(transparent)]
    Recv(#[from] E),
}

/// Receiving without waiting ([`Subscriber::try_recv`](crate::Subscriber::try_recv)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TryRecvError {
    /// No message yet.
    #[error("no message yet")]
    Empty,
    /// As [`RecvError::Lagged`].
    #[error("lagged: {0} messages were overwritten before this subscriber read them")]
    Lagged(u64),
    /// As [`RecvError::Disconnected`].
    #[error("disconnected: the publisher is gone and all its messages have been read")]
    Disconnected,
    /// As [`RecvError::Corrupt`].
    #[error("message {seq} is corrupt in the segment and was skipped")]
    Corrupt {
        /// The skipped message's sequence number.
        seq: u64,
    },
    /// As [`RecvError::Evicted`].
    #[error("evicted: this lossless subscriber no longer holds its subscriber entry (it was evicted, or made before fork() in another process); drop it and subscribe again")]
    Evicted,
}

/// Receiving with a bound on the wait
/// ([`Subscriber::recv_timeout`](crate::Subscriber::recv_timeout),
/// [`recv_deadline`](crate::Subscriber::recv_deadline)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvTimeoutError {
    /// No message came before the time ran out.
    #[error("timed out waiting for a message")]
    Timeout,
    /// As [`RecvError::Lagged`].
    #[error("lagged: {0} messages were overwritten before this subscriber read them")]
    Lagged(u64),
    /// As [`RecvError::Disconnected`].
    #[error("disconnected: the publisher is gone and all its messages have been read")]
    Disconnected,
    /// As [`RecvError::Corrupt`].
    #[error("message {seq} is corrupt in the segment and was skipped")]
    Corrupt {
        /// The skipped message's sequence number.
        seq: u64,
    },
    /// As [`RecvError::Evicted`].
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

    /// The error of a wait that was not to wait: `Timeout` is `Empty`.
    pub(crate) fn without_wait(self) -> TryRecvError {
        match self {
            RecvTimeoutError::Timeout => TryRecvError::Empty,
            RecvTimeoutError::Lagged(n) => TryRecvError::Lagged(n),
            RecvTimeoutError::Disconnected => TryRecvError::Disconnected,
            RecvTimeoutError::Corrupt { seq } => TryRecvError::Corrupt { seq },
            RecvTimeoutError::Evicted => TryRecvError::Evicted,
        }
    }
}

/// Pushing to a work queue with [`Producer::push`](crate::Producer::push),
/// which waits while the queue is full. Every variant that can carry the
/// value hands it back ([`into_inner`](Self::into_inner)).
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError<T> {
    /// No consumer can ever take the message: the bus was removed (its
    /// name no longer leads to this segment, so no process can open it and
    /// attach a consumer) and no live consumer is attached. Checked when
    /// the queue is full (at most once per liveness check interval): a
    /// push into a queue with room succeeds, and the message waits there
    /// for a consumer; [`Producer::is_abandoned`](crate::Producer::is_abandoned)
    /// asks directly.
    #[error("disconnected: the bus was removed and no consumer is attached, so no consumer can ever take this message; open the bus again")]
    Disconnected(T),
    /// This endpoint's entry in the queue's claim table is no longer its
    /// own: it was made before `fork()` in the parent of this process, or
    /// the entry was overwritten. Nothing was done.
    #[error("detached: this producer no longer holds its claim-table entry (it was made before fork() in another process, or the entry was overwritten); drop it and attach a new producer")]
    Detached(T),
    /// The slot at `pos` holds a sequence no protocol step writes: the
    /// segment is corrupt.
    #[error("the queue's slot for position {pos} is corrupt in the segment; remove the bus and recreate it")]
    Corrupt {
        /// The queue position of the corrupt slot.
        pos: u64,
        /// The value, handed back.
        value: T,
    },
    /// A byte message longer than the queue's slots. Nothing was done.
    #[error("message of {len} bytes is over the queue's limit of {max} bytes; push at most {max} bytes, or create the queue with a larger `slot_size` (a variable-size queue: an arena, `variable(..)`, of more than twice the message and its 16-byte header; on pipes and message queues the transport's own limit may be lower)")]
    TooLarge {
        /// The message's length.
        len: usize,
        /// The queue's slot size.
        max: usize,
    },
}

/// Pushing without waiting ([`Producer::try_push`](crate::Producer::try_push)).
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TryPushError<T> {
    /// Every slot holds an unconsumed message.
    #[error("full: every slot holds an unconsumed message; try again later")]
    Full(T),
    /// As [`PushError::Disconnected`].
    #[error("disconnected: the bus was removed and no consumer is attached, so no consumer can ever take this message; open the bus again")]
    Disconnected(T),
    /// As [`PushError::Detached`].
    #[error("detached: this producer no longer holds its claim-table entry (it was made before fork() in another process, or the entry was overwritten); drop it and attach a new producer")]
    Detached(T),
    /// As [`PushError::Corrupt`].
    #[error("the queue's slot for position {pos} is corrupt in the segment; remove the bus and recreate it")]
    Corrupt {
        /// The queue position of the corrupt slot.
        pos: u64,
        /// The value, handed back.
        value: T,
    },
    /// As [`PushError::TooLarge`].
    #[error("message of {len} bytes is over the queue's limit of {max} bytes; push at most {max} bytes, or create the queue with a larger `slot_size` (a variable-size queue: an arena, `variable(..)`, of more than twice the message and its 16-byte header; on pipes and message queues the transport's own limit may be lower)")]
    TooLarge {
        /// The message's length.
        len: usize,
        /// The queue's slot size.
        max: usize,
    },
}

/// Pushing with a bound on the wait
/// ([`Producer::push_timeout`](crate::Producer::push_timeout),
/// [`push_deadline`](crate::Producer::push_deadline)).
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushTimeoutError<T> {
    /// The queue was still full when the time ran out.
    #[error("timed out waiting for room in the queue")]
    Timeout(T),
    /// As [`PushError::Disconnected`].
    #[error("disconnected: the bus was removed and no consumer is attached, so no consumer can ever take this message; open the bus again")]
    Disconnected(T),
    /// As [`PushError::Detached`].
    #[error("detached: this producer no longer holds its claim-table entry (it was made before fork() in another process, or the entry was overwritten); drop it and attach a new producer")]
    Detached(T),
    /// As [`PushError::Corrupt`].
    #[error("the queue's slot for position {pos} is corrupt in the segment; remove the bus and recreate it")]
    Corrupt {
        /// The queue position of the corrupt slot.
        pos: u64,
        /// The value, handed back.
        value: T,
    },
    /// As [`PushError::TooLarge`].
    #[error("message of {len} bytes is over the queue's limit of {max} bytes; push at most {max} bytes, or create the queue with a larger `slot_size` (a variable-size queue: an arena, `variable(..)`, of more than twice the message and its 16-byte header; on pipes and message queues the transport's own limit may be lower)")]
    TooLarge {
        /// The message's length.
        len: usize,
        /// The queue's slot size.
        max: usize,
    },
}

/// `Debug` and `into_inner` for the push errors, which hand a value back
/// (without asking `T: Debug`, as crossbeam's errors do not).
macro_rules! push_error_impls {
    ($name:ident, $($variant:ident),*) => {
        impl<T> $name<T> {
            /// The value handed back, if this error carries one (every
            /// variant but `TooLarge`).
            ///
            /// ```
            /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
            /// # let name = format!("doc-intoinner-{}", std::process::id());
            /// let bus = shmbus::Bus::open(&name)?;
            /// let mut jobs = bus.topic("jobs").capacity(2).producer::<u64>()?;
            /// jobs.push(1)?;
            /// jobs.push(2)?;
            /// let err = jobs.try_push(3).unwrap_err();
            /// assert_eq!(err.into_inner(), Some(3));
            /// # drop((jobs, bus)); shmbus::Bus::remove(&name)?;
            /// # Ok(()) }
            /// ```
            pub fn into_inner(self) -> Option<T> {
                match self {
                    $($name::$variant(value))|* | $name::Corrupt { value, .. } => Some(value),
                    $name::TooLarge { .. } => None,
                }
            }
        }

        impl<T> std::fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self {
                    $($name::$variant(_) => f.write_str(concat!(stringify!($variant), "(..)")),)*
                    $name::Corrupt { pos, .. } => write!(f, "Corrupt {{ pos: {pos}, .. }}"),
                    $name::TooLarge { len, max } => {
                        write!(f, "TooLarge {{ len: {len}, max: {max} }}")
                    }
                }
            }
        }
    };
}

push_error_impls!(PushError, Disconnected, Detached);
push_error_impls!(TryPushError, Full, Disconnected, Detached);
push_error_impls!(PushTimeoutError, Timeout, Disconnected, Detached);

/// Popping from a work queue with [`Consumer::pop`](crate::Consumer::pop)
/// (and the items of [`Consumer::iter`](crate::Consumer::iter)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PopError {
    /// A producer has attached, every producer that did is gone (dropped
    /// or dead), and the queue is empty. A new producer may attach later.
    #[error("disconnected: no producer is left and the queue is empty")]
    Disconnected,
    /// The message at `pos` is corrupt in the segment and was skipped.
    #[error("message at position {pos} is corrupt in the segment and was skipped")]
    Corrupt {
        /// The queue position of the skipped message.
        pos: u64,
    },
    /// This consumer's claim-table entry is no longer its own (made before
    /// `fork()` in the parent of this process, or overwritten).
    #[error("detached: this consumer no longer holds its claim-table entry (it was made before fork() in another process, or the entry was overwritten); drop it and attach a new consumer")]
    Detached,
}

/// Popping without waiting ([`Consumer::try_pop`](crate::Consumer::try_pop)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TryPopError {
    /// No message to pop now.
    #[error("empty: no message to pop")]
    Empty,
    /// As [`PopError::Disconnected`].
    #[error("disconnected: no producer is left and the queue is empty")]
    Disconnected,
    /// As [`PopError::Corrupt`].
    #[error("message at position {pos} is corrupt in the segment and was skipped")]
    Corrupt {
        /// The queue position of the skipped message.
        pos: u64,
    },
    /// As [`PopError::Detached`].
    #[error("detached: this consumer no longer holds its claim-table entry (it was made before fork() in another process, or the entry was overwritten); drop it and attach a new consumer")]
    Detached,
}

/// Popping with a bound on the wait
/// ([`Consumer::pop_timeout`](crate::Consumer::pop_timeout),
/// [`pop_deadline`](crate::Consumer::pop_deadline)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PopTimeoutError {
    /// No message came before the time ran out.
    #[error("timed out waiting for a message")]
    Timeout,
    /// As [`PopError::Disconnected`].
    #[error("disconnected: no producer is left and the queue is empty")]
    Disconnected,
    /// As [`PopError::Corrupt`].
    #[error("message at position {pos} is corrupt in the segment and was skipped")]
    Corrupt {
        /// The queue position of the skipped message.
        pos: u64,
    },
    /// As [`PopError::Detached`].
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

impl PopTimeoutError {
    /// The error of a wait that was not to wait: `Timeout` is `Empty`.
    pub(crate) fn without_wait(self) -> TryPopError {
        match self {
            PopTimeoutError::Timeout => TryPopError::Empty,
            PopTimeoutError::Disconnected => TryPopError::Disconnected,
            PopTimeoutError::Corrupt { pos } => TryPopError::Corrupt { pos },
            PopTimeoutError::Detached => TryPopError::Detached,
        }
    }

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

/// `try_` errors as the errors of the waiting calls, for the async forms,
/// which wait where the `try_` call says "empty" or "full".
#[cfg(feature = "tokio")]
mod or_wait {
    use super::*;

    impl TryRecvError {
        /// The blocking receive's error, or `None` for `Empty` (wait).
        pub(crate) fn or_wait(self) -> Option<RecvError> {
            match self {
                TryRecvError::Empty => None,
                TryRecvError::Lagged(n) => Some(RecvError::Lagged(n)),
                TryRecvError::Disconnected => Some(RecvError::Disconnected),
                TryRecvError::Corrupt { seq } => Some(RecvError::Corrupt { seq }),
                TryRecvError::Evicted => Some(RecvError::Evicted),
            }
        }
    }

    impl TryPopError {
        /// The blocking pop's error, or `None` for `Empty` (wait).
        pub(crate) fn or_wait(self) -> Option<PopError> {
            match self {
                TryPopError::Empty => None,
                TryPopError::Disconnected => Some(PopError::Disconnected),
                TryPopError::Corrupt { pos } => Some(PopError::Corrupt { pos }),
                TryPopError::Detached => Some(PopError::Detached),
            }
        }
    }

    impl TrySendError {
        /// The blocking send's error, or `None` for `Full` (wait).
        pub(crate) fn or_wait(self) -> Option<SendError> {
            match self {
                TrySendError::Full => None,
                TrySendError::LeaseLost => Some(SendError::LeaseLost),
                TrySendError::TooLarge { len, max } => Some(SendError::TooLarge { len, max }),
            }
        }
    }

    impl<T> TryPushError<T> {
        /// The blocking push's error, or the value back for `Full` (wait).
        pub(crate) fn or_wait(self) -> Result<PushError<T>, T> {
            match self {
                TryPushError::Full(value) => Err(value),
                TryPushError::Disconnected(value) => Ok(PushError::Disconnected(value)),
                TryPushError::Detached(value) => Ok(PushError::Detached(value)),
                TryPushError::Corrupt { pos, value } => Ok(PushError::Corrupt { pos, value }),
                TryPushError::TooLarge { len, max } => Ok(PushError::TooLarge { len, max }),
            }
        }
    }
}

/// Where a bus that does not exist was looked for.
fn not_found_where(bus: &str, pipe_dir: Option<&std::path::Path>) -> String {
    match pipe_dir {
        Some(dir) => format!(
            "no /dev/shm/shmbus.{bus}, and no pipe bus {bus} in {}; `shmbus list{}` shows \
             the buses there are",
            dir.display(),
            if *dir == crate::transport::default_root() {
                String::new()
            } else {
                format!(" --dir {}", dir.display())
            }
        ),
        None => format!("no /dev/shm/shmbus.{bus}"),
    }
}

/// ` (PATH)`, for an I/O error's message.
fn at_path(path: Option<&std::path::Path>) -> String {
    path.map_or_else(String::new, |path| format!(" ({})", path.display()))
}

//! What can travel on a topic.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A message type: plain old data that can be copied byte for byte into
/// shared memory and back. Derive the zerocopy traits on a `#[repr(C)]`
/// struct with no padding and no pointers:
///
/// ```
/// use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
///
/// #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug)]
/// #[repr(C)]
/// struct Quote {
///     instrument: u32,
///     size: u32,
///     price: f64,
///     ts_ns: u64,
/// }
///
/// fn is_message<T: shmbus::Message>() {}
/// is_message::<Quote>();
/// ```
///
/// A topic remembers its message type's size, alignment and name; a process
/// that opens it with another type gets [`Error::TopicMismatch`](crate::Error::TopicMismatch).
pub trait Message: IntoBytes + FromBytes + KnownLayout + Immutable + 'static {}

impl<T: IntoBytes + FromBytes + KnownLayout + Immutable + 'static> Message for T {}

/// Marker for topics of raw byte messages of any length up to the topic's
/// slot size: [`Publisher<Bytes>::send_bytes`](crate::Publisher::send_bytes),
/// [`Subscriber<Bytes>::recv_bytes`](crate::Subscriber::recv_bytes).
#[derive(Debug)]
pub enum Bytes {}

//! Broadcast topics: one publisher, any number of subscribers, every
//! subscriber sees every message in publish order.
//!
//! # Ordering
//!
//! Messages carry consecutive sequence numbers from 0. A subscriber receives
//! them in that order, never one twice, and never a torn (half-written) one.
//!
//! # Overwrite and lag
//!
//! The ring holds the last `capacity` messages. The publisher never waits:
//! when the ring is full it overwrites the oldest message, whether or not
//! every subscriber has read it. A subscriber that falls more than
//! `capacity` messages behind is *lapped*: its next receive returns
//! [`RecvError::Lagged(n)`](crate::RecvError::Lagged) with `n` the exact number of
//! messages it lost, and the receive after that returns the oldest message
//! the ring still holds. Over a subscriber's life, messages received plus
//! the sum of all `Lagged(n)` equals messages published since it started.
//! Subscribers write nothing shared, so a slow one costs the publisher and
//! the others nothing.
//!
//! # Lossless mode
//!
//! A topic created with [`TopicBuilder::lossless(max_subscribers)`](crate::TopicBuilder::lossless)
//! never overwrites a message an attached subscriber has not read: each
//! subscriber publishes its cursor in a subscriber table in the segment, and
//! the publisher waits for the slowest one ([`Publisher::send`] blocks,
//! [`Publisher::try_send`] returns [`TrySendError::Full`](crate::TrySendError::Full)).
//! A subscriber whose process died is evicted when the publisher finds it
//! holding it back (within the liveness check interval), so the publisher
//! never waits on a corpse; evictions are counted ([`Publisher::evictions`]).
//! At most `max_subscribers` subscribers attach at once; one more gets
//! [`Error::TooManySubscribers`](crate::Error::TooManySubscribers). Because no
//! one overwrites an unread message, a lossless subscriber may read in place
//! with [`Subscriber::recv_ref`] (zero copy). A lossless subscriber never
//! sees `Lagged`. Each receive costs a lossless subscriber one store to its
//! own cursor line and a wakeup check for the publisher.
//!
//! # Publisher lease and disconnection
//!
//! A topic has one publisher at a time. It holds a lease recorded in the
//! segment as its pid and process start time. A second publisher while the
//! first lives gets [`Error::PublisherBusy`](crate::Error::PublisherBusy). When the
//! holder's process has died (even by `kill -9`), a new publisher takes the
//! lease over and continues the sequence where the dead one stopped.
//!
//! Once the publisher is gone (dropped, or its process dead) and every
//! message it sent has been read, receives return
//! [`RecvError::Disconnected`](crate::RecvError::Disconnected). A dead publisher
//! is noticed within the subscriber's `publisher_check_interval` (default
//! 100 ms). A subscriber that starts before any publisher waits for one.
//! If a new publisher takes over later, the subscriber receives its messages.
//!
//! # Where a subscriber starts
//!
//! [`StartAt::Newest`] (default): at the most recently published message, if
//! any. [`StartAt::Oldest`]: at the oldest message the ring still holds.
//! [`StartAt::Next`]: at the next message published after subscribing.

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use crate::error::{
    Error, RecvError, RecvRefError, RecvTimeoutError, SendError, TryRecvError, TrySendError,
};
use crate::message::{Bytes, Message};
use crate::process;
use crate::ring::broadcast::Read;
use crate::ring::gate::GateCache;
use crate::ring::lease::{Acquired, LeaseError};
use crate::ring::Owner;
use crate::topic::{BroadcastHandle, TopicBuilder};
use crate::wait::{WaitStrategy, Waited, Waiter, Wake};

/// Where a new subscriber starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartAt {
    /// The most recently published message (or the first, if none yet).
    #[default]
    Newest,
    /// The oldest message the ring still holds.
    Oldest,
    /// The first message published after subscribing.
    Next,
}

/// The one publisher of a broadcast topic.
///
/// In overwrite mode `send` never blocks: the oldest message is overwritten
/// when the ring is full. In lossless mode `send` waits (as the topic
/// builder's wait strategy says) for the slowest live subscriber, and
/// `try_send` returns [`TrySendError::Full`] instead.
///
/// Dropping it releases the lease and wakes sleeping subscribers, who then
/// see [`RecvError::Disconnected`] after reading what is left.
pub struct Publisher<T> {
    topic: BroadcastHandle,
    next: u64,
    me: Owner,
    wait: WaitStrategy,
    check_interval: Duration,
    /// Lossless: what we last learnt from the subscriber table.
    gate_cache: GateCache,
    _marker: PhantomData<fn(&T)>,
}

impl<T> Publisher<T> {
    pub(crate) fn new(topic: BroadcastHandle, opts: &TopicBuilder<'_>) -> Result<Self, Error> {
        let me = topic.seg.me()?;
        let ctrl = topic.ring.ctrl();
        match ctrl.lease().acquire(me, |owner| topic.seg.liveness(owner)) {
            Ok(Acquired::Fresh | Acquired::TookOver(_) | Acquired::Repaired(_)) => {}
            Err(LeaseError::Held(holder)) => {
                return Err(Error::PublisherBusy {
                    topic: topic.name.clone(),
                    holder: topic.seg.describe(holder),
                })
            }
        }
        ctrl.mark_published();
        let next = topic.ring.resume_seq();
        Ok(Publisher {
            topic,
            next,
            me,
            wait: opts.wait,
            check_interval: opts.check_interval,
            gate_cache: GateCache::default(),
            _marker: PhantomData,
        })
    }

    /// The topic name.
    pub fn topic(&self) -> &str {
        &self.topic.name
    }

    /// Sequence number the next message will get (= messages published on
    /// this topic so far, by every publisher it has had).
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Ring capacity in messages.
    pub fn capacity(&self) -> u64 {
        self.topic.ring.capacity()
    }

    /// Whether the topic is in lossless mode.
    pub fn is_lossless(&self) -> bool {
        self.topic.gate.is_some()
    }

    /// Lossless mode: subscribers evicted so far because their process died.
    pub fn evictions(&self) -> u64 {
        self.topic.gate.as_ref().map_or(0, |g| g.ctrl().evictions())
    }

    /// Lossless mode: whether message `next` may be written now. Rescans
    /// the subscriber table only at the cached limit or after an attach.
    fn has_space(&mut self) -> bool {
        match &self.topic.gate {
            None => true,
            Some(gate) => self
                .gate_cache
                .has_space(gate, self.next, self.topic.ring.capacity()),
        }
    }

    /// Waits until `has_space`, evicting dead subscribers that hold us
    /// back. Returns false if `deadline` passed first.
    fn wait_for_space(&mut self, deadline: Option<Instant>) -> bool {
        let mut waiter = Waiter::new(self.wait, self.check_interval);
        loop {
            if self.has_space() {
                return true;
            }
            let gate = self.topic.gate.as_ref().expect("only lossless topics wait");
            if waiter.interval_due() {
                let seg = &self.topic.seg;
                gate.evict_dead(|owner| seg.liveness(owner));
                continue;
            }
            let (next, capacity) = (self.next, self.topic.ring.capacity());
            let space = || {
                gate.min_cursor()
                    .is_none_or(|min| next < min.saturating_add(capacity))
            };
            if waiter.wait_once(gate.ctrl().space(), space, deadline) == Waited::Deadline {
                return false;
            }
        }
    }

    fn publish(&mut self, bytes: &[u8]) {
        self.topic.ring.publish(self.next, bytes);
        self.next = self.next.wrapping_add(1);
        self.topic.ring.ctrl().wake().notify();
    }
}

impl<T: Message> Publisher<T> {
    /// Publishes `msg`. In overwrite mode never blocks; in lossless mode
    /// waits for room. The error is reserved (typed messages always fit).
    pub fn send(&mut self, msg: &T) -> Result<(), SendError> {
        if !self.has_space() {
            self.wait_for_space(None);
        }
        self.publish(msg.as_bytes());
        Ok(())
    }

    /// Publishes `msg` if there is room now (always, in overwrite mode).
    pub fn try_send(&mut self, msg: &T) -> Result<(), TrySendError> {
        if !self.has_space() {
            return Err(TrySendError::Full);
        }
        self.publish(msg.as_bytes());
        Ok(())
    }

    /// Publishes `msg`, waiting at most `timeout` for room.
    pub fn send_timeout(&mut self, msg: &T, timeout: Duration) -> Result<(), TrySendError> {
        if !self.has_space() && !self.wait_for_space(Some(Instant::now() + timeout)) {
            return Err(TrySendError::Full);
        }
        self.publish(msg.as_bytes());
        Ok(())
    }
}

impl Publisher<Bytes> {
    fn check_len(&self, bytes: &[u8]) -> Result<(), SendError> {
        let max = self.topic.ring.slot_bytes();
        if bytes.len() > max {
            return Err(SendError::TooLarge {
                len: bytes.len(),
                max,
            });
        }
        Ok(())
    }

    /// Publishes `bytes`, at most the topic's slot size. Waits for room in
    /// lossless mode.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        self.check_len(bytes)?;
        if !self.has_space() {
            self.wait_for_space(None);
        }
        self.publish(bytes);
        Ok(())
    }

    /// Publishes `bytes` if there is room now.
    pub fn try_send_bytes(&mut self, bytes: &[u8]) -> Result<(), TrySendError> {
        if let Err(SendError::TooLarge { len, max }) = self.check_len(bytes) {
            return Err(TrySendError::TooLarge { len, max });
        }
        if !self.has_space() {
            return Err(TrySendError::Full);
        }
        self.publish(bytes);
        Ok(())
    }

    /// Largest message this topic takes.
    pub fn max_message_len(&self) -> usize {
        self.topic.ring.slot_bytes()
    }
}

impl<T> Drop for Publisher<T> {
    fn drop(&mut self) {
        let ctrl = self.topic.ring.ctrl();
        ctrl.lease().release(self.me);
        // Sleepers check for a released lease when woken.
        ctrl.wake().notify();
    }
}

/// Counters of one subscriber.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscriberStats {
    /// Messages received.
    pub received: u64,
    /// Messages lost to overwriting (sum of all `Lagged(n)`).
    pub lagged: u64,
    /// Corrupt slots skipped.
    pub corrupt: u64,
    /// Times the subscriber went to sleep on the futex.
    pub sleeps: u64,
    /// Sleeps that ended by timeout rather than by a wakeup.
    pub sleep_timeouts: u64,
}

/// What we last learnt about the publisher's process.
struct PublisherWatch {
    owner: Option<Owner>,
    alive: bool,
    checked: Instant,
}

/// A subscriber of a broadcast topic. In overwrite mode it shares nothing
/// that it writes; in lossless mode it publishes its cursor in its entry of
/// the subscriber table.
pub struct Subscriber<T> {
    topic: BroadcastHandle,
    cursor: u64,
    wait: WaitStrategy,
    check_interval: Duration,
    watch: PublisherWatch,
    stats: SubscriberStats,
    scratch: Vec<u8>,
    /// Lossless mode: our entry in the subscriber table.
    gate_entry: Option<usize>,
    me: Owner,
    _marker: PhantomData<fn() -> T>,
}

/// One look at the ring.
enum Poll {
    Got(usize),
    Empty,
    Failed(RecvError),
}

impl<T> Subscriber<T> {
    pub(crate) fn new(topic: BroadcastHandle, opts: &TopicBuilder<'_>) -> Result<Self, Error> {
        let me = topic.seg.me()?;
        let ring = &topic.ring;
        let capacity = ring.capacity();
        let start_from = |head: u64| match opts.start {
            StartAt::Newest => head.saturating_sub(1),
            StartAt::Oldest => head.saturating_sub(capacity),
            StartAt::Next => head,
        };
        let (cursor, gate_entry) = match &topic.gate {
            None => (start_from(ring.head()), None),
            Some(gate) => {
                // Only messages from head - capacity + 1 on are sure to be
                // gated on us (see `ring::gate`).
                let oldest_gated = |head: u64| head.saturating_sub(capacity - 1);
                let index = gate.claim(me, oldest_gated(ring.head())).ok_or_else(|| {
                    Error::TooManySubscribers {
                        topic: topic.name.clone(),
                        max: gate.entries().len() as u32,
                    }
                })?;
                gate.announce();
                let head = ring.head();
                let cursor = start_from(head).max(oldest_gated(head));
                gate.advance(index, cursor);
                (cursor, Some(index))
            }
        };
        let scratch = vec![0; ring.slot_bytes()];
        Ok(Subscriber {
            topic,
            cursor,
            wait: opts.wait,
            check_interval: opts.check_interval,
            watch: PublisherWatch {
                owner: None,
                alive: false,
                checked: Instant::now(),
            },
            stats: SubscriberStats::default(),
            scratch,
            gate_entry,
            me,
            _marker: PhantomData,
        })
    }

    /// The topic name.
    pub fn topic(&self) -> &str {
        &self.topic.name
    }

    /// Sequence number of the next message this subscriber will receive.
    /// After a successful receive, the received message's is one less.
    pub fn next_seq(&self) -> u64 {
        self.cursor
    }

    /// Counters: received, lagged, sleeps.
    pub fn stats(&self) -> SubscriberStats {
        self.stats
    }

    /// Whether the topic is in lossless mode.
    pub fn is_lossless(&self) -> bool {
        self.gate_entry.is_some()
    }

    /// Moves past message `cursor`, telling the publisher in lossless mode.
    fn consumed(&mut self) {
        self.cursor = self.cursor.wrapping_add(1);
        self.stats.received += 1;
        if let (Some(gate), Some(index)) = (&self.topic.gate, self.gate_entry) {
            gate.advance(index, self.cursor);
        }
    }

    fn poll(&mut self, out: &mut [u8]) -> Poll {
        let ring = &self.topic.ring;
        match ring.read(self.cursor, out) {
            Read::Message { len } => {
                if self.gate_entry.is_some() {
                    process::stall_if_hooked("stall-in-lossless-read");
                }
                self.consumed();
                Poll::Got(len)
            }
            Read::Empty => Poll::Empty,
            Read::Overwritten => {
                let target = ring.lag_target(self.cursor);
                let lost = target.wrapping_sub(self.cursor);
                self.cursor = target;
                self.stats.lagged += lost;
                if let (Some(gate), Some(index)) = (&self.topic.gate, self.gate_entry) {
                    gate.advance(index, self.cursor);
                }
                Poll::Failed(RecvError::Lagged(lost))
            }
            Read::BadLength { .. } => {
                let seq = self.cursor;
                self.consumed();
                self.stats.received -= 1;
                self.stats.corrupt += 1;
                Poll::Failed(RecvError::Corrupt { seq })
            }
        }
    }

    /// Whether the publisher is gone and nothing is left to read. Reads the
    /// publisher's /proc entry at most once per check interval.
    fn disconnected(&mut self) -> bool {
        let ctrl = self.topic.ring.ctrl();
        let gone = match ctrl.lease().holder() {
            None => ctrl.had_publisher(),
            Some(owner) => {
                let now = Instant::now();
                let fresh = now.duration_since(self.watch.checked) < self.check_interval;
                if self.watch.owner != Some(owner) || !fresh {
                    self.watch = PublisherWatch {
                        owner: Some(owner),
                        alive: !self.topic.seg.liveness(owner).is_dead(),
                        checked: now,
                    };
                }
                !self.watch.alive
            }
        };
        // The publisher may have sent more between our last read and going
        // away: only report Disconnected once that is read too.
        gone && !self.topic.ring.ready(self.cursor)
    }

    fn try_recv_into(&mut self, out: &mut [u8]) -> Result<usize, TryRecvError> {
        match self.poll(out) {
            Poll::Got(len) => Ok(len),
            Poll::Failed(err) => Err(err.into()),
            Poll::Empty if self.disconnected() => Err(TryRecvError::Disconnected),
            Poll::Empty => Err(TryRecvError::Empty),
        }
    }

    fn recv_into(
        &mut self,
        out: &mut [u8],
        deadline: Option<Instant>,
    ) -> Result<usize, RecvTimeoutError> {
        self.wait_for(deadline, |sub| sub.poll(out))
    }

    /// Calls `attempt` until it finds something, waiting between attempts
    /// as the wait strategy says; checks for a gone publisher and the
    /// deadline now and then, and after every sleep.
    fn wait_for<R>(
        &mut self,
        deadline: Option<Instant>,
        mut attempt: impl FnMut(&mut Self) -> Poll,
    ) -> Result<R, RecvTimeoutError>
    where
        R: From<usize>,
    {
        let mut waiter = Waiter::new(self.wait, self.check_interval);
        loop {
            match attempt(self) {
                Poll::Got(len) => return Ok(R::from(len)),
                Poll::Failed(err) => return Err(err.into()),
                Poll::Empty => {}
            }
            if waiter.checks_due() && self.disconnected() {
                return Err(RecvTimeoutError::Disconnected);
            }
            let ring = &self.topic.ring;
            let (ctrl, cursor) = (ring.ctrl(), self.cursor);
            let ready =
                || ring.ready(cursor) || (ctrl.lease().holder().is_none() && ctrl.had_publisher());
            match waiter.wait_once(ctrl.wake(), ready, deadline) {
                Waited::Deadline => return Err(RecvTimeoutError::Timeout),
                Waited::Slept(Wake::Woken) => self.stats.sleeps += 1,
                Waited::Slept(Wake::TimedOut) => {
                    self.stats.sleeps += 1;
                    self.stats.sleep_timeouts += 1;
                    // Force a liveness check on the next round.
                    self.watch.owner = None;
                }
                Waited::Slept(Wake::Ready) | Waited::Polled => {}
            }
        }
    }
}

impl<T> Drop for Subscriber<T> {
    fn drop(&mut self) {
        if let (Some(gate), Some(index)) = (&self.topic.gate, self.gate_entry) {
            gate.detach(index, self.me);
        }
    }
}

/// A message read in place from a lossless topic: no copy. The publisher
/// cannot overwrite it until this guard drops, which moves the subscriber
/// past it.
pub struct Borrowed<'a, T> {
    sub: &'a mut Subscriber<T>,
    value: &'a T,
}

impl<T> core::ops::Deref for Borrowed<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.value
    }
}

impl<T> Drop for Borrowed<'_, T> {
    fn drop(&mut self) {
        self.sub.consumed();
    }
}

impl<T: Message> Subscriber<T> {
    /// Receives the next message, waiting as the wait strategy says.
    pub fn recv(&mut self) -> Result<T, RecvError> {
        self.recv_typed(None)
            .map_err(RecvTimeoutError::without_deadline)
    }

    /// Receives the next message, waiting at most `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.recv_typed(Some(Instant::now() + timeout))
    }

    /// Receives the next message if there is one, without waiting.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let mut value = T::new_zeroed();
        let len = self.try_recv_into(value.as_mut_bytes())?;
        self.check_len(len).map_err(TryRecvError::from)?;
        Ok(value)
    }

    fn recv_typed(&mut self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        let mut value = T::new_zeroed();
        let len = self.recv_into(value.as_mut_bytes(), deadline)?;
        self.check_len(len).map_err(RecvTimeoutError::from)?;
        Ok(value)
    }

    /// Lossless topics: waits for the next message and lends it in place,
    /// without copying. The publisher cannot overwrite it until the guard
    /// drops; dropping it moves this subscriber past the message. On an
    /// overwrite-mode topic, returns [`RecvRefError::NotLossless`].
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-ref-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut rx = bus.topic("t").lossless(4).subscriber::<[u64; 8]>()?;
    /// let mut tx = bus.topic("t").publisher::<[u64; 8]>()?;
    /// tx.send(&[7; 8])?;
    /// let msg = rx.recv_ref()?;
    /// assert_eq!(msg[3], 7);
    /// # drop(msg); drop((tx, rx, bus));
    /// # shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    pub fn recv_ref(&mut self) -> Result<Borrowed<'_, T>, RecvRefError> {
        const {
            assert!(
                core::mem::align_of::<T>() <= 16,
                "recv_ref needs an alignment of at most 16"
            )
        };
        if self.gate_entry.is_none() {
            return Err(RecvRefError::NotLossless);
        }
        let ready = self.wait_for::<usize>(None, |sub| {
            if sub.topic.ring.ready(sub.cursor) {
                Poll::Got(0)
            } else {
                Poll::Empty
            }
        });
        ready.map_err(RecvTimeoutError::without_deadline)?;
        let size = core::mem::size_of::<T>();
        let Some(words) = self.topic.ring.payload_if_complete(self.cursor, size) else {
            // Complete with another length, or overwritten: read it the
            // copying way, which reports exactly what happened.
            let mut scratch = core::mem::take(&mut self.scratch);
            let polled = self.poll(&mut scratch);
            self.scratch = scratch;
            return Err(RecvRefError::Recv(match polled {
                Poll::Failed(err) => err,
                _ => RecvError::Corrupt {
                    seq: self.cursor.wrapping_sub(1),
                },
            }));
        };
        // SAFETY: the payload starts 16 bytes into a 64-byte-aligned slot, so
        // it is aligned for T (align <= 16, asserted above), and holds
        // `size_of::<T>()` bytes (the slot is at least that large: the topic's
        // slot size is T's size). Any bytes are a valid T (FromBytes). No one
        // writes them while the guard lives: in lossless mode the publisher
        // may not write message `cursor + capacity` into this slot until our
        // cursor, published in the subscriber table, passes `cursor`, which
        // happens only when the guard drops. The Acquire load of the complete
        // stamp in `payload_if_complete` orders the publisher's payload
        // stores before our reads.
        let value = unsafe { &*words.as_ptr().cast::<T>() };
        Ok(Borrowed { sub: self, value })
    }

    fn check_len(&mut self, len: usize) -> Result<(), RecvError> {
        if len == core::mem::size_of::<T>() {
            Ok(())
        } else {
            self.stats.received -= 1;
            self.stats.corrupt += 1;
            Err(RecvError::Corrupt {
                seq: self.cursor.wrapping_sub(1),
            })
        }
    }
}

impl Subscriber<Bytes> {
    /// Receives the next message, waiting as the wait strategy says. The
    /// slice borrows an internal buffer until the next receive.
    pub fn recv_bytes(&mut self) -> Result<&[u8], RecvError> {
        let len = self
            .recv_bytes_deadline(None)
            .map_err(RecvTimeoutError::without_deadline)?;
        Ok(&self.scratch[..len])
    }

    /// Receives the next message, waiting at most `timeout`.
    pub fn recv_bytes_timeout(&mut self, timeout: Duration) -> Result<&[u8], RecvTimeoutError> {
        let len = self.recv_bytes_deadline(Some(Instant::now() + timeout))?;
        Ok(&self.scratch[..len])
    }

    /// Receives the next message if there is one, without waiting.
    pub fn try_recv_bytes(&mut self) -> Result<&[u8], TryRecvError> {
        let mut scratch = core::mem::take(&mut self.scratch);
        let result = self.try_recv_into(&mut scratch);
        self.scratch = scratch;
        let len = result?;
        Ok(&self.scratch[..len])
    }

    fn recv_bytes_deadline(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<usize, RecvTimeoutError> {
        let mut scratch = core::mem::take(&mut self.scratch);
        let result = self.recv_into(&mut scratch, deadline);
        self.scratch = scratch;
        result
    }
}

impl<T> std::fmt::Debug for Publisher<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("topic", &self.topic.name)
            .field("next_seq", &self.next)
            .field("capacity", &self.topic.ring.capacity())
            .finish()
    }
}

impl<T> std::fmt::Debug for Subscriber<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("topic", &self.topic.name)
            .field("next_seq", &self.cursor)
            .field("wait", &self.wait)
            .field("stats", &self.stats)
            .finish()
    }
}

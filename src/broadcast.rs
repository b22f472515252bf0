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
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bus::Bus;
use crate::error::{Error, RecvError, RecvTimeoutError, SendError, TryRecvError};
use crate::message::{Bytes, Message};
use crate::process;
use crate::ring::broadcast::{BroadcastCtrl, BroadcastRing, Read};
use crate::ring::lease::{Acquired, LeaseError};
use crate::ring::Owner;
use crate::segment::directory::{self, TopicRequest, TypeFingerprint};
use crate::segment::layout::{self, MAX_CAPACITY, MAX_SLOT_SIZE};
use crate::segment::Segment;
use crate::sync::{spin_hint, AtomicU64};
use crate::wait::{WaitStrategy, Wake};

/// Default ring capacity: 1024 messages.
pub const DEFAULT_CAPACITY: u32 = 1024;
/// Default slot size of byte topics: 256 bytes.
pub const DEFAULT_BYTES_SLOT_SIZE: u32 = 256;

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

/// Options for one topic, and for the publisher or subscriber made from it.
/// From [`Bus::topic`].
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let name = format!("doc-topic-{}", std::process::id());
/// use shmbus::{Bus, StartAt, WaitStrategy};
/// let bus = Bus::open(&name)?;
/// let mut tx = bus.topic("frames").capacity(64).slot_size(4096).publisher_bytes()?;
/// let mut rx = bus
///     .topic("frames")
///     .start_at(StartAt::Oldest)
///     .wait(WaitStrategy::Block)
///     .subscriber_bytes()?;
/// tx.send_bytes(b"hello")?;
/// assert_eq!(rx.recv_bytes()?, b"hello");
/// # drop((tx, rx, bus));
/// # Bus::remove(&name)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct TopicBuilder<'b> {
    bus: &'b Bus,
    name: String,
    capacity: Option<u32>,
    slot_size: Option<u32>,
    start: StartAt,
    wait: WaitStrategy,
    check_interval: Duration,
    create_timeout: Duration,
}

impl<'b> TopicBuilder<'b> {
    pub(crate) fn new(bus: &'b Bus, name: &str) -> Self {
        TopicBuilder {
            bus,
            name: name.to_owned(),
            capacity: None,
            slot_size: None,
            start: StartAt::default(),
            wait: WaitStrategy::default(),
            check_interval: Duration::from_millis(100),
            create_timeout: Duration::from_secs(2),
        }
    }

    /// Ring capacity in messages, a power of two. If the topic exists with
    /// another capacity, opening fails. Unset: 1024 on creation, whatever it
    /// is on join.
    pub fn capacity(mut self, capacity: u32) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// Largest message in bytes (byte topics; typed topics use the size of
    /// the type). Unset: 256 on creation, whatever it is on join.
    pub fn slot_size(mut self, bytes: u32) -> Self {
        self.slot_size = Some(bytes);
        self
    }

    /// Where a subscriber starts. Default [`StartAt::Newest`].
    pub fn start_at(mut self, start: StartAt) -> Self {
        self.start = start;
        self
    }

    /// How a subscriber waits in `recv`. Default adaptive.
    pub fn wait(mut self, wait: WaitStrategy) -> Self {
        self.wait = wait;
        self
    }

    /// How often a waiting subscriber checks that the publisher's process
    /// is still alive. Default 100 ms.
    pub fn publisher_check_interval(mut self, interval: Duration) -> Self {
        self.check_interval = interval.max(Duration::from_micros(100));
        self
    }

    /// The publisher of this topic (typed).
    pub fn publisher<T: Message>(self) -> Result<Publisher<T>, Error> {
        let topic = self.open(TypeFingerprint::of::<T>())?;
        Publisher::new(topic)
    }

    /// A subscriber of this topic (typed).
    pub fn subscriber<T: Message>(self) -> Result<Subscriber<T>, Error> {
        let topic = self.open(TypeFingerprint::of::<T>())?;
        Ok(Subscriber::new(topic, &self))
    }

    /// The publisher of this byte topic.
    pub fn publisher_bytes(self) -> Result<Publisher<Bytes>, Error> {
        let topic = self.open(bytes_fingerprint())?;
        Publisher::new(topic)
    }

    /// A subscriber of this byte topic.
    pub fn subscriber_bytes(self) -> Result<Subscriber<Bytes>, Error> {
        let topic = self.open(bytes_fingerprint())?;
        Ok(Subscriber::new(topic, &self))
    }

    fn invalid(&self, why: String) -> Error {
        Error::InvalidOptions {
            topic: self.name.clone(),
            why,
        }
    }

    fn open(&self, fingerprint: TypeFingerprint) -> Result<TopicHandle, Error> {
        let typed = fingerprint != bytes_fingerprint();
        if let Some(capacity) = self.capacity {
            if !capacity.is_power_of_two() || capacity > MAX_CAPACITY {
                return Err(self.invalid(format!(
                    "capacity({capacity}) must be a power of two from 1 to {MAX_CAPACITY}"
                )));
            }
        }
        if let Some(slot) = self.slot_size {
            if slot > MAX_SLOT_SIZE {
                return Err(self.invalid(format!(
                    "slot_size({slot}) is over the limit of {MAX_SLOT_SIZE}"
                )));
            }
            if typed && slot != fingerprint.size {
                return Err(self.invalid(format!(
                    "slot_size({slot}) differs from the size of `{}` ({}); typed topics take their slot size from the type",
                    fingerprint.name, fingerprint.size
                )));
            }
        }
        if typed && fingerprint.size > MAX_SLOT_SIZE {
            return Err(self.invalid(format!(
                "`{}` is {} bytes, over the slot limit of {MAX_SLOT_SIZE}",
                fingerprint.name, fingerprint.size
            )));
        }
        let request = TopicRequest {
            name: &self.name,
            kind: layout::KIND_BROADCAST,
            capacity: self.capacity,
            slot_size: if typed {
                Some(fingerprint.size)
            } else {
                self.slot_size
            },
            default_capacity: DEFAULT_CAPACITY,
            default_slot_size: DEFAULT_BYTES_SLOT_SIZE,
            fingerprint,
        };
        let topic = directory::find_or_create(&self.bus.seg, &request, self.create_timeout)?;
        TopicHandle::new(Arc::clone(&self.bus.seg), &self.name, &topic.config)
    }
}

fn bytes_fingerprint() -> TypeFingerprint {
    TypeFingerprint {
        size: 0,
        align: 1,
        hash: crate::ring::directory::name_hash(b"shmbus::Bytes"),
        name: "bytes",
    }
}

/// A topic's ring, kept valid by the segment it lives in.
pub(crate) struct TopicHandle {
    pub(crate) ring: BroadcastRing<'static>,
    name: String,
    /// Keeps the mapping `ring` points into alive.
    _seg: Arc<Segment>,
}

impl TopicHandle {
    pub(crate) fn new(
        seg: Arc<Segment>,
        name: &str,
        config: &layout::EntryConfig,
    ) -> Result<Self, Error> {
        let corrupt = |what: String| Error::Corrupt {
            bus: seg.bus().to_owned(),
            what: format!("topic {name:?}: {what}"),
        };
        let ctrl_len = core::mem::size_of::<BroadcastCtrl>() as u64;
        let words = ((config.region_len - ctrl_len) / 8) as usize;
        let ctrl: &BroadcastCtrl = seg.view(config.region_offset).map_err(corrupt)?;
        let slots = seg
            .view_slice::<AtomicU64>(config.region_offset + ctrl_len, words)
            .map_err(corrupt)?;
        let ring = BroadcastRing::new(
            ctrl,
            slots,
            config.capacity as usize,
            config.slot_size as usize,
        )
        .map_err(|_| corrupt("ring region does not match its capacity and slot size".into()))?;
        // SAFETY: `ring` borrows the mapping owned by `seg`. We store `seg`
        // beside it, so the mapping outlives every use of `ring` through this
        // handle; the mapping never moves while mapped.
        let ring: BroadcastRing<'static> = unsafe { core::mem::transmute(ring) };
        Ok(TopicHandle {
            ring,
            name: name.to_owned(),
            _seg: seg,
        })
    }
}

/// The one publisher of a broadcast topic. `send` never blocks: the oldest
/// message is overwritten when the ring is full.
///
/// Dropping it releases the lease and wakes sleeping subscribers, who then
/// see [`RecvError::Disconnected`] after reading what is left.
pub struct Publisher<T> {
    topic: TopicHandle,
    next: u64,
    me: Owner,
    _marker: PhantomData<fn(&T)>,
}

impl<T> Publisher<T> {
    fn new(topic: TopicHandle) -> Result<Self, Error> {
        let me = process::current();
        let ctrl = topic.ring.ctrl();
        match ctrl.lease().acquire(me, process::is_alive) {
            Ok(Acquired::Fresh) | Ok(Acquired::TookOver(_)) => {}
            Err(LeaseError::Held(holder)) => {
                return Err(Error::PublisherBusy {
                    topic: topic.name.clone(),
                    holder: format!("{holder:?}"),
                })
            }
        }
        ctrl.mark_published();
        let next = topic.ring.resume_seq();
        Ok(Publisher {
            topic,
            next,
            me,
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

    fn publish(&mut self, bytes: &[u8]) {
        self.topic.ring.publish(self.next, bytes);
        self.next = self.next.wrapping_add(1);
        self.topic.ring.ctrl().wake().notify();
    }
}

impl<T: Message> Publisher<T> {
    /// Publishes `msg`. Never blocks; the only error is reserved for
    /// options that make sending fallible (none in overwrite mode).
    pub fn send(&mut self, msg: &T) -> Result<(), SendError> {
        self.publish(msg.as_bytes());
        Ok(())
    }
}

impl Publisher<Bytes> {
    /// Publishes `bytes`, at most the topic's slot size.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        let max = self.topic.ring.slot_bytes();
        if bytes.len() > max {
            return Err(SendError::TooLarge {
                len: bytes.len(),
                max,
            });
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

/// A subscriber of a broadcast topic. Owns its cursor; shares nothing that
/// it writes.
pub struct Subscriber<T> {
    topic: TopicHandle,
    cursor: u64,
    wait: WaitStrategy,
    check_interval: Duration,
    watch: PublisherWatch,
    stats: SubscriberStats,
    scratch: Vec<u8>,
    _marker: PhantomData<fn() -> T>,
}

/// One look at the ring.
enum Poll {
    Got(usize),
    Empty,
    Failed(RecvError),
}

impl<T> Subscriber<T> {
    fn new(topic: TopicHandle, opts: &TopicBuilder<'_>) -> Self {
        let ring = &topic.ring;
        let head = ring.head();
        let cursor = match opts.start {
            StartAt::Newest => head.saturating_sub(1),
            StartAt::Oldest => head.saturating_sub(ring.capacity()),
            StartAt::Next => head,
        };
        let scratch = vec![0; ring.slot_bytes()];
        Subscriber {
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
            _marker: PhantomData,
        }
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

    fn poll(&mut self, out: &mut [u8]) -> Poll {
        let ring = &self.topic.ring;
        match ring.read(self.cursor, out) {
            Read::Message { len } => {
                self.cursor = self.cursor.wrapping_add(1);
                self.stats.received += 1;
                Poll::Got(len)
            }
            Read::Empty => Poll::Empty,
            Read::Overwritten => {
                let target = ring.lag_target(self.cursor);
                let lost = target.wrapping_sub(self.cursor);
                self.cursor = target;
                self.stats.lagged += lost;
                Poll::Failed(RecvError::Lagged(lost))
            }
            Read::BadLength { .. } => {
                let seq = self.cursor;
                self.cursor = seq.wrapping_add(1);
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
                        alive: process::is_alive(owner),
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
        let polls_before_sleep = self.wait.polls_before_sleep();
        let mut polls: u32 = 0;
        let backoff = crossbeam_utils::Backoff::new();
        loop {
            match self.poll(out) {
                Poll::Got(len) => return Ok(len),
                Poll::Failed(err) => return Err(err.into()),
                Poll::Empty => {}
            }
            // Checks that read the clock or /proc: now and then while
            // polling, and after every sleep.
            if polls % 1024 == 0 {
                if self.disconnected() {
                    return Err(RecvTimeoutError::Disconnected);
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(RecvTimeoutError::Timeout);
                }
            }
            polls = polls.wrapping_add(1);
            match polls_before_sleep {
                None if self.wait == WaitStrategy::Yield => backoff.snooze(),
                Some(limit) if polls > limit => {
                    self.sleep(deadline);
                    polls = 0;
                }
                _ => spin_hint(),
            }
        }
    }

    fn sleep(&mut self, deadline: Option<Instant>) {
        let mut timeout = self.check_interval;
        if let Some(deadline) = deadline {
            timeout = timeout.min(deadline.saturating_duration_since(Instant::now()));
        }
        let ring = &self.topic.ring;
        let ctrl = ring.ctrl();
        let cursor = self.cursor;
        let ready =
            || ring.ready(cursor) || (ctrl.lease().holder().is_none() && ctrl.had_publisher());
        let outcome = ctrl.wake().sleep_unless(ready, Some(timeout));
        match outcome {
            Wake::Ready => {}
            Wake::Woken => self.stats.sleeps += 1,
            Wake::TimedOut => {
                self.stats.sleeps += 1;
                self.stats.sleep_timeouts += 1;
                // Force a liveness check on the next round.
                self.watch.owner = None;
            }
        }
    }
}

impl<T: Message> Subscriber<T> {
    /// Receives the next message, waiting as the wait strategy says.
    pub fn recv(&mut self) -> Result<T, RecvError> {
        self.recv_typed(None).map_err(|err| match err {
            RecvTimeoutError::Timeout => unreachable!("no deadline, no timeout"),
            RecvTimeoutError::Lagged(n) => RecvError::Lagged(n),
            RecvTimeoutError::Disconnected => RecvError::Disconnected,
            RecvTimeoutError::Corrupt { seq } => RecvError::Corrupt { seq },
        })
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
        match self.recv_bytes_deadline(None) {
            Ok(len) => Ok(&self.scratch[..len]),
            Err(RecvTimeoutError::Timeout) => unreachable!("no deadline, no timeout"),
            Err(RecvTimeoutError::Lagged(n)) => Err(RecvError::Lagged(n)),
            Err(RecvTimeoutError::Disconnected) => Err(RecvError::Disconnected),
            Err(RecvTimeoutError::Corrupt { seq }) => Err(RecvError::Corrupt { seq }),
        }
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

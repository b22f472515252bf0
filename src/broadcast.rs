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
//! A subscriber whose process is known dead is evicted when the publisher
//! finds it holding it back (within the liveness check interval), so the
//! publisher never waits on a corpse; evictions are counted
//! ([`Publisher::evictions`]). Only a process known dead is evicted; one
//! whose liveness cannot be told is waited for. A subscriber that finds its
//! entry taken from it anyway (the entry was overwritten, or it was made
//! before `fork()` in a parent) gets
//! [`RecvError::Evicted`](crate::RecvError::Evicted) and never writes its
//! cursor again. At most `max_subscribers` subscribers attach at once; one
//! more gets [`Error::TooManySubscribers`](crate::Error::TooManySubscribers),
//! after the entries of subscribers known dead are taken back. Because no
//! one overwrites an unread message, a lossless subscriber may read in place
//! with [`Subscriber::recv_ref`] (zero copy). A lossless subscriber never
//! sees `Lagged` (unless the segment is corrupted under it: then the loss
//! is counted, as in overwrite mode). Each receive costs a lossless
//! subscriber one store to its
//! own cursor line and a wakeup check for the publisher.
//!
//! # Publisher lease and disconnection
//!
//! A topic has one publisher at a time. It holds a lease recorded in the
//! segment as its process-table token (see the crate docs on liveness). A
//! second publisher while the first lives gets
//! [`Error::PublisherBusy`](crate::Error::PublisherBusy). When the holder's
//! process is known dead (even by `kill -9`), a new publisher takes the
//! lease over and continues the sequence where the dead one stopped. The
//! publisher checks before every send that it still holds the lease; one
//! that lost it gets [`SendError::LeaseLost`](crate::SendError::LeaseLost)
//! and writes nothing more.
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
use crate::handle::Handle;
use crate::message::{Bytes, Message};
use crate::process;
use crate::ring::broadcast::Read;
use crate::ring::gate::{Gate, GateCache, GatedRead};
use crate::ring::lease::LeaseError;
use crate::ring::Owner;
use crate::segment::views::BroadcastView;
use crate::wait::{deadline_after, Pacer, Waited, Waiter, Wake};

pub use crate::ring::broadcast::StartAt;

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
    topic: Handle<BroadcastView>,
    next: u64,
    /// Lossless: what we last learnt from the subscriber table.
    gate_cache: GateCache,
    /// Lossless: paces the liveness checks of subscribers that hold us back.
    pacer: Pacer,
    _marker: PhantomData<fn(&T)>,
}

/// Why a publish could not go ahead.
enum Blocked {
    Full,
    LeaseLost,
}

impl From<Blocked> for SendError {
    /// A send without a deadline only ever fails for the lease: it waits
    /// for room.
    fn from(blocked: Blocked) -> Self {
        match blocked {
            Blocked::LeaseLost => SendError::LeaseLost,
            Blocked::Full => unreachable!("a send without a deadline waits for room"),
        }
    }
}

impl From<Blocked> for TrySendError {
    fn from(blocked: Blocked) -> Self {
        match blocked {
            Blocked::Full => TrySendError::Full,
            Blocked::LeaseLost => TrySendError::LeaseLost,
        }
    }
}

impl<T> Publisher<T> {
    pub(crate) fn new(topic: Handle<BroadcastView>) -> Result<Self, Error> {
        let ring = topic.view.ring();
        let lease = ring.ctrl().lease();
        if let Err(LeaseError::Held(holder)) = lease.acquire(topic.me, |o| topic.liveness(o)) {
            return Err(Error::PublisherBusy {
                topic: topic.name.clone(),
                holder: topic.view.seg().describe(holder),
            });
        }
        ring.ctrl().mark_published();
        let next = ring.resume_seq();
        let pacer = Pacer::new(topic.opts.check_interval);
        Ok(Publisher {
            topic,
            next,
            gate_cache: GateCache::default(),
            pacer,
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
        self.topic.view.ring().capacity()
    }

    /// Whether the topic is in lossless mode.
    pub fn is_lossless(&self) -> bool {
        self.topic.view.gate().is_some()
    }

    /// Lossless mode: subscribers evicted so far because their process died.
    pub fn evictions(&self) -> u64 {
        self.topic.view.gate().map_or(0, |g| g.ctrl().evictions())
    }

    /// Whether this publisher still holds the lease, in the process that
    /// made it: one load of a line nobody writes while it holds.
    #[inline]
    fn holds_lease(&self) -> bool {
        self.topic.in_own_process() && self.topic.view.ring().ctrl().lease().held_by(self.topic.me)
    }

    /// Whether message `next` may be written now: in lossless mode, the
    /// gate has room (evicting subscribers known dead when a liveness check
    /// is due). The lease is checked where it matters, right before the
    /// write (`publish`), and by a publisher that waits.
    #[inline]
    fn room(&mut self) -> Result<(), Blocked> {
        let Some(gate) = self.topic.view.gate() else {
            return Ok(());
        };
        let capacity = self.topic.view.ring().capacity();
        if self.gate_cache.has_space(gate, self.next, capacity) {
            return Ok(());
        }
        self.room_slow()
    }

    /// `room` found no room (it has just rescanned the subscriber table):
    /// checks the lease, and now and then whether a subscriber holding us
    /// back is dead (`Pacer::due_polled`: a blocked publisher spinning here
    /// reads the clock once in 64 calls).
    #[cold]
    fn room_slow(&mut self) -> Result<(), Blocked> {
        if !self.holds_lease() {
            return Err(Blocked::LeaseLost);
        }
        if !self.pacer.due_polled() {
            return Err(Blocked::Full);
        }
        let topic = &self.topic;
        let gate = topic.view.gate().expect("only lossless topics are gated");
        let capacity = topic.view.ring().capacity();
        let mut liveness = |owner| topic.liveness(owner);
        if gate.make_room(
            &mut self.gate_cache,
            self.next,
            capacity,
            Some(&mut liveness),
        ) {
            Ok(())
        } else {
            Err(Blocked::Full)
        }
    }

    /// Waits until `room`, evicting dead subscribers that hold us back.
    /// Returns `Full` if `deadline` passed first.
    fn wait_for_room(&mut self, deadline: Option<Instant>) -> Result<(), Blocked> {
        let mut waiter = Waiter::new(self.topic.opts.wait, self.topic.opts.check_interval);
        // Each look at the gate reads the subscribers' cursor lines, which
        // they write at every read: a publisher that looks too often slows
        // the very subscriber it waits for. Back off between looks
        // (exponentially, a few dozen spins at most).
        let backoff = crossbeam_utils::Backoff::new();
        loop {
            match self.room() {
                Err(Blocked::Full) => backoff.spin(),
                done => return done,
            }
            let (next, ring) = (self.next, self.topic.view.ring());
            let gate = self.topic.view.gate().expect("only lossless topics wait");
            let capacity = ring.capacity();
            let space = || {
                gate.min_cursor_before(next, capacity)
                    .is_none_or(|min| next < min.saturating_add(capacity))
            };
            match waiter.wait_once(gate.ctrl().space(), space, deadline) {
                Waited::Deadline => return Err(Blocked::Full),
                Waited::Slept(Wake::TimedOut) => self.pacer.expire(),
                Waited::Slept(_) => self.pacer.woke(),
                Waited::Polled => {}
            }
        }
    }

    /// Writes message `next`, unless this publisher lost the lease (or is
    /// a copy inherited through `fork()`): then nothing is written.
    #[inline]
    fn publish(&mut self, bytes: &[u8]) -> Result<(), Blocked> {
        let ring = self.topic.view.ring();
        if !self.topic.in_own_process() || !ring.publish_as(self.topic.me, self.next, bytes) {
            return Err(Blocked::LeaseLost);
        }
        self.next = self.next.wrapping_add(1);
        ring.ctrl().wake().notify();
        Ok(())
    }

    #[inline]
    fn send_raw(&mut self, bytes: &[u8], deadline: Option<Instant>) -> Result<(), Blocked> {
        match self.room() {
            Ok(()) => {}
            Err(Blocked::Full) => self.wait_for_room(deadline)?,
            Err(lost) => return Err(lost),
        }
        self.publish(bytes)
    }
}

impl<T: Message> Publisher<T> {
    /// Publishes `msg`. In overwrite mode never blocks; in lossless mode
    /// waits for room.
    ///
    /// # Errors
    ///
    /// [`SendError::LeaseLost`] if this publisher no longer holds the
    /// topic's lease (nothing is sent).
    #[inline]
    pub fn send(&mut self, msg: &T) -> Result<(), SendError> {
        self.send_raw(msg.as_bytes(), None).map_err(SendError::from)
    }

    /// Publishes `msg` if there is room now (always, in overwrite mode).
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] when the slowest lossless subscriber holds the
    /// slot back; [`TrySendError::LeaseLost`] as for [`send`](Self::send).
    pub fn try_send(&mut self, msg: &T) -> Result<(), TrySendError> {
        self.room()?;
        Ok(self.publish(msg.as_bytes())?)
    }

    /// Publishes `msg`, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// As [`try_send`](Self::try_send), `Full` once the timeout passed.
    pub fn send_timeout(&mut self, msg: &T, timeout: Duration) -> Result<(), TrySendError> {
        self.send_raw(msg.as_bytes(), deadline_after(timeout))
            .map_err(TrySendError::from)
    }
}

impl Publisher<Bytes> {
    fn check_len(&self, bytes: &[u8]) -> Result<(), (usize, usize)> {
        let max = self.topic.view.ring().slot_bytes();
        if bytes.len() > max {
            return Err((bytes.len(), max));
        }
        Ok(())
    }

    /// Publishes `bytes`, at most the topic's slot size. Waits for room in
    /// lossless mode.
    ///
    /// # Errors
    ///
    /// [`SendError::TooLarge`] for a message over the slot size,
    /// [`SendError::LeaseLost`] as for [`Publisher::send`].
    pub fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        self.check_len(bytes)
            .map_err(|(len, max)| SendError::TooLarge { len, max })?;
        self.send_raw(bytes, None).map_err(SendError::from)
    }

    /// Publishes `bytes` if there is room now.
    ///
    /// # Errors
    ///
    /// As [`send_bytes`](Self::send_bytes), and [`TrySendError::Full`].
    pub fn try_send_bytes(&mut self, bytes: &[u8]) -> Result<(), TrySendError> {
        self.check_len(bytes)
            .map_err(|(len, max)| TrySendError::TooLarge { len, max })?;
        self.room()?;
        Ok(self.publish(bytes)?)
    }

    /// Largest message this topic takes.
    pub fn max_message_len(&self) -> usize {
        self.topic.view.ring().slot_bytes()
    }
}

impl<T> Drop for Publisher<T> {
    fn drop(&mut self) {
        if !self.topic.in_own_process() {
            return; // a copy inherited through fork(): the lease is the parent's
        }
        let ctrl = self.topic.view.ring().ctrl();
        ctrl.lease().release(self.topic.me);
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
    /// Known dead (unknown counts as alive).
    dead: bool,
    pacer: Pacer,
}

/// A subscriber of a broadcast topic. In overwrite mode it shares nothing
/// that it writes; in lossless mode it publishes its cursor in its entry of
/// the subscriber table.
pub struct Subscriber<T> {
    topic: Handle<BroadcastView>,
    cursor: u64,
    watch: PublisherWatch,
    stats: SubscriberStats,
    scratch: Vec<u8>,
    /// Lossless mode: our entry in the subscriber table.
    gate_entry: Option<usize>,
    _marker: PhantomData<fn() -> T>,
}

/// One look at the ring.
enum Poll {
    Got(usize),
    Empty,
    Failed(RecvError),
}

impl<T> Subscriber<T> {
    pub(crate) fn new(topic: Handle<BroadcastView>) -> Result<Self, Error> {
        let ring = topic.view.ring();
        let start = topic.opts.start;
        let (cursor, gate_entry) = match topic.view.gate() {
            None => (start.cursor(ring.head(), ring.capacity()), None),
            Some(gate) => {
                let attached = gate
                    .attach(ring, topic.me, start, |o| topic.liveness(o))
                    .ok_or_else(|| Error::TooManySubscribers {
                        topic: topic.name.clone(),
                        max: gate.entries().len() as u32,
                    })?;
                gate.ctrl().space().notify();
                (attached.cursor, Some(attached.index))
            }
        };
        let scratch = vec![0; ring.slot_bytes()];
        let pacer = Pacer::new(topic.opts.check_interval);
        Ok(Subscriber {
            topic,
            cursor,
            watch: PublisherWatch {
                owner: None,
                dead: false,
                pacer: pacer.clone(),
            },
            stats: SubscriberStats::default(),
            scratch,
            gate_entry,
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

    /// Lossless mode: our gate and entry. `Err(Evicted)` in a child made by
    /// `fork()` since (the entry is the parent's); the gate's own checks
    /// say whether we still hold it.
    #[inline]
    fn gate(&self) -> Result<Option<(&Gate<'_>, usize)>, RecvError> {
        let (Some(gate), Some(index)) = (self.topic.view.gate(), self.gate_entry) else {
            return Ok(None);
        };
        if self.topic.in_own_process() {
            Ok(Some((gate, index)))
        } else {
            Err(RecvError::Evicted)
        }
    }

    /// Moves past message `cursor`, telling the publisher in lossless mode.
    #[inline(always)]
    fn consumed(&mut self) {
        self.cursor = self.cursor.wrapping_add(1);
        self.stats.received += 1;
        if self.gate_entry.is_some() {
            self.publish_cursor();
        }
    }

    #[inline]
    fn publish_cursor(&self) {
        if let Ok(Some((gate, index))) = self.gate() {
            if gate.advance_held(index, self.topic.me, self.cursor) {
                gate.ctrl().space().notify();
            }
        }
    }

    /// One look at the ring. Overwrite mode reads the ring directly (the
    /// hot path of fanout); lossless mode goes through the gate's checks.
    #[inline(always)]
    fn poll(&mut self, out: &mut [u8]) -> Poll {
        if self.gate_entry.is_some() {
            return self.poll_gated(out);
        }
        let read = match self.topic.view.ring().read(self.cursor, out) {
            Read::Message { len } => GatedRead::Message { len },
            Read::Empty => GatedRead::Empty,
            Read::Overwritten => GatedRead::Overwritten,
            Read::BadLength { len } => GatedRead::BadLength { len },
        };
        self.took(read)
    }

    #[inline]
    fn poll_gated(&mut self, out: &mut [u8]) -> Poll {
        let read = match self.gate() {
            Err(evicted) => return Poll::Failed(evicted),
            Ok(None) => unreachable!("poll_gated is for lossless subscribers"),
            Ok(Some((gate, index))) => {
                let ring = self.topic.view.ring();
                gate.read(ring, index, self.topic.me, self.cursor, out)
            }
        };
        if matches!(read, GatedRead::Message { .. }) {
            process::stall_if_hooked("stall-in-lossless-read");
        }
        self.took(read)
    }

    /// Acts on what one look at the ring found.
    #[inline(always)]
    fn took(&mut self, read: GatedRead) -> Poll {
        match read {
            GatedRead::Message { len } => {
                self.consumed();
                Poll::Got(len)
            }
            GatedRead::Empty => Poll::Empty,
            GatedRead::Evicted => Poll::Failed(RecvError::Evicted),
            GatedRead::Overwritten => {
                let target = self.topic.view.ring().lag_target(self.cursor);
                let lost = target.wrapping_sub(self.cursor);
                self.cursor = target;
                self.stats.lagged = self.stats.lagged.wrapping_add(lost);
                self.publish_cursor();
                Poll::Failed(RecvError::Lagged(lost))
            }
            GatedRead::BadLength { .. } => {
                let seq = self.cursor;
                self.consumed();
                self.stats.received -= 1;
                self.stats.corrupt += 1;
                Poll::Failed(RecvError::Corrupt { seq })
            }
        }
    }

    /// Undoes what a corrupt word can leave an idle subscriber stuck on (it
    /// runs with the paced liveness check of `disconnected`): a cursor
    /// ahead of anything published
    /// (a `head` that was garbage when it started or lagged) goes back to
    /// `head`, counted as corrupt; and in lossless mode our cursor is stored
    /// again (one overwritten with a lower value would hold the publisher
    /// back for good, and it only stores it when it reads).
    fn repair(&mut self) {
        let head = self.topic.view.ring().head();
        if self.cursor > head.saturating_add(1) {
            self.cursor = head;
            self.stats.corrupt += 1;
        }
        self.publish_cursor();
    }

    /// Whether the publisher is gone and nothing is left to read. Checks
    /// the publisher's liveness at most once per check interval.
    fn disconnected(&mut self) -> bool {
        let holder = self.topic.view.ring().ctrl().lease().holder();
        if holder.is_some() && self.watch.owner != holder {
            self.watch.owner = holder;
            self.watch.pacer.expire();
        }
        // One clock read decides both slow checks.
        let due = self.watch.pacer.due();
        if due {
            self.repair();
        }
        let ring = self.topic.view.ring();
        let ctrl = ring.ctrl();
        let gone = match holder {
            None => ctrl.had_publisher(),
            Some(owner) => {
                if due {
                    self.watch.dead = self.topic.liveness(owner).is_dead();
                }
                self.watch.dead
            }
        };
        // The publisher may have sent more between our last read and going
        // away: only report Disconnected once that is read too.
        gone && !ring.ready(self.cursor)
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
        let mut waiter = Waiter::new(self.topic.opts.wait, self.topic.opts.check_interval);
        loop {
            match attempt(self) {
                Poll::Got(len) => return Ok(R::from(len)),
                Poll::Failed(err) => return Err(err.into()),
                Poll::Empty => {}
            }
            if waiter.checks_due() && self.disconnected() {
                return Err(RecvTimeoutError::Disconnected);
            }
            let ring = self.topic.view.ring();
            let (ctrl, cursor) = (ring.ctrl(), self.cursor);
            let ready =
                || ring.ready(cursor) || (ctrl.lease().holder().is_none() && ctrl.had_publisher());
            match waiter.wait_once(ctrl.wake(), ready, deadline) {
                Waited::Deadline => return Err(RecvTimeoutError::Timeout),
                Waited::Slept(Wake::Woken) => self.stats.sleeps += 1,
                Waited::Slept(Wake::TimedOut) => {
                    self.stats.sleeps += 1;
                    self.stats.sleep_timeouts += 1;
                    // The publisher may have died: look at once.
                    self.watch.pacer.expire();
                }
                Waited::Slept(Wake::Ready) | Waited::Polled => {}
            }
        }
    }
}

impl<T> Drop for Subscriber<T> {
    fn drop(&mut self) {
        if !self.topic.in_own_process() {
            return; // inherited through fork(): the entry is the parent's
        }
        if let (Some(gate), Some(index)) = (self.topic.view.gate(), self.gate_entry) {
            gate.detach(index, self.topic.me);
            gate.ctrl().space().notify();
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
    ///
    /// # Errors
    ///
    /// [`RecvError::Lagged`] (overwrite mode) after messages were lost;
    /// [`RecvError::Disconnected`] once the publisher is gone and all is
    /// read; [`RecvError::Corrupt`] for a corrupt slot (skipped);
    /// [`RecvError::Evicted`] (lossless mode) once this subscriber no
    /// longer holds its entry.
    pub fn recv(&mut self) -> Result<T, RecvError> {
        self.recv_typed(None)
            .map_err(RecvTimeoutError::without_deadline)
    }

    /// Receives the next message, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv), and `Timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.recv_typed(deadline_after(timeout))
    }

    /// Receives the next message if there is one, without waiting.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv), and `Empty`.
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
    ///
    /// # Errors
    ///
    /// [`RecvRefError::NotLossless`] on an overwrite topic; otherwise as
    /// [`recv`](Self::recv).
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
        let ready = self.wait_for::<usize>(None, |sub| match sub.gate() {
            Err(evicted) => Poll::Failed(evicted),
            Ok(Some((gate, index))) if !gate.holds(index, sub.topic.me) => {
                Poll::Failed(RecvError::Evicted)
            }
            _ if sub.topic.view.ring().ready(sub.cursor) => Poll::Got(0),
            _ => Poll::Empty,
        });
        ready.map_err(RecvTimeoutError::without_deadline)?;
        let size = core::mem::size_of::<T>();
        let Some((gate, index)) = self.gate()? else {
            return Err(RecvRefError::NotLossless);
        };
        // Lend only while we gate the publisher (see `Gate::lend`).
        let lent = gate
            .lend(
                self.topic.view.ring(),
                index,
                self.topic.me,
                self.cursor,
                size,
            )
            .map_err(|_| RecvRefError::Recv(RecvError::Evicted))?;
        let Some(words) = lent else {
            // Complete with another length, or overwritten: read it the
            // copying way, which reports exactly what happened.
            let seq = self.cursor;
            let mut scratch = core::mem::take(&mut self.scratch);
            let polled = self.poll(&mut scratch);
            self.scratch = scratch;
            return Err(RecvRefError::Recv(match polled {
                Poll::Failed(err) => err,
                // Read whole, but not `size_of::<T>()` bytes long: corrupt
                // for this type, and skipped.
                Poll::Got(_) => {
                    self.stats.received -= 1;
                    self.stats.corrupt += 1;
                    RecvError::Corrupt { seq }
                }
                // Ready a moment ago and not now: its stamp changed under
                // us, which only a corrupting write does.
                Poll::Empty => RecvError::Corrupt { seq },
            }));
        };
        // SAFETY: the payload starts 16 bytes into a 64-byte-aligned slot, so
        // it is aligned for T (align <= 16, asserted above), and holds
        // `size_of::<T>()` bytes (the slot is at least that large: the topic's
        // slot size is T's size). Any bytes are a valid T (FromBytes). No one
        // writes them while the guard lives: in lossless mode the publisher
        // may not write message `cursor + capacity` into this slot until our
        // cursor, published in the subscriber table (which we hold, checked
        // above), passes `cursor`, which happens only when the guard drops.
        // The Acquire load of the complete stamp in `payload_if_complete`
        // orders the publisher's payload stores before our reads.
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
    ///
    /// # Errors
    ///
    /// As [`Subscriber::recv`].
    pub fn recv_bytes(&mut self) -> Result<&[u8], RecvError> {
        let len = self
            .recv_bytes_deadline(None)
            .map_err(RecvTimeoutError::without_deadline)?;
        Ok(&self.scratch[..len])
    }

    /// Receives the next message, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`Subscriber::recv_timeout`].
    pub fn recv_bytes_timeout(&mut self, timeout: Duration) -> Result<&[u8], RecvTimeoutError> {
        let len = self.recv_bytes_deadline(deadline_after(timeout))?;
        Ok(&self.scratch[..len])
    }

    /// Receives the next message if there is one, without waiting.
    ///
    /// # Errors
    ///
    /// As [`Subscriber::try_recv`].
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
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl<T> std::fmt::Debug for Subscriber<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("topic", &self.topic.name)
            .field("next_seq", &self.cursor)
            .field("wait", &self.topic.opts.wait)
            .field("stats", &self.stats)
            .finish()
    }
}

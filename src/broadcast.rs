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
//! the ring still holds (or the newest, for a subscriber made with
//! [`LagPolicy::Newest`], `n` then counting all it passed over). A reader
//! that wants the latest state rather than the backlog may also jump there
//! at any time with [`Subscriber::skip_to_newest`]. Over a subscriber's
//! life, messages received, plus the sum of all `Lagged(n)`, plus those
//! skipped and those corrupt ([`SubscriberStats`]) equal messages
//! published since it started. Subscribers write nothing shared, so a slow
//! one costs the publisher and the others nothing.
//!
//! # Lossless mode
//!
//! A topic created with [`TopicBuilder::lossless(max_subscribers)`](crate::TopicBuilder::lossless)
//! never overwrites a message an attached subscriber has not read: each
//! subscriber publishes its cursor in a subscriber table in the segment, and
//! the publisher waits for the slowest one ([`Publisher::send`] blocks,
//! [`Publisher::try_send`] returns [`TrySendError::Full`]).
//! A subscriber whose process is known dead is evicted when the publisher
//! finds it holding it back (within the liveness check interval), so the
//! publisher never waits on a corpse; evictions are counted
//! ([`Publisher::evictions`]). Only a process known dead is evicted; one
//! whose liveness cannot be told is waited for. A subscriber that finds its
//! entry taken from it anyway (the entry was overwritten, or it was made
//! before `fork()` in a parent) gets
//! [`RecvError::Evicted`] and never writes its
//! cursor again. At most `max_subscribers` subscribers attach at once; one
//! more gets [`Error::TooManySubscribers`],
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
//! [`Error::PublisherBusy`]. When the holder's
//! process is known dead (even by `kill -9`), a new publisher takes the
//! lease over and continues the sequence where the dead one stopped. The
//! publisher checks before every send that it still holds the lease; one
//! that lost it gets [`SendError::LeaseLost`]
//! and writes nothing more.
//!
//! Once the publisher is gone (dropped, or its process dead) and every
//! message it sent has been read, receives return
//! [`RecvError::Disconnected`]. A dead publisher
//! is noticed within the subscriber's `liveness_check_interval` (default
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

use crate::clock::Clock;
use crate::doorbell::{Doorbell, Words};
use crate::error::{
    Error, LoanRangeError, RecvError, RecvRefError, RecvTimeoutError, SendError, SendTimeoutError,
    TryRecvError, TrySendError,
};
use crate::handle::Handle;
use crate::message::{Bytes, Message};
use crate::process;
use crate::ring::broadcast::{PublisherState, Read};
use crate::ring::gate::{Gate, GateCache, GatedRead};
use crate::ring::lease::LeaseError;
use crate::ring::load_bytes;
use crate::ring::Owner;
use crate::ring::{store_bytes, store_bytes_at};
use crate::segment::views::BroadcastView;
use crate::sync::AtomicU64;
use crate::sync::{heavy_fence, register_light};
use crate::transport::frame::Header;
use crate::transport::pipe::{Next, Pacing, Pause, PipeRx, PipeTx};
use crate::transport::PipeBus;
use crate::wait::{deadline_after, LightWaker, Pacer, Waited, Waiter, Wake};
use std::sync::Arc;

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
    /// Whether the wakeup check after each message fences (see "Light
    /// writers" in `crate::wait`).
    waker: LightWaker,
    /// Lossless: the length of the message last refused for want of room
    /// (an async send waits for room for it).
    wanted: usize,
    /// A bus on pipes: the subscribers' FIFOs, written instead of the ring
    /// (which then only holds loans). See `crate::transport::pipe`.
    pipe: Option<Box<PipeTx>>,
    _marker: PhantomData<fn(&T)>,
}

/// Why a publish could not go ahead.
enum Blocked {
    /// No room (lossless), and no more waiting allowed.
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

impl From<Blocked> for SendTimeoutError {
    fn from(blocked: Blocked) -> Self {
        match blocked {
            Blocked::Full => SendTimeoutError::Timeout,
            Blocked::LeaseLost => SendTimeoutError::LeaseLost,
        }
    }
}

/// Whether message `next` of a lossless ring of `capacity` would overwrite
/// no attached subscriber's unread message, by a fresh scan of the
/// subscriber table (the test made after announcing a sleep for room).
fn has_room(gate: &Gate<'_>, next: u64, capacity: u64) -> bool {
    gate.min_cursor_before(next, capacity)
        .is_none_or(|min| next < min.saturating_add(capacity))
}

impl<T> Publisher<T> {
    pub(crate) fn new(
        topic: Handle<BroadcastView>,
        pipe_bus: Option<&Arc<PipeBus>>,
    ) -> Result<Self, Error> {
        let ring = topic.view.ring();
        let lease = ring.ctrl().lease();
        if let Err(LeaseError::Held(holder)) = lease.acquire(topic.me, |o| topic.liveness(o)) {
            return Err(Error::PublisherBusy {
                topic: topic.name.clone(),
                holder: topic.view.seg().describe(holder),
            });
        }
        let pipe = match pipe_bus {
            Some(bus) => {
                let opened = PipeTx::open(
                    Arc::clone(bus),
                    &topic.name,
                    ring.capacity() as usize,
                    ring.var().map(|_| 2 * ring.max_message()),
                    topic.opts.check_interval,
                );
                match opened {
                    Ok(pipe) => Some(Box::new(pipe)),
                    Err(err) => {
                        lease.release(topic.me);
                        return Err(err);
                    }
                }
            }
            None => None,
        };
        ring.ctrl().mark_published();
        let next = match &pipe {
            Some(pipe) => pipe.resume(),
            None => ring.resume_seq(),
        };
        let pacer = Pacer::new(topic.opts.check_interval);
        let mut waker = LightWaker::new(register_light());
        // A light publisher that died leaves `LIGHT` set: we hold the lease
        // now, so we are the only writer, and we start heavy.
        ring.ctrl().wake().go_heavy(&mut waker);
        Ok(Publisher {
            topic,
            next,
            gate_cache: GateCache::default(),
            pacer,
            waker,
            wanted: 0,
            pipe,
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
        if let Some(pipe) = &self.pipe {
            return pipe.evictions();
        }
        self.topic.view.gate().map_or(0, |g| g.ctrl().evictions())
    }

    /// How many subscribers are attached, as tokio's `receiver_count`:
    /// in lossless mode, the entries of the subscriber table held by
    /// processes not known dead (one whose liveness cannot be told counts).
    /// `None` in overwrite mode, whose subscribers are not registered
    /// anywhere (they write nothing shared, which is what makes them free
    /// for the publisher), so their number is unknown.
    ///
    /// Costs a liveness probe (one `fcntl`) per attached subscriber.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-rc-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let tx = bus.topic("t").lossless(4).publisher::<u64>()?;
    /// assert_eq!(tx.receiver_count(), Some(0));
    /// let rx = bus.topic("t").subscriber::<u64>()?;
    /// assert_eq!(tx.receiver_count(), Some(1));
    /// drop(rx);
    /// assert_eq!(tx.receiver_count(), Some(0));
    /// # drop((tx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    pub fn receiver_count(&self) -> Option<usize> {
        if let Some(pipe) = &self.pipe {
            // On pipes every subscriber has a record: they can be counted.
            return Some(pipe.receiver_count());
        }
        let gate = self.topic.view.gate()?;
        Some(
            gate.entries()
                .iter()
                .filter_map(|entry| entry.owner())
                .filter(|&owner| !self.topic.liveness(owner).is_dead())
                .count(),
        )
    }

    /// Whether no subscriber can ever receive what this publisher sends:
    /// the bus was removed (its name no longer leads to this segment, so
    /// no process can open it and subscribe) and, in lossless mode, no
    /// subscriber is attached. Always `false` in overwrite mode, whose
    /// subscribers cannot be counted ([`receiver_count`](Self::receiver_count)).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-ab-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let tx = bus.topic("t").lossless(4).publisher::<u64>()?;
    /// assert!(!tx.is_abandoned());
    /// shmbus::Bus::remove(&name)?;
    /// assert!(tx.is_abandoned());
    /// # Ok(()) }
    /// ```
    pub fn is_abandoned(&self) -> bool {
        if let Some(pipe) = &self.pipe {
            return pipe.is_abandoned();
        }
        self.receiver_count() == Some(0) && self.topic.view.seg().is_removed()
    }

    /// Whether this publisher still holds the lease, in the process that
    /// made it: one load of a line nobody writes while it holds.
    #[inline]
    fn holds_lease(&self) -> bool {
        self.topic.in_own_process() && self.topic.view.ring().ctrl().lease().held_by(self.topic.me)
    }

    /// Whether message `next`, of `len` bytes, may be written now: in
    /// lossless mode, the gate has room (evicting subscribers known dead
    /// when a liveness check is due), and in a variable-size topic the
    /// arena too. The lease is checked where it matters, right before the
    /// write (`publish`), and by a publisher that waits.
    #[inline(always)]
    fn room(&mut self, len: usize) -> Result<(), Blocked> {
        let Some(gate) = self.topic.view.gate() else {
            return Ok(());
        };
        let ring = self.topic.view.ring();
        let capacity = ring.capacity();
        if self.gate_cache.has_space(gate, self.next, capacity)
            && (ring.var().is_none() || self.arena_room(gate, len))
        {
            return Ok(());
        }
        self.room_slow(len)
    }

    /// Variable-size, lossless, with a free descriptor (the gate cache
    /// holds the slowest cursor it just checked): whether message `next`
    /// leaves the slowest subscriber's unread bytes alone. First against
    /// the cached slowest cursor (stale means lower, the cautious side),
    /// then by a fresh scan of the table.
    #[inline]
    fn arena_room(&self, gate: &Gate<'_>, len: usize) -> bool {
        let ring = self.topic.view.ring();
        let slowest = self.gate_cache.slowest(ring.capacity());
        ring.arena_room(self.next, len, slowest) || ring.arena_room_in(gate, self.next, len)
    }

    /// `room` found no room (it has just rescanned the subscriber table):
    /// checks the lease, and now and then whether a subscriber holding us
    /// back is dead (`Pacer::due_polled`: a blocked publisher spinning here
    /// reads the clock once in 64 calls).
    #[cold]
    fn room_slow(&mut self, len: usize) -> Result<(), Blocked> {
        self.wanted = len;
        if !self.holds_lease() {
            return Err(Blocked::LeaseLost);
        }
        if !self.pacer.due_polled() {
            return Err(Blocked::Full);
        }
        let topic = &self.topic;
        let gate = topic.view.gate().expect("only lossless topics are gated");
        let ring = topic.view.ring();
        let capacity = ring.capacity();
        let mut liveness = |owner| topic.liveness(owner);
        let room = if ring.var().is_none() {
            gate.make_room(
                &mut self.gate_cache,
                self.next,
                capacity,
                Some(&mut liveness),
            )
        } else {
            // The arena may be what is full, with descriptors to spare:
            // evict the dead whichever holds us back.
            if gate.evict_dead(&mut liveness) > 0 {
                self.gate_cache.invalidate();
            }
            self.gate_cache.has_space(gate, self.next, capacity)
                && ring.arena_room_in(gate, self.next, len)
        };
        if room {
            Ok(())
        } else {
            Err(Blocked::Full)
        }
    }

    /// Waits until `room` for a message of `len` bytes, evicting dead
    /// subscribers that hold us back. Returns `Full` if `deadline` passed
    /// first.
    fn wait_for_room(&mut self, deadline: Option<Instant>, len: usize) -> Result<(), Blocked> {
        let mut waiter = Waiter::new(self.topic.opts.wait, self.topic.opts.check_interval);
        // Each look at the gate reads the subscribers' cursor lines, which
        // they write at every read: a publisher that looks too often slows
        // the very subscriber it waits for. Back off between looks
        // (exponentially, a few dozen spins at most).
        let backoff = crossbeam_utils::Backoff::new();
        loop {
            match self.room(len) {
                Err(Blocked::Full) => backoff.spin(),
                done => return done,
            }
            let (next, ring) = (self.next, self.topic.view.ring());
            let gate = self.topic.view.gate().expect("only lossless topics wait");
            let capacity = ring.capacity();
            let space = || has_room(gate, next, capacity) && ring.arena_room_in(gate, next, len);
            match waiter.wait_once(gate.ctrl().space(), space, deadline) {
                Waited::Deadline => return Err(Blocked::Full),
                Waited::Slept(Wake::TimedOut) => self.pacer.expire(),
                Waited::Slept(_) => self.pacer.woke(),
                Waited::Polled => {}
            }
        }
    }

    /// A doorbell that rings when a lossless topic may have room (for
    /// async sends).
    #[cfg(feature = "tokio")]
    pub(crate) fn room_doorbell(&self) -> Result<Doorbell, Error> {
        if self.pipe.is_some() {
            // Any subscriber's FIFO may be what holds us back: the helper
            // sleeps for a short while, then the next `try_` send looks.
            return Doorbell::new(Words::Fd {
                fd: None,
                events: rustix::event::PollFlags::OUT,
                bus: self.topic.view.seg().bus().to_owned(),
            });
        }
        Doorbell::new(Words::Space(self.topic.view.clone()))
    }

    /// After a `try_` send found no room: arms `bell` to ring once the
    /// slowest subscriber has moved on (or at the liveness check interval,
    /// so that the next `try_` send looks for dead subscribers).
    #[cfg(feature = "tokio")]
    pub(crate) fn arm_for_room(&self, bell: &Doorbell) {
        if self.pipe.is_some() {
            bell.arm(|| false, PIPE_ROOM_RETRY);
            return;
        }
        let Some(gate) = self.topic.view.gate() else {
            bell.ring(); // an overwrite publisher always has room
            return;
        };
        let (next, ring, len) = (self.next, self.topic.view.ring(), self.wanted);
        let capacity = ring.capacity();
        bell.arm(
            || has_room(gate, next, capacity) && ring.arena_room_in(gate, next, len),
            self.topic.opts.check_interval,
        );
    }

    /// Writes message `next`, unless this publisher lost the lease (or is
    /// a copy inherited through `fork()`): then nothing is written. Returns
    /// the message's sequence number.
    #[inline(always)]
    fn publish(&mut self, bytes: &[u8]) -> Result<u64, Blocked> {
        let ring = self.topic.view.ring();
        let seq = self.next;
        // A copy inherited through fork() never writes: the lease is the
        // parent's.
        let published = self.topic.in_own_process()
            && match self.topic.view.clock() {
                None => ring.publish_as(self.topic.me, seq, bytes),
                Some(clock) => self.publish_stamped(clock, seq, bytes),
            };
        if !published {
            return Err(Blocked::LeaseLost);
        }
        self.next = seq.wrapping_add(1);
        ring.ctrl().wake().notify_as(&mut self.waker);
        Ok(seq)
    }

    /// `publish_as` with a timestamp from `clock`, stored between the
    /// message's begin and its commit.
    #[inline(never)]
    fn publish_stamped(&self, clock: Clock, seq: u64, bytes: &[u8]) -> bool {
        let (ring, view) = (self.topic.view.ring(), &self.topic.view);
        if !ring.ctrl().lease().held_by(self.topic.me) {
            return false;
        }
        let (payload, pos) = ring.begin(seq, bytes.len());
        store_bytes(payload, bytes);
        view.store_time(seq, clock.now_ns());
        ring.commit(seq, pos, bytes.len());
        true
    }

    /// Publishes `bytes`: at once if there is room, else waiting until
    /// `deadline` (`None`: for ever) if `wait`.
    #[inline(always)]
    fn send_raw(
        &mut self,
        bytes: &[u8],
        wait: bool,
        deadline: Option<Instant>,
    ) -> Result<u64, Blocked> {
        if self.pipe.is_some() {
            return self.pipe_send(bytes, wait, deadline);
        }
        match self.room(bytes.len()) {
            Ok(()) => {}
            Err(Blocked::Full) if wait => self.wait_for_room(deadline, bytes.len())?,
            Err(blocked) => return Err(blocked),
        }
        self.publish(bytes)
    }

    /// `send_raw` on a bus on pipes: one frame to every subscriber's FIFO.
    #[cold]
    #[inline(never)]
    fn pipe_send(
        &mut self,
        bytes: &[u8],
        wait: bool,
        deadline: Option<Instant>,
    ) -> Result<u64, Blocked> {
        self.pipe_room(wait, deadline)?;
        let seq = self.next;
        let time = self.topic.view.clock().map(Clock::now_ns);
        if let Some(pipe) = &mut self.pipe {
            pipe.send(seq, bytes, time);
        }
        self.next = seq.wrapping_add(1);
        Ok(seq)
    }

    /// On pipes: whether message `next` may be sent (see
    /// [`PipeTx::room`]), and whether this is the process that holds the
    /// lease (not a child forked since).
    fn pipe_room(&mut self, wait: bool, deadline: Option<Instant>) -> Result<(), Blocked> {
        if !self.topic.in_own_process() {
            return Err(Blocked::LeaseLost);
        }
        match &mut self.pipe {
            Some(pipe) => pipe.room(wait, deadline).map_err(|_| Blocked::Full),
            None => Ok(()),
        }
    }

    /// Loans message `self.next`'s slot for `len` bytes (at most the slot
    /// size: the callers check), after waiting for room as `send` does.
    ///
    /// Always inlined, with the loan's steps (`payload`, `write`,
    /// `write_at`, `commit`): out of line, the guard went through memory
    /// between them in pieces of mismatched sizes, and a 64-byte typed
    /// loan + write + commit took 43 ns against 10 for a `send` (criterion,
    /// `broadcast-64B`, 2026-12-06); inlined, 14.5 ns.
    #[inline(always)]
    fn loan_raw(
        &mut self,
        len: usize,
        wait: bool,
        deadline: Option<Instant>,
    ) -> Result<Loan<'_, T>, Blocked> {
        if self.pipe.is_some() {
            // The ring only holds the loan: its room is the FIFOs'.
            self.pipe_room(wait, deadline)?;
        } else {
            match self.room(len) {
                Ok(()) => {}
                Err(Blocked::Full) if wait => self.wait_for_room(deadline, len)?,
                Err(blocked) => return Err(blocked),
            }
        }
        if !self.holds_lease() {
            return Err(Blocked::LeaseLost);
        }
        let mut loan = Loan {
            seq: self.next,
            len,
            begun: false,
            pos: 0,
            tx: self,
        };
        if loan.tx.topic.view.ring().var().is_some() {
            // A variable-size message reserves its arena words (moves
            // `reserved`, which no stamp guards) right after the lease
            // check, as a send does, not at the first write: a publisher
            // that lost its lease meanwhile must not move the new holder's
            // `reserved` back.
            let _ = loan.payload();
        }
        Ok(loan)
    }
}

impl<T: Message> Publisher<T> {
    /// Publishes `msg` and returns its sequence number. In overwrite mode
    /// never blocks; in lossless mode waits for room (as the topic's
    /// [`WaitStrategy`](crate::WaitStrategy) says).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-send-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut tx = bus.publisher::<u64>("ticks")?;
    /// assert_eq!(tx.send(&10)?, 0);
    /// assert_eq!(tx.send(&11)?, 1);
    /// # drop((tx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SendError::LeaseLost`] if this publisher no longer holds the
    /// topic's lease (nothing is sent).
    #[inline]
    pub fn send(&mut self, msg: &T) -> Result<u64, SendError> {
        Ok(self.send_raw(msg.as_bytes(), true, None)?)
    }

    /// Publishes `msg` if there is room now (always, in overwrite mode),
    /// and returns its sequence number.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-trysend-{}", std::process::id());
    /// use shmbus::TrySendError;
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut tx = bus.topic("t").capacity(2).lossless(1).publisher::<u64>()?;
    /// let _rx = bus.topic("t").subscriber::<u64>()?;   // reads nothing
    /// tx.try_send(&1)?;
    /// tx.try_send(&2)?;
    /// assert_eq!(tx.try_send(&3), Err(TrySendError::Full));
    /// # drop((tx, _rx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] when the slowest lossless subscriber holds the
    /// slot back; [`TrySendError::LeaseLost`] as for [`send`](Self::send).
    #[inline]
    pub fn try_send(&mut self, msg: &T) -> Result<u64, TrySendError> {
        Ok(self.send_raw(msg.as_bytes(), false, None)?)
    }

    /// Publishes `msg`, waiting at most `timeout` for room, and returns its
    /// sequence number.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-sendto-{}", std::process::id());
    /// use shmbus::SendTimeoutError;
    /// use std::time::Duration;
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut tx = bus.topic("t").capacity(1).lossless(1).publisher::<u64>()?;
    /// let _rx = bus.topic("t").subscriber::<u64>()?;   // reads nothing
    /// tx.send_timeout(&1, Duration::from_millis(5))?;
    /// let full = tx.send_timeout(&2, Duration::from_millis(5));
    /// assert_eq!(full, Err(SendTimeoutError::Timeout));
    /// # drop((tx, _rx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SendTimeoutError::Timeout`] if the slowest lossless subscriber
    /// still holds the slot back when the time runs out;
    /// [`SendTimeoutError::LeaseLost`] as for [`send`](Self::send).
    pub fn send_timeout(&mut self, msg: &T, timeout: Duration) -> Result<u64, SendTimeoutError> {
        Ok(self.send_raw(msg.as_bytes(), true, deadline_after(timeout))?)
    }

    /// Publishes `msg`, waiting for room until `deadline`, and returns its
    /// sequence number.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-senddl-{}", std::process::id());
    /// use std::time::{Duration, Instant};
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut tx = bus.publisher::<u64>("t")?;
    /// let seq = tx.send_deadline(&7, Instant::now() + Duration::from_millis(5))?;
    /// assert_eq!(seq, 0);
    /// # drop((tx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`send_timeout`](Self::send_timeout).
    pub fn send_deadline(&mut self, msg: &T, deadline: Instant) -> Result<u64, SendTimeoutError> {
        Ok(self.send_raw(msg.as_bytes(), true, Some(deadline))?)
    }

    /// Loans the next message's slot, to be written in place with
    /// [`Loan::write`] or field by field with [`Loan::write_at`], and
    /// published with [`Loan::commit`]: no message built on the stack and
    /// copied (for large `T`). Waits for room in lossless mode, as
    /// [`send`](Self::send) does. Nothing is visible to subscribers until
    /// the commit; a loan dropped without one publishes nothing (the next
    /// message takes its sequence number).
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    #[inline(always)]
    pub fn loan(&mut self) -> Result<Loan<'_, T>, SendError> {
        Ok(self.loan_raw(core::mem::size_of::<T>(), true, None)?)
    }

    /// As [`loan`](Self::loan), if there is room now.
    ///
    /// # Errors
    ///
    /// As [`try_send`](Self::try_send).
    #[inline(always)]
    pub fn try_loan(&mut self) -> Result<Loan<'_, T>, TrySendError> {
        Ok(self.loan_raw(core::mem::size_of::<T>(), false, None)?)
    }

    /// As [`loan`](Self::loan), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`send_timeout`](Self::send_timeout).
    #[inline(always)]
    pub fn loan_timeout(&mut self, timeout: Duration) -> Result<Loan<'_, T>, SendTimeoutError> {
        Ok(self.loan_raw(core::mem::size_of::<T>(), true, deadline_after(timeout))?)
    }
}

impl Publisher<Bytes> {
    #[inline(always)]
    fn check_len(&self, bytes: &[u8]) -> Result<(), SendError> {
        let max = self.topic.view.ring().max_message();
        if bytes.len() > max {
            return Err(SendError::TooLarge {
                len: bytes.len(),
                max,
            });
        }
        Ok(())
    }

    /// Publishes `bytes`, at most the topic's slot size, and returns its
    /// sequence number. Waits for room in lossless mode.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-sendb-{}", std::process::id());
    /// use shmbus::SendError;
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut tx = bus.topic("log").slot_size(8).publisher_bytes()?;
    /// assert_eq!(tx.send_bytes(b"hello")?, 0);
    /// assert_eq!(
    ///     tx.send_bytes(b"far too long"),
    ///     Err(SendError::TooLarge { len: 12, max: 8 })
    /// );
    /// # drop((tx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SendError::TooLarge`] for a message over the slot size,
    /// [`SendError::LeaseLost`] as for [`Publisher::send`].
    #[inline]
    pub fn send_bytes(&mut self, bytes: &[u8]) -> Result<u64, SendError> {
        self.check_len(bytes)?;
        Ok(self.send_raw(bytes, true, None)?)
    }

    /// Publishes `bytes` if there is room now.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-trysendb-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut tx = bus.topic("log").publisher_bytes()?;
    /// assert_eq!(tx.try_send_bytes(b"hello")?, 0);
    /// # drop((tx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`send_bytes`](Self::send_bytes), and [`TrySendError::Full`].
    #[inline]
    pub fn try_send_bytes(&mut self, bytes: &[u8]) -> Result<u64, TrySendError> {
        self.check_len(bytes)?;
        Ok(self.send_raw(bytes, false, None)?)
    }

    /// Publishes `bytes`, waiting at most `timeout` for room.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-sendbto-{}", std::process::id());
    /// use std::time::Duration;
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut tx = bus.topic("log").publisher_bytes()?;
    /// tx.send_bytes_timeout(b"hello", Duration::from_millis(5))?;
    /// # drop((tx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`send_bytes`](Self::send_bytes), and
    /// [`SendTimeoutError::Timeout`].
    pub fn send_bytes_timeout(
        &mut self,
        bytes: &[u8],
        timeout: Duration,
    ) -> Result<u64, SendTimeoutError> {
        self.check_len(bytes)?;
        Ok(self.send_raw(bytes, true, deadline_after(timeout))?)
    }

    /// Publishes `bytes`, waiting for room until `deadline`.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-sendbdl-{}", std::process::id());
    /// use std::time::{Duration, Instant};
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut tx = bus.topic("log").publisher_bytes()?;
    /// tx.send_bytes_deadline(b"hello", Instant::now() + Duration::from_millis(5))?;
    /// # drop((tx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`send_bytes_timeout`](Self::send_bytes_timeout).
    pub fn send_bytes_deadline(
        &mut self,
        bytes: &[u8],
        deadline: Instant,
    ) -> Result<u64, SendTimeoutError> {
        self.check_len(bytes)?;
        Ok(self.send_raw(bytes, true, Some(deadline))?)
    }

    /// Largest message this topic takes.
    pub fn max_message_len(&self) -> usize {
        self.topic.view.ring().max_message()
    }

    /// Loans the next message's slot, `len` bytes, to be written in place
    /// (no buffer of the caller's, no copy at send) and published with
    /// [`LoanBytes::commit`]. Waits for room in lossless mode, as
    /// [`send_bytes`](Self::send_bytes) does. Nothing is visible to
    /// subscribers until the commit; a loan dropped without one publishes
    /// nothing (the next message takes its sequence number).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-loan-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut tx = bus.topic("frames").slot_size(4096).publisher_bytes()?;
    /// let mut rx = bus.topic("frames").start_at(shmbus::StartAt::Next).subscriber_bytes()?;
    /// let mut frame = tx.loan_bytes(12)?;
    /// frame.write_at(0, b"head")?;
    /// frame.write_at(4, &7u64.to_le_bytes())?;
    /// assert_eq!(frame.commit()?, 0);
    /// assert_eq!(rx.recv_bytes()?, b"head\x07\0\0\0\0\0\0\0");
    /// # drop((tx, rx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`send_bytes`](Self::send_bytes).
    #[inline(always)]
    pub fn loan_bytes(&mut self, len: usize) -> Result<LoanBytes<'_>, SendError> {
        self.check_loan_len(len)?;
        Ok(self.loan_raw(len, true, None)?)
    }

    /// As [`loan_bytes`](Self::loan_bytes), if there is room now.
    ///
    /// # Errors
    ///
    /// As [`try_send_bytes`](Self::try_send_bytes).
    #[inline(always)]
    pub fn try_loan_bytes(&mut self, len: usize) -> Result<LoanBytes<'_>, TrySendError> {
        self.check_loan_len(len)?;
        Ok(self.loan_raw(len, false, None)?)
    }

    /// As [`loan_bytes`](Self::loan_bytes), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`send_bytes_timeout`](Self::send_bytes_timeout).
    #[inline(always)]
    pub fn loan_bytes_timeout(
        &mut self,
        len: usize,
        timeout: Duration,
    ) -> Result<LoanBytes<'_>, SendTimeoutError> {
        self.check_loan_len(len)?;
        Ok(self.loan_raw(len, true, deadline_after(timeout))?)
    }

    fn check_loan_len(&self, len: usize) -> Result<(), SendError> {
        let max = self.max_message_len();
        if len > max {
            return Err(SendError::TooLarge { len, max });
        }
        Ok(())
    }
}

/// The next message of a topic, being written in place in its slot
/// ([`Publisher::loan`], [`Publisher::loan_bytes`]). Write it with
/// [`write`](Self::write) (typed topics) or [`write_at`](Self::write_at)
/// (any offsets, any order, several times: a typed message field by field
/// with [`core::mem::offset_of!`]), then [`commit`](Self::commit) to publish
/// it; dropped without a commit, it publishes nothing.
///
/// Writes go straight into shared memory through relaxed atomic word
/// stores, never through a `&mut`: subscribers that are not gated (every
/// subscriber in overwrite mode, observers in lossless mode) may be copying
/// the slot's previous message while the loan writes, and atomic stores
/// make that a torn copy they detect and discard (the slot is marked "being
/// written" at the first write; in a variable-size topic, when the loan is
/// made, which also reserves its arena words), not a data race. So a broadcast loan is
/// sound in both modes, and saves the caller's own buffer and its copy;
/// what it cannot give is a `&mut T` into the slot. (Work-queue loans,
/// [`Producer::loan`](crate::Producer::loan), can: there no reader can
/// see a claimed slot.) Bytes of the loan that are not written before the
/// commit hold whatever the slot held before (an older message of this
/// topic); write every byte, or [`fill`](Self::fill) first.
///
/// A publisher killed while it holds a loan publishes nothing of it: the
/// slot stays "being written" until the next publisher (which takes the
/// lease over) writes that sequence number again, and readers never see a
/// part of it. In overwrite mode the slot's previous message is gone once
/// the first write lands: a reader that lagged that far is told so
/// (`Lagged`), as for any overwritten message.
pub struct Loan<'a, T> {
    tx: &'a mut Publisher<T>,
    seq: u64,
    len: usize,
    /// Whether the first write has marked the slot "being written".
    begun: bool,
    /// Variable-size topics: the arena position the first write reserved.
    pos: u64,
}

/// A loan of a byte topic's slot ([`Publisher::loan_bytes`]).
pub type LoanBytes<'a> = Loan<'a, Bytes>;

impl<T> Loan<'_, T> {
    /// The message's length in bytes: the `len` it was loaned with, or the
    /// size of `T`.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the message is empty (a zero-length loan).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The sequence number the message will have.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The slot's payload words, the slot marked "being written" on first
    /// use.
    #[inline(always)]
    fn payload(&mut self) -> &[AtomicU64] {
        let ring = self.tx.topic.view.ring();
        if self.begun {
            ring.payload(self.seq, self.pos, self.len)
        } else {
            self.begun = true;
            let (payload, pos) = ring.begin(self.seq, self.len);
            self.pos = pos;
            payload
        }
    }

    /// Writes `bytes` at byte `offset` into the message.
    ///
    /// # Errors
    ///
    /// [`LoanRangeError`] if they would run past the loan's length; nothing
    /// is written then.
    #[inline(always)]
    pub fn write_at(&mut self, offset: usize, bytes: &[u8]) -> Result<(), LoanRangeError> {
        if offset
            .checked_add(bytes.len())
            .is_none_or(|end| end > self.len)
        {
            return Err(LoanRangeError {
                offset,
                len: bytes.len(),
                loan_len: self.len,
            });
        }
        if offset == 0 && bytes.len() == self.len {
            // The whole message, as `write` stores it.
            store_bytes(self.payload(), bytes);
        } else {
            store_bytes_at(self.payload(), offset, bytes);
        }
        process::stall_if_hooked("stall-in-loan");
        Ok(())
    }

    /// Sets every byte of the message to `byte`.
    pub fn fill(&mut self, byte: u8) {
        let chunk = [byte; 256];
        let mut at = 0;
        while at < self.len {
            let n = (self.len - at).min(chunk.len());
            store_bytes_at(self.payload(), at, &chunk[..n]);
            at += n;
        }
    }

    /// Publishes the message and returns its sequence number.
    ///
    /// # Errors
    ///
    /// [`SendError::LeaseLost`] if the publisher lost its lease meanwhile:
    /// nothing is published.
    #[inline(always)]
    pub fn commit(mut self) -> Result<u64, SendError> {
        if !self.begun {
            let _ = self.payload(); // a message never written is begun here
        }
        let tx = &mut *self.tx;
        if !tx.holds_lease() {
            return Err(SendError::LeaseLost);
        }
        let ring = tx.topic.view.ring();
        let time = tx.topic.view.clock().map(Clock::now_ns);
        if let Some(time) = time {
            tx.topic.view.store_time(self.seq, time);
        }
        ring.commit(self.seq, self.pos, self.len);
        tx.next = self.seq.wrapping_add(1);
        if let Some(pipe) = &mut tx.pipe {
            // On pipes the loan was written in our ring: send it from there.
            let words = ring.payload(self.seq, self.pos, self.len);
            pipe.send_loaned(self.seq, self.len, time, |out| load_bytes(words, out));
            return Ok(self.seq);
        }
        ring.ctrl().wake().notify_as(&mut tx.waker);
        Ok(self.seq)
    }
}

impl<T: Message> Loan<'_, T> {
    /// Writes the whole message.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-loan-typed-{}", std::process::id());
    /// use zerocopy::IntoBytes;
    /// #[derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::KnownLayout,
    ///          zerocopy::Immutable, Clone, Copy, Debug, PartialEq)]
    /// #[repr(C)]
    /// struct Quote { px: f64, qty: u64 }
    ///
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut tx = bus.publisher::<Quote>("quotes")?;
    /// let mut rx = bus.topic("quotes").start_at(shmbus::StartAt::Next).subscriber::<Quote>()?;
    /// let mut q = tx.loan()?;
    /// q.write(&Quote { px: 1.5, qty: 0 });
    /// q.write_at(core::mem::offset_of!(Quote, qty), 7u64.as_bytes())?; // one field
    /// q.commit()?;
    /// assert_eq!(rx.recv()?, Quote { px: 1.5, qty: 7 });
    /// # drop((tx, rx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    #[inline(always)]
    pub fn write(&mut self, value: &T) {
        // The whole message: stored as `send` stores it (small messages by
        // an inlined word loop, the last word zero-padded), not merged into
        // the words around it as a part written by `write_at` must be.
        store_bytes(self.payload(), value.as_bytes());
        process::stall_if_hooked("stall-in-loan");
    }
}

impl<T> std::fmt::Debug for Loan<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loan")
            .field("topic", &self.tx.topic.name)
            .field("seq", &self.seq)
            .field("len", &self.len)
            .finish()
    }
}

impl<T> Drop for Publisher<T> {
    fn drop(&mut self) {
        if !self.topic.in_own_process() {
            return; // a copy inherited through fork(): the lease is the parent's
        }
        let ctrl = self.topic.view.ring().ctrl();
        // Heavy before the lease goes: the next holder clears `LIGHT` as a
        // dead writer's, and must not do so while we still skip fences. A
        // publisher that lost the lease leaves the bit to the new holder.
        if ctrl.lease().held_by(self.topic.me) {
            ctrl.wake().go_heavy(&mut self.waker);
            ctrl.lease().release(self.topic.me);
        }
        // Sleepers check for a released lease when woken.
        ctrl.wake().notify();
    }
}

/// Counters of one subscriber.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriberStats {
    /// Messages received.
    pub received: u64,
    /// Messages lost to overwriting (sum of all `Lagged(n)`).
    pub lagged: u64,
    /// Messages passed over on purpose by
    /// [`skip_to_newest`](Subscriber::skip_to_newest). Over a subscriber's
    /// life, `received + lagged + skipped + corrupt` equals the messages
    /// published since it started.
    pub skipped: u64,
    /// Corrupt slots skipped.
    pub corrupt: u64,
    /// Times the subscriber went to sleep on the futex.
    pub sleeps: u64,
    /// Sleeps that ended by timeout rather than by a wakeup.
    pub sleep_timeouts: u64,
}

/// Where a lapped subscriber goes on after
/// [`RecvError::Lagged`]: set per subscriber
/// with [`TopicBuilder::lag_policy`](crate::TopicBuilder::lag_policy).
/// Either way, `Lagged(n)` counts exactly what this subscriber will never
/// receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LagPolicy {
    /// Go on with the oldest message the ring still holds: lose as little
    /// as possible. The default.
    #[default]
    Oldest,
    /// Go on with the newest message: for readers that want the latest
    /// state (a market-data screen), not the history. `n` then counts
    /// everything passed over.
    Newest,
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
///
/// Receive with [`recv`](Self::recv) and its `try_`, `_timeout`, `_deadline`
/// and `_into` forms, read in place with [`recv_ref`](Self::recv_ref)
/// (lossless), or iterate:
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let name = format!("doc-sub-{}", std::process::id());
/// use shmbus::{Bus, RecvError};
/// let bus = Bus::open(&name)?;
/// let mut rx = bus.subscriber::<u64>("ticks")?;
/// let mut tx = bus.publisher::<u64>("ticks")?;
/// for i in 0..3 {
///     tx.send(&i)?;
/// }
/// drop(tx); // the iteration ends once everything sent is read
/// let mut got = Vec::new();
/// for tick in &mut rx {
///     match tick {
///         Ok(t) => got.push(t),
///         Err(RecvError::Lagged(n)) => eprintln!("lost {n}"),
///         Err(e) => return Err(e.into()),
///     }
/// }
/// assert_eq!(got, [0, 1, 2]);
/// # drop((rx, bus)); Bus::remove(&name)?;
/// # Ok(()) }
/// ```
pub struct Subscriber<T> {
    topic: Handle<BroadcastView>,
    cursor: u64,
    watch: PublisherWatch,
    stats: SubscriberStats,
    scratch: Vec<u8>,
    /// Lossless mode: our entry in the subscriber table.
    gate_entry: Option<usize>,
    /// Lossless mode: the cursor is stored in the entry when it is a
    /// multiple of `flush_mask + 1` (see [`flush_mask`]), when the
    /// publisher sleeps for room, and before this subscriber waits.
    flush_mask: u64,
    /// Lossless mode: the cursor as last stored in the entry.
    stored: u64,
    /// Lossless mode: the head read as we attached. Every message after it
    /// is gated on our entry; message `gated_from` itself may have been
    /// begun before the publisher saw us, so older ones may be lent only
    /// once it is published (see
    /// [`VarlenRing::lend`](crate::ring::varlen::VarlenRing::lend)).
    gated_from: u64,
    /// The pollable fd, once asked for ([`event_fd`](Self::event_fd)).
    bell: Option<Doorbell>,
    /// Timestamped topics: the timestamp of the message last received.
    last_time: Option<u64>,
    /// A bus on pipes: our FIFO, read instead of the ring. See
    /// `crate::transport::pipe`.
    pipe: Option<Box<PipeRx>>,
    _marker: PhantomData<fn() -> T>,
}

/// First receive buffer of a variable-size topic's subscriber.
const VAR_SCRATCH: usize = 4096;

/// A new subscriber's receive buffer: a fixed-size topic's largest
/// message; a variable-size topic's starts small and grows to the longest
/// message received (half its arena at most).
fn first_scratch(ring: &crate::ring::any::AnyRing<'_>) -> Vec<u8> {
    vec![
        0;
        ring.max_message().min(match ring.var() {
            None => usize::MAX,
            Some(_) => VAR_SCRATCH,
        })
    ]
}

/// Largest batch of reads a lossless subscriber makes before it stores its
/// cursor: a store per read would move the cursor's line to the publisher
/// and back for every message.
const MAX_CURSOR_BATCH: u64 = 64;

/// The cursor batch of a lossless subscriber of a ring of `capacity`, as a
/// mask: a power of two, at most an eighth of the ring (so the cursor the
/// publisher sees lags the true one by less than an eighth of its room),
/// and 1 (a store per read) for rings of fewer than 16 slots.
fn flush_mask(capacity: u64) -> u64 {
    let batch = (capacity / 8).clamp(1, MAX_CURSOR_BATCH);
    // Round down to a power of two.
    (1u64 << (63 - batch.leading_zeros())) - 1
}

/// On pipes: how soon an async lossless publisher that found no room
/// looks again (no one FIFO says when there is room).
#[cfg(feature = "tokio")]
const PIPE_ROOM_RETRY: Duration = Duration::from_millis(1);

/// One look at the ring.
enum Poll {
    Got(usize),
    Empty,
    Failed(RecvError),
}

/// Where a new subscriber starts.
#[derive(Clone, Copy)]
enum Start {
    /// As its options say.
    At(StartAt),
    /// At this cursor, beside a subscriber of ours that holds it (and
    /// whose messages are gated from `gated_from` on).
    Beside { cursor: u64, gated_from: u64 },
}

/// How long a process that cannot call `membarrier` waits for a light
/// publisher to turn heavy before it can attach to a lossless topic.
const HEAVY_PUBLISHER_WAIT: Duration = Duration::from_secs(5);

/// Before attaching to a lossless topic (see "Light writers" in
/// `crate::wait`): if the publisher may be light and this process cannot
/// issue the heavy fence that attaching then needs, asks for a heavy
/// publisher and waits until it has turned (at its next message).
fn heavy_publisher_if_needed(topic: &Handle<BroadcastView>) -> Result<(), Error> {
    let wake = topic.view.ring().ctrl().wake();
    if !wake.has_light_writer() || heavy_fence() {
        return Ok(());
    }
    wake.request_heavy_writers();
    let started = Instant::now();
    let backoff = crossbeam_utils::Backoff::new();
    while wake.has_light_writer() {
        if started.elapsed() >= HEAVY_PUBLISHER_WAIT {
            return Err(Error::Timeout {
                what: format!(
                    "the publisher of topic {:?} to stop skipping fences: this process may not \
                     call membarrier(2), which lossless subscribers of a fast publisher need; \
                     allow it (seccomp), or run the publisher with SHMBUS_MEMBARRIER=0",
                    topic.name
                ),
                waited: started.elapsed(),
            });
        }
        if backoff.is_completed() {
            std::thread::sleep(Duration::from_micros(100));
        } else {
            backoff.snooze();
        }
    }
    Ok(())
}

impl<T> Subscriber<T> {
    pub(crate) fn new(
        topic: Handle<BroadcastView>,
        pipe_bus: Option<&Arc<PipeBus>>,
    ) -> Result<Self, Error> {
        let start = topic.opts.start;
        match pipe_bus {
            None => Subscriber::starting(topic, Start::At(start)),
            Some(bus) => Subscriber::on_pipe(topic, bus, start),
        }
    }

    /// A subscriber on pipes: a FIFO of its own, which the publisher
    /// writes. Nothing of the ring is used (it registers in no table).
    fn on_pipe(
        topic: Handle<BroadcastView>,
        bus: &Arc<PipeBus>,
        start: StartAt,
    ) -> Result<Self, Error> {
        let ring = topic.view.ring();
        // A lossless topic's subscriber (not an observer) gates its
        // publisher, up to as many as its subscriber table holds.
        let gating = (!topic.opts.observe)
            .then(|| topic.view.gate().map(|g| g.entries().len() as u32))
            .flatten();
        let capacity = match bus.carrier {
            crate::transport::Carrier::Mq => {
                crate::transport::mq::queue_len(ring.capacity() as usize, ring.var().is_some())
            }
            _ => ring.capacity() as usize,
        };
        let mut rx = PipeRx::open(
            Arc::clone(bus),
            &topic.name,
            start,
            gating,
            capacity,
            crate::transport::frame::data_frame_len(ring.max_message()),
            topic.opts.check_interval,
        )?;
        let cursor = rx.take_welcome().unwrap_or(0);
        let scratch = first_scratch(ring);
        let pacer = Pacer::new(topic.opts.check_interval);
        Ok(Subscriber {
            topic,
            cursor,
            watch: PublisherWatch {
                owner: None,
                dead: false,
                pacer,
            },
            stats: SubscriberStats::default(),
            scratch,
            gate_entry: None,
            flush_mask: 0,
            stored: cursor,
            gated_from: 0,
            bell: None,
            last_time: None,
            pipe: Some(Box::new(rx)),
            _marker: PhantomData,
        })
    }

    /// On pipes: one look at the FIFO. With `out`, the next message is
    /// copied into it and taken; without, it is left at the front (`Got`
    /// its length) for `pipe_lend`. Welcomes set the cursor; a gap in the
    /// sequence numbers is a loss (`Lagged`), counted exactly.
    #[cold]
    fn pipe_poll(&mut self, out: Option<&mut [u8]>) -> Poll {
        let variable = self.topic.view.ring().var().is_some();
        let Some(rx) = self.pipe.as_deref_mut() else {
            return Poll::Empty;
        };
        if let Some(err) = rx.unstash() {
            return Poll::Failed(err);
        }
        if !self.topic.in_own_process() {
            // A copy inherited through fork(): the FIFO is the parent's,
            // and a read here would take its messages.
            return Poll::Failed(RecvError::Evicted);
        }
        loop {
            let header = match rx.next() {
                Next::Empty => {
                    // No writer: if the publisher died (no goodbye), the
                    // messages it sent that never reached us are counted
                    // from its sequence word.
                    match rx.hung_up().then(|| rx.sent_by_gone_publisher()).flatten() {
                        Some(next) if next > self.cursor => {
                            let lost = next - self.cursor;
                            self.cursor = next;
                            self.stats.lagged = self.stats.lagged.wrapping_add(lost);
                            return Poll::Failed(RecvError::Lagged(lost));
                        }
                        _ => return Poll::Empty,
                    }
                }
                Next::Welcome(seq, first) => {
                    // A publisher (a new one, maybe): not gone.
                    self.watch.dead = false;
                    if !first && seq > self.cursor {
                        // It took over from one that was killed after
                        // messages we never got.
                        let lost = seq - self.cursor;
                        self.cursor = seq;
                        self.stats.lagged = self.stats.lagged.wrapping_add(lost);
                        return Poll::Failed(RecvError::Lagged(lost));
                    }
                    self.cursor = seq;
                    continue;
                }
                Next::Gone(next) if next > self.cursor => {
                    // The publisher left after messages we never got.
                    let lost = next - self.cursor;
                    self.cursor = next;
                    self.stats.lagged = self.stats.lagged.wrapping_add(lost);
                    return Poll::Failed(RecvError::Lagged(lost));
                }
                Next::Gone(_) => {
                    // It said goodbye: gone, unless another one comes.
                    self.watch.dead = true;
                    continue;
                }
                Next::Corrupt => {
                    self.stats.corrupt += 1;
                    return Poll::Failed(RecvError::Corrupt { seq: self.cursor });
                }
                Next::Data(header) => header,
            };
            if header.seq != self.cursor {
                if header.seq > self.cursor {
                    let lost = header.seq - self.cursor;
                    self.cursor = header.seq;
                    self.stats.lagged = self.stats.lagged.wrapping_add(lost);
                    return Poll::Failed(RecvError::Lagged(lost));
                }
                // A publisher after one that was killed starts where it can
                // know of: go on from there.
                self.cursor = header.seq;
            }
            let len = header.len as usize;
            let Some(out) = out else {
                return Poll::Got(len);
            };
            if len > out.len() {
                if variable {
                    return Poll::Got(len); // not taken: read again, whole
                }
                rx.advance(&header);
                self.cursor = header.seq.wrapping_add(1);
                self.stats.corrupt += 1;
                return Poll::Failed(RecvError::Corrupt { seq: header.seq });
            }
            return Poll::Got(self.pipe_took(&header, out));
        }
    }

    /// On pipes, the fast path of every receive: message `cursor` taken
    /// from what an earlier read left buffered, when it is there whole and
    /// nothing else (a welcome, a loss, a kept error, a forked child's
    /// copy) needs [`pipe_poll`](Self::pipe_poll)'s care. A subscriber that
    /// keeps up with a busy stream reads many frames a read (see
    /// `transport::pipe::Streaming`), so most receives end here. Callgrind,
    /// 64-byte lossless messages sent 256 at a time and then received in
    /// one process: 893 user instructions a message sent and received
    /// through the slow path's layers, 627 with this (2026-12-07).
    #[inline]
    fn pipe_take(&mut self, out: &mut [u8]) -> Option<usize> {
        if !self.topic.in_own_process() {
            return None;
        }
        let header = self.pipe.as_deref()?.buffered(self.cursor)?;
        if header.len as usize > out.len() {
            return None;
        }
        Some(self.pipe_took(&header, out))
    }

    /// Copies the data frame `header` (at the front of what was read, and
    /// no longer than `out`) into `out` and moves past it: its length.
    #[inline]
    fn pipe_took(&mut self, header: &Header, out: &mut [u8]) -> usize {
        let len = header.len as usize;
        if let Some(rx) = self.pipe.as_deref_mut() {
            out[..len].copy_from_slice(rx.payload(header));
            rx.advance(header);
        }
        self.cursor = header.seq.wrapping_add(1);
        self.stats.received += 1;
        self.last_time = header.timestamp();
        len
    }

    /// On pipes: `lend_next`. The message is copied out of the FIFO into
    /// an aligned buffer of ours, which the guard reads.
    #[cold]
    fn pipe_lend(
        &mut self,
        wait: bool,
        deadline: Option<Instant>,
        want: Option<usize>,
    ) -> Result<Lent, RecvRefError<RecvTimeoutError>> {
        if !self.is_lossless() {
            return Err(RecvRefError::NotLossless);
        }
        self.attempt(wait, deadline, |sub| sub.pipe_poll(None))?;
        let Some(rx) = self.pipe.as_deref_mut() else {
            return Err(RecvRefError::NotLossless);
        };
        let Next::Data(header) = rx.next() else {
            // `pipe_poll` left a message at the front, and only we read.
            return Err(RecvRefError::Recv(RecvTimeoutError::Corrupt {
                seq: self.cursor,
            }));
        };
        let len = header.len as usize;
        if want.is_some_and(|want| want != len) {
            rx.advance(&header);
            self.cursor = header.seq.wrapping_add(1);
            self.stats.corrupt += 1;
            return Err(RecvRefError::Recv(RecvTimeoutError::Corrupt {
                seq: header.seq,
            }));
        }
        let payload = rx.lend(&header);
        self.cursor = header.seq;
        self.last_time = header.timestamp();
        // The guard's drop moves the cursor past it (`consumed`).
        Ok(Lent::InPlace(payload, len))
    }

    /// On pipes: waits between `attempt`s, polling the FIFO.
    #[cold]
    fn pipe_wait_for(
        &mut self,
        deadline: Option<Instant>,
        mut attempt: impl FnMut(&mut Self) -> Poll,
    ) -> Result<usize, RecvTimeoutError> {
        // The wait strategy as in shared memory, a look being a read of
        // the FIFO.
        let mut pacing = Pacing::new(self.topic.opts.wait);
        if deadline.is_none() && self.topic.opts.wait == crate::wait::WaitStrategy::Block {
            // It would sleep after one empty look: sleep in the read.
            if let Some(rx) = self.pipe.as_deref_mut() {
                if rx.read_blocking_first() {
                    self.stats.sleeps += 1;
                }
            }
        }
        loop {
            match attempt(self) {
                Poll::Got(len) => return Ok(len),
                Poll::Failed(err) => return Err(err.into()),
                Poll::Empty => {}
            }
            let Pause::Check { sleep } =
                pacing.pause(|| self.pipe.as_deref().is_some_and(PipeRx::readable))
            else {
                continue;
            };
            if self.disconnected() {
                return Err(self
                    .gone_losses()
                    .map_or(RecvTimeoutError::Disconnected, Into::into));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(RecvTimeoutError::Timeout);
            }
            if !sleep {
                continue;
            }
            let Some(rx) = self.pipe.as_deref_mut() else {
                return Err(RecvTimeoutError::Timeout);
            };
            if !rx.wait(deadline) {
                return Err(RecvTimeoutError::Timeout);
            }
            pacing.slept();
            self.stats.sleeps += 1;
        }
    }

    fn starting(topic: Handle<BroadcastView>, start: Start) -> Result<Self, Error> {
        let ring = topic.view.ring();
        let gate = topic.view.gate().filter(|_| !topic.opts.observe);
        let (cursor, gate_entry, gated_from) = match (gate, start) {
            (None, Start::At(start)) => (ring.start(start), None, 0),
            (None, Start::Beside { cursor, .. }) => (cursor, None, 0),
            (Some(gate), start) => {
                if matches!(start, Start::At(_)) {
                    heavy_publisher_if_needed(&topic)?;
                }
                let liveness = |o| topic.liveness(o);
                let attached = match start {
                    Start::At(start) => gate.attach(ring, topic.me, start, liveness),
                    Start::Beside { cursor, .. } => gate.attach_beside(topic.me, cursor, liveness),
                }
                .ok_or_else(|| Error::TooManySubscribers {
                    topic: topic.name.clone(),
                    max: gate.entries().len() as u32,
                })?;
                gate.ctrl().space().notify();
                let gated_from = match start {
                    Start::At(_) => attached.head,
                    Start::Beside { gated_from, .. } => gated_from,
                };
                (attached.cursor, Some(attached.index), gated_from)
            }
        };
        // A variable-size topic's buffer starts small and grows to the
        // longest message received (half its arena at most).
        let scratch = first_scratch(ring);
        // A variable-size topic's room is in bytes as much as in
        // messages: a batch of unstored reads could hold a whole arena, so
        // there the cursor is stored at every read.
        let mask = match ring.var() {
            None => flush_mask(ring.capacity()),
            Some(_) => 0,
        };
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
            flush_mask: mask,
            stored: cursor,
            gated_from,
            bell: None,
            last_time: None,
            pipe: None,
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

    /// Counters: received, lagged, skipped, sleeps.
    pub fn stats(&self) -> SubscriberStats {
        self.stats
    }

    /// Whether the topic is in lossless mode.
    pub fn is_lossless(&self) -> bool {
        self.gate_entry.is_some() || self.pipe.as_ref().is_some_and(|rx| rx.gates())
    }

    /// A new subscriber of the same topic, with the same options, that
    /// receives the messages published from now on (tokio's
    /// `resubscribe`): it starts at the next message, wherever this one is.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-resub-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut tx = bus.publisher::<u64>("t")?;
    /// let mut rx = bus.topic("t").start_at(shmbus::StartAt::Oldest).subscriber::<u64>()?;
    /// tx.send(&1)?;
    /// let mut late = rx.resubscribe()?;
    /// tx.send(&2)?;
    /// assert_eq!(rx.recv()?, 1);
    /// assert_eq!(late.recv()?, 2);
    /// # drop((tx, rx, late, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::TooManySubscribers`] when a lossless topic's subscriber
    /// table is full; [`Error::TooManyProcesses`]
    /// in a child made by `fork()` whose bus has no process entry left.
    pub fn resubscribe(&self) -> Result<Self, Error> {
        if let Some(rx) = &self.pipe {
            return self.pipe_sibling(rx);
        }
        Subscriber::starting(self.topic.sibling()?, Start::At(StartAt::Next))
    }

    /// On pipes, `resubscribe` and `try_clone`: a new subscriber, which
    /// gets what the publisher sends from when it picks it up.
    fn pipe_sibling(&self, rx: &PipeRx) -> Result<Self, Error> {
        // The handle's options go with it: an observer's sibling observes.
        Subscriber::on_pipe(self.topic.sibling()?, rx.bus(), StartAt::Next)
    }

    /// A new subscriber of the same topic, with the same options, at this
    /// one's position: it receives the same messages from here on
    /// (crossbeam's `Receiver::clone`, for a broadcast). In overwrite mode
    /// it is a new cursor; in lossless mode it takes an entry in the
    /// subscriber table, so the publisher waits for both.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-clone-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut rx = bus.topic("t").lossless(4).subscriber::<u64>()?;
    /// let mut tx = bus.topic("t").publisher::<u64>()?;
    /// tx.send(&1)?;
    /// let mut twin = rx.try_clone()?;
    /// assert_eq!(rx.recv()?, 1);
    /// assert_eq!(twin.recv()?, 1);
    /// # drop((tx, rx, twin, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::TooManySubscribers`] when a lossless topic's subscriber
    /// table is full; [`Error::Inherited`] for a lossless subscriber made
    /// before `fork()` in the parent of this process (its position is only
    /// safe to share while its own process holds it): make a new one.
    pub fn try_clone(&self) -> Result<Self, Error> {
        if let Some(rx) = &self.pipe {
            return self.pipe_sibling(rx);
        }
        if self.gate_entry.is_some() && !self.topic.in_own_process() {
            return Err(Error::Inherited {
                topic: self.topic.name.clone(),
                what: "lossless subscriber",
            });
        }
        let start = Start::Beside {
            cursor: self.cursor,
            gated_from: self.gated_from,
        };
        Subscriber::starting(self.topic.sibling()?, start)
    }

    /// Jumps to the newest message published, passing over everything
    /// older that this subscriber has not read (counted in
    /// [`SubscriberStats::skipped`]); returns how many. For a reader that
    /// wants the latest state rather than the backlog (to make it what
    /// happens after every `Lagged`, see [`LagPolicy::Newest`]). In lossless
    /// mode this releases the publisher from the skipped messages.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-skip-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut rx = bus.topic("px").start_at(shmbus::StartAt::Next).subscriber::<u64>()?;
    /// let mut tx = bus.topic("px").publisher::<u64>()?;
    /// for px in [100, 101, 102] {
    ///     tx.send(&px)?;
    /// }
    /// assert_eq!(rx.skip_to_newest(), 2);
    /// assert_eq!(rx.recv()?, 102);
    /// # drop((tx, rx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    pub fn skip_to_newest(&mut self) -> u64 {
        if let Some(rx) = self.pipe.as_deref_mut() {
            let Some(newest) = rx.skip_to_newest() else {
                return 0;
            };
            let skipped = newest.saturating_sub(self.cursor);
            self.cursor = newest;
            self.stats.skipped = self.stats.skipped.wrapping_add(skipped);
            return skipped;
        }
        let target = self.newest();
        let skipped = target.saturating_sub(self.cursor);
        if skipped > 0 {
            self.cursor = target;
            self.stats.skipped = self.stats.skipped.wrapping_add(skipped);
            self.publish_cursor();
        }
        skipped
    }

    /// The newest message published (the next one, if none is).
    fn newest(&self) -> u64 {
        let ring = self.topic.view.ring();
        StartAt::Newest.cursor(ring.head(), ring.capacity())
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

    /// Moves past message `cursor`, telling the publisher in lossless mode
    /// once a batch is read, or at once if it sleeps for room
    /// ([`Gate::should_store`] says why that never strands it).
    #[inline(always)]
    fn consumed(&mut self) {
        if self.topic.view.clock().is_some() && self.pipe.is_none() {
            self.took_time();
        }
        self.cursor = self.cursor.wrapping_add(1);
        self.stats.received += 1;
        if self.gate_entry.is_some() && self.store_due() {
            self.publish_cursor();
        }
    }

    /// Timestamped topics: keeps message `cursor`'s timestamp, read while
    /// the cursor still holds a lossless publisher back from its slot (so
    /// only an overwrite subscriber lapped at this instant misses it).
    #[inline(never)]
    fn took_time(&mut self) {
        self.last_time = self.topic.view.time_of(self.cursor);
    }

    /// Lossless mode: whether the cursor is to be stored now.
    #[inline(always)]
    fn store_due(&self) -> bool {
        self.topic
            .view
            .gate()
            .is_some_and(|gate| gate.should_store(self.cursor, self.flush_mask))
    }

    /// Lossless mode: stores the cursor in our entry (if it is still ours)
    /// and wakes a publisher that sleeps for room.
    #[inline]
    fn publish_cursor(&mut self) {
        let stored = match self.gate() {
            Ok(Some((gate, index))) if gate.advance_held(index, self.topic.me, self.cursor) => {
                gate.ctrl().space().notify();
                true
            }
            _ => false,
        };
        if stored {
            self.stored = self.cursor;
        }
    }

    /// Lossless mode: stores a cursor that moved since it was last stored,
    /// before we wait, so that the table (what tools and `receiver_count`
    /// show, and the publisher's room) is exact while we are idle.
    #[inline]
    fn publish_unstored(&mut self) {
        if self.gate_entry.is_some() && self.stored != self.cursor {
            self.publish_cursor();
        }
    }

    /// One look at the ring. Overwrite mode reads the ring directly (the
    /// hot path of fanout); lossless mode goes through the gate's checks.
    #[inline(always)]
    fn poll(&mut self, out: &mut [u8]) -> Poll {
        if self.pipe.is_some() {
            return self.pipe_poll(Some(out));
        }
        if self.gate_entry.is_some() {
            return self.poll_gated(out);
        }
        let read = match self.topic.view.ring().read(self.cursor, out) {
            Read::Message { len } => GatedRead::Message { len },
            Read::Empty => GatedRead::Empty,
            Read::Overwritten => GatedRead::Overwritten,
            Read::BadLength { len } => GatedRead::BadLength { len },
        };
        self.took(read, out.len())
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
        self.took(read, out.len())
    }

    /// Acts on what one look at the ring found.
    #[inline(always)]
    fn took(&mut self, read: GatedRead, out_len: usize) -> Poll {
        match read {
            // A variable-size message longer than the buffer was copied in
            // part: not taken; the caller grows its buffer and reads again.
            GatedRead::Message { len } if len > out_len => Poll::Got(len),
            GatedRead::Message { len } => {
                self.consumed();
                Poll::Got(len)
            }
            GatedRead::Empty => Poll::Empty,
            GatedRead::Evicted => Poll::Failed(RecvError::Evicted),
            GatedRead::Overwritten => self.lapped(),
            GatedRead::BadLength { .. } => {
                let seq = self.cursor;
                self.consumed();
                self.stats.received -= 1;
                self.stats.corrupt += 1;
                Poll::Failed(RecvError::Corrupt { seq })
            }
        }
    }

    /// Lapped at `cursor`: goes on where the lag policy says, counting the
    /// loss.
    #[cold]
    fn lapped(&mut self) -> Poll {
        let oldest = self.topic.view.ring().lag_target(self.cursor);
        let target = match self.topic.opts.lag {
            LagPolicy::Oldest => oldest,
            LagPolicy::Newest => oldest.max(self.newest()),
        };
        let lost = target.wrapping_sub(self.cursor);
        self.cursor = target;
        self.stats.lagged = self.stats.lagged.wrapping_add(lost);
        self.publish_cursor();
        Poll::Failed(RecvError::Lagged(lost))
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

    /// On pipes, once [`disconnected`](Self::disconnected) said so: the
    /// loss it found in a killed publisher's sequence word, to report
    /// before `Disconnected` (so that received + lagged is what it sent).
    fn gone_losses(&mut self) -> Option<RecvError> {
        self.pipe.as_deref_mut()?.unstash()
    }

    /// Whether the publisher is gone and nothing is left to read. Checks
    /// the publisher's liveness at most once per check interval. On pipes,
    /// messages a killed publisher sent that never arrived are stashed as
    /// a loss first (see [`gone_losses`](Self::gone_losses)), and it still
    /// says true: the receive reports them, the next one `Disconnected`.
    fn disconnected(&mut self) -> bool {
        if let Some(rx) = self.pipe.as_deref_mut() {
            // Its goodbye says so, whatever its lease says while its
            // process is still on its way out.
            if rx.said_goodbye() {
                self.watch.dead = true;
                return !rx.ready();
            }
            // End of file on our FIFO: its writer just went, so look now.
            if rx.hung_up() || self.watch.pacer.due() {
                self.watch.dead = rx.publisher_gone();
            }
            if !self.watch.dead || rx.ready() {
                return false;
            }
            // Gone without a goodbye (killed): what it sent that never
            // reached us is counted first, from its sequence word, and
            // reported before `Disconnected` (see `gone_losses`). A message
            // queue never reads as hung up, so `pipe_poll` does not find
            // them there; a FIFO whose last writer closes between that
            // read and this look neither.
            if let Some(next) = rx.sent_by_gone_publisher() {
                if next > self.cursor {
                    let lost = next - self.cursor;
                    self.cursor = next;
                    self.stats.lagged = self.stats.lagged.wrapping_add(lost);
                    if let Some(rx) = self.pipe.as_deref_mut() {
                        rx.stash(RecvError::Lagged(lost));
                    }
                }
            }
            return true;
        }
        let state = self.topic.view.ring().ctrl().publisher();
        let holder = match state {
            PublisherState::Held(owner) => Some(owner),
            _ => None,
        };
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
        let gone = match state {
            PublisherState::NotYet => false,
            PublisherState::Left => true,
            PublisherState::Held(owner) => {
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

    /// Receives into `out`: one attempt if not `wait` (`Timeout` then
    /// means empty), else waiting until `deadline` (`None`: for ever).
    #[inline(always)]
    fn recv_raw(
        &mut self,
        out: &mut [u8],
        wait: bool,
        deadline: Option<Instant>,
    ) -> Result<usize, RecvTimeoutError> {
        if self.pipe.is_some() {
            if let Some(len) = self.pipe_take(out) {
                return Ok(len);
            }
            return self.recv_slow(out, wait, deadline);
        }
        if let Some(len) = Self::look(&self.topic, self.gate_entry, self.cursor, out) {
            // Longer than `out` (variable-size only): not taken, see `took`.
            if len <= out.len() {
                self.consumed();
            }
            return Ok(len);
        }
        self.recv_slow(out, wait, deadline)
    }

    /// The fast path of every receive: one look at message `cursor`, taken
    /// if it is there whole (and, in lossless mode, our entry is still
    /// ours). Anything else (empty, lapped, evicted, corrupt, a forked
    /// child) is `None`, and the slow path looks again and acts on it.
    /// The caller then moves past the message (`consumed`). An associated
    /// function, so that it can read into the subscriber's own scratch.
    #[inline(always)]
    fn look(
        topic: &Handle<BroadcastView>,
        gate_entry: Option<usize>,
        cursor: u64,
        out: &mut [u8],
    ) -> Option<usize> {
        let ring = topic.view.ring();
        match gate_entry {
            None => match ring.read(cursor, out) {
                Read::Message { len } => Some(len),
                _ => None,
            },
            Some(index) => {
                let gate = topic.view.gate()?;
                if !topic.in_own_process() {
                    return None;
                }
                match gate.read(ring, index, topic.me, cursor, out) {
                    GatedRead::Message { len } => {
                        process::stall_if_hooked("stall-in-lossless-read");
                        Some(len)
                    }
                    _ => None,
                }
            }
        }
    }

    #[inline(never)]
    fn recv_slow(
        &mut self,
        out: &mut [u8],
        wait: bool,
        deadline: Option<Instant>,
    ) -> Result<usize, RecvTimeoutError> {
        self.attempt(wait, deadline, |sub| sub.poll(out))
    }

    /// Calls `attempt` once if not `wait`, or until it finds something,
    /// waiting between attempts as the wait strategy says (checking for a
    /// gone publisher and the deadline now and then, and after every
    /// sleep). With nothing found: `Disconnected` if the publisher is gone,
    /// else `Timeout`.
    fn attempt(
        &mut self,
        wait: bool,
        deadline: Option<Instant>,
        mut attempt: impl FnMut(&mut Self) -> Poll,
    ) -> Result<usize, RecvTimeoutError> {
        if wait {
            return self.wait_for(deadline, attempt);
        }
        match attempt(self) {
            Poll::Got(len) => Ok(len),
            Poll::Failed(err) => Err(err.into()),
            Poll::Empty => {
                self.publish_unstored();
                if self.disconnected() {
                    if let Some(lost) = self.gone_losses() {
                        return Err(lost.into());
                    }
                    if let Some(bell) = &self.bell {
                        bell.ring();
                    }
                    Err(RecvTimeoutError::Disconnected)
                } else {
                    self.arm_bell();
                    Err(RecvTimeoutError::Timeout)
                }
            }
        }
    }

    /// With a pollable fd: arms it (see `crate::doorbell`), after a `try_`
    /// receive found nothing.
    fn arm_bell(&self) {
        if let Some(bell) = &self.bell {
            use crate::select::sealed::Source;
            bell.arm(|| self.ready_now(), self.topic.opts.check_interval);
        }
    }

    /// A file descriptor that is readable when this subscriber has
    /// something to receive (a message, a loss, an eviction) or its
    /// publisher is gone: for `epoll`, `poll`, mio, libuv or Python's
    /// `selectors`, beside sockets. When it is readable, call the `try_`
    /// receives until one says `Empty` (that re-arms it); it stays readable
    /// until then.
    ///
    /// The first call starts a helper thread (see "Waiting on many things"
    /// in the README for what it costs): it sleeps on the topic's futex in
    /// the subscriber's place and writes the fd (an `eventfd`) when woken,
    /// and also about once per liveness check interval while nothing
    /// arrives, so that the `try_` receive can check on the publisher.
    /// The fd is closed with the subscriber.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-eventfd-{}", std::process::id());
    /// use std::os::fd::AsRawFd;
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut rx = bus.subscriber::<u64>("ticks")?;
    /// let fd = rx.event_fd()?.as_raw_fd();
    /// let mut tx = bus.publisher::<u64>("ticks")?;
    /// tx.send(&5)?;
    /// let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    /// // SAFETY: one valid pollfd.
    /// assert_eq!(unsafe { libc::poll(&mut pfd, 1, 5000) }, 1);
    /// assert_eq!(rx.try_recv()?, 5);
    /// # drop((tx, rx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the eventfd or the thread cannot be made.
    pub fn event_fd(&mut self) -> Result<std::os::fd::BorrowedFd<'_>, Error> {
        if self.pipe.as_ref().is_some_and(|rx| !rx.is_mq()) {
            // On pipes, the FIFO itself (its end of file says when the
            // publisher goes). On message queues the doorbell, whose helper
            // also looks at the publisher every check interval.
            return Ok(self.pipe.as_ref().map(|rx| rx.fd()).expect("checked above"));
        }
        Ok(self.doorbell()?.fd())
    }

    /// The doorbell behind [`event_fd`](Self::event_fd), made if need be,
    /// and armed.
    pub(crate) fn doorbell(&mut self) -> Result<&Doorbell, Error> {
        use crate::select::sealed::Source;
        let view = &self.topic.view;
        let pipe = self.pipe.as_ref().map(|rx| rx.fd().try_clone_to_owned());
        let bell = Doorbell::take_or_make(&mut self.bell, || match pipe {
            // On pipes the helper polls (a copy of) our FIFO.
            Some(fd) => Words::Fd {
                fd: fd.ok().map(Arc::new),
                events: rustix::event::PollFlags::IN,
                bus: view.seg().bus().to_owned(),
            },
            None => Words::Messages(view.clone()),
        })?;
        bell.arm(|| self.ready_now(), self.topic.opts.check_interval);
        Ok(self.bell.insert(bell))
    }

    /// Calls `attempt` until it finds something, waiting between attempts
    /// as the wait strategy says.
    fn wait_for(
        &mut self,
        deadline: Option<Instant>,
        mut attempt: impl FnMut(&mut Self) -> Poll,
    ) -> Result<usize, RecvTimeoutError> {
        if self.pipe.is_some() {
            return self.pipe_wait_for(deadline, attempt);
        }
        let mut waiter = Waiter::new(self.topic.opts.wait, self.topic.opts.check_interval);
        loop {
            match attempt(self) {
                Poll::Got(len) => return Ok(len),
                Poll::Failed(err) => return Err(err.into()),
                Poll::Empty => {}
            }
            self.publish_unstored();
            if waiter.checks_due() && self.disconnected() {
                return Err(RecvTimeoutError::Disconnected);
            }
            use crate::select::sealed::Source;
            let ready = || self.ready_now();
            match waiter.wait_once(self.words(), ready, deadline) {
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

/// What [`Subscriber::lend_next`] found.
enum Lent {
    /// Message `cursor` in place: its first payload byte and its length.
    InPlace(core::ptr::NonNull<u8>, usize),
    /// Message `cursor - 1`, read the copying way into the scratch buffer
    /// (the cursor moved past it): its length.
    Copied(usize),
}

impl<T> Subscriber<T> {
    /// Lossless topics: waits for the next message and finds it in place,
    /// `want` bytes long if `Some` (a typed topic's size). The payload
    /// stays unwritten until the cursor moves past it: in lossless mode the
    /// publisher may not write message `cursor + capacity` into its slot
    /// (or, variable-size, reuse its bytes) until our cursor, published in
    /// the subscriber table (which we hold, checked after the message was
    /// found), passes `cursor`. The Acquire load of the complete stamp in
    /// the ring's `lend` orders the publisher's payload stores before our
    /// reads. A message that cannot be lent (complete with another length,
    /// overwritten, or one a variable-size subscriber that just attached is
    /// not yet sure of) is read the copying way, which reports exactly what
    /// happened: a byte topic's whole message is then `Copied`, and for a
    /// typed one it is an error.
    fn lend_next(
        &mut self,
        wait: bool,
        deadline: Option<Instant>,
        want: Option<usize>,
    ) -> Result<Lent, RecvRefError<RecvTimeoutError>> {
        if self.pipe.is_some() {
            return self.pipe_lend(wait, deadline, want);
        }
        if self.gate_entry.is_none() {
            return Err(RecvRefError::NotLossless);
        }
        self.attempt(wait, deadline, |sub| match sub.gate() {
            Err(evicted) => Poll::Failed(evicted),
            Ok(Some((gate, index))) if !gate.holds(index, sub.topic.me) => {
                Poll::Failed(RecvError::Evicted)
            }
            _ if sub.topic.view.ring().ready(sub.cursor) => Poll::Got(0),
            _ => Poll::Empty,
        })?;
        let evicted = RecvRefError::Recv(RecvTimeoutError::Evicted);
        let Some((gate, index)) = self.gate().map_err(|_| evicted)? else {
            return Err(RecvRefError::NotLossless);
        };
        // Lend only while we gate the publisher (see `Gate::lend`).
        let ring = self.topic.view.ring();
        let lent = gate
            .lend(ring, index, self.topic.me, self.cursor, self.gated_from)
            .map_err(|_| evicted)?;
        match lent {
            // A typed read needs its length and an alignment of 16 (fixed
            // slots always have it; an arena's words are 8-byte aligned).
            Some((words, len))
                if want.is_none_or(|want| want == len && words.as_ptr() as usize % 16 == 0) =>
            {
                Ok(Lent::InPlace(core::ptr::NonNull::from(words).cast(), len))
            }
            _ => self.copy_instead(want).map_err(RecvRefError::Recv),
        }
    }

    /// `lend_next` on a message it cannot lend: reads it the copying way
    /// (growing the scratch buffer for a long variable-size message).
    #[cold]
    fn copy_instead(&mut self, want: Option<usize>) -> Result<Lent, RecvTimeoutError> {
        let seq = self.cursor;
        let err = loop {
            let mut scratch = core::mem::take(&mut self.scratch);
            let polled = self.poll(&mut scratch);
            self.scratch = scratch;
            break match polled {
                Poll::Failed(err) => err,
                Poll::Got(len) if want.is_none() && len > self.scratch.len() => {
                    // Not taken (see `took`): read it again whole.
                    self.scratch.resize(len, 0);
                    continue;
                }
                Poll::Got(len) if want.is_none() => return Ok(Lent::Copied(len)),
                // Read whole, but not `want` bytes long: corrupt for this
                // type, and skipped.
                Poll::Got(_) => {
                    self.stats.received -= 1;
                    self.stats.corrupt += 1;
                    RecvError::Corrupt { seq }
                }
                // Ready a moment ago and not now: its stamp changed under
                // us, which only a corrupting write does.
                Poll::Empty => RecvError::Corrupt { seq },
            };
        };
        Err(err.into())
    }
}

impl<T> Subscriber<T> {
    /// The info of the message just received (the cursor has moved past it).
    fn last_info(&self) -> MessageInfo {
        MessageInfo {
            seq: self.cursor.wrapping_sub(1),
            timestamp_ns: self.last_time,
        }
    }
}

/// Which message a receive returned
/// ([`Subscriber::recv_with_info`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MessageInfo {
    /// Its sequence number: messages the topic's publishers had sent
    /// before it.
    pub seq: u64,
    /// When it was published, in nanoseconds on the topic's clock
    /// ([`TopicBuilder::timestamps`](crate::TopicBuilder::timestamps)):
    /// `None` if the topic has no timestamps, or if the message's slot was
    /// overwritten between its copy and the look at its timestamp (an
    /// overwrite subscriber lapped at that very moment; a lossless
    /// subscriber's cursor still holds the publisher back then).
    pub timestamp_ns: Option<u64>,
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
#[must_use = "the message is read when the guard drops; use it first"]
pub struct Borrowed<'a, T> {
    sub: &'a mut Subscriber<T>,
    /// A pointer, not a `&'a T`: the guard's drop lets the publisher write
    /// the slot, and a reference field would claim it unwritten for as long
    /// as the guard is alive anywhere (as `RefCell`'s `Ref` learnt).
    value: core::ptr::NonNull<T>,
    _lent: PhantomData<&'a T>,
}

// SAFETY: a `Borrowed` is a `&mut Subscriber<T>` and a `&T` into the
// segment (read-only while it lives); it may cross threads as those two
// may.
unsafe impl<T: Sync> Send for Borrowed<'_, T> where Subscriber<T>: Send {}
// SAFETY: as above: shared, it gives out only `&T` and the sequence number.
unsafe impl<T: Sync> Sync for Borrowed<'_, T> where Subscriber<T>: Sync {}

impl<T> Borrowed<'_, T> {
    /// The message's sequence number.
    pub fn seq(&self) -> u64 {
        self.sub.cursor
    }
}

impl<T> core::ops::Deref for Borrowed<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: `recv_ref_raw` made `value` from a payload aligned for T
        // and holding a whole T, unwritten until this guard drops (see
        // `lend_next`); any bytes are a valid T (FromBytes).
        unsafe { self.value.as_ref() }
    }
}

impl<T> Drop for Borrowed<'_, T> {
    fn drop(&mut self) {
        self.sub.consumed();
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Borrowed<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Borrowed")
            .field("seq", &self.seq())
            .field("value", &**self)
            .finish()
    }
}

/// A byte topic's message read in place from a lossless topic
/// ([`Subscriber::recv_bytes_ref`]): no copy. The publisher cannot
/// overwrite it until this guard drops, which moves the subscriber past it.
///
/// One exception, variable-size topics only: a subscriber that has just
/// attached below the head (`StartAt::Newest` or `Oldest`) cannot lend
/// the messages older than the head it attached at until the message
/// being published at that moment is complete (that one may reuse their
/// bytes: see "Variable-size messages" in the README). Such a message is
/// copied into the subscriber's buffer instead, checked after the copy;
/// [`is_in_place`](Self::is_in_place) says which happened.
#[must_use = "the message is read when the guard drops; use it first"]
pub struct BorrowedBytes<'a> {
    sub: &'a mut Subscriber<Bytes>,
    lent: LentBytes,
}

// SAFETY: a `BorrowedBytes` is a `&mut Subscriber<Bytes>` and a `&[u8]`
// (into the segment, read-only while it lives, or into a buffer it owns);
// it may cross threads as those may.
unsafe impl Send for BorrowedBytes<'_> where Subscriber<Bytes>: Send {}
// SAFETY: as above: shared, it gives out only `&[u8]` and numbers.
unsafe impl Sync for BorrowedBytes<'_> where Subscriber<Bytes>: Sync {}

enum LentBytes {
    /// The message's bytes in the segment: a pointer, not a `&[u8]`, for
    /// the reason given on [`Borrowed`]'s field.
    InPlace(core::ptr::NonNull<[u8]>),
    /// The subscriber's buffer, holding the message in its first `len`
    /// bytes, taken until the guard drops.
    Copied(Vec<u8>, usize),
}

impl BorrowedBytes<'_> {
    /// The message's sequence number.
    pub fn seq(&self) -> u64 {
        match self.lent {
            LentBytes::InPlace(_) => self.sub.cursor,
            LentBytes::Copied(..) => self.sub.cursor.wrapping_sub(1),
        }
    }

    /// The message's [`MessageInfo`] (its sequence number, and its
    /// timestamp on a timestamped topic).
    pub fn info(&self) -> MessageInfo {
        match self.lent {
            LentBytes::InPlace(_) => MessageInfo {
                seq: self.sub.cursor,
                // Still gated on us: the word is this message's (on pipes,
                // the frame's, kept as it was lent).
                timestamp_ns: if self.sub.pipe.is_some() {
                    self.sub.last_time
                } else {
                    self.sub.topic.view.time_of(self.sub.cursor)
                },
            },
            LentBytes::Copied(..) => self.sub.last_info(),
        }
    }

    /// Whether the bytes are the message's own in shared memory (`false`
    /// only for the copied exception described on the type).
    pub fn is_in_place(&self) -> bool {
        matches!(self.lent, LentBytes::InPlace(_))
    }
}

impl core::ops::Deref for BorrowedBytes<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.lent {
            // SAFETY: `len` bytes of payload words that `lend_next` found
            // whole (any bytes are valid u8s), unwritten until this guard
            // drops and moves the cursor past them: see `lend_next`.
            LentBytes::InPlace(bytes) => unsafe { bytes.as_ref() },
            LentBytes::Copied(buf, len) => &buf[..*len],
        }
    }
}

impl AsRef<[u8]> for BorrowedBytes<'_> {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Drop for BorrowedBytes<'_> {
    fn drop(&mut self) {
        match &mut self.lent {
            LentBytes::InPlace(_) => self.sub.consumed(),
            // Read (and moved past) already: the buffer goes back.
            LentBytes::Copied(buf, _) => self.sub.scratch = core::mem::take(buf),
        }
    }
}

impl std::fmt::Debug for BorrowedBytes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BorrowedBytes")
            .field("seq", &self.seq())
            .field("len", &self.len())
            .field("in_place", &self.is_in_place())
            .finish()
    }
}

/// Maps the error of a read in place with a wait to that of another form.
fn ref_error<E>(
    err: RecvRefError<RecvTimeoutError>,
    form: fn(RecvTimeoutError) -> E,
) -> RecvRefError<E> {
    match err {
        RecvRefError::NotLossless => RecvRefError::NotLossless,
        RecvRefError::Recv(err) => RecvRefError::Recv(form(err)),
    }
}

impl<T: Message> Subscriber<T> {
    /// Receives the next message, waiting as the wait strategy says.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-recv-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut tx = bus.publisher::<u64>("t")?;
    /// let mut rx = bus.subscriber::<u64>("t")?;
    /// tx.send(&5)?;
    /// assert_eq!(rx.recv()?, 5);
    /// # drop((tx, rx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`RecvError::Lagged`] (overwrite mode) after messages were lost;
    /// [`RecvError::Disconnected`] once the publisher is gone and all is
    /// read; [`RecvError::Corrupt`] for a corrupt slot (skipped);
    /// [`RecvError::Evicted`] (lossless mode) once this subscriber no
    /// longer holds its entry.
    #[inline]
    pub fn recv(&mut self) -> Result<T, RecvError> {
        self.recv_value(true, None)
            .map_err(RecvTimeoutError::without_deadline)
    }

    /// Receives the next message, waiting at most `timeout`.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-recvto-{}", std::process::id());
    /// use shmbus::RecvTimeoutError;
    /// use std::time::Duration;
    /// let bus = shmbus::Bus::open(&name)?;
    /// let _tx = bus.publisher::<u64>("t")?;
    /// let mut rx = bus.subscriber::<u64>("t")?;
    /// let nothing = rx.recv_timeout(Duration::from_millis(5));
    /// assert_eq!(nothing, Err(RecvTimeoutError::Timeout));
    /// # drop((_tx, rx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv), and [`RecvTimeoutError::Timeout`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.recv_value(true, deadline_after(timeout))
    }

    /// Receives the next message, waiting until `deadline`.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-recvdl-{}", std::process::id());
    /// use std::time::{Duration, Instant};
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut tx = bus.publisher::<u64>("t")?;
    /// let mut rx = bus.subscriber::<u64>("t")?;
    /// tx.send(&5)?;
    /// assert_eq!(rx.recv_deadline(Instant::now() + Duration::from_millis(5))?, 5);
    /// # drop((tx, rx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`recv_timeout`](Self::recv_timeout).
    pub fn recv_deadline(&mut self, deadline: Instant) -> Result<T, RecvTimeoutError> {
        self.recv_value(true, Some(deadline))
    }

    /// Receives the next message if there is one, without waiting.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-tryrecv-{}", std::process::id());
    /// use shmbus::TryRecvError;
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut tx = bus.publisher::<u64>("t")?;
    /// let mut rx = bus.subscriber::<u64>("t")?;
    /// assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    /// tx.send(&5)?;
    /// assert_eq!(rx.try_recv()?, 5);
    /// # drop((tx, rx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv), and [`TryRecvError::Empty`].
    #[inline]
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        self.recv_value(false, None)
            .map_err(RecvTimeoutError::without_wait)
    }

    /// As [`recv`](Self::recv), with which message it was: its sequence
    /// number (the publisher's count, the same for every subscriber), at
    /// no extra cost.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-recvinfo-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut rx = bus.topic("ticks").start_at(shmbus::StartAt::Next).subscriber::<u64>()?;
    /// let mut tx = bus.publisher::<u64>("ticks")?;
    /// tx.send(&10)?;
    /// tx.send(&11)?;
    /// let (info, tick) = rx.recv_with_info()?;
    /// assert_eq!((info.seq, tick), (0, 10));
    /// assert_eq!(rx.try_recv_with_info()?.0.seq, 1);
    /// # drop((tx, rx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    pub fn recv_with_info(&mut self) -> Result<(MessageInfo, T), RecvError> {
        let value = self.recv()?;
        Ok((self.last_info(), value))
    }

    /// As [`try_recv`](Self::try_recv), with the message's
    /// [`MessageInfo`].
    ///
    /// # Errors
    ///
    /// As [`try_recv`](Self::try_recv).
    pub fn try_recv_with_info(&mut self) -> Result<(MessageInfo, T), TryRecvError> {
        let value = self.try_recv()?;
        Ok((self.last_info(), value))
    }

    /// Receives the next message into `out`, without a temporary: for
    /// large messages. On an error, `out` holds unspecified bytes (still a
    /// valid `T`).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-recvinto-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut tx = bus.publisher::<[u64; 512]>("book")?;
    /// let mut rx = bus.subscriber::<[u64; 512]>("book")?;
    /// tx.send(&[9; 512])?;
    /// let mut book = Box::new([0u64; 512]);
    /// rx.recv_into(&mut book)?;
    /// assert_eq!(book[511], 9);
    /// # drop((tx, rx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    pub fn recv_into(&mut self, out: &mut T) -> Result<(), RecvError> {
        self.recv_into_raw(out, true, None)
            .map_err(RecvTimeoutError::without_deadline)
    }

    /// Receives the next message into `out` if there is one, without
    /// waiting.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-tryrecvinto-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut tx = bus.publisher::<u64>("t")?;
    /// let mut rx = bus.subscriber::<u64>("t")?;
    /// let mut out = 0;
    /// assert!(rx.try_recv_into(&mut out).is_err());
    /// tx.send(&5)?;
    /// rx.try_recv_into(&mut out)?;
    /// assert_eq!(out, 5);
    /// # drop((tx, rx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`try_recv`](Self::try_recv).
    pub fn try_recv_into(&mut self, out: &mut T) -> Result<(), TryRecvError> {
        self.recv_into_raw(out, false, None)
            .map_err(RecvTimeoutError::without_wait)
    }

    /// Receives the next message into `out`, waiting at most `timeout`.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-recvintoto-{}", std::process::id());
    /// use std::time::Duration;
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut tx = bus.publisher::<u64>("t")?;
    /// let mut rx = bus.subscriber::<u64>("t")?;
    /// tx.send(&5)?;
    /// let mut out = 0;
    /// rx.recv_into_timeout(&mut out, Duration::from_millis(5))?;
    /// assert_eq!(out, 5);
    /// # drop((tx, rx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`recv_timeout`](Self::recv_timeout).
    pub fn recv_into_timeout(
        &mut self,
        out: &mut T,
        timeout: Duration,
    ) -> Result<(), RecvTimeoutError> {
        self.recv_into_raw(out, true, deadline_after(timeout))
    }

    /// Receives the next message into `out`, waiting until `deadline`.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-recvintodl-{}", std::process::id());
    /// use std::time::{Duration, Instant};
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut tx = bus.publisher::<u64>("t")?;
    /// let mut rx = bus.subscriber::<u64>("t")?;
    /// tx.send(&5)?;
    /// let mut out = 0;
    /// rx.recv_into_deadline(&mut out, Instant::now() + Duration::from_millis(5))?;
    /// assert_eq!(out, 5);
    /// # drop((tx, rx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`recv_timeout`](Self::recv_timeout).
    pub fn recv_into_deadline(
        &mut self,
        out: &mut T,
        deadline: Instant,
    ) -> Result<(), RecvTimeoutError> {
        self.recv_into_raw(out, true, Some(deadline))
    }

    /// An iterator over the messages, waiting for each (tokio's
    /// `BroadcastStream`, as a blocking iterator): it yields `Ok(message)`,
    /// and `Err` for [`RecvError::Lagged`] and [`RecvError::Corrupt`] (the
    /// iteration goes on after them); it ends once the publisher is gone
    /// and everything is read ([`RecvError::Disconnected`] is never
    /// yielded), and after yielding [`RecvError::Evicted`].
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-iter-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut tx = bus.publisher::<u64>("t")?;
    /// let mut rx = bus.subscriber::<u64>("t")?;
    /// tx.send(&1)?;
    /// tx.send(&2)?;
    /// drop(tx);
    /// let got: Result<Vec<u64>, _> = rx.iter().collect();
    /// assert_eq!(got?, [1, 2]);
    /// # drop((rx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    pub fn iter(&mut self) -> Iter<'_, T> {
        Iter {
            sub: self,
            done: false,
        }
    }

    /// An iterator over the messages there are now, without waiting: as
    /// [`iter`](Self::iter), but it also ends when nothing is left to read
    /// (a later call may find more).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-tryiter-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut tx = bus.publisher::<u64>("t")?;
    /// let mut rx = bus.subscriber::<u64>("t")?;
    /// tx.send(&1)?;
    /// tx.send(&2)?;
    /// let ready: Vec<u64> = rx.try_iter().collect::<Result<_, _>>()?;
    /// assert_eq!(ready, [1, 2]);
    /// assert_eq!(rx.try_iter().count(), 0);
    /// # drop((tx, rx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    pub fn try_iter(&mut self) -> TryIter<'_, T> {
        TryIter {
            sub: self,
            done: false,
        }
    }

    #[inline(always)]
    fn recv_value(&mut self, wait: bool, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        let mut value = T::new_zeroed();
        self.recv_into_raw(&mut value, wait, deadline)?;
        Ok(value)
    }

    #[inline(always)]
    fn recv_into_raw(
        &mut self,
        out: &mut T,
        wait: bool,
        deadline: Option<Instant>,
    ) -> Result<(), RecvTimeoutError> {
        let len = self.recv_raw(out.as_mut_bytes(), wait, deadline)?;
        Ok(self.check_len(len)?)
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
    /// assert_eq!(msg.seq(), 0);
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
        self.recv_ref_raw(true, None)
            .map_err(|err| ref_error(err, RecvTimeoutError::without_deadline))
    }

    /// Lossless topics: lends the next message in place if there is one,
    /// without waiting.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-tryref-{}", std::process::id());
    /// use shmbus::{RecvRefError, TryRecvError};
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut rx = bus.topic("t").lossless(4).subscriber::<u64>()?;
    /// let mut tx = bus.topic("t").publisher::<u64>()?;
    /// assert!(matches!(rx.try_recv_ref(), Err(RecvRefError::Recv(TryRecvError::Empty))));
    /// tx.send(&7)?;
    /// assert_eq!(*rx.try_recv_ref()?, 7);
    /// # drop((tx, rx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`recv_ref`](Self::recv_ref), and [`TryRecvError::Empty`].
    pub fn try_recv_ref(&mut self) -> Result<Borrowed<'_, T>, RecvRefError<TryRecvError>> {
        self.recv_ref_raw(false, None)
            .map_err(|err| ref_error(err, RecvTimeoutError::without_wait))
    }

    /// Lossless topics: lends the next message in place, waiting at most
    /// `timeout`.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-refto-{}", std::process::id());
    /// use shmbus::{RecvRefError, RecvTimeoutError};
    /// use std::time::Duration;
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut rx = bus.topic("t").lossless(4).subscriber::<u64>()?;
    /// let _tx = bus.topic("t").publisher::<u64>()?;
    /// let none = rx.recv_ref_timeout(Duration::from_millis(5));
    /// assert!(matches!(none, Err(RecvRefError::Recv(RecvTimeoutError::Timeout))));
    /// # drop(none); drop((_tx, rx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`recv_ref`](Self::recv_ref), and [`RecvTimeoutError::Timeout`].
    pub fn recv_ref_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Borrowed<'_, T>, RecvRefError<RecvTimeoutError>> {
        self.recv_ref_raw(true, deadline_after(timeout))
    }

    /// Lossless topics: lends the next message in place, waiting until
    /// `deadline`.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-refdl-{}", std::process::id());
    /// use std::time::{Duration, Instant};
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut rx = bus.topic("t").lossless(4).subscriber::<u64>()?;
    /// let mut tx = bus.topic("t").publisher::<u64>()?;
    /// tx.send(&7)?;
    /// assert_eq!(*rx.recv_ref_deadline(Instant::now() + Duration::from_millis(5))?, 7);
    /// # drop((tx, rx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`recv_ref_timeout`](Self::recv_ref_timeout).
    pub fn recv_ref_deadline(
        &mut self,
        deadline: Instant,
    ) -> Result<Borrowed<'_, T>, RecvRefError<RecvTimeoutError>> {
        self.recv_ref_raw(true, Some(deadline))
    }

    fn recv_ref_raw(
        &mut self,
        wait: bool,
        deadline: Option<Instant>,
    ) -> Result<Borrowed<'_, T>, RecvRefError<RecvTimeoutError>> {
        const {
            assert!(
                core::mem::align_of::<T>() <= 16,
                "recv_ref needs an alignment of at most 16"
            )
        };
        let size = core::mem::size_of::<T>();
        let Lent::InPlace(payload, _) = self.lend_next(wait, deadline, Some(size))? else {
            unreachable!("a typed topic's message is lent or refused, never copied")
        };
        // The payload is 16-byte aligned (`lend_next` lends no other to a
        // typed read), so aligned for T (align <= 16, asserted above), and
        // holds `size_of::<T>()` bytes (`lend_next` checked the length):
        // `Deref` reads it as a T.
        Ok(Borrowed {
            sub: self,
            value: payload.cast::<T>(),
            _lent: PhantomData,
        })
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

/// What an iterator over a subscriber yields for one receive, and whether
/// it ends there.
fn iter_item<T, E>(
    result: Result<T, E>,
    end: impl Fn(&E) -> Option<bool>,
) -> (Option<Result<T, E>>, bool) {
    match result {
        Ok(value) => (Some(Ok(value)), false),
        Err(err) => match end(&err) {
            // Ends without yielding.
            Some(false) => (None, true),
            // Ends after yielding.
            Some(true) => (Some(Err(err)), true),
            None => (Some(Err(err)), false),
        },
    }
}

/// A blocking iterator over a subscriber's messages: see
/// [`Subscriber::iter`].
#[must_use = "iterators are lazy and do nothing unless consumed"]
#[derive(Debug)]
pub struct Iter<'a, T> {
    sub: &'a mut Subscriber<T>,
    done: bool,
}

impl<T: Message> Iterator for Iter<'_, T> {
    type Item = Result<T, RecvError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let (item, done) = iter_item(self.sub.recv(), |err| match err {
            RecvError::Disconnected => Some(false),
            RecvError::Evicted => Some(true),
            _ => None,
        });
        self.done = done;
        item
    }
}

impl<T: Message> std::iter::FusedIterator for Iter<'_, T> {}

/// An iterator over the messages a subscriber has now: see
/// [`Subscriber::try_iter`].
#[must_use = "iterators are lazy and do nothing unless consumed"]
#[derive(Debug)]
pub struct TryIter<'a, T> {
    sub: &'a mut Subscriber<T>,
    done: bool,
}

impl<T: Message> Iterator for TryIter<'_, T> {
    type Item = Result<T, RecvError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let (item, done) = iter_item(self.sub.try_recv(), |err| match err {
            TryRecvError::Empty | TryRecvError::Disconnected => Some(false),
            TryRecvError::Evicted => Some(true),
            _ => None,
        });
        self.done = done;
        item.map(|item| item.map_err(try_to_recv))
    }
}

/// A `TryRecvError` that a `TryIter` yields, as the `RecvError` it is.
fn try_to_recv(err: TryRecvError) -> RecvError {
    match err {
        TryRecvError::Lagged(n) => RecvError::Lagged(n),
        TryRecvError::Corrupt { seq } => RecvError::Corrupt { seq },
        TryRecvError::Evicted => RecvError::Evicted,
        TryRecvError::Empty | TryRecvError::Disconnected => {
            unreachable!("a TryIter ends at Empty and Disconnected")
        }
    }
}

/// An owning blocking iterator over a subscriber's messages: see
/// [`Subscriber::iter`].
#[must_use = "iterators are lazy and do nothing unless consumed"]
#[derive(Debug)]
pub struct IntoIter<T> {
    sub: Subscriber<T>,
    done: bool,
}

impl<T: Message> Iterator for IntoIter<T> {
    type Item = Result<T, RecvError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut iter = Iter {
            sub: &mut self.sub,
            done: self.done,
        };
        let item = iter.next();
        self.done = iter.done;
        item
    }
}

impl<T: Message> std::iter::FusedIterator for IntoIter<T> {}

impl<'a, T: Message> IntoIterator for &'a mut Subscriber<T> {
    type Item = Result<T, RecvError>;
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

impl<T: Message> IntoIterator for Subscriber<T> {
    type Item = Result<T, RecvError>;
    type IntoIter = IntoIter<T>;

    fn into_iter(self) -> IntoIter<T> {
        IntoIter {
            sub: self,
            done: false,
        }
    }
}

impl Subscriber<Bytes> {
    /// Receives the next message, waiting as the wait strategy says. The
    /// slice borrows an internal buffer until the next receive.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-recvb-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut tx = bus.topic("log").publisher_bytes()?;
    /// let mut rx = bus.topic("log").subscriber_bytes()?;
    /// tx.send_bytes(b"hello")?;
    /// assert_eq!(rx.recv_bytes()?, b"hello");
    /// # drop((tx, rx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Subscriber::recv`].
    #[inline]
    pub fn recv_bytes(&mut self) -> Result<&[u8], RecvError> {
        self.recv_bytes_raw(true, None)
            .map_err(RecvTimeoutError::without_deadline)
    }

    /// As [`recv_bytes`](Self::recv_bytes), with the message's
    /// [`MessageInfo`].
    ///
    /// # Errors
    ///
    /// As [`recv_bytes`](Self::recv_bytes).
    pub fn recv_bytes_with_info(&mut self) -> Result<(MessageInfo, &[u8]), RecvError> {
        let len = self
            .recv_bytes_raw(true, None)
            .map_err(RecvTimeoutError::without_deadline)?
            .len();
        let info = self.last_info();
        Ok((info, &self.scratch[..len]))
    }

    /// Receives the next message, waiting at most `timeout`.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-recvbto-{}", std::process::id());
    /// use shmbus::RecvTimeoutError;
    /// use std::time::Duration;
    /// let bus = shmbus::Bus::open(&name)?;
    /// let _tx = bus.topic("log").publisher_bytes()?;
    /// let mut rx = bus.topic("log").subscriber_bytes()?;
    /// let none = rx.recv_bytes_timeout(Duration::from_millis(5));
    /// assert_eq!(none, Err(RecvTimeoutError::Timeout));
    /// # drop((_tx, rx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Subscriber::recv_timeout`].
    pub fn recv_bytes_timeout(&mut self, timeout: Duration) -> Result<&[u8], RecvTimeoutError> {
        self.recv_bytes_raw(true, deadline_after(timeout))
    }

    /// Receives the next message, waiting until `deadline`.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-recvbdl-{}", std::process::id());
    /// use std::time::{Duration, Instant};
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut tx = bus.topic("log").publisher_bytes()?;
    /// let mut rx = bus.topic("log").subscriber_bytes()?;
    /// tx.send_bytes(b"hi")?;
    /// let msg = rx.recv_bytes_deadline(Instant::now() + Duration::from_millis(5))?;
    /// assert_eq!(msg, b"hi");
    /// # drop((tx, rx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Subscriber::recv_timeout`].
    pub fn recv_bytes_deadline(&mut self, deadline: Instant) -> Result<&[u8], RecvTimeoutError> {
        self.recv_bytes_raw(true, Some(deadline))
    }

    /// Receives the next message if there is one, without waiting.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-tryrecvb-{}", std::process::id());
    /// use shmbus::TryRecvError;
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut tx = bus.topic("log").publisher_bytes()?;
    /// let mut rx = bus.topic("log").subscriber_bytes()?;
    /// assert_eq!(rx.try_recv_bytes(), Err(TryRecvError::Empty));
    /// tx.send_bytes(b"hi")?;
    /// assert_eq!(rx.try_recv_bytes()?, b"hi");
    /// # drop((tx, rx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Subscriber::try_recv`].
    #[inline]
    pub fn try_recv_bytes(&mut self) -> Result<&[u8], TryRecvError> {
        self.recv_bytes_raw(false, None)
            .map_err(RecvTimeoutError::without_wait)
    }

    /// Lossless topics: waits for the next message and lends it in place,
    /// without copying (see [`BorrowedBytes`]). The publisher cannot
    /// overwrite it until the guard drops; dropping it moves this
    /// subscriber past the message. For large messages this saves the copy
    /// out that [`recv_bytes`](Self::recv_bytes) makes. On an overwrite-mode
    /// topic, returns [`RecvRefError::NotLossless`] (a lapped slot may be
    /// rewritten under a reader there: use `recv_bytes`).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-refb-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut rx = bus.topic("frames").variable(1 << 20).lossless(4).subscriber_bytes()?;
    /// let mut tx = bus.topic("frames").variable(1 << 20).publisher_bytes()?;
    /// tx.send_bytes(&[7; 300_000])?;
    /// let frame = rx.recv_bytes_ref()?;
    /// assert_eq!(frame.len(), 300_000);
    /// assert!(frame.iter().all(|&b| b == 7));
    /// assert_eq!(frame.seq(), 0);
    /// # drop(frame); drop((tx, rx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`RecvRefError::NotLossless`] on an overwrite topic; otherwise as
    /// [`recv_bytes`](Self::recv_bytes).
    pub fn recv_bytes_ref(&mut self) -> Result<BorrowedBytes<'_>, RecvRefError> {
        self.recv_bytes_ref_raw(true, None)
            .map_err(|err| ref_error(err, RecvTimeoutError::without_deadline))
    }

    /// Lossless topics: lends the next message in place if there is one,
    /// without waiting.
    ///
    /// # Errors
    ///
    /// As [`recv_bytes_ref`](Self::recv_bytes_ref), and
    /// [`TryRecvError::Empty`].
    pub fn try_recv_bytes_ref(&mut self) -> Result<BorrowedBytes<'_>, RecvRefError<TryRecvError>> {
        self.recv_bytes_ref_raw(false, None)
            .map_err(|err| ref_error(err, RecvTimeoutError::without_wait))
    }

    /// Lossless topics: lends the next message in place, waiting at most
    /// `timeout`.
    ///
    /// # Errors
    ///
    /// As [`recv_bytes_ref`](Self::recv_bytes_ref), and
    /// [`RecvTimeoutError::Timeout`].
    pub fn recv_bytes_ref_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<BorrowedBytes<'_>, RecvRefError<RecvTimeoutError>> {
        self.recv_bytes_ref_raw(true, deadline_after(timeout))
    }

    /// Lossless topics: lends the next message in place, waiting until
    /// `deadline`.
    ///
    /// # Errors
    ///
    /// As [`recv_bytes_ref_timeout`](Self::recv_bytes_ref_timeout).
    pub fn recv_bytes_ref_deadline(
        &mut self,
        deadline: Instant,
    ) -> Result<BorrowedBytes<'_>, RecvRefError<RecvTimeoutError>> {
        self.recv_bytes_ref_raw(true, Some(deadline))
    }

    fn recv_bytes_ref_raw(
        &mut self,
        wait: bool,
        deadline: Option<Instant>,
    ) -> Result<BorrowedBytes<'_>, RecvRefError<RecvTimeoutError>> {
        let lent = match self.lend_next(wait, deadline, None)? {
            Lent::InPlace(payload, len) => {
                LentBytes::InPlace(core::ptr::NonNull::slice_from_raw_parts(payload, len))
            }
            Lent::Copied(len) => LentBytes::Copied(core::mem::take(&mut self.scratch), len),
        };
        Ok(BorrowedBytes { sub: self, lent })
    }

    #[inline(always)]
    fn recv_bytes_raw(
        &mut self,
        wait: bool,
        deadline: Option<Instant>,
    ) -> Result<&[u8], RecvTimeoutError> {
        if self.pipe.is_some() {
            let mut scratch = core::mem::take(&mut self.scratch);
            let taken = self.pipe_take(&mut scratch);
            self.scratch = scratch;
            if let Some(len) = taken {
                return Ok(&self.scratch[..len]);
            }
            return self.recv_bytes_slow(wait, deadline);
        }
        if let Some(len) = Self::look(&self.topic, self.gate_entry, self.cursor, &mut self.scratch)
        {
            if len <= self.scratch.len() {
                self.consumed();
                return Ok(&self.scratch[..len]);
            }
        }
        self.recv_bytes_slow(wait, deadline)
    }

    /// `recv_bytes_raw` past the fast path: receives into the scratch
    /// buffer, growing it when a variable-size message is longer (the
    /// message is left in the ring then, and read again whole).
    #[inline(never)]
    fn recv_bytes_slow(
        &mut self,
        wait: bool,
        deadline: Option<Instant>,
    ) -> Result<&[u8], RecvTimeoutError> {
        loop {
            let mut scratch = core::mem::take(&mut self.scratch);
            let result = self.recv_raw(&mut scratch, wait, deadline);
            self.scratch = scratch;
            let len = result?;
            if len <= self.scratch.len() {
                return Ok(&self.scratch[..len]);
            }
            // At most the topic's largest message: `read` checks lengths.
            self.scratch.resize(len, 0);
        }
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

impl<T> crate::select::sealed::Source for Subscriber<T> {
    fn words(&self) -> &crate::wait::WakeWords {
        self.topic.view.ring().ctrl().wake()
    }

    fn pipe_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.pipe.as_ref().map(|rx| rx.fd().as_raw_fd())
    }

    #[inline]
    fn ready_now(&self) -> bool {
        if let Some(rx) = &self.pipe {
            // A whole message at the front of what was read (bytes still in
            // the FIFO may be a welcome only: `ready_slow` reads them).
            return rx.message_buffered();
        }
        let ring = self.topic.view.ring();
        let ctrl = ring.ctrl();
        ring.ready(self.cursor)
            || ctrl.publisher() == PublisherState::Left
            || (self.gate_entry.is_some() && !self.topic.in_own_process())
    }

    fn ready_slow(&mut self) -> bool {
        if self.pipe.is_some() {
            // Reads the FIFO: a welcome is taken, and a loss or corrupt
            // frame found is kept for the next receive to report.
            return match self.pipe_poll(None) {
                Poll::Got(_) => true,
                Poll::Failed(err) => {
                    if let Some(rx) = self.pipe.as_deref_mut() {
                        rx.stash(err);
                    }
                    true
                }
                Poll::Empty => self.disconnected(),
            };
        }
        if self.gate_entry.is_some() {
            match self.gate() {
                Err(_) => return true,
                Ok(Some((gate, index))) if !gate.holds(index, self.topic.me) => return true,
                _ => {}
            }
        }
        self.publish_unstored();
        self.disconnected()
    }

    fn wait_options(&self) -> (crate::wait::WaitStrategy, Duration) {
        (self.topic.opts.wait, self.topic.opts.check_interval)
    }

    fn timed_out(&mut self) {
        self.watch.pacer.expire();
    }
}

impl<T> crate::select::Selectable for Subscriber<T> {}

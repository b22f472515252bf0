//! Work-queue topics: any number of producer and consumer processes; each
//! message is taken by exactly one consumer.
//!
//! # Ordering
//!
//! Messages of one producer are consumed in the order it pushed them (FIFO
//! per producer). Messages of different producers interleave in the order
//! their pushes claimed positions.
//!
//! # Waiting
//!
//! `push` waits while the queue is full and `pop` while it is empty, as the
//! topic builder's [`WaitStrategy`] says (consumers and producers sleep on
//! futexes in the segment when blocking). `try_push` hands the value back in
//! [`TryPushError::Full`]; `try_pop` returns [`TryPopError::Empty`].
//!
//! # Delivery guarantee and crashes
//!
//! Delivery is **at most once**. A message is never delivered twice. If a
//! consumer process dies after claiming a message and before releasing its
//! slot, that message is lost; if a producer process dies after claiming a
//! slot and before publishing its message, that message (whose `push` never
//! returned) is lost. Neither wedges the queue: a process stuck behind a
//! claimer known dead notices within the liveness check interval (default
//! 100 ms; `try_push` and `try_pop` take part too), finishes the slot in its
//! place, and counts the loss exactly once ([`QueueStats::lost_in_consume`],
//! [`QueueStats::lost_in_push`]), even if it is killed itself half-way. A
//! slow but live claimer, or one whose liveness cannot be told, is waited
//! for, never skipped.
//!
//! A message counts as delivered once its consumer released the slot (a
//! pop released it before returning). A consumer killed after that, before
//! its caller used the message (or while it wakes a producer), loses it
//! without a count: the counters count what is lost inside the queue.
//!
//! A consumer's `pop` returns [`PopError::Disconnected`] once a producer
//! has attached, every producer that attached is gone (dropped or dead) and
//! the queue is empty.

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use crate::error::{Error, PopError, PopTimeoutError, PushError, TryPopError, TryPushError};
use crate::handle::Handle;
use crate::message::{Bytes, Message};
use crate::process;
use crate::ring::queue::{
    table, ClaimEntry, PopBlocked, Popped, PushBlocked, QueueRing, Recovery, RecoveryStep, Side,
    NO_INTENT,
};
use crate::segment::views::QueueView;
use crate::wait::{deadline_after, Pacer, Waited, Waiter, Wake};

/// Counters of a work queue, shared by all its producers and consumers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Positions claimed by pushes so far.
    pub pushed: u64,
    /// Positions claimed by pops so far.
    pub popped: u64,
    /// Messages lost because their producer died mid-push.
    pub lost_in_push: u64,
    /// Messages lost because their consumer died mid-pop.
    pub lost_in_consume: u64,
}

fn stats_of(ring: &QueueRing<'_>) -> QueueStats {
    let ctrl = ring.ctrl();
    QueueStats {
        pushed: ctrl.pushed(),
        popped: ctrl.popped(),
        lost_in_push: ctrl.lost_in_push(),
        lost_in_consume: ctrl.lost_in_consume(),
    }
}

/// Between the steps of a recovery: stops there for crash tests that
/// switch a hook on (`SHMBUS_TEST_HOOK`), and goes on otherwise.
fn recovery_step(step: RecoveryStep) -> bool {
    process::stall_if_hooked(step.hook());
    true
}

/// Finishes the slot of a claimer known dead, if `pos` on `side` is stuck
/// on one (see `ring::queue`); with `orphans`, also one no claimer names.
fn recover(topic: &Handle<QueueView>, side: Side, pos: u64, orphans: bool) -> Recovery {
    let ring = topic.view.ring();
    let liveness = |owner| topic.liveness(owner);
    if orphans {
        ring.recover_orphan(side, pos, topic.me, liveness, recovery_step)
    } else {
        ring.recover(side, pos, topic.me, liveness, recovery_step)
    }
}

/// A stuck slot that no claimer named at the last paced check
/// (`Recovery::Unclaimed`): an orphan, to finish, if it is still one at the
/// next.
#[derive(Default)]
struct Orphan(Option<(Side, u64)>);

impl Orphan {
    /// Recovers `pos` on `side`, finishing it as an orphan if it was
    /// unclaimed at the previous check too.
    fn recover(&mut self, topic: &Handle<QueueView>, side: Side, pos: u64) -> Recovery {
        let outcome = recover(topic, side, pos, self.0 == Some((side, pos)));
        self.0 = (outcome == Recovery::Unclaimed).then_some((side, pos));
        outcome
    }
}

/// Attaches to a claim table, settling a dead entry's unfinished claim
/// before reusing the entry (its intent is the evidence of who claimed).
fn attach(topic: &Handle<QueueView>, side: Side) -> Result<usize, Error> {
    let ring = topic.view.ring();
    let (entries, role) = match side {
        Side::Push => (ring.producers(), "producer"),
        Side::Consume => (ring.consumers(), "consumer"),
    };
    let settled =
        |intent: u64| intent == NO_INTENT || recover(topic, side, intent, false) != Recovery::Alive;
    table::attach(entries, topic.me, |o| topic.liveness(o), settled).ok_or_else(|| {
        Error::TooManyWorkers {
            topic: topic.name.clone(),
            role,
            max: entries.len() as u32,
        }
    })
}

/// A slot that looked corrupt at the last paced check (see
/// `QueueRing::sane`): corrupt once it looks the same at the next one.
#[derive(Default)]
struct Suspect(Option<(u64, u64)>);

impl Suspect {
    /// `Err(pos)` if `side`'s slot looked corrupt at this check and the
    /// previous one alike.
    fn check(&mut self, ring: &QueueRing<'_>, side: Side) -> Result<(), u64> {
        match ring.sane(side) {
            Ok(()) => {
                self.0 = None;
                Ok(())
            }
            Err(seen) if self.0 == Some(seen) => Err(seen.0),
            Err(seen) => {
                self.0 = Some(seen);
                Ok(())
            }
        }
    }
}

/// Why a push did not happen.
enum PushFail {
    Full,
    Detached,
    Corrupt { pos: u64 },
}

/// A producer of a work queue.
pub struct Producer<T> {
    topic: Handle<QueueView>,
    entry: usize,
    /// Paces the liveness checks of consumers that hold a slot we need.
    pacer: Pacer,
    suspect: Suspect,
    orphan: Orphan,
    _marker: PhantomData<fn(T)>,
}

impl<T> Producer<T> {
    pub(crate) fn new(topic: Handle<QueueView>) -> Result<Self, Error> {
        let entry = attach(&topic, Side::Push)?;
        topic.view.ring().mark_producer();
        let pacer = Pacer::new(topic.opts.check_interval);
        Ok(Producer {
            topic,
            entry,
            pacer,
            suspect: Suspect::default(),
            orphan: Orphan::default(),
            _marker: PhantomData,
        })
    }

    fn entry(&self) -> &ClaimEntry {
        &self.topic.view.ring().producers()[self.entry]
    }

    /// The topic name.
    pub fn topic(&self) -> &str {
        &self.topic.name
    }

    /// Ring capacity in messages.
    pub fn capacity(&self) -> u64 {
        self.topic.view.ring().capacity()
    }

    /// The queue's shared counters.
    pub fn queue_stats(&self) -> QueueStats {
        stats_of(self.topic.view.ring())
    }

    /// Pushes `bytes`, waiting for room until `deadline` (`None`: forever)
    /// if `wait`. A producer stuck behind a consumer known dead frees its
    /// slot (paced: at most once per check interval), whether it waits or
    /// not.
    fn push_raw(
        &mut self,
        bytes: &[u8],
        wait: bool,
        deadline: Option<Instant>,
    ) -> Result<(), PushFail> {
        if !self.topic.in_own_process() || !self.entry().held_by(self.topic.me) {
            return Err(PushFail::Detached);
        }
        let mut waiter = Waiter::new(self.topic.opts.wait, self.topic.opts.check_interval);
        loop {
            let ring = self.topic.view.ring();
            let entry = &ring.producers()[self.entry];
            match ring.push(entry, bytes, || {
                process::stall_if_hooked("stall-after-push-claim")
            }) {
                Ok(_) => {
                    ring.ctrl().not_empty().notify();
                    return Ok(());
                }
                Err(PushBlocked::Corrupt { pos, .. }) => return Err(PushFail::Corrupt { pos }),
                Err(blocked) if self.pacer.due() => {
                    if let PushBlocked::Unreleased { pos } = blocked {
                        if self.orphan.recover(&self.topic, Side::Consume, pos)
                            == Recovery::Recovered
                        {
                            continue;
                        }
                    }
                    let ring = self.topic.view.ring();
                    if let Err(pos) = self.suspect.check(ring, Side::Push) {
                        return Err(PushFail::Corrupt { pos });
                    }
                }
                Err(_) => {}
            }
            if !wait {
                return Err(PushFail::Full);
            }
            let ring = self.topic.view.ring();
            match waiter.wait_once(ring.ctrl().not_full(), || ring.can_push(), deadline) {
                Waited::Deadline => return Err(PushFail::Full),
                Waited::Slept(Wake::TimedOut) => self.pacer.expire(),
                _ => {}
            }
        }
    }
}

impl<T: Message> Producer<T> {
    /// Pushes `value`, waiting while the queue is full.
    ///
    /// # Errors
    ///
    /// [`PushError::Detached`] if this producer no longer holds its
    /// claim-table entry (made before `fork()` in a parent);
    /// [`PushError::Corrupt`] if the queue's slot is corrupt. Both hand the
    /// value back.
    pub fn push(&mut self, value: T) -> Result<(), PushError<T>> {
        let result = self.push_raw(value.as_bytes(), true, None);
        handed_back(result, value)
    }

    /// Pushes `value` if there is room now; hands it back if not.
    ///
    /// # Errors
    ///
    /// [`TryPushError::Full`] when every slot holds a message; otherwise as
    /// [`push`](Self::push).
    pub fn try_push(&mut self, value: T) -> Result<(), TryPushError<T>> {
        let result = self.push_raw(value.as_bytes(), false, None);
        try_handed_back(result, value)
    }

    /// Pushes `value`, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// As [`try_push`](Self::try_push), `Full` once the timeout passed.
    pub fn push_timeout(&mut self, value: T, timeout: Duration) -> Result<(), TryPushError<T>> {
        let result = self.push_raw(value.as_bytes(), true, deadline_after(timeout));
        try_handed_back(result, value)
    }
}

/// The outcome of a waiting push, with the value handed back on failure.
fn handed_back<T>(result: Result<(), PushFail>, value: T) -> Result<(), PushError<T>> {
    match result {
        Ok(()) => Ok(()),
        Err(PushFail::Detached) => Err(PushError::Detached(value)),
        Err(PushFail::Corrupt { pos }) => Err(PushError::Corrupt { pos, value }),
        Err(PushFail::Full) => unreachable!("a push without a deadline waits for room"),
    }
}

/// The outcome of a push that may not wait (long), with the value handed
/// back on failure.
fn try_handed_back<T>(result: Result<(), PushFail>, value: T) -> Result<(), TryPushError<T>> {
    match result {
        Ok(()) => Ok(()),
        Err(PushFail::Full) => Err(TryPushError::Full(value)),
        Err(PushFail::Detached) => Err(TryPushError::Detached(value)),
        Err(PushFail::Corrupt { pos }) => Err(TryPushError::Corrupt { pos, value }),
    }
}

impl Producer<Bytes> {
    fn fits(&self, bytes: &[u8]) -> Result<(), (usize, usize)> {
        let max = self.topic.view.ring().slot_bytes();
        if bytes.len() > max {
            Err((bytes.len(), max))
        } else {
            Ok(())
        }
    }

    /// Pushes `bytes` (at most the slot size), waiting while the queue is full.
    ///
    /// # Errors
    ///
    /// [`PushError::TooLarge`] for a message over the slot size; otherwise
    /// as [`Producer::push`].
    pub fn push_bytes(&mut self, bytes: &[u8]) -> Result<(), PushError<()>> {
        self.fits(bytes)
            .map_err(|(len, max)| PushError::TooLarge { len, max })?;
        let result = self.push_raw(bytes, true, None);
        handed_back(result, ())
    }

    /// Pushes `bytes` if there is room now.
    ///
    /// # Errors
    ///
    /// As [`Producer::try_push`], and `TooLarge`.
    pub fn try_push_bytes(&mut self, bytes: &[u8]) -> Result<(), TryPushError<()>> {
        self.fits(bytes)
            .map_err(|(len, max)| TryPushError::TooLarge { len, max })?;
        let result = self.push_raw(bytes, false, None);
        try_handed_back(result, ())
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        if !self.topic.in_own_process() {
            return; // inherited through fork(): the entry is the parent's
        }
        table::detach(self.entry(), self.topic.me);
        // Consumers waiting for a message check whether producers remain.
        self.topic.view.ring().ctrl().not_empty().notify();
    }
}

/// A consumer of a work queue.
pub struct Consumer<T> {
    topic: Handle<QueueView>,
    entry: usize,
    /// Paces the liveness checks of producers (a dead claimer ahead of us,
    /// or all of them gone).
    pacer: Pacer,
    orphan: Orphan,
    /// Paces the checks of whether every producer is gone, and their last
    /// verdict.
    producers_check: Pacer,
    gone: bool,
    suspect: Suspect,
    scratch: Vec<u8>,
    _marker: PhantomData<fn() -> T>,
}

/// One pop attempt.
enum Pop {
    Got(usize),
    Empty,
    Failed(PopError),
}

impl<T> Consumer<T> {
    pub(crate) fn new(topic: Handle<QueueView>) -> Result<Self, Error> {
        let entry = attach(&topic, Side::Consume)?;
        let scratch = vec![0; topic.view.ring().slot_bytes()];
        let pacer = Pacer::new(topic.opts.check_interval);
        Ok(Consumer {
            topic,
            entry,
            producers_check: pacer.clone(),
            gone: false,
            orphan: Orphan::default(),
            pacer,
            suspect: Suspect::default(),
            scratch,
            _marker: PhantomData,
        })
    }

    fn entry(&self) -> &ClaimEntry {
        &self.topic.view.ring().consumers()[self.entry]
    }

    /// The topic name.
    pub fn topic(&self) -> &str {
        &self.topic.name
    }

    /// The queue's shared counters.
    pub fn queue_stats(&self) -> QueueStats {
        stats_of(self.topic.view.ring())
    }

    /// One pop: a message, or nothing now. Recovers a slot whose producer
    /// is known dead when a liveness check is due (paced per consumer).
    fn try_once(&mut self, out: &mut [u8]) -> Pop {
        if !self.topic.in_own_process() || !self.entry().held_by(self.topic.me) {
            return Pop::Failed(PopError::Detached);
        }
        loop {
            let ring = self.topic.view.ring();
            let entry = &ring.consumers()[self.entry];
            match ring.pop(entry, out, || {
                process::stall_if_hooked("stall-after-pop-claim")
            }) {
                Ok((pos, popped)) => {
                    ring.ctrl().not_full().notify();
                    match popped {
                        Popped::Message { len } => return Pop::Got(len),
                        // Its loss was counted by whoever left it.
                        Popped::Tombstone => continue,
                        Popped::BadLength { .. } => return Pop::Failed(PopError::Corrupt { pos }),
                    }
                }
                Err(PopBlocked::Corrupt { pos, .. }) => {
                    return Pop::Failed(PopError::Corrupt { pos })
                }
                Err(blocked) if self.pacer.due() => {
                    if let PopBlocked::Unpublished { pos } = blocked {
                        if self.orphan.recover(&self.topic, Side::Push, pos) == Recovery::Recovered
                        {
                            continue;
                        }
                    }
                    let ring = self.topic.view.ring();
                    if let Err(pos) = self.suspect.check(ring, Side::Consume) {
                        return Pop::Failed(PopError::Corrupt { pos });
                    }
                    return Pop::Empty;
                }
                Err(_) => return Pop::Empty,
            }
        }
    }

    /// Whether a producer has attached, every producer that did is gone
    /// (dropped, or known dead) and the queue is empty. The producers'
    /// liveness is looked at once per check interval; the verdict holds in
    /// between.
    fn disconnected(&mut self) -> bool {
        let ring = self.topic.view.ring();
        let ctrl = ring.ctrl();
        if !ctrl.had_producer() || ring.can_pop() || ctrl.pushed() != ctrl.popped() {
            self.gone = false;
            return false;
        }
        if self.producers_check.due() {
            let topic = &self.topic;
            self.gone = !ring
                .producers()
                .iter()
                .filter_map(ClaimEntry::owner)
                .any(|owner| !topic.liveness(owner).is_dead());
        }
        self.gone && !ring.can_pop() && ctrl.pushed() == ctrl.popped()
    }

    fn pop_into(
        &mut self,
        out: &mut [u8],
        deadline: Option<Instant>,
    ) -> Result<usize, PopTimeoutError> {
        let mut waiter = Waiter::new(self.topic.opts.wait, self.topic.opts.check_interval);
        // `try_once` reads the clock (`Pacer::due`) on every empty poll. It
        // also paces the spin on the queue's contended lines: the cheaper
        // `due_polled` cost 2-producer/2-consumer throughput about 10% on 2
        // cores (`shmbus bench --only queue`). A deliberate backoff would
        // be the better way to pace, measured the same way.
        loop {
            match self.try_once(out) {
                Pop::Got(len) => return Ok(len),
                Pop::Failed(err) => return Err(err.into()),
                Pop::Empty => {}
            }
            if waiter.checks_due() && self.disconnected() {
                return Err(PopTimeoutError::Disconnected);
            }
            let ring = self.topic.view.ring();
            match waiter.wait_once(ring.ctrl().not_empty(), || ring.can_pop(), deadline) {
                Waited::Deadline => return Err(PopTimeoutError::Timeout),
                Waited::Slept(Wake::TimedOut) => {
                    // A producer may have died: look at once.
                    self.pacer.expire();
                    self.producers_check.expire();
                }
                _ => {}
            }
        }
    }

    fn try_pop_into(&mut self, out: &mut [u8]) -> Result<usize, TryPopError> {
        match self.try_once(out) {
            Pop::Got(len) => Ok(len),
            Pop::Failed(err) => Err(err.into()),
            Pop::Empty if self.disconnected() => Err(TryPopError::Disconnected),
            Pop::Empty => Err(TryPopError::Empty),
        }
    }
}

impl<T: Message> Consumer<T> {
    /// Pops the next message, waiting while the queue is empty.
    ///
    /// # Errors
    ///
    /// [`PopError::Disconnected`] once every producer is gone and the queue
    /// is empty; [`PopError::Corrupt`] for a corrupt slot;
    /// [`PopError::Detached`] if this consumer no longer holds its entry.
    pub fn pop(&mut self) -> Result<T, PopError> {
        self.pop_typed(None)
            .map_err(PopTimeoutError::without_deadline)
    }

    /// Pops the next message, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`pop`](Self::pop), and `Timeout`.
    pub fn pop_timeout(&mut self, timeout: Duration) -> Result<T, PopTimeoutError> {
        self.pop_typed(deadline_after(timeout))
    }

    /// Pops the next message if there is one.
    ///
    /// # Errors
    ///
    /// As [`pop`](Self::pop), and `Empty`.
    pub fn try_pop(&mut self) -> Result<T, TryPopError> {
        let mut value = T::new_zeroed();
        let len = self.try_pop_into(value.as_mut_bytes())?;
        if len != core::mem::size_of::<T>() {
            return Err(TryPopError::Corrupt {
                pos: self.topic.view.ring().ctrl().popped().wrapping_sub(1),
            });
        }
        Ok(value)
    }

    fn pop_typed(&mut self, deadline: Option<Instant>) -> Result<T, PopTimeoutError> {
        let mut value = T::new_zeroed();
        let len = self.pop_into(value.as_mut_bytes(), deadline)?;
        if len != core::mem::size_of::<T>() {
            return Err(PopTimeoutError::Corrupt {
                pos: self.topic.view.ring().ctrl().popped().wrapping_sub(1),
            });
        }
        Ok(value)
    }
}

impl Consumer<Bytes> {
    /// Pops the next message, waiting while the queue is empty. The slice
    /// borrows an internal buffer until the next pop.
    ///
    /// # Errors
    ///
    /// As [`Consumer::pop`].
    pub fn pop_bytes(&mut self) -> Result<&[u8], PopError> {
        let mut scratch = core::mem::take(&mut self.scratch);
        let result = self.pop_into(&mut scratch, None);
        self.scratch = scratch;
        let len = result.map_err(PopTimeoutError::without_deadline)?;
        Ok(&self.scratch[..len])
    }

    /// Pops the next message if there is one.
    ///
    /// # Errors
    ///
    /// As [`Consumer::try_pop`].
    pub fn try_pop_bytes(&mut self) -> Result<&[u8], TryPopError> {
        let mut scratch = core::mem::take(&mut self.scratch);
        let result = self.try_pop_into(&mut scratch);
        self.scratch = scratch;
        let len = result?;
        Ok(&self.scratch[..len])
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        if !self.topic.in_own_process() {
            return; // inherited through fork(): the entry is the parent's
        }
        table::detach(self.entry(), self.topic.me);
    }
}

impl<T> std::fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("topic", &self.topic.name)
            .field("stats", &self.queue_stats())
            .finish()
    }
}

impl<T> std::fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("topic", &self.topic.name)
            .field("stats", &self.queue_stats())
            .finish()
    }
}

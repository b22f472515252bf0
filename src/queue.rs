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
//! consumer process dies after claiming a message and before finishing with
//! it, that message is lost; if a producer process dies after claiming a
//! slot and before publishing its message, that message (whose `push` never
//! returned) is lost. Neither wedges the queue: a process stuck behind a
//! dead claimer notices within the liveness check interval (default 100
//! ms), finishes the slot in its place, and counts the loss
//! ([`QueueStats::lost_in_consume`], [`QueueStats::lost_in_push`]). A slow
//! but live claimer is waited for, never skipped: claims record the
//! claimer's pid and start time.
//!
//! A consumer's `pop` returns [`PopError::Disconnected`] once every producer
//! that attached is gone (dropped or dead) and the queue is empty.

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use crate::error::{Error, PopError, PopTimeoutError, SendError, TryPopError, TryPushError};
use crate::message::{Bytes, Message};
use crate::process;
use crate::ring::queue::{
    table, ClaimEntry, PopBlocked, Popped, PushBlocked, QueueRing, Recovery, NO_INTENT,
};
use crate::ring::Owner;
use crate::topic::{QueueHandle, TopicBuilder};
use crate::wait::{WaitStrategy, Waited, Waiter};

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

/// Attaches to a claim table, settling a dead entry's unfinished claim
/// before reusing the entry (its intent is the evidence of who claimed).
fn attach(topic: &QueueHandle, producers: bool, me: Owner) -> Result<usize, Error> {
    let ring = &topic.ring;
    let (entries, role) = if producers {
        (ring.producers(), "producer")
    } else {
        (ring.consumers(), "consumer")
    };
    let seg = &topic.seg;
    let liveness = |owner| seg.liveness(owner);
    let settled = |intent: u64| {
        intent == NO_INTENT
            || if producers {
                ring.recover_push(intent, liveness) != Recovery::Alive
            } else {
                ring.recover_consume(intent, liveness) != Recovery::Alive
            }
    };
    table::attach(entries, me, liveness, settled).ok_or_else(|| Error::TooManyWorkers {
        topic: topic.name.clone(),
        role,
        max: entries.len() as u32,
    })
}

/// A producer of a work queue.
pub struct Producer<T> {
    topic: QueueHandle,
    entry: usize,
    me: Owner,
    wait: WaitStrategy,
    check_interval: Duration,
    _marker: PhantomData<fn(T)>,
}

impl<T> Producer<T> {
    pub(crate) fn new(topic: QueueHandle, opts: &TopicBuilder<'_>) -> Result<Self, Error> {
        let me = topic.seg.me()?;
        let entry = attach(&topic, true, me)?;
        Ok(Producer {
            topic,
            entry,
            me,
            wait: opts.wait,
            check_interval: opts.check_interval,
            _marker: PhantomData,
        })
    }

    fn entry(&self) -> &ClaimEntry {
        &self.topic.ring.producers()[self.entry]
    }

    /// The topic name.
    pub fn topic(&self) -> &str {
        &self.topic.name
    }

    /// Ring capacity in messages.
    pub fn capacity(&self) -> u64 {
        self.topic.ring.capacity()
    }

    /// The queue's shared counters.
    pub fn queue_stats(&self) -> QueueStats {
        stats_of(&self.topic.ring)
    }

    /// Pushes `bytes`, waiting for room until `deadline` (`None`: forever)
    /// if `wait`. Returns false if there was no room.
    fn push_raw(&mut self, bytes: &[u8], wait: bool, deadline: Option<Instant>) -> bool {
        let ring = &self.topic.ring;
        let entry = &ring.producers()[self.entry];
        let mut waiter = Waiter::new(self.wait, self.check_interval);
        loop {
            match ring.claim_push(entry) {
                Ok(claim) => {
                    ring.write(claim, bytes);
                    process::stall_if_hooked("stall-after-push-claim");
                    ring.publish(claim, entry);
                    ring.ctrl().not_empty().notify();
                    return true;
                }
                Err(PushBlocked::Unreleased { pos }) if waiter.interval_due() => {
                    let seg = &self.topic.seg;
                    if ring.recover_consume(pos, |owner| seg.liveness(owner)) == Recovery::Recovered
                    {
                        continue;
                    }
                }
                Err(_) => {}
            }
            if !wait
                || waiter.wait_once(ring.ctrl().not_full(), || ring.can_push(), deadline)
                    == Waited::Deadline
            {
                return false;
            }
        }
    }
}

impl<T: Message> Producer<T> {
    /// Pushes `value`, waiting while the queue is full.
    pub fn push(&mut self, value: T) {
        self.push_raw(value.as_bytes(), true, None);
    }

    /// Pushes `value` if there is room now; hands it back if not.
    pub fn try_push(&mut self, value: T) -> Result<(), TryPushError<T>> {
        if self.push_raw(value.as_bytes(), false, None) {
            Ok(())
        } else {
            Err(TryPushError::Full(value))
        }
    }

    /// Pushes `value`, waiting at most `timeout` for room.
    pub fn push_timeout(&mut self, value: T, timeout: Duration) -> Result<(), TryPushError<T>> {
        if self.push_raw(value.as_bytes(), true, Some(Instant::now() + timeout)) {
            Ok(())
        } else {
            Err(TryPushError::Full(value))
        }
    }
}

impl Producer<Bytes> {
    fn fits(&self, bytes: &[u8]) -> Result<(), (usize, usize)> {
        let max = self.topic.ring.slot_bytes();
        if bytes.len() > max {
            Err((bytes.len(), max))
        } else {
            Ok(())
        }
    }

    /// Pushes `bytes` (at most the slot size), waiting while the queue is full.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        self.fits(bytes)
            .map_err(|(len, max)| SendError::TooLarge { len, max })?;
        self.push_raw(bytes, true, None);
        Ok(())
    }

    /// Pushes `bytes` if there is room now.
    pub fn try_push_bytes(&mut self, bytes: &[u8]) -> Result<(), TryPushError<()>> {
        self.fits(bytes)
            .map_err(|(len, max)| TryPushError::TooLarge { len, max })?;
        if self.push_raw(bytes, false, None) {
            Ok(())
        } else {
            Err(TryPushError::Full(()))
        }
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        table::detach(self.entry(), self.me);
        // Consumers waiting for a message check whether producers remain.
        self.topic.ring.ctrl().not_empty().notify();
    }
}

/// A consumer of a work queue.
pub struct Consumer<T> {
    topic: QueueHandle,
    entry: usize,
    me: Owner,
    wait: WaitStrategy,
    check_interval: Duration,
    /// When we last found producers alive, so `producers_gone` reads /proc
    /// at most once per check interval.
    producers_seen: Option<Instant>,
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
    pub(crate) fn new(topic: QueueHandle, opts: &TopicBuilder<'_>) -> Result<Self, Error> {
        let me = topic.seg.me()?;
        let entry = attach(&topic, false, me)?;
        let scratch = vec![0; topic.ring.slot_bytes()];
        Ok(Consumer {
            topic,
            entry,
            me,
            wait: opts.wait,
            check_interval: opts.check_interval,
            producers_seen: None,
            scratch,
            _marker: PhantomData,
        })
    }

    fn entry(&self) -> &ClaimEntry {
        &self.topic.ring.consumers()[self.entry]
    }

    /// The topic name.
    pub fn topic(&self) -> &str {
        &self.topic.name
    }

    /// The queue's shared counters.
    pub fn queue_stats(&self) -> QueueStats {
        stats_of(&self.topic.ring)
    }

    fn try_once(&mut self, out: &mut [u8], waiter: &mut Waiter) -> Pop {
        let ring = &self.topic.ring;
        let entry = &ring.consumers()[self.entry];
        loop {
            match ring.claim_pop(entry) {
                Ok(claim) => {
                    let popped = ring.read(claim, out);
                    process::stall_if_hooked("stall-after-pop-claim");
                    ring.release(claim, entry);
                    ring.ctrl().not_full().notify();
                    match popped {
                        Popped::Message { len } => return Pop::Got(len),
                        // Its loss was counted by whoever left it.
                        Popped::Tombstone => continue,
                        Popped::BadLength { .. } => {
                            return Pop::Failed(PopError::Corrupt { pos: claim.pos() })
                        }
                    }
                }
                Err(PopBlocked::Unpublished { pos }) if waiter.interval_due() => {
                    let seg = &self.topic.seg;
                    if ring.recover_push(pos, |owner| seg.liveness(owner)) == Recovery::Recovered {
                        continue;
                    }
                    return Pop::Empty;
                }
                Err(_) => return Pop::Empty,
            }
        }
    }

    /// Whether every producer that attached is gone and the queue is empty.
    fn disconnected(&mut self) -> bool {
        let ring = &self.topic.ring;
        if ring.ctrl().pushed() == 0 || ring.can_pop() {
            return false;
        }
        let now = Instant::now();
        if self
            .producers_seen
            .is_some_and(|seen| now.duration_since(seen) < self.check_interval)
        {
            return false;
        }
        let alive = ring
            .producers()
            .iter()
            .filter_map(ClaimEntry::owner)
            .any(|owner| !self.topic.seg.liveness(owner).is_dead());
        if alive {
            self.producers_seen = Some(now);
        }
        !alive && !ring.can_pop() && ring.ctrl().pushed() == ring.ctrl().popped()
    }

    fn pop_into(
        &mut self,
        out: &mut [u8],
        deadline: Option<Instant>,
    ) -> Result<usize, PopTimeoutError> {
        let mut waiter = Waiter::new(self.wait, self.check_interval);
        loop {
            match self.try_once(out, &mut waiter) {
                Pop::Got(len) => return Ok(len),
                Pop::Failed(PopError::Corrupt { pos }) => {
                    return Err(PopTimeoutError::Corrupt { pos })
                }
                Pop::Failed(_) => unreachable!("try_once reports only corruption"),
                Pop::Empty => {}
            }
            if waiter.checks_due() && self.disconnected() {
                return Err(PopTimeoutError::Disconnected);
            }
            let ring = &self.topic.ring;
            if waiter.wait_once(ring.ctrl().not_empty(), || ring.can_pop(), deadline)
                == Waited::Deadline
            {
                return Err(PopTimeoutError::Timeout);
            }
        }
    }

    fn try_pop_into(&mut self, out: &mut [u8]) -> Result<usize, TryPopError> {
        let mut waiter = Waiter::new(self.wait, self.check_interval);
        // A try never waits, so it may look for a dead claimer at once.
        waiter.interval_due_at_once();
        match self.try_once(out, &mut waiter) {
            Pop::Got(len) => Ok(len),
            Pop::Failed(PopError::Corrupt { pos }) => Err(TryPopError::Corrupt { pos }),
            Pop::Failed(_) => unreachable!("try_once reports only corruption"),
            Pop::Empty if self.disconnected() => Err(TryPopError::Disconnected),
            Pop::Empty => Err(TryPopError::Empty),
        }
    }
}

impl<T: Message> Consumer<T> {
    /// Pops the next message, waiting while the queue is empty.
    pub fn pop(&mut self) -> Result<T, PopError> {
        self.pop_typed(None)
            .map_err(PopTimeoutError::without_deadline)
    }

    /// Pops the next message, waiting at most `timeout`.
    pub fn pop_timeout(&mut self, timeout: Duration) -> Result<T, PopTimeoutError> {
        self.pop_typed(Some(Instant::now() + timeout))
    }

    /// Pops the next message if there is one.
    pub fn try_pop(&mut self) -> Result<T, TryPopError> {
        let mut value = T::new_zeroed();
        let len = self.try_pop_into(value.as_mut_bytes())?;
        if len != core::mem::size_of::<T>() {
            return Err(TryPopError::Corrupt {
                pos: self.topic.ring.ctrl().popped().wrapping_sub(1),
            });
        }
        Ok(value)
    }

    fn pop_typed(&mut self, deadline: Option<Instant>) -> Result<T, PopTimeoutError> {
        let mut value = T::new_zeroed();
        let len = self.pop_into(value.as_mut_bytes(), deadline)?;
        if len != core::mem::size_of::<T>() {
            return Err(PopTimeoutError::Corrupt {
                pos: self.topic.ring.ctrl().popped().wrapping_sub(1),
            });
        }
        Ok(value)
    }
}

impl Consumer<Bytes> {
    /// Pops the next message, waiting while the queue is empty. The slice
    /// borrows an internal buffer until the next pop.
    pub fn pop_bytes(&mut self) -> Result<&[u8], PopError> {
        let mut scratch = core::mem::take(&mut self.scratch);
        let result = self.pop_into(&mut scratch, None);
        self.scratch = scratch;
        let len = result.map_err(PopTimeoutError::without_deadline)?;
        Ok(&self.scratch[..len])
    }

    /// Pops the next message if there is one.
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
        table::detach(self.entry(), self.me);
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

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
//! topic builder's [`WaitStrategy`](crate::WaitStrategy) says (consumers and producers sleep on
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
//!
//! A push returns `Disconnected(value)` ([`PushError::Disconnected`]) only
//! when no consumer can ever take the message: the bus was removed (its
//! name no longer leads to this segment, so no process can open it and
//! attach a consumer) and no consumer is attached. Without a broker, a
//! consumer may attach to a live bus at any time, so a push into a queue
//! with room succeeds and the message waits for it; a full queue checks at
//! each liveness check ([`Producer::is_abandoned`] asks at any time).

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use crate::doorbell::{Doorbell, Words};
use crate::error::{
    Error, PopError, PopTimeoutError, PushError, PushTimeoutError, TryPopError, TryPushError,
};
use crate::handle::Handle;
use crate::message::{Bytes, Message};
use crate::process;
use crate::ring::load_bytes;
use crate::ring::queue::{
    table, Claim, ClaimEntry, PopBlocked, Popped, PushBlocked, QueueRing, Recovery, RecoveryStep,
    Side, NO_INTENT,
};
use crate::segment::views::QueueView;
use crate::select::sealed::Source;
use crate::sync::register_light;
use crate::transport::pipe::{Pacing, Pause, PipeQueue, QueueBlocked, Role};
use crate::transport::PipeBus;
use crate::wait::{deadline_after, LightWaker, Pacer, Waited, Waiter, Wake};
use std::sync::Arc;

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
    /// Producers that skip the wakeup fence after each push now, because
    /// no consumer slept for a while (see "Light producers and consumers"
    /// in the README); a consumer about to sleep then pays for a
    /// `membarrier`. A producer killed meanwhile counts until another
    /// producer takes its place.
    pub light_producers: u32,
    /// Consumers that skip it after each pop now (as `light_producers`,
    /// for producers waiting for room).
    pub light_consumers: u32,
}

fn stats_of(ring: &QueueRing<'_>) -> QueueStats {
    let ctrl = ring.ctrl();
    QueueStats {
        pushed: ctrl.pushed(),
        popped: ctrl.popped(),
        lost_in_push: ctrl.lost_in_push(),
        lost_in_consume: ctrl.lost_in_consume(),
        light_producers: ctrl.not_empty().light_writer_count(),
        light_consumers: ctrl.not_full().light_writer_count(),
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
    let entries = table_of(ring, side);
    let role = match side {
        Side::Push => "producer",
        Side::Consume => "consumer",
    };
    let settled =
        |intent: u64| intent == NO_INTENT || recover(topic, side, intent, false) != Recovery::Alive;
    let index =
        table::attach(entries, topic.me, |o| topic.liveness(o), settled).ok_or_else(|| {
            Error::TooManyWorkers {
                topic: topic.name.clone(),
                role,
                max: entries.len() as u32,
            }
        })?;
    // A dead holder may have been a light writer: out of the count (a
    // holder that left in order turned heavy first, see `detach`).
    written_by(ring, side).forget_dead_writer(entries[index].light_flag());
    Ok(index)
}

/// The claim table of `side`'s endpoints.
fn table_of<'r>(ring: &'r QueueRing<'_>, side: Side) -> &'r [ClaimEntry] {
    match side {
        Side::Push => ring.producers(),
        Side::Consume => ring.consumers(),
    }
}

/// The wake words `side` writes after each push (consumers sleep on them)
/// or pop (producers do).
fn written_by<'r>(ring: &'r QueueRing<'_>, side: Side) -> &'r crate::wait::WakeWords {
    match side {
        Side::Push => ring.ctrl().not_empty(),
        Side::Consume => ring.ctrl().not_full(),
    }
}

/// After a push, commit or abandoned loan (`Side::Push`: wakes one
/// consumer, one message being for one; see "Waking one" in
/// `crate::wait`) or a pop's release (`Side::Consume`: wakes every
/// producer waiting for room), as the light writer `waker` of `entry`.
#[inline(always)]
fn notify_after(ring: &QueueRing<'_>, side: Side, entry: &ClaimEntry, waker: &mut LightWaker) {
    let one = matches!(side, Side::Push);
    written_by(ring, side).notify_shared(waker, entry.light_flag(), one);
}

/// Leaves claim-table entry `index` of `side` in order: heavy first (its
/// light flag is the next holder's), then free.
fn detach(topic: &Handle<QueueView>, side: Side, index: usize, waker: &mut LightWaker) {
    let ring = topic.view.ring();
    let entry = &table_of(ring, side)[index];
    if entry.held_by(topic.me) {
        written_by(ring, side).go_heavy_shared(waker, entry.light_flag());
    }
    table::detach(entry, topic.me);
}

/// What a pop's fast path ([`Consumer::pop_now`], [`Consumer::pop_var_now`])
/// found.
enum Fast {
    /// A message of this many bytes, copied.
    Got(usize),
    /// The message at this position had a length its slot cannot hold: it
    /// was consumed, and is reported corrupt.
    Corrupt(u64),
    /// No message taken (tombstones on the way were released): the slow
    /// path looks.
    Slow,
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
    /// Full, and no more waiting allowed.
    Full,
    Disconnected,
    Detached,
    Corrupt {
        pos: u64,
    },
}

impl From<QueueBlocked> for PushFail {
    /// What a queue on pipes found: full, or abandoned (no consumer, and
    /// the bus removed: none can ever come).
    fn from(blocked: QueueBlocked) -> PushFail {
        match blocked {
            QueueBlocked::Full => PushFail::Full,
            QueueBlocked::Abandoned => PushFail::Disconnected,
        }
    }
}

/// On a bus on pipes: the queue's FIFO, for a producer or consumer of
/// `topic` (at most as many of that role as its table has entries).
fn open_pipe(
    topic: &Handle<QueueView>,
    pipe_bus: Option<&Arc<PipeBus>>,
    role: Role,
) -> Result<Option<Box<PipeQueue>>, Error> {
    let Some(bus) = pipe_bus else {
        return Ok(None);
    };
    let ring = topic.view.ring();
    let max = match role {
        Role::Producer => ring.producers().len(),
        Role::Consumer => ring.consumers().len(),
    };
    let queue = PipeQueue::open(
        Arc::clone(bus),
        &topic.name,
        role,
        ring.slot_bytes(),
        ring.is_variable(),
        ring.capacity() as usize,
        max as u32,
        topic.opts.check_interval,
    )?;
    Ok(Some(Box::new(queue)))
}

/// Live (or possibly live: unknown counts) endpoints in a claim table.
fn live_count(topic: &Handle<QueueView>, entries: &[ClaimEntry]) -> usize {
    entries
        .iter()
        .filter_map(ClaimEntry::owner)
        .filter(|&owner| !topic.liveness(owner).is_dead())
        .count()
}

/// A producer of a work queue.
///
/// Push with [`push`](Self::push) and its `try_`, `_timeout` and
/// `_deadline` forms; every error that can hands the value back.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let name = format!("doc-producer-{}", std::process::id());
/// use shmbus::TryPushError;
/// let bus = shmbus::Bus::open(&name)?;
/// let mut jobs = bus.topic("jobs").capacity(2).producer::<u64>()?;
/// jobs.push(1)?;
/// jobs.push(2)?;
/// match jobs.try_push(3) {
///     Err(TryPushError::Full(job)) => assert_eq!(job, 3), // handed back
///     other => panic!("{other:?}"),
/// }
/// # drop((jobs, bus)); shmbus::Bus::remove(&name)?;
/// # Ok(()) }
/// ```
pub struct Producer<T> {
    topic: Handle<QueueView>,
    entry: usize,
    /// Paces the liveness checks of consumers that hold a slot we need.
    pacer: Pacer,
    suspect: Suspect,
    orphan: Orphan,
    /// The length of the last push that found no room: a variable-size
    /// queue has room for it only when every unit it takes is free.
    wanted: usize,
    /// A bus on pipes: the queue's FIFO, written instead of the ring. See
    /// `crate::transport::pipe`.
    pipe: Option<Box<PipeQueue>>,
    /// Whether our pushes skip the wakeup fence now (see "Light writers
    /// that share" in `crate::wait`).
    waker: LightWaker,
    _marker: PhantomData<fn(T)>,
}

impl<T> Producer<T> {
    /// The longest message a push takes: the slot size (a variable-size
    /// queue's largest message), or on pipes at most what one atomic
    /// pipe write carries.
    fn max_message(&self) -> usize {
        let slot = self.topic.view.ring().slot_bytes();
        match &self.pipe {
            Some(pipe) => slot.min(pipe.max_message()),
            None => slot,
        }
    }

    pub(crate) fn new(
        topic: Handle<QueueView>,
        pipe_bus: Option<&Arc<PipeBus>>,
    ) -> Result<Self, Error> {
        let pipe = open_pipe(&topic, pipe_bus, Role::Producer)?;
        let entry = attach(&topic, Side::Push)?;
        topic.view.ring().mark_producer();
        let pacer = Pacer::new(topic.opts.check_interval);
        Ok(Producer {
            topic,
            entry,
            pacer,
            suspect: Suspect::default(),
            orphan: Orphan::default(),
            wanted: 0,
            pipe,
            waker: LightWaker::new(register_light()),
            _marker: PhantomData,
        })
    }

    fn entry(&self) -> &ClaimEntry {
        &self.topic.view.ring().producers()[self.entry]
    }

    /// A doorbell that rings when the queue may have room (for async
    /// pushes).
    #[cfg(feature = "tokio")]
    pub(crate) fn room_doorbell(&self) -> Result<Doorbell, Error> {
        if let Some(pipe) = &self.pipe {
            // On pipes the helper polls (a copy of) the FIFO for room.
            return Doorbell::new(Words::Fd {
                fd: pipe.fd().try_clone_to_owned().ok().map(Arc::new),
                events: rustix::event::PollFlags::OUT,
                bus: self.topic.view.seg().bus().to_owned(),
            });
        }
        Doorbell::new(Words::NotFull(self.topic.view.clone()))
    }

    /// After a `try_` push found the queue full: arms `bell` to ring once
    /// a consumer frees a slot (or at the liveness check interval, so that
    /// the next `try_` push looks for dead consumers).
    #[cfg(feature = "tokio")]
    pub(crate) fn arm_for_room(&self, bell: &Doorbell) {
        if self.pipe.is_some() {
            bell.arm(|| false, self.topic.opts.check_interval);
            return;
        }
        let ring = self.topic.view.ring();
        bell.arm(
            || ring.can_push_len(self.wanted),
            self.topic.opts.check_interval,
        );
    }

    /// The topic name.
    pub fn topic(&self) -> &str {
        &self.topic.name
    }

    /// Ring capacity: slots, each holding one message; a variable-size
    /// queue's 64-byte units (a message takes its length and a 16-byte
    /// header, rounded up to whole units).
    pub fn capacity(&self) -> u64 {
        self.topic.view.ring().capacity()
    }

    /// The queue's shared counters.
    pub fn queue_stats(&self) -> QueueStats {
        stats_of(self.topic.view.ring())
    }

    /// Another producer of the same queue, with the same options (a new
    /// entry in its producer table).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-prodclone-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut a = bus.producer::<u64>("jobs")?;
    /// let mut b = a.try_clone()?;
    /// let handle = std::thread::spawn(move || b.push(2));
    /// a.push(1)?;
    /// handle.join().unwrap()?;
    /// assert_eq!(a.queue_stats().pushed, 2);
    /// # drop((a, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::TooManyWorkers`] when the
    /// producer table is full.
    pub fn try_clone(&self) -> Result<Self, Error> {
        Producer::new(self.topic.sibling()?, self.pipe.as_ref().map(|p| p.bus()))
    }

    /// How many consumers are attached: the entries of the consumer table
    /// held by processes not known dead (one whose liveness cannot be told
    /// counts). Costs a liveness probe (one `fcntl`) per attached consumer.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-prodrc-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let jobs = bus.producer::<u64>("jobs")?;
    /// assert_eq!(jobs.receiver_count(), 0);
    /// let worker = bus.consumer::<u64>("jobs")?;
    /// assert_eq!(jobs.receiver_count(), 1);
    /// # drop((jobs, worker, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    pub fn receiver_count(&self) -> usize {
        if let Some(pipe) = &self.pipe {
            return pipe.consumers();
        }
        live_count(&self.topic, self.topic.view.ring().consumers())
    }

    /// Whether no consumer can ever take a message pushed now: no consumer
    /// is attached and the bus was removed (its name no longer leads to
    /// this segment, so no process can open it and attach one). This is
    /// when pushes return `Disconnected`.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-prodab-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let jobs = bus.producer::<u64>("jobs")?;
    /// assert!(!jobs.is_abandoned()); // a consumer may still attach
    /// shmbus::Bus::remove(&name)?;
    /// assert!(jobs.is_abandoned());
    /// # Ok(()) }
    /// ```
    pub fn is_abandoned(&self) -> bool {
        if let Some(pipe) = &self.pipe {
            return pipe.is_abandoned();
        }
        self.receiver_count() == 0 && self.topic.view.seg().is_removed()
    }

    /// The paced checks of a push that found the queue full (`blocked`):
    /// frees a slot held by a consumer known dead (`Ok(true)`: try again),
    /// says whether the slot we need is corrupt, or whether no consumer can
    /// ever take the message. Out of line: kept in the push loop, they cost
    /// 1-to-1 queue throughput about 45% on 2 cores (`shmbus bench --only
    /// queue`), though they run once per check interval.
    #[cold]
    #[inline(never)]
    fn blocked_check(&mut self, blocked: PushBlocked) -> Result<bool, PushFail> {
        if let PushBlocked::Unreleased { pos } = blocked {
            if self.orphan.recover(&self.topic, Side::Consume, pos) == Recovery::Recovered {
                return Ok(true);
            }
        }
        let ring = self.topic.view.ring();
        if let Err(pos) = self.suspect.check(ring, Side::Push) {
            return Err(PushFail::Corrupt { pos });
        }
        if self.is_abandoned() {
            return Err(PushFail::Disconnected);
        }
        Ok(false)
    }

    /// Pushes `bytes`, waiting for room until `deadline` (`None`: forever)
    /// if `wait` (see [`claim_raw`](Self::claim_raw)).
    #[inline]
    fn push_raw(
        &mut self,
        bytes: &[u8],
        wait: bool,
        deadline: Option<Instant>,
    ) -> Result<(), PushFail> {
        if self.pipe.is_some() {
            return self.pipe_push(bytes, wait, deadline);
        }
        let claim = self.claim_raw(bytes.len(), wait, deadline)?;
        let ring = self.topic.view.ring();
        let entry = &ring.producers()[self.entry];
        ring.write(claim, bytes);
        process::stall_if_hooked("stall-after-push-claim");
        ring.publish(claim, entry);
        notify_after(ring, Side::Push, entry, &mut self.waker);
        Ok(())
    }

    /// `push_raw` on pipes: one frame into the queue's FIFO.
    #[cold]
    #[inline(never)]
    fn pipe_push(
        &mut self,
        bytes: &[u8],
        wait: bool,
        deadline: Option<Instant>,
    ) -> Result<(), PushFail> {
        if !self.topic.in_own_process() {
            return Err(PushFail::Detached);
        }
        let Some(pipe) = &mut self.pipe else {
            return Err(PushFail::Detached);
        };
        pipe.push(bytes, wait, deadline).map_err(PushFail::from)
    }

    /// Claims the next slot to push, waiting for room until `deadline`
    /// (`None`: forever) if `wait`. A producer stuck behind a consumer
    /// known dead frees its slot (paced: at most once per check interval),
    /// whether it waits or not; at the same paced checks, it gives up with
    /// `Disconnected` if no consumer can ever take the message.
    // Always inlined: out of line (it grew a length for variable-size
    // queues), its `Result<Claim, _>` went through memory and a 64-byte
    // push + pop took 51 ns against 35 (criterion `queue-64B`).
    #[inline(always)]
    fn claim_raw(
        &mut self,
        len: usize,
        wait: bool,
        deadline: Option<Instant>,
    ) -> Result<Claim, PushFail> {
        if !self.topic.in_own_process() || !self.entry().held_by(self.topic.me) {
            return Err(PushFail::Detached);
        }
        // Made at the first wait, not before the first try (which usually
        // succeeds: a push is on the latency path).
        let mut slow: Option<(Waiter, crossbeam_utils::Backoff)> = None;
        loop {
            let ring = self.topic.view.ring();
            match ring.claim_push(&ring.producers()[self.entry], len) {
                Ok(claim) => return Ok(claim),
                Err(PushBlocked::Corrupt { pos, .. }) => return Err(PushFail::Corrupt { pos }),
                Err(blocked) if self.pacer.due() => match self.blocked_check(blocked) {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(fail) => return Err(fail),
                },
                Err(_) => {}
            }
            if !wait {
                self.wanted = len;
                return Err(PushFail::Full);
            }
            let (waiter, backoff) = slow.get_or_insert_with(|| {
                (
                    Waiter::new(self.topic.opts.wait, self.topic.opts.check_interval),
                    crossbeam_utils::Backoff::new(),
                )
            });
            backoff.spin();
            let ring = self.topic.view.ring();
            match waiter.wait_once(ring.ctrl().not_full(), || ring.can_push_len(len), deadline) {
                Waited::Deadline => return Err(PushFail::Full),
                Waited::Slept(Wake::TimedOut) => self.pacer.expire(),
                _ => {}
            }
        }
    }

    /// Loans the next slot for `len` bytes (the callers check the length).
    // Always inlined with the loan's steps, as the broadcast loan is: out
    // of line, a 64-byte push by loan + pop took 55 ns against 37 for a
    // push + pop (criterion `queue-64B`).
    #[inline(always)]
    fn loan_raw<E: HandBack<()>>(
        &mut self,
        len: usize,
        wait: bool,
        deadline: Option<Instant>,
    ) -> Result<QueueLoan<'_, T>, E> {
        if let Some(pipe) = &mut self.pipe {
            // On pipes the loan is a buffer of ours, pushed at the commit,
            // once the queue has room (waited for as a push waits).
            if !self.topic.in_own_process() {
                return Err(E::hand_back(PushFail::Detached, ()));
            }
            pipe.wait_room(wait, deadline)
                .map_err(|blocked| E::hand_back(blocked.into(), ()))?;
            let buf = core::ptr::NonNull::new(pipe.loan_buf(len));
            return Ok(QueueLoan {
                tx: self,
                claim: Claim::detached(0),
                len,
                pipe_buf: buf,
            });
        }
        let claim = self
            .claim_raw(len, wait, deadline)
            .map_err(|fail| E::hand_back(fail, ()))?;
        Ok(QueueLoan {
            tx: self,
            claim,
            len,
            pipe_buf: None,
        })
    }
}

/// The next message of a work queue, being written in place in its slot
/// ([`Producer::loan`], [`Producer::loan_bytes`]): a `&mut T` (typed
/// queues) or a `&mut [u8]` of the loaned length (byte queues) straight
/// into shared memory, through `Deref`/`DerefMut`. Publish it with
/// [`commit`](Self::commit); dropped without one, it pushes nothing (its
/// slot becomes a tombstone that consumers skip).
///
/// Sound as a plain `&mut`: a claimed slot is the producer's alone, since
/// no consumer reads a slot before the producer publishes it, and no
/// survivor touches it while the producer lives. The slot holds an older
/// message's bytes when it is loaned (any bytes are a valid `T`): write
/// every field.
///
/// Consumers take messages in slot order, so a loan held open holds back
/// every message pushed after it (by any producer) until it is committed or
/// dropped: keep loans short. A producer killed while it holds one leaves a
/// slot that survivors recover as for a push that never returned
/// ([`QueueStats::lost_in_push`] counts it), and consumers never see its
/// bytes.
pub struct QueueLoan<'a, T> {
    tx: &'a mut Producer<T>,
    claim: Claim,
    len: usize,
    /// On pipes: the producer's buffer the loan is written in.
    pipe_buf: Option<core::ptr::NonNull<u8>>,
}

impl<T> QueueLoan<'_, T> {
    /// The message's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the message is empty (a zero-length loan).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The slot's payload, `len` bytes.
    #[inline(always)]
    fn bytes(&self) -> *mut u8 {
        if let Some(buf) = self.pipe_buf {
            return buf.as_ptr();
        }
        self.tx.topic.view.ring().payload(self.claim).as_ptr() as *mut u8
    }

    /// Publishes the message: one consumer will take it.
    ///
    /// On pipes and message queues, the message is written to the queue
    /// now. The loan was lent once the queue had room, as a push finds it;
    /// if another producer took that room meanwhile, the commit waits for
    /// room while a consumer lives to make it, and with none left and the
    /// queue full, it is dropped (nothing shared counts it there).
    ///
    /// In a process forked while the loan was held, `commit` (and dropping
    /// the loan) does nothing: the claim is the parent's, which commits or
    /// drops its own copy of the loan.
    #[inline(always)]
    pub fn commit(self) {
        let mut this = core::mem::ManuallyDrop::new(self);
        if !this.tx.topic.in_own_process() {
            return; // inherited through fork(): the claim is the parent's
        }
        if this.pipe_buf.is_some() {
            let len = this.len;
            if let Some(pipe) = &mut this.tx.pipe {
                pipe.commit_loan(len);
            }
            return;
        }
        let (claim, len) = (this.claim, this.len);
        let tx = &mut *this.tx;
        let ring = tx.topic.view.ring();
        let entry = &ring.producers()[tx.entry];
        ring.commit(claim, len, entry);
        notify_after(ring, Side::Push, entry, &mut tx.waker);
    }
}

impl<T> Drop for QueueLoan<'_, T> {
    fn drop(&mut self) {
        if self.pipe_buf.is_some() {
            return; // nothing was claimed
        }
        if !self.tx.topic.in_own_process() {
            return; // inherited through fork(): the claim is the parent's
        }
        let tx = &mut *self.tx;
        let ring = tx.topic.view.ring();
        let entry = &ring.producers()[tx.entry];
        ring.abandon(self.claim, entry);
        // A consumer asleep at this slot must skip the tombstone.
        notify_after(ring, Side::Push, entry, &mut tx.waker);
    }
}

impl<T: Message> core::ops::Deref for QueueLoan<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        const {
            assert!(
                core::mem::align_of::<T>() <= 16,
                "a queue loan needs an alignment of at most 16"
            )
        };
        // SAFETY: the claimed slot's payload is at least `size_of::<T>()`
        // bytes (a typed queue's slot size), 16-aligned (a 16-byte header
        // at the start of a 64-byte-aligned stride), and ours alone until
        // we publish or abandon it (see the type's docs); its bytes are
        // initialized (a segment is zero-filled) and any bytes are a `T`
        // (`FromBytes`).
        unsafe { &*(self.bytes() as *const T) }
    }
}

impl<T: Message> core::ops::DerefMut for QueueLoan<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference.
        unsafe { &mut *(self.bytes() as *mut T) }
    }
}

impl core::ops::Deref for QueueLoan<'_, Bytes> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the claimed slot's payload holds at least `len` bytes
        // (`len <= slot_bytes`, checked at the loan), initialized, and is
        // ours alone until we publish or abandon it (see the type's docs).
        unsafe { core::slice::from_raw_parts(self.bytes(), self.len) }
    }
}

impl core::ops::DerefMut for QueueLoan<'_, Bytes> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference.
        unsafe { core::slice::from_raw_parts_mut(self.bytes(), self.len) }
    }
}

impl<T> std::fmt::Debug for QueueLoan<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueLoan")
            .field("topic", &self.tx.topic.name)
            .field("pos", &self.claim.pos())
            .field("len", &self.len)
            .finish()
    }
}

/// The outcome of a push, with the value handed back on failure, in the
/// error type of its form.
trait HandBack<T>: Sized {
    fn hand_back(fail: PushFail, value: T) -> Self;
    fn too_large(len: usize, max: usize) -> Self;
}

impl<T> HandBack<T> for PushError<T> {
    fn hand_back(fail: PushFail, value: T) -> Self {
        match fail {
            PushFail::Disconnected => PushError::Disconnected(value),
            PushFail::Detached => PushError::Detached(value),
            PushFail::Corrupt { pos } => PushError::Corrupt { pos, value },
            PushFail::Full => unreachable!("a push without a deadline waits for room"),
        }
    }

    fn too_large(len: usize, max: usize) -> Self {
        PushError::TooLarge { len, max }
    }
}

impl<T> HandBack<T> for TryPushError<T> {
    fn hand_back(fail: PushFail, value: T) -> Self {
        match fail {
            PushFail::Full => TryPushError::Full(value),
            PushFail::Disconnected => TryPushError::Disconnected(value),
            PushFail::Detached => TryPushError::Detached(value),
            PushFail::Corrupt { pos } => TryPushError::Corrupt { pos, value },
        }
    }

    fn too_large(len: usize, max: usize) -> Self {
        TryPushError::TooLarge { len, max }
    }
}

impl<T> HandBack<T> for PushTimeoutError<T> {
    fn hand_back(fail: PushFail, value: T) -> Self {
        match fail {
            PushFail::Full => PushTimeoutError::Timeout(value),
            PushFail::Disconnected => PushTimeoutError::Disconnected(value),
            PushFail::Detached => PushTimeoutError::Detached(value),
            PushFail::Corrupt { pos } => PushTimeoutError::Corrupt { pos, value },
        }
    }

    fn too_large(len: usize, max: usize) -> Self {
        PushTimeoutError::TooLarge { len, max }
    }
}

impl<T: Message> Producer<T> {
    fn push_value<E: HandBack<T>>(
        &mut self,
        value: T,
        wait: bool,
        deadline: Option<Instant>,
    ) -> Result<(), E> {
        self.push_raw(value.as_bytes(), wait, deadline)
            .map_err(|fail| E::hand_back(fail, value))
    }

    /// Pushes `value`, waiting while the queue is full.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-push-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut jobs = bus.producer::<u64>("jobs")?;
    /// jobs.push(7)?;
    /// assert_eq!(jobs.queue_stats().pushed, 1);
    /// # drop((jobs, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`PushError::Disconnected`] when no consumer can ever take it (see
    /// [`is_abandoned`](Self::is_abandoned); checked while the queue is
    /// full); [`PushError::Detached`] if this producer no longer holds its
    /// claim-table entry (made before `fork()` in a parent);
    /// [`PushError::Corrupt`] if the queue's slot is corrupt. All hand the
    /// value back.
    pub fn push(&mut self, value: T) -> Result<(), PushError<T>> {
        self.push_value(value, true, None)
    }

    /// Pushes `value` if there is room now; hands it back if not.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-trypush-{}", std::process::id());
    /// use shmbus::TryPushError;
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut jobs = bus.topic("jobs").capacity(2).producer::<u64>()?;
    /// jobs.try_push(1)?;
    /// jobs.try_push(2)?;
    /// assert_eq!(jobs.try_push(3), Err(TryPushError::Full(3)));
    /// # drop((jobs, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`TryPushError::Full`] when every slot holds a message; otherwise as
    /// [`push`](Self::push).
    pub fn try_push(&mut self, value: T) -> Result<(), TryPushError<T>> {
        self.push_value(value, false, None)
    }

    /// Pushes `value`, waiting at most `timeout` for room.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-pushto-{}", std::process::id());
    /// use shmbus::PushTimeoutError;
    /// use std::time::Duration;
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut jobs = bus.topic("jobs").capacity(2).producer::<u64>()?;
    /// jobs.push(1)?;
    /// jobs.push(2)?;
    /// let full = jobs.push_timeout(3, Duration::from_millis(5));
    /// assert_eq!(full, Err(PushTimeoutError::Timeout(3)));
    /// # drop((jobs, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`PushTimeoutError::Timeout`] once the timeout passed with the queue
    /// still full; otherwise as [`push`](Self::push).
    pub fn push_timeout(&mut self, value: T, timeout: Duration) -> Result<(), PushTimeoutError<T>> {
        self.push_value(value, true, deadline_after(timeout))
    }

    /// Pushes `value`, waiting for room until `deadline`.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-pushdl-{}", std::process::id());
    /// use std::time::{Duration, Instant};
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut jobs = bus.producer::<u64>("jobs")?;
    /// jobs.push_deadline(1, Instant::now() + Duration::from_millis(5))?;
    /// # drop((jobs, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`push_timeout`](Self::push_timeout).
    pub fn push_deadline(
        &mut self,
        value: T,
        deadline: Instant,
    ) -> Result<(), PushTimeoutError<T>> {
        self.push_value(value, true, Some(deadline))
    }

    /// Loans the next slot to write the message in place, as a `&mut T`
    /// (see [`QueueLoan`]), and push it with [`QueueLoan::commit`]; waits
    /// while the queue is full, as [`push`](Self::push) does. Dropped
    /// without a commit, the loan pushes nothing.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-qloan-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut jobs = bus.producer::<[u64; 4]>("jobs")?;
    /// let mut worker = bus.consumer::<[u64; 4]>("jobs")?;
    /// let mut job = jobs.loan()?;
    /// job[0] = 7; // written in the slot itself
    /// job[1..].fill(0);
    /// job.commit();
    /// drop(jobs.loan()?); // abandoned: nothing pushed
    /// assert_eq!(worker.pop()?, [7, 0, 0, 0]);
    /// assert!(worker.try_pop().is_err());
    /// # drop((jobs, worker, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`push`](Self::push), with nothing to hand back.
    #[inline(always)]
    pub fn loan(&mut self) -> Result<QueueLoan<'_, T>, PushError<()>> {
        self.loan_raw(core::mem::size_of::<T>(), true, None)
    }

    /// As [`loan`](Self::loan), if there is room now.
    ///
    /// # Errors
    ///
    /// As [`try_push`](Self::try_push), with nothing to hand back.
    #[inline(always)]
    pub fn try_loan(&mut self) -> Result<QueueLoan<'_, T>, TryPushError<()>> {
        self.loan_raw(core::mem::size_of::<T>(), false, None)
    }

    /// As [`loan`](Self::loan), waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// As [`push_timeout`](Self::push_timeout), with nothing to hand back.
    pub fn loan_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<QueueLoan<'_, T>, PushTimeoutError<()>> {
        self.loan_raw(core::mem::size_of::<T>(), true, deadline_after(timeout))
    }
}

impl Producer<Bytes> {
    fn push_bytes_raw<E: HandBack<()>>(
        &mut self,
        bytes: &[u8],
        wait: bool,
        deadline: Option<Instant>,
    ) -> Result<(), E> {
        let max = self.max_message();
        if bytes.len() > max {
            return Err(E::too_large(bytes.len(), max));
        }
        self.push_raw(bytes, wait, deadline)
            .map_err(|fail| E::hand_back(fail, ()))
    }

    /// Pushes `bytes` (at most the slot size), waiting while the queue is full.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-pushb-{}", std::process::id());
    /// use shmbus::PushError;
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut jobs = bus.topic("jobs").slot_size(8).producer_bytes()?;
    /// jobs.push_bytes(b"job-1")?;
    /// assert_eq!(
    ///     jobs.push_bytes(b"far too long"),
    ///     Err(PushError::TooLarge { len: 12, max: 8 })
    /// );
    /// # drop((jobs, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`PushError::TooLarge`] for a message over the slot size; otherwise
    /// as [`Producer::push`].
    pub fn push_bytes(&mut self, bytes: &[u8]) -> Result<(), PushError<()>> {
        self.push_bytes_raw(bytes, true, None)
    }

    /// Pushes `bytes` if there is room now.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-trypushb-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut jobs = bus.topic("jobs").producer_bytes()?;
    /// jobs.try_push_bytes(b"job-1")?;
    /// # drop((jobs, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Producer::try_push`], and `TooLarge`.
    pub fn try_push_bytes(&mut self, bytes: &[u8]) -> Result<(), TryPushError<()>> {
        self.push_bytes_raw(bytes, false, None)
    }

    /// Pushes `bytes`, waiting at most `timeout` for room.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-pushbto-{}", std::process::id());
    /// use std::time::Duration;
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut jobs = bus.topic("jobs").producer_bytes()?;
    /// jobs.push_bytes_timeout(b"job-1", Duration::from_millis(5))?;
    /// # drop((jobs, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Producer::push_timeout`], and `TooLarge`.
    pub fn push_bytes_timeout(
        &mut self,
        bytes: &[u8],
        timeout: Duration,
    ) -> Result<(), PushTimeoutError<()>> {
        self.push_bytes_raw(bytes, true, deadline_after(timeout))
    }

    /// Pushes `bytes`, waiting for room until `deadline`.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-pushbdl-{}", std::process::id());
    /// use std::time::{Duration, Instant};
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut jobs = bus.topic("jobs").producer_bytes()?;
    /// jobs.push_bytes_deadline(b"job-1", Instant::now() + Duration::from_millis(5))?;
    /// # drop((jobs, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Producer::push_timeout`], and `TooLarge`.
    pub fn push_bytes_deadline(
        &mut self,
        bytes: &[u8],
        deadline: Instant,
    ) -> Result<(), PushTimeoutError<()>> {
        self.push_bytes_raw(bytes, true, Some(deadline))
    }

    /// Loans the next slot for a message of `len` bytes (at most the slot
    /// size), as a `&mut [u8]` into shared memory (see [`QueueLoan`]), to
    /// push with [`QueueLoan::commit`]; waits while the queue is full.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-qloanb-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut jobs = bus.topic("jobs").slot_size(64).producer_bytes()?;
    /// let mut worker = bus.topic("jobs").consumer_bytes()?;
    /// let mut job = jobs.loan_bytes(5)?;
    /// job.copy_from_slice(b"job-1");
    /// job.commit();
    /// assert_eq!(worker.pop_bytes()?, b"job-1");
    /// # drop((jobs, worker, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`PushError::TooLarge`] for a length over the slot size; otherwise
    /// as [`Producer::push`].
    #[inline(always)]
    pub fn loan_bytes(&mut self, len: usize) -> Result<QueueLoan<'_, Bytes>, PushError<()>> {
        self.check_loan_len(len)?;
        self.loan_raw(len, true, None)
    }

    /// As [`loan_bytes`](Self::loan_bytes), if there is room now.
    ///
    /// # Errors
    ///
    /// As [`try_push_bytes`](Self::try_push_bytes).
    #[inline(always)]
    pub fn try_loan_bytes(&mut self, len: usize) -> Result<QueueLoan<'_, Bytes>, TryPushError<()>> {
        self.check_loan_len(len)?;
        self.loan_raw(len, false, None)
    }

    /// As [`loan_bytes`](Self::loan_bytes), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`push_bytes_timeout`](Self::push_bytes_timeout).
    pub fn loan_bytes_timeout(
        &mut self,
        len: usize,
        timeout: Duration,
    ) -> Result<QueueLoan<'_, Bytes>, PushTimeoutError<()>> {
        self.check_loan_len(len)?;
        self.loan_raw(len, true, deadline_after(timeout))
    }

    fn check_loan_len<E: HandBack<()>>(&self, len: usize) -> Result<(), E> {
        let max = self.max_message();
        if len > max {
            return Err(E::too_large(len, max));
        }
        Ok(())
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        if !self.topic.in_own_process() {
            return; // inherited through fork(): the entry is the parent's
        }
        detach(&self.topic, Side::Push, self.entry, &mut self.waker);
        // Consumers waiting for a message check whether producers remain.
        self.topic.view.ring().ctrl().not_empty().notify();
    }
}

/// A consumer of a work queue.
///
/// Pop with [`pop`](Self::pop) and its `try_`, `_timeout`, `_deadline` and
/// `_into` forms, or iterate:
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let name = format!("doc-consumer-{}", std::process::id());
/// let bus = shmbus::Bus::open(&name)?;
/// let mut jobs = bus.producer::<u64>("jobs")?;
/// let mut worker = bus.consumer::<u64>("jobs")?;
/// for job in 0..3 {
///     jobs.push(job)?;
/// }
/// drop(jobs); // the iteration ends once the queue is drained
/// let mut done = Vec::new();
/// for job in &mut worker {
///     done.push(job?);
/// }
/// assert_eq!(done, [0, 1, 2]);
/// # drop((worker, bus)); shmbus::Bus::remove(&name)?;
/// # Ok(()) }
/// ```
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
    /// The pollable fd, once asked for ([`event_fd`](Self::event_fd)).
    bell: Option<Doorbell>,
    /// A bus on pipes: the queue's FIFO, read instead of the ring.
    pipe: Option<Box<PipeQueue>>,
    /// Whether our pops skip the wakeup fence now (see "Light writers
    /// that share" in `crate::wait`).
    waker: LightWaker,
    _marker: PhantomData<fn() -> T>,
}

/// One pop attempt.
enum Pop {
    Got(Taken),
    Empty,
    Failed(PopError),
}

/// What a pop does with the message it claims.
enum Take<'o> {
    /// Copies it into the buffer and releases the slot.
    Copy(&'o mut [u8]),
    /// Keeps the slot claimed, for reading in place.
    Hold,
}

/// A message popped.
enum Taken {
    /// Copied out: its length.
    Copied(usize),
    /// Still claimed: the claim, the message's first byte in the slot,
    /// and its length.
    Held(Claim, core::ptr::NonNull<u8>, usize),
}

impl Taken {
    /// The length of a copied message (`Take::Copy` never holds: a held
    /// claim here would never be released).
    fn copied(self) -> usize {
        match self {
            Taken::Copied(len) => len,
            Taken::Held(..) => unreachable!("Take::Copy never holds a claim"),
        }
    }
}

impl<T> Consumer<T> {
    pub(crate) fn new(
        topic: Handle<QueueView>,
        pipe_bus: Option<&Arc<PipeBus>>,
    ) -> Result<Self, Error> {
        let pipe = open_pipe(&topic, pipe_bus, Role::Consumer)?;
        let entry = attach(&topic, Side::Consume)?;
        // Variable-size messages are copied out of their units into a
        // buffer grown to fit (`pop_bytes_raw`), not one of the largest
        // size: that is half the arena.
        let ring = topic.view.ring();
        let scratch = vec![
            0;
            if ring.is_variable() {
                0
            } else {
                ring.slot_bytes()
            }
        ];
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
            bell: None,
            pipe,
            waker: LightWaker::new(register_light()),
            _marker: PhantomData,
        })
    }

    fn entry(&self) -> &ClaimEntry {
        &self.topic.view.ring().consumers()[self.entry]
    }

    /// A file descriptor that is readable when this consumer may have
    /// something to pop (a message, or its producers are gone, or it was
    /// detached): for `epoll`, `poll`, mio, libuv or Python's `selectors`.
    /// When it is readable, call the `try_` pops until one says `Empty`
    /// (that re-arms it). With several consumers, another may take the
    /// message first: then the `try_` pop says `Empty`, and that is all.
    /// Costs and workings as [`Subscriber::event_fd`](crate::Subscriber::event_fd).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the eventfd or the helper thread cannot be made.
    pub fn event_fd(&mut self) -> Result<std::os::fd::BorrowedFd<'_>, Error> {
        // On pipes too: the helper polls the FIFO, and rings at the check
        // interval so that a `try_` pop notices gone producers.
        Ok(self.doorbell()?.fd())
    }

    /// The doorbell behind [`event_fd`](Self::event_fd), made if need be,
    /// and armed.
    pub(crate) fn doorbell(&mut self) -> Result<&Doorbell, Error> {
        let view = &self.topic.view;
        let pipe = self.pipe.as_ref().map(|p| p.fd().try_clone_to_owned());
        let bell = Doorbell::take_or_make(&mut self.bell, || match pipe {
            // On pipes the helper polls (a copy of) the queue's FIFO.
            Some(fd) => Words::Fd {
                fd: fd.ok().map(Arc::new),
                events: rustix::event::PollFlags::IN,
                bus: view.seg().bus().to_owned(),
            },
            None => Words::NotEmpty(view.clone()),
        })?;
        bell.arm(|| self.ready_now(), self.topic.opts.check_interval);
        Ok(self.bell.insert(bell))
    }

    /// With a pollable fd: arms it (see `crate::doorbell`), after a `try_`
    /// pop found nothing.
    fn arm_bell(&self) {
        if let Some(bell) = &self.bell {
            bell.arm(|| self.ready_now(), self.topic.opts.check_interval);
        }
    }

    /// The topic name.
    pub fn topic(&self) -> &str {
        &self.topic.name
    }

    /// The queue's shared counters.
    pub fn queue_stats(&self) -> QueueStats {
        stats_of(self.topic.view.ring())
    }

    /// Another consumer of the same queue, with the same options (a new
    /// entry in its consumer table): each message goes to one of them.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-consclone-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut jobs = bus.producer::<u64>("jobs")?;
    /// let mut a = bus.consumer::<u64>("jobs")?;
    /// let mut b = a.try_clone()?;
    /// jobs.push(1)?;
    /// jobs.push(2)?;
    /// let mut got = [a.pop()?, b.pop()?];
    /// got.sort();
    /// assert_eq!(got, [1, 2]);
    /// # drop((jobs, a, b, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::TooManyWorkers`] when the
    /// consumer table is full.
    pub fn try_clone(&self) -> Result<Self, Error> {
        Consumer::new(self.topic.sibling()?, self.pipe.as_ref().map(|p| p.bus()))
    }

    /// One pop: a message, or nothing now. Recovers a slot whose producer
    /// is known dead when a liveness check is due (paced per consumer).
    fn try_once(&mut self, take: &mut Take<'_>) -> Pop {
        if self.pipe.is_some() {
            return self.pipe_try_once(take);
        }
        if !self.topic.in_own_process() || !self.entry().held_by(self.topic.me) {
            return Pop::Failed(PopError::Detached);
        }
        loop {
            let ring = self.topic.view.ring();
            let entry = &ring.consumers()[self.entry];
            // A message taken (copied, or held claimed), or the position
            // and what else was there (its slot released).
            let claimed = match take {
                Take::Copy(out) => ring
                    .pop(entry, out, || {
                        process::stall_if_hooked("stall-after-pop-claim")
                    })
                    .map(|(pos, popped)| match popped {
                        Popped::Message { len } => Ok(Taken::Copied(len)),
                        other => Err((pos, other)),
                    }),
                Take::Hold => ring.claim_pop(entry).map(|claim| match ring.lend(claim) {
                    Ok((words, len)) => Ok(Taken::Held(
                        claim,
                        core::ptr::NonNull::from(words).cast(),
                        len,
                    )),
                    Err(popped) => {
                        ring.release(claim, entry);
                        Err((claim.pos(), popped))
                    }
                }),
            };
            match claimed {
                Ok(Ok(taken)) => {
                    // A held slot wakes producers when it is released.
                    if let Taken::Copied(_) = taken {
                        notify_after(ring, Side::Consume, entry, &mut self.waker);
                    }
                    return Pop::Got(taken);
                }
                Ok(Err((pos, popped))) => {
                    notify_after(ring, Side::Consume, entry, &mut self.waker);
                    match popped {
                        Popped::BadLength { .. } => return Pop::Failed(PopError::Corrupt { pos }),
                        // A tombstone: its loss was counted by whoever left it.
                        _ => continue,
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

    /// `try_once` on pipes: one frame read from the queue's FIFO (a whole
    /// one, or none: see `crate::transport::pipe`).
    #[cold]
    fn pipe_try_once(&mut self, take: &mut Take<'_>) -> Pop {
        if !self.topic.in_own_process() {
            return Pop::Failed(PopError::Detached);
        }
        let Some(pipe) = &mut self.pipe else {
            return Pop::Failed(PopError::Detached);
        };
        match pipe.pop() {
            Ok(None) => Pop::Empty,
            Err(pos) => Pop::Failed(PopError::Corrupt { pos }),
            Ok(Some((len, pos))) => match take {
                Take::Copy(out) if len > out.len() => {
                    // Not taken (as in shared memory): the caller reads
                    // it again into a buffer that fits.
                    pipe.unpop(len, pos);
                    Pop::Got(Taken::Copied(len))
                }
                Take::Copy(out) => {
                    out[..len].copy_from_slice(pipe.held_bytes(len));
                    Pop::Got(Taken::Copied(len))
                }
                Take::Hold => Pop::Got(Taken::Held(Claim::detached(pos), pipe.held(), len)),
            },
        }
    }

    /// Whether a producer has attached, every producer that did is gone
    /// (dropped, or known dead) and the queue is empty. The producers'
    /// liveness is looked at once per check interval; the verdict holds in
    /// between.
    fn disconnected(&mut self) -> bool {
        if let Some(pipe) = &self.pipe {
            if self.producers_check.due() {
                self.gone = pipe.disconnected();
            }
            return self.gone && !pipe.ready();
        }
        let ring = self.topic.view.ring();
        let ctrl = ring.ctrl();
        if !ctrl.had_producer() || ring.can_pop() || ctrl.pushed() != ctrl.popped() {
            self.gone = false;
            return false;
        }
        if self.producers_check.due() {
            self.gone = live_count(&self.topic, ring.producers()) == 0;
        }
        self.gone && !ring.can_pop() && ctrl.pushed() == ctrl.popped()
    }

    /// Pops into `out`: one attempt if not `wait` (`Timeout` then means
    /// empty), else waiting until `deadline` (`None`: for ever).
    #[inline]
    fn pop_raw(
        &mut self,
        out: &mut [u8],
        wait: bool,
        deadline: Option<Instant>,
    ) -> Result<usize, PopTimeoutError> {
        match self.pop_now(out) {
            Fast::Got(len) => return Ok(len),
            Fast::Corrupt(pos) => return Err(PopTimeoutError::Corrupt { pos }),
            Fast::Slow => {}
        }
        self.take(Take::Copy(out), wait, deadline)
            .map(Taken::copied)
    }

    /// The fast path of a copying pop from a fixed-size queue in shared
    /// memory: the next message copied into `out`, as `try_once` takes it,
    /// without the layers that serve every kind of take and wait (callgrind,
    /// a 64-byte `push_bytes` + `pop_bytes` in one process: 581
    /// instructions through them, 499 this way, 2026-12-07). `Slow` when nothing was
    /// claimed (empty, a stuck slot, a pipe, a variable-size queue, a
    /// forked child's copy, a lost entry): the slow path looks again and
    /// acts on what it finds.
    #[inline(always)]
    fn pop_now(&mut self, out: &mut [u8]) -> Fast {
        let ring = self.topic.view.ring();
        if ring.is_variable() || !self.fast_path_open() {
            return Fast::Slow;
        }
        let entry = &ring.consumers()[self.entry];
        loop {
            let Ok((pos, popped)) = ring.pop(entry, out, || {
                process::stall_if_hooked("stall-after-pop-claim")
            }) else {
                return Fast::Slow;
            };
            // A tombstone's slot is freed as a message's is.
            notify_after(ring, Side::Consume, entry, &mut self.waker);
            match popped {
                Popped::Message { len } => return Fast::Got(len),
                Popped::Tombstone => continue,
                Popped::BadLength { .. } => return Fast::Corrupt(pos),
            }
        }
    }

    /// Whether a pop may take a fast path: in shared memory, in the process
    /// that attached this consumer, which still holds its entry.
    #[inline(always)]
    fn fast_path_open(&self) -> bool {
        self.pipe.is_none() && self.topic.in_own_process() && self.entry().held_by(self.topic.me)
    }

    /// [`pop_now`](Self::pop_now) for a variable-size queue: the next
    /// message copied into `scratch`, which takes its length (a claimed
    /// message is this consumer's alone until released, so the buffer can
    /// grow first). The slow path holds it as `pop_bytes_ref` does and
    /// copies it out of the guard (callgrind, 64-byte `push_bytes` +
    /// `pop_bytes` in one process: 822 instructions that way, 723 this
    /// way, 2026-12-07).
    #[inline]
    fn pop_var_now(&mut self, scratch: &mut Vec<u8>) -> Fast {
        if !self.fast_path_open() {
            return Fast::Slow;
        }
        let ring = self.topic.view.ring();
        let entry = &ring.consumers()[self.entry];
        loop {
            let Ok(claim) = ring.claim_pop(entry) else {
                return Fast::Slow;
            };
            let lent = ring.lend(claim);
            if let Ok((words, len)) = lent {
                scratch.resize(len, 0);
                load_bytes(words, scratch);
            }
            ring.release(claim, entry);
            notify_after(ring, Side::Consume, entry, &mut self.waker);
            match lent {
                Ok((_, len)) => return Fast::Got(len),
                Err(Popped::Tombstone) => continue,
                // (`lend` refuses only tombstones and bad lengths.)
                Err(_) => return Fast::Corrupt(claim.pos()),
            }
        }
    }

    /// Pops as `take` says: one attempt if not `wait`, else waiting until
    /// `deadline`. Always inlined: out of line it cost a 64-byte push + pop
    /// 28 of its 572 instructions (callgrind, one process).
    #[inline(always)]
    fn take(
        &mut self,
        mut take: Take<'_>,
        wait: bool,
        deadline: Option<Instant>,
    ) -> Result<Taken, PopTimeoutError> {
        if wait {
            return self.pop_waiting(&mut take, deadline);
        }
        match self.try_once(&mut take) {
            Pop::Got(taken) => Ok(taken),
            Pop::Failed(err) => Err(err.into()),
            Pop::Empty if self.disconnected() => {
                if let Some(bell) = &self.bell {
                    bell.ring();
                }
                Err(PopTimeoutError::Disconnected)
            }
            Pop::Empty => {
                self.arm_bell();
                Err(PopTimeoutError::Timeout)
            }
        }
    }

    /// Pops as `take` says, waiting until `deadline` (`None`: for ever).
    fn pop_waiting(
        &mut self,
        take: &mut Take<'_>,
        deadline: Option<Instant>,
    ) -> Result<Taken, PopTimeoutError> {
        if self.pipe.is_some() {
            return self.pipe_pop_waiting(take, deadline);
        }
        // Made after the first empty look, not before it (a pop that finds
        // a message is on the latency path).
        let mut waiter: Option<Waiter> = None;
        // `try_once` reads the clock (`Pacer::due`) on every empty poll. It
        // also paces the spin on the queue's contended lines: the cheaper
        // `due_polled` cost 2-producer/2-consumer throughput about 10% on 2
        // cores (`shmbus bench --only queue`). A deliberate backoff would
        // be the better way to pace, measured the same way.
        loop {
            match self.try_once(take) {
                Pop::Got(taken) => return Ok(taken),
                Pop::Failed(err) => return Err(err.into()),
                Pop::Empty => {}
            }
            let waiter = waiter.get_or_insert_with(|| {
                Waiter::new(self.topic.opts.wait, self.topic.opts.check_interval)
            });
            if waiter.checks_due() && self.disconnected() {
                return Err(PopTimeoutError::Disconnected);
            }
            match waiter.wait_once(self.words(), || self.ready_now(), deadline) {
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
}

impl<T> Consumer<T> {
    /// `pop_waiting` on pipes: polls the FIFO between attempts.
    #[cold]
    fn pipe_pop_waiting(
        &mut self,
        take: &mut Take<'_>,
        deadline: Option<Instant>,
    ) -> Result<Taken, PopTimeoutError> {
        // The wait strategy as in shared memory, a look being a read of
        // the FIFO (see `transport::pipe::Pacing`).
        let mut pacing = Pacing::new(self.topic.opts.wait);
        loop {
            match self.try_once(take) {
                Pop::Got(taken) => return Ok(taken),
                Pop::Failed(err) => return Err(err.into()),
                Pop::Empty => {}
            }
            let Pause::Check { sleep } =
                pacing.pause(|| self.pipe.as_deref().is_some_and(PipeQueue::readable))
            else {
                continue;
            };
            if self.disconnected() {
                return Err(PopTimeoutError::Disconnected);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(PopTimeoutError::Timeout);
            }
            if !sleep {
                continue;
            }
            let Some(pipe) = &self.pipe else {
                return Err(PopTimeoutError::Timeout);
            };
            if !pipe.wait_readable(deadline) {
                return Err(PopTimeoutError::Timeout);
            }
            pacing.slept();
        }
    }
}

impl<T: Message> Consumer<T> {
    /// Pops the next message, waiting while the queue is empty.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-pop-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut jobs = bus.producer::<u64>("jobs")?;
    /// let mut worker = bus.consumer::<u64>("jobs")?;
    /// jobs.push(7)?;
    /// assert_eq!(worker.pop()?, 7);
    /// # drop((jobs, worker, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`PopError::Disconnected`] once every producer is gone and the queue
    /// is empty; [`PopError::Corrupt`] for a corrupt slot;
    /// [`PopError::Detached`] if this consumer no longer holds its entry.
    pub fn pop(&mut self) -> Result<T, PopError> {
        self.pop_value(true, None)
            .map_err(PopTimeoutError::without_deadline)
    }

    /// Pops the next message, waiting at most `timeout`.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-popto-{}", std::process::id());
    /// use shmbus::PopTimeoutError;
    /// use std::time::Duration;
    /// let bus = shmbus::Bus::open(&name)?;
    /// let _jobs = bus.producer::<u64>("jobs")?;
    /// let mut worker = bus.consumer::<u64>("jobs")?;
    /// let none = worker.pop_timeout(Duration::from_millis(5));
    /// assert_eq!(none, Err(PopTimeoutError::Timeout));
    /// # drop((_jobs, worker, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`pop`](Self::pop), and [`PopTimeoutError::Timeout`].
    pub fn pop_timeout(&mut self, timeout: Duration) -> Result<T, PopTimeoutError> {
        self.pop_value(true, deadline_after(timeout))
    }

    /// Pops the next message, waiting until `deadline`.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-popdl-{}", std::process::id());
    /// use std::time::{Duration, Instant};
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut jobs = bus.producer::<u64>("jobs")?;
    /// let mut worker = bus.consumer::<u64>("jobs")?;
    /// jobs.push(7)?;
    /// assert_eq!(worker.pop_deadline(Instant::now() + Duration::from_millis(5))?, 7);
    /// # drop((jobs, worker, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`pop_timeout`](Self::pop_timeout).
    pub fn pop_deadline(&mut self, deadline: Instant) -> Result<T, PopTimeoutError> {
        self.pop_value(true, Some(deadline))
    }

    /// Pops the next message if there is one.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-trypop-{}", std::process::id());
    /// use shmbus::TryPopError;
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut jobs = bus.producer::<u64>("jobs")?;
    /// let mut worker = bus.consumer::<u64>("jobs")?;
    /// assert_eq!(worker.try_pop(), Err(TryPopError::Empty));
    /// jobs.push(7)?;
    /// assert_eq!(worker.try_pop()?, 7);
    /// # drop((jobs, worker, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`pop`](Self::pop), and [`TryPopError::Empty`].
    pub fn try_pop(&mut self) -> Result<T, TryPopError> {
        self.pop_value(false, None)
            .map_err(PopTimeoutError::without_wait)
    }

    /// Pops the next message into `out`, without a temporary: for large
    /// messages. On an error, `out` holds unspecified bytes (still a valid
    /// `T`).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-popinto-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut jobs = bus.producer::<[u8; 4096]>("pages")?;
    /// let mut worker = bus.consumer::<[u8; 4096]>("pages")?;
    /// jobs.push([1; 4096])?;
    /// let mut page = Box::new([0u8; 4096]);
    /// worker.pop_into(&mut page)?;
    /// assert_eq!(page[4095], 1);
    /// # drop((jobs, worker, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`pop`](Self::pop).
    pub fn pop_into(&mut self, out: &mut T) -> Result<(), PopError> {
        self.pop_into_raw(out, true, None)
            .map_err(PopTimeoutError::without_deadline)
    }

    /// Pops the next message into `out` if there is one.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-trypopinto-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut jobs = bus.producer::<u64>("jobs")?;
    /// let mut worker = bus.consumer::<u64>("jobs")?;
    /// jobs.push(7)?;
    /// let mut job = 0;
    /// worker.try_pop_into(&mut job)?;
    /// assert_eq!(job, 7);
    /// # drop((jobs, worker, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`try_pop`](Self::try_pop).
    pub fn try_pop_into(&mut self, out: &mut T) -> Result<(), TryPopError> {
        self.pop_into_raw(out, false, None)
            .map_err(PopTimeoutError::without_wait)
    }

    /// Pops the next message into `out`, waiting at most `timeout`.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-popintoto-{}", std::process::id());
    /// use std::time::Duration;
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut jobs = bus.producer::<u64>("jobs")?;
    /// let mut worker = bus.consumer::<u64>("jobs")?;
    /// jobs.push(7)?;
    /// let mut job = 0;
    /// worker.pop_into_timeout(&mut job, Duration::from_millis(5))?;
    /// assert_eq!(job, 7);
    /// # drop((jobs, worker, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`pop_timeout`](Self::pop_timeout).
    pub fn pop_into_timeout(
        &mut self,
        out: &mut T,
        timeout: Duration,
    ) -> Result<(), PopTimeoutError> {
        self.pop_into_raw(out, true, deadline_after(timeout))
    }

    /// Pops the next message into `out`, waiting until `deadline`.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-popintodl-{}", std::process::id());
    /// use std::time::{Duration, Instant};
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut jobs = bus.producer::<u64>("jobs")?;
    /// let mut worker = bus.consumer::<u64>("jobs")?;
    /// jobs.push(7)?;
    /// let mut job = 0;
    /// worker.pop_into_deadline(&mut job, Instant::now() + Duration::from_millis(5))?;
    /// assert_eq!(job, 7);
    /// # drop((jobs, worker, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`pop_timeout`](Self::pop_timeout).
    pub fn pop_into_deadline(
        &mut self,
        out: &mut T,
        deadline: Instant,
    ) -> Result<(), PopTimeoutError> {
        self.pop_into_raw(out, true, Some(deadline))
    }

    /// An iterator over the messages, waiting for each (crossbeam's
    /// `Receiver::iter`): it yields `Ok(message)`, and `Err` for
    /// [`PopError::Corrupt`] (the iteration goes on); it ends once every
    /// producer is gone and the queue is empty ([`PopError::Disconnected`]
    /// is never yielded), and after yielding [`PopError::Detached`].
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-popiter-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut jobs = bus.producer::<u64>("jobs")?;
    /// let mut worker = bus.consumer::<u64>("jobs")?;
    /// jobs.push(1)?;
    /// jobs.push(2)?;
    /// drop(jobs);
    /// let done: Result<Vec<u64>, _> = worker.iter().collect();
    /// assert_eq!(done?, [1, 2]);
    /// # drop((worker, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    pub fn iter(&mut self) -> PopIter<'_, T> {
        PopIter {
            consumer: self,
            done: false,
        }
    }

    /// An iterator over the messages there are now, without waiting: as
    /// [`iter`](Self::iter), but it also ends when the queue is empty (a
    /// later call may find more).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-trypopiter-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut jobs = bus.producer::<u64>("jobs")?;
    /// let mut worker = bus.consumer::<u64>("jobs")?;
    /// jobs.push(1)?;
    /// jobs.push(2)?;
    /// let ready: Vec<u64> = worker.try_iter().collect::<Result<_, _>>()?;
    /// assert_eq!(ready, [1, 2]);
    /// # drop((jobs, worker, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    pub fn try_iter(&mut self) -> TryPopIter<'_, T> {
        TryPopIter {
            consumer: self,
            done: false,
        }
    }

    fn pop_value(&mut self, wait: bool, deadline: Option<Instant>) -> Result<T, PopTimeoutError> {
        let mut value = T::new_zeroed();
        self.pop_into_raw(&mut value, wait, deadline)?;
        Ok(value)
    }

    fn pop_into_raw(
        &mut self,
        out: &mut T,
        wait: bool,
        deadline: Option<Instant>,
    ) -> Result<(), PopTimeoutError> {
        let len = self.pop_raw(out.as_mut_bytes(), wait, deadline)?;
        if len != core::mem::size_of::<T>() {
            return Err(PopTimeoutError::Corrupt {
                pos: self.topic.view.ring().ctrl().popped().wrapping_sub(1),
            });
        }
        Ok(())
    }
}

/// A blocking iterator over a consumer's messages: see [`Consumer::iter`].
#[must_use = "iterators are lazy and do nothing unless consumed"]
#[derive(Debug)]
pub struct PopIter<'a, T> {
    consumer: &'a mut Consumer<T>,
    done: bool,
}

impl<T: Message> Iterator for PopIter<'_, T> {
    type Item = Result<T, PopError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.consumer.pop() {
            Ok(value) => Some(Ok(value)),
            Err(PopError::Disconnected) => {
                self.done = true;
                None
            }
            Err(PopError::Detached) => {
                self.done = true;
                Some(Err(PopError::Detached))
            }
            Err(err) => Some(Err(err)),
        }
    }
}

impl<T: Message> std::iter::FusedIterator for PopIter<'_, T> {}

/// An iterator over the messages a queue has now: see
/// [`Consumer::try_iter`].
#[must_use = "iterators are lazy and do nothing unless consumed"]
#[derive(Debug)]
pub struct TryPopIter<'a, T> {
    consumer: &'a mut Consumer<T>,
    done: bool,
}

impl<T: Message> Iterator for TryPopIter<'_, T> {
    type Item = Result<T, PopError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.consumer.try_pop() {
            Ok(value) => Some(Ok(value)),
            Err(TryPopError::Empty | TryPopError::Disconnected) => {
                self.done = true;
                None
            }
            Err(TryPopError::Detached) => {
                self.done = true;
                Some(Err(PopError::Detached))
            }
            Err(TryPopError::Corrupt { pos }) => Some(Err(PopError::Corrupt { pos })),
        }
    }
}

/// An owning blocking iterator over a consumer's messages: see
/// [`Consumer::iter`].
#[must_use = "iterators are lazy and do nothing unless consumed"]
#[derive(Debug)]
pub struct PopIntoIter<T> {
    consumer: Consumer<T>,
    done: bool,
}

impl<T: Message> Iterator for PopIntoIter<T> {
    type Item = Result<T, PopError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut iter = PopIter {
            consumer: &mut self.consumer,
            done: self.done,
        };
        let item = iter.next();
        self.done = iter.done;
        item
    }
}

impl<T: Message> std::iter::FusedIterator for PopIntoIter<T> {}

impl<'a, T: Message> IntoIterator for &'a mut Consumer<T> {
    type Item = Result<T, PopError>;
    type IntoIter = PopIter<'a, T>;

    fn into_iter(self) -> PopIter<'a, T> {
        self.iter()
    }
}

impl<T: Message> IntoIterator for Consumer<T> {
    type Item = Result<T, PopError>;
    type IntoIter = PopIntoIter<T>;

    fn into_iter(self) -> PopIntoIter<T> {
        PopIntoIter {
            consumer: self,
            done: false,
        }
    }
}

impl Consumer<Bytes> {
    fn pop_bytes_raw(
        &mut self,
        wait: bool,
        deadline: Option<Instant>,
    ) -> Result<&[u8], PopTimeoutError> {
        let mut scratch = core::mem::take(&mut self.scratch);
        if self.topic.view.ring().is_variable() {
            let result = match self.pop_var_now(&mut scratch) {
                Fast::Got(_) => Ok(()),
                Fast::Corrupt(pos) => Err(PopTimeoutError::Corrupt { pos }),
                Fast::Slow => self.hold(wait, deadline).map(|held| {
                    scratch.clear();
                    scratch.extend_from_slice(held.bytes());
                }),
            };
            self.scratch = scratch;
            result?;
            return Ok(&self.scratch);
        }
        let result = self.pop_raw(&mut scratch, wait, deadline);
        self.scratch = scratch;
        let len = result?;
        Ok(&self.scratch[..len])
    }

    /// Pops the next message, waiting while the queue is empty. The slice
    /// borrows an internal buffer until the next pop.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-popb-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut jobs = bus.topic("jobs").producer_bytes()?;
    /// let mut worker = bus.topic("jobs").consumer_bytes()?;
    /// jobs.push_bytes(b"job-1")?;
    /// assert_eq!(worker.pop_bytes()?, b"job-1");
    /// # drop((jobs, worker, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Consumer::pop`].
    pub fn pop_bytes(&mut self) -> Result<&[u8], PopError> {
        self.pop_bytes_raw(true, None)
            .map_err(PopTimeoutError::without_deadline)
    }

    /// Pops the next message if there is one.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-trypopb-{}", std::process::id());
    /// use shmbus::TryPopError;
    /// let bus = shmbus::Bus::open(&name)?;
    /// let _jobs = bus.topic("jobs").producer_bytes()?;
    /// let mut worker = bus.topic("jobs").consumer_bytes()?;
    /// assert_eq!(worker.try_pop_bytes(), Err(TryPopError::Empty));
    /// # drop((_jobs, worker, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Consumer::try_pop`].
    pub fn try_pop_bytes(&mut self) -> Result<&[u8], TryPopError> {
        self.pop_bytes_raw(false, None)
            .map_err(PopTimeoutError::without_wait)
    }

    /// Pops the next message, waiting at most `timeout`.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-popbto-{}", std::process::id());
    /// use std::time::Duration;
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut jobs = bus.topic("jobs").producer_bytes()?;
    /// let mut worker = bus.topic("jobs").consumer_bytes()?;
    /// jobs.push_bytes(b"job-1")?;
    /// assert_eq!(worker.pop_bytes_timeout(Duration::from_millis(5))?, b"job-1");
    /// # drop((jobs, worker, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Consumer::pop_timeout`].
    pub fn pop_bytes_timeout(&mut self, timeout: Duration) -> Result<&[u8], PopTimeoutError> {
        self.pop_bytes_raw(true, deadline_after(timeout))
    }

    /// Pops the next message, waiting until `deadline`.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-popbdl-{}", std::process::id());
    /// use std::time::{Duration, Instant};
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut jobs = bus.topic("jobs").producer_bytes()?;
    /// let mut worker = bus.topic("jobs").consumer_bytes()?;
    /// jobs.push_bytes(b"job-1")?;
    /// let job = worker.pop_bytes_deadline(Instant::now() + Duration::from_millis(5))?;
    /// assert_eq!(job, b"job-1");
    /// # drop((jobs, worker, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Consumer::pop_timeout`].
    pub fn pop_bytes_deadline(&mut self, deadline: Instant) -> Result<&[u8], PopTimeoutError> {
        self.pop_bytes_raw(true, Some(deadline))
    }
}

impl<T> Consumer<T> {
    /// Pops the next message and keeps its slot claimed, for reading in
    /// place: the claim, the message's first byte and its length.
    fn hold(
        &mut self,
        wait: bool,
        deadline: Option<Instant>,
    ) -> Result<Held<'_, T>, PopTimeoutError> {
        match self.take(Take::Hold, wait, deadline)? {
            Taken::Held(claim, payload, len) => Ok(Held {
                consumer: self,
                claim,
                payload,
                len,
            }),
            Taken::Copied(_) => unreachable!("Take::Hold never copies"),
        }
    }
}

/// A claimed message read in place; releases its slot when dropped.
struct Held<'a, T> {
    consumer: &'a mut Consumer<T>,
    claim: Claim,
    payload: core::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: a `Held` is a `&mut Consumer<T>` and a read-only view of the
// claimed slot (as a `&T` or `&[u8]`, which no one writes while it is
// held): it may cross threads as those may.
unsafe impl<T: Sync> Send for Held<'_, T> where Consumer<T>: Send {}
// SAFETY: as above: shared, it gives out only `&T` / `&[u8]` and numbers.
unsafe impl<T: Sync> Sync for Held<'_, T> where Consumer<T>: Sync {}

impl<T> Held<'_, T> {
    /// The message's bytes, in its slot.
    fn bytes(&self) -> &[u8] {
        // SAFETY: `len` bytes of the claimed slot's payload words (`lend`
        // checked `len` against the slot size), which live as long as the
        // consumer's mapping, and so as `self`. Nothing writes them while
        // the claim is held: the next lap's producer waits for the release
        // in `drop`, no other consumer claims this position, and survivors
        // finish a claim only once its holder is known dead (see
        // `QueueRing::lend`). Any bytes are valid `u8`s.
        unsafe { core::slice::from_raw_parts(self.payload.as_ptr().cast_const(), self.len) }
    }

    fn pos(&self) -> u64 {
        self.claim.pos()
    }
}

impl<T> Drop for Held<'_, T> {
    fn drop(&mut self) {
        if self.consumer.pipe.is_some() {
            return; // popped from the FIFO already: nothing is claimed
        }
        let consumer = &mut *self.consumer;
        if !consumer.topic.in_own_process() {
            return; // inherited through fork(): the claim is the parent's
        }
        let ring = consumer.topic.view.ring();
        let entry = &ring.consumers()[consumer.entry];
        ring.release(self.claim, entry);
        notify_after(ring, Side::Consume, entry, &mut consumer.waker);
    }
}

/// A work-queue message read in place ([`Consumer::pop_bytes_ref`]): no
/// copy. Its slot stays claimed by this consumer until the guard drops;
/// producers coming round to that slot wait for it, so keep it short.
#[must_use = "the message is taken when the guard drops; use it first"]
pub struct PoppedBytes<'a> {
    held: Held<'a, Bytes>,
}

impl PoppedBytes<'_> {
    /// The message's position in the queue (positions count every push).
    pub fn pos(&self) -> u64 {
        self.held.pos()
    }
}

impl core::ops::Deref for PoppedBytes<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.held.bytes()
    }
}

impl AsRef<[u8]> for PoppedBytes<'_> {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::fmt::Debug for PoppedBytes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoppedBytes")
            .field("pos", &self.pos())
            .field("len", &self.len())
            .finish()
    }
}

/// A typed work-queue message read in place ([`Consumer::pop_ref`]): a
/// `&T` into its slot, no copy. Its slot stays claimed by this consumer
/// until the guard drops.
#[must_use = "the message is taken when the guard drops; use it first"]
pub struct PoppedRef<'a, T> {
    held: Held<'a, T>,
}

impl<T> PoppedRef<'_, T> {
    /// The message's position in the queue.
    pub fn pos(&self) -> u64 {
        self.held.pos()
    }
}

impl<T: Message> core::ops::Deref for PoppedRef<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the payload is aligned for T and holds `size_of::<T>()`
        // bytes (`pop_ref_raw` checked both; it starts 16 bytes into a
        // slot whose offset is a multiple of 64, so with align <= 16 it
        // always is).
        // Any bytes are a valid T (FromBytes). Unwritten while held: see
        // `Held::bytes`.
        unsafe { &*self.held.payload.as_ptr().cast::<T>() }
    }
}

impl<T: Message + std::fmt::Debug> std::fmt::Debug for PoppedRef<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoppedRef")
            .field("pos", &self.pos())
            .field("value", &**self)
            .finish()
    }
}

impl<T: Message> Consumer<T> {
    /// Pops the next message and lends it in place, waiting while the queue
    /// is empty: a [`PoppedRef`] that derefs to the `T` in its slot, no
    /// copy. The slot is released when the guard drops (producers that
    /// come round to it meanwhile wait). For a large `T` this saves the
    /// copy that [`pop`](Self::pop) makes. A consumer killed while it
    /// holds one loses that message, counted as for a pop
    /// ([`QueueStats::lost_in_consume`]). The guard must not be used in a
    /// child forked while it was held. Like every read in place, it trusts
    /// the other users of the segment: a process that rewrites the queue's
    /// `head` or this consumer's claim entry can let a producer write the
    /// slot while it is held (see "What still needs trust" in the README).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-popref-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut jobs = bus.producer::<[u64; 512]>("frames")?;
    /// let mut worker = bus.consumer::<[u64; 512]>("frames")?;
    /// jobs.push([7; 512])?;
    /// let frame = worker.pop_ref()?;
    /// assert!(frame.iter().all(|&w| w == 7));
    /// # drop(frame); drop((jobs, worker, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Consumer::pop`].
    pub fn pop_ref(&mut self) -> Result<PoppedRef<'_, T>, PopError> {
        self.pop_ref_raw(true, None)
            .map_err(PopTimeoutError::without_deadline)
    }

    /// Lends the next message in place if there is one, without waiting.
    ///
    /// # Errors
    ///
    /// As [`Consumer::try_pop`].
    pub fn try_pop_ref(&mut self) -> Result<PoppedRef<'_, T>, TryPopError> {
        self.pop_ref_raw(false, None)
            .map_err(PopTimeoutError::without_wait)
    }

    /// Lends the next message in place, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`Consumer::pop_timeout`].
    pub fn pop_ref_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<PoppedRef<'_, T>, PopTimeoutError> {
        self.pop_ref_raw(true, deadline_after(timeout))
    }

    /// Lends the next message in place, waiting until `deadline`.
    ///
    /// # Errors
    ///
    /// As [`Consumer::pop_timeout`].
    pub fn pop_ref_deadline(
        &mut self,
        deadline: Instant,
    ) -> Result<PoppedRef<'_, T>, PopTimeoutError> {
        self.pop_ref_raw(true, Some(deadline))
    }

    fn pop_ref_raw(
        &mut self,
        wait: bool,
        deadline: Option<Instant>,
    ) -> Result<PoppedRef<'_, T>, PopTimeoutError> {
        const {
            assert!(
                core::mem::align_of::<T>() <= 16,
                "pop_ref needs an alignment of at most 16"
            )
        };
        let held = self.hold(wait, deadline)?;
        let aligned = held.payload.as_ptr() as usize % core::mem::align_of::<T>() == 0;
        if held.len != core::mem::size_of::<T>() || !aligned {
            // Not a T: released (as a pop would) and reported.
            let pos = held.pos();
            drop(held);
            return Err(PopTimeoutError::Corrupt { pos });
        }
        Ok(PoppedRef { held })
    }
}

impl Consumer<Bytes> {
    /// Pops the next message and lends it in place, waiting while the queue
    /// is empty: a [`PoppedBytes`] that derefs to the message's bytes in
    /// its slot, no copy (as [`Consumer::pop_ref`] for typed queues).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-popbref-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut jobs = bus.topic("blobs").slot_size(65536).capacity(64).producer_bytes()?;
    /// let mut worker = bus.topic("blobs").consumer_bytes()?;
    /// jobs.push_bytes(&[9; 40_000])?;
    /// let blob = worker.pop_bytes_ref()?;
    /// assert_eq!(blob.len(), 40_000);
    /// # drop(blob); drop((jobs, worker, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Consumer::pop`].
    pub fn pop_bytes_ref(&mut self) -> Result<PoppedBytes<'_>, PopError> {
        self.hold(true, None)
            .map(|held| PoppedBytes { held })
            .map_err(PopTimeoutError::without_deadline)
    }

    /// Lends the next message in place if there is one, without waiting.
    ///
    /// # Errors
    ///
    /// As [`Consumer::try_pop`].
    pub fn try_pop_bytes_ref(&mut self) -> Result<PoppedBytes<'_>, TryPopError> {
        self.hold(false, None)
            .map(|held| PoppedBytes { held })
            .map_err(PopTimeoutError::without_wait)
    }

    /// Lends the next message in place, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`Consumer::pop_timeout`].
    pub fn pop_bytes_ref_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<PoppedBytes<'_>, PopTimeoutError> {
        self.hold(true, deadline_after(timeout))
            .map(|held| PoppedBytes { held })
    }

    /// Lends the next message in place, waiting until `deadline`.
    ///
    /// # Errors
    ///
    /// As [`Consumer::pop_timeout`].
    pub fn pop_bytes_ref_deadline(
        &mut self,
        deadline: Instant,
    ) -> Result<PoppedBytes<'_>, PopTimeoutError> {
        self.hold(true, Some(deadline))
            .map(|held| PoppedBytes { held })
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        if !self.topic.in_own_process() {
            return; // inherited through fork(): the entry is the parent's
        }
        detach(&self.topic, Side::Consume, self.entry, &mut self.waker);
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

impl<T> crate::select::sealed::Source for Consumer<T> {
    fn pipe_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.pipe.as_ref().map(|p| p.fd().as_raw_fd())
    }

    fn words(&self) -> &crate::wait::WakeWords {
        self.topic.view.ring().ctrl().not_empty()
    }

    #[inline]
    fn ready_now(&self) -> bool {
        if let Some(pipe) = &self.pipe {
            return pipe.ready();
        }
        self.topic.view.ring().can_pop()
    }

    fn ready_slow(&mut self) -> bool {
        if !self.topic.in_own_process() || !self.entry().held_by(self.topic.me) {
            return true; // try_pop says Detached
        }
        // A claimed slot that does not become poppable may be a dead
        // producer's: `try_pop` recovers it when its paced check is due.
        (self.topic.view.ring().has_claims() && self.pacer.is_due()) || self.disconnected()
    }

    fn wait_options(&self) -> (crate::wait::WaitStrategy, Duration) {
        (self.topic.opts.wait, self.topic.opts.check_interval)
    }

    fn timed_out(&mut self) {
        self.pacer.expire();
        self.producers_check.expire();
    }
}

impl<T> crate::select::Selectable for Consumer<T> {}

//! Topic options and opening: the builder every publisher, subscriber,
//! producer and consumer is made from.

use std::sync::Arc;
use std::time::Duration;

use crate::broadcast::{LagPolicy, Publisher, Subscriber};
use crate::clock::Clock;
use crate::error::Error;
use crate::handle::{EndpointOptions, Handle};
use crate::message::{Bytes, Message};
use crate::queue::{Consumer, Producer};
use crate::ring::broadcast::StartAt;
use crate::ring::queue::UNIT_BYTES;
use crate::ring::Owner;
use crate::segment::directory::{self, TopicRequest, TypeFingerprint};
use crate::segment::layout::{self, MAX_ARENA, MAX_ATTACH, MAX_CAPACITY, MAX_SLOT_SIZE, MIN_ARENA};
use crate::segment::validate_name;
use crate::segment::views::{BroadcastView, QueueView};
use crate::segment::Segment;
use crate::transport::PipeBus;
use crate::wait::WaitStrategy;

/// Default ring capacity: 1024 messages.
pub const DEFAULT_CAPACITY: u32 = 1024;
/// Default slot size of byte topics: 256 bytes.
pub const DEFAULT_BYTES_SLOT_SIZE: u32 = 256;
/// Default size of a work queue's producer and consumer tables.
pub const DEFAULT_MAX_WORKERS: u32 = 64;

/// Options for one topic, and for the publisher, subscriber, producer or
/// consumer made from it. From [`Bus::topic`](crate::Bus::topic).
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
#[derive(Clone)]
#[must_use = "a topic builder does nothing until it makes an endpoint"]
pub struct TopicBuilder<'b> {
    seg: &'b Arc<Segment>,
    /// A bus on pipes: its directory.
    pipe: Option<&'b Arc<PipeBus>>,
    name: String,
    capacity: Option<u32>,
    slot_size: Option<u32>,
    lossless: Option<u32>,
    /// Variable-size messages in an arena of this many bytes.
    arena: Option<u64>,
    /// Publish timestamps from this clock.
    clock: Option<Clock>,
    max_producers: Option<u32>,
    max_consumers: Option<u32>,
    start: StartAt,
    lag: LagPolicy,
    wait: WaitStrategy,
    check_interval: Duration,
    create_timeout: Duration,
    /// The message type's name, if the caller gave one.
    type_name: Option<String>,
}

impl<'b> TopicBuilder<'b> {
    pub(crate) fn new(seg: &'b Arc<Segment>, pipe: Option<&'b Arc<PipeBus>>, name: &str) -> Self {
        TopicBuilder {
            seg,
            pipe,
            name: name.to_owned(),
            capacity: None,
            slot_size: None,
            lossless: None,
            arena: None,
            clock: None,
            max_producers: None,
            max_consumers: None,
            start: StartAt::default(),
            lag: LagPolicy::default(),
            wait: WaitStrategy::default(),
            check_interval: Duration::from_millis(100),
            create_timeout: Duration::from_secs(2),
            type_name: None,
        }
    }

    /// Names the message type of a typed topic, for programs built
    /// separately (or from different source) that share it: by default a
    /// topic records `std::any::type_name::<T>()`, which names the crate
    /// and module the type is defined in, so two binaries that each define
    /// their own `Quote` are told they mismatch. Every program that opens
    /// the topic must give the same name (a version in it, such as
    /// `"md.Quote/v1"`, makes incompatible changes refuse to mix); the
    /// size and alignment check stays. 1 to 64 printable ASCII characters.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-typename-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// mod feed { #[derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::KnownLayout, zerocopy::Immutable)]
    ///     #[repr(C)] pub struct Quote { pub bid: f64, pub ask: f64 } }
    /// mod screen { #[derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::KnownLayout, zerocopy::Immutable)]
    ///     #[repr(C)] pub struct Quote { pub bid: f64, pub ask: f64 } }
    /// let _tx = bus.topic("quotes").type_name("md.Quote/v1").publisher::<feed::Quote>()?;
    /// let _rx = bus.topic("quotes").type_name("md.Quote/v1").subscriber::<screen::Quote>()?;
    /// // Without the shared name, the two types' names differ:
    /// assert!(bus.topic("quotes").subscriber::<screen::Quote>().is_err());
    /// # drop((_tx, _rx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    pub fn type_name(mut self, name: &str) -> Self {
        self.type_name = Some(name.to_owned());
        self
    }

    /// The fingerprint of a typed endpoint's `T`: under the name given to
    /// [`type_name`](Self::type_name), if any (checked here).
    fn typed<T>(&self) -> Result<TypeFingerprint, Error> {
        let Some(name) = &self.type_name else {
            return Ok(TypeFingerprint::of::<T>());
        };
        if name.is_empty()
            || name.len() > 64
            || !name.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        {
            return Err(self.invalid(format!(
                "type_name({name:?}) must be 1 to 64 printable ASCII characters"
            )));
        }
        Ok(TypeFingerprint::named::<T>(name))
    }

    /// Byte endpoints have no type to name.
    fn bytes(&self) -> Result<TypeFingerprint, Error> {
        match &self.type_name {
            Some(name) => Err(self.invalid(format!(
                "type_name({name:?}) names a typed topic's message type; byte topics have none (drop the call, or make a typed endpoint)"
            ))),
            None => Ok(bytes_fingerprint()),
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

    /// Variable-size messages (byte topics, broadcast or work queue): each
    /// message takes its own length, rounded up to 8 bytes (a work queue:
    /// with a 16-byte header, to 64), in an arena of `arena_bytes`
    /// (a power of two from 4 KiB to 1 GiB) instead of a slot of the
    /// largest size; messages of up to half the arena are taken (a work
    /// queue: less its header; larger ones are refused with
    /// [`SendError::TooLarge`](crate::SendError::TooLarge) or
    /// [`PushError::TooLarge`](crate::PushError::TooLarge)). A broadcast
    /// topic's capacity is then the most messages held at once (default
    /// 1024); a work queue's is the arena's 64-byte units, and
    /// `capacity(..)` beside `variable(..)` is refused. Broadcast topics
    /// have both modes: overwrite, where a subscriber lapped by the arena
    /// or by the descriptors is told exactly how many messages it lost, and
    /// lossless. Unset: join the topic whatever its kind; create it with
    /// fixed slots.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-variable-{}", std::process::id());
    /// use shmbus::StartAt;
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut tx = bus.topic("books").variable(1 << 20).publisher_bytes()?;
    /// let mut rx = bus.topic("books").start_at(StartAt::Next).subscriber_bytes()?;
    /// tx.send_bytes(b"a small quote")?;
    /// tx.send_bytes(&vec![7u8; 300_000])?; // one book of 300 KB
    /// assert_eq!(rx.recv_bytes()?, b"a small quote");
    /// assert_eq!(rx.recv_bytes()?.len(), 300_000);
    /// assert_eq!(tx.max_message_len(), 512 << 10);
    /// # drop((tx, rx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    pub fn variable(mut self, arena_bytes: u64) -> Self {
        self.arena = Some(arena_bytes);
        self
    }

    /// Broadcast topics: every message carries the time its publisher
    /// published it (read from `clock` just before the message becomes
    /// visible), returned by [`Subscriber::recv_with_info`] and
    /// [`Subscriber::recv_bytes_with_info`] as
    /// [`MessageInfo::timestamp_ns`](crate::MessageInfo::timestamp_ns).
    /// Costs the publisher one clock read (`clock_gettime`, tens of
    /// nanoseconds through the vDSO) per message, and fixed-slot topics a
    /// word per slot. Chosen at creation; unset: join the topic whatever it
    /// has, create it without.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-timestamps-{}", std::process::id());
    /// use shmbus::{Clock, StartAt};
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut tx = bus.topic("px").timestamps(Clock::Monotonic).publisher::<u64>()?;
    /// let mut rx = bus.topic("px").start_at(StartAt::Next).subscriber::<u64>()?;
    /// tx.send(&42)?;
    /// let (info, px) = rx.recv_with_info()?;
    /// let sent = info.timestamp_ns.expect("a timestamped topic");
    /// assert!(Clock::Monotonic.now_ns() >= sent);
    /// assert_eq!((info.seq, px), (0, 42));
    /// # drop((tx, rx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// [`Subscriber::recv_with_info`]: crate::Subscriber::recv_with_info
    /// [`Subscriber::recv_bytes_with_info`]: crate::Subscriber::recv_bytes_with_info
    pub fn timestamps(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Broadcast in lossless mode, for up to `max_subscribers` subscribers:
    /// the publisher waits for the slowest live subscriber instead of
    /// overwriting. Unset: join the topic in whatever mode it has; create it
    /// in overwrite mode.
    pub fn lossless(mut self, max_subscribers: u32) -> Self {
        self.lossless = Some(max_subscribers);
        self
    }

    /// Size of a work queue's producer table (default 64).
    pub fn max_producers(mut self, producers: u32) -> Self {
        self.max_producers = Some(producers);
        self
    }

    /// Size of a work queue's consumer table (default 64).
    pub fn max_consumers(mut self, consumers: u32) -> Self {
        self.max_consumers = Some(consumers);
        self
    }

    /// Where a subscriber starts. Default [`StartAt::Newest`].
    pub fn start_at(mut self, start: StartAt) -> Self {
        self.start = start;
        self
    }

    /// How `recv`, `pop`, a blocking `push` or a lossless `send` wait.
    /// Default adaptive.
    pub fn wait(mut self, wait: WaitStrategy) -> Self {
        self.wait = wait;
        self
    }

    /// Where a subscriber goes on after it was lapped
    /// ([`RecvError::Lagged`](crate::RecvError::Lagged)): the oldest
    /// message still held (default) or the newest. See [`LagPolicy`].
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-lagpolicy-{}", std::process::id());
    /// use shmbus::{LagPolicy, RecvError, StartAt};
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut rx = bus
    ///     .topic("px")
    ///     .capacity(4)
    ///     .start_at(StartAt::Next)
    ///     .lag_policy(LagPolicy::Newest)
    ///     .subscriber::<u64>()?;
    /// let mut tx = bus.topic("px").publisher::<u64>()?;
    /// for px in 0..10 {
    ///     tx.send(&px)?;
    /// }
    /// assert_eq!(rx.recv(), Err(RecvError::Lagged(9)));
    /// assert_eq!(rx.recv()?, 9);
    /// # drop((tx, rx, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    pub fn lag_policy(mut self, policy: LagPolicy) -> Self {
        self.lag = policy;
        self
    }

    /// How often a waiting endpoint checks whether the processes it waits
    /// on are still alive: a subscriber its publisher, a lossless
    /// publisher the subscribers that hold it back, a producer or consumer
    /// a claimer stuck on the slot it needs. It is also the longest sleep
    /// of a blocked endpoint. Default 100 ms, at least 100 µs.
    pub fn liveness_check_interval(mut self, interval: Duration) -> Self {
        self.check_interval = interval.max(Duration::from_micros(100));
        self
    }

    /// The publisher of this broadcast topic (typed).
    pub fn publisher<T: Message>(self) -> Result<Publisher<T>, Error> {
        Publisher::new(self.open_broadcast(self.typed::<T>()?)?, self.pipe)
    }

    /// A subscriber of this broadcast topic (typed).
    pub fn subscriber<T: Message>(self) -> Result<Subscriber<T>, Error> {
        Subscriber::new(self.open_broadcast(self.typed::<T>()?)?, self.pipe)
    }

    /// The publisher of this broadcast topic of byte messages.
    pub fn publisher_bytes(self) -> Result<Publisher<Bytes>, Error> {
        Publisher::new(self.open_broadcast(self.bytes()?)?, self.pipe)
    }

    /// A subscriber of this broadcast topic of byte messages.
    pub fn subscriber_bytes(self) -> Result<Subscriber<Bytes>, Error> {
        Subscriber::new(self.open_broadcast(self.bytes()?)?, self.pipe)
    }

    /// An observer of this broadcast topic, for tools: a subscriber that
    /// reads its messages as bytes (whatever the topic's type) and changes
    /// nothing shared. It never creates the topic, never registers this
    /// process in the bus, and never gates a lossless publisher: it reads
    /// as an overwrite-mode subscriber does, and is told
    /// [`RecvError::Lagged`](crate::RecvError::Lagged) (its own loss) when
    /// the publisher laps it. Start position, lag policy and wait strategy
    /// are this builder's; capacity, slot size and mode are the topic's.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-observer-{}", std::process::id());
    /// let bus = shmbus::Bus::open(&name)?;
    /// let mut tx = bus.topic("t").capacity(2).lossless(1).publisher::<u64>()?;
    /// let mut watch = bus.topic("t").start_at(shmbus::StartAt::Next).observer()?;
    /// for i in 0..5 {
    ///     tx.try_send(&i)?; // never held back by the observer
    /// }
    /// assert_eq!(watch.recv_bytes(), Err(shmbus::RecvError::Lagged(3)));
    /// assert_eq!(watch.recv_bytes()?, 3u64.to_ne_bytes());
    /// # drop((tx, watch, bus)); shmbus::Bus::remove(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::TopicNotFound`] if the bus has no such topic;
    /// [`Error::InvalidOptions`] for a work queue (every read there takes a
    /// message from the consumers) or for topic options given here.
    pub fn observer(self) -> Result<Subscriber<Bytes>, Error> {
        if self.capacity.is_some()
            || self.slot_size.is_some()
            || self.lossless.is_some()
            || self.arena.is_some()
            || self.clock.is_some()
            || self.max_producers.is_some()
            || self.max_consumers.is_some()
        {
            return Err(self.invalid(
                "an observer takes the topic as it is: give no capacity, slot size, \
                 variable, timestamps, lossless or worker options"
                    .into(),
            ));
        }
        validate_name("topic", &self.name)?;
        if let Some(pipe) = self.pipe {
            // A pipe bus's topics are in its directory: bring this one's
            // configuration into our segment first.
            let _lock = pipe.lock()?;
            if let Some(config) = pipe.read_config(&self.name)? {
                directory::find_or_create(
                    self.seg,
                    &request_of(&self.name, &config),
                    self.create_timeout,
                )?;
            }
        }
        let topic = directory::list(self.seg)?
            .into_iter()
            .filter_map(Result::ok)
            .find(|t| directory::entry_name(&t.config) == Some(self.name.as_str()))
            .ok_or_else(|| Error::TopicNotFound {
                bus: self.seg.bus().to_owned(),
                topic: self.name.clone(),
            })?;
        if topic.config.kind == layout::KIND_QUEUE {
            return Err(self.invalid(
                "a work queue cannot be observed: every read takes a message from its consumers"
                    .into(),
            ));
        }
        let view = BroadcastView::new(Arc::clone(self.seg), &self.name, &topic.config)?;
        let opts = EndpointOptions {
            observe: true,
            ..self.options()
        };
        Subscriber::new(
            Handle::new(view, &self.name, Owner::nobody(), opts),
            self.pipe,
        )
    }

    /// A producer of this work-queue topic (typed).
    pub fn producer<T: Message>(self) -> Result<Producer<T>, Error> {
        Producer::new(self.open_queue(self.typed::<T>()?)?, self.pipe)
    }

    /// A consumer of this work-queue topic (typed).
    pub fn consumer<T: Message>(self) -> Result<Consumer<T>, Error> {
        Consumer::new(self.open_queue(self.typed::<T>()?)?, self.pipe)
    }

    /// A producer of this work-queue topic of byte messages.
    pub fn producer_bytes(self) -> Result<Producer<Bytes>, Error> {
        Producer::new(self.open_queue(self.bytes()?)?, self.pipe)
    }

    /// A consumer of this work-queue topic of byte messages.
    pub fn consumer_bytes(self) -> Result<Consumer<Bytes>, Error> {
        Consumer::new(self.open_queue(self.bytes()?)?, self.pipe)
    }

    fn options(&self) -> EndpointOptions {
        EndpointOptions {
            start: self.start,
            lag: self.lag,
            wait: self.wait,
            check_interval: self.check_interval,
            observe: false,
        }
    }

    fn invalid(&self, why: String) -> Error {
        Error::InvalidOptions {
            topic: self.name.clone(),
            why,
        }
    }

    fn open_broadcast(&self, fingerprint: TypeFingerprint) -> Result<Handle<BroadcastView>, Error> {
        if self.max_producers.is_some() || self.max_consumers.is_some() {
            return Err(self.invalid(
                "max_producers/max_consumers are for work queues; a broadcast topic has one publisher".into(),
            ));
        }
        let request = self.request(layout::KIND_BROADCAST, fingerprint)?;
        let entry = self.find_or_create(&request)?;
        self.reserve(&entry.config)?;
        let view = BroadcastView::new(Arc::clone(self.seg), &self.name, &entry.config)?;
        Ok(Handle::new(
            view,
            &self.name,
            self.seg.me()?,
            self.options(),
        ))
    }

    fn open_queue(&self, fingerprint: TypeFingerprint) -> Result<Handle<QueueView>, Error> {
        if self.lossless.is_some() {
            return Err(
                self.invalid("lossless is a broadcast mode; a work queue never overwrites".into())
            );
        }
        if self.capacity.is_some_and(|c| c < 2) {
            return Err(self.invalid("a work queue needs a capacity of at least 2".into()));
        }
        if self.clock.is_some() {
            return Err(self.invalid(
                "timestamps(..) is for broadcast topics: a work queue's messages carry none".into(),
            ));
        }
        if self.arena.is_some() && self.capacity.is_some() {
            return Err(self.invalid(
                "give variable(arena_bytes) or capacity(..), not both: a variable-size work \
                 queue holds as many messages as fit its arena (64-byte units)"
                    .into(),
            ));
        }
        let request = self.request(layout::KIND_QUEUE, fingerprint)?;
        let entry = self.find_or_create(&request)?;
        self.reserve(&entry.config)?;
        let view = QueueView::new(Arc::clone(self.seg), &self.name, &entry.config)?;
        Ok(Handle::new(
            view,
            &self.name,
            self.seg.me()?,
            self.options(),
        ))
    }

    /// Finds the topic, or creates it, as `request` says. On a pipe bus, the
    /// topic's configuration in the bus's directory is brought into this
    /// process's segment first, so that the request is checked against it
    /// exactly as against a shared segment's entry (the same mismatch
    /// errors), and a new topic's configuration is written there, all
    /// under the bus's lock.
    fn find_or_create(&self, request: &TopicRequest<'_>) -> Result<directory::Topic, Error> {
        let Some(pipe) = self.pipe else {
            return directory::find_or_create(self.seg, request, self.create_timeout);
        };
        validate_name("topic", &self.name)?;
        let _lock = pipe.lock()?;
        let existing = pipe.read_config(&self.name)?;
        if let Some(config) = &existing {
            directory::find_or_create(
                self.seg,
                &request_of(&self.name, config),
                self.create_timeout,
            )?;
        }
        if existing.is_none() {
            // Before anything of it is recorded, here or in the directory:
            // a topic its transport cannot carry is refused with nothing
            // left behind, so that the options its error names can be
            // changed and asked for again.
            pipe.check_new_topic(&self.name, &request.shape())?;
        }
        let topic = directory::find_or_create(self.seg, request, self.create_timeout)?;
        if existing.is_none() {
            pipe.write_config(&self.name, &topic.config)?;
        }
        Ok(topic)
    }

    /// Makes sure the topic's ring is reserved in /dev/shm before this
    /// process writes to it: its creator reserved it, but the entry is read
    /// from the segment, and an entry pointing at space never reserved (a
    /// corrupt one) would otherwise make our first write a SIGBUS on a full
    /// /dev/shm. Reserving what is reserved already costs one system call.
    fn reserve(&self, config: &layout::EntryConfig) -> Result<(), Error> {
        self.seg
            .reserve(config.region_offset, config.region_len)
            .map_err(|source| Error::NoSpace {
                bus: self.seg.bus().to_owned(),
                needed: config.region_len,
                source,
            })
    }

    fn request(&self, kind: u32, fingerprint: TypeFingerprint) -> Result<TopicRequest<'_>, Error> {
        let typed = fingerprint != bytes_fingerprint();
        if let Some(capacity) = self.capacity {
            if !capacity.is_power_of_two() || capacity > MAX_CAPACITY {
                return Err(self.invalid(format!(
                    "capacity({capacity}) must be a power of two from 1 to {MAX_CAPACITY}"
                )));
            }
        }
        if let Some(slot) = self.slot_size {
            if slot == 0 && !typed {
                return Err(self.invalid(
                    "slot_size(0) would carry only empty messages, for ever (a topic is not \
                     deleted): give from 1 to the largest message; for messages without a \
                     payload, use a typed topic of `()`"
                        .into(),
                ));
            }
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
        let variable_slot = match self.arena {
            None => None,
            Some(_) if typed => {
                return Err(self.invalid(format!(
                    "variable(..) is for byte topics; `{}` has a fixed size (make a byte \
                     endpoint: publisher_bytes, subscriber_bytes)",
                    fingerprint.name
                )))
            }
            Some(_) if self.slot_size.is_some() => {
                return Err(self.invalid(
                    "give variable(arena_bytes) or slot_size(..), not both: a variable-size \
                     topic takes messages of up to half its arena"
                        .into(),
                ))
            }
            Some(arena)
                if !arena.is_power_of_two() || !(MIN_ARENA..=MAX_ARENA).contains(&arena) =>
            {
                return Err(self.invalid(format!(
                    "variable({arena}) must be a power of two from {MIN_ARENA} to {MAX_ARENA} \
                     bytes (the arena; messages of up to half of it are taken)"
                )))
            }
            Some(arena) => Some((arena / 2) as u32),
        };
        for (what, value) in [
            ("lossless", self.lossless),
            ("max_producers", self.max_producers),
            ("max_consumers", self.max_consumers),
        ] {
            if let Some(n) = value {
                if n == 0 || n > MAX_ATTACH {
                    return Err(self.invalid(format!("{what}({n}) must be from 1 to {MAX_ATTACH}")));
                }
            }
        }
        let queue = kind == layout::KIND_QUEUE;
        // A variable-size work queue's capacity is its arena's units.
        let capacity = match self.arena {
            Some(arena) if queue => Some((arena / UNIT_BYTES as u64) as u32),
            _ => self.capacity,
        };
        Ok(TopicRequest {
            name: &self.name,
            kind,
            capacity,
            slot_size: if typed {
                Some(fingerprint.size)
            } else {
                variable_slot.or(self.slot_size)
            },
            // A slot size asks for slots: it never joins a variable-size
            // topic whose largest message happens to be that size.
            variable: if typed || self.slot_size.is_some() {
                Some(false)
            } else {
                variable_slot.map(|_| true)
            },
            clock: if queue {
                Some(None)
            } else {
                self.clock.map(Some)
            },
            lossless: if queue {
                Some(false)
            } else {
                self.lossless.map(|_| true)
            },
            max_writers: if queue { self.max_producers } else { Some(0) },
            max_readers: if queue {
                self.max_consumers
            } else {
                self.lossless
            },
            default_capacity: DEFAULT_CAPACITY,
            default_slot_size: DEFAULT_BYTES_SLOT_SIZE,
            default_max_writers: if queue { DEFAULT_MAX_WORKERS } else { 0 },
            default_max_readers: if queue { DEFAULT_MAX_WORKERS } else { 0 },
            fingerprint,
        })
    }
}

/// A request that finds or makes exactly the topic `config` describes.
fn request_of<'n>(name: &'n str, c: &layout::EntryConfig) -> TopicRequest<'n> {
    let shape = crate::segment::region::Shape::of(c);
    TopicRequest {
        name,
        kind: c.kind,
        capacity: Some(c.capacity),
        slot_size: Some(c.slot_size),
        lossless: Some(shape.lossless()),
        variable: Some(shape.variable()),
        clock: Some(shape.clock()),
        max_writers: Some(c.max_writers),
        max_readers: Some(c.max_readers),
        default_capacity: c.capacity,
        default_slot_size: c.slot_size,
        default_max_writers: c.max_writers,
        default_max_readers: c.max_readers,
        fingerprint: TypeFingerprint {
            size: c.type_size,
            align: c.type_align,
            hash: c.type_hash,
            name: directory::type_name(c).into_owned().into(),
        },
    }
}

pub(crate) fn bytes_fingerprint() -> TypeFingerprint {
    TypeFingerprint {
        size: 0,
        align: 1,
        hash: crate::ring::directory::name_hash(b"shmbus::Bytes"),
        name: "bytes".into(),
    }
}

impl std::fmt::Debug for TopicBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicBuilder")
            .field("bus", &self.seg.bus())
            .field("name", &self.name)
            .field("capacity", &self.capacity)
            .field("slot_size", &self.slot_size)
            .field("lossless", &self.lossless)
            .field("variable", &self.arena)
            .field("timestamps", &self.clock)
            .field("start", &self.start)
            .field("lag", &self.lag)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

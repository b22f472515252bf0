//! The bus: one named segment, and the entry point for topics.

use std::sync::Arc;

use crate::error::Error;
use crate::message::Message;
use crate::ring::owner::{FLAG_CLAIMING, FLAG_EVICTED};
use crate::ring::{Liveness, Owner};
use crate::segment::layout::{EntryConfig, KIND_QUEUE};
use crate::segment::views::{BroadcastView, QueueView};
use crate::segment::{self, directory, Segment, SegmentOptions};
use crate::topic::TopicBuilder;
use crate::{Consumer, Producer, Publisher, Subscriber};

/// Default size of a new bus segment: 64 MiB of address space. The file is
/// sparse; only the header, directory and each topic's ring take memory in
/// /dev/shm, reserved when they are created.
pub const DEFAULT_BUS_SIZE: u64 = 64 << 20;
/// Default number of topic entries in a new bus.
pub const DEFAULT_TOPICS: u32 = 64;
/// Default number of process-table entries in a new bus: how many bus
/// mappings (usually one per process) can own publishers, subscribers,
/// producers or consumers at once.
pub const DEFAULT_PROCESSES: u32 = 1024;

/// A bus: a named shared-memory segment holding topics.
///
/// Every process that opens a bus of the same name shares its topics. The
/// first one creates it; the others join. There is no daemon.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let name = format!("doc-bus-{}", std::process::id());
/// let bus = shmbus::Bus::open(&name)?;
/// let mut tx = bus.publisher::<u64>("ticks")?;
/// let mut rx = bus.subscriber::<u64>("ticks")?;
/// tx.send(&42)?;
/// assert_eq!(rx.recv()?, 42);
/// # drop((tx, rx, bus));
/// shmbus::Bus::remove(&name)?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Bus {
    pub(crate) seg: Arc<Segment>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("name", &self.name())
            .field("size", &self.seg.size())
            .finish()
    }
}

/// Options for creating a bus; see [`Bus::builder`]. They apply only when
/// this process creates the bus: joining takes the bus as it is.
#[derive(Debug, Clone)]
#[must_use = "a bus builder does nothing until `open`"]
pub struct BusBuilder {
    name: String,
    opts: SegmentOptions,
}

impl BusBuilder {
    /// Size of the segment in bytes (address space; memory is reserved per
    /// topic). Default 64 MiB.
    pub fn size(mut self, bytes: u64) -> Self {
        self.opts.size = bytes;
        self
    }

    /// Number of topic entries. Default 64.
    pub fn topics(mut self, topics: u32) -> Self {
        self.opts.topics = topics;
        self
    }

    /// File mode of the segment. Default `0o600` (only this user); use
    /// `0o660` or `0o666` to share with a group or everyone.
    pub fn mode(mut self, mode: u32) -> Self {
        self.opts.mode = mode;
        self
    }

    /// Entries of the process table: how many bus mappings (each process
    /// that opens the bus and makes endpoints on it takes one; a process
    /// that opens the bus twice takes two) can hold endpoints at once.
    /// Default 1024, at most 65536; 64 bytes each.
    pub fn processes(mut self, processes: u32) -> Self {
        self.opts.processes = processes;
        self
    }

    /// Creates the bus, or joins it if it exists.
    pub fn open(self) -> Result<Bus, Error> {
        let invalid = |why: String| Error::InvalidBusOptions {
            bus: self.name.clone(),
            why,
        };
        if self.opts.topics == 0 || self.opts.topics > segment::layout::MAX_TOPICS {
            return Err(invalid(format!(
                "topics({}) must be between 1 and {}",
                self.opts.topics,
                segment::layout::MAX_TOPICS
            )));
        }
        if self.opts.mode & !0o777 != 0 {
            return Err(invalid(format!(
                "mode({:o}) has bits outside 0o777",
                self.opts.mode
            )));
        }
        if self.opts.processes == 0 || self.opts.processes > segment::layout::MAX_PROCESSES {
            return Err(invalid(format!(
                "processes({}) must be between 1 and {}",
                self.opts.processes,
                segment::layout::MAX_PROCESSES
            )));
        }
        if segment::layout::header_for(self.opts.size, self.opts.topics, self.opts.processes)
            .is_none()
        {
            return Err(invalid(format!(
                "size({}) cannot hold the header, {} topic entries and {} process entries",
                self.opts.size, self.opts.topics, self.opts.processes
            )));
        }
        let seg = Segment::create_or_open(&self.name, &self.opts)?;
        Ok(Bus { seg: Arc::new(seg) })
    }
}

/// What kind of topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopicKind {
    /// Broadcast, overwrite mode.
    Broadcast,
    /// Broadcast, lossless mode.
    LosslessBroadcast,
    /// Work queue.
    WorkQueue,
}

/// A topic as seen by [`Bus::topics`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TopicInfo {
    /// The topic name.
    pub name: String,
    /// Broadcast (overwrite or lossless) or work queue.
    pub kind: TopicKind,
    /// Slots in the ring; variable-size topics: message descriptors
    /// (broadcast) or 64-byte units of the arena (work queue).
    pub capacity: u32,
    /// Largest message in bytes.
    pub slot_size: u32,
    /// Variable-size topics: the arena's size in bytes (twice the largest
    /// message, and a work queue's 16-byte message header); `None` for
    /// fixed slots.
    pub arena_bytes: Option<u64>,
    /// The clock that stamps each message, for a timestamped topic.
    pub timestamps: Option<crate::Clock>,
    /// Size of the message type (0 for byte topics).
    pub type_size: u32,
    /// Messages published (broadcast) or pushed (work queue) so far.
    pub published: u64,
    /// Broadcast: pid of the process holding the publisher lease, if it is
    /// alive, as that process sees it (in another PID namespace, such as
    /// another container sharing /dev/shm, the same number may name another
    /// process here).
    pub publisher_pid: Option<u32>,
    /// Processes asleep waiting for a message right now.
    pub sleeping: u32,
    /// Lossless broadcast: subscribers attached. Work queue: producers and
    /// consumers attached.
    pub attached: u32,
    /// Lossless broadcast: subscribers evicted because they died.
    pub evictions: u64,
    /// Work queue: messages lost to processes that died mid-push or mid-pop.
    pub lost: u64,
    /// Lossless broadcast: every entry of the subscriber table that names
    /// a process (attached, being attached, or evicted), with its cursor
    /// and lag. Overwrite subscribers write nothing shared, so they are not
    /// listed (nor counted anywhere).
    pub subscribers: Vec<EndpointInfo>,
    /// Work queue: the attached producers.
    pub producers: Vec<EndpointInfo>,
    /// Work queue: the attached consumers.
    pub consumers: Vec<EndpointInfo>,
    /// Work queue: positions claimed by pops so far.
    pub popped: u64,
    /// Work queue: messages pushed and not yet popped.
    pub depth: u64,
    /// Work queue: messages lost because their producer died mid-push.
    pub lost_in_push: u64,
    /// Work queue: messages lost because their consumer died mid-pop.
    pub lost_in_consume: u64,
    /// Work queue: producers asleep waiting for room (broadcast: a
    /// lossless publisher asleep waiting for its slowest subscriber).
    pub waiting_writers: u32,
}

/// Whether a process is alive, as far as can be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProcessState {
    /// It holds its registration in the bus: it runs.
    Alive,
    /// It is gone (the kernel released its registration).
    Dead,
    /// It cannot be told (the check failed); treated as alive everywhere.
    Unknown,
}

/// A process's entry in a topic's table, as [`Bus::topics`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointInfo {
    /// Its entry's index in the topic's table (subscriber, producer or
    /// consumer table): unique per table, unlike the pid.
    pub entry: usize,
    /// Its pid, as the process recorded it (in another PID namespace, such
    /// as another container sharing /dev/shm, the same number may name
    /// another process here); `None` once it has left the process table.
    pub pid: Option<u32>,
    /// Whether its pid is from this PID namespace.
    pub same_namespace: bool,
    /// Whether it runs.
    pub process: ProcessState,
    /// Lossless subscribers: the next message it will read.
    pub cursor: Option<u64>,
    /// Lossless subscribers: messages published that it has not read.
    pub lag: Option<u64>,
    /// Lossless subscribers: it was evicted (found dead).
    pub evicted: bool,
    /// Lossless subscribers: it is still setting its entry up.
    pub attaching: bool,
}

impl Bus {
    /// Creates the bus `name` with default options, or joins it.
    ///
    /// Names are 1 to 64 characters from `A-Z a-z 0-9 . _ -`; the segment is
    /// `/dev/shm/shmbus.<name>`.
    pub fn open(name: &str) -> Result<Bus, Error> {
        Bus::builder(name).open()
    }

    /// Joins the bus `name` if it exists; never creates it
    /// (`Error::NotFound` otherwise). For tools that inspect buses.
    pub fn open_existing(name: &str) -> Result<Bus, Error> {
        let seg = Segment::open_existing(name)?;
        Ok(Bus { seg: Arc::new(seg) })
    }

    /// The names of the buses on this machine (the `shmbus.*` files in
    /// /dev/shm), whether or not they are healthy.
    pub fn list() -> Result<Vec<String>, Error> {
        segment::list_buses().map_err(|source| Error::Io {
            bus: String::new(),
            action: "listing /dev/shm",
            source,
        })
    }

    /// Removes what creators that died half-way through creating a bus left
    /// behind: their unfinished segment files (`/dev/shm/shmbus-init.*`),
    /// each removed only once its creator is known dead. Returns their file
    /// names. A creator that dies half-way never leaves anything under the
    /// bus's own name (a bus is published only once it is complete), so
    /// this never touches a bus, healthy or not.
    pub fn gc() -> Result<Vec<String>, Error> {
        segment::remove_unfinished().map_err(|source| Error::Io {
            bus: String::new(),
            action: "removing unfinished buses in /dev/shm",
            source,
        })
    }

    /// Options for creating the bus `name`.
    pub fn builder(name: &str) -> BusBuilder {
        BusBuilder {
            name: name.to_owned(),
            opts: SegmentOptions {
                size: DEFAULT_BUS_SIZE,
                topics: DEFAULT_TOPICS,
                processes: DEFAULT_PROCESSES,
                mode: 0o600,
            },
        }
    }

    /// Deletes the bus `name`. Processes that have it open keep working on
    /// their mapping; the next `open` creates a new, empty bus.
    pub fn remove(name: &str) -> Result<(), Error> {
        segment::remove(name)
    }

    /// The bus name.
    pub fn name(&self) -> &str {
        self.seg.bus()
    }

    /// A topic with options (capacity, slot size, where a subscriber starts,
    /// how it waits).
    pub fn topic(&self, name: &str) -> TopicBuilder<'_> {
        TopicBuilder::new(&self.seg, name)
    }

    /// The publisher of broadcast topic `topic`, creating the topic with
    /// default options if needed.
    pub fn publisher<T: Message>(&self, topic: &str) -> Result<Publisher<T>, Error> {
        self.topic(topic).publisher()
    }

    /// A subscriber of broadcast topic `topic`, creating the topic with
    /// default options if needed. It starts at the newest message.
    pub fn subscriber<T: Message>(&self, topic: &str) -> Result<Subscriber<T>, Error> {
        self.topic(topic).subscriber()
    }

    /// A producer of work-queue topic `topic`, creating the topic with
    /// default options if needed.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-busprod-{}", std::process::id());
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
    /// As [`TopicBuilder::producer`].
    pub fn producer<T: Message>(&self, topic: &str) -> Result<Producer<T>, Error> {
        self.topic(topic).producer()
    }

    /// A consumer of work-queue topic `topic`, creating the topic with
    /// default options if needed. See [`Bus::producer`].
    ///
    /// # Errors
    ///
    /// As [`TopicBuilder::consumer`].
    pub fn consumer<T: Message>(&self, topic: &str) -> Result<Consumer<T>, Error> {
        self.topic(topic).consumer()
    }

    /// Every topic of the bus, validated: one result per topic entry, so a
    /// corrupt entry (reported as [`Error::Corrupt`], naming the entry) does
    /// not hide the healthy ones. Topics being created at this moment are
    /// left out.
    ///
    /// # Errors
    ///
    /// The outer error only if the directory itself cannot be viewed (the
    /// segment is corrupt); per-topic errors are in the list.
    pub fn topics(&self) -> Result<Vec<Result<TopicInfo, Error>>, Error> {
        Ok(directory::list(&self.seg)?
            .into_iter()
            .map(|topic| topic.and_then(|topic| self.topic_info(&topic.config)))
            .collect())
    }

    /// What the process table says of `owner`.
    fn endpoint(&self, entry: usize, owner: Owner) -> EndpointInfo {
        let process = self.seg.process_info(owner);
        EndpointInfo {
            entry,
            pid: process.map(|p| p.pid),
            same_namespace: process.is_some_and(|p| p.same_namespace),
            process: match self.seg.liveness(owner) {
                Liveness::Alive => ProcessState::Alive,
                Liveness::Dead => ProcessState::Dead,
                Liveness::Unknown => ProcessState::Unknown,
            },
            cursor: None,
            lag: None,
            evicted: false,
            attaching: false,
        }
    }

    fn topic_info(&self, c: &EntryConfig) -> Result<TopicInfo, Error> {
        let name = directory::entry_name(c).unwrap_or_default();
        let shape = crate::segment::region::Shape::of(c);
        let mut info = TopicInfo {
            name: name.to_owned(),
            kind: TopicKind::Broadcast,
            capacity: c.capacity,
            slot_size: if shape.variable() && c.kind == KIND_QUEUE {
                crate::ring::queue::var_max_message(c.capacity as usize) as u32
            } else {
                c.slot_size
            },
            arena_bytes: {
                let shape = crate::segment::region::Shape::of(c);
                shape.variable().then(|| shape.arena_bytes())
            },
            timestamps: crate::segment::region::Shape::of(c).clock(),
            type_size: c.type_size,
            published: 0,
            publisher_pid: None,
            sleeping: 0,
            attached: 0,
            evictions: 0,
            lost: 0,
            subscribers: Vec::new(),
            producers: Vec::new(),
            consumers: Vec::new(),
            popped: 0,
            depth: 0,
            lost_in_push: 0,
            lost_in_consume: 0,
            waiting_writers: 0,
        };
        // Unknown counts as attached: it may well be.
        let live =
            |owner: Option<Owner>| owner.is_some_and(|owner| !self.seg.liveness(owner).is_dead());
        if c.kind == KIND_QUEUE {
            let view = QueueView::new(Arc::clone(&self.seg), name, c)?;
            let ring = view.ring();
            let ctrl = ring.ctrl();
            info.kind = TopicKind::WorkQueue;
            info.published = ctrl.pushed();
            info.sleeping = ctrl
                .not_empty()
                .waiters()
                .saturating_add(ctrl.not_full().waiters());
            info.attached = ring
                .producers()
                .iter()
                .chain(ring.consumers())
                .filter(|e| live(e.owner()))
                .count() as u32;
            info.lost = ctrl.lost_in_push() + ctrl.lost_in_consume();
            info.popped = ctrl.popped();
            info.depth = info.published.saturating_sub(info.popped);
            info.lost_in_push = ctrl.lost_in_push();
            info.lost_in_consume = ctrl.lost_in_consume();
            info.sleeping = ctrl.not_empty().waiters();
            info.waiting_writers = ctrl.not_full().waiters();
            let workers = |entries: &[crate::ring::queue::ClaimEntry]| {
                entries
                    .iter()
                    .enumerate()
                    .filter_map(|(i, e)| Some(self.endpoint(i, e.owner()?)))
                    .collect()
            };
            info.producers = workers(ring.producers());
            info.consumers = workers(ring.consumers());
        } else {
            let view = BroadcastView::new(Arc::clone(&self.seg), name, c)?;
            let ctrl = view.ring().ctrl();
            info.published = view.ring().published();
            info.publisher_pid = ctrl
                .lease()
                .holder()
                .filter(|&owner| !self.seg.liveness(owner).is_dead())
                .and_then(|owner| self.seg.process_info(owner))
                .map(|info| info.pid);
            info.sleeping = ctrl.wake().waiters();
            if let Some(gate) = view.gate() {
                info.kind = TopicKind::LosslessBroadcast;
                info.attached = gate.entries().iter().filter(|e| live(e.owner())).count() as u32;
                info.evictions = gate.ctrl().evictions();
                info.waiting_writers = gate.ctrl().space().waiters();
                for (index, entry) in gate.entries().iter().enumerate() {
                    let Some((owner, flags)) = entry.owner_flagged() else {
                        continue;
                    };
                    let cursor = entry.cursor();
                    info.subscribers.push(EndpointInfo {
                        cursor: Some(cursor),
                        lag: Some(info.published.saturating_sub(cursor)),
                        evicted: flags == FLAG_EVICTED,
                        attaching: flags == FLAG_CLAIMING,
                        ..self.endpoint(index, owner)
                    });
                }
            }
        }
        Ok(info)
    }
}

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
use crate::transport::{Carrier, PipeBus, Transport};
use crate::{Consumer, Producer, Publisher, Subscriber};
use std::path::PathBuf;

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
    /// A bus on pipes: its directory (`seg` is then this process's private
    /// segment, which only holds loans and checks topic options).
    pub(crate) pipe: Option<Arc<PipeBus>>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("name", &self.name())
            .field("transport", &self.transport())
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
    transport: Transport,
    dir: Option<PathBuf>,
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

    /// Which transport: shared memory, pipes, or `Auto` (the default:
    /// shared memory where `/dev/shm` can hold the bus, else pipes; see
    /// [`Transport`]). A bus that exists is joined on its own transport by
    /// `Auto`; naming the other one opens a different bus of the same name.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Where pipe buses live (a bus is the directory `<dir>/<name>`).
    /// Default `$XDG_RUNTIME_DIR/shmbus`, else `/tmp/shmbus-<uid>`. A
    /// directory shared by bind mount carries a pipe bus across
    /// containers.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Creates the bus, or joins it if it exists.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidBusOptions`] for options out of range; with
    /// [`Transport::SharedMemory`], what creating or mapping the segment
    /// met ([`Error::NoSpace`], [`Error::Io`], ...); with `Auto`, those
    /// only where pipes cannot be used either.
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
        // (A segment is one mapping: its length must be a usize, less than
        // isize::MAX; the system may still refuse less, and says so.)
        if self.opts.size > isize::MAX as u64 {
            return Err(invalid(format!(
                "size({}) is over the largest mapping there can be ({} bytes); ask for the \
                 bytes the bus needs (the default is 64 MiB)",
                self.opts.size,
                isize::MAX
            )));
        }
        if self.opts.mode & 0o600 != 0o600 {
            return Err(invalid(format!(
                "mode({:o}) must give the owner read and write (0o600): every process maps \
                 the bus read-write, its creator too; add 0o600 (0o660 shares it with the group)",
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
        let root = self
            .dir
            .clone()
            .unwrap_or_else(crate::transport::default_root);
        match self.transport {
            Transport::SharedMemory => self.open_shm(),
            Transport::Pipe => self.open_pipe(&root, Carrier::Fifo),
            Transport::Mq => self.open_pipe(&root, Carrier::Mq),
            Transport::Auto => {
                segment::validate_name("bus", &self.name)?;
                if std::path::Path::new(&segment::path(&self.name)).exists() {
                    return self.open_shm();
                }
                if let Some(existing) = PipeBus::existing(&self.name, &root) {
                    return self.open_pipe(&root, existing.carrier);
                }
                match self.open_shm() {
                    Err(err) => match unusable_shm(&err) {
                        Some(why) => {
                            log_fallback(&self.name, &root, &why);
                            self.open_pipe(&root, Carrier::Fifo)
                        }
                        None => Err(err),
                    },
                    ok => ok,
                }
            }
        }
    }

    fn open_shm(&self) -> Result<Bus, Error> {
        let seg = Segment::create_or_open(&self.name, &self.opts)?;
        Ok(Bus {
            seg: Arc::new(seg),
            pipe: None,
        })
    }

    /// Joins the pipe bus `existing` as it is (making nothing of it).
    fn join_pipe(&self, existing: PipeBus) -> Result<Bus, Error> {
        let seg = Segment::private(&self.name, &self.opts)?;
        Ok(Bus {
            seg: Arc::new(seg),
            pipe: Some(Arc::new(existing)),
        })
    }

    fn open_pipe(&self, root: &std::path::Path, carrier: Carrier) -> Result<Bus, Error> {
        segment::validate_name("bus", &self.name)?;
        let pipe = PipeBus::create_or_open(&self.name, root, self.opts.mode, carrier)?;
        let seg = Segment::private(&self.name, &self.opts)?;
        Ok(Bus {
            seg: Arc::new(seg),
            pipe: Some(Arc::new(pipe)),
        })
    }
}

/// Why `/dev/shm` cannot hold a bus, if `err` says it cannot (and not that
/// something about this bus is wrong): what `Auto` falls back to pipes for.
fn unusable_shm(err: &Error) -> Option<String> {
    let dev_shm = std::path::Path::new("/dev/shm");
    match err {
        _ if !dev_shm.is_dir() => Some("/dev/shm does not exist".into()),
        Error::NoSpace { source, .. } => Some(format!("/dev/shm is full ({source})")),
        Error::Io { source, .. } => match source.raw_os_error() {
            Some(libc::EROFS) => Some("/dev/shm is read-only".into()),
            Some(libc::EACCES | libc::EPERM) => Some(format!(
                "/dev/shm is not writable by this process ({source})"
            )),
            Some(libc::ENOSPC) => Some(format!("/dev/shm is full ({source})")),
            Some(libc::ENOENT | libc::ENOTDIR) => {
                Some(format!("/dev/shm cannot hold files ({source})"))
            }
            _ => None,
        },
        _ => None,
    }
}

/// Says once per process and bus that `Auto` chose pipes, and why (on
/// standard error, unless `SHMBUS_QUIET` is set).
fn log_fallback(bus: &str, root: &std::path::Path, why: &str) {
    use std::sync::Mutex;
    static SAID: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    if said.iter().any(|b| b == bus) {
        return;
    }
    said.push(bus.to_owned());
    if std::env::var_os("SHMBUS_QUIET").is_none() {
        eprintln!(
            "shmbus: bus {bus:?} runs on pipes in {}: {why}",
            root.join(bus).display()
        );
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

impl TopicInfo {
    /// What topic entry `c` (named `name`) says, before any counter is
    /// read: its kind, shape and type, every count zero.
    fn configured(name: &str, c: &EntryConfig) -> TopicInfo {
        let shape = crate::segment::region::Shape::of(c);
        let queue = c.kind == KIND_QUEUE;
        TopicInfo {
            name: name.to_owned(),
            kind: if queue {
                TopicKind::WorkQueue
            } else if shape.lossless() {
                TopicKind::LosslessBroadcast
            } else {
                TopicKind::Broadcast
            },
            capacity: c.capacity,
            slot_size: if shape.variable() && queue {
                crate::ring::queue::var_max_message(c.capacity as usize) as u32
            } else {
                c.slot_size
            },
            arena_bytes: shape.variable().then(|| shape.arena_bytes()),
            timestamps: shape.clock(),
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
        }
    }
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
    /// (`Error::NotFound` otherwise). For tools that inspect buses. Looks
    /// in /dev/shm, then among the pipe buses of the default directory
    /// ([`default_pipe_dir`](crate::default_pipe_dir)); a bus elsewhere:
    /// [`Bus::open_existing_in`].
    pub fn open_existing(name: &str) -> Result<Bus, Error> {
        Bus::open_existing_in(name, &crate::transport::default_root())
    }

    /// Joins the bus `name` if it exists, in /dev/shm or among the pipe
    /// (and message-queue) buses under `dir`, on its own transport; never
    /// creates it. `Error::NotFound` names both places looked in.
    pub fn open_existing_in(name: &str, dir: &std::path::Path) -> Result<Bus, Error> {
        match Segment::open_existing(name) {
            Ok(seg) => Ok(Bus {
                seg: Arc::new(seg),
                pipe: None,
            }),
            // Joined as found, never made: a bus removed meanwhile is not
            // made anew by a tool that only looks.
            Err(Error::NotFound { .. }) => match PipeBus::existing(name, dir) {
                Some(existing) => Bus::builder(name).join_pipe(existing),
                None => Err(Error::NotFound {
                    bus: name.to_owned(),
                    pipe_dir: Some(dir.to_owned()),
                }),
            },
            Err(err) => Err(err),
        }
    }

    /// The names of the buses on this machine: the `shmbus.*` files in
    /// /dev/shm, whether or not they are healthy, then the pipe buses in
    /// the default directory not already named (see [`Bus::list_pipe`]).
    pub fn list() -> Result<Vec<String>, Error> {
        Bus::list_in(&crate::transport::default_root())
    }

    /// [`Bus::list`], with the pipe buses under `dir`.
    pub fn list_in(dir: &std::path::Path) -> Result<Vec<String>, Error> {
        let mut buses = match segment::list_buses() {
            Ok(buses) => buses,
            // No /dev/shm: only pipe buses, then.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(Error::Io {
                    bus: String::new(),
                    path: None,
                    action: "listing /dev/shm",
                    source,
                })
            }
        };
        for bus in Bus::list_pipe(dir) {
            if !buses.contains(&bus) {
                buses.push(bus);
            }
        }
        Ok(buses)
    }

    /// The pipe buses under `dir` (the default is
    /// [`default_pipe_dir`](crate::default_pipe_dir)).
    pub fn list_pipe(dir: &std::path::Path) -> Vec<String> {
        crate::transport::list(dir)
    }

    /// The transport this bus runs on.
    pub fn transport(&self) -> Transport {
        match &self.pipe {
            Some(pipe) => pipe.carrier.transport(),
            None => Transport::SharedMemory,
        }
    }

    /// A pipe bus's directory (`None` in shared memory).
    pub fn pipe_dir(&self) -> Option<&std::path::Path> {
        self.pipe.as_ref().map(|p| p.dir.as_path())
    }

    /// Removes what creators that died half-way through creating a bus left
    /// behind: their unfinished segment files (`/dev/shm/shmbus-init.*`),
    /// each removed only once its creator is known dead. Returns their file
    /// names. A creator that dies half-way never leaves anything under the
    /// bus's own name (a bus is published only once it is complete), so
    /// this never touches a bus, healthy or not.
    pub fn gc() -> Result<Vec<String>, Error> {
        let mut removed = match segment::remove_unfinished() {
            Ok(removed) => removed,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(Error::Io {
                    bus: String::new(),
                    path: None,
                    action: "removing unfinished buses in /dev/shm",
                    source,
                })
            }
        };
        // Pipe buses: the records and FIFOs of endpoints known dead.
        removed.extend(crate::transport::gc(&crate::transport::default_root()));
        Ok(removed)
    }

    /// Removes what endpoints known dead left in the pipe buses under
    /// `dir` (their records and FIFOs; a publisher and lossless subscribers
    /// also remove a dead one's when they meet it). Returns the paths
    /// removed. [`Bus::gc`] does this for the default directory.
    pub fn gc_pipe(dir: &std::path::Path) -> Vec<String> {
        crate::transport::gc(dir)
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
            transport: Transport::Auto,
            dir: None,
        }
    }

    /// Deletes the bus `name`. Processes that have it open keep working on
    /// their mapping; the next `open` creates a new, empty bus.
    ///
    /// Removes the shared-memory bus `name` and the pipe bus `name` in the
    /// default directory, whichever exist; `Error::NotFound` if neither
    /// does. (A pipe bus elsewhere: [`Bus::remove_pipe`].)
    pub fn remove(name: &str) -> Result<(), Error> {
        Bus::remove_in(name, &crate::transport::default_root())
    }

    /// [`Bus::remove`], with the pipe bus under `dir` instead of the
    /// default directory's: removes the shared-memory bus `name` and the
    /// pipe bus `name` under `dir`, whichever exist; `Error::NotFound`
    /// (naming both places) if neither does.
    pub fn remove_in(name: &str, dir: &std::path::Path) -> Result<(), Error> {
        // (Both check the name before they touch anything: `../x` would
        // reach outside `dir`.)
        let shm = segment::remove(name);
        let pipe = crate::transport::remove(name, dir)?;
        match shm {
            Err(Error::NotFound { .. }) if pipe => Ok(()),
            Err(Error::NotFound { bus, .. }) => Err(Error::NotFound {
                bus,
                pipe_dir: Some(dir.to_owned()),
            }),
            other => other,
        }
    }

    /// Removes the pipe bus `name` under `dir`: its directory, FIFOs and
    /// records. Processes that have its FIFOs open keep them. False if
    /// there was none.
    pub fn remove_pipe(name: &str, dir: &std::path::Path) -> Result<bool, Error> {
        crate::transport::remove(name, dir)
    }

    /// The bus name.
    pub fn name(&self) -> &str {
        self.seg.bus()
    }

    /// A topic with options (capacity, slot size, where a subscriber starts,
    /// how it waits).
    pub fn topic(&self, name: &str) -> TopicBuilder<'_> {
        TopicBuilder::new(&self.seg, self.pipe.as_ref(), name)
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
        if let Some(pipe) = &self.pipe {
            return Ok(self.pipe_topics(pipe));
        }
        Ok(directory::list(&self.seg)?
            .into_iter()
            .map(|topic| topic.and_then(|topic| self.topic_info(&topic.config)))
            .collect())
    }

    /// A pipe bus's topics, from its directory: each topic's configuration
    /// and its endpoints' records.
    fn pipe_topics(&self, pipe: &PipeBus) -> Vec<Result<TopicInfo, Error>> {
        let Ok(entries) = std::fs::read_dir(&pipe.dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                e.file_name()
                    .into_string()
                    .ok()?
                    .strip_prefix("t.")
                    .map(str::to_owned)
            })
            .collect();
        names.sort();
        names
            .into_iter()
            .filter_map(|name| match pipe.read_config(&name) {
                Ok(None) => None, // being created
                Ok(Some(config)) => Some(Ok(self.pipe_topic_info(pipe, &name, &config))),
                Err(err) => Some(Err(err)),
            })
            .collect()
    }

    fn pipe_topic_info(&self, pipe: &PipeBus, name: &str, c: &EntryConfig) -> TopicInfo {
        use crate::transport::record_liveness;
        let dir = pipe.topic_dir(name);
        let shape = crate::segment::region::Shape::of(c);
        let endpoints = |prefix: &str| -> Vec<EndpointInfo> {
            PipeBus::records(&dir, prefix)
                .into_iter()
                .enumerate()
                .map(|(entry, id)| {
                    let record = dir.join(format!("{prefix}{id}"));
                    let pid = crate::transport::read_text(&record).and_then(|s| {
                        s.lines()
                            .find_map(|l| l.strip_prefix("pid=")?.parse::<u32>().ok())
                    });
                    EndpointInfo {
                        entry,
                        pid,
                        same_namespace: false,
                        process: match record_liveness(&record) {
                            Liveness::Alive => ProcessState::Alive,
                            Liveness::Dead => ProcessState::Dead,
                            Liveness::Unknown => ProcessState::Unknown,
                        },
                        cursor: None,
                        lag: None,
                        evicted: false,
                        attaching: false,
                    }
                })
                .collect()
        };
        let live = |list: &[EndpointInfo]| {
            list.iter()
                .filter(|e| e.process != ProcessState::Dead)
                .count() as u32
        };
        let queue = c.kind == KIND_QUEUE;
        let mut info = TopicInfo::configured(name, c);
        let max_message = crate::transport::pipe::PipeQueue::max_message_on(pipe.carrier);
        if shape.variable() && queue {
            // A variable-size pipe queue's messages are capped at a frame.
            info.slot_size = info.slot_size.min(max_message as u32);
        }
        if queue {
            info.producers = endpoints("prod-");
            info.consumers = endpoints("cons-");
            info.attached = live(&info.producers) + live(&info.consumers);
            if pipe.carrier == Carrier::Mq {
                use crate::transport::mq;
                if let Ok(fd) = mq::open(&pipe.mq_name(name, None), mq::Access::Read, true, None) {
                    info.depth = mq::depth(std::os::fd::AsFd::as_fd(&fd)) as u64;
                }
            } else if let Ok(fd) = rustix::fs::open(
                dir.join("queue"),
                rustix::fs::OFlags::RDWR
                    | rustix::fs::OFlags::NONBLOCK
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            ) {
                // As the producers make them: a header and the largest
                // message (`info.slot_size`, capped above for a variable
                // queue as its ring caps it).
                let frame =
                    (crate::transport::frame::HEADER + info.slot_size as usize).next_multiple_of(8);
                info.depth = rustix::io::ioctl_fionread(&fd).unwrap_or(0) / frame as u64;
            }
        } else {
            info.subscribers = endpoints("sub-");
            info.attached = live(&info.subscribers);
            let lease = dir.join("publisher");
            let text = crate::transport::read_text(&lease).unwrap_or_default();
            if record_liveness(&lease) == Liveness::Alive {
                info.publisher_pid = text.lines().next().and_then(|l| l.trim().parse().ok());
            }
            // The publishers' sequence number and evictions, as the `seq`
            // words keep them.
            // (Read as every file of the directory is: a regular file, not
            // followed through a link, and short; anything else, a FIFO
            // put there say, reads as nothing rather than block.)
            let seq = crate::transport::read_small(&dir.join("seq"), 4096).unwrap_or_default();
            let word = |i: usize| {
                seq.get(i * 8..i * 8 + 8)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, u64::from_ne_bytes)
            };
            info.evictions = word(1);
            info.published = word(0).max(
                text.lines()
                    .find_map(|l| l.strip_prefix("next=")?.parse().ok())
                    .unwrap_or(0),
            );
        }
        info
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
        let mut info = TopicInfo::configured(name, c);
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

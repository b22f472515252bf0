//! The fallback transports: the same bus over named pipes (FIFOs) in a
//! directory, or over POSIX message queues with the same directory as
//! registry (see [`mq`]), for where a shared segment cannot be used
//! (`/dev/shm` missing, read-only or full; processes that share only a
//! directory).
//!
//! # Layout
//!
//! A bus is a directory, `<root>/<bus>/` (root: `$XDG_RUNTIME_DIR/shmbus`,
//! else `/tmp/shmbus-<uid>`, or the builder's `dir`), mode 0700 unless the
//! bus's mode shares it. In it, `.lock` (taken with `flock` while a topic
//! is created or joined) and one directory per topic, `t.<topic>/`:
//!
//! - `config`: the topic's configuration (the shared-memory directory
//!   entry's bytes), written once, by rename, under `.lock`;
//! - `publisher`: the broadcast lease, an OFD lock held by the publisher;
//!   `join`, a FIFO the publisher reads: a new subscriber writes a byte
//!   there so that the publisher looks for it;
//! - `sub-<id>` (a record) and `sub-<id>.fifo` per subscriber;
//! - `queue`, a work queue's one FIFO; `prod-<id>`, `cons-<id>` records.
//!
//! # Liveness
//!
//! Every endpoint holds an OFD write lock on its record file for its life.
//! The kernel drops it when the process dies (or closes the record), so an
//! `F_OFD_GETLK` that finds no lock means *known dead*; an error means
//! *cannot tell*, treated as alive. This works across PID namespaces: a
//! directory shared between containers is all it needs.
//!
//! # What travels
//!
//! Frames (see [`frame`]): a 32-byte header (magic, kind, length, sequence
//! number, timestamp, header check) and the payload. See `pipe` for the
//! endpoints' protocols.

pub(crate) mod frame;
pub(crate) mod mq;
pub(crate) mod pipe;

use std::fs::File;
use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Error;
use crate::ring::Liveness;
use crate::segment::layout::EntryConfig;

/// Which transport a bus uses ([`BusBuilder::transport`](crate::BusBuilder::transport)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Transport {
    /// Shared memory where `/dev/shm` can hold the bus, else pipes (see
    /// the README's "Without shared memory"). A bus that exists already is
    /// joined on the transport it has.
    #[default]
    Auto,
    /// A segment in `/dev/shm`: the fast path.
    SharedMemory,
    /// Named pipes (FIFOs) in a directory: every message is a `write(2)`
    /// and a `read(2)`.
    Pipe,
    /// POSIX message queues (`mq_overview(7)`), one per subscriber and per
    /// work queue, named `/shmbus.<bus>@<tag>:<topic>[:<id>]` (the tag: the
    /// identity of the bus's directory), with the registry
    /// in a directory as for pipes: every message is an `mq_send` and an
    /// `mq_receive`. A topic's capacity must fit the system's queue limits
    /// (`fs.mqueue.msg_max`, 10 by default for unprivileged processes);
    /// never chosen by `Auto`.
    Mq,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Auto => "auto",
            Transport::SharedMemory => "shared memory",
            Transport::Pipe => "pipe",
            Transport::Mq => "mq",
        })
    }
}

/// The default root of pipe buses: `$XDG_RUNTIME_DIR/shmbus` if that
/// directory exists, else `/tmp/shmbus-<uid>`.
pub fn default_root() -> PathBuf {
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR") {
        let runtime = PathBuf::from(runtime);
        if runtime.is_absolute() && runtime.is_dir() {
            return runtime.join("shmbus");
        }
    }
    PathBuf::from(format!(
        "/tmp/shmbus-{}",
        rustix::process::getuid().as_raw()
    ))
}

/// What carries a directory bus's frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Carrier {
    /// FIFOs in the directory.
    Fifo,
    /// POSIX message queues (see [`mq`]).
    Mq,
}

impl Carrier {
    /// The transport this carrier is.
    pub fn transport(self) -> Transport {
        match self {
            Carrier::Fifo => Transport::Pipe,
            Carrier::Mq => Transport::Mq,
        }
    }
}

/// The file whose presence in a bus's directory says that its frames
/// travel in POSIX message queues (made before the directory gets its
/// name, so nobody sees the bus without it).
const MQ_MARK: &str = "mq";
/// The names of directories of buses being made (renamed into place).
const NEW_PREFIX: &str = ".shmbus-new-";

/// A bus in a directory (pipes or message queues): its directory.
#[derive(Debug)]
pub(crate) struct PipeBus {
    pub bus: String,
    pub dir: PathBuf,
    pub mode: u32,
    pub carrier: Carrier,
    /// What names its message queues apart from another bus's of the same
    /// name (see [`mq::bus_tag`]).
    pub mq_tag: String,
}

/// An error of a system call on a pipe bus.
pub(crate) fn io_error(bus: &str, action: &'static str, source: std::io::Error) -> Error {
    Error::Io {
        bus: bus.to_owned(),
        path: None,
        action,
        source,
    }
}

/// An error of a system call on `path`, of a pipe bus.
pub(crate) fn io_error_at(
    bus: &str,
    action: &'static str,
    path: impl Into<PathBuf>,
    source: std::io::Error,
) -> Error {
    Error::Io {
        bus: bus.to_owned(),
        path: Some(path.into()),
        action,
        source,
    }
}

fn errno(err: rustix::io::Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(err.raw_os_error())
}

/// The directory modes that go with a bus's file mode: search permission
/// wherever the mode gives read or write.
fn dir_mode(mode: u32) -> u32 {
    let mut dir = mode | 0o700;
    for shift in [3, 0] {
        if mode & (0o6 << shift) != 0 {
            dir |= 0o1 << shift;
        }
    }
    dir
}

impl PipeBus {
    /// The directory of bus `bus` under `root`, if it exists.
    pub fn existing(bus: &str, root: &Path) -> Option<PipeBus> {
        let dir = root.join(bus);
        if !dir.join(".lock").exists() {
            return None;
        }
        Some(PipeBus {
            bus: bus.to_owned(),
            carrier: carrier_of(&dir),
            mq_tag: mq::bus_tag(&dir).ok()?,
            dir,
            mode: 0o600,
        })
    }

    /// Creates the bus's directory under `root` (and `root`, mode 0700), or
    /// joins it; `carrier` is what a new bus uses, and what an existing
    /// one must use.
    pub fn create_or_open(
        bus: &str,
        root: &Path,
        mode: u32,
        carrier: Carrier,
    ) -> Result<PipeBus, Error> {
        // A root removed under us (another process removing its last bus
        // there) is made again: a few tries.
        let mut tries = 0;
        let pipe = loop {
            match PipeBus::try_create_or_open(bus, root, mode, carrier) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 8 => tries += 1,
                Err(e) => {
                    return Err(io_error_at(
                        bus,
                        "creating or opening the pipe bus directory",
                        root.join(bus),
                        e,
                    ))
                }
                Ok(pipe) => break pipe,
            }
        };
        if pipe.carrier != carrier {
            return Err(Error::InvalidBusOptions {
                bus: bus.to_owned(),
                why: format!(
                    "the bus in {} runs on {}, not {}: open it with Transport::{:?} (or Auto), \
                     or remove it first",
                    pipe.dir.display(),
                    pipe.carrier.transport(),
                    carrier.transport(),
                    pipe.carrier.transport(),
                ),
            });
        }
        Ok(pipe)
    }

    fn try_create_or_open(
        bus: &str,
        root: &Path,
        mode: u32,
        carrier: Carrier,
    ) -> std::io::Result<PipeBus> {
        // (A file there makes the creation below fail with "File exists";
        // a dangling symbolic link too.)
        if root.symlink_metadata().is_ok() && !root.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                format!("{} is not a directory", root.display()),
            ));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)?;
        let dir = root.join(bus);
        if !dir.is_dir() {
            // Made whole under another name (with its lock file and its
            // carrier's mark), then renamed into place: whoever sees the
            // bus sees what carries it.
            let temp = root.join(format!("{NEW_PREFIX}{}", unique_id()));
            std::fs::DirBuilder::new()
                .mode(dir_mode(mode))
                .create(&temp)?;
            let made = (|| {
                // The umask may have taken bits the mode asks for.
                std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(dir_mode(mode)))?;
                let file = |name: &str| {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .read(true)
                        .write(true)
                        .mode(mode)
                        .open(temp.join(name))
                };
                // Locked until renamed, so that `gc` knows a maker that
                // died half-way from one still at work.
                let lock = file(".lock")?;
                crate::segment::procs::try_lock(lock.as_raw_fd(), 0, libc::F_WRLCK)?;
                if carrier == Carrier::Mq {
                    file(MQ_MARK)?;
                }
                std::fs::rename(&temp, &dir)
            })();
            if made.is_err() {
                // Another made it first (a rename onto a directory that is
                // not empty fails), or we could not: join, or say why.
                let _ = std::fs::remove_dir_all(&temp);
                if !dir.is_dir() {
                    made?;
                }
            }
        }
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(mode)
            .open(dir.join(".lock"))?;
        Ok(PipeBus {
            bus: bus.to_owned(),
            carrier: carrier_of(&dir),
            mq_tag: mq::bus_tag(&dir)?,
            dir,
            mode,
        })
    }

    /// Opens message queue `name` of topic `topic` (non-blocking), made
    /// with the bus's mode to hold `depth` messages of `msgsize` bytes if
    /// it does not exist; an error that names the system limit that
    /// refuses it.
    pub fn make_queue(
        &self,
        name: &str,
        topic: &str,
        access: mq::Access,
        depth: usize,
        msgsize: usize,
    ) -> Result<std::os::fd::OwnedFd, Error> {
        mq::open(name, access, true, Some((self.mode, depth, msgsize)))
            .map_err(|e| mq::create_error(&self.bus, topic, name, e, depth, msgsize))
    }

    /// Whether a new topic of `shape` can be carried here, asked before
    /// it is recorded: on FIFOs, a work queue's frames must fit
    /// `PIPE_BUF`; on message queues, the queue its subscribers (or the
    /// work queue) will need is made and removed again, so that the
    /// system's limits (`msg_max`, `msgsize_max`, `RLIMIT_MSGQUEUE`) refuse
    /// it now, with the error that names them, and not once the topic is
    /// recorded with options no endpoint can use.
    pub fn check_new_topic(
        &self,
        topic: &str,
        shape: &crate::segment::region::Shape,
    ) -> Result<(), Error> {
        use crate::transport::pipe::PipeQueue;
        let queue = shape.kind == crate::segment::layout::KIND_QUEUE;
        let variable = shape.variable();
        let capacity = shape.capacity as usize;
        // The largest message, as the ring the endpoints make has it.
        let largest = if queue && variable {
            crate::ring::queue::var_max_message(capacity)
        } else {
            shape.slot_size as usize
        };
        if self.carrier == Carrier::Fifo {
            return if queue {
                PipeQueue::check_slot(topic, largest, variable)
            } else {
                Ok(())
            };
        }
        // As `PipeQueue::open` and `PipeRx::open` (with the subscriber's
        // capacity and frame from `Subscriber::on_pipe`) make their queues.
        let depth = mq::queue_len(capacity, variable);
        let msgsize = if queue {
            PipeQueue::frame_len_on(Carrier::Mq, largest, variable)
        } else {
            frame::data_frame_len(largest)
        };
        // Under the bus's lock (see `find_or_create`): a probe queue there
        // already was left by a process killed between making and removing
        // it, and is removed first (opening it would test its shape, not
        // this one's). `gc` and `remove` remove one left behind too.
        // Only the shape is judged here: a queue budget that is full now
        // (this user's RLIMIT_MSGQUEUE, the system's queues_max, this
        // process's descriptors) may not be when the endpoints that need
        // queues come, in other processes, perhaps of other users; those
        // are refused then, by their own queue, with the same error. (A
        // broadcast publisher needs none.) The kernel checks a full budget
        // before the shape, so then the shape is judged from the limits.
        let probe = mq::probe_name(&self.bus, &self.dir);
        mq::unlink(&probe);
        match mq::open(
            &probe,
            mq::Access::Write,
            true,
            Some((self.mode, depth, msgsize)),
        ) {
            Ok(fd) => {
                drop(fd);
                mq::unlink(&probe);
                Ok(())
            }
            Err(rustix::io::Errno::MFILE | rustix::io::Errno::NOSPC)
                if !mq::over_shape_limits(depth, msgsize) =>
            {
                Ok(())
            }
            Err(rustix::io::Errno::MFILE | rustix::io::Errno::NOSPC) => Err(mq::create_error(
                &self.bus,
                topic,
                &probe,
                rustix::io::Errno::INVAL,
                depth,
                msgsize,
            )),
            Err(e) => Err(mq::create_error(
                &self.bus, topic, &probe, e, depth, msgsize,
            )),
        }
    }

    /// The name of topic `topic`'s message queue (a work queue's), or its
    /// subscriber `id`'s.
    pub fn mq_name(&self, topic: &str, id: Option<&str>) -> String {
        mq::name(&self.bus, &self.mq_tag, topic, id)
    }

    /// An error of a system call on `path`, of this bus.
    fn io(&self, action: &'static str, path: &Path, source: std::io::Error) -> Error {
        io_error_at(&self.bus, action, path, source)
    }

    /// Takes the bus's `flock` until the guard drops.
    pub fn lock(&self) -> Result<DirLock, Error> {
        let path = self.dir.join(".lock");
        let file =
            File::open(&path).map_err(|e| self.io("opening the pipe bus lock file", &path, e))?;
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive) {
                Ok(()) => return Ok(DirLock { _file: file }),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(self.io("locking the pipe bus", &path, errno(e))),
            }
        }
    }

    /// The bus's `flock` if no one holds it, else `None` (for `gc`, which
    /// never waits on another process).
    fn try_lock(&self) -> Option<DirLock> {
        let file = File::open(self.dir.join(".lock")).ok()?;
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Some(DirLock { _file: file }),
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => return None,
            }
        }
    }

    /// The directory of topic `topic`.
    pub fn topic_dir(&self, topic: &str) -> PathBuf {
        self.dir.join(format!("t.{topic}"))
    }

    /// The configuration of topic `topic`, if it was created.
    pub fn read_config(&self, topic: &str) -> Result<Option<EntryConfig>, Error> {
        use zerocopy::FromBytes;
        let path = self.topic_dir(topic).join("config");
        let bytes = match read_small(&path, core::mem::size_of::<EntryConfig>()) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io("reading a topic's configuration", &path, e)),
        };
        EntryConfig::read_from_bytes(&bytes)
            .map(Some)
            .map_err(|_| Error::Corrupt {
                bus: self.bus.clone(),
                what: format!(
                    "{} is {} bytes, not a topic configuration of {}",
                    path.display(),
                    bytes.len(),
                    core::mem::size_of::<EntryConfig>()
                ),
            })
    }

    /// Creates topic `topic`'s directory and writes its configuration
    /// (under the bus's lock: see [`lock`](Self::lock)).
    pub fn write_config(&self, topic: &str, config: &EntryConfig) -> Result<(), Error> {
        use zerocopy::IntoBytes;
        let dir = self.topic_dir(topic);
        match std::fs::DirBuilder::new()
            .mode(dir_mode(self.mode))
            .create(&dir)
        {
            Ok(()) => {
                let _ = std::fs::set_permissions(
                    &dir,
                    std::fs::Permissions::from_mode(dir_mode(self.mode)),
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(self.io("creating a topic directory", &dir, e)),
        }
        // The publisher lease, empty until a publisher takes it: a
        // subscriber tells "no publisher yet" from "the publisher left" by
        // whether it is empty (see `pipe::PipeRx::publisher_gone`).
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(self.mode)
            .open(dir.join("publisher"))
            .map_err(|e| {
                self.io(
                    "creating a topic's publisher lease",
                    &dir.join("publisher"),
                    e,
                )
            })?;
        let temp = dir.join(format!("config.{}", unique_id()));
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(self.mode)
                .open(&temp)?;
            file.write_all(config.as_bytes())?;
            std::fs::rename(&temp, dir.join("config"))
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            self.io("writing a topic's configuration", &dir.join("config"), e)
        })
    }

    /// Makes a FIFO at `path` with the bus's mode.
    pub fn mkfifo(&self, path: &Path) -> Result<(), Error> {
        match rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(self.mode),
            0,
        ) {
            Ok(()) => {
                // The umask may have taken bits the mode asks for.
                let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(self.mode));
                Ok(())
            }
            // Made already (opened with a check that it is a FIFO).
            Err(rustix::io::Errno::EXIST) => Ok(()),
            Err(e) => Err(self.io("making a FIFO", path, errno(e))),
        }
    }

    /// Records in `dir` whose names start with `prefix` (`sub-`, `prod-`,
    /// `cons-`): their ids.
    pub fn records(dir: &Path, prefix: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|name| {
                let id = name.strip_prefix(prefix)?;
                (!id.contains('.')).then(|| id.to_owned())
            })
            .collect();
        ids.sort();
        ids
    }

    /// How many of the records in `dir` named `prefix<id>` belong to live
    /// (or possibly live) endpoints.
    pub fn live_records(dir: &Path, prefix: &str) -> usize {
        PipeBus::records(dir, prefix)
            .iter()
            .filter(|id| !record_liveness(&dir.join(format!("{prefix}{id}"))).is_dead())
            .count()
    }
}

/// The bus's `flock`, held until dropped (closing the file releases it).
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

/// A name no other endpoint on this machine has: pid, time, a counter.
pub(crate) fn unique_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("{}x{t:x}x{n}", std::process::id())
}

/// Reads at most `max` bytes of the regular file at `path`, without
/// following a symbolic link or blocking on a FIFO put there: what a bus
/// directory holds is not trusted.
pub(crate) fn read_small(path: &Path, max: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.file_type().is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let mut bytes = Vec::new();
    file.take(max as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > max {
        return Err(std::io::Error::other(format!(
            "{} is longer than {max} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

/// A record or lease of a bus directory as text ([`read_small`], up to a
/// page): `None` if it is not a short regular file.
pub(crate) fn read_text(path: &Path) -> Option<String> {
    read_small(path, 4096)
        .ok()
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// An endpoint's record: a file it holds an OFD lock on for its life (see
/// the module docs). Dropping it removes the file.
#[derive(Debug)]
pub(crate) struct Record {
    pub path: PathBuf,
    /// The locked descriptor, closed in a child made by `fork()` (see
    /// `procs::ParkedLock`).
    _lock: crate::segment::procs::ParkedLock,
    /// The fork epoch it was made in: a copy inherited by a child made by
    /// `fork()` leaves the parent's record alone.
    epoch: u64,
}

impl Record {
    /// Creates the record `dir/<prefix><id>` holding `content`, locked.
    ///
    /// It is written and locked under a name [`records`](PipeBus::records)
    /// skips (with a `.`), then renamed into place: a record is never seen
    /// unlocked, which would make it look dead.
    pub fn create(bus: &PipeBus, dir: &Path, prefix: &str, content: &str) -> Result<Record, Error> {
        let mut tries = 0;
        loop {
            match Record::try_create(bus, dir, prefix, content) {
                // Our `.new` file gone before its rename: `gc` took it for
                // a dead maker's, as it does one unlocked a minute old (we
                // stalled between making and locking it). Made again.
                Err((_, e)) if e.kind() == std::io::ErrorKind::NotFound && tries < 3 => tries += 1,
                result => {
                    return result
                        .map_err(|(temp, e)| bus.io("locking an endpoint record", &temp, e))
                }
            }
        }
    }

    fn try_create(
        bus: &PipeBus,
        dir: &Path,
        prefix: &str,
        content: &str,
    ) -> Result<Record, (PathBuf, std::io::Error)> {
        let id = unique_id();
        let path = dir.join(format!("{prefix}{id}"));
        let temp = dir.join(format!("{prefix}{id}.new"));
        let mut file = match std::fs::OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .mode(bus.mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temp)
        {
            Ok(file) => file,
            Err(e) => return Err((temp, e)),
        };
        let made = (|| {
            // Locked first: `gc` takes an unlocked `.new` record a minute
            // old for one whose maker died.
            if !crate::segment::procs::try_lock(file.as_raw_fd(), 0, libc::F_WRLCK)? {
                return Err(std::io::Error::other(
                    "a new record was locked by someone else",
                ));
            }
            file.write_all(content.as_bytes())?;
            let lock = crate::segment::procs::ParkedLock::new(file.into()).ok_or_else(|| {
                std::io::Error::other("no room to keep its lock from forked children")
            })?;
            std::fs::rename(&temp, &path)?;
            Ok(lock)
        })();
        match made {
            Ok(lock) => Ok(Record {
                path,
                _lock: lock,
                epoch: crate::segment::procs::fork_epoch(),
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                Err((temp, e))
            }
        }
    }

    /// The record's id (what follows the prefix).
    pub fn id(&self, prefix: &str) -> &str {
        self.path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(prefix))
            .unwrap_or("")
    }
}

impl Record {
    /// Whether this is the process that made it (not a child forked since).
    pub fn in_own_process(&self) -> bool {
        self.epoch == crate::segment::procs::fork_epoch()
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if self.in_own_process() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether the endpoint whose record is at `path` lives: `Dead` when the
/// record is gone or nobody holds its lock, `Unknown` when that cannot be
/// told.
pub(crate) fn record_liveness(path: &Path) -> Liveness {
    // Read-write: `F_OFD_GETLK` for a write lock wants a writable file.
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Liveness::Dead,
        Err(_) => return Liveness::Unknown,
    };
    match crate::segment::procs::lock_held(file.as_raw_fd(), 0) {
        Ok(true) => Liveness::Alive,
        Ok(false) => Liveness::Dead,
        Err(_) => Liveness::Unknown,
    }
}

/// What carries the frames of the bus in `dir`.
fn carrier_of(dir: &Path) -> Carrier {
    if dir.join(MQ_MARK).exists() {
        Carrier::Mq
    } else {
        Carrier::Fifo
    }
}

/// Pipe and mq buses under `root` (directories with a `.lock`).
pub(crate) fn list(root: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut buses: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join(".lock").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| !name.starts_with(NEW_PREFIX))
        .collect();
    buses.sort();
    buses
}

/// The topic directories of the bus in `dir`: (topic name, directory).
fn topic_dirs(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let topic = name.strip_prefix("t.")?.to_owned();
            e.path().is_dir().then(|| (topic, e.path()))
        })
        .collect()
}

/// Removes pipe or mq bus `bus` under `root` (its directory, whatever is
/// in it, and its message queues). Processes that have its FIFOs or
/// queues open keep them.
pub(crate) fn remove(bus: &str, root: &Path) -> Result<bool, Error> {
    // First: a name such as `../x` would reach outside `root`.
    crate::segment::validate_name("bus", bus)?;
    let named = root.join(bus);
    if !named.join(".lock").is_file() {
        return Ok(false);
    }
    // Named by the bus's directory where it is now (see `mq::probe_name`).
    let probe = mq::probe_name(bus, &named);
    // Out of the way first, so that no endpoint opens (and makes again) a
    // queue of it between our unlinking the queues and the directory.
    let gone = root.join(format!("{NEW_PREFIX}gone-{}", unique_id()));
    let dir = match std::fs::rename(&named, &gone) {
        Ok(()) => gone,
        Err(_) => named,
    };
    if carrier_of(&dir) == Carrier::Mq {
        mq::unlink(&probe);
        // (Renamed, it is the same directory: the same tag.)
        if let Ok(tag) = mq::bus_tag(&dir) {
            for (topic, topic_dir) in topic_dirs(&dir) {
                mq::unlink(&mq::name(bus, &tag, &topic, None));
                for id in PipeBus::records(&topic_dir, "sub-") {
                    mq::unlink(&mq::name(bus, &tag, &topic, Some(&id)));
                }
            }
        }
    }
    std::fs::remove_dir_all(&dir)
        .map(|()| true)
        .map_err(|e| io_error_at(bus, "removing the pipe bus directory", &dir, e))
}

/// The paths of the entries of `dir` that `keep` accepts, given each
/// one's file name.
fn entries_where(
    dir: &Path,
    mut keep: impl FnMut(&str, &std::fs::DirEntry) -> bool,
) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| keep(&entry.file_name().to_string_lossy(), entry))
        .map(|entry| entry.path())
        .collect()
}

/// The files in topic directory `dir` a configuration is written to
/// before it is renamed to `config` (see `PipeBus::write_config`).
fn config_temps(dir: &Path) -> Vec<PathBuf> {
    entries_where(dir, |name, _| name.starts_with("config."))
}

/// The endpoint records in topic directory `dir` not yet renamed into
/// place (`<prefix><id>.new`) whose maker is dead: unlocked, and a minute
/// old (a maker locks one as soon as it has made it).
fn dead_new_records(dir: &Path) -> Vec<PathBuf> {
    entries_where(dir, |name, entry| {
        let record = ["sub-", "prod-", "cons-"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
            && name.ends_with(".new");
        let old = || {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(60))
        };
        record && old() && record_liveness(&entry.path()) == Liveness::Dead
    })
}

/// The subscriber FIFOs in topic directory `dir` whose record is gone.
fn orphan_fifos(dir: &Path) -> Vec<PathBuf> {
    entries_where(dir, |name, _| {
        name.strip_prefix("sub-")
            .and_then(|rest| rest.strip_suffix(".fifo"))
            .is_some_and(|id| !dir.join(format!("sub-{id}")).exists())
    })
}

/// Removes what endpoints known dead left in the pipe buses under `root`
/// (their records and FIFOs). Returns the paths removed.
pub(crate) fn gc(root: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    for bus in list(root) {
        let mq_bus = carrier_of(&root.join(&bus)) == Carrier::Mq;
        let tag = mq::bus_tag(&root.join(&bus)).ok();
        // What only a process holding the bus's lock makes: a topic's
        // configuration being written (`config.<id>`, renamed to `config`)
        // and the mq probe queue. Found while we hold the lock, their maker
        // is dead. (Held by someone: left for the next gc.)
        if let Some(_lock) = PipeBus::existing(&bus, root).and_then(|b| b.try_lock()) {
            for (_, dir) in topic_dirs(&root.join(&bus)) {
                for path in config_temps(&dir) {
                    if std::fs::remove_file(&path).is_ok() {
                        removed.push(path.display().to_string());
                    }
                }
            }
            let probe = mq::probe_name(&bus, &root.join(&bus));
            if mq_bus && mq::unlink(&probe) {
                removed.push(format!("mq {probe}"));
            }
        }
        for (topic, dir) in topic_dirs(&root.join(&bus)) {
            for prefix in ["sub-", "prod-", "cons-"] {
                for id in PipeBus::records(&dir, prefix) {
                    let record = dir.join(format!("{prefix}{id}"));
                    if record_liveness(&record).is_dead() {
                        if let Some(tag) = tag.as_deref().filter(|_| mq_bus && prefix == "sub-") {
                            let name = mq::name(&bus, tag, &topic, Some(&id));
                            if mq::unlink(&name) {
                                removed.push(format!("mq {name}"));
                            }
                        }
                        for path in [record.clone(), dir.join(format!("{prefix}{id}.fifo"))] {
                            if std::fs::remove_file(&path).is_ok() {
                                removed.push(path.display().to_string());
                            }
                        }
                    }
                }
            }
            // Records their maker died before renaming into place: it
            // locks one as soon as it is made (see `Record::create`); a
            // minute old and unlocked, its maker is known dead.
            for path in dead_new_records(&dir) {
                if std::fs::remove_file(&path).is_ok() {
                    removed.push(path.display().to_string());
                }
            }
            // A subscriber's FIFO without its record (made after it, and
            // removed before it by one that leaves): its maker died or
            // failed between the two.
            for path in orphan_fifos(&dir) {
                if std::fs::remove_file(&path).is_ok() {
                    removed.push(path.display().to_string());
                }
            }
        }
    }
    // Buses whose maker died before it renamed them into place: it held
    // the `.lock` in them locked until then; a minute old, with the lock
    // there and free, its maker is known dead.
    if let Ok(entries) = std::fs::read_dir(root) {
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with(NEW_PREFIX) {
                continue;
            }
            let lock = entry.path().join(".lock");
            let dead = lock.exists() && record_liveness(&lock) == Liveness::Dead;
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(60));
            if dead && old && std::fs::remove_dir_all(entry.path()).is_ok() {
                removed.push(entry.path().display().to_string());
            }
        }
    }
    removed
}

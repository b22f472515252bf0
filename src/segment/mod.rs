//! The named shared-memory segment of a bus: creating or joining it without
//! races, validating everything read from it, and typed views into it.
//!
//! The mapping itself comes from the `shared_memory` crate; this module wraps
//! it so that the rest of shmbus never sees a raw pointer: it asks for a view
//! at an offset, and gets an error, not undefined behaviour, if the offset
//! is out of bounds or misaligned.
//!
//! # Creation
//!
//! A creator builds the whole segment under a temporary name
//! (`shmbus-init.<bus>.<pid>.<n>` in /dev/shm), holding a lock on it, and
//! publishes it under the bus's name with `link()`, which fails if the name
//! is taken. So a segment found under a bus name is always initialised; a
//! creator that dies half-way leaves only its temporary file, which never
//! blocks anyone and which [`remove_unfinished`] deletes once its creator's
//! lock is gone (`Bus::gc`). Two creators racing: one link wins, the other
//! removes its temporary file and joins the winner's bus.

pub mod directory;
pub mod layout;
pub mod procs;
pub mod region;
pub(crate) mod views;

use std::fs::File;
use std::ptr::NonNull;
use std::sync::Mutex;

use shared_memory::{Shmem, ShmemConf, ShmemError};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes};

use crate::error::Error;
use crate::process;
use crate::ring::broadcast::BroadcastCtrl;
use crate::ring::directory::EntryState;
use crate::sync::{AtomicU64, Ordering};
use layout::{HeaderCtrl, HeaderFixed, ProcEntry, CTRL_OFFSET, HEADER_SIZE, STATE_READY};
use procs::Registration;

/// How to create a bus; ignored when the bus exists.
#[derive(Debug, Clone)]
pub struct SegmentOptions {
    pub size: u64,
    pub topics: u32,
    pub processes: u32,
    pub mode: u32,
}

/// Checks a bus or topic name: `[A-Za-z0-9._-]{1,64}`.
pub fn validate_name(what: &'static str, name: &str) -> Result<(), Error> {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > layout::MAX_NAME {
        Some("it is longer than 64 bytes")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("it has a character outside A-Z a-z 0-9 . _ -")
    } else if name == "." || name == ".." {
        Some("it is a path component")
    } else {
        None
    };
    match why {
        Some(why) => Err(Error::InvalidName {
            what,
            name: name.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

/// `shm_open` name of a bus.
fn os_id(bus: &str) -> String {
    format!("/shmbus.{bus}")
}

/// Path of a bus under /dev/shm.
pub fn path(bus: &str) -> String {
    format!("/dev/shm/shmbus.{bus}")
}

/// Prefix of the temporary names segments are built under.
const UNFINISHED_PREFIX: &str = "shmbus-init.";

/// The names of the buses in /dev/shm.
pub fn list_buses() -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir("/dev/shm")?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            entry
                .file_name()
                .to_str()?
                .strip_prefix("shmbus.")
                .map(str::to_owned)
        })
        .filter(|name| validate_name("bus", name).is_ok())
        .collect();
    names.sort();
    Ok(names)
}

/// Deletes every unfinished segment (a creator's temporary file) whose
/// creator is known dead: its lock on the file is gone. Returns their file
/// names. A creator still building its segment keeps its lock and is left
/// alone; one that has just created its file and not yet locked it (a few
/// microseconds) loses the file, notices at `link()`, and starts over.
pub fn remove_unfinished() -> std::io::Result<Vec<String>> {
    let mut removed = Vec::new();
    for entry in std::fs::read_dir("/dev/shm")?.filter_map(|entry| entry.ok()) {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !name.starts_with(UNFINISHED_PREFIX) {
            continue;
        }
        let path = format!("/dev/shm/{name}");
        let Ok(file) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
        else {
            continue;
        };
        if matches!(procs::creator_alive(&file), Ok(false)) && std::fs::remove_file(&path).is_ok() {
            removed.push(name);
        }
    }
    removed.sort();
    Ok(removed)
}

/// Removes a bus. Processes that have it open keep their mapping until they
/// drop it; new opens create a fresh bus.
pub fn remove(bus: &str) -> Result<(), Error> {
    validate_name("bus", bus)?;
    refuse_non_segment(bus)?;
    match rustix::shm::unlink(os_id(bus).as_str()) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::NOENT) => Err(Error::NotFound {
            bus: bus.to_owned(),
        }),
        Err(errno) => Err(Error::Io {
            bus: bus.to_owned(),
            action: "removing the segment",
            source: errno.into(),
        }),
    }
}

/// Types that may be viewed in place in the segment: `#[repr(C)]`, made of
/// atomics and padding only, so every bit pattern is a valid value and
/// concurrent access from other processes is through atomics.
///
/// # Safety
///
/// Implementors must be valid for any bytes, contain no pointers, and have
/// no interior that is accessed non-atomically.
pub unsafe trait SharedView {}

// SAFETY: all of these are `#[repr(C)]`/`#[repr(transparent)]` structs of
// atomic integers and byte padding.
unsafe impl SharedView for HeaderCtrl {}
// SAFETY: as above.
unsafe impl SharedView for EntryState {}
// SAFETY: as above.
unsafe impl SharedView for ProcEntry {}
// SAFETY: as above.
unsafe impl SharedView for BroadcastCtrl {}
// SAFETY: an atomic integer.
unsafe impl SharedView for AtomicU64 {}
// SAFETY: atomics and padding.
unsafe impl SharedView for crate::ring::queue::QueueCtrl {}
// SAFETY: atomics and padding.
unsafe impl SharedView for crate::ring::queue::ClaimEntry {}
// SAFETY: atomics and padding.
unsafe impl SharedView for crate::ring::gate::GateCtrl {}
// SAFETY: atomics and padding.
unsafe impl SharedView for crate::ring::gate::SubscriberEntry {}

/// One mapped bus segment.
pub struct Segment {
    bus: String,
    base: NonNull<u8>,
    len: usize,
    /// The same object opened as a file, for fallocate and liveness probes.
    file: File,
    /// Validated copy of the immutable header.
    header: HeaderFixed,
    /// Our entry in the process table, taken on first need (inspecting a
    /// bus writes nothing to it).
    registration: Mutex<Option<Registration>>,
    /// Keeps the mapping alive; unmapped on drop (never unlinked: we give up
    /// ownership right after creating, so a creator's exit does not delete
    /// the bus under everyone else).
    _shmem: Shmem,
}

// SAFETY: `Shmem` is !Send/!Sync only because it holds a raw pointer. The
// mapping is process-wide; every access to it goes through atomics or through
// the single-writer protocols documented at each write, and unmapping happens
// once, on drop, when no reference into it remains.
unsafe impl Send for Segment {}
// SAFETY: as for Send.
unsafe impl Sync for Segment {}

impl Drop for Segment {
    fn drop(&mut self) {
        let registration = self
            .registration
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(registration) = registration {
            self.deregister(registration);
        }
    }
}

/// Attempts at creating a bus whose temporary file vanished under us
/// (removed by `gc` before we locked it) before giving up.
const CREATE_ATTEMPTS: u32 = 8;

impl Segment {
    /// Creates the bus or joins it, whichever the race with other openers
    /// decides (see the module docs).
    pub fn create_or_open(bus: &str, opts: &SegmentOptions) -> Result<Segment, Error> {
        validate_name("bus", bus)?;
        refuse_non_segment(bus)?;
        for _ in 0..CREATE_ATTEMPTS {
            match Segment::open_with(bus) {
                Err(Error::NotFound { .. }) => {}
                other => return other,
            }
            match Segment::create(bus, opts)? {
                Created::Ours(segment) => return Ok(*segment),
                // Someone else's link won: join their bus.
                Created::Taken => {}
                Created::Vanished => continue,
            }
        }
        Err(Error::Io {
            bus: bus.to_owned(),
            action: "creating the segment",
            source: std::io::Error::other(format!(
                "it was removed or replaced under us {CREATE_ATTEMPTS} times in a row"
            )),
        })
    }

    /// Joins the bus if it exists; never creates one.
    pub fn open_existing(bus: &str) -> Result<Segment, Error> {
        validate_name("bus", bus)?;
        refuse_non_segment(bus)?;
        Segment::open_with(bus)
    }

    fn open_with(bus: &str) -> Result<Segment, Error> {
        match ShmemConf::new().os_id(os_id(bus)).open() {
            Ok(shmem) => Segment::join(bus, shmem),
            Err(ShmemError::MapOpenFailed(errno)) if errno == libc::ENOENT as u32 => {
                Err(Error::NotFound {
                    bus: bus.to_owned(),
                })
            }
            // A zero-length file cannot be mapped. This shmbus never links
            // one under a bus name.
            Err(ShmemError::MapOpenFailed(errno)) if errno == libc::EINVAL as u32 => {
                Err(Error::Corrupt {
                    bus: bus.to_owned(),
                    what: "the segment file is empty: it was never initialised (left by an \
                           older shmbus whose creator died, or not a shmbus segment)"
                        .into(),
                })
            }
            Err(err) => Err(shmem_error(bus, "opening the segment", err)),
        }
    }

    /// Builds a segment under a temporary name and links it to the bus name.
    fn create(bus: &str, opts: &SegmentOptions) -> Result<Created, Error> {
        let io = |action, source| Error::Io {
            bus: bus.to_owned(),
            action,
            source,
        };
        let Some(header) = layout::header_for(opts.size, opts.topics, opts.processes) else {
            return Err(Error::InvalidOptions {
                topic: String::new(),
                why: format!(
                    "a bus of {} bytes cannot hold a directory of {} topics and {} processes",
                    opts.size, opts.topics, opts.processes
                ),
            });
        };
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let temp = format!(
            "{UNFINISHED_PREFIX}{bus}.{}.{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let temp_path = format!("/dev/shm/{temp}");
        let mut shmem = ShmemConf::new()
            .os_id(format!("/{temp}"))
            .size(opts.size as usize)
            .create()
            .map_err(|err| shmem_error(bus, "creating the segment", err))?;
        shmem.set_owner(false);
        // From here on, every way out removes the temporary file, unless it
        // became the bus.
        let unfinished = Unfinished(&temp_path);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&temp_path);
        let file = match file {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Created::Vanished),
            Err(err) => return Err(io("opening the new segment file", err)),
        };
        // Tells `remove_unfinished` that we live.
        if !procs::lock_creator(&file).map_err(|e| io("locking the new segment", e))? {
            return Ok(Created::Vanished); // not ours any more
        }
        // Reserve the header, directory and process table before touching
        // them: on a full tmpfs, touching an unreserved page raises SIGBUS.
        reserve(&file, 0, header.arena_offset).map_err(|source| Error::NoSpace {
            bus: bus.to_owned(),
            needed: header.arena_offset,
            source,
        })?;
        if opts.mode != 0o600 {
            let mode = rustix::fs::Mode::from_raw_mode(opts.mode);
            rustix::fs::fchmod(&file, mode)
                .map_err(|err| io("setting the segment's mode", err.into()))?;
        }
        let segment = Segment::from_parts(bus, shmem, file, header);
        // SAFETY: the file is ours alone: it has a name no other process
        // opens (except `remove_unfinished`, which only unlinks it).
        unsafe { segment.write(0, &header) };
        // SYNC POINT: pairs with the Acquire load of `state` in `join`.
        segment.ctrl().state.store(STATE_READY, Ordering::Release);
        process::stall_if_hooked("stall-before-ready");
        match std::fs::hard_link(&temp_path, path(bus)) {
            Ok(()) => {
                drop(unfinished);
                let _ = procs::unlock_creator(&segment.file);
                Ok(Created::Ours(Box::new(segment)))
            }
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(Created::Taken),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Created::Vanished),
            Err(err) => Err(io("publishing the new segment under its name", err)),
        }
    }

    fn join(bus: &str, shmem: Shmem) -> Result<Segment, Error> {
        let corrupt = |what: String| Error::Corrupt {
            bus: bus.to_owned(),
            what,
        };
        let len = shmem.len();
        if len < HEADER_SIZE {
            return Err(corrupt(format!(
                "the file is {len} bytes, smaller than a {HEADER_SIZE}-byte header"
            )));
        }
        let file = open_file(bus).map_err(|source| Error::Io {
            bus: bus.to_owned(),
            action: "opening the segment file",
            source,
        })?;
        let placeholder = HeaderFixed::new_zeroed();
        let mut segment = Segment::from_parts(bus, shmem, file, placeholder);
        // SYNC POINT: pairs with the Release store of READY in `create`.
        let ready = segment.ctrl().state.load(Ordering::Acquire) == STATE_READY;
        // SAFETY: a ready segment's header was written before READY and
        // never changes; a segment that is not ready is refused below
        // whatever these bytes say, and a racing writer of a foreign file
        // can only make the copy garbage, which the checks refuse.
        let header: HeaderFixed = unsafe { segment.read(0) }.map_err(corrupt)?;
        if header.magic != layout::MAGIC {
            return Err(corrupt(format!(
                "bad magic {:02x?} (expected {:02x?})",
                header.magic,
                layout::MAGIC
            )));
        }
        if header.layout_version != layout::LAYOUT_VERSION {
            return Err(Error::VersionMismatch {
                bus: bus.to_owned(),
                found: header.layout_version,
                expected: layout::LAYOUT_VERSION,
            });
        }
        if !ready {
            return Err(corrupt(
                "the segment was never marked ready (a bus is only published under its name \
                 once it is)"
                    .into(),
            ));
        }
        layout::check_header(&header, len as u64).map_err(corrupt)?;
        segment.header = header;
        Ok(segment)
    }

    fn from_parts(bus: &str, shmem: Shmem, file: File, header: HeaderFixed) -> Segment {
        let base = NonNull::new(shmem.as_ptr()).expect("a successful mmap is never null");
        Segment {
            bus: bus.to_owned(),
            base,
            len: shmem.len(),
            file,
            header,
            registration: Mutex::new(None),
            _shmem: shmem,
        }
    }

    pub fn bus(&self) -> &str {
        &self.bus
    }

    pub fn size(&self) -> usize {
        self.len
    }

    pub fn header(&self) -> &HeaderFixed {
        &self.header
    }

    pub fn ctrl(&self) -> &HeaderCtrl {
        self.view(CTRL_OFFSET as u64)
            .expect("a mapping of at least HEADER_SIZE bytes holds the header")
    }

    /// Checks that `count` values of `T` at `offset` lie inside the mapping
    /// and are aligned; returns the byte offset as usize.
    fn check_range<T>(&self, offset: u64, count: usize) -> Result<usize, String> {
        let bytes = core::mem::size_of::<T>()
            .checked_mul(count)
            .ok_or_else(|| format!("{count} items at offset {offset} overflow"))?;
        let start =
            usize::try_from(offset).map_err(|_| format!("offset {offset} is out of range"))?;
        match start.checked_add(bytes) {
            Some(end) if end <= self.len => {}
            _ => {
                return Err(format!(
                    "{bytes} bytes at offset {offset} run past the end of the {}-byte segment",
                    self.len
                ))
            }
        }
        if start % core::mem::align_of::<T>() != 0 {
            return Err(format!(
                "offset {offset} is not aligned to {}",
                core::mem::align_of::<T>()
            ));
        }
        Ok(start)
    }

    /// A shared view of a `T` at `offset`, or why there cannot be one.
    pub fn view<T: SharedView>(&self, offset: u64) -> Result<&T, String> {
        let start = self.check_range::<T>(offset, 1)?;
        // SAFETY: `check_range` proved the value lies inside the mapping,
        // which lives as long as `self`, and is aligned; `T: SharedView` is
        // valid for any bytes and only accessed atomically.
        Ok(unsafe { &*self.base.as_ptr().add(start).cast::<T>() })
    }

    /// A shared view of `count` consecutive `T`s at `offset`.
    pub fn view_slice<T: SharedView>(&self, offset: u64, count: usize) -> Result<&[T], String> {
        let start = self.check_range::<T>(offset, count)?;
        // SAFETY: as in `view`, for `count` values.
        Ok(
            unsafe {
                core::slice::from_raw_parts(self.base.as_ptr().add(start).cast::<T>(), count)
            },
        )
    }

    /// Copies a `T` out of the segment at `offset`.
    ///
    /// # Safety
    ///
    /// No other process may write the range while it is copied: it must be
    /// written once, before a Release store that the caller's Acquire load
    /// observed (a header before READY, a topic config before its entry's
    /// READY). The range itself is bounds-checked here.
    pub(crate) unsafe fn read<T: FromBytes>(&self, offset: u64) -> Result<T, String> {
        let start = self.check_range::<u8>(offset, core::mem::size_of::<T>())?;
        // SAFETY: the range is inside the mapping (checked above); by the
        // caller's contract nothing writes it while we copy.
        let bytes = unsafe {
            core::slice::from_raw_parts(self.base.as_ptr().add(start), core::mem::size_of::<T>())
        };
        T::read_from_bytes(bytes).map_err(|_| format!("cannot read at offset {offset}"))
    }

    /// Copies `value` into the segment at `offset`.
    ///
    /// # Safety
    ///
    /// The caller must hold exclusive write access to the range by protocol
    /// (a creator before READY, the claimer of a directory entry), so that no
    /// other process reads or writes it concurrently. Panics if the range is
    /// out of bounds (callers pass offsets they computed, not read).
    pub(crate) unsafe fn write<T: IntoBytes + Immutable>(&self, offset: u64, value: &T) {
        let start = self
            .check_range::<u8>(offset, core::mem::size_of::<T>())
            .expect("write inside the segment");
        let bytes = value.as_bytes();
        // SAFETY: the range is inside the mapping; the caller guarantees no
        // one else accesses it now.
        unsafe {
            core::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.base.as_ptr().add(start),
                bytes.len(),
            )
        };
    }

    /// Reserves `len` bytes at `offset` in /dev/shm, so touching them later
    /// cannot SIGBUS.
    pub fn reserve(&self, offset: u64, len: u64) -> std::io::Result<()> {
        reserve(&self.file, offset, len)
    }
}

/// Fails at once if the bus's name in /dev/shm is taken by something that
/// cannot be a segment (a directory, a FIFO, a symbolic link, ...), rather
/// than waiting for it to become a bus.
fn refuse_non_segment(bus: &str) -> Result<(), Error> {
    let path = path(bus);
    let kind = match std::fs::symlink_metadata(&path) {
        Ok(meta) => meta.file_type(),
        Err(_) => return Ok(()), // absent (or unreadable: opening will say)
    };
    use std::os::unix::fs::FileTypeExt;
    let kind = if kind.is_file() {
        return Ok(());
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a device"
    };
    Err(Error::NotASegment {
        bus: bus.to_owned(),
        path,
        kind,
    })
}

/// Unlinks a temporary segment file on drop (creation failed or lost).
struct Unfinished<'a>(&'a str);

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

/// How a creation attempt ended.
enum Created {
    /// Our segment is the bus.
    Ours(Box<Segment>),
    /// Another process published the bus first.
    Taken,
    /// Our temporary file was removed under us: try again.
    Vanished,
}

fn open_file(bus: &str) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path(bus))
}

fn reserve(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    rustix::fs::fallocate(file, rustix::fs::FallocateFlags::KEEP_SIZE, offset, len)
        .map_err(Into::into)
}

fn shmem_error(bus: &str, action: &'static str, err: ShmemError) -> Error {
    let source = match err {
        ShmemError::MapCreateFailed(errno)
        | ShmemError::MapOpenFailed(errno)
        | ShmemError::UnknownOsError(errno) => std::io::Error::from_raw_os_error(errno as i32),
        other => std::io::Error::other(other.to_string()),
    };
    Error::Io {
        bus: bus.to_owned(),
        action,
        source,
    }
}

//! The named shared-memory segment of a bus: creating or joining it without
//! races, validating everything read from it, and typed views into it.
//!
//! The segment maps the very file descriptor it opened (with `mmap`), and
//! every later use of the file (reserving space, liveness locks and probes)
//! goes through that descriptor or a new open of the *same* file, checked by
//! device and inode. Reopening by name would race with `Bus::remove` and a
//! re-created bus of the same name, and a liveness lock taken on another
//! file than the one mapped makes a live process look dead. (This is why
//! the `shared_memory` crate, which maps by name and keeps its descriptor to
//! itself, is not used.) The rest of shmbus never sees a raw pointer: it
//! asks for a view at an offset, and gets an error, not undefined behaviour,
//! if the offset is out of bounds or misaligned.
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
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::ptr::NonNull;

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes};

use crate::error::Error;
use crate::process;
use crate::ring::broadcast::BroadcastCtrl;
use crate::ring::directory::EntryState;
use crate::sync::{AtomicPtr, AtomicU64, Ordering};
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
            pipe_dir: None,
        }),
        Err(errno) => Err(Error::Io {
            bus: bus.to_owned(),
            path: None,
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
// SAFETY: as above.
unsafe impl SharedView for crate::ring::varlen::VarlenCtrl {}
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
    /// bus writes nothing to it); null until then. See `procs::me`.
    registration: AtomicPtr<Registration>,
    /// A segment of this process alone ([`Segment::private`]).
    private: bool,
}

// SAFETY: a `Segment` is !Send/!Sync only because it holds a raw pointer.
// The mapping is process-wide; every access to it goes through atomics or
// through the single-writer protocols documented at each write, and
// unmapping happens once, on drop, when no reference into it remains.
unsafe impl Send for Segment {}
// SAFETY: as for Send.
unsafe impl Sync for Segment {}

impl Drop for Segment {
    fn drop(&mut self) {
        let registration = self.registration.swap(core::ptr::null_mut(), Ordering::AcqRel);
        if !registration.is_null() {
            // SAFETY: published by `me` from `Box::into_raw`; we have the
            // segment to ourselves (`&mut self`), so no one reads it now.
            let registration = unsafe { Box::from_raw(registration) };
            self.deregister(*registration);
        }
        // SAFETY: `base..base + len` is the mapping `map` made; no reference
        // into it outlives the segment (views hold an `Arc<Segment>`), and
        // this is its only unmapping. An error leaves it mapped, harmlessly.
        let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// The header of a new bus of `opts`, or why it cannot have one.
fn header_of(bus: &str, opts: &SegmentOptions) -> Result<HeaderFixed, Error> {
    layout::header_for(opts.size, opts.topics, opts.processes).ok_or_else(|| {
        Error::InvalidBusOptions {
            bus: bus.to_owned(),
            why: format!(
                "a bus of {} bytes cannot hold a directory of {} topics and {} processes",
                opts.size, opts.topics, opts.processes
            ),
        }
    })
}

/// Attempts at creating a bus whose temporary file vanished under us
/// (removed by `gc` before we locked it) before giving up.
const CREATE_ATTEMPTS: u32 = 8;

impl Segment {
    /// Creates the bus or joins it, whichever the race with other openers
    /// decides (see the module docs).
    pub fn create_or_open(bus: &str, opts: &SegmentOptions) -> Result<Segment, Error> {
        validate_name("bus", bus)?;
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
            path: None,
            action: "creating the segment",
            source: std::io::Error::other(format!(
                "it was removed or replaced under us {CREATE_ATTEMPTS} times in a row"
            )),
        })
    }

    /// A segment of this process alone (a `memfd`, never in /dev/shm): the
    /// local half of a bus on another transport, whose topics' rings hold
    /// loans and whose directory checks topic options as a shared one does.
    pub fn private(bus: &str, opts: &SegmentOptions) -> Result<Segment, Error> {
        let io = |action, source| Error::Io {
            bus: bus.to_owned(),
            path: None,
            action,
            source,
        };
        let header = header_of(bus, opts)?;
        let fd = rustix::fs::memfd_create("shmbus-local", rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(|e| io("creating a private segment", e.into()))?;
        let file = File::from(fd);
        file.set_len(opts.size)
            .map_err(|e| io("sizing a private segment", e))?;
        reserve(&file, 0, header.arena_offset).map_err(|source| Error::NoSpace {
            bus: bus.to_owned(),
            needed: header.arena_offset,
            source,
        })?;
        let mut segment =
            Segment::map(bus, file, header).map_err(|e| io("mapping a private segment", e))?;
        segment.private = true;
        // SAFETY: the memfd is ours alone: no other process can open it.
        unsafe { segment.write(0, &header) };
        segment.ctrl().state.store(STATE_READY, Ordering::Release);
        Ok(segment)
    }

    /// Joins the bus if it exists; never creates one.
    pub fn open_existing(bus: &str) -> Result<Segment, Error> {
        validate_name("bus", bus)?;
        Segment::open_with(bus)
    }

    fn open_with(bus: &str) -> Result<Segment, Error> {
        let file = match open_segment_file(&path(bus), false) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound {
                    bus: bus.to_owned(),
                    pipe_dir: None,
                })
            }
            // A symbolic link (O_NOFOLLOW), a directory, a socket: not a
            // segment, and the error says so at once (a FIFO opens, and
            // `join` refuses it by its type).
            Err(err)
                if matches!(
                    err.raw_os_error(),
                    Some(libc::ELOOP | libc::EISDIR | libc::ENXIO)
                ) =>
            {
                return Err(refuse_non_segment(bus).err().unwrap_or(Error::Io {
                    bus: bus.to_owned(),
                    path: None,
                    action: "opening the segment",
                    source: err,
                }))
            }
            Err(source) => {
                return Err(Error::Io {
                    bus: bus.to_owned(),
                    path: None,
                    action: "opening the segment",
                    source,
                })
            }
        };
        Segment::join(bus, file)
    }

    /// Builds a segment under a temporary name and links it to the bus name.
    fn create(bus: &str, opts: &SegmentOptions) -> Result<Created, Error> {
        let io = |action, source| Error::Io {
            bus: bus.to_owned(),
            path: None,
            action,
            source,
        };
        let header = header_of(bus, opts)?;
        let (file, temp_path) =
            create_unfinished(bus).map_err(|e| io("creating the segment", e))?;
        // From here on, every way out removes the temporary file, unless it
        // became the bus.
        let unfinished = Unfinished(&temp_path);
        // Tells `remove_unfinished` that we live.
        if !procs::lock_creator(&file).map_err(|e| io("locking the new segment", e))? {
            return Ok(Created::Vanished); // not ours any more
        }
        file.set_len(opts.size)
            .map_err(|e| io("sizing the new segment", e))?;
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
        let segment =
            Segment::map(bus, file, header).map_err(|e| io("mapping the segment", e))?;
        // SAFETY: the file is ours alone: it has a name no other process
        // opens (except `remove_unfinished`, which only unlinks it).
        unsafe { segment.write(0, &header) };
        // SYNC POINT: pairs with the Acquire load of `state` in `join`.
        segment.ctrl().state.store(STATE_READY, Ordering::Release);
        process::stall_if_hooked("stall-before-ready");
        // Still the file we built? `gc` may have removed it (and another
        // creator may have made one of the same name) before we locked it.
        if !same_file(&segment.file, &temp_path) {
            return Ok(Created::Vanished);
        }
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

    fn join(bus: &str, file: File) -> Result<Segment, Error> {
        let corrupt = |what: String| Error::Corrupt {
            bus: bus.to_owned(),
            what,
        };
        let io = |source| Error::Io {
            bus: bus.to_owned(),
            path: None,
            action: "opening the segment",
            source,
        };
        let meta = file.metadata().map_err(io)?;
        if !meta.file_type().is_file() {
            return Err(Error::NotASegment {
                bus: bus.to_owned(),
                path: path(bus),
                kind: file_kind(&meta.file_type()),
            });
        }
        let len = meta.len();
        if len == 0 {
            // This shmbus never links an empty file under a bus name.
            return Err(corrupt(
                "the segment file is empty: it was never initialised (left by an older \
                 shmbus whose creator died, or not a shmbus segment)"
                    .into(),
            ));
        }
        if len < HEADER_SIZE as u64 {
            return Err(corrupt(format!(
                "the file is {len} bytes, smaller than a {HEADER_SIZE}-byte header"
            )));
        }
        let placeholder = HeaderFixed::new_zeroed();
        let mut segment = Segment::map(bus, file, placeholder).map_err(io)?;
        // SYNC POINT: pairs with the Release store of READY in `create`.
        let ready = segment.ctrl().state.load(Ordering::Acquire) == STATE_READY;
        // SAFETY: a ready segment's header was written before READY and
        // never changes. A segment that is not ready is refused below
        // whatever these bytes say; `read` copies them with volatile loads,
        // so a racing writer of a foreign file yields garbage that the
        // checks refuse and that the compiler does not assume stable.
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
        layout::check_header(&header, segment.len as u64).map_err(corrupt)?;
        segment.header = header;
        Ok(segment)
    }

    /// Maps `file` (its whole length) shared, read-write.
    fn map(bus: &str, file: File, header: HeaderFixed) -> std::io::Result<Segment> {
        let len = usize::try_from(file.metadata()?.len())
            .map_err(|_| std::io::Error::other("the segment is larger than the address space"))?;
        // SAFETY: a fresh shared mapping of a file we hold open, at an
        // address the kernel picks: it aliases nothing of ours. It stays
        // valid until `Drop` unmaps it.
        let base = unsafe {
            rustix::mm::mmap(
                core::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                &file,
                0,
            )
        }?;
        let base = NonNull::new(base.cast::<u8>()).expect("a successful mmap is never null");
        Ok(Segment {
            bus: bus.to_owned(),
            base,
            len,
            file,
            header,
            registration: AtomicPtr::new(core::ptr::null_mut()),
            private: false,
        })
    }

    /// A new open file description of this segment's own file (not
    /// whatever its name points to now), for a registration lock.
    pub(crate) fn reopen(&self) -> std::io::Result<File> {
        if let Ok(file) = open_segment_file(&path(&self.bus), false) {
            if !self.private && same_identity(&file, &self.file) {
                return Ok(file);
            }
        }
        // The name now points elsewhere (the bus was removed, or removed
        // and created again): reach our file through our own descriptor.
        use std::os::fd::AsRawFd;
        let ours = format!("/proc/self/fd/{}", self.file.as_raw_fd());
        let file = open_segment_file(&ours, true)?;
        if same_identity(&file, &self.file) {
            Ok(file)
        } else {
            Err(std::io::Error::other(
                "the bus was removed since this process opened it; open it again",
            ))
        }
    }

    /// Whether this bus was removed since it was opened: its name no
    /// longer leads to this segment (unlinked, or unlinked and created
    /// anew), so no process can open it any more. `false` when that cannot
    /// be told (the name is there but cannot be looked at). Two system
    /// calls: pace it.
    pub fn is_removed(&self) -> bool {
        if self.private {
            return false;
        }
        match (std::fs::symlink_metadata(path(&self.bus)), self.file.metadata()) {
            (Err(err), _) => err.kind() == std::io::ErrorKind::NotFound,
            (Ok(named), Ok(ours)) => named.dev() != ours.dev() || named.ino() != ours.ino(),
            (Ok(_), Err(_)) => false,
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
    pub(crate) unsafe fn read<T: FromBytes + IntoBytes>(&self, offset: u64) -> Result<T, String> {
        let start = self.check_range::<u8>(offset, core::mem::size_of::<T>())?;
        let mut value = T::new_zeroed();
        let from = self.base.as_ptr().wrapping_add(start);
        for (i, byte) in value.as_mut_bytes().iter_mut().enumerate() {
            // SAFETY: the range is inside the mapping (checked above); by the
            // caller's contract nothing writes it while we copy. Volatile, so
            // that even a foreign writer breaking that contract yields bytes
            // the caller checks, not assumptions the compiler made.
            *byte = unsafe { core::ptr::read_volatile(from.add(i)) };
        }
        Ok(value)
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
    if kind.is_file() {
        return Ok(());
    }
    Err(Error::NotASegment {
        bus: bus.to_owned(),
        path,
        kind: file_kind(&kind),
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

/// Opens a segment file read-write, never following a symbolic link (a
/// bus's name must be the segment itself), unless `follow` (for our own
/// `/proc/self/fd` link).
fn open_segment_file(path: &str, follow: bool) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true);
    if !follow {
        options.custom_flags(libc::O_NOFOLLOW);
    }
    options.open(path)
}

/// Creates an unfinished segment file of a unique name: the pid alone is
/// not unique (processes in other PID namespaces, pid reuse), so the name
/// ends in random bits too.
fn create_unfinished(bus: &str) -> std::io::Result<(File, String)> {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    for _ in 0..16 {
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let temp_path = format!(
            "/dev/shm/{UNFINISHED_PREFIX}{bus}.{}.{}.{random:016x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temp_path)
        {
            Ok(file) => return Ok((file, temp_path)),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(err),
        }
    }
    Err(std::io::Error::other(
        "16 random names for a new segment were all taken",
    ))
}

/// Whether two open files are the same file (device and inode).
fn same_identity(a: &File, b: &File) -> bool {
    match (a.metadata(), b.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Whether `path` names the file `file` is open on.
fn same_file(file: &File, path: &str) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn file_kind(kind: &std::fs::FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a device"
    }
}

fn reserve(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    rustix::fs::fallocate(file, rustix::fs::FallocateFlags::KEEP_SIZE, offset, len)
        .map_err(Into::into)
}

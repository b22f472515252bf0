//! The named shared-memory segment of a bus: creating or joining it without
//! races, validating everything read from it, and typed views into it.
//!
//! The mapping itself comes from the `shared_memory` crate; this module wraps
//! it so that the rest of shmbus never sees a raw pointer: it asks for a view
//! at an offset, and gets an error, not undefined behaviour, if the offset
//! is out of bounds or misaligned.

pub mod directory;
pub mod layout;
pub mod region;

use std::fs::File;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use shared_memory::{Shmem, ShmemConf, ShmemError};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes};

use crate::error::Error;
use crate::process;
use crate::ring::broadcast::BroadcastCtrl;
use crate::ring::directory::EntryState;
use crate::ring::Owner;
use crate::sync::{AtomicU64, Ordering};
use layout::{HeaderCtrl, HeaderFixed, CTRL_OFFSET, HEADER_SIZE, STATE_INIT, STATE_READY};

/// How to create a bus; ignored when the bus exists.
#[derive(Debug, Clone)]
pub struct SegmentOptions {
    pub size: u64,
    pub topics: u32,
    pub mode: u32,
    pub open_timeout: Duration,
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

/// Removes a bus. Processes that have it open keep their mapping until they
/// drop it; new opens create a fresh bus.
pub fn remove(bus: &str) -> Result<(), Error> {
    validate_name("bus", bus)?;
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
    /// The same object opened as a file, for fallocate.
    file: File,
    /// Validated copy of the immutable header.
    header: HeaderFixed,
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

impl Segment {
    /// Creates the bus or joins it, whichever the race with other openers
    /// decides: the `O_EXCL` creator initialises and publishes READY; all
    /// others wait for READY with a bound.
    pub fn create_or_open(bus: &str, opts: &SegmentOptions) -> Result<Segment, Error> {
        Segment::open_with(bus, opts, true)
    }

    /// Joins the bus if it exists; never creates one.
    pub fn open_existing(bus: &str, opts: &SegmentOptions) -> Result<Segment, Error> {
        Segment::open_with(bus, opts, false)
    }

    fn open_with(bus: &str, opts: &SegmentOptions, create: bool) -> Result<Segment, Error> {
        validate_name("bus", bus)?;
        refuse_non_segment(bus)?;
        let deadline = Instant::now() + opts.open_timeout;
        loop {
            if create {
                match ShmemConf::new()
                    .os_id(os_id(bus))
                    .size(opts.size as usize)
                    .create()
                {
                    Ok(shmem) => return Segment::initialise(bus, shmem, opts),
                    Err(ShmemError::MappingIdExists) => {}
                    Err(err) => return Err(shmem_error(bus, "creating the segment", err)),
                }
            }
            match ShmemConf::new().os_id(os_id(bus)).open() {
                Ok(shmem) => return Segment::join(bus, shmem, deadline, opts.open_timeout),
                // Removed between our create and open: create again.
                Err(ShmemError::MapOpenFailed(errno)) if errno == libc::ENOENT as u32 => {
                    if !create {
                        return Err(Error::NotFound {
                            bus: bus.to_owned(),
                        });
                    }
                }
                // A zero-length file cannot be mapped: its creator has not
                // sized it yet, or died before it could.
                Err(ShmemError::MapOpenFailed(errno)) if errno == libc::EINVAL as u32 => {
                    if Instant::now() >= deadline {
                        return Err(Error::Stale {
                            bus: bus.to_owned(),
                            why: "the segment is empty: its creator died before sizing it".into(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(err) => return Err(shmem_error(bus, "opening the segment", err)),
            }
        }
    }

    fn initialise(bus: &str, mut shmem: Shmem, opts: &SegmentOptions) -> Result<Segment, Error> {
        shmem.set_owner(false);
        let io = |action, source| Error::Io {
            bus: bus.to_owned(),
            action,
            source,
        };
        let Some(header) = layout::header_for(opts.size, opts.topics) else {
            let _ = remove(bus);
            return Err(Error::InvalidOptions {
                topic: String::new(),
                why: format!(
                    "a bus of {} bytes cannot hold a directory of {} topics",
                    opts.size, opts.topics
                ),
            });
        };
        let file = match open_file(bus) {
            Ok(file) => file,
            Err(err) => {
                let _ = remove(bus);
                return Err(io("opening the segment file", err));
            }
        };
        // Reserve the header and directory pages before touching them: on a
        // full tmpfs, touching an unreserved page raises SIGBUS.
        if let Err(err) = reserve(&file, 0, header.arena_offset) {
            let _ = remove(bus);
            return Err(Error::NoSpace {
                bus: bus.to_owned(),
                needed: header.arena_offset,
                source: err,
            });
        }
        if opts.mode != 0o600 {
            let mode = rustix::fs::Mode::from_raw_mode(opts.mode);
            if let Err(err) = rustix::fs::fchmod(&file, mode) {
                let _ = remove(bus);
                return Err(io("setting the segment's mode", err.into()));
            }
        }
        let segment = Segment::from_parts(bus, shmem, file, header);
        let ctrl = segment.ctrl();
        ctrl.creator
            .store(process::current().token(), Ordering::Relaxed);
        ctrl.state.store(STATE_INIT, Ordering::Relaxed);
        // SAFETY: we created the file with O_EXCL and have not published
        // READY, so no other process reads or writes the header yet.
        unsafe { segment.write(0, &header) };
        process::stall_if_hooked("stall-before-ready");
        // SYNC POINT: pairs with the Acquire load of `state` in `join`:
        // whoever sees READY sees the header written above.
        ctrl.state.store(STATE_READY, Ordering::Release);
        Ok(segment)
    }

    fn join(bus: &str, shmem: Shmem, deadline: Instant, bound: Duration) -> Result<Segment, Error> {
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
        segment.wait_ready(deadline, bound)?;
        let header: HeaderFixed = segment.read(0).map_err(corrupt)?;
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
        layout::check_header(&header, len as u64).map_err(corrupt)?;
        segment.header = header;
        Ok(segment)
    }

    fn wait_ready(&self, deadline: Instant, bound: Duration) -> Result<(), Error> {
        let ctrl = self.ctrl();
        loop {
            // SYNC POINT: pairs with the Release store of READY in `initialise`.
            if ctrl.state.load(Ordering::Acquire) == STATE_READY {
                return Ok(());
            }
            let creator = Owner::from_token(ctrl.creator.load(Ordering::Relaxed));
            if let Some(creator) = creator {
                if !process::is_alive(creator) {
                    return Err(Error::Stale {
                        bus: self.bus.clone(),
                        why: format!(
                            "its creator ({creator:?}) died before finishing initialisation"
                        ),
                    });
                }
            }
            if Instant::now() >= deadline {
                return Err(match creator {
                    Some(creator) => Error::NotReady {
                        bus: self.bus.clone(),
                        creator: format!("{creator:?}"),
                        waited: bound,
                    },
                    None => Error::Stale {
                        bus: self.bus.clone(),
                        why: format!(
                            "it was never initialised (no creator recorded after {bound:?}): \
                             its creator died at once, or it is not a shmbus segment"
                        ),
                    },
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn from_parts(bus: &str, shmem: Shmem, file: File, header: HeaderFixed) -> Segment {
        let base = NonNull::new(shmem.as_ptr()).expect("a successful mmap is never null");
        Segment {
            bus: bus.to_owned(),
            base,
            len: shmem.len(),
            file,
            header,
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
    pub fn read<T: FromBytes>(&self, offset: u64) -> Result<T, String> {
        let start = self.check_range::<u8>(offset, core::mem::size_of::<T>())?;
        // SAFETY: the range is inside the mapping (checked above). The bytes
        // are written once, before the Release store that our caller's
        // Acquire load observed, so nothing writes them while we copy.
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
    pub unsafe fn write<T: IntoBytes + Immutable>(&self, offset: u64, value: &T) {
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

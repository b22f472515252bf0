//! The process table: liveness that never guesses.
//!
//! A process that is about to own shared state in a bus (a lease, a table
//! entry, a claim) registers once per mapping of the bus: it takes an
//! *open-file-description* lock (`F_OFD_SETLK`) on byte
//! `PROC_LOCK_BASE + i` of the segment file, for a free entry `i` of the
//! process table, and only then marks the entry live with a new generation.
//! The kernel releases that lock when the last descriptor of the open file
//! description closes, which happens when the process dies however it dies
//! (`kill -9` included). Its [`Owner`] token is `(i, generation)`.
//!
//! Another process asks whether a token's holder lives by reading the
//! entry's generation and testing the lock with `F_OFD_GETLK`:
//!
//! - generation moved on, or entry free: the holder is **dead** (an entry is
//!   only reused by a process that holds its lock, which needs the previous
//!   holder gone);
//! - lock held: **alive**;
//! - lock free and generation unchanged: **dead**;
//! - the check failed: **unknown**, which every caller treats as alive.
//!
//! Why a lock rather than `/proc/<pid>`: a lock lives on the file, not in a
//! PID namespace, so two containers that share `/dev/shm` see each other's
//! processes correctly; pids are reused, locks are not; and reading `/proc`
//! can fail (EMFILE, `hidepid=`) in ways that look like death. This is the
//! mechanism iceoryx2 uses to monitor its nodes.
//!
//! # fork
//!
//! A child made by `fork()` inherits its parent's descriptors, and with them
//! the parent's registration locks: the parent would look alive for as long
//! as the child runs. So an `atfork` handler closes, in the child, every
//! registration descriptor (the parent's open file description, and lock,
//! stay with the parent), and bumps a fork epoch: a bus handle used in the
//! child registers afresh, as a process of its own, and endpoints made
//! before the fork refuse to act in the child (their shared entries belong
//! to the parent).

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::Once;

use super::layout::{ProcEntry, PROC_FREE, PROC_LIVE, PROC_LOCK_BASE};
use super::Segment;
use crate::error::Error;
use crate::ring::{Liveness, Owner};
use crate::sync::{AtomicBool, AtomicI32, AtomicU64, Ordering};

/// Bumped in every child right after `fork()`.
static FORK_EPOCH: AtomicU64 = AtomicU64::new(0);
/// Most registrations (bus mappings with endpoints) one process holds at
/// once.
const MAX_REGISTRATIONS: usize = 1024;
/// The descriptors that hold registration locks, for the atfork handler to
/// close in a child. -1: free slot.
static LOCK_FDS: [AtomicI32; MAX_REGISTRATIONS] = [const { AtomicI32::new(-1) }; MAX_REGISTRATIONS];
static ATFORK: Once = Once::new();
/// Whether `pthread_atfork` accepted our handler.
static ATFORK_INSTALLED: AtomicBool = AtomicBool::new(false);

/// Runs in the child of a `fork()`, where only async-signal-safe calls are
/// allowed: atomics and `close`.
extern "C" fn after_fork_in_child() {
    FORK_EPOCH.fetch_add(1, Ordering::Relaxed);
    for slot in &LOCK_FDS {
        let fd = slot.swap(-1, Ordering::Relaxed);
        if fd >= 0 {
            // SAFETY: the descriptor was registered by `Registration::new`,
            // which handed its ownership to this table; swapping in -1 makes
            // this the only close of it in this process.
            unsafe { libc::close(fd) };
        }
    }
}

/// The fork epoch this process is in: endpoints remember it and refuse to
/// act under another one (they were made by a parent before `fork()`).
#[inline]
pub(crate) fn fork_epoch() -> u64 {
    FORK_EPOCH.load(Ordering::Relaxed)
}

/// This mapping's entry in the process table, held by a lock on a
/// descriptor of its own.
pub(crate) struct Registration {
    owner: Owner,
    /// Slot of our descriptor in [`LOCK_FDS`].
    slot: usize,
    epoch: u64,
}

impl Registration {
    pub(crate) fn owner(&self) -> Owner {
        self.owner
    }

    /// Whether this registration was made in this process (not inherited
    /// from a parent through `fork()`).
    pub(crate) fn is_current(&self) -> bool {
        self.epoch == fork_epoch()
    }
}

/// Puts `fd` in a free slot of [`LOCK_FDS`].
fn park_fd(fd: OwnedFd) -> Option<usize> {
    let raw = fd.into_raw_fd();
    for (slot, cell) in LOCK_FDS.iter().enumerate() {
        if cell
            .compare_exchange(-1, raw, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            return Some(slot);
        }
    }
    // SAFETY: `raw` came from `into_raw_fd` above and was parked nowhere.
    drop(unsafe { OwnedFd::from_raw_fd(raw) });
    None
}

/// A parked descriptor that is closed (and its slot freed) on drop, unless
/// kept.
struct Parked(usize);

impl Parked {
    fn keep(self) -> usize {
        let slot = self.0;
        core::mem::forget(self);
        slot
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        unpark_and_close(self.0);
    }
}

/// Takes the descriptor out of slot `slot` and closes it (releasing its
/// locks).
fn unpark_and_close(slot: usize) {
    let fd = LOCK_FDS[slot].swap(-1, Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: the slot owned this descriptor (see `park_fd`); the swap
        // made us its only owner.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}

/// A descriptor whose locks are its process's alone: parked where the
/// atfork handler closes it in a child made by `fork()` (so the child does
/// not hold the parent's lock once the parent dies), closed when dropped.
/// For the records and leases of buses on pipes.
#[derive(Debug)]
pub(crate) struct ParkedLock(usize);

impl ParkedLock {
    /// Parks `fd`; `None` when the atfork handler could not be installed or
    /// every slot is taken.
    pub(crate) fn new(fd: OwnedFd) -> Option<ParkedLock> {
        install_atfork();
        if !ATFORK_INSTALLED.load(Ordering::Relaxed) {
            return None;
        }
        park_fd(fd).map(ParkedLock)
    }

    /// The descriptor (-1 in a child made by `fork()` since, where it was
    /// closed).
    pub(crate) fn raw(&self) -> RawFd {
        LOCK_FDS[self.0].load(Ordering::Relaxed)
    }
}

impl Drop for ParkedLock {
    fn drop(&mut self) {
        // In a forked child the slot was emptied (and perhaps reused by a
        // lock of the child's own): leave it.
        unpark_and_close_if(self.0, self.raw());
    }
}

/// Closes the descriptor of slot `slot` if it is still `fd`.
fn unpark_and_close_if(slot: usize, fd: RawFd) {
    if fd >= 0
        && LOCK_FDS[slot]
            .compare_exchange(fd, -1, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        // SAFETY: the slot owned this descriptor (see `park_fd`); the
        // exchange made us its only owner.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}

/// Installs the atfork handler, once per process.
fn install_atfork() {
    ATFORK.call_once(|| {
        // SAFETY: `after_fork_in_child` only touches atomics and calls
        // `close`, both async-signal-safe, as a child handler must.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
        ATFORK_INSTALLED.store(rc == 0, Ordering::Relaxed);
    });
}

/// Result of a non-blocking lock attempt.
pub(crate) fn try_lock(fd: RawFd, offset: u64, kind: libc::c_int) -> std::io::Result<bool> {
    let mut lock = new_flock(offset, kind);
    loop {
        // SAFETY: `lock` is a valid, initialised `flock` that lives across
        // the call; F_OFD_SETLK only reads it.
        let rc = unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &mut lock) };
        if rc == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EACCES) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(err),
        }
    }
}

/// Whether another open file description holds a lock on `offset`.
pub(crate) fn lock_held(fd: RawFd, offset: u64) -> std::io::Result<bool> {
    let mut lock = new_flock(offset, libc::F_WRLCK);
    loop {
        // SAFETY: as in `try_lock`; F_OFD_GETLK writes the result back into
        // `lock`, which we own.
        let rc = unsafe { libc::fcntl(fd, libc::F_OFD_GETLK, &mut lock) };
        if rc == 0 {
            return Ok(lock.l_type != libc::F_UNLCK as libc::c_short);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

fn new_flock(offset: u64, kind: libc::c_int) -> libc::flock {
    // SAFETY: `flock` is plain old data; all-zero is a valid value, and the
    // fields that matter are set below (l_pid must be 0 for OFD locks).
    let mut lock: libc::flock = unsafe { core::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = offset as libc::off_t;
    lock.l_len = 1;
    lock
}

/// Takes, without waiting, the lock a creator holds on its unfinished
/// segment. False if another open file description holds it.
pub(crate) fn lock_creator(file: &File) -> std::io::Result<bool> {
    try_lock(file.as_raw_fd(), super::layout::CREATOR_LOCK, libc::F_WRLCK)
}

/// Gives the creator lock back once the segment is published.
pub(crate) fn unlock_creator(file: &File) -> std::io::Result<bool> {
    try_lock(file.as_raw_fd(), super::layout::CREATOR_LOCK, libc::F_UNLCK)
}

/// Whether a creator holds its lock on `file`.
pub(crate) fn creator_alive(file: &File) -> std::io::Result<bool> {
    lock_held(file.as_raw_fd(), super::layout::CREATOR_LOCK)
}

/// The inode of this process's PID namespace, 0 if it cannot be read.
fn pid_namespace() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino())
}

/// What the process table says of a registered process, for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Its pid in its own PID namespace.
    pub pid: u32,
    /// Whether that namespace is ours (so `pid` names it here).
    pub same_namespace: bool,
}

impl Segment {
    fn proc_entries(&self) -> Result<&[ProcEntry], Error> {
        let h = self.header();
        self.view_slice::<ProcEntry>(
            super::layout::proc_offset(h.dir_entries),
            h.proc_entries as usize,
        )
        .map_err(|what| Error::Corrupt {
            bus: self.bus().to_owned(),
            what: format!("process table: {what}"),
        })
    }

    fn proc_entry(&self, owner: Owner) -> Option<&ProcEntry> {
        self.proc_entries().ok()?.get(owner.index() as usize)
    }

    /// This process's token in this bus, registering it on first use (and
    /// again in a child after `fork()`).
    ///
    /// # Errors
    ///
    /// [`Error::TooManyProcesses`] when every entry of the process table is
    /// held by a live process; [`Error::Io`] when the lock cannot be taken
    /// for another reason (a kernel without open-file-description locks,
    /// before Linux 3.15).
    pub(crate) fn me(&self) -> Result<Owner, Error> {
        // No lock is held across the system calls of registering: a fork by
        // another thread at any moment must not leave the child a lock it
        // can never take. Two threads registering at once each make an
        // entry; the loser gives its back.
        let mut seen = self.registration.load(Ordering::Acquire);
        loop {
            // SAFETY: a registration, once published here, is freed only by
            // `Segment::drop` (which has the segment to itself) or by the
            // thread that failed to publish it; a replaced one (inherited
            // through fork) is never freed. So `seen` points to a live one.
            if let Some(current) = unsafe { seen.as_ref() }.filter(|r| r.is_current()) {
                return Ok(current.owner());
            }
            let fresh = Box::into_raw(Box::new(self.register()?));
            match self.registration.compare_exchange(
                seen,
                fresh,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                // The one we replaced, if any, was inherited from a parent:
                // its entry is the parent's, and it stays allocated (a few
                // bytes per fork) for threads that may still be reading it.
                // SAFETY: we just published `fresh`; it is valid.
                Ok(_) => return Ok(unsafe { &*fresh }.owner()),
                Err(now) => {
                    // SAFETY: `fresh` was never published; we own it.
                    let ours = unsafe { Box::from_raw(fresh) };
                    self.deregister(*ours);
                    seen = now;
                }
            }
        }
    }

    fn register(&self) -> Result<Registration, Error> {
        install_atfork();
        let io = |action, source| Error::Io {
            bus: self.bus().to_owned(),
            path: None,
            action,
            source,
        };
        if !ATFORK_INSTALLED.load(Ordering::Relaxed) {
            return Err(io(
                "registering",
                std::io::Error::other("pthread_atfork failed: a forked child could hold our locks"),
            ));
        }
        let entries = self.proc_entries()?;
        let file = self
            .reopen()
            .map_err(|e| io("opening the segment to register", e))?;
        let fd = OwnedFd::from(file);
        let raw = fd.as_raw_fd();
        // Parked before it holds any lock, so that a fork by another thread
        // from now on closes it in the child (see the module docs).
        let parked = Parked(park_fd(fd).ok_or_else(|| {
            io(
                "registering",
                std::io::Error::other(format!(
                    "this process already has {MAX_REGISTRATIONS} bus mappings registered"
                )),
            )
        })?);
        // Start the search at a spot that depends on the pid, so processes
        // starting together do not all fight over entry 0.
        let start = std::process::id() as usize % entries.len();
        for probe in 0..entries.len() {
            let index = (start + probe) % entries.len();
            let entry = &entries[index];
            if entry.state.load(Ordering::Relaxed) & 0xffff_ffff == PROC_LIVE
                && lock_held(raw, PROC_LOCK_BASE + index as u64).unwrap_or(true)
            {
                continue; // cheap skip of entries whose holder lives
            }
            let locked = try_lock(raw, PROC_LOCK_BASE + index as u64, libc::F_WRLCK)
                .map_err(|e| io("taking a process-table lock", e))?;
            if !locked {
                continue;
            }
            // We hold the entry's lock, so its previous holder is gone and
            // no one else writes the entry until we release it.
            let gen = (entry.state.load(Ordering::Acquire) >> 32).wrapping_add(1) as u32;
            entry
                .pid
                .store(u64::from(std::process::id()), Ordering::Relaxed);
            entry.pid_ns.store(pid_namespace(), Ordering::Relaxed);
            // SYNC POINT: Release pairs with the Acquire loads in `liveness`
            // and `process_info`: a reader that sees the generation sees the
            // pid fields.
            entry
                .state
                .store((u64::from(gen) << 32) | PROC_LIVE, Ordering::Release);
            return Ok(Registration {
                owner: Owner::new(index as u32, gen),
                slot: parked.keep(),
                epoch: fork_epoch(),
            });
        }
        Err(Error::TooManyProcesses {
            bus: self.bus().to_owned(),
            max: entries.len() as u32,
        })
    }

    /// Whether the process holding `owner` lives. Costs two loads and one
    /// `fcntl`: callers pace it.
    pub(crate) fn liveness(&self, owner: Owner) -> Liveness {
        let Some(entry) = self.proc_entry(owner) else {
            return Liveness::Dead; // names no entry: no process holds it
        };
        let same_gen = |state: u64| Owner::new(owner.index(), (state >> 32) as u32) == owner;
        let live = |state: u64| state & 0xffff_ffff == PROC_LIVE && same_gen(state);
        // SYNC POINT: pairs with the Release store of the state in `register`.
        let before = entry.state.load(Ordering::Acquire);
        if !same_gen(before) {
            // Reused: only a process holding the entry's lock, which needs
            // ours gone, writes a new generation.
            return Liveness::Dead;
        }
        let held = lock_held(
            self.file.as_raw_fd(),
            PROC_LOCK_BASE + u64::from(owner.index()),
        );
        let after = entry.state.load(Ordering::Acquire);
        // A new holder takes the lock before it bumps the generation: if the
        // generation moved while we looked, the lock we saw may be theirs.
        if !same_gen(after) {
            return Liveness::Dead;
        }
        match held {
            Ok(true) if live(before) && live(after) => Liveness::Alive,
            // Marked free with its lock still held: a process leaving (it
            // frees the entry, then closes the lock), or a state word
            // overwritten under a live one. Either way, not known dead.
            Ok(true) => Liveness::Unknown,
            Ok(false) => Liveness::Dead,
            Err(_) => Liveness::Unknown,
        }
    }

    /// The pid of `owner`'s process as it recorded it, if the entry is
    /// still its own.
    pub(crate) fn process_info(&self, owner: Owner) -> Option<ProcessInfo> {
        let entry = self.proc_entry(owner)?;
        let state = entry.state.load(Ordering::Acquire);
        if state & 0xffff_ffff != PROC_LIVE || Owner::new(owner.index(), (state >> 32) as u32) != owner
        {
            return None;
        }
        let ns = entry.pid_ns.load(Ordering::Relaxed);
        Some(ProcessInfo {
            pid: entry.pid.load(Ordering::Relaxed) as u32,
            same_namespace: ns != 0 && ns == pid_namespace(),
        })
    }

    /// `owner` in words for error messages: its pid as it recorded it, and
    /// whether that pid is from another PID namespace.
    pub(crate) fn describe(&self, owner: Owner) -> String {
        match self.process_info(owner) {
            Some(ProcessInfo {
                pid,
                same_namespace: true,
            }) => format!("pid {pid}"),
            Some(ProcessInfo { pid, .. }) => {
                format!("pid {pid} in another PID namespace")
            }
            None => format!("{owner:?}, no longer registered"),
        }
    }

    /// Leaves the process table (on drop of the mapping).
    pub(crate) fn deregister(&self, registration: Registration) {
        if !registration.is_current() {
            return; // inherited through fork(): the entry is the parent's
        }
        if let Some(entry) = self.proc_entry(registration.owner) {
            let gen = u64::from(registration.owner.gen());
            let state = entry.state.load(Ordering::Relaxed);
            if (state >> 32) & ((1 << 29) - 1) == gen {
                entry
                    .state
                    .store((state & !0xffff_ffff) | PROC_FREE, Ordering::Release);
            }
        }
        // Closing the descriptor releases the lock.
        unpark_and_close(registration.slot);
    }
}

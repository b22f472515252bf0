//! The pipe endpoints: what a publisher, subscriber, producer or consumer
//! of a pipe bus does underneath the same API as in shared memory.
//!
//! # Broadcast
//!
//! Each subscriber owns a FIFO, `sub-<id>.fifo`, which it reads and the
//! publisher writes. A new subscriber makes its record and FIFO, opens the
//! FIFO for reading, and writes a byte into the topic's `join` FIFO. The
//! publisher's helper thread sleeps in `poll` on `join`; woken, it takes
//! the publisher's lock (between two sends), opens the new FIFO for
//! writing and writes a *welcome* frame: the sequence number of the next
//! message the subscriber gets, followed, for `StartAt::Oldest`, by the
//! publisher's history (the last `capacity` messages it sent, kept in its
//! memory) or, for `StartAt::Newest`, by the newest of them. A new
//! subscriber waits (up to `WELCOME_WAIT`) for its welcome when a
//! publisher holds the lease, so every message published after
//! `subscriber()` returns reaches it, as in shared memory. With no
//! publisher, the one that comes welcomes it when it opens.
//!
//! Every frame carries its sequence number. In overwrite mode the
//! publisher writes without blocking; a subscriber whose FIFO is full
//! misses the message and learns the exact count from the gap
//! (`Lagged(n)`). A frame longer than `PIPE_BUF` may be written in part:
//! the rest is kept and finished before any later frame goes to that
//! subscriber (which misses the frames in between, counted the same way).
//! In lossless mode a frame a subscriber's FIFO cannot take now is kept
//! for it, and the publisher sends nothing more until every lossless
//! subscriber has taken its kept frame (`try_send` says `Full`; `send`
//! waits for room, see [`RoomWait`]). A subscriber that is gone (its read
//! end closed, as a killed process's is) makes the write fail with
//! `EPIPE`: the publisher drops it, and removes its files once its record
//! says it is dead.
//!
//! The lease is an OFD lock on `publisher`: a publisher killed with
//! `kill -9` loses it with its process, and the next one takes over.
//! Subscribers see a gone publisher as end of file on their FIFO, then ask
//! the lock.
//!
//! # Work queues
//!
//! One FIFO, `queue`, opened read-write by every producer and consumer (so
//! that neither side ever sees end of file, and the pipe lives while any
//! of them does). Every frame is padded to one size, at most `PIPE_BUF`:
//! a write of it is atomic, and a read of that size takes exactly one
//! frame, so each message goes to exactly one consumer, whole. A process
//! killed after its `read` returned has taken the message, as a consumer
//! killed after `pop` returned has in shared memory.

use std::os::fd::{AsFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use super::frame::{self, Header, HEADER, KIND_DATA, KIND_GONE, KIND_WELCOME};
use super::{mq, record_liveness, Carrier, PipeBus, Record};
use crate::error::Error;
use crate::ring::broadcast::StartAt;

/// The most a write to a pipe does atomically (Linux).
pub(crate) const PIPE_BUF: usize = 4096;
/// How long at most a new subscriber waits for its welcome when a
/// publisher holds the lease (its helper thread answers at once; this
/// bounds the wait on a publisher that is stopped or stuck).
const WELCOME_WAIT: Duration = Duration::from_secs(1);
/// Looks, a millisecond apart, at the record of a subscriber whose FIFO
/// lost its reader, for it to be known dead before its files are removed.
const DEAD_SETTLE_LOOKS: u32 = 50;
/// How soon a publisher's thread that could not open a subscriber's FIFO
/// or queue (out of descriptors), or poll, tries again.
const RETRY_OPEN: Duration = Duration::from_millis(1);
/// How long a dropped publisher tries to hand lossless subscribers the
/// frames it still keeps for them.
const DRAIN_ON_DROP: Duration = Duration::from_secs(1);
/// A FIFO that holds at least this many frames of the size it waits to
/// take is waited on in naps, not in `poll` (see [`RoomWait`]).
const NAP_FRAMES: usize = 256;
/// The first nap of a wait in naps (see [`Naps`]); each next one in a row
/// is twice as long, up to [`NAP_MAX`].
const NAP_FIRST: Duration = Duration::from_micros(20);
const NAP_MAX: Duration = Duration::from_millis(1);
/// After this many naps of [`NAP_MAX`] in a row (a wait of 100 ms and
/// more: a reader that is stopped or stuck, not one that is slow), each
/// nap is [`NAP_LONG`].
const NAPS_BEFORE_LONG: u32 = 100;
const NAP_LONG: Duration = Duration::from_millis(10);

/// How a publisher's thread waits for room in a subscriber's FIFO or queue
/// that a write found full.
///
/// Not in `poll` where it can be helped: once anyone has polled a pipe,
/// Linux takes the wake-up path (a spinlock with interrupts off, and the
/// wait queue's walk) on every write into it for as long as it is open
/// (`pipe->poll_usage`), waiters or none. A subscriber's FIFO lives as long
/// as the subscriber, so one poll, at a welcome or at the first time it
/// fell behind, made every later write cost more: a 64-byte stream's
/// publisher spent 480-600 ns of CPU a message, against 390-410 without
/// (three alternated runs, 3 M messages each, `perf stat`), and a raw
/// writer polled once wrote 15% slower.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum RoomWait {
    /// In `poll`: a message queue (which has no such cost), or a FIFO that
    /// holds fewer than [`NAP_FRAMES`] of the frame: its reader could empty
    /// it within a nap and then wait for us.
    Poll,
    /// In naps ([`Naps`]) between tries: a FIFO that holds many frames, so
    /// that its reader, slower than us if it fills up, still has plenty to
    /// read when the nap ends.
    Nap,
}

/// The naps of one wait: [`NAP_FIRST`], then twice as long each, up to
/// [`NAP_MAX`], and [`NAP_LONG`] once the wait has lasted
/// [`NAPS_BEFORE_LONG`] naps of `NAP_MAX`. A publisher waits for room so,
/// and a new subscriber for its welcome. A lossless subscriber that reads
/// nothing for long (stopped, or stuck in its own code) costs its
/// publisher a wake-up every 10 ms, not every millisecond, and is found to
/// have room again at most 10 ms late.
struct Naps {
    nap: Duration,
    /// Naps of `NAP_MAX` so far.
    at_max: u32,
}

impl Naps {
    fn new() -> Self {
        Naps {
            nap: NAP_FIRST,
            at_max: 0,
        }
    }

    /// The next nap's length, at most `span`.
    fn next(&mut self, span: Duration) -> Duration {
        let nap = self.nap;
        if nap == NAP_MAX {
            self.at_max = self.at_max.saturating_add(1);
            if self.at_max >= NAPS_BEFORE_LONG {
                self.nap = NAP_LONG;
            }
        } else if nap < NAP_MAX {
            self.nap = (nap * 2).min(NAP_MAX);
        }
        nap.min(span)
    }

    /// Whether the naps have grown to [`NAP_MAX`] or more.
    fn at_longest(&self) -> bool {
        self.nap >= NAP_MAX
    }
}

fn io(err: Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(err.raw_os_error())
}

/// `poll`s `fd` for `events` for at most `timeout`. True if it is ready
/// (or in error: the caller's next call says which).
fn poll_one(fd: BorrowedFd<'_>, events: PollFlags, timeout: Duration) -> bool {
    let mut fds = [PollFd::from_borrowed_fd(fd, events)];
    let timeout = rustix::fs::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    matches!(poll(&mut fds, Some(&timeout)), Ok(n) if n > 0)
}

/// Every `poll` of this module (see [`RoomWait`] for why which files it
/// polls matters); in unit tests, it notes the FIFOs it polls.
fn poll(
    fds: &mut [PollFd<'_>],
    timeout: Option<&rustix::fs::Timespec>,
) -> rustix::io::Result<usize> {
    #[cfg(test)]
    tests::note_polled(fds);
    rustix::event::poll(fds, timeout)
}

/// How long to wait now: until `deadline`, at most `cap`. `None` if the
/// deadline passed.
fn wait_span(deadline: Option<Instant>, cap: Duration) -> Option<Duration> {
    match deadline {
        None => Some(cap),
        Some(deadline) => {
            let left = deadline.checked_duration_since(Instant::now())?;
            (!left.is_zero()).then(|| left.min(cap))
        }
    }
}

/// Sets the pipe behind `fd` to hold at least `bytes` where the system
/// allows (`/proc/sys/fs/pipe-max-size` caps an unprivileged process).
fn size_pipe(fd: BorrowedFd<'_>, bytes: usize) {
    let current = rustix::pipe::fcntl_getpipe_size(fd).unwrap_or(0);
    if bytes <= current {
        return;
    }
    if rustix::pipe::fcntl_setpipe_size(fd, bytes).is_err() {
        let max = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if max > current {
            let _ = rustix::pipe::fcntl_setpipe_size(fd, max.min(bytes));
        }
    }
}

/// Opens a subscriber's new FIFO at `path` to read, sized to hold `bytes`:
/// a non-blocking descriptor, and a second, blocking one of the same FIFO
/// for waits without a deadline (see `PipeRx::wait`).
fn open_subscriber_fifo(
    path: &std::path::Path,
    bytes: usize,
) -> rustix::io::Result<(OwnedFd, OwnedFd)> {
    let fd = open_fifo_read(path, OFlags::RDONLY | OFlags::NONBLOCK)?;
    size_pipe(fd.as_fd(), bytes);
    let fd_block = open_fifo_read(path, OFlags::RDONLY | OFlags::NONBLOCK)?;
    set_blocking(&fd_block)?;
    Ok((fd, fd_block))
}

/// Writing to a FIFO whose reader is gone raises `SIGPIPE`, which kills a
/// process that keeps the default action. Rust programs ignore it from
/// the start; for any other host, the first pipe writer ignores it (the
/// write then fails with `EPIPE`, which is how a gone reader is found).
fn ignore_sigpipe() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: reads the current action into a zeroed `sigaction`
        // (a valid value for it); a null new action changes nothing.
        let mut old: libc::sigaction = unsafe { core::mem::zeroed() };
        // SAFETY: as above: `old` is ours and lives across the call.
        let rc = unsafe { libc::sigaction(libc::SIGPIPE, core::ptr::null(), &mut old) };
        if rc == 0 && old.sa_sigaction == libc::SIG_DFL {
            // SAFETY: `signal` with SIG_IGN installs no handler of ours.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        }
    });
}

/// How a receive on a FIFO waits between empty looks, as its wait
/// strategy says (a look being a read): spinning or snoozing on `poll`
/// (which, unlike a read, leaves the pipe's lock to the writer), then, at
/// every 64th look or once spinning is over, the paced checks and perhaps
/// a sleep.
pub(crate) struct Pacing {
    wait: crate::wait::WaitStrategy,
    backoff: crossbeam_utils::Backoff,
    polls: u32,
}

/// What to do after an empty look.
pub(crate) enum Pause {
    /// Look again.
    Again,
    /// Make the paced checks (a gone writer, the deadline), then look again
    /// (`sleep` false) or sleep first.
    Check { sleep: bool },
}

impl Pacing {
    pub fn new(wait: crate::wait::WaitStrategy) -> Self {
        Pacing {
            wait,
            backoff: crossbeam_utils::Backoff::new(),
            polls: 0,
        }
    }

    /// After an empty look; `readable` says (by a poll) whether another
    /// look would find something.
    pub fn pause(&mut self, readable: impl Fn() -> bool) -> Pause {
        use crate::ring::waiting::Step;
        self.polls = self.polls.saturating_add(1);
        let step = self.wait.step(self.polls);
        if step == Step::Sleep || self.polls % 64 == 0 {
            return Pause::Check {
                sleep: step == Step::Sleep,
            };
        }
        while !readable() {
            if step == Step::Spin {
                core::hint::spin_loop();
            } else {
                self.backoff.snooze();
            }
            self.polls = self.polls.saturating_add(1);
            if self.polls % 64 == 0 {
                // The paced checks come every 64 looks, also while
                // nothing becomes readable (a message queue never says
                // "hung up" as a FIFO whose writer left does).
                return Pause::Check {
                    sleep: self.wait.step(self.polls) == Step::Sleep,
                };
            }
        }
        Pause::Again
    }

    /// After a sleep: the strategy starts over.
    pub fn slept(&mut self) {
        self.polls = 0;
    }
}

/// Which of a publisher's two threads acts on its subscribers: the
/// sending thread (any thread of the process: they share one descriptor
/// table) or its helper thread, which has a descriptor table of its own
/// where the system lets it (see [`own_descriptor_table`]). Each opens a
/// subscriber's FIFO or queue itself, and only it uses or closes that
/// descriptor: a number from one table means nothing, or another file, in
/// the other.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Sender = 0,
    Helper = 1,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Sender => Side::Helper,
            Side::Helper => Side::Sender,
        }
    }
}

/// One subscriber, as the publisher sees it.
struct Out {
    id: String,
    /// Which subscriber this is, unlike `id` never that of one gone before
    /// (a count of the subscribers this publisher welcomed).
    serial: u64,
    /// Its FIFO or queue, as each [`Side`] opened it (indexed by side), in
    /// that side's descriptor table: opened when that side first writes to
    /// it or polls it, closed by that side alone (see
    /// [`TxState::drop_sub`]; and the sender closes the helper's, in the
    /// table they share, after the helper died without closing them).
    /// Dropping an `Out` closes neither.
    fds: [Option<RawFd>; 2],
    /// The device and inode of its FIFO or queue as welcomed: what a side
    /// that opens it later must find (see [`TxState::open_fd`]).
    ident: (u64, u64),
    /// Gates the publisher (a lossless topic's subscriber, not an
    /// observer).
    lossless: bool,
    /// What is still to be written of a frame begun or kept for it.
    pending: Vec<u8>,
    /// How many bytes at the front of `pending` are the rest of a long
    /// frame (over `PIPE_BUF`) already begun in the FIFO; whole frames
    /// follow.
    tail: usize,
    /// Its frames go into a message queue (one message each), not a FIFO.
    mq: bool,
    /// The publisher is sending its pending frame outside the lock (see
    /// [`PipeTx::hand_over`]): the helper thread leaves it alone.
    sending: bool,
}

/// What a write to one subscriber did.
enum Wrote {
    All,
    /// Nothing, or part (`n` bytes): the pipe is full.
    Part(usize),
    /// Its reader is gone.
    Gone,
}

fn write_some(fd: BorrowedFd<'_>, bytes: &[u8]) -> Wrote {
    let mut done = 0;
    while done < bytes.len() {
        match rustix::io::write(fd, &bytes[done..]) {
            Ok(n) => done += n,
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) => return Wrote::Part(done),
            Err(_) => return Wrote::Gone,
        }
    }
    Wrote::All
}

/// How long a publisher waits for a lease held in its own process's name
/// by no publisher of it (see `PipeTx::open`).
const LEASE_COPY_WAIT: Duration = Duration::from_secs(1);

/// The publisher leases this process holds, by the device and inode of
/// their `publisher` files.
static HELD_LEASES: std::sync::Mutex<Vec<(u64, u64)>> = std::sync::Mutex::new(Vec::new());

fn held_here(ident: (u64, u64)) -> bool {
    HELD_LEASES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(&ident)
}

/// A lease this process holds, in [`HELD_LEASES`] while it lives.
struct HeldLease((u64, u64));

impl HeldLease {
    fn new(ident: (u64, u64)) -> Self {
        HELD_LEASES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(ident);
        HeldLease(ident)
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        let mut held = HELD_LEASES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = held.iter().position(|&h| h == self.0) {
            held.swap_remove(i);
        }
    }
}

/// The device and inode of the file behind `fd`.
fn file_identity(fd: BorrowedFd<'_>) -> Option<(u64, u64)> {
    let stat = rustix::fs::fstat(fd).ok()?;
    Some((stat.st_dev as u64, stat.st_ino as u64))
}

/// Closes descriptor `fd`, one a [`Side`] owns, on that side (a
/// subscriber's, or one handed to the helper thread).
fn close_raw(fd: RawFd) {
    // SAFETY: the callers own `fd` in the calling thread's table and give
    // it up here (taken out of `Out::fds` or `TxState::closing`, or handed
    // to a helper that never ran or copied it).
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
}

/// Adds one to eventfd `fd` (the helper thread's `kick` or `stop`).
fn wake(fd: BorrowedFd<'_>) {
    let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
}

impl Out {
    /// On the sending side, where this subscriber cannot be written now:
    /// a lossless one keeps `frame` behind what it keeps, for the helper
    /// (woken through `kick`) to write; an overwrite one misses it, and
    /// counts it from the sequence numbers.
    fn keep_for_helper(&mut self, frame: &[u8], kick: BorrowedFd<'_>) {
        if self.lossless {
            self.pending.extend_from_slice(frame);
            wake(kick);
        }
    }

    /// Its descriptor on `side` (`None` if that side has not opened it:
    /// see [`TxState::open_fd`], which callers use first).
    ///
    /// # Safety
    ///
    /// `side` is the calling thread's, and the borrow is used only until
    /// that side next closes descriptors ([`TxState::drop_sub`],
    /// [`TxState::tidy`], [`TxState::close_side`]): a descriptor stays open
    /// while it is in `fds`, as only its own side closes it, after taking
    /// it out.
    unsafe fn fd_on<'a>(&self, side: Side) -> Option<BorrowedFd<'a>> {
        // SAFETY: open in the caller's table for as long as the caller
        // promises to use it (see above).
        self.fds[side as usize].map(|fd| unsafe { BorrowedFd::borrow_raw(fd) })
    }

    /// How `side` waits for room to write what it keeps (see
    /// [`RoomWait`]): by the size of its FIFO against that of the frame at
    /// the front (the rest of a long frame begun, or a whole one).
    fn room_wait(&self, side: Side) -> RoomWait {
        if self.mq {
            return RoomWait::Poll;
        }
        // SAFETY: the callers act on their own side, and the borrow ends
        // here.
        let Some(fd) = (unsafe { self.fd_on(side) }) else {
            return RoomWait::Poll;
        };
        let front = if self.tail > 0 {
            self.tail
        } else {
            frame::frame_len(&self.pending).unwrap_or(self.pending.len())
        };
        let size = rustix::pipe::fcntl_getpipe_size(fd).unwrap_or(0);
        if size >= NAP_FRAMES.saturating_mul(front.max(1)) {
            RoomWait::Nap
        } else {
            RoomWait::Poll
        }
    }

    /// Writes `frame`, one whole frame, through its descriptor on `side`:
    /// into a FIFO as far as it takes it, into a message queue as one
    /// message or not at all.
    fn write(&self, side: Side, frame: &[u8]) -> Wrote {
        // SAFETY: the callers act on their own side, and the borrow ends
        // with this write.
        let Some(fd) = (unsafe { self.fd_on(side) }) else {
            return Wrote::Gone;
        };
        if !self.mq {
            return write_some(fd, frame);
        }
        match mq::send(fd, frame) {
            Ok(()) => Wrote::All,
            Err(Errno::AGAIN) => Wrote::Part(0),
            Err(_) => Wrote::Gone,
        }
    }

    /// Writes what is pending through its descriptor on `side` (as
    /// [`Out::write`]). True when nothing is left; `Err` if gone.
    fn flush(&mut self, side: Side) -> Result<bool, ()> {
        if self.pending.is_empty() {
            return Ok(true);
        }
        if self.mq {
            // Frame by frame: a queue keeps each message's bounds.
            let mut at = 0;
            let result = loop {
                // (`None`: not a frame of ours, so nothing to send.)
                let Some(len) = frame::frame_len(&self.pending[at..]) else {
                    at = self.pending.len();
                    break Ok(true);
                };
                match self.write(side, &self.pending[at..at + len]) {
                    Wrote::All => at += len,
                    Wrote::Part(_) => break Ok(false),
                    Wrote::Gone => break Err(()),
                }
            };
            self.pending.drain(..at);
            return result;
        }
        // Into a FIFO: writes that can only stop at the end of a frame or
        // inside a long one (which ends with a trailer that shows it cut
        // short). Small frames go as many at a time as one write of at
        // most PIPE_BUF takes, all or nothing; a long frame, or the rest
        // of one begun, alone. (One write of everything could stop inside
        // a small frame, whose rest, if its publisher died there, would be
        // taken from the next publisher's frames.)
        // SAFETY: the callers act on their own side, and the borrow ends
        // with this flush, which closes nothing.
        let Some(fd) = (unsafe { self.fd_on(side) }) else {
            return Err(());
        };
        let mut at = 0;
        let result = loop {
            if at == self.pending.len() {
                break Ok(true);
            }
            let end = if self.tail > 0 {
                at + self.tail
            } else {
                match frame::frame_len(&self.pending[at..]) {
                    // (Only frames of ours are kept.)
                    None => self.pending.len(),
                    Some(len) if len > PIPE_BUF => at + len,
                    Some(len) => {
                        let mut end = at + len;
                        while let Some(next) = frame::frame_len(&self.pending[end..]) {
                            if end + next - at > PIPE_BUF {
                                break;
                            }
                            end += next;
                        }
                        end
                    }
                }
            };
            match write_some(fd, &self.pending[at..end]) {
                Wrote::All => {
                    at = end;
                    self.tail = 0;
                }
                Wrote::Part(n) => {
                    if n > 0 {
                        // Inside a long frame (a write of at most PIPE_BUF
                        // is all or nothing).
                        at += n;
                        self.tail = end - at;
                    }
                    break Ok(false);
                }
                Wrote::Gone => break Err(()),
            }
        };
        self.pending.drain(..at);
        result
    }
}

/// A broadcast topic's publisher on pipes.
///
/// What the sends and the helper thread share is behind a mutex (taken
/// once per send, uncontended but for a pickup): the helper thread sleeps
/// in `poll` on the `join` FIFO and welcomes a new subscriber the moment
/// it knocks, so a subscriber is attached when `subscriber()` returns,
/// however idle the publisher is.
///
/// The helper thread has a descriptor table of its own where the system
/// lets it (see [`own_descriptor_table`]): while a process's threads share
/// one, every `write` takes and drops a reference to its file (an atomic
/// pair the kernel skips for a table with one user), which made a 96-byte
/// FIFO write 10-25% slower (a C writer with one idle thread against
/// none, and with that thread's table unshared).
pub(crate) struct PipeTx {
    dir: PathBuf,
    /// The lease's locked descriptor (see `procs::ParkedLock`).
    _lease: crate::segment::procs::ParkedLock,
    shared: Arc<std::sync::Mutex<TxState>>,
    /// Tells the helper thread to stop (an eventfd; the helper has a
    /// descriptor of its own for it).
    stop: OwnedFd,
    /// Tells the helper thread that a subscriber has something kept (an
    /// eventfd, as `stop`).
    kick: OwnedFd,
    helper: Option<std::thread::JoinHandle<()>>,
    /// Whether the helper has a descriptor table of its own (see
    /// [`own_descriptor_table`]).
    own_table: bool,
    /// Says that this process holds the lease (see [`HELD_LEASES`]).
    _held: Option<HeldLease>,
    check_interval: Duration,
    /// The fork epoch it was made in (see `Drop`).
    epoch: u64,
    /// A committed loan's bytes, on their way to the FIFOs.
    loaned: Vec<u8>,
    /// Whether any subscriber has something kept (see [`Locked`]).
    anything_kept: Arc<std::sync::atomic::AtomicBool>,
    /// Whether the last `room` might wait without a deadline: the send
    /// after it may then wait for room in full queues itself (see
    /// `hand_over`).
    hold: bool,
    /// The frame [`hand_over`](Self::hand_over) sends.
    handing: Vec<u8>,
}

/// Locks what a publisher and its helper thread share.
fn locked(shared: &std::sync::Mutex<TxState>) -> Locked<'_> {
    // A panic while it was held left nothing half-done that matters.
    Locked(shared.lock().unwrap_or_else(|e| e.into_inner()))
}

/// What a publisher and its helper thread share, locked: as it is
/// unlocked, it says in `anything_kept` whether any subscriber has
/// something kept (which `PipeTx::room` reads without the lock).
struct Locked<'a>(std::sync::MutexGuard<'a, TxState>);

impl core::ops::Deref for Locked<'_> {
    type Target = TxState;
    fn deref(&self) -> &TxState {
        &self.0
    }
}

impl core::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut TxState {
        &mut self.0
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let held = self
            .0
            .subs
            .iter()
            .any(|s| s.sending || !s.pending.is_empty());
        self.0
            .anything_kept
            .store(held, std::sync::atomic::Ordering::Release);
    }
}

/// Why a side has no descriptor of a subscriber (see
/// [`TxState::open_fd`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unopened {
    /// Its reader is gone, or its FIFO or queue was removed: dropped, as a
    /// write that fails with `EPIPE`.
    Gone,
    /// It could not be opened now (out of descriptors, or its name is
    /// another file's now): what this side would write to a lossless
    /// subscriber is kept for the side that has it (if neither has, as
    /// when the helper is gone, it stays kept, and `send` waits for room
    /// that does not come until the subscriber is found gone).
    NotNow,
}

/// A lossless subscriber whose queue was full for a send that may wait
/// (see [`PipeTx::hand_over`]): its [`Out::serial`], and its queue's
/// descriptor on the sending side.
struct Held {
    serial: u64,
    fd: RawFd,
}

/// The publisher's next sequence number, in a one-page shared mapping of
/// the topic's `seq` file (a file in the bus's directory, not in
/// /dev/shm): stored before each send, so that the next publisher goes on
/// from it even after a `kill -9`, and tools read how many were sent.
struct SeqWord {
    word: core::ptr::NonNull<std::sync::atomic::AtomicU64>,
}

/// The mapping's length: one page.
const SEQ_MAP: usize = 4096;

// SAFETY: the mapping is process-wide and only reached through an atomic.
unsafe impl Send for SeqWord {}
// SAFETY: as for Send.
unsafe impl Sync for SeqWord {}

impl SeqWord {
    fn open(path: &std::path::Path, mode: u32) -> std::io::Result<SeqWord> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)?;
        if !file.metadata()?.file_type().is_file() {
            return Err(std::io::Error::other(
                "the topic's `seq` is not a regular file",
            ));
        }
        if file.metadata()?.len() < SEQ_MAP as u64 {
            file.set_len(SEQ_MAP as u64)?;
        }
        // SAFETY: a fresh shared mapping of a file we hold open, of a page
        // the file has (sized just above), at an address the kernel picks:
        // it aliases nothing of ours, and lives until `drop` unmaps it.
        let base = unsafe {
            rustix::mm::mmap(
                core::ptr::null_mut(),
                SEQ_MAP,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                &file,
                0,
            )
        }?;
        let word = core::ptr::NonNull::new(base.cast())
            .ok_or_else(|| std::io::Error::other("mmap gave null"))?;
        Ok(SeqWord { word })
    }

    fn get(&self) -> &std::sync::atomic::AtomicU64 {
        // SAFETY: the first word of a live, page-aligned (so 8-aligned)
        // mapping, only ever accessed atomically by shmbus; any bits are a
        // valid u64.
        unsafe { self.word.as_ref() }
    }

    /// The second word: lossless subscribers evicted, by every publisher.
    fn evictions(&self) -> &std::sync::atomic::AtomicU64 {
        // SAFETY: as in `get`, for the next 8 bytes of the page.
        unsafe { &*self.word.as_ptr().add(1) }
    }

    /// The third word, at [`WRITTEN_AT`]: a count the publisher moves
    /// after its writes into the subscribers' FIFOs (see
    /// [`PipeRx::readable`]), by every publisher.
    fn written(&self) -> &std::sync::atomic::AtomicU64 {
        // SAFETY: as in `get`, for the third 8 bytes of the page.
        unsafe { &*self.word.as_ptr().add(2) }
    }
}

/// Where in the `seq` file the [`SeqWord::written`] count is.
const WRITTEN_AT: u64 = 16;

impl Drop for SeqWord {
    fn drop(&mut self) {
        // SAFETY: the mapping `open` made, unmapped once; no reference into
        // it outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.word.as_ptr().cast(), SEQ_MAP) };
    }
}

/// What a publisher's sends and its helper thread share.
struct TxState {
    /// The sequence number, kept where a successor finds it (if the file
    /// could be mapped).
    seq_word: Option<SeqWord>,
    dir: PathBuf,
    /// What carries frames to the subscribers, and (message queues) the
    /// topic's queue name, which a subscriber's id follows.
    carrier: Carrier,
    mq_prefix: String,
    subs: Vec<Out>,
    frame: Vec<u8>,
    /// The newest data frames sent, at most `capacity`: what a new
    /// `StartAt::Oldest` subscriber gets first (the newest, for `Newest`).
    history: std::collections::VecDeque<Vec<u8>>,
    capacity: usize,
    /// The sequence number of the next message.
    next: u64,
    /// The descriptors of dropped subscribers that their side (indexed by
    /// [`Side`]) has still to close (see [`TxState::drop_sub`]).
    closing: [Vec<RawFd>; 2],
    /// Subscribers welcomed so far (see [`Out::serial`]).
    serials: u64,
    /// The helper thread's `/proc/thread-self/fd`, a directory opened with
    /// `O_PATH` in the sender's table (see [`TxState::open_fd`]); `None`
    /// until it runs, or where /proc is not there.
    helper_fds: Option<RawFd>,
    /// The publisher is dropping: the helper welcomes no one more.
    stopping: bool,
    /// The helper thread has stopped (or died): nothing nudges it.
    helper_gone: bool,
    /// Lossless subscribers dropped because they were gone (their read
    /// end closed: a dead process's is).
    evictions: u64,
    /// Variable-size topics: the most payload bytes the history keeps (the
    /// arena's size), and what it keeps now.
    history_bytes: Option<usize>,
    kept_bytes: usize,
    /// Whether any subscriber has something kept (stored as the lock is
    /// let go, see [`Locked`]).
    anything_kept: Arc<std::sync::atomic::AtomicBool>,
    /// The sender is waiting in naps in [`PipeTx::room`], writing what is
    /// kept itself as each nap ends: the helper then leaves the FIFOs it
    /// would wait on in naps to it, instead of napping beside it (two
    /// threads waking for one wait). Cleared, and the helper woken if
    /// anything is still kept, as `room` returns.
    sender_napping: bool,
}

/// A lossless publisher that may not send now.
pub(crate) struct Full;

impl PipeTx {
    /// Takes the lease of broadcast topic `topic`, whose ring holds
    /// `capacity` messages (the history kept for new subscribers).
    pub fn open(
        bus: Arc<PipeBus>,
        topic: &str,
        capacity: usize,
        history_bytes: Option<usize>,
        check_interval: Duration,
    ) -> Result<Self, Error> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        ignore_sigpipe();
        let dir = bus.topic_dir(topic);
        let lease = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(bus.mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(dir.join("publisher"))
            .and_then(|file| {
                if file.metadata()?.file_type().is_file() {
                    Ok(file)
                } else {
                    Err(std::io::Error::other(
                        "the topic's `publisher` is not a regular file",
                    ))
                }
            })
            .map_err(|e| {
                super::io_error_at(
                    &bus.bus,
                    "opening the publisher lease",
                    dir.join("publisher"),
                    e,
                )
            })?;
        let lease_ident = file_identity(lease.as_fd());
        let since = Instant::now();
        loop {
            match crate::segment::procs::try_lock(lease.as_raw_fd(), 0, libc::F_WRLCK) {
                Ok(true) => break,
                Ok(false) => {
                    let holder = super::read_text(&dir.join("publisher"))
                        .and_then(|s| s.lines().next()?.trim().parse::<u32>().ok());
                    // Held in our name, by no publisher of ours: a publisher
                    // of this process just dropped, and a copy of its lock's
                    // descriptor lives on a moment (in a child another
                    // thread is starting, between its fork and its exec).
                    // Asked for again at once, the lease comes free then.
                    if holder == Some(std::process::id())
                        && !lease_ident.is_some_and(held_here)
                        && since.elapsed() < LEASE_COPY_WAIT
                    {
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                    return Err(Error::PublisherBusy {
                        topic: topic.to_owned(),
                        holder: holder.map_or_else(
                            || "a live process".to_owned(),
                            |pid| format!("pid {pid}"),
                        ),
                    });
                }
                Err(e) => {
                    return Err(super::io_error_at(
                        &bus.bus,
                        "taking the publisher lease",
                        dir.join("publisher"),
                        e,
                    ))
                }
            }
        }
        let held = lease_ident.map(HeldLease::new);
        // Where the last publisher stopped: in the `seq` word (which a
        // killed one kept up to date too), else as one that left cleanly
        // wrote it in the lease.
        let seq_word = SeqWord::open(&dir.join("seq"), bus.mode).ok();
        let left_at = super::read_text(&dir.join("publisher"))
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("next=")?.parse::<u64>().ok())
            })
            .unwrap_or(0);
        let resume = seq_word.as_ref().map_or(left_at, |w| {
            w.get()
                .load(std::sync::atomic::Ordering::Relaxed)
                .max(left_at)
        });
        // The lock lives in the parked descriptor alone, which a child made
        // by `fork()` closes: the lease goes with this process.
        let lease = crate::segment::procs::ParkedLock::new(lease.into()).ok_or_else(|| {
            super::io_error(
                &bus.bus,
                "taking the publisher lease",
                std::io::Error::other("no room to keep its lock from forked children"),
            )
        })?;
        write_lease(&dir, &format!("{}\n", std::process::id()));
        let join_path = dir.join("join");
        bus.mkfifo(&join_path)?;
        let flags = OFlags::NONBLOCK | OFlags::CLOEXEC;
        let join = open_fifo(&join_path, OFlags::RDONLY | flags).map_err(|e| {
            super::io_error_at(&bus.bus, "opening the join FIFO", &join_path, io(e))
        })?;
        // A writer of our own, so that `join` never reads as hung up when
        // the subscribers that knocked have closed it.
        let join_keep = open_fifo(&join_path, OFlags::WRONLY | flags).map_err(|e| {
            super::io_error_at(&bus.bus, "opening the join FIFO", &join_path, io(e))
        })?;
        let eventfd = || {
            rustix::event::eventfd(
                0,
                rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
            )
            .map_err(|e| super::io_error(&bus.bus, "making an eventfd", io(e)))
        };
        let stop = eventfd()?;
        let kick = eventfd()?;
        // What the helper thread owns: `join`, our writer of it, and copies
        // of the two eventfds (see `pickup_thread`).
        let dup = |fd: &OwnedFd| {
            rustix::io::fcntl_dupfd_cloexec(fd, 0)
                .map_err(|e| super::io_error(&bus.bus, "copying an eventfd", io(e)))
        };
        let (stop_copy, kick_copy) = (dup(&stop)?, dup(&kick)?);
        let handed = [join, join_keep, stop_copy, kick_copy].map(IntoRawFd::into_raw_fd);
        let mut state = TxState {
            seq_word,
            dir: dir.clone(),
            carrier: bus.carrier,
            mq_prefix: bus.mq_name(topic, None),
            subs: Vec::new(),
            frame: Vec::new(),
            history: std::collections::VecDeque::new(),
            capacity: capacity.max(1),
            next: resume,
            closing: [Vec::new(), Vec::new()],
            serials: 0,
            helper_fds: None,
            stopping: false,
            helper_gone: false,
            evictions: 0,
            history_bytes,
            kept_bytes: 0,
            anything_kept: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            sender_napping: false,
        };
        state.pickup(Side::Sender);
        let anything_kept = Arc::clone(&state.anything_kept);
        let shared = Arc::new(std::sync::Mutex::new(state));
        // (Says so at once if the welcome of a subscriber is kept.)
        drop(locked(&shared));
        // Message queues say nothing when their reader dies (a FIFO says
        // EPIPE): the helper looks at the subscribers' records now and then.
        let sweep = (bus.carrier == Carrier::Mq).then_some(check_interval);
        let (told, own_table) = std::sync::mpsc::sync_channel(1);
        let helper = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("shmbus-pipe-pub".into())
                .spawn(move || pickup_thread(&shared, handed, sweep, &told))
        };
        let helper = match helper {
            Ok(helper) => helper,
            Err(e) => {
                // It never ran: what it was handed, and the subscribers'
                // descriptors, are this thread's to close.
                handed.into_iter().for_each(close_raw);
                locked(&shared).close_side(Side::Sender);
                return Err(super::io_error(
                    &bus.bus,
                    "starting the publisher's helper thread",
                    e,
                ));
            }
        };
        // With a table of its own the helper has copies of what it was
        // handed: ours are closed (or `join` would stay open here after the
        // helper went, with a reader that reads it no more). Otherwise
        // they are the helper's, in the one table. (No answer: it died
        // first, before it could panic anywhere but in the system's
        // allocator; what it owns is not known, and they stay.)
        let (own_table, fds_dir) = own_table.recv().unwrap_or((false, None));
        if own_table {
            handed.into_iter().for_each(close_raw);
        }
        locked(&shared).helper_fds = fds_dir;
        Ok(PipeTx {
            dir,
            _lease: lease,
            shared,
            stop,
            kick,
            helper: Some(helper),
            own_table,
            _held: held,
            check_interval,
            epoch: crate::segment::procs::fork_epoch(),
            loaned: Vec::new(),
            anything_kept,
            hold: false,
            handing: Vec::new(),
        })
    }

    fn state(&self) -> Locked<'_> {
        locked(&self.shared)
    }

    /// The sequence number this publisher starts at: where the last one
    /// that left cleanly stopped (0 for the first, or after a crash).
    pub fn resume(&self) -> u64 {
        self.state().next
    }

    /// Whether message `next` may be sent now; in lossless mode, if `wait`,
    /// waits for room (see [`RoomWait`]) in the FIFOs or queues of the
    /// subscribers that hold it back, until `deadline`.
    pub fn room(&mut self, wait: bool, deadline: Option<Instant>) -> Result<(), Full> {
        self.hold = wait && deadline.is_none();
        let mut napped = false;
        let room = self.wait_room(wait, deadline, &mut napped);
        if napped {
            let state = &mut *self.state();
            state.sender_napping = false;
            if room.is_err() {
                // What is still kept is the helper's to write again.
                wake(self.kick.as_fd());
            }
        }
        room
    }

    /// [`room`](Self::room)'s wait; `napped` says whether it left the
    /// helper's naps to this thread (see [`TxState::sender_napping`]).
    fn wait_room(
        &mut self,
        wait: bool,
        deadline: Option<Instant>,
        napped: &mut bool,
    ) -> Result<(), Full> {
        if !self
            .anything_kept
            .load(std::sync::atomic::Ordering::Acquire)
        {
            // Nothing kept for any subscriber (as the lock was last let
            // go): room, without the lock. One that the helper thread
            // welcomes meanwhile with its welcome kept gets this message
            // kept behind it (see `TxState::send`). With something kept,
            // even for an overwrite subscriber (the rest of a long frame),
            // it is written first: a subscriber still finishing a frame
            // misses the next (4 KiB overwrite frames skipped that: 19-40%
            // of a saturating stream lost against 1-2%).
            return Ok(());
        }
        // Read only once held back: no clock read on a send that has room.
        let mut checked: Option<Instant> = None;
        let mut naps = Naps::new();
        loop {
            let blocked = {
                let state = &mut *self.state();
                let clear = state.flush_all(Side::Sender);
                state.nudge_helper(self.kick.as_fd());
                if clear {
                    return Ok(());
                }
                // Now and then: a subscriber that holds us back and is known
                // dead, or gone (its record removed, while a child it forked
                // keeps its FIFO open), is evicted.
                let since = *checked.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.check_interval {
                    checked = Some(Instant::now());
                    state.evict_gone(Side::Sender);
                    state.nudge_helper(self.kick.as_fd());
                    continue;
                }
                if !wait {
                    return Err(Full);
                }
                let i = state
                    .subs
                    .iter()
                    .position(|s| s.lossless && !s.pending.is_empty());
                // (`None` when it cannot be opened now: a short sleep.)
                let blocked = i.and_then(|i| {
                    let fd = state.open_fd(i, Side::Sender).ok()?;
                    Some((fd, state.subs[i].room_wait(Side::Sender)))
                });
                // Napping for the helper too; or, waiting in `poll` now on
                // another subscriber (whose FIFO holds fewer frames), no
                // longer: the helper naps for the rest again.
                let nap = matches!(blocked, Some((_, RoomWait::Nap)));
                if nap != state.sender_napping {
                    state.sender_napping = nap;
                    if nap {
                        *napped = true;
                    } else {
                        wake(self.kick.as_fd());
                    }
                }
                #[cfg(test)]
                tests::note_wakeup(&state.dir);
                blocked
            };
            let Some(span) = wait_span(deadline, self.check_interval) else {
                return Err(Full);
            };
            // Waited without the lock, which the helper thread needs to
            // welcome subscribers meanwhile.
            match blocked {
                Some((fd, RoomWait::Poll)) => {
                    // SAFETY: this side's descriptor, which only this side
                    // closes (the helper leaves it in `closing` if it drops
                    // the subscriber), and it closes nothing before the
                    // poll ends.
                    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
                    poll_one(fd, PollFlags::OUT, span);
                }
                Some((_, RoomWait::Nap)) => std::thread::sleep(naps.next(span)),
                None => std::thread::sleep(span.min(RETRY_OPEN)),
            }
        }
    }

    /// Sends message `seq` to every subscriber (after `room` said yes).
    pub fn send(&mut self, seq: u64, payload: &[u8], time: Option<u64>) {
        let held = locked(&self.shared).send(
            seq,
            payload,
            time,
            self.hold,
            &mut self.handing,
            self.kick.as_fd(),
        );
        if !held.is_empty() {
            self.hand_over(held);
        }
    }

    /// Sends the frame just sent (`handing`) to the lossless subscribers
    /// whose queues were full, waiting for room in each in turn, in all
    /// for at most a check interval, as a raw queue's writer waits in its
    /// send (where the helper thread, woken to write it, would take the
    /// publisher's CPU from it for every message: six times the context
    /// switches). Without the lock, which the helper needs to welcome and
    /// evict subscribers meanwhile; the frame stays kept, marked `sending`
    /// so that the helper does not write it too. The waits are `poll`s on
    /// the monotonic clock (an `mq_timedsend` would sleep on the wall
    /// clock, longer by as much as the clock is set back, with nothing to
    /// wake it if its subscriber is dead), and each first looks whether
    /// the subscriber is still there. What is still full after the
    /// interval is left to the helper and the next `room`, which evicts a
    /// dead subscriber.
    #[cold]
    #[inline(never)]
    fn hand_over(&mut self, held: Vec<Held>) {
        let until = Instant::now() + self.check_interval;
        for Held { serial, fd } in held {
            // SAFETY: this side's descriptor of subscriber `serial`, which
            // only this side closes (the helper leaves it in `closing` if
            // it drops the subscriber), and it closes nothing in this loop.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            let mut sent = false;
            loop {
                if !self.state().subs.iter().any(|o| o.serial == serial) {
                    break; // evicted meanwhile
                }
                // Sends first, though the send just found it full: by now
                // the subscriber has often taken one (waiting first, in
                // `poll`, ran the 64-byte lossless stream at 0.72-0.88x the
                // raw queue against 0.82-0.90x, four alternated runs).
                match mq::send(fd, &self.handing) {
                    Ok(()) => {
                        sent = true;
                        break;
                    }
                    Err(Errno::AGAIN) => {}
                    Err(_) => break,
                }
                let Some(span) = wait_span(Some(until), self.check_interval) else {
                    break;
                };
                poll_one(fd, PollFlags::OUT, span);
            }
            let state = &mut *self.state();
            let Some(out) = state.subs.iter_mut().find(|o| o.serial == serial) else {
                continue; // evicted meanwhile
            };
            out.sending = false;
            if sent {
                // Only its frame was kept (it was written to at once, with
                // nothing kept, and only this thread adds to what is kept).
                let len = self.handing.len().min(out.pending.len());
                out.pending.drain(..len);
            } else {
                wake(self.kick.as_fd());
            }
        }
    }

    /// Sends message `seq` of `len` bytes that `fill` writes (a loan's,
    /// read out of this process's ring), through a buffer kept for it.
    pub fn send_loaned(
        &mut self,
        seq: u64,
        len: usize,
        time: Option<u64>,
        fill: impl FnOnce(&mut [u8]),
    ) {
        let mut buf = core::mem::take(&mut self.loaned);
        buf.resize(len, 0);
        fill(&mut buf);
        self.send(seq, &buf, time);
        self.loaned = buf;
    }

    /// Lossless subscribers dropped because they were gone.
    pub fn evictions(&self) -> u64 {
        self.state().evictions
    }

    /// Subscribers attached: their records that are not known dead.
    pub fn receiver_count(&self) -> usize {
        PipeBus::live_records(&self.dir, "sub-")
    }

    /// Whether the bus's directory is gone and no subscriber is left.
    pub fn is_abandoned(&self) -> bool {
        self.receiver_count() == 0 && !self.dir.exists()
    }
}

/// Writes `text` into the lease file of the topic in `dir` (its holder's
/// pid, and the next sequence number as it leaves).
fn write_lease(dir: &std::path::Path, text: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(file) = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(dir.join("publisher"))
    {
        if file.metadata().is_ok_and(|m| m.file_type().is_file()) {
            let _ = file.set_len(0);
            let _ = std::os::unix::fs::FileExt::write_at(&file, text.as_bytes(), 0);
        }
    }
}

/// Opens the FIFO at `path` as `flags` say, if it is one (not a link, not
/// a regular file put there).
fn open_fifo(path: &std::path::Path, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let fd = rustix::fs::open(
        path,
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if rustix::fs::FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode)
        != rustix::fs::FileType::Fifo
    {
        return Err(Errno::NXIO);
    }
    Ok(fd)
}

/// Opens a FIFO that this process reads from, asking the kernel not to
/// update its access time on each read (`O_NOATIME`): a FIFO, unlike an
/// anonymous pipe, is a file whose times every read and write touch, and
/// the access time was about a tenth of a 64-byte read's cost (a raw FIFO
/// ran at 2.38 M msg/s, 2.64 with `O_NOATIME`, an anonymous pipe at 3.1).
/// Only the FIFO's owner may ask (anyone else gets `EPERM`), and a
/// filesystem may refuse the flag: then it opens it as it is (and a real
/// failure fails again, and is reported, there).
fn open_fifo_read(path: &std::path::Path, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    open_fifo(path, flags | OFlags::NOATIME).or_else(|_| open_fifo(path, flags))
}

/// Makes a descriptor blocking, keeping its other flags (`O_NOATIME`).
fn set_blocking(fd: &OwnedFd) -> rustix::io::Result<()> {
    rustix::fs::fcntl_setfl(fd, rustix::fs::fcntl_getfl(fd)? - OFlags::NONBLOCK)
}

/// The publisher's helper thread: welcomes subscribers as they knock on
/// `join`, and writes what the publisher keeps for subscribers whose FIFO
/// was full as soon as they have room (so that a publisher that goes quiet
/// still delivers it, as a ring would), until `stop` is written. `kick`
/// says that a subscriber has something kept now. With `sweep`, it also
/// drops the subscribers known dead that often.
///
/// `handed` is what it owns: `join`, the publisher's writer of it, and its
/// own `stop` and `kick` (copies of the sender's eventfds). It first takes
/// a descriptor table of its own where it can ([`own_descriptor_table`]),
/// and says on `told` whether it did (then the sender closes its copies of
/// `handed`), with its `/proc/thread-self/fd` opened in the sender's table
/// first (see [`TxState::open_fd`]).
fn pickup_thread(
    shared: &std::sync::Mutex<TxState>,
    handed: [RawFd; 4],
    sweep: Option<Duration>,
    told: &std::sync::mpsc::SyncSender<(bool, Option<RawFd>)>,
) {
    /// Says that the helper is gone as it ends, however it ends.
    struct Gone<'a>(&'a std::sync::Mutex<TxState>);
    impl Drop for Gone<'_> {
        fn drop(&mut self) {
            locked(self.0).helper_gone = true;
        }
    }
    let _gone = Gone(shared);
    // Opened in the process's table (so the sender has it), before this
    // thread leaves it.
    let fds_dir = rustix::fs::open(
        "/proc/thread-self/fd",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()
    .map(IntoRawFd::into_raw_fd);
    let own = own_descriptor_table(&handed);
    let own_table = own.is_some();
    let [join, _join_keep, stop, kick] = match own.map(<[OwnedFd; 4]>::try_from) {
        Some(Ok(fetched)) => fetched,
        // Not all fetched (out of memory between two system calls): a
        // helper that could not be told to stop must not run; without one
        // no subscriber is welcomed from now on, and what the sender keeps
        // for a full FIFO waits for its next send.
        Some(Err(partial)) => {
            let _ = told.send((true, fds_dir));
            drop(partial);
            return;
        }
        // SAFETY: `handed` is this thread's, in the process's table: given
        // to it by the sender, which closes them only when told that this
        // thread has copies of its own.
        None => handed.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
    };
    let lock = || locked(shared);
    let _ = told.send((own_table, fds_dir));
    let mut swept = Instant::now();
    let mut naps = Naps::new();
    loop {
        // The FIFOs and queues with something kept, to poll for room, and
        // whether one is waited on in naps instead (see `RoomWait`) or
        // could not be opened now: then the poll ends soon, to try again.
        let (blocked, napping, unopened) = {
            let mut state = lock();
            state.tidy(Side::Helper);
            let kept: Vec<usize> = (0..state.subs.len())
                .filter(|&i| !state.subs[i].pending.is_empty() && !state.subs[i].sending)
                .collect();
            let (mut blocked, mut napping, mut unopened) = (Vec::new(), false, false);
            for i in kept {
                match state.open_fd(i, Side::Helper) {
                    Ok(fd) => match state.subs[i].room_wait(Side::Helper) {
                        RoomWait::Poll => blocked.push(fd),
                        RoomWait::Nap => napping |= !state.sender_napping,
                    },
                    Err(_) => unopened = true,
                }
            }
            #[cfg(test)]
            tests::note_wakeup(&state.dir);
            (blocked, napping, unopened)
        };
        let mut fds = vec![
            PollFd::new(&join, PollFlags::IN),
            PollFd::new(&stop, PollFlags::IN),
            PollFd::new(&kick, PollFlags::IN),
        ];
        fds.extend(blocked.iter().map(|&fd| {
            // SAFETY: this side's descriptors, which only this thread
            // closes (the sender leaves them in `closing` if it drops their
            // subscriber), and it closes none before the poll ends.
            PollFd::from_borrowed_fd(unsafe { BorrowedFd::borrow_raw(fd) }, PollFlags::OUT)
        }));
        let mut timeout = sweep.map(|every| every.saturating_sub(swept.elapsed()));
        if unopened {
            timeout = Some(timeout.map_or(RETRY_OPEN, |t| t.min(RETRY_OPEN)));
        }
        if napping {
            let nap = naps.next(NAP_LONG);
            timeout = Some(timeout.map_or(nap, |t| t.min(nap)));
        } else {
            naps = Naps::new();
        }
        let timeout = timeout.map(|left| rustix::time::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        });
        match poll(&mut fds, timeout.as_ref()) {
            Ok(_) | Err(Errno::INTR) => {}
            // (Out of memory, say: this thread must not stop while the
            // publisher lives, or subscribers would go unwelcomed; but it
            // stops when told, which the poll did not look at.)
            Err(_) => {
                let mut buf = [0u8; 8];
                if rustix::io::read(&stop, &mut buf).is_ok() {
                    break;
                }
                std::thread::sleep(RETRY_OPEN);
                continue;
            }
        }
        if !fds[1].revents().is_empty() {
            break;
        }
        let knocked = !fds[0].revents().is_empty();
        drop(fds);
        let mut buf = [0u8; 64];
        while let Ok(1..) = rustix::io::read(&kick, &mut buf) {}
        if knocked {
            while let Ok(1..) = rustix::io::read(&join, &mut buf) {}
        }
        let mut state = lock();
        // (None welcomed once the publisher is dropping: the helper's
        // descriptors close as it stops.)
        if knocked && !state.stopping {
            state.pickup(Side::Helper);
        }
        if sweep.is_some_and(|every| swept.elapsed() >= every) {
            swept = Instant::now();
            state.evict_dead(Side::Helper);
        }
        state.flush_all(Side::Helper);
    }
    // Its descriptors of the subscribers, which the sender cannot close
    // (and which, in the process's table, would stay open for good).
    lock().close_side(Side::Helper);
}

/// Gives the calling thread a descriptor table of its own that holds
/// nothing of the process's but copies of `wanted` (returned in their
/// order, each a new descriptor of the same open file): the thread then
/// uses only those and what it opens itself, and the process's other
/// threads no longer share their table with it (see [`PipeTx`]). `None`,
/// with nothing changed, where the system does not let it (`close_range`
/// or `pidfd_getfd` refused, as a seccomp filter may, or a kernel before
/// 5.9).
///
/// The table is made empty (`close_range(0, ~0, CLOSE_RANGE_UNSHARE)`
/// copies none of the process's descriptors), so no file of the process is
/// ever held open by this thread: a copy of the whole table, closed after,
/// held every file a moment longer (a publisher dropped and made again at
/// once by another thread found its own lease still locked by such a
/// copy). Then standard input, output and error are `/dev/null`, so that a
/// descriptor this thread opens never takes their numbers (where something
/// that writes to standard error, a panic's message, would write into a
/// subscriber's FIFO), and `wanted` is fetched from the process's table
/// with `pidfd_getfd`.
fn own_descriptor_table(wanted: &[RawFd]) -> Option<Vec<OwnedFd>> {
    let me = rustix::process::getpid();
    // Whether it can all be done, before anything is: `pidfd_getfd` of one
    // of ours, and `close_range` at all (on a descriptor no table holds).
    let pidfd = rustix::process::pidfd_open(me, rustix::process::PidfdFlags::empty()).ok()?;
    let first = *wanted.first()?;
    rustix::process::pidfd_getfd(&pidfd, first, rustix::process::PidfdGetfdFlags::empty()).ok()?;
    drop(pidfd);
    // SAFETY: closes nothing: no table holds descriptor u32::MAX.
    if unsafe { libc::syscall(libc::SYS_close_range, u32::MAX, u32::MAX, 0u32) } != 0 {
        return None;
    }
    // SAFETY: gives this thread a table of its own with none of the
    // process's descriptors in it (they stay open in the process's), and
    // closes nothing anyone else uses.
    let unshared = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            0u32,
            u32::MAX,
            libc::CLOSE_RANGE_UNSHARE,
        )
    };
    if unshared != 0 {
        return None;
    }
    for _ in 0..3 {
        // (Left open: the table closes them as the thread ends.)
        let Ok(fd) = rustix::fs::open("/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        else {
            break;
        };
        let fd = fd.into_raw_fd();
        if fd > 2 {
            close_raw(fd);
            break;
        }
    }
    // From here this thread cannot go back to the process's table: what it
    // cannot fetch now (out of memory, say) it goes without.
    let pidfd = rustix::process::pidfd_open(me, rustix::process::PidfdFlags::empty()).ok();
    let fetched = wanted
        .iter()
        .filter_map(|&fd| {
            rustix::process::pidfd_getfd(
                pidfd.as_ref()?,
                fd,
                rustix::process::PidfdGetfdFlags::empty(),
            )
            .ok()
        })
        .collect();
    Some(fetched)
}

impl TxState {
    /// Looks for subscribers we do not write to yet, and welcomes them:
    /// the next message they get is `next` (`StartAt::Next`), or the
    /// oldest or newest in the history, which they then get first. On
    /// `side`, the calling thread's.
    fn pickup(&mut self, side: Side) {
        for id in PipeBus::records(&self.dir, "sub-") {
            if self.subs.iter().any(|s| s.id == id) {
                continue;
            }
            let record = self.dir.join(format!("sub-{id}"));
            let fd = match self.open_sub(&id) {
                // A queue outlives its dead reader (a FIFO's open says
                // ENXIO): not welcomed, nor waited for.
                Ok(_) if self.carrier == Carrier::Mq && record_liveness(&record).is_dead() => {
                    self.remove_files(&id);
                    continue;
                }
                Ok(fd) => fd,
                // ENXIO: nobody reads it (yet, or any more); ENOENT: not
                // made yet, or removed.
                Err(_) => {
                    if record_liveness(&record).is_dead() {
                        self.remove_files(&id);
                    }
                    continue;
                }
            };
            let info = super::read_text(&record).unwrap_or_default();
            let lossless = info.lines().any(|l| l == "lossless=1");
            let history: Vec<&Vec<u8>> = if info.lines().any(|l| l == "start=oldest") {
                self.history.iter().collect()
            } else if info.lines().any(|l| l == "start=newest") {
                self.history.back().into_iter().collect()
            } else {
                Vec::new()
            };
            let first = history
                .first()
                .and_then(|frame| Header::decode(frame))
                .map_or(self.next, |h| h.seq);
            let Some(ident) = file_identity(fd.as_fd()) else {
                continue;
            };
            let mut fds = [None, None];
            fds[side as usize] = Some(fd.into_raw_fd());
            self.serials += 1;
            let mut out = Out {
                id,
                serial: self.serials,
                fds,
                ident,
                lossless,
                pending: Vec::new(),
                tail: 0,
                mq: self.carrier == Carrier::Mq,
                sending: false,
            };
            // Its time field: the sequence number after the history that
            // follows, so the subscriber knows how much to wait for.
            frame::encode_into(
                &mut self.frame,
                KIND_WELCOME,
                first,
                Some(self.next),
                &[],
                0,
            );
            out.pending.extend_from_slice(&self.frame);
            for frame in history {
                out.pending.extend_from_slice(frame);
            }
            if out.flush(side).is_ok() {
                self.subs.push(out);
                self.note_written();
            } else {
                out.fds.into_iter().flatten().for_each(close_raw);
            }
        }
    }

    /// Opens subscriber `id`'s FIFO or queue to write.
    fn open_sub(&self, id: &str) -> rustix::io::Result<OwnedFd> {
        match self.carrier {
            Carrier::Fifo => open_fifo(
                &self.dir.join(format!("sub-{id}.fifo")),
                OFlags::WRONLY | OFlags::NONBLOCK,
            ),
            Carrier::Mq => mq::open(
                &mq::of_subscriber(&self.mq_prefix, id),
                mq::Access::Write,
                true,
                None,
            ),
        }
    }

    /// Subscriber `i`'s descriptor on `side` (the calling thread's),
    /// opened now if that side has none yet (the other side welcomed it):
    /// through the other side's descriptor, as `/proc` shows it (the FIFO
    /// or queue welcomed, even if its name was removed since, as when the
    /// bus is removed under live endpoints), else by its name; either way
    /// only if it is the file welcomed (its device and inode).
    fn open_fd(&mut self, i: usize, side: Side) -> Result<RawFd, Unopened> {
        if let Some(fd) = self.subs[i].fds[side as usize] {
            return Ok(fd);
        }
        let flags = OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
        // (The other side closes its descriptors only under the lock,
        // which we hold.)
        let through_other = self.subs[i].fds[side.other() as usize].and_then(|fd| {
            Some(match side.other() {
                // The helper's table, through its `/proc/thread-self/fd`,
                // which it opened for us (a thread id would be its number
                // in this process's pid namespace, not always /proc's).
                Side::Helper => {
                    // SAFETY: the sender's descriptor (see `helper_fds`),
                    // and the sender is who calls this with `side` Sender;
                    // it is closed only as the publisher drops.
                    let dir = unsafe { BorrowedFd::borrow_raw(self.helper_fds?) };
                    rustix::fs::openat(dir, fd.to_string(), flags, Mode::empty())
                }
                // The process's table: `self` is this process in any /proc,
                // or none.
                Side::Sender => {
                    rustix::fs::open(format!("/proc/self/fd/{fd}"), flags, Mode::empty())
                }
            })
        });
        let opened = match through_other {
            Some(Ok(fd)) => Ok(fd),
            Some(Err(Errno::NXIO)) => Err(Errno::NXIO),
            _ => self.open_sub(&self.subs[i].id),
        };
        match opened {
            Ok(fd) if file_identity(fd.as_fd()) == Some(self.subs[i].ident) => {
                let fd = fd.into_raw_fd();
                self.subs[i].fds[side as usize] = Some(fd);
                Ok(fd)
            }
            // Another file (its name taken by a new FIFO, or a /proc that
            // is not ours): not this subscriber's.
            Ok(_) => Err(Unopened::NotNow),
            // No reader (a FIFO's open says so), or removed: as a write
            // that fails with EPIPE.
            Err(Errno::NXIO | Errno::NOENT) => Err(Unopened::Gone),
            // Out of descriptors, say: not now.
            Err(_) => Err(Unopened::NotNow),
        }
    }

    /// Closes the descriptors that the other side left to `side`, the
    /// calling thread's (see [`TxState::drop_sub`]).
    fn tidy(&mut self, side: Side) {
        self.closing[side as usize].drain(..).for_each(close_raw);
    }

    /// Closes every descriptor of `side`, the calling thread's, as that
    /// side stops: its subscribers' and those left to it.
    fn close_side(&mut self, side: Side) {
        for out in &mut self.subs {
            if let Some(fd) = out.fds[side as usize].take() {
                close_raw(fd);
            }
        }
        self.tidy(side);
    }

    /// Removes subscriber `i`: its descriptor on `side` (the calling
    /// thread's) is closed now, the other side's left in `closing` for
    /// that side to close (only it can).
    fn remove_sub(&mut self, i: usize, side: Side) -> Out {
        let mut out = self.subs.swap_remove(i);
        if let Some(fd) = out.fds[side as usize].take() {
            close_raw(fd);
        }
        if let Some(fd) = out.fds[side.other() as usize].take() {
            self.closing[side.other() as usize].push(fd);
        }
        out
    }

    /// Evicts the lossless subscribers with something kept whose record
    /// says they are dead (or is gone). On `side`, the calling thread's.
    fn evict_gone(&mut self, side: Side) {
        let mut i = 0;
        while i < self.subs.len() {
            let out = &self.subs[i];
            let record = self.dir.join(format!("sub-{}", out.id));
            if out.lossless && !out.pending.is_empty() && record_liveness(&record).is_dead() {
                self.drop_sub(i, side);
            } else {
                i += 1;
            }
        }
    }

    /// Drops the subscribers whose record is there and unlocked, or gone
    /// from a topic directory that is still there (a subscriber that left
    /// removes it): how a message queue's publisher learns that a reader
    /// went. (With the directory gone, the bus was removed under live
    /// subscribers, which go on reading their queues.) On `side`, the
    /// calling thread's.
    fn evict_dead(&mut self, side: Side) {
        let mut i = 0;
        while i < self.subs.len() {
            let record = self.dir.join(format!("sub-{}", self.subs[i].id));
            let gone = if record.exists() {
                record_liveness(&record).is_dead()
            } else {
                self.dir.is_dir()
            };
            if gone {
                self.drop_sub(i, side);
            } else {
                i += 1;
            }
        }
    }

    /// Removes subscriber `id`'s record and its FIFO or queue.
    fn remove_files(&self, id: &str) {
        match self.carrier {
            Carrier::Fifo => {
                let _ = std::fs::remove_file(self.dir.join(format!("sub-{id}.fifo")));
            }
            Carrier::Mq => {
                mq::unlink(&mq::of_subscriber(&self.mq_prefix, id));
            }
        }
        let _ = std::fs::remove_file(self.dir.join(format!("sub-{id}")));
    }

    /// Drops subscriber `i`, removing its files if it is known dead. A
    /// lossless one counts as evicted unless it left: a subscriber that
    /// leaves removes its record before it closes its FIFO (or queue), so
    /// one whose record is gone is not counted, as in shared memory, where
    /// one that leaves gives its gate entry back. (One killed whose record
    /// `shmbus gc` removed before the publisher's next write is not
    /// counted either.) On `side`, the calling thread's (see
    /// [`TxState::remove_sub`]).
    fn drop_sub(&mut self, i: usize, side: Side) {
        let out = self.remove_sub(i, side);
        let record = self.dir.join(format!("sub-{}", out.id));
        if out.lossless && record.exists() {
            self.evictions += 1;
            if let Some(word) = &self.seq_word {
                word.evictions()
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        // Its reader closed: a process exiting closes its FIFO before,
        // perhaps, its record; give it a moment to be known dead (a live
        // one keeps its files, and `gc` removes them if it dies later).
        for _ in 0..DEAD_SETTLE_LOOKS {
            if record_liveness(&record).is_dead() {
                self.remove_files(&out.id);
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Writes what is pending to every subscriber, on `side` (the calling
    /// thread's). True if no lossless subscriber still has a frame kept.
    fn flush_all(&mut self, side: Side) -> bool {
        self.tidy(side);
        let mut clear = true;
        let mut wrote = false;
        let mut i = 0;
        while i < self.subs.len() {
            if self.subs[i].pending.is_empty() {
                i += 1;
                continue;
            }
            wrote = true;
            if self.subs[i].sending {
                // The publisher is sending it (see `PipeTx::hand_over`).
                clear &= !self.subs[i].lossless;
                i += 1;
                continue;
            }
            match self.open_fd(i, side) {
                Ok(_) => {}
                Err(Unopened::Gone) => {
                    self.drop_sub(i, side);
                    continue;
                }
                Err(Unopened::NotNow) => {
                    clear &= !self.subs[i].lossless;
                    i += 1;
                    continue;
                }
            }
            match self.subs[i].flush(side) {
                Ok(done) => {
                    clear &= done || !self.subs[i].lossless;
                    i += 1;
                }
                Err(()) => self.drop_sub(i, side),
            }
        }
        if wrote {
            self.note_written();
        }
        clear
    }

    /// Sends message `seq` to every subscriber, on the sending side. With
    /// `hold`, a lossless subscriber whose queue is full is not left to the
    /// helper thread: it is returned, marked `sending`, with the frame
    /// copied into `handing`, for [`PipeTx::hand_over`]. `kick` is the
    /// helper's eventfd.
    fn send(
        &mut self,
        seq: u64,
        payload: &[u8],
        time: Option<u64>,
        hold: bool,
        handing: &mut Vec<u8>,
        kick: BorrowedFd<'_>,
    ) -> Vec<Held> {
        if !self.closing[Side::Sender as usize].is_empty() {
            self.tidy(Side::Sender);
        }
        let mut held = Vec::new();
        if let Some(word) = &self.seq_word {
            // Before any write: a successor never reuses a number that a
            // subscriber may have seen.
            word.get()
                .store(seq.wrapping_add(1), std::sync::atomic::Ordering::Relaxed);
        }
        frame::encode_into(&mut self.frame, KIND_DATA, seq, time, payload, 0);
        let mut i = 0;
        while i < self.subs.len() {
            if self.subs[i].pending.is_empty() {
                match self.open_fd(i, Side::Sender) {
                    Ok(_) => {}
                    Err(Unopened::Gone) => {
                        self.drop_sub(i, Side::Sender);
                        continue;
                    }
                    Err(Unopened::NotNow) => {
                        // As a full FIFO: kept for the helper, which has
                        // it (lossless), or missed (overwrite).
                        self.subs[i].keep_for_helper(&self.frame, kick);
                        i += 1;
                        continue;
                    }
                }
            }
            let out = &mut self.subs[i];
            if !out.pending.is_empty() {
                // Something kept since `room` looked (a welcome and a
                // history the helper just wrote): a lossless one waits
                // behind it, never lost.
                out.keep_for_helper(&self.frame, kick);
                // An overwrite subscriber still finishing a long frame
                // misses this one, and counts it from the sequence numbers.
                i += 1;
                continue;
            }
            match out.write(Side::Sender, &self.frame) {
                Wrote::All => i += 1,
                Wrote::Part(n) => {
                    if n > 0 || out.lossless {
                        // (Nothing was kept before it: the rest of a long
                        // frame begun, or all of one.)
                        out.pending.extend_from_slice(&self.frame[n..]);
                        out.tail = if n > 0 { self.frame.len() - n } else { 0 };
                        match out.fds[Side::Sender as usize] {
                            Some(fd) if hold && out.mq && out.lossless && n == 0 => {
                                out.sending = true;
                                held.push(Held {
                                    serial: out.serial,
                                    fd,
                                });
                            }
                            _ => {
                                // The helper writes it when the FIFO has
                                // room.
                                wake(kick);
                            }
                        }
                    }
                    i += 1;
                }
                Wrote::Gone => self.drop_sub(i, Side::Sender),
            }
        }
        self.note_written();
        // Into the history (at most `capacity` messages, and in a
        // variable-size topic at most its arena's bytes), reusing the
        // buffer of a frame it drops.
        let mut spare = Vec::new();
        self.kept_bytes += payload.len();
        while self.history.len() >= self.capacity
            || self
                .history_bytes
                .is_some_and(|max| self.kept_bytes > max && !self.history.is_empty())
        {
            let Some(old) = self.history.pop_front() else {
                break;
            };
            // Its payload, without the header or a long frame's trailer
            // (counted as `payload.len()` when it was kept).
            self.kept_bytes -= frame::data_payload_len(old.len());
            spare = old;
        }
        if !held.is_empty() {
            handing.clear();
            handing.extend_from_slice(&self.frame);
        }
        core::mem::swap(&mut spare, &mut self.frame);
        self.history.push_back(spare);
        self.next = seq.wrapping_add(1);
        self.nudge_helper(kick);
        held
    }

    /// Moves the count of writes (see [`SeqWord::written`]) after frames
    /// went into the subscribers' FIFOs. Under the lock: one thread at a
    /// time.
    fn note_written(&self) {
        if let Some(word) = &self.seq_word {
            let written = word.written();
            written.store(
                written
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .wrapping_add(1),
                std::sync::atomic::Ordering::Release,
            );
        }
    }

    /// On the sending side: wakes the helper (through `kick`) if it has
    /// descriptors of dropped subscribers to close, so that they close now
    /// (a message queue lives, charged to its user, while one is open).
    fn nudge_helper(&self, kick: BorrowedFd<'_>) {
        if !self.closing[Side::Helper as usize].is_empty() && !self.helper_gone {
            wake(kick);
        }
    }
}

impl Drop for PipeTx {
    fn drop(&mut self) {
        if self.epoch != crate::segment::procs::fork_epoch() {
            // A copy inherited through fork(): the helper thread, the lease
            // and the subscribers are the parent's (no thread to join here).
            if let Some(helper) = self.helper.take() {
                std::mem::forget(helper);
            }
            return;
        }
        {
            // This side's own descriptor of every subscriber first: as the
            // helper stops its descriptors close, and a subscriber only it
            // wrote to would find its FIFO without a writer while the lease
            // is still held (and drop a frame begun, as one cut short). In
            // the same turn of the lock, the helper is told to stop, and to
            // welcome no one more meanwhile. (One this side cannot open now,
            // out of descriptors, goes without a writer, and without the
            // rest of what was kept for it.)
            let state = &mut *self.state();
            let mut i = 0;
            while i < state.subs.len() {
                if state.open_fd(i, Side::Sender) == Err(Unopened::Gone) {
                    state.remove_sub(i, Side::Sender);
                } else {
                    i += 1;
                }
            }
            state.stopping = true;
            wake(self.stop.as_fd());
        }
        let panicked = self.helper.take().is_some_and(|h| h.join().is_err());
        let state = &mut *self.state();
        if panicked && !self.own_table {
            // Its descriptors are in our table, and it did not close them.
            state.close_side(Side::Helper);
        }
        state.tidy(Side::Sender);
        // Hand every subscriber what we kept for it (in shared memory it
        // stays in the ring after the publisher goes), then our goodbye:
        // the next sequence number, so that a subscriber that missed the
        // last messages counts them. Bounded: a subscriber that does not
        // read gets neither.
        frame::encode_into(&mut state.frame, KIND_GONE, state.next, None, &[], 0);
        for out in &mut state.subs {
            out.pending.extend_from_slice(&state.frame);
        }
        let until = Instant::now() + DRAIN_ON_DROP;
        let mut naps = Naps::new();
        loop {
            let mut i = 0;
            while i < state.subs.len() {
                let more = state.open_fd(i, Side::Sender).is_ok()
                    && matches!(state.subs[i].flush(Side::Sender), Ok(false));
                if more {
                    i += 1;
                } else {
                    state.remove_sub(i, Side::Sender);
                }
            }
            let Some(first) = state.subs.first() else {
                break;
            };
            let Some(fd) = first.fds[Side::Sender as usize] else {
                break;
            };
            let Some(span) = wait_span(Some(until), Duration::from_millis(10)) else {
                break;
            };
            // (Its FIFO outlives us: the subscriber goes on with the next
            // publisher, whose writes a poll would slow.)
            if first.room_wait(Side::Sender) == RoomWait::Nap {
                std::thread::sleep(naps.next(span));
            } else {
                // SAFETY: this side's descriptor (the helper is gone),
                // which nothing closes before the poll ends.
                poll_one(unsafe { BorrowedFd::borrow_raw(fd) }, PollFlags::OUT, span);
            }
        }
        // What was not taken in time goes with this side's descriptors.
        // (The helper closed its own as it stopped.)
        state.close_side(Side::Sender);
        if let Some(fd) = state.helper_fds.take() {
            close_raw(fd);
        }
        // The next publisher goes on from our sequence numbers (the lock
        // goes when `lease` drops, after this).
        write_lease(
            &self.dir,
            &format!("{}\nnext={}\n", std::process::id(), state.next),
        );
    }
}

/// What the next frame of a subscriber's FIFO is.
pub(crate) enum Next {
    /// A message: its header (the payload is [`PipeRx::payload`]).
    Data(Header),
    /// A publisher's welcome: the next message's sequence number, and
    /// whether it is the first this subscriber got (a later one is from a
    /// publisher that took over: messages between are lost).
    Welcome(u64, bool),
    /// The publisher left: the sequence number it would have sent next.
    Gone(u64),
    /// Nothing to read now.
    Empty,
    /// Bytes that are no frame (skipped up to the next good header).
    Corrupt,
}

/// How long a streaming subscriber naps when its FIFO is empty (asked
/// for: with the default timer slack of 50 us a sleep this short takes
/// 75-100 us on the machine measured).
const STREAM_NAP: Duration = Duration::from_micros(20);
/// Waits that come this soon after the one before count as busy.
const BUSY_GAP: Duration = Duration::from_micros(10);
/// Busy waits in a row that make a subscriber stream, at first.
const BUSY_WAITS: u32 = 8;
/// The most busy waits in a row asked for, after naps that let the FIFO
/// fill too far.
const BUSY_WAITS_MAX: u32 = 1 << 14;
/// Frames a nap must have gathered for the subscriber to go on streaming.
const STREAM_MIN: u32 = 4;
/// What a nap is taken to last when judging whether the FIFO holds what
/// arrives meanwhile: the longest nap measured (see [`STREAM_NAP`]).
/// Judged against 200 us and a quarter of the FIFO, 64-byte streams
/// faster than about 800 k messages a second never napped, and their
/// subscriber slept in a read for nearly every message (counted in a
/// scratch build: 98-180 k blocking reads of 200 k messages in 4 rows of 12
/// of `bench --only throughput-pipe`, against at most 12 k with this
/// budget and half the FIFO; alternated runs, 2 vCPUs, 2026-12-07: 0.56 ->
/// 0.58x, 0.63 -> 0.67x, 0.53 -> 0.56x, 0.61 -> 0.77x the raw pipe/FIFO).
const NAP_BUDGET: Duration = Duration::from_micros(100);

/// A subscriber with no deadline that finds its FIFO empty sleeps in a
/// blocking read, and the publisher's next write must wake it: a wake-up
/// per message while the subscriber keeps up. While messages come faster
/// than that (each wait comes within [`BUSY_GAP`] of the one before, for
/// [`BUSY_WAITS`] waits), it naps instead, off the FIFO's wait queue, and
/// reads what gathered in bulk: the publisher's writes wake no one. It
/// blocks again when a nap gathers fewer than [`STREAM_MIN`] frames (the
/// stream slowed down), or more than half the FIFO (a nap is too long for
/// this stream: an overwrite subscriber would lose messages, a lossless
/// publisher would wait for room); after that, it asks for twice as many
/// busy waits before it streams again. It does not start napping when
/// the bytes taken during the busy waits, at their rate, would fill more
/// than half the FIFO in [`NAP_BUDGET`] (large messages, fast).
#[derive(Default)]
struct Streaming {
    /// Napping rather than blocking.
    on: bool,
    /// Busy waits in a row so far, and how many turn streaming on.
    busy: u32,
    need: u32,
    /// Frames and bytes taken since the last wait.
    taken: u32,
    bytes: usize,
    /// When the last wait began.
    last: Option<Instant>,
    /// When the current run of busy waits began, and the bytes taken since.
    busy_since: Option<Instant>,
    busy_bytes: usize,
    /// The FIFO's size in bytes (0: unknown, never stream).
    fifo: usize,
}

impl Streaming {
    fn new(fifo: usize) -> Self {
        Streaming {
            need: BUSY_WAITS,
            fifo,
            ..Streaming::default()
        }
    }

    /// A data frame of `bytes` was taken.
    fn took(&mut self, bytes: usize) {
        self.taken = self.taken.saturating_add(1);
        self.bytes = self.bytes.saturating_add(bytes);
    }

    /// At a wait without a deadline and with nothing buffered: whether to
    /// nap now rather than block.
    fn nap_now(&mut self) -> bool {
        self.nap_at(Instant::now())
    }

    /// [`nap_now`](Self::nap_now) at `now`.
    fn nap_at(&mut self, now: Instant) -> bool {
        let quick = self.last.is_some_and(|last| now - last < BUSY_GAP);
        self.last = Some(now);
        let (taken, bytes) = (
            core::mem::take(&mut self.taken),
            core::mem::take(&mut self.bytes),
        );
        if self.on {
            if bytes > self.fifo / 2 {
                self.on = false;
                self.need = self.need.saturating_mul(2).min(BUSY_WAITS_MAX);
            } else if taken < STREAM_MIN {
                self.on = false;
                self.need = BUSY_WAITS;
            }
            if !self.on {
                self.busy = 0;
            }
        } else if quick {
            self.busy = self.busy.saturating_add(1);
            // Bytes taken since the run began (not those before its
            // first wait, which came before `since`).
            if self.busy_since.is_some() {
                self.busy_bytes = self.busy_bytes.saturating_add(bytes);
            }
            let since = *self.busy_since.get_or_insert(now);
            if self.fifo > 0 && self.busy >= self.need {
                // Bytes a nap would gather at the busy waits' rate.
                let span = (now - since).as_nanos().max(1);
                let gather = self.busy_bytes as u128 * NAP_BUDGET.as_nanos() / span;
                self.on = gather <= self.fifo as u128 / 2;
                if !self.on {
                    self.busy = 0;
                }
            }
        } else {
            self.busy = 0;
        }
        if self.on || self.busy == 0 {
            self.busy_since = None;
            self.busy_bytes = 0;
        }
        self.on
    }
}

/// A broadcast subscriber on pipes.
pub(crate) struct PipeRx {
    bus: Arc<PipeBus>,
    dir: PathBuf,
    /// Declared before the descriptors, so dropped (its file removed)
    /// before they close: a publisher that finds the FIFO closed finds
    /// the record gone, and knows the subscriber left (see `drop_sub`).
    record: Record,
    fd: OwnedFd,
    /// The same FIFO, opened again without `O_NONBLOCK`.
    fd_block: OwnedFd,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The FIFO had no writer at the last read (end of file).
    eof: bool,
    /// The first sequence number a welcome gave, not yet taken by the
    /// subscriber.
    welcome: Option<u64>,
    /// Whether a welcome came yet.
    welcomed: bool,
    /// Whether the last publisher's goodbye came (and no welcome since).
    goodbye: bool,
    /// An error a select's look found, for the next receive.
    stashed: Option<crate::error::RecvError>,
    /// The longest frame of this topic (header and largest message).
    max_frame: usize,
    lease: Option<std::fs::File>,
    /// An aligned copy of a message lent by `recv_ref`.
    lent: Vec<u128>,
    check_interval: Duration,
    gates: bool,
    /// Message queues: our queue's name (empty on FIFOs), and when we
    /// last asked whether the publisher is gone (a queue has no end of
    /// file to say so).
    mq_name: String,
    looked: Instant,
    /// A message that was not one frame came (and was dropped): the next
    /// look says `Corrupt`.
    corrupt_message: bool,
    /// Streaming: see [`Streaming`].
    stream: Streaming,
    /// FIFOs: the topic's `seq` file, read-only, once a publisher made it,
    /// and what the last look found of its sequence word and its count of
    /// writes (see [`PipeRx::readable`]).
    seq_file: Option<std::fs::File>,
    words_seen: std::sync::atomic::AtomicU64,
}

impl PipeRx {
    /// Subscribes to broadcast topic `topic`: `gates` for a lossless
    /// topic's subscriber (not an observer), `frame_bytes` the largest
    /// frame and `capacity` how many the FIFO should hold.
    pub fn open(
        bus: Arc<PipeBus>,
        topic: &str,
        start: StartAt,
        gating: Option<u32>,
        capacity: usize,
        frame_bytes: usize,
        check_interval: Duration,
    ) -> Result<Self, Error> {
        let start = match start {
            StartAt::Next => "next",
            StartAt::Newest => "newest",
            StartAt::Oldest => "oldest",
        };
        let gates = gating.is_some();
        let dir = bus.topic_dir(topic);
        let content = format!(
            "pid={}\nstart={start}\nlossless={}\n",
            std::process::id(),
            u8::from(gates)
        );
        let record = {
            // A lossless topic takes at most `max_gating` subscribers that
            // hold its publisher back, as its subscriber table does in
            // shared memory: counted under the bus's lock.
            let _lock = bus.lock()?;
            if let Some(max_gating) = gating {
                let gating = PipeBus::records(&dir, "sub-")
                    .iter()
                    .map(|id| dir.join(format!("sub-{id}")))
                    .filter(|record| !record_liveness(record).is_dead())
                    .filter(|record| {
                        super::read_text(record)
                            .is_some_and(|text| text.lines().any(|l| l == "lossless=1"))
                    })
                    .count();
                if gating >= max_gating as usize {
                    return Err(Error::TooManySubscribers {
                        topic: topic.to_owned(),
                        max: max_gating,
                    });
                }
            }
            Record::create(&bus, &dir, "sub-", &content)?
        };
        let (fd, fd_block, mq_name) = match bus.carrier {
            Carrier::Fifo => {
                let fifo = dir.join(format!("sub-{}.fifo", record.id("sub-")));
                bus.mkfifo(&fifo)?;
                match open_subscriber_fifo(&fifo, capacity.saturating_mul(frame_bytes)) {
                    Ok((fd, fd_block)) => (fd, fd_block, String::new()),
                    Err(e) => {
                        // Not left behind (with our record gone, nothing
                        // would name it).
                        let _ = std::fs::remove_file(&fifo);
                        return Err(super::io_error_at(
                            &bus.bus,
                            "opening a subscriber FIFO",
                            &fifo,
                            io(e),
                        ));
                    }
                }
            }
            Carrier::Mq => {
                // A queue that holds the topic's capacity, as the FIFO is
                // sized to, or an error that names the limit.
                let name = bus.mq_name(topic, Some(record.id("sub-")));
                let fd = bus.make_queue(&name, topic, mq::Access::Read, capacity, frame_bytes)?;
                // A second, blocking, descriptor of the queue, for waits
                // without a deadline (see `wait`).
                let fd_block = mq::open(&name, mq::Access::Read, false, None).map_err(|e| {
                    mq::unlink(&name);
                    super::io_error_at(
                        &bus.bus,
                        "opening a subscriber's message queue",
                        &name,
                        io(e),
                    )
                })?;
                (fd, fd_block, name)
            }
        };
        // Streaming naps only on FIFOs, whose size bounds a nap's gathering.
        let fifo_bytes = if mq_name.is_empty() {
            rustix::pipe::fcntl_getpipe_size(fd.as_fd()).unwrap_or(0)
        } else {
            0
        };
        let mut rx = PipeRx {
            bus,
            dir,
            record,
            fd,
            fd_block,
            buf: vec![0; 64 << 10],
            start: 0,
            end: 0,
            eof: false,
            welcome: None,
            welcomed: false,
            goodbye: false,
            stashed: None,
            max_frame: frame_bytes,
            lease: None,
            lent: Vec::new(),
            check_interval,
            gates,
            mq_name,
            looked: Instant::now(),
            corrupt_message: false,
            stream: Streaming::new(fifo_bytes),
            seq_file: None,
            words_seen: std::sync::atomic::AtomicU64::new(0),
        };
        rx.open_seq_file();
        // Knock; the publisher's helper thread welcomes us.
        if let Ok(join) = open_fifo(&rx.dir.join("join"), OFlags::WRONLY | OFlags::NONBLOCK) {
            let _ = rustix::io::write(&join, &[1]);
            if rx.publisher_held() {
                // The welcome, then the history it announces: all there
                // when `subscriber()` returns, whatever carries it.
                let until = Instant::now() + WELCOME_WAIT;
                let mut history = None;
                let mut naps = Naps::new();
                loop {
                    match history {
                        None => history = rx.welcome.is_some().then_some(0),
                        Some(want) if rx.frames_buffered() >= want => break,
                        Some(_) => {}
                    }
                    let Some(span) = wait_span(Some(until), WELCOME_WAIT) else {
                        break;
                    };
                    if rx.mq_name.is_empty() {
                        // Naps, not a poll: once anyone has polled a pipe,
                        // Linux takes the wake-up path on its every write
                        // (`poll_usage`), for the FIFO's life (see
                        // `RoomWait`; only a receive with a deadline, or a
                        // publisher waiting to write frames so large that
                        // the FIFO holds few, polls it). Read only once
                        // there are bytes: before the helper opens it, a
                        // read finds no writer (end of file).
                        if !rustix::io::ioctl_fionread(&rx.fd).is_ok_and(|n| n > 0) {
                            std::thread::sleep(naps.next(span));
                            if naps.at_longest() && !rx.publisher_held() {
                                break; // the publisher went meanwhile
                            }
                            continue;
                        }
                        naps = Naps::new();
                    } else {
                        poll_one(rx.fd.as_fd(), PollFlags::IN, span);
                    }
                    if rx.eof {
                        break; // the publisher went meanwhile
                    }
                    if history.is_none() {
                        let want = rx.read_welcome();
                        if rx.welcome.is_some() {
                            history = Some(want);
                        }
                    } else {
                        let have = rx.end - rx.start;
                        rx.fill(have + 1);
                    }
                }
            }
        }
        Ok(rx)
    }

    /// Takes a welcome at the front of the buffer, if there is one: how
    /// many history frames follow it.
    fn read_welcome(&mut self) -> u64 {
        self.fill(HEADER);
        if self.end - self.start >= HEADER {
            if let Some(header) = Header::decode(&self.buf[self.start..self.end]) {
                if header.kind == KIND_WELCOME {
                    self.welcome = Some(header.seq);
                    self.welcomed = true;
                    self.start += HEADER;
                    self.open_seq_file();
                    return header
                        .timestamp()
                        .map_or(0, |next| next.saturating_sub(header.seq));
                }
            }
        }
        0
    }

    /// How many whole frames are buffered.
    fn frames_buffered(&self) -> u64 {
        let (mut at, mut n) = (self.start, 0);
        while let Some(len) = frame::frame_len(&self.buf[at..self.end]) {
            at += len;
            n += 1;
        }
        n
    }

    /// The most one read takes: unless it is streaming (napping between
    /// bulk reads, see [`Streaming`]), a subscriber reads a largest frame
    /// at a time, as a raw pipe reader reads a message a read. One that
    /// drains the FIFO in bulk finds it empty again at once and sleeps,
    /// and then the publisher's every write pays for waking it (lossless,
    /// bulk: 1.29 M msg/s against 1.41 a frame at a time, medians of nine
    /// alternated runs of a 64-byte stream between two processes of a
    /// throwaway program, 2026-12-06). An overwrite subscriber read in bulk
    /// until 2026-12-07, to lose less; with streaming naps, a frame at a
    /// time delivered more and, at 4 KiB, lost less too (`bench --only
    /// throughput-pipe --rounds 3`, eight runs of each alternated, 2
    /// vCPUs: 64 B 1.37 -> 1.88 M msg/s, 0.77x -> 1.06x the pipe, losing
    /// 0-6,459 -> 63-28,670 of 600,000; 4 KiB 0.46 -> 0.57 M msg/s, losing
    /// 28-66 k -> 1-14 k; four frames a read was no better than bulk).
    fn read_limit(&self) -> usize {
        if !self.stream.on {
            self.max_frame
        } else {
            usize::MAX
        }
    }

    /// Reads what the FIFO has, aiming for `need` bytes buffered (reads of
    /// at most `read_limit` more).
    fn fill(&mut self, need: usize) {
        if self.end - self.start >= need {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() < need {
            self.buf.resize(need.next_power_of_two(), 0);
        }
        if !self.mq_name.is_empty() {
            return self.fill_from_queue(need);
        }
        loop {
            let want = need
                .saturating_sub(self.end - self.start)
                .max(self.read_limit());
            let upto = self.end.saturating_add(want).min(self.buf.len());
            match rustix::io::read(&self.fd, &mut self.buf[self.end..upto]) {
                Ok(0) => {
                    self.eof = true;
                    // No writer: the start of a frame buffered here is a
                    // dead writer's, whose rest never comes (a live
                    // publisher keeps our FIFO open). Dropped, so that the
                    // next publisher's frames are not read as its rest;
                    // its message is counted lost with the others.
                    if self.cut_short() {
                        self.start = self.end;
                    }
                    return;
                }
                Ok(n) => {
                    self.eof = false;
                    self.end += n;
                    if self.end - self.start >= need || self.end == self.buf.len() {
                        return;
                    }
                }
                Err(Errno::INTR) => {}
                Err(_) => return,
            }
        }
    }

    /// `fill` from a message queue: a frame per message, each read whole.
    fn fill_from_queue(&mut self, need: usize) {
        loop {
            // A receive wants room for the queue's largest message.
            if self.buf.len() < self.end + self.max_frame {
                self.buf.resize(self.end + self.max_frame, 0);
            }
            match mq::receive(self.fd.as_fd(), &mut self.buf[self.end..]) {
                // Exactly one frame, or no message of ours: dropped whole
                // (it cannot swallow the frames after it), and said.
                Ok(n) if frame::frame_len(&self.buf[self.end..self.end + n]) != Some(n) => {
                    self.eof = false;
                    self.corrupt_message = true;
                    return;
                }
                Ok(n) => {
                    self.eof = false;
                    self.end += n;
                    if self.end - self.start >= need {
                        return;
                    }
                }
                Err(_) => {
                    self.look_for_publisher();
                    return;
                }
            }
        }
    }

    /// Message queues: what a FIFO's end of file says (the publisher
    /// gone), asked of the lease at most once per check interval.
    fn look_for_publisher(&mut self) {
        if self.looked.elapsed() >= self.check_interval {
            self.looked = Instant::now();
            self.eof = self.welcomed && self.lease_left();
        }
    }

    /// Whether a publisher ever held the lease (it writes its pid there,
    /// after taking it).
    fn lease_was_taken(&mut self) -> bool {
        let mut first = [0u8; 1];
        self.lease_file().is_some_and(|lease| {
            std::os::unix::fs::FileExt::read_at(lease, &mut first, 0).is_ok_and(|n| n == 1)
        })
    }

    /// The lease file, opened the first time it is there.
    fn lease_file(&mut self) -> Option<&std::fs::File> {
        if self.lease.is_none() {
            // Read-write: `F_OFD_GETLK` for a write lock wants a writable
            // file.
            self.lease = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.dir.join("publisher"))
                .ok();
        }
        self.lease.as_ref()
    }

    /// Whether a publisher holds the lease now.
    fn publisher_held(&mut self) -> bool {
        use std::os::fd::AsRawFd;
        let Some(lease) = self.lease_file() else {
            return false;
        };
        !matches!(
            crate::segment::procs::lock_held(lease.as_raw_fd(), 0),
            Ok(false)
        )
    }

    /// Whether a publisher was there and is gone, and nothing is left to
    /// read. (A publisher that never came is not gone: we wait for it.)
    pub fn publisher_gone(&mut self) -> bool {
        // One byte more than is buffered: a read, which finds the end of
        // the FIFO if no writer is left (and then drops the start of a
        // frame its dead writer left cut short, see `fill`).
        self.fill(self.end - self.start + 1);
        if self.start != self.end {
            return false;
        }
        self.lease_left()
    }

    /// Whether a publisher held the lease and let it go: words in it (a
    /// publisher writes its pid there once it holds it, and its last words
    /// before it lets it go), then no holder. Asked in that order: the
    /// other way round, a first publisher that took the lease and wrote in
    /// it between the two looks read as come and gone, and its subscriber
    /// said `Disconnected` before its welcome came (seen under load).
    fn lease_left(&mut self) -> bool {
        let was_taken = self.lease_was_taken();
        #[cfg(test)]
        tests::between_lease_looks();
        was_taken && !self.publisher_held()
    }

    /// Whether what is buffered is the start of a frame and no more (but
    /// something): fewer bytes than a header, or a data frame's good
    /// header and less than the frame. (Bytes that are no header are not:
    /// `next` resyncs past them.)
    fn cut_short(&self) -> bool {
        let front = &self.buf[self.start..self.end];
        !front.is_empty()
            && (front.len() < HEADER
                || Header::decode(front).is_some_and(|h| {
                    h.kind == KIND_DATA && front.len() < frame::data_frame_len(h.len as usize)
                }))
    }

    /// If the publisher is gone and nothing is left to read: how many
    /// messages it sent in all (its sequence word, see `SeqWord`).
    pub fn sent_by_gone_publisher(&mut self) -> Option<u64> {
        // A subscriber no publisher welcomed was sent nothing.
        if !self.welcomed || !self.publisher_gone() {
            return None;
        }
        let seq = super::read_small(&self.dir.join("seq"), SEQ_MAP).ok()?;
        let word = u64::from_ne_bytes(seq.get(..8)?.try_into().ok()?);
        // Still no publisher: the word is the gone one's, not a
        // successor's that took the lease meanwhile.
        (!self.publisher_held()).then_some(word)
    }

    /// A welcome not yet taken: the sequence number of the next message.
    pub fn take_welcome(&mut self) -> Option<u64> {
        self.welcome.take()
    }

    /// The next frame, left in the buffer until [`advance`](Self::advance).
    pub fn next(&mut self) -> Next {
        self.fill(HEADER);
        if core::mem::take(&mut self.corrupt_message) {
            return Next::Corrupt;
        }
        if self.end - self.start < HEADER {
            return Next::Empty;
        }
        let header = match Header::decode(&self.buf[self.start..self.end]) {
            // Longer than the topic's largest message: no frame of ours.
            Some(h) if frame::data_frame_len(h.len as usize) > self.max_frame => None,
            other => other,
        };
        let Some(header) = header else {
            self.resync();
            return Next::Corrupt;
        };
        if header.kind == KIND_WELCOME {
            self.start += HEADER;
            let first = !self.welcomed;
            self.welcomed = true;
            self.open_seq_file();
            self.goodbye = false;
            return Next::Welcome(header.seq, first);
        }
        if header.kind == KIND_GONE {
            self.start += HEADER;
            self.goodbye = true;
            return Next::Gone(header.seq);
        }
        let whole = frame::data_frame_len(header.len as usize);
        self.fill(whole);
        if self.end - self.start < whole {
            // The rest is on its way (a long frame written in parts).
            return Next::Empty;
        }
        if !frame::trailer_ok(&header, &self.buf[self.start..self.end]) {
            // Cut short by its writer, the rest another writer's: skip to
            // the next good header (inside what we took for this one).
            self.resync();
            return Next::Corrupt;
        }
        Next::Data(header)
    }

    /// The fast path of a receive: the header of message `seq` if its data
    /// frame is already read whole (from a read that took several) and
    /// nothing else is pending (a kept error, a corrupt queue message).
    /// Anything else, a welcome, a goodbye, another sequence number, a
    /// frame not all here, is left to [`next`](Self::next). Reads nothing
    /// from the FIFO; the frame stays at the front until
    /// [`advance`](Self::advance).
    #[inline]
    pub fn buffered(&self, seq: u64) -> Option<Header> {
        if self.stashed.is_some() || self.corrupt_message {
            return None;
        }
        let front = self.buf.get(self.start..self.end)?;
        let header = Header::decode(front)?;
        let whole = frame::data_frame_len(header.len as usize);
        (header.kind == KIND_DATA
            && header.seq == seq
            && whole <= self.max_frame
            && whole <= front.len()
            && frame::trailer_ok(&header, front))
        .then_some(header)
    }

    /// Skips to the next good header: in what is buffered, then in what
    /// the FIFO holds now (read a frame at a time, see `fill`), so that a
    /// run of bad bytes is one corruption, not one per read. Gives up (to
    /// be reported again) after a MiB.
    fn resync(&mut self) {
        let mut at = self.start + 1;
        let mut skipped = 0usize;
        loop {
            while at + HEADER <= self.end {
                if Header::decode(&self.buf[at..self.end]).is_some() {
                    self.start = at;
                    return;
                }
                at += 1;
            }
            // Keeps the last bytes, which may begin a header.
            skipped += at.min(self.end) - self.start;
            self.start = at.min(self.end);
            let have = self.end - self.start;
            // (A queue's messages are whole frames or dropped whole.)
            if !self.mq_name.is_empty() || skipped >= 1 << 20 {
                return;
            }
            self.fill(have + HEADER);
            if self.end - self.start == have {
                return; // nothing more now
            }
            at = self.start;
        }
    }

    /// The payload of the frame [`next`](Self::next) returned.
    pub fn payload(&self, header: &Header) -> &[u8] {
        &self.buf[self.start + HEADER..self.start + HEADER + header.len as usize]
    }

    /// Moves past the frame [`next`](Self::next) returned.
    pub fn advance(&mut self, header: &Header) {
        self.start += frame::data_frame_len(header.len as usize);
        self.stream.took(frame::data_frame_len(header.len as usize));
    }

    /// Copies the payload of the frame `next` returned into an aligned
    /// buffer of ours and moves past it: a pointer to its first byte.
    pub fn lend(&mut self, header: &Header) -> core::ptr::NonNull<u8> {
        let len = header.len as usize;
        self.lent.clear();
        self.lent.resize(len.div_ceil(16).max(1), 0);
        let payload = &self.buf[self.start + HEADER..self.start + HEADER + len];
        zerocopy::IntoBytes::as_mut_bytes(&mut self.lent[..])[..len].copy_from_slice(payload);
        self.advance(header);
        core::ptr::NonNull::from(&mut self.lent[0]).cast()
    }

    /// Waits until the FIFO may have something, `deadline` passes (false)
    /// or one check interval passes.
    pub fn wait(&mut self, deadline: Option<Instant>) -> bool {
        let Some(span) = wait_span(deadline, self.check_interval) else {
            return false;
        };
        if !self.mq_name.is_empty() {
            // At most the span (a queue has no end of file to wake us when
            // the publisher dies): without a deadline asleep in the receive
            // itself, as a raw queue's reader is (see
            // `mq::receive_within`); with one, in a poll, on the monotonic
            // clock as the deadline is.
            let woke = if deadline.is_none() && self.end == self.start {
                self.start = 0;
                self.end = 0;
                if self.buf.len() < self.max_frame {
                    self.buf.resize(self.max_frame, 0);
                }
                match mq::receive_within(self.fd_block.as_fd(), &mut self.buf[..], Some(span)) {
                    Ok(n) if frame::frame_len(&self.buf[..n]) == Some(n) => {
                        self.end = n;
                        true
                    }
                    Ok(_) => {
                        self.corrupt_message = true;
                        true
                    }
                    Err(_) => false,
                }
            } else {
                poll_one(self.fd.as_fd(), PollFlags::IN, span)
            };
            if woke {
                self.eof = false;
            } else {
                self.look_for_publisher();
            }
        } else if self.eof {
            // No writer: poll would say "hang up" at once. Look again soon.
            std::thread::sleep(span.min(Duration::from_millis(1)));
            self.eof = false;
        } else if deadline.is_none() && self.end == self.start && self.stream.nap_now() {
            std::thread::sleep(STREAM_NAP);
        } else if deadline.is_none() && self.end == self.start {
            // No deadline: sleep in a read of the blocking descriptor, as a
            // plain pipe reader does (one system call a message, where a
            // poll and a read make two). Its end of file (the publisher
            // gone) wakes it too, so no liveness check needs a timeout.
            self.start = 0;
            self.end = 0;
            loop {
                // As `fill` reads.
                let upto = self.read_limit().min(self.buf.len());
                match rustix::io::read(&self.fd_block, &mut self.buf[..upto]) {
                    Ok(0) => self.eof = true,
                    Ok(n) => self.end = n,
                    Err(Errno::INTR) => continue,
                    Err(_) => {}
                }
                break;
            }
        } else {
            poll_one(self.fd.as_fd(), PollFlags::IN, span);
        }
        true
    }

    /// Before a wait without a deadline that sleeps at once (`Block`):
    /// with nothing buffered, sleeps in a read straight away (one system
    /// call a message, as a raw pipe reader makes, where a look that finds
    /// nothing and then a sleep make two). True if it did. Not after a
    /// goodbye or an end of file, which the paced checks must see first (a
    /// forked child may keep a FIFO open after its publisher said goodbye),
    /// nor before a welcome.
    pub fn read_blocking_first(&mut self) -> bool {
        if self.end != self.start
            || self.eof
            || self.goodbye
            || !self.welcomed
            || self.stashed.is_some()
        {
            return false;
        }
        self.wait(None)
    }

    /// Keeps `err` (a loss or corrupt frame found by a select's look) for
    /// the subscriber's next receive.
    pub fn stash(&mut self, err: crate::error::RecvError) {
        self.stashed = Some(err);
    }

    /// The error kept by [`stash`](Self::stash).
    pub fn unstash(&mut self) -> Option<crate::error::RecvError> {
        self.stashed.take()
    }

    /// Whether a whole message (or a kept error) is at the front of what
    /// was read.
    pub fn message_buffered(&self) -> bool {
        if self.stashed.is_some() {
            return true;
        }
        let front = &self.buf[self.start..self.end];
        Header::decode(front).is_some_and(|h| {
            h.kind == KIND_DATA && front.len() >= frame::data_frame_len(h.len as usize)
        })
    }

    /// Whether the publisher said goodbye (and no other welcomed us since).
    pub fn said_goodbye(&self) -> bool {
        self.goodbye
    }

    /// Whether the last read found the end of the FIFO (no writer).
    pub fn hung_up(&self) -> bool {
        self.eof
    }

    /// Whether a read may find something: buffered bytes, or on a queue a
    /// `poll` that says so. Never a `poll` on a FIFO, which would make
    /// every later write into it take the wake-up path (see `RoomWait`):
    /// whether the publisher's sequence word (moved before each send's
    /// writes) or its count of writes (see [`SeqWord::written`], moved
    /// after them) moved since the last look, read from the `seq` file (a
    /// read of the page cache: it takes no lock of the pipe's, as a read of
    /// the FIFO does, and unlike a mapping of the file, a file cut short
    /// under us cannot raise SIGBUS); before a publisher made the file, or
    /// if it is cut short, whether the FIFO holds bytes (`FIONREAD`, which
    /// takes the pipe's lock). A frame written after one look moves the
    /// count after it is in the FIFO, so a later look finds it; what comes
    /// without a move (the end of file) the callers read anyway at every
    /// 64th look (see [`Pacing`]).
    pub fn readable(&self) -> bool {
        if self.end > self.start {
            return true;
        }
        if !self.mq_name.is_empty() {
            return poll_one(self.fd.as_fd(), PollFlags::IN, Duration::ZERO);
        }
        // The sequence word and the count, at 0 and `WRITTEN_AT`.
        let mut words = [0u8; WRITTEN_AT as usize + 8];
        let moved = self.seq_file.as_ref().and_then(|file| {
            let n = rustix::io::pread(file, &mut words, 0).ok()?;
            let word =
                |at: usize| u64::from_ne_bytes(words[at..at + 8].try_into().unwrap_or_default());
            // Both: the sequence word moves before the writes (a read then
            // often takes the frame the moment the writer lets the pipe
            // go), the count after them (so nothing written is missed).
            let both = word(0) ^ word(WRITTEN_AT as usize).rotate_left(32);
            (n == words.len()).then(|| {
                self.words_seen
                    .swap(both, std::sync::atomic::Ordering::Relaxed)
                    != both
            })
        });
        moved.unwrap_or_else(|| rustix::io::ioctl_fionread(&self.fd).map_or(true, |n| n > 0))
    }

    /// On a FIFO, opens the topic's `seq` file (read-only) if not yet open
    /// and a publisher made it (see [`PipeRx::readable`]).
    fn open_seq_file(&mut self) {
        use std::os::unix::fs::OpenOptionsExt;
        if self.seq_file.is_some() || !self.mq_name.is_empty() {
            return;
        }
        self.seq_file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(self.dir.join("seq"))
            .ok()
            .filter(|file| file.metadata().is_ok_and(|m| m.file_type().is_file()));
    }

    /// Whether bytes of a frame are buffered or in the FIFO (or queue).
    pub fn ready(&self) -> bool {
        if self.end > self.start {
            return true;
        }
        if self.mq_name.is_empty() {
            rustix::io::ioctl_fionread(&self.fd).is_ok_and(|n| n > 0)
        } else {
            mq::depth(self.fd.as_fd()) > 0
        }
    }

    /// The FIFO, readable when a frame comes (or the publisher goes).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Whether its frames come in a message queue (which says nothing when
    /// its publisher dies, as a FIFO's end of file does).
    pub fn is_mq(&self) -> bool {
        !self.mq_name.is_empty()
    }

    /// Whether this subscriber gates a lossless publisher.
    pub fn gates(&self) -> bool {
        self.gates
    }

    /// The bus.
    pub fn bus(&self) -> &Arc<PipeBus> {
        &self.bus
    }

    /// Reads every frame there is and keeps only the newest message, at
    /// the front: its sequence number, if there was one.
    pub fn skip_to_newest(&mut self) -> Option<u64> {
        let mut newest: Option<Vec<u8>> = None;
        loop {
            match self.next() {
                Next::Data(header) => {
                    let whole = frame::data_frame_len(header.len as usize);
                    newest = Some(self.buf[self.start..self.start + whole].to_vec());
                    self.advance(&header);
                }
                Next::Welcome(..) | Next::Gone(_) | Next::Corrupt => {}
                Next::Empty => break,
            }
        }
        let newest = newest?;
        // Put it back in front of whatever part of a frame is buffered.
        let rest = self.buf[self.start..self.end].to_vec();
        self.buf.clear();
        self.buf.extend_from_slice(&newest);
        self.buf.extend_from_slice(&rest);
        let len = self.buf.len();
        self.buf.resize(len.max(64 << 10), 0);
        self.start = 0;
        self.end = len;
        Header::decode(&newest).map(|h| h.seq)
    }
}

impl Drop for PipeRx {
    fn drop(&mut self) {
        if !self.record.in_own_process() {
            return; // a copy inherited through fork(): the FIFO is the parent's
        }
        if self.mq_name.is_empty() {
            let _ = std::fs::remove_file(
                self.dir
                    .join(format!("sub-{}.fifo", self.record.id("sub-"))),
            );
        } else {
            mq::unlink(&self.mq_name);
        }
    }
}

/// Which end of a work queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Producer,
    Consumer,
}

impl Role {
    fn prefix(self) -> &'static str {
        match self {
            Role::Producer => "prod-",
            Role::Consumer => "cons-",
        }
    }
}

/// A work-queue producer or consumer on pipes.
pub(crate) struct PipeQueue {
    bus: Arc<PipeBus>,
    dir: PathBuf,
    _record: Record,
    fd: OwnedFd,
    frame_len: usize,
    frame: Vec<u8>,
    /// Aligned buffer for a message read in place (`pop_ref`) or loaned.
    held: Vec<u128>,
    /// A producer's count of its messages (the `pos` of what it pushes).
    pushed: u64,
    /// A message popped and given back (`unpop`): its length and `pos`.
    kept: Option<(usize, u64)>,
    check_interval: Duration,
    /// The frames go into a message queue (one message each, unpadded),
    /// not a FIFO.
    mq: bool,
}

/// What a push could not do.
pub(crate) enum QueueBlocked {
    Full,
    /// No consumer is attached and the bus was removed: none ever can be.
    Abandoned,
}

impl PipeQueue {
    /// The largest message a pipe work queue takes: a frame fits in
    /// `PIPE_BUF`.
    pub const MAX_MESSAGE: usize = PIPE_BUF - HEADER;

    /// The largest message a work queue on `carrier` takes (a message
    /// queue's: this system's `fs.mqueue.msgsize_max` less the header;
    /// a process with `CAP_SYS_RESOURCE` may make larger ones).
    pub fn max_message_on(carrier: Carrier) -> usize {
        match carrier {
            Carrier::Fifo => Self::MAX_MESSAGE,
            // Header and the trailer of a frame over `WHOLE_UP_TO`.
            Carrier::Mq => mq::msgsize_max().saturating_sub(HEADER + 8).max(1),
        }
    }

    /// Whether a work queue on FIFOs can carry messages of `slot` bytes:
    /// a fixed slot's frame must fit `PIPE_BUF` (a variable-size queue's
    /// messages are capped at that instead).
    pub fn check_slot(topic: &str, slot: usize, variable: bool) -> Result<(), Error> {
        if slot <= Self::MAX_MESSAGE || variable {
            return Ok(());
        }
        Err(Error::InvalidOptions {
            topic: topic.to_owned(),
            why: format!(
                "a work queue on pipes takes messages of up to {} bytes (a frame must fit \
                 PIPE_BUF, {PIPE_BUF} bytes, to be written and read whole by one process); \
                 this one's slots are {slot}: use a smaller slot_size (or type), a \
                 variable-size queue (its messages are then capped at that), or shared memory",
                Self::MAX_MESSAGE
            ),
        })
    }

    /// The length of a work queue's frames for messages of up to `slot`
    /// bytes: on a FIFO every frame is padded to it (so a read takes
    /// exactly one); on a message queue it is the largest message. A
    /// variable-size queue's messages are capped at what a frame carries
    /// there; on message queues a fixed slot over the limit is tried (a
    /// privileged process may make it) and the error names it.
    pub fn frame_len_on(carrier: Carrier, slot: usize, variable: bool) -> usize {
        let slot = if variable {
            slot.min(Self::max_message_on(carrier))
        } else {
            slot
        };
        match carrier {
            Carrier::Mq => frame::data_frame_len(slot).next_multiple_of(8),
            Carrier::Fifo => (HEADER + slot).next_multiple_of(8),
        }
    }

    /// Attaches to work-queue topic `topic` as `role`; at most `max` of
    /// that role may be attached at once. A variable-size queue's messages
    /// are capped at [`MAX_MESSAGE`](Self::MAX_MESSAGE) bytes on pipes; a
    /// fixed slot over it is refused.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        bus: Arc<PipeBus>,
        topic: &str,
        role: Role,
        slot: usize,
        variable: bool,
        capacity: usize,
        max: u32,
        check_interval: Duration,
    ) -> Result<Self, Error> {
        let mq = bus.carrier == Carrier::Mq;
        if !mq {
            Self::check_slot(topic, slot, variable)?;
        }
        ignore_sigpipe();
        let dir = bus.topic_dir(topic);
        let record = {
            let _lock = bus.lock()?;
            let live = PipeBus::live_records(&dir, role.prefix());
            if live >= max as usize {
                return Err(Error::TooManyWorkers {
                    topic: topic.to_owned(),
                    role: match role {
                        Role::Producer => "producer",
                        Role::Consumer => "consumer",
                    },
                    max,
                });
            }
            let record = Record::create(
                &bus,
                &dir,
                role.prefix(),
                &format!("pid={}\n", std::process::id()),
            )?;
            if role == Role::Producer {
                // After its record is there (locked, renamed into place):
                // a consumer that sees the mark and no live producer knows
                // that every producer went, where the mark first let one
                // waiting since before any producer see "disconnected" in
                // the moment between the two.
                let _ = std::fs::write(dir.join("had-producer"), b"");
            }
            record
        };
        let frame_len = Self::frame_len_on(bus.carrier, slot, variable);
        let fd = if mq {
            // One queue for the topic, made by whoever comes first, that
            // keeps its messages until the bus is removed.
            let name = bus.mq_name(topic, None);
            let capacity = mq::queue_len(capacity, variable);
            let fd = bus.make_queue(&name, topic, mq::Access::ReadWrite, capacity, frame_len)?;
            match mq::attr(fd.as_fd()) {
                // A fixed topic's queue holds exactly its capacity (a
                // variable one's depth follows `msg_max`, which may have
                // changed since it was made).
                Ok((most, _, _)) if !variable && most != capacity => {
                    return Err(Error::Corrupt {
                        bus: bus.bus.clone(),
                        what: format!(
                            "the message queue {name} holds {most} messages, not the {capacity} \
                             of this topic's capacity: a queue left by another bus of this name"
                        ),
                    })
                }
                Ok((_, size, _)) if size == frame_len => {}
                Ok((_, size, _)) => {
                    return Err(Error::Corrupt {
                        bus: bus.bus.clone(),
                        what: format!(
                            "the message queue {name} takes messages of {size} bytes, not the \
                             {frame_len} this topic's frames are: a queue left by another bus of \
                             this name"
                        ),
                    })
                }
                Err(e) => {
                    return Err(super::io_error_at(
                        &bus.bus,
                        "reading a queue's size",
                        &name,
                        io(e),
                    ))
                }
            }
            fd
        } else {
            let path = dir.join("queue");
            bus.mkfifo(&path)?;
            let fd = open_fifo_read(&path, OFlags::RDWR | OFlags::NONBLOCK).map_err(|e| {
                super::io_error_at(&bus.bus, "opening a work queue FIFO", &path, io(e))
            })?;
            size_pipe(fd.as_fd(), capacity.saturating_mul(frame_len));
            fd
        };
        Ok(PipeQueue {
            bus,
            dir,
            _record: record,
            fd,
            frame_len,
            frame: Vec::with_capacity(frame_len),
            held: vec![0; frame_len.div_ceil(16)],
            pushed: 0,
            kept: None,
            check_interval,
            mq,
        })
    }

    /// The bus.
    pub fn bus(&self) -> &Arc<PipeBus> {
        &self.bus
    }

    /// The longest message this queue's frames carry.
    pub fn max_message(&self) -> usize {
        let most = self.frame_len - HEADER;
        if self.mq && most > frame::WHOLE_UP_TO {
            // Such a frame ends with an 8-byte trailer.
            (most - 8).max(frame::WHOLE_UP_TO)
        } else {
            most
        }
    }

    /// Live consumers attached.
    pub fn consumers(&self) -> usize {
        PipeBus::live_records(&self.dir, Role::Consumer.prefix())
    }

    /// Whether no consumer can ever take a message: none attached, and
    /// the bus was removed.
    pub fn is_abandoned(&self) -> bool {
        self.consumers() == 0 && !self.dir.exists()
    }

    /// Pushes `payload`, waiting for room until `deadline` if `wait`.
    pub fn push(
        &mut self,
        payload: &[u8],
        wait: bool,
        deadline: Option<Instant>,
    ) -> Result<(), QueueBlocked> {
        let pad_to = self.pad_to();
        frame::encode_into(
            &mut self.frame,
            KIND_DATA,
            self.pushed,
            None,
            payload,
            pad_to,
        );
        self.write_frame(wait, deadline)
    }

    /// How long a frame is made: a FIFO's are all one size (so a read
    /// takes exactly one); a queue keeps each message's bounds.
    fn pad_to(&self) -> usize {
        if self.mq {
            0
        } else {
            self.frame_len
        }
    }

    /// Writes the frame encoded in `frame`, waiting for room until
    /// `deadline` if `wait` (and looking whether the queue was abandoned
    /// once per check interval while it waits: no clock read otherwise).
    fn write_frame(&mut self, wait: bool, deadline: Option<Instant>) -> Result<(), QueueBlocked> {
        self.until_room(wait, deadline, |queue| {
            let wrote = if queue.mq {
                mq::send(queue.fd.as_fd(), &queue.frame).map(|()| queue.frame.len())
            } else {
                loop {
                    match rustix::io::write(&queue.fd, &queue.frame) {
                        Err(Errno::INTR) => {}
                        other => break other,
                    }
                }
            };
            match wrote {
                Ok(n) if n == queue.frame.len() => {
                    queue.pushed += 1;
                    Ok(true)
                }
                // A write of at most PIPE_BUF is all or nothing; anything
                // else is a pipe that is not ours.
                Ok(_) | Err(Errno::AGAIN) => Ok(false),
                Err(_) => Err(QueueBlocked::Abandoned),
            }
        })
    }

    /// Waits, as a push waits for room, until a frame may be written: a
    /// loan's room, looked for before it is written as a loan in shared
    /// memory claims its slot first (so that `try_loan` says `Full` and
    /// `loan_timeout` times out where a push would). A queue says so
    /// exactly; a FIFO once it has a free page (`poll`), which may be a
    /// page later than a push would find room (its FIFO holds at least
    /// sixteen). Another producer may still fill it before the commit,
    /// which then waits (see [`commit_loan`](Self::commit_loan)).
    pub fn wait_room(&mut self, wait: bool, deadline: Option<Instant>) -> Result<(), QueueBlocked> {
        self.until_room(wait, deadline, |queue| {
            Ok(poll_one(queue.fd.as_fd(), PollFlags::OUT, Duration::ZERO))
        })
    }

    /// Calls `attempt` until it says done (`Ok(true)`), waiting in `poll`
    /// for room between attempts until `deadline` if `wait`, and looking
    /// whether the queue was abandoned once per check interval.
    fn until_room(
        &mut self,
        wait: bool,
        deadline: Option<Instant>,
        mut attempt: impl FnMut(&mut Self) -> Result<bool, QueueBlocked>,
    ) -> Result<(), QueueBlocked> {
        let mut checked: Option<Instant> = None;
        loop {
            if attempt(self)? {
                return Ok(());
            }
            let since = *checked.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.check_interval {
                checked = Some(Instant::now());
                if self.is_abandoned() {
                    return Err(QueueBlocked::Abandoned);
                }
            }
            if !wait {
                return Err(QueueBlocked::Full);
            }
            let Some(span) = wait_span(deadline, self.check_interval) else {
                return Err(QueueBlocked::Full);
            };
            poll_one(self.fd.as_fd(), PollFlags::OUT, span);
        }
    }

    /// The aligned buffer a loan writes into: `len` bytes.
    pub fn loan_buf(&mut self, len: usize) -> *mut u8 {
        self.held.resize(len.div_ceil(16).max(1), 0);
        self.held.as_mut_ptr().cast()
    }

    /// Pushes what was written into the loan buffer. The loan was lent
    /// once there was room ([`wait_room`](Self::wait_room)); if another
    /// producer took it meanwhile, waits for room while a consumer lives
    /// to make it (a loan's commit cannot fail). False if it was dropped:
    /// no consumer left.
    pub fn commit_loan(&mut self, len: usize) -> bool {
        let pad_to = self.pad_to();
        frame::encode_into(
            &mut self.frame,
            KIND_DATA,
            self.pushed,
            None,
            &zerocopy::IntoBytes::as_bytes(&self.held[..])[..len],
            pad_to,
        );
        loop {
            match self.write_frame(true, Some(Instant::now() + self.check_interval)) {
                Ok(()) => return true,
                Err(QueueBlocked::Abandoned) => return false,
                Err(QueueBlocked::Full) if self.consumers() == 0 => return false,
                Err(QueueBlocked::Full) => {}
            }
        }
    }

    /// Pops one message into our aligned buffer (see [`held`](Self::held)),
    /// or gives back the one [`unpop`](Self::unpop) kept.
    /// `Ok(Some((len, pos)))`, `Ok(None)` if empty, `Err(pos)` for a frame
    /// that is corrupt.
    pub fn pop(&mut self) -> Result<Option<(usize, u64)>, u64> {
        if let Some(kept) = self.kept.take() {
            return Ok(Some(kept));
        }
        self.frame.resize(self.frame_len, 0);
        let n = if self.mq {
            match mq::receive(self.fd.as_fd(), &mut self.frame[..]) {
                Ok(n) => n,
                Err(_) => return Ok(None),
            }
        } else {
            loop {
                match rustix::io::read(&self.fd, &mut self.frame[..]) {
                    Ok(n) => break n,
                    Err(Errno::INTR) => {}
                    Err(_) => return Ok(None),
                }
            }
        };
        if n == 0 {
            return Ok(None);
        }
        // A FIFO's frames are all one length; a queue's are as written
        // (with a trailer past `WHOLE_UP_TO`).
        let whole = |h: &Header| {
            if self.mq {
                frame::data_frame_len(h.len as usize) == n && frame::trailer_ok(h, &self.frame[..n])
            } else {
                n == self.frame_len && HEADER + h.len as usize <= n
            }
        };
        let header = match Header::decode(&self.frame[..n]) {
            Some(h) if h.kind == KIND_DATA && whole(&h) => h,
            h => {
                if !self.mq && n == self.frame_len {
                    self.realign();
                }
                return Err(h.map_or(0, |h| h.seq));
            }
        };
        self.hold(&header);
        Ok(Some((header.len as usize, header.seq)))
    }

    /// Copies the payload of the frame in `frame` (with `header`) into our
    /// aligned buffer.
    fn hold(&mut self, header: &Header) {
        let len = header.len as usize;
        self.held.resize(len.div_ceil(16).max(1), 0);
        zerocopy::IntoBytes::as_mut_bytes(&mut self.held[..])[..len]
            .copy_from_slice(&self.frame[HEADER..HEADER + len]);
    }

    /// After a FIFO read of a frame's length that was no frame: bytes not
    /// of a frame were written into the FIFO (by something not shmbus), so
    /// each read of a frame's length straddles two frames. Finds where a
    /// frame begins in what was read (a whole good header), and reads the
    /// rest of that frame, which puts the reads after it in step again.
    /// Its message is kept for the next `pop` only if all of it came in
    /// the read that held its header, and the rest is its zero padding:
    /// with other consumers reading meanwhile, the rest may be another
    /// frame's bytes, and a message is never handed over with a tail not
    /// its own (the payload has no checksum). Best effort otherwise: a
    /// later corrupt read tries again.
    fn realign(&mut self) {
        let n = self.frame_len;
        let Some(at) = (1..n.saturating_sub(HEADER) + 1).find(|&at| {
            Header::decode(&self.frame[at..n])
                .is_some_and(|h| h.kind == KIND_DATA && HEADER + h.len as usize <= n)
        }) else {
            return; // no whole header here: the next read looks again
        };
        // The frame's first `n - at` bytes to the front, then its rest.
        self.frame.copy_within(at..n, 0);
        let mut got = n - at;
        while got < n {
            match rustix::io::read(&self.fd, &mut self.frame[got..n]) {
                Ok(0) => return,
                Ok(k) => got += k,
                Err(Errno::INTR) => {}
                Err(_) => return,
            }
        }
        let Some(header) = Header::decode(&self.frame[..n]) else {
            return;
        };
        let end = HEADER + header.len as usize;
        if end <= n - at && self.frame[end..n].iter().all(|&b| b == 0) {
            self.hold(&header);
            self.kept = Some((header.len as usize, header.seq));
        }
    }

    /// Keeps the message just popped for the next `pop` (a caller whose
    /// buffer was too small for it).
    pub fn unpop(&mut self, len: usize, pos: u64) {
        self.kept = Some((len, pos));
    }

    /// The bytes of the message the last `pop` read.
    pub fn held_bytes(&self, len: usize) -> &[u8] {
        &zerocopy::IntoBytes::as_bytes(&self.held[..])[..len]
    }

    /// The message the last `pop(None)` read: its first byte.
    pub fn held(&mut self) -> core::ptr::NonNull<u8> {
        core::ptr::NonNull::from(&mut self.held[0]).cast()
    }

    /// Waits until the FIFO may have a message, `deadline` passes (false)
    /// or one check interval passes.
    pub fn wait_readable(&self, deadline: Option<Instant>) -> bool {
        let Some(span) = wait_span(deadline, self.check_interval) else {
            return false;
        };
        poll_one(self.fd.as_fd(), PollFlags::IN, span);
        true
    }

    /// Whether a producer attached once, none is live now, and the queue
    /// is empty.
    pub fn disconnected(&self) -> bool {
        self.dir.join("had-producer").exists()
            && PipeBus::live_records(&self.dir, Role::Producer.prefix()) == 0
            && !self.ready()
    }

    /// Whether a message is there to pop.
    pub fn ready(&self) -> bool {
        self.kept.is_some() || self.queued()
    }

    /// Whether bytes are in the FIFO (or messages in the queue).
    fn queued(&self) -> bool {
        if self.mq {
            mq::depth(self.fd.as_fd()) > 0
        } else {
            rustix::io::ioctl_fionread(&self.fd).is_ok_and(|n| n > 0)
        }
    }

    /// The FIFO, readable when a message is there.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Whether a pop would find something, by a `poll` (which does not
    /// take the pipe's lock as a read does).
    pub fn readable(&self) -> bool {
        self.kept.is_some() || poll_one(self.fd.as_fd(), PollFlags::IN, Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// How long [`PipeRx::lease_left`] pauses between its two looks, in
    /// microseconds (0: not at all), as a subscriber preempted there would.
    static LEASE_LOOK_PAUSE_US: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    pub(super) fn between_lease_looks() {
        let us = LEASE_LOOK_PAUSE_US.load(std::sync::atomic::Ordering::Relaxed);
        if us > 0 {
            std::thread::sleep(Duration::from_micros(us));
        }
    }

    /// Removes a test bus's directory however the test ends.
    struct Cleanup(std::path::PathBuf);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A directory of this test's own for pipe buses (`tag` and this
    /// process's pid), removed when the guard drops.
    fn temp_root(tag: &str) -> (Cleanup, std::path::PathBuf) {
        let root = std::env::temp_dir().join(format!("shmbus-unit-{tag}-{}", std::process::id()));
        (Cleanup(root.clone()), root)
    }

    /// Bus `name` on pipes in `root`.
    fn pipe_bus(root: &std::path::Path, name: &str) -> crate::Bus {
        crate::Bus::builder(name)
            .transport(crate::Transport::Pipe)
            .dir(root)
            .open()
            .unwrap()
    }

    /// Wake-ups of publishers' threads while they wait for room (a
    /// sender's nap, a pass of the helper's loop), by topic directory.
    static WAKEUPS: std::sync::Mutex<Vec<(std::path::PathBuf, u64)>> =
        std::sync::Mutex::new(Vec::new());

    pub(super) fn note_wakeup(dir: &std::path::Path) {
        let mut all = WAKEUPS.lock().unwrap_or_else(|e| e.into_inner());
        match all.iter_mut().find(|(d, _)| d == dir) {
            Some((_, n)) => *n += 1,
            None => all.push((dir.to_owned(), 1)),
        }
    }

    fn wakeups(dir: &std::path::Path) -> u64 {
        let all = WAKEUPS.lock().unwrap_or_else(|e| e.into_inner());
        all.iter().find(|(d, _)| d == dir).map_or(0, |(_, n)| *n)
    }

    /// The FIFOs this process polled, by the paths they had then (by
    /// identity, a FIFO of another test that was polled and removed gave
    /// its inode number to a FIFO made later), noted by [`poll`].
    static POLLED_FIFOS: std::sync::Mutex<Vec<std::path::PathBuf>> =
        std::sync::Mutex::new(Vec::new());

    pub(super) fn note_polled(fds: &[PollFd<'_>]) {
        for fd in fds {
            let fifo = rustix::fs::fstat(fd).is_ok_and(|stat| {
                rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Fifo
            });
            if !fifo {
                continue;
            }
            // (The calling thread's table: the helper's may be its own.)
            let link = format!("/proc/thread-self/fd/{}", fd.as_fd().as_raw_fd());
            if let Ok(path) = std::fs::read_link(link) {
                POLLED_FIFOS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(path);
            }
        }
    }

    /// The subscribers' FIFOs in the topics of the bus in `bus_dir`: their
    /// names and paths.
    fn sub_fifos(bus_dir: &std::path::Path) -> Vec<(String, std::path::PathBuf)> {
        use std::os::unix::fs::FileTypeExt;
        let topics = std::fs::read_dir(bus_dir).unwrap().flatten();
        let files = topics
            .filter(|t| t.path().is_dir())
            .flat_map(|t| std::fs::read_dir(t.path()).unwrap().flatten());
        let mut fifos = Vec::new();
        for entry in files {
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = entry.metadata().unwrap();
            if name.starts_with("sub-") && meta.file_type().is_fifo() {
                fifos.push((name, std::fs::canonicalize(entry.path()).unwrap()));
            }
        }
        fifos
    }

    /// A lossless pipe topic of `size`-byte messages whose FIFOs hold 64
    /// KiB: a subscriber made before the publisher that spins, and one
    /// that joins it late and starts reading late, so that the publisher
    /// keeps frames for it (its welcome and the messages its full FIFO
    /// cannot take) and waits for room. Both get all 3000 messages in
    /// order. Returns the subscribers' FIFOs that were polled.
    fn stream_to_a_late_reader(size: usize) -> Vec<String> {
        use crate::{RecvError, StartAt, WaitStrategy};
        let (_cleanup, root) = temp_root(&format!("nopoll-{size}"));
        let bus = pipe_bus(&root, "nopoll");
        let topic = || {
            bus.topic("t")
                .capacity(16)
                .slot_size(size as u32)
                .lossless(4)
        };
        const COUNT: u64 = 3000;
        let receive_all = move |mut rx: crate::Subscriber<crate::Bytes>| {
            let mut next = 0u64;
            while next < COUNT {
                match rx.recv_bytes() {
                    Ok(msg) => {
                        assert_eq!(msg.len(), size);
                        assert_eq!(msg[..8], next.to_le_bytes(), "in order, none lost");
                        next += 1;
                    }
                    Err(RecvError::Disconnected) => panic!("disconnected at {next}"),
                    Err(e) => panic!("{e} at {next}"),
                }
            }
        };
        let early = topic().wait(WaitStrategy::Spin).subscriber_bytes().unwrap();
        let spinning = std::thread::spawn(move || receive_all(early));
        // The spinning subscriber looks for frames before there is a
        // publisher, and after.
        std::thread::sleep(Duration::from_millis(20));
        let mut tx = topic().publisher_bytes().unwrap();
        let mut msg = vec![0u8; size];
        tx.send_bytes(&msg).unwrap();
        let late = topic()
            .start_at(StartAt::Oldest)
            .wait(WaitStrategy::Block)
            .subscriber_bytes()
            .unwrap();
        let fifos = sub_fifos(&root.join("nopoll"));
        assert_eq!(fifos.len(), 2, "both subscribers' FIFOs: {fifos:?}");
        let publishing = std::thread::spawn(move || {
            for seq in 1..COUNT {
                msg[..8].copy_from_slice(&seq.to_le_bytes());
                tx.send_bytes(&msg).unwrap();
            }
        });
        // The publisher fills the late one's FIFO and waits for room.
        std::thread::sleep(Duration::from_millis(50));
        receive_all(late);
        publishing.join().unwrap();
        spinning.join().unwrap();
        let polled = POLLED_FIFOS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        fifos
            .into_iter()
            .filter(|(_, path)| polled.contains(path))
            .map(|(name, _)| name)
            .collect()
    }

    /// A lossless subscriber that reads nothing (stopped, say) holds its
    /// publisher back: the publisher's threads wake up about 100 times a
    /// second while it waits, where the sender and the helper each napped
    /// 1 ms (about 2000 wake-ups a second between them); and the message
    /// goes through once the subscriber reads again.
    #[test]
    fn a_publisher_held_back_for_long_wakes_up_seldom() {
        use crate::WaitStrategy;
        let (_cleanup, root) = temp_root("seldom");
        let bus = pipe_bus(&root, "seldom");
        let topic = || bus.topic("t").lossless(1).wait(WaitStrategy::Block);
        let mut rx = topic().subscriber_bytes().unwrap();
        let mut tx = topic().publisher_bytes().unwrap();
        let msg = [7u8; 64];
        // Until the FIFO is full (the frames after are kept, then wait).
        let mut sent = 0u64;
        while tx.try_send_bytes(&msg).is_ok() {
            sent += 1;
        }
        let publishing = std::thread::spawn(move || {
            tx.send_bytes(&msg).unwrap();
            tx
        });
        // Past the first 100 ms of naps; then a second of waiting.
        std::thread::sleep(Duration::from_millis(300));
        let dir = root.join("seldom").join("t.t");
        let before = wakeups(&dir);
        std::thread::sleep(Duration::from_secs(1));
        let woke = wakeups(&dir) - before;
        assert!(!publishing.is_finished(), "the send waits for room");
        assert!(woke < 150, "{woke} wake-ups in a second of waiting");
        assert!(woke > 0, "the wait is seen");
        for _ in 0..=sent {
            assert_eq!(rx.recv_bytes().unwrap(), msg);
        }
        drop(publishing.join().unwrap());
    }

    /// A publisher takes the lease, then writes its pid in it (and
    /// welcomes its subscribers a while after). A subscriber that looked
    /// whether one holds it, then whether one ever did (words in it), took
    /// a first publisher that came between the two looks for one come and
    /// gone, and said `Disconnected` before its welcome. Here, bus after
    /// bus, a subscriber spins with a deadline, pausing between its two
    /// looks (as one preempted there would), while a stand-in takes the
    /// lease at some moment, writes in it, and holds it: the subscriber
    /// must time out. (In the other order it said `Disconnected` in most
    /// of the buses.)
    #[test]
    fn a_first_publisher_taking_the_lease_is_not_taken_for_one_gone() {
        use crate::{RecvTimeoutError, WaitStrategy};
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::FileExt;
        let (_cleanup, root) = temp_root("lease");
        LEASE_LOOK_PAUSE_US.store(200, std::sync::atomic::Ordering::Relaxed);
        /// No pause for other tests, however this one ends.
        struct Unpause;
        impl Drop for Unpause {
            fn drop(&mut self) {
                LEASE_LOOK_PAUSE_US.store(0, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let _unpause = Unpause;
        for i in 0..40u64 {
            let name = format!("lease{i}");
            let bus = pipe_bus(&root, &name);
            let mut rx = bus
                .topic("t")
                .wait(WaitStrategy::Spin)
                .subscriber_bytes()
                .unwrap();
            let path = root.join(&name).join("t.t").join("publisher");
            let stand_in = std::thread::spawn(move || {
                let lease = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(path)
                    .unwrap();
                // Somewhere in the subscriber's wait.
                std::thread::sleep(Duration::from_micros(i * 37 % 2000));
                let fd = lease.as_raw_fd();
                assert!(crate::segment::procs::try_lock(fd, 0, libc::F_WRLCK).unwrap());
                lease.write_at(b"1\n", 0).unwrap();
                lease
            });
            let got = rx
                .recv_bytes_timeout(Duration::from_millis(3))
                .map(|m| m.len());
            // (Held until the subscriber is done: dropped after it.)
            let lease = stand_in.join().unwrap();
            assert_eq!(got, Err(RecvTimeoutError::Timeout), "bus {i}");
            drop(rx);
            drop(lease);
        }
    }

    /// A spinning subscriber looks at the topic's `seq` file between reads
    /// (see [`PipeRx::readable`]): a file cut short under it (by a process
    /// that shares the directory) makes it look at its FIFO instead; a
    /// mapping of the file read where the file ended would raise SIGBUS.
    #[test]
    fn a_subscriber_goes_on_when_the_seq_file_is_cut_short() {
        use crate::{RecvTimeoutError, WaitStrategy};
        let (_cleanup, root) = temp_root("seqcut");
        let bus = pipe_bus(&root, "seqcut");
        for wait in [
            WaitStrategy::Spin,
            WaitStrategy::Yield,
            WaitStrategy::adaptive(),
        ] {
            let topic = || bus.topic("t").wait(wait);
            let mut rx = topic().subscriber_bytes().unwrap();
            let mut tx = topic().publisher_bytes().unwrap();
            tx.send_bytes(b"one").unwrap();
            assert_eq!(rx.recv_bytes().unwrap(), b"one");
            let seq = root.join("seqcut").join("t.t").join("seq");
            std::fs::OpenOptions::new()
                .write(true)
                .open(&seq)
                .unwrap()
                .set_len(0)
                .unwrap();
            assert_eq!(
                rx.recv_bytes_timeout(Duration::from_millis(20))
                    .map(<[u8]>::len),
                Err(RecvTimeoutError::Timeout),
                "{wait:?}"
            );
            drop(tx);
            assert_eq!(
                rx.recv_bytes_timeout(Duration::from_secs(2))
                    .map(<[u8]>::len),
                Err(RecvTimeoutError::Disconnected),
                "{wait:?}"
            );
        }
    }

    /// Once anyone polls a pipe, every later write into it takes the
    /// kernel's wake-up path (see [`RoomWait`]): with small frames, no
    /// subscriber's FIFO is ever polled, by the publisher waiting for room
    /// or by a spinning subscriber. With frames so large that the FIFO
    /// holds few, the publisher's waits poll (which shows that the test
    /// sees polls).
    #[test]
    fn no_subscriber_fifo_is_polled_unless_its_frames_are_large() {
        assert_eq!(stream_to_a_late_reader(64), Vec::<String>::new());
        assert!(!stream_to_a_late_reader(2048).is_empty());
    }

    /// A subscriber as the publisher's sender sees it, on a pipe of one
    /// page (its read end returned, and its write end, which it borrows):
    /// nothing kept yet.
    fn one_page_out() -> (Out, OwnedFd, OwnedFd) {
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::NONBLOCK).unwrap();
        rustix::pipe::fcntl_setpipe_size(&write, PIPE_BUF).unwrap();
        let out = Out {
            id: "test".into(),
            serial: 1,
            fds: [Some(write.as_raw_fd()), None],
            ident: file_identity(write.as_fd()).unwrap(),
            lossless: true,
            pending: Vec::new(),
            tail: 0,
            mq: false,
            sending: false,
        };
        (out, read, write)
    }

    /// Reads everything in the pipe.
    fn drain(read: &OwnedFd) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = rustix::io::read(read, &mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        all
    }

    /// Flushes what `out` keeps until nothing is left, draining the pipe
    /// after each flush: what each drain read.
    fn flush_all(out: &mut Out, read: &OwnedFd) -> Vec<Vec<u8>> {
        let mut drains = Vec::new();
        loop {
            let done = out.flush(Side::Sender).unwrap();
            drains.push(drain(read));
            if done {
                return drains;
            }
        }
    }

    /// Splits `bytes` into whole frames; panics on a cut one.
    fn frames_in(bytes: &[u8]) -> Vec<Header> {
        let mut at = 0;
        let mut headers = Vec::new();
        while at < bytes.len() {
            let len = frame::frame_len(&bytes[at..]).expect("a whole frame");
            let header = Header::decode(&bytes[at..]).unwrap();
            assert!(frame::trailer_ok(&header, &bytes[at..at + len]));
            headers.push(header);
            at += len;
        }
        headers
    }

    /// What a publisher keeps for a subscriber (a welcome and a history of
    /// small frames, more than its FIFO holds) goes into the FIFO in
    /// writes that stop only between frames: whatever the FIFO holds when
    /// its writer dies is whole frames. (One write of it all stopped where
    /// the page filled, 32 bytes into a frame.)
    #[test]
    fn kept_small_frames_are_written_whole_or_not_at_all() {
        let (mut out, read, _write) = one_page_out();
        let mut frame = Vec::new();
        frame::encode_into(&mut frame, KIND_WELCOME, 0, Some(100), &[], 0);
        out.pending.extend_from_slice(&frame);
        for seq in 0..100u64 {
            frame::encode_into(&mut frame, KIND_DATA, seq, None, &[seq as u8; 64], 0);
            out.pending.extend_from_slice(&frame);
        }
        let mut seqs = Vec::new();
        for got in flush_all(&mut out, &read) {
            assert!(got.len() <= PIPE_BUF);
            seqs.extend(frames_in(&got).iter().map(|h| (h.kind, h.seq)));
        }
        let mut want = vec![(KIND_WELCOME, 0)];
        want.extend((0..100).map(|seq| (KIND_DATA, seq)));
        assert_eq!(seqs, want);
    }

    /// A long frame (over `PIPE_BUF`) begun in a full FIFO: its rest goes
    /// alone, then the small frames kept after it (more than a page of
    /// them) in whole frames, so that every write after the long frame's
    /// ends between frames. (One write of the rest and the frames after it
    /// stopped where the page filled, inside a small frame.)
    #[test]
    fn the_rest_of_a_long_frame_goes_first_then_whole_frames() {
        let (mut out, read, write) = one_page_out();
        let mut long = Vec::new();
        frame::encode_into(&mut long, KIND_DATA, 7, None, &[7; 6000], 0);
        // What `TxState::send` keeps after a write that took 4096 bytes.
        let Wrote::Part(n) = write_some(write.as_fd(), &long) else {
            panic!("a one-page pipe took a whole long frame");
        };
        out.pending.extend_from_slice(&long[n..]);
        out.tail = long.len() - n;
        let mut frame = Vec::new();
        for seq in 8..58u64 {
            frame::encode_into(&mut frame, KIND_DATA, seq, None, &[seq as u8; 64], 0);
            out.pending.extend_from_slice(&frame);
        }
        let drains = flush_all(&mut out, &read);
        // The long frame: what the full pipe held, then its rest alone.
        assert_eq!(
            drains.len(),
            4,
            "{:?}",
            drains.iter().map(Vec::len).collect::<Vec<_>>()
        );
        assert_eq!([&drains[0][..], &drains[1][..]].concat(), long);
        let mut seqs = Vec::new();
        for drain in &drains[2..] {
            seqs.extend(frames_in(drain).iter().map(|h| h.seq));
        }
        assert_eq!(seqs, (8..58).collect::<Vec<_>>());
    }

    /// Drives `Streaming` as a subscriber would: `frames` frames of
    /// `bytes` each taken, then a wait `gap` after the one before.
    fn wait(
        s: &mut Streaming,
        now: &mut Instant,
        gap: Duration,
        frames: u32,
        bytes: usize,
    ) -> bool {
        for _ in 0..frames {
            s.took(bytes);
        }
        *now += gap;
        s.nap_at(*now)
    }

    #[test]
    fn a_busy_stream_naps_and_a_slow_one_blocks_again() {
        let (mut s, mut now) = (Streaming::new(64 << 10), Instant::now());
        let quick = Duration::from_micros(2);
        // The first wait has none before it to be close to.
        assert!(!wait(&mut s, &mut now, quick, 0, 0));
        // Busy waits: the eighth in a row turns naps on.
        for i in 1..BUSY_WAITS {
            assert!(!wait(&mut s, &mut now, quick, 1, 96), "wait {i}");
        }
        assert!(wait(&mut s, &mut now, quick, 1, 96));
        // Naps that gather enough go on, however long they took.
        assert!(wait(&mut s, &mut now, Duration::from_micros(100), 200, 96));
        // One that gathers little means the stream slowed: block.
        assert!(!wait(
            &mut s,
            &mut now,
            Duration::from_micros(100),
            STREAM_MIN - 1,
            96
        ));
        // A slow wait breaks a run of busy ones.
        for _ in 1..BUSY_WAITS {
            wait(&mut s, &mut now, quick, 1, 96);
        }
        assert!(!wait(&mut s, &mut now, Duration::from_millis(1), 1, 96));
        assert!(!wait(&mut s, &mut now, quick, 1, 96));
    }

    #[test]
    fn a_nap_that_fills_half_the_fifo_stops_naps_for_twice_as_many_busy_waits() {
        // 48-byte frames every 8 us: 1.2 KiB in a nap's budget, within a
        // quarter of an 8 KiB FIFO.
        let (mut s, mut now) = (Streaming::new(8192), Instant::now());
        let quick = Duration::from_micros(8);
        for _ in 0..=BUSY_WAITS {
            wait(&mut s, &mut now, quick, 1, 48);
        }
        assert!(s.on);
        // 5000 bytes gathered by a nap, of an 8 KiB FIFO: too many.
        assert!(!wait(&mut s, &mut now, Duration::from_micros(100), 50, 100));
        for i in 1..2 * BUSY_WAITS {
            assert!(!wait(&mut s, &mut now, quick, 1, 48), "wait {i}");
        }
        assert!(wait(&mut s, &mut now, quick, 1, 48));
        // A nap that gathers a sane amount goes on; the stream slowing
        // down (a nap that gathers next to nothing) resets what is asked
        // for.
        assert!(wait(&mut s, &mut now, Duration::from_micros(100), 10, 96));
        assert!(!wait(&mut s, &mut now, Duration::from_micros(100), 0, 96));
        for _ in 1..BUSY_WAITS {
            wait(&mut s, &mut now, quick, 1, 48);
        }
        assert!(wait(&mut s, &mut now, quick, 1, 48));
    }

    #[test]
    fn a_stream_that_would_fill_half_the_fifo_in_a_nap_does_not_nap() {
        // 4 KiB frames every 2 us: 2 GB/s, 200 KiB in a nap's budget,
        // against a 64 KiB FIFO.
        let (mut s, mut now) = (Streaming::new(64 << 10), Instant::now());
        let quick = Duration::from_micros(2);
        for i in 0..4 * BUSY_WAITS {
            assert!(!wait(&mut s, &mut now, quick, 1, 4096), "wait {i}");
        }
        // 768-byte frames: 37.5 KiB in a nap, just over half.
        for i in 0..4 * BUSY_WAITS {
            assert!(!wait(&mut s, &mut now, quick, 1, 768), "wait {i}");
        }
        // 576-byte frames at the same pace: 28 KiB in a nap, within.
        for _ in 0..BUSY_WAITS {
            wait(&mut s, &mut now, quick, 1, 576);
        }
        assert!(wait(&mut s, &mut now, quick, 1, 576));
    }

    #[test]
    fn an_unknown_fifo_size_never_naps() {
        let (mut s, mut now) = (Streaming::new(0), Instant::now());
        for _ in 0..4 * BUSY_WAITS {
            assert!(!wait(&mut s, &mut now, Duration::from_micros(1), 1, 96));
        }
    }
}

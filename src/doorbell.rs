//! A pollable file descriptor for a subscriber or consumer: an `eventfd`
//! that a helper thread makes readable when the handle's topic has
//! something for it.
//!
//! A futex cannot be polled, so the fd is one wake hop away from the
//! topic: the handle's owner *arms* the doorbell when a `try_` receive
//! finds nothing (it announces itself a sleeper on the topic's wake words
//! and looks once more, exactly as a blocking receive does, see
//! `crate::wait`), and a helper thread then sleeps on the futex in its
//! place and writes the eventfd when woken. So the publisher still makes
//! no system call unless someone sleeps, and no message published while
//! the doorbell is armed is missed: either the owner's last look sees it
//! (and rings at once), or the publisher sees the count and wakes the
//! helper.
//!
//! The helper also rings when its sleep times out (once per liveness
//! check interval, while nothing arrives), so that the owner's next `try_`
//! receive makes its paced checks (a dead publisher, a dead producer's
//! slot) and can say `Disconnected`.
//!
//! On a bus on pipes there are no wake words to sleep on: the helper
//! sleeps in `poll(2)` on the handle's FIFO instead (`Words::Fd`), or just
//! for the timeout where no one fd says it (a lossless publisher's room,
//! which any of its subscribers' FIFOs may hold back).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use rustix::event::{eventfd, EventfdFlags};

use crate::error::Error;
use crate::segment::views::{BroadcastView, QueueView};
use crate::wait::{self, Announced, WakeWords};

/// Which wake words of which topic a doorbell sleeps on.
#[derive(Clone)]
pub(crate) enum Words {
    /// A broadcast topic's: bumped for every message.
    Messages(BroadcastView),
    /// A work queue's "not empty" words.
    NotEmpty(QueueView),
    /// A lossless topic's "space" words: bumped when subscribers move on.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    Space(BroadcastView),
    /// A work queue's "not full" words.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    NotFull(QueueView),
    /// On pipes: a FIFO to `poll` for `events` (`None`: sleep for the
    /// timeout only), of bus `bus`.
    Fd {
        fd: Option<Arc<OwnedFd>>,
        events: rustix::event::PollFlags,
        bus: String,
    },
}

impl Words {
    /// The bus of the topic.
    fn bus(&self) -> &str {
        match self {
            Words::Messages(view) | Words::Space(view) => view.seg().bus(),
            Words::NotEmpty(view) | Words::NotFull(view) => view.seg().bus(),
            Words::Fd { bus, .. } => bus,
        }
    }

    /// The wake words, `None` on pipes.
    fn get(&self) -> Option<&WakeWords> {
        Some(match self {
            Words::Messages(view) => view.ring().ctrl().wake(),
            Words::NotEmpty(view) => view.ring().ctrl().not_empty(),
            // An overwrite topic has no gate: its publisher never waits,
            // and sleeps (never) on its message words.
            Words::Space(view) => match view.gate() {
                Some(gate) => gate.ctrl().space(),
                None => view.ring().ctrl().wake(),
            },
            Words::NotFull(view) => view.ring().ctrl().not_full(),
            Words::Fd { .. } => return None,
        })
    }
}

/// The helper thread's state.
enum State {
    /// Not armed: the fd is readable if it rang since it was last armed.
    Idle,
    /// Armed by the owner: the helper is to sleep with this ticket (none
    /// on pipes).
    Armed(Option<Announced>, Option<Duration>),
    /// The helper sleeps on the futex.
    Sleeping,
    /// The handle is gone: the helper exits.
    Stop,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// Shared with the helper so that it never writes to a closed (and
    /// perhaps reused) descriptor number.
    fd: OwnedFd,
    words: Words,
    /// On pipes: written to get the helper out of its `poll`.
    stop: OwnedFd,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere while holding it;
        // the state is a plain enum and always valid.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the fd readable.
    fn ring(&self) {
        // Fails only if the counter would overflow (it is then readable
        // anyway).
        let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
    }

    /// Makes the fd unreadable (reads the counter to zero).
    fn drain(&self) {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.fd, &mut buf);
    }
}

/// A doorbell's eventfd, open for as long as this lives.
#[cfg(feature = "tokio")]
pub(crate) struct KeptFd(Arc<Shared>);

#[cfg(feature = "tokio")]
impl KeptFd {
    /// The bus of the handle it belongs to.
    pub(crate) fn bus(&self) -> &str {
        self.0.words.bus()
    }
}

#[cfg(feature = "tokio")]
impl std::os::fd::AsRawFd for KeptFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.0.fd)
    }
}

/// A handle's doorbell: the eventfd and its helper thread.
pub(crate) struct Doorbell {
    shared: Arc<Shared>,
}

impl Doorbell {
    /// The handle's doorbell taken out of `slot` (for the caller to arm
    /// and put back), or a new one on `words()`.
    pub(crate) fn take_or_make(
        slot: &mut Option<Doorbell>,
        words: impl FnOnce() -> Words,
    ) -> Result<Self, Error> {
        match slot.take() {
            Some(bell) => Ok(bell),
            None => Doorbell::new(words()),
        }
    }

    /// Makes the eventfd and starts the helper thread, for `words`.
    pub(crate) fn new(words: Words) -> Result<Self, Error> {
        let bus = words.bus().to_owned();
        let io = |action| {
            let bus = bus.clone();
            move |source: std::io::Error| Error::Io {
                bus,
                action,
                path: None,
                source,
            }
        };
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|e| io("eventfd for a pollable handle")(e.into()))?;
        let stop = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|e| io("eventfd for a pollable handle")(e.into()))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::Idle),
            changed: Condvar::new(),
            fd,
            words,
            stop,
        });
        let helper = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("shmbus-doorbell".into())
            .spawn(move || run(&helper))
            .map_err(io("starting the doorbell thread of a pollable handle"))?;
        Ok(Doorbell { shared })
    }

    /// The eventfd.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.shared.fd.as_fd()
    }

    /// The eventfd, kept open for as long as the result lives (for a
    /// reactor registration that may outlive the handle's use of it).
    #[cfg(feature = "tokio")]
    pub(crate) fn keep_open(&self) -> KeptFd {
        KeptFd(Arc::clone(&self.shared))
    }

    /// The owner's `try_` receive found nothing: unless armed already,
    /// clears the fd, announces a sleeper on the words, and looks once more
    /// with `ready` (rings at once if it finds something); else hands the
    /// sleep to the helper, at most `timeout`.
    pub(crate) fn arm(&self, ready: impl FnOnce() -> bool, timeout: Duration) {
        let mut state = self.shared.lock();
        if !matches!(*state, State::Idle) {
            return;
        }
        self.shared.drain();
        let Some(words) = self.shared.words.get() else {
            // On pipes: the helper polls the FIFO, which says whatever
            // came after this look.
            if ready() {
                self.shared.ring();
                return;
            }
            *state = State::Armed(None, Some(timeout));
            self.shared.changed.notify_one();
            return;
        };
        let ticket = words.announce();
        let timeout = wait::announced(&[words], &[ticket], Some(timeout));
        if ready() {
            words.retire(ticket);
            self.shared.ring();
            return;
        }
        *state = State::Armed(Some(ticket), timeout);
        self.shared.changed.notify_one();
    }

    /// The handle has something to say without a message (disconnected,
    /// evicted): makes the fd readable, so that a poller calls it.
    pub(crate) fn ring(&self) {
        self.shared.ring();
    }
}

impl Drop for Doorbell {
    /// Stops the helper: at once if it waits for the owner; if it sleeps on
    /// the futex, a wake without a bump gets it out (or, if it is just
    /// going in, its timeout does, within one check interval). Not joined:
    /// it holds what it needs.
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        let words = self.shared.words.get();
        match (std::mem::replace(&mut *state, State::Stop), words) {
            (State::Armed(Some(ticket), _), Some(words)) => words.retire(ticket),
            (State::Sleeping, Some(words)) => words.nudge(),
            // On pipes: out of its poll.
            (State::Sleeping, None) => {
                let _ = rustix::io::write(&self.shared.stop, &1u64.to_ne_bytes());
            }
            _ => {}
        }
        drop(state);
        self.shared.changed.notify_one();
    }
}

/// The helper thread: sleeps for the owner whenever armed, then rings.
fn run(shared: &Shared) {
    loop {
        let (ticket, timeout) = {
            let mut state = shared.lock();
            loop {
                match std::mem::replace(&mut *state, State::Sleeping) {
                    State::Armed(ticket, timeout) => break (ticket, timeout),
                    State::Stop => return,
                    other => {
                        *state = other;
                        state = shared
                            .changed
                            .wait(state)
                            .unwrap_or_else(|e| e.into_inner());
                    }
                }
            }
        };
        match (shared.words.get(), ticket) {
            (Some(words), Some(ticket)) => {
                let _ = wait::sleep_announced(&[words], &[ticket], timeout);
                words.retire(ticket);
            }
            _ => poll_fd(shared, timeout),
        }
        let mut state = shared.lock();
        if matches!(*state, State::Stop) {
            return;
        }
        *state = State::Idle;
        shared.ring();
    }
}

/// On pipes: sleeps in `poll` on the handle's FIFO (if it has one) and the
/// stop eventfd, at most `timeout`.
fn poll_fd(shared: &Shared, timeout: Option<Duration>) {
    use rustix::event::{PollFd, PollFlags};
    let Words::Fd { fd, events, .. } = &shared.words else {
        return;
    };
    let timeout = timeout.map(|t| rustix::fs::Timespec {
        tv_sec: t.as_secs() as i64,
        tv_nsec: i64::from(t.subsec_nanos()),
    });
    let mut fds = vec![PollFd::new(&shared.stop, PollFlags::IN)];
    if let Some(fd) = fd {
        fds.push(PollFd::new(&**fd, *events));
    }
    let _ = rustix::event::poll(&mut fds, timeout.as_ref());
}

//! Waiting on several subscribers and consumers at once, in one thread.
//!
//! A [`Select`] looks at every handle it is given, returns the first that
//! has something for its owner (a message, a loss to report, a gone
//! publisher or producers, an eviction), and otherwise sleeps in the
//! kernel on all of their topics' wake words at once (`futex_waitv`, Linux
//! 5.16 and later): the wakeup protocol of `crate::wait`, announced on
//! every word before the last look, so a message published while the
//! select goes to sleep is always seen or woken for. Publishers still make
//! no system call unless someone sleeps.
//!
//! Handles are borrowed only for the call (`recv` and `pop` take `&mut`),
//! so the caller receives from the ready one right after:
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let name = format!("doc-select-{}", std::process::id());
//! use std::time::Duration;
//! use shmbus::{Bus, Select};
//! let bus = Bus::open(&name)?;
//! let mut quotes = bus.subscriber::<u64>("quotes")?;
//! let mut jobs = bus.consumer::<u64>("jobs")?;
//! bus.producer::<u64>("jobs")?.push(7)?;
//!
//! let mut sel = Select::new();
//! match sel.select_timeout(&mut [&mut quotes, &mut jobs], Duration::from_secs(1))? {
//!     0 => println!("quote {:?}", quotes.try_recv()),
//!     _ => assert_eq!(jobs.try_pop()?, 7),
//! }
//! # drop((quotes, jobs, bus)); Bus::remove(&name)?;
//! # Ok(()) }
//! ```

use std::time::{Duration, Instant};

use crate::wait::{self, Waited, Waiter, Wake, WakeWords};

pub(crate) mod sealed {
    use std::time::Duration;

    use crate::wait::{WaitStrategy, WakeWords};

    /// What a [`Select`](super::Select) needs of a handle. Not public API.
    pub trait Source {
        /// The wake words its writers bump.
        fn words(&self) -> &WakeWords;
        /// Whether a `try_` receive would return something other than
        /// "empty" now, by the cheap looks (loads only): the test made
        /// after announcing a sleep.
        fn ready_now(&self) -> bool;
        /// The paced checks a blocking receive makes now and then (a gone
        /// writer, an eviction, a dead producer's slot to recover): whether
        /// the handle's `try_` receive has something to say because of
        /// them.
        fn ready_slow(&mut self) -> bool;
        /// Its wait strategy and liveness check interval.
        fn wait_options(&self) -> (WaitStrategy, Duration);
        /// A sleep timed out: the writer may have died, so the paced
        /// checks are due at once.
        fn timed_out(&mut self);
        /// On a bus on pipes: the FIFO to `poll` (its wake words are this
        /// process's own, which no writer bumps).
        fn pipe_fd(&self) -> Option<std::os::fd::RawFd> {
            None
        }
    }
}

/// A handle a [`Select`] can wait on: a broadcast
/// [`Subscriber`](crate::Subscriber) or a work-queue
/// [`Consumer`](crate::Consumer), typed or bytes.
pub trait Selectable: sealed::Source {}

/// Waits on several subscribers and consumers (of one bus or several) in
/// one thread, without a busy loop: see the [module docs](self).
///
/// The index returned is that of a handle whose `try_recv` / `try_pop`
/// (or any receive) returns at once with a message or an error. A ready
/// work-queue consumer can still find the queue empty when another
/// consumer took the message first: call `try_pop` and select again.
/// Handles are looked at in turn from the one after the last returned, so
/// that a busy handle does not starve the others.
#[derive(Debug, Default)]
pub struct Select {
    /// Where the next look starts (fairness).
    next: usize,
}

/// Why a select returned without a ready handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// No handle to wait on: the slice was empty.
    #[error("select over no handles: pass at least one subscriber or consumer")]
    NoHandles,
    /// The timeout passed with no handle ready.
    #[error("no handle became ready before the timeout")]
    Timeout,
}

/// The longest `poll` of a select over handles on pipes beside handles in
/// shared memory.
const MIXED_POLL: Duration = Duration::from_millis(1);

/// Sleeps in `poll(2)` until one of `fds` is readable (or hung up), or
/// `timeout` passes.
fn poll_fds(fds: &[std::os::fd::RawFd], timeout: Option<Duration>) -> Wake {
    let mut polls: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.map_or(-1, |t| t.as_millis().clamp(1, i32::MAX as u128) as i32);
    // SAFETY: `polls` is a valid array of `polls.len()` pollfds that lives
    // across the call; the fds are the handles' FIFOs, open while the
    // handles are borrowed by the select.
    let n = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, ms) };
    if n > 0 && polls.iter().any(|p| p.revents & libc::POLLIN != 0) {
        Wake::Woken
    } else {
        // Hung up only (a publisher gone): as a timeout, the handles'
        // paced checks run at once and say so.
        Wake::TimedOut
    }
}

impl Select {
    /// A select that has returned nothing yet.
    pub fn new() -> Self {
        Select { next: 0 }
    }

    /// The index of a ready handle, if one is ready now. Never sleeps.
    pub fn try_select(&mut self, handles: &mut [&mut dyn Selectable]) -> Option<usize> {
        self.scan(handles, true)
    }

    /// Blocks until a handle is ready and returns its index.
    ///
    /// # Errors
    ///
    /// [`SelectError::NoHandles`] for an empty slice.
    pub fn select(&mut self, handles: &mut [&mut dyn Selectable]) -> Result<usize, SelectError> {
        self.wait(handles, None)
    }

    /// Blocks until a handle is ready, at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`SelectError::Timeout`] if none became ready in time,
    /// [`SelectError::NoHandles`] for an empty slice.
    pub fn select_timeout(
        &mut self,
        handles: &mut [&mut dyn Selectable],
        timeout: Duration,
    ) -> Result<usize, SelectError> {
        self.wait(handles, wait::deadline_after(timeout))
    }

    /// Blocks until a handle is ready, at most until `deadline`.
    ///
    /// # Errors
    ///
    /// As [`select_timeout`](Self::select_timeout).
    pub fn select_deadline(
        &mut self,
        handles: &mut [&mut dyn Selectable],
        deadline: Instant,
    ) -> Result<usize, SelectError> {
        self.wait(handles, Some(deadline))
    }

    /// Looks at every handle once, from `next`: the cheap looks, then (if
    /// `slow`) the paced checks.
    fn scan(&mut self, handles: &mut [&mut dyn Selectable], slow: bool) -> Option<usize> {
        let n = handles.len();
        if n == 0 {
            return None;
        }
        let start = self.next % n;
        let order = (start..n).chain(0..start);
        // A handle on pipes reads its FIFO in its slow look, in turn with
        // the others' cheap looks (its cheap look sees only what it read).
        let found = order
            .clone()
            .find(|&i| {
                handles[i].ready_now()
                    || (handles[i].pipe_fd().is_some() && handles[i].ready_slow())
            })
            .or_else(|| {
                if slow {
                    order.clone().find(|&i| handles[i].ready_slow())
                } else {
                    None
                }
            })?;
        self.next = found + 1;
        Some(found)
    }

    fn wait(
        &mut self,
        handles: &mut [&mut dyn Selectable],
        deadline: Option<Instant>,
    ) -> Result<usize, SelectError> {
        if handles.is_empty() {
            return Err(SelectError::NoHandles);
        }
        if let Some(i) = self.scan(handles, true) {
            return Ok(i);
        }
        // The first handle's strategy, and the shortest check interval, so
        // that every handle's writer is checked for as often as its own
        // blocking receive would.
        let (strategy, _) = handles[0].wait_options();
        let interval = handles
            .iter()
            .map(|h| h.wait_options().1)
            .min()
            .unwrap_or(Duration::from_millis(100));
        let mut waiter = Waiter::new(strategy, interval);
        // Handles on pipes sleep in `poll` on their FIFOs instead; beside
        // handles in shared memory, a poll lasts at most a millisecond (the
        // futex words are then looked at between polls, not slept on).
        let fds: Vec<std::os::fd::RawFd> = handles.iter().filter_map(|h| h.pipe_fd()).collect();
        let all_pipes = fds.len() == handles.len();
        loop {
            let sleep = |timeout: Option<Duration>| {
                if !fds.is_empty() {
                    let cap = if all_pipes {
                        timeout
                    } else {
                        Some(timeout.map_or(MIXED_POLL, |t| t.min(MIXED_POLL)))
                    };
                    return poll_fds(&fds, cap);
                }
                let words: Vec<&WakeWords> = handles.iter().map(|h| h.words()).collect();
                let ready = || handles.iter().any(|h| h.ready_now());
                wait::sleep_on_any(&words, ready, timeout)
            };
            match waiter.wait_once_with(sleep, deadline) {
                Waited::Deadline => return Err(SelectError::Timeout),
                Waited::Slept(Wake::TimedOut) => {
                    // A writer may have died: make every paced check now.
                    for h in handles.iter_mut() {
                        h.timed_out();
                    }
                    if let Some(i) = self.scan(handles, true) {
                        return Ok(i);
                    }
                    continue;
                }
                Waited::Slept(_) | Waited::Polled => {}
            }
            if let Some(i) = self.scan(handles, waiter.checks_due()) {
                return Ok(i);
            }
        }
    }
}

//! Waking readers that sleep.
//!
//! # Protocol
//!
//! Each topic has a [`WakeWords`]: a 32-bit futex word and a count of
//! sleepers, in the segment. A reader that found nothing to read:
//!
//! 1. reads the futex word,
//! 2. increments `waiters`,
//! 3. `fence(SeqCst)`,
//! 4. checks once more for something to read (and stops if there is),
//! 5. sleeps on the futex word, expecting the value from step 1,
//! 6. decrements `waiters`.
//!
//! A writer publishes (its own store), then `fence(SeqCst)`, then reads
//! `waiters`: only if it is nonzero does it bump the futex word and make the
//! wake system call. That is how a publisher with no sleeping readers makes
//! no system call at all.
//!
//! No wakeup is lost: the two SeqCst fences order the reader's "I sleep"
//! (step 2) and the writer's publish. Either the reader's re-check (step 4)
//! sees the message, or the writer's load sees `waiters > 0`; then it bumps
//! the word after the reader read it in step 1, so the kernel's
//! compare-and-sleep in step 5 either refuses to sleep or is woken.
//!
//! Sleeps take a timeout so that a reader can notice that the writer died
//! (it will never wake anyone again) and say so.

mod futex;

use std::time::Duration;

use crate::sync::{fence, AtomicU32, Ordering};

pub use futex::FutexWord;

/// How a reader waits for the next message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Busy-poll: lowest latency, burns a core while waiting.
    Spin,
    /// Poll, spinning a little between the first polls and then giving the
    /// core away between polls (crossbeam's `Backoff::snooze`). Kinder than
    /// `Spin` to other processes on the same core, never sleeps.
    Yield,
    /// Sleep on the futex at once: no CPU while idle, a kernel round trip
    /// (several microseconds) per wakeup.
    Block,
    /// Spin `spins` polls, then sleep. Low latency when messages come close
    /// together, no CPU when they stop. The default.
    Adaptive {
        /// Polls before sleeping.
        spins: u32,
    },
}

impl WaitStrategy {
    /// Adaptive with a spin phase of a few microseconds.
    pub const fn adaptive() -> Self {
        WaitStrategy::Adaptive { spins: 2000 }
    }
}

impl Default for WaitStrategy {
    fn default() -> Self {
        Self::adaptive()
    }
}

/// What a sleep ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The re-check found work; we never slept.
    Ready,
    /// We slept and were woken (or the word changed, or a spurious wakeup).
    Woken,
    /// The timeout ran out.
    TimedOut,
}

/// The wakeup words of one topic. All-zero bytes are the initial state.
#[repr(C)]
#[derive(Default)]
pub struct WakeWords {
    /// Futex word. Bumped by a writer that saw sleepers.
    word: FutexWord,
    /// Readers between step 2 and step 6 of the protocol.
    waiters: AtomicU32,
}

#[cfg(not(shmbus_loom))]
const _: () = {
    assert!(core::mem::size_of::<WakeWords>() == 8);
    assert!(core::mem::offset_of!(WakeWords, waiters) == 4);
};

impl WakeWords {
    pub fn new() -> Self {
        WakeWords {
            word: FutexWord::new(),
            waiters: AtomicU32::new(0),
        }
    }

    /// Called by a writer after it made something visible to readers.
    /// Makes a system call only when a reader sleeps, or is about to.
    #[inline]
    pub fn notify(&self) {
        // SYNC POINT (Dekker, pairs with the fence in `sleep_unless`): orders
        // the caller's publish before our load of `waiters`.
        fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::Relaxed) != 0 {
            self.word.bump_and_wake_all();
        }
    }

    /// The futex word's value: how many times a writer woke sleepers.
    pub fn wake_count(&self) -> u32 {
        self.word.load()
    }

    /// Number of readers asleep or about to sleep.
    #[inline]
    pub fn waiters(&self) -> u32 {
        self.waiters.load(Ordering::Relaxed)
    }

    /// Sleeps until woken or `timeout` passes, unless `ready()` (checked
    /// after announcing ourselves as a sleeper) says there is work already.
    pub fn sleep_unless(&self, ready: impl FnOnce() -> bool, timeout: Option<Duration>) -> Wake {
        let seen = self.word.load();
        self.waiters.fetch_add(1, Ordering::Relaxed);
        // SYNC POINT (Dekker, pairs with the fence in `notify`): orders our
        // increment of `waiters` before the re-check of the ring.
        fence(Ordering::SeqCst);
        let outcome = if ready() {
            Wake::Ready
        } else {
            self.word.wait(seen, timeout)
        };
        self.waiters.fetch_sub(1, Ordering::Relaxed);
        outcome
    }
}

/// What one [`Waiter::wait_once`] did.
#[cfg(not(shmbus_loom))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waited {
    /// Spun or yielded once.
    Polled,
    /// Went to sleep on the futex (or found work while announcing it).
    Slept(Wake),
    /// The deadline has passed.
    Deadline,
}

/// The state of one wait, across its polls: the strategy, how many polls
/// since the last sleep, and when the slow checks (is the process we wait on
/// alive?) last ran. Every blocking operation (receive, pop, push, lossless
/// send) waits through one of these, so they all follow one strategy.
#[cfg(not(shmbus_loom))]
pub(crate) struct Waiter {
    wait: WaitStrategy,
    check_interval: Duration,
    polls: u32,
    slept: bool,
    backoff: crossbeam_utils::Backoff,
    last_check: Option<std::time::Instant>,
}

#[cfg(not(shmbus_loom))]
impl Waiter {
    pub(crate) fn new(wait: WaitStrategy, check_interval: Duration) -> Self {
        Waiter {
            wait,
            check_interval,
            polls: 0,
            slept: false,
            backoff: crossbeam_utils::Backoff::new(),
            last_check: None,
        }
    }

    /// Whether cheap-but-not-free checks are due: right after a sleep, and
    /// every 1024 polls while spinning; never before the first wait, which
    /// is on the latency path of every operation.
    pub(crate) fn checks_due(&self) -> bool {
        self.slept || self.polls % 1024 == 1023
    }

    /// Whether a check that reads /proc is due: once the wait has lasted a
    /// check interval, then once per interval.
    pub(crate) fn interval_due(&mut self) -> bool {
        let now = std::time::Instant::now();
        match self.last_check {
            Some(last) if now.duration_since(last) < self.check_interval => false,
            Some(_) => {
                self.last_check = Some(now);
                true
            }
            None => {
                self.last_check = Some(now);
                false
            }
        }
    }

    /// Makes the next `interval_due` true (for operations that never wait).
    pub(crate) fn interval_due_at_once(&mut self) {
        self.last_check = std::time::Instant::now().checked_sub(self.check_interval);
    }

    /// Waits once as the strategy says: spin, yield, or (after its spins)
    /// sleep on `words` unless `ready()`, at most the check interval and
    /// never past `deadline`. The deadline is looked at after sleeps and
    /// every 64 polls, not on every poll.
    #[inline]
    pub(crate) fn wait_once(
        &mut self,
        words: &WakeWords,
        ready: impl FnOnce() -> bool,
        deadline: Option<std::time::Instant>,
    ) -> Waited {
        if let Some(deadline) = deadline {
            if (self.slept || self.polls % 64 == 0) && std::time::Instant::now() >= deadline {
                return Waited::Deadline;
            }
        }
        self.polls = self.polls.wrapping_add(1);
        self.slept = false;
        match self.wait {
            WaitStrategy::Spin => crate::sync::spin_hint(),
            WaitStrategy::Yield => self.backoff.snooze(),
            WaitStrategy::Adaptive { spins } if self.polls <= spins => crate::sync::spin_hint(),
            WaitStrategy::Block | WaitStrategy::Adaptive { .. } => {
                return self.sleep(words, ready, deadline);
            }
        }
        Waited::Polled
    }

    /// The sleeping half of `wait_once`, kept out of the spinning loop.
    #[cold]
    #[inline(never)]
    fn sleep(
        &mut self,
        words: &WakeWords,
        ready: impl FnOnce() -> bool,
        deadline: Option<std::time::Instant>,
    ) -> Waited {
        let mut timeout = self.check_interval;
        if let Some(deadline) = deadline {
            timeout = timeout.min(deadline.saturating_duration_since(std::time::Instant::now()));
        }
        let outcome = words.sleep_unless(ready, Some(timeout));
        self.polls = 0;
        self.slept = true;
        Waited::Slept(outcome)
    }
}

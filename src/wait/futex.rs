//! The futex word: Linux's futex on a shared (never private) mapping, or,
//! under the loom model checker, a mutex and condition variable that behave
//! like one.

use std::time::Duration;

use super::Wake;
use crate::sync::{AtomicU32, Ordering};

/// A 32-bit word that readers sleep on and writers bump to wake them.
#[derive(Default)]
#[repr(transparent)]
#[cfg(not(shmbus_loom))]
pub struct FutexWord(AtomicU32);

#[cfg(not(shmbus_loom))]
impl FutexWord {
    pub fn new() -> Self {
        FutexWord(AtomicU32::new(0))
    }

    #[inline]
    pub fn load(&self) -> u32 {
        // SYNC POINT: pairs with the Release bump in `bump`.
        self.0.load(Ordering::Acquire)
    }

    /// Bumps the word, so that a reader about to sleep on its old value
    /// does not.
    pub fn bump(&self) {
        // SYNC POINT: pairs with the Acquire in `load`.
        self.0.fetch_add(1, Ordering::Release);
    }

    /// Wakes every sleeper; returns how many woke.
    pub fn wake_all(&self) -> usize {
        // Not FUTEX_PRIVATE_FLAG: the word lives in a mapping shared between
        // processes, and a private wake would never reach them. The count is
        // an `int` in the kernel: u32::MAX would read as -1 and wake only one
        // sleeper. An error (there is none for a valid address) is reported
        // as "woke someone", the answer that makes the caller forget no
        // sleeper.
        rustix::thread::futex::wake(
            &self.0,
            rustix::thread::futex::Flags::empty(),
            i32::MAX as u32,
        )
        .unwrap_or(1)
    }

    /// Sleeps while the word equals `expected`, at most `timeout`.
    pub fn wait(&self, expected: u32, timeout: Option<Duration>) -> Wake {
        use rustix::io::Errno;
        use rustix::thread::futex::{self, Flags, Timespec};
        let timespec = timeout.map(|t| Timespec {
            tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(t.subsec_nanos()),
        });
        match futex::wait(&self.0, Flags::empty(), expected, timespec.as_ref()) {
            Err(Errno::TIMEDOUT) => Wake::TimedOut,
            // Woken, or the word had already moved on (EAGAIN), or a signal
            // (EINTR): all mean "look again".
            _ => Wake::Woken,
        }
    }
}

/// Under loom: the word plus a mutex and condvar. `wait` checks the word
/// under the mutex and sleeps on the condvar; `wake_all` notifies under the
/// mutex and returns how many were asleep. That is the futex contract
/// (compare and sleep atomically with respect to wake). Timeouts are
/// ignored, so a lost wakeup shows up in the model as a deadlock.
#[cfg(shmbus_loom)]
pub struct FutexWord {
    word: AtomicU32,
    /// Threads asleep on the condvar (under the mutex).
    lock: loom::sync::Mutex<usize>,
    sleepers: loom::sync::Condvar,
}

#[cfg(shmbus_loom)]
impl Default for FutexWord {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(shmbus_loom)]
impl FutexWord {
    pub fn new() -> Self {
        FutexWord {
            word: AtomicU32::new(0),
            lock: loom::sync::Mutex::new(0),
            sleepers: loom::sync::Condvar::new(),
        }
    }

    #[inline]
    pub fn load(&self) -> u32 {
        self.word.load(Ordering::Acquire)
    }

    pub fn bump(&self) {
        self.word.fetch_add(1, Ordering::Release);
    }

    pub fn wake_all(&self) -> usize {
        // Every thread in `wait` now is woken; they no longer count as
        // asleep. (One that woke spuriously still counts until then: the
        // answer errs towards "someone woke", which forgets no sleeper.)
        let mut asleep = self.lock.lock().unwrap();
        let woken = core::mem::take(&mut *asleep);
        self.sleepers.notify_all();
        woken
    }

    pub fn wait(&self, expected: u32, _timeout: Option<Duration>) -> Wake {
        let mut asleep = self.lock.lock().unwrap();
        if self.word.load(Ordering::Acquire) != expected {
            return Wake::Woken;
        }
        *asleep += 1;
        drop(self.sleepers.wait(asleep).unwrap());
        Wake::Woken
    }
}

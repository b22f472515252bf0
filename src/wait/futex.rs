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

    /// Wakes one sleeper (the kernel picks it); returns how many woke (0 or
    /// 1). An error reads as "woke someone", as in `wake_all`.
    pub fn wake_one(&self) -> usize {
        rustix::thread::futex::wake(&self.0, rustix::thread::futex::Flags::empty(), 1)
            .unwrap_or(1)
    }

    /// Sleeps while every word of `words` equals the value beside it, at
    /// most `timeout`: `futex_waitv(2)` (Linux 5.16 and later). Where the
    /// kernel lacks it, sleeps on the first word for at most
    /// [`WAITV_FALLBACK_SLICE`] at a time, looking at the others in
    /// between: correct (a change of any word is seen within a slice), but
    /// a wake on the other words can wait that long.
    pub fn wait_any(words: &[(&FutexWord, u32)], timeout: Option<Duration>) -> Wake {
        use rustix::io::Errno;
        use rustix::thread::futex::{self, Wait, WaitFlags, WaitPtr, WaitvFlags};
        use std::sync::atomic::AtomicBool;
        static NO_WAITV: AtomicBool = AtomicBool::new(false);
        if words.len() > 1 && !NO_WAITV.load(std::sync::atomic::Ordering::Relaxed) {
            let waiters: Vec<Wait> = words
                .iter()
                .map(|&(word, expected)| {
                    let mut wait = Wait::new();
                    wait.val = u64::from(expected);
                    wait.uaddr = WaitPtr::new(word.0.as_ptr().cast());
                    // Not FUTEX2_PRIVATE: see `wake_all`.
                    wait.flags = WaitFlags::SIZE_U32;
                    wait
                })
                .collect();
            // futex_waitv takes an absolute time on the clock it is given.
            let deadline = timeout.and_then(|t| {
                let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
                let nanos = u64::try_from(now.tv_nsec).ok()? + u64::from(t.subsec_nanos());
                Some(futex::Timespec {
                    tv_sec: now
                        .tv_sec
                        .checked_add(i64::try_from(t.as_secs()).ok()?)?
                        .checked_add((nanos / 1_000_000_000) as i64)?,
                    tv_nsec: (nanos % 1_000_000_000) as i64,
                })
            });
            match futex::waitv(
                &waiters,
                WaitvFlags::empty(),
                deadline.as_ref(),
                rustix::time::ClockId::Monotonic,
            ) {
                Err(Errno::TIMEDOUT) => return Wake::TimedOut,
                Err(Errno::NOSYS) => NO_WAITV.store(true, std::sync::atomic::Ordering::Relaxed),
                _ => return Wake::Woken,
            }
        }
        Self::wait_any_sliced(words, timeout)
    }

    /// `wait_any` without `futex_waitv`: sleeps on the first word, a
    /// [`WAITV_FALLBACK_SLICE`] at a time, looking at all of them between
    /// slices.
    fn wait_any_sliced(words: &[(&FutexWord, u32)], timeout: Option<Duration>) -> Wake {
        let Some(&(first, first_expected)) = words.first() else {
            return Wake::TimedOut;
        };
        let slice = if words.len() > 1 {
            Some(timeout.map_or(WAITV_FALLBACK_SLICE, |t| t.min(WAITV_FALLBACK_SLICE)))
        } else {
            timeout
        };
        let started = std::time::Instant::now();
        loop {
            if words.iter().any(|&(word, expected)| word.load() != expected) {
                return Wake::Woken;
            }
            if first.wait(first_expected, slice) == Wake::Woken {
                return Wake::Woken;
            }
            if timeout.is_some_and(|t| started.elapsed() >= t) {
                return Wake::TimedOut;
            }
        }
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

/// Longest sleep on one word of several where the kernel has no
/// `futex_waitv` (see [`FutexWord::wait_any`]).
#[cfg(not(shmbus_loom))]
pub const WAITV_FALLBACK_SLICE: Duration = Duration::from_millis(1);

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

    pub fn wake_one(&self) -> usize {
        let mut asleep = self.lock.lock().unwrap();
        if *asleep == 0 {
            return 0;
        }
        *asleep -= 1;
        self.sleepers.notify_one();
        1
    }

    /// Several words at once: polls them, yielding to the model's other
    /// threads in between. A wakeup that never comes leaves this loop
    /// spinning, which the model reports (it exceeds its branch bound).
    pub fn wait_any(words: &[(&FutexWord, u32)], _timeout: Option<Duration>) -> Wake {
        loop {
            if words
                .iter()
                .any(|&(word, expected)| word.word.load(Ordering::Acquire) != expected)
            {
                return Wake::Woken;
            }
            loom::thread::yield_now();
        }
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

#[cfg(all(test, not(shmbus_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    /// Both ways of sleeping on several words wake for a change of the
    /// second word, and time out when nothing changes.
    #[test]
    fn a_sleep_on_two_words_wakes_for_the_second_with_and_without_futex_waitv() {
        type Sleep = fn(&[(&FutexWord, u32)], Option<Duration>) -> Wake;
        for (how, sleep) in [
            ("futex_waitv", FutexWord::wait_any as Sleep),
            ("sliced", FutexWord::wait_any_sliced as Sleep),
        ] {
            let words = Arc::new([FutexWord::new(), FutexWord::new()]);
            let started = Instant::now();
            let quiet = sleep(
                &[(&words[0], 0), (&words[1], 0)],
                Some(Duration::from_millis(20)),
            );
            assert_eq!(quiet, Wake::TimedOut, "{how}");
            assert!(started.elapsed() >= Duration::from_millis(20), "{how}");

            let bumper = {
                let words = Arc::clone(&words);
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(10));
                    words[1].bump();
                    words[1].wake_all();
                })
            };
            let woke = sleep(
                &[(&words[0], 0), (&words[1], 0)],
                Some(Duration::from_secs(10)),
            );
            bumper.join().unwrap();
            assert_eq!(woke, Wake::Woken, "{how}");
            assert!(started.elapsed() < Duration::from_secs(5), "{how}");
        }
    }
}


//! Waking readers that sleep.
//!
//! # Protocol
//!
//! Each topic has a [`WakeWords`]: a 32-bit futex word and a sleeper count
//! (with an epoch, see below), in the segment. A reader that found nothing
//! to read:
//!
//! 1. reads the futex word,
//! 2. increments the sleeper count (and remembers the epoch it counted in),
//! 3. `fence(SeqCst)`,
//! 4. checks once more for something to read (and stops if there is),
//! 5. sleeps on the futex word, expecting the value from step 1,
//! 6. decrements the count, if the epoch is still the one of step 2.
//!
//! A writer publishes (its own store), then `fence(SeqCst)`, then reads the
//! count: only if it is nonzero does it bump the futex word and make the
//! wake system call. That is how a publisher with no sleeping readers makes
//! no system call at all.
//!
//! No wakeup is lost: the two SeqCst fences order the reader's "I sleep"
//! (step 2) and the writer's publish. Either the reader's re-check (step 4)
//! sees the message, or the writer's load sees the count; then it bumps
//! the word after the reader read it in step 1, so the kernel's
//! compare-and-sleep in step 5 either refuses to sleep or is woken.
//!
//! # Sleepers that die
//!
//! A reader killed while asleep (the usual way a blocked process dies)
//! never does step 6: its count would stay forever, and every later publish
//! would pay a wake system call. So a writer whose wake call woke nobody
//! resets the count to zero in a new epoch, by compare-and-swap from the
//! exact word it read. The word also counts every announcement (step 2) in
//! a ticket field, so the compare-and-swap fails if any reader counted
//! itself in or out since the writer read it (not just if the count
//! differs: a reader leaving and another arriving would restore the count).
//! If it succeeds, every reader counted in the word read the futex word
//! (step 1) before the writer bumped it, so it cannot sleep on it now (the
//! kernel sees the word changed) and is not asleep on it (the wake found no
//! one): it will look at the ring again, and count itself in the new epoch
//! if it sleeps again. Readers counted in an old epoch do not decrement the
//! new one. So a dead sleeper costs one wake call, once.
//!
//! Sleeps take a timeout so that a reader can notice that the writer died
//! (it will never wake anyone again) and say so.
//!
//! # Waking one
//!
//! A work-queue push is for one consumer, so it wakes one
//! ([`WakeWords::notify_one`]): it bumps the word as `notify` does (so
//! every reader between steps 1 and 5 does not sleep) and asks the kernel
//! to wake one of those asleep, which it takes off the futex's queue. So
//! k pushes wake k distinct sleepers (or every sleeper, if fewer sleep),
//! and each woken consumer looks at the queue before it sleeps again: a
//! message is never left with every consumer asleep, unless the one woken
//! for it dies before it looks (then the others' sleeps time out within
//! the liveness check interval and find it). A sleeper that waits on the
//! queue through a [`Select`](crate::Select) or a pollable fd is woken the
//! same way, and its owner pops when it next looks.
//!
//! # Light writers
//!
//! The writer's `fence(SeqCst)` is the one cost the protocol puts on every
//! message, and not a small one: on x86 it waits until every store before
//! it has left the store buffer, and the stores of a message go to slot
//! lines that readers hold, so each takes a cache-line transfer. With the
//! fence, a publisher pays one transfer per message in turn; without it,
//! the transfers of consecutive messages overlap. So a broadcast publisher
//! (the topic's one writer of its [`WakeWords`]) may instead be a *light
//! writer* ([`LightWaker`]): it replaces the fence with a compiler fence,
//! and the reader about to sleep makes up for it with
//! `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`
//! ([`heavy_fence`](crate::sync::heavy_fence)) after step 3, which returns
//! only once every running thread of every registered process has passed
//! a full barrier. That barrier lands somewhere in the writer's program:
//! before its load of the count (the load then sees the reader's count),
//! or after its publish (the reader's re-check, after `membarrier`
//! returns, sees the message); since the publish comes before the load,
//! one of the two always holds, which is what the writer's own fence
//! guaranteed. The same argument covers a subscriber attaching to a
//! lossless topic (`Gate::attach`), which relies on the publisher's fence
//! after every message in the same way.
//!
//! A reader sleeps this way only if a light writer may exist: the writer
//! sets the `LIGHT` bit of the sleeper word (a read-modify-write, then a
//! fence) before its first light message and clears it (a fence, then a
//! read-modify-write) before its first heavy one, and the reader's count-in
//! (step 2) is a read-modify-write of the same word, so either the reader
//! sees the bit, or the writer's read-modify-write, and every load of the
//! count after it, sees the reader. A reader that cannot call `membarrier`
//! (a seccomp filter) sets the sticky `REQUEST` bit, after which no writer
//! goes light on this word again, and sleeps at most [`FALLBACK_SLEEP`] at
//! a time until the bit `LIGHT` is clear.
//!
//! The trade: `membarrier` costs the sleeping reader about half a
//! microsecond and interrupts the CPUs running shmbus processes. So a
//! writer is light only while nobody sleeps: the first wake call it makes
//! turns it heavy (it pays a system call then anyway), and it turns light
//! again after [`QUIET_NOTIFIES`] messages that found nobody asleep. A
//! busy publisher with spinning subscribers fences never; a slow one whose
//! subscribers sleep between messages fences on every message and its
//! subscribers never call `membarrier`.
//!
//! # Light writers that share
//!
//! A work queue's words have many writers: every producer notifies
//! `not_empty`, every consumer `not_full`. Their fences cost what a
//! publisher's did (each is after a store to a slot line the other side
//! holds; measured: dropping them took 64-byte 1-to-1 queue throughput from
//! 0.49x to 0.86x of the raw MPMC ring, `shmbus bench --only queue`, four
//! alternated runs). One bit cannot say whether any of them is light (one
//! turning heavy would clear it under another), so they are counted:
//! `light_writers`, beside the futex word. A shared writer turns light by
//! incrementing it (SeqCst) and then fencing, and heavy by fencing and then
//! decrementing it (Release); a reader, after its step-3 fence, loads it
//! (Acquire) and calls `membarrier` if it is not zero. The argument is the
//! one above, with a Dekker pair of SeqCst fences in place of one word's
//! read-modify-writes: a writer's increment, its fence, then its later
//! loads of the sleeper count; a reader's count-in, its fence, then its
//! load of `light_writers`. Either the reader sees the writer counted (and
//! makes up for its fences), or every load of the sleeper count the writer
//! makes after its fence sees the reader (and it turns heavy and wakes).
//! A reader that reads the count without a writer synchronizes with that
//! writer's decrement, and sees what it published light.
//!
//! A writer killed while light stays counted: readers would pay for
//! `membarrier` on every sleep, for ever. So each shared writer also keeps
//! a flag in its claim-table entry ([`LIGHT_ON`] while counted, and
//! [`LIGHT_PENDING`] across each change of the count), and the process
//! that takes the dead writer's entry over takes it out of the count
//! ([`WakeWords::forget_dead_writer`]) when the flag says it was counted.
//! Every miss of this is on the safe side: a writer killed across a change
//! of the count, or a forgetter killed after clearing the flag, leaves the
//! count too high (readers pay for `membarrier`s they need not), never too
//! low (a reader skipping one it needs).

mod futex;

use std::time::Duration;

use crate::sync::{fence, heavy_fence, light_fence, AtomicU32, AtomicU64, Ordering};

pub use crate::ring::waiting::{Step, WaitStrategy};
pub use futex::FutexWord;

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

/// The sleeper word: announcement tickets (bits 44..64, wrapping), the
/// reset epoch (bits 24..44, wrapping), `REQUEST` (bit 23), `LIGHT` (bit
/// 22) and the count (bits 0..22).
const COUNT: u64 = (1 << 22) - 1;
/// A light writer may be at work (see "Light writers").
const LIGHT: u64 = 1 << 22;
/// A reader that cannot call `membarrier` asked writers not to be light.
const REQUEST: u64 = 1 << 23;
const EPOCH: u64 = 1 << 24;
const EPOCHS: u64 = ((1 << 20) - 1) << 24;
const TICKET: u64 = 1 << 44;

/// What [`WakeWords::announce`] counted: the futex word's value to sleep
/// on, the epoch to count out of, and whether a light writer may be at
/// work.
#[derive(Debug, Clone, Copy)]
#[must_use = "an announced sleeper must be retired, or it is counted for ever"]
pub struct Announced {
    seen: u32,
    epoch: u64,
    light: bool,
}

/// Step 3 of the protocol for readers that [`announce`](WakeWords::announce)d
/// themselves on every word in `words`, in order: one `fence(SeqCst)`, and,
/// if a light writer may be at work on any of them, the heavy fence that
/// stands in for its own (see "Light writers"). Returns the longest the
/// caller may then sleep: `timeout`, or [`FALLBACK_SLEEP`] where this
/// process may not call `membarrier` (it has asked the writers to turn
/// heavy).
pub fn announced(
    words: &[&WakeWords],
    tickets: &[Announced],
    timeout: Option<Duration>,
) -> Option<Duration> {
    // SYNC POINT (Dekker, pairs with the fence in `notify`): orders our
    // count before the re-check of the ring.
    fence(Ordering::SeqCst);
    // SYNC POINT: Acquire pairs with the Release decrement of a shared
    // writer turning heavy: reading 0, we see what it published light.
    if !tickets.iter().any(|t| t.light)
        && words
            .iter()
            .all(|w| w.light_writers.load(Ordering::Acquire) == 0)
    {
        return timeout;
    }
    fence_light_writers(words, timeout)
}

/// A light writer may be at work: stands in for its fence (see "Light
/// writers"), or, where this process may not call `membarrier`, asks
/// writers to stop being light and shortens the sleep to
/// [`FALLBACK_SLEEP`], so that a message the writer published unfenced
/// as we counted ourselves in is seen by the next look.
#[cold]
fn fence_light_writers(words: &[&WakeWords], timeout: Option<Duration>) -> Option<Duration> {
    if heavy_fence() {
        return timeout;
    }
    for words in words {
        words.sleepers.fetch_or(REQUEST, Ordering::Relaxed);
    }
    Some(timeout.map_or(FALLBACK_SLEEP, |t| t.min(FALLBACK_SLEEP)))
}

/// Sleeps until a writer of any of `words` wakes us or `timeout` passes,
/// unless `ready()` (checked after announcing ourselves on every one of
/// them) says there is work already: the protocol above, on several words
/// at once (`futex_waitv`, see [`FutexWord::wait_any`]). This is how a
/// [`Select`](crate::Select) sleeps.
pub fn sleep_on_any(
    words: &[&WakeWords],
    ready: impl FnOnce() -> bool,
    timeout: Option<Duration>,
) -> Wake {
    let tickets: Vec<Announced> = words.iter().map(|w| w.announce()).collect();
    let timeout = announced(words, &tickets, timeout);
    let outcome = if ready() {
        Wake::Ready
    } else {
        sleep_announced(words, &tickets, timeout)
    };
    for (w, t) in words.iter().zip(tickets.iter()) {
        w.retire(*t);
    }
    outcome
}

/// Step 5 for readers announced on every word in `words` (`tickets`, in
/// the same order): sleeps until any word moves from the value it had when
/// we counted ourselves in, or `timeout` passes. The caller retires the
/// tickets afterwards.
pub fn sleep_announced(
    words: &[&WakeWords],
    tickets: &[Announced],
    timeout: Option<Duration>,
) -> Wake {
    if let ([w], [t]) = (words, tickets) {
        return w.word.wait(t.seen, timeout);
    }
    let futexes: Vec<(&FutexWord, u32)> = words
        .iter()
        .zip(tickets)
        .map(|(w, t)| (&w.word, t.seen))
        .collect();
    FutexWord::wait_any(&futexes, timeout)
}

/// The wakeup words of one topic. All-zero bytes are the initial state.
#[repr(C)]
#[derive(Default)]
pub struct WakeWords {
    /// Futex word. Bumped by a writer that saw sleepers.
    word: FutexWord,
    /// Writers that share these words (a work queue's producers, or its
    /// consumers) and are light now: see "Light writers that share".
    light_writers: AtomicU32,
    /// Tickets, epoch and count of the readers between step 2 and step 6 of
    /// the protocol (see the constants above).
    sleepers: AtomicU64,
}

#[cfg(not(shmbus_loom))]
const _: () = {
    assert!(core::mem::size_of::<WakeWords>() == 16);
    assert!(core::mem::offset_of!(WakeWords, light_writers) == 4);
    assert!(core::mem::offset_of!(WakeWords, sleepers) == 8);
};

impl core::fmt::Debug for WakeWords {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WakeWords")
            .field("wakes", &self.wake_count())
            .field("waiters", &self.waiters())
            .finish()
    }
}

impl WakeWords {
    pub fn new() -> Self {
        WakeWords {
            word: FutexWord::new(),
            light_writers: AtomicU32::new(0),
            sleepers: AtomicU64::new(0),
        }
    }

    /// Wakes whoever sleeps on the futex word without bumping it: they look
    /// again and, finding nothing, sleep again. For a process that must get
    /// its own sleeper (a doorbell thread) out of the kernel.
    pub fn nudge(&self) {
        let _ = self.word.wake_all();
    }

    /// Called by a writer after it made something visible to readers.
    /// Makes a system call only when a reader sleeps, or is about to.
    #[inline]
    pub fn notify(&self) {
        // SYNC POINT (Dekker, pairs with the fence in `sleep_unless`): orders
        // the caller's publish before our load of the count.
        fence(Ordering::SeqCst);
        let seen = self.sleepers.load(Ordering::Relaxed);
        if seen & COUNT != 0 {
            self.wake(seen);
        }
    }

    /// As [`notify`](Self::notify), waking one sleeper rather than all:
    /// for work queues, where one message is for one consumer (a counting
    /// semaphore's post, in the futex). See "Waking one" above.
    #[inline]
    pub fn notify_one(&self) {
        // SYNC POINT (Dekker, pairs with the fence in `sleep_unless`).
        fence(Ordering::SeqCst);
        let seen = self.sleepers.load(Ordering::Relaxed);
        if seen & COUNT != 0 {
            self.wake_n(seen, false);
        }
    }

    /// The slow half of `notify`: bump, wake, and forget dead sleepers.
    #[cold]
    #[inline(never)]
    fn wake(&self, seen: u64) {
        self.wake_n(seen, true);
    }

    #[cold]
    #[inline(never)]
    fn wake_n(&self, seen: u64, all: bool) {
        self.word.bump();
        let woken = if all {
            self.word.wake_all()
        } else {
            self.word.wake_one()
        };
        if woken == 0 {
            // See "Sleepers that die": nobody slept, so the count holds no
            // one who could miss a later wake. Fails (harmlessly) if a reader
            // came or went since `seen`.
            let reset = (seen & !(COUNT | EPOCHS)) | ((seen & EPOCHS).wrapping_add(EPOCH) & EPOCHS);
            let _ =
                self.sleepers
                    .compare_exchange(seen, reset, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// The futex word's value: how many times a writer woke sleepers.
    pub fn wake_count(&self) -> u32 {
        self.word.load()
    }

    /// Number of readers asleep or about to sleep (dead ones included,
    /// until the next writer finds them gone).
    #[inline]
    pub fn waiters(&self) -> u32 {
        (self.sleepers.load(Ordering::Relaxed) & COUNT) as u32
    }

    /// Sleeps until woken or `timeout` passes, unless `ready()` (checked
    /// after announcing ourselves as a sleeper) says there is work already.
    pub fn sleep_unless(&self, ready: impl FnOnce() -> bool, timeout: Option<Duration>) -> Wake {
        let ticket = self.announce();
        let timeout = announced(&[self], &[ticket], timeout);
        let outcome = if ready() {
            Wake::Ready
        } else {
            self.word.wait(ticket.seen, timeout)
        };
        self.retire(ticket);
        outcome
    }

    /// Steps 1 and 2 of the protocol: reads the futex word and counts us
    /// in. The caller then makes the fence of step 3 ([`announced`]) before
    /// it re-checks, sleeps on the word (expecting the value it read) and
    /// finally [`retire`](Self::retire)s, exactly once.
    pub fn announce(&self) -> Announced {
        let seen = self.word.load();
        // SYNC POINT: SeqCst (an Acquire read-modify-write) so that a
        // light writer's clearing of `LIGHT` (Release), if we read it,
        // makes every message it published light visible to the re-check.
        let counted = self.sleepers.fetch_add(TICKET + 1, Ordering::SeqCst);
        Announced {
            seen,
            epoch: counted & EPOCHS,
            light: counted & LIGHT != 0,
        }
    }

    /// Step 6: counts out the reader that [`announce`](Self::announce)
    /// counted in.
    pub fn retire(&self, announced: Announced) {
        self.leave(announced.epoch);
    }

    /// Whether a light writer may be at work on these words. Read after a
    /// `fence(SeqCst)` that follows a store the writer must see (as
    /// `Gate::attach` does): `false` then means that the writer fences
    /// (or will see the store) from here on.
    #[inline]
    pub fn has_light_writer(&self) -> bool {
        // SYNC POINT: Acquire pairs with the Release of `go_heavy`: seeing
        // the bit clear, we see what the writer published while light.
        self.sleepers.load(Ordering::Acquire) & LIGHT != 0
    }

    /// Asks writers of these words never to be light again (sticky): for a
    /// process that cannot call `membarrier` and must attach to a lossless
    /// topic; it then waits until [`has_light_writer`](Self::has_light_writer)
    /// is `false`.
    pub fn request_heavy_writers(&self) {
        self.sleepers.fetch_or(REQUEST, Ordering::SeqCst);
    }

    /// Called by a writer that may be light (see "Light writers") after it
    /// made something visible to readers, in place of
    /// [`notify`](Self::notify): a compiler fence instead of `fence(SeqCst)`
    /// while `waker` is light. Makes a system call only when a reader
    /// sleeps, or is about to.
    #[inline(always)]
    pub fn notify_as(&self, waker: &mut LightWaker) {
        if waker.light {
            light_fence();
            let seen = self.sleepers.load(Ordering::Relaxed);
            // A light writer is capable (`go_light` is only called then, and
            // whatever makes it incapable makes it heavy too): a sleeper or
            // a request is all there is to look for.
            debug_assert!(waker.capable);
            if seen & (COUNT | REQUEST) != 0 {
                self.notify_slow(waker, seen);
            }
            return;
        }
        // SYNC POINT (Dekker, pairs with the fence in `sleep_unless`).
        fence(Ordering::SeqCst);
        let seen = self.sleepers.load(Ordering::Relaxed);
        if seen & COUNT != 0 || (seen & REQUEST != 0 && waker.capable) {
            self.notify_slow(waker, seen);
        } else if waker.capable {
            waker.quiet += 1;
            if waker.quiet >= waker.limit {
                self.go_light(waker);
            }
        }
    }

    /// `notify_as` found sleepers (or a request not to be light): turns
    /// heavy, then wakes.
    #[cold]
    #[inline(never)]
    fn notify_slow(&self, waker: &mut LightWaker, seen: u64) {
        waker.quiet = 0;
        if seen & REQUEST != 0 {
            waker.capable = false;
        }
        let seen = if waker.light {
            self.go_heavy(waker)
        } else {
            seen
        };
        if seen & COUNT != 0 {
            self.wake(seen);
        }
    }

    /// Makes `waker` light: sets `LIGHT`, then fences, so that a reader
    /// that counts itself in after the fence sees the bit, and one that
    /// counted itself in before is seen by every later load of the count.
    fn go_light(&self, waker: &mut LightWaker) {
        let before = self.sleepers.fetch_or(LIGHT, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if before & REQUEST != 0 {
            // A reader asked for heavy writers since our last look.
            self.go_heavy(waker);
            waker.capable = false;
            return;
        }
        waker.light = true;
    }

    /// Makes `waker` heavy (or clears a `LIGHT` bit left by a dead light
    /// writer whose role `waker` took over): fences, then clears `LIGHT`
    /// with Release, so that a reader that reads the bit clear sees every
    /// message published before. Returns the sleeper word as it was.
    pub fn go_heavy(&self, waker: &mut LightWaker) -> u64 {
        fence(Ordering::SeqCst);
        waker.light = false;
        waker.quiet = 0;
        self.sleepers.fetch_and(!LIGHT, Ordering::SeqCst) & !LIGHT
    }

    /// [`notify_as`](Self::notify_as) for a writer that shares these words
    /// with others of its kind (see "Light writers that share"): a work
    /// queue's producer (`one`: a push wakes one consumer) or consumer (a
    /// pop wakes every producer). `flag` is the writer's own word in the
    /// segment that says whether it is light, so that whoever takes over
    /// its place after it dies can take it out of the count.
    #[inline(always)]
    pub fn notify_shared(&self, waker: &mut LightWaker, flag: &AtomicU64, one: bool) {
        if waker.light {
            light_fence();
            let seen = self.sleepers.load(Ordering::Relaxed);
            if seen & (COUNT | REQUEST) != 0 {
                self.notify_shared_slow(waker, flag, seen, one);
            }
            return;
        }
        // SYNC POINT (Dekker, pairs with the fence in `sleep_unless`).
        fence(Ordering::SeqCst);
        let seen = self.sleepers.load(Ordering::Relaxed);
        if seen & COUNT != 0 || (seen & REQUEST != 0 && waker.capable) {
            self.notify_shared_slow(waker, flag, seen, one);
        } else if waker.capable {
            waker.quiet += 1;
            if waker.quiet >= waker.limit {
                self.go_light_shared(waker, flag);
            }
        }
    }

    /// `notify_shared` found sleepers (or a request not to be light):
    /// turns heavy, then wakes.
    #[cold]
    #[inline(never)]
    fn notify_shared_slow(&self, waker: &mut LightWaker, flag: &AtomicU64, seen: u64, one: bool) {
        waker.quiet = 0;
        if seen & REQUEST != 0 {
            waker.capable = false;
        }
        let seen = if waker.light {
            self.go_heavy_shared(waker, flag)
        } else {
            seen
        };
        if seen & COUNT != 0 {
            self.wake_n(seen, !one);
        }
    }

    /// Makes a shared writer light: counts it in `light_writers`, then
    /// fences, so that a reader whose check of the count comes after its
    /// own fence either sees it, or is seen by every later load of the
    /// sleeper count (Dekker, on the two words). `flag` goes
    /// [`LIGHT_PENDING`] before the count moves and [`LIGHT_ON`] after.
    #[cold]
    fn go_light_shared(&self, waker: &mut LightWaker, flag: &AtomicU64) {
        flag.store(LIGHT_PENDING, Ordering::Relaxed);
        self.light_writers.fetch_add(1, Ordering::SeqCst);
        // SYNC POINT: Release pairs with the Acquire load in
        // `forget_dead_writer`: one that reads LIGHT_ON finds the increment
        // before its decrement.
        flag.store(LIGHT_ON, Ordering::Release);
        fence(Ordering::SeqCst);
        waker.light = true;
        if self.sleepers.load(Ordering::Relaxed) & REQUEST != 0 {
            // A reader asked for heavy writers since our last look.
            self.go_heavy_shared(waker, flag);
            waker.capable = false;
        }
    }

    /// Makes a shared writer heavy, if it is light: fences, then takes it
    /// out of the count with Release, so that a reader that reads the
    /// count without it sees every message it published light. Returns
    /// the sleeper word, read after the fence.
    pub fn go_heavy_shared(&self, waker: &mut LightWaker, flag: &AtomicU64) -> u64 {
        fence(Ordering::SeqCst);
        waker.quiet = 0;
        if waker.light {
            waker.light = false;
            flag.store(LIGHT_PENDING, Ordering::Relaxed);
            self.light_writers.fetch_sub(1, Ordering::Release);
            flag.store(LIGHT_OFF, Ordering::Release);
        }
        self.sleepers.load(Ordering::Relaxed)
    }

    /// Takes a dead shared writer out of the count, by its `flag`: for
    /// the process that took over its place (a claim-table entry). Only a
    /// flag that says [`LIGHT_ON`] is counted for sure; one that says
    /// [`LIGHT_PENDING`] (killed between the two steps, a few
    /// instructions) may or may not be, and is left in the count: readers
    /// then pay for a `membarrier` they may not need, which is safe, where
    /// a decrement it was never counted for would not be. Either way the
    /// flag is cleared for the new owner.
    pub fn forget_dead_writer(&self, flag: &AtomicU64) {
        // The flag first, then the count: a forgetter killed between the
        // two leaves the count one too high (safe), where the other order
        // would let the next holder of the entry count it out again.
        // SYNC POINT: Acquire pairs with the Release store of LIGHT_ON in
        // `go_light_shared` (the increment comes first).
        if flag.swap(LIGHT_OFF, Ordering::AcqRel) == LIGHT_ON {
            self.light_writers.fetch_sub(1, Ordering::Release);
        }
    }

    /// Shared writers light now (see "Light writers that share"), dead
    /// ones not yet forgotten included.
    pub fn light_writer_count(&self) -> u32 {
        self.light_writers.load(Ordering::Relaxed)
    }

    /// Step 6: counts us out, unless a writer reset the count since we
    /// counted ourselves in (then we are not in it any more).
    fn leave(&self, epoch: u64) {
        let mut current = self.sleepers.load(Ordering::Relaxed);
        while current & EPOCHS == epoch && current & COUNT != 0 {
            match self.sleepers.compare_exchange_weak(
                current,
                current - 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }

    /// Steps 1 and 2 and nothing after: what a reader killed while asleep
    /// leaves behind (for model checks and tests).
    #[doc(hidden)]
    pub fn count_in_and_die(&self) {
        let _ = self.word.load();
        self.sleepers.fetch_add(TICKET + 1, Ordering::Relaxed);
    }
}

/// A shared writer's flag (see [`WakeWords::notify_shared`]): heavy.
pub const LIGHT_OFF: u64 = 0;
/// A shared writer's flag: between its flag and the count (going light or
/// heavy): it may or may not be counted.
pub const LIGHT_PENDING: u64 = 1;
/// A shared writer's flag: light, and counted in `light_writers`.
pub const LIGHT_ON: u64 = 2;

/// Messages a heavy writer publishes with nobody asleep before it turns
/// light (see "Light writers"): enough that a reader that sleeps between
/// messages keeps its writer heavy (and so never pays for `membarrier`),
/// few enough that a busy writer turns light within microseconds.
pub const QUIET_NOTIFIES: u32 = 256;

/// Longest sleep of a reader that cannot call `membarrier` while a light
/// writer may be at work (see "Light writers").
pub const FALLBACK_SLEEP: Duration = Duration::from_millis(1);

/// The state of one writer that may be light (see "Light writers"): a
/// broadcast publisher, the one writer of its topic's [`WakeWords`], or a
/// work queue's producer or consumer, which share theirs (see "Light
/// writers that share").
#[derive(Debug, Clone)]
pub struct LightWaker {
    /// Whether it skips the fence now.
    light: bool,
    /// Whether it may ever be light: its process is registered for
    /// `membarrier`, and no reader asked for heavy writers.
    capable: bool,
    /// Messages since it last found a reader asleep.
    quiet: u32,
    /// Quiet messages before it turns light ([`QUIET_NOTIFIES`]).
    limit: u32,
}

impl LightWaker {
    /// A writer that starts heavy, and turns light after
    /// [`QUIET_NOTIFIES`] quiet messages if `capable` (its process is
    /// registered: [`register_light`](crate::sync::register_light)).
    pub fn new(capable: bool) -> Self {
        LightWaker::with_quiet(capable, QUIET_NOTIFIES)
    }

    /// As [`new`](Self::new), turning light after `quiet` quiet messages:
    /// for model checks, which cannot run [`QUIET_NOTIFIES`] of them.
    #[doc(hidden)]
    pub fn with_quiet(capable: bool, quiet: u32) -> Self {
        LightWaker {
            light: false,
            capable,
            quiet: 0,
            limit: quiet,
        }
    }

    /// Whether it skips the fence now.
    pub fn is_light(&self) -> bool {
        self.light
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

/// The deadline `timeout` from now, or none (wait forever) if that is past
/// what an `Instant` can hold (`Duration::MAX`).
#[cfg(not(shmbus_loom))]
pub(crate) fn deadline_after(timeout: Duration) -> Option<std::time::Instant> {
    std::time::Instant::now().checked_add(timeout)
}

/// Paces one endpoint's slow checks (is the process we wait on alive?
/// have the producers gone?): at most once per interval, per handle and
/// across calls, so that polling calls (`try_send`, `try_push`, ...) take
/// part in them as much as blocking ones, and neither pays for them on
/// every call. The first check is due at once.
#[cfg(not(shmbus_loom))]
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    interval: Duration,
    last: Option<std::time::Instant>,
    /// Calls of `due_polled` left before it reads the clock again.
    skip: u32,
}

#[cfg(not(shmbus_loom))]
impl Pacer {
    pub(crate) fn new(interval: Duration) -> Self {
        Pacer {
            interval,
            last: None,
            skip: 0,
        }
    }

    /// Whether a check is due now; if so, counts it as done.
    pub(crate) fn due(&mut self) -> bool {
        let now = std::time::Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < self.interval => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }

    /// As [`due`](Self::due), for a call on every failed poll of a loop
    /// that may spin (a blocked push, an empty pop, a full lossless send):
    /// reads the clock on one call in 64 only, so a spinning endpoint pays
    /// a clock read per 64 polls, not per poll. A check made due at once
    /// (`expire`, or the first) is taken at once, and so is the first call
    /// after [`woke`](Self::woke).
    pub(crate) fn due_polled(&mut self) -> bool {
        if self.skip > 0 && self.last.is_some() {
            self.skip -= 1;
            return false;
        }
        self.skip = 63;
        self.due()
    }

    /// Whether a check would be due now ([`due`](Self::due)), without
    /// counting it as done.
    pub(crate) fn is_due(&self) -> bool {
        self.last
            .is_none_or(|last| last.elapsed() >= self.interval)
    }

    /// The caller slept: its next `due_polled` reads the clock (a sleep
    /// costs far more than that), so a waiter woken often but never timed
    /// out is not held back 64 wakes before it checks.
    pub(crate) fn woke(&mut self) {
        self.skip = 0;
    }

    /// Makes the next check due at once (after a sleep timed out: the
    /// process we wait for may have died).
    pub(crate) fn expire(&mut self) {
        self.last = None;
    }
}

/// The state of one wait, across its polls: the strategy and how many polls
/// since the last sleep. Every blocking operation (receive, pop, push,
/// lossless send) waits through one of these, so they all follow one
/// strategy ([`WaitStrategy::step`]).
#[cfg(not(shmbus_loom))]
pub(crate) struct Waiter {
    wait: WaitStrategy,
    /// Longest sleep: the liveness check interval, so a sleeper notices a
    /// dead writer.
    check_interval: Duration,
    polls: u32,
    slept: bool,
    backoff: crossbeam_utils::Backoff,
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
        }
    }

    /// Whether cheap-but-not-free checks are due: right after a sleep, and
    /// every 1024 polls while spinning; never before the first wait, which
    /// is on the latency path of every operation.
    pub(crate) fn checks_due(&self) -> bool {
        self.slept || self.polls % 1024 == 1023
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
        self.wait_once_with(|timeout| words.sleep_unless(ready, timeout), deadline)
    }

    /// As [`wait_once`](Self::wait_once), sleeping with `sleep` (given the
    /// longest sleep allowed): for waits on several words at once.
    #[inline]
    pub(crate) fn wait_once_with(
        &mut self,
        sleep: impl FnOnce(Option<Duration>) -> Wake,
        deadline: Option<std::time::Instant>,
    ) -> Waited {
        if let Some(deadline) = deadline {
            if (self.slept || self.polls % 64 == 0) && std::time::Instant::now() >= deadline {
                return Waited::Deadline;
            }
        }
        self.polls = self.polls.wrapping_add(1);
        self.slept = false;
        match self.wait.step(self.polls) {
            Step::Spin => crate::sync::spin_hint(),
            Step::Snooze => self.backoff.snooze(),
            Step::Sleep => return self.sleep(sleep, deadline),
        }
        Waited::Polled
    }

    /// The sleeping half of `wait_once`, kept out of the spinning loop.
    #[cold]
    #[inline(never)]
    fn sleep(
        &mut self,
        sleep: impl FnOnce(Option<Duration>) -> Wake,
        deadline: Option<std::time::Instant>,
    ) -> Waited {
        let mut timeout = self.check_interval;
        if let Some(deadline) = deadline {
            timeout = timeout.min(deadline.saturating_duration_since(std::time::Instant::now()));
        }
        let outcome = sleep(Some(timeout));
        self.polls = 0;
        self.slept = true;
        Waited::Slept(outcome)
    }
}

#[cfg(all(test, not(shmbus_loom)))]
mod tests {
    use super::*;

    /// With a zero interval every clock read finds the check due, so the
    /// answers show exactly which calls read the clock.
    #[test]
    fn a_polled_pacer_reads_the_clock_once_in_64_calls_unless_told() {
        let mut pacer = Pacer::new(Duration::ZERO);
        assert!(pacer.due_polled(), "the first call is due");
        let due: Vec<bool> = (0..128).map(|_| pacer.due_polled()).collect();
        assert_eq!(due.iter().filter(|&&d| d).count(), 2, "{due:?}");
        assert!(due[63] && due[127], "every 64th call reads the clock");

        pacer.woke();
        assert!(pacer.due_polled(), "the first call after a sleep is due");
        assert!(!pacer.due_polled());
        pacer.expire();
        assert!(pacer.due_polled(), "an expired pacer is due at once");
    }

    /// Shared writers turn light after their quiet messages and are
    /// counted while they are, each once; turning heavy takes each out;
    /// a sleeper turns the one that sees it heavy.
    #[test]
    fn shared_writers_are_counted_while_light() {
        let words = WakeWords::new();
        let flags = [AtomicU64::new(0), AtomicU64::new(0)];
        let mut a = LightWaker::with_quiet(true, 2);
        let mut b = LightWaker::with_quiet(true, 2);
        words.notify_shared(&mut a, &flags[0], true);
        assert!(!a.is_light() && words.light_writer_count() == 0);
        words.notify_shared(&mut a, &flags[0], true);
        assert!(a.is_light());
        assert_eq!(flags[0].load(Ordering::Relaxed), LIGHT_ON);
        for _ in 0..2 {
            words.notify_shared(&mut b, &flags[1], false);
        }
        assert_eq!(words.light_writer_count(), 2);
        // A sleeper counted in: the next writer to look turns heavy.
        let ticket = words.announce();
        words.notify_shared(&mut a, &flags[0], true);
        assert!(!a.is_light());
        assert_eq!(flags[0].load(Ordering::Relaxed), LIGHT_OFF);
        assert_eq!(words.light_writer_count(), 1);
        words.retire(ticket);
        words.go_heavy_shared(&mut b, &flags[1]);
        words.go_heavy_shared(&mut b, &flags[1]); // twice: counted out once
        assert_eq!(words.light_writer_count(), 0);
        assert_eq!(flags[1].load(Ordering::Relaxed), LIGHT_OFF);
    }

    /// A light writer that dies stays counted until whoever takes its
    /// place forgets it, by its flag: counted out if the flag says it was
    /// counted, left in (safe: only extra `membarrier`s) if it died
    /// between its flag and the count, never counted out twice.
    #[test]
    fn a_dead_light_writer_is_forgotten_by_its_flag() {
        let words = WakeWords::new();
        let flag = AtomicU64::new(0);
        // Killed while light: it never turns heavy.
        words.notify_shared(&mut LightWaker::with_quiet(true, 1), &flag, true);
        assert_eq!(words.light_writer_count(), 1);
        words.forget_dead_writer(&flag);
        assert_eq!(words.light_writer_count(), 0);
        words.forget_dead_writer(&flag);
        assert_eq!(words.light_writer_count(), 0, "forgotten once");
        // Killed between its flag and its increment: not counted out.
        let mut other = LightWaker::with_quiet(true, 1);
        words.notify_shared(&mut other, &flag, true);
        flag.store(LIGHT_PENDING, Ordering::Relaxed);
        words.forget_dead_writer(&flag);
        assert_eq!(words.light_writer_count(), 1);
        assert_eq!(flag.load(Ordering::Relaxed), LIGHT_OFF);
    }
}

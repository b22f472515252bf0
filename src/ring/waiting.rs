//! How a waiting process spends each poll: the decision logic of every
//! wait loop (receive, pop, push, lossless send), free of clocks and system
//! calls so that loom runs the same logic the endpoints do.

/// How a reader (or a blocked writer) waits.
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

    /// What to do on poll number `polls` (counted from 1 since the last
    /// sleep) that found nothing.
    #[inline]
    pub fn step(self, polls: u32) -> Step {
        match self {
            WaitStrategy::Spin => Step::Spin,
            WaitStrategy::Yield => Step::Snooze,
            WaitStrategy::Adaptive { spins } if polls <= spins => Step::Spin,
            WaitStrategy::Block | WaitStrategy::Adaptive { .. } => Step::Sleep,
        }
    }
}

impl Default for WaitStrategy {
    fn default() -> Self {
        Self::adaptive()
    }
}

/// One poll's worth of waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Spin once (a CPU hint).
    Spin,
    /// Spin a little, then yield the CPU (crossbeam's `snooze`).
    Snooze,
    /// Announce a sleep and sleep on the wakeup words, unless the re-check
    /// finds work (see `wait::WakeWords::sleep_unless`).
    Sleep,
}

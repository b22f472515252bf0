//! Which clock stamps a topic's messages ([`TopicBuilder::timestamps`]).
//!
//! [`TopicBuilder::timestamps`]: crate::TopicBuilder::timestamps

use rustix::time::{clock_gettime, ClockId};

use crate::segment::layout::{FLAG_TIME_MONOTONIC, FLAG_TIME_REALTIME};

/// The clock a topic's publish timestamps are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Clock {
    /// `CLOCK_REALTIME`: nanoseconds since the Unix epoch, comparable
    /// with wall-clock times from anywhere (and stepped by NTP).
    Realtime,
    /// `CLOCK_MONOTONIC`: nanoseconds since boot, never stepped, the same
    /// for every process on the machine: for latency.
    Monotonic,
}

impl Clock {
    /// The time now on this clock, in nanoseconds.
    ///
    /// ```
    /// let t = shmbus::Clock::Monotonic.now_ns();
    /// assert!(shmbus::Clock::Monotonic.now_ns() >= t);
    /// ```
    pub fn now_ns(self) -> u64 {
        let id = match self {
            Clock::Realtime => ClockId::Realtime,
            Clock::Monotonic => ClockId::Monotonic,
        };
        let t = clock_gettime(id);
        // Both clocks are non-negative on Linux; a time before 1970 reads 0.
        u64::try_from(t.tv_sec)
            .unwrap_or(0)
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::try_from(t.tv_nsec).unwrap_or(0))
    }

    pub(crate) fn flag(self) -> u32 {
        match self {
            Clock::Realtime => FLAG_TIME_REALTIME,
            Clock::Monotonic => FLAG_TIME_MONOTONIC,
        }
    }

    /// The clock a topic's flags name, if any.
    pub(crate) fn of_flags(flags: u32) -> Option<Clock> {
        if flags & FLAG_TIME_REALTIME != 0 {
            Some(Clock::Realtime)
        } else if flags & FLAG_TIME_MONOTONIC != 0 {
            Some(Clock::Monotonic)
        } else {
            None
        }
    }
}

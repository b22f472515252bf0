//! Where the parts of a topic's ring region lie: control block, attach
//! tables, slots. One function computes it for the creator and for every
//! validator, so they cannot disagree.

use crate::ring::broadcast::BroadcastCtrl;
use crate::ring::gate::{GateCtrl, SubscriberEntry};
use crate::ring::queue::{self, ClaimEntry, QueueCtrl};
use crate::ring::varlen::{self, VarlenCtrl};
use crate::ring::{packed_slots_words, slots_words};
use crate::segment::layout::{
    EntryConfig, FLAG_LOSSLESS, FLAG_VARIABLE, KIND_BROADCAST, KIND_QUEUE,
};

/// Byte offsets within a topic region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionLayout {
    /// Broadcast: the gate control block (lossless only). Queue: the
    /// producer table.
    pub table_a: u64,
    /// Broadcast: the subscriber table (lossless only). Queue: the consumer
    /// table.
    pub table_b: u64,
    /// Slots, or (variable-size) descriptors then arena.
    pub slots: u64,
    pub slot_words: usize,
    /// Fixed-slot broadcast topics with timestamps: a word per slot, after
    /// the slots (variable-size ones keep it in the descriptor).
    pub times: u64,
    pub time_words: usize,
    pub len: u64,
}

/// The shape of a topic, as stored in its entry.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub kind: u32,
    pub flags: u32,
    pub capacity: u32,
    pub slot_size: u32,
    pub max_writers: u32,
    pub max_readers: u32,
}

impl Shape {
    pub fn of(c: &EntryConfig) -> Shape {
        Shape {
            kind: c.kind,
            flags: c.flags,
            capacity: c.capacity,
            slot_size: c.slot_size,
            max_writers: c.max_writers,
            max_readers: c.max_readers,
        }
    }

    pub fn lossless(&self) -> bool {
        self.flags & FLAG_LOSSLESS != 0
    }

    /// Variable-size messages.
    pub fn variable(&self) -> bool {
        self.flags & FLAG_VARIABLE != 0
    }

    /// The clock that stamps the messages, if any.
    pub fn clock(&self) -> Option<crate::clock::Clock> {
        crate::clock::Clock::of_flags(self.flags)
    }

    /// A variable-size topic's arena: twice its largest message.
    pub fn arena_bytes(&self) -> u64 {
        u64::from(self.slot_size) * 2
    }

    /// The region layout, or `None` for an unknown kind or on overflow.
    pub fn layout(&self) -> Option<RegionLayout> {
        let size = |bytes: usize| bytes as u64;
        let table = |entries: u32, entry: usize| u64::from(entries).checked_mul(entry as u64);
        let (table_a, table_b, slots) = match self.kind {
            KIND_BROADCAST => {
                let ctrl = size(if self.variable() {
                    core::mem::size_of::<VarlenCtrl>()
                } else {
                    core::mem::size_of::<BroadcastCtrl>()
                });
                if self.lossless() {
                    let entries = ctrl + size(core::mem::size_of::<GateCtrl>());
                    let end = entries.checked_add(table(
                        self.max_readers,
                        core::mem::size_of::<SubscriberEntry>(),
                    )?)?;
                    (ctrl, entries, end)
                } else {
                    (ctrl, ctrl, ctrl)
                }
            }
            KIND_QUEUE => {
                let producers = size(core::mem::size_of::<QueueCtrl>());
                let consumers = producers
                    .checked_add(table(self.max_writers, core::mem::size_of::<ClaimEntry>())?)?;
                let end = consumers
                    .checked_add(table(self.max_readers, core::mem::size_of::<ClaimEntry>())?)?;
                (producers, consumers, end)
            }
            _ => return None,
        };
        let (capacity, slot_size) = (self.capacity as usize, self.slot_size as usize);
        let slot_words = match self.kind {
            KIND_BROADCAST if self.variable() => {
                varlen::layout_words(capacity, usize::try_from(self.arena_bytes()).ok()?)?
            }
            KIND_BROADCAST => packed_slots_words(capacity, slot_size)?,
            _ if self.variable() => queue::var_words(capacity)?,
            _ => slots_words(capacity, slot_size)?,
        };
        let times = slots.checked_add(u64::try_from(slot_words).ok()?.checked_mul(8)?)?;
        let time_words = match self.kind {
            KIND_BROADCAST if self.clock().is_some() && !self.variable() => capacity,
            _ => 0,
        };
        let len = times.checked_add(u64::try_from(time_words).ok()?.checked_mul(8)?)?;
        Some(RegionLayout {
            table_a,
            table_b,
            slots,
            slot_words,
            times,
            time_words,
            len,
        })
    }
}

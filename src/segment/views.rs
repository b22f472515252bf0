//! Views of a topic's ring region, validated once when the topic is opened
//! and kept valid by the segment they point into.
//!
//! A view holds the `Arc<Segment>` its references point into, so the
//! mapping outlives them. The references are stored with a `'static`
//! lifetime, which is the one unsafe trick of this module: it never leaves
//! it, because every accessor hands them out re-borrowed for the lifetime of
//! `&self` (the ring types are covariant in their lifetime).

use std::sync::Arc;

use super::layout::EntryConfig;
use super::region::Shape;
use super::{Segment, SharedView};
use crate::error::Error;
use crate::clock::Clock;
use crate::ring::any::AnyRing;
use crate::ring::gate::GatedRing;
use crate::ring::broadcast::{complete, BroadcastCtrl, BroadcastRing};
use crate::ring::varlen::{VarlenCtrl, VarlenRing};
use crate::ring::gate::{Gate, GateCtrl, SubscriberEntry};
use crate::ring::queue::{ClaimEntry, QueueCtrl, QueueRing};
use crate::sync::{fence, AtomicU64, Ordering};

/// Views of a topic region's parts, with errors naming the topic.
struct Region<'s> {
    seg: &'s Segment,
    name: &'s str,
    offset: u64,
}

impl<'s> Region<'s> {
    fn corrupt(&self, what: String) -> Error {
        Error::Corrupt {
            bus: self.seg.bus().to_owned(),
            what: format!("topic {:?}: {what}", self.name),
        }
    }

    fn at(&self, at: u64) -> Result<u64, Error> {
        self.offset
            .checked_add(at)
            .ok_or_else(|| self.corrupt(format!("region offset {} overflows", self.offset)))
    }

    fn one<T: SharedView>(&self, at: u64) -> Result<&'s T, Error> {
        self.seg
            .view(self.at(at)?)
            .map_err(|what| self.corrupt(what))
    }

    fn many<T: SharedView>(&self, at: u64, count: usize) -> Result<&'s [T], Error> {
        self.seg
            .view_slice(self.at(at)?, count)
            .map_err(|what| self.corrupt(what))
    }
}

/// A broadcast topic's ring (and gate, in lossless mode).
#[derive(Clone)]
pub(crate) struct BroadcastView {
    // Declared before `seg` only for readability: dropping references
    // touches no memory, so the order does not matter.
    ring: AnyRing<'static>,
    gate: Option<Gate<'static>>,
    /// The clock that stamps the messages, if any, and (fixed slots) the
    /// word per slot that holds the stamps.
    clock: Option<Clock>,
    times: &'static [AtomicU64],
    seg: Arc<Segment>,
}

impl BroadcastView {
    pub(crate) fn new(seg: Arc<Segment>, name: &str, config: &EntryConfig) -> Result<Self, Error> {
        let region = Region {
            seg: &seg,
            name,
            offset: config.region_offset,
        };
        let shape = Shape::of(config);
        let layout = shape
            .layout()
            .ok_or_else(|| region.corrupt("unknown topic kind".into()))?;
        let slots = region.many::<AtomicU64>(layout.slots, layout.slot_words)?;
        let ring = if shape.variable() {
            let ctrl: &VarlenCtrl = region.one(0)?;
            usize::try_from(shape.arena_bytes())
                .ok()
                .and_then(|arena| {
                    VarlenRing::new(ctrl, slots, config.capacity as usize, arena).ok()
                })
                .map(AnyRing::Var)
                .ok_or_else(|| {
                    region.corrupt("ring region does not match its capacity and arena".into())
                })?
        } else {
            let ctrl: &BroadcastCtrl = region.one(0)?;
            let ring = BroadcastRing::new(
                ctrl,
                slots,
                config.capacity as usize,
                config.slot_size as usize,
            )
            .map_err(|_| {
                region.corrupt("ring region does not match its capacity and slot size".into())
            })?;
            AnyRing::Fixed(ring)
        };
        let times = region.many::<AtomicU64>(layout.times, layout.time_words)?;
        let gate = if shape.lossless() {
            let gate_ctrl: &GateCtrl = region.one(layout.table_a)?;
            let entries =
                region.many::<SubscriberEntry>(layout.table_b, config.max_readers as usize)?;
            Some(Gate::new(gate_ctrl, entries))
        } else {
            None
        };
        // SAFETY: the views point into the mapping that `seg` keeps alive
        // (it never moves while mapped); `seg` is stored beside them, and
        // they leave this struct only re-borrowed for the lifetime of
        // `&self` (see the accessors). Only the lifetime changes.
        let (ring, gate, times) = unsafe {
            (
                core::mem::transmute::<AnyRing<'_>, AnyRing<'static>>(ring),
                gate.map(|g| core::mem::transmute::<Gate<'_>, Gate<'static>>(g)),
                core::mem::transmute::<&[AtomicU64], &'static [AtomicU64]>(times),
            )
        };
        Ok(BroadcastView {
            ring,
            gate,
            clock: shape.clock(),
            times,
            seg,
        })
    }

    #[inline]
    pub(crate) fn ring(&self) -> &AnyRing<'_> {
        &self.ring
    }

    #[inline]
    pub(crate) fn gate(&self) -> Option<&Gate<'_>> {
        self.gate.as_ref()
    }

    /// The clock that stamps this topic's messages, if any.
    #[inline]
    pub(crate) fn clock(&self) -> Option<Clock> {
        self.clock
    }

    /// The word that holds message `seq`'s timestamp, if the topic has one.
    fn time_word(&self, seq: u64) -> Option<&AtomicU64> {
        self.clock?;
        match &self.ring {
            AnyRing::Var(ring) => Some(ring.spare_word(seq)),
            // `times` has `capacity` words, a power of two (checked with
            // the region): the mask keeps the index in bounds.
            AnyRing::Fixed(ring) => self.times.get((seq & (ring.capacity() - 1)) as usize),
        }
    }

    /// Stores message `seq`'s timestamp. The lease holder calls it after
    /// beginning the message and before committing it: inside the
    /// seqlock's window, like the payload.
    #[inline]
    pub(crate) fn store_time(&self, seq: u64, ns: u64) {
        if let Some(word) = self.time_word(seq) {
            word.store(ns, Ordering::Relaxed);
        }
    }

    /// Message `seq`'s timestamp, if the topic has them and the message
    /// is still there: the word is loaded, then (after an Acquire fence)
    /// the message's stamp must still say "`seq` complete", or a later
    /// message has begun in its place and the word may be its (`None`).
    pub(crate) fn time_of(&self, seq: u64) -> Option<u64> {
        let word = self.time_word(seq)?;
        let ring = &self.ring;
        // SYNC POINT: Acquire pairs with the complete stamp's Release: the
        // word was stored before it.
        if ring.stamp(seq) != complete(seq) {
            return None;
        }
        let ns = word.load(Ordering::Relaxed);
        // SYNC POINT: pairs with the Release fence after a later message's
        // "being written" stamp (`begin`): if the load above saw that
        // message's word, the stamp below sees its stamp.
        fence(Ordering::Acquire);
        (ring.stamp(seq) == complete(seq)).then_some(ns)
    }

    pub(crate) fn seg(&self) -> &Arc<Segment> {
        &self.seg
    }
}

/// A work queue's ring and claim tables.
#[derive(Clone)]
pub(crate) struct QueueView {
    ring: QueueRing<'static>,
    seg: Arc<Segment>,
}

impl QueueView {
    pub(crate) fn new(seg: Arc<Segment>, name: &str, config: &EntryConfig) -> Result<Self, Error> {
        let region = Region {
            seg: &seg,
            name,
            offset: config.region_offset,
        };
        let shape = Shape::of(config);
        let layout = shape
            .layout()
            .ok_or_else(|| region.corrupt("unknown topic kind".into()))?;
        let ctrl: &QueueCtrl = region.one(0)?;
        let producers = region.many::<ClaimEntry>(layout.table_a, config.max_writers as usize)?;
        let consumers = region.many::<ClaimEntry>(layout.table_b, config.max_readers as usize)?;
        let slots = region.many::<AtomicU64>(layout.slots, layout.slot_words)?;
        let ring = if shape.variable() {
            QueueRing::new_var(ctrl, producers, consumers, slots, config.capacity as usize)
        } else {
            QueueRing::new(
                ctrl,
                producers,
                consumers,
                slots,
                config.capacity as usize,
                config.slot_size as usize,
            )
        }
        .map_err(|_| {
            region.corrupt("queue region does not match its capacity and slot size".into())
        })?;
        // SAFETY: as in `BroadcastView::new`.
        let ring = unsafe { core::mem::transmute::<QueueRing<'_>, QueueRing<'static>>(ring) };
        Ok(QueueView { ring, seg })
    }

    #[inline]
    pub(crate) fn ring(&self) -> &QueueRing<'_> {
        &self.ring
    }

    pub(crate) fn seg(&self) -> &Arc<Segment> {
        &self.seg
    }
}

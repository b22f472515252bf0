//! Loom models of lossless broadcast: the publisher gated on subscriber
//! cursors (`shmbus::ring::gate`).
#![cfg(shmbus_loom)]

use loom::sync::Arc;
use loom::thread;
use shmbus::ring::broadcast::{slots_words, BroadcastCtrl, BroadcastRing, Read};
use shmbus::ring::gate::{Gate, GateCache, GateCtrl, SubscriberEntry};
use shmbus::ring::{Liveness, Owner};
use shmbus::sync::AtomicU64;

const SLOT_BYTES: usize = 8;

struct Heap {
    ctrl: BroadcastCtrl,
    slots: Vec<AtomicU64>,
    gate: GateCtrl,
    entries: Vec<SubscriberEntry>,
    capacity: usize,
}

impl Heap {
    fn new(capacity: usize, subscribers: usize) -> Arc<Self> {
        Arc::new(Heap {
            ctrl: BroadcastCtrl::new(),
            slots: (0..slots_words(capacity, SLOT_BYTES).unwrap())
                .map(|_| AtomicU64::new(0))
                .collect(),
            gate: GateCtrl::new(),
            entries: (0..subscribers).map(|_| SubscriberEntry::new()).collect(),
            capacity,
        })
    }

    fn ring(&self) -> BroadcastRing<'_> {
        BroadcastRing::new(&self.ctrl, &self.slots, self.capacity, SLOT_BYTES).unwrap()
    }

    fn gate(&self) -> Gate<'_> {
        Gate::new(&self.gate, &self.entries)
    }
}

/// Publishes `count` messages as the lossless publisher does: wait (here,
/// yield) until the gate has room, publish, then the wakeup check whose
/// SeqCst fence the attach protocol relies on. `on_block` runs whenever it
/// has to wait.
fn publish_gated(heap: &Heap, count: u64, mut on_block: impl FnMut(&Gate<'_>)) {
    let (ring, gate) = (heap.ring(), heap.gate());
    let mut cache = GateCache::default();
    for seq in 0..count {
        while !cache.has_space(&gate, seq, ring.capacity()) {
            on_block(&gate);
            thread::yield_now();
        }
        ring.publish(seq, &seq.to_ne_bytes());
        ring.ctrl().wake().notify();
    }
}

/// Attaches as a lossless subscriber starting at the next message, then
/// reads up to message `until`, checking each is the one expected and was
/// never overwritten.
fn subscribe_and_read(heap: &Heap, me: Owner, until: u64) -> Vec<u64> {
    let (ring, gate) = (heap.ring(), heap.gate());
    let capacity = ring.capacity();
    let index = gate
        .claim(me, ring.head().saturating_sub(capacity - 1))
        .unwrap();
    gate.announce();
    let mut cursor = ring.head();
    gate.advance(index, cursor);
    let mut got = Vec::new();
    while cursor < until {
        let mut out = [0u8; SLOT_BYTES];
        match ring.read(cursor, &mut out) {
            Read::Message { .. } => {
                assert_eq!(u64::from_ne_bytes(out), cursor, "torn or misplaced");
                got.push(cursor);
                cursor += 1;
                gate.advance(index, cursor);
            }
            Read::Empty => thread::yield_now(),
            Read::Overwritten => panic!("lossless publisher overwrote unread message {cursor}"),
            Read::BadLength { len } => panic!("bad length {len}"),
        }
    }
    got
}

/// Proves, for a subscriber attaching while the publisher publishes 3
/// messages into a ring of capacity 2: the publisher never overwrites a
/// message the attached subscriber has not read (attach races included),
/// and the subscriber receives every message from its start on, in order.
#[test]
fn publisher_never_overwrites_an_unread_message() {
    loom::model(|| {
        let heap = Heap::new(2, 1);
        let subscriber = {
            let heap = heap.clone();
            thread::spawn(move || subscribe_and_read(&heap, Owner::new(1, 1), 3))
        };
        publish_gated(&heap, 3, |_| {});
        let got = subscriber.join().unwrap();
        let first = got.first().copied().unwrap_or(3);
        assert_eq!(
            got,
            (first..3).collect::<Vec<_>>(),
            "nothing lost after the start"
        );
    });
}

/// Proves that a subscriber whose process died, holding the publisher back,
/// is evicted once (counted), and the publisher resumes while a live
/// subscriber that attaches meanwhile still gets every message from its
/// start on.
#[test]
fn dead_subscriber_is_evicted_and_the_publisher_resumes() {
    loom::model(|| {
        let heap = Heap::new(1, 2);
        let dead = Owner::new(9, 9);
        // A subscriber that attached at 0 and died without reading.
        let index = heap.gate().claim(dead, 0).unwrap();
        heap.gate().advance(index, 0);
        let live = Owner::new(1, 1);
        let subscriber = {
            let heap = heap.clone();
            thread::spawn(move || subscribe_and_read(&heap, live, 2))
        };
        publish_gated(&heap, 2, |gate| {
            gate.evict_dead(|o| {
                if o == dead {
                    Liveness::Dead
                } else {
                    Liveness::Alive
                }
            });
        });
        let got = subscriber.join().unwrap();
        // It may attach after the last message (and then reads nothing);
        // otherwise it reads everything from its start on.
        let first = got.first().copied().unwrap_or(2);
        assert_eq!(got, (first..2).collect::<Vec<_>>());
        assert_eq!(heap.gate.evictions(), 1);
        // The entry says so, unless the live subscriber reused it since.
        let entry = &heap.entries[index];
        assert!(entry.is_evicted() || entry.owner() == Some(live));
    });
}

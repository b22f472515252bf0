//! Loom models of lossless broadcast: the publisher gated on subscriber
//! cursors (`shmbus::ring::gate`), with the same compositions the
//! endpoints run: `Gate::attach` for a subscriber, `Gate::make_room` before
//! each publish, the `holds` check before each read.
#![cfg(shmbus_loom)]

use loom::sync::Arc;
use loom::thread;
use shmbus::ring::broadcast::{slots_words, BroadcastCtrl, BroadcastRing, StartAt};
use shmbus::ring::gate::{testing, Gate, GateCache, GateCtrl, GatedRead, SubscriberEntry};
use shmbus::ring::{Liveness, Owner};
use shmbus::sync::AtomicU64;
use shmbus::wait::LightWaker;

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

fn alive(_: Owner) -> Liveness {
    Liveness::Alive
}

/// Publishes `count` messages as the lossless publisher does: make room
/// (here, yield while there is none; `check` gives the liveness oracle the
/// publisher's paced check would use), publish, then the wakeup check whose
/// SeqCst fence the attach protocol relies on.
///
/// The publisher turns light after its first message (see "Light writers"
/// in `shmbus::wait`), so attaching subscribers take the heavy-fence path.
fn publish_gated(heap: &Heap, count: u64, mut check: impl FnMut(Owner) -> Liveness) {
    let (ring, gate) = (heap.ring(), heap.gate());
    let mut cache = GateCache::default();
    let mut waker = LightWaker::with_quiet(true, 1);
    for seq in 0..count {
        while !gate.make_room(&mut cache, seq, ring.capacity(), Some(&mut check)) {
            thread::yield_now();
        }
        ring.publish(seq, &seq.to_ne_bytes());
        ring.ctrl().wake().notify_as(&mut waker);
    }
}

/// What a subscriber's reading loop ended with.
#[derive(Debug, PartialEq)]
enum End {
    /// Read everything up to the end.
    Done(Vec<u64>),
    /// Found its entry taken from it and stopped, after reading these.
    Evicted(Vec<u64>),
}

/// Attaches as a lossless subscriber starting at the next message (the
/// endpoint's composition), then reads up to message `until` as the
/// endpoint does: check the entry is still ours, read, publish the cursor.
/// Every message read must be the one expected and never overwritten while
/// the entry was ours.
fn subscribe_and_read(heap: &Heap, me: Owner, until: u64) -> End {
    let (ring, gate) = (heap.ring(), heap.gate());
    let attached = gate.attach(&ring, me, StartAt::Next, alive).unwrap();
    read_from(heap, me, attached.index, attached.cursor, until)
}

fn read_from(heap: &Heap, me: Owner, index: usize, cursor: u64, until: u64) -> End {
    read_gated(heap, me, index, cursor, Some(until))
}

/// Reads as a lossless subscriber does (`Gate::read`, then
/// `Gate::advance_held`), up to message `until`, waiting (yielding) for
/// what is not published yet; or, with `until` `None`, only what is there
/// now (loom needs finite runs). A message read while the entry was ours
/// is never one the publisher overwrote: the gate must say `Evicted` then.
fn read_gated(heap: &Heap, me: Owner, index: usize, mut cursor: u64, until: Option<u64>) -> End {
    let (ring, gate) = (heap.ring(), heap.gate());
    let mut got = Vec::new();
    while until.is_none_or(|until| cursor < until) {
        let mut out = [0u8; SLOT_BYTES];
        match gate.read(&ring, index, me, cursor, &mut out) {
            GatedRead::Message { .. } => {
                assert_eq!(u64::from_ne_bytes(out), cursor, "torn or misplaced");
                got.push(cursor);
                cursor += 1;
                gate.advance_held(index, me, cursor);
            }
            GatedRead::Empty if until.is_some() => thread::yield_now(),
            GatedRead::Empty => break,
            GatedRead::Evicted => return End::Evicted(got),
            GatedRead::Overwritten => {
                panic!(
                    "lossless publisher overwrote unread message {cursor} of a gating subscriber"
                )
            }
            GatedRead::BadLength { len } => panic!("bad length {len}"),
        }
    }
    End::Done(got)
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
        publish_gated(&heap, 3, alive);
        let End::Done(got) = subscriber.join().unwrap() else {
            panic!("a live subscriber was evicted");
        };
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
        testing::attached(&heap.entries[0], dead, 0);
        let live = Owner::new(1, 1);
        let subscriber = {
            let heap = heap.clone();
            thread::spawn(move || subscribe_and_read(&heap, live, 2))
        };
        publish_gated(&heap, 2, |o| {
            if o == dead {
                Liveness::Dead
            } else {
                Liveness::Alive
            }
        });
        let End::Done(got) = subscriber.join().unwrap() else {
            panic!("a live subscriber was evicted");
        };
        // It may attach after the last message (and then reads nothing);
        // otherwise it reads everything from its start on.
        let first = got.first().copied().unwrap_or(2);
        assert_eq!(got, (first..2).collect::<Vec<_>>());
        assert_eq!(heap.gate.evictions(), 1);
        // The entry says so, unless the live subscriber reused it since.
        let entry = &heap.entries[0];
        assert!(entry.is_evicted() || entry.owner() == Some(live));
    });
}

/// Reads what is there now (see `read_gated`).
fn read_available(heap: &Heap, me: Owner, index: usize, cursor: u64) -> End {
    read_gated(heap, me, index, cursor, None)
}

/// Proves what an eviction of a subscriber that is in fact still alive
/// (only possible if its entry is overwritten, or its liveness misjudged)
/// can and cannot do: the evicted subscriber, finding its next message
/// overwritten, always knows it was evicted (a lossless subscriber never
/// takes an overwrite for a lag), and its entry is not given to a new
/// subscriber while it may still be alive (the table is full: attaching
/// fails instead).
///
/// Fails if `Gate::read` does not reload the stamp with Acquire before
/// looking at the entry again (`BroadcastRing::stamp`), or if the publisher
/// writes its "being written" stamp without Release: the reader can see the
/// publisher's stamp and still its own, stale, owner word.
/// Fails if `Gate::claim` takes an evicted entry without knowing its old
/// owner dead.
#[test]
fn evicted_subscriber_still_alive_knows_it_and_keeps_its_entry() {
    loom::model(|| {
        let heap = Heap::new(2, 1);
        let (a, b) = (Owner::new(1, 1), Owner::new(2, 2));
        // A attached at 0; messages 0 and 1 are out; the publisher will
        // wrongly judge A dead when it holds it back.
        testing::attached(&heap.entries[0], a, 0);
        for seq in 0..2u64 {
            heap.ring().publish(seq, &seq.to_ne_bytes());
        }
        let a_reader = {
            let heap = heap.clone();
            thread::spawn(move || read_available(&heap, a, 0, 0))
        };
        let b_reader = {
            let heap = heap.clone();
            thread::spawn(move || {
                // B attaches with the true oracle (A is alive) at the
                // oldest message the gate protects, behind A.
                let (ring, gate) = (heap.ring(), heap.gate());
                match gate.attach(&ring, b, StartAt::Oldest, alive) {
                    None => End::Done(Vec::new()), // the table is full: A may live
                    Some(attached) => panic!(
                        "took entry {} while its evicted owner may be alive",
                        attached.index
                    ),
                }
            })
        };
        let (ring, gate) = (heap.ring(), heap.gate());
        let mut cache = GateCache::default();
        let mut misjudge = |o: Owner| {
            if o == a {
                Liveness::Dead
            } else {
                Liveness::Alive
            }
        };
        for seq in 2..4u64 {
            if !gate.make_room(&mut cache, seq, ring.capacity(), Some(&mut misjudge)) {
                break;
            }
            ring.publish(seq, &seq.to_ne_bytes());
            ring.ctrl().wake().notify();
        }
        let _ = a_reader.join().unwrap();
        let _ = b_reader.join().unwrap();
    });
}

/// Proves that a new subscriber takes back the entry of one that died at
/// any point of attaching or reading, when the table is full: a dead
/// attached subscriber is evicted (counted once, even with two attaching at
/// once), a dead half-claimed entry is taken without a count, and a live
/// subscriber's entry is never taken.
///
/// Fails if `Gate::claim` takes an entry without knowing its owner dead,
/// or if every attacher that finds a dead subscriber counts its eviction
/// (not only the winner of the compare-and-swap that evicts it).
#[test]
fn attach_takes_back_entries_of_dead_subscribers_only() {
    loom::model(|| {
        let heap = Heap::new(2, 3);
        let (dead_attached, dead_claiming, live) =
            (Owner::new(7, 1), Owner::new(8, 1), Owner::new(9, 1));
        testing::attached(&heap.entries[0], dead_attached, 0);
        testing::claiming(&heap.entries[1], dead_claiming);
        testing::attached(&heap.entries[2], live, 0);
        let oracle = move |o: Owner| {
            if o == dead_attached || o == dead_claiming {
                Liveness::Dead
            } else {
                Liveness::Alive
            }
        };
        let other = {
            let heap = heap.clone();
            thread::spawn(move || {
                heap.gate()
                    .attach(&heap.ring(), Owner::new(2, 2), StartAt::Next, oracle)
                    .map(|a| a.index)
            })
        };
        let mine = heap
            .gate()
            .attach(&heap.ring(), Owner::new(1, 1), StartAt::Next, oracle)
            .map(|a| a.index);
        let theirs = other.join().unwrap();
        let (mine, theirs) = (mine.unwrap(), theirs.unwrap());
        assert_ne!(mine, theirs);
        assert!(
            mine < 2 && theirs < 2,
            "the live subscriber's entry was taken"
        );
        assert_eq!(
            heap.gate.evictions(),
            1,
            "one dead attached subscriber, counted once"
        );
        assert_eq!(heap.entries[2].owner(), Some(live));
    });
}

/// Proves that a subscriber cloned beside another at its cursor
/// (`Gate::attach_beside`, what `Subscriber::try_clone` does) gets every
/// message from that cursor on, even when the original moves past it at
/// once and the publisher rescans meanwhile: the clone takes a table entry
/// the publisher scans before the original's (the order in which a stale
/// scan could miss it), in a ring of 2 that the 3 messages fill.
#[test]
fn clone_beside_a_subscriber_gets_every_message_from_its_cursor() {
    loom::model(|| {
        let heap = Heap::new(2, 2);
        let me = Owner::new(1, 1);
        // The original holds entry 1, at message 0; entry 0 is free.
        testing::attached(&heap.entries[1], me, 0);
        let subscribers = {
            let heap = heap.clone();
            thread::spawn(move || {
                let gate = heap.gate();
                let clone = gate.attach_beside(me, 0, alive).expect("a free entry");
                assert_eq!(clone.index, 0);
                // The original moves on at once, then the clone reads all,
                // then the original the rest.
                let first = read_from(&heap, me, 1, 0, 1);
                let cloned = read_from(&heap, me, clone.index, clone.cursor, 3);
                let rest = read_from(&heap, me, 1, 1, 3);
                (first, cloned, rest)
            })
        };
        publish_gated(&heap, 3, alive);
        let (first, cloned, rest) = subscribers.join().unwrap();
        assert_eq!(first, End::Done(vec![0]));
        assert_eq!(cloned, End::Done(vec![0, 1, 2]), "the clone lost nothing");
        assert_eq!(rest, End::Done(vec![1, 2]));
    });
}

/// Proves that a subscriber storing its cursor in batches (here every
/// second read, in a ring of 2, as `Subscriber::consumed` does with
/// `Gate::should_store`, and storing what it has not before it waits)
/// never strands a publisher that sleeps for room on the gate's wake
/// words: in every interleaving, 4 messages get through in order and both
/// sides finish (a lost wakeup would leave the publisher asleep, which loom
/// reports).
///
/// Fails if the store before waiting is dropped and the batch is the
/// whole ring (`MASK = 3`): the subscriber then waits for a message with
/// its cursor unstored while the publisher sleeps for room.
#[test]
fn batched_cursor_stores_never_strand_a_sleeping_publisher() {
    const MASK: u64 = 1;
    const COUNT: u64 = 4;
    loom::model(|| {
        let heap = Heap::new(2, 1);
        let me = Owner::new(1, 1);
        testing::attached(&heap.entries[0], me, 0);
        let subscriber = {
            let heap = heap.clone();
            thread::spawn(move || {
                let (ring, gate) = (heap.ring(), heap.gate());
                let (mut cursor, mut stored) = (0u64, 0u64);
                let store = |cursor: u64, stored: &mut u64| {
                    if gate.advance_held(0, me, cursor) {
                        gate.ctrl().space().notify();
                    }
                    *stored = cursor;
                };
                while cursor < COUNT {
                    let mut out = [0u8; SLOT_BYTES];
                    match gate.read(&ring, 0, me, cursor, &mut out) {
                        GatedRead::Message { .. } => {
                            assert_eq!(u64::from_ne_bytes(out), cursor, "torn or misplaced");
                            cursor += 1;
                            if gate.should_store(cursor, MASK) {
                                store(cursor, &mut stored);
                            }
                        }
                        GatedRead::Empty => {
                            if stored != cursor {
                                store(cursor, &mut stored);
                            }
                            thread::yield_now();
                        }
                        other => panic!("{other:?}"),
                    }
                }
            })
        };
        let (ring, gate) = (heap.ring(), heap.gate());
        let capacity = ring.capacity();
        let mut cache = GateCache::default();
        for seq in 0..COUNT {
            while !gate.make_room(&mut cache, seq, capacity, None) {
                let room = || {
                    gate.min_cursor_before(seq, capacity)
                        .is_none_or(|min| seq < min.saturating_add(capacity))
                };
                gate.ctrl().space().sleep_unless(room, None);
            }
            ring.publish(seq, &seq.to_ne_bytes());
            ring.ctrl().wake().notify();
        }
        subscriber.join().unwrap();
    });
}

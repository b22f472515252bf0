//! Loom models of the variable-size work queue (`shmbus::ring::queue`
//! over units of an arena: `QueueRing::new_var`): messages that claim
//! several positions with one compare-and-swap, padding before a message
//! that would wrap round the arena's end, and the recovery of a dead
//! claimer's whole span.
#![cfg(shmbus_loom)]

use loom::sync::atomic::AtomicBool;
use loom::sync::Arc;
use loom::thread;
use shmbus::ring::queue::{
    table, units_for, var_words, ClaimEntry, PopBlocked, Popped, PushBlocked, QueueCtrl, QueueRing,
    Recovery, Side,
};
use shmbus::ring::{Liveness, Owner};
use shmbus::sync::{AtomicU64, Ordering};

/// Units of the arena: messages of up to two units (112 bytes).
const UNITS: usize = 4;
/// A message of two units (60 bytes and the header: 76 of 128 bytes).
const TWO_UNITS: usize = 60;
/// A message of one unit.
const ONE_UNIT: usize = 8;

struct Heap {
    ctrl: QueueCtrl,
    producers: Vec<ClaimEntry>,
    consumers: Vec<ClaimEntry>,
    words: Vec<AtomicU64>,
}

impl Heap {
    fn new(producers: usize, consumers: usize) -> Arc<Self> {
        Arc::new(Heap {
            ctrl: QueueCtrl::new(),
            producers: (0..producers).map(|_| ClaimEntry::new()).collect(),
            consumers: (0..consumers).map(|_| ClaimEntry::new()).collect(),
            words: (0..var_words(UNITS).unwrap())
                .map(|_| AtomicU64::new(0))
                .collect(),
        })
    }

    fn ring(&self) -> QueueRing<'_> {
        QueueRing::new_var(
            &self.ctrl,
            &self.producers,
            &self.consumers,
            &self.words,
            UNITS,
        )
        .unwrap()
    }

    /// Pushes and pops `units` one-unit messages alone (no threads yet),
    /// so that the tail starts there: a later two-unit message from unit 3
    /// would wrap, and goes after one unit of padding.
    fn advance(&self, units: u64) {
        let ring = self.ring();
        for _ in 0..units {
            ring.push(&ring.producers()[0], &[0; ONE_UNIT], || {})
                .unwrap();
            let mut out = [0u8; ONE_UNIT];
            ring.pop(&ring.consumers()[0], &mut out, || {}).unwrap();
        }
    }
}

/// Message `tag`: `len` bytes, each telling the tag and its place.
fn message(tag: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| tag.wrapping_mul(16).wrapping_add(i as u8))
        .collect()
}

/// One push attempt, as the endpoint makes it (`QueueRing::push`): false
/// if there is no room now; a unit reported corrupt fails the model.
fn push(heap: &Heap, entry: usize, msg: &[u8]) -> bool {
    let ring = heap.ring();
    match ring.push(&ring.producers()[entry], msg, || {}) {
        Ok(_) => true,
        Err(PushBlocked::Corrupt { pos, seq }) => panic!("corrupt unit {pos}: {seq:#x}"),
        Err(_) => false,
    }
}

/// Pops until the queue looks empty (never spins: loom needs finite runs),
/// tombstones and padding skipped.
fn pop_available(heap: &Heap, entry: usize, got: &mut Vec<Vec<u8>>) {
    let ring = heap.ring();
    let entry = &ring.consumers()[entry];
    loop {
        let mut out = vec![0u8; ring.slot_bytes()];
        match ring.pop(entry, &mut out, || {}) {
            Ok((_, Popped::Message { len })) => got.push(out[..len].to_vec()),
            Ok((_, Popped::Tombstone)) => {}
            Ok((_, other)) => panic!("unexpected {other:?}"),
            Err(PopBlocked::Corrupt { pos, seq }) => panic!("corrupt unit {pos}: {seq:#x}"),
            Err(_) => return,
        }
    }
}

/// `doomed` is dead once `dead` is set; everyone else lives.
fn liveness_of(o: Owner, doomed: Owner, dead: &AtomicBool) -> Liveness {
    if o == doomed && dead.load(Ordering::SeqCst) {
        Liveness::Dead
    } else {
        Liveness::Alive
    }
}

/// Proves, for a producer pushing a two-unit message that wraps (padding,
/// then the message at the arena's start) and then a one-unit message,
/// racing a second producer's one-unit message and two consumers, in
/// every interleaving: each message is taken exactly once and whole (no
/// byte of another message or of the padding in it), and a consumer sees
/// the first producer's messages in the order they were pushed.
#[test]
fn variable_messages_are_taken_exactly_once_whole_and_fifo_per_producer() {
    loom::model(|| {
        let heap = Heap::new(2, 2);
        heap.advance(3);
        assert_eq!(units_for(TWO_UNITS), 2);
        let producer = {
            let heap = heap.clone();
            thread::spawn(move || {
                let mut pushed = Vec::new();
                for (tag, len) in [(1, TWO_UNITS), (2, ONE_UNIT)] {
                    let msg = message(tag, len);
                    if push(&heap, 0, &msg) {
                        pushed.push(msg);
                    }
                }
                pushed
            })
        };
        let consumer = {
            let heap = heap.clone();
            thread::spawn(move || {
                let mut got = Vec::new();
                pop_available(&heap, 0, &mut got);
                got
            })
        };
        let mut pushed = Vec::new();
        let third = message(3, ONE_UNIT);
        if push(&heap, 1, &third) {
            pushed.push(third);
        }
        let mut mine = Vec::new();
        pop_available(&heap, 1, &mut mine);
        pushed.extend(producer.join().unwrap());
        let theirs = consumer.join().unwrap();
        for got in [&mine, &theirs] {
            let firsts: Vec<u8> = got
                .iter()
                .map(|m| m[0] / 16)
                .filter(|&tag| tag != 3)
                .collect();
            assert!(
                firsts.windows(2).all(|w| w[0] < w[1]),
                "FIFO per producer: {firsts:?}"
            );
        }
        pop_available(&heap, 1, &mut mine);
        let mut all: Vec<Vec<u8>> = mine.into_iter().chain(theirs).collect();
        all.sort();
        pushed.sort();
        assert_eq!(
            all, pushed,
            "every pushed message taken exactly once, whole"
        );
        assert_eq!(heap.ctrl.lost_in_push() + heap.ctrl.lost_in_consume(), 0);
    });
}

/// Proves that a producer that claims a wrapping two-unit message (its
/// padding published by the claim) and dies before publishing does not
/// wedge the queue, racing a live producer: a consumer stuck behind it
/// finds it dead, turns the rest of its span into one tombstone, counts
/// exactly one loss, and still gets the live producer's message whole.
#[test]
fn a_dead_producers_span_is_recovered_as_one_loss() {
    loom::model(|| {
        let heap = Heap::new(2, 1);
        heap.advance(3);
        let dead = Arc::new(AtomicBool::new(false));
        let doomed = Owner::new(9, 9);
        table::give(&heap.producers[0], doomed);
        // The survivor's entry is a live process's: an entry with no owner
        // reads as a dead one's.
        table::give(&heap.producers[1], Owner::new(2, 2));
        let victim = {
            let (heap, dead) = (heap.clone(), dead.clone());
            thread::spawn(move || {
                let ring = heap.ring();
                let entry = &ring.producers()[0];
                let claim = ring.claim_push(entry, TWO_UNITS).unwrap();
                ring.write(claim, &message(9, TWO_UNITS));
                // Dies here, before publishing.
                dead.store(true, Ordering::SeqCst);
            })
        };
        let survivor = {
            let heap = heap.clone();
            thread::spawn(move || assert!(push(&heap, 1, &message(1, ONE_UNIT))))
        };
        let liveness = |o: Owner| liveness_of(o, doomed, &dead);
        let mut got = Vec::new();
        // The consumer races both: while the victim lives, its claim is
        // never recovered.
        pop_available(&heap, 0, &mut got);
        let head = heap.ctrl.popped();
        let early = heap
            .ring()
            .recover(Side::Push, head, Owner::new(1, 1), liveness, |_| true);
        assert!(
            early != Recovery::Recovered || dead.load(Ordering::SeqCst),
            "a live claimer's span recovered"
        );
        victim.join().unwrap();
        survivor.join().unwrap();
        loop {
            pop_available(&heap, 0, &mut got);
            let head = heap.ctrl.popped();
            if head == heap.ctrl.pushed() {
                break;
            }
            let settled = heap
                .ring()
                .recover(Side::Push, head, Owner::new(1, 1), liveness, |_| true);
            assert_eq!(settled, Recovery::Recovered, "stuck at {head}");
        }
        assert_eq!(got, vec![message(1, ONE_UNIT)]);
        assert_eq!(heap.ctrl.lost_in_push(), 1);
        // Every unit is free again: a message of the largest size fits.
        assert!(heap.ring().can_push_len(heap.ring().slot_bytes()));
    });
}

/// Proves that a consumer that claims a two-unit message and dies before
/// releasing it does not wedge producers: the producer that comes round
/// to it frees every unit of the message, counts one loss, and pushes
/// (into both units, the second with a racing recoverer's compare-and-swap
/// on it); the lost message is never delivered again.
#[test]
fn a_dead_consumers_span_is_released_once() {
    loom::model(|| {
        let heap = Heap::new(1, 2);
        heap.advance(2);
        assert!(push(&heap, 0, &message(1, TWO_UNITS))); // units 2 and 3
        let dead = Arc::new(AtomicBool::new(false));
        let doomed = Owner::new(9, 9);
        table::give(&heap.consumers[0], doomed);
        let victim = {
            let (heap, dead) = (heap.clone(), dead.clone());
            thread::spawn(move || {
                let ring = heap.ring();
                let claim = ring.claim_pop(&ring.consumers()[0]).unwrap();
                assert_eq!(ring.message_len(claim), Some(TWO_UNITS));
                dead.store(true, Ordering::SeqCst);
            })
        };
        let liveness = |o: Owner| liveness_of(o, doomed, &dead);
        let ring = heap.ring();
        let producer = &ring.producers()[0];
        let me = Owner::new(1, 1);
        // Two units, then two that come round to the message's units
        // (positions 6 and 7): only its recovery frees them.
        for (tag, len) in [(2, TWO_UNITS), (3, TWO_UNITS)] {
            loop {
                match ring.push(producer, &message(tag, len), || {}) {
                    Ok(_) => break,
                    Err(PushBlocked::Unreleased { pos }) => {
                        if ring.recover(Side::Consume, pos, me, liveness, |_| true)
                            != Recovery::Recovered
                        {
                            thread::yield_now();
                        }
                    }
                    Err(PushBlocked::Full) => thread::yield_now(),
                    Err(corrupt) => panic!("{corrupt:?}"),
                }
            }
        }
        victim.join().unwrap();
        let mut got = Vec::new();
        pop_available(&heap, 1, &mut got);
        assert_eq!(
            got,
            vec![message(2, TWO_UNITS), message(3, TWO_UNITS)],
            "the dead consumer's message is not delivered again"
        );
        assert_eq!(heap.ctrl.lost_in_consume(), 1);
    });
}

/// Proves that a message claims its units only once every one of them is
/// free, not just the first: a two-unit message whose first unit held a
/// message already taken and whose second unit holds one not yet taken
/// (or being read) waits for it, in every interleaving of its producer and
/// a consumer taking the older messages; each message arrives whole.
///
/// Fails if a claim checks only its first unit (the new message is
/// written over the one the consumer has not read yet), and if the check
/// loads a busy unit again to say why it is busy (freed in between, it
/// reads as a unit ahead of its position: corrupt).
#[test]
fn a_message_waits_for_every_unit_it_takes() {
    loom::model(|| {
        let heap = Heap::new(1, 2);
        let old = [
            message(1, ONE_UNIT),  // unit 0
            message(2, TWO_UNITS), // units 1 and 2
            message(3, ONE_UNIT),  // unit 3
        ];
        for msg in &old {
            assert!(push(&heap, 0, msg));
        }
        let producer = {
            let heap = heap.clone();
            thread::spawn(move || {
                // Units 0 and 1: both free only once messages 1 and 2
                // have been taken.
                while !push(&heap, 0, &message(4, TWO_UNITS)) {
                    thread::yield_now();
                }
            })
        };
        let mut got = Vec::new();
        while got.len() < old.len() {
            pop_available(&heap, 0, &mut got);
            if got.len() < old.len() {
                thread::yield_now();
            }
        }
        producer.join().unwrap();
        pop_available(&heap, 1, &mut got);
        assert_eq!(got[..3], old, "the older messages, whole and in order");
        assert_eq!(got[3..], [message(4, TWO_UNITS)]);
    });
}

//! Loom models of the work queue (`shmbus::ring::queue`).
#![cfg(shmbus_loom)]

use loom::sync::atomic::AtomicBool;
use loom::sync::Arc;
use loom::thread;
use shmbus::ring::queue::{
    slots_words, ClaimEntry, PopBlocked, Popped, PushBlocked, QueueCtrl, QueueRing, Recovery,
};
use shmbus::ring::{Liveness, Owner};
use shmbus::sync::{AtomicU64, Ordering};

const SLOT_BYTES: usize = 8;

struct Heap {
    ctrl: QueueCtrl,
    producers: Vec<ClaimEntry>,
    consumers: Vec<ClaimEntry>,
    slots: Vec<AtomicU64>,
    capacity: usize,
}

impl Heap {
    fn new(capacity: usize, producers: usize, consumers: usize) -> Arc<Self> {
        Arc::new(Heap {
            ctrl: QueueCtrl::new(),
            producers: (0..producers).map(|_| ClaimEntry::new()).collect(),
            consumers: (0..consumers).map(|_| ClaimEntry::new()).collect(),
            slots: (0..slots_words(capacity, SLOT_BYTES).unwrap())
                .map(|_| AtomicU64::new(0))
                .collect(),
            capacity,
        })
    }

    fn ring(&self) -> QueueRing<'_> {
        QueueRing::new(
            &self.ctrl,
            &self.producers,
            &self.consumers,
            &self.slots,
            self.capacity,
            SLOT_BYTES,
        )
        .unwrap()
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

/// Message `seq` of producer `p`.
fn msg(p: u64, seq: u64) -> u64 {
    p * 100 + seq
}

fn push(heap: &Heap, entry: usize, value: u64) -> bool {
    let ring = heap.ring();
    let entry = &ring.producers()[entry];
    match ring.claim_push(entry) {
        Ok(claim) => {
            ring.write(claim, &value.to_ne_bytes());
            ring.publish(claim, entry);
            true
        }
        Err(_) => false,
    }
}

/// Pops until the queue looks empty (never spins: loom needs finite runs).
fn pop_available(heap: &Heap, entry: usize, got: &mut Vec<u64>) {
    let ring = heap.ring();
    let entry = &ring.consumers()[entry];
    while let Ok(claim) = ring.claim_pop(entry) {
        let mut out = [0u8; SLOT_BYTES];
        match ring.read(claim, &mut out) {
            Popped::Message { len } => {
                assert_eq!(len, SLOT_BYTES);
                got.push(u64::from_ne_bytes(out));
            }
            other => panic!("unexpected {other:?}"),
        }
        ring.release(claim, entry);
    }
}

/// Proves, for 2 producers and 2 consumers on a queue of capacity 2 (one
/// producer pushing two messages, the other one), in every interleaving:
/// each message is taken exactly once, and each consumer sees one
/// producer's messages in the order they were pushed.
#[test]
fn each_message_is_taken_exactly_once_fifo_per_producer() {
    loom::model(|| {
        let heap = Heap::new(2, 2, 2);
        let producer = {
            let heap = heap.clone();
            thread::spawn(move || {
                let mut pushed = Vec::new();
                for seq in 0..2 {
                    if push(&heap, 0, msg(1, seq)) {
                        pushed.push(msg(1, seq));
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
        if push(&heap, 1, msg(2, 0)) {
            pushed.push(msg(2, 0));
        }
        let mut mine = Vec::new();
        pop_available(&heap, 1, &mut mine);
        pushed.extend(producer.join().unwrap());
        let theirs = consumer.join().unwrap();
        for got in [&mine, &theirs] {
            let ones: Vec<_> = got.iter().filter(|m| **m / 100 == 1).collect();
            assert!(
                ones.windows(2).all(|w| w[0] < w[1]),
                "FIFO per producer: {got:?}"
            );
        }
        // Drain what is left, alone.
        pop_available(&heap, 1, &mut mine);
        let mut all: Vec<u64> = mine.into_iter().chain(theirs).collect();
        all.sort();
        pushed.sort();
        assert_eq!(all, pushed, "every pushed message taken exactly once");
    });
}

/// Proves that a producer that claims a slot and dies before publishing
/// does not wedge the queue: a consumer stuck behind it finds it dead,
/// leaves a tombstone, counts exactly one loss, and still gets the live
/// producer's message; a live (not yet dead) claimer is never skipped.
#[test]
fn producer_dying_after_claim_is_recovered_and_counted() {
    loom::model(|| {
        let heap = Heap::new(2, 2, 1);
        let dead = Arc::new(AtomicBool::new(false));
        let doomed = Owner::new(9, 9);
        heap.producers[0].owner_for_tests(doomed);
        let victim = {
            let (heap, dead) = (heap.clone(), dead.clone());
            thread::spawn(move || {
                let ring = heap.ring();
                let entry = &ring.producers()[0];
                let claim = ring.claim_push(entry).unwrap();
                ring.write(claim, &msg(9, 0).to_ne_bytes());
                // Dies here, before publishing.
                dead.store(true, Ordering::SeqCst);
            })
        };
        let survivor = {
            let heap = heap.clone();
            thread::spawn(move || assert!(push(&heap, 1, msg(1, 0))))
        };
        let is_alive = |o: Owner| liveness_of(o, doomed, &dead);
        let ring = heap.ring();
        let entry = &ring.consumers()[0];
        victim.join().unwrap();
        survivor.join().unwrap();
        let mut got = Vec::new();
        loop {
            match ring.claim_pop(entry) {
                Ok(claim) => {
                    let mut out = [0u8; SLOT_BYTES];
                    if let Popped::Message { .. } = ring.read(claim, &mut out) {
                        got.push(u64::from_ne_bytes(out));
                    }
                    ring.release(claim, entry);
                }
                Err(PopBlocked::Unpublished { pos }) => {
                    assert_eq!(ring.recover_push(pos, is_alive), Recovery::Recovered);
                }
                Err(PopBlocked::Empty) => break,
            }
        }
        assert_eq!(got, vec![msg(1, 0)]);
        assert_eq!(heap.ctrl.lost_in_push(), 1);
    });
}

/// Proves that a recovery racing a claimer that is still alive never
/// steals its slot, and that two racing recoveries of a dead claimer's slot
/// count the loss once.
#[test]
fn recovery_waits_for_a_live_claimer_and_counts_a_dead_one_once() {
    loom::model(|| {
        let heap = Heap::new(2, 1, 2);
        let dead = Arc::new(AtomicBool::new(false));
        let doomed = Owner::new(9, 9);
        heap.producers[0].owner_for_tests(doomed);
        let is_alive = {
            let dead = dead.clone();
            move |o: Owner| liveness_of(o, doomed, &dead)
        };
        let victim = {
            let (heap, dead) = (heap.clone(), dead.clone());
            thread::spawn(move || {
                let ring = heap.ring();
                let entry = &ring.producers()[0];
                let claim = ring.claim_push(entry).unwrap();
                dead.store(true, Ordering::SeqCst);
                claim.pos()
            })
        };
        let rescuer = {
            let (heap, is_alive) = (heap.clone(), is_alive.clone());
            thread::spawn(move || heap.ring().recover_push(0, is_alive))
        };
        let mine = heap.ring().recover_push(0, is_alive.clone());
        let theirs = rescuer.join().unwrap();
        assert_eq!(victim.join().unwrap(), 0);
        let recovered = [mine, theirs]
            .iter()
            .filter(|r| **r == Recovery::Recovered)
            .count() as u64;
        assert_eq!(heap.ctrl.lost_in_push(), recovered);
        assert!(recovered <= 1);
        // Whatever happened in the race, the slot is recovered now.
        let _ = heap.ring().recover_push(0, is_alive.clone());
        assert_eq!(heap.ctrl.lost_in_push(), 1);
    });
}

/// Proves that a consumer that claims a message and dies before releasing
/// it does not wedge producers: the producer that comes round to its slot
/// frees it, counts one loss, and pushes; the lost message is never
/// delivered (at most once).
#[test]
fn consumer_dying_after_claim_is_recovered_and_counted() {
    loom::model(|| {
        let heap = Heap::new(2, 1, 2);
        assert!(push(&heap, 0, msg(1, 0)));
        let dead = Arc::new(AtomicBool::new(false));
        let doomed = Owner::new(9, 9);
        heap.consumers[0].owner_for_tests(doomed);
        let victim = {
            let (heap, dead) = (heap.clone(), dead.clone());
            thread::spawn(move || {
                let ring = heap.ring();
                let _claim = ring.claim_pop(&ring.consumers()[0]).unwrap();
                dead.store(true, Ordering::SeqCst);
            })
        };
        let is_alive = |o: Owner| liveness_of(o, doomed, &dead);
        let ring = heap.ring();
        let producer = &ring.producers()[0];
        // The second of these comes round to the dead consumer's slot.
        for seq in 1..3 {
            let claim = loop {
                match ring.claim_push(producer) {
                    Ok(claim) => break claim,
                    Err(PushBlocked::Unreleased { pos }) => {
                        if ring.recover_consume(pos, is_alive) == Recovery::Alive {
                            thread::yield_now();
                        }
                    }
                    Err(PushBlocked::Full) => thread::yield_now(),
                }
            };
            ring.write(claim, &msg(1, seq).to_ne_bytes());
            ring.publish(claim, producer);
        }
        victim.join().unwrap();
        let mut got = Vec::new();
        pop_available(&heap, 1, &mut got);
        assert_eq!(
            got,
            vec![msg(1, 1), msg(1, 2)],
            "the dead consumer's message is not delivered again"
        );
        assert_eq!(heap.ctrl.lost_in_consume(), 1);
    });
}

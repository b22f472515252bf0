//! Loom models of the work queue (`shmbus::ring::queue`).
#![cfg(shmbus_loom)]

use loom::sync::atomic::AtomicBool;
use loom::sync::Arc;
use loom::thread;
use shmbus::ring::queue::{
    slots_words, table, ClaimEntry, PopBlocked, Popped, PushBlocked, QueueCtrl, QueueRing,
    Recovery, RecoveryStep, Side,
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

/// One push attempt, as the endpoint makes it (`QueueRing::push`): false
/// if there is no room now; a slot reported corrupt fails the model.
fn push(heap: &Heap, entry: usize, value: u64) -> bool {
    let ring = heap.ring();
    match ring.push(&ring.producers()[entry], &value.to_ne_bytes(), || {}) {
        Ok(_) => true,
        Err(PushBlocked::Corrupt { pos, seq }) => panic!("corrupt slot {pos}: {seq:#x}"),
        Err(_) => false,
    }
}

/// Pops until the queue looks empty (never spins: loom needs finite runs),
/// as the endpoint does (`QueueRing::pop`; a tombstone is released and
/// passed).
fn pop_available(heap: &Heap, entry: usize, got: &mut Vec<u64>) {
    let ring = heap.ring();
    let entry = &ring.consumers()[entry];
    loop {
        let mut out = [0u8; SLOT_BYTES];
        match ring.pop(entry, &mut out, || {}) {
            Ok((_, Popped::Message { len })) => {
                assert_eq!(len, SLOT_BYTES);
                got.push(u64::from_ne_bytes(out));
            }
            Ok((_, Popped::Tombstone)) => {}
            Ok((_, other)) => panic!("unexpected {other:?}"),
            Err(PopBlocked::Corrupt { pos, seq }) => panic!("corrupt slot {pos}: {seq:#x}"),
            Err(_) => return,
        }
    }
}

/// Recovers `pos` on `side` as `me`, retrying (with a yield) while a
/// possibly live process is in the way, until the slot is settled.
fn recover_until_settled(
    heap: &Heap,
    side: Side,
    pos: u64,
    me: Owner,
    mut liveness: impl FnMut(Owner) -> Liveness,
) -> Recovery {
    loop {
        match heap.ring().recover(side, pos, me, &mut liveness, |_| true) {
            Recovery::Alive => thread::yield_now(),
            settled => return settled,
        }
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

/// Proves, for a producer that loans a slot, writes into it and abandons
/// it (`claim_push`, payload stores, `abandon`), then pushes, racing a
/// second producer and a consumer on a queue of capacity 2 (so the
/// abandoned slot is reused): the abandoned bytes are never popped, every
/// pushed message is taken exactly once, and nothing is counted lost.
#[test]
fn an_abandoned_queue_loan_is_skipped_and_never_counted_lost() {
    loom::model(|| {
        let heap = Heap::new(2, 2, 1);
        let loaner = {
            let heap = heap.clone();
            thread::spawn(move || {
                let ring = heap.ring();
                let entry = &ring.producers()[0];
                let mut pushed = Vec::new();
                if let Ok(claim) = ring.claim_push(entry, SLOT_BYTES) {
                    ring.payload(claim)[0].store(999, Ordering::Relaxed);
                    ring.abandon(claim, entry);
                }
                if push(&heap, 0, msg(1, 0)) {
                    pushed.push(msg(1, 0));
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
        pushed.extend(loaner.join().unwrap());
        let mut got = consumer.join().unwrap();
        pop_available(&heap, 0, &mut got);
        assert!(!got.contains(&999), "an abandoned loan popped: {got:?}");
        got.sort();
        pushed.sort();
        assert_eq!(got, pushed, "every pushed message taken exactly once");
        assert_eq!(heap.ctrl.lost_in_push(), 0, "an abandon is no loss");
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
        table::give(&heap.producers[0], doomed);
        let victim = {
            let (heap, dead) = (heap.clone(), dead.clone());
            thread::spawn(move || {
                let ring = heap.ring();
                let entry = &ring.producers()[0];
                let claim = ring.claim_push(entry, SLOT_BYTES).unwrap();
                ring.write(claim, &msg(9, 0).to_ne_bytes());
                // Dies here, before publishing.
                dead.store(true, Ordering::SeqCst);
            })
        };
        let survivor = {
            let heap = heap.clone();
            thread::spawn(move || assert!(push(&heap, 1, msg(1, 0))))
        };
        let liveness = |o: Owner| liveness_of(o, doomed, &dead);
        victim.join().unwrap();
        survivor.join().unwrap();
        let mut got = Vec::new();
        loop {
            pop_available(&heap, 0, &mut got);
            let head = heap.ctrl.popped();
            if head == heap.ctrl.pushed() {
                break;
            }
            let me = Owner::new(1, 1);
            let settled = recover_until_settled(&heap, Side::Push, head, me, liveness);
            assert_eq!(settled, Recovery::Recovered);
        }
        assert_eq!(got, vec![msg(1, 0)]);
        assert_eq!(heap.ctrl.lost_in_push(), 1);
    });
}

/// Proves that a recovery racing a claimer that is alive never steals its
/// slot (the claimer's message is delivered, nothing counted as lost), and
/// that two racing recoveries of a dead claimer's slot count the loss once.
/// The first half fails if `recover` acts without the claimers being known
/// dead (both its checks, before and under the journal): the live
/// claimer's message turns into a counted loss.
#[test]
fn recovery_never_steals_from_a_live_claimer_and_counts_a_dead_one_once() {
    loom::model(|| {
        // A live claimer: claims, and publishes later.
        let heap = Heap::new(2, 1, 1);
        let claimer = Owner::new(5, 5);
        table::give(&heap.producers[0], claimer);
        let live = {
            let heap = heap.clone();
            thread::spawn(move || assert!(push(&heap, 0, msg(5, 0))))
        };
        let rescuer = {
            let heap = heap.clone();
            thread::spawn(move || {
                heap.ring().recover(
                    Side::Push,
                    0,
                    Owner::new(6, 6),
                    |_| Liveness::Alive,
                    |_| true,
                )
            })
        };
        assert_ne!(rescuer.join().unwrap(), Recovery::Recovered);
        live.join().unwrap();
        let mut got = Vec::new();
        pop_available(&heap, 0, &mut got);
        assert_eq!(
            got,
            vec![msg(5, 0)],
            "the live claimer's message was stolen"
        );
        assert_eq!(heap.ctrl.lost_in_push(), 0);
    });
    loom::model(|| {
        // A dead claimer and two racing recoverers.
        let heap = Heap::new(2, 1, 2);
        let doomed = Owner::new(9, 9);
        table::give(&heap.producers[0], doomed);
        {
            let ring = heap.ring();
            let _abandoned = ring.claim_push(&ring.producers()[0], SLOT_BYTES).unwrap();
        }
        let dead = |_: Owner| Liveness::Dead;
        let rescuer = {
            let heap = heap.clone();
            thread::spawn(move || {
                recover_until_settled(&heap, Side::Push, 0, Owner::new(2, 2), move |o| {
                    if o == doomed {
                        Liveness::Dead
                    } else {
                        Liveness::Alive
                    }
                })
            })
        };
        let mine = recover_until_settled(&heap, Side::Push, 0, Owner::new(1, 1), |o| {
            if o == doomed {
                dead(o)
            } else {
                Liveness::Alive
            }
        });
        let theirs = rescuer.join().unwrap();
        let recovered = [mine, theirs]
            .iter()
            .filter(|r| **r == Recovery::Recovered)
            .count();
        assert_eq!(recovered, 1, "{mine:?} {theirs:?}");
        assert_eq!(heap.ctrl.lost_in_push(), 1);
        assert_eq!(heap.ctrl.journal_holder(), None);
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
        table::give(&heap.consumers[0], doomed);
        let victim = {
            let (heap, dead) = (heap.clone(), dead.clone());
            thread::spawn(move || {
                let ring = heap.ring();
                let _claim = ring.claim_pop(&ring.consumers()[0]).unwrap();
                dead.store(true, Ordering::SeqCst);
            })
        };
        let liveness = |o: Owner| liveness_of(o, doomed, &dead);
        let ring = heap.ring();
        let producer = &ring.producers()[0];
        let me = Owner::new(1, 1);
        // The second of these comes round to the dead consumer's slot.
        for seq in 1..3 {
            loop {
                match ring.push(producer, &msg(1, seq).to_ne_bytes(), || {}) {
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
            vec![msg(1, 1), msg(1, 2)],
            "the dead consumer's message is not delivered again"
        );
        assert_eq!(heap.ctrl.lost_in_consume(), 1);
    });
}

/// Proves that a recoverer killed between any two steps of a recovery
/// (journal taken; loss counted; slot finished; pending cleared) leaves a
/// state that the next survivor completes, racing a live consumer: the
/// queue flows again, the loss is counted exactly once, and the journal
/// ends free.
///
/// Fails if taking over a dead recoverer's journal does not finish its
/// pending step (`finish_pending`): stopped after counting, the next
/// survivor counts the same loss again.
#[test]
fn recoverer_killed_between_any_two_steps_leaves_a_state_the_next_completes() {
    for die_at in [
        RecoveryStep::JournalTaken,
        RecoveryStep::Counted,
        RecoveryStep::SlotFinished,
        RecoveryStep::Cleared,
    ] {
        loom::model(move || {
            let heap = Heap::new(2, 2, 2);
            let (doomed, first, second) = (Owner::new(9, 9), Owner::new(1, 1), Owner::new(2, 2));
            table::give(&heap.producers[0], doomed);
            {
                // A producer that claimed position 0 and died.
                let ring = heap.ring();
                let _abandoned = ring.claim_push(&ring.producers()[0], SLOT_BYTES).unwrap();
            }
            let first_dead = Arc::new(AtomicBool::new(false));
            let oracle = {
                let first_dead = first_dead.clone();
                move |o: Owner| {
                    if o == doomed || (o == first && first_dead.load(Ordering::SeqCst)) {
                        Liveness::Dead
                    } else {
                        Liveness::Alive
                    }
                }
            };
            // The first recoverer stops at `die_at` and is dead from then
            // on, racing the survivor and a live producer.
            let dying = {
                let (heap, oracle, first_dead) = (heap.clone(), oracle.clone(), first_dead.clone());
                thread::spawn(move || {
                    let stopped = heap
                        .ring()
                        .recover(Side::Push, 0, first, oracle, |step| step != die_at);
                    first_dead.store(true, Ordering::SeqCst);
                    stopped
                })
            };
            let live_push = {
                let heap = heap.clone();
                thread::spawn(move || assert!(push(&heap, 1, msg(1, 0))))
            };
            let survivor = {
                let (heap, oracle) = (heap.clone(), oracle.clone());
                thread::spawn(move || recover_until_settled(&heap, Side::Push, 0, second, oracle))
            };
            let stopped = dying.join().unwrap();
            let settled = survivor.join().unwrap();
            live_push.join().unwrap();
            // Between them, the slot was recovered exactly once.
            let recoveries = [stopped, settled]
                .iter()
                .filter(|r| **r == Recovery::Recovered)
                .count();
            assert!(
                recoveries <= 1,
                "stopped at {die_at:?}: {stopped:?} {settled:?}"
            );
            // A survivor that came after a finished recovery (or before the
            // dead one started) may find the slot settled by it.
            let _ = heap
                .ring()
                .recover(Side::Push, 0, second, oracle.clone(), |_| true);
            let mut got = Vec::new();
            pop_available(&heap, 0, &mut got);
            assert_eq!(got, vec![msg(1, 0)], "stopped at {die_at:?}");
            assert_eq!(heap.ctrl.lost_in_push(), 1, "stopped at {die_at:?}");
            assert_eq!(heap.ctrl.pushed(), heap.ctrl.popped());
            // Whoever holds the journal now is dead or done with it.
            if let Some(holder) = heap.ctrl.journal_holder() {
                assert_eq!(holder, first, "stopped at {die_at:?}");
            }
        });
    }
}

/// Proves that a live producer that lost the race for a position to a
/// producer that then died does not keep naming that position in its
/// intent: the dead claimer's slot is recovered even while the live one is
/// blocked (here: by a full queue), so the queue never waits on it.
///
/// Fails if `claim` leaves its intent set after losing the compare-and-swap
/// (found in review: the queue then wedges with every process alive but
/// one).
#[test]
fn a_live_producer_that_lost_a_race_to_a_dead_one_never_blocks_its_recovery() {
    loom::model(|| {
        let heap = Heap::new(2, 3, 1);
        let (live, doomed, other) = (Owner::new(1, 1), Owner::new(9, 9), Owner::new(3, 3));
        table::give(&heap.producers[0], live);
        table::give(&heap.producers[1], doomed);
        table::give(&heap.producers[2], other);
        assert!(push(&heap, 2, msg(3, 0))); // position 0
        let victim = {
            let heap = heap.clone();
            thread::spawn(move || {
                // Claims position 1 if it wins, and dies without publishing.
                let ring = heap.ring();
                let _ = ring.claim_push(&ring.producers()[1], SLOT_BYTES);
            })
        };
        let racer = {
            let heap = heap.clone();
            thread::spawn(move || push(&heap, 0, msg(1, 0)))
        };
        victim.join().unwrap();
        if racer.join().unwrap() {
            return; // the live producer got a position: nothing is stuck on it
        }
        // The consumer takes message 0; another producer fills the freed
        // slot; the live producer, retrying, finds the queue full.
        let ring = heap.ring();
        let mut out = [0u8; SLOT_BYTES];
        assert!(ring.pop(&ring.consumers()[0], &mut out, || {}).is_ok());
        assert!(push(&heap, 2, msg(3, 1)));
        assert!(!push(&heap, 0, msg(1, 1)), "the queue is full");
        match ring.pop(&ring.consumers()[0], &mut out, || {}) {
            Err(PopBlocked::Unpublished { pos }) => {
                let liveness = |o: Owner| {
                    if o == doomed {
                        Liveness::Dead
                    } else {
                        Liveness::Alive
                    }
                };
                let recovered = ring.recover(Side::Push, pos, Owner::new(4, 4), liveness, |_| true);
                assert_eq!(
                    recovered,
                    Recovery::Recovered,
                    "position {pos}: its claimer is dead, yet the live producer's intent {} held it",
                    ring.producers()[0].intent()
                );
            }
            other => panic!("the dead producer's position should block: {other:?}"),
        }
    });
}

/// Proves that a message popped in place (`Consumer::pop_ref`: the claim
/// held, `QueueRing::lend`, its words read while held, then `release`) is
/// never written while it is held, with a producer pushing into the same
/// slot's next lap as soon as it can (capacity 2: message 2 goes where
/// message 0 was), and that every message is still taken exactly once, in
/// order.
///
/// Fails if the lend releases the slot before its words are read (message 2
/// then overwrites message 0 under the reader).
#[test]
fn a_message_popped_in_place_is_never_written_while_held() {
    loom::model(|| {
        let heap = Heap::new(2, 1, 1);
        let producer = {
            let heap = heap.clone();
            thread::spawn(move || {
                for seq in 0..3 {
                    while !push(&heap, 0, msg(1, seq)) {
                        thread::yield_now();
                    }
                }
            })
        };
        let ring = heap.ring();
        let entry = &ring.consumers()[0];
        let mut got = Vec::new();
        while got.len() < 3 {
            let claim = match ring.claim_pop(entry) {
                Ok(claim) => claim,
                Err(PopBlocked::Corrupt { pos, seq }) => panic!("corrupt slot {pos}: {seq:#x}"),
                Err(_) => {
                    thread::yield_now();
                    continue;
                }
            };
            let (words, len) = ring.lend(claim).expect("a message");
            assert_eq!(len, SLOT_BYTES);
            // Each load may interleave with the producer: a write to the
            // held slot shows as a changed value.
            let first = words[0].load(Ordering::Relaxed);
            thread::yield_now();
            let again = words[0].load(Ordering::Relaxed);
            assert_eq!(first, again, "message {} changed while held", claim.pos());
            got.push(first);
            ring.release(claim, entry);
        }
        producer.join().unwrap();
        assert_eq!(got, [msg(1, 0), msg(1, 1), msg(1, 2)]);
    });
}

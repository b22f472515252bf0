//! Loom models of the broadcast ring (overwrite mode).
#![cfg(shmbus_loom)]

use loom::sync::Arc;
use loom::thread;
use shmbus::ring::broadcast::{slots_words, BroadcastCtrl, BroadcastRing, PublisherState, Read};
use shmbus::ring::{Liveness, Owner};
use shmbus::sync::{AtomicU64, Ordering};

const SLOT_BYTES: usize = 16;

struct Heap {
    ctrl: BroadcastCtrl,
    slots: Vec<AtomicU64>,
    capacity: usize,
}

impl Heap {
    fn new(capacity: usize) -> Arc<Self> {
        let words = slots_words(capacity, SLOT_BYTES).unwrap();
        Arc::new(Heap {
            ctrl: BroadcastCtrl::new(),
            slots: (0..words).map(|_| AtomicU64::new(0)).collect(),
            capacity,
        })
    }

    fn ring(&self) -> BroadcastRing<'_> {
        BroadcastRing::new(&self.ctrl, &self.slots, self.capacity, SLOT_BYTES).unwrap()
    }
}

/// Two words that both depend on the sequence number: a copy mixing two
/// messages cannot pass `decode`.
fn message(seq: u64) -> [u8; SLOT_BYTES] {
    let mut bytes = [0u8; SLOT_BYTES];
    bytes[..8].copy_from_slice(&(seq * 3 + 1).to_ne_bytes());
    bytes[8..].copy_from_slice(&(seq * 5 + 7).to_ne_bytes());
    bytes
}

fn decode(bytes: &[u8; SLOT_BYTES]) -> Option<u64> {
    let a = u64::from_ne_bytes(bytes[..8].try_into().unwrap());
    let seq = (a.checked_sub(1)?) / 3;
    (message(seq) == *bytes).then_some(seq)
}

/// What one subscriber saw.
struct Seen {
    cursor: u64,
    received: u64,
    lagged: u64,
}

/// Reads from `seen.cursor` while messages are there, checking each is
/// whole and the one the cursor expects. Stops at the first `Empty` rather
/// than spinning, so loom's state space stays finite; the caller finishes
/// reading once the publisher is done.
fn read_available(heap: &Heap, seen: &mut Seen) {
    let ring = heap.ring();
    loop {
        let mut out = [0u8; SLOT_BYTES];
        match ring.read(seen.cursor, &mut out) {
            Read::Message { len } => {
                assert_eq!(len, SLOT_BYTES);
                assert_eq!(decode(&out), Some(seen.cursor), "torn or misplaced message");
                seen.cursor += 1;
                seen.received += 1;
            }
            Read::Empty => return,
            Read::Overwritten => {
                let target = ring.lag_target(seen.cursor);
                assert!(target > seen.cursor, "lagging must make progress");
                seen.lagged += target - seen.cursor;
                seen.cursor = target;
            }
            Read::BadLength { len } => panic!("bad length {len} at {}", seen.cursor),
        }
    }
}

fn subscribe(heap: &Heap) -> Seen {
    let mut seen = Seen {
        cursor: 0,
        received: 0,
        lagged: 0,
    };
    read_available(heap, &mut seen);
    seen
}

/// Proves, for 1 publisher and 2 subscribers on a ring of capacity 2 with 3
/// messages, in every interleaving loom explores:
/// - every message a subscriber receives is whole (no torn copy) and is the
///   one its cursor expects (in order, none twice);
/// - received + lagged == sent for each subscriber, and a lag never skips a
///   message that was not published;
/// - a subscriber never counts more as lost than the ring can have
///   overwritten (sent - capacity).
#[test]
fn overwrite_delivers_whole_messages_in_order_and_accounts_for_every_one() {
    const SENT: u64 = 3;
    const CAPACITY: usize = 2;
    loom::model(|| {
        let heap = Heap::new(CAPACITY);
        let subscribers: Vec<_> = (0..2)
            .map(|_| {
                let heap = heap.clone();
                thread::spawn(move || subscribe(&heap))
            })
            .collect();
        let ring = heap.ring();
        for seq in 0..SENT {
            ring.publish(seq, &message(seq));
        }
        for subscriber in subscribers {
            let mut seen = subscriber.join().unwrap();
            read_available(&heap, &mut seen);
            assert_eq!(
                seen.cursor, SENT,
                "lag skipped past the last message, or stopped short"
            );
            assert_eq!(seen.received + seen.lagged, SENT);
            assert!(
                seen.lagged <= SENT - CAPACITY as u64,
                "lost {} of {SENT}",
                seen.lagged
            );
        }
    });
}

/// Proves that a publisher that dies after completing a message but before
/// advancing `head` does not make its successor reuse that sequence number:
/// `resume_seq` continues after the completed message, and a subscriber
/// racing the takeover still sees every message exactly once, whole.
#[test]
fn takeover_after_a_death_between_slot_and_head_keeps_the_sequence() {
    loom::model(|| {
        let heap = Heap::new(4);
        {
            // The dead publisher: message 0 complete, head rolled back as if
            // it died before storing head = 1.
            let ring = heap.ring();
            ring.publish(0, &message(0));
            shmbus::ring::broadcast::testing::set_head(&heap.ctrl, 0);
        }
        let sub = {
            let heap = heap.clone();
            thread::spawn(move || subscribe(&heap))
        };
        let ring = heap.ring();
        let next = ring.resume_seq();
        assert_eq!(next, 1);
        ring.publish(next, &message(next));
        let mut seen = sub.join().unwrap();
        read_available(&heap, &mut seen);
        assert_eq!((seen.cursor, seen.received + seen.lagged), (2, 2));
    });
}

/// Proves that a publisher whose lease was taken over (only possible if it
/// was judged dead while alive: a misjudged or overwritten lease word)
/// stops at its next send: it checks the lease before every publish, the
/// way `Publisher::send` does, so no message it starts after it could have
/// seen the takeover is written; the new holder continues the sequence.
///
/// Fails if `BroadcastRing::publish_as` does not check the lease: the old
/// publisher keeps writing after the takeover.
#[test]
fn publisher_whose_lease_was_taken_over_stops_at_its_next_send() {
    loom::model(|| {
        let heap = Heap::new(4);
        let (old, new) = (Owner::new(1, 1), Owner::new(2, 2));
        heap.ctrl.lease().acquire(old, |_| Liveness::Alive).unwrap();
        let taken = Arc::new(loom::sync::atomic::AtomicBool::new(false));
        let old_publisher = {
            let (heap, taken) = (heap.clone(), taken.clone());
            thread::spawn(move || {
                let ring = heap.ring();
                let mut late = 0;
                for seq in 0..3 {
                    let knew = taken.load(Ordering::SeqCst);
                    // What `Publisher::send` does: check, then write.
                    if !ring.publish_as(old, seq, &message(seq)) {
                        return late;
                    }
                    if knew {
                        late += 1;
                    }
                }
                late
            })
        };
        heap.ctrl
            .lease()
            .acquire(new, |o| {
                if o == old {
                    Liveness::Dead
                } else {
                    Liveness::Alive
                }
            })
            .unwrap();
        taken.store(true, Ordering::SeqCst);
        let late = old_publisher.join().unwrap();
        assert_eq!(late, 0, "wrote after it could have seen the takeover");
        assert_eq!(heap.ctrl.lease().holder(), Some(new));
    });
}

/// Proves that a loan abandoned half-written (`Publisher::loan_bytes`
/// dropped, or its publisher killed, after `begin` and some stores, with
/// no `commit`) is never seen: with a subscriber racing it on a ring of
/// one slot, the publisher sends message 0, begins message 1 in the same
/// slot and writes part of another message into it, gives up, and the
/// next holder (`resume_seq`) writes message 1 again. In every
/// interleaving the subscriber receives only whole messages, each at most
/// once, and accounts for both (received + lagged == 2).
///
/// Fails if `begin` does not mark the slot "being written" (a reader of
/// message 0 then takes the loan's bytes for it).
#[test]
fn an_abandoned_loan_is_never_seen_and_its_number_is_reused() {
    loom::model(|| {
        let heap = Heap::new(1);
        let subscriber = {
            let heap = heap.clone();
            thread::spawn(move || subscribe(&heap))
        };
        let ring = heap.ring();
        ring.publish(0, &message(0));
        let payload = ring.begin(1);
        shmbus::ring::store_bytes_at(payload, 0, &message(99)[..8]);
        // The loan is gone; the next holder resumes.
        let next = ring.resume_seq();
        assert_eq!(next, 1, "an abandoned loan takes no sequence number");
        ring.publish(next, &message(next));
        let mut seen = subscriber.join().unwrap();
        read_available(&heap, &mut seen);
        assert_eq!((seen.cursor, seen.received + seen.lagged), (2, 2));
    });
}

/// Proves that a subscriber asking who publishes while a publisher arrives
/// (lease taken, then the topic marked as published) never reads "left",
/// the Disconnected a subscriber reports: only a publisher that released
/// the lease reads so.
#[test]
fn a_publisher_arriving_is_never_read_as_one_that_left() {
    loom::model(|| {
        let heap = Heap::new(2);
        let me = Owner::new(1, 1);
        let publisher = {
            let heap = heap.clone();
            thread::spawn(move || {
                heap.ctrl.lease().acquire(me, |_| Liveness::Alive).unwrap();
                heap.ctrl.mark_published();
            })
        };
        assert_ne!(heap.ctrl.publisher(), PublisherState::Left);
        publisher.join().unwrap();
        assert_eq!(heap.ctrl.publisher(), PublisherState::Held(me));
        assert!(heap.ctrl.lease().release(me));
        assert_eq!(heap.ctrl.publisher(), PublisherState::Left);
    });
}

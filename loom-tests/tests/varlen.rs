//! Loom models of the variable-size broadcast ring (`shmbus::ring::varlen`):
//! a descriptor ring plus a byte arena, lapped in either.
#![cfg(shmbus_loom)]

use loom::sync::Arc;
use loom::thread;
use shmbus::ring::broadcast::StartAt;
use shmbus::ring::gate::{Gate, GateCache, GateCtrl, GatedRead, SubscriberEntry};
use shmbus::ring::varlen::{layout_words, Read, VarlenCtrl, VarlenRing};
use shmbus::ring::{Liveness, Owner};
use shmbus::sync::{AtomicU64, Ordering};
use shmbus::wait::LightWaker;

struct Heap {
    ctrl: VarlenCtrl,
    words: Vec<AtomicU64>,
    capacity: usize,
    arena_bytes: usize,
    gate: GateCtrl,
    entries: Vec<SubscriberEntry>,
}

impl Heap {
    fn new(capacity: usize, arena_bytes: usize) -> Arc<Self> {
        let words = layout_words(capacity, arena_bytes).unwrap();
        Arc::new(Heap {
            ctrl: VarlenCtrl::new(),
            words: (0..words).map(|_| AtomicU64::new(0)).collect(),
            capacity,
            arena_bytes,
            gate: GateCtrl::new(),
            entries: vec![SubscriberEntry::new()],
        })
    }

    fn ring(&self) -> VarlenRing<'_> {
        VarlenRing::new(&self.ctrl, &self.words, self.capacity, self.arena_bytes).unwrap()
    }

    fn gate(&self) -> Gate<'_> {
        Gate::new(&self.gate, &self.entries)
    }
}

/// Message `seq` is `len(seq)` bytes, every word of them depending on
/// `seq`: a copy that mixes two messages, or reads one at the wrong length,
/// fails `check`.
fn message(seq: u64, len: usize) -> Vec<u8> {
    (0..len.div_ceil(8))
        .flat_map(|word| (seq * 7 + word as u64 + 1).to_ne_bytes())
        .take(len)
        .collect()
}

/// What one subscriber saw.
struct Seen {
    cursor: u64,
    received: u64,
    lagged: u64,
}

/// Reads from `seen.cursor` while messages are there, checking that each
/// is whole, the length its publisher gave it, and the one the cursor
/// expects. Stops at the first `Empty` (loom needs finite runs); the caller
/// finishes reading once the publisher is done.
fn read_available(heap: &Heap, seen: &mut Seen, len: impl Fn(u64) -> usize) {
    let ring = heap.ring();
    loop {
        let mut out = [0u8; 64];
        match ring.read(seen.cursor, &mut out) {
            Read::Message { len: got } => {
                assert_eq!(got, len(seen.cursor), "wrong length for {}", seen.cursor);
                assert_eq!(
                    out[..got],
                    message(seen.cursor, got)[..],
                    "torn or misplaced message {}",
                    seen.cursor
                );
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
            Read::BadDescriptor { pos, len } => {
                panic!("bad descriptor {pos}/{len} at {}", seen.cursor)
            }
        }
    }
}

/// A subscriber from message 0 on another thread, reading what is there
/// (see [`read_available`]).
fn spawn_subscriber(
    heap: &Arc<Heap>,
    len: impl Fn(u64) -> usize + Send + 'static,
) -> thread::JoinHandle<Seen> {
    let heap = heap.clone();
    thread::spawn(move || {
        let mut seen = Seen {
            cursor: 0,
            received: 0,
            lagged: 0,
        };
        read_available(&heap, &mut seen, len);
        seen
    })
}

/// Lengths of the models: 24, 20 and 17 bytes, 3 words each. In an arena
/// of 8 words, messages 0 and 1 take words 0..3 and 3..6; message 2 would
/// cross the end at 6, so it starts over at word 0 (position 8), wasting
/// words 6 and 7 and reusing message 0's bytes, not message 1's.
fn model_len(seq: u64) -> usize {
    [24, 20, 17][seq as usize]
}

/// Proves, for 1 publisher and 1 subscriber on a ring of 4 descriptors and
/// an arena of 8 words, with the messages of [`model_len`], in every
/// interleaving loom explores:
/// - every message received is whole (no torn copy), has its own length,
///   and is the one the cursor expects (in order, none twice), although
///   message 2 crosses the arena's end, starts over at its beginning and
///   reuses message 0's bytes while the subscriber may be copying them;
/// - received + lagged == sent: the arena lapping the subscriber (the
///   descriptors never do here) costs exactly the messages whose bytes
///   were reused, and never a message that is still whole.
///
/// Fails if `read` does not re-check `reserved` after its copy (a copy of
/// message 0 mixing in message 2's words passes then), or if the publisher
/// stores payload before the fence in `begin`.
#[test]
fn overwrite_by_the_arena_delivers_whole_messages_and_accounts_for_every_one() {
    const SENT: u64 = 3;
    loom::model(|| {
        let heap = Heap::new(4, 64);
        let subscriber = spawn_subscriber(&heap, model_len);
        let ring = heap.ring();
        for seq in 0..SENT {
            ring.publish(seq, &message(seq, model_len(seq))).unwrap();
        }
        let mut seen = subscriber.join().unwrap();
        read_available(&heap, &mut seen, model_len);
        assert_eq!(
            seen.cursor, SENT,
            "lag skipped past the end, or stopped short"
        );
        assert_eq!(seen.received + seen.lagged, SENT);
        // Message 2 reuses only message 0's bytes: at most that one is lost.
        assert!(seen.lagged <= 1, "lost {} of {SENT}", seen.lagged);
    });
}

/// Proves that the lossless rule ([`VarlenRing::has_room`]) never lets the
/// publisher overwrite a message the subscriber has not read, in either
/// array: one subscriber publishes its cursor after each read (as a gated
/// subscriber does), the publisher writes the messages of [`model_len`]
/// into 4 descriptors (never the limit here) and 8 words of arena,
/// yielding while there is no room. In every interleaving the subscriber reads every message whole,
/// in order, and never finds one overwritten.
///
/// Fails if `has_room` checks only the descriptors: message 2 then reuses
/// message 0's bytes before message 0 is read.
#[test]
fn lossless_never_overwrites_an_unread_message_in_either_array() {
    const SENT: u64 = 3;
    loom::model(|| {
        let heap = Heap::new(4, 64);
        let cursor = Arc::new(AtomicU64::new(0));
        let subscriber = {
            let (heap, cursor) = (heap.clone(), cursor.clone());
            thread::spawn(move || {
                let ring = heap.ring();
                let mut at = 0;
                while at < SENT {
                    let mut out = [0u8; 64];
                    match ring.read(at, &mut out) {
                        Read::Message { len } => {
                            assert_eq!(out[..len], message(at, model_len(at))[..]);
                            at += 1;
                            // The gate's cursor store (`Gate::advance`).
                            cursor.store(at, Ordering::Release);
                        }
                        Read::Empty => thread::yield_now(),
                        other => panic!("lossless subscriber found {other:?} at {at}"),
                    }
                }
            })
        };
        let ring = heap.ring();
        for seq in 0..SENT {
            let len = model_len(seq);
            // The gate's Acquire load of the slowest cursor.
            while !ring
                .has_room(seq, len, Some(cursor.load(Ordering::Acquire)))
                .unwrap()
            {
                thread::yield_now();
            }
            ring.publish(seq, &message(seq, len)).unwrap();
        }
        subscriber.join().unwrap();
    });
}

/// Proves that a message begun and never committed (a loan dropped, or its
/// publisher killed after `begin` and some stores) is never seen, and that
/// the next lease holder continues from it without a gap: with a
/// subscriber racing, the publisher sends message 0, begins message 1 and
/// writes into its words, gives up, and the next holder (`resume`) writes
/// message 1 again, further on in the arena. The subscriber receives only
/// whole messages, each at most once, and accounts for both.
///
/// One descriptor, so message 1 reuses message 0's: fails if `begin` does
/// not mark it "being written" before the payload stores (a reader of
/// message 0 then takes words of the abandoned message for it).
#[test]
fn an_abandoned_message_is_never_seen_and_the_next_holder_resumes() {
    let len = |seq: u64| [8, 16][seq as usize];
    loom::model(move || {
        let heap = Heap::new(1, 64);
        let subscriber = spawn_subscriber(&heap, len);
        let ring = heap.ring();
        ring.publish(0, &message(0, len(0))).unwrap();
        let abandoned = ring.begin(1, 16).unwrap();
        shmbus::ring::store_bytes_at(abandoned.payload(), 0, &message(99, 16));
        drop(abandoned);
        let resume = ring.resume();
        assert_eq!(
            resume.seq, 1,
            "an abandoned message takes no sequence number"
        );
        ring.publish(resume.seq, &message(1, len(1))).unwrap();
        let mut seen = subscriber.join().unwrap();
        read_available(&heap, &mut seen, len);
        assert_eq!((seen.cursor, seen.received + seen.lagged), (2, 2));
    });
}

/// Lengths of the attach model: 3 words each, so in an arena of 8 words
/// message 2 reuses message 0's bytes (as in [`model_len`]) and message 3,
/// at position 11, message 1's.
fn attach_len(seq: u64) -> usize {
    [24, 20, 17, 24][seq as usize]
}

/// Proves, for a lossless subscriber attaching with `StartAt::Oldest`
/// (the endpoint's composition: `Gate::attach`, `Gate::read`,
/// `Gate::advance_held`) while the publisher, after messages 0 and 1,
/// publishes messages 2 and 3 as the endpoint does (the gate cache's
/// descriptor rule, then `has_room` against the cached slowest cursor, then
/// a fresh `room_in`, publish, the wakeup check's SeqCst fence):
/// - every message received is whole, its own length, in order;
/// - received + lagged == sent - start: what the subscriber misses is
///   counted exactly;
/// - it misses only messages whose bytes a message at or below the head it
///   read once attached reused: the message being written as it attached
///   may not have seen it, but from then on the arena rule holds the
///   publisher back (with head 2 read, message 3 waits until message 1 is
///   read).
///
/// Fails if the publisher checks only the descriptors (message 3 then
/// overwrites message 1 unread, with head 2 read after attaching). (Ordering
/// of attach itself is the fixed ring's models' to check: `lossless.rs`.)
#[test]
fn a_lossless_subscriber_attaching_to_a_full_arena_misses_only_what_it_is_told() {
    attach_to_a_full_arena(false);
}

/// The same race, the subscriber reading in place as
/// `Subscriber::recv_bytes_ref` does (`VarlenRing::lend` with the head it
/// read as it attached, the copying read when that lends nothing): proves
/// that no byte of a lent message changes while it is lent (each lent
/// message's bytes are loaded after the lend, any of those loads
/// interleaving with the publisher, and must be that message's), besides
/// the invariants above.
///
/// Fails if `lend` ignores the attach head (message 0 is then lent while
/// message 2, which had not seen the subscriber, reuses its bytes). Explored
/// with at most two preemptions (the mutation fails at once with two; three
/// took 7 minutes of CI's time).
#[test]
fn a_message_lent_in_place_is_never_written_while_lent() {
    attach_to_a_full_arena(true);
}

/// The bytes of a lent message, loaded word by word.
fn lent_bytes(words: &[AtomicU64], len: usize) -> Vec<u8> {
    words
        .iter()
        .flat_map(|word| word.load(Ordering::Relaxed).to_ne_bytes())
        .take(len)
        .collect()
}

fn attach_to_a_full_arena(lend: bool) {
    const SENT: u64 = 4;
    let mut builder = loom::model::Builder::new();
    if lend {
        // Each lent message's words are loads of their own, which multiply
        // the interleavings: two preemptions (the publisher's write of a
        // reused word between the lend and a load needs one) keep the
        // model to a minute or two on CI's cores.
        builder.preemption_bound = Some(builder.preemption_bound.unwrap_or(2).min(2));
    }
    builder.check(move || {
        let heap = Heap::new(4, 64);
        let ring = heap.ring();
        for seq in 0..2 {
            ring.publish(seq, &message(seq, attach_len(seq))).unwrap();
        }
        let subscriber = {
            let heap = heap.clone();
            thread::spawn(move || {
                let (ring, gate, me) = (heap.ring(), heap.gate(), Owner::new(1, 1));
                let attached = gate
                    .attach(&ring, me, StartAt::Oldest, |_| Liveness::Alive)
                    .unwrap();
                let head = ring.head();
                let (start, mut cursor) = (attached.cursor, attached.cursor);
                let (mut received, mut lagged) = (0, 0);
                while cursor < SENT {
                    if let Some((words, len)) =
                        lend.then(|| ring.lend(cursor, attached.head)).flatten()
                    {
                        // Every load below may interleave with the
                        // publisher: a write to the lent bytes shows here.
                        let lent = lent_bytes(words, len);
                        assert_eq!(lent, message(cursor, attach_len(cursor)), "{cursor} lent");
                        cursor += 1;
                        received += 1;
                        gate.advance_held(attached.index, me, cursor);
                        continue;
                    }
                    let mut out = [0u8; 64];
                    match gate.read(&ring, attached.index, me, cursor, &mut out) {
                        GatedRead::Message { len } => {
                            assert_eq!(len, attach_len(cursor), "length of {cursor}");
                            assert_eq!(out[..len], message(cursor, len)[..], "torn {cursor}");
                            cursor += 1;
                            received += 1;
                            gate.advance_held(attached.index, me, cursor);
                        }
                        GatedRead::Empty => thread::yield_now(),
                        GatedRead::Overwritten => {
                            // Message m's bytes are reused by message
                            // m + 2: only a message at or below the head
                            // read after attaching may have missed us.
                            assert!(
                                cursor + 2 <= head,
                                "message {cursor} was overwritten unread by message {}, \
                                 above the head {head} read after attaching",
                                cursor + 2
                            );
                            let target = ring.lag_target(cursor);
                            lagged += target - cursor;
                            cursor = target;
                            gate.advance_held(attached.index, me, cursor);
                        }
                        other => panic!("{other:?} at {cursor}"),
                    }
                }
                (start, received, lagged)
            })
        };
        let gate = heap.gate();
        let mut cache = GateCache::default();
        let mut waker = LightWaker::with_quiet(false, 1);
        for seq in 2..SENT {
            let len = attach_len(seq);
            let capacity = ring.capacity();
            loop {
                let room = cache.has_space(&gate, seq, capacity)
                    && (ring.has_room(seq, len, cache.slowest(capacity)).unwrap()
                        || ring.room_in(&gate, seq, len).unwrap());
                if room {
                    break;
                }
                thread::yield_now();
            }
            ring.publish(seq, &message(seq, len)).unwrap();
            ring.ctrl().broadcast().wake().notify_as(&mut waker);
        }
        let (start, received, lagged) = subscriber.join().unwrap();
        assert_eq!(received + lagged, SENT - start, "received + lagged == sent");
    });
}

//! Work-queue consumers reading in place (`Consumer::pop_bytes_ref`,
//! `Consumer::pop_ref`): across real processes every message is taken by
//! exactly one consumer, whole and unchanged while it is held; a held
//! message keeps its slot from the producers that come round to it until it
//! drops; a consumer killed with `kill -9` while it holds one loses that
//! message, counted, and the queue goes on.

mod common;

use std::time::Duration;

use common::{args, child_role, pattern_message, report, seeded_length, spawn_role, TestBus};
use shmbus::{Bus, PopError, PopTimeoutError, TryPopError, TryPushError, WaitStrategy};

/// Slot size of the byte queues: the longest message.
const SLOT: u32 = 4096;
/// Messages each producer process pushes.
const PER_PRODUCER: u64 = 5_000;

fn queue(bus: &Bus, capacity: u32) -> shmbus::TopicBuilder<'_> {
    bus.topic("jobs")
        .slot_size(SLOT)
        .capacity(capacity)
        .wait(WaitStrategy::Block)
        .liveness_check_interval(Duration::from_millis(20))
}

/// The typed queue of the tests that hold one message.
fn typed(bus: &Bus) -> shmbus::TopicBuilder<'_> {
    bus.topic("held")
        .capacity(4)
        .wait(WaitStrategy::Block)
        .liveness_check_interval(Duration::from_millis(20))
}

/// Message `seq` of producer `id`: its tag (`id << 32 | seq`), then a
/// pattern, of a seeded length.
fn job(id: u64, seq: u64) -> Vec<u8> {
    let tag = id << 32 | seq;
    pattern_message(tag, seeded_length(id, seq, SLOT.into()).max(8))
}

/// Entry point of child processes; does nothing when run as a normal test.
#[test]
#[ignore = "entry point of child processes; the tests that spawn them run it"]
fn child_role_entry() {
    let Some((role, args)) = child_role() else {
        return;
    };
    let bus = common::open_bus(&args[0]);
    match role.as_str() {
        // args: bus id. Pushes PER_PRODUCER messages.
        "produce" => {
            let id: u64 = args[1].parse().unwrap();
            let mut tx = queue(&bus, 64).producer_bytes().unwrap();
            report("READY");
            for seq in 0..PER_PRODUCER {
                tx.push_bytes(&job(id, seq)).unwrap();
            }
            report("DONE");
        }
        // args: bus. Pops in place until every producer is gone, checking
        // each message as lent and again after holding every 53rd for a
        // millisecond; reports a bitmap of the tags taken, and how many
        // were bad.
        "consume" => {
            let mut rx = queue(&bus, 64).consumer_bytes().unwrap();
            report("READY");
            let mut seen = vec![0u8; (2 * PER_PRODUCER as usize).div_ceil(8)];
            let (mut bad, mut taken) = (0u64, 0u64);
            loop {
                match rx.pop_bytes_ref() {
                    Ok(msg) => {
                        let tag = u64::from_le_bytes(msg[..8].try_into().unwrap());
                        let (id, seq) = (tag >> 32, tag & 0xffff_ffff);
                        let whole = id < 2 && seq < PER_PRODUCER && *msg == *job(id, seq);
                        if whole && taken % 53 == 0 {
                            std::thread::sleep(Duration::from_millis(1));
                            bad += u64::from(*msg != *job(id, seq));
                        }
                        taken += 1;
                        if !whole {
                            bad += 1;
                            continue;
                        }
                        let bit = (id * PER_PRODUCER + seq) as usize;
                        bad += u64::from(seen[bit / 8] & 1 << (bit % 8) != 0);
                        seen[bit / 8] |= 1 << (bit % 8);
                    }
                    Err(PopError::Disconnected) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            let hex: String = seen.iter().map(|b| format!("{b:02x}")).collect();
            report(format!("RESULT {bad} {hex}"));
        }
        // args: bus. Takes one message in place, says so, and holds it
        // until killed.
        "hold" => {
            let mut rx = typed(&bus).consumer::<[u64; 8]>().unwrap();
            report("READY");
            let msg = rx.pop_ref().unwrap();
            report(format!("HOLDING {}", msg[0]));
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        other => panic!("unknown child role {other}"),
    }
}

/// Two producer and two consumer processes, the consumers reading in
/// place: every message taken exactly once, whole, unchanged while held.
#[test]
fn messages_popped_in_place_across_processes_are_taken_exactly_once_and_whole() {
    if common::shm_only(
        "messages_popped_in_place_across_processes_are_taken_exactly_once_and_whole",
    ) {
        return;
    }
    let bus = TestBus::new("queue-inplace");
    let mut consumers: Vec<_> = (0..2)
        .map(|_| {
            let mut c = spawn_role("consume", &args(&[&bus.name]));
            c.expect_line("READY");
            c
        })
        .collect();
    let mut producers: Vec<_> = (0..2u64)
        .map(|id| {
            let mut p = spawn_role("produce", &args(&[&bus.name, &id]));
            p.expect_line("READY");
            p
        })
        .collect();
    for p in &mut producers {
        p.expect_line("DONE");
        p.wait_success(Duration::from_secs(60));
    }
    let mut union = vec![0u8; (2 * PER_PRODUCER as usize).div_ceil(8)];
    let mut per_consumer = Vec::new();
    for c in &mut consumers {
        let result = c.expect_line("RESULT");
        let (bad, hex) = result.split_once(' ').unwrap();
        c.wait_success(Duration::from_secs(30));
        assert_eq!(
            bad, "0",
            "every message whole, unchanged while held, taken once"
        );
        let bits: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        for (u, b) in union.iter_mut().zip(&bits) {
            assert_eq!(*u & b, 0, "a message taken by both consumers");
            *u |= b;
        }
        per_consumer.push(bits.iter().map(|b| b.count_ones()).sum::<u32>());
    }
    let taken: u32 = union.iter().map(|b| b.count_ones()).sum();
    eprintln!("taken per consumer: {per_consumer:?}");
    assert_eq!(u64::from(taken), 2 * PER_PRODUCER, "every message taken");
}

/// A consumer killed with `kill -9` while it holds a message in place:
/// the message is lost and counted once, and the producer that came round
/// to its slot goes on.
#[test]
fn a_consumer_killed_holding_a_popped_message_loses_it_counted() {
    if common::shm_only("a_consumer_killed_holding_a_popped_message_loses_it_counted") {
        return;
    }
    let bus = TestBus::new("queue-inplace-kill");
    let b = bus.open();
    let mut tx = typed(&b).producer::<[u64; 8]>().unwrap();
    let mut child = spawn_role("hold", &args(&[&bus.name]));
    child.expect_line("READY");
    tx.push([100; 8]).unwrap();
    assert_eq!(child.expect_line("HOLDING"), "100");
    for n in 1..4 {
        tx.push([100 + n; 8]).unwrap();
    }
    // Round to the held slot: full until the holder is gone.
    assert!(matches!(tx.try_push([104; 8]), Err(TryPushError::Full(_))));
    child.kill9();
    tx.push_timeout([104; 8], Duration::from_secs(10))
        .expect("the dead consumer's slot is recovered");
    let stats = tx.queue_stats();
    assert_eq!(stats.lost_in_consume, 1, "{stats:?}");
    let mut rx = typed(&b).consumer::<[u64; 8]>().unwrap();
    for n in 1..5 {
        assert_eq!(*rx.pop_ref().unwrap(), [100 + n; 8]);
    }
}

#[test]
fn a_popped_message_holds_its_slot_until_it_drops() {
    if common::shm_only("a_popped_message_holds_its_slot_until_it_drops") {
        return;
    }
    let bus = TestBus::new("queue-inplace-holds");
    let b = bus.open();
    let mut tx = queue(&b, 2).producer_bytes().unwrap();
    let mut rx = queue(&b, 2).consumer_bytes().unwrap();
    tx.push_bytes(&job(0, 0)).unwrap();
    tx.push_bytes(&job(0, 1)).unwrap();
    let held = rx.pop_bytes_ref().unwrap();
    assert_eq!((held.pos(), &*held), (0, &*job(0, 0)));
    assert!(
        matches!(tx.try_push_bytes(&job(0, 2)), Err(TryPushError::Full(()))),
        "the producer must not write a held slot"
    );
    assert_eq!(&*held, &*job(0, 0), "unchanged while held");
    drop(held);
    tx.try_push_bytes(&job(0, 2))
        .expect("room once the held message drops");
    for seq in 1..3 {
        let msg = rx.pop_bytes_ref().unwrap();
        assert_eq!((msg.pos(), &*msg), (seq, &*job(0, seq)));
    }
}

#[test]
fn popping_in_place_skips_abandoned_loans_and_waits_like_pop() {
    if common::shm_only("popping_in_place_skips_abandoned_loans_and_waits_like_pop") {
        return;
    }
    let bus = TestBus::new("queue-inplace-api");
    let b = bus.open();
    let mut rx = typed(&b).consumer::<u64>().unwrap();
    assert_eq!(rx.try_pop_ref().unwrap_err(), TryPopError::Empty);
    assert_eq!(
        rx.pop_ref_timeout(Duration::from_millis(20)).unwrap_err(),
        PopTimeoutError::Timeout
    );
    let mut tx = typed(&b).producer::<u64>().unwrap();
    drop(tx.loan().unwrap()); // a tombstone, skipped
    tx.push(5).unwrap();
    let five = rx
        .pop_ref_deadline(std::time::Instant::now() + Duration::from_secs(5))
        .unwrap();
    assert_eq!((*five, five.pos()), (5, 1));
    drop(five);
    drop(tx);
    assert_eq!(rx.pop_ref().unwrap_err(), PopError::Disconnected);

    let mut bytes_rx = b.topic("blobs").consumer_bytes().unwrap();
    let mut bytes_tx = b.topic("blobs").producer_bytes().unwrap();
    assert_eq!(
        bytes_rx.try_pop_bytes_ref().unwrap_err(),
        TryPopError::Empty
    );
    bytes_tx.push_bytes(b"").unwrap();
    bytes_tx.push_bytes(b"blob").unwrap();
    assert_eq!(&*bytes_rx.try_pop_bytes_ref().unwrap(), b"");
    let blob = bytes_rx
        .pop_bytes_ref_timeout(Duration::from_secs(5))
        .unwrap();
    assert_eq!(&*blob, b"blob");
}

/// A producer asleep on a full queue (no liveness poll to rescue it within
/// the bound: the check interval is 30 s) is woken when the popped message
/// that held its slot drops.
#[test]
fn dropping_a_popped_message_wakes_a_producer_blocked_on_its_slot() {
    let bus = TestBus::new("queue-inplace-wake");
    let b = bus.open();
    let topic = || {
        b.topic("wake")
            .capacity(2)
            .wait(WaitStrategy::Block)
            .liveness_check_interval(Duration::from_secs(30))
    };
    let mut tx = topic().producer::<u64>().unwrap();
    let mut rx = topic().consumer::<u64>().unwrap();
    tx.push(0).unwrap();
    tx.push(1).unwrap();
    let held = rx.pop_ref().unwrap();
    // Without a wake it sleeps to its deadline, 20 s, and then finds room:
    // so the check is that it returned long before that, not how fast.
    let pusher = std::thread::spawn(move || tx.push_timeout(2, Duration::from_secs(20)));
    // Let it find the queue full and sleep (it finds room at once if not).
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(*held, 0);
    let dropped = std::time::Instant::now();
    drop(held);
    pusher
        .join()
        .unwrap()
        .expect("room once the held slot was released");
    assert!(
        dropped.elapsed() < Duration::from_secs(10),
        "the blocked producer slept to its deadline: the release did not wake it"
    );
    assert_eq!((rx.pop().unwrap(), rx.pop().unwrap()), (1, 2));
}

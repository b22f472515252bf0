//! Variable-size work queues (`TopicBuilder::variable` on a queue):
//! messages of any length up to half the arena, each taking only its own
//! length, across real processes: every message taken by exactly one
//! consumer, whole, whether pushed or loaned, popped by copy or in place;
//! abandoned loans invisible; a producer killed with `kill -9` holding a
//! loan and a consumer killed holding a message in place each lose one
//! message, counted, and the queue goes on; the options it refuses.

mod common;

use std::time::Duration;

use common::{args, child_role, pattern_message, report, seeded_length, spawn_role, TestBus};
use shmbus::{Bus, Error, PopError, PushError, TryPushError, WaitStrategy};

/// The arena: messages of up to 32 KiB less a 16-byte header.
const ARENA: u64 = 64 << 10;
/// The largest message.
const MAX: usize = (ARENA / 2) as usize - 16;
/// Messages each producer process pushes.
const PER_PRODUCER: u64 = 4_000;

fn queue(bus: &Bus) -> shmbus::TopicBuilder<'_> {
    bus.topic("jobs")
        .variable(ARENA)
        .wait(WaitStrategy::Block)
        .liveness_check_interval(Duration::from_millis(20))
}

/// Message `seq` of producer `id`: its tag (`id << 32 | seq`), then a
/// pattern, of a seeded length from 8 bytes to the largest.
fn job(id: u64, seq: u64) -> Vec<u8> {
    let tag = id << 32 | seq;
    pattern_message(tag, seeded_length(id + 1, seq, MAX as u64).max(8))
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
        // args: bus id. Pushes PER_PRODUCER messages: every third written
        // in place through a loan, and before every seventh a loan of a
        // seeded length abandoned half written.
        "produce" => {
            let id: u64 = args[1].parse().unwrap();
            let mut tx = queue(&bus).producer_bytes().unwrap();
            report("READY");
            for seq in 0..PER_PRODUCER {
                let msg = job(id, seq);
                if seq % 7 == 0 {
                    let mut loan = tx.loan_bytes(msg.len() / 2).unwrap();
                    loan.fill(0xee);
                    drop(loan);
                }
                if seq % 3 == 0 {
                    let mut loan = tx.loan_bytes(msg.len()).unwrap();
                    loan.copy_from_slice(&msg);
                    loan.commit();
                } else {
                    tx.push_bytes(&msg).unwrap();
                }
            }
            report("DONE");
        }
        // args: bus in_place. Pops (copying, or in place) until every
        // producer is gone; reports a bitmap of the tags taken, and how
        // many messages were not whole or taken twice.
        "consume" => {
            let in_place = args[1] == "1";
            let mut rx = queue(&bus).consumer_bytes().unwrap();
            report("READY");
            let mut seen = vec![0u8; (2 * PER_PRODUCER as usize).div_ceil(8)];
            let mut bad = 0u64;
            let mut check = |msg: &[u8]| {
                let tag = u64::from_le_bytes(msg[..8].try_into().unwrap());
                let (id, seq) = (tag >> 32, tag & 0xffff_ffff);
                if id >= 2 || seq >= PER_PRODUCER || *msg != *job(id, seq) {
                    bad += 1;
                    return;
                }
                let bit = (id * PER_PRODUCER + seq) as usize;
                bad += u64::from(seen[bit / 8] & 1 << (bit % 8) != 0);
                seen[bit / 8] |= 1 << (bit % 8);
            };
            loop {
                let got = if in_place {
                    rx.pop_bytes_ref().map(|msg| check(&msg))
                } else {
                    rx.pop_bytes().map(&mut check)
                };
                match got {
                    Ok(()) => {}
                    Err(PopError::Disconnected) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            let hex: String = seen.iter().map(|b| format!("{b:02x}")).collect();
            report(format!("RESULT {bad} {hex}"));
        }
        // args: bus. Loans room for the largest message, writes half of
        // it, says so, and holds the loan until killed.
        "hold-loan" => {
            let mut tx = queue(&bus).producer_bytes().unwrap();
            report("READY");
            let mut loan = tx.loan_bytes(MAX).unwrap();
            loan[..MAX / 2].fill(0xdd);
            report("HOLDING");
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        // args: bus. Takes one message in place, says how long it is, and
        // holds it until killed.
        "hold-message" => {
            let mut rx = queue(&bus).consumer_bytes().unwrap();
            report("READY");
            let msg = rx.pop_bytes_ref().unwrap();
            report(format!("HOLDING {}", msg.len()));
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        other => panic!("unknown child role {other}"),
    }
}

/// Two producer processes (pushing and loaning, abandoning some loans)
/// and two consumer processes (one copying, one reading in place), with
/// seeded lengths up to the largest in an arena of 64 KiB, so messages
/// wrap round it hundreds of times: every message taken exactly once,
/// whole; no abandoned loan seen.
#[test]
fn variable_messages_across_processes_are_taken_exactly_once_and_whole() {
    if common::shm_only("variable_messages_across_processes_are_taken_exactly_once_and_whole") {
        return;
    }
    let bus = TestBus::new("varq-procs");
    let mut consumers: Vec<_> = ["0", "1"]
        .iter()
        .map(|in_place| {
            let mut c = spawn_role("consume", &args(&[&bus.name, in_place]));
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
        p.wait_success(Duration::from_secs(120));
    }
    let mut union = vec![0u8; (2 * PER_PRODUCER as usize).div_ceil(8)];
    let mut per_consumer = Vec::new();
    for c in &mut consumers {
        let result = c.expect_line("RESULT");
        let (bad, hex) = result.split_once(' ').unwrap();
        c.wait_success(Duration::from_secs(30));
        assert_eq!(bad, "0", "every message whole and taken once");
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
    eprintln!("taken per consumer (copying, in place): {per_consumer:?}");
    assert_eq!(u64::from(taken), 2 * PER_PRODUCER, "every message taken");
    let stats = queue(&bus.open()).consumer_bytes().unwrap().queue_stats();
    assert_eq!((stats.lost_in_push, stats.lost_in_consume), (0, 0));
}

/// A producer killed with `kill -9` while it holds a loan of the largest
/// message: the consumer stuck behind it recovers the claim (one loss,
/// counted), nothing of it is delivered, and the messages pushed after it
/// arrive whole.
#[test]
fn a_producer_killed_holding_a_loan_loses_one_message_counted() {
    if common::shm_only("a_producer_killed_holding_a_loan_loses_one_message_counted") {
        return;
    }
    let bus = TestBus::new("varq-kill-loan");
    let b = bus.open();
    let mut rx = queue(&b).consumer_bytes().unwrap();
    let mut tx = queue(&b).producer_bytes().unwrap();
    tx.push_bytes(&pattern_message(0, 100)).unwrap();
    let mut child = spawn_role("hold-loan", &args(&[&bus.name]));
    child.expect_line("READY");
    child.expect_line("HOLDING");
    tx.push_bytes(&pattern_message(1, 100)).unwrap();
    assert_eq!(rx.pop_bytes().unwrap(), pattern_message(0, 100));
    assert!(
        rx.pop_bytes_timeout(Duration::from_millis(100)).is_err(),
        "nothing passes a live producer's loan"
    );
    child.kill9();
    let next = rx
        .pop_bytes_timeout(Duration::from_secs(10))
        .expect("the dead producer's claim is recovered");
    assert_eq!(next, pattern_message(1, 100));
    assert_eq!(rx.queue_stats().lost_in_push, 1);
    // The arena goes on: a few laps of the largest messages.
    for seq in 0..8u64 {
        let msg = pattern_message(seq, MAX);
        tx.push_bytes(&msg).unwrap();
        assert_eq!(rx.pop_bytes().unwrap(), msg);
    }
}

/// A consumer killed with `kill -9` while it holds a message of many units
/// in place: the producer that comes round to them frees them all (one
/// loss, counted) and goes on; the message is never delivered again.
#[test]
fn a_consumer_killed_holding_a_message_in_place_loses_it_counted() {
    if common::shm_only("a_consumer_killed_holding_a_message_in_place_loses_it_counted") {
        return;
    }
    let bus = TestBus::new("varq-kill-held");
    let b = bus.open();
    let mut tx = queue(&b).producer_bytes().unwrap();
    let mut child = spawn_role("hold-message", &args(&[&bus.name]));
    child.expect_line("READY");
    let held = pattern_message(100, 20_000);
    tx.push_bytes(&held).unwrap();
    assert_eq!(child.expect_line("HOLDING"), "20000");
    // Round the arena to the held message's units: full until the holder
    // is gone.
    let filler = pattern_message(101, 20_000);
    tx.push_bytes(&filler).unwrap();
    tx.push_bytes(&pattern_message(102, 20_000)).unwrap();
    assert!(matches!(
        tx.try_push_bytes(&pattern_message(103, 20_000)),
        Err(TryPushError::Full(()))
    ));
    child.kill9();
    tx.push_bytes_timeout(&pattern_message(103, 20_000), Duration::from_secs(10))
        .expect("the dead consumer's units are recovered");
    let mut rx = queue(&b).consumer_bytes().unwrap();
    for seq in 101..104 {
        assert_eq!(rx.pop_bytes().unwrap(), pattern_message(seq, 20_000));
    }
    let stats = rx.queue_stats();
    assert_eq!((stats.lost_in_push, stats.lost_in_consume), (0, 1));
}

#[test]
fn a_variable_queue_refuses_what_it_cannot_take_and_names_the_limit() {
    if common::shm_only("a_variable_queue_refuses_what_it_cannot_take_and_names_the_limit") {
        return;
    }
    let bus = TestBus::new("varq-api");
    let b = bus.open();
    let mut tx = queue(&b).producer_bytes().unwrap();
    assert_eq!(tx.capacity(), ARENA / 64, "64-byte units");
    assert_eq!(
        tx.push_bytes(&vec![0; MAX + 1]),
        Err(PushError::TooLarge {
            len: MAX + 1,
            max: MAX
        })
    );
    assert!(matches!(
        tx.loan_bytes(MAX + 1),
        Err(PushError::TooLarge { max: MAX, .. })
    ));
    tx.push_bytes(b"").unwrap();
    tx.push_bytes(&[7; MAX]).unwrap();
    // A consumer that names no shape joins whatever the queue is.
    let mut rx = b.topic("jobs").consumer_bytes().unwrap();
    assert_eq!(rx.pop_bytes().unwrap(), b"");
    assert_eq!(rx.pop_bytes().unwrap(), [7; MAX]);

    let refused = |result: Result<_, Error>, words: &str| {
        let err = result.expect_err("refused").to_string();
        assert!(err.contains(words), "{err:?} should say {words:?}");
    };
    refused(
        b.topic("both")
            .variable(ARENA)
            .capacity(64)
            .producer_bytes()
            .map(drop),
        "not both",
    );
    refused(
        b.topic("typed").variable(ARENA).producer::<u64>().map(drop),
        "byte topics",
    );
    refused(
        b.topic("jobs")
            .variable(ARENA * 2)
            .consumer_bytes()
            .map(drop),
        "variable-size work-queue topic",
    );
    refused(
        b.topic("jobs").slot_size(64).producer_bytes().map(drop),
        "variable-size work-queue topic",
    );
    refused(
        b.topic("odd")
            .variable(ARENA + 1)
            .producer_bytes()
            .map(drop),
        "power of two",
    );
}

/// An async producer on a variable-size queue kept full by a slow
/// consumer thread (cloned from another consumer): every job arrives whole
/// and in order, the largest included. (It checks what arrives, not how
/// the producer waits: a doorbell that rang too early would busy-loop and
/// still pass.)
#[test]
fn an_async_producer_kept_waiting_delivers_every_job_whole_and_in_order() {
    if common::shm_only("an_async_producer_kept_waiting_delivers_every_job_whole_and_in_order") {
        return;
    }
    let bus = TestBus::new("varq-async");
    let b = bus.open();
    let first = queue(&b).consumer_bytes().unwrap();
    let mut rx = first.try_clone().unwrap();
    drop(first);
    const JOBS: u64 = 300;
    let len = |seq: u64| {
        if seq % 10 == 0 {
            MAX
        } else {
            seeded_length(9, seq, 4096)
        }
    };
    let consumer = std::thread::spawn(move || {
        for seq in 0..JOBS {
            let job = rx.pop_bytes_ref().unwrap();
            assert_eq!(*job, *pattern_message(seq, len(seq)), "job {seq}");
            if seq % 7 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut tx = queue(&b).producer_bytes().unwrap().into_async().unwrap();
        for seq in 0..JOBS {
            tx.push_bytes(&pattern_message(seq, len(seq)))
                .await
                .unwrap();
        }
    });
    consumer.join().unwrap();
}

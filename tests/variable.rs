//! Variable-size broadcast topics (`TopicBuilder::variable`): messages of
//! any length up to half the arena, in overwrite and lossless mode, across
//! real processes; the options they refuse; a lossless subscriber killed
//! with `kill -9` while the arena is full.

mod common;

use std::time::Duration;

use common::{
    args, child_role, pattern_message, report, seeded_length, spawn_role, topic_infos, TestBus,
};
use shmbus::{Bus, Error, RecvError, SendError, StartAt, TrySendError, WaitStrategy};

const ARENA: u64 = 64 << 10;

fn message(seq: u64, len: usize) -> Vec<u8> {
    pattern_message(seq, len)
}

fn length(seed: u64, seq: u64) -> usize {
    seeded_length(seed, seq, ARENA / 2)
}

fn topic(bus: &Bus, lossless: bool) -> shmbus::TopicBuilder<'_> {
    let t = bus
        .topic("books")
        .variable(ARENA)
        .capacity(256)
        .wait(WaitStrategy::Block)
        .liveness_check_interval(Duration::from_millis(20));
    if lossless {
        t.lossless(4)
    } else {
        t
    }
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
        // args: bus lossless count seed. Publishes `count` messages of
        // seeded random lengths.
        "publish" => {
            let lossless = args[1] == "1";
            let count: u64 = args[2].parse().unwrap();
            let seed: u64 = args[3].parse().unwrap();
            let mut tx = topic(&bus, lossless).publisher_bytes().unwrap();
            report("READY");
            for seq in 0..count {
                assert_eq!(
                    tx.send_bytes(&message(seq, length(seed, seq))).unwrap(),
                    seq
                );
            }
            report("DONE");
        }
        // args: bus lossless seed. Reads until the publisher leaves,
        // checking every message; reports received, lagged and bad.
        "subscribe" => {
            let lossless = args[1] == "1";
            let seed: u64 = args[2].parse().unwrap();
            let mut rx = topic(&bus, lossless)
                .start_at(StartAt::Oldest)
                .subscriber_bytes()
                .unwrap();
            report("READY");
            let (mut received, mut lagged, mut bad) = (0u64, 0u64, 0u64);
            let mut last = None;
            loop {
                let seq = rx.next_seq();
                match rx.recv_bytes() {
                    Ok(msg) => {
                        if msg != message(seq, length(seed, seq)).as_slice() {
                            bad += 1;
                        }
                        if last.is_some_and(|l| seq <= l) {
                            bad += 1;
                        }
                        last = Some(seq);
                        received += 1;
                    }
                    Err(RecvError::Lagged(n)) => lagged += n,
                    Err(RecvError::Disconnected) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            report(format!("RESULT {received} {lagged} {bad}"));
        }
        // args: bus. Attaches a lossless subscriber, reads nothing, and
        // waits to be killed.
        "stall" => {
            let _rx = topic(&bus, true).subscriber_bytes().unwrap();
            report("READY");
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        other => panic!("unknown child role {other}"),
    }
}

/// One publisher process, two subscriber processes: every message whole,
/// in order; lossless loses none, overwrite counts what it lost exactly.
fn fanout(lossless: bool, seed: u64) {
    const COUNT: u64 = 20_000;
    let bus = TestBus::new(if lossless { "var-ll" } else { "var-ow" });
    let b = bus.open();
    let mut subs: Vec<_> = (0..2)
        .map(|_| {
            let mut sub = spawn_role("subscribe", &args(&[&bus.name, &u8::from(lossless), &seed]));
            sub.expect_line("READY");
            sub
        })
        .collect();
    let mut publisher = spawn_role(
        "publish",
        &args(&[&bus.name, &u8::from(lossless), &COUNT, &seed]),
    );
    publisher.expect_line("READY");
    publisher.expect_line("DONE");
    publisher.wait_success(Duration::from_secs(60));
    for sub in &mut subs {
        let result = sub.expect_line("RESULT");
        let numbers: Vec<u64> = result.split(' ').map(|n| n.parse().unwrap()).collect();
        let (received, lagged, bad) = (numbers[0], numbers[1], numbers[2]);
        sub.wait_success(Duration::from_secs(30));
        eprintln!("lossless {lossless}: received {received}, lagged {lagged}, bad {bad}");
        assert_eq!(bad, 0, "every message whole and in order");
        assert_eq!(received + lagged, COUNT, "received + lagged == sent");
        if lossless {
            assert_eq!(lagged, 0, "lossless loses nothing");
        }
    }
    let info = topic_infos(&b);
    assert_eq!(info[0].arena_bytes, Some(ARENA));
    assert_eq!(info[0].published, COUNT);
}

#[test]
fn lossless_variable_fanout_across_processes_loses_nothing() {
    fanout(true, 0x5eed_0001);
}

#[test]
fn overwrite_variable_fanout_across_processes_counts_every_loss() {
    fanout(false, 0x5eed_0002);
}

/// The arena, not only the descriptors, holds a lossless publisher back;
/// a subscriber killed with `kill -9` while it does is evicted, and the
/// publisher goes on.
#[test]
fn a_killed_subscriber_stops_holding_the_arena() {
    if common::shm_only("a_killed_subscriber_stops_holding_the_arena") {
        return;
    }
    let bus = TestBus::new("var-kill");
    let b = bus.open();
    let mut tx = topic(&b, true).publisher_bytes().unwrap();
    let mut child = spawn_role("stall", &args(&[&bus.name]));
    child.expect_line("READY");
    let big = vec![1u8; ARENA as usize / 4];
    let mut sent = 0;
    while tx.try_send_bytes(&big).is_ok() {
        sent += 1;
        // Capacity 256: the arena, not the descriptors, runs out.
        assert!(sent <= 4, "four quarters fill the arena");
    }
    assert!(
        sent >= 3,
        "{sent} quarter-arena messages before it was full"
    );
    assert_eq!(tx.try_send_bytes(&big), Err(TrySendError::Full));
    child.kill9();
    tx.send_bytes_timeout(&big, Duration::from_secs(10))
        .expect("room once the dead subscriber is evicted");
    assert_eq!(tx.evictions(), 1);
}

/// A lossless subscriber that starts at the oldest message of a full
/// arena holds the publisher back from then on: it reads every message,
/// whole, from the oldest the arena held when it attached. (The race of an
/// attach with the message being written at that moment, which may cost
/// such a subscriber messages below it, counted as `Lagged`, is the loom
/// model's to explore.)
#[test]
fn a_lossless_subscriber_starting_at_the_oldest_gets_everything_from_there() {
    if common::shm_only("a_lossless_subscriber_starting_at_the_oldest_gets_everything_from_there") {
        return;
    }
    let bus = TestBus::new("var-oldest");
    let b = bus.open();
    let mut tx = topic(&b, true).publisher_bytes().unwrap();
    for seq in 0..40 {
        tx.send_bytes(&message(seq, 3000)).unwrap();
    }
    let mut rx = topic(&b, true)
        .start_at(StartAt::Oldest)
        .subscriber_bytes()
        .unwrap();
    let first = rx.next_seq();
    assert!(
        first > 0 && first < 40,
        "starts at the oldest held: {first}"
    );
    let mut expect = first;
    let check = |rx: &mut shmbus::Subscriber<shmbus::Bytes>, expect: &mut u64| {
        let msg = rx
            .recv_bytes_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("message {expect}: {e}"));
        assert_eq!(msg, message(*expect, 3000), "message {expect}");
        *expect += 1;
    };
    let mut blocked = 0;
    for seq in 40..200 {
        loop {
            match tx.try_send_bytes(&message(seq, 3000)) {
                Ok(_) => break,
                Err(TrySendError::Full) => {
                    blocked += 1;
                    check(&mut rx, &mut expect);
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    while expect < 200 {
        check(&mut rx, &mut expect);
    }
    // The arena holds about 21 such messages; every message from 40 on
    // waited for one read.
    assert!(
        blocked >= 150,
        "the arena held the publisher back: {blocked}"
    );
    assert_eq!(rx.stats().lagged, 0);
}

#[test]
fn messages_of_every_length_up_to_half_the_arena_round_trip() {
    let bus = TestBus::new("var-lengths");
    let b = bus.open();
    let mut tx = b.topic("t").variable(4096).publisher_bytes().unwrap();
    let mut rx = b
        .topic("t")
        .start_at(StartAt::Next)
        .subscriber_bytes()
        .unwrap();
    assert_eq!(tx.max_message_len(), 2048);
    for len in 0..=2048 {
        let seq = tx.send_bytes(&message(len as u64, len)).unwrap();
        assert_eq!(
            rx.recv_bytes().unwrap(),
            message(len as u64, len),
            "len {len}"
        );
        assert_eq!(rx.next_seq(), seq + 1);
    }
    let err = tx.send_bytes(&[0; 2049]).unwrap_err();
    assert_eq!(
        err,
        SendError::TooLarge {
            len: 2049,
            max: 2048
        }
    );
    assert!(
        err.to_string().contains("2049") && err.to_string().contains("2048"),
        "{err}"
    );
    assert!(matches!(
        tx.loan_bytes(2049),
        Err(SendError::TooLarge { max: 2048, .. })
    ));
    // A loan in a variable-size topic: written in place, its own length.
    let mut loan = tx.loan_bytes(5).unwrap();
    loan.write_at(0, b"hello").unwrap();
    loan.commit().unwrap();
    {
        // Written, then abandoned: nothing published, its bytes wasted.
        let mut abandoned = tx.loan_bytes(100).unwrap();
        abandoned.fill(9);
    }
    tx.send_bytes(b"after").unwrap();
    assert_eq!(rx.recv_bytes().unwrap(), b"hello");
    assert_eq!(rx.recv_bytes().unwrap(), b"after");
}

#[test]
fn variable_topics_refuse_what_they_cannot_be() {
    let bus = TestBus::new("var-refuse");
    let b = bus.open();
    let invalid = |r: Result<(), Error>, needle: &str| match r {
        Err(e @ Error::InvalidOptions { .. }) => {
            assert!(e.to_string().contains(needle), "{e}")
        }
        other => panic!("wanted InvalidOptions naming {needle:?}, got {other:?}"),
    };
    invalid(
        b.topic("a").variable(5000).publisher_bytes().map(drop),
        "power of two",
    );
    invalid(
        b.topic("a").variable(1024).publisher_bytes().map(drop),
        "from 4096",
    );
    invalid(
        b.topic("a")
            .variable(4096)
            .slot_size(64)
            .publisher_bytes()
            .map(drop),
        "not both",
    );
    invalid(
        b.topic("a").variable(4096).publisher::<u64>().map(drop),
        "byte topics",
    );
    // Work queues can be variable-size (tests/variable_queue.rs), but
    // their capacity is then the arena's units.
    invalid(
        b.topic("q")
            .variable(4096)
            .capacity(64)
            .producer_bytes()
            .map(drop),
        "not both",
    );
    // A fixed-slot topic and a variable-size one of the same name mismatch,
    // either way round, with both shapes named.
    // (Eight messages: on message queues within the default msg_max.)
    let _fixed = b.topic("fixed").capacity(8).publisher_bytes().unwrap();
    match b.topic("fixed").variable(4096).subscriber_bytes() {
        Err(e @ Error::TopicMismatch { .. }) => {
            assert!(e.to_string().contains("arena"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    let _var = b.topic("var").variable(8192).publisher_bytes().unwrap();
    match b.topic("var").slot_size(256).subscriber_bytes() {
        Err(e @ Error::TopicMismatch { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("variable-size") && text.contains("8192"),
                "{text}"
            )
        }
        other => panic!("{other:?}"),
    }
    // A slot size the size of its largest message is still a slot size.
    assert!(matches!(
        b.topic("var").slot_size(4096).subscriber_bytes(),
        Err(Error::TopicMismatch { .. })
    ));
    // Joining without saying: whatever the topic is.
    let rx = b.topic("var").subscriber_bytes().unwrap();
    drop(rx);
    assert!(b.topic("var").observer().is_ok());
    invalid(
        b.topic("var").variable(8192).observer().map(drop),
        "variable",
    );
}

//! Publish timestamps (`TopicBuilder::timestamps`): every message of a
//! timestamped topic carries the time its publisher published it, on the
//! clock the topic was made with, fixed-slot and variable-size, sent or
//! loaned, within one process and across processes.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{args, child_role, report, spawn_role, TestBus};
use shmbus::{Clock, Error, RecvError, StartAt, WaitStrategy};

fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
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
        // args: bus count. Publishes `count` messages, each its own send
        // time (monotonic) as its payload, on a lossless timestamped topic.
        "publish" => {
            let count: u64 = args[1].parse().unwrap();
            let mut tx = bus
                .topic("ticks")
                .timestamps(Clock::Monotonic)
                .capacity(2)
                .lossless(1)
                .publisher::<u64>()
                .unwrap();
            report("READY");
            for _ in 0..count {
                tx.send(&Clock::Monotonic.now_ns()).unwrap();
            }
        }
        other => panic!("unknown child role {other}"),
    }
}

#[test]
fn every_message_of_a_timestamped_topic_says_when_it_was_published() {
    let bus = TestBus::new("ts-api");
    let b = bus.open();
    // Fixed slots, typed, monotonic.
    let mut tx = b
        .topic("px")
        .timestamps(Clock::Monotonic)
        .publisher::<u64>()
        .unwrap();
    let mut rx = b
        .topic("px")
        .start_at(StartAt::Next)
        .subscriber::<u64>()
        .unwrap();
    let mut last = 0;
    for i in 0..100u64 {
        let before = Clock::Monotonic.now_ns();
        if i % 2 == 0 {
            tx.send(&i).unwrap();
        } else {
            let mut loan = tx.loan().unwrap();
            loan.write(&i);
            loan.commit().unwrap();
        }
        let after = Clock::Monotonic.now_ns();
        let (info, got) = rx.recv_with_info().unwrap();
        let ts = info.timestamp_ns.expect("timestamped");
        assert_eq!((info.seq, got), (i, i));
        assert!(before <= ts && ts <= after, "{before} <= {ts} <= {after}");
        assert!(ts >= last, "timestamps never go back");
        last = ts;
    }
    // Variable-size, bytes, realtime; eight messages, of which two are
    // ever unread (on message queues, within the default `ulimit -q`).
    let mut tx = b
        .topic("books")
        .variable(1 << 16)
        .capacity(8)
        .timestamps(Clock::Realtime)
        .publisher_bytes()
        .unwrap();
    let mut rx = b
        .topic("books")
        .start_at(StartAt::Next)
        .subscriber_bytes()
        .unwrap();
    for len in [0usize, 1, 100, 5000, 32768] {
        let before = realtime_ns();
        tx.send_bytes(&vec![3; len]).unwrap();
        let mut loan = tx.loan_bytes(len / 2).unwrap();
        loan.fill(4);
        loan.commit().unwrap();
        let after = realtime_ns();
        for fill in [3, 4] {
            let (info, msg) = rx.recv_bytes_with_info().unwrap();
            assert!(msg.iter().all(|&b| b == fill), "len {len}");
            let ts = info.timestamp_ns.expect("timestamped");
            assert!(before <= ts && ts <= after, "{before} <= {ts} <= {after}");
        }
    }
    // A topic without timestamps says none.
    let mut tx = b.topic("plain").publisher::<u64>().unwrap();
    let mut rx = b
        .topic("plain")
        .start_at(StartAt::Next)
        .subscriber::<u64>()
        .unwrap();
    tx.send(&1).unwrap();
    assert_eq!(rx.recv_with_info().unwrap().0.timestamp_ns, None);
}

#[test]
fn timestamps_are_chosen_at_creation_and_checked_on_join() {
    let bus = TestBus::new("ts-refuse");
    let b = bus.open();
    let _tx = b
        .topic("px")
        .timestamps(Clock::Realtime)
        .publisher::<u64>()
        .unwrap();
    match b
        .topic("px")
        .timestamps(Clock::Monotonic)
        .subscriber::<u64>()
    {
        Err(e @ Error::TopicMismatch { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("Realtime") && text.contains("Monotonic"),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Joining without saying: whatever the topic has.
    let mut rx = b.topic("px").subscriber::<u64>().unwrap();
    assert_eq!(rx.try_recv(), Err(shmbus::TryRecvError::Empty));
    let _plain = b.topic("plain").publisher::<u64>().unwrap();
    assert!(matches!(
        b.topic("plain")
            .timestamps(Clock::Realtime)
            .subscriber::<u64>(),
        Err(Error::TopicMismatch { .. })
    ));
    for (result, needle) in [
        (
            b.topic("q")
                .timestamps(Clock::Realtime)
                .producer::<u64>()
                .map(drop),
            "work queue",
        ),
        (
            b.topic("px")
                .timestamps(Clock::Realtime)
                .observer()
                .map(drop),
            "timestamps",
        ),
    ] {
        match result {
            Err(e @ Error::InvalidOptions { .. }) => {
                assert!(e.to_string().contains(needle), "{e}")
            }
            other => panic!("wanted InvalidOptions naming {needle:?}: {other:?}"),
        }
    }
    let info = common::topic_infos(&b);
    let px = info.iter().find(|t| t.name == "px").unwrap();
    assert_eq!(px.timestamps, Some(Clock::Realtime));
}

/// Across processes: the publisher's timestamp and the time it put in the
/// payload just before sending are on the same system-wide clock, so each
/// timestamp is at or after the payload's time and at or before the
/// receive; they never go back. A ring of 2 keeps the publisher waiting on
/// the subscriber's every read: a lossless subscriber still gets every
/// timestamp (it reads it before its cursor lets the slot go).
#[test]
fn monotonic_timestamps_measure_latency_across_processes() {
    const COUNT: u64 = 10_000;
    let bus = TestBus::new("ts-procs");
    let b = bus.open();
    let mut rx = b
        .topic("ticks")
        .timestamps(Clock::Monotonic)
        .capacity(2)
        .lossless(1)
        .start_at(StartAt::Next)
        .wait(WaitStrategy::Block)
        .subscriber::<u64>()
        .unwrap();
    let mut child = spawn_role("publish", &args(&[&bus.name, &COUNT]));
    child.expect_line("READY");
    let (mut last, mut worst) = (0, 0);
    for seq in 0..COUNT {
        let (info, payload) = rx.recv_with_info().unwrap();
        let now = Clock::Monotonic.now_ns();
        let ts = info.timestamp_ns.expect("timestamped");
        assert_eq!(info.seq, seq);
        assert!(payload <= ts && ts <= now, "{payload} <= {ts} <= {now}");
        assert!(ts >= last, "message {seq}: time went back");
        last = ts;
        worst = worst.max(now - ts);
    }
    child.wait_success(Duration::from_secs(30));
    assert_eq!(rx.recv(), Err(RecvError::Disconnected));
    eprintln!("{COUNT} messages, worst publish-to-receive {worst} ns");
}

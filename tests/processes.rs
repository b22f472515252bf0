//! Broadcast topics and the segment across real processes: fanout, lag
//! accounting, `kill -9` of a publisher, lease takeover, blocking wakeups,
//! racing creators, and a creator that dies before the bus is ready.

mod common;

use std::time::Duration;

use common::{args, child_role, report, spawn_role, spawn_role_with_env, ChildProc, TestBus, Tick};
use shmbus::{Bus, Error, RecvError, RecvTimeoutError, StartAt, WaitStrategy};

/// Entry point of child processes; does nothing when run as a normal test.
#[test]
#[ignore = "entry point of child processes; the tests that spawn them run it"]
fn child_role_entry() {
    let Some((role, args)) = child_role() else {
        return;
    };
    match role.as_str() {
        "subscriber" => subscriber_role(&args),
        "publisher" => publisher_role(&args),
        "create-topics" => create_topics_role(&args),
        "open-bus" => {
            common::open_bus(&args[0]);
            report("READY");
        }
        other => panic!("unknown child role {other}"),
    }
}

/// args: bus topic capacity wait(adaptive|block) slow_every check_interval_ms
/// Receives from the oldest held message until Disconnected, checking every
/// message against its sequence number; prints
/// `RESULT received lagged errors sleeps sleep_timeouts`.
fn subscriber_role(args: &[String]) {
    let bus = common::open_bus(&args[0]);
    let capacity: u32 = args[2].parse().unwrap();
    let wait = match args[3].as_str() {
        "block" => WaitStrategy::Block,
        _ => WaitStrategy::adaptive(),
    };
    let slow_every: u64 = args[4].parse().unwrap();
    let check_ms: u64 = args[5].parse().unwrap();
    let mut rx = bus
        .topic(&args[1])
        .capacity(capacity)
        .start_at(StartAt::Oldest)
        .wait(wait)
        .liveness_check_interval(Duration::from_millis(check_ms))
        .subscriber::<Tick>()
        .unwrap();
    report("READY");
    let (mut expected, mut errors) = (rx.next_seq(), 0u64);
    loop {
        match rx.recv() {
            Ok(tick) => {
                if !tick.is_whole() || tick.seq != expected {
                    errors += 1;
                    if errors < 5 {
                        eprintln!("bad message: expected seq {expected}, got {tick:?}");
                    }
                }
                expected = tick.seq + 1;
                if slow_every > 0 && rx.stats().received % slow_every == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Err(RecvError::Lagged(n)) => expected += n,
            Err(RecvError::Disconnected) => break,
            Err(RecvError::Evicted) => panic!("an overwrite subscriber is never evicted"),
            Err(RecvError::Corrupt { seq }) => {
                errors += 1;
                eprintln!("corrupt message {seq}");
            }
            Err(other) => panic!("undocumented receive error {other:?}"),
        }
    }
    let s = rx.stats();
    report(format!(
        "RESULT {} {} {} {} {}",
        s.received, s.lagged, errors, s.sleeps, s.sleep_timeouts
    ));
}

/// args: bus topic capacity count(0 = forever) pace_every gap_us then(exit|hold)
fn publisher_role(args: &[String]) {
    let bus = common::open_bus(&args[0]);
    let capacity: u32 = args[2].parse().unwrap();
    let count: u64 = args[3].parse().unwrap();
    let pace_every: u64 = args[4].parse().unwrap();
    let gap = Duration::from_micros(args[5].parse().unwrap());
    let mut tx = bus
        .topic(&args[1])
        .capacity(capacity)
        .publisher::<Tick>()
        .unwrap();
    let first = tx.next_seq();
    report(format!("STARTED {first}"));
    let mut sent = 0u64;
    while count == 0 || sent < count {
        tx.send(&Tick::new(tx.next_seq())).unwrap();
        sent += 1;
        if pace_every > 0 && sent % pace_every == 0 {
            std::thread::sleep(gap);
        }
    }
    report(format!("SENT {sent}"));
    if args[6] == "hold" {
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// args: bus barrier_path topics child_index
fn create_topics_role(args: &[String]) {
    let topics: usize = args[2].parse().unwrap();
    let index: usize = args[3].parse().unwrap();
    report("READY");
    while !std::path::Path::new(&args[1]).exists() {
        std::thread::sleep(Duration::from_micros(50));
    }
    let bus = common::open_bus(&args[0]);
    for i in 0..topics {
        let name = format!("race-{}", (i + index * 7) % topics);
        bus.subscriber::<u64>(&name).unwrap();
    }
    report("DONE");
}

struct SubResult {
    received: u64,
    lagged: u64,
    errors: u64,
    sleeps: u64,
    sleep_timeouts: u64,
}

fn result_of(child: &mut ChildProc) -> SubResult {
    let line = child.expect_line("RESULT");
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    SubResult {
        received: v[0],
        lagged: v[1],
        errors: v[2],
        sleeps: v[3],
        sleep_timeouts: v[4],
    }
}

/// One publisher process to `subscribers` subscriber processes: every
/// subscriber checks every message's sequence number and checksum words
/// (`Tick::is_whole`), and accounts for every message published. Lossless:
/// every one received.
fn fan_out(tag: &str, sent: u64, subscribers: usize, lossless: bool) {
    let bus = TestBus::new(tag);
    // Lossless: a ring small enough that the publisher waits for the
    // subscribers. Overwrite: one that seldom laps them (on message queues
    // within the default `ulimit -q`, 512 messages, so that four
    // subscribers' queues fit).
    let cap = if lossless {
        64
    } else if common::mq_tight() {
        // Four queues of 512 frames of 96 bytes, with the kernel's own
        // bytes a message: about half the default 819200.
        512
    } else {
        1u32 << 16
    };
    if lossless {
        let b = bus.open();
        let topic = b.topic("ticks").capacity(cap);
        drop(
            topic
                .lossless(subscribers as u32)
                .subscriber::<Tick>()
                .unwrap(),
        );
    }
    let mut subs: Vec<ChildProc> = (0..subscribers)
        .map(|_| {
            spawn_role(
                "subscriber",
                &args(&[&bus.name, &"ticks", &cap, &"adaptive", &0, &100]),
            )
        })
        .collect();
    for sub in &mut subs {
        sub.expect_line("READY");
    }
    let mut publisher = spawn_role(
        "publisher",
        &args(&[&bus.name, &"ticks", &cap, &sent, &4096, &200, &"exit"]),
    );
    publisher.wait_success(Duration::from_secs(120));
    for sub in &mut subs {
        let r = result_of(sub);
        eprintln!("subscriber: received {} lagged {}", r.received, r.lagged);
        assert_eq!(r.errors, 0, "torn, reordered or corrupt messages");
        assert_eq!(
            r.received + r.lagged,
            sent,
            "every message received or counted lost"
        );
        if lossless {
            assert_eq!(r.received, sent, "a lossless subscriber loses nothing");
        }
        assert!(r.received > 0);
        sub.wait_success(Duration::from_secs(30));
    }
}

#[test]
fn one_publisher_fans_out_a_million_messages_to_four_subscriber_processes() {
    fan_out("fanout", 1_000_000, 4, false);
}

#[test]
fn a_lossless_publisher_fans_out_to_four_subscriber_processes_who_lose_nothing() {
    fan_out("fanout-ll", 100_000, 4, true);
}

#[test]
fn slow_subscriber_counts_exactly_what_it_lost() {
    const SENT: u64 = 200_000;
    let bus = TestBus::new("slow");
    let mut sub = spawn_role(
        "subscriber",
        &args(&[&bus.name, &"ticks", &64, &"adaptive", &50, &100]),
    );
    sub.expect_line("READY");
    let mut publisher = spawn_role(
        "publisher",
        &args(&[&bus.name, &"ticks", &64, &SENT, &0, &0, &"exit"]),
    );
    publisher.wait_success(Duration::from_secs(60));
    let r = result_of(&mut sub);
    assert_eq!(r.errors, 0);
    assert!(
        r.lagged > 0,
        "a 64-slot ring must lap a subscriber that sleeps every 50 messages"
    );
    assert_eq!(r.received + r.lagged, SENT);
    sub.wait_success(Duration::from_secs(30));
}

#[test]
fn killed_publisher_leaves_no_torn_message_and_subscriber_ends_disconnected() {
    let bus = TestBus::new("kill-pub");
    let b = bus.open();
    let mut rx = b
        .topic("ticks")
        .capacity(1024)
        .start_at(StartAt::Oldest)
        .liveness_check_interval(Duration::from_millis(20))
        .subscriber::<Tick>()
        .unwrap();
    let mut expected = 0u64;
    for round in 0..4 {
        let mut publisher = spawn_role(
            "publisher",
            &args(&[&bus.name, &"ticks", &1024, &0, &0, &0, &"exit"]),
        );
        let first: u64 = publisher.expect_line("STARTED").parse().unwrap();
        assert!(
            first >= expected,
            "round {round}: new publisher went back to {first}"
        );
        let mut received_this_round = 0;
        let mut killed = false;
        loop {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(tick) => {
                    assert!(tick.is_whole(), "torn message {tick:?}");
                    assert_eq!(tick.seq, expected, "out of order");
                    expected += 1;
                    received_this_round += 1;
                    if received_this_round == 20_000 {
                        publisher.kill9();
                        killed = true;
                    }
                }
                Err(RecvTimeoutError::Lagged(n)) => expected += n,
                Err(RecvTimeoutError::Disconnected) => break,
                Err(other) => {
                    panic!("round {round}: {other:?} after {received_this_round} messages")
                }
            }
        }
        assert!(killed, "Disconnected while the publisher was alive");
    }
    let s = rx.stats();
    let published = common::topic_infos(&b)[0].published;
    assert_eq!(
        s.received + s.lagged,
        published,
        "every published message accounted for"
    );
    assert_eq!(s.corrupt, 0);
}

#[test]
fn new_publisher_takes_over_the_lease_of_a_killed_one_and_continues_the_sequence() {
    let bus = TestBus::new("takeover");
    let b = bus.open();
    let topic = || b.topic("ticks").capacity(4096);
    let mut rx = topic()
        .start_at(StartAt::Oldest)
        .subscriber::<Tick>()
        .unwrap();
    let mut first = spawn_role(
        "publisher",
        &args(&[&bus.name, &"ticks", &4096, &1000, &0, &0, &"hold"]),
    );
    first.expect_line("SENT");
    match topic().publisher::<Tick>() {
        Err(Error::PublisherBusy { holder, .. }) => {
            assert!(
                holder.contains(&first.pid().to_string()),
                "error names the holder: {holder}"
            )
        }
        Err(other) => panic!("expected PublisherBusy, got {other}"),
        Ok(_) => panic!("a second publisher was allowed while the first lives"),
    };
    first.kill9();
    let mut tx = topic()
        .publisher::<Tick>()
        .expect("take over a dead publisher's lease");
    assert_eq!(tx.next_seq(), 1000, "continues the sequence");
    for seq in 1000..1100 {
        tx.send(&Tick::new(seq)).unwrap();
    }
    for seq in 0..1100 {
        let tick = rx
            .recv()
            .expect("no loss, no disconnect while a publisher lives");
        assert_eq!(tick, Tick::new(seq));
    }
    drop(tx);
    assert_eq!(rx.recv(), Err(RecvError::Disconnected));
}

#[test]
fn blocking_subscribers_wake_for_every_message() {
    const SENT: u64 = 300;
    let bus = TestBus::new("wake");
    // A long liveness interval: a sleep only ends by timeout if a wakeup was lost.
    let mut subs: Vec<ChildProc> = (0..2)
        .map(|_| {
            spawn_role(
                "subscriber",
                &args(&[&bus.name, &"ticks", &1024, &"block", &0, &20_000]),
            )
        })
        .collect();
    for sub in &mut subs {
        sub.expect_line("READY");
    }
    let b = bus.open();
    let mut tx = b.topic("ticks").capacity(1024).publisher::<Tick>().unwrap();
    for seq in 0..SENT {
        tx.send(&Tick::new(seq)).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(tx);
    for sub in &mut subs {
        let r = result_of(sub);
        assert_eq!((r.received, r.lagged, r.errors), (SENT, 0, 0));
        assert!(
            r.sleeps > 0,
            "the subscriber never slept: this test did not test blocking"
        );
        assert_eq!(
            r.sleep_timeouts, 0,
            "a sleep ran to its timeout: a wakeup was lost"
        );
        sub.wait_success(Duration::from_secs(30));
    }
}

#[test]
fn processes_racing_to_create_the_same_topics_get_one_of_each() {
    const TOPICS: usize = 24;
    let bus = TestBus::new("race");
    let barrier =
        std::env::temp_dir().join(format!("shmbus-race-{}-{}", bus.name, std::process::id()));
    let _ = std::fs::remove_file(&barrier);
    let barrier_arg = barrier.to_string_lossy().into_owned();
    let mut children: Vec<ChildProc> = (0..4)
        .map(|i| {
            spawn_role(
                "create-topics",
                &args(&[&bus.name, &barrier_arg, &TOPICS, &i]),
            )
        })
        .collect();
    for child in &mut children {
        child.expect_line("READY");
    }
    std::fs::write(&barrier, b"go").unwrap();
    for child in &mut children {
        child.expect_line("DONE");
        child.wait_success(Duration::from_secs(30));
    }
    let _ = std::fs::remove_file(&barrier);
    let mut names: Vec<String> = common::topic_infos(&bus.open())
        .into_iter()
        .map(|t| t.name)
        .collect();
    names.sort();
    let mut expected: Vec<String> = (0..TOPICS).map(|i| format!("race-{i}")).collect();
    expected.sort();
    assert_eq!(names, expected, "each topic exactly once");
}

/// The creator's unfinished segment files for `bus` in /dev/shm.
fn unfinished_files(bus: &str) -> Vec<String> {
    let prefix = format!("shmbus-init.{bus}.");
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(&prefix))
        .collect()
}

#[test]
fn creator_killed_before_publishing_its_bus_blocks_no_one_and_gc_cleans_up() {
    if common::shm_only("creator_killed_before_publishing_its_bus_blocks_no_one_and_gc_cleans_up") {
        return;
    }
    let bus = TestBus::new("unfinished");
    let mut creator = spawn_role_with_env(
        "open-bus",
        &args(&[&bus.name]),
        &[("SHMBUS_TEST_HOOK", "stall-before-ready")],
    );
    creator.expect_line("SHMBUS-HOOK stall-before-ready");
    let unfinished = unfinished_files(&bus.name);
    assert_eq!(unfinished.len(), 1, "{unfinished:?}");
    assert!(
        matches!(Bus::open_existing(&bus.name), Err(Error::NotFound { .. })),
        "a bus is visible under its name only once it is complete"
    );
    let removed = Bus::gc().unwrap();
    assert!(
        !removed.contains(&unfinished[0]),
        "gc leaves a live creator's file alone: {removed:?}"
    );
    // Someone else creates the bus meanwhile; the stalled creator does not
    // stand in the way.
    let b = bus.open();
    let mut tx = b.publisher::<u64>("fresh").unwrap();
    tx.send(&1).unwrap();
    creator.kill9();
    let removed = Bus::gc().unwrap();
    assert!(
        removed.contains(&unfinished[0]),
        "gc removes a dead creator's file: {removed:?}"
    );
    assert!(unfinished_files(&bus.name).is_empty());
    assert!(
        !removed
            .iter()
            .any(|name| name.contains(&bus.name) && !name.starts_with("shmbus-init.")),
        "gc never removes a bus"
    );
    let mut rx = Bus::open_existing(&bus.name)
        .unwrap()
        .topic("fresh")
        .start_at(StartAt::Oldest)
        .subscriber::<u64>()
        .unwrap();
    assert_eq!(rx.try_recv(), Ok(1));
}

//! Reading byte messages in place (`Subscriber::recv_bytes_ref`) from
//! lossless topics, fixed slots and variable-size alike: across real
//! processes every lent message arrives whole, in order, and does not
//! change while it is lent; a subscriber killed with `kill -9` while it
//! holds a lent message is evicted and the publisher goes on; the lend
//! holds the publisher back until it drops; what it refuses.

mod common;

use std::time::Duration;

use common::{args, child_role, pattern_message, report, seeded_length, spawn_role, TestBus};
use shmbus::{
    Bus, Bytes, Clock, RecvRefError, RecvTimeoutError, StartAt, Subscriber, TryRecvError,
    TrySendError, WaitStrategy,
};

/// Fixed-slot topics: the slot size, the longest message.
const SLOT: u32 = 8192;
/// Variable-size topics: the arena (messages up to half of it).
const ARENA: u64 = 64 << 10;

/// The two shapes of byte topic, named for the test's messages.
#[derive(Clone, Copy, Debug)]
enum Shape {
    Fixed,
    Variable,
}

impl Shape {
    fn of(arg: &str) -> Shape {
        match arg {
            "fixed" => Shape::Fixed,
            _ => Shape::Variable,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Shape::Fixed => "fixed",
            Shape::Variable => "variable",
        }
    }

    fn max_len(self) -> u64 {
        match self {
            Shape::Fixed => SLOT.into(),
            Shape::Variable => ARENA / 2,
        }
    }

    /// A lossless topic of this shape; `capacity` messages.
    fn topic(self, bus: &Bus, capacity: u32) -> shmbus::TopicBuilder<'_> {
        let topic = bus
            .topic("frames")
            .capacity(capacity)
            .lossless(4)
            .wait(WaitStrategy::Block)
            .liveness_check_interval(Duration::from_millis(20));
        match self {
            Shape::Fixed => topic.slot_size(SLOT),
            Shape::Variable => topic.variable(ARENA),
        }
    }
}

/// Enough messages in flight to fill a variable topic's arena with long
/// ones, few enough that a fixed topic of 8 KiB slots stays small.
const CAPACITY: u32 = 64;

/// Entry point of child processes; does nothing when run as a normal test.
#[test]
#[ignore = "entry point of child processes; the tests that spawn them run it"]
fn child_role_entry() {
    let Some((role, args)) = child_role() else {
        return;
    };
    let bus = common::open_bus(&args[0]);
    let shape = Shape::of(&args[1]);
    match role.as_str() {
        // args: bus shape count seed. Publishes `count` messages of seeded
        // random lengths.
        "publish" => {
            let count: u64 = args[2].parse().unwrap();
            let seed: u64 = args[3].parse().unwrap();
            let mut tx = shape.topic(&bus, CAPACITY).publisher_bytes().unwrap();
            report("READY");
            for seq in 0..count {
                let len = seeded_length(seed, seq, shape.max_len());
                assert_eq!(tx.send_bytes(&pattern_message(seq, len)).unwrap(), seq);
            }
            report("DONE");
        }
        // args: bus shape seed. Reads in place until the publisher leaves,
        // checking every message as lent, and again after holding every
        // 61st for a millisecond (the publisher, out of room, is trying to
        // write then); reports received, lagged, bad and copied.
        "read" => {
            let seed: u64 = args[2].parse().unwrap();
            let mut rx = shape
                .topic(&bus, CAPACITY)
                .start_at(StartAt::Oldest)
                .subscriber_bytes()
                .unwrap();
            report("READY");
            let (mut received, mut lagged, mut bad, mut copied) = (0u64, 0u64, 0u64, 0u64);
            let first = rx.next_seq();
            let mut expect = first;
            loop {
                match rx.recv_bytes_ref() {
                    Ok(msg) => {
                        let seq = msg.seq();
                        let want = pattern_message(seq, seeded_length(seed, seq, shape.max_len()));
                        bad += u64::from(seq != expect || *msg != *want);
                        if seq % 61 == 0 {
                            std::thread::sleep(Duration::from_millis(1));
                            bad += u64::from(*msg != *want);
                        }
                        copied += u64::from(!msg.is_in_place());
                        expect = seq + 1;
                        received += 1;
                    }
                    Err(RecvRefError::Recv(shmbus::RecvError::Lagged(n))) => {
                        lagged += n;
                        expect += n;
                    }
                    Err(RecvRefError::Recv(shmbus::RecvError::Disconnected)) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            report(format!("RESULT {received} {lagged} {bad} {copied} {first}"));
        }
        // args: bus shape. Takes the first message in place, says so, and
        // holds it until killed.
        "hold" => {
            let mut rx = shape
                .topic(&bus, CAPACITY)
                .start_at(StartAt::Next)
                .subscriber_bytes()
                .unwrap();
            report("READY");
            let msg = rx.recv_bytes_ref().unwrap();
            assert!(msg.is_in_place());
            report(format!("HOLDING {}", msg.seq()));
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        other => panic!("unknown child role {other}"),
    }
}

/// One publisher process, two subscriber processes reading in place:
/// nothing lost, every message whole and in order, and unchanged after it
/// was held while the publisher waited for room. A third subscriber joins
/// while the publisher is at work, at the oldest message held: it reads
/// every message from where it started, whole (a variable-size one copies
/// the messages of its attach window, and may lose some of them, counted).
fn fanout(shape: Shape, seed: u64) {
    const COUNT: u64 = 20_000;
    let (test, longest) = match shape {
        Shape::Fixed => (
            "fixed_slot_messages_read_in_place_across_processes_arrive_whole_and_unchanged",
            "8 KiB",
        ),
        Shape::Variable => (
            "variable_size_messages_read_in_place_across_processes_arrive_whole_and_unchanged",
            "up to 32 KiB",
        ),
    };
    let why = format!("three subscribers' queues of {CAPACITY} messages of {longest}");
    if common::needs_roomy_mq(test, &why) {
        return;
    }
    let bus = TestBus::new(&format!("inplace-{}", shape.name()));
    let b = bus.open();
    let mut readers: Vec<_> = (0..2)
        .map(|_| {
            let mut reader = spawn_role("read", &args(&[&bus.name, &shape.name(), &seed]));
            reader.expect_line("READY");
            reader
        })
        .collect();
    let mut publisher = spawn_role("publish", &args(&[&bus.name, &shape.name(), &COUNT, &seed]));
    publisher.expect_line("READY");
    let mut late = spawn_role("read", &args(&[&bus.name, &shape.name(), &seed]));
    late.expect_line("READY");
    publisher.expect_line("DONE");
    publisher.wait_success(Duration::from_secs(60));
    let result = |reader: &mut common::ChildProc| {
        let result = reader.expect_line("RESULT");
        reader.wait_success(Duration::from_secs(30));
        let numbers: Vec<u64> = result.split(' ').map(|n| n.parse().unwrap()).collect();
        eprintln!(
            "{shape:?}: received {}, lagged {}, bad {}, copied {}, first {}",
            numbers[0], numbers[1], numbers[2], numbers[3], numbers[4]
        );
        assert_eq!(
            numbers[2], 0,
            "every message whole, in order, unchanged while lent"
        );
        numbers
    };
    for reader in &mut readers {
        let numbers = result(reader);
        assert_eq!(
            (numbers[0], numbers[1]),
            (COUNT, 0),
            "lossless loses nothing"
        );
        // Attached before the first message: nothing to copy.
        assert_eq!(numbers[3], 0, "every message lent in place");
    }
    let numbers = result(&mut late);
    let (received, lagged, first) = (numbers[0], numbers[1], numbers[4]);
    assert_eq!(received + lagged, COUNT - first, "from where it started");
    if let Shape::Fixed = shape {
        assert_eq!(lagged, 0, "fixed slots have no attach window");
    }
    assert_eq!(b.topics().unwrap()[0].as_ref().unwrap().published, COUNT);
}

#[test]
fn fixed_slot_messages_read_in_place_across_processes_arrive_whole_and_unchanged() {
    fanout(Shape::Fixed, 0x1e4d_0001);
}

#[test]
fn variable_size_messages_read_in_place_across_processes_arrive_whole_and_unchanged() {
    fanout(Shape::Variable, 0x1e4d_0002);
}

/// A subscriber killed with `kill -9` while it holds a lent message (and
/// so the publisher) is evicted, and the publisher goes on.
fn killed_while_lent(shape: Shape) {
    let bus = TestBus::new(&format!("inplace-kill-{}", shape.name()));
    let b = bus.open();
    let mut tx = shape.topic(&b, CAPACITY).publisher_bytes().unwrap();
    let mut child = spawn_role("hold", &args(&[&bus.name, &shape.name()]));
    child.expect_line("READY");
    let big = vec![3u8; 8000];
    tx.send_bytes(&big).unwrap();
    assert_eq!(child.expect_line("HOLDING"), "0");
    let mut sent = 1;
    while tx.try_send_bytes(&big).is_ok() {
        sent += 1;
        assert!(sent <= CAPACITY, "{sent} messages past a held one");
    }
    assert_eq!(tx.try_send_bytes(&big), Err(TrySendError::Full));
    child.kill9();
    tx.send_bytes_timeout(&big, Duration::from_secs(10))
        .expect("room once the dead subscriber is evicted");
    assert_eq!(tx.evictions(), 1);
}

#[test]
fn a_fixed_slot_subscriber_killed_holding_a_lent_message_is_evicted() {
    if common::shm_only("a_fixed_slot_subscriber_killed_holding_a_lent_message_is_evicted") {
        return;
    }
    killed_while_lent(Shape::Fixed);
}

#[test]
fn a_variable_size_subscriber_killed_holding_a_lent_message_is_evicted() {
    if common::shm_only("a_variable_size_subscriber_killed_holding_a_lent_message_is_evicted") {
        return;
    }
    killed_while_lent(Shape::Variable);
}

/// The publisher cannot write over a lent message: a full topic stays
/// full while the oldest message is lent, and has room once it drops.
#[test]
fn a_lent_message_holds_the_publisher_until_it_drops() {
    if common::shm_only("a_lent_message_holds_the_publisher_until_it_drops") {
        return;
    }
    for shape in [Shape::Fixed, Shape::Variable] {
        let bus = TestBus::new("inplace-holds");
        let b = bus.open();
        let mut tx = shape.topic(&b, 4).publisher_bytes().unwrap();
        let mut rx = shape
            .topic(&b, 4)
            .start_at(StartAt::Next)
            .subscriber_bytes()
            .unwrap();
        for seq in 0..4 {
            tx.try_send_bytes(&pattern_message(seq, 1000)).unwrap();
        }
        let lent = rx.recv_bytes_ref().unwrap();
        assert!(lent.is_in_place(), "{shape:?}");
        assert_eq!((lent.seq(), &*lent), (0, &*pattern_message(0, 1000)));
        assert_eq!(
            tx.try_send_bytes(&pattern_message(4, 1000)),
            Err(TrySendError::Full),
            "{shape:?}: the publisher must not reuse a lent message's room"
        );
        assert_eq!(&*lent, &*pattern_message(0, 1000));
        drop(lent);
        tx.try_send_bytes(&pattern_message(4, 1000))
            .unwrap_or_else(|e| panic!("{shape:?}: room once the lend drops: {e}"));
        for seq in 1..5 {
            let msg = rx.recv_bytes_ref().unwrap();
            assert_eq!((msg.seq(), &*msg), (seq, &*pattern_message(seq, 1000)));
        }
    }
}

#[test]
fn reading_in_place_refuses_overwrite_topics_and_waits_like_recv_bytes() {
    for shape in [Shape::Fixed, Shape::Variable] {
        let bus = TestBus::new("inplace-refuse");
        let b = bus.open();
        // Eight messages: one is all it sends (and, on message queues,
        // within the default `ulimit -q`).
        let overwrite = || {
            let t = b.topic("loose").capacity(8).start_at(StartAt::Next);
            match shape {
                Shape::Fixed => t.slot_size(SLOT),
                Shape::Variable => t.variable(ARENA),
            }
        };
        let mut loose_tx = overwrite().publisher_bytes().unwrap();
        let mut loose = overwrite().subscriber_bytes().unwrap();
        loose_tx.send_bytes(b"x").unwrap();
        let err = loose.recv_bytes_ref().unwrap_err();
        assert_eq!(err, RecvRefError::NotLossless);
        assert!(err.to_string().contains("lossless"), "{err}");
        assert_eq!(loose.recv_bytes().unwrap(), b"x", "nothing was taken");

        let mut tx = shape.topic(&b, 8).publisher_bytes().unwrap();
        let mut rx: Subscriber<Bytes> = shape
            .topic(&b, 8)
            .start_at(StartAt::Next)
            .subscriber_bytes()
            .unwrap();
        assert_eq!(
            rx.try_recv_bytes_ref().unwrap_err(),
            RecvRefError::Recv(TryRecvError::Empty)
        );
        assert_eq!(
            rx.recv_bytes_ref_timeout(Duration::from_millis(20))
                .unwrap_err(),
            RecvRefError::Recv(RecvTimeoutError::Timeout)
        );
        tx.send_bytes(b"").unwrap();
        tx.send_bytes(b"hello").unwrap();
        assert_eq!(&*rx.try_recv_bytes_ref().unwrap(), b"");
        let hello = rx
            .recv_bytes_ref_deadline(std::time::Instant::now() + Duration::from_secs(5))
            .unwrap();
        assert_eq!(
            (hello.seq(), hello.info().seq, &*hello),
            (1, 1, &b"hello"[..])
        );
        drop(hello);
        drop(tx);
        assert_eq!(
            rx.recv_bytes_ref().unwrap_err(),
            RecvRefError::Recv(shmbus::RecvError::Disconnected)
        );
    }
}

/// A message lent in place carries its publish timestamp.
#[test]
fn a_lent_message_has_its_timestamp() {
    for shape in [Shape::Fixed, Shape::Variable] {
        let bus = TestBus::new("inplace-time");
        let b = bus.open();
        let topic = || shape.topic(&b, 8).timestamps(Clock::Monotonic);
        let mut tx = topic().publisher_bytes().unwrap();
        let mut rx = topic().start_at(StartAt::Next).subscriber_bytes().unwrap();
        let before = Clock::Monotonic.now_ns();
        tx.send_bytes(b"stamped").unwrap();
        let after = Clock::Monotonic.now_ns();
        let msg = rx.recv_bytes_ref().unwrap();
        let stamp = msg.info().timestamp_ns.expect("a timestamp");
        assert!(
            (before..=after).contains(&stamp),
            "{shape:?}: {before} <= {stamp} <= {after}"
        );
    }
}

/// Variable-size topics: a subscriber that attaches below the head cannot
/// lend the messages older than the head it attached at until the message
/// after them is complete (that one had not seen it and may reuse their
/// bytes): it copies them, checked, longer than its first buffer too; its
/// clones likewise. From then on it lends in place.
#[test]
fn a_variable_size_subscriber_attaching_below_the_head_copies_until_it_is_sure() {
    if common::shm_only(
        "a_variable_size_subscriber_attaching_below_the_head_copies_until_it_is_sure",
    ) {
        return;
    }
    let bus = TestBus::new("inplace-attach");
    let b = bus.open();
    let topic = || Shape::Variable.topic(&b, CAPACITY);
    let mut tx = topic().publisher_bytes().unwrap();
    let len = 10_000;
    for seq in 0..3 {
        tx.send_bytes(&pattern_message(seq, len)).unwrap();
    }
    let mut rx = topic()
        .start_at(StartAt::Oldest)
        .subscriber_bytes()
        .unwrap();
    let mut clone = rx.try_clone().unwrap();
    for sub in [&mut rx, &mut clone] {
        let msg = sub.recv_bytes_ref().unwrap();
        assert!(!msg.is_in_place(), "message 0 is below the attach head");
        assert_eq!((msg.seq(), msg.info().seq), (0, 0));
        assert_eq!(&*msg, &*pattern_message(0, len));
    }
    tx.send_bytes(&pattern_message(3, len)).unwrap();
    for sub in [&mut rx, &mut clone] {
        for seq in 1..4 {
            let msg = sub.recv_bytes_ref().unwrap();
            assert!(msg.is_in_place(), "message {seq}, once the head passed 3");
            assert_eq!((msg.seq(), &*msg), (seq, &*pattern_message(seq, len)));
        }
    }
    // Fixed slots have no such window: a subscriber below the head lends
    // at once.
    let fixed = TestBus::new("inplace-attach-fixed");
    let fb = fixed.open();
    let mut ftx = Shape::Fixed.topic(&fb, 8).publisher_bytes().unwrap();
    let len = SLOT as usize;
    ftx.send_bytes(&pattern_message(0, len)).unwrap();
    let mut frx = Shape::Fixed
        .topic(&fb, 8)
        .start_at(StartAt::Oldest)
        .subscriber_bytes()
        .unwrap();
    let msg = frx.recv_bytes_ref().unwrap();
    assert!(msg.is_in_place());
    assert_eq!(&*msg, &*pattern_message(0, len));
}

/// The guards of reads in place may cross threads, as the `&mut` to their
/// subscriber and the `&` to their message may (a compile-time check).
#[test]
fn guards_of_reads_in_place_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<shmbus::BorrowedBytes<'static>>();
    send_sync::<shmbus::Borrowed<'static, u64>>();
    send_sync::<shmbus::PoppedBytes<'static>>();
    send_sync::<shmbus::PoppedRef<'static, u64>>();
}

//! The bus and broadcast API within one process: options, errors, start
//! positions, lag, disconnection, byte messages.

mod common;

use std::time::{Duration, Instant};

use common::{TestBus, Tick};
use shmbus::{
    Bus, Error, RecvError, RecvTimeoutError, SendError, StartAt, TryRecvError, WaitStrategy,
};

#[test]
fn bad_bus_names_are_refused_with_the_rule() {
    for name in [
        "",
        "a/b",
        "with space",
        ".",
        "..",
        &"x".repeat(65),
        "ümlaut",
    ] {
        match Bus::open(name) {
            Err(Error::InvalidName { what: "bus", .. }) => {}
            other => panic!("{name:?}: expected InvalidName, got {other:?}"),
        }
    }
    let err = Bus::open("a/b").unwrap_err().to_string();
    assert!(err.contains("A-Z a-z 0-9 . _ -"), "{err}");
}

#[test]
fn bad_topic_names_are_refused() {
    let bus = TestBus::new("topic-names");
    let b = bus.open();
    assert!(matches!(
        b.publisher::<u64>("no/slash"),
        Err(Error::InvalidName { what: "topic", .. })
    ));
}

#[test]
fn segment_is_private_to_its_user_unless_asked() {
    if common::shm_only("segment_is_private_to_its_user_unless_asked") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let private = TestBus::new("mode");
    let _b = private.open();
    let mode = std::fs::metadata(private.path())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let shared = TestBus::new("mode-shared");
    let _b = Bus::builder(&shared.name).mode(0o660).open().unwrap();
    let mode = std::fs::metadata(shared.path())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660);
}

#[test]
fn removing_a_bus_deletes_its_segment() {
    if common::shm_only("removing_a_bus_deletes_its_segment") {
        return;
    }
    let bus = TestBus::new("remove");
    drop(bus.open());
    assert!(
        std::path::Path::new(&bus.path()).exists(),
        "the bus outlives its creator's handle"
    );
    Bus::remove(&bus.name).unwrap();
    assert!(!std::path::Path::new(&bus.path()).exists());
    assert!(matches!(
        Bus::remove(&bus.name),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn joining_with_another_type_names_both_types() {
    let bus = TestBus::new("mismatch-type");
    let b = bus.open();
    let _tx = b.publisher::<Tick>("t").unwrap();
    let err = b.subscriber::<u64>("t").unwrap_err();
    assert!(matches!(err, Error::TopicMismatch { .. }));
    let text = err.to_string();
    assert!(text.contains("Tick") && text.contains("u64"), "{text}");
}

/// A mismatch error starts with what differs and what to do about it,
/// one clause per field that differs, before the full descriptions; and
/// doing what it says opens the topic.
#[test]
fn a_mismatch_names_the_field_that_differs_and_the_remedy() {
    type Open<'a> = Box<dyn Fn() -> Result<(), Error> + 'a>;
    let bus = TestBus::new("mismatch-field");
    let b = bus.open();
    let _bytes = b
        .topic("bytes")
        .capacity(64)
        .slot_size(128)
        .publisher_bytes()
        .unwrap();
    // Small capacities: on message queues every topic's queues come out
    // of one per-user budget.
    let _lossless = b
        .topic("lossless")
        .capacity(16)
        .lossless(4)
        .publisher::<u64>()
        .unwrap();
    let _queue = b.topic("queue").capacity(16).producer::<u64>().unwrap();
    let _stamped = b
        .topic("stamped")
        .capacity(16)
        .timestamps(shmbus::Clock::Monotonic)
        .publisher::<u64>()
        .unwrap();
    // Small arenas: on message queues a frame must fit msgsize_max.
    let _books = b
        .topic("books")
        .variable(4096)
        .capacity(64)
        .publisher_bytes()
        .unwrap();
    let _jobs = b.topic("jobs").variable(4096).producer_bytes().unwrap();
    let _fixed_jobs = b.topic("fixed-jobs").capacity(16).producer_bytes().unwrap();
    let ok = |r: Result<(), Error>| r;
    // Joining topic `t` as it is, as most remedies say.
    let bus_ref = &b;
    let bytes_sub = |t: &'static str| -> Open {
        Box::new(move || bus_ref.topic(t).subscriber_bytes().map(drop))
    };
    let u64_sub = |t: &'static str| -> Open {
        Box::new(move || bus_ref.topic(t).subscriber::<u64>().map(drop))
    };
    let bytes_consumer =
        |t: &'static str| -> Open { Box::new(move || bus_ref.topic(t).consumer_bytes().map(drop)) };
    let cases: Vec<(Open, &str, Open)> =
        vec![
        (
            Box::new(|| ok(b.topic("bytes").capacity(32).subscriber_bytes().map(drop))),
            "its capacity is 64 messages, not 32: leave out `.capacity(..)`",
            bytes_sub("bytes"),
        ),
        (
            Box::new(|| ok(b.topic("bytes").slot_size(256).subscriber_bytes().map(drop))),
            "its slots are 128 bytes, not 256: leave out `.slot_size(..)`",
            bytes_sub("bytes"),
        ),
        (
            Box::new(|| ok(b.topic("bytes").lossless(2).subscriber_bytes().map(drop))),
            "it is in overwrite mode, not lossless: leave out `.lossless(..)`",
            bytes_sub("bytes"),
        ),
        (
            Box::new(|| ok(b.topic("lossless").lossless(8).subscriber::<u64>().map(drop))),
            "it takes up to 4 lossless subscribers, not 8: ask for `.lossless(4)`",
            Box::new(|| ok(b.topic("lossless").lossless(4).subscriber::<u64>().map(drop))),
        ),
        (
            u64_sub("queue"),
            "it is a work queue, not a broadcast topic",
            Box::new(|| ok(b.topic("queue").consumer::<u64>().map(drop))),
        ),
        (
            Box::new(|| ok(b.topic("queue").max_consumers(3).consumer::<u64>().map(drop))),
            "it takes up to 64 consumers, not 3: ask for `.max_consumers(64)`",
            Box::new(|| ok(b.topic("queue").max_consumers(64).consumer::<u64>().map(drop))),
        ),
        (
            Box::new(|| ok(b.topic("lossless").subscriber::<u32>().map(drop))),
            "its messages are `u64` (size 8, align 8), not `u32` (size 4, align 4)",
            u64_sub("lossless"),
        ),
        (
            Box::new(|| {
                ok(b.topic("stamped")
                    .timestamps(shmbus::Clock::Realtime)
                    .subscriber::<u64>()
                    .map(drop))
            }),
            "its timestamps are read from the Monotonic clock, not Realtime",
            Box::new(|| {
                ok(b.topic("stamped")
                    .timestamps(shmbus::Clock::Monotonic)
                    .subscriber::<u64>()
                    .map(drop))
            }),
        ),
        (
            Box::new(|| {
                ok(b.topic("lossless")
                    .timestamps(shmbus::Clock::Realtime)
                    .subscriber::<u64>()
                    .map(drop))
            }),
            "its messages carry no timestamps: leave out `.timestamps(..)`",
            u64_sub("lossless"),
        ),
        (
            Box::new(|| ok(b.topic("bytes").variable(1 << 16).subscriber_bytes().map(drop))),
            "its messages take fixed 128-byte slots, not a variable-size arena",
            bytes_sub("bytes"),
        ),
        // A variable-size broadcast topic's capacity is its own, beside
        // its arena: both are said.
        (
            Box::new(|| {
                ok(b.topic("books")
                    .variable(8192)
                    .capacity(32)
                    .subscriber_bytes()
                    .map(drop))
            }),
            "its arena is 4096 bytes, not 8192: ask for `.variable(4096)` or leave it out; its \
             capacity is 64 messages, not 32",
            bytes_sub("books"),
        ),
        (
            u64_sub("books"),
            "it is a topic of byte messages (variable-size), not of `u64`: open it with \
             `publisher_bytes` / `subscriber_bytes`",
            bytes_sub("books"),
        ),
        (
            bytes_sub("lossless"),
            "its messages are `u64` (size 8, align 8), not bytes: open it with the typed \
             `publisher::<T>` / `subscriber::<T>`",
            u64_sub("lossless"),
        ),
        // A variable-size work queue's capacity is units of its arena.
        (
            Box::new(|| ok(b.topic("jobs").capacity(32).consumer_bytes().map(drop))),
            "its capacity is 64 units of 64 bytes (its 4096-byte arena), not 32",
            bytes_consumer("jobs"),
        ),
        // A variable-size request of a fixed queue: its capacity was never
        // asked for, and is not said.
        (
            Box::new(|| ok(b.topic("fixed-jobs").variable(1 << 20).consumer_bytes().map(drop))),
            "its messages take fixed 256-byte slots, not a variable-size arena: leave out \
             `.variable(..)` to join it as it is (it is",
            bytes_consumer("fixed-jobs"),
        ),
    ];
    for (open, expected, remedy) in cases {
        let err = open().unwrap_err();
        assert!(matches!(err, Error::TopicMismatch { .. }), "{err}");
        let text = err.to_string();
        let (_, clause) = text
            .split_once("\" exists, but not as asked for: ")
            .unwrap_or_else(|| panic!("no leading words in: {text}"));
        assert!(
            clause.starts_with(expected),
            "wanted {expected:?} first in: {text}"
        );
        assert!(text.contains("was asked for)"), "{text}");
        remedy().unwrap_or_else(|e| panic!("the remedy of {expected:?} failed: {e}"));
    }
}

/// Two message types of the same layout from different modules (as two
/// separately built programs have) share a typed topic under one explicit
/// name; another name, no name, a layout that differs, or a bad name are
/// refused with errors that say why.
#[test]
fn an_explicit_type_name_lets_types_of_the_same_layout_share_a_topic() {
    mod feed {
        #[derive(
            zerocopy::FromBytes,
            zerocopy::IntoBytes,
            zerocopy::KnownLayout,
            zerocopy::Immutable,
            Clone,
            Copy,
            Debug,
            PartialEq,
        )]
        #[repr(C)]
        pub struct Quote {
            pub bid: f64,
            pub ask: f64,
        }
    }
    mod screen {
        #[derive(
            zerocopy::FromBytes,
            zerocopy::IntoBytes,
            zerocopy::KnownLayout,
            zerocopy::Immutable,
            Clone,
            Copy,
            Debug,
            PartialEq,
        )]
        #[repr(C)]
        pub struct Quote {
            pub bid: f64,
            pub ask: f64,
        }
    }
    let bus = TestBus::new("typename");
    let b = bus.open();
    let named = |name| {
        b.topic("quotes")
            .type_name(name)
            .start_at(shmbus::StartAt::Oldest)
    };
    let mut tx = named("md.Quote/v1").publisher::<feed::Quote>().unwrap();
    let mut rx = named("md.Quote/v1").subscriber::<screen::Quote>().unwrap();
    tx.send(&feed::Quote { bid: 1.5, ask: 2.5 }).unwrap();
    assert_eq!(rx.recv().unwrap(), screen::Quote { bid: 1.5, ask: 2.5 });

    for err in [
        named("md.Quote/v2")
            .subscriber::<screen::Quote>()
            .unwrap_err(),
        b.topic("quotes").subscriber::<screen::Quote>().unwrap_err(),
    ] {
        let text = err.to_string();
        assert!(matches!(err, shmbus::Error::TopicMismatch { .. }), "{text}");
        assert!(
            text.contains("md.Quote/v1"),
            "names the topic's type: {text}"
        );
    }
    let err = named("md.Quote/v1").subscriber::<[u64; 3]>().unwrap_err();
    assert!(matches!(err, shmbus::Error::TopicMismatch { .. }), "{err}");
    for bad in ["", "tab\there", &"x".repeat(65)] {
        let err = b
            .topic("other")
            .type_name(bad)
            .subscriber::<u64>()
            .unwrap_err();
        assert!(err.to_string().contains("printable ASCII"), "{err}");
    }
    let err = named("md.Quote/v1").subscriber_bytes().unwrap_err();
    assert!(err.to_string().contains("byte topics have none"), "{err}");
}

#[test]
fn joining_with_another_capacity_fails_but_unspecified_capacity_joins() {
    let bus = TestBus::new("mismatch-cap");
    let b = bus.open();
    let _tx = b.topic("t").capacity(64).publisher::<u64>().unwrap();
    let err = b.topic("t").capacity(128).subscriber::<u64>().unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("capacity 64") && text.contains("128"),
        "{text}"
    );
    b.subscriber::<u64>("t")
        .expect("no capacity asked: take the topic as it is");
}

#[test]
fn invalid_topic_options_are_explained() {
    let bus = TestBus::new("options");
    let b = bus.open();
    let text = b
        .topic("t")
        .capacity(100)
        .publisher::<u64>()
        .unwrap_err()
        .to_string();
    assert!(text.contains("power of two"), "{text}");
    let text = b
        .topic("t")
        .slot_size(16)
        .publisher::<u64>()
        .unwrap_err()
        .to_string();
    assert!(text.contains("slot size"), "{text}");
}

/// A byte topic of 0-byte slots would carry only empty messages for ever
/// (a topic is never deleted): refused, on every transport.
#[test]
fn a_byte_topic_of_empty_slots_is_refused() {
    let bus = TestBus::new("slot0");
    let b = bus.open();
    for made in [
        b.topic("p").slot_size(0).publisher_bytes().err(),
        b.topic("q").slot_size(0).producer_bytes().err(),
    ] {
        let text = made.expect("a topic of 0-byte slots").to_string();
        assert!(text.contains("slot_size(0)"), "{text}");
    }
    assert!(b.topics().unwrap().is_empty(), "nothing was made");
}

#[test]
fn invalid_bus_options_name_the_bus_not_a_topic() {
    let bus = TestBus::new("bus-options");
    for (builder, option) in [
        (Bus::builder(&bus.name).topics(0), "topics(0)"),
        (Bus::builder(&bus.name).processes(0), "processes(0)"),
        (Bus::builder(&bus.name).mode(0o7777), "mode("),
        // Not even its creator could use it.
        (
            Bus::builder(&bus.name).mode(0o400),
            "mode(400) must give the owner read and write",
        ),
        (Bus::builder(&bus.name).size(64), "size(64)"),
        (
            Bus::builder(&bus.name).size(u64::MAX),
            "is over the largest mapping",
        ),
    ] {
        let err = builder.open().unwrap_err();
        assert!(
            matches!(&err, Error::InvalidBusOptions { bus: b, .. } if *b == bus.name),
            "{option}: {err:?}"
        );
        let text = err.to_string();
        assert!(text.contains(option), "{text}");
        assert!(
            !text.contains("topic \""),
            "a bus option is not a topic's: {text}"
        );
    }
    assert!(
        !std::path::Path::new(&bus.path()).exists(),
        "nothing created"
    );
}

#[test]
fn second_publisher_in_the_same_process_is_refused() {
    let bus = TestBus::new("busy");
    let b = bus.open();
    let _tx = b.publisher::<u64>("t").unwrap();
    assert!(matches!(
        b.publisher::<u64>("t"),
        Err(Error::PublisherBusy { .. })
    ));
}

#[test]
fn lapped_subscriber_reports_exact_loss_then_reads_oldest_held() {
    if common::shm_only("lapped_subscriber_reports_exact_loss_then_reads_oldest_held") {
        return;
    }
    let bus = TestBus::new("lag");
    let b = bus.open();
    let mut tx = b.topic("t").capacity(8).publisher::<u64>().unwrap();
    let mut rx = b
        .topic("t")
        .start_at(StartAt::Next)
        .subscriber::<u64>()
        .unwrap();
    for i in 0..20u64 {
        tx.send(&i).unwrap();
    }
    assert_eq!(rx.try_recv(), Err(TryRecvError::Lagged(12)));
    for i in 12..20u64 {
        assert_eq!(rx.try_recv(), Ok(i));
    }
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(rx.stats().received + rx.stats().lagged, 20);
}

#[test]
fn start_positions_newest_oldest_next() {
    let bus = TestBus::new("start");
    let b = bus.open();
    let mut tx = b.topic("t").capacity(4).publisher::<u64>().unwrap();
    for i in 0..6u64 {
        tx.send(&i).unwrap();
    }
    let sub = |start| b.topic("t").start_at(start).subscriber::<u64>().unwrap();
    assert_eq!(sub(StartAt::Newest).try_recv(), Ok(5));
    assert_eq!(sub(StartAt::Oldest).try_recv(), Ok(2));
    let mut next = sub(StartAt::Next);
    assert_eq!(next.try_recv(), Err(TryRecvError::Empty));
    tx.send(&6).unwrap();
    assert_eq!(next.try_recv(), Ok(6));
}

#[test]
fn subscriber_before_any_publisher_waits_rather_than_disconnects() {
    let bus = TestBus::new("early");
    let b = bus.open();
    let mut rx = b.subscriber::<u64>("t").unwrap();
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(20)),
        Err(RecvTimeoutError::Timeout)
    );
}

#[test]
fn dropped_publisher_disconnects_after_everything_is_read_and_a_new_one_reconnects() {
    let bus = TestBus::new("disconnect");
    let b = bus.open();
    let mut rx = b
        .topic("t")
        .wait(WaitStrategy::Block)
        .subscriber::<u64>()
        .unwrap();
    let mut tx = b.publisher::<u64>("t").unwrap();
    tx.send(&1).unwrap();
    tx.send(&2).unwrap();
    drop(tx);
    assert_eq!(rx.recv(), Ok(1));
    assert_eq!(rx.recv(), Ok(2));
    assert_eq!(rx.recv(), Err(RecvError::Disconnected));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    let mut tx = b.publisher::<u64>("t").unwrap();
    assert_eq!(tx.next_seq(), 2);
    tx.send(&3).unwrap();
    assert_eq!(rx.recv(), Ok(3));
}

#[test]
fn blocking_recv_wakes_when_another_thread_publishes() {
    let bus = TestBus::new("block");
    let b = bus.open();
    // A long check interval: the sleep ends by timeout only if the wakeup
    // is lost.
    let mut rx = b
        .topic("t")
        .wait(WaitStrategy::Block)
        .liveness_check_interval(Duration::from_secs(30))
        .subscriber::<u64>()
        .unwrap();
    let b2 = b.clone();
    let tid = common::thread_id();
    let publisher = std::thread::spawn(move || {
        let mut tx = b2.publisher::<u64>("t").unwrap();
        // Publish only once the subscriber is asleep, however long the
        // machine takes to get it there: counted in, and blocked on the
        // futex (between the two it re-checks, and would find a message
        // sent then without sleeping).
        // On pipes: asleep in a read of its FIFO (no shared sleeper count).
        let asleep = common::eventually(Duration::from_secs(30), || {
            if common::on_mq() {
                // On message queues: asleep in a receive of its queue.
                common::blocked_in(tid, libc::SYS_mq_timedreceive)
            } else if common::on_pipes() {
                common::blocked_in(tid, libc::SYS_read)
            } else {
                common::topic_infos(&b2)[0].sleeping >= 1 && common::blocked_in_futex(tid)
            }
        });
        assert!(asleep, "the subscriber never went to sleep");
        tx.send(&7).unwrap();
        tx
    });
    assert_eq!(rx.recv(), Ok(7));
    assert!(rx.stats().sleeps >= 1, "recv slept instead of spinning");
    assert_eq!(rx.stats().sleep_timeouts, 0);
    drop(publisher.join().unwrap());
}

#[test]
fn recv_timeout_returns_timeout_on_time() {
    let bus = TestBus::new("timeout");
    let b = bus.open();
    let _tx = b.publisher::<u64>("t").unwrap();
    let mut rx = b
        .topic("t")
        .wait(WaitStrategy::Block)
        .subscriber::<u64>()
        .unwrap();
    let started = Instant::now();
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(30)),
        Err(RecvTimeoutError::Timeout)
    );
    assert!(started.elapsed() >= Duration::from_millis(30));
}

#[test]
fn byte_messages_of_any_length_up_to_the_slot() {
    let bus = TestBus::new("bytes");
    let b = bus.open();
    let mut tx = b.topic("raw").slot_size(100).publisher_bytes().unwrap();
    let mut rx = b
        .topic("raw")
        .start_at(StartAt::Oldest)
        .subscriber_bytes()
        .unwrap();
    for len in [0usize, 1, 7, 8, 9, 63, 64, 99, 100] {
        let msg: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
        tx.send_bytes(&msg).unwrap();
        assert_eq!(rx.try_recv_bytes().unwrap(), &msg[..]);
    }
    let err = tx.send_bytes(&[0; 101]).unwrap_err();
    assert_eq!(err, SendError::TooLarge { len: 101, max: 100 });
    assert!(err.to_string().contains("at most 100 bytes"), "{err}");
}

#[test]
fn byte_and_typed_topics_do_not_mix() {
    let bus = TestBus::new("mix");
    let b = bus.open();
    let _tx = b.topic("t").publisher_bytes().unwrap();
    assert!(matches!(
        b.subscriber::<u64>("t"),
        Err(Error::TopicMismatch { .. })
    ));
}

#[test]
fn full_directory_and_full_arena_are_clear_errors() {
    let bus = TestBus::new("full");
    let b = Bus::builder(&bus.name)
        .topics(2)
        .size(1 << 20)
        .open()
        .unwrap();
    b.publisher::<u64>("a").unwrap();
    b.publisher::<u64>("b").unwrap();
    let text = b.publisher::<u64>("c").unwrap_err().to_string();
    assert!(
        text.contains("no free topic entry") && text.contains("topics("),
        "{text}"
    );

    let small = TestBus::new("arena");
    let b = Bus::builder(&small.name).size(128 << 10).open().unwrap();
    let err = b
        .topic("big")
        .capacity(1 << 16)
        .publisher::<u64>()
        .unwrap_err();
    assert!(matches!(err, Error::ArenaFull { .. }), "{err}");
    assert!(err.to_string().contains("size("), "{err}");
    b.topic("small")
        .capacity(16)
        .publisher::<u64>()
        .expect("a failed creation frees its entry");
}

#[test]
fn topics_lists_what_the_bus_holds() {
    let bus = TestBus::new("list");
    let b = bus.open();
    let mut tx = b.topic("quotes").capacity(32).publisher::<Tick>().unwrap();
    tx.send(&Tick::new(0)).unwrap();
    let topics = common::topic_infos(&b);
    assert_eq!(topics.len(), 1);
    let t = &topics[0];
    assert_eq!(
        (t.name.as_str(), t.capacity, t.slot_size, t.published),
        ("quotes", 32, 64, 1)
    );
    assert_eq!(t.publisher_pid, Some(std::process::id()));
}

#[test]
fn every_wait_strategy_receives_from_another_thread() {
    for (i, wait) in [
        WaitStrategy::Spin,
        WaitStrategy::Yield,
        WaitStrategy::Block,
        WaitStrategy::adaptive(),
    ]
    .into_iter()
    .enumerate()
    {
        let bus = TestBus::new("strategies");
        let b = bus.open();
        let topic = format!("t{i}");
        let mut rx = b.topic(&topic).wait(wait).subscriber::<u64>().unwrap();
        let b2 = b.clone();
        let publisher = std::thread::spawn(move || {
            let mut tx = b2.publisher::<u64>(&topic).unwrap();
            for n in 0..100u64 {
                tx.send(&n).unwrap();
                if n % 10 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        let mut got = Vec::new();
        loop {
            match rx.recv() {
                Ok(n) => got.push(n),
                Err(RecvError::Disconnected) => break,
                Err(e) => panic!("{wait:?}: {e}"),
            }
        }
        publisher.join().unwrap();
        assert_eq!(got, (0..100).collect::<Vec<_>>(), "{wait:?}");
    }
}

#[test]
fn topics_of_one_bus_never_share_directory_state() {
    // The first report of the directory bug: on a default bus, the second
    // topic's creation overwrote the first one's state word, and joining
    // the first topic then hung.
    let bus = TestBus::new("md-fills");
    let b = bus.open();
    let mut md = b.publisher::<u64>("md").unwrap();
    md.send(&1).unwrap();
    let _fills = b.publisher::<u64>("fills").unwrap();
    let mut rx = b
        .topic("md")
        .start_at(shmbus::StartAt::Oldest)
        .subscriber::<u64>()
        .unwrap();
    assert_eq!(rx.try_recv(), Ok(1));
    let names: Vec<String> = common::topic_infos(&b)
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn a_removed_bus_keeps_working_for_those_who_had_it_open_even_once_its_name_is_reused() {
    if common::shm_only(
        "a_removed_bus_keeps_working_for_those_who_had_it_open_even_once_its_name_is_reused",
    ) {
        return;
    }
    let bus = TestBus::new("removed");
    let (a, b) = (bus.open(), bus.open());
    Bus::remove(&bus.name).unwrap();
    // Endpoints made after the removal, on the old mapping, still work.
    let mut tx = a.publisher::<u64>("t").unwrap();
    let mut rx = b
        .topic("t")
        .start_at(StartAt::Oldest)
        .subscriber::<u64>()
        .unwrap();
    tx.send(&1).unwrap();
    assert_eq!(rx.try_recv(), Ok(1));
    // A new bus of the same name is another file: its processes and ours
    // never mistake each other's liveness locks.
    let fresh = bus.open();
    let mut other = fresh.publisher::<u64>("t").unwrap();
    other.send(&7).unwrap();
    let b_tx = b.topic("t").publisher::<u64>();
    assert!(
        matches!(b_tx, Err(Error::PublisherBusy { .. })),
        "the old bus's live publisher was taken for dead: {b_tx:?}"
    );
    tx.send(&2).expect("still holds its lease");
    assert_eq!(rx.try_recv(), Ok(2));
}

/// The info of a received message is its sequence number, also after a
/// lag skipped some, and for byte topics.
#[test]
fn received_messages_say_which_they_were_also_after_a_lag() {
    if common::shm_only("received_messages_say_which_they_were_also_after_a_lag") {
        return;
    }
    let bus = TestBus::new("recv-info");
    let b = bus.open();
    let mut rx = b
        .topic("t")
        .capacity(4)
        .slot_size(8)
        .start_at(shmbus::StartAt::Next)
        .subscriber_bytes()
        .unwrap();
    let mut tx = b.topic("t").publisher_bytes().unwrap();
    tx.send_bytes(b"zero").unwrap();
    let (info, msg) = rx.recv_bytes_with_info().unwrap();
    assert_eq!((info.seq, msg), (0, &b"zero"[..]));
    for i in 1..=9u64 {
        tx.send_bytes(&i.to_le_bytes()).unwrap();
    }
    assert_eq!(
        rx.recv_bytes_with_info().map(|_| ()),
        Err(shmbus::RecvError::Lagged(5))
    );
    let (info, msg) = rx.recv_bytes_with_info().unwrap();
    assert_eq!((info.seq, msg), (6, &6u64.to_le_bytes()[..]));
}

/// A subscriber polling while a publisher arrives never reports it as
/// gone: `Disconnected` means a publisher left (a read-order race once
/// reported a publisher that was being created, in about one poll in six
/// of this loop).
#[test]
fn a_publisher_arriving_is_never_reported_as_disconnected() {
    const TRIALS: usize = 300;
    let bus = TestBus::new("arrive");
    let b = Bus::builder(&bus.name)
        .topics(TRIALS as u32)
        .open()
        .unwrap();
    for trial in 0..TRIALS {
        // Each trial needs a topic no publisher has held yet.
        let topic = format!("t{trial}");
        let mut rx = b.topic(&topic).capacity(2).subscriber::<u64>().unwrap();
        std::thread::scope(|s| {
            let publisher = s.spawn(|| {
                let mut tx = b.publisher::<u64>(&topic).unwrap();
                tx.send(&1).unwrap();
                tx // kept until the subscriber has read
            });
            loop {
                match rx.try_recv() {
                    Ok(v) => break assert_eq!(v, 1),
                    Err(TryRecvError::Empty) => std::hint::spin_loop(),
                    Err(e) => panic!("trial {trial}: {e} while the publisher arrives"),
                }
            }
            drop(publisher.join().unwrap());
        });
    }
}

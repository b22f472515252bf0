//! Work queues and lossless broadcast within one process: API, errors,
//! blocking, exactly-once across threads.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::TestBus;
use shmbus::{
    Error, PopError, PopTimeoutError, RecvError, RecvRefError, StartAt, TryPopError, TryPushError,
    TrySendError, WaitStrategy,
};

#[test]
fn push_pop_is_fifo_and_full_hands_the_value_back() {
    let bus = TestBus::new("q-basic");
    let b = bus.open();
    let mut tx = b.topic("jobs").capacity(4).producer::<u64>().unwrap();
    let mut rx = b.topic("jobs").consumer::<u64>().unwrap();
    assert_eq!(rx.try_pop(), Err(TryPopError::Empty));
    // Exactly the capacity in shared memory; on pipes at least it (a FIFO
    // holds whole pages).
    let mut pushed = 0u64;
    let full = loop {
        match tx.try_push(pushed) {
            Ok(()) => pushed += 1,
            Err(TryPushError::Full(v)) => break v,
            Err(e) => panic!("{e:?}"),
        }
        assert!(pushed <= 1 << 20, "never full");
    };
    assert_eq!(full, pushed, "Full hands the value back");
    if common::on_pipes() {
        assert!(pushed >= 4, "{pushed} pushed before Full");
    } else {
        assert_eq!(pushed, 4);
    }
    assert!(matches!(
        tx.push_timeout(98, Duration::from_millis(10)),
        Err(shmbus::PushTimeoutError::Timeout(98))
    ));
    for i in 0..pushed {
        assert_eq!(rx.pop(), Ok(i));
    }
    assert_eq!(
        rx.pop_timeout(Duration::from_millis(10)),
        Err(PopTimeoutError::Timeout)
    );
    if !common::on_pipes() {
        // Shared counters: shared memory only.
        let stats = rx.queue_stats();
        assert_eq!(
            (
                stats.pushed,
                stats.popped,
                stats.lost_in_push,
                stats.lost_in_consume
            ),
            (4, 4, 0, 0)
        );
    }
}

#[test]
fn consumers_see_disconnected_once_producers_are_gone_and_queue_is_drained() {
    let bus = TestBus::new("q-disc");
    let b = bus.open();
    let mut rx = b
        .topic("jobs")
        .wait(WaitStrategy::Block)
        .consumer::<u64>()
        .unwrap();
    let mut tx = b.topic("jobs").producer::<u64>().unwrap();
    tx.push(1).unwrap();
    tx.push(2).unwrap();
    drop(tx);
    assert_eq!(rx.pop(), Ok(1));
    assert_eq!(rx.pop(), Ok(2));
    assert_eq!(rx.pop(), Err(PopError::Disconnected));
}

#[test]
fn byte_queue_takes_any_length_up_to_the_slot() {
    let bus = TestBus::new("q-bytes");
    let b = bus.open();
    let mut tx = b.topic("raw").slot_size(40).producer_bytes().unwrap();
    let mut rx = b.topic("raw").consumer_bytes().unwrap();
    for len in [0usize, 3, 8, 39, 40] {
        let msg: Vec<u8> = (0..len as u8).collect();
        tx.push_bytes(&msg).unwrap();
        assert_eq!(rx.pop_bytes().unwrap(), &msg[..]);
    }
    assert!(matches!(
        tx.try_push_bytes(&[0; 41]),
        Err(TryPushError::TooLarge { len: 41, max: 40 })
    ));
}

#[test]
fn worker_tables_have_a_limit_with_a_clear_error() {
    let bus = TestBus::new("q-limit");
    let b = bus.open();
    let _p1 = b.topic("jobs").max_producers(1).producer::<u64>().unwrap();
    let err = b.topic("jobs").producer::<u64>().unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooManyWorkers {
                role: "producer",
                max: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("max_producers("), "{err}");
}

#[test]
fn queue_and_broadcast_of_one_name_do_not_mix() {
    let bus = TestBus::new("q-kind");
    let b = bus.open();
    let _tx = b.topic("t").producer::<u64>().unwrap();
    let err = b.subscriber::<u64>("t").unwrap_err();
    assert!(err.to_string().contains("work-queue topic"), "{err}");
    let err = b.topic("t").lossless(2).consumer::<u64>().unwrap_err();
    assert!(matches!(err, Error::InvalidOptions { .. }), "{err}");
}

#[test]
fn threads_share_a_queue_and_each_message_is_taken_once() {
    const PER_PRODUCER: u64 = 50_000;
    let bus = TestBus::new("q-threads");
    let b = bus.open();
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let mut rx = b
                .topic("jobs")
                .capacity(64)
                .wait(WaitStrategy::Block)
                .consumer::<[u64; 2]>()
                .unwrap();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut last = [None, None];
                while let Ok([producer, seq]) = rx.pop() {
                    let p = producer as usize;
                    assert!(last[p].is_none_or(|l| l < seq), "FIFO per producer");
                    last[p] = Some(seq);
                    got.push((producer, seq));
                }
                got
            })
        })
        .collect();
    let producers: Vec<_> = (0..2u64)
        .map(|p| {
            let mut tx = b.topic("jobs").producer::<[u64; 2]>().unwrap();
            std::thread::spawn(move || {
                for seq in 0..PER_PRODUCER {
                    tx.push([p, seq]).unwrap();
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    let mut all = HashSet::new();
    for c in consumers {
        for item in c.join().unwrap() {
            assert!(all.insert(item), "delivered twice: {item:?}");
        }
    }
    assert_eq!(all.len() as u64, 2 * PER_PRODUCER);
}

#[test]
fn lossless_publisher_waits_for_the_slowest_subscriber() {
    let bus = TestBus::new("lossless");
    let b = bus.open();
    let mut fast = b
        .topic("t")
        .capacity(4)
        .lossless(2)
        .start_at(StartAt::Next)
        .subscriber::<u64>()
        .unwrap();
    let mut slow = b
        .topic("t")
        .start_at(StartAt::Next)
        .subscriber::<u64>()
        .unwrap();
    assert!(
        slow.is_lossless(),
        "joining a lossless topic makes a lossless subscriber"
    );
    let mut tx = b.topic("t").publisher::<u64>().unwrap();
    // The capacity in shared memory; on pipes at least it (a FIFO holds
    // whole pages, and one more message is kept for a full subscriber).
    let mut sent = 0u64;
    while tx.try_send(&sent).is_ok() {
        sent += 1;
        assert!(sent <= 1 << 20, "never full");
    }
    if common::on_pipes() {
        assert!(sent >= 4, "{sent} sent before Full");
    } else {
        assert_eq!(sent, 4);
    }
    assert_eq!(tx.try_send(&sent), Err(TrySendError::Full));
    for i in 0..sent {
        assert_eq!(fast.recv_timeout(Duration::from_secs(5)), Ok(i));
    }
    assert_eq!(
        tx.try_send(&sent),
        Err(TrySendError::Full),
        "the slow subscriber still holds the ring"
    );
    let third = b.topic("t").subscriber::<u64>().unwrap_err();
    assert!(
        matches!(third, Error::TooManySubscribers { max: 2, .. }),
        "{third}"
    );
    // The slow one reads everything: room again.
    for i in 0..sent {
        assert_eq!(slow.recv_timeout(Duration::from_secs(5)), Ok(i));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while tx.try_send(&sent) == Err(TrySendError::Full) {
        assert!(std::time::Instant::now() < deadline, "room never came back");
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(fast);
    assert_eq!(slow.recv_timeout(Duration::from_secs(5)), Ok(sent));
}

#[test]
fn lossless_subscriber_reads_in_place_and_overwrite_topics_refuse() {
    if common::shm_only("lossless_subscriber_reads_in_place_and_overwrite_topics_refuse") {
        return;
    }
    let bus = TestBus::new("recv-ref");
    let b = bus.open();
    let mut rx = b
        .topic("t")
        .capacity(2)
        .lossless(1)
        .subscriber::<[u64; 4]>()
        .unwrap();
    let mut tx = b.topic("t").publisher::<[u64; 4]>().unwrap();
    tx.send(&[1; 4]).unwrap();
    tx.send(&[2; 4]).unwrap();
    {
        let first = rx.recv_ref().unwrap();
        assert_eq!(*first, [1; 4]);
        assert_eq!(
            tx.try_send(&[3; 4]),
            Err(TrySendError::Full),
            "a lent message is not overwritten"
        );
    }
    tx.try_send(&[3; 4])
        .expect("dropping the borrow frees the slot");
    assert_eq!(*rx.recv_ref().unwrap(), [2; 4]);
    let mut plain = b.topic("o").subscriber::<u64>().unwrap();
    assert!(matches!(plain.recv_ref(), Err(RecvRefError::NotLossless)));
    drop(tx);
    assert_eq!(rx.recv(), Ok([3; 4]));
    assert_eq!(rx.recv(), Err(RecvError::Disconnected));
}

#[test]
fn blocking_lossless_send_resumes_when_the_subscriber_reads() {
    let bus = TestBus::new("lossless-block");
    let b = bus.open();
    let mut rx = b
        .topic("t")
        .capacity(2)
        .lossless(1)
        .subscriber::<u64>()
        .unwrap();
    let b2 = b.clone();
    let publisher = std::thread::spawn(move || {
        let mut tx = b2
            .topic("t")
            .wait(WaitStrategy::Block)
            .publisher::<u64>()
            .unwrap();
        for i in 0..100u64 {
            tx.send(&i).unwrap();
        }
    });
    for i in 0..100u64 {
        assert_eq!(rx.recv(), Ok(i));
        if i % 10 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    publisher.join().unwrap();
    assert_eq!(rx.stats().lagged, 0);
}

#[test]
fn a_work_queue_needs_two_slots() {
    let bus = TestBus::new("q-cap1");
    let b = bus.open();
    let err = b.topic("jobs").capacity(1).producer::<u64>().unwrap_err();
    assert!(err.to_string().contains("at least 2"), "{err}");
}

/// A consumer that finds only tombstones (abandoned loans) and then an
/// empty queue has freed their slots: a producer asleep on the full queue
/// is woken then, not left until its timed check (a minute here).
#[test]
fn popping_past_tombstones_wakes_a_producer_waiting_for_room() {
    let test = "popping_past_tombstones_wakes_a_producer_waiting_for_room";
    if common::shm_only(test) {
        return; // a loan on pipes writes nothing until it commits
    }
    let bus = TestBus::new("q-tomb-wake");
    let b = bus.open();
    let topic = || {
        b.topic("jobs")
            .capacity(2)
            .wait(WaitStrategy::Block)
            .liveness_check_interval(Duration::from_secs(60))
    };
    let mut tx = topic().producer::<u64>().unwrap();
    let mut rx = topic().consumer::<u64>().unwrap();
    drop(tx.loan().unwrap());
    drop(tx.loan().unwrap());
    assert_eq!(
        tx.try_push(1),
        Err(TryPushError::Full(1)),
        "two tombstones fill it"
    );
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(move || {
            tid_tx.send(common::thread_id()).unwrap();
            tx.push(7).unwrap();
            done_tx.send(()).unwrap();
        });
        let tid = tid_rx.recv().unwrap();
        let slept = common::eventually(Duration::from_secs(10), || common::blocked_in_futex(tid));
        // Past the two tombstones: empty, or the message the producer
        // pushed as soon as their slots were freed. (Popped before any
        // assertion: the producer must get its room, or the scope would
        // wait for it for ever.)
        let first = rx.try_pop();
        assert!(slept, "the producer never went to sleep on the full queue");
        assert!(
            matches!(first, Ok(7) | Err(TryPopError::Empty)),
            "{first:?}"
        );
        assert!(
            done_rx.recv_timeout(Duration::from_secs(20)).is_ok(),
            "the producer was not woken when the tombstones' slots were freed"
        );
        if first.is_err() {
            assert_eq!(rx.pop(), Ok(7));
        }
    });
}

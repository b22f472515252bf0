//! The API as a crossbeam-channel or tokio user reaches for it, across two
//! real processes: iterate, clone, time out, disconnect, lag, skip to the
//! newest, hand values back.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{args, child_role, report, spawn_role, TestBus, Tick};
use shmbus::{
    Bus, LagPolicy, PushError, PushTimeoutError, RecvError, RecvTimeoutError, StartAt,
    TryRecvError, WaitStrategy,
};

const SHORT: Duration = Duration::from_millis(20);

/// Entry point of child processes; does nothing when run as a normal test.
#[test]
#[ignore = "entry point of child processes; the tests that spawn them run it"]
fn child_role_entry() {
    let Some((role, args)) = child_role() else {
        return;
    };
    let bus = Bus::open(&args[0]).unwrap();
    let steps = PathBuf::from(&args[1]);
    match role.as_str() {
        // Publishes in steps, each when the parent creates `go<step>`:
        // 20 messages, 5, 3; then drops the publisher and exits.
        "stepped-publisher" => {
            let mut tx = bus.topic("px").publisher::<Tick>().unwrap();
            report("READY");
            for (step, count) in [(1, 20), (2, 5), (3, 3)] {
                wait_for(&steps.join(format!("go{step}")));
                for _ in 0..count {
                    let seq = tx.next_seq();
                    assert_eq!(tx.send(&Tick::new(seq)), Ok(seq), "send returns the seq");
                }
                report(format!("SENT{step}"));
            }
            wait_for(&steps.join("go4"));
        }
        // Consumes the queue with two consumers (one a clone, in a thread)
        // iterating until every producer is gone; reports count and sum.
        "iterating-workers" => {
            let mut worker = bus
                .topic("jobs")
                .wait(WaitStrategy::Block)
                .consumer::<u64>()
                .unwrap();
            let mut twin = worker.try_clone().unwrap();
            report("READY");
            let other = std::thread::spawn(move || {
                let jobs: Vec<u64> = twin.iter().map(Result::unwrap).collect();
                jobs
            });
            let mut jobs: Vec<u64> = Vec::new();
            for job in &mut worker {
                jobs.push(job.unwrap());
            }
            jobs.extend(other.join().unwrap());
            report(format!("GOT {} {}", jobs.len(), jobs.iter().sum::<u64>()));
        }
        // A lossless subscriber and its clone, read to the end in two
        // threads; each must see every message from 0 on, whole, in order.
        "lossless-twins" => {
            let count: u64 = args[2].parse().unwrap();
            let mut rx = bus
                .topic("ll")
                .capacity(4)
                .lossless(4)
                .start_at(StartAt::Oldest)
                .wait(WaitStrategy::Block)
                .subscriber::<Tick>()
                .unwrap();
            let twin = rx.try_clone().unwrap();
            report("READY");
            let read_all = |rx: &mut shmbus::Subscriber<Tick>| {
                let mut expected = 0;
                for tick in rx {
                    let tick = tick.unwrap();
                    assert!(tick.is_whole(), "torn {tick:?}");
                    assert_eq!(tick.seq, expected, "out of order");
                    expected += 1;
                }
                expected
            };
            let other = std::thread::spawn(move || {
                let mut twin = twin;
                read_all(&mut twin)
            });
            let mine = read_all(&mut rx);
            let theirs = other.join().unwrap();
            assert_eq!((mine, theirs), (count, count));
            report(format!("OK {mine} {theirs}"));
        }
        other => panic!("unknown role {other}"),
    }
}

fn wait_for(path: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(std::time::Instant::now() < deadline, "no {path:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A directory of step files for one test, removed on drop.
struct Steps(PathBuf);

impl Steps {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("shmbus-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Steps(dir)
    }

    fn go(&self, step: u32) {
        std::fs::write(self.0.join(format!("go{step}")), b"").unwrap();
    }

    fn arg(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for Steps {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Seqs of `Ok` items, and the errors, of a subscriber's `try_iter`.
fn drain(rx: &mut shmbus::Subscriber<Tick>) -> (Vec<u64>, Vec<RecvError>) {
    let (mut seqs, mut errors) = (Vec::new(), Vec::new());
    for item in rx.try_iter() {
        match item {
            Ok(tick) => {
                assert!(tick.is_whole(), "torn {tick:?}");
                seqs.push(tick.seq);
            }
            Err(err) => errors.push(err),
        }
    }
    (seqs, errors)
}

/// tokio's broadcast, across processes: time out while nothing comes; lag
/// (told exactly, and going on from the oldest or the newest as the
/// subscriber's policy says); skip to the newest; clone at the same
/// position and resubscribe from the next message; iteration that ends
/// when the publisher goes.
#[test]
fn tokio_style_broadcast_across_processes() {
    let bus_name = TestBus::new("parity-bc");
    let bus = bus_name.open();
    let steps = Steps::new("parity-bc");
    let topic = || bus.topic("px").capacity(8).start_at(StartAt::Next);
    let mut rx = topic().subscriber::<Tick>().unwrap();
    let mut newest = topic()
        .lag_policy(LagPolicy::Newest)
        .subscriber::<Tick>()
        .unwrap();
    let mut publisher = spawn_role("stepped-publisher", &args(&[&bus_name.name, &steps.arg()]));
    publisher.expect_line("READY");

    // Nothing published yet: a bounded wait says Timeout.
    assert_eq!(rx.recv_timeout(SHORT), Err(RecvTimeoutError::Timeout));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));

    // 20 into a ring of 8: 12 lost, then the 8 held.
    steps.go(1);
    publisher.expect_line("SENT1");
    let (seqs, errors) = drain(&mut rx);
    assert_eq!(errors, [RecvError::Lagged(12)]);
    assert_eq!(seqs, (12..20).collect::<Vec<_>>());
    // The same lap with LagPolicy::Newest: 19 passed over, then the newest.
    let (seqs, errors) = drain(&mut newest);
    assert_eq!(errors, [RecvError::Lagged(19)]);
    assert_eq!(seqs, [19]);

    // Five more; skip the backlog to the newest.
    steps.go(2);
    publisher.expect_line("SENT2");
    assert_eq!(rx.skip_to_newest(), 4);
    assert_eq!(rx.recv().unwrap().seq, 24);
    let stats = rx.stats();
    assert_eq!(
        (stats.received, stats.lagged, stats.skipped),
        (9, 12, 4),
        "received + lagged + skipped = 25 published"
    );

    // Three more; a clone at rx's position gets them, a resubscription
    // made now only what comes later (nothing).
    steps.go(3);
    publisher.expect_line("SENT3");
    let mut twin = rx.try_clone().unwrap();
    let mut late = rx.resubscribe().unwrap();
    assert_eq!(drain(&mut rx).0, [25, 26, 27]);
    assert_eq!(drain(&mut twin).0, [25, 26, 27]);
    assert_eq!(drain(&mut late), (vec![], vec![]));

    // The publisher goes: every iteration ends, with nothing left to yield.
    steps.go(4);
    publisher.wait_success(Duration::from_secs(30));
    assert_eq!((&mut rx).into_iter().count(), 0);
    assert_eq!(twin.iter().count(), 0);
    assert_eq!(late.recv(), Err(RecvError::Disconnected));
}

/// crossbeam's channels, across processes: a push that times out hands
/// the value back; producers and consumers clone; consumers iterate until
/// every producer is gone; a push into a queue no consumer can ever reach
/// is `Disconnected`, with the value handed back.
#[test]
fn crossbeam_style_work_queue_across_processes() {
    let bus_name = TestBus::new("parity-q");
    let bus = bus_name.open();
    let steps = Steps::new("parity-q");
    let mut jobs = bus.topic("jobs").capacity(4).producer::<u64>().unwrap();
    assert_eq!(jobs.receiver_count(), 0);
    for job in 1..=4 {
        jobs.push(job).unwrap();
    }
    match jobs.push_timeout(5, SHORT) {
        Err(PushTimeoutError::Timeout(job)) => assert_eq!(job, 5, "handed back"),
        other => panic!("a full queue times out: {other:?}"),
    }
    assert!(!jobs.is_abandoned(), "a consumer may still attach");

    let mut workers = spawn_role("iterating-workers", &args(&[&bus_name.name, &steps.arg()]));
    workers.expect_line("READY");
    assert_eq!(jobs.receiver_count(), 2, "a consumer and its clone");
    let mut more = jobs.try_clone().unwrap();
    let other = std::thread::spawn(move || {
        for job in 105..=200 {
            more.push(job).unwrap();
        }
    });
    for job in 5..=104 {
        jobs.push(job).unwrap();
    }
    other.join().unwrap();
    drop(jobs);
    let got = workers.expect_line("GOT");
    assert_eq!(got, format!("200 {}", (1..=200u64).sum::<u64>()));
    workers.wait_success(Duration::from_secs(30));

    // No consumer now, and with the bus removed none can ever attach: a
    // push into the full queue is Disconnected and hands the value back.
    let mut jobs = bus.topic("jobs").producer::<u64>().unwrap();
    for job in 0..4 {
        jobs.push(job).unwrap();
    }
    assert!(!jobs.is_abandoned());
    Bus::remove(&bus_name.name).unwrap();
    assert!(jobs.is_abandoned());
    match jobs.push(9) {
        Err(PushError::Disconnected(job)) => assert_eq!(job, 9),
        other => panic!("push into an abandoned full queue: {other:?}"),
    }
}

/// A lossless subscriber cloned in another process: the publisher waits
/// for both, and each gets every message, whole and in order, while the
/// publisher laps its ring of 4 hundreds of times.
#[test]
fn lossless_clone_in_another_process_gets_everything() {
    const COUNT: u64 = 2000;
    let bus_name = TestBus::new("parity-ll");
    let bus = bus_name.open();
    let steps = Steps::new("parity-ll");
    let mut tx = bus
        .topic("ll")
        .capacity(4)
        .lossless(4)
        .wait(WaitStrategy::Block)
        .publisher::<Tick>()
        .unwrap();
    let mut twins = spawn_role(
        "lossless-twins",
        &args(&[&bus_name.name, &steps.arg(), &COUNT]),
    );
    twins.expect_line("READY");
    assert_eq!(tx.receiver_count(), Some(2));
    for seq in 0..COUNT {
        assert_eq!(tx.send(&Tick::new(seq)), Ok(seq));
    }
    drop(tx);
    assert_eq!(twins.expect_line("OK"), format!("{COUNT} {COUNT}"));
    twins.wait_success(Duration::from_secs(30));
}

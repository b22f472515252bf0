//! Work queues and lossless broadcast across real processes, and crash
//! trials: a producer, a consumer or a lossless subscriber killed with
//! SIGKILL at the exact point between claiming and finishing (held there by
//! a test hook), many times over.
//!
//! Trials per case: 200, or `SHMBUS_KILL_TRIALS`.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{args, child_role, report, spawn_role, spawn_role_with_env, ChildProc, TestBus, Tick};
use shmbus::{PopError, RecvError, StartAt, TryPopError, WaitStrategy};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A work item: which producer, its sequence number there, and a check word.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
struct Job {
    producer: u64,
    seq: u64,
    check: u64,
}

impl Job {
    fn new(producer: u64, seq: u64) -> Self {
        Job {
            producer,
            seq,
            check: (producer << 48 ^ seq).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        }
    }

    fn is_whole(&self) -> bool {
        *self == Job::new(self.producer, self.seq)
    }
}

/// A marker in crash trials: who pushed it (0 = the test, 1 = the child
/// that gets killed) and the trial number.
const FROM_TEST: u64 = 0;
const FROM_CHILD: u64 = 1;

/// Entry point of child processes; does nothing when run as a normal test.
#[test]
#[ignore = "entry point of child processes; the tests that spawn them run it"]
fn child_role_entry() {
    let Some((role, args)) = child_role() else {
        return;
    };
    let bus = common::open_bus(&args[0]);
    match role.as_str() {
        // args: bus topic producer_id count barrier
        "producer" => {
            let id: u64 = args[2].parse().unwrap();
            let count: u64 = args[3].parse().unwrap();
            let mut tx = bus.topic(&args[1]).producer::<Job>().unwrap();
            report("READY");
            while !std::path::Path::new(&args[4]).exists() {
                std::thread::sleep(Duration::from_micros(100));
            }
            for seq in 0..count {
                tx.push(Job::new(id, seq)).unwrap();
            }
        }
        // args: bus topic out_file. Pops until Disconnected, writes what it got.
        "consumer" => {
            let mut rx = bus.topic(&args[1]).consumer::<Job>().unwrap();
            report("READY");
            let mut out = Vec::new();
            let mut last = std::collections::HashMap::new();
            let mut errors = 0u64;
            loop {
                match rx.pop() {
                    Ok(job) => {
                        if !job.is_whole()
                            || last
                                .insert(job.producer, job.seq)
                                .is_some_and(|prev| prev >= job.seq)
                        {
                            errors += 1;
                        }
                        out.extend_from_slice(job.as_bytes());
                    }
                    Err(PopError::Disconnected) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            std::fs::File::create(&args[2])
                .unwrap()
                .write_all(&out)
                .unwrap();
            report(format!("RESULT {errors}"));
        }
        // args: bus topic count. Pushes `count` jobs with no consumer
        // asleep (so it turns light), says so, and waits to be killed.
        "push-and-idle" => {
            let count: u64 = args[2].parse().unwrap();
            let mut tx = bus.topic(&args[1]).producer::<Job>().unwrap();
            for seq in 0..count {
                tx.try_push(Job::new(FROM_CHILD, seq)).unwrap();
            }
            report(format!("PUSHED {}", tx.queue_stats().light_producers));
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        // args: bus topic trial. Pushes one job; stalls (hook) after claiming.
        "push-once" => {
            let trial: u64 = args[2].parse().unwrap();
            let mut tx = bus.topic(&args[1]).producer::<Job>().unwrap();
            tx.push(Job::new(FROM_CHILD, trial)).unwrap();
            panic!("the hook should have stopped this process");
        }
        // args: bus topic. Pops one job; stalls (hook) after claiming.
        "pop-once" => {
            let mut rx = bus.topic(&args[1]).consumer::<Job>().unwrap();
            let job = rx.pop();
            panic!("the hook should have stopped this process, got {job:?}");
        }
        // args: bus topic. Subscribes losslessly; stalls (hook) mid-read.
        "lossless-stall" => {
            let mut rx = bus
                .topic(&args[1])
                .start_at(StartAt::Next)
                .subscriber::<Tick>()
                .unwrap();
            report("READY");
            let tick = rx.recv();
            panic!("the hook should have stopped this process, got {tick:?}");
        }
        // args: bus topic count pause_every borrow(0|1). Lossless subscriber
        // that checks every message; pauses 1 ms every `pause_every`.
        "lossless-sub" => {
            let count: u64 = args[2].parse().unwrap();
            let pause_every: u64 = args[3].parse().unwrap();
            let borrow = args[4] == "1";
            let mut rx = bus
                .topic(&args[1])
                .start_at(StartAt::Next)
                .wait(WaitStrategy::adaptive())
                .subscriber::<Tick>()
                .unwrap();
            report("READY");
            let mut errors = 0u64;
            for expected in 0..count {
                let seq = if borrow {
                    let tick = rx.recv_ref().unwrap();
                    errors += u64::from(!tick.is_whole());
                    tick.seq
                } else {
                    let tick = rx.recv().unwrap();
                    errors += u64::from(!tick.is_whole());
                    tick.seq
                };
                errors += u64::from(seq != expected);
                if pause_every > 0 && expected % pause_every == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            let s = rx.stats();
            report(format!("RESULT {} {} {errors}", s.received, s.lagged));
            assert_eq!(rx.recv(), Err(RecvError::Disconnected));
        }
        // args: bus topic threads. Consumers that sleep at once when the
        // queue is empty, one per thread, popping until the producers are
        // gone; then the sum of their voluntary context switches (one per
        // futex sleep that ended) and the jobs popped.
        "sleepy-consumers" => {
            let threads: usize = args[2].parse().unwrap();
            let consumers: Vec<_> = (0..threads)
                .map(|_| {
                    bus.topic(&args[1])
                        .wait(WaitStrategy::Block)
                        // Longer than the test's pushes: no sleep times out.
                        .liveness_check_interval(Duration::from_secs(1))
                        .consumer::<Job>()
                        .unwrap()
                })
                .collect();
            report("READY");
            let handles: Vec<_> = consumers
                .into_iter()
                .map(|mut rx| {
                    std::thread::spawn(move || {
                        let mut popped = 0u64;
                        while rx.pop().is_ok() {
                            popped += 1;
                        }
                        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
                        let switches: u64 = status
                            .lines()
                            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                            .and_then(|n| n.trim().parse().ok())
                            .unwrap();
                        (switches, popped)
                    })
                })
                .collect();
            let (mut switches, mut popped) = (0, 0);
            for h in handles {
                let (s, p) = h.join().unwrap();
                switches += s;
                popped += p;
            }
            report(format!("RESULT {switches} {popped}"));
        }
        other => panic!("unknown child role {other}"),
    }
}

#[test]
fn three_producers_three_consumers_three_million_jobs_each_taken_exactly_once() {
    const PER_PRODUCER: u64 = 1_000_000;
    let bus = TestBus::new("q-3x3");
    let topic = "jobs";
    drop(
        bus.open()
            .topic(topic)
            .capacity(1 << 12)
            .consumer::<Job>()
            .unwrap(),
    );
    let dir = std::env::temp_dir();
    let barrier = dir.join(format!("shmbus-{}-go", bus.name));
    let _ = std::fs::remove_file(&barrier);
    let files: Vec<_> = (0..3)
        .map(|i| dir.join(format!("shmbus-{}-c{i}", bus.name)))
        .collect();
    let mut consumers: Vec<ChildProc> = files
        .iter()
        .map(|f| spawn_role("consumer", &args(&[&bus.name, &topic, &f.display()])))
        .collect();
    let mut producers: Vec<ChildProc> = (0..3u64)
        .map(|id| {
            spawn_role(
                "producer",
                &args(&[&bus.name, &topic, &id, &PER_PRODUCER, &barrier.display()]),
            )
        })
        .collect();
    for child in consumers.iter_mut().chain(producers.iter_mut()) {
        child.expect_line("READY");
    }
    std::fs::write(&barrier, b"go").unwrap();
    for producer in &mut producers {
        producer.wait_success(Duration::from_secs(300));
    }
    let mut seen = vec![vec![false; PER_PRODUCER as usize]; 3];
    let mut total = 0u64;
    for (consumer, file) in consumers.iter_mut().zip(&files) {
        let errors: u64 = consumer.expect_line("RESULT").parse().unwrap();
        assert_eq!(errors, 0, "torn job or FIFO per producer broken");
        consumer.wait_success(Duration::from_secs(60));
        let bytes = std::fs::read(file).unwrap();
        let _ = std::fs::remove_file(file);
        for chunk in bytes.chunks_exact(std::mem::size_of::<Job>()) {
            let job = Job::read_from_bytes(chunk).unwrap();
            let slot = &mut seen[job.producer as usize][job.seq as usize];
            assert!(!*slot, "job {job:?} delivered twice");
            *slot = true;
            total += 1;
        }
    }
    let _ = std::fs::remove_file(&barrier);
    assert_eq!(total, 3 * PER_PRODUCER, "every job delivered");
}

/// A queue for crash trials, with a short liveness interval so each trial
/// recovers quickly.
fn trial_queue(bus: &TestBus, capacity: u32) -> (shmbus::Producer<Job>, shmbus::Consumer<Job>) {
    let b = bus.open();
    let topic = || {
        b.topic("jobs")
            .capacity(capacity)
            .liveness_check_interval(Duration::from_millis(5))
    };
    (topic().producer().unwrap(), topic().consumer().unwrap())
}

/// A producer that pushed with no consumer asleep skips its wakeup fence
/// and is counted as light (consumers about to sleep make up for its
/// fence with `membarrier`). Killed with `kill -9` while light, it stays
/// counted until a producer takes its place in the claim table, which
/// takes it out; the jobs it pushed are all there, and a consumer that
/// sleeps afterwards is woken by the new producer's push. Fails if the new
/// producer does not forget the dead one (the count would stay 1 for ever,
/// and every sleep would pay for a `membarrier`).
#[test]
fn a_light_producer_killed_is_forgotten_by_the_next_in_its_place() {
    if common::shm_only("a_light_producer_killed_is_forgotten_by_the_next_in_its_place") {
        return;
    }
    if !common::membarrier_works() {
        // Producers never turn light where readers cannot make up for
        // their fences.
        common::skip(
            "a_light_producer_killed_is_forgotten_by_the_next_in_its_place",
            "membarrier(GLOBAL_EXPEDITED) is not available here",
        );
        return;
    }
    let bus = TestBus::new("lightkill");
    let b = bus.open();
    let topic = || b.topic("jobs").capacity(1024);
    let mut rx = topic().wait(WaitStrategy::Block).consumer::<Job>().unwrap();
    let mut child = spawn_role("push-and-idle", &args(&[&bus.name, &"jobs", &600]));
    assert_eq!(
        child.expect_line("PUSHED "),
        "1",
        "600 pushes with nobody asleep turn the producer light"
    );
    assert_eq!(rx.queue_stats().light_producers, 1);
    child.kill9();
    assert_eq!(
        rx.queue_stats().light_producers,
        1,
        "a dead light producer stays counted until its place is taken"
    );
    let mut tx = topic().producer::<Job>().unwrap();
    assert_eq!(rx.queue_stats().light_producers, 0, "forgotten");
    for seq in 0..600 {
        assert_eq!(rx.pop().unwrap(), Job::new(FROM_CHILD, seq));
    }
    // The consumer sleeps now; the new producer's push wakes it.
    let waker = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        tx.push(Job::new(FROM_TEST, 1)).unwrap();
        tx
    });
    assert_eq!(
        rx.pop_timeout(Duration::from_secs(10)).unwrap(),
        Job::new(FROM_TEST, 1)
    );
    drop(waker.join().unwrap());
}

#[test]
fn producer_killed_between_claim_and_publish_never_wedges_the_queue() {
    if common::shm_only("producer_killed_between_claim_and_publish_never_wedges_the_queue") {
        return;
    }
    let bus = TestBus::new("kill-producer");
    let (mut tx, mut rx) = trial_queue(&bus, 8);
    let trials = common::trials();
    for trial in 0..trials {
        let mut child = spawn_role_with_env(
            "push-once",
            &args(&[&bus.name, &"jobs", &trial]),
            &[("SHMBUS_TEST_HOOK", "stall-after-push-claim")],
        );
        child.expect_line("SHMBUS-HOOK");
        child.kill9();
        tx.push(Job::new(FROM_TEST, trial)).unwrap();
        let job = rx
            .pop_timeout(Duration::from_secs(10))
            .expect("the queue keeps flowing");
        assert_eq!(
            job,
            Job::new(FROM_TEST, trial),
            "trial {trial}: the dead producer's job never appears"
        );
    }
    assert_eq!(
        rx.try_pop(),
        Err(TryPopError::Empty),
        "nothing more, nothing twice"
    );
    let stats = rx.queue_stats();
    assert_eq!(
        stats.lost_in_push, trials,
        "one lost (never published) job per killed producer"
    );
    assert_eq!(stats.lost_in_consume, 0);
}

#[test]
fn consumer_killed_between_claim_and_release_never_wedges_the_queue() {
    if common::shm_only("consumer_killed_between_claim_and_release_never_wedges_the_queue") {
        return;
    }
    consumer_kill_trials("kill-consumer", |tx, job| {
        tx.push_timeout(job, Duration::from_secs(10))
            .expect("the producer gets past the dead consumer's slot")
    });
}

#[test]
fn a_try_push_only_producer_gets_past_consumers_killed_mid_pop() {
    if common::shm_only("a_try_push_only_producer_gets_past_consumers_killed_mid_pop") {
        return;
    }
    // try_push never waits, so it must recover the dead consumer's slot
    // itself (paced per producer), or return Full forever.
    consumer_kill_trials("kill-try-push", |tx, mut job| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tx.try_push(job) {
                Ok(()) => return,
                Err(shmbus::TryPushError::Full(back)) if std::time::Instant::now() < deadline => {
                    job = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("try_push never got past the dead consumer: {e:?}"),
            }
        }
    });
}

/// Trials of a consumer killed between claiming a job and releasing its
/// slot, with `push` as the producer's way to push: the slot comes round,
/// the producer frees it, nothing is delivered twice, each loss counts.
fn consumer_kill_trials(tag: &str, mut push: impl FnMut(&mut shmbus::Producer<Job>, Job)) {
    const CAPACITY: u64 = 4;
    let bus = TestBus::new(tag);
    let (mut tx, mut rx) = trial_queue(&bus, CAPACITY as u32);
    let trials = common::trials();
    for trial in 0..trials {
        push(&mut tx, Job::new(FROM_CHILD, trial));
        let mut child = spawn_role_with_env(
            "pop-once",
            &args(&[&bus.name, &"jobs"]),
            &[("SHMBUS_TEST_HOOK", "stall-after-pop-claim")],
        );
        child.expect_line("SHMBUS-HOOK");
        child.kill9();
        // The last of these lands on the dead consumer's slot: the producer
        // must find the claimer dead and free it.
        for i in 0..CAPACITY {
            push(&mut tx, Job::new(FROM_TEST, trial * CAPACITY + i));
        }
        for i in 0..CAPACITY {
            let job = rx.pop_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(
                job,
                Job::new(FROM_TEST, trial * CAPACITY + i),
                "the claimed job is not delivered again"
            );
        }
    }
    assert_eq!(rx.try_pop(), Err(TryPopError::Empty));
    let stats = rx.queue_stats();
    assert_eq!(
        stats.lost_in_consume, trials,
        "one lost job per killed consumer (at most once)"
    );
    assert_eq!(stats.lost_in_push, 0);
}

#[test]
fn lossless_subscriber_killed_mid_read_is_evicted_and_the_publisher_resumes() {
    if common::shm_only("lossless_subscriber_killed_mid_read_is_evicted_and_the_publisher_resumes")
    {
        return;
    }
    const CAPACITY: u64 = 4;
    let bus = TestBus::new("kill-lossless");
    let b = bus.open();
    let mut tx = b
        .topic("ticks")
        .capacity(CAPACITY as u32)
        .lossless(4)
        .liveness_check_interval(Duration::from_millis(5))
        .publisher::<Tick>()
        .unwrap();
    let trials = common::trials();
    for trial in 0..trials {
        let mut child = spawn_role_with_env(
            "lossless-stall",
            &args(&[&bus.name, &"ticks"]),
            &[("SHMBUS_TEST_HOOK", "stall-in-lossless-read")],
        );
        child.expect_line("READY");
        tx.send(&Tick::new(tx.next_seq())).unwrap();
        child.expect_line("SHMBUS-HOOK");
        child.kill9();
        for _ in 0..CAPACITY + 1 {
            let seq = tx.next_seq();
            tx.send_timeout(&Tick::new(seq), Duration::from_secs(10))
                .unwrap_or_else(|e| {
                    panic!("trial {trial}: publisher stuck behind a dead subscriber: {e}")
                });
        }
    }
    assert_eq!(
        tx.evictions(),
        trials,
        "every killed subscriber evicted, and counted"
    );
    let info = common::topic_infos(&b)
        .into_iter()
        .find(|t| t.name == "ticks")
        .unwrap();
    assert_eq!((info.evictions, info.attached), (trials, 0));
}

#[test]
fn lossless_subscribers_of_different_speeds_lose_nothing_and_a_killed_one_is_evicted() {
    const SENT: u64 = 1_000_000;
    let bus = TestBus::new("lossless-speeds");
    let b = bus.open();
    let topic = || {
        b.topic("ticks")
            .capacity(1024)
            .lossless(8)
            .liveness_check_interval(Duration::from_millis(20))
    };
    drop(topic().subscriber::<Tick>().unwrap());
    // fast (copying), medium (in place), slow (in place, pausing often).
    let mut subs: Vec<ChildProc> = [(0, 0), (50_000, 1), (10_000, 1)]
        .iter()
        .map(|(pause, borrow)| {
            spawn_role(
                "lossless-sub",
                &args(&[&bus.name, &"ticks", &SENT, pause, borrow]),
            )
        })
        .collect();
    // One more that will be killed half-way without warning.
    let mut doomed = spawn_role(
        "lossless-sub",
        &args(&[&bus.name, &"ticks", &SENT, &1000, &0]),
    );
    for sub in subs.iter_mut().chain(std::iter::once(&mut doomed)) {
        sub.expect_line("READY");
    }
    let mut tx = topic()
        .wait(WaitStrategy::adaptive())
        .publisher::<Tick>()
        .unwrap();
    for seq in 0..SENT {
        if seq == SENT / 2 {
            doomed.kill9();
        }
        tx.send(&Tick::new(seq)).unwrap();
    }
    drop(tx);
    for sub in &mut subs {
        let result: Vec<u64> = sub
            .expect_line("RESULT")
            .split(' ')
            .map(|v| v.parse().unwrap())
            .collect();
        assert_eq!(result, vec![SENT, 0, 0], "received, lagged, errors");
        sub.wait_success(Duration::from_secs(60));
    }
    let info = common::topic_infos(&b)
        .into_iter()
        .find(|t| t.name == "ticks")
        .unwrap();
    assert_eq!(info.evictions, 1, "the killed subscriber was evicted");
}

/// A push wakes one sleeping consumer, not all of them (the work queue's
/// semaphore-style wake): with 8 consumers asleep before every push, the
/// consumers' futex wakeups per push stay near 1 (waking them all made it
/// about 8). Counted from their voluntary context switches, which include
/// a few that are not wakes, so the bound is loose; it is a count, not a
/// time.
#[test]
fn a_push_wakes_one_of_eight_sleeping_consumers() {
    if common::shm_only("a_push_wakes_one_of_eight_sleeping_consumers") {
        return;
    }
    const PUSHES: u64 = 200;
    let bus = TestBus::new("q-wake-one");
    let b = bus.open();
    let mut tx = b.topic("jobs").producer::<Job>().unwrap();
    let mut child = spawn_role("sleepy-consumers", &args(&[&bus.name, &"jobs", &8]));
    child.expect_line("READY");
    for seq in 0..PUSHES {
        // Long enough for every consumer to be asleep again.
        std::thread::sleep(Duration::from_millis(2));
        tx.push(Job::new(0, seq)).unwrap();
    }
    drop(tx); // the consumers' pops now say Disconnected
    let result = child.expect_line("RESULT");
    child.wait_success(Duration::from_secs(30));
    let (switches, popped) = result.split_once(' ').unwrap();
    let (switches, popped): (u64, u64) = (switches.parse().unwrap(), popped.parse().unwrap());
    assert_eq!(popped, PUSHES, "every job popped once");
    let per_push = switches as f64 / PUSHES as f64;
    eprintln!("wake-one: {switches} consumer wakeups for {PUSHES} pushes ({per_push:.2} per push)");
    assert!(
        per_push < 3.0,
        "{per_push:.2} wakeups per push with 8 sleeping consumers: pushes wake more than one"
    );
}

//! Crash trials of the ways out: a recoverer killed at each step of a
//! recovery, a consumer killed while asleep, lossless subscribers killed
//! while the publisher idles, a lossless subscriber killed behind a
//! publisher that only polls. Each victim is
//! held at its exact point by a test hook (`SHMBUS_TEST_HOOK`) and killed
//! with SIGKILL, many times over; the queue must keep flowing, every loss
//! must be counted exactly once, and no waiting process may spin.
//!
//! Trials per case: 200, or `SHMBUS_KILL_TRIALS`.

mod common;

use std::time::{Duration, Instant};

use common::{args, child_role, report, spawn_role_with_env, TestBus};
use shmbus::{Bus, Error, PopTimeoutError, TryPopError, TrySendError, WaitStrategy};

const INTERVAL: Duration = Duration::from_millis(5);

#[test]
#[ignore = "entry point of child processes; the tests that spawn them run it"]
fn child_role_entry() {
    let Some((role, args)) = child_role() else {
        return;
    };
    let bus = Bus::open(&args[0]).unwrap();
    let topic = || bus.topic(&args[1]).liveness_check_interval(INTERVAL);
    match role.as_str() {
        // Pushes one value; the hook stops it after claiming.
        "push-once" => {
            let _ = topic().producer::<u64>().unwrap().push(u64::MAX);
            panic!("the hook should have stopped this process");
        }
        // Pops; the hook stops it in a recovery, or after claiming.
        "pop-once" => {
            let got = topic()
                .consumer::<u64>()
                .unwrap()
                .pop_timeout(Duration::from_secs(20));
            panic!("the hook should have stopped this process, got {got:?}");
        }
        // Sleeps in pop on an empty queue, in one sleep: with the short
        // INTERVAL the sleep would time out every 5 ms and count itself
        // out and in again, and a kill between the two leaves no count.
        "sleep-pop" => {
            let mut rx = topic()
                .wait(WaitStrategy::Block)
                .liveness_check_interval(Duration::from_secs(60))
                .consumer::<u64>()
                .unwrap();
            report("READY");
            let got = rx.pop();
            panic!("nothing should have been pushed, got {got:?}");
        }
        // A lossless subscriber that attaches and never reads.
        "lossless-attach" => {
            let _rx = topic().subscriber::<u64>().unwrap();
            report("READY");
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        other => panic!("unknown child role {other}"),
    }
}

/// A work queue "jobs" on `b`, with a short liveness interval, and a
/// producer and a consumer of it.
fn trial_queue(b: &Bus, capacity: u32) -> (shmbus::Producer<u64>, shmbus::Consumer<u64>) {
    let topic = || {
        b.topic("jobs")
            .capacity(capacity)
            .liveness_check_interval(INTERVAL)
    };
    (topic().producer().unwrap(), topic().consumer().unwrap())
}

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    // SAFETY: getrusage writes into the struct we pass, which we own.
    let usage = unsafe {
        let mut usage: libc::rusage = core::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Waits `wait` in `pop_timeout` while the queue cannot move, and checks
/// that it cost little CPU: a wait that spins would cost about all of it.
fn waits_without_spinning(rx: &mut shmbus::Consumer<u64>, wait: Duration, what: &str) {
    let cpu = thread_cpu();
    let started = Instant::now();
    assert_eq!(
        rx.pop_timeout(wait),
        Err(PopTimeoutError::Timeout),
        "{what}"
    );
    let (used, waited) = (thread_cpu() - cpu, started.elapsed());
    assert!(
        used * 4 < waited,
        "{what}: the waiting consumer used {used:?} of CPU in {waited:?}"
    );
}

#[test]
fn recoverer_killed_at_each_step_never_wedges_the_queue_and_each_loss_counts_once() {
    let steps = [
        "stall-recovery-journal-taken",
        "stall-recovery-counted",
        "stall-recovery-slot-finished",
        "stall-recovery-cleared",
    ];
    let trials = common::trials();
    for step in steps {
        let bus = TestBus::new("kill-recoverer");
        let b = bus.open();
        let (mut tx, mut rx) = trial_queue(&b, 8);
        for trial in 0..trials {
            // A producer dies holding the next position...
            let mut producer = spawn_role_with_env(
                "push-once",
                &args(&[&bus.name, &"jobs"]),
                &[("SHMBUS_TEST_HOOK", "stall-after-push-claim")],
            );
            producer.expect_line("SHMBUS-HOOK");
            producer.kill9();
            // ...our job queues up behind it...
            tx.push(trial).unwrap();
            // ...and a consumer that recovers the stuck slot is killed at
            // `step` of the recovery.
            let mut recoverer = spawn_role_with_env(
                "pop-once",
                &args(&[&bus.name, &"jobs"]),
                &[("SHMBUS_TEST_HOOK", step)],
            );
            recoverer.expect_line("SHMBUS-HOOK");
            if trial == 0 && step == steps[0] {
                // While it holds the journal alive, we wait for it, asleep.
                waits_without_spinning(
                    &mut rx,
                    Duration::from_millis(300),
                    "a live recoverer holds the journal",
                );
            }
            recoverer.kill9();
            assert_eq!(
                rx.pop_timeout(Duration::from_secs(10)),
                Ok(trial),
                "{step}, trial {trial}: the queue flows again"
            );
        }
        assert_eq!(rx.try_pop(), Err(TryPopError::Empty), "{step}");
        let stats = rx.queue_stats();
        assert_eq!(
            stats.lost_in_push, trials,
            "{step}: one loss per killed producer, whatever step its recoverer died at"
        );
        assert_eq!(stats.lost_in_consume, 0, "{step}");
    }
}

#[test]
fn consumers_killed_while_asleep_cost_one_wake_call_once() {
    let bus = TestBus::new("kill-sleeper");
    let b = bus.open();
    let (mut tx, mut rx) = trial_queue(&b, 8);
    let sleeping = || common::topic_infos(&b)[0].sleeping;
    let trials = common::trials();
    for trial in 0..trials {
        let mut sleeper = spawn_role_with_env("sleep-pop", &args(&[&bus.name, &"jobs"]), &[]);
        sleeper.expect_line("READY");
        let counted = trial as u32 + 1;
        assert!(
            common::eventually(Duration::from_secs(10), || sleeping() >= counted),
            "trial {trial}: the consumer never went to sleep"
        );
        sleeper.kill9();
    }
    assert_eq!(
        sleeping(),
        trials as u32,
        "every killed sleeper left its count"
    );
    let word = common::not_empty_word(&bus, "jobs");
    let before = common::peek_u32(&bus, word);
    tx.push(1).unwrap();
    assert_eq!(
        common::peek_u32(&bus, word),
        before.wrapping_add(1),
        "one wake call for the dead sleepers"
    );
    assert_eq!(sleeping(), 0, "...after which they are forgotten");
    assert_eq!(rx.pop_timeout(Duration::from_secs(10)), Ok(1));
    for value in 2..100 {
        tx.push(value).unwrap();
        assert_eq!(rx.try_pop(), Ok(value), "the queue keeps flowing");
    }
    assert_eq!(
        common::peek_u32(&bus, word),
        before.wrapping_add(1),
        "and no more wake calls with nobody asleep"
    );
    let stats = rx.queue_stats();
    assert_eq!((stats.lost_in_push, stats.lost_in_consume), (0, 0));
}

#[test]
fn subscribers_killed_while_the_publisher_idles_leave_their_entries_to_new_ones() {
    const MAX: u32 = 2;
    let bus = TestBus::new("kill-idle-lossless");
    let b = bus.open();
    let topic = || {
        b.topic("ticks")
            .capacity(4)
            .lossless(MAX)
            .liveness_check_interval(INTERVAL)
    };
    let tx = topic().publisher::<u64>().unwrap();
    for round in 0..20 {
        let mut victims: Vec<_> = (0..MAX)
            .map(|_| spawn_role_with_env("lossless-attach", &args(&[&bus.name, &"ticks"]), &[]))
            .collect();
        for victim in &mut victims {
            victim.expect_line("READY");
        }
        assert!(
            matches!(
                topic().subscriber::<u64>(),
                Err(Error::TooManySubscribers { .. })
            ),
            "round {round}: the table is full of live subscribers"
        );
        for victim in &mut victims {
            victim.kill9();
        }
        // The publisher never sends, so nothing evicts them but attaching.
        let rx = topic()
            .subscriber::<u64>()
            .expect("a new subscriber takes back a dead one's entry");
        drop(rx);
    }
    // The last round's other dead subscriber is still attached: a full
    // table's worth of new subscribers takes it back too.
    let full: Vec<_> = (0..MAX)
        .map(|_| topic().subscriber::<u64>().expect("room for a full table"))
        .collect();
    assert_eq!(full.len(), MAX as usize);
    assert_eq!(
        tx.evictions(),
        20 * u64::from(MAX),
        "every dead subscriber evicted exactly once"
    );
}

#[test]
fn try_send_alone_evicts_a_dead_subscriber() {
    let bus = TestBus::new("try-send-evicts");
    let b = bus.open();
    let topic = || {
        b.topic("ticks")
            .capacity(4)
            .lossless(2)
            .liveness_check_interval(INTERVAL)
    };
    let mut tx = topic().publisher::<u64>().unwrap();
    let mut victim = spawn_role_with_env("lossless-attach", &args(&[&bus.name, &"ticks"]), &[]);
    victim.expect_line("READY");
    for seq in 0..4 {
        tx.try_send(&seq).unwrap();
    }
    assert_eq!(tx.try_send(&4), Err(TrySendError::Full));
    victim.kill9();
    // Only polling calls: the paced liveness check runs inside them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tx.try_send(&4) == Err(TrySendError::Full) {
        assert!(
            Instant::now() < deadline,
            "try_send never evicted the dead subscriber"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(tx.evictions(), 1);
}

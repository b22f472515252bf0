//! Liveness across PID namespaces, as two containers that share /dev/shm
//! see each other: the other side's pids mean nothing here, and its /proc
//! is not ours. Each test runs one side in a PID namespace of its own
//! (`unshare --pid --fork --mount-proc`) and checks that a live process
//! there is never taken over, evicted or recovered from here (or the other
//! way round), and that once it is killed, it is.
//!
//! Needs root or user namespaces. Where `unshare` is refused, each test
//! says `SKIPPED` (and fails instead when `SHMBUS_REQUIRE_NAMESPACES` is
//! set, as CI sets it where namespaces work).

mod common;

use std::time::{Duration, Instant};

use common::{
    args, child_role, namespaced_pid, pid_namespaces_available, report, skip_or_fail,
    spawn_role_in_pid_namespace, ChildProc, TestBus, Tick,
};
use shmbus::{Bus, Error, StartAt, TryPopError, TrySendError};

/// A check interval short enough that many checks happen while we watch a
/// live process, so a wrong verdict would show.
const INTERVAL: Duration = Duration::from_millis(10);

#[test]
#[ignore = "entry point of child processes; the tests that spawn them run it"]
fn child_role_entry() {
    let Some((role, args)) = child_role() else {
        return;
    };
    let bus = Bus::open(&args[0]).unwrap();
    let hold = || loop {
        std::thread::sleep(Duration::from_secs(1));
    };
    match role.as_str() {
        // args: bus topic. Publishes 10 ticks and holds the lease.
        "publish-hold" => {
            let mut tx = bus.topic(&args[1]).publisher::<Tick>().unwrap();
            for seq in 0..10 {
                tx.send(&Tick::new(seq)).unwrap();
            }
            report(format!("HOLDING {}", std::process::id()));
            hold();
        }
        // args: bus topic. Tries to become the publisher once.
        "try-publish" => match bus.topic(&args[1]).publisher::<Tick>() {
            Err(Error::PublisherBusy { holder, .. }) => report(format!("BUSY {holder}")),
            Err(other) => report(format!("ERROR {other}")),
            Ok(_) => report("GOT"),
        },
        // args: bus topic. A lossless subscriber that never reads.
        "lossless-hold" => {
            let _rx = bus
                .topic(&args[1])
                .start_at(StartAt::Next)
                .subscriber::<Tick>()
                .unwrap();
            report("ATTACHED");
            hold();
        }
        // args: bus topic. Pushes one job and stalls after claiming (hook).
        "push-stall" => {
            let mut tx = bus.topic(&args[1]).producer::<u64>().unwrap();
            let _ = tx.push(7);
            panic!("the hook should have stopped this process");
        }
        other => panic!("unknown child role {other}"),
    }
}

/// Kills the role `unshare` runs in its namespace and waits until it is
/// gone (reaped: `unshare` exits once its child has).
fn kill_namespaced(child: &mut ChildProc) {
    let pid = namespaced_pid(child.pid());
    // SAFETY: plain kill(2) on a pid we just read as our child's child.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let _ = child.child.wait();
}

fn available(test: &str) -> bool {
    match pid_namespaces_available() {
        Ok(()) => true,
        Err(why) => {
            skip_or_fail(test, &format!("no PID namespaces here ({why})"));
            false
        }
    }
}

/// Calls `attempt` for `span`, failing if it ever returns false.
fn holds_for(span: Duration, mut attempt: impl FnMut() -> bool, what: &str) {
    let end = Instant::now() + span;
    while Instant::now() < end {
        assert!(attempt(), "{what}");
        std::thread::sleep(INTERVAL / 2);
    }
}

#[test]
fn live_publisher_in_another_pid_namespace_is_never_taken_over_until_killed() {
    if !available("live_publisher_in_another_pid_namespace_is_never_taken_over_until_killed") {
        return;
    }
    let bus = TestBus::new("ns-lease");
    let b = bus.open();
    let mut child = spawn_role_in_pid_namespace("publish-hold", &args(&[&bus.name, &"t"]), &[]);
    let inside = child.expect_line("HOLDING");
    assert_eq!(inside, "1", "the publisher is pid 1 of its own namespace");
    let topic = || {
        b.topic("t")
            .liveness_check_interval(INTERVAL)
            .publisher::<Tick>()
    };
    holds_for(
        Duration::from_millis(300),
        || match topic() {
            Err(Error::PublisherBusy { holder, .. }) => {
                assert!(holder.contains("another PID namespace"), "{holder}");
                true
            }
            _ => false,
        },
        "a live publisher in another PID namespace was taken over",
    );
    kill_namespaced(&mut child);
    let mut tx = topic().expect("the lease of a killed publisher is taken over");
    assert_eq!(tx.next_seq(), 10, "and the sequence continues");
    tx.send(&Tick::new(10)).unwrap();
}

#[test]
fn a_namespaced_process_never_takes_over_a_live_host_publisher() {
    if !available("a_namespaced_process_never_takes_over_a_live_host_publisher") {
        return;
    }
    let bus = TestBus::new("ns-host-lease");
    let b = bus.open();
    let mut tx = b.topic("t").publisher::<Tick>().unwrap();
    tx.send(&Tick::new(0)).unwrap();
    for _ in 0..3 {
        // Inside, our pid means nothing and our /proc entry does not exist.
        let mut child = spawn_role_in_pid_namespace("try-publish", &args(&[&bus.name, &"t"]), &[]);
        let busy = child.expect_line("BUSY");
        assert!(busy.contains("another PID namespace"), "{busy}");
        child.wait_success(Duration::from_secs(30));
    }
    tx.send(&Tick::new(1))
        .expect("the host publisher still holds its lease");
}

#[test]
fn lossless_subscriber_in_another_pid_namespace_is_never_evicted_while_alive() {
    if !available("lossless_subscriber_in_another_pid_namespace_is_never_evicted_while_alive") {
        return;
    }
    let bus = TestBus::new("ns-evict");
    let b = bus.open();
    let mut tx = b
        .topic("ticks")
        .capacity(4)
        .lossless(2)
        .liveness_check_interval(INTERVAL)
        .publisher::<Tick>()
        .unwrap();
    let mut child =
        spawn_role_in_pid_namespace("lossless-hold", &args(&[&bus.name, &"ticks"]), &[]);
    child.expect_line("ATTACHED");
    for seq in 0..4 {
        tx.try_send(&Tick::new(seq))
            .expect("room for a ring's worth");
    }
    holds_for(
        Duration::from_millis(300),
        || tx.try_send(&Tick::new(4)) == Err(TrySendError::Full),
        "a live subscriber in another PID namespace was evicted",
    );
    assert_eq!(tx.evictions(), 0);
    kill_namespaced(&mut child);
    tx.send_timeout(&Tick::new(4), Duration::from_secs(10))
        .expect("the killed subscriber is evicted");
    assert_eq!(tx.evictions(), 1);
}

#[test]
fn queue_claim_of_a_process_in_another_pid_namespace_is_recovered_only_once_it_is_dead() {
    if !available(
        "queue_claim_of_a_process_in_another_pid_namespace_is_recovered_only_once_it_is_dead",
    ) {
        return;
    }
    let bus = TestBus::new("ns-claim");
    let b = bus.open();
    let topic = || {
        b.topic("jobs")
            .capacity(8)
            .liveness_check_interval(INTERVAL)
    };
    let mut rx = topic().consumer::<u64>().unwrap();
    let mut tx = topic().producer::<u64>().unwrap();
    let mut child = spawn_role_in_pid_namespace(
        "push-stall",
        &args(&[&bus.name, &"jobs"]),
        &[("SHMBUS_TEST_HOOK", "stall-after-push-claim")],
    );
    child.expect_line("SHMBUS-HOOK");
    tx.push(42).unwrap();
    // Position 0 is the live claimer's: the host job behind it waits.
    holds_for(
        Duration::from_millis(300),
        || rx.try_pop() == Err(TryPopError::Empty),
        "a live claimer in another PID namespace was recovered",
    );
    assert_eq!(rx.queue_stats().lost_in_push, 0);
    kill_namespaced(&mut child);
    assert_eq!(rx.pop_timeout(Duration::from_secs(10)), Ok(42));
    assert_eq!(rx.queue_stats().lost_in_push, 1);
}

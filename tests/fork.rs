//! `fork()` after opening a bus: the child is a process of its own. It
//! registers afresh (it never acts under its parent's identity), the
//! endpoints its parent made before the fork refuse to act in it, and the
//! parent's exit does not make the child look dead.

mod common;

use std::time::{Duration, Instant};

use common::{args, child_role, report, spawn_role, TestBus, Tick};
use shmbus::{Error, PushError, SendError, StartAt};

#[test]
#[ignore = "entry point of child processes; the tests that spawn them run it"]
fn child_role_entry() {
    let Some((role, args)) = child_role() else {
        return;
    };
    assert_eq!(role, "fork-then-publish");
    // args: bus. Opens the bus and makes endpoints, forks; the child tries
    // the parent's endpoints, then publishes on "t" until killed; the
    // parent exits at once.
    let bus = common::open_bus(&args[0]);
    let mut early_tx = bus.publisher::<Tick>("early").unwrap();
    let mut early_rx = bus
        .topic("lossless")
        .lossless(2)
        .subscriber::<u64>()
        .unwrap();
    let mut early_producer = bus.topic("jobs").producer::<u64>().unwrap();
    // SAFETY: this process runs one thread of its own (the test harness's
    // other threads, if any, are idle); the child uses only what is safe
    // after fork in such a process.
    match unsafe { libc::fork() } {
        -1 => panic!("fork failed: {}", std::io::Error::last_os_error()),
        0 => {
            let early = (
                early_tx.send(&Tick::new(0)),
                early_rx.try_recv().map_err(|e| e.to_string()),
                early_producer
                    .push(1)
                    .map_err(|e| matches!(e, PushError::Detached(1))),
            );
            report(format!(
                "CHILD-EARLY {} {} {}",
                early.0 == Err(SendError::LeaseLost),
                early
                    .1
                    .as_ref()
                    .err()
                    .is_some_and(|e| e.contains("evicted")),
                early.2 == Err(true),
            ));
            let mut tx = bus.publisher::<Tick>("t").unwrap();
            report(format!("CHILD-PUBLISHING {}", std::process::id()));
            let mut seq = 0;
            loop {
                tx.send(&Tick::new(seq)).unwrap();
                seq += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        _ => {
            // The parent leaves at once, dropping its endpoints and its
            // registration; the child's copies must not act on them.
            report("PARENT-EXITING");
        }
    }
}

/// Kills a process that is not our child (the forked grandchild) when the
/// test ends, however it ends.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: plain kill(2).
        unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
    }
}

#[test]
fn a_forked_child_is_a_process_of_its_own_and_outlives_its_parent() {
    let bus = TestBus::new("fork");
    let mut parent = spawn_role("fork-then-publish", &args(&[&bus.name]));
    let early = parent.expect_line("CHILD-EARLY");
    let child_pid: u32 = parent.expect_line("CHILD-PUBLISHING").parse().unwrap();
    let _kill = KillOnDrop(child_pid);
    assert_eq!(
        early, "true true true",
        "endpoints made before fork() refuse to act in the child \
         (publisher: LeaseLost, lossless subscriber: Evicted, producer: Detached)"
    );
    parent.wait_success(Duration::from_secs(30));
    let b = bus.open();
    // The parent is gone; the child, which inherited its descriptors, is
    // not taken for it, nor it for the child.
    for _ in 0..5 {
        match b.publisher::<Tick>("t") {
            Err(Error::PublisherBusy { holder, .. }) => {
                assert!(holder.contains(&child_pid.to_string()), "{holder}")
            }
            other => panic!("the forked child's lease was taken: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut rx = b
        .topic("t")
        .start_at(StartAt::Oldest)
        .subscriber::<Tick>()
        .unwrap();
    let first = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(first.is_whole());
    // The parent's own lease, on "early", died with it.
    b.publisher::<Tick>("early")
        .expect("the exited parent's lease is taken over");
    drop(_kill);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut tx = loop {
        match b.publisher::<Tick>("t") {
            Ok(tx) => break tx,
            Err(Error::PublisherBusy { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            other => panic!("the killed child's lease was not taken over: {other:?}"),
        }
    };
    tx.send(&Tick::new(tx.next_seq())).unwrap();
    // Drain: everything is whole and in order.
    loop {
        match rx.try_recv() {
            Ok(tick) => assert!(tick.is_whole()),
            Err(shmbus::TryRecvError::Empty) => break,
            Err(shmbus::TryRecvError::Lagged(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

//! A full /dev/shm is an error when a topic is created, never a SIGBUS
//! later: ring regions are reserved with fallocate. The child runs in a
//! private mount namespace whose /dev/shm is a 512 KiB tmpfs (this needs
//! root or user namespaces; where `unshare` is refused the test says
//! `SKIPPED`, which CI counts, or fails when `SHMBUS_REQUIRE_NAMESPACES` is
//! set).

mod common;

use common::{child_role, report};
use shmbus::{Bus, Error};

#[test]
#[ignore = "entry point of child processes; the tests that spawn them run it"]
fn child_role_entry() {
    let Some((role, _)) = child_role() else {
        return;
    };
    assert_eq!(role, "fill-shm");
    let bus = Bus::open("nospace").expect("a bus fits in 512 KiB: only its header is reserved");
    match bus.topic("big").capacity(1 << 14).publisher::<[u64; 8]>() {
        Err(err @ Error::NoSpace { .. }) => report(format!("NOSPACE {err}")),
        Err(other) => panic!("expected NoSpace, got {other}"),
        Ok(_) => panic!("a 2 MiB ring was created in a 512 KiB /dev/shm"),
    }
    // What fits still works, and writing into it does not SIGBUS.
    let mut tx = bus
        .topic("small")
        .capacity(64)
        .publisher::<[u64; 8]>()
        .unwrap();
    let mut rx = bus
        .topic("small")
        .start_at(shmbus::StartAt::Oldest)
        .subscriber::<[u64; 8]>()
        .unwrap();
    for i in 0..200u64 {
        tx.send(&[i; 8]).unwrap();
    }
    let first = rx.try_recv();
    report(format!("SMALL {first:?}"));
    drop((tx, rx, bus));
    Bus::remove("nospace").unwrap();
}

#[test]
fn full_dev_shm_is_a_clear_error_at_topic_creation() {
    let Some((stdout, _)) = common::run_in_mount_namespace(
        "full_dev_shm_is_a_clear_error_at_topic_creation",
        "mount -t tmpfs -o size=512k tmpfs /dev/shm",
        "fill-shm",
        &[],
    ) else {
        return;
    };
    let nospace = stdout
        .lines()
        .find(|l| l.starts_with("NOSPACE"))
        .expect("NoSpace reported");
    assert!(
        nospace.contains("/dev/shm has no room") && nospace.contains("--shm-size"),
        "{nospace}"
    );
    assert!(
        stdout.contains("SMALL Err(Lagged("),
        "the small topic works: {stdout}"
    );
}

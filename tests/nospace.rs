//! A full /dev/shm is an error when a topic is created, never a SIGBUS
//! later: ring regions are reserved with fallocate. The child runs in a
//! private mount namespace whose /dev/shm is a 512 KiB tmpfs (this needs
//! root or user namespaces; where `unshare` is refused the test says
//! `SKIPPED`, which CI counts, or fails when `SHMBUS_REQUIRE_NAMESPACES` is
//! set).

mod common;

use std::process::Command;

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
    let exe = std::env::current_exe().unwrap();
    let script = "mount -t tmpfs -o size=512k tmpfs /dev/shm && exec \"$0\" child_role_entry --exact --ignored --nocapture --test-threads=1 -q";
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", script])
        .arg(&exe)
        .env(common::ROLE_ENV, "fill-shm")
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            common::skip_or_fail(
                "full_dev_shm_is_a_clear_error_at_topic_creation",
                &format!("cannot run unshare ({e}); a full /dev/shm cannot be staged here"),
            );
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success()
        && (stderr.contains("Operation not permitted") || stderr.contains("mount:"))
    {
        common::skip_or_fail(
            "full_dev_shm_is_a_clear_error_at_topic_creation",
            &format!("no private mount namespace here ({})", stderr.trim()),
        );
        return;
    }
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
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

//! Light writers (see "Light writers" in `shmbus::wait`): a busy broadcast
//! publisher skips the `fence(SeqCst)` of its wakeup check, and readers
//! about to sleep, or attaching to a lossless topic, issue
//! `membarrier(GLOBAL_EXPEDITED)` for it. These tests check, with real
//! processes, that the publisher does turn light and heavy again, that
//! `SHMBUS_MEMBARRIER=0` keeps it heavy, and that a process whose seccomp
//! filter forbids `membarrier` still gets every message (it asks the
//! publisher to turn heavy, and it does).

mod common;

use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{args, child_role, report, spawn_role, spawn_role_with_env, TestBus, Tick};
use shmbus::{Bus, StartAt, WaitStrategy};

/// Bits of a topic's sleeper word (`shmbus::wait`).
const LIGHT: u64 = 1 << 22;
const REQUEST: u64 = 1 << 23;
/// Offset of the sleeper word in a broadcast ring's control block: the
/// wakeup words start the third line, the count is their second word.
const SLEEPERS: u64 = 128 + 8;

/// Quiet messages after which a heavy publisher turns light
/// (`shmbus::wait::QUIET_NOTIFIES`), with room to spare.
const TO_TURN_LIGHT: u64 = 300;

fn sleeper_word(bus: &TestBus, topic: &str) -> u64 {
    let region = common::topic_region_offset(&bus.path(), topic);
    let mut word = [0u8; 8];
    std::fs::File::open(bus.path())
        .unwrap()
        .read_exact_at(&mut word, region + SLEEPERS)
        .unwrap();
    u64::from_ne_bytes(word)
}

/// Installs a seccomp filter that makes `membarrier` fail with `EPERM` in
/// this process, as a container's profile might. `false` where filters
/// cannot be installed.
fn forbid_membarrier() -> bool {
    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const ALLOW: u32 = 0x7fff_0000; // SECCOMP_RET_ALLOW
    const EPERM: u32 = 0x0005_0000 | 1; // SECCOMP_RET_ERRNO | EPERM
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    // struct seccomp_data: nr at 0, arch at 4.
    let filter = [
        op(LD_W_ABS, 0, 0, 4),
        op(JEQ_K, 1, 0, ARCH),
        op(RET_K, 0, 0, ALLOW),
        op(LD_W_ABS, 0, 0, 0),
        op(JEQ_K, 0, 1, libc::SYS_membarrier as u32),
        op(RET_K, 0, 0, EPERM),
        op(RET_K, 0, 0, ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl with these options reads only `prog`, which outlives
    // the calls, and changes nothing but this process's syscall filter.
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            && libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            ) == 0
    }
}

#[test]
#[ignore = "entry point of child processes; the tests that spawn them run it"]
fn child_role_entry() {
    let Some((role, args)) = child_role() else {
        return;
    };
    let bus = Bus::open(&args[0]).unwrap();
    match role.as_str() {
        // args: bus, topic, count, lossless (0/1). With membarrier
        // forbidden, subscribes (blocking waits), then receives `count`
        // consecutive messages and checks each.
        "forbidden-subscriber" => {
            if !forbid_membarrier() || common::membarrier_works() {
                report("STATUS NO-SECCOMP");
                return;
            }
            let count: u64 = args[2].parse().unwrap();
            let topic = bus
                .topic(&args[1])
                .capacity(4096)
                .start_at(StartAt::Next)
                .wait(WaitStrategy::Block);
            let topic = if args[3] == "1" {
                topic.lossless(4)
            } else {
                topic
            };
            let mut rx = topic.subscriber::<Tick>().unwrap();
            report("STATUS SUBSCRIBED");
            let mut first = None;
            for i in 0..count {
                let tick = rx.recv().unwrap_or_else(|e| panic!("message {i}: {e}"));
                assert!(tick.is_whole(), "torn message {tick:?}");
                let first = *first.get_or_insert(tick.seq);
                assert_eq!(tick.seq, first + i, "out of order or lost");
            }
            report(format!("GOT {count} sleeps {}", rx.stats().sleeps));
        }
        // args: bus, topic, count. Publishes `count` messages, then says
        // so and waits to be killed (holding the lease).
        "publisher" => {
            let count: u64 = args[2].parse().unwrap();
            let mut tx = bus.publisher::<Tick>(&args[1]).unwrap();
            for seq in 0..count {
                tx.send(&Tick::new(seq)).unwrap();
            }
            report("PUBLISHED");
            std::thread::sleep(Duration::from_secs(600));
        }
        other => panic!("unknown role {other}"),
    }
}

/// A publisher with nobody asleep turns light after a few hundred
/// messages; the first wake call it makes turns it heavy again.
#[test]
fn a_quiet_publisher_turns_light_and_a_sleeper_turns_it_heavy() {
    if !common::membarrier_works() {
        common::skip(
            "a_quiet_publisher_turns_light_and_a_sleeper_turns_it_heavy",
            "membarrier(GLOBAL_EXPEDITED) is not available here",
        );
        return;
    }
    let bus = TestBus::new("light-turns");
    let b = bus.open();
    let mut tx = b.topic("t").capacity(1024).publisher::<Tick>().unwrap();
    for seq in 0..TO_TURN_LIGHT {
        tx.send(&Tick::new(seq)).unwrap();
    }
    assert_ne!(
        sleeper_word(&bus, "t") & LIGHT,
        0,
        "quiet publisher is light"
    );

    let mut rx = b
        .topic("t")
        .start_at(StartAt::Next)
        .wait(WaitStrategy::Block)
        // Long: the one sleep ends by timeout only if the wakeup is lost.
        .liveness_check_interval(Duration::from_secs(30))
        .subscriber::<Tick>()
        .unwrap();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        tid_tx.send(common::thread_id()).unwrap();
        let tick = rx.recv().unwrap();
        (tick.seq, rx.stats().sleeps)
    });
    let tid = tid_rx.recv().unwrap();
    // Publish once the reader sleeps: counted in (it does that first, then
    // re-checks the ring, which would find a message sent now) and blocked
    // on the futex.
    assert!(common::eventually(Duration::from_secs(10), || {
        sleeper_word(&bus, "t") & ((1 << 22) - 1) != 0 && common::blocked_in_futex(tid)
    }));
    tx.send(&Tick::new(TO_TURN_LIGHT)).unwrap();
    let (seq, sleeps) = reader.join().unwrap();
    assert_eq!((seq, sleeps), (TO_TURN_LIGHT, 1), "woken by the message");
    assert_eq!(
        sleeper_word(&bus, "t") & LIGHT,
        0,
        "a wake call turns it heavy"
    );
}

/// `SHMBUS_MEMBARRIER=0` keeps a publisher heavy however quiet it is.
#[test]
fn shmbus_membarrier_0_keeps_the_publisher_heavy() {
    let bus = TestBus::new("light-off");
    let mut publisher = spawn_role_with_env(
        "publisher",
        &args(&[&bus.name, &"t", &(4 * TO_TURN_LIGHT)]),
        &[("SHMBUS_MEMBARRIER", "0")],
    );
    publisher.expect_line("PUBLISHED");
    assert_eq!(sleeper_word(&bus, "t") & LIGHT, 0);
}

/// Runs a subscriber whose process may not call `membarrier` against a
/// light publisher in this process that publishes in bursts (so the
/// subscriber sleeps between them), and checks it gets every message.
fn forbidden_subscriber_gets_everything(test: &str, lossless: bool) {
    if !common::membarrier_works() {
        common::skip(test, "membarrier(GLOBAL_EXPEDITED) is not available here");
        return;
    }
    const COUNT: u64 = 2000;
    let bus = TestBus::new(if lossless { "light-ll" } else { "light-ow" });
    let b = bus.open();
    let topic = b.topic("t").capacity(4096);
    let topic = if lossless { topic.lossless(4) } else { topic };
    let mut tx = topic.publisher::<Tick>().unwrap();
    for seq in 0..TO_TURN_LIGHT {
        tx.send(&Tick::new(seq)).unwrap();
    }
    assert_ne!(
        sleeper_word(&bus, "t") & LIGHT,
        0,
        "light before the reader"
    );

    let lossless_arg = if lossless { "1" } else { "0" };
    let mut reader = spawn_role(
        "forbidden-subscriber",
        &args(&[&bus.name, &"t", &COUNT, &lossless_arg]),
    );
    // Attaching to a lossless topic waits for the publisher to turn heavy,
    // which it does at its next message: keep publishing until attached.
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seq = TO_TURN_LIGHT;
            while !stop.load(Ordering::Relaxed) {
                tx.send(&Tick::new(seq)).unwrap();
                seq += 1;
                if seq % 10 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        })
    };
    let first = reader.expect_line("STATUS ");
    if first == "NO-SECCOMP" {
        stop.store(true, Ordering::Relaxed);
        feeder.join().unwrap();
        common::skip(test, "cannot install a seccomp filter here");
        return;
    }
    assert_eq!(first, "SUBSCRIBED");
    let done = reader.expect_line("GOT");
    stop.store(true, Ordering::Relaxed);
    feeder.join().unwrap();
    assert!(done.starts_with(&format!("{COUNT} sleeps")), "{done}");
    let word = sleeper_word(&bus, "t");
    assert_ne!(word & REQUEST, 0, "the reader asked for a heavy publisher");
    assert_eq!(word & LIGHT, 0, "and the publisher turned heavy");
}

#[test]
fn a_subscriber_that_may_not_call_membarrier_misses_nothing() {
    forbidden_subscriber_gets_everything(
        "a_subscriber_that_may_not_call_membarrier_misses_nothing",
        false,
    );
}

#[test]
fn a_lossless_subscriber_that_may_not_call_membarrier_attaches_and_misses_nothing() {
    forbidden_subscriber_gets_everything(
        "a_lossless_subscriber_that_may_not_call_membarrier_attaches_and_misses_nothing",
        true,
    );
}

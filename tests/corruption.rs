//! Everything read from a segment is untrusted: these tests corrupt header,
//! directory and ring fields of a real segment and check that openers and
//! readers get an error naming the problem, never a panic or a crash.

mod common;

use std::os::unix::fs::FileExt;

use common::{TestBus, Tick};
use shmbus::segment::layout::{entry_config_offset, entry_state_offset, CTRL_OFFSET};
use shmbus::{Bus, Error, StartAt, TryRecvError};

const CAPACITY: u32 = 16;
/// Slot stride of a 64-byte message: 16 bytes of stamp and length, the
/// whole rounded up to cache lines (`ring::packed_stride_words`).
const STRIDE: u64 = 128;
const RING_CTRL: u64 = 192;

/// A bus with topic "t" holding messages 0..5, all handles dropped.
fn prepared(tag: &str) -> TestBus {
    let bus = TestBus::new(tag);
    let b = bus.open();
    let mut tx = b.topic("t").capacity(CAPACITY).publisher::<Tick>().unwrap();
    for seq in 0..5 {
        tx.send(&Tick::new(seq)).unwrap();
    }
    bus
}

fn poke(bus: &TestBus, offset: u64, bytes: &[u8]) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(bus.path())
        .unwrap();
    file.write_all_at(bytes, offset).unwrap();
}

fn peek_u64(bus: &TestBus, offset: u64) -> u64 {
    let file = std::fs::File::open(bus.path()).unwrap();
    let mut buf = [0u8; 8];
    file.read_exact_at(&mut buf, offset).unwrap();
    u64::from_ne_bytes(buf)
}

/// Index of topic `name`'s directory entry.
fn entry_index(bus: &TestBus, name: &str) -> usize {
    common::topic_entry_index(&bus.path(), name)
}

/// Offset of topic "t"'s directory entry config.
fn config_of_t(bus: &TestBus) -> u64 {
    entry_config_offset(entry_index(bus, "t"))
}

fn region_of_t(bus: &TestBus) -> u64 {
    peek_u64(bus, config_of_t(bus) + 160)
}

#[test]
fn corrupt_header_fields_are_refused_on_open() {
    let cases: &[(&str, u64, &[u8])] = &[
        ("magic", 0, b"NOTSHMBU"),
        ("header size", 12, &7u32.to_ne_bytes()),
        ("segment size", 16, &(1u64 << 40).to_ne_bytes()),
        ("directory offset", 24, &4096u64.to_ne_bytes()),
        ("directory entries zero", 32, &0u32.to_ne_bytes()),
        ("directory entries huge", 32, &u32::MAX.to_ne_bytes()),
        ("entry size", 36, &1u32.to_ne_bytes()),
        ("arena offset", 40, &u64::MAX.to_ne_bytes()),
        ("arena size", 48, &(u64::MAX - 8).to_ne_bytes()),
    ];
    for (field, offset, bytes) in cases {
        let bus = prepared("hdr");
        poke(&bus, *offset, bytes);
        match Bus::open(&bus.name) {
            Err(Error::Corrupt { what, .. }) => eprintln!("{field}: {what}"),
            other => panic!("{field}: expected Corrupt, got {other:?}"),
        }
    }
}

#[test]
fn other_layout_version_is_refused_by_name() {
    let bus = prepared("version");
    poke(&bus, 8, &99u32.to_ne_bytes());
    match Bus::open(&bus.name) {
        Err(err @ Error::VersionMismatch { found: 99, .. }) => {
            assert!(err.to_string().contains("same shmbus version"), "{err}")
        }
        other => panic!("expected VersionMismatch, got {other:?}"),
    }
}

#[test]
fn truncated_or_garbage_segments_are_errors() {
    let bus = prepared("short");
    std::fs::OpenOptions::new()
        .write(true)
        .open(bus.path())
        .unwrap()
        .set_len(100)
        .unwrap();
    assert!(matches!(Bus::open(&bus.name), Err(Error::Corrupt { .. })));

    let bus = prepared("half");
    std::fs::OpenOptions::new()
        .write(true)
        .open(bus.path())
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    assert!(matches!(Bus::open(&bus.name), Err(Error::Corrupt { .. })));

    let bus = prepared("garbage");
    poke(&bus, 0, &[0xff; 4096]);
    let result = Bus::open(&bus.name);
    assert!(
        matches!(result, Err(Error::Corrupt { .. })),
        "garbage header opened: {result:?}"
    );
}

#[test]
fn corrupt_topic_entries_are_refused_when_joining_and_listing() {
    let cases: &[(&str, u64, &[u8])] = &[
        ("name length", 64, &200u32.to_ne_bytes()),
        ("kind", 68, &99u32.to_ne_bytes()),
        ("slot size", 72, &u32::MAX.to_ne_bytes()),
        ("capacity not a power of two", 76, &3u32.to_ne_bytes()),
        ("capacity zero", 76, &0u32.to_ne_bytes()),
        ("region past the end", 160, &(1u64 << 40).to_ne_bytes()),
        ("region misaligned", 160, &4097u64.to_ne_bytes()),
        ("region length", 168, &(1u64 << 20).to_ne_bytes()),
    ];
    for (field, offset, bytes) in cases {
        let bus = prepared("entry");
        poke(&bus, config_of_t(&bus) + offset, bytes);
        let b = Bus::open(&bus.name).unwrap();
        match b.subscriber::<Tick>("t") {
            Err(Error::Corrupt { what, .. }) => eprintln!("{field}: {what}"),
            other => panic!("{field}: expected Corrupt, got {other:?}"),
        }
        let listed = b.topics().expect("the directory itself is fine");
        assert!(
            matches!(listed[..], [Err(Error::Corrupt { .. })]),
            "{field}: listing"
        );
    }
}

#[test]
fn topic_entry_claimed_by_a_dead_process_is_taken_over() {
    let bus = TestBus::new("dead-claim");
    let b = bus.open();
    b.subscriber::<u64>("t").unwrap();
    let state = entry_state_offset(entry_index(&bus, "t"));
    // A claim by process-table entry 1000, which no process holds: the
    // entry looks like its creator died half-way.
    let dead = shmbus::ring::Owner::new(1000, 3);
    poke(&bus, state, &dead.token().to_ne_bytes());
    let mut tx = b.publisher::<u64>("t").expect("reclaims the entry");
    tx.send(&1).unwrap();
    assert_eq!(common::topic_infos(&b).len(), 1);
}

#[test]
fn corrupt_message_length_is_an_error_and_reading_goes_on() {
    let bus = prepared("ring-len");
    let region = region_of_t(&bus);
    let slot2 = region + RING_CTRL + 2 * STRIDE;
    poke(&bus, slot2 + 8, &u64::MAX.to_ne_bytes());
    let b = Bus::open(&bus.name).unwrap();
    let mut rx = b
        .topic("t")
        .start_at(StartAt::Oldest)
        .subscriber::<Tick>()
        .unwrap();
    assert_eq!(rx.try_recv(), Ok(Tick::new(0)));
    assert_eq!(rx.try_recv(), Ok(Tick::new(1)));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Corrupt { seq: 2 }));
    assert_eq!(rx.try_recv(), Ok(Tick::new(3)));
    assert_eq!(rx.stats().corrupt, 1);
}

#[test]
fn wild_stamps_and_head_do_not_panic() {
    let bus = prepared("ring-stamp");
    let region = region_of_t(&bus);
    poke(&bus, region + RING_CTRL + STRIDE, &u64::MAX.to_ne_bytes());
    let b = Bus::open(&bus.name).unwrap();
    let mut rx = b
        .topic("t")
        .start_at(StartAt::Oldest)
        .subscriber::<Tick>()
        .unwrap();
    assert_eq!(rx.try_recv(), Ok(Tick::new(0)));
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Lagged(_))));

    poke(&bus, region, &u64::MAX.to_ne_bytes());
    for start in [StartAt::Newest, StartAt::Oldest, StartAt::Next] {
        let mut rx = b.topic("t").start_at(start).subscriber::<Tick>().unwrap();
        for _ in 0..4 {
            let _ = rx.try_recv();
        }
    }
    let mut tx = b.publisher::<Tick>("t").unwrap();
    tx.send(&Tick::new(0)).unwrap();
    let mut rx = b.topic("t").subscriber::<Tick>().unwrap();
    assert!(matches!(
        rx.try_recv(),
        Ok(_) | Err(TryRecvError::Lagged(_) | TryRecvError::Empty)
    ));
    drop(tx);
    let _ = rx.recv_timeout(std::time::Duration::from_millis(100));
}

#[test]
fn corrupt_arena_pointer_fails_topic_creation_cleanly() {
    // Past the arena, and so close to u64::MAX that rounding it up to the
    // region alignment would overflow (a panic in debug builds, and in
    // release a wrapped offset that put a new ring on top of an old one).
    for used in [u64::MAX - 100, u64::MAX, 1 << 40] {
        let bus = prepared("arena-ptr");
        poke(&bus, CTRL_OFFSET as u64 + 16, &used.to_ne_bytes());
        let b = Bus::open(&bus.name).unwrap();
        match b.publisher::<u64>("new") {
            Err(Error::Corrupt { what, .. }) => {
                assert!(what.contains("bump pointer"), "{what}")
            }
            other => panic!("arena pointer {used}: expected Corrupt, got {other:?}"),
        }
        let mut rx = b
            .topic("t")
            .start_at(StartAt::Oldest)
            .subscriber::<Tick>()
            .expect("existing topics still work");
        assert_eq!(rx.try_recv(), Ok(Tick::new(0)));
    }
}

#[test]
fn corrupt_directory_state_words_are_errors_naming_the_entry_not_hangs() {
    // Values no protocol step writes: small nonzero, and a "claim" whose
    // pid part is zero.
    for word in [2u64, 7, 0xffff_ffff, 0x1234] {
        let bus = prepared("state");
        let b = Bus::open(&bus.name).unwrap();
        let index = entry_index(&bus, "t");
        poke(&bus, entry_state_offset(index), &word.to_ne_bytes());
        match b.subscriber::<Tick>("t") {
            Err(Error::Corrupt { what, .. }) => {
                assert!(what.contains(&format!("topic entry {index}")), "{what}")
            }
            other => panic!("state {word:#x}: expected Corrupt, got {other:?}"),
        }
        let listed = b.topics().unwrap();
        assert!(
            matches!(listed[..], [Err(Error::Corrupt { .. })]),
            "state {word:#x}: listing {listed:?}"
        );
    }
}

#[test]
fn listing_goes_on_past_a_corrupt_topic_and_a_corrupt_bus() {
    let good = prepared("list-good");
    let bad = prepared("list-bad");
    {
        let b = good.open();
        b.publisher::<u64>("second").unwrap();
    }
    poke(&bad, config_of_t(&bad) + 68, &99u32.to_ne_bytes());
    let b = good.open();
    poke(&good, config_of_t(&good) + 68, &99u32.to_ne_bytes());
    let listed = b.topics().unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(
        listed.iter().filter(|t| t.is_err()).count(),
        1,
        "one corrupt, one fine: {listed:?}"
    );
    assert!(listed
        .iter()
        .any(|t| t.as_ref().is_ok_and(|t| t.name == "second")));

    // A bus that is not a bus at all, listed beside the others.
    let fake = TestBus::new("list-dir");
    std::fs::create_dir(fake.path()).unwrap();
    let _cleanup = DirGuard(fake.path());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shmbus"))
        .arg("list")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for name in [&good.name, &bad.name, &fake.name] {
        assert!(stdout.contains(name.as_str()), "{name} listed: {stdout}");
    }
    assert!(stdout.contains("1 corrupt"), "{stdout}");
    assert!(stdout.contains("is a directory"), "{stdout}");

    // Asked about one named bus: the good topics are printed, the corrupt
    // one is named, and the exit status says the bus is corrupt.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shmbus"))
        .args(["list", &good.name])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stdout.contains("second") && stdout.contains("corrupt:"),
        "{stdout}"
    );
}

/// Removes a directory standing in for a bus, even if the test fails.
struct DirGuard(String);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_directory_or_fifo_in_place_of_a_bus_is_refused_at_once() {
    let bus = TestBus::new("not-a-bus");
    std::fs::create_dir(bus.path()).unwrap();
    let _cleanup = DirGuard(bus.path());
    // The error names what is there; no wait for a creator (the old code
    // waited out its open timeout, then called it stale).
    match Bus::open(&bus.name) {
        Err(err @ Error::NotASegment { .. }) => {
            assert!(err.to_string().contains("a directory"), "{err}")
        }
        other => panic!("expected NotASegment, got {other:?}"),
    }
    std::fs::remove_dir(bus.path()).unwrap();

    let status = std::process::Command::new("mkfifo")
        .arg(bus.path())
        .status()
        .unwrap();
    assert!(status.success());
    match Bus::open_existing(&bus.name) {
        Err(err @ Error::NotASegment { .. }) => {
            assert!(err.to_string().contains("a FIFO"), "{err}")
        }
        other => panic!("expected NotASegment, got {other:?}"),
    }
    std::fs::remove_file(bus.path()).unwrap();
}

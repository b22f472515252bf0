//! Everything read from a segment is untrusted: these tests corrupt header,
//! directory and ring fields of a real segment and check that openers and
//! readers get an error naming the problem, never a panic or a crash.

mod common;

use std::os::unix::fs::FileExt;

use common::{TestBus, Tick};
use shmbus::segment::layout::{CTRL_OFFSET, DIR_OFFSET, ENTRY_CONFIG_OFFSET, ENTRY_SIZE};
use shmbus::{Bus, Error, StartAt, TryRecvError};

const CAPACITY: u32 = 16;
/// Slot stride of a 64-byte message: 16 bytes of stamp and length, rounded
/// up to whole cache lines.
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

/// Offset of topic "t"'s directory entry.
fn entry_of_t(bus: &TestBus) -> u64 {
    let file = std::fs::File::open(bus.path()).unwrap();
    for i in 0..shmbus::DEFAULT_TOPICS as u64 {
        let entry = DIR_OFFSET as u64 + i * ENTRY_SIZE as u64;
        let mut name = [0u8; 2];
        file.read_exact_at(&mut name, entry + ENTRY_CONFIG_OFFSET as u64)
            .unwrap();
        if &name == b"t\0" {
            return entry;
        }
    }
    panic!("topic t not found");
}

fn region_of_t(bus: &TestBus) -> u64 {
    peek_u64(bus, entry_of_t(bus) + ENTRY_CONFIG_OFFSET as u64 + 160)
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
    let result = Bus::builder(&bus.name)
        .open_timeout(std::time::Duration::from_millis(50))
        .open();
    assert!(result.is_err(), "garbage header opened: {result:?}");
}

#[test]
fn corrupt_topic_entries_are_refused_when_joining_and_listing() {
    let config = ENTRY_CONFIG_OFFSET as u64;
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
        let entry = entry_of_t(&bus);
        poke(&bus, entry + config + offset, bytes);
        let b = Bus::open(&bus.name).unwrap();
        match b.subscriber::<Tick>("t") {
            Err(Error::Corrupt { what, .. }) => eprintln!("{field}: {what}"),
            other => panic!("{field}: expected Corrupt, got {other:?}"),
        }
        assert!(
            matches!(b.topics(), Err(Error::Corrupt { .. })),
            "{field}: listing"
        );
    }
}

#[test]
fn topic_entry_claimed_by_a_dead_process_is_taken_over() {
    let bus = TestBus::new("dead-claim");
    let b = bus.open();
    b.subscriber::<u64>("t").unwrap();
    let entry = entry_of_t(&bus);
    // A claim by pid 0x7fff_fff0, which does not exist: the entry looks like
    // a creator died half-way.
    poke(&bus, entry, &((0x7fff_fff0u64 << 32) | 5).to_ne_bytes());
    let mut tx = b.publisher::<u64>("t").expect("reclaims the entry");
    tx.send(&1).unwrap();
    assert_eq!(b.topics().unwrap().len(), 1);
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
    let bus = prepared("arena-ptr");
    poke(
        &bus,
        CTRL_OFFSET as u64 + 16,
        &(u64::MAX - 100).to_ne_bytes(),
    );
    let b = Bus::open(&bus.name).unwrap();
    assert!(matches!(
        b.publisher::<u64>("new"),
        Err(Error::ArenaFull { .. })
    ));
    b.subscriber::<Tick>("t")
        .expect("existing topics still work");
}

//! Corruption of *live* segments. Everything read from the segment is
//! untrusted: while threads and processes use a topic, these tests overwrite
//! words that they are using (directory state words, process-table entries,
//! leases, gate and subscriber entries, cursors, wake words, queue slot
//! sequences, claim tables, the recovery journal, broadcast heads and slot
//! stamps and lengths), and check that every call returns a value or a
//! documented error: no panic, no hang, no signal, no torn message.
//!
//! - Targeted tests poke one field at a time while threads (each with a bus
//!   mapping of its own, so each is a process of its own in the process
//!   table) use the topic, and assert the documented outcome where there is
//!   one.
//! - `random_corruption_campaign_on_live_processes` runs publishers,
//!   subscribers, producers and consumers as child processes and makes many
//!   thousands of random writes into the segment while they run, in phases
//!   (a fresh bus each phase), then checks that every child exits on its own,
//!   successfully, and that no call ran past its bound. Seed:
//!   `SHMBUS_CORRUPTION_SEED` (printed); length: `SHMBUS_CORRUPTION_SECONDS`
//!   (default 12).
//! - Tests named `bug_*` are minimal reproducers of defects found by these
//!   tests; they fail until the defect is fixed (see each test's comment).

mod common;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{child_role, spawn_role, ChildProc, TestBus, Tick};
use shmbus::ring::owner::{FLAG_CLAIMING, FLAG_EVICTED};
use shmbus::ring::Owner;
use shmbus::segment::layout::{
    entry_config_offset, entry_state_offset, proc_offset, EntryConfig, KIND_BROADCAST, KIND_QUEUE,
    PROC_ENTRY_SIZE,
};
use shmbus::segment::region::{RegionLayout, Shape};
use shmbus::{
    Bus, Error, PopTimeoutError, PushError, PushTimeoutError, RecvError, RecvRefError,
    RecvTimeoutError, SendError, SendTimeoutError, StartAt, TopicBuilder, TryPopError,
    TryPushError, TryRecvError, TrySendError, WaitStrategy,
};
use zerocopy::FromBytes;

/// A push with a timeout that timed out is, for these trials, a full queue.
fn push_timeout_as_try<T>(err: PushTimeoutError<T>) -> TryPushError<T> {
    match err {
        PushTimeoutError::Timeout(v) => TryPushError::Full(v),
        PushTimeoutError::Disconnected(v) => TryPushError::Disconnected(v),
        PushTimeoutError::Detached(v) => TryPushError::Detached(v),
        PushTimeoutError::Corrupt { pos, value } => TryPushError::Corrupt { pos, value },
        PushTimeoutError::TooLarge { len, max } => TryPushError::TooLarge { len, max },
        other => panic!("undocumented PushTimeoutError {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// The segment file, seen from outside: reading and poking words.
// ---------------------------------------------------------------------------

/// The segment file of a bus, opened for reading and writing, with the
/// header fields it needs read once (before any corruption).
struct Shm {
    file: std::fs::File,
    len: u64,
    dir_entries: u32,
    proc_entries: u32,
}

impl Shm {
    fn open(bus: &TestBus) -> Shm {
        Shm::at(&bus.path())
    }

    fn at(path: &str) -> Shm {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let len = file.metadata().unwrap().len();
        let mut shm = Shm {
            file,
            len,
            dir_entries: 0,
            proc_entries: 0,
        };
        shm.dir_entries = shm.r32(32);
        shm.proc_entries = shm.r32(56);
        shm
    }

    fn r64(&self, offset: u64) -> u64 {
        let mut b = [0u8; 8];
        self.file.read_exact_at(&mut b, offset).unwrap();
        u64::from_ne_bytes(b)
    }

    fn r32(&self, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        self.file.read_exact_at(&mut b, offset).unwrap();
        u32::from_ne_bytes(b)
    }

    fn write(&self, offset: u64, bytes: &[u8]) {
        // Never past the end: that would grow the file under the mappings.
        assert!(offset + bytes.len() as u64 <= self.len, "poke past the end");
        self.file.write_all_at(bytes, offset).unwrap();
    }

    fn w64(&self, offset: u64, value: u64) {
        self.write(offset, &value.to_ne_bytes());
    }

    fn w32(&self, offset: u64, value: u32) {
        self.write(offset, &value.to_ne_bytes());
    }

    /// Offset of the process-table entry (its state word) that `owner` names.
    fn proc_state(&self, owner: Owner) -> u64 {
        proc_offset(self.dir_entries) + u64::from(owner.index()) * PROC_ENTRY_SIZE as u64
    }

    fn arena_offset(&self) -> u64 {
        self.r64(40)
    }

    /// Every ready directory entry named `name` whose config describes a
    /// region that fits the file.
    fn find_all(&self, name: &str) -> Vec<Loc> {
        (0..self.dir_entries as usize)
            .filter_map(|index| self.loc_at(index))
            .filter(|(n, _)| n == name)
            .map(|(_, loc)| loc)
            .collect()
    }

    /// The topic at directory entry `index`, if it is ready and sane.
    fn loc_at(&self, index: usize) -> Option<(String, Loc)> {
        if self.r64(entry_state_offset(index)) != 1 {
            return None;
        }
        let mut buf = [0u8; core::mem::size_of::<EntryConfig>()];
        self.file
            .read_exact_at(&mut buf, entry_config_offset(index))
            .ok()?;
        let config = EntryConfig::read_from_bytes(&buf[..]).ok()?;
        let name = shmbus::segment::directory::entry_name(&config)?.to_owned();
        let layout = Shape::of(&config).layout()?;
        let capacity = u64::from(config.capacity);
        let fits = config.region_offset.checked_add(layout.len)? <= self.len
            && layout.len == config.region_len
            && capacity.is_power_of_two();
        fits.then(|| {
            (
                name,
                Loc {
                    index,
                    region: config.region_offset,
                    lay: layout,
                    capacity,
                    stride: match config.kind {
                        KIND_QUEUE => shmbus::ring::queue::stride_words(config.slot_size as usize),
                        _ => shmbus::ring::broadcast::stride_words(config.slot_size as usize),
                    } as u64
                        * 8,
                    kind: config.kind,
                    lossless: Shape::of(&config).lossless(),
                    writers: config.max_writers,
                    readers: config.max_readers,
                },
            )
        })
    }

    fn topic(&self, name: &str) -> Loc {
        *self
            .find_all(name)
            .first()
            .unwrap_or_else(|| panic!("topic {name} not found"))
    }

    /// Tokens of the live entries of the process table.
    fn live_tokens(&self) -> Vec<Owner> {
        let table = proc_offset(self.dir_entries);
        (0..self.proc_entries)
            .filter_map(|i| {
                let state = self.r64(table + u64::from(i) * PROC_ENTRY_SIZE as u64);
                (state & 0xffff_ffff == 1).then(|| Owner::new(i, (state >> 32) as u32))
            })
            .collect()
    }
}

/// Where a topic's words are in the segment file.
#[derive(Debug, Clone, Copy)]
struct Loc {
    index: usize,
    region: u64,
    lay: RegionLayout,
    capacity: u64,
    stride: u64,
    kind: u32,
    lossless: bool,
    writers: u32,
    readers: u32,
}

/// Offsets in the topic's region, after `src/ring/broadcast.rs`,
/// `src/ring/gate.rs` and `src/ring/queue.rs`.
impl Loc {
    fn slot(&self, seq: u64) -> u64 {
        self.region + self.lay.slots + (seq & (self.capacity - 1)) * self.stride
    }
    fn state(&self) -> u64 {
        entry_state_offset(self.index)
    }
    // Broadcast control block.
    fn head(&self) -> u64 {
        self.region
    }
    fn lease(&self) -> u64 {
        self.region + 64
    }
    fn had_publisher(&self) -> u64 {
        self.region + 72
    }
    /// Wake words: futex u32 at +0, sleepers u64 at +8.
    fn wake(&self) -> u64 {
        self.region + 128
    }
    // Lossless gate.
    fn epoch(&self) -> u64 {
        self.region + self.lay.table_a
    }
    fn evictions(&self) -> u64 {
        self.region + self.lay.table_a + 8
    }
    fn space(&self) -> u64 {
        self.region + self.lay.table_a + 64
    }
    /// Subscriber entry `i`: owner at +0, cursor at +8.
    fn sub(&self, i: u32) -> u64 {
        self.region + self.lay.table_b + u64::from(i) * SUB_STRIDE
    }
    // Work queue control block.
    fn tail(&self) -> u64 {
        self.region
    }
    fn qhead(&self) -> u64 {
        self.region + 64
    }
    fn not_empty(&self) -> u64 {
        self.region + 128
    }
    fn not_full(&self) -> u64 {
        self.region + 192
    }
    fn lost_in_push(&self) -> u64 {
        self.region + 256
    }
    fn lost_in_consume(&self) -> u64 {
        self.region + 264
    }
    fn had_producer(&self) -> u64 {
        self.region + 272
    }
    fn journal(&self) -> u64 {
        self.region + 280
    }
    fn journal_pos(&self) -> u64 {
        self.region + 288
    }
    /// Producer claim entry `i`: owner at +0, intent at +8.
    fn producer(&self, i: u32) -> u64 {
        self.region + self.lay.table_a + u64::from(i) * 64
    }
    /// Consumer claim entry `i`: owner at +0, intent at +8.
    fn consumer(&self, i: u32) -> u64 {
        self.region + self.lay.table_b + u64::from(i) * 64
    }
    /// The stored form of a queue slot's sequence `seq` for position `pos`
    /// (stored minus the slot index, tombstone bit on top).
    fn qenc(&self, pos: u64, seq: u64) -> u64 {
        ((seq & !TOMB).wrapping_sub(pos & (self.capacity - 1)) & !TOMB) | (seq & TOMB)
    }
}

/// A lossless subscriber entry: its owner word on one cache line, its
/// cursor on the next (`ring::gate::SubscriberEntry`).
const SUB_STRIDE: u64 = 128;
const SUB_CURSOR: u64 = 64;

const TOMB: u64 = 1 << 63;
const NO_INTENT: u64 = u64::MAX;

/// Broadcast slot stamps (see `src/ring/broadcast.rs`).
fn complete(seq: u64) -> u64 {
    seq.wrapping_mul(2).wrapping_add(2)
}
fn writing(seq: u64) -> u64 {
    seq.wrapping_mul(2).wrapping_add(1)
}

// ---------------------------------------------------------------------------
// Worker threads: each uses a topic through a bus mapping of its own, records
// what every call returned and how long it took, and can say what it is doing
// if it hangs.
// ---------------------------------------------------------------------------

/// What one worker saw.
#[derive(Debug, Default)]
struct Seen {
    calls: u64,
    ok: u64,
    /// Messages received that fail `Tick::is_whole` (torn or garbage).
    not_whole: u64,
    reopened: u64,
    errors: BTreeMap<String, u64>,
    slowest: Duration,
    slowest_op: &'static str,
    doing: Arc<Mutex<&'static str>>,
    /// Successful calls, readable while the worker runs.
    progress: Arc<AtomicU64>,
}

impl Seen {
    /// Runs one call, timing it and naming it for the hang report.
    fn call<R>(&mut self, op: &'static str, f: impl FnOnce() -> R) -> R {
        *self.doing.lock().unwrap_or_else(|p| p.into_inner()) = op;
        let started = Instant::now();
        let result = f();
        let took = started.elapsed();
        *self.doing.lock().unwrap_or_else(|p| p.into_inner()) = "between calls";
        self.calls += 1;
        if took > self.slowest {
            self.slowest = took;
            self.slowest_op = op;
        }
        result
    }

    fn ok(&mut self) {
        self.ok += 1;
        self.progress.fetch_add(1, Ordering::Relaxed);
    }

    fn tick(&mut self, tick: &Tick) {
        self.ok();
        if !tick.is_whole() {
            self.not_whole += 1;
        }
    }

    /// Counts an error by its variant name.
    fn error(&mut self, err: &impl Debug) {
        let text = format!("{err:?}");
        let variant = text
            .split(|c: char| !c.is_alphanumeric())
            .find(|w| !w.is_empty() && w != &"Recv")
            .unwrap_or("?")
            .to_owned();
        *self.errors.entry(variant).or_default() += 1;
    }

    fn errors(&self, variant: &str) -> u64 {
        self.errors.get(variant).copied().unwrap_or(0)
    }
}

struct Worker {
    name: String,
    doing: Arc<Mutex<&'static str>>,
    progress: Arc<AtomicU64>,
    handle: JoinHandle<Seen>,
}

/// Longest a call with a 10 to 20 ms timeout (or none) may take, with room
/// for a loaded 2-CPU machine; topic opens wait up to 2 s for a creator.
const CALL_BOUND: Duration = Duration::from_secs(3);
const OPEN_BOUND: Duration = Duration::from_secs(6);

fn worker(
    name: &str,
    stop: &Arc<AtomicBool>,
    body: impl FnOnce(&AtomicBool, &mut Seen) + Send + 'static,
) -> Worker {
    let doing = Arc::new(Mutex::new("starting"));
    let progress = Arc::new(AtomicU64::new(0));
    let mut seen = Seen {
        doing: Arc::clone(&doing),
        progress: Arc::clone(&progress),
        ..Seen::default()
    };
    let stop = Arc::clone(stop);
    let handle = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            body(&stop, &mut seen);
            seen
        })
        .unwrap();
    Worker {
        name: name.to_owned(),
        doing,
        progress,
        handle,
    }
}

/// Waits for every worker (in order) to finish within `limit`; fails naming
/// a worker that hangs or panicked, and any call that ran past its bound.
fn join_workers(workers: Vec<Worker>, limit: Duration) -> BTreeMap<String, Seen> {
    let deadline = Instant::now() + limit;
    let mut all = BTreeMap::new();
    for w in workers {
        while !w.handle.is_finished() {
            assert!(
                Instant::now() < deadline,
                "worker {} hung: still in {:?} {limit:?} after it was told to stop",
                w.name,
                *w.doing.lock().unwrap_or_else(|p| p.into_inner())
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let seen = match w.handle.join() {
            Ok(seen) => seen,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                panic!("worker {} panicked: {what}", w.name)
            }
        };
        let bound = if seen.slowest_op.starts_with("open") {
            OPEN_BOUND
        } else {
            CALL_BOUND
        };
        assert!(
            seen.slowest_op == "recv_ref" || seen.slowest < bound,
            "worker {}: a call to {} took {:?}",
            w.name,
            seen.slowest_op,
            seen.slowest
        );
        eprintln!(
            "  {:<14} calls {:>7} ok {:>7} reopened {:>3} slowest {:>5} ms ({}) errors {:?}",
            w.name,
            seen.calls,
            seen.ok,
            seen.reopened,
            seen.slowest.as_millis(),
            seen.slowest_op,
            seen.errors
        );
        all.insert(w.name, seen);
    }
    all
}

fn progress_of(workers: &[Worker]) -> Vec<u64> {
    workers
        .iter()
        .map(|w| w.progress.load(Ordering::Relaxed))
        .collect()
}

/// Waits until every worker whose name is in `names` made progress beyond
/// `before`, at most `limit`. Returns the names of those that did not.
fn stalled(workers: &[Worker], names: &[&str], before: &[u64], limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let now = progress_of(workers);
        let stuck: Vec<String> = workers
            .iter()
            .zip(before.iter().zip(&now))
            .filter(|(w, (b, n))| names.contains(&w.name.as_str()) && n <= b)
            .map(|(w, _)| w.name.clone())
            .collect();
        if stuck.is_empty() || Instant::now() >= deadline {
            return stuck;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    assert!(common::eventually(limit, &mut cond), "timed out: {what}");
}

/// The token of the process that holds `bus`'s mapping: made visible by
/// publishing on a throwaway topic and reading its lease word.
fn token_of_mapping(bus: &Bus, shm: &Shm, probe_topic: &str) -> Owner {
    let tx = bus.publisher::<u64>(probe_topic).unwrap();
    let owner = Owner::from_token(shm.r64(shm.topic(probe_topic).lease())).unwrap();
    drop(tx);
    owner
}

const MS10: Duration = Duration::from_millis(10);

/// A value to write, from the current one.
type Rewrite = fn(u64) -> u64;
/// A value to write into a queue slot's sequence word, from the topic, the
/// position and the current word.
type SlotRewrite = fn(&Loc, u64, u64) -> u64;

// ---------------------------------------------------------------------------
// Reproducers of defects (fail until fixed).
// ---------------------------------------------------------------------------

/// `Bus::topics` adds two sleeper counts read from the segment as `u32`
/// (src/bus.rs, `info.sleeping = ctrl.not_empty().waiters() +
/// ctrl.not_full().waiters()`): two large counts overflow, a panic in debug
/// builds (and a wrong count in release). `shmbus list` calls it.
#[test]
fn listing_a_queue_with_huge_sleeper_counts_does_not_panic() {
    let bus = TestBus::new("bug-sleepers");
    let b = bus.open();
    drop(b.topic("q").consumer::<u64>().unwrap());
    let shm = Shm::open(&bus);
    let q = shm.topic("q");
    shm.w64(q.not_empty() + 8, 0xffff_ffff);
    shm.w64(q.not_full() + 8, 1);
    let listed = std::panic::catch_unwind(|| b.topics().map(|t| t.len()));
    assert!(
        listed.is_ok(),
        "Bus::topics panicked on sleeper counts 0xffffffff + 1"
    );
}

/// The lag count of a subscriber is summed with `+=` (src/broadcast.rs,
/// `Subscriber::poll`, `self.stats.lagged += lost`), and `lost` comes from a
/// head read from the segment: a head of u64::MAX plus stamps that say
/// "overwritten" make it overflow after the cursor wraps: a panic in debug
/// builds. Beyond the panic, a garbage head moves the cursor to where the
/// publisher never writes (see `bug_subscriber_started_on_a_garbage_head_
/// never_receives_again`).
#[test]
fn garbage_head_and_stamps_do_not_overflow_the_lag_counter() {
    let bus = TestBus::new("bug-lagged");
    let b = bus.open();
    let mut tx = b.topic("t").capacity(16).publisher::<Tick>().unwrap();
    let mut rx = b
        .topic("t")
        .start_at(StartAt::Next)
        .subscriber::<Tick>()
        .unwrap();
    for seq in 0..5 {
        tx.send(&Tick::new(seq)).unwrap();
        rx.try_recv().unwrap();
    }
    let shm = Shm::open(&bus);
    let t = shm.topic("t");
    shm.w64(t.head(), u64::MAX);
    for slot in 0..16 {
        shm.w64(t.slot(slot), u64::MAX);
    }
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        (0..20).map(|_| rx.try_recv()).collect::<Vec<_>>()
    }));
    assert!(
        outcome.is_ok(),
        "try_recv panicked (lag counter overflow) after head := u64::MAX and every stamp := u64::MAX"
    );
}

/// A subscriber that starts while `head` holds garbage sets its cursor from
/// it (`StartAt::cursor`, src/ring/broadcast.rs) and then waits for a message
/// number the publisher will not reach for ages: it never receives again,
/// and is never told (every receive is `Empty`/`Timeout`). The same happens
/// to a subscriber lapped while `head` is garbage (`lag_target`). A cursor
/// more than one past `head` can only come from such garbage: the
/// subscriber could resync (and count it) instead of waiting forever.
#[test]
fn a_subscriber_started_on_a_garbage_head_receives_again() {
    let bus = TestBus::new("bug-head");
    let b = bus.open();
    let mut tx = b.topic("t").capacity(16).publisher::<Tick>().unwrap();
    for seq in 0..5 {
        tx.send(&Tick::new(seq)).unwrap();
    }
    let shm = Shm::open(&bus);
    let t = shm.topic("t");
    shm.w64(t.head(), 1 << 40);
    let reader = Bus::open(&bus.name).unwrap();
    let mut rx = reader.topic("t").subscriber::<Tick>().unwrap();
    // The publisher's next message repairs head; the topic is healthy again.
    let mut received = false;
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline && !received {
        tx.send(&Tick::new(tx.next_seq())).unwrap();
        received = rx.recv_timeout(MS10).is_ok();
    }
    assert!(
        received,
        "subscriber opened while head was 2^40 never received (cursor {}, head now {})",
        rx.next_seq(),
        shm.r64(t.head())
    );
}

/// A lossless subscriber publishes its cursor only when it moves it. Lower
/// the cursor of a subscriber that has read everything, and the publisher
/// waits for it (it gates the ring) while the subscriber waits for the next
/// message: neither ever moves again. Every `send_timeout` is `Full`, every
/// `recv_timeout` a `Timeout`, forever; `send` never returns. One 8-byte
/// write wedges the topic. (Fix: the subscriber re-stores its cursor when it
/// wakes from a sleep that timed out, or the publisher treats a cursor
/// `capacity` or more behind `next` (impossible in a healthy ring) as
/// corrupt.)
#[test]
fn a_lowered_cursor_of_a_caught_up_lossless_subscriber_does_not_wedge_the_topic() {
    let bus = TestBus::new("bug-cursor-low");
    let bp = bus.open();
    let bs = Bus::open(&bus.name).unwrap();
    let mut tx = bp
        .topic("t")
        .capacity(8)
        .lossless(2)
        .liveness_check_interval(MS10)
        .publisher::<Tick>()
        .unwrap();
    let mut rx = bs
        .topic("t")
        .start_at(StartAt::Next)
        .liveness_check_interval(MS10)
        .subscriber::<Tick>()
        .unwrap();
    // The publisher fills the ring (its cached limit is now 8, from a
    // cursor of 0), then the subscriber reads everything: it is caught up,
    // and the publisher's next send rescans the table.
    for seq in 0..8 {
        tx.try_send(&Tick::new(seq)).unwrap();
    }
    for seq in 0..8 {
        assert_eq!(rx.recv_timeout(MS10).unwrap(), Tick::new(seq));
    }
    let shm = Shm::open(&bus);
    let t = shm.topic("t");
    let entry = (0..2).map(|i| t.sub(i)).find(|&e| shm.r64(e) != 0).unwrap();
    assert_eq!(shm.r64(entry + SUB_CURSOR), 8, "the subscriber's cursor");
    shm.w64(entry + SUB_CURSOR, 0);
    let mut moved = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && moved == 0 {
        if tx.send_timeout(&Tick::new(tx.next_seq()), MS10).is_ok() {
            moved += 1;
        }
        if rx.recv_timeout(MS10).is_ok() {
            moved += 1;
        }
    }
    assert!(
        moved > 0,
        "after its live subscriber's cursor was lowered from 8 to 0, the lossless topic \
         moved nothing for 2 s (publisher Full, subscriber Timeout)"
    );
}

/// `recv_ref` lends a message in place, safe only while the subscriber's
/// cursor (in the segment) holds the publisher back. Raise that cursor while
/// the message is lent, and the publisher overwrites the lent slot: the
/// borrowed value changes under the reader (a torn in-place read, and a data
/// race). (Fix: the publisher could refuse a cursor ahead of its own `next`,
/// which no healthy subscriber has, treating it as that subscriber's last
/// sane value or as `next - capacity`.)
#[test]
fn a_cursor_raised_past_everything_published_does_not_release_a_lent_message() {
    let bus = TestBus::new("bug-cursor-high");
    let bp = bus.open();
    let bs = Bus::open(&bus.name).unwrap();
    let mut tx = bp
        .topic("t")
        .capacity(4)
        .lossless(2)
        .publisher::<Tick>()
        .unwrap();
    let mut rx = bs
        .topic("t")
        .start_at(StartAt::Next)
        .subscriber::<Tick>()
        .unwrap();
    for seq in 0..4 {
        tx.try_send(&Tick::new(seq)).unwrap();
    }
    assert_eq!(tx.try_send(&Tick::new(4)), Err(TrySendError::Full));
    let shm = Shm::open(&bus);
    let t = shm.topic("t");
    let entry = (0..2).map(|i| t.sub(i)).find(|&e| shm.r64(e) != 0).unwrap();
    let lent = rx.recv_ref().unwrap();
    let before = *lent;
    assert_eq!(before, Tick::new(0));
    shm.w64(entry + SUB_CURSOR, 1000);
    let overwrote = (4..8)
        .filter(|&seq| tx.try_send(&Tick::new(seq)).is_ok())
        .count();
    let after = *lent;
    drop(lent);
    assert_eq!(
        after, before,
        "the message lent by recv_ref changed under the borrow ({overwrote} sends went through \
         after its cursor was raised to 1000)"
    );
}

/// The publisher caches the limit the slowest cursor allows
/// (`GateCache::has_space`, src/ring/gate.rs) and rescans only when `next`
/// reaches it or the epoch changes. A cursor of 2^64 - capacity or more
/// (u64::MAX, say) makes that limit saturate at u64::MAX, so the publisher
/// never looks at the table again: lossless gating is off for good, even
/// after the cursor is put back, until a subscriber attaches. (Fix: clamp
/// each cursor to the publisher's `next`, or the cached limit to
/// `next + capacity`.)
#[test]
fn a_huge_cursor_never_turns_lossless_gating_off() {
    let bus = TestBus::new("bug-cursor-max");
    let bp = bus.open();
    let bs = Bus::open(&bus.name).unwrap();
    let mut tx = bp
        .topic("t")
        .capacity(4)
        .lossless(2)
        .publisher::<Tick>()
        .unwrap();
    let mut rx = bs
        .topic("t")
        .start_at(StartAt::Next)
        .subscriber::<Tick>()
        .unwrap();
    let shm = Shm::open(&bus);
    let t = shm.topic("t");
    let entry = (0..2).map(|i| t.sub(i)).find(|&e| shm.r64(e) != 0).unwrap();
    tx.try_send(&Tick::new(0)).unwrap();
    shm.w64(entry + SUB_CURSOR, u64::MAX);
    // Let the publisher read the garbage: a send past its cached limit
    // rescans (and is refused: a cursor ahead of everything published
    // holds the publisher back).
    for seq in 1..4 {
        tx.try_send(&Tick::new(seq)).unwrap();
    }
    let _ = tx.try_send(&Tick::new(4));
    // Put the subscriber's true cursor back: it has read nothing.
    shm.w64(entry + SUB_CURSOR, 0);
    let overwritten = (5..100)
        .filter(|&seq| tx.try_send(&Tick::new(seq)).is_ok())
        .count();
    let got = rx.try_recv();
    assert_eq!(
        overwritten, 0,
        "with its only subscriber's cursor back at 0, the lossless publisher overwrote \
         {overwritten} more unread messages; the subscriber gets {got:?}"
    );
}

/// A subscriber's own entry word with the claiming flag (a state only its
/// claim passes through) is never freed while its process lives: the
/// subscriber is told `Evicted`, `Gate::detach` (src/ring/gate.rs) frees only
/// its plain or evicted token, and `Gate::claim` skips entries of live
/// owners and its own. With `lossless(1)`, one write locks every subscriber
/// out for as long as that process runs. (Fix: `detach` also frees
/// `me.flagged(FLAG_CLAIMING)` at its own index, which no claim of the same
/// process can be using: claims skip entries that hold its token.)
#[test]
fn a_claiming_flag_on_a_live_subscribers_entry_is_freed_when_it_detaches() {
    let bus = TestBus::new("bug-claiming");
    let b = bus.open();
    let mut rx = b.topic("t").lossless(1).subscriber::<u64>().unwrap();
    let shm = Shm::open(&bus);
    let t = shm.topic("t");
    let owner = Owner::from_token(shm.r64(t.sub(0))).unwrap();
    shm.w64(t.sub(0), owner.flagged(FLAG_CLAIMING));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Evicted));
    drop(rx);
    let again = b.topic("t").subscriber::<u64>();
    let other = Bus::open(&bus.name).unwrap();
    let elsewhere = other.topic("t").subscriber::<u64>();
    assert!(
        again.is_ok() || elsewhere.is_ok(),
        "after an evicted subscriber dropped, its entry is still taken: {:?} / {:?} (word {:#x})",
        again.err(),
        elsewhere.err(),
        shm.r64(t.sub(0))
    );
}

/// A topic config is checked to name a region inside the arena
/// (`check_entry`, src/segment/directory.rs), but not inside the part of
/// the arena that was allocated, and only allocated regions are reserved in
/// /dev/shm (`fallocate` at creation). A config whose region offset is moved
/// into never-reserved arena space passes the check; on a full /dev/shm the
/// first access to that region is a SIGBUS, the very thing the reservation
/// exists to prevent. (Fix: also require `region_offset + region_len <=
/// arena_offset + arena_used`, the bump pointer being checked against the
/// arena size first.) Needs a private mount namespace, like
/// `tests/nospace.rs`; skipped (and says so) where there is none.
#[test]
fn a_region_moved_into_unreserved_arena_space_is_corrupt_not_a_sigbus() {
    let test = "bug_region_moved_into_unreserved_arena_space_is_a_sigbus_on_a_full_dev_shm";
    let exe = std::env::current_exe().unwrap();
    let script = "mount -t tmpfs -o size=512k tmpfs /dev/shm && exec \"$0\" child_role_entry \
                  --exact --ignored --nocapture --test-threads=1 -q";
    let out = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", script])
        .arg(&exe)
        .env(common::ROLE_ENV, "unreserved-region")
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) => return common::skip_or_fail(test, &format!("cannot run unshare ({e})")),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stdout.contains("POKED")
        && (stderr.contains("Operation not permitted") || stderr.contains("mount:"))
    {
        return common::skip_or_fail(
            test,
            &format!("no private mount namespace ({})", stderr.trim()),
        );
    }
    use std::os::unix::process::ExitStatusExt;
    assert!(
        out.status.success(),
        "the opener died ({:?}, signal {:?}; SIGBUS is {}) after the region offset was moved \
         into unreserved arena space:\n{stdout}\n{stderr}",
        out.status,
        out.status.signal(),
        libc::SIGBUS
    );
    assert!(
        stdout.contains("OPENED Err(Corrupt"),
        "expected Corrupt: {stdout}"
    );
}

/// A live lossless subscriber whose process-table entry is overwritten
/// (marked free) looks dead: the publisher evicts it when it holds the ring
/// back, and then overwrites the message it is reading in place with
/// `recv_ref` (the safety argument of `recv_ref` in src/broadcast.rs is
/// "only a dead process is evicted"). The subscriber learns of the eviction
/// only at its next call. (Fix: `Segment::liveness`, src/segment/procs.rs,
/// answers `Dead` when the state word does not match the token even though
/// the entry's lock is still held; with the lock held and the generation
/// unchanged but marked free, the answer should be `Unknown`.)
#[test]
fn a_live_subscriber_marked_free_in_the_process_table_keeps_its_lent_message() {
    let bus = TestBus::new("bug-proc-evict");
    let bp = bus.open();
    let bs = Bus::open(&bus.name).unwrap();
    let mut tx = bp
        .topic("t")
        .capacity(4)
        .lossless(2)
        .liveness_check_interval(MS10)
        .publisher::<Tick>()
        .unwrap();
    let mut rx = bs
        .topic("t")
        .start_at(StartAt::Next)
        .subscriber::<Tick>()
        .unwrap();
    for seq in 0..4 {
        tx.try_send(&Tick::new(seq)).unwrap();
    }
    let shm = Shm::open(&bus);
    let t = shm.topic("t");
    let owner = (0..2)
        .filter_map(|i| Owner::from_token(shm.r64(t.sub(i))))
        .next()
        .unwrap();
    let lent = rx.recv_ref().unwrap();
    let before = *lent;
    let state = shm.proc_state(owner);
    let live = shm.r64(state);
    shm.w64(state, live & !0xffff_ffff); // free, same generation
    let sent = tx.send_timeout(&Tick::new(4), Duration::from_millis(500));
    let after = *lent;
    drop(lent);
    shm.w64(state, live);
    assert_eq!(
        after,
        before,
        "a live subscriber was evicted (evictions {}, send {sent:?}) and its lent message \
         overwritten",
        tx.evictions()
    );
}

/// A work-queue producer or consumer finishes its claim with a plain store
/// of the slot's sequence (`QueueRing::publish` and `QueueRing::release`,
/// src/ring/queue.rs). If another process recovered the claim meanwhile,
/// because the claimer looked dead (its process-table entry overwritten:
/// `liveness` says Dead), that store lands on a slot the queue has already
/// moved past: the slot holds a sequence for a lap that is over, and no
/// claimer's intent names it, so every later push is `Full` for ever (the
/// queue is wedged). The consumer side is worse: a producer writes the
/// recovered slot while the consumer still copies it (a torn message), and
/// the consumer's release then rolls the slot back. (Fix: finish claims by
/// compare-and-swap from the expected sequence, and report a failed swap as
/// `Corrupt`/`Detached`.) Staged on the ring with a liveness answer of
/// `Dead`, which is what an overwritten process-table entry gives.
#[test]
fn a_queue_claim_finished_after_a_false_recovery_does_not_wedge_the_queue() {
    use shmbus::ring::queue::{
        table, ClaimEntry, PopBlocked, Popped, QueueCtrl, QueueRing, Recovery, Side,
    };
    use shmbus::ring::Liveness;
    let ctrl = QueueCtrl::new();
    let producers: Vec<ClaimEntry> = (0..2).map(|_| ClaimEntry::new()).collect();
    let consumers: Vec<ClaimEntry> = (0..2).map(|_| ClaimEntry::new()).collect();
    let words = shmbus::ring::queue::slots_words(4, 8).unwrap();
    let slots: Vec<shmbus::sync::AtomicU64> = (0..words)
        .map(|_| shmbus::sync::AtomicU64::new(0))
        .collect();
    let q = QueueRing::new(&ctrl, &producers, &consumers, &slots, 4, 8).unwrap();
    let (producer, consumer) = (Owner::new(1, 1), Owner::new(2, 1));
    table::give(&producers[0], producer);
    table::give(&consumers[0], consumer);

    let claim = q.claim_push(&producers[0], 8).unwrap();
    q.write(claim, &7u64.to_ne_bytes());
    assert_eq!(
        q.claim_pop(&consumers[0]),
        Err(PopBlocked::Unpublished { pos: 0 })
    );
    // The producer's process-table entry was overwritten: it looks dead.
    let recovered = q.recover(Side::Push, 0, consumer, |_| Liveness::Dead, |_| true);
    assert_eq!(recovered, Recovery::Recovered);
    let mut out = [0u8; 8];
    assert_eq!(
        q.pop(&consumers[0], &mut out, || {}),
        Ok((0, Popped::Tombstone)),
        "the recovered slot is a tombstone, released"
    );
    assert!(
        q.pop(&consumers[0], &mut out, || {}).is_err(),
        "then nothing"
    );
    // The producer, alive all along, finishes its push.
    q.publish(claim, &producers[0]);

    // The endpoints' way past a stuck slot: recover it; a slot no claimer
    // names, found so twice, is finished as an orphan.
    let mut pushed = 0;
    let mut orphan = None;
    for value in 1..=8u64 {
        for _ in 0..4 {
            match q.push(&producers[0], &value.to_ne_bytes(), || {}) {
                Ok(_) => {
                    pushed += 1;
                    break;
                }
                Err(shmbus::ring::queue::PushBlocked::Unreleased { pos }) => {
                    let outcome = if orphan == Some(pos) {
                        q.recover_orphan(Side::Consume, pos, producer, |_| Liveness::Dead, |_| true)
                    } else {
                        q.recover(Side::Consume, pos, producer, |_| Liveness::Dead, |_| true)
                    };
                    orphan = (outcome == Recovery::Unclaimed).then_some(pos);
                }
                Err(_) => {}
            }
            while q.pop(&consumers[0], &mut out, || {}).is_ok() {}
        }
        while q.pop(&consumers[0], &mut out, || {}).is_ok() {}
    }
    assert_eq!(
        pushed, 8,
        "after the false recovery, only {pushed} of 8 pushes into an empty queue went through"
    );
}

/// The state word of a topic's directory entry, overwritten with 0 (empty)
/// or with the token of a dead process (a creator that died half-way),
/// makes the next opener create the topic again, in a new ring region: it
/// gets a subscriber that never hears the live publisher, and no error.
/// An empty state word with a config that holds a name (entries are never
/// freed, and a creator writes the config only after claiming) can only be
/// corruption: `find_or_create` (src/ring/directory.rs, src/segment/
/// directory.rs) could report it as `Corrupt` instead of re-creating, and a
/// takeover could keep a config that is already complete.
#[test]
fn a_reset_directory_state_word_does_not_split_a_topic_in_use() {
    let mut failures = Vec::new();
    for (what, word) in [
        ("empty (0)", 0u64),
        ("a dead creator's claim", Owner::new(900, 3).token()),
    ] {
        let bus = TestBus::new("bug-dir-split");
        let b = bus.open();
        let mut tx = b.topic("t").capacity(16).publisher::<u64>().unwrap();
        tx.send(&1).unwrap();
        let shm = Shm::open(&bus);
        let t = shm.topic("t");
        shm.w64(t.state(), word);
        let other = Bus::open(&bus.name).unwrap();
        match other.topic("t").start_at(StartAt::Next).subscriber::<u64>() {
            Err(Error::Corrupt { .. }) => {}
            Err(e) => failures.push(format!("{what}: unexpected {e:?}")),
            Ok(mut rx) => {
                tx.send(&2).unwrap();
                let got = rx.recv_timeout(Duration::from_millis(300));
                let regions: Vec<u64> = shm.find_all("t").iter().map(|l| l.region).collect();
                if got != Ok(2) {
                    failures.push(format!(
                        "{what}: a new subscriber opened without error but does not hear the \
                         live publisher ({got:?}); topic regions now {regions:?}, the \
                         publisher's is {}",
                        t.region
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---------------------------------------------------------------------------
// Targeted corruption of live topics.
// ---------------------------------------------------------------------------

/// A lossless publisher worker on `topic`, sending with `send_timeout` and
/// pausing `pause_us` every `pause_every` sends.
fn lossless_publisher(
    bus: &str,
    topic: fn(&Bus) -> TopicBuilder<'_>,
    pause_every: u64,
    pause_us: u64,
    stop: &Arc<AtomicBool>,
) -> Worker {
    let name = bus.to_owned();
    worker("publisher", stop, move |stop, seen| {
        let b = Bus::open(&name).unwrap();
        let mut tx = seen
            .call("open publisher", || topic(&b).publisher::<Tick>())
            .unwrap();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let tick = Tick::new(tx.next_seq());
            match seen.call("send_timeout", || tx.send_timeout(&tick, MS10)) {
                Ok(_) => seen.ok(),
                Err(e) => seen.error(&e),
            }
            n += 1;
            if n % pause_every == 0 {
                std::thread::sleep(Duration::from_micros(pause_us));
            }
        }
    })
}

/// A lossless subscriber worker on `topic` that reads in place with
/// `recv_ref`, subscribing again whenever it is evicted. With `hold`, it
/// keeps each message lent that long and counts one that changed meanwhile
/// as not whole.
fn in_place_subscriber(
    bus: &str,
    topic: fn(&Bus) -> TopicBuilder<'_>,
    hold: Option<Duration>,
    stop: &Arc<AtomicBool>,
) -> Worker {
    let name = bus.to_owned();
    worker("sub-recv_ref", stop, move |stop, seen| {
        let b = Bus::open(&name).unwrap();
        let open = || topic(&b).start_at(StartAt::Next).subscriber::<Tick>();
        let mut rx = Some(seen.call("open subscriber", open).unwrap());
        while !stop.load(Ordering::Relaxed) {
            let Some(sub) = rx.as_mut() else {
                match seen.call("open subscriber", open) {
                    Ok(new) => {
                        rx = Some(new);
                        seen.reopened += 1;
                    }
                    Err(e) => {
                        seen.error(&e);
                        sleep_ms(2);
                    }
                }
                continue;
            };
            // Blocks until a message, an eviction, or the publisher is gone
            // (it drops its publisher when told to stop).
            let got = seen.call("recv_ref", || {
                sub.recv_ref().map(|lent| {
                    let first = *lent;
                    // A reader working in place holds the message a while.
                    match hold {
                        Some(hold) => {
                            std::thread::sleep(hold);
                            (first, *lent)
                        }
                        None => (first, first),
                    }
                })
            });
            match got {
                Ok((first, again)) => {
                    seen.tick(&first);
                    if again != first {
                        seen.not_whole += 1;
                    }
                }
                Err(e) => {
                    seen.error(&e);
                    if e == RecvRefError::Recv(RecvError::Evicted) {
                        rx = None;
                    }
                    sleep_ms(1);
                }
            }
        }
    })
}

/// A publisher worker on overwrite topic `topic` of `bus`: sends as fast as
/// a paced loop allows (8 messages, then 300 µs off). On `LeaseLost` it
/// opens a new publisher.
fn overwrite_publisher(bus: &str, topic: &'static str, stop: &Arc<AtomicBool>) -> Worker {
    let bus = bus.to_owned();
    worker("publisher", stop, move |stop, seen| {
        let b = Bus::open(&bus).unwrap();
        let open = || b.topic(topic).publisher::<Tick>();
        let mut tx = seen.call("open publisher", open).unwrap();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let tick = Tick::new(tx.next_seq());
            match seen.call("send", || tx.send(&tick)) {
                Ok(_) => seen.ok(),
                Err(e) => {
                    seen.error(&e);
                    if e == SendError::LeaseLost {
                        if let Ok(new) = seen.call("open publisher", open) {
                            tx = new;
                            seen.reopened += 1;
                        }
                        sleep_ms(1);
                    }
                }
            }
            n += 1;
            if n % 8 == 0 {
                std::thread::sleep(Duration::from_micros(300));
            }
        }
    })
}

/// A subscriber worker receiving with `recv_timeout(10 ms)`, checking every
/// message is whole; re-subscribes on `Evicted`.
fn timeout_subscriber(
    name: &str,
    bus: &str,
    topic: &'static str,
    wait: WaitStrategy,
    stop: &Arc<AtomicBool>,
) -> Worker {
    let bus = bus.to_owned();
    worker(name, stop, move |stop, seen| {
        let b = Bus::open(&bus).unwrap();
        let open = || {
            b.topic(topic)
                .wait(wait)
                .liveness_check_interval(Duration::from_millis(20))
                .subscriber::<Tick>()
        };
        let mut rx = Some(seen.call("open subscriber", open).unwrap());
        while !stop.load(Ordering::Relaxed) {
            let Some(sub) = rx.as_mut() else {
                // Evicted: dropped, as the error says, and subscribed again.
                match seen.call("open subscriber", open) {
                    Ok(new) => {
                        rx = Some(new);
                        seen.reopened += 1;
                    }
                    Err(e) => {
                        seen.error(&e);
                        sleep_ms(2);
                    }
                }
                continue;
            };
            match seen.call("recv_timeout", || sub.recv_timeout(MS10)) {
                Ok(tick) => seen.tick(&tick),
                Err(e) => {
                    seen.error(&e);
                    match e {
                        RecvTimeoutError::Evicted => rx = None,
                        RecvTimeoutError::Timeout => {}
                        // Lapped (skip and count): a subscriber starved of
                        // CPU on a loaded machine still makes progress.
                        RecvTimeoutError::Lagged(_) => {
                            seen.progress.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => sleep_ms(1),
                    }
                }
            }
        }
    })
}

/// The overwrite ring's `head` and the stamps and lengths of every slot,
/// overwritten with garbage while a publisher publishes and two subscribers
/// (one spinning then sleeping, one sleeping at once) receive. No call
/// hangs or panics; nothing torn is ever received (no payload is touched,
/// and no stamp is forged to "complete" for a message that may be in
/// flight); afterwards the topic serves a new subscriber.
#[test]
fn overwrite_ring_words_corrupted_under_live_traffic() {
    let bus = TestBus::new("hot-ow");
    drop(bus.open().topic("t").capacity(16).subscriber::<Tick>());
    let stop = Arc::new(AtomicBool::new(false));
    let workers = vec![
        overwrite_publisher(&bus.name, "t", &stop),
        timeout_subscriber(
            "sub-adaptive",
            &bus.name,
            "t",
            WaitStrategy::adaptive(),
            &stop,
        ),
        timeout_subscriber("sub-block", &bus.name, "t", WaitStrategy::Block, &stop),
    ];
    let shm = Shm::open(&bus);
    let t = shm.topic("t");
    until(Duration::from_secs(10), "traffic", || {
        shm.r64(t.head()) > 200
    });
    let far = 1u64 << 40;
    let mut pokes = 0;
    for _round in 0..3 {
        let head = shm.r64(t.head());
        for value in [
            u64::MAX,
            0,
            head.wrapping_add(far),
            head.wrapping_sub(3),
            1 << 63,
            head.wrapping_add(t.capacity * 3),
            u64::MAX - 16,
        ] {
            shm.w64(t.head(), value);
            pokes += 1;
            sleep_ms(3);
        }
        for k in 0..t.capacity {
            let head = shm.r64(t.head());
            let seq = head.wrapping_add(k);
            for stamp in [
                0,
                u64::MAX,
                writing(seq),
                complete(seq.wrapping_add(far)),
                complete(seq.wrapping_sub(t.capacity * 4)),
                1 << 63,
                complete(seq) | 1 << 62,
            ] {
                shm.w64(t.slot(seq), stamp);
                pokes += 1;
                std::thread::sleep(Duration::from_micros(500));
            }
            for len in [u64::MAX, 65, 0, 3, 1 << 40, 1 << 63] {
                shm.w64(t.slot(seq) + 8, len);
                pokes += 1;
                std::thread::sleep(Duration::from_micros(500));
            }
        }
    }
    // Fresh subscribers are served once the publisher has rewritten what
    // was poked.
    sleep_ms(100);
    let b = Bus::open(&bus.name).unwrap();
    let mut fresh = b
        .topic("t")
        .start_at(StartAt::Next)
        .subscriber::<Tick>()
        .unwrap();
    let mut got = None;
    let deadline = Instant::now() + Duration::from_secs(2);
    while got.is_none() && Instant::now() < deadline {
        got = fresh.recv_timeout(MS10).ok();
    }
    let got = got.expect("a new subscriber receives after the corruption stopped");
    assert!(got.is_whole());
    stop.store(true, Ordering::Relaxed);
    eprintln!("overwrite ring: {pokes} pokes");
    let seen = join_workers(workers, Duration::from_secs(10));
    for (name, s) in &seen {
        assert_eq!(s.not_whole, 0, "{name} received torn or garbage messages");
    }
    assert!(
        seen["publisher"].errors.is_empty(),
        "{:?}",
        seen["publisher"]
    );
    for sub in ["sub-adaptive", "sub-block"] {
        assert!(seen[sub].ok > 0, "{sub} received nothing");
        assert!(
            seen[sub].errors("Lagged") + seen[sub].errors("Corrupt") > 0,
            "{sub} never noticed the corruption: {:?}",
            seen[sub].errors
        );
    }
}

/// A lossless topic: the gate's epoch, eviction count and wake words, and
/// the owner words of the subscriber entries (live ones included), are
/// overwritten while a publisher sends with `send_timeout`, one subscriber
/// reads in place with `recv_ref` and another copies with `recv_timeout`.
/// A subscriber whose owner word changed gets `Evicted` (documented) and
/// subscribes again; no call hangs or panics; nothing torn is read; and
/// once forged owner words are put back, the topic moves again.
#[test]
fn lossless_gate_and_subscriber_owners_corrupted_under_live_traffic() {
    let bus = TestBus::new("hot-ll");
    fn topic(b: &Bus) -> TopicBuilder<'_> {
        b.topic("t")
            .capacity(16)
            .lossless(8)
            .liveness_check_interval(Duration::from_millis(20))
    }
    drop(topic(&bus.open()).subscriber::<Tick>());
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = lossless_publisher(&bus.name, topic, 8, 300, &stop);
    let in_place = in_place_subscriber(&bus.name, topic, None, &stop);
    let workers = vec![
        publisher,
        in_place,
        timeout_subscriber("sub-copy", &bus.name, "t", WaitStrategy::adaptive(), &stop),
    ];
    let shm = Shm::open(&bus);
    let t = shm.topic("t");
    until(Duration::from_secs(10), "traffic", || {
        shm.r64(t.head()) > 200
    });
    let publisher_token = Owner::from_token(shm.r64(t.lease())).unwrap();
    let mut pokes = 0;
    let mut poke = |offset: u64, value: u64, pause_us: u64| {
        shm.w64(offset, value);
        pokes += 1;
        std::thread::sleep(Duration::from_micros(pause_us));
    };
    for value in [0, u64::MAX, 12345, 1 << 63] {
        poke(t.epoch(), value, 3000);
    }
    poke(t.evictions(), u64::MAX, 1000);
    for value in [u64::MAX, 0xffff_ffff, 1 << 32, 0] {
        poke(t.space() + 8, value, 3000);
    }
    poke(t.space(), 0xdead_beef, 1000);
    // Owner words, live subscribers' included: garbage, flags on the
    // holder's own token, a token naming no live process.
    for value in [0x1234u64, u64::MAX, 1 << 63 | 5] {
        for i in 0..t.readers {
            poke(t.sub(i), value, 2000);
        }
        sleep_ms(20);
    }
    for i in 0..t.readers {
        let word = shm.r64(t.sub(i));
        if let Some(owner) = Owner::from_token(word) {
            poke(t.sub(i), owner.flagged(FLAG_EVICTED), 20_000);
        }
    }
    // A claiming flag on a live subscriber's token: it is told it was
    // evicted, but the entry stays taken for as long as that process lives
    // (see `bug_claiming_flag_on_a_live_subscribers_entry_leaks_it`): one.
    if let Some(i) = (0..t.readers).find(|&i| Owner::from_token(shm.r64(t.sub(i))).is_some()) {
        let owner = Owner::from_token(shm.r64(t.sub(i))).unwrap();
        poke(t.sub(i), owner.flagged(FLAG_CLAIMING), 20_000);
    }
    for i in 0..t.readers {
        if shm.r64(t.sub(i)) == 0 {
            poke(t.sub(i), Owner::new(999, 7).token(), 2000);
        }
    }
    // A live process's token in a free entry holds the publisher back for
    // as long as it is there (nothing tells a forged live token from a slow
    // subscriber): put it there briefly, then take it away again.
    let mut forged = Vec::new();
    for i in 0..t.readers {
        let word = shm.r64(t.sub(i));
        if word == 0 || Owner::from_flagged(word).is_some_and(|(o, _)| o.index() == 999) {
            shm.w64(t.sub(i) + SUB_CURSOR, 0);
            poke(t.sub(i), publisher_token.token(), 0);
            forged.push(i);
            break;
        }
    }
    sleep_ms(100);
    for &i in &forged {
        if shm.r64(t.sub(i)) == publisher_token.token() {
            shm.w64(t.sub(i), 0);
        }
    }
    let before = progress_of(&workers);
    let stuck = stalled(
        &workers,
        &["publisher", "sub-recv_ref", "sub-copy"],
        &before,
        Duration::from_secs(3),
    );
    stop.store(true, Ordering::Relaxed);
    // The in-place reader is woken by the publisher's drop (Disconnected):
    // the publisher is joined first.
    eprintln!("lossless gate: {pokes} pokes");
    let seen = join_workers(workers, Duration::from_secs(10));
    for (name, s) in &seen {
        assert_eq!(s.not_whole, 0, "{name} read torn or garbage messages");
    }
    assert!(
        stuck.is_empty(),
        "after the forged owner words were taken away, {stuck:?} made no progress in 3 s"
    );
    for sub in ["sub-recv_ref", "sub-copy"] {
        assert!(
            seen[sub].errors("Evicted") > 0 && seen[sub].reopened > 0,
            "{sub} was never told its entry was taken: {:?}",
            seen[sub].errors
        );
    }
}

/// The cursor of a live lossless subscriber, overwritten (raised, lowered,
/// garbage) while a publisher sends and the subscriber reads, in place and
/// by copy. Every call returns; a copying reader never reads anything torn;
/// and the topic does not stay wedged. A cursor raised to a value the
/// subscriber could have reached (here: one ahead of `head`, which is the
/// publisher's `next`) can release a slot `recv_ref` has lent: that is the
/// documented limit of reading in place ("what still needs trust" in the
/// README), so the in-place reader's changed values are reported, not
/// failed on; cursors no subscriber could have are held back (see
/// `a_cursor_raised_past_everything_published_does_not_release_a_lent_message`).
#[test]
fn lossless_live_subscriber_cursor_corrupted_under_live_traffic() {
    let bus = TestBus::new("hot-cursor");
    fn topic(b: &Bus) -> TopicBuilder<'_> {
        b.topic("t")
            .capacity(16)
            .lossless(4)
            .liveness_check_interval(Duration::from_millis(20))
    }
    drop(topic(&bus.open()).subscriber::<Tick>());
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = lossless_publisher(&bus.name, topic, 4, 500, &stop);
    let in_place = in_place_subscriber(&bus.name, topic, Some(Duration::from_micros(200)), &stop);
    let workers = vec![
        publisher,
        in_place,
        timeout_subscriber("sub-copy", &bus.name, "t", WaitStrategy::adaptive(), &stop),
    ];
    let shm = Shm::open(&bus);
    let t = shm.topic("t");
    until(Duration::from_secs(10), "traffic", || {
        shm.r64(t.head()) > 100
    });
    let mut stuck_after = Vec::new();
    let cases: [(&str, Rewrite); 5] = [
        ("raised far", |h: u64| h.wrapping_add(1000)),
        ("raised to u64::MAX", |_| u64::MAX),
        ("one ahead of head", |h: u64| h.wrapping_add(1)),
        ("lowered to 0", |_| 0),
        ("lowered by a lap", |h: u64| h.saturating_sub(16)),
    ];
    for (what, value) in cases {
        for _ in 0..20 {
            let head = shm.r64(t.head());
            for i in 0..t.readers {
                if Owner::from_token(shm.r64(t.sub(i))).is_some() {
                    shm.w64(t.sub(i) + SUB_CURSOR, value(head));
                }
            }
            std::thread::sleep(Duration::from_micros(700));
        }
        let before = progress_of(&workers);
        let stuck = stalled(
            &workers,
            &["publisher", "sub-recv_ref", "sub-copy"],
            &before,
            Duration::from_secs(2),
        );
        if !stuck.is_empty() {
            stuck_after.push(format!("cursor {what}: {stuck:?} stalled for 2 s"));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let seen = join_workers(workers, Duration::from_secs(10));
    let torn: Vec<_> = seen
        .iter()
        .filter(|(name, s)| s.not_whole > 0 && name.as_str() != "sub-recv_ref")
        .map(|(n, s)| format!("{n}: {} torn", s.not_whole))
        .collect();
    for (name, s) in &seen {
        if name.as_str() == "sub-recv_ref" && s.not_whole > 0 {
            eprintln!(
                "{name}: {} lent messages changed after their cursor was raised (documented)",
                s.not_whole
            );
        }
    }
    assert!(
        torn.is_empty() && stuck_after.is_empty(),
        "torn: {torn:?}; wedged: {stuck_after:?}"
    );
}

/// The lease word, overwritten while subscribers receive: with garbage, 0,
/// the publisher's own token flagged, a token naming a dead process-table
/// entry, and the token of another live process. The publisher's next send
/// is `LeaseLost` (documented) and it writes nothing more; a new publisher
/// takes the lease (repaired, fresh, taken over) and continues the
/// sequence, or gets `PublisherBusy` naming the live process the word names.
#[test]
fn lease_word_corrupted_the_publisher_learns_at_its_next_send() {
    let bus = TestBus::new("hot-lease");
    let b = bus.open();
    let shm = Shm::open(&bus);
    let other = Bus::open(&bus.name).unwrap();
    let other_token = token_of_mapping(&other, &shm, "probe");
    let stop = Arc::new(AtomicBool::new(false));
    let mut tx = b.topic("t").capacity(64).publisher::<Tick>().unwrap();
    let workers = vec![
        timeout_subscriber(
            "sub-adaptive",
            &bus.name,
            "t",
            WaitStrategy::adaptive(),
            &stop,
        ),
        timeout_subscriber("sub-block", &bus.name, "t", WaitStrategy::Block, &stop),
    ];
    let t = shm.topic("t");
    let my_token = Owner::from_token(shm.r64(t.lease())).unwrap();
    let dead = Owner::new(my_token.index() + 7, 3);
    for (what, word, busy) in [
        ("garbage", 0xdead_beef_u64, false),
        ("zero", 0, false),
        (
            "own token flagged evicted",
            my_token.flagged(FLAG_EVICTED),
            false,
        ),
        ("a dead process's token", dead.token(), false),
        ("a live process's token", other_token.token(), true),
        ("u64::MAX", u64::MAX, false),
    ] {
        for _ in 0..50 {
            let tick = Tick::new(tx.next_seq());
            tx.send(&tick).unwrap();
            std::thread::sleep(Duration::from_micros(100));
        }
        let head = shm.r64(t.head());
        shm.w64(t.lease(), word);
        assert_eq!(
            tx.send(&Tick::new(tx.next_seq())),
            Err(SendError::LeaseLost),
            "{what}"
        );
        assert_eq!(
            tx.try_send(&Tick::new(tx.next_seq())),
            Err(TrySendError::LeaseLost),
            "{what}"
        );
        assert_eq!(
            tx.send_timeout(&Tick::new(tx.next_seq()), MS10),
            Err(SendTimeoutError::LeaseLost),
            "{what}"
        );
        assert_eq!(
            shm.r64(t.head()),
            head,
            "{what}: wrote after losing the lease"
        );
        drop(tx);
        assert_eq!(
            shm.r64(t.lease()),
            word,
            "{what}: a lost lease is not released"
        );
        tx = match b.topic("t").publisher::<Tick>() {
            Ok(new) => {
                assert!(!busy, "{what}: took the lease from a live process");
                new
            }
            Err(Error::PublisherBusy { holder, .. }) => {
                assert!(busy, "{what}: PublisherBusy ({holder})");
                shm.w64(t.lease(), 0);
                b.topic("t").publisher::<Tick>().unwrap()
            }
            Err(e) => panic!("{what}: {e}"),
        };
        assert_eq!(tx.next_seq(), head, "{what}: the sequence goes on");
    }
    // Progress counted from before these sends: a subscriber that has
    // read all 50 by the time the window opens (one spinning) made its
    // progress, and would otherwise look stuck for the whole window.
    let before = progress_of(&workers);
    for _ in 0..50 {
        tx.send(&Tick::new(tx.next_seq())).unwrap();
    }
    let stuck = stalled(
        &workers,
        &["sub-adaptive", "sub-block"],
        &before,
        Duration::from_secs(2),
    );
    for _ in 0..50 {
        tx.send(&Tick::new(tx.next_seq())).unwrap();
        std::thread::sleep(Duration::from_micros(200));
    }
    stop.store(true, Ordering::Relaxed);
    let seen = join_workers(workers, Duration::from_secs(10));
    assert!(stuck.is_empty(), "{stuck:?} stopped receiving");
    for (name, s) in &seen {
        assert_eq!(s.not_whole, 0, "{name}");
    }
}

/// The process-table entry of a live process, overwritten: given another
/// generation, or garbage. The process then looks dead to the others: its
/// publisher lease is taken over (and it gets `LeaseLost`), its lossless
/// subscriber entry is evicted when it holds the publisher back (and it
/// gets `Evicted`), its queue claim entries are taken by new producers and
/// consumers (and it gets `Detached`). Marked free with its generation
/// kept, while its lock is held, it is of unknown liveness: nothing is
/// taken from it. Every outcome is one of these, never a panic or a hang.
#[test]
fn process_table_entry_of_a_live_process_overwritten() {
    let bus = TestBus::new("hot-procs");
    let shm_bus = bus.open();
    drop(shm_bus.subscriber::<u64>("init"));
    let shm = Shm::open(&bus);
    // What to write over a live entry whose state word is `live`.
    let states = |live: u64| {
        let gen = live >> 32;
        [
            ("next generation", (gen + 1) << 32 | 1),
            ("zero", 0),
            ("garbage", 0x0123_4567_89ab_cdef),
            ("u64::MAX", u64::MAX),
        ]
    };

    // Publisher lease: the holder's entry overwritten, another mapping
    // takes the lease over, the holder learns at its next send.
    let a = Bus::open(&bus.name).unwrap();
    let c = Bus::open(&bus.name).unwrap();
    let mut holder = a.topic("p").capacity(16).publisher::<u64>().unwrap();
    let mut rx = c
        .topic("p")
        .start_at(StartAt::Oldest)
        .subscriber::<u64>()
        .unwrap();
    let p = shm.topic("p");
    // Marked free, same generation, lock held: unknown, so not taken.
    {
        holder.send(&1).unwrap();
        let token = Owner::from_token(shm.r64(p.lease())).unwrap();
        let offset = shm.proc_state(token);
        let live = shm.r64(offset);
        shm.w64(offset, live & !0xffff_ffff);
        let other = Bus::open(&bus.name).unwrap();
        assert!(
            matches!(
                other.topic("p").publisher::<u64>(),
                Err(Error::PublisherBusy { .. })
            ),
            "free but locked: the lease of a process of unknown liveness was taken"
        );
        holder.send(&2).expect("the holder keeps its lease");
        shm.w64(offset, live);
        let _ = rx.recv_timeout(MS10);
    }
    let mut mappings = vec![a];
    for case in 0..4 {
        holder.send(&1).unwrap();
        let token = Owner::from_token(shm.r64(p.lease())).unwrap();
        let offset = shm.proc_state(token);
        let live = shm.r64(offset);
        let (what, state) = states(live)[case];
        shm.w64(offset, state);
        let taker = Bus::open(&bus.name).unwrap();
        let new = taker
            .topic("p")
            .publisher::<u64>()
            .unwrap_or_else(|e| panic!("{what}: no takeover of a 'dead' lease: {e}"));
        assert_eq!(holder.send(&2), Err(SendError::LeaseLost), "{what}");
        shm.w64(offset, live);
        let _ = rx.recv_timeout(MS10);
        holder = new;
        mappings.push(taker);
    }
    drop(holder);

    // A lossless subscriber that holds the publisher back.
    let pubs = Bus::open(&bus.name).unwrap();
    let mut tx = pubs
        .topic("l")
        .capacity(4)
        .lossless(2)
        .liveness_check_interval(MS10)
        .publisher::<u64>()
        .unwrap();
    let l = shm.topic("l");
    for case in 0..4 {
        let subs = Bus::open(&bus.name).unwrap();
        let mut sub = subs
            .topic("l")
            .start_at(StartAt::Next)
            .subscriber::<u64>()
            .unwrap();
        while tx.try_send(&3).is_ok() {}
        let owner = (0..l.readers)
            .filter_map(|i| Owner::from_token(shm.r64(l.sub(i))))
            .next()
            .unwrap();
        let offset = shm.proc_state(owner);
        let live = shm.r64(offset);
        let (what, state) = states(live)[case];
        shm.w64(offset, state);
        let sent = tx.send_timeout(&4, Duration::from_millis(500));
        assert!(sent.is_ok(), "{what}: the publisher is not freed: {sent:?}");
        let mut outcome = sub.try_recv();
        while outcome.is_ok() {
            outcome = sub.try_recv();
        }
        assert_eq!(outcome, Err(TryRecvError::Evicted), "{what}");
        shm.w64(offset, live);
        // It can subscribe again.
        drop(sub);
        let mut sub = subs.topic("l").subscriber::<u64>().unwrap();
        let _ = sub.try_recv();
    }

    // Work-queue producer and consumer entries (tables of one entry each).
    fn q_topic(b: &Bus) -> TopicBuilder<'_> {
        b.topic("q")
            .capacity(8)
            .max_producers(1)
            .max_consumers(1)
            .liveness_check_interval(MS10)
    }
    for case in 0..4 {
        let first = Bus::open(&bus.name).unwrap();
        let mut producer = q_topic(&first).producer::<u64>().unwrap();
        let mut consumer = q_topic(&first).consumer::<u64>().unwrap();
        producer.try_push(5).unwrap();
        assert_eq!(consumer.try_pop(), Ok(5));
        let q = shm.topic("q");
        let owner = Owner::from_token(shm.r64(q.producer(0))).unwrap();
        let offset = shm.proc_state(owner);
        let live = shm.r64(offset);
        let (what, state) = states(live)[case];
        shm.w64(offset, state);
        let second = Bus::open(&bus.name).unwrap();
        let mut producer2 = q_topic(&second)
            .producer::<u64>()
            .unwrap_or_else(|e| panic!("{what}: a 'dead' producer entry is not reused: {e}"));
        let mut consumer2 = q_topic(&second)
            .consumer::<u64>()
            .unwrap_or_else(|e| panic!("{what}: a 'dead' consumer entry is not reused: {e}"));
        assert!(
            matches!(producer.try_push(6), Err(TryPushError::Detached(6))),
            "{what}"
        );
        assert_eq!(consumer.try_pop(), Err(TryPopError::Detached), "{what}");
        assert_eq!(
            consumer.pop_timeout(MS10),
            Err(PopTimeoutError::Detached),
            "{what}"
        );
        producer2.try_push(7).unwrap();
        assert_eq!(consumer2.pop_timeout(MS10), Ok(7));
        shm.w64(offset, live);
        drop((producer, consumer, producer2, consumer2));
    }

    // The pid and namespace words only feed messages.
    let hold = Bus::open(&bus.name).unwrap();
    let _tx = hold.topic("pid").publisher::<u64>().unwrap();
    let owner = Owner::from_token(shm.r64(shm.topic("pid").lease())).unwrap();
    let offset = shm.proc_state(owner);
    for (pid, ns) in [(u64::MAX, u64::MAX), (0, 0), (1 << 40, 7)] {
        shm.w64(offset + 8, pid);
        shm.w64(offset + 16, ns);
        match Bus::open(&bus.name).unwrap().publisher::<u64>("pid") {
            Err(Error::PublisherBusy { holder, .. }) => eprintln!("holder shown as {holder}"),
            other => panic!("pid {pid:#x}: {other:?}"),
        }
        let _ = topic_list(&shm_bus);
    }
}

fn topic_list(bus: &Bus) -> usize {
    bus.topics().map(|t| t.len()).unwrap_or(0)
}

/// The state word of a directory entry whose topic is in use, overwritten
/// with values no protocol step writes and with the claim of a live
/// process. Opening the topic again gives `Corrupt` naming the entry, or a
/// `Timeout` after the creation timeout (a live claimer is waited for);
/// listing names the entry; the endpoints already open keep working.
#[test]
fn directory_state_word_of_a_topic_in_use_overwritten() {
    let bus = TestBus::new("hot-dir");
    drop(bus.open().topic("t").capacity(16).subscriber::<Tick>());
    let stop = Arc::new(AtomicBool::new(false));
    let workers = vec![
        overwrite_publisher(&bus.name, "t", &stop),
        timeout_subscriber(
            "subscriber",
            &bus.name,
            "t",
            WaitStrategy::adaptive(),
            &stop,
        ),
    ];
    let shm = Shm::open(&bus);
    let t = shm.topic("t");
    let opener = Bus::open(&bus.name).unwrap();
    let own = token_of_mapping(&opener, &shm, "probe");
    until(Duration::from_secs(10), "traffic", || {
        shm.r64(t.head()) > 100
    });
    let live = Owner::from_token(shm.r64(t.lease())).unwrap();
    for (what, word) in [
        ("2", 2u64),
        ("garbage", 0xdead_beef),
        ("claiming flag without tag", 1 << 62 | 5),
        ("a flagged token", live.flagged(FLAG_EVICTED)),
        ("u64::MAX", u64::MAX),
        ("a live process's claim", live.token()),
        ("the opener's own claim", own.token()),
    ] {
        shm.w64(t.state(), word);
        let before = progress_of(&workers);
        let started = Instant::now();
        let opened = opener.topic("t").subscriber::<Tick>();
        let took = started.elapsed();
        assert!(took < OPEN_BOUND, "{what}: opening took {took:?}");
        match opened {
            Err(Error::Corrupt { what: why, .. }) => {
                assert!(why.contains(&format!("entry {}", t.index)), "{what}: {why}")
            }
            Err(Error::Timeout { .. }) if Owner::from_token(word).is_some() => {}
            other => panic!("{what}: {other:?}"),
        }
        let listed = opener.topics().unwrap();
        if Owner::from_token(word).is_none() {
            assert!(
                listed
                    .iter()
                    .any(|t| matches!(t, Err(Error::Corrupt { .. }))),
                "{what}: listing"
            );
        }
        let stuck = stalled(
            &workers,
            &["publisher", "subscriber"],
            &before,
            Duration::from_secs(2),
        );
        assert!(stuck.is_empty(), "{what}: {stuck:?} stopped");
        shm.w64(t.state(), 1);
    }
    stop.store(true, Ordering::Relaxed);
    join_workers(workers, Duration::from_secs(10));
}

/// Work-queue producer and consumer workers on `topic`, alternating the
/// waiting-with-timeout and non-waiting calls, re-attaching on `Detached`.
fn queue_workers(
    bus: &str,
    topic: fn(&Bus) -> TopicBuilder<'_>,
    stop: &Arc<AtomicBool>,
) -> Vec<Worker> {
    let mut workers = Vec::new();
    for p in 0..2 {
        let bus = bus.to_owned();
        workers.push(worker(&format!("producer-{p}"), stop, move |stop, seen| {
            let b = Bus::open(&bus).unwrap();
            let open = || topic(&b).producer::<Tick>();
            let mut tx = Some(seen.call("open producer", open).unwrap());
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let Some(producer) = tx.as_mut() else {
                    match seen.call("open producer", open) {
                        Ok(new) => {
                            tx = Some(new);
                            seen.reopened += 1;
                        }
                        Err(e) => {
                            seen.error(&e);
                            sleep_ms(2);
                        }
                    }
                    continue;
                };
                n += 1;
                let tick = Tick::new(p << 32 | n);
                let pushed = if n % 2 == 0 {
                    seen.call("push_timeout", || {
                        producer
                            .push_timeout(tick, MS10)
                            .map_err(push_timeout_as_try)
                    })
                } else {
                    seen.call("try_push", || producer.try_push(tick))
                };
                match pushed {
                    Ok(()) => seen.ok(),
                    Err(e) => {
                        seen.error(&e);
                        match e {
                            TryPushError::Detached(_) => tx = None,
                            TryPushError::Full(_) => std::thread::sleep(Duration::from_micros(200)),
                            _ => sleep_ms(1),
                        }
                    }
                }
                if n % 8 == 0 {
                    std::thread::sleep(Duration::from_micros(300));
                }
            }
        }));
    }
    for c in 0..2 {
        let bus = bus.to_owned();
        workers.push(worker(&format!("consumer-{c}"), stop, move |stop, seen| {
            let b = Bus::open(&bus).unwrap();
            let open = || topic(&b).consumer::<Tick>();
            let mut rx = Some(seen.call("open consumer", open).unwrap());
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let Some(consumer) = rx.as_mut() else {
                    match seen.call("open consumer", open) {
                        Ok(new) => {
                            rx = Some(new);
                            seen.reopened += 1;
                        }
                        Err(e) => {
                            seen.error(&e);
                            sleep_ms(2);
                        }
                    }
                    continue;
                };
                n += 1;
                let popped = if n % 2 == 0 {
                    seen.call("pop_timeout", || consumer.pop_timeout(MS10))
                } else {
                    seen.call("try_pop", || consumer.try_pop().map_err(as_timeout_error))
                };
                match popped {
                    Ok(tick) => seen.tick(&tick),
                    Err(e) => {
                        seen.error(&e);
                        match e {
                            PopTimeoutError::Detached => rx = None,
                            PopTimeoutError::Timeout => {}
                            _ => sleep_ms(1),
                        }
                    }
                }
            }
        }));
    }
    workers
}

/// `try_pop`'s errors in `pop_timeout`'s type, to count them alike.
fn as_timeout_error(err: TryPopError) -> PopTimeoutError {
    match err {
        // Counted as what it is: nothing there now.
        TryPopError::Empty => PopTimeoutError::Timeout,
        TryPopError::Disconnected => PopTimeoutError::Disconnected,
        TryPopError::Corrupt { pos } => PopTimeoutError::Corrupt { pos },
        TryPopError::Detached => PopTimeoutError::Detached,
        other => panic!("undocumented TryPopError {other:?}"),
    }
}

fn live_queue(b: &Bus) -> TopicBuilder<'_> {
    b.topic("q")
        .capacity(16)
        .max_producers(4)
        .max_consumers(4)
        .liveness_check_interval(Duration::from_millis(20))
}

/// A work queue's control words, claim tables and slot sequences,
/// overwritten while two producers and two consumers run. First the words
/// the protocol must shrug off (wake words, counters, the recovery journal,
/// intents of free entries) and the owner words of claim entries (the
/// holder gets `Detached` and attaches again): the queue keeps moving. Then
/// slot sequences (garbage, tombstone bit, far ahead, far behind, forged
/// states) and the `head`/`tail` counters: the queue may be wedged for good
/// (documented: `Corrupt`, "remove the bus and recreate it"), but every call
/// returns, with a documented error.
#[test]
fn queue_words_corrupted_under_live_traffic() {
    let bus = TestBus::new("hot-queue");
    drop(live_queue(&bus.open()).consumer::<Tick>());
    let stop = Arc::new(AtomicBool::new(false));
    let workers = queue_workers(&bus.name, live_queue, &stop);
    let shm = Shm::open(&bus);
    let q = shm.topic("q");
    until(Duration::from_secs(10), "traffic", || {
        shm.r64(q.tail()) > 200
    });
    let mut pokes = 0u64;
    let mut poke = |offset: u64, value: u64| {
        shm.w64(offset, value);
        pokes += 1;
        std::thread::sleep(Duration::from_micros(1500));
    };

    // Words the protocol shrugs off.
    let dead = Owner::new(777, 9).token();
    for wake in [q.not_empty(), q.not_full()] {
        for value in [u64::MAX, 0xffff_ffff, 1 << 32, 0] {
            poke(wake + 8, value);
        }
        poke(wake, 0xdead_beef);
    }
    for value in [0, u64::MAX - 1, 2] {
        poke(q.lost_in_push(), value);
        poke(q.lost_in_consume(), value);
    }
    for value in [0xdead_beef, dead, u64::MAX, 0] {
        poke(q.journal(), value);
        poke(
            q.journal_pos(),
            shm.r64(q.tail()).wrapping_add(value & 0xff),
        );
    }
    poke(q.had_producer(), 0);
    poke(q.had_producer(), 1);
    for i in 0..4 {
        for entry in [q.producer(i), q.consumer(i)] {
            if shm.r64(entry) == 0 {
                poke(entry + 8, shm.r64(q.tail()));
                poke(entry + 8, NO_INTENT);
            }
        }
    }
    // Owner words of claim entries, held ones included.
    for value in [0x1234u64, 0, dead, u64::MAX] {
        for i in 0..4 {
            poke(q.producer(i), value);
            poke(q.consumer(i), value);
        }
        sleep_ms(30);
    }
    for i in 0..4 {
        for entry in [q.producer(i), q.consumer(i)] {
            if let Some(owner) = Owner::from_token(shm.r64(entry)) {
                poke(entry, owner.flagged(FLAG_EVICTED));
            }
        }
    }
    let before = progress_of(&workers);
    let names = ["producer-0", "producer-1", "consumer-0", "consumer-1"];
    let stuck = stalled(&workers, &names, &before, Duration::from_secs(3));

    // Slot sequences and counters: anything may follow, but calls return.
    for _round in 0..2 {
        for k in 0..q.capacity {
            let pos = shm.r64(q.tail()).wrapping_add(k);
            let slot = q.slot(pos);
            let cur = shm.r64(slot);
            for value in [
                0x5151_5151_5151_5151,
                TOMB | cur,
                cur.wrapping_add(1 << 40),
                cur.wrapping_sub(1 << 40),
                q.qenc(pos, pos.wrapping_add(q.capacity)),
                q.qenc(pos, pos.wrapping_sub(1)),
                TOMB | q.qenc(pos, pos.wrapping_add(7)),
            ] {
                poke(slot, value);
            }
        }
        for counter in [q.tail(), q.qhead()] {
            let cur = shm.r64(counter);
            for value in [
                cur.wrapping_add(1),
                cur.wrapping_sub(1),
                cur.wrapping_add(1 << 40),
                u64::MAX,
            ] {
                poke(counter, value);
            }
        }
    }
    sleep_ms(200);
    stop.store(true, Ordering::Relaxed);
    eprintln!("queue words: {pokes} pokes");
    let seen = join_workers(workers, Duration::from_secs(10));
    assert!(
        stuck.is_empty(),
        "the queue stopped moving after the protocol-level pokes: {stuck:?}"
    );
    for role in ["producer", "consumer"] {
        let detached: u64 = (0..2)
            .map(|i| seen[&format!("{role}-{i}")].errors("Detached"))
            .sum();
        assert!(detached > 0, "no {role} was told it lost its entry");
    }
}

/// Single-threaded, to pin down the documented error for each kind of
/// corrupt queue word.
#[test]
fn queue_slot_and_claim_corruption_gives_the_documented_errors() {
    fn fresh(tag: &str) -> (TestBus, Bus, Shm) {
        let bus = TestBus::new(tag);
        let b = bus.open();
        drop(b.topic("q").capacity(8).consumer::<u64>().unwrap());
        let shm = Shm::open(&bus);
        (bus, b, shm)
    }
    fn topic(b: &Bus) -> TopicBuilder<'_> {
        b.topic("q").capacity(8).liveness_check_interval(MS10)
    }
    // A slot a push would claim, with a sequence no protocol step writes.
    let cases: [(&str, SlotRewrite); 5] = [
        ("garbage", |_: &Loc, _: u64, _: u64| 0x5151_5151u64),
        ("tombstone bit", |_: &Loc, _: u64, cur: u64| TOMB | cur),
        ("far ahead", |_: &Loc, _: u64, cur: u64| cur + (1 << 40)),
        ("far behind", |_: &Loc, _: u64, cur: u64| {
            cur.wrapping_sub(1 << 40)
        }),
        (
            "forged tombstone of a later lap",
            |q: &Loc, pos: u64, _: u64| TOMB | q.qenc(pos, pos + 9),
        ),
    ];
    for (what, value) in cases {
        let (_bus, b, shm) = fresh("q-push");
        let q = shm.topic("q");
        let mut tx = topic(&b).producer::<u64>().unwrap();
        let mut rx = topic(&b).consumer::<u64>().unwrap();
        for i in 0..3 {
            tx.try_push(i).unwrap();
            assert_eq!(rx.try_pop(), Ok(i));
        }
        let pos = shm.r64(q.tail());
        let cur = shm.r64(q.slot(pos));
        shm.w64(q.slot(pos), value(&q, pos, cur));
        assert!(
            matches!(tx.try_push(9), Err(TryPushError::Corrupt { pos: p, value: 9 }) if p == pos),
            "{what}: try_push"
        );
        assert!(
            matches!(
                tx.push_timeout(9, MS10),
                Err(PushTimeoutError::Corrupt { value: 9, .. })
            ),
            "{what}: push_timeout"
        );
        assert!(
            matches!(tx.push(9), Err(PushError::Corrupt { value: 9, .. })),
            "{what}: push"
        );
        // The consumer finds nothing: the corrupt slot is at the tail.
        assert!(
            matches!(
                rx.try_pop(),
                Err(TryPopError::Empty | TryPopError::Corrupt { .. })
            ),
            "{what}: try_pop"
        );
        assert!(
            matches!(
                rx.pop_timeout(MS10),
                Err(PopTimeoutError::Timeout | PopTimeoutError::Corrupt { .. })
            ),
            "{what}: pop_timeout"
        );
    }
    // A slot holding a message, with a sequence no protocol step writes.
    for (what, value) in [
        ("garbage", 0x5151_5151u64),
        // (TOMB | 1 would be a true tombstone for position 0: skipped.)
        ("tombstone of another position", TOMB | 5),
        ("far ahead", 1 << 40),
    ] {
        let (_bus, b, shm) = fresh("q-pop");
        let q = shm.topic("q");
        let mut tx = topic(&b).producer::<u64>().unwrap();
        let mut rx = topic(&b).consumer::<u64>().unwrap();
        tx.try_push(1).unwrap();
        tx.try_push(2).unwrap();
        let pos = shm.r64(q.qhead());
        shm.w64(q.slot(pos), value);
        assert_eq!(
            rx.try_pop(),
            Err(TryPopError::Corrupt { pos }),
            "{what}: try_pop"
        );
        assert_eq!(
            rx.pop_timeout(MS10),
            Err(PopTimeoutError::Corrupt { pos }),
            "{what}: pop_timeout"
        );
        assert_eq!(
            rx.pop(),
            Err(shmbus::PopError::Corrupt { pos }),
            "{what}: pop"
        );
    }
    // A message whose length does not fit.
    for len in [u64::MAX, 9, 1 << 40] {
        let (_bus, b, shm) = fresh("q-len");
        let q = shm.topic("q");
        let mut tx = topic(&b).producer::<u64>().unwrap();
        let mut rx = topic(&b).consumer::<u64>().unwrap();
        tx.try_push(1).unwrap();
        tx.try_push(2).unwrap();
        let pos = shm.r64(q.qhead());
        shm.w64(q.slot(pos) + 8, len);
        assert!(
            matches!(rx.try_pop(), Err(TryPopError::Corrupt { .. })),
            "length {len}"
        );
        assert_eq!(rx.try_pop(), Ok(2), "length {len}: skipped, and on");
    }
    // Claim-table owner words: the holder is detached, whatever it calls.
    for value in [0x1234u64, 0, Owner::new(3, 3).token(), u64::MAX] {
        let (_bus, b, shm) = fresh("q-owner");
        let q = shm.topic("q");
        let mut tx = topic(&b).producer::<u64>().unwrap();
        let mut rx = topic(&b).consumer::<u64>().unwrap();
        tx.try_push(1).unwrap();
        let p = (0..q.writers)
            .map(|i| q.producer(i))
            .find(|&e| shm.r64(e) != 0)
            .unwrap();
        let c = (0..q.readers)
            .map(|i| q.consumer(i))
            .find(|&e| shm.r64(e) != 0)
            .unwrap();
        shm.w64(p, value);
        shm.w64(c, value);
        assert!(matches!(tx.try_push(2), Err(TryPushError::Detached(2))));
        assert!(matches!(
            tx.push_timeout(2, MS10),
            Err(PushTimeoutError::Detached(2))
        ));
        assert!(matches!(tx.push(2), Err(PushError::Detached(2))));
        assert_eq!(rx.try_pop(), Err(TryPopError::Detached));
        assert_eq!(rx.pop_timeout(MS10), Err(PopTimeoutError::Detached));
        assert_eq!(rx.pop(), Err(shmbus::PopError::Detached));
        drop((tx, rx));
        // New endpoints attach, and the message is still there.
        let mut tx = topic(&b).producer::<u64>().unwrap();
        let mut rx = topic(&b).consumer::<u64>().unwrap();
        assert_eq!(rx.try_pop(), Ok(1), "owner {value:#x}");
        tx.try_push(3).unwrap();
        assert_eq!(rx.try_pop(), Ok(3));
    }
    // The counters themselves: every call returns something documented.
    for (what, word, value) in [
        ("tail far ahead", 0u64, 1u64 << 40),
        ("tail u64::MAX", 0, u64::MAX),
        ("head far ahead", 64, 1 << 40),
        ("head u64::MAX", 64, u64::MAX),
        ("head past tail", 64, 3),
    ] {
        let (_bus, b, shm) = fresh("q-counter");
        let q = shm.topic("q");
        let mut tx = topic(&b).producer::<u64>().unwrap();
        let mut rx = topic(&b).consumer::<u64>().unwrap();
        tx.try_push(1).unwrap();
        shm.w64(q.region + word, value);
        let started = Instant::now();
        let outcomes = (
            tx.try_push(2),
            tx.push_timeout(3, MS10),
            rx.try_pop(),
            rx.pop_timeout(MS10),
        );
        assert!(started.elapsed() < CALL_BOUND, "{what}");
        eprintln!("{what}: {outcomes:?}");
    }
}

/// The wake words of a broadcast topic and of a work queue, overwritten
/// while readers sleep on them (`WaitStrategy::Block`): sleeper counts
/// huge, zero, in another epoch; futex words changed. A reader may wait up
/// to its check interval for a wakeup that never comes, but every message
/// still arrives and every call returns.
#[test]
fn wake_words_corrupted_while_readers_sleep() {
    let bus = TestBus::new("hot-wake");
    let interval = Duration::from_millis(20);
    {
        let b = bus.open();
        drop(b.topic("w").capacity(64).subscriber::<Tick>());
        drop(b.topic("wq").capacity(64).consumer::<Tick>());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let name = bus.name.clone();
    let publisher = worker("publisher", &stop, move |stop, seen| {
        let b = Bus::open(&name).unwrap();
        let mut tx = b.topic("w").publisher::<Tick>().unwrap();
        let mut q = b.topic("wq").producer::<Tick>().unwrap();
        while !stop.load(Ordering::Relaxed) {
            let tick = Tick::new(tx.next_seq());
            match seen.call("send", || tx.send(&tick)) {
                Ok(_) => seen.ok(),
                Err(e) => seen.error(&e),
            }
            if let Err(e) = seen.call("push_timeout", || q.push_timeout(tick, MS10)) {
                seen.error(&e);
            }
            sleep_ms(1);
        }
    });
    let name = bus.name.clone();
    let consumer = worker("consumer", &stop, move |stop, seen| {
        let b = Bus::open(&name).unwrap();
        let mut rx = b
            .topic("wq")
            .wait(WaitStrategy::Block)
            .liveness_check_interval(interval)
            .consumer::<Tick>()
            .unwrap();
        while !stop.load(Ordering::Relaxed) {
            match seen.call("pop_timeout", || rx.pop_timeout(Duration::from_millis(50))) {
                Ok(tick) => seen.tick(&tick),
                Err(e) => seen.error(&e),
            }
        }
    });
    let workers = vec![
        publisher,
        consumer,
        timeout_subscriber("subscriber", &bus.name, "w", WaitStrategy::Block, &stop),
    ];
    let shm = Shm::open(&bus);
    let (w, wq) = (shm.topic("w"), shm.topic("wq"));
    until(Duration::from_secs(10), "traffic", || {
        shm.r64(w.head()) > 50
    });
    let mut stuck = Vec::new();
    for (what, words) in [
        ("broadcast", w.wake()),
        ("queue not_empty", wq.not_empty()),
        ("queue not_full", wq.not_full()),
    ] {
        let values: [(&str, Rewrite); 6] = [
            ("u64::MAX", |_: u64| u64::MAX),
            ("count 2^32-1", |_| 0xffff_ffff),
            ("zero", |_| 0),
            ("next epoch", |cur: u64| cur.wrapping_add(1 << 32)),
            ("count - 1", |cur: u64| cur.wrapping_sub(1)),
            ("epoch only", |_| 5 << 32),
        ];
        for (value_name, value) in values {
            let before = progress_of(&workers);
            for _ in 0..10 {
                let cur = shm.r64(words + 8);
                shm.w64(words + 8, value(cur));
                std::thread::sleep(Duration::from_micros(700));
            }
            shm.w32(words, 0xdead_beef);
            let late = stalled(
                &workers,
                &["publisher", "consumer", "subscriber"],
                &before,
                Duration::from_secs(2),
            );
            if !late.is_empty() {
                stuck.push(format!("{what} sleepers {value_name}: {late:?}"));
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let seen = join_workers(workers, Duration::from_secs(10));
    assert!(stuck.is_empty(), "{stuck:#?}");
    for (name, s) in &seen {
        assert_eq!(s.not_whole, 0, "{name}");
    }
}

// ---------------------------------------------------------------------------
// The random campaign: child processes use three topics while the parent
// writes random values at random places of the segment.
// ---------------------------------------------------------------------------

/// Entry point of child processes; does nothing when run as a normal test.
#[test]
#[ignore = "entry point of child processes; the tests that spawn them run it"]
fn child_role_entry() {
    let Some((role, args)) = child_role() else {
        return;
    };
    if role == "unreserved-region" {
        return unreserved_region_child();
    }
    campaign::child(&role, &args);
}

/// In a private /dev/shm of 512 KiB: a topic whose config is made to point
/// its region at arena space that was never reserved, with /dev/shm full.
fn unreserved_region_child() {
    let name = "hot-unreserved";
    let bus = Bus::open(name).unwrap();
    drop(bus.topic("t").capacity(16).subscriber::<u64>().unwrap());
    let path = format!("/dev/shm/shmbus.{name}");
    let shm = Shm::at(&path);
    let t = shm.topic("t");
    // Fill /dev/shm.
    {
        use std::io::Write as _;
        let mut filler = std::fs::File::create("/dev/shm/filler").unwrap();
        let block = vec![0x55u8; 4096];
        while filler.write_all(&block).is_ok() {}
    }
    // Aligned, inside the arena, never reserved: far past the bump pointer.
    let arena = shm.arena_offset();
    let unreserved = (arena + (32 << 20)) & !63;
    shm.w64(entry_config_offset(t.index) + 160, unreserved);
    common::report("POKED");
    let other = Bus::open(name).unwrap();
    let opened = other
        .topic("t")
        .subscriber::<u64>()
        .map(|mut rx| rx.try_recv());
    common::report(format!("OPENED {opened:?}"));
    let _ = std::fs::remove_file("/dev/shm/filler");
    let _ = Bus::remove(name);
}

/// The campaign, in a module of its own: the child side (roles, what each
/// call returned, a status file a monitor thread keeps current) and the
/// parent side (phases, random writes, watchdog).
mod campaign {
    use super::*;
    use shmbus::{Consumer, Producer, Publisher, Subscriber};
    use std::collections::VecDeque;

    pub const ROLES: &[&str] = &[
        "pub-ow",
        "sub-ow-adaptive",
        "sub-ow-block",
        "pub-ll",
        "sub-ll-ref",
        "sub-ll-copy",
        "producer-0",
        "producer-1",
        "consumer-0",
        "consumer-1",
    ];
    /// The topics every phase's bus has.
    pub const TOPICS: &[&str] = &["ow", "ll", "q"];
    /// Longest any call but `recv_ref` may take (timeouts are 20 ms; topic
    /// opens wait up to 2 s for a creator), with room for 11 processes on 2
    /// CPUs.
    pub const BOUND_MS: u64 = 5000;
    /// A child that is in one bounded call this long is hung.
    pub const HANG_MS: u64 = 8000;
    const TIMEOUT: Duration = Duration::from_millis(20);

    pub fn topic<'b>(bus: &'b Bus, name: &str) -> TopicBuilder<'b> {
        let t = bus.topic(name);
        let t = match name {
            "ow" => t.capacity(64),
            "ll" => t.capacity(32).lossless(8),
            _ => t.capacity(32).max_producers(4).max_consumers(4),
        };
        t.liveness_check_interval(Duration::from_millis(20))
    }

    fn topic_of(role: &str) -> &'static str {
        if role.contains("ow") {
            "ow"
        } else if role.contains("ll") {
            "ll"
        } else {
            "q"
        }
    }

    // ----- child side -----

    const OPS: &[&str] = &[
        "idle",
        "open bus",
        "open endpoint",
        "drop endpoint",
        "drop bus",
        "send",
        "try_send",
        "send_timeout",
        "recv_timeout",
        "try_recv",
        "recv_ref",
        "push_timeout",
        "try_push",
        "pop_timeout",
        "try_pop",
    ];

    fn op(name: &str) -> usize {
        OPS.iter().position(|o| *o == name).expect("known op")
    }

    /// What the child is doing, for its monitor thread.
    struct Doing {
        t0: Instant,
        op: AtomicUsize,
        since_ms: AtomicU64,
        iter: AtomicU64,
        phase: AtomicU64,
        max_ms: AtomicU64,
        max_op: AtomicUsize,
        max_ref_ms: AtomicU64,
        done: AtomicBool,
        counts: Mutex<BTreeMap<String, u64>>,
    }

    impl Doing {
        fn now_ms(&self) -> u64 {
            self.t0.elapsed().as_millis() as u64
        }

        fn run<R>(&self, name: &str, f: impl FnOnce() -> R) -> R {
            let which = op(name);
            self.since_ms.store(self.now_ms(), Ordering::Relaxed);
            self.op.store(which, Ordering::Relaxed);
            let result = f();
            let took = self.now_ms() - self.since_ms.load(Ordering::Relaxed);
            self.op.store(0, Ordering::Relaxed);
            self.iter.fetch_add(1, Ordering::Relaxed);
            if name == "recv_ref" {
                self.max_ref_ms.fetch_max(took, Ordering::Relaxed);
            } else if took > self.max_ms.load(Ordering::Relaxed) {
                self.max_ms.store(took, Ordering::Relaxed);
                self.max_op.store(which, Ordering::Relaxed);
            }
            result
        }

        fn count<T: Debug + ?Sized>(&self, what: &T) {
            let text = format!("{what:?}");
            let key: String = text
                .split(|c: char| !c.is_alphanumeric())
                .find(|w| !w.is_empty() && *w != "Recv")
                .unwrap_or("?")
                .to_owned();
            *self
                .counts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(key)
                .or_default() += 1;
        }

        fn status(&self) -> String {
            let op = self.op.load(Ordering::Relaxed);
            let in_op = if op == 0 {
                0
            } else {
                self.now_ms()
                    .saturating_sub(self.since_ms.load(Ordering::Relaxed))
            };
            let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            let counts: Vec<String> = counts.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            format!(
                "phase={} iter={} op={} in_op_ms={in_op} max_op={} max_ms={} max_recv_ref_ms={} done={} counts={}",
                self.phase.load(Ordering::Relaxed),
                self.iter.load(Ordering::Relaxed),
                OPS[op].replace(' ', "_"),
                OPS[self.max_op.load(Ordering::Relaxed)].replace(' ', "_"),
                self.max_ms.load(Ordering::Relaxed),
                self.max_ref_ms.load(Ordering::Relaxed),
                u8::from(self.done.load(Ordering::Relaxed)),
                counts.join(","),
            )
        }
    }

    pub fn write_atomic(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp");
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }

    enum Endpoint {
        Pub(Publisher<Tick>),
        Sub(Subscriber<Tick>),
        Prod(Producer<Tick>),
        Cons(Consumer<Tick>),
    }

    fn open_endpoint(bus: &Bus, role: &str) -> Result<Endpoint, Error> {
        let t = topic(bus, topic_of(role));
        Ok(match role {
            "pub-ow" | "pub-ll" => Endpoint::Pub(t.publisher()?),
            "sub-ow-block" | "sub-ll-copy" => {
                Endpoint::Sub(t.wait(WaitStrategy::Block).subscriber()?)
            }
            r if r.starts_with("sub") => Endpoint::Sub(t.start_at(StartAt::Next).subscriber()?),
            r if r.starts_with("producer") => Endpoint::Prod(t.producer()?),
            _ => Endpoint::Cons(t.consumer()?),
        })
    }

    /// What to do after a call.
    enum Then {
        Go,
        /// Idle a little (nothing to do, or an error that repeats at once).
        Pause(u64),
        /// The endpoint lost its entry or lease: drop it, open another.
        Reopen,
    }

    /// One call on the endpoint, chosen by role and iteration.
    fn step(role: &str, ep: &mut Endpoint, n: u64, doing: &Doing) -> Then {
        let id = ROLES.iter().position(|r| *r == role).unwrap_or(0) as u64;
        match ep {
            Endpoint::Pub(tx) => {
                let tick = Tick::new(tx.next_seq());
                let sent = if role == "pub-ll" && n % 4 != 0 {
                    doing.run("send_timeout", || {
                        tx.send_timeout(&tick, TIMEOUT).map_err(send_timeout_as_try)
                    })
                } else if n % 2 == 0 {
                    doing.run("try_send", || tx.try_send(&tick))
                } else {
                    doing.run("send", || tx.send(&tick).map_err(TrySendError::from))
                };
                match sent {
                    Ok(_) => {
                        doing.count("Sent");
                        if n % 8 == 0 {
                            Then::Pause(1)
                        } else {
                            Then::Go
                        }
                    }
                    Err(e) => {
                        doing.count(&e);
                        match e {
                            TrySendError::LeaseLost => Then::Reopen,
                            _ => Then::Pause(1),
                        }
                    }
                }
            }
            Endpoint::Sub(rx) => {
                let got = if n % 2 == 0 && role != "sub-ll-ref" {
                    doing.run("try_recv", || rx.try_recv().map_err(try_recv_as_timeout))
                } else {
                    doing.run("recv_timeout", || rx.recv_timeout(TIMEOUT))
                };
                let then = match got {
                    Ok(tick) => {
                        doing.count(if tick.is_whole() {
                            "Received"
                        } else {
                            "NotWhole"
                        });
                        Then::Go
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        doing.count("Timeout");
                        Then::Pause(u64::from(n % 2 == 0))
                    }
                    Err(e) => {
                        doing.count(&e);
                        match e {
                            RecvTimeoutError::Evicted => Then::Reopen,
                            RecvTimeoutError::Lagged(_) => Then::Go,
                            _ => Then::Pause(1),
                        }
                    }
                };
                // The in-place reader: after a message, read the next one in
                // place (blocking: there is no recv_ref with a timeout).
                if role == "sub-ll-ref" && matches!(then, Then::Go) && n % 3 == 0 {
                    let lent = doing.run("recv_ref", || {
                        rx.recv_ref().map(|lent| {
                            let first = *lent;
                            std::thread::sleep(Duration::from_micros(50));
                            (first, *lent)
                        })
                    });
                    return match lent {
                        Ok((first, again)) => {
                            doing.count(if first.is_whole() {
                                "ReceivedInPlace"
                            } else {
                                "NotWholeInPlace"
                            });
                            if again != first {
                                doing.count("ChangedUnderBorrow");
                            }
                            Then::Go
                        }
                        Err(e) => {
                            doing.count(&e);
                            match e {
                                RecvRefError::Recv(RecvError::Evicted) => Then::Reopen,
                                _ => Then::Pause(1),
                            }
                        }
                    };
                }
                then
            }
            Endpoint::Prod(tx) => {
                let tick = Tick::new(id << 40 | n);
                let pushed = if n % 2 == 0 {
                    doing.run("push_timeout", || {
                        tx.push_timeout(tick, TIMEOUT).map_err(push_timeout_as_try)
                    })
                } else {
                    doing.run("try_push", || tx.try_push(tick))
                };
                match pushed {
                    Ok(()) => {
                        doing.count("Pushed");
                        if n % 8 == 0 {
                            Then::Pause(1)
                        } else {
                            Then::Go
                        }
                    }
                    Err(e) => {
                        doing.count(&e);
                        match e {
                            TryPushError::Detached(_) => Then::Reopen,
                            _ => Then::Pause(1),
                        }
                    }
                }
            }
            Endpoint::Cons(rx) => {
                let popped = if n % 2 == 0 {
                    doing.run("pop_timeout", || rx.pop_timeout(TIMEOUT))
                } else {
                    doing.run("try_pop", || rx.try_pop().map_err(as_timeout_error))
                };
                match popped {
                    Ok(tick) => {
                        doing.count(if tick.is_whole() {
                            "Popped"
                        } else {
                            "NotWhole"
                        });
                        Then::Go
                    }
                    Err(e) => {
                        doing.count(&e);
                        match e {
                            PopTimeoutError::Detached => Then::Reopen,
                            PopTimeoutError::Timeout => Then::Pause(u64::from(n % 2 == 1)),
                            _ => Then::Pause(1),
                        }
                    }
                }
            }
        }
    }

    fn send_timeout_as_try(err: SendTimeoutError) -> TrySendError {
        match err {
            SendTimeoutError::Timeout => TrySendError::Full,
            SendTimeoutError::LeaseLost => TrySendError::LeaseLost,
            SendTimeoutError::TooLarge { len, max } => TrySendError::TooLarge { len, max },
            other => panic!("undocumented SendTimeoutError {other:?}"),
        }
    }

    fn try_recv_as_timeout(err: TryRecvError) -> RecvTimeoutError {
        match err {
            TryRecvError::Empty => RecvTimeoutError::Timeout,
            TryRecvError::Lagged(n) => RecvTimeoutError::Lagged(n),
            TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
            TryRecvError::Corrupt { seq } => RecvTimeoutError::Corrupt { seq },
            TryRecvError::Evicted => RecvTimeoutError::Evicted,
            other => panic!("undocumented TryRecvError {other:?}"),
        }
    }

    /// What the control file says.
    enum Control {
        Phase(u64, String),
        Stop,
        Unreadable,
    }

    fn read_control(path: &Path) -> Control {
        match std::fs::read_to_string(path) {
            Ok(text) if text.trim() == "stop" => Control::Stop,
            Ok(text) => {
                let mut words = text.split_whitespace();
                match (words.next().and_then(|p| p.parse().ok()), words.next()) {
                    (Some(phase), Some(bus)) => Control::Phase(phase, bus.to_owned()),
                    _ => Control::Unreadable,
                }
            }
            // The campaign's directory is gone: the parent is.
            Err(_) => Control::Stop,
        }
    }

    /// A child: args are the control file and this child's status file.
    pub fn child(role: &str, args: &[String]) {
        let control = PathBuf::from(&args[0]);
        let status = PathBuf::from(&args[1]);
        let doing = Arc::new(Doing {
            t0: Instant::now(),
            op: AtomicUsize::new(0),
            since_ms: AtomicU64::new(0),
            iter: AtomicU64::new(0),
            phase: AtomicU64::new(u64::MAX),
            max_ms: AtomicU64::new(0),
            max_op: AtomicUsize::new(0),
            max_ref_ms: AtomicU64::new(0),
            done: AtomicBool::new(false),
            counts: Mutex::new(BTreeMap::new()),
        });
        let monitor = {
            let doing = Arc::clone(&doing);
            let status = status.clone();
            std::thread::spawn(move || {
                while !doing.done.load(Ordering::Relaxed) {
                    write_atomic(&status, &doing.status());
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        // SAFETY: getppid has no preconditions.
        let parent = unsafe { libc::getppid() };
        let mut current: Option<(u64, Bus)> = None;
        let mut ep: Option<Endpoint> = None;
        let mut checked = Instant::now() - Duration::from_secs(1);
        let mut n = 0u64;
        loop {
            if checked.elapsed() >= Duration::from_millis(20) {
                checked = Instant::now();
                // SAFETY: as above.
                if unsafe { libc::getppid() } != parent {
                    break;
                }
                match read_control(&control) {
                    Control::Stop => break,
                    Control::Phase(phase, name)
                        if current.as_ref().is_none_or(|(p, _)| *p != phase) =>
                    {
                        if let Some(old) = ep.take() {
                            doing.run("drop endpoint", || drop(old));
                        }
                        if let Some((_, old)) = current.take() {
                            doing.run("drop bus", || drop(old));
                        }
                        match doing.run("open bus", || Bus::open(&name)) {
                            Ok(bus) => current = Some((phase, bus)),
                            Err(e) => {
                                doing.count(&format!("OpenBus{e:?}"));
                                sleep_ms(5);
                            }
                        }
                        continue;
                    }
                    _ => {}
                }
            }
            let Some((phase, bus)) = current.as_ref() else {
                sleep_ms(5);
                continue;
            };
            let Some(endpoint) = ep.as_mut() else {
                match doing.run("open endpoint", || open_endpoint(bus, role)) {
                    Ok(opened) => ep = Some(opened),
                    Err(e) => {
                        doing.count(&format!("Open{e:?}"));
                        sleep_ms(5);
                    }
                }
                // Acknowledges the phase once it tried its endpoint.
                doing.phase.store(*phase, Ordering::Relaxed);
                continue;
            };
            n += 1;
            match step(role, endpoint, n, &doing) {
                Then::Go => {}
                Then::Pause(ms) => sleep_ms(ms),
                Then::Reopen => {
                    if let Some(old) = ep.take() {
                        doing.run("drop endpoint", || drop(old));
                    }
                    sleep_ms(1);
                }
            }
        }
        if let Some(old) = ep.take() {
            doing.run("drop endpoint", || drop(old));
        }
        if let Some((_, old)) = current.take() {
            doing.run("drop bus", || drop(old));
        }
        doing.done.store(true, Ordering::Relaxed);
        let _ = monitor.join();
        write_atomic(&status, &doing.status());
    }

    // ----- parent side -----

    /// SplitMix64.
    pub struct Rng(pub u64);

    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        pub fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }

        fn pick<T: Copy>(&mut self, from: &[T]) -> T {
            from[self.below(from.len() as u64) as usize]
        }

        fn signed(&mut self, span: u64) -> u64 {
            self.below(2 * span + 1).wrapping_sub(span)
        }
    }

    /// One phase: a fresh bus, its topics, and what the writer knows of it.
    pub struct Phase {
        pub number: u64,
        pub bus: TestBus,
        _mapping: Bus,
        pub shm: Shm,
        pub locs: Vec<(&'static str, Loc)>,
        pub tokens: Vec<Owner>,
        /// End of the used part of the segment, when the phase started.
        used_end: u64,
    }

    impl Phase {
        pub fn new(number: u64) -> Phase {
            let bus = TestBus::new(&format!("camp{number}"));
            let mapping = Bus::builder(&bus.name)
                .size(8 << 20)
                .topics(32)
                .processes(64)
                .open()
                .unwrap();
            drop(topic(&mapping, "ow").subscriber::<Tick>().unwrap());
            drop(topic(&mapping, "ll").subscriber::<Tick>().unwrap());
            drop(topic(&mapping, "q").consumer::<Tick>().unwrap());
            let shm = Shm::open(&bus);
            let used_end = (shm.arena_offset() + shm.r64(64 + 16) + (64 << 10)).min(shm.len);
            let mut phase = Phase {
                number,
                bus,
                _mapping: mapping,
                shm,
                locs: Vec::new(),
                tokens: Vec::new(),
                used_end,
            };
            phase.rescan();
            phase
        }

        /// Learns the topics' regions (topics re-created elsewhere after a
        /// corruption included) and the live process tokens.
        pub fn rescan(&mut self) {
            for name in TOPICS {
                for loc in self.shm.find_all(name) {
                    if !self
                        .locs
                        .iter()
                        .any(|(n, l)| n == name && l.region == loc.region && l.kind == loc.kind)
                    {
                        self.locs.push((name, loc));
                    }
                }
            }
            self.tokens = self.shm.live_tokens();
        }

        /// Puts back what lets a blocked `recv_ref` reader return
        /// (`Disconnected`): no lease, "had a publisher". Only once the
        /// publishers have left this phase.
        pub fn release_leases(&self) {
            for (_, loc) in &self.locs {
                if loc.kind == KIND_BROADCAST {
                    self.shm.w64(loc.lease(), 0);
                    self.shm.w32(loc.had_publisher(), 1);
                }
            }
        }
    }

    /// One random write.
    pub struct Write {
        pub offset: u64,
        pub width: usize,
        pub value: u64,
        pub what: String,
    }

    impl Phase {
        fn generic(&self, rng: &mut Rng, cur: u64) -> u64 {
            match rng.below(18) {
                0 => 0,
                1 => 1,
                2 => 2,
                3 => u64::MAX,
                4 => u64::MAX - 1,
                5 => 1 << 63,
                6 => 1 << 62,
                7 => 1 << 61,
                8 => cur.wrapping_add(1),
                9 => cur.wrapping_sub(1),
                10 => cur.wrapping_add(rng.signed(64)),
                11 => cur ^ (1 << rng.below(64)),
                12 => cur.wrapping_add(1 << 32),
                13 => cur.wrapping_sub(1 << 32),
                14 => cur.wrapping_add(1 << 40),
                15 => rng.below(1024),
                _ => rng.next(),
            }
        }

        fn token(&self, rng: &mut Rng, cur: u64) -> u64 {
            let live = (!self.tokens.is_empty()).then(|| rng.pick(&self.tokens));
            match (rng.below(10), live) {
                (0..=3, Some(owner)) => match rng.below(5) {
                    0 => owner.flagged(FLAG_CLAIMING),
                    1 => owner.flagged(FLAG_EVICTED),
                    _ => owner.token(),
                },
                (4, Some(owner)) => Owner::new(owner.index(), owner.gen().wrapping_add(1)).token(),
                (5, _) => Owner::new(rng.below(64) as u32, rng.below(4) as u32).token(),
                (6, _) => Owner::new(u32::MAX - rng.below(2) as u32, 1).token(),
                (7, _) => cur ^ (FLAG_CLAIMING | FLAG_EVICTED) & (rng.next() | 1 << 61),
                _ => self.generic(rng, cur),
            }
        }

        fn near(&self, rng: &mut Rng, base: u64, span: u64, cur: u64) -> u64 {
            match rng.below(8) {
                0..=3 => base.wrapping_add(rng.signed(span)),
                4 => base.wrapping_add(1 << 40),
                5 => base.wrapping_sub(1 << 40),
                6 => NO_INTENT,
                _ => self.generic(rng, cur),
            }
        }

        fn proc_state(&self, rng: &mut Rng, cur: u64) -> u64 {
            let gen = cur >> 32;
            match rng.below(7) {
                0 => gen << 32,
                1 => (gen + 1) << 32 | 1,
                2 => gen.wrapping_sub(1) << 32 | 1,
                3 => 0,
                4 => gen << 32 | 2,
                _ => self.generic(rng, cur),
            }
        }

        /// Chooses a random write, mostly at words the protocols use. The
        /// directory and the header are written only `late` in a phase: one
        /// write there makes every later open of the topic fail, and the
        /// children open endpoints again often.
        pub fn pick(&self, rng: &mut Rng, late: bool) -> Write {
            let shm = &self.shm;
            let mut roll = rng.below(100);
            if !late && (73..=79).contains(&roll) {
                roll = 25 + rng.below(40);
            }
            let loc = (!self.locs.is_empty()).then(|| rng.pick(&self.locs));
            let w8 = |offset: u64, value: u64, what: String| Write {
                offset,
                width: 8,
                value,
                what,
            };
            match (roll, loc) {
                // Slot words.
                (0..=24, Some((name, l))) => {
                    let seq = rng.below(l.capacity);
                    let slot = l.slot(seq);
                    let cur = shm.r64(slot);
                    match rng.below(10) {
                        0..=6 if l.kind == KIND_QUEUE => {
                            let base = if rng.below(2) == 0 {
                                shm.r64(l.tail())
                            } else {
                                shm.r64(l.qhead())
                            };
                            let pos = base.wrapping_add(rng.signed(l.capacity));
                            let seq = pos.wrapping_add(rng.pick(&[0, 1, l.capacity, 7]));
                            let value = match rng.below(4) {
                                0 => l.qenc(pos, seq),
                                1 => TOMB | l.qenc(pos, seq),
                                _ => self.generic(rng, cur),
                            };
                            w8(l.slot(pos), value, format!("{name} slot sequence"))
                        }
                        0..=6 => {
                            let head = shm.r64(l.head());
                            let seq = head.wrapping_add(rng.signed(2 * l.capacity));
                            let value = match rng.below(4) {
                                0 => complete(seq),
                                1 => writing(seq),
                                _ => self.generic(rng, cur),
                            };
                            w8(l.slot(seq), value, format!("{name} slot stamp"))
                        }
                        7 | 8 => {
                            let value = match rng.below(3) {
                                0 => rng.pick(&[0, 63, 65, 1 << 40, u64::MAX]),
                                _ => self.generic(rng, shm.r64(slot + 8)),
                            };
                            w8(slot + 8, value, format!("{name} slot length"))
                        }
                        _ => {
                            let at = slot + 16 + 8 * rng.below(8);
                            w8(at, rng.next(), format!("{name} payload"))
                        }
                    }
                }
                // Control words.
                (25..=64, Some((name, l))) => {
                    let mut words: Vec<(u64, &str, u8)> = Vec::new();
                    // kind: 0 generic, 1 token, 2 seq, 3 u32
                    if l.kind == KIND_BROADCAST {
                        words.extend([
                            (l.head(), "head", 2),
                            (l.lease(), "lease", 1),
                            (l.lease(), "lease", 1),
                            (l.had_publisher(), "had_publisher", 3),
                            (l.wake(), "wake futex", 3),
                            (l.wake() + 8, "wake sleepers", 0),
                        ]);
                        if l.lossless {
                            words.extend([
                                (l.epoch(), "gate epoch", 0),
                                (l.evictions(), "gate evictions", 0),
                                (l.space(), "space futex", 3),
                                (l.space() + 8, "space sleepers", 0),
                            ]);
                            for i in 0..l.readers.min(8) {
                                words.push((l.sub(i), "subscriber owner", 1));
                                words.push((l.sub(i) + SUB_CURSOR, "subscriber cursor", 2));
                            }
                        }
                    } else {
                        words.extend([
                            (l.tail(), "tail", 2),
                            (l.qhead(), "queue head", 2),
                            (l.not_empty(), "not_empty futex", 3),
                            (l.not_empty() + 8, "not_empty sleepers", 0),
                            (l.not_full(), "not_full futex", 3),
                            (l.not_full() + 8, "not_full sleepers", 0),
                            (l.lost_in_push(), "lost_in_push", 0),
                            (l.lost_in_consume(), "lost_in_consume", 0),
                            (l.had_producer(), "had_producer", 0),
                            (l.journal(), "journal", 1),
                            (l.journal_pos(), "journal_pos", 2),
                        ]);
                        for i in 0..l.writers.min(4) {
                            words.push((l.producer(i), "producer owner", 1));
                            words.push((l.producer(i) + 8, "producer intent", 2));
                        }
                        for i in 0..l.readers.min(4) {
                            words.push((l.consumer(i), "consumer owner", 1));
                            words.push((l.consumer(i) + 8, "consumer intent", 2));
                        }
                    }
                    let (offset, field, kind) = rng.pick(&words);
                    let what = format!("{name} {field}");
                    if kind == 3 {
                        let cur = u64::from(shm.r32(offset));
                        let value = match rng.below(3) {
                            0 => rng.pick(&[0, 1, 2, u64::from(u32::MAX)]),
                            _ => self.generic(rng, cur) & 0xffff_ffff,
                        };
                        return Write {
                            offset,
                            width: 4,
                            value,
                            what,
                        };
                    }
                    let cur = shm.r64(offset);
                    let value = match kind {
                        1 => self.token(rng, cur),
                        2 => {
                            let base = if l.kind == KIND_QUEUE {
                                shm.r64(l.tail())
                            } else {
                                shm.r64(l.head())
                            };
                            self.near(rng, base, 2 * l.capacity, cur)
                        }
                        _ => self.generic(rng, cur),
                    };
                    w8(offset, value, what)
                }
                // Process table.
                (65..=72, _) => {
                    let index = match (rng.below(10), self.tokens.is_empty()) {
                        (0..=6, false) => rng.pick(&self.tokens).index(),
                        _ => rng.below(u64::from(shm.proc_entries)) as u32,
                    };
                    let entry = shm.proc_state(Owner::new(index, 0));
                    match rng.below(10) {
                        0..=6 => {
                            let value = self.proc_state(rng, shm.r64(entry));
                            w8(entry, value, format!("process {index} state"))
                        }
                        7 | 8 => w8(
                            entry + 8,
                            self.generic(rng, 0),
                            format!("process {index} pid"),
                        ),
                        _ => w8(entry + 16, rng.next(), format!("process {index} pid_ns")),
                    }
                }
                // Directory state words.
                (73..=75, _) => {
                    let index = match loc {
                        Some((_, l)) if rng.below(5) != 0 => l.index,
                        _ => rng.below(u64::from(shm.dir_entries)) as usize,
                    };
                    let offset = entry_state_offset(index);
                    let cur = shm.r64(offset);
                    let value = match rng.below(4) {
                        0 => rng.pick(&[0, 1, 2]),
                        1 => self.token(rng, cur),
                        _ => self.generic(rng, cur),
                    };
                    w8(offset, value, format!("directory {index} state"))
                }
                // Directory configs.
                (76..=78, _) => {
                    let index = match loc {
                        Some((_, l)) => l.index,
                        None => rng.below(u64::from(shm.dir_entries)) as usize,
                    };
                    let width = rng.pick(&[1usize, 4, 8]);
                    let at =
                        entry_config_offset(index) + rng.below(192 / width as u64) * width as u64;
                    Write {
                        offset: at,
                        width,
                        value: self.generic(rng, 0),
                        what: format!("directory {index} config"),
                    }
                }
                // The header's atomic half (state, arena bump pointer).
                (79, _) => {
                    let offset = rng.pick(&[64u64, 80]);
                    let cur = shm.r64(offset);
                    w8(offset, self.generic(rng, cur), "header control".into())
                }
                // Anywhere in the used part.
                _ => {
                    let width = rng.pick(&[1usize, 4, 8]);
                    let span = (self.used_end - 64) / width as u64 - 1;
                    let offset = 64 + rng.below(span) * width as u64;
                    Write {
                        offset,
                        width,
                        value: match width {
                            1 => rng.below(256),
                            _ => self.generic(rng, 0),
                        },
                        what: "anywhere".into(),
                    }
                }
            }
        }

        pub fn apply(&self, w: &Write) {
            let bytes = w.value.to_ne_bytes();
            if w.offset + w.width as u64 <= self.shm.len {
                self.shm.write(w.offset, &bytes[..w.width]);
            }
        }
    }

    /// A child of the campaign, and where it reports.
    pub struct Kid {
        pub role: &'static str,
        pub proc: ChildProc,
        pub status: PathBuf,
        pub exit: Option<std::process::ExitStatus>,
        pub killed_hung: bool,
    }

    impl Kid {
        pub fn status_text(&self) -> String {
            std::fs::read_to_string(&self.status).unwrap_or_else(|_| "(no status)".into())
        }

        pub fn field(&self, key: &str) -> Option<String> {
            let text = self.status_text();
            text.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{key}=")).map(str::to_owned))
        }

        pub fn num(&self, key: &str) -> u64 {
            self.field(key).and_then(|v| v.parse().ok()).unwrap_or(0)
        }

        /// Records its exit status if it has exited.
        pub fn poll(&mut self) -> bool {
            if self.exit.is_none() {
                if let Ok(Some(status)) = self.proc.child.try_wait() {
                    self.exit = Some(status);
                }
            }
            self.exit.is_some()
        }

        pub fn describe_exit(&self) -> Option<String> {
            use std::os::unix::process::ExitStatusExt;
            let status = self.exit?;
            if status.success() {
                return None;
            }
            Some(match status.signal() {
                Some(signal) => format!(
                    "child {} (pid {}) died from signal {signal}{}",
                    self.role,
                    self.proc.pid(),
                    match signal {
                        libc::SIGSEGV => " (SIGSEGV)",
                        libc::SIGBUS => " (SIGBUS)",
                        libc::SIGABRT => " (SIGABRT)",
                        libc::SIGKILL if self.killed_hung => " (SIGKILL: killed as hung)",
                        _ => "",
                    }
                ),
                None => format!(
                    "child {} (pid {}) exited with {status} (a panic exits with 101; see its \
                     stderr above)",
                    self.role,
                    self.proc.pid()
                ),
            })
        }

        /// Whether it has been in one bounded call for longer than
        /// `HANG_MS`; kills it if so.
        pub fn hung(&mut self) -> Option<String> {
            if self.poll() {
                return None;
            }
            let op = self.field("op")?;
            let in_op = self.num("in_op_ms");
            if op != "recv_ref" && in_op > HANG_MS {
                self.killed_hung = true;
                self.proc.kill9();
                self.exit = None;
                return Some(format!(
                    "child {} (pid {}) hung: in {op} for {in_op} ms; status: {}",
                    self.role,
                    self.proc.pid(),
                    self.status_text()
                ));
            }
            None
        }
    }

    /// A directory for the control and status files, removed on drop unless
    /// kept for a post-mortem.
    pub struct Dir {
        pub path: PathBuf,
        pub keep: bool,
    }

    impl Dir {
        pub fn new() -> Dir {
            static N: AtomicU64 = AtomicU64::new(0);
            let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
                "hot-corruption-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&path).unwrap();
            Dir { path, keep: false }
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            if !self.keep {
                let _ = std::fs::remove_dir_all(&self.path);
            }
        }
    }

    /// The last writes, to name them when something fails.
    pub struct Log {
        pub recent: VecDeque<String>,
        pub file: Option<std::fs::File>,
        pub count: u64,
    }

    impl Log {
        pub fn record(&mut self, t0: Instant, phase: u64, w: &Write) {
            self.count += 1;
            let line = format!(
                "{:>8.3}s phase {phase} offset {:#08x} width {} value {:#018x} {}",
                t0.elapsed().as_secs_f64(),
                w.offset,
                w.width,
                w.value,
                w.what
            );
            if let Some(file) = self.file.as_mut() {
                use std::io::Write as _;
                let _ = writeln!(file, "{line}");
            }
            if self.recent.len() == 64 {
                self.recent.pop_front();
            }
            self.recent.push_back(line);
        }
    }
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Many thousands of random writes (random offsets, mostly at words of the
/// directory, the process table and the rings; values of 1, 4 or 8 bytes,
/// among them 0, 1, u64::MAX, tokens of live and dead processes with and
/// without flags, sequence numbers near the live ones, stamps and encoded
/// slot sequences) into the segment while ten child processes use it: a
/// publisher and two subscribers of an overwrite topic, a publisher and two
/// subscribers of a lossless topic (one reading in place with `recv_ref`),
/// two producers and two consumers of a work queue. Every call they make is
/// a non-waiting or a timeout call (except `recv_ref`, which has no timeout
/// variant); every error is counted, and an endpoint that lost its entry or
/// lease (`Evicted`, `LeaseLost`, `Detached`) is dropped and opened again.
///
/// The run is cut in phases of 3 s, each on a fresh bus (so that a topic
/// wedged for good, as documented for corrupt queue slots, does not make the
/// rest of the run idle): the children move to the next bus when the control
/// file says so. Each child keeps a status file current (phase, what call
/// it is in and for how long, its slowest call, what its calls returned).
///
/// Checks: every child acknowledges each phase and exits on its own at the
/// end, with success (no panic, no signal); none spends longer than 8 s in
/// one bounded call (it is killed, and named with what it was doing); no
/// call but `recv_ref` took longer than 5 s.
#[test]
fn random_corruption_campaign_on_live_processes() {
    use campaign::{write_atomic, Dir, Kid, Log, Phase, Rng, ROLES};
    let seed = env_number("SHMBUS_CORRUPTION_SEED").unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nanos ^ u64::from(std::process::id()) << 32
    });
    let seconds = env_number("SHMBUS_CORRUPTION_SECONDS").unwrap_or(12);
    let phase_len = Duration::from_secs(3);
    eprintln!(
        "corruption campaign: seed {seed:#x} (SHMBUS_CORRUPTION_SEED), {seconds} s \
         (SHMBUS_CORRUPTION_SECONDS)"
    );
    let mut rng = Rng(seed);
    let mut dir = Dir::new();
    let control = dir.path.join("control");
    let mut log = Log {
        recent: Default::default(),
        file: std::fs::File::create(dir.path.join("writes.log")).ok(),
        count: 0,
    };
    let t0 = Instant::now();
    let mut phase = Phase::new(0);
    write_atomic(&control, &format!("0 {}", phase.bus.name));
    let mut kids: Vec<Kid> = ROLES
        .iter()
        .enumerate()
        .map(|(i, role)| {
            let status = dir.path.join(format!("status-{i}-{role}"));
            let args = vec![control.display().to_string(), status.display().to_string()];
            Kid {
                role,
                proc: spawn_role(role, &args),
                status,
                exit: None,
                killed_hung: false,
            }
        })
        .collect();
    let mut failures: Vec<String> = Vec::new();

    // Waits until every child runs in phase `number`; releases the leases
    // of `old` (if any) for laggards after 2 s (see `release_leases`).
    let wait_phase = |kids: &mut Vec<Kid>,
                      number: u64,
                      old: Option<&Phase>,
                      limit: Duration,
                      failures: &mut Vec<String>| {
        let started = Instant::now();
        let mut released = false;
        loop {
            let mut waiting = Vec::new();
            for kid in kids.iter_mut() {
                if kid.poll() {
                    if let Some(why) = kid.describe_exit() {
                        failures.push(why);
                    } else {
                        failures.push(format!("child {} exited early", kid.role));
                    }
                    continue;
                }
                if let Some(why) = kid.hung() {
                    failures.push(why);
                    continue;
                }
                if kid.num("phase") != number {
                    waiting.push(kid.role);
                }
            }
            if waiting.is_empty() || !failures.is_empty() {
                return;
            }
            if !released && started.elapsed() > Duration::from_secs(2) {
                if let Some(old) = old {
                    old.release_leases();
                }
                released = true;
            }
            if started.elapsed() > limit {
                for kid in kids.iter().filter(|k| waiting.contains(&k.role)) {
                    failures.push(format!(
                        "child {} (pid {}) did not move to phase {number} within {limit:?}: {}",
                        kid.role,
                        kid.proc.pid(),
                        kid.status_text()
                    ));
                }
                return;
            }
            sleep_ms(10);
        }
    };

    wait_phase(&mut kids, 0, None, Duration::from_secs(60), &mut failures);
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut phases = 1;
    'run: while failures.is_empty() {
        let phase_end = (Instant::now() + phase_len).min(end);
        let mut n = 0u64;
        let mut last_check = Instant::now();
        while Instant::now() < phase_end {
            if n % 50 == 0 {
                phase.rescan();
            }
            n += 1;
            let late = phase_end.saturating_duration_since(Instant::now()) < phase_len * 3 / 10;
            let write = phase.pick(&mut rng, late);
            phase.apply(&write);
            log.record(t0, phase.number, &write);
            std::thread::sleep(Duration::from_micros(250));
            if last_check.elapsed() > Duration::from_millis(250) {
                last_check = Instant::now();
                for kid in kids.iter_mut() {
                    if let Some(why) = kid.hung() {
                        failures.push(why);
                    } else if kid.poll() {
                        failures.push(
                            kid.describe_exit()
                                .unwrap_or_else(|| format!("child {} exited early", kid.role)),
                        );
                    }
                }
                if !failures.is_empty() {
                    break 'run;
                }
            }
        }
        if Instant::now() >= end {
            break;
        }
        let next = Phase::new(phase.number + 1);
        write_atomic(&control, &format!("{} {}", next.number, next.bus.name));
        let number = next.number;
        let old = std::mem::replace(&mut phase, next);
        wait_phase(
            &mut kids,
            number,
            Some(&old),
            Duration::from_secs(15),
            &mut failures,
        );
        phases += 1;
        drop(old);
    }

    // Stop: every child leaves on its own.
    write_atomic(&control, "stop");
    let stop_started = Instant::now();
    let mut released = false;
    while kids.iter_mut().any(|k| !k.killed_hung && !k.poll()) {
        if !released && stop_started.elapsed() > Duration::from_millis(500) {
            // Publishers are gone: a reader blocked in recv_ref may return.
            phase.release_leases();
            released = true;
        }
        for kid in kids.iter_mut() {
            if let Some(why) = kid.hung() {
                failures.push(why);
            }
        }
        if stop_started.elapsed() > Duration::from_secs(20) {
            for kid in kids.iter_mut() {
                if kid.killed_hung || kid.poll() {
                    continue;
                }
                failures.push(format!(
                    "child {} (pid {}) did not exit within 20 s of being told to stop: {}",
                    kid.role,
                    kid.proc.pid(),
                    kid.status_text()
                ));
                kid.killed_hung = true;
                kid.proc.kill9();
            }
            break;
        }
        sleep_ms(10);
    }
    eprintln!(
        "campaign: {} writes in {phases} phases, {:.1} s; children:",
        log.count,
        t0.elapsed().as_secs_f64()
    );
    for kid in &kids {
        if let Some(why) = kid.describe_exit() {
            if !failures.contains(&why) {
                failures.push(why);
            }
        }
        let max = kid.num("max_ms");
        if max > campaign::BOUND_MS {
            failures.push(format!(
                "child {}: a call to {} took {max} ms",
                kid.role,
                kid.field("max_op").unwrap_or_default()
            ));
        }
        eprintln!(
            "  {:<16} iter {:>7} slowest {:>5} ms ({}) recv_ref {:>5} ms {}",
            kid.role,
            kid.num("iter"),
            max,
            kid.field("max_op").unwrap_or_default(),
            kid.num("max_recv_ref_ms"),
            kid.field("counts").unwrap_or_default()
        );
    }
    if !failures.is_empty() {
        dir.keep = true;
        eprintln!("last writes before the failure:");
        for line in &log.recent {
            eprintln!("  {line}");
        }
        panic!(
            "seed {seed:#x}: {failures:#?}\n(every write is in {})",
            dir.path.join("writes.log").display()
        );
    }
}

//! Adversarial tests of variable-size work queues (review of the queue
//! over 64-byte units): tiny arenas, lengths from 0 to the largest,
//! loans committed, held and abandoned, messages held in place while
//! others push, kill -9 at random points, and the recovery of a dead
//! claim through the claim tables.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64 as StdAtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{args, child_role, pattern_message, report, spawn_role, TestBus};
use shmbus::ring::queue::{
    table, var_max_message, var_words, ClaimEntry, QueueCtrl, QueueRing, Recovery, Side,
};
use shmbus::ring::{Liveness, Owner};
use shmbus::{Bus, PopError, PopTimeoutError, WaitStrategy};

/// The smallest arena: 64 units, messages up to 2032 bytes.
const ARENA: u64 = 4096;
const MAX: usize = (ARENA / 2) as usize - 16;

fn queue(bus: &Bus) -> shmbus::TopicBuilder<'_> {
    bus.topic("jobs")
        .variable(ARENA)
        .wait(WaitStrategy::Block)
        .liveness_check_interval(Duration::from_millis(10))
}

/// Bytes of a message that takes exactly `units` units (header included).
fn len_of_units(units: usize) -> usize {
    units * 64 - 16
}

/// A small PRNG (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Length of message `seq` of producer `id`: 0, the largest, lengths at
/// unit boundaries (47, 48, 49, 112, 113), small, or anything.
fn length(id: u64, seq: u64) -> usize {
    let mut r = Rng(id.wrapping_mul(1_000_003) ^ seq.wrapping_mul(0x2545_f491_4f6c_dd1d));
    match r.below(10) {
        0 => 0,
        1 => MAX,
        2 => [47, 48, 49, 111, 112, 113, MAX - 1, MAX - 64, MAX - 63][r.below(9) as usize],
        3..=6 => r.below(64) as usize,
        _ => r.below(MAX as u64 + 1) as usize,
    }
}

/// Message `seq` of producer `id`: from 8 bytes on, its tag (`id << 32 |
/// seq`) then a pattern; shorter ones are `len` bytes of `len` (counted,
/// not told apart).
fn job(id: u64, seq: u64) -> Vec<u8> {
    let len = length(id, seq);
    if len < 8 {
        vec![len as u8; len]
    } else {
        pattern_message(id << 32 | seq, len)
    }
}

/// Checks a message popped: `Ok(Some(tag))` for a tagged one, `Ok(None)`
/// for a short one, `Err` for one that is not whole.
fn check(msg: &[u8]) -> Result<Option<u64>, String> {
    if msg.len() < 8 {
        return if msg.iter().all(|&b| b as usize == msg.len()) {
            Ok(None)
        } else {
            Err(format!("short message {msg:?}"))
        };
    }
    let tag = u64::from_le_bytes(msg[..8].try_into().unwrap());
    let (id, seq) = (tag >> 32, tag & 0xffff_ffff);
    if id < 1_000 && seq < 1 << 31 && *msg == *job(id, seq) {
        Ok(Some(tag))
    } else {
        Err(format!(
            "message of {} bytes, tag {tag:#x}, not whole",
            msg.len()
        ))
    }
}

/// Entry point of child processes; does nothing when run as a normal test.
#[test]
#[ignore = "entry point of child processes; the tests that spawn them run it"]
fn child_role_entry() {
    let Some((role, args)) = child_role() else {
        return;
    };
    let bus = Bus::open(&args[0]).unwrap();
    match role.as_str() {
        // args: bus. Pushes two messages of 30 units (units 0..60), then
        // loans 8 units: 4 of padding (units 60..64, published at once)
        // and the message at units 0..8 of the next lap, once the first
        // message is taken. Holds the loan until killed.
        "wrap-loan" => {
            let mut tx = queue(&bus).producer_bytes().unwrap();
            tx.push_bytes(&pattern_message(1, len_of_units(30)))
                .unwrap();
            tx.push_bytes(&pattern_message(2, len_of_units(30)))
                .unwrap();
            report("PUSHED");
            let mut loan = tx.loan_bytes(len_of_units(8)).unwrap();
            loan.fill(0xdd);
            report("HOLDING");
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        // args: bus id. Pushes jobs of producer `id` for ever: pushed,
        // loaned and committed (some after a pause), or loaned and
        // abandoned.
        "spray" => {
            let id: u64 = args[1].parse().unwrap();
            let mut tx = queue(&bus).producer_bytes().unwrap();
            report("READY");
            let mut r = Rng(id);
            for seq in 0.. {
                let msg = job(id, seq);
                match r.below(8) {
                    0..=2 => tx.push_bytes(&msg).unwrap(),
                    3 | 4 => {
                        let mut loan = tx.loan_bytes(msg.len()).unwrap();
                        loan.copy_from_slice(&msg);
                        loan.commit();
                    }
                    5 => {
                        let mut loan = tx.loan_bytes(msg.len()).unwrap();
                        loan.copy_from_slice(&msg);
                        std::thread::sleep(Duration::from_micros(r.below(300)));
                        loan.commit();
                    }
                    6 => {
                        let mut loan = tx.loan_bytes(msg.len()).unwrap();
                        loan.fill(0xee);
                        drop(loan);
                    }
                    _ => {
                        while tx.try_push_bytes(&msg).is_err() {
                            std::thread::yield_now();
                        }
                    }
                }
            }
        }
        // args: bus bad_file. Pops for ever, in place (holding some a
        // while) or by copy; writes `bad_file` on a message not whole.
        "eat" => {
            let bad_file = &args[1];
            let mut rx = queue(&bus).consumer_bytes().unwrap();
            report("READY");
            let mut r = Rng(std::process::id() as u64);
            loop {
                let verdict = if r.below(2) == 0 {
                    match rx.pop_bytes_ref_timeout(Duration::from_millis(50)) {
                        Ok(msg) => {
                            if r.below(4) == 0 {
                                std::thread::sleep(Duration::from_micros(r.below(500)));
                            }
                            Some(check(&msg))
                        }
                        Err(PopTimeoutError::Timeout) => None,
                        Err(e) => Some(Err(format!("pop: {e}"))),
                    }
                } else {
                    match rx.pop_bytes_timeout(Duration::from_millis(50)) {
                        Ok(msg) => Some(check(msg)),
                        Err(PopTimeoutError::Timeout) => None,
                        Err(e) => Some(Err(format!("pop: {e}"))),
                    }
                };
                if let Some(Err(why)) = verdict {
                    let _ = std::fs::write(bad_file, why);
                }
            }
        }
        other => panic!("unknown child role {other}"),
    }
}

/// A producer killed holding a loan whose message wrapped (its padding
/// already published and taken by a consumer): a producer that attaches
/// next reuses the dead entry. `attach` settles the entry by recovering
/// its intent, the claim's start, where the padding was; the padding is
/// gone, so it finds nothing stuck and forgets the claim. The message's
/// units are then recovered one at a time as orphans, each counted lost.
/// One message was lost; `lost_in_push` should say 1.
#[test]
fn a_wrapping_loan_of_a_killed_producer_is_one_loss_after_a_producer_attaches() {
    let bus = TestBus::new("varq-adv-wrap");
    let b = bus.open();
    let mut rx = queue(&b).consumer_bytes().unwrap();
    let mut child = spawn_role("wrap-loan", &args(&[&bus.name]));
    child.expect_line("PUSHED");
    assert_eq!(
        rx.pop_bytes().unwrap(),
        pattern_message(1, len_of_units(30))
    );
    assert_eq!(
        rx.pop_bytes().unwrap(),
        pattern_message(2, len_of_units(30))
    );
    child.expect_line("HOLDING");
    // Takes the padding, then stops at the loan.
    assert!(rx.try_pop_bytes().is_err());
    assert_eq!(rx.queue_stats().popped, 64, "the padding is taken");
    child.kill9();
    // A producer attaches (a restarted one, say) before any recovery: it
    // takes the dead producer's entry.
    let mut tx = queue(&b).producer_bytes().unwrap();
    let after = pattern_message(3, 100);
    tx.push_bytes(&after).unwrap();
    let started = Instant::now();
    assert_eq!(
        rx.pop_bytes_timeout(Duration::from_secs(10)).unwrap(),
        after
    );
    let stats = rx.queue_stats();
    eprintln!(
        "recovered in {:?}: lost_in_push {}",
        started.elapsed(),
        stats.lost_in_push
    );
    assert_eq!(stats.lost_in_push, 1, "one message lost, counted once");
}

/// The same without a producer attaching in between: the consumer finds
/// the dead entry naming the claim and recovers it whole (passes; the
/// control for the test above).
#[test]
fn a_wrapping_loan_of_a_killed_producer_is_one_loss() {
    let bus = TestBus::new("varq-adv-wrap-ctl");
    let b = bus.open();
    let mut rx = queue(&b).consumer_bytes().unwrap();
    let mut child = spawn_role("wrap-loan", &args(&[&bus.name]));
    child.expect_line("PUSHED");
    rx.pop_bytes().unwrap();
    rx.pop_bytes().unwrap();
    child.expect_line("HOLDING");
    assert!(rx.try_pop_bytes().is_err());
    child.kill9();
    // The consumer recovers the claim first (a pop that waits), then a
    // producer attaches.
    assert!(rx.pop_bytes_timeout(Duration::from_millis(200)).is_err());
    let mut tx = queue(&b).producer_bytes().unwrap();
    let after = pattern_message(3, 100);
    tx.push_bytes(&after).unwrap();
    assert_eq!(
        rx.pop_bytes_timeout(Duration::from_secs(10)).unwrap(),
        after
    );
    assert_eq!(rx.queue_stats().lost_in_push, 1);
}

// --- The ring itself, over heap memory -------------------------------

struct Heap {
    ctrl: QueueCtrl,
    producers: Vec<ClaimEntry>,
    consumers: Vec<ClaimEntry>,
    words: Vec<shmbus::sync::AtomicU64>,
    units: usize,
}

fn heap(units: usize) -> Heap {
    Heap {
        ctrl: QueueCtrl::new(),
        producers: (0..3).map(|_| ClaimEntry::new()).collect(),
        consumers: (0..2).map(|_| ClaimEntry::new()).collect(),
        words: (0..var_words(units).unwrap())
            .map(|_| shmbus::sync::AtomicU64::new(0))
            .collect(),
        units,
    }
}

fn ring(h: &Heap) -> QueueRing<'_> {
    QueueRing::new_var(&h.ctrl, &h.producers, &h.consumers, &h.words, h.units).unwrap()
}

/// Stages what a producer killed between naming its claim and its
/// compare-and-swap (or between losing it and clearing its intent)
/// leaves in its entry: intent `pos`, `span` units (`ClaimEntry` is
/// `repr(C)`: owner, intent, span).
fn name_without_claiming(entry: &ClaimEntry, pos: u64, span: u64) {
    // SAFETY: `ClaimEntry` is `repr(C)`, its first three fields
    // `AtomicU64`s, 64 bytes in all.
    let words = unsafe { &*(entry as *const ClaimEntry as *const [StdAtomicU64; 3]) };
    words[2].store(span, Ordering::Relaxed);
    words[1].store(pos, Ordering::Relaxed);
}

/// Two dead producer entries name position 0: one the real claim of 8
/// units, the other a claim of 3 units that lost the race (killed before
/// it cleared its intent). Recovery takes the shorter span, then the rest
/// of the real claim at the next stop: two losses counted for one
/// message lost.
#[test]
fn a_dead_claim_named_twice_is_counted_once() {
    let (dead, loser, me) = (Owner::new(9, 9), Owner::new(8, 8), Owner::new(1, 1));
    let liveness = |o: Owner| {
        if o == dead || o == loser {
            Liveness::Dead
        } else {
            Liveness::Alive
        }
    };
    let h = heap(16);
    let q = ring(&h);
    table::give(&h.producers[0], dead);
    table::give(&h.producers[1], loser);
    table::give(&h.consumers[0], me);
    // The loser read the tail at 0 and found 3 units free; the winner
    // claimed 8 units at 0 and died before publishing.
    name_without_claiming(&h.producers[1], 0, 3);
    let claim = q.claim_push(&h.producers[0], len_of_units(8)).unwrap();
    assert_eq!(claim.pos(), 0);
    let c = &h.consumers[0];
    let mut recoveries = 0;
    loop {
        match q.claim_pop(c) {
            Ok(claim) => {
                q.release(claim, c);
            }
            Err(shmbus::ring::queue::PopBlocked::Unpublished { pos }) => {
                assert_eq!(
                    q.recover(Side::Push, pos, me, liveness, |_| true),
                    Recovery::Recovered
                );
                recoveries += 1;
            }
            Err(other) => {
                assert_eq!(other, shmbus::ring::queue::PopBlocked::Empty);
                break;
            }
        }
    }
    eprintln!("recoveries: {recoveries}");
    assert_eq!(h.ctrl.lost_in_push(), 1, "one message lost, counted once");
}

// --- Threads and processes ---------------------------------------------

/// What consumers saw: tags of tagged messages, and counts of short ones
/// by length.
#[derive(Default)]
struct Seen {
    tags: HashSet<u64>,
    short: [u64; 8],
    dup: u64,
    bad: Vec<String>,
}

impl Seen {
    fn take(&mut self, msg: &[u8]) {
        match check(msg) {
            Ok(Some(tag)) => {
                if !self.tags.insert(tag) {
                    self.dup += 1;
                }
            }
            Ok(None) => self.short[msg.len()] += 1,
            Err(why) => self.bad.push(why),
        }
    }
}

/// Two producers and two consumers as threads over the smallest arena,
/// Block waits with a short liveness interval: lengths from 0 to the
/// largest (boundaries of units included), pushes, loans committed at
/// once or after a pause, loans abandoned, `try_` pushes; consumers
/// alternate copying pops and pops in place held a while. Every message
/// taken once, whole; no loss counted.
#[test]
fn threads_with_every_length_over_the_smallest_arena() {
    const PRODUCERS: u64 = 2;
    let per: u64 = std::env::var("VARQ_PER")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(4_000);
    let bus = TestBus::new("varq-adv-threads");
    let b = bus.open();
    let rx0 = queue(&b).consumer_bytes().unwrap();
    let tx0 = queue(&b).producer_bytes().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let consumers: Vec<_> = (0..2)
        .map(|k| {
            let mut rx = rx0.try_clone().unwrap();
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut r = Rng(k + 77);
                let mut mine = Seen::default();
                loop {
                    let got = if r.below(2) == 0 {
                        rx.pop_bytes_ref().map(|msg| {
                            if r.below(8) == 0 {
                                std::thread::yield_now();
                            }
                            mine.take(&msg)
                        })
                    } else {
                        rx.pop_bytes().map(|msg| mine.take(msg))
                    };
                    match got {
                        Ok(()) => {}
                        Err(PopError::Disconnected) => break,
                        Err(e) => {
                            mine.bad.push(format!("pop: {e}"));
                            break;
                        }
                    }
                }
                let mut all = seen.lock().unwrap();
                for tag in mine.tags {
                    if !all.tags.insert(tag) {
                        all.dup += 1;
                    }
                }
                for (a, m) in all.short.iter_mut().zip(mine.short) {
                    *a += m;
                }
                all.dup += mine.dup;
                all.bad.extend(mine.bad);
            })
        })
        .collect();
    drop(rx0);
    let producers: Vec<_> = (1..=PRODUCERS)
        .map(|id| {
            let mut tx = tx0.try_clone().unwrap();
            std::thread::spawn(move || {
                let mut r = Rng(id);
                let mut seq = 0;
                while seq < per {
                    let msg = job(id, seq);
                    match r.below(8) {
                        0..=2 => tx.push_bytes(&msg).unwrap(),
                        3 | 4 => {
                            let mut loan = tx.loan_bytes(msg.len()).unwrap();
                            loan.copy_from_slice(&msg);
                            loan.commit();
                        }
                        5 => {
                            let mut loan = tx.loan_bytes(msg.len()).unwrap();
                            loan.copy_from_slice(&msg);
                            std::thread::yield_now();
                            loan.commit();
                        }
                        6 => {
                            let mut loan = tx.loan_bytes(msg.len()).unwrap();
                            loan.fill(0xee);
                            drop(loan);
                            continue; // the same seq, pushed next time
                        }
                        _ => {
                            while tx.try_push_bytes(&msg).is_err() {
                                std::thread::yield_now();
                            }
                        }
                    }
                    seq += 1;
                }
            })
        })
        .collect();
    drop(tx0);
    for p in producers {
        p.join().unwrap();
    }
    for c in consumers {
        c.join().unwrap();
    }
    let seen = seen.lock().unwrap();
    assert!(
        seen.bad.is_empty(),
        "{:?}",
        &seen.bad[..seen.bad.len().min(5)]
    );
    assert_eq!(seen.dup, 0, "messages taken twice");
    let mut tags = 0;
    let mut short = [0u64; 8];
    for id in 1..=PRODUCERS {
        for seq in 0..per {
            let len = length(id, seq);
            if len < 8 {
                short[len] += 1;
            } else {
                tags += 1;
                assert!(seen.tags.contains(&(id << 32 | seq)), "{id}/{seq} lost");
            }
        }
    }
    assert_eq!(seen.tags.len(), tags);
    assert_eq!(seen.short, short);
    let stats = queue(&b).consumer_bytes().unwrap().queue_stats();
    assert_eq!((stats.lost_in_push, stats.lost_in_consume), (0, 0));
}

/// Producer and consumer processes over the smallest arena, one of them
/// killed with kill -9 at a random moment and restarted, 30 times, while
/// a consumer thread here checks every message it takes: none torn, none
/// taken twice, no error; each kill loses at most one message; and the
/// queue works at the end.
#[test]
fn kill_9_at_random_points_with_restarts() {
    let rounds: u64 = std::env::var("VARQ_KILL_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(30);
    let bus = TestBus::new("varq-adv-kill");
    let b = bus.open();
    let bad_file = format!("/tmp/varq-adv-bad-{}", bus.name);
    let _ = std::fs::remove_file(&bad_file);
    let mut rx = queue(&b).consumer_bytes().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let here = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seen = Seen::default();
            let mut r = Rng(5);
            loop {
                let got = if r.below(2) == 0 {
                    rx.pop_bytes_ref_timeout(Duration::from_millis(20))
                        .map(|msg| seen.take(&msg))
                } else {
                    rx.pop_bytes_timeout(Duration::from_millis(20))
                        .map(|msg| seen.take(msg))
                };
                match got {
                    Ok(()) => {}
                    Err(PopTimeoutError::Timeout) if stop.load(Ordering::Relaxed) => break,
                    Err(PopTimeoutError::Timeout) => {}
                    Err(e) => {
                        seen.bad.push(format!("pop: {e}"));
                        break;
                    }
                }
            }
            (seen, rx)
        })
    };
    let mut r = Rng(std::process::id() as u64);
    let mut next_id = 1u64;
    let spawn_producer = |next_id: &mut u64| {
        let id = *next_id;
        *next_id += 1;
        let mut p = spawn_role("spray", &args(&[&bus.name, &id]));
        p.expect_line("READY");
        p
    };
    let spawn_consumer = || {
        let mut c = spawn_role("eat", &args(&[&bus.name, &bad_file]));
        c.expect_line("READY");
        c
    };
    let mut producers = vec![spawn_producer(&mut next_id), spawn_producer(&mut next_id)];
    let mut consumer = spawn_consumer();
    let (mut producer_kills, mut consumer_kills) = (0u64, 0u64);
    for _ in 0..rounds {
        std::thread::sleep(Duration::from_millis(5 + r.below(60)));
        if r.below(3) == 0 {
            consumer.kill9();
            consumer_kills += 1;
            consumer = spawn_consumer();
        } else {
            let k = r.below(2) as usize;
            producers[k].kill9();
            producer_kills += 1;
            producers[k] = spawn_producer(&mut next_id);
        }
    }
    // A producer opened before the last kills, so the consumer thread
    // here never finds the queue with no producer left (it would be told
    // `Disconnected`, rightly, and stop early).
    let mut tx = queue(&b).producer_bytes().unwrap();
    for p in &mut producers {
        p.kill9();
        producer_kills += 1;
    }
    consumer.kill9();
    consumer_kills += 1;
    // The queue still works: a last message gets through once the dead
    // claims ahead of it are recovered.
    // The first of producer 999's jobs long enough to carry a tag.
    let last_seq = (0..).find(|&s| length(999, s) >= 8).unwrap();
    let last = job(999, last_seq);
    tx.push_bytes_timeout(&last, Duration::from_secs(20))
        .expect("room once the dead consumers' units are recovered");
    let tag = 999u64 << 32 | last_seq;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && !here.is_finished() {
        std::thread::sleep(Duration::from_millis(20));
        let stats = tx.queue_stats();
        if stats.pushed == stats.popped {
            break; // drained (the thread may still hold the last in place)
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    let (seen, rx) = here.join().unwrap();
    let stats = rx.queue_stats();
    eprintln!(
        "{} tagged messages checked; kills: {producer_kills} producers, {consumer_kills} \
         consumers; {stats:?}",
        seen.tags.len()
    );
    assert!(
        seen.bad.is_empty(),
        "{:?}",
        &seen.bad[..seen.bad.len().min(5)]
    );
    assert_eq!(seen.dup, 0, "messages taken twice");
    if let Ok(why) = std::fs::read_to_string(&bad_file) {
        let _ = std::fs::remove_file(&bad_file);
        panic!("a child consumer saw a message not whole: {why}");
    }
    assert!(
        seen.tags.contains(&tag),
        "the last message arrived (pushed {}, popped {})",
        stats.pushed,
        stats.popped
    );
    assert!(
        stats.lost_in_push <= producer_kills,
        "lost_in_push {} > producer kills {producer_kills}",
        stats.lost_in_push
    );
    assert!(
        stats.lost_in_consume <= consumer_kills,
        "lost_in_consume {} > consumer kills {consumer_kills}",
        stats.lost_in_consume
    );
}

/// `var_max_message` and the builder agree with the arithmetic used here.
#[test]
fn the_largest_message_is_half_the_arena_less_a_header() {
    assert_eq!(var_max_message(64), MAX);
    let bus = TestBus::new("varq-adv-max");
    let b = bus.open();
    let mut tx = queue(&b).producer_bytes().unwrap();
    let mut rx = queue(&b).consumer_bytes().unwrap();
    // Every tail index, the largest message: padding of every size.
    for k in 0..70u64 {
        tx.push_bytes(&vec![1; (k % 3) as usize * 60]).unwrap();
        assert_eq!(rx.pop_bytes().unwrap().len(), (k % 3) as usize * 60);
        let msg = pattern_message(k, MAX);
        tx.push_bytes(&msg).unwrap();
        assert_eq!(rx.pop_bytes().unwrap(), msg);
    }
}

//! Loans across real processes: a publisher that writes messages in place
//! with random lengths, commits some, abandons others half-written, sends
//! others by copy, and a publisher killed with `kill -9` while it holds a
//! loan; in fixed-slot and variable-size topics, overwrite and lossless;
//! the same for work-queue producers.

mod common;

use std::time::Duration;

use common::{args, child_role, report, spawn_role, spawn_role_with_env, TestBus};
use shmbus::{Bus, RecvError, StartAt, WaitStrategy};

const SLOT: u32 = 1024;

/// Byte `j` of committed message `seq`.
fn byte(seq: u64, j: usize) -> u8 {
    (seq.wrapping_mul(31) as usize).wrapping_add(j * 7) as u8 ^ 0x5a
}

/// What an abandoned loan writes: never a byte of a committed message's
/// pattern at that place, as far as the check is concerned (the check
/// compares every byte against `byte`).
const ABANDONED: u8 = 0xee;

/// A small seeded generator (xorshift), the same in both processes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The work queue of the queue-loan tests.
fn queue(bus: &Bus) -> shmbus::TopicBuilder<'_> {
    bus.topic("jobs")
        .slot_size(SLOT)
        .capacity(64)
        .wait(WaitStrategy::Block)
        .liveness_check_interval(Duration::from_millis(20))
}

/// A queue message of producer `producer`, its `k`-th commit, `len` bytes
/// (at least 16): the two numbers, then the pattern of `byte`.
fn job(producer: u64, k: u64, len: usize) -> Vec<u8> {
    let mut msg: Vec<u8> = (0..len).map(|j| byte(producer << 32 | k, j)).collect();
    msg[..8].copy_from_slice(&producer.to_le_bytes());
    msg[8..16].copy_from_slice(&k.to_le_bytes());
    msg
}

/// Arena of the variable-size topics: 16 KiB, so messages of up to 8 KiB
/// with random lengths lap it every few messages.
const ARENA: u64 = 16 << 10;

/// A broadcast topic's kind, as the tests and their children agree on it.
#[derive(Debug, Clone, Copy)]
struct Kind {
    lossless: bool,
    variable: bool,
}

impl Kind {
    fn arg(self) -> String {
        format!("{}{}", u8::from(self.lossless), u8::from(self.variable))
    }

    fn parse(arg: &str) -> Kind {
        Kind {
            lossless: arg.as_bytes()[0] == b'1',
            variable: arg.as_bytes()[1] == b'1',
        }
    }

    /// Longest message: the slot, or half the arena.
    fn max_len(self) -> usize {
        if self.variable {
            ARENA as usize / 2
        } else {
            SLOT as usize
        }
    }
}

fn topic(bus: &Bus, kind: Kind) -> shmbus::TopicBuilder<'_> {
    let t = bus.topic("frames").capacity(64);
    let t = if kind.variable {
        t.variable(ARENA)
    } else {
        t.slot_size(SLOT)
    };
    if kind.lossless {
        t.lossless(2)
    } else {
        t
    }
}

const LOSSLESS: Kind = Kind {
    lossless: true,
    variable: false,
};

/// Entry point of child processes; does nothing when run as a normal test.
#[test]
#[ignore = "entry point of child processes; the tests that spawn them run it"]
fn child_role_entry() {
    let Some((role, args)) = child_role() else {
        return;
    };
    let bus = common::open_bus(&args[0]);
    match role.as_str() {
        // args: bus kind ops seed. Random loans: commit, abandon
        // half-written, or abandon untouched, and copying sends; reports how
        // many it published.
        "loans" => {
            let kind = Kind::parse(&args[1]);
            let ops: u64 = args[2].parse().unwrap();
            let mut rng = Rng(args[3].parse().unwrap());
            let mut tx = topic(&bus, kind).publisher_bytes().unwrap();
            report("READY");
            let mut committed = 0u64;
            for _ in 0..ops {
                let len = (rng.next() % (kind.max_len() as u64 + 1)) as usize;
                let op = rng.next() % 5;
                if op == 4 {
                    let msg: Vec<u8> = (0..len).map(|j| byte(committed, j)).collect();
                    assert_eq!(tx.send_bytes(&msg).unwrap(), committed);
                    committed += 1;
                    continue;
                }
                let mut loan = tx.loan_bytes(len).unwrap();
                let seq = loan.seq();
                assert_eq!(seq, committed, "abandoned loans take no sequence number");
                match op {
                    0 => {
                        // Half-written, then dropped.
                        loan.write_at(0, &vec![ABANDONED; len / 2]).unwrap();
                    }
                    // Dropped untouched.
                    1 => {}
                    _ => {
                        let msg: Vec<u8> = (0..len).map(|j| byte(seq, j)).collect();
                        if op == 3 {
                            // Whole, in one write (stored as `send_bytes`
                            // stores), over a first whole write of others.
                            loan.write_at(0, &vec![ABANDONED; len]).unwrap();
                            loan.write_at(0, &msg).unwrap();
                        } else {
                            // Written back to front in uneven pieces.
                            let mut end = len;
                            while end > 0 {
                                let start = end.saturating_sub(1 + (rng.next() % 97) as usize);
                                loan.write_at(start, &msg[start..end]).unwrap();
                                end = start;
                            }
                        }
                        assert_eq!(loan.commit().unwrap(), seq);
                        committed += 1;
                    }
                }
            }
            report(format!("COMMITTED {committed}"));
        }
        // args: bus kind. Publishes 10 messages, then loans an 11th, writes
        // half of it, and stalls there (test hook) until killed.
        "loan-and-stall" => {
            let kind = Kind::parse(&args[1]);
            let mut tx = topic(&bus, kind).publisher_bytes().unwrap();
            for seq in 0..10u64 {
                let msg: Vec<u8> = (0..100).map(|j| byte(seq, j)).collect();
                tx.send_bytes(&msg).unwrap();
            }
            let mut loan = tx.loan_bytes(100).unwrap();
            report("LOANED");
            loan.write_at(0, &[ABANDONED; 50]).unwrap();
            panic!("the hook should have stopped this process");
        }
        // args: bus producer ops seed. Random queue loans: commit, abandon
        // half-written, or abandon untouched; reports how many it committed.
        "queue-loans" => {
            let producer: u64 = args[1].parse().unwrap();
            let ops: u64 = args[2].parse().unwrap();
            let mut rng = Rng(args[3].parse().unwrap());
            let mut tx = queue(&bus).producer_bytes().unwrap();
            report("READY");
            let mut committed = 0u64;
            for _ in 0..ops {
                let len = 16 + (rng.next() % (u64::from(SLOT) - 15)) as usize;
                let mut loan = tx.loan_bytes(len).unwrap();
                match rng.next() % 4 {
                    0 => loan[..len / 2].fill(ABANDONED), // half-written, dropped
                    1 => {}                               // dropped untouched
                    _ => {
                        loan.copy_from_slice(&job(producer, committed, len));
                        loan.commit();
                        committed += 1;
                    }
                }
            }
            report(format!("COMMITTED {committed}"));
        }
        // args: bus. Pushes 10 jobs, then loans an 11th, writes half of it,
        // and waits to be killed.
        "queue-loan-and-stall" => {
            let mut tx = queue(&bus).producer_bytes().unwrap();
            for k in 0..10u64 {
                tx.push_bytes(&job(0, k, 100)).unwrap();
            }
            let mut loan = tx.loan_bytes(100).unwrap();
            loan[..50].fill(ABANDONED);
            report("LOANED");
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        other => panic!("unknown child role {other}"),
    }
}

/// Every committed message arrives whole, once, in order (lossless), or
/// is counted as lost (overwrite, with a subscriber slow on purpose):
/// received + lagged == committed, and nothing of an abandoned loan is
/// ever seen.
fn random_loans(kind: Kind, seed: u64) {
    const OPS: u64 = 4_000;
    let bus = TestBus::new(&format!("loans-{}", kind.arg()));
    let b = bus.open();
    let mut rx = topic(&b, kind)
        .start_at(StartAt::Next)
        .wait(WaitStrategy::Block)
        .subscriber_bytes()
        .unwrap();
    let mut child = spawn_role("loans", &args(&[&bus.name, &kind.arg(), &OPS, &seed]));
    child.expect_line("READY");
    let (mut received, mut lagged, mut bad) = (0u64, 0u64, Vec::new());
    let mut longest = 0;
    loop {
        let seq = rx.next_seq();
        match rx.recv_bytes() {
            Ok(msg) => {
                if let Some(j) = (0..msg.len()).find(|&j| msg[j] != byte(seq, j)) {
                    bad.push(format!(
                        "message {seq} ({} bytes): byte {j} is {:#x}",
                        msg.len(),
                        msg[j]
                    ));
                }
                longest = longest.max(msg.len());
                received += 1;
                if !kind.lossless && received % 64 == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            Err(RecvError::Lagged(n)) => lagged += n,
            Err(RecvError::Disconnected) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let committed: u64 = child.expect_line("COMMITTED").parse().unwrap();
    child.wait_success(Duration::from_secs(30));
    assert!(bad.is_empty(), "{:#?}", &bad[..bad.len().min(10)]);
    assert!(
        committed > OPS / 3,
        "the mix commits about half: {committed}"
    );
    if kind.lossless {
        assert_eq!(
            (received, lagged),
            (committed, 0),
            "every committed message, once"
        );
        assert!(
            longest > kind.max_len() * 9 / 10,
            "lengths reach the limit: {longest}"
        );
    } else {
        assert_eq!(
            received + lagged,
            committed,
            "received + lagged == committed"
        );
    }
    eprintln!(
        "loans ({kind:?}): {committed} committed, {received} received, {lagged} lagged, longest {longest}"
    );
}

#[test]
fn random_loans_in_a_lossless_topic_arrive_whole_once_in_order() {
    random_loans(LOSSLESS, 0x9e37_79b9_7f4a_7c15);
}

#[test]
fn random_loans_in_an_overwrite_topic_are_received_or_counted_lost() {
    let kind = Kind {
        lossless: false,
        variable: false,
    };
    random_loans(kind, 0x2545_f491_4f6c_dd1d);
}

/// Variable-size lossless: the arena, not only the descriptors, holds the
/// publisher back (a few messages of up to half the arena fill it).
#[test]
fn random_loans_in_a_lossless_variable_topic_arrive_whole_once_in_order() {
    let kind = Kind {
        lossless: true,
        variable: true,
    };
    random_loans(kind, 0x1234_5678_9abc_def1);
}

/// Variable-size overwrite: lapped by the arena every few messages, the
/// subscriber is told exactly how many it lost.
#[test]
fn random_loans_in_an_overwrite_variable_topic_are_received_or_counted_lost() {
    let kind = Kind {
        lossless: false,
        variable: true,
    };
    random_loans(kind, 0x0fed_cba9_8765_4321);
}

/// A publisher killed with a loan half-written publishes nothing of it:
/// a new publisher takes the lease over, gives the next message the
/// loan's sequence number, and the subscriber gets every message whole.
fn killed_holding_a_loan(kind: Kind) {
    for trial in 0..10 {
        let bus = TestBus::new("loan-kill");
        let b = bus.open();
        let mut rx = topic(&b, kind)
            .start_at(StartAt::Next)
            .wait(WaitStrategy::Block)
            .subscriber_bytes()
            .unwrap();
        let mut child = spawn_role_with_env(
            "loan-and-stall",
            &args(&[&bus.name, &kind.arg()]),
            &[("SHMBUS_TEST_HOOK", "stall-in-loan")],
        );
        child.expect_line("LOANED");
        child.expect_line("SHMBUS-HOOK stall-in-loan");
        child.kill9();
        let mut tx = topic(&b, kind).publisher_bytes().unwrap();
        assert_eq!(tx.next_seq(), 10, "trial {trial}: the loan took no number");
        let msg: Vec<u8> = (0..100).map(|j| byte(10, j)).collect();
        tx.send_bytes(&msg).unwrap();
        for seq in 0..=10u64 {
            let got = rx.recv_bytes_timeout(Duration::from_secs(10));
            let got = match &got {
                Ok(m) => m.to_vec(),
                Err(e) => panic!("trial {trial}: message {seq}: {e}"),
            };
            let want: Vec<u8> = (0..100).map(|j| byte(seq, j)).collect();
            assert_eq!(got, want, "trial {trial}: message {seq} whole");
        }
    }
}

#[test]
fn a_publisher_killed_holding_a_loan_publishes_nothing_of_it() {
    if common::shm_only("a_publisher_killed_holding_a_loan_publishes_nothing_of_it") {
        return;
    }
    killed_holding_a_loan(LOSSLESS);
}

#[test]
fn a_variable_topic_publisher_killed_holding_a_loan_publishes_nothing_of_it() {
    if common::shm_only("a_variable_topic_publisher_killed_holding_a_loan_publishes_nothing_of_it")
    {
        return;
    }
    for lossless in [true, false] {
        killed_holding_a_loan(Kind {
            lossless,
            variable: true,
        });
    }
}

/// A write past the loan's end is refused with the numbers, and writes
/// nothing; a loan longer than the slot, or one that finds no room, is
/// refused as a send would be.
#[test]
fn loans_refuse_what_does_not_fit() {
    if common::shm_only("loans_refuse_what_does_not_fit") {
        return;
    }
    let bus = TestBus::new("loan-range");
    let b = bus.open();
    let mut tx = topic(&b, LOSSLESS).publisher_bytes().unwrap();
    let mut rx = topic(&b, LOSSLESS)
        .start_at(StartAt::Next)
        .subscriber_bytes()
        .unwrap();
    let mut loan = tx.loan_bytes(8).unwrap();
    loan.fill(1);
    let err = loan.write_at(6, b"abc").unwrap_err();
    assert_eq!(
        err,
        shmbus::LoanRangeError {
            offset: 6,
            len: 3,
            loan_len: 8
        }
    );
    assert!(
        err.to_string().contains("past the end of the 8-byte loan"),
        "{err}"
    );
    assert_eq!(
        loan.write_at(usize::MAX, b"x").map_err(|e| e.loan_len),
        Err(8)
    );
    assert_eq!(loan.commit().unwrap(), 0);
    assert_eq!(rx.recv_bytes().unwrap(), [1u8; 8]);
    assert!(matches!(
        tx.loan_bytes(SLOT as usize + 1),
        Err(shmbus::SendError::TooLarge { max, .. }) if max == SLOT as usize
    ));
    // Fill the ring without reading: the next loan has no room.
    let mut sent = 0;
    while tx.try_send_bytes(b"x").is_ok() {
        sent += 1;
        assert!(sent <= 64, "a lossless ring of 64 takes at most 64 unread");
    }
    assert!(matches!(
        tx.try_loan_bytes(1),
        Err(shmbus::TrySendError::Full)
    ));
}

/// Checks a popped queue message against `job`; returns its producer and
/// commit number.
fn check_job(msg: &[u8]) -> (u64, u64) {
    assert!(msg.len() >= 16, "a job of {} bytes", msg.len());
    let producer = u64::from_le_bytes(msg[..8].try_into().unwrap());
    let k = u64::from_le_bytes(msg[8..16].try_into().unwrap());
    assert_eq!(msg, job(producer, k, msg.len()), "job {producer}/{k} whole");
    (producer, k)
}

/// Two producer processes loan, commit and abandon at random: every
/// committed job is popped once, whole, in each producer's order, and
/// nothing of an abandoned loan is ever popped.
#[test]
fn random_queue_loans_from_two_producers_are_each_popped_once_in_order() {
    const OPS: u64 = 3_000;
    let bus = TestBus::new("qloans");
    let b = bus.open();
    let mut rx = queue(&b).consumer_bytes().unwrap();
    let mut children: Vec<_> = [0x243f_6a88_85a3_08d3u64, 0x1319_8a2e_0370_7344]
        .iter()
        .enumerate()
        .map(|(p, seed)| {
            let mut child = spawn_role("queue-loans", &args(&[&bus.name, &p, &OPS, seed]));
            child.expect_line("READY");
            child
        })
        .collect();
    let mut next = [0u64; 2];
    loop {
        match rx.pop_bytes_timeout(Duration::from_secs(20)) {
            Ok(msg) => {
                let (p, k) = check_job(msg);
                assert_eq!(k, next[p as usize], "producer {p}: FIFO, each once");
                next[p as usize] += 1;
            }
            Err(shmbus::PopTimeoutError::Disconnected) => break,
            Err(e) => panic!("after {next:?}: {e}"),
        }
    }
    for (p, child) in children.iter_mut().enumerate() {
        let committed: u64 = child.expect_line("COMMITTED").parse().unwrap();
        child.wait_success(Duration::from_secs(30));
        assert_eq!(next[p], committed, "producer {p}: every committed job");
        assert!(
            committed > OPS / 3,
            "the mix commits about half: {committed}"
        );
    }
    let stats = rx.queue_stats();
    assert_eq!((stats.lost_in_push, stats.lost_in_consume), (0, 0));
    eprintln!("queue loans: {next:?} committed and popped");
}

/// A producer killed holding a half-written queue loan loses that slot
/// only: consumers pop everything before it, survivors recover the slot
/// (counted in `lost_in_push`), and the queue keeps flowing.
#[test]
fn a_producer_killed_holding_a_queue_loan_loses_only_that_slot() {
    if common::shm_only("a_producer_killed_holding_a_queue_loan_loses_only_that_slot") {
        return;
    }
    for trial in 0..5 {
        let bus = TestBus::new("qloan-kill");
        let b = bus.open();
        let mut rx = queue(&b).consumer_bytes().unwrap();
        let mut child = spawn_role("queue-loan-and-stall", &args(&[&bus.name]));
        child.expect_line("LOANED");
        child.kill9();
        let mut tx = queue(&b).producer_bytes().unwrap();
        tx.push_bytes(&job(1, 0, 100)).unwrap();
        for k in 0..10u64 {
            let msg = rx.pop_bytes_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(check_job(msg), (0, k), "trial {trial}");
        }
        let msg = rx.pop_bytes_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(check_job(msg), (1, 0), "trial {trial}: past the dead loan");
        let stats = rx.queue_stats();
        assert_eq!(
            stats.lost_in_push, 1,
            "trial {trial}: the loan's slot, counted"
        );
    }
}

/// A typed queue loan is the slot itself; an abandoned one is skipped, and
/// a loan refused for lack of room pushes nothing.
#[test]
fn typed_queue_loans_write_in_place_and_abandoned_ones_are_skipped() {
    if common::shm_only("typed_queue_loans_write_in_place_and_abandoned_ones_are_skipped") {
        return;
    }
    let bus = TestBus::new("qloan-typed");
    let b = bus.open();
    let mut tx = b.topic("q").capacity(4).producer::<[u32; 8]>().unwrap();
    let mut rx = b.topic("q").consumer::<[u32; 8]>().unwrap();
    for i in 0..4u32 {
        let mut loan = tx.loan().unwrap();
        assert_eq!(loan.len(), 32);
        *loan = [i; 8];
        loan[7] = 100 + i;
        if i == 1 {
            drop(loan);
        } else {
            loan.commit();
        }
    }
    assert!(matches!(tx.try_loan(), Err(shmbus::TryPushError::Full(()))));
    for i in [0u32, 2, 3] {
        let mut want = [i; 8];
        want[7] = 100 + i;
        assert_eq!(rx.pop().unwrap(), want);
    }
    assert!(matches!(rx.try_pop(), Err(shmbus::TryPopError::Empty)));
    assert!(matches!(
        b.topic("qb")
            .slot_size(8)
            .producer_bytes()
            .unwrap()
            .loan_bytes(9),
        Err(shmbus::PushError::TooLarge { len: 9, max: 8 })
    ));
}

/// A typed broadcast loan, whole or field by field; an abandoned one takes
/// no sequence number.
#[test]
fn typed_broadcast_loans_write_whole_or_by_field() {
    use zerocopy::IntoBytes;
    let bus = TestBus::new("loan-typed");
    let b = bus.open();
    let mut tx = b.publisher::<[u64; 4]>("t").unwrap();
    let mut rx = b
        .topic("t")
        .start_at(StartAt::Next)
        .subscriber::<[u64; 4]>()
        .unwrap();
    let mut loan = tx.loan().unwrap();
    assert_eq!((loan.seq(), loan.len()), (0, 32));
    loan.write(&[1, 2, 3, 4]);
    loan.write_at(16, 30u64.as_bytes()).unwrap();
    assert!(loan.write_at(32, &[0]).is_err());
    assert_eq!(loan.commit().unwrap(), 0);
    {
        let mut abandoned = tx.loan().unwrap();
        abandoned.write(&[9; 4]);
    }
    let mut loan = tx.try_loan().unwrap();
    assert_eq!(loan.seq(), 1, "the abandoned loan took no number");
    loan.write(&[5; 4]);
    loan.commit().unwrap();
    assert_eq!(rx.recv().unwrap(), [1, 2, 30, 4]);
    assert_eq!(rx.recv().unwrap(), [5; 4]);
    assert!(rx.try_recv().is_err());
}

//! Waiting on many things at once, across real processes: `Select` over
//! several topics and a queue, the pollable fd under `epoll`, and async
//! receive on tokio with futures dropped half-way.

mod common;

use std::time::{Duration, Instant};

use common::{args, child_role, report, spawn_role, ChildProc, TestBus, Tick};
use shmbus::{
    Bus, Consumer, PopError, RecvError, Select, SelectError, Selectable, Subscriber, TryPopError,
    TryRecvError,
};

const CAPACITY: u32 = 256;
const MAX_SUBS: u32 = 4;

/// The lossless broadcast topic every role and test here uses.
fn ticks<'a>(bus: &'a Bus, topic: &'a str) -> shmbus::TopicBuilder<'a> {
    bus.topic(topic).capacity(CAPACITY).lossless(MAX_SUBS)
}

fn jobs(bus: &Bus) -> shmbus::TopicBuilder<'_> {
    bus.topic("jobs").capacity(CAPACITY)
}

/// A job: producer id in the high half, sequence in the low.
fn job(id: u64, seq: u64) -> u64 {
    (id << 32) | seq
}

fn wait_for(barrier: &str) {
    while !std::path::Path::new(barrier).exists() {
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Entry point of child processes; does nothing when run as a normal test.
#[test]
#[ignore = "entry point of child processes; the tests that spawn them run it"]
fn child_role_entry() {
    let Some((role, args)) = child_role() else {
        return;
    };
    let bus = common::open_bus(&args[0]);
    match role.as_str() {
        // args: bus topic count barrier burst pause_us. Publishes `count`
        // ticks losslessly, `burst` at a time with a pause between bursts.
        "publish" => {
            let count: u64 = args[2].parse().unwrap();
            let burst: u64 = args[4].parse().unwrap();
            let pause = Duration::from_micros(args[5].parse().unwrap());
            let mut tx = ticks(&bus, &args[1]).publisher::<Tick>().unwrap();
            report("READY");
            wait_for(&args[3]);
            for seq in 0..count {
                tx.send(&Tick::new(seq)).unwrap();
                if (seq + 1) % burst == 0 {
                    std::thread::sleep(pause);
                }
            }
            report("DONE");
        }
        // args: bus id count barrier burst pause_us. Pushes `count` jobs.
        "push" => {
            let id: u64 = args[1].parse().unwrap();
            let count: u64 = args[2].parse().unwrap();
            let burst: u64 = args[4].parse().unwrap();
            let pause = Duration::from_micros(args[5].parse().unwrap());
            let mut tx = jobs(&bus).producer::<u64>().unwrap();
            report("READY");
            wait_for(&args[3]);
            for seq in 0..count {
                tx.push(job(id, seq)).unwrap();
                if (seq + 1) % burst == 0 {
                    std::thread::sleep(pause);
                }
            }
            report("DONE");
        }
        // args: bus topic count. Receives `count` ticks (pausing 5 ms every
        // 100, so the publisher meets a full ring and waits), checks each.
        "subscribe" => {
            let count: u64 = args[2].parse().unwrap();
            let mut rx = ticks(&bus, &args[1]).subscriber::<Tick>().unwrap();
            report("READY");
            let mut errors = 0u64;
            for expected in 0..count {
                let tick = rx.recv().unwrap();
                errors += u64::from(!tick.is_whole() || tick.seq != expected);
                if expected % 100 == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            report(format!("RESULT {errors}"));
        }
        // args: bus count. Pops `count` jobs (pausing likewise), checks
        // their order.
        "consume" => {
            let count: u64 = args[1].parse().unwrap();
            let mut rx = jobs(&bus).consumer::<u64>().unwrap();
            report("READY");
            let mut errors = 0u64;
            for expected in 0..count {
                errors += u64::from(rx.pop().unwrap() != job(0, expected));
                if expected % 100 == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            report(format!("RESULT {errors}"));
        }
        // args: bus. Makes 10 pollable subscribers and consumers, arms and
        // drops them; reports its doorbell threads before and after.
        "doorbell-threads" => {
            let doorbells = || {
                std::fs::read_dir("/proc/self/task")
                    .unwrap()
                    .filter(|t| {
                        let comm = t.as_ref().unwrap().path().join("comm");
                        std::fs::read_to_string(comm).unwrap_or_default().trim()
                            == "shmbus-doorbell"
                    })
                    .count()
            };
            let mut subs: Vec<_> = (0..5)
                .map(|_| bus.subscriber::<u64>("t").unwrap())
                .collect();
            let mut cons: Vec<_> = (0..5).map(|_| bus.consumer::<u64>("q").unwrap()).collect();
            for s in &mut subs {
                s.event_fd().unwrap();
            }
            for c in &mut cons {
                c.event_fd().unwrap();
            }
            std::thread::sleep(Duration::from_millis(50));
            let armed = doorbells();
            drop((subs, cons));
            let gone = common::eventually(Duration::from_secs(5), || doorbells() == 0);
            report(format!("RESULT {armed} {gone}"));
        }
        // args: bus. A consumer of "jobs" with its event fd armed, until
        // killed.
        "armed-fd" => {
            // A long interval: the fd's helper thread counts itself out
            // when a sleep times out and stays idle until re-armed, so with
            // the default 100 ms it would be counted only that long.
            let mut rx = jobs(&bus)
                .liveness_check_interval(Duration::from_secs(60))
                .consumer::<u64>()
                .unwrap();
            rx.event_fd().unwrap();
            report("READY");
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        // args: bus topic. Holds the publisher lease until killed.
        "hold-publisher" => {
            let mut tx = ticks(&bus, &args[1]).publisher::<Tick>().unwrap();
            tx.send(&Tick::new(0)).unwrap();
            report("READY");
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        other => panic!("unknown child role {other}"),
    }
}

/// A barrier file that children wait for, removed on drop.
struct Barrier(String);

impl Barrier {
    fn new(bus: &TestBus) -> Self {
        Barrier(format!("/tmp/{}.go", bus.name))
    }

    fn open(&self) {
        std::fs::write(&self.0, b"go").unwrap();
    }
}

impl Drop for Barrier {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Per-topic and per-producer bookkeeping of what arrived.
#[derive(Default)]
struct Seen {
    next: [u64; 3],
    jobs: Vec<u64>,
    errors: Vec<String>,
}

impl Seen {
    fn tick(&mut self, topic: usize, got: Result<Tick, TryRecvError>) -> bool {
        match got {
            Ok(tick) => {
                if !tick.is_whole() || tick.seq != self.next[topic] {
                    self.errors.push(format!(
                        "topic {topic}: got seq {} (whole: {}), expected {}",
                        tick.seq,
                        tick.is_whole(),
                        self.next[topic]
                    ));
                }
                self.next[topic] = tick.seq + 1;
                true
            }
            Err(TryRecvError::Disconnected) => false,
            // A ready subscriber never says Empty: it is the only reader of
            // its cursor.
            Err(e) => {
                self.errors.push(format!("topic {topic}: {e}"));
                true
            }
        }
    }

    fn job(&mut self, got: Result<u64, TryPopError>) -> bool {
        match got {
            Ok(j) => {
                let (id, seq) = (j >> 32, j & 0xffff_ffff);
                if seq != self.jobs[id as usize] {
                    self.errors.push(format!(
                        "producer {id}: job {seq}, expected {}",
                        self.jobs[id as usize]
                    ));
                }
                self.jobs[id as usize] = seq + 1;
                true
            }
            Err(TryPopError::Disconnected) => false,
            // The one consumer of the queue: ready means poppable, unless
            // the paced check of a claimed slot made it ready.
            Err(TryPopError::Empty) => true,
            Err(e) => {
                self.errors.push(format!("queue: {e}"));
                true
            }
        }
    }
}

#[test]
fn select_over_three_topics_and_a_queue_fed_by_four_processes_gets_everything_once_in_order_without_spinning(
) {
    const PER_TOPIC: u64 = 4_000;
    const JOBS: u64 = 4_000;
    let bus = TestBus::new("select-4");
    let b = bus.open();
    let barrier = Barrier::new(&bus);
    // Sleeping at once when nothing is ready (a select waits as its first
    // handle says): the adaptive default spins a few thousand polls first,
    // which in a debug build is milliseconds of CPU per quiet spell.
    let mut subs: Vec<Subscriber<Tick>> = ["a", "b", "c"]
        .iter()
        .map(|t| {
            ticks(&b, t)
                .wait(shmbus::WaitStrategy::Block)
                .subscriber::<Tick>()
                .unwrap()
        })
        .collect();
    let mut queue: Consumer<u64> = jobs(&b).consumer().unwrap();
    // Bursts of 50, then 5 ms of quiet: the selector must sleep, not spin,
    // through the quiet.
    let mut children: Vec<ChildProc> = ["a", "b", "c"]
        .iter()
        .map(|t| {
            spawn_role(
                "publish",
                &args(&[&bus.name, t, &PER_TOPIC, &barrier.0, &50, &5000]),
            )
        })
        .collect();
    children.push(spawn_role(
        "push",
        &args(&[&bus.name, &0, &JOBS, &barrier.0, &50, &5000]),
    ));
    for child in &mut children {
        child.expect_line("READY");
    }

    let mut seen = Seen {
        jobs: vec![0],
        ..Seen::default()
    };
    // Which handles are still open: 0..3 the topics, 3 the queue.
    let mut open = [true; 4];
    let mut sel = Select::new();
    let mut picks = [0u64; 4];
    let (cpu0, wall0) = (thread_cpu(), Instant::now());
    barrier.open();
    while open.iter().any(|&o| o) {
        let pick = {
            let (mut handles, mut ids): (Vec<&mut dyn Selectable>, Vec<usize>) =
                (Vec::new(), Vec::new());
            for (i, sub) in subs.iter_mut().enumerate() {
                if open[i] {
                    handles.push(sub);
                    ids.push(i);
                }
            }
            if open[3] {
                handles.push(&mut queue);
                ids.push(3);
            }
            let at = sel
                .select_timeout(&mut handles, Duration::from_secs(30))
                .expect("a handle ready within 30 s");
            ids[at]
        };
        picks[pick] += 1;
        open[pick] = if pick < 3 {
            seen.tick(pick, subs[pick].try_recv())
        } else {
            seen.job(queue.try_pop())
        };
    }
    let (cpu, wall) = (thread_cpu() - cpu0, wall0.elapsed());
    for child in &mut children {
        child.wait_success(Duration::from_secs(30));
    }

    assert!(
        seen.errors.is_empty(),
        "{:#?}",
        &seen.errors[..seen.errors.len().min(20)]
    );
    assert_eq!(seen.next, [PER_TOPIC; 3], "every tick of every topic, once");
    assert_eq!(seen.jobs, [JOBS], "every job, once, in order");
    // 80 quiet spells of 5 ms per child: a selector that spun through them
    // would use about as much CPU as wall time.
    assert!(
        cpu < wall / 3,
        "the selecting thread used {cpu:?} of CPU in {wall:?}: it spun instead of sleeping"
    );
    eprintln!("select: {picks:?} picks, {cpu:?} CPU in {wall:?}");
}

#[test]
fn select_says_timeout_and_no_handles_and_wakes_for_a_killed_publisher() {
    let bus = TestBus::new("select-kill");
    let b = bus.open();
    let mut sel = Select::new();
    assert_eq!(sel.select(&mut []), Err(SelectError::NoHandles));

    let mut rx = ticks(&b, "t")
        .liveness_check_interval(Duration::from_millis(20))
        .subscriber::<Tick>()
        .unwrap();
    let started = Instant::now();
    assert_eq!(
        sel.select_timeout(&mut [&mut rx], Duration::from_millis(50)),
        Err(SelectError::Timeout)
    );
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(sel.try_select(&mut [&mut rx]), None);

    let mut child = spawn_role("hold-publisher", &args(&[&bus.name, &"t"]));
    child.expect_line("READY");
    assert_eq!(
        sel.select_timeout(&mut [&mut rx], Duration::from_secs(10)),
        Ok(0)
    );
    assert_eq!(rx.try_recv().map(|t| t.seq), Ok(0));
    child.kill9();
    // Nothing is published any more: the select wakes at its liveness
    // check and the subscriber says why.
    assert_eq!(
        sel.select_timeout(&mut [&mut rx], Duration::from_secs(10)),
        Ok(0),
        "select noticed the publisher's death"
    );
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
}

/// Reads every event of `epoll` for up to `limit`; returns the ready
/// descriptors' data.
fn epoll_wait(epoll: &impl std::os::fd::AsFd, limit: Duration) -> Vec<u64> {
    use rustix::event::epoll;
    let mut events = [epoll::Event {
        flags: epoll::EventFlags::empty(),
        data: epoll::EventData::new_u64(0),
    }; 4];
    let timeout = rustix::time::Timespec {
        tv_sec: limit.as_secs() as i64,
        tv_nsec: i64::from(limit.subsec_nanos()),
    };
    let ready = epoll::wait(epoll, &mut events[..], Some(&timeout)).unwrap();
    events[..ready].iter().map(|e| e.data.u64()).collect()
}

#[test]
fn epoll_on_the_event_fds_of_a_subscriber_and_a_consumer_sees_every_message_and_the_end() {
    use rustix::event::epoll;
    const COUNT: u64 = 3_000;
    let bus = TestBus::new("epoll");
    let b = bus.open();
    let barrier = Barrier::new(&bus);
    let mut rx = ticks(&b, "t").subscriber::<Tick>().unwrap();
    let mut queue = jobs(&b).consumer::<u64>().unwrap();
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC).unwrap();
    for (data, fd) in [
        (0u64, rx.event_fd().unwrap()),
        (1, queue.event_fd().unwrap()),
    ] {
        epoll::add(
            &ep,
            fd,
            epoll::EventData::new_u64(data),
            epoll::EventFlags::IN,
        )
        .unwrap();
    }
    assert!(
        epoll_wait(&ep, Duration::from_millis(20)).is_empty(),
        "nothing is readable before anything is sent"
    );
    let mut children = [
        spawn_role(
            "publish",
            &args(&[&bus.name, &"t", &COUNT, &barrier.0, &100, &1000]),
        ),
        spawn_role(
            "push",
            &args(&[&bus.name, &0, &COUNT, &barrier.0, &100, &1000]),
        ),
    ];
    for child in &mut children {
        child.expect_line("READY");
    }
    barrier.open();

    let mut seen = Seen {
        jobs: vec![0],
        ..Seen::default()
    };
    let (mut sub_open, mut queue_open, mut wakes) = (true, true, 0u64);
    let deadline = Instant::now() + Duration::from_secs(60);
    while sub_open || queue_open {
        assert!(
            Instant::now() < deadline,
            "epoll loop did not finish in 60 s"
        );
        for data in epoll_wait(&ep, Duration::from_secs(10)) {
            wakes += 1;
            // Drain until Empty, which re-arms the fd.
            if data == 0 && sub_open {
                loop {
                    match rx.try_recv() {
                        Err(TryRecvError::Empty) => break,
                        got => {
                            if !seen.tick(0, got) {
                                sub_open = false;
                                // Readable for good now: stop watching it.
                                epoll::delete(&ep, rx.event_fd().unwrap()).unwrap();
                                break;
                            }
                        }
                    }
                }
            }
            if data == 1 && queue_open {
                loop {
                    match queue.try_pop() {
                        Err(TryPopError::Empty) => break,
                        got => {
                            if !seen.job(got) {
                                queue_open = false;
                                epoll::delete(&ep, queue.event_fd().unwrap()).unwrap();
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
    for child in &mut children {
        child.wait_success(Duration::from_secs(30));
    }
    assert!(seen.errors.is_empty(), "{:#?}", seen.errors);
    assert_eq!(seen.next[0], COUNT);
    assert_eq!(seen.jobs, [COUNT]);
    // Far fewer wakes than messages would mean batching; more than a few
    // per burst would mean a busy fd.
    assert!(
        wakes <= 4 * COUNT,
        "{wakes} wakes for {} messages",
        2 * COUNT
    );
    eprintln!("epoll: {wakes} wakes for {} messages", 2 * COUNT);
}

#[test]
fn async_receives_dropped_half_way_by_a_timeout_lose_nothing() {
    const COUNT: u64 = 1_000;
    let bus = TestBus::new("async");
    let b = bus.open();
    let barrier = Barrier::new(&bus);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (received, dropped) = rt.block_on(async {
        let mut rx = ticks(&b, "t")
            .subscriber::<Tick>()
            .unwrap()
            .into_async()
            .unwrap();
        let mut queue = jobs(&b).consumer::<u64>().unwrap().into_async().unwrap();
        let mut children = [
            // Pauses of 3 ms every 20 messages: the receive after each
            // waits, and the 1 ms timeout (tokio's timer granularity) cuts
            // most of those waits short.
            spawn_role(
                "publish",
                &args(&[&bus.name, &"t", &COUNT, &barrier.0, &20, &3000]),
            ),
            spawn_role(
                "push",
                &args(&[&bus.name, &0, &COUNT, &barrier.0, &20, &3000]),
            ),
        ];
        for child in &mut children {
            child.expect_line("READY");
        }
        barrier.open();
        let (mut next, mut next_job, mut dropped) = (0u64, 0u64, 0u64);
        let short = Duration::from_millis(1);
        while next < COUNT || next_job < COUNT {
            if next < COUNT {
                match tokio::time::timeout(short, rx.recv()).await {
                    Ok(Ok(tick)) => {
                        assert!(tick.is_whole());
                        assert_eq!(tick.seq, next, "in order, nothing lost or repeated");
                        next += 1;
                    }
                    Ok(Err(e)) => panic!("recv: {e}"),
                    Err(_) => dropped += 1,
                }
            }
            if next_job < COUNT {
                match tokio::time::timeout(short, queue.pop()).await {
                    Ok(Ok(j)) => {
                        assert_eq!(j, job(0, next_job), "in order, nothing lost or repeated");
                        next_job += 1;
                    }
                    Ok(Err(e)) => panic!("pop: {e}"),
                    Err(_) => dropped += 1,
                }
            }
        }
        for child in &mut children {
            child.wait_success(Duration::from_secs(30));
        }
        // Both writers are gone: the futures say so.
        assert_eq!(rx.recv().await, Err(RecvError::Disconnected));
        assert_eq!(queue.pop().await, Err(PopError::Disconnected));
        (next + next_job, dropped)
    });
    assert_eq!(received, 2 * COUNT);
    assert!(
        dropped > 0,
        "no future was dropped half-way: the test tested nothing"
    );
    eprintln!("async: {received} received, {dropped} futures dropped half-way");
}

#[test]
fn async_sends_into_full_rings_dropped_half_way_publish_each_message_once() {
    const COUNT: u64 = 2_000;
    let bus = TestBus::new("async-send");
    let b = bus.open();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dropped = rt.block_on(async {
        let mut children = [
            spawn_role("subscribe", &args(&[&bus.name, &"t", &COUNT])),
            spawn_role("consume", &args(&[&bus.name, &COUNT])),
        ];
        for child in &mut children {
            child.expect_line("READY");
        }
        let mut tx = ticks(&b, "t")
            .publisher::<Tick>()
            .unwrap()
            .into_async()
            .unwrap();
        let mut jobs_tx = jobs(&b).producer::<u64>().unwrap().into_async().unwrap();
        let (mut next, mut next_job, mut dropped) = (0u64, 0u64, 0u64);
        let short = Duration::from_millis(1);
        while next < COUNT || next_job < COUNT {
            if next < COUNT {
                match tokio::time::timeout(short, tx.send(&Tick::new(next))).await {
                    Ok(Ok(seq)) => {
                        assert_eq!(seq, next);
                        next += 1;
                    }
                    Ok(Err(e)) => panic!("send: {e}"),
                    Err(_) => dropped += 1,
                }
            }
            if next_job < COUNT {
                match tokio::time::timeout(short, jobs_tx.push(job(0, next_job))).await {
                    Ok(Ok(())) => next_job += 1,
                    Ok(Err(e)) => panic!("push: {e}"),
                    Err(_) => dropped += 1,
                }
            }
        }
        for child in &mut children {
            assert_eq!(
                child.expect_line("RESULT"),
                "0",
                "every message once, in order"
            );
            child.wait_success(Duration::from_secs(30));
        }
        dropped
    });
    assert!(
        dropped > 0,
        "no send was dropped half-way: the test tested nothing"
    );
    eprintln!("async send: {dropped} futures dropped half-way");
}

#[test]
fn into_async_outside_a_runtime_is_an_error_that_says_so() {
    let bus = TestBus::new("async-nort");
    let b = bus.open();
    let rx = ticks(&b, "t").subscriber::<Tick>().unwrap();
    let err = rx.into_async().unwrap_err().to_string();
    assert!(err.contains("no tokio runtime"), "{err}");
}

#[test]
fn a_select_spans_buses_and_is_fair_to_handles_that_stay_ready() {
    let (bus_a, bus_b) = (TestBus::new("select-bus-a"), TestBus::new("select-bus-b"));
    let (a, b) = (bus_a.open(), bus_b.open());
    let mut rx_a = a.subscriber::<u64>("t").unwrap();
    let mut rx_b = b.subscriber::<u64>("t").unwrap();
    let mut tx_a = a.publisher::<u64>("t").unwrap();
    let mut tx_b = b.publisher::<u64>("t").unwrap();
    for i in 0..10 {
        tx_a.send(&i).unwrap();
        tx_b.send(&(100 + i)).unwrap();
    }
    // Both stay ready throughout: the picks alternate rather than drain
    // one first.
    let mut sel = Select::new();
    let mut order = Vec::new();
    for _ in 0..20 {
        let i = sel
            .select_timeout(&mut [&mut rx_a, &mut rx_b], Duration::from_secs(5))
            .unwrap();
        let got = if i == 0 {
            rx_a.try_recv()
        } else {
            rx_b.try_recv()
        };
        order.push((i, got.unwrap()));
    }
    let firsts: Vec<usize> = order.iter().map(|&(i, _)| i).collect();
    assert_eq!(firsts, [0, 1].repeat(10), "{order:?}");
    let from_a: Vec<u64> = order.iter().filter(|o| o.0 == 0).map(|o| o.1).collect();
    assert_eq!(from_a, (0..10).collect::<Vec<_>>());
}

#[test]
fn an_async_subscriber_is_a_stream_that_ends_when_the_publisher_is_gone() {
    use futures_core::Stream;
    let bus = TestBus::new("async-stream");
    let b = bus.open();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let got = rt.block_on(async {
        let mut rx = b.subscriber::<u64>("t").unwrap().into_async().unwrap();
        let mut tx = b.publisher::<u64>("t").unwrap();
        let sender = async {
            for i in 0..5 {
                tx.send(&i).unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            drop(tx);
        };
        let reader = async {
            let mut got = Vec::new();
            while let Some(item) =
                std::future::poll_fn(|cx| std::pin::Pin::new(&mut rx).poll_next(cx)).await
            {
                got.push(item.unwrap());
            }
            got
        };
        tokio::join!(sender, reader).1
    });
    assert_eq!(got, [0, 1, 2, 3, 4]);
}

#[test]
fn doorbell_threads_end_with_their_handles() {
    if common::shm_only("doorbell_threads_end_with_their_handles") {
        return;
    }
    let bus = TestBus::new("doorbells");
    let _b = bus.open();
    let mut child = spawn_role("doorbell-threads", &args(&[&bus.name]));
    assert_eq!(
        child.expect_line("RESULT"),
        "10 true",
        "10 armed, then none"
    );
    child.wait_success(Duration::from_secs(30));
}

/// A process killed while its pollable consumer is armed leaves the
/// sleeper its doorbell thread counted; the next push's wake finds nobody
/// and forgets it: one wake call, once, as for any sleeper killed asleep.
#[test]
fn a_process_killed_with_an_armed_event_fd_costs_one_wake_call_once() {
    if common::shm_only("a_process_killed_with_an_armed_event_fd_costs_one_wake_call_once") {
        return;
    }
    let bus = TestBus::new("fd-kill");
    let b = bus.open();
    let mut tx = jobs(&b).producer::<u64>().unwrap();
    let sleeping = || common::topic_infos(&b)[0].sleeping;
    let mut child = spawn_role("armed-fd", &args(&[&bus.name]));
    child.expect_line("READY");
    assert!(
        common::eventually(Duration::from_secs(10), || sleeping() == 1),
        "the armed fd's helper is counted as a sleeper"
    );
    child.kill9();
    assert_eq!(sleeping(), 1, "the dead process left its count");
    let word = common::not_empty_word(&bus, "jobs");
    let before = common::peek_u32(&bus, word);
    tx.push(1).unwrap();
    assert_eq!(
        common::peek_u32(&bus, word),
        before.wrapping_add(1),
        "one wake call"
    );
    assert_eq!(
        sleeping(),
        0,
        "...after which the dead sleeper is forgotten"
    );
    for value in 2..50 {
        tx.push(value).unwrap();
    }
    assert_eq!(
        common::peek_u32(&bus, word),
        before.wrapping_add(1),
        "and no more wake calls with nobody asleep"
    );
}

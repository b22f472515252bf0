//! In-process cost of shmbus operations, with crossbeam's `ArrayQueue` as a
//! reference for the work queue. One thread, so these measure instruction
//! and cache cost, not cross-core latency: for that, run `shmbus bench`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shmbus::{Bus, Clock, StartAt};

/// A bus unique to this run, removed when dropped.
struct TempBus(String, Bus);

impl TempBus {
    fn new(tag: &str) -> Self {
        let name = format!("criterion-{tag}-{}", std::process::id());
        let bus = Bus::open(&name).expect("open bus");
        TempBus(name, bus)
    }
}

impl Drop for TempBus {
    fn drop(&mut self) {
        let _ = Bus::remove(&self.0);
    }
}

type Msg = [u64; 8];

fn broadcast(c: &mut Criterion) {
    let bus = TempBus::new("bcast");
    let mut group = c.benchmark_group("broadcast-64B");
    group.throughput(Throughput::Elements(1));
    let mut tx = bus.1.topic("t").capacity(4096).publisher::<Msg>().unwrap();
    let msg = [7u64; 8];
    group.bench_function("publish", |b| b.iter(|| tx.send(black_box(&msg)).unwrap()));
    group.bench_function("publish by loan (write + commit)", |b| {
        b.iter(|| {
            let mut loan = tx.loan().unwrap();
            loan.write(black_box(&msg));
            loan.commit().unwrap()
        })
    });
    let mut rx = bus
        .1
        .topic("t")
        .start_at(StartAt::Next)
        .subscriber::<Msg>()
        .unwrap();
    group.bench_function("publish+receive", |b| {
        b.iter(|| {
            tx.send(black_box(&msg)).unwrap();
            black_box(rx.try_recv().unwrap())
        })
    });
    drop((tx, rx));
    let mut tx = bus
        .1
        .topic("l")
        .capacity(4096)
        .lossless(1)
        .publisher::<Msg>()
        .unwrap();
    let mut rx = bus
        .1
        .topic("l")
        .start_at(StartAt::Next)
        .subscriber::<Msg>()
        .unwrap();
    group.bench_function("lossless publish+receive", |b| {
        b.iter(|| {
            tx.send(black_box(&msg)).unwrap();
            black_box(rx.try_recv().unwrap())
        })
    });
    group.bench_function("lossless publish+receive in place", |b| {
        b.iter(|| {
            tx.send(black_box(&msg)).unwrap();
            black_box(rx.recv_ref().unwrap()[0])
        })
    });
    drop((tx, rx));
    // What a publish timestamp costs: a clock read per message, and the
    // word written and read beside it.
    let stamped = || {
        bus.1
            .topic("ts")
            .capacity(4096)
            .timestamps(Clock::Monotonic)
    };
    let mut tx = stamped().publisher::<Msg>().unwrap();
    let mut rx = stamped()
        .start_at(StartAt::Next)
        .subscriber::<Msg>()
        .unwrap();
    group.bench_function("publish+receive, timestamped", |b| {
        b.iter(|| {
            tx.send(black_box(&msg)).unwrap();
            black_box(rx.try_recv_with_info().unwrap().0.timestamp_ns)
        })
    });
    group.finish();
}

fn queue(c: &mut Criterion) {
    let bus = TempBus::new("queue");
    let mut group = c.benchmark_group("queue-64B");
    group.throughput(Throughput::Elements(1));
    let mut tx = bus.1.topic("q").capacity(4096).producer::<Msg>().unwrap();
    let mut rx = bus.1.topic("q").consumer::<Msg>().unwrap();
    let msg = [7u64; 8];
    group.bench_function("shmbus push+pop", |b| {
        b.iter(|| {
            tx.push(black_box(msg)).unwrap();
            black_box(rx.try_pop().unwrap())
        })
    });
    group.bench_function("shmbus push by loan + pop", |b| {
        b.iter(|| {
            let mut loan = tx.loan().unwrap();
            *loan = black_box(msg);
            loan.commit();
            black_box(rx.try_pop().unwrap())
        })
    });
    group.bench_function("shmbus push+pop in place", |b| {
        b.iter(|| {
            tx.push(black_box(msg)).unwrap();
            // Every word read, as the copying pop reads them.
            black_box(rx.try_pop_ref().unwrap().iter().sum::<u64>())
        })
    });
    let reference = crossbeam_queue::ArrayQueue::<Msg>::new(4096);
    group.bench_function("crossbeam ArrayQueue push+pop", |b| {
        b.iter(|| {
            reference.push(black_box(msg)).unwrap();
            black_box(reference.pop().unwrap())
        })
    });
    group.finish();
}

/// Publishing a 64 KiB frame: copied from the caller's buffer
/// (`send_bytes`), written in place through a loan (`loan_bytes`,
/// filled from the same buffer: the copy happens once, into the slot),
/// and a plain `memcpy` between two heap buffers for reference: the
/// writer's cost. One row adds a subscriber in the same thread that copies
/// each frame out (`recv_bytes`): the writer's and the reader's copy.
fn loans(c: &mut Criterion) {
    const LEN: usize = 64 << 10;
    let bus = TempBus::new("loan");
    let mut group = c.benchmark_group("publish-64KiB");
    group.throughput(Throughput::Bytes(LEN as u64));
    let mut tx = bus
        .1
        .topic("frames")
        .slot_size(LEN as u32)
        .capacity(64)
        .publisher_bytes()
        .unwrap();
    let frame = vec![0x5au8; LEN];
    group.bench_function("send_bytes (copy)", |b| {
        b.iter(|| tx.send_bytes(black_box(&frame)).unwrap())
    });
    group.bench_function("loan_bytes + write_at + commit", |b| {
        b.iter(|| {
            let mut loan = tx.loan_bytes(LEN).unwrap();
            loan.write_at(0, black_box(&frame)).unwrap();
            loan.commit().unwrap()
        })
    });
    let mut rx = bus
        .1
        .topic("frames")
        .start_at(StartAt::Next)
        .subscriber_bytes()
        .unwrap();
    group.bench_function("send_bytes + recv_bytes", |b| {
        b.iter(|| {
            tx.send_bytes(black_box(&frame)).unwrap();
            black_box(rx.recv_bytes().unwrap().len())
        })
    });
    drop(rx);
    // The receive itself, in place: no copy out (the row reads two bytes of
    // the message; the copy rows read all of it).
    let lossless = || {
        bus.1
            .topic("lframes")
            .slot_size(LEN as u32)
            .capacity(64)
            .lossless(1)
    };
    let mut ltx = lossless().publisher_bytes().unwrap();
    let mut lrx = lossless()
        .start_at(StartAt::Next)
        .subscriber_bytes()
        .unwrap();
    group.bench_function("send_bytes + recv_bytes_ref (lossless)", |b| {
        b.iter(|| {
            ltx.send_bytes(black_box(&frame)).unwrap();
            let msg = lrx.recv_bytes_ref().unwrap();
            black_box((msg[0], msg[LEN - 1]))
        })
    });
    drop((ltx, lrx));
    let mut dst = vec![0u8; LEN];
    group.bench_function("memcpy (reference)", |b| {
        b.iter(|| dst.copy_from_slice(black_box(&frame)))
    });
    group.finish();
}

/// A variable-size topic (`TopicBuilder::variable`) beside fixed slots:
/// a 64-byte and a 64 KiB message published and received in one thread,
/// overwrite mode.
fn variable(c: &mut Criterion) {
    let bus = TempBus::new("var");
    let mut group = c.benchmark_group("variable");
    for (name, len) in [("64B", 64usize), ("64KiB", 64 << 10)] {
        group.throughput(Throughput::Bytes(len as u64));
        let msg = vec![0x5au8; len];
        for variable in [false, true] {
            let topic = format!("{name}-{variable}");
            let t = bus.1.topic(&topic).capacity(64);
            let t = if variable {
                t.variable(1 << 22)
            } else {
                t.slot_size(len as u32)
            };
            let mut tx = t.publisher_bytes().unwrap();
            let mut rx = bus
                .1
                .topic(&topic)
                .start_at(StartAt::Next)
                .subscriber_bytes()
                .unwrap();
            let kind = if variable { "variable" } else { "fixed slots" };
            group.bench_function(format!("{name} send_bytes + recv_bytes, {kind}"), |b| {
                b.iter(|| {
                    tx.send_bytes(black_box(&msg)).unwrap();
                    black_box(rx.recv_bytes().unwrap().len())
                })
            });
        }
    }
    group.finish();
}

/// A byte work queue's push + pop in one thread, 64 slots of the
/// message's size against a variable-size queue whose arena is about as
/// large (8 KiB for 64 B messages, which take two units with their header;
/// 4 MiB for 64 KiB ones), 64 B and 64 KiB: the cost of claiming and
/// releasing a message's units (a sequence word per 64 bytes) next to one
/// slot's; popped by copy and in place.
fn variable_queue(c: &mut Criterion) {
    let bus = TempBus::new("varq");
    let mut group = c.benchmark_group("variable-queue");
    for (name, len, arena) in [("64B", 64usize, 8u64 << 10), ("64KiB", 64 << 10, 4 << 20)] {
        group.throughput(Throughput::Bytes(len as u64));
        let msg = vec![0x5au8; len];
        for variable in [false, true] {
            let topic = format!("{name}-{variable}");
            let t = || {
                let t = bus.1.topic(&topic);
                if variable {
                    t.variable(arena)
                } else {
                    t.capacity(64).slot_size(len as u32)
                }
            };
            let mut tx = t().producer_bytes().unwrap();
            let mut rx = t().consumer_bytes().unwrap();
            let kind = if variable { "variable" } else { "fixed slots" };
            group.bench_function(format!("{name} push_bytes + pop_bytes, {kind}"), |b| {
                b.iter(|| {
                    tx.push_bytes(black_box(&msg)).unwrap();
                    black_box(rx.try_pop_bytes().unwrap().len())
                })
            });
            group.bench_function(format!("{name} push_bytes + pop_bytes_ref, {kind}"), |b| {
                b.iter(|| {
                    tx.push_bytes(black_box(&msg)).unwrap();
                    black_box(rx.try_pop_bytes_ref().unwrap()[len / 2])
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, broadcast, queue, loans, variable, variable_queue);
criterion_main!(benches);

//! Market-data style fanout: one feed process, several subscriber processes.
//!
//! ```text
//! cargo run --release --example fanout        # 3 subscribers, 2M messages at 1M msg/s
//! cargo run --release --example fanout -- --rate 0 --slow 1   # flat out, subscriber 1 slow
//! cargo run --release --example fanout -- --rate 0 --slow 1 --lossless   # the feed waits for it
//! ```
//!
//! The feed spawns the subscribers (this same program, in the `subscriber`
//! role), waits until each has joined the bus, then publishes 64-byte quotes
//! at `--rate` messages per second (default 1,000,000; 0 means flat out). Each subscriber
//! checks that messages arrive whole and in order, counts what it lost to
//! overwriting (`--slow N` makes subscriber N deliberately slow), measures
//! feed-to-subscriber latency, and reports back. The feed prints a table.
//!
//! The bus is removed as soon as everyone has joined, so nothing is left in
//! /dev/shm even if the demo is interrupted: mapped segments live on until the
//! last process unmaps them.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use shmbus::{Bus, RecvError, StartAt, WaitStrategy};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A 64-byte quote. `check` lets a subscriber prove the copy is whole.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug)]
#[repr(C)]
struct Quote {
    seq: u64,
    sent_ns: u64,
    instrument: u64,
    bid: f64,
    ask: f64,
    bid_size: u64,
    ask_size: u64,
    check: u64,
}

impl Quote {
    fn new(seq: u64) -> Self {
        let mut q = Quote {
            seq,
            sent_ns: now_ns(),
            instrument: seq % 500,
            bid: 100.0 + (seq % 1000) as f64 * 0.01,
            ask: 100.01 + (seq % 1000) as f64 * 0.01,
            bid_size: seq % 37 * 100,
            ask_size: seq % 41 * 100,
            check: 0,
        };
        q.check = q.digest();
        q
    }

    fn digest(&self) -> u64 {
        [
            self.seq,
            self.instrument,
            self.bid.to_bits(),
            self.ask.to_bits(),
            self.bid_size,
            self.ask_size,
        ]
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, w| {
            (h ^ w).wrapping_mul(0x0100_0000_01b3)
        })
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process.
fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

struct Options {
    subscribers: usize,
    messages: u64,
    capacity: u32,
    rate: u64,
    slow: Option<usize>,
    lossless: bool,
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut opts = Options {
        subscribers: 3,
        messages: 2_000_000,
        capacity: 1 << 16,
        rate: 1_000_000,
        slow: None,
        lossless: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--lossless" {
            opts.lossless = true;
            continue;
        }
        let mut value = || {
            it.next()
                .ok_or(format!("{flag} needs a value"))?
                .parse::<u64>()
                .map_err(|e| format!("{flag}: {e}"))
        };
        match flag.as_str() {
            "--subscribers" => opts.subscribers = value()? as usize,
            "--messages" => opts.messages = value()?,
            "--capacity" => opts.capacity = value()? as u32,
            "--rate" => opts.rate = value()?,
            "--slow" => opts.slow = Some(value()? as usize),
            "-h" | "--help" => {
                return Err("usage: fanout [--subscribers N] [--messages N] [--capacity SLOTS] [--rate MSGS_PER_S] [--slow INDEX] [--lossless]".into())
            }
            other => return Err(format!("unknown option {other}; see --help")),
        }
    }
    if opts.subscribers == 0 || !opts.capacity.is_power_of_two() {
        return Err("--subscribers must be at least 1 and --capacity a power of two".into());
    }
    Ok(opts)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("subscriber") {
        subscriber(&args[1], args[2].parse().unwrap(), args[3] == "slow");
        return;
    }
    let opts = parse_options(&args).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    if let Err(e) = feed(&opts) {
        eprintln!("fanout: {e}");
        std::process::exit(1);
    }
}

fn feed(opts: &Options) -> Result<(), Box<dyn std::error::Error>> {
    let bus_name = format!("fanout-demo-{}", std::process::id());
    let bus = Bus::open(&bus_name)?;
    // Create the topic with our capacity before any subscriber joins it.
    let topic = || {
        let topic = bus.topic("quotes").capacity(opts.capacity);
        if opts.lossless {
            // The feed waits for the slowest subscriber instead of overwriting.
            topic.lossless(opts.subscribers as u32)
        } else {
            topic
        }
    };
    drop(topic().subscriber::<Quote>()?);

    println!(
        "shmbus fanout: 1 feed -> {} subscriber processes, {} messages of {} B, ring of {} slots, {} mode{}",
        opts.subscribers,
        opts.messages,
        std::mem::size_of::<Quote>(),
        opts.capacity,
        if opts.lossless { "lossless" } else { "overwrite" },
        if opts.rate > 0 {
            format!(", paced at {} msg/s", opts.rate)
        } else {
            String::new()
        }
    );
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for i in 0..opts.subscribers {
        let speed = if opts.slow == Some(i) { "slow" } else { "fast" };
        let mut child = Command::new(&exe)
            .args(["subscriber", &bus_name, &i.to_string(), speed])
            .stdout(Stdio::piped())
            .spawn()?;
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        match lines.next() {
            Some(Ok(line)) if line == "READY" => {}
            other => return Err(format!("subscriber {i} did not start: {other:?}").into()),
        }
        children.push((child, lines));
    }
    // Everyone has the segment mapped: unlink it now, so an interrupted demo
    // leaves nothing behind.
    Bus::remove(&bus_name)?;

    let mut tx = topic().publisher::<Quote>()?;
    let started = Instant::now();
    let gap = (opts.rate > 0).then(|| Duration::from_secs_f64(1.0 / opts.rate as f64));
    for seq in 0..opts.messages {
        if let Some(gap) = gap {
            while started.elapsed() < gap * seq as u32 {
                std::hint::spin_loop();
            }
        }
        tx.send(&Quote::new(seq))?;
    }
    let elapsed = started.elapsed();
    drop(tx);
    println!(
        "feed: {} messages in {:.3} s = {:.2} M msg/s",
        opts.messages,
        elapsed.as_secs_f64(),
        opts.messages as f64 / elapsed.as_secs_f64() / 1e6
    );
    println!(
        "{:>4} {:>10} {:>10} {:>6} {:>10} {:>9} {:>9} {:>10}",
        "sub", "received", "lagged", "bad", "M msg/s", "p50 ns", "p99 ns", "p99.9 ns"
    );
    let mut all_ok = true;
    for (i, (mut child, mut lines)) in children.into_iter().enumerate() {
        let line = lines.next().ok_or("subscriber exited without a report")??;
        child.wait()?;
        let v: Vec<f64> = line
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        let (received, lagged, bad) = (v[0] as u64, v[1] as u64, v[2] as u64);
        all_ok &= received + lagged == opts.messages && bad == 0;
        println!(
            "{:>4} {:>10} {:>10} {:>6} {:>10.2} {:>9} {:>9} {:>10}{}",
            i,
            received,
            lagged,
            bad,
            v[3] / 1e6,
            v[4],
            v[5],
            v[6],
            if opts.slow == Some(i) {
                "  (slow on purpose)"
            } else {
                ""
            }
        );
    }
    println!(
        "check: every message received or counted as lagged, none torn or out of order: {}",
        if all_ok { "OK" } else { "FAILED" }
    );
    if !all_ok {
        return Err("accounting check failed".into());
    }
    Ok(())
}

fn subscriber(bus_name: &str, index: usize, slow: bool) {
    let bus = Bus::open(bus_name).expect("open bus");
    let mut rx = bus
        .topic("quotes")
        .start_at(StartAt::Oldest)
        .wait(WaitStrategy::adaptive())
        .subscriber::<Quote>()
        .expect("subscribe");
    println!("READY");
    std::io::stdout().flush().unwrap();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    let (mut expected, mut bad) = (rx.next_seq(), 0u64);
    let mut first: Option<Instant> = None;
    loop {
        match rx.recv() {
            Ok(q) => {
                let now = now_ns();
                first.get_or_insert_with(Instant::now);
                if q.seq != expected || q.check != q.digest() {
                    bad += 1;
                }
                expected = q.seq + 1;
                latency.saturating_record(now.saturating_sub(q.sent_ns).max(1));
                if slow && q.seq % 1000 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Err(RecvError::Lagged(n)) => expected += n,
            Err(RecvError::Disconnected) => break,
            Err(RecvError::Corrupt { .. }) => bad += 1,
            // Evicted (lossless mode only, and only if our entry was taken
            // from us), or an error this example does not know yet.
            Err(_) => {
                bad += 1;
                break;
            }
        }
    }
    let stats = rx.stats();
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64()).max(1e-9);
    let _ = index;
    println!(
        "{} {} {} {} {} {} {}",
        stats.received,
        stats.lagged,
        bad,
        stats.received as f64 / secs,
        latency.value_at_quantile(0.5),
        latency.value_at_quantile(0.99),
        latency.value_at_quantile(0.999)
    );
}

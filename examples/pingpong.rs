//! Ping-pong between two processes: one-way latency as half the round trip.
//!
//! ```text
//! cargo run --release --example pingpong                       # busy-polling
//! cargo run --release --example pingpong -- --wait block --pin # futex wakeups, pinned to CPUs 0 and 1
//! cargo run --release --example pingpong -- --pin --capacity 8  # rings of 8 slots (default 1024)
//! ```
//!
//! The ping process spawns the pong process (this same program in the
//! `pong` role). Ping publishes a sequence number on topic `ping`; pong
//! echoes it on topic `pong`; ping records half of each round trip in an HDR
//! histogram and prints percentiles.

use std::time::Instant;

use hdrhistogram::Histogram;
use shmbus::{Bus, StartAt, WaitStrategy};

fn parse_wait(name: &str) -> WaitStrategy {
    match name {
        "spin" => WaitStrategy::Spin,
        "yield" => WaitStrategy::Yield,
        "block" => WaitStrategy::Block,
        "adaptive" => WaitStrategy::adaptive(),
        other => {
            eprintln!("unknown --wait {other}: use spin, yield, block or adaptive");
            std::process::exit(2)
        }
    }
}

fn pin_to(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    if let Err(e) = rustix::thread::sched_setaffinity(None, &set) {
        eprintln!("could not pin to CPU {cpu}: {e}");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut wait = "spin".to_owned();
    let mut pin = false;
    let mut rounds: u64 = 0;
    let mut capacity: Option<u32> = None;
    let mut role_pong: Option<String> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--wait" => wait = it.next().cloned().unwrap_or_default(),
            "--pin" => pin = true,
            "--rounds" => rounds = it.next().and_then(|r| r.parse().ok()).unwrap_or(0),
            "--capacity" => match it.next().and_then(|c| c.parse::<u32>().ok()) {
                Some(c) if c.is_power_of_two() && c <= 1 << 24 => capacity = Some(c),
                _ => {
                    eprintln!("--capacity takes a number of slots, a power of two up to 16777216");
                    std::process::exit(2)
                }
            },
            "pong" => role_pong = it.next().cloned(),
            other => {
                eprintln!("unknown option {other}; usage: pingpong [--wait spin|yield|block|adaptive] [--pin] [--rounds N] [--capacity SLOTS]");
                std::process::exit(2)
            }
        }
    }
    let strategy = parse_wait(&wait);
    if let Some(bus_name) = role_pong {
        if pin {
            pin_to(1);
        }
        return pong(&bus_name, strategy);
    }
    if rounds == 0 {
        rounds = if strategy == WaitStrategy::Spin {
            200_000
        } else {
            50_000
        };
    }
    if pin {
        pin_to(0);
    }

    let bus_name = format!("pingpong-{}", std::process::id());
    let bus = Bus::open(&bus_name)?;
    // Both topics made here, with `--capacity` slots if given; the pong
    // process opens them as they are.
    let topic = |name| match capacity {
        Some(slots) => bus.topic(name).capacity(slots),
        None => bus.topic(name),
    };
    let mut tx = topic("ping").publisher::<u64>()?;
    let mut rx = topic("pong")
        .start_at(StartAt::Next)
        .wait(strategy)
        .subscriber::<u64>()?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args(["pong", &bus_name, "--wait", &wait]);
    if pin {
        cmd.arg("--pin");
    }
    let mut child = cmd.spawn()?;

    // The first echo tells us pong is listening; then the bus can be unlinked.
    loop {
        tx.send(&u64::MAX)?;
        if rx.recv_timeout(std::time::Duration::from_millis(10)) == Ok(u64::MAX) {
            break;
        }
    }
    Bus::remove(&bus_name)?;

    let warmup = rounds / 10;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3)?;
    for seq in 0..warmup + rounds {
        let start = Instant::now();
        tx.send(&seq)?;
        loop {
            match rx.recv() {
                Ok(echo) if echo == seq => break,
                Ok(_) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        if seq >= warmup {
            hist.saturating_record((start.elapsed().as_nanos() as u64 / 2).max(1));
        }
    }
    drop(tx);
    child.wait()?;
    println!(
        "shmbus ping-pong, 8-byte messages, wait {wait}{}, rings of {} slots: one-way latency (RTT/2) over {rounds} rounds",
        if pin { ", pinned" } else { "" },
        capacity.unwrap_or(1024)
    );
    println!(
        "p50 {} ns   p99 {} ns   p99.9 {} ns   max {} ns",
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        hist.max()
    );
    Ok(())
}

fn pong(bus_name: &str, strategy: WaitStrategy) -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::open(bus_name)?;
    let mut rx = bus
        .topic("ping")
        .start_at(StartAt::Newest)
        .wait(strategy)
        .subscriber::<u64>()?;
    let mut tx = bus.publisher::<u64>("pong")?;
    loop {
        match rx.recv() {
            Ok(seq) => drop(tx.send(&seq)?),
            Err(shmbus::RecvError::Disconnected) => return Ok(()),
            Err(shmbus::RecvError::Lagged(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

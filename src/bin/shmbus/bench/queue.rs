//! Work-queue transports: producer processes to consumer processes, each
//! message taken once. One small type each.

use super::{Harness, Res};
use crate::peer::Peer;
use crate::raw::SharedMem;
use crate::rings;

/// One work-queue transport.
pub trait WorkQueue {
    fn name(&self, producers: usize, consumers: usize) -> String;

    /// Messages per second from the consumers' first message to their
    /// last, `per` messages from each producer.
    fn run(&self, h: &mut Harness, producers: usize, consumers: usize, per: u64) -> Res<f64>;
}

/// The rate of consumer peers that print `RESULT count 0 bad first_ns
/// last_ns`, checking that each message was taken once and whole.
fn collect(consumers: Vec<Peer>, expected: u64) -> Res<f64> {
    let (mut total, mut bad, mut first, mut last) = (0u64, 0u64, u64::MAX, 0u64);
    for mut c in consumers {
        let [count, _, c_bad, c_first, c_last] = c.result::<5>()?;
        total += count;
        bad += c_bad;
        if count > 0 {
            first = first.min(c_first);
            last = last.max(c_last);
        }
        c.finish()?;
    }
    if total != expected || bad > 0 {
        return Err(format!(
            "queue bench: {total} of {expected} messages taken, {bad} failed their checksum"
        )
        .into());
    }
    Ok(total as f64 * 1e9 / last.saturating_sub(first).max(1) as f64)
}

/// Starts the producers, lets them go, waits for them; then collects the
/// consumers.
fn drive(prods: Vec<Peer>, cons: Vec<Peer>, expected: u64) -> Res<f64> {
    let mut prods = prods;
    for p in &mut prods {
        p.go()?;
    }
    for p in prods {
        p.finish()?;
    }
    collect(cons, expected)
}

/// A shmbus work-queue topic: fixed slots of the message size, or
/// variable-size messages in an arena that holds as many (each message
/// takes its length and a 16-byte header, in 64-byte units).
pub struct ShmbusQueue {
    pub variable: bool,
}

impl WorkQueue for ShmbusQueue {
    fn name(&self, producers: usize, consumers: usize) -> String {
        let var = if self.variable { "-var" } else { "" };
        format!("shmbus-queue{var}-{producers}to{consumers}")
    }

    fn run(&self, h: &mut Harness, producers: usize, consumers: usize, per: u64) -> Res<f64> {
        let size = h.opts.size;
        let temp = h.temp_bus()?;
        let bus = temp.bus.as_ref().expect("open");
        let topic = bus.topic("jobs");
        let topic = if self.variable {
            // A message takes its length and a 16-byte header in 64-byte
            // units (README, "Variable-size work queues").
            let units = (size + 16).div_ceil(64);
            let arena = (rings::slots(size) * units * 64)
                .next_power_of_two()
                .clamp(4096, 1 << 30);
            topic.variable(arena as u64)
        } else {
            topic
                .capacity(rings::slots(size) as u32)
                .slot_size(size as u32)
        };
        drop(topic.consumer_bytes()?);
        let mut cons = Vec::new();
        for i in 0..consumers {
            let args = std::slice::from_ref(&temp.name);
            cons.push(Peer::spawn("queue-consume", args, h.cpu(i))?);
        }
        let mut prods = Vec::new();
        for i in 0..producers {
            let args = [
                temp.name.clone(),
                per.to_string(),
                size.to_string(),
                i.to_string(),
            ];
            prods.push(Peer::spawn("queue-produce", &args, h.cpu(consumers + i))?);
        }
        temp.unlink();
        drive(prods, cons, per * producers as u64)
    }
}

/// The raw Vyukov MPMC queue: the limit.
pub struct RawMpmc;

impl WorkQueue for RawMpmc {
    fn name(&self, producers: usize, consumers: usize) -> String {
        format!("raw-mpmc-{producers}to{consumers}")
    }

    fn run(&self, h: &mut Harness, producers: usize, consumers: usize, per: u64) -> Res<f64> {
        let size = h.opts.size;
        let total = per * producers as u64;
        let mem = SharedMem::create(rings::mpmc_len(size))?;
        rings::mpmc_init(&mem, size);
        let fd = mem.fd_for_child()?.to_string();
        let mut cons = Vec::new();
        for i in 0..consumers {
            let args = [fd.clone(), total.to_string(), size.to_string()];
            cons.push(Peer::spawn("mpmc-consume", &args, h.cpu(i))?);
        }
        let mut prods = Vec::new();
        for i in 0..producers {
            let args = [fd.clone(), per.to_string(), size.to_string(), i.to_string()];
            prods.push(Peer::spawn("mpmc-produce", &args, h.cpu(consumers + i))?);
        }
        drive(prods, cons, total)
    }
}

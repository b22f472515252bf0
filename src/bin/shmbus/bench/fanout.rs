//! Fanout transports: one publisher (this process) to N subscriber
//! processes; and open-loop latency over them. One small type each.

use std::time::Instant;

use shmbus::WaitStrategy;

use super::{Harness, Res};
use crate::peer::{self, Peer};
use crate::raw::SharedMem;
use crate::rings;

/// One fanout round: the slowest subscriber's rate, the publisher's, and
/// what the subscribers lost (lapped) or found wrong.
pub struct FanRound {
    pub slowest: f64,
    pub publisher: f64,
    pub lost: u64,
    pub bad: u64,
}

impl FanRound {
    /// The round of subscriber peers that print `RESULT received lagged bad
    /// first_ns last_ns`, after a publisher that sent `sent` messages in
    /// `publish_ns`.
    pub fn collect(peers: Vec<Peer>, sent: u64, publish_ns: u64) -> Res<FanRound> {
        let mut round = FanRound {
            slowest: f64::INFINITY,
            publisher: sent as f64 * 1e9 / publish_ns.max(1) as f64,
            lost: 0,
            bad: 0,
        };
        for mut peer in peers {
            let [received, lagged, bad, first, last] = peer.result::<5>()?;
            let rate = received as f64 * 1e9 / last.saturating_sub(first).max(1) as f64;
            round.slowest = round.slowest.min(rate);
            round.lost += lagged;
            round.bad += bad;
            peer.finish()?;
        }
        Ok(round)
    }
}

/// One fanout transport.
pub trait Fan {
    /// The row name for `n` subscribers.
    fn name(&self, n: usize) -> String;

    /// Whether subscribers can lose messages (the row then counts them).
    fn lossy(&self) -> bool;

    /// One round: `count` messages of `h.opts.size` bytes to `n`
    /// subscriber processes, each verifying every message.
    fn round(&self, h: &mut Harness, n: usize, count: u64) -> Res<FanRound>;
}

/// A shmbus broadcast topic, overwrite or lossless, published by copying
/// sends or (`loan`) by loans written whole with one `write_at`, and read
/// by copying receives or (`in_place`, lossless only) in place.
pub struct ShmbusFan {
    pub lossless: bool,
    pub loan: bool,
    /// Lossless only: subscribers read each message in place
    /// (`recv_bytes_ref`) and check its sequence and checksum words, the
    /// work iceoryx2's subscribers do in their rows; copying subscribers
    /// copy every byte out first.
    pub in_place: bool,
}

impl ShmbusFan {
    pub const fn copying(lossless: bool) -> Self {
        ShmbusFan {
            lossless,
            loan: false,
            in_place: false,
        }
    }
}

impl Fan for ShmbusFan {
    fn name(&self, n: usize) -> String {
        let mode = if self.lossless {
            "lossless"
        } else {
            "overwrite"
        };
        let how = if self.loan { "-loan" } else { "" };
        let read = if self.in_place { "-inplace" } else { "" };
        format!("shmbus-{mode}{how}{read}-1to{n}")
    }

    fn lossy(&self) -> bool {
        !self.lossless
    }

    fn round(&self, h: &mut Harness, n: usize, count: u64) -> Res<FanRound> {
        let size = h.opts.size;
        let temp = h.temp_bus()?;
        let bus = temp.bus.as_ref().expect("open");
        let mut topic = bus
            .topic("data")
            .capacity(rings::slots(size) as u32)
            .slot_size(size as u32);
        if self.lossless {
            topic = topic.lossless(n as u32);
        }
        drop(topic.clone().subscriber_bytes()?);
        let mut peers = Vec::new();
        for i in 0..n {
            let read = if self.in_place { "inplace" } else { "copy" };
            let args = [
                temp.name.clone(),
                "spin".into(),
                count.to_string(),
                read.into(),
            ];
            peers.push(Peer::spawn("subscribe-shmbus", &args, h.cpu(1 + i))?);
        }
        temp.unlink();
        let mut tx = topic.wait(WaitStrategy::Spin).publisher_bytes()?;
        let mut msg = vec![0u8; size];
        rings::fill(&mut msg, 0);
        let start = Instant::now();
        for seq in 0..count {
            rings::stamp(&mut msg, seq);
            if self.loan {
                let mut loan = tx.loan_bytes(size)?;
                loan.write_at(0, &msg)?;
                loan.commit()?;
            } else {
                tx.send_bytes(&msg)?;
            }
        }
        let publish_ns = start.elapsed().as_nanos() as u64;
        drop(tx);
        FanRound::collect(peers, count, publish_ns)
    }
}

/// The raw SPMC broadcast ring: the limit.
pub struct RawSpmcFan;

impl Fan for RawSpmcFan {
    fn name(&self, n: usize) -> String {
        format!("raw-spmc-1to{n}")
    }

    fn lossy(&self) -> bool {
        true
    }

    fn round(&self, h: &mut Harness, n: usize, count: u64) -> Res<FanRound> {
        let size = h.opts.size;
        let mem = SharedMem::create(rings::spmc_len(size))?;
        let fd = mem.fd_for_child()?.to_string();
        let mut peers = Vec::new();
        for i in 0..n {
            let args = [fd.clone(), count.to_string(), size.to_string()];
            peers.push(Peer::spawn("subscribe-spmc", &args, h.cpu(1 + i))?);
        }
        let publish_ns = rings::spmc_publish(&mem, count, size, |seq| seq);
        FanRound::collect(peers, count, publish_ns)
    }
}

/// Open-loop latency of one run, as the subscriber saw it: p50, p99,
/// p99.9, max (ns), messages lost, messages not whole.
pub type OpenLoopResult = [u64; 6];

/// A transport for open-loop latency: this process sends `count` messages
/// at `h.opts.rate`, each tagged with the time it was due.
pub trait OpenLoop {
    fn name(&self, rate: u64) -> String;
    fn run(&self, h: &mut Harness, count: u64) -> Res<OpenLoopResult>;
}

/// The tag of message `i` of an open-loop run at `rate` msg/s that starts
/// 1 ms from now: the time it is due, once that time has come.
fn paced(rate: u64) -> impl FnMut(u64) -> u64 {
    let start = peer::now_ns() + 1_000_000;
    let interval_ns = 1e9 / rate as f64;
    move |i| {
        let due = start + (i as f64 * interval_ns) as u64;
        while peer::now_ns() < due {
            core::hint::spin_loop();
        }
        due
    }
}

/// shmbus, overwrite mode, one spinning subscriber.
pub struct ShmbusOpenLoop;

impl OpenLoop for ShmbusOpenLoop {
    fn name(&self, rate: u64) -> String {
        format!("shmbus-overwrite-{rate}")
    }

    fn run(&self, h: &mut Harness, count: u64) -> Res<OpenLoopResult> {
        let size = h.opts.size;
        let temp = h.temp_bus()?;
        let bus = temp.bus.as_ref().expect("open");
        let topic = bus
            .topic("data")
            .capacity(rings::slots(size) as u32)
            .slot_size(size as u32);
        drop(topic.clone().subscriber_bytes()?);
        let args = [temp.name.clone(), count.to_string()];
        let mut peer = Peer::spawn("openloop-shmbus", &args, h.cpu(1))?;
        temp.unlink();
        let mut tx = topic.wait(WaitStrategy::Spin).publisher_bytes()?;
        let mut msg = vec![0u8; size];
        rings::fill(&mut msg, 0);
        let mut due = paced(h.opts.rate);
        for i in 0..count {
            rings::stamp(&mut msg, due(i));
            tx.send_bytes(&msg)?;
        }
        drop(tx);
        let result = peer.result::<6>()?;
        peer.finish()?;
        Ok(result)
    }
}

/// The raw SPMC ring, one spinning reader.
pub struct RawOpenLoop;

impl OpenLoop for RawOpenLoop {
    fn name(&self, rate: u64) -> String {
        format!("raw-spmc-{rate}")
    }

    fn run(&self, h: &mut Harness, count: u64) -> Res<OpenLoopResult> {
        let size = h.opts.size;
        let mem = SharedMem::create(rings::spmc_len(size))?;
        let args = [
            mem.fd_for_child()?.to_string(),
            count.to_string(),
            size.to_string(),
        ];
        let mut peer = Peer::spawn("openloop-spmc", &args, h.cpu(1))?;
        rings::spmc_publish(&mem, count, size, paced(h.opts.rate));
        let result = peer.result::<6>()?;
        peer.finish()?;
        Ok(result)
    }
}

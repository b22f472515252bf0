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
    /// On a bus on pipes (`Transport::Pipe`, in the default directory),
    /// against the raw FIFO queue ([`RawFifoQueue`]).
    pub pipe: bool,
}

impl WorkQueue for ShmbusQueue {
    fn name(&self, producers: usize, consumers: usize) -> String {
        let var = if self.variable { "-var" } else { "" };
        let on = if self.pipe { "-pipe" } else { "" };
        format!("shmbus{on}-queue{var}-{producers}to{consumers}")
    }

    fn run(&self, h: &mut Harness, producers: usize, consumers: usize, per: u64) -> Res<f64> {
        let size = h.opts.size;
        let temp = if self.pipe {
            h.temp_dir_bus(shmbus::Transport::Pipe)?
        } else {
            h.temp_bus()?
        };
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
        if !self.pipe {
            // (A bus on pipes keeps its directory until the run is over:
            // its consumers find the producers gone by their records.)
            temp.unlink();
        }
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

/// The raw work queue on a named pipe: every producer writes messages of
/// the message size (at most `PIPE_BUF`, so each `write` is atomic) into
/// one FIFO, and every consumer reads exactly that size a `read` (so each
/// takes one whole message), as a work queue on pipes does with its
/// frames. The harness holds the FIFO open read-write (so nobody sees end
/// of file) and, once the producers are done, writes one end mark per
/// consumer after their messages.
pub struct RawFifoQueue;

impl WorkQueue for RawFifoQueue {
    fn name(&self, producers: usize, consumers: usize) -> String {
        format!("fifo-queue-{producers}to{consumers}")
    }

    fn run(&self, h: &mut Harness, producers: usize, consumers: usize, per: u64) -> Res<f64> {
        use std::os::fd::AsRawFd;
        let size = h.opts.size;
        let path = std::env::temp_dir().join(format!(
            "shmbus-bench-{}-{}.queue",
            std::process::id(),
            h.next_id()
        ));
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &path,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        )?;
        /// Removes the FIFO however the run ends.
        struct Unlink(std::path::PathBuf);
        impl Drop for Unlink {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
        let unlink = Unlink(path.clone());
        let held = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)?;
        let name = path.display().to_string();
        let mut cons = Vec::new();
        for i in 0..consumers {
            let args = [name.clone(), size.to_string()];
            cons.push(Peer::spawn("fifo-queue-consume", &args, h.cpu(i))?);
        }
        let mut prods = Vec::new();
        for i in 0..producers {
            let args = [
                name.clone(),
                per.to_string(),
                size.to_string(),
                i.to_string(),
            ];
            prods.push(Peer::spawn(
                "fifo-queue-produce",
                &args,
                h.cpu(consumers + i),
            )?);
        }
        // Every peer has it open once it says it is ready: its name goes
        // now, so that an interrupted run leaves none.
        drop(unlink);
        for p in &mut prods {
            p.go()?;
        }
        for p in prods {
            p.finish()?;
        }
        let mut end = vec![0u8; size];
        rings::fill(&mut end, rings::END);
        for _ in 0..consumers {
            crate::raw::write_all(held.as_raw_fd(), &end)?;
        }
        collect(cons, per * producers as u64)
    }
}

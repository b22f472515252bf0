//! Ping-pong transports: round trips between this process and an echo
//! peer, one small type each.

use std::os::fd::AsRawFd;
use std::time::Instant;

use shmbus::{StartAt, WaitStrategy};

use super::{Harness, Res};
use crate::cleanup;
use crate::peer::Peer;
use crate::raw::{self, Mq, SharedMem};

/// One ping-pong transport.
pub trait PingPong {
    fn name(&self) -> &'static str;

    /// Round trips per measurement (`quick` takes a fifth).
    fn rounds(&self) -> u64 {
        10_000
    }

    /// Makes `total` round trips of `h.opts.size` bytes, calling
    /// `record(start, i)` after round trip `i` that started at `start`.
    fn run(&self, h: &mut Harness, total: u64, record: &mut dyn FnMut(Instant, u64)) -> Res<()>;
}

/// Two processes handing one shared cache line back and forth: the
/// physical limit.
pub struct RawCacheLine;

impl PingPong for RawCacheLine {
    fn name(&self) -> &'static str {
        "raw-cacheline"
    }

    fn rounds(&self) -> u64 {
        100_000
    }

    fn run(&self, h: &mut Harness, total: u64, record: &mut dyn FnMut(Instant, u64)) -> Res<()> {
        let mem = SharedMem::create(raw::PINGPONG_LEN)?;
        let args = [mem.fd_for_child()?.to_string(), total.to_string()];
        let peer = Peer::spawn("echo-cacheline", &args, h.cpu(1))?;
        for i in 0..total {
            let start = Instant::now();
            raw::cacheline_ping(&mem, i + 1);
            record(start, i);
        }
        peer.finish()?;
        Ok(())
    }
}

/// A futex word in shared memory, each side sleeping until woken.
pub struct RawFutex;

impl PingPong for RawFutex {
    fn name(&self) -> &'static str {
        "raw-futex"
    }

    fn run(&self, h: &mut Harness, total: u64, record: &mut dyn FnMut(Instant, u64)) -> Res<()> {
        let mem = SharedMem::create(raw::PINGPONG_LEN)?;
        let args = [mem.fd_for_child()?.to_string(), total.to_string()];
        let peer = Peer::spawn("echo-futex", &args, h.cpu(1))?;
        for i in 0..total {
            let start = Instant::now();
            raw::futex_ping(&mem, (i + 1) as u32);
            record(start, i);
        }
        peer.finish()?;
        Ok(())
    }
}

/// A pair of pipes, or a Unix socket pair.
pub struct FdEcho {
    pub socket: bool,
}

impl PingPong for FdEcho {
    fn name(&self) -> &'static str {
        if self.socket {
            "unix-socket"
        } else {
            "pipe"
        }
    }

    fn run(&self, h: &mut Harness, total: u64, record: &mut dyn FnMut(Instant, u64)) -> Res<()> {
        let size = h.opts.size;
        let (ours_r, ours_w, theirs_r, theirs_w);
        if self.socket {
            let (a, b) = raw::socketpair()?;
            let (a2, b2) = (a.try_clone()?, b.try_clone()?);
            (ours_r, ours_w, theirs_r, theirs_w) = (a, a2, b, b2);
        } else {
            let (to_peer_r, to_peer_w) = raw::pipe()?;
            let (from_peer_r, from_peer_w) = raw::pipe()?;
            (ours_r, ours_w, theirs_r, theirs_w) = (from_peer_r, to_peer_w, to_peer_r, from_peer_w);
        }
        raw::inheritable(&theirs_r)?;
        raw::inheritable(&theirs_w)?;
        let args = [
            theirs_r.as_raw_fd().to_string(),
            theirs_w.as_raw_fd().to_string(),
            size.to_string(),
            total.to_string(),
        ];
        let peer = Peer::spawn("echo-fd", &args, h.cpu(1))?;
        drop((theirs_r, theirs_w));
        let mut buf = vec![0u8; size.max(8)];
        for i in 0..total {
            buf[..8].copy_from_slice(&i.to_ne_bytes());
            let start = Instant::now();
            raw::write_all(ours_w.as_raw_fd(), &buf[..size])?;
            raw::read_exact(ours_r.as_raw_fd(), &mut buf[..size])?;
            record(start, i);
        }
        peer.finish()?;
        Ok(())
    }
}

/// Two POSIX message queues.
pub struct MqEcho;

impl PingPong for MqEcho {
    fn name(&self) -> &'static str {
        "posix-mq"
    }

    fn run(&self, h: &mut Harness, total: u64, record: &mut dyn FnMut(Instant, u64)) -> Res<()> {
        let size = h.opts.size;
        let names = [
            format!("/shmbus-bench-{}-a", std::process::id()),
            format!("/shmbus-bench-{}-b", std::process::id()),
        ];
        cleanup::named_queue(0, &names[0]);
        cleanup::named_queue(1, &names[1]);
        let to_peer = Mq::open(&names[0], true, size)?;
        let from_peer = match Mq::open(&names[1], true, size) {
            Ok(q) => q,
            Err(e) => {
                Mq::unlink(&names[0]);
                return Err(e.into());
            }
        };
        let args = [
            names[0].clone(),
            names[1].clone(),
            size.to_string(),
            total.to_string(),
        ];
        let peer = Peer::spawn("echo-mq", &args, h.cpu(1));
        names.iter().for_each(|n| Mq::unlink(n));
        cleanup::unnamed_queues();
        let peer = peer?;
        let mut buf = vec![0u8; size.max(8)];
        for i in 0..total {
            buf[..8].copy_from_slice(&i.to_ne_bytes());
            let start = Instant::now();
            to_peer.send(&buf[..size])?;
            from_peer.recv(&mut buf[..size])?;
            record(start, i);
        }
        peer.finish()?;
        Ok(())
    }
}

/// Two shmbus topics ("ping" and "pong"), the peer echoing each message.
pub struct ShmbusEcho {
    pub block: bool,
}

impl PingPong for ShmbusEcho {
    fn name(&self) -> &'static str {
        if self.block {
            "shmbus-block"
        } else {
            "shmbus-spin"
        }
    }

    fn rounds(&self) -> u64 {
        if self.block {
            10_000
        } else {
            100_000
        }
    }

    fn run(&self, h: &mut Harness, total: u64, record: &mut dyn FnMut(Instant, u64)) -> Res<()> {
        let size = h.opts.size;
        let (wait, wait_name) = if self.block {
            (WaitStrategy::Block, "block")
        } else {
            (WaitStrategy::Spin, "spin")
        };
        let temp = h.temp_bus()?;
        let bus = temp.bus.as_ref().expect("open");
        let slot = size as u32;
        let mut tx = bus.topic("ping").slot_size(slot).publisher_bytes()?;
        let mut rx = bus
            .topic("pong")
            .slot_size(slot)
            .start_at(StartAt::Next)
            .wait(wait)
            .subscriber_bytes()?;
        let args = [temp.name.clone(), wait_name.into(), total.to_string()];
        let peer = Peer::spawn("echo-shmbus", &args, h.cpu(1))?;
        temp.unlink();
        let mut buf = vec![0u8; size.max(8)];
        for i in 0..total {
            buf[..8].copy_from_slice(&i.to_ne_bytes());
            let start = Instant::now();
            tx.send_bytes(&buf[..size])?;
            rx.recv_bytes()?;
            record(start, i);
        }
        peer.finish()?;
        Ok(())
    }
}

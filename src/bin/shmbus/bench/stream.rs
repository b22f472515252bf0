//! Streaming (1-to-1 throughput) transports: a producer peer sends a count
//! of messages, this process receives them, one small type each.

use std::os::fd::AsRawFd;
use std::time::Instant;

use shmbus::{StartAt, WaitStrategy};

use super::{Harness, Res};
use crate::cleanup;
use crate::peer::Peer;
use crate::raw::{self, Mq, SharedMem};

/// What one run of a stream measured.
pub struct Streamed {
    /// Messages received per second, from the first to the last.
    pub rate: f64,
    /// Messages lost to overwriting.
    pub lagged: u64,
}

/// One streaming transport.
pub trait Stream {
    fn name(&self) -> &'static str;

    /// Messages per measurement (`quick` takes a fifth).
    fn count(&self) -> u64 {
        2_000_000
    }

    /// Whether it can lose messages (its row then says how many it lost).
    fn lossy(&self) -> bool {
        false
    }

    fn run(&self, h: &mut Harness, count: u64) -> Res<Streamed>;
}

fn received(count: u64, start: Option<Instant>) -> Streamed {
    let ns = start.map_or(0, |s| s.elapsed().as_nanos() as u64);
    Streamed {
        rate: count as f64 * 1e9 / ns.max(1) as f64,
        lagged: 0,
    }
}

/// A single-producer single-consumer ring in shared memory: the limit.
pub struct RawSpsc;

impl Stream for RawSpsc {
    fn name(&self) -> &'static str {
        "raw-spsc-ring"
    }

    fn run(&self, h: &mut Harness, count: u64) -> Res<Streamed> {
        let size = h.opts.size;
        let mem = SharedMem::create(raw::spsc_len(size))?;
        let args = [
            mem.fd_for_child()?.to_string(),
            count.to_string(),
            size.to_string(),
        ];
        let mut peer = Peer::spawn("produce-spsc", &args, h.cpu(1))?;
        peer.go()?;
        let ns = raw::spsc_consume(&mem, count, size);
        peer.finish()?;
        Ok(Streamed {
            rate: count as f64 * 1e9 / ns.max(1) as f64,
            lagged: 0,
        })
    }
}

/// What a raw [`FdStream`] reads from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum FdKind {
    /// An anonymous pipe, inherited by the writer.
    Pipe,
    /// A named pipe (FIFO) that the writer opens by its path, as
    /// processes that share only a directory must (what a pipe bus does).
    Fifo,
    /// A connected pair of Unix stream sockets.
    Socket,
}

/// A pipe, a named pipe, or a Unix socket.
pub struct FdStream {
    pub kind: FdKind,
    /// The reader starts [`BEHIND`] late, once (see [`ShmbusPipeStream`]).
    pub behind: bool,
}

/// How late a reader that starts behind begins reading: long enough for
/// the writer to fill the pipe and wait for room (its default 64 KiB takes
/// under a millisecond), before the measured stream.
pub const BEHIND: std::time::Duration = std::time::Duration::from_millis(20);

impl Stream for FdStream {
    fn name(&self) -> &'static str {
        match (self.kind, self.behind) {
            (FdKind::Pipe, _) => "pipe",
            (FdKind::Fifo, false) => "fifo",
            (FdKind::Fifo, true) => "fifo-behind",
            (FdKind::Socket, _) => "unix-socket",
        }
    }

    fn count(&self) -> u64 {
        200_000
    }

    fn run(&self, h: &mut Harness, count: u64) -> Res<Streamed> {
        let size = h.opts.size;
        if self.kind == FdKind::Fifo {
            let path = std::env::temp_dir().join(format!(
                "shmbus-bench-{}-{}.fifo",
                std::process::id(),
                h.next_id()
            ));
            let ours = raw::fifo(&path)?;
            let args = [
                path.display().to_string(),
                count.to_string(),
                size.to_string(),
            ];
            let peer = Peer::spawn("produce-fifo", &args, h.cpu(1));
            // The writer has it open once it says it is ready.
            let _ = std::fs::remove_file(&path);
            let mut peer = peer?;
            peer.go()?;
            if self.behind {
                std::thread::sleep(BEHIND);
            }
            return read_stream(ours, count, size, peer);
        }
        let (ours, theirs) = if self.kind == FdKind::Socket {
            raw::socketpair()?
        } else {
            raw::pipe()?
        };
        raw::inheritable(&theirs)?;
        let args = [
            theirs.as_raw_fd().to_string(),
            count.to_string(),
            size.to_string(),
        ];
        let mut peer = Peer::spawn("produce-fd", &args, h.cpu(1))?;
        drop(theirs);
        peer.go()?;
        read_stream(ours, count, size, peer)
    }
}

/// Reads `count` messages of `size` bytes from `ours`, each with one
/// blocking read, and lets `peer` finish.
fn read_stream(ours: std::os::fd::OwnedFd, count: u64, size: usize, peer: Peer) -> Res<Streamed> {
    let mut buf = vec![0u8; size];
    let mut start = None;
    for _ in 0..count {
        raw::read_exact(ours.as_raw_fd(), &mut buf)?;
        start.get_or_insert_with(Instant::now);
    }
    peer.finish()?;
    Ok(received(count, start))
}

/// A POSIX message queue.
pub struct MqStream;

impl Stream for MqStream {
    fn name(&self) -> &'static str {
        "posix-mq"
    }

    fn count(&self) -> u64 {
        200_000
    }

    fn run(&self, h: &mut Harness, count: u64) -> Res<Streamed> {
        let size = h.opts.size;
        let name = format!("/shmbus-bench-{}-s", std::process::id());
        cleanup::named_queue(0, &name);
        let q = Mq::open(&name, true, size)?;
        let args = [name.clone(), count.to_string(), size.to_string()];
        let peer = Peer::spawn("produce-mq", &args, h.cpu(1));
        Mq::unlink(&name);
        cleanup::unnamed_queues();
        let mut peer = peer?;
        peer.go()?;
        let mut buf = vec![0u8; size];
        let mut start = None;
        for _ in 0..count {
            q.recv(&mut buf)?;
            start.get_or_insert_with(Instant::now);
        }
        peer.finish()?;
        Ok(received(count, start))
    }
}

/// A shmbus broadcast topic, lossless or overwrite, read by this process;
/// published with `send_bytes` (a copy from the publisher's buffer) or,
/// with `loan`, through `loan_bytes` + one `write_at` of the whole
/// message + `commit` (the same bytes, stored by the loan's word stores).
/// With `variable`, a variable-size topic (`TopicBuilder::variable`) whose
/// arena holds as many messages of this size as the fixed ring's slots.
pub struct ShmbusStream {
    pub lossless: bool,
    pub loan: bool,
    pub variable: bool,
    /// Lossless only: the subscriber reads each message in place
    /// (`recv_bytes_ref`), every word of it (an XOR fold), instead of
    /// copying it out.
    pub in_place: bool,
}

impl ShmbusStream {
    pub const fn copying(lossless: bool) -> Self {
        ShmbusStream {
            lossless,
            loan: false,
            variable: false,
            in_place: false,
        }
    }
}

/// Every word of `msg` folded together: a reader that touches all of a
/// message it reads in place.
fn fold_words(msg: &[u8]) -> u64 {
    msg.chunks_exact(8).fold(0, |acc, w| {
        acc ^ u64::from_ne_bytes(w.try_into().expect("8 bytes"))
    })
}

/// The arena of a variable-size stream topic: the fixed ring's slots'
/// worth of messages of `size` bytes, a power of two within the limits.
fn stream_arena(size: usize) -> u64 {
    let bytes = (raw::ring_slots(size) * size.next_multiple_of(8)) as u64;
    // At least 16 messages (`ring_slots`): always more than twice one.
    bytes.next_power_of_two().clamp(4096, 1 << 30)
}

impl Stream for ShmbusStream {
    fn name(&self) -> &'static str {
        if self.in_place {
            return "shmbus-lossless-inplace";
        }
        match (self.lossless, self.loan, self.variable) {
            (true, false, false) => "shmbus-lossless",
            (false, false, false) => "shmbus-overwrite",
            (true, true, false) => "shmbus-lossless-loan",
            (false, true, false) => "shmbus-overwrite-loan",
            (true, false, true) => "shmbus-lossless-var",
            (false, false, true) => "shmbus-overwrite-var",
            (true, true, true) => "shmbus-lossless-var-loan",
            (false, true, true) => "shmbus-overwrite-var-loan",
        }
    }

    fn lossy(&self) -> bool {
        !self.lossless
    }

    fn run(&self, h: &mut Harness, count: u64) -> Res<Streamed> {
        let size = h.opts.size;
        let temp = h.temp_bus()?;
        let bus = temp.bus.as_ref().expect("open");
        let topic = bus.topic("data").capacity(raw::ring_slots(size) as u32);
        let mut topic = if self.variable {
            topic.variable(stream_arena(size))
        } else {
            topic.slot_size(size as u32)
        };
        if self.lossless {
            topic = topic.lossless(4);
        }
        let mut rx = topic
            .start_at(StartAt::Next)
            .wait(WaitStrategy::Spin)
            .subscriber_bytes()?;
        let how = if self.loan { "loan" } else { "copy" };
        let args = [
            temp.name.clone(),
            count.to_string(),
            size.to_string(),
            how.into(),
        ];
        let mut peer = Peer::spawn("produce-shmbus", &args, h.cpu(1))?;
        temp.unlink();
        peer.go()?;
        let mut start = None;
        let mut seen = 0;
        while seen < count {
            let got = if self.in_place {
                match rx.recv_bytes_ref() {
                    Ok(msg) => {
                        std::hint::black_box(fold_words(&msg));
                        Ok(())
                    }
                    Err(shmbus::RecvRefError::Recv(err)) => Err(err),
                    Err(err) => return Err(err.into()),
                }
            } else {
                rx.recv_bytes().map(|msg| {
                    std::hint::black_box(msg);
                })
            };
            match got {
                Ok(()) => {
                    start.get_or_insert_with(Instant::now);
                    seen += 1;
                }
                Err(shmbus::RecvError::Lagged(n)) => seen += n,
                Err(shmbus::RecvError::Disconnected) => break,
                Err(e) => return Err(e.into()),
            }
        }
        let elapsed = start.map_or(0, |s| s.elapsed().as_nanos() as u64);
        peer.finish()?;
        let s = rx.stats();
        Ok(Streamed {
            rate: s.received as f64 * 1e9 / elapsed.max(1) as f64,
            lagged: s.lagged,
        })
    }
}

/// A shmbus broadcast topic on pipes (`Transport::Pipe`), lossless or
/// overwrite, read by this process: against a raw pipe ([`FdStream`]).
pub struct ShmbusPipeStream {
    pub lossless: bool,
    /// On POSIX message queues (`Transport::Mq`), against the raw queue
    /// ([`MqStream`]).
    pub mq: bool,
    /// Lossless on pipes: the subscriber starts [`BEHIND`] late, once, so
    /// that the publisher fills its FIFO and waits for room before the
    /// measured stream, as it does whenever a subscriber falls behind (a
    /// wait that once polled the FIFO slowed every later write).
    pub behind: bool,
}

impl Stream for ShmbusPipeStream {
    fn name(&self) -> &'static str {
        match (self.mq, self.lossless) {
            (false, true) if self.behind => "shmbus-pipe-lossless-behind",
            (false, true) => "shmbus-pipe-lossless",
            (false, false) => "shmbus-pipe-overwrite",
            (true, true) => "shmbus-mq-lossless",
            (true, false) => "shmbus-mq-overwrite",
        }
    }

    fn count(&self) -> u64 {
        200_000
    }

    fn lossy(&self) -> bool {
        !self.lossless
    }

    fn run(&self, h: &mut Harness, count: u64) -> Res<Streamed> {
        let size = h.opts.size;
        let temp = h.temp_dir_bus(if self.mq {
            shmbus::Transport::Mq
        } else {
            shmbus::Transport::Pipe
        })?;
        let bus = temp.bus.as_ref().expect("open");
        // As many messages as the raw pipe's default 64 KiB holds: the
        // subscriber's FIFO is sized to the capacity. On message queues 8,
        // the power of two under the raw queue's 10 (the default limit).
        let fit = (65536 / (size + 32)).max(1);
        let capacity = if self.mq {
            8
        } else {
            1u32 << (usize::BITS - 1 - fit.leading_zeros())
        };
        let mut topic = bus.topic("data").capacity(capacity).slot_size(size as u32);
        if self.lossless {
            topic = topic.lossless(4);
        }
        // Blocking, as the raw pipe's reader does.
        let mut rx = topic
            .start_at(StartAt::Next)
            .wait(WaitStrategy::Block)
            .subscriber_bytes()?;
        let args = [
            temp.name.clone(),
            count.to_string(),
            size.to_string(),
            "copy".into(),
        ];
        let mut peer = Peer::spawn("produce-shmbus", &args, h.cpu(1))?;
        peer.go()?;
        if self.behind {
            std::thread::sleep(BEHIND);
        }
        let mut start = None;
        let mut seen = 0;
        while seen < count {
            match rx.recv_bytes() {
                Ok(msg) => {
                    std::hint::black_box(msg);
                    start.get_or_insert_with(Instant::now);
                    seen += 1;
                }
                Err(shmbus::RecvError::Lagged(n)) => seen += n,
                Err(shmbus::RecvError::Disconnected) => break,
                Err(e) => return Err(e.into()),
            }
        }
        let elapsed = start.map_or(0, |s| s.elapsed().as_nanos() as u64);
        peer.finish()?;
        let s = rx.stats();
        Ok(Streamed {
            rate: s.received as f64 * 1e9 / elapsed.max(1) as f64,
            lagged: s.lagged,
        })
    }
}

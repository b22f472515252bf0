//! Ping-pong transports: round trips between this process and an echo
//! peer, one small type each.

use std::os::fd::AsRawFd;
use std::time::Instant;

use shmbus::{Bytes, Select, StartAt, Subscriber, TryRecvError, WaitStrategy};

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

    /// A physical limit that the compared transport also gets a ratio to
    /// when it is not the first baseline (the raw ring).
    fn is_limit(&self) -> bool {
        false
    }
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

/// Two raw rings, one each way, each message in the next slot
/// ([`crate::rings::PingPongRings`]): the physical limit of a ring, which
/// on some machines is above the cache line's (see there).
pub struct RawRing;

impl PingPong for RawRing {
    fn name(&self) -> &'static str {
        "raw-ring"
    }

    fn is_limit(&self) -> bool {
        true
    }

    fn rounds(&self) -> u64 {
        100_000
    }

    fn run(&self, h: &mut Harness, total: u64, record: &mut dyn FnMut(Instant, u64)) -> Res<()> {
        use crate::rings::PingPongRings;
        let size = h.opts.size;
        let mem = SharedMem::create(PingPongRings::len(size))?;
        let rings = PingPongRings::new(&mem, size);
        let args = [
            mem.fd_for_child()?.to_string(),
            total.to_string(),
            size.to_string(),
        ];
        let peer = Peer::spawn("echo-ring", &args, h.cpu(1))?;
        let (mut msg, mut back) = (rings.message(0), rings.message(0));
        for i in 0..total {
            rings.retag(&mut msg, i);
            let start = Instant::now();
            rings.write(0, i, &msg);
            rings.read(1, i, &mut back);
            record(start, i);
            if !rings.is_message(&back, i) {
                return Err(format!("raw-ring: echo {i} came back wrong").into());
            }
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

/// How each side of a shmbus ping-pong waits for the other's message.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `recv` busy-polling (`WaitStrategy::Spin`).
    Spin,
    /// `recv` sleeping on the futex at once (`WaitStrategy::Block`).
    Block,
    /// A `Select` over the subscriber and a second, idle topic's
    /// subscriber, then `try_recv` (handles that sleep at once).
    Select,
    /// `poll(2)` on the subscriber's `event_fd`, then `try_recv`.
    Fd,
    /// `recv().await` on a current-thread tokio runtime.
    #[cfg(feature = "tokio")]
    Async,
}

impl Via {
    pub fn name(self) -> &'static str {
        match self {
            Via::Spin => "spin",
            Via::Block => "block",
            Via::Select => "select",
            Via::Fd => "fd",
            #[cfg(feature = "tokio")]
            Via::Async => "async",
        }
    }

    pub fn of(name: &str) -> Via {
        match name {
            "block" => Via::Block,
            "select" => Via::Select,
            "fd" => Via::Fd,
            #[cfg(feature = "tokio")]
            "async" => Via::Async,
            _ => Via::Spin,
        }
    }

    /// The wait strategy of the handles.
    pub fn wait(self) -> WaitStrategy {
        match self {
            Via::Spin => WaitStrategy::Spin,
            _ => WaitStrategy::Block,
        }
    }
}

/// Receives one message on `rx` as `via` says and hands it to `take`
/// where the receive leaves it (no copy of the harness's own, as the raw
/// baselines copy nothing; the async way alone copies, out of its
/// runtime, into `buf`). `idle` is the second subscriber a `Select` waits
/// on.
pub fn recv_via(
    via: Via,
    rx: &mut Subscriber<Bytes>,
    idle: &mut Subscriber<Bytes>,
    rt: Option<&RuntimeBox>,
    buf: &mut Vec<u8>,
    take: impl FnOnce(&[u8]) -> Res<()>,
) -> Res<()> {
    loop {
        match via {
            Via::Spin | Via::Block => return take(rx.recv_bytes()?),
            Via::Select => {
                Select::new().select(&mut [&mut *rx, &mut *idle])?;
            }
            Via::Fd => {
                let fd = rx.event_fd()?.as_raw_fd();
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd, for the duration of the call.
                if unsafe { libc::poll(&mut pfd, 1, -1) } < 0 {
                    return Err(std::io::Error::last_os_error().into());
                }
            }
            #[cfg(feature = "tokio")]
            Via::Async => {
                let n = rt.expect("a runtime for async").recv(rx, buf)?;
                return take(&buf[..n]);
            }
        }
        let _ = (rt, &buf);
        match rx.try_recv_bytes() {
            Ok(msg) => return take(msg),
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Lagged(n)) => return Err(shmbus::RecvError::Lagged(n).into()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// The async side of the bench: a current-thread runtime and the
/// subscriber moved into it for the run (`Via::Async`).
#[cfg(feature = "tokio")]
pub struct RuntimeBox {
    rt: tokio::runtime::Runtime,
    rx: std::cell::RefCell<Option<shmbus::asyncio::AsyncSubscriber<Bytes>>>,
}

#[cfg(not(feature = "tokio"))]
pub struct RuntimeBox;

#[cfg(feature = "tokio")]
impl RuntimeBox {
    pub fn new() -> Res<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(RuntimeBox {
            rt,
            rx: std::cell::RefCell::new(None),
        })
    }

    /// Receives on `rx` through its async form (made on first use and
    /// kept; `rx` itself is then left unused).
    fn recv(&self, rx: &mut Subscriber<Bytes>, buf: &mut Vec<u8>) -> Res<usize> {
        let mut slot = self.rx.borrow_mut();
        if slot.is_none() {
            let _guard = self.rt.enter();
            let sub = std::mem::replace(rx, rx.resubscribe()?);
            *slot = Some(sub.into_async()?);
        }
        let Some(arx) = slot.as_mut() else {
            return Err("no async subscriber".into());
        };
        let msg = self.rt.block_on(arx.recv_bytes())?;
        buf.clear();
        buf.extend_from_slice(&msg);
        Ok(msg.len())
    }
}

/// Two shmbus topics ("ping" and "pong"), the peer echoing each message,
/// both sides waiting as `via` says. `in_place`: both topics lossless,
/// each side reading with `recv_bytes_ref` and the echo sending straight
/// from the lent message (one copy a hop, into the slot), as a zero-copy
/// peer's echo does; otherwise overwrite topics and copying receives.
pub struct ShmbusEcho {
    pub via: Via,
    pub in_place: bool,
}

impl PingPong for ShmbusEcho {
    fn name(&self) -> &'static str {
        if self.in_place {
            return "shmbus-spin-inplace";
        }
        match self.via {
            Via::Spin => "shmbus-spin",
            Via::Block => "shmbus-block",
            Via::Select => "shmbus-select",
            Via::Fd => "shmbus-fd",
            #[cfg(feature = "tokio")]
            Via::Async => "shmbus-async",
        }
    }

    fn rounds(&self) -> u64 {
        if self.via == Via::Spin {
            100_000
        } else {
            10_000
        }
    }

    fn run(&self, h: &mut Harness, total: u64, record: &mut dyn FnMut(Instant, u64)) -> Res<()> {
        let size = h.opts.size;
        let wait = self.via.wait();
        let temp = h.temp_bus()?;
        let bus = temp.bus.as_ref().expect("open");
        let slot = size as u32;
        // One message in flight: a quarter of a stream ring's slots (1024
        // for small messages, the default; 16 of 1 MiB), so that both
        // topics of large messages fit the bus.
        let capacity = (crate::raw::ring_slots(size) / 4).max(16) as u32;
        let topic = |name| {
            let topic = bus.topic(name).slot_size(slot).capacity(capacity);
            if self.in_place {
                topic.lossless(1)
            } else {
                topic
            }
        };
        let mut tx = topic("ping").publisher_bytes()?;
        let mut rx = topic("pong")
            .start_at(StartAt::Next)
            .wait(wait)
            .subscriber_bytes()?;
        // As the peer makes it (8 messages, within a message queue's
        // default limit).
        let mut idle = bus
            .topic("idle")
            .capacity(8)
            .wait(wait)
            .subscriber_bytes()?;
        let mode = if self.in_place { "inplace" } else { "copy" };
        let args = [
            temp.name.clone(),
            self.via.name().into(),
            total.to_string(),
            mode.into(),
        ];
        let peer = Peer::spawn("echo-shmbus", &args, h.cpu(1))?;
        temp.unlink();
        let rt = runtime_for(self.via)?;
        let mut buf = vec![0u8; size.max(8)];
        let mut back = Vec::with_capacity(size);
        for i in 0..total {
            buf[..8].copy_from_slice(&i.to_ne_bytes());
            let start = Instant::now();
            tx.send_bytes(&buf[..size])?;
            if self.in_place {
                let echoed = rx.recv_bytes_ref()?;
                record(start, i);
                check_echo(&echoed, i)?;
            } else {
                recv_via(
                    self.via,
                    &mut rx,
                    &mut idle,
                    rt.as_ref(),
                    &mut back,
                    |msg| {
                        std::hint::black_box(msg);
                        Ok(())
                    },
                )?;
                record(start, i);
            }
        }
        peer.finish()?;
        Ok(())
    }
}

/// Whether message `i` came back: its first 8 bytes are its number.
fn check_echo(echoed: &[u8], i: u64) -> Res<()> {
    let tag = echoed.get(..8).and_then(|b| b.try_into().ok());
    if echoed.len() >= 8 && tag.map(u64::from_ne_bytes) != Some(i) {
        return Err(format!("shmbus echoed message {i} wrong").into());
    }
    Ok(())
}

/// A runtime if `via` needs one.
pub fn runtime_for(via: Via) -> Res<Option<RuntimeBox>> {
    #[cfg(feature = "tokio")]
    if via == Via::Async {
        return Ok(Some(RuntimeBox::new()?));
    }
    let _ = via;
    Ok(None)
}

/// Two shmbus topics on pipes (`Transport::Pipe`), or with `mq` on POSIX
/// message queues (`Transport::Mq`), the peer echoing each message, both
/// sides blocking: what the fallback transport costs over the raw pipe
/// pair ([`FdEcho`]) or queue pair ([`MqEcho`]), the system calls both
/// make.
pub struct ShmbusPipeEcho {
    pub mq: bool,
}

impl PingPong for ShmbusPipeEcho {
    fn name(&self) -> &'static str {
        if self.mq {
            "shmbus-mq"
        } else {
            "shmbus-pipe"
        }
    }

    fn run(&self, h: &mut Harness, total: u64, record: &mut dyn FnMut(Instant, u64)) -> Res<()> {
        let size = h.opts.size;
        let temp = h.temp_dir_bus(if self.mq {
            shmbus::Transport::Mq
        } else {
            shmbus::Transport::Pipe
        })?;
        let bus = temp.bus.as_ref().expect("open");
        // 8 messages: within a message queue's default limit (10).
        let topic = |name| bus.topic(name).slot_size(size as u32).capacity(8);
        let mut tx = topic("ping").publisher_bytes()?;
        let mut rx = topic("pong")
            .start_at(StartAt::Next)
            .wait(WaitStrategy::Block)
            .subscriber_bytes()?;
        let args = [
            temp.name.clone(),
            Via::Block.name().into(),
            total.to_string(),
            "copy".into(),
        ];
        let peer = Peer::spawn("echo-shmbus", &args, h.cpu(1))?;
        let mut buf = vec![0u8; size.max(8)];
        for i in 0..total {
            buf[..8].copy_from_slice(&i.to_ne_bytes());
            let start = Instant::now();
            tx.send_bytes(&buf[..size])?;
            let echoed = rx.recv_bytes()?;
            record(start, i);
            check_echo(echoed, i)?;
        }
        peer.finish()?;
        Ok(())
    }
}

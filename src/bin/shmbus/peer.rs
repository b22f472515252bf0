//! Peer processes of the benchmark harness: this same binary, run as
//! `shmbus __peer ROLE ARGS...`. Each peer dies with its parent
//! (PR_SET_PDEATHSIG), so an interrupted harness leaves no process behind.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use shmbus::{Bus, PopError, RecvError, StartAt, TryPopError, WaitStrategy};

use crate::raw::{self, Mq, SharedMem};
use crate::rings;

/// CLOCK_MONOTONIC in nanoseconds, the same clock in every process.
pub fn now_ns() -> u64 {
    shmbus::Clock::Monotonic.now_ns()
}

pub fn pin_to(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

/// The CPUs this process may run on.
pub fn cpus() -> Vec<usize> {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&c| set.is_set(c))
            .collect(),
        Err(_) => vec![0],
    }
}

/// A running peer.
pub struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: std::io::Lines<BufReader<ChildStdout>>,
}

impl Peer {
    /// Starts `shmbus __peer role args...`, pinned to `cpu` if given, and
    /// waits for it to say READY.
    pub fn spawn(role: &str, args: &[String], cpu: Option<usize>) -> std::io::Result<Peer> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("__peer").arg(role).args(args);
        if let Some(cpu) = cpu {
            cmd.env("SHMBUS_BENCH_CPU", cpu.to_string());
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take();
        let lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut peer = Peer {
            child,
            stdin,
            lines,
        };
        peer.expect("READY")?;
        Ok(peer)
    }

    /// Reads lines until one starts with `word`; returns the rest.
    pub fn expect(&mut self, word: &str) -> std::io::Result<String> {
        for line in self.lines.by_ref() {
            let line = line?;
            if let Some(rest) = line.strip_prefix(word) {
                return Ok(rest.trim().to_owned());
            }
        }
        Err(std::io::Error::other(format!(
            "peer exited before saying {word}"
        )))
    }

    /// Reads the peer's `RESULT n1 n2 ...` line: exactly `N` numbers.
    pub fn result<const N: usize>(&mut self) -> std::io::Result<[u64; N]> {
        let line = self.expect("RESULT")?;
        let numbers: Vec<u64> = line
            .split_whitespace()
            .map(|x| x.parse().map_err(std::io::Error::other))
            .collect::<std::io::Result<_>>()?;
        numbers
            .try_into()
            .map_err(|_| std::io::Error::other(format!("peer result {line:?} is not {N} numbers")))
    }

    /// Tells the peer to start.
    pub fn go(&mut self) -> std::io::Result<()> {
        let stdin = self.stdin.as_mut().expect("stdin kept until go");
        stdin.write_all(b"GO\n")?;
        stdin.flush()
    }

    /// Waits for the peer to exit.
    pub fn finish(mut self) -> std::io::Result<()> {
        drop(self.stdin.take());
        let status = self.child.wait()?;
        if !status.success() {
            return Err(std::io::Error::other(format!("peer failed: {status}")));
        }
        Ok(())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Open-loop latency, as a reader sees it: from the time each message was
/// due to be sent (its tag) to the time it is read.
struct Latency {
    hist: hdrhistogram::Histogram<u64>,
    bad: u64,
}

impl Latency {
    fn new() -> Self {
        Latency {
            hist: hdrhistogram::Histogram::new_with_bounds(1, 60_000_000_000, 3)
                .expect("valid bounds"),
            bad: 0,
        }
    }

    /// One message, tagged with its due time (`None`: not whole).
    fn record(&mut self, due: Option<u64>) {
        match due {
            Some(due) => self
                .hist
                .saturating_record(now_ns().saturating_sub(due).max(1)),
            None => self.bad += 1,
        }
    }

    fn result_line(&self, lost: u64) -> String {
        let h = &self.hist;
        format!(
            "RESULT {} {} {} {} {lost} {}",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            self.bad
        )
    }
}

pub fn ready() {
    println!("READY");
    std::io::stdout().flush().unwrap();
}

fn wait_go() {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T
where
    T::Err: std::fmt::Debug,
{
    args[i]
        .parse()
        .unwrap_or_else(|e| panic!("peer argument {i} ({:?}): {e:?}", args[i]))
}

fn wait_of(name: &str) -> WaitStrategy {
    match name {
        "block" => WaitStrategy::Block,
        "adaptive" => WaitStrategy::adaptive(),
        _ => WaitStrategy::Spin,
    }
}

type Res = Result<(), Box<dyn std::error::Error>>;

/// A peer role: what `shmbus __peer ROLE ARGS...` runs.
pub type Role = fn(&[String]) -> Res;

/// The roles of shmbus and the raw baselines, by name; the peers'
/// (`--features peers`) are in `bench::peers::ROLES`.
const ROLES: &[(&str, Role)] = &[
    ("echo-cacheline", echo_cacheline),
    ("echo-ring", echo_ring),
    ("echo-futex", echo_futex),
    ("echo-fd", echo_fd),
    ("echo-mq", echo_mq),
    ("echo-shmbus", echo_shmbus),
    ("produce-spsc", produce_spsc),
    ("produce-fd", produce_fd),
    ("produce-fifo", produce_fifo),
    ("produce-mq", produce_mq),
    ("produce-shmbus", produce_shmbus),
    ("subscribe-shmbus", subscribe_shmbus),
    ("subscribe-spmc", subscribe_spmc),
    ("openloop-shmbus", openloop_shmbus),
    ("openloop-spmc", openloop_spmc),
    ("queue-produce", queue_produce),
    ("queue-consume", queue_consume),
    ("mpmc-produce", mpmc_produce),
    ("mpmc-consume", mpmc_consume),
    ("fifo-queue-produce", fifo_queue_produce),
    ("fifo-queue-consume", fifo_queue_consume),
];

/// Runs a peer role; called by `main` for `shmbus __peer`.
pub fn run(role: &str, args: &[String]) -> Res {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    if let Some(cpu) = std::env::var("SHMBUS_BENCH_CPU")
        .ok()
        .and_then(|c| c.parse().ok())
    {
        pin_to(cpu);
    }
    let found = ROLES
        .iter()
        .chain(crate::bench::PEER_ROLES)
        .find(|(name, _)| *name == role);
    match found {
        Some((_, run)) => run(args),
        None => Err(format!("unknown peer role {role}").into()),
    }
}

/// FD COUNT
fn echo_cacheline(args: &[String]) -> Res {
    let mem = SharedMem::inherit(arg(args, 0), raw::PINGPONG_LEN)?;
    ready();
    raw::cacheline_echo(&mem, arg(args, 1));
    Ok(())
}

/// FD COUNT SIZE: echoes each message of the ping ring into the pong ring
/// (`rings::PingPongRings`).
fn echo_ring(args: &[String]) -> Res {
    let size: usize = arg(args, 2);
    let mem = SharedMem::inherit(arg(args, 0), rings::PingPongRings::len(size))?;
    let rings = rings::PingPongRings::new(&mem, size);
    let mut buf = rings.message(0);
    ready();
    for seq in 0..arg::<u64>(args, 1) {
        rings.read(0, seq, &mut buf);
        rings.write(1, seq, &buf);
    }
    Ok(())
}

/// FD COUNT
fn echo_futex(args: &[String]) -> Res {
    let mem = SharedMem::inherit(arg(args, 0), raw::PINGPONG_LEN)?;
    ready();
    raw::futex_echo(&mem, arg(args, 1));
    Ok(())
}

/// RFD WFD SIZE COUNT
fn echo_fd(args: &[String]) -> Res {
    let (rfd, wfd, size, count): (i32, i32, usize, u64) =
        (arg(args, 0), arg(args, 1), arg(args, 2), arg(args, 3));
    let mut buf = vec![0u8; size];
    ready();
    for _ in 0..count {
        if !raw::read_exact(rfd, &mut buf)? {
            break;
        }
        raw::write_all(wfd, &buf)?;
    }
    Ok(())
}

/// IN OUT SIZE COUNT
fn echo_mq(args: &[String]) -> Res {
    let (size, count): (usize, u64) = (arg(args, 2), arg(args, 3));
    let (inq, outq) = (
        Mq::open(&args[0], false, size)?,
        Mq::open(&args[1], false, size)?,
    );
    let mut buf = vec![0u8; size];
    ready();
    for _ in 0..count {
        let n = inq.recv(&mut buf)?;
        outq.send(&buf[..n])?;
    }
    Ok(())
}

/// BUS WAIT COUNT MODE (`copy`, or `inplace`: the topics are lossless and
/// each message is sent back straight from where `recv_bytes_ref` lends it).
fn echo_shmbus(args: &[String]) -> Res {
    use crate::bench::latency::{recv_via, runtime_for, Via};
    let bus = Bus::open_existing(&args[0])?;
    let via = Via::of(&args[1]);
    let count: u64 = arg(args, 2);
    let mut rx = bus
        .topic("ping")
        .start_at(StartAt::Next)
        .wait(via.wait())
        .subscriber_bytes()?;
    let mut tx = bus.topic("pong").wait(via.wait()).publisher_bytes()?;
    if args[3] == "inplace" {
        ready();
        for _ in 0..count {
            let msg = rx.recv_bytes_ref()?;
            tx.send_bytes(&msg)?;
        }
        return Ok(());
    }
    // 8 messages: within a message queue's default limit (10).
    let mut idle = bus
        .topic("idle")
        .capacity(8)
        .wait(via.wait())
        .subscriber_bytes()?;
    let rt = runtime_for(via)?;
    let mut buf = Vec::new();
    ready();
    for _ in 0..count {
        // Sent back from where the receive leaves it.
        let echo = |msg: &[u8]| -> Res { tx.send_bytes(msg).map(drop).map_err(Into::into) };
        match recv_via(via, &mut rx, &mut idle, rt.as_ref(), &mut buf, echo) {
            Ok(()) => {}
            Err(e) => match e.downcast_ref::<RecvError>() {
                Some(RecvError::Lagged(_)) => continue,
                _ => return Err(e),
            },
        }
    }
    Ok(())
}

/// FD COUNT SIZE
fn produce_spsc(args: &[String]) -> Res {
    let (count, size): (u64, usize) = (arg(args, 1), arg(args, 2));
    let mem = SharedMem::inherit(arg(args, 0), raw::spsc_len(size))?;
    ready();
    wait_go();
    raw::spsc_produce(&mem, count, size);
    Ok(())
}

/// WFD COUNT SIZE
fn produce_fd(args: &[String]) -> Res {
    write_messages(arg(args, 0), args)
}

/// PATH COUNT SIZE: as `produce-fd`, into the named pipe at PATH.
fn produce_fifo(args: &[String]) -> Res {
    let fifo = std::fs::OpenOptions::new().write(true).open(&args[0])?;
    write_messages(std::os::fd::AsRawFd::as_raw_fd(&fifo), args)
}

/// Writes COUNT messages of SIZE bytes (`args[1]`, `args[2]`) into `fd`,
/// each with one write, once told to go.
fn write_messages(fd: i32, args: &[String]) -> Res {
    let (count, size): (u64, usize) = (arg(args, 1), arg(args, 2));
    let buf = vec![0x5au8; size];
    ready();
    wait_go();
    for _ in 0..count {
        raw::write_all(fd, &buf)?;
    }
    Ok(())
}

/// NAME COUNT SIZE
fn produce_mq(args: &[String]) -> Res {
    let (count, size): (u64, usize) = (arg(args, 1), arg(args, 2));
    let q = Mq::open(&args[0], false, size)?;
    let buf = vec![0x5au8; size];
    ready();
    wait_go();
    for _ in 0..count {
        q.send(&buf)?;
    }
    Ok(())
}

/// BUS COUNT SIZE [copy|loan]: publisher of topic "data" (mode as
/// created), by `send_bytes` or by a loan written whole and committed.
fn produce_shmbus(args: &[String]) -> Res {
    let bus = Bus::open_existing(&args[0])?;
    let (count, size): (u64, usize) = (arg(args, 1), arg(args, 2));
    let loan = args.get(3).is_some_and(|how| how == "loan");
    let mut tx = bus
        .topic("data")
        .wait(WaitStrategy::Spin)
        .publisher_bytes()?;
    let mut buf = vec![0u8; size];
    rings::fill(&mut buf, 0);
    ready();
    wait_go();
    for seq in 0..count {
        rings::stamp(&mut buf, seq);
        if loan {
            let mut msg = tx.loan_bytes(size)?;
            msg.write_at(0, &buf)?;
            msg.commit()?;
        } else {
            tx.send_bytes(&buf)?;
        }
    }
    Ok(())
}

/// BUS WAIT COUNT [copy|inplace]: subscriber of "data" until it has seen
/// (received or lost) COUNT messages, verifying each: copied out
/// (`recv_bytes`), or read in place (`recv_bytes_ref`, lossless topics).
/// Reads the clock at the first message and after the last only. Prints
/// RESULT received lagged bad first_ns last_ns.
fn subscribe_shmbus(args: &[String]) -> Res {
    let bus = Bus::open_existing(&args[0])?;
    let count: u64 = arg(args, 2);
    let in_place = args.get(3).is_some_and(|how| how == "inplace");
    let mut rx = bus
        .topic("data")
        .start_at(StartAt::Next)
        .wait(wait_of(&args[1]))
        .liveness_check_interval(Duration::from_millis(20))
        .subscriber_bytes()?;
    ready();
    // Counted here, as the other transports' readers count, rather than
    // from `stats()` after every message.
    let mut got = rings::Received::default();
    let mut seq = rx.next_seq();
    while got.received + got.lagged < count {
        let tag = if in_place {
            match rx.recv_bytes_ref() {
                Ok(msg) => Ok(rings::check(&msg)),
                Err(shmbus::RecvRefError::Recv(err)) => Err(err),
                Err(err) => return Err(err.into()),
            }
        } else {
            rx.recv_bytes().map(rings::check)
        };
        match tag {
            Ok(tag) => {
                if tag != Some(seq) {
                    got.bad += 1;
                }
                if got.received == 0 {
                    got.first_ns = now_ns();
                }
                got.received += 1;
                seq += 1;
            }
            Err(RecvError::Lagged(n)) => {
                got.lagged += n;
                seq += n;
            }
            Err(RecvError::Disconnected) => break,
            Err(e) => return Err(e.into()),
        }
    }
    got.last_ns = now_ns();
    println!("{}", got.result_line());
    Ok(())
}

/// FD COUNT SIZE: a reader of the raw SPMC ring.
fn subscribe_spmc(args: &[String]) -> Res {
    let (count, size): (u64, usize) = (arg(args, 1), arg(args, 2));
    let mem = SharedMem::inherit(arg(args, 0), rings::spmc_len(size))?;
    ready();
    let got = rings::spmc_subscribe(&mem, count, size, |seq, tag| tag == seq);
    println!("{}", got.result_line());
    Ok(())
}

/// BUS COUNT: open-loop latency, a subscriber of "data" (spinning)
/// until it has seen COUNT messages, each tagged with the time it
/// was due to be sent. Prints RESULT p50 p99 p99.9 max lost bad (ns).
fn openloop_shmbus(args: &[String]) -> Res {
    let bus = Bus::open_existing(&args[0])?;
    let count: u64 = arg(args, 1);
    let mut rx = bus
        .topic("data")
        .start_at(StartAt::Next)
        .wait(WaitStrategy::Spin)
        .liveness_check_interval(Duration::from_millis(20))
        .subscriber_bytes()?;
    let mut latency = Latency::new();
    ready();
    loop {
        match rx.recv_bytes() {
            Ok(msg) => latency.record(rings::check(msg)),
            Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Disconnected) => break,
            Err(e) => return Err(e.into()),
        }
        let s = rx.stats();
        if s.received + s.lagged >= count {
            break;
        }
    }
    println!("{}", latency.result_line(rx.stats().lagged));
    Ok(())
}

/// FD COUNT SIZE: open-loop latency, a reader of the raw SPMC ring.
fn openloop_spmc(args: &[String]) -> Res {
    let (count, size): (u64, usize) = (arg(args, 1), arg(args, 2));
    let mem = SharedMem::inherit(arg(args, 0), rings::spmc_len(size))?;
    let mut latency = Latency::new();
    ready();
    let got = rings::spmc_subscribe(&mem, count, size, |_, tag| {
        latency.record(Some(tag));
        true
    });
    latency.bad += got.bad;
    println!("{}", latency.result_line(got.lagged));
    Ok(())
}

/// BUS COUNT SIZE ID: pushes COUNT messages tagged ID << 40 | n.
fn queue_produce(args: &[String]) -> Res {
    let bus = Bus::open_existing(&args[0])?;
    let (count, size, id): (u64, usize, u64) = (arg(args, 1), arg(args, 2), arg(args, 3));
    let mut tx = bus
        .topic("jobs")
        .wait(WaitStrategy::adaptive())
        .producer_bytes()?;
    produce_tagged(count, size, id, |msg| Ok(tx.push_bytes(msg)?))
}

/// Once told to go, hands `push` COUNT messages of SIZE bytes tagged
/// ID << 40 | n, as a work queue's producers send them.
fn produce_tagged(count: u64, size: usize, id: u64, mut push: impl FnMut(&[u8]) -> Res) -> Res {
    let mut buf = vec![0u8; size];
    rings::fill(&mut buf, 0);
    ready();
    wait_go();
    for n in 0..count {
        rings::stamp(&mut buf, id << 40 | n);
        push(&buf)?;
    }
    Ok(())
}

/// BUS: pops until every producer is gone, verifying each message.
/// Reads the clock at its first message and whenever it finds the
/// queue empty after taking some (so after its last one), not per
/// message. Prints RESULT count 0 bad first_ns last_ns.
fn queue_consume(args: &[String]) -> Res {
    let bus = Bus::open_existing(&args[0])?;
    let mut rx = bus
        .topic("jobs")
        .wait(WaitStrategy::adaptive())
        .liveness_check_interval(Duration::from_millis(20))
        .consumer_bytes()?;
    ready();
    let mut r = rings::Received::default();
    let took = |msg: &[u8], r: &mut rings::Received| {
        if rings::check(msg).is_none() {
            r.bad += 1;
        }
        if r.received == 0 {
            r.first_ns = now_ns();
        }
        r.received += 1;
    };
    let mut fresh = false;
    loop {
        match rx.try_pop_bytes() {
            Ok(msg) => took(msg, &mut r),
            Err(TryPopError::Empty) => {
                if fresh {
                    r.last_ns = now_ns();
                }
                match rx.pop_bytes() {
                    Ok(msg) => took(msg, &mut r),
                    Err(PopError::Disconnected) => break,
                    Err(e) => return Err(e.into()),
                }
            }
            // Drained after the producers left: the message just taken was
            // the last (without this, a stale `last_ns` from an earlier
            // empty moment made a 2964 M msg/s row).
            Err(TryPopError::Disconnected) => {
                if fresh {
                    r.last_ns = now_ns();
                }
                break;
            }
            Err(e) => return Err(e.into()),
        }
        fresh = true;
    }
    println!("{}", r.result_line());
    Ok(())
}

/// FD COUNT SIZE ID: a producer of the raw MPMC queue.
fn mpmc_produce(args: &[String]) -> Res {
    let (count, size, id): (u64, usize, u64) = (arg(args, 1), arg(args, 2), arg(args, 3));
    let mem = SharedMem::inherit(arg(args, 0), rings::mpmc_len(size))?;
    ready();
    wait_go();
    rings::mpmc_produce(&mem, count, size, id);
    Ok(())
}

/// PATH COUNT SIZE ID: a producer of the raw FIFO work queue: COUNT
/// messages tagged ID << 40 | n, one `write` each (at most `PIPE_BUF`
/// bytes: atomic).
fn fifo_queue_produce(args: &[String]) -> Res {
    let fifo = std::fs::OpenOptions::new().write(true).open(&args[0])?;
    let (count, size, id): (u64, usize, u64) = (arg(args, 1), arg(args, 2), arg(args, 3));
    let fd = std::os::fd::AsRawFd::as_raw_fd(&fifo);
    produce_tagged(count, size, id, |msg| Ok(raw::write_all(fd, msg)?))
}

/// PATH SIZE: a consumer of the raw FIFO work queue: reads a message a
/// `read` (of exactly its size: each takes one whole message) until it
/// reads the end mark ([`rings::END`]), checking each. Tries without
/// blocking, and reads the clock, as `queue-consume` does, at its first
/// message and whenever it finds the FIFO empty after taking some; then
/// sleeps in a blocking read. Prints RESULT count 0 bad first_ns last_ns.
fn fifo_queue_consume(args: &[String]) -> Res {
    let path = std::path::Path::new(&args[0]);
    let (fifo, block) = (
        raw::open_fifo_read(path, true)?,
        raw::open_fifo_read(path, false)?,
    );
    let size: usize = arg(args, 1);
    let mut buf = vec![0u8; size];
    let mut r = rings::Received::default();
    let mut fresh = false;
    ready();
    loop {
        let got = match rustix::io::read(&fifo, &mut buf) {
            Ok(n) => n,
            Err(rustix::io::Errno::AGAIN) => {
                if fresh {
                    r.last_ns = now_ns();
                    fresh = false;
                }
                rustix::io::read(&block, &mut buf)?
            }
            Err(e) => return Err(e.into()),
        };
        if got != size {
            return Err(format!("fifo-queue-consume: a read of {got} bytes, not {size}").into());
        }
        match rings::check(&buf) {
            Some(rings::END) => break,
            Some(_) => {}
            None => r.bad += 1,
        }
        if r.received == 0 {
            r.first_ns = now_ns();
        }
        r.received += 1;
        fresh = true;
    }
    if fresh {
        // (The end mark came right after the last message.)
        r.last_ns = now_ns();
    }
    println!("{}", r.result_line());
    Ok(())
}

/// FD TOTAL SIZE: a consumer of the raw MPMC queue.
fn mpmc_consume(args: &[String]) -> Res {
    let (total, size): (u64, usize) = (arg(args, 1), arg(args, 2));
    let mem = SharedMem::inherit(arg(args, 0), rings::mpmc_len(size))?;
    ready();
    println!("{}", rings::mpmc_consume(&mem, total, size).result_line());
    Ok(())
}

//! `shmbus bench`: shmbus against raw baselines, between real processes, in
//! one run, interleaved.
//!
//! Each comparison runs the shmbus variant and its baseline alternately
//! (A B A B ...), a fresh pair of processes each time, and reports the
//! median of the per-round ratios: on machines whose cores drift between a
//! "near" and a "far" placement for seconds at a time, only interleaved
//! figures can be compared. A raw cache-line ping-pong is probed just before
//! and after each comparison and printed with it.

use std::os::fd::AsRawFd;
use std::time::Instant;

use hdrhistogram::Histogram;
use shmbus::{Bus, StartAt, WaitStrategy};

use crate::cleanup;
use crate::peer::{self, cpus, pin_to, Peer};
use crate::raw::{self, Mq, SharedMem};
use crate::rings;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Options of `shmbus bench`.
#[derive(Debug, Clone)]
pub struct Opts {
    pub quick: bool,
    pub json: bool,
    pub pin: bool,
    /// Message size of the comparisons running now (one of `sizes`).
    pub size: usize,
    /// Message sizes to sweep.
    pub sizes: Vec<usize>,
    pub rounds: usize,
    /// Subscriber counts the fanout benchmark sweeps.
    pub subscribers: Vec<usize>,
    /// Send rate of the open-loop latency benchmark, messages per second.
    pub rate: u64,
    pub only: Vec<String>,
    /// No progress lines on stderr.
    pub quiet: bool,
}

/// Ping-pong transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lat {
    ShmbusSpin,
    ShmbusBlock,
    RawCacheLine,
    RawFutex,
    Pipe,
    Unix,
    Mq,
}

impl Lat {
    fn name(self) -> &'static str {
        match self {
            Lat::ShmbusSpin => "shmbus-spin",
            Lat::ShmbusBlock => "shmbus-block",
            Lat::RawCacheLine => "raw-cacheline",
            Lat::RawFutex => "raw-futex",
            Lat::Pipe => "pipe",
            Lat::Unix => "unix-socket",
            Lat::Mq => "posix-mq",
        }
    }
}

/// Streaming (throughput) transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Thr {
    ShmbusLossless,
    ShmbusOverwrite,
    RawSpsc,
    Pipe,
    Unix,
    Mq,
}

impl Thr {
    fn name(self) -> &'static str {
        match self {
            Thr::ShmbusLossless => "shmbus-lossless",
            Thr::ShmbusOverwrite => "shmbus-overwrite",
            Thr::RawSpsc => "raw-spsc-ring",
            Thr::Pipe => "pipe",
            Thr::Unix => "unix-socket",
            Thr::Mq => "posix-mq",
        }
    }
}

/// One line of results.
struct Row {
    bench: &'static str,
    transport: String,
    baseline: Option<String>,
    msg_bytes: usize,
    latency: Option<[u64; 4]>,
    /// Throughput; for fanout, the slowest subscriber's.
    msgs_per_s: Option<f64>,
    /// Fanout: the publisher's rate.
    publisher_msgs_per_s: Option<f64>,
    /// Fanout: how many subscriber processes.
    subscribers: Option<usize>,
    lagged: Option<u64>,
    ratio: Option<f64>,
    probe: (u64, u64),
}

impl Row {
    fn new(bench: &'static str, transport: String, msg_bytes: usize, probe: (u64, u64)) -> Row {
        Row {
            bench,
            transport,
            baseline: None,
            msg_bytes,
            latency: None,
            msgs_per_s: None,
            publisher_msgs_per_s: None,
            subscribers: None,
            lagged: None,
            ratio: None,
            probe,
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One fanout round: the slowest subscriber's rate, the publisher's, and
/// what the subscribers lost (lapped) or found wrong.
struct FanRound {
    slowest: f64,
    publisher: f64,
    lost: u64,
    bad: u64,
}

struct Harness {
    opts: Opts,
    cpus: Vec<usize>,
    rows: Vec<Row>,
    bus_counter: u32,
    /// Comparisons started, and how many this run makes.
    step: usize,
    steps: usize,
}

/// A bus for one measurement: unlinked as soon as the peers have it open,
/// so nothing is left in /dev/shm even if the run is interrupted.
struct TempBus {
    name: String,
    bus: Option<Bus>,
}

impl TempBus {
    fn unlink(&self) {
        let _ = Bus::remove(&self.name);
        cleanup::unnamed_segment();
    }
}

impl Drop for TempBus {
    fn drop(&mut self) {
        self.bus.take();
        self.unlink();
    }
}

impl Harness {
    fn cpu(&self, i: usize) -> Option<usize> {
        self.opts.pin.then(|| self.cpus[i % self.cpus.len()])
    }

    fn temp_bus(&mut self) -> Res<TempBus> {
        self.bus_counter += 1;
        let name = format!("bench-{}-{}", std::process::id(), self.bus_counter);
        cleanup::named_segment(&name);
        let bus = Bus::open(&name)?;
        Ok(TempBus {
            name,
            bus: Some(bus),
        })
    }

    fn wanted(&self, bench: &str) -> bool {
        self.opts.only.is_empty() || self.opts.only.iter().any(|o| bench.contains(o.as_str()))
    }

    /// Says on stderr which comparison starts and how far along the run
    /// is (not with `--json` or `--quiet`, where stderr stays for errors).
    fn progress(&mut self, bench: &str, what: String) {
        self.step += 1;
        if !self.opts.json && !self.opts.quiet {
            eprintln!(
                "[{}/{}] {bench}: {what}, {} rounds ...",
                self.step, self.steps, self.opts.rounds
            );
        }
    }

    fn latency_rounds(&self, t: Lat) -> u64 {
        let base = match t {
            Lat::ShmbusSpin | Lat::RawCacheLine => 100_000,
            Lat::ShmbusBlock | Lat::RawFutex => 10_000,
            Lat::Pipe | Lat::Unix | Lat::Mq => 10_000,
        };
        if self.opts.quick {
            base / 5
        } else {
            base
        }
    }

    fn stream_count(&self, t: Thr) -> u64 {
        let base = match t {
            Thr::Pipe | Thr::Unix | Thr::Mq => 200_000,
            _ => 2_000_000,
        };
        if self.opts.quick {
            base / 5
        } else {
            base
        }
    }

    /// One-way latency (RTT/2) of `rounds` round trips over `t`.
    fn ping_pong(&mut self, t: Lat, rounds: u64) -> Res<Histogram<u64>> {
        let size = self.opts.size;
        let warmup = rounds / 10;
        let total = warmup + rounds;
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
        let mut record = |start: Instant, i: u64| {
            if i >= warmup {
                hist.saturating_record((start.elapsed().as_nanos() as u64 / 2).max(1));
            }
        };
        let peer_cpu = self.cpu(1);
        match t {
            Lat::RawCacheLine | Lat::RawFutex => {
                let mem = SharedMem::create(raw::PINGPONG_LEN)?;
                let role = if t == Lat::RawCacheLine {
                    "echo-cacheline"
                } else {
                    "echo-futex"
                };
                let peer = Peer::spawn(
                    role,
                    &[mem.fd_for_child()?.to_string(), total.to_string()],
                    peer_cpu,
                )?;
                for i in 0..total {
                    let start = Instant::now();
                    if t == Lat::RawCacheLine {
                        raw::cacheline_ping(&mem, i + 1);
                    } else {
                        raw::futex_ping(&mem, (i + 1) as u32);
                    }
                    record(start, i);
                }
                peer.finish()?;
            }
            Lat::Pipe | Lat::Unix => {
                let (ours_r, ours_w, theirs_r, theirs_w);
                if t == Lat::Pipe {
                    let (to_peer_r, to_peer_w) = raw::pipe()?;
                    let (from_peer_r, from_peer_w) = raw::pipe()?;
                    (ours_r, ours_w, theirs_r, theirs_w) =
                        (from_peer_r, to_peer_w, to_peer_r, from_peer_w);
                } else {
                    let (a, b) = raw::socketpair()?;
                    let (a2, b2) = (a.try_clone()?, b.try_clone()?);
                    (ours_r, ours_w, theirs_r, theirs_w) = (a, a2, b, b2);
                }
                raw::inheritable(&theirs_r)?;
                raw::inheritable(&theirs_w)?;
                let args = [
                    theirs_r.as_raw_fd().to_string(),
                    theirs_w.as_raw_fd().to_string(),
                    size.to_string(),
                    total.to_string(),
                ];
                let peer = Peer::spawn("echo-fd", &args, peer_cpu)?;
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
            }
            Lat::Mq => {
                let names = [
                    format!("/shmbus-bench-{}-a", std::process::id()),
                    format!("/shmbus-bench-{}-b", std::process::id()),
                ];
                cleanup::named_queue(0, &names[0]);
                cleanup::named_queue(1, &names[1]);
                let to_peer = Mq::open(&names[0], true, size)?;
                let from_peer = Mq::open(&names[1], true, size);
                let from_peer = match from_peer {
                    Ok(q) => q,
                    Err(e) => {
                        Mq::unlink(&names[0]);
                        return Err(e.into());
                    }
                };
                let peer = Peer::spawn(
                    "echo-mq",
                    &[
                        names[0].clone(),
                        names[1].clone(),
                        size.to_string(),
                        total.to_string(),
                    ],
                    peer_cpu,
                );
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
            }
            Lat::ShmbusSpin | Lat::ShmbusBlock => {
                let wait = if t == Lat::ShmbusSpin {
                    WaitStrategy::Spin
                } else {
                    WaitStrategy::Block
                };
                let temp = self.temp_bus()?;
                let bus = temp.bus.as_ref().expect("open");
                let slot = size as u32;
                let mut tx = bus.topic("ping").slot_size(slot).publisher_bytes()?;
                let mut rx = bus
                    .topic("pong")
                    .slot_size(slot)
                    .start_at(StartAt::Next)
                    .wait(wait)
                    .subscriber_bytes()?;
                let wait_name = if t == Lat::ShmbusSpin {
                    "spin"
                } else {
                    "block"
                };
                let peer = Peer::spawn(
                    "echo-shmbus",
                    &[temp.name.clone(), wait_name.into(), total.to_string()],
                    peer_cpu,
                )?;
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
            }
        }
        Ok(hist)
    }

    /// Messages per second received over `t` from a producer process
    /// sending `count`; and how many were lost (overwrite mode).
    fn stream(&mut self, t: Thr, count: u64) -> Res<(f64, u64)> {
        let size = self.opts.size;
        let peer_cpu = self.cpu(1);
        let count_s = count.to_string();
        let size_s = size.to_string();
        let mut buf = vec![0u8; size];
        let (elapsed_ns, received, lagged) = match t {
            Thr::RawSpsc => {
                let mem = SharedMem::create(raw::spsc_len(size))?;
                let mut peer = Peer::spawn(
                    "produce-spsc",
                    &[mem.fd_for_child()?.to_string(), count_s, size_s],
                    peer_cpu,
                )?;
                peer.go()?;
                let ns = raw::spsc_consume(&mem, count, size);
                peer.finish()?;
                (ns, count, 0)
            }
            Thr::Pipe | Thr::Unix => {
                let (ours, theirs) = if t == Thr::Pipe {
                    raw::pipe()?
                } else {
                    raw::socketpair()?
                };
                raw::inheritable(&theirs)?;
                let mut peer = Peer::spawn(
                    "produce-fd",
                    &[theirs.as_raw_fd().to_string(), count_s, size_s],
                    peer_cpu,
                )?;
                drop(theirs);
                peer.go()?;
                let mut start = None;
                for _ in 0..count {
                    raw::read_exact(ours.as_raw_fd(), &mut buf)?;
                    start.get_or_insert_with(Instant::now);
                }
                peer.finish()?;
                (start.map_or(0, |s| s.elapsed().as_nanos() as u64), count, 0)
            }
            Thr::Mq => {
                let name = format!("/shmbus-bench-{}-s", std::process::id());
                cleanup::named_queue(0, &name);
                let q = Mq::open(&name, true, size)?;
                let peer = Peer::spawn("produce-mq", &[name.clone(), count_s, size_s], peer_cpu);
                Mq::unlink(&name);
                cleanup::unnamed_queues();
                let mut peer = peer?;
                peer.go()?;
                let mut start = None;
                for _ in 0..count {
                    q.recv(&mut buf)?;
                    start.get_or_insert_with(Instant::now);
                }
                peer.finish()?;
                (start.map_or(0, |s| s.elapsed().as_nanos() as u64), count, 0)
            }
            Thr::ShmbusLossless | Thr::ShmbusOverwrite => {
                let temp = self.temp_bus()?;
                let bus = temp.bus.as_ref().expect("open");
                let mut topic = bus.topic("data").capacity(4096).slot_size(size as u32);
                if t == Thr::ShmbusLossless {
                    topic = topic.lossless(4);
                }
                let mut rx = topic
                    .start_at(StartAt::Next)
                    .wait(WaitStrategy::Spin)
                    .subscriber_bytes()?;
                let mut peer = Peer::spawn(
                    "produce-shmbus",
                    &[temp.name.clone(), count_s, size_s],
                    peer_cpu,
                )?;
                temp.unlink();
                peer.go()?;
                let mut start = None;
                loop {
                    match rx.recv_bytes() {
                        Ok(msg) => {
                            std::hint::black_box(msg);
                            start.get_or_insert_with(Instant::now);
                        }
                        Err(shmbus::RecvError::Lagged(_)) => {}
                        Err(shmbus::RecvError::Disconnected) => break,
                        Err(e) => return Err(e.into()),
                    }
                    let s = rx.stats();
                    if s.received + s.lagged >= count {
                        break;
                    }
                }
                let elapsed = start.map_or(0, |s| s.elapsed().as_nanos() as u64);
                peer.finish()?;
                let s = rx.stats();
                (elapsed, s.received, s.lagged)
            }
        };
        Ok((received as f64 * 1e9 / elapsed_ns.max(1) as f64, lagged))
    }

    /// p50 one-way latency of a short raw cache-line ping-pong.
    fn probe(&mut self) -> Res<u64> {
        let rounds = if self.opts.quick { 5_000 } else { 20_000 };
        Ok(self
            .ping_pong(Lat::RawCacheLine, rounds)?
            .value_at_quantile(0.5))
    }

    fn compare_latency(&mut self, bench: &'static str, ours: Lat, base: Lat) -> Res<()> {
        if !self.wanted(bench) {
            return Ok(());
        }
        self.progress(bench, format!("{ours:?} against {base:?}"));
        let before = self.probe()?;
        let (mut h_ours, mut h_base) = (
            Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?,
            Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?,
        );
        let mut ratios = Vec::new();
        for _ in 0..self.opts.rounds {
            let a = self.ping_pong(ours, self.latency_rounds(ours))?;
            let b = self.ping_pong(base, self.latency_rounds(base))?;
            ratios.push(a.value_at_quantile(0.5) as f64 / b.value_at_quantile(0.5).max(1) as f64);
            h_ours.add(&a)?;
            h_base.add(&b)?;
        }
        let after = self.probe()?;
        let pct = |h: &Histogram<u64>| {
            [
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                h.max(),
            ]
        };
        let ratio = median(ratios);
        self.push_pair(
            bench,
            ours.name(),
            base.name(),
            (before, after),
            |row, is_ours| {
                row.latency = Some(pct(if is_ours { &h_ours } else { &h_base }));
                if is_ours {
                    row.ratio = Some(ratio);
                }
            },
        );
        Ok(())
    }

    fn compare_stream(&mut self, bench: &'static str, ours: Thr, base: Thr) -> Res<()> {
        if !self.wanted(bench) {
            return Ok(());
        }
        self.progress(bench, format!("{ours:?} against {base:?}"));
        let before = self.probe()?;
        let (mut a_rates, mut b_rates, mut ratios, mut lost) =
            (Vec::new(), Vec::new(), Vec::new(), 0);
        for _ in 0..self.opts.rounds {
            let (a, lagged) = self.stream(ours, self.stream_count(ours))?;
            let (b, _) = self.stream(base, self.stream_count(base))?;
            a_rates.push(a);
            b_rates.push(b);
            ratios.push(a / b);
            lost += lagged;
        }
        let after = self.probe()?;
        let (a_rate, b_rate, ratio) = (median(a_rates), median(b_rates), median(ratios));
        self.push_pair(
            bench,
            ours.name(),
            base.name(),
            (before, after),
            |row, is_ours| {
                row.msgs_per_s = Some(if is_ours { a_rate } else { b_rate });
                if is_ours {
                    row.ratio = Some(ratio);
                    row.lagged = (ours == Thr::ShmbusOverwrite).then_some(lost);
                }
            },
        );
        Ok(())
    }

    /// Prints a shmbus row and its baseline's, `fill` adding the figures.
    fn push_pair(
        &mut self,
        bench: &'static str,
        ours: &'static str,
        base: &'static str,
        probe: (u64, u64),
        mut fill: impl FnMut(&mut Row, bool),
    ) {
        for (transport, is_ours) in [(ours, true), (base, false)] {
            let mut row = Row::new(bench, transport.into(), self.opts.size, probe);
            row.baseline = is_ours.then(|| base.to_owned());
            fill(&mut row, is_ours);
            self.push_row(row);
        }
    }

    /// 1 publisher (this process) to `n` subscriber processes, shmbus
    /// interleaved with the raw SPMC ring: rows for the slowest
    /// subscriber's rate (median over rounds) and the publisher's.
    fn fanout(&mut self, bench: &'static str, lossless: bool, n: usize) -> Res<()> {
        if !self.wanted(bench) {
            return Ok(());
        }
        let mode = if lossless { "lossless" } else { "overwrite" };
        self.progress(bench, format!("{mode}, {n} subscribers, against raw-spmc"));
        let before = self.probe()?;
        let count = if self.opts.quick { 400_000 } else { 2_000_000 };
        let (mut ours, mut base, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..self.opts.rounds {
            let a = self.fanout_shmbus(lossless, n, count)?;
            let b = self.fanout_raw(n, count)?;
            ratios.push(a.slowest / b.slowest);
            ours.push(a);
            base.push(b);
        }
        let bad: u64 = ours.iter().chain(&base).map(|r| r.bad).sum();
        if bad > 0 {
            return Err(
                format!("fanout: {bad} messages failed their sequence or checksum check").into(),
            );
        }
        let after = self.probe()?;
        let base_name = format!("raw-spmc-1to{n}");
        for (transport, rounds, is_ours) in [
            (format!("shmbus-{mode}-1to{n}"), &ours, true),
            (base_name.clone(), &base, false),
        ] {
            let mut row = Row::new(bench, transport, self.opts.size, (before, after));
            row.msgs_per_s = Some(median(rounds.iter().map(|r| r.slowest).collect()));
            row.publisher_msgs_per_s = Some(median(rounds.iter().map(|r| r.publisher).collect()));
            row.subscribers = Some(n);
            row.lagged = (!lossless || !is_ours).then(|| rounds.iter().map(|r| r.lost).sum());
            if is_ours {
                row.baseline = Some(base_name.clone());
                row.ratio = Some(median(ratios.clone()));
            }
            self.push_row(row);
        }
        Ok(())
    }

    /// The results of `n` subscriber peers that printed `Received` lines.
    fn fan_results(peers: Vec<Peer>, sent: u64, publish_ns: u64) -> Res<FanRound> {
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

    fn fanout_shmbus(&mut self, lossless: bool, n: usize, count: u64) -> Res<FanRound> {
        let size = self.opts.size;
        let temp = self.temp_bus()?;
        let bus = temp.bus.as_ref().expect("open");
        let mut topic = bus.topic("data").capacity(4096).slot_size(size as u32);
        if lossless {
            topic = topic.lossless(n as u32);
        }
        drop(topic.clone().subscriber_bytes()?);
        let mut peers = Vec::new();
        for i in 0..n {
            let args = [temp.name.clone(), "spin".into(), count.to_string()];
            peers.push(Peer::spawn("subscribe-shmbus", &args, self.cpu(1 + i))?);
        }
        temp.unlink();
        let mut tx = topic.wait(WaitStrategy::Spin).publisher_bytes()?;
        let mut msg = vec![0u8; size];
        let start = Instant::now();
        for seq in 0..count {
            rings::fill(&mut msg, seq);
            tx.send_bytes(&msg)?;
        }
        let publish_ns = start.elapsed().as_nanos() as u64;
        drop(tx);
        Self::fan_results(peers, count, publish_ns)
    }

    fn fanout_raw(&mut self, n: usize, count: u64) -> Res<FanRound> {
        let size = self.opts.size;
        let mem = SharedMem::create(rings::spmc_len(size))?;
        let mut peers = Vec::new();
        for i in 0..n {
            let args = [
                mem.fd_for_child()?.to_string(),
                count.to_string(),
                size.to_string(),
            ];
            peers.push(Peer::spawn("subscribe-spmc", &args, self.cpu(1 + i))?);
        }
        let publish_ns = rings::spmc_publish(&mem, count, size, |seq| seq);
        Self::fan_results(peers, count, publish_ns)
    }

    /// Open-loop latency: the publisher sends at a fixed rate, and each
    /// message carries the time it was due; the subscriber records the
    /// time from then to its arrival, so a stall of the publisher or the
    /// transport counts for every message it delays (no coordinated
    /// omission, as Aeron's load-test rig measures). shmbus (overwrite,
    /// one spinning subscriber) interleaved with the raw SPMC ring.
    fn open_loop(&mut self) -> Res<()> {
        let bench = "openloop";
        if !self.wanted(bench) {
            return Ok(());
        }
        let rate = self.opts.rate;
        self.progress(bench, format!("{rate} msg/s, against raw-spmc"));
        let before = self.probe()?;
        let count = if self.opts.quick { rate / 5 } else { rate }.max(1000);
        let (mut ours, mut base, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..self.opts.rounds {
            let a = self.open_loop_shmbus(count)?;
            let b = self.open_loop_raw(count)?;
            ratios.push(a[0] as f64 / b[0].max(1) as f64);
            ours.push(a);
            base.push(b);
        }
        let bad: u64 = ours.iter().chain(&base).map(|r| r[5]).sum();
        if bad > 0 {
            return Err(format!("openloop: {bad} messages failed their checksum").into());
        }
        let after = self.probe()?;
        let base_name = format!("raw-spmc-{rate}");
        for (transport, rounds, is_ours) in [
            (format!("shmbus-overwrite-{rate}"), &ours, true),
            (base_name.clone(), &base, false),
        ] {
            let pct = |i: usize| median(rounds.iter().map(|r| r[i] as f64).collect()) as u64;
            let mut row = Row::new(bench, transport, self.opts.size, (before, after));
            row.latency = Some([pct(0), pct(1), pct(2), pct(3)]);
            row.lagged = Some(rounds.iter().map(|r| r[4]).sum());
            if is_ours {
                row.baseline = Some(base_name.clone());
                row.ratio = Some(median(ratios.clone()));
            }
            self.push_row(row);
        }
        Ok(())
    }

    /// The tag of message `i` of an open-loop run that starts at `start`:
    /// the time it is due, once that time has come.
    fn paced(start: u64, interval_ns: f64) -> impl FnMut(u64) -> u64 {
        move |i| {
            let due = start + (i as f64 * interval_ns) as u64;
            while peer::now_ns() < due {
                core::hint::spin_loop();
            }
            due
        }
    }

    fn open_loop_shmbus(&mut self, count: u64) -> Res<[u64; 6]> {
        let size = self.opts.size;
        let temp = self.temp_bus()?;
        let bus = temp.bus.as_ref().expect("open");
        let topic = bus.topic("data").capacity(4096).slot_size(size as u32);
        drop(topic.clone().subscriber_bytes()?);
        let args = [temp.name.clone(), count.to_string()];
        let mut peer = Peer::spawn("openloop-shmbus", &args, self.cpu(1))?;
        temp.unlink();
        let mut tx = topic.wait(WaitStrategy::Spin).publisher_bytes()?;
        let mut msg = vec![0u8; size];
        let mut due = Self::paced(peer::now_ns() + 1_000_000, 1e9 / self.opts.rate as f64);
        for i in 0..count {
            rings::fill(&mut msg, due(i));
            tx.send_bytes(&msg)?;
        }
        drop(tx);
        let result = peer.result::<6>()?;
        peer.finish()?;
        Ok(result)
    }

    fn open_loop_raw(&mut self, count: u64) -> Res<[u64; 6]> {
        let size = self.opts.size;
        let mem = SharedMem::create(rings::spmc_len(size))?;
        let args = [
            mem.fd_for_child()?.to_string(),
            count.to_string(),
            size.to_string(),
        ];
        let mut peer = Peer::spawn("openloop-spmc", &args, self.cpu(1))?;
        let due = Self::paced(peer::now_ns() + 1_000_000, 1e9 / self.opts.rate as f64);
        rings::spmc_publish(&mem, count, size, due);
        let result = peer.result::<6>()?;
        peer.finish()?;
        Ok(result)
    }

    /// `producers` to `consumers` processes through a work queue, shmbus
    /// interleaved with the raw Vyukov MPMC queue.
    fn queue(&mut self, producers: usize, consumers: usize) -> Res<()> {
        let bench = "queue";
        if !self.wanted(bench) {
            return Ok(());
        }
        self.progress(
            bench,
            format!("{producers} producers, {consumers} consumers, against raw-mpmc"),
        );
        let before = self.probe()?;
        let per_producer = if self.opts.quick { 200_000 } else { 1_000_000 };
        let (mut ours, mut base, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..self.opts.rounds {
            let a = self.queue_shmbus(producers, consumers, per_producer)?;
            let b = self.queue_raw(producers, consumers, per_producer)?;
            ratios.push(a / b);
            ours.push(a);
            base.push(b);
        }
        let after = self.probe()?;
        let base_name = format!("raw-mpmc-{producers}to{consumers}");
        for (transport, rates, is_ours) in [
            (format!("shmbus-queue-{producers}to{consumers}"), ours, true),
            (base_name.clone(), base, false),
        ] {
            let mut row = Row::new(bench, transport, self.opts.size, (before, after));
            row.msgs_per_s = Some(median(rates));
            if is_ours {
                row.baseline = Some(base_name.clone());
                row.ratio = Some(median(ratios.clone()));
            }
            self.push_row(row);
        }
        Ok(())
    }

    /// Messages per second from the consumers' first message to their
    /// last, checking that each was taken once and whole.
    fn queue_results(consumers: Vec<Peer>, expected: u64) -> Res<f64> {
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

    fn queue_shmbus(&mut self, producers: usize, consumers: usize, per: u64) -> Res<f64> {
        let size = self.opts.size;
        let temp = self.temp_bus()?;
        let bus = temp.bus.as_ref().expect("open");
        drop(
            bus.topic("jobs")
                .capacity(4096)
                .slot_size(size as u32)
                .consumer_bytes()?,
        );
        let mut cons = Vec::new();
        for i in 0..consumers {
            let args = std::slice::from_ref(&temp.name);
            cons.push(Peer::spawn("queue-consume", args, self.cpu(i))?);
        }
        let mut prods = Vec::new();
        for i in 0..producers {
            let args = [
                temp.name.clone(),
                per.to_string(),
                size.to_string(),
                i.to_string(),
            ];
            prods.push(Peer::spawn(
                "queue-produce",
                &args,
                self.cpu(consumers + i),
            )?);
        }
        temp.unlink();
        for p in &mut prods {
            p.go()?;
        }
        for p in prods {
            p.finish()?;
        }
        Self::queue_results(cons, per * producers as u64)
    }

    fn queue_raw(&mut self, producers: usize, consumers: usize, per: u64) -> Res<f64> {
        let size = self.opts.size;
        let total = per * producers as u64;
        let mem = SharedMem::create(rings::mpmc_len(size))?;
        rings::mpmc_init(&mem, size);
        let fd = mem.fd_for_child()?.to_string();
        let mut cons = Vec::new();
        for i in 0..consumers {
            let args = [fd.clone(), total.to_string(), size.to_string()];
            cons.push(Peer::spawn("mpmc-consume", &args, self.cpu(i))?);
        }
        let mut prods = Vec::new();
        for i in 0..producers {
            let args = [fd.clone(), per.to_string(), size.to_string(), i.to_string()];
            prods.push(Peer::spawn("mpmc-produce", &args, self.cpu(consumers + i))?);
        }
        for p in &mut prods {
            p.go()?;
        }
        for p in prods {
            p.finish()?;
        }
        Self::queue_results(cons, total)
    }

    fn push_row(&mut self, row: Row) {
        if self.opts.json {
            println!("{}", json(&row));
        } else {
            println!("{}", text(&row));
        }
        self.rows.push(row);
    }
}

fn json(r: &Row) -> String {
    let mut fields = vec![
        format!("\"bench\":\"{}\"", r.bench),
        format!("\"transport\":\"{}\"", r.transport),
        format!("\"msg_bytes\":{}", r.msg_bytes),
    ];
    if let Some(base) = &r.baseline {
        fields.push(format!("\"baseline\":\"{base}\""));
    }
    if let Some(n) = r.subscribers {
        fields.push(format!("\"subscribers\":{n}"));
    }
    if let Some([p50, p99, p999, max]) = r.latency {
        fields.push(format!(
            "\"p50_ns\":{p50},\"p99_ns\":{p99},\"p999_ns\":{p999},\"max_ns\":{max}"
        ));
    }
    if let Some(rate) = r.msgs_per_s {
        fields.push(format!(
            "\"msgs_per_s\":{rate:.0},\"gb_per_s\":{:.3}",
            rate * r.msg_bytes as f64 / 1e9
        ));
    }
    if let Some(rate) = r.publisher_msgs_per_s {
        fields.push(format!("\"publisher_msgs_per_s\":{rate:.0}"));
    }
    if let Some(lagged) = r.lagged {
        fields.push(format!("\"lagged\":{lagged}"));
    }
    if let Some(ratio) = r.ratio {
        fields.push(format!("\"ratio\":{ratio:.3}"));
    }
    fields.push(format!(
        "\"probe_before_ns\":{},\"probe_after_ns\":{}",
        r.probe.0, r.probe.1
    ));
    format!("{{{}}}", fields.join(","))
}

fn text(r: &Row) -> String {
    let figures = match (r.latency, r.msgs_per_s) {
        (Some([p50, p99, p999, max]), _) => {
            format!("p50 {p50:>7} ns  p99 {p99:>7} ns  p99.9 {p999:>8} ns  max {max:>9} ns")
        }
        (_, Some(rate)) => format!(
            "{:>8.2} M msg/s  {:>6.2} GB/s{}{}",
            rate / 1e6,
            rate * r.msg_bytes as f64 / 1e9,
            r.publisher_msgs_per_s.map_or(String::new(), |p| format!(
                "  publisher {:.2} M msg/s",
                p / 1e6
            )),
            r.lagged.map_or(String::new(), |l| format!("  lagged {l}"))
        ),
        _ => String::new(),
    };
    let ratio = match (r.ratio, r.baseline.as_deref()) {
        (Some(ratio), Some(base)) if ratio < 0.1 => {
            format!("  {ratio:.4}x {base} ({:.0}x faster)", 1.0 / ratio)
        }
        (Some(ratio), Some(base)) => format!("  {ratio:.2}x {base}"),
        _ => String::new(),
    };
    format!(
        "{:<15} {:<24} {figures}{ratio}   [cache line {} / {} ns]",
        r.bench, r.transport, r.probe.0, r.probe.1
    )
}

/// Runs every benchmark of `opts`.
pub fn run(opts: Opts) -> Res<()> {
    let cpus = cpus();
    if opts.pin {
        pin_to(cpus[0]);
    }
    if !opts.json {
        let sizes: Vec<String> = opts.sizes.iter().map(|s| s.to_string()).collect();
        println!(
            "shmbus bench: {}-byte messages, {} interleaved rounds per comparison, {} CPUs{}{}",
            sizes.join("/"),
            opts.rounds,
            cpus.len(),
            if opts.pin {
                ", pinned one process per CPU"
            } else {
                ", not pinned (use --pin)"
            },
            if opts.quick { ", quick" } else { "" }
        );
        println!("ratio: shmbus / baseline, median of per-round ratios (latency: lower is better; throughput: higher)");
    }
    let mut h = Harness {
        opts,
        cpus,
        rows: Vec::new(),
        bus_counter: 0,
        step: 0,
        steps: 0,
    };
    // The comparisons below, by benchmark name, to count those wanted.
    let fanouts = 2 * h.opts.subscribers.len();
    let plan = [
        ("pingpong-spin", 1),
        ("pingpong-block", 1),
        ("pingpong-os", 3),
        ("throughput-1to1", 2),
        ("throughput-os", 3),
        ("fanout", fanouts),
        ("queue", 2),
        ("openloop", 1),
    ];
    h.steps = h.opts.sizes.len()
        * plan
            .iter()
            .filter(|(bench, _)| h.wanted(bench))
            .map(|(_, n)| n)
            .sum::<usize>();
    for size in h.opts.sizes.clone() {
        h.opts.size = size;
        h.compare_latency("pingpong-spin", Lat::ShmbusSpin, Lat::RawCacheLine)?;
        h.compare_latency("pingpong-block", Lat::ShmbusBlock, Lat::RawFutex)?;
        for base in [Lat::Pipe, Lat::Unix, Lat::Mq] {
            h.compare_latency("pingpong-os", Lat::ShmbusSpin, base)?;
        }
        h.compare_stream("throughput-1to1", Thr::ShmbusLossless, Thr::RawSpsc)?;
        h.compare_stream("throughput-1to1", Thr::ShmbusOverwrite, Thr::RawSpsc)?;
        for base in [Thr::Pipe, Thr::Unix, Thr::Mq] {
            h.compare_stream("throughput-os", Thr::ShmbusLossless, base)?;
        }
        for n in h.opts.subscribers.clone() {
            h.fanout("fanout", false, n)?;
            h.fanout("fanout", true, n)?;
        }
        h.queue(1, 1)?;
        h.queue(2, 2)?;
        h.open_loop()?;
    }
    Ok(())
}

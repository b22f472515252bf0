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
use crate::peer::{cpus, pin_to, Peer};
use crate::raw::{self, Mq, SharedMem};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Options of `shmbus bench`.
#[derive(Debug, Clone)]
pub struct Opts {
    pub quick: bool,
    pub json: bool,
    pub pin: bool,
    pub size: usize,
    pub rounds: usize,
    pub subscribers: usize,
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
    baseline: Option<&'static str>,
    msg_bytes: usize,
    latency: Option<[u64; 4]>,
    msgs_per_s: Option<f64>,
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
            row.baseline = is_ours.then_some(base);
            fill(&mut row, is_ours);
            self.push_row(row);
        }
    }

    /// 1 publisher (this process) to N subscriber processes: the median and
    /// the slowest subscriber's messages per second.
    fn fanout(&mut self, bench: &'static str, lossless: bool) -> Res<()> {
        if !self.wanted(bench) {
            return Ok(());
        }
        let mode = if lossless { "lossless" } else { "overwrite" };
        let what = format!("{mode}, {} subscribers", self.opts.subscribers);
        self.progress(bench, what);
        let before = self.probe()?;
        let n = self.opts.subscribers;
        let count = if self.opts.quick { 400_000 } else { 2_000_000 };
        let size = self.opts.size;
        let (mut rates, mut lost) = (Vec::new(), 0u64);
        for _ in 0..self.opts.rounds {
            let temp = self.temp_bus()?;
            let bus = temp.bus.as_ref().expect("open");
            let mut topic = bus.topic("data").capacity(4096).slot_size(size as u32);
            if lossless {
                topic = topic.lossless(n as u32);
            }
            drop(topic.clone().subscriber_bytes()?);
            let mut peers = Vec::new();
            for i in 0..n {
                let cpu = self.cpu(1 + i);
                peers.push(Peer::spawn(
                    "subscribe-shmbus",
                    &[temp.name.clone(), "spin".into()],
                    cpu,
                )?);
            }
            temp.unlink();
            let mut tx = topic.wait(WaitStrategy::Spin).publisher_bytes()?;
            let msg = vec![0x5au8; size];
            for _ in 0..count {
                tx.send_bytes(&msg)?;
            }
            drop(tx);
            for mut peer in peers {
                let v = peer.result::<4>()?;
                rates.push(v[0] as f64 * 1e9 / (v[3].saturating_sub(v[2])).max(1) as f64);
                lost += v[1];
                peer.finish()?;
            }
        }
        let after = self.probe()?;
        let mode = if lossless { "lossless" } else { "overwrite" };
        let mut row = Row::new(
            bench,
            format!("shmbus-{mode}-1to{n}"),
            size,
            (before, after),
        );
        row.msgs_per_s = Some(median(rates));
        row.lagged = (!lossless).then_some(lost);
        self.push_row(row);
        Ok(())
    }

    /// N producer processes to M consumer processes through a work queue.
    fn queue(&mut self, producers: usize, consumers: usize) -> Res<()> {
        let bench = "queue";
        if !self.wanted(bench) {
            return Ok(());
        }
        self.progress(
            bench,
            format!("{producers} producers, {consumers} consumers"),
        );
        let before = self.probe()?;
        let per_producer = if self.opts.quick { 200_000 } else { 1_000_000 };
        let size = self.opts.size;
        let mut rates = Vec::new();
        for _ in 0..self.opts.rounds {
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
                cons.push(Peer::spawn(
                    "queue-consume",
                    std::slice::from_ref(&temp.name),
                    self.cpu(i),
                )?);
            }
            let mut prods = Vec::new();
            for i in 0..producers {
                let args = [
                    temp.name.clone(),
                    per_producer.to_string(),
                    size.to_string(),
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
            let (mut total, mut first, mut last) = (0u64, u64::MAX, 0u64);
            for mut c in cons {
                let v = c.result::<3>()?;
                total += v[0];
                first = first.min(v[1]);
                last = last.max(v[2]);
                c.finish()?;
            }
            if total != per_producer * producers as u64 {
                return Err(format!(
                    "queue bench lost messages: {total} of {}",
                    per_producer * producers as u64
                )
                .into());
            }
            rates.push(total as f64 * 1e9 / last.saturating_sub(first).max(1) as f64);
        }
        let after = self.probe()?;
        let mut row = Row::new(
            bench,
            format!("shmbus-queue-{producers}to{consumers}"),
            size,
            (before, after),
        );
        row.msgs_per_s = Some(median(rates));
        self.push_row(row);
        Ok(())
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
    if let Some(base) = r.baseline {
        fields.push(format!("\"baseline\":\"{base}\""));
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
            "{:>8.2} M msg/s  {:>6.2} GB/s{}",
            rate / 1e6,
            rate * r.msg_bytes as f64 / 1e9,
            r.lagged.map_or(String::new(), |l| format!("  lagged {l}"))
        ),
        _ => String::new(),
    };
    let ratio = match (r.ratio, r.baseline) {
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
        println!(
            "shmbus bench: {}-byte messages, {} interleaved rounds per comparison, {} CPUs{}{}",
            opts.size,
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
    let plan = [
        "pingpong-spin",
        "pingpong-block",
        "pingpong-os",
        "pingpong-os",
        "pingpong-os",
        "throughput-1to1",
        "throughput-1to1",
        "throughput-os",
        "throughput-os",
        "throughput-os",
        "fanout",
        "fanout",
        "queue",
        "queue",
    ];
    h.steps = plan.iter().filter(|bench| h.wanted(bench)).count();
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
    h.fanout("fanout", false)?;
    h.fanout("fanout", true)?;
    h.queue(1, 1)?;
    h.queue(2, 2)?;
    Ok(())
}

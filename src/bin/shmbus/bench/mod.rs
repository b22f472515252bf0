//! `shmbus bench`: shmbus against raw baselines, between real processes, in
//! one run, interleaved.
//!
//! Each comparison runs the shmbus variant and its baseline alternately
//! (A B A B ...), a fresh pair of processes each time, and reports the
//! median of the per-round ratios: on machines whose cores drift between a
//! "near" and a "far" placement for seconds at a time, only interleaved
//! figures can be compared. A raw cache-line ping-pong is probed just before
//! and after each comparison and printed with it.

pub(crate) mod compare;
mod fanout;
pub(crate) mod latency;
mod peers;
mod queue;
mod stream;

use std::time::Instant;

use hdrhistogram::Histogram;
use shmbus::Bus;

use crate::cleanup;
use crate::peer::{cpus, pin_to};
use crate::rings;
use fanout::{Fan, FanRound, OpenLoop, RawOpenLoop, RawSpmcFan, ShmbusFan, ShmbusOpenLoop};
use latency::{
    FdEcho, MqEcho, PingPong, RawCacheLine, RawFutex, RawRing, ShmbusEcho, ShmbusPipeEcho, Via,
};
use queue::{RawFifoQueue, RawMpmc, ShmbusQueue, WorkQueue};
use stream::{FdKind, FdStream, MqStream, RawSpsc, ShmbusPipeStream, ShmbusStream, Stream};

pub(crate) type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Message size from which fanout also has loan rows.
const LOAN_ROWS_FROM: usize = 1024;
/// Message size from which the rows that read in place are measured
/// (`shmbus-spin-inplace`, `shmbus-lossless-inplace`,
/// `shmbus-lossless-inplace-1toN`): below it the copy
/// out costs less than the lossless cursor they need.
const IN_PLACE_FROM: usize = 4096;

/// Peer roles of the peers built in (none without `--features peers`).
pub use peers::ROLES as PEER_ROLES;

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
    /// A second limit in the same comparison and the ratio to it (the
    /// busy-poll ping-pong's raw ring, beside the raw cache line).
    also: Option<(String, f64)>,
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
            also: None,
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

/// The benchmarks, by the names `--only` picks from (any name that
/// contains one of its words).
pub const BENCHES: [&str; 14] = [
    "pingpong-spin",
    "pingpong-block",
    "pingpong-wait",
    "pingpong-os",
    "throughput-1to1",
    "throughput-os",
    "pingpong-pipe",
    "throughput-pipe",
    "pingpong-mq",
    "throughput-mq",
    "fanout",
    "queue",
    "queue-pipe",
    "openloop",
];

/// The largest message a work queue on pipes takes (a frame of at most
/// `PIPE_BUF` bytes, less its 32-byte header).
const PIPE_QUEUE_UP_TO: usize = 4096 - 32;

pub(crate) struct Harness {
    pub opts: Opts,
    cpus: Vec<usize>,
    rows: Vec<Row>,
    bus_counter: u32,
    /// Comparisons started, and how many this run makes.
    step: usize,
    steps: usize,
}

/// A bus for one measurement: unlinked as soon as the peers have it open,
/// so nothing is left in /dev/shm even if the run is interrupted.
pub(crate) struct TempBus {
    pub name: String,
    pub bus: Option<Bus>,
}

impl TempBus {
    pub fn unlink(&self) {
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
    pub(crate) fn cpu(&self, i: usize) -> Option<usize> {
        self.opts.pin.then(|| self.cpus[i % self.cpus.len()])
    }

    pub(crate) fn temp_bus(&mut self) -> Res<TempBus> {
        self.bus_counter += 1;
        let name = format!("bench-{}-{}", std::process::id(), self.bus_counter);
        cleanup::named_segment(&name);
        // Room for a ring of the run's message size, twice over (a topic and
        // the one beside it), and the default for small ones: 16 slots of
        // 16 MiB do not fit the default 64 MiB. The file is sparse; only
        // the rings made are reserved.
        let ring = rings::slots(self.opts.size) as u64 * (self.opts.size as u64 + 64);
        let bus = Bus::builder(&name)
            .size((2 * ring + (16 << 20)).max(64 << 20))
            .open()?;
        Ok(TempBus {
            name,
            bus: Some(bus),
        })
    }

    /// A bus of the run's own on pipes (`Transport::Pipe`, in the default
    /// pipe directory, where the peer's `Bus::open_existing` finds it),
    /// removed when dropped.
    /// A bus on `transport`, pipes or message queues, in the default
    /// directory (where the peer's `Bus::open` finds it).
    /// A number not handed out before in this run (for names of
    /// temporary files).
    pub(crate) fn next_id(&mut self) -> u32 {
        self.bus_counter += 1;
        self.bus_counter
    }

    pub(crate) fn temp_dir_bus(&mut self, transport: shmbus::Transport) -> Res<TempBus> {
        self.bus_counter += 1;
        let name = format!("bench-{}-{}", std::process::id(), self.bus_counter);
        let bus = Bus::builder(&name).transport(transport).open()?;
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

    /// One-way latency (RTT/2) of `rounds` round trips over `t`.
    fn ping_pong(&mut self, t: &dyn PingPong, rounds: u64) -> Res<Histogram<u64>> {
        let warmup = rounds / 10;
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
        let mut record = |start: Instant, i: u64| {
            if i >= warmup {
                hist.saturating_record((start.elapsed().as_nanos() as u64 / 2).max(1));
            }
        };
        t.run(self, warmup + rounds, &mut record)?;
        Ok(hist)
    }

    /// `n` messages or rounds, but no more than move 4 GB of messages of
    /// the current size (at least 2000): the counts are set for small
    /// messages, where 2 million take well under a second, and 2 million
    /// of 1 MiB would take minutes. A fifth of that with `--quick`.
    fn quick(&self, n: u64) -> u64 {
        const BYTES_PER_RUN: u64 = 4_000_000_000;
        let cap = (BYTES_PER_RUN / self.opts.size.max(1) as u64).max(2000);
        let n = n.min(cap);
        if self.opts.quick {
            n / 5
        } else {
            n
        }
    }

    /// p50 one-way latency of a short raw cache-line ping-pong.
    fn probe(&mut self) -> Res<u64> {
        let rounds = if self.opts.quick { 5_000 } else { 20_000 };
        Ok(self
            .ping_pong(&RawCacheLine, rounds)?
            .value_at_quantile(0.5))
    }

    /// Ping-pong latency of `ours` and each of `others` (its baseline
    /// first), interleaved round by round; `ours`'s ratio is to the first.
    fn compare_latency(
        &mut self,
        bench: &'static str,
        ours: &dyn PingPong,
        others: &[&dyn PingPong],
    ) -> Res<()> {
        if !self.wanted(bench) {
            return Ok(());
        }
        let names: Vec<&str> = others.iter().map(|t| t.name()).collect();
        self.progress(
            bench,
            format!("{} against {}", ours.name(), names.join(", ")),
        );
        let before = self.probe()?;
        let all: Vec<&dyn PingPong> = std::iter::once(ours)
            .chain(others.iter().copied())
            .collect();
        let mut hists = Vec::new();
        for _ in &all {
            hists.push(Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?);
        }
        // A second limit, after the first baseline: the ratio to it too.
        let also = (2..all.len()).find(|&i| all[i].is_limit());
        let (mut ratios, mut also_ratios) = (Vec::new(), Vec::new());
        for _ in 0..self.opts.rounds {
            let mut p50 = Vec::new();
            for (t, hist) in all.iter().zip(&mut hists) {
                let h = self.ping_pong(*t, self.quick(t.rounds()))?;
                p50.push(h.value_at_quantile(0.5));
                hist.add(&h)?;
            }
            ratios.push(p50[0] as f64 / p50[1].max(1) as f64);
            if let Some(i) = also {
                also_ratios.push(p50[0] as f64 / p50[i].max(1) as f64);
            }
        }
        let after = self.probe()?;
        for (i, (t, h)) in all.iter().zip(&hists).enumerate() {
            let mut row = Row::new(bench, t.name().into(), self.opts.size, (before, after));
            row.latency = Some([
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                h.max(),
            ]);
            if i == 0 {
                row.baseline = Some(names[0].to_owned());
                row.ratio = Some(median(ratios.clone()));
                row.also = also.map(|a| (all[a].name().to_owned(), median(also_ratios.clone())));
            }
            self.push_row(row);
        }
        Ok(())
    }

    fn compare_stream(
        &mut self,
        bench: &'static str,
        ours: &dyn Stream,
        base: &dyn Stream,
    ) -> Res<()> {
        if !self.wanted(bench) {
            return Ok(());
        }
        self.progress(bench, format!("{} against {}", ours.name(), base.name()));
        let before = self.probe()?;
        let (mut a_rates, mut b_rates, mut ratios, mut lost) =
            (Vec::new(), Vec::new(), Vec::new(), 0);
        for _ in 0..self.opts.rounds {
            let a = ours.run(self, self.quick(ours.count()))?;
            let b = base.run(self, self.quick(base.count()))?;
            a_rates.push(a.rate);
            b_rates.push(b.rate);
            ratios.push(a.rate / b.rate);
            lost += a.lagged;
        }
        let after = self.probe()?;
        for (t, rates, is_ours) in [(ours, a_rates, true), (base, b_rates, false)] {
            let mut row = Row::new(bench, t.name().into(), self.opts.size, (before, after));
            row.msgs_per_s = Some(median(rates));
            if is_ours {
                row.baseline = Some(base.name().into());
                row.ratio = Some(median(ratios.clone()));
                row.lagged = ours.lossy().then_some(lost);
            }
            self.push_row(row);
        }
        Ok(())
    }

    /// 1 publisher (this process) to `n` subscriber processes: shmbus
    /// interleaved round by round with the raw SPMC ring (its baseline) and
    /// the peers, if built in: rows for the slowest subscriber's rate
    /// (median over rounds) and the publisher's.
    fn fanout(&mut self, bench: &'static str, ours: ShmbusFan, n: usize) -> Res<()> {
        if !self.wanted(bench) {
            return Ok(());
        }
        let (lossless, loan) = (ours.lossless, ours.loan);
        let mut all: Vec<Box<dyn Fan>> = vec![Box::new(ours), Box::new(RawSpmcFan)];
        if !loan {
            all.extend(peers::fans(lossless, self.opts.size));
        }
        let names: Vec<String> = all.iter().map(|t| t.name(n)).collect();
        self.progress(
            bench,
            format!("{} against {}", names[0], names[1..].join(", ")),
        );
        let before = self.probe()?;
        let count = self.quick(2_000_000);
        let mut rounds: Vec<Vec<FanRound>> = all.iter().map(|_| Vec::new()).collect();
        let mut ratios = Vec::new();
        for _ in 0..self.opts.rounds {
            for (t, results) in all.iter().zip(&mut rounds) {
                results.push(t.round(self, n, count)?);
            }
            let (a, b) = (&rounds[0], &rounds[1]);
            ratios.push(a[a.len() - 1].slowest / b[b.len() - 1].slowest);
        }
        for (name, results) in names.iter().zip(&rounds) {
            let bad: u64 = results.iter().map(|r| r.bad).sum();
            if bad > 0 {
                return Err(format!(
                    "fanout: {bad} messages of {name} failed their sequence or checksum check"
                )
                .into());
            }
        }
        let after = self.probe()?;
        for (i, (t, results)) in all.iter().zip(&rounds).enumerate() {
            let mut row = Row::new(bench, names[i].clone(), self.opts.size, (before, after));
            row.msgs_per_s = Some(median(results.iter().map(|r| r.slowest).collect()));
            row.publisher_msgs_per_s = Some(median(results.iter().map(|r| r.publisher).collect()));
            row.subscribers = Some(n);
            row.lagged = t.lossy().then(|| results.iter().map(|r| r.lost).sum());
            if i == 0 {
                row.baseline = Some(names[1].clone());
                row.ratio = Some(median(ratios.clone()));
            }
            self.push_row(row);
        }
        Ok(())
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
        let (ours, base) = (ShmbusOpenLoop, RawOpenLoop);
        let base_name = base.name(rate);
        self.progress(bench, format!("{} against {base_name}", ours.name(rate)));
        let before = self.probe()?;
        let count = self.quick(rate).max(1000);
        let (mut a_runs, mut b_runs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..self.opts.rounds {
            let a = ours.run(self, count)?;
            let b = base.run(self, count)?;
            ratios.push(a[0] as f64 / b[0].max(1) as f64);
            a_runs.push(a);
            b_runs.push(b);
        }
        let bad: u64 = a_runs.iter().chain(&b_runs).map(|r| r[5]).sum();
        if bad > 0 {
            return Err(format!("openloop: {bad} messages failed their checksum").into());
        }
        let after = self.probe()?;
        for (name, runs, is_ours) in [
            (ours.name(rate), &a_runs, true),
            (base_name.clone(), &b_runs, false),
        ] {
            let pct = |i: usize| median(runs.iter().map(|r| r[i] as f64).collect()) as u64;
            let mut row = Row::new(bench, name, self.opts.size, (before, after));
            row.latency = Some([pct(0), pct(1), pct(2), pct(3)]);
            row.lagged = Some(runs.iter().map(|r| r[4]).sum());
            if is_ours {
                row.baseline = Some(base_name.clone());
                row.ratio = Some(median(ratios.clone()));
            }
            self.push_row(row);
        }
        Ok(())
    }

    /// `producers` to `consumers` processes through a work queue, each of
    /// `ours` interleaved with `base` (shmbus's queues with the raw Vyukov
    /// MPMC queue; on pipes, with the raw FIFO queue).
    fn queue(
        &mut self,
        bench: &'static str,
        ours: &[&dyn WorkQueue],
        base: &dyn WorkQueue,
        producers: usize,
        consumers: usize,
    ) -> Res<()> {
        if !self.wanted(bench) {
            return Ok(());
        }
        let base_name = base.name(producers, consumers);
        let names: Vec<String> = ours.iter().map(|q| q.name(producers, consumers)).collect();
        self.progress(
            bench,
            format!("{} against {base_name}", names.join(" and ")),
        );
        let before = self.probe()?;
        let per = self.quick(1_000_000);
        let mut rates = vec![Vec::new(); ours.len() + 1];
        let mut ratios = vec![Vec::new(); ours.len()];
        for _ in 0..self.opts.rounds {
            let mut round = Vec::new();
            for queue in ours {
                round.push(queue.run(self, producers, consumers, per)?);
            }
            let b = base.run(self, producers, consumers, per)?;
            for (i, a) in round.into_iter().enumerate() {
                ratios[i].push(a / b);
                rates[i].push(a);
            }
            rates[ours.len()].push(b);
        }
        let after = self.probe()?;
        let names = names.into_iter().chain([base_name.clone()]);
        for (i, (name, rates)) in names.zip(rates).enumerate() {
            let mut row = Row::new(bench, name, self.opts.size, (before, after));
            row.msgs_per_s = Some(median(rates));
            if let Some(ratios) = ratios.get(i) {
                row.baseline = Some(base_name.clone());
                row.ratio = Some(median(ratios.clone()));
            }
            self.push_row(row);
        }
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
        fields.push(format!("\"ratio\":{}", significant(ratio)));
    }
    if let Some((name, ratio)) = &r.also {
        fields.push(format!(
            "\"also_baseline\":\"{name}\",\"also_ratio\":{}",
            significant(*ratio)
        ));
    }
    fields.push(format!(
        "\"probe_before_ns\":{},\"probe_after_ns\":{}",
        r.probe.0, r.probe.1
    ));
    format!("{{{}}}", fields.join(","))
}

/// A ratio with at least three significant digits, never rounded to 0: a
/// baseline slowed to milliseconds on a loaded machine gives ratios far
/// below 0.001, which fixed decimals print as 0. JSON has no NaN or
/// infinity; those print as 0 (a baseline that measured nothing).
fn significant(x: f64) -> String {
    if !x.is_finite() || x <= 0.0 {
        return "0".to_owned();
    }
    let decimals = (2 - x.log10().floor() as i64).clamp(3, 12) as usize;
    format!("{x:.decimals$}")
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
    let ratio = match &r.also {
        Some((name, also)) => format!("{ratio}, {}x {name}", significant(*also)),
        None => ratio,
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
    /// The ways of waiting on many things, each against the plain
    /// blocking receive and the raw futex.
    const WAIT_VIAS: &[Via] = &[
        Via::Select,
        Via::Fd,
        #[cfg(feature = "tokio")]
        Via::Async,
    ];
    // The comparisons of each benchmark, in the order of BENCHES (one
    // count each: the length is checked at compile time).
    let comparisons: [usize; BENCHES.len()] = [
        1,               // pingpong-spin
        1,               // pingpong-block
        WAIT_VIAS.len(), // pingpong-wait
        3,               // pingpong-os
        6,               // throughput-1to1
        3,               // throughput-os
        1,               // pingpong-pipe
        5,               // throughput-pipe
        1,               // pingpong-mq
        2,               // throughput-mq
        fanouts,         // fanout
        2,               // queue
        0,               // queue-pipe: counted below, by size
        1,               // openloop
    ];
    h.steps = h.opts.sizes.len()
        * BENCHES
            .iter()
            .zip(comparisons)
            .filter(|(bench, _)| h.wanted(bench))
            .map(|(_, n)| n)
            .sum::<usize>();
    let sizes_from = |from: usize| h.opts.sizes.iter().filter(|&&s| s >= from).count();
    if h.wanted("throughput-1to1") {
        h.steps += sizes_from(IN_PLACE_FROM);
    }
    if h.wanted("queue-pipe") {
        let sizes = h
            .opts
            .sizes
            .iter()
            .filter(|&&s| s <= PIPE_QUEUE_UP_TO)
            .count();
        h.steps += 2 * sizes;
    }
    if h.wanted("fanout") {
        h.steps += sizes_from(LOAN_ROWS_FROM) * fanouts;
        h.steps += sizes_from(IN_PLACE_FROM) * h.opts.subscribers.len();
    }
    for size in h.opts.sizes.clone() {
        h.opts.size = size;
        let spin = ShmbusEcho {
            via: Via::Spin,
            in_place: false,
        };
        let mut spin_others: Vec<&dyn PingPong> = vec![&RawCacheLine, &RawRing];
        // Reading in place pays from a few KiB up, where the copy out of
        // the slot costs more than the lossless cursor.
        let in_place = ShmbusEcho {
            via: Via::Spin,
            in_place: true,
        };
        if size >= IN_PLACE_FROM {
            spin_others.push(&in_place);
        }
        let peer_pings = peers::ping_pongs(size);
        spin_others.extend(peer_pings.iter().map(|p| p.as_ref()));
        h.compare_latency("pingpong-spin", &spin, &spin_others)?;
        let block = ShmbusEcho {
            via: Via::Block,
            in_place: false,
        };
        let mut block_others: Vec<&dyn PingPong> = vec![&RawFutex];
        let peer_blocking = peers::blocking_ping_pongs();
        block_others.extend(peer_blocking.iter().map(|p| p.as_ref()));
        h.compare_latency("pingpong-block", &block, &block_others)?;
        // The ratio is to the first: Select's target is the plain blocking
        // receive, the fd's and async's the raw futex (an extra wake hop).
        for &via in WAIT_VIAS {
            let others: [&dyn PingPong; 2] = if via == Via::Select {
                [&block, &RawFutex]
            } else {
                [&RawFutex, &block]
            };
            let echo = ShmbusEcho {
                via,
                in_place: false,
            };
            h.compare_latency("pingpong-wait", &echo, &others)?;
        }
        let os: [&dyn PingPong; 3] = [&FdEcho { socket: false }, &FdEcho { socket: true }, &MqEcho];
        for base in os {
            h.compare_latency("pingpong-os", &spin, &[base])?;
        }
        for lossless in [true, false] {
            for (loan, variable) in [(false, false), (true, false), (false, true)] {
                let stream = ShmbusStream {
                    lossless,
                    loan,
                    variable,
                    in_place: false,
                };
                h.compare_stream("throughput-1to1", &stream, &RawSpsc)?;
            }
        }
        // Reading in place pays from a few KiB up (as in pingpong-spin).
        if size >= IN_PLACE_FROM {
            let stream = ShmbusStream {
                in_place: true,
                ..ShmbusStream::copying(true)
            };
            h.compare_stream("throughput-1to1", &stream, &RawSpsc)?;
        }
        let os: [&dyn Stream; 3] = [
            &FdStream {
                kind: FdKind::Pipe,
                behind: false,
            },
            &FdStream {
                kind: FdKind::Socket,
                behind: false,
            },
            &MqStream,
        ];
        for base in os {
            h.compare_stream("throughput-os", &ShmbusStream::copying(true), base)?;
        }
        // The fallback transport against the raw pipe under it.
        h.compare_latency(
            "pingpong-pipe",
            &ShmbusPipeEcho { mq: false },
            &[&FdEcho { socket: false }],
        )?;
        for lossless in [true, false] {
            let stream = ShmbusPipeStream {
                lossless,
                mq: false,
                behind: false,
            };
            // Against the anonymous pipe, and against the named pipe that
            // processes sharing only a directory must use (as a pipe bus
            // does): a FIFO's writes and reads update its inode's times.
            for kind in [FdKind::Pipe, FdKind::Fifo] {
                let base = FdStream {
                    kind,
                    behind: false,
                };
                h.compare_stream("throughput-pipe", &stream, &base)?;
            }
        }
        // A lossless subscriber that fell behind once, against a FIFO
        // reader that started as late.
        let behind = ShmbusPipeStream {
            lossless: true,
            mq: false,
            behind: true,
        };
        let base = FdStream {
            kind: FdKind::Fifo,
            behind: true,
        };
        h.compare_stream("throughput-pipe", &behind, &base)?;
        // And on POSIX message queues, against the raw queue.
        h.compare_latency("pingpong-mq", &ShmbusPipeEcho { mq: true }, &[&MqEcho])?;
        for lossless in [true, false] {
            let stream = ShmbusPipeStream {
                lossless,
                mq: true,
                behind: false,
            };
            h.compare_stream("throughput-mq", &stream, &MqStream)?;
        }
        for n in h.opts.subscribers.clone() {
            h.fanout("fanout", ShmbusFan::copying(false), n)?;
            h.fanout("fanout", ShmbusFan::copying(true), n)?;
            // Loans matter for large messages: their rows from 1 KiB up.
            if h.opts.size >= LOAN_ROWS_FROM {
                for lossless in [false, true] {
                    let fan = ShmbusFan {
                        loan: true,
                        ..ShmbusFan::copying(lossless)
                    };
                    h.fanout("fanout", fan, n)?;
                }
            }
            // Subscribers that read in place, as iceoryx2's do (as in
            // pingpong-spin, from a few KiB up).
            if h.opts.size >= IN_PLACE_FROM {
                let fan = ShmbusFan {
                    in_place: true,
                    ..ShmbusFan::copying(true)
                };
                h.fanout("fanout", fan, n)?;
            }
        }
        let fixed = ShmbusQueue {
            variable: false,
            pipe: false,
        };
        let variable = ShmbusQueue {
            variable: true,
            pipe: false,
        };
        for (producers, consumers) in [(1, 1), (2, 2)] {
            h.queue(
                "queue",
                &[&fixed, &variable],
                &RawMpmc,
                producers,
                consumers,
            )?;
        }
        // A work queue on pipes, against the raw one on a FIFO (frames of
        // at most `PIPE_BUF`: messages of up to 4064 bytes).
        if size <= PIPE_QUEUE_UP_TO {
            let pipe = ShmbusQueue {
                variable: false,
                pipe: true,
            };
            for (producers, consumers) in [(1, 1), (2, 2)] {
                h.queue("queue-pipe", &[&pipe], &RawFifoQueue, producers, consumers)?;
            }
        }
        h.open_loop()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::significant;

    #[test]
    fn ratios_keep_three_significant_digits_and_are_never_rounded_to_zero() {
        assert_eq!(significant(0.912_345), "0.912");
        assert_eq!(significant(16.957), "16.957");
        // A raw baseline slowed to milliseconds: 1.2 us against 2.5 ms.
        assert_eq!(significant(1187.0 / 2_500_000.0), "0.000475");
        assert_eq!(significant(f64::NAN), "0");
        assert_eq!(significant(f64::INFINITY), "0");
    }
}

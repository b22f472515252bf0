//! ringfire 0.5: a `/dev/shm` SPMC ring of fixed-size `Copy` messages, the
//! closest Rust peer. Lossy (`LossyLatestWins`) and lossless
//! (`LosslessBackpressure`, readers in its registry) fanout, and a
//! ping-pong over two lossy rings. Its messages are `[u8; N]`, so only the
//! sizes of [`sized!`] have ringfire rows.

use std::path::PathBuf;
use std::time::Instant;

use ringfire::{CleanupMode, FlowControl, RecvStatus, RingConsumer, RingProducerBuilder};

use super::super::fanout::{Fan as FanTransport, FanRound};
use super::super::latency::PingPong;
use super::super::{Harness, Res};
use crate::cleanup;
use crate::peer::{self, Peer};
use crate::rings;

/// Runs `$body` with `N` bound to `$size` as a constant (`Some`), or
/// gives `None` for a size ringfire's `[u8; N]` rows do not cover.
macro_rules! sized {
    ($size:expr, $body:expr) => {
        match $size {
            8 => Some({
                const N: usize = 8;
                $body
            }),
            16 => Some({
                const N: usize = 16;
                $body
            }),
            32 => Some({
                const N: usize = 32;
                $body
            }),
            64 => Some({
                const N: usize = 64;
                $body
            }),
            128 => Some({
                const N: usize = 128;
                $body
            }),
            256 => Some({
                const N: usize = 256;
                $body
            }),
            512 => Some({
                const N: usize = 512;
                $body
            }),
            1024 => Some({
                const N: usize = 1024;
                $body
            }),
            4096 => Some({
                const N: usize = 4096;
                $body
            }),
            _ => None,
        }
    };
}

/// The fanout transport for `size`-byte messages, if ringfire covers it.
pub fn fan(lossless: bool, size: usize) -> Option<Box<dyn FanTransport>> {
    sized!(
        size,
        Box::new(Fan::<N> { lossless }) as Box<dyn FanTransport>
    )
}

/// The ping-pong transport for `size`-byte messages, if covered.
pub fn ping_pong(size: usize) -> Option<Box<dyn PingPong>> {
    sized!(size, Box::new(Echo::<N>) as Box<dyn PingPong>)
}

/// A ring file in /dev/shm, unlinked when dropped (and by the signal
/// handler while it is recorded there), so an interrupted or failed run
/// leaves nothing behind. ringfire's own unlink is not used: the harness
/// unlinks as soon as every peer has the ring mapped.
struct RingFile {
    name: String,
}

impl RingFile {
    fn new(slot: usize) -> RingFile {
        let name = super::unique_name("ringfire");
        cleanup::named_shm(slot, &format!("/{name}"));
        RingFile { name }
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/dev/shm").join(&self.name)
    }

    fn unlink(&self) {
        let _ = std::fs::remove_file(self.path());
        cleanup::unnamed_segment();
    }
}

impl Drop for RingFile {
    fn drop(&mut self) {
        self.unlink();
    }
}

fn producer<const N: usize>(
    file: &RingFile,
    lossless: bool,
    readers: usize,
) -> Res<ringfire::RingProducer<[u8; N]>> {
    let mut builder =
        RingProducerBuilder::new(rings::slots(N) as u64).cleanup_mode(CleanupMode::Persistent);
    if lossless {
        builder = builder
            .flow_control(FlowControl::LosslessBackpressure)
            .max_readers(readers.max(1));
    }
    Ok(builder.build::<[u8; N], _>(file.path())?)
}

/// Fanout through one ringfire ring of `[u8; N]` messages.
struct Fan<const N: usize> {
    lossless: bool,
}

impl<const N: usize> FanTransport for Fan<N> {
    fn name(&self, n: usize) -> String {
        let mode = if self.lossless { "lossless" } else { "lossy" };
        format!("ringfire-{mode}-1to{n}")
    }

    fn lossy(&self) -> bool {
        !self.lossless
    }

    fn round(&self, h: &mut Harness, n: usize, count: u64) -> Res<FanRound> {
        let file = RingFile::new(0);
        let mut tx = producer::<N>(&file, self.lossless, n)?;
        let path = file.path().display().to_string();
        let mut peers = Vec::new();
        for i in 0..n {
            let args = [path.clone(), count.to_string(), N.to_string()];
            peers.push(Peer::spawn("subscribe-ringfire", &args, h.cpu(1 + i))?);
        }
        file.unlink();
        let mut msg = [0u8; N];
        rings::fill(&mut msg, 0);
        let start = Instant::now();
        for seq in 0..count {
            rings::stamp(&mut msg, seq);
            tx.push(&msg);
        }
        let publish_ns = start.elapsed().as_nanos() as u64;
        drop(tx);
        FanRound::collect(peers, count, publish_ns)
    }
}

/// PATH COUNT SIZE: a spinning reader of a ringfire ring from its next
/// message until the last of COUNT, verifying each; prints RESULT
/// received lagged bad first_ns last_ns.
pub fn subscribe_role(args: &[String]) -> Res<()> {
    let (count, size): (u64, usize) = (args[1].parse()?, args[2].parse()?);
    sized!(size, subscribe::<N>(&args[0], count))
        .unwrap_or_else(|| Err(format!("ringfire rows have no {size}-byte messages").into()))
}

fn subscribe<const N: usize>(path: &str, count: u64) -> Res<()> {
    let mut rx = RingConsumer::<[u8; N]>::builder()
        .start_from_head()
        .attach(path)?;
    peer::ready();
    let mut got = rings::Received::default();
    let mut misreported = 0u64;
    let in_step = |msg: &[u8], want: u64| rings::check(msg) == Some(want);
    loop {
        let (msg, skipped) = match rx.recv_status() {
            RecvStatus::Ok(msg) => (msg, 0),
            RecvStatus::Lapped { skipped, item } => (item, skipped),
            RecvStatus::Empty => {
                core::hint::spin_loop();
                continue;
            }
        };
        // The loss is what the tags say; ringfire's own count of skipped
        // messages is kept apart, to tell whether it is exact.
        misreported +=
            u64::from(skipped != 0 && !in_step(&msg, got.received + got.lagged + skipped));
        let seen = got.received + got.lagged;
        let tag = rings::check(&msg);
        match tag {
            Some(tag) if tag >= seen => got.lagged += tag - seen,
            _ => got.bad += 1,
        }
        if got.received == 0 {
            got.first_ns = peer::now_ns();
        }
        got.received += 1;
        if tag == Some(count - 1) || got.received + got.lagged >= count {
            break;
        }
    }
    got.last_ns = peer::now_ns();
    if misreported > 0 {
        eprintln!("ringfire: {misreported} laps whose skipped count disagreed with the messages' sequence");
    }
    println!("{}", got.result_line());
    Ok(())
}

/// Ping-pong over two lossy ringfire rings.
struct Echo<const N: usize>;

impl<const N: usize> PingPong for Echo<N> {
    fn name(&self) -> &'static str {
        "ringfire"
    }

    fn rounds(&self) -> u64 {
        100_000
    }

    fn run(&self, h: &mut Harness, total: u64, record: &mut dyn FnMut(Instant, u64)) -> Res<()> {
        let (ping, pong) = (RingFile::new(0), RingFile::new(1));
        let mut tx = producer::<N>(&ping, false, 0)?;
        let args = [
            ping.path().display().to_string(),
            pong.path().display().to_string(),
            N.to_string(),
            total.to_string(),
        ];
        let peer = Peer::spawn("echo-ringfire", &args, h.cpu(1))?;
        let mut rx = RingConsumer::<[u8; N]>::builder()
            .start_from_head()
            .attach(pong.path())?;
        ping.unlink();
        drop(pong);
        let mut msg = [0u8; N];
        rings::fill(&mut msg, 0);
        for i in 0..total {
            rings::stamp(&mut msg, i);
            let start = Instant::now();
            tx.push(&msg);
            let echoed = loop {
                match rx.try_recv() {
                    Some(m) => break m,
                    None => core::hint::spin_loop(),
                }
            };
            record(start, i);
            if rings::check(&echoed) != Some(i) {
                return Err(format!("ringfire echoed message {i} wrong").into());
            }
        }
        peer.finish()?;
        Ok(())
    }
}

/// PING PONG SIZE COUNT: reads COUNT messages from ring PING and writes
/// each back on ring PONG (which it creates).
pub fn echo_role(args: &[String]) -> Res<()> {
    let (size, count): (usize, u64) = (args[2].parse()?, args[3].parse()?);
    sized!(size, echo::<N>(&args[0], &args[1], count))
        .unwrap_or_else(|| Err(format!("ringfire rows have no {size}-byte messages").into()))
}

fn echo<const N: usize>(ping: &str, pong: &str, count: u64) -> Res<()> {
    let mut rx = RingConsumer::<[u8; N]>::builder()
        .start_from_head()
        .attach(ping)?;
    let mut tx = RingProducerBuilder::new(rings::slots(N) as u64)
        .cleanup_mode(CleanupMode::Persistent)
        .build::<[u8; N], _>(pong)?;
    peer::ready();
    for _ in 0..count {
        let msg = loop {
            match rx.try_recv() {
                Some(m) => break m,
                None => core::hint::spin_loop(),
            }
        };
        tx.push(&msg);
    }
    Ok(())
}

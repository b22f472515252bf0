//! iceoryx2 0.10: zero-copy publish-subscribe over `ipc::Service`, byte
//! slices loaned from the publisher's pool. Overflow fanout (safe overflow,
//! `DiscardData`: a full subscriber queue drops its oldest sample) and
//! backpressure fanout (no overflow, `RetryUntilDelivered`), and a
//! ping-pong over two services. Subscribers spin on `receive`, as
//! shmbus's and ringfire's do.

use std::time::Instant;

use iceoryx2::prelude::*;

use super::super::fanout::{Fan as FanTransport, FanRound};
use super::super::latency::PingPong;
use super::super::{Harness, Res};
use crate::peer::{self, Peer};
use crate::rings;

/// The node every process of the bench makes: iceoryx2 must not take
/// SIGINT/SIGTERM from the harness's own cleanup handler, and its
/// warnings (no config file: defaults used) would garble the table.
fn node() -> Res<Node<ipc::Service>> {
    set_log_level(LogLevel::Error);
    Ok(NodeBuilder::new()
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<ipc::Service>()?)
}

/// Samples each subscriber's queue holds: as many as shmbus's ring has
/// slots, within 32 MiB of samples for all subscribers together (iceoryx2
/// gives every subscriber a queue of its own, in the publisher's pool).
fn queue_len(size: usize, subscribers: usize) -> usize {
    ((32usize << 20) / (size.max(1) * subscribers.max(1))).clamp(16, rings::slots(size))
}

/// Fanout through one publish-subscribe service.
pub struct Fan {
    pub lossless: bool,
}

impl FanTransport for Fan {
    fn name(&self, n: usize) -> String {
        let mode = if self.lossless {
            "backpressure"
        } else {
            "overflow"
        };
        format!("iceoryx2-{mode}-1to{n}")
    }

    fn lossy(&self) -> bool {
        !self.lossless
    }

    fn round(&self, h: &mut Harness, n: usize, count: u64) -> Res<FanRound> {
        let size = h.opts.size;
        let name = super::unique_name("iceoryx2");
        let queue = queue_len(size, n);
        let node = node()?;
        let service = node
            .service_builder(&ServiceName::new(&name)?)
            .publish_subscribe::<[u8]>()
            .max_publishers(1)
            .max_subscribers(n)
            .max_nodes(n + 2)
            .history_size(0)
            .subscriber_max_buffer_size(queue)
            .enable_safe_overflow(!self.lossless)
            .create()?;
        let strategy = if self.lossless {
            BackpressureStrategy::RetryUntilDelivered
        } else {
            BackpressureStrategy::DiscardData
        };
        let tx = service
            .publisher_builder()
            .initial_max_slice_len(size)
            .backpressure_strategy(strategy)
            .create()?;
        let mut peers = Vec::new();
        for i in 0..n {
            let args = [
                name.clone(),
                count.to_string(),
                size.to_string(),
                queue.to_string(),
            ];
            peers.push(Peer::spawn("subscribe-iceoryx2", &args, h.cpu(1 + i))?);
        }
        let mut msg = vec![0u8; size];
        rings::fill(&mut msg, 0);
        let start = Instant::now();
        for seq in 0..count {
            rings::stamp(&mut msg, seq);
            tx.loan_slice_uninit(size)?.write_from_slice(&msg).send()?;
        }
        let publish_ns = start.elapsed().as_nanos() as u64;
        let round = FanRound::collect(peers, count, publish_ns);
        drop((tx, service, node));
        round
    }
}

/// SERVICE COUNT SIZE QUEUE: a spinning subscriber of SERVICE until the
/// last of COUNT messages, verifying each (messages its queue dropped
/// count as lagged); prints RESULT received lagged bad first_ns last_ns.
pub fn subscribe_role(args: &[String]) -> Res<()> {
    let count: u64 = args[1].parse()?;
    let queue: usize = args[3].parse()?;
    let node = node()?;
    let service = node
        .service_builder(&ServiceName::new(&args[0])?)
        .publish_subscribe::<[u8]>()
        .open()?;
    let rx = service.subscriber_builder().buffer_size(queue).create()?;
    peer::ready();
    let mut got = rings::Received::default();
    loop {
        let Some(sample) = rx.receive()? else {
            core::hint::spin_loop();
            continue;
        };
        let seen = got.received + got.lagged;
        let tag = rings::check(sample.payload());
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
    println!("{}", got.result_line());
    Ok(())
}

/// Ping-pong over two publish-subscribe services.
pub struct Echo;

impl PingPong for Echo {
    fn name(&self) -> &'static str {
        "iceoryx2"
    }

    fn run(&self, h: &mut Harness, total: u64, record: &mut dyn FnMut(Instant, u64)) -> Res<()> {
        let size = h.opts.size;
        let (ping, pong) = (
            super::unique_name("iceoryx2"),
            super::unique_name("iceoryx2"),
        );
        let node = node()?;
        let open = |name: &str| -> Res<_> {
            Ok(node
                .service_builder(&ServiceName::new(name)?)
                .publish_subscribe::<[u8]>()
                .max_publishers(1)
                .max_subscribers(1)
                .history_size(0)
                .subscriber_max_buffer_size(2)
                .enable_safe_overflow(true)
                .open_or_create()?)
        };
        let (ping_service, pong_service) = (open(&ping)?, open(&pong)?);
        let tx = ping_service
            .publisher_builder()
            .initial_max_slice_len(size)
            .create()?;
        let rx = pong_service.subscriber_builder().create()?;
        let args = [ping, pong, size.to_string(), total.to_string()];
        let peer = Peer::spawn("echo-iceoryx2", &args, h.cpu(1))?;
        let mut msg = vec![0u8; size];
        rings::fill(&mut msg, 0);
        for i in 0..total {
            rings::stamp(&mut msg, i);
            let start = Instant::now();
            tx.loan_slice_uninit(size)?.write_from_slice(&msg).send()?;
            let echoed = loop {
                if let Some(sample) = rx.receive()? {
                    break sample;
                }
                core::hint::spin_loop();
            };
            record(start, i);
            if rings::check(echoed.payload()) != Some(i) {
                return Err(format!("iceoryx2 echoed message {i} wrong").into());
            }
        }
        peer.finish()?;
        Ok(())
    }
}

/// PING PONG SIZE COUNT: receives COUNT messages on service PING and
/// sends each back on service PONG.
pub fn echo_role(args: &[String]) -> Res<()> {
    let (size, count): (usize, u64) = (args[2].parse()?, args[3].parse()?);
    let node = node()?;
    let open = |name: &str| -> Res<_> {
        Ok(node
            .service_builder(&ServiceName::new(name)?)
            .publish_subscribe::<[u8]>()
            .open()?)
    };
    let (ping, pong) = (open(&args[0])?, open(&args[1])?);
    let rx = ping.subscriber_builder().create()?;
    let tx = pong
        .publisher_builder()
        .initial_max_slice_len(size)
        .create()?;
    peer::ready();
    for _ in 0..count {
        let sample = loop {
            if let Some(sample) = rx.receive()? {
                break sample;
            }
            core::hint::spin_loop();
        };
        tx.loan_slice_uninit(size)?
            .write_from_slice(sample.payload())
            .send()?;
    }
    Ok(())
}

/// Ping-pong where each side sleeps until told: a publish-subscribe
/// service and an event service per direction (`Notifier::notify` after
/// each sample, `Listener::blocking_wait` while nothing is there), the way
/// iceoryx2 documents waiting for samples.
pub struct BlockingEcho;

/// The services of one direction of a blocking ping-pong.
struct Direction {
    samples:
        iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, [u8], ()>,
    events: iceoryx2::service::port_factory::event::PortFactory<ipc::Service>,
}

fn direction(node: &Node<ipc::Service>, name: &str, create: bool) -> Res<Direction> {
    let samples = node
        .service_builder(&ServiceName::new(&format!("{name}-samples"))?)
        .publish_subscribe::<[u8]>();
    let events = node
        .service_builder(&ServiceName::new(&format!("{name}-events"))?)
        .event();
    Ok(if create {
        Direction {
            samples: samples
                .max_publishers(1)
                .max_subscribers(1)
                .history_size(0)
                .subscriber_max_buffer_size(2)
                .enable_safe_overflow(true)
                .create()?,
            events: events.create()?,
        }
    } else {
        Direction {
            samples: samples.open()?,
            events: events.open()?,
        }
    })
}

/// Receives one sample on `rx`, sleeping on `listener` while there is none.
fn receive_blocking(
    rx: &iceoryx2::port::subscriber::Subscriber<ipc::Service, [u8], ()>,
    listener: &iceoryx2::port::listener::Listener<ipc::Service>,
) -> Res<iceoryx2::sample::Sample<ipc::Service, [u8], ()>> {
    loop {
        if let Some(sample) = rx.receive()? {
            return Ok(sample);
        }
        listener.blocking_wait(|_| {})?;
    }
}

impl PingPong for BlockingEcho {
    fn name(&self) -> &'static str {
        "iceoryx2-listener"
    }

    fn run(&self, h: &mut Harness, total: u64, record: &mut dyn FnMut(Instant, u64)) -> Res<()> {
        let size = h.opts.size;
        let (ping, pong) = (
            super::unique_name("iceoryx2"),
            super::unique_name("iceoryx2"),
        );
        let node = node()?;
        let (out, back) = (
            direction(&node, &ping, true)?,
            direction(&node, &pong, true)?,
        );
        let tx = out
            .samples
            .publisher_builder()
            .initial_max_slice_len(size)
            .create()?;
        let notifier = out.events.notifier_builder().create()?;
        let rx = back.samples.subscriber_builder().create()?;
        let listener = back.events.listener_builder().create()?;
        let args = [ping, pong, size.to_string(), total.to_string()];
        let peer = Peer::spawn("echo-iceoryx2-listener", &args, h.cpu(1))?;
        let mut msg = vec![0u8; size];
        rings::fill(&mut msg, 0);
        for i in 0..total {
            rings::stamp(&mut msg, i);
            let start = Instant::now();
            tx.loan_slice_uninit(size)?.write_from_slice(&msg).send()?;
            notifier.notify()?;
            let echoed = receive_blocking(&rx, &listener)?;
            record(start, i);
            if rings::check(echoed.payload()) != Some(i) {
                return Err(format!("iceoryx2 echoed message {i} wrong").into());
            }
        }
        peer.finish()?;
        Ok(())
    }
}

/// PING PONG SIZE COUNT: as `echo_role`, sleeping on the ping direction's
/// listener and notifying the pong direction's.
pub fn echo_listener_role(args: &[String]) -> Res<()> {
    let (size, count): (usize, u64) = (args[2].parse()?, args[3].parse()?);
    let node = node()?;
    let (inbound, outbound) = (
        direction(&node, &args[0], false)?,
        direction(&node, &args[1], false)?,
    );
    let rx = inbound.samples.subscriber_builder().create()?;
    let listener = inbound.events.listener_builder().create()?;
    let tx = outbound
        .samples
        .publisher_builder()
        .initial_max_slice_len(size)
        .create()?;
    let notifier = outbound.events.notifier_builder().create()?;
    peer::ready();
    for _ in 0..count {
        let sample = receive_blocking(&rx, &listener)?;
        tx.loan_slice_uninit(size)?
            .write_from_slice(sample.payload())
            .send()?;
        notifier.notify()?;
    }
    Ok(())
}

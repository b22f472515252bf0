//! The topic directory under load: whole directories filled by racing
//! processes, and thousands of random name sets on default buses.
//!
//! Every topic gets messages that name it (a hash of the topic name and a
//! sequence number), so a topic that is read back as another topic's ring,
//! as a second empty copy of itself, or not at all is caught. Every open
//! runs under a watchdog: a child process that does not finish in time is
//! killed and the test names what it was doing; an in-process set that
//! does not finish in time fails the test with its seed.
//!
//! Reproduce: `SHMBUS_FILL_SEED=<seed>` (racing processes) and
//! `SHMBUS_DIR_SEED=<seed>` (random name sets) replay a failing run; both
//! print their seed. `SHMBUS_DIR_WATCHDOG_S` bounds each child phase
//! (default 60 s), `SHMBUS_DIR_STALL_S` how long a child may be silent in
//! one step, a single open (default 15 s), `SHMBUS_DIR_SETS` the number of
//! name sets (default 2000, within 20 s).

mod common;

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{child_role, report, TestBus};
use shmbus::{Bus, Error, Message, StartAt, TopicBuilder, TryPopError, TryRecvError, WaitStrategy};

/// Messages each writer sends; below every capacity used, so nothing is
/// overwritten and a lossless publisher or a producer never waits.
const MSGS: u64 = 3;
/// Subscriber table of lossless topics: up to 3 other children hold a
/// subscriber while the verifier attaches one more.
const LOSSLESS_SUBS: u32 = 8;
/// Arena of the buses of the racing test: room for 100 topics of at most
/// 16 slots of 256 bytes plus work-queue tables (about 14 KiB each).
const FILL_BUS_SIZE: u64 = 8 << 20;
/// Directory sizes the racing test fills (100: not a power of two).
const FILL_SIZES: [u32; 6] = [1, 2, 3, 7, 64, 100];
const CHILDREN: usize = 4;

const WORDS: [&str; 24] = [
    "md",
    "fills",
    "quotes",
    "jobs",
    "orders",
    "trades",
    "ticks",
    "book",
    "bbo",
    "news",
    "risk",
    "pnl",
    "heartbeat",
    "audit",
    "frames",
    "stage2",
    "a",
    "b",
    "x",
    "md2",
    "fills.eu",
    "quotes_us",
    "jobs-hi",
    "px",
];
const NAME_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-";

// ---------------------------------------------------------------------------
// Randomness and topic specs
// ---------------------------------------------------------------------------

/// splitmix64: tiny, seedable, good enough for test inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

fn mix(a: u64, b: u64) -> u64 {
    Rng(a ^ b.wrapping_mul(0xd6e8_feb8_6659_fd93)).next()
}

fn seed_from_env(var: &str) -> u64 {
    match std::env::var(var) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var}={s:?} is not a u64")),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            mix(t.as_nanos() as u64, u64::from(std::process::id()))
        }
    }
}

fn env_number(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

/// A random valid topic name: 1 to 64 characters, not "." or "..".
fn random_name(rng: &mut Rng) -> String {
    loop {
        let len = 1 + rng.below(64);
        let name: String = (0..len)
            .map(|_| NAME_CHARS[rng.below(NAME_CHARS.len())] as char)
            .collect();
        if name != "." && name != ".." {
            return name;
        }
    }
}

/// What a message of a topic says: which topic (a hash of its name).
fn tag_of(name: &str) -> u64 {
    let fnv = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    mix(fnv, 0x7a67)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Overwrite,
    Lossless,
    Queue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    U64,
    U64x3,
    U8x40,
    Bytes(u32),
}

#[derive(Debug, Clone)]
struct Spec {
    name: String,
    kind: Kind,
    ty: Ty,
    capacity: u32,
}

impl Spec {
    fn describe(&self) -> String {
        format!(
            "{:?} ({:?} {:?}, capacity {})",
            self.name, self.kind, self.ty, self.capacity
        )
    }
}

/// As many topics as a directory of `entries` holds, from `seed`. Always
/// starts with the ordinary names md, fills, quotes, jobs (as many as fit).
fn fill_specs(seed: u64, entries: u32) -> Vec<Spec> {
    let mut rng = Rng(seed);
    let n = entries as usize;
    let mut seen = HashSet::new();
    let mut names: Vec<String> = Vec::with_capacity(n);
    for word in WORDS.iter().take(4.min(n)) {
        seen.insert(word.to_string());
        names.push(word.to_string());
    }
    while names.len() < n {
        let name = if rng.below(4) == 0 {
            WORDS[rng.below(WORDS.len())].to_owned()
        } else {
            random_name(&mut rng)
        };
        if seen.insert(name.clone()) {
            names.push(name);
        }
    }
    names
        .into_iter()
        .map(|name| Spec {
            name,
            kind: [Kind::Overwrite, Kind::Lossless, Kind::Queue][rng.below(3)],
            ty: match rng.below(4) {
                0 => Ty::U64,
                1 => Ty::U64x3,
                2 => Ty::U8x40,
                _ => Ty::Bytes([16, 40, 100, 256][rng.below(4)]),
            },
            capacity: [4, 8, 16][rng.below(3)],
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------

/// A message type whose value says which topic and which message it is.
trait Payload: Message + PartialEq + Debug + Copy {
    fn make(tag: u64, seq: u64) -> Self;
}

impl Payload for u64 {
    fn make(tag: u64, seq: u64) -> Self {
        tag.wrapping_add(seq)
    }
}

impl Payload for [u64; 3] {
    fn make(tag: u64, seq: u64) -> Self {
        [tag, seq, !tag ^ seq.rotate_left(17)]
    }
}

impl Payload for [u8; 40] {
    fn make(tag: u64, seq: u64) -> Self {
        let mut out = [0u8; 40];
        out[..8].copy_from_slice(&tag.to_le_bytes());
        out[8..16].copy_from_slice(&seq.to_le_bytes());
        for (i, b) in out[16..].iter_mut().enumerate() {
            *b = (tag.rotate_left(seq as u32 + i as u32) >> 7) as u8;
        }
        out
    }
}

/// A byte message: tag, sequence number, then the topic name, cut to the
/// slot size.
fn bytes_msg(spec: &Spec, seq: u64, slot: u32) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&tag_of(&spec.name).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(spec.name.as_bytes());
    out.truncate(slot as usize);
    out
}

/// Which topic a misdelivered message belongs to, if any we know: its
/// first word is the topic's tag (plus the sequence number for `u64`).
fn owner_of(bytes: &[u8], tags: &HashMap<u64, String>) -> String {
    let Some(first) = bytes.get(..8) else {
        return "an unknown topic".into();
    };
    let word = u64::from_le_bytes(first.try_into().unwrap());
    (0..MSGS)
        .find_map(|d| tags.get(&word.wrapping_sub(d)))
        .map_or("an unknown topic".into(), |name| format!("topic {name:?}"))
}

// ---------------------------------------------------------------------------
// Opening topics the way their kind needs
// ---------------------------------------------------------------------------

/// `Bus::topics()` reduced to names; an error shows up as a name that can
/// never match, so the caller's comparison reports it.
fn topic_names(bus: &Bus) -> Vec<String> {
    let listed = match bus.topics() {
        Ok(listed) => listed,
        Err(e) => return vec![format!("<Bus::topics() error: {e}>")],
    };
    listed
        .into_iter()
        .map(|t| match t {
            Ok(info) => info.name,
            Err(e) => format!("<Bus::topics() error: {e}>"),
        })
        .collect()
}

fn builder<'b>(bus: &'b Bus, spec: &Spec) -> TopicBuilder<'b> {
    let mut b = bus
        .topic(&spec.name)
        .capacity(spec.capacity)
        .wait(WaitStrategy::Block);
    if spec.kind == Kind::Lossless {
        b = b.lossless(LOSSLESS_SUBS);
    }
    if let Ty::Bytes(slot) = spec.ty {
        b = b.slot_size(slot);
    }
    b
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Broadcast: the publisher, sends `MSGS`. Queue: a producer, pushes them.
    Write,
    /// Broadcast: a subscriber, kept. Queue: a consumer that never pops.
    Read,
    /// Broadcast: a subscriber, dropped at once. Queue: a producer that
    /// never pushes.
    Join,
}

type Held = Box<dyn Any>;

fn open_as(bus: &Bus, spec: &Spec, role: Role) -> Result<Option<Held>, String> {
    match spec.ty {
        Ty::U64 => open_typed::<u64>(bus, spec, role),
        Ty::U64x3 => open_typed::<[u64; 3]>(bus, spec, role),
        Ty::U8x40 => open_typed::<[u8; 40]>(bus, spec, role),
        Ty::Bytes(slot) => open_bytes(bus, spec, role, slot),
    }
}

fn open_typed<T: Payload>(bus: &Bus, spec: &Spec, role: Role) -> Result<Option<Held>, String> {
    let tag = tag_of(&spec.name);
    let b = builder(bus, spec);
    let e = |e: Error| format!("open failed: {e}");
    Ok(match (spec.kind, role) {
        (Kind::Queue, Role::Write) => {
            let mut tx = b.producer::<T>().map_err(e)?;
            for seq in 0..MSGS {
                tx.try_push(T::make(tag, seq))
                    .map_err(|err| format!("push {seq}: {err:?}"))?;
            }
            Some(Box::new(tx))
        }
        (Kind::Queue, Role::Read) => Some(Box::new(b.consumer::<T>().map_err(e)?)),
        (Kind::Queue, Role::Join) => Some(Box::new(b.producer::<T>().map_err(e)?)),
        (_, Role::Write) => {
            let mut tx = b.publisher::<T>().map_err(e)?;
            for seq in 0..MSGS {
                tx.try_send(&T::make(tag, seq))
                    .map_err(|err| format!("send {seq}: {err:?}"))?;
            }
            Some(Box::new(tx))
        }
        (_, Role::Read) => Some(Box::new(b.subscriber::<T>().map_err(e)?)),
        (_, Role::Join) => {
            b.subscriber::<T>().map_err(e)?;
            None
        }
    })
}

fn open_bytes(bus: &Bus, spec: &Spec, role: Role, slot: u32) -> Result<Option<Held>, String> {
    let b = builder(bus, spec);
    let e = |e: Error| format!("open failed: {e}");
    Ok(match (spec.kind, role) {
        (Kind::Queue, Role::Write) => {
            let mut tx = b.producer_bytes().map_err(e)?;
            for seq in 0..MSGS {
                tx.try_push_bytes(&bytes_msg(spec, seq, slot))
                    .map_err(|err| format!("push {seq}: {err:?}"))?;
            }
            Some(Box::new(tx))
        }
        (Kind::Queue, Role::Read) => Some(Box::new(b.consumer_bytes().map_err(e)?)),
        (Kind::Queue, Role::Join) => Some(Box::new(b.producer_bytes().map_err(e)?)),
        (_, Role::Write) => {
            let mut tx = b.publisher_bytes().map_err(e)?;
            for seq in 0..MSGS {
                tx.try_send_bytes(&bytes_msg(spec, seq, slot))
                    .map_err(|err| format!("send {seq}: {err:?}"))?;
            }
            Some(Box::new(tx))
        }
        (_, Role::Read) => Some(Box::new(b.subscriber_bytes().map_err(e)?)),
        (_, Role::Join) => {
            b.subscriber_bytes().map_err(e)?;
            None
        }
    })
}

/// Reads topic `spec` back from the start and checks it holds exactly its
/// own `MSGS` messages, in order. All writers have finished.
fn verify(bus: &Bus, spec: &Spec, tags: &HashMap<u64, String>) -> Result<(), String> {
    match spec.ty {
        Ty::U64 => verify_typed::<u64>(bus, spec, tags),
        Ty::U64x3 => verify_typed::<[u64; 3]>(bus, spec, tags),
        Ty::U8x40 => verify_typed::<[u8; 40]>(bus, spec, tags),
        Ty::Bytes(slot) => verify_bytes(bus, spec, slot, tags),
    }
}

/// A short bound: every message was published before verification began,
/// so a receive only waits if the topic is not the one that was written.
const READ_WAIT: Duration = Duration::from_millis(100);

fn wrong<T: Debug>(seq: u64, got: T, bytes: &[u8], tags: &HashMap<u64, String>) -> String {
    format!(
        "message {seq}: got {got:?}, a message of {}",
        owner_of(bytes, tags)
    )
}

fn verify_typed<T: Payload>(
    bus: &Bus,
    spec: &Spec,
    tags: &HashMap<u64, String>,
) -> Result<(), String> {
    let tag = tag_of(&spec.name);
    let b = builder(bus, spec).start_at(StartAt::Oldest);
    let e = |e: Error| format!("open failed: {e}");
    if spec.kind == Kind::Queue {
        let mut rx = b.consumer::<T>().map_err(e)?;
        for seq in 0..MSGS {
            match rx.try_pop() {
                Ok(v) if v == T::make(tag, seq) => {}
                Ok(v) => return Err(wrong(seq, v, v.as_bytes(), tags)),
                Err(err) => return Err(format!("pop {seq} of {MSGS}: {err:?}")),
            }
        }
        match rx.try_pop() {
            Err(TryPopError::Empty | TryPopError::Disconnected) => Ok(()),
            Ok(v) => Err(format!(
                "an extra message {v:?}, of {}",
                owner_of(v.as_bytes(), tags)
            )),
            Err(err) => Err(format!("after {MSGS} messages: {err:?}")),
        }
    } else {
        let mut rx = b.subscriber::<T>().map_err(e)?;
        for seq in 0..MSGS {
            match rx.recv_timeout(READ_WAIT) {
                Ok(v) if v == T::make(tag, seq) => {}
                Ok(v) => return Err(wrong(seq, v, v.as_bytes(), tags)),
                Err(err) => return Err(format!("receive {seq} of {MSGS}: {err:?}")),
            }
        }
        match rx.try_recv() {
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => Ok(()),
            Ok(v) => Err(format!(
                "an extra message {v:?}, of {}",
                owner_of(v.as_bytes(), tags)
            )),
            Err(err) => Err(format!("after {MSGS} messages: {err:?}")),
        }
    }
}

fn verify_bytes(
    bus: &Bus,
    spec: &Spec,
    slot: u32,
    tags: &HashMap<u64, String>,
) -> Result<(), String> {
    let b = builder(bus, spec).start_at(StartAt::Oldest);
    let e = |e: Error| format!("open failed: {e}");
    if spec.kind == Kind::Queue {
        let mut rx = b.consumer_bytes().map_err(e)?;
        for seq in 0..MSGS {
            match rx.try_pop_bytes() {
                Ok(v) if v == bytes_msg(spec, seq, slot) => {}
                Ok(v) => return Err(wrong(seq, v, v, tags)),
                Err(err) => return Err(format!("pop {seq} of {MSGS}: {err:?}")),
            }
        }
        match rx.try_pop_bytes() {
            Err(TryPopError::Empty | TryPopError::Disconnected) => Ok(()),
            Ok(v) => Err(format!("an extra message {v:?}, of {}", owner_of(v, tags))),
            Err(err) => Err(format!("after {MSGS} messages: {err:?}")),
        }
    } else {
        let mut rx = b.subscriber_bytes().map_err(e)?;
        for seq in 0..MSGS {
            match rx.recv_bytes_timeout(READ_WAIT) {
                Ok(v) if v == bytes_msg(spec, seq, slot) => {}
                Ok(v) => return Err(wrong(seq, v, v, tags)),
                Err(err) => return Err(format!("receive {seq} of {MSGS}: {err:?}")),
            }
        }
        match rx.try_recv_bytes() {
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => Ok(()),
            Ok(v) => Err(format!("an extra message {v:?}, of {}", owner_of(v, tags))),
            Err(err) => Err(format!("after {MSGS} messages: {err:?}")),
        }
    }
}

/// Checks that `listed` names each of `expected` exactly once and nothing
/// else; returns what is wrong.
fn listing_problems(listed: &[String], expected: &[String]) -> Vec<String> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for name in listed {
        *counts.entry(name.as_str()).or_default() += 1;
    }
    let mut problems = Vec::new();
    for name in expected {
        match counts.remove(name.as_str()) {
            Some(1) => {}
            Some(n) => problems.push(format!("topics() lists {name:?} {n} times")),
            None => problems.push(format!("topics() does not list {name:?}")),
        }
    }
    let mut extra: Vec<_> = counts.into_iter().collect();
    extra.sort();
    for (name, n) in extra {
        problems.push(format!(
            "topics() lists {name:?} ({n}x), which was never created"
        ));
    }
    problems
}

// ---------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------

/// Entry point of child processes; does nothing when run as a normal test.
#[test]
#[ignore = "entry point of child processes; the tests that spawn them run it"]
fn child_role_entry() {
    let Some((role, args)) = child_role() else {
        return;
    };
    let cfg = FillArgs::parse(&args);
    // Our own watchdog, in case the parent is gone and cannot kill us.
    let bound = Duration::from_secs(cfg.watchdog_s * 2 + 10);
    std::thread::spawn(move || {
        std::thread::sleep(bound);
        eprintln!(
            "directory_fill child {}: not done after {bound:?}, exiting",
            std::process::id()
        );
        std::process::exit(3);
    });
    report("READY");
    let mut go = String::new();
    if std::io::stdin().read_line(&mut go).unwrap_or(0) == 0 || go.trim() != "go" {
        report("BAD the parent closed the barrier without saying go");
        return;
    }
    report("AT opening the bus");
    let bus = match Bus::builder(&cfg.bus)
        .topics(cfg.entries)
        .size(FILL_BUS_SIZE)
        .open()
    {
        Ok(bus) => bus,
        Err(e) => {
            report(format!("BAD opening the bus: {e}"));
            return;
        }
    };
    let specs = fill_specs(cfg.seed, cfg.entries);
    match role.as_str() {
        "fill-create" => create_role(&bus, &specs, &cfg),
        "fill-verify" => verify_role(&bus, &specs),
        other => panic!("unknown child role {other}"),
    }
    report("DONE");
}

struct FillArgs {
    bus: String,
    entries: u32,
    seed: u64,
    children: usize,
    index: usize,
    watchdog_s: u64,
}

impl FillArgs {
    fn to_args(&self) -> Vec<String> {
        vec![
            self.bus.clone(),
            self.entries.to_string(),
            self.seed.to_string(),
            self.children.to_string(),
            self.index.to_string(),
            self.watchdog_s.to_string(),
        ]
    }

    fn parse(args: &[String]) -> Self {
        FillArgs {
            bus: args[0].clone(),
            entries: args[1].parse().unwrap(),
            seed: args[2].parse().unwrap(),
            children: args[3].parse().unwrap(),
            index: args[4].parse().unwrap(),
            watchdog_s: args[5].parse().unwrap(),
        }
    }
}

/// Opens every topic in its own shuffled order; topic `i` is written by
/// child `i % children`. Keeps the handles until all are open.
fn create_role(bus: &Bus, specs: &[Spec], cfg: &FillArgs) {
    let mut order: Vec<usize> = (0..specs.len()).collect();
    Rng(mix(cfg.seed, 1000 + cfg.index as u64)).shuffle(&mut order);
    let mut held: Vec<Held> = Vec::new();
    for i in order {
        let spec = &specs[i];
        let role = if i % cfg.children == cfg.index {
            Role::Write
        } else if (i + cfg.index) % 2 == 0 {
            Role::Read
        } else {
            Role::Join
        };
        report(format!("AT topic {i} as {role:?}: {}", spec.describe()));
        match open_as(bus, spec, role) {
            Ok(handle) => held.extend(handle),
            Err(why) => report(format!(
                "BAD topic {i} {} as {role:?}: {why}",
                spec.describe()
            )),
        }
    }
    report("AT dropping its handles");
    drop(held);
}

fn verify_role(bus: &Bus, specs: &[Spec]) {
    let tags: HashMap<u64, String> = specs
        .iter()
        .map(|s| (tag_of(&s.name), s.name.clone()))
        .collect();
    for (i, spec) in specs.iter().enumerate() {
        report(format!("AT verifying topic {i}: {}", spec.describe()));
        if let Err(why) = verify(bus, spec, &tags) {
            report(format!("BAD topic {i} {}: {why}", spec.describe()));
        }
    }
    report("AT listing topics");
    let expected: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    for problem in listing_problems(&topic_names(bus), &expected) {
        report(format!("BAD {problem}"));
    }
}

/// One child of a phase, as the parent sees it.
struct Kid {
    child: Child,
    stdin: Option<ChildStdin>,
    last_at: String,
    /// When it last printed a line.
    last_seen: Instant,
    done: bool,
    /// Killed by the watchdog.
    killed: bool,
    status: Option<ExitStatus>,
}

/// The children of a phase; any still running when this drops is killed
/// and reaped, so a failing test leaves no process behind.
struct Kids(Vec<Kid>);

impl Drop for Kids {
    fn drop(&mut self) {
        for kid in &mut self.0 {
            if kid.status.is_none() {
                let _ = kid.child.kill();
                let _ = kid.child.wait();
            }
        }
    }
}

/// Runs `args.len()` children in `role`, released together, and returns
/// every problem they report. A child not done within `limit`, or silent
/// for `stall` (stuck in one step), is killed and reported with what it
/// was doing. Second value: whether one was killed.
fn run_phase(
    what: &str,
    role: &str,
    args: Vec<Vec<String>>,
    limit: Duration,
    stall: Duration,
) -> (Vec<String>, bool) {
    let (tx, rx) = mpsc::channel::<(usize, Option<String>)>();
    let mut kids = Kids(Vec::new());
    for (i, a) in args.iter().enumerate() {
        let mut child = common::role_command(role, a)
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn child role");
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((i, Some(line))).is_err() {
                    return;
                }
            }
            let _ = tx.send((i, None));
        });
        kids.0.push(Kid {
            child,
            stdin,
            last_at: "starting".into(),
            last_seen: Instant::now(),
            done: false,
            killed: false,
            status: None,
        });
    }
    drop(tx);
    let n = kids.0.len();
    let started = Instant::now();
    let deadline = started + limit;
    let mut ready = 0;
    let mut problems = Vec::new();
    let mut hung = false;
    let running = |kids: &Kids| kids.0.iter().any(|k| k.status.is_none());
    while running(&kids) {
        // A child prints a line before every open; one that has printed
        // nothing for `stall` is stuck in an open (the longest legitimate
        // wait in one is about 2 s: the bus and topic creation timeouts).
        let now = Instant::now();
        for (i, kid) in kids.0.iter_mut().enumerate() {
            let stuck = now.duration_since(kid.last_seen);
            if kid.status.is_none() && (stuck >= stall || now >= deadline) {
                hung = true;
                kid.killed = true;
                let pid = kid.child.id();
                let _ = kid.child.kill();
                kid.status = kid.child.wait().ok();
                problems.push(format!(
                    "{what}, child {i} (pid {pid}): HUNG, stuck {stuck:?} in one step ({:?} into the phase), killed; it was at: {}",
                    started.elapsed(),
                    kid.last_at
                ));
            }
        }
        let wake = kids
            .0
            .iter()
            .filter(|k| k.status.is_none())
            .map(|k| k.last_seen + stall)
            .min()
            .map_or(deadline, |at| at.min(deadline));
        let Ok((i, line)) = rx.recv_timeout(wake.saturating_duration_since(now)) else {
            continue;
        };
        let kid = &mut kids.0[i];
        kid.last_seen = Instant::now();
        let Some(line) = line else {
            if kid.status.is_none() {
                kid.status = Some(kid.child.wait().expect("wait for child"));
            }
            continue;
        };
        if line == "READY" {
            ready += 1;
            if ready == n {
                // Release them together: the closest to a start line we have.
                for kid in &mut kids.0 {
                    if let Some(mut stdin) = kid.stdin.take() {
                        let _ = stdin.write_all(b"go\n");
                    }
                    kid.last_seen = Instant::now();
                }
            }
        } else if let Some(rest) = line.strip_prefix("AT ") {
            kid.last_at = rest.to_owned();
        } else if let Some(rest) = line.strip_prefix("BAD ") {
            problems.push(format!("{what}, child {i}: {rest}"));
        } else if line == "DONE" {
            kid.done = true;
        }
    }
    for (i, kid) in kids.0.iter().enumerate() {
        match kid.status {
            _ if kid.killed => {}
            Some(status) if !status.success() => problems.push(format!(
                "{what}, child {i}: exited with {status}; it was at: {}",
                kid.last_at
            )),
            Some(_) if !kid.done => problems.push(format!(
                "{what}, child {i}: ended without finishing; it was at: {}",
                kid.last_at
            )),
            _ => {}
        }
    }
    (problems, hung)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// One round of the racing test: `CHILDREN` processes create every topic
/// of a directory of `entries`, then a fresh process reads them all back.
/// Returns the failure, in words.
fn fill_round(entries: u32, seed: u64, limit: Duration, stall: Duration) -> Option<String> {
    let phase_start = Instant::now();
    let bus = TestBus::new("dirfill");
    let cfg = |index: usize| FillArgs {
        bus: bus.name.clone(),
        entries,
        seed,
        children: CHILDREN,
        index,
        watchdog_s: limit.as_secs(),
    };
    let what = format!("{entries}-entry directory, creating");
    let creators = (0..CHILDREN).map(|i| cfg(i).to_args()).collect();
    let (mut problems, hung) = run_phase(&what, "fill-create", creators, limit, stall);
    if hung {
        problems.push(format!(
            "{entries}-entry directory: not verified, a creator hung"
        ));
    } else {
        let what = format!("{entries}-entry directory, verifying in a fresh process");
        let (more, _) = run_phase(&what, "fill-verify", vec![cfg(0).to_args()], limit, stall);
        problems.extend(more);
    }
    eprintln!(
        "  {entries:>3} entries, seed {seed}: {} problem(s) in {:?}",
        problems.len(),
        phase_start.elapsed()
    );
    if problems.is_empty() {
        return None;
    }
    let listing: Vec<String> = fill_specs(seed, entries)
        .iter()
        .enumerate()
        .map(|(i, s)| format!("    {i:>3} {}", s.describe()))
        .collect();
    Some(format!(
        "{entries}-entry directory (seed {seed}):\n  {}\n  topics:\n{}",
        problems.join("\n  "),
        listing.join("\n")
    ))
}

#[test]
fn racing_processes_fill_whole_directories_and_every_topic_reads_back_its_own() {
    let base = seed_from_env("SHMBUS_FILL_SEED");
    let limit = Duration::from_secs(env_number("SHMBUS_DIR_WATCHDOG_S", 60));
    let stall = Duration::from_secs(env_number("SHMBUS_DIR_STALL_S", 15));
    let rounds = env_number("SHMBUS_FILL_ROUNDS", 4);
    eprintln!("directory_fill racing test: SHMBUS_FILL_SEED={base}");
    let started = Instant::now();
    let mut failures = Vec::new();
    for entries in FILL_SIZES {
        // Several rounds, each its own bus and seed; stop a size at its
        // first failing round (a hang costs a stall bound).
        for round in 0..rounds {
            let problems = fill_round(
                entries,
                mix(base, u64::from(entries) << 16 | round),
                limit,
                stall,
            );
            if let Some(failure) = problems {
                failures.push(format!("round {round}: {failure}"));
                break;
            }
        }
    }
    eprintln!("directory_fill racing test: {:?} in all", started.elapsed());
    assert!(
        failures.is_empty(),
        "SHMBUS_FILL_SEED={base}: {} of {} directory sizes failed (each stops at its first failing round):\n{}",
        failures.len(),
        FILL_SIZES.len(),
        failures.join("\n")
    );
}

/// One name of a random set, and how it is opened.
#[derive(Debug, Clone)]
struct SetTopic {
    name: String,
    kind: Kind,
    /// `None`: created with the default capacity, joined without one.
    capacity: Option<u32>,
    /// Drop the writer before reading back (a publisher that left).
    drop_writer: bool,
}

fn random_set(seed: u64) -> Vec<SetTopic> {
    let mut rng = Rng(seed);
    let count = 2 + rng.below(19);
    let mut seen = HashSet::new();
    let mut set = Vec::new();
    while set.len() < count {
        let name = if rng.below(2) == 0 {
            WORDS[rng.below(WORDS.len())].to_owned()
        } else {
            random_name(&mut rng)
        };
        if !seen.insert(name.clone()) {
            continue;
        }
        set.push(SetTopic {
            name,
            kind: [Kind::Overwrite, Kind::Lossless, Kind::Queue][rng.below(3)],
            capacity: [None, Some(4), Some(16), Some(64)][rng.below(4)],
            drop_writer: rng.below(2) == 0,
        });
    }
    set
}

/// Creates each topic of the set with a writer that sends one value naming
/// it, then opens every topic again, in another order, and reads it back.
fn run_set(bus_name: &str, set: &[SetTopic], seed: u64) -> Result<(), String> {
    let bus = Bus::open(bus_name).map_err(|e| format!("opening the bus: {e}"))?;
    let tags: HashMap<u64, String> = set
        .iter()
        .map(|t| (tag_of(&t.name), t.name.clone()))
        .collect();
    let topic = |t: &SetTopic| {
        let mut b = bus.topic(&t.name).wait(WaitStrategy::Block);
        if let Some(c) = t.capacity {
            b = b.capacity(c);
        }
        if t.kind == Kind::Lossless {
            b = b.lossless(4);
        }
        b
    };
    let mut held: Vec<Held> = Vec::new();
    for t in set {
        let tag = tag_of(&t.name);
        let e = |e: Error| format!("creating {t:?}: {e}");
        if t.kind == Kind::Queue {
            let mut tx = topic(t).producer::<u64>().map_err(e)?;
            tx.try_push(tag)
                .map_err(|err| format!("push to {t:?}: {err:?}"))?;
            if !t.drop_writer {
                held.push(Box::new(tx));
            }
        } else {
            let mut tx = topic(t).publisher::<u64>().map_err(e)?;
            tx.try_send(&tag)
                .map_err(|err| format!("send to {t:?}: {err:?}"))?;
            if !t.drop_writer {
                held.push(Box::new(tx));
            }
        }
    }
    let mut order: Vec<&SetTopic> = set.iter().collect();
    Rng(mix(seed, 1)).shuffle(&mut order);
    for t in order {
        let tag = tag_of(&t.name);
        let e = |e: Error| format!("reopening {t:?}: {e}");
        let got = if t.kind == Kind::Queue {
            let mut rx = topic(t).consumer::<u64>().map_err(e)?;
            let first = rx.try_pop().map_err(|err| format!("{err:?}"));
            let next = rx.try_pop();
            if let Ok(v) = next {
                return Err(format!("{t:?}: an extra message {v:#x}"));
            }
            first
        } else {
            let mut rx = topic(t)
                .start_at(StartAt::Oldest)
                .subscriber::<u64>()
                .map_err(e)?;
            let first = rx.try_recv().map_err(|err| format!("{err:?}"));
            if let Ok(v) = rx.try_recv() {
                return Err(format!("{t:?}: an extra message {v:#x}"));
            }
            first
        };
        match got {
            Ok(v) if v == tag => {}
            Ok(v) => {
                return Err(format!(
                    "{t:?}: read {v:#x}, the value of {}",
                    owner_of(&v.to_le_bytes(), &tags)
                ))
            }
            Err(why) => {
                return Err(format!(
                    "{t:?}: no value where one was sent ({why}): an empty copy of the topic?"
                ))
            }
        }
    }
    let expected: Vec<String> = set.iter().map(|t| t.name.clone()).collect();
    let problems = listing_problems(&topic_names(&bus), &expected);
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    drop(held);
    Ok(())
}

#[test]
fn random_name_sets_on_default_buses_each_read_back_their_own_values() {
    const SET_LIMIT: Duration = Duration::from_secs(10);
    let base = seed_from_env("SHMBUS_DIR_SEED");
    let sets = env_number("SHMBUS_DIR_SETS", 2000);
    let budget = Duration::from_secs(20);
    eprintln!("directory_fill name sets: SHMBUS_DIR_SEED={base}");
    let started = Instant::now();
    let mut ran = 0u64;
    for index in 0..sets {
        if started.elapsed() > budget {
            break;
        }
        let seed = mix(base, index);
        let set = random_set(seed);
        // Owned here, so the segment is removed even if the set hangs or fails.
        let bus = TestBus::new("dirset");
        let (tx, rx) = mpsc::channel();
        let (bus_name, set_copy) = (bus.name.clone(), set.clone());
        std::thread::Builder::new()
            .name(format!("name-set-{index}"))
            .spawn(move || {
                let _ = tx.send(run_set(&bus_name, &set_copy, seed));
            })
            .expect("spawn set thread");
        let failure = match rx.recv_timeout(SET_LIMIT) {
            Ok(Ok(())) => None,
            Ok(Err(why)) => Some(why),
            Err(mpsc::RecvTimeoutError::Timeout) => Some(format!(
                "HUNG: the set did not finish within {SET_LIMIT:?} (its thread is left spinning)"
            )),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Some("the set's thread panicked (see above)".into())
            }
        };
        if let Some(why) = failure {
            let names: Vec<String> = set
                .iter()
                .map(|t| format!("{:?} {:?} cap {:?}", t.name, t.kind, t.capacity))
                .collect();
            panic!(
                "SHMBUS_DIR_SEED={base}: set {index} (after {ran} passed, {:?}) failed: {why}\n  names in creation order: {}",
                started.elapsed(),
                names.join(", ")
            );
        }
        ran += 1;
    }
    eprintln!(
        "directory_fill name sets: {ran} sets in {:?}",
        started.elapsed()
    );
    assert!(ran >= 100, "only {ran} sets ran in {budget:?}");
}

/// The smallest known case, on a default bus: a subscriber of "md" opened
/// after "fills" was created must return, and read md's message.
#[test]
fn subscriber_of_md_opened_after_fills_was_created_returns_and_reads_md() {
    let bus = TestBus::new("demo");
    let name = bus.name.clone();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let run = || -> Result<u64, String> {
            let s = |e: Error| e.to_string();
            let b = Bus::open(&name).map_err(s)?;
            let mut md = b.publisher::<u64>("md").map_err(s)?;
            md.send(&1).map_err(|e| format!("{e:?}"))?;
            let _f = b.publisher::<u64>("fills").map_err(s)?;
            let mut rx = b
                .topic("md")
                .start_at(StartAt::Oldest)
                .subscriber::<u64>()
                .map_err(s)?;
            rx.try_recv().map_err(|e| format!("{e:?}"))
        };
        let _ = tx.send(run());
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(1)) => {}
        Ok(Ok(v)) => panic!("md's subscriber read {v}, not md's 1"),
        Ok(Err(why)) => panic!("md, fills, then a subscriber of md: {why}"),
        Err(_) => panic!(
            "bus.subscriber::<u64>(\"md\") did not return within 10 s after \"fills\" was created"
        ),
    }
}

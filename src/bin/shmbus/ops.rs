//! Tools for a live bus: `stat` (every counter, as text or JSON), `tail`
//! (follow a topic as an observer that changes nothing) and `pub` (publish
//! stdin's lines).

use std::io::{BufRead, Write};

use shmbus::{Bus, RecvError, RecvTimeoutError, StartAt, TopicKind, TryRecvError, WaitStrategy};

use crate::snapshot::{kind_name, process_name, BusSnapshot, PipeDir};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// `shmbus stat [BUS] [--json]`. Fails (exit 1) if a bus named cannot be
/// read or has corrupt topic entries, after printing everything else.
pub fn stat(bus: Option<&str>, json: bool, dir: &std::path::Path) -> Result<()> {
    let snapshots = match bus {
        Some(name) => vec![BusSnapshot::try_take(name, dir)?],
        None => BusSnapshot::all(dir)?,
    };
    let mut out = std::io::stdout().lock();
    if json {
        let doc = match bus {
            Some(_) => snapshots[0].json(),
            None => serde_json::json!({
                "buses": snapshots.iter().map(BusSnapshot::json).collect::<Vec<_>>()
            }),
        };
        writeln!(out, "{doc}")?;
    } else {
        for snapshot in &snapshots {
            write_stat(&mut out, snapshot)?;
        }
    }
    if let Some(name) = bus {
        let snapshot = &snapshots[0];
        if !snapshot.corrupt.is_empty() {
            return Err(format!(
                "bus {name:?} has {} corrupt topic entries",
                snapshot.corrupt.len()
            )
            .into());
        }
    }
    Ok(())
}

fn write_stat(out: &mut impl Write, s: &BusSnapshot) -> std::io::Result<()> {
    let topics = match &s.topics {
        Ok(topics) => topics,
        Err(e) => return writeln!(out, "bus {}: unusable: {e}", s.name),
    };
    writeln!(out, "bus {} ({} topics)", s.name, topics.len())?;
    for t in topics {
        match t.arena_bytes {
            Some(arena) => write!(
                out,
                "  {} ({}, variable-size): capacity {}, arena {arena} bytes (messages up to {}), ",
                t.name,
                kind_name(t.kind),
                t.capacity,
                t.slot_size
            )?,
            None => write!(
                out,
                "  {} ({}): capacity {}, slot {} bytes, ",
                t.name,
                kind_name(t.kind),
                t.capacity,
                t.slot_size
            )?,
        }
        if t.kind == TopicKind::WorkQueue {
            writeln!(
                out,
                "pushed {}, popped {}, depth {}, lost {} in push + {} in consume, \
                 consumers asleep {}, producers asleep {}",
                t.published,
                t.popped,
                t.depth,
                t.lost_in_push,
                t.lost_in_consume,
                t.sleeping,
                t.waiting_writers
            )?;
        } else {
            let publisher = t
                .publisher_pid
                .map_or("none".into(), |p| format!("pid {p}"));
            writeln!(
                out,
                "published {}, publisher {publisher}, subscribers asleep {}, evictions {}",
                t.published, t.sleeping, t.evictions
            )?;
        }
        let roles = [
            ("subscriber", &t.subscribers),
            ("producer", &t.producers),
            ("consumer", &t.consumers),
        ];
        for (role, list) in roles {
            for e in list {
                let pid = e.pid.map_or("?".into(), |p| p.to_string());
                write!(
                    out,
                    "    {role} #{} pid {pid} {}",
                    e.entry,
                    process_name(e.process)
                )?;
                if let (Some(cursor), Some(lag)) = (e.cursor, e.lag) {
                    write!(out, ", cursor {cursor}, lag {lag}")?;
                }
                if e.evicted {
                    write!(out, ", evicted")?;
                }
                if e.attaching {
                    write!(out, ", attaching")?;
                }
                writeln!(out)?;
            }
        }
    }
    for e in &s.corrupt {
        writeln!(out, "  corrupt: {e}")?;
    }
    Ok(())
}

/// How `tail` prints a message.
#[derive(Clone, Debug)]
pub enum Format {
    /// Text if the bytes are printable UTF-8, else hex.
    Auto,
    Text,
    Hex,
    /// Fields of a `#[repr(C)]` layout, in order.
    Decode(Vec<Field>),
}

/// A primitive field of a decoded layout.
#[derive(Clone, Copy, Debug)]
pub enum Field {
    U(usize),
    I(usize),
    F(usize),
}

impl Field {
    fn size(self) -> usize {
        match self {
            Field::U(n) | Field::I(n) | Field::F(n) => n,
        }
    }
}

/// Parses a layout such as `u64,f64,u32` (C alignment: each field at a
/// multiple of its size).
pub fn parse_layout(text: &str) -> std::result::Result<Vec<Field>, String> {
    text.split(',')
        .map(|name| match name.trim() {
            "u8" => Ok(Field::U(1)),
            "u16" => Ok(Field::U(2)),
            "u32" => Ok(Field::U(4)),
            "u64" => Ok(Field::U(8)),
            "i8" => Ok(Field::I(1)),
            "i16" => Ok(Field::I(2)),
            "i32" => Ok(Field::I(4)),
            "i64" => Ok(Field::I(8)),
            "f32" => Ok(Field::F(4)),
            "f64" => Ok(Field::F(8)),
            other => Err(format!(
                "unknown field type {other:?} in --decode {text:?}: use u8..u64, i8..i64, f32, f64, comma-separated"
            )),
        })
        .collect()
}

fn decode(bytes: &[u8], layout: &[Field]) -> String {
    let mut at = 0usize;
    let mut fields = Vec::with_capacity(layout.len());
    for &field in layout {
        let size = field.size();
        at = at.next_multiple_of(size);
        let Some(raw) = bytes.get(at..at + size) else {
            fields.push(format!("<{} bytes: too short for the layout>", bytes.len()));
            break;
        };
        let mut word = [0u8; 8];
        word[..size].copy_from_slice(raw);
        let unsigned = u64::from_ne_bytes(word);
        fields.push(match field {
            Field::U(_) => unsigned.to_string(),
            Field::I(n) => {
                let shift = 64 - 8 * n as u32;
                (((unsigned << shift) as i64) >> shift).to_string()
            }
            Field::F(4) => f32::from_bits(unsigned as u32).to_string(),
            Field::F(_) => f64::from_bits(unsigned).to_string(),
        });
        at += size;
    }
    // Bytes past the layout (beyond its own end padding): said, not dropped.
    let align = layout.iter().map(|f| f.size()).max().unwrap_or(1);
    let past = bytes.len().saturating_sub(at.next_multiple_of(align));
    if past > 0 && fields.len() == layout.len() {
        fields.push(format!("<{past} more bytes past the layout>"));
    }
    fields.join(" ")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn printable(bytes: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(bytes).ok()?;
    (!text.chars().any(|c| c.is_control() && c != '\t')).then_some(text)
}

fn render(bytes: &[u8], format: &Format) -> String {
    match format {
        Format::Hex => hex(bytes),
        Format::Text => String::from_utf8_lossy(bytes).into_owned(),
        Format::Auto => printable(bytes).map_or_else(|| hex(bytes), str::to_owned),
        Format::Decode(layout) => decode(bytes, layout),
    }
}

/// `shmbus tail`'s arguments.
#[derive(clap::Args)]
pub struct TailArgs {
    /// The bus name.
    bus: String,
    /// The topic name.
    topic: String,
    #[command(flatten)]
    dir: PipeDir,
    /// Print the last N messages the topic holds, then exit (unless -f).
    #[arg(short = 'n', long = "lines")]
    lines: Option<u64>,
    /// With -n: go on following after them.
    #[arg(short, long, requires = "lines")]
    follow: bool,
    /// Start at the oldest message the topic holds instead of the next.
    #[arg(long, conflicts_with = "lines")]
    from_oldest: bool,
    /// Print messages as hex (default: text if printable, else hex).
    #[arg(long, conflicts_with_all = ["text", "decode"])]
    hex: bool,
    /// Print messages as text (invalid UTF-8 shown as U+FFFD).
    #[arg(long, conflicts_with = "decode")]
    text: bool,
    /// Decode each message as a #[repr(C)] struct of these fields, e.g.
    /// `u64,f64,u32` (u8..u64, i8..i64, f32, f64).
    #[arg(long, value_name = "LAYOUT")]
    decode: Option<String>,
}

impl TailArgs {
    fn format(&self) -> std::result::Result<Format, String> {
        Ok(match (self.hex, self.text, &self.decode) {
            (true, _, _) => Format::Hex,
            (_, true, _) => Format::Text,
            (_, _, Some(layout)) => Format::Decode(parse_layout(layout)?),
            _ => Format::Auto,
        })
    }
}

/// `shmbus tail`: one line per message, `SEQ CONTENT`, as an observer (it
/// registers nothing and never holds a lossless publisher back); the
/// messages it lost to the publisher lapping it are said on stderr.
/// Following ends when the publisher is gone and everything is read.
pub fn tail(opts: &TailArgs) -> Result<()> {
    let format = opts.format()?;
    // Without -n, always follow.
    let follow = opts.follow || opts.lines.is_none();
    let bus = Bus::open_existing_in(&opts.bus, &opts.dir.path())?;
    let start = if opts.lines.is_some() || opts.from_oldest {
        StartAt::Oldest
    } else {
        StartAt::Next
    };
    let mut rx = bus
        .topic(&opts.topic)
        .start_at(start)
        .wait(WaitStrategy::Block)
        .observer()?;
    // Where the last `n` messages begin, and where they end.
    let (first, end) = match opts.lines {
        Some(n) => {
            let published = bus
                .topics()?
                .into_iter()
                .filter_map(|t| t.ok())
                .find(|t| t.name == opts.topic)
                .map_or(0, |t| t.published);
            (published.saturating_sub(n), Some(published))
        }
        None => (0, None),
    };
    let mut out = std::io::stdout().lock();
    let (mut lost, mut read) = (0u64, 0u64);
    // Following a topic that has no publisher yet waits for one: said once,
    // after a second with nothing read (it waited without a word).
    let mut first_wait = follow;
    loop {
        if !follow && end.is_some_and(|end| rx.next_seq() >= end) {
            break;
        }
        // A receive that succeeds reads message `next_seq`.
        let seq = rx.next_seq();
        let got = if std::mem::take(&mut first_wait) {
            match rx.recv_bytes_timeout(std::time::Duration::from_secs(1)) {
                Err(RecvTimeoutError::Timeout) => {
                    let publisher = bus
                        .topics()?
                        .into_iter()
                        .filter_map(|t| t.ok())
                        .find(|t| t.name == opts.topic)
                        .and_then(|t| t.publisher_pid);
                    if publisher.is_none() {
                        eprintln!(
                            "shmbus tail: {}/{} has no publisher yet; waiting for one \
                             (Ctrl-C stops)",
                            opts.bus, opts.topic
                        );
                    }
                    continue;
                }
                got => got.map_err(|e| {
                    Some(match e {
                        RecvTimeoutError::Lagged(n) => RecvError::Lagged(n),
                        RecvTimeoutError::Disconnected => RecvError::Disconnected,
                        RecvTimeoutError::Corrupt { seq } => RecvError::Corrupt { seq },
                        _ => RecvError::Evicted,
                    })
                }),
            }
        } else if follow {
            rx.recv_bytes().map_err(Some)
        } else {
            rx.try_recv_bytes().map_err(|e| match e {
                TryRecvError::Empty => None,
                TryRecvError::Lagged(n) => Some(RecvError::Lagged(n)),
                TryRecvError::Disconnected => Some(RecvError::Disconnected),
                TryRecvError::Corrupt { seq } => Some(RecvError::Corrupt { seq }),
                _ => Some(RecvError::Evicted),
            })
        };
        match got {
            Ok(bytes) => {
                read += 1;
                if seq >= first {
                    writeln!(out, "{seq} {}", render(bytes, &format))?;
                    out.flush()?;
                }
            }
            // Nothing yet below `end`: a message being written right now.
            Err(None) => std::thread::yield_now(),
            Err(Some(RecvError::Lagged(n))) => {
                lost += n;
                eprintln!(
                    "shmbus tail: lost {n} messages (overwritten before this observer read them)"
                );
            }
            Err(Some(RecvError::Disconnected)) => {
                if read == 0 && lost == 0 {
                    // Said, since it ends at once and prints nothing.
                    eprintln!(
                        "shmbus tail: {}/{} has no publisher (it left, or none came yet): \
                         nothing to follow",
                        opts.bus, opts.topic
                    );
                }
                break;
            }
            Err(Some(RecvError::Corrupt { seq })) => {
                eprintln!("shmbus tail: message {seq} is corrupt in the segment; skipped");
            }
            Err(Some(e)) => return Err(e.into()),
        }
    }
    if lost > 0 {
        eprintln!("shmbus tail: lost {lost} messages in all");
    }
    Ok(())
}

/// `shmbus pub`'s arguments.
#[derive(clap::Args)]
pub struct PubArgs {
    /// The bus name.
    bus: String,
    /// The topic name.
    topic: String,
    #[command(flatten)]
    dir: PipeDir,
    /// Each line is hex digits (whitespace ignored), not the message itself.
    #[arg(long)]
    hex: bool,
    /// Slot size if the topic is created (default 256).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(shmbus::MAX_SLOT_SIZE)))]
    slot_size: Option<u32>,
    /// Capacity if the topic is created (default 1024; a power of two).
    #[arg(long, value_parser = parse_capacity)]
    capacity: Option<u32>,
    /// Say nothing on stderr when done.
    #[arg(long)]
    quiet: bool,
}

/// Parses a line of hex digits (whitespace between them ignored).
fn parse_hex(line: &[u8], number: usize) -> std::result::Result<Vec<u8>, String> {
    let digits: Vec<u8> = line
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let bad = || format!("line {number} is not hex: write pairs of 0-9 a-f digits, or drop --hex");
    if digits.len() % 2 != 0 {
        return Err(bad());
    }
    digits
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).map_err(|_| bad())?;
            u8::from_str_radix(text, 16).map_err(|_| bad())
        })
        .collect()
}

/// How long `pub` waits for room before it says who holds it back.
const HELD_BACK_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Which lossless subscriber of `topic` holds a publisher back: the one
/// furthest behind, where the bus says.
fn held_back_by(bus: &Bus, topic: &str) -> String {
    let slowest = bus
        .topics()
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .find(|t| t.name == topic)
        .and_then(|t| {
            t.subscribers
                .into_iter()
                .filter(|s| s.lag.is_some())
                .max_by_key(|s| s.lag)
        });
    match slowest {
        Some(s) => format!(
            "lossless subscriber {} ({}) is {} messages behind and holds the topic back; \
             waiting for it (`shmbus stat {}` shows them all)",
            s.entry,
            s.pid
                .map_or_else(|| "pid unknown".to_owned(), |pid| format!("pid {pid}")),
            s.lag.unwrap_or(0),
            bus.name()
        ),
        None => format!(
            "a lossless subscriber holds the topic back; waiting for it (`shmbus stat {}`)",
            bus.name()
        ),
    }
}

/// `--capacity`: a power of two no ring is too small or too large for.
fn parse_capacity(arg: &str) -> std::result::Result<u32, String> {
    arg.parse::<u32>()
        .ok()
        .filter(|n| n.is_power_of_two() && *n <= shmbus::MAX_CAPACITY)
        .ok_or_else(|| format!("must be a power of two from 1 to {}", shmbus::MAX_CAPACITY))
}

/// `shmbus pub`: publishes each line of stdin (without its newline) as one
/// byte message, in order, on a bus that exists (it never creates one);
/// the topic is joined, or created as a byte topic. Stops at the first line
/// that cannot be sent, saying which.
pub fn publish(opts: &PubArgs) -> Result<()> {
    let bus = Bus::open_existing_in(&opts.bus, &opts.dir.path())?;
    let mut topic = bus.topic(&opts.topic);
    if let Some(slot) = opts.slot_size {
        topic = topic.slot_size(slot);
    }
    if let Some(capacity) = opts.capacity {
        topic = topic.capacity(capacity);
    }
    let mut tx = topic.publisher_bytes()?;
    let (mut first, mut count, mut said_held) = (None, 0u64, false);
    for (index, line) in std::io::stdin().lock().split(b'\n').enumerate() {
        let line = line?;
        let message = if opts.hex {
            parse_hex(&line, index + 1)?
        } else {
            line
        };
        // A lossless topic whose slowest subscriber does not read holds
        // a send for ever: after a second, say so (once), then wait on.
        let seq = match tx.send_bytes_timeout(&message, HELD_BACK_AFTER) {
            Err(shmbus::SendTimeoutError::Timeout) => {
                if !std::mem::replace(&mut said_held, true) && !opts.quiet {
                    eprintln!(
                        "shmbus pub: line {} waits for room: {}",
                        index + 1,
                        held_back_by(&bus, &opts.topic)
                    );
                }
                tx.send_bytes(&message).map_err(|e| e.to_string())
            }
            other => other.map_err(|e| e.to_string()),
        }
        .map_err(|e| format!("line {}: {e}", index + 1))?;
        first.get_or_insert(seq);
        count += 1;
    }
    if !opts.quiet {
        match first {
            Some(first) => eprintln!(
                "shmbus pub: published {count} messages on {}/{} (seq {first} to {})",
                opts.bus,
                opts.topic,
                first + count - 1
            ),
            None => eprintln!("shmbus pub: stdin was empty; nothing published"),
        }
    }
    Ok(())
}

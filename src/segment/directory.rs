//! Topics in a segment: finding or creating a topic's directory entry and
//! its ring region, and validating both.
//!
//! The lock-free create-or-join is [`crate::ring::directory`]; this module
//! supplies what it needs from the segment: entry contents, arena
//! allocation, /dev/shm reservation, and process liveness.

use std::time::{Duration, Instant};

use zerocopy::IntoBytes;

use super::layout::{
    self, entry_config_offset, entry_state_offset, EntryConfig, FLAG_LOSSLESS, FLAG_TIME_MONOTONIC,
    FLAG_TIME_REALTIME, FLAG_VARIABLE, MAX_ARENA, MAX_ATTACH, MIN_ARENA,
    MAX_CAPACITY, MAX_SLOT_SIZE,
};
use super::region::Shape;
use super::{validate_name, Segment};
use crate::error::Error;
use crate::ring::directory::{self, DirError, Entries, EntryState, Found};
use crate::ring::queue::UNIT_BYTES;
use crate::ring::{Liveness, Owner};
use crate::sync::Ordering;

/// What a topic's messages are, so that a subscriber of the wrong type is
/// refused: size, alignment and a hash of the type's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeFingerprint {
    pub size: u32,
    pub align: u32,
    pub hash: u64,
    pub name: std::borrow::Cow<'static, str>,
}

impl TypeFingerprint {
    /// `T`, named by `std::any::type_name` (which differs between builds
    /// of different source: see [`named`](Self::named)).
    pub fn of<T>() -> Self {
        Self::with_name::<T>(core::any::type_name::<T>().into())
    }

    /// `T` under a name its programs agree on (`TopicBuilder::type_name`),
    /// so that binaries built separately can share a typed topic.
    pub fn named<T>(name: &str) -> Self {
        Self::with_name::<T>(name.to_owned().into())
    }

    fn with_name<T>(name: std::borrow::Cow<'static, str>) -> Self {
        TypeFingerprint {
            size: core::mem::size_of::<T>() as u32,
            align: core::mem::align_of::<T>() as u32,
            hash: directory::name_hash(name.as_bytes()),
            name,
        }
    }
}

/// A topic as asked for by a publisher or subscriber. `None` fields accept
/// whatever an existing topic has, and take the default on creation.
#[derive(Debug, Clone)]
pub struct TopicRequest<'a> {
    pub name: &'a str,
    pub kind: u32,
    pub capacity: Option<u32>,
    pub slot_size: Option<u32>,
    pub lossless: Option<bool>,
    /// Variable-size messages (`slot_size` is then half the arena).
    pub variable: Option<bool>,
    /// Publish timestamps: `Some(None)` none, `Some(Some(clock))` that
    /// clock, `None` whatever the topic has (none on creation).
    pub clock: Option<Option<crate::clock::Clock>>,
    pub max_writers: Option<u32>,
    pub max_readers: Option<u32>,
    pub default_capacity: u32,
    pub default_slot_size: u32,
    pub default_max_writers: u32,
    pub default_max_readers: u32,
    pub fingerprint: TypeFingerprint,
}

impl TopicRequest<'_> {
    /// The shape a topic created for this request gets.
    pub fn shape(&self) -> Shape {
        Shape {
            kind: self.kind,
            flags: if self.lossless == Some(true) {
                FLAG_LOSSLESS
            } else {
                0
            } | if self.variable == Some(true) {
                FLAG_VARIABLE
            } else {
                0
            } | self.clock.flatten().map_or(0, crate::clock::Clock::flag),
            capacity: self.capacity.unwrap_or(self.default_capacity),
            slot_size: self.slot_size.unwrap_or(self.default_slot_size),
            max_writers: self.max_writers.unwrap_or(self.default_max_writers),
            max_readers: self.max_readers.unwrap_or(self.default_max_readers),
        }
    }
}

/// A validated topic entry.
#[derive(Debug, Clone, Copy)]
pub struct Topic {
    pub index: usize,
    pub config: EntryConfig,
    pub created: bool,
}

/// Finds the topic `req.name`, or creates it. Fails if the existing topic
/// has another kind, type or explicitly requested shape.
pub fn find_or_create(
    seg: &Segment,
    req: &TopicRequest<'_>,
    timeout: Duration,
) -> Result<Topic, Error> {
    validate_name("topic", req.name)?;
    let header = seg.header();
    let states = entry_states(seg)?;
    let mut dir = SegmentDirectory {
        seg,
        states,
        req,
        deadline: Instant::now() + timeout,
        timeout,
        found: None,
    };
    let start = directory::name_hash(req.name.as_bytes()) as usize;
    let me = seg.me()?;
    match directory::find_or_create(&mut dir, start, me) {
        Ok(Found::Existing(index)) => Ok(Topic {
            index,
            config: dir.found.expect("matches() stored the entry it matched"),
            created: false,
        }),
        Ok(Found::Created(index)) => Ok(Topic {
            index,
            config: dir.found.expect("init() stored the entry it wrote"),
            created: true,
        }),
        Err(DirError::Full) => Err(Error::DirectoryFull {
            bus: seg.bus().to_owned(),
            capacity: header.dir_entries,
        }),
        Err(DirError::Corrupt { index, word }) => Err(corrupt_state(seg, index, word)),
        Err(DirError::Callback(err)) => Err(err),
    }
}

/// Reads and validates every ready topic entry (for listing): one result
/// per entry that is ready or corrupt, so one bad entry does not hide the
/// others. Entries being created right now are left out.
pub fn list(seg: &Segment) -> Result<Vec<Result<Topic, Error>>, Error> {
    let states = entry_states(seg)?;
    let mut topics = Vec::new();
    for (index, state) in states.iter().enumerate() {
        match state.status() {
            directory::EntryStatus::Ready => {
                topics.push(read_entry(seg, index).map(|config| Topic {
                    index,
                    config,
                    created: false,
                }))
            }
            directory::EntryStatus::Invalid(word) => {
                topics.push(Err(corrupt_state(seg, index, word)))
            }
            directory::EntryStatus::Empty | directory::EntryStatus::Claimed(_) => {}
        }
    }
    Ok(topics)
}

/// The state word of every directory entry, each at the head of its entry
/// (see [`layout`]).
fn entry_states(seg: &Segment) -> Result<Vec<&EntryState>, Error> {
    (0..seg.header().dir_entries as usize)
        .map(|index| {
            seg.view::<EntryState>(entry_state_offset(index))
                .map_err(|what| corrupt(seg, format!("topic entry {index}: {what}")))
        })
        .collect()
}

fn corrupt_state(seg: &Segment, index: usize, word: u64) -> Error {
    let what = if word == 0 {
        format!(
            "topic entry {index} is marked empty but holds a topic's configuration: its state \
             word was overwritten (creating a topic there would split the existing one)"
        )
    } else {
        format!(
            "topic entry {index} has state word {word:#018x}, which is neither empty, ready \
             nor a creator's claim"
        )
    };
    corrupt(seg, what)
}

fn corrupt(seg: &Segment, what: String) -> Error {
    Error::Corrupt {
        bus: seg.bus().to_owned(),
        what,
    }
}

/// Reads entry `index` and checks that every field is in range, so the ring
/// region it names lies inside the arena and has the shape it claims.
fn read_entry(seg: &Segment, index: usize) -> Result<EntryConfig, Error> {
    // SAFETY: callers read only entries whose state they saw READY with
    // Acquire; the config was written before that Release store and never
    // changes after it.
    let config: EntryConfig =
        unsafe { seg.read(entry_config_offset(index)) }.map_err(|what| corrupt(seg, what))?;
    check_entry(seg, &config)
        .map_err(|what| corrupt(seg, format!("topic entry {index}: {what}")))?;
    Ok(config)
}

fn check_entry(seg: &Segment, c: &EntryConfig) -> Result<(), String> {
    let name =
        entry_name(c).ok_or_else(|| format!("name length {} is out of range", c.name_len))?;
    validate_name("topic", name).map_err(|e| e.to_string())?;
    if c.kind != layout::KIND_BROADCAST && c.kind != layout::KIND_QUEUE {
        return Err(format!("unknown topic kind {}", c.kind));
    }
    let clocks = FLAG_TIME_REALTIME | FLAG_TIME_MONOTONIC;
    if c.flags & !(FLAG_LOSSLESS | FLAG_VARIABLE | clocks) != 0
        || (c.flags & !FLAG_VARIABLE != 0 && c.kind != layout::KIND_BROADCAST)
        || c.flags & clocks == clocks
    {
        return Err(format!(
            "unknown flags {:#x} for topic kind {}",
            c.flags, c.kind
        ));
    }
    if !c.capacity.is_power_of_two() || c.capacity > MAX_CAPACITY {
        return Err(format!(
            "capacity {} is not a power of two up to {MAX_CAPACITY}",
            c.capacity
        ));
    }
    if c.kind == layout::KIND_QUEUE && c.capacity < 2 {
        return Err(format!("work-queue capacity {} is under 2", c.capacity));
    }
    let shape = Shape::of(c);
    if shape.variable() {
        let arena = shape.arena_bytes();
        if !arena.is_power_of_two() || !(MIN_ARENA..=MAX_ARENA).contains(&arena) {
            return Err(format!(
                "arena of {arena} bytes is not a power of two from {MIN_ARENA} to {MAX_ARENA}"
            ));
        }
        if c.kind == layout::KIND_QUEUE && u64::from(c.capacity) != arena / UNIT_BYTES as u64 {
            return Err(format!(
                "variable-size work queue of {} units does not match its arena of {arena} bytes",
                c.capacity
            ));
        }
    } else if c.slot_size > MAX_SLOT_SIZE {
        return Err(format!("slot size {} is over {MAX_SLOT_SIZE}", c.slot_size));
    }
    let tables_needed = match c.kind {
        layout::KIND_QUEUE => (1, 1),
        _ if shape.lossless() => (0, 1),
        _ => (0, 0),
    };
    let tables_ok = |n: u32, min: u32| n >= min && n <= MAX_ATTACH;
    if !tables_ok(c.max_writers, tables_needed.0) || !tables_ok(c.max_readers, tables_needed.1) {
        return Err(format!(
            "attach tables of {} writers and {} readers are out of range for this kind (at most {MAX_ATTACH})",
            c.max_writers, c.max_readers
        ));
    }
    if shape.layout().map(|l| l.len) != Some(c.region_len) {
        return Err(format!(
            "ring region of {} bytes does not match capacity {} × slot size {} and its tables",
            c.region_len, c.capacity, c.slot_size
        ));
    }
    let h = seg.header();
    // Only the part of the arena handed out so far holds rings (and was
    // reserved in /dev/shm): a region past it is corrupt, not a place to
    // touch. The bump pointer is read from the segment too: bounded first.
    let used = seg.ctrl().arena_used.load(Ordering::Relaxed).min(h.arena_size);
    let arena_end = h.arena_offset + used;
    let in_arena = c.region_offset >= h.arena_offset
        && c.region_offset % layout::REGION_ALIGN == 0
        && c.region_offset
            .checked_add(c.region_len)
            .is_some_and(|end| end <= arena_end);
    if !in_arena {
        return Err(format!(
            "ring region at offset {} ({} bytes) is not an aligned part of the arena handed out so far ({}..{arena_end})",
            c.region_offset, c.region_len, h.arena_offset
        ));
    }
    Ok(())
}

pub fn entry_name(c: &EntryConfig) -> Option<&str> {
    let bytes = c.name.get(..c.name_len as usize)?;
    core::str::from_utf8(bytes).ok()
}

fn kind_name(kind: u32, lossless: bool, variable: bool) -> &'static str {
    match (kind, lossless, variable) {
        (layout::KIND_QUEUE, _, true) => "variable-size work-queue topic",
        (layout::KIND_QUEUE, _, _) => "work-queue topic",
        (_, true, true) => "lossless variable-size broadcast topic",
        (_, false, true) => "variable-size broadcast topic",
        (_, true, false) => "lossless broadcast topic",
        _ => "broadcast topic",
    }
}

/// Whether a topic's messages carry timestamps, and from which clock.
fn describe_clock(clock: Option<Option<crate::clock::Clock>>) -> String {
    match clock {
        None | Some(None) => String::new(),
        Some(Some(clock)) => format!(", timestamped ({clock:?})"),
    }
}

/// The size of a topic's messages, in words: slots, or an arena.
fn describe_size(slot_size: Option<u32>, variable: bool) -> String {
    match (slot_size, variable) {
        (Some(slot), true) => format!(
            "a {}-byte arena (messages up to {slot} bytes)",
            u64::from(slot) * 2
        ),
        (Some(slot), false) => format!("{slot}-byte slots"),
        // A variable-size request always names its arena.
        (None, _) => "any slot size".to_owned(),
    }
}

/// The name of a topic's message type, as its entry holds it (up to the
/// first NUL).
pub fn type_name(c: &EntryConfig) -> std::borrow::Cow<'_, str> {
    let len = c
        .type_name
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(c.type_name.len());
    String::from_utf8_lossy(&c.type_name[..len])
}

/// A human description of a topic's config, for mismatch errors.
pub fn describe(c: &EntryConfig) -> String {
    let type_name = type_name(c);
    let shape = Shape::of(c);
    format!(
        "a {} of `{type_name}` (size {}, align {}) with {}{}, capacity {}{}",
        kind_name(c.kind, shape.lossless(), shape.variable()),
        c.type_size,
        c.type_align,
        describe_size(Some(c.slot_size), shape.variable()),
        describe_clock(Some(shape.clock())),
        c.capacity,
        describe_tables(
            c.kind,
            shape.lossless(),
            Some(c.max_writers),
            Some(c.max_readers)
        ),
    )
}

/// What differs between an existing topic and a request it does not
/// match, each with what the caller can do about it, so that the error's
/// first words name the problem (the full descriptions follow it).
fn differences(c: &EntryConfig, req: &TopicRequest<'_>) -> String {
    let shape = Shape::of(c);
    let mut out: Vec<String> = Vec::new();
    if c.kind != req.kind {
        let (is, asked) = match c.kind {
            layout::KIND_QUEUE => ("a work queue", "a broadcast topic"),
            _ => ("a broadcast topic", "a work queue"),
        };
        out.push(format!(
            "it is {is}, not {asked}: open it with the calls of its kind \
             (`publisher`/`subscriber` for broadcast, `producer`/`consumer` for work queues), \
             or use another topic name"
        ));
        return out.join("; ");
    }
    let f = &req.fingerprint;
    let bytes = crate::topic::bytes_fingerprint();
    let typed = *f != bytes;
    let topic_typed = !(c.type_size == bytes.size && c.type_hash == bytes.hash);
    let queue = c.kind == layout::KIND_QUEUE;
    let (send, recv) = if queue {
        ("producer", "consumer")
    } else {
        ("publisher", "subscriber")
    };
    let type_name = type_name(c);
    match (topic_typed, typed) {
        // Byte messages asked of a typed topic, or the reverse: no type
        // name bridges the two.
        (false, true) => out.push(format!(
            "it is a topic of byte messages{}, not of `{}`: open it with `{send}_bytes` / \
             `{recv}_bytes`",
            if shape.variable() { " (variable-size)" } else { "" },
            f.name
        )),
        (true, false) => out.push(format!(
            "its messages are `{type_name}` (size {}, align {}), not bytes: open it with the \
             typed `{send}::<T>` / `{recv}::<T>` of that type",
            c.type_size, c.type_align
        )),
        _ if c.type_size != f.size || c.type_align != f.align || c.type_hash != f.hash => {
            out.push(format!(
                "its messages are `{type_name}` (size {}, align {}), not `{}` (size {}, align \
                 {}): every process must use the same message type under the same name \
                 (`type_name(..)` names it alike in binaries built apart)",
                c.type_size, c.type_align, f.name, f.size, f.align
            ))
        }
        _ => {}
    }
    // Typed requests ask for fixed slots of their type's size: the type's
    // line above says all there is.
    let variable_differs = !typed && req.variable.is_some_and(|v| v != shape.variable());
    if variable_differs {
        out.push(if shape.variable() {
            format!(
                "its messages are variable-size (a {}-byte arena), not in fixed slots: leave \
                 out `.slot_size(..)` to join it as it is",
                shape.arena_bytes()
            )
        } else {
            format!(
                "its messages take fixed {}-byte slots, not a variable-size arena: leave out \
                 `.variable(..)` to join it as it is",
                c.slot_size
            )
        });
    }
    let slot_differs = !typed && req.slot_size.is_some_and(|s| s != c.slot_size);
    if slot_differs && !variable_differs {
        out.push(if shape.variable() {
            format!(
                "its arena is {} bytes, not {}: ask for `.variable({})` or leave it out",
                shape.arena_bytes(),
                u64::from(req.slot_size.unwrap_or(0)) * 2,
                shape.arena_bytes()
            )
        } else {
            format!(
                "its slots are {} bytes, not {}: leave out `.slot_size(..)` to join it as it is",
                c.slot_size,
                req.slot_size.unwrap_or(0)
            )
        });
    }
    // A variable-size work queue's capacity is its arena's 64-byte units,
    // and a variable-size request's is worked out from the arena asked
    // for: where the arena differs, its line says it.
    let arena_said = queue
        && (shape.variable() || req.variable == Some(true))
        && (slot_differs || variable_differs);
    if let Some(cap) = req.capacity.filter(|&cap| cap != c.capacity && !arena_said) {
        out.push(if queue && shape.variable() {
            format!(
                "its capacity is {} units of {} bytes (its {}-byte arena), not {cap}: leave out \
                 `.capacity(..)` to join it as it is",
                c.capacity,
                UNIT_BYTES,
                shape.arena_bytes()
            )
        } else {
            format!(
                "its capacity is {} messages, not {cap}: leave out `.capacity(..)` to join it as \
                 it is",
                c.capacity
            )
        });
    }
    match req.lossless {
        Some(true) if !shape.lossless() => out.push(
            "it is in overwrite mode, not lossless: leave out `.lossless(..)` to join it as it \
             is (its subscribers can be lapped, and are told how many messages they lost)"
                .to_owned(),
        ),
        Some(false) if shape.lossless() => {
            out.push("it is lossless, not in overwrite mode".to_owned())
        }
        _ => {}
    }
    let lossless_both = req.lossless == Some(true) && shape.lossless();
    let tables = match c.kind {
        layout::KIND_QUEUE => [
            (req.max_writers, c.max_writers, "producers", "max_producers"),
            (req.max_readers, c.max_readers, "consumers", "max_consumers"),
        ]
        .to_vec(),
        _ if lossless_both => {
            [(req.max_readers, c.max_readers, "lossless subscribers", "lossless")].to_vec()
        }
        _ => Vec::new(),
    };
    for (asked, has, who, call) in tables {
        if let Some(asked) = asked.filter(|&n| n != has) {
            out.push(format!(
                "it takes up to {has} {who}, not {asked}: ask for `.{call}({has})` or leave it out"
            ));
        }
    }
    match req.clock {
        Some(asked) if asked != shape.clock() => out.push(match (shape.clock(), asked) {
            (None, _) => "its messages carry no timestamps: leave out `.timestamps(..)` to join \
                          it as it is"
                .to_owned(),
            (Some(has), None) => format!("its messages are timestamped ({has:?})"),
            (Some(has), Some(asked)) => format!(
                "its timestamps are read from the {has:?} clock, not {asked:?}: ask for \
                 `.timestamps(Clock::{has:?})` or leave it out"
            ),
        }),
        _ => {}
    }
    if out.is_empty() {
        // Only an inner field no builder call sets (a corrupt entry, or a
        // request made from another entry's config).
        out.push("its configuration differs from the one asked for".to_owned());
    }
    out.join("; ")
}

fn describe_tables(
    kind: u32,
    lossless: bool,
    writers: Option<u32>,
    readers: Option<u32>,
) -> String {
    let n = |v: Option<u32>| v.map_or("any".to_owned(), |v| v.to_string());
    match kind {
        layout::KIND_QUEUE => format!(
            ", up to {} producers and {} consumers",
            n(writers),
            n(readers)
        ),
        _ if lossless => format!(", up to {} subscribers", n(readers)),
        _ => String::new(),
    }
}

fn describe_request(req: &TopicRequest<'_>) -> String {
    let shape = |v: Option<u32>| v.map_or("any".to_owned(), |v| v.to_string());
    let variable = req.variable == Some(true);
    let kind = match (req.kind, req.lossless) {
        (layout::KIND_BROADCAST, None) if variable => {
            "variable-size broadcast topic (lossless or not)"
        }
        (layout::KIND_BROADCAST, None) => "broadcast topic (lossless or not)",
        (kind, lossless) => kind_name(kind, lossless == Some(true), variable),
    };
    format!(
        "a {kind} of `{}` (size {}, align {}) with {}{}, capacity {}{}",
        req.fingerprint.name,
        req.fingerprint.size,
        req.fingerprint.align,
        describe_size(req.slot_size, variable),
        describe_clock(req.clock),
        shape(req.capacity),
        describe_tables(
            req.kind,
            req.lossless == Some(true),
            req.max_writers,
            req.max_readers
        ),
    )
}

struct SegmentDirectory<'a, 'r> {
    seg: &'a Segment,
    states: Vec<&'a EntryState>,
    req: &'a TopicRequest<'r>,
    deadline: Instant,
    timeout: Duration,
    found: Option<EntryConfig>,
}

impl SegmentDirectory<'_, '_> {
    fn compatible(&self, c: &EntryConfig) -> bool {
        let req = self.req;
        c.kind == req.kind
            && c.type_size == req.fingerprint.size
            && c.type_align == req.fingerprint.align
            && c.type_hash == req.fingerprint.hash
            && req.capacity.is_none_or(|cap| cap == c.capacity)
            && req.slot_size.is_none_or(|slot| slot == c.slot_size)
            && req.lossless.is_none_or(|l| l == Shape::of(c).lossless())
            && req.variable.is_none_or(|v| v == Shape::of(c).variable())
            && req.clock.is_none_or(|clock| clock == Shape::of(c).clock())
            && req.max_writers.is_none_or(|n| n == c.max_writers)
            && req.max_readers.is_none_or(|n| n == c.max_readers)
    }

    /// Bump-allocates `len` bytes of arena; returns the segment offset.
    /// The bump pointer is read from the segment, so it is checked before
    /// any arithmetic: a value past the arena is corruption, not a place
    /// to put a ring.
    fn allocate(&self, len: u64) -> Result<u64, Error> {
        let h = self.seg.header();
        let used = &self.seg.ctrl().arena_used;
        let mut current = used.load(Ordering::Relaxed);
        loop {
            let start = current
                .checked_next_multiple_of(layout::REGION_ALIGN)
                .filter(|&start| current <= h.arena_size && start <= h.arena_size)
                .ok_or_else(|| {
                    corrupt(
                        self.seg,
                        format!(
                            "the arena's bump pointer says {current} bytes are used, \
                             but the arena holds {}",
                            h.arena_size
                        ),
                    )
                })?;
            let end = start.checked_add(len).filter(|&end| end <= h.arena_size);
            let Some(end) = end else {
                return Err(Error::ArenaFull {
                    bus: self.seg.bus().to_owned(),
                    topic: self.req.name.to_owned(),
                    needed: len,
                    free: h.arena_size - start,
                });
            };
            match used.compare_exchange_weak(current, end, Ordering::Relaxed, Ordering::Relaxed) {
                // `start <= arena_size` and the header was validated on open
                // (`arena_offset + arena_size` is the segment size).
                Ok(_) => {
                    let offset = h.arena_offset + start;
                    self.check_no_overlap(offset, len)?;
                    return Ok(offset);
                }
                Err(seen) => current = seen,
            }
        }
    }
}

impl SegmentDirectory<'_, '_> {
    /// Fails if `offset..offset + len`, just handed out, overlaps the ring
    /// of a topic that exists: only a bump pointer set back (corruption)
    /// does that, and a topic created there would share another's ring.
    fn check_no_overlap(&self, offset: u64, len: u64) -> Result<(), Error> {
        let end = offset.saturating_add(len);
        for (index, state) in self.states.iter().enumerate() {
            if state.status() != directory::EntryStatus::Ready {
                continue;
            }
            // SAFETY: the entry is ready (Acquire above): its config was
            // written before, and never changes.
            let Ok(config) = (unsafe { self.seg.read::<EntryConfig>(entry_config_offset(index)) })
            else {
                continue;
            };
            let theirs = config.region_offset..config.region_offset.saturating_add(config.region_len);
            if offset < theirs.end && theirs.start < end {
                return Err(corrupt(
                    self.seg,
                    format!(
                        "the arena's bump pointer handed out {offset}..{end}, which holds the \
                         ring of topic entry {index}: it was set back"
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl Entries for SegmentDirectory<'_, '_> {
    type Error = Error;

    fn entries(&self) -> usize {
        self.states.len()
    }

    fn state(&self, index: usize) -> &EntryState {
        self.states[index]
    }

    fn matches(&mut self, index: usize) -> Result<bool, Error> {
        let config = read_entry(self.seg, index)?;
        if entry_name(&config) != Some(self.req.name) {
            return Ok(false);
        }
        if !self.compatible(&config) {
            return Err(Error::TopicMismatch {
                topic: self.req.name.to_owned(),
                differs: differences(&config, self.req),
                existing: describe(&config),
                requested: describe_request(self.req),
            });
        }
        self.found = Some(config);
        Ok(true)
    }

    fn init(&mut self, index: usize) -> Result<(), Error> {
        let req = self.req;
        let shape = req.shape();
        let region_len = shape
            .layout()
            .map(|l| l.len)
            .ok_or_else(|| Error::InvalidOptions {
                topic: req.name.to_owned(),
                why: format!(
                    "capacity {} × slot size {} overflows",
                    shape.capacity, shape.slot_size
                ),
            })?;
        let region_offset = self.allocate(region_len)?;
        self.seg
            .reserve(region_offset, region_len)
            .map_err(|source| Error::NoSpace {
                bus: self.seg.bus().to_owned(),
                needed: region_len,
                source,
            })?;
        let mut config = EntryConfig {
            name: [0; layout::MAX_NAME],
            name_len: req.name.len() as u32,
            kind: req.kind,
            slot_size: shape.slot_size,
            capacity: shape.capacity,
            type_size: req.fingerprint.size,
            type_align: req.fingerprint.align,
            type_hash: req.fingerprint.hash,
            type_name: [0; 64],
            region_offset,
            region_len,
            flags: shape.flags,
            max_writers: shape.max_writers,
            max_readers: shape.max_readers,
            _reserved: [0; 4],
        };
        config.name[..req.name.len()].copy_from_slice(req.name.as_bytes());
        // Keep the end of long type names: the last path segments tell
        // types apart best.
        let type_name = req.fingerprint.name.as_bytes();
        let tail = &type_name[type_name.len().saturating_sub(config.type_name.len())..];
        config.type_name[..tail.len()].copy_from_slice(tail);
        // SAFETY: we hold the claim on entry `index` (its state word holds our
        // token), so by the directory protocol no other process reads its
        // config until we store READY, nor writes it unless we die.
        unsafe { self.seg.write(entry_config_offset(index), &config) };
        self.found = Some(config);
        Ok(())
    }

    fn is_blank(&mut self, index: usize) -> bool {
        // SAFETY: we hold the claim on entry `index`: no other process
        // writes its config (a corrupting one aside, whose bytes we only
        // compare).
        unsafe { self.seg.read::<EntryConfig>(entry_config_offset(index)) }
            .is_ok_and(|config| config.as_bytes().iter().all(|&b| b == 0))
    }

    fn is_complete(&mut self, index: usize) -> bool {
        read_entry(self.seg, index).is_ok()
    }

    fn liveness(&mut self, owner: Owner) -> Liveness {
        self.seg.liveness(owner)
    }

    fn wait_for_claimer(&mut self, owner: Option<Owner>) -> Result<(), Error> {
        if Instant::now() >= self.deadline {
            let what = match owner {
                Some(owner) => format!(
                    "topic {:?} to be created by {}",
                    self.req.name,
                    self.seg.describe(owner)
                ),
                None => format!(
                    "a free directory entry for topic {:?} (other processes keep taking them)",
                    self.req.name
                ),
            };
            return Err(Error::Timeout {
                what,
                waited: self.timeout,
            });
        }
        std::thread::sleep(Duration::from_micros(100));
        Ok(())
    }
}

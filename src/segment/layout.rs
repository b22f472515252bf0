//! The byte layout of a bus segment. Every struct here is `#[repr(C)]` with
//! its size, alignment and field offsets asserted at compile time, because
//! processes built separately must agree on them.
//!
//! ```text
//! offset 0     HeaderFixed   (64 B)  written once by the creator before READY
//! offset 64    HeaderCtrl    (64 B)  atomics: state, arena bump pointer
//! offset 128   directory     entries × topic entry (256 B each)
//! proc_offset  process table processes × ProcEntry (64 B each)
//! arena_offset arena         ring regions, 64-byte aligned, bump-allocated
//! ```
//!
//! Topic entry `i` starts at [`entry_offset(i)`](entry_offset) and is laid
//! out as:
//!
//! ```text
//! +0    EntryState   (8 B, padded to a cache line)  the claim / ready word
//! +64   EntryConfig  (192 B)  written once by the creator before READY
//! ```
//!
//! [`entry_state_offset`] and [`entry_config_offset`] are the only places
//! that turn an entry index into an offset; every reader and writer of the
//! directory goes through them, and a unit test proves that no two entries'
//! parts overlap for every directory size.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::ring::directory::EntryState;
use crate::sync::{AtomicU32, AtomicU64};

/// First bytes of every segment.
pub const MAGIC: [u8; 8] = *b"SHMBUS\0\x01";
/// Bumped whenever any layout in this file changes, or that of a ring
/// (4: broadcast slots packed to 16 bytes, `LIGHT`/`REQUEST` bits in the
/// sleeper word; 5: variable-size broadcast topics, [`FLAG_VARIABLE`], and
/// publish timestamps, `FLAG_TIME_*`; 6: broadcast slots of up to 128
/// bytes take whole cache lines again, `ring::packed_stride_words`; 7:
/// variable-size work queues, [`FLAG_VARIABLE`] on a queue, a span word in
/// queue claim entries and the recovery journal; 8: light work-queue
/// writers, a count of them in the futex word's pad of `WakeWords` and a
/// flag in each claim entry, which older readers would not look at; 9:
/// broadcast slots of up to 16 bytes take half a cache line,
/// `ring::packed_stride_words`).
pub const LAYOUT_VERSION: u32 = 9;

pub const HEADER_SIZE: usize = 128;
pub const CTRL_OFFSET: usize = 64;
pub const DIR_OFFSET: usize = HEADER_SIZE;
pub const ENTRY_SIZE: usize = 256;
pub const ENTRY_CONFIG_OFFSET: usize = 64;
pub const ARENA_ALIGN: usize = 4096;
pub const REGION_ALIGN: u64 = 64;
/// Longest bus or topic name.
pub const MAX_NAME: usize = 64;
/// Most topics a bus can be created with.
pub const MAX_TOPICS: u32 = 4096;
/// Largest slot (message) size.
pub const MAX_SLOT_SIZE: u32 = 16 << 20;
/// Most slots in one ring.
pub const MAX_CAPACITY: u32 = 1 << 24;

/// Most entries a bus's process table can be created with.
pub const MAX_PROCESSES: u32 = 1 << 16;
/// Size of one process-table entry.
pub const PROC_ENTRY_SIZE: usize = 64;
/// Offset, in the segment file's lock space, of the byte whose
/// open-file-description lock process-table entry 0's holder keeps (entry
/// `i` uses `PROC_LOCK_BASE + i`). Far past any segment's end: locks there
/// touch no data.
pub const PROC_LOCK_BASE: u64 = 1 << 40;
/// The byte a creator locks in its unfinished segment while it
/// initialises it (see `Segment::create`).
pub const CREATOR_LOCK: u64 = PROC_LOCK_BASE - 1;

/// Segment state in [`HeaderCtrl::state`]: initialised. A segment is made
/// under a temporary name and linked to its bus name only once it is ready,
/// so a bus found under its name in any other state is corrupt.
pub const STATE_READY: u32 = 2;

/// The immutable half of the segment header.
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct HeaderFixed {
    pub magic: [u8; 8],
    pub layout_version: u32,
    pub header_size: u32,
    pub segment_size: u64,
    pub dir_offset: u64,
    pub dir_entries: u32,
    pub entry_size: u32,
    pub arena_offset: u64,
    pub arena_size: u64,
    /// Entries in the process table, which follows the directory.
    pub proc_entries: u32,
    pub _reserved: u32,
}

/// The atomic half of the segment header.
#[repr(C)]
pub struct HeaderCtrl {
    /// 0 while the creator initialises the segment, then [`STATE_READY`].
    pub state: AtomicU32,
    pub _pad: u32,
    pub _reserved: u64,
    /// Bytes of the arena handed out so far.
    pub arena_used: AtomicU64,
    pub _pad2: [u8; 40],
}

/// Process-table entry states (low 32 bits of [`ProcEntry::state`]).
pub const PROC_FREE: u64 = 0;
pub const PROC_LIVE: u64 = 1;

/// One process-table entry: a process that owns shared state in this bus
/// holds one for as long as it has the bus open (see `segment::procs`).
#[repr(C)]
pub struct ProcEntry {
    /// Generation (high 32 bits) and [`PROC_FREE`] or [`PROC_LIVE`]. Written
    /// only by the process that holds the entry's lock.
    pub state: AtomicU64,
    /// The holder's pid, as its own PID namespace sees it (for display).
    pub pid: AtomicU64,
    /// Inode of the holder's PID namespace (`/proc/self/ns/pid`), 0 if
    /// unknown: tells whether `pid` means anything to a reader.
    pub pid_ns: AtomicU64,
    pub _pad: [u8; 40],
}

/// Kinds of topic, as stored.
pub const KIND_BROADCAST: u32 = 1;
pub const KIND_QUEUE: u32 = 2;
/// Topic flag: broadcast in lossless mode (publisher gated on subscribers).
pub const FLAG_LOSSLESS: u32 = 1;
/// Topic flag: broadcast of variable-size byte messages (a descriptor ring
/// and an arena, [`crate::ring::varlen`]); `slot_size` is then the largest
/// message, half the arena.
pub const FLAG_VARIABLE: u32 = 2;
/// Topic flags: broadcast messages carry their publish time, read from
/// CLOCK_REALTIME or CLOCK_MONOTONIC (at most one of the two).
pub const FLAG_TIME_REALTIME: u32 = 4;
pub const FLAG_TIME_MONOTONIC: u32 = 8;
/// Smallest and largest arena of a variable-size topic.
pub const MIN_ARENA: u64 = 4096;
pub const MAX_ARENA: u64 = 1 << 30;
/// Most entries in a topic's producer, consumer or subscriber table.
pub const MAX_ATTACH: u32 = 4096;

/// The immutable part of a topic entry.
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct EntryConfig {
    pub name: [u8; MAX_NAME],
    pub name_len: u32,
    pub kind: u32,
    pub slot_size: u32,
    pub capacity: u32,
    pub type_size: u32,
    pub type_align: u32,
    pub type_hash: u64,
    pub type_name: [u8; 64],
    /// Offset of the ring region from the start of the segment.
    pub region_offset: u64,
    pub region_len: u64,
    /// [`FLAG_LOSSLESS`], [`FLAG_VARIABLE`], at most one `FLAG_TIME_*`,
    /// or 0.
    pub flags: u32,
    /// Producer table size (work queues).
    pub max_writers: u32,
    /// Consumer table size (work queues) or subscriber table size
    /// (lossless broadcast).
    pub max_readers: u32,
    pub _reserved: [u8; 4],
}

#[cfg(not(shmbus_loom))]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<HeaderFixed>() == 64);
    assert!(offset_of!(HeaderFixed, layout_version) == 8);
    assert!(offset_of!(HeaderFixed, segment_size) == 16);
    assert!(offset_of!(HeaderFixed, dir_entries) == 32);
    assert!(offset_of!(HeaderFixed, arena_offset) == 40);
    assert!(offset_of!(HeaderFixed, proc_entries) == 56);
    assert!(size_of::<HeaderCtrl>() == 64);
    assert!(align_of::<HeaderCtrl>() == 8);
    assert!(offset_of!(HeaderCtrl, arena_used) == 16);
    assert!(size_of::<ProcEntry>() == PROC_ENTRY_SIZE);
    assert!(offset_of!(ProcEntry, pid) == 8);
    assert!(size_of::<EntryState>() == 8);
    assert!(size_of::<EntryConfig>() == ENTRY_SIZE - ENTRY_CONFIG_OFFSET);
    // The state word and the config of one entry do not overlap, and both
    // lie inside the entry.
    assert!(size_of::<EntryState>() <= ENTRY_CONFIG_OFFSET);
    assert!(ENTRY_CONFIG_OFFSET + size_of::<EntryConfig>() <= ENTRY_SIZE);
    assert!(ENTRY_SIZE % 64 == 0 && DIR_OFFSET % 64 == 0);
    assert!(offset_of!(EntryConfig, slot_size) == 72);
    assert!(offset_of!(EntryConfig, type_hash) == 88);
    assert!(offset_of!(EntryConfig, region_offset) == 160);
    assert!(offset_of!(EntryConfig, flags) == 176);
    assert!(offset_of!(EntryConfig, max_readers) == 184);
    assert!(HEADER_SIZE == CTRL_OFFSET + size_of::<HeaderCtrl>());
};

/// Offset of topic entry `index` from the start of the segment.
pub const fn entry_offset(index: usize) -> u64 {
    DIR_OFFSET as u64 + index as u64 * ENTRY_SIZE as u64
}

/// Offset of topic entry `index`'s state word.
pub const fn entry_state_offset(index: usize) -> u64 {
    entry_offset(index)
}

/// Offset of topic entry `index`'s config.
pub const fn entry_config_offset(index: usize) -> u64 {
    entry_offset(index) + ENTRY_CONFIG_OFFSET as u64
}

/// End of a directory of `entries` entries (the first byte after it).
pub const fn directory_end(entries: u32) -> u64 {
    entry_offset(entries as usize)
}

/// Offset of the process table of a bus with `dir_entries` topic entries:
/// right after the directory (64-byte aligned, as entries are 256 bytes).
pub const fn proc_offset(dir_entries: u32) -> u64 {
    directory_end(dir_entries)
}

/// End of the process table.
pub const fn proc_end(dir_entries: u32, proc_entries: u32) -> u64 {
    proc_offset(dir_entries) + proc_entries as u64 * PROC_ENTRY_SIZE as u64
}

/// Sizes of a segment laid out for `entries` topics and `processes`
/// process-table entries in `segment_size` bytes.
pub fn header_for(segment_size: u64, entries: u32, processes: u32) -> Option<HeaderFixed> {
    let arena_offset = proc_end(entries, processes).next_multiple_of(ARENA_ALIGN as u64);
    let arena_size = segment_size.checked_sub(arena_offset)?;
    Some(HeaderFixed {
        magic: MAGIC,
        layout_version: LAYOUT_VERSION,
        header_size: HEADER_SIZE as u32,
        segment_size,
        dir_offset: DIR_OFFSET as u64,
        dir_entries: entries,
        entry_size: ENTRY_SIZE as u32,
        arena_offset,
        arena_size,
        proc_entries: processes,
        _reserved: 0,
    })
}

/// Checks a header read from a segment of `file_len` bytes. Returns what is
/// wrong, in words, or `Ok` when every later offset derived from it stays in
/// the file.
pub fn check_header(h: &HeaderFixed, file_len: u64) -> Result<(), String> {
    if h.header_size as usize != HEADER_SIZE || h.entry_size as usize != ENTRY_SIZE {
        return Err(format!(
            "header says header size {} and entry size {}, expected {HEADER_SIZE} and {ENTRY_SIZE}",
            h.header_size, h.entry_size
        ));
    }
    if h.segment_size != file_len {
        return Err(format!(
            "header says the segment is {} bytes but the file is {file_len}",
            h.segment_size
        ));
    }
    if h.dir_offset != DIR_OFFSET as u64 || h.dir_entries == 0 || h.dir_entries > MAX_TOPICS {
        return Err(format!(
            "directory at offset {} with {} entries is out of range (1..={MAX_TOPICS} at {DIR_OFFSET})",
            h.dir_offset, h.dir_entries
        ));
    }
    if h.proc_entries == 0 || h.proc_entries > MAX_PROCESSES {
        return Err(format!(
            "process table of {} entries is out of range (1..={MAX_PROCESSES})",
            h.proc_entries
        ));
    }
    let dir_end = proc_end(h.dir_entries, h.proc_entries);
    let arena_end = h.arena_offset.checked_add(h.arena_size);
    if h.arena_offset < dir_end
        || h.arena_offset % ARENA_ALIGN as u64 != 0
        || arena_end != Some(h.segment_size)
    {
        return Err(format!(
            "arena at offset {} of {} bytes does not fit between the process table (ends at {dir_end}) and the end of the segment ({})",
            h.arena_offset, h.arena_size, h.segment_size
        ));
    }
    Ok(())
}

#[cfg(all(test, not(shmbus_loom)))]
mod tests {
    use super::*;

    /// The byte ranges of entry `index`: its state word and its config.
    fn parts(index: usize) -> [(u64, u64); 2] {
        let state = entry_state_offset(index);
        let config = entry_config_offset(index);
        [
            (state, state + core::mem::size_of::<EntryState>() as u64),
            (config, config + core::mem::size_of::<EntryConfig>() as u64),
        ]
    }

    #[test]
    fn no_two_entries_overlap_for_any_directory_size() {
        // Offsets do not depend on the directory size, so the ranges of a
        // directory of n entries are the first n of the largest one: prove
        // the largest disjoint, and each size's ranges inside its directory.
        let mut ranges: Vec<(u64, u64)> = (0..MAX_TOPICS as usize).flat_map(parts).collect();
        ranges.sort();
        for pair in ranges.windows(2) {
            assert!(
                pair[0].1 <= pair[1].0,
                "{:?} overlaps {:?}",
                pair[0],
                pair[1]
            );
        }
        for entries in 1..=MAX_TOPICS {
            let header = header_for(1 << 30, entries, 1024).unwrap();
            check_header(&header, 1 << 30).unwrap();
            let last = parts(entries as usize - 1);
            assert!(parts(0)[0].0 >= HEADER_SIZE as u64);
            assert!(last[1].1 <= directory_end(entries));
            assert!(directory_end(entries) <= proc_offset(entries));
            assert!(proc_end(entries, 1024) <= header.arena_offset);
            assert_eq!(proc_offset(entries) % 64, 0);
            // State words are 8-byte aligned for atomic access.
            assert_eq!(entry_state_offset(entries as usize - 1) % 8, 0);
        }
    }
}

//! Raw baselines for the benchmark harness, between two processes like
//! shmbus: a shared cache line (the physical limit), a shared futex, a
//! single-producer single-consumer ring in shared memory, a pipe, a Unix
//! socket and a POSIX message queue.
//!
//! Shared memory here is a `memfd` inherited by the child, and the queues
//! are unlinked as soon as both sides have them open, so an interrupted run
//! leaves nothing behind.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// A shared anonymous mapping, inheritable by a child as an fd.
pub struct SharedMem {
    fd: OwnedFd,
    ptr: *mut u8,
    len: usize,
}

impl SharedMem {
    /// A new zeroed shared region of `len` bytes.
    pub fn create(len: usize) -> io::Result<SharedMem> {
        // Close-on-exec until `inheritable` is called for the child that needs it.
        let fd = rustix::fs::memfd_create("shmbus-bench", rustix::fs::MemfdFlags::CLOEXEC)?;
        rustix::fs::ftruncate(&fd, len as u64)?;
        Self::map(fd, len)
    }

    /// Maps an inherited region.
    pub fn inherit(fd: RawFd, len: usize) -> io::Result<SharedMem> {
        // SAFETY: the parent passed us this fd number for our exclusive use.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Self::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<SharedMem> {
        use rustix::mm::{mmap, MapFlags, ProtFlags};
        // SAFETY: a fresh shared mapping of a file we hold; nothing else in
        // this process aliases it.
        let ptr = unsafe {
            mmap(
                core::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )?
        };
        Ok(SharedMem {
            fd,
            ptr: ptr.cast(),
            len,
        })
    }

    /// The fd, made inheritable by the next child spawned.
    pub fn fd_for_child(&self) -> io::Result<RawFd> {
        inheritable(&self.fd)?;
        Ok(self.fd.as_raw_fd())
    }

    /// The atomic u64 at `offset` (8-aligned, inside the region).
    pub fn u64_at(&self, offset: usize) -> &AtomicU64 {
        assert!(offset % 8 == 0 && offset + 8 <= self.len);
        // SAFETY: in bounds and aligned (asserted); the mapping lives as long
        // as `self`; all access to it is atomic.
        unsafe { &*self.ptr.add(offset).cast::<AtomicU64>() }
    }

    /// The `count` atomic u64s from `offset` (8-aligned, inside the region).
    pub fn u64_slice(&self, offset: usize, count: usize) -> &[AtomicU64] {
        assert!(offset % 8 == 0 && offset + count * 8 <= self.len);
        // SAFETY: as in `u64_at`, for the whole (asserted) range.
        unsafe { core::slice::from_raw_parts(self.ptr.add(offset).cast::<AtomicU64>(), count) }
    }

    /// The atomic u32 at `offset` (4-aligned, inside the region).
    pub fn u32_at(&self, offset: usize) -> &AtomicU32 {
        assert!(offset % 4 == 0 && offset + 4 <= self.len);
        // SAFETY: as in `u64_at`.
        unsafe { &*self.ptr.add(offset).cast::<AtomicU32>() }
    }
}

impl Drop for SharedMem {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping; no references into it outlive
        // `self` (they borrow it).
        let _ = unsafe { rustix::mm::munmap(self.ptr.cast(), self.len) };
    }
}

/// Two cache lines: ping's word and pong's word.
pub const PINGPONG_LEN: usize = 4096;
const PING: usize = 0;
const PONG: usize = 64;

/// Raw cache-line ping-pong, the ping side: one round trip.
pub fn cacheline_ping(mem: &SharedMem, seq: u64) {
    mem.u64_at(PING).store(seq, Ordering::Release);
    while mem.u64_at(PONG).load(Ordering::Acquire) != seq {
        core::hint::spin_loop();
    }
}

/// Raw cache-line ping-pong, the echo side, for `count` round trips.
pub fn cacheline_echo(mem: &SharedMem, count: u64) {
    let mut last = 0;
    let mut echoed = 0;
    while echoed < count {
        let seq = mem.u64_at(PING).load(Ordering::Acquire);
        if seq != last {
            last = seq;
            mem.u64_at(PONG).store(seq, Ordering::Release);
            echoed += 1;
        }
        core::hint::spin_loop();
    }
}

fn futex_wake(word: &AtomicU32) {
    let _ = rustix::thread::futex::wake(word, rustix::thread::futex::Flags::empty(), 1);
}

fn futex_wait_while(word: &AtomicU32, value: u32) {
    while word.load(Ordering::Acquire) == value {
        let _ =
            rustix::thread::futex::wait(word, rustix::thread::futex::Flags::empty(), value, None);
    }
}

/// Raw futex ping-pong, the ping side: store, wake, sleep until the echo.
/// (Always wakes: a minimal baseline has no waiter count.)
pub fn futex_ping(mem: &SharedMem, seq: u32) {
    let (ping, pong) = (mem.u32_at(PING), mem.u32_at(PONG));
    let before = pong.load(Ordering::Acquire);
    ping.store(seq, Ordering::Release);
    futex_wake(ping);
    futex_wait_while(pong, before);
}

/// Raw futex ping-pong, the echo side, for `count` round trips.
pub fn futex_echo(mem: &SharedMem, count: u64) {
    let (ping, pong) = (mem.u32_at(PING), mem.u32_at(PONG));
    let mut last = 0;
    for _ in 0..count {
        futex_wait_while(ping, last);
        last = ping.load(Ordering::Acquire);
        pong.store(last, Ordering::Release);
        futex_wake(pong);
    }
}

/// Raw SPSC ring: head and tail on their own lines, [`ring_slots`] slots.
const SPSC_HEAD: usize = 0;
const SPSC_TAIL: usize = 64;
const SPSC_DATA: usize = 128;

/// Slots of the rings the stream benchmarks make for messages of `size`
/// bytes (the raw SPSC ring and the shmbus topic alike): 4096, or fewer
/// for large messages, so that a ring stays within 32 MiB (it must fit the
/// bench's bus: a 1 MiB message gets 32 slots, not a 4 GiB segment); a
/// power of two, at least 16.
pub fn ring_slots(size: usize) -> usize {
    const RING_BYTES: usize = 32 << 20;
    let fit = (RING_BYTES / size.next_multiple_of(8).max(8)).clamp(16, 4096);
    1 << (usize::BITS - 1 - fit.leading_zeros())
}

pub fn spsc_len(size: usize) -> usize {
    SPSC_DATA + ring_slots(size) * size.next_multiple_of(8)
}

/// Producer side: pushes `count` messages of `size` bytes.
pub fn spsc_produce(mem: &SharedMem, count: u64, size: usize) {
    let (stride, slots) = (size.next_multiple_of(8), ring_slots(size));
    let msg = vec![0x5au8; size];
    let (head, tail) = (mem.u64_at(SPSC_HEAD), mem.u64_at(SPSC_TAIL));
    let mut cached_head = 0u64;
    for pos in 0..count {
        while pos - cached_head >= slots as u64 {
            cached_head = head.load(Ordering::Acquire);
            core::hint::spin_loop();
        }
        let offset = SPSC_DATA + (pos as usize % slots) * stride;
        // SAFETY: the slot is inside the region and, by the head/tail
        // protocol, not read by the consumer until `tail` passes it.
        unsafe { core::ptr::copy_nonoverlapping(msg.as_ptr(), mem.ptr.add(offset), size) };
        tail.store(pos + 1, Ordering::Release);
    }
}

/// Consumer side: pops `count` messages; returns the nanoseconds from the
/// first message to the last.
///
/// It stores `head` once per batch of reads, as a shmbus lossless
/// subscriber stores its cursor (a power of two, an eighth of the ring,
/// at most 64), and after the last: a store per message made the head line
/// cross to a producer polling it on a full ring for every message, and
/// on a 16-core Xeon held this "limit" at 14-30 M msg/s where shmbus,
/// which batches, ran at 53-65 M (2026-12-06).
pub fn spsc_consume(mem: &SharedMem, count: u64, size: usize) -> u64 {
    let (stride, slots) = (size.next_multiple_of(8), ring_slots(size));
    let batch = (slots as u64 / 8).clamp(1, 64);
    let mask = (1u64 << (63 - batch.leading_zeros())) - 1;
    let mut buf = vec![0u8; size];
    let (head, tail) = (mem.u64_at(SPSC_HEAD), mem.u64_at(SPSC_TAIL));
    let mut cached_tail = 0u64;
    let mut start = None;
    for pos in 0..count {
        while cached_tail <= pos {
            cached_tail = tail.load(Ordering::Acquire);
            core::hint::spin_loop();
        }
        start.get_or_insert_with(std::time::Instant::now);
        let offset = SPSC_DATA + (pos as usize % slots) * stride;
        // SAFETY: the producer finished this slot (tail passed it) and will
        // not write it again until `head` passes it.
        unsafe { core::ptr::copy_nonoverlapping(mem.ptr.add(offset), buf.as_mut_ptr(), size) };
        std::hint::black_box(&buf);
        if (pos + 1) & mask == 0 || pos + 1 == count {
            head.store(pos + 1, Ordering::Release);
        }
    }
    start.map_or(0, |s| s.elapsed().as_nanos() as u64)
}

/// A pipe: (read end, write end). Both close on exec; the caller makes the
/// child's end inheritable with [`inheritable`].
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// Makes a named pipe at `path` (mode 0600) and opens its read end,
/// blocking, close-on-exec (opened non-blocking first, so that it does not
/// wait for a writer), without access-time updates (`O_NOATIME`), as a bus
/// on pipes reads its FIFOs: the best a FIFO does.
pub fn fifo(path: &std::path::Path) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::mkfifoat(rustix::fs::CWD, path, Mode::RUSR | Mode::WUSR)?;
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOATIME,
        Mode::empty(),
    )?;
    rustix::fs::fcntl_setfl(&fd, OFlags::NOATIME)?;
    Ok(fd)
}

/// A connected pair of Unix stream sockets, both close-on-exec.
pub fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
    Ok(socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Opens the existing named pipe at `path` to read (`nonblocking` or
/// not), without access-time updates where allowed (as a bus on pipes
/// reads its FIFOs).
pub fn open_fifo_read(path: &std::path::Path, nonblocking: bool) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let mut flags = OFlags::RDONLY | OFlags::CLOEXEC;
    if nonblocking {
        flags |= OFlags::NONBLOCK;
    }
    Ok(
        rustix::fs::open(path, flags | OFlags::NOATIME, Mode::empty())
            .or_else(|_| rustix::fs::open(path, flags, Mode::empty()))?,
    )
}

/// Lets `fd` be inherited by children spawned from now on.
pub fn inheritable(fd: &OwnedFd) -> io::Result<()> {
    Ok(rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?)
}

/// Reads exactly `buf.len()` bytes. Returns false on end of file.
pub fn read_exact(fd: RawFd, buf: &mut [u8]) -> io::Result<bool> {
    // SAFETY: the caller hands us an fd it owns for this process's life.
    let fd = unsafe { rustix::fd::BorrowedFd::borrow_raw(fd) };
    let mut done = 0;
    while done < buf.len() {
        match rustix::io::read(fd, &mut buf[done..]) {
            Ok(0) => return Ok(false),
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

pub fn write_all(fd: RawFd, buf: &[u8]) -> io::Result<()> {
    // SAFETY: as in `read_exact`.
    let fd = unsafe { rustix::fd::BorrowedFd::borrow_raw(fd) };
    let mut done = 0;
    while done < buf.len() {
        match rustix::io::write(fd, &buf[done..]) {
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A POSIX message queue descriptor.
pub struct Mq {
    mqd: libc::mqd_t,
}

impl Mq {
    /// Creates (exclusively) or opens queue `name` for messages of `size`.
    pub fn open(name: &str, create: bool, size: usize) -> io::Result<Mq> {
        let cname = CString::new(name).expect("no NUL in queue names");
        let mut attr: libc::mq_attr = {
            // SAFETY: mq_attr is plain integers; all-zero is a valid value.
            unsafe { core::mem::zeroed() }
        };
        attr.mq_maxmsg = 10;
        attr.mq_msgsize = size.max(1) as libc::c_long;
        let flags = if create {
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL
        } else {
            libc::O_RDWR
        };
        // SAFETY: a valid C string and attribute struct; mq_open copies both.
        let mqd = unsafe {
            libc::mq_open(
                cname.as_ptr(),
                flags,
                0o600 as libc::mode_t,
                &attr as *const libc::mq_attr,
            )
        };
        if mqd == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(Mq { mqd })
    }

    pub fn unlink(name: &str) {
        let cname = CString::new(name).expect("no NUL in queue names");
        // SAFETY: a valid C string.
        unsafe { libc::mq_unlink(cname.as_ptr()) };
    }

    pub fn send(&self, buf: &[u8]) -> io::Result<()> {
        // SAFETY: `buf` is valid for its length.
        let rc = unsafe { libc::mq_send(self.mqd, buf.as_ptr().cast(), buf.len(), 0) };
        if rc == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of its length; the kernel
        // refuses (EMSGSIZE) a buffer smaller than the queue's message size.
        let rc = unsafe {
            libc::mq_receive(
                self.mqd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                core::ptr::null_mut(),
            )
        };
        if rc == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc as usize)
    }
}

impl Drop for Mq {
    fn drop(&mut self) {
        // SAFETY: closing our own descriptor once.
        unsafe { libc::mq_close(self.mqd) };
    }
}

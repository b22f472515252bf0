//! POSIX message queues: the carrier of a bus opened with
//! [`Transport::Mq`](super::Transport::Mq).
//!
//! An mq bus keeps its registry (topic configuration, the publisher lease,
//! a record per endpoint, the `join` doorbell) in a directory exactly as a
//! pipe bus does; only the frames travel differently: each subscriber
//! reads a queue of its own, `/shmbus.<bus>@<tag>:<topic>:<id>`, and a
//! work queue is one queue, `/shmbus.<bus>@<tag>:<topic>` (`@` and `:` are
//! in no bus or topic name, so no two topics share a name). The tag is the
//! identity of the bus's directory ([`bus_tag`]): two buses of one name in
//! two directories (or one removed and made again) never share a queue,
//! while processes that see one directory at different paths (a bind
//! mount in a container) name the same queues. A queue keeps message
//! boundaries (one frame per message, never split), holds its messages
//! until it is unlinked (a work queue's messages outlive every producer
//! and consumer, as in shared memory), and lives in the IPC namespace,
//! not in a directory.
//!
//! The kernel bounds every queue: at most `fs.mqueue.msg_max` messages
//! (10 by default) and `fs.mqueue.msgsize_max` bytes each (8192) for a
//! process without `CAP_SYS_RESOURCE`, at most `fs.mqueue.queues_max`
//! queues on the machine (256), and at most `RLIMIT_MSGQUEUE` bytes of
//! queues per user (`ulimit -q`, 819200). A topic's queue holds its
//! capacity: an error names the limit that refuses it.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use rustix::io::Errno;

use crate::error::Error;

/// The name of the queue of topic `topic` of bus `bus`, whose directory's
/// [`bus_tag`] is `tag` (a work queue's), or of its subscriber `id`. Names
/// have no `@` or `:` (see `segment::validate_name`): the parts cannot run
/// into each other.
pub(crate) fn name(bus: &str, tag: &str, topic: &str, id: Option<&str>) -> String {
    let topic_queue = format!("/shmbus.{bus}@{tag}:{topic}");
    match id {
        Some(id) => of_subscriber(&topic_queue, id),
        None => topic_queue,
    }
}

/// What tells the queues of bus directory `dir` from those of any other
/// bus of the same name: the directory's device and inode, which every
/// path to it shares (a bind mount keeps them) and a directory made anew
/// does not.
pub(crate) fn bus_tag(dir: &std::path::Path) -> std::io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir)?;
    Ok(format!("{:x}-{:x}", meta.dev(), meta.ino()))
}

/// The name of subscriber `id`'s queue, given its topic's queue name
/// (`name(bus, topic, None)`).
pub(crate) fn of_subscriber(topic_queue: &str, id: &str) -> String {
    format!("{topic_queue}:{id}")
}

fn cname(name: &str) -> Result<CString, Errno> {
    // Bus and topic names are checked (A-Z a-z 0-9 . _ -), ids are ours.
    CString::new(name).map_err(|_| Errno::INVAL)
}

fn last_errno() -> Errno {
    Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

/// How a queue is opened.
#[derive(Clone, Copy)]
pub(crate) enum Access {
    Read,
    Write,
    ReadWrite,
}

/// Opens queue `name` (`nonblocking` or not); with `create`, makes it
/// (mode, most messages, largest message) if it does not exist.
pub(crate) fn open(
    name: &str,
    access: Access,
    nonblocking: bool,
    create: Option<(u32, usize, usize)>,
) -> Result<OwnedFd, Errno> {
    let name = cname(name)?;
    let mut flags = libc::O_CLOEXEC
        | match access {
            Access::Read => libc::O_RDONLY,
            Access::Write => libc::O_WRONLY,
            Access::ReadWrite => libc::O_RDWR,
        };
    if nonblocking {
        flags |= libc::O_NONBLOCK;
    }
    let mqd = match create {
        None => {
            // SAFETY: `name` is a NUL-terminated string that outlives the
            // call; without O_CREAT, mq_open reads no further arguments.
            unsafe { libc::mq_open(name.as_ptr(), flags) }
        }
        Some((mode, maxmsg, msgsize)) => {
            // SAFETY: mq_attr is plain integers; all zero is a valid value.
            let mut attr: libc::mq_attr = unsafe { core::mem::zeroed() };
            attr.mq_maxmsg = libc::c_long::try_from(maxmsg.max(1)).map_err(|_| Errno::INVAL)?;
            attr.mq_msgsize = libc::c_long::try_from(msgsize.max(1)).map_err(|_| Errno::INVAL)?;
            // SAFETY: with O_CREAT, mq_open reads a mode and a pointer to
            // an mq_attr, both valid for the call.
            unsafe {
                libc::mq_open(
                    name.as_ptr(),
                    flags | libc::O_CREAT,
                    mode as libc::mode_t,
                    &mut attr as *mut libc::mq_attr,
                )
            }
        }
    };
    if mqd < 0 {
        return Err(last_errno());
    }
    // SAFETY: on Linux an mqd_t is a file descriptor, ours alone, closed
    // by close(2) as mq_close does.
    let fd = unsafe { OwnedFd::from_raw_fd(mqd) };
    if let Some((mode, ..)) = create {
        // The umask took bits the bus's mode asks for (a group's access);
        // a queue someone else made is left as it is (EPERM).
        let _ = rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(mode));
    }
    Ok(fd)
}

/// The queue a new topic of the bus in directory `dir` is tried on (made
/// and removed, under the bus's lock: see `PipeBus::check_new_topic`): one
/// name per bus directory and user, so that one left by a process killed
/// in between is found by name, and that buses of one name in two
/// directories (whose locks are two), or two users' probes, never meet
/// (`::`: no topic is named the empty string).
pub(crate) fn probe_name(bus: &str, dir: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    format!(
        "/shmbus.{bus}::probe-{}-{:016x}",
        rustix::process::getuid().as_raw(),
        crate::ring::directory::name_hash(dir.as_os_str().as_bytes())
    )
}

/// Whether a queue of `maxmsg` messages of `msgsize` bytes is over the
/// limits on one queue's shape that bind this process: `fs.mqueue.msg_max`
/// and `msgsize_max`, or with `CAP_SYS_RESOURCE` the kernel's own ceilings
/// (65536 messages, 16 MiB each).
pub(crate) fn over_shape_limits(maxmsg: usize, msgsize: usize) -> bool {
    let (most, largest) = if lifts_limits() {
        (65536, 16 << 20)
    } else {
        (
            sysctl("msg_max").unwrap_or(10),
            sysctl("msgsize_max").unwrap_or(8192),
        )
    };
    maxmsg as u64 > most || msgsize as u64 > largest
}

/// Whether this process has `CAP_SYS_RESOURCE` (bit 24 of its effective
/// capabilities), which lifts `msg_max` and `msgsize_max`.
fn lifts_limits() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let caps = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(caps.trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

/// Removes queue `name` (those who have it open keep it until they close
/// it). False if there was none.
pub(crate) fn unlink(name: &str) -> bool {
    let Ok(name) = cname(name) else {
        return false;
    };
    // SAFETY: a NUL-terminated string valid for the call.
    unsafe { libc::mq_unlink(name.as_ptr()) == 0 }
}

/// Sends `msg` (priority 0): `AGAIN` when a non-blocking queue is full.
pub(crate) fn send(fd: BorrowedFd<'_>, msg: &[u8]) -> Result<(), Errno> {
    loop {
        // SAFETY: `msg` is valid for reads of its length for the call.
        let r = unsafe { libc::mq_send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if r == 0 {
            return Ok(());
        }
        match last_errno() {
            Errno::INTR => continue,
            e => return Err(e),
        }
    }
}

/// Takes the oldest message into `buf` (at least the queue's largest
/// message long): its length. `AGAIN` when a non-blocking queue is empty.
pub(crate) fn receive(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<usize, Errno> {
    receive_within(fd, buf, None)
}

/// As [`receive`], waiting on a blocking descriptor for at most `span`
/// (`TIMEDOUT` after). Asleep in the receive, a sender hands it the message
/// directly (`mq_send`'s pipelined path), where a `poll` and then a receive
/// cost the raw queue's throughput twice over. Its deadline is on the wall
/// clock: a clock set back while it waits lengthens the wait by as much,
/// so it is for waits that only pace liveness checks, not for a caller's
/// timeout (those are `poll`s).
pub(crate) fn receive_within(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    span: Option<Duration>,
) -> Result<usize, Errno> {
    let at = span.map(wall_clock_in);
    loop {
        let mut prio = 0;
        let (ptr, len) = (buf.as_mut_ptr().cast(), buf.len());
        let r = match &at {
            // SAFETY: `buf` is valid for writes of its length, `prio` and
            // `at` for the call.
            Some(at) => unsafe { libc::mq_timedreceive(fd.as_raw_fd(), ptr, len, &mut prio, at) },
            // SAFETY: as above.
            None => unsafe { libc::mq_receive(fd.as_raw_fd(), ptr, len, &mut prio) },
        };
        if r >= 0 {
            return Ok(r as usize);
        }
        match last_errno() {
            Errno::INTR => continue,
            e => return Err(e),
        }
    }
}

/// The wall-clock time `span` from now (the queues' timeouts are absolute
/// `CLOCK_REALTIME` times).
fn wall_clock_in(span: Duration) -> libc::timespec {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
    let nanos = now.tv_nsec as u64 + u64::from(span.subsec_nanos());
    libc::timespec {
        tv_sec: (now.tv_sec as libc::time_t)
            .saturating_add(span.as_secs().min(i32::MAX as u64) as libc::time_t)
            .saturating_add((nanos / 1_000_000_000) as libc::time_t),
        tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
    }
}

/// The queue's (most messages, largest message, messages in it now).
pub(crate) fn attr(fd: BorrowedFd<'_>) -> Result<(usize, usize, usize), Errno> {
    // SAFETY: mq_attr is plain integers; all zero is a valid value.
    let mut attr: libc::mq_attr = unsafe { core::mem::zeroed() };
    // SAFETY: `attr` is valid for writes for the call.
    if unsafe { libc::mq_getattr(fd.as_raw_fd(), &mut attr) } != 0 {
        return Err(last_errno());
    }
    Ok((
        attr.mq_maxmsg.max(0) as usize,
        attr.mq_msgsize.max(0) as usize,
        attr.mq_curmsgs.max(0) as usize,
    ))
}

/// Messages in the queue now (0 if that cannot be read).
pub(crate) fn depth(fd: BorrowedFd<'_>) -> usize {
    attr(fd).map_or(0, |(_, _, n)| n)
}

/// A limit of this system's queues, from `/proc/sys/fs/mqueue/<name>`.
pub(crate) fn sysctl(name: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/sys/fs/mqueue/{name}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The largest message a queue may carry here without privilege
/// (`fs.mqueue.msgsize_max`, 8192 where it cannot be read).
pub(crate) fn msgsize_max() -> usize {
    sysctl("msgsize_max").map_or(8192, |n| n as usize)
}

/// How many messages the queue of a variable-size topic of `capacity`
/// holds: as many as `fs.mqueue.msg_max` lets anyone have (10 by
/// default). Each may be the topic's largest, and the kernel charges every
/// queue that worst case against `RLIMIT_MSGQUEUE`: an arena's
/// 64-byte units of the largest message would not fit any default limit.
fn variable_depth(capacity: usize) -> usize {
    capacity
        .min(sysctl("msg_max").map_or(10, |n| n as usize))
        .max(1)
}

/// How many messages the queue of a topic of `capacity` holds (a
/// subscriber's, or a work queue's): its capacity, or for a variable-size
/// topic [`variable_depth`].
pub(crate) fn queue_len(capacity: usize, variable: bool) -> usize {
    if variable {
        variable_depth(capacity)
    } else {
        capacity
    }
}

/// What creating a queue of `maxmsg` messages of `msgsize` bytes for topic
/// `topic` met, said with the limit that refused it and what to do.
pub(crate) fn create_error(
    bus: &str,
    topic: &str,
    name: &str,
    err: Errno,
    maxmsg: usize,
    msgsize: usize,
) -> Error {
    let limit = |name: &str, default: &str| {
        sysctl(name).map_or_else(|| default.to_owned(), |n| n.to_string())
    };
    match err {
        Errno::INVAL => {
            // What to lower or raise: only the limits this queue is over
            // (both where they cannot be read).
            let (msg_max, msgsize_max) = (sysctl("msg_max"), sysctl("msgsize_max"));
            let over_count = msg_max.is_none_or(|max| maxmsg as u64 > max);
            let over_size = msgsize_max.is_none_or(|max| msgsize as u64 > max);
            let (lower, raise) = match (over_count, over_size) {
                (true, false) => (
                    "capacity".to_owned(),
                    format!("`sysctl fs.mqueue.msg_max={maxmsg}`"),
                ),
                (false, true) => (
                    "message size".to_owned(),
                    format!("`sysctl fs.mqueue.msgsize_max={msgsize}`"),
                ),
                (true, true) => (
                    "capacity or message size".to_owned(),
                    format!(
                        "`sysctl fs.mqueue.msg_max={maxmsg}`, \
                         `sysctl fs.mqueue.msgsize_max={msgsize}`, as needed"
                    ),
                ),
                // Within both: over the kernel's own ceilings, which a
                // privileged process meets (65536 messages, 16 MiB each).
                (false, false) => (
                    "capacity or message size".to_owned(),
                    "no sysctl lifts the kernel's ceilings of 65536 messages and 16 MiB a \
                     message"
                        .to_owned(),
                ),
            };
            Error::InvalidOptions {
                topic: topic.to_owned(),
                why: format!(
                    "a POSIX message queue of {maxmsg} messages of {msgsize} bytes (the topic's \
                     capacity, and its largest message with a {}-byte frame header) is over \
                     this system's limits: fs.mqueue.msg_max = {}, fs.mqueue.msgsize_max = {} \
                     (for processes without CAP_SYS_RESOURCE). Lower the topic's {lower}, or \
                     raise the limit: {raise}",
                    super::frame::HEADER,
                    limit("msg_max", "10"),
                    limit("msgsize_max", "8192"),
                ),
            }
        }
        Errno::MFILE | Errno::NOSPC => {
            let (what, fix) = match err {
                Errno::NOSPC => (
                    format!(
                        "this system's queues are all in use (fs.mqueue.queues_max = {})",
                        limit("queues_max", "256")
                    ),
                    "remove buses no longer used (`shmbus remove`, `shmbus gc`) or raise \
                     fs.mqueue.queues_max",
                ),
                _ => (
                    format!(
                        "this user's POSIX message queues would take more than RLIMIT_MSGQUEUE \
                         (`ulimit -q`, {} bytes, for all of this user's queues; this one takes \
                         {} bytes: {maxmsg} x ({msgsize} + the kernel's 96 per message)), or \
                         the process is out of descriptors",
                        rustix::process::getrlimit(rustix::process::Resource::Msgqueue)
                            .current
                            .map_or_else(|| "unlimited".to_owned(), |n| n.to_string()),
                        maxmsg.saturating_mul(msgsize.saturating_add(96))
                    ),
                    "lower the topic's capacity or message size, raise `ulimit -q`, or remove \
                     buses no longer used",
                ),
            };
            Error::Io {
                bus: bus.to_owned(),
                path: Some(name.into()),
                action: "creating a POSIX message queue",
                source: std::io::Error::new(
                    std::io::Error::from_raw_os_error(err.raw_os_error()).kind(),
                    format!(
                        "topic {topic:?}: a queue of {maxmsg} messages of {msgsize} bytes: \
                         {what}; {fix}"
                    ),
                ),
            }
        }
        other => Error::Io {
            bus: bus.to_owned(),
            path: Some(name.into()),
            action: "creating a POSIX message queue",
            source: std::io::Error::from_raw_os_error(other.raw_os_error()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape judged where the kernel said only that a budget was full
    /// (see `PipeBus::check_new_topic`): what no limit allows is over, with
    /// or without privilege; one small message never is; and what is over
    /// `msg_max` without privilege is over exactly when unprivileged.
    #[test]
    fn over_shape_limits_judges_the_shape_alone() {
        assert!(over_shape_limits(1 << 20, 8), "over the kernel's 65536");
        assert!(over_shape_limits(1, 32 << 20), "over the kernel's 16 MiB");
        assert!(!over_shape_limits(1, 8));
        let msg_max = sysctl("msg_max").unwrap_or(10) as usize;
        if msg_max < 65536 {
            assert_eq!(over_shape_limits(msg_max + 1, 8), !lifts_limits());
        }
        assert!(!over_shape_limits(msg_max, 8));
    }

    /// One probe name per bus directory and user, whatever the path's
    /// spelling: gc and remove find the one a killed process left.
    #[test]
    fn a_probe_is_named_by_its_bus_directory() {
        let root = std::env::temp_dir().join(format!("shmbus-probe-{}", std::process::id()));
        let (a, b) = (root.join("a").join("bus"), root.join("b").join("bus"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let spelled = root.join("b").join("..").join("a").join("bus");
        let named = [probe_name("bus", &a), probe_name("bus", &b)];
        let respelled = probe_name("bus", &spelled);
        std::fs::remove_dir_all(&root).unwrap();
        assert_ne!(named[0], named[1], "two directories, two names");
        assert_eq!(respelled, named[0]);
        assert!(named[0].starts_with("/shmbus.bus::probe-"), "{}", named[0]);
    }
}

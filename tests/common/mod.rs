//! Helpers for tests that run real processes.
//!
//! A test spawns this same test binary as a child, running only the
//! `child_role_entry` test (marked `#[ignore]`, so a normal run does not
//! count it as a test), with the role and its arguments in the
//! environment. The child reports back by printing lines to stdout.
//! Every bus a test uses has a unique name and is removed when its guard
//! drops, even if the test panics; children are killed and reaped likewise.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub const ROLE_ENV: &str = "SHMBUS_TEST_ROLE";
pub const ARGS_ENV: &str = "SHMBUS_TEST_ARGS";

/// The environment variable that runs a suite on another transport:
/// `pipe` puts every `TestBus` on pipes, `mq` on POSIX message queues (see
/// `tests/transports.rs`, which runs the suites that way).
pub const TRANSPORT_ENV: &str = "SHMBUS_TEST_TRANSPORT";

/// The transport this run's buses use (`SHMBUS_TEST_TRANSPORT`).
pub fn transport() -> shmbus::Transport {
    match std::env::var(TRANSPORT_ENV).as_deref() {
        Ok("pipe") => shmbus::Transport::Pipe,
        Ok("mq") => shmbus::Transport::Mq,
        _ => shmbus::Transport::SharedMemory,
    }
}

/// Whether this run's buses are on pipes or message queues (a directory
/// bus, frames through the kernel), not in shared memory.
pub fn on_pipes() -> bool {
    transport() != shmbus::Transport::SharedMemory
}

/// Whether this run's buses are on POSIX message queues.
pub fn on_mq() -> bool {
    transport() == shmbus::Transport::Mq
}

/// Who names this run's pipe directory: the test process, whose children
/// are told in their environment.
fn pipe_owner() -> String {
    std::env::var("SHMBUS_TEST_PIPE_OWNER").unwrap_or_else(|_| std::process::id().to_string())
}

/// Where this run's pipe buses live: a directory of the test binary's
/// own, shared with its children.
pub fn pipe_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("shmbus-test-pipes-{}", pipe_owner()))
}

/// Opens bus `name` on this run's transport (a child role's way to join
/// its parent's bus).
pub fn open_bus(name: &str) -> shmbus::Bus {
    shmbus::Bus::builder(name)
        .transport(transport())
        .dir(pipe_dir())
        .open()
        .expect("open bus")
}

/// Says that `test` does not apply on pipes (it looks at a shared
/// segment's insides, or at what only shared memory keeps), where CI
/// counts it, and returns true, when this run is on pipes.
pub fn shm_only(test: &str) -> bool {
    if on_pipes() {
        skip(
            test,
            "shared memory only: not part of the pipe transport's semantics",
        );
        return true;
    }
    false
}

/// The environment variable that says a suite runs on message queues
/// within the default `RLIMIT_MSGQUEUE` (819200 bytes of queues per user,
/// which only a process with `CAP_SYS_RESOURCE` may raise): one test at a
/// time, and tests whose topics need more say so (see [`mq_tight`]).
pub const MQ_TIGHT_ENV: &str = "SHMBUS_TEST_MQ_TIGHT";

/// Whether this run's buses are on message queues within the default
/// `RLIMIT_MSGQUEUE` (`tests/transports.rs` sets [`MQ_TIGHT_ENV`]).
pub fn mq_tight() -> bool {
    on_mq() && std::env::var_os(MQ_TIGHT_ENV).is_some()
}

/// On message queues within the default `RLIMIT_MSGQUEUE`: says SKIPPED
/// for `test`, whose topics need `why`, and returns true.
pub fn needs_roomy_mq(test: &str, why: &str) -> bool {
    if mq_tight() {
        skip(
            test,
            &format!(
                "{why}: more than the 819200 bytes of message queues that RLIMIT_MSGQUEUE \
                 (ulimit -q) allows, and this process may not raise it"
            ),
        );
        return true;
    }
    false
}

/// A bus name unique to this test and process, removed on drop.
pub struct TestBus {
    pub name: String,
}

impl TestBus {
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("test-{tag}-{}-{n}", std::process::id());
        let _ = shmbus::Bus::remove(&name);
        TestBus { name }
    }

    pub fn open(&self) -> shmbus::Bus {
        shmbus::Bus::builder(&self.name)
            .transport(transport())
            .dir(pipe_dir())
            .open()
            .expect("open test bus")
    }

    pub fn path(&self) -> String {
        format!("/dev/shm/shmbus.{}", self.name)
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        let _ = shmbus::Bus::remove(&self.name);
        let _ = shmbus::Bus::remove_pipe(&self.name, &pipe_dir());
        // The last bus of this process takes the directory with it.
        let _ = std::fs::remove_dir(pipe_dir());
    }
}

/// A child process running a test role; killed and reaped on drop.
pub struct ChildProc {
    pub child: Child,
    /// The child's stdout, line by line, from a reader thread (so a child
    /// that never prints cannot hang a test).
    lines: std::sync::mpsc::Receiver<String>,
}

/// Spawns this test binary as a child in `role` with `args`.
pub fn spawn_role(role: &str, args: &[String]) -> ChildProc {
    spawn_role_with_env(role, args, &[])
}

pub fn spawn_role_with_env(role: &str, args: &[String], env: &[(&str, &str)]) -> ChildProc {
    let exe = std::env::current_exe().expect("test binary path");
    spawn_command(Command::new(exe), role, args, env)
}

/// The command that runs this test binary as a child in `role` with
/// `args` (stdout piped, stderr inherited): for tests that drive their
/// children themselves.
pub fn role_command(role: &str, args: &[String]) -> Command {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    add_role(&mut cmd, role, args);
    cmd
}

/// [`role_command`] in a PID namespace of its own (`unshare --pid
/// --fork`), with `/proc` left as it is: the role's pids and thread ids
/// are not those this `/proc` shows (as in a container that sees its
/// host's /proc).
pub fn role_command_in_pid_namespace_without_its_proc(role: &str, args: &[String]) -> Command {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--kill-child"]).arg(exe);
    add_role(&mut cmd, role, args);
    cmd
}

fn add_role(cmd: &mut Command, role: &str, args: &[String]) {
    cmd.args([
        "child_role_entry",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .env(ROLE_ENV, role)
    .env(ARGS_ENV, args.join("\u{1f}"))
    .env("SHMBUS_TEST_PIPE_OWNER", pipe_owner())
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
}

/// Spawns this test binary as a child in `role`, in a PID namespace of its
/// own with its own /proc (`unshare --pid --fork --mount-proc`), as a
/// process in another container sharing /dev/shm would run. The returned
/// `ChildProc` is `unshare`; the role runs as its child, pid 1 of the new
/// namespace (see [`namespaced_pid`]). `--kill-child` ties the role's life
/// to `unshare`'s.
pub fn spawn_role_in_pid_namespace(role: &str, args: &[String], env: &[(&str, &str)]) -> ChildProc {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(exe);
    spawn_command(cmd, role, args, env)
}

/// The host pid of the role that `unshare` (pid `unshare_pid`) runs.
pub fn namespaced_pid(unshare_pid: u32) -> u32 {
    let path = format!("/proc/{unshare_pid}/task/{unshare_pid}/children");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.split_whitespace()
        .next()
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("unshare {unshare_pid} has no child: {text:?}"))
}

/// Whether this machine lets us make PID namespaces (root, or user
/// namespaces); `Err` says why not.
pub fn pid_namespaces_available() -> Result<(), String> {
    match Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stdout(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        Err(e) => Err(format!("cannot run unshare: {e}")),
    }
}

/// A test that cannot create its condition here says so in a line CI
/// counts (`SKIPPED: <test>: <why>`), or fails if `SHMBUS_REQUIRE_NAMESPACES`
/// is set (CI sets it where `unshare` works, so a skip there is a failure).
pub fn skip_or_fail(test: &str, why: &str) {
    if std::env::var_os("SHMBUS_REQUIRE_NAMESPACES").is_some() {
        panic!("{test} cannot run here ({why}) but SHMBUS_REQUIRE_NAMESPACES is set");
    }
    skip(test, why);
}

/// Runs this test binary's child role `role` (with `args`) in a private
/// mount namespace, after the shell command `setup` there (mounting
/// something over /dev/shm, say). Its stdout and stderr once it exited
/// successfully; `None` after saying SKIPPED (or failing, where
/// namespaces must work: see [`skip_or_fail`]) when no such namespace can
/// be made here. Panics if the child failed.
pub fn run_in_mount_namespace(
    test: &str,
    setup: &str,
    role: &str,
    args: &[String],
) -> Option<(String, String)> {
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "{setup} && exec \"$0\" child_role_entry --exact --ignored --nocapture --test-threads=1 -q"
    );
    let out = match Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .arg(&exe)
        .env(ROLE_ENV, role)
        .env(ARGS_ENV, args.join("\u{1f}"))
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            skip_or_fail(test, &format!("cannot run unshare ({e})"));
            return None;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success()
        && (stderr.contains("Operation not permitted") || stderr.contains("mount:"))
    {
        skip_or_fail(
            test,
            &format!("no private mount namespace here ({})", stderr.trim()),
        );
        return None;
    }
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    Some((stdout, stderr))
}

/// Whether this process may register for and call
/// `membarrier(GLOBAL_EXPEDITED)`: what light writers need (a kernel
/// before 4.16 or a seccomp filter says no).
pub fn membarrier_works() -> bool {
    use rustix::thread::{membarrier, MembarrierCommand};
    membarrier(MembarrierCommand::RegisterGlobalExpedited).is_ok()
        && membarrier(MembarrierCommand::GlobalExpedited).is_ok()
}

/// Says that `test` did not run, and why, where CI counts it.
pub fn skip(test: &str, why: &str) {
    let line = format!("SKIPPED: {test}: {why}");
    eprintln!("{line}");
    // Also in a file CI reads, since test output may be captured.
    log_skip(&line);
}

/// Appends `line` (a skip's, `SKIPPED: ...`) to the file CI counts skips
/// in (`SHMBUS_SKIP_LOG`), if there is one.
pub fn log_skip(line: &str) {
    if let Some(path) = std::env::var_os("SHMBUS_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut log) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
        {
            // One write of the whole line: tests skipping at once in two
            // threads (or processes) append whole lines, never merged ones.
            let _ = log.write_all(format!("{line}\n").as_bytes());
        }
    }
}

/// Forwards `stdout`'s lines to a channel from a thread of its own.
fn read_lines(stdout: ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn spawn_command(mut cmd: Command, role: &str, args: &[String], env: &[(&str, &str)]) -> ChildProc {
    add_role(&mut cmd, role, args);
    for (key, value) in env {
        cmd.env(key, value);
    }
    let mut child = cmd.spawn().expect("spawn child role");
    let stdout = child.stdout.take().expect("piped stdout");
    ChildProc {
        child,
        lines: read_lines(stdout),
    }
}

impl ChildProc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads lines until one contains `prefix`; returns the rest of it.
    /// Panics if the child closes its stdout first, or prints no such line
    /// within two minutes (a hung child fails the test, it does not hang it).
    pub fn expect_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                // Anywhere in the line: the test harness of a child prints
                // progress marks without a newline, and a forked grandchild's
                // report can land right after one.
                Ok(line) => {
                    if let Some(at) = line.find(prefix) {
                        return line[at + prefix.len()..].trim().to_owned();
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!(
                    "child {} printed no {prefix:?} within two minutes",
                    self.child.id()
                ),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!(
                    "child {} ended without printing {prefix:?}",
                    self.child.id()
                ),
            }
        }
    }

    /// Every line the child printed that was not read yet, until it
    /// closes its stdout (it exited or was killed), at most two minutes.
    pub fn rest_of_lines(&mut self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return lines,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    panic!("child {} kept its stdout open", self.child.id())
                }
            }
        }
    }

    /// Waits for the child to exit successfully, at most `limit`.
    pub fn wait_success(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                assert!(
                    status.success(),
                    "child {} failed: {status}",
                    self.child.id()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "child {} did not exit within {limit:?}",
                self.child.id()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILL, then reap, so the pid is truly gone (not a zombie).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Arguments for `spawn_role`, from anything printable.
pub fn args(list: &[&dyn ToString]) -> Vec<String> {
    list.iter().map(|a| a.to_string()).collect()
}

/// In a child: the role and its arguments, if this process is one.
pub fn child_role() -> Option<(String, Vec<String>)> {
    let role = std::env::var(ROLE_ENV).ok()?;
    let args = std::env::var(ARGS_ENV).unwrap_or_default();
    let args = if args.is_empty() {
        Vec::new()
    } else {
        args.split('\u{1f}').map(str::to_owned).collect()
    };
    Some((role, args))
}

/// Prints a line for the parent and flushes it at once.
pub fn report(line: impl AsRef<str>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", line.as_ref()).unwrap();
    out.flush().unwrap();
}

/// A 64-byte test message whose every word depends on its sequence number,
/// so a torn copy (words from two messages) fails `is_whole`.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Tick {
    pub seq: u64,
    pub words: [u64; 6],
    pub check: u64,
}

impl Tick {
    pub fn new(seq: u64) -> Self {
        let mut words = [0u64; 6];
        for (i, word) in words.iter_mut().enumerate() {
            *word = seq
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(7 * i as u32 + 1)
                ^ i as u64;
        }
        let check = words.iter().fold(seq, |acc, w| acc ^ w.rotate_left(13));
        Tick { seq, words, check }
    }

    pub fn is_whole(&self) -> bool {
        *self == Tick::new(self.seq)
    }
}

/// Byte message `seq` of `len` bytes: its number, then a pattern of both,
/// so a message of the wrong number, length or a torn copy compares unequal.
pub fn pattern_message(seq: u64, len: usize) -> Vec<u8> {
    let mut msg: Vec<u8> = (0..len)
        .map(|j| (seq.wrapping_mul(131) as usize ^ j.wrapping_mul(29)) as u8)
        .collect();
    let head = 8.min(len);
    msg[..head].copy_from_slice(&seq.to_le_bytes()[..head]);
    msg
}

/// Length of message `seq` of a run seeded with `seed`: 0 to `max`,
/// skewed small (most market data is small, books are not).
pub fn seeded_length(seed: u64, seq: u64, max: u64) -> usize {
    let mut x = seed ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 29;
    (match x % 4 {
        0 => x % (max + 1),
        _ => x % 257,
    }) as usize
}

/// The calling thread's kernel id, for [`blocked_in_futex`].
pub fn thread_id() -> i32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// Whether thread `tid` of this process is blocked in a `futex` system
/// call now (`/proc/self/task/<tid>/syscall` names the call a blocked
/// thread is in). A reader counted in as a sleeper is truly asleep only
/// once this holds: it re-checks the ring between counting itself in and
/// sleeping, and a message sent then is found by the re-check (no sleep).
///
/// Where the file cannot be read (a kernel without it, a sandbox), this
/// says `true`: the caller then goes by the sleeper count alone, as it did
/// before, rather than waiting for something it cannot see.
pub fn blocked_in_futex(tid: i32) -> bool {
    let Ok(call) = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")) else {
        return true;
    };
    // "running", or the number of the system call it is blocked in.
    call.split_whitespace()
        .next()
        .and_then(|nr| nr.parse::<libc::c_long>().ok())
        == Some(libc::SYS_futex)
}

/// Whether thread `tid` of this process is blocked in system call `nr`
/// (`true` where that cannot be read, as [`blocked_in_futex`]).
pub fn blocked_in(tid: i32, nr: libc::c_long) -> bool {
    let Ok(call) = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")) else {
        return true;
    };
    call.split_whitespace()
        .next()
        .and_then(|n| n.parse::<libc::c_long>().ok())
        == Some(nr)
}

/// Polls `cond` until it holds or `limit` passes; returns whether it held.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    cond()
}

/// Every topic of `bus`, failing the test if any entry is corrupt.
pub fn topic_infos(bus: &shmbus::Bus) -> Vec<shmbus::TopicInfo> {
    bus.topics()
        .expect("directory readable")
        .into_iter()
        .map(|t| t.expect("no corrupt topic entry"))
        .collect()
}

/// Index of topic `name`'s directory entry in the segment file at `path`
/// (a bus created with the default number of topics).
pub fn topic_entry_index(path: &str, name: &str) -> usize {
    use shmbus::segment::layout::entry_config_offset;
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path).unwrap();
    for i in 0..shmbus::DEFAULT_TOPICS as usize {
        let mut stored = vec![0u8; name.len() + 1];
        file.read_exact_at(&mut stored, entry_config_offset(i))
            .unwrap();
        if &stored[..name.len()] == name.as_bytes() && stored[name.len()] == 0 {
            return i;
        }
    }
    panic!("topic {name} not found in {path}");
}

/// Offset of topic `name`'s ring region in the segment file at `path`.
pub fn topic_region_offset(path: &str, name: &str) -> u64 {
    use shmbus::segment::layout::entry_config_offset;
    use std::os::unix::fs::FileExt;
    let mut region = [0u8; 8];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(
            &mut region,
            entry_config_offset(topic_entry_index(path, name)) + 160,
        )
        .unwrap();
    u64::from_ne_bytes(region)
}

/// Kill trials per case: 200, or `SHMBUS_KILL_TRIALS`.
pub fn trials() -> u64 {
    std::env::var("SHMBUS_KILL_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(200)
}

/// Offset of the futex word consumers sleep on in work-queue topic
/// `name`'s region: `QueueCtrl::not_empty` is its third cache line.
pub fn not_empty_word(bus: &TestBus, name: &str) -> u64 {
    topic_region_offset(&bus.path(), name) + 128
}

/// The 32-bit word at `offset` of `bus`'s segment file.
pub fn peek_u32(bus: &TestBus, offset: u64) -> u32 {
    use std::os::unix::fs::FileExt;
    let mut word = [0u8; 4];
    std::fs::File::open(bus.path())
        .unwrap()
        .read_exact_at(&mut word, offset)
        .unwrap();
    u32::from_ne_bytes(word)
}

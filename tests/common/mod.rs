//! Helpers for tests that run real processes.
//!
//! A test spawns this same test binary as a child, running only the
//! `child_role_entry` test (marked `#[ignore]`, so a normal run does not
//! count it as a test), with the role and its arguments in the
//! environment. The child reports back by printing lines to stdout.
//! Every bus a test uses has a unique name and is removed when its guard
//! drops, even if the test panics; children are killed and reaped likewise.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub const ROLE_ENV: &str = "SHMBUS_TEST_ROLE";
pub const ARGS_ENV: &str = "SHMBUS_TEST_ARGS";

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
        shmbus::Bus::open(&self.name).expect("open test bus")
    }

    pub fn path(&self) -> String {
        format!("/dev/shm/shmbus.{}", self.name)
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        let _ = shmbus::Bus::remove(&self.name);
    }
}

/// A child process running a test role; killed and reaped on drop.
pub struct ChildProc {
    pub child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

/// Spawns this test binary as a child in `role` with `args`.
pub fn spawn_role(role: &str, args: &[String]) -> ChildProc {
    spawn_role_with_env(role, args, &[])
}

pub fn spawn_role_with_env(role: &str, args: &[String], env: &[(&str, &str)]) -> ChildProc {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
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
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    for (key, value) in env {
        cmd.env(key, value);
    }
    let mut child = cmd.spawn().expect("spawn child role");
    let stdout = child.stdout.take().expect("piped stdout");
    ChildProc {
        child,
        lines: BufReader::new(stdout).lines(),
    }
}

impl ChildProc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads lines until one starts with `prefix`; returns the rest of it.
    /// Panics if the child closes its stdout first.
    pub fn expect_line(&mut self, prefix: &str) -> String {
        for line in self.lines.by_ref() {
            let line = line.expect("read child stdout");
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim().to_owned();
            }
        }
        panic!(
            "child {} ended without printing {prefix:?}",
            self.child.id()
        );
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

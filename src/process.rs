//! Who a process is, and whether it is still alive.
//!
//! Shared state that a process owns (a publisher lease, a half-created topic,
//! a segment being initialised) records the owner as an [`Owner`]: its pid
//! and its start time. A pid alone is not enough, because the kernel reuses
//! pids; the start time (in clock ticks since boot, from `/proc/<pid>/stat`)
//! tells a new process with an old pid from the owner that died.

use std::sync::OnceLock;

use crate::ring::Owner;

/// This process as an [`Owner`], read once.
pub fn current() -> Owner {
    static ME: OnceLock<Owner> = OnceLock::new();
    *ME.get_or_init(|| {
        let pid = std::process::id();
        let start = read_stat(pid).map(|s| s.start_ticks).unwrap_or(0);
        Owner::new(pid, start)
    })
}

/// Whether the process recorded as `owner` still runs.
///
/// A pid that no longer exists, a zombie (killed but not yet reaped: it can
/// never touch the segment again), or a pid now held by a process that
/// started at another time all count as dead. Costs one read of
/// `/proc/<pid>/stat`, so it belongs on slow paths only.
pub fn is_alive(owner: Owner) -> bool {
    if owner.pid() == std::process::id() {
        return owner == current();
    }
    match read_stat(owner.pid()) {
        Some(stat) => !stat.is_zombie && Owner::new(owner.pid(), stat.start_ticks) == owner,
        None => false,
    }
}

/// Whether the test-only hook `name` is switched on for this process, by
/// `SHMBUS_TEST_HOOK=name`. Hooks stop a process at an exact point (such as
/// between creating a segment and marking it ready) so crash tests can kill
/// it there every time. The environment is read once; after that a check
/// is one load and a comparison with `None`, cheap enough for the hooks on
/// the push, pop and lossless-read paths.
#[inline]
fn test_hook(name: &str) -> bool {
    static HOOK: OnceLock<Option<String>> = OnceLock::new();
    HOOK.get_or_init(|| std::env::var("SHMBUS_TEST_HOOK").ok())
        .as_deref()
        == Some(name)
}

/// If the test hook `name` is on, says so on stdout (`SHMBUS-HOOK name`)
/// and stops this process forever, for a crash test to kill it exactly here.
#[inline]
pub fn stall_if_hooked(name: &str) {
    if test_hook(name) {
        stall(name);
    }
}

#[cold]
fn stall(name: &str) -> ! {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "SHMBUS-HOOK {name}");
    let _ = out.flush();
    drop(out);
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

struct Stat {
    is_zombie: bool,
    start_ticks: u64,
}

fn read_stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let after_comm = &text[text.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace();
    let state = fields.next()?; // field 3
    let start_ticks = fields.nth(18)?.parse().ok()?; // field 22
    Some(Stat {
        is_zombie: state == "Z" || state == "X",
        start_ticks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_name() {
        let line =
            "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.start_ticks, 987654);
        assert!(!stat.is_zombie);
    }

    #[test]
    fn current_process_is_alive_and_a_made_up_one_is_not() {
        assert!(is_alive(current()));
        let me = current();
        let impostor = Owner::new(me.pid(), me.start_ticks().wrapping_add(1));
        assert!(!is_alive(impostor));
        assert!(!is_alive(Owner::new(u32::MAX - 7, 1)));
    }
}

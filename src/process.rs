//! Test hooks: points where a crash test can stop this process, to kill it
//! there every time. (Process identity and liveness live in the process
//! table, `segment::procs`.)

use std::sync::OnceLock;

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

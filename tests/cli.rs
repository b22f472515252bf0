//! The `shmbus` command-line tool: `bench --json` prints the fields scripts
//! rely on and leaves nothing behind; `list` and `remove` work on a real bus.

mod common;

use std::process::Command;

use common::TestBus;

fn shmbus() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shmbus"))
}

#[test]
fn bench_json_has_the_documented_fields_and_leaves_nothing_behind() {
    let out = shmbus()
        .args([
            "bench",
            "--quick",
            "--json",
            "--rounds",
            "1",
            "--only",
            "pingpong-spin",
            "--only",
            "queue",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = out.id();
    let out = out.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        4,
        "two latency rows and two queue rows:\n{text}"
    );
    for line in &lines {
        assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
        for field in ["\"bench\":", "\"transport\":", "\"msg_bytes\":64"] {
            assert!(line.contains(field), "{field} missing in {line}");
        }
    }
    let latency = lines[0];
    for field in [
        "\"p50_ns\":",
        "\"p99_ns\":",
        "\"p999_ns\":",
        "\"ratio\":",
        "\"probe_before_ns\":",
    ] {
        assert!(latency.contains(field), "{field} missing in {latency}");
    }
    assert!(lines[2].contains("\"msgs_per_s\":"), "{}", lines[2]);
    assert!(
        leftovers(pid).is_empty(),
        "bench left segments: {:?}",
        leftovers(pid)
    );
}

#[test]
fn list_shows_topics_and_remove_deletes_the_bus() {
    let bus = TestBus::new("cli");
    let b = bus.open();
    let _tx = b.topic("quotes").capacity(16).publisher::<u64>().unwrap();
    let _q = b.topic("jobs").producer::<u64>().unwrap();
    let out = shmbus().args(["list", &bus.name]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("quotes") && text.contains("Broadcast"),
        "{text}"
    );
    assert!(
        text.contains("jobs") && text.contains("WorkQueue"),
        "{text}"
    );
    let out = shmbus().arg("list").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&format!("{} ", bus.name)) && text.contains("2 topics"),
        "{text}"
    );
    let out = shmbus().args(["remove", &bus.name]).output().unwrap();
    assert!(out.status.success());
    assert!(!std::path::Path::new(&bus.path()).exists());
    let out = shmbus().args(["list", &bus.name]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

/// Segments and queues of the harness run with pid `pid`.
fn leftovers(pid: u32) -> Vec<String> {
    let prefixes = [
        format!("shmbus.bench-{pid}-"),
        format!("shmbus-bench-{pid}-"),
    ];
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| prefixes.iter().any(|p| n.starts_with(p)))
        .collect()
}

/// Processes whose environment holds `SHMBUS_TEST_TAG=tag` (the harness
/// and the peers it spawned, which inherit its environment).
fn tagged_processes(tag: &str) -> Vec<String> {
    let needle = format!("SHMBUS_TEST_TAG={tag}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read(e.path().join("environ"))
                .map(|env| env.split(|&b| b == 0).any(|var| var == needle.as_bytes()))
                .unwrap_or(false)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Starts `shmbus bench ARGS` with an environment tag its peers inherit.
fn tagged_bench(args: &[&str], tag: &str) -> std::process::Child {
    shmbus()
        .arg("bench")
        .args(args)
        .env("SHMBUS_TEST_TAG", tag)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Sends SIGINT to the harness, reaps it, and checks that every process
/// carrying `tag` (its peers) is gone soon after.
fn interrupt_and_expect_no_peers(mut harness: std::process::Child, tag: &str, when: &str) {
    // SAFETY: sending SIGINT to our own child, whose pid we hold.
    unsafe { libc::kill(harness.id() as libc::pid_t, libc::SIGINT) };
    harness.wait().unwrap();
    // Peers die with the harness (SIGKILL on parent death); the kernel may
    // take a moment to finish them.
    let gone = common::eventually(std::time::Duration::from_secs(5), || {
        tagged_processes(tag).is_empty()
    });
    assert!(
        gone,
        "peers outlived the harness ({when}): {:?}",
        tagged_processes(tag)
    );
}

#[test]
fn interrupted_bench_leaves_no_segment_and_no_process() {
    for delay_ms in [20u64, 60, 150, 400] {
        let tag = format!("{}-{delay_ms}", std::process::id());
        let child = tagged_bench(&["--quick", "--rounds", "1"], &tag);
        let pid = child.id();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        interrupt_and_expect_no_peers(child, &tag, &format!("SIGINT at {delay_ms} ms"));
        let left = leftovers(pid);
        assert!(
            left.is_empty(),
            "left after SIGINT at {delay_ms} ms: {left:?}"
        );
    }
}

/// Tagged processes whose command line contains `word`.
fn tagged_with(tag: &str, word: &str) -> Vec<String> {
    tagged_processes(tag)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(word))
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn a_peer_blocked_in_a_raw_baseline_dies_with_an_interrupted_harness() {
    // A raw futex echo peer sleeps in the kernel and would wait forever for
    // a ping that never comes: only dying with its parent ends it.
    let tag = format!("{}-futex", std::process::id());
    let child = tagged_bench(&["--only", "pingpong-block", "--rounds", "3"], &tag);
    let seen = common::eventually(std::time::Duration::from_secs(30), || {
        !tagged_with(&tag, "echo-futex").is_empty()
    });
    assert!(seen, "the harness never started a raw futex peer");
    // Let it get past its start-up, into the ping-pong loop.
    std::thread::sleep(std::time::Duration::from_millis(50));
    interrupt_and_expect_no_peers(child, &tag, "a raw futex peer was asleep");
}

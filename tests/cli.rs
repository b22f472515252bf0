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
        .output()
        .unwrap();
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
    let left: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("shmbus.bench-"))
        .collect();
    assert!(left.is_empty(), "bench left segments: {left:?}");
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
    let out = shmbus().args(["remove", &bus.name]).output().unwrap();
    assert!(out.status.success());
    assert!(!std::path::Path::new(&bus.path()).exists());
    let out = shmbus().args(["list", &bus.name]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

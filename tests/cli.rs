//! The `shmbus` command-line tool: `bench --json` prints the fields scripts
//! rely on and leaves nothing behind; `list` and `remove` work on a real bus.

mod common;

use std::process::Command;
use std::time::Duration;

use common::TestBus;

fn shmbus() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shmbus"))
}

/// The JSON rows a successful `bench --json` printed, and its text.
fn bench_rows(out: &std::process::Output) -> (Vec<serde_json::Value>, String) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let rows = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    (rows, text)
}

/// `bench --against OTHER` runs the benchmarks with both builds, in turn,
/// `--runs` times each, and gives every row's figure per run and as a
/// median, for each build; here the other build is this one. Fails if a
/// build's runs are missing, the rows are not matched across builds, or a
/// ratio row shows a rate instead.
#[test]
fn bench_against_another_build_gives_each_rows_runs_and_medians_for_both() {
    // The other build under another name, as a copy of an older one is.
    let dir = std::env::temp_dir().join(format!("shmbus-against-{}", std::process::id()));
    let _remove = RemoveDir(dir.clone());
    std::fs::create_dir_all(&dir).unwrap();
    let other = dir.join("shmbus-before");
    std::fs::copy(env!("CARGO_BIN_EXE_shmbus"), &other).unwrap();
    let other = other.display().to_string();
    let out = shmbus()
        .args([
            "bench",
            "--against",
            &other,
            "--runs",
            "2",
            "--quick",
            "--rounds",
            "1",
            "--only",
            "pingpong-os",
            "--json",
        ])
        .output()
        .unwrap();
    let (rows, text) = bench_rows(&out);
    // pingpong-os: shmbus against the pipe, the Unix socket and the POSIX
    // queue (mq rows only where the queue can be made), each with its raw row.
    assert!(rows.len() >= 4 && rows.len() % 2 == 0, "{text}");
    for row in &rows {
        for build in ["this", "other"] {
            let runs = row[build].as_array().unwrap_or_else(|| panic!("{row}"));
            assert_eq!(runs.len(), 2, "two runs of each build: {row}");
            let median = row[format!("{build}_median")].as_f64().unwrap();
            let (a, b) = (runs[0].as_f64().unwrap(), runs[1].as_f64().unwrap());
            assert!((median - (a + b) / 2.0).abs() < 1e-9, "{row}");
        }
    }
    let ratio = rows
        .iter()
        .find(|r| r["row"] == "pingpong-os shmbus-spin 64B vs pipe")
        .unwrap_or_else(|| panic!("no shmbus row against the pipe:\n{text}"));
    assert_eq!(ratio["figure"], "ratio", "{ratio}");
    let raw = rows
        .iter()
        .find(|r| r["row"] == "pingpong-os pipe 64B")
        .unwrap_or_else(|| panic!("no raw pipe row:\n{text}"));
    assert_eq!(raw["figure"], "p50 ns", "{raw}");

    let missing = shmbus()
        .args(["bench", "--against", "/nonexistent/shmbus", "--quick"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("--against /nonexistent/shmbus: no such file"),
        "{err}"
    );
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
            "--size",
            "16,64",
            "--subscribers",
            "1",
            "--rate",
            "100000",
            "--only",
            "pingpong-spin",
            "--only",
            "queue",
            "--only",
            "fanout",
            "--only",
            "openloop",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = out.id();
    let out = out.wait_with_output().unwrap();
    let (rows, text) = bench_rows(&out);
    // Per size: 3 latency rows (shmbus, the raw cache line, the raw
    // ring), 2 x 2 fanout rows (overwrite and lossless,
    // each with its raw baseline), 2 x 3 queue rows (fixed slots, variable
    // size, raw), 2 x 2 queue rows on pipes (shmbus, the raw FIFO queue),
    // 2 open-loop rows.
    assert_eq!(rows.len(), 2 * 19, "{text}");
    let find = |transport: &str, size: u64| {
        rows.iter()
            .find(|r| r["transport"] == transport && r["msg_bytes"] == size)
            .unwrap_or_else(|| panic!("no {transport} row of {size} bytes:\n{text}"))
    };
    for size in [16, 64] {
        for row in rows.iter().filter(|r| r["msg_bytes"] == size) {
            for field in ["bench", "transport", "probe_before_ns", "probe_after_ns"] {
                assert!(row.get(field).is_some(), "{field} missing in {row}");
            }
        }
        let latency = find("shmbus-spin", size);
        for field in ["p50_ns", "p99_ns", "p999_ns", "max_ns", "ratio"] {
            assert!(latency.get(field).is_some(), "{field} missing in {latency}");
        }
        assert_eq!(latency["baseline"], "raw-cacheline");
        assert_eq!(latency["also_baseline"], "raw-ring", "{latency}");
        assert!(
            latency["also_ratio"].as_f64().is_some_and(|r| r > 0.0),
            "{latency}"
        );
        assert!(find("raw-ring", size).get("p50_ns").is_some());
        for mode in ["overwrite", "lossless"] {
            let fan = find(&format!("shmbus-{mode}-1to1"), size);
            assert_eq!(fan["baseline"], "raw-spmc-1to1", "{fan}");
            assert_eq!(fan["subscribers"], 1, "{fan}");
            for field in ["msgs_per_s", "publisher_msgs_per_s", "ratio"] {
                assert!(fan.get(field).is_some(), "{field} missing in {fan}");
            }
        }
        let raw = find("raw-spmc-1to1", size);
        assert!(raw.get("publisher_msgs_per_s").is_some(), "{raw}");
        for pc in ["1to1", "2to2"] {
            for kind in ["", "-var"] {
                let queue = find(&format!("shmbus-queue{kind}-{pc}"), size);
                assert_eq!(queue["baseline"], format!("raw-mpmc-{pc}"), "{queue}");
            }
            assert!(find(&format!("raw-mpmc-{pc}"), size)
                .get("msgs_per_s")
                .is_some());
            let pipe = find(&format!("shmbus-pipe-queue-{pc}"), size);
            assert_eq!(pipe["baseline"], format!("fifo-queue-{pc}"), "{pipe}");
            assert!(find(&format!("fifo-queue-{pc}"), size)
                .get("msgs_per_s")
                .is_some());
        }
        let open = find("shmbus-overwrite-100000", size);
        assert_eq!(open["baseline"], "raw-spmc-100000", "{open}");
        assert!(open.get("p99_ns").is_some(), "{open}");
    }
    // --json keeps stderr for errors: no progress lines.
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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

#[test]
fn list_and_remove_know_pipe_buses_in_a_directory() {
    let bus = TestBus::new("cli-pipe");
    let dir = common::pipe_dir().join(&bus.name);
    let b = shmbus::Bus::builder(&bus.name)
        .transport(shmbus::Transport::Pipe)
        .dir(&dir)
        .open()
        .unwrap();
    let _tx = b.topic("quotes").capacity(16).publisher::<u64>().unwrap();
    let dir_arg = dir.display().to_string();
    let out = shmbus().args(["list", "--dir", &dir_arg]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{} ", bus.name)))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("pipe") && line.contains("1 topics"), "{line}");
    let out = shmbus()
        .args(["list", &bus.name, "--dir", &dir_arg])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("quotes") && text.contains("Broadcast"),
        "{text}"
    );
    let out = shmbus()
        .args(["remove", &bus.name, "--dir", &dir_arg])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.join(&bus.name).exists());
    let out = shmbus()
        .args(["list", &bus.name, "--dir", &dir_arg])
        .output()
        .unwrap();
    assert!(!out.status.success());
    drop((_tx, b));
    let _ = std::fs::remove_dir(&dir);
    let _ = std::fs::remove_dir(common::pipe_dir());
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

/// The 1-to-1 throughput rows at 1 MiB, where the rings shrink to fit the
/// bench's bus and the counts to a few GB: copy-send and loan-send, each
/// mode, and a lossless subscriber reading in place, each beside the raw
/// SPSC ring, with a GB/s figure.
#[test]
fn bench_throughput_and_fanout_have_loan_in_place_and_variable_rows_and_run_at_a_mebibyte() {
    let out = shmbus()
        .args([
            "bench",
            "--quick",
            "--json",
            "--rounds",
            "1",
            "--size",
            "1048576",
            "--only",
            "throughput-1to1",
            "--only",
            "fanout",
            "--subscribers",
            "1",
        ])
        .output()
        .unwrap();
    let (rows, text) = bench_rows(&out);
    // 7 throughput comparisons (reading in place from 4 KiB up) and 5
    // fanout ones (copy and loan, both modes: loans have fanout rows from
    // 1 KiB up; and lossless subscribers reading in place, from 4 KiB up),
    // each with its baseline.
    assert_eq!(rows.len(), 24, "{text}");
    for transport in [
        "shmbus-overwrite-loan-1to1",
        "shmbus-lossless-loan-1to1",
        "shmbus-lossless-inplace-1to1",
    ] {
        let row = rows
            .iter()
            .find(|r| r["transport"] == transport)
            .unwrap_or_else(|| panic!("no {transport} row:\n{text}"));
        assert_eq!(row["baseline"], "raw-spmc-1to1", "{row}");
    }
    for transport in [
        "shmbus-lossless",
        "shmbus-lossless-loan",
        "shmbus-lossless-var",
        "shmbus-lossless-inplace",
        "shmbus-overwrite",
        "shmbus-overwrite-loan",
        "shmbus-overwrite-var",
    ] {
        let row = rows
            .iter()
            .find(|r| r["transport"] == transport)
            .unwrap_or_else(|| panic!("no {transport} row:\n{text}"));
        assert_eq!(row["baseline"], "raw-spsc-ring", "{row}");
        assert_eq!(row["msg_bytes"], 1048576, "{row}");
        assert!(row["gb_per_s"].as_f64().is_some_and(|g| g > 0.0), "{row}");
    }
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

// ---------------------------------------------------------------------
// The operator tools: stat, tail, pub, export, top, against live buses
// fed by another process.

/// Entry point of child processes; does nothing when run as a normal test.
#[test]
#[ignore = "entry point of child processes; the tests that spawn them run it"]
fn child_role_entry() {
    let Some((role, args)) = common::child_role() else {
        return;
    };
    let bus = shmbus::Bus::open(&args[0]).unwrap();
    match role.as_str() {
        // Known counters on three topics, then waits to be killed.
        "feeder" => {
            let mut quotes = bus.topic("quotes").publisher::<u64>().unwrap();
            for i in 0..10 {
                quotes.send(&i).unwrap();
            }
            let mut books = bus
                .topic("books")
                .variable(1 << 16)
                .publisher_bytes()
                .unwrap();
            books.send_bytes(&[7; 5000]).unwrap();
            // A variable-size work queue: a job of 5000 bytes takes 79
            // units of 64 bytes, a job of 10 one.
            let mut blobs = bus
                .topic("blobs")
                .variable(1 << 16)
                .producer_bytes()
                .unwrap();
            blobs.push_bytes(&[7; 5000]).unwrap();
            blobs.push_bytes(&[8; 10]).unwrap();
            let mut jobs = bus.producer::<u64>("jobs").unwrap();
            let mut worker = bus.consumer::<u64>("jobs").unwrap();
            for i in 0..7 {
                jobs.push(i).unwrap();
            }
            for _ in 0..3 {
                worker.pop().unwrap();
            }
            // Capacity 8: a lossless subscriber of a ring that small stores
            // its cursor at every read (larger rings batch the stores), so
            // the lag the tools show is exact here.
            let mut ll = bus
                .topic("ll")
                .capacity(8)
                .lossless(4)
                .publisher::<u64>()
                .unwrap();
            let mut reader = bus
                .topic("ll")
                .start_at(shmbus::StartAt::Oldest)
                .subscriber::<u64>()
                .unwrap();
            for i in 0..5 {
                ll.send(&i).unwrap();
            }
            reader.recv().unwrap();
            reader.recv().unwrap();
            let mut text = bus.topic("text").publisher_bytes().unwrap();
            for i in 0..20 {
                text.send_bytes(format!("msg-{i}").as_bytes()).unwrap();
            }
            common::report("READY");
            std::thread::sleep(Duration::from_secs(600));
        }
        // Publishes on "ticks" every millisecond until killed.
        "ticker" => {
            let mut tx = bus.topic("ticks").publisher::<u64>().unwrap();
            common::report("READY");
            for i in 0.. {
                tx.send(&i).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// Runs `shmbus ARGS` to the end; fails the test if it fails.
fn run_ok(args: &[&str]) -> String {
    let out = shmbus().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "shmbus {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The topic named `name` in a `stat --json` document.
fn topic<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no topic {name} in {doc}"))
}

#[test]
fn stat_json_parses_and_its_counters_match_what_was_published() {
    let bus = TestBus::new("cli-stat");
    let mut feeder = common::spawn_role("feeder", std::slice::from_ref(&bus.name));
    feeder.expect_line("READY");
    let pid = feeder.pid();
    let doc: serde_json::Value =
        serde_json::from_str(&run_ok(&["stat", &bus.name, "--json"])).unwrap();
    assert_eq!(doc["bus"], bus.name.as_str());
    assert_eq!(doc["corrupt"].as_array().unwrap().len(), 0);

    let quotes = topic(&doc, "quotes");
    assert_eq!(quotes["kind"], "broadcast");
    assert_eq!(quotes["published"], 10);
    assert_eq!(quotes["publisher_pid"], pid);

    assert_eq!(quotes["arena_bytes"], serde_json::Value::Null);
    let books = topic(&doc, "books");
    assert_eq!(
        (&books["kind"], &books["arena_bytes"], &books["slot_size"]),
        (&"broadcast".into(), &65536.into(), &32768.into())
    );
    assert_eq!(books["published"], 1);
    let blobs = topic(&doc, "blobs");
    assert_eq!(
        (
            &blobs["kind"],
            &blobs["arena_bytes"],
            &blobs["slot_size"],
            &blobs["capacity"],
            &blobs["published"]
        ),
        (
            &"work-queue".into(),
            &65536.into(),
            &32752.into(),
            &1024.into(),
            &80.into()
        ),
        "the largest job is half the arena less its header; positions count units"
    );

    let jobs = topic(&doc, "jobs");
    assert_eq!(jobs["kind"], "work-queue");
    assert_eq!(
        (&jobs["published"], &jobs["popped"], &jobs["depth"]),
        (&7.into(), &3.into(), &4.into())
    );
    for role in ["producers", "consumers"] {
        let list = jobs[role].as_array().unwrap();
        assert_eq!(list.len(), 1, "{role}: {jobs}");
        assert_eq!(list[0]["pid"], pid);
        assert_eq!(list[0]["process"], "alive");
    }

    let ll = topic(&doc, "ll");
    assert_eq!(ll["kind"], "lossless-broadcast");
    let subs = ll["subscribers"].as_array().unwrap();
    assert_eq!(subs.len(), 1, "{ll}");
    assert_eq!(
        (&subs[0]["cursor"], &subs[0]["lag"]),
        (&2.into(), &3.into())
    );
    assert_eq!(subs[0]["process"], "alive");

    // The text form says the same, and a killed feeder shows as dead.
    let text = run_ok(&["stat", &bus.name]);
    assert!(text.contains("pushed 7, popped 3, depth 4"), "{text}");
    assert!(
        text.contains("books (broadcast, variable-size): capacity 1024, arena 65536 bytes"),
        "{text}"
    );
    assert!(
        text.contains(
            "blobs (work-queue, variable-size): capacity 1024, arena 65536 bytes (messages up to 32752)"
        ),
        "{text}"
    );
    feeder.kill9();
    let doc: serde_json::Value =
        serde_json::from_str(&run_ok(&["stat", &bus.name, "--json"])).unwrap();
    assert_eq!(
        topic(&doc, "quotes")["publisher_pid"],
        serde_json::Value::Null
    );
    assert_eq!(topic(&doc, "ll")["subscribers"][0]["process"], "dead");

    // A bus that does not exist: one line that says so, exit status 1.
    let out = shmbus()
        .args(["stat", "no-such-bus-here"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("does not exist"), "{err}");

    // A name no bus may have, a benchmark none is named: bad arguments, 2.
    for args in [
        &["list", "a/b"][..],
        &["remove", "a b"],
        &["stat", ".."],
        &["bench", "--only", "no-such-bench"],
        &["bench", "--rounds", "0"],
    ] {
        let out = shmbus().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn tail_n_prints_exactly_the_last_messages_and_leaves_no_trace() {
    let bus = TestBus::new("cli-tail");
    let mut feeder = common::spawn_role("feeder", std::slice::from_ref(&bus.name));
    feeder.expect_line("READY");
    let out = run_ok(&["tail", &bus.name, "text", "-n", "5"]);
    let expected: Vec<String> = (15..20).map(|i| format!("{i} msg-{i}")).collect();
    assert_eq!(out.lines().collect::<Vec<_>>(), expected);
    let out = run_ok(&["tail", &bus.name, "quotes", "-n", "2", "--decode", "u64"]);
    assert_eq!(out, "8 8\n9 9\n");
    // A layout shorter than the message says what it left out.
    let out = run_ok(&["tail", &bus.name, "quotes", "-n", "1", "--decode", "u32"]);
    assert_eq!(out, "9 9 <4 more bytes past the layout>\n");
    let out = run_ok(&["tail", &bus.name, "text", "-n", "1", "--hex"]);
    assert_eq!(out, format!("19 {}\n", hex(b"msg-19")));
    // An observer registers nothing: the lossless table still has the
    // feeder's one subscriber, and no process entry is ours.
    let doc: serde_json::Value =
        serde_json::from_str(&run_ok(&["stat", &bus.name, "--json"])).unwrap();
    assert_eq!(
        topic(&doc, "ll")["subscribers"].as_array().unwrap().len(),
        1
    );
    // A queue cannot be tailed without taking its messages: refused.
    let out = shmbus().args(["tail", &bus.name, "jobs"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("work queue"));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether process `pid` has bus `name`'s segment mapped.
fn maps_bus(pid: u32, name: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .is_ok_and(|maps| maps.contains(&format!("shmbus.{name}")))
}

#[test]
fn tail_never_holds_a_lossless_publisher_back_and_reads_to_the_end() {
    let bus = TestBus::new("cli-tail-ll");
    let b = bus.open();
    let mut tx = b
        .topic("ll")
        .capacity(4)
        .lossless(2)
        .publisher_bytes()
        .unwrap();
    let tail = shmbus()
        .args(["tail", &bus.name, "ll"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = tail.id();
    assert!(
        common::eventually(Duration::from_secs(10), || maps_bus(pid, &bus.name)),
        "tail never opened the bus"
    );
    std::thread::sleep(Duration::from_millis(50));
    for i in 0..100u32 {
        let msg = format!("m{i}");
        assert!(
            tx.try_send_bytes(msg.as_bytes()).is_ok(),
            "message {i}: a lossless publisher was held back by tail"
        );
    }
    assert_eq!(
        tx.receiver_count(),
        Some(0),
        "tail took no subscriber entry"
    );
    drop(tx);
    let out = tail.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().last(), Some("99 m99"), "{text}");
    // Lapped in a ring of 4: what it missed is said, exactly.
    let printed = text.lines().count() as u64;
    let err = String::from_utf8_lossy(&out.stderr);
    let lost: u64 = err
        .lines()
        .filter_map(|l| l.strip_prefix("shmbus tail: lost "))
        .filter(|l| !l.contains("in all"))
        .filter_map(|l| l.split(' ').next()?.parse::<u64>().ok())
        .sum();
    // It opened before the first message: every one is printed or lost.
    assert_eq!(printed + lost, 100, "stdout:\n{text}\nstderr:\n{err}");
}

#[test]
fn pub_from_a_pipe_delivers_every_line_in_order() {
    use std::io::Write;
    let bus = TestBus::new("cli-pub");
    let b = bus.open();
    let mut rx = b
        .topic("lines")
        .capacity(1024)
        .start_at(shmbus::StartAt::Oldest)
        .subscriber_bytes()
        .unwrap();
    let lines: Vec<String> = (0..500)
        .map(|i| format!("line {i}: {}", "x".repeat(i % 37)))
        .collect();
    let mut child = shmbus()
        .args(["pub", &bus.name, "lines"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for line in &lines {
        writeln!(stdin, "{line}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in &lines {
        assert_eq!(rx.recv_bytes().unwrap(), line.as_bytes());
    }
    assert_eq!(rx.recv_bytes(), Err(shmbus::RecvError::Disconnected));

    // --hex: each line is the message in hex; a bad line stops with its number.
    let mut child = shmbus()
        .args(["pub", &bus.name, "lines", "--hex"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"00 ff\n68 69\nzz\n41\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3 is not hex"), "{err}");
    assert_eq!(rx.recv_bytes().unwrap(), [0x00, 0xff]);
    assert_eq!(rx.recv_bytes().unwrap(), b"hi");
    assert_eq!(rx.recv_bytes(), Err(shmbus::RecvError::Disconnected));

    // pub never creates a bus.
    let out = shmbus()
        .args(["pub", "no-such-bus-here", "t"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!std::path::Path::new("/dev/shm/shmbus.no-such-bus-here").exists());

    // A capacity no topic may have: bad arguments, exit 2, saying why.
    let out = shmbus()
        .args(["pub", &bus.name, "new-topic", "--capacity", "3"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("capacity") && err.contains("power of two"),
        "{err}"
    );
}

/// `pub` into a lossless topic whose subscriber does not read says, after
/// a second, which subscriber holds it back, and waits on; once it reads,
/// every line arrives. (It waited without a word.)
#[test]
fn pub_held_back_by_a_lossless_subscriber_says_by_which() {
    use std::io::{BufRead, Write};
    let bus = TestBus::new("cli-pub-held");
    let b = bus.open();
    let mut rx = b
        .topic("lq")
        .capacity(8)
        .lossless(1)
        .subscriber_bytes()
        .unwrap();
    let mut child = Killed(
        shmbus()
            .args(["pub", &bus.name, "lq"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdin = child.0.stdin.take().unwrap();
    for i in 0..20 {
        writeln!(stdin, "{i}").unwrap();
    }
    drop(stdin);
    // Read in a thread, bounded: a `pub` that says nothing would block the
    // read as long as the subscriber does not read.
    let stderr = child.0.stderr.take().unwrap();
    let (tx, said) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut stderr = std::io::BufReader::new(stderr);
        let mut line = String::new();
        let _ = stderr.read_line(&mut line);
        let _ = tx.send(line);
        // Read on to the end: what it says last has somewhere to go.
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
    });
    let said = said
        .recv_timeout(Duration::from_secs(20))
        .expect("pub said nothing within 20 s of being held back");
    assert!(
        said.contains("line 9 waits for room")
            && said.contains(&format!("pid {}", std::process::id()))
            && said.contains("8 messages behind"),
        "{said}"
    );
    for i in 0..20 {
        assert_eq!(rx.recv_bytes().unwrap(), i.to_string().as_bytes());
    }
    let status = child.0.wait().unwrap();
    assert!(status.success());
}

/// Commands that end at once with nothing to show say why: `tail` of a
/// topic whose publisher left, `list --dir` of a path that is no
/// directory.
#[test]
fn commands_with_nothing_to_show_say_why() {
    let bus = TestBus::new("cli-quiet");
    let b = bus.open();
    drop(b.topic("t").publisher::<u64>().unwrap());
    // (Bounded: a tail that waits for a publisher would hang the test.)
    let out = Command::new("timeout")
        .args(["20", env!("CARGO_BIN_EXE_shmbus"), "tail", &bus.name, "t"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no publisher"), "{err}");
    // A topic that never had a publisher: tail waits for one, and says so
    // after a second (it waited without a word).
    let _rx = b.topic("never").subscriber_bytes().unwrap();
    let out = Command::new("timeout")
        .args([
            "5",
            env!("CARGO_BIN_EXE_shmbus"),
            "tail",
            &bus.name,
            "never",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(124), "still waiting when stopped");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}/never has no publisher yet; waiting for one",
            bus.name
        )),
        "{err}"
    );
    let out = shmbus()
        .args(["list", "--dir", "/no/such/dir/here"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a directory"), "{err}");
}

/// A child process killed (and reaped) on drop.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `shmbus export --listen 127.0.0.1:0`, killed on drop, with
/// its stderr kept open (what it says later has somewhere to go).
struct Exporter {
    _child: Killed,
    _stderr: std::io::BufReader<std::process::ChildStderr>,
    /// The port the system picked, as the exporter said it.
    port: u16,
}

/// Starts an exporter with `extra` arguments and waits for its first
/// answer on /metrics: the exporter, and that answer's status line and body.
fn start_exporter(extra: &[&str]) -> (Exporter, (String, String)) {
    let mut child = Killed(
        shmbus()
            .args(["export", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = std::io::BufReader::new(child.0.stderr.take().unwrap());
    let mut said = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut said).unwrap();
    let listen = said
        .trim()
        .strip_prefix("shmbus export: serving http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no address said: {said:?}"))
        .to_owned();
    let port: u16 = listen.rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(port, 0, "the port the system picked, not 0");
    let mut scrape = None;
    assert!(
        common::eventually(Duration::from_secs(10), || {
            scrape = http_get(port, "/metrics");
            scrape.is_some()
        }),
        "the exporter never answered on {listen}"
    );
    let exporter = Exporter {
        _child: child,
        _stderr: stderr,
        port,
    };
    (exporter, scrape.unwrap())
}

/// `GET path` on 127.0.0.1:`port`: the status line and the body.
fn http_get(port: u16, path: &str) -> Option<(String, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_owned(), body.to_owned()))
}

/// The value of the sample `metric{labels}` in a scrape.
fn sample(scrape: &str, metric: &str, labels: &str) -> Option<u64> {
    let prefix = format!("{metric}{{{labels}}} ");
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
}

#[test]
fn exporter_answers_http_with_documented_metrics_that_move() {
    let bus = TestBus::new("cli-export");
    let b = bus.open();
    // Capacity 8: the subscriber stores its cursor at every read.
    let mut tx = b
        .topic("px")
        .capacity(8)
        .lossless(2)
        .publisher::<u64>()
        .unwrap();
    let mut rx = b.topic("px").subscriber::<u64>().unwrap();
    let mut jobs = b.producer::<u64>("jobs").unwrap();
    // Port 0: the system picks one, and the exporter says which.
    let (exporter, (status, body)) = start_exporter(&[]);
    let port = exporter.port;
    assert!(status.contains("200"), "{status}");
    for family in [
        "# TYPE shmbus_topic_published_total counter",
        "# TYPE shmbus_subscriber_lag_messages gauge",
        "# TYPE shmbus_queue_depth_messages gauge",
        "# HELP shmbus_bus_up ",
    ] {
        assert!(body.contains(family), "{family} missing:\n{body}");
    }
    let topic = format!(
        "bus=\"{}\",topic=\"px\",kind=\"lossless-broadcast\"",
        bus.name
    );
    let queue = format!("bus=\"{}\",topic=\"jobs\",kind=\"work-queue\"", bus.name);
    let sub = format!("{topic},entry=\"0\",pid=\"{}\"", std::process::id());
    // Published, the subscriber's lag, the queue's depth.
    let values = |body: &str| {
        [
            sample(body, "shmbus_topic_published_total", &topic),
            sample(body, "shmbus_subscriber_lag_messages", &sub),
            sample(body, "shmbus_queue_depth_messages", &queue),
        ]
    };
    assert_eq!(values(&body), [Some(0); 3], "{body}");

    for i in 0..5 {
        tx.send(&i).unwrap();
        jobs.push(i).unwrap();
    }
    rx.recv().unwrap();
    let (_, body) = http_get(port, "/metrics").unwrap();
    assert_eq!(values(&body), [Some(5), Some(4), Some(5)], "{body}");
    assert_eq!(
        sample(&body, "shmbus_bus_up", &format!("bus=\"{}\"", bus.name)),
        Some(1)
    );
    let (status, _) = http_get(port, "/nothing").unwrap();
    assert!(status.contains("404"), "{status}");
}

/// A tmux server of its own for one test, killed on drop.
struct Tmux(String);

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.0])
            .args(args)
            .output()
            .unwrap()
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "t"]).stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        self.cmd(&args);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.cmd(&["kill-server"]);
    }
}

#[test]
fn top_in_a_real_terminal_shows_live_rates_and_restores_the_terminal() {
    if Command::new("tmux").arg("-V").output().is_err() {
        common::skip("top_in_a_real_terminal", "tmux is not installed");
        return;
    }
    let bus = TestBus::new("cli-top");
    let mut ticker = common::spawn_role("ticker", std::slice::from_ref(&bus.name));
    ticker.expect_line("READY");
    let tmux = Tmux(format!("shmbus-test-{}", std::process::id()));
    let started = tmux.cmd(&["new-session", "-d", "-s", "t", "-x", "80", "-y", "24", "sh"]);
    assert!(started.status.success(), "{started:?}");
    tmux.keys(&["echo BEFORE-TOP", "Enter"]);
    let top = format!(
        "{} top {} --interval-ms 200",
        env!("CARGO_BIN_EXE_shmbus"),
        bus.name
    );
    tmux.keys(&[&top, "Enter"]);
    // The ticker publishes about 1000 msg/s: the rate shows, and moves.
    let rate_of = |screen: &str| -> Option<f64> {
        let line = screen.lines().find(|l| l.starts_with("ticks "))?;
        let rate = line.split_whitespace().nth(2)?;
        match rate.strip_suffix('k') {
            Some(k) => k.parse::<f64>().ok().map(|k| k * 1e3),
            None => rate.parse().ok(),
        }
    };
    let mut screen = String::new();
    assert!(
        common::eventually(Duration::from_secs(20), || {
            screen = tmux.screen();
            rate_of(&screen).is_some_and(|r| r > 0.0)
        }),
        "no live rate for topic ticks:\n{screen}"
    );
    assert!(screen.contains(&format!("bus {}", bus.name)), "{screen}");
    assert!(screen.lines().all(|l| l.chars().count() <= 80), "{screen}");
    let published = |screen: &str| -> Option<u64> {
        let line = screen.lines().find(|l| l.starts_with("ticks "))?;
        line.split_whitespace().nth(4)?.parse().ok()
    };
    let before = published(&screen).unwrap();
    assert!(
        common::eventually(Duration::from_secs(20), || {
            published(&tmux.screen()).is_some_and(|now| now > before)
        }),
        "the published count never moved"
    );
    // A bus that disappears while top runs is shown as gone, not a crash.
    ticker.kill9();
    shmbus::Bus::remove(&bus.name).unwrap();
    assert!(
        common::eventually(Duration::from_secs(20), || tmux
            .screen()
            .contains("does not exist")),
        "{}",
        tmux.screen()
    );
    tmux.keys(&["q"]);
    tmux.keys(&[
        "echo EXITED-$?; stty -a | tr ' ' '\\n' | grep -x -e icanon -e echo",
        "Enter",
    ]);
    assert!(
        common::eventually(Duration::from_secs(20), || tmux
            .screen()
            .contains("EXITED-0")),
        "top did not quit on q:\n{}",
        tmux.screen()
    );
    // stty prints after the echo: wait for its lines.
    let cooked =
        |screen: &str| screen.lines().any(|l| l == "icanon") && screen.lines().any(|l| l == "echo");
    let mut screen = String::new();
    assert!(
        common::eventually(Duration::from_secs(20), || {
            screen = tmux.screen();
            cooked(&screen)
        }),
        "the terminal is out of raw mode:\n{screen}"
    );
    assert!(
        screen.contains("BEFORE-TOP"),
        "the main screen is back:\n{screen}"
    );
}

/// The files in /dev/shm, but for the buses other tests of this binary
/// make meanwhile (theirs are named `test-*` and `bench-*`; `bus` is ours).
fn shm_files(bus: &str) -> std::collections::BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|f| {
            let others = ["shmbus.test-", "shmbus.bench-", "shmbus-init."];
            f.contains(bus) || !others.iter().any(|p| f.starts_with(p))
        })
        .collect()
}

#[test]
fn interrupted_tools_leave_no_segment_no_process_and_no_claim() {
    let bus = TestBus::new("cli-interrupt");
    let b = bus.open();
    let _tx = b.topic("t").lossless(2).publisher_bytes().unwrap();
    drop(_tx);
    let before = shm_files(&bus.name);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let tools: [&[&str]; 4] = [
        &["tail", &bus.name, "t"],
        &["pub", &bus.name, "t"],
        &["export", "--listen", &listen],
        &["top", &bus.name],
    ];
    for args in tools {
        let mut child = shmbus()
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        // Up and running (top without a terminal fails at once, which is
        // fine here: it must leave nothing either).
        let up = common::eventually(Duration::from_secs(10), || {
            let serving = args[0] == "export" && http_get(port, "/metrics").is_some();
            serving || maps_bus(pid, &bus.name) || child.try_wait().unwrap().is_some()
        });
        assert!(up, "shmbus {args:?} never started");
        std::thread::sleep(Duration::from_millis(100));
        // SAFETY: signalling our own child, whose pid we hold.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) };
        // Bounded: a tool that ignores SIGINT (it inherits SIG_IGN when
        // started from a background job without job control) is killed and
        // the test fails saying so, instead of waiting for ever.
        let exited = common::eventually(Duration::from_secs(10), || {
            child.try_wait().unwrap().is_some()
        });
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert!(
            exited,
            "shmbus {args:?} did not exit within 10 s of SIGINT (is SIGINT ignored in this shell?)"
        );
        assert_eq!(
            shm_files(&bus.name),
            before,
            "shmbus {args:?} left files in /dev/shm"
        );
    }
    // pub was interrupted holding the publisher lease: it is free again
    // (its holder is known dead), and no lossless subscriber was left.
    let doc: serde_json::Value =
        serde_json::from_str(&run_ok(&["stat", &bus.name, "--json"])).unwrap();
    let t = topic(&doc, "t");
    assert_eq!(t["publisher_pid"], serde_json::Value::Null, "{t}");
    assert_eq!(t["subscribers"].as_array().unwrap().len(), 0, "{t}");
    assert!(b.topic("t").publisher_bytes().is_ok(), "the lease is free");
}

/// `bench --against` a binary that is no shmbus build (or one that does
/// not know the options) says so before anything runs, rather than after
/// this build's first run of every benchmark.
#[test]
fn bench_against_something_else_fails_before_any_run() {
    // (Bounded: were the check gone, it would run every queue benchmark.)
    let out = Command::new("timeout")
        .args(["60", env!("CARGO_BIN_EXE_shmbus")])
        .args(["bench", "--against", "/bin/true", "--only", "queue"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--against /bin/true: not a shmbus build that takes these options"),
        "{err}"
    );
    assert!(!err.contains("[run 1/"), "it ran a build first: {err}");
}

/// Removes a directory tree when dropped (on a failed assertion too).
struct RemoveDir(std::path::PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_dir(common::pipe_dir());
    }
}

/// `stat`, `tail`, `pub`, `top` and `export` take `--dir` as `list` does:
/// a pipe bus outside the default directory is found there (they looked
/// only in /dev/shm and the default directory); a bus found nowhere is
/// said to be missing from both places looked in, by name.
#[test]
fn every_command_finds_a_pipe_bus_in_the_directory_given() {
    use std::io::Write;
    let bus = TestBus::new("cli-pipe-dir");
    let dir = common::pipe_dir().join(&bus.name);
    let _remove = RemoveDir(dir.clone());
    let d = dir.display().to_string();
    let b = shmbus::Bus::builder(&bus.name)
        .transport(shmbus::Transport::Pipe)
        .dir(&dir)
        .open()
        .unwrap();
    let mut tx = b.topic("lines").capacity(16).publisher_bytes().unwrap();
    let mut rx = b
        .topic("lines")
        .start_at(shmbus::StartAt::Next)
        .subscriber_bytes()
        .unwrap();
    for line in ["a", "b", "c"] {
        tx.send_bytes(line.as_bytes()).unwrap();
    }
    let out = run_ok(&["tail", &bus.name, "lines", "-n", "2", "--dir", &d]);
    assert_eq!(out, "1 b\n2 c\n");
    let doc: serde_json::Value =
        serde_json::from_str(&run_ok(&["stat", &bus.name, "--json", "--dir", &d])).unwrap();
    assert_eq!(topic(&doc, "lines")["published"], 3, "{doc}");
    let all: serde_json::Value =
        serde_json::from_str(&run_ok(&["stat", "--json", "--dir", &d])).unwrap();
    assert!(
        all["buses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["bus"] == bus.name.as_str()),
        "stat of every bus names the one under --dir: {all}"
    );
    drop(tx);
    for line in ["a", "b", "c"] {
        assert_eq!(rx.recv_bytes().unwrap(), line.as_bytes());
    }

    let mut child = shmbus()
        .args(["pub", &bus.name, "lines", "--dir", &d])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"d\ne\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in ["d", "e"] {
        assert_eq!(rx.recv_bytes().unwrap(), line.as_bytes());
    }

    // export: the bus's counters are served.
    let (exporter, (_, body)) = start_exporter(&["--dir", &d]);
    let published = format!(
        "shmbus_topic_published_total{{bus=\"{}\",topic=\"lines\",kind=\"broadcast\"}} 5",
        bus.name
    );
    assert!(body.contains(&published), "{published} missing:\n{body}");
    drop(exporter);

    // Without --dir the bus is nowhere the command looks; with a wrong
    // one, neither: each error names the directory it looked in.
    let default = shmbus::default_pipe_dir().display().to_string();
    for (args, place) in [
        (vec!["stat", &bus.name], default.as_str()),
        (
            vec!["tail", &bus.name, "lines", "--dir", "/no/such/dir"],
            "/no/such/dir",
        ),
        (
            vec!["pub", &bus.name, "lines", "--dir", "/no/such/dir"],
            "/no/such/dir",
        ),
        (
            vec!["top", &bus.name, "--dir", "/no/such/dir"],
            "/no/such/dir",
        ),
    ] {
        let out = shmbus()
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("does not exist")
                && err.contains(&format!("no /dev/shm/shmbus.{}", bus.name))
                && err.contains(&format!("no pipe bus {} in {place}", bus.name)),
            "{args:?}: {err}"
        );
        // The listing to look at is the one of that directory.
        if place != default {
            assert!(
                err.contains(&format!("`shmbus list --dir {place}`")),
                "{err}"
            );
        }
    }
    drop((rx, b));
}

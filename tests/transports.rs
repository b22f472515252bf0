//! The pipe transport. The suites written for shared memory run again
//! here with every bus on pipes (`SHMBUS_TEST_TRANSPORT=pipe`: the same
//! tests, parameterised by `common::TestBus`, not copied); the tests that
//! look inside a shared segment, or at what only a ring keeps (its exact
//! capacity, its futex, a crash hook inside a ring step), say SKIPPED
//! there. The tests below are the pipe transport's own: `Auto` falling
//! back where /dev/shm cannot be used, `kill -9` of producers and
//! consumers, exact loss counts, a corrupt frame, and the directory's life
//! (list, gc, remove).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{args, child_role, report, spawn_role, TestBus, Tick};
use shmbus::{Bus, PopError, RecvError, StartAt, Transport, TryPopError, TryRecvError};

/// Entry point of child processes; does nothing when run as a normal test.
#[test]
#[ignore = "entry point of child processes; the tests that spawn them run it"]
fn child_role_entry() {
    let Some((role, args)) = child_role() else {
        return;
    };
    match role.as_str() {
        // args: bus dir. Opens the bus with `Auto` in a namespace whose
        // /dev/shm is unusable, and uses it.
        "auto" => {
            let bus = Bus::builder(&args[0]).dir(&args[1]).open().unwrap();
            report(format!("TRANSPORT {:?}", bus.transport()));
            let mut rx = bus
                .topic("t")
                .start_at(StartAt::Next)
                .subscriber::<u64>()
                .unwrap();
            let mut tx = bus.publisher::<u64>("t").unwrap();
            let mut jobs = bus.producer::<u64>("q").unwrap();
            let mut worker = bus.consumer::<u64>("q").unwrap();
            for i in 0..1000u64 {
                tx.send(&i).unwrap();
                jobs.push(i).unwrap();
                assert_eq!((rx.recv(), worker.pop()), (Ok(i), Ok(i)));
            }
            report("WORKS");
            drop((tx, rx, jobs, worker, bus));
            Bus::remove_pipe(&args[0], Path::new(&args[1])).unwrap();
        }
        // args: bus dir. Pops ticks, reporting each one's sequence number,
        // until its producers are gone.
        "consumer" => {
            let bus = pipe_bus(&args[0], &args[1]);
            let mut rx = bus
                .topic("jobs")
                .liveness_check_interval(Duration::from_millis(20))
                .consumer::<Tick>()
                .unwrap();
            report("READY");
            loop {
                match rx.pop() {
                    Ok(tick) => {
                        assert!(tick.is_whole(), "torn {tick:?}");
                        report(format!("GOT {}", tick.seq));
                        // Slow enough that the others get their share.
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    Err(PopError::Disconnected) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            report("END");
        }
        // args: bus dir first count. Pushes ticks first..first+count, then
        // waits to be killed.
        "producer" => {
            let bus = pipe_bus(&args[0], &args[1]);
            let first: u64 = args[2].parse().unwrap();
            let count: u64 = args[3].parse().unwrap();
            let mut tx = bus.topic("jobs").producer::<Tick>().unwrap();
            report("READY");
            for seq in first..first + count {
                tx.push(Tick::new(seq)).unwrap();
            }
            report("PUSHED");
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        // args: bus dir. A subscriber that never reads, killed by the test.
        "idle-sub" => {
            let bus = pipe_bus(&args[0], &args[1]);
            let _rx = bus.topic("t").subscriber::<u64>().unwrap();
            report("READY");
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        // args: bus dir count. A slow lossless subscriber: takes 0, 1, ..
        // count - 1 in order, one a millisecond, then reports them.
        "slow-sub" => {
            let bus = pipe_bus(&args[0], &args[1]);
            let count: u64 = args[2].parse().unwrap();
            let mut rx = bus
                .topic("t")
                .start_at(StartAt::Oldest)
                .subscriber::<u64>()
                .unwrap();
            report("READY");
            for want in 0..count {
                std::thread::sleep(Duration::from_millis(1));
                assert_eq!(rx.recv(), Ok(want));
            }
            report(format!("GOT {count}"));
            // Still subscribed until killed: the test reads the
            // publisher's evictions, which a subscriber that left (its
            // queue gone) could otherwise race into.
            std::thread::sleep(Duration::from_secs(600));
        }
        // args: bus dir. With `ulimit -q` at 100 bytes (less than any
        // queue's bookkeeping), subscribes to a topic of 8 messages;
        // reports the error.
        "mq-rlimit" => {
            rustix::process::setrlimit(
                rustix::process::Resource::Msgqueue,
                rustix::process::Rlimit {
                    current: Some(100),
                    maximum: Some(100),
                },
            )
            .unwrap();
            let bus = pipe_bus(&args[0], &args[1]);
            match bus.topic("small").capacity(8).subscriber::<u64>() {
                Ok(_) => report("MADE"),
                Err(e) => report(format!("ERR {e}")),
            }
            // A publisher needs no queue: its topic is made whatever this
            // user's queue budget holds now.
            match bus.topic("feed").capacity(8).publisher::<u64>() {
                Ok(_) => report("PUBLISHER MADE"),
                Err(e) => report(format!("PUBLISHER ERR {e}")),
            }
        }
        // args: bus dir len count capacity [fork-holder]. Publishes
        // messages 0..count of `len` bytes on overwrite topic "t" (see
        // `words_of`), then waits to be killed. With "fork-holder", first
        // forks a child that holds every descriptor inherited (its
        // subscribers' FIFOs open for writing) and sleeps, and reports its
        // pid.
        "publish-bytes" => {
            let bus = pipe_bus(&args[0], &args[1]);
            let len: usize = args[2].parse().unwrap();
            let count: u64 = args[3].parse().unwrap();
            let capacity: u32 = args[4].parse().unwrap();
            let mut tx = bus
                .topic("t")
                .slot_size(len as u32)
                .capacity(capacity)
                .publisher_bytes()
                .unwrap();
            let first = tx.next_seq();
            for seq in first..first + count {
                tx.send_bytes(&words_of(seq, len)).unwrap();
            }
            if args.get(5).is_some_and(|a| a == "fork-holder") {
                // SAFETY: the child only calls `pause`, which is
                // async-signal-safe, as a child of a threaded process must.
                let child = unsafe { libc::fork() };
                if child == 0 {
                    loop {
                        // SAFETY: as above.
                        unsafe { libc::pause() };
                    }
                }
                report(format!("HOLDER {child}"));
            }
            report(format!("SENT {}", tx.next_seq()));
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        // args: bus dir. A publisher, then a subscriber its helper
        // welcomes, the bus removed under them, three messages: reports
        // how many arrived.
        "receive-after-removal" => {
            let b = pipe_bus(&args[0], &args[1]);
            report(format!(
                "RECEIVED {}",
                receive_after_removal(&b, &args[0], Path::new(&args[1]))
            ));
        }
        // args: bus dir, and a system call to refuse with a seccomp filter
        // ("pidfd_getfd", as Docker's default profile does without
        // CAP_SYS_PTRACE; "close_range"), or "none". Opens a
        // publisher with one lossless subscriber before it (welcomed by the
        // sending thread), one after (welcomed by the helper) and one that
        // leaves midway, fills their FIFOs so that the helper writes what
        // is kept, checks every message, and drops it all. Reports the
        // process's descriptors before and after, whether the helper
        // thread had a descriptor table of its own, and whether a pipe
        // whose write end was closed while the publisher was open read as
        // hung up (no copy kept by the helper).
        "publisher-descriptors" => {
            match args[2].as_str() {
                "pidfd_getfd" => refuse_syscall(libc::SYS_pidfd_getfd),
                "close_range" => refuse_syscall(libc::SYS_close_range),
                _ => {}
            }
            let bus = pipe_bus(&args[0], &args[1]);
            let count = || std::fs::read_dir("/proc/self/fd").unwrap().count();
            // The first round also makes the topic, whose local half (a
            // private segment for loans) the bus keeps open.
            let mut counts = vec![];
            let mut rounds = vec![];
            for _ in 0..3 {
                rounds.push(publisher_descriptor_round(&bus));
                counts.push(count());
            }
            let last = rounds[2].clone();
            // The helper's own table neither grows from round to round nor
            // lends standard input, output or error to a FIFO (a panic's
            // message would go into it).
            if last.own {
                // (Less its subscribers' FIFOs or queues: it opens one only
                // once it has something to write to it.)
                let own_files = |r: &DescriptorRound| {
                    r.helper
                        .iter()
                        .filter(|fd| !fd.contains("sub-") && !fd.contains('@'))
                        .count()
                };
                let sizes: Vec<usize> = rounds.iter().map(own_files).collect();
                assert!(sizes.iter().all(|&n| n == sizes[0]), "{rounds:?}");
                for std in ["0 /dev/null", "1 /dev/null", "2 /dev/null"] {
                    assert!(last.helper.iter().any(|fd| fd == std), "{:?}", last.helper);
                }
                for round in &rounds {
                    assert!(
                        !round.helper.iter().any(|fd| fd.ends_with("(deleted)")),
                        "a gone subscriber's FIFO or queue left open: {:?}",
                        round.helper
                    );
                }
            }
            assert!(rounds
                .iter()
                .all(|r| r.own == last.own && r.hung_up == last.hung_up));
            report(format!(
                "DESCRIPTORS {} {} HELPER {} HUNG-UP {}",
                counts[0],
                counts[2],
                if last.own { "own" } else { "shared" },
                last.hung_up
            ));
        }
        // args: bus dir. Subscribes with from one to eight descriptors
        // left (`RLIMIT_NOFILE`), so that some attempts fail midway;
        // reports how many failed and the subscriber FIFOs left after each
        // failure.
        "subscribe-short-of-fds" => {
            let bus = pipe_bus(&args[0], &args[1]);
            let topic_dir = Path::new(&args[1]).join(&args[0]).join("t.t");
            drop(bus.topic("t").subscriber::<u64>().unwrap());
            let (mut failed, mut left) = (0, 0);
            for spare in 1..=8u64 {
                let lowest = std::fs::File::open("/dev/null").map(|f| {
                    use std::os::fd::AsRawFd;
                    f.as_raw_fd() as u64
                });
                let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
                rustix::process::setrlimit(
                    rustix::process::Resource::Nofile,
                    rustix::process::Rlimit {
                        current: Some(lowest.unwrap() + spare),
                        maximum: limit.maximum,
                    },
                )
                .unwrap();
                let result = bus.topic("t").subscriber::<u64>();
                rustix::process::setrlimit(rustix::process::Resource::Nofile, limit).unwrap();
                if result.is_err() {
                    failed += 1;
                    left += std::fs::read_dir(&topic_dir)
                        .unwrap()
                        .filter_map(Result::ok)
                        .filter(|e| e.file_name().to_string_lossy().ends_with(".fifo"))
                        .count();
                }
            }
            report(format!("FAILED {failed} LEFT {left}"));
        }
        other => panic!("unknown child role {other}"),
    }
}

/// Message `seq` of `len` bytes: `seq`'s bytes again and again.
fn words_of(seq: u64, len: usize) -> Vec<u8> {
    seq.to_le_bytes().into_iter().cycle().take(len).collect()
}

/// Receives until `Disconnected` (for at most 10 s, a timeout failing
/// the test): every message must be message `next_seq` whole (`words_of`);
/// returns (received, lagged).
fn receive_until_disconnected(
    rx: &mut shmbus::Subscriber<shmbus::Bytes>,
    len: usize,
) -> (u64, u64) {
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let (mut received, mut lagged) = (0u64, 0u64);
    loop {
        let seq = rx.next_seq();
        let left = until.saturating_duration_since(std::time::Instant::now());
        match rx.recv_bytes_timeout(left) {
            Ok(msg) => {
                assert_eq!(msg, words_of(seq, len).as_slice(), "message {seq} torn");
                received += 1;
            }
            Err(shmbus::RecvTimeoutError::Lagged(n)) => lagged += n,
            Err(shmbus::RecvTimeoutError::Disconnected) => return (received, lagged),
            Err(e) => panic!("after {received} received and {lagged} lost: {e:?}"),
        }
    }
}

/// Bus `name` under `dir`, which the test made (on pipes or message
/// queues: `Auto` joins it on its own).
fn pipe_bus(name: &str, dir: impl AsRef<Path>) -> Bus {
    Bus::builder(name).dir(dir.as_ref()).open().unwrap()
}

/// The one subscriber record in topic directory `dir`.
fn sub_record(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("sub-") && !name.contains('.')
        })
        .expect("a subscriber record")
}

/// The newest executable of test target `suite` beside this one (cargo
/// builds every test target before it runs any).
fn suite_binary(suite: &str) -> PathBuf {
    let me = std::env::current_exe().unwrap();
    let deps = me.parent().unwrap();
    let prefix = format!("{suite}-");
    std::fs::read_dir(deps)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix(&prefix)
                .is_some_and(|hash| hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
        .unwrap_or_else(|| panic!("no test binary of {suite} beside {}", me.display()))
}

/// Runs the test suite `suite` with every bus on pipes; fails if any of
/// its tests fails, or none ran.
fn on_pipes(suite: &str) {
    on_transport(suite, "pipe", Command::new(suite_binary(suite)));
}

/// How the suites run on POSIX message queues: in a private IPC namespace
/// (so that no queue outlives the run), with `fs.mqueue.msg_max` and
/// `msgsize_max` raised there to the kernel's ceilings, as a user would
/// raise them for topics of thousands of messages, and `ulimit -q` raised
/// where this process may (`SHMBUS_TEST_MQ_ROOMY` then says so).
const MQ_SETUP: &str = "echo 65536 > /proc/sys/fs/mqueue/msg_max \
    && echo 1048576 > /proc/sys/fs/mqueue/msgsize_max \
    && { ulimit -q unlimited 2>/dev/null && export SHMBUS_TEST_MQ_ROOMY=1; true; } \
    && exec \"$@\"";

/// A command that runs `program` in a private IPC namespace set up by
/// [`MQ_SETUP`] and prints ROOMY if `ulimit -q` could be raised there;
/// `None` (after saying SKIPPED, or failing where namespaces must work)
/// where no such namespace can be made here.
fn in_mq_namespace(test: &str, program: &Path) -> Option<Command> {
    in_mq_namespace_with(test, program, MQ_SETUP)
}

/// [`in_mq_namespace`] with `setup` (a shell command that ends by running
/// its arguments) in place of [`MQ_SETUP`].
fn in_mq_namespace_with(test: &str, program: &Path, setup: &str) -> Option<Command> {
    // As root an IPC namespace alone; otherwise in a user namespace of
    // our own, where we may set its limits.
    for flags in [&["--ipc"][..], &["--user", "--map-root-user", "--ipc"][..]] {
        let works = Command::new("unshare")
            .args(flags)
            .args(["bash", "-c", setup, "mq-setup", "true"])
            .output()
            .is_ok_and(|o| o.status.success());
        if works {
            let mut cmd = Command::new("unshare");
            cmd.args(flags).args(["bash", "-c", setup, "mq-setup"]);
            cmd.arg(program);
            return Some(cmd);
        }
    }
    common::skip_or_fail(
        test,
        "no private IPC namespace can be made here (unshare --ipc), where the message \
         queue limits can be raised for the suites",
    );
    None
}

/// Whether `ulimit -q` can be raised in [`in_mq_namespace`]'s namespace.
fn mq_roomy() -> bool {
    let Some(mut cmd) = in_mq_namespace("mq_roomy", Path::new("bash")) else {
        return false;
    };
    cmd.args(["-c", "test -n \"$SHMBUS_TEST_MQ_ROOMY\""])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs test suite `suite` on POSIX message queues (see [`MQ_SETUP`]).
fn on_mq(suite: &str) {
    let _turn = mq_turn();
    if let Some(cmd) = in_mq_namespace(&format!("{suite} on mq"), &suite_binary(suite)) {
        on_transport(suite, "mq", cmd);
    }
}

/// Runs `cmd`, the test suite `suite`, with every bus on `transport`;
/// fails if any of its tests fails, or none ran.
fn on_transport(suite: &str, transport: &str, cmd: Command) {
    on_transport_threads(suite, transport, cmd, 2);
}

/// [`on_transport`], running `threads` of the suite's tests at a time.
fn on_transport_threads(suite: &str, transport: &str, mut cmd: Command, threads: usize) {
    // The suite's skips, counted here and passed on to CI's log.
    let skips = std::env::temp_dir().join(format!(
        "shmbus-skips-{suite}-{transport}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&skips);
    let out = cmd
        .arg(format!("--test-threads={threads}"))
        .arg("-q")
        .env(common::TRANSPORT_ENV, transport)
        .env("SHMBUS_SKIP_LOG", &skips)
        .env_remove("SHMBUS_TEST_PIPE_OWNER")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let skip_lines = std::fs::read_to_string(&skips).unwrap_or_default();
    let _ = std::fs::remove_file(&skips);
    let skipped = skip_lines.lines().count();
    for line in skip_lines.lines() {
        common::log_skip(&format!("{line} (on {transport})"));
    }
    let result = stdout
        .lines()
        .find(|l| l.starts_with("test result:"))
        .unwrap_or("no result line");
    // Each skip is in CI's skip log (above), with its reason.
    eprintln!("{suite} on {transport}: {result} ({skipped} of them skipped, each logged)");
    assert!(
        out.status.success() && result.contains("ok."),
        "{suite} on {transport} failed:\n{stdout}\n{stderr}"
    );
    assert!(!result.contains(" 0 passed"), "{suite}: no test ran");
}

#[test]
fn api_suite_on_pipes() {
    on_pipes("api");
}

#[test]
fn queue_api_suite_on_pipes() {
    on_pipes("queue_api");
}

#[test]
fn process_suite_on_pipes() {
    on_pipes("processes");
}

#[test]
fn queue_process_suite_on_pipes() {
    on_pipes("queue_processes");
}

#[test]
fn loan_and_in_place_suites_on_pipes() {
    for suite in ["loans", "read_in_place", "queue_in_place"] {
        on_pipes(suite);
    }
}

#[test]
fn fork_suite_on_pipes() {
    on_pipes("fork");
}

#[test]
fn select_event_fd_and_async_suite_on_pipes() {
    on_pipes("waiting");
}

#[test]
fn variable_and_timestamp_suites_on_pipes() {
    for suite in ["variable", "variable_queue", "timestamps"] {
        on_pipes(suite);
    }
}

/// The suites whose topics fit the default `ulimit -q` (819200 bytes of
/// queues per user) run on message queues everywhere a private IPC
/// namespace can be made.
#[test]
fn api_queue_waiting_and_fork_suites_on_mq() {
    for suite in [
        "api",
        "queue_api",
        "queue_in_place",
        "variable_queue",
        "waiting",
        "fork",
    ] {
        on_mq(suite);
    }
}

/// The suites with topics of thousands of messages (65536 in the fanout
/// test: 9 MiB of queue per subscriber) run on message queues with `ulimit
/// -q` raised where this process may raise it. Where it may not (no
/// `CAP_SYS_RESOURCE`, as in a container), they run within the default
/// 819200 bytes: one test at a time, the fanout test with a smaller ring,
/// and the few tests whose topics cannot fit say SKIPPED, each by name.
/// The variable-size suite runs there with `fs.mqueue.msg_max` left at 10,
/// which is what sizes a variable topic's queue (see `mq::variable_depth`).
#[test]
fn process_loan_variable_and_timestamp_suites_on_mq() {
    let suites = [
        "processes",
        "queue_processes",
        "loans",
        "read_in_place",
        "variable",
        "timestamps",
    ];
    if mq_roomy() {
        for suite in suites {
            on_mq(suite);
        }
        return;
    }
    for suite in suites {
        let msg_max = if suite == "variable" { 10 } else { 65536 };
        let setup = format!(
            "echo {msg_max} > /proc/sys/fs/mqueue/msg_max \
             && echo 1048576 > /proc/sys/fs/mqueue/msgsize_max && exec \"$@\""
        );
        let Some(mut cmd) =
            in_mq_namespace_with(&format!("{suite} on mq"), &suite_binary(suite), &setup)
        else {
            continue;
        };
        cmd.env(common::MQ_TIGHT_ENV, "1");
        let _turn = mq_turn();
        on_transport_threads(suite, "mq", cmd, 1);
    }
}

/// A pipe bus of its own under a directory of its own, removed on drop.
struct PipeBus {
    name: String,
    dir: PathBuf,
    transport: Transport,
    /// On message queues: this test's turn (see [`mq_turn`]), held until
    /// the bus is removed.
    _mq_turn: Option<std::sync::MutexGuard<'static, ()>>,
}

/// Message queues are charged to this user's `RLIMIT_MSGQUEUE` in every
/// IPC namespace at once (819200 bytes by default), and the suites on
/// message queues size their topics to all of it: the tests here that
/// make queues take turns.
fn mq_turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

impl PipeBus {
    fn new(tag: &str) -> Self {
        PipeBus::on(tag, Transport::Pipe)
    }

    /// On `transport`: pipes or message queues (in this IPC namespace, so
    /// its topics hold at most `fs.mqueue.msg_max` messages, 10 by
    /// default).
    fn on(tag: &str, transport: Transport) -> Self {
        let bus = TestBus::new(tag);
        let name = bus.name.clone();
        std::mem::forget(bus);
        // A directory of its own: `gc_pipe` looks at every bus in one.
        PipeBus {
            _mq_turn: (transport == Transport::Mq).then(mq_turn),
            dir: common::pipe_dir().join(&name),
            name,
            transport,
        }
    }

    fn open(&self) -> Bus {
        Bus::builder(&self.name)
            .transport(self.transport)
            .dir(&self.dir)
            .open()
            .unwrap()
    }
}

impl Drop for PipeBus {
    fn drop(&mut self) {
        // Its name's segment too, should a child have opened the name where
        // the directory held no bus (with `Auto`, a segment in /dev/shm).
        let _ = Bus::remove_in(&self.name, &self.dir);
        // The test's own directory, with whatever a failed test left in it.
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir(common::pipe_dir());
    }
}

/// Runs the "auto" role in a private mount namespace where `setup` made
/// /dev/shm unusable: it must land on pipes, and work.
fn auto_falls_back(test: &str, setup: &str) {
    let bus = PipeBus::new("auto");
    std::fs::create_dir_all(&bus.dir).unwrap();
    let args = [bus.name.clone(), bus.dir.display().to_string()];
    let Some((stdout, stderr)) = common::run_in_mount_namespace(test, setup, "auto", &args) else {
        return;
    };
    assert!(stdout.contains("TRANSPORT Pipe"), "{stdout}");
    assert!(stdout.contains("WORKS"), "{stdout}");
    assert!(
        stderr.contains("runs on pipes"),
        "the fallback is said once, with why: {stderr}"
    );
}

#[test]
fn auto_falls_back_to_pipes_where_dev_shm_is_read_only() {
    auto_falls_back(
        "auto_falls_back_to_pipes_where_dev_shm_is_read_only",
        "mount -t tmpfs -o ro tmpfs /dev/shm",
    );
}

#[test]
fn auto_falls_back_to_pipes_where_dev_shm_is_full() {
    auto_falls_back(
        "auto_falls_back_to_pipes_where_dev_shm_is_full",
        "mount -t tmpfs -o size=4k tmpfs /dev/shm",
    );
}

#[test]
fn auto_joins_an_existing_bus_on_its_own_transport() {
    let bus = PipeBus::new("auto-join");
    let on_pipes = bus.open();
    let mut tx = on_pipes.publisher::<u64>("t").unwrap();
    // /dev/shm works here, but the bus exists on pipes: Auto joins it
    // there, never mixing transports within one bus.
    let joined = Bus::builder(&bus.name).dir(&bus.dir).open().unwrap();
    assert_eq!(joined.transport(), Transport::Pipe);
    let mut rx = joined
        .topic("t")
        .start_at(StartAt::Next)
        .subscriber::<u64>()
        .unwrap();
    tx.send(&5).unwrap();
    assert_eq!(rx.recv(), Ok(5));
    assert!(!Path::new(&format!("/dev/shm/shmbus.{}", bus.name)).exists());
}

/// An overwrite subscriber that reads nothing while its FIFO overflows
/// counts exactly what it lost, also what it lost last (the publisher's
/// goodbye says how many it sent).
#[test]
fn a_subscriber_whose_fifo_overflows_counts_exactly_what_it_lost() {
    let bus = PipeBus::new("overflow");
    let b = bus.open();
    let mut rx = b
        .topic("t")
        .start_at(StartAt::Next)
        .subscriber::<Tick>()
        .unwrap();
    let mut tx = b.topic("t").publisher::<Tick>().unwrap();
    const SENT: u64 = 100_000;
    for seq in 0..SENT {
        tx.send(&Tick::new(seq)).unwrap();
    }
    drop(tx);
    let (mut received, mut lagged, mut expect) = (0u64, 0u64, 0u64);
    loop {
        match rx.try_recv() {
            Ok(tick) => {
                assert!(tick.is_whole());
                assert_eq!(tick.seq, expect, "in order");
                expect += 1;
                received += 1;
            }
            Err(TryRecvError::Lagged(n)) => {
                lagged += n;
                expect += n;
            }
            Err(TryRecvError::Disconnected) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        lagged > 0 && received > 0,
        "received {received}, lagged {lagged}"
    );
    assert_eq!(received + lagged, SENT, "every message received or counted");
    assert_eq!(rx.stats().lagged, lagged);
}

/// A name no bus may have is refused before anything is removed: `../x`
/// reached outside the directory given, and a directory there with a
/// `.lock` in it was removed whole (the error came after).
#[test]
fn remove_of_a_bad_name_removes_nothing_outside_the_directory() {
    let bus = PipeBus::new("rm-traversal");
    let victim = bus.dir.join("victim");
    let inner = bus.dir.join("inner");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::create_dir_all(&inner).unwrap();
    std::fs::write(victim.join(".lock"), b"").unwrap();
    std::fs::write(victim.join("precious"), b"keep me").unwrap();
    let err = Bus::remove_in("../victim", &inner).unwrap_err();
    assert!(matches!(err, shmbus::Error::InvalidName { .. }), "{err}");
    assert!(Bus::remove_pipe("../victim", &inner).is_err());
    assert!(
        victim.join("precious").exists(),
        "removed a directory outside the one given"
    );
}

/// A system call that fails on a pipe bus's files names the file: a
/// `--dir` that is a regular file, a topic directory where something else
/// sits (the error said only "Not a directory", not where).
#[test]
fn an_io_error_on_a_pipe_bus_names_the_path() {
    let bus = PipeBus::new("io-path");
    std::fs::create_dir_all(&bus.dir).unwrap();
    let file = bus.dir.join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let err = Bus::builder(&bus.name)
        .transport(Transport::Pipe)
        .dir(&file)
        .open()
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, shmbus::Error::Io { .. }), "{text}");
    let path = file.join(&bus.name);
    assert!(
        text.contains(&format!("({})", path.display())),
        "names {}: {text}",
        path.display()
    );
    assert!(
        text.contains(&format!("{} is not a directory", file.display())),
        "{text}"
    );
    std::fs::remove_file(&file).unwrap();

    let b = bus.open();
    // Where topic "t"'s directory would go, a file.
    let topic_dir = bus.dir.join(&bus.name).join("t.t");
    std::fs::write(&topic_dir, b"in the way").unwrap();
    let err = b.topic("t").publisher::<Tick>().unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&topic_dir.display().to_string()),
        "names {}: {text}",
        topic_dir.display()
    );
    std::fs::remove_file(&topic_dir).unwrap();
}

/// Topic "t" of `bus` with one subscriber (from the next message) and its
/// publisher, and the path of the subscriber's FIFO.
fn one_subscriber_fifo(
    bus: &PipeBus,
) -> (
    Bus,
    shmbus::Subscriber<u64>,
    shmbus::Publisher<u64>,
    PathBuf,
) {
    let b = bus.open();
    let rx = b
        .topic("t")
        .start_at(StartAt::Next)
        .subscriber::<u64>()
        .unwrap();
    let tx = b.topic("t").publisher::<u64>().unwrap();
    let fifo = std::fs::read_dir(bus.dir.join(&bus.name).join("t.t"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "fifo"))
        .expect("the subscriber's FIFO");
    (b, rx, tx, fifo)
}

/// A subscriber reads its FIFO without touching its access time
/// (`O_NOATIME`: each read's update was about a tenth of a 64-byte read's
/// cost), while the publisher's writes still move its modification time,
/// which shows that the clock moved between the looks.
#[test]
fn reading_a_subscribers_fifo_leaves_its_access_time_alone() {
    use std::os::unix::fs::MetadataExt;
    let bus = PipeBus::new("noatime");
    let (_b, mut rx, mut tx, fifo) = one_subscriber_fifo(&bus);
    tx.send(&0).unwrap();
    assert_eq!(rx.recv(), Ok(0));
    let times = || {
        let m = std::fs::metadata(&fifo).unwrap();
        ((m.atime(), m.atime_nsec()), (m.mtime(), m.mtime_nsec()))
    };
    let (atime, mtime) = times();
    // Messages sent and read 25 ms apart (past the coarse clock's tick, a
    // jiffy, at most 10 ms) until a write has moved the modification time,
    // for at most 3 s (a filesystem that keeps whole seconds moves it
    // within one); then five more reads.
    let (mut seq, mut moved_at) = (1, None);
    while moved_at.is_none_or(|at| seq < at + 5) && seq <= 120 {
        std::thread::sleep(std::time::Duration::from_millis(25));
        tx.send(&seq).unwrap();
        assert_eq!(rx.recv(), Ok(seq));
        if moved_at.is_none() && times().1 != mtime {
            moved_at = Some(seq);
        }
        seq += 1;
    }
    if moved_at.is_none() {
        // Counted by CI (SKIPPED, in the skip log): without a moving
        // modification time the test cannot tell an update from none.
        common::skip(
            "reading_a_subscribers_fifo_leaves_its_access_time_alone",
            "120 writes over 3 s did not move the FIFO's modification time here",
        );
        return;
    }
    assert_eq!(times().0, atime, "a read updated the FIFO's access time");
}

/// Bytes that are no frame (here written into a subscriber's FIFO by
/// hand) are reported as corrupt, and the stream goes on at the next
/// good frame.
#[test]
fn a_corrupt_frame_is_reported_and_the_stream_goes_on() {
    let bus = PipeBus::new("corrupt");
    let (_b, mut rx, mut tx, fifo) = one_subscriber_fifo(&bus);
    tx.send(&1).unwrap();
    std::fs::write(&fifo, [0x5a; 77]).unwrap();
    tx.send(&2).unwrap();
    assert_eq!(rx.recv(), Ok(1));
    assert!(matches!(rx.recv(), Err(RecvError::Corrupt { .. })));
    assert_eq!(rx.recv(), Ok(2));
    assert_eq!(rx.stats().corrupt, 1);
}

/// A publisher's history of long frames (over `PIPE_BUF`, each with a
/// trailer) keeps an exact count of its payload bytes however many it
/// drops: a variable-size topic's history holds what its arena would, and
/// a `StartAt::Oldest` subscriber gets exactly that. (Each dropped frame
/// took its trailer's 8 bytes off the count too, which underflowed after
/// about 2,000 frames: a panic in a debug build, an empty history in a
/// release one.)
#[test]
fn a_publishers_history_of_long_frames_keeps_its_byte_count() {
    let bus = PipeBus::new("history");
    let b = bus.open();
    let topic = || b.topic("books").variable(16 << 10);
    let mut tx = topic().publisher_bytes().unwrap();
    let message = |seq: u64| vec![seq as u8; 5000];
    for seq in 0..5000u64 {
        tx.send_bytes(&message(seq)).unwrap();
    }
    // 16 KiB of arena: the last three 5000-byte messages.
    let mut rx = topic()
        .start_at(StartAt::Oldest)
        .subscriber_bytes()
        .unwrap();
    for seq in 4997..5000u64 {
        assert_eq!(rx.next_seq(), seq);
        assert_eq!(rx.recv_bytes().unwrap(), message(seq).as_slice());
    }
    assert_eq!(
        rx.try_recv_bytes().map(<[u8]>::len),
        Err(TryRecvError::Empty)
    );
}

/// A subscriber of overwrite topic "t" (messages of `len` bytes, a ring
/// of `capacity`) whose publisher the test kills: it looks for a gone
/// publisher every 20 ms.
fn subscriber_of_killed(b: &Bus, len: usize, capacity: u32) -> shmbus::Subscriber<shmbus::Bytes> {
    b.topic("t")
        .slot_size(len as u32)
        .capacity(capacity)
        .start_at(StartAt::Next)
        .liveness_check_interval(Duration::from_millis(20))
        .subscriber_bytes()
        .unwrap()
}

/// A publisher killed with `kill -9` in the middle of a long frame (over
/// `PIPE_BUF`, written in parts into a full FIFO): its subscriber gets
/// the whole messages before it, counts the cut one and the rest lost,
/// and is told `Disconnected` (it waited for the rest of the frame for
/// ever, counting nothing).
#[test]
fn a_long_frame_cut_short_by_a_killed_publisher_is_counted_lost() {
    const LEN: usize = 9000;
    let bus = PipeBus::new("cut");
    let b = bus.open();
    let mut rx = subscriber_of_killed(&b, LEN, 4);
    let dir = bus.dir.display().to_string();
    // Ten frames of 9040 bytes (header, message, trailer): more than a FIFO
    // of 64 KiB takes, so one is cut (where pipe-user-pages-soft is spent,
    // a FIFO of one page takes none whole, and the first is cut).
    let mut publisher = spawn_role("publish-bytes", &args(&[&bus.name, &dir, &LEN, &10, &4]));
    assert_eq!(publisher.expect_line("SENT"), "10");
    publisher.kill9();
    let (received, lagged) = receive_until_disconnected(&mut rx, LEN);
    assert_eq!(
        received + lagged,
        10,
        "each message received or counted lost"
    );
    assert!(
        lagged > 0,
        "{received} received, none lost: nothing was cut"
    );
}

/// A publisher killed with `kill -9` after sending more than its
/// subscriber's queue held (overwrite: the rest skipped it): the
/// subscriber gets what its queue held, the rest counted lost from the
/// dead publisher's sequence word, then `Disconnected`: on a FIFO, found
/// at its end of file; on a message queue, which never reads as hung up,
/// from the free lease.
#[test]
fn a_killed_publishers_last_losses_are_counted_before_disconnected() {
    const LEN: usize = 64;
    // More than a FIFO of 64 KiB holds, and far more than a queue's 8.
    const SENT: u64 = 2000;
    for transport in [Transport::Pipe, Transport::Mq] {
        let bus = PipeBus::on("lastloss", transport);
        let b = bus.open();
        let mut rx = subscriber_of_killed(&b, LEN, 8);
        let dir = bus.dir.display().to_string();
        let mut publisher = spawn_role("publish-bytes", &args(&[&bus.name, &dir, &LEN, &SENT, &8]));
        assert_eq!(publisher.expect_line("SENT"), SENT.to_string());
        publisher.kill9();
        let (received, lagged) = receive_until_disconnected(&mut rx, LEN);
        assert_eq!(
            (received + lagged, rx.stats().lagged),
            (SENT, lagged),
            "{transport:?}: {received} received, {lagged} lost"
        );
        assert!(lagged > 0, "{transport:?}: the queue held everything");
    }
}

/// As above, with the FIFO still open for writing after the publisher is
/// killed (by a child it forked, which holds its descriptors): its end of
/// file never comes, and the publisher is found gone by its lease alone.
/// The loss is still counted before `Disconnected` (it was not: the
/// subscriber said `Disconnected` with 672 of 2000 received, none lost).
#[test]
fn a_killed_publishers_losses_are_counted_while_a_child_holds_its_fifo() {
    const LEN: usize = 64;
    const SENT: u64 = 2000;
    let bus = PipeBus::new("holder");
    let b = bus.open();
    let mut rx = subscriber_of_killed(&b, LEN, 8);
    let dir = bus.dir.display().to_string();
    let mut publisher = spawn_role(
        "publish-bytes",
        &args(&[&bus.name, &dir, &LEN, &SENT, &8, &"fork-holder"]),
    );
    let holder: i32 = publisher.expect_line("HOLDER").parse().unwrap();
    /// Kills the forked holder however the test ends.
    struct Holder(i32);
    impl Drop for Holder {
        fn drop(&mut self) {
            // SAFETY: a plain kill of our grandchild's pid (init reaps it,
            // its parent being gone).
            unsafe {
                libc::kill(self.0, libc::SIGKILL);
            }
        }
    }
    let _holder = Holder(holder);
    assert_eq!(publisher.expect_line("SENT"), SENT.to_string());
    publisher.kill9();
    let (received, lagged) = receive_until_disconnected(&mut rx, LEN);
    assert_eq!(
        received + lagged,
        SENT,
        "{received} received, {lagged} lost"
    );
    assert!(lagged > 0, "the FIFO held everything");
}

/// A publisher killed with `kill -9` while its helper thread writes a new
/// `StartAt::Oldest` subscriber's history (far more than the FIFO holds),
/// and a new publisher that takes over while the FIFO still holds the
/// dead one's frames: the subscriber gets whole messages, the history's
/// rest counted lost, then the new publisher's (sent or counted lost:
/// overwrite), never a message made of two publishers' bytes. Where the
/// FIFO's size put the dead one's last write inside a 96-byte frame, the
/// new publisher's welcome was read as that frame's rest: a torn message
/// delivered as a good one (that the kept frames are written so as to end
/// only between frames is the unit test
/// `kept_small_frames_are_written_whole_or_not_at_all`).
#[test]
fn a_publisher_killed_while_writing_a_history_leaves_no_torn_message() {
    const LEN: usize = 64;
    const SENT: u64 = 1 << 16;
    let bus = PipeBus::new("torn");
    let dir = bus.dir.display().to_string();
    // Made here first: the children join it on pipes.
    let b = bus.open();
    let mut first = spawn_role(
        "publish-bytes",
        &args(&[&bus.name, &dir, &LEN, &SENT, &SENT]),
    );
    assert_eq!(first.expect_line("SENT"), SENT.to_string());
    let mut rx = b
        .topic("t")
        .start_at(StartAt::Oldest)
        .liveness_check_interval(Duration::from_millis(20))
        .subscriber_bytes()
        .unwrap();
    first.kill9();
    // Takes over (and welcomes us) while the dead one's frames are unread.
    let mut second = spawn_role("publish-bytes", &args(&[&bus.name, &dir, &LEN, &3, &SENT]));
    assert_eq!(second.expect_line("SENT"), (SENT + 3).to_string());
    // Past the dead one's frames while the new one lives: its welcome (kept
    // while the FIFO was full) comes right after them.
    let (mut received, mut lagged) = (0u64, 0u64);
    while rx.next_seq() < SENT {
        let seq = rx.next_seq();
        match rx.recv_bytes_timeout(Duration::from_secs(10)) {
            Ok(msg) => {
                assert_eq!(msg, words_of(seq, LEN).as_slice(), "message {seq} torn");
                received += 1;
            }
            Err(shmbus::RecvTimeoutError::Lagged(n)) => lagged += n,
            Err(e) => panic!("after {received} received and {lagged} lost: {e:?}"),
        }
    }
    // Its messages, sent or counted lost (overwrite: it skipped us while
    // our FIFO was full), and `Disconnected` once it is killed too.
    second.kill9();
    let (more, lost) = receive_until_disconnected(&mut rx, LEN);
    received += more;
    lagged += lost;
    assert_eq!(
        received + lagged,
        SENT + 3,
        "each message received or counted lost"
    );
    assert!(
        lagged > 0,
        "the whole history fitted in the FIFO: nothing was cut"
    );
    assert_eq!(rx.stats().corrupt, 0);
}

/// Consumers killed with `kill -9` while they pop: no message is taken
/// twice, and only a message a killed consumer had taken (read from the
/// FIFO, not yet reported) can be missing; the others take the rest and
/// see `Disconnected` once every producer is gone.
#[test]
fn consumers_and_producers_killed_with_kill_9_lose_only_what_they_held() {
    kill_consumers_and_producers(Transport::Pipe);
}

/// The same on message queues: a receive takes a message whole or not at
/// all.
#[test]
fn mq_consumers_and_producers_killed_with_kill_9_lose_only_what_they_held() {
    kill_consumers_and_producers(Transport::Mq);
}

fn kill_consumers_and_producers(transport: Transport) {
    const PER_PRODUCER: u64 = 3000;
    let bus = PipeBus::on("pipe-kill", transport);
    let b = bus.open();
    let dir = bus.dir.display().to_string();
    // Made here, so that the queue and a producer exist before the roles
    // (8 messages: within a message queue's default limit).
    let keep = b.topic("jobs").capacity(8).producer::<Tick>().unwrap();
    let mut consumers: Vec<_> = (0..3)
        .map(|_| {
            let mut c = spawn_role("consumer", &args(&[&bus.name, &dir]));
            c.expect_line("READY");
            c
        })
        .collect();
    let mut producers: Vec<_> = (0..2u64)
        .map(|p| {
            let first = p * PER_PRODUCER;
            let mut c = spawn_role("producer", &args(&[&bus.name, &dir, &first, &PER_PRODUCER]));
            c.expect_line("READY");
            c
        })
        .collect();
    drop(keep);
    let mut seen = vec![0u32; (2 * PER_PRODUCER) as usize];
    let mut record = |line: &str| {
        if let Some(seq) = line.trim().strip_prefix("GOT ") {
            seen[seq.parse::<usize>().unwrap()] += 1;
        }
    };
    // Kill one consumer after it took some, and count all it reported.
    for _ in 0..100 {
        let seq = consumers[0].expect_line("GOT ");
        record(&format!("GOT {seq}"));
    }
    consumers[0].kill9();
    for line in consumers[0].rest_of_lines() {
        record(&line);
    }
    // Producers killed once their messages are in the FIFO: whole frames,
    // and the consumers' `Disconnected` once both are gone.
    for p in &mut producers {
        p.expect_line("PUSHED");
        p.kill9();
    }
    for c in &mut consumers[1..] {
        for line in c.rest_of_lines() {
            record(&line);
        }
        c.wait_success(Duration::from_secs(30));
    }
    let twice = seen.iter().filter(|&&n| n > 1).count();
    let missing = seen.iter().filter(|&&n| n == 0).count();
    assert_eq!(twice, 0, "no message taken twice");
    assert!(
        missing <= 1,
        "{missing} missing: only the one the killed consumer had taken may be"
    );
}

/// A lossless subscriber killed with `kill -9` never holds the publisher
/// back: the write to its FIFO fails (its read end died with it) and it is
/// evicted, counted.
#[test]
fn a_lossless_subscriber_killed_is_evicted_at_once() {
    evict_killed_lossless_subscriber(Transport::Pipe);
}

/// On message queues, where nothing fails when a reader dies: the
/// publisher finds the dead subscriber's record unlocked, within a check
/// interval.
#[test]
fn mq_a_lossless_subscriber_killed_is_evicted() {
    evict_killed_lossless_subscriber(Transport::Mq);
}

/// Sends 0, 1, .. with `try_send` until a lossless subscriber that does
/// not read holds the publisher back: how many went.
fn fill_until_held_back(tx: &mut shmbus::Publisher<u64>) -> u64 {
    let mut sent = 0u64;
    while tx.try_send(&sent).is_ok() {
        sent += 1;
    }
    assert!(sent > 0, "the subscriber's FIFO or queue took nothing");
    sent
}

fn evict_killed_lossless_subscriber(transport: Transport) {
    let bus = PipeBus::on("pipe-evict", transport);
    let b = bus.open();
    let mut tx = b
        .topic("t")
        .capacity(8)
        .lossless(4)
        .publisher::<u64>()
        .unwrap();
    let mut sub = spawn_role("idle-sub", &args(&[&bus.name, &bus.dir.display()]));
    sub.expect_line("READY");
    assert_eq!(tx.receiver_count(), Some(1));
    // Fill its FIFO: the publisher is held back.
    let sent = fill_until_held_back(&mut tx);
    let record = sub_record(&bus.dir.join(&bus.name).join("t.t"));
    sub.kill9();
    tx.send_timeout(&sent, Duration::from_secs(10))
        .expect("the dead subscriber no longer holds the publisher");
    assert_eq!(tx.evictions(), 1);
    assert_eq!(tx.receiver_count(), Some(0));
    assert!(
        !record.exists(),
        "the publisher removed the dead one's files"
    );
}

/// Lossless subscribers that leave (dropped) are not evictions, on pipes
/// or message queues, as in shared memory: only one whose process died
/// is (`a_lossless_subscriber_killed_is_evicted_at_once`). They were
/// counted, since the publisher's next write found their FIFO closed.
fn leaving_is_not_an_eviction(transport: Transport) {
    let bus = PipeBus::on("left", transport);
    let b = bus.open();
    let topic = || {
        b.topic("t")
            .capacity(8)
            .lossless(4)
            .liveness_check_interval(Duration::from_millis(10))
    };
    let mut tx = topic().publisher::<u64>().unwrap();
    for round in 0..3u64 {
        let mut rx = topic().start_at(StartAt::Next).subscriber::<u64>().unwrap();
        tx.send(&round).unwrap();
        assert_eq!(rx.recv(), Ok(round));
        drop(rx);
        // The next sends find it gone (a queue's publisher looks at the
        // records once per check interval).
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(15));
            tx.send(&round).unwrap();
        }
    }
    assert_eq!(tx.receiver_count(), Some(0));
    assert_eq!(tx.evictions(), 0);
    let info = b.topics().unwrap().remove(0).unwrap();
    assert_eq!(info.evictions, 0);
}

#[test]
fn a_lossless_subscriber_that_leaves_a_pipe_bus_is_not_evicted() {
    leaving_is_not_an_eviction(Transport::Pipe);
}

#[test]
fn a_lossless_subscriber_that_leaves_an_mq_bus_is_not_evicted() {
    leaving_is_not_an_eviction(Transport::Mq);
}

/// A `subscriber()` that fails after making its FIFO (out of descriptors)
/// leaves no FIFO behind, and `gc` removes a subscriber FIFO whose record
/// is gone (one left by a process that died between the two).
#[test]
fn a_failed_subscribe_leaves_no_fifo_and_gc_removes_orphans() {
    let bus = PipeBus::new("fifo-leak");
    let b = bus.open();
    drop(b.topic("t").subscriber::<u64>().unwrap());
    let dir = bus.dir.display().to_string();
    let mut child = spawn_role("subscribe-short-of-fds", &args(&[&bus.name, &dir]));
    let line = child.expect_line("FAILED");
    child.wait_success(Duration::from_secs(30));
    let failed: u32 = line.split(' ').next().unwrap().parse().unwrap();
    assert!(failed > 0, "no attempt failed: {line}");
    assert!(
        line.ends_with("LEFT 0"),
        "FIFOs left by failed subscribes: {line}"
    );
    // An orphan, as a maker killed between its record and its FIFO leaves.
    let orphan = bus.dir.join(&bus.name).join("t.t").join("sub-dead.fifo");
    let path = std::ffi::CString::new(orphan.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let removed = Bus::gc_pipe(&bus.dir);
    assert!(
        removed.iter().any(|r| r.ends_with("sub-dead.fifo")),
        "{removed:?}"
    );
    assert!(!orphan.exists());
}

/// What one round of the `publisher-descriptors` role saw.
#[derive(Debug, Clone, PartialEq)]
struct DescriptorRound {
    /// The helper thread had a descriptor table of its own.
    own: bool,
    /// A pipe whose write ends (one numbered below the publisher's
    /// descriptors, one far above) were closed while the publisher was
    /// open read as hung up: the helper kept no copy.
    hung_up: bool,
    /// The helper's descriptors, by number and what they are, before the
    /// publisher dropped.
    helper: Vec<String>,
}

/// One round of the `publisher-descriptors` role on `bus`.
fn publisher_descriptor_round(bus: &Bus) -> DescriptorRound {
    let (probe_read, probe_write) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::NONBLOCK).unwrap();
    let probe_high = rustix::io::fcntl_dupfd_cloexec(&probe_write, 500).unwrap();
    let topic = || bus.topic("t").capacity(8).lossless(4);
    let mut a = topic().subscriber::<u64>().unwrap();
    let mut tx = topic().publisher::<u64>().unwrap();
    // The probe pipe, as the helper's table would show it.
    let probe = std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&probe_read)
    ))
    .unwrap()
    .display()
    .to_string();
    let own = !helper_thread_fds().iter().any(|fd| fd.ends_with(&probe));
    drop((probe_write, probe_high));
    let mut buf = [0u8; 1];
    let hung_up = rustix::io::read(&probe_read, &mut buf) == Ok(0);
    drop(probe_read);
    let mut b = topic().subscriber::<u64>().unwrap();
    let mut c = Some(topic().subscriber::<u64>().unwrap());
    let total = 3000u64;
    let (mut sent, mut got) = (0u64, [0u64; 2]);
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while got[0] < total || got[1] < total {
        assert!(
            std::time::Instant::now() < until,
            "stuck at {sent} sent, {got:?} received"
        );
        let mut moved = false;
        while sent < total && tx.try_send(&sent).is_ok() {
            sent += 1;
            moved = true;
        }
        // The third leaves unread once a queue is full (its own, or the
        // others', which the helper writes as they read): a write finds it
        // gone.
        if sent < total {
            c = None;
        }
        for (i, rx) in [&mut a, &mut b].into_iter().enumerate() {
            loop {
                match rx.try_recv() {
                    Ok(v) => {
                        assert_eq!(v, got[i], "subscriber {i}");
                        got[i] += 1;
                        moved = true;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(e) => panic!("subscriber {i} after {}: {e:?}", got[i]),
                }
            }
        }
        if !moved {
            // The helper writes what the full FIFOs kept.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert!(c.is_none());
    // The helper closes its descriptor of the one that left when the
    // sender nudges it: soon.
    let until = std::time::Instant::now() + Duration::from_secs(2);
    let helper = loop {
        let fds = helper_thread_fds();
        // (A table shared with the process's threads holds the sender's
        // too, which it closes at its next send.)
        let stale = own && fds.iter().any(|fd| fd.ends_with("(deleted)"));
        if !stale || std::time::Instant::now() > until {
            break fds;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    DescriptorRound {
        own,
        hung_up,
        helper,
    }
}

/// The descriptors open in the table of this process's pipe publisher's
/// helper thread (`shmbus-pipe-pub`): each its number and what it is
/// (`/dev/null`, `pipe:[..]`, a path), sorted by number.
fn helper_thread_fds() -> Vec<String> {
    for task in std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(Result::ok)
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == "shmbus-pipe-pub" {
            let mut fds: Vec<(u32, String)> = std::fs::read_dir(task.path().join("fd"))
                .unwrap()
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let fd = e.file_name().to_str()?.parse().ok()?;
                    let what = std::fs::read_link(e.path()).ok()?;
                    Some((fd, what.display().to_string()))
                })
                .collect();
            fds.sort();
            return fds
                .into_iter()
                .map(|(fd, what)| format!("{fd} {what}"))
                .collect();
        }
    }
    panic!("no helper thread");
}

/// Makes system call `nr` fail with `EPERM` in this process from now on,
/// as a seccomp profile that does not allow it does.
fn refuse_syscall(nr: libc::c_long) {
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let filter = [
        // The syscall number (`seccomp_data.nr`, at offset 0).
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: nr as u32,
        },
        stmt(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: plain prctl calls; the filter program outlives the call,
    // which copies it.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &program as *const libc::sock_fprog,
            ),
            0,
            "{}",
            std::io::Error::last_os_error()
        );
    }
}

/// Whether a thread may take a descriptor table of its own here, as the
/// publisher's helper does: `close_range(.., CLOSE_RANGE_UNSHARE)`, then
/// `pidfd_getfd` of this process's descriptors (tried in a thread that
/// ends at once).
fn threads_may_take_their_own_table() -> bool {
    let (read, _write) = rustix::pipe::pipe().unwrap();
    let wanted = std::os::fd::AsRawFd::as_raw_fd(&read);
    std::thread::spawn(move || {
        // SAFETY: leaves this thread with an empty table of its own; it
        // uses no descriptor of the process's after it.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                0u32,
                u32::MAX,
                libc::CLOSE_RANGE_UNSHARE,
            )
        };
        let pidfd = rustix::process::pidfd_open(
            rustix::process::getpid(),
            rustix::process::PidfdFlags::empty(),
        );
        rc == 0
            && pidfd.is_ok_and(|pidfd| {
                rustix::process::pidfd_getfd(
                    &pidfd,
                    wanted,
                    rustix::process::PidfdGetfdFlags::empty(),
                )
                .is_ok()
            })
    })
    .join()
    .unwrap()
}

/// A publisher on pipes or message queues closes every descriptor it and
/// its helper thread opened, whichever welcomed a subscriber and whichever
/// dropped one; its helper has a table of its own (so that the sender's
/// writes are a single-threaded process's, see `PipeTx`), which holds no
/// other file of the process open; and where the system calls that take
/// one are refused (by a seccomp profile: Docker's default refuses
/// `pidfd_getfd` without CAP_SYS_PTRACE), it shares the table and still
/// leaks nothing.
#[test]
fn a_pipe_publisher_and_its_helper_close_what_they_open() {
    let may_own = threads_may_take_their_own_table();
    if !may_own {
        common::skip(
            "a_pipe_publisher_and_its_helper_close_what_they_open (own table)",
            "close_range(CLOSE_RANGE_UNSHARE) or pidfd_getfd is refused here: \
             only the shared table is tried",
        );
    }
    for transport in [Transport::Pipe, Transport::Mq] {
        let bus = PipeBus::on("pubfds", transport);
        let _made = bus.open();
        let dir = bus.dir.display().to_string();
        for refused in ["none", "pidfd_getfd", "close_range"] {
            let mut child =
                spawn_role("publisher-descriptors", &args(&[&bus.name, &dir, &refused]));
            let line = child.expect_line("DESCRIPTORS");
            child.wait_success(Duration::from_secs(60));
            let words: Vec<&str> = line.split(' ').collect();
            assert_eq!(
                words[0], words[1],
                "{transport:?}, {refused} refused: descriptors left: {line}"
            );
            assert!(
                line.ends_with("HUNG-UP true"),
                "{transport:?}, {refused} refused: {line}"
            );
            let own = refused == "none" && may_own;
            let helper = if own { "HELPER own" } else { "HELPER shared" };
            assert!(
                line.contains(helper),
                "{transport:?}, {refused} refused: {line}"
            );
        }
    }
}

/// Bytes written into a work queue's FIFO by something not shmbus (here
/// one, before the first message): the consumer reports one `Corrupt` (the
/// first message, whose last byte its read did not hold: a message is only
/// kept whole from one read, never with a tail that another consumer's
/// read may have swapped), finds where the next frame begins, and takes
/// every message after it. (Each read of a frame's length straddled two
/// frames from then on: all 20 messages were reported corrupt.)
#[test]
fn a_stray_byte_in_a_work_queues_fifo_costs_one_corrupt_report() {
    let bus = PipeBus::new("qstray");
    let b = bus.open();
    let mut tx = b.topic("q").producer::<u64>().unwrap();
    let mut rx = b.topic("q").consumer::<u64>().unwrap();
    let fifo = bus.dir.join(&bus.name).join("t.q").join("queue");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .unwrap()
        .write_all(&[0x5a])
        .unwrap();
    for i in 0..20u64 {
        tx.push(i).unwrap();
    }
    assert!(matches!(rx.try_pop(), Err(TryPopError::Corrupt { .. })));
    for i in 1..20u64 {
        assert_eq!(rx.try_pop(), Ok(i));
    }
    assert_eq!(rx.try_pop(), Err(TryPopError::Empty));
}

/// A topic that its transport refuses (a work queue's slot over
/// `PIPE_BUF` on pipes; a subscriber's queue over `fs.mqueue.msg_max` on
/// message queues) is not recorded: asked again with the options its error
/// points to, in this process or another, it is made. (It was recorded
/// before the refusal, and every later attempt was a `TopicMismatch`
/// until the bus was removed.)
#[test]
fn a_topic_its_transport_refuses_is_not_recorded() {
    let bus = PipeBus::new("refused");
    let b = bus.open();
    let err = b
        .topic("q")
        .slot_size(5000)
        .producer_bytes()
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(|e| e.contains("PIPE_BUF")),
        "{err:?}"
    );
    assert!(b.topic("q").slot_size(100).producer_bytes().is_ok());
    assert!(b.topics().unwrap().len() == 1);

    let msg_max: u32 = std::fs::read_to_string("/proc/sys/fs/mqueue/msg_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(10);
    if lifts_mq_limits() {
        common::skip(
            "a_topic_its_transport_refuses_is_not_recorded (mq)",
            "this process has CAP_SYS_RESOURCE, which lifts fs.mqueue.msg_max",
        );
        return;
    }
    let bus = PipeBus::on("refused-mq", Transport::Mq);
    let b = bus.open();
    let over = (msg_max + 1).next_power_of_two();
    let err = b
        .topic("t")
        .capacity(over)
        .subscriber::<u64>()
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(|e| e.contains("msg_max")),
        "{err:?}"
    );
    // Nor was a publisher's, which no subscriber could have joined.
    assert!(b.topic("t").capacity(over).publisher::<u64>().is_err());
    // (At most 8: a queue within the default `ulimit -q` wherever msg_max
    // was raised.)
    let fits = (1u32 << (31 - msg_max.leading_zeros())).min(8);
    let mut tx = b.topic("t").capacity(fits).publisher::<u64>().unwrap();
    let mut rx = b.topic("t").subscriber::<u64>().unwrap();
    tx.send(&7).unwrap();
    assert_eq!(rx.recv(), Ok(7));
}

/// `topics()` (what `shmbus list` shows) reads a pipe bus's files as
/// untrusted: a FIFO put in place of a topic's `seq`, its `publisher`
/// lease or a subscriber's record reads as nothing, where a plain read
/// blocked in `open` for ever.
#[test]
fn listing_a_pipe_bus_never_blocks_on_a_fifo_in_its_directory() {
    let bus = PipeBus::new("fifo-in-dir");
    let b = bus.open();
    let tx = b.topic("t").publisher::<u64>().unwrap();
    let rx = b.topic("t").subscriber::<u64>().unwrap();
    let topic_dir = bus.dir.join(&bus.name).join("t.t");
    let record = sub_record(&topic_dir);
    drop((tx, rx));
    for file in [topic_dir.join("seq"), topic_dir.join("publisher"), record] {
        let _ = std::fs::remove_file(&file);
        let path = std::ffi::CString::new(file.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    }
    let (done, listed) = std::sync::mpsc::channel();
    let name = bus.name.clone();
    let dir = bus.dir.clone();
    std::thread::spawn(move || {
        let b = Bus::builder(&name).dir(&dir).open().unwrap();
        let _ = done.send(b.topics().map(|t| t.len()));
    });
    let listed = listed
        .recv_timeout(Duration::from_secs(10))
        .expect("topics() blocked on a FIFO in the bus's directory");
    assert_eq!(listed.unwrap(), 1);
}

/// A variable-size work queue on pipes says how many messages wait in it
/// (its frames' size is its capped largest message, also where the arena
/// is under 8 KiB: it was counted from the uncapped one).
#[test]
fn a_variable_queues_depth_on_pipes_counts_its_messages() {
    let bus = PipeBus::new("var-depth");
    let b = bus.open();
    for arena in [4096u64, 16384] {
        let topic = format!("q{arena}");
        let mut tx = b.topic(&topic).variable(arena).producer_bytes().unwrap();
        let _rx = b.topic(&topic).consumer_bytes().unwrap();
        for _ in 0..3 {
            tx.push_bytes(b"job").unwrap();
        }
        let info = b
            .topics()
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .find(|t| t.name == topic)
            .unwrap();
        assert_eq!(info.depth, 3, "arena {arena}: {info:?}");
    }
}

#[test]
fn list_gc_and_remove_know_pipe_buses() {
    list_gc_and_remove(Transport::Pipe);
}

#[test]
fn list_gc_and_remove_know_mq_buses() {
    list_gc_and_remove(Transport::Mq);
}

fn list_gc_and_remove(transport: Transport) {
    let bus = PipeBus::on("dir-life", transport);
    let b = bus.open();
    assert_eq!(b.transport(), transport);
    assert!(Bus::list_pipe(&bus.dir).contains(&bus.name));
    // An overwrite topic: nobody writes to a dead subscriber's FIFO there
    // until the publisher sends, so its files wait for gc.
    let _ = b.topic("t").capacity(8).subscriber::<u64>().unwrap();
    let mut sub = spawn_role("idle-sub", &args(&[&bus.name, &bus.dir.display()]));
    sub.expect_line("READY");
    let topics = b.topics().unwrap();
    assert_eq!(topics.len(), 1);
    let topic = topics[0].as_ref().unwrap();
    assert_eq!(topic.subscribers.len(), 1);
    assert_eq!(topic.subscribers[0].pid, Some(sub.pid()));
    assert_eq!(topic.subscribers[0].process, shmbus::ProcessState::Alive);
    let record = sub_record(&bus.dir.join(&bus.name).join("t.t"));
    assert!(
        Bus::gc_pipe(&bus.dir).is_empty(),
        "a live subscriber's files are kept"
    );
    sub.kill9();
    let topic = b.topics().unwrap().remove(0).unwrap();
    assert_eq!(topic.subscribers[0].process, shmbus::ProcessState::Dead);
    let removed = Bus::gc_pipe(&bus.dir);
    assert_eq!(
        removed.len(),
        2,
        "its record and FIFO (or queue): {removed:?}"
    );
    assert!(!record.exists());
    if transport == Transport::Mq {
        let id = record.file_name().unwrap().to_string_lossy()["sub-".len()..].to_owned();
        let queue = mq_queue(&bus, "t", Some(&id));
        assert!(
            removed.iter().any(|r| r.contains(&queue)),
            "{queue} removed: {removed:?}"
        );
        assert!(!mq_exists(&queue), "{queue} unlinked");
    }
    assert!(Bus::remove_pipe(&bus.name, &bus.dir).unwrap());
    assert!(!Bus::list_pipe(&bus.dir).contains(&bus.name));
    assert!(
        !Bus::remove_pipe(&bus.name, &bus.dir).unwrap(),
        "removed already"
    );
}

/// Subscribers that join all at once, while `gc` runs and the publisher
/// sends, are each welcomed: a record being made is never taken for a dead
/// one (it is locked before it gets its name).
#[test]
fn subscribers_joining_at_once_are_all_welcomed_while_gc_runs() {
    let bus = PipeBus::new("join-race");
    let b = bus.open();
    let mut tx = b.topic("t").publisher::<u64>().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gc = {
        let (dir, stop) = (bus.dir.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let removed = Bus::gc_pipe(&dir);
                assert!(
                    removed.is_empty(),
                    "gc removed a live endpoint's files: {removed:?}"
                );
            }
        })
    };
    for round in 0..10 {
        let mut subs: Vec<_> = std::thread::scope(|s| {
            let joins: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        b.topic("t")
                            .start_at(StartAt::Next)
                            .subscriber::<u64>()
                            .unwrap()
                    })
                })
                .collect();
            joins.into_iter().map(|j| j.join().unwrap()).collect()
        });
        tx.send(&round).unwrap();
        for rx in &mut subs {
            assert_eq!(
                rx.recv_timeout(Duration::from_secs(5)),
                Ok(round),
                "round {round}"
            );
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    gc.join().unwrap();
}

/// Lossless subscribers that join, from the oldest message, while the
/// publisher sends long messages lose nothing: a welcome and history the
/// helper thread could not write at once hold the sends behind them.
#[test]
fn lossless_subscribers_joining_mid_stream_lose_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let bus = PipeBus::new("join-lossless");
    let b = bus.open();
    // A history of 16 long messages and its welcome do not fit a new
    // subscriber's FIFO at once: the helper thread keeps the rest, while
    // the publisher sends.
    let topic = || b.topic("t").capacity(16).lossless(128).slot_size(4064);
    let reader = |mut rx: shmbus::Subscriber<shmbus::Bytes>| {
        std::thread::spawn(move || {
            let mut expect = None;
            loop {
                match rx.recv_bytes() {
                    Ok(msg) => {
                        let seq = u64::from_le_bytes(msg[..8].try_into().unwrap());
                        assert_eq!(msg[8], (seq % 251) as u8);
                        if let Some(e) = expect {
                            assert_eq!(seq, e, "in order, nothing skipped");
                        }
                        expect = Some(seq + 1);
                    }
                    Err(RecvError::Disconnected) => return expect,
                    Err(e) => panic!("a lossless subscriber got {e}"),
                }
            }
        })
    };
    let mut tx = topic().publisher_bytes().unwrap();
    let mut readers = vec![reader(
        topic()
            .start_at(StartAt::Oldest)
            .subscriber_bytes()
            .unwrap(),
    )];
    let joined = std::sync::Arc::new(AtomicBool::new(false));
    let sender = {
        let joined = joined.clone();
        std::thread::spawn(move || {
            let (mut seq, mut after) = (0u64, 0);
            while after < 200 {
                let mut msg = vec![(seq % 251) as u8; 4064];
                msg[..8].copy_from_slice(&seq.to_le_bytes());
                tx.send_bytes(&msg).unwrap();
                seq += 1;
                if joined.load(Ordering::Relaxed) {
                    after += 1;
                }
            }
            seq
        })
    };
    for _ in 0..100 {
        readers.push(reader(
            topic()
                .start_at(StartAt::Oldest)
                .subscriber_bytes()
                .unwrap(),
        ));
    }
    joined.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    for r in readers {
        assert_eq!(r.join().unwrap(), Some(sent), "every message to the end");
    }
    drop(b);
}

#[test]
fn work_queues_on_pipes_name_their_size_limit() {
    let bus = PipeBus::new("q-limit");
    let b = bus.open();
    let err = b.topic("big").slot_size(8192).producer_bytes().unwrap_err();
    assert!(err.to_string().contains("PIPE_BUF"), "{err}");
    let mut tx = b.topic("var").variable(1 << 16).producer_bytes().unwrap();
    let mut rx = b.topic("var").consumer_bytes().unwrap();
    assert_eq!(
        tx.push_bytes(&[1; 5000]),
        Err(shmbus::PushError::TooLarge {
            len: 5000,
            max: 4064
        })
    );
    tx.push_bytes(&[2; 4064]).unwrap();
    tx.push_bytes(b"small").unwrap();
    assert_eq!(rx.pop_bytes().unwrap(), &[2; 4064][..]);
    assert_eq!(rx.pop_bytes().unwrap(), b"small");
}

/// The bus's directory holds what the README says, mode 0700 unless the
/// bus's mode shares it.
#[test]
fn a_pipe_bus_is_private_to_its_user_unless_asked() {
    use std::os::unix::fs::PermissionsExt;
    let bus = PipeBus::new("mode");
    let b = bus.open();
    let _tx = b.publisher::<u64>("t").unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = bus.dir.join(&bus.name);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("t.t").join("config")), 0o600);
    let shared = PipeBus::new("mode-shared");
    let b = Bus::builder(&shared.name)
        .transport(Transport::Pipe)
        .dir(&shared.dir)
        .mode(0o660)
        .open()
        .unwrap();
    let _tx = b.publisher::<u64>("t").unwrap();
    let dir = shared.dir.join(&shared.name);
    assert_eq!(mode(&dir), 0o770);
    assert_eq!(mode(&dir.join("t.t").join("join")), 0o660);
}

/// Whether POSIX message queue `name` exists (in this IPC namespace).
fn mq_exists(name: &str) -> bool {
    let name = std::ffi::CString::new(name).unwrap();
    // SAFETY: a NUL-terminated name; without O_CREAT no more arguments.
    let fd = unsafe { libc::mq_open(name.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK) };
    if fd >= 0 {
        // SAFETY: the descriptor mq_open just gave us.
        unsafe { libc::mq_close(fd) };
    }
    fd >= 0
}

/// A work queue on message queues keeps its messages when every producer
/// and consumer has gone (as shared memory does; a FIFO does not), until
/// the bus is removed, which unlinks its queues. A bus on queues is joined
/// as one by `Auto`, and refused by `Pipe`.
#[test]
fn an_mq_work_queue_outlives_its_endpoints_until_the_bus_is_removed() {
    let bus = PipeBus::on("mq-life", Transport::Mq);
    let b = bus.open();
    let mut tx = b.topic("jobs").capacity(8).producer::<u64>().unwrap();
    for i in 0..5u64 {
        tx.push(i).unwrap();
    }
    drop(tx);
    let queue = mq_queue(&bus, "jobs", None);
    assert!(mq_exists(&queue));
    let auto = Bus::builder(&bus.name).dir(&bus.dir).open().unwrap();
    assert_eq!(auto.transport(), Transport::Mq);
    let mut rx = auto.consumer::<u64>("jobs").unwrap();
    assert_eq!(
        (0..5).map(|_| rx.pop().unwrap()).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    let err = Bus::builder(&bus.name)
        .transport(Transport::Pipe)
        .dir(&bus.dir)
        .open()
        .unwrap_err()
        .to_string();
    assert!(err.contains("runs on mq, not pipe"), "{err}");
    drop((rx, auto, b));
    assert!(Bus::remove_pipe(&bus.name, &bus.dir).unwrap());
    assert!(!mq_exists(&queue), "removing the bus unlinks its queues");
}

/// A topic bigger than the system's queue limits gets an error that names
/// the limit and how to raise it.
#[test]
fn mq_topics_over_the_system_limits_are_refused_with_the_limit_named() {
    let msg_max: u32 = std::fs::read_to_string("/proc/sys/fs/mqueue/msg_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(10);
    let privileged = lifts_mq_limits();
    let bus = PipeBus::on("mq-limits", Transport::Mq);
    let b = bus.open();
    let capacity = (msg_max + 1).next_power_of_two();
    match b.topic("big").capacity(capacity).subscriber::<u64>() {
        Err(e) => {
            let e = e.to_string();
            assert!(
                e.contains("fs.mqueue.msg_max") && e.contains(&format!("{capacity} messages")),
                "{e}"
            );
            // Only the limit it is over: raise msg_max, lower the capacity.
            assert!(
                e.contains(&format!("`sysctl fs.mqueue.msg_max={capacity}`"))
                    && !e.contains("`sysctl fs.mqueue.msgsize_max")
                    && e.contains("Lower the topic's capacity,"),
                "{e}"
            );
        }
        Ok(_) if privileged => common::skip(
            "mq_topics_over_the_system_limits_are_refused_with_the_limit_named (msg_max)",
            "this process has CAP_SYS_RESOURCE, which lifts fs.mqueue.msg_max",
        ),
        Ok(_) => panic!("a queue of {capacity} messages over msg_max {msg_max} was made"),
    }
    // The per-user bytes: a child whose `ulimit -q` is 100 bytes.
    let mut child = spawn_role("mq-rlimit", &args(&[&bus.name, &bus.dir.display()]));
    let line = child.expect_line("ERR ");
    assert!(
        line.contains("RLIMIT_MSGQUEUE") && line.contains("ulimit -q"),
        "{line}"
    );
    let line = child.expect_line("PUBLISHER ");
    assert_eq!(
        line, "MADE",
        "a publisher refused for its user's queue budget"
    );
    child.wait_success(Duration::from_secs(10));
}

/// Makes queue `name` of `maxmsg` messages of `msgsize` bytes, as another
/// program (or a process killed half-way) would leave it.
fn mq_make_raw(name: &str, maxmsg: i64, msgsize: i64) {
    let name = std::ffi::CString::new(name).unwrap();
    // SAFETY: mq_attr is plain integers; all zero is a valid value.
    let mut attr: libc::mq_attr = unsafe { core::mem::zeroed() };
    attr.mq_maxmsg = maxmsg;
    attr.mq_msgsize = msgsize;
    // SAFETY: a NUL-terminated name and a valid attr for O_CREAT.
    let fd = unsafe {
        libc::mq_open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
            0o600 as libc::mode_t,
            &attr as *const libc::mq_attr,
        )
    };
    assert!(fd >= 0, "{}", std::io::Error::last_os_error());
    // SAFETY: the descriptor mq_open gave us.
    unsafe { libc::mq_close(fd) };
}

/// The mq probe queue of the bus in `dir`: one per bus directory and user.
fn probe_name(bus: &str, dir: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let dir = std::fs::canonicalize(dir).unwrap();
    format!(
        "/shmbus.{bus}::probe-{}-{:016x}",
        // SAFETY: getuid has no preconditions.
        unsafe { libc::getuid() },
        shmbus::ring::directory::name_hash(dir.as_os_str().as_bytes())
    )
}

/// `gc` removes what only a process holding a bus's lock makes, once it
/// finds the lock free: a topic configuration being written
/// (`config.<id>`) and a new topic's mq probe queue, left by a process
/// killed before renaming (or removing) them; and endpoint records whose
/// maker died before renaming them into place, once unlocked and a minute
/// old. While someone holds the lock it leaves the first two alone, and a
/// young `.new` record always. `remove` unlinks a probe left behind.
/// (Each was left for ever: neither gc nor remove knew them.)
#[test]
fn gc_removes_what_a_maker_killed_half_way_left() {
    let bus = PipeBus::on("gc-temps", Transport::Mq);
    let b = bus.open();
    let tx = b.topic("t").capacity(8).publisher::<u64>().unwrap();
    let bus_dir = bus.dir.join(&bus.name);
    let topic_dir = bus_dir.join("t.t");
    let temp = topic_dir.join("config.12345-1");
    std::fs::write(&temp, b"half a config").unwrap();
    let (old_record, young_record) = (
        topic_dir.join("sub-dead.new"),
        topic_dir.join("sub-young.new"),
    );
    for record in [&old_record, &young_record] {
        std::fs::write(record, b"1\n").unwrap();
    }
    std::fs::File::options()
        .write(true)
        .open(&old_record)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(120))
        .unwrap();
    let probe = probe_name(&bus.name, &bus_dir);
    mq_make_raw(&probe, 1, 8);

    // The bus's lock held, as by a process making a topic.
    let lock = std::fs::File::open(bus_dir.join(".lock")).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&lock);
    // SAFETY: `fd` is an open descriptor of ours.
    let locked = unsafe { libc::flock(fd, libc::LOCK_EX) };
    assert_eq!(locked, 0);
    let removed = Bus::gc_pipe(&bus.dir);
    assert_eq!(removed, [old_record.display().to_string()]);
    assert!(temp.exists() && mq_exists(&probe) && young_record.exists());
    drop(lock);
    let mut removed = Bus::gc_pipe(&bus.dir);
    removed.sort();
    let mut expected = [temp.display().to_string(), format!("mq {probe}")];
    expected.sort();
    assert_eq!(removed, expected);
    assert!(!temp.exists() && !mq_exists(&probe) && young_record.exists());

    mq_make_raw(&probe, 1, 8);
    drop((tx, b));
    assert!(Bus::remove_pipe(&bus.name, &bus.dir).unwrap());
    let left = mq_exists(&probe);
    if left {
        let name = std::ffi::CString::new(probe.clone()).unwrap();
        // SAFETY: a NUL-terminated name.
        unsafe { libc::mq_unlink(name.as_ptr()) };
    }
    assert!(!left, "remove unlinks a probe queue left behind");
}

/// Sends `bytes` as one message into queue `name` (another program's).
fn mq_send_raw(name: &str, bytes: &[u8]) {
    let name = std::ffi::CString::new(name).unwrap();
    // SAFETY: a NUL-terminated name; without O_CREAT no more arguments.
    let fd = unsafe { libc::mq_open(name.as_ptr(), libc::O_WRONLY | libc::O_NONBLOCK) };
    assert!(fd >= 0, "{}", std::io::Error::last_os_error());
    // SAFETY: `bytes` is valid for reads of its length.
    let sent = unsafe { libc::mq_send(fd, bytes.as_ptr().cast(), bytes.len(), 0) };
    // SAFETY: the descriptor mq_open gave us.
    unsafe { libc::mq_close(fd) };
    assert_eq!(sent, 0, "{}", std::io::Error::last_os_error());
}

/// A work queue's message queue left by another bus of the same name (its
/// directory gone) that holds another number of messages than the
/// topic's capacity is refused with an error that says so and what to do,
/// as one with another message size is, rather than used with a capacity
/// that is not the topic's.
#[test]
fn a_leftover_mq_work_queue_of_another_capacity_is_refused() {
    let bus = PipeBus::on("mq-leftover", Transport::Mq);
    // (Its directory first: the queue's name has its identity. A directory
    // made anew can reuse a removed one's inode, and so its queue names.)
    let b = bus.open();
    let queue = mq_queue(&bus, "q", None);
    let name = std::ffi::CString::new(queue.clone()).unwrap();
    // Frames of an 8-byte message: 32 + 8 bytes; two of them.
    mq_make_raw(&queue, 2, 40);
    let Err(err) = b.topic("q").capacity(4).producer::<u64>() else {
        panic!("a leftover queue of 2 used for a capacity of 4");
    };
    let text = err.to_string();
    // SAFETY: a NUL-terminated name.
    unsafe { libc::mq_unlink(name.as_ptr()) };
    assert!(
        text.contains("holds 2 messages, not the 4") && text.contains("shmbus remove"),
        "{text}"
    );
}

/// The name of topic `topic`'s message queue on mq bus `bus` (a work
/// queue's), or its subscriber `id`'s: tagged with the identity (device
/// and inode) of the bus's directory.
fn mq_queue(bus: &PipeBus, topic: &str, id: Option<&str>) -> String {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(bus.dir.join(&bus.name)).unwrap();
    let queue = format!(
        "/shmbus.{}@{:x}-{:x}:{topic}",
        bus.name,
        meta.dev(),
        meta.ino()
    );
    match id {
        Some(id) => format!("{queue}:{id}"),
        None => queue,
    }
}

/// A publisher dropped and made again at once by the same process while
/// a copy of its lease's descriptor lives in a child another thread is
/// starting (here a child of a raw `fork`, which runs no `atfork` handler,
/// as `posix_spawn`'s does not, and which exits 200 ms later): the new
/// publisher waits for the copy to go and takes the lease. (It said
/// `PublisherBusy`, naming its own process.)
#[test]
fn a_publisher_made_again_at_once_waits_out_a_copy_of_its_lease() {
    let bus = PipeBus::new("relapse");
    let b = bus.open();
    let tx = b.topic("t").publisher::<u64>().unwrap();
    // SAFETY: the raw fork system call; the child only sleeps and exits
    // (system calls alone, as a child of a threaded process must).
    let child = unsafe { libc::syscall(libc::SYS_fork) };
    if child == 0 {
        // SAFETY: as above.
        unsafe {
            libc::usleep(200_000);
            libc::_exit(0);
        }
    }
    assert!(child > 0, "fork: {}", std::io::Error::last_os_error());
    drop(tx);
    let again = b.topic("t").publisher::<u64>();
    // SAFETY: reaps our child.
    unsafe { libc::waitpid(child as i32, std::ptr::null_mut(), 0) };
    assert!(again.is_ok(), "{:?}", again.err());
}

/// A publisher dropped before it ever wrote to a subscriber its helper
/// thread welcomed: the subscriber's FIFO has a writer until the publisher
/// has gone for good. (The helper's descriptor closed as it stopped, and
/// the sending thread opened its own only after: in 69 of 200 drops a
/// reader found the FIFO without a writer, then with one again, while the
/// lease was still held: a subscriber drops a frame begun as cut short
/// then.)
#[test]
fn a_dropped_publisher_leaves_no_gap_without_a_writer() {
    let bus = PipeBus::new("dropgap");
    let b = bus.open();
    let topic_dir = bus.dir.join(&bus.name).join("t.t");
    let mut gaps = 0;
    for _ in 0..50 {
        let tx = b.topic("t").publisher::<u64>().unwrap();
        let rx = b.topic("t").subscriber::<u64>().unwrap();
        let fifo = sub_record(&topic_dir).with_extension("fifo");
        let watcher = rustix::fs::open(
            &fifo,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let done = std::sync::atomic::AtomicBool::new(false);
        let watching = std::sync::Barrier::new(2);
        let gap = std::thread::scope(|s| {
            let watch = s.spawn(|| {
                // A read of an empty FIFO says 0 (end of file) when it has
                // no writer, EAGAIN when it has one.
                let (mut unwritten, mut gap) = (false, false);
                let mut buf = [0u8; 256];
                let mut first = true;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    match rustix::io::read(&watcher, &mut buf) {
                        Ok(0) => unwritten = true,
                        Err(rustix::io::Errno::AGAIN) => gap |= unwritten,
                        _ => {}
                    }
                    if std::mem::take(&mut first) {
                        watching.wait();
                    }
                }
                gap
            });
            // (Dropped once the watcher reads: on a loaded machine it may
            // start late.)
            watching.wait();
            drop(tx);
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            watch.join().unwrap()
        });
        gaps += u32::from(gap);
        drop(rx);
    }
    assert_eq!(gaps, 0, "drops whose FIFO lost its writer and got one back");
}

/// A bus removed (`Bus::remove_pipe`) under a live publisher and a
/// subscriber its helper thread welcomed: the subscriber goes on getting
/// every message, as it does in shared memory (the publisher's sending
/// thread finds the FIFO or queue through the helper's descriptor, not by
/// its removed name; by name, it dropped the subscriber, which got
/// nothing more). Also in a PID namespace whose /proc is not its own,
/// where a thread id names no thread of ours there (the sending thread
/// looked for the helper's descriptors by its id, found none, and dropped
/// the subscriber).
#[test]
fn a_subscriber_goes_on_receiving_after_its_bus_is_removed() {
    let in_namespace = common::pid_namespaces_available();
    if let Err(why) = &in_namespace {
        common::skip_or_fail(
            "a_subscriber_goes_on_receiving_after_its_bus_is_removed (in a PID namespace)",
            why,
        );
    }
    for transport in [Transport::Pipe, Transport::Mq] {
        let bus = PipeBus::on("removed-live", transport);
        assert_eq!(
            receive_after_removal(&bus.open(), &bus.name, &bus.dir),
            3,
            "{transport:?}"
        );
        if in_namespace.is_ok() {
            let bus = PipeBus {
                _mq_turn: None,
                dir: bus.dir.join("in-namespace"),
                name: bus.name.clone(),
                transport,
            };
            drop(bus.open());
            let dir = bus.dir.display().to_string();
            let out = common::role_command_in_pid_namespace_without_its_proc(
                "receive-after-removal",
                &args(&[&bus.name, &dir]),
            )
            .output()
            .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(stdout.contains("RECEIVED 3"), "{transport:?}: {stdout}");
        }
    }
}

/// The messages (of three) that a subscriber welcomed by the helper
/// thread gets after bus `name` in `dir` is removed under it and its
/// publisher.
fn receive_after_removal(b: &Bus, name: &str, dir: &Path) -> u64 {
    let topic = || b.topic("t").capacity(8);
    let mut tx = topic().publisher::<u64>().unwrap();
    let mut rx = topic().subscriber::<u64>().unwrap();
    assert!(Bus::remove_pipe(name, dir).unwrap());
    let mut received = 0;
    for seq in 0..3u64 {
        tx.send(&seq).unwrap();
        if rx.recv_timeout(Duration::from_secs(5)).ok() == Some(seq) {
            received += 1;
        }
    }
    received
}

/// Two mq buses of one name in two directories never share a queue: a
/// work queue's messages stay in their own bus, and removing one bus
/// leaves the other's queues. (Named by bus and topic alone, the second
/// bus's consumer took the first's messages, and removing it unlinked the
/// first's queue.)
#[test]
fn two_mq_buses_of_one_name_in_two_directories_share_no_queue() {
    let first = PipeBus::on("mq-twins", Transport::Mq);
    let second = PipeBus {
        _mq_turn: None,
        dir: first.dir.join("second"),
        name: first.name.clone(),
        transport: Transport::Mq,
    };
    let (a, b) = (first.open(), second.open());
    let mut push_a = a.topic("jobs").capacity(4).producer::<u64>().unwrap();
    let mut pop_a = a.topic("jobs").capacity(4).consumer::<u64>().unwrap();
    let mut pop_b = b.topic("jobs").capacity(4).consumer::<u64>().unwrap();
    push_a.push(7).unwrap();
    assert!(matches!(pop_b.try_pop(), Err(TryPopError::Empty)));
    assert_eq!(pop_a.pop_timeout(Duration::from_secs(5)).unwrap(), 7);
    drop((pop_b, b));
    assert!(Bus::remove_pipe(&second.name, &second.dir).unwrap());
    push_a.push(8).unwrap();
    assert_eq!(pop_a.pop_timeout(Duration::from_secs(5)).unwrap(), 8);
    assert!(mq_exists(&mq_queue(&first, "jobs", None)));
}

/// Whether this process has CAP_SYS_RESOURCE (bit 24), which lifts
/// `fs.mqueue.msg_max` up to the kernel's ceiling.
fn lifts_mq_limits() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let caps = s
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim()
                .to_owned();
            u64::from_str_radix(&caps, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

/// A message in a subscriber's queue that is not one whole frame of ours
/// is dropped and reported, and the stream goes on.
#[test]
fn a_foreign_message_in_an_mq_subscribers_queue_is_reported_and_the_stream_goes_on() {
    let bus = PipeBus::on("mq-corrupt", Transport::Mq);
    let b = bus.open();
    let mut rx = b
        .topic("t")
        .capacity(8)
        .start_at(StartAt::Next)
        .subscriber::<u64>()
        .unwrap();
    let mut tx = b.topic("t").publisher::<u64>().unwrap();
    tx.send(&1).unwrap();
    let record = sub_record(&bus.dir.join(&bus.name).join("t.t"));
    let id = record.file_name().unwrap().to_string_lossy()["sub-".len()..].to_owned();
    // A header's worth of junk: it must not swallow the frame after it.
    mq_send_raw(&mq_queue(&bus, "t", Some(&id)), &[0x5a; 40]);
    tx.send(&2).unwrap();
    assert_eq!(rx.recv(), Ok(1));
    assert!(matches!(rx.recv(), Err(RecvError::Corrupt { .. })));
    assert_eq!(rx.recv(), Ok(2));
    assert_eq!(rx.stats().corrupt, 1);
}

/// A work-queue loan on pipes or message queues looks for room before it
/// is written, as a push does: `try_loan` says `Full` and `loan_timeout`
/// times out in a full queue (they used to lend at once and leave the
/// commit to wait for room, or drop the message when no consumer was
/// left); once a consumer takes a message, the loan is lent and pushed.
fn loans_look_for_room_first(transport: Transport) {
    let bus = PipeBus::on("qloan-room", transport);
    let b = bus.open();
    let topic = || b.topic("q").capacity(8).slot_size(64);
    let mut tx = topic().producer_bytes().unwrap();
    let mut rx = topic().consumer_bytes().unwrap();
    let mut pushed = 0u32;
    while tx.try_push_bytes(&pushed.to_le_bytes()).is_ok() {
        pushed += 1;
        assert!(pushed < 100_000, "a queue that never fills");
    }
    assert!(
        matches!(tx.try_loan_bytes(4), Err(shmbus::TryPushError::Full(()))),
        "a loan lent in a full queue"
    );
    let start = std::time::Instant::now();
    assert!(matches!(
        tx.loan_bytes_timeout(4, Duration::from_millis(30)),
        Err(shmbus::PushTimeoutError::Timeout(()))
    ));
    assert!(start.elapsed() >= Duration::from_millis(30));
    // Room again (on a FIFO a free page: a page of frames taken).
    let mut popped = 0u32;
    let mut loan = loop {
        assert_eq!(rx.pop_bytes().unwrap(), popped.to_le_bytes());
        popped += 1;
        if let Ok(loan) = tx.try_loan_bytes(4) {
            break loan;
        }
    };
    loan.copy_from_slice(&u32::MAX.to_le_bytes());
    loan.commit();
    for seq in popped..pushed {
        assert_eq!(rx.pop_bytes().unwrap(), seq.to_le_bytes());
    }
    assert_eq!(rx.pop_bytes().unwrap(), u32::MAX.to_le_bytes());
    assert!(rx.try_pop_bytes().is_err());
}

#[test]
fn a_work_queue_loan_on_pipes_waits_for_room_as_a_push_does() {
    loans_look_for_room_first(Transport::Pipe);
}

#[test]
fn a_work_queue_loan_on_mq_waits_for_room_as_a_push_does() {
    loans_look_for_room_first(Transport::Mq);
}

/// Work-queue messages on message queues go up to `msgsize_max` less the
/// frame's header and trailer (8152 bytes by default), fixed or variable.
#[test]
fn mq_work_queues_carry_messages_up_to_the_queue_limit() {
    let msgsize_max: usize = std::fs::read_to_string("/proc/sys/fs/mqueue/msgsize_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(8192);
    let most = msgsize_max - 40;
    let bus = PipeBus::on("mq-big", Transport::Mq);
    let b = bus.open();
    // A fixed slot of 8000 bytes (over a FIFO's 4064).
    let mut tx = b
        .topic("fixed")
        .capacity(4)
        .slot_size(8000)
        .producer_bytes()
        .unwrap();
    let mut rx = b.topic("fixed").consumer_bytes().unwrap();
    for len in [1usize, 4064, 4065, 8000] {
        let msg: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
        tx.push_bytes(&msg).unwrap();
        assert_eq!(rx.pop_bytes().unwrap(), msg, "{len} bytes");
    }
    // A variable-size queue: its queue holds msg_max of its largest
    // messages, capped at `most`; one byte more is TooLarge.
    let mut tx = b.topic("var").variable(1 << 16).producer_bytes().unwrap();
    let mut rx = b.topic("var").consumer_bytes().unwrap();
    let msg: Vec<u8> = (0..most).map(|i| i as u8).collect();
    tx.push_bytes(&msg).unwrap();
    assert_eq!(rx.pop_bytes().unwrap(), msg);
    assert!(matches!(
        tx.push_bytes(&vec![7u8; most + 1]),
        Err(shmbus::PushError::TooLarge { .. })
    ));
}

/// A lossless subscriber on message queues that leaves (its record and
/// queue removed, as a process that panics or exits does) while the
/// publisher is held back by it: the publisher's helper drops it within a
/// check interval, so even a publisher that only ever `try_send`s (as an
/// async one does) goes on. A queue says nothing when its reader leaves.
#[test]
fn mq_a_lossless_subscriber_that_leaves_stops_holding_try_sends_back() {
    let bus = PipeBus::on("mq-leave", Transport::Mq);
    let b = bus.open();
    let mut tx = b
        .topic("t")
        .capacity(8)
        .lossless(4)
        .liveness_check_interval(Duration::from_millis(20))
        .publisher::<u64>()
        .unwrap();
    let rx = b.topic("t").subscriber::<u64>().unwrap();
    let sent = fill_until_held_back(&mut tx);
    drop(rx);
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while tx.try_send(&sent).is_err() {
        assert!(
            std::time::Instant::now() < until,
            "the publisher is still held back by a subscriber that left"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A lossless mq publisher whose subscriber's queue is full sleeps in its
/// send to that queue (not in a poll, with the helper thread woken to
/// write): a slow subscriber process still gets every message once, in
/// order.
#[test]
fn mq_a_lossless_publisher_asleep_in_full_queues_hands_over_every_message_once() {
    let bus = PipeBus::on("mq-hand", Transport::Mq);
    let b = bus.open();
    let mut tx = b
        .topic("t")
        .capacity(2)
        .lossless(4)
        .publisher::<u64>()
        .unwrap();
    let count = 300u64;
    let mut sub = spawn_role("slow-sub", &args(&[&bus.name, &bus.dir.display(), &count]));
    sub.expect_line("READY");
    for i in 0..count {
        tx.send(&i).unwrap();
    }
    sub.expect_line(&format!("GOT {count}"));
    assert_eq!(
        tx.evictions(),
        0,
        "the subscriber, alive, was never evicted"
    );
    sub.kill9();
}

/// A lossless mq send asleep in a full queue (no deadline) waits while its
/// subscriber lives, and goes on once the subscriber is killed with
/// `kill -9` (evicted, counted), within a check interval or two.
#[test]
fn mq_a_send_asleep_in_a_full_queue_goes_on_when_its_subscriber_is_killed() {
    let bus = PipeBus::on("mq-held", Transport::Mq);
    let b = bus.open();
    let mut tx = b
        .topic("t")
        .capacity(8)
        .lossless(4)
        .liveness_check_interval(Duration::from_millis(50))
        .publisher::<u64>()
        .unwrap();
    let mut sub = spawn_role("idle-sub", &args(&[&bus.name, &bus.dir.display()]));
    sub.expect_line("READY");
    let sent = fill_until_held_back(&mut tx);
    let (done, finished) = std::sync::mpsc::channel();
    let sender = std::thread::spawn(move || {
        let sent_ok = tx.send(&sent).is_ok();
        let _ = done.send((sent_ok, tx.evictions()));
        tx
    });
    assert!(
        finished.recv_timeout(Duration::from_millis(300)).is_err(),
        "a lossless send went on past a live subscriber with a full queue"
    );
    sub.kill9();
    let (sent_ok, evictions) = finished
        .recv_timeout(Duration::from_secs(10))
        .expect("the send still waits for a subscriber killed with kill -9");
    assert!(sent_ok);
    assert_eq!(evictions, 1);
    drop(sender.join().unwrap());
}

/// A consumer that waits from before any producer never sees
/// `Disconnected` while the first producer attaches: the mark that a
/// producer came is made after its record is in place (it was made
/// before, and a consumer that looked in between was told the queue's
/// producers were all gone).
#[test]
fn a_consumer_is_never_disconnected_by_a_producer_attaching() {
    let bus = PipeBus::new("q-attach");
    let b = bus.open();
    // (A bus holds at most 64 topics.)
    for round in 0..60 {
        let topic = format!("jobs{round}");
        let mut rx = b
            .topic(&topic)
            .liveness_check_interval(Duration::from_nanos(1))
            .consumer::<u64>()
            .unwrap();
        let looking = std::thread::spawn(move || loop {
            match rx.try_pop() {
                Ok(v) => return Ok(v),
                Err(TryPopError::Empty) => {}
                Err(e) => return Err(e),
            }
        });
        let mut tx = b.topic(&topic).producer::<u64>().unwrap();
        tx.push(round).unwrap();
        assert_eq!(
            looking.join().unwrap(),
            Ok(round),
            "round {round}: the consumer was told the queue had no producers"
        );
    }
}

/// A lossless mq send held by several subscribers killed with `kill -9`
/// waits for them at most one check interval in all, not one each (it
/// waited for each in turn, past their eviction: six dead subscribers and
/// an interval of 500 ms held it 3 s).
#[test]
fn mq_a_send_held_by_several_killed_subscribers_waits_one_interval_in_all() {
    let bus = PipeBus::on("mq-held-n", Transport::Mq);
    let b = bus.open();
    let interval = Duration::from_millis(500);
    let mut tx = b
        .topic("t")
        .capacity(4)
        .lossless(8)
        .liveness_check_interval(interval)
        .publisher::<u64>()
        .unwrap();
    let mut subs: Vec<_> = (0..6)
        .map(|_| spawn_role("idle-sub", &args(&[&bus.name, &bus.dir.display()])))
        .collect();
    for sub in &mut subs {
        sub.expect_line("READY");
    }
    assert_eq!(tx.receiver_count(), Some(6));
    // Every queue exactly full, nothing kept: the next send finds all six
    // full and waits for room in them itself.
    let sent = 4u64;
    for i in 0..sent {
        tx.try_send(&i).unwrap();
    }
    for sub in &mut subs {
        sub.kill9();
    }
    let began = std::time::Instant::now();
    tx.send(&sent).unwrap();
    let took = began.elapsed();
    assert!(
        took < interval * 4,
        "a send held by six dead subscribers took {took:?} (check interval {interval:?})"
    );
    tx.send(&(sent + 1)).unwrap();
    assert_eq!(tx.evictions(), 6);
}

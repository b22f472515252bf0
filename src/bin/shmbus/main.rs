//! The `shmbus` command-line tool.

mod bench;
mod cleanup;
mod export;
mod ops;
mod peer;
mod raw;
mod rings;
mod snapshot;
mod top;

use clap::{Parser, Subcommand};
use snapshot::PipeDir;

#[derive(Parser)]
#[command(
    name = "shmbus",
    version,
    about = "A lock-free, broker-free message bus in shared memory",
    after_help = "Exit status: 0 success; 1 the command failed (a bus that does not exist, \
                  is corrupt or from another version, a topic that does not exist, a line \
                  that could not be published: the message says which and what to do); \
                  2 bad arguments (a bus or topic name no bus or topic may have, or a \
                  `pub --capacity`/`--slot-size` out of range, too)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure shmbus against raw baselines between real processes, each
    /// comparison interleaved in one run (A B A B ...): ping-pong latency
    /// (raw shared cache line, raw futex, pipe, Unix socket, POSIX mq),
    /// 1-to-1 throughput (raw SPSC ring, pipe, socket, mq; shmbus by
    /// copying send, by loan, and on a variable-size topic; from 4 KiB
    /// messages up also read in place, as a ping-pong row does), fanout from one
    /// publisher to N subscriber processes (raw SPMC broadcast ring: one
    /// writer, sequence word and payload per slot, no lease, no gating;
    /// rows give the slowest subscriber and the publisher's rate; from 1 KiB
    /// messages up also by loan, from 4 KiB up also read in place), and
    /// work queues (raw Vyukov MPMC queue). Every message carries its
    /// sequence and a checksum that the readers verify. `openloop` sends
    /// at a fixed rate (`--rate`) and measures latency from each message's
    /// due time, so a stall is not hidden by coordinated omission. The
    /// fallback transports against the system calls under them: shmbus on
    /// pipes against a raw pipe and a raw named pipe (FIFO), on POSIX
    /// message queues against a raw queue (`pingpong-pipe`,
    /// `throughput-pipe`, `pingpong-mq`, `throughput-mq`;
    /// `throughput-pipe` also has a lossless subscriber that starts
    /// reading 20 ms late once, against a FIFO reader as late), and a work
    /// queue on pipes against a raw one on a FIFO (`queue-pipe`: writes of
    /// the message and reads of exactly its size, messages up to 4064
    /// bytes; `--only queue` runs it too). Built
    /// with `--features peers` (`cargo run --release --features peers --
    /// bench --pin`), ping-pong, 1-to-1 and fanout also run ringfire
    /// (lossy and lossless) and iceoryx2 (overflow and backpressure)
    /// interleaved in the same rounds. `--against OTHER_BINARY` compares
    /// this build with another over `--runs` alternated runs of each
    /// (medians per row). Progress goes to stderr.
    Bench {
        /// Short runs (under a minute).
        #[arg(long)]
        quick: bool,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// Pin each process to its own CPU.
        #[arg(long)]
        pin: bool,
        /// Message sizes in bytes, each a sweep of every comparison, e.g.
        /// `--size 8,64,256,4096`.
        #[arg(long, value_delimiter = ',', default_value = "64")]
        size: Vec<usize>,
        /// Interleaved rounds per comparison (default 3 with --quick, else 7).
        #[arg(long)]
        rounds: Option<usize>,
        /// Subscriber processes of the fanout benchmark, a sweep, e.g.
        /// `--subscribers 1,2,4,8,14` (one process per CPU needs as many
        /// CPUs plus one for the publisher); each from 1 to 4096.
        #[arg(long, value_delimiter = ',', default_value = "2")]
        subscribers: Vec<usize>,
        /// Send rate of the open-loop latency benchmark (`openloop`), in
        /// messages per second: latency is measured from the time each
        /// message was due, so a stall counts for every message it delays.
        #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
        rate: u64,
        /// Run only benchmarks whose name contains one of these
        /// (pingpong-spin, pingpong-block, pingpong-wait, pingpong-os, throughput-1to1,
        /// throughput-os, pingpong-pipe, throughput-pipe, pingpong-mq,
        /// throughput-mq, fanout, queue, queue-pipe, openloop).
        #[arg(long)]
        only: Vec<String>,
        /// No progress lines on stderr (there are none with --json either).
        #[arg(long)]
        quiet: bool,
        /// Compare this build with another shmbus binary (e.g. one built
        /// from the commit before a change): both run the same benchmarks
        /// in turn, `--runs` times each, alternated (ABBA), and each row's
        /// figure (its ratio to the baseline, else its rate or p50) is
        /// printed as the median over the runs of each build, then every
        /// run. On machines whose placement drifts, single runs of a row
        /// swing by several times; only such medians show a change.
        #[arg(long, value_name = "SHMBUS_BINARY")]
        against: Option<std::path::PathBuf>,
        /// Runs of each build with `--against`.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
        runs: u32,
    },
    /// Every counter of every topic of a bus (or of every bus): messages
    /// published, subscribers with their cursor and lag, queue depth,
    /// producers, consumers, losses, sleepers. Reads only.
    Stat {
        /// The bus name; without it, every bus.
        bus: Option<String>,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: PipeDir,
    },
    /// A live view of a bus (or of every bus), refreshed every interval:
    /// per topic msg/s, MB/s, published, capacity, publisher pid; per
    /// lossless subscriber its lag; per queue depth, workers, losses.
    /// q, Esc or Ctrl-C quits. Reads only.
    Top {
        /// The bus name; without it, every bus.
        bus: Option<String>,
        /// Refresh interval in milliseconds.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..))]
        interval_ms: u64,
        #[command(flatten)]
        dir: PipeDir,
    },
    /// Follow a broadcast topic: one line per message, `SEQ CONTENT`, read
    /// as an observer that changes nothing (it never holds a lossless
    /// publisher back; what it misses is said on stderr). Follows from the
    /// next message until the publisher is gone.
    Tail(ops::TailArgs),
    /// Publish each line of stdin (without its newline) as one byte message
    /// of a topic, in order. The bus must exist; the topic is joined, or
    /// created as a byte topic.
    Pub(ops::PubArgs),
    /// Serve every bus's counters in the Prometheus text format on
    /// http://LISTEN/metrics, read fresh at each scrape. Reads only.
    Export {
        /// Address to listen on (localhost by default).
        #[arg(long, default_value = "127.0.0.1:9464")]
        listen: String,
        #[command(flatten)]
        dir: PipeDir,
    },
    /// List the buses on this machine (in /dev/shm, and on pipes in the
    /// pipe directory), or the topics of one bus.
    List {
        /// The bus name; without it, every bus.
        bus: Option<String>,
        #[command(flatten)]
        dir: PipeDir,
    },
    /// Remove what dead processes left: unfinished buses in /dev/shm (their
    /// creator died before finishing them), and the records and FIFOs of
    /// endpoints known dead in pipe buses.
    Gc {
        #[command(flatten)]
        dir: PipeDir,
    },
    /// Remove a bus: its segment in /dev/shm, and its directory of pipes.
    Remove {
        /// The bus name.
        bus: String,
        #[command(flatten)]
        dir: PipeDir,
    },
    #[command(name = "__peer", hide = true)]
    Peer { role: String, args: Vec<String> },
}

/// The most subscriber processes a fanout row runs: what a lossless
/// topic's subscriber table holds at most.
const MAX_BENCH_SUBSCRIBERS: usize = 4096;

fn main() {
    // SAFETY: restores the default action of SIGPIPE before any thread
    // starts, so that a closed pipe (`shmbus tail md quotes | head`) ends
    // the tool quietly, as it does other Unix tools, instead of a panic in
    // `println!`.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench {
            quick,
            json,
            pin,
            size,
            rounds,
            subscribers,
            rate,
            only,
            quiet,
            against,
            runs,
        } => {
            if let Some(bad) = size.iter().find(|s| !(8..=16 << 20).contains(*s)) {
                eprintln!("shmbus bench: --size {bad}: sizes must be from 8 to 16777216 bytes (16 MiB, the largest slot)");
                std::process::exit(2);
            }
            if let Some(bad) = subscribers
                .iter()
                .find(|&&n| n == 0 || n > MAX_BENCH_SUBSCRIBERS)
            {
                eprintln!(
                    "shmbus bench: --subscribers {bad}: each width must be from 1 to \
                     {MAX_BENCH_SUBSCRIBERS} (one process each; a lossless topic takes at most 4096)"
                );
                std::process::exit(2);
            }
            if rounds == Some(0) {
                eprintln!("shmbus bench: --rounds 0: give at least 1 round per comparison");
                std::process::exit(2);
            }
            if let Some(bad) = only
                .iter()
                .find(|o| !bench::BENCHES.iter().any(|b| b.contains(o.as_str())))
            {
                eprintln!(
                    "shmbus bench: --only {bad}: no benchmark's name contains it; the \
                     benchmarks are {}",
                    bench::BENCHES.join(", ")
                );
                std::process::exit(2);
            }
            if let Some(other) = against {
                // The same options for both builds, each run with --json.
                let mut args: Vec<String> = Vec::new();
                let mut flag = |on: bool, name: &str| {
                    if on {
                        args.push(name.to_owned());
                    }
                };
                flag(quick, "--quick");
                flag(pin, "--pin");
                flag(quiet, "--quiet");
                let join = |v: &[usize]| {
                    v.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                };
                args.extend(["--size".into(), join(&size)]);
                args.extend(["--subscribers".into(), join(&subscribers)]);
                args.extend(["--rate".into(), rate.to_string()]);
                if let Some(rounds) = rounds {
                    args.extend(["--rounds".into(), rounds.to_string()]);
                }
                for name in only {
                    args.extend(["--only".into(), name]);
                }
                bench::compare::run(&other, runs as usize, &args, json)
            } else {
                cleanup::install();
                bench::run(bench::Opts {
                    quick,
                    json,
                    pin,
                    size: size[0],
                    sizes: size,
                    rounds: rounds.unwrap_or(if quick { 3 } else { 7 }).max(1),
                    subscribers,
                    rate,
                    only,
                    quiet,
                })
            }
        }
        Command::Stat { bus, json, dir } => ops::stat(bus.as_deref(), json, &dir.path()),
        Command::Top {
            bus,
            interval_ms,
            dir,
        } => top::run(
            bus,
            std::time::Duration::from_millis(interval_ms),
            dir.path(),
        ),
        Command::Tail(args) => ops::tail(&args),
        Command::Pub(args) => ops::publish(&args),
        Command::Export { listen, dir } => export::serve(&listen, &dir.path()),
        Command::List {
            bus: Some(bus),
            dir,
        } => list(&bus, &dir.path()),
        Command::List { bus: None, dir } => {
            if let Some(dir) = dir.given().filter(|d| !d.is_dir()) {
                eprintln!(
                    "shmbus list: --dir {}: not a directory; no pipe buses were looked for there",
                    dir.display()
                );
            }
            list_buses(&dir.path())
        }
        Command::Gc { dir } => gc(&dir.path()),
        Command::Remove { bus, dir } => remove(&bus, &dir.path()),
        Command::Peer { role, args } => peer::run(&role, &args),
    };
    if let Err(e) = result {
        eprintln!("shmbus: {e}");
        // A bus or topic name given on the command line that no bus or
        // topic may have: bad arguments, as clap's are.
        let bad_arguments = e
            .downcast_ref::<shmbus::Error>()
            .is_some_and(|e| matches!(e, shmbus::Error::InvalidName { .. }));
        std::process::exit(if bad_arguments { 2 } else { 1 });
    }
}

/// One line per bus, with its transport; a bus that cannot be opened, or
/// has corrupt topic entries, says so on its line and the listing goes on.
fn list_buses(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    for name in shmbus::Bus::list_in(dir)? {
        let (transport, state) = match shmbus::Bus::open_existing_in(&name, dir) {
            Ok(bus) => (
                match bus.transport() {
                    shmbus::Transport::Pipe => "pipe",
                    shmbus::Transport::Mq => "mq",
                    _ => "shm",
                },
                match bus.topics() {
                    Ok(topics) => {
                        let bad = topics.iter().filter(|t| t.is_err()).count();
                        match bad {
                            0 => format!("{} topics", topics.len()),
                            _ => format!(
                                "{} topics, {bad} corrupt (`shmbus list {name}` for details)",
                                topics.len() - bad
                            ),
                        }
                    }
                    Err(e) => format!("unusable: {e}"),
                },
            ),
            Err(e) => ("?", format!("unusable: {e}")),
        };
        println!("{name:<32} {transport:<5} {state}");
    }
    Ok(())
}

fn gc(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    for name in shmbus::Bus::gc()? {
        println!("removed {name}");
    }
    if *dir != shmbus::default_pipe_dir() {
        for path in shmbus::Bus::gc_pipe(dir) {
            println!("removed {path}");
        }
    }
    Ok(())
}

/// Removes bus `name` from /dev/shm and from the pipe directory `dir`.
fn remove(name: &str, dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    Ok(shmbus::Bus::remove_in(name, dir)?)
}

/// The topics of one bus, corrupt entries included (each on its own line).
/// Fails (exit 1) if the bus cannot be opened or any entry is corrupt,
/// after printing everything else.
fn list(name: &str, dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let bus = shmbus::Bus::open_existing_in(name, dir)?;
    println!(
        "{:<24} {:<18} {:>9} {:>6} {:>12} {:>9} {:>8} {:>8}",
        "topic", "kind", "capacity", "slot", "published", "publisher", "attached", "lost"
    );
    let mut corrupt = 0;
    for topic in bus.topics()? {
        let t = match topic {
            Ok(t) => t,
            Err(e) => {
                corrupt += 1;
                println!("corrupt: {e}");
                continue;
            }
        };
        println!(
            "{:<24} {:<18} {:>9} {:>6} {:>12} {:>9} {:>8} {:>8}",
            t.name,
            format!("{:?}", t.kind),
            t.capacity,
            t.slot_size,
            t.published,
            t.publisher_pid.map_or("-".into(), |p| p.to_string()),
            t.attached,
            t.lost + t.evictions
        );
    }
    if corrupt > 0 {
        return Err(format!("bus {name:?} has {corrupt} corrupt topic entries").into());
    }
    Ok(())
}

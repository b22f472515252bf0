//! `shmbus bench --against OTHER`: this build and another run the same
//! benchmarks in turn, several times, and each row's figure is given as
//! the median over the runs, side by side.
//!
//! One run of a row already interleaves shmbus with its baseline, but on a
//! virtual machine whose vCPUs move between a "near" and a "far" placement
//! a row's ratio still swings by several times from one run to the next
//! (0.1x to 1.7x for the work-queue rows on the 2-vCPU machine): a change
//! to shmbus shows only in the medians of many runs of both builds,
//! alternated so that a drift of the machine falls on both alike. The runs
//! go this, other, other, this, this, other, ... (ABBA), so that neither
//! build always runs first.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use super::Res;

/// Which figure of a row is compared: the ratio to its baseline where it
/// has one (the figure the README's targets are about), else the rate or
/// the median latency.
fn figure(row: &serde_json::Value) -> Option<(&'static str, f64)> {
    [
        ("ratio", "ratio"),
        ("msgs_per_s", "msg/s"),
        ("p50_ns", "p50 ns"),
    ]
    .into_iter()
    .find_map(|(key, label)| row.get(key)?.as_f64().map(|v| (label, v)))
}

/// What names a row across runs: benchmark, transport, size, subscribers
/// and baseline (a transport may be compared with two baselines).
fn key(row: &serde_json::Value) -> String {
    let text = |k: &str| row.get(k).map(|v| v.to_string().replace('"', ""));
    [
        text("bench"),
        text("transport"),
        text("msg_bytes").map(|b| format!("{b}B")),
        text("subscribers").map(|n| format!("1to{n}")),
        text("baseline").map(|b| format!("vs {b}")),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" ")
}

/// One build's figures for one row, run by run.
#[derive(Default)]
struct Figures {
    label: &'static str,
    this: Vec<f64>,
    other: Vec<f64>,
}

/// Runs `bench ARGS --json` with `bin`, and returns its rows.
/// Fails at once, before this build's first run, if `other` is no shmbus
/// build that takes `args` (`bench ARGS --help` parses them and runs
/// nothing).
fn check_other(other: &Path, args: &[String]) -> Res<()> {
    let out = Command::new(other)
        .arg("bench")
        .args(args)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("--against {}: cannot run it: {e}", other.display()))?;
    // (clap names the program as it was called: a copy of an older build
    // is often renamed.)
    let usage = String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|line| line.starts_with("Usage: ") && line.ends_with(" bench [OPTIONS]"));
    if out.status.success() && usage {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr);
    Err(format!(
        "--against {}: not a shmbus build that takes these options ({}){}",
        other.display(),
        args.join(" "),
        said.lines()
            .next()
            .map_or_else(String::new, |line| format!(": it said {line:?}"))
    )
    .into())
}

fn run_once(bin: &Path, args: &[String]) -> Res<Vec<serde_json::Value>> {
    let out = Command::new(bin)
        .arg("bench")
        .args(args)
        .arg("--json")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running {}: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "`{} bench {} --json` failed ({}); is it a shmbus build that knows these options?",
            bin.display(),
            args.join(" "),
            out.status
        )
        .into());
    }
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|row: &serde_json::Value| row.get("bench").is_some())
        .collect();
    if rows.is_empty() {
        return Err(format!(
            "`{} bench {} --json` printed no rows",
            bin.display(),
            args.join(" ")
        )
        .into());
    }
    Ok(rows)
}

fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn show(value: f64) -> String {
    if value.abs() < 0.1 {
        format!("{value:.4}")
    } else if value.abs() >= 1e5 {
        format!("{:.2}M", value / 1e6)
    } else if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

fn list(values: &[f64]) -> String {
    values
        .iter()
        .map(|&v| show(v))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs the benchmarks of `args` (`shmbus bench` options, without
/// `--json`) `runs` times with this build and with `other`, alternated,
/// and prints each row's medians side by side (one JSON object per row
/// with `json`).
pub fn run(other: &Path, runs: usize, args: &[String], json: bool) -> Res<()> {
    let this = std::env::current_exe()?;
    if !other.is_file() {
        return Err(format!(
            "--against {}: no such file (give the path of another shmbus binary)",
            other.display()
        )
        .into());
    }
    check_other(other, args)?;
    let mut rows: BTreeMap<String, Figures> = BTreeMap::new();
    // First seen first: the order the benchmark prints its rows in.
    let mut order: Vec<String> = Vec::new();
    for run in 0..runs {
        let builds = if run % 2 == 0 {
            [(true, &*this), (false, other)]
        } else {
            [(false, other), (true, &*this)]
        };
        for (is_this, bin) in builds {
            if !json {
                eprintln!(
                    "[run {}/{runs}] {} ...",
                    run + 1,
                    if is_this { "this build" } else { "other build" }
                );
            }
            for row in run_once(bin, args)? {
                let Some((label, value)) = figure(&row) else {
                    continue;
                };
                let key = key(&row);
                let figures = rows.entry(key.clone()).or_insert_with(|| {
                    order.push(key);
                    Figures {
                        label,
                        ..Figures::default()
                    }
                });
                if is_this {
                    figures.this.push(value);
                } else {
                    figures.other.push(value);
                }
            }
        }
    }
    if !json {
        println!(
            "shmbus bench --against {}: {runs} runs of each build, alternated; per row the median of the runs, then every run",
            other.display()
        );
    }
    for key in &order {
        let f = &rows[key];
        let (this_m, other_m) = (median(&f.this), median(&f.other));
        if json {
            let row = serde_json::json!({
                "row": key,
                "figure": f.label,
                "this_median": this_m,
                "other_median": other_m,
                "this": f.this,
                "other": f.other,
            });
            println!("{row}");
            continue;
        }
        let m = |v: Option<f64>| v.map_or("-".to_owned(), show);
        println!(
            "{key:<56} {:<7} this {:>7} ({})   other {:>7} ({})",
            f.label,
            m(this_m),
            list(&f.this),
            m(other_m),
            list(&f.other)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_named_by_what_they_compare_and_give_their_ratio_first() {
        let row: serde_json::Value = serde_json::from_str(
            r#"{"bench":"queue","transport":"shmbus-queue-1to1","msg_bytes":64,"msgs_per_s":2e7,"baseline":"raw-mpmc-1to1","ratio":0.36}"#,
        )
        .unwrap();
        assert_eq!(key(&row), "queue shmbus-queue-1to1 64B vs raw-mpmc-1to1");
        assert_eq!(figure(&row), Some(("ratio", 0.36)));
        let raw: serde_json::Value = serde_json::from_str(
            r#"{"bench":"pingpong-os","transport":"pipe","msg_bytes":8,"p50_ns":3500}"#,
        )
        .unwrap();
        assert_eq!(figure(&raw), Some(("p50 ns", 3500.0)));
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}

//! `shmbus top`: a live view of one bus (or every bus), refreshed every
//! interval, that fits an 80-column terminal (`shmbus stat` has every
//! counter). Rates are counter deltas between two looks; nothing is written
//! to a bus. A bus that appears, disappears or turns corrupt while it runs
//! is shown as such. `q`, Esc or Ctrl-C quits and restores the terminal
//! (so does a panic, through ratatui's hook).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::Paragraph;
use ratatui::Frame;
use shmbus::{ProcessState, TopicInfo, TopicKind};

use crate::snapshot::{message_bytes, process_name, BusSnapshot};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// What the last look saw of one topic, for rates.
struct Seen {
    published: u64,
    popped: u64,
    at: Instant,
}

/// The rates of one topic since the last look: messages per second in,
/// and (work queues) out.
#[derive(Clone, Copy, Default)]
struct Rates {
    published: Option<f64>,
    popped: Option<f64>,
}

struct Top {
    bus: Option<String>,
    /// Where pipe buses are looked for.
    dir: std::path::PathBuf,
    seen: HashMap<(String, String), Seen>,
    snapshots: Vec<BusSnapshot>,
    rates: HashMap<(String, String), Rates>,
    interval: Duration,
    error: Option<String>,
}

impl Top {
    fn refresh(&mut self) {
        let now = Instant::now();
        self.error = None;
        self.snapshots = match &self.bus {
            Some(name) => vec![BusSnapshot::take(name, &self.dir)],
            None => BusSnapshot::all(&self.dir).unwrap_or_else(|e| {
                self.error = Some(e.to_string());
                Vec::new()
            }),
        };
        self.rates.clear();
        for snapshot in &self.snapshots {
            let Ok(topics) = &snapshot.topics else {
                continue;
            };
            for t in topics {
                let key = (snapshot.name.clone(), t.name.clone());
                let rate = |now_count: u64, before: u64, since: Instant| {
                    let dt = now.duration_since(since).as_secs_f64();
                    // A counter that went back: the bus was made anew.
                    (now_count >= before && dt > 0.0).then(|| (now_count - before) as f64 / dt)
                };
                let rates = match self.seen.get(&key) {
                    Some(seen) => Rates {
                        published: rate(t.published, seen.published, seen.at),
                        popped: rate(t.popped, seen.popped, seen.at),
                    },
                    None => Rates::default(),
                };
                self.rates.insert(key.clone(), rates);
                self.seen.insert(
                    key,
                    Seen {
                        published: t.published,
                        popped: t.popped,
                        at: now,
                    },
                );
            }
        }
    }

    fn draw(&self, frame: &mut Frame) {
        let title = format!(
            "shmbus top: {} | every {:.1} s | q quits",
            self.bus.as_deref().unwrap_or("every bus"),
            self.interval.as_secs_f64()
        );
        let bold = Style::default().add_modifier(Modifier::BOLD);
        let mut lines = vec![
            Line::styled(title, Style::default().add_modifier(Modifier::REVERSED)),
            Line::styled(
                columns(
                    ["TOPIC", "KIND", "MSG/S", "MB/S", "PUBLISHED", "PID"],
                    "DETAIL",
                ),
                bold,
            ),
        ];
        if let Some(e) = &self.error {
            lines.push(Line::raw(format!("cannot list buses: {e}")));
        }
        if self.snapshots.is_empty() && self.error.is_none() {
            lines.push(Line::raw("no buses in /dev/shm"));
        }
        for snapshot in &self.snapshots {
            match &snapshot.topics {
                Err(e) => lines.push(Line::raw(format!("bus {}: {e}", snapshot.name))),
                Ok(topics) => {
                    lines.push(Line::styled(
                        format!("bus {} ({} topics)", snapshot.name, topics.len()),
                        bold,
                    ));
                    for t in topics {
                        let key = (snapshot.name.clone(), t.name.clone());
                        let rates = self.rates.get(&key).copied().unwrap_or_default();
                        topic_lines(t, rates, &mut lines);
                    }
                    for e in &snapshot.corrupt {
                        lines.push(Line::raw(format!("corrupt: {e}")));
                    }
                }
            }
        }
        frame.render_widget(Paragraph::new(lines), frame.area());
    }
}

/// One row of the table: fixed-width columns, then the detail.
fn columns(cells: [&str; 6], detail: &str) -> String {
    let [topic, kind, rate, mb, published, pid] = cells;
    format!("{topic:<12.12} {kind:<5} {rate:>7} {mb:>6} {published:>10} {pid:>7} {detail}")
}

fn rate_text(rate: Option<f64>) -> String {
    match rate {
        None => "-".into(),
        Some(r) if r >= 1e6 => format!("{:.2}M", r / 1e6),
        Some(r) if r >= 1e3 => format!("{:.1}k", r / 1e3),
        Some(r) => format!("{r:.0}"),
    }
}

fn topic_lines(t: &TopicInfo, rates: Rates, lines: &mut Vec<Line<'static>>) {
    let mb = rates.published.map_or("-".into(), |r| {
        format!("{:.1}", r * message_bytes(t) as f64 / 1e6)
    });
    let (kind, detail) = match t.kind {
        TopicKind::WorkQueue => (
            "queue",
            format!(
                "depth {} out {}/s lost {}",
                t.depth,
                rate_text(rates.popped),
                t.lost_in_push + t.lost_in_consume,
            ),
        ),
        TopicKind::LosslessBroadcast => (
            "lossl",
            format!("subs {} evicted {}", t.subscribers.len(), t.evictions),
        ),
        _ => ("bcast", format!("asleep {}", t.sleeping)),
    };
    let pid = t.publisher_pid.map_or("-".into(), |p| p.to_string());
    lines.push(Line::raw(columns(
        [
            &t.name,
            kind,
            &rate_text(rates.published),
            &mb,
            &t.published.to_string(),
            &pid,
        ],
        &detail,
    )));
    let roles = [
        ("sub", &t.subscribers),
        ("prod", &t.producers),
        ("cons", &t.consumers),
    ];
    for (role, list) in roles {
        for e in list {
            let mut detail = match e.lag {
                Some(lag) => format!("lag {lag} {}", process_name(e.process)),
                None => process_name(e.process).to_owned(),
            };
            if e.evicted {
                detail.push_str(" evicted");
            }
            let style = if e.evicted || e.process == ProcessState::Dead {
                Style::default().add_modifier(Modifier::DIM)
            } else {
                Style::default()
            };
            let cursor = e.cursor.map_or(String::new(), |c| c.to_string());
            let pid = e.pid.map_or("?".into(), |p| p.to_string());
            let name = format!(" {role} #{}", e.entry);
            lines.push(Line::styled(
                columns([&name, "", "", "", &cursor, &pid], &detail),
                style,
            ));
        }
    }
}

/// Runs until `q`, Esc or Ctrl-C.
pub fn run(bus: Option<String>, interval: Duration, dir: std::path::PathBuf) -> Result<()> {
    if let Some(name) = &bus {
        shmbus::Bus::open_existing_in(name, &dir)?;
    }
    let mut top = Top {
        bus,
        dir,
        seen: HashMap::new(),
        snapshots: Vec::new(),
        rates: HashMap::new(),
        interval,
        error: None,
    };
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err("shmbus top needs a terminal; for scripts use `shmbus stat --json`".into());
    }
    let mut terminal = ratatui::try_init().map_err(|e| {
        ratatui::restore();
        format!("cannot set up the terminal ({e}); `shmbus stat` needs none")
    })?;
    let result = (|| -> Result<()> {
        loop {
            top.refresh();
            terminal.draw(|frame| top.draw(frame))?;
            let next = Instant::now() + interval;
            while let Some(left) = next.checked_duration_since(Instant::now()) {
                if !event::poll(left)? {
                    break;
                }
                if let Event::Key(key) = event::read()? {
                    let ctrl_c = key.code == KeyCode::Char('c')
                        && key.modifiers.contains(KeyModifiers::CONTROL);
                    let quit = matches!(key.code, KeyCode::Char('q') | KeyCode::Esc);
                    if key.kind == KeyEventKind::Press && (quit || ctrl_c) {
                        return Ok(());
                    }
                }
            }
        }
    })();
    ratatui::restore();
    result
}

//! `shmbus export`: every bus of this machine in the Prometheus text format
//! on `/metrics`, read fresh at each scrape (nothing is written to a bus).

use std::fmt::Write;

use shmbus::TopicKind;

use crate::snapshot::{kind_name, message_bytes, BusSnapshot};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Serves `/metrics` on `listen` until killed.
pub fn serve(listen: &str, dir: &std::path::Path) -> Result<()> {
    let server = tiny_http::Server::http(listen).map_err(|e| {
        format!("cannot listen on {listen}: {e}; pick a free address with --listen HOST:PORT")
    })?;
    // The address bound (with port 0, the one the system picked).
    let bound = server
        .server_addr()
        .to_ip()
        .map_or_else(|| listen.to_owned(), |addr| addr.to_string());
    eprintln!("shmbus export: serving http://{bound}/metrics");
    for request in server.incoming_requests() {
        let response = match (request.method(), request.url()) {
            (tiny_http::Method::Get, "/metrics") => {
                let content_type = tiny_http::Header::from_bytes(
                    "Content-Type",
                    "text/plain; version=0.0.4; charset=utf-8",
                )
                .expect("a valid header");
                tiny_http::Response::from_string(metrics(dir)).with_header(content_type)
            }
            (tiny_http::Method::Get, "/") => {
                tiny_http::Response::from_string("shmbus exporter: metrics are at /metrics\n")
            }
            _ => tiny_http::Response::from_string("not found: metrics are at /metrics\n")
                .with_status_code(404),
        };
        // A scraper that hung up is its own problem.
        let _ = request.respond(response);
    }
    Ok(())
}

/// One metric family: its help, type and samples.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    samples: Vec<(String, u64)>,
}

/// Every family, in the order they are printed.
struct Families(Vec<Family>);

impl Families {
    fn add(&mut self, name: &'static str, labels: String, value: u64) {
        let family = self
            .0
            .iter_mut()
            .find(|f| f.name == name)
            .expect("a declared family");
        family.samples.push((labels, value));
    }
}

fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The whole scrape, as text (pipe buses: those under `dir`).
pub fn metrics(dir: &std::path::Path) -> String {
    let families = [
        ("shmbus_bus_up", "gauge", "1 if the bus could be read, 0 if it is unusable (corrupt, another version)."),
        ("shmbus_bus_corrupt_topics", "gauge", "Topic entries of the bus that are corrupt."),
        ("shmbus_topic_published_total", "counter", "Messages published (broadcast) or pushed (work queue)."),
        ("shmbus_topic_capacity_messages", "gauge", "Slots in the topic's ring."),
        ("shmbus_topic_message_bytes", "gauge", "Bytes per message: the type's size, or the slot size for byte topics."),
        ("shmbus_topic_sleeping_readers", "gauge", "Subscribers or consumers asleep waiting for a message."),
        ("shmbus_topic_sleeping_writers", "gauge", "Producers (or a lossless publisher) asleep waiting for room."),
        ("shmbus_topic_publisher_up", "gauge", "Broadcast: 1 if a live publisher holds the topic."),
        ("shmbus_topic_evictions_total", "counter", "Lossless broadcast: subscribers evicted because they died."),
        ("shmbus_subscriber_lag_messages", "gauge", "Lossless broadcast: messages published that the subscriber has not read."),
        ("shmbus_subscriber_up", "gauge", "Lossless broadcast: 1 if the subscriber's process runs (or cannot be told dead), 0 if dead or evicted."),
        ("shmbus_queue_depth_messages", "gauge", "Work queue: messages pushed and not yet popped."),
        ("shmbus_queue_popped_total", "counter", "Work queue: messages popped."),
        ("shmbus_queue_lost_total", "counter", "Work queue: messages lost to a process that died mid-push (stage=push) or mid-pop (stage=consume)."),
        ("shmbus_queue_producers", "gauge", "Work queue: producers attached."),
        ("shmbus_queue_consumers", "gauge", "Work queue: consumers attached."),
    ];
    let mut out = Families(
        families
            .iter()
            .map(|&(name, kind, help)| Family {
                name,
                help,
                kind,
                samples: Vec::new(),
            })
            .collect(),
    );
    for bus in BusSnapshot::all(dir).unwrap_or_default() {
        let b = format!("bus=\"{}\"", label(&bus.name));
        let Ok(topics) = &bus.topics else {
            out.add("shmbus_bus_up", b, 0);
            continue;
        };
        out.add("shmbus_bus_up", b.clone(), 1);
        out.add(
            "shmbus_bus_corrupt_topics",
            b.clone(),
            bus.corrupt.len() as u64,
        );
        for t in topics {
            let l = format!(
                "{b},topic=\"{}\",kind=\"{}\"",
                label(&t.name),
                kind_name(t.kind)
            );
            out.add("shmbus_topic_published_total", l.clone(), t.published);
            out.add(
                "shmbus_topic_capacity_messages",
                l.clone(),
                t.capacity.into(),
            );
            out.add("shmbus_topic_message_bytes", l.clone(), message_bytes(t));
            out.add(
                "shmbus_topic_sleeping_readers",
                l.clone(),
                t.sleeping.into(),
            );
            out.add(
                "shmbus_topic_sleeping_writers",
                l.clone(),
                t.waiting_writers.into(),
            );
            if t.kind == TopicKind::WorkQueue {
                out.add("shmbus_queue_depth_messages", l.clone(), t.depth);
                out.add("shmbus_queue_popped_total", l.clone(), t.popped);
                let lost = [("push", t.lost_in_push), ("consume", t.lost_in_consume)];
                for (stage, n) in lost {
                    out.add(
                        "shmbus_queue_lost_total",
                        format!("{l},stage=\"{stage}\""),
                        n,
                    );
                }
                out.add(
                    "shmbus_queue_producers",
                    l.clone(),
                    t.producers.len() as u64,
                );
                out.add(
                    "shmbus_queue_consumers",
                    l.clone(),
                    t.consumers.len() as u64,
                );
                continue;
            }
            out.add(
                "shmbus_topic_publisher_up",
                l.clone(),
                u64::from(t.publisher_pid.is_some()),
            );
            if t.kind == TopicKind::LosslessBroadcast {
                out.add("shmbus_topic_evictions_total", l.clone(), t.evictions);
            }
            for s in &t.subscribers {
                let pid = s.pid.map_or(String::new(), |p| p.to_string());
                let sl = format!("{l},entry=\"{}\",pid=\"{pid}\"", s.entry);
                out.add(
                    "shmbus_subscriber_lag_messages",
                    sl.clone(),
                    s.lag.unwrap_or(0),
                );
                let up = !s.evicted && s.process != shmbus::ProcessState::Dead;
                out.add("shmbus_subscriber_up", sl, u64::from(up));
            }
        }
    }
    let mut text = String::new();
    for family in &out.0 {
        let _ = writeln!(text, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(text, "# TYPE {} {}", family.name, family.kind);
        for (labels, value) in &family.samples {
            let _ = writeln!(text, "{}{{{labels}}} {value}", family.name);
        }
    }
    text
}

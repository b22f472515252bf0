//! What the inspecting tools (`stat`, `top`, `export`) read of a bus: one
//! look at every topic's counters and tables, through `Bus::open_existing_in`
//! and `Bus::topics`, which never create a bus and write nothing to it.

use serde_json::{json, Value};
use shmbus::{Bus, EndpointInfo, ProcessState, TopicInfo, TopicKind};

/// `--dir`: where the pipe (and message-queue) buses are looked for.
#[derive(clap::Args, Clone, Debug)]
pub struct PipeDir {
    /// The directory of pipe buses (default: $XDG_RUNTIME_DIR/shmbus,
    /// else /tmp/shmbus-<uid>).
    #[arg(long, value_name = "DIR")]
    dir: Option<std::path::PathBuf>,
}

impl PipeDir {
    /// `--dir`, or the default.
    pub fn path(&self) -> std::path::PathBuf {
        self.dir.clone().unwrap_or_else(shmbus::default_pipe_dir)
    }

    /// `--dir` as given.
    pub fn given(&self) -> Option<&std::path::Path> {
        self.dir.as_deref()
    }
}

/// One look at one bus.
pub struct BusSnapshot {
    pub name: String,
    /// The topics, or why the bus could not be read at all.
    pub topics: Result<Vec<TopicInfo>, String>,
    /// Topic entries that are corrupt (one message each).
    pub corrupt: Vec<String>,
}

impl BusSnapshot {
    /// A look at bus `name`, or why it could not be read, in its place.
    pub fn take(name: &str, dir: &std::path::Path) -> BusSnapshot {
        BusSnapshot::try_take(name, dir).unwrap_or_else(|e| BusSnapshot {
            name: name.to_owned(),
            topics: Err(e.to_string()),
            corrupt: Vec::new(),
        })
    }

    /// A look at bus `name`, or the error that kept it from being read
    /// (for one bus named on the command line: a bad name exits 2).
    pub fn try_take(name: &str, dir: &std::path::Path) -> Result<BusSnapshot, shmbus::Error> {
        let mut corrupt = Vec::new();
        let topics = Bus::open_existing_in(name, dir)?
            .topics()?
            .into_iter()
            .filter_map(|entry| entry.map_err(|e| corrupt.push(e.to_string())).ok())
            .collect();
        Ok(BusSnapshot {
            name: name.to_owned(),
            topics: Ok(topics),
            corrupt,
        })
    }

    /// Every bus of this machine (that this user can list; pipe buses
    /// under `dir`), each looked at.
    pub fn all(dir: &std::path::Path) -> Result<Vec<BusSnapshot>, shmbus::Error> {
        Ok(Bus::list_in(dir)?
            .iter()
            .map(|name| BusSnapshot::take(name, dir))
            .collect())
    }

    pub fn json(&self) -> Value {
        match &self.topics {
            Ok(topics) => json!({
                "bus": self.name,
                "topics": topics.iter().map(topic_json).collect::<Vec<_>>(),
                "corrupt": self.corrupt,
            }),
            Err(e) => json!({ "bus": self.name, "error": e }),
        }
    }
}

pub fn kind_name(kind: TopicKind) -> &'static str {
    match kind {
        TopicKind::Broadcast => "broadcast",
        TopicKind::LosslessBroadcast => "lossless-broadcast",
        TopicKind::WorkQueue => "work-queue",
        _ => "unknown",
    }
}

pub fn process_name(state: ProcessState) -> &'static str {
    match state {
        ProcessState::Alive => "alive",
        ProcessState::Dead => "dead",
        _ => "unknown",
    }
}

/// Bytes a message of this topic takes: its type's size, or for byte
/// topics the slot size (an upper bound: byte messages may be shorter).
pub fn message_bytes(t: &TopicInfo) -> u64 {
    u64::from(if t.type_size > 0 {
        t.type_size
    } else {
        t.slot_size
    })
}

fn endpoint_json(e: &EndpointInfo) -> Value {
    json!({
        "entry": e.entry,
        "pid": e.pid,
        "same_namespace": e.same_namespace,
        "process": process_name(e.process),
        "cursor": e.cursor,
        "lag": e.lag,
        "evicted": e.evicted,
        "attaching": e.attaching,
    })
}

pub fn topic_json(t: &TopicInfo) -> Value {
    let endpoints = |list: &[EndpointInfo]| list.iter().map(endpoint_json).collect::<Vec<_>>();
    let mut v = json!({
        "name": t.name,
        "kind": kind_name(t.kind),
        "capacity": t.capacity,
        "slot_size": t.slot_size,
        "arena_bytes": t.arena_bytes,
        "timestamps": t.timestamps.map(|clock| match clock {
            shmbus::Clock::Realtime => "realtime",
            shmbus::Clock::Monotonic => "monotonic",
        }),
        "type_size": t.type_size,
        "published": t.published,
        "sleeping": t.sleeping,
        "waiting_writers": t.waiting_writers,
    });
    let fields = v.as_object_mut().expect("an object");
    match t.kind {
        TopicKind::WorkQueue => {
            fields.insert("popped".into(), t.popped.into());
            fields.insert("depth".into(), t.depth.into());
            fields.insert("lost_in_push".into(), t.lost_in_push.into());
            fields.insert("lost_in_consume".into(), t.lost_in_consume.into());
            fields.insert("producers".into(), endpoints(&t.producers).into());
            fields.insert("consumers".into(), endpoints(&t.consumers).into());
        }
        _ => {
            fields.insert("publisher_pid".into(), t.publisher_pid.into());
            fields.insert("evictions".into(), t.evictions.into());
            fields.insert("subscribers".into(), endpoints(&t.subscribers).into());
        }
    }
    v
}

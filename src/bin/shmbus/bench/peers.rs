//! The peers shmbus is measured against, side by side in the same run:
//! ringfire (lossy and lossless SPMC rings in `/dev/shm`) and iceoryx2
//! (publish-subscribe, overflow and backpressure), built in with
//! `--features peers` (off by default: they are not in the library's
//! dependency tree). Without the feature there are none.
//!
//! Each peer is one file: its fanout and ping-pong transports, and the
//! peer roles its subscriber and echo processes run.

use super::fanout::Fan;
use super::latency::PingPong;
use crate::peer::Role;

#[cfg(feature = "peers")]
mod iceoryx2;
#[cfg(feature = "peers")]
mod ringfire;

/// The peers' fanout transports, lossy or lossless as shmbus's row.
pub fn fans(lossless: bool, size: usize) -> Vec<Box<dyn Fan>> {
    #[cfg(feature = "peers")]
    {
        let mut all = Vec::new();
        all.extend(ringfire::fan(lossless, size));
        all.push(Box::new(iceoryx2::Fan { lossless }) as Box<dyn Fan>);
        all
    }
    #[cfg(not(feature = "peers"))]
    {
        let _ = (lossless, size);
        Vec::new()
    }
}

/// The peers' ping-pong transports.
pub fn ping_pongs(size: usize) -> Vec<Box<dyn PingPong>> {
    #[cfg(feature = "peers")]
    {
        let mut all = Vec::new();
        all.extend(ringfire::ping_pong(size));
        all.push(Box::new(iceoryx2::Echo) as Box<dyn PingPong>);
        all
    }
    #[cfg(not(feature = "peers"))]
    {
        let _ = size;
        Vec::new()
    }
}

/// The peers' ping-pong transports whose sides sleep until told.
pub fn blocking_ping_pongs() -> Vec<Box<dyn PingPong>> {
    #[cfg(feature = "peers")]
    {
        vec![Box::new(iceoryx2::BlockingEcho) as Box<dyn PingPong>]
    }
    #[cfg(not(feature = "peers"))]
    {
        Vec::new()
    }
}

/// The peers' roles, by name.
#[cfg(feature = "peers")]
pub const ROLES: &[(&str, Role)] = &[
    ("subscribe-ringfire", ringfire::subscribe_role),
    ("echo-ringfire", ringfire::echo_role),
    ("subscribe-iceoryx2", iceoryx2::subscribe_role),
    ("echo-iceoryx2", iceoryx2::echo_role),
    ("echo-iceoryx2-listener", iceoryx2::echo_listener_role),
];

/// The peers' roles: none without the feature.
#[cfg(not(feature = "peers"))]
pub const ROLES: &[(&str, Role)] = &[];

/// A name for a peer's shared object that no other run or measurement
/// uses: `shmbus.bench-<peer>-<pid>-<n>`.
#[cfg(feature = "peers")]
fn unique_name(peer: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("shmbus.bench-{peer}-{}-{n}", std::process::id())
}

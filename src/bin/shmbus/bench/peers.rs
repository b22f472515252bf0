//! The peers shmbus is measured against, side by side in the same run:
//! ringfire and iceoryx2, built in with `--features peers` (off by
//! default: they are not in the library's dependency tree). Without the
//! feature there are none.

use super::fanout::Fan;
use super::latency::PingPong;

/// The peers' fanout transports, lossy or lossless as shmbus's row.
#[cfg(not(feature = "peers"))]
pub fn fans(_lossless: bool, _size: usize) -> Vec<Box<dyn Fan>> {
    Vec::new()
}

/// The peers' ping-pong transports.
#[cfg(not(feature = "peers"))]
pub fn ping_pongs(_size: usize) -> Vec<Box<dyn PingPong>> {
    Vec::new()
}

//! What every endpoint (publisher, subscriber, producer, consumer) holds:
//! the view of its topic, its identity in the bus, the fork epoch it was
//! made in, and its options.

use std::time::Duration;

use crate::broadcast::LagPolicy;
use crate::ring::broadcast::StartAt;
use crate::ring::{Liveness, Owner};
use crate::segment::procs::fork_epoch;
use crate::segment::views::{BroadcastView, QueueView};
use crate::segment::Segment;
use crate::wait::WaitStrategy;

/// Options of one endpoint, from its topic builder.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EndpointOptions {
    pub start: StartAt,
    /// Where a lapped subscriber goes on.
    pub lag: LagPolicy,
    pub wait: WaitStrategy,
    /// How often a waiting endpoint checks whether the processes it waits
    /// on are alive; also its longest sleep.
    pub check_interval: Duration,
    /// An observer: a subscriber that owns nothing in the bus (it never
    /// registers, and never gates a lossless publisher).
    pub observe: bool,
}

/// A view, and who uses it.
pub(crate) struct Handle<V> {
    pub view: V,
    pub name: String,
    /// This process's token in the bus (from the process table).
    pub me: Owner,
    /// The fork epoch the endpoint was made in: in a child made by `fork()`
    /// afterwards, the endpoint's shared entries belong to the parent.
    epoch: u64,
    pub opts: EndpointOptions,
}

impl<V> Handle<V> {
    pub(crate) fn new(view: V, name: &str, me: Owner, opts: EndpointOptions) -> Self {
        Handle {
            view,
            name: name.to_owned(),
            me,
            epoch: fork_epoch(),
            opts,
        }
    }

    /// Whether this is the process that made the endpoint (not a child it
    /// forked since). One load of a static.
    #[inline]
    pub(crate) fn in_own_process(&self) -> bool {
        self.epoch == fork_epoch()
    }
}

/// Access to the segment a view lives in.
pub(crate) trait HasSegment {
    fn segment(&self) -> &Segment;
}

impl HasSegment for BroadcastView {
    fn segment(&self) -> &Segment {
        self.seg()
    }
}

impl HasSegment for QueueView {
    fn segment(&self) -> &Segment {
        self.seg()
    }
}

impl<V: HasSegment + Clone> Handle<V> {
    /// A handle on the same topic for a new endpoint made in this process
    /// now (with this process's token and fork epoch, which differ from
    /// this one's in a child made by `fork()` since).
    pub(crate) fn sibling(&self) -> Result<Self, crate::Error> {
        let me = if self.opts.observe {
            self.me
        } else {
            self.view.segment().me()?
        };
        Ok(Handle::new(self.view.clone(), &self.name, me, self.opts))
    }
}

impl<V: HasSegment> Handle<V> {
    /// Whether the process holding `owner` lives (one `fcntl`; pace it).
    pub(crate) fn liveness(&self, owner: Owner) -> Liveness {
        self.view.segment().liveness(owner)
    }
}

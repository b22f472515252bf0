//! Loom models of the wakeup protocol (`shmbus::wait`). Under loom the futex
//! is a mutex + condvar with no timeout, so a lost wakeup is a deadlock,
//! which loom reports.
#![cfg(shmbus_loom)]

use loom::sync::Arc;
use loom::thread;
use shmbus::sync::{AtomicU64, Ordering};
use shmbus::wait::{Wake, WakeWords};

struct Topic {
    published: AtomicU64,
    wake: WakeWords,
}

/// Waits as a blocking subscriber does: check, and sleep unless the
/// re-check after announcing the sleep finds the message. Returns whether
/// it ever announced a sleep.
fn wait_for(topic: &Topic, count: u64) -> bool {
    let mut announced = false;
    while topic.published.load(Ordering::Acquire) < count {
        let outcome = topic
            .wake
            .sleep_unless(|| topic.published.load(Ordering::Acquire) >= count, None);
        announced = true;
        if outcome == Wake::TimedOut {
            panic!("loom futex has no timeout");
        }
    }
    announced
}

fn publish(topic: &Topic, count: u64) {
    topic.published.store(count, Ordering::Release);
    topic.wake.notify();
}

/// Proves that a subscriber deciding to sleep never misses a publish: in
/// every interleaving of two sleeping subscribers and one publisher of two
/// messages, both subscribers see both messages (a lost wakeup would leave
/// one asleep forever, which loom reports as a deadlock).
#[test]
fn sleeping_subscribers_never_miss_a_publish() {
    loom::model(|| {
        let topic = Arc::new(Topic {
            published: AtomicU64::new(0),
            wake: WakeWords::new(),
        });
        let subscribers: Vec<_> = (0..2)
            .map(|_| {
                let topic = topic.clone();
                thread::spawn(move || {
                    wait_for(&topic, 1);
                    wait_for(&topic, 2);
                })
            })
            .collect();
        publish(&topic, 1);
        publish(&topic, 2);
        for s in subscribers {
            s.join().unwrap();
        }
        assert_eq!(topic.wake.waiters(), 0, "every sleeper left the count");
    });
}

/// Proves the publisher makes no wake call when nobody waits: in every
/// interleaving where the subscriber found the message without announcing
/// a sleep, the futex word was never bumped (bumping happens only together
/// with the wake system call).
#[test]
fn publisher_skips_the_wake_when_nobody_sleeps() {
    loom::model(|| {
        let topic = Arc::new(Topic {
            published: AtomicU64::new(0),
            wake: WakeWords::new(),
        });
        let subscriber = {
            let topic = topic.clone();
            thread::spawn(move || wait_for(&topic, 1))
        };
        publish(&topic, 1);
        let announced = subscriber.join().unwrap();
        if !announced {
            assert_eq!(topic.wake.wake_count(), 0, "woke with no sleeper");
        }
        // With no subscriber at all, notify never wakes.
        publish(&topic, 2);
        if !announced {
            assert_eq!(topic.wake.wake_count(), 0);
        }
    });
}

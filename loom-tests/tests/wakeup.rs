//! Loom models of the wakeup protocol (`shmbus::wait`). Under loom the futex
//! is a mutex + condvar with no timeout, so a lost wakeup is a deadlock,
//! which loom reports.
#![cfg(shmbus_loom)]

use loom::sync::Arc;
use loom::thread;
use shmbus::ring::waiting::{Step, WaitStrategy};
use shmbus::sync::{spin_hint, AtomicU64, Ordering};
use shmbus::wait::{self, LightWaker, Wake, WakeWords};

struct Topic {
    published: AtomicU64,
    wake: WakeWords,
}

/// Waits as every endpoint's wait loop does (`Waiter::wait_once`): poll,
/// and on each poll that finds nothing take the step the strategy says
/// (`WaitStrategy::step`): spin, or sleep unless the re-check after
/// announcing the sleep finds the message. Returns whether it ever
/// announced a sleep.
fn wait_with(topic: &Topic, count: u64, strategy: WaitStrategy) -> bool {
    let (mut announced, mut polls) = (false, 0u32);
    while topic.published.load(Ordering::Acquire) < count {
        polls += 1;
        match strategy.step(polls) {
            Step::Spin | Step::Snooze => spin_hint(),
            Step::Sleep => {
                let outcome = topic
                    .wake
                    .sleep_unless(|| topic.published.load(Ordering::Acquire) >= count, None);
                announced = true;
                polls = 0;
                if outcome == Wake::TimedOut {
                    panic!("loom futex has no timeout");
                }
            }
        }
    }
    announced
}

fn wait_for(topic: &Topic, count: u64) -> bool {
    wait_with(topic, count, WaitStrategy::Block)
}

fn publish(topic: &Topic, count: u64) {
    topic.published.store(count, Ordering::Release);
    topic.wake.notify();
}

/// Proves that a subscriber deciding to sleep never misses a publish: in
/// every interleaving of two sleeping subscribers and one publisher of two
/// messages, both subscribers see both messages (a lost wakeup would leave
/// one asleep forever, which loom reports as a deadlock).
///
/// Fails if the sleeper word carries no announcement ticket: the
/// dead-sleeper reset then drops a live sleeper that arrived as another
/// left (an ABA on the count).
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

/// Proves that a sleeper killed while counted (it announced its sleep and
/// never left the count, as a blocked process killed by `kill -9` does)
/// costs one wake call and no more, and never makes a live sleeper miss a
/// publish: a live subscriber that spins once, then sleeps (the adaptive
/// strategy's decision logic), sees both messages, and once the publisher
/// has found the count stale, the count holds only live sleepers (here:
/// none) and later publishes make no wake call.
///
/// Fails if `WakeWords::notify` does not reset the count after a wake that
/// woke nobody: the dead sleeper's count stays forever.
#[test]
fn a_sleeper_killed_while_counted_is_forgotten_and_no_wakeup_is_lost() {
    loom::model(|| {
        let topic = Arc::new(Topic {
            published: AtomicU64::new(0),
            wake: WakeWords::new(),
        });
        topic.wake.count_in_and_die();
        let live = {
            let topic = topic.clone();
            thread::spawn(move || {
                let adaptive = WaitStrategy::Adaptive { spins: 1 };
                wait_with(&topic, 1, adaptive);
                wait_with(&topic, 2, adaptive);
            })
        };
        publish(&topic, 1);
        publish(&topic, 2);
        live.join().unwrap();
        // The live sleeper has left; one more publish finds only the dead
        // one (if no earlier publish did) and forgets it.
        publish(&topic, 3);
        assert_eq!(topic.wake.waiters(), 0, "the dead sleeper is forgotten");
        let wakes = topic.wake.wake_count();
        publish(&topic, 4);
        assert_eq!(
            topic.wake.wake_count(),
            wakes,
            "no wake call without sleepers"
        );
    });
}

/// Publishes as a broadcast publisher does: the store, then the wakeup
/// check of a writer that may be light.
fn publish_as(topic: &Topic, count: u64, waker: &mut LightWaker) {
    topic.published.store(count, Ordering::Release);
    topic.wake.notify_as(waker);
}

/// Proves that a publisher turning light and heavy again (here after one
/// quiet message, not 256) never makes a sleeping subscriber miss a
/// publish, and leaves no `LIGHT` bit behind once it turned heavy: in
/// every interleaving of a subscriber that sleeps for each of three
/// messages and a publisher that turns light after the first, heavy at the
/// wake it makes, and light again, the subscriber sees all three.
///
/// Under loom the light fence is a full fence (loom has no `membarrier`),
/// so this checks the bookkeeping of the two modes (the `LIGHT` bit in the
/// sleeper word, the count masks, the dead-sleeper reset keeping the bit),
/// not the asymmetric fence itself, whose argument is in `shmbus::wait`.
/// Fails if the count mask takes in `LIGHT` (a light publisher then sees a
/// sleeper that is not there, and makes wake calls for nobody), or if
/// `go_light` does not set the bit.
#[test]
fn a_publisher_turning_light_and_heavy_never_loses_a_sleeper() {
    loom::model(|| {
        let topic = Arc::new(Topic {
            published: AtomicU64::new(0),
            wake: WakeWords::new(),
        });
        let subscriber = {
            let topic = topic.clone();
            thread::spawn(move || {
                for count in 1..=3 {
                    wait_for(&topic, count);
                }
            })
        };
        let mut waker = LightWaker::with_quiet(true, 1);
        for count in 1..=3 {
            publish_as(&topic, count, &mut waker);
        }
        subscriber.join().unwrap();
        assert_eq!(topic.wake.waiters(), 0, "every sleeper left the count");
        // Nobody sleeps now: quiet messages turn the publisher light (if it
        // is not yet), make no wake call, and the bit says what it is.
        let wakes = topic.wake.wake_count();
        for count in 4..=5 {
            publish_as(&topic, count, &mut waker);
            assert_eq!(waker.is_light(), topic.wake.has_light_writer());
        }
        assert!(waker.is_light(), "quiet messages turn it light");
        assert_eq!(
            topic.wake.wake_count(),
            wakes,
            "no wake call without sleepers"
        );
        topic.wake.go_heavy(&mut waker);
        assert!(
            !topic.wake.has_light_writer(),
            "a heavy writer leaves no LIGHT bit"
        );
    });
}

/// Proves that writers sharing one set of wake words (a work queue's
/// producers), each turning light and heavy on its own, never make a
/// sleeping reader miss a message, and leave no light writer counted once
/// each turned heavy: in every interleaving of a consumer that sleeps
/// until three messages are there and two producers, of two messages and
/// of one, that turn light after their first (quiet after one message,
/// not 256), and heavy at a wake they make or at the end, the consumer
/// sees all three.
///
/// As for the publisher above, the light fence is a full fence under
/// loom: this checks the count's bookkeeping (one writer turning heavy
/// must not clear another's light state, as a single bit would), the
/// flags, and the one-sleeper wakes, not the asymmetric fence. Fails if
/// `go_heavy_shared` counts a writer out that was not counted in, or
/// `go_light_shared` does not count it in.
#[test]
fn shared_writers_turning_light_and_heavy_never_lose_a_sleeper() {
    loom::model(|| {
        let topic = Arc::new(Topic {
            published: AtomicU64::new(0),
            wake: WakeWords::new(),
        });
        let consumer = {
            let topic = topic.clone();
            thread::spawn(move || {
                wait_for(&topic, 3);
            })
        };
        let producers: Vec<_> = [2, 1]
            .into_iter()
            .map(|messages| {
                let topic = topic.clone();
                thread::spawn(move || {
                    let flag = AtomicU64::new(wait::LIGHT_OFF);
                    let mut waker = LightWaker::with_quiet(true, 1);
                    for _ in 0..messages {
                        topic.published.fetch_add(1, Ordering::Release);
                        topic.wake.notify_shared(&mut waker, &flag, true);
                    }
                    topic.wake.go_heavy_shared(&mut waker, &flag);
                    assert_eq!(flag.load(Ordering::Relaxed), wait::LIGHT_OFF);
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        consumer.join().unwrap();
        assert_eq!(
            topic.wake.light_writer_count(),
            0,
            "every writer counted out"
        );
        assert_eq!(topic.wake.waiters(), 0, "every sleeper left the count");
    });
}

/// Proves that a reader's request for heavy writers (what a process that
/// may not call `membarrier` makes) turns a light publisher heavy at its
/// next message and keeps it heavy: afterwards `LIGHT` is clear and stays
/// clear however many quiet messages follow.
///
/// Fails if `notify_as` ignores `REQUEST`, or if `go_light` does not look
/// for it.
#[test]
fn a_request_for_heavy_writers_turns_the_publisher_heavy_for_good() {
    loom::model(|| {
        let topic = Arc::new(Topic {
            published: AtomicU64::new(0),
            wake: WakeWords::new(),
        });
        let mut waker = LightWaker::with_quiet(true, 1);
        publish_as(&topic, 1, &mut waker);
        let requester = {
            let topic = topic.clone();
            thread::spawn(move || topic.wake.request_heavy_writers())
        };
        publish_as(&topic, 2, &mut waker);
        requester.join().unwrap();
        for count in 3..6 {
            publish_as(&topic, count, &mut waker);
        }
        assert!(!waker.is_light(), "a requested writer stays heavy");
        assert!(!topic.wake.has_light_writer());
    });
}

/// Two topics a select waits on (`shmbus::Select`): each with its own
/// count and wake words.
struct TwoTopics {
    a: Topic,
    b: Topic,
}

/// Proves that a select sleeping on the wake words of two topics at once
/// (`wait::sleep_on_any`, `futex_waitv` in a real build) never misses a
/// publish on either: in every interleaving of the selector and one
/// publisher per topic, the selector sees both messages. Under loom the
/// many-word sleep polls the words; a wakeup that never comes leaves it
/// polling for ever, which loom reports (its branch bound).
///
/// Fails if the selector announces itself on only one of the words (the
/// other's publisher then skips its wake).
#[test]
fn a_select_on_two_topics_never_misses_a_publish_on_either() {
    loom::model(|| {
        let topics = Arc::new(TwoTopics {
            a: Topic {
                published: AtomicU64::new(0),
                wake: WakeWords::new(),
            },
            b: Topic {
                published: AtomicU64::new(0),
                wake: WakeWords::new(),
            },
        });
        let publishers: Vec<_> = [0, 1]
            .into_iter()
            .map(|which| {
                let topics = topics.clone();
                thread::spawn(move || {
                    let topic = if which == 0 { &topics.a } else { &topics.b };
                    publish(topic, 1);
                })
            })
            .collect();
        // The selector: until it has seen both, sleep on both.
        let seen = |t: &Topic| t.published.load(Ordering::Acquire) >= 1;
        while !(seen(&topics.a) && seen(&topics.b)) {
            let words = [&topics.a.wake, &topics.b.wake];
            let outcome = wait::sleep_on_any(&words, || seen(&topics.a) && seen(&topics.b), None);
            assert_ne!(outcome, Wake::TimedOut, "loom futex has no timeout");
        }
        for p in publishers {
            p.join().unwrap();
        }
        assert_eq!(topics.a.wake.waiters(), 0, "the select left both counts");
        assert_eq!(topics.b.wake.waiters(), 0, "the select left both counts");
    });
}

/// Proves the doorbell protocol behind `event_fd` and async receive
/// (`shmbus::doorbell`): the owner announces a sleep and looks once more;
/// if it found nothing it hands the sleep to a helper thread, which sleeps
/// on the futex and rings when woken. In every interleaving with a
/// publisher, the doorbell rings (a lost wakeup leaves the helper asleep,
/// a deadlock) and, once it has, the owner sees the message; afterwards
/// the count is empty, so a later publish makes no wake call for the
/// waiter that has left.
#[test]
fn a_doorbell_armed_as_a_message_is_published_always_rings() {
    loom::model(|| {
        let topic = Arc::new(Topic {
            published: AtomicU64::new(0),
            wake: WakeWords::new(),
        });
        let rung = Arc::new(AtomicU64::new(0));
        let publisher = {
            let topic = topic.clone();
            thread::spawn(move || publish(&topic, 1))
        };
        // The owner's try_recv found nothing: arm.
        let ready = || topic.published.load(Ordering::Acquire) >= 1;
        let ticket = topic.wake.announce();
        let _ = wait::announced(&[&topic.wake], &[ticket], None);
        let helper = if ready() {
            topic.wake.retire(ticket);
            rung.store(1, Ordering::Release);
            None
        } else {
            let (topic, rung) = (topic.clone(), rung.clone());
            Some(thread::spawn(move || {
                let outcome = wait::sleep_announced(&[&topic.wake], &[ticket], None);
                assert_ne!(outcome, Wake::TimedOut, "loom futex has no timeout");
                topic.wake.retire(ticket);
                rung.store(1, Ordering::Release);
            }))
        };
        if let Some(helper) = helper {
            helper.join().unwrap();
        }
        publisher.join().unwrap();
        assert_eq!(rung.load(Ordering::Acquire), 1, "the doorbell rang");
        assert!(ready(), "a rung doorbell finds the message");
        assert_eq!(topic.wake.waiters(), 0, "the helper left the count");
        let wakes = topic.wake.wake_count();
        publish(&topic, 2);
        assert_eq!(
            topic.wake.wake_count(),
            wakes,
            "no wake call for a waiter that has left"
        );
    });
}

/// A work queue reduced to its message count, for the wake-one model.
struct Jobs {
    items: AtomicU64,
    wake: WakeWords,
}

/// Pops one job, sleeping at once whenever there is none (the `Block`
/// strategy).
fn pop_one(jobs: &Jobs) {
    loop {
        let n = jobs.items.load(Ordering::Acquire);
        if n > 0 {
            if jobs
                .items
                .compare_exchange(n, n - 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return;
            }
            continue;
        }
        let outcome = jobs
            .wake
            .sleep_unless(|| jobs.items.load(Ordering::Acquire) > 0, None);
        assert_ne!(outcome, Wake::TimedOut, "loom futex has no timeout");
    }
}

/// Proves that waking one consumer per push (`WakeWords::notify_one`, the
/// work queue's semaphore-style wake) never strands a message: two
/// consumers that each pop one job and sleep whenever the queue is empty,
/// one producer that pushes two jobs, each with a wake-one; in every
/// interleaving both consumers get a job (a push that woke nobody while a
/// consumer slept would leave it asleep for ever, which loom reports as a
/// deadlock), and the sleeper count ends empty.
#[test]
fn waking_one_consumer_per_push_never_strands_a_message() {
    loom::model(|| {
        let jobs = Arc::new(Jobs {
            items: AtomicU64::new(0),
            wake: WakeWords::new(),
        });
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let jobs = jobs.clone();
                thread::spawn(move || pop_one(&jobs))
            })
            .collect();
        for _ in 0..2 {
            jobs.items.fetch_add(1, Ordering::Release);
            jobs.wake.notify_one();
        }
        for c in consumers {
            c.join().unwrap();
        }
        assert_eq!(jobs.items.load(Ordering::Acquire), 0);
        assert_eq!(jobs.wake.waiters(), 0, "every sleeper left the count");
    });
}

//! Loom models of the topic directory's create-or-join and of the lease.
#![cfg(shmbus_loom)]

use loom::sync::Arc;
use loom::thread;
use shmbus::ring::directory::{find_or_create, Entries, EntryState, Found};
use shmbus::ring::{Lease, LeaseError, Liveness, Owner};
use shmbus::sync::UnsafeCell;

/// A heap directory whose entry "contents" (a name id) live in an
/// `UnsafeCell`, so loom flags any read of a name not ordered after its
/// write: the READY publication must carry the contents with it.
struct Table {
    states: Vec<EntryState>,
    names: Vec<UnsafeCell<u64>>,
    dead: Owner,
}

// SAFETY (test): names are accessed only as the directory protocol allows,
// which is exactly what loom checks here.
unsafe impl Sync for Table {}

struct Creator {
    table: Arc<Table>,
    name: u64,
}

impl Entries for Creator {
    type Error = ();

    fn entries(&self) -> usize {
        self.table.states.len()
    }

    fn state(&self, index: usize) -> &EntryState {
        &self.table.states[index]
    }

    fn matches(&mut self, index: usize) -> Result<bool, ()> {
        // SAFETY: index is READY, so its name was written before READY was
        // stored with Release, which our Acquire load of the state saw.
        Ok(self.table.names[index].with(|name| unsafe { *name }) == self.name)
    }

    fn init(&mut self, index: usize) -> Result<(), ()> {
        // SAFETY: we hold the claim on `index`.
        self.table.names[index].with_mut(|name| unsafe { *name = self.name });
        Ok(())
    }

    fn is_blank(&mut self, index: usize) -> bool {
        // SAFETY: we hold the claim on `index`.
        self.table.names[index].with(|name| unsafe { *name }) == 0
    }

    fn is_complete(&mut self, index: usize) -> bool {
        !self.is_blank(index)
    }

    fn liveness(&mut self, owner: Owner) -> Liveness {
        if owner == self.table.dead {
            Liveness::Dead
        } else {
            Liveness::Alive
        }
    }

    fn wait_for_claimer(&mut self, _owner: Option<Owner>) -> Result<(), ()> {
        thread::yield_now();
        Ok(())
    }
}

fn table(entries: usize, dead_claim_at: Option<usize>) -> Arc<Table> {
    let dead = Owner::new(999, 9);
    let states: Vec<EntryState> = (0..entries).map(|_| EntryState::new()).collect();
    if let Some(index) = dead_claim_at {
        // A creator that died right after claiming `index`.
        shmbus::ring::directory::testing::claim(&states[index], dead);
    }
    Arc::new(Table {
        states,
        names: (0..entries).map(|_| UnsafeCell::new(0)).collect(),
        dead,
    })
}

fn create(table: &Arc<Table>, name: u64, pid: u32) -> Found {
    let mut creator = Creator {
        table: table.clone(),
        name,
    };
    find_or_create(&mut creator, 0, Owner::new(pid, 1)).expect("room in the table")
}

fn index(found: Found) -> usize {
    match found {
        Found::Existing(i) | Found::Created(i) => i,
    }
}

/// Proves that two processes creating the same topic name at once end with
/// one entry: both get the same index, exactly one of them created it, and
/// the joiner reads the name only after it was fully written (no data race).
#[test]
fn two_creators_of_one_name_get_one_entry() {
    loom::model(|| {
        let t = table(2, None);
        let other = {
            let t = t.clone();
            thread::spawn(move || create(&t, 7, 2))
        };
        let mine = create(&t, 7, 1);
        let theirs = other.join().unwrap();
        assert_eq!(index(mine), index(theirs));
        let created = [mine, theirs]
            .iter()
            .filter(|f| matches!(f, Found::Created(_)))
            .count();
        assert_eq!(created, 1);
    });
}

/// Proves that two different names that start probing at the same entry
/// never share an entry.
#[test]
fn two_names_never_share_an_entry() {
    loom::model(|| {
        let t = table(2, None);
        let other = {
            let t = t.clone();
            thread::spawn(move || create(&t, 8, 2))
        };
        let mine = create(&t, 7, 1);
        let theirs = other.join().unwrap();
        assert!(matches!(mine, Found::Created(_)) && matches!(theirs, Found::Created(_)));
        assert_ne!(index(mine), index(theirs));
    });
}

/// Proves that an entry claimed by a creator that died before finishing is
/// taken over, and that two survivors racing to take it over still end with
/// one entry for their name.
#[test]
fn entry_of_a_dead_creator_is_taken_over_once() {
    loom::model(|| {
        let t = table(1, Some(0));
        let other = {
            let t = t.clone();
            thread::spawn(move || create(&t, 7, 2))
        };
        let mine = create(&t, 7, 1);
        let theirs = other.join().unwrap();
        assert_eq!(index(mine), 0);
        assert_eq!(index(theirs), 0);
        let created = [mine, theirs]
            .iter()
            .filter(|f| matches!(f, Found::Created(_)))
            .count();
        assert_eq!(created, 1);
    });
}

/// Proves that when the lease holder is dead and two processes try to take
/// it over at once, exactly one wins and the other sees the winner (alive)
/// as the holder: the whole token is checked in one CAS, so the loser can
/// never replace the winner.
#[test]
fn dead_lease_is_taken_over_by_exactly_one() {
    loom::model(|| {
        let dead = Owner::new(5, 5);
        let lease = Arc::new(Lease::new());
        lease.acquire(dead, |_| Liveness::Alive).unwrap();
        let alive = move |o: Owner| {
            if o == dead {
                Liveness::Dead
            } else {
                Liveness::Alive
            }
        };
        let other = {
            let lease = lease.clone();
            thread::spawn(move || lease.acquire(Owner::new(2, 2), alive))
        };
        let mine = lease.acquire(Owner::new(1, 1), alive);
        let theirs = other.join().unwrap();
        let wins = [mine, theirs].iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1);
        let winner = lease.holder().unwrap();
        for result in [mine, theirs] {
            if let Err(LeaseError::Held(holder)) = result {
                assert_eq!(holder, winner);
            }
        }
    });
}

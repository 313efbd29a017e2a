//! Live updates (`node_core::watch`, issue 14 item 5): a peer outside a key's replica set
//! watches it while peers all over the ring put and delete it, the key's leader crashes and a
//! newcomer joins as the key's owner. The watcher must see every acknowledged write that stayed
//! the key's newest version for a renewal period (all of phases 1-3), a burst of writes must
//! end at the value a quorum read returns, and its events must come in strictly increasing
//! version order (never an older version after a newer one).
#![cfg(feature = "sim")]

mod common;

use common::{assert_seed, converged_ring, seeds, wait_call as wait};
use node_core::Id;
use node_core::sim::Sim;
use node_core::sim::history::Ret;
use node_core::store::key_id;
use node_core::watch::{WATCH_LEASE_MS, WATCH_RENEW_MS};

const TEST: &str = "watch";
const KEY: &str = "watched";

/// The key's replica set in the true ring: its owner and the next two peers.
fn true_set(sim: &Sim) -> Vec<Id> {
    let ids = sim.truth();
    let owner = sim.true_owner(Id(key_id(KEY))).expect("a ring");
    let at = ids.iter().position(|p| *p == owner).expect("member");
    (0..3).map(|i| ids[(at + i) % ids.len()]).collect()
}

/// Puts (or deletes, for `None`) through `through`, waits for the answer, then leaves the
/// version standing for a renewal period. Returns the acknowledged `(value, ts)`, if any.
fn write_and_stand(
    sim: &mut Sim,
    through: Id,
    value: Option<&str>,
) -> Option<(Option<String>, u64)> {
    let index = match value {
        Some(v) => sim.client_put(through, KEY, v),
        None => sim.client_delete(through, KEY),
    }?;
    let ret = wait(sim, index);
    sim.run_for(WATCH_RENEW_MS + 1_500);
    match ret {
        Ret::Stored { ts } => Some((value.map(str::to_string), ts)),
        _ => None,
    }
}

fn run(seed: u64, loss: f64) {
    let mut sim = converged_ring(seed, 8, TEST);
    sim.set_loss(loss);
    let set = true_set(&sim);
    let ids = sim.truth();
    let watcher = *ids
        .iter()
        .find(|p| !set.contains(p))
        .expect("8 peers, 3 in the set");
    let leader = *set.iter().max().expect("3 members");
    println!("seed {seed}: loss {loss}, watcher {watcher}, set {set:?}, leader {leader}");
    sim.with_node(watcher, |n, now| n.watch(KEY, now))
        .expect("alive")
        .expect("a key within the limits");
    sim.run_for(1_000);

    let writers: Vec<Id> = ids.iter().copied().filter(|p| *p != watcher).collect();
    let mut acked = Vec::new();
    let mut step = 0usize;
    let mut next_writer = |sim: &Sim| loop {
        step += 1;
        let p = writers[(seed as usize + step) % writers.len()];
        if sim.node(p).is_some() {
            return p;
        }
    };
    // Phase 1: puts from several peers.
    for i in 0..4 {
        let through = next_writer(&sim);
        acked.extend(write_and_stand(&mut sim, through, Some(&format!("a{i}"))));
    }
    // Phase 2: the leader crashes; the remaining members (and the renewals) carry on.
    sim.crash(leader);
    for i in 0..4 {
        let through = next_writer(&sim);
        acked.extend(write_and_stand(&mut sim, through, Some(&format!("b{i}"))));
    }
    // Phase 3: a newcomer joins at the key's id: it owns the key from now on.
    let newcomer = Id(key_id(KEY));
    if sim.node(newcomer).is_none() {
        sim.add_node(newcomer);
    }
    sim.run_for(500);
    for i in 0..3 {
        let through = next_writer(&sim);
        acked.extend(write_and_stand(&mut sim, through, Some(&format!("c{i}"))));
    }
    let through = next_writer(&sim);
    acked.extend(write_and_stand(&mut sim, through, None));
    let through = next_writer(&sim);
    acked.extend(write_and_stand(&mut sim, through, Some("c-after-delete")));
    let owner_now = sim.true_owner(Id(key_id(KEY)));
    // Phase 4: a burst without pauses, from different peers at once.
    let burst: Vec<usize> = (0..5)
        .filter_map(|i| {
            let through = next_writer(&sim);
            sim.client_put(through, KEY, &format!("d{i}"))
        })
        .collect();
    for index in burst {
        wait(&mut sim, index);
    }
    sim.run_for(2 * WATCH_RENEW_MS);
    let reader = next_writer(&sim);
    let get = sim.client_get(reader, KEY).expect("alive");
    let last_read = wait(&mut sim, get);

    let events: Vec<_> = sim
        .watch_events(watcher)
        .iter()
        .filter(|(_, k, _)| k == KEY)
        .map(|(_, _, e)| e.clone())
        .collect();
    let shown: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{}@{}",
                e.value.as_deref().unwrap_or("<deleted>"),
                e.version.ts
            )
        })
        .collect();
    println!(
        "  {} writes acknowledged, {} events, owner after the join {owner_now:?}",
        acked.len(),
        events.len()
    );
    let why = |what: &str| {
        format!(
            "{what}\n  owner after the join {owner_now:?} (newcomer {newcomer}); acked {acked:?}\n  \
             events {shown:?}\n  final read {last_read:?}"
        )
    };
    assert_seed(
        acked.len() >= 10,
        seed,
        TEST,
        why("fewer than 10 of 14 paced writes were acknowledged"),
    );
    assert_seed(
        events.windows(2).all(|w| w[0].version < w[1].version),
        seed,
        TEST,
        why("events out of order"),
    );
    for (value, ts) in &acked {
        assert_seed(
            events
                .iter()
                .any(|e| e.version.ts == *ts && e.value == *value),
            seed,
            TEST,
            why(&format!(
                "acknowledged write {value:?}@{ts} never reached the watcher"
            )),
        );
    }
    let Ret::Found { value, ts, .. } = &last_read else {
        panic!("{}", why("the final read found nothing"));
    };
    assert_seed(
        events
            .last()
            .is_some_and(|e| e.version.ts == *ts && e.value.as_deref() == Some(value.as_str())),
        seed,
        TEST,
        why("the last event is not the value a quorum read returns"),
    );
}

#[test]
fn a_watch_sees_every_write_in_order_through_a_leader_crash_and_a_join() {
    seeds(14_500, 8).into_iter().for_each(|seed| run(seed, 0.0));
}

/// The same with 2% of all frames lost: lost notifications (and subscriptions) are repaired by
/// the renewals, so every paced write still arrives.
#[test]
fn lost_notifications_are_repaired_by_renewals() {
    seeds(14_700, 8)
        .into_iter()
        .for_each(|seed| run(seed, 0.02));
}

/// A watch made while the peer is still joining subscribes once it is a member; `unwatch`
/// stops the events at once, and within a lease no peer holds the subscription any more (the
/// current set drops it at once; a peer that left the set since lets it lapse).
#[test]
fn a_watch_made_while_joining_works_and_unwatch_ends_it() {
    for seed in seeds(14_600, 4) {
        let mut sim = converged_ring(seed, 6, TEST);
        let ids = sim.truth();
        let newcomer = sim.fresh_id();
        sim.add_node(newcomer);
        sim.with_node(newcomer, |n, now| n.watch(KEY, now))
            .expect("alive")
            .expect("a key within the limits");
        assert_seed(
            sim.run_until_converged(60_000),
            seed,
            TEST,
            "the newcomer did not join",
        );
        let index = sim
            .client_put(ids[0], KEY, "after the join")
            .expect("alive");
        let Ret::Stored { ts } = wait(&mut sim, index) else {
            panic!("seed {seed}: the put failed");
        };
        sim.run_for(2_000);
        let seen = |sim: &Sim| {
            sim.watch_events(newcomer)
                .iter()
                .map(|(_, _, e)| e.version.ts)
                .collect::<Vec<_>>()
        };
        assert_seed(
            seen(&sim).contains(&ts),
            seed,
            TEST,
            format!("the joining watcher saw {:?}, not ts {ts}", seen(&sim)),
        );
        let held = |sim: &Sim| -> usize {
            sim.alive_ids()
                .iter()
                .filter_map(|id| sim.node(*id))
                .map(|n| n.metrics().kv.watch_subscriptions)
                .sum()
        };
        assert_seed(held(&sim) > 0, seed, TEST, "no member holds the watch");
        sim.with_node(newcomer, |n, now| n.unwatch(KEY, now));
        sim.run_for(WATCH_LEASE_MS + 2_000);
        assert_seed(
            held(&sim) == 0,
            seed,
            TEST,
            format!("{} subscriptions still held after unwatch", held(&sim)),
        );
        let before = seen(&sim).len();
        let index = sim.client_put(ids[1], KEY, "unwatched").expect("alive");
        wait(&mut sim, index);
        sim.run_for(2_000);
        assert_seed(
            seen(&sim).len() == before,
            seed,
            TEST,
            "an event after unwatch",
        );
    }
}

/// A leader announces its own stamp only once a write quorum holds it. Here the key's owner is
/// also its leader (the set wraps around zero); it stamps a put while a partition cuts it off
/// from the other two members but not from the watcher (its predecessor), then crashes and
/// loses its store: no surviving peer ever held that version, so the watcher must never see
/// it, and its last event must be the value the ring keeps. Without the wait for the quorum
/// the watcher shows the lost version, and then misses the next writes, stamped below it.
#[test]
fn a_version_only_a_crashed_leader_held_never_reaches_watchers() {
    for seed in seeds(14_800, 8) {
        let mut sim = converged_ring(seed, 8, TEST);
        let ids = sim.truth();
        let n = ids.len();
        let leader = ids[n - 1];
        let watcher = ids[n - 2];
        let key = (0..)
            .map(|i| format!("wrapped-{i}"))
            .find(|k| Id(key_id(k)).in_half_open(watcher, leader))
            .expect("some key hashes there");
        sim.with_node(watcher, |n, now| n.watch(&key, now))
            .expect("alive")
            .expect("a key within the limits");
        sim.run_for(1_000);
        for i in 0..3 {
            let index = sim
                .client_put(ids[2], &key, &format!("before-{i}"))
                .expect("alive");
            wait(&mut sim, index);
        }
        sim.run_for(WATCH_RENEW_MS + 1_500);
        // The leader stamps "lost" and replicates nowhere; it crashes before it could notice
        // the partition (a longer one would make the watcher a member of its shrunken set: a
        // partition, which the store does not promise to survive).
        sim.partition(|p| u8::from(p == leader || p == watcher));
        sim.with_node(leader, |n, now| n.put(&key, "lost", "the-leader", now));
        sim.run_for(300);
        sim.crash(leader);
        sim.heal();
        sim.run_for(20_000);
        let mut after = Vec::new();
        for i in 0..2 {
            let index = sim
                .client_put(ids[2], &key, &format!("after-{i}"))
                .expect("alive");
            if let Ret::Stored { ts } = wait(&mut sim, index) {
                after.push(ts);
            }
            sim.run_for(WATCH_RENEW_MS + 1_500);
        }
        let get = sim.client_get(ids[3], &key).expect("alive");
        let last_read = wait(&mut sim, get);
        let events: Vec<(Option<String>, u64)> = sim
            .watch_events(watcher)
            .iter()
            .map(|(_, _, e)| (e.value.clone(), e.version.ts))
            .collect();
        let why =
            format!("events {events:?}, writes after the crash {after:?}, read {last_read:?}");
        assert_seed(
            !events.iter().any(|(v, _)| v.as_deref() == Some("lost")),
            seed,
            TEST,
            format!("the watcher saw a version only the crashed leader held: {why}"),
        );
        let Ret::Found { value, ts, .. } = &last_read else {
            panic!("seed {seed}: the final read found nothing: {why}");
        };
        assert_seed(
            events.last() == Some(&(Some(value.clone()), *ts)),
            seed,
            TEST,
            format!("the last event is not the value the ring keeps: {why}"),
        );
    }
}

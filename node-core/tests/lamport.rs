//! Lamport clocks only move forward, and a received timestamp is always exceeded.

use node_core::clock::LamportClock;
use proptest::collection::vec;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Tick,
    Observe(u64),
    Restore(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Tick),
        2 => (0u64..1_000).prop_map(Op::Observe),
        1 => any::<u64>().prop_map(Op::Observe),
        1 => any::<u64>().prop_map(Op::Restore),
    ]
}

proptest! {
    #[test]
    fn clock_never_decreases(start in prop_oneof![Just(0), Just(u64::MAX - 3), any::<u64>()], ops in vec(op(), 0..64)) {
        let mut clock = LamportClock::starting_at(start);
        for op in ops {
            let before = clock.current();
            match op {
                Op::Tick => {
                    let at = clock.tick();
                    prop_assert_eq!(at, clock.current());
                    prop_assert!(at > before || before == u64::MAX);
                }
                Op::Observe(remote) => {
                    let at = clock.observe(remote);
                    prop_assert_eq!(at, clock.current());
                    prop_assert!(at >= remote && at >= before);
                    prop_assert!(at > remote.max(before) || at == u64::MAX);
                }
                Op::Restore(floor) => {
                    clock.restore_at_least(floor);
                    prop_assert_eq!(clock.current(), before.max(floor));
                }
            }
            prop_assert!(clock.current() >= before);
        }
    }

    /// Every event issues a fresh timestamp until the clock saturates.
    #[test]
    fn issued_timestamps_are_unique(ops in vec(op(), 0..64)) {
        let mut clock = LamportClock::new();
        let mut issued = Vec::new();
        for op in ops {
            match op {
                Op::Tick => issued.push(clock.tick()),
                Op::Observe(remote) => issued.push(clock.observe(remote)),
                Op::Restore(floor) => clock.restore_at_least(floor),
            }
        }
        let fresh: Vec<u64> = issued.iter().copied().filter(|at| *at != u64::MAX).collect();
        prop_assert!(fresh.windows(2).all(|pair| pair[0] < pair[1]));
    }

    /// A message's receipt happens after its send, whatever each side did before.
    #[test]
    fn receipt_follows_send(sender_events in 0u64..50, receiver_start in 0u64..100) {
        let mut sender = LamportClock::new();
        for _ in 0..sender_events {
            sender.tick();
        }
        let mut receiver = LamportClock::starting_at(receiver_start);
        let sent = sender.tick();
        let received = receiver.observe(sent);
        prop_assert!(received > sent);
        prop_assert!(received > receiver_start);
    }
}

#[test]
fn restart_resumes_past_persisted_timestamps() {
    let mut before_crash = LamportClock::new();
    let last_written = (0..10).map(|_| before_crash.tick()).last().unwrap();
    let mut after_restart = LamportClock::new();
    after_restart.restore_at_least(last_written);
    assert!(after_restart.tick() > last_written);
}

#[test]
fn a_hostile_timestamp_can_be_refused() {
    let clock = LamportClock::starting_at(1_000);
    assert!(!clock.accepts(u64::MAX - 1, 1 << 32));
    assert!(clock.accepts(2_000, 1 << 32));
}

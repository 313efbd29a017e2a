//! The original project's churn experiment (see `common/mod.rs`) where the stopped peer
//! is killed with -9 (a crash; the data dirs keep its store).

mod common;

use lab::original::Stop;

#[test]
fn churn_by_kill_9_keeps_the_ring_and_every_acknowledged_value() {
    common::churn_keeps_every_acknowledged_value(
        "churn_by_kill_9_keeps_the_ring_and_every_acknowledged_value",
        Stop::Kill,
        "churn-kill",
    );
}

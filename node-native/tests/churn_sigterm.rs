//! The original project's churn experiment (see `common/mod.rs`) where the stopped peer
//! gets SIGTERM (a graceful leave).

mod common;

use lab::original::Stop;

#[test]
fn churn_by_sigterm_keeps_the_ring_and_every_acknowledged_value() {
    common::churn_keeps_every_acknowledged_value(
        "churn_by_sigterm_keeps_the_ring_and_every_acknowledged_value",
        Stop::Term,
        "churn-sigterm",
    );
}

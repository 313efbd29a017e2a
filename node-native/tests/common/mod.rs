//! The original project's churn experiment as an end-to-end test, shared by `churn_sigterm.rs`
//! and `churn_kill.rs` (issue 12): 5 peers started with its flags (`--host 127.0.0.1 --port P
//! [--bootstrap 127.0.0.1:5000]`, each with its own data dir); every 4 s for 60 s a random peer,
//! the bootstrap peer included, is stopped and started again at once with the same flags,
//! while a workload puts a fresh key through a random peer and gets it from a random peer. At
//! the end every peer must be joined with the right successor (`/ring`) and every acknowledged
//! put must read back its value (`lab::original`). Real `chord-node` processes over
//! WebRTC, inside a private network namespace.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use lab::original::{OriginalConfig, OriginalRing, Stop, run};

/// Runs the churn test `test` (its name, for the namespace re-run) stopping peers with `stop`;
/// `tag` names its data dirs and logs.
pub fn churn_keeps_every_acknowledged_value(test: &str, stop: Stop, tag: &str) {
    if !lab::netns::enter_private_netns(test) {
        return;
    }
    let root = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
    let config = OriginalConfig {
        num_nodes: 5,
        base_port: 5000,
        num_ops: 20,
        churn_interval: Some(Duration::from_secs(4)),
        duration: Some(Duration::from_secs(60)),
        stop,
        data_root: Some(root.clone()),
        seed: 12,
        log_prefix: tag.into(),
    };
    let mut ring = OriginalRing::start(&config).unwrap_or_else(|e| panic!("{e}"));
    let row = run(&mut ring, &config);
    println!("{row:?}");
    assert!(
        row.restarts >= 10,
        "churn stopped and restarted only {} peers",
        row.restarts
    );
    assert!(
        row.puts_acked >= 10,
        "only {} of {} puts acknowledged: the workload did not run\n{}",
        row.puts_acked,
        row.ops,
        ring.logs(30)
    );
    // A get that starts after a put was acknowledged must return its value.
    assert_eq!(
        row.gets_wrong,
        0,
        "gets right after an acknowledged put returned another value or none\n{}",
        ring.logs(30)
    );
    assert!(
        row.converged,
        "after churn the ring is not right: {:?}\n{}",
        row.not_right,
        ring.logs(60)
    );
    assert!(
        row.lost.is_empty() && row.unanswered == 0,
        "{} of {} acknowledged values lost, {} unanswered: {:?}\n{}",
        row.lost.len(),
        row.puts_acked,
        row.unanswered,
        row.lost,
        ring.logs(30)
    );
    drop(ring);
    let _ = std::fs::remove_dir_all(&root);
}

//! SIGTERM means a graceful leave: the peer tells its neighbours and exits on its own within a
//! bounded time (exit status 0), the ring closes over it, and every acknowledged key stays
//! readable. Real `chord-node` processes over WebRTC, inside a private network namespace.

use std::time::{Duration, Instant};

use lab::live::{Proc, get_value, json, put_value, ring_converged, wait_until};

#[test]
fn sigterm_leaves_the_ring_gracefully() {
    if !lab::netns::enter_private_netns("sigterm_leaves_the_ring_gracefully") {
        return;
    }
    let ports = [7641u16, 7642, 7643, 7644];
    let ids = [0x1000_0000u32, 0x5000_0000, 0x9000_0000, 0xd000_0000];
    let (mut peers, ring) = lab::live::start_peers(&ports, &ids);
    assert!(
        wait_until(Duration::from_secs(60), || ring_converged(&ring)),
        "no ring of 4: {}",
        peers.iter().map(Proc::log).collect::<String>()
    );
    for i in 0..20 {
        assert!(
            put_value(ports[0], &format!("k{i}"), &format!("v{i}")),
            "put k{i}"
        );
    }

    let started = Instant::now();
    peers[2].terminate();
    let status = peers[2].wait_exit(Duration::from_secs(10));
    let took = started.elapsed();
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM: exit status {status:?} after {took:?}\n{}",
        peers[2].log()
    );
    assert!(
        peers[2].log().contains("leaving the ring"),
        "no graceful leave in the log:\n{}",
        peers[2].log()
    );
    // The neighbours were told: the ring of the other three is right without waiting for a
    // dead link to be noticed.
    let rest: Vec<(u16, u32)> = ring
        .iter()
        .copied()
        .filter(|(p, _)| *p != ports[2])
        .collect();
    assert!(
        wait_until(Duration::from_secs(20), || ring_converged(&rest)),
        "the ring did not close over the peer that left: {:?}",
        rest.iter()
            .map(|(p, _)| json(*p, "GET", "/ring", None))
            .collect::<Vec<_>>()
    );
    for i in 0..20 {
        assert_eq!(
            get_value(ports[1], &format!("k{i}")).as_deref(),
            Some(format!("v{i}").as_str()),
            "k{i} after the graceful leave"
        );
    }
}

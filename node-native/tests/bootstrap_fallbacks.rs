//! A peer rejoins when its `--bootstrap` cannot help it (issue 12, process lifecycle):
//! - the first peer, crashed and restarted with `--bootstrap` naming itself, serves as a ring
//!   of one and merges back into the ring of the peers that bootstrap through it;
//! - a peer restarted with a `--bootstrap` that does not answer joins through the introducer
//!   it remembers from its last run (`<data-dir>/known-introducers.json`).
//!
//! Either way every peer ends joined with the right successor and every acknowledged value
//! reads back. Real `chord-node` processes over WebRTC, inside a private network namespace.

use std::time::Duration;

use lab::live::{Proc, get_value, json, put_value, ring_converged, wait_until};

fn rings(ports: &[u16]) -> Vec<String> {
    ports
        .iter()
        .map(|p| match json(*p, "GET", "/ring", None) {
            Some((_, v)) => format!("{p}: joined {} successors {}", v["joined"], v["successors"]),
            None => format!("{p}: no answer"),
        })
        .collect()
}

#[test]
fn a_peer_whose_bootstrap_is_itself_or_silent_still_rejoins() {
    if !lab::netns::enter_private_netns("a_peer_whose_bootstrap_is_itself_or_silent_still_rejoins")
    {
        return;
    }
    let ports = [7671u16, 7672, 7673];
    let ids = [0x3000_0000u32, 0x8000_0000, 0xc000_0000];
    let silent = 7679u16;
    let root = std::env::temp_dir().join(format!("bootstrap-fallbacks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let dirs: Vec<String> = ports
        .iter()
        .map(|p| root.join(p.to_string()).display().to_string())
        .collect();
    let start = |i: usize, bootstrap: Option<u16>| {
        Proc::peer_with(
            ports[i],
            ids[i],
            bootstrap,
            &["--data-dir", &dirs[i], "--log", "info"],
        )
    };
    let ring: Vec<(u16, u32)> = ports.iter().copied().zip(ids).collect();

    let mut peers = vec![start(0, None)];
    std::thread::sleep(Duration::from_millis(300));
    peers.push(start(1, Some(ports[0])));
    peers.push(start(2, Some(ports[0])));
    assert!(
        wait_until(Duration::from_secs(60), || ring_converged(&ring)),
        "no ring of 3: {:?}",
        rings(&ports)
    );
    let mut acked = Vec::new();
    for k in 0..20 {
        let (key, value) = (format!("k{k}"), format!("v{k}"));
        if put_value(ports[k % 3], &key, &value) {
            acked.push((key, value));
        }
    }
    assert!(acked.len() >= 10, "too few puts acknowledged: {acked:?}");
    let check = |peers: &[Proc], when: &str| {
        assert!(
            wait_until(Duration::from_secs(90), || ring_converged(&ring)),
            "{when}: the ring is not right: {:?}\n{}",
            rings(&ports),
            peers.iter().map(Proc::log).collect::<String>()
        );
        for (key, value) in &acked {
            for port in ports {
                assert_eq!(
                    get_value(port, key).as_deref(),
                    Some(value.as_str()),
                    "{when}: {key} through {port}"
                );
            }
        }
    };

    // The first peer crashes and comes back with --bootstrap naming itself.
    peers[0].kill();
    peers[0] = start(0, Some(ports[0]));
    check(&peers, "first peer restarted with --bootstrap itself");
    assert!(
        peers[0].log().contains("is this peer"),
        "the peer did not see that --bootstrap named itself:\n{}",
        peers[0].log()
    );

    // A peer crashes and comes back with a --bootstrap nobody answers at: it remembers the
    // introducer it reached last time.
    peers[2].kill();
    peers[2] = start(2, Some(silent));
    check(&peers, "peer restarted with a silent --bootstrap");
    drop(peers);
    let _ = std::fs::remove_dir_all(&root);
}

//! A whole ring restarting at once (issue 12): 3 peers with data dirs, peers 1 and 2
//! `--bootstrap` peer 0, are killed with -9 together and started again together, several
//! rounds. Every round, every peer must rejoin (joined, right successor) and every value
//! acknowledged so far must read back, from every peer. Before the introducer session was
//! retried, a peer whose bootstrap was not listening yet answered `not_joined` for good.
//! Real `chord-node` processes over WebRTC, inside a private network namespace.

use std::path::PathBuf;
use std::time::Duration;

use lab::live::{Proc, get_value, json, put_value, ring_converged, wait_until};

const ROUNDS: usize = 3;

fn start(ports: &[u16; 3], ids: &[u32; 3], dirs: &[PathBuf]) -> Vec<Proc> {
    // All three at once: peers 1 and 2 may find peer 0 not listening yet.
    (0..3)
        .map(|i| {
            let dir = dirs[i].display().to_string();
            Proc::peer_with(
                ports[i],
                ids[i],
                (i > 0).then_some(ports[0]),
                &["--data-dir", &dir, "--log", "info"],
            )
        })
        .collect()
}

fn rings(ports: &[u16]) -> Vec<String> {
    ports
        .iter()
        .map(|p| match json(*p, "GET", "/ring", None) {
            Some((_, v)) => format!("{p}: joined {} successors {}", v["joined"], v["successors"]),
            None => format!("{p}: no answer"),
        })
        .collect()
}

fn tail(peers: &[Proc]) -> String {
    peers
        .iter()
        .map(|p| {
            let log = p.log();
            let lines: Vec<&str> = log.lines().collect();
            format!(
                "--- {}\n{}\n",
                p.name,
                lines[lines.len().saturating_sub(40)..].join("\n")
            )
        })
        .collect()
}

#[test]
fn a_whole_ring_killed_at_once_rejoins_with_every_value() {
    if !lab::netns::enter_private_netns("a_whole_ring_killed_at_once_rejoins_with_every_value") {
        return;
    }
    let ports = [7661u16, 7662, 7663];
    let ids = [0x2000_0000u32, 0x7000_0000, 0xb000_0000];
    let root = std::env::temp_dir().join(format!("whole-ring-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let dirs: Vec<PathBuf> = ports.iter().map(|p| root.join(p.to_string())).collect();
    let ring: Vec<(u16, u32)> = ports.iter().copied().zip(ids).collect();

    let mut peers = start(&ports, &ids, &dirs);
    let mut acked: Vec<(String, String)> = Vec::new();
    for round in 0..=ROUNDS {
        assert!(
            wait_until(Duration::from_secs(90), || ring_converged(&ring)),
            "round {round}: the ring is not right: {:?}\n{}",
            rings(&ports),
            tail(&peers)
        );
        // Every value acknowledged in earlier rounds, from every peer.
        for (key, value) in &acked {
            for port in ports {
                assert_eq!(
                    get_value(port, key).as_deref(),
                    Some(value.as_str()),
                    "round {round}: {key} through {port}\n{}",
                    tail(&peers)
                );
            }
        }
        if round == ROUNDS {
            break;
        }
        // New writes (and overwrites of old keys) through every peer. A put that was not
        // acknowledged leaves its key's value unknown: that key is not checked any more.
        for k in 0..12 {
            let key = format!("k{}", k % 8);
            let value = format!("r{round}-{k}");
            let port = ports[k % 3];
            let ok = put_value(port, &key, &value);
            acked.retain(|(other, _)| *other != key);
            if ok {
                acked.push((key, value));
            }
        }
        assert!(
            acked.len() >= 4,
            "round {round}: too few puts acknowledged on a ring that was right: {acked:?}"
        );
        for peer in &mut peers {
            peer.kill();
        }
        peers = start(&ports, &ids, &dirs);
    }
    drop(peers);
    let _ = std::fs::remove_dir_all(&root);
}

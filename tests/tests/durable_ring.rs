//! Durable peers: 8 native peers with their stores on disk (`--data-dir`, strict durability),
//! inside a private network namespace. A whole replica set (3 ring neighbours) is killed with
//! SIGKILL, the ring takes writes while it is down, the three restart from their data
//! directories: every acknowledged value reads back, each restarted peer restored exactly what
//! it had on disk, and anti-entropy moved only what it missed, not its whole store. A damaged
//! database file stops `chord-node` with an error naming the file.

use std::path::PathBuf;
use std::time::Duration;

use e2e::{Proc, get_value, http, json, key_id, put_value, ring_converged, wait_until};
use node_native::storage::{Durability, FILE_NAME, PeerId, Storage};
use serde_json::Value;

const SIGNALING: u16 = 7700;
const FIRST_PEER: u16 = 7701;
const REPLICAS: usize = 3;
const IDS: [u32; 8] = [
    0x1000_0000,
    0x3000_0000,
    0x5000_0000,
    0x7000_0000,
    0x9000_0000,
    0xb000_0000,
    0xd000_0000,
    0xf000_0000,
];
/// Indices into `IDS` of the replica set that crashes: three ring neighbours.
const DOOMED: [usize; 3] = [2, 3, 4];

/// `target/tmp/durable-ring/<port>`, emptied.
fn fresh_data_dir(port: u16) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("durable-ring")
        .join(port.to_string());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("data dir");
    dir
}

fn durable_peer(index: usize, dir: &std::path::Path) -> Proc {
    let port = FIRST_PEER + index as u16;
    let dir = dir.to_str().expect("utf-8 path");
    Proc::peer_with(
        port,
        IDS[index],
        Some(SIGNALING),
        &[
            "--data-dir",
            dir,
            "--durability",
            "strict",
            "--log",
            "node_native=debug",
        ],
    )
}

fn metrics(port: u16) -> Value {
    json(port, "GET", "/metrics", None)
        .map(|(_, v)| v)
        .unwrap_or(Value::Null)
}

fn keys_stored(port: u16) -> Option<u64> {
    metrics(port)["raw"]["kv"]["keys_stored"].as_u64()
}

/// Each peer's view of the ring, for a failure message.
fn ring_report(peers: &[(u16, u32)]) -> String {
    peers
        .iter()
        .map(|(port, id)| {
            let ring = json(*port, "GET", "/ring", None).map(|(_, v)| v);
            format!("{port} {id:08x}: {ring:?}\n")
        })
        .collect()
}

/// Whether `peer` replicates `key`: the key's successor is `peer` or one of its k-1
/// predecessors on the ring of `ids`.
fn replicates(ids: &[u32], peer: u32, key: &str) -> bool {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    let k = key_id(key);
    let owner = sorted.iter().position(|id| *id >= k).unwrap_or(0);
    let at = sorted.iter().position(|id| *id == peer).expect("a member");
    (at + sorted.len() - owner) % sorted.len() < REPLICAS
}

#[test]
fn durable_replica_set_restarts_with_its_data() {
    if !lab::netns::enter_private_netns("durable_replica_set_restarts_with_its_data") {
        return;
    }
    let _signaling = Proc::signaling(SIGNALING);
    assert!(wait_until(Duration::from_secs(10), || http(
        SIGNALING, "GET", "/healthz", None
    )
    .is_some()));
    let dirs: Vec<PathBuf> = (0..IDS.len())
        .map(|i| fresh_data_dir(FIRST_PEER + i as u16))
        .collect();
    let mut peers: Vec<Proc> = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        peers.push(durable_peer(i, dir));
        std::thread::sleep(Duration::from_millis(300));
    }
    let all: Vec<(u16, u32)> = (0..IDS.len())
        .map(|i| (FIRST_PEER + i as u16, IDS[i]))
        .collect();
    assert!(
        wait_until(Duration::from_secs(60), || ring_converged(&all)),
        "the ring of 8 durable peers did not converge"
    );

    // 200 acknowledged puts through all peers.
    let mut acked: Vec<(String, String)> = Vec::new();
    for k in 0..200 {
        let port = FIRST_PEER + (k * 7 % 8) as u16;
        let (key, value) = (format!("key-{k}"), format!("value-{k}"));
        assert!(put_value(port, &key, &value), "put {key} via {port}");
        acked.push((key, value));
    }
    // Let replication and anti-entropy settle: every peer's key count stops moving.
    let mut last = Vec::new();
    assert!(
        wait_until(Duration::from_secs(30), || {
            let now: Vec<Option<u64>> = all.iter().map(|(p, _)| keys_stored(*p)).collect();
            let settled = now == last && now.iter().all(Option::is_some);
            last = now;
            settled
        }),
        "key counts did not settle"
    );
    std::thread::sleep(Duration::from_secs(1));
    let held_before: Vec<u64> = DOOMED
        .iter()
        .map(|&i| keys_stored(FIRST_PEER + i as u16).expect("metrics"))
        .collect();

    // A whole replica set crashes.
    for &i in &DOOMED {
        peers[i].kill();
    }
    // What each one had made durable, read straight from its file.
    let persisted: Vec<usize> = DOOMED
        .iter()
        .map(|&i| {
            let storage = Storage::open(&dirs[i], PeerId(IDS[i]), Durability::Strict)
                .unwrap_or_else(|e| panic!("reopen {}: {e}", dirs[i].display()));
            storage.load().expect("load").entries.len()
        })
        .collect();
    eprintln!("keys held before the crash {held_before:?}, on disk {persisted:?}");
    for (held, on_disk) in held_before.iter().zip(&persisted) {
        assert!(*on_disk > 0, "nothing was persisted");
        assert!(
            *on_disk as u64 >= *held,
            "strict durability: everything held ({held}) must be on disk ({on_disk})"
        );
    }

    // The survivors repair the ring and take writes; some may fail while they do.
    let survivors: Vec<(u16, u32)> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| !DOOMED.contains(i))
        .map(|(_, p)| *p)
        .collect();
    assert!(
        wait_until(Duration::from_secs(60), || ring_converged(&survivors)),
        "the survivors did not repair the ring"
    );
    let mut written_while_down = 0;
    for k in 0..30 {
        let port = survivors[k % survivors.len()].0;
        let (key, value) = (format!("late-{k}"), format!("late-value-{k}"));
        written_while_down += 1;
        if put_value(port, &key, &value) {
            acked.push((key, value));
        }
    }
    eprintln!(
        "{} of {written_while_down} puts acknowledged while the set was down",
        acked.len() - 200
    );
    assert!(acked.len() > 200, "no put succeeded while the set was down");

    // The set comes back from its data directories.
    for &i in &DOOMED {
        peers[i] = durable_peer(i, &dirs[i]);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        wait_until(Duration::from_secs(90), || ring_converged(&all)),
        "the ring did not converge after the restart:\n{}",
        ring_report(&all)
    );

    // Every acknowledged value reads back, through several peers (anti-entropy may still be
    // catching the restarted peers up: give the first reads time).
    for (n, (key, value)) in acked.iter().enumerate() {
        for j in [0, 3, 5] {
            let port = FIRST_PEER + ((n + j) % IDS.len()) as u16;
            assert!(
                wait_until(Duration::from_secs(30), || get_value(port, key).as_deref()
                    == Some(value.as_str())),
                "{key} via {port}: got {:?}, want {value}",
                get_value(port, key)
            );
        }
    }

    // Each restarted peer catches up: it holds (at least) every acknowledged key of its
    // replica ranges.
    for &i in &DOOMED {
        let port = FIRST_PEER + i as u16;
        let own_acked = acked
            .iter()
            .filter(|(key, _)| replicates(&IDS, IDS[i], key))
            .count() as u64;
        assert!(
            wait_until(Duration::from_secs(90), || keys_stored(port)
                .is_some_and(|held| held >= own_acked)),
            "peer {port} holds {:?} keys, fewer than the {own_acked} acknowledged in its ranges",
            keys_stored(port)
        );
    }

    // Each restarted peer restored what it had persisted, and anti-entropy brought it only
    // what it missed (plus keys it held for a neighbour's range while the set rejoined).
    let written: Vec<String> = (0..200)
        .map(|k| format!("key-{k}"))
        .chain((0..written_while_down).map(|k| format!("late-{k}")))
        .collect();
    for (n, &i) in DOOMED.iter().enumerate() {
        let port = FIRST_PEER + i as u16;
        let m = metrics(port);
        let restored = m["driver"]["storage"]["restored_entries"].as_u64();
        assert_eq!(
            restored,
            Some(persisted[n] as u64),
            "peer {port}: restored entries vs what its file held"
        );
        let applied = m["raw"]["kv"]["anti_entropy_applied"]
            .as_u64()
            .expect("anti_entropy_applied");
        let held = m["raw"]["kv"]["keys_stored"].as_u64().expect("keys_stored");
        let own = written
            .iter()
            .filter(|key| replicates(&IDS, IDS[i], key))
            .count() as u64;
        let outside = held.saturating_sub(own);
        eprintln!(
            "peer {port}: restored {restored:?}, holds {held} ({own} in its replica ranges, \
             {outside} outside), anti-entropy applied {applied} ({:?} bytes), restore {:?} ms, commits {:?}",
            m["raw"]["kv"]["anti_entropy_bytes"],
            m["driver"]["storage"]["restore_ms"],
            m["driver"]["storage"]["commits"]
        );
        assert!(
            applied <= written_while_down as u64 + 20 + outside,
            "peer {port}: anti-entropy applied {applied} entries, more than it missed \
             ({written_while_down} writes while down + 20 + {outside} held outside its ranges)"
        );
    }
}

#[test]
fn a_damaged_store_stops_the_peer_with_the_file_named() {
    let dir = fresh_data_dir(7790);
    let file = dir.join(FILE_NAME);
    std::fs::write(
        &file,
        b"this is not a redb database, just garbage".repeat(1000),
    )
    .expect("garbage");
    let mut peer = Proc::peer_with(
        7790,
        0x4242_4242,
        None,
        &["--data-dir", dir.to_str().expect("utf-8 path")],
    );
    let status = peer
        .wait_exit(Duration::from_secs(20))
        .expect("chord-node should exit on a damaged store");
    assert!(!status.success(), "exit status {status}");
    let log = peer.log();
    assert!(
        log.contains(&file.display().to_string()),
        "the error should name {}: {log}",
        file.display()
    );
    // The file is left as it was, for the operator to look at.
    assert!(
        std::fs::read(&file)
            .expect("file")
            .starts_with(b"this is not")
    );
}

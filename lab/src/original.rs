//! The original project's live harness: `chord-experiment --mode scale|churn --num-nodes N
//! --base-port P --num-ops N --churn-interval SECONDS` (issue 12, item 5).
//!
//! Peers are started exactly as the original started them, `chord-node --host 127.0.0.1 --port
//! P [--bootstrap 127.0.0.1:BASE]` (peer 0 on the base port, the others bootstrapping through
//! it), plus only where they keep their store (`--data-dir` under a root of the caller's, or
//! `--in-memory`), so a run never writes into the user's data directory. Their ids are the
//! default ones (SHA-1 of `127.0.0.1:P`), so a restarted peer is the same peer.
//!
//! Each op is a put of a fresh key to a random peer, then a get of that key from a random peer
//! (a peer that is down or restarting counts against the op, as it did in the original). Churn
//! stops a random peer, the bootstrap peer included, every interval (SIGTERM, or SIGKILL with
//! [`Stop::Kill`]) and starts it again at once with the same flags. Unlike the original, the
//! run ends with what a user is promised: once churn stopped, every peer must be joined with
//! the right successor (`/ring`), and every acknowledged put must read back its value.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::live::{Proc, json, put_value, ring_converged, wait_until};

/// How churn stops a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stop {
    /// SIGTERM: the peer leaves gracefully (the original's churn).
    Term,
    /// SIGKILL: a crash.
    Kill,
}

/// One run of the original harness.
#[derive(Debug, Clone)]
pub struct OriginalConfig {
    pub num_nodes: usize,
    pub base_port: u16,
    /// Ops (a put then a get) at least.
    pub num_ops: usize,
    /// Stop and restart a random peer this often; `None`: no churn (scale).
    pub churn_interval: Option<Duration>,
    /// Keep the workload (and churn) going at least this long.
    pub duration: Option<Duration>,
    pub stop: Stop,
    /// Peers keep their store in `<root>/<port>` (emptied first); `None`: `--in-memory`.
    pub data_root: Option<PathBuf>,
    /// Seeds the choice of peers and victims.
    pub seed: u64,
    /// Prefix of the peers' log names (`e2e-<prefix>-<port>.log` in the temp dir).
    pub log_prefix: String,
}

/// What a run found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OriginalRow {
    pub mode: String,
    pub nodes: usize,
    pub seconds: f64,
    pub ops: usize,
    /// Puts answered `{"ok": true}`.
    pub puts_acked: usize,
    /// Gets that returned the value just written (of acknowledged puts).
    pub gets_correct: usize,
    /// Gets of an acknowledged put that answered another value or "not found".
    pub gets_wrong: usize,
    /// Gets that got no answer or an error (peer down, restarting, timeout).
    pub gets_failed: usize,
    /// Peers stopped and started again.
    pub restarts: usize,
    /// When (seconds from the start of the workload) each peer was stopped, by port.
    pub restart_log: Vec<(f64, u16)>,
    /// After churn: every peer joined with the right successor.
    pub converged: bool,
    /// Peers whose `/ring` was not right at the end, with what it said.
    pub not_right: Vec<String>,
    /// Acknowledged puts read back once more at the end.
    pub read_back: usize,
    /// Acknowledged puts whose final read returned another value or "not found".
    pub lost: Vec<String>,
    /// Acknowledged puts whose final read got no answer (three tries), or that were not read
    /// because the read-back ran past its 180 s.
    pub unanswered: usize,
}

impl OriginalRow {
    /// Every promise held: joined and right, every acknowledged value read back.
    pub fn holds(&self) -> bool {
        self.converged && self.lost.is_empty() && self.unanswered == 0
    }
}

/// The peers of one run: their processes and the exact arguments each was started with.
#[derive(Debug)]
pub struct OriginalRing {
    pub peers: Vec<Proc>,
    args: Vec<Vec<String>>,
    prefix: String,
    incarnations: Vec<usize>,
}

impl OriginalRing {
    /// Starts the peers (peer 0 first, the others 200 ms apart) and waits until the ring is
    /// right (90 s at most).
    pub fn start(config: &OriginalConfig) -> Result<Self, String> {
        let base = config.base_port;
        let mut ring = Self {
            peers: Vec::new(),
            args: Vec::new(),
            prefix: config.log_prefix.clone(),
            incarnations: vec![0; config.num_nodes],
        };
        for i in 0..config.num_nodes {
            let port = base + i as u16;
            let mut args: Vec<String> = ["--host", "127.0.0.1", "--port"]
                .iter()
                .map(|a| (*a).to_string())
                .collect();
            args.push(port.to_string());
            if i > 0 {
                args.push("--bootstrap".into());
                args.push(format!("127.0.0.1:{base}"));
            }
            match &config.data_root {
                Some(root) => {
                    let dir = root.join(port.to_string());
                    let _ = std::fs::remove_dir_all(&dir);
                    args.push("--data-dir".into());
                    args.push(dir.display().to_string());
                }
                None => args.push("--in-memory".into()),
            }
            ring.args.push(args);
            let proc = ring.spawn(i);
            ring.peers.push(proc);
            crate::live::pace_start(i, port)?;
        }
        if !wait_until(Duration::from_secs(90), || ring_converged(&ring.ids())) {
            return Err(format!(
                "the ring did not converge within 90 s: {:?}",
                ring.rings()
            ));
        }
        Ok(ring)
    }

    fn spawn(&mut self, i: usize) -> Proc {
        let port = self.port(i);
        self.incarnations[i] += 1;
        let name = format!("{}-{port}-{}", self.prefix, self.incarnations[i]);
        Proc::chord_node(&name, &self.args[i], port)
    }

    pub fn port(&self, i: usize) -> u16 {
        self.args[i][3].parse().expect("the port argument")
    }

    pub fn ports(&self) -> Vec<u16> {
        (0..self.args.len()).map(|i| self.port(i)).collect()
    }

    /// `(port, id)` of every peer: the id is the default one, SHA-1 of `127.0.0.1:port`.
    pub fn ids(&self) -> Vec<(u16, u32)> {
        self.ports()
            .into_iter()
            .map(|p| (p, node_core::Id::of(format!("127.0.0.1:{p}").as_bytes()).0))
            .collect()
    }

    /// Stops peer `i` (and waits for it to exit; a peer that has not exited 10 s after
    /// SIGTERM is killed), then starts it again with the same arguments.
    pub fn restart(&mut self, i: usize, stop: Stop) {
        match stop {
            Stop::Term => {
                self.peers[i].terminate();
                if self.peers[i].wait_exit(Duration::from_secs(10)).is_none() {
                    self.peers[i].kill();
                }
            }
            Stop::Kill => self.peers[i].kill(),
        }
        self.peers[i] = self.spawn(i);
    }

    /// Every peer's `/ring` (or why there is none), for messages.
    pub fn rings(&self) -> Vec<String> {
        self.ports()
            .into_iter()
            .map(|p| match json(p, "GET", "/ring", None) {
                Some((_, v)) => format!(
                    "{p}: id {} joined {} successors {}",
                    v["id"], v["joined"], v["successors"]
                ),
                None => format!("{p}: no answer"),
            })
            .collect()
    }

    /// The last lines of every peer's log, for a failing test.
    pub fn logs(&self, lines: usize) -> String {
        let mut out = String::new();
        for proc in &self.peers {
            let log = proc.log();
            let all: Vec<&str> = log.lines().collect();
            out.push_str(&format!("--- {} (last {lines} lines)\n", proc.name));
            for line in &all[all.len().saturating_sub(lines)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

/// Runs the workload (and churn, when configured) on a started ring, then checks the promise.
pub fn run(ring: &mut OriginalRing, config: &OriginalConfig) -> OriginalRow {
    let started = Instant::now();
    let ports = ring.ports();
    let nodes = ports.len();
    let done = AtomicBool::new(false);
    // (key, value, through which port, acknowledged at seconds).
    let acked: Mutex<Vec<(String, String, u16, f64)>> = Mutex::new(Vec::new());
    let mut row = OriginalRow {
        mode: if config.churn_interval.is_some() {
            "churn".into()
        } else {
            "scale".into()
        },
        nodes,
        ..OriginalRow::default()
    };
    let mut rng = config.seed ^ 0x0816_1A77;
    let mut victims_rng = config.seed ^ 0xC4_0123;
    let restarts = std::thread::scope(|scope| {
        let churn = config.churn_interval.map(|interval| {
            let (done, ring) = (&done, &mut *ring);
            scope.spawn(move || {
                let mut restarts = Vec::new();
                let mut next = Instant::now() + interval;
                while !done.load(Ordering::Relaxed) {
                    if Instant::now() < next {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                    next += interval;
                    let victim =
                        (node_core::rng::splitmix64(&mut victims_rng) % nodes as u64) as usize;
                    restarts.push((started.elapsed().as_secs_f64(), ring.port(victim)));
                    ring.restart(victim, config.stop);
                }
                restarts
            })
        });
        let mut pick = || ports[(node_core::rng::splitmix64(&mut rng) % nodes as u64) as usize];
        let mut op = 0;
        while op < config.num_ops || config.duration.is_some_and(|d| started.elapsed() < d) {
            let key = format!("orig-{}-{op}", config.seed);
            let value = format!("v{op}");
            op += 1;
            let through = pick();
            if put_value(through, &key, &value) {
                row.puts_acked += 1;
                acked.lock().expect("acked").push((
                    key.clone(),
                    value.clone(),
                    through,
                    started.elapsed().as_secs_f64(),
                ));
                match get_answer(pick(), &key) {
                    Some(Some(v)) if v == value => row.gets_correct += 1,
                    Some(_) => row.gets_wrong += 1,
                    None => row.gets_failed += 1,
                }
            } else {
                // The op's get still goes out (the original did), but there is no written
                // value to compare it with.
                if get_answer(pick(), &key).is_none() {
                    row.gets_failed += 1;
                }
            }
        }
        row.ops = op;
        done.store(true, Ordering::Relaxed);
        churn.map_or_else(Vec::new, |h| h.join().expect("churn thread"))
    });
    row.restarts = restarts.len();
    row.restart_log = restarts;

    // Churn has stopped: every peer must come back, and every acknowledged put read back.
    let ids = ring.ids();
    row.converged = wait_until(Duration::from_secs(120), || ring_converged(&ids));
    if !row.converged {
        row.not_right = ring.rings();
    }
    let acked = acked.into_inner().expect("acked");
    // Bounded: a ring that is down would otherwise take a request timeout per key.
    let read_until = Instant::now() + Duration::from_secs(180);
    for (key, value, through, at) in &acked {
        if Instant::now() > read_until {
            row.unanswered += 1;
            continue;
        }
        let mut answer = None;
        for _ in 0..3 {
            answer = get_answer(pick_port(&ports, &mut rng), key);
            if answer.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        match answer {
            Some(Some(v)) if v == *value => row.read_back += 1,
            Some(other) => row.lost.push(format!(
                "{key} = {value:?} (id {:08x}, put through {through} at {at:.1} s), read {other:?}",
                node_core::store::key_id(key)
            )),
            None => row.unanswered += 1,
        }
    }
    row.seconds = started.elapsed().as_secs_f64();
    row
}

fn pick_port(ports: &[u16], rng: &mut u64) -> u16 {
    ports[(node_core::rng::splitmix64(rng) % ports.len() as u64) as usize]
}

/// `Some(Some(value))` found, `Some(None)` "not found", `None` no answer or an error status.
fn get_answer(port: u16, key: &str) -> Option<Option<String>> {
    let body = serde_json::json!({ "key": key }).to_string();
    let (status, v) = json(port, "POST", "/get", Some(&body))?;
    if status != 200 {
        return None;
    }
    Some(v["value"].as_str().map(str::to_string))
}

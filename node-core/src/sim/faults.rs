//! Client workloads under fault schedules, checked as histories (`chord-experiment --mode
//! sim-history`, the `history_*` tests, `cargo xtask soak`).
//!
//! One run ([`run`]): a ring of 6 to 9 peers forms; four clients issue puts (unique values),
//! deletes and gets of three keys through random peers, each waiting for its call to return
//! before the next (a client whose peer dies leaves its call unknown and moves to another
//! peer); meanwhile the seed draws the faults of one [`FaultClass`]. Then every fault is healed,
//! the ring rests, and each key is read twice more. The history goes to
//! [`super::history::check`].

use super::history::{self, Report};
use super::{JoinPattern, Sim, SimConfig};
use crate::Time;
use crate::id::Id;
use crate::store::key_id;

/// The kinds of faults one run injects (one class per run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultClass {
    /// No faults: the baseline.
    None,
    /// Peers join, some just after a key's id (so they own it and may lead its set).
    Joins,
    /// Peers leave gracefully.
    Leaves,
    /// Peers crash and stay down.
    Crashes,
    /// Peers crash and come back after a few seconds with an empty store.
    RestartEmpty,
    /// Peers crash and come back after a few seconds with their disk.
    RestartDisk,
    /// Peers crash and come back with the same id within a second (with or without disk).
    FastRestart,
    /// The ring splits in two (a minority and a majority side: an arc of 1 to half the peers)
    /// and heals 5-13 s later. A key is served only on the side that keeps a read quorum of its
    /// replica set (`node/fence.rs`); the other side refuses it until the heal.
    Partition,
    /// 1% of frames are lost.
    Loss,
    /// 1% of frames arrive twice.
    Duplicates,
    /// One peer is slow: 150 to 400 ms more each way.
    SlowPeer,
    /// Clients write the same keys at the same instant through different peers.
    ConcurrentWriters,
    /// Three of the classes above drawn by the seed, partitions excepted.
    Mixed,
}

impl FaultClass {
    pub const ALL: [Self; 13] = [
        Self::None,
        Self::Joins,
        Self::Leaves,
        Self::Crashes,
        Self::RestartEmpty,
        Self::RestartDisk,
        Self::FastRestart,
        Self::Partition,
        Self::Loss,
        Self::Duplicates,
        Self::SlowPeer,
        Self::ConcurrentWriters,
        Self::Mixed,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Joins => "joins",
            Self::Leaves => "leaves",
            Self::Crashes => "crashes",
            Self::RestartEmpty => "restart-empty",
            Self::RestartDisk => "restart-disk",
            Self::FastRestart => "fast-restart",
            Self::Partition => "partition",
            Self::Loss => "loss",
            Self::Duplicates => "duplicates",
            Self::SlowPeer => "slow-peer",
            Self::ConcurrentWriters => "concurrent-writers",
            Self::Mixed => "mixed",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// What one run saw.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub class: FaultClass,
    pub seed: u64,
    pub report: Report,
    pub history: history::History,
}

impl RunResult {
    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        format!(
            "cargo run --release -p lab --bin chord-experiment -- --mode sim-history \
             --faults {} --seed {} --seeds 1 --verbose",
            self.class.name(),
            self.seed
        )
    }
}

const KEYS: [&str; 3] = ["apple", "banana", "cherry"];
const CLIENTS: usize = 4;
const WORKLOAD_MS: Time = 30_000;

struct Client {
    peer: Option<Id>,
    /// The call in flight (history index) and when it may start the next one.
    pending: Option<usize>,
    next_at: Time,
}

/// One scheduled fault action.
#[derive(Debug, Clone, Copy)]
enum Action {
    Join { near_key: Option<usize> },
    Leave,
    Crash { restart_after: Option<(Time, bool)> },
    Restart { id: Id, disk: bool },
    Partition,
    Heal,
    Burst,
}

/// Runs one seed of one fault class and checks its history.
pub fn run(class: FaultClass, seed: u64) -> RunResult {
    let mut cfg = SimConfig::new(seed);
    let mut rng = crate::rng::Rng::new(seed ^ 0x0FA1_7500);
    // A mixed run draws three of the classes whose faults the promise covers (every class but
    // `None` and `Partition`, see `FaultClass::Partition`).
    let mixed: Vec<FaultClass> = if class == FaultClass::Mixed {
        let pool: Vec<FaultClass> = FaultClass::ALL
            .into_iter()
            .filter(|c| {
                !matches!(
                    c,
                    FaultClass::None | FaultClass::Partition | FaultClass::Mixed
                )
            })
            .collect();
        (0..3)
            .map(|_| pool[rng.below(pool.len() as u64) as usize])
            .collect()
    } else {
        vec![class]
    };
    let has = |c: FaultClass| mixed.contains(&c);
    if std::env::var_os("CHORD_TRACE_KEY").is_some() {
        eprintln!("classes: {mixed:?}");
    }
    if has(FaultClass::Loss) {
        cfg.loss = 0.01;
    }
    if has(FaultClass::Duplicates) {
        cfg.duplicate = 0.01;
    }
    let mut sim = Sim::new(cfg);
    let peers = 6 + rng.below(4) as usize;
    // Form without loss or duplicates, then turn them on for the workload.
    let (loss, dup) = (sim.cfg.loss, sim.cfg.duplicate);
    sim.set_loss(0.0);
    sim.set_duplicate(0.0);
    sim.join_nodes(peers, JoinPattern::Sequential);
    sim.run_until_converged(120_000);
    sim.set_loss(loss);
    sim.set_duplicate(dup);
    if has(FaultClass::SlowPeer) {
        let ids = sim.alive_ids();
        let slow = ids[rng.below(ids.len() as u64) as usize];
        let extra = 150 + rng.below(250);
        trace_victim(&format!("slow by {extra} ms each way:"), slow);
        sim.set_slow(slow, extra);
    }

    // The fault schedule: (time after the workload starts, action).
    let mut schedule: Vec<(Time, Action)> = Vec::new();
    for c in &mixed {
        match c {
            FaultClass::Joins => {
                for i in 0..3 {
                    let near_key = (i < 2).then(|| rng.below(KEYS.len() as u64) as usize);
                    schedule.push((2_000 + rng.below(24_000), Action::Join { near_key }));
                }
            }
            FaultClass::Leaves => {
                schedule.push((3_000 + rng.below(8_000), Action::Leave));
                schedule.push((15_000 + rng.below(10_000), Action::Leave));
            }
            FaultClass::Crashes => {
                // A crash per detection-and-repair window: losing a whole replica set at once
                // is the one loss physics allows (see `sim-churn` in the lab crate, lab/src/experiments.rs).
                schedule.push((
                    3_000 + rng.below(6_000),
                    Action::Crash {
                        restart_after: None,
                    },
                ));
                schedule.push((
                    16_000 + rng.below(8_000),
                    Action::Crash {
                        restart_after: None,
                    },
                ));
            }
            FaultClass::RestartEmpty | FaultClass::RestartDisk | FaultClass::FastRestart => {
                for i in 0..3 {
                    let at = 2_000 + i * 9_000 + rng.below(4_000);
                    let (after, disk) = match c {
                        FaultClass::RestartEmpty => (2_000 + rng.below(3_000), false),
                        FaultClass::RestartDisk => (2_000 + rng.below(3_000), true),
                        _ => (100 + rng.below(850), rng.chance(0.5)),
                    };
                    schedule.push((
                        at,
                        Action::Crash {
                            restart_after: Some((after, disk)),
                        },
                    ));
                }
            }
            FaultClass::Partition => {
                let at = 3_000 + rng.below(10_000);
                schedule.push((at, Action::Partition));
                schedule.push((at + 5_000 + rng.below(8_000), Action::Heal));
            }
            FaultClass::ConcurrentWriters => {
                for _ in 0..6 {
                    schedule.push((rng.below(WORKLOAD_MS - 1_000), Action::Burst));
                }
            }
            _ => {}
        }
    }
    schedule.sort_by_key(|(t, _)| *t);

    let trace = std::env::var("CHORD_TRACE_KEY").ok();
    let start = sim.now();
    let mut next_snapshot = start;
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|_| Client {
            peer: None,
            pending: None,
            next_at: start,
        })
        .collect();
    let mut serial = 0u64;
    let mut next_fault = 0;
    let mut partition_cut: Option<Id> = None;
    while sim.now() < start + WORKLOAD_MS {
        let now = sim.now();
        if let Some(key) = &trace
            && now >= next_snapshot
        {
            next_snapshot = now + 250;
            print_snapshot(&sim, key);
        }
        while next_fault < schedule.len() && start + schedule[next_fault].0 <= now {
            let (_, action) = schedule[next_fault];
            next_fault += 1;
            if trace.is_some() {
                eprintln!("{now} ms: {action:?}");
            }
            apply(
                &mut sim,
                &mut rng,
                action,
                &mut schedule,
                now - start,
                &mut partition_cut,
                &mut serial,
            );
            schedule[next_fault..].sort_by_key(|(t, _)| *t);
        }
        for client in &mut clients {
            step_client(&mut sim, &mut rng, client, &mut serial);
        }
        sim.run_for(5);
    }
    // Heal everything, let the calls in flight finish, let repair run, then read every key.
    sim.heal();
    sim.set_loss(0.0);
    sim.set_duplicate(0.0);
    for id in sim.alive_ids() {
        sim.set_slow(id, 0);
    }
    for (_, action) in &schedule[next_fault..] {
        if let Action::Restart { id, disk } = action {
            restart(&mut sim, *id, *disk);
        }
    }
    sim.run_for(sim.config().node.op_timeout_ms + 1_000);
    sim.run_for(40_000);
    for key in KEYS {
        for _ in 0..2 {
            let ids = sim.alive_ids();
            let at = ids[rng.below(ids.len() as u64) as usize];
            if let Some(index) = sim.client_get(at, key) {
                let deadline = sim.now() + sim.config().node.op_timeout_ms + 1_000;
                while !sim.history().is_complete(index) && sim.now() < deadline {
                    sim.run_for(5);
                }
            }
        }
    }
    let history = sim.history().clone();
    RunResult {
        class,
        seed,
        report: history::check(&history),
        history,
    }
}

/// With `CHORD_TRACE_KEY` set: every live peer's ring pointers and its version of the key.
fn print_snapshot(sim: &Sim, key: &str) {
    let short = |id: Id| format!("{:08x}", id.0);
    eprintln!(
        "{} ms: key {key} = {:08x}, true owner {:?}",
        sim.now(),
        key_id(key),
        sim.true_owner(Id(key_id(key))).map(short)
    );
    for id in sim.alive_ids() {
        let Some(n) = sim.node(id) else { continue };
        let e = n
            .store()
            .get(key)
            .map(|e| format!("ts={} {}", e.version.ts, e.as_value().unwrap_or("<del>")))
            .unwrap_or_default();
        let links: Vec<String> = sim
            .alive_ids()
            .into_iter()
            .filter(|p| *p != id)
            .filter_map(|p| {
                let state = match n.links.get(p) {
                    Some(crate::links::LinkState::Up { .. }) => return None,
                    Some(crate::links::LinkState::Connecting { since }) => format!("C{since}"),
                    None => match n.links.backoff_until(p) {
                        Some(until) => format!("B{until}"),
                        None => "-".to_string(),
                    },
                };
                Some(format!("{:04x}:{state}", p.0 >> 16))
            })
            .collect();
        let joined = if n.is_joined() {
            "true".to_string()
        } else {
            format!("false(via {:?})", sim.bootstrap_of(id).map(short))
        };
        eprintln!(
            "  {} j={joined} pred={:?} succ={:?} {e} | {}",
            short(id),
            n.ring().predecessor().map(short),
            n.ring()
                .successors()
                .iter()
                .take(4)
                .map(|s| short(*s))
                .collect::<Vec<_>>(),
            links.join(" ")
        );
    }
}

fn trace_victim(what: &str, id: Id) {
    if std::env::var_os("CHORD_TRACE_KEY").is_some() {
        eprintln!("  {what} {:08x}", id.0);
    }
}

fn step_client(sim: &mut Sim, rng: &mut crate::rng::Rng, client: &mut Client, serial: &mut u64) {
    if let Some(index) = client.pending {
        let peer_alive = client.peer.is_some_and(|p| sim.node(p).is_some());
        if sim.history().is_complete(index) {
            client.pending = None;
            client.next_at = sim.now() + rng.below(100);
        } else if !peer_alive {
            // The call never returns: unknown. Find another peer.
            client.pending = None;
            client.peer = None;
        } else {
            return;
        }
    }
    if sim.now() < client.next_at {
        return;
    }
    let peer = match client
        .peer
        .filter(|p| sim.node(*p).is_some_and(|n| n.is_joined()))
    {
        Some(p) => p,
        None => {
            let ids: Vec<Id> = sim
                .alive_ids()
                .into_iter()
                .filter(|id| sim.node(*id).is_some_and(|n| n.is_joined()))
                .collect();
            if ids.is_empty() {
                return;
            }
            let p = ids[rng.below(ids.len() as u64) as usize];
            client.peer = Some(p);
            p
        }
    };
    // Clients now and then move to another peer, as users of different tabs do.
    if rng.chance(0.1) {
        client.peer = None;
    }
    let key = KEYS[rng.below(KEYS.len() as u64) as usize];
    let dice = rng.below(100);
    let index = if dice < 45 {
        *serial += 1;
        sim.client_put(peer, key, &format!("v{serial}"))
    } else if dice < 55 {
        sim.client_delete(peer, key)
    } else {
        sim.client_get(peer, key)
    };
    client.pending = index;
}

fn restart(sim: &mut Sim, id: Id, disk: bool) {
    if disk {
        sim.restart_with_disk(id);
    } else {
        sim.restart(id);
    }
}

#[allow(clippy::too_many_arguments)]
fn apply(
    sim: &mut Sim,
    rng: &mut crate::rng::Rng,
    action: Action,
    schedule: &mut Vec<(Time, Action)>,
    at: Time,
    partition_cut: &mut Option<Id>,
    serial: &mut u64,
) {
    let ids = sim.alive_ids();
    let pick = |rng: &mut crate::rng::Rng| ids[rng.below(ids.len() as u64) as usize];
    match action {
        Action::Join { near_key } => {
            let id = match near_key {
                // Just after the key: the new peer owns it at once.
                Some(k) => Id(key_id(KEYS[k]).wrapping_add(1 + rng.below(64) as u32)),
                None => sim.fresh_id(),
            };
            if sim.node(id).is_none() {
                trace_victim("join", id);
                sim.add_node(id);
            }
        }
        Action::Leave => {
            if ids.len() > 5 {
                let victim = pick(rng);
                trace_victim("leave", victim);
                sim.leave(victim);
            }
        }
        Action::Crash { restart_after } => {
            if ids.len() > 5 {
                let victim = pick(rng);
                trace_victim("crash", victim);
                sim.crash(victim);
                if let Some((after, disk)) = restart_after {
                    schedule.push((at + after, Action::Restart { id: victim, disk }));
                }
            }
        }
        Action::Restart { id, disk } => {
            trace_victim(
                if disk {
                    "restart with disk"
                } else {
                    "restart empty"
                },
                id,
            );
            restart(sim, id, disk);
        }
        Action::Partition => {
            // A random arc of the ring: 1 to half the peers on the minority side.
            let n = ids.len();
            let size = 1 + rng.below((n / 2) as u64) as usize;
            let first = rng.below(n as u64) as usize;
            let minority: Vec<Id> = (0..size).map(|i| ids[(first + i) % n]).collect();
            *partition_cut = Some(minority[0]);
            sim.partition(move |id| u8::from(minority.contains(&id)));
        }
        Action::Heal => {
            sim.heal();
            *partition_cut = None;
        }
        Action::Burst => {
            // Three peers write one key at the same instant.
            let key = KEYS[rng.below(KEYS.len() as u64) as usize];
            for _ in 0..3 {
                *serial += 1;
                let peer = pick(rng);
                sim.client_put(peer, key, &format!("v{serial}"));
            }
        }
    }
}

/// One row of `--mode sim-history`: a fault class over many seeds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct HistoryRow {
    pub faults: String,
    pub seeds: u64,
    pub ops: u64,
    pub acked_writes: u64,
    /// Client calls that failed or never returned (the price of availability: a call fails
    /// rather than break the promise).
    pub failed_ops: u64,
    /// Violations of the promise (stale reads, reads going backwards, phantom values).
    pub anomalies: u64,
    /// Of the anomalies: stale reads that started when no live ring member held the write
    /// they missed (every holder had crashed: more than k - 1 failures of one set).
    pub anomalies_all_holders_down: u64,
    pub acked_writes_lost: u64,
    /// Keys (one per run and key) with no linearization, the GOAL check.
    pub not_linearizable_keys: u64,
    /// Keys whose linearizability search ran out of budget.
    pub undecided_keys: u64,
    /// Seeds with at least one anomaly or loss.
    pub failing_seeds: Vec<u64>,
}

impl HistoryRow {
    pub fn new(class: FaultClass) -> Self {
        Self {
            faults: class.name().to_string(),
            ..Self::default()
        }
    }

    pub fn add(&mut self, run: &RunResult) {
        self.seeds += 1;
        self.ops += run.report.ops as u64;
        self.acked_writes += run.report.acked_writes as u64;
        self.failed_ops += run
            .history
            .ops()
            .iter()
            .filter(|op| matches!(op.ret, history::Ret::Failed { .. } | history::Ret::Unknown))
            .count() as u64;
        self.anomalies += run.report.anomalies.len() as u64;
        self.anomalies_all_holders_down += run.report.all_holders_down() as u64;
        self.acked_writes_lost += run.report.acked_writes_lost as u64;
        self.not_linearizable_keys += run.report.not_linearizable.len() as u64;
        self.undecided_keys += run.report.undecided_keys as u64;
        if !run.report.holds() {
            self.failing_seeds.push(run.seed);
        }
    }
}

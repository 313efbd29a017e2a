//! `chord-experiment`: measures the chord-kv core and prints what it finds.
//!
//! Every mode produces serializable rows, prints them as an aligned table while it runs, can
//! draw them with `--plot FILE.svg`, and with `--json` ends stdout with exactly one line
//! `{"mode": "...", "rows": [...]}` for scripts. Modes are separate functions (`run_sim_hops`,
//! ...): a new mode adds a `Mode` variant, a row type and a function, and touches nothing else.
//!
//! ```text
//! chord-experiment --mode sim-hops --nodes 64,256,1024,4096,16384 --lookups 10000 --seed 1 \
//!     [--json] [--plot target/sim-hops.svg]
//! chord-experiment --mode sim-antientropy --keys 1000,10000,100000 --divergent 0,1,10,100 \
//!     --seed 1 [--json] [--plot target/sim-antientropy.svg]
//! chord-experiment --mode sim-flood --nodes 1024 --ttls 1,2,3,4,5,6,7,8 --queries 200 --seed 1
//! chord-experiment --mode sim-churn --nodes 500 --rates 0.5,1,2,4 --seconds 120 --seed 1
//! chord-experiment --mode sim-history --seeds 200 [--faults joins,crashes,...] [--seed 1] \
//!     [--verbose] [--json]
//! chord-experiment --mode sim-hostile --seeds 50 [--attacks forged-sync,...] [--seed 1] \
//!     [--verbose] [--json]
//! chord-experiment --mode scale --num-nodes 5 --num-ops 500 --clients 8
//! chord-experiment --mode churn --num-nodes 6 --restarts 4 --period-ms 10000 \
//!     [--verbose] [--json] [--plot target/churn.svg]
//! chord-experiment --mode churn --num-nodes 5 --base-port 5000 --num-ops 200 \
//!     --churn-interval 4 [--duration 60] [--stop term|kill] [--in-memory]
//! chord-experiment --mode scale --original --num-nodes 5 --num-ops 200
//! chord-experiment --mode durable --num-ops 300 --clients 8 --restart-keys 100000 \
//!     [--data-root target/tmp/durable-bench] [--json] [--plot target/durable.svg]
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

/// The simulator allocates and frees small buffers (frames, event-queue buckets) by the
/// million while its heap grows to gigabytes. glibc's allocator handed the top of that heap
/// back to the kernel whenever it shrank and got it back zeroed moments later: at 8,192 peers
/// `sim-hops` took 106,700 page faults and spent 7% of its time in the kernel clearing pages
/// (`perf record`). mimalloc keeps freed memory for reuse.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use lab::experiments::{HopsOptions, HopsRow, Progress, sim_churn, sim_flood, sim_hops};
use lab::plot::Series;
use lab::progress::ProgressDisplay;
use lab::report::{Table, json_line};
use lab::{antientropy, plot};
use node_core::merkle::{self, StepOptions};
use node_core::sim::faults::{self, FaultClass, HistoryRow};
use node_core::sim::hostile::{self, Attack, HostileRow};
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Experiments on the chord-kv core (simulated rings for now)"
)]
struct Cli {
    /// Which experiment to run.
    #[arg(long, value_enum)]
    mode: Mode,
    /// Ring sizes to measure, comma-separated; each one is a fresh ring.
    #[arg(
        long,
        value_name = "N,N,...",
        value_delimiter = ',',
        value_parser = parse_positive,
        default_value = "64,256,1024,4096"
    )]
    nodes: Vec<usize>,
    /// Lookups per ring size, from random peers for random keys.
    #[arg(long, value_parser = parse_positive, default_value = "10000")]
    lookups: usize,
    /// Keys per replica (sim-antientropy), comma-separated; each one is a fresh pair of stores.
    #[arg(
        long,
        value_name = "K,K,...",
        value_delimiter = ',',
        value_parser = parse_positive,
        default_value = "1000,10000,100000"
    )]
    keys: Vec<usize>,
    /// Divergent writes applied to one replica before the round (sim-antientropy).
    #[arg(
        long,
        value_name = "D,D,...",
        value_delimiter = ',',
        default_value = "0,1,10,100"
    )]
    divergent: Vec<usize>,
    /// Merkle tree depth of both replicas (sim-antientropy); all peers of a ring share it.
    #[arg(long, default_value_t = merkle::DEFAULT_DEPTH, value_parser = clap::value_parser!(u8).range(0..=i64::from(merkle::MAX_DEPTH)))]
    depth: u8,
    /// Flood TTLs to compare with Chord lookups (sim-flood).
    #[arg(
        long,
        value_name = "T,T,...",
        value_delimiter = ',',
        default_value = "1,2,3,4,5,6,7,8"
    )]
    ttls: Vec<u8>,
    /// Flood queries (and as many Chord lookups) per TTL (sim-flood).
    #[arg(long, value_parser = parse_positive, default_value = "200")]
    queries: usize,
    /// Joins plus failures per second (sim-churn), comma-separated.
    #[arg(
        long,
        value_name = "R,R,...",
        value_delimiter = ',',
        default_value = "0.5,1,2,4"
    )]
    rates: Vec<f64>,
    /// Seconds of churn per rate (sim-churn).
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    /// Every simulated peer follows a browser tab's link policy (sim-churn; node-core's
    /// `peer::budget::budgeted_links`).
    #[arg(long)]
    tabs: bool,
    /// Latency model of the simulated network (sim-hops): `uniform` (5-40 ms per link, the
    /// simulator's default) or `geo` (peers placed on five continents of a plane, round trips
    /// 2-300 ms, node-core's `sim::Geometry::wan`).
    #[arg(long, value_enum, default_value = "uniform")]
    latency: LatencyModel,
    /// Fingers in base B (sim-hops; node-core's `Config::finger_base`): (B-1)·log_B N
    /// fingers for log_B N hops. 2 is Chord's.
    #[arg(long, default_value_t = 2, value_parser = parse_finger_base)]
    finger_base: u32,
    /// Peers pick, for each finger, the candidate with the lowest measured round trip
    /// (sim-hops; proximity neighbour selection, node-core's `Config::proximity_fingers`).
    #[arg(long)]
    proximity: bool,
    /// Lookups end one hop early from the successor lists fingers report (sim-hops;
    /// node-core's `Config::finger_lists`).
    #[arg(long)]
    finger_lists: bool,
    /// Links each simulated peer keeps open at most (sim-hops; node-core's `Config::max_links`,
    /// default 64). Base-b fingers need about twice `(b-1)·log_b N` (other peers' fingers
    /// are links too).
    #[arg(long, default_value_t = 64, value_parser = parse_positive)]
    max_links: usize,
    /// Native peers to start (scale): real `chord-node` processes over WebRTC on loopback.
    #[arg(long, value_parser = parse_positive, default_value = "5")]
    num_nodes: usize,
    /// Distinct keys written and read (scale).
    #[arg(long, value_parser = parse_positive, default_value = "100")]
    num_ops: usize,
    /// Concurrent HTTP clients of the last scale phase.
    #[arg(long, value_parser = parse_positive, default_value = "8")]
    clients: usize,
    /// Peers killed and restarted during `--mode churn`, one every `--period-ms`.
    #[arg(long, default_value_t = 5)]
    restarts: usize,
    /// Kills come one repair window apart (the fault model: at most k-1 replicas of a set lost
    /// between repair rounds).
    #[arg(long, default_value_t = 10_000)]
    period_ms: u64,
    /// Keys written straight into the data directory of the peer that `--mode durable`
    /// restarts (restart-to-serving time).
    #[arg(long, value_parser = parse_positive, default_value = "100000")]
    restart_keys: usize,
    /// Where `--mode durable` keeps its peers' data directories (emptied first).
    #[arg(long, default_value = "target/tmp/durable-bench")]
    data_root: PathBuf,
    /// First port of the live ring (scale, churn, durable); the original's default.
    #[arg(long, default_value_t = 5000)]
    base_port: u16,
    /// Scale: run every peer with `--verify-ids` (ids proven by link certificates,
    /// docs/threat-model.md "Identities") instead of seeded `--id`s, to measure their cost.
    #[arg(long)]
    verify_ids: bool,
    /// The original project's harness (scale and churn): peers started with its flags, each
    /// op a put to a random peer then a get from a random peer (`lab::original`).
    /// Implied by `--churn-interval`.
    #[arg(long)]
    original: bool,
    /// Churn of the original harness: every this many seconds a random peer (the bootstrap
    /// peer included) is stopped (`--stop`) and started again at once with the same flags.
    #[arg(long, value_name = "SECONDS")]
    churn_interval: Option<f64>,
    /// Original harness: keep the workload (and churn) going at least this many seconds, even
    /// after `--num-ops` ops.
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Original harness: how churn stops a peer, `term` (SIGTERM, a graceful leave, as the
    /// original did) or `kill` (SIGKILL, a crash).
    #[arg(long, value_enum, default_value_t = StopArg::Term)]
    stop: StopArg,
    /// Original harness: peers keep their store in memory (default: a data dir per peer under
    /// `--data-root`/original, emptied first).
    #[arg(long)]
    in_memory: bool,
    /// Seed of the simulation; the same seed replays the same run (sim-history: the first of
    /// `--seeds` consecutive seeds).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seeds per fault class (sim-history).
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// Fault classes (sim-history), comma-separated; default all: none, joins, leaves,
    /// crashes, restart-empty, restart-disk, fast-restart, partition, loss, duplicates,
    /// slow-peer, concurrent-writers, mixed.
    #[arg(long, value_delimiter = ',', value_parser = parse_fault_class)]
    faults: Vec<FaultClass>,
    /// Attack classes (sim-hostile), comma-separated; default all: none, forged-sync,
    /// sync-theirs, forged-replicate, forged-acks, forged-read-reply, election-flood,
    /// kv-set-flood, merkle-bomb, routing-hints, garbage, forged-hand-back, ring-lies (the last
    /// two are not defended, docs/threat-model.md).
    #[arg(long, value_delimiter = ',', value_parser = parse_attack)]
    attacks: Vec<Attack>,
    /// Print every anomaly of a failing seed (sim-history), not just the first three; every
    /// operation of a key that is not linearizable (churn).
    #[arg(long)]
    verbose: bool,
    /// End stdout with one JSON line: {"mode": ..., "rows": [...]}.
    #[arg(long)]
    json: bool,
    /// Also draw the results as an SVG chart at this path.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

/// `--latency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LatencyModel {
    Uniform,
    Geo,
}

fn parse_finger_base(s: &str) -> Result<u32, String> {
    let base: u32 = s.parse().map_err(|e| format!("{e}"))?;
    if base.is_power_of_two() && (2..=node_core::id::MAX_FINGER_BASE).contains(&base) {
        Ok(base)
    } else {
        Err(format!(
            "a power of two from 2 to {}",
            node_core::id::MAX_FINGER_BASE
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StopArg {
    Term,
    Kill,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[allow(clippy::enum_variant_names)] // the live-peer modes (scale, churn, durable) come with the native peer
enum Mode {
    /// Lookup path length (mean, p1, p99) against ring size, in the simulator.
    SimHops,
    /// Bytes and messages of one Merkle anti-entropy round between two replicas, against the
    /// number of divergent keys, next to the whole-map baseline.
    SimAntientropy,
    /// Gnutella flooding against Chord lookups on one ring, for each TTL: success rate and
    /// messages per query.
    SimFlood,
    /// Peers join and crash during a workload of lookups and puts: lookup failures, hops and
    /// acknowledged writes lost.
    SimChurn,
    /// Client histories under fault schedules, checked against the store's promise and for
    /// linearizability: one row per fault class.
    SimHistory,
    /// One hostile peer sends forged frames of one attack class per row while clients use the
    /// honest peers; their histories are checked like sim-history's.
    SimHostile,
    /// The original harness's workload on real native peers (separate processes, WebRTC on
    /// loopback) through one entry peer: throughput, latency percentiles, read correctness.
    Scale,
    /// Real native peers killed (-9) and restarted empty during a workload: failures,
    /// latency, acknowledged writes lost.
    Churn,
    /// Durable peers: put throughput and latency per durability mode (strict, relaxed, in
    /// memory) on a 3-peer live ring, and the time a peer with `--restart-keys` keys on disk
    /// takes from start to answering a get.
    Durable,
}

impl Mode {
    /// The name used on the command line and in the JSON report.
    fn name(self) -> String {
        self.to_possible_value()
            .expect("no mode is skipped")
            .get_name()
            .to_owned()
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if matches!(
        cli.mode,
        Mode::SimHops
            | Mode::SimAntientropy
            | Mode::SimFlood
            | Mode::SimChurn
            | Mode::SimHistory
            | Mode::SimHostile
    ) {
        huge_pages::reexec_with_huge_pages();
    }
    match cli.mode {
        Mode::SimHops => run_sim_hops(&cli),
        Mode::SimAntientropy => run_sim_antientropy(&cli),
        Mode::SimFlood => run_sim_flood(&cli),
        Mode::SimChurn => run_sim_churn(&cli),
        Mode::SimHistory => run_sim_history(&cli),
        Mode::SimHostile => run_sim_hostile(&cli),
        Mode::Scale | Mode::Churn if cli.original || cli.churn_interval.is_some() => {
            run_original(&cli)
        }
        Mode::Scale => run_scale(&cli),
        Mode::Churn => run_churn(&cli),
        Mode::Durable => run_durable(&cli),
    }
}

/// The simulator keeps every peer in one process and touches their state in random order: a
/// 16,384-peer `sim-hops` run holds about 840 MiB and spent much of its time on address
/// translation misses (a profile shows its hottest instructions are the first loads of a peer's
/// link table and of the simulator's link map). glibc backs its heap with transparent huge pages
/// when the `glibc.malloc.hugetlb=1` tunable is set, and reads tunables only at process start,
/// so the simulator modes run this binary again once with it set. Only the allocator's page size
/// changes: the simulation and its outputs are the same. Native modes are left alone, since the
/// peers they start would inherit the setting.
mod huge_pages {
    /// The tunable glibc reads at start-up.
    const VAR: &str = "GLIBC_TUNABLES";
    const HUGETLB: &str = "glibc.malloc.hugetlb";

    /// Replaces this process with itself, same arguments, `glibc.malloc.hugetlb=1` added to
    /// `GLIBC_TUNABLES`, unless the variable already sets `glibc.malloc.hugetlb` (a caller's
    /// choice, or this process already is the re-run). Returns only when it does nothing or the
    /// re-run could not start; the run then goes on with ordinary pages.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    pub(super) fn reexec_with_huge_pages() {
        use std::os::unix::process::CommandExt as _;
        let current = std::env::var(VAR).unwrap_or_default();
        if current
            .split(':')
            .any(|tunable| tunable.split('=').next() == Some(HUGETLB))
        {
            return;
        }
        let value = if current.is_empty() {
            format!("{HUGETLB}=1")
        } else {
            format!("{current}:{HUGETLB}=1")
        };
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let error = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env(VAR, value)
            .exec();
        eprintln!("note: running without huge pages ({error})");
    }

    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    pub(super) fn reexec_with_huge_pages() {}
}

/// One `sim-hops` row: the simulator's measurements plus the wall time the run took here.
#[derive(Debug, Serialize)]
struct TimedHopsRow {
    #[serde(flatten)]
    hops: HopsRow,
    /// Wall-clock seconds for forming the ring and running the lookups.
    seconds: f64,
}

/// `--mode sim-hops`: for each ring size, form a ring through the real join protocol and measure
/// lookup path lengths against the Chord paper's ½·log2 N.
fn run_sim_hops(cli: &Cli) -> anyhow::Result<()> {
    let table = Table::new(&[
        ("nodes", 6),
        ("mean hops", 0),
        ("p1", 3),
        ("p99", 3),
        ("½·log2 N", 0),
        ("wrong owners", 0),
        ("failed lookups", 0),
        ("latency ms", 0),
        ("direct RTT ms", 0),
        ("latency/RTT", 0),
        ("links", 0),
        ("wall seconds", 0),
    ]);
    let options = HopsOptions {
        geo: cli.latency == LatencyModel::Geo,
        finger_base: cli.finger_base,
        proximity: cli.proximity,
        finger_lists: cli.finger_lists,
        max_links: cli.max_links,
    };
    println!(
        "latency model {:?}, finger base {}, proximity fingers {}, finger lists {}, max links {}",
        cli.latency, cli.finger_base, cli.proximity, cli.finger_lists, cli.max_links
    );
    println!("{}", table.header());
    let mut rows = Vec::with_capacity(cli.nodes.len());
    for &nodes in &cli.nodes {
        let mut progress = ProgressDisplay::new(format!("N={nodes}"));
        let started = Instant::now();
        let hops = sim_hops(nodes, cli.lookups, cli.seed, &options, &mut |step| {
            progress.update(step)
        });
        let seconds = started.elapsed().as_secs_f64();
        progress.finish();
        println!(
            "{}",
            table.row(&[
                hops.nodes.to_string(),
                format!("{:.3}", hops.mean_hops),
                hops.p1_hops.to_string(),
                hops.p99_hops.to_string(),
                format!("{:.3}", hops.half_log2_n),
                hops.wrong_owner.to_string(),
                hops.failed.to_string(),
                format!("{:.1}", hops.mean_latency_ms),
                format!("{:.1}", hops.mean_direct_rtt_ms),
                format!("{:.2}", hops.latency_over_direct_rtt),
                format!("{:.1}", hops.mean_links),
                format!("{seconds:.2}"),
            ])
        );
        rows.push(TimedHopsRow { hops, seconds });
    }

    if let Some(path) = &cli.plot {
        let caption = format!(
            "Chord lookup hops vs ring size ({} lookups per size, seed {})",
            cli.lookups, cli.seed
        );
        let hops: Vec<HopsRow> = rows.iter().map(|row| row.hops.clone()).collect();
        prepare_output(path)?;
        plot::hops_vs_nodes(path, &hops, &caption)?;
        println!("plot: {}", path.display());
    }
    finish(cli, &rows)
}

/// `--mode sim-antientropy`: for each key count and divergence, one anti-entropy round between
/// two in-process stores through `merkle::handle`, every message measured as framed JSON.
fn run_sim_antientropy(cli: &Cli) -> anyhow::Result<()> {
    let options = StepOptions::default();
    let table = Table::new(&[
        ("keys", 7),
        ("divergent", 0),
        ("messages", 0),
        ("bytes per round", 0),
        ("KiB", 9),
        ("baseline KiB", 0),
        ("saving", 7),
        ("largest msg", 0),
        ("converged", 0),
    ]);
    println!("{}", table.header());
    let mut rows = Vec::with_capacity(cli.keys.len() * cli.divergent.len());
    for &keys in &cli.keys {
        let base = antientropy::random_store(keys, cli.depth, cli.seed);
        for &divergent in &cli.divergent {
            let row = antientropy::measure_round(&base, divergent, cli.seed, &options)
                .with_context(|| format!("{keys} keys, {divergent} divergent"))?;
            println!(
                "{}",
                table.row(&[
                    row.keys.to_string(),
                    row.divergent.to_string(),
                    row.messages.to_string(),
                    row.bytes_per_round.to_string(),
                    format!("{:.2}", row.kib_per_round()),
                    format!("{:.1}", row.baseline_kib()),
                    format!(
                        "{:.0}x",
                        row.baseline_bytes as f64 / row.bytes_per_round.max(1) as f64
                    ),
                    row.largest_message_bytes.to_string(),
                    row.converged.to_string(),
                ])
            );
            rows.push(row);
        }
    }
    let in_sync_worst = rows
        .iter()
        .filter(|row| row.divergent == 0)
        .map(|row| row.bytes_per_round)
        .max();
    if let Some(bytes) = in_sync_worst {
        let verdict = if bytes < 1024 { "under" } else { "OVER" };
        println!("in-sync round: at most {bytes} bytes, {verdict} the 1 KiB target");
    }

    if let Some(path) = &cli.plot {
        let caption = format!(
            "Anti-entropy bytes per round vs divergent keys (depth {}, seed {})",
            cli.depth, cli.seed
        );
        prepare_output(path)?;
        plot::antientropy_bytes(path, &rows, &caption)?;
        println!("plot: {}", path.display());
    }
    finish(cli, &rows)
}

/// `--mode sim-flood`: flooding's cost and reach for each TTL next to Chord's lookup cost, on a
/// ring of the first `--nodes` size.
fn run_sim_flood(cli: &Cli) -> anyhow::Result<()> {
    let nodes = cli.nodes[0];
    let mut progress = ProgressDisplay::new(format!("N={nodes}"));
    let started = Instant::now();
    let rows = sim_flood(nodes, &cli.ttls, cli.queries, cli.seed, &mut |step| {
        progress.update(step)
    });
    progress.finish();
    let table = Table::new(&[
        ("ttl", 4),
        ("success", 0),
        ("msgs/query", 0),
        ("dups/query", 0),
        ("peers reached", 0),
        ("hops to hit", 0),
        ("chord msgs/lookup", 0),
        ("chord success", 0),
    ]);
    println!(
        "N = {nodes}, {} queries per TTL, seed {}",
        cli.queries, cli.seed
    );
    println!("{}", table.header());
    for r in &rows {
        println!(
            "{}",
            table.row(&[
                r.ttl.to_string(),
                format!("{:.1}%", 100.0 * r.success_rate),
                format!("{:.1}", r.messages_per_query),
                format!("{:.1}", r.duplicates_per_query),
                format!("{:.1}", r.peers_reached_per_query),
                format!("{:.2}", r.hops_to_first_hit),
                format!("{:.1}", r.chord_messages_per_lookup),
                format!("{:.1}%", 100.0 * r.chord_success_rate),
            ])
        );
    }
    println!("wall seconds: {:.2}", started.elapsed().as_secs_f64());
    if let Some(path) = &cli.plot {
        let series = vec![
            Series {
                name: "flood: messages per query".into(),
                points: rows
                    .iter()
                    .map(|r| (f64::from(r.ttl), r.messages_per_query.max(1e-3)))
                    .collect(),
                dashed: false,
            },
            Series {
                name: "Chord: messages per lookup".into(),
                points: rows
                    .iter()
                    .map(|r| (f64::from(r.ttl), r.chord_messages_per_lookup))
                    .collect(),
                dashed: true,
            },
            Series {
                name: "flood: success rate x 100".into(),
                points: rows
                    .iter()
                    .map(|r| (f64::from(r.ttl), (100.0 * r.success_rate).max(1e-3)))
                    .collect(),
                dashed: false,
            },
        ];
        prepare_output(path)?;
        plot::lines(
            path,
            &format!("Flooding vs Chord at N = {nodes} (seed {})", cli.seed),
            ("flood TTL", "messages (log scale)"),
            &series,
            true,
        )?;
        println!("plot: {}", path.display());
    }
    finish(cli, &rows)
}

fn parse_fault_class(name: &str) -> Result<FaultClass, String> {
    FaultClass::parse(name).ok_or_else(|| {
        let known: Vec<&str> = FaultClass::ALL.iter().map(|c| c.name()).collect();
        format!("unknown fault class {name:?} (known: {})", known.join(", "))
    })
}

/// One `sim-history` row and the wall time it took.
#[derive(Debug, Serialize)]
struct TimedHistoryRow {
    #[serde(flatten)]
    row: HistoryRow,
    seconds: f64,
}

/// Runs `run` for seeds `first..first + count` on every core, handing each result to `each` on
/// this thread as it arrives (in completion order, not seed order).
fn for_each_seed<R: Send>(
    first: u64,
    count: u64,
    run: impl Fn(u64) -> R + Sync,
    mut each: impl FnMut(R),
) {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = std::sync::atomic::AtomicU64::new(first);
    let end = first + count;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let tx = tx.clone();
            let (next, run) = (&next, &run);
            scope.spawn(move || {
                loop {
                    let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if seed >= end || tx.send(run(seed)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for result in rx {
            each(result);
        }
    });
}

/// `--mode sim-history`: for each fault class, `--seeds` runs of a client workload under that
/// class's faults (node_core::sim::faults), each history checked; failing seeds are printed
/// with their replay command and the operations that show the violation, in order.
fn run_sim_history(cli: &Cli) -> anyhow::Result<()> {
    let classes: Vec<FaultClass> = if cli.faults.is_empty() {
        FaultClass::ALL.to_vec()
    } else {
        cli.faults.clone()
    };
    let table = Table::new(&[
        ("faults", 18),
        ("seeds", 0),
        ("ops", 0),
        ("acked writes", 0),
        ("failed ops", 0),
        ("anomalies", 0),
        ("of them holders down", 0),
        ("acked lost", 0),
        ("not linearizable keys", 0),
        ("undecided", 0),
        ("wall s", 0),
    ]);
    println!(
        "seeds {}..{} per class, promise: a get never returns a write older than one \
         acknowledged before it started, gets never go backwards",
        cli.seed,
        cli.seed + cli.seeds
    );
    println!("{}", table.header());
    let mut rows = Vec::with_capacity(classes.len());
    for class in classes {
        let started = Instant::now();
        let mut progress = ProgressDisplay::new(class.name());
        let mut row = HistoryRow::new(class);
        let mut failing = Vec::new();
        for_each_seed(
            cli.seed,
            cli.seeds,
            |seed| faults::run(class, seed),
            |result| {
                row.add(&result);
                progress.update(Progress {
                    phase: "seeds",
                    done: row.seeds,
                    total: cli.seeds,
                });
                if !result.report.holds() {
                    failing.push(result);
                }
            },
        );
        progress.finish();
        failing.sort_by_key(|r| r.seed);
        row.failing_seeds.sort_unstable();
        row.failing_seeds.truncate(20);
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{}",
            table.row(&[
                row.faults.clone(),
                row.seeds.to_string(),
                row.ops.to_string(),
                row.acked_writes.to_string(),
                row.failed_ops.to_string(),
                row.anomalies.to_string(),
                row.anomalies_all_holders_down.to_string(),
                row.acked_writes_lost.to_string(),
                row.not_linearizable_keys.to_string(),
                row.undecided_keys.to_string(),
                format!("{seconds:.1}"),
            ])
        );
        for result in failing
            .iter()
            .take(if cli.verbose { usize::MAX } else { 3 })
        {
            eprintln!(
                "  {} seed {}: {} anomalies, {} acknowledged writes lost\n  replay: {}",
                class.name(),
                result.seed,
                result.report.anomalies.len(),
                result.report.acked_writes_lost,
                result.replay_command()
            );
            let shown = if cli.verbose { usize::MAX } else { 3 };
            for anomaly in result.report.anomalies.iter().take(shown) {
                eprint!("  {anomaly}");
            }
        }
        rows.push(TimedHistoryRow { row, seconds });
    }
    finish(cli, &rows)
}

fn parse_attack(name: &str) -> Result<Attack, String> {
    Attack::parse(name).ok_or_else(|| {
        let known: Vec<&str> = Attack::ALL.iter().map(|a| a.name()).collect();
        format!("unknown attack {name:?} (known: {})", known.join(", "))
    })
}

/// One `sim-hostile` row and the wall time it took.
#[derive(Debug, Serialize)]
struct TimedHostileRow {
    #[serde(flatten)]
    row: HostileRow,
    seconds: f64,
}

/// `--mode sim-hostile`: for each attack class, `--seeds` runs of an 8-peer ring with one
/// hostile peer (node_core::sim::hostile) while clients use the honest peers; each history is
/// checked like sim-history's, and failing seeds are printed with their replay command.
fn run_sim_hostile(cli: &Cli) -> anyhow::Result<()> {
    let attacks: Vec<Attack> = if cli.attacks.is_empty() {
        Attack::ALL.to_vec()
    } else {
        cli.attacks.clone()
    };
    let table = Table::new(&[
        ("attack", 17),
        ("seeds", 0),
        ("acked writes", 0),
        ("acked lost", 0),
        ("anomalies", 0),
        ("failed ops", 0),
        ("attack frames", 0),
        ("honest frames/seed", 0),
        ("frames/put", 0),
        ("bytes/put", 0),
        ("put ms", 0),
        ("get ms", 0),
        ("max keys", 0),
        ("clocks pushed", 0),
        ("refused", 0),
        ("wall s", 0),
    ]);
    println!(
        "seeds {}..{} per attack, 8 peers, one hostile; promise: no acknowledged write lost, \
         no forged value read, honest operations succeed",
        cli.seed,
        cli.seed + cli.seeds
    );
    println!("{}", table.header());
    let mut rows = Vec::with_capacity(attacks.len());
    for attack in attacks {
        let started = Instant::now();
        let mut progress = ProgressDisplay::new(attack.name());
        let mut row = HostileRow::new(attack);
        let mut failing = Vec::new();
        for_each_seed(
            cli.seed,
            cli.seeds,
            |seed| hostile::run(attack, seed),
            |result| {
                row.add(&result);
                progress.update(Progress {
                    phase: "seeds",
                    done: row.seeds,
                    total: cli.seeds,
                });
                if !result.report.holds() || result.clocks_pushed > 0 {
                    failing.push(result);
                }
            },
        );
        progress.finish();
        failing.sort_by_key(|r| r.seed);
        row.failing_seeds.sort_unstable();
        row.failing_seeds.truncate(20);
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{}",
            table.row(&[
                row.attack.clone(),
                row.seeds.to_string(),
                row.acked_writes.to_string(),
                row.acked_writes_lost.to_string(),
                row.anomalies.to_string(),
                row.failed_ops.to_string(),
                row.attack_frames.to_string(),
                format!("{:.0}", row.honest_frames_per_seed),
                format!("{:.1}", row.frames_per_acked_write),
                format!("{:.0}", row.bytes_per_acked_write),
                format!("{:.1}", row.mean_put_latency_ms),
                format!("{:.1}", row.mean_get_latency_ms),
                row.max_store_keys.to_string(),
                row.clocks_pushed.to_string(),
                row.refused.to_string(),
                format!("{seconds:.1}"),
            ])
        );
        for result in failing
            .iter()
            .take(if cli.verbose { usize::MAX } else { 3 })
        {
            eprintln!(
                "  {} seed {} (hostile {}): {} anomalies, {} acknowledged writes lost, {} \
                 clocks pushed\n  replay: {}",
                attack.name(),
                result.seed,
                result.hostile,
                result.report.anomalies.len(),
                result.report.acked_writes_lost,
                result.clocks_pushed,
                result.replay_command()
            );
            let shown = if cli.verbose { usize::MAX } else { 3 };
            for anomaly in result.report.anomalies.iter().take(shown) {
                eprint!("  {anomaly}");
            }
        }
        rows.push(TimedHostileRow { row, seconds });
    }
    finish(cli, &rows)
}

/// `--mode sim-churn`: for each churn rate, a fresh ring under joins, crashes and a workload.
fn run_sim_churn(cli: &Cli) -> anyhow::Result<()> {
    let nodes = cli.nodes[0];
    let table = Table::new(&[
        ("rate/s", 6),
        ("events", 0),
        ("lookups", 0),
        ("lookup failures", 0),
        ("mean hops", 0),
        ("acked writes", 0),
        ("acked lost", 0),
        ("whole set failed", 0),
        ("in one window", 0),
        ("lost unexplained", 0),
        ("lost: longest k-crash span s", 0),
        ("connections/peer-hour", 0),
        ("connections/survivor-hour", 0),
        ("wall seconds", 0),
    ]);
    println!(
        "N = {nodes}, {} s of churn per rate, seed {}{}",
        cli.seconds,
        cli.seed,
        if cli.tabs { ", every peer a tab" } else { "" }
    );
    println!("{}", table.header());
    let mut rows = Vec::new();
    for &rate in &cli.rates {
        let mut progress = ProgressDisplay::new(format!("rate={rate}"));
        let started = Instant::now();
        let row = sim_churn(nodes, rate, cli.seconds, cli.seed, cli.tabs, &mut |step| {
            progress.update(step)
        });
        progress.finish();
        println!(
            "{}",
            table.row(&[
                format!("{rate}"),
                row.events.to_string(),
                row.lookups.to_string(),
                format!("{:.2}%", 100.0 * row.lookup_failure_rate),
                format!("{:.2}", row.mean_hops),
                row.acked_writes.to_string(),
                row.acked_writes_lost.to_string(),
                row.acked_whole_set_failed.to_string(),
                row.acked_whole_set_failed_in_window.to_string(),
                row.acked_lost_unexplained.to_string(),
                format!("{:.1}", row.lost_longest_span_ms as f64 / 1000.0),
                format!("{:.0}", row.connections_per_peer_hour),
                format!("{:.0}", row.survivor_connections_per_hour),
                format!("{:.1}", started.elapsed().as_secs_f64()),
            ])
        );
        rows.push(row);
    }
    if let Some(path) = &cli.plot {
        let series = vec![
            Series {
                name: "lookup failures (%)".into(),
                points: rows
                    .iter()
                    .map(|r| (r.rate, 100.0 * r.lookup_failure_rate))
                    .collect(),
                dashed: false,
            },
            Series {
                name: "acknowledged writes lost".into(),
                points: rows
                    .iter()
                    .map(|r| (r.rate, r.acked_writes_lost as f64))
                    .collect(),
                dashed: false,
            },
            Series {
                name: "mean hops".into(),
                points: rows.iter().map(|r| (r.rate, r.mean_hops)).collect(),
                dashed: true,
            },
        ];
        prepare_output(path)?;
        plot::lines(
            path,
            &format!("Churn on N = {nodes} (seed {})", cli.seed),
            ("joins + failures per second", "value"),
            &series,
            false,
        )?;
        println!("plot: {}", path.display());
    }
    finish(cli, &rows)
}

/// `--mode scale`: a live ring of `--num-nodes` chord-node processes and the original's
/// workload through one entry peer, next to the original Python implementation's numbers.
fn run_scale(cli: &Cli) -> anyhow::Result<()> {
    println!(
        "starting {} chord-node processes (WebRTC on 127.0.0.1) ...",
        cli.num_nodes
    );
    let ring = if cli.verify_ids {
        lab::live::LiveRing::start_verified(cli.num_nodes, cli.base_port)
    } else {
        lab::live::LiveRing::start(cli.num_nodes, cli.base_port, cli.seed)
    }
    .map_err(anyhow::Error::msg)?;
    let rows = lab::live::scale_workload(&ring, cli.num_ops, cli.clients);
    let table = Table::new(&[
        ("phase", 17),
        ("clients", 0),
        ("ops", 5),
        ("ops/s", 8),
        ("p50 ms", 7),
        ("p99 ms", 7),
        ("correct reads", 0),
        ("wrong", 0),
        ("failed", 0),
    ]);
    println!("{}", table.header());
    for r in &rows {
        println!(
            "{}",
            table.row(&[
                r.phase.clone(),
                r.clients.to_string(),
                r.ops.to_string(),
                format!("{:.0}", r.ops_per_sec),
                format!("{:.2}", r.p50_ms),
                format!("{:.2}", r.p99_ms),
                r.correct_reads.to_string(),
                r.wrong_reads.to_string(),
                r.failed.to_string(),
            ])
        );
    }
    let p50 = |phase: &str| rows.iter().find(|r| r.phase == phase).map(|r| r.p50_ms);
    if let (Some(floor), Some(put), Some(get)) = (
        p50("floor-keepalive"),
        p50("put-keepalive"),
        p50("get-keepalive"),
    ) {
        println!(
            "over one keep-alive connection: the HTTP floor (GET /ring, no ring work) p50 {floor:.3} ms; \
             put p50 = {:.2} x the floor, get p50 = {:.2} x the floor",
            put / floor.max(1e-9),
            get / floor.max(1e-9)
        );
    }
    println!(
        "baseline (original Python, same workload on this machine, from the issue): puts 35-49 ops/s \
         (median 16-29 ms, p99 40-78 ms), gets 37-53 ops/s (median 15-28 ms), 8 clients 65-111 ops/s"
    );
    let hops: Vec<f64> = ring
        .ports()
        .iter()
        .filter_map(|(port, _)| lab::live::json(*port, "GET", "/metrics", None))
        .filter_map(|(_, v)| v["chord"]["avg_hops"].as_f64())
        .collect();
    if !hops.is_empty() {
        println!(
            "mean lookup hops over peers: {:.2}",
            hops.iter().sum::<f64>() / hops.len() as f64
        );
    }
    if let Some(path) = &cli.plot {
        let series = vec![
            Series {
                name: "p50 ms".into(),
                points: rows
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (i as f64, r.p50_ms))
                    .collect(),
                dashed: false,
            },
            Series {
                name: "p99 ms".into(),
                points: rows
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (i as f64, r.p99_ms))
                    .collect(),
                dashed: false,
            },
        ];
        prepare_output(path)?;
        plot::lines(
            path,
            &format!(
                "Latency by phase (0 put, 1 get, 2 {} clients), {} native peers",
                cli.clients, cli.num_nodes
            ),
            ("phase", "milliseconds"),
            &series,
            false,
        )?;
        println!("plot: {}", path.display());
    }
    drop(ring);
    finish(cli, &rows)
}

/// `--mode scale|churn --original` (or `--churn-interval`): the original project's harness.
fn run_original(cli: &Cli) -> anyhow::Result<()> {
    use lab::original::{OriginalConfig, OriginalRing, Stop, run};
    use std::time::Duration;

    let churn = matches!(cli.mode, Mode::Churn);
    anyhow::ensure!(
        !churn || cli.churn_interval.is_some(),
        "the original's churn needs --churn-interval SECONDS"
    );
    let seconds = |s: f64| {
        anyhow::ensure!(s.is_finite() && s > 0.0, "seconds must be positive");
        Ok(Duration::from_secs_f64(s))
    };
    let config = OriginalConfig {
        num_nodes: cli.num_nodes,
        base_port: cli.base_port,
        num_ops: cli.num_ops,
        churn_interval: if churn {
            cli.churn_interval.map(seconds).transpose()?
        } else {
            None
        },
        duration: cli.duration.map(seconds).transpose()?,
        stop: match cli.stop {
            StopArg::Term => Stop::Term,
            StopArg::Kill => Stop::Kill,
        },
        data_root: (!cli.in_memory).then(|| cli.data_root.join("original")),
        seed: cli.seed,
        log_prefix: "original".into(),
    };
    println!(
        "starting {} chord-node processes: --host 127.0.0.1 --port {}.. [--bootstrap 127.0.0.1:{}] \
         ({}; logs in {})",
        cli.num_nodes,
        cli.base_port,
        cli.base_port,
        config.data_root.as_ref().map_or_else(
            || "--in-memory".to_string(),
            |d| format!("--data-dir under {}", d.display())
        ),
        std::env::temp_dir().join("e2e-original-*.log").display()
    );
    let mut ring = OriginalRing::start(&config).map_err(anyhow::Error::msg)?;
    let row = run(&mut ring, &config);
    drop(ring);
    println!(
        "{} ops in {:.1} s, {} restarts: {} of {} puts acknowledged; {} gets returned the value \
         written, {} another value or none, {} no answer",
        row.ops,
        row.seconds,
        row.restarts,
        row.puts_acked,
        row.ops,
        row.gets_correct,
        row.gets_wrong,
        row.gets_failed
    );
    println!(
        "at the end: ring {}; {} of {} acknowledged values read back ({} lost, {} unanswered)",
        if row.converged {
            "right (every peer joined, every successor right)"
        } else {
            "NOT right"
        },
        row.read_back,
        row.puts_acked,
        row.lost.len(),
        row.unanswered
    );
    for line in row.not_right.iter().chain(row.lost.iter().take(10)) {
        println!("  {line}");
    }
    if !row.lost.is_empty() {
        let stops: Vec<String> = row
            .restart_log
            .iter()
            .map(|(at, port)| format!("{port} at {at:.1} s"))
            .collect();
        println!("  peers stopped: {}", stops.join(", "));
    }
    finish(cli, &[row])
}

/// `--mode churn`: a live ring where peers crash and come back empty during the workload.
fn run_churn(cli: &Cli) -> anyhow::Result<()> {
    println!(
        "starting {} chord-node processes (WebRTC on 127.0.0.1) ...",
        cli.num_nodes
    );
    anyhow::ensure!(cli.num_nodes >= 2, "churn needs at least 2 peers");
    let mut ring = lab::live::LiveRing::start(cli.num_nodes, cli.base_port, cli.seed)
        .map_err(anyhow::Error::msg)?;
    let row = lab::live::churn_workload(
        &mut ring,
        cli.restarts,
        std::time::Duration::from_millis(cli.period_ms),
    );
    let table = Table::new(&[
        ("nodes", 5),
        ("restarts", 0),
        ("puts", 5),
        ("acked", 5),
        ("gets", 5),
        ("gets failed", 0),
        ("p50 ms", 7),
        ("p99 ms", 7),
        ("acked lost", 0),
        ("ops", 5),
        ("anomalies", 0),
        ("not linearizable keys", 0),
        ("acked lost (history)", 0),
    ]);
    println!("{}", table.header());
    println!(
        "{}",
        table.row(&[
            row.nodes.to_string(),
            row.restarts.to_string(),
            row.puts.to_string(),
            row.puts_acked.to_string(),
            row.gets.to_string(),
            row.gets_failed.to_string(),
            format!("{:.2}", row.p50_ms),
            format!("{:.2}", row.p99_ms),
            row.acked_writes_lost.to_string(),
            row.ops.to_string(),
            row.anomalies.to_string(),
            row.not_linearizable_keys.to_string(),
            row.acked_writes_lost_history.to_string(),
        ])
    );
    let report = &row.report;
    println!(
        "history of {} clients on {} keys and the read-back from every peer: {} ({} acked \
         writes, {} undecided keys)",
        lab::live::CHURN_CLIENTS,
        lab::live::CHURN_KEYS,
        if report.holds() {
            "the promise held"
        } else {
            "the promise was broken"
        },
        report.acked_writes,
        report.undecided_keys
    );
    for anomaly in report.anomalies.iter().take(10) {
        print!("  {anomaly}");
    }
    if report.anomalies.len() > 10 {
        println!("  ... {} more anomalies", report.anomalies.len() - 10);
    }
    if !report.not_linearizable.is_empty() {
        let keys: Vec<&str> = report
            .not_linearizable
            .iter()
            .map(|a| a.key.as_str())
            .collect();
        println!("  not linearizable: {}", keys.join(", "));
        for anomaly in report.not_linearizable.iter().take(10) {
            let witness = lab::live::linearizability_witness(&anomaly.ops);
            println!(
                "  {:?}: {} of its {} operations have no linearization:",
                anomaly.key,
                witness.len(),
                anomaly.ops.len()
            );
            for op in &witness {
                println!("      {op}");
            }
        }
        if cli.verbose {
            for anomaly in &report.not_linearizable {
                print!("  {anomaly}");
            }
        }
    }
    drop(ring);
    if let Some(path) = &cli.plot {
        prepare_output(path)?;
        plot::churn_timeline(
            path,
            &format!(
                "Live churn: {} native peers, {} kills one per {} ms, slices of {} ms",
                cli.num_nodes, cli.restarts, cli.period_ms, row.slice_ms
            ),
            &row,
        )?;
        println!("plot: {}", path.display());
    }
    finish(cli, &[row])
}

/// One `durable` row: a put phase under one durability mode, or the restart measurement.
#[derive(Debug, Clone, Serialize)]
struct DurableRow {
    /// `put-sequential`, `put-concurrent` or `restart`.
    phase: String,
    /// `strict`, `relaxed` or `in-memory`.
    durability: String,
    clients: usize,
    ops: usize,
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    failed: usize,
    /// Restart: entries in the data directory before the start.
    #[serde(skip_serializing_if = "Option::is_none")]
    keys_on_disk: Option<usize>,
    /// Restart: size of `store.redb`.
    #[serde(skip_serializing_if = "Option::is_none")]
    file_bytes: Option<u64>,
    /// Restart: process start until `POST /get` of a stored key answered found.
    #[serde(skip_serializing_if = "Option::is_none")]
    serving_ms: Option<f64>,
    /// Restart: opening, reading and restoring the store, as the peer reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    restore_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restored_entries: Option<u64>,
}

/// `--mode durable`: (a) puts through one peer of a 3-peer live ring, sequential and with
/// `--clients` at once, for each durability mode; (b) one peer started on a data directory
/// holding `--restart-keys` entries (written with `storage.rs` directly): time to serving.
fn run_durable(cli: &Cli) -> anyhow::Result<()> {
    use lab::live::{LiveRing, Proc, json, put_workload};
    use node_native::storage::{Durability, FILE_NAME, Storage};
    use std::time::Duration;

    let root = &cli.data_root;
    let modes = [
        ("strict", Some(Durability::Strict)),
        ("relaxed", Some(Durability::Relaxed)),
        ("in-memory", None),
    ];
    let table = Table::new(&[
        ("phase", 15),
        ("durability", 10),
        ("clients", 0),
        ("ops", 5),
        ("ops/s", 8),
        ("p50 ms", 7),
        ("p99 ms", 7),
        ("failed", 0),
    ]);
    println!(
        "3 chord-node processes per mode (WebRTC on 127.0.0.1), data under {}",
        root.display()
    );
    println!("{}", table.header());
    let mut rows = Vec::new();
    for (n, (name, durability)) in modes.into_iter().enumerate() {
        let dir = root.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        let extra = |port: u16| -> Vec<String> {
            match durability {
                Some(mode) => vec![
                    "--data-dir".into(),
                    dir.join(port.to_string()).display().to_string(),
                    "--durability".into(),
                    mode.name().into(),
                ],
                None => Vec::new(),
            }
        };
        let base = cli.base_port + 10 * n as u16;
        let ring = LiveRing::start_with(3, base, cli.seed, &extra).map_err(anyhow::Error::msg)?;
        for phase in put_workload(&ring, cli.num_ops, cli.clients) {
            println!(
                "{}",
                table.row(&[
                    phase.phase.clone(),
                    name.to_string(),
                    phase.clients.to_string(),
                    phase.ops.to_string(),
                    format!("{:.1}", phase.ops_per_sec),
                    format!("{:.2}", phase.p50_ms),
                    format!("{:.2}", phase.p99_ms),
                    phase.failed.to_string(),
                ])
            );
            rows.push(DurableRow {
                phase: phase.phase,
                durability: name.into(),
                clients: phase.clients,
                ops: phase.ops,
                ops_per_sec: phase.ops_per_sec,
                p50_ms: phase.p50_ms,
                p99_ms: phase.p99_ms,
                failed: phase.failed,
                keys_on_disk: None,
                file_bytes: None,
                serving_ms: None,
                restore_ms: None,
                restored_entries: None,
            });
        }
        drop(ring);
    }

    // (b) Restart to serving with many keys on disk.
    let id = 0x4000_0000u32;
    let port = cli.base_port + 40;
    let dir = root.join("restart");
    let _ = std::fs::remove_dir_all(&dir);
    let keys = cli.restart_keys;
    let fill_started = Instant::now();
    {
        let mut storage = Storage::open(&dir, node_core::Id(id), Durability::Strict)?;
        let entries: Vec<(String, node_core::store::Entry)> = (0..keys)
            .map(|k| {
                let value = format!("value-{k:08}-0123456789abcdef");
                (
                    format!("restart-{k}"),
                    node_core::store::Entry::live(value, k as u64 + 1, "bench"),
                )
            })
            .collect();
        for batch in entries.chunks(10_000) {
            storage.persist(batch.iter().map(|(k, e)| (k.as_str(), e)), keys as u64)?;
        }
    }
    let file_bytes = std::fs::metadata(dir.join(FILE_NAME))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "wrote {keys} entries ({:.1} MiB) into {} in {:.2} s",
        file_bytes as f64 / (1024.0 * 1024.0),
        dir.join(FILE_NAME).display(),
        fill_started.elapsed().as_secs_f64()
    );
    let probe = format!("restart-{}", keys / 2);
    let body = format!(r#"{{"key":"{probe}"}}"#);
    let dir_arg = dir.display().to_string();
    let started = Instant::now();
    let peer = Proc::peer_with(
        port,
        id,
        None,
        &["--data-dir", &dir_arg, "--udp-addr", "127.0.0.1:0"],
    );
    let mut serving = None;
    while started.elapsed() < Duration::from_secs(120) {
        if json(port, "POST", "/get", Some(&body))
            .is_some_and(|(s, v)| s == 200 && v["found"] == true)
        {
            serving = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let serving = serving.context("the restarted peer did not serve the key within 120 s")?;
    let storage = json(port, "GET", "/metrics", None)
        .map(|(_, v)| v["driver"]["storage"].clone())
        .unwrap_or_default();
    drop(peer);
    let row = DurableRow {
        phase: "restart".into(),
        durability: "strict".into(),
        clients: 1,
        ops: 1,
        ops_per_sec: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        failed: 0,
        keys_on_disk: Some(keys),
        file_bytes: Some(file_bytes),
        serving_ms: Some(serving.as_secs_f64() * 1_000.0),
        restore_ms: storage["restore_ms"].as_f64(),
        restored_entries: storage["restored_entries"].as_u64(),
    };
    println!(
        "restart with {keys} keys on disk: serving after {:.0} ms (process start to a found get); \
         the peer reports restoring {} entries in {:.0} ms",
        serving.as_secs_f64() * 1_000.0,
        row.restored_entries.unwrap_or(0),
        row.restore_ms.unwrap_or(f64::NAN)
    );
    rows.push(row);

    if let Some(path) = &cli.plot {
        let series: Vec<Series> = ["put-sequential", "put-concurrent"]
            .iter()
            .map(|phase| Series {
                name: format!("{phase} ops/s"),
                points: rows
                    .iter()
                    .filter(|r| r.phase == *phase)
                    .enumerate()
                    .map(|(i, r)| (i as f64, r.ops_per_sec.max(1e-3)))
                    .collect(),
                dashed: phase.ends_with("concurrent"),
            })
            .collect();
        prepare_output(path)?;
        plot::lines(
            path,
            "Put throughput by durability (0 strict, 1 relaxed, 2 in memory), 3 native peers",
            ("durability", "puts per second"),
            &series,
            false,
        )?;
        println!("plot: {}", path.display());
    }
    finish(cli, &rows)
}

/// Makes sure the directory of an output file exists, so `--plot target/x.svg` works on a fresh
/// checkout.
fn prepare_output(path: &Path) -> anyhow::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display())),
        _ => Ok(()),
    }
}

/// Prints the `--json` report, which must stay the last line of stdout.
fn finish<R: Serialize>(cli: &Cli, rows: &[R]) -> anyhow::Result<()> {
    if cli.json {
        println!("{}", json_line(&cli.mode.name(), rows)?);
    }
    Ok(())
}

fn parse_positive(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(value) => Ok(value),
        Err(error) => Err(error.to_string()),
    }
}

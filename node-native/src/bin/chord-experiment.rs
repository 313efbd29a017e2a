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
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use node_core::sim::experiments::{HopsRow, sim_hops};
use node_native::plot;
use node_native::progress::ProgressDisplay;
use node_native::report::{Table, json_line};
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
    /// Seed of the simulation; the same seed replays the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// End stdout with one JSON line: {"mode": ..., "rows": [...]}.
    #[arg(long)]
    json: bool,
    /// Also draw the results as an SVG chart at this path.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Lookup path length (mean, p1, p99) against ring size, in the simulator.
    SimHops,
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
    match cli.mode {
        Mode::SimHops => run_sim_hops(&cli),
    }
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
        ("wall seconds", 0),
    ]);
    println!("{}", table.header());
    let mut rows = Vec::with_capacity(cli.nodes.len());
    for &nodes in &cli.nodes {
        let mut progress = ProgressDisplay::new(format!("N={nodes}"));
        let started = Instant::now();
        let hops = sim_hops(nodes, cli.lookups, cli.seed, &mut |step| {
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

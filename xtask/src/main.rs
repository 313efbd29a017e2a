//! `cargo xtask <task>`: the project's automation, written in Rust so it runs wherever cargo does
//! (the matklad xtask convention; `.cargo/config.toml` defines the alias).
//!
//! Tasks only sequence `cargo` invocations with `std::process::Command`; anything worth testing
//! belongs in the workspace crates, not here.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context as _, bail};

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  test    fmt check, clippy, all tests, node-core wasm32 build and clippy (what CI runs)
  demo    build the native peer and run scripts/demo.sh: 4 chord-node processes on loopback
          (put, get, crash, restart, flood, metrics), as the original project's demo did
  sim     run the sim-hops experiment at moderate size and plot it to target/sim-hops.svg
  bench   run the full sim-hops experiment (up to 16384 nodes) and plot it
";

fn main() -> ExitCode {
    match run(env::args().nth(1).as_deref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line with the whole cause chain; a backtrace of xtask itself helps nobody.
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Option<&str>) -> anyhow::Result<()> {
    match task {
        Some("test") => test(),
        Some("demo") => demo(),
        Some("sim") => sim_hops("sim", "64,256,1024,4096"),
        Some("bench") => sim_hops("bench", "64,256,1024,4096,16384"),
        Some("help" | "-h" | "--help") => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => {
            eprint!("{USAGE}");
            bail!("unknown task {other:?}")
        }
        None => {
            eprint!("{USAGE}");
            bail!("no task given")
        }
    }
}

/// Everything CI checks, in order, stopping at the first failure.
fn test() -> anyhow::Result<()> {
    let started = Instant::now();
    run_step("format", &["fmt", "--all", "--", "--check"])?;
    run_step(
        "clippy",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    run_step("tests", &["test", "--workspace", "--all-features"])?;
    // The browser peer depends on node-core compiling to plain wasm32: no wasm-bindgen, no
    // OS services. Building it for that target (and linting it there) keeps that true.
    run_step(
        "node-core wasm32 build",
        &["build", "-p", "node-core", "--target", WASM_TARGET],
    )?;
    step(
        "node-core wasm32 has no wasm-bindgen",
        node_core_wasm_is_bindgen_free,
    )?;
    run_step(
        "node-core wasm32 clippy",
        &[
            "clippy",
            "-p",
            "node-core",
            "--target",
            WASM_TARGET,
            "--",
            "-D",
            "warnings",
        ],
    )?;
    println!("xtask test: all passed in {}", seconds(started));
    Ok(())
}

const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// `cargo tree` of node-core for wasm32 must not mention wasm-bindgen (or web-sys/js-sys, which
/// drag it in).
fn node_core_wasm_is_bindgen_free() -> anyhow::Result<()> {
    let output = cargo()
        .args([
            "tree",
            "-p",
            "node-core",
            "--target",
            WASM_TARGET,
            "--edges",
            "normal,build",
            "--prefix",
            "none",
        ])
        .output()
        .context("cannot run cargo tree")?;
    if !output.status.success() {
        bail!(
            "cargo tree failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let tree = String::from_utf8_lossy(&output.stdout);
    let offenders: Vec<&str> = tree
        .lines()
        .filter(|line| {
            ["wasm-bindgen", "web-sys", "js-sys"]
                .iter()
                .any(|name| line.starts_with(name))
        })
        .collect();
    if !offenders.is_empty() {
        bail!("node-core depends on {} for wasm32", offenders.join(", "));
    }
    Ok(())
}

/// The sim-hops experiment in release mode, plotted to `target/sim-hops.svg`.
/// The live demo: release build of the peer, then the demo script (WebRTC on 127.0.0.1 only).
fn demo() -> anyhow::Result<()> {
    run_step(
        "demo: build chord-node (release)",
        &[
            "build",
            "--release",
            "-p",
            "node-native",
            "--bin",
            "chord-node",
        ],
    )?;
    step("demo: scripts/demo.sh", || {
        let status = Command::new("bash")
            .arg(project_root().join("scripts/demo.sh"))
            .current_dir(project_root())
            .status()
            .context("cannot run bash scripts/demo.sh")?;
        if !status.success() {
            bail!("scripts/demo.sh failed ({status})");
        }
        Ok(())
    })
}

fn sim_hops(task: &str, nodes: &str) -> anyhow::Result<()> {
    let plot = "target/sim-hops.svg";
    run_step(
        &format!("{task}: sim-hops experiment"),
        &[
            "run",
            "--release",
            "-p",
            "node-native",
            "--bin",
            "chord-experiment",
            "--",
            "--mode",
            "sim-hops",
            "--nodes",
            nodes,
            "--lookups",
            "10000",
            "--seed",
            "1",
            "--plot",
            plot,
        ],
    )?;
    println!("plot written to {}", project_root().join(plot).display());
    Ok(())
}

/// Runs `cargo <args>` in the project root as a named, timed step.
fn run_step(name: &str, args: &[&str]) -> anyhow::Result<()> {
    step(name, || {
        let status = cargo()
            .args(args)
            .status()
            .with_context(|| format!("cannot run cargo {}", args.join(" ")))?;
        if !status.success() {
            bail!("`cargo {}` failed ({status})", args.join(" "));
        }
        Ok(())
    })
}

/// Prints the step's name, runs it, and prints how long it took; errors name the step.
fn step(name: &str, body: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    println!("==> {name}");
    let started = Instant::now();
    body().with_context(|| format!("step {name:?} failed after {}", seconds(started)))?;
    println!("<== {name}: ok in {}", seconds(started));
    Ok(())
}

fn cargo() -> Command {
    // The cargo that runs xtask, so `cargo +nightly xtask` stays on nightly.
    let mut command = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(project_root());
    command
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn seconds(started: Instant) -> String {
    format!("{:.1}s", started.elapsed().as_secs_f64())
}

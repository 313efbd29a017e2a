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

use crate::setup::Purpose;

mod deps;
mod setup;
mod types;

const USAGE: &str = "\
usage: cargo xtask <task>

Both `test` and `demo` first check their prerequisites and install what is missing (see
xtask/src/setup.rs): the wasm32 target, rustfmt, clippy, wasm-bindgen-cli at the Cargo.lock
version, curl; for `test` also gcc, iproute2, util-linux, chromium and chromium-driver through
apt (as root or with password-less sudo; otherwise the command to run is printed), and nodejs
and npm for the type-check of the package's TypeScript declarations.

tasks:
  setup        only check and install what `test` needs
  test         fmt check, clippy, the wasm package and its type-check, all native tests, node-core/node-wasm wasm32
               checks, the browser tests in headless Chromium (what CI runs)
  demo         the main job: build the page's wasm package and the peers, start the introducer
               serving the page on http://127.0.0.1:8080 plus 2 native peers, and wait (Ctrl-C
               stops); open the URL in several tabs. `cargo xtask demo --port 9000` moves it.
  demo-script  build the native peer and run scripts/demo.sh: 4 chord-node processes on loopback
               (put, get, crash, restart, flood, metrics), as the original project's demo did
  wasm         build the browser peer's npm package (chord-kv: wasm, JS glue, TypeScript
               declarations, package.json) into web/pkg (release; wasm-opt when npm's binaryen
               is installed) and print its size
  types        `wasm`, then type-check node-wasm/types-test/example.ts against web/pkg with
               npm's tsc --strict, and check that `any` in place of each documented type fails
  wasm-test    the node-wasm tests in headless Chromium and Firefox, inside a private network namespace
  browser-bench  8 headless tabs + 1 native peer (private netns): time to ready, time to a
               converged ring, tab-to-tab get latency percentiles, watch latency (put
               acknowledgement -> callback in the other tabs); `[TABS] [GETS] --firefox N`
               adds N headless Firefox tabs (geckodriver) to the ring and prints time to
               ready per kind and get latency per (writer kind, reader kind) pair
  soak    the long history sweep: `cargo xtask soak --seeds 10000` runs that many seeds of every
          fault class through the history checker (chord-experiment --mode sim-history), with a
          progress bar; failing seeds print their replay command
  deps    node-core's module graph and its import loops (fails while any loop remains)
  sim     run the sim-hops experiment at moderate size and plot it to target/sim-hops.svg
  bench   run the full sim-hops experiment (up to 16384 nodes) and plot it
";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    match run(args.first().map(String::as_str), &args[args.len().min(1)..]) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line with the whole cause chain; a backtrace of xtask itself helps nobody.
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Option<&str>, rest: &[String]) -> anyhow::Result<()> {
    let purpose = match task {
        Some("setup" | "test" | "wasm-test" | "browser-bench") => Some(Purpose::Test),
        Some("demo" | "demo-script" | "wasm") => Some(Purpose::Demo),
        Some("types") => Some(Purpose::Types),
        _ => None,
    };
    if let Some(purpose) = purpose {
        step("setup: prerequisites", || setup::ensure(purpose))?;
    }
    match task {
        Some("setup") => Ok(()),
        Some("test") => test(),
        Some("demo") => demo(rest),
        Some("demo-script") => demo_script(),
        Some("wasm") => wasm_package().map(drop),
        Some("types") => wasm_package().and_then(|_| types::check()),
        Some("wasm-test") => wasm_test(),
        Some("browser-bench") => browser_bench(rest),
        Some("soak") => soak(rest),
        Some("deps") => deps::deps(&project_root().join("node-core/src")),
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
    // One module graph without loops inside node-core (docs/ARCHITECTURE.md, section 1).
    step("node-core import loops", || {
        deps::deps(&project_root().join("node-core/src"))
    })?;
    // The browser end-to-end tests (tests/tests/browser_ring.rs) load the page's wasm package.
    wasm_package()?;
    // The package's TypeScript declarations, precise enough that `any` in place of any
    // documented type fails (xtask/src/types.rs).
    types::check()?;
    run_step("tests", &["test", "--workspace", "--all-features"])?;
    // The browser peer depends on node-core compiling to plain wasm32: no wasm-bindgen, no
    // OS services. Checking and linting it for that target keeps that true (the wasm package
    // above built it there in full, as node-wasm's dependency).
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
    run_step(
        "node-wasm wasm32 clippy",
        &[
            "clippy",
            "-p",
            "node-wasm",
            "--target",
            WASM_TARGET,
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    wasm_test()?;
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

/// The original project's demo on real processes: release build of the peer, then the script
/// (WebRTC on 127.0.0.1 only).
fn demo_script() -> anyhow::Result<()> {
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
            .arg(cargo_target_dir().join("release"))
            .current_dir(project_root())
            .status()
            .context("cannot run bash scripts/demo.sh")?;
        if !status.success() {
            bail!("scripts/demo.sh failed ({status})");
        }
        Ok(())
    })
}

/// The main job: the page and its wasm package served by the introducer, two native peers in
/// the ring, running until Ctrl-C.
fn demo(args: &[String]) -> anyhow::Result<()> {
    let port: u16 = match args {
        [] => 8080,
        [flag, port] if flag == "--port" => port.parse().context("--port takes a number")?,
        _ => bail!("usage: cargo xtask demo [--port N]"),
    };
    wasm_package()?;
    build_release_peers("demo")?;
    let root = project_root();
    let status = Command::new("bash")
        .arg(root.join("scripts/serve-demo.sh"))
        .arg(port.to_string())
        .current_dir(&root)
        .status()
        .context("cannot run bash scripts/serve-demo.sh")?;
    if !status.success() {
        bail!("scripts/serve-demo.sh failed ({status})");
    }
    Ok(())
}

/// Builds `web/pkg`, the npm package `chord-kv` (the browser peer: release wasm,
/// wasm-bindgen's `--target web` glue and `node_wasm.d.ts`, which holds
/// node-wasm/js/types.d.ts, package.json from node-wasm/js/, and wasm-opt when a good one is
/// installed); returns the path of the `.wasm` it wrote.
fn wasm_package() -> anyhow::Result<PathBuf> {
    run_step(
        "wasm: build node-wasm (wasm-release profile, wasm32)",
        &[
            "build",
            "--profile",
            "wasm-release",
            "-p",
            "node-wasm",
            "--lib",
            "--target",
            WASM_TARGET,
        ],
    )?;
    let root = project_root();
    let out = root.join("web/pkg");
    let wasm = out.join("node_wasm_bg.wasm");
    step("wasm: wasm-bindgen --target web", || {
        let input = cargo_target_dir().join("wasm32-unknown-unknown/wasm-release/node_wasm.wasm");
        let status = Command::new("wasm-bindgen")
            // Names and producer sections are a third of the module and nobody reads them.
            .args([
                "--target",
                "web",
                "--remove-name-section",
                "--remove-producers-section",
                "--out-dir",
            ])
            .arg(&out)
            .arg(&input)
            .status()
            .context(
                "cannot run wasm-bindgen; install it at the version of the wasm-bindgen crate in \
                 Cargo.lock: cargo install wasm-bindgen-cli --version <that version> \
                 (`cargo xtask setup` does this)",
            )?;
        if !status.success() {
            bail!("wasm-bindgen failed ({status}); is wasm-bindgen-cli the Cargo.lock version?");
        }
        Ok(())
    })?;
    step("wasm: package.json (npm package chord-kv)", || {
        write_package_json(&root, &out)
    })?;
    match wasm_opt() {
        // wasm-opt shrinks the raw module but, on this crate, often makes it compress worse:
        // keep its output only when the gzipped size (what a browser downloads) goes down.
        Some(tool) => step("wasm: wasm-opt -Oz (kept only if it gzips smaller)", || {
            let optimized = wasm.with_extension("opt.wasm");
            let status = Command::new(&tool)
                .args([
                    "-Oz",
                    "--strip-debug",
                    "--strip-producers",
                    "--enable-bulk-memory",
                    "--enable-nontrapping-float-to-int",
                ])
                .arg(&wasm)
                .arg("-o")
                .arg(&optimized)
                .status()
                .with_context(|| format!("cannot run {}", tool.display()))?;
            if !status.success() {
                bail!("{} failed ({status})", tool.display());
            }
            let (before, after) = (gzipped_len(&wasm), gzipped_len(&optimized));
            println!(
                "wasm: gzipped {:.1} KiB before wasm-opt, {:.1} KiB after",
                before.unwrap_or(0) as f64 / 1024.0,
                after.unwrap_or(0) as f64 / 1024.0
            );
            if after < before {
                std::fs::rename(&optimized, &wasm).context("keeping wasm-opt's output")?;
            } else {
                std::fs::remove_file(&optimized).context("dropping wasm-opt's output")?;
            }
            Ok(())
        })?,
        None => println!(
            "wasm: no usable wasm-opt (npm's binaryen >= 116; Debian's 108 breaks the module), \
             skipped; install with: npm install --prefix target/tools binaryen"
        ),
    }
    let raw = std::fs::metadata(&wasm)
        .with_context(|| format!("{} was not written", wasm.display()))?
        .len();
    let gzipped = gzipped_len(&wasm);
    match gzipped {
        Some(gz) => println!(
            "wasm: {} is {:.1} KiB, {:.1} KiB gzipped",
            wasm.display(),
            raw as f64 / 1024.0,
            gz as f64 / 1024.0
        ),
        None => println!("wasm: {} is {:.1} KiB", wasm.display(), raw as f64 / 1024.0),
    }
    Ok(wasm)
}

/// `web/pkg/package.json`: node-wasm/js/package.json with the node-wasm crate's version, so
/// `web/pkg` is an npm package (`exports`, `types` = the generated `node_wasm.d.ts`, which
/// holds node-wasm/js/types.d.ts).
fn write_package_json(root: &Path, out: &Path) -> anyhow::Result<()> {
    let manifest = std::fs::read_to_string(root.join("node-wasm/Cargo.toml"))
        .context("reading node-wasm/Cargo.toml")?;
    let version = manifest
        .lines()
        .find_map(|line| line.strip_prefix("version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .context("node-wasm/Cargo.toml has no `version = \"...\"` line")?;
    let template = std::fs::read_to_string(root.join("node-wasm/js/package.json"))
        .context("reading node-wasm/js/package.json")?;
    let mut replaced = false;
    let json: Vec<String> = template
        .lines()
        .map(|line| {
            let indent = &line[..line.len() - line.trim_start().len()];
            if !replaced && line.trim_start().starts_with("\"version\":") {
                replaced = true;
                format!("{indent}\"version\": \"{version}\",")
            } else {
                line.to_string()
            }
        })
        .collect();
    if !replaced {
        bail!("node-wasm/js/package.json has no \"version\" line");
    }
    std::fs::write(out.join("package.json"), json.join("\n") + "\n")
        .context("writing web/pkg/package.json")
}

/// Size of `path` after `gzip -9`, if gzip runs.
fn gzipped_len(path: &Path) -> Option<usize> {
    Command::new("gzip")
        .args(["-9", "-c"])
        .arg(path)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| o.stdout.len())
}

/// npm's wasm-opt (binaryen >= 116) from `target/tools` or PATH; Debian's binaryen 108 writes
/// modules that fail to load (`WebAssembly.Table.set(): Argument 1 is invalid for table`).
fn wasm_opt() -> Option<PathBuf> {
    let local = project_root().join("target/tools/node_modules/.bin/wasm-opt");
    let candidates = [local, PathBuf::from("wasm-opt")];
    candidates.into_iter().find(|tool| {
        let Ok(output) = Command::new(tool).arg("--version").output() else {
            return false;
        };
        // "wasm-opt version 132 (version_132)"
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .nth(2)
            .and_then(|v| v.parse::<u32>().ok())
            .is_some_and(|v| v >= 116)
    })
}

/// Release builds of the `signaling` and `chord-node` binaries.
fn build_release_peers(task: &str) -> anyhow::Result<()> {
    run_step(
        &format!("{task}: build signaling and chord-node (release)"),
        &[
            "build",
            "--release",
            "-p",
            "signaling",
            "-p",
            "node-native",
            "--bin",
            "signaling",
            "--bin",
            "chord-node",
        ],
    )
}

/// The browser-ring benchmark (tests/examples/browser_bench.rs) inside a private netns.
fn browser_bench(args: &[String]) -> anyhow::Result<()> {
    wasm_package()?;
    build_release_peers("browser-bench")?;
    step("browser-bench (private netns)", || {
        let status = Command::new(project_root().join("scripts/in-netns.sh"))
            .arg(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args([
                "run",
                "--release",
                "-p",
                "e2e",
                "--example",
                "browser_bench",
                "--",
            ])
            .args(args)
            .current_dir(project_root())
            .status()
            .context("cannot run scripts/in-netns.sh (needs unshare and ip)")?;
        if !status.success() {
            bail!("browser_bench failed ({status})");
        }
        Ok(())
    })
}

/// The browsers the node-wasm tests run in: (name, the runner's driver variable, the driver,
/// a WebDriver capabilities file for the runner, relative to the project root).
const TEST_BROWSERS: [(&str, &str, &str, Option<&str>); 2] = [
    ("Chromium", "CHROMEDRIVER", "chromedriver", None),
    // Firefox hides host candidates behind mDNS names and limits them to the default route's
    // address unless told otherwise; inside the private namespace there is no mDNS responder.
    (
        "Firefox",
        "GECKODRIVER",
        "geckodriver",
        Some("node-wasm/webdriver-firefox.json"),
    ),
];

/// node-wasm's wasm-bindgen tests in headless Chromium and headless Firefox, inside a private
/// network namespace.
fn wasm_test() -> anyhow::Result<()> {
    for (browser, variable, driver, capabilities) in TEST_BROWSERS {
        step(
            &format!("node-wasm tests in headless {browser} (private netns)"),
            || {
                let mut command = Command::new(project_root().join("scripts/in-netns.sh"));
                command
                    .arg(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                    .args(["test", "-p", "node-wasm", "--target", WASM_TARGET])
                    .env(
                        "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER",
                        "wasm-bindgen-test-runner",
                    )
                    // The runner's default (20 s for the whole file) is shorter than the suite.
                    .env("WASM_BINDGEN_TEST_TIMEOUT", "300")
                    .current_dir(project_root());
                // The runner takes the first driver it finds on PATH unless one is named.
                for (_, other, _, _) in TEST_BROWSERS {
                    command.env_remove(other);
                }
                command.env(variable, driver);
                match capabilities {
                    Some(file) => {
                        command.env(
                            "WASM_BINDGEN_TEST_WEBDRIVER_JSON",
                            project_root().join(file),
                        );
                    }
                    None => {
                        command.env_remove("WASM_BINDGEN_TEST_WEBDRIVER_JSON");
                    }
                }
                let status = command
                    .status()
                    .context("cannot run scripts/in-netns.sh (needs unshare and ip)")?;
                if !status.success() {
                    bail!(
                        "node-wasm browser tests failed in {browser} ({status}); they need the \
                         browser, {driver} and wasm-bindgen-test-runner on PATH (`cargo xtask \
                         setup` installs them)"
                    );
                }
                Ok(())
            },
        )?;
    }
    Ok(())
}

/// `cargo run` of the release `chord-experiment` binary; its own flags follow.
const CHORD_EXPERIMENT: [&str; 7] = [
    "run",
    "--release",
    "-p",
    "lab",
    "--bin",
    "chord-experiment",
    "--",
];

/// `cargo xtask soak [--seeds N] [--faults LIST]`: the sim-history sweep over many seeds.
fn soak(args: &[String]) -> anyhow::Result<()> {
    let mut seeds = "10000".to_string();
    let mut faults = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--seeds" => seeds = rest.next().context("--seeds needs a number")?.clone(),
            "--faults" => faults = Some(rest.next().context("--faults needs a list")?.clone()),
            other => bail!("soak: unknown argument {other:?} (--seeds N, --faults LIST)"),
        }
    }
    let mut cargo_args = CHORD_EXPERIMENT.to_vec();
    cargo_args.extend(["--mode", "sim-history", "--seeds", &seeds, "--json"]);
    if let Some(faults) = &faults {
        cargo_args.extend(["--faults", faults]);
    }
    run_step(
        &format!("soak: sim-history, {seeds} seeds per fault class"),
        &cargo_args,
    )
}

/// The sim-hops experiment in release mode, plotted to `target/sim-hops.svg`.
fn sim_hops(task: &str, nodes: &str) -> anyhow::Result<()> {
    let plot = "target/sim-hops.svg";
    run_step(
        &format!("{task}: sim-hops experiment"),
        &[
            &CHORD_EXPERIMENT[..],
            &[
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
        ]
        .concat(),
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

/// Where cargo writes its builds: `CARGO_TARGET_DIR` when set (relative to the project root, as
/// cargo reads it here), else `target/`.
fn cargo_target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR").filter(|dir| !dir.is_empty()) {
        Some(dir) => project_root().join(dir),
        None => project_root().join("target"),
    }
}

fn project_root() -> PathBuf {
    // `cargo run` sets CARGO_MANIFEST_DIR for the run too: prefer it, so an xtask binary built
    // from another checkout that shares this target dir still works on the checkout it was
    // run from (the compile-time path would point at the other one).
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn seconds(started: Instant) -> String {
    format!("{:.1}s", started.elapsed().as_secs_f64())
}

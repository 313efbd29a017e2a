//! Prerequisites: what `cargo xtask demo` and `cargo xtask test` need beyond a Rust toolchain,
//! checked before anything is built and installed when missing, so the README's two commands
//! are the whole set-up on a fresh machine.
//!
//! - Through rustup (never needs root): the wasm32 target, rustfmt, clippy.
//! - Through cargo: `wasm-bindgen-cli` at exactly the `wasm-bindgen` crate's version in
//!   Cargo.lock (the generated glue and the crate must match). Not `--locked`: the CLI's own
//!   lock file pins crates that no longer build with the current toolchain.
//! - Through cargo, only for the tests: `geckodriver` at [`GECKODRIVER_VERSION`] (`--locked`),
//!   the WebDriver server of the Firefox tests (never a downloaded binary).
//! - Through apt (Debian), only for the tests: a C linker, `ip` and `unshare` for the private
//!   network namespaces, Chromium, chromedriver and Firefox ESR for the browser tests; and
//!   `curl` for the demo scripts. As root apt runs directly, otherwise through `sudo -n` when that needs no
//!   password; else the one command to run is printed and the task fails.
//! - Through apt, for `test` and `types`: Node.js and npm (Debian's `nodejs`, `npm`), which
//!   run npm's TypeScript (pinned by node-wasm/types-test/package-lock.json) on the package's
//!   declarations.
//! - Optionally, when npm exists: npm's binaryen (wasm-opt) in `target/tools`. Never Debian's
//!   binaryen 108, whose output does not load.
//!
//! Nothing is downloaded at run time by the tests themselves: this is the only place that
//! installs anything.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use crate::{WASM_TARGET, cargo, project_root, step};

/// Which task the prerequisites are for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// Build the wasm package and the peers, run them on loopback.
    Demo,
    /// Everything CI runs, including the namespaced WebRTC and headless-browser tests.
    Test,
    /// The wasm package and the type-check of its TypeScript declarations.
    Types,
}

/// A Debian package and the command that shows it is installed.
struct SystemTool {
    command: &'static str,
    packages: &'static [&'static str],
    why: &'static str,
}

const DEMO_TOOLS: &[SystemTool] = &[SystemTool {
    command: "curl",
    packages: &["curl"],
    why: "the demo scripts poll the peers over HTTP",
}];

const TEST_TOOLS: &[SystemTool] = &[
    SystemTool {
        command: "cc",
        packages: &["gcc", "libc6-dev"],
        why: "rustc links native binaries through the system C toolchain",
    },
    SystemTool {
        command: "ip",
        packages: &["iproute2"],
        why: "WebRTC tests run in a private network namespace with a veth pair",
    },
    SystemTool {
        command: "unshare",
        packages: &["util-linux"],
        why: "WebRTC tests run in a private network namespace",
    },
    SystemTool {
        command: "chromium",
        packages: &["chromium"],
        why: "the browser tests run headless Chromium",
    },
    SystemTool {
        command: "chromedriver",
        packages: &["chromium-driver"],
        why: "the browser tests drive Chromium through WebDriver",
    },
    SystemTool {
        command: "firefox-esr",
        packages: &["firefox-esr"],
        why: "the node-wasm tests run in headless Firefox too",
    },
];

/// The geckodriver the Firefox tests use (crates.io; supports Firefox ESR 115 and later).
const GECKODRIVER_VERSION: &str = "0.37.1";

/// What the type-check of the package's declarations runs on (`test` and `types`).
const TYPES_TOOLS: &[SystemTool] = &[
    SystemTool {
        command: "node",
        packages: &["nodejs"],
        why: "the package's TypeScript declarations are type-checked with npm's tsc",
    },
    SystemTool {
        command: "npm",
        packages: &["npm"],
        why: "npm ci installs the pinned TypeScript for the type-check",
    },
];

/// Checks everything `purpose` needs and installs what is missing.
pub(crate) fn ensure(purpose: Purpose) -> anyhow::Result<()> {
    let mut tools: Vec<&SystemTool> = DEMO_TOOLS.iter().collect();
    if purpose == Purpose::Test {
        tools.extend(TEST_TOOLS);
    }
    if matches!(purpose, Purpose::Test | Purpose::Types) {
        tools.extend(TYPES_TOOLS);
    }
    // System packages first: building wasm-bindgen-cli needs the C linker.
    system_packages(&tools)?;
    rust_toolchain_parts()?;
    wasm_bindgen_cli()?;
    if purpose == Purpose::Test {
        geckodriver()?;
    }
    binaryen();
    Ok(())
}

/// The wasm32 target, rustfmt and clippy of the toolchain that runs xtask.
fn rust_toolchain_parts() -> anyhow::Result<()> {
    if !found("rustup") {
        // A distribution's Rust: nothing to install through, so only say what is missing.
        let sysroot = capture("rustc", &["--print", "sysroot"]).unwrap_or_default();
        let has_target = Path::new(sysroot.trim())
            .join("lib/rustlib")
            .join(WASM_TARGET)
            .is_dir();
        if !has_target {
            bail!(
                "the {WASM_TARGET} target is missing and rustup is not installed; install Rust \
                 with rustup (https://rustup.rs), then run this again"
            );
        }
        return Ok(());
    }
    let installed_targets = capture("rustup", &["target", "list", "--installed"])?;
    if !installed_targets
        .lines()
        .any(|line| line.trim() == WASM_TARGET)
    {
        step(&format!("setup: rustup target add {WASM_TARGET}"), || {
            run(Command::new("rustup").args(["target", "add", WASM_TARGET]))
        })?;
    }
    let installed_components = capture("rustup", &["component", "list", "--installed"])?;
    let missing: Vec<&str> = ["rustfmt", "clippy"]
        .into_iter()
        .filter(|component| {
            !installed_components
                .lines()
                .any(|line| line.split('-').next() == Some(*component))
        })
        .collect();
    if !missing.is_empty() {
        step(
            &format!("setup: rustup component add {}", missing.join(" ")),
            || {
                run(Command::new("rustup")
                    .args(["component", "add"])
                    .args(&missing))
            },
        )?;
    }
    Ok(())
}

/// `geckodriver` at [`GECKODRIVER_VERSION`], built by cargo.
fn geckodriver() -> anyhow::Result<()> {
    let installed = capture("geckodriver", &["--version"]).unwrap_or_default();
    // "geckodriver 0.37.1 ( ... )"
    if installed.split_whitespace().nth(1) == Some(GECKODRIVER_VERSION) {
        return Ok(());
    }
    step(
        &format!("setup: cargo install geckodriver --version {GECKODRIVER_VERSION} --locked"),
        || {
            run(cargo().args([
                "install",
                "--force",
                "--locked",
                "geckodriver",
                "--version",
                GECKODRIVER_VERSION,
            ]))
        },
    )
}

/// `wasm-bindgen` (and `wasm-bindgen-test-runner`) at the Cargo.lock version of the crate.
fn wasm_bindgen_cli() -> anyhow::Result<()> {
    let lock = std::fs::read_to_string(project_root().join("Cargo.lock"))
        .context("cannot read Cargo.lock")?;
    let wanted = locked_version(&lock, "wasm-bindgen").context("no wasm-bindgen in Cargo.lock")?;
    // "wasm-bindgen 0.2.130"
    let installed = capture("wasm-bindgen", &["--version"]).ok();
    let installed = installed
        .as_deref()
        .and_then(|text| text.split_whitespace().nth(1));
    if installed == Some(wanted.as_str()) {
        return Ok(());
    }
    if let Some(other) = installed {
        println!("setup: wasm-bindgen {other} is installed but Cargo.lock has {wanted}");
    }
    step(
        &format!("setup: cargo install wasm-bindgen-cli --version {wanted}"),
        || {
            run(cargo().args([
                "install",
                "--force",
                "wasm-bindgen-cli",
                "--version",
                &wanted,
            ]))
        },
    )?;
    // cargo installs into ~/.cargo/bin, which a fresh shell may not have on PATH yet.
    let now = capture("wasm-bindgen", &["--version"]).unwrap_or_default();
    if now.split_whitespace().nth(1) != Some(wanted.as_str()) {
        bail!(
            "wasm-bindgen-cli {wanted} was installed but `wasm-bindgen --version` says {:?}: put \
             cargo's bin directory (~/.cargo/bin) first on PATH",
            now.trim()
        );
    }
    Ok(())
}

/// The version of package `name` in a Cargo.lock (the first one, if several).
fn locked_version(lock: &str, name: &str) -> Option<String> {
    let wanted = format!("name = \"{name}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == wanted {
            let version = lines.next()?.trim().strip_prefix("version = ")?;
            return Some(version.trim_matches('"').to_string());
        }
    }
    None
}

/// Installs the Debian packages behind any missing command, or says how to.
fn system_packages(tools: &[&SystemTool]) -> anyhow::Result<()> {
    let missing: Vec<&&SystemTool> = tools.iter().filter(|tool| !found(tool.command)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    for tool in &missing {
        println!(
            "setup: `{}` not found ({}): needs {}",
            tool.command,
            tool.why,
            tool.packages.join(" ")
        );
    }
    let packages: Vec<&str> = missing
        .iter()
        .flat_map(|tool| tool.packages.iter().copied())
        .collect();
    if !found("apt-get") {
        bail!(
            "install these with your system's package manager, then run this again: {}",
            packages.join(" ")
        );
    }
    let is_root = capture("id", &["-u"]).is_ok_and(|uid| uid.trim() == "0");
    let sudo = !is_root
        && Command::new("sudo")
            .args(["-n", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
    if !is_root && !sudo {
        bail!(
            "missing system packages; run this, then run this task again:\n  sudo sh -c \
             'apt-get update && apt-get install -y {}'",
            packages.join(" ")
        );
    }
    let apt = |args: &[&str]| {
        let mut command = if sudo {
            let mut command = Command::new("sudo");
            command.args(["-n", "apt-get"]);
            command
        } else {
            Command::new("apt-get")
        };
        command.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        command
    };
    step("setup: apt-get update", || {
        run(apt(&["update", "-qq"]).stdout(Stdio::null()))
    })?;
    step(
        &format!("setup: apt-get install {}", packages.join(" ")),
        || {
            run(apt(&["install", "-y", "-qq"])
                .args(&packages)
                .stdout(Stdio::null()))
        },
    )?;
    let still_missing: Vec<&str> = missing
        .iter()
        .map(|tool| tool.command)
        .filter(|command| !found(command))
        .collect();
    if !still_missing.is_empty() {
        bail!(
            "installed {} but still cannot find {}",
            packages.join(" "),
            still_missing.join(", ")
        );
    }
    Ok(())
}

/// npm's binaryen for wasm-opt, when npm is there; the wasm package builds without it.
fn binaryen() {
    let root = project_root();
    if !found("npm")
        || root
            .join("target/tools/node_modules/.bin/wasm-opt")
            .exists()
    {
        return;
    }
    let installed = step("setup: npm install binaryen@132 (wasm-opt)", || {
        run(Command::new("npm")
            .args([
                "install",
                "--silent",
                "--prefix",
                "target/tools",
                "binaryen@132",
            ])
            .current_dir(&root)
            .stdout(Stdio::null()))
    });
    if let Err(error) = installed {
        println!("setup: binaryen not installed, wasm-opt will be skipped: {error:#}");
    }
}

/// Whether `command` is on PATH.
fn found(command: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            let path = dir.join(command);
            path.is_file()
                && std::fs::metadata(&path).is_ok_and(|meta| {
                    std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0
                })
        })
    })
}

/// Standard output of a command that must succeed.
fn capture(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !output.status.success() {
        bail!("`{program} {}` failed ({})", args.join(" "), output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot run {:?}", command.get_program()))?;
    if !status.success() {
        bail!("{:?} failed ({status})", command.get_program());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::locked_version;

    #[test]
    fn reads_the_locked_version_of_a_package() {
        let lock = "[[package]]\nname = \"wasm-bindgen\"\nversion = \"0.2.130\"\n\n\
                    [[package]]\nname = \"wasm-bindgen-backend\"\nversion = \"0.2.130\"\n";
        assert_eq!(
            locked_version(lock, "wasm-bindgen").as_deref(),
            Some("0.2.130")
        );
        assert_eq!(locked_version(lock, "wasm-bindgen-macro"), None);
    }
}

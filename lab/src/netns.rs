//! Run a test inside a private network namespace, so WebRTC traffic never leaves the machine.
//!
//! webrtc-rs (and browsers) send ICE checks and mDNS on every interface they find. A test that
//! opens real links therefore re-runs itself inside a fresh user + network namespace
//! (`unshare -rn`, unprivileged) holding only `lo` and a veth pair: `v0` carries 10.77.0.1/24
//! and a default route, `v1` is its idle peer end, so there is a non-loopback interface to
//! gather candidates on (Chromium gathers none on a loopback-only host) and no way out.
//! `cargo test` stays one command: the outer test process re-execs the test binary with
//! `--exact <test name>` inside the namespace and fails if that run fails. The inner run's output
//! goes through the outer test's capture (printed on failure, or with `--nocapture`).
//!
//! Inside, bind servers (HTTP, signalling) to 127.0.0.1 and let WebRTC use [`VETH_ADDR`]
//! (`RtcConfig::udp_addrs = ["10.77.0.1:0"]`, or `0.0.0.0:0`, which finds only `v0`).
//!
//! Requires `unshare` (util-linux) and `ip` (iproute2) on `PATH`; without them the test fails
//! with a message saying so, rather than skipping: CI installs both.
//!
//! ```no_run
//! #[test]
//! fn link_opens() {
//!     if !lab::netns::enter_private_netns("link_opens") {
//!         return; // the run inside the namespace passed
//!     }
//!     // ... the test body, now inside the namespace ...
//! }
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

/// Set (to the path of a proof file) in the re-executed test process.
pub const MARKER_ENV: &str = "CHORD_KV_PRIVATE_NETNS";

/// The address of `v0` inside the namespace.
pub const VETH_ADDR: &str = "10.77.0.1";

/// Makes the namespace's interfaces, then runs the command given as arguments.
const SETUP_SCRIPT: &str = "set -e
ip link set lo up
ip link add v0 type veth peer name v1
ip addr add 10.77.0.1/24 dev v0
ip link set v0 up
ip link set v1 up
ip route add default dev v0
exec \"$@\"";

/// Whether this process runs inside the namespace that [`enter_private_netns`] made.
pub fn in_private_netns() -> bool {
    std::env::var_os(MARKER_ENV).is_some()
}

/// Makes a namespace with `lo` only (no other interface, no route out).
const LOOPBACK_ONLY_SCRIPT: &str = "set -e
ip link set lo up
exec \"$@\"";

/// Like [`enter_private_netns`], but the namespace holds only `lo`: for tests of what a
/// loopback-only host does (native peers must still link, over loopback candidates).
pub fn enter_loopback_only_netns(test_name: &str) -> bool {
    enter_netns(test_name, LOOPBACK_ONLY_SCRIPT)
}

/// Puts the test named `test_name` (its path as `cargo test -- --exact` wants it, e.g.
/// `link_opens` for a top-level function of an integration test file) in a private network
/// namespace.
///
/// Returns `true` inside the namespace: run the test body. Returns `false` in the outer process
/// after the inner run passed: return at once. Panics if the inner run failed, if it ran no
/// test (a wrong `test_name`), or if `unshare`/`ip` are missing.
pub fn enter_private_netns(test_name: &str) -> bool {
    enter_netns(test_name, SETUP_SCRIPT)
}

fn enter_netns(test_name: &str, setup_script: &str) -> bool {
    if let Some(proof) = std::env::var_os(MARKER_ENV) {
        // Tell the outer process that the body really ran here (see below).
        if let Err(e) = std::fs::write(&proof, test_name) {
            panic!("netns: cannot write proof file {proof:?}: {e}");
        }
        return true;
    }
    for tool in ["unshare", "ip"] {
        if find_on_path(tool).is_none() {
            panic!(
                "netns: `{tool}` not found on PATH; WebRTC tests run inside a private network \
                 namespace and need `unshare` (util-linux) and `ip` (iproute2) \
                 (apt-get install util-linux iproute2)"
            );
        }
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => panic!("netns: cannot find the current test binary: {e}"),
    };
    // A name with the test's own name in it, so parallel tests do not collide.
    let proof = std::env::temp_dir().join(format!(
        "chord-kv-netns-{}-{}",
        std::process::id(),
        test_name.replace("::", "-")
    ));
    let _ = std::fs::remove_file(&proof);
    let output = Command::new("unshare")
        .args(["-rn", "sh", "-c", setup_script, "sh"])
        .arg(&exe)
        // `--include-ignored`: an `#[ignore]`d test run on purpose (`-- --ignored`) runs inside
        // too; the outer process only gets here for a test the harness chose to run.
        .args([
            "--exact",
            test_name,
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(MARKER_ENV, &proof)
        .output();
    let output = match output {
        Ok(output) => output,
        Err(e) => panic!("netns: cannot run `unshare`: {e}"),
    };
    // Through the outer harness's capture: shown on failure or with `--nocapture`. The inner
    // harness's own summary lines are left out so that only the outer run's are counted.
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        if !(line.starts_with("running ") || line.starts_with("test result:") || line.is_empty()) {
            println!("{line}");
        }
    }
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    let status = output.status;
    let ran = proof_exists_and_remove(&proof);
    assert!(
        status.success(),
        "netns: `{test_name}` failed inside the private network namespace ({status}); \
         if it failed before the test started, check that `unshare -rn` works here \
         (user namespaces enabled) and that the veth link type is available"
    );
    assert!(
        ran,
        "netns: the re-executed binary ran no test named `{test_name}` (pass the exact name)"
    );
    false
}

fn proof_exists_and_remove(proof: &Path) -> bool {
    let exists = proof.exists();
    let _ = std::fs::remove_file(proof);
    exists
}

fn find_on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

//! End-to-end test helpers: the live-ring toolkit of `lab` (real processes, HTTP on
//! loopback), re-exported so the tests read `e2e::Proc`, `e2e::json`, ..., and
//! [`browser`], a small Chrome DevTools Protocol client for driving headless Chromium tabs.

pub mod browser;
pub mod page;
pub mod webdriver;

pub use lab::live::*;

use std::path::PathBuf;
use std::time::Duration;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Starts the introducer on `port` serving the page from `web/` (whose wasm package must be
/// built: `cargo xtask wasm`) and waits until it answers.
pub fn serve_page(port: u16) -> Proc {
    let web = repo_root().join("web");
    assert!(
        web.join("pkg/node_wasm.js").exists(),
        "{} is missing: build the page's wasm package first (`cargo xtask wasm`)",
        web.join("pkg").display()
    );
    let web_dir = web.to_string_lossy().to_string();
    let signaling = Proc::signaling_with(port, &["--static-dir", &web_dir]);
    assert!(
        wait_until(Duration::from_secs(10), || http(
            port, "GET", "/healthz", None
        )
        .is_some()),
        "the introducer on port {port} did not answer"
    );
    signaling
}

/// A ring id as the peers print it: 8 lowercase hex digits.
pub fn hex(id: u32) -> String {
    format!("{id:08x}")
}

/// Every id of `ids`, from `start` around the ring in order (what a ring walk from `start`
/// should find).
pub fn ring_order(ids: &[u32], start: u32) -> Vec<String> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    let at = sorted
        .iter()
        .position(|i| *i == start)
        .expect("start is one of the ids");
    sorted.rotate_left(at);
    sorted.into_iter().map(hex).collect()
}

/// The native peer on `port` (ring id `id`) is joined and its successor is the true one among
/// `ids` (a ring of one, `ids == [id]`, only needs to be joined).
pub fn joined_with_successor(port: u16, id: u32, ids: &[u32]) -> bool {
    let Some((_, v)) = json(port, "GET", "/ring", None) else {
        return false;
    };
    if ids == [id] {
        return v["joined"] == true;
    }
    let order = ring_order(ids, id);
    v["joined"] == true && v["successors"][0].as_str() == order.get(1).map(String::as_str)
}

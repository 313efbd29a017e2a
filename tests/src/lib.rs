//! End-to-end test helpers: the live-ring toolkit of `node-native` (real processes, HTTP on
//! loopback), re-exported so the tests read `e2e::Proc`, `e2e::json`, ..., and
//! [`browser`], a small Chrome DevTools Protocol client for driving headless Chromium tabs.

pub mod browser;

pub use node_native::live::*;

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

//! End-to-end test helpers: the live-ring toolkit of `node-native` (real processes, HTTP on
//! loopback), re-exported so the tests read `e2e::Proc`, `e2e::json`, ..., and
//! [`browser`], a small Chrome DevTools Protocol client for driving headless Chromium tabs.

pub mod browser;

pub use node_native::live::*;

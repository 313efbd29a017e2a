//! End-to-end test helpers: the live-ring toolkit of `node-native` (real processes, HTTP on
//! loopback), re-exported so the tests read `e2e::Proc`, `e2e::json`, ...

pub use node_native::live::*;

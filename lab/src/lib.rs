//! lab: chord-kv's research lab, apart from the peer itself.
//!
//! The `chord-experiment` binary runs the simulator's experiments (node-core's `sim` feature) and
//! the live ones against real `chord-node` processes; the modules below are shared with the
//! end-to-end tests (`node-native/tests`, `tests/`).
//!
//! # Layout
//! - [`report`]: aligned text tables and the one-line JSON report every experiment mode prints.
//! - [`progress`]: an `indicatif` bar on stderr fed by the simulator's progress callback; it
//!   stays hidden for short runs and when stderr is not a terminal.
//! - [`plot`]: SVG charts of experiment rows (`plotters`, text left to the SVG viewer).
//! - [`live`]: real `chord-node`/`signaling` processes on loopback (e2e tests, live experiments).
//! - [`netns`]: the private network namespaces every WebRTC test runs in.
//! - [`original`]: the original project's live harness (its flags, churn by SIGTERM or kill -9,
//!   and the promise checked at the end).
//! - [`experiments`]: the simulator's experiments (`sim-hops`, `sim-flood`, `sim-churn`).
//! - [`antientropy`]: the `sim-antientropy` experiment (one Merkle anti-entropy round between
//!   two in-process stores, measured in framed bytes and messages).

pub mod antientropy;
pub mod experiments;
pub mod live;
pub mod netns;
pub mod original;
pub mod plot;
pub mod progress;
pub mod report;

//! node-native: the native chord-kv peer and the `chord-experiment` research harness.
//!
//! Only the harness exists so far; the tokio driver (webrtc-rs data channels, HTTP API,
//! `chord-node`) lands later and will stay as thin as DESIGN.md section 8 asks.
//!
//! # Layout
//! - [`report`]: aligned text tables and the one-line JSON report every experiment mode prints.
//! - [`progress`]: an `indicatif` bar on stderr fed by the simulator's progress callback; it
//!   stays hidden for short runs and when stderr is not a terminal.
//! - [`plot`]: SVG charts of experiment rows (`plotters`, text left to the SVG viewer).
//! - [`antientropy`]: the `sim-antientropy` experiment (one Merkle anti-entropy round between
//!   two in-process stores, measured in framed bytes and messages).

pub mod antientropy;
pub mod plot;
pub mod progress;
pub mod report;

//! node-native: the native chord-kv peer and the `chord-experiment` research harness.
//!
//! The peer is a thin tokio driver around `node-core` (docs/design.md section 8): WebRTC data
//! channels (webrtc-rs), an introducer WebSocket, the HTTP API of the original project, and the
//! signaling routes mounted on the same port so any native peer can introduce newcomers.
//!
//! # Layout
//! - [`report`]: aligned text tables and the one-line JSON report every experiment mode prints.
//! - [`progress`]: an `indicatif` bar on stderr fed by the simulator's progress callback; it
//!   stays hidden for short runs and when stderr is not a terminal.
//! - [`plot`]: SVG charts of experiment rows (`plotters`, text left to the SVG viewer).
//! - [`driver`]: the select loop that owns the `Node` and carries out its outputs.
//! - [`storage`]: the peer's durable store (redb): persists `Stored` events, loads them back at
//!   start; the `--durability` modes and their fsync policy are documented there.
//! - [`known_peers`]: the introducers a durable peer reached, remembered across restarts.
//! - [`live`]: real `chord-node`/`signaling` processes on loopback (e2e tests, live experiments).
//! - [`original`]: the original project's live harness (its flags, churn by SIGTERM or kill -9,
//!   and the promise checked at the end).
//! - [`http`]: the HTTP API (`/put`, `/get`, `/delete`, `/g_start_query`, `/metrics`, `/ring`).
//! - [`antientropy`]: the `sim-antientropy` experiment (one Merkle anti-entropy round between
//!   two in-process stores, measured in framed bytes and messages).

pub mod antientropy;
pub mod driver;
pub mod http;
pub mod known_peers;
pub mod live;
pub mod netns;
pub mod original;
pub mod plot;
pub mod progress;
pub mod report;
pub mod rtc;
pub mod storage;

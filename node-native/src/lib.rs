//! node-native: the native chord-kv peer (`chord-node`).
//!
//! The peer is a thin tokio driver around `node-core` (docs/design.md section 8): WebRTC data
//! channels (webrtc-rs), an introducer WebSocket, the HTTP API of the original project, and the
//! signaling routes mounted on the same port so any native peer can introduce newcomers. The
//! research harness (`chord-experiment`) and the live-process helpers the tests share live in the
//! `lab` crate; this crate builds neither the simulator nor plotting.
//!
//! # Layout
//! - [`driver`]: the select loop that owns the `Node` and carries out its outputs.
//! - [`storage`]: the peer's durable store (redb): persists `Stored` events, loads them back at
//!   start; the `--durability` modes and their fsync policy are documented there.
//! - [`known_peers`]: the introducers a durable peer reached, remembered across restarts.
//! - [`http`]: the HTTP API (`/put`, `/get`, `/delete`, `/g_start_query`, `/metrics`, `/ring`, `/walk`).
//! - [`rtc`]: the WebRTC link manager (webrtc-rs data channels).
//! - [`identity`]: the certificate a `--verify-ids` peer presents on every link, and its id.

pub mod driver;
pub mod http;
pub mod identity;
pub mod known_peers;
pub mod rtc;
pub mod storage;

/// What a native peer says it is in ring walks (`node_core::Config::agent`): `native 0.1.0`.
pub fn agent() -> String {
    format!("native {}", env!("CARGO_PKG_VERSION"))
}

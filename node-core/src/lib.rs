//! chord-kv core: the sans-IO protocol engine shared by the native and the browser peer.
//!
//! The driver owns sockets, timers and the clock; this crate owns every protocol decision. Feed
//! it [`Input`]s with the current time in milliseconds, then drain [`Node::poll_output`] until it
//! returns [`Output::Timeout`] (the str0m / quinn-proto shape). Same seed + same inputs = same
//! outputs, which is what lets the simulator (module `sim`, feature `sim`) replay any run.
//!
//! # Layout
//! - [`id`]: 32-bit SHA-1 ring ids and wrap-around interval math.
//! - [`rng`]: the seeded PRNG (the only randomness).
//! - [`wire`]: frame codec, message kinds (the store's in `wire::kv`), size limits.
//! - [`ring`]: predecessor, successor list, finger table and their update rules.
//! - [`routing`]: next-hop choice over open links.
//! - [`links`]: which data channels to open, keep and close.
//! - [`node`]: the state machine that ties them together (join, stabilize, fix-fingers,
//!   heartbeat, lookups, overlay signaling, leave).
//! - [`metrics`]: counters and histograms.
//! - [`clock`], [`store`], [`merkle`]: Lamport clock, LWW store (its Merkle index in
//!   `store::tree`), Merkle anti-entropy.
//! - [`replication`]: put/get/delete through the key's leader with quorums and read-repair.
//! - [`election`]: per-replica-set Bully elections.
//! - [`persist`]: the persistence contract (`Event::Stored` out, `Node::restore` in).
//! - [`signal_path`]: which way a link's SDP travels (ring or introducer), for every driver.
//! - [`peer`]: the peer session's policy shared by every driver: WebRTC signalling rules
//!   (payload codec, offer/answer/glare/re-offer verdicts).
//! - [`watch`]: live updates: subscriptions held by a key's replica set, in-order events.
//! - [`walk`]: asking any peer for its ring pointers (to draw the whole ring).
//! - [`agent`]: a peer's self-description (`native 0.1.0`, `firefox 128`), bounded display text.
//! - [`flood`]: Gnutella-style flooding, the unstructured-search baseline.
//! - [`value`]: how the APIs' JSON values are kept in the store's string values.
//! - `sim`: deterministic network simulator, client histories and fault schedules (feature
//!   `sim`); the experiments built on it live in the `lab` crate.
#![forbid(unsafe_code)]

pub mod agent;
pub mod api;
pub mod clock;
pub mod election;
pub mod flood;
pub mod guard;
pub mod id;
pub mod links;
pub mod merkle;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod persist;
pub mod proximity;
pub mod replication;
pub mod ring;
pub mod rng;
pub mod routing;
pub mod signal_path;
pub mod store;
mod timers;
pub mod value;
pub mod watch;
pub mod wire;

#[cfg(feature = "sim")]
pub mod sim;

/// Milliseconds on the driver's monotonic clock (browsers: `performance.now()`).
pub type Time = u64;

pub use id::{Id, PeerId};
pub use metrics::Metrics;
pub use node::{Config, Event, Input, Node, OpError, OpId, OpOutcome, Output, RingView};
pub use peer::session::{Peer, PeerOutput};

//! The peer session: policy that both drivers (node-native, node-wasm) and the simulator used to
//! state each on their own, stated once here so that they cannot drift apart.
//!
//! So far: the WebRTC signalling rules of [`signal`] (the `{type, sdp}` payload codec and the
//! offer/answer/glare/re-offer decisions), the link table of [`table`] that applies them, the
//! join plan of [`join`] (candidates in turn, retry pause, patience), the group-commit gate of
//! [`commit`], ids proven by the links' certificates ([`identity`]), and the metrics document with the counters every driver keeps ([`stats`]).
//! docs/ARCHITECTURE.md lists what still lives in the drivers.

pub mod budget;
pub mod commit;
pub mod identity;
pub mod join;
pub mod session;
pub mod signal;
pub mod stats;
pub mod table;

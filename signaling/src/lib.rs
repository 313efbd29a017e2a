//! chord-kv introducer: a WebSocket relay that lets a newcomer reach its first ring peer.
//!
//! A peer connects to `GET /ws`, says `hello` with its ring id, and gets a `welcome` listing a
//! few live peers; it then exchanges WebRTC offers, answers and candidates with one of them as
//! opaque `signal` payloads relayed by the server. Once in the ring, peers negotiate every
//! further link through the ring itself, so the introducer is needed only for joins. It stores
//! nothing but its live sessions (docs/design.md section 7; frame shapes in [`protocol`]).
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use signaling::{SignalingConfig, SignalingState, router};
//! let state = SignalingState::new(SignalingConfig::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, router(state)).await
//! # }
//! ```
//!
//! A native peer mounts the same routes on its own port (`its_router.merge(router(state))`)
//! and registers itself with [`SignalingState::local_session`], so signals addressed to it
//! reach it without a WebSocket.
//!
//! # Layout
//! - [`protocol`]: the JSON frames, peer ids, error codes and the pure frame parser. Always
//!   built; with `default-features = false` it is the whole crate (for wasm clients).
//! - `state` (feature `server`): limits, the registry of live peers and their mailboxes,
//!   counters, the local-session handle.
//! - `session` (feature `server`): the upgrade handler and per-session loop.
//! - `rate` (feature `server`): the per-session token bucket, pure.
//! - [`startup`] (feature `server`): `--host` resolution and the default page directory, shared
//!   by the `signaling` and `chord-node` binaries.

pub mod protocol;
#[cfg(feature = "server")]
mod rate;
#[cfg(feature = "server")]
mod session;
#[cfg(feature = "server")]
pub mod startup;
#[cfg(feature = "server")]
mod state;

pub use protocol::{ClientMessage, ErrorCode, PeerId, ServerMessage};
#[cfg(feature = "server")]
pub use state::{
    LocalReceiver, LocalSender, Signal, SignalingConfig, SignalingError, SignalingState,
    SignalingStats,
};

/// `GET /ws` (the introducer WebSocket) and `GET /healthz` (`{"status":"ok",...}` with the
/// session counts), on `state`. Merge it into a larger router to serve other routes beside it.
#[cfg(feature = "server")]
pub fn router(state: SignalingState) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route("/ws", get(session::upgrade))
        .route("/healthz", get(healthz))
        .with_state(state)
}

#[cfg(feature = "server")]
async fn healthz(
    axum::extract::State(state): axum::extract::State<SignalingState>,
) -> impl axum::response::IntoResponse {
    let stats = state.stats();
    let body = serde_json::json!({
        "status": "ok",
        "sessions_now": stats.sessions_now,
        "peers_now": stats.peers_now,
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

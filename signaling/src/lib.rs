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
//! // With the client's address, for `max_sessions_per_addr`.
//! let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
//! axum::serve(listener, app).await
//! # }
//! ```
//!
//! A native peer mounts the same routes on its own port (`its_router.merge(router(state))`)
//! and registers itself with [`SignalingState::local_session`], so signals addressed to it
//! reach it without a WebSocket.
//!
//! # Layout
//! - [`access`] (feature `server`): the `Host` and `Origin` checks (DNS rebinding, cross-site
//!   pages), shared with node-native's HTTP API.
//! - [`protocol`]: the JSON frames, peer ids, error codes and the pure frame parser. Always
//!   built; with `default-features = false` it is the whole crate (for wasm clients).
//! - `state` (feature `server`): limits, the open sessions (caps, eviction), the registry of
//!   live peers and their mailboxes, counters, the local-session handle.
//! - `session` (feature `server`): the upgrade handler and per-session loop (hello and idle
//!   timeouts, pings).
//! - `rate` (feature `server`): the per-session token bucket, pure.
//! - [`startup`] (feature `server`): `--host` resolution and the default page directory, shared
//!   by the `signaling` and `chord-node` binaries.

#[cfg(feature = "server")]
pub mod access;
pub mod protocol;
#[cfg(feature = "server")]
mod rate;
#[cfg(feature = "server")]
mod session;
#[cfg(feature = "server")]
pub mod startup;
#[cfg(feature = "server")]
mod state;

#[cfg(feature = "server")]
pub use access::AccessPolicy;
pub use protocol::{ClientMessage, ErrorCode, PeerId, ServerMessage};
#[cfg(feature = "server")]
pub use state::{
    HELLO_TIMEOUT, IDLE_TIMEOUT, LocalReceiver, LocalSender, MAX_SESSIONS_PER_ADDR, PING_INTERVAL,
    Signal, SignalingConfig, SignalingError, SignalingState, SignalingStats,
};

/// `GET /ws` (the introducer WebSocket) and `GET /healthz` (`{"status":"ok",...}` with the
/// session counts), on `state`, both behind the `Host`/`Origin` checks of the state's
/// [`SignalingConfig::access`]. Merge it into a larger router to serve other routes beside it;
/// serve it with `into_make_service_with_connect_info::<SocketAddr>()` so that
/// [`SignalingConfig::max_sessions_per_addr`] knows each client's address.
#[cfg(feature = "server")]
pub fn router(state: SignalingState) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route("/ws", get(session::upgrade))
        .route("/healthz", get(healthz))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            check_access,
        ))
        .with_state(state)
}

/// Refuses (403, counted under its code) a request whose `Host` or `Origin` is not allowed.
#[cfg(feature = "server")]
async fn check_access(
    axum::extract::State(state): axum::extract::State<SignalingState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    match state.config().access.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            tracing::debug!(code = %refusal.code(), "request refused: {}", refusal.message());
            state.count_error(refusal.code());
            refusal.into_response()
        }
    }
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

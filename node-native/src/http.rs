//! The HTTP API, compatible with the original project's `run_node.py`:
//! `POST /put {key, value, writer_id?, ts?}` -> `{ok, ts}`; `POST /get {key}` ->
//! `{found: false}` or `{found: true, value, ts, writer_id}`; `POST /delete {key, writer_id?}`;
//! `POST /g_start_query {key, ttl?}` -> `{matches: [{addr, key}], stats: {forwarded}}`;
//! `GET /metrics` (`node`, `uptime_sec` and the original's `kv` / `chord` / `gnutella`
//! sections, plus percentiles, driver, HTTP and introducer counters); `GET /metrics/prometheus`;
//! `GET /ring` (this peer's pointers and `agent`); `GET /walk?limit=64` (the ring walk: each
//! peer's pointers, `agent` and `kind`); `GET /watch?key=K` (Server-Sent Events, one `data:`
//! line `{key, value, ts, writer_id, deleted}` per change of `K` anywhere in the ring,
//! `node_core::watch`).
//!
//! As in the original, `value` is any JSON value and `/get` returns the same value: it is kept
//! in the core's string values with `node_core::value`'s encoding (plain strings unchanged).
//! `writer_id` defaults to this peer's `host:port`; a client's `ts` is observed into the
//! Lamport clock first. Fields the API does not know are ignored, as Flask's `request.json`
//! lookups ignored them. Beside the original's fields, answers carry extra ones (`hops`, ...).
//!
//! Every bad request gets a 4xx with a JSON body `{"error": {"code", "message"}}` and is
//! counted; a request that the ring could not serve in time gets a 503/504 with the same shape.
//!
//! Before any route, a request's `Host` and `Origin` are checked (signaling/src/access.rs: IP
//! literals, `localhost` and `--allow-host` names; no `Origin`, this server's own pages, loopback
//! pages and `--allow-origin` origins): others get a 403 `bad_host` / `bad_origin`, so a web
//! page cannot reach `/put` of a peer on the visitor's machine by DNS rebinding or a cross-site
//! request. With an API token ([`Api::with_api_token`], `--api-token`), the routes that change
//! data or cost the ring work (`/put`, `/delete`, `/g_start_query`, `/watch`) also need
//! `Authorization: Bearer <token>` (401 `unauthorized` otherwise); reads stay open. Refusals are
//! counted in `/metrics` (`http.bad_host`, `http.bad_origin`, `http.unauthorized`, and in
//! `http.bad_requests`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use node_core::node::{OpError, OpOutcome};
use serde::Deserialize;
use serde_json::{Value, json};
use signaling::AccessPolicy;

use crate::driver::{Command, PeerHandle};

/// Shared by the handlers.
#[derive(Debug, Clone)]
pub struct Api {
    peer: PeerHandle,
    /// This peer's `host:port`: the default `writer_id`, `/metrics`' `node`, and the `addr` of
    /// this peer's own flood match.
    name: Arc<str>,
    started: std::time::Instant,
    bad_requests: Arc<AtomicU64>,
    /// The `Host`/`Origin` checks every request passes first.
    access: Arc<AccessPolicy>,
    /// When set, write routes need `Authorization: Bearer <token>`.
    api_token: Option<Arc<str>>,
    refused: Arc<Refused>,
    /// The introducer this peer serves at `/ws`, for its counters in `/metrics`.
    introducer: Option<signaling::SignalingState>,
}

/// Requests refused before any route ran, by reason (also counted in `bad_requests`).
#[derive(Debug, Default)]
struct Refused {
    bad_host: AtomicU64,
    bad_origin: AtomicU64,
    unauthorized: AtomicU64,
}

impl Api {
    /// The API of `peer`, which serves it at `name` (`host:port`), with the default
    /// `Host`/`Origin` policy and no API token.
    pub fn new(peer: PeerHandle, name: impl Into<Arc<str>>) -> Self {
        Self {
            peer,
            name: name.into(),
            started: std::time::Instant::now(),
            bad_requests: Arc::new(AtomicU64::new(0)),
            access: Arc::new(AccessPolicy::default()),
            api_token: None,
            refused: Arc::new(Refused::default()),
            introducer: None,
        }
    }

    /// Reports `introducer`'s counters in `/metrics` (`introducer`: sessions, evictions,
    /// refusals and timeouts by code).
    pub fn with_introducer(mut self, introducer: signaling::SignalingState) -> Self {
        self.introducer = Some(introducer);
        self
    }

    /// Checks `Host` and `Origin` against `policy` instead of the default one.
    pub fn with_access(mut self, policy: AccessPolicy) -> Self {
        self.access = Arc::new(policy);
        self
    }

    /// Requires `Authorization: Bearer <token>` on the write routes (`None`: no token).
    pub fn with_api_token(mut self, token: Option<String>) -> Self {
        self.api_token = token.map(Into::into);
        self
    }
}

/// The API routes (merge them with the signaling routes on one port).
pub fn router(api: Api) -> Router {
    routes(&api)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(api.clone(), check_access))
        .with_state(api)
}

/// The API routes plus the browser page from `static_dir` (`/`, `/pkg/...`): a path that is
/// neither a route nor a file still gets the API's JSON 404.
pub fn router_with_page(api: Api, static_dir: &std::path::Path) -> Router {
    use axum::handler::HandlerWithoutStateExt as _;
    let not_found = {
        let api = api.clone();
        move || not_found(State(api))
    };
    let files =
        tower_http::services::ServeDir::new(static_dir).not_found_service(not_found.into_service());
    routes(&api)
        .fallback_service(files)
        .layer(middleware::from_fn_with_state(api.clone(), check_access))
        .with_state(api)
}

fn routes(api: &Api) -> Router<Api> {
    // What changes data or makes the ring work for it: behind the API token, when one is set.
    let writes = Router::new()
        .route("/put", post(put))
        .route("/delete", post(delete))
        .route("/g_start_query", post(flood))
        .route("/watch", get(watch))
        .route_layer(middleware::from_fn_with_state(api.clone(), require_token));
    Router::new()
        .route("/get", post(get_key))
        .route("/metrics", get(metrics))
        .route("/metrics/prometheus", get(prometheus))
        .route("/ring", get(ring))
        .route("/walk", get(walk))
        .merge(writes)
}

/// Refuses (403 `bad_host` / `bad_origin`, counted) a request whose `Host` or `Origin` the
/// policy does not allow.
async fn check_access(State(api): State<Api>, request: Request, next: Next) -> Response {
    match api.access.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            let counter = match refusal {
                signaling::access::Refusal::BadHost(_) => &api.refused.bad_host,
                signaling::access::Refusal::BadOrigin(_) => &api.refused.bad_origin,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            api.bad_requests.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("HTTP request refused: {}", refusal.message());
            refusal.into_response()
        }
    }
}

/// With an API token set, refuses (401 `unauthorized`, counted) a request without
/// `Authorization: Bearer <token>`.
async fn require_token(State(api): State<Api>, request: Request, next: Next) -> Response {
    let Some(token) = &api.api_token else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    if presented.is_some_and(|presented| same_secret(presented.as_bytes(), token.as_bytes())) {
        return next.run(request).await;
    }
    api.refused.unauthorized.fetch_add(1, Ordering::Relaxed);
    api.bad_requests.fetch_add(1, Ordering::Relaxed);
    let error = ApiError {
        status: StatusCode::UNAUTHORIZED,
        code: "unauthorized",
        message: "this route needs the API token: send Authorization: Bearer <token>".into(),
    };
    let mut response = error.into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// Compares two secrets in time that depends on their lengths only, not on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A JSON error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<OpError> for ApiError {
    /// The code and status are node-core's ([`OpError::code`], [`OpError::http_status`]), the
    /// same codes the browser peer rejects with.
    fn from(e: OpError) -> Self {
        Self {
            status: StatusCode::from_u16(e.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code: e.code(),
            message: e.to_string(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct PutBody {
    key: String,
    value: Value,
    writer_id: Option<String>,
    ts: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct GetBody {
    key: String,
}

#[derive(Debug, Deserialize)]
struct DeleteBody {
    key: String,
    writer_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct FloodBody {
    key: String,
    #[serde(default = "default_ttl")]
    ttl: u8,
}

/// The original's default TTL for `/g_start_query`.
const fn default_ttl() -> u8 {
    5
}

/// Parses a JSON body, turning every rejection into a counted 400 with a JSON error.
fn body<T>(api: &Api, body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b).map_err(|rejection| {
        api.bad_requests.fetch_add(1, Ordering::Relaxed);
        let code = match &rejection {
            JsonRejection::JsonSyntaxError(_) => "bad_json",
            JsonRejection::JsonDataError(_) => "bad_fields",
            JsonRejection::MissingJsonContentType(_) => "not_json",
            _ => "bad_body",
        };
        ApiError::bad(code, rejection.body_text())
    })
}

fn stopped() -> ApiError {
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "stopped",
        message: "the peer is shutting down".into(),
    }
}

async fn call(api: &Api, command: Command) -> Result<OpOutcome, ApiError> {
    match api.peer.call(command).await {
        Some(Ok(outcome)) => Ok(outcome),
        Some(Err(e)) => Err(e.into()),
        None => Err(stopped()),
    }
}

async fn status_of(api: &Api) -> Result<crate::driver::Status, ApiError> {
    api.peer.status().await.ok_or_else(stopped)
}

async fn put(
    State(api): State<Api>,
    raw: Result<Json<PutBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let b = body(&api, raw)?;
    let outcome = call(
        &api,
        Command::Put {
            key: b.key,
            value: node_core::value::encode(&b.value),
            writer: b.writer_id.unwrap_or_else(|| api.name.to_string()),
            client_ts: b.ts,
        },
    )
    .await?;
    match outcome {
        OpOutcome::Stored { ts, hops } => Ok(Json(json!({"ok": true, "ts": ts, "hops": hops}))),
        other => Ok(Json(json!({"ok": false, "detail": format!("{other:?}")}))),
    }
}

async fn get_key(
    State(api): State<Api>,
    raw: Result<Json<GetBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let b = body(&api, raw)?;
    match call(&api, Command::Get { key: b.key }).await? {
        OpOutcome::Found {
            value,
            ts,
            writer,
            hops,
        } => Ok(Json(json!({
            "found": true,
            "value": node_core::value::decode(&value),
            "ts": ts,
            "writer_id": writer,
            "hops": hops,
        }))),
        OpOutcome::NotFound { hops } => Ok(Json(json!({"found": false, "hops": hops}))),
        other => Err(ApiError::internal(format!("unexpected outcome {other:?}"))),
    }
}

async fn delete(
    State(api): State<Api>,
    raw: Result<Json<DeleteBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let b = body(&api, raw)?;
    match call(
        &api,
        Command::Delete {
            key: b.key,
            writer: b.writer_id.unwrap_or_else(|| api.name.to_string()),
        },
    )
    .await?
    {
        OpOutcome::Stored { ts, hops } => Ok(Json(json!({"ok": true, "ts": ts, "hops": hops}))),
        other => Ok(Json(json!({"ok": false, "detail": format!("{other:?}")}))),
    }
}

async fn flood(
    State(api): State<Api>,
    raw: Result<Json<FloodBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let b = body(&api, raw)?;
    match call(
        &api,
        Command::Flood {
            key: b.key,
            ttl: b.ttl,
        },
    )
    .await?
    {
        OpOutcome::Flooded(result) => {
            // Holders report their `host:port`; a browser tab has none, so its `addr` is its
            // 8-hex-digit ring id (every match also names the holder's id as `peer`).
            let matches: Vec<Value> = result
                .matches
                .iter()
                .map(|holder| {
                    let addr = result
                        .holder_addrs
                        .iter()
                        .find(|(id, _)| id == holder)
                        .map_or_else(|| holder.to_string(), |(_, addr)| addr.clone());
                    json!({"addr": addr, "key": result.key, "peer": holder.to_string()})
                })
                .collect();
            Ok(Json(json!({
                "matches": matches,
                "stats": {
                    "ttl": result.ttl,
                    "hits_received": result.hits_received,
                    "hops_to_first_hit": result.hops_to_first_hit,
                    "ms_to_first_hit": result.ms_to_first_hit,
                    // Every query message of the flood tree, as the original counted it.
                    "forwarded": result.forwarded_total,
                    "neighbors_asked": result.neighbors_asked,
                },
            })))
        }
        other => Ok(Json(json!({"matches": [], "detail": format!("{other:?}")}))),
    }
}

async fn metrics(State(api): State<Api>) -> Result<Json<Value>, ApiError> {
    let status = status_of(&api).await?;
    // The document a tab's `peer.metrics()` returns too (node-core's `peer::stats`), plus what
    // only a native peer has.
    let mut value =
        node_core::peer::stats::document(&status.raw, status.keys_stored, &status.driver);
    if let Value::Object(map) = &mut value {
        map.insert("node".into(), json!(*api.name));
        map.insert(
            "uptime_sec".into(),
            json!(api.started.elapsed().as_secs_f64()),
        );
        map.insert(
            "http".into(),
            json!({
                "bad_requests": api.bad_requests.load(Ordering::Relaxed),
                "bad_host": api.refused.bad_host.load(Ordering::Relaxed),
                "bad_origin": api.refused.bad_origin.load(Ordering::Relaxed),
                "unauthorized": api.refused.unauthorized.load(Ordering::Relaxed),
            }),
        );
        if let Some(introducer) = &api.introducer {
            let stats = introducer.stats();
            let errors: serde_json::Map<String, Value> = stats
                .errors
                .iter()
                .map(|(code, n)| (code.as_str().to_string(), json!(n)))
                .collect();
            map.insert(
                "introducer".into(),
                json!({
                    "sessions_now": stats.sessions_now,
                    "sessions_total": stats.sessions_total,
                    "peers_now": stats.peers_now,
                    "relayed": stats.relayed,
                    "evicted": stats.evicted,
                    "errors": errors,
                }),
            );
        }
        map.insert(
            "raw".into(),
            serde_json::to_value(&status.raw).unwrap_or_default(),
        );
    }
    Ok(Json(value))
}

async fn prometheus(State(api): State<Api>) -> Result<String, ApiError> {
    let status = status_of(&api).await?;
    let m = &status.metrics;
    let lines = [
        ("chordkv_puts_total", m.kv.total_puts as f64),
        ("chordkv_gets_total", m.kv.total_gets as f64),
        ("chordkv_get_hits_total", m.kv.total_get_hits as f64),
        ("chordkv_get_misses_total", m.kv.total_get_misses as f64),
        ("chordkv_put_latency_seconds_avg", m.kv.avg_put_latency_sec),
        ("chordkv_get_latency_seconds_avg", m.kv.avg_get_latency_sec),
        ("chordkv_get_latency_ms_p99", m.kv.get_latency_ms.p99 as f64),
        ("chordkv_read_repairs_total", m.kv.read_repairs as f64),
        ("chordkv_elections_total", m.kv.elections_started as f64),
        (
            "chordkv_anti_entropy_rounds_total",
            m.kv.anti_entropy_rounds as f64,
        ),
        (
            "chordkv_anti_entropy_bytes_total",
            m.kv.anti_entropy_bytes as f64,
        ),
        ("chordkv_keys", m.kv.keys_stored as f64),
        ("chordkv_lookups_total", m.chord.total_lookups as f64),
        ("chordkv_lookup_hops_avg", m.chord.avg_hops),
        ("chordkv_links_up", m.chord.links_up as f64),
        ("chordkv_bad_frames_total", m.chord.bad_frames as f64),
        (
            "chordkv_flood_queries_total",
            m.gnutella.total_queries as f64,
        ),
        (
            "chordkv_overlay_links_total",
            status.driver.signaling.overlay_links as f64,
        ),
        (
            "chordkv_http_bad_requests_total",
            api.bad_requests.load(Ordering::Relaxed) as f64,
        ),
        (
            "chordkv_http_bad_host_total",
            api.refused.bad_host.load(Ordering::Relaxed) as f64,
        ),
        (
            "chordkv_http_bad_origin_total",
            api.refused.bad_origin.load(Ordering::Relaxed) as f64,
        ),
        (
            "chordkv_http_unauthorized_total",
            api.refused.unauthorized.load(Ordering::Relaxed) as f64,
        ),
    ];
    let mut text = String::new();
    for (name, value) in lines {
        text.push_str(&format!("# TYPE {name} gauge\n{name} {value}\n"));
    }
    Ok(text)
}

async fn ring(State(api): State<Api>) -> Result<Json<Value>, ApiError> {
    let status = status_of(&api).await?;
    let r = &status.ring;
    Ok(Json(json!({
        "id": r.id.to_string(),
        "joined": r.joined,
        "predecessor": r.predecessor.map(|p| p.to_string()),
        "successors": r.successors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "fingers": r.fingers.iter().map(|f| f.map(|f| f.to_string())).collect::<Vec<_>>(),
        "links": r.links.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "agent": r.agent,
    })))
}

#[derive(Deserialize)]
struct WalkQuery {
    limit: Option<usize>,
}

/// `GET /walk?limit=64`: the ring as far as successor pointers lead from this peer, one
/// `PeerView::to_json` entry per peer (with each peer's `agent` and `kind`), starting with this
/// peer; the same walk as a tab's `peer.walk()`. Stops at the start, at `limit` peers (1..=1024)
/// or at the first peer that does not answer; when this peer cannot even answer for itself (not
/// joined) the error is the core's (503 `not_joined`).
async fn walk(
    State(api): State<Api>,
    query: Result<Query<WalkQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        api.bad_requests.fetch_add(1, Ordering::Relaxed);
        ApiError::bad("bad_input", rejection.body_text())
    })?;
    let limit = query.limit.unwrap_or(64).clamp(1, 1024);
    let me = api.peer.id();
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut at = me;
    while out.len() < limit && seen.insert(at) {
        let view = match call(&api, Command::View { peer: at }).await {
            Ok(OpOutcome::View(view)) => view,
            Ok(other) => return Err(ApiError::internal(format!("unexpected outcome {other:?}"))),
            Err(e) if out.is_empty() => return Err(e),
            Err(_) => break,
        };
        out.push(view.to_json());
        match view.successors.iter().find(|s| !seen.contains(*s)) {
            Some(next) if *next != me => at = *next,
            _ => break,
        }
    }
    Ok(Json(Value::Array(out)))
}

#[derive(Deserialize)]
struct WatchQuery {
    key: String,
}

/// `GET /watch?key=K`: a `text/event-stream` with one event per change of `K` anywhere in the
/// ring (`node_core::watch`: in version order, the first one maybe the current value), each a
/// `data:` line of `node_core::watch::event_json`; a comment line every 15 s keeps proxies
/// from closing an idle stream. The subscription ends when the client disconnects (the
/// stream is dropped, and with it the [`crate::driver::Watcher`]), and the stream ends when the
/// client falls `WATCH_QUEUE` events behind. Errors before the stream starts are JSON as
/// elsewhere (400 `bad_input` without `key`, 413 for a key over the limits, 503 `busy` beyond
/// the watch limits).
async fn watch(
    State(api): State<Api>,
    query: Result<Query<WatchQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let Query(query) = query.map_err(|rejection| {
        api.bad_requests.fetch_add(1, Ordering::Relaxed);
        ApiError::bad("bad_input", rejection.body_text())
    })?;
    let watcher = match api.peer.watch(query.key).await {
        Some(Ok(watcher)) => watcher,
        Some(Err(e)) => return Err(e.into()),
        None => return Err(stopped()),
    };
    let events = futures_util::stream::unfold(watcher, |mut watcher| async move {
        let event = watcher.next().await?;
        let sse = Event::default().data(event.to_string());
        Some((Ok::<_, std::convert::Infallible>(sse), watcher))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
        .into_response())
}

async fn not_found(State(api): State<Api>) -> ApiError {
    api.bad_requests.fetch_add(1, Ordering::Relaxed);
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: "not_found",
        message: "no such route; see README for the API".into(),
    }
}

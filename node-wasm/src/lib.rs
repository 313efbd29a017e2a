//! chord-kv's browser peer: the sans-IO `node-core` driven by the browser's RTCPeerConnection,
//! WebSocket, `setTimeout`, `performance.now()` and `crypto.getRandomValues`.
//!
//! The same protocol code as the native peer runs here; this crate only moves bytes and keeps
//! time (thin drivers, docs/conventions.md habit 5). A tab is one peer. Its first link comes
//! through an introducer (the `signaling` server or any native peer's `/ws`); every later link
//! is negotiated through the ring (overlay signaling), exactly as the native peer does, so
//! browsers and native peers interoperate both ways.
//!
//! # JavaScript API
//! ```js
//! import init, { ChordPeer } from './pkg/node_wasm.js';
//! await init();
//! const peer = await ChordPeer.start({ introducer: 'ws://127.0.0.1:8080/ws', iceServers: [] });
//! peer.onEvent(e => console.log(e.type, e));
//! await peer.put('k', 'v');          // {ok, ts, hops, latency_ms}
//! await peer.get('k');               // {found, value, ts, writer_id, hops, latency_ms}
//! await peer.delete('k');            // {ok, ts, hops, latency_ms}
//! await peer.flood('k', 4);          // {matches: [{peer}], stats: {...}, latency_ms}
//! peer.watch('k', e => console.log(e.value, e.ts, e.writer_id, e.deleted));
//! peer.unwatch('k');                 // true if it was watched
//! peer.ring(); peer.metrics(); await peer.walk(64); peer.localKeys(); peer.keyId('k');
//! peer.stop();
//! ```
//! Failed operations reject with an `Error` whose `code` is one of `too_large`, `bad_input`,
//! `timeout`, `not_joined`, `no_route`, `busy`, `id_in_use`, `stopped` (node-core's
//! `OpError::code`, the codes the native HTTP API answers with too); `start` rejects with
//! `introducer_unreachable`, `introducer_error`, `join_timeout`, `storage_error` (IndexedDB could
//! not be opened or read) or `bad_config` (`stopped` too when the peer is stopped meanwhile;
//! `internal` marks a driver bug).
//!
//! TypeScript: `node_wasm.d.ts` (web/pkg, the npm package `chord-kv`) types every option,
//! result, event and error code; the shapes are in js/types.d.ts, which must change with any
//! `json!` the API returns or emits (the `ts_types` test and `cargo xtask types` check it).
//!
//! `introducer: 'page:<room>'` uses an in-page introducer instead of a WebSocket: several peers
//! in one page find each other (the wasm-bindgen tests use it; links are real RTCPeerConnections).
//!
//! # Layout
//! - [`driver`]: the event loop glue: owns the [`node_core::Node`], feeds it and carries out its
//!   outputs; chooses the signaling path (ring or introducer) like the native driver.
//! - [`links`]: one RTCPeerConnection with one data channel per peer; non-trickle SDP in the
//!   `{type, sdp}` shape, glare settled by the lower id (the native peer's rules).
//! - [`introducer`]: the introducer session, over a WebSocket or in-page.
//! - [`storage`]: the tab's IndexedDB database (one per peer id), its `sessionStorage` id, and
//!   the certificates of verifying tabs (`chord-kv-identities`).
//! - [`identity`]: a verifying tab's certificate and the id it proves (`verifyIds`).
//! - [`js`]: conversions to JavaScript values and errors.

pub mod driver;
pub mod identity;
pub mod introducer;
pub mod js;
pub mod links;
pub mod storage;
#[cfg(test)]
mod ts_types;

use std::rc::Rc;

use js_sys::Promise;
use node_core::Id;
use node_core::node::{OpError, OpOutcome};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::driver::{Handle, StartOptions};

/// The TypeScript shapes of the options, results, events and errors below, copied verbatim
/// into the generated `node_wasm.d.ts`; the methods name them with `unchecked_*_type`.
#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &str = include_str!("../js/types.d.ts");

/// One browser peer of the ring.
#[wasm_bindgen]
#[derive(Debug)]
pub struct ChordPeer {
    handle: Handle,
}

#[wasm_bindgen]
impl ChordPeer {
    /// Starts a peer: `{introducer, iceServers?, id?, storage?, replicas?, readQuorum?,
    /// writeQuorum?, connectionLimit?, agent?, verifyIds?}`. Resolves once the peer is a ring
    /// member (joined, or the first peer of a new ring). Without `id` the tab's id from
    /// `sessionStorage` is reused (a reload is the same peer), else a random one.
    /// `storage: 'indexeddb'` (default) restores and persists the store in IndexedDB;
    /// `'memory'` keeps nothing.
    ///
    /// `verifyIds: true` binds the id to the links (issue 11, item 4; node-core's
    /// `peer::identity`): the tab makes an ECDSA P-256 certificate
    /// (`RTCPeerConnection.generateCertificate`, 365 days), presents it on every connection,
    /// and its id is the one the certificate's SHA-256 fingerprint proves; offers and answers
    /// whose fingerprint does not prove their sender's id are refused and counted
    /// (`metrics().driver.rtc.identity_refused`). With IndexedDB storage the certificate is
    /// kept (storage.rs, "Certificates"), so a reload keeps the id; with `'memory'` each start
    /// is a new certificate and id. A ring that verifies consists of verifying peers only
    /// (tabs with `verifyIds`, `chord-node --verify-ids`). `verifyIds` with `id` is a
    /// `bad_config` error, as is a browser that cannot make or fingerprint a certificate.
    pub async fn start(
        #[wasm_bindgen(unchecked_param_type = "StartOptions")] options: JsValue,
    ) -> Result<Self, JsValue> {
        let options = StartOptions::from_js(&options).map_err(|m| js::error("bad_config", &m))?;
        match driver::start(options).await {
            Ok(handle) => Ok(Self { handle }),
            Err((code, message)) => Err(js::error(code, &message)),
        }
    }

    /// This peer's ring id (8 hex digits).
    #[wasm_bindgen(getter, unchecked_return_type = "PeerId")]
    pub fn id(&self) -> String {
        self.handle.id().to_string()
    }

    /// Replication factor k (replica set = the key's owner and its next k-1 successors).
    #[wasm_bindgen(getter)]
    pub fn replicas(&self) -> usize {
        driver::with_driver(&self.handle, |d, _| d.peer.node().config().replicas)
    }

    /// `cb(event)` for every event: `{type, at_ms, ...}` (see the crate docs).
    #[wasm_bindgen(js_name = onEvent)]
    pub fn on_event(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(event: PeerEvent) => void")]
        callback: js_sys::Function,
    ) {
        self.handle.set_callback(callback);
    }

    /// `put(key, value, writerId?)` -> `{ok, ts, hops, latency_ms}`; `writerId` defaults to the
    /// peer id. `value` is any JSON-serializable value; `get` gives back the same value, here
    /// and from the native HTTP API (`node_core::value` is the shared encoding).
    #[wasm_bindgen(unchecked_return_type = "Promise<WriteResult>")]
    pub fn put(
        &self,
        key: String,
        #[wasm_bindgen(unchecked_param_type = "JsonValue")] value: JsValue,
        #[wasm_bindgen(js_name = writerId)] writer: Option<String>,
    ) -> Promise {
        let writer = writer.unwrap_or_else(|| self.id());
        let handle = Rc::clone(&self.handle);
        future_to_promise(async move {
            let value = node_core::value::encode(&js::json_of(&value)?);
            let (reply, ms) =
                driver::command(&handle, |n, now| n.put(&key, &value, &writer, now)).await;
            stored(reply, ms)
        })
    }

    /// `delete(key, writerId?)` -> `{ok, ts, hops, latency_ms}` (a tombstone).
    #[wasm_bindgen(unchecked_return_type = "Promise<WriteResult>")]
    pub fn delete(
        &self,
        key: String,
        #[wasm_bindgen(js_name = writerId)] writer: Option<String>,
    ) -> Promise {
        let writer = writer.unwrap_or_else(|| self.id());
        let handle = Rc::clone(&self.handle);
        future_to_promise(async move {
            let (reply, ms) = driver::command(&handle, |n, now| n.delete(&key, &writer, now)).await;
            stored(reply, ms)
        })
    }

    /// `get(key)` -> `{found, value, ts, writer_id, hops, latency_ms}`.
    #[wasm_bindgen(unchecked_return_type = "Promise<GetResult>")]
    pub fn get(&self, key: String) -> Promise {
        let handle = Rc::clone(&self.handle);
        future_to_promise(async move {
            let (reply, ms) = driver::command(&handle, |n, now| n.get(&key, now)).await;
            match reply? {
                OpOutcome::Found {
                    value,
                    ts,
                    writer,
                    hops,
                } => Ok(js::value(&serde_json::json!({
                    "found": true, "value": node_core::value::decode(&value), "ts": ts,
                    "writer_id": writer,
                    "hops": hops, "latency_ms": ms,
                }))),
                OpOutcome::NotFound { hops } => Ok(js::value(&serde_json::json!({
                    "found": false, "value": null, "ts": null, "writer_id": null,
                    "hops": hops, "latency_ms": ms,
                }))),
                other => Err(unexpected(&other)),
            }
        })
    }

    /// Gnutella-style flood for `key` with `ttl` (the unstructured-search baseline):
    /// `{matches: [{peer}], stats, latency_ms}`.
    #[wasm_bindgen(unchecked_return_type = "Promise<FloodResult>")]
    pub fn flood(&self, key: String, ttl: u8) -> Promise {
        let handle = Rc::clone(&self.handle);
        future_to_promise(async move {
            let (reply, ms) = driver::command(&handle, |n, now| n.flood(&key, ttl, now)).await;
            match reply? {
                OpOutcome::Flooded(result) => Ok(js::value(&js::flood_result(&result, ms))),
                other => Err(unexpected(&other)),
            }
        })
    }

    /// Owner of `key`'s id, as a routed Chord lookup finds it: `{key_id, owner, hops}`.
    #[wasm_bindgen(unchecked_return_type = "Promise<LookupResult>")]
    pub fn lookup(&self, key: String) -> Promise {
        let handle = Rc::clone(&self.handle);
        future_to_promise(async move {
            let id = Id::of_key(&key);
            let (reply, ms) = driver::command(&handle, |n, now| n.lookup(id, now)).await;
            match reply? {
                OpOutcome::Lookup { key, owner, hops } => Ok(js::value(&serde_json::json!({
                    "key_id": key.to_string(), "owner": owner.to_string(), "hops": hops,
                    "latency_ms": ms,
                }))),
                other => Err(unexpected(&other)),
            }
        })
    }

    /// This peer's pointers and agent: `{id, joined, predecessor, successors, fingers, links,
    /// agent}`.
    #[wasm_bindgen(unchecked_return_type = "RingView")]
    pub fn ring(&self) -> JsValue {
        js::value(&driver::with_driver(&self.handle, |d, _| {
            js::ring_view(&d.peer.node().ring_view())
        }))
    }

    /// The whole ring as far as successor pointers lead from here (at most `limit` peers,
    /// default 64): `[{id, predecessor, successors, hops, agent, kind}]`, starting with this
    /// peer; `agent` is what each peer says it is (`native 0.1.0`, `firefox 128`, untrusted
    /// display text) and `kind` its class (`native`, `chromium`, `firefox`, `other`).
    #[wasm_bindgen(unchecked_return_type = "Promise<WalkEntry[]>")]
    pub fn walk(&self, limit: Option<usize>) -> Promise {
        let handle = Rc::clone(&self.handle);
        future_to_promise(async move {
            let views = driver::walk(&handle, limit.unwrap_or(64).clamp(1, 1024)).await;
            Ok(js::value(&serde_json::Value::Array(views)))
        })
    }

    /// Counters: the native `/metrics` shape (`kv`, `chord`, `gnutella` with percentiles), the
    /// hop histograms and the driver's own counters.
    #[wasm_bindgen(unchecked_return_type = "Metrics")]
    pub fn metrics(&self) -> JsValue {
        js::value(&driver::with_driver(&self.handle, |d, _| d.metrics_json()))
    }

    /// This peer's store (at most 1000 entries): `[{key, key_id, value, ts, writer_id, deleted}]`.
    #[wasm_bindgen(js_name = localKeys, unchecked_return_type = "LocalEntry[]")]
    pub fn local_keys(&self) -> JsValue {
        js::value(&driver::with_driver(&self.handle, |d, _| {
            js::local_keys(d.peer.node().store(), 1000)
        }))
    }

    /// The ring id of `key` (SHA-1, first 32 bits), 8 hex digits.
    #[wasm_bindgen(js_name = keyId, unchecked_return_type = "PeerId")]
    pub fn key_id(&self, key: &str) -> String {
        Id::of_key(key).to_string()
    }

    /// Sends raw bytes on the data channel to `peer` (8 hex digits), bypassing the codec. For
    /// tests of how peers treat malformed frames; returns false when no channel is open.
    #[wasm_bindgen(js_name = sendRawFrame)]
    pub fn send_raw_frame(&self, peer: &str, bytes: &[u8]) -> bool {
        let Ok(peer) = u32::from_str_radix(peer, 16) else {
            return false;
        };
        driver::with_driver(&self.handle, |d, _| d.links.send(peer, bytes))
    }

    /// `watch(key, callback)`: `callback({key, value, ts, writer_id, deleted})` for every newer
    /// version of `key` put or deleted anywhere in the ring, in version order (never an older
    /// one after a newer one; the first call may bring the current value). The subscription is
    /// held by the key's replica set and renewed every 5 s (node-core's `watch` module). Throws
    /// an `Error` with `code` `too_large` (key over the limits), `busy` (64 keys watched) or
    /// `stopped`. Watching a watched key again replaces its callback.
    pub fn watch(
        &self,
        key: String,
        #[wasm_bindgen(unchecked_param_type = "(event: WatchEvent) => void")]
        callback: js_sys::Function,
    ) -> Result<(), JsValue> {
        self.handle.watch(key, callback)
    }

    /// `unwatch(key)`: no more calls for `key`; false when it was not watched.
    pub fn unwatch(&self, key: &str) -> bool {
        self.handle.unwatch(key)
    }

    /// Leaves the ring gracefully, closes every link and the introducer session.
    pub fn stop(&self) {
        driver::stop(&self.handle);
    }
}

impl Drop for ChordPeer {
    fn drop(&mut self) {
        // A JS wrapper freed (`peer.free()`): nothing else may hold the peer alive.
        if Rc::strong_count(&self.handle) <= 1 {
            driver::stop(&self.handle);
        }
    }
}

fn stored(reply: Result<OpOutcome, JsValue>, ms: f64) -> Result<JsValue, JsValue> {
    match reply? {
        OpOutcome::Stored { ts, hops } => Ok(js::value(&serde_json::json!({
            "ok": true, "ts": ts, "hops": hops, "latency_ms": ms,
        }))),
        other => Err(unexpected(&other)),
    }
}

fn unexpected(outcome: &OpOutcome) -> JsValue {
    js::error("internal", &format!("unexpected outcome {outcome:?}"))
}

/// The error code JavaScript sees for a failed operation: node-core's [`OpError::code`], the
/// same code the native HTTP API answers with.
pub fn error_code(error: &OpError) -> &'static str {
    error.code()
}

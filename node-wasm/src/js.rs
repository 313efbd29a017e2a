//! Conversions from the core's types to what JavaScript sees.
//!
//! Ids become 8-hex-digit strings (as the introducer and the native `/ring` tools print them);
//! structured results go through `serde_json::Value` and `JSON.parse`, which keeps this crate
//! free of a second serialization stack.

use node_core::RingView;
use node_core::flood::FloodResult;
use node_core::store::Store;
use serde_json::{Value, json};
use wasm_bindgen::JsValue;

/// A JSON value as a JavaScript value.
pub fn value(v: &Value) -> JsValue {
    js_sys::JSON::parse(&v.to_string()).unwrap_or(JsValue::NULL)
}

/// A JavaScript value as JSON (`JSON.stringify`), or a `bad_input` error for what JSON cannot
/// hold (`undefined`, functions, cycles, BigInt).
pub fn json_of(v: &JsValue) -> Result<Value, JsValue> {
    if let Some(text) = v.as_string() {
        return Ok(Value::String(text));
    }
    js_sys::JSON::stringify(v)
        .ok()
        .and_then(|text| text.as_string())
        .and_then(|text| serde_json::from_str(&text).ok())
        .ok_or_else(|| error("bad_input", "value must be a JSON-serializable value"))
}

/// An `Error` with a `code` property.
pub fn error(code: &str, message: &str) -> JsValue {
    let error = js_sys::Error::new(message);
    let _ = js_sys::Reflect::set(&error, &"code".into(), &code.into());
    error.into()
}

fn hex(id: node_core::Id) -> Value {
    Value::String(id.to_string())
}

pub fn ring_view(view: &RingView) -> Value {
    json!({
        "id": view.id.to_string(),
        "joined": view.joined,
        "predecessor": view.predecessor.map(hex),
        "successors": view.successors.iter().map(|s| hex(*s)).collect::<Vec<_>>(),
        "fingers": view.fingers.iter().map(|f| f.map(hex)).collect::<Vec<_>>(),
        "links": view.links.iter().map(|l| hex(*l)).collect::<Vec<_>>(),
        "agent": view.agent,
    })
}

pub fn peer_view(view: &node_core::api::PeerView) -> Value {
    view.to_json()
}

pub fn flood_result(result: &FloodResult, latency_ms: f64) -> Value {
    json!({
        "key": result.key,
        "matches": result.matches.iter().map(|m| {
            let addr = result.holder_addrs.iter().find(|(id, _)| id == m).map(|(_, a)| a);
            json!({"peer": m.to_string(), "addr": addr})
        }).collect::<Vec<_>>(),
        "stats": {
            "ttl": result.ttl,
            "hits_received": result.hits_received,
            "hops_to_first_hit": result.hops_to_first_hit,
            "ms_to_first_hit": result.ms_to_first_hit,
            "neighbors_asked": result.neighbors_asked,
            "forwarded": result.forwarded_total,
        },
        "latency_ms": latency_ms,
    })
}

pub fn local_keys(store: &Store, limit: usize) -> Value {
    Value::Array(
        store
            .iter()
            .take(limit)
            .map(|r| {
                json!({
                    "key": r.key,
                    "key_id": format!("{:08x}", r.id),
                    "value": r.entry.value.as_deref().map(node_core::value::decode),
                    "ts": r.entry.version.ts,
                    "writer_id": r.entry.version.writer,
                    "deleted": r.entry.value.is_none(),
                })
            })
            .collect(),
    )
}

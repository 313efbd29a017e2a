//! The original project's HTTP API over real HTTP, on one `chord-node` process (a ring of one,
//! inside a private network namespace): the shapes of `/put`, `/get`, `/g_start_query` and
//! `/metrics`, any JSON value round-tripping through `/put` and `/get`, the `writer_id` default,
//! unknown fields ignored, a client `ts` observed; `/ring` and `/walk` naming the peer's agent;
//! and `--host` taking a host name.

use std::process::{Command, Stdio};
use std::time::Duration;

use lab::live::{Proc, bin_dir, json, wait_until};
use serde_json::{Value, json};

const PORT: u16 = 7610;

fn post(path: &str, body: Value) -> (u16, Value) {
    json(PORT, "POST", path, Some(&body.to_string()))
        .unwrap_or_else(|| panic!("no JSON answer to {path} {body}"))
}

fn lone_peer() -> Proc {
    let peer = Proc::peer(PORT, 0x1234_5678, None);
    assert!(
        wait_until(Duration::from_secs(20), || json(PORT, "GET", "/ring", None)
            .is_some_and(|(_, ring)| ring["joined"] == true)),
        "the peer did not start: {}",
        peer.log()
    );
    peer
}

#[test]
fn the_original_http_api() {
    if !lab::netns::enter_private_netns("the_original_http_api") {
        return;
    }
    let _peer = lone_peer();
    let name = format!("127.0.0.1:{PORT}");

    // Any JSON value comes back as itself, with the original's answer shapes.
    for (key, value) in [
        ("number", json!(42)),
        ("float", json!(2.5)),
        ("object", json!({"a": [1, "two", null], "b": {"c": true}})),
        ("list", json!([1, 2, 3])),
        ("bool", json!(false)),
        ("null", json!(null)),
        ("string", json!("plain text")),
        ("json-looking string", json!("{\"a\": 1}")),
    ] {
        let (status, put) = post("/put", json!({"key": key, "value": value}));
        assert_eq!(status, 200, "{put}");
        assert_eq!(put["ok"], true, "{put}");
        assert!(put["ts"].is_u64(), "{put}");
        let (status, got) = post("/get", json!({"key": key}));
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["found"], true, "{got}");
        assert_eq!(got["value"], value, "{key}: {got}");
        assert_eq!(got["ts"], put["ts"], "{got}");
        // writer_id defaults to the node's host:port.
        assert_eq!(got["writer_id"], json!(name), "{got}");
    }

    // A given writer_id is kept; unknown fields are ignored, not refused.
    let (status, put) = post(
        "/put",
        json!({"key": "k", "value": "v", "writer_id": "client-7", "extra": [1], "x": null}),
    );
    assert_eq!((status, &put["ok"]), (200, &json!(true)), "{put}");
    let (_, got) = post("/get", json!({"key": "k", "unused": "field"}));
    assert_eq!(got["writer_id"], "client-7", "{got}");

    // A client's ts is observed into the Lamport clock: the write is stamped after it.
    let (_, put) = post("/put", json!({"key": "late", "value": 1, "ts": 1000}));
    assert!(put["ts"].as_u64().unwrap() > 1000, "{put}");

    // A missing key.
    let (status, got) = post("/get", json!({"key": "never written"}));
    assert_eq!(status, 200);
    assert_eq!(got["found"], false, "{got}");
    assert!(got.get("value").is_none(), "{got}");

    // Flooding: this peer holds the key; ttl defaults as in the original.
    let (status, flood) = post("/g_start_query", json!({"key": "number"}));
    assert_eq!(status, 200, "{flood}");
    assert_eq!(
        flood["matches"],
        json!([{"addr": name, "key": "number", "peer": "12345678"}]),
        "{flood}"
    );
    assert!(flood["stats"]["forwarded"].is_u64(), "{flood}");
    assert_eq!(flood["stats"]["ttl"], 5, "{flood}");

    // Metrics: the original's fields, by name and type.
    let (status, metrics) = json(PORT, "GET", "/metrics", None).expect("metrics");
    assert_eq!(status, 200);
    assert_eq!(metrics["node"], json!(name), "{metrics}");
    assert!(metrics["uptime_sec"].is_f64(), "{metrics}");
    for field in [
        "total_puts",
        "total_gets",
        "total_get_hits",
        "total_get_misses",
    ] {
        assert!(metrics["kv"][field].is_u64(), "kv.{field}: {metrics}");
    }
    assert!(metrics["kv"]["total_puts"].as_u64().unwrap() >= 10);
    assert!(metrics["kv"]["total_get_misses"].as_u64().unwrap() >= 1);
    for field in ["avg_put_latency_sec", "avg_get_latency_sec"] {
        assert!(metrics["kv"][field].is_f64(), "kv.{field}: {metrics}");
    }
    assert!(metrics["chord"]["total_lookups"].is_u64(), "{metrics}");
    assert!(metrics["chord"]["avg_hops"].is_f64(), "{metrics}");
    assert_eq!(metrics["gnutella"]["total_queries"], 1, "{metrics}");
    assert!(
        metrics["gnutella"]["avg_forwarded_per_query"].is_f64(),
        "{metrics}"
    );
    // The sections a tab's `peer.metrics()` has too: one document, built by node-core.
    for path in [
        "/kv/hop_histogram",
        "/kv/keys_stored",
        "/chord/hop_histogram",
        "/driver/links",
        "/driver/overlay_links",
        "/driver/rtc/attempts",
        "/driver/rtc/reanswers",
        "/driver/frames_bad",
        "/driver/storage/durability",
        "/driver/storage/frames_held",
    ] {
        assert!(metrics.pointer(path).is_some(), "{path}: {metrics}");
    }

    // The peer says what it is: in `/ring`, and per peer in `/walk` (a ring of one: itself).
    let agent = format!("native {}", env!("CARGO_PKG_VERSION"));
    let (status, ring) = json(PORT, "GET", "/ring", None).expect("ring");
    assert_eq!(status, 200);
    assert_eq!(ring["agent"], json!(agent), "{ring}");
    let (status, walk) = json(PORT, "GET", "/walk?limit=8", None).expect("walk");
    assert_eq!(status, 200, "{walk}");
    let entries = walk.as_array().expect("a list");
    assert_eq!(entries.len(), 1, "{walk}");
    assert_eq!(entries[0]["id"], "12345678", "{walk}");
    assert_eq!(entries[0]["agent"], json!(agent), "{walk}");
    assert_eq!(entries[0]["kind"], "native", "{walk}");
    assert_eq!(entries[0]["successors"], json!([]), "{walk}");
    let (status, error) = json(PORT, "GET", "/walk?limit=many", None).expect("answer");
    assert_eq!(status, 400);
    assert_eq!(error["error"]["code"], "bad_input", "{error}");

    // Errors stay JSON with codes.
    let (status, error) = json(PORT, "POST", "/put", Some("{not json")).expect("answer");
    assert_eq!(status, 400);
    assert_eq!(error["error"]["code"], "bad_json", "{error}");
    let (status, error) = post("/put", json!({"value": 1}));
    assert_eq!(status, 400);
    assert_eq!(error["error"]["code"], "bad_fields", "{error}");
}

#[test]
fn host_takes_a_host_name() {
    if !lab::netns::enter_private_netns("host_takes_a_host_name") {
        return;
    }
    let data = std::env::temp_dir().join(format!("chord-kv-http-api-{}", std::process::id()));
    let mut child = Command::new(bin_dir().join("chord-node"))
        .args(["--host", "localhost", "--port", "7611", "--log", "warn"])
        .arg("--data-dir")
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chord-node");
    let answered = wait_until(Duration::from_secs(20), || {
        json(7611, "GET", "/metrics", None).is_some_and(|(_, m)| m["node"] == "127.0.0.1:7611")
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&data);
    assert!(
        answered,
        "chord-node --host localhost did not serve 127.0.0.1:7611"
    );

    // A host that does not resolve is one clear line on stderr, no panic, no backtrace.
    let output = Command::new(bin_dir().join("chord-node"))
        .args(["--host", "no such host!", "--port", "7612", "--in-memory"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run chord-node");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("chord-node: error: bad --host \"no such host!\""),
        "{stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

/// Three peers over WebRTC: `/g_start_query` names every holder by its `host:port` and counts
/// every query message of the flood tree, not only the origin's.
#[test]
fn flood_reports_holders_and_the_whole_tree() {
    if !lab::netns::enter_private_netns("flood_reports_holders_and_the_whole_tree") {
        return;
    }
    let ports = [7621u16, 7622, 7623];
    let ids = [0x2000_0000u32, 0x6000_0000, 0xa000_0000];
    let (peers, ring) = lab::live::start_peers(&ports, &ids);
    assert!(
        wait_until(Duration::from_secs(60), || {
            lab::live::ring_converged(&ring)
        }),
        "no ring of 3: {}",
        peers.iter().map(Proc::log).collect::<String>()
    );
    // k = 3 replicas on a ring of 3: every peer holds the key once the put is acknowledged
    // (W = 2) and replicated.
    let (status, put) = json(
        ports[1],
        "POST",
        "/put",
        Some(r#"{"key": "flooded", "value": {"n": 1}}"#),
    )
    .expect("put");
    assert_eq!((status, &put["ok"]), (200, &json!(true)), "{put}");
    let held_everywhere = || {
        ports.iter().all(|port| {
            json(*port, "GET", "/metrics", None)
                .is_some_and(|(_, m)| m["raw"]["kv"]["keys_stored"].as_u64() == Some(1))
        })
    };
    assert!(wait_until(Duration::from_secs(20), held_everywhere));
    let sent = || -> u64 {
        ports
            .iter()
            .map(|port| {
                json(*port, "GET", "/metrics", None).expect("metrics").1["raw"]["gnutella"]
                    ["query_messages_sent"]
                    .as_u64()
                    .expect("query_messages_sent")
            })
            .sum()
    };
    let before = sent();
    let (status, flood) = json(
        ports[0],
        "POST",
        "/g_start_query",
        Some(r#"{"key": "flooded", "ttl": 3}"#),
    )
    .expect("flood");
    assert_eq!(status, 200, "{flood}");
    let mut addrs: Vec<&str> = flood["matches"]
        .as_array()
        .expect("matches")
        .iter()
        .map(|m| m["addr"].as_str().expect("addr"))
        .collect();
    addrs.sort_unstable();
    assert_eq!(
        addrs,
        ["127.0.0.1:7621", "127.0.0.1:7622", "127.0.0.1:7623"],
        "{flood}"
    );
    let forwarded = flood["stats"]["forwarded"].as_u64().expect("forwarded");
    assert_eq!(forwarded, sent() - before, "{flood}");
    assert!(
        forwarded > flood["stats"]["neighbors_asked"].as_u64().unwrap(),
        "{flood}"
    );
}

//! `GET /watch?key=K` (Server-Sent Events, `node_core::watch`) over real `chord-node` processes
//! and real WebRTC links, inside a private network namespace: a client streaming from one
//! peer gets a `data:` event for each put of `K` made through the other peers, in increasing
//! timestamp order, with the shape `{key, value, ts, writer_id, deleted}`; a delete comes as
//! `deleted: true`; the subscription ends with the connection (the watching peer's core
//! stops watching). Prints the delay from a put's acknowledgement to its event (p50, p99).

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lab::live::{Proc, json, ring_converged, wait_until};
use serde_json::{Value, json};

const SIGNALING: u16 = 7780;
const IDS: [u32; 5] = [
    0x1000_0000,
    0x4000_0000,
    0x7000_0000,
    0xa000_0000,
    0xd000_0000,
];
const KEY: &str = "watched-k";

/// Opens `GET /watch?key=K` on `port`; every `data:` line arrives on the channel with its
/// arrival time.
fn stream(port: u16, key: &str) -> (TcpStream, mpsc::Receiver<(Instant, Value)>) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        conn,
        "GET /watch?key={key} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("request");
    let reader = BufReader::new(conn.try_clone().expect("clone"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if let Some(data) = line.strip_prefix("data:") {
                let value: Value = serde_json::from_str(data.trim()).expect("JSON data line");
                if tx.send((Instant::now(), value)).is_err() {
                    return;
                }
            }
        }
    });
    (conn, rx)
}

fn watching(port: u16) -> u64 {
    json(port, "GET", "/metrics", None)
        .and_then(|(_, m)| m["raw"]["kv"]["watching"].as_u64())
        .unwrap_or(u64::MAX)
}

#[test]
fn sse_watch_sees_other_peers_puts() {
    if !lab::netns::enter_private_netns("sse_watch_sees_other_peers_puts") {
        return;
    }
    let _signaling = Proc::signaling(SIGNALING);
    let mut peers = Vec::new();
    for (i, id) in IDS.iter().enumerate() {
        let port = SIGNALING + 1 + i as u16;
        peers.push((Proc::peer(port, *id, Some(SIGNALING)), port, *id));
        std::thread::sleep(Duration::from_millis(300));
    }
    let live: Vec<(u16, u32)> = peers.iter().map(|(_, port, id)| (*port, *id)).collect();
    assert!(
        wait_until(Duration::from_secs(60), || ring_converged(&live)),
        "the ring of {} peers did not converge",
        IDS.len()
    );
    let watcher = live[0].0;

    // Errors before the stream are JSON, like the other routes.
    let (status, err) = json(watcher, "GET", "/watch", None).expect("an answer");
    assert_eq!((status, &err["error"]["code"]), (400, &json!("bad_input")));

    let (conn, events) = stream(watcher, KEY);
    std::thread::sleep(Duration::from_millis(500));
    let mut delays = Vec::new();
    let mut from_request = Vec::new();
    let mut early = 0;
    let mut last_ts = 0;
    for i in 0..40 {
        let (port, _) = live[1 + i % (live.len() - 1)];
        let value = json!({"n": i, "via": port});
        let sent = Instant::now();
        let (status, put) = json(
            port,
            "POST",
            "/put",
            Some(&json!({"key": KEY, "value": value, "writer_id": format!("w{port}")}).to_string()),
        )
        .expect("a put answer");
        assert_eq!(status, 200, "{put}");
        let acked = Instant::now();
        let ts = put["ts"].as_u64().expect("ts");
        // The event may come before the acknowledgement (a member notifies when it applies
        // the write): anything queued counts from the acknowledgement, as 0.
        let event = loop {
            let (at, event) = events
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no event for put {i} (ts {ts}) via {port}"));
            let event_ts = event["ts"].as_u64().expect("ts");
            assert!(
                event_ts > last_ts,
                "out of order: {event} after ts {last_ts}"
            );
            last_ts = event_ts;
            if event_ts == ts {
                delays.push(at.saturating_duration_since(acked));
                from_request.push(at.saturating_duration_since(sent));
                early += usize::from(at < acked);
                break event;
            }
            assert!(
                event_ts < ts,
                "an event newer than the put that was just acked: {event}"
            );
        };
        assert_eq!(
            event,
            json!({"key": KEY, "value": value, "ts": ts, "writer_id": format!("w{port}"), "deleted": false})
        );
    }
    let (_, deleted) = json(
        live[2].0,
        "POST",
        "/delete",
        Some(&json!({"key": KEY, "writer_id": "eraser"}).to_string()),
    )
    .expect("a delete answer");
    let ts = deleted["ts"].as_u64().expect("ts");
    let (_, event) = events
        .recv_timeout(Duration::from_secs(20))
        .expect("an event for the delete");
    assert_eq!(
        event,
        json!({"key": KEY, "value": null, "ts": ts, "writer_id": "eraser", "deleted": true})
    );

    // The subscription ends with the connection.
    assert_eq!(watching(watcher), 1);
    // (The reader thread holds a clone of the socket: shut it down, not just drop one handle.)
    conn.shutdown(std::net::Shutdown::Both).expect("shutdown");
    assert!(
        wait_until(Duration::from_secs(20), || {
            // A put makes the driver notice a client that is gone, if the drop did not.
            let _ = json(
                live[1].0,
                "POST",
                "/put",
                Some(&json!({"key": KEY, "value": "after"}).to_string()),
            );
            watching(watcher) == 0
        }),
        "the peer still watches after the client disconnected"
    );

    let pct = |d: &mut Vec<Duration>, p: f64| {
        d.sort_unstable();
        d[((d.len() - 1) as f64 * p).round() as usize]
    };
    println!(
        "watch latency, {} native peers, {} puts ({early} events before the acknowledgement): \
         acknowledgement to SSE event p50 {:?} p99 {:?}; put request to SSE event p50 {:?} p99 {:?}",
        IDS.len(),
        delays.len(),
        pct(&mut delays, 0.5),
        pct(&mut delays, 0.99),
        pct(&mut from_request, 0.5),
        pct(&mut from_request, 0.99),
    );
}

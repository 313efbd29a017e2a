//! Signaling server + 8 native peers over real WebRTC on loopback, inside a private network
//! namespace: the ring converges, 200 puts read back through other peers, a killed peer loses
//! no acknowledged key and the ring repairs, the introducer dies and the ring keeps working
//! (new links negotiated through the ring), and bad input gets 4xx JSON errors.

use std::time::Duration;

use e2e::{Proc, get_value, http, json, put_value, ring_converged, wait_until};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;

const SIGNALING: u16 = 7400;
const IDS: [u32; 8] = [
    0x1000_0000,
    0x3000_0000,
    0x5000_0000,
    0x7000_0000,
    0x9000_0000,
    0xb000_0000,
    0xd000_0000,
    0xf000_0000,
];

fn overlay_links(port: u16) -> u64 {
    json(port, "GET", "/metrics", None)
        .and_then(|(_, v)| v["driver"]["overlay_links"].as_u64())
        .unwrap_or(0)
}

#[test]
fn native_ring_over_webrtc() {
    if !lab::netns::enter_private_netns("native_ring_over_webrtc") {
        return;
    }
    let mut signaling = Proc::signaling(SIGNALING);
    assert!(wait_until(Duration::from_secs(10), || http(
        SIGNALING, "GET", "/healthz", None
    )
    .is_some()));
    let mut peers: Vec<(Proc, u32)> = Vec::new();
    for (i, id) in IDS.iter().enumerate() {
        let port = 7401 + i as u16;
        peers.push((Proc::peer(port, *id, Some(SIGNALING)), *id));
        std::thread::sleep(Duration::from_millis(300));
    }
    let live = |peers: &[(Proc, u32)]| -> Vec<(u16, u32)> {
        peers.iter().map(|(p, id)| (p.port, *id)).collect()
    };
    assert!(
        wait_until(Duration::from_secs(60), || ring_converged(&live(&peers))),
        "the ring of 8 native peers did not converge"
    );

    // 200 puts through random peers, read back through other peers.
    for k in 0..200 {
        let port = 7401 + (k * 7 % 8) as u16;
        assert!(
            put_value(port, &format!("key-{k}"), &format!("value-{k}")),
            "put key-{k} via {port}"
        );
    }
    for k in 0..200 {
        let port = 7401 + ((k * 7 + 3) % 8) as u16;
        assert_eq!(
            get_value(port, &format!("key-{k}")).as_deref(),
            Some(format!("value-{k}").as_str()),
            "get key-{k} via {port}"
        );
    }

    // The introducer dies: the ring keeps serving and repairing on its own.
    signaling.kill();

    // One peer is killed (-9): every acknowledged key is still readable, the ring repairs, and
    // the new successor links are negotiated through the ring.
    let (mut victim, victim_id) = peers.remove(3);
    let before: u64 = peers.iter().map(|(p, _)| overlay_links(p.port)).sum();
    victim.kill();
    assert!(
        wait_until(Duration::from_secs(60), || ring_converged(&live(&peers))),
        "the ring did not repair after {victim_id:08x} was killed"
    );
    for k in 0..200 {
        let port = peers[k % peers.len()].0.port;
        assert_eq!(
            get_value(port, &format!("key-{k}")).as_deref(),
            Some(format!("value-{k}").as_str()),
            "after the kill: key-{k} via {port}"
        );
    }
    for k in 200..240 {
        let port = peers[k % peers.len()].0.port;
        assert!(
            put_value(port, &format!("key-{k}"), "late"),
            "put after the introducer died"
        );
        assert_eq!(
            get_value(peers[(k + 1) % peers.len()].0.port, &format!("key-{k}")).as_deref(),
            Some("late")
        );
    }
    // A newcomer joins through a native peer (the signaling server is gone): the links the
    // ring makes to it afterwards (its predecessor's successor link, fingers) are negotiated
    // through the ring.
    let newcomer_id = 0x2000_0000;
    peers.push((
        Proc::peer(7420, newcomer_id, Some(peers[0].0.port)),
        newcomer_id,
    ));
    assert!(
        wait_until(Duration::from_secs(60), || ring_converged(&live(&peers))),
        "the newcomer did not join without the signaling server"
    );
    assert_eq!(get_value(7420, "key-5").as_deref(), Some("value-5"));
    let after: u64 = peers[..peers.len() - 1]
        .iter()
        .map(|(p, _)| overlay_links(p.port))
        .sum();
    assert!(
        after > before,
        "no link was negotiated through the ring ({before} -> {after})"
    );

    // Bad input: 4xx with a JSON error body, and the peer stays up.
    let port = peers[0].0.port;
    let cases: [(&str, &str, Option<String>, u16); 5] = [
        ("POST", "/put", Some("{not json".to_string()), 400),
        ("POST", "/put", Some(r#"{"value":"x"}"#.to_string()), 400),
        ("POST", "/get", Some(r#"{"key":1}"#.to_string()), 400),
        (
            "POST",
            "/put",
            Some(format!(
                r#"{{"key":"big","value":"{}"}}"#,
                "x".repeat(60_000)
            )),
            413,
        ),
        ("GET", "/nothing-here", None, 404),
    ];
    for (method, path, body, status) in cases {
        let (got, text) = http(port, method, path, body.as_deref()).expect("peer answers");
        assert_eq!(got, status, "{method} {path}: {text}");
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON error body: {text}"));
        assert!(v["error"]["code"].is_string(), "{text}");
    }
    assert!(peers[0].0.is_running());
    assert_eq!(get_value(port, "key-1").as_deref(), Some("value-1"));

    // Malformed signaling frames on a peer's own introducer: error frames, session stays up.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws"))
            .await
            .expect("introducer");
        ws.send(tokio_tungstenite::tungstenite::Message::text("{oops"))
            .await
            .unwrap();
        let reply = ws.next().await.expect("a frame").expect("ok");
        let v: Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
        assert_eq!(v["type"], "error", "{v}");
        ws.send(tokio_tungstenite::tungstenite::Message::text(
            r#"{"type":"hello","peer":"0badc0de"}"#,
        ))
        .await
        .unwrap();
        let reply = ws.next().await.expect("a frame").expect("ok");
        let v: Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
        assert_eq!(v["type"], "welcome", "{v}");
    });
    assert!(peers[0].0.is_running());
}

//! `hello` -> `welcome`: who is listed, and who is not.
#![cfg(feature = "server")]

mod common;

use common::{Server, config};
use signaling::SignalingConfig;

#[tokio::test]
async fn welcome_lists_the_other_live_peers() {
    let server = Server::start(config()).await;
    let mut a = server.connect().await;
    assert_eq!(a.hello("0000000a").await, Vec::<String>::new());
    let mut b = server.connect().await;
    assert_eq!(b.hello("0000000b").await, ["0000000a"]);
    let mut c = server.connect().await;
    assert_eq!(c.hello("0000000c").await, ["0000000a", "0000000b"]);
}

#[tokio::test]
async fn welcome_is_capped_and_random() {
    let server = Server::start(SignalingConfig {
        welcome_peers: 2,
        ..config()
    })
    .await;
    let mut clients = Vec::new();
    for i in 0..6 {
        let mut client = server.connect().await;
        client.hello(&format!("{i:08x}")).await;
        clients.push(client);
    }
    let mut seen = std::collections::BTreeSet::new();
    for round in 0..20 {
        let mut newcomer = server.connect().await;
        let me = format!("{:08x}", 0x100 + round);
        let peers = newcomer.hello(&me).await;
        assert_eq!(peers.len(), 2, "{peers:?}");
        assert!(peers[0] < peers[1], "sorted and distinct: {peers:?}");
        for peer in &peers {
            assert!(
                peer.as_str() < "00000006",
                "only the six long-lived peers: {peers:?}"
            );
        }
        seen.extend(peers);
        newcomer.close().await;
        server
            .wait_for("the newcomer to leave", |s| s.peers_now == 6)
            .await;
    }
    // 20 draws of 2 out of 6: missing any given peer has probability (4/6 * 3/5)^20 ~ 1e-8.
    assert_eq!(seen.len(), 6, "every peer is eventually picked: {seen:?}");
}

#[tokio::test]
async fn a_disconnected_peer_disappears_from_later_welcomes() {
    let server = Server::start(config()).await;
    let mut a = server.connect().await;
    a.hello("0000000a").await;
    let mut b = server.connect().await;
    assert_eq!(b.hello("0000000b").await, ["0000000a"]);

    a.close().await;
    server
        .wait_for("a to be removed", |s| s.peers_now == 1)
        .await;
    server
        .wait_for("a's session to end", |s| s.sessions_now == 1)
        .await;

    let mut c = server.connect().await;
    assert_eq!(c.hello("0000000c").await, ["0000000b"]);
    // Its id is free again.
    let mut a_again = server.connect().await;
    assert_eq!(a_again.hello("0000000a").await, ["0000000b", "0000000c"]);
}

#[tokio::test]
async fn healthz_reports_sessions() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let server = Server::start(config()).await;
    let mut a = server.connect().await;
    a.hello("0000000a").await;

    let mut http = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // The Host a client dialing the address sends (a made-up name is refused: access.rs).
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        server.addr
    );
    http.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(common::WAIT, http.read_to_string(&mut response))
        .await
        .expect("healthz timed out")
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("application/json"), "{response}");
    let body = response.split("\r\n\r\n").nth(1).unwrap();
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"status": "ok", "sessions_now": 1, "peers_now": 1})
    );
}

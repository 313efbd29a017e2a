//! `Host` and `Origin` checks on `/ws` and `/healthz` (signaling/src/access.rs): DNS rebinding
//! and cross-site pages are refused before any upgrade, with a JSON 403, and counted.
#![cfg(feature = "server")]

mod common;

use common::{Server, config};
use serde_json::Value;
use signaling::{AccessPolicy, ErrorCode, SignalingConfig};

#[tokio::test]
async fn ws_refuses_a_foreign_host() {
    let server = Server::start(config()).await;
    let refused = server
        .connect_with(&[("host", "evil.example")])
        .await
        .err()
        .expect("Host evil.example was upgraded");
    assert_eq!(refused.0, 403, "{refused:?}");
    assert_eq!(refused.1["error"]["code"], "bad_host", "{refused:?}");
    assert!(refused.1["error"]["message"].is_string(), "{refused:?}");
    let stats = server.state.stats();
    assert_eq!(stats.errors[&ErrorCode::BadHost], 1);
    assert_eq!(stats.sessions_total, 0);

    // The same name with a port, and a name that only starts like an address.
    for host in ["evil.example:1234", "127.0.0.1.evil.example"] {
        let (status, _) = server.connect_with(&[("host", host)]).await.err().unwrap();
        assert_eq!(status, 403, "{host}");
    }
    // IP literals and localhost are served.
    for host in ["127.0.0.1", "localhost:9", "[::1]:80"] {
        let mut client = server
            .connect_with(&[("host", host)])
            .await
            .unwrap_or_else(|e| panic!("Host {host} refused: {e:?}"));
        client.hello(&format!("{:08x}", host.len())).await;
    }
}

#[tokio::test]
async fn ws_accepts_allowed_host_names() {
    let server = Server::start(SignalingConfig {
        access: AccessPolicy {
            allowed_hosts: vec!["intro.example".into()],
            ..AccessPolicy::default()
        },
        ..config()
    })
    .await;
    let mut client = server
        .connect_with(&[("host", "intro.example:443")])
        .await
        .expect("an --allow-host name was refused");
    client.hello("0000000a").await;
    assert!(
        server
            .connect_with(&[("host", "other.example")])
            .await
            .is_err()
    );
}

#[tokio::test]
async fn ws_refuses_a_foreign_origin() {
    let server = Server::start(config()).await;
    let own = format!("127.0.0.1:{}", server.addr.port());
    let refused = server
        .connect_with(&[("host", &own), ("origin", "https://evil.example")])
        .await
        .err()
        .expect("a page of evil.example was upgraded");
    assert_eq!(refused.0, 403, "{refused:?}");
    assert_eq!(refused.1["error"]["code"], "bad_origin", "{refused:?}");
    assert_eq!(server.state.stats().errors[&ErrorCode::BadOrigin], 1);
    // A file: page says "null".
    assert!(server.connect_with(&[("origin", "null")]).await.is_err());
    assert_eq!(server.state.stats().sessions_total, 0);
}

#[tokio::test]
async fn ws_accepts_own_loopback_and_listed_origins() {
    let server = Server::start(SignalingConfig {
        access: AccessPolicy {
            allowed_origins: vec!["https://app.example".into()],
            ..AccessPolicy::default()
        },
        ..config()
    })
    .await;
    let port = server.addr.port();
    let own_host = format!("127.0.0.1:{port}");
    let own_origin = format!("http://127.0.0.1:{port}");
    let cases = [
        // The page this server served (`cargo xtask demo`, the browser tests).
        (own_host.as_str(), own_origin.as_str()),
        // Another page on this machine.
        (own_host.as_str(), "http://localhost:3000"),
        (own_host.as_str(), "https://app.example"),
    ];
    for (i, (host, origin)) in cases.into_iter().enumerate() {
        let mut client = server
            .connect_with(&[("host", host), ("origin", origin)])
            .await
            .unwrap_or_else(|e| panic!("origin {origin} refused: {e:?}"));
        client.hello(&format!("{i:08x}")).await;
    }
    // No Origin at all (native peers, curl): served.
    let mut native = server.connect().await;
    native.hello("000000ff").await;
}

#[tokio::test]
async fn healthz_checks_host_and_origin_too() {
    let server = Server::start(config()).await;
    let own = format!("127.0.0.1:{}", server.addr.port());
    let (status, body) = server.get("/healthz", &[("Host", &own)]).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.get("/healthz", &[("Host", "evil.example")]).await;
    assert_eq!(status, 403, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON error body");
    assert_eq!(body["error"]["code"], "bad_host", "{body}");
    let (status, body) = server
        .get(
            "/healthz",
            &[("Host", &own), ("Origin", "http://evil.example")],
        )
        .await;
    assert_eq!(status, 403, "{body}");
}

//! Session and rate limits.
#![cfg(feature = "server")]

mod common;

use common::{Event, Server, config};
use signaling::{ErrorCode, SignalingConfig};

#[tokio::test]
async fn sessions_over_the_limit_are_refused_and_closed() {
    let server = Server::start(SignalingConfig {
        max_sessions: 2,
        ..config()
    })
    .await;
    let mut a = server.connect().await;
    a.hello("0000000a").await;
    let mut b = server.connect().await;
    b.hello("0000000b").await;

    // Both sessions said hello, so neither can be evicted for the newcomer.
    let mut c = server.connect().await;
    c.expect_error("too_many_sessions").await;
    match c.next_event().await {
        Event::Closed(_) => {}
        Event::Frame(frame) => panic!("expected the refused session to close, got {frame}"),
    }
    let stats = server.state.stats();
    assert_eq!(stats.errors[&ErrorCode::TooManySessions], 1);
    assert_eq!(stats.sessions_now, 2);
    assert_eq!(stats.sessions_total, 2);

    // A slot frees up when a session ends.
    b.close().await;
    server
        .wait_for("b's session to end", |s| s.sessions_now == 1)
        .await;
    let mut d = server.connect().await;
    assert_eq!(d.hello("0000000d").await, ["0000000a"]);
}

#[tokio::test]
async fn a_full_introducer_evicts_the_oldest_session_without_hello() {
    let server = Server::start(SignalingConfig {
        max_sessions: 3,
        ..config()
    })
    .await;
    let mut a = server.connect().await;
    a.hello("0000000a").await;
    let mut silent_old = server.connect().await;
    let mut silent_new = server.connect().await;

    // Full: the newcomer takes the place of the oldest session that has not said hello.
    let mut newcomer = server.connect().await;
    assert_eq!(newcomer.hello("0000000c").await, ["0000000a"]);
    silent_old.expect_error("too_many_sessions").await;
    assert!(matches!(silent_old.next_event().await, Event::Closed(_)));
    // The younger silent session is still there and may still say hello.
    assert_eq!(silent_new.hello("0000000b").await, ["0000000a", "0000000c"]);
    let stats = server.state.stats();
    assert_eq!(stats.evicted, 1);
    assert_eq!(stats.sessions_now, 3);

    // Now everyone said hello: the next one is refused.
    let mut refused = server.connect().await;
    refused.expect_error("too_many_sessions").await;
}

#[tokio::test]
async fn sessions_per_address_are_capped() {
    let server = Server::start(SignalingConfig {
        max_sessions_per_addr: 2,
        // The test's clients all come from 127.0.0.1, which is exempt by default.
        cap_loopback: true,
        ..config()
    })
    .await;
    let mut a = server.connect().await;
    a.hello("0000000a").await;
    let mut b = server.connect().await;
    b.hello("0000000b").await;
    let mut c = server.connect().await;
    c.expect_error("too_many_from_address").await;
    assert!(matches!(c.next_event().await, Event::Closed(_)));
    let stats = server.state.stats();
    assert_eq!(stats.errors[&ErrorCode::TooManyFromAddress], 1);
    assert_eq!(stats.sessions_now, 2);

    // A silent session from the address makes room for the next one from it.
    b.close().await;
    server
        .wait_for("b's session to end", |s| s.sessions_now == 1)
        .await;
    let mut silent = server.connect().await;
    let mut d = server.connect().await;
    assert_eq!(d.hello("0000000d").await, ["0000000a"]);
    silent.expect_error("too_many_sessions").await;
    assert_eq!(server.state.stats().evicted, 1);
}

#[tokio::test]
async fn loopback_is_exempt_from_the_address_cap_by_default() {
    let server = Server::start(SignalingConfig {
        max_sessions_per_addr: 2,
        ..config()
    })
    .await;
    let mut clients = Vec::new();
    for i in 0..5 {
        let mut client = server.connect().await;
        client.hello(&format!("{i:08x}")).await;
        clients.push(client);
    }
    assert_eq!(server.state.stats().peers_now, 5);
}

#[tokio::test]
async fn frames_over_the_rate_are_refused() {
    let server = Server::start(SignalingConfig {
        max_msgs_per_sec: 1,
        rate_burst: 3,
        ..config()
    })
    .await;
    let mut a = server.connect().await;
    a.hello("0000000a").await; // takes one token of three

    // Refill is one token a second, so ten frames sent back to back cannot all pass unless
    // sending them took over seven seconds.
    for _ in 0..10 {
        a.send_text("{").await;
    }
    let mut codes = Vec::new();
    for _ in 0..10 {
        let frame = a.recv().await;
        assert_eq!(frame["type"], "error", "{frame}");
        codes.push(frame["code"].as_str().unwrap().to_owned());
    }
    assert_eq!(codes[..2], ["bad_json", "bad_json"], "{codes:?}");
    assert!(codes.iter().any(|c| c == "rate_limited"), "{codes:?}");
    assert!(
        codes.iter().all(|c| c == "bad_json" || c == "rate_limited"),
        "{codes:?}"
    );
    assert!(server.state.stats().errors[&ErrorCode::RateLimited] >= 1);
}

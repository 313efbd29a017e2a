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
    let b = server.connect().await; // counts without a hello

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

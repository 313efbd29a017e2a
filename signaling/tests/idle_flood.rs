//! Issue 11's must-show: 2,000 idle WebSockets to an introducer do not stop a new peer from
//! joining through it within 10 s. With the default limits (1024 sessions, 5 s hello timeout,
//! loopback exempt from the per-address cap, as all sockets here come from 127.0.0.1): every
//! idle session is closed, evicted for a newer one or timed out, and the newcomer's `hello` is
//! answered by a `welcome` listing the peer already there.
#![cfg(feature = "server")]

mod common;

use std::time::{Duration, Instant};

use common::{Server, config};
use signaling::{ErrorCode, PeerId};

const IDLE: usize = 2000;
/// Sockets opened at once while flooding.
const OPENERS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_websockets_do_not_keep_a_new_peer_out() {
    let server = Server::start(config()).await;
    let url = format!("ws://{}/ws", server.addr);
    // A peer already in the ring, registered on the introducer like a native peer's own.
    let (_sender, _receiver) = server
        .state
        .local_session(PeerId::new(0x1111_1111))
        .expect("local session");

    let started = Instant::now();
    let mut openers = Vec::new();
    for _ in 0..OPENERS {
        let url = url.clone();
        openers.push(tokio::spawn(async move {
            let mut sockets = Vec::new();
            for _ in 0..IDLE / OPENERS {
                let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
                    .await
                    .expect("an idle socket's upgrade failed");
                sockets.push(ws);
            }
            sockets
        }));
    }
    let mut idle = Vec::new();
    for opener in openers {
        idle.extend(opener.await.unwrap());
    }
    assert_eq!(idle.len(), IDLE);
    eprintln!("{IDLE} idle WebSockets opened in {:?}", started.elapsed());
    let stats = server.state.stats();
    assert_eq!(stats.sessions_now, 1024, "{stats:?}");

    // The newcomer connects and says hello while the idle sockets are still open.
    let joining = Instant::now();
    let mut newcomer = server.connect().await;
    let welcome = newcomer.hello("22222222").await;
    let took = joining.elapsed();
    eprintln!("new peer welcomed {took:?} after connecting, beside {IDLE} idle sockets");
    assert_eq!(welcome, ["11111111"]);
    assert!(took < Duration::from_secs(10), "the newcomer took {took:?}");

    // Every idle session ends without anyone closing it: evicted for a newer session, or timed
    // out for want of a hello.
    server
        .wait_for("the idle sessions to be closed", |s| s.sessions_now == 1)
        .await;
    let stats = server.state.stats();
    assert_eq!(
        stats.evicted + stats.errors[&ErrorCode::HelloTimeout],
        IDLE as u64,
        "{stats:?}"
    );
    assert!(stats.errors[&ErrorCode::HelloTimeout] >= 1, "{stats:?}");
    assert_eq!(stats.peers_now, 2, "{stats:?}");
    drop(idle);
}

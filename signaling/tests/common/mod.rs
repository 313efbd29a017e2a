//! Test harness: a real introducer on 127.0.0.1:0 and real WebSocket clients. Every wait is
//! bounded by [`WAIT`], so a broken server fails a test instead of hanging it.
#![allow(dead_code)] // each test file uses a different part of the harness

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use signaling::{SignalingConfig, SignalingState, router};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Longest any single step may take before the test fails.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) state: SignalingState,
}

impl Server {
    pub(crate) async fn start(config: SignalingConfig) -> Self {
        let state = SignalingState::new(config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(state.clone());
        // Ends with the test's runtime.
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, state }
    }

    pub(crate) async fn connect(&self) -> Client {
        let url = format!("ws://{}/ws", self.addr);
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect timed out")
            .expect("connect failed");
        Client { ws }
    }

    /// Waits until `done(stats)` holds (the server updates its registry asynchronously).
    pub(crate) async fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&signaling::SignalingStats) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let stats = self.state.stats();
            if done(&stats) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {stats:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

pub(crate) struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What a client saw next.
#[derive(Debug)]
pub(crate) enum Event {
    Frame(Value),
    /// A close frame, or the stream ended.
    Closed(Option<u16>),
}

impl From<WebSocketStream<MaybeTlsStream<TcpStream>>> for Client {
    fn from(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Self {
        Self { ws }
    }
}

impl Client {
    pub(crate) async fn send_text(&mut self, text: impl Into<String>) {
        let text: String = text.into();
        tokio::time::timeout(WAIT, self.ws.send(Message::text(text)))
            .await
            .expect("send timed out")
            .expect("send failed");
    }

    pub(crate) async fn send_json(&mut self, value: Value) {
        self.send_text(value.to_string()).await;
    }

    /// The next text frame as JSON, or the close.
    pub(crate) async fn next_event(&mut self) -> Event {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("no frame from the server in time");
            match next {
                Some(Ok(Message::Text(text))) => {
                    return Event::Frame(
                        serde_json::from_str(text.as_str()).expect("server sent bad JSON"),
                    );
                }
                Some(Ok(Message::Close(frame))) => {
                    return Event::Closed(frame.map(|f| f.code.into()));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => panic!("unexpected frame {other:?}"),
                Some(Err(_)) | None => return Event::Closed(None),
            }
        }
    }

    pub(crate) async fn recv(&mut self) -> Value {
        match self.next_event().await {
            Event::Frame(value) => value,
            Event::Closed(code) => {
                panic!("connection closed ({code:?}) while a frame was expected")
            }
        }
    }

    /// Says hello as `peer` and returns the welcome's peer list.
    pub(crate) async fn hello(&mut self, peer: &str) -> Vec<String> {
        self.send_json(json!({"type": "hello", "peer": peer})).await;
        let welcome = self.recv().await;
        assert_eq!(
            welcome["type"], "welcome",
            "expected a welcome, got {welcome}"
        );
        welcome["peers"]
            .as_array()
            .expect("welcome.peers is an array")
            .iter()
            .map(|p| p.as_str().expect("peer ids are strings").to_owned())
            .collect()
    }

    pub(crate) async fn signal(&mut self, to: &str, payload: &str) {
        self.send_json(json!({"type": "signal", "to": to, "payload": payload}))
            .await;
    }

    /// Receives the next frame and checks it is `error` with `code`; returns the frame.
    pub(crate) async fn expect_error(&mut self, code: &str) -> Value {
        let frame = self.recv().await;
        assert_eq!(frame["type"], "error", "expected error {code}, got {frame}");
        assert_eq!(frame["code"], code, "expected error {code}, got {frame}");
        assert!(
            frame["reason"].is_string(),
            "error without a reason: {frame}"
        );
        frame
    }

    pub(crate) async fn close(mut self) {
        let _ = tokio::time::timeout(WAIT, self.ws.close(None)).await;
    }
}

pub(crate) fn config() -> SignalingConfig {
    SignalingConfig::default()
}

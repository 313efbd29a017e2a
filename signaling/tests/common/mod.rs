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
        let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
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

    /// Opens `/ws` with extra request headers (`Host` replaces the URL's). A refused upgrade is
    /// `Err((status, body as JSON))`.
    pub(crate) async fn connect_with(
        &self,
        headers: &[(&'static str, &str)],
    ) -> Result<Client, (u16, Value)> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let mut request = format!("ws://{}/ws", self.addr)
            .into_client_request()
            .unwrap();
        for (name, value) in headers {
            request
                .headers_mut()
                .insert(*name, value.parse().expect("header value"));
        }
        let connected = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("connect timed out");
        match connected {
            Ok((ws, _)) => Ok(Client { ws }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response.body().clone().unwrap_or_default();
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                Err((status, body))
            }
            Err(other) => panic!("connect failed: {other}"),
        }
    }

    /// A plain HTTP/1.1 `GET path` with the given headers (no `Host` unless given); the status
    /// and body.
    pub(crate) async fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        let mut request = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
            .await
            .expect("no HTTP answer in time")
            .unwrap();
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
        let body = response
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
            .to_owned();
        (status, body)
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

    /// Whether the server closed the session, without waiting for more than `within`.
    /// Only polling the socket answers the server's pings, so a client that calls nothing
    /// looks dead to it.
    pub(crate) async fn closed_within(&mut self, within: Duration) -> Option<Event> {
        tokio::time::timeout(within, async {
            loop {
                if let Event::Closed(code) = self.next_event().await {
                    return Event::Closed(code);
                }
            }
        })
        .await
        .ok()
    }

    pub(crate) async fn close(mut self) {
        let _ = tokio::time::timeout(WAIT, self.ws.close(None)).await;
    }
}

pub(crate) fn config() -> SignalingConfig {
    SignalingConfig::default()
}

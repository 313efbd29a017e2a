//! The `signaling` binary: listens, serves `--static-dir`, and stops cleanly on Ctrl-C.
#![cfg(feature = "bin")]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{Client, Event, WAIT};

/// The binary, killed by its own process id if the test ends early.
struct Introducer {
    child: Child,
    addr: String,
    stderr: mpsc::Receiver<String>,
}

impl Introducer {
    fn start(static_dir: &std::path::Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_signaling"))
            .args(["--host", "127.0.0.1", "--port", "0", "--static-dir"])
            .arg(static_dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the signaling binary");
        let (lines_tx, stderr) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        let mut introducer = Self {
            child,
            addr: String::new(),
            stderr,
        };
        let line = introducer.wait_for_log("listening on http://");
        let rest =
            &line[line.find("listening on http://").unwrap() + "listening on http://".len()..];
        introducer.addr = rest.split_whitespace().next().unwrap().to_owned();
        introducer
    }

    fn wait_for_log(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("the binary never logged {needle:?}"),
            }
        }
    }

    fn interrupt(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the binary did not stop on ctrl-c"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Introducer {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn http_get(addr: &str, path: &str) -> String {
    http_get_as(addr, path, addr).await
}

/// `GET path` with `Host: host` (a browser sends the address it was given).
async fn http_get_as(addr: &str, path: &str, host: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .expect("HTTP response timed out")
        .unwrap();
    response
}

#[tokio::test]
async fn the_binary_serves_and_stops_on_ctrl_c() {
    let dir = std::env::temp_dir().join(format!("signaling-static-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<h1>chord-kv</h1>").unwrap();

    let mut introducer = Introducer::start(&dir);
    let page = http_get(&introducer.addr, "/").await;
    assert!(
        page.starts_with("HTTP/1.1 200") && page.ends_with("<h1>chord-kv</h1>"),
        "{page}"
    );
    let health = http_get(&introducer.addr, "/healthz").await;
    assert!(
        health.starts_with("HTTP/1.1 200") && health.contains(r#""status":"ok""#),
        "{health}"
    );
    assert!(
        http_get(&introducer.addr, "/missing")
            .await
            .starts_with("HTTP/1.1 404")
    );
    // DNS rebinding: the introducer's routes refuse a name it was not given with --allow-host.
    let rebound = http_get_as(&introducer.addr, "/healthz", "evil.example").await;
    assert!(
        rebound.starts_with("HTTP/1.1 403") && rebound.contains(r#""code":"bad_host""#),
        "{rebound}"
    );

    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", introducer.addr))
        .await
        .unwrap();
    let mut client = Client::from(ws);
    assert_eq!(client.hello("0000000a").await, Vec::<String>::new());
    introducer.wait_for_log("peer joined");

    introducer.interrupt();
    match client.next_event().await {
        Event::Closed(code) => assert_eq!(code, Some(1001), "going away"),
        Event::Frame(frame) => panic!("expected a close, got {frame}"),
    }
    assert!(introducer.wait_exit().success());
    std::fs::remove_dir_all(&dir).unwrap();
}

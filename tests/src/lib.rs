//! Helpers for the end-to-end tests: start real `chord-node` and `signaling` processes on
//! loopback, talk to their HTTP API with plain HTTP/1.1 over TCP, and clean up.
//!
//! The binaries are the ones `cargo test --workspace` builds next to the test executable.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The directory holding the workspace's binaries (`target/<profile>`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>
    exe.parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .to_path_buf()
}

/// A child process killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub port: u16,
    child: Option<Child>,
}

impl Proc {
    fn spawn(name: &str, program: &str, args: &[String], port: u16) -> Self {
        let path = bin_dir().join(program);
        assert!(
            path.exists(),
            "{} not built: run the tests with `cargo test --workspace`",
            path.display()
        );
        let log = std::fs::File::create(std::env::temp_dir().join(format!("e2e-{name}.log")))
            .expect("log file");
        let child = Command::new(&path)
            .args(args)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
        Self {
            name: name.to_string(),
            port,
            child: Some(child),
        }
    }

    /// `chord-node` on 127.0.0.1:`port` with ring id `id` (8 hex digits).
    pub fn peer(port: u16, id: u32, bootstrap: Option<u16>) -> Self {
        let mut args = vec![
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
            "--id".into(),
            format!("{id:08x}"),
            "--log".into(),
            "warn".into(),
        ];
        if let Some(b) = bootstrap {
            args.push("--bootstrap".into());
            args.push(format!("127.0.0.1:{b}"));
        }
        Self::spawn(&format!("peer-{port}"), "chord-node", &args, port)
    }

    /// The signaling introducer on 127.0.0.1:`port`.
    pub fn signaling(port: u16) -> Self {
        let args = vec![
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
        ];
        Self::spawn("signaling", "signaling", &args, port)
    }

    /// SIGKILL, like a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One HTTP/1.1 request on a fresh connection; returns (status, body).
pub fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .ok()?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    // Chunked bodies (axum streams JSON with a length, but be tolerant).
    Some((status, dechunk(&body)))
}

fn dechunk(body: &str) -> String {
    let trimmed = body.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') || trimmed.is_empty() {
        return body.to_string();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// `http` + JSON parse.
pub fn json(port: u16, method: &str, path: &str, body: Option<&str>) -> Option<(u16, Value)> {
    let (status, text) = http(port, method, path, body)?;
    Some((status, serde_json::from_str(&text).ok()?))
}

/// Polls `f` every 200 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    f()
}

/// Whether every peer's `/ring` successor is the next live id (and it is joined).
pub fn ring_converged(peers: &[(u16, u32)]) -> bool {
    let mut ids: Vec<u32> = peers.iter().map(|(_, id)| *id).collect();
    ids.sort_unstable();
    peers.iter().all(|(port, id)| {
        let i = ids.iter().position(|x| x == id).expect("listed");
        let expected = format!("{:08x}", ids[(i + 1) % ids.len()]);
        json(*port, "GET", "/ring", None).is_some_and(|(_, v)| {
            v["joined"] == Value::Bool(true) && v["successors"][0] == Value::String(expected)
        })
    })
}

//! Live rings of real processes: start `chord-node` and `signaling` on loopback, talk to their
//! HTTP API with plain HTTP/1.1 over TCP, and clean up. Used by the end-to-end tests (`tests/`)
//! and by `chord-experiment --mode scale|churn`.
//!
//! The binaries are looked up next to the running executable (`target/<profile>`, where
//! `cargo build`/`cargo test --workspace` put them), or in `CHORD_KV_BIN_DIR`.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use node_core::Time;
use node_core::sim::history::{Call, History, Op, Report, Ret, check};
use serde_json::Value;

/// The directory holding the workspace's binaries (`target/<profile>`), or `CHORD_KV_BIN_DIR`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CHORD_KV_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("executable dir");
    // Test executables live in target/<profile>/deps, examples in target/<profile>/examples,
    // binaries in target/<profile>.
    if dir.ends_with("deps") || dir.ends_with("examples") {
        dir.parent().expect("target dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
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
            "{} not built: `cargo build --workspace` (or run the tests with `cargo test --workspace`)",
            path.display()
        );
        let log = std::fs::File::create(log_path(name)).expect("log file");
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

    /// `chord-node` with exactly `args` (nothing added), its output in `e2e-<name>.log` in the
    /// temp dir.
    pub fn chord_node(name: &str, args: &[String], port: u16) -> Self {
        Self::spawn(name, "chord-node", args, port)
    }

    /// `chord-node` on 127.0.0.1:`port` with ring id `id` (8 hex digits).
    pub fn peer(port: u16, id: u32, bootstrap: Option<u16>) -> Self {
        Self::peer_with(port, id, bootstrap, &[])
    }

    /// [`Proc::peer`] with extra command-line arguments (e.g. `--udp-addr 127.0.0.1:0`). The
    /// peer keeps its store in memory (`--in-memory`) unless `extra` names a `--data-dir`, so
    /// tests never write into the user's data directory.
    pub fn peer_with(port: u16, id: u32, bootstrap: Option<u16>, extra: &[&str]) -> Self {
        let id = format!("{id:08x}");
        Self::peer_on(port, &["--id", &id], bootstrap, extra)
    }

    /// `chord-node --verify-ids` on 127.0.0.1:`port` (its id is its certificate's, read it
    /// from `/ring`), joining through `bootstrap`, with `extra` arguments; in memory unless
    /// `extra` names a `--data-dir`.
    pub fn verified_peer(port: u16, bootstrap: Option<u16>, extra: &[&str]) -> Self {
        Self::peer_on(port, &["--verify-ids"], bootstrap, extra)
    }

    /// `chord-node` on 127.0.0.1:`port` with `identity` (how it gets its id), `--log warn`
    /// unless `extra` sets a level, `--in-memory` unless `extra` names a `--data-dir`.
    fn peer_on(port: u16, identity: &[&str], bootstrap: Option<u16>, extra: &[&str]) -> Self {
        let port_text = port.to_string();
        let mut args: Vec<String> = ["--host", "127.0.0.1", "--port", &port_text]
            .iter()
            .chain(identity)
            .map(|a| (*a).to_string())
            .collect();
        if !extra.contains(&"--log") {
            args.push("--log".into());
            args.push("warn".into());
        }
        if let Some(b) = bootstrap {
            args.push("--bootstrap".into());
            args.push(format!("127.0.0.1:{b}"));
        }
        if !extra.contains(&"--data-dir") {
            args.push("--in-memory".into());
        }
        args.extend(extra.iter().map(|a| (*a).to_string()));
        Self::spawn(&format!("peer-{port}"), "chord-node", &args, port)
    }

    /// The signaling introducer on 127.0.0.1:`port`.
    pub fn signaling(port: u16) -> Self {
        Self::signaling_with(port, &[])
    }

    /// [`Proc::signaling`] with extra arguments (e.g. `--static-dir web`).
    pub fn signaling_with(port: u16, extra: &[&str]) -> Self {
        let mut args = vec![
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
        ];
        args.extend(extra.iter().map(|a| (*a).to_string()));
        Self::spawn("signaling", "signaling", &args, port)
    }

    /// SIGKILL, like a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (what `kill PID` and service managers send): the peer should leave gracefully.
    /// Uses the system's `kill` command (this crate forbids `unsafe`, so no libc call).
    pub fn terminate(&mut self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits for the process to exit on its own; its exit status, or `None` after `timeout`
    /// (the process is then left running).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(log_path(&self.name)).unwrap_or_default()
    }
}

/// Where the output of the process named `name` goes.
pub fn log_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("e2e-{name}.log"))
}

/// The ring id of a key (SHA-1 prefix), as the peers compute it.
pub fn key_id(key: &str) -> u32 {
    node_core::store::key_id(key)
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

/// One keep-alive HTTP/1.1 connection: every request reuses the socket (the client of a
/// serious user, and the way to measure what a request itself costs). Bodies must come with a
/// `Content-Length`, as the peers' JSON answers do.
#[derive(Debug)]
pub struct KeepAlive {
    reader: BufReader<TcpStream>,
}

impl KeepAlive {
    pub fn connect(port: u16) -> std::io::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        Ok(Self {
            reader: BufReader::new(stream),
        })
    }

    /// Sends one request and reads its whole answer: `(status, body)`.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        let body = body.unwrap_or("");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.reader.get_mut().write_all(request.as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no status line"))?;
        let mut length = None;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(bad("connection closed in the headers"));
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse::<usize>().ok();
            }
        }
        let mut answer = vec![0; length.ok_or_else(|| bad("no content-length"))?];
        self.reader.read_exact(&mut answer)?;
        Ok((status, String::from_utf8_lossy(&answer).into_owned()))
    }
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

/// One phase of `chord-experiment --mode scale`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScaleRow {
    pub phase: String,
    pub nodes: usize,
    pub clients: usize,
    pub ops: usize,
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Reads that returned the value written (gets only).
    pub correct_reads: usize,
    /// Reads that returned another value or nothing.
    pub wrong_reads: usize,
    /// Requests that failed (HTTP error or no answer).
    pub failed: usize,
    pub seconds: f64,
}

/// Starts one `chord-node` per `(port, id)` with default flags, the first one the introducer
/// of the others (300 ms apart); returns the processes and the `(port, id)` pairs that
/// [`ring_converged`] checks. Tests that need fixed ids and default WebRTC flags use this;
/// [`LiveRing`] picks ids from a seed and keeps WebRTC on loopback.
pub fn start_peers(ports: &[u16], ids: &[u32]) -> (Vec<Proc>, Vec<(u16, u32)>) {
    let mut peers = Vec::with_capacity(ports.len());
    for (i, (port, id)) in ports.iter().zip(ids).enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(300));
        }
        peers.push(Proc::peer(*port, *id, (i > 0).then_some(ports[0])));
    }
    let ring = ports.iter().copied().zip(ids.iter().copied()).collect();
    (peers, ring)
}

/// Ports of a live experiment ring: `base`, `base+1`, ...
#[derive(Debug)]
pub struct LiveRing {
    pub peers: Vec<(Proc, u32)>,
}

impl LiveRing {
    /// Starts `n` native peers on loopback (WebRTC bound to 127.0.0.1, so nothing leaves the
    /// machine), the first one the introducer of the others, and waits until the ring is right.
    pub fn start(n: usize, base_port: u16, seed: u64) -> Result<Self, String> {
        Self::start_with(n, base_port, seed, &|_| Vec::new())
    }

    /// [`LiveRing::start`] with extra `chord-node` arguments per peer (given its port), e.g. a
    /// `--data-dir` for a durable ring.
    pub fn start_with(
        n: usize,
        base_port: u16,
        seed: u64,
        extra: &dyn Fn(u16) -> Vec<String>,
    ) -> Result<Self, String> {
        let mut state = seed ^ 0x5CA1E;
        let mut peers: Vec<(Proc, u32)> = Vec::with_capacity(n);
        for i in 0..n {
            let id = node_core::rng::splitmix64(&mut state) as u32;
            let port = base_port + i as u16;
            let bootstrap = (i > 0).then_some(base_port);
            let mut args = vec!["--udp-addr".to_string(), "127.0.0.1:0".to_string()];
            args.extend(extra(port));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            peers.push((Proc::peer_with(port, id, bootstrap, &args), id));
            pace_start(i, port)?;
        }
        let ring = Self { peers };
        let ports = ring.ports();
        if !wait_until(Duration::from_secs(90), || ring_converged(&ports)) {
            return Err("the ring did not converge within 90 s".into());
        }
        Ok(ring)
    }

    /// [`LiveRing::start`] with every peer run with `--verify-ids` (in memory: a new
    /// certificate, so a new id, per peer), the ids read from each peer's `/ring`.
    pub fn start_verified(n: usize, base_port: u16) -> Result<Self, String> {
        let mut peers: Vec<(Proc, u32)> = Vec::with_capacity(n);
        for i in 0..n {
            let port = base_port + i as u16;
            let bootstrap = (i > 0).then_some(base_port);
            let proc = Proc::verified_peer(port, bootstrap, &["--udp-addr", "127.0.0.1:0"]);
            if !wait_until(Duration::from_secs(10), || {
                http(port, "GET", "/ring", None).is_some()
            }) {
                return Err(format!("peer on port {port} did not start"));
            }
            let id = json(port, "GET", "/ring", None)
                .and_then(|(_, v)| u32::from_str_radix(v["id"].as_str()?, 16).ok())
                .ok_or_else(|| format!("no id from the peer on port {port}"))?;
            peers.push((proc, id));
            if i > 0 {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let ring = Self { peers };
        let ports = ring.ports();
        if !wait_until(Duration::from_secs(90), || ring_converged(&ports)) {
            return Err("the ring did not converge within 90 s".into());
        }
        Ok(ring)
    }

    pub fn ports(&self) -> Vec<(u16, u32)> {
        self.peers.iter().map(|(p, id)| (p.port, *id)).collect()
    }
}

fn percentile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1_000.0
}

/// Paces the start of the `i`-th peer of a ring: the first (the bootstrap peer) must answer
/// HTTP within 10 s before others bootstrap through it; the others start 200 ms apart.
pub fn pace_start(i: usize, port: u16) -> Result<(), String> {
    if i == 0 {
        if !wait_until(Duration::from_secs(10), || {
            http(port, "GET", "/ring", None).is_some()
        }) {
            return Err(format!("peer on port {port} did not start"));
        }
    } else {
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// `POST /put` of `key` = `value` to the peer on `port`; true when acknowledged.
pub fn put_value(port: u16, key: &str, value: &str) -> bool {
    let body = serde_json::json!({"key": key, "value": value, "writer_id": "live"}).to_string();
    json(port, "POST", "/put", Some(&body)).is_some_and(|(s, v)| s == 200 && v["ok"] == true)
}

/// `POST /get` of `key` from the peer on `port`: the value when found.
pub fn get_value(port: u16, key: &str) -> Option<String> {
    get_request(port, key).flatten()
}

fn get_request(port: u16, key: &str) -> Option<Option<String>> {
    let body = format!(r#"{{"key":"{key}"}}"#);
    let (s, v) = json(port, "POST", "/get", Some(&body))?;
    (s == 200).then(|| v["value"].as_str().map(str::to_string))
}

/// The original harness's workload through one entry peer: `ops` sequential puts of distinct
/// keys, `ops` sequential gets of them (checked), then `clients` threads doing puts and gets
/// of their own keys at once. One TCP connection per request, as the original's client did;
/// plus the same sequential puts and gets through one keep-alive connection, beside the HTTP
/// floor measured on that connection (`keep_alive_rows`).
/// With `CHORD_KV_TRACE_SLOW` set, puts slower than 100 ms are named on stderr.
pub fn scale_workload(ring: &LiveRing, ops: usize, clients: usize) -> Vec<ScaleRow> {
    let entry = ring.peers[0].0.port;
    let nodes = ring.peers.len();
    let mut rows = Vec::new();

    let mut latencies = Vec::with_capacity(ops);
    let mut failed = 0;
    let started = Instant::now();
    for k in 0..ops {
        let t = Instant::now();
        if !put_value(entry, &format!("scale-{k}"), &format!("v{k}")) {
            failed += 1;
        }
        let took = t.elapsed();
        if took > Duration::from_millis(100) && std::env::var_os("CHORD_KV_TRACE_SLOW").is_some() {
            eprintln!("slow put scale-{k}: {took:?}");
        }
        latencies.push(took);
    }
    rows.push(summarize(
        "put-sequential",
        nodes,
        1,
        &mut latencies,
        started,
        failed,
        0,
        0,
    ));

    let (mut correct, mut wrong) = (0, 0);
    let mut latencies = Vec::with_capacity(ops);
    let mut failed = 0;
    let started = Instant::now();
    for k in 0..ops {
        let t = Instant::now();
        match get_request(entry, &format!("scale-{k}")) {
            Some(Some(v)) if v == format!("v{k}") => correct += 1,
            Some(_) => wrong += 1,
            None => failed += 1,
        }
        latencies.push(t.elapsed());
    }
    rows.push(summarize(
        "get-sequential",
        nodes,
        1,
        &mut latencies,
        started,
        failed,
        correct,
        wrong,
    ));

    rows.extend(keep_alive_rows(entry, nodes, ops));

    let started = Instant::now();
    let per_client = ops.div_ceil(clients);
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(2 * per_client);
                let (mut ok, mut bad, mut failed) = (0, 0, 0);
                for k in 0..per_client {
                    let key = format!("scale-c{c}-{k}");
                    let t = Instant::now();
                    if !put_value(entry, &key, "x") {
                        failed += 1;
                    }
                    lat.push(t.elapsed());
                    let t = Instant::now();
                    match get_request(entry, &key) {
                        Some(Some(v)) if v == "x" => ok += 1,
                        Some(_) => bad += 1,
                        None => failed += 1,
                    }
                    lat.push(t.elapsed());
                }
                (lat, ok, bad, failed)
            })
        })
        .collect();
    let (mut latencies, mut ok, mut bad, mut failed) = (Vec::new(), 0, 0, 0);
    for h in handles {
        if let Ok((l, o, b, f)) = h.join() {
            latencies.extend(l);
            ok += o;
            bad += b;
            failed += f;
        }
    }
    rows.push(summarize(
        "mixed-concurrent",
        nodes,
        clients,
        &mut latencies,
        started,
        failed,
        ok,
        bad,
    ));
    rows
}

/// Puts only, through the first peer: `ops` sequential puts of distinct keys, then `clients`
/// threads putting `ops` more keys between them at once (`chord-experiment --mode durable`).
pub fn put_workload(ring: &LiveRing, ops: usize, clients: usize) -> Vec<ScaleRow> {
    let entry = ring.peers[0].0.port;
    let nodes = ring.peers.len();
    let mut latencies = Vec::with_capacity(ops);
    let mut failed = 0;
    let started = Instant::now();
    for k in 0..ops {
        let t = Instant::now();
        if !put_value(entry, &format!("durable-{k}"), &format!("v{k}")) {
            failed += 1;
        }
        latencies.push(t.elapsed());
    }
    let sequential = summarize(
        "put-sequential",
        nodes,
        1,
        &mut latencies,
        started,
        failed,
        0,
        0,
    );

    let per_client = ops.div_ceil(clients);
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            std::thread::spawn(move || {
                let mut latencies = Vec::with_capacity(per_client);
                let mut failed = 0;
                for k in 0..per_client {
                    let t = Instant::now();
                    if !put_value(entry, &format!("durable-c{c}-{k}"), "x") {
                        failed += 1;
                    }
                    latencies.push(t.elapsed());
                }
                (latencies, failed)
            })
        })
        .collect();
    let (mut latencies, mut failed) = (Vec::new(), 0);
    for handle in handles {
        if let Ok((l, f)) = handle.join() {
            latencies.extend(l);
            failed += f;
        }
    }
    let concurrent = summarize(
        "put-concurrent",
        nodes,
        clients,
        &mut latencies,
        started,
        failed,
        0,
        0,
    );
    vec![sequential, concurrent]
}

/// Sequential requests through one keep-alive connection: the floor (`GET /ring`, which does no
/// ring work), then puts and gets of fresh keys. Phases `floor-keepalive`, `put-keepalive`,
/// `get-keepalive`; the ratios of their p50s are what a request costs above its HTTP carrier.
fn keep_alive_rows(entry: u16, nodes: usize, ops: usize) -> Vec<ScaleRow> {
    let Ok(mut client) = KeepAlive::connect(entry) else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    let mut phase = |name: &str,
                     rows: &mut Vec<ScaleRow>,
                     f: &mut dyn FnMut(&mut KeepAlive, usize) -> Option<bool>| {
        let mut latencies = Vec::with_capacity(ops);
        let (mut failed, mut correct, mut wrong) = (0, 0, 0);
        let started = Instant::now();
        for k in 0..ops {
            let t = Instant::now();
            match f(&mut client, k) {
                Some(true) => correct += 1,
                Some(false) => wrong += 1,
                None => failed += 1,
            }
            latencies.push(t.elapsed());
        }
        let reads = if name.starts_with("get") {
            (correct, wrong)
        } else {
            (0, 0)
        };
        rows.push(summarize(
            name,
            nodes,
            1,
            &mut latencies,
            started,
            failed,
            reads.0,
            reads.1,
        ));
    };
    phase("floor-keepalive", &mut rows, &mut |c, _| {
        c.request("GET", "/ring", None).ok().map(|(s, _)| s == 200)
    });
    phase("put-keepalive", &mut rows, &mut |c, k| {
        let body = format!(r#"{{"key":"ka-{k}","value":"v{k}","writer_id":"live"}}"#);
        let (s, v) = c.request("POST", "/put", Some(&body)).ok()?;
        (s == 200)
            .then_some(true)
            .filter(|_| v.contains("\"ok\":true"))
    });
    phase("get-keepalive", &mut rows, &mut |c, k| {
        let body = format!(r#"{{"key":"ka-{k}"}}"#);
        let (s, v) = c.request("POST", "/get", Some(&body)).ok()?;
        let v: Value = serde_json::from_str(&v).ok()?;
        (s == 200).then(|| v["value"].as_str() == Some(&format!("v{k}")))
    });
    rows
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    phase: &str,
    nodes: usize,
    clients: usize,
    latencies: &mut [Duration],
    started: Instant,
    failed: usize,
    correct_reads: usize,
    wrong_reads: usize,
) -> ScaleRow {
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    ScaleRow {
        phase: phase.to_string(),
        nodes,
        clients,
        ops: latencies.len(),
        ops_per_sec: latencies.len() as f64 / seconds.max(1e-9),
        p50_ms: percentile_ms(latencies, 0.5),
        p99_ms: percentile_ms(latencies, 0.99),
        correct_reads,
        wrong_reads,
        failed,
        seconds,
    }
}

/// The result of `chord-experiment --mode churn` on real processes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LiveChurnRow {
    pub nodes: usize,
    /// Peers killed (-9) and restarted empty during the run.
    pub restarts: usize,
    pub seconds: f64,
    pub puts: usize,
    pub puts_acked: usize,
    pub gets: usize,
    pub gets_failed: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Acknowledged puts that no peer reflects after the churn: every peer answered the key
    /// with "not found" or a write acknowledged before the put started (see
    /// `acked_writes_unread`).
    pub acked_writes_lost: usize,
    /// Operations in the client history, the read-back included.
    pub ops: usize,
    /// Violations of the promise the history checker found (node_core::sim::history).
    pub anomalies: usize,
    /// Keys whose history has no linearization.
    pub not_linearizable_keys: usize,
    /// Keys whose linearizability search ran out of budget (neither passed nor failed).
    pub undecided_keys: usize,
    /// The checker's count of acknowledged writes the last read of their key does not reflect.
    pub acked_writes_lost_history: usize,
    /// Length of one of `slices`: a tenth of the kill period.
    pub slice_ms: u64,
    /// The workload in time slices, for a timeline (`--plot`).
    pub slices: Vec<ChurnSlice>,
    /// When each peer was killed and restarted, on the slices' clock.
    pub events: Vec<ChurnEvent>,
    /// The checker's verdict, with the operations of each anomaly.
    #[serde(skip)]
    pub report: Report,
}

/// The workload of one time slice of a live churn run. Slices without requests (while a
/// restarted peer rejoins, the client waits) are left out.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChurnSlice {
    /// Seconds from the start of the run to the start of the slice.
    pub start_s: f64,
    pub puts: usize,
    pub puts_failed: usize,
    pub gets: usize,
    pub gets_failed: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// A kill or restart of one peer during a live churn run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChurnEvent {
    /// Seconds from the start of the run.
    pub at_s: f64,
    pub kind: ChurnEventKind,
    /// The HTTP port of the peer.
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ChurnEventKind {
    /// SIGKILL, like a crash.
    Kill,
    /// Started again, empty, with the same id.
    Restart,
}

/// One request of the churn workload: when it started, how long it took, what and whether it
/// succeeded.
#[derive(Debug, Clone, Copy)]
struct ChurnSample {
    at: Duration,
    took: Duration,
    put: bool,
    ok: bool,
}

/// Cuts the samples (in start order) into slices `width` long (not zero).
fn churn_slices(samples: &[ChurnSample], width: Duration) -> Vec<ChurnSlice> {
    let mut slices = Vec::new();
    let mut rest = samples;
    while let Some(first) = rest.first() {
        let index = first.at.as_nanos() / width.as_nanos();
        let end = rest
            .iter()
            .position(|s| s.at.as_nanos() / width.as_nanos() != index)
            .unwrap_or(rest.len());
        let (slice, after) = rest.split_at(end);
        rest = after;
        let mut latencies: Vec<Duration> = slice.iter().map(|s| s.took).collect();
        latencies.sort_unstable();
        let count = |put: bool, ok: Option<bool>| {
            slice
                .iter()
                .filter(|s| s.put == put && ok.is_none_or(|ok| s.ok == ok))
                .count()
        };
        slices.push(ChurnSlice {
            start_s: width.as_secs_f64() * index as f64,
            puts: count(true, None),
            puts_failed: count(true, Some(false)),
            gets: count(false, None),
            gets_failed: count(false, Some(false)),
            p50_ms: percentile_ms(&latencies, 0.5),
            p99_ms: percentile_ms(&latencies, 0.99),
        });
    }
    slices
}

/// Keys of the churn workload: puts overwrite them and gets read them, so the history checker
/// sees several operations per key.
pub const CHURN_KEYS: usize = 20;
/// Client threads of the churn workload, each a sequence of put-then-get.
pub const CHURN_CLIENTS: usize = 3;

/// The churn workload's shared client history (node_core::sim::history), on one clock: the
/// milliseconds since the workload started.
struct Recorder {
    started: Instant,
    history: Mutex<History>,
}

/// What one recorded put returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PutOutcome {
    Acked,
    /// The peer answered with an error.
    Failed,
    /// No answer (refused, timed out, or the peer died mid-call): it may have taken effect.
    Unknown,
}

impl Recorder {
    fn new(started: Instant) -> Self {
        Self {
            started,
            history: Mutex::new(History::new()),
        }
    }

    fn now_ms(&self) -> Time {
        self.started.elapsed().as_millis() as Time
    }

    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the invocation; the clock is read under the lock, so the history's order is
    /// the order of the invocation times.
    fn invoke(&self, client: &str, key: &str, call: Call) -> usize {
        let mut history = self.history();
        let at = self.now_ms();
        history.invoke(client, key, call, at)
    }

    /// `POST /put` recorded: an acknowledgement, an error answer, or nothing.
    fn put(&self, client: &str, port: u16, key: &str, value: &str) -> PutOutcome {
        let body = serde_json::json!({"key": key, "value": value, "writer_id": client}).to_string();
        let call = Call::Put {
            value: value.to_string(),
        };
        let index = self.invoke(&format!("{client}@{port}"), key, call);
        let answer = http(port, "POST", "/put", Some(&body));
        let at = self.now_ms();
        let Some((status, text)) = answer else {
            return PutOutcome::Unknown;
        };
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        let ret = match parsed {
            Some(v) if status == 200 && v["ok"] == true => Ret::Stored {
                ts: v["ts"].as_u64().unwrap_or(0),
            },
            _ => Ret::Failed {
                error: error_text(status, &text),
            },
        };
        let outcome = if matches!(ret, Ret::Stored { .. }) {
            PutOutcome::Acked
        } else {
            PutOutcome::Failed
        };
        self.history().complete(index, at, ret);
        outcome
    }

    /// `POST /get` recorded: what it returned (`Ret::Found`, `NotFound` or `Failed`), or
    /// `None` without an answer.
    fn get(&self, client: &str, port: u16, key: &str) -> Option<Ret> {
        let body = serde_json::json!({ "key": key }).to_string();
        let index = self.invoke(&format!("{client}@{port}"), key, Call::Get);
        let answer = http(port, "POST", "/get", Some(&body));
        let at = self.now_ms();
        let (status, text) = answer?;
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        let ret = match parsed {
            Some(v) if status == 200 && v["found"] == true => Ret::Found {
                // Values are written as strings; anything else is named by its JSON text.
                value: v["value"]
                    .as_str()
                    .map_or_else(|| v["value"].to_string(), str::to_string),
                ts: v["ts"].as_u64().unwrap_or(0),
                writer: v["writer_id"].as_str().unwrap_or("").to_string(),
            },
            Some(v) if status == 200 && v["found"] == false => Ret::NotFound,
            _ => Ret::Failed {
                error: error_text(status, &text),
            },
        };
        self.history().complete(index, at, ret.clone());
        Some(ret)
    }
}

/// An error answer in one line: its status and JSON `error` (or the start of its body).
fn error_text(status: u16, body: &str) -> String {
    let detail = serde_json::from_str::<Value>(body)
        .ok()
        .map(|v| v["error"].to_string())
        .unwrap_or_else(|| body.chars().take(120).collect());
    format!("HTTP {status} {detail}")
}

/// Live churn: while [`CHURN_CLIENTS`] clients put and get [`CHURN_KEYS`] keys through random
/// surviving peers, every `period` one peer (never the first, the clients' fallback) is killed
/// with SIGKILL and restarted empty with the same id a moment later. Afterwards every key is
/// read from every peer. Every put and get, the read-back included, goes into one client
/// history, judged by the simulator's checker (node_core::sim::history::check).
pub fn churn_workload(ring: &mut LiveRing, restarts: usize, period: Duration) -> LiveChurnRow {
    let started = Instant::now();
    let recorder = Recorder::new(started);
    let nodes = ring.peers.len();
    let next_value = AtomicUsize::new(0);
    let mut state = 0x00C0_FFEE_u64;
    let (mut samples, mut events) = (Vec::new(), Vec::new());
    for round in 0..restarts {
        let victim = 1 + (node_core::rng::splitmix64(&mut state) as usize) % (nodes - 1);
        let (port, id) = (ring.peers[victim].0.port, ring.peers[victim].1);
        ring.peers[victim].0.kill();
        events.push(ChurnEvent {
            at_s: started.elapsed().as_secs_f64(),
            kind: ChurnEventKind::Kill,
            port,
        });
        let phase_end = Instant::now() + period;
        // Clients use the peers that are ring members now (a restarted peer that is still
        // rejoining answers 503 and would only measure the client's choice).
        let alive: Vec<u16> = ring
            .peers
            .iter()
            .map(|(p, _)| p.port)
            .filter(|p| *p != port)
            .filter(|p| json(*p, "GET", "/ring", None).is_some_and(|(_, v)| v["joined"] == true))
            .collect();
        if !alive.is_empty() {
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..CHURN_CLIENTS)
                    .map(|c| {
                        let (recorder, alive, next_value) = (&recorder, &alive, &next_value);
                        let mut rng = state ^ (((round * CHURN_CLIENTS + c) as u64 + 1) << 32);
                        scope.spawn(move || {
                            let client = format!("c{c}");
                            let mut pick = |n: usize| {
                                (node_core::rng::splitmix64(&mut rng) % n as u64) as usize
                            };
                            let mut samples = Vec::new();
                            while Instant::now() < phase_end {
                                let key = format!("churn-{}", pick(CHURN_KEYS));
                                let value =
                                    format!("v{}", next_value.fetch_add(1, Ordering::Relaxed));
                                let at = alive[pick(alive.len())];
                                let t = Instant::now();
                                let put = recorder.put(&client, at, &key, &value);
                                samples.push(ChurnSample {
                                    at: t - started,
                                    took: t.elapsed(),
                                    put: true,
                                    ok: put == PutOutcome::Acked,
                                });
                                // A key written earlier, by any client, through any peer.
                                let key = format!("churn-{}", pick(CHURN_KEYS));
                                let at = alive[pick(alive.len())];
                                let t = Instant::now();
                                let got = recorder.get(&client, at, &key);
                                samples.push(ChurnSample {
                                    at: t - started,
                                    took: t.elapsed(),
                                    put: false,
                                    ok: matches!(got, Some(Ret::Found { .. } | Ret::NotFound)),
                                });
                            }
                            samples
                        })
                    })
                    .collect();
                for handle in handles {
                    if let Ok(s) = handle.join() {
                        samples.extend(s);
                    }
                }
            });
        }
        // Back, empty, with the same id: it rejoins and anti-entropy refills it.
        let bootstrap = ring.peers[0].0.port;
        ring.peers[victim].0 =
            Proc::peer_with(port, id, Some(bootstrap), &["--udp-addr", "127.0.0.1:0"]);
        events.push(ChurnEvent {
            at_s: started.elapsed().as_secs_f64(),
            kind: ChurnEventKind::Restart,
            port,
        });
        std::thread::sleep(period / 2);
    }
    samples.sort_by_key(|s| s.at);
    // Let repair run, then read every key back from every peer (recorded too).
    let ports = ring.ports();
    let _ = wait_until(Duration::from_secs(60), || ring_converged(&ports));
    std::thread::sleep(Duration::from_secs(5));
    let read_back: Vec<Vec<Ret>> = (0..CHURN_KEYS)
        .map(|k| {
            let key = format!("churn-{k}");
            ports
                .iter()
                .filter_map(|(port, _)| recorder.get("readback", *port, &key))
                .filter(|r| matches!(r, Ret::Found { .. } | Ret::NotFound))
                .collect()
        })
        .collect();
    let history = recorder.history().clone();
    let lost = acked_writes_unread(&history, &read_back);
    let report = check(&history);
    let (puts, puts_acked) = (
        samples.iter().filter(|s| s.put).count(),
        samples.iter().filter(|s| s.put && s.ok).count(),
    );
    let gets = samples.iter().filter(|s| !s.put).count();
    let gets_failed = samples.iter().filter(|s| !s.put && !s.ok).count();
    let mut latencies: Vec<Duration> = samples.iter().map(|s| s.took).collect();
    latencies.sort_unstable();
    let slice = (period / 10).max(Duration::from_millis(1));
    LiveChurnRow {
        nodes,
        restarts,
        seconds: started.elapsed().as_secs_f64(),
        puts,
        puts_acked,
        gets,
        gets_failed,
        p50_ms: percentile_ms(&latencies, 0.5),
        p99_ms: percentile_ms(&latencies, 0.99),
        acked_writes_lost: lost,
        ops: report.ops,
        anomalies: report.anomalies.len(),
        not_linearizable_keys: report.not_linearizable.len(),
        undecided_keys: report.undecided_keys,
        acked_writes_lost_history: report.acked_writes_lost,
        slice_ms: slice.as_millis() as u64,
        slices: churn_slices(&samples, slice),
        events,
        report,
    }
}

/// Acknowledged puts (of keys `churn-0`, ...) that no peer's read-back reflects: every
/// answer for the key was "not found" or a write acknowledged before the put started (or no
/// peer answered). A put overwritten by a later or concurrent one is not lost.
fn acked_writes_unread(history: &History, read_back: &[Vec<Ret>]) -> usize {
    let ops = history.ops();
    // Every put by (key, value): when it was acknowledged, if it was.
    let puts: std::collections::HashMap<(&str, &str), Option<Time>> = ops
        .iter()
        .filter_map(|o| match (&o.call, &o.ret) {
            (Call::Put { value }, Ret::Stored { .. }) => {
                Some(((o.key.as_str(), value.as_str()), o.complete))
            }
            (Call::Put { value }, _) => Some(((o.key.as_str(), value.as_str()), None)),
            _ => None,
        })
        .collect();
    ops.iter()
        .filter(|o| matches!((&o.call, &o.ret), (Call::Put { .. }, Ret::Stored { .. })))
        .filter(|w| {
            let Some(k) = w
                .key
                .strip_prefix("churn-")
                .and_then(|k| k.parse::<usize>().ok())
            else {
                return false;
            };
            let answers = read_back.get(k).map_or(&[][..], Vec::as_slice);
            !answers.iter().any(|r| match r {
                // The write itself, or one not acknowledged before it started (a value nobody
                // wrote reflects nothing).
                Ret::Found { value, .. } => puts
                    .get(&(w.key.as_str(), value.as_str()))
                    .is_some_and(|acked| acked.is_none_or(|at| at >= w.invoke)),
                _ => false,
            })
        })
        .count()
}

/// A small witness of one key's non-linearizable history (`ops`, in invocation order): the
/// shortest run of consecutive operations that still has no linearization, with the writes its
/// reads returned, then thinned one operation at a time. Any linearization of a history, kept
/// to a subset of its operations that holds the write each kept read returned, is one of the
/// subset; so the subset failing proves the whole failed, and failing grows with the run (two
/// binary searches).
pub fn linearizability_witness(ops: &[Op]) -> Vec<Op> {
    let fails = |subset: &[&Op]| {
        let mut history = History::new();
        for o in subset {
            let i = history.invoke(&o.client, &o.key, o.call.clone(), o.invoke);
            if let Some(at) = o.complete {
                history.complete(i, at, o.ret.clone());
            }
        }
        !check(&history).not_linearizable.is_empty()
    };
    let read_values = |subset: &[&Op]| -> std::collections::HashSet<String> {
        subset
            .iter()
            .filter_map(|o| match &o.ret {
                Ret::Found { value, .. } if matches!(o.call, Call::Get) => Some(value.clone()),
                _ => None,
            })
            .collect()
    };
    // The run ops[start..end] with the writes its reads returned.
    let closed = |start: usize, end: usize| -> Vec<&Op> {
        let values = read_values(&ops[start..end].iter().collect::<Vec<_>>());
        let (first, last) = (ops[start].index, ops[end - 1].index);
        ops.iter()
            .filter(|o| {
                (first..=last).contains(&o.index)
                    || matches!(&o.call, Call::Put { value } if values.contains(value))
            })
            .collect()
    };
    if ops.is_empty() || !fails(&ops.iter().collect::<Vec<_>>()) {
        return ops.to_vec();
    }
    // The shortest failing prefix, then the shortest failing suffix of it.
    let (mut lo, mut hi) = (1, ops.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails(&closed(0, mid)) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let end = hi;
    let (mut lo, mut hi) = (0, end - 1);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fails(&closed(mid, end)) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    // Drop every operation the failure does not need (never a write a kept read returned).
    let mut witness = closed(lo, end);
    for i in (0..witness.len()).rev() {
        let mut fewer = witness.clone();
        let dropped = fewer.remove(i);
        let needed =
            matches!(&dropped.call, Call::Put { value } if read_values(&fewer).contains(value));
        if !needed && fails(&fewer) {
            witness = fewer;
        }
    }
    witness.into_iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Puts of `churn-0` (value, invoke, acknowledged at) and the read-back's answers.
    fn lost(puts: &[(&str, Time, Option<Time>)], answers: &[Ret]) -> usize {
        let mut history = History::new();
        for (value, invoke, acked) in puts {
            let call = Call::Put {
                value: (*value).to_string(),
            };
            let i = history.invoke("c0", "churn-0", call, *invoke);
            if let Some(at) = acked {
                history.complete(i, *at, Ret::Stored { ts: 1 });
            }
        }
        acked_writes_unread(&history, &[answers.to_vec()])
    }

    fn put(value: &str) -> Call {
        Call::Put {
            value: value.to_string(),
        }
    }

    /// A history of key `churn-0` from `(call, invoke, complete, result)` rows.
    fn history_of(rows: &[(Call, Time, Time, Ret)]) -> History {
        let mut history = History::new();
        for (call, invoke, complete, ret) in rows {
            let i = history.invoke("c0", "churn-0", call.clone(), *invoke);
            history.complete(i, *complete, ret.clone());
        }
        history
    }

    fn found(value: &str) -> Ret {
        Ret::Found {
            value: value.to_string(),
            ts: 1,
            writer: "c0".to_string(),
        }
    }

    #[test]
    fn an_overwritten_put_is_not_lost_but_one_the_read_back_predates_is() {
        let sequential = [("a", 0, Some(1)), ("b", 2, Some(3))];
        assert_eq!(lost(&sequential, &[found("b")]), 0);
        assert_eq!(lost(&sequential, &[found("a")]), 1);
        assert_eq!(lost(&sequential, &[Ret::NotFound]), 2);
        // One peer that still answers the newest write is enough.
        assert_eq!(lost(&sequential, &[found("a"), found("b")]), 0);
        // No answer at all, or a value nobody wrote, reflects nothing.
        assert_eq!(lost(&sequential, &[]), 2);
        assert_eq!(lost(&sequential, &[found("zz")]), 2);
    }

    #[test]
    fn a_concurrent_or_unacknowledged_write_may_win() {
        let concurrent = [("a", 0, Some(5)), ("b", 1, Some(6))];
        assert_eq!(lost(&concurrent, &[found("a")]), 0);
        let unknown = [("a", 0, Some(1)), ("b", 2, None)];
        assert_eq!(lost(&unknown, &[found("b")]), 0);
    }

    #[test]
    fn the_witness_of_a_flip_flop_is_its_four_operations() {
        let history = history_of(&[
            (put("x"), 0, 1, Ret::Stored { ts: 1 }),
            (Call::Get, 2, 3, found("x")),
            (put("a"), 10, 20, Ret::Stored { ts: 2 }),
            (put("b"), 11, 21, Ret::Stored { ts: 3 }),
            (Call::Get, 30, 31, found("b")),
            (Call::Get, 40, 41, found("a")),
            (put("y"), 50, 51, Ret::Stored { ts: 4 }),
            (Call::Get, 60, 61, found("y")),
        ]);
        let report = check(&history);
        assert!(report.holds(), "the promise allows it");
        assert_eq!(report.not_linearizable.len(), 1);
        let witness = linearizability_witness(&report.not_linearizable[0].ops);
        let indices: Vec<usize> = witness.iter().map(|o| o.index).collect();
        assert_eq!(indices, [2, 3, 4, 5]);
    }

    #[test]
    fn the_witness_of_a_write_seen_twice_drops_what_it_does_not_need() {
        // A slow put of "a" is read early, overwritten by "b" and "c", and read again.
        let history = history_of(&[
            (put("a"), 10, 100, Ret::Stored { ts: 9 }),
            (Call::Get, 20, 21, found("a")),
            (put("b"), 30, 31, Ret::Stored { ts: 2 }),
            (Call::Get, 35, 36, found("b")),
            (put("c"), 40, 41, Ret::Stored { ts: 3 }),
            (Call::Get, 110, 111, found("a")),
        ]);
        let report = check(&history);
        assert!(report.holds(), "the promise allows it: \"a\" was in flight");
        let witness = linearizability_witness(&report.not_linearizable[0].ops);
        let indices: Vec<usize> = witness.iter().map(|o| o.index).collect();
        assert_eq!(indices, [0, 1, 2, 5]);
    }
}

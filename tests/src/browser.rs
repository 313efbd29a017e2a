//! A small Chrome DevTools Protocol (CDP) client that lets end-to-end tests drive headless
//! Chromium tabs: evaluate JavaScript, wait for a condition, take a screenshot, reload a tab and
//! close it, and read what the page logged.
//!
//! It speaks just enough of CDP over the crates the workspace already has (tokio,
//! tokio-tungstenite, serde_json): the HTTP endpoints `/json/new`, `/json/list` and
//! `/json/close` through a hand-written HTTP/1.1 request, and one WebSocket per tab for
//! commands and events. See <https://chromedevtools.github.io/devtools-protocol/>.
//!
//! # Rules
//! - **No downloaded browser.** [`LaunchOptions::new`] uses the distribution's Chromium,
//!   [`DEFAULT_CHROMIUM`] (`apt-get install chromium`); nothing here ever fetches one.
//! - **A fresh profile per browser.** Each [`Browser`] gets a new directory under the directory
//!   the caller names (keep it under `target/`, e.g. `env!("CARGO_TARGET_TMPDIR")`), holding the
//!   `--user-data-dir` and Chromium's stderr. It is removed when the browser is closed or dropped.
//! - **Its own process group.** Chromium starts as the leader of a new process group, which its
//!   zygote, renderer and utility processes join. [`Browser::close`] and `Drop` kill that group
//!   by its id and wait for it to empty. Never kill browsers by name: other tests and other
//!   people run Chromium on the same machine. (If the test process itself is killed with
//!   SIGKILL, nothing runs: the group is left behind.)
//! - **Bounded waits.** Every call has a timeout ([`DEFAULT_TIMEOUT`] unless given), so a test
//!   fails with a message instead of hanging.
//! - **No panics on garbage.** A CDP message that is not JSON, or has an unexpected shape, is
//!   ignored and counted ([`Tab::ignored_messages`]).
//! - **WebRTC stays inside the machine.** Tests that open peer connections run inside a private
//!   network namespace (`lab::netns::enter_private_netns`), with a veth interface:
//!   Chromium gathers no ICE candidates on a loopback-only host.
//!
//! # Layout
//! - [`LaunchOptions`], [`Browser`]: start Chromium with `--remote-debugging-port=0`, read the
//!   port it chose from `<user-data-dir>/DevToolsActivePort`, open tabs, close.
//! - [`Tab`]: one WebSocket to the tab's `webSocketDebuggerUrl`. A reader task owns the socket: it
//!   sends queued commands, matches answers to callers by `id`, and collects
//!   `Runtime.consoleAPICalled`, `Runtime.exceptionThrown` and `Log.entryAdded` events into the
//!   buffer [`Tab::console_log`] returns (dump it when a test fails).
//! - Pure helpers (HTTP response parsing, base64, event formatting) at the end, unit-tested.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use e2e::browser::{Browser, LaunchOptions};
//! // In an integration test: `LaunchOptions::new(env!("CARGO_TARGET_TMPDIR"))`.
//! let options = LaunchOptions::new("target/tmp").arg("--allow-loopback-in-peer-connection");
//! let browser = Browser::launch(options).await?;
//! let tab = browser.open_tab("http://127.0.0.1:8080/").await?;
//! assert_eq!(tab.eval("1 + 2").await?, 3);
//! tab.wait_for("window.ready === true", std::time::Duration::from_secs(10)).await?;
//! tab.close().await?;
//! browser.close().await?;
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The distribution's Chromium (Debian package `chromium`).
pub const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";

/// How long a CDP call, an `eval` or an HTTP request may take unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`Browser::launch`] waits for `DevToolsActivePort` unless told otherwise.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Flags every browser gets, before [`LaunchOptions::args`].
const BASE_ARGS: &[&str] = &[
    "--headless=new",
    // Tests run as root (or as root of a user namespace), where the sandbox cannot start.
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    // Port 0: Chromium picks a free port and writes it to DevToolsActivePort, so parallel
    // tests never collide.
    "--remote-debugging-port=0",
];

/// How often [`Tab::wait_for`] re-evaluates its condition.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How many console lines a tab keeps; older ones are dropped (and counted).
const CONSOLE_CAPACITY: usize = 10_000;

/// How long closing waits for the process group to empty and for a closed tab to go away.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// How to start Chromium.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// The browser binary; [`DEFAULT_CHROMIUM`] by default.
    pub executable: PathBuf,
    /// The directory under which the browser's temporary directory (profile + stderr) is made.
    pub profile_parent: PathBuf,
    /// Extra command-line flags, after the built-in ones (e.g.
    /// `--allow-loopback-in-peer-connection`, `--window-size=800,600`).
    pub args: Vec<String>,
    /// How long to wait for Chromium to write `DevToolsActivePort`.
    pub startup_timeout: Duration,
    /// The default timeout of each call on the browser and its tabs.
    pub call_timeout: Duration,
}

impl LaunchOptions {
    /// The default options, with the temporary profile under `profile_parent`.
    pub fn new(profile_parent: impl Into<PathBuf>) -> Self {
        Self {
            executable: PathBuf::from(DEFAULT_CHROMIUM),
            profile_parent: profile_parent.into(),
            args: Vec::new(),
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            call_timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Adds one command-line flag.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }
}

/// A running headless Chromium. Kill it with [`Browser::close`]; dropping it kills it too.
#[derive(Debug)]
pub struct Browser {
    /// `None` once closed.
    child: Option<Child>,
    /// Whether `child` was already waited for (then its pid no longer reserves the group id).
    reaped: bool,
    /// The process group id: the leader's pid.
    process_group: u32,
    port: u16,
    /// Holds `profile/` and `chromium.stderr`; removed on close.
    dir: PathBuf,
    call_timeout: Duration,
}

impl Browser {
    /// Starts Chromium with a fresh profile, in its own process group, and waits until its
    /// DevTools endpoint is up.
    pub async fn launch(options: LaunchOptions) -> anyhow::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(&options.profile_parent).with_context(|| {
            format!(
                "cannot create the profile parent {}",
                options.profile_parent.display()
            )
        })?;
        let dir = options.profile_parent.join(format!(
            "chromium-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        // A leftover of an earlier run whose process had the same id.
        let _ = std::fs::remove_dir_all(&dir);
        let profile = dir.join("profile");
        std::fs::create_dir_all(&profile)
            .with_context(|| format!("cannot create the profile {}", profile.display()))?;
        let stderr_path = dir.join("chromium.stderr");
        let stderr = std::fs::File::create(&stderr_path)
            .with_context(|| format!("cannot create {}", stderr_path.display()))?;

        let spawned = Command::new(&options.executable)
            .args(BASE_ARGS)
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(&options.args)
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            // A new process group with the child as leader: its helpers join it, and the whole
            // group can be killed by id.
            .process_group(0)
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e).with_context(|| {
                    format!(
                        "cannot start {} (install the distribution's package: \
                         apt-get install chromium)",
                        options.executable.display()
                    )
                });
            }
        };
        let mut browser = Self {
            process_group: child.id(),
            child: Some(child),
            reaped: false,
            port: 0,
            dir,
            call_timeout: options.call_timeout,
        };
        // From here on, an early return drops `browser`, which kills the group.
        browser.port = browser.wait_for_port(options.startup_timeout).await?;
        Ok(browser)
    }

    /// Polls `<profile>/DevToolsActivePort` until it names a port, Chromium exits, or time
    /// runs out.
    async fn wait_for_port(&mut self, timeout: Duration) -> anyhow::Result<u16> {
        let path = self.profile_dir().join("DevToolsActivePort");
        let deadline = Instant::now() + timeout;
        loop {
            // The file is written in one go, but a read may still see it half-written: a line
            // that does not parse is retried.
            let port = std::fs::read_to_string(&path)
                .ok()
                .and_then(|text| text.lines().next()?.trim().parse::<u16>().ok());
            if let Some(port) = port {
                return Ok(port);
            }
            let exited = self.child.as_mut().and_then(|child| child.try_wait().ok()?);
            if let Some(status) = exited {
                self.reaped = true;
                bail!(
                    "chromium exited ({status}) before writing {}; its stderr:\n{}",
                    path.display(),
                    self.stderr_log()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "chromium did not write {} within {timeout:?}; its stderr:\n{}",
                    path.display(),
                    self.stderr_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The DevTools HTTP/WebSocket port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The id of Chromium's process group (the pid of the browser process).
    pub fn process_group(&self) -> u32 {
        self.process_group
    }

    /// The `--user-data-dir` of this browser.
    pub fn profile_dir(&self) -> PathBuf {
        self.dir.join("profile")
    }

    /// Chromium's stderr so far (the last 8 KiB), to print when a test fails.
    pub fn stderr_log(&self) -> String {
        let bytes = std::fs::read(self.dir.join("chromium.stderr")).unwrap_or_default();
        let tail = &bytes[bytes.len().saturating_sub(8192)..];
        String::from_utf8_lossy(tail).into_owned()
    }

    /// Opens a new tab on `url` (`PUT /json/new?<url>`), connects to it, enables the `Runtime`,
    /// `Page` and `Log` domains and waits (up to the call timeout) until the page has loaded.
    pub async fn open_tab(&self, url: &str) -> anyhow::Result<Tab> {
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bail!("open_tab: the URL {url:?} must not contain whitespace (percent-encode it)");
        }
        let path = format!("/json/new?{url}");
        let (status, body) = http_request(self.port, "PUT", &path, self.call_timeout).await?;
        if status != 200 {
            bail!("PUT {path}: HTTP {status}: {body}");
        }
        let target: Value = serde_json::from_str(&body)
            .with_context(|| format!("PUT {path}: the answer is not JSON: {body}"))?;
        let (Some(target_id), Some(ws_url)) = (
            target["id"].as_str(),
            target["webSocketDebuggerUrl"].as_str(),
        ) else {
            bail!("PUT {path}: no id or webSocketDebuggerUrl in {body}");
        };
        let tab = Tab::connect(self.port, target_id, ws_url, self.call_timeout).await;
        let tab = match tab {
            Ok(tab) => tab,
            Err(e) => {
                let _ = close_target(self.port, target_id, self.call_timeout).await;
                return Err(e);
            }
        };
        tab.wait_until_loaded(url)
            .await
            .with_context(|| format!("tab {target_id} did not load {url}"))?;
        Ok(tab)
    }

    /// The browser's targets (`GET /json/list`): tabs, workers, ... as Chromium describes them.
    pub async fn targets(&self) -> anyhow::Result<Vec<Value>> {
        let (status, body) =
            http_request(self.port, "GET", "/json/list", self.call_timeout).await?;
        if status != 200 {
            bail!("GET /json/list: HTTP {status}: {body}");
        }
        serde_json::from_str(&body).with_context(|| format!("GET /json/list: not a list: {body}"))
    }

    /// Kills Chromium's process group, waits until no process of it is left, and removes the
    /// profile. Errs if processes of the group survive (their ids are in the message).
    pub async fn close(mut self) -> anyhow::Result<()> {
        self.kill_group();
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        let mut leftovers = processes_in_group(self.process_group);
        while !leftovers.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.reap();
            leftovers = processes_in_group(self.process_group);
        }
        self.reap();
        self.child = None;
        remove_dir_with_retries(&self.dir);
        if !leftovers.is_empty() {
            bail!(
                "processes of chromium's group {} survived SIGKILL for {SHUTDOWN_TIMEOUT:?}: \
                 {leftovers:?}",
                self.process_group
            );
        }
        if self.dir.exists() {
            bail!("cannot remove the browser directory {}", self.dir.display());
        }
        Ok(())
    }

    /// SIGKILL to the whole group, by id. Before the leader is reaped its pid (= the group id)
    /// cannot be reused, so this never hits another group; after, only a live group is killed.
    fn kill_group(&mut self) {
        if self.child.is_none()
            || (self.reaped && processes_in_group(self.process_group).is_empty())
        {
            return;
        }
        // `kill` of the shell: std has no killpg and this crate forbids `unsafe` (libc).
        let _ = Command::new("sh")
            .args(["-c", "kill -s KILL -- \"-$1\" 2>/dev/null", "sh"])
            .arg(self.process_group.to_string())
            .stdin(Stdio::null())
            .status();
    }

    /// Collects the leader's exit status if it has exited (so it does not stay a zombie).
    fn reap(&mut self) {
        if self.reaped {
            return;
        }
        if let Some(child) = self.child.as_mut() {
            self.reaped = matches!(child.try_wait(), Ok(Some(_)));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.child.is_none() {
            return;
        }
        self.kill_group();
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        while !processes_in_group(self.process_group).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            self.reap();
        }
        self.reap();
        self.child = None;
        remove_dir_with_retries(&self.dir);
    }
}

/// The live (not zombie) processes whose process group is `process_group`, from `/proc`.
pub fn processes_in_group(process_group: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| parse_stat(&stat))
                .is_some_and(|(state, group)| group == process_group && !matches!(state, 'Z' | 'X'))
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// `(state, process group)` from the text of `/proc/<pid>/stat`. The command name (field 2)
/// may contain spaces and parentheses, so fields are counted from its last `)`.
fn parse_stat(stat: &str) -> Option<(char, u32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _parent = fields.next()?;
    let group = fields.next()?.parse().ok()?;
    Some((state, group))
}

/// Chromium's helpers may still be writing for a moment after the kill.
fn remove_dir_with_retries(dir: &Path) {
    for _ in 0..10 {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                std::thread::sleep(Duration::from_millis(50));
            }
            _ => return,
        }
    }
}

/// One tab, driven over its own DevTools WebSocket.
pub struct Tab {
    target_id: String,
    port: u16,
    shared: Arc<Shared>,
    /// Serialized commands for the reader task, which owns the socket.
    commands: mpsc::UnboundedSender<String>,
    /// How many `Page.loadEventFired` events arrived.
    loads: watch::Receiver<u64>,
    reader: tokio::task::JoinHandle<()>,
    call_timeout: Duration,
}

impl fmt::Debug for Tab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tab")
            .field("target_id", &self.target_id)
            .field("port", &self.port)
            .field("closed", &self.shared.state().closed)
            .finish_non_exhaustive()
    }
}

/// What the reader task and the callers share.
#[derive(Debug, Default)]
struct Shared {
    next_id: AtomicU64,
    state: Mutex<State>,
    console: Mutex<Console>,
    ignored_messages: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// Callers waiting for the answer to the command with this id.
    pending: HashMap<u64, oneshot::Sender<Result<Value, String>>>,
    /// Why the connection ended, once it has: no command is accepted after that.
    closed: Option<String>,
}

#[derive(Debug, Default)]
struct Console {
    lines: VecDeque<String>,
    dropped: u64,
}

impl Shared {
    /// A poisoned lock only means a caller panicked while holding it; the data is still fine.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn console(&self) -> MutexGuard<'_, Console> {
        self.console.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn log(&self, line: String) {
        let mut console = self.console();
        if console.lines.len() == CONSOLE_CAPACITY {
            console.lines.pop_front();
            console.dropped += 1;
        }
        console.lines.push_back(line);
    }

    /// Dispatches one message from Chromium: an answer to a command, or an event.
    fn handle_message(&self, text: &str, loads: &watch::Sender<u64>) {
        let Ok(message) = serde_json::from_str::<Value>(text) else {
            self.ignored_messages.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if let Some(id) = message.get("id").and_then(Value::as_u64) {
            let answer = match message.get("error") {
                Some(error) => Err(format!(
                    "{} (code {}){}",
                    error["message"].as_str().unwrap_or("error without message"),
                    error["code"],
                    error["data"]
                        .as_str()
                        .map(|data| format!(": {data}"))
                        .unwrap_or_default()
                )),
                None => Ok(message.get("result").cloned().unwrap_or(Value::Null)),
            };
            // No one waiting: the caller timed out. Nothing to do.
            if let Some(waiter) = self.state().pending.remove(&id) {
                let _ = waiter.send(answer);
            }
            return;
        }
        let params = &message["params"];
        match message.get("method").and_then(Value::as_str) {
            Some("Runtime.consoleAPICalled") => self.log(format_console_call(params)),
            Some("Runtime.exceptionThrown") => {
                self.log(format!(
                    "[exception] {}",
                    exception_text(&params["exceptionDetails"])
                ));
            }
            Some("Log.entryAdded") => self.log(format_log_entry(&params["entry"])),
            Some("Page.loadEventFired") => loads.send_modify(|n| *n += 1),
            Some(_) => {}
            None => {
                self.ignored_messages.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The connection is gone: fail every waiting caller, and every later one.
    fn close(&self, reason: String) {
        let mut state = self.state();
        for (_, waiter) in state.pending.drain() {
            let _ = waiter.send(Err(format!("the tab's connection ended: {reason}")));
        }
        state.closed = Some(reason);
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Owns the socket: writes queued commands, dispatches what arrives, until either side ends.
async fn run_connection(
    mut socket: Socket,
    mut commands: mpsc::UnboundedReceiver<String>,
    shared: Arc<Shared>,
    loads: watch::Sender<u64>,
) {
    let reason = loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(text) => {
                    if let Err(e) = socket.send(Message::text(text)).await {
                        break format!("sending failed: {e}");
                    }
                }
                None => {
                    let _ = socket.close(None).await;
                    break "the Tab was dropped".to_string();
                }
            },
            incoming = socket.next() => match incoming {
                Some(Ok(Message::Text(text))) => shared.handle_message(text.as_str(), &loads),
                Some(Ok(Message::Binary(bytes))) => match std::str::from_utf8(&bytes) {
                    Ok(text) => shared.handle_message(text, &loads),
                    Err(_) => {
                        shared.ignored_messages.fetch_add(1, Ordering::Relaxed);
                    }
                },
                Some(Ok(Message::Close(frame))) => {
                    break format!("chromium closed the WebSocket ({frame:?})");
                }
                // Ping/pong are answered by tungstenite.
                Some(Ok(_)) => {}
                Some(Err(e)) => break format!("WebSocket error: {e}"),
                None => break "the WebSocket ended".to_string(),
            },
        }
    };
    shared.close(reason);
}

impl Tab {
    async fn connect(
        port: u16,
        target_id: &str,
        ws_url: &str,
        call_timeout: Duration,
    ) -> anyhow::Result<Self> {
        // Screenshots arrive as one large frame; leave room for big viewports.
        let config = WebSocketConfig::default()
            .max_message_size(Some(256 << 20))
            .max_frame_size(Some(256 << 20));
        let connecting = tokio_tungstenite::connect_async_with_config(ws_url, Some(config), false);
        let (socket, _) = tokio::time::timeout(call_timeout, connecting)
            .await
            .map_err(|_| anyhow!("connecting to {ws_url}: no answer within {call_timeout:?}"))?
            .with_context(|| format!("connecting to {ws_url}"))?;
        let shared = Arc::new(Shared::default());
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (loads_tx, loads) = watch::channel(0);
        let reader = tokio::spawn(run_connection(
            socket,
            commands_rx,
            Arc::clone(&shared),
            loads_tx,
        ));
        let tab = Self {
            target_id: target_id.to_string(),
            port,
            shared,
            commands,
            loads,
            reader,
            call_timeout,
        };
        for domain in ["Runtime", "Page", "Log"] {
            tab.call(&format!("{domain}.enable"), json!({})).await?;
        }
        Ok(tab)
    }

    /// Waits until the document that replaced the tab's first `about:blank` has loaded.
    async fn wait_until_loaded(&self, url: &str) -> anyhow::Result<()> {
        let condition = if url == "about:blank" {
            "document.readyState === 'complete' && location.href"
        } else {
            "document.readyState === 'complete' && location.href !== 'about:blank' && location.href"
        };
        let href = self.wait_for(condition, self.call_timeout).await?;
        let href = href.as_str().unwrap_or_default();
        if href.starts_with("chrome-error:") {
            bail!("navigation failed (chromium shows its error page {href})");
        }
        Ok(())
    }

    /// The DevTools target id of this tab.
    pub fn target_id(&self) -> &str {
        &self.target_id
    }

    /// Sends one CDP command and returns its `result`, within the default timeout.
    pub async fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.call_with_timeout(method, params, self.call_timeout)
            .await
    }

    /// Sends one CDP command and returns its `result`, within `timeout`.
    pub async fn call_with_timeout(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (waiter, answer) = oneshot::channel();
        {
            // Registering and checking `closed` under one lock: the reader cannot end in
            // between and leave this caller waiting for its timeout.
            let mut state = self.shared.state();
            if let Some(reason) = &state.closed {
                bail!("{method}: tab {} is gone: {reason}", self.target_id);
            }
            state.pending.insert(id, waiter);
        }
        let command = json!({ "id": id, "method": method, "params": params }).to_string();
        if self.commands.send(command).is_err() {
            self.shared.state().pending.remove(&id);
            bail!("{method}: tab {} is gone", self.target_id);
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(Ok(result))) => Ok(result),
            Ok(Ok(Err(error))) => Err(anyhow!("{method} failed: {error}")),
            Ok(Err(_)) => Err(anyhow!("{method}: tab {} is gone", self.target_id)),
            Err(_) => {
                self.shared.state().pending.remove(&id);
                Err(anyhow!(
                    "{method}: no answer from tab {} within {timeout:?}",
                    self.target_id
                ))
            }
        }
    }

    /// Evaluates a JavaScript expression in the page, within the default timeout (see
    /// [`Tab::eval_with_timeout`]).
    pub async fn eval(&self, expression: &str) -> anyhow::Result<Value> {
        self.eval_with_timeout(expression, self.call_timeout).await
    }

    /// Evaluates a JavaScript expression in the page (`Runtime.evaluate`); a promise is awaited.
    /// Returns its value as JSON (`undefined` as `null`; `NaN`, `Infinity`, `-0` and bigints as
    /// their text). Errs, with the exception's text and stack, if it throws or the promise
    /// rejects, and if no answer arrives within `timeout`.
    pub async fn eval_with_timeout(
        &self,
        expression: &str,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let params = json!({
            "expression": expression,
            "awaitPromise": true,
            "returnByValue": true,
            "userGesture": true,
        });
        let answer = self
            .call_with_timeout("Runtime.evaluate", params, timeout)
            .await
            .with_context(|| format!("eval `{}`", abbreviate(expression)))?;
        if let Some(details) = answer.get("exceptionDetails") {
            bail!(
                "eval `{}` threw: {}",
                abbreviate(expression),
                exception_text(details)
            );
        }
        let result = &answer["result"];
        Ok(
            match (result.get("value"), result.get("unserializableValue")) {
                (Some(value), _) => value.clone(),
                (None, Some(text)) => text.clone(),
                (None, None) => Value::Null,
            },
        )
    }

    /// Evaluates `condition` every 100 ms until its value is truthy (not `null`, `false`, `0`
    /// or `""`) and returns that value. Errors while evaluating (e.g. during a navigation) count
    /// as not yet. Errs on timeout with the last value or error.
    pub async fn wait_for(&self, condition: &str, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let last = match self
                .eval_with_timeout(condition, left.max(POLL_INTERVAL))
                .await
            {
                Ok(value) if is_truthy(&value) => return Ok(value),
                Ok(value) => format!("last value: {value}"),
                Err(e) => {
                    if let Some(reason) = self.closed_reason() {
                        return Err(e.context(format!("tab closed: {reason}")));
                    }
                    format!("last error: {e:#}")
                }
            };
            if Instant::now() + POLL_INTERVAL > deadline {
                bail!(
                    "`{}` was not truthy within {timeout:?}; {last}",
                    abbreviate(condition)
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Captures the viewport as PNG (`Page.captureScreenshot`) and writes it to `path`,
    /// creating parent directories.
    pub async fn screenshot_png(&self, path: impl AsRef<Path>) -> anyhow::Result<()> {
        let path = path.as_ref();
        // A tab in the background may not paint.
        self.call("Page.bringToFront", json!({})).await?;
        let answer = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await?;
        let data = answer["data"]
            .as_str()
            .context("Page.captureScreenshot: no data in the answer")?;
        let png = decode_base64(data).context("Page.captureScreenshot: bad base64")?;
        if !png.starts_with(b"\x89PNG\r\n\x1a\n") {
            bail!("Page.captureScreenshot: the data is not a PNG");
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(path, &png).with_context(|| format!("cannot write {}", path.display()))
    }

    /// Reloads the page (`Page.reload`) and waits for its load event.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let mut loads = self.loads.clone();
        let before = *loads.borrow_and_update();
        self.call("Page.reload", json!({})).await?;
        tokio::time::timeout(self.call_timeout, loads.wait_for(|n| *n > before))
            .await
            .map_err(|_| anyhow!("reload: no load event within {:?}", self.call_timeout))?
            .map_err(|_| anyhow!("reload: the tab's connection ended"))?;
        Ok(())
    }

    /// Closes the tab (`/json/close/<targetId>`) and waits for Chromium to drop its
    /// connection. The browser and its other tabs stay up.
    pub async fn close(mut self) -> anyhow::Result<()> {
        close_target(self.port, &self.target_id, self.call_timeout).await?;
        tokio::time::timeout(SHUTDOWN_TIMEOUT, &mut self.reader)
            .await
            .map_err(|_| {
                anyhow!(
                    "tab {}: chromium kept the connection open {SHUTDOWN_TIMEOUT:?} after closing",
                    self.target_id
                )
            })?
            .context("the tab's reader task failed")?;
        Ok(())
    }

    /// What the page logged so far: console calls (`[log] ...`, `[error] ...`), uncaught
    /// exceptions (`[exception] ...`) and browser log entries (`[network error] ...`).
    pub fn console_log(&self) -> Vec<String> {
        let console = self.shared.console();
        let dropped =
            (console.dropped > 0).then(|| format!("[{} earlier lines dropped]", console.dropped));
        dropped
            .into_iter()
            .chain(console.lines.iter().cloned())
            .collect()
    }

    /// How many messages from Chromium could not be understood and were ignored.
    pub fn ignored_messages(&self) -> u64 {
        self.shared.ignored_messages.load(Ordering::Relaxed)
    }

    /// Why the connection to the tab ended, if it has.
    pub fn closed_reason(&self) -> Option<String> {
        self.shared.state().closed.clone()
    }
}

impl Drop for Tab {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// `/json/close/<id>`: GET, which Chromium has always accepted, then PUT if GET is refused.
async fn close_target(port: u16, target_id: &str, timeout: Duration) -> anyhow::Result<()> {
    let path = format!("/json/close/{target_id}");
    let (mut status, mut body) = http_request(port, "GET", &path, timeout).await?;
    if status != 200 {
        (status, body) = http_request(port, "PUT", &path, timeout).await?;
    }
    if status != 200 {
        bail!("{path}: HTTP {status}: {body}");
    }
    Ok(())
}

/// One HTTP/1.1 request without a body to Chromium's DevTools server on 127.0.0.1; returns the
/// status and the body.
async fn http_request(
    port: u16,
    method: &str,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        // DevTools refuses Host headers other than an IP or localhost (DNS rebinding).
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut received = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = stream.read(&mut chunk).await?;
            received.extend_from_slice(&chunk[..n]);
            if let Some(response) = parse_http_response(&received, n == 0)? {
                return anyhow::Ok(response);
            }
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| anyhow!("{method} {path}: no answer within {timeout:?}"))?
        .with_context(|| format!("{method} http://127.0.0.1:{port}{path}"))
}

/// A complete response in `received` as `(status, body)`, `None` if more bytes are needed.
/// `eof`: the server closed the connection, so whatever arrived is all there is.
fn parse_http_response(received: &[u8], eof: bool) -> anyhow::Result<Option<(u16, String)>> {
    let Some(head_end) = received.windows(4).position(|w| w == b"\r\n\r\n") else {
        if eof {
            bail!("the connection closed before a complete response head");
        }
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&received[..head_end]);
    let body = &received[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .with_context(|| format!("bad HTTP status line {status_line:?}"))?;
    let mut content_length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse::<usize>()
                    .with_context(|| format!("bad Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("unsupported Transfer-Encoding {value:?}");
        }
    }
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    match content_length {
        Some(length) if body.len() >= length => Ok(Some((status, text(&body[..length])))),
        Some(length) if eof => bail!(
            "the connection closed after {} of {length} body bytes",
            body.len()
        ),
        None if eof => Ok(Some((status, text(body)))),
        _ => Ok(None),
    }
}

/// Decodes standard base64 (`+/`, `=` padding; whitespace ignored).
fn decode_base64(text: &str) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut bits: u32 = 0;
    let mut bit_count = 0;
    let mut padded = false;
    for (offset, byte) in text.bytes().enumerate() {
        let sextet = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                padded = true;
                continue;
            }
            b' ' | b'\t' | b'\r' | b'\n' => continue,
            _ => bail!("invalid base64 byte {byte:#04x} at offset {offset}"),
        };
        if padded {
            bail!("base64 data after padding at offset {offset}");
        }
        bits = (bits << 6) | u32::from(sextet);
        bit_count += 6;
        if bit_count >= 8 {
            bit_count -= 8;
            out.push((bits >> bit_count) as u8);
            bits &= (1 << bit_count) - 1;
        }
    }
    // Six bits left over: one character of a group alone, which encodes no byte.
    if bit_count >= 6 {
        bail!("truncated base64 ({} characters)", text.len());
    }
    Ok(out)
}

/// JavaScript-like truthiness of a JSON value.
fn is_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// A `Runtime.RemoteObject` as console.log would print it, roughly.
fn remote_object_text(object: &Value) -> String {
    match object.get("value") {
        Some(Value::String(s)) => s.clone(),
        Some(value) => value.to_string(),
        None => object["unserializableValue"]
            .as_str()
            .or_else(|| object["description"].as_str())
            .or_else(|| object["type"].as_str())
            .unwrap_or("?")
            .to_string(),
    }
}

/// `[type] args... (url:line)` from `Runtime.consoleAPICalled` params.
fn format_console_call(params: &Value) -> String {
    let kind = params["type"].as_str().unwrap_or("log");
    let args: Vec<String> = params["args"]
        .as_array()
        .map(|args| args.iter().map(remote_object_text).collect())
        .unwrap_or_default();
    let frame = &params["stackTrace"]["callFrames"][0];
    let place = match (frame["url"].as_str(), frame["lineNumber"].as_u64()) {
        (Some(url), Some(line)) if !url.is_empty() => format!(" ({url}:{})", line + 1),
        _ => String::new(),
    };
    format!("[{kind}] {}{place}", args.join(" "))
}

/// `[level source] text (url)` from a `Log.entryAdded` entry (network errors, interventions).
fn format_log_entry(entry: &Value) -> String {
    let url = entry["url"]
        .as_str()
        .map(|url| format!(" ({url})"))
        .unwrap_or_default();
    format!(
        "[{} {}] {}{url}",
        entry["level"].as_str().unwrap_or("?"),
        entry["source"].as_str().unwrap_or("?"),
        entry["text"].as_str().unwrap_or_default()
    )
}

/// The text of `Runtime.ExceptionDetails`: e.g. `Uncaught Error: boom\n    at ...`.
fn exception_text(details: &Value) -> String {
    let text = details["text"].as_str().unwrap_or("exception");
    let exception = &details["exception"];
    let what = exception["description"]
        .as_str()
        .map(str::to_string)
        .or_else(|| exception.get("value").map(remote_object_text_value))
        .unwrap_or_default();
    if what.is_empty() {
        text.to_string()
    } else {
        format!("{text}: {what}")
    }
}

fn remote_object_text_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The first line of a script, at most 120 characters, for error messages.
fn abbreviate(script: &str) -> String {
    let first = script.trim().lines().next().unwrap_or_default();
    let short: String = first.chars().take(120).collect();
    if short.len() < script.trim().len() {
        format!("{short}...")
    } else {
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_the_rfc_4648_vectors() {
        let vectors = [
            ("", ""),
            ("Zg==", "f"),
            ("Zm8=", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYg==", "foob"),
            ("Zm9vYmE=", "fooba"),
            ("Zm9vYmFy", "foobar"),
            ("Zm9v\r\nYmFy", "foobar"),
        ];
        for (encoded, decoded) in vectors {
            assert_eq!(
                decode_base64(encoded).unwrap(),
                decoded.as_bytes(),
                "{encoded}"
            );
        }
        assert_eq!(decode_base64("/+8=").unwrap(), [0xff, 0xef]);
    }

    #[test]
    fn base64_rejects_garbage() {
        assert!(decode_base64("Zm9v!").is_err());
        assert!(decode_base64("Z").is_err());
        assert!(decode_base64("Zg==Zg==").is_err());
    }

    #[test]
    fn http_responses_parse_with_and_without_length() {
        let full =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(
            parse_http_response(full, false).unwrap(),
            Some((200, "{}".to_string()))
        );
        assert_eq!(
            parse_http_response(&full[..full.len() - 1], false).unwrap(),
            None
        );
        assert!(parse_http_response(&full[..full.len() - 1], true).is_err());
        let unsized_body = b"HTTP/1.1 404 Not Found\r\n\r\nnope";
        assert_eq!(parse_http_response(unsized_body, false).unwrap(), None);
        assert_eq!(
            parse_http_response(unsized_body, true).unwrap(),
            Some((404, "nope".to_string()))
        );
        assert!(parse_http_response(b"garbage\r\n\r\n", true).is_err());
        assert!(parse_http_response(b"HTTP/1.1 200", true).is_err());
    }

    #[test]
    fn malformed_cdp_messages_are_counted_not_fatal() {
        let shared = Shared::default();
        let (loads, _) = watch::channel(0);
        for garbage in [
            "not json",
            "[]",
            "42",
            r#"{"id": "x"}"#,
            r#"{"method": 7, "params": 1}"#,
            r#"{"method": "Runtime.consoleAPICalled", "params": {"args": 5}}"#,
            r#"{"method": "Runtime.exceptionThrown"}"#,
            r#"{"id": 99, "result": {}}"#,
        ] {
            shared.handle_message(garbage, &loads);
        }
        assert_eq!(shared.ignored_messages.load(Ordering::Relaxed), 5);
        assert_eq!(shared.console().lines.len(), 2);
    }

    #[test]
    fn console_calls_and_exceptions_read_like_devtools() {
        let call = json!({
            "type": "warning",
            "args": [{"type": "string", "value": "answer"}, {"type": "number", "value": 42},
                     {"type": "number", "unserializableValue": "NaN"},
                     {"type": "object", "description": "HTMLDivElement"}],
            "stackTrace": {"callFrames": [{"url": "http://x/app.js", "lineNumber": 9}]}
        });
        assert_eq!(
            format_console_call(&call),
            "[warning] answer 42 NaN HTMLDivElement (http://x/app.js:10)"
        );
        let details = json!({"text": "Uncaught", "exception": {"description": "Error: boom"}});
        assert_eq!(exception_text(&details), "Uncaught: Error: boom");
        let rejected = json!({"text": "Uncaught (in promise)", "exception": {"value": "plain"}});
        assert_eq!(exception_text(&rejected), "Uncaught (in promise): plain");
    }

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let stat = "4242 (chrom (ium) x) S 1 4240 4240 0 -1 4194560 0 0";
        assert_eq!(parse_stat(stat), Some(('S', 4240)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn truthiness_follows_javascript() {
        for falsy in [json!(null), json!(false), json!(0), json!(0.0), json!("")] {
            assert!(!is_truthy(&falsy), "{falsy}");
        }
        for truthy in [json!(true), json!(1), json!("x"), json!([]), json!({})] {
            assert!(is_truthy(&truthy), "{truthy}");
        }
    }
}

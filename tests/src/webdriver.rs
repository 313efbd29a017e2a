//! A small WebDriver (W3C, classic) client for headless Firefox through geckodriver: start a
//! session, open a page, run JavaScript that returns a Promise, end the session. Firefox no
//! longer speaks the Chrome DevTools Protocol that [`crate::browser`] uses for Chromium.
//!
//! # Rules
//! - **No downloaded browser or driver.** Firefox ESR comes from Debian (`/usr/bin/firefox-esr`),
//!   geckodriver from `cargo install` (`cargo xtask setup` installs both).
//! - **One Firefox per session.** Each [`Firefox`] is its own geckodriver process and browser
//!   with a fresh profile (so each is its own peer with its own IndexedDB), in its own process
//!   group, killed when dropped.
//! - **Bounded waits.** Every request has a timeout.
//! - **WebRTC stays inside the machine.** Use it inside a private network namespace, like the
//!   Chromium tests; the preferences below let Firefox offer plain host candidates there (it
//!   hides them behind mDNS names and keeps to the default route's address otherwise).

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};

/// Where Debian puts Firefox ESR.
pub const DEFAULT_FIREFOX: &str = "/usr/bin/firefox-esr";

/// One headless Firefox driven through its own geckodriver.
#[derive(Debug)]
pub struct Firefox {
    driver: Child,
    port: u16,
    session: String,
}

impl Firefox {
    /// Starts geckodriver on `port` (loopback) and a headless Firefox session.
    pub fn launch(port: u16) -> anyhow::Result<Self> {
        let mut command =
            Command::new(std::env::var_os("GECKODRIVER").unwrap_or_else(|| "geckodriver".into()));
        command
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let driver = command
            .spawn()
            .context("cannot start geckodriver (`cargo xtask setup` installs it)")?;
        let mut firefox = Self {
            driver,
            port,
            session: String::new(),
        };
        let started = Instant::now();
        while request(port, "GET", "/status", None, Duration::from_secs(2)).is_err() {
            if started.elapsed() > Duration::from_secs(20) {
                bail!("geckodriver did not answer on port {port}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "firefox",
            "moz:firefoxOptions": {
                "binary": DEFAULT_FIREFOX,
                "args": ["-headless"],
                "prefs": {
                    "media.peerconnection.ice.obfuscate_host_addresses": false,
                    "media.peerconnection.ice.default_address_only": false,
                    "media.navigator.permission.disabled": true,
                    "network.dns.disableIPv6": true,
                    // performance.now() to the microsecond, not rounded to 1 ms (for the
                    // latencies tests/examples/browser_bench.rs measures in the page).
                    "privacy.reduceTimerPrecision": false,
                    "app.update.enabled": false,
                    "datareporting.policy.dataSubmissionEnabled": false,
                },
            },
            "timeouts": {"script": 120_000},
        }}});
        let answer = request(
            port,
            "POST",
            "/session",
            Some(&capabilities),
            Duration::from_secs(60),
        )?;
        firefox.session = answer["value"]["sessionId"]
            .as_str()
            .with_context(|| format!("no session id in {answer}"))?
            .to_string();
        Ok(firefox)
    }

    /// Opens `url` in the session's window and waits for its load event.
    pub fn open(&self, url: &str) -> anyhow::Result<()> {
        let path = format!("/session/{}/url", self.session);
        request(
            self.port,
            "POST",
            &path,
            Some(&json!({ "url": url })),
            Duration::from_secs(60),
        )?;
        Ok(())
    }

    /// Evaluates `expression` (a value or a Promise) in the page and returns what it resolves
    /// to, as JSON; a rejection or exception is an error with its message.
    pub fn eval(&self, expression: &str) -> anyhow::Result<Value> {
        let script = format!(
            "const done = arguments[arguments.length - 1];\n\
             Promise.resolve().then(() => ({expression}))\n\
               .then(v => done({{ok: v === undefined ? null : v}}),\n\
                     e => done({{err: String(e && e.stack || e)}}));"
        );
        let path = format!("/session/{}/execute/async", self.session);
        let answer = request(
            self.port,
            "POST",
            &path,
            Some(&json!({ "script": script, "args": [] })),
            Duration::from_secs(150),
        )?;
        let value = &answer["value"];
        if let Some(err) = value.get("err") {
            bail!("`{expression}` failed in Firefox: {err}");
        }
        value
            .get("ok")
            .cloned()
            .ok_or_else(|| anyhow!("`{expression}`: unexpected answer {answer}"))
    }

    /// Ends the session (Firefox quits) and stops geckodriver.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = request(self.port, "DELETE", &path, None, Duration::from_secs(20));
            self.session.clear();
        }
        // The driver leads its own process group, which Firefox joins: end them all.
        let group = self.driver.id();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{group}")])
            .status();
        let _ = self.driver.wait();
    }
}

impl Drop for Firefox {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One WebDriver request; the answer's JSON. A WebDriver error (`value.error`) is an error.
fn request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> anyhow::Result<Value> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("{method} {path}: cannot connect to geckodriver"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut received = Vec::new();
    stream
        .read_to_end(&mut received)
        .with_context(|| format!("{method} {path}: no complete answer within {timeout:?}"))?;
    let text = String::from_utf8_lossy(&received);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("{method} {path}: no HTTP head in {text:?}"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{method} {path}: bad status line in {head:?}"))?;
    let value: Value = serde_json::from_str(body.trim())
        .with_context(|| format!("{method} {path}: answer is not JSON: {body:?}"))?;
    if status >= 400 || value["value"].get("error").is_some() {
        bail!("{method} {path}: {status} {}", value["value"]);
    }
    Ok(value)
}

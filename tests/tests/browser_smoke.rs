//! Smoke test of the CDP client `e2e::browser`, inside a private network namespace: headless
//! Chromium starts in its own process group with a temporary profile, two tabs load a page this
//! test serves, JavaScript evaluates (values, promises, exceptions, waits), two
//! RTCPeerConnections in one page exchange a message over a data channel, a tab reloads, a
//! screenshot is written, a tab closes while the other keeps working, and closing the browser
//! leaves no process of its group and no profile behind.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use e2e::browser::{Browser, LaunchOptions, Tab, processes_in_group};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

const PAGE: &str = r#"<!doctype html>
<html>
<head><meta charset="utf-8"><title>chord-kv browser smoke</title></head>
<body style="margin: 0; background: #1b5e20; color: white; font: 40px sans-serif">
<h1>chord-kv browser smoke</h1>
<script>console.log('smoke page loaded', 42);</script>
</body>
</html>
"#;

/// Two RTCPeerConnections in one page, no ICE servers: a data channel opens and carries one
/// message. Resolves to the message the answering side received.
const WEBRTC_ROUND_TRIP: &str = r#"(async () => {
  const a = new RTCPeerConnection({ iceServers: [] });
  const b = new RTCPeerConnection({ iceServers: [] });
  a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
  b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
  const received = new Promise((resolve) => {
    b.ondatachannel = (e) => { e.channel.onmessage = (m) => resolve(m.data); };
  });
  const channel = a.createDataChannel('smoke');
  const opened = new Promise((resolve) => { channel.onopen = resolve; });
  await a.setLocalDescription();
  await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription();
  await a.setRemoteDescription(b.localDescription);
  await opened;
  channel.send('hello over a data channel');
  const message = await received;
  a.close();
  b.close();
  return message;
})()"#;

/// Serves `PAGE` at `/` (404 elsewhere) on 127.0.0.1; returns the port.
async fn serve_page() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut chunk = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                    }
                }
                let (status, body) = if head.starts_with(b"GET / ") {
                    ("200 OK", PAGE)
                } else {
                    ("404 Not Found", "")
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    Ok(port)
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    let be = |at: usize| Some(u32::from_be_bytes(png.get(at..at + 4)?.try_into().ok()?));
    (png.get(12..16)? == b"IHDR").then_some(())?;
    Some((be(16)?, be(20)?))
}

/// `(pid, process group)` of every process whose command line mentions `profile`: Chromium
/// passes `--user-data-dir` to its helpers, so this finds any that left the group.
fn processes_using(profile: &Path) -> Vec<(u32, u32)> {
    let needle = profile.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(&needle)
                .then_some(())?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let after_name = &stat[stat.rfind(')')? + 1..];
            let group = after_name.split_whitespace().nth(2)?.parse().ok()?;
            Some((pid, group))
        })
        .collect()
}

#[test]
fn browser_smoke() {
    if !lab::netns::enter_private_netns("browser_smoke") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let port = serve_page().await.expect("serve the page");
        let url = format!("http://127.0.0.1:{port}/");
        let target_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));

        // A browser that never writes DevToolsActivePort: a clear error, nothing left behind.
        let mut not_a_browser = LaunchOptions::new(target_dir.join("not-a-browser"));
        not_a_browser.executable = PathBuf::from("/bin/true");
        match Browser::launch(not_a_browser).await {
            Err(e) if format!("{e:#}").contains("DevToolsActivePort") => println!("{e:#}"),
            other => panic!("launching /bin/true gave {other:?}"),
        }
        let leftovers = std::fs::read_dir(target_dir.join("not-a-browser"))
            .map(|dir| dir.count())
            .unwrap_or(0);
        assert_eq!(leftovers, 0, "a failed launch left its directory behind");

        let started = Instant::now();
        let browser = Browser::launch(LaunchOptions::new(&target_dir).arg("--window-size=800,600"))
            .await
            .expect("launch chromium");
        let launched = started.elapsed();
        let first = browser.open_tab(&url).await.expect("open the first tab");
        let first_open = started.elapsed() - launched;
        let second = browser.open_tab(&url).await.expect("open the second tab");
        println!(
            "launch {launched:?}, first tab loaded {first_open:?} later, second tab {:?} later",
            started.elapsed() - launched - first_open
        );

        let profile = browser.profile_dir();
        let group = browser.process_group();
        let screenshot = target_dir
            .parent()
            .expect("CARGO_TARGET_TMPDIR is inside the target directory")
            .join("browser-smoke.png");
        if let Err(e) = scenario(&browser, &first, &second, &screenshot).await {
            panic!(
                "{e:#}\n--- console of the first tab:\n{}\n--- console of the second tab:\n{}\n\
                 --- chromium stderr:\n{}",
                first.console_log().join("\n"),
                second.console_log().join("\n"),
                browser.stderr_log()
            );
        }

        // Close the second tab: it is gone from the target list, the first keeps working.
        let second_id = second.target_id().to_string();
        second.close().await.expect("close the second tab");
        let targets = browser.targets().await.expect("list the targets");
        assert!(
            !targets.iter().any(|t| t["id"] == json!(second_id)),
            "the closed tab is still listed: {targets:?}"
        );
        assert_eq!(
            first.eval("1 + 2").await.expect("eval after a close"),
            json!(3)
        );

        // Every process that uses the profile is in the browser's group.
        let users = processes_using(&profile);
        assert!(users.len() >= 2, "only {users:?} use the profile");
        assert!(
            users.iter().all(|&(_, g)| g == group),
            "processes outside group {group}: {users:?}"
        );
        println!("{} processes in chromium's group {group}", users.len());

        first.close().await.expect("close the first tab");
        browser.close().await.expect("close the browser");
        assert_eq!(processes_in_group(group), Vec::<u32>::new());
        assert!(!profile.exists(), "{} was left behind", profile.display());
        assert_eq!(processes_using(&profile), Vec::new());
    });
}

async fn scenario(
    browser: &Browser,
    first: &Tab,
    second: &Tab,
    screenshot: &Path,
) -> anyhow::Result<()> {
    // Values, in both tabs.
    for tab in [first, second] {
        ensure!(tab.eval("1 + 2").await? == json!(3), "1 + 2 in {tab:?}");
        ensure!(tab.eval("document.title").await? == json!("chord-kv browser smoke"));
    }
    ensure!(first.eval("undefined").await?.is_null());
    ensure!(first.eval("({ a: [1, 'two'] })").await? == json!({ "a": [1, "two"] }));

    // Promises are awaited.
    let late = first
        .eval("new Promise((resolve) => setTimeout(() => resolve('late'), 200))")
        .await?;
    ensure!(late == json!("late"), "promise resolved to {late}");

    // A throw and a rejection are errors carrying the exception's text.
    let thrown = first.eval("(() => { throw new Error('boom'); })()").await;
    match thrown {
        Err(e) if format!("{e:#}").contains("boom") => {}
        other => bail!("a throwing expression gave {other:?}"),
    }
    let rejected = first
        .eval("new Promise((_, reject) => setTimeout(() => reject(new Error('late boom')), 50))")
        .await;
    match rejected {
        Err(e) if format!("{e:#}").contains("late boom") => {}
        other => bail!("a rejected promise gave {other:?}"),
    }

    // wait_for polls until truthy, and reports the last value when time runs out.
    first
        .eval("setTimeout(() => { window.flag = 'up'; }, 300); 0")
        .await?;
    let flag = first
        .wait_for("window.flag", Duration::from_secs(5))
        .await?;
    ensure!(flag == json!("up"), "wait_for gave {flag}");
    match first.wait_for("0", Duration::from_millis(300)).await {
        Err(e) if format!("{e:#}").contains("last value: 0") => {}
        other => bail!("wait_for on a falsy condition gave {other:?}"),
    }

    // What the page logged is collected.
    let log = first.console_log();
    ensure!(
        log.iter().any(|line| line.contains("smoke page loaded 42")),
        "console log: {log:?}"
    );
    ensure!(first.ignored_messages() == 0);

    // WebRTC works in this namespace: two peer connections exchange a message.
    let started = Instant::now();
    let message = second
        .eval_with_timeout(WEBRTC_ROUND_TRIP, Duration::from_secs(20))
        .await
        .context("WebRTC data channel between two RTCPeerConnections")?;
    ensure!(
        message == json!("hello over a data channel"),
        "got {message}"
    );
    println!("WebRTC data channel round trip in {:?}", started.elapsed());

    // Reload: page state is gone, the page is back.
    first.eval("window.marker = 1").await?;
    first.reload().await?;
    ensure!(first.eval("typeof window.marker").await? == json!("undefined"));
    ensure!(first.eval("1 + 2").await? == json!(3));

    // Screenshot of the 800x600 viewport.
    let _ = std::fs::remove_file(screenshot);
    first.screenshot_png(screenshot).await?;
    let png = std::fs::read(screenshot)?;
    let size = png_size(&png).context("the screenshot is not a PNG")?;
    let viewport = first.eval("[innerWidth, innerHeight]").await?;
    ensure!(
        json!([size.0, size.1]) == viewport,
        "screenshot {size:?}, viewport {viewport}"
    );
    println!("screenshot {size:?} -> {}", screenshot.display());

    let targets = browser.targets().await?;
    ensure!(
        targets.iter().any(|t| t["id"] == json!(second.target_id())),
        "the second tab is not listed: {targets:?}"
    );
    Ok(())
}

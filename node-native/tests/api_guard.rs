//! The guards in front of a chord-node's HTTP API and `/ws` (node-native/src/http.rs,
//! signaling/src/access.rs), on a real process in a private network namespace: a `Host` that
//! is not this server's (DNS rebinding) and a foreign page's `Origin` get a JSON 403 on every
//! route; with `--api-token`, the write routes (and `/watch`) need the token and reads do not; refusals are
//! counted in `/metrics`.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use lab::live::{Proc, json, wait_until};
use serde_json::Value;

const PORT: u16 = 7614;
const TOKEN: &str = "s3cret-token";

/// One HTTP/1.1 request with exactly these headers (and a JSON body if given).
fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(("127.0.0.1", PORT)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut text = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    stream.write_all(text.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {response:?}"));
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

const PUT: &str = r#"{"key": "k", "value": "v"}"#;

#[test]
fn host_origin_and_token_guard_the_api() {
    if !lab::netns::enter_private_netns("host_origin_and_token_guard_the_api") {
        return;
    }
    let peer = Proc::peer_with(
        PORT,
        0x4242_4242,
        None,
        &[
            "--api-token",
            TOKEN,
            "--allow-origin",
            "https://app.example",
        ],
    );
    assert!(
        wait_until(Duration::from_secs(20), || json(PORT, "GET", "/ring", None)
            .is_some_and(|(_, ring)| ring["joined"] == true)),
        "the peer did not start: {}",
        peer.log()
    );
    let own = format!("127.0.0.1:{PORT}");
    let bearer = format!("Bearer {TOKEN}");

    // `curl -H 'Host: evil.example' .../put`: refused before the token or the body matter.
    for path in ["/put", "/get", "/ws", "/metrics"] {
        let (status, body) = request(
            "POST",
            path,
            &[("Host", "evil.example"), ("Authorization", &bearer)],
            PUT,
        );
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["error"]["code"], "bad_host", "{path}: {body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    // A page of another site, with the right Host (a plain cross-site request).
    for path in ["/put", "/ws"] {
        let (status, body) = request(
            "POST",
            path,
            &[
                ("Host", &own),
                ("Origin", "http://evil.example"),
                ("Authorization", &bearer),
            ],
            PUT,
        );
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["error"]["code"], "bad_origin", "{path}: {body}");
    }

    // The token: writes need it, reads do not.
    for path in ["/put", "/delete", "/g_start_query"] {
        let (status, body) = request("POST", path, &[("Host", &own)], PUT);
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized", "{path}: {body}");
    }
    // `/watch` makes the ring hold and renew a subscription: behind the token and the Origin
    // guard like the writes (a granted stream never ends, so only refusals are tried here).
    let (status, body) = request("GET", "/watch?key=k", &[("Host", &own)], "");
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &Value::from("unauthorized")),
        "{body}"
    );
    let (status, body) = request(
        "GET",
        "/watch?key=k",
        &[
            ("Host", &own),
            ("Origin", "http://evil.example"),
            ("Authorization", &bearer),
        ],
        "",
    );
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &Value::from("bad_origin")),
        "{body}"
    );
    let (status, body) = request(
        "POST",
        "/put",
        &[("Host", &own), ("Authorization", "Bearer wrong-token!")],
        PUT,
    );
    assert_eq!(status, 401, "{body}");
    let (status, body) = request(
        "POST",
        "/put",
        &[("Host", &own), ("Authorization", &bearer)],
        PUT,
    );
    assert_eq!((status, &body["ok"]), (200, &Value::Bool(true)), "{body}");
    let (status, body) = request("POST", "/get", &[("Host", &own)], r#"{"key": "k"}"#);
    assert_eq!((status, &body["value"]), (200, &Value::from("v")), "{body}");
    // Allowed pages: this server's own, a loopback one, an --allow-origin one.
    for origin in [
        format!("http://{own}"),
        "http://localhost:3000".into(),
        "https://app.example".into(),
    ] {
        let (status, body) = request(
            "POST",
            "/put",
            &[
                ("Host", &own),
                ("Origin", &origin),
                ("Authorization", &bearer),
            ],
            PUT,
        );
        assert_eq!(status, 200, "{origin}: {body}");
    }
    // localhost and [::1] name this server too.
    let (status, body) = request("GET", "/ring", &[("Host", "localhost")], "");
    assert_eq!(status, 200, "{body}");

    // Counted: the HTTP API's refusals and the introducer's (the /ws ones).
    let (_, metrics) = json(PORT, "GET", "/metrics", None).expect("metrics");
    let http = &metrics["http"];
    assert_eq!(http["bad_host"], 3, "{metrics}");
    assert_eq!(http["bad_origin"], 2, "{metrics}");
    assert_eq!(http["unauthorized"], 5, "{metrics}");
    assert!(http["bad_requests"].as_u64().unwrap() >= 10, "{metrics}");
    let introducer = &metrics["introducer"]["errors"];
    assert_eq!(introducer["bad_host"], 1, "{metrics}");
    assert_eq!(introducer["bad_origin"], 1, "{metrics}");
}

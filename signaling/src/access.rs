//! Who may reach a server at all: the `Host` and `Origin` checks that the introducer (`/ws`,
//! `/healthz`) and a chord-node's HTTP API (node-native/src/http.rs) run before anything else.
//!
//! Both defend against web pages, not against programs: a program can send any header, but a
//! page in a visitor's browser cannot choose its `Host` or `Origin`.
//! - **`Host`** stops DNS rebinding: a page at `evil.example` re-points that name at 127.0.0.1,
//!   and its same-origin requests then reach a server on the visitor's loopback with
//!   `Host: evil.example`. Accepted are IP literals (`127.0.0.1`, `[::1]`, `10.0.0.5`: a request
//!   for an IP was not re-pointed by any DNS answer), `localhost`, and the names in
//!   [`AccessPolicy::allowed_hosts`]. The port is not compared (rebinding does not change it,
//!   and a proxy may). A request without `Host` (only HTTP/1.0 programs omit it) is accepted.
//! - **`Origin`** stops cross-site requests: any page may open a WebSocket or POST to
//!   `127.0.0.1`, and the browser then sends the page's origin. Accepted are requests without
//!   an `Origin` (programs: curl, native peers), the serving host's own pages (the origin's host
//!   and port equal the request's `Host`), pages served from this machine's loopback
//!   (`http://127.0.0.1:*`, `http://localhost:*`, `http://[::1]:*`: their server could reach us
//!   directly anyway), and the origins in [`AccessPolicy::allowed_origins`].
//!
//! A refused request gets a 403 with the HTTP API's error shape,
//! `{"error":{"code":"bad_host","message":"..."}}` (or `bad_origin`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::protocol::ErrorCode;

/// The names and origins a server accepts beyond its defaults (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    /// Host names (`node1.example`; a port, if given, is ignored) accepted in `Host` besides IP
    /// literals and `localhost`. `*` accepts every host (behind a proxy that checks it).
    pub allowed_hosts: Vec<String>,
    /// Origins (`https://app.example`, `http://10.0.0.7:8080`; `null` for `file:` pages) whose
    /// pages may call this server besides its own pages and loopback pages. `*` accepts every
    /// origin.
    pub allowed_origins: Vec<String>,
}

/// Why a request was refused; [`IntoResponse`] makes it a 403 with a JSON error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    BadHost(String),
    BadOrigin(String),
}

impl Refusal {
    /// `bad_host` or `bad_origin`, the code of the JSON body and of the introducer's counters.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::BadHost(_) => ErrorCode::BadHost,
            Self::BadOrigin(_) => ErrorCode::BadOrigin,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::BadHost(host) => format!(
                "Host {host:?} is not served here (DNS rebinding guard); use an IP address or \
                 localhost, or start the server with --allow-host"
            ),
            Self::BadOrigin(origin) => format!(
                "pages from origin {origin:?} may not call this server; start it with \
                 --allow-origin {origin} to allow them"
            ),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": {"code": self.code().as_str(), "message": self.message()},
        });
        (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

impl AccessPolicy {
    /// The `Host` check, then the `Origin` check, on a request's headers.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let mut request_host = None;
        for value in headers.get_all(header::HOST) {
            let text = value.to_str().unwrap_or("");
            if !self.host_allowed(text) {
                return Err(Refusal::BadHost(shorten(&String::from_utf8_lossy(
                    value.as_bytes(),
                ))));
            }
            request_host = Some(text);
        }
        for value in headers.get_all(header::ORIGIN) {
            let text = value.to_str().unwrap_or("");
            if !self.origin_allowed(text, request_host) {
                return Err(Refusal::BadOrigin(shorten(&String::from_utf8_lossy(
                    value.as_bytes(),
                ))));
            }
        }
        Ok(())
    }

    /// Whether a `Host` header value (`name[:port]`, `[v6][:port]`) is one this server answers.
    pub fn host_allowed(&self, host: &str) -> bool {
        let Some((name, _port)) = split_authority(host) else {
            return false;
        };
        if parse_ip(&name).is_some() || name == "localhost" {
            return true;
        }
        self.allowed_hosts.iter().any(|allowed| {
            allowed == "*" || split_authority(allowed).is_some_and(|(allowed, _)| allowed == name)
        })
    }

    /// Whether a page of `origin` may call this server, reached as `request_host`.
    pub fn origin_allowed(&self, origin: &str, request_host: Option<&str>) -> bool {
        let origin = origin.trim().to_ascii_lowercase();
        let listed = self.allowed_origins.iter().any(|allowed| {
            let allowed = allowed.trim().trim_end_matches('/').to_ascii_lowercase();
            allowed == "*"
                || allowed == origin
                || parse_origin(&allowed).is_some_and(|a| Some(a) == parse_origin(&origin))
        });
        if listed {
            return true;
        }
        let Some((scheme, name, port)) = parse_origin(&origin) else {
            return false;
        };
        if name == "localhost" || parse_ip(&name).is_some_and(|ip| ip.is_loopback()) {
            return true;
        }
        // Same origin: the page was served by this server under the name it now calls.
        request_host
            .and_then(split_authority)
            .is_some_and(|(host, host_port)| {
                host == name && host_port.or_else(|| default_port(&scheme)) == Some(port)
            })
    }
}

/// `name[:port]` or `[v6][:port]`, lowercased and without a trailing dot; `None` if malformed.
fn split_authority(text: &str) -> Option<(String, Option<u16>)> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = inside.parse().ok()?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?.parse().ok()?),
        };
        return Some((format!("[{ip}]"), port));
    }
    let (name, port) = match text.rsplit_once(':') {
        Some((name, port)) => (name, Some(port.parse().ok()?)),
        None => (text, None),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let well_formed = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    well_formed.then_some((name, port))
}

/// An IPv4 literal (dotted quad) or a bracketed IPv6 literal.
fn parse_ip(name: &str) -> Option<IpAddr> {
    match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        None => name.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

/// `scheme://host[:port]` as (scheme, host, port with the scheme's default filled in).
fn parse_origin(origin: &str) -> Option<(String, String, u16)> {
    let (scheme, authority) = origin.split_once("://")?;
    let (name, port) = split_authority(authority.trim_end_matches('/'))?;
    let port = port.or_else(|| default_port(scheme))?;
    Some((scheme.to_string(), name, port))
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// A header value cut short enough to echo in an error message.
fn shorten(text: &str) -> String {
    text.chars().take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn ip_literals_and_localhost_are_accepted_names_are_not() {
        let policy = AccessPolicy::default();
        for host in [
            "127.0.0.1",
            "127.0.0.1:5000",
            "[::1]:5000",
            "[::1]",
            "10.0.0.5:80",
            "localhost:8080",
            "LOCALHOST.",
        ] {
            assert!(policy.host_allowed(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:5000",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "",
            "a b",
            "::1",
            "[::1]x",
        ] {
            assert!(!policy.host_allowed(host), "{host}");
        }
    }

    #[test]
    fn allowed_hosts_are_matched_without_port_or_case() {
        let policy = AccessPolicy {
            allowed_hosts: vec!["Node1.Example:9999".into()],
            ..AccessPolicy::default()
        };
        assert!(policy.host_allowed("node1.example:5000"));
        assert!(policy.host_allowed("NODE1.example"));
        assert!(!policy.host_allowed("node2.example"));
        let any = AccessPolicy {
            allowed_hosts: vec!["*".into()],
            ..AccessPolicy::default()
        };
        assert!(any.host_allowed("whatever.example"));
    }

    #[test]
    fn origins_same_host_loopback_or_listed() {
        let policy = AccessPolicy {
            allowed_origins: vec!["https://app.example/".into()],
            ..AccessPolicy::default()
        };
        let host = Some("10.0.0.5:8080");
        assert!(policy.origin_allowed("http://10.0.0.5:8080", host));
        assert!(!policy.origin_allowed("http://10.0.0.5:8081", host));
        assert!(!policy.origin_allowed("https://10.0.0.5", host));
        assert!(policy.origin_allowed("http://localhost:3000", host));
        assert!(policy.origin_allowed("http://127.0.0.1:9", host));
        assert!(policy.origin_allowed("http://[::1]:9", host));
        assert!(policy.origin_allowed("https://app.example", host));
        assert!(policy.origin_allowed("https://app.example:443", host));
        assert!(!policy.origin_allowed("https://evil.example", host));
        assert!(!policy.origin_allowed("null", host));
        assert!(!policy.origin_allowed("garbage", host));
        // Default ports: a page at http://node.example/ calling Host node.example.
        assert!(policy.origin_allowed("http://node.example", Some("node.example")));
        assert!(policy.origin_allowed("http://node.example", Some("node.example:80")));
    }

    #[test]
    fn check_runs_host_then_origin() {
        let policy = AccessPolicy::default();
        assert_eq!(policy.check(&headers(&[])), Ok(()));
        assert_eq!(
            policy.check(&headers(&[("host", "127.0.0.1:5000")])),
            Ok(())
        );
        assert_eq!(
            policy.check(&headers(&[("host", "evil.example:5000")])),
            Err(Refusal::BadHost("evil.example:5000".into()))
        );
        assert_eq!(
            policy.check(&headers(&[
                ("host", "127.0.0.1:5000"),
                ("origin", "http://evil.example")
            ])),
            Err(Refusal::BadOrigin("http://evil.example".into()))
        );
        assert_eq!(
            policy.check(&headers(&[
                ("host", "127.0.0.1:5000"),
                ("origin", "http://127.0.0.1:5000")
            ])),
            Ok(())
        );
    }
}

//! What the `signaling` and `chord-node` binaries share at start-up: turning `--host`/`--port`
//! into an address to listen on, and finding the browser page when no `--static-dir` is given.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::{Path, PathBuf};

/// The address to listen on for `--host HOST --port PORT`. `HOST` is an IP address or a host
/// name; a name is resolved through the system resolver and its first IPv4 address wins (so
/// `localhost` is 127.0.0.1, which is what the browser page and the other peers dial), else its
/// first address.
pub fn listen_addr(host: &str, port: u16) -> io::Result<SocketAddr> {
    // `[::1]` is how URLs write IPv6 hosts; accept it as well as the bare form.
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = host.parse() {
        return Ok(SocketAddr::new(ip, port));
    }
    let resolved: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    resolved
        .iter()
        .find(|addr| addr.is_ipv4())
        .or_else(|| resolved.first())
        .copied()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("host name {host:?} has no address"),
            )
        })
}

/// The `Host`/`Origin` policy for a server started with `--host host`, `--allow-host` and
/// `--allow-origin`: a `--host` given as a name (not an IP address, not `localhost`) is one
/// more allowed host, so a server started as `--host node1.example` answers to that name.
pub fn access_policy(
    host: &str,
    mut allowed_hosts: Vec<String>,
    allowed_origins: Vec<String>,
) -> crate::AccessPolicy {
    let bare = host.trim_matches(['[', ']']);
    if bare.parse::<std::net::IpAddr>().is_err() && !bare.eq_ignore_ascii_case("localhost") {
        allowed_hosts.push(host.to_string());
    }
    crate::AccessPolicy {
        allowed_hosts,
        allowed_origins,
    }
}

/// The browser page (a directory holding `index.html`) to serve when no `--static-dir` was
/// given: `web/` under the current directory, else `web/` beside any ancestor of the running
/// binary (`target/release/signaling` finds the repository's `web/`).
pub fn default_page_dir() -> Option<PathBuf> {
    let from_cwd = std::env::current_dir().ok();
    let from_binary = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.canonicalize().ok());
    find_page_dir(from_cwd.as_deref(), from_binary.as_deref())
}

fn find_page_dir(cwd: Option<&Path>, binary: Option<&Path>) -> Option<PathBuf> {
    let cwd_candidate = cwd.map(|dir| dir.join("web"));
    let binary_candidates = binary
        .into_iter()
        .flat_map(Path::ancestors)
        .skip(1)
        .map(|dir| dir.join("web"));
    cwd_candidate
        .into_iter()
        .chain(binary_candidates)
        .find(|dir| dir.join("index.html").is_file())
}

/// The URL a browser on this machine opens for a server listening on `addr`: a wildcard
/// address (0.0.0.0, ::) is reachable as loopback.
pub fn page_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
        ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}/", SocketAddr::new(ip, addr.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_resolves_to_ipv4_loopback() {
        let addr = listen_addr("localhost", 8080).unwrap();
        assert_eq!(addr, "127.0.0.1:8080".parse().unwrap());
    }

    #[test]
    fn ip_literals_need_no_resolver() {
        assert_eq!(
            listen_addr("0.0.0.0", 1).unwrap(),
            "0.0.0.0:1".parse().unwrap()
        );
        assert_eq!(listen_addr("[::1]", 2).unwrap(), "[::1]:2".parse().unwrap());
        assert_eq!(listen_addr("::1", 3).unwrap(), "[::1]:3".parse().unwrap());
    }

    #[test]
    fn a_bad_host_is_an_error_not_a_panic() {
        assert!(listen_addr("no such host!", 80).is_err());
        assert!(listen_addr("", 80).is_err());
    }

    #[test]
    fn the_page_is_found_beside_the_binary() {
        let root = std::env::temp_dir().join(format!("signaling-page-{}", std::process::id()));
        let web = root.join("web");
        let bin = root.join("target/release");
        std::fs::create_dir_all(&web).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(web.join("index.html"), "<html></html>").unwrap();
        let elsewhere = root.join("target");
        assert_eq!(
            find_page_dir(Some(&elsewhere), Some(&bin.join("signaling"))),
            Some(web.clone())
        );
        assert_eq!(find_page_dir(Some(&root), None), Some(web));
        assert_eq!(find_page_dir(Some(&elsewhere), None), None);
        std::fs::remove_dir_all(&root).unwrap();
    }
}

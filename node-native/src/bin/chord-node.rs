//! `chord-node`: one native chord-kv peer.
//!
//! ```text
//! chord-node --host 127.0.0.1 --port 5001 --bootstrap 127.0.0.1:5000
//! ```
//! `--port` serves the HTTP API of the original project and the introducer WebSocket (`/ws`),
//! so other peers (native or browser) can bootstrap through this one. `--bootstrap` names any
//! introducer: the `signaling` server or another native peer. Without it (or when it names this
//! peer itself) the peer starts a new ring, a ring of one that merges with the peers that
//! bootstrap through it. An introducer that does not answer is tried again with backoff, and
//! then the introducers this peer reached in earlier runs (`node_native::known_peers`); a peer
//! that cannot join within 10 s serves as a ring of one meanwhile (`node_native::driver`).
//!
//! The peer keeps its store in `--data-dir` (default `$XDG_DATA_HOME/chord-kv/<id>`, else
//! `~/.local/share/chord-kv/<id>`) and comes back with it after a restart; `--in-memory` keeps
//! nothing. `--durability` chooses when commits reach the disk (see `node_native::storage`).
//!
//! `--verify-ids` binds the peer's id to the certificate of its WebRTC links
//! (`node_native::identity`; kept as `identity.pem` in the data dir, default
//! `chord-kv/<SHA-1 of host:port>-verified`) and refuses links whose certificate does not prove
//! the id their sender claims. It excludes `--id`. An existing data dir made without it belongs
//! to another id and is refused by the store; start such a peer without `--verify-ids`, or give
//! it a new `--data-dir` (its keys live on at their other replicas).
//!
//! Requests to the HTTP API and `/ws` must name an IP address, `localhost`, the `--host` name or
//! an `--allow-host` name in `Host`, and come from no web page, this peer's own pages, a
//! loopback page or an `--allow-origin` origin (node_native::http); `--api-token` guards the
//! write routes.
//!
//! `--host` takes an address or a host name (`localhost` is 127.0.0.1). The browser page is
//! served at `/` from `--static-dir`, by default the repository's `web/` when it can be found
//! from the current directory or the binary's location (`signaling::startup`).

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use node_core::node::Config;
use node_core::{Id, rng::splitmix64};
use node_native::driver::{self, DriverConfig, Persistence};
use node_native::http::{self, Api};
use node_native::identity::Identity;
use node_native::known_peers::KnownPeers;
use node_native::rtc::RtcConfig;
use node_native::storage::{Durability, Storage};
use signaling::{PeerId as SigPeer, SignalingConfig, SignalingState, startup};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "A native chord-kv peer: Chord ring over WebRTC, replicated KV store, HTTP API"
)]
struct Cli {
    /// Address or host name to serve the HTTP API and the introducer WebSocket on
    /// (`localhost` is 127.0.0.1).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 5000)]
    port: u16,
    /// An introducer to join through: `host:port` of the signaling server or of any native
    /// peer (or a full `ws://host:port/ws` URL). Omit to start a new ring.
    #[arg(long)]
    bootstrap: Option<String>,
    /// Ring id: 8 hex digits, or any text (hashed with SHA-1). Default: SHA-1 of host:port.
    #[arg(long, conflicts_with = "verify_ids")]
    id: Option<String>,
    /// Ids proven by certificates: this peer's id is derived from the certificate it presents
    /// on every WebRTC link (kept in the data dir as `identity.pem`), and offers and answers
    /// whose certificate does not prove their sender's id are refused. Every peer of the ring
    /// must run with it (tabs: `verifyIds`); see docs/threat-model.md, "Identities".
    #[arg(long)]
    verify_ids: bool,
    /// Replicas per key (k).
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Versions a read waits for (R).
    #[arg(long, default_value_t = 2)]
    read_quorum: usize,
    /// Stores a write waits for (W).
    #[arg(long, default_value_t = 2)]
    write_quorum: usize,
    /// ICE server for WebRTC, e.g. `stun:stun.example.org:3478` (repeatable; none by default).
    #[arg(long = "ice-server")]
    ice_servers: Vec<String>,
    /// Local UDP address for WebRTC (e.g. 127.0.0.1:0 on a loopback-only host).
    #[arg(long, default_value = "0.0.0.0:0")]
    udp_addr: String,
    /// Serve the browser page from this directory (`web/`, with the wasm package built into
    /// `web/pkg` by `cargo xtask wasm`), so browsers can open this peer's URL and join the ring.
    /// Default: the repository's `web/`, looked for under the current directory and above the
    /// binary.
    #[arg(long)]
    static_dir: Option<std::path::PathBuf>,
    /// Directory of this peer's durable store (`store.redb`). Default: a directory per peer id
    /// under the user's data directory, `$XDG_DATA_HOME/chord-kv/<id>` or
    /// `$HOME/.local/share/chord-kv/<id>`.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<std::path::PathBuf>,
    /// Keep the store in memory only: a restarted peer comes back empty.
    #[arg(long, conflicts_with_all = ["data_dir", "durability"])]
    in_memory: bool,
    /// When writes reach the disk. strict: every batch is fsynced before the writes it holds
    /// are acknowledged (a put survives a crash of every acknowledging replica). relaxed: no
    /// fsync per batch, a durable commit at least every second (a crash can lose this replica's
    /// last second of writes; other replicas repair it).
    #[arg(long, value_enum, default_value_t = Durability::Strict)]
    durability: Durability,
    /// Worker threads of the async runtime. One by default: the peer's core is one task, and
    /// every frame crosses several tasks (HTTP, driver, link writer, WebRTC); with one worker
    /// they hand over on the same thread instead of waking a second one, which took a put's
    /// p50 from 0.82 to 0.55 ms on 5 peers (`chord-experiment --mode scale`, docs/design.md).
    /// Disk commits still leave the worker free (`block_in_place`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    threads: u16,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `node_native=debug`.
    #[arg(long, default_value = "info")]
    log: String,
    /// A host name (besides IP addresses, `localhost` and the `--host` name) that requests to
    /// the HTTP API and `/ws` may name in `Host`; others get 403 `bad_host` (DNS rebinding
    /// guard). `*` accepts any. Repeatable.
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_hosts: Vec<String>,
    /// An origin (`https://app.example`) whose web pages may call the HTTP API and `/ws`,
    /// besides this peer's own pages and pages on loopback; others get 403 `bad_origin`. `*`
    /// accepts any. Repeatable.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allow_origins: Vec<String>,
    /// Require `Authorization: Bearer TOKEN` on the HTTP routes that write or start ring-wide
    /// work (`/put`, `/delete`, `/g_start_query`); reads stay open. Default: no token.
    #[arg(long, value_name = "TOKEN")]
    api_token: Option<String>,
    /// Most introducer sessions (`/ws`) open at once from one address (IPv6: one /64); loopback
    /// clients are exempt.
    #[arg(long, default_value_t = SignalingConfig::default().max_sessions_per_addr)]
    max_sessions_per_addr: usize,
}

fn parse_id(text: &str) -> Id {
    if text.len() == 8
        && let Ok(raw) = u32::from_str_radix(text, 16)
    {
        return Id(raw);
    }
    Id::of(text.as_bytes())
}

/// The default data directory of peer `id`: per user, per peer.
fn default_data_dir(id: Id) -> anyhow::Result<std::path::PathBuf> {
    let base = match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => std::path::PathBuf::from(dir),
        None => std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .map(|home| std::path::PathBuf::from(home).join(".local/share"))
            .context("neither XDG_DATA_HOME nor HOME is set: give --data-dir or --in-memory")?,
    };
    Ok(base.join("chord-kv").join(id.to_string()))
}

/// The directory of this peer's store and certificate: `--data-dir`, or the default one of
/// `id`; `None` with `--in-memory`.
fn data_dir(cli: &Cli, id: Id) -> anyhow::Result<Option<std::path::PathBuf>> {
    if cli.in_memory {
        return Ok(None);
    }
    match &cli.data_dir {
        Some(dir) => Ok(Some(dir.clone())),
        None => default_data_dir(id).map(Some),
    }
}

/// This peer's id and, with `--verify-ids`, the certificate that proves it. A verifying peer's
/// default data directory is named after its address (`<SHA-1 of host:port>-verified`), since
/// its id is only known once the certificate in it is read.
fn identity(
    cli: &Cli,
    addr: std::net::SocketAddr,
) -> anyhow::Result<(Id, Option<Identity>, Option<std::path::PathBuf>)> {
    let by_address = Id::of(addr.to_string().as_bytes());
    if !cli.verify_ids {
        let id = cli.id.as_deref().map_or(by_address, parse_id);
        return Ok((id, None, data_dir(cli, id)?));
    }
    let dir = match data_dir(cli, by_address)? {
        Some(dir) if cli.data_dir.is_none() => {
            Some(dir.with_file_name(format!("{by_address}-verified")))
        }
        other => other,
    };
    let identity = match &dir {
        Some(dir) => Identity::load_or_create(dir)?,
        None => Identity::generate()?,
    };
    Ok((identity.id(), Some(identity), dir))
}

/// Opens and reads the peer's store in `dir` and the introducers it remembers, or nothing
/// without a directory (`--in-memory`).
fn open_store(
    cli: &Cli,
    id: Id,
    dir: Option<std::path::PathBuf>,
) -> anyhow::Result<(Option<Persistence>, KnownPeers)> {
    let Some(dir) = dir else {
        return Ok((None, KnownPeers::in_memory()));
    };
    let started = std::time::Instant::now();
    let storage = Storage::open(&dir, id, cli.durability)?;
    let mut loaded = storage.load()?;
    loaded.took = started.elapsed();
    Ok((
        Some(Persistence { storage, loaded }),
        KnownPeers::load(&dir),
    ))
}

/// Whether `--bootstrap` names this peer itself (the same address, or a name that resolves to
/// it): then there is no one to join through yet, and the peer starts as a ring of one that
/// merges with the peers that bootstrap through it (`node_native::driver`).
fn bootstrap_is_self(bootstrap: &str, addr: std::net::SocketAddr) -> bool {
    let rest = bootstrap
        .strip_prefix("ws://")
        .or_else(|| bootstrap.strip_prefix("wss://"))
        .unwrap_or(bootstrap);
    let host_port = rest.split('/').next().unwrap_or(rest);
    let Some((host, port)) = host_port.rsplit_once(':') else {
        return false;
    };
    let Ok(port) = port.parse::<u16>() else {
        return false;
    };
    if port != addr.port() {
        return false;
    }
    match startup::listen_addr(host.trim_matches(['[', ']']), port) {
        Ok(resolved) => {
            resolved == addr || (addr.ip().is_unspecified() && resolved.ip().is_loopback())
        }
        Err(_) => false,
    }
}

fn bootstrap_url(text: &str) -> String {
    if text.starts_with("ws://") || text.starts_with("wss://") {
        text.to_string()
    } else {
        format!("ws://{text}/ws")
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.into())
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("chord-node: error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line with the cause chain, not anyhow's Debug form with a backtrace.
            eprintln!("chord-node: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let addr = startup::listen_addr(&cli.host, cli.port)
        .with_context(|| format!("bad --host {:?}", cli.host))?;
    // `localhost` and `127.0.0.1` name the same peer: its id and writer id use the address.
    let (id, identity, dir) = identity(&cli, addr)?;
    let (persistence, known) = open_store(&cli, id, dir)?;
    let bootstrap = match cli.bootstrap.as_deref() {
        Some(b) if bootstrap_is_self(b, addr) => {
            println!(
                "chord-node: --bootstrap {b} is this peer: starting as a ring of one; peers that \
                 bootstrap through it merge it into their ring"
            );
            None
        }
        other => other.map(bootstrap_url),
    };

    let mut seed = u64::from(id.0) ^ std::process::id() as u64;
    let now_nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    seed ^= now_nanos;
    let mut node = Config::with_seed(splitmix64(&mut seed));
    node.replicas = cli.replicas;
    node.read_quorum = cli.read_quorum;
    node.write_quorum = cli.write_quorum;
    node.agent = node_native::agent();

    let access = startup::access_policy(
        &cli.host,
        cli.allow_hosts.clone(),
        cli.allow_origins.clone(),
    );
    let introducer = SignalingState::new(SignalingConfig {
        max_sessions_per_addr: cli.max_sessions_per_addr,
        // A verifying peer's introducer serves a verifying ring (signaling's protocol docs).
        share_verified_ids: cli.verify_ids,
        access: access.clone(),
        ..SignalingConfig::default()
    });
    let local = introducer
        .local_session(SigPeer::new(id.0))
        .context("cannot register this peer on its own introducer")?;
    let rtc = RtcConfig {
        ice_servers: cli.ice_servers.clone(),
        udp_addrs: vec![cli.udp_addr.clone()],
        verify_ids: identity.is_some(),
        certificate: identity.map(|i| i.certificate),
        ..RtcConfig::default()
    };
    let peer = driver::spawn(
        DriverConfig {
            id,
            node,
            rtc,
            bootstrap,
            http_addr: Some(addr.to_string()),
            introducer: Some(introducer.clone()),
            known,
        },
        Some(local),
        persistence,
    );
    let restored = match peer.status().await.map(|s| s.driver.storage) {
        Some(s) if s.durability == "in-memory" => "store in memory only".to_string(),
        Some(s) => format!(
            "restored {} entries from {} in {:.1} ms, durability {}",
            s.restored_entries, s.path, s.restore_ms, s.durability
        ),
        None => anyhow::bail!("the peer stopped while starting (see the log above)"),
    };

    let api = Api::new(peer.clone(), addr.to_string())
        .with_access(access)
        .with_api_token(cli.api_token.clone())
        .with_introducer(introducer.clone());
    let page_dir = match &cli.static_dir {
        Some(dir) => {
            anyhow::ensure!(
                dir.is_dir(),
                "--static-dir {} is not a directory",
                dir.display()
            );
            Some(dir.clone())
        }
        None => startup::default_page_dir(),
    };
    let api_routes = match &page_dir {
        Some(dir) => http::router_with_page(api, dir),
        None => http::router(api),
    };
    let app = api_routes
        .merge(signaling::router(introducer.clone()))
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(%id, %addr, "chord-node serving HTTP API and introducer");
    println!("chord-node {id} listening on http://{addr} ({restored})");
    match &page_dir {
        Some(dir) => println!(
            "chord-node: page at {} (from {})",
            startup::page_url(addr),
            dir.display()
        ),
        None => println!(
            "chord-node: no page served (no web/index.html under the current directory or above \
             the binary; pass --static-dir web after `cargo xtask wasm`)"
        ),
    }
    let leaving = peer.clone();
    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
        stop_signal().await;
        // SIGTERM or SIGINT: leave gracefully (the neighbours take over at once instead of
        // noticing a dead link seconds later; the replicas already hold this peer's keys),
        // within a bounded time. A second signal exits at once.
        tokio::spawn(async {
            stop_signal().await;
            eprintln!("chord-node: second signal, exiting now");
            std::process::exit(130);
        });
        println!("chord-node: leaving the ring");
        let left = tokio::time::timeout(
            std::time::Duration::from_secs(3),
            leaving.call(driver::Command::Leave),
        )
        .await;
        if left.is_err() {
            eprintln!("chord-node: the leave did not finish within 3 s; exiting anyway");
        }
        // Let the goodbyes leave the data channels before the process ends: a closing link
        // writes its queued frames for up to 500 ms (`rtc.rs`, `FLUSH_WAIT`).
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        introducer.shutdown();
    });
    tokio::select! {
        served = serve => served.context("HTTP server failed")?,
        () = peer.closed() => {
            anyhow::bail!("the peer stopped: its store could not be written (see the log above)")
        }
    }
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (`kill`, service managers, the original project's
/// churn script).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

//! `signaling`: the standalone chord-kv introducer.
//!
//! Serves the introducer WebSocket at `/ws`, `/healthz`, and the browser page at `/`: the
//! `--static-dir` directory, or by default the repository's `web/` (found from the current
//! directory or from the binary's location, see `signaling::startup`). Prints the page's URL.
//! Logs with `RUST_LOG` (default `info`) to stderr. Ctrl-C closes every session with a close
//! frame and stops. `/ws` and `/healthz` check `Host` and `Origin` (`signaling::access`;
//! `--allow-host`, `--allow-origin`); the page itself is public and served to any request.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use signaling::{SignalingConfig, SignalingState, router, startup};
use tower_http::services::ServeDir;
use tower_http::trace::TraceLayer;
use tracing::info;
use tracing_subscriber::EnvFilter;

/// How long Ctrl-C waits for open sessions to say goodbye.
const SESSION_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The chord-kv introducer: relays WebRTC signaling between peers that have no link yet.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address or host name to listen on (`localhost` is 127.0.0.1).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 picks a free one; the log says which).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Directory served at `/` (the web page and its wasm package). Default: `web/` of the
    /// repository, looked for under the current directory and above the binary.
    #[arg(long, value_name = "DIR")]
    static_dir: Option<PathBuf>,
    /// Most WebSocket sessions open at once.
    #[arg(long, default_value_t = SignalingConfig::default().max_sessions)]
    max_sessions: usize,
    /// Longest accepted frame, in bytes.
    #[arg(long, default_value_t = SignalingConfig::default().max_frame_bytes)]
    max_frame_bytes: usize,
    /// Sustained frames per second per session (0: unlimited).
    #[arg(long, default_value_t = SignalingConfig::default().max_msgs_per_sec)]
    max_msgs_per_sec: u32,
    /// Frames a session may send in a burst.
    #[arg(long, default_value_t = SignalingConfig::default().rate_burst)]
    rate_burst: u32,
    /// Most peer ids listed in a welcome.
    #[arg(long, default_value_t = SignalingConfig::default().welcome_peers)]
    welcome_peers: usize,
    /// Most WebSocket sessions open at once from one address (IPv6: one /64); loopback
    /// clients are exempt.
    #[arg(long, default_value_t = SignalingConfig::default().max_sessions_per_addr)]
    max_sessions_per_addr: usize,
    /// A host name (besides IP addresses, `localhost` and the `--host` name) that requests may
    /// name in `Host`; guards against DNS rebinding. `*` accepts any. Repeatable.
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_hosts: Vec<String>,
    /// An origin (`https://app.example`) whose web pages may open `/ws`, besides this server's
    /// own pages and pages on loopback. `*` accepts any. Repeatable.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allow_origins: Vec<String>,
    /// This introducer serves a ring of `--verify-ids` peers (tabs: `verifyIds`): a hello
    /// marked verified may share an id another session holds, so squatting an id keeps nobody
    /// out. Do not set it for a ring that does not verify ids.
    #[arg(long)]
    verified_ids: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("signaling: error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line with the cause chain, not anyhow's Debug form with a backtrace.
            eprintln!("signaling: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let state = SignalingState::new(SignalingConfig {
        max_sessions: args.max_sessions,
        max_frame_bytes: args.max_frame_bytes,
        max_msgs_per_sec: args.max_msgs_per_sec,
        rate_burst: args.rate_burst,
        welcome_peers: args.welcome_peers,
        max_sessions_per_addr: args.max_sessions_per_addr,
        share_verified_ids: args.verified_ids,
        access: startup::access_policy(&args.host, args.allow_hosts, args.allow_origins),
        ..SignalingConfig::default()
    });
    let mut app = router(state.clone());
    let page_dir = match args.static_dir {
        Some(dir) => {
            anyhow::ensure!(
                dir.is_dir(),
                "--static-dir {} is not a directory",
                dir.display()
            );
            Some(dir)
        }
        None => startup::default_page_dir(),
    };
    if let Some(dir) = &page_dir {
        app = app.fallback_service(ServeDir::new(dir));
    }
    let app = app.layer(TraceLayer::new_for_http());

    let wanted = startup::listen_addr(&args.host, args.port)
        .with_context(|| format!("bad --host {:?}", args.host))?;
    let listener = tokio::net::TcpListener::bind(wanted)
        .await
        .with_context(|| format!("cannot listen on {wanted}"))?;
    let addr = listener.local_addr()?;
    info!(%addr, static_dir = ?page_dir, "listening on http://{addr}");
    let url = startup::page_url(addr);
    match &page_dir {
        Some(dir) => println!("signaling: page at {url} (from {})", dir.display()),
        None => println!(
            "signaling: introducer at {url}ws; no page served (no web/index.html under the \
             current directory or above the binary): run from the repository, or pass \
             --static-dir web after `cargo xtask wasm`"
        ),
    }

    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            match tokio::signal::ctrl_c().await {
                Ok(()) => info!("ctrl-c: shutting down"),
                // Without a signal handler there is no way to be asked to stop; run on.
                Err(err) => {
                    tracing::error!(%err, "cannot listen for ctrl-c");
                    std::future::pending::<()>().await;
                }
            }
            state.shutdown();
            // Upgraded connections are not tracked by the HTTP server's graceful shutdown; wait
            // (briefly) for the sessions to send their close frames before the runtime stops.
            if tokio::time::timeout(SESSION_CLOSE_WAIT, state.sessions_closed())
                .await
                .is_err()
            {
                tracing::warn!("some sessions did not close in time");
            }
        })
        .await
        .context("server failed")?;
    info!("stopped");
    Ok(())
}

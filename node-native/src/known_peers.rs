//! The introducers a durable peer could bootstrap through, kept across restarts.
//!
//! A peer with a data dir remembers, in `<data-dir>/known-introducers.json` (a JSON array of
//! `ws://host:port/ws` URLs, most recently reached first, at most [`MAX_KNOWN`]), every
//! introducer its session reached: its `--bootstrap` (the signaling server or a native peer)
//! and, from earlier runs, the ones it was given then. At the next start the driver tries
//! `--bootstrap` first and these after it, in turn, whenever the one before does not answer
//! (`crate::driver`), so a peer whose `--bootstrap` is down still finds the ring through an
//! introducer it knew. A peer started without `--bootstrap` also opens a session to them, so a
//! restarted first peer merges back into the ring it left.
//!
//! What it does not learn: the addresses of the other native peers of the ring (the introducer
//! protocol carries peer ids only, and WebRTC links carry no HTTP address), so a ring whose
//! peers all bootstrapped through one introducer has only that one to fall back on.
//!
//! The file is small and written rarely (only when the list changes), by write-then-rename,
//! so a crash leaves the old list or the new one. A missing or unreadable file is an empty list
//! (this is a hint, never a reason to refuse to start).

use std::path::{Path, PathBuf};

/// Introducers remembered at most.
pub const MAX_KNOWN: usize = 8;

/// The file's name inside the data dir.
pub const FILE_NAME: &str = "known-introducers.json";

/// The remembered introducer URLs and where they are kept.
#[derive(Debug, Clone, Default)]
pub struct KnownPeers {
    path: Option<PathBuf>,
    urls: Vec<String>,
}

impl KnownPeers {
    /// Nothing remembered, nothing written (an in-memory peer).
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// Reads `<dir>/known-introducers.json` (an empty list if missing or unreadable).
    pub fn load(dir: &Path) -> Self {
        let path = dir.join(FILE_NAME);
        let urls = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str::<Vec<String>>(&text).ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|u| u.starts_with("ws://") || u.starts_with("wss://"))
            .take(MAX_KNOWN)
            .collect();
        Self {
            path: Some(path),
            urls,
        }
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// `url` answered: it goes first. Written to disk when the list changed.
    pub fn reached(&mut self, url: &str) {
        if self.urls.first().is_some_and(|u| u == url) {
            return;
        }
        self.urls.retain(|u| u != url);
        self.urls.insert(0, url.to_string());
        self.urls.truncate(MAX_KNOWN);
        if let Err(e) = self.save() {
            tracing::warn!(%e, "cannot remember the introducer");
        }
    }

    fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(&self.urls).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)
    }

    /// The URLs a session tries, in turn: `first` (the `--bootstrap`), then the remembered
    /// ones, each once.
    pub fn session_urls(&self, first: Option<&str>) -> Vec<String> {
        let mut urls: Vec<String> = first.map(str::to_string).into_iter().collect();
        for url in &self.urls {
            if !urls.contains(url) {
                urls.push(url.clone());
            }
        }
        urls
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_introducer_reached_comes_first_and_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("known-peers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut known = KnownPeers::load(&dir);
        assert!(known.urls().is_empty());
        known.reached("ws://127.0.0.1:5000/ws");
        known.reached("ws://127.0.0.1:5001/ws");
        known.reached("ws://127.0.0.1:5000/ws");
        let again = KnownPeers::load(&dir);
        assert_eq!(
            again.urls(),
            ["ws://127.0.0.1:5000/ws", "ws://127.0.0.1:5001/ws"]
        );
        assert_eq!(
            again.session_urls(Some("ws://127.0.0.1:5001/ws")),
            ["ws://127.0.0.1:5001/ws", "ws://127.0.0.1:5000/ws"]
        );
        std::fs::write(dir.join(FILE_NAME), "not json").unwrap();
        assert!(KnownPeers::load(&dir).urls().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

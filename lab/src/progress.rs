//! A progress bar on stderr for long simulator runs, fed by [`Progress`] callbacks.
//!
//! Why it starts late: most runs finish in well under a second and a bar that flashes up and
//! vanishes is noise, so the bar is only created once a run has lasted [`SHOW_AFTER`]. When
//! stderr is not a terminal (CI logs, `2> file`) nothing is ever drawn.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use crate::experiments::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long a run must last before its bar appears.
pub const SHOW_AFTER: Duration = Duration::from_secs(1);

/// The bar for one run (e.g. one ring size). Create it just before the run, feed it every
/// callback with [`ProgressDisplay::update`], and call [`ProgressDisplay::finish`] afterwards so
/// the bar is cleared before the run's result is printed.
#[derive(Debug)]
pub struct ProgressDisplay {
    label: String,
    started: Instant,
    terminal: bool,
    bar: Option<ProgressBar>,
    phase: &'static str,
}

impl ProgressDisplay {
    /// `label` prefixes the bar, e.g. `N=4096`.
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            started: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
            bar: None,
            phase: "",
        }
    }

    /// Records the latest progress; draws (rate-limited by indicatif) once the run is long enough.
    pub fn update(&mut self, progress: Progress) {
        let Some(bar) = &self.bar else {
            if self.terminal && self.started.elapsed() >= SHOW_AFTER {
                self.bar = Some(self.create_bar(progress));
            }
            return;
        };
        if progress.phase != self.phase {
            self.phase = progress.phase;
            bar.set_message(progress.phase);
        }
        if bar.length() != Some(progress.total) {
            bar.set_length(progress.total);
        }
        bar.set_position(progress.done.min(progress.total));
    }

    /// Clears the bar, if one was drawn.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }

    fn create_bar(&mut self, progress: Progress) -> ProgressBar {
        let style = ProgressStyle::with_template(
            "{prefix:>8} {msg:>9} [{bar:32}] {pos:>7}/{len:7} {elapsed_precise}",
        )
        .expect("the template is valid")
        .progress_chars("=> ");
        self.phase = progress.phase;
        // Set everything up while hidden, so the first frame drawn is already complete and the
        // clock counts from the start of the run, not from when the bar appeared.
        let bar = ProgressBar::with_draw_target(Some(progress.total), ProgressDrawTarget::hidden())
            .with_style(style)
            .with_prefix(self.label.clone())
            .with_message(progress.phase)
            .with_position(progress.done.min(progress.total))
            .with_elapsed(self.started.elapsed());
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar
    }
}

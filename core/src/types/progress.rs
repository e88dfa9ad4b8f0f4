//! A progress bar on long waits, shown only when stderr is a terminal.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shows a bar after a short delay, so quick waits print nothing.
pub(crate) struct Progress {
    enabled: bool,
    total: u64,
    label: String,
    since: Instant,
    bar: Option<ProgressBar>,
}

const SHOW_AFTER: Duration = Duration::from_millis(500);

impl Progress {
    pub(crate) fn new(enabled: bool, total: u64, job: &str, action: &str) -> Self {
        Progress {
            enabled: enabled && total > 1 && std::io::stderr().is_terminal(),
            total,
            label: format!("{action} {job}"),
            since: Instant::now(),
            bar: None,
        }
    }

    /// Shows `finished` of the total, the failures, and (several regions) finished tasks per
    /// region.
    pub(crate) fn update(&mut self, finished: u64, failed: u64, regions: Option<&str>) {
        if !self.enabled {
            return;
        }
        if self.bar.is_none() && self.since.elapsed() >= SHOW_AFTER && finished < self.total {
            let bar = ProgressBar::with_draw_target(Some(self.total), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{bar:30}] {pos}/{len} tasks, {elapsed} elapsed, eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(self.label.clone());
            self.bar = Some(bar);
        }
        if let Some(bar) = &self.bar {
            bar.set_position(finished);
            if failed > 0 || regions.is_some() {
                let failed = if failed > 0 {
                    format!(" ({failed} failed)")
                } else {
                    String::new()
                };
                let regions = regions.map(|r| format!(" [{r}]")).unwrap_or_default();
                bar.set_message(format!("{}{failed}{regions}", self.label));
            }
        }
    }

    pub(crate) fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

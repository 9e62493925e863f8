//! A progress line on stderr for long work (`perplexity` chunks, a long prompt): shown
//! only when stderr is a terminal, redrawn in place (`\r`), with the rate and the time
//! left, and erased when the work is done. Redirected stderr gets nothing.

use std::io::Write;
use std::time::{Duration, Instant};

/// One progress line: `LABEL: done/total UNIT (pct%), ETA 1m05s`.
pub struct Progress {
    label: String,
    unit: &'static str,
    total: usize,
    start: Instant,
    last_draw: Option<Instant>,
    shown: bool,
    enabled: bool,
}

/// Redraws closer together than this are skipped (a terminal is not a log).
const REDRAW_EVERY: Duration = Duration::from_millis(100);

impl Progress {
    /// A progress line over `total` `unit`s (`"chunks"`, `"tokens"`), drawn only if
    /// `enabled` (callers pass whether stderr is a terminal, and whatever else decides it).
    pub fn with_output(
        label: impl Into<String>,
        total: usize,
        unit: &'static str,
        enabled: bool,
    ) -> Progress {
        Progress {
            label: label.into(),
            unit,
            total,
            start: Instant::now(),
            last_draw: None,
            shown: false,
            enabled,
        }
    }

    /// The line for `done` units after `elapsed`.
    pub fn line(&self, done: usize, elapsed: Duration) -> String {
        let pct = if self.total == 0 { 100.0 } else { 100.0 * done as f64 / self.total as f64 };
        let eta = if done == 0 || done >= self.total {
            String::new()
        } else {
            let left = elapsed.as_secs_f64() * (self.total - done) as f64 / done as f64;
            format!(", ETA {}", human(left))
        };
        format!("{}: {done}/{} {} ({pct:.0}%){eta}", self.label, self.total, self.unit)
    }

    /// `done` units are finished: redraws the line (at most every 100 ms, and always at
    /// the end).
    pub fn update(&mut self, done: usize) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if done < self.total && self.last_draw.is_some_and(|t| now - t < REDRAW_EVERY) {
            return;
        }
        self.last_draw = Some(now);
        let line = self.line(done, now - self.start);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
        self.shown = true;
    }

    /// Erases the line (the work is done, or other output follows).
    pub fn clear(&mut self) {
        if self.shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.shown = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

/// `s` seconds as `42s`, `3m05s` or `1h02m`.
fn human(s: f64) -> String {
    let s = s.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_counts_percent_and_time_left() {
        let p = Progress::with_output("perplexity", 8, "chunks", false);
        assert_eq!(p.line(0, Duration::ZERO), "perplexity: 0/8 chunks (0%)");
        assert_eq!(p.line(2, Duration::from_secs(10)), "perplexity: 2/8 chunks (25%), ETA 30s");
        assert_eq!(p.line(1, Duration::from_secs(65)), "perplexity: 1/8 chunks (12%), ETA 7m35s");
        assert_eq!(p.line(8, Duration::from_secs(80)), "perplexity: 8/8 chunks (100%)");
        assert_eq!(human(7322.0), "2h02m");
    }
}

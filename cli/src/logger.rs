//! The CLI's logger: the libraries never print; their `log` records come out here, on
//! stderr, one line each (`pagoda: warning: …`). `PAGODA_LOG=off|error|warn|info|debug|trace`
//! sets the level (default `warn`).

use std::io::Write;

use log::{LevelFilter, Log, Metadata, Record};

struct Stderr;

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            let level = match record.level() {
                log::Level::Error => "error",
                log::Level::Warn => "warning",
                log::Level::Info => "info",
                log::Level::Debug => "debug",
                log::Level::Trace => "trace",
            };
            // Nothing sensible to do if stderr is gone.
            let _ = writeln!(std::io::stderr().lock(), "pagoda: {level}: {}", record.args());
        }
    }

    fn flush(&self) {}
}

static LOGGER: Stderr = Stderr;

/// Installs the stderr logger at the level `PAGODA_LOG` names (default `warn`; an
/// unknown value keeps the default and says so).
pub fn install() {
    let (level, bad) = match std::env::var("PAGODA_LOG") {
        Ok(v) if !v.trim().is_empty() => match v.trim().parse::<LevelFilter>() {
            Ok(l) => (l, None),
            Err(_) => (LevelFilter::Warn, Some(v)),
        },
        _ => (LevelFilter::Warn, None),
    };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
    if let Some(v) = bad {
        log::warn!("PAGODA_LOG={v:?} is not one of off|error|warn|info|debug|trace; using warn");
    }
}

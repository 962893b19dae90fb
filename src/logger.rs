//! A small `log` backend: `/dev/kmsg` in the initrd, stderr with `<N>` priority prefixes under
//! systemd (`JOURNAL_STREAM` set), plain stderr otherwise. Every line starts with `ephemeral-root:`.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;
use std::sync::Mutex;

enum Sink {
    Kmsg(std::fs::File),
    Journal,
    Plain,
}

struct Logger {
    sink: Mutex<Sink>,
}

fn priority(l: Level) -> u8 {
    match l {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let Ok(mut sink) = self.sink.lock() else {
            return;
        };
        let p = priority(r.level());
        match &mut *sink {
            Sink::Kmsg(f) => {
                // One write per record: the kernel turns each write into one log line (max ~1 KiB).
                let mut line = format!("<{p}>ephemeral-root: {}", r.args());
                line.truncate(976);
                line.push('\n');
                if f.write_all(line.as_bytes()).is_err() {
                    let _ = writeln!(std::io::stderr(), "<{p}>ephemeral-root: {}", r.args());
                }
            }
            Sink::Journal => {
                let _ = writeln!(std::io::stderr(), "<{p}>ephemeral-root: {}", r.args());
            }
            Sink::Plain => {
                let tag = match r.level() {
                    Level::Error => "error: ",
                    Level::Warn => "warning: ",
                    _ => "",
                };
                let _ = writeln!(std::io::stderr(), "ephemeral-root: {tag}{}", r.args());
            }
        }
    }
    fn flush(&self) {}
}

/// Install the logger. `verbosity`: 0 = info, >0 more, <0 less.
pub fn init(verbosity: i32) {
    let in_initrd = std::path::Path::new("/etc/initrd-release").exists();
    let forced = std::env::var("EPHEMERAL_ROOT_LOG").ok();
    let sink = match forced.as_deref() {
        Some("kmsg") => kmsg().unwrap_or(Sink::Plain),
        Some("journal") => Sink::Journal,
        Some("stderr") => Sink::Plain,
        _ if in_initrd => kmsg().unwrap_or(Sink::Journal),
        _ if std::env::var_os("JOURNAL_STREAM").is_some() => Sink::Journal,
        _ => Sink::Plain,
    };
    let level = match verbosity {
        i32::MIN..=-2 => LevelFilter::Error,
        -1 => LevelFilter::Warn,
        0 => LevelFilter::Info,
        1 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    };
    let logger = Box::leak(Box::new(Logger {
        sink: Mutex::new(sink),
    }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

fn kmsg() -> Option<Sink> {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .ok()
        .map(Sink::Kmsg)
}

//! Everything the user sees: progress reporters, tables, JSON output.
//!
//! Library code reports through [`Reporter`]; only this module decides how that looks:
//! spinners on a terminal, plain status lines otherwise, NDJSON events with `--output json`.

mod reporters;
pub mod table;

/// Like `print!`, but a reader that went away (`devenv down | head -1`) does not stop the
/// command: what it no longer takes is dropped and the work goes on to the end.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = write!(::std::io::stdout(), $($arg)*);
    }};
}

/// Like `println!`, without failing on a closed stdout (see [`out!`]).
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = writeln!(::std::io::stdout(), $($arg)*);
    }};
}

/// Like `eprint!`, without failing on a closed stderr (see [`out!`]).
#[macro_export]
macro_rules! err {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = write!(::std::io::stderr(), $($arg)*);
    }};
}

/// Like `eprintln!`, without failing on a closed stderr (see [`out!`]).
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = writeln!(::std::io::stderr(), $($arg)*);
    }};
}

use std::io::IsTerminal;
use std::time::Duration;

use serde::Serialize;

pub use reporters::{JsonReporter, PlainReporter, SilentReporter, TtyReporter};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Ok,
    Unchanged,
    Failed,
}

/// A progress event. `step` identifies one unit of work, e.g. `substitute/orders-db`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event<'a> {
    Started {
        step: &'a str,
        message: &'a str,
    },
    Progress {
        step: &'a str,
        message: &'a str,
    },
    Finished {
        step: &'a str,
        status: Status,
        message: &'a str,
        #[serde(rename = "elapsedMs")]
        elapsed_ms: u128,
    },
    Warning {
        message: &'a str,
    },
}

pub trait Reporter: Send + Sync {
    fn report(&self, event: Event<'_>);
}

/// Convenience methods for library code.
pub trait ReporterExt: Reporter {
    fn started(&self, step: &str, message: &str) {
        self.report(Event::Started { step, message });
    }
    fn progress(&self, step: &str, message: &str) {
        self.report(Event::Progress { step, message });
    }
    fn finished(&self, step: &str, status: Status, message: &str, elapsed: Duration) {
        self.report(Event::Finished { step, status, message, elapsed_ms: elapsed.as_millis() });
    }
    fn warning(&self, message: &str) {
        self.report(Event::Warning { message });
    }
}

impl<R: Reporter + ?Sized> ReporterExt for R {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum OutputFormat {
    Text,
    Json,
}

/// How much the user wants to hear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

/// The reporter that fits the output format, verbosity and terminal.
pub fn reporter(format: OutputFormat, verbosity: Verbosity) -> Box<dyn Reporter> {
    match (format, verbosity) {
        (OutputFormat::Json, _) => Box::new(JsonReporter),
        (_, Verbosity::Quiet) => Box::new(SilentReporter),
        _ if std::io::stderr().is_terminal() => Box::new(TtyReporter::new()),
        _ => Box::new(PlainReporter::new(verbosity == Verbosity::Verbose)),
    }
}

/// The version of the shape of every `result` and `error` line (README, "JSON results"): raised
/// when a key is renamed or removed, or its meaning changes; new keys do not raise it.
pub const SCHEMA_VERSION: u32 = 1;

/// Prints a command's result as the last NDJSON line on stdout: the object with
/// `"event": "result"` and `"schemaVersion"` added.
pub fn print_result(value: &impl Serialize) {
    print_event("result", value);
}

/// Prints `value` (an object) with an `event` field on one line of stdout; a `result` or an
/// `error` also gets `schemaVersion`.
pub fn print_event(event: &str, value: &impl Serialize) {
    let mut object = match serde_json::to_value(value).expect("output serialises") {
        serde_json::Value::Object(object) => object,
        other => serde_json::Map::from_iter([("value".to_string(), other)]),
    };
    object.insert("event".to_string(), event.into());
    if matches!(event, "result" | "error") {
        object.insert("schemaVersion".to_string(), SCHEMA_VERSION.into());
    }
    crate::outln!("{}", serde_json::Value::Object(object));
}

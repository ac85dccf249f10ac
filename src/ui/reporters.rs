use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::{Event, Reporter, Status};

/// Reports nothing (`-q`); warnings still reach stderr.
pub struct SilentReporter;

impl Reporter for SilentReporter {
    fn report(&self, event: Event<'_>) {
        if let Event::Warning { message } = event {
            crate::errln!("warning: {message}");
        }
    }
}

/// NDJSON events on stdout, one object per line.
pub struct JsonReporter;

impl Reporter for JsonReporter {
    fn report(&self, event: Event<'_>) {
        let line = serde_json::to_string(&event).expect("events serialise");
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    }
}

/// cargo-style status lines on stderr: a right-aligned verb and a subject.
pub struct PlainReporter {
    verbose: bool,
}

impl PlainReporter {
    pub fn new(verbose: bool) -> Self {
        PlainReporter { verbose }
    }
}

fn subject(step: &str) -> &str {
    step.rsplit('/').next().unwrap_or(step)
}

fn verb(status: Status) -> &'static str {
    match status {
        Status::Ok => "Ready",
        Status::Unchanged => "Unchanged",
        Status::Failed => "Failed",
    }
}

impl Reporter for PlainReporter {
    fn report(&self, event: Event<'_>) {
        let line = match event {
            Event::Started { step, message } => {
                format!("{:>12} {} {message}", "Starting", subject(step))
            }
            Event::Progress { step, message } if self.verbose => {
                format!("{:>12} {} {message}", "", subject(step))
            }
            Event::Progress { .. } => return,
            Event::Finished { step, status, message, elapsed_ms } => {
                format!("{:>12} {} {message} ({:.1}s)", verb(status), subject(step), elapsed_ms as f64 / 1000.0)
            }
            Event::Warning { message } => format!("warning: {message}"),
        };
        crate::errln!("{line}");
    }
}

/// A spinner per step on a terminal.
pub struct TtyReporter {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl TtyReporter {
    pub fn new() -> Self {
        TtyReporter { multi: MultiProgress::new(), bars: Mutex::new(HashMap::new()) }
    }
}

impl Default for TtyReporter {
    fn default() -> Self {
        Self::new()
    }
}

impl Reporter for TtyReporter {
    fn report(&self, event: Event<'_>) {
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Started { step, message } => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner:.cyan} {prefix:.bold} {wide_msg} {elapsed:.dim}")
                        .expect("valid template"),
                );
                bar.set_prefix(subject(step).to_string());
                bar.set_message(message.to_string());
                bar.enable_steady_tick(Duration::from_millis(100));
                bars.insert(step.to_string(), bar);
            }
            Event::Progress { step, message } => {
                if let Some(bar) = bars.get(step) {
                    bar.set_message(message.to_string());
                }
            }
            Event::Finished { step, status, message, elapsed_ms } => {
                let line =
                    format!("{:>12} {} {message} ({:.1}s)", verb(status), subject(step), elapsed_ms as f64 / 1000.0);
                match bars.remove(step) {
                    Some(bar) => {
                        bar.finish_and_clear();
                        let _ = self.multi.println(line);
                    }
                    None => crate::errln!("{line}"),
                }
            }
            Event::Warning { message } => {
                let _ = self.multi.println(format!("warning: {message}"));
            }
        }
    }
}

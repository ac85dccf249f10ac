//! `devenv logs SERVICE`: a substitute's output, as its runtime keeps it.

use std::io::Write as _;
use std::time::SystemTime;

use futures_util::StreamExt;
use serde::Serialize;

use super::{Context, Error as CommandError};
use crate::cli::LogsArgs;
use crate::config;
use crate::docker::LogStream;
use crate::errors::Error;
use crate::naming;
use crate::substitutes;
use crate::ui;

/// One line of output, for `--output json`.
#[derive(Debug, Serialize)]
struct Line<'a> {
    stream: LogStream,
    line: &'a str,
}

/// What `logs --output json` ends with.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    service: String,
    container: String,
    /// Lines printed.
    lines: usize,
}

pub async fn run(ctx: &Context, args: &LogsArgs) -> Result<(), Error> {
    let config = config::load(&ctx.selection, &ctx.cwd)?;
    let service = super::service(&config, &args.service)?;
    let runtime = substitutes::runtime::for_config(&config);
    runtime.check().await?;
    let container = naming::container_name(&config.env, &service.name);
    if runtime.inspect(&config.env, service).await?.is_none() {
        return Err(CommandError::NoContainer { service: service.name.clone(), container }.into());
    }
    let since = args.since.and_then(|ago| SystemTime::now().checked_sub(ago));
    let mut chunks = runtime.logs(&config.env, service, args.follow, since);
    // Ctrl-C ends a followed log as its reader expects: what came so far, then the summary.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut lines = Lines::default();
    loop {
        let chunk = tokio::select! {
            chunk = chunks.next() => chunk,
            _ = &mut interrupted => None,
        };
        let Some(chunk) = chunk else { break };
        let chunk = chunk?;
        if ctx.json() {
            lines.push(chunk.stream, &chunk.bytes);
        } else {
            // Both streams go to stdout: the output is the data. A reader that went away
            // (`devenv logs db | head`) ends the command.
            let mut out = std::io::stdout().lock();
            if out.write_all(&chunk.bytes).and_then(|()| out.flush()).is_err() {
                return Ok(());
            }
        }
    }
    if ctx.json() {
        lines.finish();
        ui::print_result(&Summary { service: service.name.clone(), container, lines: lines.count });
    }
    Ok(())
}

/// Splits each stream's chunks into lines and prints each as a `log` event.
#[derive(Default)]
struct Lines {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    count: usize,
}

impl Lines {
    fn push(&mut self, stream: LogStream, bytes: &[u8]) {
        let buffer = match stream {
            LogStream::Stdout => &mut self.stdout,
            LogStream::Stderr => &mut self.stderr,
        };
        buffer.extend_from_slice(bytes);
        let Some(end) = buffer.iter().rposition(|b| *b == b'\n') else { return };
        let complete: Vec<u8> = buffer.drain(..=end).collect();
        for line in complete[..complete.len() - 1].split(|b| *b == b'\n') {
            self.count += 1;
            print_line(stream, line);
        }
    }

    /// Prints what is left after the last line break.
    fn finish(&mut self) {
        for (stream, rest) in [(LogStream::Stdout, &self.stdout), (LogStream::Stderr, &self.stderr)] {
            if !rest.is_empty() {
                self.count += 1;
                print_line(stream, rest);
            }
        }
    }
}

fn print_line(stream: LogStream, line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    ui::print_event("log", &Line { stream, line: text.trim_end_matches('\r') });
}

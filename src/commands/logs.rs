//! `devenv logs SERVICE`: a substitute's output, as its runtime keeps it.
//! `devenv logs KIND/[NAMESPACE/]NAME`: the lines the responsible Flux controller logged about
//! that object, read through the environment's cluster provider.

use std::io::Write as _;
use std::time::SystemTime;

use futures_util::StreamExt;
use serde::Serialize;

use super::{Context, Error as CommandError};
use crate::cli::LogsArgs;
use crate::config;
use crate::config::profile::Provider;
use crate::docker::LogStream;
use crate::errors::Error;
use crate::flux::logs::{Line as ControllerLine, Target};
use crate::naming;
use crate::providers;
use crate::state::Store;
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

/// A controller's line about the object, for `--output json`.
#[derive(Debug, Serialize)]
struct ObjectLine<'a> {
    line: &'a str,
}

/// What `logs KIND/NAME --output json` ends with.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ObjectSummary {
    /// `kind/namespace/name`.
    object: String,
    controller: &'static str,
    lines: usize,
}

pub async fn run(ctx: &Context, args: &LogsArgs) -> Result<(), Error> {
    match Target::parse(&args.target) {
        Some(target) => flux_object(ctx, args, target.map_err(CommandError::from)?).await,
        None => service(ctx, args).await,
    }
}

/// The controller's lines about one Flux object of the environment.
async fn flux_object(ctx: &Context, args: &LogsArgs, target: Target) -> Result<(), Error> {
    let config = config::load(&ctx.selection, &ctx.cwd)?;
    let store = Store::for_env(&config.env)?;
    let state = store.load()?;
    // The cluster as `status` finds it: the recorded one, else an `existing` profile's.
    let recorded = state.as_ref().and_then(|s| s.cluster.as_ref());
    let provider = match providers::for_record(recorded, store.dir()) {
        Some(provider) => Some(provider),
        None if config.profile.cluster.provider == Provider::Existing => providers::for_config(&config, store.dir())?,
        None => None,
    };
    let no_cluster = || -> Error {
        match &state {
            None => CommandError::NotCreated { env: config.env.clone() }.into(),
            Some(state) => CommandError::NoCluster { env: config.env.clone(), profile: state.profile.clone() }.into(),
        }
    };
    let Some(provider) = provider else { return Err(no_cluster()) };
    let Some(info) = provider.info()? else { return Err(no_cluster()) };
    let client = provider.client(&info).await?;
    // In a shared cluster the environment's objects are those in its namespace, as `up`
    // recorded it (else as the profile places it).
    let recorded = state.as_ref().and_then(|s| s.flux.as_ref());
    let scope = match recorded {
        Some(placement) => placement.shared.then(|| placement.namespace.clone()),
        None => config.environment_namespace(),
    };
    let object = target.find(&client, scope.as_deref()).await.map_err(CommandError::from)?;
    let controller = target.kind.controller;
    // Every source is filtered by the lines' own times: a log file cannot be asked for less.
    let since =
        args.since.and_then(|ago| jiff::Timestamp::now().checked_sub(jiff::SignedDuration::try_from(ago).ok()?).ok());
    let mut lines = provider.controller_log(&client, controller, args.follow, args.since);
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut count = 0;
    loop {
        let line = tokio::select! {
            line = lines.next() => line,
            _ = &mut interrupted => None,
        };
        let Some(line) = line else { break };
        let line = line?;
        let parsed = ControllerLine::parse(&line);
        if !parsed.concerns(&object) || since.zip(parsed.time).is_some_and(|(since, time)| time < since) {
            continue;
        }
        count += 1;
        if ctx.json() {
            ui::print_event("log", &ObjectLine { line: &line });
        } else {
            let mut out = std::io::stdout().lock();
            if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                return Ok(());
            }
        }
    }
    if ctx.json() {
        ui::print_result(&ObjectSummary { object: object.to_string(), controller, lines: count });
    }
    Ok(())
}

/// A substitute's container output.
async fn service(ctx: &Context, args: &LogsArgs) -> Result<(), Error> {
    let config = config::load(&ctx.selection, &ctx.cwd)?;
    let service = super::service(&config, &args.target)?;
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

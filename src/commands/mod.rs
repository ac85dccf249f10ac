//! One module per command: glue between configuration, the parts that act, and the UI.

pub mod doctor;
pub mod down;
pub mod env;
pub mod logs;
pub mod manual;
pub mod plan;
pub mod preview;
pub mod sim;
pub mod status;
pub mod up;
pub mod version;

use std::path::PathBuf;

use crate::cli::{Cli, Command, PreviewCommand, SimCommand};
use crate::config::{Config, Selection, Service};
use crate::errors;
use crate::substitutes::OutputValue;
use crate::ui::{self, OutputFormat, Reporter, Verbosity};

/// What every command gets from the command line.
pub struct Context {
    pub selection: Selection,
    pub format: OutputFormat,
    pub verbosity: Verbosity,
    pub cwd: PathBuf,
}

impl Context {
    pub fn new(cli: &Cli, cwd: PathBuf) -> Self {
        let global = &cli.global;
        Context {
            selection: Selection {
                repo: global.repo.clone(),
                profile: global.profile.clone(),
                env: global.env.clone(),
                context: global.context.clone(),
            },
            format: global.output,
            verbosity: if global.quiet {
                Verbosity::Quiet
            } else if global.verbose {
                Verbosity::Verbose
            } else {
                Verbosity::Normal
            },
            cwd,
        }
    }

    pub fn reporter(&self) -> Box<dyn Reporter> {
        ui::reporter(self.format, self.verbosity)
    }

    pub fn json(&self) -> bool {
        self.format == OutputFormat::Json
    }
}

pub async fn run(cli: &Cli, ctx: &Context) -> Result<(), errors::Error> {
    match &cli.command {
        Command::Up(args) => up::run(ctx, args).await,
        Command::Down(args) => down::run(ctx, args).await,
        Command::Status(args) => status::run(ctx, args).await,
        Command::Plan => plan::run(ctx).await,
        Command::Doctor => doctor::run(ctx).await,
        Command::Env(args) => env::run(ctx, args).await,
        Command::Logs(args) => logs::run(ctx, args).await,
        Command::Completions(args) => {
            manual::completions(ctx, args);
            Ok(())
        }
        Command::Man(args) => Ok(manual::man(ctx, args)?),
        Command::Version => {
            version::run(ctx);
            Ok(())
        }
        Command::Sim(SimCommand::Build) => sim::build(ctx).await,
        Command::Preview(PreviewCommand::Rbac(args)) => {
            preview::rbac(ctx, args);
            Ok(())
        }
        Command::Preview(PreviewCommand::Up(args)) => preview::up(ctx, args).await,
        Command::Preview(PreviewCommand::Down(args)) => preview::down(ctx, args).await,
        Command::Preview(PreviewCommand::List) => preview::list(ctx).await,
        Command::Preview(PreviewCommand::Gc(args)) => preview::gc(ctx, args).await,
    }
}

/// How this process was started, `devenv up --profile sim`, for the environment's lock file.
fn command_line() -> String {
    let mut args = std::env::args();
    let program = args.next().map(PathBuf::from);
    let name = program.as_ref().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned());
    let mut line = std::iter::once(name.unwrap_or_else(|| "devenv".into())).chain(args).collect::<Vec<_>>().join(" ");
    if line.len() > 200 {
        let end = (0..=200).rev().find(|&i| line.is_char_boundary(i)).unwrap_or(0);
        line.truncate(end);
        line.push('…');
    }
    line
}

/// What a command asks of an environment that is not there.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("devenv.yaml has no service `{service}`")]
    UnknownService { service: String, known: Vec<String> },
    #[error("environment `{env}` has not been created yet")]
    NotCreated { env: String },
    #[error("`{service}` of environment `{env}` has not been started yet")]
    NotStarted { env: String, service: String },
    #[error("`{service}` has no container (`{container}`)")]
    NoContainer { service: String, container: String },
    #[error("environment `{env}` has no cluster")]
    NoCluster { env: String, profile: String },
    #[error("a preview is named after its pull request: `--env` does not apply to `devenv preview`")]
    EnvOfPreview,
    #[error(
        "profile `{profile}` uses the `{provider}` provider; `devenv preview` needs a profile with `provider: eks-namespace`"
    )]
    NotPreviewProfile { profile: String, provider: &'static str },
    #[error("environment `{env}` is not healthy: {}", problems.join("; "))]
    Unhealthy { env: String, problems: Vec<String> },
    #[error(transparent)]
    Kubeconfig(#[from] crate::providers::kubeconfig::Error),
    #[error(transparent)]
    FluxObject(#[from] crate::flux::logs::Error),
    #[error("cannot write `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The service of devenv.yaml named `name`.
fn service<'a>(config: &'a Config, name: &str) -> Result<&'a Service, Error> {
    config.services.iter().find(|s| s.name == name).ok_or_else(|| Error::UnknownService {
        service: name.to_string(),
        known: config.services.iter().map(|s| s.name.clone()).collect(),
    })
}

/// Outputs as a JSON object, secrets as null unless shown.
fn outputs_json(outputs: &[OutputValue], show_secrets: bool) -> serde_json::Map<String, serde_json::Value> {
    outputs
        .iter()
        .map(|o| {
            let value = if o.secret && !show_secrets { serde_json::Value::Null } else { o.value.clone().into() };
            (o.name.clone(), value)
        })
        .collect()
}

/// Table rows `service, output, value`, secrets hidden unless shown.
fn output_rows(service: &str, outputs: &[OutputValue], show_secrets: bool) -> Vec<Vec<String>> {
    outputs
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let value =
                if o.secret && !show_secrets { "(hidden; --show-secrets)".to_string() } else { o.value.clone() };
            vec![if i == 0 { service.to_string() } else { String::new() }, o.name.clone(), value]
        })
        .collect()
}

//! Command-line arguments. The doc comments are the `--help` text.

use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use clap_complete::ArgValueCandidates;

use crate::ui::OutputFormat;

/// A disposable copy of your Flux/EKS platform, on your machine or per pull request.
///
/// devenv reads devenv.yaml at the root of a Flux GitOps repository, starts containers in
/// place of the AWS managed services it names (RDS → MariaDB, …), and keeps their endpoints
/// and generated credentials stable across runs.
#[derive(Debug, Parser)]
#[command(name = "devenv", max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Repository root [default: the nearest directory at or above the current one with a devenv.yaml]
    #[arg(long, global = true, value_name = "DIR", env = "DEVENV_REPO")]
    pub repo: Option<PathBuf>,
    /// Profile: where and how the environment runs (built in: local, k3d, sim, standalone, preview)
    #[arg(long, global = true, value_name = "NAME", env = "DEVENV_PROFILE", add = ArgValueCandidates::new(crate::completion::profiles))]
    pub profile: Option<String>,
    /// Environment name; several environments of one repository can coexist [default: the project name]
    #[arg(long, global = true, value_name = "NAME", env = "DEVENV_ENV", add = ArgValueCandidates::new(crate::completion::environments))]
    pub env: Option<String>,
    /// Kubeconfig context of the cluster, for a profile with `provider: existing` [default: the profile's `cluster.context`, else the kubeconfig's current context; KUBECONFIG is read as kubectl reads it]
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Output format: text for people, or json for programs: NDJSON on stdout, one object per line with an `event` field; the last line is the `result` or the `error`
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Print only errors and the result
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print more detail about each step
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update the environment and wait until it is ready
    #[command(
        after_help = "Examples:\n  devenv up\n  devenv up --profile standalone --show-secrets\n  devenv up --env shop-feature-x --output json"
    )]
    Up(UpArgs),
    /// Remove what `up` created; data volumes are kept unless --purge
    #[command(
        after_help = "Examples:\n  devenv down\n  devenv down --purge   # also delete data and generated credentials\n  devenv down --timeout 10m"
    )]
    Down(DownArgs),
    /// Show what runs, its health and endpoints
    #[command(
        after_help = "Examples:\n  devenv status\n  devenv status --output json --show-secrets | jq '.services[0].outputs'"
    )]
    Status(StatusArgs),
    /// Show what `up` would do, without doing it
    #[command(after_help = "Examples:\n  devenv plan\n  devenv plan --profile standalone --output json")]
    Plan,
    /// Check this machine and say how to fix what is missing
    #[command(after_help = "Examples:\n  devenv doctor\n  devenv doctor --output json")]
    Doctor,
    /// Print the environment's variables, with the addresses this machine uses
    ///
    /// The keys are those of the environment ConfigMap and Secret, so a service run from an IDE
    /// or a shell reads the same variables as in the cluster, against the same substitutes: hosts
    /// are 127.0.0.1 and ports the remembered ones. Secrets are left out unless --show-secrets.
    /// Reads only the state file: run `devenv up` first.
    #[command(
        after_help = "Examples:\n  eval \"$(devenv env --show-secrets)\"\n  devenv env --format dotenv --show-secrets > .env\n  devenv env --service orders-db --format json\n  eval \"$(devenv env --kubeconfig)\"   # kubectl reaches the environment's cluster"
    )]
    Env(EnvArgs),
    /// Show a substitute's logs (its container's output), or what Flux logged about one of its objects
    ///
    /// SERVICE (a name from devenv.yaml) prints the output of the service's container.
    /// KIND/NAME or KIND/NAMESPACE/NAME (kustomization/apps, hr/podinfo/podinfo,
    /// ocirepository/devenv-root) prints the lines of the responsible Flux controller
    /// (kustomize-controller, helm-controller, source-controller) that are about that object;
    /// without a namespace the object must be the only one of its kind and name.
    #[command(
        after_help = "Examples:\n  devenv logs orders-db\n  devenv logs orders-db -f --since 10m\n  devenv logs orders-db --output json | jq -r 'select(.event == \"log\") | .line'\n  devenv logs kustomization/apps --since 5m\n  devenv logs helmrelease/monitoring/grafana -f"
    )]
    Logs(LogsArgs),
    /// Print the shell completion script
    #[command(
        after_help = "Examples:\n  devenv completions bash > ~/.local/share/bash-completion/completions/devenv\n  devenv completions zsh > \"${fpath[1]}/_devenv\"\n  devenv completions fish > ~/.config/fish/completions/devenv.fish\n  devenv completions powershell >> $PROFILE"
    )]
    Completions(CompletionsArgs),
    /// Print the manual page (roff), or write one page per command into a directory
    #[command(after_help = "Examples:\n  devenv man | man -l -\n  devenv man --dir ~/.local/share/man/man1")]
    Man(ManArgs),
    /// Show the build and the Kubernetes, Flux and kind versions it expects
    #[command(after_help = "Examples:\n  devenv version\n  devenv version --output json | jq -r .commit")]
    Version,
    /// The sim cluster provider's tools
    #[command(subcommand)]
    Sim(SimCommand),
    /// Per-pull-request preview environments in a shared cluster
    #[command(subcommand)]
    Preview(PreviewCommand),
}

impl Command {
    /// Whether the command ends by itself on Ctrl-C (a following `logs`), rather than being
    /// interrupted.
    pub fn handles_interrupt(&self) -> bool {
        matches!(self, Command::Logs(_))
    }
}

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Build the sim cluster's binaries (Kubernetes, etcd, kwok, Flux, a registry) from their Go
    /// modules into the cache; needs Go, takes a while once, and is instant when cached
    #[command(after_help = "Examples:\n  devenv sim build\n  DEVENV_CACHE_DIR=/var/cache/devenv devenv sim build")]
    Build,
}

#[derive(Debug, Subcommand)]
pub enum PreviewCommand {
    /// Create or update the preview of a pull request and wait until it is Ready
    ///
    /// The preview lives in namespace pr-<N>-<project> of the cluster the profile (default:
    /// `preview`) names, isolated by a quota, limits, network policies and an account that
    /// every Flux object acts as; its substitutes run in the namespace. The working tree is
    /// pushed to the profile's registry. A commit older than the one the preview runs is
    /// refused, and concurrent runs for one pull request wait for each other.
    #[command(
        after_help = "Examples:\n  devenv preview up --pr 42 --sha \"$GITHUB_SHA\"\n  devenv preview up --pr 42 --ttl 24h --context shared-eks --output json"
    )]
    Up(PreviewUpArgs),
    /// Delete the preview of a pull request: its Flux objects (which prune what they
    /// applied), then its namespace with its data; a missing preview is not an error
    #[command(after_help = "Examples:\n  devenv preview down --pr 42\n  devenv preview down --pr 42 --wait")]
    Down(PreviewDownArgs),
    /// List the project's previews: pull request, commit, age, expiry and readiness
    #[command(after_help = "Examples:\n  devenv preview list\n  devenv preview list --output json")]
    List,
    /// Delete expired previews, those older than --older-than, and those of pull requests
    /// not in --open-prs; a preview labelled devenv.io/keep=true is never deleted
    #[command(
        after_help = "Examples:\n  devenv preview gc\n  devenv preview gc --open-prs 12,15,31 --dry-run\n  devenv preview gc --older-than 7d"
    )]
    Gc(PreviewGcArgs),
    /// Print the RBAC objects and the admission policy the CI identity running previews needs
    ///
    /// A ClusterRole with the rights previews use, bound to the identity, and a
    /// ValidatingAdmissionPolicy that denies the identity every write outside the namespaces
    /// named pr-* that devenv made, and every namespace not named so or not labelled
    /// app.kubernetes.io/managed-by=devenv. Needs Kubernetes 1.30 or later. Prints YAML for
    /// `kubectl apply -f -` by a cluster admin; changes nothing itself.
    #[command(
        after_help = "Examples:\n  devenv preview rbac --user devenv-ci | kubectl apply -f -\n  devenv preview rbac --group ci:deployers\n  devenv preview rbac --service-account ci/deployer --output json"
    )]
    Rbac(PreviewRbacArgs),
}

#[derive(Debug, Args)]
pub struct PreviewUpArgs {
    /// The pull request's number
    #[arg(long, value_name = "N")]
    pub pr: u64,
    /// The commit being deployed (default: the repository's HEAD)
    #[arg(long, value_name = "SHA")]
    pub sha: Option<String>,
    /// How long the preview lives before `gc` deletes it (default: the profile's `ttl`, else 72h)
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub ttl: Option<std::time::Duration>,
    /// Show generated passwords and URLs with credentials in the summary
    #[arg(long)]
    pub show_secrets: bool,
    /// How long to wait for another run of the same preview, and for everything to become Ready
    #[arg(long, default_value = "10m", value_parser = parse_timeout)]
    pub timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct PreviewDownArgs {
    /// The pull request's number
    #[arg(long, value_name = "N")]
    pub pr: u64,
    /// Wait until the namespace is gone, and name what holds it if it stays
    #[arg(long)]
    pub wait: bool,
    /// How long to wait for another run of the preview, for Flux's prune and (with --wait) the namespace
    #[arg(long, default_value = "5m", value_parser = parse_timeout)]
    pub timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct PreviewGcArgs {
    /// Also delete previews made longer ago than this (e.g. 7d), expired or not
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub older_than: Option<std::time::Duration>,
    /// The pull requests still open, comma-separated (empty: none): the previews of all others are deleted
    #[arg(long, value_name = "N,N,…", value_parser = parse_pr_list)]
    pub open_prs: Option<PrList>,
    /// Say what would be deleted, and delete nothing
    #[arg(long)]
    pub dry_run: bool,
    /// How long Flux's prune of each preview may take
    #[arg(long, default_value = "5m", value_parser = parse_timeout)]
    pub timeout: std::time::Duration,
}

/// Pull request numbers, as `--open-prs` takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrList(pub std::collections::BTreeSet<u64>);

/// `12,15,31`; an empty list (no pull request is open) is fine, so a script may pass what
/// `gh pr list` printed as it is.
fn parse_pr_list(text: &str) -> Result<PrList, String> {
    (text.split(',').map(str::trim).filter(|n| !n.is_empty()))
        .map(|n| n.parse::<u64>().map_err(|_| format!("`{n}` is not a pull request number")))
        .collect::<Result<_, _>>()
        .map(PrList)
}

/// Exactly one identity: the one CI authenticates as.
#[derive(Debug, Args)]
#[group(id = "identity", required = true, multiple = false)]
pub struct PreviewRbacArgs {
    /// The CI identity is this user (as the API server names it)
    #[arg(long, value_name = "NAME", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub user: Option<String>,
    /// The CI identity is any member of this group
    #[arg(long, value_name = "NAME", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub group: Option<String>,
    /// The CI identity is this ServiceAccount
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = crate::preview::rbac::Subject::service_account)]
    pub service_account: Option<crate::preview::rbac::Subject>,
}

impl PreviewRbacArgs {
    pub fn subject(&self) -> crate::preview::rbac::Subject {
        use crate::preview::rbac::Subject;
        match (&self.user, &self.group, &self.service_account) {
            (Some(user), _, _) => Subject::User(user.clone()),
            (_, Some(group), _) => Subject::Group(group.clone()),
            (_, _, Some(account)) => account.clone(),
            (None, None, None) => unreachable!("clap requires one identity"),
        }
    }
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Show generated passwords and URLs with credentials in the summary
    #[arg(long)]
    pub show_secrets: bool,
    /// How long to wait for another `up` or `down` of the environment to finish, and for every Flux Kustomization and HelmRelease to become Ready (e.g. 90s, 10m)
    #[arg(long, default_value = "5m", value_parser = parse_timeout)]
    pub timeout: std::time::Duration,
}

fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    crate::config::parse_duration(text)
        .ok_or_else(|| format!("`{text}` is not a duration; write it like 90s, 5m or 1h"))
}

#[derive(Debug, Args)]
pub struct DownArgs {
    /// Also delete data volumes and the generated credentials
    #[arg(long)]
    pub purge: bool,
    /// How long to wait for another `up` or `down` of the environment to finish, and for Flux to prune what it applied (e.g. 90s, 10m)
    #[arg(long, default_value = "2m", value_parser = parse_timeout)]
    pub timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Show generated passwords and URLs with credentials
    #[arg(long)]
    pub show_secrets: bool,
}

#[derive(Debug, Args)]
pub struct EnvArgs {
    /// How to print the variables: shell (`export K='v'` lines, for eval), dotenv (`K=v` lines, for .env files) or json (one object)
    #[arg(long, value_enum, default_value_t = EnvFormat::Shell)]
    pub format: EnvFormat,
    /// Only the keys filled from this service's outputs
    #[arg(long, value_name = "NAME", conflicts_with = "kubeconfig")]
    pub service: Option<String>,
    /// Include the keys of the environment Secret (passwords, URLs with credentials)
    #[arg(long, conflicts_with = "kubeconfig")]
    pub show_secrets: bool,
    /// Print only KUBECONFIG, for the environment's cluster (its context selected)
    #[arg(long)]
    pub kubeconfig: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EnvFormat {
    Shell,
    Dotenv,
    Json,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// A service (its name in devenv.yaml), or a Flux object as KIND/NAME or KIND/NAMESPACE/NAME
    #[arg(value_name = "SERVICE|KIND/NAME", add = ArgValueCandidates::new(crate::completion::services))]
    pub target: String,
    /// Keep printing new output until Ctrl-C
    #[arg(short, long)]
    pub follow: bool,
    /// Only output of the last DURATION (e.g. 90s, 10m, 2h); for a Flux object, by the controller's timestamps
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub since: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write devenv.1 and a page for every command (devenv-up.1, …) into DIR instead
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// The command line's definition, with the build's version text.
pub fn command() -> clap::Command {
    Cli::command().version(crate::version::short()).long_version(crate::version::long()).propagate_version(true)
}

/// Parses the process's arguments; exits with usage (or `--help`, `--version`) as clap does.
pub fn parse() -> Cli {
    let matches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
}

//! The error every command returns, its stable id, exit code and hint, and how it is shown.
//!
//! Ids are stable: scripts and the README refer to them. Hints are chosen here, except those
//! of the Flux and preview errors, which `flux::diagnose` and `preview::diagnose` choose next
//! to the errors.

use std::error::Error as StdError;
use std::fmt::Write as _;

use serde::Serialize;

use crate::config::{self, Problem};
use crate::{docker, ports, providers, state, substitutes};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::Error),
    #[error(transparent)]
    State(#[from] state::Error),
    #[error(transparent)]
    Docker(#[from] docker::Error),
    #[error(transparent)]
    Substitute(#[from] substitutes::Error),
    #[error(transparent)]
    Provider(#[from] providers::Error),
    #[error(transparent)]
    Flux(#[from] crate::flux::Error),
    #[error("interrupted; what was created so far is labelled, `devenv up` resumes and `devenv down` removes it")]
    Interrupted,
    #[error(transparent)]
    Doctor(#[from] crate::commands::doctor::Failed),
    #[error(transparent)]
    Command(#[from] crate::commands::Error),
    #[error(transparent)]
    PreviewInput(#[from] crate::preview::Error),
    #[error(transparent)]
    Preview(#[from] crate::preview::cluster::Error),
    #[error(transparent)]
    PreviewLease(#[from] crate::preview::lease::Error),
    #[error("{failed} of {total} substitutes failed")]
    Several { failed: usize, total: usize, first: Box<Error> },
}

/// Every id with a one-line title; the README's table lists the same.
pub const IDS: &[(&str, &str)] = &[
    ("DEV001", "no devenv.yaml found"),
    ("DEV002", "a configuration file is not valid YAML or has a wrong or unknown field"),
    ("DEV003", "unknown substitute kind"),
    ("DEV004", "unknown profile"),
    ("DEV005", "a name is not a valid DNS label or is too long"),
    ("DEV006", "a name or ConfigMap key is defined twice"),
    ("DEV007", "unknown substitute output"),
    ("DEV008", "unknown version for a substitute kind"),
    ("DEV009", "unknown substitute parameter"),
    ("DEV010", "an invalid value in a configuration file"),
    ("DEV011", "a file cannot be read or written"),
    ("DEV012", "a profile field or flag is not supported (yet) by the profile's provider"),
    ("DEV013", "devenv.yaml has no service of that name"),
    ("DEV014", "the environment has no Flux object of that kind and name"),
    ("DEV020", "the Docker engine cannot be reached"),
    ("DEV021", "a Docker operation failed"),
    ("DEV022", "an image cannot be pulled"),
    ("DEV023", "a port on 127.0.0.1 is taken"),
    ("DEV024", "a substitute did not become ready in time"),
    ("DEV025", "a substitute stopped while starting"),
    ("DEV026", "a data volume exists but its credentials are lost"),
    ("DEV027", "an object of an in-cluster substitute's name exists and devenv did not make it"),
    ("DEV030", "the state file cannot be read or written"),
    ("DEV031", "the environment name is used by another repository"),
    ("DEV032", "another command is changing the environment"),
    ("DEV033", "the environment, or the part of it asked for, has not been created"),
    ("DEV034", "something the environment runs is not healthy"),
    ("DEV035", "a Flux controller's log cannot be read"),
    ("DEV040", "the profile is a preview profile, used by `devenv preview up`"),
    ("DEV041", "the cluster cannot be started or reached"),
    ("DEV042", "the sim cluster's binaries are not built"),
    ("DEV043", "building the sim cluster's binaries failed"),
    ("DEV044", "the kubeconfig or its context cannot be used"),
    ("DEV045", "the cluster's API server does not answer"),
    ("DEV046", "the registry's credentials cannot be read"),
    ("DEV047", "the `kind` or `k3d` command is missing or too old"),
    ("DEV048", "a kind or k3d cluster of that name exists and devenv did not create it"),
    ("DEV050", "a doctor check failed"),
    ("DEV060", "a substituted variable has no value"),
    ("DEV061", "the working tree cannot be packed"),
    ("DEV062", "a Flux object failed to reconcile"),
    ("DEV063", "Flux objects were not Ready in time"),
    ("DEV064", "Flux is not installed in the cluster"),
    ("DEV065", "applying to the cluster failed"),
    ("DEV066", "a deletion did not finish in time (Flux's prune, or an object `up` must apply again)"),
    ("DEV067", "a substituted value would make a string field a number, boolean or null"),
    ("DEV068", "an `overlay.disable` entry matches nothing"),
    ("DEV069", "a manifest is not valid YAML or a kustomization file names a file that does not exist"),
    ("DEV070", "a preview's pull request number, commit or ttl is not valid"),
    ("DEV071", "a preview runs a newer commit than the one given"),
    ("DEV072", "the project has as many previews as its profile allows (`maxPreviews`)"),
    ("DEV073", "another run is changing the preview"),
    ("DEV074", "the cluster refused a preview operation"),
    ("DEV075", "a preview's namespace is stuck terminating"),
    ("DEV076", "a namespace of the preview's name exists and devenv did not make it"),
    ("DEV077", "a `devenv preview` command was given a profile that is not a preview profile"),
    ("DEV080", "a secret or parameter has no value, or more than one"),
    ("DEV081", "a `${SERVICE.OUTPUT}` reference or `rds:` names a service or output that is not there"),
    ("DEV082", "`rds:` names a service that is not a database"),
    ("DEV083", "a secret or parameter name that AWS would refuse"),
    ("DEV084", "a resource field that its kind does not take"),
    ("DEV085", "a file a Kustomization reads is too large to pack"),
    ("DEV090", "interrupted"),
];

#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    pub id: &'static str,
    #[serde(skip)]
    pub exit_code: i32,
    pub hint: Option<String>,
}

/// The id, exit code (0 ok, 1 failure, 2 usage or configuration error, 130 interrupted) and
/// hint for an error.
pub fn diagnose(error: &Error) -> Diagnosis {
    let (id, hint): (&'static str, Option<String>) = match error {
        Error::Config(e) => return diagnose_config(e),
        Error::State(e) => match e {
            state::Error::OtherRepo { .. } => (
                "DEV031",
                Some("choose another name with `--env NAME`, or run `devenv down` in that repository first".into()),
            ),
            state::Error::Corrupt { path, .. } => (
                "DEV030",
                Some(format!(
                    "`{}` holds the environment's generated credentials and ports: repair the JSON to keep its data; or `devenv down --purge` (it needs no state file) removes the environment's containers, data volumes and this file, and the next `devenv up` starts afresh with new credentials and ports",
                    path.display()
                )),
            ),
            state::Error::Busy { holder, .. } => (
                "DEV032",
                Some(match holder {
                    Some(holder) => format!(
                        "let it finish, or wait longer with `--timeout` (e.g. `--timeout 10m`); `kill -INT {}` stops it cleanly (what it made is labelled: the next `devenv up` resumes, `devenv down` removes it)",
                        holder.pid
                    ),
                    None => "let it finish, or wait longer with `--timeout` (e.g. `--timeout 10m`)".into(),
                }),
            ),
            state::Error::Write { path, source } if is_full(source) => (
                "DEV030",
                Some(format!(
                    "the disk (or a file size limit, `ulimit -f`) holding `{}` allows no more: free some space and run the command again; the state file there is the last one written whole, so `devenv up` resumes and `devenv down` removes what was made",
                    path.parent().unwrap_or(path).display()
                )),
            ),
            _ => (
                "DEV030",
                Some(format!("check the permissions of the state directory (or set {})", state::STATE_DIR_ENV)),
            ),
        },
        Error::Docker(e) | Error::Substitute(substitutes::Error::Docker(e)) => diagnose_docker(e),
        Error::Substitute(e) => match e {
            substitutes::Error::Port { source: ports::Error::InUse { port }, .. } => (
                "DEV023",
                Some(format!(
                    "free the port (`ss -ltnp 'sport = :{port}'` shows who holds it) or change or remove the service's `port:` in devenv.yaml"
                )),
            ),
            substitutes::Error::Port { source: ports::Error::BadRange { .. }, .. } => (
                "DEV023",
                Some(format!("write {} as FROM-TO (e.g. 20000-20999), or unset it", ports::RANGE_ENV)),
            ),
            substitutes::Error::Port { .. } => (
                "DEV023",
                Some(format!(
                    "check that 127.0.0.1 has free ports (and that {}, if set, leaves enough); new ports also avoid those other environments remember, and `devenv down --purge` of one you no longer need frees its ports",
                    ports::RANGE_ENV
                )),
            ),
            substitutes::Error::NotReady { last_error, service, .. } => (
                "DEV024",
                Some(format!(
                    "last attempt: {last_error}; see `devenv logs {service}`, or raise the catalogue's `probe.timeout`"
                )),
            ),
            substitutes::Error::Exited { container, logs, .. } => {
                let mut hint = format!("its last output (`docker logs {container}`):");
                for line in logs.lines().filter(|l| !l.trim().is_empty()) {
                    let _ = write!(hint, "\n    {line}");
                }
                ("DEV025", Some(hint))
            }
            substitutes::Error::CredentialsLost { volume, .. } => (
                "DEV026",
                Some(format!(
                    "the environment's state file is gone; restore it, or delete the data with `devenv down --purge` (removes `{volume}`)"
                )),
            ),
            substitutes::Error::Cluster { namespace, .. } => (
                "DEV065",
                Some(format!(
                    "check that the cluster answers and that its identity may manage StatefulSets, Services, Secrets and PersistentVolumeClaims in `{namespace}`"
                )),
            ),
            substitutes::Error::NotOurs { object, .. } => (
                "DEV027",
                Some(format!(
                    "rename the service in devenv.yaml, or delete {object} if it is left over (its name is the service's, in the substitutes' namespace)"
                )),
            ),
            substitutes::Error::NoCluster { .. } => (
                "DEV041",
                Some("`devenv up` starts the environment's cluster; `devenv status` shows it".into()),
            ),
            substitutes::Error::Docker(_) => unreachable!("handled with Error::Docker"),
        },
        Error::Provider(e) => match e {
            providers::Error::Sim(e) => diagnose_sim(e),
            providers::Error::Kind(e) => return diagnose_kind(e),
            providers::Error::K3d(e) => return diagnose_k3d(e),
            providers::Error::Existing(providers::existing::Error::Context(e)) | providers::Error::Kubeconfig(e) => {
                ("DEV044", Some(kubeconfig_hint(e)))
            }
            providers::Error::Existing(providers::existing::Error::Unreachable { context, .. }) => (
                "DEV045",
                Some(format!(
                    "check that the cluster runs and this machine reaches it (`kubectl --context {context} get --raw /version`), or choose another context with `--context`"
                )),
            ),
            providers::Error::ControllerPodLog { controller, .. } | providers::Error::NoControllerPod { controller } => (
                "DEV035",
                Some(format!(
                    "`kubectl -n {} get pods -l app={controller}` shows whether it runs; reading its log needs the `get` right on `pods/log` there",
                    providers::FLUX_SYSTEM
                )),
            ),
            providers::Error::ControllerLogFile { .. } => {
                ("DEV035", Some("`devenv status` shows whether the cluster's processes run; `devenv up` starts them".into()))
            }
            providers::Error::Died { log, .. } => (
                "DEV041",
                Some(format!(
                    "`devenv up` starts the cluster's processes again (its data is kept), `devenv down` stops the rest; why it stopped may be at the end of `{}`",
                    log.display()
                )),
            ),
            providers::Error::FluxCheck { context, .. } => (
                "DEV045",
                Some(format!("the cause above is the API server's answer; `kubectl --context {context} api-resources` shows what it serves")),
            ),
            providers::Error::Existing(providers::existing::Error::NoRegistry) => {
                return Diagnosis {
                    id: "DEV010",
                    exit_code: 2,
                    hint: Some("add `registry: { url: HOST[:PORT] }` to the profile (for a preview profile, in `.devenv/profiles/preview.yaml` of the repository: the registry CI pushes to, e.g. ECR)".into()),
                };
            }
            providers::Error::FluxMissing { context, .. } => (
                "DEV064",
                Some(format!(
                    "devenv uses Flux's source-, kustomize- and helm-controllers but does not install them into a cluster it does not own: install Flux first (`flux install --context {context}`, see https://fluxcd.io/flux/installation/), then run `devenv up` again"
                )),
            ),
            providers::Error::Registry(e) => (
                "DEV046",
                Some(match e {
                    providers::registry::Error::Helper { helper, .. } => format!(
                        "check that `docker-credential-{helper}` is installed and logged in (`docker login`), or remove it from the Docker configuration"
                    ),
                    _ => "fix the Docker configuration (`docker login HOST` writes `~/.docker/config.json`; DOCKER_CONFIG moves it)".into(),
                }),
            ),
            // The profile is for another command: a usage error.
            providers::Error::PreviewOnly { profile } => return Diagnosis {
                id: "DEV040",
                exit_code: 2,
                hint: Some(format!(
                    "`devenv preview up --pr N{}` makes the preview of pull request N; `devenv up` takes a profile of another provider (local, k3d, sim, standalone, or one of your own)",
                    if profile == "preview" { String::new() } else { format!(" --profile {profile}") }
                )),
            },
        },
        Error::Doctor(_) => {
            return Diagnosis { id: "DEV050", exit_code: 1, hint: Some("apply the fixes above".into()) };
        }
        Error::Flux(e) => return crate::flux::diagnose::flux(e),
        Error::Command(e) => return diagnose_command(e),
        Error::PreviewInput(e) => return crate::preview::diagnose::input(e),
        Error::Preview(e) => return crate::preview::diagnose::cluster(e),
        Error::PreviewLease(e) => return crate::preview::diagnose::lease(e),
        Error::Interrupted => return Diagnosis { id: "DEV090", exit_code: 130, hint: None },
        Error::Several { first, .. } => return diagnose(first),
    };
    Diagnosis { id, exit_code: 1, hint }
}

/// Whether a write failed for lack of room: a full disk, a quota, a file size limit.
fn is_full(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded | std::io::ErrorKind::FileTooLarge
    )
}

/// The id, exit code and hint of an environment asked for what it does not have.
fn diagnose_command(error: &crate::commands::Error) -> Diagnosis {
    use crate::commands::Error as Command;
    let (id, exit_code, hint) = match error {
        Command::UnknownService { known, .. } if known.is_empty() => {
            ("DEV013", 2, "devenv.yaml defines no services".to_string())
        }
        Command::UnknownService { service, known } => {
            let known: Vec<&str> = known.iter().map(String::as_str).collect();
            let mut hint = format!("its services: {}", known.join(", "));
            if let Some(best) = config::suggest(service, &known) {
                let _ = write!(hint, "; did you mean `{best}`?");
            }
            ("DEV013", 2, hint)
        }
        Command::NotCreated { .. } => ("DEV033", 1, "`devenv up` creates it".to_string()),
        Command::NotStarted { .. } => {
            ("DEV033", 1, "it was added to devenv.yaml after the last `devenv up`; `devenv up` starts it".to_string())
        }
        Command::NoContainer { .. } => {
            ("DEV033", 1, "`devenv up` starts it; `devenv status` shows what runs".to_string())
        }
        Command::NoCluster { profile, .. } => (
            "DEV033",
            1,
            format!(
                "it was made with profile `{profile}`, which has no cluster; `devenv up --profile NAME` with a cluster profile (local, k3d, sim, or your own) makes one"
            ),
        ),
        Command::Unhealthy { .. } => (
            "DEV034",
            1,
            "`devenv up` repairs it: it starts or recreates what stopped and waits until everything is Ready; `devenv logs SERVICE` shows why a substitute stopped".to_string(),
        ),
        Command::EnvOfPreview => ("DEV012", 2, "leave `--env` out; `--pr N` names the preview".to_string()),
        Command::NotPreviewProfile { .. } => (
            "DEV077",
            2,
            "leave `--profile` out to use the built-in `preview` profile, or name one of yours with `cluster.provider: eks-namespace`".to_string(),
        ),
        Command::Kubeconfig(e) => ("DEV044", 1, kubeconfig_hint(e)),
        Command::FluxObject(e) => return crate::flux::diagnose::object(e),
        Command::Write { .. } => ("DEV011", 1, "check that the directory exists and is writable".to_string()),
    };
    Diagnosis { id, exit_code, hint: Some(hint) }
}

/// The id, exit code and hint of a kind provider's error.
fn diagnose_kind(error: &providers::kind::Error) -> Diagnosis {
    use providers::kind::Error as Kind;
    let (id, exit_code, hint): (&'static str, i32, String) = match error {
        Kind::Missing | Kind::TooOld { .. } => (
            "DEV047",
            1,
            format!(
                "install kind v{}.{}.0 or newer (https://kind.sigs.k8s.io/docs/user/quick-start/#installation, or `go install sigs.k8s.io/kind@latest`) and put it on PATH; `devenv doctor` checks it",
                providers::kind::cli::MIN_VERSION.0,
                providers::kind::cli::MIN_VERSION.1
            ),
        ),
        Kind::NameTaken { name } => (
            "DEV048",
            1,
            format!(
                "devenv only uses kind clusters it created: give this environment another cluster with the profile's `cluster.name` (or `--env NAME`), or delete that cluster yourself (`kind delete cluster --name {name}`) if you no longer need it"
            ),
        ),
        Kind::RegistryPortTaken { port } => (
            "DEV023",
            1,
            format!(
                "free the port (`ss -ltnp 'sport = :{port}'` shows who holds it), or change or remove `registry.hostPort` in the profile to let devenv choose one"
            ),
        ),
        Kind::RegistryPort(_) => ("DEV023", 1, "check that 127.0.0.1 has free ports".into()),
        Kind::ReadKindConfig { .. } => ("DEV011", 2, "check the profile's `cluster.kindConfig`: a path relative to the repository root".into()),
        Kind::ParseKindConfig { .. } | Kind::KindConfig { .. } => (
            "DEV010",
            2,
            "write it as a kind `Cluster` configuration (https://kind.sigs.k8s.io/docs/user/configuration/) without `name`".into(),
        ),
        Kind::Docker(e) => {
            let (id, hint) = diagnose_docker(e);
            return Diagnosis { id, exit_code: 1, hint };
        }
        Kind::Flux(_) => (
            "DEV041",
            1,
            "see what the controllers do with `kubectl -n flux-system get pods` and `kubectl -n flux-system describe pods`; air-gapped machines set the profile's `flux.imageRegistry` to a mirror of ghcr.io/fluxcd".into(),
        ),
        Kind::Command { output, .. } => {
            let mut hint = "kind's last words:".to_string();
            for line in output.lines() {
                let _ = write!(hint, "\n    {line}");
            }
            ("DEV041", 1, hint)
        }
        _ => ("DEV041", 1, "`devenv status` shows the cluster; `devenv down` removes what was made so far".into()),
    };
    Diagnosis { id, exit_code, hint: Some(hint) }
}

/// The id, exit code and hint of a k3d provider's error; the ids are kind's where the
/// meaning is the same.
fn diagnose_k3d(error: &providers::k3d::Error) -> Diagnosis {
    use providers::k3d::Error as K3d;
    let (id, exit_code, hint): (&'static str, i32, String) = match error {
        K3d::Missing | K3d::TooOld { .. } => (
            "DEV047",
            1,
            format!(
                "install k3d v{}.{}.0 or newer (https://k3d.io/stable/#installation) and put it on PATH; `devenv doctor` checks it",
                providers::k3d::cli::MIN_VERSION.0,
                providers::k3d::cli::MIN_VERSION.1
            ),
        ),
        K3d::NameTaken { name } => (
            "DEV048",
            1,
            format!(
                "devenv only uses k3d clusters it created: give this environment another cluster with the profile's `cluster.name` (or `--env NAME`), or delete that cluster yourself (`k3d cluster delete {name}`) if you no longer need it"
            ),
        ),
        K3d::InvalidName { .. } => (
            "DEV005",
            2,
            format!(
                "k3d names a cluster with a DNS label of at most {} characters: shorten the profile's `cluster.name`, or the environment name (`--env NAME`) that the default `devenv-<env>` is made of",
                providers::k3d::config::MAX_CLUSTER_NAME
            ),
        ),
        K3d::RegistryPortTaken { port } => (
            "DEV023",
            1,
            format!(
                "free the port (`ss -ltnp 'sport = :{port}'` shows who holds it), or change or remove `registry.hostPort` in the profile to let devenv choose one"
            ),
        ),
        K3d::RegistryPort(_) => ("DEV023", 1, "check that 127.0.0.1 has free ports".into()),
        K3d::Docker(e) => {
            let (id, hint) = diagnose_docker(e);
            return Diagnosis { id, exit_code: 1, hint };
        }
        K3d::Flux(_) => (
            "DEV041",
            1,
            "see what the controllers do with `kubectl -n flux-system get pods` and `kubectl -n flux-system describe pods`; air-gapped machines set the profile's `flux.imageRegistry` to a mirror of ghcr.io/fluxcd".into(),
        ),
        K3d::Command { output, .. } => {
            let mut hint = "k3d's last words:".to_string();
            for line in output.lines() {
                let _ = write!(hint, "\n    {line}");
            }
            ("DEV041", 1, hint)
        }
        _ => ("DEV041", 1, "`devenv status` shows the cluster; `devenv down` removes what was made so far".into()),
    };
    Diagnosis { id, exit_code, hint: Some(hint) }
}

/// What to do about a kubeconfig that cannot be used: which contexts there are.
fn kubeconfig_hint(error: &providers::kubeconfig::Error) -> String {
    use providers::kubeconfig::Error as Kubeconfig;
    match error {
        Kubeconfig::NoContext { context, known, .. } => {
            let names: Vec<&str> = known.iter().map(String::as_str).collect();
            let mut hint = format!(
                "choose a context of the kubeconfig with `--context NAME` or the profile's `cluster.context` (known contexts: {})",
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            );
            if let Some(best) = config::suggest(context, &names) {
                let _ = write!(hint, "; did you mean `{best}`?");
            }
            hint
        }
        Kubeconfig::NoCurrentContext { .. } => {
            "name the context with `--context NAME` or the profile's `cluster.context`".into()
        }
        Kubeconfig::NotFound => {
            "point KUBECONFIG at the cluster's kubeconfig (as for kubectl), or create `~/.kube/config`".into()
        }
        _ => "check the kubeconfig (`kubectl config view`); KUBECONFIG names it as for kubectl".into(),
    }
}

fn diagnose_config(error: &config::Error) -> Diagnosis {
    let (id, hint) = match error {
        config::Error::ProjectNotFound { .. } => (
            "DEV001",
            Some(format!("run devenv inside a repository with a {}, or pass `--repo DIR`", config::PROJECT_FILE)),
        ),
        config::Error::Read { .. } => ("DEV011", Some("check that the file exists and is readable".into())),
        config::Error::Invalid { problem, hint, .. } => (
            match problem {
                Problem::Syntax => "DEV002",
                Problem::UnknownKind => "DEV003",
                Problem::UnknownProfile => "DEV004",
                Problem::InvalidName => "DEV005",
                Problem::Duplicate => "DEV006",
                Problem::UnknownOutput => "DEV007",
                Problem::UnknownVersion => "DEV008",
                Problem::UnknownParam => "DEV009",
                Problem::Invalid => "DEV010",
                Problem::Unsupported => "DEV012",
                Problem::ResourceValue => "DEV080",
                Problem::UnknownReference => "DEV081",
                Problem::NotADatabase => "DEV082",
                Problem::ResourceName => "DEV083",
                Problem::NotApplicable => "DEV084",
            },
            hint.clone(),
        ),
    };
    Diagnosis { id, exit_code: 2, hint }
}

fn diagnose_sim(error: &providers::sim::Error) -> (&'static str, Option<String>) {
    use providers::sim::Error as Sim;
    match error {
        Sim::NotBuilt { .. } => (
            "DEV042",
            Some("build them once with `devenv sim build` (needs Go; the build is cached by version)".into()),
        ),
        Sim::BuildFailed { tail, .. } => {
            let mut hint = "the build's last lines:".to_string();
            for line in tail.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev() {
                let _ = write!(hint, "\n    {line}");
            }
            ("DEV043", Some(hint))
        }
        other => {
            let mut hint = "`devenv status` shows each process; `devenv down` stops what started".to_string();
            if let Some(log) = other.log() {
                let _ = write!(hint, "\nlast lines of {}:", log.path.display());
                for line in log.lines.lines() {
                    let _ = write!(hint, "\n    {line}");
                }
            }
            ("DEV041", Some(hint))
        }
    }
}

fn diagnose_docker(error: &docker::Error) -> (&'static str, Option<String>) {
    match error {
        _ if !matches!(error, docker::Error::Unreachable { .. } | docker::Error::NoAnswer { .. }) && error.engine_gone() => (
            "DEV020",
            Some(
                "the Docker engine stopped answering while devenv used it (restarted or stopped?): once `docker info` answers again, `devenv up` resumes, and `devenv down` removes what was made"
                    .into(),
            ),
        ),
        docker::Error::Unreachable { .. } | docker::Error::NoAnswer { .. } => (
            "DEV020",
            Some(
                "start the Docker engine (`sudo systemctl start docker`, or `sudo dockerd &`), or point DOCKER_HOST at a running one; `devenv doctor` checks it"
                    .into(),
            ),
        ),
        docker::Error::Pull { image, .. } => (
            "DEV022",
            Some(format!(
                "check the image name and your registry access (`docker pull {image}`), or point the substitute at an image you have in `.devenv/substitutes/<kind>.yaml` (`image: …`)"
            )),
        ),
        docker::Error::StartContainer { .. } => (
            "DEV021",
            Some("the engine could not run the container: check the substitute's `image` and `command` (`.devenv/substitutes/<kind>.yaml`)".into()),
        ),
        _ => ("DEV021", Some("check the Docker engine's log; `devenv doctor` checks the engine".into())),
    }
}

/// The error for people: `error[ID]: …`, `Caused by:` lines, then `hint: …`.
pub fn render_text(error: &Error) -> String {
    let diagnosis = diagnose(error);
    let mut out = format!("error[{}]: {error}\n", diagnosis.id);
    for cause in causes(error) {
        let _ = writeln!(out, "  Caused by: {cause}");
    }
    if let Some(hint) = diagnosis.hint {
        let _ = writeln!(out, "hint: {hint}");
    }
    out
}

/// The error for programs.
pub fn render_json(error: &Error) -> serde_json::Value {
    let diagnosis = diagnose(error);
    serde_json::json!({
        "error": {
            "id": diagnosis.id,
            "message": error.to_string(),
            "causes": causes(error),
            "hint": diagnosis.hint,
        }
    })
}

fn causes(error: &Error) -> Vec<String> {
    let mut causes = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_lists_every_error_id_and_no_other() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        for (id, title) in IDS {
            assert!(readme.contains(&format!("| {id} | {title} |")), "README.md lacks `| {id} | {title} |`");
        }
        let listed = readme.lines().filter(|l| l.starts_with("| DEV")).count();
        assert_eq!(listed, IDS.len(), "README.md lists ids the code does not have");
    }

    #[test]
    fn ids_are_unique() {
        let mut ids: Vec<&str> = IDS.iter().map(|(id, _)| *id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), IDS.len());
    }

    #[test]
    fn rendering_shows_causes_and_hint() {
        let error = Error::Substitute(substitutes::Error::Port {
            service: "orders-db".into(),
            source: ports::Error::InUse { port: 3306 },
        });
        assert_eq!(
            render_text(&error),
            "error[DEV023]: cannot publish `orders-db` on 127.0.0.1\n  Caused by: port 3306 on 127.0.0.1 is already in use\nhint: free the port (`ss -ltnp 'sport = :3306'` shows who holds it) or change or remove the service's `port:` in devenv.yaml\n"
        );
        let json = render_json(&error);
        assert_eq!(json["error"]["id"], "DEV023");
        assert_eq!(json["error"]["causes"][0], "port 3306 on 127.0.0.1 is already in use");
    }

    #[test]
    fn a_bad_values_file_names_the_release_file_the_values_file_and_the_fix() {
        let error = Error::Flux(crate::flux::Error::Pack(crate::flux::pack::Error::Chart {
            file: "apps/base/statements/release.yaml".into(),
            source: Box::new(crate::flux::charts::Error::ValuesFile {
                path: "apps/base/statements/values-lending.yaml".into(),
                reason: "cannot be read (No such file or directory (os error 2))".into(),
            }),
        }));
        let text = render_text(&error);
        assert!(
            text.starts_with("error[DEV061]: a HelmRelease in `apps/base/statements/release.yaml` takes its chart from the repository\n  Caused by: values file `apps/base/statements/values-lending.yaml` (from valuesFiles) cannot be read"),
            "{text}"
        );
        assert!(text.contains("hint: each `spec.chart.spec.valuesFiles` entry is a YAML file of values"), "{text}");
    }

    #[test]
    fn what_flux_would_fail_on_stops_with_the_first_problem_s_id_and_every_place() {
        let finding = crate::flux::checks::Finding::new(
            crate::flux::checks::Kind::StringField,
            "apps/base/orders/deployment.yaml",
            Some((23, 22)),
            "`env[name=\"DB_PORT\"].value` of container `loans` of Deployment/lending/loans is `${DB_PORT}`".into(),
        );
        let details = crate::flux::checks::render(&[finding]).trim_end().to_string();
        let error = Error::Flux(crate::flux::Error::Checks { id: "DEV067", count: 1, details });
        let diagnosis = diagnose(&error);
        assert_eq!((diagnosis.id, diagnosis.exit_code), ("DEV067", 2));
        let text = render_text(&error);
        assert!(
            text.contains("  error[DEV067]: apps/base/orders/deployment.yaml:23:22: `env[name=\"DB_PORT\"].value`"),
            "{text}"
        );
        assert!(text.contains("hint: Flux substitutes in the manifest's text after re-serialising it"), "{text}");
    }

    #[test]
    fn a_chart_version_flux_would_not_find_gets_the_fix() {
        let error = Error::Flux(crate::flux::Error::Chart(crate::flux::charts::Error::Version {
            path: "charts/greeter".into(),
            version: "v0.1.0".into(),
        }));
        let text = render_text(&error);
        assert_eq!(
            text,
            "error[DEV061]: `charts/greeter/Chart.yaml`: version `v0.1.0` is not a SemVer 2 version, so Flux would not find the published chart\nhint: write Chart.yaml's `version:` as SemVer 2 without a leading `v` (`1.4.0`, `1.4.0-rc.1`): source-controller skips chart tags that are not\n"
        );
        let error = Error::Flux(crate::flux::Error::Pack(crate::flux::pack::Error::Chart {
            file: "apps/base/greeter/release.yaml".into(),
            source: Box::new(crate::flux::charts::Error::VersionNotAllowed {
                path: "charts/greeter".into(),
                version: "0.1.0".into(),
                constraint: ">=1.0.0".into(),
            }),
        }));
        let text = render_text(&error);
        assert!(text.contains("hint: raise the chart's `version:` in Chart.yaml or widen"), "{text}");
    }
}

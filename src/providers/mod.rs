//! Cluster providers: where an environment's Kubernetes comes from, behind one interface.
//!
//! [`ClusterProvider`] is modelled on ctlptl's cluster `Admin`: `ensure` creates or reuses the
//! cluster, `delete` removes or stops it, `status` reports on it, `client` reaches it, and
//! `flux` tells whether Flux's APIs are there. What a provider can do is data
//! ([`Capabilities`]): whether pods really run (the overlay drops admission webhooks where
//! they do not) and whether devenv owns the cluster (only then does `down` stop it).
//! Commands pick a provider with [`for_config`] (from the profile) or [`for_record`] (from the
//! state file, so `down` works when devenv.yaml does not parse) and never name one.

pub mod container_cluster;
pub mod existing;
pub mod flux_install;
pub mod k3d;
pub mod kind;
pub mod kubeconfig;
pub mod registry;
pub mod sim;

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream};
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::config::profile::Provider;
use crate::ui::{Reporter, ReporterExt};
pub use registry::Registry;

/// How long a single question to an API server may take before it counts as unreachable.
pub const API_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "profile `{profile}` makes pull-request previews (`provider: eks-namespace`), not environments of `devenv up`"
    )]
    PreviewOnly { profile: String },
    #[error(transparent)]
    Sim(#[from] sim::Error),
    #[error(transparent)]
    Existing(#[from] existing::Error),
    #[error(transparent)]
    Kind(#[from] kind::Error),
    #[error(transparent)]
    K3d(#[from] k3d::Error),
    #[error(transparent)]
    Kubeconfig(#[from] kubeconfig::Error),
    #[error(transparent)]
    Registry(#[from] registry::Error),
    #[error("Flux is not installed in the cluster of context `{context}` ({})", missing_apis(missing))]
    FluxMissing { context: String, missing: Vec<String> },
    #[error("cannot read the log of `{controller}` in namespace `{FLUX_SYSTEM}`")]
    ControllerPodLog {
        controller: String,
        #[source]
        source: kube::Error,
    },
    #[error("no pod of `{controller}` runs in namespace `{FLUX_SYSTEM}`")]
    NoControllerPod { controller: String },
    #[error("cannot read the log of `{controller}` (`{}`)", path.display())]
    ControllerLogFile {
        controller: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{process}` of the {provider} cluster stopped while devenv waited on the cluster")]
    Died { process: String, provider: &'static str, log: PathBuf },
    #[error("cannot ask the cluster of context `{context}` which Flux APIs it serves")]
    FluxCheck {
        context: String,
        #[source]
        source: kube::Error,
    },
}

/// `no Kustomization API, no HelmRelease API`.
fn missing_apis(kinds: &[String]) -> String {
    kinds.iter().map(|kind| format!("no {kind} API")).collect::<Vec<_>>().join(", ")
}

/// What a provider can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    /// Pods really run (kind, k3d, a real cluster); false for `sim`, whose pods only look Ready.
    pub runs_pods: bool,
    /// devenv created the cluster, so `down` stops or deletes it.
    pub owns_cluster: bool,
}

/// How to reach an environment's cluster; recorded in the state file so `down` needs no
/// configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterInfo {
    pub provider: Provider,
    /// The kubeconfig, as `KUBECONFIG` would name it (one path, or several joined by `:`).
    pub kubeconfig: PathBuf,
    pub context: String,
    /// `https://HOST:PORT`.
    pub api_server: String,
    /// The environment's registry: where this machine pushes, where the cluster pulls.
    pub registry: Registry,
}

/// What `ensure` does with the environment's cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ClusterAction {
    /// Makes it: there is none yet.
    Create,
    /// Uses the one devenv made as it is (kind and k3d start its stopped nodes).
    Reuse,
    /// Boots the one devenv made again, its data kept: it is not running, or not healthy.
    Restart,
    /// Deletes what an interrupted create left and makes it again.
    Recreate,
    /// Uses a cluster devenv does not own, as it is.
    Use,
}

impl ClusterAction {
    pub fn verb(self) -> &'static str {
        match self {
            ClusterAction::Create => "create",
            ClusterAction::Reuse => "reuse",
            ClusterAction::Restart => "restart",
            ClusterAction::Recreate => "recreate",
            ClusterAction::Use => "use",
        }
    }
}

/// What `ensure` would do now, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterIntent {
    pub action: ClusterAction,
    pub reason: String,
}

impl ClusterIntent {
    pub fn new(action: ClusterAction, reason: impl Into<String>) -> Self {
        ClusterIntent { action, reason: reason.into() }
    }
}

/// What `ensure` did: the cluster, and the decision it carried out.
#[derive(Debug, Clone)]
pub struct Ensured {
    pub info: ClusterInfo,
    pub carried_out: ClusterIntent,
}

/// The decision `ensure` carries out: the one it makes when it runs (under the provider's
/// lock, where sim has one), which is the planned one unless the cluster changed since.
/// A change is a warning, so that `up` never does silently what it did not plan.
pub fn replan(planned: &ClusterIntent, now: ClusterIntent, reporter: &dyn Reporter) -> ClusterIntent {
    if let Some(note) = replan_note(planned, &now) {
        reporter.warning(&note);
    }
    now
}

/// `the cluster changed since up planned to reuse it (…); the plan now is to restart it: …`.
fn replan_note(planned: &ClusterIntent, now: &ClusterIntent) -> Option<String> {
    (planned.action != now.action).then(|| {
        format!(
            "the cluster changed since `up` planned to {} it ({}); the plan now is to {} it: {}",
            planned.action.verb(),
            planned.reason,
            now.action.verb(),
            now.reason
        )
    })
}

/// A provider's view of its cluster for `status`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The cluster answers and everything devenv runs for it is healthy.
    pub healthy: bool,
    /// One line: the API server's version, or why the cluster is not healthy.
    pub detail: String,
    /// The processes devenv runs for the cluster (sim); empty for clusters devenv does not run.
    pub processes: Vec<sim::ProcessStatus>,
}

/// Flux's APIs in a cluster: which are served and which are missing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FluxPresence {
    pub missing: Vec<String>,
}

impl FluxPresence {
    pub fn installed(&self) -> bool {
        self.missing.is_empty()
    }
}

/// One kind of cluster. Methods that touch nothing are plain; the rest return futures.
pub trait ClusterProvider: Send + Sync {
    fn kind(&self) -> Provider;

    fn capabilities(&self) -> Capabilities;

    /// Every check that needs no side effect (binaries built; context known, API server
    /// answering, Flux installed), run before anything is created.
    fn preflight(&self) -> BoxFuture<'_, Result<(), Error>>;

    /// Carries out `planned` (from [`intent`](Self::intent)): creates the cluster, or reuses
    /// it when it is already there and healthy. It decides again by the same rules when it
    /// runs, and carries out that decision, saying so, if the cluster changed since the plan
    /// ([`replan`]).
    fn ensure<'a>(
        &'a self,
        env: &'a str,
        planned: &'a ClusterIntent,
        reporter: &'a dyn Reporter,
    ) -> BoxFuture<'a, Result<Ensured, Error>>;

    /// What `ensure` would do now, and why, changing nothing: `plan` shows it, `up` carries
    /// it out. Fails as `ensure` would on a cluster it would refuse (one of that name devenv
    /// did not make).
    fn intent<'a>(&'a self, env: &'a str) -> BoxFuture<'a, Result<ClusterIntent, Error>>;

    /// How to reach the cluster if there is one (it may not be running); touches nothing.
    fn info(&self) -> Result<Option<ClusterInfo>, Error>;

    /// A client for the cluster (it is not asked anything yet).
    fn client<'a>(&'a self, info: &'a ClusterInfo) -> BoxFuture<'a, Result<kube::Client, Error>>;

    /// The cluster's health, for `status`.
    fn status<'a>(&'a self, info: &'a ClusterInfo) -> BoxFuture<'a, Result<ClusterStatus, Error>>;

    /// Stops or deletes the cluster (`purge`: its data too); whether anything was running.
    /// Only called when [`Capabilities::owns_cluster`].
    fn delete<'a>(&'a self, purge: bool, reporter: &'a dyn Reporter) -> BoxFuture<'a, Result<bool, Error>>;

    /// Which of Flux's APIs the cluster serves.
    fn flux<'a>(&'a self, client: &'a kube::Client) -> BoxFuture<'a, Result<FluxPresence, kube::Error>> {
        Box::pin(flux_presence(client))
    }

    /// The log of the Flux controller `controller` (`kustomize-controller`, …), line by line:
    /// what it kept, from `since` ago where the source can tell (callers filter by the lines'
    /// own times too), then with `follow` what it logs until the stream is dropped. By
    /// default the log of its pod in `flux-system`, read through the API.
    fn controller_log<'a>(
        &'a self,
        client: &'a kube::Client,
        controller: &'a str,
        follow: bool,
        since: Option<Duration>,
    ) -> LogLines<'a> {
        pod_log(client, controller, follow, since)
    }
}

/// Log lines, without their line breaks.
pub type LogLines<'a> = BoxStream<'a, Result<String, Error>>;

/// Where Flux's controllers run in a cluster devenv does not boot itself.
pub const FLUX_SYSTEM: &str = "flux-system";

/// The log of the newest running pod labelled `app=<controller>` in `flux-system`, as
/// `kubectl logs` reads it (`pods/log`, with `sinceSeconds` and `follow`).
fn pod_log<'a>(client: &'a kube::Client, controller: &'a str, follow: bool, since: Option<Duration>) -> LogLines<'a> {
    let failed = |source| Error::ControllerPodLog { controller: controller.to_string(), source };
    let opened = async move {
        let pods: Api<Pod> = Api::namespaced(client.clone(), FLUX_SYSTEM);
        let listed = pods.list(&ListParams::default().labels(&format!("app={controller}"))).await.map_err(failed)?;
        let running = listed
            .items
            .into_iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .max_by_key(|p| p.metadata.creation_timestamp.clone());
        let Some(name) = running.and_then(|p| p.metadata.name) else {
            return Err(Error::NoControllerPod { controller: controller.to_string() });
        };
        let params =
            LogParams { follow, since_seconds: since.map(|ago| ago.as_secs().max(1) as i64), ..LogParams::default() };
        let reader = pods.log_stream(&name, &params).await.map_err(failed)?;
        let lines = futures_util::AsyncBufReadExt::lines(reader);
        Ok(lines.map_err(move |source| failed(kube::Error::ReadEvents(source))))
    };
    stream::once(opened)
        .map(|opened| match opened {
            Ok(lines) => lines.boxed(),
            Err(error) => stream::once(std::future::ready(Err(error))).boxed(),
        })
        .flatten()
        .boxed()
}

/// The Flux kinds devenv relies on: (group, version, kind, plural).
const FLUX_KINDS: [(&str, &str, &str, &str); 3] = [
    ("kustomize.toolkit.fluxcd.io", "v1", "Kustomization", "kustomizations"),
    ("helm.toolkit.fluxcd.io", "v2", "HelmRelease", "helmreleases"),
    ("source.toolkit.fluxcd.io", "v1", "OCIRepository", "ocirepositories"),
];

/// Asks discovery which Flux kinds are served, so that an identity confined to one namespace
/// (which may not list them cluster-wide) gets the same answer.
pub async fn flux_presence(client: &kube::Client) -> Result<FluxPresence, kube::Error> {
    let mut presence = FluxPresence::default();
    for (group, version, kind, plural) in FLUX_KINDS {
        if !crate::kube::served(client, &format!("{group}/{version}"), plural).await? {
            presence.missing.push(kind.to_string());
        }
    }
    Ok(presence)
}

/// Fails before any side effect when the profile's provider cannot run here.
pub fn check_available(provider: Provider) -> Result<(), Error> {
    match provider {
        Provider::None | Provider::Existing | Provider::EksNamespace | Provider::Kind | Provider::K3d => Ok(()),
        Provider::Sim => sim::binaries().map(drop).map_err(Error::from),
    }
}

/// Fails when the profile is a preview profile: its namespaces are named after a pull
/// request, which only `devenv preview up --pr N` knows.
pub fn check_not_preview(config: &Config) -> Result<(), Error> {
    match config.profile.cluster.provider {
        Provider::EksNamespace => Err(Error::PreviewOnly { profile: config.profile_name.clone() }),
        _ => Ok(()),
    }
}

/// What each provider this build runs needs on this machine, checked without side effects:
/// `(provider, what is there or why it cannot run)`.
pub fn prerequisites() -> Vec<(Provider, Result<String, Error>)> {
    let sim = sim::binaries()
        .map(|built| format!("the sim cluster's binaries are built ({})", built.dir.display()))
        .map_err(Error::from);
    let kind = kind::cli::version().map(|version| format!("kind {version} is installed")).map_err(Error::from);
    let k3d = k3d::cli::version().map(|version| format!("k3d {version} is installed")).map_err(Error::from);
    vec![(Provider::Sim, sim), (Provider::Kind, kind), (Provider::K3d, k3d)]
}

/// The Docker network on which the profile's cluster's pods reach substitute containers by
/// name: `kind` for every kind cluster, `k3d-<cluster>` for the k3d cluster of the profile.
pub fn pod_network(config: &Config) -> Option<String> {
    match config.profile.cluster.provider {
        Provider::Kind => Some(kind::NETWORK.to_string()),
        Provider::K3d => Some(k3d::network(&config.cluster_name())),
        _ => None,
    }
}

/// The profile's provider for an environment whose state lives in `state_dir`; `None` when the
/// profile has no cluster. Touches nothing.
pub fn for_config(config: &Config, state_dir: &Path) -> Result<Option<Box<dyn ClusterProvider>>, Error> {
    check_available(config.profile.cluster.provider)?;
    Ok(match config.profile.cluster.provider {
        Provider::None => None,
        Provider::Sim => Some(Box::new(sim::SimCluster::new(state_dir))),
        // A preview's namespace is an environment of the `existing` kind: a cluster someone
        // else runs, shared, with Flux already there.
        Provider::Existing | Provider::EksNamespace => Some(Box::new(existing::Existing::from_config(config)?)),
        Provider::Kind => Some(Box::new(kind::KindCluster::from_config(config, state_dir)?)),
        Provider::K3d => Some(Box::new(k3d::K3dCluster::from_config(config, state_dir)?)),
    })
}

/// The provider of a recorded cluster (from the state file). A state file written before
/// clusters were recorded has none; a sim cluster is then found in its directory.
pub fn for_record(record: Option<&ClusterInfo>, state_dir: &Path) -> Option<Box<dyn ClusterProvider>> {
    match record.map(|r| r.provider) {
        Some(Provider::Existing) => {
            record.map(|r| Box::new(existing::Existing::from_record(r)) as Box<dyn ClusterProvider>)
        }
        Some(Provider::Sim) => Some(Box::new(sim::SimCluster::new(state_dir))),
        Some(Provider::Kind) => {
            record.map(|r| Box::new(kind::KindCluster::from_record(r, state_dir)) as Box<dyn ClusterProvider>)
        }
        Some(Provider::K3d) => {
            record.map(|r| Box::new(k3d::K3dCluster::from_record(r, state_dir)) as Box<dyn ClusterProvider>)
        }
        Some(_) => None,
        None => {
            let sim = sim::SimCluster::new(state_dir);
            sim.info().ok().flatten().map(|_| Box::new(sim) as Box<dyn ClusterProvider>)
        }
    }
}

/// The cluster of an environment whose state file is missing or cannot be read, found by the
/// files its provider keeps in the state directory: a sim cluster's directory (its pid files
/// name the processes to stop, even when its record is damaged), a kind or a k3d record. A
/// cluster devenv does not own (`existing`) is recorded only in the state file and cannot be
/// found.
pub fn found_in(state_dir: &Path) -> Option<Box<dyn ClusterProvider>> {
    if state_dir.join("sim").is_dir() {
        return Some(Box::new(sim::SimCluster::new(state_dir)));
    }
    if let Some(kind) = kind::KindCluster::recorded(state_dir) {
        return Some(Box::new(kind));
    }
    k3d::K3dCluster::recorded(state_dir).map(|k3d| Box::new(k3d) as Box<dyn ClusterProvider>)
}

/// Resolves with the first process of a cluster devenv runs (sim) that is no longer running,
/// checked every two seconds; never resolves for other clusters. Raced against a wait on the
/// cluster, it turns a killed API server, etcd or Flux controller into an error at once
/// rather than a wait that runs out its deadline (or a request that never returns).
pub async fn process_died(provider: &dyn ClusterProvider, info: &ClusterInfo) -> Error {
    if info.provider != Provider::Sim {
        return std::future::pending().await;
    }
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if let Ok(status) = provider.status(info).await
            && let Some(dead) = status.processes.iter().find(|p| p.pid.is_none())
        {
            return Error::Died { process: dead.name.clone(), provider: info.provider.as_str(), log: dead.log.clone() };
        }
    }
}

/// Asks the API server its version within [`API_DEADLINE`].
pub async fn answers(client: &kube::Client) -> Result<String, String> {
    match tokio::time::timeout(API_DEADLINE, client.apiserver_version()).await {
        Ok(Ok(version)) => Ok(version.git_version),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {}s", API_DEADLINE.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(provider: Provider) -> ClusterInfo {
        ClusterInfo {
            provider,
            kubeconfig: PathBuf::from("/nowhere/kubeconfig"),
            context: "dev".into(),
            api_server: "https://127.0.0.1:6443".into(),
            registry: Registry::same("127.0.0.1:5000"),
        }
    }

    #[test]
    fn a_decision_that_changed_since_the_plan_is_named_with_both_reasons() {
        let planned = ClusterIntent::new(ClusterAction::Reuse, "`dev` is running and healthy");
        let same = ClusterIntent::new(ClusterAction::Reuse, "`dev` is running and healthy still");
        assert_eq!(replan_note(&planned, &same), None, "only a different action is a change");
        let now = ClusterIntent::new(ClusterAction::Restart, "`kube-apiserver` is not running");
        assert_eq!(
            replan_note(&planned, &now).as_deref(),
            Some(
                "the cluster changed since `up` planned to reuse it (`dev` is running and healthy); \
                 the plan now is to restart it: `kube-apiserver` is not running"
            )
        );
    }

    #[test]
    fn the_recorded_cluster_chooses_the_provider_and_what_down_may_do() {
        let dir = tempfile::tempdir().unwrap();
        let existing = for_record(Some(&record(Provider::Existing)), dir.path()).unwrap();
        assert_eq!(existing.kind(), Provider::Existing);
        assert!(!existing.capabilities().owns_cluster, "down never deletes an existing cluster");
        assert!(existing.info().is_err(), "its kubeconfig is not there to read");
        let sim = for_record(Some(&record(Provider::Sim)), dir.path()).unwrap();
        assert_eq!(sim.capabilities(), Capabilities { runs_pods: false, owns_cluster: true });
        // A state file of the previous format records no cluster, and here none was booted.
        assert!(for_record(None, dir.path()).is_none());
        let k3d =
            for_record(Some(&ClusterInfo { context: "k3d-devenv-shop".into(), ..record(Provider::K3d) }), dir.path())
                .unwrap();
        assert_eq!(k3d.kind(), Provider::K3d);
        assert_eq!(k3d.capabilities(), Capabilities { runs_pods: true, owns_cluster: true });
    }

    /// The configuration of a repository `shop` under `profile` (a built-in one, or `mine` with
    /// this text).
    fn config(profile: &str, mine: Option<&str>) -> Config {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("devenv.yaml"),
            "project: shop\nflux:\n  path: clusters/local\nenvironment:\n  configMap:\n    name: env\n",
        )
        .unwrap();
        if let Some(text) = mine {
            std::fs::create_dir_all(dir.path().join(".devenv/profiles")).unwrap();
            std::fs::write(dir.path().join(".devenv/profiles/mine.yaml"), text).unwrap();
        }
        let selection = crate::config::Selection {
            repo: Some(dir.path().into()),
            profile: Some(profile.into()),
            ..Default::default()
        };
        crate::config::load(&selection, dir.path()).unwrap()
    }

    #[test]
    fn substitutes_join_the_network_of_the_profiles_cluster() {
        assert_eq!(pod_network(&config("local", None)).as_deref(), Some("kind"));
        assert_eq!(pod_network(&config("k3d", None)).as_deref(), Some("k3d-devenv-shop"));
        let named = config("mine", Some("cluster:\n  provider: k3d\n  name: mine\n"));
        assert_eq!(pod_network(&named).as_deref(), Some("k3d-mine"));
        assert_eq!(pod_network(&config("standalone", None)), None);
    }

    #[test]
    fn without_a_state_file_a_cluster_is_found_by_its_files() {
        let dir = tempfile::tempdir().unwrap();
        assert!(found_in(dir.path()).is_none(), "nothing here");
        std::fs::create_dir_all(dir.path().join("sim/run")).unwrap();
        std::fs::write(dir.path().join("sim/cluster.json"), "{not json").unwrap();
        assert_eq!(found_in(dir.path()).map(|p| p.kind()), Some(Provider::Sim), "a damaged record is no obstacle");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("kind.json"),
            r#"{"cluster": "devenv-shop", "registryContainer": "kind-devenv-shop-registry", "registryPort": 5001}"#,
        )
        .unwrap();
        let kind = found_in(dir.path()).unwrap();
        assert_eq!(kind.kind(), Provider::Kind);
        assert_eq!(kind.info().unwrap().unwrap().context, "kind-devenv-shop");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("k3d.json"),
            r#"{"cluster": "devenv-shop", "registryContainer": "k3d-devenv-shop-registry", "registryPort": 5002}"#,
        )
        .unwrap();
        assert_eq!(found_in(dir.path()).map(|p| p.kind()), Some(Provider::K3d));
    }

    /// A stand-in API server: pods of `kustomize-controller` (an old and a new one running, a
    /// newer one pending), none of `helm-controller`, and a log of two lines; it records the
    /// paths asked for.
    async fn api_server() -> (kube::Client, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = asked.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buffer = [0; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = socket.read(&mut buffer).await.unwrap();
                    request.extend_from_slice(&buffer[..n]);
                }
                let text = String::from_utf8_lossy(&request);
                let path = text.split(' ').nth(1).unwrap().to_string();
                record.lock().unwrap().push(path.clone());
                let pod = |name: &str, day: u32, phase: &str| serde_json::json!({"metadata": {"name": name, "creationTimestamp": format!("2026-01-0{day}T00:00:00Z")}, "status": {"phase": phase}});
                let body = if path.contains("/log") {
                    "one\ntwo\n".to_string()
                } else if path.contains("kustomize-controller") {
                    let items = [pod("old", 1, "Running"), pod("new", 2, "Running"), pod("starting", 3, "Pending")];
                    serde_json::json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
                        .to_string()
                } else {
                    serde_json::json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}).to_string()
                };
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            }
        });
        crate::init_tls();
        let config = kube::Config::new(format!("http://{address}").parse().unwrap());
        (kube::Client::try_from(config).unwrap(), asked)
    }

    #[tokio::test]
    async fn a_controllers_log_is_read_from_its_newest_running_pod() {
        let (client, asked) = api_server().await;
        let lines: Vec<String> =
            pod_log(&client, "kustomize-controller", true, Some(Duration::from_secs(600))).try_collect().await.unwrap();
        assert_eq!(lines, ["one", "two"]);
        let asked = asked.lock().unwrap().clone();
        assert!(asked[0].starts_with("/api/v1/namespaces/flux-system/pods?"), "{asked:?}");
        assert!(asked[0].contains("labelSelector=app%3Dkustomize-controller"), "{asked:?}");
        let log = &asked[1];
        assert!(log.starts_with("/api/v1/namespaces/flux-system/pods/new/log?"), "{asked:?}");
        assert!(log.contains("follow=true") && log.contains("sinceSeconds=600"), "{log}");

        let (client, _) = api_server().await;
        let error = pod_log(&client, "helm-controller", false, None).try_collect::<Vec<_>>().await.unwrap_err();
        assert_eq!(error.to_string(), "no pod of `helm-controller` runs in namespace `flux-system`");
    }

    #[test]
    fn missing_flux_apis_are_each_named() {
        let error =
            Error::FluxMissing { context: "dev".into(), missing: vec!["Kustomization".into(), "HelmRelease".into()] };
        assert_eq!(
            error.to_string(),
            "Flux is not installed in the cluster of context `dev` (no Kustomization API, no HelmRelease API)"
        );
    }
}

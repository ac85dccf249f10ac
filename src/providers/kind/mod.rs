//! The `kind` provider: a kind cluster on this machine, created with the user's `kind` binary
//! (as ctlptl and Tilt do), with a registry container beside it wired the KEP-1755 way, and
//! Flux installed when the cluster has none.
//!
//! - The cluster is `devenv-<env>` (profile `cluster.name`), from a generated configuration
//!   ([`config`]); its kubeconfig context goes where kind puts it (`kind-<cluster>`).
//! - The registry container `kind-<cluster>-registry` listens on 127.0.0.1:PORT for this
//!   machine and on the `kind` Docker network for the cluster; every node's containerd finds
//!   it through `/etc/containerd/certs.d`, and `kube-public/local-registry-hosting` names
//!   both addresses for other tools.
//! - Substitute containers join the `kind` network ([`NETWORK`]), so pods reach them by name.
//!
//! What devenv made is recorded in `<env state dir>/kind.json` before it is made: a cluster of
//! the same name that devenv did not make is refused and never deleted.

pub mod cli;
pub mod config;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::{
    Capabilities, ClusterAction, ClusterInfo, ClusterIntent, ClusterProvider, ClusterStatus, Ensured,
    Error as ProviderError, Registry, container_cluster, kubeconfig,
};
use crate::config::Config;
use crate::config::profile::Provider;
use crate::docker::{self, ContainerSpec, Docker};
use crate::naming::{LABEL_ENV, LABEL_MANAGED_BY, MANAGED_BY};
use crate::ports;
use crate::ui::{Reporter, ReporterExt, Status};

/// The Docker network kind puts its nodes on; substitutes join it.
pub const NETWORK: &str = "kind";
/// The registry image when the profile names none.
pub const DEFAULT_REGISTRY_IMAGE: &str = "registry:3";
/// The port the registry listens on inside its container.
const REGISTRY_PORT: u16 = 5000;
/// The label kind puts on its node containers.
const KIND_CLUSTER_LABEL: &str = "io.x-k8s.kind.cluster";
/// How long the nodes may take to become Ready after `kind create cluster`.
const NODES_READY_DEADLINE: Duration = Duration::from_secs(240);
const RECORD_FILE: &str = "kind.json";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the `kind` command is not installed (it is not on PATH)")]
    Missing,
    #[error("`kind version` says `{found}`; devenv needs kind v{}.{}.0 or newer", cli::MIN_VERSION.0, cli::MIN_VERSION.1)]
    TooOld { found: String },
    #[error("cannot run `kind {args}`")]
    Run {
        args: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`kind {args}` failed ({status})")]
    Command { args: String, status: String, output: String },
    #[error("a kind cluster named `{name}` already exists, and devenv did not create it")]
    NameTaken { name: String },
    #[error("the registry's port 127.0.0.1:{port} (profile `registry.hostPort`) is taken")]
    RegistryPortTaken { port: u16 },
    #[error("cannot choose a port on 127.0.0.1 for the registry")]
    RegistryPort(#[source] ports::Error),
    #[error("cannot read the kind configuration `{}` (profile `cluster.kindConfig`)", path.display())]
    ReadKindConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the kind configuration `{}` (profile `cluster.kindConfig`) is not valid YAML", path.display())]
    ParseKindConfig {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("the kind configuration `{}` (profile `cluster.kindConfig`) {problem}", path.display())]
    KindConfig { path: PathBuf, problem: config::Problem },
    #[error("cannot write `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the kind record `{}` is not valid", path.display())]
    Record {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Docker(#[from] docker::Error),
    #[error("cannot reach the kind cluster `{name}`")]
    Client {
        name: String,
        #[source]
        source: kubeconfig::Error,
    },
    #[error("the kind cluster `{name}` {what}")]
    Cluster {
        name: String,
        what: String,
        #[source]
        source: Option<Box<kube::Error>>,
    },
    #[error("no node of the kind cluster `{name}` was Ready within {}s", waited.as_secs())]
    NodesNotReady { name: String, waited: Duration },
    #[error("cannot write the local registry's address into the kind cluster `{name}`")]
    RegistryHosting {
        name: String,
        #[source]
        source: Box<crate::kube::Error>,
    },
    #[error(transparent)]
    Flux(#[from] super::flux_install::Error),
}

/// What devenv made, written before it makes it, so `down` and a later `up` know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    cluster: String,
    registry_container: String,
    registry_port: u16,
}

/// What the profile asks of a kind cluster.
#[derive(Debug, Clone, Default)]
struct Settings {
    node_image: Option<String>,
    /// The user's kind configuration, read and parsed.
    user_config: Option<serde_yaml::Value>,
    registry_port: Option<u16>,
    registry_image: Option<String>,
    flux_image_registry: Option<String>,
}

/// A kind cluster of one environment.
#[derive(Debug)]
pub struct KindCluster {
    env: String,
    name: String,
    state_dir: PathBuf,
    settings: Settings,
}

fn registry_container(cluster: &str) -> String {
    format!("kind-{cluster}-registry")
}

fn registry_volume(cluster: &str) -> String {
    format!("kind-{cluster}-registry-data")
}

impl KindCluster {
    /// From the profile; reads and checks the user's kind configuration, touches nothing.
    pub fn from_config(config: &Config, state_dir: &Path) -> Result<Self, ProviderError> {
        let cluster = &config.profile.cluster;
        let user_config = match &cluster.kind_config {
            Some(relative) => Some(read_kind_config(&config.repo.join(relative))?),
            None => None,
        };
        let settings = Settings {
            node_image: config::node_image(cluster.image.as_deref(), cluster.kubernetes_version.as_deref()),
            user_config,
            registry_port: config.profile.registry.host_port,
            registry_image: config.profile.registry.image.clone(),
            flux_image_registry: config.profile.flux.image_registry.clone(),
        };
        let name = config.cluster_name();
        // The configuration must merge before anything is created.
        let kind = KindCluster { env: config.env.clone(), name, state_dir: state_dir.to_path_buf(), settings };
        kind.cluster_config(cluster.kind_config.as_deref().map(|r| config.repo.join(r)))?;
        Ok(kind)
    }

    /// From the state file's record, for `down` and `status`.
    pub fn from_record(record: &ClusterInfo, state_dir: &Path) -> Self {
        let name = record.context.strip_prefix("kind-").unwrap_or(&record.context).to_string();
        let env = name.strip_prefix("devenv-").unwrap_or(&name).to_string();
        KindCluster { env, name, state_dir: state_dir.to_path_buf(), settings: Settings::default() }
    }

    /// From the record in the state directory alone (`down` without a state file), if there is one.
    pub fn recorded(state_dir: &Path) -> Option<Self> {
        let probe = KindCluster {
            env: String::new(),
            name: String::new(),
            state_dir: state_dir.to_path_buf(),
            settings: Settings::default(),
        };
        let record = probe.load_record().ok().flatten()?;
        let env = record.cluster.strip_prefix("devenv-").unwrap_or(&record.cluster).to_string();
        Some(KindCluster { env, name: record.cluster, ..probe })
    }

    fn context(&self) -> String {
        format!("kind-{}", self.name)
    }

    fn record_path(&self) -> PathBuf {
        self.state_dir.join(RECORD_FILE)
    }

    fn load_record(&self) -> Result<Option<Record>, Error> {
        let path = self.record_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|source| Error::Record { path, source }),
            Err(_) => Ok(None),
        }
    }

    fn save_record(&self, record: &Record) -> Result<(), Error> {
        let path = self.record_path();
        let write = |source| Error::Write { path: path.clone(), source };
        std::fs::create_dir_all(&self.state_dir).map_err(write)?;
        let text = serde_json::to_vec_pretty(record).expect("the record serialises");
        std::fs::write(&path, text).map_err(write)
    }

    /// The text of `kind create cluster --config`.
    fn cluster_config(&self, user_path: Option<PathBuf>) -> Result<String, Error> {
        config::generate(self.settings.node_image.as_deref(), self.settings.user_config.as_ref())
            .map_err(|problem| Error::KindConfig { path: user_path.unwrap_or_default(), problem })
    }

    fn info_for(&self, record: &Record) -> Result<ClusterInfo, ProviderError> {
        let location = kubeconfig::default_location()?;
        let api_server = kubeconfig::read(&location)
            .ok()
            .and_then(|config| kubeconfig::resolve(&config, &location, Some(&self.context())).ok())
            .map(|(_, server)| server)
            .unwrap_or_default();
        Ok(ClusterInfo {
            provider: Provider::Kind,
            kubeconfig: location,
            context: self.context(),
            api_server,
            registry: Registry {
                host: format!("127.0.0.1:{}", record.registry_port),
                from_cluster: format!("{}:{REGISTRY_PORT}", record.registry_container),
            },
        })
    }

    /// The registry port: the record's while its container exists, else the profile's,
    /// else a free one.
    fn registry_port(&self, record: Option<&Record>, container_exists: bool) -> Result<u16, Error> {
        if let (Some(record), true) = (record, container_exists) {
            return Ok(record.registry_port);
        }
        match self.settings.registry_port {
            Some(port) if ports::is_free(port) => Ok(port),
            Some(port) => Err(Error::RegistryPortTaken { port }),
            None => match record.map(|r| r.registry_port).filter(|p| ports::is_free(*p)) {
                Some(port) => Ok(port),
                None => ports::pick_free(&[]).map_err(Error::RegistryPort),
            },
        }
    }

    /// Refuses a cluster of this name that devenv did not make, and a taken registry port.
    async fn check(&self) -> Result<(), Error> {
        cli::version()?;
        let record = self.load_record()?;
        if cli::clusters().await?.contains(&self.name) && record.is_none() {
            return Err(Error::NameTaken { name: self.name.clone() });
        }
        let docker = Docker::connect().await?;
        let container_exists = docker.inspect_container(&registry_container(&self.name)).await?.is_some();
        self.registry_port(record.as_ref(), container_exists)?;
        Ok(())
    }

    /// A cluster of this name is reused when devenv made it (its record says so) and refused
    /// otherwise; without one, it is created.
    fn decide(&self, exists: bool, recorded: bool) -> Result<ClusterIntent, Error> {
        let name = &self.name;
        match (exists, recorded) {
            (true, false) => Err(Error::NameTaken { name: name.clone() }),
            (true, true) => {
                Ok(ClusterIntent::new(ClusterAction::Reuse, format!("devenv made the kind cluster `{name}`")))
            }
            (false, _) => Ok(ClusterIntent::new(ClusterAction::Create, format!("there is no kind cluster `{name}`"))),
        }
    }

    async fn current_intent(&self) -> Result<ClusterIntent, ProviderError> {
        cli::version()?;
        let recorded = self.load_record()?.is_some();
        let exists = cli::clusters().await?.contains(&self.name);
        Ok(self.decide(exists, recorded)?)
    }

    async fn up(&self, planned: &ClusterIntent, reporter: &dyn Reporter) -> Result<Ensured, ProviderError> {
        let docker = Docker::connect().await.map_err(Error::from)?;
        let step = format!("cluster/{}", self.name);
        let started = Instant::now();
        reporter.started(&step, "checking kind");
        let result = self.up_steps(&docker, planned, &step, reporter).await;
        match &result {
            Ok(done) => {
                reporter.finished(&step, Status::Ok, &format!("context `{}`", done.info.context), started.elapsed())
            }
            Err(error) => reporter.finished(&step, Status::Failed, &error.to_string(), started.elapsed()),
        }
        result
    }

    async fn up_steps(
        &self,
        docker: &Docker,
        planned: &ClusterIntent,
        step: &str,
        reporter: &dyn Reporter,
    ) -> Result<Ensured, ProviderError> {
        let version = cli::version()?;
        let record = self.load_record().map_err(ProviderError::from)?;
        let exists = cli::clusters().await?.contains(&self.name);
        let intent = super::replan(planned, self.decide(exists, record.is_some())?, reporter);
        let container = registry_container(&self.name);
        let container_exists = docker.inspect_container(&container).await.map_err(Error::from)?.is_some();
        let port = self.registry_port(record.as_ref(), container_exists)?;
        let record = Record { cluster: self.name.clone(), registry_container: container.clone(), registry_port: port };
        // Recorded before anything is made, so that `down` finds it whatever happens next.
        self.save_record(&record)?;

        if intent.action == ClusterAction::Reuse {
            reporter.progress(step, &format!("reusing the kind cluster (kind {version})"));
            self.start_stopped_nodes(docker).await?;
        } else {
            let path = self.state_dir.join("kind-config.yaml");
            let text = self.cluster_config(None)?;
            std::fs::write(&path, text).map_err(|source| Error::Write { path: path.clone(), source })?;
            reporter.progress(step, &format!("kind {version}: creating the cluster"));
            cli::create(&self.name, &path, &|line| reporter.progress(step, line)).await?;
        }
        self.ensure_registry(docker, &record, step, reporter).await?;
        for node in cli::nodes(&self.name).await? {
            let files = config::registry_hosts(port, &format!("{container}:{REGISTRY_PORT}"));
            docker.write_files(&node, &files).await.map_err(Error::from)?;
        }
        let info = self.info_for(&record)?;
        let client = self.client_for(&info).await?;
        self.wait_nodes_ready(&client, step, reporter).await?;
        let hosting = config::local_registry_hosting(port, &format!("{container}:{REGISTRY_PORT}"));
        crate::kube::apply(&client, &hosting)
            .await
            .map_err(|source| Error::RegistryHosting { name: self.name.clone(), source: Box::new(source) })?;
        let presence = super::flux_presence(&client).await.map_err(|source| Error::Cluster {
            name: self.name.clone(),
            what: "does not say which Flux APIs it serves".into(),
            source: Some(Box::new(source)),
        })?;
        if presence.installed() {
            reporter.progress(step, "Flux is installed");
        } else {
            let registry = self.settings.flux_image_registry.as_deref();
            super::flux_install::install(&client, registry, step, reporter).await.map_err(Error::from)?;
        }
        Ok(Ensured { info, carried_out: intent })
    }

    /// After a restart of the machine kind's nodes may be stopped; they start as they were.
    async fn start_stopped_nodes(&self, docker: &Docker) -> Result<(), Error> {
        for node in docker.containers_with_labels(&[(KIND_CLUSTER_LABEL, &self.name)]).await? {
            if docker.inspect_container(&node).await?.is_some_and(|info| !info.running) {
                docker.start_container(&node).await?;
            }
        }
        Ok(())
    }

    /// The registry container: on the kind network, published on 127.0.0.1, its data in a volume.
    async fn ensure_registry(
        &self,
        docker: &Docker,
        record: &Record,
        step: &str,
        reporter: &dyn Reporter,
    ) -> Result<(), Error> {
        let name = &record.registry_container;
        match docker.inspect_container(name).await? {
            Some(info) if info.running => return Ok(()),
            Some(_) => {
                reporter.progress(step, &format!("starting the registry `{name}`"));
                return Ok(docker.start_container(name).await?);
            }
            None => {}
        }
        let image = self.settings.registry_image.clone().unwrap_or_else(|| DEFAULT_REGISTRY_IMAGE.to_string());
        reporter
            .progress(step, &format!("starting the registry `{name}` ({image}) on 127.0.0.1:{}", record.registry_port));
        docker.ensure_image(&image, &|line| reporter.progress(step, &format!("pulling {image}: {line}"))).await?;
        let labels = BTreeMap::from([
            (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
            (LABEL_ENV.to_string(), self.env.clone()),
        ]);
        let volume = registry_volume(&self.name);
        docker.ensure_volume(&volume, &labels).await?;
        let spec = ContainerSpec {
            name: name.clone(),
            image,
            env: BTreeMap::new(),
            command: None,
            labels,
            ports: BTreeMap::from([(REGISTRY_PORT, record.registry_port)]),
            volume: Some((volume, "/var/lib/registry".to_string())),
            memory_bytes: None,
            network: Some(NETWORK.to_string()),
        };
        docker.create_container(&spec).await?;
        if let Err(error) = docker.start_container(name).await {
            let _ = docker.remove_container(name, Duration::from_secs(1)).await;
            return Err(error.into());
        }
        Ok(())
    }

    async fn client_for(&self, info: &ClusterInfo) -> Result<kube::Client, Error> {
        kubeconfig::client(&info.kubeconfig, &info.context)
            .await
            .map_err(|source| Error::Client { name: self.name.clone(), source })
    }

    async fn wait_nodes_ready(&self, client: &kube::Client, step: &str, reporter: &dyn Reporter) -> Result<(), Error> {
        if container_cluster::wait_nodes_ready(client, NODES_READY_DEADLINE, step, reporter).await {
            Ok(())
        } else {
            Err(Error::NodesNotReady { name: self.name.clone(), waited: NODES_READY_DEADLINE })
        }
    }

    async fn down(&self, purge: bool, reporter: &dyn Reporter) -> Result<bool, Error> {
        let Some(record) = self.load_record()? else {
            // The registry's data kept by an earlier `down` goes with `--purge`.
            if purge && let Ok(docker) = Docker::connect().await {
                docker.remove_volume(&registry_volume(&self.name)).await?;
            }
            return Ok(false);
        };
        let step = format!("cluster/{}", self.name);
        let started = Instant::now();
        reporter.started(&step, "deleting the kind cluster");
        let mut existed = false;
        if cli::clusters().await?.contains(&record.cluster) {
            existed = true;
            cli::delete(&record.cluster, &|line| reporter.progress(&step, line)).await?;
        }
        let docker = Docker::connect().await?;
        if docker.inspect_container(&record.registry_container).await?.is_some() {
            existed = true;
            docker.remove_container(&record.registry_container, Duration::from_secs(5)).await?;
        }
        let volume = registry_volume(&record.cluster);
        if purge {
            docker.remove_volume(&volume).await?;
        }
        let path = self.record_path();
        if let Err(source) = std::fs::remove_file(&path)
            && source.kind() != std::io::ErrorKind::NotFound
        {
            return Err(Error::Write { path, source });
        }
        let kept = if purge { String::new() } else { format!(" (registry data kept in volume `{volume}`)") };
        reporter.finished(&step, Status::Ok, &format!("deleted{kept}"), started.elapsed());
        Ok(existed)
    }
}

fn read_kind_config(path: &Path) -> Result<serde_yaml::Value, Error> {
    let text =
        std::fs::read_to_string(path).map_err(|source| Error::ReadKindConfig { path: path.to_path_buf(), source })?;
    serde_yaml::from_str(&text).map_err(|source| Error::ParseKindConfig { path: path.to_path_buf(), source })
}

impl ClusterProvider for KindCluster {
    fn kind(&self) -> Provider {
        Provider::Kind
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { runs_pods: true, owns_cluster: true }
    }

    fn preflight(&self) -> BoxFuture<'_, Result<(), ProviderError>> {
        Box::pin(async move { Ok(self.check().await?) })
    }

    fn ensure<'a>(
        &'a self,
        _env: &'a str,
        planned: &'a ClusterIntent,
        reporter: &'a dyn Reporter,
    ) -> BoxFuture<'a, Result<Ensured, ProviderError>> {
        Box::pin(self.up(planned, reporter))
    }

    fn intent<'a>(&'a self, _env: &'a str) -> BoxFuture<'a, Result<ClusterIntent, ProviderError>> {
        Box::pin(self.current_intent())
    }

    /// Known before the cluster is made, so that the state file names it from the start
    /// (the registry's port is 0 until it is chosen).
    fn info(&self) -> Result<Option<ClusterInfo>, ProviderError> {
        let record = self.load_record()?.unwrap_or_else(|| Record {
            cluster: self.name.clone(),
            registry_container: registry_container(&self.name),
            registry_port: 0,
        });
        self.info_for(&record).map(Some)
    }

    fn client<'a>(&'a self, info: &'a ClusterInfo) -> BoxFuture<'a, Result<kube::Client, ProviderError>> {
        Box::pin(async move { Ok(self.client_for(info).await?) })
    }

    fn status<'a>(&'a self, info: &'a ClusterInfo) -> BoxFuture<'a, Result<ClusterStatus, ProviderError>> {
        Box::pin(async move {
            let client = self.client_for(info).await.map_err(|error| error.to_string());
            Ok(container_cluster::status(client, info).await.map_err(Error::from)?)
        })
    }

    fn delete<'a>(&'a self, purge: bool, reporter: &'a dyn Reporter) -> BoxFuture<'a, Result<bool, ProviderError>> {
        Box::pin(async move { Ok(self.down(purge, reporter).await?) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_is_made_reused_or_refused_by_what_kind_lists_and_the_record() {
        let kind = KindCluster {
            env: "shop".into(),
            name: "devenv-shop".into(),
            state_dir: PathBuf::from("/nowhere"),
            settings: Settings::default(),
        };
        let action = |exists, recorded| kind.decide(exists, recorded).map(|i| i.action);
        assert_eq!(action(false, false).unwrap(), ClusterAction::Create);
        assert_eq!(action(false, true).unwrap(), ClusterAction::Create, "deleted behind devenv's back");
        assert_eq!(action(true, true).unwrap(), ClusterAction::Reuse);
        assert!(matches!(action(true, false), Err(Error::NameTaken { .. })));
    }

    #[test]
    fn a_recorded_cluster_is_found_again_by_its_context() {
        let dir = tempfile::tempdir().unwrap();
        let info = ClusterInfo {
            provider: Provider::Kind,
            kubeconfig: PathBuf::from("/nowhere"),
            context: "kind-devenv-shop".into(),
            api_server: String::new(),
            registry: Registry { host: "127.0.0.1:5001".into(), from_cluster: "kind-devenv-shop-registry:5000".into() },
        };
        let kind = KindCluster::from_record(&info, dir.path());
        assert_eq!((kind.name.as_str(), kind.env.as_str()), ("devenv-shop", "shop"));
        assert_eq!(registry_container(&kind.name), "kind-devenv-shop-registry");
        assert_eq!(kind.load_record().unwrap(), None, "nothing recorded: `down` deletes nothing");
    }
}

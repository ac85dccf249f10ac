//! The `k3d` provider: a k3s cluster in Docker, created with the user's `k3d` binary from a
//! generated configuration, with the registry k3d creates beside it, and Flux installed when
//! the cluster has none. The same shape as the kind provider; k3d does more of the wiring
//! itself.
//!
//! - The cluster is `devenv-<env>` (profile `cluster.name`), from [`config::generate`]; k3d
//!   puts its kubeconfig context where kind puts kind's (`k3d-<cluster>`).
//! - The registry container `k3d-<cluster>-registry` is part of the cluster's configuration:
//!   k3d creates it on 127.0.0.1:PORT, joins it to the cluster network, writes the
//!   `registries.yaml` mirrors devenv generates (and its own) into every node, and writes the
//!   `kube-public/local-registry-hosting` ConfigMap. `k3d cluster delete` removes it again;
//!   its data stays in a named volume until `down --purge`.
//! - Substitute containers join the cluster's Docker network ([`network`]), so pods reach
//!   them by name.
//!
//! What devenv made is recorded in `<env state dir>/k3d.json` before it is made: a cluster of
//! the same name that devenv did not make is refused and never deleted.

pub mod cli;
pub mod config;

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
use crate::docker::{self, Docker};
use crate::naming;
use crate::ports;
use crate::ui::{Reporter, ReporterExt, Status};

/// The registry image when the profile names none (the kind provider's too).
pub const DEFAULT_REGISTRY_IMAGE: &str = super::kind::DEFAULT_REGISTRY_IMAGE;
/// How long the nodes may take to become Ready after `k3d cluster create`.
const NODES_READY_DEADLINE: Duration = Duration::from_secs(240);
const RECORD_FILE: &str = "k3d.json";
/// The configuration `k3d cluster create --config` reads, in the state directory.
const CONFIG_FILE: &str = "k3d-config.yaml";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the `k3d` command is not installed (it is not on PATH)")]
    Missing,
    #[error("`k3d version` says `{found}`; devenv needs k3d v{}.{}.0 or newer", cli::MIN_VERSION.0, cli::MIN_VERSION.1)]
    TooOld { found: String },
    #[error("cannot run `k3d {args}`")]
    Run {
        args: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`k3d {args}` failed ({status})")]
    Command { args: String, status: String, output: String },
    #[error("cannot read what `k3d {args}` printed")]
    List {
        args: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("a k3d cluster named `{name}` already exists, and devenv did not create it")]
    NameTaken { name: String },
    #[error("`{name}` cannot name a k3d cluster: it {reason}")]
    InvalidName { name: String, reason: String },
    #[error("the registry's port 127.0.0.1:{port} (profile `registry.hostPort`) is taken")]
    RegistryPortTaken { port: u16 },
    #[error("cannot choose a port on 127.0.0.1 for the registry")]
    RegistryPort(#[source] ports::Error),
    #[error("cannot write `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the k3d record `{}` is not valid", path.display())]
    Record {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Docker(#[from] docker::Error),
    #[error("cannot reach the k3d cluster `{name}`")]
    Client {
        name: String,
        #[source]
        source: kubeconfig::Error,
    },
    #[error("the k3d cluster `{name}` {what}")]
    Cluster {
        name: String,
        what: String,
        #[source]
        source: Option<Box<kube::Error>>,
    },
    #[error("no node of the k3d cluster `{name}` was Ready within {}s", waited.as_secs())]
    NodesNotReady { name: String, waited: Duration },
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

/// What the profile asks of a k3d cluster.
#[derive(Debug, Clone, Default)]
struct Settings {
    image: Option<String>,
    registry_port: Option<u16>,
    registry_image: Option<String>,
    flux_image_registry: Option<String>,
}

/// A k3d cluster of one environment.
#[derive(Debug)]
pub struct K3dCluster {
    name: String,
    state_dir: PathBuf,
    settings: Settings,
}

/// The Docker network k3d makes for a cluster; its nodes, its registry and the substitutes
/// are on it.
pub fn network(cluster: &str) -> String {
    format!("k3d-{cluster}")
}

fn registry_container(cluster: &str) -> String {
    format!("k3d-{cluster}-registry")
}

fn registry_volume(cluster: &str) -> String {
    format!("k3d-{cluster}-registry-data")
}

impl K3dCluster {
    /// From the profile; checks the cluster's name as k3d will, touches nothing.
    pub fn from_config(config: &Config, state_dir: &Path) -> Result<Self, ProviderError> {
        let cluster = &config.profile.cluster;
        let name = config.cluster_name();
        // k3d's own rule (RFC 1123 hostname, at most 32 characters); devenv's names are
        // DNS labels.
        naming::check_label(&name, config::MAX_CLUSTER_NAME)
            .map_err(|reason| Error::InvalidName { name: name.clone(), reason })?;
        let settings = Settings {
            image: config::k3s_image(cluster.image.as_deref(), cluster.kubernetes_version.as_deref()),
            registry_port: config.profile.registry.host_port,
            registry_image: config.profile.registry.image.clone(),
            flux_image_registry: config.profile.flux.image_registry.clone(),
        };
        Ok(K3dCluster { name, state_dir: state_dir.to_path_buf(), settings })
    }

    /// From the state file's record, for `down` and `status`.
    pub fn from_record(record: &ClusterInfo, state_dir: &Path) -> Self {
        let name = record.context.strip_prefix("k3d-").unwrap_or(&record.context).to_string();
        K3dCluster { name, state_dir: state_dir.to_path_buf(), settings: Settings::default() }
    }

    /// From the record in the state directory alone (`down` without a state file), if there is one.
    pub fn recorded(state_dir: &Path) -> Option<Self> {
        let probe =
            K3dCluster { name: String::new(), state_dir: state_dir.to_path_buf(), settings: Settings::default() };
        let record = probe.load_record().ok().flatten()?;
        Some(K3dCluster { name: record.cluster, ..probe })
    }

    fn context(&self) -> String {
        format!("k3d-{}", self.name)
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

    /// The configuration for `k3d cluster create --config`.
    fn spec(&self, record: &Record) -> config::Spec {
        config::Spec {
            cluster: self.name.clone(),
            image: self.settings.image.clone(),
            registry: record.registry_container.clone(),
            registry_port: record.registry_port,
            registry_image: self.settings.registry_image.clone().unwrap_or_else(|| DEFAULT_REGISTRY_IMAGE.to_string()),
            registry_volume: registry_volume(&self.name),
        }
    }

    fn info_for(&self, record: &Record) -> Result<ClusterInfo, ProviderError> {
        let location = kubeconfig::default_location()?;
        let api_server = kubeconfig::read(&location)
            .ok()
            .and_then(|config| kubeconfig::resolve(&config, &location, Some(&self.context())).ok())
            .map(|(_, server)| server)
            .unwrap_or_default();
        Ok(ClusterInfo {
            provider: Provider::K3d,
            kubeconfig: location,
            context: self.context(),
            api_server,
            registry: Registry {
                host: format!("127.0.0.1:{}", record.registry_port),
                from_cluster: format!("{}:{}", record.registry_container, config::REGISTRY_PORT),
            },
        })
    }

    /// The registry port: the record's while its cluster exists (the registry lives and dies
    /// with it), else the profile's, else the record's if free, else a free one.
    fn registry_port(&self, record: Option<&Record>, cluster_exists: bool) -> Result<u16, Error> {
        if let (Some(record), true) = (record, cluster_exists) {
            return Ok(record.registry_port);
        }
        match self.settings.registry_port {
            Some(port) if ports::is_free(port) => Ok(port),
            Some(port) => Err(Error::RegistryPortTaken { port }),
            None => match record.map(|r| r.registry_port).filter(|p| *p != 0 && ports::is_free(*p)) {
                Some(port) => Ok(port),
                None => ports::pick_free(&[]).map_err(Error::RegistryPort),
            },
        }
    }

    /// This environment's cluster as k3d lists it, if it exists.
    async fn listed(&self) -> Result<Option<cli::Cluster>, Error> {
        Ok(cli::clusters().await?.into_iter().find(|c| c.name == self.name))
    }

    /// Refuses a cluster of this name that devenv did not make, and a taken registry port.
    async fn check(&self) -> Result<(), Error> {
        cli::version()?;
        let record = self.load_record()?;
        let listed = self.listed().await?;
        if listed.is_some() && record.is_none() {
            return Err(Error::NameTaken { name: self.name.clone() });
        }
        self.registry_port(record.as_ref(), listed.is_some())?;
        Ok(())
    }

    /// A cluster of this name is reused when devenv made it (its record says so) and refused
    /// otherwise; without one, it is created. An interrupted create can leave devenv's
    /// cluster without a server (its registry alone): k3d cannot start that, so it is
    /// deleted and made again.
    fn decide(&self, listed: Option<&cli::Cluster>, recorded: bool) -> Result<ClusterIntent, Error> {
        let name = &self.name;
        Ok(match (listed, recorded) {
            (Some(_), false) => return Err(Error::NameTaken { name: name.clone() }),
            (Some(cluster), true) if cluster.servers_count == 0 => ClusterIntent::new(
                ClusterAction::Recreate,
                format!("the k3d cluster `{name}` has no server node (an interrupted create)"),
            ),
            (Some(_), true) => {
                ClusterIntent::new(ClusterAction::Reuse, format!("devenv made the k3d cluster `{name}`"))
            }
            (None, _) => ClusterIntent::new(ClusterAction::Create, format!("there is no k3d cluster `{name}`")),
        })
    }

    async fn current_intent(&self) -> Result<ClusterIntent, ProviderError> {
        cli::version()?;
        let recorded = self.load_record()?.is_some();
        Ok(self.decide(self.listed().await?.as_ref(), recorded)?)
    }

    async fn up(&self, planned: &ClusterIntent, reporter: &dyn Reporter) -> Result<Ensured, ProviderError> {
        let step = format!("cluster/{}", self.name);
        let started = Instant::now();
        reporter.started(&step, "checking k3d");
        let result = self.up_steps(planned, &step, reporter).await;
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
        planned: &ClusterIntent,
        step: &str,
        reporter: &dyn Reporter,
    ) -> Result<Ensured, ProviderError> {
        let version = cli::version()?;
        let record = self.load_record()?;
        let mut listed = self.listed().await?;
        let intent = super::replan(planned, self.decide(listed.as_ref(), record.is_some())?, reporter);
        let progress = |line: &str| reporter.progress(step, line);
        if intent.action == ClusterAction::Recreate {
            reporter
                .progress(step, "the cluster has no server node (an interrupted create): deleting it to start afresh");
            cli::delete(&self.name, &progress).await?;
            listed = None;
        }
        let port = self.registry_port(record.as_ref(), listed.is_some())?;
        let record = Record {
            cluster: self.name.clone(),
            registry_container: registry_container(&self.name),
            registry_port: port,
        };
        // Recorded before anything is made, so that `down` finds it whatever happens next.
        self.save_record(&record)?;

        match listed {
            Some(cluster) => {
                reporter.progress(step, &format!("reusing the k3d cluster (k3d {version})"));
                // After a restart of the machine or of Docker its containers may be stopped.
                if cluster.servers_running < cluster.servers_count {
                    reporter.progress(step, "starting the stopped cluster");
                    cli::start(&self.name, &progress).await?;
                }
            }
            None => {
                let path = self.state_dir.join(CONFIG_FILE);
                let text = config::to_yaml(&config::generate(&self.spec(&record)));
                std::fs::write(&path, text).map_err(|source| Error::Write { path: path.clone(), source })?;
                reporter.progress(step, &format!("k3d {version}: creating the cluster"));
                cli::create(&path, &progress).await?;
            }
        }
        let info = self.info_for(&record)?;
        let client = self.client_for(&info).await?;
        if !container_cluster::wait_nodes_ready(&client, NODES_READY_DEADLINE, step, reporter).await {
            return Err(Error::NodesNotReady { name: self.name.clone(), waited: NODES_READY_DEADLINE }.into());
        }
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

    async fn client_for(&self, info: &ClusterInfo) -> Result<kube::Client, Error> {
        kubeconfig::client(&info.kubeconfig, &info.context)
            .await
            .map_err(|source| Error::Client { name: self.name.clone(), source })
    }

    async fn down(&self, purge: bool, reporter: &dyn Reporter) -> Result<bool, Error> {
        let Some(record) = self.load_record()? else { return Ok(false) };
        let step = format!("cluster/{}", self.name);
        let started = Instant::now();
        reporter.started(&step, "deleting the k3d cluster");
        let mut existed = false;
        if cli::clusters().await?.iter().any(|c| c.name == record.cluster) {
            existed = true;
            cli::delete(&record.cluster, &|line| reporter.progress(&step, line)).await?;
        }
        let volume = registry_volume(&record.cluster);
        if purge {
            Docker::connect().await?.remove_volume(&volume).await?;
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

impl ClusterProvider for K3dCluster {
    fn kind(&self) -> Provider {
        Provider::K3d
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

    fn settings(registry_port: Option<u16>) -> K3dCluster {
        K3dCluster {
            name: "devenv-shop".into(),
            state_dir: PathBuf::from("/nowhere"),
            settings: Settings { registry_port, ..Settings::default() },
        }
    }

    #[test]
    fn a_cluster_is_made_reused_made_again_or_refused_by_what_k3d_lists_and_the_record() {
        let k3d = settings(None);
        let listed = |servers_count| cli::Cluster { name: "devenv-shop".into(), servers_count, servers_running: 0 };
        let action = |listed: Option<&cli::Cluster>, recorded| k3d.decide(listed, recorded).map(|i| i.action);
        assert_eq!(action(None, false).unwrap(), ClusterAction::Create);
        assert_eq!(action(None, true).unwrap(), ClusterAction::Create, "deleted behind devenv's back");
        assert_eq!(action(Some(&listed(1)), true).unwrap(), ClusterAction::Reuse);
        assert_eq!(action(Some(&listed(0)), true).unwrap(), ClusterAction::Recreate, "an interrupted create");
        assert!(matches!(action(Some(&listed(1)), false), Err(Error::NameTaken { .. })));
    }

    #[test]
    fn a_recorded_cluster_is_found_again_by_its_context() {
        let dir = tempfile::tempdir().unwrap();
        let info = ClusterInfo {
            provider: Provider::K3d,
            kubeconfig: PathBuf::from("/nowhere"),
            context: "k3d-devenv-shop".into(),
            api_server: String::new(),
            registry: Registry { host: "127.0.0.1:5001".into(), from_cluster: "k3d-devenv-shop-registry:5000".into() },
        };
        let k3d = K3dCluster::from_record(&info, dir.path());
        assert_eq!(k3d.name, "devenv-shop");
        assert_eq!(k3d.context(), "k3d-devenv-shop");
        assert_eq!(network(&k3d.name), "k3d-devenv-shop");
        assert_eq!(registry_container(&k3d.name), "k3d-devenv-shop-registry");
        assert_eq!(k3d.load_record().unwrap(), None, "nothing recorded: `down` deletes nothing");
    }

    #[test]
    fn the_record_is_what_the_configuration_is_made_from() {
        let dir = tempfile::tempdir().unwrap();
        let k3d = K3dCluster { state_dir: dir.path().to_path_buf(), ..settings(None) };
        let record = Record {
            cluster: "devenv-shop".into(),
            registry_container: registry_container("devenv-shop"),
            registry_port: 5001,
        };
        k3d.save_record(&record).unwrap();
        assert_eq!(k3d.load_record().unwrap(), Some(record.clone()));
        let spec = k3d.spec(&record);
        assert_eq!(
            (spec.registry.as_str(), spec.registry_port, spec.registry_image.as_str(), spec.registry_volume.as_str()),
            ("k3d-devenv-shop-registry", 5001, "registry:3", "k3d-devenv-shop-registry-data")
        );
        assert_eq!(k3d.info().unwrap().unwrap().registry.from_cluster, "k3d-devenv-shop-registry:5000");
    }

    #[test]
    fn the_registry_keeps_its_port_while_its_cluster_exists() {
        let record = Record {
            cluster: "devenv-shop".into(),
            registry_container: "k3d-devenv-shop-registry".into(),
            registry_port: 1,
        };
        // The cluster's registry holds its port: whether it is free is not asked.
        assert_eq!(settings(Some(2)).registry_port(Some(&record), true).unwrap(), 1);
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = held.local_addr().unwrap().port();
        assert!(matches!(
            settings(Some(taken)).registry_port(Some(&record), false),
            Err(Error::RegistryPortTaken { port }) if port == taken
        ));
        let chosen = settings(None).registry_port(None, false).unwrap();
        assert_ne!(chosen, 0);
    }
}

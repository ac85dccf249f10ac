//! Where substitutes run, behind one interface. `docker` runs each as a container on this
//! machine, published on 127.0.0.1; `cluster` (`cluster.rs`) runs each as a StatefulSet in
//! the environment's namespace, which this machine does not reach.
//!
//! The runtime answers both addresses of a substitute: where this machine reaches it (probes,
//! `status`, the summary) and where pods reach it (the environment ConfigMap).

use std::collections::BTreeMap;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use tokio::sync::OnceCell;

use super::{Action, Desired, Error, Observed, Removed, STOP_GRACE};
use crate::config::profile::SubstituteRuntime as RuntimeKind;
use crate::config::{Config, Service};
use crate::docker::{ContainerInfo, Docker, LogChunk, MemoryUsage};
use crate::naming;
use crate::state::ServiceState;
use crate::ui::Reporter;

/// What one substitute is, for `status` and `doctor`.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub running: bool,
    /// The runtime's word for its state: running, exited, created …
    pub state: String,
    /// Substitute port → port on this machine.
    pub ports: BTreeMap<u16, u16>,
    pub memory: Option<MemoryUsage>,
}

/// One place substitutes run. Methods that touch nothing are plain; the rest return futures.
pub trait SubstituteRuntime: Send + Sync {
    fn name(&self) -> &'static str;

    /// Whether the substitutes run inside the environment's cluster, so they can be reached
    /// only once it is up, and only by pods.
    fn in_cluster(&self) -> bool {
        false
    }

    /// Template values of a service as this machine reaches it.
    fn host_values(&self, env: &str, service: &Service, remembered: &ServiceState) -> BTreeMap<String, String>;

    /// Template values of a service as pods reach it.
    fn pod_values(&self, env: &str, service: &Service, remembered: &ServiceState) -> BTreeMap<String, String>;

    /// The engine's name and version, or why it cannot be reached.
    fn check(&self) -> BoxFuture<'_, Result<String, Error>>;

    /// Where the engine keeps its data, for the disk-space check.
    fn data_dir(&self) -> BoxFuture<'_, Option<String>>;

    /// What exists for each configured service, and instances whose service left devenv.yaml.
    #[allow(clippy::type_complexity)]
    fn observe<'a>(
        &'a self,
        config: &'a Config,
    ) -> BoxFuture<'a, Result<(BTreeMap<String, Observed>, Vec<String>), Error>>;

    /// Brings one substitute to its desired state and waits until it answers.
    fn ensure<'a>(
        &'a self,
        desired: &'a Desired,
        action: Action,
        reporter: &'a dyn Reporter,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// Removes one instance by name (an orphan); absent is fine.
    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), Error>>;

    /// One service's instance, if there is one.
    fn inspect<'a>(&'a self, env: &'a str, service: &'a Service) -> BoxFuture<'a, Result<Option<Instance>, Error>>;

    /// Removes every instance of the environment, found by label, and with `purge` its data.
    fn remove_all<'a>(
        &'a self,
        env: &'a str,
        purge: bool,
        reporter: &'a dyn Reporter,
    ) -> BoxFuture<'a, Result<Removed, Error>>;

    /// One service's output: what it printed since `since` (all of it without), then, with
    /// `follow`, what it prints until it stops.
    fn logs<'a>(
        &'a self,
        env: &'a str,
        service: &'a Service,
        follow: bool,
        since: Option<std::time::SystemTime>,
    ) -> BoxStream<'a, Result<LogChunk, Error>>;
}

/// The profile's runtime. Touches nothing: the engine (or the cluster) is reached on first
/// use. Configuration loading has made sure the provider suits it.
pub fn for_config(config: &Config) -> Box<dyn SubstituteRuntime> {
    match config.profile.substitutes.runtime {
        RuntimeKind::Docker => Box::new(DockerRuntime::default()),
        RuntimeKind::Cluster => Box::new(super::cluster::ClusterRuntime::for_config(config)),
    }
}

/// The runtime an environment recorded, for `down` when devenv.yaml cannot be read:
/// in-cluster substitutes in the recorded namespace, else Docker.
pub fn for_record(env: &str, record: Option<&crate::state::SubstitutePlacement>) -> Box<dyn SubstituteRuntime> {
    match record {
        Some(placement) => Box::new(super::cluster::ClusterRuntime::new(env, &placement.namespace)),
        None => Box::new(DockerRuntime::default()),
    }
}

/// Containers in the local Docker engine, ports on 127.0.0.1.
#[derive(Default)]
pub struct DockerRuntime {
    docker: OnceCell<Docker>,
}

impl DockerRuntime {
    async fn docker(&self) -> Result<&Docker, Error> {
        Ok(self.docker.get_or_try_init(Docker::connect).await?)
    }
}

fn instance(info: ContainerInfo, memory: Option<MemoryUsage>) -> Instance {
    Instance { running: info.running, state: info.state, ports: info.ports, memory }
}

impl SubstituteRuntime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn host_values(&self, env: &str, service: &Service, remembered: &ServiceState) -> BTreeMap<String, String> {
        super::host_values(env, service, remembered)
    }

    /// A container is reached by its name on the cluster's Docker network, at its own port.
    fn pod_values(&self, env: &str, service: &Service, remembered: &ServiceState) -> BTreeMap<String, String> {
        let mut values = super::host_values(env, service, remembered);
        values.insert("host".into(), naming::container_name(env, &service.name));
        for (name, port) in &service.substitute.ports {
            values.insert(format!("port.{name}"), port.to_string());
        }
        values.insert("port".into(), service.substitute.ports[&service.substitute.main_port].to_string());
        values
    }

    fn check(&self) -> BoxFuture<'_, Result<String, Error>> {
        Box::pin(async move {
            let docker = self.docker().await?;
            Ok(match docker.version().await {
                Ok(v) => format!("Docker {} (API {})", v.version, v.api_version),
                Err(e) => format!("reachable, but its version is unknown: {e}"),
            })
        })
    }

    fn data_dir(&self) -> BoxFuture<'_, Option<String>> {
        Box::pin(async move { self.docker().await.ok()?.root_dir().await })
    }

    fn observe<'a>(
        &'a self,
        config: &'a Config,
    ) -> BoxFuture<'a, Result<(BTreeMap<String, Observed>, Vec<String>), Error>> {
        Box::pin(async move { super::observe(self.docker().await?, config).await })
    }

    fn ensure<'a>(
        &'a self,
        desired: &'a Desired,
        action: Action,
        reporter: &'a dyn Reporter,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move { super::ensure(self.docker().await?, desired, action, reporter).await })
    }

    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move { Ok(self.docker().await?.remove_container(name, STOP_GRACE).await?) })
    }

    fn inspect<'a>(&'a self, env: &'a str, service: &'a Service) -> BoxFuture<'a, Result<Option<Instance>, Error>> {
        Box::pin(async move {
            let docker = self.docker().await?;
            let name = naming::container_name(env, &service.name);
            let Some(info) = docker.inspect_container(&name).await? else { return Ok(None) };
            let memory = if info.running { docker.memory_usage(&name).await? } else { None };
            Ok(Some(instance(info, memory)))
        })
    }

    fn remove_all<'a>(
        &'a self,
        env: &'a str,
        purge: bool,
        reporter: &'a dyn Reporter,
    ) -> BoxFuture<'a, Result<Removed, Error>> {
        Box::pin(async move { super::remove_all(self.docker().await?, env, purge, reporter).await })
    }

    fn logs<'a>(
        &'a self,
        env: &'a str,
        service: &'a Service,
        follow: bool,
        since: Option<std::time::SystemTime>,
    ) -> BoxStream<'a, Result<LogChunk, Error>> {
        let name = naming::container_name(env, &service.name);
        let chunks = async move {
            match self.docker().await {
                Ok(docker) => docker.logs(&name, follow, since).map(|item| item.map_err(Error::from)).boxed(),
                Err(error) => futures_util::stream::once(std::future::ready(Err(error))).boxed(),
            }
        };
        futures_util::stream::once(chunks).flatten().boxed()
    }
}

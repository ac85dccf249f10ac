//! The `existing` provider: a cluster someone else runs, reached through a kubeconfig context.
//! devenv never creates or deletes it, and needs Flux to be installed there already; the
//! registry is the one the profile names (`registry.url`, and `registry.pullUrl` when the
//! cluster knows it under another name).

use std::path::PathBuf;
use std::sync::OnceLock;

use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};

use super::{
    Capabilities, ClusterAction, ClusterInfo, ClusterIntent, ClusterProvider, ClusterStatus, Ensured,
    Error as ProviderError, Registry, answers, kubeconfig, registry,
};
use crate::config::Config;
use crate::config::profile::Provider;
use crate::ui::Reporter;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot use the kubeconfig context of the `existing` cluster")]
    Context(#[source] kubeconfig::Error),
    #[error("the API server of context `{context}` ({server}) does not answer: {reason}")]
    Unreachable { context: String, server: String, reason: String },
    #[error("the profile names no registry (`registry.url`) to push the working tree to")]
    NoRegistry,
}

/// A cluster reached through a kubeconfig context.
#[derive(Debug)]
pub struct Existing {
    /// As `KUBECONFIG` names it.
    kubeconfig: PathBuf,
    /// `None`: the kubeconfig's current context.
    context: Option<String>,
    registry: Registry,
    /// Learnt by `preflight`: whether the cluster's nodes run pods (kwok's fake nodes do not).
    runs_pods: OnceLock<bool>,
}

impl Existing {
    /// From the profile (`cluster.context` or `--context`, `registry.url`, `registry.pullUrl`)
    /// and the kubeconfig kubectl would read.
    pub fn from_config(config: &Config) -> Result<Self, ProviderError> {
        let kubeconfig = kubeconfig::default_location().map_err(Error::Context)?;
        let registry_config = &config.profile.registry;
        let Some(host) = registry_config.url.clone() else { return Err(Error::NoRegistry.into()) };
        let from_cluster = registry_config.pull_url.clone().unwrap_or_else(|| host.clone());
        Ok(Existing {
            kubeconfig,
            context: config.context.clone(),
            registry: Registry { host, from_cluster },
            runs_pods: OnceLock::new(),
        })
    }

    /// From the state file: the same kubeconfig and context as when the environment was made.
    pub fn from_record(record: &ClusterInfo) -> Self {
        Existing {
            kubeconfig: record.kubeconfig.clone(),
            context: Some(record.context.clone()),
            registry: record.registry.clone(),
            runs_pods: OnceLock::new(),
        }
    }

    fn resolve(&self) -> Result<ClusterInfo, ProviderError> {
        let config = kubeconfig::read(&self.kubeconfig).map_err(Error::Context)?;
        let (context, api_server) =
            kubeconfig::resolve(&config, &self.kubeconfig, self.context.as_deref()).map_err(Error::Context)?;
        Ok(ClusterInfo {
            provider: Provider::Existing,
            kubeconfig: self.kubeconfig.clone(),
            context,
            api_server,
            registry: self.registry.clone(),
        })
    }

    /// A client whose API server answered.
    async fn answering(&self, info: &ClusterInfo) -> Result<kube::Client, ProviderError> {
        let client = kubeconfig::client(&info.kubeconfig, &info.context).await.map_err(Error::Context)?;
        answers(&client).await.map_err(|reason| Error::Unreachable {
            context: info.context.clone(),
            server: info.api_server.clone(),
            reason,
        })?;
        Ok(client)
    }
}

/// The cluster is used as it is: `context `dev` (https://…)`.
fn use_intent(info: &ClusterInfo) -> ClusterIntent {
    ClusterIntent::new(ClusterAction::Use, format!("context `{}` ({})", info.context, info.api_server))
}

/// Whether a cluster's nodes run pods: not when every node is one of kwok's fake nodes.
async fn nodes_run_pods(client: &kube::Client) -> bool {
    let (key, value) = super::sim::KWOK_NODE_ANNOTATION;
    match Api::<Node>::all(client.clone()).list(&ListParams::default()).await {
        Ok(nodes) if !nodes.items.is_empty() => !nodes
            .items
            .iter()
            .all(|node| node.metadata.annotations.as_ref().and_then(|a| a.get(key)).is_some_and(|v| v == value)),
        _ => true,
    }
}

impl ClusterProvider for Existing {
    fn kind(&self) -> Provider {
        Provider::Existing
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { runs_pods: self.runs_pods.get().copied().unwrap_or(true), owns_cluster: false }
    }

    fn preflight(&self) -> BoxFuture<'_, Result<(), ProviderError>> {
        Box::pin(async move {
            let info = self.resolve()?;
            let client = self.answering(&info).await?;
            let presence = super::flux_presence(&client)
                .await
                .map_err(|source| ProviderError::FluxCheck { context: info.context.clone(), source })?;
            if !presence.installed() {
                return Err(ProviderError::FluxMissing { context: info.context, missing: presence.missing });
            }
            let _ = self.runs_pods.set(nodes_run_pods(&client).await);
            registry::credentials(&self.registry.host)?;
            Ok(())
        })
    }

    fn ensure<'a>(
        &'a self,
        _env: &'a str,
        _planned: &'a ClusterIntent,
        _reporter: &'a dyn Reporter,
    ) -> BoxFuture<'a, Result<Ensured, ProviderError>> {
        // Nothing to create: the cluster is someone else's, and preflight found it answering.
        Box::pin(async move {
            let info = self.resolve()?;
            Ok(Ensured { carried_out: use_intent(&info), info })
        })
    }

    fn intent<'a>(&'a self, _env: &'a str) -> BoxFuture<'a, Result<ClusterIntent, ProviderError>> {
        Box::pin(async move { Ok(use_intent(&self.resolve()?)) })
    }

    fn info(&self) -> Result<Option<ClusterInfo>, ProviderError> {
        self.resolve().map(Some)
    }

    fn client<'a>(&'a self, info: &'a ClusterInfo) -> BoxFuture<'a, Result<kube::Client, ProviderError>> {
        Box::pin(async move { Ok(kubeconfig::client(&info.kubeconfig, &info.context).await.map_err(Error::Context)?) })
    }

    fn status<'a>(&'a self, info: &'a ClusterInfo) -> BoxFuture<'a, Result<ClusterStatus, ProviderError>> {
        Box::pin(async move {
            let client = kubeconfig::client(&info.kubeconfig, &info.context).await.map_err(Error::Context)?;
            Ok(match answers(&client).await {
                Ok(version) => ClusterStatus {
                    healthy: true,
                    detail: format!("Kubernetes {version} at {}", info.api_server),
                    processes: Vec::new(),
                },
                Err(reason) => ClusterStatus {
                    healthy: false,
                    detail: format!("{} does not answer: {reason}", info.api_server),
                    processes: Vec::new(),
                },
            })
        })
    }

    fn delete<'a>(&'a self, _purge: bool, _reporter: &'a dyn Reporter) -> BoxFuture<'a, Result<bool, ProviderError>> {
        // Not devenv's cluster: it is never stopped or deleted.
        Box::pin(async { Ok(false) })
    }
}

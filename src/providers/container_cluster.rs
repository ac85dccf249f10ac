//! What the providers whose nodes are Docker containers (kind, k3d) share: their CLI's
//! version asked once per run, and once their cluster runs, waiting for the nodes to be Ready
//! and `status`'s view of the nodes, the pods and the registry container beside them.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};

use super::{ClusterInfo, ClusterStatus};

/// `found`, or what `ask` answers, kept in `found` for the rest of the run (a CLI's version:
/// the binary does not change meanwhile). A failure is not kept, so it is asked again.
pub fn asked_once<E>(
    found: &std::sync::OnceLock<String>,
    ask: impl FnOnce() -> Result<String, E>,
) -> Result<String, E> {
    if let Some(known) = found.get() {
        return Ok(known.clone());
    }
    let answer = ask()?;
    Ok(found.get_or_init(|| answer).clone())
}
use crate::docker::{self, Docker};
use crate::ui::{Reporter, ReporterExt};

pub fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits until the cluster has nodes and every one is Ready, watching them; false when
/// `deadline` passed first (or the nodes could not be read until then).
pub async fn wait_nodes_ready(client: &kube::Client, deadline: Duration, step: &str, reporter: &dyn Reporter) -> bool {
    let nodes: Api<Node> = Api::all(client.clone());
    reporter.progress(step, "waiting for the nodes to be Ready");
    let all_ready = |nodes: &[Node]| !nodes.is_empty() && nodes.iter().all(node_ready);
    crate::kube::until_all(&nodes, &ListParams::default(), all_ready, deadline).await.unwrap_or(false)
}

/// The cluster's health for `status`: the API server's version, nodes Ready, pods Running and
/// whether the registry container (`info.registry.from_cluster`'s host) runs.
pub async fn status(client: Result<kube::Client, String>, info: &ClusterInfo) -> Result<ClusterStatus, docker::Error> {
    let unhealthy = |detail: String| ClusterStatus { healthy: false, detail, processes: Vec::new() };
    let client = match client {
        Ok(client) => client,
        Err(error) => return Ok(unhealthy(error)),
    };
    let version = match super::answers(&client).await {
        Ok(version) => version,
        Err(reason) => return Ok(unhealthy(format!("{} does not answer: {reason}", info.api_server))),
    };
    let nodes = Api::<Node>::all(client.clone()).list(&ListParams::default()).await.map(|l| l.items);
    let pods = Api::<Pod>::all(client).list(&ListParams::default()).await.map(|l| l.items);
    let (Ok(nodes), Ok(pods)) = (nodes, pods) else {
        return Ok(unhealthy(format!("Kubernetes {version}: its nodes and pods cannot be listed")));
    };
    let ready = nodes.iter().filter(|n| node_ready(n)).count();
    let phase = |p: &Pod| p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
    let running = pods.iter().filter(|p| phase(p) == "Running").count();
    let done = pods.iter().filter(|p| phase(p) == "Succeeded").count();
    let docker = Docker::connect().await?;
    let registry = info.registry.from_cluster.split(':').next().unwrap_or_default().to_string();
    let registry_running = docker.inspect_container(&registry).await?.is_some_and(|c| c.running);
    Ok(ClusterStatus {
        healthy: ready == nodes.len() && ready > 0 && registry_running,
        detail: format!(
            "Kubernetes {version}: {ready}/{} node(s) Ready, {running} pod(s) Running, {done} completed; registry {}",
            nodes.len(),
            if registry_running { "running" } else { "not running" }
        ),
        processes: Vec::new(),
    })
}

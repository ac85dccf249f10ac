//! Installs Flux's source-, kustomize- and helm-controllers into a cluster devenv made, from
//! the manifest vendored in `flux/install/flux.yaml` (generated from the controllers' own Go
//! modules at the versions the sim runs; `flux/install/generate.sh`), and waits until they
//! are Available. A cluster that already serves Flux's APIs keeps its own Flux.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::Value;

use crate::ui::{Reporter, ReporterExt};

/// The vendored install manifest.
pub const MANIFEST: &str = include_str!("../../flux/install/flux.yaml");
/// Where the manifest's images come from; `flux.imageRegistry` replaces it.
pub const DEFAULT_IMAGE_REGISTRY: &str = "ghcr.io/fluxcd";
/// The namespace the manifest installs into.
pub const NAMESPACE: &str = "flux-system";
/// How long the controllers may take to become Available.
pub const READY_DEADLINE: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the vendored Flux install manifest is not valid YAML")]
    Manifest(#[source] serde_yaml::Error),
    #[error("cannot install Flux")]
    Apply(#[source] Box<crate::kube::Error>),
    #[error("cannot read the Flux controllers' Deployments")]
    Read(#[source] Box<kube::Error>),
    #[error("Flux's controllers were not Available within {}s: {}", waited.as_secs(), waiting.join("; "))]
    NotReady { waited: Duration, waiting: Vec<String> },
}

/// The `# <controller>: <version>` lines of the manifest's header.
pub fn versions() -> Vec<(String, String)> {
    MANIFEST
        .lines()
        .take_while(|line| line.starts_with('#'))
        .filter_map(|line| line.trim_start_matches('#').trim().split_once(": "))
        .filter(|(name, _)| name.ends_with("-controller"))
        .map(|(name, version)| (name.to_string(), version.trim().to_string()))
        .collect()
}

/// The manifest's objects, images taken from `image_registry` when given.
pub fn objects(image_registry: Option<&str>) -> Result<Vec<Value>, Error> {
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(MANIFEST) {
        let value: Value = serde::Deserialize::deserialize(document).map_err(Error::Manifest)?;
        if value.is_null() {
            continue;
        }
        objects.push(value);
    }
    if let Some(registry) = image_registry {
        let registry = registry.trim_end_matches('/');
        for object in &mut objects {
            rewrite_images(object, registry);
        }
    }
    Ok(objects)
}

/// Every `image: ghcr.io/fluxcd/NAME:TAG` of a Deployment becomes `REGISTRY/NAME:TAG`.
fn rewrite_images(object: &mut Value, registry: &str) {
    let Some(containers) = object.pointer_mut("/spec/template/spec/containers").and_then(Value::as_array_mut) else {
        return;
    };
    for container in containers {
        if let Some(image) = container.get("image").and_then(Value::as_str)
            && let Some(rest) = image.strip_prefix(DEFAULT_IMAGE_REGISTRY)
        {
            container["image"] = Value::String(format!("{registry}{rest}"));
        }
    }
}

/// Applies the manifest (CRDs and the namespace first) and waits until every controller is
/// Available.
pub async fn install(
    client: &kube::Client,
    image_registry: Option<&str>,
    step: &str,
    reporter: &dyn Reporter,
) -> Result<(), Error> {
    let mut objects = objects(image_registry)?;
    // Namespaces and CRDs before what lives in them.
    objects.sort_by_key(|o| match o.get("kind").and_then(Value::as_str) {
        Some("Namespace") => 0,
        Some("CustomResourceDefinition") => 1,
        _ => 2,
    });
    reporter.progress(step, &format!("installing Flux ({} objects)", objects.len()));
    for object in &objects {
        crate::kube::apply(client, object).await.map_err(|e| Error::Apply(Box::new(e)))?;
    }
    let names: Vec<String> = objects
        .iter()
        .filter(|o| o.get("kind").and_then(Value::as_str) == Some("Deployment"))
        .filter_map(|o| o.pointer("/metadata/name").and_then(Value::as_str).map(str::to_string))
        .collect();
    wait_available(client, &names, step, reporter).await
}

/// Watches the Deployments until each has an available replica, reporting which are still
/// awaited; on timeout, says what each waiting controller's pod is doing (an image that cannot
/// be pulled, a crash …).
async fn wait_available(
    client: &kube::Client,
    names: &[String],
    step: &str,
    reporter: &dyn Reporter,
) -> Result<(), Error> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let mut waiting = names.to_vec();
    let mut last = format!("waiting for {}", waiting.join(", "));
    reporter.progress(step, &last);
    let all_available = |found: &[Deployment]| {
        waiting = unavailable(names, found);
        let now = format!("waiting for {}", waiting.join(", "));
        if !waiting.is_empty() && now != last {
            reporter.progress(step, &now);
            last = now;
        }
        waiting.is_empty()
    };
    let ready = crate::kube::until_all(&deployments, &ListParams::default(), all_available, READY_DEADLINE)
        .await
        .map_err(|e| Error::Read(Box::new(e)))?;
    if ready {
        return Ok(());
    }
    let mut described = Vec::new();
    for name in &waiting {
        described.push(format!("{name}: {}", pod_condition(client, name).await));
    }
    Err(Error::NotReady { waited: READY_DEADLINE, waiting: described })
}

/// The controllers among `names` whose Deployment is missing from `found` or has no available
/// replica.
fn unavailable(names: &[String], found: &[Deployment]) -> Vec<String> {
    let available = |name: &String| {
        found.iter().any(|d| {
            d.metadata.name.as_ref() == Some(name)
                && d.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0) > 0
        })
    };
    names.iter().filter(|name| !available(name)).cloned().collect()
}

/// What the pod of a controller is doing: the waiting reason of its container, or its phase.
async fn pod_condition(client: &kube::Client, controller: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let Ok(list) = pods.list(&ListParams::default().labels(&format!("app={controller}"))).await else {
        return "its pods cannot be read".into();
    };
    let Some(pod) = list.items.into_iter().next() else { return "no pod yet".into() };
    let status = pod.status.unwrap_or_default();
    let waiting = status
        .container_statuses
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| c.state.and_then(|s| s.waiting))
        .map(|w| match w.message {
            Some(message) => format!("{} ({message})", w.reason.unwrap_or_default()),
            None => w.reason.unwrap_or_default(),
        })
        .next();
    waiting.unwrap_or_else(|| format!("pod {}", status.phase.unwrap_or_else(|| "Pending".into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_controller_is_awaited_until_its_deployment_has_an_available_replica() {
        let deployment = |name: &str, available: Option<i32>| -> Deployment {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "status": available.map(|n| serde_json::json!({"availableReplicas": n})),
            }))
            .unwrap()
        };
        let names: Vec<String> =
            ["source-controller", "kustomize-controller", "helm-controller"].map(String::from).into();
        let found = [deployment("source-controller", Some(1)), deployment("kustomize-controller", Some(0))];
        assert_eq!(unavailable(&names, &found), ["kustomize-controller", "helm-controller"]);
        let found = names.iter().map(|n| deployment(n, Some(1))).collect::<Vec<_>>();
        assert!(unavailable(&names, &found).is_empty());
    }

    #[test]
    fn the_vendored_manifest_matches_the_pinned_controller_versions() {
        let pins = crate::providers::sim::VERSIONS;
        let pin = |key: &str| {
            pins.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap_or_else(|| panic!("{key} pinned"))
        };
        let expected = vec![
            ("source-controller".to_string(), pin("SOURCE_CONTROLLER_VERSION").to_string()),
            ("kustomize-controller".to_string(), pin("KUSTOMIZE_CONTROLLER_VERSION").to_string()),
            ("helm-controller".to_string(), pin("HELM_CONTROLLER_VERSION").to_string()),
        ];
        let mut found = versions();
        found.sort();
        let mut expected_sorted = expected.clone();
        expected_sorted.sort();
        assert_eq!(found, expected_sorted, "regenerate with flux/install/generate.sh");
        let objects = objects(None).unwrap();
        for (name, version) in &expected {
            let deployment = objects
                .iter()
                .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == name.as_str())
                .unwrap_or_else(|| panic!("a Deployment {name}"));
            assert_eq!(
                deployment["spec"]["template"]["spec"]["containers"][0]["image"],
                format!("ghcr.io/fluxcd/{name}:{version}")
            );
        }
        for kind in ["Kustomization", "HelmRelease", "OCIRepository", "HelmChart", "HelmRepository"] {
            assert!(
                objects.iter().any(|o| o["kind"] == "CustomResourceDefinition" && o["spec"]["names"]["kind"] == kind),
                "the {kind} CRD"
            );
        }
    }

    #[test]
    fn an_image_registry_replaces_ghcr() {
        let objects = objects(Some("mirror.example.com/flux/")).unwrap();
        let images: Vec<&str> = objects
            .iter()
            .filter(|o| o["kind"] == "Deployment")
            .map(|o| o["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap())
            .collect();
        assert_eq!(images.len(), 3);
        assert!(
            images.iter().all(|i| i.starts_with("mirror.example.com/flux/") && i.contains("-controller:v")),
            "{images:?}"
        );
    }
}

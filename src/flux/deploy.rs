//! Hands the environment to Flux and waits for it: the environment ConfigMap and Secret, the
//! artifact, `OCIRepository/devenv-source`, the root `Kustomization/devenv-root`, a
//! reconcile request, then every Flux Kustomization and HelmRelease of the environment
//! until Ready. `remove` undoes it, letting Flux prune what it applied.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use super::artifact::{self, Pushed};
use super::overlay::SOURCE_NAME;
use super::{Error as FluxError, Prepared};
use crate::config::Config;
use crate::envmap::{self, EnvMap};
use crate::kube::{self as k8s, describe};
use crate::naming::{LABEL_ENV, LABEL_MANAGED_BY, MANAGED_BY};
use crate::ui::{Reporter, ReporterExt, Status};

/// The root Kustomization devenv creates.
pub const ROOT_NAME: &str = "devenv-root";
const POLL: Duration = Duration::from_millis(500);
/// How long `remove` waits for Flux to prune what it applied.
const PRUNE_DEADLINE: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Flux is not installed in the cluster (no {kind} API)")]
    FluxMissing {
        kind: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Kube(#[from] k8s::Error),
    #[error(transparent)]
    Artifact(#[from] artifact::Error),
    #[error("cannot list Flux objects")]
    List(#[source] kube::Error),
    #[error("{object} failed: {message}")]
    Failed { object: String, message: String },
    #[error("not everything was Ready within {}s; still waiting for: {waiting}", deadline.as_secs())]
    Timeout { deadline: Duration, waiting: String },
    #[error("{object} was not removed within {}s (a finalizer may be blocked)", deadline.as_secs())]
    PruneTimeout { object: String, deadline: Duration },
}

impl From<Error> for FluxError {
    fn from(error: Error) -> Self {
        FluxError::Deploy(Box::new(error))
    }
}

/// One Flux object of the environment and its readiness.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ObjectStatus {
    pub object: String,
    pub ready: bool,
    pub message: String,
    pub depends_on: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Deployed {
    pub artifact: Pushed,
    pub objects: Vec<ObjectStatus>,
}

fn api(client: &kube::Client, group: &str, version: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::all_with(client.clone(), &resource)
}

fn kustomizations(client: &kube::Client) -> Api<DynamicObject> {
    api(client, "kustomize.toolkit.fluxcd.io", "v1", "Kustomization", "kustomizations")
}

fn helm_releases(client: &kube::Client) -> Api<DynamicObject> {
    api(client, "helm.toolkit.fluxcd.io", "v2", "HelmRelease", "helmreleases")
}

/// The objects devenv applies besides the app: env ConfigMap/Secret per namespace, source, root.
pub fn objects(config: &Config, prepared: &Prepared, env: &EnvMap, registry_in_cluster: &str) -> Vec<Value> {
    let flux = &config.project.flux;
    let mut namespaces: BTreeSet<String> = prepared.packed.substitution_namespaces.clone();
    namespaces.insert(envmap::namespace(config));
    let mut objects = Vec::new();
    for namespace in &namespaces {
        objects.push(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": config.project.environment.config_map.name, "namespace": namespace},
            "data": env.config_map,
        }));
        objects.push(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": envmap::secret_name(config), "namespace": namespace},
            "type": "Opaque",
            "stringData": env.secret,
        }));
    }
    objects.push(json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
        "metadata": {"name": SOURCE_NAME, "namespace": flux.namespace},
        "spec": {
            "interval": "60m",
            "url": format!("oci://{registry_in_cluster}/devenv/{}", config.env),
            "ref": {"tag": artifact::TAG},
            "insecure": true,
        },
    }));
    objects.push(json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": ROOT_NAME, "namespace": flux.namespace},
        "spec": {
            "interval": "60m",
            "path": format!("./{}", flux.path.trim_start_matches("./")),
            "prune": true,
            "sourceRef": {"kind": "OCIRepository", "name": SOURCE_NAME},
        },
    }));
    for object in &mut objects {
        k8s::label(object, &config.env);
    }
    objects
}

/// Applies the environment, requests reconciliation and waits until every Flux object of the
/// environment is Ready.
pub async fn up(
    client: &kube::Client,
    config: &Config,
    prepared: &Prepared,
    env: &EnvMap,
    registry: &str,
    timeout: Duration,
    reporter: &dyn Reporter,
) -> Result<Deployed, Error> {
    for (api, kind) in [(kustomizations(client), "Kustomization"), (helm_releases(client), "HelmRelease")] {
        api.list(&ListParams::default().limit(1))
            .await
            .map_err(|source| Error::FluxMissing { kind: kind.to_string(), source })?;
    }
    let step = "flux/apply";
    let started = Instant::now();
    reporter.started(step, "environment ConfigMap and Secret, artifact, source and root");
    let objects = objects(config, prepared, env, registry);
    for object in &objects {
        ensure_namespace(client, object, &config.env).await?;
    }
    let pushed =
        artifact::push_if_changed(registry, &config.env, &prepared.packed, &config.repo.display().to_string()).await?;
    for object in &objects {
        k8s::apply(client, object).await?;
    }
    let requested = request_reconcile(client, &objects[objects.len() - 2..]).await?;
    let what = if pushed.pushed { "pushed a new artifact" } else { "artifact unchanged" };
    reporter.finished(step, Status::Ok, what, started.elapsed());

    let statuses = wait_ready(client, config, &pushed, &requested, timeout, reporter).await?;
    Ok(Deployed { artifact: pushed, objects: statuses })
}

/// Creates a missing namespace for an object, labelled as devenv's; an existing one is left alone.
async fn ensure_namespace(client: &kube::Client, object: &Value, env: &str) -> Result<(), Error> {
    let Some(namespace) = object.pointer("/metadata/namespace").and_then(Value::as_str) else { return Ok(()) };
    let mut namespace_object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
    if k8s::get(client, &namespace_object).await?.is_none() {
        k8s::label(&mut namespace_object, env);
        k8s::apply(client, &namespace_object).await?;
    }
    Ok(())
}

/// Sets `reconcile.fluxcd.io/requestedAt` so Flux acts now rather than at its interval.
async fn request_reconcile(client: &kube::Client, objects: &[Value]) -> Result<String, Error> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let token = format!("{}.{:09}", now.as_secs(), now.subsec_nanos());
    for object in objects {
        k8s::annotate(client, object, "reconcile.fluxcd.io/requestedAt", &token).await?;
    }
    Ok(token)
}

fn condition<'a>(object: &'a DynamicObject, kind: &str) -> Option<&'a Value> {
    object.data.pointer("/status/conditions")?.as_array()?.iter().find(|c| c["type"] == kind)
}

fn key(object: &DynamicObject) -> String {
    format!(
        "{}/{}/{}",
        object.types.as_ref().map(|t| t.kind.as_str()).unwrap_or("?"),
        object.metadata.namespace.as_deref().unwrap_or(""),
        object.metadata.name.as_deref().unwrap_or("")
    )
}

/// Reasons with which Flux reports an object not Ready that are not failures.
const WAITING_REASONS: &[&str] =
    &["Progressing", "ProgressingWithRetry", "DependencyNotReady", "ArtifactFailed", "Reconciling"];

/// Polls the environment's Flux objects until all are Ready, one fails, or the deadline passes.
async fn wait_ready(
    client: &kube::Client,
    config: &Config,
    pushed: &Pushed,
    requested: &str,
    timeout: Duration,
    reporter: &dyn Reporter,
) -> Result<Vec<ObjectStatus>, Error> {
    let started = Instant::now();
    let revision_suffix = pushed.manifest_digest.clone();
    let root_key = format!("Kustomization/{}/{ROOT_NAME}", config.project.flux.namespace);
    let mut announced: BTreeSet<String> = BTreeSet::new();
    let mut finished: BTreeSet<String> = BTreeSet::new();
    loop {
        let mut all: Vec<DynamicObject> =
            kustomizations(client).list(&ListParams::default()).await.map_err(Error::List)?.items;
        all.extend(helm_releases(client).list(&ListParams::default()).await.map_err(Error::List)?.items);
        let ours = environment_objects(&all, &config.project.flux.namespace);
        let mut statuses = Vec::new();
        let mut waiting = Vec::new();
        for object in &ours {
            let key = key(object);
            let ready = condition(object, "Ready");
            let generation = object.metadata.generation;
            let observed = object.data.pointer("/status/observedGeneration").and_then(Value::as_i64);
            // A Kustomization of the artifact counts only once it handled this revision; Flux
            // does not bump observedGeneration on a failed attempt, so failures are matched
            // by the attempted revision.
            let revision = |field: &str| {
                let path = format!("/status/{field}");
                object.data.pointer(&path).and_then(Value::as_str).is_some_and(|r| r.ends_with(&revision_suffix))
            };
            let of_artifact = object.data.pointer("/spec/sourceRef/name").and_then(Value::as_str) == Some(SOURCE_NAME);
            let mut is_ready = ready.is_some_and(|c| c["status"] == "True") && observed == generation;
            let mut current = observed == generation;
            if of_artifact {
                is_ready &= revision("lastAppliedRevision");
                current = revision("lastAttemptedRevision");
            }
            if key == root_key {
                let handled = object.data.pointer("/status/lastHandledReconcileAt").and_then(Value::as_str);
                is_ready &= handled == Some(requested);
            }
            let message = ready.and_then(|c| c["message"].as_str()).unwrap_or("waiting for the controller").to_string();
            let reason = ready.and_then(|c| c["reason"].as_str()).unwrap_or_default();
            if ready.is_some_and(|c| c["status"] == "False") && current && !WAITING_REASONS.contains(&reason) {
                reporter.finished(&format!("flux/{key}"), Status::Failed, &message, started.elapsed());
                return Err(Error::Failed { object: key, message });
            }
            let step = format!("flux/{key}");
            if !is_ready && announced.insert(key.clone()) {
                reporter.started(&step, &message);
            } else if !is_ready {
                reporter.progress(&step, &message);
            } else if finished.insert(key.clone()) && announced.contains(&key) {
                reporter.finished(&step, Status::Ok, "Ready", started.elapsed());
            }
            if !is_ready {
                waiting.push(format!("{key} ({message})"));
            }
            let depends_on = object
                .data
                .pointer("/spec/dependsOn")
                .and_then(Value::as_array)
                .map(|list| list.iter().filter_map(|d| d["name"].as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            statuses.push(ObjectStatus { object: key, ready: is_ready, message, depends_on });
        }
        let root_seen = statuses.iter().any(|s| s.object == root_key);
        if root_seen && waiting.is_empty() {
            return Ok(statuses);
        }
        if started.elapsed() >= timeout {
            let waiting = if waiting.is_empty() { root_key.clone() } else { waiting.join(", ") };
            return Err(Error::Timeout { deadline: timeout, waiting });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The root and every Kustomization or HelmRelease applied, directly or through others, by it.
fn environment_objects<'a>(all: &'a [DynamicObject], flux_namespace: &str) -> Vec<&'a DynamicObject> {
    let applied_by = |object: &DynamicObject| -> Option<(String, String)> {
        let labels = object.metadata.labels.as_ref()?;
        Some((
            labels.get("kustomize.toolkit.fluxcd.io/namespace")?.clone(),
            labels.get("kustomize.toolkit.fluxcd.io/name")?.clone(),
        ))
    };
    let mut ours: BTreeMap<(String, String), ()> =
        BTreeMap::from([((flux_namespace.to_string(), ROOT_NAME.to_string()), ())]);
    loop {
        let before = ours.len();
        for object in all {
            let is_kustomization = object.types.as_ref().is_some_and(|t| t.kind == "Kustomization");
            if is_kustomization && applied_by(object).is_some_and(|parent| ours.contains_key(&parent)) {
                let id = (
                    object.metadata.namespace.clone().unwrap_or_default(),
                    object.metadata.name.clone().unwrap_or_default(),
                );
                ours.insert(id, ());
            }
        }
        if ours.len() == before {
            break;
        }
    }
    all.iter()
        .filter(|object| {
            let id = (
                object.metadata.namespace.clone().unwrap_or_default(),
                object.metadata.name.clone().unwrap_or_default(),
            );
            let is_kustomization = object.types.as_ref().is_some_and(|t| t.kind == "Kustomization");
            (is_kustomization && ours.contains_key(&id))
                || applied_by(object).is_some_and(|parent| ours.contains_key(&parent))
        })
        .collect()
}

/// Deletes the root (Flux prunes what it applied) and waits until it is gone, then the source,
/// the environment ConfigMaps and Secrets, and the namespaces devenv created.
pub async fn remove(client: &kube::Client, config: &Config, reporter: &dyn Reporter) -> Result<bool, Error> {
    let step = "flux/remove";
    let started = Instant::now();
    let root = json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": ROOT_NAME, "namespace": config.project.flux.namespace},
    });
    if kustomizations(client).list(&ListParams::default().limit(1)).await.is_err() {
        return Ok(false);
    }
    if !k8s::delete(client, &root).await? {
        return Ok(false);
    }
    reporter.started(step, "waiting for Flux to prune what it applied");
    while k8s::get(client, &root).await?.is_some() {
        if started.elapsed() >= PRUNE_DEADLINE {
            return Err(Error::PruneTimeout { object: describe(&root), deadline: PRUNE_DEADLINE });
        }
        tokio::time::sleep(POLL).await;
    }
    let source = json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
        "metadata": {"name": SOURCE_NAME, "namespace": config.project.flux.namespace},
    });
    k8s::delete(client, &source).await?;
    let selector = format!("{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_ENV}={}", config.env);
    for (kind, plural) in [("ConfigMap", "configmaps"), ("Secret", "secrets"), ("Namespace", "namespaces")] {
        let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", kind), plural);
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let list = api.list(&ListParams::default().labels(&selector)).await.map_err(Error::List)?;
        for item in list.items {
            let object = json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": item.metadata.name, "namespace": item.metadata.namespace}});
            k8s::delete(client, &object).await?;
        }
    }
    reporter.finished(step, Status::Ok, "removed", started.elapsed());
    Ok(true)
}

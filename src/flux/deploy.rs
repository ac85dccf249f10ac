//! Hands the environment to Flux: the environment ConfigMap and Secret, the repository's
//! charts, one artifact and OCIRepository per Kustomization, the root `Kustomization/devenv-root`,
//! reconcile requests, then a watch until Ready. `remove` undoes it, letting Flux prune what
//! it applied.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use super::artifact::{self, Pushed};
use super::names::{REQUESTED_AT, RESET_AT, ROOT_NAME, SOURCE_NAME};
use super::overlay;
use super::pack::Packed;
use super::wait::{self, ObjectStatus, helm_releases, kustomizations};
use super::{charts, publish};
use crate::config::Config;
use crate::envmap::{self, EnvMap};
use crate::kube::{self as k8s, describe};
use crate::providers::Registry;
use crate::state::FluxPlacement;
use crate::ui::{Reporter, ReporterExt, Status};

/// Requests to the API server in flight at once when applying devenv's objects.
const CONCURRENT_REQUESTS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Flux is not installed in the cluster (no {kind} API)")]
    FluxMissing { kind: String },
    #[error("cannot ask the cluster which Flux APIs it serves")]
    FluxCheck(#[source] kube::Error),
    #[error(transparent)]
    Kube(#[from] k8s::Error),
    #[error(transparent)]
    Artifact(#[from] artifact::Error),
    #[error(transparent)]
    Charts(#[from] charts::Error),
    #[error("cannot list Flux objects")]
    List(#[source] kube::Error),
    /// The watch until Ready, or a listing it shares.
    #[error(transparent)]
    Wait(#[from] wait::Error),
    #[error("{object} was not removed within {deadline:?} (a finalizer may be blocked)")]
    PruneTimeout { object: String, deadline: Duration },
    #[error(
        "{object} is being deleted and was not gone within {deadline:?}, so it could not be applied again (a finalizer may be blocked)"
    )]
    HeldInDeletion { object: String, deadline: Duration },
}

impl Error {
    /// Whether the cluster answered and said no (or Flux did not finish in time), as opposed
    /// to not answering at all.
    pub fn is_refusal(&self) -> bool {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(current) = cause {
            if let Some(error) = current.downcast_ref::<kube::Error>() {
                return matches!(error, kube::Error::Api(_));
            }
            cause = current.source();
        }
        true
    }
}

/// The artifacts of one `up`: one per source, and whether each was pushed.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Artifacts {
    /// Sources whose artifact changed and was pushed.
    pub pushed: Vec<String>,
    /// Every source and its artifact.
    pub sources: BTreeMap<String, Pushed>,
    /// Charts published to the registry, and whether each was pushed.
    pub charts: Vec<Pushed>,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployed {
    pub artifacts: Artifacts,
    pub objects: Vec<ObjectStatus>,
}

/// The objects devenv applies besides the app: env ConfigMap/Secret per namespace, the sources
/// and the root.
pub fn objects(config: &Config, packed: &Packed, env: &EnvMap, registry_in_cluster: &str) -> Vec<Value> {
    let flux = &config.project.flux;
    let flux_namespace = config.flux_namespace();
    let mut namespaces: BTreeSet<String> = packed.substitution_namespaces.clone();
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
            // `data`, as the cluster keeps it, so what is there can be compared with it.
            "data": env.secret.iter().map(|(key, value)| (key.clone(), BASE64.encode(value))).collect::<BTreeMap<_, _>>(),
        }));
    }
    for artifact in &packed.artifacts {
        objects.push(source_object(&artifact.source, &flux_namespace, registry_in_cluster, &config.env));
    }
    for chart in &packed.charts {
        objects.push(json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
            "metadata": {"name": chart.source, "namespace": flux_namespace},
            "spec": {
                "interval": "60m",
                "url": format!("oci://{registry_in_cluster}/{}", artifact::repository(&config.env, &chart.source)),
                "ref": {"tag": chart.metadata.tag()},
                "insecure": true,
                "layerSelector": {"mediaType": charts::CONTENT_MEDIA_TYPE, "operation": "copy"},
            },
        }));
    }
    let mut root = json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": ROOT_NAME, "namespace": flux_namespace},
        "spec": {
            "interval": "60m",
            "path": format!("./{}", flux.path.trim_start_matches("./")),
            "prune": true,
            "sourceRef": {"kind": "OCIRepository", "name": SOURCE_NAME},
        },
    });
    // In a shared cluster the root, like every Kustomization, applies into the namespace.
    if let Some(namespace) = config.environment_namespace() {
        root["spec"]["targetNamespace"] = json!(namespace);
        root["spec"]["patches"] = serde_json::to_value(overlay::shared_cluster_patches()).unwrap_or_default();
    }
    // What the root applies is the repository's too: it acts as the same account.
    if let Some(account) = config.flux_service_account() {
        root["spec"]["serviceAccountName"] = json!(account);
    }
    objects.push(root);
    for object in &mut objects {
        k8s::label(object, &config.env);
        k8s::stamp(object);
    }
    objects
}

/// The environment's objects of the kinds and namespaces of `objects` as the cluster has them,
/// by `Kind/namespace/name`; `None` when one kind cannot be listed.
async fn live_objects(client: &kube::Client, objects: &[Value], env: &str) -> Option<BTreeMap<String, Value>> {
    let mut groups: BTreeMap<(String, String, String), &Value> = BTreeMap::new();
    for object in objects {
        let field = |pointer: &str| object.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_string();
        groups.entry((field("/apiVersion"), field("/kind"), field("/metadata/namespace"))).or_insert(object);
    }
    let lists = groups.values().map(|like| k8s::list_labelled(client, like, env));
    let mut live = BTreeMap::new();
    for list in futures_util::future::join_all(lists).await {
        live.extend(list?.into_iter().map(|object| (describe(&object), object)));
    }
    Some(live)
}

fn source_object(name: &str, namespace: &str, registry: &str, env: &str) -> Value {
    json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            // devenv asks for a reconcile whenever it pushes; the interval is a fallback.
            "interval": "60m",
            "url": format!("oci://{registry}/{}", artifact::repository(env, name)),
            "ref": {"tag": artifact::TAG},
            "insecure": true,
        },
    })
}

/// Publishes the charts, pushes the artifacts that changed, applies devenv's objects, asks
/// Flux to reconcile what changed and watches until every Flux object of the environment is
/// Ready.
pub async fn up(
    client: &kube::Client,
    config: &Config,
    packed: &Packed,
    env: &EnvMap,
    registry: &Registry,
    timeout: Duration,
    reporter: &dyn Reporter,
) -> Result<Deployed, Error> {
    for (api_version, plural, kind) in [
        ("kustomize.toolkit.fluxcd.io/v1", "kustomizations", "Kustomization"),
        ("helm.toolkit.fluxcd.io/v2", "helmreleases", "HelmRelease"),
    ] {
        if !k8s::served(client, api_version, plural).await.map_err(Error::FluxCheck)? {
            return Err(Error::FluxMissing { kind: kind.to_string() });
        }
    }
    finish_interrupted_removal(client, config, packed, timeout, reporter).await?;
    let step = "flux/apply";
    let started = Instant::now();
    reporter.started(step, "environment ConfigMap and Secret, charts, artifacts, sources and root");
    let objects = objects(config, packed, env, &registry.from_cluster);
    let registry = registry.host.as_str();
    let namespaces: BTreeSet<&str> =
        objects.iter().filter_map(|o| o.pointer("/metadata/namespace").and_then(Value::as_str)).collect();
    for namespace in namespaces {
        ensure_namespace(client, namespace, &config.env).await?;
    }
    let mut charts = publish::publish(&config.repo, &config.project.charts, registry).await?;
    let oci = artifact::client(registry);
    for chart in &packed.charts {
        let repository = artifact::repository(&config.env, &chart.source);
        charts.push(publish::push(&oci, registry, &repository, &chart.metadata, &chart.bytes).await?);
    }
    let origin = config.repo.display().to_string();
    let pushes = packed.artifacts.iter().map(|a| {
        let repository = artifact::repository(&config.env, &a.source);
        let (oci, origin) = (&oci, &origin);
        async move {
            artifact::push_tree(oci, registry, &repository, &a.content, &a.digest, origin)
                .await
                .map(|p| (a.source.clone(), p))
        }
    });
    // At most a few at once: each holds a chunk of its artifact in memory while it is sent.
    let sources: BTreeMap<String, Pushed> = stream::iter(pushes).buffered(CONCURRENT_REQUESTS).try_collect().await?;

    // What the cluster already has as devenv applied it is not applied again, so a no-op `up`
    // costs a few lists rather than an apply per source. A server-side apply that changes
    // nothing keeps the resourceVersion. The applies are independent (Flux resolves references
    // when it reconciles), so a graph of a hundred Kustomizations costs a few round trips'
    // time, not a hundred. Results come back in order, so the error reported is the first
    // object's that failed, whatever finished first.
    let live = live_objects(client, &objects, &config.env).await;
    let applies = objects.iter().map(|object| {
        let live = live.as_ref().map(|live| live.get(&describe(object)));
        async move {
            if let Some(Some(live)) = live
                && k8s::already_applied(object, live)
            {
                return Ok(false);
            }
            let is_env = matches!(object["kind"].as_str(), Some("ConfigMap" | "Secret"));
            let before = match (is_env, live) {
                (false, _) => None,
                (true, Some(live)) => live.and_then(|l| l.pointer("/metadata/resourceVersion")).cloned(),
                (true, None) => {
                    k8s::get(client, object).await?.and_then(|o| o.metadata.resource_version).map(Value::from)
                }
            };
            let applied = apply_over_deletion(client, object, timeout, reporter).await?;
            let after = applied.metadata.resource_version.map(Value::from);
            Ok::<bool, Error>(is_env && before != after)
        }
    });
    let changed: Vec<bool> = stream::iter(applies).buffered(CONCURRENT_REQUESTS).try_collect().await?;
    let env_changed = changed.into_iter().any(|c| c);

    // Flux re-reads a source on request, and a Kustomization follows its source's new
    // revision by itself. Values from the environment ConfigMap are read only when a
    // Kustomization reconciles, so a changed ConfigMap asks every one of them.
    let token = request_token();
    let flux_namespace = &config.flux_namespace();
    let placement = FluxPlacement::for_config(config);
    let scope = placement.scope();
    let pushed: Vec<String> = sources.iter().filter(|(_, p)| p.pushed).map(|(s, _)| s.clone()).collect();
    // A source whose artifact is not the one in the registry (an `up` interrupted between
    // its push and its request) is asked again, as if pushed now.
    let behind = sources_behind(client, flux_namespace, &sources).await?;
    for source in pushed.iter().chain(&behind) {
        request(client, "source.toolkit.fluxcd.io/v1", "OCIRepository", flux_namespace, source, &token).await?;
    }
    // One read of the Kustomizations and HelmReleases serves every decision below.
    let flux_objects = wait::list_all(client, scope).await?;
    let chart_digests = follow_charts(client, scope, &charts, &flux_objects, &token).await?;
    let mut requested = retry_failed(client, &flux_objects, flux_namespace, &token).await?;
    // With nothing new to apply the root is not asked again: a no-op `up` touches nothing,
    // and the watch below still checks that every object is Ready at the current revisions
    // (a spec devenv changed makes Flux reconcile by itself). Nor is it asked for a pushed
    // artifact: it follows its own source's new revision, and a request that came first
    // would reconcile the old one, delaying the new by a whole reconcile of the graph.
    let charts_pushed = charts.iter().any(|c| c.pushed);
    if !behind.is_empty()
        || env_changed
        || charts_pushed
        || !requested.is_empty()
        || flux_objects_missing(&flux_objects, flux_namespace)
    {
        requested.insert(format!("Kustomization/{flux_namespace}/{ROOT_NAME}"));
        request(client, "kustomize.toolkit.fluxcd.io/v1", "Kustomization", flux_namespace, ROOT_NAME, &token).await?;
    }
    if env_changed {
        for artifact in packed.artifacts.iter().skip(1) {
            let (namespace, name) = artifact.kustomization.split_once('/').unwrap_or((flux_namespace, ""));
            let kind = "Kustomization";
            if request(client, "kustomize.toolkit.fluxcd.io/v1", kind, namespace, name, &token).await? {
                requested.insert(format!("{kind}/{namespace}/{name}"));
            }
        }
    }
    let what = match pushed.len() {
        0 => "artifacts unchanged".to_string(),
        n => format!("pushed {n} of {} artifact(s)", sources.len()),
    };
    reporter.finished(step, Status::Ok, &what, started.elapsed());

    let revisions: BTreeMap<String, String> =
        sources.iter().map(|(source, p)| (source.clone(), p.manifest_digest.clone())).collect();
    let target = wait::Target {
        flux_namespace,
        scope,
        revisions: &revisions,
        chart_digests: &chart_digests,
        requested: &requested,
        token: &token,
    };
    let origin = |object: &str| packed.origins.get(object).cloned();
    let statuses = wait::until_ready(client, &target, timeout, &origin, reporter).await?;
    remove_stale_sources(client, config, scope, &packed.sources()).await?;
    Ok(Deployed { artifacts: Artifacts { pushed, sources, charts }, objects: statuses })
}

/// Whether a Kustomization or HelmRelease that one of the environment's Kustomizations
/// applied is gone (deleted by hand): only a reconcile of what applied it brings it back.
fn flux_objects_missing(flux_objects: &[DynamicObject], flux_namespace: &str) -> bool {
    let applied = inventory_of(flux_objects, flux_namespace);
    let present: BTreeSet<String> = flux_objects.iter().map(wait::key).collect();
    applied
        .iter()
        .filter(|object| matches!(object["kind"].as_str(), Some("Kustomization" | "HelmRelease")))
        .any(|object| !present.contains(&describe(object)))
}

/// devenv's sources in the cluster whose artifact is not the registry's (`manifest_digest`)
/// though nothing was pushed this round.
async fn sources_behind(
    client: &kube::Client,
    flux_namespace: &str,
    sources: &BTreeMap<String, Pushed>,
) -> Result<Vec<String>, Error> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("source.toolkit.fluxcd.io", "v1", "OCIRepository"),
        "ocirepositories",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), flux_namespace, &resource);
    let listed = api.list(&ListParams::default()).await.map_err(Error::List)?.items;
    Ok(listed
        .iter()
        .filter_map(|object| {
            let name = object.metadata.name.as_deref()?;
            let pushed = sources.get(name).filter(|p| !p.pushed)?;
            let revision = object.data.pointer("/status/artifact/revision").and_then(Value::as_str);
            (!revision.is_some_and(|r| r.ends_with(&pushed.manifest_digest))).then(|| name.to_string())
        })
        .collect())
}

/// Creates a missing namespace, labelled as devenv's; an existing one is left alone. One
/// being deleted takes no new objects: applying into it fails, naming it (`DEV065`), unless
/// it was the environment's own and an interrupted `down` is finished first.
async fn ensure_namespace(client: &kube::Client, namespace: &str, env: &str) -> Result<(), Error> {
    let mut namespace_object = namespace_reference(namespace);
    if k8s::get(client, &namespace_object).await?.is_none() {
        k8s::label(&mut namespace_object, env);
        k8s::apply(client, &namespace_object).await?;
    }
    Ok(())
}

/// Every object of `api`; none when the identity may not list them all (an environment in a
/// namespace of a shared cluster), since waiting out a removal is then Flux's own business.
async fn listed(api: &Api<DynamicObject>) -> Result<Vec<DynamicObject>, Error> {
    match api.list(&ListParams::default()).await {
        Ok(list) => Ok(list.items),
        Err(kube::Error::Api(status)) if status.code == 403 => Ok(Vec::new()),
        Err(error) => Err(Error::List(error)),
    }
}

/// The label Flux puts on what a Kustomization applies: the Kustomization's namespace.
const FLUX_NAMESPACE_LABEL: &str = "kustomize.toolkit.fluxcd.io/namespace";

/// Applies an object; one that turns out to be on its way out (an interrupted `down` deleted
/// it and a finalizer still holds it) is waited out and created again, since an apply to it
/// would be lost with it.
async fn apply_over_deletion(
    client: &kube::Client,
    object: &Value,
    timeout: Duration,
    reporter: &dyn Reporter,
) -> Result<DynamicObject, Error> {
    let applied = k8s::apply(client, object).await?;
    if applied.metadata.deletion_timestamp.is_none() {
        return Ok(applied);
    }
    let object_name = describe(object);
    reporter.warning(&format!("{object_name} is being deleted: waiting until it is gone to apply it again"));
    if !k8s::wait_gone(client, object, timeout).await? {
        return Err(Error::HeldInDeletion { object: object_name, deadline: timeout });
    }
    Ok(k8s::apply(client, object).await?)
}

/// A Namespace, as a reference for `k8s::get` and `k8s::apply`.
fn namespace_reference(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

/// The root Kustomization in `flux_namespace`, as a reference for `k8s::get` and `k8s::delete`.
fn root_reference(flux_namespace: &str) -> Value {
    json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": ROOT_NAME, "namespace": flux_namespace},
    })
}

/// An `up` after a `down` that stopped part way lets that removal finish first: objects
/// applied now into what is still on its way out (the root, the Kustomizations it applied,
/// their namespaces) would be deleted with it. Costs one read when the root is in place.
async fn finish_interrupted_removal(
    client: &kube::Client,
    config: &Config,
    packed: &Packed,
    timeout: Duration,
    reporter: &dyn Reporter,
) -> Result<(), Error> {
    let placement = FluxPlacement::for_config(config);
    let root = root_reference(&placement.namespace);
    let live_root = k8s::get(client, &root).await?;
    if live_root.as_ref().is_some_and(|r| r.metadata.deletion_timestamp.is_none()) {
        return Ok(());
    }
    let started = Instant::now();
    let mut pruned = 0;
    if live_root.is_some() {
        pruned = prune(client, &placement, timeout, reporter).await?.pruned.len();
    }
    // Flux deletes in the background, and the root's inventory no longer names what its
    // Kustomizations applied once they are gone: what the tree declares that is still being
    // deleted is waited out.
    let leftovers = being_deleted(client, packed, &placement).await?;
    for object in &leftovers {
        let left = timeout.saturating_sub(started.elapsed());
        if !k8s::wait_gone(client, object, left).await? {
            return Err(Error::PruneTimeout { object: describe(object), deadline: timeout });
        }
    }
    if live_root.is_some() || !leftovers.is_empty() {
        let what =
            format!("finished the removal an earlier `down` began: {} object(s) pruned", pruned + leftovers.len());
        reporter.finished("flux/remove", Status::Ok, &what, started.elapsed());
    }
    Ok(())
}

/// The Kustomizations and HelmReleases of the packed tree, and the namespaces they live in or
/// Flux applied from the placement's namespace, that are being deleted.
async fn being_deleted(client: &kube::Client, packed: &Packed, placement: &FluxPlacement) -> Result<Vec<Value>, Error> {
    let terminating = |o: &DynamicObject| o.metadata.deletion_timestamp.is_some();
    let (flux_namespace, scope) = (placement.namespace.as_str(), placement.scope());
    let mut objects = Vec::new();
    for (api, api_version, kind) in [
        (kustomizations(client, scope), "kustomize.toolkit.fluxcd.io/v1", "Kustomization"),
        (helm_releases(client, scope), "helm.toolkit.fluxcd.io/v2", "HelmRelease"),
    ] {
        for object in listed(&api).await?.iter().filter(|o| terminating(o)) {
            let (namespace, name) = (object.namespace().unwrap_or_default(), object.name_any());
            if packed.origins.contains_key(&format!("{kind}/{namespace}/{name}")) {
                objects.push(json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": namespace}}));
            }
        }
    }
    let declared: BTreeSet<&str> = packed.origins.keys().filter_map(|key| key.split('/').nth(1)).collect();
    // In its own namespace an environment applies nothing elsewhere: that one is looked at.
    let namespaces = match scope {
        Some(own) => k8s::get(client, &namespace_reference(own)).await?.into_iter().collect(),
        None => listed(&Api::all_with(client.clone(), &ApiResource::erase::<Namespace>(&()))).await?,
    };
    for namespace in namespaces.iter().filter(|o| terminating(o)) {
        let applied_here = namespace.labels().get(FLUX_NAMESPACE_LABEL).is_some_and(|n| n == flux_namespace);
        let name = namespace.name_any();
        if applied_here || declared.contains(name.as_str()) {
            objects.push(namespace_reference(&name));
        }
    }
    Ok(objects)
}

fn request_token() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
}

/// Sets `reconcile.fluxcd.io/requestedAt` so Flux acts now rather than at its interval;
/// false when the object does not exist (yet).
async fn request(
    client: &kube::Client,
    api_version: &str,
    kind: &str,
    namespace: &str,
    name: &str,
    token: &str,
) -> Result<bool, Error> {
    let object = json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": namespace}});
    if k8s::get(client, &object).await?.is_none() {
        return Ok(false);
    }
    k8s::annotate(client, &object, &[(REQUESTED_AT, token)]).await?;
    Ok(true)
}

/// Asks each of the environment's Kustomizations and HelmReleases that failed in an earlier
/// round to try again with this round's token, so no verdict of this round is an old one
/// (a failure whose cause was elsewhere, such as a missing CRD, passes once retried).
/// Returns them as `Kind/namespace/name`.
async fn retry_failed(
    client: &kube::Client,
    flux_objects: &[DynamicObject],
    flux_namespace: &str,
    token: &str,
) -> Result<BTreeSet<String>, Error> {
    let all: Vec<&DynamicObject> = flux_objects.iter().collect();
    let mut retried = BTreeSet::new();
    for object in wait::environment_objects(&all, flux_namespace) {
        let conditions = object.data.pointer("/status/conditions").and_then(Value::as_array);
        let failed = conditions.into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "False");
        let Some(types) = object.types.as_ref().filter(|_| failed) else { continue };
        let reference = json!({
            "apiVersion": types.api_version, "kind": types.kind,
            "metadata": {"name": object.metadata.name, "namespace": object.metadata.namespace},
        });
        let annotations: &[(&str, &str)] = match types.kind.as_str() {
            "HelmRelease" => &[(REQUESTED_AT, token), (RESET_AT, token)],
            _ => &[(REQUESTED_AT, token)],
        };
        k8s::annotate(client, &reference, annotations).await?;
        retried.insert(wait::key(object));
    }
    Ok(retried)
}

/// For the published charts: asks the OCIRepositories serving a re-published chart to fetch
/// it again (its tag did not move, its content did), and returns the chart digest each
/// HelmRelease installing one of them must reach, by `HelmRelease/namespace/name`.
async fn follow_charts(
    client: &kube::Client,
    scope: Option<&str>,
    charts: &[Pushed],
    flux_objects: &[DynamicObject],
    token: &str,
) -> Result<BTreeMap<String, String>, Error> {
    let mut expected = BTreeMap::new();
    if charts.is_empty() {
        return Ok(expected);
    }
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("source.toolkit.fluxcd.io", "v1", "OCIRepository"),
        "ocirepositories",
    );
    let sources = wait::api_in(scope, client, &resource).list(&ListParams::default()).await.map_err(Error::List)?.items;
    let is_release = |o: &&DynamicObject| o.types.as_ref().is_some_and(|t| t.kind == "HelmRelease");
    let releases: Vec<&DynamicObject> = flux_objects.iter().filter(is_release).collect();
    for chart in charts {
        let repository = chart.reference.rsplit_once(':').map(|(r, _)| r).unwrap_or(&chart.reference);
        let url = format!("oci://{repository}");
        for source in sources.iter().filter(|s| s.data.pointer("/spec/url").and_then(Value::as_str) == Some(&url)) {
            let namespace = source.metadata.namespace.as_deref().unwrap_or_default();
            let name = source.metadata.name.as_deref().unwrap_or_default();
            if chart.pushed {
                request(client, "source.toolkit.fluxcd.io/v1", "OCIRepository", namespace, name, token).await?;
            }
            for release in &releases {
                let release_namespace = release.metadata.namespace.as_deref().unwrap_or_default();
                let chart_ref = release.data.pointer("/spec/chartRef");
                let field = |f: &str| chart_ref.and_then(|c| c.get(f)).and_then(Value::as_str);
                if field("kind") == Some("OCIRepository")
                    && field("name") == Some(name)
                    && field("namespace").unwrap_or(release_namespace) == namespace
                {
                    expected.insert(wait::key(release), chart.manifest_digest.clone());
                }
            }
        }
    }
    Ok(expected)
}

/// devenv's OCIRepositories of the environment that no Kustomization reads any more.
async fn remove_stale_sources(
    client: &kube::Client,
    config: &Config,
    scope: Option<&str>,
    keep: &BTreeSet<String>,
) -> Result<(), Error> {
    let kind = ("source.toolkit.fluxcd.io", "v1", "OCIRepository", "ocirepositories");
    for source in labelled(client, &config.env, scope, kind).await? {
        let name = source.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        if overlay::is_devenv_source(name) && !keep.contains(name) {
            k8s::delete(client, &source).await?;
        }
    }
    Ok(())
}

/// devenv's objects of one kind (group, version, kind, plural) in this environment, in
/// `scope` (a namespace) or the whole cluster, as deletable references. Namespaces in a
/// scope: that one, if devenv made it for the environment.
async fn labelled(
    client: &kube::Client,
    env: &str,
    scope: Option<&str>,
    (group, version, kind, plural): (&str, &str, &str, &str),
) -> Result<Vec<Value>, Error> {
    let selector = crate::naming::env_selector(env);
    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    let items = match (kind, scope) {
        ("Namespace", Some(own)) => {
            let made_here = |n: &DynamicObject| n.labels().get(crate::naming::LABEL_ENV).is_some_and(|e| e == env);
            k8s::get(client, &namespace_reference(own)).await?.into_iter().filter(made_here).collect()
        }
        _ => {
            let api = wait::api_in(scope, client, &resource);
            api.list(&ListParams::default().labels(&selector)).await.map_err(Error::List)?.items
        }
    };
    let api_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Ok(items
        .into_iter()
        .map(|item| {
            json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": item.metadata.name, "namespace": item.metadata.namespace}})
        })
        .collect())
}

/// What `remove` took away.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Removed {
    /// Objects Flux applied for the environment and pruned (`Kind/namespace/name`), each
    /// checked gone after the prune.
    pub pruned: Vec<String>,
    /// Cluster-wide objects an environment in a shared cluster leaves for the others
    /// (`Kind/name`), which Flux was told not to prune.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<String>,
    /// devenv's own objects: sources, environment ConfigMaps and Secrets, namespaces.
    pub own: Vec<String>,
}

/// Deletes the root (Flux prunes what it applied) and waits until it is gone, checks that
/// everything in the environment's inventories went with it, then deletes the sources, the
/// environment ConfigMaps and Secrets, and the namespaces devenv created, except `keep` (the
/// namespace of in-cluster substitutes whose data stays). The prune must end within
/// `deadline`. Needs no configuration: `placement` comes from the state file.
pub async fn remove(
    client: &kube::Client,
    env: &str,
    placement: &FluxPlacement,
    keep: Option<&str>,
    deadline: Duration,
    reporter: &dyn Reporter,
) -> Result<Removed, Error> {
    let step = "flux/remove";
    let started = Instant::now();
    let mut removed = Removed::default();
    // A cluster without Flux (it was removed since) has nothing of Flux's to prune.
    if !k8s::served(client, "kustomize.toolkit.fluxcd.io/v1", "kustomizations").await.map_err(Error::FluxCheck)? {
        return Ok(removed);
    }
    let pruned = prune(client, placement, deadline, reporter).await?;
    (removed.pruned, removed.kept) = (pruned.pruned, pruned.kept);
    let kinds = [
        ("source.toolkit.fluxcd.io", "v1", "OCIRepository", "ocirepositories"),
        ("", "v1", "ConfigMap", "configmaps"),
        ("", "v1", "Secret", "secrets"),
        ("", "v1", "Namespace", "namespaces"),
    ];
    for kind in kinds {
        for object in labelled(client, env, placement.scope(), kind).await? {
            let name = object["metadata"]["name"].as_str();
            if kind.2 == "Namespace" && keep.is_some() && name == keep {
                continue;
            }
            if k8s::delete(client, &object).await? {
                removed.own.push(describe(&object));
            }
        }
    }
    if !removed.pruned.is_empty() || !removed.own.is_empty() {
        let what = format!("pruned {} object(s), removed {} of devenv's", removed.pruned.len(), removed.own.len());
        reporter.finished(step, Status::Ok, &what, started.elapsed());
    }
    Ok(removed)
}

/// What deleting the root pruned, and what it left for other environments.
struct Pruned {
    pruned: Vec<String>,
    kept: Vec<String>,
}

/// Deletes the root Kustomization of the environment whose Flux objects live as `placement`
/// says, and waits until Flux has pruned everything the environment applied (each object
/// checked gone), within `deadline`. Returns what was pruned (`Kind/namespace/name`).
pub async fn prune_root(
    client: &kube::Client,
    placement: &FluxPlacement,
    deadline: Duration,
    reporter: &dyn Reporter,
) -> Result<Vec<String>, Error> {
    Ok(prune(client, placement, deadline, reporter).await?.pruned)
}

async fn prune(
    client: &kube::Client,
    placement: &FluxPlacement,
    deadline: Duration,
    reporter: &dyn Reporter,
) -> Result<Pruned, Error> {
    let step = "flux/remove";
    let started = Instant::now();
    let root = root_reference(&placement.namespace);
    let shared = placement.shared;
    let (kept, applied): (Vec<Value>, Vec<Value>) = inventory(client, placement)
        .await?
        .into_iter()
        .partition(|object| shared && overlay::is_cluster_wide(object["kind"].as_str().unwrap_or_default()));
    let mut pruned = Pruned { pruned: Vec::new(), kept: kept.iter().map(describe).collect() };
    if k8s::delete(client, &root).await? {
        reporter.started(step, "waiting for Flux to prune what it applied");
        let left = || deadline.saturating_sub(started.elapsed());
        if !k8s::wait_gone(client, &root, left()).await? {
            return Err(Error::PruneTimeout { object: describe(&root), deadline });
        }
        // Flux deletes in the background; wait until each object is really gone (one that
        // cannot be read any more counts as gone).
        for object in applied {
            if !k8s::wait_gone(client, &object, left()).await.unwrap_or(true) {
                return Err(Error::PruneTimeout { object: describe(&object), deadline });
            }
            pruned.pruned.push(describe(&object));
        }
    }
    Ok(pruned)
}

/// Every object in the inventories of the environment's Kustomizations (root first, then
/// the Kustomizations it applied, and so on), as references for `k8s::get`.
async fn inventory(client: &kube::Client, placement: &FluxPlacement) -> Result<Vec<Value>, Error> {
    let all = kustomizations(client, placement.scope()).list(&ListParams::default()).await.map_err(Error::List)?.items;
    Ok(inventory_of(&all, &placement.namespace))
}

/// `inventory` from a list that holds the environment's Kustomizations (other kinds ignored).
fn inventory_of(all: &[DynamicObject], flux_namespace: &str) -> Vec<Value> {
    let is_kustomization = |o: &&DynamicObject| o.types.as_ref().is_none_or(|t| t.kind == "Kustomization");
    let by_id: BTreeMap<(String, String), &DynamicObject> = all
        .iter()
        .filter(is_kustomization)
        .map(|k| ((k.metadata.namespace.clone().unwrap_or_default(), k.metadata.name.clone().unwrap_or_default()), k))
        .collect();
    let mut pending = vec![(flux_namespace.to_string(), ROOT_NAME.to_string())];
    let mut seen = BTreeSet::new();
    let mut objects = Vec::new();
    while let Some(id) = pending.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        let Some(kustomization) = by_id.get(&id) else { continue };
        let entries = kustomization.data.pointer("/status/inventory/entries").and_then(Value::as_array);
        for entry in entries.into_iter().flatten() {
            // Flux's inventory id: `<namespace>_<name>_<group>_<kind>`, with the version in `v`.
            let id = entry["id"].as_str().unwrap_or_default();
            let parts: Vec<&str> = id.splitn(4, '_').collect();
            let [namespace, name, group, kind] = parts[..] else { continue };
            let version = entry["v"].as_str().unwrap_or("v1");
            let api_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
            let mut metadata = json!({"name": name});
            if !namespace.is_empty() {
                metadata["namespace"] = json!(namespace);
            }
            objects.push(json!({"apiVersion": api_version, "kind": kind, "metadata": metadata}));
            if kind == "Kustomization" && group == "kustomize.toolkit.fluxcd.io" {
                pending.push((namespace.to_string(), name.to_string()));
            }
        }
    }
    objects
}

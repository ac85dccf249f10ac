//! Watching the environment's Flux Kustomizations and HelmReleases until every one is Ready,
//! one fails, or the deadline passes, with live status per object in `dependsOn` order.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::Value;

use super::names::{REQUESTED_AT, ROOT_NAME};
use crate::state::FluxPlacement;
use crate::ui::{Reporter, ReporterExt, Status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot list Flux objects")]
    List(#[source] kube::Error),
    #[error("{object} failed: {message}")]
    Failed { object: String, message: String },
    #[error("not everything was Ready within {deadline:?}; still waiting for: {waiting}")]
    Timeout { deadline: Duration, waiting: String },
}

/// Reasons with which Flux reports an object not Ready that are not failures (helm-controller
/// says `SourceNotReady` while its chart's source has not fetched the current spec yet).
const WAITING_REASONS: &[&str] =
    &["Progressing", "ProgressingWithRetry", "DependencyNotReady", "ArtifactFailed", "Reconciling", "SourceNotReady"];

/// One Flux object of the environment and its readiness.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStatus {
    /// `Kind/namespace/name`
    pub object: String,
    pub ready: bool,
    pub message: String,
    /// `Kind/namespace/name` of the objects it depends on.
    pub depends_on: Vec<String>,
    /// `Kustomization/namespace/name` of the Kustomization that applied it.
    pub applied_by: Option<String>,
    /// For an object not Ready whose message names other objects (a health check's stalled
    /// resources), what each of those says of itself.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<String>,
}

/// What "done" means for this run.
pub struct Target<'a> {
    pub flux_namespace: &'a str,
    /// Where the environment's Flux objects are read ([`FluxPlacement::scope`]).
    ///
    /// [`FluxPlacement::scope`]: crate::state::FluxPlacement::scope
    pub scope: Option<&'a str>,
    /// Manifest digest of each of devenv's sources: a Kustomization reading one counts only
    /// once it applied that revision.
    pub revisions: &'a BTreeMap<String, String>,
    /// The chart digest a HelmRelease installing one of the repository's charts must reach.
    pub chart_digests: &'a BTreeMap<String, String>,
    /// Objects asked to reconcile with this token; they count once they handled it.
    pub requested: &'a BTreeSet<String>,
    pub token: &'a str,
}

/// The objects of one kind in `scope` (a namespace), or in the whole cluster without one.
pub fn api_in(scope: Option<&str>, client: &kube::Client, resource: &ApiResource) -> Api<DynamicObject> {
    match scope {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, resource),
        None => Api::all_with(client.clone(), resource),
    }
}

fn api(client: &kube::Client, scope: Option<&str>, gvk: (&str, &str, &str), plural: &str) -> Api<DynamicObject> {
    let (group, version, kind) = gvk;
    api_in(scope, client, &ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural))
}

pub fn kustomizations(client: &kube::Client, scope: Option<&str>) -> Api<DynamicObject> {
    api(client, scope, ("kustomize.toolkit.fluxcd.io", "v1", "Kustomization"), "kustomizations")
}

pub fn helm_releases(client: &kube::Client, scope: Option<&str>) -> Api<DynamicObject> {
    api(client, scope, ("helm.toolkit.fluxcd.io", "v2", "HelmRelease"), "helmreleases")
}

/// `Kind/namespace/name` of a listed object.
pub fn key(object: &DynamicObject) -> String {
    format!(
        "{}/{}/{}",
        object.types.as_ref().map(|t| t.kind.as_str()).unwrap_or("?"),
        object.metadata.namespace.as_deref().unwrap_or(""),
        object.metadata.name.as_deref().unwrap_or("")
    )
}

/// Watches until the environment is Ready. `origin` names the file an object came from.
pub async fn until_ready(
    client: &kube::Client,
    target: &Target<'_>,
    timeout: Duration,
    origin: &dyn Fn(&str) -> Option<String>,
    reporter: &dyn Reporter,
) -> Result<Vec<ObjectStatus>, Error> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    // Two watch streams, tagged by kind; each restarts itself after an error.
    let config = watcher::Config::default();
    let streams = [kustomizations(client, target.scope), helm_releases(client, target.scope)]
        .into_iter()
        .enumerate()
        .map(|(index, api)| watcher::watcher(api, config.clone()).default_backoff().map(move |e| (index, e)).boxed());
    let mut events = stream::select_all(streams);
    let mut store: [BTreeMap<String, DynamicObject>; 2] = Default::default();
    let mut listing = [true, true];
    let mut live = LiveStatus::default();
    let mut waiting = String::from("the first list of Flux objects");
    let mut nudged = BTreeSet::new();
    loop {
        let next = match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(next)) => next,
            Ok(None) => return Err(Error::Timeout { deadline: timeout, waiting }),
            Err(_) => return Err(Error::Timeout { deadline: timeout, waiting }),
        };
        let (index, event) = next;
        match event {
            Ok(Event::Init) => {
                listing[index] = true;
                store[index].clear();
            }
            Ok(Event::InitApply(object) | Event::Apply(object)) => {
                store[index].insert(key(&object), object);
            }
            Ok(Event::Delete(object)) => {
                store[index].remove(&key(&object));
            }
            Ok(Event::InitDone) => listing[index] = false,
            // The stream retries with backoff; an error that persists ends in the deadline.
            Err(error) => {
                reporter.progress("flux/watch", &format!("watch interrupted: {error}"));
                continue;
            }
        }
        if listing.iter().any(|l| *l) {
            continue;
        }
        let all: Vec<&DynamicObject> = store.iter().flat_map(|s| s.values()).collect();
        let statuses = evaluate(&environment_objects(&all, target.flux_namespace), Some(target));
        live.show(&statuses, reporter, started.elapsed());
        // The two watch streams may lag each other (a Kustomization seen to have applied a
        // HelmRelease whose new spec has not arrived yet): a failure is confirmed on a fresh
        // list of both kinds.
        let confirmed = match statuses.iter().any(|s| s.failed) {
            true => {
                let fresh = list_all(client, target.scope).await?;
                let fresh: Vec<&DynamicObject> = fresh.iter().collect();
                evaluate(&environment_objects(&fresh, target.flux_namespace), Some(target))
            }
            false => Vec::new(),
        };
        if let Some(failed) = confirmed.iter().find(|s| s.failed) {
            let file = origin(&failed.status.object).map(|f| format!(" (defined in {f})")).unwrap_or_default();
            let causes = explain(client, &failed.status.message, origin).await;
            let causes: String = causes.iter().map(|c| format!("\n  {c}")).collect();
            return Err(Error::Failed {
                object: format!("{}{file}", failed.status.object),
                message: format!("{}{causes}", failed.status.message),
            });
        }
        nudge_dependents(client, &statuses, &all, target.token, &mut nudged).await;
        let root_key = format!("Kustomization/{}/{ROOT_NAME}", target.flux_namespace);
        let pending: Vec<String> = statuses
            .iter()
            .filter(|s| !s.status.ready)
            .map(|s| format!("{} ({})", s.status.object, s.status.message))
            .collect();
        let root_seen = statuses.iter().any(|s| s.status.object == root_key);
        if root_seen && pending.is_empty() {
            return Ok(statuses.into_iter().map(|s| s.status).collect());
        }
        waiting = if pending.is_empty() { root_key } else { pending.join(", ") };
    }
}

/// Whether a handled reconcile request is this round's: its token, or one derived from it
/// by [`nudge_dependents`].
fn of_this_round(handled: &str, token: &str) -> bool {
    handled == token || handled.strip_prefix(token).is_some_and(|rest| rest.starts_with(".after-"))
}

/// Flux retries an object whose dependencies were not Ready only after its requeue interval
/// (`--requeue-dependency`, 30 s in a stock install, per hop of a `dependsOn` chain). Once
/// every dependency is Ready this round, the waiting object is asked to reconcile at once,
/// with a request token derived from this round's. Best effort: Flux's own retry remains.
async fn nudge_dependents(
    client: &kube::Client,
    statuses: &[Evaluated],
    objects: &[&DynamicObject],
    token: &str,
    nudged: &mut BTreeSet<String>,
) {
    let ready: BTreeSet<&str> = statuses.iter().filter(|s| s.status.ready).map(|s| s.status.object.as_str()).collect();
    for evaluated in statuses {
        let status = &evaluated.status;
        if status.ready
            || status.depends_on.is_empty()
            || nudged.contains(&status.object)
            || !status.depends_on.iter().all(|d| ready.contains(d.as_str()))
        {
            continue;
        }
        let Some(object) = objects.iter().find(|o| key(o) == status.object) else { continue };
        let reason = condition(object, "Ready").and_then(|c| c["reason"].as_str());
        if reason != Some("DependencyNotReady") {
            continue;
        }
        nudged.insert(status.object.clone());
        let Some(types) = &object.types else { continue };
        let reference = serde_json::json!({
            "apiVersion": types.api_version, "kind": types.kind,
            "metadata": {"name": object.metadata.name, "namespace": object.metadata.namespace},
        });
        let request = format!("{token}.after-{}", nudged.len());
        let _ = crate::kube::annotate(client, &reference, &[(REQUESTED_AT, &request)]).await;
    }
}

/// The environment's Flux objects as they are now, for `devenv status`: Ready at their
/// generation, in tree order.
pub async fn snapshot(client: &kube::Client, placement: &FluxPlacement) -> Result<Vec<ObjectStatus>, Error> {
    let flux_namespace = placement.namespace.as_str();
    let all = list_all(client, placement.scope()).await?;
    let all: Vec<&DynamicObject> = all.iter().collect();
    let mut statuses: Vec<ObjectStatus> =
        evaluate(&environment_objects(&all, flux_namespace), None).into_iter().map(|e| e.status).collect();
    for status in statuses.iter_mut().filter(|s| !s.ready) {
        status.causes = explain(client, &status.message, &|_| None).await;
    }
    Ok(statuses)
}

/// Every Kustomization and HelmRelease in `scope` (a namespace, or the cluster), read now.
pub(super) async fn list_all(client: &kube::Client, scope: Option<&str>) -> Result<Vec<DynamicObject>, Error> {
    let mut all = kustomizations(client, scope).list(&Default::default()).await.map_err(Error::List)?.items;
    all.extend(helm_releases(client, scope).list(&Default::default()).await.map_err(Error::List)?.items);
    Ok(all)
}

/// The objects a Flux message names with their kstatus (`[HelmRepository/flux-system/charts
/// status: 'Failed', …]`, from a health check), as `Kind/namespace/name`.
fn named_objects(message: &str) -> Vec<String> {
    let pieces: Vec<&str> = message.split(" status: '").collect();
    let mut named = Vec::new();
    for piece in &pieces[..pieces.len().saturating_sub(1)] {
        let token = piece.rsplit(['[', ' ', ',']).next().unwrap_or_default();
        if token.split('/').count() == 3 && !named.iter().any(|n| n == token) {
            named.push(token.to_string());
        }
    }
    named
}

/// The API of a kind a health check names: Flux's own and the workloads.
fn api_of_kind(client: &kube::Client, kind: &str, namespace: &str) -> Option<Api<DynamicObject>> {
    let (group, version, plural) = match kind {
        "Kustomization" => ("kustomize.toolkit.fluxcd.io", "v1", "kustomizations"),
        "HelmRelease" => ("helm.toolkit.fluxcd.io", "v2", "helmreleases"),
        "GitRepository" => ("source.toolkit.fluxcd.io", "v1", "gitrepositories"),
        "OCIRepository" => ("source.toolkit.fluxcd.io", "v1", "ocirepositories"),
        "HelmRepository" => ("source.toolkit.fluxcd.io", "v1", "helmrepositories"),
        "HelmChart" => ("source.toolkit.fluxcd.io", "v1", "helmcharts"),
        "Bucket" => ("source.toolkit.fluxcd.io", "v1", "buckets"),
        "Deployment" => ("apps", "v1", "deployments"),
        "StatefulSet" => ("apps", "v1", "statefulsets"),
        "DaemonSet" => ("apps", "v1", "daemonsets"),
        "Job" => ("batch", "v1", "jobs"),
        _ => return None,
    };
    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Some(Api::namespaced_with(client.clone(), namespace, &resource))
}

/// What each object a failure message names says of itself: its Stalled or Ready message
/// (for workloads, a ReplicaFailure — a pod the API server refused, over quota say — else
/// the first condition that is not True), with the file it came from.
pub async fn explain(client: &kube::Client, message: &str, origin: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let mut causes = Vec::new();
    for named in named_objects(message) {
        let mut parts = named.splitn(3, '/');
        let (Some(kind), Some(namespace), Some(name)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let file = origin(&named).map(|f| format!(" (defined in {f})")).unwrap_or_default();
        let said = match api_of_kind(client, kind, namespace) {
            Some(api) => match api.get_opt(name).await {
                Ok(Some(object)) => own_message(&object),
                Ok(None) => Some("not found".to_string()),
                Err(_) => None,
            },
            None => None,
        };
        if let Some(said) = said {
            causes.push(format!("{named}{file}: {said}"));
        }
    }
    causes
}

fn own_message(object: &DynamicObject) -> Option<String> {
    let conditions = object.data.pointer("/status/conditions").and_then(Value::as_array)?;
    let find = |kind: &str| conditions.iter().find(|c| c["type"] == kind);
    let chosen = (find("Stalled").filter(|c| c["status"] == "True"))
        .or_else(|| find("ReplicaFailure").filter(|c| c["status"] == "True"))
        .or_else(|| find("Ready"))
        .or_else(|| conditions.iter().find(|c| c["status"] != "True"))?;
    let reason = chosen["reason"].as_str().unwrap_or_default();
    let message = super::temp_paths::to_repository(chosen["message"].as_str().unwrap_or_default());
    Some(match reason.is_empty() {
        true => message,
        false => format!("{reason}: {message}"),
    })
}

struct Evaluated {
    status: ObjectStatus,
    failed: bool,
}

/// What one object's status says about this round, before its parent is considered.
struct Observed<'a> {
    object: &'a DynamicObject,
    key: String,
    /// Its Ready condition speaks of its current generation, its source's expected revision
    /// and (when asked) this round's reconcile request.
    fresh: bool,
    /// Ready at its generation and at every revision devenv expects.
    ready: bool,
    /// Ready is False for a reason that is not waiting.
    failed: bool,
    /// Health checks of the expected revision are running: it has applied what it holds.
    health_checking: bool,
    /// `(namespace, name)` of the Kustomization that applied it.
    parent: Option<(String, String)>,
}

fn condition<'a>(object: &'a DynamicObject, kind: &str) -> Option<&'a Value> {
    let conditions = object.data.pointer("/status/conditions").and_then(Value::as_array)?;
    conditions.iter().find(|c| c["type"] == kind)
}

/// Whether a condition was written for the object's current generation; Flux stamps each
/// condition with the generation it judged (the object's `observedGeneration` moves only on
/// success, so it cannot tell a failure of the new spec from one of the old).
fn judges_generation(condition: &Value, object: &DynamicObject) -> bool {
    let generation = object.metadata.generation;
    match condition.get("observedGeneration").and_then(Value::as_i64) {
        Some(observed) => Some(observed) == generation,
        None => object.data.pointer("/status/observedGeneration").and_then(Value::as_i64) == generation,
    }
}

fn observe<'a>(object: &'a DynamicObject, target: Option<&Target<'_>>) -> Observed<'a> {
    let key = key(object);
    let ready = condition(object, "Ready");
    let status_str = |field: &str| object.data.pointer(&format!("/status/{field}")).and_then(Value::as_str);
    let mut fresh = ready.is_some_and(|c| judges_generation(c, object));
    let mut is_ready = ready.is_some_and(|c| c["status"] == "True")
        && object.data.pointer("/status/observedGeneration").and_then(Value::as_i64) == object.metadata.generation;
    // A Kustomization reading one of devenv's artifacts counts only once it handled this
    // revision; failures are matched by the attempted revision.
    let source = object.data.pointer("/spec/sourceRef/name").and_then(Value::as_str);
    let expected = source.zip(target).and_then(|(name, target)| target.revisions.get(name));
    if let Some(digest) = expected {
        let at = |field: &str| status_str(field).is_some_and(|r| r.ends_with(digest.as_str()));
        is_ready &= at("lastAppliedRevision");
        fresh &= at("lastAttemptedRevision");
    }
    let health_checking = condition(object, "Healthy").is_some_and(|c| {
        c["status"] == "Unknown"
            && judges_generation(c, object)
            && c["message"].as_str().is_some_and(|m| {
                m.starts_with("Running health checks") && expected.is_none_or(|d| m.contains(d.as_str()))
            })
    });
    // A HelmRelease of a re-published chart counts once it attempted the new chart.
    if let Some(digest) = target.and_then(|t| t.chart_digests.get(&key)) {
        fresh &= status_str("lastAttemptedRevisionDigest") == Some(digest.as_str());
    }
    if let Some(target) = target.filter(|t| t.requested.contains(&key)) {
        fresh &= status_str("lastHandledReconcileAt").is_some_and(|handled| of_this_round(handled, target.token));
    }
    is_ready &= fresh;
    let reason = ready.and_then(|c| c["reason"].as_str()).unwrap_or_default();
    let failed = fresh && ready.is_some_and(|c| c["status"] == "False") && !WAITING_REASONS.contains(&reason);
    let labels = object.metadata.labels.as_ref();
    let label = |name: &str| labels.and_then(|l| l.get(&format!("kustomize.toolkit.fluxcd.io/{name}"))).cloned();
    let parent = label("namespace").zip(label("name"));
    Observed { object, key, fresh, ready: is_ready, failed, health_checking, parent }
}

/// Readiness of each object, against this round's target when there is one. Then an
/// object's status is believed only once the Kustomization that applied it has applied
/// this round's revision: until then its spec may still be the old one, and its verdict
/// with it. Without a target (`status`), objects are shown as they are.
fn evaluate(objects: &[&DynamicObject], target: Option<&Target<'_>>) -> Vec<Evaluated> {
    let observed: Vec<Observed> = objects.iter().map(|o| observe(o, target)).collect();
    let by_id: BTreeMap<(String, String), &Observed> = observed
        .iter()
        .filter(|o| o.object.types.as_ref().is_some_and(|t| t.kind == "Kustomization"))
        .map(|o| {
            (
                (
                    o.object.metadata.namespace.clone().unwrap_or_default(),
                    o.object.metadata.name.clone().unwrap_or_default(),
                ),
                o,
            )
        })
        .collect();
    // Whether what applied an object has applied this round; the root is devenv's own.
    fn settled(
        parent: &Option<(String, String)>,
        by_id: &BTreeMap<(String, String), &Observed>,
        seen: &mut BTreeSet<(String, String)>,
    ) -> bool {
        let Some(id) = parent else { return true };
        let Some(kustomization) = by_id.get(id) else { return true };
        if !seen.insert(id.clone()) {
            return false;
        }
        let applied =
            kustomization.ready || kustomization.failed || (kustomization.health_checking && kustomization.fresh);
        applied && settled(&kustomization.parent, by_id, seen)
    }
    let mut result = Vec::new();
    for o in &observed {
        let believed = target.is_none() || settled(&o.parent, &by_id, &mut BTreeSet::new());
        let object = o.object;
        let ready = condition(object, "Ready");
        // Flux names files in its own copy of the artifact; the user's are at the same paths.
        let message = ready
            .and_then(|c| c["message"].as_str())
            .map(super::temp_paths::to_repository)
            .unwrap_or_else(|| "waiting for the controller".to_string());
        let message = match believed {
            true => message,
            false => format!("waiting for the Kustomization that applies it ({message})"),
        };
        let kind = object.types.as_ref().map(|t| t.kind.as_str()).unwrap_or("?");
        let namespace = object.metadata.namespace.as_deref().unwrap_or_default();
        let depends_on = object
            .data
            .pointer("/spec/dependsOn")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|d| {
                        let name = d["name"].as_str()?;
                        Some(format!("{kind}/{}/{name}", d["namespace"].as_str().unwrap_or(namespace)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let applied_by = o.parent.as_ref().map(|(ns, name)| format!("Kustomization/{ns}/{name}"));
        let status = ObjectStatus {
            object: o.key.clone(),
            ready: believed && o.ready,
            message,
            depends_on,
            applied_by,
            causes: Vec::new(),
        };
        result.push(Evaluated { status, failed: believed && o.failed });
    }
    let order = tree_order(&result.iter().map(|e| e.status.clone()).collect::<Vec<_>>());
    let mut by_key: BTreeMap<String, Evaluated> = result.into_iter().map(|e| (e.status.object.clone(), e)).collect();
    order.into_iter().filter_map(|(key, _)| by_key.remove(&key)).collect()
}

/// The root and every Kustomization or HelmRelease applied, directly or through others, by it.
pub(super) fn environment_objects<'a>(all: &[&'a DynamicObject], flux_namespace: &str) -> Vec<&'a DynamicObject> {
    let applied_by = |object: &DynamicObject| -> Option<(String, String)> {
        let labels = object.metadata.labels.as_ref()?;
        Some((
            labels.get("kustomize.toolkit.fluxcd.io/namespace")?.clone(),
            labels.get("kustomize.toolkit.fluxcd.io/name")?.clone(),
        ))
    };
    let id = |object: &DynamicObject| {
        (object.metadata.namespace.clone().unwrap_or_default(), object.metadata.name.clone().unwrap_or_default())
    };
    let is_kustomization = |object: &DynamicObject| object.types.as_ref().is_some_and(|t| t.kind == "Kustomization");
    let mut ours = BTreeSet::from([(flux_namespace.to_string(), ROOT_NAME.to_string())]);
    loop {
        let before = ours.len();
        for object in all.iter().filter(|o| is_kustomization(o)) {
            if applied_by(object).is_some_and(|parent| ours.contains(&parent)) {
                ours.insert(id(object));
            }
        }
        if ours.len() == before {
            break;
        }
    }
    all.iter()
        .filter(|object| {
            (is_kustomization(object) && ours.contains(&id(object)))
                || applied_by(object).is_some_and(|parent| ours.contains(&parent))
        })
        .copied()
        .collect()
}

/// Objects in tree order, each with its depth: an object sits under the dependency it waits
/// for longest (its deepest), or, with no dependencies, under the Kustomization that applied it.
pub fn tree_order(statuses: &[ObjectStatus]) -> Vec<(String, usize)> {
    let known: BTreeMap<&str, &ObjectStatus> = statuses.iter().map(|s| (s.object.as_str(), s)).collect();
    let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
    fn depth_of<'a>(
        key: &'a str,
        known: &BTreeMap<&'a str, &'a ObjectStatus>,
        depth: &mut BTreeMap<&'a str, usize>,
        visiting: &mut BTreeSet<&'a str>,
    ) -> usize {
        if let Some(d) = depth.get(key) {
            return *d;
        }
        // A cycle is Flux's to report; here it only must not recurse forever.
        if !visiting.insert(key) {
            return 0;
        }
        let d = known[key]
            .depends_on
            .iter()
            .filter_map(|dep| known.get_key_value(dep.as_str()).map(|(k, _)| *k))
            .map(|dep| depth_of(dep, known, depth, visiting) + 1)
            .max()
            .unwrap_or(0);
        depth.insert(key, d);
        d
    }
    for status in statuses {
        depth_of(status.object.as_str(), &known, &mut depth, &mut BTreeSet::new());
    }
    // Depth-first: children follow the parent they hang under.
    let parent = |s: &ObjectStatus| {
        let deepest = s.depends_on.iter().filter(|d| known.contains_key(d.as_str())).max_by_key(|d| depth[d.as_str()]);
        deepest.or(s.applied_by.as_ref().filter(|a| known.contains_key(a.as_str()))).cloned()
    };
    let mut children: BTreeMap<Option<String>, Vec<&str>> = BTreeMap::new();
    for status in statuses {
        children.entry(parent(status)).or_default().push(status.object.as_str());
    }
    let mut order = Vec::new();
    let mut stack: Vec<(&str, usize)> = children.get(&None).into_iter().flatten().rev().map(|k| (*k, 0)).collect();
    let mut placed = BTreeSet::new();
    while let Some((key, level)) = stack.pop() {
        if !placed.insert(key) {
            continue;
        }
        order.push((key.to_string(), level));
        for child in children.get(&Some(key.to_string())).into_iter().flatten().rev() {
            stack.push((child, level + 1));
        }
    }
    // Anything left (a dependency cycle) goes at the end, unindented.
    for status in statuses {
        if placed.insert(status.object.as_str()) {
            order.push((status.object.clone(), 0));
        }
    }
    order
}

/// The tree as text, one object per line: `✓`/`…` then the object, indented under its parent
/// in `tree_order`, with what it depends on.
pub fn render_tree(statuses: &[ObjectStatus]) -> String {
    let by_key: BTreeMap<&str, &ObjectStatus> = statuses.iter().map(|s| (s.object.as_str(), s)).collect();
    let mut out = String::new();
    for (key, level) in tree_order(statuses) {
        let status = by_key[key.as_str()];
        let mark = if status.ready { "✓" } else { "…" };
        let others: Vec<&str> = status.depends_on.iter().map(|d| d.rsplit('/').next().unwrap_or(d)).collect();
        let after = if others.is_empty() { String::new() } else { format!("  (after {})", others.join(", ")) };
        out.push_str(&format!("  {}{mark} {key}{after}\n", "  ".repeat(level)));
    }
    out
}

/// Progress events per object, sent only when something changes.
#[derive(Default)]
struct LiveStatus {
    shown: BTreeMap<String, (bool, String)>,
}

impl LiveStatus {
    fn show(&mut self, statuses: &[Evaluated], reporter: &dyn Reporter, elapsed: Duration) {
        for evaluated in statuses {
            let status = &evaluated.status;
            let step = format!("flux/{}", status.object);
            let after: Vec<&str> = status.depends_on.iter().map(|d| d.rsplit('/').next().unwrap_or(d)).collect();
            let message = match after.is_empty() {
                true => status.message.clone(),
                false => format!("{} (after {})", status.message, after.join(", ")),
            };
            let now = (status.ready, message.clone());
            match self.shown.insert(status.object.clone(), now.clone()) {
                Some(before) if before == now || (before.0 && status.ready) => {}
                _ if evaluated.failed => reporter.finished(&step, Status::Failed, &message, elapsed),
                _ if status.ready => reporter.finished(&step, Status::Ok, "Ready", elapsed),
                None => reporter.started(&step, &message),
                Some(_) => reporter.progress(&step, &message),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(object: &str, depends_on: &[&str]) -> ObjectStatus {
        let applied_by = (object != "devenv-root").then(|| "Kustomization/flux-system/devenv-root".to_string());
        ObjectStatus {
            applied_by,
            object: format!("Kustomization/flux-system/{object}"),
            ready: object != "apps",
            message: String::new(),
            depends_on: depends_on.iter().map(|d| format!("Kustomization/flux-system/{d}")).collect(),
            causes: Vec::new(),
        }
    }

    #[test]
    fn requests_derived_from_this_rounds_token_are_this_rounds() {
        assert!(of_this_round("1764500000.000000001", "1764500000.000000001"));
        assert!(of_this_round("1764500000.000000001.after-2", "1764500000.000000001"));
        assert!(!of_this_round("1764500000.0000000012", "1764500000.000000001"), "another round's token");
        assert!(!of_this_round("1764499999.000000001", "1764500000.000000001"));
    }

    #[test]
    fn the_objects_a_health_check_names_are_found_in_its_message() {
        let message = "health check failed after 2.0s: failed early due to stalled resources: \
            [HelmRepository/flux-system/podinfo status: 'Failed', Deployment/apps/podinfo status: 'InProgress']";
        assert_eq!(named_objects(message), ["HelmRepository/flux-system/podinfo", "Deployment/apps/podinfo"]);
        let timeout = "timeout waiting for: [Deployment/lending/loans status: 'InProgress']";
        assert_eq!(named_objects(timeout), ["Deployment/lending/loans"]);
        assert!(named_objects("kustomize build failed: accumulating resources").is_empty());
    }

    #[test]
    fn objects_hang_under_their_deepest_dependency_or_what_applied_them() {
        let mut release = status("audit", &[]);
        release.object = "HelmRelease/lending/audit".into();
        release.applied_by = Some("Kustomization/flux-system/apps".into());
        let statuses = [
            status("apps", &["platform", "crds"]),
            status("platform", &["crds"]),
            release,
            status("devenv-root", &[]),
            status("crds", &[]),
            status("cycle-a", &["cycle-b"]),
            status("cycle-b", &["cycle-a"]),
        ];
        let order: Vec<(String, usize)> = tree_order(&statuses)
            .into_iter()
            .map(|(key, level)| (key.rsplit('/').next().unwrap().to_string(), level))
            .collect();
        let names: Vec<(&str, usize)> = order.iter().map(|(k, l)| (k.as_str(), *l)).collect();
        assert_eq!(
            names,
            [
                ("devenv-root", 0),
                ("crds", 1),
                ("platform", 2),
                ("apps", 3),
                ("audit", 4),
                ("cycle-a", 0),
                ("cycle-b", 0)
            ]
        );
        let text = render_tree(&statuses);
        assert!(text.contains("        … Kustomization/flux-system/apps  (after platform, crds)\n"), "{text}");
        assert!(text.contains("      ✓ Kustomization/flux-system/platform  (after crds)\n"), "{text}");
        assert!(text.contains("          ✓ HelmRelease/lending/audit\n"), "{text}");
    }
}

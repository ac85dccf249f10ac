//! Kubernetes access: server-side apply of unstructured objects with the field manager
//! `devenv`, every object labelled as devenv's, and small waits on named conditions.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{self, Scope};
use kube::runtime::reflector::{self, reflector};
use kube::runtime::watcher::{self, watcher};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::naming::{LABEL_ENV, LABEL_MANAGED_BY, MANAGED_BY};

pub const FIELD_MANAGER: &str = "devenv";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{what}` is not a Kubernetes object (apiVersion, kind and metadata.name are needed)")]
    NotAnObject { what: String },
    #[error("the cluster does not serve `{kind}` ({api_version}); are its CRDs installed?")]
    Discovery {
        api_version: String,
        kind: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot ask the cluster for `{kind}` ({api_version}): it did not answer")]
    NoAnswer {
        api_version: String,
        kind: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot apply {object}")]
    Apply {
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot delete {object}")]
    Delete {
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot read {object}")]
    Get {
        object: String,
        #[source]
        source: kube::Error,
    },
}

/// An object's identity for messages: `Kind/namespace/name`.
pub fn describe(object: &Value) -> String {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("?");
    let metadata = object.get("metadata");
    let name = metadata.and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or("?");
    match metadata.and_then(|m| m.get("namespace")).and_then(Value::as_str) {
        Some(namespace) => format!("{kind}/{namespace}/{name}"),
        None => format!("{kind}/{name}"),
    }
}

/// Adds devenv's ownership labels to an object.
pub fn label(object: &mut Value, env: &str) {
    let labels = object
        .as_object_mut()
        .map(|o| o.entry("metadata").or_insert_with(|| Value::Object(Default::default())))
        .and_then(|m| m.as_object_mut())
        .map(|m| m.entry("labels").or_insert_with(|| Value::Object(Default::default())));
    if let Some(Value::Object(labels)) = labels {
        labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
        labels.insert(LABEL_ENV.into(), env.into());
    }
}

/// The API of an object's kind, found by discovery, for its namespace.
pub async fn api_for(client: &kube::Client, object: &Value) -> Result<(Api<DynamicObject>, String), Error> {
    let what = describe(object);
    let api_version = object.get("apiVersion").and_then(Value::as_str);
    let kind = object.get("kind").and_then(Value::as_str);
    let name = object.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str);
    let (Some(api_version), Some(kind), Some(name)) = (api_version, kind, name) else {
        return Err(Error::NotAnObject { what });
    };
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (resource, scope) = discover(client, &gvk).await.map_err(|source| {
        let (api_version, kind) = (api_version.to_string(), kind.to_string());
        match source {
            // The API server answered: it does not know the kind.
            kube::Error::Api(_) | kube::Error::Discovery(_) => Error::Discovery { api_version, kind, source },
            // No answer at all: the cluster went away (or never came).
            _ => Error::NoAnswer { api_version, kind, source },
        }
    })?;
    let api = match scope {
        Scope::Namespaced => {
            let namespace =
                object.get("metadata").and_then(|m| m.get("namespace")).and_then(Value::as_str).unwrap_or("default");
            Api::namespaced_with(client.clone(), namespace, &resource)
        }
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    Ok((api, name.to_string()))
}

/// Kinds found by discovery in this process. A kind's resource name and scope are part of its
/// definition, the same in every cluster that serves it, so one answer serves every client;
/// only kinds that were found are kept, so a CRD installed later is still looked up.
static DISCOVERED: std::sync::Mutex<Vec<(GroupVersionKind, ApiResource, Scope)>> = std::sync::Mutex::new(Vec::new());

/// The resource and scope of a kind: from `DISCOVERED`, else asked of the API server once.
async fn discover(client: &kube::Client, gvk: &GroupVersionKind) -> Result<(ApiResource, Scope), kube::Error> {
    let known = |cache: &Vec<(GroupVersionKind, ApiResource, Scope)>| {
        cache.iter().find(|(k, ..)| k == gvk).map(|(_, resource, scope)| (resource.clone(), scope.clone()))
    };
    if let Some(found) = known(&DISCOVERED.lock().unwrap_or_else(|e| e.into_inner())) {
        return Ok(found);
    }
    let (resource, capabilities) = discovery::pinned_kind(client, gvk).await?;
    let mut cache = DISCOVERED.lock().unwrap_or_else(|e| e.into_inner());
    if known(&cache).is_none() {
        cache.push((gvk.clone(), resource.clone(), capabilities.scope.clone()));
    }
    Ok((resource, capabilities.scope))
}

/// Creates or updates an object by server-side apply (field manager `devenv`).
pub async fn apply(client: &kube::Client, object: &Value) -> Result<DynamicObject, Error> {
    let (api, name) = api_for(client, object).await?;
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(object))
        .await
        .map_err(|source| Error::Apply { object: describe(object), source })
}

/// Annotation holding the digest of the object devenv last applied (without the annotation).
pub const APPLIED_DIGEST: &str = "devenv.io/applied-digest";

/// Stamps an object with the digest of its content, before it is applied, so the next `up`
/// can tell that the cluster already has it as devenv would apply it ([`already_applied`]).
pub fn stamp(object: &mut Value) {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut)
        && let Some(annotations) = metadata.get_mut("annotations").and_then(Value::as_object_mut)
    {
        annotations.remove(APPLIED_DIGEST);
        if annotations.is_empty() {
            metadata.remove("annotations");
        }
    }
    let hex: String = Sha256::digest(object.to_string().as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let digest = format!("sha256:{hex}");
    let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else { return };
    let annotations = metadata.entry("annotations").or_insert_with(|| Value::Object(Default::default()));
    if let Some(annotations) = annotations.as_object_mut() {
        annotations.insert(APPLIED_DIGEST.into(), digest.into());
    }
}

/// Whether applying the stamped object `desired` would change nothing in `live`: devenv
/// applied this very content last (its digest is on the object, so a field devenv stopped
/// setting has been removed), and every field it sets still has its value (so a hand edit is
/// put back by applying), and it is not being deleted.
pub fn already_applied(desired: &Value, live: &Value) -> bool {
    if live.pointer("/metadata/deletionTimestamp").is_some() {
        return false;
    }
    let digest = |object: &Value| {
        object
            .pointer(&format!("/metadata/annotations/{}", APPLIED_DIGEST.replace('/', "~1")))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    digest(desired).is_some() && digest(desired) == digest(live) && covers(desired, live)
}

/// Whether every field of `part` is in `whole` with the same value; lists match item by item.
fn covers(part: &Value, whole: &Value) -> bool {
    match (part, whole) {
        (Value::Object(part), Value::Object(whole)) => {
            part.iter().all(|(key, value)| whole.get(key).is_some_and(|other| covers(value, other)))
        }
        (Value::Array(part), Value::Array(whole)) => {
            part.len() == whole.len() && part.iter().zip(whole).all(|(a, b)| covers(a, b))
        }
        _ => part == whole,
    }
}

/// Whether the API server serves `plural` in `api_version` (`group/version`), asked of
/// discovery: every authenticated identity may read it, unlike a cluster-wide list.
pub async fn served(client: &kube::Client, api_version: &str, plural: &str) -> Result<bool, kube::Error> {
    match client.list_api_group_resources(api_version).await {
        Ok(list) => Ok(list.resources.iter().any(|resource| resource.name == plural)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(error) => Err(error),
    }
}

/// The objects of `env` of the kind and namespace of `like`, as the cluster has them, by
/// [`describe`]; `None` when they cannot be listed (then everything is applied).
pub async fn list_labelled(client: &kube::Client, like: &Value, env: &str) -> Option<Vec<Value>> {
    let (api, _) = api_for(client, like).await.ok()?;
    let selector = crate::naming::env_selector(env);
    let list = api.list(&ListParams::default().labels(&selector)).await.ok()?;
    let (api_version, kind) = (like.get("apiVersion")?, like.get("kind")?);
    Some(
        list.items
            .into_iter()
            .filter_map(|item| {
                let mut value = serde_json::to_value(item).ok()?;
                // List items come without their kind.
                value["apiVersion"] = api_version.clone();
                value["kind"] = kind.clone();
                Some(value)
            })
            .collect(),
    )
}

/// Sets annotations by a merge patch, leaving the fields devenv applies alone (an apply
/// with only the annotations would drop them).
pub async fn annotate(client: &kube::Client, object: &Value, annotations: &[(&str, &str)]) -> Result<(), Error> {
    let (api, name) = api_for(client, object).await?;
    let annotations: serde_json::Map<String, Value> =
        annotations.iter().map(|(key, value)| (key.to_string(), Value::from(*value))).collect();
    let patch = serde_json::json!({"metadata": {"annotations": annotations}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
        .map_err(|source| Error::Apply { object: describe(object), source })
}

/// Reads an object; absent is `None`.
pub async fn get(client: &kube::Client, object: &Value) -> Result<Option<DynamicObject>, Error> {
    let (api, name) = api_for(client, object).await?;
    api.get_opt(&name).await.map_err(|source| Error::Get { object: describe(object), source })
}

/// Waits until the object `name` of `api` meets `condition` (given `None` when it does not
/// exist), watching it rather than asking again and again, for at most `deadline`;
/// `Ok(false)` when it still does not then. An identity that may not watch the kind falls
/// back to asking every half second.
pub async fn until<K>(
    api: &Api<K>,
    name: &str,
    condition: impl Fn(Option<&K>) -> bool,
    deadline: Duration,
) -> Result<bool, kube::Error>
where
    K: Clone + std::fmt::Debug + Send + serde::de::DeserializeOwned + kube::Resource + 'static,
{
    let started = Instant::now();
    let watched = kube::runtime::wait::await_condition(api.clone(), name, &condition);
    match tokio::time::timeout(deadline, watched).await {
        Ok(Ok(_)) => return Ok(true),
        Err(_) => return Ok(false),
        Ok(Err(_)) => {}
    }
    while !condition(api.get_opt(name).await?.as_ref()) {
        if started.elapsed() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(true)
}

/// Waits until the object `name` of `api` is gone (see `until`).
pub async fn until_gone<K>(api: &Api<K>, name: &str, deadline: Duration) -> Result<bool, kube::Error>
where
    K: Clone + std::fmt::Debug + Send + serde::de::DeserializeOwned + kube::Resource + 'static,
{
    until(api, name, |object: Option<&K>| object.is_none(), deadline).await
}

/// How often a wait asks again when it may not watch.
const POLL: Duration = Duration::from_millis(500);
/// The first and the longest pause before a watch that failed (an API server still starting,
/// a dropped connection) starts again.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(4);

/// Waits until the objects `api` lists with `params` (its selectors) meet `condition`, for at
/// most `deadline`; `Ok(false)` when they still do not then. `condition` sees every object
/// once the first complete list arrived, and again after each change: a watch keeps a
/// reflector store of them rather than listing again and again. A watch that fails for
/// another reason than a refusal (an API server still starting) starts again after a pause;
/// when no list ever arrived, the deadline returns the last error. An identity that may not
/// watch the kind (403) falls back to listing every half second.
pub async fn until_all<K>(
    api: &Api<K>,
    params: &ListParams,
    mut condition: impl FnMut(&[K]) -> bool,
    deadline: Duration,
) -> Result<bool, kube::Error>
where
    K: Clone + std::fmt::Debug + Send + Sync + serde::de::DeserializeOwned + kube::Resource + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let started = Instant::now();
    let config = watcher::Config {
        label_selector: params.label_selector.clone(),
        field_selector: params.field_selector.clone(),
        ..watcher::Config::default()
    };
    let (store, writer) = reflector::store();
    let mut events = std::pin::pin!(reflector(writer, watcher(api.clone(), config)));
    let mut listed = false;
    let mut last_error = None;
    let mut retry = RETRY_FIRST;
    loop {
        let left = deadline.saturating_sub(started.elapsed());
        let Ok(Some(event)) = tokio::time::timeout(left, events.next()).await else {
            break;
        };
        match event {
            Ok(watcher::Event::InitDone | watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
                listed = true;
                retry = RETRY_FIRST;
                let objects: Vec<K> = store.state().iter().map(|object| K::clone(object)).collect();
                if condition(&objects) {
                    return Ok(true);
                }
            }
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Err(error) if may_not_watch(&error) => {
                return poll_all(api, params, condition, started, deadline).await;
            }
            Err(error) => {
                last_error = client_error(error).or(last_error);
                tokio::time::sleep(retry.min(deadline.saturating_sub(started.elapsed()))).await;
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
    match last_error {
        Some(error) if !listed => Err(error),
        _ => Ok(false),
    }
}

/// `until_all` by listing every half second, for an identity that may not watch. A refused
/// list ends the wait; other errors are retried until the deadline, which returns the last.
async fn poll_all<K>(
    api: &Api<K>,
    params: &ListParams,
    mut condition: impl FnMut(&[K]) -> bool,
    started: Instant,
    deadline: Duration,
) -> Result<bool, kube::Error>
where
    K: Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    loop {
        let last_error = match api.list(params).await {
            Ok(list) if condition(&list.items) => return Ok(true),
            Ok(_) => None,
            Err(error) if is_refusal(&error) => return Err(error),
            Err(error) => Some(error),
        };
        if started.elapsed() >= deadline {
            return last_error.map_or(Ok(false), Err);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether the API server refused the request (403): the identity may not do it.
fn is_refusal(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 403)
}

/// Whether a watch failed because the identity may not watch (or list) the kind, or the kind
/// cannot be watched: asking again will not change that.
fn may_not_watch(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(error)
        | watcher::Error::WatchStartFailed(error)
        | watcher::Error::WatchFailed(error) => is_refusal(error),
        watcher::Error::WatchError(status) => status.code == 403,
        watcher::Error::NoResourceVersion => true,
    }
}

/// The client's error under a watcher's.
fn client_error(error: watcher::Error) -> Option<kube::Error> {
    match error {
        watcher::Error::InitialListFailed(error)
        | watcher::Error::WatchStartFailed(error)
        | watcher::Error::WatchFailed(error) => Some(error),
        watcher::Error::WatchError(status) => Some(kube::Error::Api(status)),
        watcher::Error::NoResourceVersion => None,
    }
}

/// `until_gone` for an object given as JSON. One whose kind the cluster no longer serves (its
/// CRD went first) is gone.
pub async fn wait_gone(client: &kube::Client, object: &Value, deadline: Duration) -> Result<bool, Error> {
    let (api, name) = match api_for(client, object).await {
        Ok(found) => found,
        Err(Error::Discovery { .. }) => return Ok(true),
        Err(other) => return Err(other),
    };
    until_gone(&api, &name, deadline).await.map_err(|source| Error::Get { object: describe(object), source })
}

/// Deletes an object; absent is fine. Returns whether it existed.
pub async fn delete(client: &kube::Client, object: &Value) -> Result<bool, Error> {
    let (api, name) = api_for(client, object).await?;
    match api.delete(&name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(source) => Err(Error::Delete { object: describe(object), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(url: &str) -> Value {
        let mut object = serde_json::json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
            "metadata": {"name": "devenv-source", "namespace": "flux-system", "labels": {"devenv.io/env": "dev"}},
            "spec": {"interval": "60m", "url": url, "ref": {"tag": "latest"}, "insecure": true},
        });
        stamp(&mut object);
        object
    }

    /// What the API server gives back: defaults, status and metadata of its own added.
    fn as_served(object: &Value) -> Value {
        let mut live = object.clone();
        live["metadata"]["resourceVersion"] = "42".into();
        live["metadata"]["annotations"]["other"] = "kept".into();
        live["spec"]["timeout"] = "60s".into();
        live["status"] = serde_json::json!({"conditions": []});
        live
    }

    #[test]
    fn an_object_as_devenv_applied_it_is_not_applied_again() {
        let desired = source("oci://127.0.0.1:5000/devenv/dev/devenv-source");
        assert!(already_applied(&desired, &as_served(&desired)));
    }

    #[test]
    fn a_changed_field_a_hand_edit_or_a_dropped_field_is_applied_again() {
        let desired = source("oci://127.0.0.1:5000/devenv/dev/devenv-source");
        // devenv now sets another value: the digest differs.
        let before = source("oci://127.0.0.1:5001/devenv/dev/devenv-source");
        assert!(!already_applied(&desired, &as_served(&before)));
        // Someone edited a field devenv sets: the digest matches, the field does not.
        let mut edited = as_served(&desired);
        edited["spec"]["insecure"] = false.into();
        assert!(!already_applied(&desired, &edited));
        // devenv stopped setting a field it set before: only the digest tells.
        let mut without = desired.clone();
        without["spec"].as_object_mut().unwrap().remove("insecure");
        stamp(&mut without);
        assert!(!already_applied(&without, &as_served(&desired)));
        // Never applied by devenv (no digest on it).
        let mut unstamped = as_served(&desired);
        unstamped["metadata"]["annotations"].as_object_mut().unwrap().remove(APPLIED_DIGEST);
        assert!(!already_applied(&desired, &unstamped));
        // Being deleted (an interrupted `down`): applying it again is needed once it is gone.
        let mut terminating = as_served(&desired);
        terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
        assert!(!already_applied(&desired, &terminating));
    }

    #[test]
    fn lists_are_covered_item_by_item() {
        let part = serde_json::json!({"patches": [{"patch": "a"}, {"patch": "b"}]});
        assert!(covers(&part, &serde_json::json!({"patches": [{"patch": "a", "target": {}}, {"patch": "b"}]})));
        assert!(!covers(&part, &serde_json::json!({"patches": [{"patch": "a"}]})));
        assert!(!covers(&part, &serde_json::json!({"patches": [{"patch": "b"}, {"patch": "a"}]})));
    }

    #[test]
    fn the_stamp_does_not_depend_on_an_earlier_stamp() {
        let once = source("oci://x/y");
        let mut twice = once.clone();
        stamp(&mut twice);
        assert_eq!(once, twice);
    }
}

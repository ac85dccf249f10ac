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

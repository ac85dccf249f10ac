//! Kubernetes access: server-side apply of unstructured objects with the field manager
//! `devenv`, every object labelled as devenv's, and small waits on named conditions.

use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{self, Scope};
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
        tokio::time::sleep(Duration::from_millis(500)).await;
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

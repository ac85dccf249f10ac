//! Previews in the cluster: a preview's namespace found and checked, its bundle applied, the
//! order of commits kept, the project's previews listed, and a preview removed.
//!
//! The cluster is the only record: a CI job that runs `preview down` or `gc` on a fresh
//! machine finds everything by the namespace's labels.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde::Serialize;
use serde_json::{Value, json};

use super::{ANNOTATION_EXPIRES_AT, LABEL_PR, LABEL_PROJECT, LABEL_SHA, Preview, Settings, bundle};
use crate::flux::deploy;
use crate::naming::{LABEL_MANAGED_BY, MANAGED_BY};
use crate::ui::{Reporter, ReporterExt, Status};

/// A preview that carries this label with the value `true` is never garbage-collected.
pub const LABEL_KEEP: &str = "devenv.io/keep";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {operation}")]
    Api {
        operation: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Apply(#[from] crate::kube::Error),
    #[error("namespace `{namespace}` exists and is not a preview of project `{project}` made by devenv")]
    NotOurs { namespace: String, project: String },
    #[error("commit {sha} is older than {deployed}, which preview `{namespace}` already runs")]
    Older { namespace: String, sha: String, deployed: String },
    #[error("project `{project}` has {} previews, the most its profile allows (maxPreviews: {max})", existing.len())]
    Cap { project: String, max: u32, existing: Vec<String> },
    #[error("namespace `{namespace}` is still terminating after {}s: {holding}", waited.as_secs())]
    Stuck { namespace: String, holding: String, waited: Duration },
    #[error(transparent)]
    Prune(#[from] deploy::Error),
}

fn api_error(operation: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let operation = operation.into();
    move |source| Error::Api { operation, source }
}

/// The namespace of a preview, if it exists; one that is not this project's devenv preview
/// is refused, so devenv never takes over or deletes someone else's namespace.
pub async fn find(client: &kube::Client, namespace: &str, project: &str) -> Result<Option<Namespace>, Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let found = namespaces.get_opt(namespace).await.map_err(api_error(format!("read namespace `{namespace}`")))?;
    match found {
        Some(found) if !is_preview_of(&found, project) => {
            Err(Error::NotOurs { namespace: namespace.to_string(), project: project.to_string() })
        }
        found => Ok(found),
    }
}

fn is_preview_of(namespace: &Namespace, project: &str) -> bool {
    let labels = namespace.metadata.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
    label(LABEL_MANAGED_BY) == Some(MANAGED_BY) && label(LABEL_PROJECT) == Some(project) && label(LABEL_PR).is_some()
}

/// The commit a preview's namespace says it runs.
pub fn deployed_sha(namespace: &Namespace) -> Option<String> {
    namespace.metadata.labels.as_ref().and_then(|l| l.get(LABEL_SHA)).cloned()
}

/// Refuses `sha` when it is an ancestor of the commit the preview already runs: a push that
/// lost a race to a newer one must not replace it. A commit this clone does not know (a
/// force-push rewrote history) cannot be compared and is allowed; the answer says so.
pub fn check_order(repo: &Path, namespace: &str, sha: &str, deployed: Option<&str>) -> Result<Order, Error> {
    let Some(deployed) = deployed else { return Ok(Order::First) };
    if deployed.eq_ignore_ascii_case(sha) {
        return Ok(Order::Same);
    }
    let status = Command::new("git")
        .args(["merge-base", "--is-ancestor", sha, deployed])
        .current_dir(repo)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    match status.map(|s| s.code()) {
        Ok(Some(0)) => {
            Err(Error::Older { namespace: namespace.to_string(), sha: sha.to_string(), deployed: deployed.to_string() })
        }
        Ok(Some(1)) => Ok(Order::Newer),
        _ => Ok(Order::Unknown { deployed: deployed.to_string() }),
    }
}

/// How a preview's new commit relates to the one it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    First,
    Same,
    Newer,
    /// The running commit is not in this clone; the new one replaces it.
    Unknown {
        deployed: String,
    },
}

/// The commit checked out in `repo`, when it is a git work tree.
pub fn head_commit(repo: &Path) -> Option<String> {
    let output = Command::new("git").args(["rev-parse", "HEAD"]).current_dir(repo).output().ok()?;
    let sha = String::from_utf8(output.stdout).ok()?.trim().to_string();
    (output.status.success() && !sha.is_empty()).then_some(sha)
}

/// Fails when a new preview would exceed the project's `maxPreviews`.
pub async fn check_cap(client: &kube::Client, preview: &Preview, max: Option<u32>) -> Result<(), Error> {
    let Some(max) = max else { return Ok(()) };
    let others: Vec<String> = list(client, &preview.project)
        .await?
        .into_iter()
        .map(|listed| listed.namespace)
        .filter(|namespace| *namespace != preview.namespace)
        .collect();
    if others.len() >= max as usize {
        return Err(Error::Cap { project: preview.project.clone(), max, existing: others });
    }
    Ok(())
}

/// Creates or updates the preview's namespace alone (labels and expiry), so that its Lease
/// has a home before anything else is decided.
pub async fn ensure_namespace(
    client: &kube::Client,
    preview: &Preview,
    existing: Option<&Namespace>,
) -> Result<(), Error> {
    let mut namespace = bundle::namespace(preview);
    // The commit label changes only with the bundle, once the order of commits is checked.
    if let Some(sha) = existing.and_then(deployed_sha) {
        namespace["metadata"]["labels"][LABEL_SHA] = json!(sha);
    } else if let Some(labels) = namespace["metadata"]["labels"].as_object_mut() {
        labels.remove(LABEL_SHA);
    }
    crate::kube::apply(client, &namespace).await?;
    Ok(())
}

/// Applies the isolation bundle, plus `admin` in the namespace for whoever runs devenv.
pub async fn apply_bundle(
    client: &kube::Client,
    preview: &Preview,
    settings: &Settings,
    reporter: &dyn Reporter,
) -> Result<(), Error> {
    let step = format!("preview/{}", preview.namespace);
    let started = Instant::now();
    reporter.started(&step, "applying the namespace, quota, limits, network policies and accounts");
    let username = whoami(client).await?;
    let mut objects = bundle::objects(preview, settings);
    objects.push(bundle::runner_binding(preview, &username));
    for object in &objects {
        crate::kube::apply(client, object).await?;
    }
    reporter.finished(
        &step,
        Status::Ok,
        &format!("{} objects, `admin` for {username}", objects.len()),
        started.elapsed(),
    );
    Ok(())
}

/// The user name the API server knows this client by.
pub async fn whoami(client: &kube::Client) -> Result<String, Error> {
    let reviews: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = reviews
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(api_error("ask the API server who devenv runs as (SelfSubjectReview)"))?;
    Ok(review.status.and_then(|s| s.user_info).and_then(|u| u.username).unwrap_or_default())
}

/// One preview of the project, as `list` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listed {
    pub pr: u64,
    pub namespace: String,
    pub sha: Option<String>,
    /// RFC 3339, when the namespace was made.
    pub created_at: Option<String>,
    pub expires_at: Option<String>,
    pub keep: bool,
    /// Ready, reconciling, failed (with Flux's message), terminating, or no Flux objects.
    pub status: String,
    pub ready: bool,
}

/// Every preview of the project in the cluster, by pull request number.
pub async fn list(client: &kube::Client, project: &str) -> Result<Vec<Listed>, Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let selector = format!("{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_PROJECT}={project},{LABEL_PR}");
    let found = namespaces
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(api_error("list the previews' namespaces"))?;
    let mut previews = Vec::new();
    for namespace in found.items {
        let metadata = &namespace.metadata;
        let labels = metadata.labels.clone().unwrap_or_default();
        let Some(pr) = labels.get(LABEL_PR).and_then(|pr| pr.parse().ok()) else { continue };
        let name = metadata.name.clone().unwrap_or_default();
        let terminating = metadata.deletion_timestamp.is_some();
        let (status, ready) =
            if terminating { ("terminating".to_string(), false) } else { root_status(client, &name).await };
        previews.push(Listed {
            pr,
            sha: labels.get(LABEL_SHA).cloned(),
            created_at: metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()),
            expires_at: metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION_EXPIRES_AT)).cloned(),
            keep: labels.get(LABEL_KEEP).is_some_and(|v| v == "true"),
            status,
            ready,
            namespace: name,
        });
    }
    previews.sort_by_key(|p| p.pr);
    Ok(previews)
}

/// The root Kustomization's Ready condition in the preview's namespace.
async fn root_status(client: &kube::Client, namespace: &str) -> (String, bool) {
    let root = json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": crate::flux::names::ROOT_NAME, "namespace": namespace},
    });
    let object = match crate::kube::get(client, &root).await {
        Ok(Some(object)) => object,
        Ok(None) => return ("no Flux objects".to_string(), false),
        Err(error) => return (format!("unknown: {error}"), false),
    };
    let conditions = object.data.pointer("/status/conditions").and_then(Value::as_array);
    let ready = conditions.into_iter().flatten().find(|c| c["type"] == "Ready");
    match ready {
        Some(c) if c["status"] == "True" => ("Ready".to_string(), true),
        Some(c) if c["status"] == "False" => {
            (format!("failed: {}", c["message"].as_str().unwrap_or_default().trim()), false)
        }
        _ => ("reconciling".to_string(), false),
    }
}

/// Why `gc` deletes a preview, or `None` to keep it.
pub fn gc_reason(
    listed: &Listed,
    now: jiff::Timestamp,
    open_prs: Option<&BTreeSet<u64>>,
    older_than: Option<Duration>,
) -> Option<String> {
    if listed.keep {
        return None;
    }
    if let Some(open) = open_prs
        && !open.contains(&listed.pr)
    {
        return Some(format!("pull request {} is not open", listed.pr));
    }
    let parse = |text: &Option<String>| text.as_deref().and_then(|t| t.parse::<jiff::Timestamp>().ok());
    if let Some(expires) = parse(&listed.expires_at)
        && expires <= now
    {
        return Some(format!("expired at {expires}"));
    }
    if let (Some(limit), Some(created)) = (older_than, parse(&listed.created_at)) {
        let age = now.duration_since(created).unsigned_abs();
        if age > limit {
            return Some(format!("older than {}", crate::state::human(limit)));
        }
    }
    None
}

/// What removing a preview did.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Removed {
    /// Objects Flux applied and pruned (`Kind/namespace/name`).
    pub pruned: Vec<String>,
    /// Whether the namespace is gone (only known with `--wait`).
    pub namespace_gone: bool,
}

/// Removes a preview: its Flux objects first, which prune what they applied (as the
/// preview's account, which must still exist), then the namespace with everything else,
/// data included. With `wait`, until the namespace is gone.
pub async fn remove(
    client: &kube::Client,
    namespace: &str,
    wait: bool,
    deadline: Duration,
    reporter: &dyn Reporter,
) -> Result<Removed, Error> {
    let started = Instant::now();
    let placement = crate::state::FluxPlacement { namespace: namespace.to_string(), shared: true };
    let pruned = deploy::prune_root(client, &placement, deadline, reporter).await?;
    let step = format!("namespace/{namespace}");
    reporter.started(&step, "deleting the namespace and everything in it");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    match namespaces.delete(namespace, &DeleteParams::background()).await {
        Ok(_) => {}
        // Gone, or already terminating.
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
        Err(source) => return Err(api_error(format!("delete namespace `{namespace}`"))(source)),
    }
    if !wait {
        reporter.finished(&step, Status::Ok, "deleting (not waited for)", started.elapsed());
        return Ok(Removed { pruned, namespace_gone: false });
    }
    let left = deadline.saturating_sub(started.elapsed());
    let read = || api_error(format!("read namespace `{namespace}`"));
    if !crate::kube::until_gone(&namespaces, namespace, left).await.map_err(read())? {
        let found = namespaces.get_opt(namespace).await.map_err(read())?;
        let holding = found.as_ref().map(what_holds).unwrap_or_default();
        return Err(Error::Stuck { namespace: namespace.to_string(), holding, waited: started.elapsed() });
    }
    reporter.finished(&step, Status::Ok, "deleted", started.elapsed());
    Ok(Removed { pruned, namespace_gone: true })
}

/// The namespace controller's account of what keeps a namespace terminating: its
/// conditions that are true (content remaining, finalizers remaining, failed deletions).
pub fn what_holds(namespace: &Namespace) -> String {
    let conditions = namespace.status.as_ref().and_then(|s| s.conditions.as_ref());
    let held: Vec<String> = (conditions.into_iter().flatten())
        .filter(|c| c.status == "True")
        .map(|c| format!("{}: {}", c.type_, c.message.clone().unwrap_or_default()))
        .collect();
    if held.is_empty() { "the namespace controller has not said why".to_string() } else { held.join("; ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(pr: u64, created: &str, expires: &str, keep: bool) -> Listed {
        Listed {
            pr,
            namespace: format!("pr-{pr}-shop"),
            sha: None,
            created_at: Some(created.to_string()),
            expires_at: Some(expires.to_string()),
            keep,
            status: "Ready".into(),
            ready: true,
        }
    }

    #[test]
    fn gc_deletes_expired_closed_and_old_previews_but_never_a_kept_one() {
        let now: jiff::Timestamp = "2026-12-01T12:00:00Z".parse().unwrap();
        let fresh = listed(1, "2026-12-01T11:00:00Z", "2026-12-04T11:00:00Z", false);
        let expired = listed(2, "2026-11-20T11:00:00Z", "2026-11-23T11:00:00Z", false);
        let kept = listed(3, "2026-11-20T11:00:00Z", "2026-11-23T11:00:00Z", true);
        assert_eq!(gc_reason(&fresh, now, None, None), None);
        assert_eq!(gc_reason(&expired, now, None, None).unwrap(), "expired at 2026-11-23T11:00:00Z");
        assert_eq!(gc_reason(&kept, now, None, None), None, "devenv.io/keep=true exempts it");
        let open = BTreeSet::from([2, 3]);
        assert_eq!(gc_reason(&fresh, now, Some(&open), None).unwrap(), "pull request 1 is not open");
        assert_eq!(gc_reason(&kept, now, Some(&BTreeSet::new()), None), None);
        let hour = Duration::from_secs(3600);
        assert_eq!(gc_reason(&fresh, now, None, Some(hour / 2)).unwrap(), "older than 30m");
        assert_eq!(gc_reason(&fresh, now, None, Some(hour * 2)), None);
    }

    #[test]
    fn an_older_commit_is_refused_and_an_unknown_one_allowed() {
        let repo = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let output = Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
                .args(args)
                .current_dir(repo.path())
                .output()
                .unwrap();
            assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
            String::from_utf8(output.stdout).unwrap().trim().to_string()
        };
        git(&["init", "-q"]);
        git(&["commit", "-q", "--allow-empty", "-m", "one"]);
        let first = git(&["rev-parse", "HEAD"]);
        git(&["commit", "-q", "--allow-empty", "-m", "two"]);
        let second = git(&["rev-parse", "HEAD"]);
        let path = repo.path();
        assert_eq!(check_order(path, "pr-1-shop", &second, None).unwrap(), Order::First);
        assert_eq!(check_order(path, "pr-1-shop", &second, Some(&second)).unwrap(), Order::Same);
        assert_eq!(check_order(path, "pr-1-shop", &second, Some(&first)).unwrap(), Order::Newer);
        let error = check_order(path, "pr-1-shop", &first, Some(&second)).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("commit {first} is older than {second}, which preview `pr-1-shop` already runs")
        );
        let unknown = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            check_order(path, "pr-1-shop", &second, Some(unknown)).unwrap(),
            Order::Unknown { deployed: unknown.to_string() }
        );
        assert_eq!(head_commit(path).as_deref(), Some(second.as_str()));
    }
}

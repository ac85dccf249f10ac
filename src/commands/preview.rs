//! `devenv preview …`: per-pull-request environments in a shared cluster.
//!
//! `up` is `devenv up` for an environment named after the pull request, in its own
//! namespace, after the preview's checks (owner, cap, order of commits) and its isolation
//! bundle, under the preview's Lease. The cluster is the only record: no state is kept on
//! the machine, so `down`, `list` and `gc` work from any CI job.

use std::collections::BTreeSet;

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};

use super::{Context, output_rows};
use crate::cli::{PreviewDownArgs, PreviewGcArgs, PreviewRbacArgs, PreviewUpArgs};
use crate::config::{self, Config, profile::Provider};
use crate::errors::Error;
use crate::preview::cluster::{self, Order};
use crate::preview::{self, Preview, Settings, lease, rbac};
use crate::providers::{self, kubeconfig};
use crate::state::Store;
use crate::ui::{self, ReporterExt, table};

/// The profile a preview command uses unless `--profile` names another.
pub const DEFAULT_PROFILE: &str = "preview";
/// How many previews `gc` removes at once.
const GC_CONCURRENCY: usize = 4;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Rbac {
    /// `user devenv-ci`, `group …`, `service account NS/NAME`.
    subject: String,
    objects: Vec<Value>,
}

/// Prints what the CI identity needs; needs no repository and no cluster.
pub fn rbac(ctx: &Context, args: &PreviewRbacArgs) {
    let subject = args.subject();
    let objects = rbac::objects(&subject);
    if ctx.json() {
        ui::print_result(&Rbac { subject: subject.describe(), objects });
    } else {
        crate::out!("{}", rbac::to_yaml(&subject, &objects));
    }
}

/// The preview profile's configuration; `--env` has no say (a preview is named after its
/// pull request) and the profile must be one of `provider: eks-namespace`.
async fn load(ctx: &Context) -> Result<Config, Error> {
    if ctx.selection.env.is_some() {
        return Err(super::Error::EnvOfPreview.into());
    }
    let mut selection = ctx.selection.clone();
    selection.profile.get_or_insert_with(|| DEFAULT_PROFILE.to_string());
    let config = config::load(&selection, &ctx.cwd)?;
    let provider = config.profile.cluster.provider;
    if provider != Provider::EksNamespace {
        return Err(
            super::Error::NotPreviewProfile { profile: config.profile_name, provider: provider.as_str() }.into()
        );
    }
    Ok(config)
}

/// The configuration of pull request `pr`'s preview: its environment and namespace.
fn for_pr(mut config: Config, pr: u64) -> Config {
    config.env = preview::env_name(pr, &config.project.project);
    config.profile.cluster.namespace = Some(preview::namespace_name(pr, &config.project.project));
    config
}

/// A client of the profile's cluster (`--context`, `cluster.context` or the current one), for
/// commands that need neither Flux nor the registry.
async fn connect(config: &Config) -> Result<kube::Client, Error> {
    let location = kubeconfig::default_location().map_err(super::Error::from)?;
    let file = kubeconfig::read(&location).map_err(super::Error::from)?;
    let (context, _) = kubeconfig::resolve(&file, &location, config.context.as_deref()).map_err(super::Error::from)?;
    Ok(kubeconfig::client(&location, &context).await.map_err(super::Error::from)?)
}

pub async fn up(ctx: &Context, args: &PreviewUpArgs) -> Result<(), Error> {
    let config = load(ctx).await?;
    let settings = Settings::from_profile(&config.profile);
    let sha = args.sha.clone().or_else(|| cluster::head_commit(&config.repo));
    let now = jiff::Timestamp::now();
    let preview =
        Preview::new(args.pr, &config.project.project, sha.as_deref(), now, args.ttl.unwrap_or(settings.ttl))?;
    let config = for_pr(config, args.pr);
    let reporter = ctx.reporter();
    // The cluster, Flux and the registry are checked before anything is made.
    let store = Store::for_env(&config.env)?;
    let provider = providers::for_config(&config, store.dir())?.expect("eks-namespace has a cluster");
    provider.preflight().await?;
    let planned = provider.intent(&config.env).await?;
    let info = provider.ensure(&config.env, &planned, reporter.as_ref()).await?.info;
    let client = provider.client(&info).await?;

    let existing = cluster::find(&client, &preview.namespace, &preview.project).await?;
    if existing.is_none() {
        cluster::check_cap(&client, &preview, config.profile.max_previews).await?;
    }
    cluster::ensure_namespace(&client, &preview, existing.as_ref()).await?;
    let held =
        lease::acquire(&client, &preview.namespace, &super::command_line(), args.timeout, reporter.as_ref()).await?;
    let result = async {
        // Read again under the Lease: a run that held it may have deployed a newer commit.
        let current = cluster::find(&client, &preview.namespace, &preview.project).await?;
        let deployed = current.as_ref().and_then(cluster::deployed_sha);
        let order = match &preview.sha {
            Some(sha) => cluster::check_order(&config.repo, &preview.namespace, sha, deployed.as_deref())?,
            None => Order::First,
        };
        if let Order::Unknown { deployed } = &order {
            reporter.warning(&format!(
                "the preview runs commit {deployed}, which this clone does not have (a force-push?); replacing it"
            ));
        }
        cluster::apply_bundle(&client, &preview, &settings, reporter.as_ref()).await?;
        super::up::bring_up(ctx, &config, args.timeout).await
    }
    .await;
    let released = held.release().await;
    // The cluster is the record; what `up` kept here would only go stale.
    store.remove()?;
    let up = result?;
    released?;

    let services = super::up::services_json(&up, args.show_secrets);
    let flux = up.deployed.as_ref().map(|d| d.objects.clone()).unwrap_or_default();
    if ctx.json() {
        ui::print_result(&json!({
            "pr": preview.pr,
            "namespace": preview.namespace,
            "sha": preview.sha,
            "status": "Ready",
            "expiresAt": preview.expires_at,
            "context": info.context,
            "flux": flux,
            "services": services,
        }));
        return Ok(());
    }
    let commit = preview.sha.as_deref().map(|sha| format!(" at {}", short(sha))).unwrap_or_default();
    crate::outln!(
        "Preview of pull request {}{commit} is Ready in namespace `{}` (context `{}`), until {}.",
        preview.pr,
        preview.namespace,
        info.context,
        preview.expires_at
    );
    if !flux.is_empty() {
        crate::outln!("\nFlux: {} object(s) Ready", flux.len());
        crate::out!("{}", crate::flux::wait::render_tree(&flux));
    }
    if !up.ready.is_empty() {
        crate::outln!("\nSubstitutes run in the namespace; these are the addresses its pods use.");
        let rows: Vec<Vec<String>> =
            up.ready.iter().flat_map(|d| output_rows(&d.service.name, &d.outputs(), args.show_secrets)).collect();
        crate::outln!();
        crate::out!("{}", table::render(&["SERVICE", "OUTPUT", "VALUE"], &rows));
    }
    Ok(())
}

pub async fn down(ctx: &Context, args: &PreviewDownArgs) -> Result<(), Error> {
    let config = load(ctx).await?;
    if args.pr == 0 {
        return Err(preview::Error::Number.into());
    }
    let project = naming_project(&config);
    let namespace = preview::namespace_name(args.pr, &project);
    let client = connect(&config).await?;
    let reporter = ctx.reporter();
    let Some(found) = cluster::find(&client, &namespace, &project).await? else {
        if ctx.json() {
            ui::print_result(&json!({"pr": args.pr, "namespace": namespace, "existed": false}));
        } else {
            crate::outln!("Pull request {} has no preview (no namespace `{namespace}`): nothing to do.", args.pr);
        }
        return Ok(());
    };
    // A run that is deploying the preview finishes first; a namespace already going needs none.
    let held = match found.metadata.deletion_timestamp {
        Some(_) => None,
        None => {
            Some(lease::acquire(&client, &namespace, &super::command_line(), args.timeout, reporter.as_ref()).await?)
        }
    };
    let removed = cluster::remove(&client, &namespace, args.wait, args.timeout, reporter.as_ref()).await;
    if let Some(held) = held {
        // The namespace is going, and its Lease with it; a failure to release changes nothing.
        let _ = held.release().await;
    }
    let removed = removed?;
    if ctx.json() {
        ui::print_result(&json!({"pr": args.pr, "namespace": namespace, "existed": true, "removed": removed}));
        return Ok(());
    }
    let how = if removed.namespace_gone { "is gone" } else { "is being deleted (`--wait` waits until it is gone)" };
    crate::outln!(
        "Preview of pull request {} removed: Flux pruned {} object(s); namespace `{namespace}` {how}.",
        args.pr,
        removed.pruned.len()
    );
    Ok(())
}

/// The project name as preview labels carry it.
fn naming_project(config: &Config) -> String {
    crate::naming::sanitize(&config.project.project, crate::naming::MAX_OBJECT_LEN)
}

pub async fn list(ctx: &Context) -> Result<(), Error> {
    let config = load(ctx).await?;
    let project = naming_project(&config);
    let client = connect(&config).await?;
    let previews = cluster::list(&client, &project).await?;
    if ctx.json() {
        ui::print_result(&json!({"project": project, "previews": previews}));
        return Ok(());
    }
    if previews.is_empty() {
        crate::outln!("Project `{project}` has no previews.");
        return Ok(());
    }
    let now = jiff::Timestamp::now();
    let rows: Vec<Vec<String>> = previews
        .iter()
        .map(|p| {
            let keep = if p.keep { " (kept)" } else { "" };
            vec![
                p.pr.to_string(),
                p.namespace.clone(),
                p.sha.as_deref().map(short).unwrap_or("-").to_string(),
                age(p.created_at.as_deref(), now),
                format!("{}{keep}", p.expires_at.as_deref().unwrap_or("-")),
                p.status.clone(),
            ]
        })
        .collect();
    crate::out!("{}", table::render(&["PR", "NAMESPACE", "SHA", "AGE", "EXPIRES", "STATUS"], &rows));
    Ok(())
}

/// One preview `gc` looked at.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Collected {
    pr: u64,
    namespace: String,
    reason: String,
}

pub async fn gc(ctx: &Context, args: &PreviewGcArgs) -> Result<(), Error> {
    let config = load(ctx).await?;
    let project = naming_project(&config);
    let client = connect(&config).await?;
    let reporter = ctx.reporter();
    let now = jiff::Timestamp::now();
    let open: Option<&BTreeSet<u64>> = args.open_prs.as_ref().map(|prs| &prs.0);
    let mut doomed = Vec::new();
    let mut kept = Vec::new();
    for preview in cluster::list(&client, &project).await? {
        let reason = cluster::gc_reason(&preview, now, open, args.older_than);
        let collected = |reason: &str| Collected {
            pr: preview.pr,
            namespace: preview.namespace.clone(),
            reason: reason.to_string(),
        };
        match reason {
            _ if preview.status == "terminating" => kept.push(collected("already being deleted")),
            Some(reason) => doomed.push(collected(&reason)),
            None if preview.keep => kept.push(collected("labelled devenv.io/keep=true")),
            None => kept.push(collected("not expired")),
        }
    }
    let mut deleted = Vec::new();
    let mut failed = Vec::new();
    if args.dry_run {
        deleted = doomed;
    } else {
        let command = super::command_line();
        let outcomes: Vec<(Collected, Result<(), Error>)> = futures_util::stream::iter(doomed)
            .map(|c| {
                let (client, reporter, command) = (&client, reporter.as_ref(), &command);
                async move {
                    let result = collect(client, &c.namespace, command, args.timeout, reporter).await;
                    (c, result)
                }
            })
            .buffer_unordered(GC_CONCURRENCY)
            .collect()
            .await;
        for (collected, result) in outcomes {
            match result {
                Ok(()) => deleted.push(collected),
                // A preview being deployed right now is not garbage: it is left alone.
                Err(Error::PreviewLease(lease::Error::Busy { .. })) => {
                    kept.push(Collected { reason: "another run is changing it".to_string(), ..collected })
                }
                Err(error) => failed.push((collected, error)),
            }
        }
    }
    deleted.sort_by_key(|c| c.pr);
    kept.sort_by_key(|c| c.pr);
    if ctx.json() {
        let failures: Vec<Value> = (failed.iter())
            .map(|(c, e)| json!({"pr": c.pr, "namespace": c.namespace, "error": e.to_string()}))
            .collect();
        ui::print_result(&json!({"dryRun": args.dry_run, "deleted": deleted, "kept": kept, "failed": failures}));
    } else {
        let verb = if args.dry_run { "would delete" } else { "deleted" };
        if deleted.is_empty() && failed.is_empty() {
            crate::outln!("No preview of project `{project}` to delete ({} kept).", kept.len());
        }
        for c in &deleted {
            crate::outln!("{verb} preview of pull request {} (`{}`): {}", c.pr, c.namespace, c.reason);
        }
        for (c, error) in &failed {
            crate::outln!("could not delete preview of pull request {}: {error}", c.pr);
        }
    }
    match failed.into_iter().next() {
        Some((_, first)) => Err(first),
        None => Ok(()),
    }
}

/// Removes one preview `gc` collects, unless another run holds its Lease.
async fn collect(
    client: &kube::Client,
    namespace: &str,
    command: &str,
    timeout: std::time::Duration,
    reporter: &dyn ui::Reporter,
) -> Result<(), Error> {
    let held = lease::acquire(client, namespace, command, std::time::Duration::ZERO, reporter).await?;
    let removed = cluster::remove(client, namespace, false, timeout, reporter).await;
    let _ = held.release().await;
    removed.map(drop).map_err(Error::from)
}

/// `abcdef1` of a commit.
fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// `3h`, `2d` since an RFC 3339 time.
fn age(since: Option<&str>, now: jiff::Timestamp) -> String {
    let Some(since) = since.and_then(|s| s.parse::<jiff::Timestamp>().ok()) else { return "-".to_string() };
    let seconds = now.duration_since(since).as_secs().max(0);
    match seconds {
        s if s >= 86400 => format!("{}d", s / 86400),
        s if s >= 3600 => format!("{}h", s / 3600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_short() {
        let now: jiff::Timestamp = "2026-12-01T12:00:00Z".parse().unwrap();
        assert_eq!(age(Some("2026-11-29T11:00:00Z"), now), "2d");
        assert_eq!(age(Some("2026-12-01T09:30:00Z"), now), "2h");
        assert_eq!(age(Some("2026-12-01T11:59:30Z"), now), "30s");
        assert_eq!(age(None, now), "-");
    }
}

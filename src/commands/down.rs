//! `devenv down`: remove what `up` created, found by label; data survives unless `--purge`.
//! A state file that is missing or cannot be read does not stop it: containers and volumes
//! are found by their labels, a cluster devenv owns by its files in the state directory, and
//! what that leaves unknown is said.

use super::Context;
use crate::cli::DownArgs;
use crate::config;
use crate::errors::Error;
use crate::flux;
use crate::providers;
use crate::state::{self, Store};
use crate::substitutes::{self, Removed, SubstituteRuntime};
use crate::ui::{self, ReporterExt};

/// How long the engine may take to finish what a killed command asked of it.
const AFTER_A_KILL: std::time::Duration = std::time::Duration::from_secs(2);

pub async fn run(ctx: &Context, args: &DownArgs) -> Result<(), Error> {
    // A broken devenv.yaml must not stop a cleanup: with `--env`, the name is enough, and the
    // state file says which cluster the environment used.
    let (config, env) = match config::load(&ctx.selection, &ctx.cwd) {
        Ok(config) => {
            let env = config.env.clone();
            (Some(config), env)
        }
        Err(error) => match &ctx.selection.env {
            Some(env) => (None, env.clone()),
            None => return Err(error.into()),
        },
    };
    let store = Store::for_env(&env)?;
    let reporter = ctx.reporter();
    // One command at a time changes an environment; this one holds it until it returns.
    let lock = store.lock(&super::command_line(), args.timeout, reporter.as_ref()).await?;
    let (state, unreadable) = match store.load() {
        Ok(state) => (state, None),
        Err(error @ (state::Error::Corrupt { .. } | state::Error::Read { .. })) => {
            reporter.warning(&format!(
                "{}; what devenv made for `{env}` is found by its labels and the files in `{}` instead",
                describe_error(&error),
                store.dir().display()
            ));
            (None, Some(error))
        }
        Err(error) => return Err(error.into()),
    };
    let provider = match &state {
        Some(state) => providers::for_record(state.cluster.as_ref(), store.dir()),
        None => providers::found_in(store.dir()),
    };

    // First Flux prunes what devenv applied to the cluster, if it answers, so the next `up`
    // starts from a clean slate; then the substitutes go, then a cluster devenv owns.
    // In-cluster substitutes keep their claims without `--purge`, so their namespace stays.
    let recorded = state.as_ref().and_then(|s| s.substitutes.as_ref());
    let keep = recorded.filter(|_| !args.purge).map(|placement| placement.namespace.as_str());
    let mut flux_removed = flux::deploy::Removed::default();
    if let Some(provider) = &provider
        && let Some(info) = provider.info().ok().flatten()
    {
        let client = match provider.client(&info).await {
            Ok(client) if providers::answers(&client).await.is_ok() => Some(client),
            _ => None,
        };
        let owned = provider.capabilities().owns_cluster;
        // Where `up` put the Flux objects; a state file written before that was recorded
        // leaves it to the configuration.
        let placement = (state.as_ref().and_then(|s| s.flux.clone()))
            .or_else(|| config.as_ref().map(state::FluxPlacement::for_config));
        // A cluster devenv owns with a process down (an API server, etcd or a Flux
        // controller killed) cannot prune: it is stopped anyway, its objects left in its data.
        let unhealthy = || async {
            match provider.status(&info).await {
                Ok(status) if status.healthy => None,
                Ok(status) => Some(status.detail),
                Err(error) => Some(error.to_string()),
            }
        };
        let sick = match &client {
            Some(_) if owned => unhealthy().await,
            _ => None,
        };
        let cannot_prune = |why: &str| {
            format!(
                "Flux cannot prune what it applied for `{env}` ({why}); the {} cluster is stopped anyway, and those objects stay in its data until the next `devenv up` applies the repository again (`devenv down --purge` deletes them)",
                provider.kind().as_str()
            )
        };
        match (client, &placement) {
            (Some(_), Some(_)) if let Some(why) = &sick => reporter.warning(&cannot_prune(why)),
            (Some(client), Some(placement)) => {
                let prune = flux::deploy::remove(&client, &env, placement, keep, args.timeout, reporter.as_ref());
                // A process of the cluster that dies meanwhile (a request to an API server
                // whose etcd is gone may never return) ends the prune at once.
                let pruned = tokio::select! {
                    pruned = prune => pruned,
                    died = providers::process_died(provider.as_ref(), &info) => {
                        reporter.warning(&cannot_prune(&died.to_string()));
                        Ok(flux::deploy::Removed::default())
                    }
                };
                match pruned {
                    Ok(removed) => flux_removed = removed,
                    // The cluster stopped answering, or a process of it died, while Flux pruned.
                    Err(error) if owned && (!error.is_refusal() || unhealthy().await.is_some()) => {
                        reporter.warning(&cannot_prune(&describe_chain(&error)))
                    }
                    Err(error) => return Err(flux::Error::from(error).into()),
                }
            }
            // A cluster devenv owns goes away below; one it does not keeps what it was given.
            _ if owned => {}
            (None, _) => reporter.warning(&format!(
                "the cluster of context `{}` does not answer, so what Flux applied for `{env}` stays there; run `devenv down` again once it answers",
                info.context
            )),
            (Some(_), None) => reporter.warning(&format!(
                "devenv.yaml cannot be read, so what Flux applied for `{env}` stays in the cluster of context `{}`; fix the file and run `devenv down` again",
                info.context
            )),
        }
    }
    // Substitutes are found by label where `up` put them: the namespace the state file
    // records for in-cluster ones, else the configuration's runtime, else Docker (the
    // default, so a broken devenv.yaml does not stop the cleanup).
    let runtime: Box<dyn SubstituteRuntime> = match (recorded, &config) {
        (Some(_), _) | (None, None) => substitutes::runtime::for_record(&env, recorded),
        (None, Some(config)) => substitutes::runtime::for_config(config),
    };
    let engine = runtime.check().await;
    let mut removed = match &engine {
        Ok(_) => runtime.remove_all(&env, args.purge, reporter.as_ref()).await?,
        Err(_) => Removed::default(),
    };
    // A command killed while the engine created something for it (a request the engine
    // carries out though its client is gone) may see it appear a moment after the first
    // look: a second one finds it.
    if engine.is_ok() && lock.took_over().is_some() {
        tokio::time::sleep(AFTER_A_KILL).await;
        let late = runtime.remove_all(&env, args.purge, reporter.as_ref()).await?;
        removed.containers.extend(late.containers);
        removed.volumes.extend(late.volumes);
    }
    // A cluster devenv owns is stopped even when the engine cannot be reached.
    let owned = provider.as_ref().filter(|p| p.capabilities().owns_cluster);
    let cluster_stopped = match owned {
        Some(provider) => provider.delete(args.purge, reporter.as_ref()).await?,
        None => false,
    };
    match engine {
        // With no state file, and no sign of one, devenv never made anything here.
        Err(_) if state.is_none() && unreadable.is_none() => {}
        // In-cluster substitutes go with a cluster devenv deletes.
        Err(_) if runtime.in_cluster() && owned.is_some() => {}
        // What the engine holds is unknown: the state stays for the next `down`.
        Err(error) => return Err(error.into()),
        Ok(_) => {}
    }
    let found = !removed.containers.is_empty() || !removed.volumes.is_empty() || provider.is_some();
    let state_file = match (&state, &unreadable) {
        (Some(_), _) => "read",
        (None, Some(_)) => "unreadable",
        (None, None) => "missing",
    };
    if state.is_none() && (unreadable.is_some() || found) {
        if unreadable.is_none() {
            reporter.warning(&format!(
                "there is no state file for `{env}` (`{}`); what was removed was found by its labels and the files in its state directory",
                store.file().display()
            ));
        }
        for unknown in unknowns(&env, provider.is_some(), args.purge, unreadable.is_some()) {
            reporter.warning(&unknown);
        }
    }
    if args.purge {
        store.remove()?;
    } else {
        store.remove_if_only_locked()?;
    }

    if ctx.json() {
        ui::print_result(&serde_json::json!({
            "env": env,
            "purged": args.purge,
            "stateFile": state_file,
            "removed": removed,
            "flux": flux_removed,
            "clusterStopped": cluster_stopped,
        }));
        return Ok(());
    }
    if !flux_removed.pruned.is_empty() {
        crate::outln!("Flux pruned {} object(s) it had applied for `{env}`.", flux_removed.pruned.len());
    }
    if !flux_removed.kept.is_empty() {
        crate::outln!(
            "Left in the cluster for the environments that share it (cluster-wide): {}.",
            flux_removed.kept.join(", ")
        );
    }
    if let Some(provider) = &provider
        && !provider.capabilities().owns_cluster
    {
        crate::outln!("The {} cluster is not devenv's, so it keeps running as it is.", provider.kind().as_str());
    }
    if cluster_stopped {
        let kind = owned.map(|p| p.kind().as_str()).unwrap_or_default();
        crate::outln!(
            "Stopped the {kind} cluster of `{env}`{}.",
            if args.purge { " and deleted its data" } else { "" }
        );
    }
    if removed.containers.is_empty() && removed.volumes.is_empty() && !cluster_stopped {
        crate::outln!("Environment `{env}` has nothing running; nothing to remove.");
    } else if !removed.containers.is_empty() || !removed.volumes.is_empty() {
        let (instances, volumes) =
            if runtime.in_cluster() { ("in-cluster substitute(s)", "claim(s)") } else { ("container(s)", "volume(s)") };
        crate::outln!(
            "Environment `{env}` is down: removed {} {instances}{}.",
            removed.containers.len(),
            if args.purge { format!(" and {} {volumes}", removed.volumes.len()) } else { String::new() }
        );
    }
    if !args.purge && state.is_some() {
        crate::outln!(
            "Data volumes and credentials are kept for the next `devenv up`; `devenv down --purge` deletes them."
        );
    }
    Ok(())
}

/// An error and all its causes on one line.
fn describe_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// The error and its first cause on one line.
fn describe_error(error: &state::Error) -> String {
    match std::error::Error::source(error) {
        Some(cause) => format!("{error} ({cause})"),
        None => error.to_string(),
    }
}

/// What `down` cannot know without the state file.
fn unknowns(env: &str, cluster_found: bool, purge: bool, unreadable: bool) -> Vec<String> {
    let mut unknowns = Vec::new();
    if !cluster_found {
        unknowns.push(format!(
            "without the state file devenv cannot tell whether `{env}` used a cluster it does not own (provider `existing`); if it did, what Flux applied there for `{env}` stays (deleting `Kustomization/devenv-root` in Flux's namespace there prunes it)"
        ));
    }
    if !purge {
        let fix = if unreadable {
            "repair the state file to use them again"
        } else {
            "restore the state file to use them again"
        };
        unknowns.push(format!(
            "the data volumes of `{env}` are kept, but the credentials they were set up with were in the state file: {fix}, or `devenv down --purge` deletes them"
        ));
    }
    unknowns
}

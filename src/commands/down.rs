//! `devenv down`: remove what `up` created, found by label; data survives unless `--purge`.

use super::Context;
use crate::cli::DownArgs;
use crate::config;
use crate::errors::Error;
use crate::flux;
use crate::providers;
use crate::state::Store;
use crate::substitutes::{self, Removed, SubstituteRuntime};
use crate::ui::{self, ReporterExt};

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
    let state = store.load()?;
    let reporter = ctx.reporter();
    let provider = providers::for_record(state.as_ref().and_then(|s| s.cluster.as_ref()), store.dir());

    // First Flux prunes what devenv applied to the cluster, if it answers, so the next `up`
    // starts from a clean slate; then the substitutes go, then a cluster devenv owns.
    let mut flux_removed = flux::deploy::Removed::default();
    if let Some(provider) = &provider
        && let Some(info) = provider.info().ok().flatten()
    {
        let client = match provider.client(&info).await {
            Ok(client) if providers::answers(&client).await.is_ok() => Some(client),
            _ => None,
        };
        let owned = provider.capabilities().owns_cluster;
        match (client, &config) {
            (Some(client), Some(config)) => {
                flux_removed = flux::deploy::remove(&client, config, args.timeout, reporter.as_ref())
                    .await
                    .map_err(flux::Error::from)?;
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
    // Substitutes are found by label; Docker is the only runtime that can hold them today, so
    // it is asked whatever the configuration says (or when it cannot be read).
    let runtime: Box<dyn SubstituteRuntime> = config
        .as_ref()
        .and_then(|config| substitutes::runtime::for_config(config).ok())
        .unwrap_or_else(|| Box::new(substitutes::runtime::DockerRuntime::default()));
    let removed = match runtime.check().await {
        // Without a state file devenv never made anything here, so there is nothing to remove.
        Err(_) if state.is_none() => Removed::default(),
        Err(error) => return Err(error.into()),
        Ok(_) => runtime.remove_all(&env, args.purge, reporter.as_ref()).await?,
    };
    let owned = provider.as_ref().filter(|p| p.capabilities().owns_cluster);
    let cluster_stopped = match owned {
        Some(provider) => provider.delete(args.purge, reporter.as_ref()).await?,
        None => false,
    };
    if args.purge {
        store.remove()?;
    }

    if ctx.json() {
        ui::print_result(
            &serde_json::json!({"env": env, "purged": args.purge, "removed": removed, "flux": flux_removed, "clusterStopped": cluster_stopped}),
        );
        return Ok(());
    }
    if !flux_removed.pruned.is_empty() {
        crate::outln!("Flux pruned {} object(s) it had applied for `{env}`.", flux_removed.pruned.len());
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
        crate::outln!(
            "Environment `{env}` is down: removed {} container(s){}.",
            removed.containers.len(),
            if args.purge { format!(" and {} volume(s)", removed.volumes.len()) } else { String::new() }
        );
    }
    if !args.purge && state.is_some() {
        crate::outln!(
            "Data volumes and credentials are kept for the next `devenv up`; `devenv down --purge` deletes them."
        );
    }
    Ok(())
}

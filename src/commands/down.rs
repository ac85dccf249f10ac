//! `devenv down`: remove what `up` created, found by label; data survives unless `--purge`.

use super::Context;
use crate::cli::DownArgs;
use crate::config;
use crate::docker::Docker;
use crate::errors::Error;
use crate::flux;
use crate::providers::{self, sim};
use crate::state::Store;
use crate::substitutes::{self, Removed};
use crate::ui;

pub async fn run(ctx: &Context, args: &DownArgs) -> Result<(), Error> {
    // A broken devenv.yaml must not stop a cleanup: with `--env`, the name is enough.
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

    // First Flux prunes what devenv applied to a running sim cluster, so the next `up` starts
    // from a clean slate; then the substitutes go, then the cluster's processes.
    let sim = sim::Sim::new(store.dir());
    let mut flux_removed = flux::deploy::Removed::default();
    if let Some(config) = &config
        && let Some(info) = sim.info().map_err(providers::Error::from)?
        && let Ok(client) = sim::client(&info).await
        && client.apiserver_version().await.is_ok()
    {
        flux_removed =
            flux::deploy::remove(&client, config, args.timeout, reporter.as_ref()).await.map_err(flux::Error::from)?;
    }
    let removed = match Docker::connect().await {
        Ok(docker) => substitutes::remove_all(&docker, &env, args.purge, reporter.as_ref()).await?,
        // Without a state file devenv never made anything here, so there is nothing to remove.
        Err(_) if state.is_none() => Removed::default(),
        Err(error) => return Err(error.into()),
    };
    let cluster_stopped = sim.down(args.purge, reporter.as_ref()).await.map_err(providers::Error::from)?;
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
        println!("Flux pruned {} object(s) it had applied for `{env}`.", flux_removed.pruned.len());
    }
    if cluster_stopped {
        println!("Stopped the sim cluster of `{env}`{}.", if args.purge { " and deleted its data" } else { "" });
    }
    if removed.containers.is_empty() && removed.volumes.is_empty() && !cluster_stopped {
        println!("Environment `{env}` has nothing running; nothing to remove.");
    } else if !removed.containers.is_empty() || !removed.volumes.is_empty() {
        println!(
            "Environment `{env}` is down: removed {} container(s){}.",
            removed.containers.len(),
            if args.purge { format!(" and {} volume(s)", removed.volumes.len()) } else { String::new() }
        );
    }
    if !args.purge && state.is_some() {
        println!("Data volumes and credentials are kept for the next `devenv up`; `devenv down --purge` deletes them.");
    }
    Ok(())
}

//! `devenv plan`: what `up` would do, computed exactly as `up` does, without doing it.

use std::collections::BTreeMap;

use super::Context;
use crate::config;
use crate::errors::Error;
use crate::plan;
use crate::providers;
use crate::state::Store;
use crate::substitutes;
use crate::ui::{self, ReporterExt};
use crate::{envmap, flux};

pub async fn run(ctx: &Context) -> Result<(), Error> {
    let config = config::load(&ctx.selection, &ctx.cwd)?;
    providers::check_not_preview(&config)?;
    let store = Store::for_env(&config.env)?;
    let provider = providers::for_config(&config, store.dir())?;
    let runtime = substitutes::runtime::for_config(&config);
    // A cluster devenv does not create must be there as `up` needs it: context, API, Flux.
    if let Some(provider) = provider.as_ref().filter(|p| !p.capabilities().owns_cluster) {
        provider.preflight().await?;
    }
    let mut state = store.load_for(&config.env, &config.repo, &config.profile_name)?;
    let (observed, orphans) = if config.services.is_empty() {
        (BTreeMap::new(), Vec::new())
    } else {
        match runtime.check().await {
            Ok(_) => runtime.observe(&config).await?,
            Err(error) => {
                ctx.reporter().warning(&format!("{error}; showing the plan as if nothing exists yet"));
                (BTreeMap::new(), Vec::new())
            }
        }
    };
    // Resolution picks ports and credentials in memory only; nothing is saved.
    let desired = substitutes::resolve(&config, &mut state, &observed, &store.ports_of_other_envs())?;
    let mut plan = plan::compute(&config, &desired, &observed, &orphans);
    if let Some(provider) = &provider {
        match provider.intent(&config.env).await {
            Ok(intent) => plan.cluster.intent = Some(intent),
            // `up` would stop on it; the rest of the plan is still worth showing.
            Err(error) => ctx.reporter().warning(&format!("cannot tell what `up` does with the cluster: {error}")),
        }
        let env = envmap::compute(&config, &state, runtime.as_ref());
        let registry = packing_registry(Some(provider.as_ref()));
        let prepared = flux::prepare(&config, &env, &registry, provider.capabilities())?;
        for warning in prepared.warnings() {
            ctx.reporter().warning(&warning);
        }
        plan.flux = Some(plan::FluxStep::new(&config, &prepared, &registry));
    }
    if ctx.json() {
        ui::print_result(&plan);
    } else {
        crate::out!("{}", plan::render(&plan));
    }
    Ok(())
}

/// The registry Flux's tree is packed for: the cluster's when it exists, so that `plan` shows
/// the digests `up` pushes; else a placeholder, filled in once `up` has made the cluster.
pub fn packing_registry(provider: Option<&dyn providers::ClusterProvider>) -> String {
    (provider.and_then(|p| p.info().ok().flatten()))
        .map(|cluster| cluster.registry.from_cluster)
        .unwrap_or_else(|| flux::REGISTRY_PLACEHOLDER.to_string())
}

//! `devenv plan`: what `up` would do, computed exactly as `up` does, without doing it.

use std::collections::BTreeMap;

use super::Context;
use crate::config;
use crate::config::profile::Provider;
use crate::docker::Docker;
use crate::errors::Error;
use crate::plan;
use crate::providers;
use crate::state::Store;
use crate::substitutes;
use crate::ui::{self, ReporterExt};
use crate::{envmap, flux};

pub async fn run(ctx: &Context) -> Result<(), Error> {
    let config = config::load(&ctx.selection, &ctx.cwd)?;
    providers::check_available(&config.profile_name, config.profile.cluster.provider)?;
    let mut state = Store::for_env(&config.env)?.load_for(&config.env, &config.repo, &config.profile_name)?;
    let (observed, orphans) = if config.services.is_empty() {
        (BTreeMap::new(), Vec::new())
    } else {
        match Docker::connect().await {
            Ok(docker) => substitutes::observe(&docker, &config).await?,
            Err(error) => {
                ctx.reporter().warning(&format!("{error}; showing the plan as if nothing exists yet"));
                (BTreeMap::new(), Vec::new())
            }
        }
    };
    // Resolution picks ports and credentials in memory only; nothing is saved.
    let desired = substitutes::resolve(&config, &mut state, &observed)?;
    let mut plan = plan::compute(&config, &desired, &observed, &orphans);
    if config.profile.cluster.provider != Provider::None {
        let prepared = flux::prepare(&config, &envmap::compute(&config, &state), flux::REGISTRY_PLACEHOLDER)?;
        plan.flux = Some(plan::FluxStep::new(&config, &prepared));
    }
    if ctx.json() {
        ui::print_result(&plan);
    } else {
        print!("{}", plan::render(&plan));
    }
    Ok(())
}

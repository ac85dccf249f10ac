//! `devenv up`: validate, record, then create or update each substitute and wait for it.

use futures_util::future::join_all;

use super::{Context, output_rows, outputs_json};
use crate::cli::UpArgs;
use crate::config;
use crate::config::profile::Provider;
use crate::docker::Docker;
use crate::errors::Error;
use crate::plan;
use crate::providers::{self, sim};
use crate::state::State;
use crate::state::Store;
use crate::substitutes::{self, STOP_GRACE};
use crate::ui::{self, ReporterExt, table};
use crate::{envmap, flux};

pub async fn run(ctx: &Context, args: &UpArgs) -> Result<(), Error> {
    // Everything that can be checked without side effects is checked first.
    let config = config::load(&ctx.selection, &ctx.cwd)?;
    providers::check_available(&config.profile_name, config.profile.cluster.provider)?;
    let mut prepared = match config.profile.cluster.provider {
        Provider::None => None,
        _ => {
            let prepared =
                flux::prepare(&config, &envmap::compute(&config, &State::default()), flux::REGISTRY_PLACEHOLDER)?;
            prepared.check_contract()?;
            Some(prepared)
        }
    };
    let store = Store::for_env(&config.env)?;
    let mut state = store.load_for(&config.env, &config.repo, &config.profile_name)?;
    let reporter = ctx.reporter();
    let docker = if config.services.is_empty() { None } else { Some(Docker::connect().await?) };
    // Recorded before anything is created, so `down` can always clean up.
    store.save(&state)?;

    let cluster = match config.profile.cluster.provider {
        Provider::Sim => {
            Some(sim::Sim::new(store.dir()).up(&config.env, reporter.as_ref()).await.map_err(providers::Error::from)?)
        }
        _ => None,
    };

    let mut ready = Vec::new();
    if let Some(docker) = docker {
        let (observed, orphans) = substitutes::observe(&docker, &config).await?;
        let desired = substitutes::resolve(&config, &mut state, &observed)?;
        store.save(&state)?;
        let plan = plan::compute(&config, &desired, &observed, &orphans);
        for step in &plan.services {
            if let Some(note) = &step.port_note
                && note.contains("taken")
            {
                reporter.warning(&format!("{}: {note}", step.service));
            }
        }
        for orphan in &plan.orphans {
            reporter.warning(&format!("removing `{orphan}`: its service is no longer in devenv.yaml (volume kept)"));
            docker.remove_container(orphan, STOP_GRACE).await?;
        }
        // Substitutes start in parallel; each reports its own progress.
        let results = join_all(
            desired
                .iter()
                .zip(&plan.services)
                .map(|(d, step)| substitutes::ensure(&docker, d, step.action, reporter.as_ref())),
        )
        .await;
        let total = results.len();
        let mut errors: Vec<Error> = results.into_iter().filter_map(Result::err).map(Error::from).collect();
        match errors.len() {
            0 => {}
            1 => return Err(errors.remove(0)),
            failed => {
                return Err(Error::Several { failed, total, first: Box::new(errors.remove(0)) });
            }
        }
        ready = desired;
    }

    // Flux gets the environment once the substitutes it points at are ready.
    let mut deployed = None;
    if let (Some(cluster), Some(prepared)) = (&cluster, prepared.as_mut()) {
        let client = sim::client(cluster).await.map_err(providers::Error::from)?;
        let env = envmap::compute(&config, &state);
        // Packed again now that `{{ registry }}` has a value; the contract is unchanged.
        prepared.packed = flux::pack(&config, &cluster.registry)?;
        let result =
            flux::deploy::up(&client, &config, prepared, &env, &cluster.registry, args.timeout, reporter.as_ref())
                .await;
        deployed = Some(result.map_err(flux::Error::from)?);
    }

    if ctx.json() {
        let services: Vec<_> = ready
            .iter()
            .map(|d| {
                serde_json::json!({
                    "name": d.service.name,
                    "kind": d.service.kind,
                    "container": d.spec.name,
                    "endpoint": format!("127.0.0.1:{}", d.main_port()),
                    "outputs": outputs_json(&d.outputs(), args.show_secrets),
                })
            })
            .collect();
        ui::print_result(
            &serde_json::json!({"env": config.env, "profile": config.profile_name, "cluster": cluster, "flux": deployed, "services": services}),
        );
        return Ok(());
    }
    println!("Environment `{}` is up.", config.env);
    if let Some(cluster) = &cluster {
        println!("\nCluster (sim): {} — context `{}`", cluster.api_server, cluster.context);
        println!("  export KUBECONFIG={}", cluster.kubeconfig.display());
        println!("  registry: {} (plain HTTP)", cluster.registry);
    }
    if let Some(deployed) = &deployed {
        let artifacts = &deployed.artifacts;
        let change = match artifacts.pushed.len() {
            0 => "artifacts unchanged".to_string(),
            n => format!("{n} of {} artifact(s) pushed: {}", artifacts.sources.len(), artifacts.pushed.join(", ")),
        };
        println!("\nFlux: {} object(s) Ready ({change})", deployed.objects.len());
        print!("{}", flux::wait::render_tree(&deployed.objects));
    }
    if !ready.is_empty() {
        let rows: Vec<Vec<String>> =
            ready.iter().flat_map(|d| output_rows(&d.service.name, &d.outputs(), args.show_secrets)).collect();
        println!();
        print!("{}", table::render(&["SERVICE", "OUTPUT", "VALUE"], &rows));
    }
    Ok(())
}

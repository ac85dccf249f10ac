//! `devenv up`: validate, record, then plan each step as `devenv plan` does and carry out that
//! plan: the cluster, the substitutes, Flux. A step that depends on the one before (the
//! substitutes of a cluster that is not up yet) is planned once that one is done.

use std::time::Duration;

use futures_util::future::join_all;

use super::{Context, output_rows, outputs_json};
use crate::cli::UpArgs;
use crate::config::{self, Config};
use crate::errors::Error;
use crate::plan;
use crate::providers::{self, ClusterInfo, Registry, registry};
use crate::state::Store;
use crate::state::{self, State};
use crate::substitutes;
use crate::ui::{self, ReporterExt, table};
use crate::{envmap, flux};

pub async fn run(ctx: &Context, args: &UpArgs) -> Result<(), Error> {
    let config = config::load(&ctx.selection, &ctx.cwd)?;
    providers::check_not_preview(&config)?;
    let up = bring_up(ctx, &config, args.timeout).await?;
    report(ctx, &config, &up, args.show_secrets);
    Ok(())
}

/// What `up` brought up: the cluster, Flux's objects, and the substitutes, all Ready.
pub struct Up {
    /// The plan carried out, each step as it was done.
    pub plan: plan::Plan,
    pub cluster: Option<ClusterInfo>,
    pub deployed: Option<flux::deploy::Deployed>,
    pub ready: Vec<substitutes::Desired>,
    /// Whether the substitutes run in the cluster, where only pods reach them.
    pub in_cluster: bool,
}

/// Creates or updates the environment `config` describes and waits until it is Ready.
/// Everything that can be checked without side effects is checked first.
pub async fn bring_up(ctx: &Context, config: &Config, timeout: Duration) -> Result<Up, Error> {
    let store = Store::for_env(&config.env)?;
    let provider = providers::for_config(config, store.dir())?;
    let runtime = substitutes::runtime::for_config(config);
    if let Some(provider) = &provider {
        provider.preflight().await?;
    }
    let expected_registry = super::plan::packing_registry(provider.as_deref());
    let mut prepared = match &provider {
        None => None,
        Some(provider) => {
            let env = envmap::compute(config, &State::default(), runtime.as_ref());
            let prepared = flux::prepare(config, &env, &expected_registry, provider.capabilities())?;
            prepared.check_contract()?;
            prepared.check_findings()?;
            Some(prepared)
        }
    };
    // In-cluster substitutes are checked once the cluster is up.
    if !config.services.is_empty() && !runtime.in_cluster() {
        runtime.check().await?;
    }
    let reporter = ctx.reporter();
    for warning in prepared.iter().flat_map(|p| p.warnings()) {
        reporter.warning(&warning);
    }
    for finding in prepared.iter().flat_map(|p| &p.findings) {
        if finding.severity == flux::checks::Severity::Warning {
            reporter.warning(&format!("{}: {}", finding.place(), finding.message));
        }
    }
    // One command at a time changes an environment; this one holds it until it returns.
    let _lock = store.lock(&super::command_line(), timeout, reporter.as_ref()).await?;
    let mut state = store.load_for(&config.env, &config.repo, &config.profile_name)?;
    let mut plan = plan::Plan::new(config);
    if let Some(provider) = &provider {
        plan.cluster.intent = Some(provider.intent(&config.env).await?);
    }
    // Recorded before anything is created, so `down` can always clean up.
    if let Some(provider) = &provider
        && let Some(known) = provider.info().ok().flatten()
    {
        state.cluster = Some(known);
    }
    if runtime.in_cluster() && !config.services.is_empty() {
        let namespace = substitutes::cluster::namespace_for(config);
        state.substitutes = Some(state::SubstitutePlacement { namespace });
    }
    store.save(&state)?;

    let cluster = match (&provider, &plan.cluster.intent) {
        (Some(provider), Some(planned)) => {
            let ensured = provider.ensure(&config.env, planned, reporter.as_ref()).await?;
            plan.cluster.intent = Some(ensured.carried_out);
            state.cluster = Some(ensured.info.clone());
            store.save(&state)?;
            Some(ensured.info)
        }
        _ => None,
    };

    let mut ready = Vec::new();
    if !config.services.is_empty() {
        if runtime.in_cluster() {
            runtime.check().await?;
        }
        let (observed, orphans) = runtime.observe(config).await?;
        // New ports avoid those other environments remember, and are recorded before another
        // environment chooses.
        let book = store.port_book().await?;
        let desired = substitutes::resolve(config, &mut state, &observed, &book.taken)?;
        store.save(&state)?;
        drop(book);
        plan.services = plan::service_steps(&desired, &observed);
        plan.orphans = orphans;
        for step in &plan.services {
            if let Some(note) = &step.port_note
                && note.contains("taken")
            {
                reporter.warning(&format!("{}: {note}", step.service));
            }
        }
        for orphan in &plan.orphans {
            reporter.warning(&format!("removing `{orphan}`: its service is no longer in devenv.yaml (volume kept)"));
            runtime.remove(orphan).await?;
        }
        // Substitutes start in parallel; each reports its own progress.
        let results = join_all(
            desired.iter().zip(&plan.services).map(|(d, step)| runtime.ensure(d, step.action, reporter.as_ref())),
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
    if let (Some(provider), Some(cluster), Some(prepared)) = (&provider, &cluster, prepared.as_mut()) {
        let client = provider.client(cluster).await?;
        let placement = state::FluxPlacement::for_config(config);
        if state.flux.as_ref() != Some(&placement) {
            state.flux = Some(placement);
            store.save(&state)?;
        }
        let env = envmap::compute(config, &state, runtime.as_ref());
        // A new cluster's registry is filled in where the tree was packed with a placeholder;
        // a running one that came back under another address has the tree packed again. The
        // contract and the checks do not depend on it.
        let registry = &cluster.registry.from_cluster;
        if !prepared.packed.fill_registry(registry).map_err(flux::Error::from)? {
            prepared.packed = flux::pack(config, registry, provider.capabilities())?;
        }
        plan.flux = Some(plan::FluxStep::new(config, prepared, registry));
        let deploy =
            flux::deploy::up(&client, config, &prepared.packed, &env, &cluster.registry, timeout, reporter.as_ref());
        // A process of a cluster devenv runs that dies meanwhile ends the wait at once.
        let result = tokio::select! {
            result = deploy => result,
            died = providers::process_died(provider.as_ref(), cluster) => return Err(died.into()),
        };
        deployed = Some(result.map_err(flux::Error::from)?);
    }
    Ok(Up { plan, cluster, deployed, ready, in_cluster: runtime.in_cluster() })
}

/// The substitutes of `up` as JSON: endpoint and outputs, secrets as null unless shown.
pub fn services_json(up: &Up, show_secrets: bool) -> Vec<serde_json::Value> {
    (up.ready.iter())
        .map(|d| {
            serde_json::json!({
                "name": d.service.name,
                "kind": d.service.kind,
                "container": d.spec.name,
                "endpoint": endpoint(d),
                "inCluster": up.in_cluster,
                "outputs": outputs_json(&d.outputs(), show_secrets),
            })
        })
        .collect()
}

/// Prints the result: the cluster and how to use it, Flux's tree, the substitutes' outputs.
fn report(ctx: &Context, config: &Config, up: &Up, show_secrets: bool) {
    let Up { cluster, deployed, ready, .. } = up;
    if ctx.json() {
        ui::print_result(&serde_json::json!({
            "env": config.env,
            "profile": config.profile_name,
            "cluster": cluster,
            "flux": deployed,
            "services": services_json(up, show_secrets),
            "plan": up.plan,
        }));
        return;
    }
    crate::outln!("Environment `{}` is up.", config.env);
    if let Some(cluster) = &cluster {
        crate::outln!(
            "\nCluster ({}): {} — context `{}`",
            cluster.provider.as_str(),
            cluster.api_server,
            cluster.context
        );
        crate::outln!("  export KUBECONFIG={}", cluster.kubeconfig.display());
        crate::outln!("  registry: {}", describe_registry(&cluster.registry));
    }
    if let Some(deployed) = deployed {
        let artifacts = &deployed.artifacts;
        let change = match artifacts.pushed.len() {
            0 => "artifacts unchanged".to_string(),
            n => format!("{n} of {} artifact(s) pushed: {}", artifacts.sources.len(), artifacts.pushed.join(", ")),
        };
        crate::outln!("\nFlux: {} object(s) Ready ({change})", deployed.objects.len());
        crate::out!("{}", flux::wait::render_tree(&deployed.objects));
    }
    if !ready.is_empty() {
        if up.in_cluster {
            crate::outln!(
                "\nSubstitutes run in the cluster, in namespace `{}`; these are the addresses pods use.",
                substitutes::cluster::namespace_for(config)
            );
        }
        let rows: Vec<Vec<String>> =
            ready.iter().flat_map(|d| output_rows(&d.service.name, &d.outputs(), show_secrets)).collect();
        crate::outln!();
        crate::out!("{}", table::render(&["SERVICE", "OUTPUT", "VALUE"], &rows));
    }
}

/// Where a substitute answers: `127.0.0.1:<port>`, or `<service>.<namespace>.svc:<port>`
/// in the cluster.
fn endpoint(desired: &substitutes::Desired) -> String {
    let host = desired.values.get("host").map(String::as_str).unwrap_or("127.0.0.1");
    format!("{host}:{}", desired.main_port())
}

/// `127.0.0.1:5000 (plain HTTP)`, or both addresses when the cluster pulls under another name.
fn describe_registry(registry: &Registry) -> String {
    let mut text = registry.host.clone();
    if registry::is_loopback(&registry.host) {
        text.push_str(" (plain HTTP)");
    }
    if registry.from_cluster != registry.host {
        text.push_str(&format!("; the cluster pulls from {}", registry.from_cluster));
    }
    text
}

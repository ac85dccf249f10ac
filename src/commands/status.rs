//! `devenv status`: each substitute's container, health and endpoint, the cluster and the
//! Flux objects; it fails when something a created environment runs is not healthy.

use super::{Context, output_rows, outputs_json};
use crate::cli::StatusArgs;
use crate::config;
use crate::config::profile::Provider;
use crate::errors::Error;
use crate::flux;
use crate::naming;
use crate::providers;
use crate::state::Store;
use crate::substitutes::{self, probe};
use crate::ui::{self, ReporterExt, table};

pub async fn run(ctx: &Context, args: &StatusArgs) -> Result<(), Error> {
    let config = config::load(&ctx.selection, &ctx.cwd)?;
    let store = Store::for_env(&config.env)?;
    let state = store.load()?;
    let runtime = substitutes::runtime::for_config(&config);
    // The cluster the environment recorded; else, for a cluster devenv does not create, the
    // profile's.
    let recorded = state.as_ref().and_then(|s| s.cluster.as_ref());
    let provider = match providers::for_record(recorded, store.dir()) {
        Some(provider) => Some(provider),
        None if config.profile.cluster.provider == Provider::Existing => providers::for_config(&config, store.dir())?,
        None => None,
    };
    let cluster = match &provider {
        Some(provider) => provider.info()?,
        None => None,
    };
    let cluster_status = match (&provider, &cluster) {
        (Some(provider), Some(info)) => Some(provider.status(info).await?),
        _ => None,
    };
    let processes = cluster_status.as_ref().map(|s| s.processes.clone()).unwrap_or_default();
    // The Flux objects of the environment, when its cluster answers.
    let mut flux_objects = None;
    if let (Some(provider), Some(info), Some(health)) = (&provider, &cluster, &cluster_status)
        && health.healthy
        && let Ok(client) = provider.client(info).await
    {
        match flux::wait::snapshot(&client, &crate::state::FluxPlacement::for_config(&config)).await {
            Ok(objects) => flux_objects = Some(objects),
            Err(error) => ctx.reporter().warning(&format!("cannot read the Flux objects: {error}")),
        }
    }
    // In-cluster substitutes are unknown while the cluster does not answer; Docker's absence
    // is an error, as before.
    let reachable = config.services.is_empty()
        || match runtime.check().await {
            Ok(_) => true,
            Err(error) if runtime.in_cluster() => {
                ctx.reporter().warning(&error.to_string());
                false
            }
            Err(error) => return Err(error.into()),
        };
    let in_cluster = runtime.in_cluster();

    // What a created environment should run but does not, for the exit code.
    let mut problems = Vec::new();
    if let Some(health) = cluster_status.as_ref().filter(|h| !h.healthy) {
        problems.push(format!("the cluster is not healthy: {}", health.detail));
    }
    for object in flux_objects.iter().flatten().filter(|o| !o.ready) {
        problems.push(format!("{} is not Ready", object.object));
    }
    let mut services = Vec::new();
    let mut rows = Vec::new();
    let mut output_table = Vec::new();
    for service in &config.services {
        let container_name = naming::container_name(&config.env, &service.name);
        let container = if reachable { runtime.inspect(&config.env, service).await? } else { None };
        let remembered = state.as_ref().and_then(|s| s.services.get(&service.name));
        let port = match in_cluster {
            true => service.substitute.ports.get(&service.substitute.main_port).copied(),
            false => remembered.and_then(|r| r.host_ports.get(&service.substitute.main_port)).copied(),
        };
        let values = remembered.map(|r| runtime.host_values(&config.env, service, r));
        let (state_word, health) = match (&container, port, &values) {
            _ if !reachable => ("unknown".to_string(), "-".to_string()),
            (None, ..) => ("absent".to_string(), "-".to_string()),
            // The kubelet's readiness probe has answered for it.
            (Some(c), ..) if in_cluster && c.running => ("running".to_string(), "ready".to_string()),
            (Some(c), Some(port), Some(values)) if c.running => {
                match probe::check_once(&service.substitute.probe, port, values).await {
                    Ok(()) => ("running".to_string(), "ready".to_string()),
                    Err(error) => ("running".to_string(), format!("not ready: {error}")),
                }
            }
            (Some(c), ..) => (c.state.clone(), "-".to_string()),
        };
        if state.is_some() && health != "ready" {
            problems.push(match health.as_str() {
                "-" => format!("`{}` is {state_word}", service.name),
                _ => format!("`{}` is {health}", service.name),
            });
        }
        // This machine does not reach in-cluster substitutes; their address is the pods'.
        let endpoint = match (in_cluster, &values, port) {
            (true, Some(values), Some(port)) => format!("{}:{port} (in the cluster)", values["host"]),
            (false, _, Some(port)) => format!("127.0.0.1:{port}"),
            _ => "-".to_string(),
        };
        let memory = container.as_ref().and_then(|c| c.memory);
        let memory_text = memory
            .as_ref()
            .map(|m| match m.limit_bytes {
                Some(limit) => format!("{} / {} MiB", m.used_bytes >> 20, limit >> 20),
                None => format!("{} MiB", m.used_bytes >> 20),
            })
            .unwrap_or_else(|| "-".to_string());
        let outputs = values.as_ref().map(|v| substitutes::render_outputs(service, v)).unwrap_or_default();
        rows.push(vec![
            service.name.clone(),
            service.kind.clone(),
            state_word.clone(),
            health.clone(),
            endpoint.clone(),
            memory_text,
        ]);
        output_table.extend(output_rows(&service.name, &outputs, args.show_secrets));
        services.push(serde_json::json!({
            "name": service.name,
            "kind": service.kind,
            "container": container_name,
            "state": state_word,
            "health": health,
            "memory": memory,
            "endpoint": (endpoint != "-").then(|| endpoint.clone()),
            "inCluster": in_cluster,
            "outputs": outputs_json(&outputs, args.show_secrets),
        }));
    }

    if ctx.json() {
        ui::print_result(&serde_json::json!({
            "env": config.env,
            "profile": config.profile_name,
            "created": state.is_some(),
            "cluster": cluster,
            "processes": processes,
            "flux": flux_objects,
            "services": services,
            "healthy": problems.is_empty(),
        }));
        return Ok(healthy(&config.env, problems)?);
    }
    crate::outln!("Environment `{}` (profile `{}`)", config.env, config.profile_name);
    if state.is_none() {
        crate::outln!("Not created yet; `devenv up` creates it.");
    }
    if let Some(cluster) = &cluster {
        crate::outln!(
            "\nCluster ({}): {} — export KUBECONFIG={}",
            cluster.provider.as_str(),
            cluster.api_server,
            cluster.kubeconfig.display()
        );
        if let Some(health) = cluster_status.as_ref().filter(|_| processes.is_empty()) {
            crate::outln!("  {}", health.detail);
        }
    }
    if !processes.is_empty() {
        let rows: Vec<Vec<String>> = processes
            .iter()
            .map(|p| {
                vec![
                    p.name.clone(),
                    p.pid.map(|pid| pid.to_string()).unwrap_or_else(|| "-".into()),
                    p.port.map(|port| port.to_string()).unwrap_or_else(|| "-".into()),
                    p.detail.clone(),
                    p.rss_bytes.map(|b| format!("{} MiB", b >> 20)).unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        crate::out!("{}", table::render(&["PROCESS", "PID", "PORT", "HEALTH", "MEMORY"], &rows));
    }
    match &flux_objects {
        Some(objects) if objects.is_empty() => crate::outln!("\nFlux: nothing applied yet; `devenv up` applies it."),
        Some(objects) => {
            let ready = objects.iter().filter(|o| o.ready).count();
            crate::outln!("\nFlux: {ready} of {} object(s) Ready", objects.len());
            crate::out!("{}", flux::wait::render_tree(objects));
            for object in objects.iter().filter(|o| !o.ready) {
                crate::outln!("  {}: {}", object.object, object.message);
                for cause in &object.causes {
                    crate::outln!("    {cause}");
                }
            }
        }
        None => {}
    }
    if !rows.is_empty() {
        crate::outln!();
        crate::out!("{}", table::render(&["SERVICE", "KIND", "STATE", "HEALTH", "ENDPOINT", "MEMORY"], &rows));
    }
    if !output_table.is_empty() {
        crate::outln!();
        crate::out!("{}", table::render(&["SERVICE", "OUTPUT", "VALUE"], &output_table));
    }
    Ok(healthy(&config.env, problems)?)
}

fn healthy(env: &str, problems: Vec<String>) -> Result<(), super::Error> {
    match problems.is_empty() {
        true => Ok(()),
        false => Err(super::Error::Unhealthy { env: env.to_string(), problems }),
    }
}

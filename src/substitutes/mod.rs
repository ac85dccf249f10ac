//! Containers that stand in for managed services: what each should be (from the catalogue,
//! the service's settings and the remembered state), making it so, and waiting until it
//! answers as the application will use it.

pub mod cluster;
pub mod contents;
pub mod forward;
pub mod probe;
pub mod resources;
pub mod runtime;

pub use runtime::SubstituteRuntime;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::config::{self, Config, Service};
use crate::docker::{self, ContainerInfo, ContainerSpec, Docker};
use crate::naming::{self, LABEL_ENV, LABEL_MANAGED_BY, LABEL_SERVICE, LABEL_SPEC_HASH, MANAGED_BY};
use crate::ports::{self, Choice};
use crate::state::{self, ServiceState, State};
use crate::ui::{Reporter, ReporterExt, Status};

/// An HTTP client for the substitutes' APIs on 127.0.0.1 (probes, resources): no proxy, and
/// every request within `timeout`.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, String> {
    crate::init_tls();
    reqwest::Client::builder().no_proxy().timeout(timeout).build().map_err(|e| e.to_string())
}

/// How long a container gets to stop before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot publish `{service}` on 127.0.0.1")]
    Port {
        service: String,
        #[source]
        source: ports::Error,
    },
    #[error(
        "the data volume `{volume}` of `{service}` exists, but devenv no longer has the credentials it was set up with"
    )]
    CredentialsLost { service: String, volume: String },
    #[error("`{service}` did not become ready within {}s (waiting for {waiting_for})", waited.as_secs())]
    NotReady { service: String, waiting_for: String, last_error: String, waited: Duration },
    #[error("`{service}` stopped while starting (container `{container}`, exit code {exit_code})")]
    Exited { service: String, container: String, exit_code: i64, logs: String },
    #[error(transparent)]
    Docker(#[from] docker::Error),
    #[error("cannot {operation} the substitutes in namespace `{namespace}`")]
    Cluster {
        operation: &'static str,
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("{object} exists and devenv did not make it for `{env}`")]
    NotOurs { object: String, env: String },
    #[error("the substitutes of `{env}` run in its cluster, which cannot be reached: {why}")]
    NoCluster { env: String, why: String },
}

/// What one service's container should be.
#[derive(Debug, Clone)]
pub struct Desired {
    pub service: Service,
    pub spec: ContainerSpec,
    pub ports: BTreeMap<String, Choice>,
    /// Template values as seen from this machine (host 127.0.0.1, published ports).
    pub values: BTreeMap<String, String>,
    /// The values of the service's declared secrets and parameters, by name.
    pub contents: BTreeMap<String, contents::Content>,
}

/// What one service's container is.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub container: Option<ContainerInfo>,
    pub volume_exists: bool,
    /// Generated credentials kept beside the data (in-cluster substitutes keep them in a
    /// Secret of their namespace), by the catalogue's secret names.
    pub credentials: BTreeMap<String, String>,
}

/// A rendered output of a substitute.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputValue {
    pub name: String,
    pub value: String,
    pub secret: bool,
}

impl Desired {
    pub fn main_port(&self) -> u16 {
        self.ports[&self.service.substitute.main_port].port()
    }

    pub fn outputs(&self) -> Vec<OutputValue> {
        render_outputs(&self.service, &self.values)
    }
}

/// The kind's outputs, then `<resource>.<output>` for each of the service's resources.
pub fn render_outputs(service: &Service, values: &BTreeMap<String, String>) -> Vec<OutputValue> {
    let render = |name: String, output: &config::catalogue::Output, values: &BTreeMap<String, String>| OutputValue {
        name,
        value: config::template::render(output.template(), values),
        secret: output.is_secret(),
    };
    let mut outputs: Vec<OutputValue> =
        service.substitute.outputs.iter().map(|(name, output)| render(name.clone(), output, values)).collect();
    if let Some(per_resource) = &service.substitute.resources {
        for resource in &service.resources {
            let mut values = values.clone();
            values.insert("resource".into(), resource.clone());
            outputs.extend(
                per_resource.outputs.iter().map(|(name, output)| render(format!("{resource}.{name}"), output, &values)),
            );
        }
    }
    outputs
}

/// One output by the name `keys:` uses (`host`, or `orders.url` for a resource), rendered.
pub fn render_output(service: &Service, values: &BTreeMap<String, String>, name: &str) -> Option<OutputValue> {
    render_outputs(service, values).into_iter().find(|output| output.name == name)
}

/// Template values for a service as seen from this machine.
pub fn host_values(env: &str, service: &Service, remembered: &ServiceState) -> BTreeMap<String, String> {
    let mut values = service.params.clone();
    values.extend(remembered.secrets.clone());
    values.insert("service".into(), service.name.clone());
    values.insert("env".into(), env.to_string());
    values.insert("resources".into(), service.resources.join(","));
    values.insert("host".into(), ports::LOOPBACK.to_string());
    for (name, port) in &remembered.host_ports {
        values.insert(format!("port.{name}"), port.to_string());
    }
    if let Some(main) = remembered.host_ports.get(&service.substitute.main_port) {
        values.insert("port".into(), main.to_string());
    }
    values
}

/// Labels that mark an environment's objects as devenv's.
pub fn env_labels(env: &str) -> [(&'static str, String); 2] {
    [(LABEL_MANAGED_BY, MANAGED_BY.to_string()), (LABEL_ENV, env.to_string())]
}

/// Reads what exists for each configured service, and any container of the environment whose
/// service is gone from devenv.yaml (returned as orphans).
pub async fn observe(docker: &Docker, config: &Config) -> Result<(BTreeMap<String, Observed>, Vec<String>), Error> {
    let labels = env_labels(&config.env);
    let label_refs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let volumes = docker.volumes_with_labels(&label_refs).await?;
    let mut observed = BTreeMap::new();
    for service in &config.services {
        let container = docker.inspect_container(&naming::container_name(&config.env, &service.name)).await?;
        let volume_exists = volumes.contains(&naming::volume_name(&config.env, &service.name));
        observed.insert(service.name.clone(), Observed { container, volume_exists, credentials: BTreeMap::new() });
    }
    let expected: Vec<String> = config.services.iter().map(|s| naming::container_name(&config.env, &s.name)).collect();
    // Only substitutes (they carry a service label) can be orphans; the environment's other
    // containers, such as a kind cluster's registry, belong to its provider.
    let mut substitutes = label_refs.clone();
    substitutes.push((LABEL_SERVICE, ""));
    let orphans = docker
        .containers_with_labels(&substitutes)
        .await?
        .into_iter()
        .filter(|name| !expected.contains(name))
        .collect();
    Ok((observed, orphans))
}

/// Decides every service's container: remembered or new credentials and ports. A new port is
/// none of `reserved` (the ports other environments remember). Updates `state`; the caller
/// saves it before creating anything.
pub fn resolve(
    config: &Config,
    state: &mut State,
    observed: &BTreeMap<String, Observed>,
    reserved: &BTreeSet<u16>,
) -> Result<Vec<Desired>, Error> {
    let memory = config.profile.substitutes.memory_bytes;
    // In-cluster substitutes publish nothing on this machine: no host ports are chosen, and
    // their values are the addresses pods use.
    let in_cluster = config.profile.substitutes.runtime == config::profile::SubstituteRuntime::Cluster;
    let namespace = cluster::namespace_for(config);
    let mut taken: Vec<u16> = reserved.iter().copied().collect();
    let mut desired = Vec::new();
    for service in &config.services {
        let substitute = &service.substitute;
        let remembered = state.services.entry(service.name.clone()).or_default();
        remembered.kind = service.kind.clone();
        // Credentials kept beside the data are the ones it was initialised with, whatever
        // this machine remembers (another machine may have made it).
        if let Some(found) = observed.get(&service.name).map(|o| &o.credentials).filter(|c| !c.is_empty()) {
            remembered.secrets.extend(found.clone());
        }
        // A volume keeps the credentials it was initialised with; new ones would never work
        // and the probe would only time out.
        let volume_exists = observed.get(&service.name).is_some_and(|o| o.volume_exists);
        if volume_exists && substitute.secrets_in_volume && remembered.secrets.is_empty() {
            return Err(Error::CredentialsLost {
                service: service.name.clone(),
                volume: naming::volume_name(&config.env, &service.name),
            });
        }
        for secret in &substitute.secrets {
            remembered.secrets.entry(secret.clone()).or_insert_with(state::generate_secret);
        }
        let ours = observed.get(&service.name).and_then(|o| o.container.as_ref());
        let mut choices = BTreeMap::new();
        for (name, container_port) in &substitute.ports {
            if in_cluster {
                choices.insert(name.clone(), Choice::Pinned(*container_port));
                continue;
            }
            let pinned = if *name == substitute.main_port { service.port } else { None };
            let held = ours.and_then(|c| c.ports.get(container_port).copied());
            let choice = ports::choose(pinned, remembered.host_ports.get(name).copied(), held, ports::is_free, || {
                ports::pick_free(&taken)
            })
            .map_err(|source| Error::Port { service: service.name.clone(), source })?;
            taken.push(choice.port());
            remembered.host_ports.insert(name.clone(), choice.port());
            choices.insert(name.clone(), choice);
        }
        let values = if in_cluster {
            cluster::pod_values(&config.env, &namespace, service, remembered)
        } else {
            host_values(&config.env, service, remembered)
        };
        let render = |t: &String| config::template::render(t, &values);
        let mut spec = ContainerSpec {
            name: naming::container_name(&config.env, &service.name),
            image: service.image.clone(),
            env: substitute.env.iter().map(|(k, v)| (k.clone(), render(v))).collect(),
            command: substitute.command.as_ref().map(|c| c.iter().map(render).collect()),
            labels: BTreeMap::from([
                (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
                (LABEL_ENV.to_string(), config.env.clone()),
                (LABEL_SERVICE.to_string(), service.name.clone()),
            ]),
            ports: if in_cluster {
                BTreeMap::new()
            } else {
                (substitute.ports.iter())
                    .map(|(name, container_port)| (*container_port, choices[name].port()))
                    .collect()
            },
            volume: substitute
                .data_path
                .as_ref()
                .map(|path| (naming::volume_name(&config.env, &service.name), path.clone())),
            memory_bytes: memory,
            network: if in_cluster { None } else { crate::providers::pod_network(config) },
        };
        let hash = spec_hash(&spec);
        spec.labels.insert(LABEL_SPEC_HASH.to_string(), hash);
        desired.push(Desired { service: service.clone(), spec, ports: choices, values, contents: BTreeMap::new() });
    }
    // Secrets and parameters read other services' outputs, so they are rendered once every
    // service's credentials and ports are decided.
    for one in &mut desired {
        let remembered = state.services.entry(one.service.name.clone()).or_default();
        remembered.generated.retain(|name, _| one.service.declared.contains_key(name));
        for (name, declared) in &one.service.declared {
            if declared.generate.is_some() {
                remembered.generated.entry(name.clone()).or_insert_with(state::generate_secret);
            }
        }
    }
    let references = contents::references(config, state);
    for one in &mut desired {
        let generated = &state.services[&one.service.name].generated;
        one.contents = contents::contents(&one.service, &references, generated);
    }
    Ok(desired)
}

/// A short digest of everything that shapes a container (before the hash label is added).
pub fn spec_hash(spec: &ContainerSpec) -> String {
    let bytes = serde_json::to_vec(spec).expect("spec serialises");
    let digest = Sha256::digest(&bytes);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// What to do with one service's container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Create,
    Recreate,
    Start,
    Keep,
}

/// Brings one container to its desired state, then waits until it answers.
pub async fn ensure(docker: &Docker, desired: &Desired, action: Action, reporter: &dyn Reporter) -> Result<(), Error> {
    let step = format!("substitute/{}", desired.service.name);
    let started = Instant::now();
    let name = &desired.spec.name;
    let result = async {
        match action {
            Action::Keep => reporter.started(&step, "checking"),
            Action::Start => {
                reporter.started(&step, "starting the stopped container");
                docker.start_container(name).await?;
            }
            Action::Create | Action::Recreate => {
                reporter.started(
                    &step,
                    &format!(
                        "{} {}",
                        if action == Action::Create { "creating" } else { "recreating" },
                        desired.spec.image
                    ),
                );
                let progress =
                    |line: &str| reporter.progress(&step, &format!("pulling {}: {line}", desired.spec.image));
                docker.ensure_image(&desired.spec.image, &progress).await?;
                if action == Action::Recreate {
                    docker.remove_container(name, STOP_GRACE).await?;
                }
                if let Some((volume, _)) = &desired.spec.volume {
                    let mut labels = desired.spec.labels.clone();
                    labels.remove(LABEL_SPEC_HASH);
                    docker.ensure_volume(volume, &labels).await?;
                }
                docker.create_container(&desired.spec).await?;
                if let Err(error) = docker.start_container(name).await {
                    // A container that never ran holds nothing worth keeping.
                    let _ = docker.remove_container(name, STOP_GRACE).await;
                    return Err(error.into());
                }
            }
        }
        wait_ready(docker, desired, reporter, &step).await
    }
    .await;
    match &result {
        Ok(()) => {
            let status = if action == Action::Keep { Status::Unchanged } else { Status::Ok };
            let message = format!("on 127.0.0.1:{}", desired.main_port());
            reporter.finished(&step, status, &message, started.elapsed());
        }
        Err(error) => reporter.finished(&step, Status::Failed, &error.to_string(), started.elapsed()),
    }
    result
}

/// Polls the catalogue's probe until it passes, the container stops, or the deadline passes;
/// then makes the service's resources (buckets, queues …) within the same deadline.
pub async fn wait_ready(docker: &Docker, desired: &Desired, reporter: &dyn Reporter, step: &str) -> Result<(), Error> {
    let probe = &desired.service.substitute.probe;
    let deadline = desired.service.substitute.probe_timeout;
    let port = desired.main_port();
    let waiting_for = probe::describe(probe, port);
    reporter.progress(step, &format!("waiting for {waiting_for}"));
    let started = Instant::now();
    wait_probe(docker, desired, waiting_for, started, deadline).await?;
    ensure_resources(desired, reporter, step, started, deadline).await
}

async fn wait_probe(
    docker: &Docker,
    desired: &Desired,
    waiting_for: String,
    started: Instant,
    deadline: Duration,
) -> Result<(), Error> {
    let probe = &desired.service.substitute.probe;
    let port = desired.main_port();
    loop {
        let Err(last_error) = probe::check_once(probe, port, &desired.values).await else {
            return Ok(());
        };
        if let Some(info) = docker.inspect_container(&desired.spec.name).await?
            && !info.running
        {
            return Err(Error::Exited {
                service: desired.service.name.clone(),
                container: desired.spec.name.clone(),
                exit_code: info.exit_code.unwrap_or(-1),
                logs: docker.logs_tail(&desired.spec.name, 20).await,
            });
        }
        if started.elapsed() >= deadline {
            return Err(Error::NotReady {
                service: desired.service.name.clone(),
                waiting_for,
                last_error,
                waited: deadline,
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Makes sure each resource the service lists exists, retrying until the deadline.
pub(super) async fn ensure_resources(
    desired: &Desired,
    reporter: &dyn Reporter,
    step: &str,
    started: Instant,
    deadline: Duration,
) -> Result<(), Error> {
    let Some(catalogue) = &desired.service.substitute.resources else {
        return Ok(());
    };
    for name in &desired.service.resources {
        let what = resources::describe(&catalogue.create, name, &desired.values);
        loop {
            let left = deadline.saturating_sub(started.elapsed()).max(Duration::from_secs(1));
            let attempt = left.min(probe::ATTEMPT_DEADLINE);
            let content = desired.contents.get(name);
            match resources::ensure(&catalogue.create, name, content, &desired.values, attempt).await {
                Ok(outcome) => {
                    reporter.progress(step, &format!("{} `{name}` {}", catalogue.create.noun(), outcome.word()));
                    break;
                }
                Err(last_error) if started.elapsed() >= deadline => {
                    return Err(Error::NotReady {
                        service: desired.service.name.clone(),
                        waiting_for: what,
                        last_error,
                        waited: deadline,
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
    Ok(())
}

/// What `down` removed.
#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Removed {
    pub containers: Vec<String>,
    pub volumes: Vec<String>,
}

/// Removes every container of the environment, found by label, and with `purge` its volumes.
pub async fn remove_all(docker: &Docker, env: &str, purge: bool, reporter: &dyn Reporter) -> Result<Removed, Error> {
    let labels = env_labels(env);
    let label_refs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut removed = Removed::default();
    for name in docker.containers_with_labels(&label_refs).await? {
        let step = format!("container/{name}");
        let started = Instant::now();
        reporter.started(&step, "stopping and removing");
        docker.remove_container(&name, STOP_GRACE).await?;
        reporter.finished(&step, Status::Ok, "removed", started.elapsed());
        removed.containers.push(name);
    }
    if purge {
        for name in docker.volumes_with_labels(&label_refs).await? {
            docker.remove_volume(&name).await?;
            reporter.finished(&format!("volume/{name}"), Status::Ok, "removed", Duration::ZERO);
            removed.volumes.push(name);
        }
    }
    Ok(removed)
}

//! Substitutes as Kubernetes objects in the environment's namespace, for clusters whose pods
//! run (kind, k3d, an existing cluster). Per service: a Secret with the rendered environment
//! (it carries the generated passwords), a StatefulSet of one pod that reads it with
//! `envFrom`, and a ClusterIP Service with the catalogue's named ports. Nothing runs on this
//! machine, so a CI job can bring up a preview namespace in a shared cluster.
//!
//! The objects are found by their labels and names, never by anything kept here: the state
//! file records only the namespace, so `down` finds them without devenv.yaml.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Event, Namespace, PersistentVolumeClaim, Pod, Secret, Service as KubeService};
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::runtime::{Instance, SubstituteRuntime};
use super::{Action, Desired, Error, Observed, Removed};
use crate::config::catalogue::Probe;
use crate::config::{self, Config, Service};
use crate::docker::{ContainerInfo, LogChunk, LogStream};
use crate::kube::FIELD_MANAGER;
use crate::naming::{LABEL_ENV, LABEL_MANAGED_BY, LABEL_SERVICE, LABEL_SPEC_HASH, MANAGED_BY};
use crate::state::{ServiceState, Store};
use crate::ui::{Reporter, ReporterExt, Status};

/// The size of each data volume; the catalogue does not say how much a service stores.
pub const VOLUME_SIZE: &str = "1Gi";

/// The name of the StatefulSet's volume claim template, so its claims are `data-<service>-0`.
const DATA_VOLUME: &str = "data";

/// The namespace an environment's in-cluster substitutes live in: its own when it shares
/// the cluster, else `devenv-<env>`.
pub fn namespace_for(config: &Config) -> String {
    config.environment_namespace().unwrap_or_else(|| crate::naming::env_scoped(&config.env))
}

/// The Secret holding one service's rendered environment.
pub fn secret_name(service: &str) -> String {
    format!("{service}-substitute-env")
}

/// The Secret holding one service's generated credentials, by the catalogue's secret names:
/// a preview made from another machine (a CI runner) finds them beside the data.
pub fn credentials_name(service: &str) -> String {
    format!("{service}-substitute-credentials")
}

/// The claim the StatefulSet makes for its pod's data.
pub fn claim_name(service: &str) -> String {
    format!("{DATA_VOLUME}-{service}-0")
}

/// Template values of a service as pods reach it: the Service's DNS name in the namespace,
/// and the container ports (a ClusterIP Service exposes them as they are).
pub fn pod_values(
    env: &str,
    namespace: &str,
    service: &Service,
    remembered: &ServiceState,
) -> BTreeMap<String, String> {
    let mut values = super::host_values(env, service, remembered);
    values.insert("host".into(), format!("{}.{namespace}.svc", service.name));
    for (name, port) in &service.substitute.ports {
        values.insert(format!("port.{name}"), port.to_string());
    }
    values.insert("port".into(), service.substitute.ports[&service.substitute.main_port].to_string());
    values
}

/// StatefulSets, Services and Secrets in the environment's namespace, reached through the
/// cluster the environment recorded. The client is made on first use: `up` records the
/// cluster before any substitute is touched.
pub struct ClusterRuntime {
    env: String,
    namespace: String,
    client: OnceCell<kube::Client>,
}

impl ClusterRuntime {
    pub fn new(env: &str, namespace: &str) -> Self {
        ClusterRuntime { env: env.to_string(), namespace: namespace.to_string(), client: OnceCell::new() }
    }

    pub fn for_config(config: &Config) -> Self {
        Self::new(&config.env, &namespace_for(config))
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    async fn client(&self) -> Result<&kube::Client, Error> {
        self.client.get_or_try_init(|| connect(&self.env)).await
    }

    fn api<K>(&self, client: &kube::Client) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(client.clone(), &self.namespace)
    }

    /// The labels every object of the environment carries, as a selector.
    fn env_selector(&self) -> String {
        crate::naming::env_selector(&self.env)
    }

    /// Creates the namespace, labelled as devenv's, unless it exists (whoever made it).
    async fn ensure_namespace(&self, client: &kube::Client) -> Result<(), Error> {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let existing = namespaces.get_opt(&self.namespace).await.map_err(|source| self.failed("read", source))?;
        if existing.is_some() {
            return Ok(());
        }
        let mut object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}});
        crate::kube::label(&mut object, &self.env);
        namespaces
            .patch(&self.namespace, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&object))
            .await
            .map_err(|source| self.failed("create", source))?;
        Ok(())
    }

    fn failed(&self, operation: &'static str, source: kube::Error) -> Error {
        Error::Cluster { operation, namespace: self.namespace.clone(), source }
    }

    /// Fails when an object of that name exists in the namespace without the environment's
    /// label: in a shared namespace it is someone else's, and apply would take it over.
    async fn check_ours<K>(&self, client: &kube::Client, kind: &str, name: &str) -> Result<(), Error>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        let found = self.api::<K>(client).get_opt(name).await.map_err(|source| self.failed("read", source))?;
        match found {
            Some(object) if object.meta().labels.as_ref().and_then(|l| l.get(LABEL_ENV)) != Some(&self.env) => {
                Err(Error::NotOurs { object: format!("{kind}/{}/{name}", self.namespace), env: self.env.clone() })
            }
            _ => Ok(()),
        }
    }

    /// Applies the Secret, the Service and the StatefulSet of one service.
    async fn apply(&self, client: &kube::Client, desired: &Desired) -> Result<(), Error> {
        let name = &desired.service.name;
        self.check_ours::<Secret>(client, "Secret", &secret_name(name)).await?;
        self.check_ours::<Secret>(client, "Secret", &credentials_name(name)).await?;
        self.check_ours::<KubeService>(client, "Service", name).await?;
        self.check_ours::<StatefulSet>(client, "StatefulSet", name).await?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let objects = objects(&self.namespace, desired);
        self.api::<Secret>(client)
            .patch(&secret_name(name), &params, &Patch::Apply(&objects.secret))
            .await
            .map_err(|source| self.failed("apply the Secret of", source))?;
        self.api::<Secret>(client)
            .patch(&credentials_name(name), &params, &Patch::Apply(&objects.credentials))
            .await
            .map_err(|source| self.failed("apply the credentials Secret of", source))?;
        self.api::<KubeService>(client)
            .patch(name, &params, &Patch::Apply(&objects.service))
            .await
            .map_err(|source| self.failed("apply the Service of", source))?;
        let statefulsets = self.api::<StatefulSet>(client);
        match statefulsets.patch(name, &params, &Patch::Apply(&objects.stateful_set)).await {
            Ok(_) => Ok(()),
            // A StatefulSet's volume claims cannot change in place: it is made again, and its
            // claim (the data) stays.
            Err(kube::Error::Api(status)) if status.code == 422 => {
                self.delete_named::<StatefulSet>(client, name).await?;
                self.wait_gone::<StatefulSet>(client, name).await?;
                statefulsets
                    .patch(name, &params, &Patch::Apply(&objects.stateful_set))
                    .await
                    .map(drop)
                    .map_err(|source| self.failed("apply the StatefulSet of", source))
            }
            Err(source) => Err(self.failed("apply the StatefulSet of", source)),
        }
    }

    async fn delete_named<K>(&self, client: &kube::Client, name: &str) -> Result<bool, Error>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        match self.api::<K>(client).delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
            Err(source) => Err(self.failed("delete", source)),
        }
    }

    async fn wait_gone<K>(&self, client: &kube::Client, name: &str) -> Result<(), Error>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + 'static,
        <K as kube::Resource>::DynamicType: Default,
    {
        let api = self.api::<K>(client);
        crate::kube::until_gone(&api, name, Duration::from_secs(60))
            .await
            .map(drop)
            .map_err(|source| self.failed("read", source))
    }

    /// Removes one service's StatefulSet, Service and environment Secret; its claim (the
    /// data) and the credentials it was initialised with stay, unless `purge`.
    async fn remove_service(&self, client: &kube::Client, name: &str) -> Result<bool, Error> {
        let existed = self.delete_named::<StatefulSet>(client, name).await?;
        self.delete_named::<KubeService>(client, name).await?;
        self.delete_named::<Secret>(client, &secret_name(name)).await?;
        Ok(existed)
    }

    /// The credentials kept beside a service's data, if any.
    async fn credentials(&self, client: &kube::Client, name: &str) -> Result<BTreeMap<String, String>, Error> {
        let found = self.api::<Secret>(client).get_opt(&credentials_name(name)).await;
        let secret = found.map_err(|source| self.failed("read", source))?;
        let ours = secret.filter(|s| s.metadata.labels.as_ref().and_then(|l| l.get(LABEL_ENV)) == Some(&self.env));
        Ok((ours.and_then(|s| s.data).unwrap_or_default().into_iter())
            .filter_map(|(key, value)| String::from_utf8(value.0).ok().map(|value| (key, value)))
            .collect())
    }

    /// Waits until the service's pod runs the desired spec and is Ready, or the probe's
    /// deadline passes; then says what the pod was waiting for.
    async fn wait_ready(
        &self,
        client: &kube::Client,
        desired: &Desired,
        reporter: &dyn Reporter,
        step: &str,
    ) -> Result<(), Error> {
        let probe = &desired.service.substitute.probe;
        let deadline = desired.service.substitute.probe_timeout;
        let pod_name = format!("{}-0", desired.service.name);
        let hash = desired.spec.labels.get(LABEL_SPEC_HASH).cloned().unwrap_or_default();
        let waiting_for = format!("pod `{pod_name}` Ready ({})", describe_readiness(probe, desired.main_port()));
        reporter.progress(step, &format!("waiting for {waiting_for}"));
        let pods = self.api::<Pod>(client);
        let wanted = |pod: Option<&Pod>| pod.is_some_and(|pod| pod_hash(pod) == Some(hash.as_str()) && pod_ready(pod));
        if crate::kube::until(&pods, &pod_name, wanted, deadline).await.map_err(|source| self.failed("read", source))? {
            return Ok(());
        }
        let last_error = match pods.get_opt(&pod_name).await.map_err(|source| self.failed("read", source))? {
            Some(pod) => self.why_not_ready(client, &pod, &hash).await,
            None => self.why_no_pod(client, &desired.service.name).await,
        };
        Err(Error::NotReady { service: desired.service.name.clone(), waiting_for, last_error, waited: deadline })
    }

    /// Makes the service's resources (buckets, queues, secrets) from this machine, through a
    /// port-forward to its pod: the same requests as for a container, at 127.0.0.1.
    async fn ensure_resources(
        &self,
        client: &kube::Client,
        desired: &Desired,
        reporter: &dyn Reporter,
        step: &str,
    ) -> Result<(), Error> {
        if desired.service.substitute.resources.is_none() || desired.service.resources.is_empty() {
            return Ok(());
        }
        let pod = format!("{}-0", desired.service.name);
        let main_port = desired.main_port();
        reporter.progress(step, &format!("forwarding 127.0.0.1 to port {main_port} of pod `{pod}`"));
        let forward =
            super::forward::open(self.api::<Pod>(client), &pod, main_port).await.map_err(|e| Error::NotReady {
                service: desired.service.name.clone(),
                waiting_for: format!("a port-forward to pod `{pod}`"),
                last_error: e.to_string(),
                waited: Duration::ZERO,
            })?;
        let mut local = desired.clone();
        local.values.insert("host".into(), crate::ports::LOOPBACK.to_string());
        local.values.insert("port".into(), forward.port.to_string());
        local.values.insert(format!("port.{}", desired.service.substitute.main_port), forward.port.to_string());
        let deadline = desired.service.substitute.probe_timeout;
        super::ensure_resources(&local, reporter, step, Instant::now(), deadline).await
    }

    /// The pod's own account of itself, then its latest warning event.
    async fn why_not_ready(&self, client: &kube::Client, pod: &Pod, hash: &str) -> String {
        let mut reason = pod_reason(pod);
        if pod_hash(pod) != Some(hash) {
            reason = format!("the pod still runs the previous settings; {reason}");
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        match self.last_warning(client, "Pod", &name).await {
            Some(event) => format!("{reason}; last event: {event}"),
            None => reason,
        }
    }

    async fn why_no_pod(&self, client: &kube::Client, service: &str) -> String {
        match self.last_warning(client, "StatefulSet", service).await {
            Some(event) => format!("no pod yet; last event of the StatefulSet: {event}"),
            None => "no pod yet".to_string(),
        }
    }

    async fn last_warning(&self, client: &kube::Client, kind: &str, name: &str) -> Option<String> {
        let selector = format!("involvedObject.kind={kind},involvedObject.name={name},type=Warning");
        let events = self.api::<Event>(client).list(&ListParams::default().fields(&selector)).await.ok()?;
        let latest = events.items.into_iter().max_by_key(|e| e.last_timestamp.clone().map(|t| t.0))?;
        Some(format!("{}: {}", latest.reason.unwrap_or_default(), latest.message.unwrap_or_default().trim()))
    }
}

/// Makes a client for the cluster the environment recorded (or, with no readable state
/// file, the cluster its provider's files in the state directory name).
async fn connect(env: &str) -> Result<kube::Client, Error> {
    let store = Store::for_env(env).map_err(|e| Error::NoCluster { env: env.to_string(), why: e.to_string() })?;
    let dir: PathBuf = store.dir().to_path_buf();
    let recorded = store.load().ok().flatten().and_then(|state| state.cluster);
    let provider = match &recorded {
        Some(record) => crate::providers::for_record(Some(record), &dir),
        None => crate::providers::found_in(&dir),
    };
    let no_cluster = |why: String| Error::NoCluster { env: env.to_string(), why };
    let provider = provider.ok_or_else(|| no_cluster("no cluster is recorded for it".to_string()))?;
    let info = provider
        .info()
        .map_err(|e| no_cluster(e.to_string()))?
        .ok_or_else(|| no_cluster("its cluster is not running".to_string()))?;
    provider.client(&info).await.map_err(|e| no_cluster(e.to_string()))
}

/// The objects of one service, as JSON for server-side apply.
pub struct Objects {
    pub secret: Value,
    pub credentials: Value,
    pub service: Value,
    pub stateful_set: Value,
}

/// What one service's substitute is in the cluster, from the same spec the docker runtime
/// runs: image, rendered environment, command, ports, data path, memory cap, spec hash.
pub fn objects(namespace: &str, desired: &Desired) -> Objects {
    let service = &desired.service;
    let name = &service.name;
    let substitute = &service.substitute;
    let spec = &desired.spec;
    let hash = spec.labels.get(LABEL_SPEC_HASH).cloned().unwrap_or_default();
    let mut labels = spec.labels.clone();
    labels.remove(LABEL_SPEC_HASH);
    let selector = json!({LABEL_ENV: labels.get(LABEL_ENV), LABEL_SERVICE: name});
    let metadata = |object_name: &str| json!({"name": object_name, "namespace": namespace, "labels": labels});

    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(&secret_name(name)),
        "type": "Opaque",
        "stringData": spec.env,
    });

    let generated: BTreeMap<&String, Option<&String>> =
        substitute.secrets.iter().map(|secret| (secret, desired.values.get(secret))).collect();
    let credentials = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(&credentials_name(name)),
        "type": "Opaque",
        "stringData": generated,
    });

    let ports: Vec<Value> = (substitute.ports.iter())
        .map(|(port_name, port)| json!({"name": port_name, "port": port, "targetPort": port, "protocol": "TCP"}))
        .collect();
    let kube_service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(name),
        "spec": {"type": "ClusterIP", "selector": selector, "ports": ports},
    });

    let mut container = json!({
        "name": "substitute",
        "image": spec.image,
        "envFrom": [{"secretRef": {"name": secret_name(name)}}],
        "ports": (substitute.ports.iter())
            .map(|(port_name, port)| json!({"name": port_name, "containerPort": port, "protocol": "TCP"}))
            .collect::<Vec<_>>(),
        "readinessProbe": readiness_probe(&substitute.probe, &substitute.main_port, &desired.values),
    });
    // The catalogue's `command` is the arguments to the image's entrypoint, as in Docker.
    if let Some(command) = &spec.command {
        container["args"] = json!(command);
    }
    if let Some(bytes) = spec.memory_bytes {
        container["resources"] = json!({"limits": {"memory": bytes.to_string()}});
    }
    let mut stateful_set_spec = json!({
        "replicas": 1,
        "serviceName": name,
        "selector": {"matchLabels": selector},
        "template": {
            "metadata": {"labels": labels, "annotations": {LABEL_SPEC_HASH: hash}},
            "spec": {"containers": [container], "terminationGracePeriodSeconds": super::STOP_GRACE.as_secs()},
        },
    });
    if let Some(path) = &substitute.data_path {
        stateful_set_spec["template"]["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": DATA_VOLUME, "mountPath": path}]);
        stateful_set_spec["volumeClaimTemplates"] = json!([{
            "metadata": {"name": DATA_VOLUME, "labels": labels},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": VOLUME_SIZE}}},
        }]);
        // The claim outlives the StatefulSet: data survives `down` unless `--purge`.
        stateful_set_spec["persistentVolumeClaimRetentionPolicy"] =
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"});
    }
    let mut stateful_set_metadata = metadata(name);
    stateful_set_metadata["annotations"] = json!({LABEL_SPEC_HASH: hash});
    let stateful_set = json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": stateful_set_metadata,
        "spec": stateful_set_spec,
    });
    Objects { secret, credentials, service: kube_service, stateful_set }
}

/// The catalogue's probe as the kubelet runs it: an HTTP probe stays an HTTP GET; SQL and
/// Redis become a TCP check of the main port (the kubelet has no SQL or Redis client, and an
/// `exec` probe would depend on the tools of each image).
pub fn readiness_probe(probe: &Probe, main_port: &str, values: &BTreeMap<String, String>) -> Value {
    let check = match probe {
        Probe::Http { path, .. } => {
            json!({"httpGet": {"path": config::template::render(path, values), "port": main_port}})
        }
        // A signed AWS API call is beyond the kubelet too.
        Probe::Sql { .. } | Probe::Redis { .. } | Probe::AwsJson { .. } | Probe::Tcp { .. } => {
            json!({"tcpSocket": {"port": main_port}})
        }
    };
    let mut probe = check;
    probe["periodSeconds"] = json!(2);
    probe["timeoutSeconds"] = json!(2);
    probe["failureThreshold"] = json!(3);
    probe
}

fn describe_readiness(probe: &Probe, port: u16) -> String {
    match probe {
        Probe::Http { path, .. } => format!("HTTP GET {path} on port {port}"),
        _ => format!("TCP on port {port}"),
    }
}

fn pod_hash(pod: &Pod) -> Option<&str> {
    pod.metadata.annotations.as_ref()?.get(LABEL_SPEC_HASH).map(String::as_str)
}

fn pod_ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Why a pod is not Ready, in the kubelet's and the scheduler's words: `ImagePullBackOff:
/// …`, `Pending: 0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims`.
pub fn pod_reason(pod: &Pod) -> String {
    let Some(status) = &pod.status else { return "no status yet".to_string() };
    let phase = status.phase.clone().unwrap_or_else(|| "Unknown".to_string());
    for container in status.container_statuses.iter().flatten() {
        let Some(state) = &container.state else { continue };
        if let Some(waiting) = &state.waiting {
            let reason = waiting.reason.clone().unwrap_or_else(|| "Waiting".to_string());
            return match &waiting.message {
                Some(message) => format!("{reason}: {message}"),
                None => reason,
            };
        }
        if let Some(terminated) = &state.terminated {
            return format!("the container exited with code {}", terminated.exit_code);
        }
        if state.running.is_some() && !container.ready {
            return format!(
                "running, but its readiness probe does not pass yet (restarts: {})",
                container.restart_count
            );
        }
    }
    let unscheduled = (status.conditions.iter().flatten())
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .map(|c| c.message.clone().or(c.reason.clone()).unwrap_or_default());
    match unscheduled {
        Some(message) => format!("{phase}: {message}"),
        None => phase,
    }
}

/// A StatefulSet as the plan compares it with the desired spec.
fn as_container(stateful_set: &StatefulSet, pod: Option<&Pod>) -> ContainerInfo {
    let metadata = &stateful_set.metadata;
    let mut labels = metadata.labels.clone().unwrap_or_default();
    if let Some(hash) = metadata.annotations.as_ref().and_then(|a| a.get(LABEL_SPEC_HASH)) {
        labels.insert(LABEL_SPEC_HASH.to_string(), hash.clone());
    }
    let image = (stateful_set.spec.as_ref())
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let running = pod.is_some_and(pod_ready);
    let state = match pod {
        Some(pod) if pod_ready(pod) => "running".to_string(),
        Some(pod) => pod_reason(pod),
        None => "no pod".to_string(),
    };
    ContainerInfo {
        id: metadata.uid.clone().unwrap_or_default(),
        name: metadata.name.clone().unwrap_or_default(),
        image,
        running,
        state,
        exit_code: None,
        labels,
        ports: BTreeMap::new(),
    }
}

impl SubstituteRuntime for ClusterRuntime {
    fn name(&self) -> &'static str {
        "cluster"
    }

    fn in_cluster(&self) -> bool {
        true
    }

    /// This machine does not reach in-cluster substitutes: the addresses are the pods'.
    fn host_values(&self, env: &str, service: &Service, remembered: &ServiceState) -> BTreeMap<String, String> {
        self.pod_values(env, service, remembered)
    }

    fn pod_values(&self, env: &str, service: &Service, remembered: &ServiceState) -> BTreeMap<String, String> {
        pod_values(env, &self.namespace, service, remembered)
    }

    fn check(&self) -> BoxFuture<'_, Result<String, Error>> {
        Box::pin(async move {
            let client = self.client().await?;
            let version =
                client.apiserver_version().await.map_err(|source| self.failed("reach the cluster of", source))?;
            Ok(format!("Kubernetes {} (namespace `{}`)", version.git_version, self.namespace))
        })
    }

    fn data_dir(&self) -> BoxFuture<'_, Option<String>> {
        Box::pin(async { None })
    }

    fn observe<'a>(
        &'a self,
        config: &'a Config,
    ) -> BoxFuture<'a, Result<(BTreeMap<String, Observed>, Vec<String>), Error>> {
        Box::pin(async move {
            let client = self.client().await?;
            let statefulsets = self.api::<StatefulSet>(client);
            let claims = self.api::<PersistentVolumeClaim>(client);
            let pods = self.api::<Pod>(client);
            let mut observed = BTreeMap::new();
            for service in &config.services {
                let name = &service.name;
                let found = statefulsets.get_opt(name).await.map_err(|source| self.failed("read", source))?;
                // A StatefulSet of that name someone else made is not devenv's to replace.
                let ours =
                    found.filter(|s| s.metadata.labels.as_ref().and_then(|l| l.get(LABEL_ENV)) == Some(&config.env));
                let container = match &ours {
                    Some(stateful_set) => {
                        let pod =
                            pods.get_opt(&format!("{name}-0")).await.map_err(|source| self.failed("read", source))?;
                        Some(as_container(stateful_set, pod.as_ref()))
                    }
                    None => None,
                };
                let volume_exists = service.substitute.data_path.is_some()
                    && claims.get_opt(&claim_name(name)).await.map_err(|source| self.failed("read", source))?.is_some();
                let credentials = self.credentials(client, name).await?;
                observed.insert(name.clone(), Observed { container, volume_exists, credentials });
            }
            let selector = format!("{},{LABEL_SERVICE}", self.env_selector());
            let listed = match statefulsets.list(&ListParams::default().labels(&selector)).await {
                Ok(list) => list.items,
                Err(kube::Error::Api(status)) if status.code == 404 => Vec::new(),
                Err(source) => return Err(self.failed("list", source)),
            };
            let orphans = (listed.into_iter())
                .filter_map(|s| s.metadata.name)
                .filter(|name| !config.services.iter().any(|s| &s.name == name))
                .collect();
            Ok((observed, orphans))
        })
    }

    fn ensure<'a>(
        &'a self,
        desired: &'a Desired,
        action: Action,
        reporter: &'a dyn Reporter,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let step = format!("substitute/{}", desired.service.name);
            let started = Instant::now();
            let result = async {
                let client = self.client().await?;
                match action {
                    Action::Keep => reporter.started(&step, "checking"),
                    Action::Start => reporter.started(&step, "waiting for its pod"),
                    Action::Create | Action::Recreate => {
                        let verb = if action == Action::Create { "creating" } else { "updating" };
                        reporter.started(
                            &step,
                            &format!(
                                "{verb} StatefulSet/{}/{} ({})",
                                self.namespace, desired.service.name, desired.spec.image
                            ),
                        );
                        self.ensure_namespace(client).await?;
                        self.apply(client, desired).await?;
                        if action == Action::Recreate {
                            // A pod that never became Ready holds a rolling update back; the
                            // controller makes it again from the new template.
                            self.delete_named::<Pod>(client, &format!("{}-0", desired.service.name)).await?;
                        }
                    }
                }
                self.wait_ready(client, desired, reporter, &step).await?;
                self.ensure_resources(client, desired, reporter, &step).await
            }
            .await;
            match &result {
                Ok(()) => {
                    let status = if action == Action::Keep { Status::Unchanged } else { Status::Ok };
                    let at = format!(
                        "at {}.{}.svc:{} (in the cluster)",
                        desired.service.name,
                        self.namespace,
                        desired.main_port()
                    );
                    reporter.finished(&step, status, &at, started.elapsed());
                }
                Err(error) => reporter.finished(&step, Status::Failed, &error.to_string(), started.elapsed()),
            }
            result
        })
    }

    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let client = self.client().await?;
            self.remove_service(client, name).await.map(drop)
        })
    }

    fn inspect<'a>(&'a self, env: &'a str, service: &'a Service) -> BoxFuture<'a, Result<Option<Instance>, Error>> {
        Box::pin(async move {
            let client = self.client().await?;
            let found =
                self.api::<StatefulSet>(client).get_opt(&service.name).await.map_err(|s| self.failed("read", s))?;
            let Some(stateful_set) = found
                .filter(|s| s.metadata.labels.as_ref().and_then(|l| l.get(LABEL_ENV)).map(String::as_str) == Some(env))
            else {
                return Ok(None);
            };
            let pod = self
                .api::<Pod>(client)
                .get_opt(&format!("{}-0", service.name))
                .await
                .map_err(|s| self.failed("read", s))?;
            let info = as_container(&stateful_set, pod.as_ref());
            Ok(Some(Instance { running: info.running, state: info.state, ports: BTreeMap::new(), memory: None }))
        })
    }

    fn remove_all<'a>(
        &'a self,
        env: &'a str,
        purge: bool,
        reporter: &'a dyn Reporter,
    ) -> BoxFuture<'a, Result<Removed, Error>> {
        Box::pin(async move {
            let client = self.client().await?;
            let selector = format!("{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_ENV}={env},{LABEL_SERVICE}");
            let params = ListParams::default().labels(&selector);
            let mut removed = Removed::default();
            let listed = |result: Result<kube::core::ObjectList<StatefulSet>, kube::Error>| match result {
                Ok(list) => Ok(list.items),
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(Vec::new()),
                Err(source) => Err(self.failed("list", source)),
            };
            let mut names: Vec<String> = listed(self.api::<StatefulSet>(client).list(&params).await)?
                .into_iter()
                .filter_map(|s| s.metadata.name)
                .collect();
            // A Service or Secret left by an interrupted `up` goes too.
            let services = self.api::<KubeService>(client).list(&params).await.map_err(|s| self.failed("list", s))?;
            names.extend(services.items.into_iter().filter_map(|s| s.metadata.name));
            names.sort();
            names.dedup();
            for name in names {
                let step = format!("substitute/{name}");
                let started = Instant::now();
                reporter.started(&step, &format!("deleting StatefulSet, Service and Secret in `{}`", self.namespace));
                self.remove_service(client, &name).await?;
                reporter.finished(&step, Status::Ok, "removed", started.elapsed());
                removed.containers.push(format!("{}/{name}", self.namespace));
            }
            // The credentials stay with the data they unlock, and go with it.
            let secrets = self.api::<Secret>(client).list(&params).await.map_err(|s| self.failed("list", s))?;
            let leftover = secrets.items.into_iter().filter_map(|s| s.metadata.name);
            for name in leftover.filter(|name| purge || !name.ends_with(&credentials_name(""))) {
                self.delete_named::<Secret>(client, &name).await?;
            }
            if purge {
                let claims = self
                    .api::<PersistentVolumeClaim>(client)
                    .list(&params)
                    .await
                    .map_err(|s| self.failed("list", s))?;
                for name in claims.items.into_iter().filter_map(|c| c.metadata.name) {
                    self.delete_named::<PersistentVolumeClaim>(client, &name).await?;
                    reporter.finished(&format!("claim/{name}"), Status::Ok, "removed", Duration::ZERO);
                    removed.volumes.push(format!("{}/{name}", self.namespace));
                }
            }
            Ok(removed)
        })
    }

    fn logs<'a>(
        &'a self,
        _env: &'a str,
        service: &'a Service,
        follow: bool,
        since: Option<std::time::SystemTime>,
    ) -> BoxStream<'a, Result<LogChunk, Error>> {
        let pod = format!("{}-0", service.name);
        let chunks = async move {
            let client = match self.client().await {
                Ok(client) => client,
                Err(error) => return futures_util::stream::once(std::future::ready(Err(error))).boxed(),
            };
            let since_seconds =
                since.and_then(|t| t.elapsed().ok()).map(|ago| i64::try_from(ago.as_secs().max(1)).unwrap_or(i64::MAX));
            let params = LogParams { follow, since_seconds, ..LogParams::default() };
            match self.api::<Pod>(client).log_stream(&pod, &params).await {
                // The kube API merges stdout and stderr into one stream.
                Ok(reader) => reader
                    .lines()
                    .map_ok(|line| LogChunk { stream: LogStream::Stdout, bytes: format!("{line}\n").into_bytes() })
                    .map_err(|source| self.failed("read the logs of", kube::Error::ReadEvents(source)))
                    .boxed(),
                Err(source) => {
                    futures_util::stream::once(std::future::ready(Err(self.failed("read the logs of", source)))).boxed()
                }
            }
        };
        futures_util::stream::once(chunks).flatten().boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Selection;
    use crate::state::State;

    fn config(profile: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("devenv.yaml"),
            "project: shop\nflux:\n  path: clusters/local\nenvironment:\n  configMap:\n    name: env\nservices:\n  - name: orders-db\n    kind: rds-mariadb\n    keys:\n      DB_HOST: host\n      DB_PORT: port\n      DB_PASSWORD: password\n",
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join(".devenv/profiles")).unwrap();
        std::fs::write(dir.path().join(".devenv/profiles/mine.yaml"), profile).unwrap();
        let selection = Selection { repo: Some(dir.path().into()), profile: Some("mine".into()), ..Default::default() };
        config::load(&selection, dir.path()).unwrap()
    }

    #[test]
    fn a_service_becomes_a_secret_a_stateful_set_and_a_service_reached_by_its_dns_name() {
        let config = config("cluster:\n  provider: kind\nsubstitutes:\n  runtime: cluster\n  memory: 512Mi\n");
        let mut state = State::default();
        let desired = super::super::resolve(&config, &mut state, &Default::default(), &Default::default()).unwrap();
        assert!(state.services["orders-db"].host_ports.is_empty(), "nothing is published on this machine");
        let namespace = namespace_for(&config);
        assert_eq!(namespace, format!("devenv-{}", config.env));
        let desired = &desired[0];
        assert_eq!(desired.main_port(), 3306);
        assert_eq!(desired.values["host"], format!("orders-db.{namespace}.svc"));
        let objects = objects(&namespace, desired);
        let password = &state.services["orders-db"].secrets["password"];
        assert_eq!(objects.secret["stringData"]["MARIADB_PASSWORD"], password.as_str());
        assert_eq!(objects.secret["metadata"]["labels"][LABEL_SERVICE], "orders-db");
        let stateful_set = &objects.stateful_set;
        let container = &stateful_set["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["envFrom"][0]["secretRef"]["name"], "orders-db-substitute-env");
        assert_eq!(container["resources"]["limits"]["memory"], (512i64 << 20).to_string());
        assert_eq!(container["readinessProbe"]["tcpSocket"]["port"], "sql");
        assert_eq!(container["volumeMounts"][0]["mountPath"], "/var/lib/mysql");
        assert_eq!(stateful_set["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"], "1Gi");
        assert_eq!(stateful_set["metadata"]["labels"][LABEL_MANAGED_BY], "devenv");
        assert_eq!(stateful_set["metadata"]["labels"][LABEL_ENV], config.env.as_str());
        let hash = &desired.spec.labels[LABEL_SPEC_HASH];
        assert_eq!(stateful_set["metadata"]["annotations"][LABEL_SPEC_HASH], hash.as_str());
        assert_eq!(stateful_set["spec"]["template"]["metadata"]["annotations"][LABEL_SPEC_HASH], hash.as_str());
        assert!(stateful_set["metadata"]["labels"].get(LABEL_SPEC_HASH).is_none(), "the hash is an annotation");
        assert_eq!(
            objects.service["spec"]["ports"][0],
            json!({"name": "sql", "port": 3306, "targetPort": 3306, "protocol": "TCP"})
        );
        assert_eq!(claim_name("orders-db"), "data-orders-db-0");

        // The environment ConfigMap and `devenv env` both give the in-cluster address.
        let runtime = ClusterRuntime::for_config(&config);
        let map = crate::envmap::compute(&config, &state, &runtime);
        assert_eq!(map.config_map["DB_HOST"], format!("orders-db.{namespace}.svc"));
        assert_eq!(map.config_map["DB_PORT"], "3306");
        assert_eq!(crate::envmap::for_host(&config, &state, &runtime, None), map);
    }

    /// The catalogue entry runs in the cluster as it is: image, environment, a TCP readiness
    /// probe, and the addresses pods use in the environment ConfigMap.
    #[test]
    fn secrets_manager_runs_in_the_cluster_from_its_catalogue_entry() {
        let dir = tempfile::tempdir().unwrap();
        let services = "  - name: secrets\n    kind: secretsmanager\n    keys:\n      AWS_ENDPOINT_URL_SECRETS_MANAGER: endpoint\n      AWS_SECRET_ACCESS_KEY: secretAccessKey\n";
        let project = format!(
            "project: shop\nflux:\n  path: clusters/local\nenvironment:\n  configMap:\n    name: env\nservices:\n{services}"
        );
        std::fs::write(dir.path().join("devenv.yaml"), &project).unwrap();
        std::fs::create_dir_all(dir.path().join(".devenv/profiles")).unwrap();
        std::fs::write(
            dir.path().join(".devenv/profiles/mine.yaml"),
            "cluster:\n  provider: kind\nsubstitutes:\n  runtime: cluster\n",
        )
        .unwrap();
        let selection = Selection { repo: Some(dir.path().into()), profile: Some("mine".into()), ..Default::default() };
        let config = config::load(&selection, dir.path()).unwrap();
        let mut state = State::default();
        let desired = super::super::resolve(&config, &mut state, &Default::default(), &Default::default()).unwrap();
        let namespace = namespace_for(&config);
        let objects = objects(&namespace, &desired[0]);
        assert_eq!(objects.secret["stringData"]["MOTO_PORT"], "5000");
        let container = &objects.stateful_set["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "docker.io/motoserver/moto:5.2.5");
        assert_eq!(container["readinessProbe"]["tcpSocket"]["port"], "api");
        let map = crate::envmap::compute(&config, &state, &ClusterRuntime::for_config(&config));
        assert_eq!(map.config_map["AWS_ENDPOINT_URL_SECRETS_MANAGER"], format!("http://secrets.{namespace}.svc:5000"));
        assert_eq!(map.secret["AWS_SECRET_ACCESS_KEY"], state.services["secrets"].secrets["secretAccessKey"]);
    }

    #[test]
    fn a_changed_setting_changes_the_hash_the_stateful_set_carries() {
        let small = config("cluster:\n  provider: kind\nsubstitutes:\n  runtime: cluster\n  memory: 512Mi\n");
        let large = config("cluster:\n  provider: kind\nsubstitutes:\n  runtime: cluster\n  memory: 1Gi\n");
        let mut state = State::default();
        let a = super::super::resolve(&small, &mut state, &Default::default(), &Default::default()).unwrap();
        let b = super::super::resolve(&large, &mut state, &Default::default(), &Default::default()).unwrap();
        assert_ne!(a[0].spec.labels[LABEL_SPEC_HASH], b[0].spec.labels[LABEL_SPEC_HASH]);
    }

    #[test]
    fn an_http_probe_stays_http_and_the_others_become_tcp() {
        let values = BTreeMap::from([("x".to_string(), "ready".to_string())]);
        let http = Probe::Http { path: "/${x}".into(), status: vec![200], json: None, timeout: "60s".into() };
        assert_eq!(readiness_probe(&http, "api", &values)["httpGet"], json!({"path": "/ready", "port": "api"}));
        let redis = Probe::Redis { password: None, timeout: "60s".into() };
        assert_eq!(readiness_probe(&redis, "redis", &values)["tcpSocket"], json!({"port": "redis"}));
    }

    #[test]
    fn a_pending_pod_says_why() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "orders-db-0"},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims."}]},
        }))
        .unwrap();
        assert_eq!(
            pod_reason(&pod),
            "Pending: 0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims."
        );
        let pulling: Pod = serde_json::from_value(json!({
            "metadata": {"name": "orders-db-0"},
            "status": {"phase": "Pending", "containerStatuses": [{"name": "substitute", "image": "x", "imageID": "", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"x\""}}}]},
        }))
        .unwrap();
        assert_eq!(pod_reason(&pulling), "ImagePullBackOff: Back-off pulling image \"x\"");
    }
}

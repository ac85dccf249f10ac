//! Booting a sim cluster: files first, then the processes in dependency order, each one
//! waited for with a deadline that names what it waits for.
//!
//! ```text
//! etcd, registry ─> kube-apiserver ─> controller-manager, scheduler, kwok, node, CRDs
//!                                  ─> source-, kustomize-, helm-controller; node Ready
//! ```

use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use serde::Deserialize;
use serde_json::json;

use super::certs::{self, Pki};
use super::components::{
    Component, FLUX_NAMESPACE, HeldPorts, KWOK_NODE_ANNOTATION, PortsExt, Setting, kwok_config_text,
};
use super::probe::Prober;
use super::process::{self, Launch, Pid, Watchdog};
use super::{Binaries, Error, Layout, LogTail, Record, Scope, kubeconfig};
use crate::ui::{Reporter, ReporterExt, Status};

const ETCD_DEADLINE: Duration = Duration::from_secs(30);
const APISERVER_DEADLINE: Duration = Duration::from_secs(120);
const CONTROLLER_DEADLINE: Duration = Duration::from_secs(90);
const CRD_DEADLINE: Duration = Duration::from_secs(60);
const NODE_DEADLINE: Duration = Duration::from_secs(60);
const REGISTRY_DEADLINE: Duration = Duration::from_secs(30);

/// The simulated node.
pub(super) const NODE_NAME: &str = "devenv-sim-node";
const FIELD_MANAGER: &str = "devenv";
/// The default StorageClass; the controller manager provisions its volumes.
pub const STORAGE_CLASS: &str = "standard";
/// Lines of a log shown when a process fails.
const TAIL_LINES: usize = 30;
/// Groups a usable kube-apiserver serves.
const BUILT_IN_GROUPS: &[&str] = &[
    "apps",
    "batch",
    "rbac.authorization.k8s.io",
    "apiextensions.k8s.io",
    "coordination.k8s.io",
    "networking.k8s.io",
    "policy",
    "discovery.k8s.io",
];

/// The admin client configuration from a kubeconfig and context.
pub(super) async fn admin_config(kubeconfig: &Path, context: &str) -> Result<kube::Config, Error> {
    let kubeconfig_error = |source| Error::Kubeconfig { path: kubeconfig.to_path_buf(), source };
    let file = Kubeconfig::read_from(kubeconfig).map_err(kubeconfig_error)?;
    let options = KubeConfigOptions { context: Some(context.to_string()), ..KubeConfigOptions::default() };
    kube::Config::from_custom_kubeconfig(file, &options).await.map_err(kubeconfig_error)
}

fn step(component: Component) -> String {
    format!("sim/{}", component.name())
}

/// A process that was started, and when.
#[derive(Clone, Copy)]
struct Started {
    component: Component,
    pid: Pid,
    at: Instant,
}

pub(super) struct Boot<'a> {
    layout: &'a Layout,
    binaries: &'a Binaries,
    record: &'a Record,
    setting: Setting,
    held: Mutex<HeldPorts>,
    watchdog: Mutex<&'a mut Watchdog>,
    /// Every process started so far: one that dies fails the boot at once, whichever is
    /// being waited for (kube-apiserver would wait out its deadline for a killed etcd).
    started: Mutex<Vec<Started>>,
}

impl<'a> Boot<'a> {
    /// Writes certificates (kept when complete), kubeconfigs and configuration files.
    pub fn prepare(
        layout: &'a Layout,
        binaries: &'a Binaries,
        record: &'a Record,
        held: HeldPorts,
        watchdog: &'a mut Watchdog,
    ) -> Result<Self, Error> {
        let pki = Pki::new(layout.pki());
        pki.ensure()?;
        let setting = Setting {
            env: record.env.clone(),
            ports: record.ports.clone(),
            pki: pki.clone(),
            kubeconfig: layout.kubeconfig(),
            controller_manager_kubeconfig: layout.kubeconfigs().join("kube-controller-manager"),
            scheduler_kubeconfig: layout.kubeconfigs().join("kube-scheduler"),
            kwok_config: layout.config().join("kwok.yaml"),
            registry_config: layout.config().join("registry.yml"),
            data: layout.data(),
            home: layout.home(),
            tmp: layout.tmp(),
        };
        let server = format!("https://{}", record.ports.addr("kube-apiserver"));
        for (path, who) in [
            (&setting.kubeconfig, &certs::ADMIN),
            (&setting.controller_manager_kubeconfig, &certs::CONTROLLER_MANAGER),
            (&setting.scheduler_kubeconfig, &certs::SCHEDULER),
        ] {
            kubeconfig::write(path, &record.context, &server, &pki, who)?;
        }
        for (path, text) in
            [(&setting.kwok_config, kwok_config_text()), (&setting.registry_config, setting.registry_config_text())]
        {
            fs::write(path, text).map_err(|source| Error::WriteFile { path: path.clone(), source })?;
        }
        for dir in [setting.registry_data(), setting.source_storage()] {
            fs::create_dir_all(&dir).map_err(|source| Error::CreateDir { path: dir, source })?;
        }
        Ok(Boot {
            layout,
            binaries,
            record,
            setting,
            held: Mutex::new(held),
            watchdog: Mutex::new(watchdog),
            started: Mutex::new(Vec::new()),
        })
    }

    pub async fn run(&self, reporter: &dyn Reporter) -> Result<(), Error> {
        let admin = admin_config(&self.layout.kubeconfig(), &self.record.context).await?;
        let prober = Prober::new(admin.clone());
        let client = kube::Client::try_from(admin)
            .map_err(|source| Error::Client { context: self.record.context.clone(), source })?;
        let full = self.record.scope == Scope::Full;

        // Neither etcd nor the registry needs anything.
        let etcd = self.start(Component::Etcd, reporter)?;
        let registry = if full { Some(self.start(Component::Registry, reporter)?) } else { None };
        self.ready(&etcd, &prober, ETCD_DEADLINE, reporter).await?;

        let apiserver = self.start(Component::Apiserver, reporter)?;
        let probe = Component::Apiserver.probe(&self.record.ports);
        let (prober_ref, client_ref) = (&prober, &client);
        self.wait(&apiserver, "/readyz and the built-in API groups", APISERVER_DEADLINE, move || async move {
            prober_ref.check(&probe).await?;
            served_groups(client_ref).await
        })
        .await?;
        self.report_ready(&apiserver, reporter);
        let Some(registry) = registry else {
            return Ok(());
        };

        let controller_manager = self.start(Component::ControllerManager, reporter)?;
        let scheduler = self.start(Component::Scheduler, reporter)?;
        let kwok = self.start(Component::Kwok, reporter)?;
        tokio::try_join!(
            self.controller_manager_ready(&controller_manager, &prober, &client, reporter),
            self.ready(&scheduler, &prober, CONTROLLER_DEADLINE, reporter),
            self.ready(&kwok, &prober, CONTROLLER_DEADLINE, reporter),
            self.ready(&registry, &prober, REGISTRY_DEADLINE, reporter),
            self.cluster_objects(&apiserver, &client, reporter),
        )?;

        let source = self.start(Component::SourceController, reporter)?;
        let kustomize = self.start(Component::KustomizeController, reporter)?;
        let helm = self.start(Component::HelmController, reporter)?;
        tokio::try_join!(
            self.node_ready(&kwok, &client, reporter),
            self.ready(&source, &prober, CONTROLLER_DEADLINE, reporter),
            self.ready(&kustomize, &prober, CONTROLLER_DEADLINE, reporter),
            self.ready(&helm, &prober, CONTROLLER_DEADLINE, reporter),
        )?;
        Ok(())
    }

    fn start(&self, component: Component, reporter: &dyn Reporter) -> Result<Started, Error> {
        let binary = self.binaries.bin(component.name());
        let (args, env) = self.setting.command(component);
        let log = self.layout.log(component);
        // Let go of the component's ports only now, so nothing else picks them meanwhile.
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        for name in component.ports() {
            held.remove(*name);
        }
        drop(held);
        let mut watchdog = self.watchdog.lock().unwrap_or_else(|p| p.into_inner());
        let pid = process::spawn(Launch {
            binary: &binary,
            args,
            env,
            cwd: &self.layout.root,
            log: &log,
            group: watchdog.group(),
        })
        .map_err(|source| Error::Spawn { component: component.name(), binary: binary.clone(), source })?;
        watchdog.watch(pid, component == Component::Etcd).map_err(Error::Watchdog)?;
        let pid_file = self.layout.pid_file(component);
        pid.write(&pid_file).map_err(|source| Error::WriteFile { path: pid_file, source })?;
        reporter.started(&step(component), &format!("on 127.0.0.1:{}", self.record.ports.port(component.main_port())));
        let started = Started { component, pid, at: Instant::now() };
        self.started.lock().unwrap_or_else(|p| p.into_inner()).push(started);
        Ok(started)
    }

    fn report_ready(&self, started: &Started, reporter: &dyn Reporter) {
        reporter.finished(
            &step(started.component),
            Status::Ok,
            &format!("on 127.0.0.1:{}", self.record.ports.port(started.component.main_port())),
            started.at.elapsed(),
        );
    }

    fn exited(&self, started: &Started) -> Error {
        let log = self.layout.log(started.component);
        Error::Exited {
            component: started.component.name(),
            status: process::exit_status(started.pid.pid).unwrap_or_else(|| "it is gone".to_string()),
            log: Box::new(LogTail { lines: process::tail(&log, TAIL_LINES), path: log }),
        }
    }

    fn not_ready(
        &self,
        subject: String,
        blame: Component,
        waiting_for: &str,
        deadline: Duration,
        last_status: String,
    ) -> Error {
        let log = self.layout.log(blame);
        Error::NotReady {
            component: subject,
            waiting_for: waiting_for.to_string(),
            deadline,
            last_status,
            log: Box::new(LogTail { lines: process::tail(&log, TAIL_LINES), path: log }),
        }
    }

    /// Resolves (to the error to report) when the process stops.
    async fn exits(&self, started: &Started) -> Error {
        loop {
            if !started.pid.alive() {
                return self.exited(started);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Polls `check` until it passes, the process stops, or the deadline (counted from the
    /// start of the process) passes.
    async fn wait<F, Fut>(
        &self,
        started: &Started,
        waiting_for: &str,
        deadline: Duration,
        mut check: F,
    ) -> Result<(), Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let mut pause = Duration::from_millis(50);
        loop {
            if !started.pid.alive() {
                return Err(self.exited(started));
            }
            let dead = self.started.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|s| !s.pid.alive()).copied();
            if let Some(dead) = dead {
                return Err(self.exited(&dead));
            }
            let last = match check().await {
                Ok(()) => return Ok(()),
                Err(why) => why,
            };
            if started.at.elapsed() >= deadline {
                return Err(self.not_ready(
                    started.component.name().to_string(),
                    started.component,
                    waiting_for,
                    deadline,
                    last,
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Waits for the component's own health check, then reports it ready.
    async fn ready(
        &self,
        started: &Started,
        prober: &Prober,
        deadline: Duration,
        reporter: &dyn Reporter,
    ) -> Result<(), Error> {
        let probe = started.component.probe(&self.record.ports);
        let waiting_for = format!("GET {}", probe.url());
        self.wait(started, &waiting_for, deadline, move || async move { prober.check(&probe).await }).await?;
        self.report_ready(started, reporter);
        Ok(())
    }

    /// Healthy, and its controllers work: the `default` ServiceAccount exists.
    async fn controller_manager_ready(
        &self,
        started: &Started,
        prober: &Prober,
        client: &kube::Client,
        reporter: &dyn Reporter,
    ) -> Result<(), Error> {
        let probe = started.component.probe(&self.record.ports);
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        let accounts = &accounts;
        let waiting_for =
            format!("GET {} and the ServiceAccount `default/default` its controllers create", probe.url());
        self.wait(started, &waiting_for, CONTROLLER_DEADLINE, move || async move {
            prober.check(&probe).await?;
            match accounts.get_opt("default").await {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err("no ServiceAccount `default/default` yet".to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await?;
        self.report_ready(started, reporter);
        Ok(())
    }

    /// The simulated node, the `flux-system` namespace, the registry's advertisement, the default StorageClass and the
    /// Flux CRDs (established).
    async fn cluster_objects(
        &self,
        apiserver: &Started,
        client: &kube::Client,
        reporter: &dyn Reporter,
    ) -> Result<(), Error> {
        const CRD_STEP: &str = "sim/flux-crds";
        let started = Instant::now();
        let apply = PatchParams::apply(FIELD_MANAGER).force();
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        for name in [FLUX_NAMESPACE, "kube-public"] {
            let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            namespaces.patch(name, &apply, &Patch::Apply(&namespace)).await.map_err(|source| Error::Apply {
                kind: "Namespace",
                name: name.to_string(),
                source,
            })?;
        }
        // KEP-1755: where tools find the cluster's registry.
        let hosting: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), "kube-public");
        let registry = self.record.ports.addr("registry");
        let config_map = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "local-registry-hosting", "namespace": "kube-public"},
            "data": {"localRegistryHosting.v1": format!("host: \"{registry}\"\n")},
        });
        hosting.patch("local-registry-hosting", &apply, &Patch::Apply(&config_map)).await.map_err(|source| {
            Error::Apply { kind: "ConfigMap", name: "kube-public/local-registry-hosting".to_string(), source }
        })?;
        // The default StorageClass, served by the controller manager's hostPath provisioner.
        let classes: Api<k8s_openapi::api::storage::v1::StorageClass> = Api::all(client.clone());
        let class = json!({
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": STORAGE_CLASS,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": "kubernetes.io/host-path",
            "volumeBindingMode": "Immediate",
            "reclaimPolicy": "Delete",
        });
        classes.patch(STORAGE_CLASS, &apply, &Patch::Apply(&class)).await.map_err(|source| Error::Apply {
            kind: "StorageClass",
            name: STORAGE_CLASS.to_string(),
            source,
        })?;
        self.create_node(client, reporter).await?;

        reporter.started(CRD_STEP, "applying the Flux CRDs");
        let crds = read_crds(&self.binaries.crds())?;
        let api: Api<CustomResourceDefinition> = Api::all(client.clone());
        try_join_all(crds.iter().map(|crd| {
            let api = &api;
            let apply = &apply;
            async move {
                let name = crd.metadata.name.clone().unwrap_or_default();
                api.patch(&name, apply, &Patch::Apply(crd)).await.map_err(|source| Error::Apply {
                    kind: "CustomResourceDefinition",
                    name,
                    source,
                })
            }
        }))
        .await?;
        for crd in &crds {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let remaining = CRD_DEADLINE.saturating_sub(started.elapsed());
            let established = tokio::select! {
                result = tokio::time::timeout(remaining, await_condition(api.clone(), &name, conditions::is_crd_established())) => result,
                error = self.exits(apiserver) => return Err(error),
            };
            if !matches!(established, Ok(Ok(Some(_)))) {
                let last = match api.get_opt(&name).await {
                    Ok(Some(crd)) => describe_conditions(
                        crd.status
                            .and_then(|s| s.conditions)
                            .unwrap_or_default()
                            .iter()
                            .map(|c| (c.type_.as_str(), c.status.as_str(), c.message.as_deref())),
                    ),
                    Ok(None) => "not found".to_string(),
                    Err(e) => e.to_string(),
                };
                return Err(self.not_ready(
                    format!("CRD {name}"),
                    Component::Apiserver,
                    "the condition Established",
                    CRD_DEADLINE,
                    last,
                ));
            }
        }
        reporter.finished(CRD_STEP, Status::Ok, &format!("{} established", crds.len()), started.elapsed());
        Ok(())
    }

    /// The Node kwok simulates, with the resources the scheduler sees.
    async fn create_node(&self, client: &kube::Client, reporter: &dyn Reporter) -> Result<(), Error> {
        reporter.started("sim/node", &format!("`{NODE_NAME}` (simulated by kwok)"));
        let nodes: Api<Node> = Api::all(client.clone());
        let node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "annotations": {KWOK_NODE_ANNOTATION.0: KWOK_NODE_ANNOTATION.1},
                "labels": {
                    "kubernetes.io/hostname": NODE_NAME,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                },
            },
        });
        let node_error = |source| Error::Apply { kind: "Node", name: NODE_NAME.to_string(), source };
        nodes
            .patch(NODE_NAME, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&node))
            .await
            .map_err(node_error)?;
        let resources = json!({"cpu": "32", "memory": "256Gi", "pods": "250"});
        let status = json!({"status": {"capacity": resources, "allocatable": resources}});
        nodes.patch_status(NODE_NAME, &PatchParams::default(), &Patch::Merge(&status)).await.map_err(node_error)?;
        Ok(())
    }

    /// kwok has made the node Ready.
    async fn node_ready(&self, kwok: &Started, client: &kube::Client, reporter: &dyn Reporter) -> Result<(), Error> {
        let started = Instant::now();
        let nodes: Api<Node> = Api::all(client.clone());
        let ready = tokio::select! {
            result = tokio::time::timeout(NODE_DEADLINE, await_condition(nodes.clone(), NODE_NAME, is_node_ready)) => result,
            error = self.exits(kwok) => return Err(error),
        };
        if !matches!(ready, Ok(Ok(Some(_)))) {
            let last = match nodes.get_opt(NODE_NAME).await {
                Ok(Some(node)) => describe_conditions(
                    node.status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .iter()
                        .map(|c| (c.type_.as_str(), c.status.as_str(), c.message.as_deref())),
                ),
                Ok(None) => "the node is gone".to_string(),
                Err(e) => e.to_string(),
            };
            return Err(self.not_ready(
                format!("node {NODE_NAME}"),
                Component::Kwok,
                "the condition Ready (set by kwok's stages)",
                NODE_DEADLINE,
                last,
            ));
        }
        reporter.finished("sim/node", Status::Ok, "Ready", started.elapsed());
        Ok(())
    }
}

/// A named condition in the style of kube-runtime's: the node reports Ready=True.
pub(super) fn is_node_ready(node: Option<&Node>) -> bool {
    node.and_then(|n| n.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn describe_conditions<'c>(conditions: impl Iterator<Item = (&'c str, &'c str, Option<&'c str>)>) -> String {
    let parts: Vec<String> = conditions
        .map(|(kind, status, message)| match message {
            Some(m) if !m.is_empty() => format!("{kind}={status} ({m})"),
            _ => format!("{kind}={status}"),
        })
        .collect();
    if parts.is_empty() { "no conditions yet".to_string() } else { parts.join(", ") }
}

async fn served_groups(client: &kube::Client) -> Result<(), String> {
    let groups = tokio::time::timeout(Duration::from_secs(5), client.list_api_groups())
        .await
        .map_err(|_| "no answer to GET /apis within 5s".to_string())?
        .map_err(|e| e.to_string())?;
    let missing: Vec<&str> =
        BUILT_IN_GROUPS.iter().filter(|g| !groups.groups.iter().any(|s| s.name == **g)).copied().collect();
    if missing.is_empty() { Ok(()) } else { Err(format!("API groups not served yet: {}", missing.join(", "))) }
}

/// Every CustomResourceDefinition in the YAML files of a directory, by file name.
fn read_crds(dir: &Path) -> Result<Vec<CustomResourceDefinition>, Error> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|source| Error::ReadFile { path: dir.to_path_buf(), source })?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let mut crds = Vec::new();
    for path in files {
        let text = fs::read_to_string(&path).map_err(|source| Error::ReadFile { path: path.clone(), source })?;
        for document in serde_yaml::Deserializer::from_str(&text) {
            let parse_error = |source| Error::ParseCrd { path: path.clone(), source };
            let value = serde_yaml::Value::deserialize(document).map_err(parse_error)?;
            if value.is_null() {
                continue;
            }
            crds.push(serde_yaml::from_value(value).map_err(parse_error)?);
        }
    }
    Ok(crds)
}

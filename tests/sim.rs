//! The kube tier: a real control plane, kwok and the real Flux controllers, booted by the
//! `sim` provider.
//!
//! One cluster is booted per test binary, owned by it (its processes stop when the binary
//! exits, however it exits), in a fresh state directory under `target/tmp/`. With
//! `DEVENV_SIM_STATE_DIR=DIR` the tests use (or boot, and leave running) the cluster kept in
//! `DIR/sim` instead, so a test script can boot once and stop it with `devenv down`.
//!
//! Without the sim binaries the tests print how to build them and pass, except under
//! `CI=true`, where they fail.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use devenv::providers::ClusterAction;
use devenv::providers::sim::{self, Lifetime, Sim, SimInfo};
use devenv::ui::{Event, PlainReporter, Reporter, SilentReporter};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::runtime::wait::{Condition, await_condition, conditions};
use serde_json::json;

/// Names a running cluster to use instead of booting one.
const STATE_DIR_ENV: &str = "DEVENV_SIM_STATE_DIR";
/// Set for the child processes of the lifetime tests: `MODE DIR`.
const CHILD_ENV: &str = "DEVENV_SIM_TEST_CHILD";
const FIELD_MANAGER: &str = "devenv-tests";
const FLUX_CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.flux.config.v1+json";
const FLUX_CONTENT_MEDIA_TYPE: &str = "application/vnd.cncf.flux.content.v1.tar+gzip";
const HELM_CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.helm.config.v1+json";
const HELM_CHART_MEDIA_TYPE: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";

// ---------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------

struct Shared {
    info: SimInfo,
}

static CLUSTER: OnceLock<Result<Shared, String>> = OnceLock::new();

/// Whether the binaries are there; if not, fails under CI and otherwise says how to build.
fn binaries_or_skip() -> bool {
    match sim::binaries() {
        Ok(_) => true,
        Err(error) => {
            let note = format!(
                "{error}; build them with `devenv sim build` or `bash sim/build.sh` (`bash scripts/test.sh` runs it first); \
                 the build is cached by the pins in sim/versions.env"
            );
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("the kube tier cannot run under CI=true: {note}");
            }
            eprintln!("SKIPPED (kube tier): {note}");
            false
        }
    }
}

/// The shared cluster, booted on first use; `None` when the tier is skipped.
fn cluster() -> Option<&'static Shared> {
    if !binaries_or_skip() {
        return None;
    }
    let shared = CLUSTER.get_or_init(|| {
        // Booted on a runtime of its own: the cluster outlives every test's runtime.
        std::thread::spawn(|| tokio::runtime::Runtime::new().map_err(|e| e.to_string())?.block_on(boot_shared()))
            .join()
            .unwrap_or_else(|_| Err("the boot thread panicked".to_string()))
    });
    match shared {
        Ok(shared) => Some(shared),
        Err(error) => panic!("the sim cluster did not boot: {error}"),
    }
}

async fn boot_shared() -> Result<Shared, String> {
    let (dir, lifetime) = match std::env::var_os(STATE_DIR_ENV) {
        Some(dir) => (PathBuf::from(dir), Lifetime::Detached),
        None => (fresh_dir("shared").await, Lifetime::Owned),
    };
    let sim = Sim::new(&dir).with_lifetime(lifetime);
    let reporter = PlainReporter::new(true);
    let info = sim.up("kube-tier", &reporter).await.map_err(describe)?;
    Ok(Shared { info })
}

/// An error with its log tail, for a test failure message.
fn describe(error: sim::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(&format!("\n  caused by: {cause}"));
        source = cause.source();
    }
    if let Some(log) = error.log() {
        text.push_str(&format!("\n  last lines of {}:\n{}", log.path.display(), log.lines));
    }
    text
}

/// A new state directory under `target/tmp`, after stopping and removing those of
/// finished test runs (a run killed at the wrong moment can leave a detached cluster).
async fn fresh_dir(purpose: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sim-tests");
    std::fs::create_dir_all(&root).unwrap();
    for entry in std::fs::read_dir(&root).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let owner = name.rsplit('-').next().and_then(|p| p.parse::<i32>().ok());
        if let Some(pid) = owner
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = Sim::new(&entry.path()).down(true, &SilentReporter).await;
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let dir = root.join(format!("{purpose}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Stops and removes a test's own cluster however the test ends.
struct DownOnDrop(PathBuf);

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        let dir = self.0.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            let _ = runtime.block_on(Sim::new(&dir).down(true, &SilentReporter));
            let _ = std::fs::remove_dir_all(&dir);
        })
        .join();
    }
}

async fn client(shared: &Shared) -> kube::Client {
    sim::client(&shared.info).await.unwrap()
}

/// A client of the cluster as `user` (the `Impersonate-User` header), who has only what RBAC
/// grants that name.
async fn client_as(shared: &Shared, user: &str) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(&shared.info.kubeconfig).unwrap();
    let options = KubeConfigOptions { context: Some(shared.info.context.clone()), ..Default::default() };
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.unwrap();
    config.auth_info.impersonate = Some(user.to_string());
    kube::Client::try_from(config).unwrap()
}

/// A name unique to this test run (clusters named by DEVENV_SIM_STATE_DIR outlive runs).
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", std::process::id())
}

/// Waits for a named condition, failing with what the object looks like at the deadline.
async fn wait_for<K>(api: &Api<K>, name: &str, what: &str, deadline: Duration, cond: impl Condition<K>)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize + Send + 'static,
{
    match tokio::time::timeout(deadline, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => panic!("waiting for {what} of `{name}`: {error}"),
        Err(_) => {
            let seen = api
                .get_opt(name)
                .await
                .ok()
                .flatten()
                .map(|o| serde_json::to_value(o).unwrap()["status"].to_string())
                .unwrap_or_else(|| "absent".to_string());
            panic!("`{name}` did not reach {what} within {}s; status: {seen}", deadline.as_secs());
        }
    }
}

async fn apply<K>(api: &Api<K>, object: serde_json::Value) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let name = object["metadata"]["name"].as_str().unwrap().to_string();
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&object))
        .await
        .unwrap_or_else(|e| panic!("applying `{name}`: {e}"))
}

async fn namespace(client: &kube::Client, name: &str) -> Namespace {
    apply(
        &Api::<Namespace>::all(client.clone()),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
    )
    .await
}

fn flux_api(
    client: &kube::Client,
    ns: &str,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::namespaced_with(client.clone(), ns, &resource)
}

/// Flux's readiness: `Ready=True` for the current generation.
fn flux_ready(object: Option<&DynamicObject>) -> bool {
    let Some(object) = object else { return false };
    let status = &object.data["status"];
    let current = status["observedGeneration"].as_i64() == object.metadata.generation;
    let ready = status["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
    current && ready
}

fn deployment_available(replicas: i32) -> impl Condition<Deployment> {
    move |d: Option<&Deployment>| {
        let Some(status) = d.and_then(|d| d.status.as_ref()) else { return false };
        status.available_replicas == Some(replicas)
            && status
                .conditions
                .as_ref()
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Available" && c.status == "True"))
    }
}

fn node_ready(node: Option<&Node>) -> bool {
    node.and_then(|n| n.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A deterministic tar.gz of `(path, content)` pairs.
fn tar_gz(files: &[(&str, &str)]) -> Vec<u8> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut archive = tar::Builder::new(encoder);
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        archive.append_data(&mut header, path, content.as_bytes()).unwrap();
    }
    archive.into_inner().unwrap().finish().unwrap()
}

/// Pushes a one-layer OCI artifact to the sim registry (plain HTTP).
async fn push(registry: &str, repository: &str, tag: &str, config: (&str, Vec<u8>), layer: (&str, Vec<u8>)) {
    use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
    use oci_client::secrets::RegistryAuth;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = oci_client::Client::new(ClientConfig { protocol: ClientProtocol::Http, ..ClientConfig::default() });
    let reference: oci_client::Reference = format!("{registry}/{repository}:{tag}").parse().unwrap();
    let layers = vec![ImageLayer::new(layer.1, layer.0.to_string(), None)];
    let config = Config::new(config.1, config.0.to_string(), None);
    client
        .push(&reference, &layers, config, &RegistryAuth::Anonymous, None)
        .await
        .unwrap_or_else(|e| panic!("pushing {reference}: {e}"));
}

// ---------------------------------------------------------------------------------------
// The cluster works
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn nodes_are_ready() {
    let Some(shared) = cluster() else { return };
    let client = client(shared).await;
    let ready = devenv::providers::container_cluster::wait_nodes_ready(
        &client,
        Duration::from_secs(60),
        "nodes",
        &SilentReporter,
    );
    assert!(ready.await, "the nodes are Ready, as kind's and k3d's wait sees them");
    let nodes: Api<Node> = Api::all(client);
    let list = nodes.list(&Default::default()).await.unwrap();
    assert!(!list.items.is_empty(), "the sim has a node");
    for node in &list.items {
        let name = node.metadata.name.clone().unwrap();
        wait_for(&nodes, &name, "Ready", Duration::from_secs(60), node_ready).await;
        let allocatable = node.status.as_ref().unwrap().allocatable.as_ref().unwrap();
        for resource in ["cpu", "memory", "pods"] {
            assert!(allocatable.contains_key(resource), "{name} allocates {resource}");
        }
    }
}

/// `kube::until_all` answers from the first complete list, sees later changes through its
/// watch (only of the selected objects), gives up at the deadline, and lists again and again
/// for an identity that may list but not watch.
#[tokio::test]
async fn until_all_watches_a_list_and_lists_again_when_it_may_not_watch() {
    let Some(shared) = cluster() else { return };
    let client = client(shared).await;
    let ns = unique("until-all");
    namespace(&client, &ns).await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let selected = ListParams::default().labels("until-all=yes");
    let config_map = |name: &str, selected: bool| {
        let labels = if selected { json!({"until-all": "yes"}) } else { json!({}) };
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns, "labels": labels}})
    };
    use devenv::kube::until_all;
    let none = |found: &[ConfigMap]| found.is_empty();
    assert!(until_all(&maps, &selected, none, Duration::from_secs(30)).await.unwrap(), "true at once");
    let five = |found: &[ConfigMap]| found.len() == 5;
    let started = Instant::now();
    assert!(!until_all(&maps, &selected, five, Duration::from_secs(2)).await.unwrap(), "never true");
    assert!(started.elapsed() < Duration::from_secs(10), "the deadline ends the wait");

    let (a, b, c) = (config_map("a", true), config_map("b", true), config_map("c", false));
    let writer = {
        let maps = maps.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            for object in [c, a, b] {
                apply(&maps, object).await;
            }
        })
    };
    let mut sizes = Vec::new();
    let two = |found: &[ConfigMap]| {
        sizes.push(found.len());
        found.len() == 2
    };
    assert!(until_all(&maps, &selected, two, Duration::from_secs(30)).await.unwrap(), "the watch sees a and b");
    writer.await.unwrap();
    assert_eq!(sizes.last(), Some(&2), "seen: {sizes:?}");

    // An identity that may list ConfigMaps here, but not watch them.
    let user = format!("lister-{ns}");
    let rbac = |kind: &str| ApiResource::from_gvk(&GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", kind));
    apply(
        &Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &rbac("Role")),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "lister", "namespace": ns},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        }),
    )
    .await;
    apply(
        &Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &rbac("RoleBinding")),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "lister", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "lister"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        }),
    )
    .await;
    let as_lister: Api<ConfigMap> = Api::namespaced(client_as(shared, &user).await, &ns);
    // RBAC takes the binding into account within a moment.
    let listed = async {
        while as_lister.list(&selected).await.is_err() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), listed).await.expect("the binding lets the lister list");
    let writer = {
        let maps = maps.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            maps.delete("a", &DeleteParams::default()).await.unwrap();
        })
    };
    let one = |found: &[ConfigMap]| found.len() == 1;
    assert!(until_all(&as_lister, &selected, one, Duration::from_secs(30)).await.unwrap(), "polling sees a go");
    writer.await.unwrap();

    // An identity that may not even list: refused at once, not at the deadline.
    let nobody: Api<ConfigMap> = Api::namespaced(client_as(shared, &format!("nobody-{ns}")).await, &ns);
    let started = Instant::now();
    let refused = until_all(&nobody, &selected, none, Duration::from_secs(60)).await;
    assert!(matches!(&refused, Err(kube::Error::Api(status)) if status.code == 403), "{refused:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "a refusal ends the wait");
}

#[tokio::test]
async fn a_statefulset_gets_its_volumes_bound_and_becomes_ready() {
    let Some(shared) = cluster() else { return };
    let client = client(shared).await;
    let ns = unique("volumes");
    namespace(&client, &ns).await;
    let sets: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(client.clone(), &ns);
    apply(
        &sets,
        json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": ns},
            "spec": {
                "replicas": 1,
                "serviceName": "db",
                "selector": {"matchLabels": {"app": "db"}},
                "template": {
                    "metadata": {"labels": {"app": "db"}},
                    "spec": {"containers": [{"name": "db", "image": "registry.invalid/db:1",
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]},
                },
                "volumeClaimTemplates": [{
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                }],
            },
        }),
    )
    .await;
    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let bound = |claim: Option<&k8s_openapi::api::core::v1::PersistentVolumeClaim>| {
        claim.and_then(|c| c.status.as_ref()).and_then(|s| s.phase.as_deref()) == Some("Bound")
    };
    wait_for(&claims, "data-db-0", "Bound by the default StorageClass", Duration::from_secs(60), bound).await;
    let ready = |set: Option<&k8s_openapi::api::apps::v1::StatefulSet>| {
        set.and_then(|s| s.status.as_ref()).and_then(|s| s.ready_replicas) == Some(1)
    };
    wait_for(&sets, "db", "1 ready replica", Duration::from_secs(60), ready).await;
}

#[tokio::test]
async fn a_deployment_becomes_available() {
    let Some(shared) = cluster() else { return };
    let client = client(shared).await;
    let ns = unique("deploy");
    namespace(&client, &ns).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    apply(
        &deployments,
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1"}]},
                },
            },
        }),
    )
    .await;
    wait_for(&deployments, "web", "Available with 2 replicas", Duration::from_secs(90), deployment_available(2)).await;
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let pods = pods.list(&Default::default()).await.unwrap();
    assert!(pods.items.iter().all(|p| {
        let status = p.status.as_ref().unwrap();
        status.phase.as_deref() == Some("Running") && status.pod_ip.is_some()
    }));
}

#[tokio::test]
async fn a_namespace_deletion_finishes() {
    let Some(shared) = cluster() else { return };
    let client = client(shared).await;
    let ns = unique("gone");
    let created = namespace(&client, &ns).await;
    // A pod and a ConfigMap inside, so the namespace controller and kwok both have work.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    apply(
        &pods,
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "worker", "namespace": ns},
            "spec": {"containers": [{"name": "worker", "image": "registry.invalid/worker:1"}]},
        }),
    )
    .await;
    wait_for(&pods, "worker", "Running", Duration::from_secs(60), conditions::is_pod_running()).await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    apply(
        &config_maps,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": ns}, "data": {"k": "v"}}),
    )
    .await;
    let namespaces: Api<Namespace> = Api::all(client);
    namespaces.delete(&ns, &DeleteParams::default()).await.unwrap();
    let uid = created.metadata.uid.unwrap();
    wait_for(&namespaces, &ns, "deletion", Duration::from_secs(90), conditions::is_deleted(&uid)).await;
}

#[tokio::test]
async fn the_flux_crds_are_established() {
    let Some(shared) = cluster() else { return };
    let client = client(shared).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let list = crds.list(&Default::default()).await.unwrap();
    let flux: BTreeMap<String, String> = list
        .items
        .iter()
        .filter(|c| c.spec.group.ends_with(".toolkit.fluxcd.io"))
        .map(|c| (c.spec.names.kind.clone(), c.metadata.name.clone().unwrap()))
        .collect();
    for kind in
        ["GitRepository", "OCIRepository", "HelmRepository", "HelmChart", "Bucket", "Kustomization", "HelmRelease"]
    {
        let name = flux.get(kind).unwrap_or_else(|| panic!("no CRD for {kind}; have {flux:?}"));
        wait_for(&crds, name, "Established", Duration::from_secs(10), conditions::is_crd_established()).await;
    }
}

#[tokio::test]
async fn a_kustomization_from_an_oci_artifact_substitutes_and_prunes() {
    let Some(shared) = cluster() else { return };
    let client = client(shared).await;
    let registry = &shared.info.registry;
    let ns = unique("gitops");
    namespace(&client, &ns).await;
    let repository = format!("{ns}/manifests");

    let greeting = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: greeting
data:
  message: "${GREETING}, from ${REGION:=nowhere}"
"#;
    let extra = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata:\n  k: v\n";
    let flux_config = (FLUX_CONFIG_MEDIA_TYPE, b"{}".to_vec());
    push(
        registry,
        &repository,
        "v1",
        flux_config.clone(),
        (FLUX_CONTENT_MEDIA_TYPE, tar_gz(&[("greeting.yaml", greeting), ("extra.yaml", extra)])),
    )
    .await;

    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    apply(
        &config_maps,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cluster-env", "namespace": ns},
               "data": {"GREETING": "hello", "REGION": "eu-west-1"}}),
    )
    .await;
    let sources = flux_api(&client, &ns, "source.toolkit.fluxcd.io", "v1", "OCIRepository", "ocirepositories");
    let source = |tag: &str| {
        json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "OCIRepository",
            "metadata": {"name": "manifests", "namespace": ns},
            "spec": {"url": format!("oci://{registry}/{repository}"), "ref": {"tag": tag}, "insecure": true, "interval": "10m"},
        })
    };
    apply(&sources, source("v1")).await;
    wait_for(&sources, "manifests", "Ready", Duration::from_secs(90), flux_ready).await;

    let kustomizations = flux_api(&client, &ns, "kustomize.toolkit.fluxcd.io", "v1", "Kustomization", "kustomizations");
    apply(
        &kustomizations,
        json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": {"name": "apps", "namespace": ns},
            "spec": {
                "interval": "10m",
                "path": "./",
                "prune": true,
                "targetNamespace": ns,
                "sourceRef": {"kind": "OCIRepository", "name": "manifests"},
                "postBuild": {"substituteFrom": [{"kind": "ConfigMap", "name": "cluster-env"}]},
            },
        }),
    )
    .await;
    wait_for(&kustomizations, "apps", "Ready", Duration::from_secs(90), flux_ready).await;
    let applied = config_maps.get("greeting").await.unwrap();
    assert_eq!(applied.data.unwrap()["message"], "hello, from eu-west-1");
    let extra_cm = config_maps.get("extra").await.unwrap();

    // The source drops `extra`: prune removes it.
    push(registry, &repository, "v2", flux_config, (FLUX_CONTENT_MEDIA_TYPE, tar_gz(&[("greeting.yaml", greeting)])))
        .await;
    apply(&sources, source("v2")).await;
    wait_for(
        &config_maps,
        "extra",
        "deletion by prune",
        Duration::from_secs(120),
        conditions::is_deleted(&extra_cm.metadata.uid.unwrap()),
    )
    .await;
    assert!(config_maps.get_opt("greeting").await.unwrap().is_some());
}

#[tokio::test]
async fn a_helm_release_from_an_oci_chart_installs() {
    let Some(shared) = cluster() else { return };
    let client = client(shared).await;
    let registry = &shared.info.registry;
    let ns = unique("helm");
    namespace(&client, &ns).await;

    let chart_yaml = "apiVersion: v2\nname: demo\nversion: 0.1.0\nappVersion: \"1.0\"\n";
    let values = "message: from-defaults\nreplicas: 1\n";
    let config_map = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-settings
data:
  message: {{ .Values.message | quote }}
"#;
    let deployment = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-web
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels: {app: {{ .Release.Name }}-web}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}-web}
    spec:
      containers:
      - name: web
        image: registry.invalid/web:1
"#;
    let chart = tar_gz(&[
        ("demo/Chart.yaml", chart_yaml),
        ("demo/values.yaml", values),
        ("demo/templates/configmap.yaml", config_map),
        ("demo/templates/deployment.yaml", deployment),
    ]);
    let chart_config = br#"{"apiVersion":"v2","name":"demo","version":"0.1.0","appVersion":"1.0"}"#.to_vec();
    let repository = format!("{ns}/charts/demo");
    push(registry, &repository, "0.1.0", (HELM_CONFIG_MEDIA_TYPE, chart_config), (HELM_CHART_MEDIA_TYPE, chart)).await;

    let sources = flux_api(&client, &ns, "source.toolkit.fluxcd.io", "v1", "OCIRepository", "ocirepositories");
    apply(
        &sources,
        json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "OCIRepository",
            "metadata": {"name": "demo-chart", "namespace": ns},
            "spec": {
                "url": format!("oci://{registry}/{repository}"),
                "ref": {"tag": "0.1.0"},
                "insecure": true,
                "interval": "10m",
                "layerSelector": {"mediaType": HELM_CHART_MEDIA_TYPE, "operation": "copy"},
            },
        }),
    )
    .await;
    wait_for(&sources, "demo-chart", "Ready", Duration::from_secs(90), flux_ready).await;

    let releases = flux_api(&client, &ns, "helm.toolkit.fluxcd.io", "v2", "HelmRelease", "helmreleases");
    apply(
        &releases,
        json!({
            "apiVersion": "helm.toolkit.fluxcd.io/v2",
            "kind": "HelmRelease",
            "metadata": {"name": "demo", "namespace": ns},
            "spec": {
                "interval": "10m",
                "chartRef": {"kind": "OCIRepository", "name": "demo-chart"},
                "values": {"message": "from-values", "replicas": 2},
                "install": {"timeout": "2m"},
            },
        }),
    )
    .await;
    wait_for(&releases, "demo", "Ready (installed)", Duration::from_secs(180), flux_ready).await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let settings = config_maps.get("demo-settings").await.unwrap();
    assert_eq!(settings.data.unwrap()["message"], "from-values");
    let deployments: Api<Deployment> = Api::namespaced(client, &ns);
    wait_for(&deployments, "demo-web", "Available", Duration::from_secs(30), deployment_available(2)).await;
}

// ---------------------------------------------------------------------------------------
// Lifetimes: no process outlives `down`, a crashed `up`, or a killed owner
// ---------------------------------------------------------------------------------------

/// The lifetime tests each boot a cluster of their own; one at a time is enough for 2 cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const COMPONENTS: [&str; 9] = sim::BINARIES;

/// `(name, pid)` of every pid file in `<dir>/sim/run/`.
fn pid_files(dir: &Path) -> Vec<(String, i32)> {
    let run = dir.join("sim").join("run");
    let Ok(entries) = std::fs::read_dir(&run) else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().strip_suffix(".pid")?.to_string();
            let text = std::fs::read_to_string(e.path()).ok()?;
            Some((name, text.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

/// Running means present and not a zombie.
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 1..].trim_start().chars().next()))
        .flatten()
        .is_some_and(|state| !matches!(state, 'Z' | 'X'))
}

async fn wait_all_gone(pids: &[(String, i32)], deadline: Duration) {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if pids.iter().all(|(_, pid)| !running(*pid)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let survivors: Vec<_> = pids.iter().filter(|(_, pid)| running(*pid)).collect();
    panic!("processes survived: {survivors:?}");
}

/// Runs this test binary's `child_process_boots_a_cluster` in another process, which dies
/// with the thread that started it (so a failed or killed test run takes it along).
fn spawn_child(mode: &str, dir: &Path) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let log = std::fs::File::create(dir.join("child.log")).unwrap();
    let mut command = Command::new(std::env::current_exe().unwrap());
    // SAFETY: prctl(2) is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command
        .args(["--exact", "child_process_boots_a_cluster", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{mode} {}", dir.display()))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

async fn wait_for_file(path: &Path, child: &mut std::process::Child, dir: &Path, deadline: Duration) {
    let start = Instant::now();
    while !path.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            let log = std::fs::read_to_string(dir.join("child.log")).unwrap_or_default();
            panic!("the child exited ({status}) before `{}` appeared:\n{log}", path.display());
        }
        assert!(start.elapsed() < deadline, "`{}` did not appear within {}s", path.display(), deadline.as_secs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn kill_9(child: &mut std::process::Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Not a test: the other process of the lifetime tests (`MODE DIR` in DEVENV_SIM_TEST_CHILD).
#[tokio::test]
#[ignore = "run by the lifetime tests as their child process"]
async fn child_process_boots_a_cluster() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let (mode, dir) = spec.split_once(' ').unwrap();
    let dir = Path::new(dir);
    let lifetime = if mode == "owned" { Lifetime::Owned } else { Lifetime::Detached };
    let sim = Sim::new(dir).with_lifetime(lifetime);
    let info = sim.up("lifetime", &PlainReporter::new(true)).await.unwrap_or_else(|e| panic!("{}", describe(e)));
    let mut ready = std::fs::File::create(dir.join("ready")).unwrap();
    writeln!(ready, "{}", info.api_server).unwrap();
    if mode == "owned" {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

#[tokio::test]
async fn a_killed_owner_leaves_no_process() {
    if !binaries_or_skip() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = fresh_dir("owned").await;
    let _cleanup = DownOnDrop(dir.clone());
    let mut child = spawn_child("owned", &dir);
    wait_for_file(&dir.join("ready"), &mut child, &dir, Duration::from_secs(300)).await;
    let pids = pid_files(&dir);
    for name in COMPONENTS.iter().chain(&["watchdog"]) {
        let (_, pid) = pids.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no pid file for {name}"));
        assert!(running(*pid), "{name} runs before the owner is killed");
    }
    kill_9(&mut child);
    let start = Instant::now();
    wait_all_gone(&pids, Duration::from_secs(30)).await;
    eprintln!("after SIGKILL of the owner, all processes were gone in {} ms", start.elapsed().as_millis());
}

#[tokio::test]
async fn a_crashed_up_leaves_no_process() {
    if !binaries_or_skip() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = fresh_dir("crashed").await;
    let _cleanup = DownOnDrop(dir.clone());
    let mut child = spawn_child("detached", &dir);
    // Killed while kube-apiserver starts: etcd, the registry and the apiserver run by then.
    let apiserver_pid = dir.join("sim").join("run").join("kube-apiserver.pid");
    wait_for_file(&apiserver_pid, &mut child, &dir, Duration::from_secs(120)).await;
    kill_9(&mut child);
    let pids = pid_files(&dir);
    assert!(pids.iter().any(|(n, _)| n == "etcd") && pids.iter().any(|(n, _)| n == "kube-apiserver"));
    wait_all_gone(&pids, Duration::from_secs(30)).await;
    // The next `up` would find nothing running; `down` has nothing to stop.
    let sim = Sim::new(&dir);
    assert!(!sim.down(true, &PlainReporter::new(true)).await.unwrap());
}

#[tokio::test]
async fn a_detached_cluster_outlives_up_and_down_stops_it() {
    if !binaries_or_skip() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = fresh_dir("detached").await;
    let _cleanup = DownOnDrop(dir.clone());
    let mut child = spawn_child("detached", &dir);
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    let log = std::fs::read_to_string(dir.join("child.log")).unwrap_or_default();
    assert!(status.success(), "the booting process failed:\n{log}");

    // The process that ran `up` is gone; the cluster is not.
    let sim = Sim::new(&dir);
    let reporter = PlainReporter::new(true);
    let processes = sim.status().await.unwrap();
    assert_eq!(processes.len(), COMPONENTS.len());
    for p in &processes {
        assert!(p.healthy, "{} is healthy after its starter exited: {p:?}", p.name);
        assert!(p.pid.is_some() && p.port.is_some() && p.rss_bytes.is_some());
    }
    let before = std::fs::read_to_string(dir.join("ready")).unwrap();

    // A second `up` reuses it.
    let start = Instant::now();
    let info = sim.up("lifetime", &reporter).await.unwrap_or_else(|e| panic!("{}", describe(e)));
    let reuse = start.elapsed();
    eprintln!("reusing a healthy cluster took {} ms", reuse.as_millis());
    assert_eq!(info.api_server, before.trim());
    assert!(reuse < Duration::from_secs(5), "reuse took {reuse:?}");

    // A plan made before a process stopped is carried out as the cluster is when `up` runs:
    // the cluster is booted again, and the change is said, not made silently.
    let planned = sim.intent("lifetime").await.unwrap();
    assert_eq!(planned.action, ClusterAction::Reuse, "{planned:?}");
    let (_, scheduler) = pid_files(&dir).into_iter().find(|(name, _)| name == "kube-scheduler").unwrap();
    // SAFETY: a signal to a process of the cluster this test booted, by its pid file.
    unsafe { libc::kill(scheduler, libc::SIGKILL) };
    wait_all_gone(&[("kube-scheduler".to_string(), scheduler)], Duration::from_secs(5)).await;
    let warnings = Warnings::default();
    let (restarted, done) =
        sim.carry_out("lifetime", Some(&planned), &warnings).await.unwrap_or_else(|e| panic!("{}", describe(e)));
    assert_eq!(done.action, ClusterAction::Restart, "{done:?}");
    assert!(done.reason.contains("kube-scheduler"), "the reason names the stopped process: {done:?}");
    let said = warnings.0.lock().unwrap().clone();
    assert!(
        said.iter().any(|line| line.starts_with("the cluster changed since `up` planned to reuse it")
            && line.ends_with(&format!("the plan now is to restart it: {}", done.reason))),
        "{said:?}"
    );
    assert_eq!(restarted.api_server, before.trim(), "booted again on its ports");
    let processes = sim.status().await.unwrap();
    assert!(processes.iter().all(|p| p.healthy), "{processes:?}");

    let pids: Vec<(String, i32)> = processes.iter().map(|p| (p.name.clone(), p.pid.unwrap() as i32)).collect();
    let start = Instant::now();
    assert!(sim.down(false, &reporter).await.unwrap(), "down stopped a running cluster");
    eprintln!("down took {} ms", start.elapsed().as_millis());
    wait_all_gone(&pids, Duration::from_secs(1)).await;
    assert!(sim.status().await.unwrap().iter().all(|p| !p.healthy && p.pid.is_none()));
    assert!(dir.join("sim").join("data").join("etcd").exists(), "down keeps the data");
    assert!(!sim.down(false, &reporter).await.unwrap(), "nothing left to stop");
    sim.down(true, &reporter).await.unwrap();
    assert!(!dir.join("sim").exists(), "down --purge removes the data");
}

// ---------------------------------------------------------------------------------------
// `devenv down` without a readable state file
// ---------------------------------------------------------------------------------------

/// Keeps the warnings reported.
#[derive(Default)]
struct Warnings(std::sync::Mutex<Vec<String>>);

impl Reporter for Warnings {
    fn report(&self, event: Event<'_>) {
        if let Event::Warning { message } = event {
            self.0.lock().unwrap().push(message.to_string());
        }
    }
}

/// Whether `docker info` works: `down` asks the engine for the environment's containers.
fn docker_or_skip() -> bool {
    let works = Command::new("docker")
        .arg("info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("the kube tier's `down` test needs a Docker engine under CI=true");
        }
        eprintln!("SKIPPED: `docker info` fails");
    }
    works
}

/// `devenv down --purge --env ENV` with the state under `root`, run where there is no devenv.yaml.
fn devenv_down_purge(root: &Path, env: &str) -> std::process::Output {
    let cwd = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_devenv"));
    for (key, _) in std::env::vars().filter(|(key, _)| key.starts_with("DEVENV_")) {
        command.env_remove(key);
    }
    command
        .current_dir(cwd.path())
        .env("DEVENV_STATE_DIR", root)
        .env("NO_COLOR", "1")
        .args(["down", "--purge", "--env", env])
        .output()
        .unwrap()
}

#[tokio::test]
async fn down_stops_the_sim_cluster_when_the_state_file_is_corrupt_or_gone() {
    if !binaries_or_skip() || !docker_or_skip() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let root = fresh_dir("lost-state").await;
    let env = "t-sim-lost";
    let dir = root.join("envs").join(env);
    let _root = DownOnDrop(root.clone());
    let _cleanup = DownOnDrop(dir.clone());
    let reporter = PlainReporter::new(false);
    // First the state file is garbage; then it is gone and the cluster's own record too.
    for round in ["corrupt", "gone"] {
        Sim::new(&dir).up(env, &reporter).await.unwrap_or_else(|e| panic!("{}", describe(e)));
        let pids = pid_files(&dir);
        assert!(pids.iter().all(|(_, pid)| running(*pid)), "{pids:?}");
        if round == "corrupt" {
            std::fs::write(dir.join("state.json"), "{\"version\": 1, \"cluster\": {").unwrap();
        } else {
            let _ = std::fs::remove_file(dir.join("state.json"));
            std::fs::write(dir.join("sim").join("cluster.json"), "{\"ports\": ").unwrap();
        }
        let started = Instant::now();
        let output = devenv_down_purge(&root, env);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{round}: {stderr}");
        assert!(stderr.contains("Ready cluster stopped, data removed"), "{round}: {stderr}");
        let said = if round == "corrupt" { "is not valid" } else { "there is no state file for `t-sim-lost`" };
        assert!(stderr.contains(said), "{round}: {stderr}");
        wait_all_gone(&pids, Duration::from_secs(5)).await;
        assert!(!dir.exists(), "{round}: the state directory is gone");
        eprintln!("{round}: down stopped {} processes in {} ms", pids.len(), started.elapsed().as_millis());
    }
}

/// etcd holds every Secret of the cluster: it answers only clients with a certificate of the
/// cluster's CA (kube-apiserver's), not any local user on its port.
#[tokio::test]
async fn etcd_answers_only_clients_with_a_certificate_of_the_cluster() {
    use std::io::{Read, Write};
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

    let Some(shared) = cluster() else { return };
    let root = shared.info.kubeconfig.parent().unwrap().to_path_buf();
    let processes = Sim::new(root.parent().unwrap()).status().await.unwrap();
    let port = processes.iter().find(|p| p.name == "etcd").and_then(|p| p.port).expect("etcd's port");
    let pki = root.join("pki");
    let health = |client_certificate: Option<(&str, &str)>| -> Result<String, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(pki.join("ca.crt")).unwrap()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match client_certificate {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_file(pki.join(cert)).unwrap()],
                    PrivateKeyDer::from_pem_file(pki.join(key)).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let mut connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut socket = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut tls = rustls::Stream::new(&mut connection, &mut socket);
        tls.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| e.to_string())?;
        let mut response = String::new();
        tls.read_to_string(&mut response).map_err(|e| e.to_string())?;
        Ok(response)
    };
    // The API server's own client certificate is let in, so the check below is not vacuous.
    let answer = health(Some(("apiserver-etcd-client.crt", "apiserver-etcd-client.key"))).unwrap();
    assert!(answer.contains("\"health\":\"true\""), "{answer}");
    let refused = health(None);
    assert!(refused.is_err(), "a client without a certificate is refused: {refused:?}");
    // Plain HTTP gets nothing out of it either.
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    socket.write_all(b"GET /health HTTP/1.0\r\n\r\n").unwrap();
    let mut plain = Vec::new();
    let _ = socket.read_to_end(&mut plain);
    assert!(!String::from_utf8_lossy(&plain).contains("\"health\""), "{}", String::from_utf8_lossy(&plain));
}

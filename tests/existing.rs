//! The `existing` provider on a real cluster: a sim cluster booted by this test binary (and
//! owned by it) stands for a cluster someone else runs. A second repository reaches it only
//! through a kubeconfig context and a registry address in its profile.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{TestRepo, cluster_client, copy_tree, mariadb_image, result_json, tier_available};
use devenv::providers::sim::{self, Lifetime, Scope, Sim, SimInfo};
use devenv::ui::SilentReporter;
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/landbay");

fn sim_available() -> bool {
    let problem = sim::binaries().err().map(|e| format!("{e}; run `devenv sim build`"));
    tier_available("sim", problem)
}

/// Boots a sim cluster owned by this process in a fresh directory under `target/tmp`, on a
/// runtime of its own so it outlives the test's.
fn boot(purpose: &str, scope: Scope) -> (SimInfo, PathBuf) {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("existing-tests").join(format!("{purpose}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (boot_dir, env) = (dir.clone(), purpose.to_string());
    let info = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let sim = Sim::new(&boot_dir).with_lifetime(Lifetime::Owned).with_scope(scope);
        runtime.block_on(sim.up(&env, &SilentReporter)).map_err(|e| e.to_string())
    })
    .join()
    .unwrap()
    .unwrap_or_else(|e| panic!("the sim cluster did not boot: {e}"));
    (info, dir)
}

/// A profile `shared` for the cluster of `context`; `cluster` adds lines under `cluster:`.
fn profile(repo: &TestRepo, context: &str, registry: &str, cluster: &str) {
    repo.write(
        ".devenv/profiles/shared.yaml",
        &format!(
            "description: a cluster devenv did not create\ncluster:\n  provider: existing\n  context: {context}\n{cluster}registry:\n  url: {registry}\nsubstitutes:\n  memory: 1Gi\nenvironment:\n  AWS_REGION: us-east-1\n"
        ),
    );
}

/// The JSON result of a devenv command that must succeed, run with `KUBECONFIG=kubeconfig`.
fn succeeded_json(repo: &TestRepo, kubeconfig: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> serde_json::Value {
    let output = repo.devenv().args(args).args(["--output", "json"]).env("KUBECONFIG", kubeconfig).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{args:?} failed: {stderr}{stdout}");
    result_json(&output.stdout)
}

/// Containers carrying the environment's label.
fn labelled_containers(env: &str) -> String {
    let output = std::process::Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Names}}", "--filter", &format!("label=devenv.io/env={env}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[tokio::test]
async fn an_existing_cluster_is_used_and_left_running_with_flux() {
    let Some(image) = mariadb_image() else { return };
    if !sim_available() {
        return;
    }
    let (info, sim_dir) = boot("shared", Scope::Full);
    let repo = TestRepo::new("t-existing", "");
    copy_tree(Path::new(FIXTURE), repo.path());
    repo.override_image("rds-mariadb", &image);
    // The cluster is this environment's alone: Flux objects go where the repository puts them.
    profile(&repo, &info.context, &info.registry, "  isolation: cluster\n");
    let kubeconfig = info.kubeconfig.display().to_string();
    let up = |extra: &[&str]| {
        let output = repo
            .devenv()
            .args(["up", "--profile", "shared", "--env", "t-existing", "--timeout", "120s", "--output", "json"])
            .args(extra)
            .env("KUBECONFIG", &kubeconfig)
            .output()
            .unwrap();
        assert!(output.status.success(), "up failed: {}", String::from_utf8_lossy(&output.stderr));
        result_json(&output.stdout)
    };

    // plan says `up` uses the cluster as it is.
    let output = repo
        .devenv()
        .args(["plan", "--profile", "shared", "--env", "t-existing"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    let plan = String::from_utf8_lossy(&output.stdout);
    let expected = format!("  use      the cluster: context `{}` (https://", info.context);
    assert!(plan.contains(&expected), "{plan}{}", String::from_utf8_lossy(&output.stderr));

    let result = up(&[]);
    assert_eq!(result["cluster"]["provider"], "existing");
    assert_eq!(result["cluster"]["context"], info.context.as_str());
    assert_eq!(result["cluster"]["registry"]["host"], info.registry.as_str());
    assert_eq!(result["cluster"]["registry"]["fromCluster"], info.registry.as_str());
    let objects: Vec<&str> =
        result["flux"]["objects"].as_array().unwrap().iter().map(|o| o["object"].as_str().unwrap()).collect();
    for name in ["devenv-root", "crds", "platform", "apps"] {
        assert!(objects.contains(&format!("Kustomization/flux-system/{name}").as_str()), "{objects:?}");
    }
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(repo.state_file()).unwrap()).unwrap();
    assert_eq!(state["cluster"]["provider"], "existing", "the cluster is recorded: {state}");
    assert_eq!(state["cluster"]["kubeconfig"], kubeconfig.as_str());

    // The inner loop: an edit is live after the next `up`, which pushes only what changed.
    let client = cluster_client(&result).await;
    let manifest = repo.path().join("apps/base/orders/deployment.yaml");
    let original = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, original.replace("${LOG_LEVEL:=info}", "${LOG_LEVEL:=debug}")).unwrap();
    let result = up(&[]);
    let pushed = result["flux"]["artifacts"]["pushed"].as_array().unwrap();
    assert_eq!(pushed, &[serde_json::json!("devenv-ks-apps")], "only the artifact reading the file");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "lending");
    let deployment = deployments.get("loans").await.unwrap();
    let container = &deployment.spec.unwrap().template.spec.unwrap().containers[0];
    let level = container.env.as_ref().unwrap().iter().find(|e| e.name == "LOG_LEVEL").unwrap().value.clone();
    assert_eq!(level.as_deref(), Some("debug"));

    // With devenv.yaml broken, `down --env` still finds the environment's cluster and where
    // its Flux objects live through the state file: Flux prunes what it applied, the
    // containers go, and the cluster keeps running with Flux installed.
    let project = std::fs::read_to_string(repo.path().join("devenv.yaml")).unwrap();
    std::fs::write(repo.path().join("devenv.yaml"), "project: [\n").unwrap();
    let output = repo
        .devenv()
        .args(["down", "--env", "t-existing", "--output", "json"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let down = result_json(&output.stdout);
    assert_eq!(down["clusterStopped"], false);
    assert!(!down["flux"]["pruned"].as_array().unwrap().is_empty(), "{down}");
    assert!(down["flux"].get("kept").is_none(), "a cluster of its own keeps nothing for others: {down}");
    assert_eq!(labelled_containers("t-existing"), "");
    let processes = Sim::new(&sim_dir).status().await.unwrap();
    assert!(processes.iter().all(|p| p.healthy), "the cluster still runs: {processes:?}");
    let presence = devenv::providers::flux_presence(&client).await.unwrap();
    assert!(presence.installed(), "Flux is still installed: {presence:?}");
    assert!(deployments.get_opt("loans").await.unwrap().is_none(), "Flux pruned the app");
    std::fs::write(repo.path().join("devenv.yaml"), project).unwrap();
    let output = repo.devenv().args(["down", "--env", "t-existing"]).env("KUBECONFIG", &kubeconfig).output().unwrap();
    assert!(output.status.success(), "a second `down` finds nothing to do");
    drop(repo);
    let _ = Sim::new(&sim_dir).down(true, &SilentReporter).await;
}

/// `Kind/namespace/name` → resourceVersion of what Flux applied for an environment in its
/// namespace: the workloads, their ConfigMaps and the custom resources.
async fn applied_in(client: &kube::Client, namespace: &str) -> BTreeMap<String, String> {
    let mut versions = BTreeMap::new();
    let kinds = [
        ("apps", "v1", "Deployment", "deployments"),
        ("", "v1", "ConfigMap", "configmaps"),
        ("lending.example.com", "v1", "MortgageProduct", "mortgageproducts"),
        ("kustomize.toolkit.fluxcd.io", "v1", "Kustomization", "kustomizations"),
        ("helm.toolkit.fluxcd.io", "v2", "HelmRelease", "helmreleases"),
    ];
    for (group, version, kind, plural) in kinds {
        let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        for item in api.list(&ListParams::default()).await.unwrap().items {
            let name = item.metadata.name.clone().unwrap_or_default();
            versions.insert(format!("{kind}/{namespace}/{name}"), item.metadata.resource_version.unwrap_or_default());
        }
    }
    versions
}

/// Removes a second environment of a test repository when dropped.
struct Purge<'a>(&'a TestRepo, &'static str);

impl Drop for Purge<'_> {
    fn drop(&mut self) {
        let _ = self.0.devenv().args(["down", "--purge", "--env", self.1]).output();
    }
}

/// Whether every Kustomization and HelmRelease in `namespace` is Ready.
async fn all_ready(client: &kube::Client, namespace: &str) -> Vec<String> {
    let mut not_ready = Vec::new();
    for (group, version, kind, plural) in [
        ("kustomize.toolkit.fluxcd.io", "v1", "Kustomization", "kustomizations"),
        ("helm.toolkit.fluxcd.io", "v2", "HelmRelease", "helmreleases"),
    ] {
        let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        for item in api.list(&ListParams::default()).await.unwrap().items {
            let conditions = item.data.pointer("/status/conditions").and_then(|c| c.as_array()).cloned();
            let ready = conditions.unwrap_or_default().iter().any(|c| c["type"] == "Ready" && c["status"] == "True");
            if !ready {
                not_ready.push(format!("{kind}/{}", item.metadata.name.unwrap_or_default()));
            }
        }
    }
    not_ready
}

#[tokio::test]
async fn two_environments_share_one_cluster_and_one_goes_without_touching_the_other() {
    let Some(image) = mariadb_image() else { return };
    if !sim_available() {
        return;
    }
    let (info, sim_dir) = boot("two", Scope::Full);
    // One repository, two environments: the same Flux objects, workloads and CRD in each.
    let repo = TestRepo::new("t-share-a", "");
    copy_tree(Path::new(FIXTURE), repo.path());
    repo.override_image("rds-mariadb", &image);
    profile(&repo, &info.context, &info.registry, "");
    let kubeconfig = info.kubeconfig.display().to_string();
    let devenv = |args: &[&str]| succeeded_json(&repo, &kubeconfig, args);
    // The repository's own guard removes `t-share-a`; this one `t-share-b`, even after a failure.
    let _b = Purge(&repo, "t-share-b");
    let up = |env: &str| devenv(&["up", "--profile", "shared", "--env", env, "--timeout", "120s"]);
    let a = up("t-share-a");
    let b = up("t-share-b");
    for (result, namespace) in [(&a, "devenv-t-share-a"), (&b, "devenv-t-share-b")] {
        let objects: Vec<&str> =
            result["flux"]["objects"].as_array().unwrap().iter().map(|o| o["object"].as_str().unwrap()).collect();
        for name in ["devenv-root", "crds", "platform", "apps"] {
            assert!(objects.contains(&format!("Kustomization/{namespace}/{name}").as_str()), "{objects:?}");
        }
    }
    let client = cluster_client(&b).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "devenv-t-share-a");
    assert!(deployments.get_opt("loans").await.unwrap().is_some(), "a's workload is in a's namespace");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert!(namespaces.get_opt("lending").await.unwrap().is_none(), "the repository's namespace is not created");
    let b_before = applied_in(&client, "devenv-t-share-b").await;
    assert!(b_before.contains_key("Deployment/devenv-t-share-b/loans"), "{b_before:?}");
    assert!(b_before.contains_key("MortgageProduct/devenv-t-share-b/two-year-fixed"), "{b_before:?}");
    // Each environment's ConfigMap, in its namespace, carries its own database.
    let env_map = |namespace: &'static str| {
        let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        async move { config_maps.get("cluster-env").await.unwrap().data.unwrap() }
    };
    let (map_a, map_b) = (env_map("devenv-t-share-a").await, env_map("devenv-t-share-b").await);
    assert_ne!((&map_a["DB_HOST"], &map_a["DB_PORT"]), (&map_b["DB_HOST"], &map_b["DB_PORT"]));

    let down = devenv(&["down", "--env", "t-share-a"]);
    assert!(!down["flux"]["pruned"].as_array().unwrap().is_empty(), "{down}");
    assert_eq!(
        down["flux"]["kept"],
        serde_json::json!(["CustomResourceDefinition/mortgageproducts.lending.example.com"]),
        "the CRD b uses stays: {down}"
    );
    assert_eq!(labelled_containers("t-share-a"), "");
    assert!(deployments.get_opt("loans").await.unwrap().is_none(), "a's workload is pruned");
    assert_eq!(applied_in(&client, "devenv-t-share-b").await, b_before, "b is untouched");
    assert_eq!(all_ready(&client, "devenv-t-share-b").await, Vec::<String>::new(), "b is still Ready");
    assert_eq!(labelled_containers("t-share-b"), "devenv-t-share-b-loans-db", "b's database still runs");

    devenv(&["down", "--env", "t-share-b"]);
    assert_eq!(labelled_containers("t-share-b"), "");
    drop(_b);
    drop(repo);
    let _ = Sim::new(&sim_dir).down(true, &SilentReporter).await;
}

/// A kubeconfig beside the sim cluster's with a context `confined`: the same admin credentials,
/// acting as `user` (impersonation, `as:`), as an identity a company gives a developer.
fn confined_kubeconfig(info: &SimInfo, user: &str, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(&info.kubeconfig).unwrap();
    let mut config: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let context = (config["contexts"].as_sequence().unwrap().iter())
        .find(|c| c["name"].as_str() == Some(info.context.as_str()))
        .unwrap()
        .clone();
    let admin = context["context"]["user"].as_str().unwrap().to_string();
    let mut user_entry =
        (config["users"].as_sequence().unwrap().iter()).find(|u| u["name"].as_str() == Some(&admin)).unwrap().clone();
    user_entry["name"] = "confined".into();
    user_entry["user"]["as"] = user.into();
    let mut confined = context;
    confined["name"] = "confined".into();
    confined["context"]["user"] = "confined".into();
    config["users"].as_sequence_mut().unwrap().push(user_entry);
    config["contexts"].as_sequence_mut().unwrap().push(confined);
    let path = dir.join("confined-kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    path
}

/// A developer whose identity may act in the environment's namespace only, as in a company's
/// shared EKS cluster where the platform team hands out namespaces: `up`, an edit, `up` and
/// `down` work without a right outside it (Flux's own controllers apply what is cluster-wide).
#[tokio::test]
async fn an_identity_confined_to_the_environments_namespace_runs_it() {
    let Some(image) = mariadb_image() else { return };
    if !sim_available() {
        return;
    }
    let (info, sim_dir) = boot("confined", Scope::Full);
    let admin = devenv::providers::kubeconfig::client(&info.kubeconfig, &info.context).await.unwrap();
    let namespace = "devenv-t-confined";
    let grant = [
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "developer", "namespace": namespace},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
        }),
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "developer", "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "developer"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "dev-confined"}],
        }),
        // Whether pods run is read from the nodes; an identity that may not is taken to run
        // them, and the sim cluster's do not (its webhooks would stay and refuse objects).
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "node-reader"},
            "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}],
        }),
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "dev-confined-node-reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "node-reader"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "dev-confined"}],
        }),
    ];
    for object in &grant {
        devenv::kube::apply(&admin, object).await.unwrap();
    }
    let kubeconfig = confined_kubeconfig(&info, "dev-confined", &sim_dir);
    let confined = devenv::providers::kubeconfig::client(&kubeconfig, "confined").await.unwrap();
    let cluster_wide: Api<Namespace> = Api::all(confined.clone());
    let refused = cluster_wide.list(&ListParams::default()).await.unwrap_err();
    assert!(matches!(&refused, kube::Error::Api(status) if status.code == 403), "{refused:?}");

    let repo = TestRepo::new("t-confined", "");
    copy_tree(Path::new(FIXTURE), repo.path());
    repo.override_image("rds-mariadb", &image);
    profile(&repo, "confined", &info.registry, "");
    let devenv = |args: &[&str]| succeeded_json(&repo, &kubeconfig, args);
    let up = || devenv(&["up", "--profile", "shared", "--env", "t-confined", "--timeout", "120s"]);
    let result = up();
    let objects: Vec<&str> =
        result["flux"]["objects"].as_array().unwrap().iter().map(|o| o["object"].as_str().unwrap()).collect();
    for name in ["devenv-root", "crds", "platform", "apps"] {
        assert!(objects.contains(&format!("Kustomization/{namespace}/{name}").as_str()), "{objects:?}");
    }
    assert_eq!(all_ready(&admin, namespace).await, Vec::<String>::new());
    let status = devenv(&["status", "--profile", "shared", "--env", "t-confined"]);
    let listed: Vec<&str> = status["flux"].as_array().unwrap().iter().map(|o| o["object"].as_str().unwrap()).collect();
    assert_eq!(listed.len(), objects.len(), "status reads the same objects: {listed:?} vs {objects:?}");
    assert!(status["flux"].as_array().unwrap().iter().all(|o| o["ready"] == true), "{status}");

    let manifest = repo.path().join("apps/base/orders/deployment.yaml");
    let original = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, original.replace("${LOG_LEVEL:=info}", "${LOG_LEVEL:=debug}")).unwrap();
    let planned = devenv(&["plan", "--profile", "shared", "--env", "t-confined"]);
    let edited = up();
    assert_eq!(edited["plan"]["flux"], planned["flux"], "up carried out the plan shown");
    assert_eq!(edited["flux"]["artifacts"]["pushed"], serde_json::json!(["devenv-ks-apps"]), "{edited}");
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), namespace);
    let loans = deployments.get("loans").await.unwrap();
    let container = &loans.spec.unwrap().template.spec.unwrap().containers[0];
    let level = container.env.as_ref().unwrap().iter().find(|e| e.name == "LOG_LEVEL").unwrap().value.clone();
    assert_eq!(level.as_deref(), Some("debug"));

    let down = devenv(&["down", "--env", "t-confined"]);
    assert!(!down["flux"]["pruned"].as_array().unwrap().is_empty(), "{down}");
    assert!(deployments.get_opt("loans").await.unwrap().is_none(), "Flux pruned the workload");
    assert_eq!(labelled_containers("t-confined"), "");
    drop(repo);
    let _ = Sim::new(&sim_dir).down(true, &SilentReporter).await;
}

#[tokio::test]
async fn a_cluster_without_flux_is_refused_before_anything_is_created() {
    if !sim_available() {
        return;
    }
    let (info, sim_dir) = boot("bare", Scope::Apiserver);
    let repo = TestRepo::new("t-existing-bare", "  - name: orders-db\n    kind: rds-mariadb\n");
    profile(&repo, &info.context, "127.0.0.1:5999", "");
    let output =
        repo.devenv().args(["up", "--profile", "shared"]).env("KUBECONFIG", &info.kubeconfig).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error[DEV064]: Flux is not installed in the cluster of context `{}` (no Kustomization API, no HelmRelease API, no OCIRepository API)",
            info.context
        )),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("flux install --context {}", info.context)), "{stderr}");
    assert!(!repo.state.path().join("envs/t-existing-bare").exists(), "no state: {stderr}");
    if common::docker_works() {
        assert_eq!(labelled_containers("t-existing-bare"), "");
    }
    // `plan` checks the same before showing anything.
    let output =
        repo.devenv().args(["plan", "--profile", "shared"]).env("KUBECONFIG", &info.kubeconfig).output().unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("error[DEV064]"));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let _ = Sim::new(&sim_dir).down(true, &SilentReporter).await;
}

//! Preview tier: the isolation bundle and the CI identity's rights on a real API server with
//! RBAC, admission (ResourceQuota, LimitRanger, ValidatingAdmissionPolicy) and the
//! controller manager. One sim cluster, owned by this test binary, serves every test; each
//! test works in namespaces of its own.

mod common;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{devenv_in, tier_available};
use devenv::preview::bundle::{self, ALLOW_INGRESS_CONTROLLER, ALLOW_SAME_NAMESPACE, DENY_INGRESS};
use devenv::preview::{ContainerDefaults, Preview, Quota, SERVICE_ACCOUNT, Settings};
use devenv::providers::sim::{self, Lifetime, Scope, Sim, SimInfo};
use devenv::ui::SilentReporter;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, Pod, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};

/// How long an admission policy may take to be loaded by the API server.
const POLICY_DEADLINE: Duration = Duration::from_secs(30);
/// How long the controller manager may take to count a new ResourceQuota's usage.
const QUOTA_DEADLINE: Duration = Duration::from_secs(30);

fn sim_available() -> bool {
    let problem = sim::binaries().err().map(|e| format!("{e}; run `devenv sim build`"));
    tier_available("sim", problem)
}

/// The cluster every test of this binary shares, booted by the first to ask. The scope is the
/// whole platform: the smaller one has no controller manager, without which ResourceQuota
/// admission never enforces a quota (it reads the `status.hard` that controller writes).
fn cluster() -> &'static SimInfo {
    static CLUSTER: OnceLock<SimInfo> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let dir: PathBuf =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("preview-tests").join(std::process::id().to_string());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let started = Instant::now();
        // A runtime of its own, so the cluster outlives the runtime of the test that booted it.
        let info = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            let sim = Sim::new(&dir).with_lifetime(Lifetime::Owned).with_scope(Scope::Full);
            runtime.block_on(sim.up("preview", &SilentReporter)).map_err(|e| e.to_string())
        })
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("the sim cluster did not boot: {e}"));
        eprintln!("[preview] sim cluster booted in {:.1}s", started.elapsed().as_secs_f64());
        info
    })
}

/// A client of the cluster's admin, or of `user` when given (the `Impersonate-User` header).
async fn client_as(user: Option<&str>) -> kube::Client {
    let info = cluster();
    let kubeconfig = Kubeconfig::read_from(&info.kubeconfig).unwrap();
    let options = KubeConfigOptions { context: Some(info.context.clone()), ..Default::default() };
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.unwrap();
    config.auth_info.impersonate = user.map(str::to_string);
    kube::Client::try_from(config).unwrap()
}

fn settings(quota: Quota) -> Settings {
    Settings {
        quota,
        limits: ContainerDefaults {
            cpu: "300m".into(),
            memory: "256Mi".into(),
            request_cpu: "50m".into(),
            request_memory: "64Mi".into(),
        },
        ingress_namespace: Some("ingress-nginx".into()),
        ttl: Duration::from_secs(3600),
    }
}

fn preview(pr: u64, project: &str) -> Preview {
    Preview::new(pr, project, Some("0123abcd"), jiff::Timestamp::now(), Duration::from_secs(3600)).unwrap()
}

/// Applies every object as `client`'s identity, with devenv's own server-side apply.
async fn apply_all(client: &kube::Client, objects: &[Value]) {
    for object in objects {
        devenv::kube::apply(client, object)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}: {:?}", devenv::kube::describe(object), std::error::Error::source(&e)));
    }
}

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}})).unwrap()
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1"}]},
    }))
    .unwrap()
}

fn namespace_object(name: &str, labels: Value) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap()
}

/// The API server's refusal: panics unless `result` is a 403, returns its message.
fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) -> String {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => status.message,
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

/// Polls `attempt` until it returns `Ok`, failing with its last error after `deadline`.
async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let until = Instant::now() + deadline;
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= until => panic!("{what}: not within {deadline:?}; last: {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The preview's ServiceAccount, which every Flux object of the preview impersonates, can do
/// anything in its namespace and nothing outside it; nor can it lift its namespace's limits.
#[tokio::test]
async fn the_preview_account_is_confined_to_its_namespace() {
    if !sim_available() {
        return;
    }
    let preview = preview(1, "confined");
    let settings = settings(Quota { cpu: Some("2".into()), memory: Some("2Gi".into()), pods: Some(10) });
    let admin = client_as(None).await;
    apply_all(&admin, &bundle::objects(&preview, &settings)).await;

    let started = Instant::now();
    let account = client_as(Some(&bundle::service_account_user(&preview))).await;
    let ns = preview.namespace.as_str();
    Api::<ConfigMap>::namespaced(account.clone(), ns).create(&PostParams::default(), &config_map("app")).await.unwrap();
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "app"},
        "spec": {
            "selector": {"matchLabels": {"app": "app"}},
            "template": {
                "metadata": {"labels": {"app": "app"}},
                "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1"}]},
            },
        },
    }))
    .unwrap();
    Api::<Deployment>::namespaced(account.clone(), ns).create(&PostParams::default(), &deployment).await.unwrap();

    let outside = Api::<ConfigMap>::namespaced(account.clone(), "default")
        .create(&PostParams::default(), &config_map("escape"))
        .await;
    let message = forbidden(outside, "a ConfigMap in `default`");
    assert!(message.contains(&format!("system:serviceaccount:{ns}:{SERVICE_ACCOUNT}")), "{message}");
    let role: ClusterRole = serde_json::from_value(json!({"metadata": {"name": "escape"}, "rules": []})).unwrap();
    forbidden(Api::<ClusterRole>::all(account.clone()).create(&PostParams::default(), &role).await, "a ClusterRole");
    // `admin` only reads ResourceQuotas and LimitRanges: the repository cannot lift its limits.
    forbidden(
        Api::<ResourceQuota>::namespaced(account.clone(), ns).delete(bundle::NAME, &DeleteParams::default()).await,
        "deleting the ResourceQuota",
    );
    forbidden(
        Api::<LimitRange>::namespaced(account.clone(), ns).delete(bundle::NAME, &DeleteParams::default()).await,
        "deleting the LimitRange",
    );
    eprintln!("[preview] the account's checks took {}ms", started.elapsed().as_millis());

    // The sim cluster has no network plugin, so nothing enforces these: only their shape is
    // checked here, as the API server stored it.
    let policies = Api::<NetworkPolicy>::namespaced(admin.clone(), ns);
    let spec = |name: &'static str| {
        let policies = policies.clone();
        async move { serde_json::to_value(policies.get(name).await.unwrap().spec.unwrap()).unwrap() }
    };
    let deny = spec(DENY_INGRESS).await;
    assert_eq!(deny["podSelector"], json!({}));
    assert_eq!(deny["policyTypes"], json!(["Ingress"]));
    assert!(deny.get("ingress").is_none_or(|rules| rules == &json!([])), "no rule lets anything in: {deny}");
    assert_eq!(spec(ALLOW_SAME_NAMESPACE).await["ingress"], json!([{"from": [{"podSelector": {}}]}]));
    assert_eq!(
        spec(ALLOW_INGRESS_CONTROLLER).await["ingress"],
        json!([{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]}])
    );
}

/// The ResourceQuota caps the pods, and the LimitRange gives a container without resources
/// the profile's defaults (which the cpu and memory quota require every pod to have).
#[tokio::test]
async fn quota_and_limit_range_apply_to_pods() {
    if !sim_available() {
        return;
    }
    let preview = preview(2, "quota");
    let settings = settings(Quota { cpu: Some("2".into()), memory: Some("2Gi".into()), pods: Some(2) });
    let admin = client_as(None).await;
    apply_all(&admin, &bundle::objects(&preview, &settings)).await;
    let ns = preview.namespace.as_str();

    // Quota admission reads a quota's `status.hard`, which the controller manager writes: until
    // then the quota is ignored, and pods are admitted without being counted.
    let started = Instant::now();
    let quotas = Api::<ResourceQuota>::namespaced(admin.clone(), ns);
    eventually("the controller manager counts the quota", QUOTA_DEADLINE, || {
        let quotas = quotas.clone();
        async move {
            let quota = quotas.get(bundle::NAME).await.map_err(|e| e.to_string())?;
            let hard = quota.status.as_ref().and_then(|s| s.hard.clone());
            if hard.is_some() && hard == quota.spec.as_ref().and_then(|s| s.hard.clone()) {
                Ok(())
            } else {
                Err(format!("status {:?}", quota.status))
            }
        }
    })
    .await;
    eprintln!("[preview] the quota was counted after {:.1}s", started.elapsed().as_secs_f64());

    let account = client_as(Some(&bundle::service_account_user(&preview))).await;
    let pods = Api::<Pod>::namespaced(account, ns);
    let first = pods.create(&PostParams::default(), &pod("first")).await.unwrap();
    let resources = serde_json::to_value(&first.spec.unwrap().containers[0].resources).unwrap();
    assert_eq!(
        resources,
        json!({"limits": {"cpu": "300m", "memory": "256Mi"}, "requests": {"cpu": "50m", "memory": "64Mi"}}),
        "the LimitRange's defaults"
    );
    pods.create(&PostParams::default(), &pod("second")).await.unwrap();
    let message = forbidden(pods.create(&PostParams::default(), &pod("third")).await, "a third pod");
    assert!(message.contains("exceeded quota"), "{message}");
    assert!(message.contains("pods=2"), "{message}");
}

/// The rights `devenv preview rbac --user devenv-ci` prints: applied by an admin, they let
/// devenv-ci make a preview namespace and its bundle, and nothing outside `pr-*` namespaces
/// labelled as devenv's.
#[tokio::test]
async fn the_ci_identity_works_only_in_preview_namespaces() {
    if !sim_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let output = devenv_in(dir.path()).args(["preview", "rbac", "--user", "devenv-ci"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    let objects: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|document| serde::Deserialize::deserialize(document).unwrap())
        .collect();
    assert_eq!(objects.len(), 4, "{text}");
    let admin = client_as(None).await;
    apply_all(&admin, &objects).await;
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &namespace_object("team-a", json!({})))
        .await
        .unwrap();

    let ci = client_as(Some("devenv-ci")).await;
    let namespaces = Api::<Namespace>::all(ci.clone());
    let started = Instant::now();
    // The policy is in force once it denies: until the API server has loaded it, a namespace
    // outside `pr-*` is created (and removed again by the admin before the next try).
    let message = eventually("the admission policy denies `prod`", POLICY_DEADLINE, || {
        let (namespaces, admin) = (namespaces.clone(), admin.clone());
        async move {
            let prod = namespace_object("prod", json!({"app.kubernetes.io/managed-by": "devenv"}));
            match namespaces.create(&PostParams::default(), &prod).await {
                Err(kube::Error::Api(status))
                    if status.code == 403 && status.message.contains("ValidatingAdmissionPolicy") =>
                {
                    Ok(status.message)
                }
                Ok(_) => {
                    let _ = Api::<Namespace>::all(admin).delete("prod", &DeleteParams::default()).await;
                    Err("`prod` was created".to_string())
                }
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await;
    eprintln!("[preview] the admission policy was in force after {:.1}s", started.elapsed().as_secs_f64());
    assert!(message.contains("may create, change or delete only namespaces named pr-*"), "{message}");

    // A preview namespace and its whole bundle, as CI would apply them: the ClusterRole covers
    // every object, and `bind` on `admin` the RoleBinding.
    let preview = preview(7, "shop");
    assert_eq!(preview.namespace, "pr-7-shop");
    let quota = Quota { cpu: Some("2".into()), memory: Some("2Gi".into()), pods: Some(10) };
    apply_all(&ci, &bundle::objects(&preview, &settings(quota))).await;
    Api::<ConfigMap>::namespaced(ci.clone(), "pr-7-shop")
        .create(&PostParams::default(), &config_map("environment"))
        .await
        .unwrap();

    let message = forbidden(
        Api::<ConfigMap>::namespaced(ci.clone(), "default").create(&PostParams::default(), &config_map("escape")).await,
        "a ConfigMap in `default`",
    );
    assert!(message.contains("may change objects only in namespaces named pr-* that devenv made"), "{message}");
    let unlabelled = namespace_object("pr-8-shop", json!({}));
    let message = forbidden(namespaces.create(&PostParams::default(), &unlabelled).await, "an unlabelled namespace");
    assert!(message.contains("must be labelled app.kubernetes.io/managed-by=devenv"), "{message}");
    let message = forbidden(namespaces.delete("team-a", &DeleteParams::default()).await, "deleting `team-a`");
    assert!(message.contains("only namespaces"), "{message}");
    // A `pr-*` namespace devenv did not make is not CI's either.
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &namespace_object("pr-9-foreign", json!({})))
        .await
        .unwrap();
    let message = forbidden(
        Api::<ConfigMap>::namespaced(ci.clone(), "pr-9-foreign")
            .create(&PostParams::default(), &config_map("escape"))
            .await,
        "a ConfigMap in `pr-9-foreign`",
    );
    assert!(message.contains("that devenv made"), "{message}");
    let message =
        forbidden(namespaces.delete("pr-9-foreign", &DeleteParams::default()).await, "deleting `pr-9-foreign`");
    assert!(message.contains("only namespaces devenv made"), "{message}");
    forbidden(
        Api::<ClusterRole>::all(ci.clone())
            .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap())
            .await,
        "a ClusterRole",
    );
    // Reads are not admission's to limit, so the role gives none on Secrets.
    forbidden(
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(ci.clone(), "default").list(&Default::default()).await,
        "listing Secrets",
    );
    namespaces.delete("pr-7-shop", &DeleteParams::default()).await.unwrap();
}

const PLATFORM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/platform");

/// A clone of the platform fixture under git, with a preview profile for the test cluster;
/// each command runs as the CI identity `devenv-ci` (a kubeconfig that impersonates it).
struct PreviewRepo {
    dir: tempfile::TempDir,
    state: tempfile::TempDir,
    kubeconfig: PathBuf,
    commits: Vec<String>,
}

impl PreviewRepo {
    fn new(project: &str, max_previews: u32) -> PreviewRepo {
        let info = cluster();
        let dir = tempfile::tempdir().unwrap();
        common::copy_tree(Path::new(PLATFORM), dir.path());
        let manifest = std::fs::read_to_string(dir.path().join("devenv.yaml")).unwrap();
        std::fs::write(
            dir.path().join("devenv.yaml"),
            manifest.replace("project: platform", &format!("project: {project}")),
        )
        .unwrap();
        let profile = format!(
            "cluster:\n  provider: eks-namespace\n  context: {}\nregistry:\n  url: {}\nquota:\n  pods: 20\nmaxPreviews: {max_previews}\n",
            info.context, info.registry
        );
        std::fs::create_dir_all(dir.path().join(".devenv/profiles")).unwrap();
        std::fs::write(dir.path().join(".devenv/profiles/preview.yaml"), profile).unwrap();
        // The same cluster, as the CI identity: every request impersonates `devenv-ci`.
        let mut kubeconfig: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&info.kubeconfig).unwrap()).unwrap();
        for user in kubeconfig["users"].as_sequence_mut().unwrap() {
            user["user"]["as"] = "devenv-ci".into();
        }
        let path = dir.path().join(".ci-kubeconfig");
        std::fs::write(&path, serde_yaml::to_string(&kubeconfig).unwrap()).unwrap();
        let mut repo = PreviewRepo { dir, state: tempfile::tempdir().unwrap(), kubeconfig: path, commits: Vec::new() };
        repo.git(&["init", "-q"]);
        repo.commit("first");
        repo
    }

    fn git(&self, args: &[&str]) -> String {
        let output = std::process::Command::new("git")
            .args(["-c", "user.name=ci", "-c", "user.email=ci@example.com"])
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    }

    fn commit(&mut self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        let sha = self.git(&["rev-parse", "HEAD"]);
        self.commits.push(sha.clone());
        sha
    }

    fn write(&self, relative: &str, text: &str) {
        std::fs::write(self.dir.path().join(relative), text).unwrap();
    }

    /// Runs `devenv preview ARGS --output json`: exit code, result, and all it printed.
    fn preview(&self, args: &[&str]) -> (i32, Value, String) {
        let started = Instant::now();
        let output = devenv_in(self.dir.path())
            .arg("preview")
            .args(args)
            .args(["--output", "json"])
            .env("KUBECONFIG", &self.kubeconfig)
            .env("DEVENV_STATE_DIR", self.state.path())
            .output()
            .unwrap();
        // Under `--output json` an error is a JSON line on stdout.
        let stderr = format!("{}{}", String::from_utf8_lossy(&output.stderr), String::from_utf8_lossy(&output.stdout));
        eprintln!("[preview] preview {args:?}: {:.1}s", started.elapsed().as_secs_f64());
        let result = common::result_json(&output.stdout);
        (output.status.code().unwrap_or(-1), result, stderr)
    }

    /// Runs a preview command that must succeed; its result has the README's shape.
    fn ok(&self, args: &[&str]) -> Value {
        let (code, result, stderr) = self.preview(args);
        assert_eq!(code, 0, "preview {args:?} failed: {stderr}\n{result}");
        common::shape::Shapes::from_readme().check_line(&format!("preview-{}", args[0]), &result);
        result
    }
}

impl Drop for PreviewRepo {
    fn drop(&mut self) {
        // Best effort: a failed test leaves no preview behind.
        for listed in self.preview(&["list"]).1["previews"].as_array().cloned().unwrap_or_default() {
            let pr = listed["pr"].to_string();
            let _ = self.preview(&["down", "--pr", &pr]);
        }
    }
}

/// Applies what `devenv preview rbac --user devenv-ci` prints, as a cluster admin would.
async fn grant_ci_identity() {
    let admin = client_as(None).await;
    apply_all(&admin, &devenv::preview::rbac::objects(&devenv::preview::rbac::Subject::User("devenv-ci".into()))).await;
}

/// The Flux objects of a preview's namespace: name, generation (what changes when anyone
/// changes its spec) and whether it is Ready.
async fn flux_objects(client: &kube::Client, namespace: &str) -> Vec<(String, i64, bool)> {
    let mut found = Vec::new();
    for (group, kind, plural) in [
        ("kustomize.toolkit.fluxcd.io", "Kustomization", "kustomizations"),
        ("helm.toolkit.fluxcd.io", "HelmRelease", "helmreleases"),
    ] {
        let resource = kube::core::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk(group, if kind == "HelmRelease" { "v2" } else { "v1" }, kind),
            plural,
        );
        let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        for object in api.list(&Default::default()).await.unwrap().items {
            let ready = object
                .data
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|conditions| conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
            found.push((
                format!("{kind}/{}", object.metadata.name.clone().unwrap()),
                object.metadata.generation.unwrap_or_default(),
                ready,
            ));
        }
    }
    found.sort();
    found
}

/// The namespace's Flux objects once all are Ready; a periodic reconcile may be under way.
async fn all_ready(client: &kube::Client, namespace: &str) -> Vec<(String, i64, bool)> {
    eventually("every Flux object Ready", Duration::from_secs(60), || async {
        let objects = flux_objects(client, namespace).await;
        if objects.iter().all(|(_, _, ready)| *ready) { Ok(objects) } else { Err(format!("{objects:?}")) }
    })
    .await
}

/// `preview up`, `list`, `down` and `gc`, run as the CI identity: two previews of one project
/// coexist, each acting only inside its namespace; an older commit, a preview over the cap
/// and a manifest that reaches outside the namespace are refused with their ids; `gc` and
/// `down` remove only what they should.
#[tokio::test]
async fn previews_are_made_listed_and_removed_by_the_ci_identity() {
    if !sim_available() {
        return;
    }
    grant_ci_identity().await;
    let admin = client_as(None).await;
    let mut repo = PreviewRepo::new("store", 2);
    let old = repo.commits[0].clone();
    repo.write("apps/local/kustomization.yaml", "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../base/greeter\ncommonLabels:\n  preview: \"yes\"\n");
    let new = repo.commit("second");

    let up = repo.ok(&["up", "--pr", "1", "--sha", &new, "--timeout", "3m"]);
    assert_eq!(up["namespace"], "pr-1-store");
    assert_eq!(up["status"], "Ready");
    assert_eq!(up["sha"], new.as_str());
    let objects: Vec<&str> = up["flux"].as_array().unwrap().iter().map(|o| o["object"].as_str().unwrap()).collect();
    for object in
        ["Kustomization/pr-1-store/devenv-root", "Kustomization/pr-1-store/apps", "HelmRelease/pr-1-store/greeter"]
    {
        assert!(objects.contains(&object), "{objects:?}");
    }
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let namespace = namespaces.get("pr-1-store").await.unwrap();
    let labels = namespace.metadata.labels.clone().unwrap();
    assert_eq!(labels["devenv.io/sha"], new);
    assert_eq!(labels["devenv.io/pr"], "1");
    assert!(namespace.metadata.annotations.unwrap().contains_key("devenv.io/expires-at"));
    // Every Flux object of the preview acts as the preview's account.
    let kustomization: kube::api::DynamicObject = Api::namespaced_with(
        admin.clone(),
        "pr-1-store",
        &kube::core::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("kustomize.toolkit.fluxcd.io", "v1", "Kustomization"),
            "kustomizations",
        ),
    )
    .get("apps")
    .await
    .unwrap();
    assert_eq!(kustomization.data["spec"]["serviceAccountName"], SERVICE_ACCOUNT);
    assert_eq!(kustomization.data["spec"]["targetNamespace"], "pr-1-store");
    // The chart's Deployment, installed by helm-controller acting as the account, is there.
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "pr-1-store");
    assert!(!deployments.list(&Default::default()).await.unwrap().items.is_empty(), "the greeter's Deployment");

    let second = repo.ok(&["up", "--pr", "2", "--sha", &new, "--timeout", "3m"]);
    assert_eq!(second["namespace"], "pr-2-store");
    let listed = repo.ok(&["list"]);
    let previews = listed["previews"].as_array().unwrap();
    assert_eq!(previews.iter().map(|p| p["pr"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2], "{listed}");
    assert!(previews.iter().all(|p| p["ready"] == true && p["sha"] == new.as_str()), "{listed}");
    let second_before = all_ready(&admin, "pr-2-store").await;

    // An older commit never replaces a newer one.
    let (code, _, stderr) = repo.preview(&["up", "--pr", "1", "--sha", &old]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("\"DEV071\""), "{stderr}");
    assert!(stderr.contains(&format!("commit {old} is older than {new}")), "{stderr}");
    // The cap: two previews exist, a third is refused before anything is made.
    let (code, _, stderr) = repo.preview(&["up", "--pr", "3", "--sha", &new]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("\"DEV072\"") && stderr.contains("maxPreviews: 2"), "{stderr}");
    assert!(namespaces.get_opt("pr-3-store").await.unwrap().is_none());

    // A manifest that reaches outside the namespace fails as the preview's account, named
    // with its Kustomization; the fix reaches the cluster on the next `up`.
    repo.write(
        "apps/local/escape.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: preview-escape\nrules: []\n",
    );
    repo.write("apps/local/kustomization.yaml", "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../base/greeter\n  - escape.yaml\n");
    let escape = repo.commit("escape");
    let (code, _, stderr) = repo.preview(&["up", "--pr", "1", "--sha", &escape, "--timeout", "2m"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("\"DEV062\""), "{stderr}");
    assert!(stderr.contains("Kustomization/pr-1-store/apps"), "{stderr}");
    assert!(stderr.contains("forbidden") && stderr.contains("devenv-preview"), "{stderr}");
    let cluster_roles: Api<ClusterRole> = Api::all(admin.clone());
    assert!(cluster_roles.get_opt("preview-escape").await.unwrap().is_none());
    std::fs::remove_file(repo.dir.path().join("apps/local/escape.yaml")).unwrap();
    repo.write(
        "apps/local/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../base/greeter\n",
    );
    let fixed = repo.commit("fixed");
    let up = repo.ok(&["up", "--pr", "1", "--sha", &fixed, "--timeout", "3m"]);
    assert_eq!(up["status"], "Ready");

    // `gc`: a dry run deletes nothing; a kept preview stays; a closed one goes.
    let dry = repo.ok(&["gc", "--open-prs", "2", "--dry-run"]);
    assert_eq!(dry["deleted"].as_array().unwrap().len(), 1, "{dry}");
    assert_eq!(dry["deleted"][0]["pr"], 1);
    assert!(namespaces.get_opt("pr-1-store").await.unwrap().is_some(), "a dry run deletes nothing");
    let mut kept = namespaces.get("pr-1-store").await.unwrap();
    kept.metadata.labels.as_mut().unwrap().insert("devenv.io/keep".into(), "true".into());
    kept.metadata.managed_fields = None;
    namespaces.replace("pr-1-store", &PostParams::default(), &kept).await.unwrap();
    let gc = repo.ok(&["gc", "--open-prs", "2"]);
    assert_eq!(gc["deleted"], json!([]), "{gc}");
    assert_eq!(gc["kept"].as_array().unwrap().len(), 2, "{gc}");

    // `down` of one leaves the other as it was; `down` again is fine.
    let down = repo.ok(&["down", "--pr", "1", "--wait"]);
    assert_eq!(down["existed"], true);
    assert!(!down["removed"]["pruned"].as_array().unwrap().is_empty(), "{down}");
    assert!(namespaces.get_opt("pr-1-store").await.unwrap().is_none());
    assert_eq!(all_ready(&admin, "pr-2-store").await, second_before, "pr 2 is untouched");
    let again = repo.ok(&["down", "--pr", "1"]);
    assert_eq!(again["existed"], false);

    // An expired preview goes with `gc`.
    repo.ok(&["up", "--pr", "3", "--sha", &fixed, "--ttl", "1s", "--timeout", "3m"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let gc = repo.ok(&["gc"]);
    let deleted: Vec<u64> = gc["deleted"].as_array().unwrap().iter().map(|d| d["pr"].as_u64().unwrap()).collect();
    assert_eq!(deleted, [3], "{gc}");
    assert!(gc["deleted"][0]["reason"].as_str().unwrap().starts_with("expired at"), "{gc}");
    assert_eq!(all_ready(&admin, "pr-2-store").await, second_before, "pr 2 is untouched");
    repo.ok(&["down", "--pr", "2", "--wait"]);
}

/// A workload over the preview's quota: the API server refuses its pod, and `preview up`
/// reports the refusal with the Kustomization that applied it.
#[tokio::test]
async fn a_workload_over_the_quota_is_reported() {
    if !sim_available() {
        return;
    }
    grant_ci_identity().await;
    let repo = PreviewRepo::new("quota", 5);
    let profile = repo.dir.path().join(".devenv/profiles/preview.yaml");
    let text = std::fs::read_to_string(&profile).unwrap().replace("quota:\n  pods: 20\n", "quota:\n  memory: 1Gi\n");
    std::fs::write(&profile, text).unwrap();
    // The apps wait 20s for their workloads rather than the fixture's two minutes.
    let apps = repo.dir.path().join("clusters/local/apps.yaml");
    std::fs::write(&apps, std::fs::read_to_string(&apps).unwrap().replace("timeout: 2m", "timeout: 20s")).unwrap();
    repo.write(
        "apps/local/hungry.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: hungry\nspec:\n  selector:\n    matchLabels: {app: hungry}\n  template:\n    metadata:\n      labels: {app: hungry}\n    spec:\n      containers:\n        - name: app\n          image: registry.example.com/hungry:1\n          resources:\n            limits: {memory: 2Gi}\n",
    );
    repo.write(
        "apps/local/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../base/greeter\n  - hungry.yaml\n",
    );
    let (code, _, text) = repo.preview(&["up", "--pr", "5", "--timeout", "3m"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("\"DEV062\""), "{text}");
    assert!(text.contains("Kustomization/pr-5-quota/apps"), "{text}");
    assert!(text.contains("Deployment/pr-5-quota/hungry"), "{text}");
    assert!(text.contains("exceeded quota: devenv-preview"), "the API server's refusal: {text}");
}

const WORKFLOW: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/github-actions/preview.yaml");

/// The `run:` block of the workflow's step that runs `devenv preview <command>`, in `job`.
fn workflow_step(job: &str, command: &str) -> String {
    let workflow: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(WORKFLOW).unwrap()).unwrap();
    let steps = workflow["jobs"][job]["steps"].as_sequence().unwrap_or_else(|| panic!("no job `{job}`"));
    steps
        .iter()
        .filter_map(|step| step["run"].as_str())
        .find(|run| run.contains(&format!("devenv preview {command}")))
        .unwrap_or_else(|| panic!("job `{job}` has no `devenv preview {command}` step"))
        .to_string()
}

/// Runs a step as GitHub Actions does (`bash -eo pipefail`), its `${{ … }}` replaced by
/// `values`, with devenv and jq on the PATH; returns what it wrote to `$GITHUB_OUTPUT`.
fn run_step(repo: &PreviewRepo, script: &str, values: &[(&str, &str)]) -> String {
    let mut script = script.to_string();
    for (expression, value) in values {
        script = script.replace(&format!("${{{{ {expression} }}}}"), value);
    }
    assert!(!script.contains("${{"), "an expression the test does not fill: {script}");
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_devenv"), bin.path().join("devenv")).unwrap();
    let output_file = bin.path().join("github-output");
    std::fs::write(&output_file, "").unwrap();
    let started = Instant::now();
    let output = std::process::Command::new("bash")
        .args(["--noprofile", "--norc", "-eo", "pipefail", "-c", &script])
        .current_dir(repo.dir.path())
        .env("PATH", format!("{}:{}", bin.path().display(), std::env::var("PATH").unwrap()))
        .env("KUBECONFIG", &repo.kubeconfig)
        .env("DEVENV_STATE_DIR", repo.state.path())
        .env("GITHUB_OUTPUT", &output_file)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    eprintln!("[preview] workflow step: {:.1}s", started.elapsed().as_secs_f64());
    assert!(
        output.status.success(),
        "the step failed:\n{script}\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read_to_string(output_file).unwrap() + &String::from_utf8_lossy(&output.stdout)
}

/// The example workflow's own `devenv preview` steps, run as written: `up` for two pushes of
/// two pull requests fills the step outputs the comment uses, `gc` with the open pull
/// requests removes the closed one's preview, `down` the other's.
#[tokio::test]
async fn the_github_actions_workflow_runs_its_preview_steps() {
    if !sim_available() {
        return;
    }
    if which("jq").is_none() {
        assert!(!common::in_ci(), "the workflow's steps need jq");
        eprintln!("skipping: no jq");
        return;
    }
    grant_ci_identity().await;
    let admin = client_as(None).await;
    let repo = PreviewRepo::new("ci-shop", 5);
    let sha = repo.commits[0].clone();
    let up = workflow_step("up", "up");
    for pr in ["11", "12"] {
        let values = [("github.event.pull_request.number", pr), ("github.event.pull_request.head.sha", sha.as_str())];
        let outputs = run_step(&repo, &up, &values);
        assert!(outputs.contains(&format!("namespace=pr-{pr}-ci-shop\n")), "{outputs}");
        assert!(outputs.contains("expires-at=20"), "{outputs}");
        let objects: usize = outputs.lines().find_map(|l| l.strip_prefix("objects=")).unwrap().parse().unwrap();
        assert!(objects >= 5, "{outputs}");
    }
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let gc = run_step(&repo, &workflow_step("gc", "gc"), &[("steps.open.outputs.prs", "12")]);
    assert!(gc.contains(r#"{"deleted":[11],"kept":[12]}"#), "{gc}");
    let down = workflow_step("down", "down");
    let removed = run_step(&repo, &down, &[("github.event.pull_request.number", "12")]);
    assert!(removed.contains(r#""existed":true"#), "{removed}");
    assert!(namespaces.get_opt("pr-12-ci-shop").await.unwrap().is_none());
    // `gc` does not wait for a namespace to go; until it has, a later `gc` keeps it as
    // already being deleted.
    let _ = eventually("pr-11-ci-shop is gone", Duration::from_secs(60), || {
        let namespaces = namespaces.clone();
        async move {
            match namespaces.get_opt("pr-11-ci-shop").await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(_) => Err("still there".to_string()),
            }
        }
    })
    .await;
    // No pull request open: `gh pr list` prints nothing, and nothing is left to delete.
    let gc = run_step(&repo, &workflow_step("gc", "gc"), &[("steps.open.outputs.prs", "")]);
    assert!(gc.contains(r#"{"deleted":[],"kept":[]}"#), "{gc}");
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(program)).find(|path| path.is_file())
}

/// A run holding the preview's Lease makes `preview up` wait and, after `--timeout`, stop
/// with `DEV073` naming the holder; a namespace a finalizer holds makes `preview down --wait`
/// stop with `DEV075` naming what holds it.
#[tokio::test]
async fn a_held_lease_and_a_stuck_namespace_are_named() {
    if !sim_available() {
        return;
    }
    grant_ci_identity().await;
    let admin = client_as(None).await;
    let repo = PreviewRepo::new("held", 5);
    let sha = repo.commits[0].clone();
    repo.ok(&["up", "--pr", "4", "--sha", &sha, "--timeout", "3m"]);

    let held = devenv::preview::lease::acquire(
        &admin,
        "pr-4-held",
        "devenv preview up --pr 4 (another job)",
        Duration::from_secs(5),
        &SilentReporter,
    )
    .await
    .unwrap();
    let (code, _, text) = repo.preview(&["up", "--pr", "4", "--sha", &sha, "--timeout", "2s"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("\"DEV073\""), "{text}");
    assert!(text.contains("devenv preview up --pr 4 (another job)"), "the holder is named: {text}");
    held.release().await.unwrap();
    repo.ok(&["up", "--pr", "4", "--sha", &sha, "--timeout", "3m"]);

    // Something in the namespace with a finalizer no controller removes.
    let held_map: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "held", "finalizers": ["example.com/hold"]},
    }))
    .unwrap();
    let config_maps = Api::<ConfigMap>::namespaced(admin.clone(), "pr-4-held");
    config_maps.create(&PostParams::default(), &held_map).await.unwrap();
    let (code, _, text) = repo.preview(&["down", "--pr", "4", "--wait", "--timeout", "15s"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("\"DEV075\""), "{text}");
    assert!(text.contains("namespace `pr-4-held` is still terminating"), "{text}");
    assert!(text.contains("example.com/hold"), "what holds it is named: {text}");
    let patch = json!({"metadata": {"finalizers": null}});
    config_maps.patch("held", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await.unwrap();
    let again = repo.ok(&["down", "--pr", "4", "--wait"]);
    assert_eq!(again["existed"], true, "a terminating namespace is still the preview's: {again}");
}

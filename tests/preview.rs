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

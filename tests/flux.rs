//! Flux tier: `devenv up --profile sim` on a Landbay-style GitOps repository, with a real
//! control plane, real Flux controllers and a real MariaDB in Docker; then the inner loop,
//! a broken manifest, and `down`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use common::shape::Shapes;
use common::{TestRepo, cluster_client, copy_tree, mariadb_image, result_json, tier_available};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::api::networking::v1::IngressClass;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/landbay");

/// The fixture in a temporary directory, with the test MariaDB image, if both tiers can run.
fn fixture(env: &str) -> Option<TestRepo> {
    let image = mariadb_image()?;
    let problem = devenv::providers::sim::binaries().err().map(|e| format!("{e}; run `devenv sim build`"));
    if !tier_available("sim", problem) {
        return None;
    }
    let repo = TestRepo::new(env, "");
    copy_tree(Path::new(FIXTURE), repo.path());
    repo.override_image("rds-mariadb", &image);
    Some(repo)
}

fn up(repo: &TestRepo) -> serde_json::Value {
    repo.up_json(&["--env", &repo.env, "--timeout", "120s"]).1
}

/// Whether an object exists, read through discovery as `kubectl get` would.
async fn exists(client: &kube::Client, api_version: &str, kind: &str, namespace: &str, name: &str) -> bool {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let (resource, _) =
        kube::discovery::pinned_kind(client, &GroupVersionKind::gvk(group, version, kind)).await.unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    api.get_opt(name).await.unwrap().is_some()
}

fn env_value(deployment: &Deployment, name: &str) -> Option<String> {
    let container = &deployment.spec.as_ref()?.template.spec.as_ref()?.containers[0];
    container.env.as_ref()?.iter().find(|e| e.name == name)?.value.clone()
}

#[tokio::test]
async fn up_applies_the_platform_with_the_overlay_and_edits_reach_the_cluster() {
    let Some(repo) = fixture("t-flux") else { return };
    let result = up(&repo);
    let shapes = Shapes::from_readme();
    shapes.check_line("up", &result);

    // The environment's kubeconfig for kubectl: the sim cluster's own, its context current.
    let output = repo.devenv().args(["env", "--env", "t-flux", "--kubeconfig"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let kubeconfig = result["cluster"]["kubeconfig"].as_str().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), format!("export KUBECONFIG='{kubeconfig}'\n"));

    // Every Kustomization of the graph is Ready; the AWS-only one is not there.
    let objects: Vec<&str> =
        result["flux"]["objects"].as_array().unwrap().iter().map(|o| o["object"].as_str().unwrap()).collect();
    for name in ["devenv-root", "crds", "platform", "apps"] {
        assert!(objects.contains(&format!("Kustomization/flux-system/{name}").as_str()), "{objects:?}");
    }
    assert!(objects.contains(&"HelmRelease/lending/audit"), "{objects:?}");
    assert!(objects.contains(&"HelmRelease/lending/statements"), "{objects:?}");
    assert!(!objects.iter().any(|o| o.contains("aws-load-balancer-controller")), "{objects:?}");
    let artifacts = &result["flux"]["artifacts"];
    let pushed = |artifacts: &serde_json::Value| artifacts["pushed"].as_array().unwrap().clone();
    assert_eq!(pushed(artifacts), ["devenv-ks-apps", "devenv-ks-crds", "devenv-ks-platform", "devenv-source"]);
    assert_eq!(artifacts["charts"][0]["pushed"], true, "the chart is published from the working tree");

    let client = cluster_client(&result).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "lending");
    let loans = deployments.get("loans").await.unwrap();
    assert_eq!(loans.spec.as_ref().unwrap().replicas, Some(1), "replicas capped by the overlay");
    assert_eq!(env_value(&loans, "DB_ADDRESS").as_deref(), Some("devenv-t-flux-loans-db:3306"), "the address pods use");
    assert_eq!(env_value(&loans, "DB_NAME").as_deref(), Some("loans"));
    assert_eq!(env_value(&loans, "CLUSTER").as_deref(), Some("local"), "inline substitutions are kept");
    assert_eq!(env_value(&loans, "LOG_LEVEL").as_deref(), Some("info"), "defaults apply");

    let secrets: Api<Secret> = Api::namespaced(client.clone(), "lending");
    let secret = secrets.get("loans-db").await.unwrap();
    let password = secret.data.as_ref().unwrap()["DB_PASSWORD"].0.clone();
    let expected = result["services"][0]["outputs"]["password"].as_str().unwrap();
    assert_eq!(String::from_utf8(password).unwrap(), expected, "secret outputs come through the environment Secret");

    let scripts: Api<ConfigMap> = Api::namespaced(client.clone(), "lending");
    let script = scripts.get("ledger-scripts").await.unwrap().data.unwrap()["nightly.sh"].clone();
    assert!(script.contains("${LEDGER_DAY}"), "substitution-disabled objects stay untouched: {script}");

    // In sim no pod serves a webhook, so the overlay removes admission webhook configurations;
    // with the fixture's in place, the MortgageProduct below would be rejected.
    let webhooks: Api<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration> =
        Api::all(client.clone());
    assert!(webhooks.get_opt("lending-policy").await.unwrap().is_none(), "webhooks are removed in sim");
    let classes: Api<IngressClass> = Api::all(client.clone());
    assert!(classes.get_opt("alb").await.unwrap().is_none(), "the disabled AWS component is not applied");
    let product = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("lending.example.com", "v1", "MortgageProduct"),
        "mortgageproducts",
    );
    let products: Api<DynamicObject> = Api::namespaced_with(client.clone(), "lending", &product);
    let two_year = products.get("two-year-fixed").await.unwrap();
    assert_eq!(two_year.data["spec"]["region"], "us-east-1", "CRDs first, then their objects, with the profile's keys");

    // The HelmRelease installed the chart from the environment's registry (the source-URL
    // map re-pointed it), with values substituted and replicas capped by a post-renderer.
    let audit = deployments.get("audit").await.unwrap();
    assert_eq!(audit.spec.as_ref().unwrap().replicas, Some(1), "the release asks for 2, the overlay caps it");
    assert_eq!(env_value(&audit, "DB_ADDRESS").as_deref(), Some("devenv-t-flux-loans-db:3306"));
    // A HelmRelease whose chart is a directory of the repository's own source installs it
    // from the working tree.
    let statements = deployments.get("statements").await.unwrap();
    assert_eq!(statements.spec.as_ref().unwrap().replicas, Some(1));
    assert_eq!(env_value(&statements, "REGION").as_deref(), Some("us-east-1"));
    assert_eq!(env_value(&statements, "TIER").as_deref(), Some("priority"), "its valuesFiles are merged");

    // status shows the same objects, all Ready.
    let output = repo.devenv().args(["status", "--env", "t-flux", "--output", "json"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let status = result_json(&output.stdout);
    shapes.check_line("status", &status);
    assert!(!status["processes"].as_array().unwrap().is_empty(), "{status}");
    let listed: Vec<&str> = status["flux"].as_array().unwrap().iter().map(|o| o["object"].as_str().unwrap()).collect();
    assert_eq!(listed.len(), objects.len(), "{listed:?} vs {objects:?}");
    assert!(status["flux"].as_array().unwrap().iter().all(|o| o["ready"] == true), "{}", status["flux"]);
    assert_eq!(listed[0], "Kustomization/flux-system/devenv-root", "the tree starts at the root");

    // A no-op up pushes nothing.
    let again = up(&repo);
    assert!(pushed(&again["flux"]["artifacts"]).is_empty(), "{again}");
    assert_eq!(again["flux"]["artifacts"]["charts"][0]["pushed"], false);

    // The inner loop: an edited manifest is live after one up.
    let manifest = repo.path().join("apps/base/orders/deployment.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("${LOG_LEVEL:=info}", "${LOG_LEVEL:=debug}")).unwrap();
    // `plan` shows what the next `up` does, and that `up` carries out this very plan.
    let output = repo.devenv().args(["plan", "--env", "t-flux", "--output", "json"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut planned = result_json(&output.stdout);
    shapes.check_line("plan", &planned);
    let started = Instant::now();
    let edited = up(&repo);
    eprintln!("edit to Ready: {:?}", started.elapsed());
    assert_eq!(pushed(&edited["flux"]["artifacts"]), ["devenv-ks-apps"], "only the artifact that reads the file");
    let planned = planned.as_object_mut().unwrap();
    planned.remove("event");
    planned.remove("schemaVersion");
    assert_eq!(edited["plan"], serde_json::Value::Object(planned.clone()), "up carried out the plan shown");
    assert_eq!(edited["plan"]["cluster"]["intent"]["action"], "reuse", "{}", edited["plan"]);
    assert_eq!(edited["plan"]["services"][0]["action"], "keep", "{}", edited["plan"]);
    // The digests the plan shows are those pushed: new ones exactly for what `up` pushed.
    let digests = |result: &serde_json::Value| -> std::collections::BTreeMap<String, String> {
        (result["plan"]["flux"]["artifacts"].as_array().unwrap().iter())
            .map(|a| (a["source"].as_str().unwrap().to_string(), a["digest"].as_str().unwrap().to_string()))
            .collect()
    };
    let before = digests(&again);
    let changed: Vec<String> = digests(&edited)
        .into_iter()
        .filter(|(source, digest)| before.get(source) != Some(digest))
        .map(|(s, _)| s)
        .collect();
    assert_eq!(changed, pushed(&edited["flux"]["artifacts"]), "{} then {}", again["plan"], edited["plan"]);
    let loans = deployments.get("loans").await.unwrap();
    assert_eq!(env_value(&loans, "LOG_LEVEL").as_deref(), Some("debug"));

    // A chart edit: the chart is re-published, and `up` returns once the release upgraded.
    let values = repo.path().join("charts/audit/values.yaml");
    let chart_values = std::fs::read_to_string(&values).unwrap();
    std::fs::write(&values, chart_values.replace("audit:2.4.1", "audit:2.4.2")).unwrap();
    let charted = up(&repo);
    assert!(pushed(&charted["flux"]["artifacts"]).is_empty(), "no tree artifact changed");
    assert_eq!(charted["flux"]["artifacts"]["charts"][0]["pushed"], true);
    assert_eq!(charted["flux"]["artifacts"]["charts"][1]["pushed"], false, "the other chart is unchanged");
    let audit = deployments.get("audit").await.unwrap();
    let image = audit.spec.unwrap().template.spec.unwrap().containers[0].image.clone();
    assert_eq!(image.as_deref(), Some("registry.example.com/lender/audit:2.4.2"), "live when up returns");
    // So is an edit of a values file a HelmRelease names in valuesFiles.
    std::fs::write(repo.path().join("apps/base/statements/values-lending.yaml"), "tier: express\n").unwrap();
    let revalued = up(&repo);
    assert_eq!(revalued["flux"]["artifacts"]["charts"][1]["pushed"], true);
    let statements = deployments.get("statements").await.unwrap();
    assert_eq!(env_value(&statements, "TIER").as_deref(), Some("express"));

    // A broken manifest is stopped before the push, at its place in the user's file.
    std::fs::write(&manifest, format!("{text}  broken: [\n")).unwrap();
    let output = repo.devenv().args(["up", "--env", "t-flux", "--timeout", "120s"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("error[DEV069]: apps/base/orders/deployment.yaml:41:1: not valid YAML"), "{stderr}");
    std::fs::write(&manifest, &text).unwrap();

    // Not Ready in time: DEV063, naming what it still waits for.
    let apps = repo.path().join("clusters/local/apps.yaml");
    let apps_text = std::fs::read_to_string(&apps).unwrap();
    std::fs::write(&apps, apps_text.replace("    - name: platform\n", "    - name: platform\n    - name: not-there\n"))
        .unwrap();
    let output = repo.devenv().args(["up", "--env", "t-flux", "--timeout", "3s"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error[DEV063]: not everything was Ready within 3s; still waiting for: Kustomization/flux-system/apps (dependency 'flux-system/not-there' not found"),
        "{stderr}"
    );
    std::fs::write(&apps, &apps_text).unwrap();
    up(&repo);

    // What Flux applied, listed before down.
    let statements_reference = result["flux"]["artifacts"]["charts"][1]["reference"].as_str().unwrap();
    let statements_source = statements_reference.rsplit('/').next().unwrap().split(':').next().unwrap();
    assert!(statements_source.starts_with("devenv-chart-charts-statements-"), "{statements_reference}");
    let applied = [
        ("apps/v1", "Deployment", "lending", "loans"),
        ("apps/v1", "Deployment", "lending", "ledger"),
        ("apps/v1", "Deployment", "lending", "audit"),
        ("v1", "ConfigMap", "lending", "ledger-scripts"),
        ("v1", "Secret", "lending", "loans-db"),
        ("lending.example.com/v1", "MortgageProduct", "lending", "two-year-fixed"),
        ("helm.toolkit.fluxcd.io/v2", "HelmRelease", "lending", "audit"),
        ("source.toolkit.fluxcd.io/v1", "OCIRepository", "flux-system", statements_source),
        ("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "flux-system", "apps"),
        ("source.toolkit.fluxcd.io/v1", "OCIRepository", "flux-system", "devenv-ks-apps"),
        ("v1", "ConfigMap", "flux-system", "cluster-env"),
    ];
    for (api_version, kind, namespace, name) in applied {
        assert!(
            exists(&client, api_version, kind, namespace, name).await,
            "{kind}/{namespace}/{name} is there before down"
        );
    }

    // down prunes what Flux applied (devenv checks each object gone), stops the cluster and
    // the substitutes, keeps the data.
    let output = repo.devenv().args(["down", "--env", "t-flux", "--output", "json"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let down = result_json(&output.stdout);
    shapes.check_line("down", &down);
    let gone: Vec<String> = down["flux"]["pruned"]
        .as_array()
        .unwrap()
        .iter()
        .chain(down["flux"]["own"].as_array().unwrap())
        .map(|o| o.as_str().unwrap().to_string())
        .collect();
    for (_, kind, namespace, name) in applied {
        if (kind, name) == ("Deployment", "audit") {
            continue; // Helm's, removed by the HelmRelease's uninstall rather than listed.
        }
        assert!(gone.contains(&format!("{kind}/{namespace}/{name}")), "{kind}/{namespace}/{name} not in {gone:?}");
    }
    assert!(gone.contains(&"Namespace/lending".to_string()), "{gone:?}");
    assert_eq!(down["clusterStopped"], true);
    assert_eq!(down["removed"]["containers"][0], "devenv-t-flux-loans-db");
    assert!(down["removed"]["volumes"].as_array().unwrap().is_empty(), "data survives down");
    assert!(client.apiserver_version().await.is_err(), "the cluster is stopped");

    // down --purge removes the data volume and the cluster's data too.
    let output = repo.devenv().args(["down", "--purge", "--env", "t-flux", "--output", "json"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let purged = result_json(&output.stdout);
    assert_eq!(purged["removed"]["volumes"][0], "devenv-t-flux-loans-db-data");
    assert!(!repo.state.path().join("envs/t-flux").exists(), "the cluster's data is gone");
}

#[test]
fn a_missing_variable_stops_up_before_anything_is_created() {
    let Some(repo) = fixture("t-flux-contract") else { return };
    let manifest = repo.path().join("apps/base/ledger/deployment.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("${AWS_REGION}", "${AWS_REGOIN}")).unwrap();
    let output = repo.devenv().args(["up", "--env", "t-flux-contract"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("error[DEV060]"), "{stderr}");
    assert!(
        stderr.contains("${AWS_REGOIN} has no value and no default; used at apps/base/ledger/deployment.yaml:20"),
        "{stderr}"
    );
    assert!(!repo.state.path().join("envs/t-flux-contract").exists(), "nothing was created");
}

/// An object of devenv's on its way out (an interrupted `down` deleted it; here the test's
/// finalizer holds it) is waited out and applied again by `up`; still held after
/// `--timeout`, `up` names it (DEV066) rather than report applied what is about to go.
async fn held_objects_of_devenv_are_waited_out_and_applied_again(
    repo: &TestRepo,
    client: &kube::Client,
    args: &[&str],
) {
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), "flux-system");
    let own = config_maps.list(&ListParams::default().labels(&format!("devenv.io/env={}", repo.env))).await.unwrap();
    let name = own.items[0].metadata.name.clone().unwrap();
    let hold = |finalizers: Vec<&str>| Patch::Merge(json!({"metadata": {"finalizers": finalizers}}));
    config_maps.patch(&name, &PatchParams::default(), &hold(vec!["devenv.test/hold"])).await.unwrap();
    config_maps.delete(&name, &Default::default()).await.unwrap();

    let short = ["--profile", "sim", "--env", &repo.env, "--timeout", "5s"];
    let output = repo.devenv().arg("up").args(short).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let expected = format!("error[DEV066]: ConfigMap/flux-system/{name} is being deleted and was not gone within 5s");
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stderr.contains(&format!("(`kubectl get ConfigMap {name} -n flux-system -o yaml`)")), "{stderr}");

    // Released while `up` waits for it: it is created again and `up` passes.
    let mut up = repo.std_command().arg("up").args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(up.stderr.take().unwrap()).lines().map_while(Result::ok);
    let waiting = format!("ConfigMap/flux-system/{name} is being deleted: waiting until it is gone to apply it again");
    let mut seen = String::new();
    for line in lines.by_ref() {
        seen.push_str(&(line.clone() + "\n"));
        if line.contains(&waiting) {
            break;
        }
    }
    assert!(seen.contains(&waiting), "up says what it waits for:\n{seen}");
    config_maps.patch(&name, &PatchParams::default(), &hold(Vec::new())).await.unwrap();
    seen.extend(lines.map(|line| line + "\n"));
    assert!(up.wait().unwrap().success(), "{seen}");
    let again = config_maps.get(&name).await.unwrap();
    assert!(again.metadata.deletion_timestamp.is_none(), "applied again, not left on its way out");
}

#[tokio::test]
async fn a_cluster_without_flux_is_named_as_such() {
    let problem = devenv::providers::sim::binaries().err().map(|e| format!("{e}; run `devenv sim build`"));
    if !tier_available("sim", problem) {
        return;
    }
    let repo = TestRepo::new("t-flux-missing", "");
    repo.write(
        "clusters/local/hello.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hello\n  namespace: default\ndata:\n  greeting: hi\n",
    );
    let args = ["--profile", "sim", "--env", "t-flux-missing", "--timeout", "120s"];
    let result = repo.up_json(&args).1;
    let client = cluster_client(&result).await;
    let greeting = Api::<ConfigMap>::namespaced(client.clone(), "default").get("hello").await.unwrap();
    assert_eq!(greeting.data.unwrap()["greeting"], "hi", "a repository without services deploys too");

    // A namespace that is being deleted takes no new objects: `up` names the object it could
    // not apply, the API server's answer and what to do (DEV065).
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "leaving"}})).unwrap())
        .await
        .unwrap();
    let held: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "held", "namespace": "leaving", "finalizers": ["devenv.test/hold"]}
    }))
    .unwrap();
    let leaving_config_maps = Api::<ConfigMap>::namespaced(client.clone(), "leaving");
    leaving_config_maps.create(&PostParams::default(), &held).await.unwrap();
    namespaces.delete("leaving", &Default::default()).await.unwrap();
    repo.write(
        "clusters/local/leaving.yaml",
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: leaving\n  namespace: leaving\nspec:\n  interval: 10m\n  path: ./leaving\n  prune: true\n  sourceRef:\n    kind: GitRepository\n    name: flux-system\n    namespace: flux-system\n  postBuild:\n    substitute:\n      TEAM: leaving\n",
    );
    repo.write("leaving/kustomization.yaml", "resources: []\n");
    let output = repo.devenv().arg("up").args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error[DEV065]: cannot apply ConfigMap/leaving/"), "{stderr}");
    assert!(stderr.contains("because it is being terminated"), "{stderr}");
    assert!(stderr.contains("hint: the namespace is being deleted"), "{stderr}");
    let release = json!({"metadata": {"finalizers": null}});
    leaving_config_maps.patch("held", &PatchParams::default(), &Patch::Merge(&release)).await.unwrap();
    std::fs::remove_file(repo.path().join("clusters/local/leaving.yaml")).unwrap();

    // An applied object a finalizer holds keeps Flux's prune from finishing: `down` names it
    // after `--timeout` (DEV066), leaves the rest for the next `down`, which then finishes.
    repo.write(
        "clusters/local/held.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  namespace: default\n  finalizers: [devenv.test/hold]\n",
    );
    repo.up_json(&args);
    let output = repo.devenv().args(["down", "--env", "t-flux-missing", "--timeout", "5s"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error[DEV066]: ConfigMap/default/held was not removed within 5s"), "{stderr}");
    assert!(
        stderr.contains(
            "hint: its `metadata.finalizers` name what holds it (`kubectl get ConfigMap held -n default -o yaml`)"
        ),
        "{stderr}"
    );
    let default_config_maps = Api::<ConfigMap>::namespaced(client.clone(), "default");
    let held = default_config_maps.get("held").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some(), "Flux asked for the deletion");
    default_config_maps.patch("held", &PatchParams::default(), &Patch::Merge(&release)).await.unwrap();
    std::fs::remove_file(repo.path().join("clusters/local/held.yaml")).unwrap();
    let output = repo.devenv().args(["down", "--env", "t-flux-missing"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let result = repo.up_json(&args).1;
    let client = cluster_client(&result).await;

    held_objects_of_devenv_are_waited_out_and_applied_again(&repo, &client, &args).await;

    // Flux's HelmRelease API goes away, as in a cluster where Flux was never installed.
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    crds.delete("helmreleases.helm.toolkit.fluxcd.io", &Default::default()).await.unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while crds.get_opt("helmreleases.helm.toolkit.fluxcd.io").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the CRD was not deleted");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let output = repo.devenv().arg("up").args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error[DEV064]: Flux is not installed in the cluster (no HelmRelease API)"), "{stderr}");
    assert!(stderr.contains("hint: install Flux in the cluster"), "{stderr}");

    // A cluster that cannot start again (its etcd data is damaged) names the process and
    // shows its log; `down --purge` still cleans up.
    let output = repo.devenv().args(["down", "--env", "t-flux-missing"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let database = repo.state.path().join("envs/t-flux-missing/sim/data/etcd/member/snap/db");
    assert!(database.is_file(), "etcd keeps its data across down: {}", database.display());
    std::fs::write(&database, vec![0xA5; 64 * 1024]).unwrap();
    let output = repo.devenv().arg("up").args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error[DEV041]") && stderr.contains("etcd"), "{stderr}");

    let output = repo.devenv().args(["down", "--purge", "--env", "t-flux-missing"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(!repo.state.path().join("envs/t-flux-missing").exists(), "purge removes the cluster's data");
}

/// `overlay.disable` naming an object by kind, inside a Kustomization that applies other
/// things too: a delete patch on that Kustomization keeps it out, the rest is applied.
#[tokio::test]
async fn an_object_disabled_by_kind_is_kept_out_by_the_kustomization_that_applies_it() {
    let problem = devenv::providers::sim::binaries().err().map(|e| format!("{e}; run `devenv sim build`"));
    if !tier_available("sim", problem) {
        return;
    }
    let repo = TestRepo::new("t-flux-disable", "");
    let project = std::fs::read_to_string(repo.path().join("devenv.yaml")).unwrap();
    repo.write(
        "devenv.yaml",
        &format!("{project}overlay:\n  disable: [IngressClass/alb, ConfigMap/default/aws-only]\n"),
    );
    repo.write(
        "clusters/local/platform.yaml",
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: platform\n  namespace: flux-system\nspec:\n  interval: 10m\n  path: ./platform\n  prune: true\n  sourceRef:\n    kind: GitRepository\n    name: flux-system\n",
    );
    repo.write("platform/kustomization.yaml", "resources:\n  - settings.yaml\n  - ingressclass.yaml\n");
    repo.write(
        "platform/settings.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kept\n  namespace: default\ndata:\n  a: b\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: aws-only\n  namespace: default\ndata:\n  a: b\n",
    );
    repo.write(
        "platform/ingressclass.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: alb\nspec:\n  controller: ingress.k8s.aws/alb\n",
    );
    let args = ["--profile", "sim", "--env", "t-flux-disable", "--timeout", "120s"];

    // What Flux would fail on stops `up` before anything is created: an entry with a typo,
    // and a number substituted into a label.
    repo.write("devenv.yaml", &format!("{project}overlay:\n  disable: [IngressClass/albb]\n"));
    repo.write(
        "clusters/local/web.yaml",
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: web\n  namespace: flux-system\nspec:\n  interval: 10m\n  path: ./web\n  prune: true\n  sourceRef:\n    kind: GitRepository\n    name: flux-system\n  postBuild:\n    substitute:\n      REPLICAS: \"2\"\n",
    );
    repo.write(
        "web/settings.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n  namespace: default\n  labels:\n    replicas: \"${REPLICAS}\"\n",
    );
    let output = repo.devenv().arg("up").args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("error[DEV068]: 2 problem(s) Flux would fail on, found before anything is pushed"),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean `IngressClass/alb`?"), "{stderr}");
    assert!(
        stderr.contains("  error[DEV067]: web/settings.yaml:7:15: label `replicas` of ConfigMap/default/web"),
        "{stderr}"
    );
    assert!(!repo.state.path().join("envs/t-flux-disable").exists(), "nothing was created");
    std::fs::remove_file(repo.path().join("clusters/local/web.yaml")).unwrap();
    repo.write(
        "devenv.yaml",
        &format!("{project}overlay:\n  disable: [IngressClass/alb, ConfigMap/default/aws-only]\n"),
    );

    let result = repo.up_json(&args).1;
    let client = cluster_client(&result).await;
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), "default");
    assert!(config_maps.get_opt("kept").await.unwrap().is_some(), "the rest of the Kustomization is applied");
    assert!(config_maps.get_opt("aws-only").await.unwrap().is_none(), "the namespaced object is deleted by the patch");
    let classes: Api<IngressClass> = Api::all(client.clone());
    assert!(classes.get_opt("alb").await.unwrap().is_none(), "the cluster-scoped object too");
    let output = repo.devenv().args(["down", "--purge", "--env", "t-flux-disable"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// `devenv logs KIND/NAME`: what the responsible controller logged about that object alone.
fn flux_logs(repo: &TestRepo, args: &[&str]) -> std::process::Output {
    repo.devenv().args(["logs", "--env", &repo.env]).args(args).output().unwrap()
}

#[tokio::test]
async fn logs_of_a_flux_object_are_its_controllers_lines_about_it() {
    let Some(repo) = fixture("t-flux-logs") else { return };
    let result = up(&repo);
    let about = |name: &str| format!("\"name\": \"{name}\"");

    let output = flux_logs(&repo, &["kustomization/apps"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 2, "the controller reconciled `apps`: {text}");
    for line in &lines {
        assert!(line.contains(&about("apps")) && line.contains("\"controllerKind\": \"Kustomization\""), "{line}");
        assert!(!line.contains(&about("platform")) && !line.contains(&about("crds")), "{line}");
    }
    assert!(text.contains("server-side apply completed"), "{text}");
    // The same object named with its namespace; another controller's kind.
    let output = flux_logs(&repo, &["kustomization/flux-system/apps"]);
    assert_eq!(String::from_utf8_lossy(&output.stdout), text);
    let output = flux_logs(&repo, &["hr/audit"]);
    let releases = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(!releases.is_empty() && releases.lines().all(|l| l.contains(&about("audit"))), "{releases}");
    assert!(!releases.contains(&about("statements")), "{releases}");

    // JSON: one `log` event per line, then the result.
    let output = flux_logs(&repo, &["ks/apps", "--output", "json"]);
    let events = common::shape::lines(&output.stdout);
    let shapes = Shapes::from_readme();
    let logged: Vec<_> = events.iter().filter(|e| e["event"] == "log").collect();
    assert_eq!(logged.len(), lines.len());
    let mut event = logged[0].clone();
    event.as_object_mut().unwrap().remove("event");
    shapes.check("FluxLogEvent", &event);
    let summary = events.last().unwrap();
    shapes.check_line("FluxLogs", summary);
    assert_eq!(summary["object"], "kustomization/flux-system/apps");
    assert_eq!(summary["controller"], "kustomize-controller");
    assert_eq!(summary["lines"], lines.len());

    // --since counts by the lines' own times: nothing was reconciled in the last second.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let output = flux_logs(&repo, &["kustomization/apps", "--since", "1s"]);
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).lines().count() < lines.len());

    // An object the environment does not have: the error lists those it has.
    let output = flux_logs(&repo, &["kustomization/ap"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error[DEV014]: the environment has no Kustomization `ap`"), "{stderr}");
    assert!(
        stderr.contains("kustomization/flux-system/apps") && stderr.contains("helmrelease/lending/audit"),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean `kustomization/flux-system/apps`?"), "{stderr}");

    // -f prints what the controller logs next: a reconcile requested now, until Ctrl-C.
    let mut child = repo
        .std_command()
        .args(["logs", "--env", &repo.env, "kustomization/apps", "-f"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let (sender, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        while std::io::BufRead::read_line(&mut stdout, &mut line).is_ok_and(|n| n > 0) {
            let _ = sender.send(std::mem::take(&mut line));
        }
    });
    let client = cluster_client(&result).await;
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kustomize.toolkit.fluxcd.io", "v1", "Kustomization"),
        "kustomizations",
    );
    let kustomizations: Api<DynamicObject> = Api::namespaced_with(client, "flux-system", &resource);
    let requested = json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": "t-flux-logs"}}});
    kustomizations.patch("apps", &PatchParams::default(), &Patch::Merge(&requested)).await.unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    let mut followed = Vec::new();
    while followed.len() <= lines.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = received.recv_timeout(left).unwrap_or_else(|_| panic!("no new line about apps: {followed:?}"));
        assert!(line.contains(&about("apps")), "{line}");
        followed.push(line);
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(status.success(), "Ctrl-C ends a followed log normally: {status:?}");
}

/// An `up` interrupted between pushing an artifact and asking Flux for it leaves the registry
/// ahead of the cluster: the next `up` pushes nothing, and must still ask for that source and
/// wait for it, not report the old revision as Ready.
#[tokio::test]
async fn a_source_behind_the_registry_is_asked_again_though_nothing_is_pushed() {
    let Some(repo) = fixture("t-flux-behind") else { return };
    let result = up(&repo);
    let manifest = repo.path().join("apps/base/orders/deployment.yaml");
    let original = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, original.replace("${LOG_LEVEL:=info}", "${LOG_LEVEL:=trace}")).unwrap();

    // The push an interrupted `up` made, without its reconcile request.
    let registry = result["cluster"]["registry"]["host"].as_str().unwrap().to_string();
    let selection = devenv::config::Selection {
        repo: Some(repo.path().to_path_buf()),
        env: Some(repo.env.clone()),
        ..Default::default()
    };
    let config = devenv::config::load(&selection, repo.path()).unwrap();
    let sim = devenv::providers::Capabilities { runs_pods: false, owns_cluster: true };
    let packed = devenv::flux::pack(&config, &registry, sim).unwrap();
    let artifact = packed.artifacts.iter().find(|a| a.source == "devenv-ks-apps").unwrap();
    let oci = devenv::flux::artifact::client(&registry);
    let repository = devenv::flux::artifact::repository(&repo.env, &artifact.source);
    let origin = repo.path().display().to_string();
    let pushed =
        devenv::flux::artifact::push_tree(&oci, &registry, &repository, &artifact.content, &artifact.digest, &origin)
            .await
            .unwrap();
    assert!(pushed.pushed);

    let output =
        repo.devenv().args(["up", "--env", &repo.env, "--timeout", "60s", "--output", "json"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
    let result = result_json(&output.stdout);
    assert_eq!(result["flux"]["artifacts"]["pushed"], serde_json::json!([]), "the registry had it already");
    let client = cluster_client(&result).await;
    let deployments: Api<Deployment> = Api::namespaced(client, "lending");
    let loans = deployments.get("loans").await.unwrap();
    assert_eq!(env_value(&loans, "LOG_LEVEL").as_deref(), Some("trace"), "the edit is live");
}

/// A Flux object deleted by hand is brought back by the next `up`, though nothing changed in
/// the repository: only a reconcile of the Kustomization that applied it does that.
#[tokio::test]
async fn a_flux_object_deleted_by_hand_is_applied_again_by_the_next_up() {
    let Some(repo) = fixture("t-flux-drift") else { return };
    let result = up(&repo);
    let client = cluster_client(&result).await;
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kustomize.toolkit.fluxcd.io", "v1", "Kustomization"),
        "kustomizations",
    );
    let kustomizations: Api<DynamicObject> = Api::namespaced_with(client.clone(), "flux-system", &resource);
    kustomizations.delete("apps", &Default::default()).await.unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while kustomizations.get_opt("apps").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "Flux did not finish deleting `apps`");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "lending");
    assert!(deployments.get_opt("loans").await.unwrap().is_none(), "its workload went with it");

    let result = up(&repo);
    assert_eq!(result["flux"]["artifacts"]["pushed"], json!([]), "nothing changed in the repository");
    let apps =
        result["flux"]["objects"].as_array().unwrap().iter().find(|o| o["object"] == "Kustomization/flux-system/apps");
    assert_eq!(apps.map(|o| o["ready"].clone()), Some(json!(true)), "{}", result["flux"]["objects"]);
    assert!(deployments.get_opt("loans").await.unwrap().is_some(), "the workload is back");
}

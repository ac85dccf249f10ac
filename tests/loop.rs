//! Inner-loop tier: on a repository shaped like Flux's own Kustomize + Helm example
//! (Kustomizations with `wait: true` in a `dependsOn` chain, a HelmRelease from an HTTP Helm
//! repository whose chart sits under `charts:`), every `up` reports this round's truth:
//! a fix is never reported as the failure before it, a chart edit is live when `up` returns,
//! and a failure names its root cause.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{TestRepo, cluster_client, copy_tree, result_json, tier_available};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/platform");
const ROUNDS: usize = 10;

/// The fixture in a temporary directory, if the sim tier can run.
fn fixture(env: &str) -> Option<TestRepo> {
    let problem = devenv::providers::sim::binaries().err().map(|e| format!("{e}; run `devenv sim build`"));
    if !tier_available("sim", problem) {
        return None;
    }
    let repo = TestRepo::new(env, "");
    copy_tree(Path::new(FIXTURE), repo.path());
    Some(repo)
}

fn up_args(repo: &TestRepo) -> Vec<String> {
    ["up", "--env", &repo.env, "--timeout", "120s"].iter().map(|s| s.to_string()).collect()
}

/// Runs `up` and returns its exit code and stderr.
fn try_up(repo: &TestRepo) -> (Option<i32>, String) {
    let output = repo.devenv().args(up_args(repo)).output().unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

fn up(repo: &TestRepo) -> serde_json::Value {
    let output = repo.devenv().args(up_args(repo)).args(["--output", "json"]).output().unwrap();
    assert!(output.status.success(), "up failed:\n{}", String::from_utf8_lossy(&output.stderr));
    result_json(&output.stdout)
}

fn env_value(deployment: &Deployment, name: &str) -> Option<String> {
    let container = &deployment.spec.as_ref()?.template.spec.as_ref()?.containers[0];
    container.env.as_ref()?.iter().find(|e| e.name == name)?.value.clone()
}

/// Breaks a file, checks that `up` fails with `expected` (and its exit code), restores it and checks that the
/// very next `up` succeeds, `ROUNDS` times with no pause in between.
fn break_and_fix(repo: &TestRepo, file: &str, broken: &str, expected: &str, expected_code: i32) {
    let path = repo.path().join(file);
    let original = std::fs::read_to_string(&path).unwrap();
    for round in 1..=ROUNDS {
        std::fs::write(&path, broken).unwrap();
        let (code, stderr) = try_up(repo);
        assert_eq!(code, Some(expected_code), "round {round}: the broken {file} must fail:\n{stderr}");
        assert!(stderr.contains(expected), "round {round}: {file}:\n{stderr}");
        std::fs::write(&path, &original).unwrap();
        let started = Instant::now();
        let (code, stderr) = try_up(repo);
        assert_eq!(
            code,
            Some(0),
            "round {round}: the fixed {file} must pass at once, not repeat the failure:\n{stderr}"
        );
        eprintln!("{file}, round {round}: fixed → Ready in {:?}", started.elapsed());
    }
}

#[tokio::test]
async fn every_up_reports_this_rounds_truth() {
    let Some(repo) = fixture("t-loop") else { return };

    // plan names the charts `up` will push and where.
    let output = repo.devenv().args(["plan", "--env", "t-loop"]).output().unwrap();
    let plan = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        plan.contains(
            "  charts:  push charts/greeter (greeter 0.1.0) to <environment registry>/charts/stable/greeter:0.1.0\n"
        ),
        "{plan}"
    );
    assert!(plan.contains("served as OCIRepository/devenv-chart-charts-greeter"), "{plan}");
    assert!(plan.contains("url → oci://<environment registry>/charts/stable, type → oci (insecure)"), "{plan}");
    // A chart version Flux would not find, or one the release does not allow, stops `up`
    // before anything is created.
    let chart = repo.path().join("charts/greeter/Chart.yaml");
    let chart_text = std::fs::read_to_string(&chart).unwrap();
    let release = repo.path().join("apps/base/greeter/release.yaml");
    let release_text = std::fs::read_to_string(&release).unwrap();
    for (file, original, broken, expected) in [
        (
            &chart,
            &chart_text,
            chart_text.replace("version: 0.1.0", "version: v0.1.0"),
            "error[DEV061]: `charts/greeter/Chart.yaml`: version `v0.1.0` is not a SemVer 2 version",
        ),
        (
            &release,
            &release_text,
            release_text.replace("0.1.x", "0.2.x"),
            "has version 0.1.0, which `0.2.x` (spec.chart.spec.version) does not allow",
        ),
    ] {
        std::fs::write(file, broken).unwrap();
        let (code, stderr) = try_up(&repo);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!repo.state.path().join("envs/t-loop").exists(), "nothing was created");
        std::fs::write(file, original).unwrap();
    }

    let result = up(&repo);
    // plan says what the next `up` does with the cluster: it is there and healthy.
    let output = repo.devenv().args(["plan", "--env", "t-loop"]).output().unwrap();
    let plan = String::from_utf8_lossy(&output.stdout);
    assert!(plan.contains("  reuse    the cluster: `devenv-t-loop` is running and healthy\n"), "{plan}");
    let objects: Vec<&str> =
        result["flux"]["objects"].as_array().unwrap().iter().map(|o| o["object"].as_str().unwrap()).collect();
    for object in [
        "Kustomization/flux-system/infra-controllers",
        "Kustomization/flux-system/infra-configs",
        "Kustomization/flux-system/apps",
        "HelmRelease/web/greeter",
    ] {
        assert!(objects.contains(&object), "{object} in {objects:?}");
    }
    let client = cluster_client(&result).await;

    // The HTTP Helm repository now points at the environment's registry, as an OCI one.
    let repositories = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("source.toolkit.fluxcd.io", "v1", "HelmRepository"),
        "helmrepositories",
    );
    let repositories: Api<DynamicObject> = Api::namespaced_with(client.clone(), "platform", &repositories);
    let repository = repositories.get("example-charts").await.unwrap();
    assert_eq!(repository.data["spec"]["type"], "oci", "{:?}", repository.data["spec"]);
    assert!(repository.data["spec"]["url"].as_str().unwrap().ends_with("/charts/stable"), "{:?}", repository.data);

    // The chart under `charts:` is installed, with the values of the release.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "web");
    let greeter = deployments.get("greeter").await.unwrap();
    assert_eq!(env_value(&greeter, "GREETING").as_deref(), Some("hello"));
    assert_eq!(env_value(&greeter, "REGION").as_deref(), Some("us-east-1"));
    assert_eq!(greeter.spec.as_ref().unwrap().replicas, Some(1), "replicas capped by the overlay");

    // A chart edit under the same version is live when `up` returns.
    let template = repo.path().join("charts/greeter/templates/deployment.yaml");
    let text = std::fs::read_to_string(&template).unwrap();
    std::fs::write(
        &template,
        text.replace("value: {{ .Values.region | quote }}", "value: {{ .Values.region | upper | quote }}"),
    )
    .unwrap();
    let charted = up(&repo);
    let pushed: Vec<bool> =
        charted["flux"]["artifacts"]["charts"].as_array().unwrap().iter().map(|c| c["pushed"] == true).collect();
    assert!(pushed.iter().all(|p| *p), "the chart is published again: {}", charted["flux"]["artifacts"]);
    let greeter = deployments.get("greeter").await.unwrap();
    assert_eq!(env_value(&greeter, "REGION").as_deref(), Some("US-EAST-1"), "live when up returns");

    // A failure names its root cause: what the object a health check names says of itself,
    // and the file it came from.
    repo.write(
        "infrastructure/configs/legacy.yaml",
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: legacy\n  namespace: platform\nspec:\n  interval: 1h\n  url: oci://legacy.example.org/charts\n",
    );
    let configs = repo.path().join("infrastructure/configs/kustomization.yaml");
    let configs_text = std::fs::read_to_string(&configs).unwrap();
    std::fs::write(&configs, format!("{configs_text}  - legacy.yaml\n")).unwrap();
    let (code, stderr) = try_up(&repo);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("error[DEV062]: Kustomization/flux-system/infra-configs (defined in clusters/local/infrastructure.yaml) failed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("HelmRepository/platform/legacy (defined in infrastructure/configs/legacy.yaml): ")
            && stderr.contains("'oci' URL scheme cannot be used with 'default' HelmRepository type"),
        "the stalled object's own message: {stderr}"
    );
    let output = repo.devenv().args(["status", "--env", "t-loop"]).output().unwrap();
    let status = String::from_utf8_lossy(&output.stdout);
    assert!(status.contains("HelmRepository/platform/legacy: "), "status shows the cause too: {status}");
    std::fs::write(&configs, &configs_text).unwrap();
    std::fs::remove_file(repo.path().join("infrastructure/configs/legacy.yaml")).unwrap();
    up(&repo);

    // A broken Flux Kustomization (a patch whose target path is missing), then fixed.
    let apps = std::fs::read_to_string(repo.path().join("clusters/local/apps.yaml")).unwrap();
    let broken_apps = apps.replace(
        "  wait: true\n",
        "  wait: true\n  patches:\n    - target:\n        kind: Namespace\n        name: web\n      patch: |\n        - op: replace\n          path: /metadata/labels/missing\n          value: x\n",
    );
    break_and_fix(
        &repo,
        "clusters/local/apps.yaml",
        &broken_apps,
        "error[DEV062]: Kustomization/flux-system/apps (defined in clusters/local/apps.yaml) failed",
        1,
    );
    // A broken manifest, then fixed: devenv stops it before the push, at its line.
    let settings = std::fs::read_to_string(repo.path().join("infrastructure/configs/settings.yaml")).unwrap();
    break_and_fix(
        &repo,
        "infrastructure/configs/settings.yaml",
        &format!("{settings}  broken: [\n"),
        "error[DEV069]: infrastructure/configs/settings.yaml:",
        2,
    );
    // A broken overlay in devenv.yaml, then fixed.
    let project = std::fs::read_to_string(repo.path().join("devenv.yaml")).unwrap();
    let broken_overlay = project.replace(
        "overlay:\n",
        "overlay:\n  patches:\n    - target:\n        kind: ConfigMap\n        name: platform-settings\n      patch: |\n        - op: test\n          path: /data/tier\n          value: premium\n",
    );
    break_and_fix(
        &repo,
        "devenv.yaml",
        &broken_overlay,
        "error[DEV062]: Kustomization/flux-system/infra-configs (defined in clusters/local/infrastructure.yaml) failed",
        1,
    );

    interrupted_down_then_up(&repo, &client).await;

    let output = repo.devenv().args(["down", "--env", "t-loop"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// An `up` after a `down` that stopped part way, with the root deleted and still held by a
/// finalizer (here one of the test's, kept until Flux has pruned): `up` lets the removal
/// finish and applies everything again, rather than skipping or patching an object on its
/// way out and reporting it Ready.
async fn interrupted_down_then_up(repo: &TestRepo, client: &kube::Client) {
    const HOLD: &str = "test.devenv.io/hold";
    let kind = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kustomize.toolkit.fluxcd.io", "v1", "Kustomization"),
        "kustomizations",
    );
    let kustomizations: Api<DynamicObject> = Api::namespaced_with(client.clone(), "flux-system", &kind);
    let finalizers = |object: &DynamicObject| object.metadata.finalizers.clone().unwrap_or_default();
    let root = kustomizations.get("devenv-root").await.unwrap();
    let mut held = finalizers(&root);
    held.push(HOLD.to_string());
    let set = |list: Vec<String>| Patch::Merge(serde_json::json!({"metadata": {"finalizers": list}}));
    kustomizations.patch("devenv-root", &PatchParams::default(), &set(held)).await.unwrap();
    kustomizations.delete("devenv-root", &DeleteParams::default()).await.unwrap();

    let mut up = repo.std_command().args(up_args(repo)).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let (stderr, pipe) = (stderr.clone(), up.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                stderr.lock().unwrap().push_str(&(line + "\n"));
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut released = false;
    while up.try_wait().unwrap().is_none() && Instant::now() < deadline {
        // Released once `up` waits for the removal and Flux has pruned and let go (the test's
        // finalizer is the only one left).
        let waiting = stderr.lock().unwrap().contains("waiting for Flux to prune what it applied");
        let root = kustomizations.get_opt("devenv-root").await.unwrap();
        if !released && waiting && root.as_ref().is_some_and(|r| finalizers(r) == [HOLD]) {
            kustomizations.patch("devenv-root", &PatchParams::default(), &set(Vec::new())).await.unwrap();
            released = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = up.wait().unwrap();
    reader.join().unwrap();
    let stderr = stderr.lock().unwrap().clone();
    assert!(released, "Flux never finished pruning the deleted root:\n{stderr}");
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("finished the removal an earlier `down` began"), "{stderr}");
    let root = kustomizations.get("devenv-root").await.unwrap();
    assert!(root.metadata.deletion_timestamp.is_none(), "the root is applied again, not left on its way out");
    let ready = root.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    assert!(ready, "{:?}", root.data["status"]);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "web");
    assert!(deployments.get_opt("greeter").await.unwrap().is_some(), "the pruned release is installed again");
}

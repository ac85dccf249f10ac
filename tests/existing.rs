//! The `existing` provider on a real cluster: a sim cluster booted by this test binary (and
//! owned by it) stands for a cluster someone else runs. A second repository reaches it only
//! through a kubeconfig context and a registry address in its profile.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{TestRepo, cluster_client, copy_tree, mariadb_image, result_json, tier_available};
use devenv::providers::sim::{self, Lifetime, Scope, Sim, SimInfo};
use devenv::ui::SilentReporter;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;

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

fn profile(repo: &TestRepo, context: &str, registry: &str) {
    repo.write(
        ".devenv/profiles/shared.yaml",
        &format!(
            "description: a cluster devenv did not create\ncluster:\n  provider: existing\n  context: {context}\nregistry:\n  url: {registry}\nsubstitutes:\n  memory: 1Gi\nenvironment:\n  AWS_REGION: us-east-1\n"
        ),
    );
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
    profile(&repo, &info.context, &info.registry);
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

    // With devenv.yaml broken, `down --env` still finds the environment's cluster through the
    // state file: it removes the containers, and says that Flux's objects stay until the file
    // can be read again.
    let project = std::fs::read_to_string(repo.path().join("devenv.yaml")).unwrap();
    std::fs::write(repo.path().join("devenv.yaml"), "project: [\n").unwrap();
    let output = repo.devenv().args(["down", "--env", "t-existing"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("stays in the cluster of context"), "{stderr}");
    assert_eq!(labelled_containers("t-existing"), "");
    std::fs::write(repo.path().join("devenv.yaml"), project).unwrap();

    // `down` prunes what devenv applied; the cluster keeps running, with Flux installed.
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
    assert_eq!(labelled_containers("t-existing"), "");
    let processes = Sim::new(&sim_dir).status().await.unwrap();
    assert!(processes.iter().all(|p| p.healthy), "the cluster still runs: {processes:?}");
    let presence = devenv::providers::flux_presence(&client).await.unwrap();
    assert!(presence.installed(), "Flux is still installed: {presence:?}");
    assert!(deployments.get_opt("loans").await.unwrap().is_none(), "Flux pruned the app");
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
    profile(&repo, &info.context, "127.0.0.1:5999");
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

//! devenv on kind, measured in one run against peers on the same machine:
//! - cold `devenv up` of the platform fixture (cluster, registry, Flux installed, substitutes,
//!   every Flux object Ready with real pods) next to a bare `kind create cluster` of the same
//!   node image and configuration;
//! - a warm `up` that reuses the cluster with nothing changed;
//! - edit → Ready: devenv's loop next to the classic loop (commit, push to a Git server on
//!   the kind network, reconcile) on the same kind cluster and the same Flux graph.
//!
//! Anchors (minikube's time-to-k8s benchmark): kind ≈ 33 s and k3d ≈ 20 s to a ready cluster.
//!
//! Needs Docker, the kind test bed and the MariaDB test image (scripts/test.sh builds them):
//!   eval "$(bash testbed/kind/build.sh)"; export DEVENV_KIND_NODE_IMAGE DEVENV_KIND_BIN \
//!     DEVENV_KIND_DOCKER_WRAPPER_DIR DEVENV_KIND_CONFIG DEVENV_KIND_BUSYBOX_IMAGE DEVENV_KIND_REGISTRY_IMAGE
//!   DEVENV_TEST_MARIADB_IMAGE=$(bash scripts/build-test-image.sh mariadb) cargo bench --bench kind

#[path = "common/classic.rs"]
mod classic;
#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use classic::{GitServer, classic_loop, environment_values, median, remove_classic};
use common::kind::{Cleanup, devenv, path_with, platform_repo};

const ROUNDS: usize = 3;
const ENV: &str = "bench-kind";

fn main() {
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let (Ok(mariadb), Some(bed)) = (std::env::var("DEVENV_TEST_MARIADB_IMAGE"), common::kind::testbed()) else {
        eprintln!("the kind test bed or DEVENV_TEST_MARIADB_IMAGE is missing; see the top of benches/kind.rs");
        std::process::exit(if in_ci { 1 } else { 0 });
    };
    let git_image = build_image("git-server");
    let work = tempfile::tempdir().unwrap();
    let kubeconfig = work.path().join("kubeconfig");
    let kind = |args: &[&str]| {
        let output = Command::new(bed.bin_dir.join("kind"))
            .args(args)
            .env("PATH", path_with(&[&bed.wrapper_dir]))
            .env("KUBECONFIG", &kubeconfig)
            .output()
            .unwrap();
        assert!(output.status.success(), "kind {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    };

    // The peer of a cold `up`: kind alone, same image and configuration.
    let bare = "devenv-bench-bare";
    let _ = Command::new(bed.bin_dir.join("kind")).args(["delete", "cluster", "--name", bare]).output();
    let mut bare_times = Vec::new();
    for _ in 0..2 {
        let image = bed.node_image.as_str();
        let config = bed.kind_config.to_str().unwrap();
        let started = Instant::now();
        kind(&["create", "cluster", "--name", bare, "--image", image, "--config", config, "--wait", "5m"]);
        bare_times.push(started.elapsed());
        kind(&["delete", "cluster", "--name", bare]);
    }

    let repo = platform_repo(ENV, &bed, &mariadb, None);
    let run = |args: &[&str]| -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["--env", ENV, "--output", "json"]);
        let output = devenv(&repo, &bed, &all);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "devenv {args:?}: {}\n{stdout}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
    };
    run(&["down", "--purge"]);
    let cleanup = Cleanup { repo: &repo, bed: &bed, env: ENV };
    let started = Instant::now();
    let result = run(&["up", "--timeout", "600s"]);
    let cold = started.elapsed();
    let started = Instant::now();
    run(&["up"]);
    let warm = started.elapsed();

    // devenv's loop: an edit of a ConfigMap two `wait: true` Kustomizations deep.
    let settings = repo.path().join("infrastructure/configs/settings.yaml");
    let original = std::fs::read_to_string(&settings).unwrap();
    let mut devenv_times = Vec::new();
    for round in 0..ROUNDS {
        std::fs::write(&settings, original.replace("tier: standard", &format!("tier: devenv-{round}"))).unwrap();
        let started = Instant::now();
        run(&["up"]);
        devenv_times.push(started.elapsed());
    }

    // The classic loop on the same cluster, once devenv's Flux objects are pruned.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(common::cluster_client(&result));
    let environment = runtime.block_on(environment_values(&client));
    let selection = devenv::config::Selection {
        repo: Some(repo.path().to_path_buf()),
        env: Some(ENV.into()),
        profile: Some("kind-test".into()),
        ..Default::default()
    };
    let config = devenv::config::load(&selection, repo.path()).unwrap();
    runtime
        .block_on(devenv::flux::deploy::remove(
            &client,
            &config.env,
            &devenv::state::FluxPlacement::for_config(&config),
            None,
            Duration::from_secs(180),
            &devenv::ui::SilentReporter,
        ))
        .unwrap();
    let registry = result["cluster"]["registry"]["fromCluster"].as_str().unwrap();
    let server = GitServer::in_container(work.path(), &git_image, devenv::providers::kind::NETWORK, "bench-kind-git");
    prepare_classic(repo.path(), &server, registry);
    let checkout_settings = server.checkout.join("infrastructure/configs/settings.yaml");
    let edit = |round: usize| {
        std::fs::write(&checkout_settings, original.replace("tier: standard", &format!("tier: classic-{round}")))
            .unwrap();
    };
    let (_, classic_times) = runtime.block_on(classic_loop(&client, &server, &environment, ROUNDS, 4, edit));
    runtime.block_on(remove_classic(&client));
    drop(server);
    drop(cleanup);

    let bare = median(bare_times);
    println!(
        "cold up on kind (cluster, registry, Flux install, substitute, fixture Ready with real pods): devenv {:.1}s, bare `kind create cluster` {:.1}s, ratio {:.2} (anchors: kind ≈ 33 s, k3d ≈ 20 s to a ready cluster)",
        cold.as_secs_f64(),
        bare.as_secs_f64(),
        cold.as_secs_f64() / bare.as_secs_f64()
    );
    println!("warm up on kind (cluster reused, nothing changed): {:.2}s", warm.as_secs_f64());
    let (devenv_loop, classic) = (median(devenv_times), median(classic_times));
    println!(
        "edit to Ready on kind: devenv {:.2}s, classic commit+push+reconcile {:.2}s, ratio {:.2} (target at most 0.5 and under 3 s)",
        devenv_loop.as_secs_f64(),
        classic.as_secs_f64(),
        devenv_loop.as_secs_f64() / classic.as_secs_f64()
    );
}

/// A test image of tests/images/NAME, built (or found) by scripts/build-test-image.sh.
fn build_image(name: &str) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-test-image.sh");
    let output = Command::new("bash").args([script, name]).output().unwrap();
    assert!(output.status.success(), "building the {name} image: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// The repository as the classic loop's cluster sees it: the same files devenv packed, its
/// HelmRepository pointed at the environment's registry, where devenv published the chart.
fn prepare_classic(repo: &Path, server: &GitServer, registry: &str) {
    common::copy_tree(repo, &server.checkout);
    let _ = std::fs::remove_dir_all(server.checkout.join(".devenv"));
    let repository = server.checkout.join("infrastructure/controllers/repository.yaml");
    let text = std::fs::read_to_string(&repository).unwrap();
    let local = format!("type: oci\n  insecure: true\n  url: oci://{registry}/charts/stable");
    std::fs::write(&repository, text.replace("url: https://charts.example.org/stable", &local)).unwrap();
    server.publish();
}

//! The inner loop, measured against the classic GitOps loop on the same sim cluster and the
//! same Flux graph (the Landbay-style fixture: four Kustomizations in a `dependsOn` chain and
//! a HelmRelease):
//! - devenv: edit a manifest, `devenv up` (pack, push what changed, reconcile, watch until
//!   every Flux object of the environment is Ready);
//! - classic: once devenv's objects are pruned, the same repository is served by a Git server
//!   on 127.0.0.1 (git http-backend behind Python's CGI server) and reconciled the way
//!   `flux bootstrap` sets it up (a GitRepository and a root Kustomization, the environment
//!   ConfigMap written beforehand, as Terraform would); each round edits the same manifest,
//!   commits, pushes, requests reconciliation of the GitRepository and waits until every
//!   Kustomization applied the new commit.
//!
//! Also: a no-op `up`, and packing throughput next to `tar czf` of the same files, for the
//! fixture and for the fixture with sixty more services.
//!
//! Needs the sim binaries, Docker, git and python3, and DEVENV_TEST_MARIADB_IMAGE:
//!   DEVENV_TEST_MARIADB_IMAGE=$(bash scripts/build-test-image.sh mariadb) cargo bench --bench inner_loop

#[path = "common/classic.rs"]
mod classic;
#[path = "common/cleanup.rs"]
mod cleanup;
#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use classic::{GitServer, classic_loop, environment_values, median, remove_classic};
use cleanup::Cleanup;
use serde_json::json;

const ROUNDS: usize = 3;
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/landbay");
const ENV: &str = "bench-loop";

fn main() {
    let Ok(image) = std::env::var("DEVENV_TEST_MARIADB_IMAGE") else {
        eprintln!("DEVENV_TEST_MARIADB_IMAGE is not set; build the image with scripts/build-test-image.sh mariadb");
        std::process::exit(1);
    };
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    let state = work.path().join("state");
    common::copy_tree(Path::new(FIXTURE), &repo);
    std::fs::create_dir_all(repo.join(".devenv/substitutes")).unwrap();
    std::fs::write(repo.join(".devenv/substitutes/rds-mariadb.yaml"), format!("image: {image}\n")).unwrap();
    let devenv = |args: &[&str]| -> serde_json::Value {
        let output = Command::new(env!("CARGO_BIN_EXE_devenv"))
            .args(args)
            .args(["--env", ENV, "--output", "json"])
            .current_dir(&repo)
            .env("DEVENV_STATE_DIR", &state)
            .output()
            .unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "devenv {args:?}: {stderr}\n{}", stdout.lines().last().unwrap_or_default());
        let text = String::from_utf8_lossy(&output.stdout);
        serde_json::from_str(text.lines().last().unwrap()).unwrap()
    };
    let manifest = repo.join("apps/base/ledger/deployment.yaml");
    let original = std::fs::read_to_string(&manifest).unwrap();

    // Containers and volumes a crashed earlier run left are found by their labels.
    devenv(&["down", "--purge"]);
    let cleanup = Cleanup { repo: &repo, state: &state, env: ENV };
    let result = devenv(&["up"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(common::cluster_client(&result));

    // devenv's loop.
    let mut devenv_times = Vec::new();
    for round in 0..ROUNDS {
        std::fs::write(&manifest, original.replace("ledger:1.0.7", &format!("ledger:1.0.{}", 8 + round))).unwrap();
        let started = Instant::now();
        let result = devenv(&["up"]);
        devenv_times.push(started.elapsed());
        assert_eq!(result["flux"]["artifacts"]["pushed"], json!(["devenv-ks-apps"]));
    }
    let started = Instant::now();
    devenv(&["up"]);
    let noop = started.elapsed();
    std::fs::write(&manifest, &original).unwrap();
    devenv(&["up"]);

    // An edit of a Flux Kustomization itself: the root applies its new spec, then it applies.
    let kustomization = repo.join("clusters/local/apps.yaml");
    let kustomization_original = std::fs::read_to_string(&kustomization).unwrap();
    let mut kustomization_times = Vec::new();
    for round in 0..ROUNDS {
        let edited = kustomization_original.replace("CLUSTER_NAME: local", &format!("CLUSTER_NAME: local-{round}"));
        std::fs::write(&kustomization, edited).unwrap();
        let started = Instant::now();
        let result = devenv(&["up"]);
        kustomization_times.push(started.elapsed());
        assert_eq!(result["flux"]["artifacts"]["pushed"], json!(["devenv-source"]));
    }
    std::fs::write(&kustomization, &kustomization_original).unwrap();
    devenv(&["up"]);

    // The classic loop, on the same cluster, once devenv's objects are pruned.
    let selection = devenv::config::Selection { repo: Some(repo.clone()), env: Some(ENV.into()), ..Default::default() };
    let config = devenv::config::load(&selection, &repo).unwrap();
    let registry = result["cluster"]["registry"]["host"].as_str().unwrap().to_string();
    let environment = runtime.block_on(environment_values(&client));
    let prune_deadline = Duration::from_secs(120);
    runtime
        .block_on(devenv::flux::deploy::remove(
            &client,
            &config.env,
            &devenv::state::FluxPlacement::for_config(&config),
            None,
            prune_deadline,
            &devenv::ui::SilentReporter,
        ))
        .unwrap();
    let server = GitServer::on_host(work.path());
    prepare_classic(&server, &registry);
    let manifest = server.checkout.join("apps/base/ledger/deployment.yaml");
    let original = std::fs::read_to_string(&manifest).unwrap();
    let edit = |round: usize| {
        std::fs::write(&manifest, original.replace("ledger:1.0.7", &format!("ledger:2.0.{round}"))).unwrap();
    };
    let (_, classic_times) = runtime.block_on(classic_loop(&client, &server, &environment, ROUNDS, 5, edit));
    runtime.block_on(remove_classic(&client));
    drop(server);

    let sim = devenv::providers::Capabilities { runs_pods: false, owns_cluster: true };
    let settings = devenv::flux::settings(&config, &registry, sim).unwrap();
    drop(cleanup);

    let (devenv_loop, classic) = (median(devenv_times), median(classic_times));
    println!(
        "inner loop, edit to Ready: devenv {:.2}s, classic commit+push+reconcile of the same graph {:.2}s, ratio {:.2} (target at most 0.5 and under 3 s)",
        devenv_loop.as_secs_f64(),
        classic.as_secs_f64(),
        devenv_loop.as_secs_f64() / classic.as_secs_f64()
    );
    println!("no-op up: {:.2}s (target under 1 s)", noop.as_secs_f64());
    let kustomization_edit = median(kustomization_times);
    println!(
        "Flux Kustomization edit to Ready: devenv {:.2}s, ratio {:.2} to the manifest edit (target at most 1.5)",
        kustomization_edit.as_secs_f64(),
        kustomization_edit.as_secs_f64() / devenv_loop.as_secs_f64()
    );

    // Packing next to `tar czf` of the same files, once the cluster is stopped: the fixture,
    // and the fixture with sixty more services, the size of the platforms devenv is for.
    println!("{}", packing("the fixture", &repo, &settings, work.path()));
    let sixty = work.path().join("sixty");
    common::copy_tree(Path::new(FIXTURE), &sixty);
    add_services(&sixty, 60);
    println!("{}", packing("the fixture with 60 more services", &sixty, &settings, work.path()));
}

/// Mean time of `devenv::flux::pack::pack` and of `tar czf` on the files it packs.
fn packing(what: &str, repo: &Path, settings: &devenv::flux::overlay::Settings, scratch: &Path) -> String {
    const PACK_ROUNDS: u32 = 20;
    let started = Instant::now();
    let mut packed = None;
    for _ in 0..PACK_ROUNDS {
        packed = Some(devenv::flux::pack::pack(repo, "clusters/local", "devenv-root", settings).unwrap());
    }
    let pack_time = started.elapsed() / PACK_ROUNDS;
    let packed = packed.unwrap();
    let files = devenv::flux::files::list_files(repo, "clusters/local").unwrap();
    let started = Instant::now();
    for _ in 0..PACK_ROUNDS {
        let status = Command::new("tar")
            .arg("czf")
            .arg(scratch.join("peer.tgz"))
            .args(&files)
            .current_dir(repo)
            .status()
            .unwrap();
        assert!(status.success());
    }
    let tar_time = started.elapsed() / PACK_ROUNDS;
    let megabytes = packed.raw_bytes as f64 / 1e6;
    format!(
        "packing {what}, {} files ({:.3} MB) into {} artifacts: devenv {:.1} ms ({:.1} MB/s), tar czf {:.1} ms ({:.1} MB/s), ratio {:.2}",
        packed.paths.len(),
        megabytes,
        packed.artifacts.len(),
        pack_time.as_secs_f64() * 1e3,
        megabytes / pack_time.as_secs_f64(),
        tar_time.as_secs_f64() * 1e3,
        megabytes / tar_time.as_secs_f64(),
        pack_time.as_secs_f64() / tar_time.as_secs_f64()
    )
}

/// `count` more services like the fixture's ledger, each in its own directory under
/// `apps/base/` and listed by the local apps overlay.
fn add_services(repo: &Path, count: usize) {
    let ledger = repo.join("apps/base/ledger");
    let overlay = repo.join("apps/local/kustomization.yaml");
    let mut resources = std::fs::read_to_string(&overlay).unwrap();
    for n in 1..=count {
        let name = format!("service-{n}");
        let dir = repo.join("apps/base").join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        for file in ["deployment.yaml", "scripts.yaml", "kustomization.yaml"] {
            let text = std::fs::read_to_string(ledger.join(file)).unwrap();
            std::fs::write(dir.join(file), text.replace("ledger", &name)).unwrap();
        }
        resources.push_str(&format!("  - ../base/{name}\n"));
    }
    std::fs::write(overlay, resources).unwrap();
}

/// The fixture as the cluster's repository: bootstrap's GitRepository points at the server,
/// and the chart comes from the environment's registry, where devenv put it.
fn prepare_classic(server: &GitServer, registry: &str) {
    common::copy_tree(Path::new(FIXTURE), &server.checkout);
    let sync = server.checkout.join("clusters/local/flux-system/gotk-sync.yaml");
    let text = std::fs::read_to_string(&sync).unwrap();
    std::fs::write(&sync, text.replace("ssh://git@example.com/lender/platform", &server.url())).unwrap();
    let release = server.checkout.join("apps/base/audit/release.yaml");
    let text = std::fs::read_to_string(&release).unwrap();
    let local = format!("url: oci://{registry}/charts/audit\n  insecure: true");
    std::fs::write(&release, text.replace("url: oci://ghcr.io/lender/charts/audit", &local)).unwrap();
    // No pod serves the admission webhook in sim (devenv's overlay deletes it there).
    let crds = server.checkout.join("infrastructure/crds");
    std::fs::remove_file(crds.join("policy-webhook.yaml")).unwrap();
    let text = std::fs::read_to_string(crds.join("kustomization.yaml")).unwrap();
    std::fs::write(crds.join("kustomization.yaml"), text.replace("  - policy-webhook.yaml\n", "")).unwrap();
    server.publish();
}

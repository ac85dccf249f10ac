//! Scale: devenv on a generated repository the size of a lender's platform (100 Flux
//! Kustomizations in `dependsOn` chains of five, 60 services of which 10 are HelmReleases of a
//! chart in the repository, `${VAR}`s from a MariaDB and a Redis substitute), measured in one
//! run on one sim cluster against the classic GitOps loop on the same graph (git commit, push,
//! reconcile; the environment ConfigMap written beforehand, as Terraform would):
//! - cold `up` to all Ready, next to the classic loop's first sync of the same graph;
//! - an app manifest edit → Ready, and a Flux Kustomization edit → Ready, each next to the
//!   same edit through the classic loop;
//! - a no-op `up`;
//! - devenv's peak RSS over every command.
//!
//! Anchor: Flux's own Mean Time To Production benchmark (fluxcd/flux-benchmark, RESULTS.md,
//! Flux v2.6.0): 100 Kustomizations reconciled in 28 s, 100 OCIRepositories pulled in 24 s, on
//! a 16-core runner with kustomize-controller at 2 CPU and concurrency 20.
//!
//! Needs the sim binaries, Docker, git and python3, and the test images:
//!   DEVENV_TEST_MARIADB_IMAGE=$(bash scripts/build-test-image.sh mariadb) \
//!   DEVENV_TEST_REDIS_IMAGE=$(bash scripts/build-test-image.sh redis) cargo bench --bench scale
//!
//! `DEVENV_SCALE_SKIP_CLASSIC=1` measures devenv alone (no ratios), for profiling.

#[path = "common/classic.rs"]
mod classic;
#[path = "common/cleanup.rs"]
mod cleanup;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "common/scale_repo.rs"]
mod scale_repo;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use classic::{GitServer, classic_loop, environment_values, median, remove_classic};
use cleanup::Cleanup;
use serde_json::json;

const ROUNDS: usize = 3;
const ENV: &str = "bench-scale";
/// The service whose manifest and Kustomization the rounds edit (a Deployment, in a chain).
const EDITED: usize = 7;

fn main() {
    let image = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            eprintln!("{name} is not set; build the image with scripts/build-test-image.sh");
            std::process::exit(1)
        })
    };
    let (mariadb, redis) = (image("DEVENV_TEST_MARIADB_IMAGE"), image("DEVENV_TEST_REDIS_IMAGE"));
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    let state = work.path().join("state");
    scale_repo::generate(&repo, &mariadb, &redis);
    // The peak of each kind of command, in the order first run.
    let mut peaks: Vec<(&'static str, i64)> = Vec::new();
    let mut devenv = |label: &'static str, args: &[&str]| -> (serde_json::Value, Duration) {
        let started = Instant::now();
        let (output, rss_kb) = run_measured(
            Command::new(env!("CARGO_BIN_EXE_devenv"))
                .args(args)
                .args(["--env", ENV, "--output", "json", "--timeout", "600s"])
                .current_dir(&repo)
                .env("DEVENV_STATE_DIR", &state),
        );
        let elapsed = started.elapsed();
        match peaks.iter_mut().find(|(l, _)| *l == label) {
            Some((_, peak)) => *peak = (*peak).max(rss_kb),
            None => peaks.push((label, rss_kb)),
        }
        let last = output.lines().last().unwrap_or_default().to_string();
        (serde_json::from_str(&last).unwrap_or_else(|_| panic!("devenv {args:?}: {output}")), elapsed)
    };

    let _cleanup = Cleanup { repo: &repo, state: &state, env: ENV };
    let (result, cold) = devenv("cold up", &["up"]);
    assert!(result.get("error").is_none(), "cold up: {result}");
    let objects = result["flux"]["objects"].as_array().unwrap().len();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(common::cluster_client(&result));

    let manifest = repo.join(scale_repo::deployment_path(EDITED));
    let original = std::fs::read_to_string(&manifest).unwrap();
    let mut edit_times = Vec::new();
    for round in 0..ROUNDS {
        let tag = format!("service-{EDITED}:1.0.{}", round + 1);
        std::fs::write(&manifest, original.replace(&format!("service-{EDITED}:1.0.0"), &tag)).unwrap();
        let (result, elapsed) = devenv("app edit up", &["up"]);
        assert_eq!(result["flux"]["artifacts"]["pushed"], json!([format!("devenv-ks-ks-{EDITED}")]), "{result}");
        edit_times.push(elapsed);
    }
    let mut noop_times = Vec::new();
    for _ in 0..ROUNDS {
        let (result, elapsed) = devenv("no-op up", &["up"]);
        assert_eq!(result["flux"]["artifacts"]["pushed"], json!([]), "{result}");
        noop_times.push(elapsed);
    }
    let kustomizations = repo.join("clusters/local/kustomizations.yaml");
    let kustomizations_original = std::fs::read_to_string(&kustomizations).unwrap();
    let marker = format!("SERVICE_NAME: service-{EDITED}\n");
    let mut kustomization_times = Vec::new();
    for round in 0..ROUNDS {
        let edited = format!("SERVICE_NAME: service-{EDITED}-r{round}\n");
        std::fs::write(&kustomizations, kustomizations_original.replace(&marker, &edited)).unwrap();
        let (result, elapsed) = devenv("Kustomization edit up", &["up"]);
        assert_eq!(result["flux"]["artifacts"]["pushed"], json!(["devenv-source"]), "{result}");
        kustomization_times.push(elapsed);
    }

    let seconds = |d: Duration| d.as_secs_f64();
    let (edit, kustomization, noop) = (median(edit_times), median(kustomization_times), median(noop_times));
    let peak_rss_kb = peaks.iter().map(|(_, kb)| *kb).max().unwrap_or(0);
    let peaks: Vec<String> = peaks.iter().map(|(label, kb)| format!("{label} {:.1} MB", *kb as f64 / 1024.0)).collect();
    println!(
        "devenv: cold up {:.1}s, app edit {:.2}s, Kustomization edit {:.2}s, no-op up {:.2}s; peak RSS: {}",
        seconds(cold),
        seconds(edit),
        seconds(kustomization),
        seconds(noop),
        peaks.join(", ")
    );
    // For profiling devenv alone: the classic loop takes most of the run.
    if std::env::var_os("DEVENV_SCALE_SKIP_CLASSIC").is_some() {
        return;
    }

    // The classic loop on the same cluster, once devenv's objects are pruned.
    let environment = runtime.block_on(environment_values(&client));
    let selection = devenv::config::Selection { repo: Some(repo.clone()), env: Some(ENV.into()), ..Default::default() };
    let config = devenv::config::load(&selection, &repo).unwrap();
    runtime
        .block_on(devenv::flux::deploy::remove(
            &client,
            &config.env,
            &devenv::state::FluxPlacement::for_config(&config),
            None,
            Duration::from_secs(300),
            &devenv::ui::SilentReporter,
        ))
        .unwrap();
    let server = GitServer::on_host(work.path());
    scale_repo::generate(&server.checkout, &mariadb, &redis);
    let sync = server.checkout.join("clusters/local/flux-system/gotk-sync.yaml");
    let text = std::fs::read_to_string(&sync).unwrap();
    std::fs::write(&sync, text.replace("ssh://git@example.com/lender/platform", &server.url())).unwrap();
    server.publish();
    let expected = scale_repo::KUSTOMIZATIONS + 1;
    let classic_manifest = server.checkout.join(scale_repo::deployment_path(EDITED));
    let edit_manifest = |round: usize| {
        let tag = format!("service-{EDITED}:2.0.{round}");
        std::fs::write(&classic_manifest, original.replace(&format!("service-{EDITED}:1.0.0"), &tag)).unwrap();
    };
    let (classic_cold, classic_edits) =
        runtime.block_on(classic_loop(&client, &server, &environment, ROUNDS, expected, edit_manifest));
    let classic_kustomizations = server.checkout.join("clusters/local/kustomizations.yaml");
    let edit_kustomization = |round: usize| {
        let edited = format!("SERVICE_NAME: service-{EDITED}-c{round}\n");
        std::fs::write(&classic_kustomizations, kustomizations_original.replace(&marker, &edited)).unwrap();
    };
    let (_, classic_kustomization_edits) =
        runtime.block_on(classic_loop(&client, &server, &environment, ROUNDS, expected, edit_kustomization));
    runtime.block_on(remove_classic(&client));
    drop(server);

    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    let (classic_edit, classic_kustomization) = (median(classic_edits), median(classic_kustomization_edits));
    println!(
        "scale: {} Kustomizations in dependsOn chains of {}, {} services ({} Flux objects Ready)",
        scale_repo::KUSTOMIZATIONS,
        scale_repo::CHAIN,
        scale_repo::SERVICES,
        objects
    );
    println!(
        "cold up to all Ready: devenv {:.1}s (substitutes included), classic first sync {:.1}s, ratio {:.2}; anchor: Flux's MTTP benchmark, 100 Kustomizations in 28 s",
        seconds(cold),
        seconds(classic_cold),
        ratio(cold, classic_cold)
    );
    println!(
        "app manifest edit to Ready: devenv {:.2}s, classic {:.2}s, ratio {:.2} (target at most 0.5 and under 3 s)",
        seconds(edit),
        seconds(classic_edit),
        ratio(edit, classic_edit)
    );
    println!(
        "Flux Kustomization edit to Ready: devenv {:.2}s, classic {:.2}s, ratio {:.2} (target at most 0.5 and under 3 s)",
        seconds(kustomization),
        seconds(classic_kustomization),
        ratio(kustomization, classic_kustomization)
    );
    println!("no-op up: {:.2}s (target under 1 s)", seconds(noop));
    println!("devenv peak RSS over every command: {:.1} MB (target under 50 MB)", peak_rss_kb as f64 / 1024.0);
}

/// Runs a command to its end; its stdout and its peak resident set size in KiB (`wait4`).
// The child is reaped by `wait4`, which `Child::wait` cannot do while keeping its rusage.
#[allow(clippy::zombie_processes)]
fn run_measured(command: &mut Command) -> (String, i64) {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    let mut status = 0;
    // SAFETY: `usage` is a plain C struct wait4 fills; the pid is our own child, not yet reaped.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4: {}", std::io::Error::last_os_error());
    (stdout, usage.ru_maxrss)
}

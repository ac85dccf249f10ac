//! Previews on one sim cluster (a real API server and Flux controllers), measured in one run:
//! - `preview up` cold to Ready, and `preview up` for a new commit, next to `devenv up` of the
//!   same repository into a namespace of the same cluster (`existing`, `isolation:
//!   namespace`): what the preview's checks, bundle and Lease cost on top of the deployment;
//! - ten previews of one project in the cluster: the time of each `preview up`, and the
//!   kube-apiserver's RSS before and after them;
//! - `preview gc` of 50 expired previews (namespaces with the isolation bundle, as `preview up`
//!   leaves them before Flux applies anything), next to deleting the same number of
//!   namespaces one request at a time, as a script would.
//!
//! The repository is the platform fixture (`tests/fixtures/platform`: three Kustomizations with
//! `wait: true` in a chain, a HelmRelease from an HTTP Helm repository). Needs the sim
//! binaries and git: `cargo bench --bench preview`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use devenv::preview::{Preview, Quota, Settings, bundle};
use devenv::providers::sim::{self, Lifetime, Scope, Sim, SimInfo};
use devenv::ui::SilentReporter;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/platform");
const PREVIEWS: u64 = 10;
const EXPIRED: u64 = 50;
const ROUNDS: usize = 3;

fn main() {
    if let Err(error) = sim::binaries() {
        eprintln!("preview bench: skipped: {error}; build them with `bash sim/build.sh`");
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let work = tempfile::tempdir().unwrap();
    let info = runtime.block_on(boot(&work.path().join("sim")));
    let repo = Repo::new(&work.path().join("repo"), &info);

    // Warm-up (not counted): the first apply of Flux's objects in a fresh cluster.
    repo.devenv(&["preview", "up", "--pr", "900"]);
    repo.devenv(&["preview", "down", "--pr", "900", "--wait"]);

    // Alternating, so the load of the machine weighs on both alike.
    let (mut cold, mut peer_cold, mut update, mut peer_update) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let (pr, peer_env) = (round.to_string(), format!("peer-{round}"));
        peer_cold.push(repo.devenv(&["up", "--profile", "shared", "--env", &peer_env]).1);
        cold.push(repo.devenv(&["preview", "up", "--pr", &pr]).1);
        repo.touch(round);
        peer_update.push(repo.devenv(&["up", "--profile", "shared", "--env", &peer_env]).1);
        update.push(repo.devenv(&["preview", "up", "--pr", &pr]).1);
        repo.devenv(&["down", "--env", &peer_env]);
        repo.devenv(&["preview", "down", "--pr", &pr, "--wait"]);
    }

    let sim_dir = work.path().join("sim");
    let apiserver_before = runtime.block_on(apiserver_rss(&sim_dir));
    let mut times = Vec::new();
    for pr in 1..=PREVIEWS {
        times.push(repo.devenv(&["preview", "up", "--pr", &pr.to_string()]).1);
    }
    let apiserver_after = runtime.block_on(apiserver_rss(&sim_dir));
    let (_, list) = repo.devenv(&["preview", "list"]);
    for pr in 1..=PREVIEWS {
        repo.devenv(&["preview", "down", "--pr", &pr.to_string()]);
    }

    let client = runtime.block_on(admin_client(&info));
    runtime.block_on(expired_previews(&client, "platform"));
    let (result, gc) = repo.devenv(&["preview", "gc"]);
    let collected = result["deleted"].as_array().map(Vec::len).unwrap_or_default();
    runtime.block_on(expired_previews(&client, "peer-bench"));
    let peer_gc = runtime.block_on(delete_namespaces(&client, "peer-bench"));

    println!("previews on a sim cluster, the platform fixture (4 Kustomizations, 1 HelmRelease); medians of {ROUNDS}");
    let row = |what: &str, ours: Duration, peer: Duration| {
        println!(
            "{what:<44} {:>7.2} s   peer {:>7.2} s   ratio {:.2}",
            ours.as_secs_f64(),
            peer.as_secs_f64(),
            ours.as_secs_f64() / peer.as_secs_f64()
        )
    };
    row("preview up, cold, vs up in a shared namespace", median(&mut cold), median(&mut peer_cold));
    row("preview up, new commit, vs up again", median(&mut update), median(&mut peer_update));
    let total: Duration = times.iter().sum();
    println!(
        "{PREVIEWS} previews, one after the other: {:.1} s in all, {:.2} s each (median {:.2} s); list of them {:.2} s",
        total.as_secs_f64(),
        total.as_secs_f64() / PREVIEWS as f64,
        median(&mut times).as_secs_f64(),
        list.as_secs_f64()
    );
    if let (Some(before), Some(after)) = (apiserver_before, apiserver_after) {
        println!(
            "kube-apiserver RSS: {:.0} MiB before, {:.0} MiB with {PREVIEWS} previews (+{:.1} MiB each)",
            mib(before),
            mib(after),
            (mib(after) - mib(before)) / PREVIEWS as f64
        );
    }
    row(&format!("gc of {EXPIRED} expired previews ({collected} deleted), vs deleting namespaces"), gc, peer_gc);
    runtime.block_on(async { Sim::new(&work.path().join("sim")).down(true, &SilentReporter).await.ok() });
}

async fn boot(dir: &Path) -> SimInfo {
    std::fs::create_dir_all(dir).unwrap();
    Sim::new(dir)
        .with_lifetime(Lifetime::Owned)
        .with_scope(Scope::Full)
        .up("preview-bench", &SilentReporter)
        .await
        .unwrap()
}

async fn admin_client(info: &SimInfo) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(&info.kubeconfig).unwrap();
    let options = kube::config::KubeConfigOptions { context: Some(info.context.clone()), ..Default::default() };
    kube::Client::try_from(kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.unwrap()).unwrap()
}

/// The platform fixture under git, with a `preview` profile and an `existing` one (`shared`)
/// for the same cluster.
struct Repo {
    dir: PathBuf,
    state: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Repo {
    fn new(dir: &Path, info: &SimInfo) -> Repo {
        common::copy_tree(Path::new(FIXTURE), dir);
        let profiles = dir.join(".devenv/profiles");
        std::fs::create_dir_all(&profiles).unwrap();
        let (context, registry) = (&info.context, &info.registry);
        std::fs::write(
            profiles.join("preview.yaml"),
            format!("cluster:\n  provider: eks-namespace\n  context: {context}\nregistry:\n  url: {registry}\nmaxPreviews: 100\n"),
        )
        .unwrap();
        std::fs::write(
            profiles.join("shared.yaml"),
            format!("cluster:\n  provider: existing\n  context: {context}\nregistry:\n  url: {registry}\nenvironment:\n  AWS_REGION: us-east-1\n"),
        )
        .unwrap();
        let repo =
            Repo { dir: dir.to_path_buf(), state: tempfile::tempdir().unwrap(), kubeconfig: info.kubeconfig.clone() };
        repo.git(&["init", "-q"]);
        repo.commit("first");
        repo
    }

    fn git(&self, args: &[&str]) {
        let status = Command::new("git")
            .args(["-c", "user.name=bench", "-c", "user.email=bench@example.com"])
            .args(args)
            .current_dir(&self.dir)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    }

    fn commit(&self, message: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
    }

    /// An edit of an app manifest committed, so the next `up` pushes and reconciles a new
    /// commit.
    fn touch(&self, revision: usize) {
        let path = self.dir.join("apps/local/kustomization.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.split("commonLabels:").next().unwrap().to_string();
        std::fs::write(&path, format!("{text}commonLabels:\n  revision: \"{revision}\"\n")).unwrap();
        self.commit("an edit");
    }

    /// Runs devenv with `--output json`; its result and how long it took. Fails loudly.
    fn devenv(&self, args: &[&str]) -> (serde_json::Value, Duration) {
        let started = Instant::now();
        let output = Command::new(env!("CARGO_BIN_EXE_devenv"))
            .args(args)
            .args(["--output", "json"])
            .current_dir(&self.dir)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("DEVENV_STATE_DIR", self.state.path())
            .output()
            .unwrap();
        let elapsed = started.elapsed();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "devenv {args:?} failed: {stdout}{}", String::from_utf8_lossy(&output.stderr));
        let last = stdout.lines().last().unwrap_or_default();
        (serde_json::from_str(last).unwrap_or_default(), elapsed)
    }
}

/// `EXPIRED` preview namespaces of `project` (pull requests from 101), each with its bundle,
/// expired an hour ago.
async fn expired_previews(client: &kube::Client, project: &str) {
    let settings = Settings {
        quota: Quota { cpu: None, memory: None, pods: Some(10) },
        limits: devenv::preview::ContainerDefaults {
            cpu: "500m".into(),
            memory: "512Mi".into(),
            request_cpu: "100m".into(),
            request_memory: "128Mi".into(),
        },
        ingress_namespace: None,
        ttl: Duration::from_secs(3600),
    };
    let an_hour_ago = jiff::Timestamp::now().checked_sub(jiff::SignedDuration::from_hours(2)).unwrap();
    for pr in 101..=100 + EXPIRED {
        let preview = Preview::new(pr, project, None, an_hour_ago, Duration::from_secs(3600)).unwrap();
        for object in bundle::objects(&preview, &settings) {
            devenv::kube::apply(client, &object).await.unwrap();
        }
    }
}

/// Deletes the namespaces of `project`'s previews one request at a time and waits until the
/// API server has taken every deletion, as `preview gc` does without `--wait`.
async fn delete_namespaces(client: &kube::Client, project: &str) -> Duration {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let started = Instant::now();
    let selector = format!("devenv.io/project={project}");
    for namespace in namespaces.list(&ListParams::default().labels(&selector)).await.unwrap().items {
        namespaces.delete(&namespace.metadata.name.unwrap(), &DeleteParams::background()).await.unwrap();
    }
    started.elapsed()
}

/// The kube-apiserver's resident memory, as the sim reports its processes.
async fn apiserver_rss(dir: &Path) -> Option<u64> {
    let processes = Sim::new(dir).status().await.ok()?;
    processes.into_iter().find(|p| p.name == "kube-apiserver").and_then(|p| p.rss_bytes)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

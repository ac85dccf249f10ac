//! The inner loop, measured against the classic GitOps loop on the same sim cluster:
//! - devenv: edit a manifest, `devenv up` (pack, push if changed, reconcile, wait for Ready);
//! - classic: edit, `git commit`, `git push` to a Git server on 127.0.0.1 (git http-backend
//!   behind Python's CGI server), request reconciliation of the GitRepository, wait until the
//!   Kustomization applied the new commit.
//!
//! Also: a no-op `up`, and packing throughput next to `tar czf` of the same tree.
//!
//! Needs the sim binaries, Docker, git and python3, and DEVENV_TEST_MARIADB_IMAGE:
//!   DEVENV_TEST_MARIADB_IMAGE=$(bash scripts/build-test-image.sh mariadb) cargo bench --bench inner_loop

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

const ROUNDS: usize = 3;
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/landbay");

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
            .args(["--env", "bench-loop", "--output", "json"])
            .current_dir(&repo)
            .env("DEVENV_STATE_DIR", &state)
            .output()
            .unwrap();
        assert!(output.status.success(), "devenv {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        let text = String::from_utf8_lossy(&output.stdout);
        serde_json::from_str(text.lines().last().unwrap()).unwrap()
    };
    let manifest = repo.join("apps/base/ledger/deployment.yaml");
    let original = std::fs::read_to_string(&manifest).unwrap();

    let result = devenv(&["up"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(client(&result));

    // devenv's loop.
    let mut devenv_times = Vec::new();
    for round in 0..ROUNDS {
        std::fs::write(&manifest, original.replace("ledger:1.0.7", &format!("ledger:1.0.{}", 8 + round))).unwrap();
        let started = Instant::now();
        let result = devenv(&["up"]);
        devenv_times.push(started.elapsed());
        assert_eq!(result["flux"]["artifact"]["pushed"], true);
    }
    let started = Instant::now();
    devenv(&["up"]);
    let noop = started.elapsed();

    // The classic loop, on the same cluster.
    let server = GitServer::start(work.path());
    let classic_times = runtime.block_on(classic_loop(&client, &server));
    drop(server);

    // Packing throughput next to `tar czf` of the same files.
    let config =
        devenv::config::load(&devenv::config::Selection { repo: Some(repo.clone()), ..Default::default() }, &repo)
            .unwrap();
    let settings = devenv::flux::settings(&config).unwrap();
    let started = Instant::now();
    let mut packed = None;
    for _ in 0..20 {
        packed = Some(devenv::flux::pack::pack(&repo, "clusters/local", &settings).unwrap());
    }
    let pack_time = started.elapsed() / 20;
    let packed = packed.unwrap();
    let files = devenv::flux::pack::list_files(&repo, "clusters/local").unwrap();
    let started = Instant::now();
    for _ in 0..20 {
        let status = Command::new("tar")
            .arg("czf")
            .arg(work.path().join("peer.tgz"))
            .args(&files)
            .current_dir(&repo)
            .status()
            .unwrap();
        assert!(status.success());
    }
    let tar_time = started.elapsed() / 20;
    let megabytes = packed.raw_bytes as f64 / 1e6;

    devenv(&["down", "--purge"]);

    let (devenv_loop, classic) = (median(devenv_times), median(classic_times));
    println!(
        "inner loop, edit to Ready: devenv {:.2}s, classic commit+push+reconcile {:.2}s, ratio {:.2} (target at most 0.5 and under 3 s)",
        devenv_loop.as_secs_f64(),
        classic.as_secs_f64(),
        devenv_loop.as_secs_f64() / classic.as_secs_f64()
    );
    println!("no-op up: {:.2}s (target under 1 s)", noop.as_secs_f64());
    println!(
        "packing {} files ({:.3} MB): devenv {:.1} ms ({:.1} MB/s), tar czf {:.1} ms ({:.1} MB/s), ratio {:.2}",
        packed.files,
        megabytes,
        pack_time.as_secs_f64() * 1e3,
        megabytes / pack_time.as_secs_f64(),
        tar_time.as_secs_f64() * 1e3,
        megabytes / tar_time.as_secs_f64(),
        pack_time.as_secs_f64() / tar_time.as_secs_f64()
    );
}

async fn client(result: &serde_json::Value) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(result["cluster"]["kubeconfig"].as_str().unwrap()).unwrap();
    let options = kube::config::KubeConfigOptions {
        context: Some(result["cluster"]["context"].as_str().unwrap().to_string()),
        ..Default::default()
    };
    kube::Client::try_from(kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.unwrap()).unwrap()
}

/// A bare repository served over HTTP by git http-backend behind Python's CGI server.
struct GitServer {
    child: Child,
    port: u16,
    checkout: PathBuf,
}

impl GitServer {
    fn start(work: &Path) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let root = work.join("git");
        let cgi = root.join("cgi-bin");
        std::fs::create_dir_all(&cgi).unwrap();
        git(&root, &["init", "-q", "--bare", "classic.git"]);
        // Python's CGI server runs scripts as `nobody` when started as root: the repository
        // must be readable by others, and git must accept a repository owned by someone else.
        for dir in [work, root.as_path()] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(
            cgi.join("git"),
            format!(
                "#!/bin/sh\nexport GIT_PROJECT_ROOT={}\nexport GIT_HTTP_EXPORT_ALL=1\nexport GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0='*'\nexec /usr/lib/git-core/git-http-backend\n",
                root.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(cgi.join("git"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let port = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--cgi", "--bind", "127.0.0.1", &port.to_string()])
            .current_dir(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let checkout = work.join("classic");
        std::fs::create_dir_all(checkout.join("config")).unwrap();
        git(&checkout, &["init", "-q", "-b", "main"]);
        git(&checkout, &["remote", "add", "origin", root.join("classic.git").to_str().unwrap()]);
        let server = GitServer { child, port, checkout };
        server.commit("v0");
        std::thread::sleep(Duration::from_millis(500));
        server
    }

    /// Commits a ConfigMap with `value` and pushes it; returns the commit.
    fn commit(&self, value: &str) -> String {
        std::fs::write(
            self.checkout.join("config/configmap.yaml"),
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: classic\n  namespace: default\ndata:\n  value: {value}\n"),
        )
        .unwrap();
        git(&self.checkout, &["add", "-A"]);
        git(
            &self.checkout,
            &["-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-q", "-m", value],
        );
        git(&self.checkout, &["push", "-q", "origin", "main"]);
        let output = Command::new("git").args(["rev-parse", "HEAD"]).current_dir(&self.checkout).output().unwrap();
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git").args(args).current_dir(dir).stdout(Stdio::null()).status().unwrap();
    assert!(status.success(), "git {args:?}");
}

fn api(client: &kube::Client, group: &str, version: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::namespaced_with(client.clone(), "flux-system", &resource)
}

async fn classic_loop(client: &kube::Client, server: &GitServer) -> Vec<Duration> {
    let sources = api(client, "source.toolkit.fluxcd.io", "v1", "GitRepository", "gitrepositories");
    let kustomizations = api(client, "kustomize.toolkit.fluxcd.io", "v1", "Kustomization", "kustomizations");
    let apply = PatchParams::apply("bench").force();
    let source = json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
        "metadata": {"name": "classic", "namespace": "flux-system"},
        "spec": {"interval": "60m", "url": format!("http://127.0.0.1:{}/cgi-bin/git/classic.git", server.port), "ref": {"branch": "main"}},
    });
    sources.patch("classic", &apply, &Patch::Apply(&source)).await.unwrap();
    let kustomization = json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": "classic", "namespace": "flux-system"},
        "spec": {"interval": "60m", "path": "./config", "prune": true, "sourceRef": {"kind": "GitRepository", "name": "classic"}},
    });
    kustomizations.patch("classic", &apply, &Patch::Apply(&kustomization)).await.unwrap();
    let mut times = Vec::new();
    for round in 0..=ROUNDS {
        let started = Instant::now();
        let commit = server.commit(&format!("v{}", round + 1));
        let now = format!("{:?}", std::time::SystemTime::now());
        let annotate = json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": now}}});
        sources.patch("classic", &PatchParams::default(), &Patch::Merge(&annotate)).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let object = kustomizations.get("classic").await.unwrap();
            let applied =
                object.data.pointer("/status/lastAppliedRevision").and_then(|v| v.as_str()).unwrap_or_default();
            if applied.ends_with(&commit) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the classic loop never applied {commit}: {:?}",
                object.data.pointer("/status")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The first round also creates the objects; only later rounds are the loop.
        if round > 0 {
            times.push(started.elapsed());
        }
    }
    times
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

//! The classic GitOps loop, the peer of devenv's inner loop in the benches: a bare Git
//! repository served over HTTP by git http-backend behind Python's CGI server, reconciled
//! the way `flux bootstrap` sets a cluster up (a GitRepository and a root Kustomization, the
//! environment ConfigMap written beforehand, as Terraform would). Each round edits a file,
//! commits, pushes, requests reconciliation of the GitRepository and waits until every
//! Kustomization applied the new commit.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

/// Where the Git server runs.
enum Serving {
    /// A process on 127.0.0.1, for clusters whose controllers run on this machine (sim).
    Host { child: Child, port: u16 },
    /// A container on a Docker network (kind), published on 127.0.0.1 only for checks.
    Container { name: String },
}

/// A bare repository `classic.git` served over HTTP, and the checkout pushed to it.
pub struct GitServer {
    serving: Serving,
    /// The working copy: copy the fixture here and edit it, then [`GitServer::publish`].
    pub checkout: PathBuf,
    bare: PathBuf,
}

impl GitServer {
    /// Serves from this machine, on 127.0.0.1.
    pub fn on_host(work: &Path) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let root = work.join("git");
        let cgi = root.join("cgi-bin");
        std::fs::create_dir_all(&cgi).unwrap();
        let bare = Self::init_bare(work, &root);
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
        GitServer { serving: Serving::Host { child, port }, checkout: work.join("classic"), bare }
    }

    /// Serves from a container of `image` (tests/images/git-server) on `network`, where the
    /// cluster's pods reach it by `name`.
    pub fn in_container(work: &Path, image: &str, network: &str, name: &str) -> Self {
        let root = work.join("git");
        std::fs::create_dir_all(&root).unwrap();
        let bare = Self::init_bare(work, &root);
        let _ = Command::new("docker").args(["rm", "-f", name]).output();
        let mount = format!("{}:/srv/repos:ro", root.display());
        let output = Command::new("docker")
            .args(["run", "-d", "--name", name, "--network", network, "-v", &mount, image])
            .output()
            .unwrap();
        assert!(output.status.success(), "docker run {image}: {}", String::from_utf8_lossy(&output.stderr));
        GitServer { serving: Serving::Container { name: name.to_string() }, checkout: work.join("classic"), bare }
    }

    fn init_bare(work: &Path, root: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        git(root, &["init", "-q", "--bare", "classic.git"]);
        // Python's CGI server runs scripts as `nobody` when started as root: the repository
        // must be readable by others, and git must accept a repository owned by someone else.
        for dir in [work, root] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        root.join("classic.git")
    }

    /// The repository's URL as the cluster fetches it.
    pub fn url(&self) -> String {
        match &self.serving {
            Serving::Host { port, .. } => format!("http://127.0.0.1:{port}/cgi-bin/git/classic.git"),
            Serving::Container { name } => format!("http://{name}:8000/cgi-bin/git/classic.git"),
        }
    }

    /// Makes the checkout a Git working copy of the server's repository and pushes it.
    pub fn publish(&self) -> String {
        git(&self.checkout, &["init", "-q", "-b", "main"]);
        git(&self.checkout, &["remote", "add", "origin", self.bare.to_str().unwrap()]);
        let commit = self.commit();
        std::thread::sleep(Duration::from_millis(500));
        commit
    }

    /// Commits the checkout as it is and pushes it; returns the commit.
    pub fn commit(&self) -> String {
        git(&self.checkout, &["add", "-A"]);
        git(
            &self.checkout,
            &["-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-q", "-m", "edit"],
        );
        git(&self.checkout, &["push", "-q", "origin", "main"]);
        let output = Command::new("git").args(["rev-parse", "HEAD"]).current_dir(&self.checkout).output().unwrap();
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        match &mut self.serving {
            Serving::Host { child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Serving::Container { name } => {
                let _ = Command::new("docker").args(["rm", "-f", name.as_str()]).output();
            }
        }
    }
}

pub fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git").args(args).current_dir(dir).stdout(Stdio::null()).status().unwrap();
    assert!(status.success(), "git {args:?}");
}

fn api(client: &kube::Client, group: &str, version: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::namespaced_with(client.clone(), "flux-system", &resource)
}

/// The environment ConfigMap and Secret devenv wrote, as one map: what Terraform would write
/// for the classic loop.
pub async fn environment_values(client: &kube::Client) -> BTreeMap<String, String> {
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), "flux-system");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), "flux-system");
    let mut values = config_maps.get("cluster-env").await.unwrap().data.unwrap_or_default();
    for (key, value) in secrets.get("cluster-env-secrets").await.unwrap().data.unwrap_or_default() {
        values.insert(key, String::from_utf8(value.0).unwrap());
    }
    values
}

/// Bootstraps the classic loop on the cluster, then runs `rounds` edits (`edit(round)`
/// changes the checkout) after a first round that creates the objects; each round ends once
/// `kustomizations` Kustomizations or more applied the commit. The first round's time, and
/// the edit-to-Ready times.
pub async fn classic_loop(
    client: &kube::Client,
    server: &GitServer,
    environment: &BTreeMap<String, String>,
    rounds: usize,
    kustomizations_expected: usize,
    edit: impl Fn(usize),
) -> (Duration, Vec<Duration>) {
    let sources = api(client, "source.toolkit.fluxcd.io", "v1", "GitRepository", "gitrepositories");
    let kustomizations = api(client, "kustomize.toolkit.fluxcd.io", "v1", "Kustomization", "kustomizations");
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), "flux-system");
    let apply = PatchParams::apply("bench").force();
    let config_map = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cluster-env", "namespace": "flux-system"},
        "data": environment,
    });
    config_maps.patch("cluster-env", &apply, &Patch::Apply(&config_map)).await.unwrap();
    let source = json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
        "metadata": {"name": "flux-system", "namespace": "flux-system"},
        "spec": {"interval": "60m", "url": server.url(), "ref": {"branch": "main"}},
    });
    sources.patch("flux-system", &apply, &Patch::Apply(&source)).await.unwrap();
    let root = json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": "flux-system", "namespace": "flux-system"},
        "spec": {"interval": "60m", "path": "./clusters/local", "prune": true, "sourceRef": {"kind": "GitRepository", "name": "flux-system"}},
    });
    kustomizations.patch("flux-system", &apply, &Patch::Apply(&root)).await.unwrap();
    let mut times = Vec::new();
    let mut first = Duration::ZERO;
    for round in 0..=rounds {
        let started = Instant::now();
        edit(round);
        let commit = server.commit();
        let now = format!("{:?}", std::time::SystemTime::now());
        let annotate = json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": now}}});
        sources.patch("flux-system", &PatchParams::default(), &Patch::Merge(&annotate)).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(300);
        // The edit is live once every Kustomization of the graph applied the commit.
        loop {
            let list = kustomizations.list(&ListParams::default()).await.unwrap().items;
            let behind: Vec<String> = list
                .iter()
                .filter(|k| {
                    let applied = k.data.pointer("/status/lastAppliedRevision").and_then(|v| v.as_str());
                    !applied.unwrap_or_default().ends_with(&commit)
                })
                .map(|k| k.metadata.name.clone().unwrap_or_default())
                .collect();
            if list.len() >= kustomizations_expected && behind.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "the classic loop never applied {commit}; behind: {behind:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The first round also creates the objects; only later rounds are the loop.
        match round {
            0 => first = started.elapsed(),
            _ => times.push(started.elapsed()),
        }
    }
    (first, times)
}

/// Deletes the classic root and waits for Flux to prune the graph.
pub async fn remove_classic(client: &kube::Client) {
    let kustomizations = api(client, "kustomize.toolkit.fluxcd.io", "v1", "Kustomization", "kustomizations");
    let _ = kustomizations.delete("flux-system", &Default::default()).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while kustomizations.get_opt("flux-system").await.unwrap().is_some() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

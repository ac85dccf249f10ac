//! The kind test bed (testbed/kind/build.sh) as the kind tier and the kind bench use it:
//! its variables, a repository shaped like the platform fixture on its node image, and
//! devenv run with its `kind` on PATH.

use std::path::{Path, PathBuf};

use super::{TestRepo, copy_tree, tier_available};

pub const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/platform");

/// What the test bed built.
pub struct Testbed {
    pub node_image: String,
    /// `kind` and `kubectl` of the test bed.
    pub bin_dir: PathBuf,
    /// The `docker` wrapper kind must find first.
    pub wrapper_dir: PathBuf,
    /// The test bed's kind configuration (one node, no default CNI, cgroup v1 allowed).
    pub kind_config: PathBuf,
    pub busybox_image: String,
    /// An image the host's Docker has (the registry's).
    pub registry_image: String,
}

pub fn testbed() -> Option<Testbed> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let found = (|| {
        Some(Testbed {
            node_image: var("DEVENV_KIND_NODE_IMAGE")?,
            bin_dir: PathBuf::from(var("DEVENV_KIND_BIN")?).parent()?.to_path_buf(),
            wrapper_dir: var("DEVENV_KIND_DOCKER_WRAPPER_DIR")?.into(),
            kind_config: var("DEVENV_KIND_CONFIG")?.into(),
            busybox_image: var("DEVENV_KIND_BUSYBOX_IMAGE")?,
            registry_image: var("DEVENV_KIND_REGISTRY_IMAGE")?,
        })
    })();
    let problem = match &found {
        None => Some("the DEVENV_KIND_* variables are not set (scripts/test.sh sets them; or `eval \"$(bash testbed/kind/build.sh)\"`)".to_string()),
        Some(bed) if !bed.bin_dir.join("kind").exists() => Some(format!("no kind in {}", bed.bin_dir.display())),
        Some(_) => None,
    };
    tier_available("kind", problem).then(|| found.unwrap())
}

/// PATH for devenv: the docker wrapper, then the test bed's kind, then the machine's.
pub fn path_with(dirs: &[&Path]) -> String {
    let mut parts: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    parts.push(std::env::var("PATH").unwrap_or_default());
    parts.join(":")
}

/// A repository shaped like the platform fixture, on the test bed's kind node image.
pub fn platform_repo(env: &str, bed: &Testbed, mariadb: &str, registry_port: Option<u16>) -> TestRepo {
    let repo = TestRepo::new(env, "");
    copy_tree(Path::new(FIXTURE), repo.path());
    repo.write(
        "devenv.yaml",
            "project: platform\ndefaultProfile: kind-test\nflux:\n  path: clusters/local\nenvironment:\n  configMap:\n    name: cluster-env\n    namespace: flux-system\nservices:\n  - name: orders-db\n    kind: rds-mariadb\n    params:\n      database: orders\n    keys:\n      DB_HOST: host\n      DB_PORT: port\n      DB_NAME: database\n      DB_USER: username\n      DB_PASSWORD: password\noverlay:\n  maxReplicas: 1\n  sources:\n    - url: https://charts.example.org\n      to: oci://{{ registry }}/charts\n      insecure: true\ncharts:\n  - path: charts/greeter\n    repository: charts/stable\n",
    );
    // The greeter runs for real: an image the node has, and a command that keeps running.
    let release = std::fs::read_to_string(repo.path().join("apps/base/greeter/release.yaml")).unwrap();
    repo.write(
        "apps/base/greeter/release.yaml",
        &release.replace("    region: ${AWS_REGION}\n", "    region: ${AWS_REGION}\n    image: ${APP_IMAGE}\n"),
    );
    let template = std::fs::read_to_string(repo.path().join("charts/greeter/templates/deployment.yaml")).unwrap();
    repo.write(
        "charts/greeter/templates/deployment.yaml",
        &template.replace(
            "          image: {{ .Values.image }}\n",
            "          image: {{ .Values.image }}\n          command: [\"sh\", \"-c\", \"echo $GREETING; exec sleep 86400\"]\n",
        ),
    );
    std::fs::copy(&bed.kind_config, repo.path().join("kind-config.yaml")).unwrap();
    let port = registry_port.map(|p| format!("registry:\n  hostPort: {p}\n")).unwrap_or_default();
    repo.write(
        ".devenv/profiles/kind-test.yaml",
        &format!(
            "description: kind on the test bed's node image\ncluster:\n  provider: kind\n  image: {}\n  kindConfig: kind-config.yaml\n{port}substitutes:\n  memory: 1Gi\nenvironment:\n  AWS_REGION: eu-west-2\n  APP_IMAGE: {}\n",
            bed.node_image, bed.busybox_image
        ),
    );
    repo.override_image("rds-mariadb", mariadb);
    repo
}

/// devenv with the test bed's kind on PATH and a kubeconfig of the test's own.
pub fn devenv(repo: &TestRepo, bed: &Testbed, args: &[&str]) -> std::process::Output {
    repo.std_command()
        .args(args)
        .env("PATH", path_with(&[&bed.wrapper_dir, &bed.bin_dir]))
        .env("KUBECONFIG", repo.state.path().join("kubeconfig"))
        .output()
        .unwrap()
}

pub fn docker(args: &[&str]) -> String {
    let output = std::process::Command::new("docker").args(args).output().unwrap();
    assert!(output.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

pub fn kind_clusters(bed: &Testbed) -> Vec<String> {
    let output = std::process::Command::new(bed.bin_dir.join("kind")).args(["get", "clusters"]).output().unwrap();
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).collect()
}

/// Runs `down --purge` with the test bed's kind when the test ends, passed or not.
pub struct Cleanup<'a> {
    pub repo: &'a TestRepo,
    pub bed: &'a Testbed,
    pub env: &'a str,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = devenv(self.repo, self.bed, &["down", "--purge", "--env", self.env]);
    }
}

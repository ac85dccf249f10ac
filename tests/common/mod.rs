//! Shared test helpers: the real binary in a clean environment, temporary repositories, and
//! tier gates (under CI=true a tier that cannot run fails instead of skipping).
#![allow(dead_code)]

pub mod kind;
pub mod shape;

use std::path::{Path, PathBuf};

use assert_cmd::Command;

pub const MARIADB_IMAGE_ENV: &str = "DEVENV_TEST_MARIADB_IMAGE";
pub const POSTGRES_IMAGE_ENV: &str = "DEVENV_TEST_POSTGRES_IMAGE";
pub const REDIS_IMAGE_ENV: &str = "DEVENV_TEST_REDIS_IMAGE";
pub const OPENSEARCH_IMAGE_ENV: &str = "DEVENV_TEST_OPENSEARCH_IMAGE";
pub const S3PROXY_IMAGE_ENV: &str = "DEVENV_TEST_S3PROXY_IMAGE";
pub const ELASTICMQ_IMAGE_ENV: &str = "DEVENV_TEST_ELASTICMQ_IMAGE";
pub const MOTO_IMAGE_ENV: &str = "DEVENV_TEST_MOTO_IMAGE";

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Returns false (test skipped with a note) or panics under CI when a tier cannot run.
pub fn tier_available(tier: &str, problem: Option<String>) -> bool {
    match problem {
        None => true,
        Some(problem) if in_ci() => panic!("the {tier} tier cannot run under CI=true: {problem}"),
        Some(problem) => {
            eprintln!("skipping: the {tier} tier cannot run: {problem}");
            false
        }
    }
}

/// The MariaDB test image built by scripts/build-test-image.sh, if the docker tier can run.
pub fn mariadb_image() -> Option<String> {
    test_image(MARIADB_IMAGE_ENV, "mariadb")
}

/// The PostgreSQL test image (Debian's postgresql-15, the `postgres` image's contract).
pub fn postgres_image() -> Option<String> {
    test_image(POSTGRES_IMAGE_ENV, "postgres")
}

/// The Redis test image (Debian's redis-server, the `redis`/`valkey` image's usage).
pub fn redis_image() -> Option<String> {
    test_image(REDIS_IMAGE_ENV, "redis")
}

/// The OpenSearch test image (the distribution from Maven Central on Debian's Java 17).
pub fn opensearch_image() -> Option<String> {
    test_image(OPENSEARCH_IMAGE_ENV, "opensearch")
}

/// The S3Proxy test image (the jar from Maven Central, the `andrewgaul/s3proxy` contract).
pub fn s3proxy_image() -> Option<String> {
    test_image(S3PROXY_IMAGE_ENV, "s3proxy")
}

/// The ElasticMQ test image (the server from Maven Central, the `elasticmq-native` layout).
pub fn elasticmq_image() -> Option<String> {
    test_image(ELASTICMQ_IMAGE_ENV, "elasticmq")
}

/// The moto test image (moto's server from PyPI on Debian's Python, the `motoserver/moto`
/// contract), for `secretsmanager` and `ssm-parameter-store`.
pub fn moto_image() -> Option<String> {
    test_image(MOTO_IMAGE_ENV, "moto")
}

/// A test image named by `variable`, if the docker tier can run (under CI=true a missing
/// image or engine fails the test).
fn test_image(variable: &str, name: &str) -> Option<String> {
    let image = std::env::var(variable).ok().filter(|v| !v.is_empty());
    let problem = match &image {
        None => Some(format!(
            "{variable} is not set (scripts/test.sh builds the image and sets it; or `scripts/build-test-image.sh {name}`)"
        )),
        Some(_) if !docker_works() => Some("`docker info` fails".to_string()),
        Some(_) => None,
    };
    tier_available("docker", problem).then(|| image.unwrap())
}

pub fn docker_works() -> bool {
    std::process::Command::new("docker")
        .arg("info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A temporary GitOps repository with a devenv.yaml and its own state directory (or one it
/// shares with other repositories, as environments on one machine do).
pub struct TestRepo {
    pub dir: tempfile::TempDir,
    pub state: tempfile::TempDir,
    pub env: String,
    shared_state: Option<PathBuf>,
}

impl TestRepo {
    /// `services` is the YAML list under `services:` (indented by two spaces).
    pub fn new(env: &str, services: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let project = format!(
            "project: {env}\ndefaultProfile: standalone\nflux:\n  path: clusters/local\nenvironment:\n  configMap:\n    name: cluster-env\n    namespace: flux-system\nservices:\n{services}"
        );
        std::fs::write(dir.path().join("devenv.yaml"), project).unwrap();
        TestRepo { dir, state: tempfile::tempdir().unwrap(), env: env.to_string(), shared_state: None }
    }

    /// Keeps the state under `root` (DEVENV_STATE_DIR), shared with other repositories.
    pub fn sharing_state(mut self, root: &Path) -> Self {
        self.shared_state = Some(root.to_path_buf());
        self
    }

    /// The root of the state directories (DEVENV_STATE_DIR).
    pub fn state_root(&self) -> &Path {
        self.shared_state.as_deref().unwrap_or(self.state.path())
    }

    /// The environment's state directory.
    pub fn env_dir(&self) -> PathBuf {
        self.state_root().join("envs").join(&self.env)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, relative: &str, text: &str) {
        let path = self.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// Points a catalogue kind at another image, as a user would.
    pub fn override_image(&self, kind: &str, image: &str) {
        self.write(&format!(".devenv/substitutes/{kind}.yaml"), &format!("image: {image}\n"));
    }

    pub fn state_file(&self) -> PathBuf {
        self.env_dir().join("state.json")
    }

    /// The devenv binary, run in this repository with a clean environment.
    pub fn devenv(&self) -> Command {
        Command::from_std(self.std_command())
    }

    /// The same as a plain `std::process::Command`, for tests that signal the process.
    pub fn std_command(&self) -> std::process::Command {
        let mut cmd = std_devenv_in(self.path());
        cmd.env("DEVENV_STATE_DIR", self.state_root());
        cmd
    }
}

impl Drop for TestRepo {
    fn drop(&mut self) {
        // Best effort: a failed test must not leave containers behind.
        let _ = self.devenv().args(["down", "--purge", "--env", &self.env.clone()]).output();
    }
}

pub fn devenv_in(dir: &Path) -> Command {
    Command::from_std(std_devenv_in(dir))
}

fn std_devenv_in(dir: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_devenv"));
    cmd.current_dir(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("DEVENV_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

impl TestRepo {
    /// `up --output json --show-secrets` plus `extra`, which must succeed: its NDJSON events
    /// and its result (the last line).
    pub fn up_json(&self, extra: &[&str]) -> (Vec<serde_json::Value>, serde_json::Value) {
        let output = self.devenv().args(["up", "--output", "json", "--show-secrets"]).args(extra).output().unwrap();
        assert!(
            output.status.success(),
            "up failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let events = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        (events, result_json(&output.stdout))
    }
}

/// The last JSON line of NDJSON output: the command's result.
pub fn result_json(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    let last = text.lines().rev().find(|l| !l.trim().is_empty()).expect("some output");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON ({e}): {last}"))
}

/// Copies a directory tree (a fixture repository into a temporary one).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A client for the cluster an `up --output json` result describes (its `cluster`).
pub async fn cluster_client(result: &serde_json::Value) -> kube::Client {
    let info: devenv::providers::ClusterInfo = serde_json::from_value(result["cluster"].clone()).unwrap();
    devenv::providers::kubeconfig::client(&info.kubeconfig, &info.context).await.unwrap()
}

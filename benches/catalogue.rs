//! Parallel start-up of the catalogue against its slowest member, measured in the same run:
//! a cold `devenv up` (fresh volumes) of an environment with one service of every kind,
//! next to a cold `up` of each kind alone. The peer is the slowest single substitute; the
//! ratio says how much starting them together costs over waiting for that one (1.0 would be
//! perfect overlap; the target is within 1.2).
//!
//! Needs a Docker engine and the test images (scripts/test.sh builds them and sets the
//! variables):
//!   for i in mariadb postgres redis opensearch s3proxy elasticmq moto; do
//!     export DEVENV_TEST_$(tr a-z A-Z <<<$i)_IMAGE=$(bash scripts/build-test-image.sh $i); done
//!   cargo bench --bench catalogue

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const ROUNDS: usize = 3;

/// Kind, its test image variable.
const KINDS: &[(&str, &str)] = &[
    ("rds-mariadb", "DEVENV_TEST_MARIADB_IMAGE"),
    ("rds-mysql", "DEVENV_TEST_MARIADB_IMAGE"),
    ("rds-postgres", "DEVENV_TEST_POSTGRES_IMAGE"),
    ("aurora-postgres", "DEVENV_TEST_POSTGRES_IMAGE"),
    ("elasticache-redis", "DEVENV_TEST_REDIS_IMAGE"),
    ("opensearch", "DEVENV_TEST_OPENSEARCH_IMAGE"),
    ("s3", "DEVENV_TEST_S3PROXY_IMAGE"),
    ("sqs", "DEVENV_TEST_ELASTICMQ_IMAGE"),
    ("secretsmanager", "DEVENV_TEST_MOTO_IMAGE"),
    ("ssm-parameter-store", "DEVENV_TEST_MOTO_IMAGE"),
];

fn main() {
    let mut images = Vec::new();
    for (kind, variable) in KINDS {
        match std::env::var(variable) {
            Ok(image) if !image.is_empty() => images.push((*kind, image)),
            _ => {
                eprintln!("{variable} is not set; build the test images first (see the top of benches/catalogue.rs)");
                std::process::exit(if std::env::var("CI").is_ok_and(|v| v == "true") { 1 } else { 0 });
            }
        }
    }

    let mut singles: Vec<(&str, Vec<Duration>)> = KINDS.iter().map(|(kind, _)| (*kind, Vec::new())).collect();
    let mut together = Vec::new();
    for round in 0..ROUNDS {
        for (i, (kind, image)) in images.iter().enumerate() {
            let fixture = Fixture::new(&format!("bench-one-{i}"), &[(kind, image)]);
            let elapsed = fixture.cold_up();
            eprintln!("round {}: {kind} alone {:.2}s", round + 1, elapsed.as_secs_f64());
            singles[i].1.push(elapsed);
        }
        let all: Vec<(&str, &str)> = images.iter().map(|(kind, image)| (*kind, image.as_str())).collect();
        let fixture = Fixture::new("bench-all", &all);
        let elapsed = fixture.cold_up();
        eprintln!("round {}: all {} kinds together {:.2}s", round + 1, all.len(), elapsed.as_secs_f64());
        together.push(elapsed);
    }

    println!("cold up, median of {ROUNDS} rounds:");
    let mut slowest = ("", Duration::ZERO);
    let mut sequential = Duration::ZERO;
    for (kind, times) in singles {
        let time = median(times);
        println!("  {kind:<18} alone {:>6.2}s", time.as_secs_f64());
        sequential += time;
        if time > slowest.1 {
            slowest = (kind, time);
        }
    }
    let together = median(together);
    println!(
        "one after another (sum alone) {:.2}s; together is {:.2} of that",
        sequential.as_secs_f64(),
        together.as_secs_f64() / sequential.as_secs_f64()
    );
    println!(
        "all {} kinds together {:.2}s, slowest alone ({}) {:.2}s, ratio {:.2} (target within 1.20)",
        KINDS.len(),
        together.as_secs_f64(),
        slowest.0,
        slowest.1.as_secs_f64(),
        together.as_secs_f64() / slowest.1.as_secs_f64()
    );
}

/// A repository with one service per kind, each kind's image overridden as a user would.
struct Fixture {
    repo: tempfile::TempDir,
    state: tempfile::TempDir,
}

impl Fixture {
    fn new(env: &str, kinds: &[(&str, &str)]) -> Self {
        let repo = tempfile::tempdir().unwrap();
        let mut project = format!(
            "project: {env}\ndefaultProfile: standalone\nflux:\n  path: clusters/local\nenvironment:\n  configMap:\n    name: cluster-env\nservices:\n"
        );
        for (kind, image) in kinds {
            project.push_str(&format!("  - name: {kind}\n    kind: {kind}\n"));
            match *kind {
                "s3" => project.push_str("    resources: [uploads]\n"),
                "sqs" => project.push_str("    resources: [orders]\n"),
                "secretsmanager" => {
                    project.push_str("    resources:\n      - name: app/api-key\n        generate: password\n")
                }
                "ssm-parameter-store" => {
                    project.push_str("    resources:\n      - name: /app/region\n        value: us-east-1\n")
                }
                _ => {}
            }
            write(repo.path(), &format!(".devenv/substitutes/{kind}.yaml"), &format!("image: {image}\n"));
        }
        write(repo.path(), "devenv.yaml", &project);
        Fixture { repo, state: tempfile::tempdir().unwrap() }
    }

    fn devenv(&self, args: &[&str]) {
        let output = Command::new(env!("CARGO_BIN_EXE_devenv"))
            .args(args)
            .current_dir(self.repo.path())
            .env("DEVENV_STATE_DIR", self.state.path())
            .output()
            .unwrap();
        assert!(output.status.success(), "devenv {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }

    /// `up` on fresh volumes until every substitute is ready; everything is purged after.
    fn cold_up(&self) -> Duration {
        self.devenv(&["down", "--purge"]);
        let started = Instant::now();
        self.devenv(&["up", "-q"]);
        let elapsed = started.elapsed();
        self.devenv(&["down", "--purge"]);
        elapsed
    }
}

fn write(root: &Path, relative: &str, text: &str) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

//! Substitute start-up against a peer measured in the same run:
//! - cold `devenv up` until MariaDB answers, next to `docker run` of the same image polled by
//!   a MySQL client (the peer); the ratio is devenv's overhead;
//! - a no-op `devenv up` (everything already up to date).
//!
//! Needs a Docker engine and DEVENV_TEST_MARIADB_IMAGE (scripts/test.sh builds it):
//!   DEVENV_TEST_MARIADB_IMAGE=$(bash scripts/build-test-image.sh mariadb) cargo bench --bench substitutes

use std::process::Command;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

const ROUNDS: usize = 3;
const NOOP_ROUNDS: usize = 5;

fn main() {
    let Ok(image) = std::env::var("DEVENV_TEST_MARIADB_IMAGE") else {
        eprintln!("DEVENV_TEST_MARIADB_IMAGE is not set; build the image with scripts/build-test-image.sh mariadb");
        std::process::exit(if std::env::var("CI").is_ok_and(|v| v == "true") { 1 } else { 0 });
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let repo = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    std::fs::write(
        repo.path().join("devenv.yaml"),
        "project: bench\ndefaultProfile: standalone\nflux:\n  path: clusters/local\nenvironment:\n  configMap:\n    name: cluster-env\nservices:\n  - name: db\n    kind: rds-mariadb\n",
    )
    .unwrap();
    std::fs::create_dir_all(repo.path().join(".devenv/substitutes")).unwrap();
    std::fs::write(repo.path().join(".devenv/substitutes/rds-mariadb.yaml"), format!("image: {image}\n")).unwrap();
    let devenv = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_devenv"))
            .args(args)
            .current_dir(repo.path())
            .env("DEVENV_STATE_DIR", state.path())
            .output()
            .unwrap();
        assert!(output.status.success(), "devenv {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    };

    let mut cold = Vec::new();
    let mut peer = Vec::new();
    for round in 0..ROUNDS {
        devenv(&["down", "--purge"]);
        let started = Instant::now();
        devenv(&["up", "-q"]);
        cold.push(started.elapsed());
        devenv(&["down", "--purge"]);
        peer.push(runtime.block_on(docker_run_and_poll(&image, round)));
        eprintln!("round {}: devenv up {:?}, docker run + poll {:?}", round + 1, cold[round], peer[round]);
    }

    devenv(&["up", "-q"]);
    let mut noop = Vec::new();
    for _ in 0..NOOP_ROUNDS {
        let started = Instant::now();
        devenv(&["up", "-q"]);
        noop.push(started.elapsed());
    }
    devenv(&["down", "--purge"]);

    let (cold, peer, noop) = (median(cold), median(peer), median(noop));
    println!(
        "cold up to MariaDB ready: devenv {:.2}s, docker run + client poll {:.2}s, ratio {:.2} (target under 1.10)",
        cold.as_secs_f64(),
        peer.as_secs_f64(),
        cold.as_secs_f64() / peer.as_secs_f64()
    );
    println!("no-op up: {:.3}s (target under 1 s)", noop.as_secs_f64());
}

/// The peer: what a developer would do by hand with the same image.
async fn docker_run_and_poll(image: &str, round: usize) -> Duration {
    let port = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port();
    let name = format!("devenv-bench-peer-{round}");
    let started = Instant::now();
    let status = Command::new("docker")
        .args(["run", "-d", "--name", &name, "-p", &format!("127.0.0.1:{port}:3306")])
        .args([
            "-e",
            "MARIADB_ROOT_PASSWORD=rootpw",
            "-e",
            "MARIADB_DATABASE=app",
            "-e",
            "MARIADB_USER=app",
            "-e",
            "MARIADB_PASSWORD=apppw",
        ])
        .args(["-v", &format!("{name}-data:/var/lib/mysql"), image])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    loop {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(port)
            .user(Some("app"))
            .pass(Some("apppw"))
            .db_name(Some("app"))
            .prefer_socket(false);
        if let Ok(Ok(mut conn)) = tokio::time::timeout(Duration::from_secs(3), mysql_async::Conn::new(opts)).await
            && conn.query_drop("SELECT 1").await.is_ok()
        {
            let _ = conn.disconnect().await;
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the peer never became ready");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let elapsed = started.elapsed();
    let _ = Command::new("docker").args(["rm", "-f", &name]).output();
    let _ = Command::new("docker").args(["volume", "rm", &format!("{name}-data")]).output();
    elapsed
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

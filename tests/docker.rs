//! Docker tier: `devenv up/down/status` against a real Docker engine and a real MariaDB,
//! checked with a real MySQL-protocol client.

mod common;

use std::time::{Duration, Instant};

use common::shape::{self, Shapes};
use common::{TestRepo, mariadb_image, result_json};
use devenv::docker::Docker;
use mysql_async::prelude::Queryable;

const DB_SERVICE: &str =
    "  - name: orders-db\n    kind: rds-mariadb\n    keys:\n      DB_HOST: host\n      DB_PASSWORD: password\n";

fn repo(env: &str, image: &str, services: &str) -> TestRepo {
    let repo = TestRepo::new(env, services);
    repo.override_image("rds-mariadb", image);
    repo
}

/// `up --output json --show-secrets`, returning the result object.
fn up(repo: &TestRepo) -> serde_json::Value {
    repo.up_json(&[]).1
}

fn down(repo: &TestRepo, purge: bool) {
    let mut args = vec!["down"];
    if purge {
        args.push("--purge");
    }
    repo.devenv().args(args).assert().success();
}

async fn connect(result: &serde_json::Value, service: usize) -> mysql_async::Conn {
    let outputs = &result["services"][service]["outputs"];
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(outputs["host"].as_str().unwrap())
        .tcp_port(outputs["port"].as_str().unwrap().parse().unwrap())
        .user(Some(outputs["username"].as_str().unwrap()))
        .pass(Some(outputs["password"].as_str().expect("password shown with --show-secrets")))
        .db_name(Some(outputs["database"].as_str().unwrap()))
        .prefer_socket(false);
    mysql_async::Conn::new(opts).await.expect("connects with the generated credentials")
}

async fn labelled(env: &str) -> (Vec<String>, Vec<String>) {
    let docker = Docker::connect().await.unwrap();
    let labels = [("app.kubernetes.io/managed-by", "devenv"), ("devenv.io/env", env)];
    (docker.containers_with_labels(&labels).await.unwrap(), docker.volumes_with_labels(&labels).await.unwrap())
}

async fn container_id(name: &str) -> Option<String> {
    Docker::connect().await.unwrap().inspect_container(name).await.unwrap().map(|c| c.id)
}

#[tokio::test]
async fn data_survives_down_and_up_and_purge_removes_it() {
    let Some(image) = mariadb_image() else { return };
    let repo = repo("t-data", &image, DB_SERVICE);

    let result = up(&repo);
    Shapes::from_readme().check_line("up", &result);
    let endpoint = result["services"][0]["endpoint"].as_str().unwrap().to_string();
    assert!(endpoint.starts_with("127.0.0.1:"), "{endpoint}");
    let mut conn = connect(&result, 0).await;
    conn.query_drop("CREATE TABLE loans (id INT PRIMARY KEY, amount INT)").await.unwrap();
    conn.query_drop("INSERT INTO loans VALUES (1, 250000)").await.unwrap();
    conn.disconnect().await.unwrap();

    // The container and its volume carry the labels `down` finds them by.
    let (containers, volumes) = labelled("t-data").await;
    assert_eq!(containers, ["devenv-t-data-orders-db"]);
    assert_eq!(volumes, ["devenv-t-data-orders-db-data"]);

    down(&repo, false);
    let (containers, volumes) = labelled("t-data").await;
    assert!(containers.is_empty());
    assert_eq!(volumes.len(), 1, "the data volume survives down");

    let again = up(&repo);
    assert_eq!(again["services"][0]["endpoint"], endpoint, "the endpoint is stable across down/up");
    let mut conn = connect(&again, 0).await;
    let amount: Option<i64> = conn.query_first("SELECT amount FROM loans WHERE id = 1").await.unwrap();
    assert_eq!(amount, Some(250000));
    conn.disconnect().await.unwrap();

    down(&repo, true);
    let (containers, volumes) = labelled("t-data").await;
    assert!(containers.is_empty() && volumes.is_empty(), "purge removes everything: {containers:?} {volumes:?}");
    assert!(!repo.state_file().exists(), "purge removes the state file");

    let fresh = up(&repo);
    assert_ne!(
        fresh["services"][0]["outputs"]["password"], again["services"][0]["outputs"]["password"],
        "new credentials after purge"
    );
    let mut conn = connect(&fresh, 0).await;
    let tables: Vec<String> = conn.query("SHOW TABLES").await.unwrap();
    assert!(tables.is_empty(), "an empty database after purge: {tables:?}");
    conn.disconnect().await.unwrap();
}

#[tokio::test]
async fn second_up_changes_nothing() {
    let Some(image) = mariadb_image() else { return };
    let repo = repo("t-idem", &image, DB_SERVICE);
    up(&repo);
    let id = container_id("devenv-t-idem-orders-db").await.expect("container exists");

    let started = Instant::now();
    let output = repo.devenv().arg("up").output().unwrap();
    let elapsed = started.elapsed();
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Unchanged orders-db"), "{stderr}");
    assert_eq!(container_id("devenv-t-idem-orders-db").await, Some(id), "container untouched");
    eprintln!("no-op up took {elapsed:?}");
}

#[tokio::test]
async fn state_file_is_private_and_status_reports_health() {
    use std::os::unix::fs::PermissionsExt;
    let Some(image) = mariadb_image() else { return };
    let repo = repo("t-status", &image, DB_SERVICE);
    let result = up(&repo);

    let mode = std::fs::metadata(repo.state_file()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let output = repo.devenv().args(["status", "--output", "json"]).output().unwrap();
    assert!(output.status.success());
    let status = result_json(&output.stdout);
    let service = &status["services"][0];
    assert_eq!(service["state"], "running");
    assert_eq!(service["health"], "ready");
    assert!(service["memory"]["usedBytes"].as_u64().unwrap() > 0, "{service}");
    assert_eq!(service["memory"]["limitBytes"], 1u64 << 30, "the profile's memory cap: {service}");
    Shapes::from_readme().check_line("status", &status);
    assert_eq!(service["endpoint"], result["services"][0]["endpoint"]);
    assert!(service["outputs"]["password"].is_null(), "secrets hidden without --show-secrets");
    assert_eq!(service["outputs"]["username"], "app");

    let text = repo.devenv().arg("up").output().unwrap();
    let table = String::from_utf8_lossy(&text.stdout);
    assert!(table.contains("(hidden; --show-secrets)"), "{table}");
    let password = result["services"][0]["outputs"]["password"].as_str().unwrap();
    assert!(!table.contains(password), "the password is not printed without --show-secrets");

    // A stopped substitute makes `status` fail, naming it and the repair; `up` repairs it.
    let stopped = std::process::Command::new("docker").args(["stop", "devenv-t-status-orders-db"]).output().unwrap();
    assert!(stopped.status.success());
    let output = repo.devenv().arg("status").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error[DEV034]: environment `t-status` is not healthy: `orders-db` is exited"), "{stderr}");
    assert!(stderr.contains("`devenv up` repairs it"), "{stderr}");
    let output = repo.devenv().args(["status", "--output", "json"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let status: serde_json::Value = serde_json::from_str(lines[lines.len() - 2]).unwrap();
    assert_eq!(status["healthy"], false, "the result, then the error: {text}");
    assert_eq!(result_json(&output.stdout)["error"]["id"], "DEV034");
    up(&repo);
    assert!(repo.devenv().arg("status").output().unwrap().status.success(), "repaired by `up`");
}

#[tokio::test]
async fn changed_spec_recreates_only_that_container_and_keeps_its_data() {
    let Some(image) = mariadb_image() else { return };
    let services = format!("{DB_SERVICE}  - name: reports-db\n    kind: rds-mysql\n");
    let repo = TestRepo::new("t-change", &services);
    repo.override_image("rds-mariadb", &image);
    repo.override_image("rds-mysql", &image);
    let result = up(&repo);
    let mut conn = connect(&result, 0).await;
    conn.query_drop("CREATE TABLE kept (id INT)").await.unwrap();
    conn.disconnect().await.unwrap();
    let orders_id = container_id("devenv-t-change-orders-db").await.unwrap();
    let reports_id = container_id("devenv-t-change-reports-db").await.unwrap();

    // A second tag of the same image is a changed spec for orders-db only.
    let retagged = format!("{}-retag", image.replace(':', "-retag:"));
    let status = std::process::Command::new("docker").args(["tag", &image, &retagged]).status().unwrap();
    assert!(status.success());
    repo.override_image("rds-mariadb", &retagged);
    let plan = repo.devenv().arg("plan").output().unwrap();
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(plan.contains("recreate devenv-t-change-orders-db"), "{plan}");
    assert!(plan.contains("keep     devenv-t-change-reports-db"), "{plan}");

    let after = up(&repo);
    assert_ne!(container_id("devenv-t-change-orders-db").await.unwrap(), orders_id);
    assert_eq!(container_id("devenv-t-change-reports-db").await.unwrap(), reports_id);
    let mut conn = connect(&after, 0).await;
    let tables: Vec<String> = conn.query("SHOW TABLES").await.unwrap();
    assert_eq!(tables, ["kept"], "the volume survived the recreation");
    conn.disconnect().await.unwrap();
    drop(repo);
    let _ = std::process::Command::new("docker").args(["rmi", &retagged]).output();
}

#[tokio::test]
async fn a_remembered_port_taken_by_another_program_moves() {
    let Some(image) = mariadb_image() else { return };
    let repo = repo("t-port", &image, DB_SERVICE);
    let first = up(&repo);
    down(&repo, false);
    let port: u16 = first["services"][0]["outputs"]["port"].as_str().unwrap().parse().unwrap();
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", port)).expect("port free after down");

    let output = repo.devenv().args(["up", "--output", "json", "--show-secrets"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(&format!("port {port} is taken by another program")), "{stdout}");
    let moved = result_json(&output.stdout);
    assert_ne!(moved["services"][0]["outputs"]["port"], first["services"][0]["outputs"]["port"]);
    connect(&moved, 0).await.disconnect().await.unwrap();
}

#[tokio::test]
async fn a_pinned_port_taken_by_another_program_fails_before_creating_anything() {
    let Some(image) = mariadb_image() else { return };
    let squatter = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = squatter.local_addr().unwrap().port();
    let repo = repo("t-pinned", &image, &format!("{DB_SERVICE}    port: {port}\n"));
    let output = repo.devenv().arg("up").output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("error[DEV023]"), "{stderr}");
    assert!(stderr.contains(&format!("port {port} on 127.0.0.1 is already in use")), "{stderr}");
    let (containers, volumes) = labelled("t-pinned").await;
    assert!(containers.is_empty() && volumes.is_empty());
}

#[tokio::test]
async fn a_probe_that_never_passes_times_out_with_its_last_error() {
    let Some(image) = mariadb_image() else { return };
    let repo = TestRepo::new("t-probe", DB_SERVICE);
    let entry = format!(
        "image: {image}\nprobe:\n  type: sql\n  dialect: mysql\n  username: ${{username}}\n  password: not-the-password\n  database: ${{database}}\n  timeout: 20s\n"
    );
    repo.write(".devenv/substitutes/rds-mariadb.yaml", &entry);
    let output = repo.devenv().arg("up").output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr
            .contains("error[DEV024]: `orders-db` did not become ready within 20s (waiting for SELECT 1 on 127.0.0.1:"),
        "{stderr}"
    );
    assert!(stderr.contains("Access denied"), "the last attempt's error is shown: {stderr}");
}

#[tokio::test]
async fn a_container_that_exits_is_reported_with_its_logs() {
    let Some(image) = mariadb_image() else { return };
    let repo = TestRepo::new("t-exit", DB_SERVICE);
    repo.write(
        ".devenv/substitutes/rds-mariadb.yaml",
        &format!("image: {image}\ncommand: [bash, -c, \"echo cannot start: disk on fire >&2; exit 3\"]\n"),
    );
    let output = repo.devenv().arg("up").output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "error[DEV025]: `orders-db` stopped while starting (container `devenv-t-exit-orders-db`, exit code 3)"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("    cannot start: disk on fire"), "the container's own output is shown: {stderr}");
}

/// An image whose entrypoint does not exist: the engine creates its container but cannot
/// start it.
fn image_without_its_entrypoint() -> String {
    let tag = "devenv-test/missing-entrypoint:1";
    let mut import = std::process::Command::new("docker")
        .args(["import", "--change", r#"ENTRYPOINT ["/no/such/server"]"#, "-", tag])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the docker CLI runs");
    // An empty tar archive: two zero blocks.
    std::io::Write::write_all(import.stdin.as_mut().unwrap(), &[0; 1024]).unwrap();
    drop(import.stdin.take());
    assert!(import.wait().unwrap().success(), "docker import of an empty image");
    tag.to_string()
}

#[tokio::test]
async fn a_container_the_engine_cannot_run_is_reported_and_removed() {
    if mariadb_image().is_none() {
        return;
    }
    let repo = repo("t-norun", &image_without_its_entrypoint(), DB_SERVICE);
    let output = repo.devenv().arg("up").output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("error[DEV021]: cannot start container `devenv-t-norun-orders-db`"), "{stderr}");
    assert!(stderr.contains("exec: \"/no/such/server\": stat /no/such/server"), "the engine's words: {stderr}");
    assert!(stderr.contains("hint: the engine could not run the container"), "{stderr}");
    let (containers, _) = labelled("t-norun").await;
    assert!(containers.is_empty(), "the container that never ran is removed: {containers:?}");
    down(&repo, true);
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_is_reported() {
    if mariadb_image().is_none() {
        return;
    }
    let repo = repo("t-pull", "devenv-test/not-built-anywhere:1", DB_SERVICE);
    let output = repo.devenv().arg("up").output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("error[DEV022]: cannot pull image `devenv-test/not-built-anywhere:1`"), "{stderr}");
    let (containers, _) = labelled("t-pull").await;
    assert!(containers.is_empty());
}

#[tokio::test]
async fn interrupting_up_leaves_only_what_down_removes() {
    let Some(image) = mariadb_image() else { return };
    let repo = repo("t-sigint", &image, DB_SERVICE);
    let mut child = repo
        .std_command()
        .arg("up")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once the container exists, while devenv waits for MariaDB.
    let deadline = Instant::now() + Duration::from_secs(30);
    while container_id("devenv-t-sigint-orders-db").await.is_none() {
        assert!(Instant::now() < deadline, "the container never appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("error[DEV090]"), "{stderr}");

    down(&repo, true);
    let (containers, volumes) = labelled("t-sigint").await;
    assert!(containers.is_empty() && volumes.is_empty(), "{containers:?} {volumes:?}");
}

#[tokio::test]
async fn a_kept_volume_whose_credentials_are_lost_fails_at_once_with_the_fix() {
    let Some(image) = mariadb_image() else { return };
    let repo = repo("t-lost", &image, DB_SERVICE);
    up(&repo);
    down(&repo, false);
    std::fs::remove_file(repo.state_file()).unwrap();

    // The database in the volume only knows the old password: fail now, not after the probe's timeout.
    let started = Instant::now();
    let output = repo.devenv().arg("up").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error[DEV026]: the data volume `devenv-t-lost-orders-db-data` of `orders-db` exists, but devenv no longer has the credentials it was set up with"),
        "{stderr}"
    );
    assert!(stderr.contains("`devenv down --purge`"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    let (containers, volumes) = labelled("t-lost").await;
    assert!(containers.is_empty(), "nothing was started: {containers:?}");
    assert_eq!(volumes, ["devenv-t-lost-orders-db-data"], "the data is left for the user to decide");

    down(&repo, true);
    up(&repo);
    down(&repo, true);
}

// ---------------------------------------------------------------------------------------
// Concurrency and a lost state file
// ---------------------------------------------------------------------------------------

/// `up --output json --show-secrets` started in the background, with `env` set.
fn spawn_up(repo: &TestRepo, env: &[(&str, &str)]) -> std::process::Child {
    repo.std_command()
        .args(["up", "--output", "json", "--show-secrets"])
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// The NDJSON events of a finished `up` that must have succeeded.
fn finished_events(child: std::process::Child) -> Vec<serde_json::Value> {
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "up failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Waits until the environment's lock file names `pid`.
fn wait_for_holder(repo: &TestRepo, pid: u32) {
    let lock = repo.env_dir().join("lock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&lock).is_ok_and(|text| text.contains(&format!("\"pid\":{pid}"))) {
        assert!(Instant::now() < deadline, "pid {pid} never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn two_ups_of_one_environment_take_turns_and_agree_on_its_credentials() {
    let Some(image) = mariadb_image() else { return };
    let repo = repo("t-twice", &image, DB_SERVICE);
    let first = spawn_up(&repo, &[]);
    let first_pid = first.id();
    wait_for_holder(&repo, first_pid);
    let second = spawn_up(&repo, &[]);
    let first_events = std::thread::spawn(move || finished_events(first));
    let second_events = finished_events(second);
    let first_events = first_events.join().unwrap();

    // The second waited for the first, naming it, and went on when it was done.
    let waiting = second_events
        .iter()
        .find(|e| e["event"] == "started" && e["step"] == "lock/t-twice")
        .unwrap_or_else(|| panic!("the second `up` did not wait: {second_events:?}"));
    let message = waiting["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("`devenv up --output json --show-secrets` (pid {first_pid}, since ")),
        "{message}"
    );
    let waited = second_events.iter().find(|e| e["event"] == "finished" && e["step"] == "lock/t-twice").unwrap();
    assert!(
        second_events
            .iter()
            .any(|e| e["event"] == "finished" && e["step"] == "substitute/orders-db" && e["status"] == "unchanged"),
        "the second `up` found the first's work done: {second_events:?}"
    );

    // Both report the one database, which answers to the credentials the state file keeps.
    let (first, second) = (first_events.last().unwrap(), second_events.last().unwrap());
    assert_eq!(first["services"][0]["outputs"], second["services"][0]["outputs"]);
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(repo.state_file()).unwrap()).unwrap();
    assert_eq!(state["services"]["orders-db"]["secrets"]["password"], second["services"][0]["outputs"]["password"]);
    connect(second, 0).await.disconnect().await.unwrap();
    eprintln!("the second `up` waited {:.2}s for the first", waited["elapsedMs"].as_u64().unwrap() as f64 / 1000.0);
}

/// `count` consecutive free ports on 127.0.0.1, as `FROM-TO`.
fn free_range(count: u16) -> String {
    for _ in 0..100 {
        let from = rand_port();
        if (from..from + count).all(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()) {
            return format!("{from}-{}", from + count - 1);
        }
    }
    panic!("no {count} consecutive free ports");
}

fn rand_port() -> u16 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    20000 + (nanos % 10000) as u16
}

#[tokio::test]
async fn several_environments_up_at_once_get_ports_of_their_own_and_down_removes_only_its_own() {
    const COUNT: u16 = 4;
    let Some(image) = mariadb_image() else { return };
    let state = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..COUNT).map(|i| format!("t-many-{i}")).collect();
    let repos: Vec<TestRepo> =
        names.iter().map(|name| repo(name, &image, DB_SERVICE).sharing_state(state.path())).collect();
    // As many ports as environments: any two that chose the same one would fail.
    let range = free_range(COUNT);
    let started = Instant::now();
    let children: Vec<_> = repos.iter().map(|repo| spawn_up(repo, &[("DEVENV_PORTS", &range)])).collect();
    let results: Vec<serde_json::Value> =
        children.into_iter().map(|child| finished_events(child).last().unwrap().clone()).collect();
    let elapsed = started.elapsed();

    let (from, to) = range.split_once('-').unwrap();
    let (from, to): (u16, u16) = (from.parse().unwrap(), to.parse().unwrap());
    let mut ports: Vec<u16> =
        results.iter().map(|r| r["services"][0]["outputs"]["port"].as_str().unwrap().parse().unwrap()).collect();
    assert!(ports.iter().all(|p| (from..=to).contains(p)), "{ports:?} in {range}");
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), usize::from(COUNT), "every environment has a port of its own: {ports:?}");
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result["env"], names[i]);
        connect(result, 0).await.disconnect().await.unwrap();
    }

    // `down` of one removes its own container and volume, and nothing of the others.
    let ids: Vec<String> = futures_util::future::join_all(
        names.iter().map(|n| async move { container_id(&format!("devenv-{n}-orders-db")).await.unwrap() }),
    )
    .await;
    down(&repos[0], true);
    let (containers, volumes) = labelled(&names[0]).await;
    assert!(containers.is_empty() && volumes.is_empty(), "{containers:?} {volumes:?}");
    for (i, name) in names.iter().enumerate().skip(1) {
        assert_eq!(container_id(&format!("devenv-{name}-orders-db")).await.as_ref(), Some(&ids[i]), "{name} untouched");
        assert_eq!(labelled(name).await.1, [format!("devenv-{name}-orders-db-data")]);
    }
    for repo in &repos[1..] {
        down(repo, true);
        let (containers, volumes) = labelled(&repo.env).await;
        assert!(containers.is_empty() && volumes.is_empty(), "{containers:?} {volumes:?}");
    }
    eprintln!(
        "{COUNT} environments were up at once {:.1}s after they started, on ports {ports:?}",
        elapsed.as_secs_f64()
    );
}

#[tokio::test]
async fn a_corrupt_or_missing_state_file_does_not_stop_down() {
    let Some(image) = mariadb_image() else { return };
    let repo = repo("t-lost-state", &image, DB_SERVICE);
    let container = "devenv-t-lost-state-orders-db";
    let volume = "devenv-t-lost-state-orders-db-data";

    // Corrupt: `down` removes the container, keeps the volume and says its credentials are lost.
    up(&repo);
    std::fs::write(repo.state_file(), "{\"version\": 1, \"env\": \"t-lost").unwrap();
    let output = repo.devenv().arg("down").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("warning: the state file `{}` is not valid (", repo.state_file().display()))
            && stderr.contains("what devenv made for `t-lost-state` is found by its labels"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the credentials they were set up with were in the state file: repair the state file"),
        "{stderr}"
    );
    assert!(stderr.contains("whether `t-lost-state` used a cluster it does not own"), "{stderr}");
    assert_eq!(labelled("t-lost-state").await, (vec![], vec![volume.to_string()]));

    // `up` refuses the file and names both ways out; `down --purge` takes the second.
    let output = repo.devenv().arg("up").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error[DEV030]") && stderr.contains("`devenv down --purge` (it needs no state file)"),
        "{stderr}"
    );
    up_after_purge(&repo, "unreadable", container, volume).await;

    // Missing: the same, found by labels alone.
    std::fs::remove_file(repo.state_file()).unwrap();
    up_after_purge(&repo, "missing", container, volume).await;
}

/// `down --purge --output json` succeeds with the state file `state_file`, removes the
/// container and the volume and the state directory; then a fresh `up` works.
async fn up_after_purge(repo: &TestRepo, state_file: &str, container: &str, volume: &str) {
    let output = repo.devenv().args(["down", "--purge", "--output", "json"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
    let result = result_json(&output.stdout);
    assert_eq!(result["stateFile"], state_file, "{result}");
    assert_eq!(result["removed"]["volumes"], serde_json::json!([volume]), "{result}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("\"event\":\"warning\""), "what down could not know is said: {stdout}");
    if state_file == "unreadable" {
        assert_eq!(result["removed"]["containers"], serde_json::json!([]), "removed by the earlier `down`");
    } else {
        assert_eq!(result["removed"]["containers"], serde_json::json!([container]), "{result}");
    }
    assert_eq!(labelled(&repo.env).await, (vec![], vec![]), "nothing labelled is left");
    assert!(!repo.env_dir().exists(), "the state directory is gone");
    let fresh = up(repo);
    connect(&fresh, 0).await.disconnect().await.unwrap();
}

/// Runs `script` with bash in the MariaDB test image on the host's network, with `args`.
fn in_client_container(image: &str, docker_args: &[&str], script: &str, args: &[&str]) -> String {
    let output = std::process::Command::new("docker")
        .args(["run", "--rm", "--network", "host"])
        .args(docker_args)
        .args([image, "bash", "-c", script, "_"])
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

const SELECT_1: &str =
    r#"mariadb -h "$DB_HOST" -P "$DB_PORT" -u "$DB_USER" -p"$DB_PASSWORD" -N -e "SELECT 1" "$DB_NAME""#;

#[tokio::test]
async fn a_client_reading_only_the_exported_variables_connects() {
    let Some(image) = mariadb_image() else { return };
    let services = "  - name: orders-db\n    kind: rds-mariadb\n    params:\n      database: orders\n    keys:\n      DB_HOST: host\n      DB_PORT: port\n      DB_USER: username\n      DB_NAME: database\n      DB_PASSWORD: password\n";
    let repo = repo("t-env", &image, services);
    up(&repo);

    // shell: what `eval "$(devenv env --show-secrets)"` exports is all the client gets.
    let output = repo.devenv().args(["env", "--show-secrets"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let exports = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(exports.contains("export DB_HOST='127.0.0.1'"), "{exports}");
    let answer = in_client_container(&image, &[], &format!("eval \"$1\"; {SELECT_1}"), &[&exports]);
    assert_eq!(answer, "1");

    // dotenv: the file Docker's --env-file reads, as an IDE's run configuration would.
    let output = repo.devenv().args(["env", "--show-secrets", "--format", "dotenv"]).output().unwrap();
    assert!(output.status.success());
    let file = repo.path().join(".env");
    std::fs::write(&file, &output.stdout).unwrap();
    let answer = in_client_container(&image, &["--env-file", file.to_str().unwrap()], SELECT_1, &[]);
    assert_eq!(answer, "1");

    // Without --show-secrets there is no password to connect with.
    let output = repo.devenv().args(["env", "--format", "dotenv"]).output().unwrap();
    let dotenv = String::from_utf8_lossy(&output.stdout);
    assert!(
        dotenv.ends_with("# left out (secret; `devenv env --show-secrets` includes them): DB_PASSWORD\n"),
        "{dotenv}"
    );

    let output = repo.devenv().args(["env", "--output", "json"]).output().unwrap();
    let result = result_json(&output.stdout);
    Shapes::from_readme().check_line("env", &result);
    assert_eq!(result["hidden"], serde_json::json!(["DB_PASSWORD"]));
    let port = result["variables"]["DB_PORT"].as_str().unwrap().to_string();
    // The address is remembered: the same after down and up.
    down(&repo, false);
    let output = repo.devenv().args(["env", "--output", "json"]).output().unwrap();
    assert_eq!(result_json(&output.stdout)["variables"]["DB_PORT"], port.as_str());

    let output = repo.devenv().args(["down", "--purge", "--output", "json"]).output().unwrap();
    let removed = result_json(&output.stdout);
    Shapes::from_readme().check_line("down", &removed);
    assert_eq!(removed["removed"]["volumes"], serde_json::json!(["devenv-t-env-orders-db-data"]));
}

#[tokio::test]
async fn logs_show_a_substitutes_output_and_follow_it_until_interrupted() {
    let Some(image) = mariadb_image() else { return };
    let repo = repo("t-logs", &image, DB_SERVICE);
    let result = up(&repo);

    let output = repo.devenv().args(["logs", "orders-db"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("ready for connections"), "the server's stderr is shown: {text}");

    let output = repo.devenv().args(["logs", "orders-db", "--output", "json"]).output().unwrap();
    let lines = shape::lines(&output.stdout);
    let shapes = Shapes::from_readme();
    let logged: Vec<&serde_json::Value> = lines.iter().filter(|l| l["event"] == "log").collect();
    for line in &logged {
        let mut event = (*line).clone();
        event.as_object_mut().unwrap().remove("event");
        shapes.check("LogEvent", &event);
    }
    let summary = lines.last().unwrap();
    shapes.check_line("logs", summary);
    assert_eq!(summary["lines"], logged.len());
    assert_eq!(summary["container"], "devenv-t-logs-orders-db");
    assert!(
        logged.iter().any(|l| l["stream"] == "stderr" && l["line"].as_str().unwrap().contains("ready for connections"))
    );

    let recent = repo.devenv().args(["logs", "orders-db", "--since", "1s", "--output", "json"]).output().unwrap();
    assert!(
        shape::result_line(&recent.stdout)["lines"].as_u64().unwrap() < logged.len() as u64,
        "--since leaves out older lines"
    );

    // -f prints what the server says next (a refused login), until Ctrl-C ends it normally.
    let mut child = repo
        .std_command()
        .args(["logs", "orders-db", "-f", "--since", "1s", "--output", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (sender, received) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let outputs = &result["services"][0]["outputs"];
    let wrong = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(outputs["port"].as_str().unwrap().parse().unwrap())
        .user(Some("app"))
        .pass(Some("not-the-password"))
        .prefer_socket(false);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("Access denied")) {
        assert!(Instant::now() < deadline, "the refused login never appeared: {seen:?}");
        assert!(mysql_async::Conn::new(wrong.clone()).await.is_err());
        while let Ok(line) = received.recv_timeout(Duration::from_millis(500)) {
            seen.push(line);
        }
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(child.wait().unwrap().code(), Some(0), "Ctrl-C ends a followed log normally");
    reader.join().unwrap();
    seen.extend(received.try_iter());
    let last: serde_json::Value = serde_json::from_str(seen.last().unwrap()).unwrap();
    shapes.check_line("logs", &last);
    assert!(last["lines"].as_u64().unwrap() >= 1, "{last}");

    let output = repo.devenv().args(["logs", "orders"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("error[DEV013]: devenv.yaml has no service `orders`"));
    down(&repo, false);
    let output = repo.devenv().args(["logs", "orders-db"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("error[DEV033]: `orders-db` has no container (`devenv-t-logs-orders-db`)"), "{stderr}");
}

//! The `kind` provider with real pods, on the test bed's node image (testbed/kind/build.sh;
//! scripts/test.sh builds it and sets the DEVENV_KIND_* variables). devenv runs the test
//! bed's `kind`, with the test bed's `docker` wrapper first on kind's PATH; nothing else of
//! the test bed reaches devenv.
//!
//! One cluster is created for the whole tier: `up` on the platform fixture (a HelmRelease
//! from a published chart, `wait: true` Kustomizations) with real pods; a Job reads the
//! environment ConfigMap and Secret and queries the MariaDB substitute through the address
//! pods use; an image pushed from this machine to the registry runs in that Job; an edit is
//! live in seconds; `down` and `down --purge` leave nothing; the host's machine-wide kernel
//! settings are unchanged.
//!
//! With `substitutes.runtime: cluster` the substitute is a StatefulSet in the environment's
//! namespace, nothing runs on this machine, and a second environment on the same cluster
//! (`existing`, the shape of a preview namespace) shows what `down` keeps.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::kind::{Cleanup, devenv, docker, kind_clusters, path_with, platform_repo, testbed};
use common::{TestRepo, cluster_client, in_ci, mariadb_image, result_json};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::api::{Api, ListParams, LogParams, PostParams};

const SYSCTL_SHADOW: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testbed/kind/node/sysctl-shadow.conf");

/// Containers and volumes carrying the environment's label.
fn labelled(env: &str) -> (String, String) {
    let filter = format!("label=devenv.io/env={env}");
    (
        docker(&["ps", "-a", "--format", "{{.Names}}", "--filter", &filter]),
        docker(&["volume", "ls", "--format", "{{.Name}}", "--filter", &filter]),
    )
}

/// The host's values of the kernel settings a node would otherwise change.
fn host_sysctls() -> BTreeMap<String, String> {
    std::fs::read_to_string(SYSCTL_SHADOW)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .map(|name| {
            let path = format!("/proc/sys/{}", name.replace('.', "/"));
            (name.to_string(), std::fs::read_to_string(path).unwrap_or_default().trim().to_string())
        })
        .collect()
}

fn stderr(output: &std::process::Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test]
async fn kind_runs_the_platform_with_real_pods_and_down_leaves_nothing() {
    let Some(mariadb) = mariadb_image() else { return };
    let Some(bed) = testbed() else { return };
    let sysctls_before = host_sysctls();
    let env = "t-kind";
    let repo = platform_repo(env, &bed, &mariadb, None);
    let _cleanup = Cleanup { repo: &repo, bed: &bed, env };
    // plan says what `up` does with the cluster: make it, then reuse it.
    let plan = |expected: &str| {
        let output = devenv(&repo, &bed, &["plan", "--env", env]);
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(text.contains(expected), "{text}{}", stderr(&output));
    };
    plan(&format!("  create   the cluster: there is no kind cluster `devenv-{env}`\n"));
    let started = Instant::now();
    let output = devenv(&repo, &bed, &["up", "--env", env, "--timeout", "300s", "--output", "json"]);
    let cold = started.elapsed();
    assert!(output.status.success(), "up failed:\n{}", stderr(&output));
    plan(&format!("  reuse    the cluster: devenv made the kind cluster `devenv-{env}`\n"));
    let result = result_json(&output.stdout);
    assert_eq!(result["cluster"]["provider"], "kind");
    assert_eq!(result["cluster"]["context"], format!("kind-devenv-{env}"));
    let registry = result["cluster"]["registry"]["host"].as_str().unwrap().to_string();
    assert_eq!(result["cluster"]["registry"]["fromCluster"], format!("kind-devenv-{env}-registry:5000"));
    eprintln!("cold up on kind: {:.1}s", cold.as_secs_f64());

    let client = cluster_client(&result).await;
    // Real pods: the greeter's, and Flux's own, Running.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "web");
    let greeter = pods.list(&ListParams::default().labels("app=greeter")).await.unwrap();
    assert_eq!(greeter.items.len(), 1, "maxReplicas 1");
    let pod = &greeter.items[0];
    assert_eq!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Running"));
    assert_eq!(pod.spec.as_ref().unwrap().containers[0].image.as_deref(), Some(bed.busybox_image.as_str()));
    let flux_pods: Api<Pod> = Api::namespaced(client.clone(), "flux-system");
    let running = flux_pods.list(&ListParams::default()).await.unwrap().items;
    for controller in ["source-controller", "kustomize-controller", "helm-controller"] {
        assert!(
            running.iter().any(|p| p.metadata.name.as_deref().unwrap_or_default().starts_with(controller)
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")),
            "{controller} runs in the cluster"
        );
    }
    // KEP-1755: tools find the registry.
    let hosting =
        Api::<ConfigMap>::namespaced(client.clone(), "kube-public").get("local-registry-hosting").await.unwrap();
    let text = &hosting.data.unwrap()["localRegistryHosting.v1"];
    assert!(text.contains(&format!("host: \"localhost:{}\"", registry.rsplit(':').next().unwrap())), "{text}");

    // An image pushed from this machine runs in a pod, and that pod reaches the substitute
    // at the address the environment ConfigMap and Secret give pods.
    let port = registry.rsplit(':').next().unwrap();
    let pushed = format!("localhost:{port}/sql-client:test");
    docker(&["tag", &mariadb, &pushed]);
    docker(&["push", &pushed]);
    let job: Job = serde_json::from_value(serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "select-one", "namespace": "flux-system"},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "sql",
                    "image": pushed,
                    "envFrom": [{"configMapRef": {"name": "cluster-env"}}, {"secretRef": {"name": "cluster-env-secrets"}}],
                    "command": ["sh", "-c", "mariadb -h \"$DB_HOST\" -P \"$DB_PORT\" -u \"$DB_USER\" -p\"$DB_PASSWORD\" \"$DB_NAME\" -N -e 'SELECT 1 + 41'"],
                }],
            }},
        },
    }))
    .unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "flux-system");
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let status = jobs.get("select-one").await.unwrap().status.unwrap_or_default();
        if status.succeeded.unwrap_or(0) > 0 {
            break;
        }
        let job_pods = flux_pods.list(&ListParams::default().labels("job-name=select-one")).await.unwrap().items;
        assert!(
            status.failed.unwrap_or(0) == 0 && Instant::now() < deadline,
            "the SQL Job did not succeed: {:?}",
            job_pods.iter().map(|p| p.status.clone()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let job_pod = flux_pods.list(&ListParams::default().labels("job-name=select-one")).await.unwrap().items.remove(0);
    let logs = flux_pods.logs(job_pod.metadata.name.as_deref().unwrap(), &LogParams::default()).await.unwrap();
    assert_eq!(logs.trim(), "42", "the query's answer");

    // An edit is live in seconds, and only its artifact is pushed.
    let settings = repo.path().join("infrastructure/configs/settings.yaml");
    let text = std::fs::read_to_string(&settings).unwrap();
    std::fs::write(&settings, text.replace("tier: standard", "tier: gold")).unwrap();
    let started = Instant::now();
    let output = devenv(&repo, &bed, &["up", "--env", env, "--timeout", "120s", "--output", "json"]);
    let edit = started.elapsed();
    assert!(output.status.success(), "up after the edit failed:\n{}", stderr(&output));
    let result = result_json(&output.stdout);
    assert_eq!(result["flux"]["artifacts"]["pushed"].as_array().unwrap().len(), 1, "{}", result["flux"]["artifacts"]);
    let live = Api::<ConfigMap>::namespaced(client.clone(), "platform").get("platform-settings").await.unwrap();
    assert_eq!(live.data.unwrap()["tier"], "gold");
    eprintln!("edit → Ready on kind: {:.1}s", edit.as_secs_f64());

    // `status` sees nodes and pods.
    let output = devenv(&repo, &bed, &["status", "--env", env]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("1/1 node(s) Ready"), "{text}");

    // `down` removes the cluster, the registry and the substitutes, and keeps their data.
    let output = devenv(&repo, &bed, &["down", "--env", env]);
    assert!(output.status.success(), "down failed:\n{}", stderr(&output));
    assert!(!kind_clusters(&bed).contains(&format!("devenv-{env}")));
    let (containers, volumes) = labelled(env);
    assert_eq!(containers, "", "no container of the environment is left");
    assert!(
        volumes.contains("devenv-t-kind-orders-db-data") && volumes.contains("kind-devenv-t-kind-registry-data"),
        "{volumes}"
    );
    let output = devenv(&repo, &bed, &["down", "--purge", "--env", env]);
    assert!(output.status.success(), "down --purge failed:\n{}", stderr(&output));
    assert_eq!(labelled(env), (String::new(), String::new()), "--purge removes the volumes");
    docker(&["rmi", &pushed]);

    assert_eq!(host_sysctls(), sysctls_before, "the host's machine-wide kernel settings are unchanged");
}

#[tokio::test]
async fn kind_problems_are_refused_before_anything_is_made() {
    let Some(mariadb) = mariadb_image() else { return };
    let Some(bed) = testbed() else { return };
    let expect_refusal = |repo: &TestRepo, env: &str, path: String, id: &str| {
        let output = repo
            .std_command()
            .args(["up", "--env", env])
            .env("PATH", path)
            .env("KUBECONFIG", repo.state.path().join("kubeconfig"))
            .output()
            .unwrap();
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{text}");
        assert!(text.contains(&format!("error[{id}]")), "{text}");
        assert_eq!(labelled(env), (String::new(), String::new()), "nothing was made: {text}");
        assert!(!repo.state.path().join("kubeconfig").exists(), "no kubeconfig was written");
        text
    };

    // No kind on PATH.
    let repo = platform_repo("t-kind-none", &bed, &mariadb, None);
    let text = expect_refusal(&repo, "t-kind-none", path_with(&[&bed.wrapper_dir]), "DEV047");
    assert!(text.contains("go install sigs.k8s.io/kind"), "{text}");

    // A kind cluster of that name that devenv did not make: kind lists clusters by the label
    // of their node containers.
    let taken = "devenv-t-kind-taken";
    let dummy = format!("{taken}-control-plane");
    docker(&["create", "--name", &dummy, "--label", &format!("io.x-k8s.kind.cluster={taken}"), &bed.registry_image]);
    let repo = platform_repo("t-kind-taken", &bed, &mariadb, None);
    let text = expect_refusal(&repo, "t-kind-taken", path_with(&[&bed.wrapper_dir, &bed.bin_dir]), "DEV048");
    docker(&["rm", "-f", &dummy]);
    assert!(text.contains(&format!("kind delete cluster --name {taken}")), "{text}");

    // The registry's port is taken.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let repo = platform_repo("t-kind-port", &bed, &mariadb, Some(port));
    let text = expect_refusal(&repo, "t-kind-port", path_with(&[&bed.wrapper_dir, &bed.bin_dir]), "DEV023");
    assert!(text.contains(&format!("127.0.0.1:{port}")) && text.contains("registry.hostPort"), "{text}");
    drop(holder);
    if in_ci() {
        assert!(!kind_clusters(&bed).iter().any(|c| c.starts_with("devenv-t-kind-")), "no cluster was created");
    }
}

/// Runs a Job in `namespace` that queries MariaDB with the environment ConfigMap and Secret,
/// and returns what it printed.
async fn select_through_the_environment(client: &kube::Client, namespace: &str, name: &str, image: &str) -> String {
    let query =
        "mariadb -h \"$DB_HOST\" -P \"$DB_PORT\" -u \"$DB_USER\" -p\"$DB_PASSWORD\" \"$DB_NAME\" -N -e 'SELECT 1'";
    job_through_the_environment(client, namespace, name, image, &["sh", "-c", query]).await
}

/// Runs `command` in a Job in `namespace` whose container reads the environment ConfigMap and
/// Secret, as an application would, and returns what it printed.
async fn job_through_the_environment(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    image: &str,
    command: &[&str],
) -> String {
    let job: Job = serde_json::from_value(serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "app",
                    "image": image,
                    "envFrom": [{"configMapRef": {"name": "cluster-env"}}, {"secretRef": {"name": "cluster-env-secrets"}}],
                    "command": command,
                }],
            }},
        },
    }))
    .unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let selector = format!("job-name={name}");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let status = jobs.get(name).await.unwrap().status.unwrap_or_default();
        if status.succeeded.unwrap_or(0) > 0 {
            break;
        }
        let job_pods = pods.list(&ListParams::default().labels(&selector)).await.unwrap().items;
        if status.failed.unwrap_or(0) > 0 || Instant::now() >= deadline {
            let mut logs = String::new();
            for pod in &job_pods {
                let name = pod.metadata.name.as_deref().unwrap();
                logs.push_str(&pods.logs(name, &LogParams::default()).await.unwrap_or_default());
            }
            panic!(
                "the Job `{name}` did not succeed: {logs}\n{:?}",
                job_pods.iter().map(|p| p.status.clone()).collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let job_pod = pods.list(&ListParams::default().labels(&selector)).await.unwrap().items.remove(0);
    pods.logs(job_pod.metadata.name.as_deref().unwrap(), &LogParams::default()).await.unwrap().trim().to_string()
}

/// From the pod's creation to its Ready condition, as the cluster recorded them.
fn time_to_ready(pod: &Pod) -> Duration {
    let created = pod.metadata.creation_timestamp.as_ref().unwrap().0;
    let ready = (pod.status.as_ref().unwrap().conditions.iter().flatten())
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .unwrap()
        .0;
    Duration::from_secs(ready.duration_since(created).as_secs() as u64)
}

/// A repository with a trivial Flux tree; `services` as in devenv.yaml, and a profile.
fn cluster_runtime_repo(env: &str, services: &str, profile: &str) -> TestRepo {
    let repo = TestRepo::new(env, services);
    repo.write(
        "clusters/local/namespace.yaml",
        &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {env}-app\n"),
    );
    repo.write(".devenv/profiles/in-cluster.yaml", profile);
    repo.write(
        "devenv.yaml",
        &std::fs::read_to_string(repo.path().join("devenv.yaml")).unwrap().replace("standalone", "in-cluster"),
    );
    repo
}

const ORDERS_DB: &str = "  - name: orders-db\n    kind: rds-mariadb\n    params:\n      database: orders\n    keys:\n      DB_HOST: host\n      DB_PORT: port\n      DB_NAME: database\n      DB_USER: username\n      DB_PASSWORD: password\n";

#[tokio::test]
async fn kind_runs_substitutes_in_the_cluster_and_nothing_on_this_machine() {
    let Some(mariadb) = mariadb_image() else { return };
    let Some(moto) = common::moto_image() else { return };
    let Some(bed) = testbed() else { return };
    let env = "t-kind-rt";
    let profile = format!(
        "description: kind, substitutes in the cluster\ncluster:\n  provider: kind\n  image: {}\n  kindConfig: kind-config.yaml\nsubstitutes:\n  runtime: cluster\n  memory: 512Mi\n",
        bed.node_image
    );
    // First the cluster alone: the node has no internet, so the substitute's image goes to
    // the environment's registry before the service is added.
    let repo = cluster_runtime_repo(env, "  []\n", &profile);
    std::fs::copy(&bed.kind_config, repo.path().join("kind-config.yaml")).unwrap();
    let _cleanup = Cleanup { repo: &repo, bed: &bed, env };
    let output = devenv(&repo, &bed, &["up", "--env", env, "--timeout", "300s", "--output", "json"]);
    assert!(output.status.success(), "up failed:\n{}", stderr(&output));
    let result = result_json(&output.stdout);
    let registry = result["cluster"]["registry"]["host"].as_str().unwrap().to_string();
    let port = registry.rsplit(':').next().unwrap();
    let image = format!("localhost:{port}/mariadb:test");
    docker(&["tag", &mariadb, &image]);
    docker(&["push", &image]);

    repo.write(
        "devenv.yaml",
        &std::fs::read_to_string(repo.path().join("devenv.yaml")).unwrap().replace("  []\n", ORDERS_DB),
    );
    repo.override_image("rds-mariadb", &image);
    let started = Instant::now();
    let output = devenv(&repo, &bed, &["up", "--env", env, "--timeout", "300s", "--output", "json"]);
    let elapsed = started.elapsed();
    assert!(output.status.success(), "up with the service failed:\n{}", stderr(&output));
    let result = result_json(&output.stdout);
    let namespace = format!("devenv-{env}");
    assert_eq!(result["services"][0]["endpoint"], format!("orders-db.{namespace}.svc:3306"));
    assert_eq!(result["services"][0]["inCluster"], true);

    let client = cluster_client(&result).await;
    let stateful_set = Api::<StatefulSet>::namespaced(client.clone(), &namespace).get("orders-db").await.unwrap();
    let labels = stateful_set.metadata.labels.clone().unwrap();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "devenv");
    assert_eq!((labels["devenv.io/env"].as_str(), labels["devenv.io/service"].as_str()), (env, "orders-db"));
    assert!(stateful_set.metadata.annotations.unwrap().contains_key("devenv.io/spec-hash"));
    let pod = Api::<Pod>::namespaced(client.clone(), &namespace).get("orders-db-0").await.unwrap();
    let limit =
        &pod.spec.as_ref().unwrap().containers[0].resources.as_ref().unwrap().limits.as_ref().unwrap()["memory"];
    assert_eq!(limit.0, (512i64 << 20).to_string(), "the profile's memory cap");
    eprintln!(
        "in-cluster MariaDB: StatefulSet pod Ready {:.0}s after creation; `up` adding it took {:.1}s",
        time_to_ready(&pod).as_secs_f64(),
        elapsed.as_secs_f64()
    );

    // The generated password is in the namespace's Secret, and nothing runs on this machine.
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(repo.state_file()).unwrap()).unwrap();
    let password = state["services"]["orders-db"]["secrets"]["password"].as_str().unwrap().to_string();
    let secret = Api::<Secret>::namespaced(client.clone(), &namespace).get("orders-db-substitute-env").await.unwrap();
    assert_eq!(secret.data.unwrap()["MARIADB_PASSWORD"].0, password.as_bytes());
    let substitutes_here = docker(&[
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("label=devenv.io/env={env}"),
        "--filter",
        "label=devenv.io/service",
    ]);
    assert_eq!(substitutes_here, "", "no substitute container on this machine");

    // An application pod reaches it with the environment ConfigMap and Secret.
    assert_eq!(select_through_the_environment(&client, "flux-system", "select-one", &image).await, "1");
    let output = devenv(&repo, &bed, &["status", "--env", env]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains(&format!("orders-db.{namespace}.svc:3306 (in the cluster)")), "{text}");
    let output = devenv(&repo, &bed, &["logs", "orders-db", "--env", env]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success() && text.contains("ready for connections"), "the pod's log: {}", stderr(&output));
    let output = devenv(&repo, &bed, &["up", "--env", env, "--output", "json"]);
    assert!(output.status.success(), "a second up failed:\n{}", stderr(&output));
    let again = Api::<Pod>::namespaced(client.clone(), &namespace).get("orders-db-0").await.unwrap();
    assert_eq!(again.metadata.uid, pod.metadata.uid, "a second `up` keeps the pod");

    // The preview of a pull request in the same cluster (`devenv preview up`, the built-in
    // `preview` profile pointed at this cluster and its registry): the substitute runs in the
    // preview's namespace, behind its quota and network policies, and answers there.
    let kubeconfig = result["cluster"]["kubeconfig"].as_str().unwrap().to_string();
    let from_cluster = result["cluster"]["registry"]["fromCluster"].as_str().unwrap().to_string();
    let preview_project = "t-kind-rt-pr";
    // Beside the database, Secrets Manager holding the database's RDS-shaped secret, made
    // through a port-forward once its pod is Ready.
    let secrets = "  - name: secrets\n    kind: secretsmanager\n    resources:\n      - name: orders/db\n        rds: orders-db\n    keys:\n      AWS_ENDPOINT_URL_SECRETS_MANAGER: endpoint\n      AWS_DEFAULT_REGION: region\n      AWS_ACCESS_KEY_ID: accessKeyId\n      AWS_SECRET_ACCESS_KEY: secretAccessKey\n";
    let preview =
        cluster_runtime_repo(preview_project, &format!("{ORDERS_DB}{secrets}"), "cluster:\n  provider: none\n");
    preview.write(
        ".devenv/profiles/preview.yaml",
        &format!("cluster:\n  provider: eks-namespace\n  context: kind-devenv-{env}\nregistry:\n  url: {registry}\n  pullUrl: {from_cluster}\n"),
    );
    preview.override_image("rds-mariadb", &image);
    let moto_image = format!("localhost:{port}/moto:test");
    docker(&["tag", &moto, &moto_image]);
    docker(&["push", &moto_image]);
    preview.override_image("secretsmanager", &moto_image);
    let run = |args: &[&str]| preview.std_command().args(args).env("KUBECONFIG", &kubeconfig).output().unwrap();
    let preview_namespace = format!("pr-5-{preview_project}");
    // An object of the service's name that is not the preview's is never taken over.
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    let namespace_object = serde_json::from_value(serde_json::json!({"metadata": {
        "name": preview_namespace,
        "labels": {"app.kubernetes.io/managed-by": "devenv", "devenv.io/project": preview_project, "devenv.io/pr": "5"},
    }}))
    .unwrap();
    namespaces.create(&PostParams::default(), &namespace_object).await.unwrap();
    let services = Api::<Service>::namespaced(client.clone(), &preview_namespace);
    let theirs = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "orders-db"}, "spec": {"ports": [{"port": 3306}]},
    }))
    .unwrap();
    services.create(&PostParams::default(), &theirs).await.unwrap();
    let output = run(&["preview", "up", "--pr", "5", "--timeout", "300s"]);
    let text = stderr(&output);
    assert!(
        text.contains(&format!(
            "error[DEV027]: Service/{preview_namespace}/orders-db exists and devenv did not make it"
        )),
        "{text}"
    );
    services.delete("orders-db", &Default::default()).await.unwrap();
    let started = Instant::now();
    let output = run(&["preview", "up", "--pr", "5", "--timeout", "300s", "--output", "json"]);
    assert!(output.status.success(), "preview up failed:\n{}", stderr(&output));
    eprintln!("preview up on kind, with an in-cluster MariaDB: {:.1}s", started.elapsed().as_secs_f64());
    let up = result_json(&output.stdout);
    assert_eq!(up["services"][0]["endpoint"], format!("orders-db.{preview_namespace}.svc:3306"));
    assert_eq!(select_through_the_environment(&client, &preview_namespace, "select-one", &image).await, "1");
    // An unmodified AWS SDK client (boto3, in the moto image) reads the database's secret
    // with nothing but the environment: endpoint, region (Python's SDK reads
    // AWS_DEFAULT_REGION, not AWS_REGION) and credentials.
    let read = "import boto3, json; s = json.loads(boto3.client('secretsmanager').get_secret_value(SecretId='orders/db')['SecretString']); print(s['engine'], s['host'], s['port'], s['password'])";
    let printed =
        job_through_the_environment(&client, &preview_namespace, "read-secret", &moto_image, &["python3", "-c", read])
            .await;
    let database_credentials = Api::<Secret>::namespaced(client.clone(), &preview_namespace)
        .get("orders-db-substitute-credentials")
        .await
        .unwrap()
        .data
        .unwrap();
    let password = String::from_utf8(database_credentials["password"].0.clone()).unwrap();
    assert_eq!(printed, format!("mariadb orders-db.{preview_namespace}.svc 3306 {password}"));
    let policies =
        Api::<k8s_openapi::api::networking::v1::NetworkPolicy>::namespaced(client.clone(), &preview_namespace);
    let mut names: Vec<String> = policies
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    // Whether kindnet enforces them is not what this test checks: the objects are in place.
    assert_eq!(names, ["devenv-allow-same-namespace", "devenv-deny-ingress"]);
    // The credentials are kept beside the data, in the namespace only.
    let credentials = Api::<Secret>::namespaced(client.clone(), &preview_namespace)
        .get("orders-db-substitute-credentials")
        .await
        .unwrap();
    assert!(credentials.data.unwrap().contains_key("password"));
    assert!(!preview.env_dir().exists(), "nothing of the preview is kept on this machine");

    let output = run(&["preview", "down", "--pr", "5", "--wait", "--timeout", "300s"]);
    assert!(output.status.success(), "preview down failed:\n{}", stderr(&output));
    assert!(namespaces.get_opt(&preview_namespace).await.unwrap().is_none(), "the namespace and its data are gone");
    assert!(
        Api::<StatefulSet>::namespaced(client.clone(), &namespace).get_opt("orders-db").await.unwrap().is_some(),
        "the first environment's substitute is untouched"
    );

    // The first environment: `down` removes the cluster, with its substitutes.
    let output = devenv(&repo, &bed, &["down", "--env", env, "--output", "json"]);
    assert!(output.status.success(), "down failed:\n{}", stderr(&output));
    let removed = result_json(&output.stdout);
    assert_eq!(removed["removed"]["containers"], serde_json::json!([format!("{namespace}/orders-db")]));
    assert!(!kind_clusters(&bed).contains(&format!("devenv-{env}")));
    let output = devenv(&repo, &bed, &["down", "--purge", "--env", env]);
    assert!(output.status.success(), "down --purge failed:\n{}", stderr(&output));
    assert_eq!(labelled(env), (String::new(), String::new()), "nothing of the environment is left");
    docker(&["rmi", &image, &moto_image]);
}

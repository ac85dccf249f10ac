//! The substitute catalogue, each kind proven against a real server: `devenv up` on a
//! repository with that service (only the image overridden, through
//! `.devenv/substitutes/<kind>.yaml`, as a user would), then a real client writes through the
//! published outputs, the environment goes `down` and `up` again and the data is still there,
//! and `down --purge` removes it.

mod common;

use std::time::Duration;

use common::{TestRepo, elasticmq_image, opensearch_image, postgres_image, redis_image, result_json, s3proxy_image};
use devenv::docker::Docker;
use rusty_s3::S3Action;
use serde_json::{Value, json};

/// A repository for one environment with `services` (YAML under `services:`), each kind in
/// `images` pointed at its test image.
fn repo(env: &str, services: &str, images: &[(&str, &str)]) -> TestRepo {
    let repo = TestRepo::new(env, services);
    for (kind, image) in images {
        repo.override_image(kind, image);
    }
    repo
}

/// `up --output json --show-secrets`: the NDJSON events and the result.
fn up_with_events(repo: &TestRepo) -> (Vec<Value>, Value) {
    repo.up_json(&[])
}

fn up(repo: &TestRepo) -> Value {
    up_with_events(repo).1
}

fn down(repo: &TestRepo, purge: bool) {
    let mut args = vec!["down"];
    if purge {
        args.push("--purge");
    }
    repo.devenv().args(args).assert().success();
}

/// An output of the `index`th service in an `up` result.
fn output(result: &Value, index: usize, name: &str) -> String {
    result["services"][index]["outputs"][name]
        .as_str()
        .unwrap_or_else(|| panic!("no output `{name}` in {}", result["services"][index]))
        .to_string()
}

async fn volumes(env: &str) -> Vec<String> {
    let docker = Docker::connect().await.unwrap();
    docker.volumes_with_labels(&[("app.kubernetes.io/managed-by", "devenv"), ("devenv.io/env", env)]).await.unwrap()
}

/// `down` keeps the data volume, `up` brings the same endpoint back.
async fn restart(repo: &TestRepo, before: &Value) -> Value {
    down(repo, false);
    assert_eq!(volumes(&repo.env).await.len(), 1, "the data volume survives down");
    let after = up(repo);
    assert_eq!(after["services"][0]["endpoint"], before["services"][0]["endpoint"], "a stable endpoint");
    after
}

/// `down --purge` removes the volume and the state (credentials) with it.
async fn purge(repo: &TestRepo) {
    down(repo, true);
    assert!(volumes(&repo.env).await.is_empty(), "purge removes the data volume");
    assert!(!repo.state_file().exists(), "purge removes the state file");
}

fn http() -> reqwest::Client {
    // reqwest is built with rustls and no default crypto provider in this package.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap()
}

// --- PostgreSQL ---------------------------------------------------------------------------

async fn postgres_connect(result: &Value, host_output: &str) -> tokio_postgres::Client {
    let mut config = tokio_postgres::Config::new();
    config
        .host(output(result, 0, host_output))
        .port(output(result, 0, "port").parse().unwrap())
        .user(output(result, 0, "username"))
        .password(output(result, 0, "password"))
        .dbname(output(result, 0, "database"));
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.expect("connects with the outputs");
    tokio::spawn(connection);
    client
}

async fn postgres_round_trip(kind: &str, env: &str, host_output: &str) {
    let Some(image) = postgres_image() else { return };
    let services = format!(
        "  - name: ledger-db\n    kind: {kind}\n    params:\n      database: ledger\n    keys:\n      DB_HOST: host\n      DB_PASSWORD: password\n"
    );
    let repo = repo(env, &services, &[(kind, &image)]);

    let result = up(&repo);
    assert_eq!(output(&result, 0, "database"), "ledger");
    let url = output(&result, 0, "url");
    assert!(url.starts_with("postgresql://app:") && url.ends_with("/ledger"), "{url}");
    let client = postgres_connect(&result, host_output).await;
    client.batch_execute("CREATE TABLE loans (id INT PRIMARY KEY, amount BIGINT)").await.unwrap();
    client.execute("INSERT INTO loans VALUES ($1, $2)", &[&1i32, &250_000i64]).await.unwrap();
    drop(client);

    let again = restart(&repo, &result).await;
    let client = postgres_connect(&again, host_output).await;
    let row = client.query_one("SELECT amount FROM loans WHERE id = 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i64>(0), 250_000, "the row survives down and up");
    // The URL output works as a connection string on its own.
    let (by_url, connection) = tokio_postgres::connect(&output(&again, 0, "url"), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let one: i32 = by_url.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    drop((client, by_url));

    purge(&repo).await;
}

#[tokio::test]
async fn rds_postgres_keeps_data_across_down_and_up() {
    postgres_round_trip("rds-postgres", "t-cat-rdspg", "host").await;
}

#[tokio::test]
async fn aurora_postgres_keeps_data_across_down_and_up() {
    postgres_round_trip("aurora-postgres", "t-cat-aurora", "readerHost").await;
}

// --- Redis / Valkey -------------------------------------------------------------------------

async fn redis_connect(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.expect("connects with the url output")
}

#[tokio::test]
async fn elasticache_redis_keeps_data_and_requires_the_password() {
    let Some(image) = redis_image() else { return };
    let services = "  - name: sessions\n    kind: elasticache-redis\n    keys:\n      REDIS_URL: url\n";
    let repo = repo("t-cat-redis", services, &[("elasticache-redis", &image)]);

    let result = up(&repo);
    let url = output(&result, 0, "url");
    assert_eq!(output(&result, 0, "endpoint"), format!("127.0.0.1:{}", output(&result, 0, "port")));
    let mut conn = redis_connect(&url).await;
    let _: () = redis::cmd("SET").arg("session:42").arg("alice").query_async(&mut conn).await.unwrap();

    let without_password = format!("redis://127.0.0.1:{}", output(&result, 0, "port"));
    let mut anonymous = redis_connect(&without_password).await;
    let refused: redis::RedisResult<String> = redis::cmd("GET").arg("session:42").query_async(&mut anonymous).await;
    assert!(refused.is_err(), "without the password the server refuses: {refused:?}");

    let again = restart(&repo, &result).await;
    let mut conn = redis_connect(&output(&again, 0, "url")).await;
    let value: Option<String> = redis::cmd("GET").arg("session:42").query_async(&mut conn).await.unwrap();
    assert_eq!(value.as_deref(), Some("alice"), "the key survives down and up");

    purge(&repo).await;
}

// --- OpenSearch ------------------------------------------------------------------------------

async fn search_orders(client: &reqwest::Client, endpoint: &str) -> Value {
    let response = client
        .post(format!("{endpoint}/orders/_search"))
        .json(&json!({"query": {"match": {"customer": "alice"}}}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "search: {}", response.status());
    response.json().await.unwrap()
}

#[tokio::test]
async fn opensearch_indexes_and_searches_with_a_small_heap() {
    let Some(image) = opensearch_image() else { return };
    let services = "  - name: search\n    kind: opensearch\n    keys:\n      OPENSEARCH_ENDPOINT: endpoint\n";
    let repo = repo("t-cat-search", services, &[("opensearch", &image)]);

    let result = up(&repo);
    let endpoint = output(&result, 0, "endpoint");
    assert_eq!(endpoint, format!("http://127.0.0.1:{}", output(&result, 0, "port")));
    let client = http();
    let created = client
        .put(format!("{endpoint}/orders"))
        .json(&json!({"settings": {"number_of_shards": 1, "number_of_replicas": 0}}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "create index: {}", created.text().await.unwrap());
    let indexed = client
        .put(format!("{endpoint}/orders/_doc/1?refresh=true"))
        .json(&json!({"customer": "alice", "total": 42}))
        .send()
        .await
        .unwrap();
    assert!(indexed.status().is_success(), "index: {}", indexed.text().await.unwrap());
    let found = search_orders(&client, &endpoint).await;
    assert_eq!(found["hits"]["total"]["value"], 1, "{found}");
    assert_eq!(found["hits"]["hits"][0]["_source"]["total"], 42);

    // The catalogue's heap, under the profile's memory cap (standalone: 1Gi).
    let nodes: Value = client.get(format!("{endpoint}/_nodes/jvm")).send().await.unwrap().json().await.unwrap();
    let node = nodes["nodes"].as_object().unwrap().values().next().unwrap();
    assert_eq!(node["jvm"]["mem"]["heap_max_in_bytes"], 512u64 << 20, "heap: {}", node["jvm"]["mem"]);
    let docker = Docker::connect().await.unwrap();
    let usage = docker.memory_usage("devenv-t-cat-search-search").await.unwrap().expect("running");
    assert_eq!(usage.limit_bytes, Some(1 << 30), "the profile's cap is the container's limit");
    assert!(usage.used_bytes > 256 << 20 && usage.used_bytes < 1 << 30, "{usage:?}");

    let again = restart(&repo, &result).await;
    let found = search_orders(&client, &output(&again, 0, "endpoint")).await;
    assert_eq!(found["hits"]["total"]["value"], 1, "the document survives down and up: {found}");

    purge(&repo).await;
}

// --- S3 ----------------------------------------------------------------------------------------

struct S3 {
    client: reqwest::Client,
    credentials: rusty_s3::Credentials,
    endpoint: reqwest::Url,
    region: String,
}

impl S3 {
    fn from_outputs(result: &Value) -> Self {
        S3 {
            client: http(),
            credentials: rusty_s3::Credentials::new(output(result, 0, "accessKey"), output(result, 0, "secretKey")),
            endpoint: output(result, 0, "endpoint").parse().unwrap(),
            region: output(result, 0, "region"),
        }
    }

    fn bucket(&self, name: &str) -> rusty_s3::Bucket {
        rusty_s3::Bucket::new(self.endpoint.clone(), rusty_s3::UrlStyle::Path, name.to_string(), self.region.clone())
            .unwrap()
    }

    async fn put(&self, bucket: &str, key: &str, body: &'static str) -> u16 {
        let bucket = self.bucket(bucket);
        let url = bucket.put_object(Some(&self.credentials), key).sign(Duration::from_secs(60));
        self.client.put(url).body(body).send().await.unwrap().status().as_u16()
    }

    async fn get(&self, bucket: &str, key: &str, credentials: &rusty_s3::Credentials) -> (u16, String) {
        let bucket = self.bucket(bucket);
        let url = bucket.get_object(Some(credentials), key).sign(Duration::from_secs(60));
        let response = self.client.get(url).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }
}

#[tokio::test]
async fn s3_creates_buckets_and_keeps_objects() {
    let Some(image) = s3proxy_image() else { return };
    let services = "  - name: blobs\n    kind: s3\n    resources: [uploads, reports.archive]\n    keys:\n      S3_ENDPOINT: endpoint\n      UPLOADS_BUCKET: uploads.name\n      AWS_SECRET_ACCESS_KEY: secretKey\n";
    let repo = repo("t-cat-s3", services, &[("s3", &image)]);

    let result = up(&repo);
    assert_eq!(output(&result, 0, "buckets"), "uploads,reports.archive");
    assert_eq!(output(&result, 0, "uploads.name"), "uploads");
    assert_eq!(output(&result, 0, "uploads.arn"), "arn:aws:s3:::uploads");
    let s3 = S3::from_outputs(&result);
    assert_eq!(s3.put("uploads", "statements/2024-01.csv", "id,amount\n1,250000\n").await, 200);
    assert_eq!(s3.put("reports.archive", "q1.txt", "quarter one").await, 200);
    let (status, body) = s3.get("uploads", "statements/2024-01.csv", &s3.credentials).await;
    assert_eq!((status, body.as_str()), (200, "id,amount\n1,250000\n"));
    // The generated credentials are enforced.
    let wrong = rusty_s3::Credentials::new(output(&result, 0, "accessKey"), "not-the-secret");
    assert_eq!(s3.get("uploads", "statements/2024-01.csv", &wrong).await.0, 403);
    // A bucket nobody asked for does not exist.
    assert_eq!(s3.put("elsewhere", "x", "x").await, 404);

    // A second `up` finds the buckets there and changes nothing.
    let (events, _) = up_with_events(&repo);
    assert!(
        events.iter().any(|e| e["message"] == "bucket `uploads` present"),
        "the second up sees the bucket: {events:?}"
    );

    let again = restart(&repo, &result).await;
    let s3 = S3::from_outputs(&again);
    let (status, body) = s3.get("uploads", "statements/2024-01.csv", &s3.credentials).await;
    assert_eq!((status, body.as_str()), (200, "id,amount\n1,250000\n"), "the object survives down and up");
    assert_eq!(s3.get("reports.archive", "q1.txt", &s3.credentials).await.1, "quarter one");

    purge(&repo).await;
}

// --- SQS ---------------------------------------------------------------------------------------

/// One SQS action through the AWS JSON protocol, as current AWS SDKs send it.
async fn sqs(client: &reqwest::Client, endpoint: &str, action: &str, request: Value) -> Value {
    let response = client
        .post(endpoint)
        .header("X-Amz-Target", format!("AmazonSQS.{action}"))
        .header("Content-Type", "application/x-amz-json-1.0")
        .body(request.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    assert!(status.is_success(), "{action}: {status} {body}");
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

#[tokio::test]
async fn sqs_creates_queues_and_keeps_messages() {
    let Some(image) = elasticmq_image() else { return };
    let services = "  - name: queues\n    kind: sqs\n    resources: [orders, payments.fifo]\n    keys:\n      SQS_ENDPOINT: endpoint\n      ORDERS_QUEUE_URL: orders.url\n";
    let repo = repo("t-cat-sqs", services, &[("sqs", &image)]);

    let result = up(&repo);
    let endpoint = output(&result, 0, "endpoint");
    let orders = output(&result, 0, "orders.url");
    assert_eq!(orders, format!("{endpoint}/000000000000/orders"));
    assert_eq!(output(&result, 0, "orders.arn"), "arn:aws:sqs:us-east-1:000000000000:orders");
    let client = http();
    let listed = sqs(&client, &endpoint, "ListQueues", json!({})).await;
    let mut urls: Vec<&str> = listed["QueueUrls"].as_array().unwrap().iter().map(|u| u.as_str().unwrap()).collect();
    urls.sort();
    assert_eq!(urls, [orders.as_str(), output(&result, 0, "payments.fifo.url").as_str()], "the queue URLs match");
    let fifo = sqs(
        &client,
        &endpoint,
        "GetQueueAttributes",
        json!({"QueueUrl": output(&result, 0, "payments.fifo.url"), "AttributeNames": ["FifoQueue"]}),
    )
    .await;
    assert_eq!(fifo["Attributes"]["FifoQueue"], "true");
    sqs(&client, &endpoint, "SendMessage", json!({"QueueUrl": orders, "MessageBody": "order 1001 placed"})).await;

    let again = restart(&repo, &result).await;
    let endpoint = output(&again, 0, "endpoint");
    let received = sqs(
        &client,
        &endpoint,
        "ReceiveMessage",
        json!({"QueueUrl": output(&again, 0, "orders.url"), "MaxNumberOfMessages": 1, "WaitTimeSeconds": 2}),
    )
    .await;
    assert_eq!(received["Messages"][0]["Body"], "order 1001 placed", "the message survives down and up: {received}");

    purge(&repo).await;
}

// --- all kinds at once ---------------------------------------------------------------------------

/// Every kind in one environment: all become ready, and they start in parallel (every
/// substitute has started before the first one is ready).
#[tokio::test]
async fn every_kind_starts_in_parallel() {
    let (Some(postgres), Some(redis), Some(opensearch), Some(s3proxy), Some(elasticmq), Some(moto)) =
        (postgres_image(), redis_image(), opensearch_image(), s3proxy_image(), elasticmq_image(), common::moto_image())
    else {
        return;
    };
    let services = concat!(
        "  - name: ledger-db\n    kind: rds-postgres\n",
        "  - name: cache\n    kind: elasticache-redis\n",
        "  - name: search\n    kind: opensearch\n",
        "  - name: blobs\n    kind: s3\n    resources: [uploads]\n",
        "  - name: queues\n    kind: sqs\n    resources: [orders]\n",
        "  - name: secrets\n    kind: secretsmanager\n    resources:\n      - name: ledger/db\n        rds: ledger-db\n",
        "  - name: parameters\n    kind: ssm-parameter-store\n    resources:\n      - name: /ledger/cache-host\n        value: ${cache.host}\n",
    );
    let images = [
        ("rds-postgres", postgres.as_str()),
        ("elasticache-redis", redis.as_str()),
        ("opensearch", opensearch.as_str()),
        ("s3", s3proxy.as_str()),
        ("sqs", elasticmq.as_str()),
        ("secretsmanager", moto.as_str()),
        ("ssm-parameter-store", moto.as_str()),
    ];
    let repo = repo("t-cat-all", services, &images);

    let (events, result) = up_with_events(&repo);
    assert_eq!(result["services"].as_array().unwrap().len(), 7);
    let substitutes: Vec<&Value> =
        events.iter().filter(|e| e["step"].as_str().is_some_and(|s| s.starts_with("substitute/"))).collect();
    let first_finished = substitutes.iter().position(|e| e["event"] == "finished").unwrap();
    let last_started = substitutes.iter().rposition(|e| e["event"] == "started").unwrap();
    assert!(last_started < first_finished, "every substitute starts before the first is ready: {events:#?}");

    let status = repo.devenv().args(["status", "--output", "json"]).output().unwrap();
    assert!(status.status.success());
    let status = result_json(&status.stdout);
    for service in status["services"].as_array().unwrap() {
        assert_eq!(service["health"], "ready", "{service}");
    }

    purge(&repo).await;
}

/// `Docker::memory_usage` (what `status` shows): `None` for a container that is not there.
#[tokio::test]
async fn memory_usage_of_a_missing_container_is_none() {
    let problem = (!common::docker_works()).then(|| "`docker info` fails".to_string());
    if !common::tier_available("docker", problem) {
        return;
    }
    let docker = Docker::connect().await.unwrap();
    assert_eq!(docker.memory_usage("devenv-t-cat-no-such-container").await.unwrap(), None);
}

// --- Secrets Manager and SSM Parameter Store ------------------------------------------------------

const AWS_SERVICES: &str = r#"  - name: orders-db
    kind: rds-mariadb
    params:
      database: orders
  - name: secrets
    kind: secretsmanager
    resources:
      - name: lender/payments/db
        rds: orders-db
      - name: lender/payments/api-key
        generate: password
      - name: lender/payments/feature
        value: FEATURE-v1
    keys:
      AWS_ENDPOINT_URL_SECRETS_MANAGER: endpoint
      AWS_ACCESS_KEY_ID: accessKeyId
      AWS_SECRET_ACCESS_KEY: secretAccessKey
  - name: parameters
    kind: ssm-parameter-store
    resources:
      - name: /lender/payments/db-host
        value: ${orders-db.host}
      - name: /lender/payments/db-password
        type: SecureString
        value: ${orders-db.password}
    keys:
      AWS_ENDPOINT_URL_SSM: endpoint
"#;

/// Clients of both APIs from the outputs, as an AWS SDK builds them from the environment.
fn aws_clients(result: &Value) -> (devenv::aws::Client, devenv::aws::Client) {
    let credentials = devenv::aws::Credentials {
        access_key_id: output(result, 1, "accessKeyId"),
        secret_access_key: output(result, 1, "secretAccessKey"),
    };
    let timeout = Duration::from_secs(30);
    let region = output(result, 1, "region");
    (
        devenv::aws::Client::secrets_manager(&output(result, 1, "endpoint"), &region, credentials.clone(), timeout)
            .unwrap(),
        devenv::aws::Client::ssm(&output(result, 2, "endpoint"), &region, credentials, timeout).unwrap(),
    )
}

async fn secret(client: &devenv::aws::Client, name: &str) -> String {
    let found = client.call("GetSecretValue", &json!({"SecretId": name})).await.unwrap();
    found["SecretString"].as_str().unwrap().to_string()
}

async fn parameter(client: &devenv::aws::Client, name: &str) -> (String, String) {
    let found = client.call("GetParameter", &json!({"Name": name, "WithDecryption": true})).await.unwrap();
    let text = |field: &str| found["Parameter"][field].as_str().unwrap().to_string();
    (text("Value"), text("Type"))
}

/// Connects with nothing but the RDS-shaped secret's fields and runs `SELECT 1`.
async fn select_one_with(secret: &Value) {
    use mysql_async::prelude::Queryable;
    assert_eq!(secret["engine"], "mariadb", "{secret}");
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(secret["host"].as_str().unwrap().to_string())
        .tcp_port(u16::try_from(secret["port"].as_u64().expect("the port is a number, as RDS writes it")).unwrap())
        .prefer_socket(false)
        .user(secret["username"].as_str())
        .pass(secret["password"].as_str())
        .db_name(secret["dbname"].as_str());
    let mut conn = mysql_async::Conn::new(opts).await.expect("connects with what the secret holds");
    let one: Option<i64> = conn.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    conn.disconnect().await.unwrap();
}

#[tokio::test]
async fn secrets_manager_and_parameter_store_hold_what_the_environment_declares() {
    let (Some(moto), Some(mariadb)) = (common::moto_image(), common::mariadb_image()) else { return };
    let images =
        [("rds-mariadb", mariadb.as_str()), ("secretsmanager", moto.as_str()), ("ssm-parameter-store", moto.as_str())];
    let repo = repo("t-cat-aws", AWS_SERVICES, &images);

    let result = up(&repo);
    assert_eq!(output(&result, 1, "secrets"), "lender/payments/db,lender/payments/api-key,lender/payments/feature");
    let (secrets, parameters) = aws_clients(&result);

    // The RDS-shaped secret holds the database's generated password, and is enough to connect.
    let rds: Value = serde_json::from_str(&secret(&secrets, "lender/payments/db").await).unwrap();
    assert_eq!(rds["password"], output(&result, 0, "password"), "the password devenv generated");
    assert_eq!(rds["dbname"], "orders");
    select_one_with(&rds).await;
    let api_key = secret(&secrets, "lender/payments/api-key").await;
    assert_eq!(api_key.len(), 24, "a generated password: {api_key}");
    assert_eq!(secret(&secrets, "lender/payments/feature").await, "FEATURE-v1");

    // Parameters hold their values and types, and the API round-trips a new one.
    assert_eq!(parameter(&parameters, "/lender/payments/db-host").await, ("127.0.0.1".into(), "String".into()));
    let password = (output(&result, 0, "password"), "SecureString".to_string());
    assert_eq!(parameter(&parameters, "/lender/payments/db-password").await, password);
    let put = json!({"Name": "/lender/payments/note", "Value": "hello", "Type": "String"});
    parameters.call("PutParameter", &put).await.unwrap();
    assert_eq!(parameter(&parameters, "/lender/payments/note").await.0, "hello");

    // The credentials go to the environment Secret; the endpoints to the ConfigMap.
    let env = repo.devenv().args(["env", "--format", "json", "--show-secrets"]).output().unwrap();
    let env: Value = serde_json::from_slice(&env.stdout).unwrap();
    assert_eq!(env["AWS_ENDPOINT_URL_SECRETS_MANAGER"], output(&result, 1, "endpoint"));
    assert_eq!(env["AWS_ENDPOINT_URL_SSM"], output(&result, 2, "endpoint"));
    assert_eq!(env["AWS_SECRET_ACCESS_KEY"], output(&result, 1, "secretAccessKey"));
    let env = repo.devenv().args(["env", "--format", "json"]).output().unwrap();
    let env: Value = serde_json::from_slice(&env.stdout).unwrap();
    assert!(env.get("AWS_ACCESS_KEY_ID").is_none(), "the credentials are secret outputs: {env}");

    // Every `up` checks them; a changed source value updates the secret.
    let (events, _) = up_with_events(&repo);
    assert!(events.iter().any(|e| e["message"] == "secret `lender/payments/db` present"), "{events:#?}");
    repo.write(
        "devenv.yaml",
        &std::fs::read_to_string(repo.path().join("devenv.yaml")).unwrap().replace("FEATURE-v1", "FEATURE-v2"),
    );
    let (events, _) = up_with_events(&repo);
    assert!(events.iter().any(|e| e["message"] == "secret `lender/payments/feature` updated"), "{events:#?}");
    assert_eq!(secret(&secrets, "lender/payments/feature").await, "FEATURE-v2");

    // moto keeps them in memory: after `down` and `up` they are made again, the same.
    down(&repo, false);
    let again = up(&repo);
    assert_eq!(output(&again, 1, "endpoint"), output(&result, 1, "endpoint"), "a stable endpoint");
    let (secrets, parameters) = aws_clients(&again);
    let rds_again: Value = serde_json::from_str(&secret(&secrets, "lender/payments/db").await).unwrap();
    assert_eq!(rds_again, rds, "the same database credentials");
    select_one_with(&rds_again).await;
    assert_eq!(secret(&secrets, "lender/payments/api-key").await, api_key, "the same generated password");
    assert_eq!(parameter(&parameters, "/lender/payments/db-password").await, password);

    // `down --purge` removes them with the state that held the generated values.
    purge(&repo).await;
    let gone = secrets.call("ListSecrets", &json!({})).await;
    assert!(gone.is_err(), "nothing answers after purge: {gone:?}");
}

//! Every validation error, rendered as the user sees it.

use std::fs;
use std::path::Path;

use super::*;
use crate::errors::{self, Error as AppError};

const VALID: &str = "\
project: shop
defaultProfile: standalone
flux:
  path: clusters/local
environment:
  configMap:
    name: cluster-env
    namespace: flux-system
services:
  - name: orders-db
    kind: rds-mariadb
    keys:
      DB_HOST: host
      DB_PASSWORD: password
";

fn repo(project: &str, extra: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(PROJECT_FILE), project).unwrap();
    for (path, text) in extra {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    dir
}

fn load_in(dir: &Path, selection: Selection) -> Result<Config, Error> {
    load(&Selection { repo: Some(dir.to_path_buf()), ..selection }, dir)
}

/// The rendered error for a project file (and extra files), with its exit code.
fn rendered(project: &str, extra: &[(&str, &str)], selection: Selection) -> String {
    let dir = repo(project, extra);
    let error = AppError::from(load_in(dir.path(), selection).expect_err("config should be rejected"));
    let diagnosis = errors::diagnose(&error);
    format!("exit {}\n{}", diagnosis.exit_code, errors::render_text(&error))
}

fn rendered_project(project: &str) -> String {
    rendered(project, &[], Selection::default())
}

#[test]
fn valid_project_resolves_services() {
    let dir = repo(VALID, &[]);
    let config = load_in(dir.path(), Selection::default()).unwrap();
    assert_eq!(config.env, "shop");
    assert_eq!(config.profile_name, "standalone");
    let service = &config.services[0];
    assert_eq!(service.image, "docker.io/library/mariadb:11.4");
    assert_eq!(service.params["database"], "app");
    assert_eq!(config.project.flux.namespace, "flux-system");
    assert_eq!(config.project.flux.source, "GitRepository/flux-system");
}

#[test]
fn env_and_profile_from_the_command_line() {
    let dir = repo(VALID, &[]);
    let selection = Selection { env: Some("shop-pr-7".into()), profile: Some("sim".into()), ..Default::default() };
    let config = load_in(dir.path(), selection).unwrap();
    assert_eq!(config.env, "shop-pr-7");
    assert_eq!(config.profile_name, "sim");
}

#[test]
fn finds_the_repo_from_a_subdirectory() {
    let dir = repo(VALID, &[("apps/base/kustomization.yaml", "resources: []\n")]);
    let found = find_repo(None, &dir.path().join("apps/base")).unwrap();
    assert_eq!(found, dir.path());
}

#[test]
fn no_project_file() {
    let dir = tempfile::tempdir().unwrap();
    let error = AppError::from(find_repo(None, dir.path()).unwrap_err());
    assert_eq!(errors::diagnose(&error).id, "DEV001");
    assert_eq!(errors::diagnose(&error).exit_code, 2);
    let error = AppError::from(find_repo(Some(dir.path()), dir.path()).unwrap_err());
    assert_eq!(errors::diagnose(&error).id, "DEV011");
}

#[test]
fn unknown_kind_suggests_the_closest() {
    insta::assert_snapshot!(rendered_project(&VALID.replace("kind: rds-mariadb", "kind: rds-mariadbb")));
}

#[test]
fn unknown_field() {
    insta::assert_snapshot!(rendered_project(&VALID.replace("    keys:", "    kyes:")));
}

#[test]
fn yaml_syntax_error() {
    insta::assert_snapshot!(rendered_project(&VALID.replace("  path: clusters/local", "  path: [clusters/local")));
}

#[test]
fn wrong_type() {
    insta::assert_snapshot!(rendered_project(
        &VALID.replace("    kind: rds-mariadb", "    kind: rds-mariadb\n    port: lots")
    ));
}

#[test]
fn missing_required_field() {
    insta::assert_snapshot!(rendered_project(&VALID.replace("flux:\n  path: clusters/local\n", "")));
}

#[test]
fn not_a_mapping() {
    insta::assert_snapshot!(rendered_project("- project: shop\n"));
}

#[test]
fn invalid_project_name() {
    insta::assert_snapshot!(rendered_project(&VALID.replace("project: shop", "project: My_Shop")));
}

#[test]
fn invalid_env_name() {
    let selection = Selection { env: Some("PR 7".into()), ..Default::default() };
    insta::assert_snapshot!(rendered(VALID, &[], selection));
}

#[test]
fn too_long_container_name() {
    let long = "a".repeat(30);
    let project = VALID.replace("project: shop", &format!("project: {long}")).replace("orders-db", &long);
    insta::assert_snapshot!(rendered_project(&project));
}

#[test]
fn duplicate_service() {
    let project = format!("{VALID}  - name: orders-db\n    kind: rds-mysql\n");
    insta::assert_snapshot!(rendered_project(&project));
}

#[test]
fn unknown_output() {
    insta::assert_snapshot!(rendered_project(&VALID.replace("DB_HOST: host", "DB_HOST: hostname")));
}

#[test]
fn invalid_key_name() {
    insta::assert_snapshot!(rendered_project(&VALID.replace("DB_HOST: host", "DB-HOST: host")));
}

#[test]
fn key_filled_twice() {
    let project = format!("{VALID}  - name: reports-db\n    kind: rds-mysql\n    keys:\n      DB_HOST: host\n");
    insta::assert_snapshot!(rendered_project(&project));
}

#[test]
fn key_clashes_with_the_profile_environment() {
    insta::assert_snapshot!(rendered_project(&VALID.replace("DB_HOST: host", "AWS_REGION: host")));
}

#[test]
fn unknown_version() {
    insta::assert_snapshot!(rendered_project(
        &VALID.replace("    kind: rds-mariadb", "    kind: rds-mariadb\n    version: \"11.5\"")
    ));
}

#[test]
fn unknown_param() {
    insta::assert_snapshot!(rendered_project(
        &VALID.replace("    kind: rds-mariadb", "    kind: rds-mariadb\n    params:\n      databse: orders")
    ));
}

#[test]
fn unknown_profile_on_the_command_line() {
    let selection = Selection { profile: Some("kindd".into()), ..Default::default() };
    insta::assert_snapshot!(rendered(VALID, &[], selection));
}

#[test]
fn unknown_default_profile() {
    insta::assert_snapshot!(rendered_project(
        &VALID.replace("defaultProfile: standalone", "defaultProfile: standalon")
    ));
}

#[test]
fn user_substitute_overrides_only_the_fields_it_sets() {
    let dir = repo(VALID, &[(".devenv/substitutes/rds-mariadb.yaml", "image: registry.local/mariadb:10.11-test\n")]);
    let config = load_in(dir.path(), Selection::default()).unwrap();
    let service = &config.services[0];
    assert_eq!(service.image, "registry.local/mariadb:10.11-test");
    assert_eq!(service.substitute.ports["sql"], 3306);
    assert_eq!(service.substitute.replaces, "Amazon RDS for MariaDB");
}

#[test]
fn user_profile_is_added() {
    let profile = "description: mine\ncluster:\n  provider: none\nenvironment:\n  REGION: here\n";
    let dir = repo(VALID, &[(".devenv/profiles/mine.yaml", profile)]);
    let selection = Selection { profile: Some("mine".into()), ..Default::default() };
    let config = load_in(dir.path(), selection).unwrap();
    assert_eq!(config.profile.environment["REGION"], "here");
}

#[test]
fn error_in_a_user_override_points_at_that_file() {
    insta::assert_snapshot!(rendered(
        VALID,
        &[(".devenv/substitutes/rds-mariadb.yaml", "image: x\nports:\n  sql: many\n")],
        Selection::default()
    ));
}

#[test]
fn unknown_template_variable_in_a_user_substitute() {
    let entry = "env:\n  MARIADB_PASSWORD: ${pasword}\n";
    insta::assert_snapshot!(rendered(VALID, &[(".devenv/substitutes/rds-mariadb.yaml", entry)], Selection::default()));
}

#[test]
fn main_port_must_be_a_port() {
    insta::assert_snapshot!(rendered(
        VALID,
        &[(".devenv/substitutes/rds-mariadb.yaml", "mainPort: http\n")],
        Selection::default()
    ));
}

#[test]
fn probe_timeout_must_be_a_duration() {
    let entry = "probe:\n  type: tcp\n  timeout: soon\n";
    insta::assert_snapshot!(rendered(VALID, &[(".devenv/substitutes/rds-mariadb.yaml", entry)], Selection::default()));
}

#[test]
fn profile_memory_must_be_a_size() {
    let profile = "cluster:\n  provider: none\nsubstitutes:\n  memory: plenty\n";
    let selection = Selection { profile: Some("mine".into()), ..Default::default() };
    insta::assert_snapshot!(rendered(VALID, &[(".devenv/profiles/mine.yaml", profile)], selection));
}

#[test]
fn profile_ttl_must_be_a_duration() {
    let profile = "cluster:\n  provider: eks-namespace\nttl: 3 days\n";
    let selection = Selection { profile: Some("mine".into()), ..Default::default() };
    insta::assert_snapshot!(rendered(VALID, &[(".devenv/profiles/mine.yaml", profile)], selection));
}

#[test]
fn durations_and_sizes_are_read_at_load() {
    let profile = "cluster:\n  provider: eks-namespace\nttl: 2h\nsubstitutes:\n  memory: 512Mi\n";
    let entry = "probe:\n  type: tcp\n  timeout: 45s\n";
    let dir = repo(VALID, &[(".devenv/profiles/mine.yaml", profile), (".devenv/substitutes/rds-mariadb.yaml", entry)]);
    let config = load_in(dir.path(), Selection { profile: Some("mine".into()), ..Default::default() }).unwrap();
    assert_eq!(config.profile.ttl, Some(std::time::Duration::from_secs(7200)));
    assert_eq!(config.profile.substitutes.memory_bytes, Some(512 << 20));
    assert_eq!(config.services[0].substitute.probe_timeout, std::time::Duration::from_secs(45));
    let config = load_in(dir.path(), Selection::default()).unwrap();
    assert_eq!((config.profile.ttl, config.profile.substitutes.memory_bytes), (None, Some(1 << 30)));
}

#[test]
fn flux_source_must_be_a_kind_and_a_name() {
    assert_eq!(
        rendered_project(&VALID.replace("  path: clusters/local\n", "  path: clusters/local\n  source: flux-system\n")),
        "exit 2\nerror[DEV010]: devenv.yaml:5:11: flux.source: `flux-system` is not of the form `Kind/name`\nhint: write it like `GitRepository/flux-system`\n"
    );
}

#[test]
fn user_file_name_must_be_a_label() {
    insta::assert_snapshot!(rendered(
        VALID,
        &[(".devenv/profiles/My Profile.yaml", "cluster:\n  provider: none\n")],
        Selection::default()
    ));
}

#[test]
fn every_builtin_entry_is_valid() {
    let dir = repo(VALID, &[]);
    for (name, _) in builtin::PROFILES {
        let selection = Selection { profile: Some(name.to_string()), ..Default::default() };
        load_in(dir.path(), selection).unwrap_or_else(|e| panic!("profile {name}: {e}"));
    }
    let kinds: Vec<&str> = builtin::SUBSTITUTES.iter().map(|(name, _)| *name).collect();
    for kind in
        ["rds-mariadb", "rds-mysql", "rds-postgres", "aurora-postgres", "opensearch", "elasticache-redis", "s3", "sqs"]
    {
        assert!(kinds.contains(&kind), "no built-in `{kind}` in {kinds:?}");
    }
}

/// A project with one service of every built-in kind, each filling a key from every output
/// it offers, loads.
#[test]
fn every_builtin_kind_resolves_with_all_its_outputs() {
    let head = format!("{}services:\n", VALID.split("services:").next().unwrap());
    let service = |kind: &str, keys: &str| {
        let resources = match kind {
            "s3" => "    resources: [uploads]\n",
            "sqs" => "    resources: [orders]\n",
            "secretsmanager" => "    resources:\n      - name: app/key\n        generate: password\n",
            "ssm-parameter-store" => "    resources:\n      - name: /app/host\n        value: x\n",
            _ => "",
        };
        format!("  - name: {kind}\n    kind: {kind}\n{resources}    keys:{keys}\n")
    };
    let bare: String = builtin::SUBSTITUTES.iter().map(|(kind, _)| service(kind, " {}")).collect();
    let dir = repo(&format!("{head}{bare}"), &[]);
    let config = load_in(dir.path(), Selection::default()).unwrap();
    let mut project = head.clone();
    for resolved in &config.services {
        let keys: String = output_names(&resolved.substitute, &resolved.resources)
            .iter()
            .map(|output| {
                let key = format!("{}_{output}", resolved.kind).to_uppercase().replace(['-', '.', '/'], "_");
                format!("\n      {key}: {output}")
            })
            .collect();
        project.push_str(&service(&resolved.kind, &keys));
    }
    let dir = repo(&project, &[]);
    let config = load_in(dir.path(), Selection::default()).unwrap_or_else(|e| panic!("{e}\n{project}"));
    assert_eq!(config.services.len(), builtin::SUBSTITUTES.len());
    let s3 = config.services.iter().find(|s| s.kind == "s3").unwrap();
    assert_eq!(s3.resources, ["uploads"]);
    assert_eq!(s3.keys["S3_UPLOADS_URL"], "uploads.url");
    let sqs = config.services.iter().find(|s| s.kind == "sqs").unwrap();
    assert_eq!(sqs.keys["SQS_ORDERS_URL"], "orders.url");
    assert_eq!(sqs.keys["SQS_QUEUES"], "queues");
}

#[test]
fn versions_map_to_image_tags() {
    let project = VALID
        .replace("kind: rds-mariadb", "kind: rds-postgres\n    version: \"15\"")
        .replace("  - name: orders-db", "  - name: ledger-db");
    let project = format!(
        "{project}  - name: search\n    kind: opensearch\n  - name: cache\n    kind: elasticache-redis\n    version: \"8.0\"\n"
    );
    let dir = repo(&project, &[]);
    let config = load_in(dir.path(), Selection::default()).unwrap();
    let images: Vec<&str> = config.services.iter().map(|s| s.image.as_str()).collect();
    assert_eq!(
        images,
        [
            "docker.io/library/postgres:15",
            "docker.io/opensearchproject/opensearch:2.19.1",
            "docker.io/valkey/valkey:8.0"
        ]
    );
}

const S3_SERVICE: &str =
    "  - name: blobs\n    kind: s3\n    resources: [uploads]\n    keys:\n      UPLOADS_BUCKET: uploads.name\n";
const SQS_SERVICE: &str =
    "  - name: queues\n    kind: sqs\n    resources: [orders]\n    keys:\n      ORDERS_QUEUE_URL: orders.url\n";

#[test]
fn unknown_version_of_a_new_kind() {
    insta::assert_snapshot!(rendered_project(&format!(
        "{VALID}  - name: search\n    kind: opensearch\n    version: \"2.20\"\n"
    )));
}

#[test]
fn resources_on_a_kind_without_them() {
    insta::assert_snapshot!(rendered_project(
        &VALID.replace("    kind: rds-mariadb", "    kind: rds-mariadb\n    resources: [orders]")
    ));
}

const SECRETS_SERVICE: &str = "  - name: secrets\n    kind: secretsmanager\n    resources:\n      - name: lender/payments/db\n        rds: orders-db\n";
const PARAMETERS_SERVICE: &str = "  - name: parameters\n    kind: ssm-parameter-store\n    resources:\n      - name: /lender/payments/db-host\n        value: ${orders-db.host}\n";

#[test]
fn secrets_and_parameters_render_with_the_applications_addresses() {
    let secrets = SECRETS_SERVICE.to_string()
        + "      - name: lender/payments/api-key\n        generate: password\n      - name: lender/payments/config\n        json:\n          url: http://${orders-db.host}:${orders-db.port}\n          retries: 3\n";
    let parameters = PARAMETERS_SERVICE.to_string()
        + "      - name: /lender/payments/db-password\n        type: SecureString\n        value: ${orders-db.password}\n";
    let project = format!("{VALID}{secrets}{parameters}");
    let dir = repo(&project, &[]);
    let config = load_in(dir.path(), Selection::default()).unwrap();
    let mut state = crate::state::State::default();
    let desired = crate::substitutes::resolve(&config, &mut state, &Default::default(), &Default::default()).unwrap();
    let db = &state.services["orders-db"];
    let (password, port) = (&db.secrets["password"], db.host_ports["sql"]);

    // Standalone: applications run on this machine, so the values are its addresses.
    let rds: serde_json::Value = serde_json::from_str(&desired[1].contents["lender/payments/db"].value).unwrap();
    assert_eq!(
        rds,
        serde_json::json!({"username": "app", "password": password, "engine": "mariadb", "host": "127.0.0.1", "port": port, "dbname": "app"})
    );
    let generated = &desired[1].contents["lender/payments/api-key"].value;
    assert_eq!(generated, &state.services["secrets"].generated["lender/payments/api-key"]);
    assert_eq!(generated.len(), 24);
    let document: serde_json::Value =
        serde_json::from_str(&desired[1].contents["lender/payments/config"].value).unwrap();
    assert_eq!(document, serde_json::json!({"url": format!("http://127.0.0.1:{port}"), "retries": 3}));
    let host = &desired[2].contents["/lender/payments/db-host"];
    assert_eq!((host.value.as_str(), host.parameter_type), ("127.0.0.1", project::ParameterType::String));
    let secure = &desired[2].contents["/lender/payments/db-password"];
    assert_eq!((&secure.value, secure.parameter_type), (password, project::ParameterType::SecureString));

    // Resolved again (the next `up`), the generated password stays.
    let again = crate::substitutes::resolve(&config, &mut state, &Default::default(), &Default::default()).unwrap();
    assert_eq!(&again[1].contents["lender/payments/api-key"].value, generated);

    // With a cluster, pods read them: the container's name and port on the cluster's network.
    let selection = Selection { profile: Some("local".into()), ..Default::default() };
    let config = load_in(dir.path(), selection).unwrap();
    let desired = crate::substitutes::resolve(&config, &mut state, &Default::default(), &Default::default()).unwrap();
    let rds: serde_json::Value = serde_json::from_str(&desired[1].contents["lender/payments/db"].value).unwrap();
    assert_eq!(rds["host"], "devenv-shop-orders-db");
    assert_eq!(rds["port"], 3306);
}

#[test]
fn secret_without_a_value() {
    insta::assert_snapshot!(rendered_project(&format!(
        "{VALID}  - name: secrets\n    kind: secretsmanager\n    resources: [lender/payments/db]\n"
    )));
}

#[test]
fn secret_with_two_values() {
    insta::assert_snapshot!(rendered_project(&format!("{VALID}{SECRETS_SERVICE}        generate: password\n")));
}

#[test]
fn reference_to_an_unknown_output() {
    insta::assert_snapshot!(rendered_project(&format!(
        "{VALID}{}",
        PARAMETERS_SERVICE.replace("orders-db.host", "orders-db.hostname")
    )));
}

#[test]
fn rds_secret_from_an_unknown_service() {
    insta::assert_snapshot!(rendered_project(&format!(
        "{VALID}{}",
        SECRETS_SERVICE.replace("rds: orders-db", "rds: payments-db")
    )));
}

#[test]
fn rds_secret_from_a_service_that_is_not_a_database() {
    insta::assert_snapshot!(rendered_project(&format!(
        "{VALID}{S3_SERVICE}{}",
        SECRETS_SERVICE.replace("rds: orders-db", "rds: blobs")
    )));
}

#[test]
fn invalid_parameter_name() {
    insta::assert_snapshot!(rendered_project(&format!(
        "{VALID}{}",
        PARAMETERS_SERVICE.replace("/lender/payments/db-host", "lender/payments/db-host")
    )));
}

#[test]
fn value_on_a_bucket() {
    insta::assert_snapshot!(rendered_project(&format!(
        "{VALID}{}",
        S3_SERVICE.replace("[uploads]", "\n      - name: uploads\n        value: x")
    )));
}

#[test]
fn misspelled_field_of_a_secret() {
    insta::assert_snapshot!(rendered_project(&format!("{VALID}{}", SECRETS_SERVICE.replace("rds:", "rsd:"))));
}

#[test]
fn type_on_a_secret() {
    insta::assert_snapshot!(rendered_project(&format!("{VALID}{SECRETS_SERVICE}        type: SecureString\n")));
}

#[test]
fn invalid_bucket_name() {
    insta::assert_snapshot!(rendered_project(&format!(
        "{VALID}{}",
        S3_SERVICE.replace("[uploads]", "[uploads, Monthly_Reports]")
    )));
}

#[test]
fn bucket_name_formatted_as_an_ip_address() {
    insta::assert_snapshot!(rendered_project(&format!("{VALID}{}", S3_SERVICE.replace("[uploads]", "[10.0.0.1]"))));
}

#[test]
fn invalid_queue_name() {
    insta::assert_snapshot!(rendered_project(&format!(
        "{VALID}{}",
        SQS_SERVICE.replace("[orders]", "[orders, order events]")
    )));
}

#[test]
fn resource_listed_twice() {
    insta::assert_snapshot!(rendered_project(&format!(
        "{VALID}{}",
        SQS_SERVICE.replace("[orders]", "[orders, orders]")
    )));
}

#[test]
fn output_of_a_resource_not_listed() {
    insta::assert_snapshot!(rendered_project(&format!(
        "{VALID}{}",
        SQS_SERVICE.replace("ORDERS_QUEUE_URL: orders.url", "PAYMENTS_QUEUE_URL: payments.url")
    )));
}

#[test]
fn http_probe_path_must_start_with_a_slash() {
    let entry = "probe:\n  type: http\n  path: _cluster/health\n";
    let project = format!("{VALID}  - name: search\n    kind: opensearch\n");
    insta::assert_snapshot!(rendered(
        &project,
        &[(".devenv/substitutes/opensearch.yaml", entry)],
        Selection::default()
    ));
}

#[test]
fn http_probe_json_pointer_must_be_a_pointer() {
    let entry = "probe:\n  type: http\n  path: /_cluster/health\n  json:\n    pointer: status\n    oneOf: [green]\n";
    let project = format!("{VALID}  - name: search\n    kind: opensearch\n");
    insta::assert_snapshot!(rendered(
        &project,
        &[(".devenv/substitutes/opensearch.yaml", entry)],
        Selection::default()
    ));
}

#[test]
fn http_probe_status_must_be_http_codes() {
    let entry = "probe:\n  type: http\n  path: /healthz\n  status: [200, 999]\n";
    insta::assert_snapshot!(rendered(
        &format!("{VALID}{S3_SERVICE}"),
        &[(".devenv/substitutes/s3.yaml", entry)],
        Selection::default()
    ));
}

#[test]
fn unknown_probe_type() {
    let entry = "probe:\n  type: grpc\n";
    insta::assert_snapshot!(rendered(
        &format!("{VALID}{S3_SERVICE}"),
        &[(".devenv/substitutes/s3.yaml", entry)],
        Selection::default()
    ));
}

#[test]
fn unknown_variable_in_a_resource_output() {
    let entry = "resources:\n  create:\n    type: sqs-queue\n    endpoint: http://${host}:${port}\n  outputs:\n    url: http://${host}:${port}/${accountId}/${resourse}\n";
    insta::assert_snapshot!(rendered(
        &format!("{VALID}{SQS_SERVICE}"),
        &[(".devenv/substitutes/sqs.yaml", entry)],
        Selection::default()
    ));
}

#[test]
fn resource_variable_only_in_resource_outputs() {
    let entry = "outputs:\n  bucket: ${resource}\n";
    insta::assert_snapshot!(rendered(
        &format!("{VALID}{S3_SERVICE}"),
        &[(".devenv/substitutes/s3.yaml", entry)],
        Selection::default()
    ));
}

#[test]
fn durations_and_sizes() {
    assert_eq!(parse_duration("90s"), Some(std::time::Duration::from_secs(90)));
    assert_eq!(parse_duration("72h"), Some(std::time::Duration::from_secs(72 * 3600)));
    assert_eq!(parse_duration("7d"), Some(std::time::Duration::from_secs(7 * 86400)));
    assert_eq!(parse_duration("7"), None);
    assert_eq!(parse_duration("m"), None);
    assert_eq!(parse_memory("512Mi"), Some(512 << 20));
    assert_eq!(parse_memory("1G"), Some(1_000_000_000));
    assert_eq!(parse_memory("0"), None);
    assert_eq!(parse_memory("1Ti"), None);
}

#[test]
fn suggestions() {
    assert_eq!(suggest("rds-mariadbb", &["rds-mariadb", "rds-mysql"]), Some("rds-mariadb"));
    assert_eq!(suggest("opensearch", &["rds-mariadb", "rds-mysql"]), None);
}

#[test]
fn a_config_map_name_kubernetes_would_refuse() {
    insta::assert_snapshot!(rendered_project(&VALID.replace("    name: cluster-env", "    name: Cluster_Env")));
}

#[test]
fn a_namespace_kubernetes_would_refuse() {
    insta::assert_snapshot!(rendered_project(
        &VALID.replace("    namespace: flux-system", "    namespace: flux.system")
    ));
}

#[test]
fn a_dotted_config_map_name_is_fine() {
    let dir = repo(&VALID.replace("    name: cluster-env", "    name: cluster.env"), &[]);
    assert!(load_in(dir.path(), Selection::default()).is_ok());
}

#[test]
fn profile_quantities_and_ingress_namespace_are_checked() {
    let render = |profile: &str| {
        let selection = Selection { profile: Some("mine".into()), ..Default::default() };
        rendered(
            VALID,
            &[(".devenv/profiles/mine.yaml", &format!("cluster:\n  provider: eks-namespace\n{profile}"))],
            selection,
        )
    };
    assert_eq!(
        render("quota:\n  cpu: lots\n"),
        "exit 2\nerror[DEV010]: .devenv/profiles/mine.yaml:4:8: quota.cpu: `lots` is not a CPU amount\nhint: write it like `500m`, `1` or `2.5`\n"
    );
    assert_eq!(
        render("limits:\n  defaultMemory: 1 GB\n"),
        "exit 2\nerror[DEV010]: .devenv/profiles/mine.yaml:4:18: limits.defaultMemory: `1 GB` is not a memory size\nhint: write it like `512Mi` or `2Gi`\n"
    );
    assert_eq!(
        render("limits:\n  defaultCpu: 50m\n"),
        "exit 2\nerror[DEV010]: .devenv/profiles/mine.yaml:4:15: limits.defaultRequestCpu: the default request `100m` is more than the default limit `50m`\nhint: set `limits.defaultRequestCpu` to at most `limits.defaultCpu`\n"
    );
    assert_eq!(
        render("ingressNamespace: Ingress\n"),
        "exit 2\nerror[DEV010]: .devenv/profiles/mine.yaml:3:19: ingressNamespace: namespace `Ingress` contains `I`\nhint: name the namespace the ingress controller runs in, e.g. `ingress-nginx`\n"
    );
    let dir = repo(
        VALID,
        &[(
            ".devenv/profiles/mine.yaml",
            "cluster:\n  provider: eks-namespace\nquota:\n  cpu: \"1.5\"\n  memory: 4Gi\nlimits:\n  defaultCpu: \"1\"\n  defaultRequestCpu: 250m\ningressNamespace: ingress-nginx\n",
        )],
    );
    load_in(dir.path(), Selection { profile: Some("mine".into()), ..Default::default() }).unwrap();
}

#[test]
fn cpu_amounts() {
    assert_eq!(parse_cpu("500m"), Some(500));
    assert_eq!(parse_cpu("2"), Some(2000));
    assert_eq!(parse_cpu("2.5"), Some(2500));
    assert_eq!(parse_cpu("0.125"), Some(125));
    assert_eq!(parse_cpu(".5"), Some(500));
    for invalid in ["", "0", "0m", "m", "1.2345", "-1", "1 m", "1k", "lots"] {
        assert_eq!(parse_cpu(invalid), None, "{invalid}");
    }
}

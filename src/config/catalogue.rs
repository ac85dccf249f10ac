//! `substitutes/*.yaml`: the catalogue of containers that stand in for managed services.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Substitute {
    /// The managed service it stands in for, e.g. "Amazon RDS for MariaDB".
    pub replaces: String,
    /// What serves it, e.g. "MariaDB".
    pub server: String,
    /// Image repository (`docker.io/library/mariadb`). An image with a tag is used as it is,
    /// whatever the version.
    pub image: String,
    pub versions: Versions,
    /// Container ports by name; the first is the main port.
    pub ports: BTreeMap<String, u16>,
    /// The main port's name.
    pub main_port: String,
    /// Container environment; values are templates (`${password}`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Container command (arguments to the image's entrypoint); templates allowed.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Parameters with their defaults; a service sets them with `params:`.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Secrets generated once per environment and kept in the state file.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Data directory inside the container; a named volume is mounted there.
    #[serde(default)]
    pub data_path: Option<String>,
    /// Whether the server stores the generated secrets in its data directory when it first
    /// starts on an empty volume (databases do), so a volume cannot be reused with new ones.
    #[serde(default)]
    pub secrets_in_volume: bool,
    pub probe: Probe,
    /// `probe.timeout`, read when the entry is validated.
    #[serde(skip)]
    pub probe_timeout: Duration,
    /// Outputs services map to environment ConfigMap keys.
    pub outputs: BTreeMap<String, Output>,
    /// What a service may ask for with `resources:` (buckets, queues …), created once the
    /// substitute is ready. Kinds without it take no `resources:`.
    #[serde(default)]
    pub resources: Option<Resources>,
}

/// Resources a service names in devenv.yaml (`resources: [orders, payments]`): how each is
/// created, and the outputs each offers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    /// How each resource is created once the probe passes; creating one that exists is a no-op.
    pub create: CreateResource,
    /// Outputs of each resource, offered as `<resource>.<output>` (e.g. `orders.url`); templates
    /// may also use `${resource}`, the resource's name.
    #[serde(default)]
    pub outputs: BTreeMap<String, Output>,
}

/// A typed "create this resource" action, implemented once for every kind that uses it. The
/// fields are templates.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum CreateResource {
    /// An S3 bucket: `HeadBucket`, then `CreateBucket` if it is missing, signed (AWS Signature
    /// Version 4, path-style) with the given credentials.
    #[serde(rename_all = "camelCase")]
    S3Bucket { endpoint: String, region: String, access_key: String, secret_key: String },
    /// An SQS queue: `CreateQueue` (AWS JSON protocol), which returns the existing queue when
    /// it is there; a name ending in `.fifo` makes a FIFO queue.
    SqsQueue { endpoint: String },
    /// A Secrets Manager secret with the value devenv.yaml gives it: `GetSecretValue`, then
    /// `CreateSecret` when it is missing or `PutSecretValue` when its value differs (AWS JSON
    /// protocol, signed with the given credentials).
    #[serde(rename_all = "camelCase")]
    SecretsmanagerSecret { endpoint: String, region: String, access_key_id: String, secret_access_key: String },
    /// An SSM Parameter Store parameter with the value and type devenv.yaml gives it:
    /// `GetParameter`, then `PutParameter` (with `Overwrite` when its value or type differs).
    #[serde(rename_all = "camelCase")]
    SsmParameter { endpoint: String, region: String, access_key_id: String, secret_access_key: String },
}

impl CreateResource {
    /// What one resource is called in messages.
    pub fn noun(&self) -> &'static str {
        match self {
            CreateResource::S3Bucket { .. } => "bucket",
            CreateResource::SqsQueue { .. } => "queue",
            CreateResource::SecretsmanagerSecret { .. } => "secret",
            CreateResource::SsmParameter { .. } => "parameter",
        }
    }

    /// Whether each resource is declared with a value (secrets, parameters) rather than by
    /// its name alone (buckets, queues).
    pub fn has_value(&self) -> bool {
        matches!(self, CreateResource::SecretsmanagerSecret { .. } | CreateResource::SsmParameter { .. })
    }

    /// The naming rules of the resource, as a hint.
    pub fn naming_hint(&self) -> &'static str {
        match self {
            CreateResource::S3Bucket { .. } => {
                "bucket names are 3 to 63 lowercase letters, digits, `-` and `.`, starting and ending with a letter or digit (e.g. `orders-uploads`)"
            }
            CreateResource::SqsQueue { .. } => {
                "queue names are 1 to 80 letters, digits, `-` and `_`; a FIFO queue's name ends with `.fifo` (e.g. `orders` or `orders.fifo`)"
            }
            CreateResource::SecretsmanagerSecret { .. } => {
                "secret names are 1 to 512 letters, digits and `/_+=.@-` (e.g. `lender/payments/db`)"
            }
            CreateResource::SsmParameter { .. } => {
                "parameter names are 1 to 1011 letters, digits and `_.-/`, a path starts with `/` and has at most 15 levels, and no name starts with `aws` or `ssm` (e.g. `/lender/payments/db-host`)"
            }
        }
    }

    /// Checks a resource name against the managed service's rules; the error says why not.
    pub fn check_name(&self, name: &str) -> Result<(), String> {
        match self {
            CreateResource::S3Bucket { .. } => check_bucket_name(name),
            CreateResource::SqsQueue { .. } => check_queue_name(name),
            CreateResource::SecretsmanagerSecret { .. } => check_secret_name(name),
            CreateResource::SsmParameter { .. } => check_parameter_name(name),
        }
    }

    /// Every templated field, with its name.
    pub fn templates(&self) -> Vec<(&'static str, &str)> {
        match self {
            CreateResource::S3Bucket { endpoint, region, access_key, secret_key } => vec![
                ("endpoint", endpoint.as_str()),
                ("region", region.as_str()),
                ("accessKey", access_key.as_str()),
                ("secretKey", secret_key.as_str()),
            ],
            CreateResource::SqsQueue { endpoint } => vec![("endpoint", endpoint.as_str())],
            CreateResource::SecretsmanagerSecret { endpoint, region, access_key_id, secret_access_key }
            | CreateResource::SsmParameter { endpoint, region, access_key_id, secret_access_key } => vec![
                ("endpoint", endpoint.as_str()),
                ("region", region.as_str()),
                ("accessKeyId", access_key_id.as_str()),
                ("secretAccessKey", secret_access_key.as_str()),
            ],
        }
    }
}

/// AWS Secrets Manager's rules for secret names.
fn check_secret_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 512 {
        return Err(format!("is {} characters long; secret names have 1 to 512", name.len()));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "/_+=.@-".contains(*c))) {
        return Err(format!("contains `{c}`; secret names have only letters, digits and `/_+=.@-`"));
    }
    Ok(())
}

/// SSM Parameter Store's rules for parameter names.
fn check_parameter_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 1011 {
        return Err(format!("is {} characters long; parameter names have 1 to 1011", name.len()));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "_.-/".contains(*c))) {
        return Err(format!("contains `{c}`; parameter names have only letters, digits and `_.-/`"));
    }
    if name.contains('/') && !name.starts_with('/') {
        return Err("has `/` but does not start with it; a path starts with `/`".to_string());
    }
    if name.ends_with('/') || name.contains("//") {
        return Err("has an empty level (`//` or a trailing `/`)".to_string());
    }
    if name.matches('/').count() > 15 {
        return Err("has more than 15 levels".to_string());
    }
    let first = name.trim_start_matches('/').to_ascii_lowercase();
    if first.starts_with("aws") || first.starts_with("ssm") {
        return Err("starts with `aws` or `ssm`, which AWS reserves".to_string());
    }
    Ok(())
}

/// Amazon S3's rules for general purpose bucket names.
fn check_bucket_name(name: &str) -> Result<(), String> {
    if !(3..=63).contains(&name.len()) {
        return Err(format!("is {} characters long; bucket names have 3 to 63", name.len()));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.')) {
        return Err(format!("contains `{c}`; bucket names have only lowercase letters, digits, `-` and `.`"));
    }
    let alphanumeric = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !alphanumeric(name.chars().next()) || !alphanumeric(name.chars().last()) {
        return Err("must start and end with a letter or digit".to_string());
    }
    if name.contains("..") || name.contains(".-") || name.contains("-.") {
        return Err("has `..`, `.-` or `-.`; each part between dots starts and ends with a letter or digit".to_string());
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err("is formatted as an IP address".to_string());
    }
    for prefix in ["xn--", "sthree-", "amzn-s3-demo-"] {
        if name.starts_with(prefix) {
            return Err(format!("starts with `{prefix}`, which S3 reserves"));
        }
    }
    for suffix in ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"] {
        if name.ends_with(suffix) {
            return Err(format!("ends with `{suffix}`, which S3 reserves"));
        }
    }
    Ok(())
}

/// Amazon SQS's rules for queue names.
fn check_queue_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 80 {
        return Err(format!("is {} characters long; queue names have 1 to 80", name.len()));
    }
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    if base.is_empty() {
        return Err("has nothing before `.fifo`".to_string());
    }
    if let Some(c) = base.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
        return Err(format!(
            "contains `{c}`; queue names have only letters, digits, `-` and `_` (and may end with `.fifo`)"
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Versions {
    pub default: String,
    /// Version → image tag.
    pub tags: BTreeMap<String, String>,
}

/// How readiness is checked, through the port published on 127.0.0.1. `timeout` is the
/// deadline for the substitute to become ready, e.g. `120s`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Probe {
    /// `SELECT 1` as the generated user; the login fields are templates.
    Sql {
        dialect: SqlDialect,
        username: String,
        password: String,
        database: String,
        #[serde(default = "default_probe_timeout")]
        timeout: String,
    },
    /// An HTTP `GET` of `path` (a template) on the main port answers with one of `status`,
    /// and, with `json`, its JSON body has an accepted value at a field.
    Http {
        path: String,
        #[serde(default = "default_http_status")]
        status: Vec<u16>,
        #[serde(default)]
        json: Option<JsonCondition>,
        #[serde(default = "default_probe_timeout")]
        timeout: String,
    },
    /// `PING` answers `PONG` (after `AUTH` with `password`, a template, when it is given).
    Redis {
        #[serde(default)]
        password: Option<String>,
        #[serde(default = "default_probe_timeout")]
        timeout: String,
    },
    /// A signed call of an AWS JSON API (`action`, e.g. `ListSecrets`, with an empty request)
    /// answers 200; the other fields are templates.
    #[serde(rename_all = "camelCase")]
    AwsJson {
        api: AwsApi,
        action: String,
        region: String,
        access_key_id: String,
        secret_access_key: String,
        #[serde(default = "default_probe_timeout")]
        timeout: String,
    },
    /// A TCP connection is accepted.
    Tcp {
        #[serde(default = "default_probe_timeout")]
        timeout: String,
    },
}

/// An AWS API spoken with the JSON protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AwsApi {
    Secretsmanager,
    Ssm,
}

/// A condition on an HTTP probe's JSON body: the value at `pointer` (a JSON pointer such as
/// `/status`) is one of `oneOf` (strings; other JSON values are compared as written in JSON).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JsonCondition {
    pub pointer: String,
    pub one_of: Vec<String>,
}

impl Probe {
    /// `timeout` as written; `Substitute::probe_timeout` is its value.
    pub(super) fn timeout_text(&self) -> &str {
        match self {
            Probe::Sql { timeout, .. }
            | Probe::Http { timeout, .. }
            | Probe::Redis { timeout, .. }
            | Probe::AwsJson { timeout, .. }
            | Probe::Tcp { timeout } => timeout,
        }
    }

    /// Every templated field, with its name.
    pub fn templates(&self) -> Vec<(&'static str, &str)> {
        match self {
            Probe::Sql { username, password, database, .. } => {
                vec![("username", username.as_str()), ("password", password.as_str()), ("database", database.as_str())]
            }
            Probe::Http { path, .. } => vec![("path", path.as_str())],
            Probe::Redis { password: Some(password), .. } => vec![("password", password.as_str())],
            Probe::AwsJson { region, access_key_id, secret_access_key, .. } => vec![
                ("region", region.as_str()),
                ("accessKeyId", access_key_id.as_str()),
                ("secretAccessKey", secret_access_key.as_str()),
            ],
            Probe::Redis { password: None, .. } | Probe::Tcp { .. } => Vec::new(),
        }
    }
}

fn default_http_status() -> Vec<u16> {
    vec![200]
}

fn default_probe_timeout() -> String {
    "120s".to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SqlDialect {
    Mysql,
    Postgres,
}

/// An output: a template, and whether it holds a secret (it then goes to the Secret, not the
/// ConfigMap, and is hidden unless `--show-secrets`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Output {
    Plain(String),
    Detailed {
        value: String,
        #[serde(default)]
        secret: bool,
    },
}

impl Output {
    pub fn template(&self) -> &str {
        match self {
            Output::Plain(value) | Output::Detailed { value, .. } => value,
        }
    }

    pub fn is_secret(&self) -> bool {
        matches!(self, Output::Detailed { secret: true, .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket() -> CreateResource {
        CreateResource::S3Bucket {
            endpoint: String::new(),
            region: String::new(),
            access_key: String::new(),
            secret_key: String::new(),
        }
    }

    fn queue() -> CreateResource {
        CreateResource::SqsQueue { endpoint: String::new() }
    }

    #[test]
    fn bucket_names() {
        for good in ["uploads", "abc", "reports.archive", "a-b.c-d", &"x".repeat(63)] {
            assert_eq!(bucket().check_name(good), Ok(()), "{good}");
        }
        for bad in
            ["ab", "Uploads", "up_loads", "-uploads", "uploads.", "a..b", "a.-b", "10.0.0.1", "xn--abc", "data-s3alias"]
        {
            assert!(bucket().check_name(bad).is_err(), "{bad} should be refused");
        }
        assert!(bucket().check_name(&"x".repeat(64)).is_err());
    }

    fn aws(kind: &str) -> CreateResource {
        serde_yaml::from_str(&format!("type: {kind}\nendpoint: e\nregion: r\naccessKeyId: a\nsecretAccessKey: s\n"))
            .unwrap()
    }

    #[test]
    fn secret_and_parameter_names() {
        let secret = aws("secretsmanager-secret");
        for good in ["lender/payments/db", "api_key+1=x.y@z-w", &"s".repeat(512)] {
            assert_eq!(secret.check_name(good), Ok(()), "{good}");
        }
        for bad in ["", "db password", "db#1", &"s".repeat(513)] {
            assert!(secret.check_name(bad).is_err(), "{bad:?} should be refused");
        }
        let parameter = aws("ssm-parameter");
        for good in ["/lender/payments/db-host", "plain_name.v1", "/a"] {
            assert_eq!(parameter.check_name(good), Ok(()), "{good}");
        }
        let deep = "/l".repeat(16);
        for bad in ["", "lender/payments", "/lender//db", "/lender/", "/aws/x", "SSM-thing", "/a b", &deep] {
            assert!(parameter.check_name(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(parameter.has_value() && secret.has_value() && !queue().has_value());
    }

    #[test]
    fn queue_names() {
        for good in ["orders", "Order_Events-1", "payments.fifo", &"q".repeat(80)] {
            assert_eq!(queue().check_name(good), Ok(()), "{good}");
        }
        for bad in ["", ".fifo", "order events", "orders.v2", "orders.fifo.fifo", &"q".repeat(81)] {
            assert!(queue().check_name(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn probes_parse_from_yaml() {
        let http: Probe = serde_yaml::from_str(
            "type: http\npath: /_cluster/health\njson:\n  pointer: /status\n  oneOf: [green, yellow]\n",
        )
        .unwrap();
        assert_eq!(
            http,
            Probe::Http {
                path: "/_cluster/health".into(),
                status: vec![200],
                json: Some(JsonCondition { pointer: "/status".into(), one_of: vec!["green".into(), "yellow".into()] }),
                timeout: "120s".into(),
            }
        );
        let redis: Probe = serde_yaml::from_str("type: redis\npassword: ${password}\ntimeout: 60s\n").unwrap();
        assert_eq!(redis.templates(), vec![("password", "${password}")]);
        assert_eq!(redis.timeout_text(), "60s");
        let sql: Probe =
            serde_yaml::from_str("type: sql\ndialect: postgres\nusername: a\npassword: b\ndatabase: c\n").unwrap();
        assert!(matches!(sql, Probe::Sql { dialect: SqlDialect::Postgres, .. }));
    }
}

//! `devenv.yaml`: the project file at the root of a GitOps repository.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProjectFile {
    /// Project name; the default environment name. A DNS label.
    pub project: String,
    /// Profile used when `--profile` is not given.
    #[serde(default)]
    pub default_profile: Option<String>,
    pub flux: FluxConfig,
    pub environment: EnvironmentConfig,
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
    #[serde(default)]
    pub overlay: OverlayConfig,
    /// Helm charts in the repository that devenv publishes to the environment's registry.
    #[serde(default)]
    pub charts: Vec<ChartConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FluxConfig {
    /// The path in the repository that the root Kustomization applies, e.g. `clusters/local`.
    pub path: String,
    /// Namespace of the Flux controllers and of devenv's own Flux objects.
    #[serde(default = "default_flux_namespace")]
    pub namespace: String,
    /// The repository's own Flux source (`Kind/name`), which devenv re-points at the working tree.
    #[serde(default = "default_flux_source")]
    pub source: String,
}

fn default_flux_namespace() -> String {
    "flux-system".to_string()
}

fn default_flux_source() -> String {
    "GitRepository/flux-system".to_string()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvironmentConfig {
    /// The ConfigMap that Terraform writes in AWS and Flux reads via `postBuild.substituteFrom`.
    pub config_map: ObjectName,
    /// Where secret outputs (passwords, URLs with credentials) go; defaults to
    /// `<configMap.name>-secrets` in the ConfigMap's namespace.
    #[serde(default)]
    pub secret: Option<ObjectName>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectName {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceConfig {
    /// Service name; part of container and volume names. A DNS label.
    pub name: String,
    /// Substitute kind from the catalogue, e.g. `rds-mariadb`.
    pub kind: String,
    /// Version of the managed service; the catalogue maps it to an image tag.
    #[serde(default)]
    pub version: Option<String>,
    /// Fixed host port on 127.0.0.1 for the substitute's main port (default: a free port,
    /// chosen once and remembered).
    #[serde(default)]
    pub port: Option<u16>,
    /// Values for the catalogue's parameters, e.g. `database: orders`.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Resources to create in the substitute once it is ready, for kinds that have them: bucket
    /// names for `s3`, queue names for `sqs`, secrets with their values for `secretsmanager`
    /// and parameters for `ssm-parameter-store`. Each offers outputs as `<name>.<output>`
    /// (e.g. `ORDERS_QUEUE_URL: orders.url`).
    #[serde(default)]
    pub resources: Vec<ResourceConfig>,
    /// Environment ConfigMap keys and the substitute output that fills each, e.g. `DB_HOST: host`.
    #[serde(default)]
    pub keys: BTreeMap<String, String>,
}

/// One entry of a service's `resources:`: a name alone (a bucket, a queue), or a secret or
/// parameter declared with its value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ResourceConfig {
    Name(String),
    Declared(DeclaredResource),
}

impl ResourceConfig {
    pub fn name(&self) -> &str {
        match self {
            ResourceConfig::Name(name) => name,
            ResourceConfig::Declared(declared) => &declared.name,
        }
    }
}

// By hand rather than `untagged`, so a mistake in a mapping is reported as itself (an unknown
// field, a wrong type) instead of "did not match any variant".
impl<'de> Deserialize<'de> for ResourceConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        match serde_yaml::Value::deserialize(deserializer)? {
            serde_yaml::Value::String(name) => Ok(ResourceConfig::Name(name)),
            value @ serde_yaml::Value::Mapping(_) => {
                DeclaredResource::deserialize(value).map(ResourceConfig::Declared).map_err(D::Error::custom)
            }
            _ => Err(D::Error::custom(
                "expected a name, or a mapping with `name:` and the value of a secret or parameter",
            )),
        }
    }
}

/// A secret or parameter and where its value comes from: exactly one of `value`, `generate`,
/// `json` and `rds`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeclaredResource {
    pub name: String,
    /// A string; `${SERVICE.OUTPUT}` is another service's output (e.g. `${orders-db.host}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `password`: a random password, generated once per environment and remembered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate: Option<Generate>,
    /// A JSON object; its strings may use `${SERVICE.OUTPUT}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<serde_json::Map<String, serde_json::Value>>,
    /// A database service whose credentials make the secret, in the shape RDS gives them:
    /// `{"username", "password", "engine", "host", "port", "dbname"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rds: Option<String>,
    /// The parameter's type (`ssm-parameter-store` only): `String` (the default),
    /// `SecureString` or `StringList`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub parameter_type: Option<ParameterType>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Generate {
    Password,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum ParameterType {
    #[default]
    String,
    SecureString,
    StringList,
}

impl ParameterType {
    pub fn as_str(self) -> &'static str {
        match self {
            ParameterType::String => "String",
            ParameterType::SecureString => "SecureString",
            ParameterType::StringList => "StringList",
        }
    }
}

/// The local overlay applied to the repository's Flux objects.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OverlayConfig {
    /// Flux Kustomizations or HelmReleases (`name` or `namespace/name`) switched off locally.
    #[serde(default)]
    pub disable: Vec<String>,
    /// Upper bound for `spec.replicas` of Deployments and StatefulSets.
    #[serde(default)]
    pub max_replicas: Option<u32>,
    /// Extra Kustomize patches added to every Flux Kustomization (`spec.patches` entries).
    #[serde(default)]
    pub patches: Vec<serde_yaml::Value>,
    /// Flux sources (GitRepository, OCIRepository, HelmRepository) re-pointed by URL, e.g.
    /// at a registry mirror or at the environment's own registry.
    #[serde(default)]
    pub sources: Vec<SourceUrlConfig>,
}

/// One entry of the source-URL map.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SourceUrlConfig {
    /// A URL, or the start of one up to a `/`, as written in the sources' `spec.url`.
    pub url: String,
    /// What replaces it; `{{ registry }}` is the environment's registry.
    pub to: String,
    /// Sets `spec.insecure` (plain HTTP) on OCI and Helm sources.
    #[serde(default)]
    pub insecure: bool,
    /// Removes `spec.verify`: the signatures of the original do not cover the copy.
    #[serde(default)]
    pub drop_verify: bool,
}

/// A Helm chart published on every `up` as `<registry>/<repository>/<name>:<version>`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ChartConfig {
    /// The chart's directory (with its Chart.yaml), relative to the repository root.
    pub path: String,
    /// The repository path in the registry.
    #[serde(default = "default_chart_repository")]
    pub repository: String,
}

fn default_chart_repository() -> String {
    "charts".to_string()
}

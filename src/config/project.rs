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
    /// names for `s3`, queue names for `sqs`. Each offers outputs as `<name>.<output>` (e.g.
    /// `ORDERS_QUEUE_URL: orders.url`).
    #[serde(default)]
    pub resources: Vec<String>,
    /// Environment ConfigMap keys and the substitute output that fills each, e.g. `DB_HOST: host`.
    #[serde(default)]
    pub keys: BTreeMap<String, String>,
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

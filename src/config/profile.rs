//! `profiles/*.yaml`: where and how an environment runs.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Profile {
    #[serde(default)]
    pub description: String,
    pub cluster: ClusterConfig,
    #[serde(default)]
    pub registry: RegistryConfig,
    #[serde(default)]
    pub substitutes: SubstituteRuntimeConfig,
    /// Static keys added to the environment ConfigMap, e.g. `AWS_REGION`.
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Resource quota for namespaced environments.
    #[serde(default)]
    pub quota: Option<Quota>,
    /// Default requests and limits of a container that sets none, for namespaced environments.
    #[serde(default)]
    pub limits: Option<Limits>,
    /// The ingress controller's namespace, whose pods may reach a namespaced environment's.
    #[serde(default)]
    pub ingress_namespace: Option<String>,
    /// Lifetime of a preview environment, as written, e.g. `72h`.
    #[serde(default, rename = "ttl")]
    pub(super) ttl_text: Option<String>,
    /// `ttl`, read when the profile is validated.
    #[serde(skip)]
    pub ttl: Option<Duration>,
    /// How many previews of the project may exist at once in the cluster.
    #[serde(default)]
    pub max_previews: Option<u32>,
    /// How Flux is installed in a cluster devenv makes (kind, k3d).
    #[serde(default)]
    pub flux: FluxInstallConfig,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FluxInstallConfig {
    /// Where the Flux controller images come from instead of `ghcr.io/fluxcd`, e.g. a mirror
    /// of an air-gapped network (`registry.example.com/fluxcd`).
    #[serde(default)]
    pub image_registry: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    /// No cluster: substitutes only.
    None,
    Kind,
    K3d,
    Existing,
    EksNamespace,
    Sim,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::None => "none",
            Provider::Kind => "kind",
            Provider::K3d => "k3d",
            Provider::Existing => "existing",
            Provider::EksNamespace => "eks-namespace",
            Provider::Sim => "sim",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterConfig {
    pub provider: Provider,
    /// Cluster name (kind/k3d); default `devenv-<env>`.
    #[serde(default)]
    pub name: Option<String>,
    /// Kubernetes version of the cluster (kind: selects `kindest/node:v<version>`; k3d:
    /// `rancher/k3s:v<version>-k3s1`).
    #[serde(default)]
    pub kubernetes_version: Option<String>,
    /// Node image (kind, k3d); default: the kind or k3d release's own.
    #[serde(default)]
    pub image: Option<String>,
    /// A kind cluster configuration (a file relative to the repository root) merged into the
    /// one devenv generates: its `nodes`, `networking`, `featureGates` … win, its config
    /// patches are added to devenv's.
    #[serde(default)]
    pub kind_config: Option<String>,
    /// kubeconfig context (existing, eks-namespace).
    #[serde(default)]
    pub context: Option<String>,
    /// Whether the environment has the cluster to itself (existing; default `namespace`).
    #[serde(default)]
    pub isolation: Option<Isolation>,
    /// The environment's namespace when `isolation: namespace` (default `devenv-<env>`).
    #[serde(default)]
    pub namespace: Option<String>,
}

/// How an environment shares its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// The cluster is the environment's own: Flux objects and workloads go where the
    /// repository puts them, as in the cluster the repository describes.
    Cluster,
    /// The cluster is shared: every Flux object of the environment, its ConfigMap and Secret
    /// and the workloads they apply live in the environment's namespace.
    Namespace,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistryConfig {
    /// Host port of the environment's registry on 127.0.0.1 (default: a free port).
    #[serde(default)]
    pub host_port: Option<u16>,
    /// Image of the registry container beside a kind or k3d cluster (default `registry:3`).
    #[serde(default)]
    pub image: Option<String>,
    /// `HOST[:PORT]` this machine pushes to (existing): the user's registry.
    #[serde(default)]
    pub url: Option<String>,
    /// `HOST[:PORT]` the cluster pulls from, when it knows the registry under another name.
    #[serde(default)]
    pub pull_url: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubstituteRuntime {
    /// Containers in the local Docker engine, ports on 127.0.0.1.
    #[default]
    Docker,
    /// StatefulSets inside the environment's namespace.
    Cluster,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SubstituteRuntimeConfig {
    #[serde(default)]
    pub runtime: SubstituteRuntime,
    /// Memory cap per substitute, as written, e.g. `1Gi`.
    #[serde(default, rename = "memory")]
    pub(super) memory_text: Option<String>,
    /// `memory` in bytes, read when the profile is validated.
    #[serde(skip)]
    pub memory_bytes: Option<i64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Quota {
    #[serde(default, deserialize_with = "quantity")]
    pub cpu: Option<String>,
    #[serde(default, deserialize_with = "quantity")]
    pub memory: Option<String>,
    #[serde(default)]
    pub pods: Option<u32>,
}

/// A container's resources when its manifest gives none (a LimitRange's defaults); each
/// field left out takes the built-in value.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Limits {
    /// CPU limit, e.g. `500m`.
    #[serde(default, deserialize_with = "quantity")]
    pub default_cpu: Option<String>,
    /// Memory limit, e.g. `512Mi`.
    #[serde(default, deserialize_with = "quantity")]
    pub default_memory: Option<String>,
    /// CPU request, e.g. `100m`; at most the limit.
    #[serde(default, deserialize_with = "quantity")]
    pub default_request_cpu: Option<String>,
    /// Memory request, e.g. `128Mi`; at most the limit.
    #[serde(default, deserialize_with = "quantity")]
    pub default_request_memory: Option<String>,
}

impl Limits {
    pub const DEFAULT_CPU: &str = "500m";
    pub const DEFAULT_MEMORY: &str = "512Mi";
    pub const DEFAULT_REQUEST_CPU: &str = "100m";
    pub const DEFAULT_REQUEST_MEMORY: &str = "128Mi";

    pub fn cpu(&self) -> &str {
        self.default_cpu.as_deref().unwrap_or(Self::DEFAULT_CPU)
    }

    pub fn memory(&self) -> &str {
        self.default_memory.as_deref().unwrap_or(Self::DEFAULT_MEMORY)
    }

    pub fn request_cpu(&self) -> &str {
        self.default_request_cpu.as_deref().unwrap_or(Self::DEFAULT_REQUEST_CPU)
    }

    pub fn request_memory(&self) -> &str {
        self.default_request_memory.as_deref().unwrap_or(Self::DEFAULT_REQUEST_MEMORY)
    }
}

/// A Kubernetes quantity as written: `cpu: 2` in YAML is a number, `cpu: 500m` a string.
fn quantity<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Text(String),
        Whole(u64),
        Fraction(f64),
    }
    Ok(Option::<Written>::deserialize(deserializer)?.map(|written| match written {
        Written::Text(text) => text,
        Written::Whole(number) => number.to_string(),
        Written::Fraction(number) => number.to_string(),
    }))
}

//! `substitutes/*.yaml`: the catalogue of containers that stand in for managed services.

use std::collections::BTreeMap;

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
    pub probe: Probe,
    /// Outputs services map to environment ConfigMap keys.
    pub outputs: BTreeMap<String, Output>,
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
    /// A TCP connection is accepted.
    Tcp {
        #[serde(default = "default_probe_timeout")]
        timeout: String,
    },
}

impl Probe {
    pub fn timeout(&self) -> &str {
        match self {
            Probe::Sql { timeout, .. } | Probe::Tcp { timeout } => timeout,
        }
    }
}

fn default_probe_timeout() -> String {
    "120s".to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SqlDialect {
    Mysql,
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

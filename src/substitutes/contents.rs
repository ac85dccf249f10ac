//! The values of the secrets and parameters devenv.yaml declares: literals and JSON documents
//! with other services' outputs filled in, generated passwords, and the RDS-shaped secret of a
//! database, rendered with the addresses the applications use.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::config::profile::{Provider, SubstituteRuntime as RuntimeKind};
use crate::config::project::{DeclaredResource, ParameterType};
use crate::config::{Config, Service, declared, template};
use crate::state::{ServiceState, State};

/// The value a declared secret or parameter should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub value: String,
    /// For a parameter: its type.
    pub parameter_type: ParameterType,
}

/// Every service's outputs as `SERVICE.OUTPUT`, with the addresses the applications use: the
/// pods' when the environment has a cluster, this machine's when it has none (`provider:
/// none`, where applications run here).
pub fn references(config: &Config, state: &State) -> BTreeMap<String, String> {
    let mut references = BTreeMap::new();
    for service in &config.services {
        let remembered = state.services.get(&service.name).cloned().unwrap_or_default();
        let values = app_values(config, service, &remembered);
        for output in super::render_outputs(service, &values) {
            references.insert(format!("{}.{}", service.name, output.name), output.value);
        }
    }
    references
}

fn app_values(config: &Config, service: &Service, remembered: &ServiceState) -> BTreeMap<String, String> {
    use super::SubstituteRuntime as _;
    match config.profile.substitutes.runtime {
        RuntimeKind::Cluster => {
            super::cluster::pod_values(&config.env, &super::cluster::namespace_for(config), service, remembered)
        }
        RuntimeKind::Docker if config.profile.cluster.provider == Provider::None => {
            super::host_values(&config.env, service, remembered)
        }
        RuntimeKind::Docker => super::runtime::DockerRuntime::default().pod_values(&config.env, service, remembered),
    }
}

/// The values of a service's declared secrets and parameters: `references` filled in,
/// generated passwords from `generated`. Validation made sure every reference exists.
pub fn contents(
    service: &Service,
    references: &BTreeMap<String, String>,
    generated: &BTreeMap<String, String>,
) -> BTreeMap<String, Content> {
    let render = |text: &str| template::render(text, references);
    (service.declared.iter())
        .map(|(name, declared)| {
            let value = match declared {
                DeclaredResource { value: Some(value), .. } => render(value),
                DeclaredResource { generate: Some(_), .. } => generated.get(name).cloned().unwrap_or_default(),
                DeclaredResource { json: Some(object), .. } => {
                    render_json(&Value::Object(object.clone()), &render).to_string()
                }
                DeclaredResource { rds: Some(database), .. } => rds_secret(database, references).to_string(),
                _ => String::new(),
            };
            (name.clone(), Content { value, parameter_type: declared.parameter_type.unwrap_or_default() })
        })
        .collect()
}

fn render_json(value: &Value, render: &dyn Fn(&str) -> String) -> Value {
    match value {
        Value::String(text) => Value::String(render(text)),
        Value::Array(items) => Value::Array(items.iter().map(|item| render_json(item, render)).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), render_json(v, render))).collect()),
        other => other.clone(),
    }
}

/// The secret RDS keeps for a database's credentials; the port is a number, as there.
fn rds_secret(database: &str, references: &BTreeMap<String, String>) -> Value {
    let mut secret = serde_json::Map::new();
    for (key, output) in declared::RDS_SHAPE {
        let value = references.get(&format!("{database}.{output}")).cloned().unwrap_or_default();
        let value = match (key, value.parse::<u16>()) {
            ("port", Ok(port)) => json!(port),
            _ => Value::String(value),
        };
        secret.insert(key.to_string(), value);
    }
    Value::Object(secret)
}

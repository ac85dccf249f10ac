//! The environment ConfigMap and Secret, written the way Terraform writes them in AWS: the
//! profile's static keys, plus each service's outputs under the keys devenv.yaml maps them to.
//! Values are the addresses *pods* use, not the host's 127.0.0.1 ports; [`for_host`] gives the
//! same keys with this machine's addresses, for a service run outside the cluster.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::Config;
use crate::state::State;
use crate::substitutes::{self, SubstituteRuntime};

/// The data of the environment ConfigMap and Secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EnvMap {
    pub config_map: BTreeMap<String, String>,
    pub secret: BTreeMap<String, String>,
}

/// The name of the Secret that holds secret outputs.
pub fn secret_name(config: &Config) -> String {
    config
        .project
        .environment
        .secret
        .as_ref()
        .map(|s| s.name.clone())
        .unwrap_or_else(|| format!("{}-secrets", config.project.environment.config_map.name))
}

/// The namespace of the environment ConfigMap: the environment's own when it shares its
/// cluster (its Kustomizations, which read the ConfigMap, live there), else devenv.yaml's
/// (default: Flux's namespace).
pub fn namespace(config: &Config) -> String {
    if let Some(namespace) = config.environment_namespace() {
        return namespace;
    }
    config.project.environment.config_map.namespace.clone().unwrap_or_else(|| config.project.flux.namespace.clone())
}

/// The ConfigMap and Secret data for the environment, with each substitute's address as
/// pods reach it (the runtime's answer).
pub fn compute(config: &Config, state: &State, runtime: &dyn SubstituteRuntime) -> EnvMap {
    let mut map = EnvMap { config_map: config.profile.environment.clone(), secret: BTreeMap::new() };
    for service in &config.services {
        let remembered = state.services.get(&service.name).cloned().unwrap_or_default();
        fill(&mut map, service, &runtime.pod_values(&config.env, service, &remembered));
    }
    map
}

/// The same keys with each substitute's address as this machine reaches it (127.0.0.1 and the
/// remembered ports), for a service run outside the cluster. With `only`, just the keys that
/// service's outputs fill (not the profile's static keys). Services the state does not know yet
/// (added after the last `up`) are left out; the caller checks.
pub fn for_host(config: &Config, state: &State, runtime: &dyn SubstituteRuntime, only: Option<&str>) -> EnvMap {
    let mut map = EnvMap::default();
    if only.is_none() {
        map.config_map = config.profile.environment.clone();
    }
    for service in config.services.iter().filter(|s| only.is_none_or(|name| s.name == name)) {
        if let Some(remembered) = state.services.get(&service.name) {
            fill(&mut map, service, &runtime.host_values(&config.env, service, remembered));
        }
    }
    map
}

/// Adds the keys `service` maps to its outputs, rendered with `values`.
fn fill(map: &mut EnvMap, service: &crate::config::Service, values: &BTreeMap<String, String>) {
    let outputs = substitutes::render_outputs(service, values);
    for (key, output_name) in &service.keys {
        // Validation made sure every mapped output exists, per-resource ones included.
        let Some(output) = outputs.iter().find(|o| &o.name == output_name) else { continue };
        let target = if output.secret { &mut map.secret } else { &mut map.config_map };
        target.insert(key.clone(), output.value.clone());
    }
}

/// Every key the environment provides, for the substitution contract.
pub fn keys(map: &EnvMap) -> std::collections::BTreeSet<String> {
    map.config_map.keys().chain(map.secret.keys()).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Selection};

    #[test]
    fn outputs_fill_the_mapped_keys_with_pod_addresses_and_secrets_go_to_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let project = "project: shop\ndefaultProfile: standalone\nflux:\n  path: clusters/local\nenvironment:\n  configMap:\n    name: cluster-env\nservices:\n  - name: orders-db\n    kind: rds-mariadb\n    params:\n      database: orders\n    keys:\n      DB_HOST: host\n      DB_PORT: port\n      DB_NAME: database\n      DB_PASSWORD: password\n      DB_URL: url\n";
        std::fs::write(dir.path().join("devenv.yaml"), project).unwrap();
        let config =
            config::load(&Selection { repo: Some(dir.path().into()), ..Default::default() }, dir.path()).unwrap();
        let mut state = State::default();
        substitutes::resolve(&config, &mut state, &Default::default(), &Default::default()).unwrap();
        let password = state.services["orders-db"].secrets["password"].clone();

        let map = compute(&config, &state, &substitutes::runtime::DockerRuntime::default());
        assert_eq!(map.config_map["DB_HOST"], "devenv-shop-orders-db");
        assert_eq!(map.config_map["DB_PORT"], "3306", "the container port, not the host port");
        assert_eq!(map.config_map["DB_NAME"], "orders");
        assert_eq!(map.config_map["AWS_REGION"], "us-east-1", "the profile's static keys");
        assert_eq!(map.secret["DB_PASSWORD"], password);
        assert_eq!(map.secret["DB_URL"], format!("mysql://app:{password}@devenv-shop-orders-db:3306/orders"));
        assert!(!map.config_map.contains_key("DB_PASSWORD"));
        assert_eq!(secret_name(&config), "cluster-env-secrets");
        assert_eq!(namespace(&config), "flux-system");
        assert_eq!(keys(&map).len(), 7);

        let port = state.services["orders-db"].host_ports["sql"];
        let runtime = substitutes::runtime::DockerRuntime::default();
        let host = for_host(&config, &state, &runtime, None);
        assert_eq!(keys(&host), keys(&map), "the same keys as the ConfigMap and Secret");
        assert_eq!(host.config_map["DB_HOST"], "127.0.0.1");
        assert_eq!(host.config_map["DB_PORT"], port.to_string(), "the published port");
        assert_eq!(host.secret["DB_URL"], format!("mysql://app:{password}@127.0.0.1:{port}/orders"));
        let one = for_host(&config, &state, &runtime, Some("orders-db"));
        assert!(!one.config_map.contains_key("AWS_REGION"), "one service's keys only");
        assert_eq!(keys(&one).len(), 5);
    }
}

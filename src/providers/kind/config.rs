//! The kind cluster configuration devenv generates: one control-plane node, containerd told to
//! read registry hosts from `/etc/containerd/certs.d` (where devenv writes the local
//! registry's `hosts.toml`, as kind's local-registry guide does), the profile's node image,
//! and the user's own kind configuration merged in.

use serde_yaml::{Mapping, Value};

/// The containerd patch of kind's local-registry guide.
pub const CONTAINERD_CERTS_D: &str =
    "[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n";

/// Lists in a user's configuration that add to devenv's instead of replacing them.
const ADDED_LISTS: [&str; 2] = ["containerdConfigPatches", "kubeadmConfigPatches"];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Problem {
    #[error("is not a kind `Cluster` configuration (`kind: Cluster`, `apiVersion: kind.x-k8s.io/v1alpha4`)")]
    NotACluster,
    #[error("sets `name`; the cluster's name is the profile's `cluster.name`")]
    Name,
    #[error("`{0}` must be a list")]
    NotAList(String),
}

/// The node image: the profile's `cluster.image`, else `kindest/node:<kubernetesVersion>`,
/// else none (kind's own default for its release).
pub fn node_image(image: Option<&str>, kubernetes_version: Option<&str>) -> Option<String> {
    match (image, kubernetes_version) {
        (Some(image), _) => Some(image.to_string()),
        (None, Some(version)) => Some(format!("kindest/node:v{}", version.trim_start_matches('v'))),
        (None, None) => None,
    }
}

/// The configuration for `kind create cluster --config`.
pub fn generate(node_image: Option<&str>, user: Option<&Value>) -> Result<String, Problem> {
    let mut config = Mapping::new();
    config.insert("kind".into(), "Cluster".into());
    config.insert("apiVersion".into(), "kind.x-k8s.io/v1alpha4".into());
    let mut node = Mapping::new();
    node.insert("role".into(), "control-plane".into());
    config.insert("nodes".into(), Value::Sequence(vec![Value::Mapping(node)]));
    config.insert("containerdConfigPatches".into(), Value::Sequence(vec![CONTAINERD_CERTS_D.into()]));
    if let Some(user) = user {
        merge(&mut config, user)?;
    }
    if let (Some(image), Some(Value::Sequence(nodes))) = (node_image, config.get_mut("nodes")) {
        for node in nodes.iter_mut().filter_map(Value::as_mapping_mut) {
            node.entry("image".into()).or_insert_with(|| image.into());
        }
    }
    Ok(serde_yaml::to_string(&Value::Mapping(config)).expect("a mapping serialises"))
}

/// The user's keys win, except the config-patch lists, which are added after devenv's.
fn merge(config: &mut Mapping, user: &Value) -> Result<(), Problem> {
    let Some(user) = user.as_mapping() else { return Err(Problem::NotACluster) };
    let is = |key: &str, want: &str| user.get(key).and_then(Value::as_str).is_none_or(|v| v == want);
    if !is("kind", "Cluster") || !is("apiVersion", "kind.x-k8s.io/v1alpha4") {
        return Err(Problem::NotACluster);
    }
    if user.contains_key("name") {
        return Err(Problem::Name);
    }
    for (key, value) in user {
        let name = key.as_str().unwrap_or_default();
        if ADDED_LISTS.contains(&name) {
            let Value::Sequence(added) = value else { return Err(Problem::NotAList(name.to_string())) };
            let list = config.entry(key.clone()).or_insert_with(|| Value::Sequence(Vec::new()));
            if let Value::Sequence(list) = list {
                list.extend(added.iter().cloned());
            }
        } else {
            config.insert(key.clone(), value.clone());
        }
    }
    Ok(())
}

/// `hosts.toml` files for every node: each name the registry is known by (the host's
/// `localhost:PORT` and `127.0.0.1:PORT`, and its name on the kind network) leads containerd
/// to the registry container over plain HTTP.
pub fn registry_hosts(host_port: u16, in_network: &str) -> Vec<(String, Vec<u8>)> {
    let toml = format!("[host.\"http://{in_network}\"]\n  capabilities = [\"pull\", \"resolve\"]\n");
    [format!("localhost:{host_port}"), format!("127.0.0.1:{host_port}"), in_network.to_string()]
        .into_iter()
        .map(|name| (format!("etc/containerd/certs.d/{name}/hosts.toml"), toml.clone().into_bytes()))
        .collect()
}

/// KEP-1755's `kube-public/local-registry-hosting` ConfigMap, which tools read to find the
/// registry of a local cluster.
pub fn local_registry_hosting(host_port: u16, in_network: &str) -> serde_json::Value {
    let data = format!(
        "host: \"localhost:{host_port}\"\nhostFromContainerRuntime: \"{in_network}\"\nhostFromClusterNetwork: \"{in_network}\"\nhelp: \"https://kind.sigs.k8s.io/docs/user/local-registry/\"\n"
    );
    serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "local-registry-hosting", "namespace": "kube-public"},
        "data": {"localRegistryHosting.v1": data},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Value {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn the_generated_configuration_wires_certs_d_and_the_node_image() {
        let config = parse(&generate(Some("kindest/node:v1.36.3"), None).unwrap());
        assert_eq!(config["kind"], "Cluster");
        assert_eq!(config["nodes"][0]["role"], "control-plane");
        assert_eq!(config["nodes"][0]["image"], "kindest/node:v1.36.3");
        assert!(
            config["containerdConfigPatches"][0]
                .as_str()
                .unwrap()
                .contains("config_path = \"/etc/containerd/certs.d\"")
        );
        let without_image = parse(&generate(None, None).unwrap());
        assert!(without_image["nodes"][0].get("image").is_none(), "kind's default node image");
    }

    #[test]
    fn a_users_configuration_wins_but_adds_to_the_patches() {
        let user = parse(
            "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnetworking:\n  disableDefaultCNI: true\nnodes:\n  - role: control-plane\n  - role: worker\n    image: mine:1\ncontainerdConfigPatches:\n  - extra\nkubeadmConfigPatches:\n  - |\n    kind: KubeletConfiguration\n",
        );
        let config = parse(&generate(Some("node:1"), Some(&user)).unwrap());
        assert_eq!(config["networking"]["disableDefaultCNI"], true);
        assert_eq!(config["nodes"][0]["image"], "node:1", "nodes without an image get the profile's");
        assert_eq!(config["nodes"][1]["image"], "mine:1");
        let patches = config["containerdConfigPatches"].as_sequence().unwrap();
        assert_eq!(patches.len(), 2);
        assert_eq!(patches[1], "extra");
        assert_eq!(config["kubeadmConfigPatches"].as_sequence().unwrap().len(), 1);
    }

    #[test]
    fn configurations_that_are_not_kinds_or_set_the_name_are_refused() {
        assert_eq!(generate(None, Some(&parse("kind: Pod\n"))), Err(Problem::NotACluster));
        assert_eq!(generate(None, Some(&parse("name: other\n"))), Err(Problem::Name));
        assert_eq!(
            generate(None, Some(&parse("kubeadmConfigPatches: one\n"))),
            Err(Problem::NotAList("kubeadmConfigPatches".into()))
        );
        assert_eq!(generate(None, Some(&parse("- a\n"))), Err(Problem::NotACluster));
    }

    #[test]
    fn node_images_follow_the_profile() {
        assert_eq!(node_image(Some("mine:1"), Some("1.35.0")).as_deref(), Some("mine:1"));
        assert_eq!(node_image(None, Some("1.35.0")).as_deref(), Some("kindest/node:v1.35.0"));
        assert_eq!(node_image(None, Some("v1.35.0")).as_deref(), Some("kindest/node:v1.35.0"));
        assert_eq!(node_image(None, None), None);
    }

    #[test]
    fn every_name_of_the_registry_leads_to_its_network_address() {
        let files = registry_hosts(5001, "kind-devenv-shop-registry:5000");
        let names: Vec<&str> = files.iter().map(|(path, _)| path.as_str()).collect();
        assert_eq!(
            names,
            [
                "etc/containerd/certs.d/localhost:5001/hosts.toml",
                "etc/containerd/certs.d/127.0.0.1:5001/hosts.toml",
                "etc/containerd/certs.d/kind-devenv-shop-registry:5000/hosts.toml"
            ]
        );
        assert!(String::from_utf8_lossy(&files[0].1).contains("[host.\"http://kind-devenv-shop-registry:5000\"]"));
        let hosting = local_registry_hosting(5001, "kind-devenv-shop-registry:5000");
        assert!(hosting["data"]["localRegistryHosting.v1"].as_str().unwrap().contains("host: \"localhost:5001\""));
    }
}

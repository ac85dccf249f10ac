//! The k3d configuration devenv generates: a `Simple` config of `k3d.io/v1alpha5` (k3d v5.5
//! and newer) for `k3d cluster create --config`, with the registry k3d creates beside the
//! cluster and the k3s `registries.yaml` that leads every name of it to its container.
//!
//! `tests/fixtures/k3d/` holds k3d's own JSON schema of this format; the tests validate every
//! generated configuration against it.
//!
//! k3d expands `$VAR` and `${VAR}` anywhere in the file before reading it, so nothing devenv
//! writes contains a `$`.

use serde_json::{Value, json};

/// The configuration format: `k3d.io/v1alpha5`, kind `Simple`.
pub const API_VERSION: &str = "k3d.io/v1alpha5";
pub const KIND: &str = "Simple";
/// The port the registry listens on inside its container (k3d's `DefaultRegistryPort`).
pub const REGISTRY_PORT: u16 = 5000;
/// The longest cluster name k3d accepts (its `DefaultClusterNameMaxLength`).
pub const MAX_CLUSTER_NAME: usize = 32;
/// How long `k3d cluster create` may wait for the server before it gives up and rolls back.
pub const CREATE_TIMEOUT: &str = "300s";

/// What devenv asks of a k3d cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The cluster's name; k3d names its containers, network and context `k3d-<name>…`.
    pub cluster: String,
    /// The k3s image of the nodes; `None` leaves k3d's default for its release.
    pub image: Option<String>,
    /// The registry container's name, also its name on the cluster network.
    pub registry: String,
    /// The registry's port on 127.0.0.1.
    pub registry_port: u16,
    pub registry_image: String,
    /// A named Docker volume for the registry's data, so it survives `down` like kind's.
    pub registry_volume: String,
}

/// The k3s image: the profile's `cluster.image`, else `rancher/k3s:v<kubernetesVersion>-k3s1`
/// (a version that already names its k3s release, `1.33.1-k3s2`, is used as it is), else none.
pub fn k3s_image(image: Option<&str>, kubernetes_version: Option<&str>) -> Option<String> {
    match (image, kubernetes_version) {
        (Some(image), _) => Some(image.to_string()),
        (None, Some(version)) => {
            let version = version.trim_start_matches('v');
            let tag = if version.contains("-k3s") { version.to_string() } else { format!("{version}-k3s1") };
            Some(format!("rancher/k3s:v{tag}"))
        }
        (None, None) => None,
    }
}

/// The k3s `registries.yaml`: the names this machine pushes to (`localhost:PORT`,
/// `127.0.0.1:PORT`) and the registry's name on the cluster network all lead containerd to
/// the registry container, over plain HTTP (an `http://` endpoint). k3d adds mirrors of its own
/// for the registry's network name; these are merged with them.
pub fn registries_yaml(host_port: u16, in_network: &str) -> String {
    let mut text = String::from("mirrors:\n");
    for name in [format!("localhost:{host_port}"), format!("127.0.0.1:{host_port}"), in_network.to_string()] {
        text.push_str(&format!("  \"{name}\":\n    endpoint:\n      - http://{in_network}\n"));
    }
    text
}

/// The configuration for `k3d cluster create --config`, as a JSON value (written as YAML).
pub fn generate(spec: &Spec) -> Value {
    let in_network = format!("{}:{REGISTRY_PORT}", spec.registry);
    let mut config = json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": { "name": spec.cluster },
        // One server, no agents: the shape of a kind cluster's single control-plane node,
        // enough for one developer's copy of a platform.
        "servers": 1,
        "agents": 0,
        // k3d publishes the API server on 0.0.0.0 unless told otherwise; devenv publishes
        // nothing beyond 127.0.0.1.
        "kubeAPI": { "hostIP": "127.0.0.1" },
        "registries": {
            "create": {
                "name": spec.registry,
                "host": "127.0.0.1",
                "hostPort": spec.registry_port.to_string(),
                "image": spec.registry_image,
                "volumes": [format!("{}:/var/lib/registry", spec.registry_volume)],
            },
            "config": registries_yaml(spec.registry_port, &in_network),
        },
        "options": {
            "k3d": {
                // Wait for the server (k3d's default, stated so the command's meaning does
                // not hang on it), but not forever; a failed create is rolled back by k3d.
                "wait": true,
                "timeout": CREATE_TIMEOUT,
            },
            "k3s": {
                // k3s' defaults stay (CoreDNS, local-path storage for PersistentVolumeClaims,
                // metrics-server, ServiceLB for LoadBalancer Services), except Traefik: EKS
                // ships no ingress controller, the platform repository brings its own, and a
                // second one would claim its IngressClass and ports 80/443.
                "extraArgs": [
                    { "arg": "--disable=traefik", "nodeFilters": ["server:*"] },
                ],
            },
            "kubeconfig": {
                // The context `k3d-<cluster>` goes into the user's kubeconfig, as kind's
                // does, without becoming the current one.
                "updateDefaultKubeconfig": true,
                "switchCurrentContext": false,
            },
        },
    });
    if let Some(image) = &spec.image {
        config["image"] = json!(image);
    }
    config
}

/// The text of the configuration file.
pub fn to_yaml(config: &Value) -> String {
    serde_yaml::to_string(config).expect("a JSON value serialises as YAML")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// k3d's JSON schema of `k3d.io/v1alpha5`, from its Go module (see the fixture's README).
    const SCHEMA: &str =
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/k3d/v1alpha5-schema-v5.9.0.json"));

    fn spec(image: Option<&str>) -> Spec {
        Spec {
            cluster: "devenv-shop".into(),
            image: image.map(str::to_string),
            registry: "k3d-devenv-shop-registry".into(),
            registry_port: 5001,
            registry_image: "registry:3".into(),
            registry_volume: "k3d-devenv-shop-registry-data".into(),
        }
    }

    /// Every error k3d's schema finds, as `path: message`; k3d validates formats too.
    fn schema_errors(config: &Value) -> Vec<String> {
        let schema: Value = serde_json::from_str(SCHEMA).unwrap();
        let validator = jsonschema::draft7::options().should_validate_formats(true).build(&schema).unwrap();
        validator.iter_errors(config).map(|e| format!("{}: {e}", e.instance_path())).collect()
    }

    /// The file as k3d reads it: YAML, parsed back.
    fn as_k3d_reads_it(config: &Value) -> Value {
        serde_yaml::from_str(&to_yaml(config)).unwrap()
    }

    #[test]
    fn the_generated_configuration_is_valid_for_k3ds_schema() {
        for image in [None, Some("rancher/k3s:v1.33.1-k3s1")] {
            let config = as_k3d_reads_it(&generate(&spec(image)));
            assert_eq!(schema_errors(&config), Vec::<String>::new(), "{config:#}");
        }
    }

    #[test]
    fn the_schema_check_catches_what_k3d_would_refuse() {
        let mut config = generate(&spec(None));
        config["registries"]["create"]["hostPort"] = json!(5001);
        config["options"]["k3s"]["extraArgs"][0]["nodeFilter"] = json!("server:*");
        config["metadata"]["name"] = json!("not a hostname");
        config["kind"] = json!("Cluster");
        let errors = schema_errors(&config);
        assert_eq!(errors.len(), 4, "{errors:#?}");
        assert!(errors.iter().any(|e| e.starts_with("/registries/create/hostPort:")), "{errors:#?}");
        assert!(errors.iter().any(|e| e.starts_with("/options/k3s/extraArgs/0:")), "{errors:#?}");
        assert!(errors.iter().any(|e| e.starts_with("/metadata/name:")), "{errors:#?}");
        assert!(errors.iter().any(|e| e.starts_with("/kind:")), "{errors:#?}");
    }

    #[test]
    fn the_cluster_has_one_server_the_registry_and_the_profiles_image() {
        let config = as_k3d_reads_it(&generate(&spec(Some("rancher/k3s:v1.33.1-k3s1"))));
        assert_eq!(config["apiVersion"], "k3d.io/v1alpha5");
        assert_eq!(config["kind"], "Simple");
        assert_eq!(config["metadata"]["name"], "devenv-shop");
        assert_eq!((config["servers"].as_u64(), config["agents"].as_u64()), (Some(1), Some(0)));
        assert_eq!(config["image"], "rancher/k3s:v1.33.1-k3s1");
        assert_eq!(config["kubeAPI"]["hostIP"], "127.0.0.1");
        let create = &config["registries"]["create"];
        assert_eq!(create["name"], "k3d-devenv-shop-registry");
        assert_eq!(create["host"], "127.0.0.1");
        assert_eq!(create["hostPort"], "5001");
        assert_eq!(create["image"], "registry:3");
        assert_eq!(create["volumes"][0], "k3d-devenv-shop-registry-data:/var/lib/registry");
        assert_eq!(
            config["options"]["k3s"]["extraArgs"],
            json!([{"arg": "--disable=traefik", "nodeFilters": ["server:*"]}])
        );
        assert_eq!(config["options"]["kubeconfig"]["updateDefaultKubeconfig"], true);
        assert_eq!(config["options"]["kubeconfig"]["switchCurrentContext"], false);
        let without_image = generate(&spec(None));
        assert!(without_image.get("image").is_none(), "k3d's default k3s");
        assert!(!to_yaml(&without_image).contains('$'), "k3d would expand it");
    }

    #[test]
    fn every_name_of_the_registry_is_a_mirror_of_its_network_address() {
        let config = as_k3d_reads_it(&generate(&spec(None)));
        let registries: Value = serde_yaml::from_str(config["registries"]["config"].as_str().unwrap()).unwrap();
        let mirrors = registries["mirrors"].as_object().unwrap();
        let names: Vec<&str> = mirrors.keys().map(String::as_str).collect();
        assert_eq!(names.len(), 3);
        for name in ["localhost:5001", "127.0.0.1:5001", "k3d-devenv-shop-registry:5000"] {
            assert_eq!(mirrors[name]["endpoint"], json!(["http://k3d-devenv-shop-registry:5000"]), "{name}");
        }
    }

    #[test]
    fn k3s_images_follow_the_profile() {
        assert_eq!(k3s_image(Some("mine:1"), Some("1.33.1")).as_deref(), Some("mine:1"));
        assert_eq!(k3s_image(None, Some("1.33.1")).as_deref(), Some("rancher/k3s:v1.33.1-k3s1"));
        assert_eq!(k3s_image(None, Some("v1.33.1")).as_deref(), Some("rancher/k3s:v1.33.1-k3s1"));
        assert_eq!(k3s_image(None, Some("v1.33.1-k3s2")).as_deref(), Some("rancher/k3s:v1.33.1-k3s2"));
        assert_eq!(k3s_image(None, None), None);
    }
}

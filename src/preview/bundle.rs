//! The isolation bundle of a preview: its namespace, and in it a ResourceQuota, a LimitRange,
//! NetworkPolicies and the ServiceAccount its Flux objects impersonate, bound to `admin`.
//!
//! `admin` in a RoleBinding grants its rights in this namespace only, and leaves out
//! ResourceQuotas and LimitRanges (it reads them), so the repository's manifests, applied as
//! that account, cannot reach other namespaces nor lift the limits set here.

use serde_json::{Map, Value, json};

use super::{ANNOTATION_EXPIRES_AT, Preview, SERVICE_ACCOUNT, Settings};

/// The name of the ResourceQuota, the LimitRange and the RoleBinding.
pub const NAME: &str = "devenv-preview";
pub const DENY_INGRESS: &str = "devenv-deny-ingress";
pub const ALLOW_SAME_NAMESPACE: &str = "devenv-allow-same-namespace";
pub const ALLOW_INGRESS_CONTROLLER: &str = "devenv-allow-ingress-controller";
/// The ClusterRole the preview's ServiceAccount holds in its namespace.
pub const ROLE: &str = "admin";
/// The Role that adds Flux's kinds, which `admin` leaves out, for the preview's account.
pub const FLUX_ROLE: &str = "devenv-preview-flux";
/// The RoleBinding of `admin` to whoever runs `devenv preview up` (the CI identity), so it
/// can read what it made here (Secrets, pods, events) and nowhere else.
pub const RUNNER_BINDING: &str = "devenv-preview-runner";
/// Flux's API groups and the kinds of each a preview's objects are.
pub const FLUX_RESOURCES: [(&str, &[&str]); 3] = [
    ("source.toolkit.fluxcd.io", &["ocirepositories", "gitrepositories", "helmrepositories", "helmcharts", "buckets"]),
    ("kustomize.toolkit.fluxcd.io", &["kustomizations"]),
    ("helm.toolkit.fluxcd.io", &["helmreleases"]),
];
/// Every verb the preview's account and its runner use on Flux's kinds.
pub const FLUX_VERBS: [&str; 7] = ["get", "list", "watch", "create", "patch", "update", "delete"];
/// Set by the API server on every namespace (Kubernetes 1.22+): selects a namespace by name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Every object of the preview, the namespace first: the order to apply them in.
pub fn objects(preview: &Preview, settings: &Settings) -> Vec<Value> {
    let mut objects = vec![namespace(preview)];
    objects.extend(resource_quota(preview, settings));
    objects.push(limit_range(preview, settings));
    objects.extend(network_policies(preview, settings));
    objects.push(service_account(preview));
    objects.push(role_binding(preview));
    objects.push(flux_role(preview));
    objects.push(flux_role_binding(preview));
    objects
}

pub fn namespace(preview: &Preview) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": preview.namespace,
            "labels": labels(&preview.labels()),
            "annotations": {ANNOTATION_EXPIRES_AT: preview.expires_at},
        },
    })
}

/// The profile's `quota` as hard limits on the sum of requests and of limits; none when the
/// profile sets no quota.
pub fn resource_quota(preview: &Preview, settings: &Settings) -> Option<Value> {
    let quota = &settings.quota;
    let mut hard = Map::new();
    if let Some(cpu) = &quota.cpu {
        hard.insert("requests.cpu".into(), cpu.as_str().into());
        hard.insert("limits.cpu".into(), cpu.as_str().into());
    }
    if let Some(memory) = &quota.memory {
        hard.insert("requests.memory".into(), memory.as_str().into());
        hard.insert("limits.memory".into(), memory.as_str().into());
    }
    if let Some(pods) = quota.pods {
        hard.insert("pods".into(), pods.to_string().into());
    }
    if hard.is_empty() {
        return None;
    }
    Some(json!({
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": metadata(preview, NAME),
        "spec": {"hard": hard},
    }))
}

/// Defaults for a container that sets no resources; with a cpu or memory quota, the API
/// server would otherwise refuse such a pod.
pub fn limit_range(preview: &Preview, settings: &Settings) -> Value {
    let limits = &settings.limits;
    json!({
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": metadata(preview, NAME),
        "spec": {"limits": [{
            "type": "Container",
            "default": {"cpu": limits.cpu, "memory": limits.memory},
            "defaultRequest": {"cpu": limits.request_cpu, "memory": limits.request_memory},
        }]},
    })
}

/// Ingress is denied, except from pods of the namespace itself and, when the profile names
/// it, of the ingress controller's namespace. Egress is left open: previews reach shared
/// services and the internet like any workload.
pub fn network_policies(preview: &Preview, settings: &Settings) -> Vec<Value> {
    let policy = |name: &str, ingress: Value| {
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": metadata(preview, name),
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": ingress},
        })
    };
    let mut policies =
        vec![policy(DENY_INGRESS, json!([])), policy(ALLOW_SAME_NAMESPACE, json!([{"from": [{"podSelector": {}}]}]))];
    if let Some(namespace) = &settings.ingress_namespace {
        let from = json!([{"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: namespace}}}]);
        policies.push(policy(ALLOW_INGRESS_CONTROLLER, json!([{"from": from}])));
    }
    policies
}

pub fn service_account(preview: &Preview) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(preview, SERVICE_ACCOUNT),
    })
}

pub fn role_binding(preview: &Preview) -> Value {
    account_binding(preview, NAME, "ClusterRole", ROLE)
}

/// A RoleBinding named `name` of the role `kind`/`role` to the preview's ServiceAccount.
fn account_binding(preview: &Preview, name: &str, kind: &str, role: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": metadata(preview, name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": preview.namespace}],
    })
}

/// `admin` leaves Flux's kinds out; the root Kustomization, acting as the preview's account,
/// applies the repository's Kustomizations, HelmReleases and sources.
pub fn flux_role(preview: &Preview) -> Value {
    let rules: Vec<Value> = (FLUX_RESOURCES.iter())
        .map(|(group, resources)| json!({"apiGroups": [group], "resources": resources, "verbs": FLUX_VERBS}))
        .collect();
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": metadata(preview, FLUX_ROLE),
        "rules": rules,
    })
}

pub fn flux_role_binding(preview: &Preview) -> Value {
    account_binding(preview, FLUX_ROLE, "Role", FLUX_ROLE)
}

/// `admin` in the preview's namespace for the identity running devenv (`username` as the
/// API server reports it), which may hold less than that cluster-wide.
pub fn runner_binding(preview: &Preview, username: &str) -> Value {
    let subject = match username.strip_prefix("system:serviceaccount:").and_then(|rest| rest.split_once(':')) {
        Some((namespace, name)) => json!({"kind": "ServiceAccount", "name": name, "namespace": namespace}),
        None => json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": username}),
    };
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": metadata(preview, RUNNER_BINDING),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": ROLE},
        "subjects": [subject],
    })
}

/// The user name the API server gives the preview's ServiceAccount.
pub fn service_account_user(preview: &Preview) -> String {
    format!("system:serviceaccount:{}:{SERVICE_ACCOUNT}", preview.namespace)
}

fn metadata(preview: &Preview, name: &str) -> Value {
    json!({"name": name, "namespace": preview.namespace, "labels": labels(&preview.object_labels())})
}

fn labels(pairs: &[(&str, String)]) -> Value {
    pairs.iter().map(|(key, value)| (key.to_string(), Value::from(value.as_str()))).collect::<Map<_, _>>().into()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::preview::{ContainerDefaults, Quota};

    fn preview() -> Preview {
        let now = "2026-11-30T20:00:00Z".parse().unwrap();
        Preview::new(7, "shop", Some("0123abcd"), now, Duration::from_secs(3600)).unwrap()
    }

    fn settings(quota: Quota, ingress: Option<&str>) -> Settings {
        Settings {
            quota,
            limits: ContainerDefaults {
                cpu: "500m".into(),
                memory: "512Mi".into(),
                request_cpu: "100m".into(),
                request_memory: "128Mi".into(),
            },
            ingress_namespace: ingress.map(str::to_string),
            ttl: Duration::from_secs(3600),
        }
    }

    fn ids(objects: &[Value]) -> Vec<String> {
        objects.iter().map(crate::kube::describe).collect()
    }

    #[test]
    fn the_bundle_is_the_namespace_then_its_objects() {
        let quota = Quota { cpu: Some("4".into()), memory: Some("8Gi".into()), pods: Some(50) };
        let objects = objects(&preview(), &settings(quota, Some("ingress-nginx")));
        assert_eq!(
            ids(&objects),
            [
                "Namespace/pr-7-shop",
                "ResourceQuota/pr-7-shop/devenv-preview",
                "LimitRange/pr-7-shop/devenv-preview",
                "NetworkPolicy/pr-7-shop/devenv-deny-ingress",
                "NetworkPolicy/pr-7-shop/devenv-allow-same-namespace",
                "NetworkPolicy/pr-7-shop/devenv-allow-ingress-controller",
                "ServiceAccount/pr-7-shop/devenv-preview",
                "RoleBinding/pr-7-shop/devenv-preview",
                "Role/pr-7-shop/devenv-preview-flux",
                "RoleBinding/pr-7-shop/devenv-preview-flux",
            ]
        );
        let namespace = &objects[0]["metadata"];
        assert_eq!(
            namespace["labels"],
            json!({
                "app.kubernetes.io/managed-by": "devenv",
                "devenv.io/project": "shop",
                "devenv.io/pr": "7",
                "devenv.io/sha": "0123abcd",
            })
        );
        assert_eq!(namespace["annotations"]["devenv.io/expires-at"], "2026-11-30T21:00:00Z");
        for object in &objects[1..] {
            assert_eq!(object["metadata"]["labels"]["app.kubernetes.io/managed-by"], "devenv", "{object}");
            assert_eq!(object["metadata"]["labels"]["devenv.io/pr"], "7", "{object}");
        }
        assert_eq!(
            objects[1]["spec"]["hard"],
            json!({"requests.cpu": "4", "limits.cpu": "4", "requests.memory": "8Gi", "limits.memory": "8Gi", "pods": "50"})
        );
        assert_eq!(
            objects[2]["spec"]["limits"][0],
            json!({
                "type": "Container",
                "default": {"cpu": "500m", "memory": "512Mi"},
                "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
            })
        );
        assert_eq!(
            objects[7]["subjects"],
            json!([{"kind": "ServiceAccount", "name": "devenv-preview", "namespace": "pr-7-shop"}])
        );
        assert_eq!(objects[7]["roleRef"]["name"], "admin");
        assert_eq!(service_account_user(&preview()), "system:serviceaccount:pr-7-shop:devenv-preview");
    }

    #[test]
    fn network_policies_deny_ingress_but_from_the_namespace_and_the_ingress_controller() {
        let policies = network_policies(
            &preview(),
            &settings(Quota { cpu: None, memory: None, pods: None }, Some("ingress-nginx")),
        );
        for policy in &policies {
            assert_eq!(policy["spec"]["podSelector"], json!({}), "every pod of the namespace");
            assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]), "egress stays open");
        }
        assert_eq!(policies[0]["spec"]["ingress"], json!([]), "no rule: nothing may come in");
        assert_eq!(policies[1]["spec"]["ingress"], json!([{"from": [{"podSelector": {}}]}]));
        assert_eq!(
            policies[2]["spec"]["ingress"],
            json!([{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]}])
        );
    }

    #[test]
    fn without_quota_or_ingress_namespace_those_objects_are_left_out() {
        let objects = objects(&preview(), &settings(Quota { cpu: None, memory: None, pods: None }, None));
        let kinds: Vec<&str> = objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "LimitRange",
                "NetworkPolicy",
                "NetworkPolicy",
                "ServiceAccount",
                "RoleBinding",
                "Role",
                "RoleBinding"
            ]
        );
        let only_pods = resource_quota(&preview(), &settings(Quota { cpu: None, memory: None, pods: Some(2) }, None));
        assert_eq!(only_pods.unwrap()["spec"]["hard"], json!({"pods": "2"}));
    }

    #[test]
    fn the_runner_holds_admin_in_the_namespace_as_user_or_service_account() {
        let user = runner_binding(&preview(), "devenv-ci");
        assert_eq!(
            user["subjects"][0],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "devenv-ci"})
        );
        assert_eq!(user["roleRef"]["name"], ROLE);
        assert_eq!(user["metadata"]["namespace"], "pr-7-shop");
        let account = runner_binding(&preview(), "system:serviceaccount:ci:deployer");
        assert_eq!(account["subjects"][0], json!({"kind": "ServiceAccount", "name": "deployer", "namespace": "ci"}));
    }
}

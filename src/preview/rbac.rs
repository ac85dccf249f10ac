//! What the CI identity that runs `devenv preview` needs in the shared cluster, and no more.
//!
//! RBAC cannot grant rights in "namespaces named `pr-*`", so a ClusterRole gives the identity
//! the namespaced rights it needs everywhere, and a ValidatingAdmissionPolicy denies it every
//! write outside the preview namespaces devenv made. Admission sees writes only: reads cannot
//! be limited that way, so the role reads no Secrets and nothing previews do not need.

use serde_json::{Value, json};

use super::NAMESPACE_PREFIX;
use super::bundle::{FLUX_RESOURCES, FLUX_VERBS, ROLE};
use crate::naming::{self, LABEL_MANAGED_BY, MANAGED_BY};

/// The ClusterRole every CI identity shares.
pub const CLUSTER_ROLE: &str = "devenv-preview-ci";

const RBAC: &str = "rbac.authorization.k8s.io";
const WRITE: [&str; 4] = ["create", "patch", "update", "delete"];
const READ: [&str; 3] = ["get", "list", "watch"];

/// Who runs `devenv preview` from CI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    User(String),
    Group(String),
    ServiceAccount { namespace: String, name: String },
}

impl Subject {
    /// `NAMESPACE/NAME`, as `--service-account` takes it.
    pub fn service_account(text: &str) -> Result<Subject, String> {
        let Some((namespace, name)) = text.split_once('/') else {
            return Err(format!("`{text}` is not NAMESPACE/NAME"));
        };
        naming::check_label(namespace, naming::MAX_OBJECT_LEN)
            .map_err(|reason| format!("namespace `{namespace}` {reason}"))?;
        check_subdomain(name).map_err(|reason| format!("service account name `{name}` {reason}"))?;
        Ok(Subject::ServiceAccount { namespace: namespace.to_string(), name: name.to_string() })
    }

    /// How the API server names the identity in `request.userInfo`.
    pub fn describe(&self) -> String {
        match self {
            Subject::User(name) => format!("user {name}"),
            Subject::Group(name) => format!("group {name}"),
            Subject::ServiceAccount { namespace, name } => format!("service account {namespace}/{name}"),
        }
    }

    fn binding_subject(&self) -> Value {
        match self {
            Subject::User(name) => json!({"apiGroup": RBAC, "kind": "User", "name": name}),
            Subject::Group(name) => json!({"apiGroup": RBAC, "kind": "Group", "name": name}),
            Subject::ServiceAccount { namespace, name } => {
                json!({"kind": "ServiceAccount", "name": name, "namespace": namespace})
            }
        }
    }

    /// A CEL expression true for requests of this identity.
    fn cel_match(&self) -> String {
        match self {
            Subject::User(name) => format!("request.userInfo.username == {}", cel_string(name)),
            Subject::Group(name) => format!("{} in request.userInfo.groups", cel_string(name)),
            Subject::ServiceAccount { namespace, name } => {
                format!(
                    "request.userInfo.username == {}",
                    cel_string(&format!("system:serviceaccount:{namespace}:{name}"))
                )
            }
        }
    }

    /// The name of this identity's binding and policy: `devenv-preview-ci-user-devenv-ci`.
    pub fn object_name(&self) -> String {
        let (kind, name) = match self {
            Subject::User(name) => ("user", name.clone()),
            Subject::Group(name) => ("group", name.clone()),
            Subject::ServiceAccount { namespace, name } => ("sa", format!("{namespace}-{name}")),
        };
        format!("{CLUSTER_ROLE}-{kind}-{}", naming::sanitize(&name, naming::MAX_OBJECT_LEN))
    }
}

/// The ClusterRole, its ClusterRoleBinding to `subject`, and the admission policy and its
/// binding that keep the subject's writes inside devenv's `pr-*` namespaces.
pub fn objects(subject: &Subject) -> Vec<Value> {
    vec![cluster_role(), cluster_role_binding(subject), policy(subject), policy_binding(subject)]
}

pub fn cluster_role() -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": CLUSTER_ROLE, "labels": {LABEL_MANAGED_BY: MANAGED_BY}},
        "rules": rules(),
    })
}

/// Namespaced rights, which the admission policy fences into `pr-*`; in each preview the
/// identity also holds `admin` (`bundle::runner_binding`), which reads what it made there.
fn rules() -> Vec<Value> {
    let write_and_read: Vec<&str> = READ.iter().chain(WRITE.iter()).copied().collect();
    let rule = |groups: &[&str], resources: &[&str], verbs: &[&str]| json!({"apiGroups": groups, "resources": resources, "verbs": verbs});
    let mut rules = vec![
        // `preview list` and `gc` read the namespaces' labels and expiry.
        rule(&[""], &["namespaces"], &["get", "list", "watch", "create", "patch", "delete"]),
        // The bundle, the environment ConfigMap and substitutes as StatefulSets.
        rule(
            &[""],
            &["configmaps", "services", "persistentvolumeclaims", "serviceaccounts", "resourcequotas", "limitranges"],
            &write_and_read,
        ),
        rule(&[""], &["secrets"], &WRITE),
        rule(&["apps"], &["statefulsets"], &write_and_read),
        rule(&["networking.k8s.io"], &["networkpolicies"], &write_and_read),
        rule(&["coordination.k8s.io"], &["leases"], &write_and_read),
        rule(&[RBAC], &["roles", "rolebindings"], &write_and_read),
        // A RoleBinding to `admin` needs `bind` on it (or all of admin's rights).
        json!({"apiGroups": [RBAC], "resources": ["clusterroles"], "verbs": ["bind"], "resourceNames": [ROLE]}),
        // Whether the cluster's nodes run pods decides how manifests are adapted.
        rule(&[""], &["nodes"], &["list"]),
    ];
    // Flux's kinds: the preview's objects, and the Role that lets its account apply them.
    rules.extend(FLUX_RESOURCES.iter().map(|(group, resources)| rule(&[group], resources, &FLUX_VERBS)));
    rules
}

pub fn cluster_role_binding(subject: &Subject) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": subject.object_name(), "labels": {LABEL_MANAGED_BY: MANAGED_BY}},
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": CLUSTER_ROLE},
        "subjects": [subject.binding_subject()],
    })
}

/// Denies the subject any write outside the `pr-*` namespaces devenv labelled as its own,
/// and any change to a namespace that is not one of them.
pub fn policy(subject: &Subject) -> Value {
    let who = subject.describe();
    let managed = |object: &str| {
        format!(
            "has({object}.metadata.labels) && '{LABEL_MANAGED_BY}' in {object}.metadata.labels && {object}.metadata.labels['{LABEL_MANAGED_BY}'] == '{MANAGED_BY}'"
        )
    };
    let validation = |expression: String, message: String| json!({"expression": expression, "message": message, "reason": "Forbidden"});
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": subject.object_name(), "labels": {LABEL_MANAGED_BY: MANAGED_BY}},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["*"],
                "apiVersions": ["*"],
                "operations": ["CREATE", "UPDATE", "DELETE"],
                // Every resource and subresource (status, scale …).
                "resources": ["*/*"],
            }]},
            "matchConditions": [{"name": "subject", "expression": subject.cel_match()}],
            "variables": [
                {"name": "isNamespace", "expression": "request.resource.group == '' && request.resource.resource == 'namespaces'"},
                {"name": "inPreview", "expression": format!("request.namespace.startsWith('{NAMESPACE_PREFIX}')")},
            ],
            "validations": [
                validation(
                    format!("variables.isNamespace || (variables.inPreview && namespaceObject != null && {})", managed("namespaceObject")),
                    format!("{who} may change objects only in namespaces named {NAMESPACE_PREFIX}* that devenv made"),
                ),
                validation(
                    format!("!variables.isNamespace || request.name.startsWith('{NAMESPACE_PREFIX}')"),
                    format!("{who} may create, change or delete only namespaces named {NAMESPACE_PREFIX}*"),
                ),
                validation(
                    format!("!variables.isNamespace || request.operation == 'DELETE' || ({})", managed("object")),
                    format!("a namespace {who} creates or changes must be labelled {LABEL_MANAGED_BY}={MANAGED_BY}"),
                ),
                validation(
                    format!("!variables.isNamespace || request.operation == 'CREATE' || ({})", managed("oldObject")),
                    format!("{who} may change or delete only namespaces devenv made (labelled {LABEL_MANAGED_BY}={MANAGED_BY})"),
                ),
            ],
        },
    })
}

pub fn policy_binding(subject: &Subject) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": subject.object_name(), "labels": {LABEL_MANAGED_BY: MANAGED_BY}},
        "spec": {"policyName": subject.object_name(), "validationActions": ["Deny"]},
    })
}

/// The objects as multi-document YAML, for `kubectl apply -f -`.
pub fn to_yaml(subject: &Subject, objects: &[Value]) -> String {
    let mut text = format!(
        "# What {} needs to run `devenv preview`; apply as a cluster admin: kubectl apply -f -\n",
        subject.describe()
    );
    for object in objects {
        text.push_str("---\n");
        text.push_str(&serde_yaml::to_string(object).expect("JSON values serialise as YAML"));
    }
    text
}

/// A CEL string literal (names may hold `:`, `@`, quotes …).
fn cel_string(value: &str) -> String {
    serde_json::to_string(value).expect("a string serialises")
}

/// A DNS-1123 subdomain: labels joined by `.`, at most 253 characters.
fn check_subdomain(value: &str) -> Result<(), String> {
    if value.len() > 253 {
        return Err("is longer than 253 characters".to_string());
    }
    value.split('.').try_for_each(|label| naming::check_label(label, naming::MAX_OBJECT_LEN))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[test]
    fn service_accounts_are_namespace_slash_name() {
        assert_eq!(
            Subject::service_account("ci/deployer"),
            Ok(Subject::ServiceAccount { namespace: "ci".into(), name: "deployer".into() })
        );
        assert_eq!(Subject::service_account("deployer").unwrap_err(), "`deployer` is not NAMESPACE/NAME");
        assert_eq!(Subject::service_account("CI/deployer").unwrap_err(), "namespace `CI` contains `C`");
        assert_eq!(Subject::service_account("ci/").unwrap_err(), "service account name `` is empty");
        assert_eq!(Subject::service_account("ci/a/b").unwrap_err(), "service account name `a/b` contains `/`");
    }

    #[test]
    fn the_policy_matches_the_subject_and_keeps_it_in_preview_namespaces() {
        let subject = Subject::User("devenv-ci".into());
        let objects = objects(&subject);
        let ids: Vec<String> = objects.iter().map(crate::kube::describe).collect();
        assert_eq!(
            ids,
            [
                "ClusterRole/devenv-preview-ci",
                "ClusterRoleBinding/devenv-preview-ci-user-devenv-ci",
                "ValidatingAdmissionPolicy/devenv-preview-ci-user-devenv-ci",
                "ValidatingAdmissionPolicyBinding/devenv-preview-ci-user-devenv-ci",
            ]
        );
        assert_eq!(objects[1]["subjects"], json!([{"apiGroup": RBAC, "kind": "User", "name": "devenv-ci"}]));
        let spec = &objects[2]["spec"];
        assert_eq!(spec["matchConditions"][0]["expression"], "request.userInfo.username == \"devenv-ci\"");
        assert_eq!(spec["matchConstraints"]["resourceRules"][0]["operations"], json!(["CREATE", "UPDATE", "DELETE"]));
        assert_eq!(objects[3]["spec"]["policyName"], "devenv-preview-ci-user-devenv-ci");
        assert_eq!(objects[3]["spec"]["validationActions"], json!(["Deny"]));

        let group = Subject::Group("ci:deployers".into());
        assert_eq!(
            policy(&group)["spec"]["matchConditions"][0]["expression"],
            "\"ci:deployers\" in request.userInfo.groups"
        );
        let account = Subject::ServiceAccount { namespace: "ci".into(), name: "deployer".into() };
        assert_eq!(
            policy(&account)["spec"]["matchConditions"][0]["expression"],
            "request.userInfo.username == \"system:serviceaccount:ci:deployer\""
        );
        assert_eq!(
            cluster_role_binding(&account)["subjects"][0],
            json!({"kind": "ServiceAccount", "name": "deployer", "namespace": "ci"})
        );
    }

    #[test]
    fn the_role_reads_no_secrets_and_binds_only_admin() {
        let role = cluster_role();
        let rules = role["rules"].as_array().unwrap();
        let secrets = rules.iter().find(|r| r["resources"] == json!(["secrets"])).unwrap();
        assert_eq!(secrets["verbs"], json!(["create", "patch", "update", "delete"]));
        let bind: Vec<&Value> =
            rules.iter().filter(|r| r["verbs"].as_array().unwrap().contains(&json!("bind"))).collect();
        assert_eq!(
            bind,
            [
                &json!({"apiGroups": [RBAC], "resources": ["clusterroles"], "verbs": ["bind"], "resourceNames": ["admin"]})
            ]
        );
        assert!(rules.iter().all(|r| !r["verbs"].as_array().unwrap().contains(&json!("*"))), "no wildcard verbs");
        assert!(rules.iter().all(|r| !r["resources"].as_array().unwrap().contains(&json!("clusterrolebindings"))));
    }

    #[test]
    fn yaml_is_one_document_per_object() {
        let subject = Subject::User("devenv-ci".into());
        let text = to_yaml(&subject, &objects(&subject));
        assert!(text.starts_with("# What user devenv-ci needs"), "{text}");
        let documents: Vec<Value> =
            serde_yaml::Deserializer::from_str(&text).map(|document| Value::deserialize(document).unwrap()).collect();
        assert_eq!(documents, objects(&subject));
    }
}

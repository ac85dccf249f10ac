//! The entries of `overlay.disable`: a Flux object (`name`, `namespace/name`), which the
//! overlay removes from its file, or anything a Kustomization applies (`Kind/namespace/name`),
//! removed by a delete patch on that Kustomization. `pack` adds the patches; `checks::disable`
//! reports the entries that match nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml::{Mapping, Value};

use super::documents;
use super::files::is_yaml;

/// An entry of `overlay.disable`, as the overlay and the checks read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// `name` or `namespace/name`: a Flux object, removed from its file by the overlay.
    Flux { namespace: Option<String>, name: String },
    /// `Kind/namespace/name`, or `Kind/name` for any namespace (cluster-scoped objects):
    /// anything a Kustomization applies, removed by a delete patch on that Kustomization.
    /// Kinds start with a capital letter, namespaces never do.
    Applied { kind: String, namespace: Option<String>, name: String },
}

impl Entry {
    pub fn parse(text: &str) -> Entry {
        let parts: Vec<&str> = text.split('/').collect();
        let is_kind = parts[0].starts_with(|c: char| c.is_ascii_uppercase());
        match (parts.as_slice(), is_kind) {
            ([kind, namespace, name], _) => Entry::Applied {
                kind: kind.to_string(),
                namespace: Some(namespace.to_string()),
                name: name.to_string(),
            },
            ([kind, name], true) => Entry::Applied { kind: kind.to_string(), namespace: None, name: name.to_string() },
            ([namespace, name], false) => {
                Entry::Flux { namespace: Some(namespace.to_string()), name: name.to_string() }
            }
            _ => Entry::Flux { namespace: None, name: text.to_string() },
        }
    }

    /// Whether it names the object `Kind/namespace/name` (`Kind/name` when it has no namespace).
    pub fn matches(&self, object: &str, flux: bool) -> bool {
        let parts: Vec<&str> = object.split('/').collect();
        let (kind, namespace, name) = match parts.as_slice() {
            [kind, namespace, name] => (*kind, Some(*namespace), *name),
            [kind, name] => (*kind, None, *name),
            _ => return false,
        };
        match self {
            Entry::Flux { namespace: wanted, name: wanted_name } => {
                flux && wanted_name == name && wanted.as_deref().is_none_or(|w| Some(w) == namespace)
            }
            Entry::Applied { kind: wanted_kind, namespace: wanted, name: wanted_name } => {
                wanted_kind == kind && wanted_name == name && wanted.as_deref().is_none_or(|w| Some(w) == namespace)
            }
        }
    }
}

/// Delete patches for the objects the `Kind/…` entries of `overlay.disable` name, by the
/// Kustomization (`namespace/name`) whose files (`applying`) hold them: `(object, patch)`.
/// Flux objects are left to the overlay, which removes them from their files.
pub fn deletions(
    disable: &[String],
    applying: &[(&str, &BTreeSet<String>)],
    read: &dyn Fn(&str) -> Option<String>,
) -> BTreeMap<String, Vec<(String, Value)>> {
    let entries: Vec<Entry> =
        disable.iter().map(|d| Entry::parse(d)).filter(|e| matches!(e, Entry::Applied { .. })).collect();
    let mut result: BTreeMap<String, Vec<(String, Value)>> = BTreeMap::new();
    if entries.is_empty() {
        return result;
    }
    for (kustomization, files) in applying {
        for file in files.iter().filter(|f| is_yaml(f) && !is_kustomization_file(f)) {
            let Some(text) = read(file) else { continue };
            for document in documents::parse(&text) {
                let Some(key) = document.object() else { continue };
                let api_version = document.value.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
                if is_flux(api_version) || !entries.iter().any(|e| e.matches(&key, false)) {
                    continue;
                }
                let patches = result.entry(kustomization.to_string()).or_default();
                if !patches.iter().any(|(object, _)| object == &key) {
                    patches.push((key.clone(), delete_patch(&key, api_version)));
                }
            }
        }
    }
    result
}

/// A Kustomize patch that deletes one object: a strategic-merge `$patch: delete` with a target.
fn delete_patch(key: &str, api_version: &str) -> Value {
    let parts: Vec<&str> = key.split('/').collect();
    let (kind, namespace, name) = match parts.as_slice() {
        [kind, namespace, name] => (*kind, Some(*namespace), *name),
        [kind, name] => (*kind, None, *name),
        _ => unreachable!("an object key has two or three parts"),
    };
    let mut target = Mapping::from_iter([("kind".into(), kind.into()), ("name".into(), name.into())]);
    let mut metadata = format!("  name: {name}\n");
    if let Some(namespace) = namespace {
        target.insert("namespace".into(), namespace.into());
        metadata.push_str(&format!("  namespace: {namespace}\n"));
    }
    let patch = format!("$patch: delete\napiVersion: {api_version}\nkind: {kind}\nmetadata:\n{metadata}");
    Value::Mapping(Mapping::from_iter([("target".into(), Value::Mapping(target)), ("patch".into(), patch.into())]))
}

/// Whether a file is a kustomization file rather than a manifest.
pub fn is_kustomization_file(file: &str) -> bool {
    let name = file.rsplit('/').next().unwrap_or(file);
    matches!(name, "kustomization.yaml" | "kustomization.yml" | "Kustomization")
}

/// Whether an `apiVersion` is one of Flux's, which the overlay removes itself.
pub fn is_flux(api_version: &str) -> bool {
    api_version.contains(".toolkit.fluxcd.io/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_applied_object_named_by_kind_is_deleted_by_the_kustomization_that_applies_it() {
        let files: BTreeMap<&str, &str> = BTreeMap::from([
            ("infrastructure/platform/kustomization.yaml", "resources: [ingressclass.yaml, irsa.yaml]\n"),
            (
                "infrastructure/platform/ingressclass.yaml",
                "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: alb\n",
            ),
            (
                "infrastructure/platform/irsa.yaml",
                "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: search\n  namespace: lending\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: keep\n  namespace: lending\n",
            ),
        ]);
        let platform: BTreeSet<String> = files.keys().map(|f| f.to_string()).collect();
        let disable = ["IngressClass/alb".to_string(), "ServiceAccount/lending/search".to_string(), "apps".to_string()];
        let read = |file: &str| files.get(file).map(|t| t.to_string());
        let found = deletions(&disable, &[("flux-system/platform", &platform)], &read);
        let objects: Vec<&str> = found["flux-system/platform"].iter().map(|(o, _)| o.as_str()).collect();
        assert_eq!(objects, ["IngressClass/alb", "ServiceAccount/lending/search"]);
        let patch = &found["flux-system/platform"][1].1;
        assert_eq!(
            serde_yaml::to_string(patch).unwrap(),
            "target:\n  kind: ServiceAccount\n  name: search\n  namespace: lending\npatch: |\n  $patch: delete\n  apiVersion: v1\n  kind: ServiceAccount\n  metadata:\n    name: search\n    namespace: lending\n"
        );
    }

    #[test]
    fn entries_parse_by_their_shape() {
        assert_eq!(Entry::parse("apps"), Entry::Flux { namespace: None, name: "apps".into() });
        assert_eq!(Entry::parse("team-a/apps"), Entry::Flux { namespace: Some("team-a".into()), name: "apps".into() });
        assert_eq!(
            Entry::parse("IngressClass/alb"),
            Entry::Applied { kind: "IngressClass".into(), namespace: None, name: "alb".into() }
        );
        assert!(Entry::parse("Deployment/lending/search").matches("Deployment/lending/search", false));
        assert!(!Entry::parse("apps").matches("Deployment/lending/apps", false), "a bare name is a Flux object");
    }
}

//! The local overlay: a rewrite of the repository's Flux objects inside the packed artifact.
//!
//! The user's files are never edited, and app manifests are never rewritten: only Flux
//! Kustomizations, HelmReleases and sources are, so Flux still does every kustomize build,
//! substitution and Helm render. Rewriting files (rather than patching the root
//! Kustomization) reaches Kustomizations at every depth.

use std::collections::BTreeSet;

use serde_yaml::{Mapping, Value};

/// The name of the OCIRepository that serves the packed working tree.
pub const SOURCE_NAME: &str = "devenv-source";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot parse YAML document {document}")]
    Parse {
        document: usize,
        #[source]
        source: serde_yaml::Error,
    },
}

/// A Flux object reference such as `GitRepository/flux-system`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRef {
    pub kind: String,
    pub name: String,
}

impl SourceRef {
    /// Parses `Kind/name`.
    pub fn parse(text: &str) -> Option<Self> {
        let (kind, name) = text.split_once('/')?;
        (!kind.is_empty() && !name.is_empty() && !name.contains('/'))
            .then(|| SourceRef { kind: kind.to_string(), name: name.to_string() })
    }
}

/// What the overlay does, from devenv.yaml.
#[derive(Debug, Clone)]
pub struct Settings {
    pub flux_namespace: String,
    /// The repository's own source, re-pointed at the artifact.
    pub own_source: SourceRef,
    pub config_map: String,
    pub secret: String,
    /// Flux objects switched off: `name` or `namespace/name`.
    pub disable: Vec<String>,
    pub max_replicas: Option<u32>,
    /// Extra entries for every Kustomization's `spec.patches`.
    pub patches: Vec<Value>,
}

/// One change the overlay made, for `devenv plan`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// `Kind/namespace/name`
    pub object: String,
    pub what: String,
}

/// The outcome of rewriting one file.
#[derive(Debug, Clone, Default)]
pub struct Rewritten {
    pub text: String,
    pub changes: Vec<Change>,
    /// Namespaces of Kustomizations that substitute from the environment ConfigMap.
    pub substitution_namespaces: BTreeSet<String>,
}

/// Whether a file may hold Flux objects; a cheap test before parsing.
pub fn may_hold_flux_objects(text: &str) -> bool {
    text.contains("toolkit.fluxcd.io/")
}

/// Rewrites the Flux objects of a multi-document YAML file; `None` when nothing changes.
pub fn rewrite(text: &str, settings: &Settings) -> Result<Option<Rewritten>, Error> {
    let mut out = Rewritten::default();
    let mut documents = Vec::new();
    let mut changed = false;
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value: Value =
            serde::Deserialize::deserialize(document).map_err(|source| Error::Parse { document: index + 1, source })?;
        match rewrite_object(value, settings, &mut out) {
            Some((value, object_changed)) => {
                changed |= object_changed;
                documents.push(value);
            }
            None => changed = true,
        }
    }
    if !changed {
        return Ok(None);
    }
    let rendered: Vec<String> = documents
        .iter()
        .filter(|d| !d.is_null())
        .map(|d| serde_yaml::to_string(d).expect("YAML values serialise"))
        .collect();
    out.text = rendered.join("---\n");
    Ok(Some(out))
}

/// Rewrites one object; `None` removes it. The flag says whether it changed.
fn rewrite_object(mut value: Value, settings: &Settings, out: &mut Rewritten) -> Option<(Value, bool)> {
    let Some(identity) = FluxObject::of(&value, &settings.flux_namespace) else {
        return Some((value, false));
    };
    let object = identity.display();
    let mut changes = Vec::new();
    let result = rewrite_spec(&mut value, &identity, settings, &mut changes, &mut out.substitution_namespaces);
    out.changes.extend(changes.into_iter().map(|what| Change { object: object.clone(), what }));
    match result {
        Keep::Remove => None,
        Keep::Unchanged => Some((value, false)),
        Keep::Changed => Some((value, true)),
    }
}

enum Keep {
    Remove,
    Unchanged,
    Changed,
}

fn rewrite_spec(
    value: &mut Value,
    identity: &FluxObject,
    settings: &Settings,
    changes: &mut Vec<String>,
    substitution_namespaces: &mut BTreeSet<String>,
) -> Keep {
    if identity.disabled(&settings.disable) {
        changes.push("removed (overlay.disable)".to_string());
        return Keep::Remove;
    }
    let before = value.clone();
    let Some(spec) = value.get_mut("spec").and_then(Value::as_mapping_mut) else { return Keep::Unchanged };
    if drop_disabled_dependencies(spec, &identity.namespace, &settings.disable) {
        changes.push("dropped dependsOn entries on disabled objects".to_string());
    }
    match (identity.group.as_str(), identity.kind.as_str()) {
        ("kustomize", "Kustomization") => {
            if repoint_source(spec, &identity.namespace, settings) {
                changes.push(format!("sourceRef → OCIRepository/{}/{SOURCE_NAME}", settings.flux_namespace));
            }
            if let Some(post_build) = spec.get_mut("postBuild").and_then(Value::as_mapping_mut) {
                substitution_namespaces.insert(identity.namespace.clone());
                for (kind, name) in [("ConfigMap", &settings.config_map), ("Secret", &settings.secret)] {
                    if add_substitute_from(post_build, kind, name) {
                        changes.push(format!("postBuild.substituteFrom += {kind}/{name}"));
                    }
                }
            }
            let mut patches = settings.patches.clone();
            patches.extend(settings.max_replicas.map(replica_patches).unwrap_or_default());
            if !patches.is_empty() {
                let count = patches.len();
                append_sequence(spec, "patches", patches);
                changes.push(format!("spec.patches += {count} local patch(es)"));
            }
        }
        ("helm", "HelmRelease") => {
            if let Some(max) = settings.max_replicas {
                let renderer = Value::Mapping(Mapping::from_iter([(
                    "kustomize".into(),
                    Value::Mapping(Mapping::from_iter([("patches".into(), Value::Sequence(replica_patches(max)))])),
                )]));
                append_sequence(spec, "postRenderers", vec![renderer]);
                changes.push(format!("postRenderers += replicas set to {max}"));
            }
        }
        _ => {}
    }
    if *value == before { Keep::Unchanged } else { Keep::Changed }
}

/// The identity of a Flux object.
struct FluxObject {
    group: String,
    kind: String,
    namespace: String,
    name: String,
}

impl FluxObject {
    fn of(value: &Value, default_namespace: &str) -> Option<Self> {
        let api_version = value.get("apiVersion")?.as_str()?;
        let group = api_version.strip_suffix(".toolkit.fluxcd.io").map(str::to_string).or_else(|| {
            let (group, _version) = api_version.split_once('/')?;
            group.strip_suffix(".toolkit.fluxcd.io").map(str::to_string)
        })?;
        let metadata = value.get("metadata")?;
        Some(FluxObject {
            group,
            kind: value.get("kind")?.as_str()?.to_string(),
            name: metadata.get("name")?.as_str()?.to_string(),
            namespace: metadata.get("namespace").and_then(Value::as_str).unwrap_or(default_namespace).to_string(),
        })
    }

    fn display(&self) -> String {
        format!("{}/{}/{}", self.kind, self.namespace, self.name)
    }

    fn disabled(&self, disable: &[String]) -> bool {
        is_disabled(disable, &self.namespace, &self.name)
    }
}

fn is_disabled(disable: &[String], namespace: &str, name: &str) -> bool {
    disable.iter().any(|d| match d.split_once('/') {
        Some((ns, n)) => ns == namespace && n == name,
        None => d == name,
    })
}

/// Removes `dependsOn` entries that name disabled objects, so dependants do not wait forever.
fn drop_disabled_dependencies(spec: &mut Mapping, namespace: &str, disable: &[String]) -> bool {
    let Some(Value::Sequence(depends_on)) = spec.get_mut("dependsOn") else { return false };
    let before = depends_on.len();
    depends_on.retain(|entry| {
        let name = entry.get("name").and_then(Value::as_str).unwrap_or_default();
        let ns = entry.get("namespace").and_then(Value::as_str).unwrap_or(namespace);
        !is_disabled(disable, ns, name)
    });
    depends_on.len() != before
}

/// Points a Kustomization at the artifact when its source is the repository's own.
fn repoint_source(spec: &mut Mapping, namespace: &str, settings: &Settings) -> bool {
    let Some(source) = spec.get_mut("sourceRef").and_then(Value::as_mapping_mut) else { return false };
    let kind = source.get("kind").and_then(Value::as_str).unwrap_or_default();
    let name = source.get("name").and_then(Value::as_str).unwrap_or_default();
    let source_namespace = source.get("namespace").and_then(Value::as_str).unwrap_or(namespace);
    let own = &settings.own_source;
    if kind != own.kind || name != own.name || source_namespace != settings.flux_namespace {
        return false;
    }
    *source = Mapping::from_iter([
        ("kind".into(), "OCIRepository".into()),
        ("name".into(), SOURCE_NAME.into()),
        ("namespace".into(), settings.flux_namespace.clone().into()),
    ]);
    true
}

/// Adds `{kind, name}` to `postBuild.substituteFrom` unless it is there already.
fn add_substitute_from(post_build: &mut Mapping, kind: &str, name: &str) -> bool {
    let list = post_build.entry("substituteFrom".into()).or_insert_with(|| Value::Sequence(Vec::new()));
    let Value::Sequence(list) = list else { return false };
    let present = list.iter().any(|e| {
        e.get("kind").and_then(Value::as_str) == Some(kind) && e.get("name").and_then(Value::as_str) == Some(name)
    });
    if !present {
        list.push(Value::Mapping(Mapping::from_iter([("kind".into(), kind.into()), ("name".into(), name.into())])));
    }
    !present
}

fn append_sequence(spec: &mut Mapping, key: &str, items: Vec<Value>) {
    match spec.entry(key.into()).or_insert_with(|| Value::Sequence(Vec::new())) {
        Value::Sequence(list) => list.extend(items),
        other => *other = Value::Sequence(items),
    }
}

/// Kustomize patches that set `spec.replicas` of every Deployment and StatefulSet.
fn replica_patches(max: u32) -> Vec<Value> {
    ["Deployment", "StatefulSet"]
        .iter()
        .map(|kind| {
            let patch = format!("- op: add\n  path: /spec/replicas\n  value: {max}\n");
            Value::Mapping(Mapping::from_iter([
                ("target".into(), Value::Mapping(Mapping::from_iter([("kind".into(), (*kind).into())]))),
                ("patch".into(), patch.into()),
            ]))
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests;

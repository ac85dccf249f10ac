//! What Flux would fail on, or silently get wrong, found in the packed tree before anything
//! is pushed, and reported against the user's files: so `devenv plan` shows it too, and `up`
//! stops before the cluster would.
//!
//! Each concern is a module; this one gathers what they share: the Kustomizations of the
//! tree with the files they read and the values they substitute, and the findings.

pub mod build;
pub mod disable;
pub mod overrides;
pub mod string_fields;
pub mod unsubstituted;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_yaml::Value;

use super::closure;
use super::pack::Packed;

/// What a finding is about; errors carry the id `up` stops with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Kind {
    /// A manifest that does not parse, or a kustomization file naming a file that is not there.
    Unbuildable,
    /// An `overlay.disable` entry that matches nothing.
    UnmatchedDisable,
    /// A substituted value that turns a string field into a number, boolean or null.
    StringField,
    /// A `${VAR}` in a file no substituting Kustomization applies.
    Unsubstituted,
    /// A value devenv provides that replaces a manifest's default.
    Override,
}

impl Kind {
    /// The error id, for kinds that stop `up`.
    pub fn id(self) -> Option<&'static str> {
        match self {
            Kind::Unbuildable => Some("DEV069"),
            Kind::UnmatchedDisable => Some("DEV068"),
            Kind::StringField => Some("DEV067"),
            Kind::Unsubstituted | Kind::Override => None,
        }
    }

    fn severity(self) -> Severity {
        match self {
            Kind::Unbuildable | Kind::UnmatchedDisable | Kind::StringField => Severity::Error,
            Kind::Unsubstituted => Severity::Warning,
            Kind::Override => Severity::Note,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Severity {
    Error,
    Warning,
    Note,
}

/// One thing found, at a place in the user's tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub kind: Kind,
    pub severity: Severity,
    pub id: Option<&'static str>,
    /// The file, relative to the repository root (devenv.yaml for configuration).
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    /// What to do about it.
    pub fix: Option<String>,
}

impl Finding {
    pub fn new(kind: Kind, file: &str, position: Option<(usize, usize)>, message: String) -> Self {
        Finding {
            kind,
            severity: kind.severity(),
            id: kind.id(),
            file: file.to_string(),
            line: position.map(|p| p.0),
            column: position.map(|p| p.1),
            message,
            fix: None,
        }
    }

    pub fn with_fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    /// `file:line:column`, as far as it is known.
    pub fn place(&self) -> String {
        match (self.line, self.column) {
            (Some(line), Some(column)) => format!("{}:{line}:{column}", self.file),
            (Some(line), None) => format!("{}:{line}", self.file),
            _ => self.file.clone(),
        }
    }
}

/// Findings as text, one paragraph each, indented under a heading.
pub fn render(findings: &[Finding]) -> String {
    let mut out = String::new();
    for finding in findings {
        let label = match (finding.severity, finding.id) {
            (Severity::Error, Some(id)) => format!("error[{id}]"),
            (Severity::Error, None) => "error".to_string(),
            (Severity::Warning, _) => "warning".to_string(),
            (Severity::Note, _) => "note".to_string(),
        };
        out.push_str(&format!("  {label}: {}: {}\n", finding.place(), finding.message));
        if let Some(fix) = &finding.fix {
            out.push_str(&format!("    fix: {fix}\n"));
        }
    }
    out
}

/// Where a variable's value comes from, as `plan` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provided {
    pub value: String,
    /// e.g. "the profile `local`'s `environment`", "service `orders-db`'s output `port`".
    pub origin: String,
    /// A Secret's value, which findings do not show.
    pub secret: bool,
}

impl Provided {
    /// The value as findings show it.
    pub fn shown(&self) -> String {
        match self.secret {
            true => "<secret value>".to_string(),
            false => self.value.clone(),
        }
    }
}

/// A Flux Kustomization of the packed tree that reads one of devenv's artifacts.
#[derive(Debug, Clone)]
pub struct Applier {
    /// `Kustomization/namespace/name`
    pub key: String,
    /// The directory it builds ("" for the whole tree).
    pub path: String,
    /// False for a path a parent substitutes (`./apps/${CLUSTER}`): `path` is then the whole
    /// tree, as far as the files it may read go, but not what kustomize builds.
    pub path_known: bool,
    /// Whether it has `postBuild`, so Flux substitutes in what it applies.
    pub substitutes: bool,
    /// `postBuild.substitute`, which wins over every `substituteFrom`.
    pub inline: BTreeMap<String, String>,
    /// The files it reads.
    pub files: BTreeSet<String>,
}

impl Applier {
    /// The value Flux gives `name` in what this Kustomization applies, if devenv knows it.
    pub fn value_of<'a>(&'a self, name: &str, provided: &'a BTreeMap<String, Provided>) -> Option<Provided> {
        if let Some(value) = self.inline.get(name) {
            return Some(Provided {
                value: value.clone(),
                origin: format!("`postBuild.substitute` of {}", self.key),
                secret: false,
            });
        }
        provided.get(name).cloned()
    }
}

/// The Kustomizations of the packed tree, each with the files it reads. `packed.objects`
/// are the Flux objects after the overlay, so disabled ones are gone.
pub fn appliers(packed: &Packed, flux_namespace: &str) -> Vec<Applier> {
    let read = |file: &str| packed.texts.read(file);
    let mut result = Vec::new();
    for artifact in &packed.artifacts {
        let (namespace, name) = artifact.kustomization.split_once('/').unwrap_or((flux_namespace, ""));
        let object = packed.objects.iter().find(|o| {
            o.get("kind").and_then(Value::as_str) == Some("Kustomization")
                && o.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str) == Some(name)
                && o.get("metadata").and_then(|m| m.get("namespace")).and_then(Value::as_str).unwrap_or(flux_namespace)
                    == namespace
        });
        let post_build = object.and_then(|o| o.get("spec")).and_then(|s| s.get("postBuild"));
        let inline = (post_build.and_then(|p| p.get("substitute")).and_then(Value::as_mapping).into_iter())
            .flatten()
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), scalar_text(v)?)))
            .collect();
        // A path a parent substitutes is only known in the cluster: the whole tree, as `pack`.
        let path_known = !artifact.path.contains('$');
        let path = if path_known { artifact.path.clone() } else { String::new() };
        let files = closure::files_of(&packed.paths, &read, &path);
        result.push(Applier {
            key: format!("Kustomization/{}", artifact.kustomization),
            path,
            path_known,
            substitutes: post_build.is_some(),
            inline,
            files,
        });
    }
    result
}

/// A scalar as the text Flux reads from a ConfigMap's data.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Whether an object opts out of substitution, by label or annotation (Flux reads both).
pub fn substitution_disabled(document: &Value) -> bool {
    let metadata = document.get("metadata");
    ["labels", "annotations"].iter().any(|field| {
        metadata.and_then(|m| m.get(*field)).and_then(|l| l.get(SUBSTITUTE_KEY)).and_then(Value::as_str)
            == Some("disabled")
    })
}

/// The label or annotation with which an object opts out of substitution.
pub const SUBSTITUTE_KEY: &str = "kustomize.toolkit.fluxcd.io/substitute";

/// Whether a file is YAML that kustomize reads as manifests.
pub fn is_yaml(file: &str) -> bool {
    file.ends_with(".yaml") || file.ends_with(".yml")
}

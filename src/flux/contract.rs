//! The substitution contract: every `${VAR}` that Flux will substitute must have a value.
//!
//! Flux replaces a variable with no value by an empty string, silently; that is the most
//! common way a platform breaks locally. Before anything is applied, devenv scans the
//! manifests that substituting Kustomizations apply and compares their variables with the
//! keys it provides.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml::Value;

use super::closure;
use super::files::Texts;

/// The label (or annotation) with which an object opts out of substitution.
const SUBSTITUTE_LABEL: &str = "kustomize.toolkit.fluxcd.io/substitute";

/// One use of a variable.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Use {
    pub file: String,
    pub line: usize,
}

/// What the scan found.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Variables with no value and no default, with every place that uses them.
    pub missing: BTreeMap<String, Vec<Use>>,
    /// Provided keys no manifest uses.
    pub unused: Vec<String>,
    /// Variables whose value may come from a source devenv cannot see (a `substituteFrom`
    /// object that is not in the repository); reported, not fatal.
    pub unverifiable: BTreeMap<String, Vec<Use>>,
}

/// A variable reference: `${NAME}`, or with a default (`${NAME:=x}`, `${NAME:-x}`, `${NAME=x}`, `${NAME-x}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub name: String,
    pub has_default: bool,
}

/// Variable references in one line of text, in Flux's `${…}` syntax.
pub fn references(line: &str) -> Vec<Reference> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        let inner = &after[..end];
        let name_len = inner.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(inner.len());
        let name = &inner[..name_len];
        if crate::naming::is_variable_name(name) {
            let operator = &inner[name_len..];
            found.push(Reference {
                name: name.to_string(),
                has_default: [":=", ":-", "=", "-"].iter().any(|op| operator.starts_with(op)),
            });
        }
        rest = &after[end + 1..];
    }
    found
}

/// A substituting Kustomization, as far as the contract is concerned.
#[derive(Debug, Clone)]
pub struct Scope {
    /// The directory it builds, relative to the repository root.
    pub path: String,
    /// Variables it sets inline (`postBuild.substitute`).
    pub inline: BTreeSet<String>,
    /// Whether it also reads objects devenv cannot see.
    pub opaque: bool,
}

/// Finds the substituting Kustomizations among Flux objects from devenv's `sources`.
/// `visible` names the substituteFrom objects whose keys are known (devenv's own).
pub fn scopes(documents: &[Value], visible: &BTreeSet<String>, sources: &BTreeSet<String>) -> Vec<Scope> {
    let mut scopes = Vec::new();
    for doc in documents {
        let is_kustomization = doc.get("kind").and_then(Value::as_str) == Some("Kustomization")
            && doc
                .get("apiVersion")
                .and_then(Value::as_str)
                .is_some_and(|v| v.starts_with("kustomize.toolkit.fluxcd.io/"));
        let spec = doc.get("spec");
        let from_source = spec
            .and_then(|s| s.get("sourceRef"))
            .and_then(|s| s.get("name"))
            .and_then(Value::as_str)
            .is_some_and(|name| sources.contains(name));
        let Some(post_build) = spec.and_then(|s| s.get("postBuild")) else { continue };
        if !is_kustomization || !from_source {
            continue;
        }
        let path = spec.and_then(|s| s.get("path")).and_then(Value::as_str).unwrap_or("./");
        let inline = post_build
            .get("substitute")
            .and_then(Value::as_mapping)
            .map(|m| m.keys().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        let opaque = post_build.get("substituteFrom").and_then(Value::as_sequence).is_some_and(|list| {
            list.iter().any(|entry| {
                let name = entry.get("name").and_then(Value::as_str).unwrap_or_default();
                let optional = entry.get("optional").and_then(Value::as_bool).unwrap_or(false);
                !visible.contains(name) && !optional
            })
        });
        scopes.push(Scope { path: closure::normalise(path), inline, opaque });
    }
    scopes
}

/// Checks the files of each scope (files whose path lies under the scope's directory, or that
/// its kustomization.yaml pulls in from elsewhere) against the provided keys.
pub fn check(texts: &Texts, files: &[String], scopes: &[Scope], provided: &BTreeSet<String>) -> Report {
    let mut report = Report::default();
    let mut used = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for scope in scopes {
        for file in files_of_scope(texts, files, &scope.path) {
            if !seen.insert((file.clone(), scope.inline.clone(), scope.opaque)) {
                continue;
            }
            let Some(text) = texts.get(&file) else { continue };
            for (line, reference) in substituted_references(text) {
                used.insert(reference.name.clone());
                if reference.has_default || provided.contains(&reference.name) || scope.inline.contains(&reference.name)
                {
                    continue;
                }
                let target = if scope.opaque { &mut report.unverifiable } else { &mut report.missing };
                let uses = target.entry(reference.name).or_default();
                let place = Use { file: file.clone(), line };
                if !uses.contains(&place) {
                    uses.push(place);
                }
            }
        }
    }
    for uses in report.missing.values_mut().chain(report.unverifiable.values_mut()) {
        uses.sort();
    }
    report.unused = provided.iter().filter(|k| !used.contains(*k)).cloned().collect();
    report
}

/// References in YAML documents that are not labelled or annotated to opt out of substitution, with
/// their 1-based line numbers.
fn substituted_references(text: &str) -> Vec<(usize, Reference)> {
    let mut found = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut start = 0;
    while start < lines.len() {
        let end = (start + 1..lines.len()).find(|&i| lines[i].starts_with("---")).unwrap_or(lines.len());
        let chunk = lines[start..end].join("\n");
        // Flux reads the opt-out from a label or an annotation.
        let disabled = serde_yaml::from_str::<Value>(&chunk).ok().is_some_and(|doc| {
            ["labels", "annotations"].iter().any(|field| {
                doc.get("metadata")
                    .and_then(|m| m.get(*field))
                    .and_then(|l| l.get(SUBSTITUTE_LABEL))
                    .and_then(Value::as_str)
                    == Some("disabled")
            })
        });
        if !disabled {
            for (offset, line) in lines[start..end].iter().enumerate() {
                if line.trim_start().starts_with('#') {
                    continue;
                }
                found.extend(references(line).into_iter().map(|r| (start + offset + 1, r)));
            }
        }
        start = end;
    }
    found
}

/// The YAML files a Kustomization building `dir` reads.
fn files_of_scope(texts: &Texts, files: &[String], dir: &str) -> Vec<String> {
    closure::files_of(files, &|file| texts.read(file), dir)
        .into_iter()
        .filter(|f| f.ends_with(".yaml") || f.ends_with(".yml"))
        .collect()
}

/// The report as text: an error paragraph per missing variable, then warnings.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let places = |uses: &[Use]| uses.iter().map(|u| format!("{}:{}", u.file, u.line)).collect::<Vec<_>>().join(", ");
    for (name, uses) in &report.missing {
        out.push_str(&format!("  ${{{name}}} has no value and no default; used at {}\n", places(uses)));
    }
    for (name, uses) in &report.unverifiable {
        out.push_str(&format!(
            "  ${{{name}}} may come from a substituteFrom object outside the repository; used at {}\n",
            places(uses)
        ));
    }
    for key in &report.unused {
        out.push_str(&format!("  key `{key}` is provided but no manifest uses it\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_references_and_defaults() {
        assert_eq!(
            references("url: ${DB_HOST}:${DB_PORT:=3306}/${x-y} ${LEVEL:-info} $PLAIN ${}"),
            [
                Reference { name: "DB_HOST".into(), has_default: false },
                Reference { name: "DB_PORT".into(), has_default: true },
                Reference { name: "x".into(), has_default: true },
                Reference { name: "LEVEL".into(), has_default: true },
            ]
        );
    }

    fn repo() -> (Texts, Vec<String>) {
        let files = [
            ("apps/local/kustomization.yaml", "resources:\n  - ../base/orders\n"),
            (
                "apps/base/orders/deployment.yaml",
                "env:\n  - value: ${DB_HOST}\n  - value: ${DB_PORT:=3306}\n  # ${COMMENTED}\n  - value: ${MISSING}\n",
            ),
            ("apps/base/orders/kustomization.yaml", "resources:\n  - deployment.yaml\n"),
            ("apps/base/billing/deployment.yaml", "value: ${NOT_IN_SCOPE}\n"),
            (
                "apps/local/scripts.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: scripts\n  labels:\n    kustomize.toolkit.fluxcd.io/substitute: disabled\ndata:\n  run.sh: echo ${HOME}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\ndata:\n  x: ${MISSING}\n",
            ),
        ];
        let mut names: Vec<String> = files.iter().map(|(p, _)| p.to_string()).collect();
        names.sort();
        (files.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect(), names)
    }

    fn scope(inline: &[&str], opaque: bool) -> Scope {
        Scope { path: "apps/local".into(), inline: inline.iter().map(|s| s.to_string()).collect(), opaque }
    }

    #[test]
    fn a_missing_variable_is_reported_with_every_use() {
        let (texts, files) = repo();
        let provided = BTreeSet::from(["DB_HOST".to_string(), "AWS_REGION".to_string()]);
        let report = check(&texts, &files, &[scope(&[], false)], &provided);
        assert_eq!(report.missing.keys().collect::<Vec<_>>(), ["MISSING"]);
        assert_eq!(
            report.missing["MISSING"],
            [
                Use { file: "apps/base/orders/deployment.yaml".into(), line: 5 },
                Use { file: "apps/local/scripts.yaml".into(), line: 15 }
            ]
        );
        assert_eq!(report.unused, ["AWS_REGION"]);
        let text = render(&report);
        assert!(text.contains("${MISSING} has no value and no default; used at apps/base/orders/deployment.yaml:5, apps/local/scripts.yaml:15"), "{text}");
    }

    #[test]
    fn an_annotation_opts_out_as_a_label_does() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: scripts\n  annotations:\n    kustomize.toolkit.fluxcd.io/substitute: disabled\ndata:\n  run.sh: echo ${HOME}\n";
        assert!(substituted_references(text).is_empty());
    }

    #[test]
    fn inline_values_and_opaque_sources_are_honoured() {
        let (texts, files) = repo();
        let provided = BTreeSet::from(["DB_HOST".to_string()]);
        assert!(check(&texts, &files, &[scope(&["MISSING"], false)], &provided).missing.is_empty());
        let report = check(&texts, &files, &[scope(&[], true)], &provided);
        assert!(report.missing.is_empty());
        assert!(report.unverifiable.contains_key("MISSING"));
    }

    #[test]
    fn finds_substituting_kustomizations_of_the_source() {
        let docs: Vec<Value> = serde_yaml::Deserializer::from_str(
            "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: apps}\nspec:\n  path: ./apps/local\n  sourceRef: {kind: OCIRepository, name: devenv-source}\n  postBuild:\n    substitute: {CLUSTER: local}\n    substituteFrom:\n      - {kind: ConfigMap, name: cluster-env}\n      - {kind: ConfigMap, name: team-vars}\n---\napiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: infra}\nspec:\n  path: ./infrastructure\n  sourceRef: {kind: OCIRepository, name: devenv-source}\n",
        )
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
        let visible = BTreeSet::from(["cluster-env".to_string()]);
        let found = scopes(&docs, &visible, &BTreeSet::from(["devenv-source".to_string()]));
        assert_eq!(found.len(), 1, "only Kustomizations with postBuild substitute");
        assert_eq!(found[0].path, "apps/local");
        assert!(found[0].inline.contains("CLUSTER"));
        assert!(found[0].opaque, "team-vars is not devenv's");
    }
}

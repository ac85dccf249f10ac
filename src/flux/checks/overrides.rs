//! Whose value wins: a `${VAR:=default}` in the user's manifests that a value devenv provides
//! (a profile's static key, a service's output) replaces, shown with both and where each is.

use std::collections::BTreeMap;

use super::{Applier, Finding, Kind, Provided};
use crate::flux::files::Texts;

/// A note per default that devenv's environment replaces, with the file:line of the default.
pub fn check(texts: &Texts, appliers: &[Applier], provided: &BTreeMap<String, Provided>) -> Vec<Finding> {
    let mut findings = Vec::new();
    for applier in appliers.iter().filter(|a| a.substitutes && a.path_known) {
        for file in applier.files.iter().filter(|f| super::is_yaml(f)) {
            let Some(text) = texts.get(file) else { continue };
            if !text.contains("${") {
                continue;
            }
            for (index, line) in text.lines().enumerate() {
                if line.trim_start().starts_with('#') {
                    continue;
                }
                for (column, name, default) in defaults(line) {
                    // An inline value is the Kustomization's own choice, not devenv's.
                    if applier.inline.contains_key(&name) {
                        continue;
                    }
                    let Some(value) = provided.get(&name) else { continue };
                    if value.value == default {
                        continue;
                    }
                    let message = format!(
                        "`${{{name}}}` is `{}` from {}, not the default `{default}` written here",
                        value.shown(),
                        value.origin
                    );
                    findings.push(Finding::new(Kind::Override, file, Some((index + 1, column)), message));
                }
            }
        }
    }
    findings.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    findings.dedup();
    findings
}

/// `(column, name, default)` of each `${NAME:=default}` (or `:-`, `=`, `-`) in a line.
fn defaults(line: &str) -> Vec<(usize, String, String)> {
    let mut found = Vec::new();
    let mut offset = 0;
    while let Some(start) = line[offset..].find("${").map(|at| offset + at) {
        let after = &line[start + 2..];
        let Some(end) = after.find('}') else { break };
        let inner = &after[..end];
        let name_len = inner.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(inner.len());
        let (name, operator) = inner.split_at(name_len);
        if let Some(default) = [":=", ":-", "=", "-"].iter().find_map(|op| operator.strip_prefix(op))
            && crate::naming::is_variable_name(name)
        {
            found.push((start + 1, name.to_string(), default.to_string()));
        }
        offset = start + 2 + end + 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provided_value_that_replaces_a_default_is_shown_with_both_places() {
        let dir = crate::flux::files::tests::write_tree(&[(
            "infrastructure/platform/product.yaml",
            "spec:\n  region: ${AWS_REGION:=eu-west-2}\n  tier: ${TIER:=gold}\n  # ${AWS_REGION:=commented}\n  same: ${ENVIRONMENT:-local}\n",
        )]);
        let applier = Applier {
            key: "Kustomization/flux-system/platform".into(),
            path: "infrastructure/platform".into(),
            path_known: true,
            substitutes: true,
            inline: Default::default(),
            files: ["infrastructure/platform/product.yaml".to_string()].into(),
        };
        let profile = |value: &str| Provided {
            value: value.into(),
            origin: "the profile `sim`'s `environment`".into(),
            secret: false,
        };
        let provided = BTreeMap::from([
            ("AWS_REGION".to_string(), profile("us-east-1")),
            ("ENVIRONMENT".to_string(), profile("local")),
        ]);
        let findings = check(&Texts::of_dir(dir.path()), &[applier], &provided);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(findings[0].place(), "infrastructure/platform/product.yaml:2:11");
        assert_eq!(
            findings[0].message,
            "`${AWS_REGION}` is `us-east-1` from the profile `sim`'s `environment`, not the default `eu-west-2` written here"
        );
        assert_eq!(findings[0].id, None);
    }
}

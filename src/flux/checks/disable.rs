//! `overlay.disable` entries that match nothing, which would otherwise switch nothing off
//! in silence; and the objects Kustomizations apply, which an entry may name
//! (`Kind/namespace/name`).

use std::collections::BTreeSet;

use serde_yaml::Value;

use super::{Applier, Finding, Kind};
use crate::config::locate::Locator;
use crate::flux::disable::{Entry, is_flux, is_kustomization_file};
use crate::flux::documents;
use crate::flux::files::Texts;

/// An object a Kustomization applies, read from the user's files.
#[derive(Debug, Clone)]
pub struct AppliedObject {
    /// `Kind/namespace/name`, or `Kind/name` without a namespace.
    pub key: String,
    pub api_version: String,
    /// The Kustomization that applies it, `Kustomization/namespace/name`.
    pub applier: String,
    pub file: String,
}

/// Every object the Kustomizations apply, from the files they read.
pub fn applied_objects(texts: &Texts, appliers: &[Applier]) -> Vec<AppliedObject> {
    let mut objects = Vec::new();
    for applier in appliers {
        for file in applier.files.iter().filter(|f| super::is_yaml(f) && !is_kustomization_file(f)) {
            let Some(text) = texts.get(file) else { continue };
            for document in documents::parse(text) {
                let Some(key) = document.object() else { continue };
                let api_version = document.value.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
                objects.push(AppliedObject {
                    key,
                    api_version: api_version.to_string(),
                    applier: applier.key.clone(),
                    file: file.clone(),
                });
            }
        }
    }
    objects
}

/// An error per entry that matches nothing. `flux_objects` are the Flux objects of the
/// reached files before the overlay (`Kind/namespace/name`), `applied` what Kustomizations apply.
pub fn check(
    disable: &[String],
    project_text: &str,
    flux_objects: &BTreeSet<String>,
    applied: &[AppliedObject],
) -> Vec<Finding> {
    let locator = Locator::new(project_text);
    let mut findings = Vec::new();
    for (index, text) in disable.iter().enumerate() {
        let entry = Entry::parse(text);
        let matched = flux_objects.iter().any(|o| entry.matches(o, true))
            || applied.iter().any(|o| !is_flux(&o.api_version) && entry.matches(&o.key, false));
        if matched {
            continue;
        }
        let candidates: Vec<String> = match &entry {
            Entry::Flux { namespace: Some(_), .. } => {
                flux_objects.iter().filter_map(|o| o.split_once('/').map(|(_, rest)| rest.to_string())).collect()
            }
            Entry::Flux { namespace: None, .. } => {
                flux_objects.iter().filter_map(|o| o.rsplit('/').next().map(str::to_string)).collect()
            }
            Entry::Applied { .. } => applied.iter().map(|o| o.key.clone()).collect(),
        };
        let candidates: BTreeSet<String> = candidates.into_iter().collect();
        let names: Vec<&str> = candidates.iter().map(String::as_str).collect();
        let position = locator.find(&format!("overlay.disable[{index}]")).map(|p| (p.line, p.column));
        let message = format!("overlay.disable: `{text}` matches no object the root Kustomization reaches");
        let fix = match crate::config::suggest(text, &names) {
            Some(best) => format!(
                "did you mean `{best}`? Name a Flux object as `name` or `namespace/name`, or anything a Kustomization applies as `Kind/namespace/name` (`Kind/name` when it has no namespace)"
            ),
            None => format!(
                "name a Flux object as `name` or `namespace/name`, or anything a Kustomization applies as `Kind/namespace/name` (`Kind/name` when it has no namespace); {}",
                listing(&candidates)
            ),
        };
        findings
            .push(Finding::new(Kind::UnmatchedDisable, crate::config::PROJECT_FILE, position, message).with_fix(fix));
    }
    findings
}

fn listing(candidates: &BTreeSet<String>) -> String {
    const SHOWN: usize = 12;
    let shown: Vec<&str> = candidates.iter().take(SHOWN).map(String::as_str).collect();
    match candidates.len() {
        0 => "there is none".to_string(),
        n if n > SHOWN => format!("there are {} (…and {} more)", shown.join(", "), n - SHOWN),
        _ => format!("there are {}", shown.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects() -> BTreeSet<String> {
        [
            "Kustomization/flux-system/aws-load-balancer-controller",
            "Kustomization/flux-system/apps",
            "HelmRelease/lending/statements",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn applied() -> Vec<AppliedObject> {
        vec![AppliedObject {
            key: "IngressClass/alb".into(),
            api_version: "networking.k8s.io/v1".into(),
            applier: "Kustomization/flux-system/platform".into(),
            file: "infrastructure/platform/ingressclass.yaml".into(),
        }]
    }

    const PROJECT: &str = "project: lender\noverlay:\n  disable:\n    - aws-load-balancer-controler\n    - lending/statements\n    - IngressClass/alb\n    - Deployment/lending/search\n";

    #[test]
    fn an_entry_that_matches_nothing_is_an_error_with_what_it_could_have_meant() {
        let disable: Vec<String> =
            ["aws-load-balancer-controler", "lending/statements", "IngressClass/alb", "Deployment/lending/search"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let findings = check(&disable, PROJECT, &objects(), &applied());
        assert_eq!(findings.len(), 2, "{findings:#?}");
        assert_eq!(findings[0].place(), "devenv.yaml:4:7");
        assert_eq!(findings[0].id, Some("DEV068"));
        assert!(findings[0].fix.as_deref().unwrap().starts_with("did you mean `aws-load-balancer-controller`?"));
        assert_eq!(findings[1].place(), "devenv.yaml:7:7");
        assert!(findings[1].fix.as_deref().unwrap().ends_with("there are IngressClass/alb"), "{:?}", findings[1].fix);
    }
}

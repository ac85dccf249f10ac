//! `${VAR}` that Flux will never substitute: a Kustomization without `postBuild` applies its
//! files as they are, so the text `${VAR}` reaches the cluster literally.

use super::{Applier, Finding, Kind};
use crate::flux::contract;
use crate::flux::documents;
use crate::flux::files::Texts;

/// A warning per use of a variable in a file that only non-substituting Kustomizations
/// apply (a file another Kustomization substitutes is that one's business), unless the
/// object opts out of substitution.
pub fn check(texts: &Texts, appliers: &[Applier]) -> Vec<Finding> {
    let substituted: std::collections::BTreeSet<&String> =
        appliers.iter().filter(|a| a.substitutes).flat_map(|a| a.files.iter()).collect();
    let mut findings = Vec::new();
    // A path a parent substitutes is not known here: its files are anyone's guess.
    for applier in appliers.iter().filter(|a| !a.substitutes && a.path_known) {
        for file in applier.files.iter().filter(|f| super::is_yaml(f) && !substituted.contains(f)) {
            let Some(text) = texts.get(file) else { continue };
            if !text.contains("${") {
                continue;
            }
            for (line, column, name) in uses(text) {
                let message = format!(
                    "`${{{name}}}` stays as it is in the cluster: {} applies this file and has no `spec.postBuild`, so Flux substitutes nothing in it",
                    applier.key
                );
                let literal = "label or annotate the object `kustomize.toolkit.fluxcd.io/substitute: disabled` if the text is meant literally";
                let fix = match applier.key.ends_with(&format!("/{}", crate::flux::names::ROOT_NAME)) {
                    // devenv's root stands in for `flux bootstrap`'s, which substitutes nothing either.
                    true => format!(
                        "`flux.path` is applied as it is, as `flux bootstrap`'s own Kustomization applies it: move the object under a Kustomization with `postBuild`, or {literal}"
                    ),
                    false => format!(
                        "add `postBuild` to {} (`postBuild: {{substituteFrom: [...]}}`; devenv adds its environment ConfigMap and Secret), or {literal}",
                        applier.key
                    ),
                };
                findings.push(Finding::new(Kind::Unsubstituted, file, Some((line, column)), message).with_fix(fix));
            }
        }
    }
    findings.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    findings.dedup_by(|a, b| a.file == b.file && a.line == b.line && a.column == b.column);
    findings
}

/// Each `${VAR}` outside comments and outside objects that opt out, with its line and column.
fn uses(text: &str) -> Vec<(usize, usize, String)> {
    let opted_out: Vec<bool> = documents::parse(text).iter().map(|d| super::substitution_disabled(&d.value)).collect();
    let mut found = Vec::new();
    let mut document = 0;
    let mut seen_content = false;
    for (index, line) in text.lines().enumerate() {
        if line.starts_with("---") {
            if seen_content {
                document += 1;
            }
            seen_content = false;
            continue;
        }
        if !line.trim().is_empty() && !line.trim_start().starts_with('#') {
            seen_content = true;
        }
        if line.trim_start().starts_with('#') || opted_out.get(document).copied().unwrap_or(false) {
            continue;
        }
        let mut from = 0;
        for reference in contract::references(line) {
            let column = line[from..].find("${").map(|at| from + at).unwrap_or(0);
            from = column + 2;
            found.push((index + 1, column + 1, reference.name));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applier(key: &str, files: &[&str], substitutes: bool) -> Applier {
        Applier {
            key: key.into(),
            path: String::new(),
            path_known: true,
            substitutes,
            inline: Default::default(),
            files: files.iter().map(|f| f.to_string()).collect(),
        }
    }

    #[test]
    fn a_variable_in_a_file_no_substituting_kustomization_applies_is_a_warning_with_its_place() {
        let ingress = "# The ${HOST} below is filled in production.\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: web\n  annotations:\n    alb.ingress.kubernetes.io/certificate-arn: ${CERT_ARN}\nspec:\n  rules:\n    - host: web.${DOMAIN}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: scripts\n  labels:\n    kustomize.toolkit.fluxcd.io/substitute: disabled\ndata:\n  run.sh: echo ${HOME}\n";
        let dir = crate::flux::files::tests::write_tree(&[
            ("infrastructure/alb/ingress.yaml", ingress),
            ("apps/orders/deployment.yaml", "value: ${DB_HOST}\n"),
        ]);
        let appliers = [
            applier("Kustomization/flux-system/alb", &["infrastructure/alb/ingress.yaml"], false),
            applier("Kustomization/flux-system/apps", &["apps/orders/deployment.yaml"], true),
        ];
        let findings = check(&Texts::of_dir(dir.path()), &appliers);
        let places: Vec<String> = findings.iter().map(|f| f.place()).collect();
        assert_eq!(places, ["infrastructure/alb/ingress.yaml:7:48", "infrastructure/alb/ingress.yaml:10:17"]);
        assert!(findings[0].message.starts_with("`${CERT_ARN}` stays as it is in the cluster: Kustomization/flux-system/alb applies this file and has no `spec.postBuild`"), "{}", findings[0].message);
        assert_eq!(findings[0].id, None, "a warning");
        assert!(findings[0].fix.as_deref().unwrap().contains("kustomize.toolkit.fluxcd.io/substitute: disabled"));
    }

    #[test]
    fn under_devenv_s_root_the_fix_is_to_move_the_object() {
        let dir = crate::flux::files::tests::write_tree(&[("clusters/local/cm.yaml", "data:\n  x: ${X}\n")]);
        let root = applier("Kustomization/flux-system/devenv-root", &["clusters/local/cm.yaml"], false);
        let findings = check(&Texts::of_dir(dir.path()), &[root]);
        let fix = findings[0].fix.as_deref().unwrap();
        assert!(
            fix.starts_with("`flux.path` is applied as it is, as `flux bootstrap`'s own Kustomization applies it"),
            "{fix}"
        );
    }

    #[test]
    fn a_file_a_substituting_kustomization_also_applies_is_not_reported() {
        let dir = crate::flux::files::tests::write_tree(&[("shared/cm.yaml", "data:\n  x: ${X}\n")]);
        let appliers = [
            applier("Kustomization/flux-system/a", &["shared/cm.yaml"], false),
            applier("Kustomization/flux-system/b", &["shared/cm.yaml"], true),
        ];
        assert!(check(&Texts::of_dir(dir.path()), &appliers).is_empty());
    }
}

//! What would stop kustomize building a Kustomization: a manifest that is not YAML, and a
//! kustomization file naming a file or directory that is not in the artifact. Flux reports
//! both from its temporary copy of the artifact; devenv reports them from the user's tree.

use std::collections::BTreeSet;

use serde_yaml::Value;

use super::{Applier, Finding, Kind};
use crate::config::locate::Locator;
use crate::flux::closure;
use crate::flux::files::Texts;

const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];
/// Fields of a kustomization file that name files or directories, as kustomize reads them.
const LISTS: [&str; 5] = ["resources", "bases", "components", "crds", "patchesStrategicMerge"];

/// Checks what each Kustomization builds; `files` is the packed tree and `texts` its text as
/// packed. `root` is looked at only for a file the tree lacks, to tell an ignored one.
pub fn check(root: &std::path::Path, texts: &Texts, files: &[String], appliers: &[Applier]) -> Vec<Finding> {
    let mut walk = Walk { root, texts, files, findings: Vec::new(), parsed: BTreeSet::new(), visited: BTreeSet::new() };
    for applier in appliers.iter().filter(|a| a.path_known) {
        walk.directory(&applier.path, None);
    }
    let mut findings = walk.findings;
    findings.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    findings
}

struct Walk<'a> {
    root: &'a std::path::Path,
    texts: &'a Texts,
    files: &'a [String],
    findings: Vec<Finding>,
    parsed: BTreeSet<String>,
    visited: BTreeSet<String>,
}

impl Walk<'_> {
    fn read(&self, file: &str) -> Option<String> {
        self.texts.read(file)
    }

    fn exists(&self, file: &str) -> bool {
        self.files.binary_search(&file.to_string()).is_ok()
    }

    fn is_directory(&self, dir: &str) -> bool {
        let prefix = format!("{dir}/");
        dir.is_empty() || self.files.iter().any(|f| f.starts_with(&prefix))
    }

    fn kustomization_file(&self, dir: &str) -> Option<String> {
        KUSTOMIZATION_FILES.iter().map(|name| join(dir, name)).find(|file| self.exists(file))
    }

    /// A directory kustomize builds: its kustomization file, or (as Flux generates one when
    /// there is none) every YAML file below it down to directories with their own.
    fn directory(&mut self, dir: &str, named_at: Option<(&str, Option<(usize, usize)>)>) {
        if !self.visited.insert(dir.to_string()) {
            return;
        }
        if let Some(file) = self.kustomization_file(dir) {
            self.kustomization(&file);
            return;
        }
        if let Some((from, position)) = named_at {
            // Only the top of a Kustomization's path may lack one: Flux generates it there.
            let message = format!(
                "`{dir}` is a directory without a kustomization.yaml, so kustomize cannot use it as a resource"
            );
            let fix = "add a kustomization.yaml listing its manifests, or name the files themselves";
            self.findings.push(Finding::new(Kind::Unbuildable, from, position, message).with_fix(fix));
            return;
        }
        let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
        let below: Vec<String> = self.files.iter().filter(|f| f.starts_with(&prefix)).cloned().collect();
        let nested: BTreeSet<String> = (below.iter())
            .filter_map(|f| f.rsplit_once('/'))
            .filter(|(parent, name)| KUSTOMIZATION_FILES.contains(name) && *parent != dir)
            .map(|(parent, _)| parent.to_string())
            .collect();
        for file in below.iter().filter(|f| super::is_yaml(f)) {
            let inside_nested = nested.iter().any(|n| file.starts_with(&format!("{n}/")));
            if !inside_nested {
                self.manifest(file);
            }
        }
        for directory in nested.iter().filter(|n| !nested.iter().any(|m| m != *n && n.starts_with(&format!("{m}/")))) {
            let file = self.kustomization_file(directory).expect("a nested directory has one");
            if self.visited.insert(directory.clone()) {
                self.kustomization(&file);
            }
        }
    }

    fn kustomization(&mut self, file: &str) {
        let Some(text) = self.read(file) else { return };
        let document: Value = match serde_yaml::from_str(&text) {
            Ok(document) => document,
            Err(error) => return self.unparsable(file, &error),
        };
        let base = file.rsplit_once('/').map(|(dir, _)| dir).unwrap_or("");
        let locator = Locator::new(&text);
        let mut named = Vec::new();
        for list in LISTS {
            for (index, entry) in document.get(list).and_then(Value::as_sequence).into_iter().flatten().enumerate() {
                if let Some(entry) = entry.as_str() {
                    named.push((
                        format!("{list}[{index}]"),
                        entry.to_string(),
                        list != "patchesStrategicMerge" || !entry.contains('\n'),
                    ));
                }
            }
        }
        for (index, patch) in document.get("patches").and_then(Value::as_sequence).into_iter().flatten().enumerate() {
            if let Some(path) = patch.get("path").and_then(Value::as_str) {
                named.push((format!("patches[{index}].path"), path.to_string(), true));
            }
        }
        // Generator inputs: `files` entries (`key=path` or `path`), `envs` and the older `env`.
        for generator in ["configMapGenerator", "secretGenerator"] {
            for (index, spec) in document.get(generator).and_then(Value::as_sequence).into_iter().flatten().enumerate()
            {
                for list in ["files", "envs"] {
                    for (position, entry) in
                        spec.get(list).and_then(Value::as_sequence).into_iter().flatten().enumerate()
                    {
                        let Some(entry) = entry.as_str() else { continue };
                        let path = entry.split_once('=').map(|(_, path)| path).unwrap_or(entry);
                        named.push((format!("{generator}[{index}].{list}[{position}]"), path.to_string(), true));
                    }
                }
                if let Some(env) = spec.get("env").and_then(Value::as_str) {
                    named.push((format!("{generator}[{index}].env"), env.to_string(), true));
                }
            }
        }
        for (field, entry, is_path) in named {
            if !is_path || is_remote(&entry) {
                continue;
            }
            let position = locator.find(&field).map(|p| (p.line, p.column));
            let Some(target) = closure::join(base, &entry) else { continue };
            if self.exists(&target) {
                if super::is_yaml(&target) && !field.contains("Generator[") {
                    self.manifest(&target);
                }
            } else if self.is_directory(&target) {
                self.directory(&target, Some((file, position)));
            } else {
                let on_disk = self.root.join(&target).exists();
                let message = match on_disk {
                    true => format!(
                        "{field} names `{entry}` (`{target}`), which git ignores, so it is not in what Flux gets"
                    ),
                    false => format!("{field} names `{entry}` (`{target}`), which does not exist"),
                };
                let fix = match on_disk {
                    true => "commit-ready files only: un-ignore it, or remove the entry".to_string(),
                    false => {
                        "correct the path (it is relative to the kustomization file's directory), or remove the entry"
                            .to_string()
                    }
                };
                self.findings.push(Finding::new(Kind::Unbuildable, file, position, message).with_fix(fix));
            }
        }
    }

    /// A manifest kustomize reads: every document must be YAML.
    fn manifest(&mut self, file: &str) {
        if !self.parsed.insert(file.to_string()) {
            return;
        }
        let Some(text) = self.read(file) else { return };
        if let Some(error) = parse_error(&text) {
            self.unparsable(file, &error);
        }
    }

    fn unparsable(&mut self, file: &str, error: &serde_yaml::Error) {
        let position = error.location().map(|l| (l.line(), l.column()));
        let mut message = error.to_string();
        // The position is in the finding's place already.
        if let Some(at) = message.find(" at line ") {
            message.truncate(at);
        }
        let message = format!("not valid YAML: {message}");
        let fix = "fix the YAML at that place; kustomize would stop the whole Kustomization on it";
        self.findings.push(Finding::new(Kind::Unbuildable, file, position, message).with_fix(fix));
    }
}

/// The first error of a multi-document YAML text, positioned in the whole text.
pub fn parse_error(text: &str) -> Option<serde_yaml::Error> {
    for document in serde_yaml::Deserializer::from_str(text) {
        if let Err(error) = <Value as serde::Deserialize>::deserialize(document) {
            return Some(error);
        }
    }
    None
}

fn is_remote(entry: &str) -> bool {
    entry.contains("://") || entry.starts_with("github.com/") || entry.starts_with("git@")
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() { name.to_string() } else { format!("{dir}/{name}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applier(path: &str) -> Applier {
        Applier {
            key: "Kustomization/flux-system/apps".into(),
            path: path.into(),
            path_known: true,
            substitutes: true,
            inline: Default::default(),
            files: Default::default(),
        }
    }

    fn run(tree: &[(&str, &str)], path: &str) -> Vec<Finding> {
        let dir = crate::flux::files::tests::write_tree(tree);
        let mut files: Vec<String> = tree.iter().map(|(p, _)| p.to_string()).collect();
        files.sort();
        let texts: Texts = tree.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect();
        check(dir.path(), &texts, &files, &[applier(path)])
    }

    const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: search-api\nspec:\n  template:\n    spec:\n      containers:\n        - name: api\n          image: search:1\n          env:\n            - name: A\n              value: x\n           - name: B\n";

    #[test]
    fn yaml_that_does_not_parse_is_reported_at_its_line_and_column() {
        let findings = run(
            &[
                ("apps/local/kustomization.yaml", "resources:\n  - ../base/search-api\n"),
                ("apps/base/search-api/kustomization.yaml", "resources:\n  - deployment.yaml\n"),
                ("apps/base/search-api/deployment.yaml", DEPLOYMENT),
            ],
            "apps/local",
        );
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(findings[0].place(), "apps/base/search-api/deployment.yaml:14:12");
        assert_eq!(findings[0].id, Some("DEV069"));
        assert!(findings[0].message.starts_with("not valid YAML: "), "{}", findings[0].message);
    }

    #[test]
    fn a_second_document_that_does_not_parse_is_placed_in_the_whole_file() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [b\n";
        let findings = run(&[("apps/local/cm.yaml", text)], "apps/local");
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(findings[0].line, Some(10), "{findings:#?}");
    }

    #[test]
    fn a_resource_that_does_not_exist_is_reported_where_it_is_named() {
        let findings = run(
            &[
                (
                    "apps/local/kustomization.yaml",
                    "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../base/orders\n  - ../base/serch-api\npatches:\n  - path: replicas.yaml\n",
                ),
                ("apps/base/orders/kustomization.yaml", "resources: [deployment.yaml]\n"),
                ("apps/base/orders/deployment.yaml", "kind: Deployment\n"),
                ("apps/base/search-api/kustomization.yaml", "resources: []\n"),
            ],
            "apps/local",
        );
        let places: Vec<String> = findings.iter().map(|f| format!("{} {}", f.place(), f.message)).collect();
        assert_eq!(
            places,
            [
                "apps/local/kustomization.yaml:5:5 resources[1] names `../base/serch-api` (`apps/base/serch-api`), which does not exist",
                "apps/local/kustomization.yaml:7:11 patches[0].path names `replicas.yaml` (`apps/local/replicas.yaml`), which does not exist",
            ]
        );
    }

    #[test]
    fn a_generator_input_that_does_not_exist_is_reported() {
        let findings = run(
            &[
                (
                    "apps/local/kustomization.yaml",
                    "configMapGenerator:\n  - name: settings\n    files:\n      - application.yaml\n      - logback.xml=logging/logbak.xml\n    envs:\n      - settings.env\n",
                ),
                ("apps/local/application.yaml", "server: {port: 8080}\n"),
                ("apps/local/settings.env", "A=1\n"),
            ],
            "apps/local",
        );
        let places: Vec<String> = findings.iter().map(|f| format!("{} {}", f.place(), f.message)).collect();
        assert_eq!(
            places,
            [
                "apps/local/kustomization.yaml:5:9 configMapGenerator[0].files[1] names `logging/logbak.xml` (`apps/local/logging/logbak.xml`), which does not exist"
            ]
        );
    }

    #[test]
    fn a_directory_without_a_kustomization_file_reads_every_manifest_below_it() {
        let findings = run(
            &[
                ("clusters/local/apps.yaml", "kind: Kustomization\n"),
                ("clusters/local/broken.yaml", "kind: [\n"),
                ("clusters/local/nested/kustomization.yaml", "resources: [gone.yaml]\n"),
                ("clusters/local/README.md", "# not YAML: [\n"),
            ],
            "clusters/local",
        );
        let places: Vec<String> = findings.iter().map(|f| f.place()).collect();
        assert_eq!(
            places,
            ["clusters/local/broken.yaml:2:1", "clusters/local/nested/kustomization.yaml:1:13"],
            "{findings:#?}"
        );
    }
}

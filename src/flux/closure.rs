//! Which files of the tree a Flux Kustomization reads: everything under its `spec.path`, plus
//! whatever the kustomization files there reference outside it (`../base/orders`, patch files,
//! generator inputs), followed recursively.
//!
//! Each Kustomization gets an artifact holding just these files, so an edit changes only the
//! artifacts that read the edited file. The set errs on the side of too many: every string
//! in a kustomization file that names an existing file or directory is followed, since a
//! missing file would break the build while an extra one costs a few bytes.

use std::collections::BTreeSet;

use serde_yaml::Value;

const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// The files, out of the sorted `files`, that a Kustomization building `path` reads. `read`
/// gives a file's text.
pub fn files_of(files: &[String], read: &dyn Fn(&str) -> Option<String>, path: &str) -> BTreeSet<String> {
    let mut result = BTreeSet::new();
    let mut pending = vec![normalise(path)];
    let mut visited = BTreeSet::new();
    while let Some(dir) = pending.pop() {
        if !visited.insert(dir.clone()) {
            continue;
        }
        for file in under(files, &dir) {
            result.insert(file.clone());
            let (base, name) = file.rsplit_once('/').unwrap_or(("", file.as_str()));
            if !KUSTOMIZATION_FILES.contains(&name) {
                continue;
            }
            let Some(document) = read(file).and_then(|text| serde_yaml::from_str::<Value>(&text).ok()) else {
                continue;
            };
            for reference in strings(&document).into_iter().filter_map(|s| join(base, s)) {
                if files.binary_search(&reference).is_ok() {
                    result.insert(reference);
                } else if !under(files, &reference).is_empty() {
                    pending.push(reference);
                }
            }
        }
    }
    result
}

/// The files under `dir` (all of them for the root), as a slice of the sorted list.
fn under<'a>(files: &'a [String], dir: &str) -> &'a [String] {
    if dir.is_empty() {
        return files;
    }
    let prefix = format!("{dir}/");
    let start = files.partition_point(|f| f.as_str() < prefix.as_str());
    let end = start + files[start..].partition_point(|f| f.starts_with(&prefix));
    &files[start..end]
}

/// Every string value in a YAML document.
fn strings(value: &Value) -> Vec<&str> {
    match value {
        Value::String(s) => vec![s.as_str()],
        Value::Sequence(items) => items.iter().flat_map(strings).collect(),
        Value::Mapping(map) => map.values().flat_map(strings).collect(),
        Value::Tagged(tagged) => strings(&tagged.value),
        _ => Vec::new(),
    }
}

/// A Kustomization path relative to the repository root, without `./` or slashes at the ends.
pub fn normalise(path: &str) -> String {
    join("", path).unwrap_or_default()
}

/// `base` joined with a relative kustomize path, `..` resolved; `None` for URLs, absolute
/// paths, escapes above the root and text that cannot be a path.
pub fn join(base: &str, relative: &str) -> Option<String> {
    if relative.contains("://") || relative.contains('\n') || relative.starts_with('/') && !base.is_empty() {
        return None;
    }
    let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
    for part in relative.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn closure(tree: &[(&str, &str)], path: &str) -> Vec<String> {
        let contents: BTreeMap<String, String> = tree.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect();
        let files: Vec<String> = contents.keys().cloned().collect();
        files_of(&files, &|f| contents.get(f).cloned(), path).into_iter().collect()
    }

    const TREE: &[(&str, &str)] = &[
        (
            "apps/local/kustomization.yaml",
            "resources:\n  - ../base/orders\n  - https://example.com/x.yaml\npatches:\n  - path: ../patches/small.yaml\n",
        ),
        ("apps/local/extra.yaml", "kind: ConfigMap\n"),
        (
            "apps/base/orders/kustomization.yaml",
            "resources: [deployment.yaml]\ncomponents: [../../../components/metrics]\n",
        ),
        ("apps/base/orders/deployment.yaml", "kind: Deployment\n"),
        ("apps/base/billing/deployment.yaml", "kind: Deployment\n"),
        ("apps/patches/small.yaml", "op: add\n"),
        ("apps/patches/large.yaml", "op: add\n"),
        ("components/metrics/kustomization.yaml", "kind: Component\n"),
        ("infrastructure/crds/crd.yaml", "kind: CustomResourceDefinition\n"),
    ];

    #[test]
    fn follows_bases_components_and_patch_files_but_nothing_else() {
        assert_eq!(
            closure(TREE, "./apps/local/"),
            [
                "apps/base/orders/deployment.yaml",
                "apps/base/orders/kustomization.yaml",
                "apps/local/extra.yaml",
                "apps/local/kustomization.yaml",
                "apps/patches/small.yaml",
                "components/metrics/kustomization.yaml",
            ]
        );
        assert_eq!(closure(TREE, "infrastructure/crds"), ["infrastructure/crds/crd.yaml"]);
    }

    #[test]
    fn the_root_path_reads_everything() {
        assert_eq!(closure(TREE, "./").len(), TREE.len());
        assert_eq!(closure(TREE, "").len(), TREE.len());
    }

    #[test]
    fn a_cycle_or_a_broken_file_does_not_stop_it() {
        let tree = [
            ("a/kustomization.yaml", "resources: [../b]\n"),
            ("b/kustomization.yaml", "resources: [../a]\n"),
            ("c/kustomization.yaml", "resources: [\n"),
            ("c/x.yaml", "kind: ConfigMap\n"),
        ];
        assert_eq!(closure(&tree, "a"), ["a/kustomization.yaml", "b/kustomization.yaml"]);
        assert_eq!(closure(&tree, "c"), ["c/kustomization.yaml", "c/x.yaml"]);
    }

    #[test]
    fn joins_kustomize_paths() {
        assert_eq!(join("apps/local", "../base/orders"), Some("apps/base/orders".into()));
        assert_eq!(join("apps", "../../x"), None);
        assert_eq!(join("apps", "https://example.com/x"), None);
        assert_eq!(normalise("./clusters/local/"), "clusters/local");
    }
}

//! What this build is: devenv's version and commit, and the versions of what it runs and was
//! tested against, read from the pins compiled into it (`sim/versions.env`, the vendored Flux
//! install manifest, `testbed/kind/versions.env`).

use std::collections::BTreeMap;

use serde::Serialize;

/// The kind test bed's pins.
const KIND_TESTBED: &str = include_str!("../testbed/kind/versions.env");

/// The build and the versions it expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildInfo {
    /// devenv's own version (Cargo.toml).
    pub version: String,
    /// The short hash of the commit it was built from, or `unknown`.
    pub commit: String,
    /// The Kubernetes release the sim cluster and the kind test bed run.
    pub kubernetes: String,
    /// Each Flux controller devenv installs (or the sim cluster runs), by its name in camelCase
    /// (`sourceController`), and its version.
    pub flux: BTreeMap<String, String>,
    /// The kind release the test bed uses.
    pub kind: String,
}

/// The value of `KEY=value` in a pins file.
fn pin(file: &str, key: &str) -> String {
    file.lines()
        .find_map(|line| line.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
        .map(|value| value.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

/// `source-controller` → `sourceController`.
fn camel_case(name: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in name.chars() {
        match c {
            '-' | '_' => upper = true,
            c if upper => {
                out.extend(c.to_uppercase());
                upper = false;
            }
            c => out.push(c),
        }
    }
    out
}

pub fn info() -> BuildInfo {
    BuildInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        commit: env!("DEVENV_COMMIT").to_string(),
        kubernetes: pin(crate::providers::sim::VERSIONS, "KUBERNETES_VERSION"),
        flux: crate::providers::flux_install::versions()
            .into_iter()
            .map(|(name, version)| (camel_case(&name), version))
            .collect(),
        kind: pin(KIND_TESTBED, "KIND_VERSION"),
    }
}

/// `0.1.0 (commit 1a2b3c4)`: what `-V` prints after the name.
pub fn short() -> String {
    let info = info();
    format!("{} (commit {})", info.version, info.commit)
}

/// What `--version` prints after the name, and `devenv version` after `devenv `.
pub fn long() -> String {
    let info = info();
    let controllers: Vec<String> = crate::providers::flux_install::versions()
        .into_iter()
        .map(|(name, version)| format!("{name} {version}"))
        .collect();
    format!(
        "{}\nKubernetes {} (sim cluster, kind test bed)\nFlux {} (installed into clusters without Flux)\nkind {} (test bed; v0.20 or newer works)",
        short(),
        info.kubernetes,
        controllers.join(", "),
        info.kind
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_names_its_commit_and_the_pinned_versions() {
        let info = info();
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        assert!(info.commit == "unknown" || info.commit.chars().all(|c| c.is_ascii_hexdigit()), "{}", info.commit);
        assert!(info.kubernetes.starts_with("v1."), "{}", info.kubernetes);
        assert!(info.kind.starts_with("v0."), "{}", info.kind);
        let names: Vec<&str> = info.flux.keys().map(String::as_str).collect();
        assert_eq!(names, ["helmController", "kustomizeController", "sourceController"]);
        assert!(info.flux.values().all(|v| v.starts_with('v')), "{:?}", info.flux);
        let long = long();
        assert!(
            long.starts_with(&format!("{} (commit {})\nKubernetes {}", info.version, info.commit, info.kubernetes))
        );
        assert!(long.contains(&format!("source-controller {}", info.flux["sourceController"])), "{long}");
    }
}

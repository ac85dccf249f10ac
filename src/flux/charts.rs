//! Helm charts kept in the repository, packaged from the working tree (`publish` pushes them
//! to the environment's registry as OCI charts, so HelmReleases re-pointed there install the
//! local copy). Reads files only.

use std::path::Path;

use serde_yaml::{Mapping, Value};

use super::{artifact, files};

pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.helm.config.v1+json";
pub const CONTENT_MEDIA_TYPE: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
/// The chart's default values, which a HelmChart's `valuesFiles` replace.
const VALUES_FILE: &str = "values.yaml";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{path}` is not a Helm chart: {reason}")]
    Invalid { path: String, reason: String },
    #[error("values file `{path}` (from valuesFiles) {reason}")]
    ValuesFile { path: String, reason: String },
    #[error("chart `{path}` is not published: {reason}")]
    Outside { path: String, reason: String },
    #[error(
        "`{path}/Chart.yaml`: version `{version}` is not a SemVer 2 version, so Flux would not find the published chart"
    )]
    Version { path: String, version: String },
    #[error("`{path}/Chart.yaml` has version {version}, which `{constraint}` (spec.chart.spec.version) does not allow")]
    VersionNotAllowed { path: String, version: String, constraint: String },
    #[error(transparent)]
    Files(#[from] files::Error),
    #[error(transparent)]
    Artifact(#[from] artifact::Error),
}

/// What Chart.yaml says about a chart.
#[derive(Debug, Clone)]
pub struct Metadata {
    pub name: String,
    pub version: String,
    /// Chart.yaml as JSON: the OCI config Helm expects.
    pub json: serde_json::Value,
}

/// Reads `<dir>/Chart.yaml`.
pub fn metadata(dir: &Path) -> Result<Metadata, String> {
    let text = std::fs::read_to_string(dir.join("Chart.yaml")).map_err(|e| format!("cannot read Chart.yaml ({e})"))?;
    let value: Value = serde_yaml::from_str(&text).map_err(|e| format!("Chart.yaml does not parse ({e})"))?;
    // An unquoted `version: 1.0` reads as a number; Helm takes it as the text it is.
    let field = |name: &str| match value.get(name) {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Number(number)) => Ok(number.to_string()),
        _ => Err(format!("Chart.yaml has no `{name}`")),
    };
    let (name, version) = (field("name")?, field("version")?);
    let json = serde_json::to_value(&value).map_err(|e| format!("Chart.yaml is not plain data ({e})"))?;
    Ok(Metadata { name, version, json })
}

/// Reads the Chart.yaml of the chart in `path` (relative to the repository) and checks that
/// its version is one Flux's chart lookup finds: SemVer 2, without a `v` (source-controller
/// skips OCI tags that are not).
pub fn metadata_of(repo: &Path, path: &str) -> Result<Metadata, Error> {
    // Nothing outside the repository is published, through `..` or a symbolic link.
    let dir = files::resolve_inside(repo, path).map_err(|reason| Error::Outside { path: path.to_string(), reason })?;
    let metadata = metadata(&dir).map_err(|reason| Error::Invalid { path: path.to_string(), reason })?;
    if semver::Version::parse(&metadata.version).is_err() {
        return Err(Error::Version { path: path.to_string(), version: metadata.version });
    }
    Ok(metadata)
}

/// Whether `version` satisfies a HelmRelease's `spec.chart.spec.version`; a constraint in a
/// syntax devenv does not read (Helm's `||`, hyphen ranges) is left to Flux.
pub fn check_constraint(path: &str, version: &str, constraint: &str) -> Result<(), Error> {
    let constraint = constraint.trim();
    if constraint.is_empty() || constraint == "*" || constraint.contains("||") || constraint.contains(" - ") {
        return Ok(());
    }
    // Helm separates the parts of a range with spaces, the semver crate with commas.
    let requirement = constraint.split_whitespace().collect::<Vec<_>>().join(", ").replace(",,", ",");
    let Ok(requirement) = semver::VersionReq::parse(&requirement) else { return Ok(()) };
    let Ok(parsed) = semver::Version::parse(version) else { return Ok(()) };
    // A bare version means exactly that version in Helm, and at least it in the semver crate.
    let exact = semver::Version::parse(constraint.trim_start_matches('=')).ok();
    let allowed = match exact {
        Some(exact) => exact.cmp_precedence(&parsed).is_eq(),
        None => requirement.matches(&parsed),
    };
    match allowed {
        true => Ok(()),
        false => Err(Error::VersionNotAllowed {
            path: path.to_string(),
            version: version.to_string(),
            constraint: constraint.to_string(),
        }),
    }
}

impl Metadata {
    /// The OCI tag of this version: Helm writes SemVer's `+` as `_`, which tags cannot hold.
    pub fn tag(&self) -> String {
        self.version.replace('+', "_")
    }
}

/// The chart in `path` (relative to the repository) packaged like `helm package`: its files
/// under `<name>/`, deterministically.
pub fn package(repo: &Path, path: &str, values: Option<&[u8]>) -> Result<(Metadata, Vec<u8>), Error> {
    let metadata = metadata_of(repo, path)?;
    let dir = files::resolve_inside(repo, path).map_err(|reason| Error::Outside { path: path.to_string(), reason })?;
    let files = files::list_files(&dir, "")?;
    // As in source-controller, valuesFiles replace the chart's values.yaml, which must exist.
    if values.is_some() && !files.iter().any(|f| f == VALUES_FILE) {
        let reason = format!("it has no {VALUES_FILE} for the HelmRelease's valuesFiles to replace");
        return Err(Error::Invalid { path: path.to_string(), reason });
    }
    let mut entries = Vec::new();
    for relative in &files {
        let content = match values {
            Some(values) if relative == VALUES_FILE => values.to_vec(),
            _ => {
                let path = dir.join(relative);
                std::fs::read(&path).map_err(|source| files::Error::Read { path, source })?
            }
        };
        entries.push((format!("{}/{relative}", metadata.name), content));
    }
    let bytes = artifact::archive(entries.iter().map(|(name, content)| (name.as_str(), content.as_slice(), false)))?;
    Ok((metadata, bytes))
}

/// A chart's values as source-controller builds them from a HelmChart's `valuesFiles`
/// (relative to the repository): each file's mapping merged over the ones before it, nested
/// mappings key by key, anything else replaced.
pub fn merged_values(repo: &Path, files: &[String], ignore_missing: bool) -> Result<Vec<u8>, Error> {
    let mut merged = Mapping::new();
    for file in files {
        let problem = |reason: String| Error::ValuesFile { path: file.clone(), reason };
        let real = files::resolve_inside(repo, file).map_err(|reason| problem(format!("is not read: {reason}")))?;
        let text = match std::fs::read_to_string(real) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && ignore_missing => continue,
            Err(e) => return Err(problem(format!("cannot be read ({e})"))),
        };
        let values: Value = serde_yaml::from_str(&text).map_err(|e| problem(format!("does not parse ({e})")))?;
        match values {
            Value::Mapping(values) => merge_values(&mut merged, values),
            Value::Null => {}
            _ => return Err(problem("is not a mapping of values".into())),
        }
    }
    if merged.is_empty() {
        return Ok(Vec::new());
    }
    Ok(serde_yaml::to_string(&merged).expect("YAML values serialise").into_bytes())
}

fn merge_values(into: &mut Mapping, from: Mapping) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Mapping(existing)), Value::Mapping(nested)) => merge_values(existing, nested),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> tempfile::TempDir {
        crate::flux::files::tests::write_tree(&[
            ("charts/app/Chart.yaml", "apiVersion: v2\nname: app\nversion: 0.1.0\n"),
            ("charts/app/values.yaml", "replicas: 2\nimage:\n  repository: app\n  tag: \"1.0\"\nregion: eu-west-2\n"),
            ("charts/app/templates/deployment.yaml", "kind: Deployment\n"),
            ("apps/app-values.yaml", "image:\n  tag: \"1.1\"\nregion: [eu-west-1]\n"),
            ("apps/broken-values.yaml", "image: [\n"),
            ("apps/list-values.yaml", "- not\n- a mapping\n"),
        ])
    }

    #[test]
    fn nothing_outside_the_repository_is_published_or_read() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(outside.path().join("evil")).unwrap();
        std::fs::write(outside.path().join("evil/Chart.yaml"), "apiVersion: v2\nname: evil\nversion: 0.1.0\n").unwrap();
        std::fs::write(outside.path().join("secret.yaml"), "token: from-outside\n").unwrap();
        let dir = repo();
        let real_outside = outside.path().canonicalize().unwrap();
        // A chart reached through `..`, or through a symbolic link in the repository.
        let error = metadata_of(dir.path(), "../no-such-chart").unwrap_err();
        assert_eq!(error.to_string(), "chart `../no-such-chart` is not published: it leaves the repository (`..`)");
        std::os::unix::fs::symlink(outside.path().join("evil"), dir.path().join("charts/linked")).unwrap();
        let error = metadata_of(dir.path(), "charts/linked").unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "chart `charts/linked` is not published: it leads to `{}`, outside the repository",
                real_outside.join("evil").display()
            )
        );
        assert!(package(dir.path(), "charts/linked", None).is_err());
        // A values file that is a link out of the repository is not read.
        std::os::unix::fs::symlink(outside.path().join("secret.yaml"), dir.path().join("apps/linked-values.yaml"))
            .unwrap();
        let error = merged_values(dir.path(), &["apps/linked-values.yaml".to_string()], false).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("values file `apps/linked-values.yaml` (from valuesFiles) is not read: it leads to `"),
            "{error}"
        );
        // A link that stays inside is followed.
        std::os::unix::fs::symlink(dir.path().join("apps/app-values.yaml"), dir.path().join("apps/inside.yaml"))
            .unwrap();
        let merged = merged_values(dir.path(), &["apps/inside.yaml".to_string()], false).unwrap();
        assert!(String::from_utf8(merged).unwrap().contains("tag: '1.1'"));
    }

    fn values(files: &[&str], ignore_missing: bool) -> Result<Value, Error> {
        let files: Vec<String> = files.iter().map(|f| f.to_string()).collect();
        let bytes = merged_values(repo().path(), &files, ignore_missing)?;
        Ok(serde_yaml::from_slice(&bytes).unwrap())
    }

    #[test]
    fn values_files_merge_in_order_nested_mappings_key_by_key() {
        let merged = values(&["charts/app/values.yaml", "apps/app-values.yaml"], false).unwrap();
        let expected: Value =
            serde_yaml::from_str("replicas: 2\nimage:\n  repository: app\n  tag: \"1.1\"\nregion: [eu-west-1]\n")
                .unwrap();
        assert_eq!(merged, expected);
        // Without the chart's own file its defaults are gone, as in source-controller.
        let alone = values(&["apps/app-values.yaml"], false).unwrap();
        assert!(alone.get("replicas").is_none());
    }

    #[test]
    fn a_missing_values_file_is_an_error_unless_ignored() {
        let error = values(&["apps/missing.yaml"], false).unwrap_err();
        assert!(
            error.to_string().starts_with("values file `apps/missing.yaml` (from valuesFiles) cannot be read"),
            "{error}"
        );
        let merged = values(&["apps/missing.yaml", "apps/app-values.yaml"], true).unwrap();
        assert_eq!(merged["image"]["tag"], "1.1");
    }

    #[test]
    fn a_values_file_must_be_a_yaml_mapping() {
        let error = values(&["apps/broken-values.yaml"], false).unwrap_err();
        assert!(
            error.to_string().starts_with("values file `apps/broken-values.yaml` (from valuesFiles) does not parse"),
            "{error}"
        );
        let error = values(&["apps/list-values.yaml"], true).unwrap_err();
        assert_eq!(
            error.to_string(),
            "values file `apps/list-values.yaml` (from valuesFiles) is not a mapping of values"
        );
    }

    #[test]
    fn the_packaged_chart_carries_the_merged_values() {
        let dir = repo();
        let merged = merged_values(dir.path(), &["apps/app-values.yaml".into()], false).unwrap();
        let (_, bytes) = package(dir.path(), "charts/app", Some(&merged)).unwrap();
        let (_, plain) = package(dir.path(), "charts/app", None).unwrap();
        assert_ne!(bytes, plain);
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
        let mut names = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            if name == "app/values.yaml" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
                assert_eq!(text.as_bytes(), merged.as_slice());
            }
            names.push(name);
        }
        assert_eq!(names, ["app/Chart.yaml", "app/templates/deployment.yaml", "app/values.yaml"]);
    }

    #[test]
    fn a_chart_version_flux_would_not_find_is_named() {
        let dir = repo();
        for version in ["v0.1.0", "0.1", "latest"] {
            std::fs::write(dir.path().join("charts/app/Chart.yaml"), format!("name: app\nversion: {version}\n"))
                .unwrap();
            let error = metadata_of(dir.path(), "charts/app").unwrap_err();
            assert_eq!(
                error.to_string(),
                format!(
                    "`charts/app/Chart.yaml`: version `{version}` is not a SemVer 2 version, so Flux would not find the published chart"
                )
            );
        }
        std::fs::write(dir.path().join("charts/app/Chart.yaml"), "name: app\nversion: 1.2.0+build.7\n").unwrap();
        assert_eq!(metadata_of(dir.path(), "charts/app").unwrap().tag(), "1.2.0_build.7", "Helm's tag for `+`");
    }

    #[test]
    fn a_release_constraint_the_working_tree_chart_does_not_meet_is_named() {
        for allowed in
            ["0.1.0", "=0.1.0", "0.1.x", "~0.1", "^0.1.0", ">=0.1.0 <0.2.0", ">=0.1.0, <1", "*", "", "1.x || 0.1.x"]
        {
            assert!(check_constraint("charts/app", "0.1.0", allowed).is_ok(), "{allowed}");
        }
        for refused in ["0.2.0", ">=1.0.0", "0.2.x", "~1.0"] {
            let error = check_constraint("charts/app", "0.1.0", refused).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!(
                    "`charts/app/Chart.yaml` has version 0.1.0, which `{refused}` (spec.chart.spec.version) does not allow"
                )
            );
        }
    }

    #[test]
    fn values_files_need_a_values_yaml_to_replace() {
        let dir = repo();
        std::fs::remove_file(dir.path().join("charts/app/values.yaml")).unwrap();
        let error = package(dir.path(), "charts/app", Some(b"tier: priority\n")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "`charts/app` is not a Helm chart: it has no values.yaml for the HelmRelease's valuesFiles to replace"
        );
        assert!(package(dir.path(), "charts/app", None).is_ok(), "without valuesFiles it is not needed");
    }
}
